#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing

/// Where FUSE mounts are possible.
public enum FUSEMounts {
    /// /dev/fuse is there: enough for FuseKit's own mounts (fusermount3 mounts for a user).
    public static let device = FileManager.default.fileExists(atPath: "/dev/fuse")
    /// Root and /dev/fuse: what `upgradefs mount` needs.
    public static let possible = getuid() == 0 && device
    /// Under CI=true mount tests always run: a machine without FUSE fails them instead of skipping them.
    public static let required = ProcessInfo.processInfo.environment["CI"] == "true"
}

extension Trait where Self == MountTrait {
    /// The test mounts `upgradefs mount` for real: disabled, with the reason, without root and /dev/fuse —
    /// except under CI=true, where it runs and fails.
    public static var realMounts: Self { MountTrait() }
}

/// `.enabled(if: FUSEMounts.possible || FUSEMounts.required, reason)`, plus the CI rule: a test enabled only
/// because CI=true records an issue instead of running its body.
public struct MountTrait: TestTrait, SuiteTrait, TestScoping {
    private let condition = ConditionTrait.enabled(
        if: FUSEMounts.possible || FUSEMounts.required, "real FUSE mounts need root and /dev/fuse (under CI=true they must run)")

    public var comments: [Comment] { condition.comments }
    public var isRecursive: Bool { true }

    public func prepare(for test: Test) async throws {
        try await condition.prepare(for: test)
    }

    public func provideScope(for test: Test, testCase: Test.Case?,
                             performing function: @Sendable () async throws -> Void) async throws {
        guard FUSEMounts.possible else {
            Issue.record("CI=true but FUSE mounts are impossible here (need root and /dev/fuse)")
            return
        }
        try await function()
    }
}
