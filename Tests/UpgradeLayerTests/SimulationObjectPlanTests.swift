import Testing
@testable import UpgradeLayer

/// Where bundles ship SOs and which ones the layer runs, as pure functions: no process, no mount.
/// As in `LayerRouterTests`, the class changed at system versions 2, 4 and 7.
struct SimulationObjectPlanTests {
    let classVersions: [Int64] = [2, 4, 7]

    func view(node: Int64, classVersions: [Int64]? = nil, retired: Set<Int64> = []) -> LayerView {
        LayerView(nodeVersion: node, latest: 7, classVersions: classVersions ?? self.classVersions, retired: retired)
    }

    func past(_ version: Int64) -> SimulationObject { SimulationObject(.past, version) }
    func future(_ version: Int64) -> SimulationObject { SimulationObject(.future, version) }

    @Test func aBundleShipsTheFutureSOOfItsVersionAndThePastSOOfTheVersionBefore() {
        #expect(SimulationObjectPlan.path(.past) == "so/past")
        #expect(SimulationObjectPlan.path(.future) == "so/future")
        #expect(SimulationObjectPlan.simulationObject(.future, shippedIn: 4, classVersions: classVersions) == future(4))
        #expect(SimulationObjectPlan.simulationObject(.past, shippedIn: 4, classVersions: classVersions) == past(2))
        #expect(SimulationObjectPlan.simulationObject(.past, shippedIn: 7, classVersions: classVersions) == past(4))
        // The class's first version has nothing before it; 5 is another class's version.
        #expect(SimulationObjectPlan.simulationObject(.past, shippedIn: 2, classVersions: classVersions) == nil)
        #expect(SimulationObjectPlan.simulationObject(.future, shippedIn: 5, classVersions: classVersions) == nil)
    }

    @Test func eachSOIsFoundInTheBundleThatShipsIt() {
        for version in classVersions {
            for kind in [SimulationObject.Kind.past, .future] {
                guard let so = SimulationObjectPlan.simulationObject(kind, shippedIn: version, classVersions: classVersions)
                else { continue }
                #expect(SimulationObjectPlan.bundleVersion(of: so, classVersions: classVersions) == version)
            }
        }
        #expect(SimulationObjectPlan.bundleVersion(of: past(7), classVersions: classVersions) == nil)
        #expect(SimulationObjectPlan.bundleVersion(of: future(5), classVersions: classVersions) == nil)
    }

    @Test func theSOsOfEveryWholeChainRun() {
        #expect(SimulationObjectPlan.toRun(view: view(node: 7), shipped: [past(2), past(4)]) == [past(2), past(4)])
        #expect(SimulationObjectPlan.toRun(view: view(node: 2), shipped: [future(4), future(7)]) == [future(4), future(7)])
        // A node at 4 serves 2 through a past SO and 7 through a future SO at once.
        #expect(SimulationObjectPlan.toRun(view: view(node: 4), shipped: [past(2), future(7)]) == [past(2), future(7)])
        // A node that passed other classes' versions over (5, 6) still runs 4.
        #expect(SimulationObjectPlan.toRun(view: view(node: 6), shipped: [past(2), future(7)]) == [past(2), future(7)])
    }

    @Test func aChainWithAHoleRunsOnlyItsWholePart() {
        // Without 4's past SO, version-2 calls are refused: 2's past SO would serve nothing.
        #expect(SimulationObjectPlan.toRun(view: view(node: 7), shipped: [past(2)]) == [])
        #expect(SimulationObjectPlan.toRun(view: view(node: 7), shipped: [past(4)]) == [past(4)])
        #expect(SimulationObjectPlan.toRun(view: view(node: 2), shipped: [future(7)]) == [])
        #expect(SimulationObjectPlan.toRun(view: view(node: 2), shipped: [future(4)]) == [future(4)])
    }

    @Test func aRetiredVersionsSORunsOnlyWhileItLinksAnOlderServedVersion() {
        #expect(SimulationObjectPlan.toRun(view: view(node: 7, retired: [4]), shipped: [past(2), past(4)]) == [past(2), past(4)])
        #expect(SimulationObjectPlan.toRun(view: view(node: 7, retired: [2]), shipped: [past(2), past(4)]) == [past(4)])
        #expect(SimulationObjectPlan.toRun(view: view(node: 7, retired: [2, 4]), shipped: [past(2), past(4)]) == [])
    }

    @Test func nothingRunsThatNoCallWouldReach() {
        // Nothing installed: every call is refused before any SO.
        #expect(SimulationObjectPlan.toRun(view: view(node: 0), shipped: [future(2), future(4)]) == [])
        // SOs on the wrong side of the installed version, or of versions the view does not publish.
        #expect(SimulationObjectPlan.toRun(view: view(node: 7), shipped: [future(2), future(4)]) == [])
        #expect(SimulationObjectPlan.toRun(view: view(node: 2, classVersions: [2, 4]), shipped: [future(7)]) == [])
        #expect(SimulationObjectPlan.toRun(view: view(node: 4), shipped: []) == [])
    }

    @Test func theChainOfACallListsItsSOsByAscendingVersion() {
        #expect(LayerRouter.chain(serving: 2, view: view(node: 7)) == [past(2), past(4)])
        #expect(LayerRouter.chain(serving: 7, view: view(node: 2)) == [future(4), future(7)])
        #expect(LayerRouter.chain(serving: 4, view: view(node: 4)) == [])
    }
}

struct SimulationObjectRestartTests {
    @Test func aFailingSOIsRestartedAfterADoublingDelayOfAtMostTenSeconds() {
        #expect((1...8).map { SimulationObjectPlan.restartDelay(failures: $0) } == [0.25, 0.5, 1, 2, 4, 8, 10, 10])
        #expect(SimulationObjectPlan.restartDelay(failures: 1000) == 10)
    }
}
