import Testing
import UpgradeCore
@testable import UpgradeLayer

/// Every routing decision of the layer, as a pure function: no socket, no mount.
/// The class here changed at system versions 2, 4 and 7; versions 3, 5 and 6 were other classes'.
struct LayerRouterTests {
    let classVersions: [Int64] = [2, 4, 7]

    func view(node: Int64, latest: Int64 = 7, sos: Set<SimulationObject> = [], retired: Set<Int64> = [],
              upgrading: Bool = false) -> LayerView {
        LayerView(nodeVersion: node, latest: latest, classVersions: classVersions, upgrading: upgrading,
                  simulationObjects: sos, retired: retired)
    }

    func route(_ header: String?, _ view: LayerView) -> LayerRoute {
        LayerRouter.route(versionHeader: header.map { [$0] } ?? [], view: view)
    }

    func refusal(_ route: LayerRoute) -> LayerRefusal? {
        if case .refuse(let refusal) = route { return refusal }
        return nil
    }

    @Test func aCallWithoutTheHeaderIsAnExternalClientOfTheNodesVersion() {
        #expect(route(nil, view(node: 4)) == .application)
        #expect(route(nil, view(node: 5)) == .application)
    }

    @Test func aCallForTheInstalledVersionGoesToTheApplication() {
        #expect(route("4", view(node: 4)) == .application)
        // Versions 5 and 6 were other classes': their callers expect this class's version 4.
        #expect(route("5", view(node: 4)) == .application)
        #expect(route("6", view(node: 6)) == .application)
        // The node passed 5 and 6 over: it still runs 4.
        #expect(route("4", view(node: 6)) == .application)
        #expect(route(" 4\t", view(node: 4)) == .application)
    }

    @Test func aCallForANewerPublishedVersionWithoutItsFutureSOIsDisallowedAtOnce() throws {
        let refused = try #require(refusal(route("7", view(node: 4))))
        #expect(refused.code == .noSimulationObject && refused.status == 421)
        #expect(refused.callerVersion == 7 && refused.nodeVersion == 4 && refused.retryAfterSeconds == 1)
        #expect(refused.message == "this node runs version 4 and has no future SO of version 7 to serve version 7")
    }

    @Test func aCallForAnOlderVersionWithoutItsPastSOIsDisallowed() throws {
        let refused = try #require(refusal(route("3", view(node: 7))))
        #expect(refused.code == .noSimulationObject && refused.status == 421 && refused.retryAfterSeconds == nil)
        #expect(refused.message == "this node runs version 7 and has no past SO of version 2 to serve version 3")
    }

    @Test func aNewerVersionGoesThroughItsFutureSOWhenTheWholeChainRuns() {
        let both: Set<SimulationObject> = [SimulationObject(.future, 4), SimulationObject(.future, 7)]
        #expect(route("7", view(node: 2, sos: both)) == .simulationObject(SimulationObject(.future, 7)))
        #expect(route("5", view(node: 2, sos: both)) == .simulationObject(SimulationObject(.future, 4)))
        // A chain with a hole: 7's future SO runs but 4's does not.
        let hole = refusal(route("7", view(node: 2, sos: [SimulationObject(.future, 7)])))
        #expect(hole?.code == .noSimulationObject)
        #expect(hole?.message.contains("future SO of version 4") == true)
    }

    @Test func anOlderVersionGoesThroughItsPastSOWhenTheWholeChainRuns() {
        let both: Set<SimulationObject> = [SimulationObject(.past, 2), SimulationObject(.past, 4)]
        #expect(route("2", view(node: 7, sos: both)) == .simulationObject(SimulationObject(.past, 2)))
        #expect(route("3", view(node: 7, sos: both)) == .simulationObject(SimulationObject(.past, 2)))
        #expect(route("6", view(node: 7, sos: both)) == .simulationObject(SimulationObject(.past, 4)))
        #expect(refusal(route("2", view(node: 7, sos: [SimulationObject(.past, 2)])))?.code == .noSimulationObject)
        // SOs of the wrong kind serve nothing.
        #expect(refusal(route("2", view(node: 7, sos: [SimulationObject(.future, 2), SimulationObject(.future, 4)])))?.code
            == .noSimulationObject)
    }

    @Test func aVersionNewerThanTheMountKnowsIsUnknownAndRetryable() throws {
        let refused = try #require(refusal(route("8", view(node: 7))))
        #expect(refused.code == .unknownVersion && refused.status == 421 && refused.retryAfterSeconds == 1)
        #expect(refused.callerVersion == 8)
    }

    @Test func aVersionBeforeTheClassExistedIsDisallowed() {
        #expect(refusal(route("1", view(node: 4)))?.code == .beforeClass)
        #expect(refusal(route("0", view(node: 4)))?.code == .beforeClass)
    }

    @Test func aRetiredVersionIsDisallowedEvenWithItsSO() {
        let refused = refusal(route("2", view(node: 4, sos: [SimulationObject(.past, 2)], retired: [2])))
        #expect(refused?.code == .retired && refused?.status == 421)
    }

    @Test func aMalformedOrRepeatedHeaderIs400() {
        for bad in ["", "x", "-1", "+2", "04", "2.0", "1 2", "99999999999999999999", "0x4"] {
            #expect(refusal(route(bad, view(node: 4)))?.code == .badVersionHeader, "\(bad)")
            #expect(refusal(route(bad, view(node: 4)))?.status == 400)
        }
        #expect(refusal(LayerRouter.route(versionHeader: ["4", "4"], view: view(node: 4)))?.code == .badVersionHeader)
    }

    @Test func nothingInstalledIsARetryable503() {
        for header in [nil, "2", "0"] as [String?] {
            let refused = refusal(route(header, view(node: 0, latest: 0)))
            #expect(refused?.code == .notInstalled && refused?.status == 503 && refused?.retryAfterSeconds == 1)
        }
        // A node at version 1 (another class's) has none of its class installed either.
        #expect(refusal(route(nil, view(node: 1)))?.code == .notInstalled)
    }

    @Test func eachSODelegatesTowardTheInstalledVersion() {
        let v = view(node: 4)
        #expect(LayerRouter.delegate(of: SimulationObject(.future, 7), view: v) == .application)
        #expect(LayerRouter.delegate(of: SimulationObject(.past, 2), view: v) == .application)
        let old = view(node: 2)
        #expect(LayerRouter.delegate(of: SimulationObject(.future, 7), view: old) == .simulationObject(SimulationObject(.future, 4)))
        #expect(LayerRouter.delegate(of: SimulationObject(.future, 4), view: old) == .application)
        let new = view(node: 7)
        #expect(LayerRouter.delegate(of: SimulationObject(.past, 2), view: new) == .simulationObject(SimulationObject(.past, 4)))
        #expect(LayerRouter.delegate(of: SimulationObject(.past, 4), view: new) == .application)
        // Not on a chain: the wrong side of the installed version, or not a class version.
        #expect(LayerRouter.delegate(of: SimulationObject(.past, 7), view: new) == nil)
        #expect(LayerRouter.delegate(of: SimulationObject(.future, 2), view: new) == nil)
        #expect(LayerRouter.delegate(of: SimulationObject(.future, 5), view: old) == nil)
    }

    @Test func theApplicationDownIs502OrARetryable503WhileUpgrading() {
        let down = LayerRefusal.applicationUnreachable("connection refused", view: view(node: 4))
        #expect(down.code == .applicationUnavailable && down.status == 502 && down.retryAfterSeconds == nil)
        let window = LayerRefusal.applicationUnreachable("connection refused", view: view(node: 4, upgrading: true))
        #expect(window.code == .upgrading && window.status == 503 && window.retryAfterSeconds == 1)
        let slow = LayerRefusal.applicationTimeout(seconds: 2, view: view(node: 4))
        #expect(slow.code == .applicationTimeout && slow.status == 504)
    }

    @Test func theErrorBodyIsOneJSONObjectWithTheDocumentedFields() throws {
        let refused = try #require(refusal(route("7", view(node: 4))))
        #expect(refused.json == """
            {"error":"no-simulation-object","message":"this node runs version 4 and has no future SO of version 7 to serve version 7","node-version":4,"retry-after":1,"version":7}

            """)
        let parsed = try JSONValue.parse(Array(refused.json.utf8))
        #expect(parsed["error"]?.stringValue == "no-simulation-object")
        let bad = try #require(refusal(route("x\"y", view(node: 4))))
        #expect(try JSONValue.parse(Array(bad.json.utf8))["version"] == nil)
    }
}
