import Foundation

/// `upgrades/N/summary` of each published upgrade: which node files it depends on, and its content.
extension WhiteboardLedger {
    /// The node files a summary is computed from: a put or delete of one of them recomputes every summary.
    static let summaryInputs = ["class", "state", "version", "upgrade"]

    static func affectsSummaries(_ path: WhiteboardPath) -> Bool {
        if case .nodeFile(_, let name) = path.kind { return summaryInputs.contains(name) }
        return false
    }

    /// Records that upgrade `version` of `upgradeClass` is published, and makes its summary.
    public func registerUpgrade<Tx: WhiteboardTransaction>(_ version: Int64, class upgradeClass: String, in tx: inout Tx, now: Date) throws {
        try tx.putUpgrade(version: version, class: upgradeClass)
        try recomputeSummaries(in: &tx, now: now, versions: [version])
    }

    /// Brings the summary of every registered upgrade (or of `versions`) up to date; an unchanged one is not written.
    func recomputeSummaries<Tx: WhiteboardTransaction>(in tx: inout Tx, now: Date, versions: [Int64]? = nil) throws {
        let registered = try tx.upgrades().filter { versions?.contains($0.key) ?? true }
        guard !registered.isEmpty else { return }
        let reports = try tx.enrolledNodeFiles(Self.summaryInputs)
        for (version, upgradeClass) in registered.sorted(by: { $0.key < $1.key }) {
            let path = "upgrades/\(version)/summary"
            let content = Self.summary(version: version, class: upgradeClass, reports: reports)
            if try tx.file(path)?.content != content {
                try putFile(path, content: content, writer: Self.serverWriter, in: &tx, now: now)
            }
        }
    }

    /// `STATE COUNT` lines, sorted by state, over the enrolled nodes (not the operator) whose `class` file names
    /// `upgradeClass` (one trailing newline allowed), each counted as `WhiteboardRules.summaryState` says. A node that
    /// never reported a class is counted under no upgrade. `reports`: each enrolled node's `summaryInputs` files.
    public static func summary(version: Int64, class upgradeClass: String, reports: [String: [String: [UInt8]]]) -> [UInt8] {
        let classes: Set<[UInt8]> = [Array(upgradeClass.utf8), Array((upgradeClass + "\n").utf8)]
        var counts: [String: Int] = [:]
        for (node, files) in reports where node != WhiteboardRules.operatorName {
            guard let reportedClass = files["class"], classes.contains(reportedClass) else { continue }
            let state = WhiteboardRules.summaryState(
                upgrade: version, state: files["state"], version: files["version"], reportedUpgrade: files["upgrade"])
            counts[state, default: 0] += 1
        }
        return Array(counts.keys.sorted().map { "\($0) \(counts[$0]!)\n" }.joined().utf8)
    }
}
