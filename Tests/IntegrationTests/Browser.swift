#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing

/// Debian's headless Chromium, driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: the browser
/// reads commands on its fd 3 and writes answers and events on its fd 4, each one JSON message ended by a NUL byte).
/// One page, a fresh profile (no cookies) per browser; ended with SIGKILL and reaped when it goes away.
final class Browser {
    /// Where Debian puts it (`make deps` installs the `chromium` package).
    static let executable = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }
    /// Under CI=true the browser tests run (and fail without a browser) rather than being skipped.
    static let required = ProcessInfo.processInfo.environment["CI"] == "true"

    let pid: pid_t
    private let commands: Int32
    private let answers: Int32
    private let profile: TemporaryDirectory
    private var session = ""
    private var nextID = 0
    private var pending: [UInt8] = []

    init(width: Int = 1280, height: Int = 900) throws {
        guard let executable = Self.executable else { throw HarnessError("no chromium: apt-get install chromium (make deps)") }
        profile = TemporaryDirectory("chromium")
        var toBrowser: [Int32] = [0, 0], fromBrowser: [Int32] = [0, 0]
        guard pipe(&toBrowser) == 0, pipe(&fromBrowser) == 0 else { throw HarnessError("pipe failed") }
        for fd in toBrowser + fromBrowser { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        // Numbers above 4, so the dup2 onto 3 and 4 in the child never lands on a descriptor it still needs.
        let childIn = fcntl(toBrowser[0], F_DUPFD_CLOEXEC, 100), childOut = fcntl(fromBrowser[1], F_DUPFD_CLOEXEC, 100)
        close(toBrowser[0])
        close(fromBrowser[1])
        commands = toBrowser[1]
        answers = fromBrowser[0]
        let arguments = [
            "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
            "--disable-extensions", "--user-data-dir=\(profile.url.path)", "--window-size=\(width),\(height)", "about:blank",
        ]
        let log = profile.url.appending(path: "chromium.log").path
        let spawned = Result { try Harness.spawn(executable, arguments, log: log, descriptors: [3: childIn, 4: childOut]) }
        // Only the child keeps these: if it dies, reading its answers ends instead of waiting.
        close(childIn)
        close(childOut)
        pid = try spawned.get()
        let targets = try send("Target.getTargets", [:], inSession: false)
        let infos = (targets["targetInfos"] as? [[String: Any]]) ?? []
        guard let page = infos.first(where: { $0["type"] as? String == "page" })?["targetId"] as? String else {
            throw HarnessError("chromium has no page: \(targets)")
        }
        let attached = try send("Target.attachToTarget", ["targetId": page, "flatten": true], inSession: false)
        session = attached["sessionId"] as? String ?? ""
        _ = try send("Page.enable", [:])
    }

    deinit {
        close(commands)
        close(answers)
        kill(pid, SIGKILL)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        profile.remove()
    }

    /// Sends one command (to the page unless `inSession` is false) and returns its result; an error answer throws.
    @discardableResult
    func send(_ method: String, _ params: [String: Any], inSession: Bool = true, seconds: Double = 20) throws -> [String: Any] {
        nextID += 1
        let id = nextID
        var message: [String: Any] = ["id": id, "method": method, "params": params]
        if inSession { message["sessionId"] = session }
        let bytes = Array(try JSONSerialization.data(withJSONObject: message)) + [0]
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { write(commands, $0.baseAddress, $0.count) }
            guard n > 0 else { throw HarnessError("chromium's pipe closed") }
            sent += n
        }
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            guard let answer = try readMessage(until: deadline) else { throw HarnessError("chromium did not answer \(method) in time") }
            guard answer["id"] as? Int == id else { continue }  // an event, or an answer to a command given up on
            if let error = answer["error"] { throw HarnessError("\(method): \(error)") }
            return answer["result"] as? [String: Any] ?? [:]
        }
    }

    /// The next message, nil when none came by `deadline`.
    private func readMessage(until deadline: Date) throws -> [String: Any]? {
        while true {
            if let end = pending.firstIndex(of: 0) {
                let message = Array(pending[..<end])
                pending.removeSubrange(...end)
                return (try JSONSerialization.jsonObject(with: Data(message)) as? [String: Any]) ?? [:]
            }
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { return nil }
            var poller = pollfd(fd: answers, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, Int32(left * 1000)) > 0 else { continue }
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            let n = read(answers, &buffer, buffer.count)
            guard n > 0 else { throw HarnessError("chromium's pipe closed") }
            pending += buffer[0..<n]
        }
    }

    /// The value of a JavaScript expression in the page (a promise is awaited); nil when it throws.
    func evaluate(_ expression: String) throws -> Any? {
        let result = try send("Runtime.evaluate", ["expression": expression, "returnByValue": true, "awaitPromise": true])
        if result["exceptionDetails"] != nil { return nil }
        return (result["result"] as? [String: Any])?["value"]
    }

    /// Loads `url` and waits (at most 20 s) until the document has loaded.
    func navigate(_ url: String) throws {
        _ = try send("Page.navigate", ["url": url])
        guard waitUntil(20, "document.readyState === 'complete' && location.href === \(Self.quoted(url))") else {
            throw HarnessError("\(url) did not load")
        }
    }

    /// Whether `expression` became true within `seconds` (asked every 20 ms; a page between two documents counts as
    /// not yet).
    func waitUntil(_ seconds: Double, _ expression: String) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        repeat {
            if (try? evaluate(expression)) as? Bool == true { return true }
            usleep(20_000)
        } while Date() < deadline
        return false
    }

    /// The text of the first element `selector` matches ("" when none).
    func text(_ selector: String) throws -> String {
        try evaluate("(document.querySelector(\(Self.quoted(selector))) || {}).textContent || ''") as? String ?? ""
    }

    /// The page as a PNG.
    func screenshot() throws -> [UInt8] {
        // A page not in front gets no frames in headless mode, and the capture would wait for one.
        _ = try send("Page.bringToFront", [:])
        let result = try send("Page.captureScreenshot", ["format": "png", "fromSurface": true, "captureBeyondViewport": false])
        guard let base64 = result["data"] as? String, let data = Data(base64Encoded: base64) else { throw HarnessError("no screenshot") }
        return Array(data)
    }

    /// A JavaScript string literal.
    static func quoted(_ text: String) -> String {
        let data = try! JSONSerialization.data(withJSONObject: [text])
        return String(String(decoding: data, as: UTF8.self).dropFirst().dropLast())
    }
}

extension Trait where Self == ConditionTrait {
    /// Disabled without Chromium, with the reason — except under CI=true, where the test runs (and fails).
    static var browser: Self {
        .enabled(if: Browser.executable != nil || Browser.required, "needs Debian's chromium (make deps installs it; under CI=true it must run)")
    }
}
