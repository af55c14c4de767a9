/// What a whiteboard request does.
public enum WhiteboardOp: String, Sendable, Hashable, CaseIterable {
    /// Create or replace a file.
    case put
    /// Remove a file.
    case delete
    /// `mkdir locks/NAME/HOLDER`.
    case acquire
    /// `rmdir locks/NAME/HOLDER`.
    case release
    /// Claims, renews or ends the writer's mount session (`WhiteboardSession`); also proves that the writer is
    /// enrolled with this key. Direct channel; its path is the writer's `nodes/NODE/session`; no file changes.
    case session
}

/// One live mount per node key: a mount claims the node's session when it starts and renews it every
/// `renewSeconds`; while a claim of another instance (another journal, i.e. another cache directory) was renewed
/// less than `leaseSeconds` ago, a claim is refused (`in-use`). A restarted mount on the same cache is the same
/// instance. A clean unmount ends its session.
public enum WhiteboardSession {
    public static let leaseSeconds: Double = 60
    public static let renewSeconds: Double = 20

    public enum Action: Sendable, Equatable {
        case claim(instance: String)
        case end(instance: String)

        public var instance: String {
            switch self {
            case .claim(let instance), .end(let instance): instance
            }
        }
    }

    /// The request's content: `claim HEX` or `end HEX`.
    public static func content(_ action: Action) -> [UInt8] {
        switch action {
        case .claim(let instance): Array("claim \(instance)".utf8)
        case .end(let instance): Array("end \(instance)".utf8)
        }
    }

    public static func parse(_ content: [UInt8]) -> Action? {
        let parts = String(decoding: content, as: UTF8.self).split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 2, (1...32).contains(parts[1].utf8.count),
              parts[1].utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) })
        else { return nil }
        switch parts[0] {
        case "claim": return .claim(instance: String(parts[1]))
        case "end": return .end(instance: String(parts[1]))
        default: return nil
        }
    }
}

/// Why a request is refused by the rules.
public struct WhiteboardDenial: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable, Equatable {
        /// The writer may not do this (HTTP 403, EACCES on the node).
        case forbidden
        /// The request or the content is not well formed (HTTP 400).
        case malformed
    }

    public let kind: Kind
    public let message: String
    public var description: String { message }

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }
}

/// Who may write what on the whiteboard, and what a file may contain
/// (docs/DESIGN.md, "Whiteboard tree … and who may write"). Pure: used by the
/// server (authoritative) and by the node (to fail early).
public enum WhiteboardRules {
    /// The reserved identity with the operator's rights.
    public static let operatorName = "operator"
    /// Most bytes a file may hold (`log` keeps its last this many bytes instead).
    public static let maxFileBytes = 64 << 10
    /// Most bytes a `log` put may carry; the server keeps the last `maxFileBytes`.
    public static let maxLogPutBytes = 1 << 20
    /// Words `upgrades/N/control` accepts.
    public static let controlWords = Set(ControlWord.allCases.map(\.rawValue))
    /// Node files only the node itself writes (not the operator).
    public static let nodeOnlyFiles: Set<String> = ["heartbeat", "log"]

    /// nil when `node` may do `op` on `path`, else why not. Does not look at
    /// state (who holds a lock, whether a file exists): `WhiteboardLedger` does that.
    public static func authorize(node: String, op: WhiteboardOp, path: WhiteboardPath) -> WhiteboardDenial? {
        let isOperator = node == operatorName
        func forbidden(_ what: String = "write") -> WhiteboardDenial {
            WhiteboardDenial(.forbidden, "\(node) may not \(what) \(path.string)")
        }
        switch path.kind {
        case .lockHolder:
            guard op == .acquire || op == .release else {
                return WhiteboardDenial(.malformed, "\(path.string) is a lock holder: only acquire and release apply")
            }
            return nil
        default:
            guard op == .put || op == .delete else {
                return WhiteboardDenial(.malformed, "\(path.string) is a file: only put and delete apply")
            }
        }
        let verb = op == .put ? "write" : "delete"
        switch path.kind {
        case .nodeFile(let owner, let name):
            if owner == node { return nil }
            if isOperator && !nodeOnlyFiles.contains(name) { return nil }
            return forbidden(verb)
        case .upgradeControl, .lockCapacity:
            return isOperator ? nil : forbidden(verb)
        case .upgradeSummary:
            return WhiteboardDenial(.forbidden, "\(node) may not \(verb) \(path.string): it is computed by the server")
        case .shared:
            return nil
        case .lockHolder:
            return nil
        }
    }

    /// Most holders one node (not the operator) has at once, over all locks: each lock is a row of `status` and
    /// `/metrics`, so one node must not make thousands.
    public static let maxHoldersPerNode = 64

    /// Most bytes the live files one node (not the operator) last wrote may hold together, over its own files and
    /// `shared/`: every node reads the whole whiteboard (a mount takes at most 64 MiB per answer), so one node must
    /// not be able to fill it.
    public static let maxBytesPerWriter = 1 << 20
    /// Most live files one node (not the operator) last wrote.
    public static let maxFilesPerWriter = 1024

    /// nil when the live files `node` last wrote may become `files` files of `bytes` bytes together, else why not.
    public static func quotaDenial(node: String, path: WhiteboardPath, files: Int, bytes: Int) -> WhiteboardDenial? {
        guard node != operatorName else { return nil }
        if files > maxFilesPerWriter {
            return WhiteboardDenial(.forbidden, "\(node) may not write \(path.string): it would have \(files) files, at most \(maxFilesPerWriter)")
        }
        if bytes > maxBytesPerWriter {
            return WhiteboardDenial(
                .forbidden, "\(node) may not write \(path.string): its files would hold \(bytes) bytes, at most \(maxBytesPerWriter)")
        }
        return nil
    }

    /// nil when `node` may acquire the holder `path` names, else why not. A holder named after an enrolled node is
    /// that node's (SFs use `$UPGRADEFS_NODE`): another node taking it would make that node's `mkdir` answer EEXIST,
    /// which SFs read as "I hold it". `heldBy`: the node holding it now, if any; only that node hears EEXIST.
    /// `holding`: how many holders `node` has now.
    public static func authorizeAcquire(
        node: String, path: WhiteboardPath, holderIsAnotherEnrolledNode: Bool, heldBy: String?, holding: Int
    ) -> WhiteboardDenial? {
        guard case .lockHolder(let lock, let holder) = path.kind, node != operatorName else { return nil }
        if holderIsAnotherEnrolledNode {
            return WhiteboardDenial(.forbidden, "\(node) may not acquire \(path.string): holder \(holder) is node \(holder)'s name")
        }
        if let heldBy, heldBy != node {
            return WhiteboardDenial(.forbidden, "\(node) may not acquire \(path.string): lock \(lock)'s holder \(holder) is \(heldBy)'s")
        }
        if heldBy == nil && holding >= maxHoldersPerNode {
            return WhiteboardDenial(.forbidden, "\(node) may not acquire \(path.string): it has \(holding) holders, at most \(maxHoldersPerNode)")
        }
        return nil
    }

    /// The most one write to `path` may carry: a node's `log` takes appends up to `maxLogPutBytes` (and keeps its
    /// last `maxFileBytes`), every other file `maxFileBytes`.
    public static func maxWriteBytes(_ path: WhiteboardPath) -> Int {
        if case .nodeFile(_, "log") = path.kind { return maxLogPutBytes }
        return maxFileBytes
    }

    /// The bytes to store for a put of `content` at `path`, or why the
    /// content is refused. One trailing newline is allowed after a word or
    /// a number (`echo running > state`). A `log` keeps its last
    /// `maxFileBytes` bytes.
    public static func validate(content: [UInt8], for path: WhiteboardPath) -> Result<[UInt8], WhiteboardDenial> {
        func malformed(_ what: String) -> Result<[UInt8], WhiteboardDenial> {
            .failure(WhiteboardDenial(.malformed, "\(path.string) must hold \(what)"))
        }
        var value = content
        if value.last == 0x0A { value.removeLast() }
        switch path.kind {
        case .nodeFile(_, "log"):
            guard content.count <= maxWriteBytes(path) else { return malformed("at most \(maxLogPutBytes) bytes per write") }
            return .success(Array(content.suffix(maxFileBytes)))
        case .nodeFile(_, "state"):
            return isWord(value) ? .success(content) : malformed("one word ([a-z-]{1,32})")
        case .nodeFile(_, "version"), .nodeFile(_, "heartbeat"), .lockCapacity:
            return parseCount(value) != nil ? .success(content) : malformed("a non-negative decimal integer")
        case .upgradeControl:
            let word = String(decoding: value, as: UTF8.self)
            guard controlWords.contains(word) else {
                return malformed("one of: \(controlWords.sorted().joined(separator: ", "))")
            }
            return .success(content)
        case .upgradeSummary, .lockHolder:
            return .failure(WhiteboardDenial(.malformed, "\(path.string) cannot be written"))
        case .nodeFile, .shared:
            guard content.count <= maxWriteBytes(path) else { return malformed("at most \(maxFileBytes) bytes") }
            return .success(content)
        }
    }

    /// What a node of upgrade N's class counts as in N's summary, from what it reports: `done` at a version ≥ N;
    /// else, when its `upgrade` file names the upgrade its state concerns (the manager writes it, empty when none),
    /// its state word under that upgrade and `pending` under every other one (a failure of upgrade 1 is not a
    /// failure of upgrade 2); without an `upgrade` file, its state word; `unknown` without a state.
    public static func summaryState(upgrade: Int64, state: [UInt8]?, version: [UInt8]?, reportedUpgrade: [UInt8]?) -> String {
        if let version = version.flatMap(parseCount), version >= upgrade { return "done" }
        if let reportedUpgrade, parseCount(reportedUpgrade) != upgrade { return "pending" }
        guard var word = state else { return "unknown" }
        if word.last == 0x0A { word.removeLast() }
        return isWord(word) ? String(decoding: word, as: UTF8.self) : "unknown"
    }

    /// A non-negative decimal integer (no sign, no leading zeros, ≤ 18 digits),
    /// optionally followed by one newline.
    public static func parseCount(_ bytes: [UInt8]) -> Int64? {
        var digits = bytes
        if digits.last == 0x0A { digits.removeLast() }
        guard (1...18).contains(digits.count), digits.allSatisfy({ (48...57).contains($0) }),
              digits.count == 1 || digits[0] != UInt8(ascii: "0")
        else { return nil }
        return Int64(String(decoding: digits, as: UTF8.self))
    }

    /// One state word: `[a-z-]{1,32}` (without the optional trailing newline).
    public static func isWord(_ bytes: [UInt8]) -> Bool {
        (1...32).contains(bytes.count) && bytes.allSatisfy { (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || $0 == UInt8(ascii: "-") }
    }
}
