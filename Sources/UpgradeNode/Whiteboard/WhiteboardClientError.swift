import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix

/// Words for people about a failed HTTP exchange with the server ("cannot reach HOST:PORT: connection refused"),
/// instead of the HTTP library's internal descriptions.
enum WhiteboardClientError {
    static func describe(_ error: any Error, url: String) -> String {
        let components = URLComponents(string: url)
        let address = "\(components?.host ?? url):\(components?.port.map(String.init) ?? "80")"
        return "cannot reach \(address): \(reason(error))"
    }

    static func reason(_ error: any Error) -> String {
        if let error = error as? IOError { return String(cString: strerror(error.errnoCode)).lowercased() }
        if let error = error as? NIOConnectionError {
            if let first = error.connectionErrors.first { return reason(first.error) }
            if let dns = error.dnsAAAAError ?? error.dnsAError { return "cannot resolve the host name (\(dns))" }
            return "cannot connect"
        }
        if let error = error as? HTTPClientError {
            switch error {
            case .connectTimeout: return "connection timed out"
            case .deadlineExceeded, .readTimeout, .writeTimeout: return "no answer in time"
            case .remoteConnectionClosed: return "the server closed the connection"
            case .cancelled: return "cancelled"
            default: return "\(error)"
            }
        }
        if let error = error as? ChannelError {
            switch error {
            case .connectTimeout: return "connection timed out"
            case .ioOnClosedChannel, .alreadyClosed, .eof, .outputClosed, .inputClosed: return "the connection was closed"
            default: return "\(error)"
            }
        }
        return "\(error)"
    }
}
