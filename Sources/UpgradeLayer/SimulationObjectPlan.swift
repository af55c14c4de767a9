/// Which simulation objects the layer runs, and where the bundles ship them: pure, beside `LayerRouter`
/// (docs/DESIGN.md, "Upgrade layer").
///
/// Both SOs of an upgrade ship in the bundle of its new version N, as executables `so/past` and `so/future`
/// (SPEC reserves `so/`): N's `so/future` answers version-N calls on a node still at the class version before N,
/// and N's `so/past` answers calls of the class version before N on a node at N (or later, chained). So an
/// upgrade carries the SO a node needs before it (the future one) and after it (the past one).
public enum SimulationObjectPlan {
    /// The bundle's directory of SOs.
    public static let directory = "so"

    /// Where a bundle ships its SO of `kind`, relative to the bundle: `so/past` or `so/future`.
    public static func path(_ kind: SimulationObject.Kind) -> String { directory + "/" + kind.rawValue }

    /// The SO the `so/KIND` executable of class version `bundle`'s bundle simulates: `so/future` the version
    /// itself, `so/past` the class version before it. Nil when `bundle` is not one of `classVersions`, and for
    /// the past SO of the class's first version (no version of the class precedes it).
    public static func simulationObject(_ kind: SimulationObject.Kind, shippedIn bundle: Int64,
                                        classVersions: [Int64]) -> SimulationObject? {
        guard classVersions.contains(bundle) else { return nil }
        switch kind {
        case .future:
            return SimulationObject(.future, bundle)
        case .past:
            return classVersions.filter { $0 < bundle }.max().map { SimulationObject(.past, $0) }
        }
    }

    /// The class version whose bundle ships `so` (the inverse of `simulationObject(_:shippedIn:classVersions:)`):
    /// a future SO's own version, the class version after a past SO's. Nil when there is none.
    public static func bundleVersion(of so: SimulationObject, classVersions: [Int64]) -> Int64? {
        guard classVersions.contains(so.version) else { return nil }
        switch so.kind {
        case .future: return so.version
        case .past: return classVersions.filter { $0 > so.version }.min()
        }
    }

    /// The SOs the layer should run now: every SO of the chain (`LayerRouter.chain(serving:view:)`) of each class
    /// version other than the installed one whose calls are not retired, when the bundles ship that whole chain.
    /// A chain with a hole is left out: the router refuses its calls, so its SOs would serve none. A retired
    /// version's SO still runs while it links an older, served version's chain. None while nothing is installed.
    /// `shipped`: the SOs the bundles of the view's class versions hold.
    public static func toRun(view: LayerView, shipped: Set<SimulationObject>) -> Set<SimulationObject> {
        let installed = view.installedVersion
        guard installed > 0 else { return [] }
        var run: Set<SimulationObject> = []
        for version in view.classVersions where version != installed && !view.retired.contains(version) {
            let chain = LayerRouter.chain(serving: version, view: view)
            if chain.allSatisfy(shipped.contains) { run.formUnion(chain) }
        }
        return run
    }

    /// How long the layer waits before it restarts an SO that failed `failures` times in a row (exited, or not
    /// ready in time): 0.25 s, doubling, at most 10 s. A start that becomes ready resets the count.
    public static func restartDelay(failures: Int) -> Double {
        min(0.25 * Double(1 << min(max(failures, 1) - 1, 10)), 10)
    }
}
