#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// One HTTP/1.1 client connection on 127.0.0.1 over a plain socket (20 s send/receive timeouts), for tests that
/// must see the wire: keep-alive, bodies streamed from a pattern without holding them, any method. Closed when
/// released.
final class HTTPTestConnection {
    struct Reply {
        var status: Int
        /// Lower-case names.
        var headers: [String: String]
        var body: [UInt8]
        var bodyLength: Int
        var json: [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:]
        }
    }

    /// The streamed bodies' content: this 64-byte line, repeated (`yes LINE` prints the same).
    static let patternLine = Array("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_\n".utf8)

    let fd: Int32
    private var buffer: [UInt8] = []
    private var closed = false

    init(port: Int) throws {
        fd = try connectLoopback(port: port)
        var timeout = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    func close() {
        guard !closed else { return }
        closed = true
        Glibc.close(fd)
    }

    deinit { close() }

    /// Sends a request (a `body`, or `streaming` pattern bytes, by Content-Length or chunked) and reads the answer.
    func request(_ method: String, _ target: String, headers: [(String, String)] = [], body: [UInt8]? = nil,
                 streaming: Int? = nil, chunked: Bool = false, keepBody: Bool = true) throws -> Reply {
        var head = "\(method) \(target) HTTP/1.1\r\n"
        if !headers.contains(where: { $0.0.lowercased() == "host" }) { head += "Host: 127.0.0.1\r\n" }
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        if let body { head += "Content-Length: \(body.count)\r\n" }
        if let streaming { head += chunked ? "Transfer-Encoding: chunked\r\n" : "Content-Length: \(streaming)\r\n" }
        try send(Array((head + "\r\n").utf8) + (body ?? []))
        if let streaming {
            let block = Array(repeating: Self.patternLine, count: 16384).flatMap { $0 } // 1 MiB
            var left = streaming
            while left > 0 {
                let piece = Array(block.prefix(left))
                if chunked { try send(Array(String(piece.count, radix: 16).utf8) + [13, 10] + piece + [13, 10]) } else { try send(piece) }
                left -= piece.count
            }
            if chunked { try send(Array("0\r\n\r\n".utf8)) }
        }
        return try readReply(keepBody: keepBody, head: method == "HEAD")
    }

    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw HarnessError("send failed: \(String(cString: strerror(errno)))") }
            offset += n
        }
    }

    private func fill() throws {
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        let n = recv(fd, &chunk, chunk.count, 0)
        guard n > 0 else { throw HarnessError(n == 0 ? "connection closed" : "recv failed: \(String(cString: strerror(errno)))") }
        buffer += chunk[0..<n]
    }

    private func line() throws -> String {
        while true {
            if let end = buffer.firstIndex(of: 10) {
                let text = String(decoding: buffer[..<end], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                buffer.removeSubrange(...end)
                return text
            }
            try fill()
        }
    }

    private func take(_ count: Int, keep: Bool, into body: inout [UInt8]) throws {
        var left = count
        while left > 0 {
            if buffer.isEmpty { try fill() }
            let n = min(left, buffer.count)
            if keep { body += buffer[..<n] }
            buffer.removeSubrange(..<n)
            left -= n
        }
    }

    private func readReply(keepBody: Bool, head: Bool) throws -> Reply {
        let status = try line().split(separator: " ")
        guard status.count >= 2, let code = Int(status[1]) else { throw HarnessError("bad status line \(status)") }
        var headers: [String: String] = [:]
        while case let field = try line(), !field.isEmpty {
            guard let colon = field.firstIndex(of: ":") else { continue }
            headers[field[..<colon].lowercased()] = field[field.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var reply = Reply(status: code, headers: headers, body: [], bodyLength: 0)
        if head || code == 204 || code == 304 { return reply }
        if headers["transfer-encoding"]?.lowercased() == "chunked" {
            while true {
                guard let size = Int(try line().split(separator: ";")[0], radix: 16) else { throw HarnessError("bad chunk") }
                if size == 0 {
                    while try !line().isEmpty {}
                    break
                }
                try take(size, keep: keepBody, into: &reply.body)
                reply.bodyLength += size
                _ = try line()
            }
        } else if let length = headers["content-length"].flatMap({ Int($0) }) {
            try take(length, keep: keepBody, into: &reply.body)
            reply.bodyLength = length
        }
        return reply
    }

    /// SHA-256 (hex) of `count` bytes of the pattern, by `yes | head | sha256sum`.
    static func patternSHA256(_ count: Int) -> String {
        let line = String(decoding: patternLine.dropLast(), as: UTF8.self)
        let result = try? Harness.run("/bin/sh", ["-c", "yes '\(line)' | head -c \(count) | sha256sum"])
        return String(result?.output.prefix(64) ?? "")
    }
}
