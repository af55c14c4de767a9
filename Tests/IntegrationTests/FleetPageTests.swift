import Foundation
import Sodium
import Testing
import UpgradeCore
import UpgradeServer
import UpgradeWhiteboardClient

/// A real `upgradefs serve` (debug log) with an operator token file, upgrade 2 of class `demo` published, and nodes
/// that write as their managers do: signed requests to `/v1/udb/apply`.
final class FleetPageFixture {
    let serve: ServeProcess
    let token: String
    private let tokenDirectory = TemporaryDirectory("token")
    private var keys: [String: NodeKeyFile] = [:]
    private var seqs: [String: Int64] = [:]

    init(nodes: [String]) throws {
        token = Hex.encode(Sodium.randomBytes(32))
        let tokenFile = tokenDirectory.url.appending(path: "operator.token").path
        guard FileManager.default.createFile(atPath: tokenFile, contents: Data((token + "\n").utf8), attributes: [.posixPermissions: 0o600])
        else { throw HarnessError("cannot write \(tokenFile)") }
        serve = try ServeProcess(arguments: ["--operator-token-file", tokenFile, "--log-level", "debug"])
        for name in nodes { keys[name] = try NodeKeyFile.load(from: serve.enroll(name)) }
        try serve.publish(version: 2, files: ["payload/app": Array("v2".utf8)])
    }

    deinit { tokenDirectory.remove() }

    var url: String { serve.baseURL + "/" }

    /// A signed put by `node` of its own file, as its mount sends it.
    func write(_ node: String, _ file: String, _ content: String) throws {
        let key = keys[node]!
        let seq = (seqs[node] ?? 0) + 1
        seqs[node] = seq
        let request = WhiteboardRequest(
            node: node, channel: .outbox, seq: seq, op: .put, path: "nodes/\(node)/\(file)", content: Array(content.utf8),
            nonce: Sodium.randomBytes(16)
        ).signed(by: key.key)
        guard let (status, body) = Harness.post(serve.baseURL + "/v1/udb/apply", request.encoded()), status == 200 else {
            throw HarnessError("write of nodes/\(node)/\(file) refused")
        }
        _ = body
    }

    /// What a manager reports: class, state, version, the upgrade its state concerns, a heartbeat.
    func report(_ node: String, state: String, version: Int, upgrade: Int? = nil) throws {
        try write(node, "class", "demo\n")
        if let upgrade { try write(node, "upgrade", "\(upgrade)\n") }
        try write(node, "version", "\(version)\n")
        try write(node, "state", state + "\n")
        try write(node, "heartbeat", "1\n")
    }

    /// A whiteboard file as the server holds it (read from its database, as `upgradefs enroll` opens it).
    func file(_ path: String) async throws -> String? {
        let store = try SQLiteWhiteboardStore(directory: serve.state.path, verifier: SodiumVerifier())
        return try await store.snapshot().files.first { $0.path == path }?.content.map { String(decoding: $0, as: UTF8.self) }
    }

    /// `curl -s` with `arguments`: the status and the body.
    func curl(_ arguments: [String]) throws -> (status: Int, body: String) {
        let out = tokenDirectory.url.appending(path: "curl-\(UUID().uuidString)").path
        defer { unlink(out) }
        let result = try Harness.run("/usr/bin/curl", ["-s", "-o", out, "-w", "%{http_code}", "--max-time", "10"] + arguments)
        return (Int(result.output) ?? -1, (try? String(contentsOfFile: out, encoding: .utf8)) ?? "")
    }

    /// Signs in with curl like a browser on this page does, keeping the cookie in `jar`; returns the CSRF token of
    /// the session (from the page's forms).
    func signIn(jar: String) throws -> String {
        let login = try curl(["-c", jar, "-H", "Origin: \(serve.baseURL)", "--data-urlencode", "token=\(token)", serve.baseURL + "/login"])
        guard login.status == 303 else { throw HarnessError("sign-in answered \(login.status): \(login.body)") }
        let page = try curl(["-b", jar, serve.baseURL + "/"])
        guard let range = page.body.range(of: #"name="csrf" value=""#) else { throw HarnessError("no CSRF token on the page") }
        return String(page.body[range.upperBound...].prefix { $0 != "\"" })
    }
}

/// The fleet page in Debian's headless Chromium (driven over the DevTools protocol, `Browser`) against a real
/// `upgradefs serve`.
@Suite(.serialized, .browser) struct FleetPageBrowserTests {
    /// Where screenshots go: $UPGRADEFS_TEST_ARTIFACTS, or .build/test-artifacts.
    static let artifacts = ProcessInfo.processInfo.environment["UPGRADEFS_TEST_ARTIFACTS"]
        ?? FileManager.default.currentDirectoryPath + "/.build/test-artifacts"

    @Test func pageShowsTheWhiteboardsNumbersAndUpdatesLiveAfterANodeWrites() async throws {
        let fleet = try FleetPageFixture(nodes: ["n1", "n2", "n3"])
        try fleet.report("n1", state: "running", version: 2)
        try fleet.report("n2", state: "waiting", version: 1, upgrade: 2)
        try fleet.report("n3", state: "upgrading", version: 1, upgrade: 2)
        let browser = try Browser()
        try browser.navigate(fleet.url)
        // Upgrade 2's summary appears once the server has registered the publication (live, if after the load).
        #expect(browser.waitUntil(10, "!!document.querySelector('#upgrade-2')"))
        #expect(try browser.text("#upgrade-2 .done") == "1/3 done (33%)")
        #expect(try browser.text("#upgrade-2 .waiting") == "1 waiting")
        #expect(try browser.text("#upgrade-2 .upgrading") == "1 upgrading")
        #expect(try browser.text("#upgrade-2 .class") == "demo")
        #expect(try browser.text("#upgrade-2 .description") == "test bundle 2")
        #expect(try browser.text("#upgrade-2 .meta").hasPrefix("SF none · published ") && browser.text("#upgrade-2 .meta").hasSuffix(" s ago"))
        #expect(try browser.text("#node-n2 .state") == "waiting")
        #expect(try browser.text("#node-count") == "3")

        // A node writes; the open page shows it without a reload (the event stream), within a second.
        let revision = try browser.evaluate("document.body.dataset.revision") as? String
        let wrote = Date()
        try fleet.write("n2", "state", "upgrading\n")
        #expect(browser.waitUntil(5, "document.querySelector('#node-n2 .state').textContent === 'upgrading'"))
        let seconds = Date().timeIntervalSince(wrote)
        print("fleet page: a node's write shown live after \(Int(seconds * 1000)) ms")
        #expect(seconds < 1.0)
        #expect(try browser.text("#upgrade-2 .upgrading") == "2 upgrading")
        #expect(try browser.evaluate("document.body.dataset.revision") as? String != revision)
        #expect(try browser.evaluate("performance.getEntriesByType('navigation').length") as? Int == 1, "no reload")

        // A node's page: its files and log, live too.
        try fleet.write("n2", "log", "2026-11-30T02:00:00Z waiting for the rolling slot\n")
        try browser.navigate(fleet.serve.baseURL + "/nodes/n2")
        #expect(try browser.text("#node-detail .state") == "upgrading")
        #expect(try browser.text("#log").contains("waiting for the rolling slot"))
        try fleet.write("n2", "state", "running\n")
        #expect(browser.waitUntil(5, "document.querySelector('#node-detail .state').textContent === 'running'"))
        try browser.navigate(fleet.url)

        try Self.keepScreenshot(browser, name: "fleet-page.png")

        // An open event stream does not hold up a graceful stop.
        try browser.navigate(fleet.url)
        let stopping = Date()
        #expect(fleet.serve.stop() == 0)
        #expect(Date().timeIntervalSince(stopping) < 5)
    }

    /// Saves the page's screenshot as the artifact `name` and checks it: a PNG over 20 KB on which no one colour
    /// covers 90 % (the browser decodes it), as the background of an empty page would. Leaves the browser on
    /// about:blank (the page's CSP allows no data: images).
    static func keepScreenshot(_ browser: Browser, name: String) throws {
        let png = try browser.screenshot()
        try FileManager.default.createDirectory(atPath: artifacts, withIntermediateDirectories: true)
        let file = artifacts + "/" + name
        try Data(png).write(to: URL(fileURLWithPath: file))
        #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]) && png.count > 20_000, "\(png.count) bytes")
        try browser.navigate("about:blank")
        let commonest = try browser.evaluate("""
            new Promise(function (resolve) {
              var image = new Image();
              image.onload = function () {
                var canvas = document.createElement('canvas');
                canvas.width = image.width; canvas.height = image.height;
                var context = canvas.getContext('2d');
                context.drawImage(image, 0, 0);
                var pixels = context.getImageData(0, 0, image.width, image.height).data, counts = {}, most = 0;
                for (var i = 0; i < pixels.length; i += 4) {
                  var key = pixels[i] + ',' + pixels[i + 1] + ',' + pixels[i + 2];
                  counts[key] = (counts[key] || 0) + 1;
                  if (counts[key] > most) most = counts[key];
                }
                resolve(most / (pixels.length / 4));
              };
              image.src = 'data:image/png;base64,\(Data(png).base64EncodedString())';
            })
            """) as? Double
        print("fleet page screenshot: \(file), \(png.count) bytes, commonest colour on \(Int((commonest ?? 1) * 100))% of it")
        #expect((commonest ?? 1) < 0.9)
    }

    @Test func approveClickChangesTheControlFileOnlyWithTheOperatorsCredentials() async throws {
        let fleet = try FleetPageFixture(nodes: ["n1"])
        try fleet.report("n1", state: "waiting", version: 1, upgrade: 2)
        let browser = try Browser()
        try browser.navigate(fleet.url)
        // Upgrade 2's summary appears once the server has registered the publication (live, if after the load).
        #expect(browser.waitUntil(10, "!!document.querySelector('#upgrade-2')"))

        // Not signed in: the click is refused and says why; the control file is not written.
        _ = try browser.evaluate("document.querySelector('#upgrade-2 button[value=approve]').click()")
        #expect(browser.waitUntil(10, "!!document.getElementById('verdict')"))
        #expect(try browser.text("#verdict") == "operator credentials required: sign in as the operator first")
        #expect(try await fleet.file("upgrades/2/control") == nil)

        // Signed in as the operator: the same click writes approve.
        try browser.navigate(fleet.serve.baseURL + "/login")
        _ = try browser.evaluate("""
            document.querySelector('input[name=token]').value = \(Browser.quoted(fleet.token));
            document.querySelector('form[action="/login"] button').click()
            """)
        #expect(browser.waitUntil(10, "location.pathname === '/' && !!document.querySelector('#upgrade-2 button[value=approve]')"))
        #expect(try browser.text(".who") == "signed in as operator")
        _ = try browser.evaluate("document.querySelector('#upgrade-2 button[value=approve]').click()")
        #expect(browser.waitUntil(10, "document.querySelector('#upgrade-2 .control') && document.querySelector('#upgrade-2 .control').textContent === 'approve'"))
        #expect(try await fleet.file("upgrades/2/control") == "approve\n")

        // Signing out ends the session: the next click is refused again.
        _ = try browser.evaluate("document.querySelector('form[action=\"/logout\"] button').click()")
        #expect(browser.waitUntil(10, "!document.querySelector('.who') && !!document.querySelector('#upgrade-2 button[value=pause]')"))
        _ = try browser.evaluate("document.querySelector('#upgrade-2 button[value=pause]').click()")
        #expect(browser.waitUntil(10, "!!document.getElementById('verdict')"))
        #expect(try browser.text("#verdict") == "operator credentials required: sign in as the operator first")
        #expect(try await fleet.file("upgrades/2/control") == "approve\n")
        #expect(!fleet.serve.log.contains(fleet.token))
    }
}

/// The operator's actions over HTTP, each test named after the attack it stops.
@Suite(.serialized) struct FleetPageSecurityTests {
    @Test func actionWithoutCredentialsIsRefused() async throws {
        let fleet = try FleetPageFixture(nodes: ["n1"])
        let answer = try fleet.curl(["-H", "Origin: \(fleet.serve.baseURL)", "--data", "action=approve&upgrade=2", fleet.serve.baseURL + "/actions"])
        #expect(answer.status == 401 && answer.body.contains("operator credentials required"))
        #expect(try await fleet.file("upgrades/2/control") == nil)
    }

    @Test func crossSitePostIsRefused() async throws {
        let fleet = try FleetPageFixture(nodes: ["n1"])
        let jar = fleet.serve.directory.appending(path: "cookies").path
        let csrf = try fleet.signIn(jar: jar)
        // A page on another site posts the form with the operator's cookie (as a browser without SameSite would).
        let forged = try fleet.curl(["-b", jar, "-H", "Origin: http://evil.example", "--data", "action=abort&upgrade=2&csrf=\(csrf)",
                                     fleet.serve.baseURL + "/actions"])
        #expect(forged.status == 403 && forged.body.contains("cross-site request refused"))
        let withoutCSRF = try fleet.curl(["-b", jar, "-H", "Origin: \(fleet.serve.baseURL)", "--data", "action=abort&upgrade=2",
                                          fleet.serve.baseURL + "/actions"])
        #expect(withoutCSRF.status == 403 && withoutCSRF.body.contains("CSRF"))
        #expect(try await fleet.file("upgrades/2/control") == nil)
        // The same form from the page itself is applied (the refusals above are not the only answer).
        let own = try fleet.curl(["-b", jar, "-H", "Origin: \(fleet.serve.baseURL)", "--data", "action=pause&upgrade=2&csrf=\(csrf)",
                                  fleet.serve.baseURL + "/actions"])
        #expect(own.status == 303)
        #expect(try await fleet.file("upgrades/2/control") == "pause\n")
    }

    @Test func wrongTokenIsRefused() async throws {
        let fleet = try FleetPageFixture(nodes: ["n1"])
        let wrong = String(fleet.token.reversed())
        let bearer = try fleet.curl(["-H", "Authorization: Bearer \(wrong)", "--data", "action=approve&upgrade=2", fleet.serve.baseURL + "/actions"])
        #expect(bearer.status == 401 && bearer.body.contains("wrong operator token"))
        let login = try fleet.curl(["-H", "Origin: \(fleet.serve.baseURL)", "--data-urlencode", "token=\(wrong)", fleet.serve.baseURL + "/login"])
        #expect(login.status == 401 && login.body.contains("wrong operator token"))
        #expect(try await fleet.file("upgrades/2/control") == nil)
        // The right token as a bearer (a script) is applied, and a refused write says the ledger's reason.
        let right = try fleet.curl(["-H", "Authorization: Bearer \(fleet.token)", "--data", "action=capacity&lock=roll&capacity=2",
                                    fleet.serve.baseURL + "/actions"])
        #expect(right.status == 200 && right.body.contains("locks/roll/capacity is now 2"))
        let refused = try fleet.curl(["-H", "Authorization: Bearer \(fleet.token)", "--data", "action=release&lock=roll&holder=n1",
                                      fleet.serve.baseURL + "/actions"])
        #expect(refused.status == 404 && refused.body.contains("lock roll has no holder n1"))
    }

    @Test func tokenFileOthersMayReadIsRefusedBeforeAnythingIsCreated() throws {
        let directory = TemporaryDirectory("token-file")
        defer { directory.remove() }
        let token = directory.url.appending(path: "operator.token").path
        let key = directory.url.appending(path: "server.key").path
        let state = directory.url.appending(path: "state").path
        #expect(FileManager.default.createFile(atPath: token, contents: Data(String(repeating: "a", count: 64).utf8),
                                               attributes: [.posixPermissions: 0o644]))
        #expect(try Harness.run(Harness.binary, ["keygen", "--out", key]).status == 0)
        let serve = try Harness.runBounded(["serve", "--key", key, "--state", state, "--publish", directory.url.appending(path: "p").path,
                                            "--listen", "127.0.0.1:0", "--operator-token-file", token])
        #expect(serve.status == 71)
        #expect(serve.output.contains("operator token file \(token) has mode 0644") && serve.output.contains("chmod 600 \(token)"))
        #expect(!FileManager.default.fileExists(atPath: state))
    }

    @Test func tokenIsNeverInTheLog() async throws {
        let fleet = try FleetPageFixture(nodes: ["n1"])
        let jar = fleet.serve.directory.appending(path: "cookies").path
        let csrf = try fleet.signIn(jar: jar)
        _ = try fleet.curl(["-b", jar, "-H", "Origin: \(fleet.serve.baseURL)", "--data", "action=approve&upgrade=2&csrf=\(csrf)", fleet.serve.baseURL + "/actions"])
        _ = try fleet.curl(["-H", "Authorization: Bearer \(fleet.token)", "--data", "action=resume&upgrade=2", fleet.serve.baseURL + "/actions"])
        _ = try fleet.curl(["-H", "Authorization: Bearer \(fleet.token)x", "--data", "action=resume&upgrade=2", fleet.serve.baseURL + "/actions"])
        #expect(try await fleet.file("upgrades/2/control") == "go\n")
        let log = fleet.serve.log
        #expect(log.contains("operator action applied"))
        #expect(!log.contains(fleet.token))
        #expect(!log.contains(String(fleet.token.prefix(16))))
        let cookie = (try? String(contentsOfFile: jar, encoding: .utf8)) ?? ""
        let session = cookie.split(separator: "\n").last { $0.contains("upgradefs_operator") }?.split(separator: "\t").last.map(String.init) ?? "?"
        #expect(!log.contains(session) && !log.contains(csrf))
    }
}
