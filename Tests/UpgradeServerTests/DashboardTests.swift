import Foundation
import Sodium
import Testing
import UpgradeCore
@testable import UpgradeServer

/// A whiteboard over memory with nodes n1…nN of class `app`, as their managers report them, and the operator.
private func fleetStore(nodes count: Int, clock: ManualClock, register: Bool = true) async throws -> (any WhiteboardStore, [WhiteboardWriter], WhiteboardWriter) {
    let store = LedgerWhiteboardStore(
        storage: InMemoryWhiteboardStorage(), ledger: WhiteboardLedger(verifier: SodiumVerifier()), now: { clock.now })
    let op = WhiteboardWriter("operator")
    try await store.enroll(node: op.name, publicKey: op.key.publicKey)
    var writers: [WhiteboardWriter] = []
    for index in 1...count {
        let writer = WhiteboardWriter("n\(index)")
        try await store.enroll(node: writer.name, publicKey: writer.key.publicKey)
        writers.append(writer)
    }
    if register { try await store.registerUpgrade(2, class: "app") }
    return (store, writers, op)
}

private func report(_ store: any WhiteboardStore, _ writer: WhiteboardWriter, state: String, version: Int, upgrade: Int? = nil) async throws {
    for (name, content) in [("class", "app\n"), ("state", state + "\n"), ("version", "\(version)\n"), ("heartbeat", "1\n")] {
        _ = try await store.apply(writer.request(.put, "nodes/\(writer.name)/\(name)", content))
    }
    if let upgrade { _ = try await store.apply(writer.request(.put, "nodes/\(writer.name)/upgrade", "\(upgrade)\n")) }
}

private func status(_ store: any WhiteboardStore, now: Date) async throws -> WhiteboardStatus {
    WhiteboardStatus(enrolled: try await store.enrolledNodes(), view: try await store.snapshot(), refusals: try await store.refusals(), now: now)
}

@Suite struct FleetPageTests {
    @Test func pageShowsTheNumbersTheWhiteboardHolds() async throws {
        let clock = ManualClock()
        let (store, n, op) = try await fleetStore(nodes: 4, clock: clock)
        try await report(store, n[0], state: "running", version: 2)
        try await report(store, n[1], state: "upgrading", version: 1, upgrade: 2)
        try await report(store, n[2], state: "failed", version: 1, upgrade: 2)
        _ = try await store.apply(op.request(.put, "upgrades/2/control", "pause\n"))
        _ = try await store.apply(op.request(.put, "locks/roll/capacity", "2"))
        _ = try await store.apply(n[1].request(.acquire, "locks/roll/n2"))
        clock.advance(30)
        // n4 never sent a heartbeat; n1's is refreshed, the others' are 90 s old (the lock TTL is 60 s).
        _ = try await store.apply(n[0].request(.put, "nodes/n1/heartbeat", "2"))
        clock.advance(60)
        let publishedAt = clock.now.addingTimeInterval(-300)
        let page = FleetPage(
            status: try await status(store, now: clock.now),
            published: [PublishedUpgrade(version: 2, class: "app", sf: "sf/rolling", publishedAt: publishedAt, description: "app 2")],
            staleAfterSeconds: 60, now: clock.now)
        #expect(page.nodeCount == 4)
        #expect(page.nodes.map(\.name) == ["n1", "n2", "n3", "n4"])
        #expect(page.nodes.map(\.stale) == [false, true, true, true])
        #expect(page.nodes[0].heartbeat == "60 s ago" && page.nodes[3].heartbeat == "never")
        #expect(page.staleCount == 3)
        #expect(page.groups.contains(FleetPage.Group(state: "running", version: "2", count: 1)))
        #expect(page.groups.contains(FleetPage.Group(state: "-", version: "-", count: 1)))
        let upgrade = try #require(page.upgrades.first)
        #expect(upgrade.version == 2 && upgrade.class == "app" && upgrade.sf == "sf/rolling" && upgrade.control == "pause")
        #expect(upgrade.done == 1 && upgrade.upgrading == 1 && upgrade.failed == 1 && upgrade.total == 3 && upgrade.percentDone == 33)
        #expect(upgrade.published == "5 min ago" && upgrade.paused && upgrade.description == "app 2")
        #expect(page.locks == [FleetPage.LockRow(
            name: "roll", capacity: 2, held: 1, full: false,
            holders: [FleetPage.HolderRow(lock: "roll", holder: "n2", node: "n2", held: "90 s")])])
    }

    @Test func agesReadLikePeopleSayThem() {
        #expect(FleetPage.age(-3) == "0 s")
        #expect(FleetPage.age(119) == "119 s")
        #expect(FleetPage.age(600) == "10 min")
        #expect(FleetPage.age(3 * 3600) == "3 h")
        #expect(FleetPage.age(5 * 86400) == "5 d")
    }

    @Test func nodePageShowsFilesAndTheTailOfTheLog() async throws {
        let clock = ManualClock()
        let (store, n, _) = try await fleetStore(nodes: 1, clock: clock)
        try await report(store, n[0], state: "running", version: 2)
        let log = (1...150).map { "line \($0)" }.joined(separator: "\n") + "\n<script>alert(1)</script>\n"
        _ = try await store.apply(n[0].request(.put, "nodes/n1/log", log))
        let view = try await store.snapshot()
        let page = try #require(NodePage(name: "n1", status: try await status(store, now: clock.now), view: view, staleAfterSeconds: 60, now: clock.now))
        #expect(page.files.map(\.name) == ["class", "heartbeat", "log", "state", "version"])
        #expect(page.files.first { $0.name == "state" }?.preview == "running\n")
        #expect(page.files.first { $0.name == "log" }?.preview == nil)
        #expect(page.logLinesShown == 100)
        #expect(page.logTail.hasPrefix("line 52\n") && page.logTail.hasSuffix("<script>alert(1)</script>"))
        #expect(NodePage(name: "n9", status: try await status(store, now: clock.now), view: view, staleAfterSeconds: 60, now: clock.now) == nil)

        // The page escapes what a node wrote: its log cannot run script in the operator's browser.
        let library = try DashboardHTTP.makeLibrary()
        let html = try #require(library.render(
            DashboardView(title: "node n1", page: page, session: SessionView(signedIn: false, csrf: "", actionsEnabled: true, back: "/")),
            withTemplate: "node"))
        #expect(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !html.contains("<script>alert"))
        #expect(html.contains(#"data-events="/events?node=n1""#))
    }

    @Test func everyTemplateParsesAndTheFleetPageRendersItsNumbers() async throws {
        let clock = ManualClock()
        let (store, n, _) = try await fleetStore(nodes: 2, clock: clock)
        try await report(store, n[0], state: "running", version: 2)
        let page = FleetPage(status: try await status(store, now: clock.now), published: [], staleAfterSeconds: 60, now: clock.now)
        let view = DashboardView(title: "fleet", page: page, session: SessionView(signedIn: true, csrf: "c5rf", actionsEnabled: true, back: "/"))
        let html = try #require(try DashboardHTTP.makeLibrary().render(view, withTemplate: "fleet"))
        #expect(html.contains(#"<article class="upgrade" id="upgrade-2">"#))
        // n2 never reported a class: it counts under no upgrade.
        #expect(html.contains("1/1 done (100%)"))
        #expect(html.contains(#"<progress value="1" max="1">"#))
        #expect(html.contains(#"<tr id="node-n1"><td><a href="/nodes/n1">n1</a></td><td>app</td><td class="state">running</td><td class="version">2</td>"#))
        #expect(html.contains(#"<input type="hidden" name="csrf" value="c5rf">"#))
        #expect(html.contains("signed in as operator"))
        for section in DashboardTemplates.fleetSections { #expect(html.contains(#"<section id="\#(section)" data-live>"#)) }

        // Without a token file the page has no action forms, and says why.
        let off = DashboardView(title: "fleet", page: page, session: SessionView(signedIn: false, csrf: "", actionsEnabled: false, back: "/"))
        let readOnly = try #require(try DashboardHTTP.makeLibrary().render(off, withTemplate: "fleet"))
        #expect(!readOnly.contains("/actions") && readOnly.contains("Operator actions are off"))
    }

    /// The figure in docs/BENCHMARKS.md ("The fleet page"): the page of a 1,000-node fleet, built from an in-memory
    /// whiteboard, rendered as `GET /` and each live event renders it.
    @Test func fleetPageOfAThousandNodesRendersQuickly() async throws {
        let clock = ManualClock()
        // Upgrade 2 registered after the reports: each report would otherwise recompute its summary.
        let (store, n, op) = try await fleetStore(nodes: 1000, clock: clock, register: false)
        for (index, writer) in n.enumerated() {
            let state = index % 10 == 0 ? "upgrading" : index % 3 == 0 ? "waiting" : "running"
            try await report(store, writer, state: state, version: index % 10 == 0 || index % 3 == 0 ? 1 : 2, upgrade: 2)
        }
        try await store.registerUpgrade(2, class: "app")
        _ = try await store.apply(op.request(.put, "locks/roll/capacity", "100"))
        for writer in n.prefix(100) { _ = try await store.apply(writer.request(.acquire, "locks/roll/\(writer.name)")) }
        let library = try DashboardHTTP.makeLibrary()
        let session = SessionView(signedIn: true, csrf: String(repeating: "a", count: 64), actionsEnabled: true, back: "/")
        var bytes = 0
        var best = Duration.seconds(1000)
        var snapshotBest = Duration.seconds(1000)
        for _ in 0..<5 {
            let clockStart = ContinuousClock.now
            let fleetStatus = try await status(store, now: clock.now)
            let afterRead = ContinuousClock.now
            let page = FleetPage(status: fleetStatus, published: [], staleAfterSeconds: 60, now: clock.now)
            let html = try #require(library.render(DashboardView(title: "fleet", page: page, session: session), withTemplate: "fleet"))
            let took = ContinuousClock.now - clockStart
            best = min(best, took)
            snapshotBest = min(snapshotBest, afterRead - clockStart)
            bytes = html.utf8.count
            #expect(html.contains(#"<tr id="node-n1000">"#))
        }
        let page = FleetPage(status: try await status(store, now: clock.now), published: [], staleAfterSeconds: 60, now: clock.now)
        let sections = DashboardTemplates.fleetSections.map { section in
            "\(section) \(library.render(DashboardView(title: "fleet", page: page, session: session), withTemplate: section)?.utf8.count ?? 0)"
        }
        print("fleet page, 1000 nodes: \(bytes) bytes, built in \(best) (of which reading the whiteboard \(snapshotBest)); "
            + "sections in bytes: \(sections.joined(separator: ", "))")
        #expect(bytes < 1_000_000)
        #expect(best < .seconds(5))
    }
}

/// Who may read and act, named after the attack each refusal stops.
@Suite struct OperatorGateTests {
    let host = "127.0.0.1:7420"

    func signedIn(origin: String? = "http://127.0.0.1:7420", csrf: Bool = true, fetchSite: String? = "same-origin") -> OperatorGate.Facts {
        OperatorGate.Facts(credentialConfigured: true, validSession: true, validCSRF: csrf, origin: origin, host: host, fetchSite: fetchSite)
    }

    @Test func actionWithoutCredentialsIsRefused() {
        let facts = OperatorGate.Facts(credentialConfigured: true, origin: "http://127.0.0.1:7420", host: host)
        #expect(OperatorGate.act(facts) == .refused(status: 401, reason: "operator credentials required: sign in as the operator first"))
    }

    @Test func crossSitePostIsRefused() {
        #expect(OperatorGate.act(signedIn(origin: "http://evil.example", fetchSite: nil))
            == .refused(status: 403, reason: "cross-site request refused: Origin http://evil.example is not this server"))
        #expect(OperatorGate.act(signedIn(fetchSite: "cross-site")) == .refused(status: 403, reason: "cross-site request refused (Sec-Fetch-Site: cross-site)"))
        #expect(OperatorGate.act(signedIn(origin: "null", fetchSite: nil)) != .allowed)
        #expect(OperatorGate.signIn(OperatorGate.Facts(credentialConfigured: true, origin: "http://evil.example", host: host)) != .allowed)
    }

    @Test func postWithoutOriginIsRefused() {
        #expect(OperatorGate.act(signedIn(origin: nil)) != .allowed)
    }

    @Test func forgedFormWithoutTheSessionsCSRFTokenIsRefused() {
        #expect(OperatorGate.act(signedIn(csrf: false)) == .refused(status: 403, reason: "missing or wrong CSRF token: reload the page and try again"))
    }

    @Test func wrongBearerTokenIsRefused() {
        let facts = OperatorGate.Facts(credentialConfigured: true, bearerMatches: false)
        #expect(OperatorGate.act(facts) == .refused(status: 401, reason: "wrong operator token"))
        #expect(OperatorGate.read(facts) == .refused(status: 401, reason: "wrong operator token"))
        #expect(OperatorGate.act(OperatorGate.Facts(credentialConfigured: true, bearerMatches: true)) == .allowed)
    }

    @Test func actionsAreOffWithoutATokenFile() {
        #expect(OperatorGate.act(OperatorGate.Facts(credentialConfigured: false, bearerMatches: true)) != .allowed)
        #expect(OperatorGate.signIn(OperatorGate.Facts(credentialConfigured: false, origin: "http://127.0.0.1:7420", host: host)) != .allowed)
    }

    @Test func readFromAnotherHostNeedsTheCredential() {
        #expect(OperatorGate.read(OperatorGate.Facts(credentialConfigured: true)) == .allowed)
        #expect(OperatorGate.read(OperatorGate.Facts(credentialConfigured: true, fromLoopback: false))
            == .refused(status: 401, reason: "sign in as the operator to see the fleet from another host"))
        #expect(OperatorGate.read(OperatorGate.Facts(credentialConfigured: false, fromLoopback: false)) != .allowed)
        #expect(OperatorGate.read(OperatorGate.Facts(credentialConfigured: true, validSession: true, fromLoopback: false)) == .allowed)
    }

    @Test func signedInSameSiteFormIsAllowed() {
        #expect(OperatorGate.act(signedIn()) == .allowed)
        #expect(OperatorGate.act(signedIn(origin: "HTTP://127.0.0.1:7420", fetchSite: nil)) == .allowed)
    }
}

@Suite struct OperatorCredentialTests {
    let token = "0123456789abcdef0123456789abcdef0123456789abcdef"
    var credential: OperatorCredential { try! OperatorCredential(fileContent: Array((token + "\n").utf8)) }
    let now = Date(timeIntervalSince1970: 1_700_000_000)

    @Test func tokenIsComparedWhole() {
        #expect(credential.matches(token: token))
        #expect(!credential.matches(token: String(token.dropLast())))
        #expect(!credential.matches(token: token + "0"))
        #expect(!credential.matches(token: ""))
    }

    @Test func shortOrSpacedTokenIsRefused() {
        #expect(throws: OperatorCredential.Problem.self) { try OperatorCredential(fileContent: Array("short".utf8)) }
        #expect(throws: OperatorCredential.Problem.self) { try OperatorCredential(fileContent: Array((token + " x").utf8)) }
    }

    @Test func forgedSessionCookieIsRefused() throws {
        let session = credential.newSession(now: now)
        #expect(credential.isValidSession(session, now: now))
        let expiry = try #require(session.split(separator: ".").first)
        #expect(!credential.isValidSession("\(expiry).\(String(repeating: "0", count: 64))", now: now))
        // Another token's session (the token was replaced) is not valid either.
        let other = try OperatorCredential(fileContent: Array(String(repeating: "x", count: 40).utf8))
        #expect(!credential.isValidSession(other.newSession(now: now), now: now))
        // A later expiry with the old MAC is a forgery.
        let mac = try #require(session.split(separator: ".").last)
        #expect(!credential.isValidSession("\(Int(expiry)! + 3600).\(mac)", now: now))
    }

    @Test func expiredSessionIsRefused() {
        let session = credential.newSession(now: now)
        #expect(!credential.isValidSession(session, now: now.addingTimeInterval(Double(OperatorCredential.sessionSeconds) + 1)))
    }

    @Test func csrfTokenOfAnotherSessionIsRefused() {
        let a = credential.newSession(now: now)
        let b = credential.newSession(now: now.addingTimeInterval(1))
        #expect(credential.isValidCSRF(credential.csrfToken(session: a), session: a))
        #expect(!credential.isValidCSRF(credential.csrfToken(session: b), session: a))
        #expect(!credential.isValidCSRF("", session: a))
    }

    @Test func cookieIsHttpOnlyAndSameSiteStrict() {
        let cookie = OperatorCredential.setCookie("v")
        #expect(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.hasPrefix("upgradefs_operator=v;"))
    }
}

@Suite struct OperatorActionTests {
    @Test func eachActionIsTheWriteTheOperatorWouldMakeByHand() throws {
        func write(_ form: [String: String]) throws -> String {
            let action = try OperatorAction.parse(form).get()
            let write = action.write
            return "\(write.op.rawValue) \(write.path) \(write.content.map { String(decoding: $0, as: UTF8.self) } ?? "-")"
        }
        #expect(try write(["action": "approve", "upgrade": "3"]) == "put upgrades/3/control approve\n")
        #expect(try write(["action": "resume", "upgrade": "3"]) == "put upgrades/3/control go\n")
        #expect(try write(["action": "pause", "upgrade": "3"]) == "put upgrades/3/control pause\n")
        #expect(try write(["action": "abort", "upgrade": "3"]) == "put upgrades/3/control abort\n")
        #expect(try write(["action": "release", "lock": "roll", "holder": "n2"]) == "release locks/roll/n2 -")
        #expect(try write(["action": "capacity", "lock": "roll", "capacity": " 3 "]) == "put locks/roll/capacity 3\n")
        #expect(throws: OperatorAction.Refused.self) { try OperatorAction.parse(["action": "format", "upgrade": "3"]).get() }
        #expect(throws: OperatorAction.Refused.self) { try OperatorAction.parse(["action": "capacity", "lock": "roll", "capacity": "-1"]).get() }
        #expect(throws: OperatorAction.Refused.self) { try OperatorAction.parse(["action": "approve"]).get() }
    }

    @Test func formsAndEventsAreEncodedAsBrowsersExpect() {
        #expect(FormFields.parse("a=1&b=x+y%21&csrf=&bad=%zz") == ["a": "1", "b": "x y!", "csrf": ""])
        #expect(ServerSentEvent.encode(event: "nodes", data: "<p>\r\nx</p>") == "event: nodes\ndata: <p>\ndata: x</p>\n\n")
        #expect(ServerSentEvent.encode(event: "a", data: "1\r2") == "event: a\ndata: 1\ndata: 2\n\n")
        #expect(DashboardHTTP.safeBack("//evil.example") == "/" && DashboardHTTP.safeBack("/nodes/n1") == "/nodes/n1")
        #expect(DashboardHTTP.safeBack("/nodes/../x") == "/")
    }
}
