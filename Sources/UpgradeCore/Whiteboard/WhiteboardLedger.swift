import Foundation

/// Every decision of the server's whiteboard, over a `WhiteboardTransaction` (docs/DESIGN.md, "The upgrade
/// database"): authentication of a signed request with the enrolled key, replay and session checks, who may write
/// what (`WhiteboardRules`), lock capacity and TTL expiry, file-tree conflicts, the summaries of published upgrades
/// and the bookkeeping of refusals. Pure: it reads no clock (`now` is a parameter) and does no I/O; a store runs
/// each call in one `WhiteboardStorage.write` (or `read`) and carries out nothing else.
public struct WhiteboardLedger: Sendable {
    /// Holders of a lock with no `capacity` file.
    public static let defaultCapacity: Int64 = 1
    public static let defaultLockTTLSeconds: Double = 60
    /// Names not enrolled whose refused writes are remembered (the least recent one makes room).
    public static let maxUnknownWriters = 100
    /// The writer of the files the server computes (summaries).
    public static let serverWriter = "server"

    public let verifier: any Ed25519Verifying
    /// A holder whose node's last heartbeat (or, if later, the acquisition) is older than this is released.
    public let lockTTLSeconds: Double

    public init(verifier: any Ed25519Verifying, lockTTLSeconds: Double = WhiteboardLedger.defaultLockTTLSeconds) {
        self.verifier = verifier
        self.lockTTLSeconds = lockTTLSeconds
    }

    /// What `apply` decided, and the holders it released on its way because their TTL had run out (to be logged
    /// and counted after the commit, like `releaseExpiredHolders`'s).
    public struct Applied: Sendable {
        public var outcome: WhiteboardApplyOutcome
        public var expired: [WhiteboardHolder]
    }

    // MARK: - Apply

    /// Authenticates `signed` with its node's enrolled key, checks its replay state and the rules, and applies it.
    /// A refusal is an outcome, not an error: what it records (the verdict with its seq, the refusal counts) is
    /// meant to be committed.
    public func apply<Tx: WhiteboardTransaction>(_ signed: SignedWhiteboardRequest, in tx: inout Tx, now: Date) throws -> Applied {
        let request = signed.request
        guard let node = try tx.node(request.node) else {
            let refusal = WhiteboardErrorBody(error: "unknown node \(request.node) (not enrolled)", code: .unauthenticated)
            try recordRefusal(refusal, node: request.node, enrolled: false, in: &tx, now: now)
            return Applied(outcome: .refused(refusal), expired: [])
        }
        guard signed.verify(publicKey: node.publicKey, verifier: verifier) else {
            // Not recorded against the node: anyone can send a request in its name, and a forgery must not make a
            // healthy node show as refusing (upgradefs_udb_refused_total{reason="unauthenticated"} counts it).
            let refusal = WhiteboardErrorBody(
                error: "bad signature on a request from \(request.node) (is it enrolled with another key?)", code: .unauthenticated)
            return Applied(outcome: .refused(refusal), expired: [])
        }
        let applied = try applyAuthenticated(request, in: &tx, now: now)
        // Whether the node's file writes are being refused, for status and metrics (lock verdicts are answers).
        if request.channel == .outbox {
            switch applied.outcome {
            case .refused(let refusal):
                try recordRefusal(refusal, node: request.node, enrolled: true, in: &tx, now: now)
            case .applied:
                if var row = try tx.refusal(node: request.node), row.refusing {
                    row.refusing = false
                    try tx.putRefusal(row)
                }
            }
        }
        return applied
    }

    /// The replay check and the request itself, for a request whose signature was checked.
    private func applyAuthenticated<Tx: WhiteboardTransaction>(_ request: WhiteboardRequest, in tx: inout Tx, now: Date) throws -> Applied {
        // A session request has a replay stream per mount instance: a claim of a second mount (another journal, whose
        // seqs may be higher) must not use up the seqs of the live mount's direct channel.
        var stream = request.channel.rawValue
        var sessionAction: WhiteboardSession.Action?
        if request.op == .session {
            guard request.path == WhiteboardPath.node(request.node, "session"),
                  let action = WhiteboardSession.parse(request.content ?? [])
            else {
                return Applied(outcome: .refused(WhiteboardErrorBody(
                    error: "a session request is `claim HEX` or `end HEX` on nodes/NODE/session", code: .malformed)), expired: [])
            }
            sessionAction = action
            stream = "session " + action.instance
        }
        let digest = request.digest()
        if let last = try tx.replay(node: request.node, stream: stream) {
            if request.seq == last.lastSeq, last.lastDigest == digest {
                // A retry of the last request: the same verdict again, nothing applied again.
                if let code = last.refusedCode.flatMap(WhiteboardErrorBody.Code.init(rawValue:)) {
                    return Applied(outcome: .refused(WhiteboardErrorBody(error: last.refusedError ?? "refused", code: code)), expired: [])
                }
                return Applied(
                    outcome: .applied(WhiteboardResponse(revision: try tx.revision(), result: .duplicate, nonce: request.nonce)),
                    expired: [])
            }
            if request.seq <= last.lastSeq {
                return Applied(outcome: .refused(WhiteboardErrorBody(
                    error: "replayed request: \(request.node) \(request.channel.rawValue) seq \(request.seq), last seen \(last.lastSeq)",
                    code: .replayed)), expired: [])
            }
        }
        func record(_ refusal: WhiteboardErrorBody?, in tx: inout Tx) throws {
            try tx.putReplay(WhiteboardReplayRow(
                node: request.node, stream: stream, lastSeq: request.seq, lastDigest: digest,
                refusedCode: refusal?.code.rawValue, refusedError: refusal?.error))
        }
        if let sessionAction {
            // A refused claim records nothing; a session changes no file, so the revision stays.
            if let refusal = try session(sessionAction, node: request.node, in: &tx, now: now) {
                return Applied(outcome: .refused(refusal), expired: [])
            }
            try record(nil, in: &tx)
            // The node's last seqs, so that a new journal's writes go above them instead of being refused as replays.
            var lastSeqs: [WhiteboardChannel: Int64] = [:]
            for channel in WhiteboardChannel.allCases {
                lastSeqs[channel] = try tx.replay(node: request.node, stream: channel.rawValue)?.lastSeq
            }
            return Applied(
                outcome: .applied(WhiteboardResponse(revision: try tx.revision(), result: .ok, nonce: request.nonce, lastSeqs: lastSeqs)),
                expired: [])
        }
        // From here on the seq is used up, whatever the verdict: a refused request cannot be replayed later, when it
        // might succeed. Its verdict is kept with its digest, so a retry of it (the answer was lost) hears it again.
        var expired: [WhiteboardHolder] = []
        let refusal = try execute(request, in: &tx, now: now, expired: &expired)
        try record(refusal, in: &tx)
        if let refusal { return Applied(outcome: .refused(refusal), expired: expired) }
        return Applied(
            outcome: .applied(WhiteboardResponse(revision: try tx.changeRevision(), result: .ok, nonce: request.nonce)), expired: expired)
    }

    /// Claims, renews or ends `node`'s mount session (`WhiteboardSession`); why not when refused.
    private func session<Tx: WhiteboardTransaction>(
        _ action: WhiteboardSession.Action, node: String, in tx: inout Tx, now: Date
    ) throws -> WhiteboardErrorBody? {
        let current = try tx.session(node: node)
        switch action {
        case .claim(let instance):
            if let current, current.instance != instance {
                let age = now.timeIntervalSince1970 - current.renewedAt
                if age < WhiteboardSession.leaseSeconds {
                    let left = Int((WhiteboardSession.leaseSeconds - age).rounded(.up))
                    return WhiteboardErrorBody(
                        error: "node \(node) is mounted elsewhere (another cache directory's mount renewed its session "
                            + "\(Int(age)) s ago); stop that mount, or wait \(left) s if it has stopped",
                        code: .inUse)
                }
            }
            try tx.putSession(WhiteboardSessionRow(node: node, instance: instance, renewedAt: now.timeIntervalSince1970))
        case .end(let instance):
            if current?.instance == instance { try tx.deleteSession(node: node) }
        }
        return nil
    }

    // MARK: - Refusals

    /// Counts a refused write of `node` (an enrolled node's, or a name nobody enrolled) and marks it as being refused.
    private func recordRefusal<Tx: WhiteboardTransaction>(
        _ refusal: WhiteboardErrorBody, node: String, enrolled: Bool, in tx: inout Tx, now: Date
    ) throws {
        let total = (try tx.refusal(node: node)?.total ?? 0) + 1
        try tx.putRefusal(WhiteboardRefusals(
            node: node, enrolled: enrolled, total: total, refusing: true, lastAt: now.timeIntervalSince1970,
            lastCode: refusal.code.rawValue, lastError: refusal.error))
        guard !enrolled else { return }
        let unknown = try tx.refusals().filter { !$0.enrolled }.sorted { ($0.lastAt, $1.node) > ($1.lastAt, $0.node) }
        for row in unknown.dropFirst(Self.maxUnknownWriters) { try tx.deleteRefusal(node: row.node) }
    }

    /// Refused writes by name, sorted by name.
    public func refusals<Tx: WhiteboardTransaction>(in tx: Tx) throws -> [WhiteboardRefusals] {
        try tx.refusals().sorted { $0.node < $1.node }
    }

    // MARK: - Enrollment

    /// Admits `node` with `publicKey`; false if it was enrolled with that key already. The replay counters stay (a
    /// node's journal starts its seqs at the time it was created, so a new journal continues above them), and so do
    /// the refusals of an enrolled node; an unknown name's go.
    public func enroll<Tx: WhiteboardTransaction>(node: String, publicKey: [UInt8], in tx: inout Tx, now: Date) throws -> Bool {
        if let denial = Self.enrollmentDenial(node: node, publicKey: publicKey) { throw denial }
        if try tx.node(node)?.publicKey == publicKey { return false }
        try tx.putNode(EnrolledNode(name: node, publicKey: publicKey, enrolledAt: now.timeIntervalSince1970))
        if let refusal = try tx.refusal(node: node), !refusal.enrolled { try tx.deleteRefusal(node: node) }
        try recomputeSummaries(in: &tx, now: now)
        return true
    }

    /// Why `node` with `publicKey` cannot be admitted: a name outside the node-name grammar, or a key that is not
    /// an Ed25519 public key (32 bytes). nil when it can.
    public static func enrollmentDenial(node: String, publicKey: [UInt8]) -> WhiteboardDenial? {
        guard WhiteboardPath.isNodeName(node) else {
            return WhiteboardDenial(.malformed, "'\(node)' is not a node name: expected \(WhiteboardPath.nodeNameGrammar)")
        }
        guard publicKey.count == 32 else {
            return WhiteboardDenial(.malformed, "the public key of \(node) must be 32 bytes (an Ed25519 public key), not \(publicKey.count)")
        }
        return nil
    }

    /// Revokes `node`; false if it was not enrolled. Its files stay, its holders are released, and its replay
    /// counters stay (tombstones): a write captured before the removal stays a replay after a re-enrolment.
    public func remove<Tx: WhiteboardTransaction>(node: String, in tx: inout Tx, now: Date) throws -> Bool {
        guard try tx.deleteNode(node) else { return false }
        for held in try tx.liveHolders(node: node) { try release(held, in: &tx) }
        try recomputeSummaries(in: &tx, now: now)
        return true
    }

    /// Enrolled nodes, sorted by name.
    public func enrolledNodes<Tx: WhiteboardTransaction>(in tx: Tx) throws -> [EnrolledNode] {
        try tx.nodes().sorted { $0.name < $1.name }
    }

    // MARK: - Reads

    /// Every live file (summaries included) sorted by path, and every live holder sorted by lock and holder. Paths
    /// are compared by their UTF-8 bytes, not as Swift strings (which equate canonically equivalent ones).
    public func snapshot<Tx: WhiteboardTransaction>(in tx: Tx) throws -> WhiteboardView {
        let files = try tx.liveFiles().sorted { $0.path.utf8.lexicographicallyPrecedes($1.path.utf8) }
        let holders = try tx.liveHolders(lock: nil).sorted { ($0.lock, $0.holder) < ($1.lock, $1.holder) }
        return WhiteboardView(revision: try tx.revision(), files: files.map(\.view), holders: holders.map(\.view))
    }

    /// What changed after `revision`, in the order it changed: files (tombstones with nil content) and holders
    /// (released ones flagged).
    public func changes<Tx: WhiteboardTransaction>(after revision: Int64, in tx: Tx) throws -> WhiteboardView {
        let files = try tx.files(after: revision).sorted {
            $0.revision != $1.revision ? $0.revision < $1.revision : $0.path.utf8.lexicographicallyPrecedes($1.path.utf8)
        }
        let holders = try tx.holders(after: revision).sorted { ($0.revision, $0.lock, $0.holder) < ($1.revision, $1.lock, $1.holder) }
        return WhiteboardView(revision: try tx.revision(), files: files.map(\.view), holders: holders.map(\.view))
    }
}

/// What `apply` did: applied (or recognised a retry), or refused with the
/// error body the HTTP layer sends (its `code` decides the status).
public enum WhiteboardApplyOutcome: Sendable, Hashable {
    case applied(WhiteboardResponse)
    case refused(WhiteboardErrorBody)
}

extension WhiteboardFileRow {
    /// As `snapshot` and `changes` show it (whole seconds).
    var view: WhiteboardFile {
        WhiteboardFile(path: path, content: content, revision: revision, modifiedAt: Int64(modifiedAt.rounded(.down)))
    }
}

extension WhiteboardHolderRow {
    var view: WhiteboardHolder {
        WhiteboardHolder(
            lock: lock, holder: holder, node: node, acquiredAt: Int64(acquiredAt.rounded(.down)), revision: revision, released: released)
    }
}
