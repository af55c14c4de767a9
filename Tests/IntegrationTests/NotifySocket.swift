#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// A fake systemd notification socket (`NOTIFY_SOCKET`, sd_notify(3)): a unix datagram socket in a temporary
/// directory that records every message a process sends, and checks the world the moment READY=1 arrives.
final class NotifySocket: @unchecked Sendable {
    struct Message {
        let fields: [String]
        let at: Date
        /// For a READY=1 message: what `whenReady` said at its arrival.
        let readyCheck: Bool?
    }

    let directory: URL
    var path: String { directory.appending(path: "notify.sock").path }
    private let descriptor: Int32
    private let lock = NSLock()
    private var received: [Message] = []
    private var stopped = false
    private let done = DispatchSemaphore(value: 0)

    /// The environment that makes a child report here; `watchdogSeconds` also turns its watchdog on.
    func environment(watchdogSeconds: Double? = nil) -> [String: String] {
        var environment = ["NOTIFY_SOCKET": path]
        if let watchdogSeconds { environment["WATCHDOG_USEC"] = String(Int(watchdogSeconds * 1_000_000)) }
        return environment
    }

    /// - Parameter whenReady: run on the listening thread as READY=1 arrives, before the next message is read.
    init(whenReady: @escaping @Sendable () -> Bool) throws {
        directory = try Harness.temporaryDirectory("notify")
        descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard descriptor >= 0 else { throw HarnessError("socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(directory.appending(path: "notify.sock").path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw HarnessError("socket path too long") }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else { throw HarnessError("bind: \(String(cString: strerror(errno)))") }
        var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let thread = Thread { [self] in listen(whenReady) }
        thread.start()
    }

    private func listen(_ whenReady: () -> Bool) {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !lock.withLock({ stopped }) {
            let count = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { continue }
            let fields = String(decoding: buffer[..<count], as: UTF8.self).split(separator: "\n").map(String.init)
            let check = fields.contains("READY=1") ? whenReady() : nil
            lock.withLock { received.append(Message(fields: fields, at: Date(), readyCheck: check)) }
        }
        done.signal()
    }

    var messages: [Message] { lock.withLock { received } }

    /// The first READY=1 message, waiting up to `seconds` for it.
    func waitForReady(_ seconds: Double) -> Message? {
        _ = Harness.waitUntil(seconds) { messages.contains { $0.fields.contains("READY=1") } }
        return messages.first { $0.fields.contains("READY=1") }
    }

    /// How many WATCHDOG=1 pings arrived after `date`.
    func pings(after date: Date) -> Int {
        messages.filter { $0.fields.contains("WATCHDOG=1") && $0.at > date }.count
    }

    /// Stops listening and removes the socket (the listening thread holds the socket until then).
    func stop() {
        guard !lock.withLock({ defer { stopped = true }; return stopped }) else { return }
        done.wait()
        close(descriptor)
        try? FileManager.default.removeItem(at: directory)
    }
}
