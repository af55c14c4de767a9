/// What `upgradefs status --watch` sees of one upgrade N at one whiteboard revision.
public struct RolloutObservation: Sendable, Equatable {
    public var upgrade: Int64
    /// `upgrades/N/summary` as state → count (`done` = at version ≥ N); nil while N is not published.
    public var summary: [String: Int64]?
    /// `upgrades/N/control` without its newline; nil or empty means `go`.
    public var control: String?
    /// The content of a `shared/healthy-CLASS-N.stopped` file: the `healthy` SF's failure budget stopped N.
    public var budgetStop: String?

    public init(upgrade: Int64, summary: [String: Int64]?, control: String? = nil, budgetStop: String? = nil) {
        self.upgrade = upgrade
        self.summary = summary
        self.control = control
        self.budgetStop = budgetStop
    }

    /// Whether `path` is the `healthy` SF's stop marker of upgrade `upgrade` (`shared/healthy-CLASS-N.stopped`).
    public static func isBudgetStopMarker(_ path: String, upgrade: Int64) -> Bool {
        path.hasPrefix("shared/healthy-") && path.hasSuffix("-\(upgrade).stopped")
            && path.count > "shared/healthy-".count + "-\(upgrade).stopped".count
    }
}

/// How a rollout stands: the rule `status --watch` follows, pure (no clock, no I/O).
///
/// In this order: not published yet → `unpublished`; every counted node `done` → `succeeded` (also after an
/// abort that came too late to matter); control `abort` → `aborted`; more nodes `failed` than `failureBudget`,
/// or the `healthy` SF's stop marker → `failed`; every node `done` or `failed` (the failed ones wait for the
/// operator's `retry`, so nothing moves) → `failed`; else `progressing`. A watch that is not finished by its
/// deadline ends `timedOut`.
public struct RolloutWatch: Sendable {
    public enum Verdict: String, Sendable, Equatable {
        case unpublished, progressing, succeeded, failed, aborted, timedOut = "timeout"

        /// Whether the watch ends here.
        public var isFinal: Bool { self != .unpublished && self != .progressing }
    }

    /// One assessment: the verdict, the counts behind it, and the line people read.
    public struct Assessment: Sendable, Equatable {
        public var upgrade: Int64
        public var verdict: Verdict
        /// Whether N has a summary (is published); the counts are 0 while it is not.
        public var published: Bool
        /// Counted nodes (enrolled nodes of N's class), at version ≥ N, `upgrading`, `failed`, and the rest.
        public var total: Int64, done: Int64, upgrading: Int64, failed: Int64, waiting: Int64
        public var control: String?
        public var summary: [String: Int64]
        /// Why it stopped (failed, aborted, timed out); nil otherwise.
        public var reason: String?

        /// `upgrade 2: 3/6 at version 2, 1 upgrading, 0 failed, 2 waiting`, then `; control pause` when the
        /// word is not `go`, and the verdict with its reason once final.
        public var line: String {
            var text = "upgrade \(upgrade): "
            if !published {
                text += "not published yet"
            } else {
                text += "\(done)/\(total) at version \(upgrade), \(upgrading) upgrading, \(failed) failed, \(waiting) waiting"
            }
            if let control, !control.isEmpty, control != ControlWord.go.rawValue { text += "; control \(control)" }
            switch verdict {
            case .unpublished, .progressing: break
            case .succeeded: text += " — rolled out"
            case .failed, .aborted, .timedOut: text += " — \(verdict == .timedOut ? "timed out" : verdict.rawValue): \(reason ?? "")"
            }
            return text
        }

        /// One event of `--json`: `{"event", "upgrade", "total", "done", "upgrading", "failed", "waiting",
        /// "control", "summary", "reason"}` (`event` is the verdict's word, `progress` while progressing).
        public func toJSON(revision: Int64) -> JSONValue {
            .object([
                "event": .string(verdict == .progressing ? "progress" : verdict.rawValue),
                "upgrade": .int(upgrade), "revision": .int(revision), "total": .int(total), "done": .int(done),
                "upgrading": .int(upgrading), "failed": .int(failed), "waiting": .int(waiting),
                "control": control.map(JSONValue.string) ?? .null, "summary": .object(summary.mapValues(JSONValue.int)),
                "reason": reason.map(JSONValue.string) ?? .null,
            ])
        }
    }

    /// Failed nodes tolerated while the rollout goes on.
    public var failureBudget: Int64

    public init(failureBudget: Int64 = 0) {
        self.failureBudget = failureBudget
    }

    public func assess(_ observation: RolloutObservation, timedOut: Bool = false) -> Assessment {
        let summary = observation.summary ?? [:]
        let total = summary.values.reduce(0, +)
        let done = summary["done"] ?? 0
        let upgrading = summary[NodeState.upgrading.rawValue] ?? 0
        let failed = summary[NodeState.failed.rawValue] ?? 0
        var (verdict, reason) = judge(observation, total: total, done: done, failed: failed)
        if timedOut && !verdict.isFinal {
            verdict = .timedOut
            reason = observation.summary == nil ? "upgrade \(observation.upgrade) was never published" : "the deadline passed"
        }
        return Assessment(
            upgrade: observation.upgrade, verdict: verdict, published: observation.summary != nil, total: total,
            done: done, upgrading: upgrading, failed: failed, waiting: total - done - upgrading - failed,
            control: observation.control?.trimmingWhitespace(), summary: summary, reason: reason)
    }

    private func judge(_ observation: RolloutObservation, total: Int64, done: Int64, failed: Int64) -> (Verdict, String?) {
        let upgrade = observation.upgrade
        guard observation.summary != nil else { return (.unpublished, nil) }
        if total > 0 && done == total { return (.succeeded, nil) }
        if ControlWord.parse(observation.control) == .abort {
            return (.aborted, "the operator wrote abort to upgrades/\(upgrade)/control")
        }
        if failed > failureBudget { return (.failed, "\(Self.nodes(failed)) failed, more than the failure budget of \(failureBudget)") }
        if let stop = observation.budgetStop { return (.failed, "the healthy SF stopped it: \(stop)") }
        if failed > 0 && done + failed == total {
            return (.failed, "\(Self.nodes(failed)) failed (within the budget); the others are at version \(upgrade)")
        }
        return (.progressing, nil)
    }

    private static func nodes(_ count: Int64) -> String { count == 1 ? "1 node" : "\(count) nodes" }
}
