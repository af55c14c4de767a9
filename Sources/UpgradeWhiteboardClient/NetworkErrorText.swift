import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix

/// Network failures as an operator reads them — "cannot reach HOST:PORT: connection refused" — instead of
/// the description of the HTTP library's error value (which names its internals and the errno number).
public enum NetworkErrorText {
    /// `error` in words: "cannot reach `endpoint`: PROBLEM" for a network failure, else its own description.
    public static func describe(_ error: any Error, endpoint: String) -> String {
        problem(error).map { "cannot reach \(endpoint): \($0)" } ?? "\(error)"
    }

    /// The network problem in a few words, or nil when `error` is not a network failure.
    static func problem(_ error: any Error) -> String? {
        switch error {
        case let io as IOError:
            let text = String(cString: strerror(io.errnoCode))
            return text.prefix(1).lowercased() + text.dropFirst()
        case let connection as NIOConnectionError:
            if connection.dnsAError != nil || connection.dnsAAAAError != nil { return "cannot resolve \(connection.host)" }
            return connection.connectionErrors.lazy.compactMap { problem($0.error) }.first ?? "cannot connect"
        case let channel as ChannelError:
            switch channel {
            case .connectTimeout: return "connection timed out"
            case .writeHostUnreachable: return "host unreachable"
            case .ioOnClosedChannel, .outputClosed, .inputClosed, .alreadyClosed, .eof:
                return "the connection was closed before an answer came"
            default: return nil
            }
        case let http as HTTPClientError:
            switch http {
            case .connectTimeout: return "connection timed out"
            case .readTimeout, .deadlineExceeded, .getConnectionFromPoolTimeout: return "no answer in time"
            case .remoteConnectionClosed: return "the connection was closed before an answer came"
            default: return nil
            }
        default:
            return nil
        }
    }
}
