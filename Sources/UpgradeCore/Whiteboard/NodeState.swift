/// What `self/state` says (docs/DESIGN.md, "The state machine").
public enum NodeState: String, Sendable, CaseIterable {
    /// No version of the class installed yet, nothing pending.
    case idle
    /// The app runs at the node's version, nothing pending.
    case running
    /// An upgrade is pending: its SF said not yet, or failed and is retried with back-off.
    case waiting
    /// The operator paused the pending upgrade.
    case paused
    /// An upgrade is in flight (`self/upgrade` names it).
    case upgrading
    /// The upgrade failed and the node rolled back; not retried until the operator writes `retry`.
    case failed
    /// The operator aborted the upgrade; the node stays at the old version.
    case aborted
}
