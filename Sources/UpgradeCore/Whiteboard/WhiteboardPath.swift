/// A path on the whiteboard, relative to `udb/` (docs/DESIGN.md, "Whiteboard
/// tree"), parsed into what it names. Only paths that can be written (files)
/// or created/removed (lock holders) parse; directories such as `nodes/n1`
/// do not.
public struct WhiteboardPath: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        /// `nodes/NODE/NAME` (one component below the node's directory).
        case nodeFile(node: String, name: String)
        /// `upgrades/N/control`.
        case upgradeControl(version: Int64)
        /// `upgrades/N/summary` (computed by the server).
        case upgradeSummary(version: Int64)
        /// `locks/NAME/capacity`.
        case lockCapacity(lock: String)
        /// `locks/NAME/HOLDER` (a directory on the mount: one holder).
        case lockHolder(lock: String, holder: String)
        /// `shared/<path>` (one or more components).
        case shared(path: String)
    }

    public static let maxPathBytes = 255
    public static let maxComponentBytes = 255
    public static let maxHolderBytes = 64

    /// The path as given, e.g. `nodes/n1/state`.
    public let string: String
    public let kind: Kind

    public var description: String { string }

    public init(_ string: String) throws(WhiteboardPathError) {
        func fail(_ problem: String) -> WhiteboardPathError { WhiteboardPathError(path: string, problem: problem) }
        if string.utf8.count > Self.maxPathBytes {
            throw fail("is \(string.utf8.count) bytes long, at most \(Self.maxPathBytes) allowed")
        }
        if let problem = BundlePath.problem(with: string) { throw fail(problem) }
        let parts = string.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        switch parts[0] {
        case "nodes":
            guard parts.count == 3 else { throw fail("must be nodes/NODE/FILE") }
            guard Self.isNodeName(parts[1]) else { throw fail("names an invalid node \"\(parts[1])\"") }
            kind = .nodeFile(node: parts[1], name: parts[2])
        case "upgrades":
            guard parts.count == 3 else { throw fail("must be upgrades/N/control or upgrades/N/summary") }
            guard let version = Self.parseVersion(parts[1]) else { throw fail("names an invalid upgrade version \"\(parts[1])\"") }
            switch parts[2] {
            case "control": kind = .upgradeControl(version: version)
            case "summary": kind = .upgradeSummary(version: version)
            default: throw fail("must be upgrades/N/control or upgrades/N/summary")
            }
        case "locks":
            guard parts.count == 3 else { throw fail("must be locks/NAME/capacity or locks/NAME/HOLDER") }
            guard Self.isLockName(parts[1]) else { throw fail("names an invalid lock \"\(parts[1])\"") }
            if parts[2] == "capacity" {
                kind = .lockCapacity(lock: parts[1])
            } else {
                guard Self.isHolderName(parts[2]) else {
                    throw fail("names an invalid holder \"\(parts[2])\" (allowed: [A-Za-z0-9._-]{1,64})")
                }
                kind = .lockHolder(lock: parts[1], holder: parts[2])
            }
        case "shared":
            guard parts.count >= 2 else { throw fail("must be shared/PATH") }
            kind = .shared(path: parts.dropFirst().joined(separator: "/"))
        default:
            throw fail("is not under nodes/, upgrades/, locks/ or shared/")
        }
        self.string = string
    }

    /// The path of a node's file.
    public static func node(_ node: String, _ name: String) -> String { "nodes/\(node)/\(name)" }

    /// The grammar of node (and operator) names, as messages and help texts print it.
    public static let nodeNameGrammar = "[a-z0-9][a-z0-9._-]{0,62}"

    /// Node (and operator) names: `[a-z0-9][a-z0-9._-]{0,62}`.
    public static func isNodeName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (1...63).contains(bytes.count), isLowerAlnum(bytes[0]) else { return false }
        return bytes.allSatisfy { isLowerAlnum($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") }
    }

    /// Lock names follow the node-name grammar.
    public static func isLockName(_ name: String) -> Bool { isNodeName(name) }

    /// Holders: `[A-Za-z0-9._-]{1,64}`, not `.`, `..` or `capacity`.
    public static func isHolderName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (1...maxHolderBytes).contains(bytes.count), name != ".", name != "..", name != "capacity" else { return false }
        return bytes.allSatisfy {
            isLowerAlnum($0) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0)
                || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-")
        }
    }

    /// A positive decimal integer without leading zeros.
    static func parseVersion(_ text: String) -> Int64? {
        let bytes = Array(text.utf8)
        guard (1...18).contains(bytes.count), bytes[0] != UInt8(ascii: "0"),
              bytes.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) })
        else { return nil }
        return Int64(text)
    }

    private static func isLowerAlnum(_ b: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(b) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b)
    }
}

public struct WhiteboardPathError: Error, Equatable, Sendable, CustomStringConvertible {
    public let path: String
    public let problem: String
    public var description: String { "whiteboard path \"\(BundlePath.printable(path))\" \(problem)" }
}
