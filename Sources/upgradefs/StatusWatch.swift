import ArgumentParser
import Foundation
import UpgradeCore
import UpgradeServer

/// The I/O of `upgradefs status --watch`: reads the whiteboard from a `WhiteboardFeed` (the server's database,
/// or its signed change feed), asks `RolloutWatch` how the upgrade stands after each change, prints each new
/// assessment, and ends with the verdict's exit status.
struct StatusWatch {
    let feed: any WhiteboardFeed
    /// nil: the newest published upgrade when the watch starts (or the first one published, if none is yet);
    /// an upgrade published later does not change which one is followed.
    let upgrade: Int64?
    let rule: RolloutWatch
    let json: Bool
    let deadline: ContinuousClock.Instant?

    /// Runs until the verdict is final; returns the exit status to throw.
    func run() async throws -> ExitCode {
        var files: [String: WhiteboardFile] = [:]
        var revision: Int64?
        var printed: RolloutWatch.Assessment?
        var followed = upgrade
        while true {
            let view: WhiteboardView?
            do {
                view = try await beforeDeadline { [feed, revision] in
                    if let revision { try await feed.changes(after: revision) } else { try await feed.snapshot() }
                }
            } catch let error as FeedUnavailable {
                // Passing trouble (the server restarting, a network cut): say so once, keep trying until the deadline.
                if !error.repeated { printError("upgradefs status: \(error.reason); retrying") }
                continue
            }
            for file in view?.files ?? [] { files[file.path] = file.content == nil ? nil : file }
            revision = max(revision ?? 0, view?.revision ?? 0)
            let observed = observation(files: files, upgrade: followed)
            if observed.summary != nil { followed = observed.upgrade }
            let assessment = rule.assess(observed, timedOut: view == nil)
            // Text: a line when the line changes; JSON: an event when anything in it but the revision does.
            if json ? assessment != printed : assessment.line != printed?.line {
                print(json ? String(decoding: assessment.toJSON(revision: revision ?? 0).canonicalBytes(), as: UTF8.self)
                           : assessment.line)
                // At once, also into a pipe or file: a script or CI log follows the rollout as it happens.
                fflush(nil)
                printed = assessment
            }
            if assessment.verdict.isFinal { return Self.exitCode(assessment.verdict) }
        }
    }

    /// `read`'s answer, or nil once the deadline passes first.
    private func beforeDeadline(_ read: @escaping @Sendable () async throws -> WhiteboardView) async throws -> WhiteboardView? {
        guard let deadline else { return try await read() }
        if ContinuousClock.now >= deadline { return nil }
        return try await withThrowingTaskGroup(of: WhiteboardView?.self) { group in
            group.addTask { try await read() }
            group.addTask {
                try await Task.sleep(until: deadline)
                return nil
            }
            defer { group.cancelAll() }
            return try await group.next() ?? nil
        }
    }

    /// The upgrade's summary, control word and the `healthy` SF's stop marker, from the files held (`upgrade`
    /// nil: the newest published).
    func observation(files: [String: WhiteboardFile], upgrade: Int64?) -> RolloutObservation {
        let view = WhiteboardView(revision: 0, files: Array(files.values), holders: [])
        let upgrades = WhiteboardStatus(enrolled: [], view: view).upgrades
        let number = upgrade ?? upgrades.last?.version ?? 1
        let published = upgrades.first { $0.version == number }
        let marker = files.values.first { RolloutObservation.isBudgetStopMarker($0.path, upgrade: number) }
        return RolloutObservation(
            upgrade: number, summary: published?.summary, control: published?.control,
            budgetStop: marker?.content.map { String(decoding: $0, as: UTF8.self).trimmingWhitespace() })
    }

    static func exitCode(_ verdict: RolloutWatch.Verdict) -> ExitCode {
        switch verdict {
        case .succeeded: .success
        case .failed: ExitCodes.rolloutFailed
        case .aborted: ExitCodes.rolloutAborted
        case .timedOut, .unpublished, .progressing: ExitCodes.timedOut
        }
    }
}
