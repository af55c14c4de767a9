#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing

/// `upgradefs layer` as a user runs it: a real process in front of a real HTTP application (Tests/layer/echo-app.py),
/// reading the node's version from a directory laid out like the mount (`latest`, `versions/N/upgrade.toml`,
/// `self/version`, `self/state`), which the test changes as the manager would.
@Suite(.serialized) struct LayerTests {
    @Test func callsForTheNodesVersionAreForwardedOnKeptAliveConnectionsAndOthersRefusedAtOnce() throws {
        let node = try LayerNode()
        defer { node.stop() }
        let client = try HTTPTestConnection(port: node.publicPort)
        defer { client.close() }

        // No header: an external client of the node's version.
        let plain = try client.request("GET", "/echo?a=1")
        #expect(plain.status == 200 && plain.headers["upgradefs-version"] == "1")
        #expect(plain.json["version"] == nil || plain.json["version"] is NSNull)
        #expect(plain.json["path"] as? String == "/echo?a=1")
        let own = try client.request("PUT", "/echo", headers: [("Upgradefs-Version", "1")], body: Array("hello".utf8))
        #expect(own.status == 200 && own.json["version"] as? String == "1" && own.json["length"] as? Int == 5)
        #expect(own.json["method"] as? String == "PUT")
        let custom = try client.request("PURGE", "/echo", headers: [("Upgradefs-Version", "1")])
        #expect(custom.status == 200 && custom.json["method"] as? String == "PURGE")
        // The layer kept one connection to the application for the calls of this one client connection.
        #expect(Set([plain, own, custom].compactMap { $0.json["peer-port"] as? Int }).count == 1)
        // HEAD: the application's length, no body, and the connection stays in step for the next call.
        let head = try client.request("HEAD", "/echo")
        #expect(head.status == 200 && (Int(head.headers["content-length"] ?? "") ?? 0) > 0 && head.body.isEmpty)
        #expect(try client.request("GET", "/echo").json["method"] as? String == "GET")

        // Version 2 is published for the class but not installed, and no future SO runs: disallowed at once.
        let started = Date()
        let newer = try client.request("POST", "/echo", headers: [("Upgradefs-Version", "2")], body: Array("x".utf8))
        #expect(Date().timeIntervalSince(started) < 1)
        #expect(newer.status == 421 && newer.headers["upgradefs-error"] == "no-simulation-object")
        #expect(newer.headers["retry-after"] == "1" && newer.headers["content-type"] == "application/json")
        #expect(newer.json["error"] as? String == "no-simulation-object" && newer.json["version"] as? Int == 2)
        #expect(newer.json["node-version"] as? Int == 1)
        let unknown = try client.request("GET", "/echo", headers: [("Upgradefs-Version", "9")])
        #expect(unknown.status == 421 && unknown.json["error"] as? String == "unknown-version")
        let bad = try client.request("GET", "/echo", headers: [("Upgradefs-Version", "two")])
        #expect(bad.status == 400 && bad.json["error"] as? String == "bad-version-header")
        // The connection still serves after the refusals.
        #expect(try client.request("GET", "/echo").status == 200)

        // The manager commits version 2: the layer routes by it within its refresh interval.
        try node.setVersion(2)
        #expect(Harness.waitUntil(5) { (try? client.request("GET", "/echo", headers: [("Upgradefs-Version", "2")]).status) == 200 })
        let old = try client.request("GET", "/echo", headers: [("Upgradefs-Version", "1")])
        #expect(old.status == 421 && old.json["error"] as? String == "no-simulation-object" && old.json["node-version"] as? Int == 2)
        #expect(try client.request("GET", "/echo").headers["upgradefs-version"] == "2")
    }

    @Test func largeBodiesStreamBothWaysWithoutGrowingTheLayer() throws {
        let node = try LayerNode()
        defer { node.stop() }
        let client = try HTTPTestConnection(port: node.publicPort)
        defer { client.close() }
        #expect(try client.request("GET", "/echo").status == 200)
        let before = try #require(node.layerMemoryKiB(peak: false))

        let size = 160 << 20
        let upload = try client.request("POST", "/echo", headers: [("Upgradefs-Version", "1")], streaming: size)
        #expect(upload.status == 200 && upload.json["length"] as? Int == size)
        #expect(upload.json["sha256"] as? String == HTTPTestConnection.patternSHA256(size))
        let chunked = try client.request("POST", "/echo", headers: [], streaming: 70 << 20, chunked: true)
        #expect(chunked.status == 200 && chunked.json["length"] as? Int == 70 << 20)
        #expect(chunked.json["sha256"] as? String == HTTPTestConnection.patternSHA256(70 << 20))
        let download = try client.request("GET", "/download?bytes=\(size)", keepBody: false)
        #expect(download.status == 200 && download.bodyLength == size && download.headers["content-length"] == "\(size)")

        let peak = try #require(node.layerMemoryKiB(peak: true))
        print("layer RSS before \(before) KiB, peak after 390 MiB of bodies \(peak) KiB")
        // 160 MiB went through each way; the layer's peak resident memory grew by far less than one body.
        #expect(peak - before < 48 << 10, "the layer's peak RSS grew from \(before) KiB to \(peak) KiB")
    }

    @Test func theProxyTagsTheApplicationsOutgoingCallsWithTheNodesVersion() throws {
        let node = try LayerNode()
        defer { node.stop() }
        // A request in absolute form, as any HTTP_PROXY-aware client sends it; a version it set is replaced.
        let proxy = try HTTPTestConnection(port: node.proxyPort)
        defer { proxy.close() }
        let direct = try proxy.request("GET", "http://127.0.0.1:\(node.appPort)/echo", headers: [
            ("Host", "127.0.0.1:\(node.appPort)"), ("Upgradefs-Version", "7"),
        ])
        #expect(direct.status == 200 && direct.json["version"] as? String == "1")
        #expect(direct.headers["upgradefs-version"] == nil)
        // The unmodified application (urllib honours http_proxy) calls a peer — itself — through the layer.
        let client = try HTTPTestConnection(port: node.publicPort)
        defer { client.close() }
        let relayed = try client.request("GET", "/call?url=http://127.0.0.1:\(node.appPort)/echo")
        #expect(relayed.status == 200 && relayed.json["version"] as? String == "1")
        let connect = try proxy.request("CONNECT", "127.0.0.1:\(node.appPort)", headers: [("Host", "127.0.0.1:\(node.appPort)")])
        #expect(connect.status == 501 && connect.headers["upgradefs-error"] == "bad-request")
    }

    @Test func aSlowOrStoppedApplicationGetsACleanAnswerNeverAHang() throws {
        let node = try LayerNode()
        defer { node.stop() }
        let client = try HTTPTestConnection(port: node.publicPort)
        defer { client.close() }
        var started = Date()
        let slow = try client.request("GET", "/slow?seconds=6")
        #expect(slow.status == 504 && slow.json["error"] as? String == "application-timeout")
        #expect(Date().timeIntervalSince(started) < 4)

        node.app.stop(within: 5, "the test app")
        started = Date()
        let down = try HTTPTestConnection(port: node.publicPort).request("GET", "/echo")
        #expect(down.status == 502 && down.json["error"] as? String == "application-unavailable")
        // The connect bound (upstream-timeout, 1.5 s here) and two polls of the mount, with slack.
        #expect(Date().timeIntervalSince(started) < 3.5)
        // In the manager's stop–start window the same is a retryable 503.
        try node.write("self/state", "upgrading\n")
        #expect(Harness.waitUntil(5) {
            let answer = try? HTTPTestConnection(port: node.publicPort).request("GET", "/echo")
            return answer?.status == 503 && answer?.headers["retry-after"] == "1" && answer?.json["error"] as? String == "upgrading"
        })
    }
}

extension LayerTests {
    /// Under systemd (mount/upgradefs-layer.service, Type=notify): READY=1 only once both listeners answer.
    @Test func theLayerIsReadyOnlyOnceItsListenersAnswer() throws {
        let publicPort = Harness.freePort()
        let notify = try NotifySocket { Harness.httpStatus(port: publicPort, path: "/echo") == 200 }
        defer { notify.stop() }
        let node = try LayerNode(publicPort: publicPort, environment: notify.environment())
        defer { node.stop() }
        let ready = notify.waitForReady(30)
        #expect(ready?.readyCheck == true, "READY=1 came before the public address answered")
        #expect(ready?.fields.contains("STATUS=listening on 127.0.0.1:\(publicPort)") == true, "\(notify.messages.map(\.fields))")
    }

    @Test func theCommandRefusesWhatItCannotRunWithTheDocumentedExitStatus() throws {
        let directory = try Harness.temporaryDirectory("layer-cli")
        defer { try? FileManager.default.removeItem(at: directory) }
        let config = directory.appending(path: "node.toml").path
        let missing = try Harness.runBounded(["layer", "--mount", directory.path, "--config", config])
        #expect(missing.status == 66)
        try "node = \"n1\"\nclass = \"kv\"\n".write(toFile: config, atomically: true, encoding: .utf8)
        let noLayer = try Harness.runBounded(["layer", "--mount", directory.path, "--config", config])
        #expect(noLayer.status == 78 && noLayer.output.contains("has no [layer] table"))
        try "node = \"n1\"\nclass = \"kv\"\n[layer]\nlisten = \"127.0.0.1:1\"\napp = \"127.0.0.1:2\"\n"
            .write(toFile: config, atomically: true, encoding: .utf8)
        let noMount = try Harness.runBounded(["layer", "--mount", directory.path, "--config", config])
        #expect(noMount.status == 69 && noMount.output.contains("is not an upgradefs mount"))
    }

    /// A null call on one kept-alive connection, straight to the application and through the layer: the layer's
    /// added latency (printed; the figures of docs/DESIGN.md, "Upgrade layer"). Bounded loosely, to catch a layer
    /// that waits (a Nagle stall, a per-call connect) rather than to benchmark.
    @Test func aNullCallThroughTheLayerCostsLittleMoreThanADirectOne() throws {
        let node = try LayerNode()
        defer { node.stop() }
        func percentiles(port: Int) throws -> [Double] {
            let connection = try HTTPTestConnection(port: port)
            defer { connection.close() }
            var micros: [Double] = []
            for i in 0..<2200 {
                let start = DispatchTime.now().uptimeNanoseconds
                let reply = try connection.request("GET", "/null", headers: [("Upgradefs-Version", "1")])
                if i >= 200 { micros.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1000) }
                #expect(reply.status == 200)
            }
            micros.sort()
            return [0.05, 0.5, 0.95].map { micros[Int(Double(micros.count - 1) * $0)] }
        }
        let direct = try percentiles(port: node.appPort)
        let layered = try percentiles(port: node.publicPort)
        print("null call µs p5/p50/p95: direct \(direct.map { Int($0) }), through the layer \(layered.map { Int($0) })")
        #expect(layered[1] - direct[1] < 5000)
    }
}

/// A node for the layer: a directory laid out like the mount (class `kv`, versions 1 and 2 published, the node at
/// 1), node.toml with `[layer]`, the echo app on its private port and `upgradefs layer` on its public and proxy ports.
final class LayerNode {
    let directory: URL
    let mount: String
    let publicPort: Int
    let appPort = Harness.freePort()
    let proxyPort = Harness.freePort()
    let app: ChildProcess
    let layer: ChildProcess

    /// `versions`: versions 1 to `versions` are published (all of class `kv`).
    init(upstreamTimeoutSeconds: Double = 1.5, publicPort: Int = Harness.freePort(), environment: [String: String] = [:],
         versions: Int = 2) throws {
        self.publicPort = publicPort
        directory = try Harness.temporaryDirectory("layer")
        mount = directory.appending(path: "mount").path
        let mount = mount
        func write(_ path: String, _ text: String) throws {
            try text.write(toFile: "\(mount)/\(path)", atomically: true, encoding: .utf8)
        }
        for version in 1...versions {
            try FileManager.default.createDirectory(atPath: "\(mount)/versions/\(version)", withIntermediateDirectories: true)
            try write("versions/\(version)/upgrade.toml",
                      "class = \"kv\"\nversion = \(version)\n\(version > 1 ? "from-version = \(version - 1)\n" : "")description = \"kv \(version)\"\n")
        }
        try FileManager.default.createDirectory(atPath: "\(mount)/self", withIntermediateDirectories: true)
        try write("latest", "\(versions)\n")
        try write("self/state", "running\n")
        try write("self/version", "1\n")
        let config = directory.appending(path: "node.toml").path
        try """
            node = "n1"
            class = "kv"
            root = "\(directory.path)/root"
            [layer]
            listen = "127.0.0.1:\(publicPort)"
            app = "127.0.0.1:\(appPort)"
            proxy = "127.0.0.1:\(proxyPort)"
            upstream-timeout = \(upstreamTimeoutSeconds)
            """.write(toFile: config, atomically: true, encoding: .utf8)
        app = try Self.echoApp(port: appPort, proxyPort: proxyPort, log: directory.appending(path: "app.log").path)
        layer = try ChildProcess(Harness.binary, ["layer", "--mount", mount, "--config", config],
                                 environment: environment, log: directory.appending(path: "layer.log").path)
        let up = Harness.waitUntil(20) {
            Harness.httpStatus(port: appPort, path: "/echo") == 200 && Harness.httpStatus(port: publicPort, path: "/echo") == 200
                && Harness.httpStatus(port: proxyPort, path: "/") != nil
        }
        guard up else {
            stop()
            throw HarnessError("the layer or the app did not come up: \((try? String(contentsOfFile: directory.appending(path: "layer.log").path, encoding: .utf8)) ?? "")")
        }
    }

    func write(_ path: String, _ text: String) throws {
        try text.write(toFile: "\(mount)/\(path)", atomically: true, encoding: .utf8)
    }

    /// Tests/layer/echo-app.py on 127.0.0.1:`port`, its outgoing calls through the layer's proxy.
    static func echoApp(port: Int, proxyPort: Int, log: String) throws -> ChildProcess {
        let echo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appending(path: "layer/echo-app.py").path
        return try ChildProcess("/usr/bin/env", ["python3", echo, "\(port)"],
                                environment: ["http_proxy": "http://127.0.0.1:\(proxyPort)", "no_proxy": "", "NO_PROXY": ""],
                                log: log)
    }

    func setVersion(_ version: Int) throws { try write("self/version", "\(version)\n") }

    /// The layer's resident memory now (VmRSS) or its peak (VmHWM), in KiB.
    func layerMemoryKiB(peak: Bool) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(layer.pid)/status", encoding: .utf8) else { return nil }
        let key = peak ? "VmHWM:" : "VmRSS:"
        return status.split(separator: "\n").first { $0.hasPrefix(key) }
            .flatMap { $0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first }.flatMap { Int($0) }
    }

    func stop() {
        layer.stop(within: 10, "upgradefs layer")
        app.stop(within: 5, "the test app")
        try? FileManager.default.removeItem(at: directory)
    }
}
