import ArgumentParser

/// Every exit status of `upgradefs`, in one place (sysexits.h values where one
/// fits). Scripts and the mount helper read them.
enum ExitCodes {
    /// Bad command-line usage (swift-argument-parser uses this for validation errors).
    static let usage = ExitCode(64)
    /// Input data was wrong: a malformed key file, metadata that failed verification; check and publish --wait:
    /// the bundle is (or would be) rejected.
    static let dataError = ExitCode(65)
    /// A file named on the command line does not exist or cannot be read.
    static let noInput = ExitCode(66)
    /// mount: the server says the node key is not enrolled (EX_NOUSER).
    static let notEnrolled = ExitCode(67)
    /// The server could not be reached and nothing is cached for it; manager: the mount has no whiteboard
    /// (not an upgradefs mount, or one without a node key).
    static let unavailable = ExitCode(69)
    /// An operating-system error: the kernel mount failed, a directory could not be created.
    static let osError = ExitCode(71)
    /// A file to be created exists already (keygen without --force); mount: the node key is mounted elsewhere.
    static let cannotCreate = ExitCode(73)
    /// publish --wait: the server neither published nor rejected the bundle within --timeout (EX_TEMPFAIL); status
    /// --watch: the upgrade was neither rolled out nor stopped within --timeout.
    static let timedOut = ExitCode(75)
    /// The server does not hold the initial root named by the mount source's id.
    static let identityMismatch = ExitCode(77)
    /// A configuration file is wrong (the manager's node.toml): the message names the file and key. Also
    /// mount: the cache directory was filled for another server.
    static let config = ExitCode(78)
    /// status --watch: the rollout stopped on failures (past --failure-budget, the healthy SF's budget, or every
    /// node that is not failed is done). Above sysexits.h's range, like kubectl's own non-zero for a failed rollout.
    static let rolloutFailed = ExitCode(80)
    /// status --watch: the operator wrote `abort` to the upgrade's control file before every node was done.
    static let rolloutAborted = ExitCode(81)
}
