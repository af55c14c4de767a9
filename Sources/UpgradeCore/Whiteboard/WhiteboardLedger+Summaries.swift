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
        var reports: [String: [String: [String: [UInt8]]]] = [:]  // by class
        for (version, upgradeClass) in try tx.upgrades().sorted(by: { $0.key < $1.key }) {
            if let versions, !versions.contains(version) { continue }
            if reports[upgradeClass] == nil {
                reports[upgradeClass] = try tx.enrolledNodeFiles(Self.summaryInputs, whereFile: "class", isOneOf: Self.classContents(upgradeClass))
            }
            let path = "upgrades/\(version)/summary"
            let content = Self.summary(version: version, class: upgradeClass, reports: reports[upgradeClass]!)
            if try tx.file(path)?.content != content {
                try putFile(path, content: content, writer: Self.serverWriter, in: &tx, now: now)
            }
        }
    }

    /// What a node's `class` file holds when it names `upgradeClass`: the name, or the name and one newline.
    static func classContents(_ upgradeClass: String) -> [[UInt8]] {
        [Array(upgradeClass.utf8), Array((upgradeClass + "\n").utf8)]
    }

    /// `STATE COUNT` lines, sorted by state, over the enrolled nodes (not the operator) whose `class` file names
    /// `upgradeClass` (one trailing newline allowed), each counted as `WhiteboardRules.summaryState` says. A node that
    /// never reported a class is counted under no upgrade. `reports`: each enrolled node's `summaryInputs` files.
    public static func summary(version: Int64, class upgradeClass: String, reports: [String: [String: [UInt8]]]) -> [UInt8] {
        let classes = classContents(upgradeClass)
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
