import Foundation

/// A fresh, authenticated request carried out: file writes (content, file-tree conflicts, quota) and lock holders
/// (naming rules, capacity, release by the owner or the operator).
extension WhiteboardLedger {
    /// Carries out an authenticated, fresh request; returns why not when refused. Holders released on the way
    /// because their TTL ran out are added to `expired`.
    func execute<Tx: WhiteboardTransaction>(
        _ request: WhiteboardRequest, in tx: inout Tx, now: Date, expired: inout [WhiteboardHolder]
    ) throws -> WhiteboardErrorBody? {
        let path: WhiteboardPath
        do {
            path = try WhiteboardPath(request.path)
        } catch {
            return WhiteboardErrorBody(error: error.description, code: .malformed)
        }
        if let denial = WhiteboardRules.authorize(node: request.node, op: request.op, path: path) {
            return WhiteboardErrorBody(error: denial.message, code: denial.kind == .forbidden ? .forbidden : .malformed)
        }
        switch request.op {
        case .put:
            return try put(request.content ?? [], at: path, by: request.node, in: &tx, now: now)
        case .delete:
            if try tx.file(path.string)?.content != nil {
                try putFile(path.string, content: nil, writer: request.node, in: &tx, now: now)
                if Self.affectsSummaries(path) { try recomputeSummaries(in: &tx, now: now) }
            }
            return nil
        case .acquire:
            guard case .lockHolder(let lock, let holder) = path.kind else { return nil }
            expired += try releaseExpired(lock: lock, in: &tx, now: now)
            return try acquire(lock: lock, holder: holder, path: path, by: request.node, in: &tx, now: now)
        case .release:
            guard case .lockHolder(let lock, let holder) = path.kind else { return nil }
            guard let held = try tx.liveHolder(lock: lock, holder: holder) else {
                return WhiteboardErrorBody(error: "lock \(lock) has no holder \(holder)", code: .notFound)
            }
            guard held.node == request.node || request.node == WhiteboardRules.operatorName else {
                return WhiteboardErrorBody(error: "\(request.node) may not release \(path.string) (held by \(held.node))", code: .forbidden)
            }
            try release(held, in: &tx)
            return nil
        case .session:
            return nil  // answered by `session`
        }
    }

    /// A write of the operator's that comes without a signed request: the server's operator actions (the fleet
    /// page), authenticated by the server's operator credential instead of the operator's key. The same decision as
    /// the operator's signed put, delete or release (`WhiteboardRules.authorize` as `operator`, content validation,
    /// file-tree conflicts, holders), with no replay state: there is no seq. Acquire and session are refused (they
    /// belong to a node's mount). Returns why not when refused.
    public func applyAsOperator<Tx: WhiteboardTransaction>(
        _ op: WhiteboardOp, path: String, content: [UInt8]? = nil, in tx: inout Tx, now: Date
    ) throws -> WhiteboardErrorBody? {
        let channel: WhiteboardChannel
        switch op {
        case .put, .delete: channel = .outbox
        case .release: channel = .direct
        case .acquire, .session:
            return WhiteboardErrorBody(error: "the operator's actions are put, delete and release, not \(op.rawValue)", code: .malformed)
        }
        let request = WhiteboardRequest(
            node: WhiteboardRules.operatorName, channel: channel, seq: 1, op: op, path: path,
            content: op == .put ? (content ?? []) : nil, nonce: [UInt8](repeating: 0, count: WhiteboardRequest.nonceBytes))
        var expired: [WhiteboardHolder] = []  // only an acquire releases expired holders on its way
        return try execute(request, in: &tx, now: now, expired: &expired)
    }

    private func put<Tx: WhiteboardTransaction>(
        _ requested: [UInt8], at path: WhiteboardPath, by node: String, in tx: inout Tx, now: Date
    ) throws -> WhiteboardErrorBody? {
        let content: [UInt8]
        switch WhiteboardRules.validate(content: requested, for: path) {
        case .success(let valid): content = valid
        case .failure(let denial): return WhiteboardErrorBody(error: denial.message, code: .malformed)
        }
        if let conflict = try fileTreeConflict(path.string, in: tx) { return conflict }
        let usage = try tx.liveUsage(writer: node, excluding: path.string)
        if let denial = WhiteboardRules.quotaDenial(node: node, path: path, files: usage.files + 1, bytes: usage.bytes + content.count) {
            return WhiteboardErrorBody(error: denial.message, code: .forbidden)
        }
        try putFile(path.string, content: content, writer: node, in: &tx, now: now)
        if Self.affectsSummaries(path) { try recomputeSummaries(in: &tx, now: now) }
        return nil
    }

    /// A put of `shared/a/b` while `shared/a` is a file, or of `shared/a` while `shared/a/…` exist.
    private func fileTreeConflict<Tx: WhiteboardTransaction>(_ path: String, in tx: Tx) throws -> WhiteboardErrorBody? {
        let parts = path.split(separator: "/")
        for count in 1..<parts.count {
            let prefix = parts[0..<count].joined(separator: "/")
            if try tx.file(prefix)?.content != nil {
                return WhiteboardErrorBody(error: "\(prefix) is a file, so \(path) cannot be created", code: .conflict)
            }
        }
        if try tx.hasLiveFile(withPrefix: path + "/") {
            return WhiteboardErrorBody(error: "\(path) is a directory", code: .conflict)
        }
        return nil
    }

    /// Writes a file, or a tombstone when `content` is nil.
    func putFile<Tx: WhiteboardTransaction>(_ path: String, content: [UInt8]?, writer: String, in tx: inout Tx, now: Date) throws {
        try tx.putFile(WhiteboardFileRow(
            path: path, content: content, revision: try tx.changeRevision(), modifiedAt: now.timeIntervalSince1970, writer: writer))
    }

    // MARK: - Locks

    private func acquire<Tx: WhiteboardTransaction>(
        lock: String, holder: String, path: WhiteboardPath, by node: String, in tx: inout Tx, now: Date
    ) throws -> WhiteboardErrorBody? {
        let heldBy = try tx.liveHolder(lock: lock, holder: holder)?.node
        let holderIsAnotherNode = try holder != node && tx.node(holder) != nil
        let holding = try tx.liveHolders(node: node).count
        if let denial = WhiteboardRules.authorizeAcquire(
            node: node, path: path, holderIsAnotherEnrolledNode: holderIsAnotherNode, heldBy: heldBy, holding: holding)
        {
            return WhiteboardErrorBody(error: denial.message, code: .forbidden)
        }
        if heldBy != nil {
            return WhiteboardErrorBody(error: "lock \(lock) already has holder \(holder)", code: .exists)
        }
        let held = Int64(try tx.liveHolders(lock: lock).count)
        let capacity = try tx.file("locks/\(lock)/capacity")?.content.flatMap(WhiteboardRules.parseCount) ?? Self.defaultCapacity
        if held >= capacity {
            return WhiteboardErrorBody(error: "lock \(lock) is full (\(held) of \(capacity))", code: .full)
        }
        try tx.putHolder(WhiteboardHolderRow(
            lock: lock, holder: holder, node: node, acquiredAt: now.timeIntervalSince1970, revision: try tx.changeRevision(),
            released: false))
        return nil
    }

    /// Marks a live holder released (kept as a tombstone, so `changes` reports it).
    func release<Tx: WhiteboardTransaction>(_ held: WhiteboardHolderRow, in tx: inout Tx) throws {
        var row = held
        row.released = true
        row.revision = try tx.changeRevision()
        try tx.putHolder(row)
    }

    /// The operator's `unlock LOCK HOLDER`; false if there was no such holder.
    public func release<Tx: WhiteboardTransaction>(lock: String, holder: String, in tx: inout Tx) throws -> Bool {
        guard let held = try tx.liveHolder(lock: lock, holder: holder) else { return false }
        try release(held, in: &tx)
        return true
    }

    /// Whether a holder acquired at `acquiredAt`, whose node's heartbeat last arrived at `heartbeat` (nil: none),
    /// has outlived the TTL at `now` (all Unix seconds).
    public func isExpired(acquiredAt: Double, heartbeat: Double?, now: Date) -> Bool {
        max(acquiredAt, heartbeat ?? acquiredAt) < now.timeIntervalSince1970 - lockTTLSeconds
    }

    /// Releases the holders of `lock` (of every lock when nil) whose TTL ran out, sorted by lock and holder.
    public func releaseExpired<Tx: WhiteboardTransaction>(lock: String? = nil, in tx: inout Tx, now: Date) throws -> [WhiteboardHolder] {
        var released: [WhiteboardHolder] = []
        var heartbeats: [String: Double?] = [:]
        for held in try tx.liveHolders(lock: lock).sorted(by: { ($0.lock, $0.holder) < ($1.lock, $1.holder) }) {
            if heartbeats[held.node] == nil {
                let file = try tx.file(WhiteboardPath.node(held.node, "heartbeat"))
                heartbeats[held.node] = .some(file?.content == nil ? nil : file?.modifiedAt)
            }
            guard isExpired(acquiredAt: held.acquiredAt, heartbeat: heartbeats[held.node]!, now: now) else { continue }
            try release(held, in: &tx)
            released.append(WhiteboardHolder(
                lock: held.lock, holder: held.holder, node: held.node, acquiredAt: Int64(held.acquiredAt),
                revision: try tx.changeRevision(), released: true))
        }
        return released
    }
}
