import Foundation
import Logging
import UpgradeCore
import UpgradeWhiteboardClient

/// Keeps the mount's metadata current: waits for change (the server's long poll, or a steady poll where the
/// server has none), refreshes, and shows in `stale` when what is on show has expired — whatever the reason:
/// a server that stopped signing, or an attacker replaying or withholding metadata (freeze).
struct MetadataWatcher {
    let updater: TUFUpdater
    let fileSystem: BundleFileSystem
    let logger: Logger

    func run() async {
        var pacing = RefreshPacing()
        var saidPolling = false
        while !Task.isCancelled {
            let started = ContinuousClock.now
            var notified = false
            var failure: (any Error)?
            do {
                notified = try await updater.waitForChange()
                if !notified, !saidPolling {
                    saidPolling = true
                    logger.notice("the server has no change notification (/v1/notify answers 404: a static mirror?); polling its timestamp",
                                  metadata: ["poll.seconds": "\(Int(RefreshPacing.pollSeconds))"])
                }
            } catch is CancellationError {
                return
            } catch {
                // Refresh anyway: a notification that never comes must not keep expiry from being noticed.
                logger.debug("change notification failed", metadata: ["error": "\(describe(error))"])
            }
            var outcome = RefreshPacing.Outcome.failed
            do {
                if try await updater.refresh() {
                    await fileSystem.rebuild()
                    logger.notice("new metadata verified", metadata: ["upgrade.latest": "\(fileSystem.latestVersion)"])
                    outcome = .newMetadata
                } else {
                    outcome = notified ? .nothingNew : .nothingNewWithoutNotification
                }
            } catch is CancellationError {
                return
            } catch {
                failure = error
            }
            let delay = pacing.next(after: outcome, cycle: ContinuousClock.now - started)
            if let failure {
                logger.warning("update check failed; retrying", metadata: [
                    "error": "\(describe(failure))", "retry.ms": "\(Int(delay / .milliseconds(1)))",
                ])
            }
            await Self.showStaleness(updater: updater, fileSystem: fileSystem, lastFailure: failure.map(describe), logger: logger)
            if delay > .zero {
                do { try await Task.sleep(for: delay) } catch { return }
            }
        }
    }

    private func describe(_ error: any Error) -> String {
        NetworkErrorText.describe(error, endpoint: updater.source.endpoint)
    }

    /// Sets `stale` from the trusted metadata's expiry (and logs when that changes).
    static func showStaleness(updater: TUFUpdater, fileSystem: BundleFileSystem, lastFailure: String?,
                              logger: Logger) async {
        let expired = await updater.expiredSince()
        let text = expired.map {
            "expired since \(TUFDate.format($0.expires)) (\($0.role.rawValue) metadata); last refresh: "
                + (lastFailure ?? "nothing newer offered") + "\n"
        } ?? ""
        guard fileSystem.setStale(text) else { return }
        if let expired {
            logger.error("the verified metadata on show has expired and the server offers nothing newer (freeze attack or stale server); still showing it, marked in stale", metadata: [
                "tuf.role": "\(expired.role.rawValue)", "tuf.expires": "\(TUFDate.format(expired.expires))",
                "error": "\(lastFailure ?? "none")",
            ])
        } else {
            logger.notice("the metadata on show is current again")
        }
    }
}

/// How long to wait before the next look at the server, as a value: a failing server is retried with
/// exponential back-off (0.25 s doubling to 30 s), a server without change notification is polled every
/// 10 s, and a notification that answers at once without anything new cannot make the mount loop faster
/// than once a second.
struct RefreshPacing {
    static let pollSeconds = 10.0
    static let minimumCycle = Duration.seconds(1)

    enum Outcome: Equatable {
        case newMetadata
        /// The server said something changed (or its long poll ran out) and nothing new was there.
        case nothingNew
        /// Nothing new, and the server has no working change notification.
        case nothingNewWithoutNotification
        case failed
    }

    private var backoff = WhiteboardBackoff(initial: .milliseconds(250), maximum: .seconds(30))

    /// The pause before the next cycle, given how the last one (which took `cycle`) ended.
    mutating func next(after outcome: Outcome, cycle: Duration) -> Duration {
        if outcome == .failed { return backoff.next() }
        backoff.reset()
        switch outcome {
        case .nothingNew: return max(.zero, Self.minimumCycle - cycle)
        case .nothingNewWithoutNotification: return .seconds(Self.pollSeconds)
        case .newMetadata, .failed: return .zero
        }
    }
}
