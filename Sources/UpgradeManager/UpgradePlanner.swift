import UpgradeCore

/// A per-upgrade record's status in the LDB.
public enum UpgradeStatus: String, Sendable {
    /// Not applied yet (maybe waiting for its SF).
    case pending
    /// Rolled back after a failure; waits for the operator's `retry`.
    case failed
    /// The operator aborted it before this node applied it.
    case aborted
    /// Applied: the node runs it (or ran it).
    case done
    /// Another class's upgrade, passed over.
    case skipped
}

/// What the planner knows about one published upgrade above the node's version.
public struct PublishedUpgrade: Sendable, Equatable {
    public var version: Int64
    public var `class`: String
    /// The manifest's `from-version`: the installed version (of the class) it must be applied on.
    public var fromVersion: Int64?
    public var control: ControlWord
    /// False for a version number that was never published (a gap: 6, then 8); it is passed over like
    /// another class's upgrade.
    public var isPublished: Bool

    public init(version: Int64, class: String, fromVersion: Int64? = nil, control: ControlWord = .go, isPublished: Bool = true) {
        self.version = version
        self.class = `class`
        self.fromVersion = fromVersion
        self.control = control
        self.isPublished = isPublished
    }

    /// A version number below `latest` that the mount's `versions/` does not have.
    public static func unpublished(_ version: Int64) -> PublishedUpgrade {
        PublishedUpgrade(version: version, class: "", isPublished: false)
    }
}

/// The planner's verdict for this moment; the manager carries it out.
public enum Decision: Sendable, Equatable {
    /// Upgrade N belongs to another class: the node's version advances to N, nothing else happens.
    case skip(Int64)
    /// Version N was never published: passed over as `skip` is.
    case skipUnpublished(Int64)
    /// Nothing to do now; report this state (with the upgrade it concerns, if any).
    case rest(NodeState, upgrade: Int64?)
    /// The operator aborted N (first seen now): record it.
    case abort(Int64)
    /// N was aborted and the operator took the abort back: it is pending again.
    case resume(Int64)
    /// The operator wrote `retry` after N failed: it is pending again.
    case retry(Int64)
    /// N names a `from-version` other than the installed version: it fails with `reason`.
    case fail(Int64, reason: String)
    /// Ask N's SF (or, without one, upgrade at once).
    case schedule(Int64)
}

/// The pure core of the state machine: from what the node knows, the next thing to do.
/// Upgrades are taken one at a time in version order; another class's (and version numbers never published)
/// are passed over; a failed one holds back newer ones of the class until `retry` or `abort`; an aborted one is stepped over (a newer one of the class may
/// be applied, and the node's version then moves past it).
public enum UpgradePlanner {
    /// - Parameters:
    ///   - upgrades: the published upgrades above the node's version, in version order.
    ///   - installed: the installed version, of the node's class (0 = none).
    ///   - records: the LDB's records, by version.
    ///   - now: Unix seconds.
    public static func decide(class nodeClass: String, installed: Int64, upgrades: [PublishedUpgrade],
                              records: [Int64: UpgradeRecord], now: Double) -> Decision {
        var steppedOverAbort: Int64?
        for upgrade in upgrades {
            let n = upgrade.version
            if !upgrade.isPublished {
                if steppedOverAbort == nil { return .skipUnpublished(n) }
                continue
            }
            if upgrade.class != nodeClass {
                // Behind an aborted upgrade the node's version cannot move: it does not run that version.
                if steppedOverAbort == nil { return .skip(n) }
                continue
            }
            let record = records[n] ?? UpgradeRecord(version: n)
            switch record.status {
            case .done, .skipped:
                continue
            case .failed:
                // The operator gives the failed upgrade up: the node stays at its version and may move on.
                if upgrade.control == .abort { return .abort(n) }
                if upgrade.control == .retry && record.controlAtFailure != ControlWord.retry.rawValue { return .retry(n) }
                return .rest(.failed, upgrade: n)
            case .aborted:
                if upgrade.control == .abort {
                    steppedOverAbort = n
                    continue
                }
                return .resume(n)
            case .pending:
                break
            }
            switch upgrade.control {
            case .abort:
                return .abort(n)
            case .pause:
                return .rest(.paused, upgrade: n)
            case .go, .approve, .retry:
                break
            }
            if let from = upgrade.fromVersion, from != installed {
                return .fail(n, reason: "upgrade \(n) is from version \(from) but version \(installed) of class \(nodeClass) is installed")
            }
            if now < record.nextRunAt { return .rest(.waiting, upgrade: n) }
            return .schedule(n)
        }
        if let aborted = steppedOverAbort { return .rest(.aborted, upgrade: aborted) }
        return .rest(installed == 0 ? .idle : .running, upgrade: nil)
    }

    /// Seconds before an SF is asked again after its `failures`-th failure in a row: 1, 2, 4 … 60.
    public static func backoffSeconds(failures: Int) -> Double {
        guard failures > 0 else { return 0 }
        return min(60, Double(1 << min(failures - 1, 6)))
    }
}
