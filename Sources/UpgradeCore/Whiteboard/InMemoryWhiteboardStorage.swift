/// The whiteboard's rows in memory: for the ledger's unit tests and the storage conformance suite. A transaction
/// works on a copy of the tables, put back only when it returns, so one that throws leaves nothing.
public actor InMemoryWhiteboardStorage: WhiteboardStorage {
    private var tables = InMemoryWhiteboardTables()

    public init() {}

    public func write<T: Sendable>(_ body: @escaping @Sendable (inout InMemoryWhiteboardTables) throws -> T) throws -> T {
        var copy = tables
        copy.allocated = nil
        let result = try body(&copy)
        tables = copy
        return result
    }

    public func read<T: Sendable>(_ body: @escaping @Sendable (InMemoryWhiteboardTables) throws -> T) throws -> T {
        try body(tables)
    }
}

/// The tables of `InMemoryWhiteboardStorage`, a value: the ledger's unit tests use one directly as a transaction.
public struct InMemoryWhiteboardTables: WhiteboardTransaction, Sendable {
    private var lastRevision: Int64 = 0
    /// This transaction's revision, once allocated.
    fileprivate var allocated: Int64?
    private var nodeRows: [String: EnrolledNode] = [:]
    private var replays: [String: [String: WhiteboardReplayRow]] = [:]
    private var sessions: [String: WhiteboardSessionRow] = [:]
    private var refusalRows: [String: WhiteboardRefusals] = [:]
    /// By the path's UTF-8 bytes: two paths a Swift string comparison equates (NFC and NFD) are two files.
    private var fileRows: [[UInt8]: WhiteboardFileRow] = [:]
    private var holderRows: [String: [String: WhiteboardHolderRow]] = [:]
    private var upgradeRows: [Int64: String] = [:]

    public init() {}

    /// Ends the current transaction: the next `changeRevision` allocates a new revision.
    public mutating func commit() { allocated = nil }

    public func revision() -> Int64 { lastRevision }

    public mutating func changeRevision() -> Int64 {
        if let allocated { return allocated }
        lastRevision += 1
        allocated = lastRevision
        return lastRevision
    }

    public func node(_ name: String) -> EnrolledNode? { nodeRows[name] }
    public func nodes() -> [EnrolledNode] { Array(nodeRows.values) }
    public mutating func putNode(_ node: EnrolledNode) { nodeRows[node.name] = node }
    public mutating func deleteNode(_ name: String) -> Bool { nodeRows.removeValue(forKey: name) != nil }

    public func replay(node: String, stream: String) -> WhiteboardReplayRow? { replays[node]?[stream] }
    public mutating func putReplay(_ row: WhiteboardReplayRow) { replays[row.node, default: [:]][row.stream] = row }

    public func session(node: String) -> WhiteboardSessionRow? { sessions[node] }
    public mutating func putSession(_ row: WhiteboardSessionRow) { sessions[row.node] = row }
    public mutating func deleteSession(node: String) { sessions[node] = nil }

    public func refusal(node: String) -> WhiteboardRefusals? { refusalRows[node] }
    public func refusals() -> [WhiteboardRefusals] { Array(refusalRows.values) }
    public mutating func putRefusal(_ row: WhiteboardRefusals) { refusalRows[row.node] = row }
    public mutating func deleteRefusal(node: String) { refusalRows[node] = nil }

    public func file(_ path: String) -> WhiteboardFileRow? { fileRows[Array(path.utf8)] }
    public func liveFiles() -> [WhiteboardFileRow] { fileRows.values.filter { $0.content != nil } }
    public func files(after revision: Int64) -> [WhiteboardFileRow] { fileRows.values.filter { $0.revision > revision } }
    public func hasLiveFile(withPrefix prefix: String) -> Bool {
        fileRows.values.contains { $0.content != nil && $0.path.utf8.starts(with: prefix.utf8) }
    }
    public func liveUsage(writer: String, excluding path: String) -> (files: Int, bytes: Int) {
        let rows = fileRows.values.filter { $0.writer == writer && !$0.path.utf8.elementsEqual(path.utf8) }
        return rows.reduce(into: (files: 0, bytes: 0)) { usage, row in
            guard let content = row.content else { return }
            usage.files += 1
            usage.bytes += content.count
        }
    }
    public func enrolledNodeFiles(_ names: [String], whereFile filter: String, isOneOf values: [[UInt8]]) -> [String: [String: [UInt8]]] {
        var result: [String: [String: [UInt8]]] = [:]
        for node in nodeRows.keys {
            guard let content = fileRows[Array(WhiteboardPath.node(node, filter).utf8)]?.content, values.contains(content) else { continue }
            result[node] = names.reduce(into: [:]) { files, name in files[name] = fileRows[Array(WhiteboardPath.node(node, name).utf8)]?.content }
        }
        return result
    }
    public mutating func putFile(_ row: WhiteboardFileRow) { fileRows[Array(row.path.utf8)] = row }

    public func liveHolder(lock: String, holder: String) -> WhiteboardHolderRow? {
        holderRows[lock]?[holder].flatMap { $0.released ? nil : $0 }
    }
    public func liveHolders(lock: String?) -> [WhiteboardHolderRow] {
        let locks = lock.map { [holderRows[$0] ?? [:]] } ?? Array(holderRows.values)
        return locks.flatMap(\.values).filter { !$0.released }
    }
    public func liveHolders(node: String) -> [WhiteboardHolderRow] { liveHolders(lock: nil).filter { $0.node == node } }
    public func holders(after revision: Int64) -> [WhiteboardHolderRow] {
        holderRows.values.flatMap(\.values).filter { $0.revision > revision }
    }
    public mutating func putHolder(_ row: WhiteboardHolderRow) { holderRows[row.lock, default: [:]][row.holder] = row }

    public func upgrades() -> [Int64: String] { upgradeRows }
    public mutating func putUpgrade(version: Int64, class upgradeClass: String) { upgradeRows[version] = upgradeClass }
}
