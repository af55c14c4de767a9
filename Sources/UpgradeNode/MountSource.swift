import UpgradeCore

/// `HOST:PORT,ID`: where the server is and which initial root it must prove
/// it holds (SFS-style self-certifying name).
public struct MountSource: Sendable, Equatable, CustomStringConvertible {
    public let host: String
    public let port: Int
    public let serverID: String

    public init(parsing text: String) throws(MountError) {
        guard let comma = text.lastIndex(of: ",") else {
            throw MountError.badSource(text, "expected HOST:PORT,ID (the id is printed by `upgradefs keygen`)")
        }
        let address = text[..<comma]
        let id = String(text[text.index(after: comma)...])
        guard ServerID.isWellFormed(id) else {
            throw MountError.badSource(text, "'\(id)' is not a server id (52 base32 characters a-z, 2-7)")
        }
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
              (1...65535).contains(port)
        else {
            throw MountError.badSource(text, "expected HOST:PORT before the comma, with a port from 1 to 65535")
        }
        var host = String(address[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, !host.contains(where: { $0 == "/" || $0 == "@" || $0.isWhitespace }) else {
            throw MountError.badSource(text, "'\(host)' is not a host name or address")
        }
        self.host = host
        self.port = port
        self.serverID = id
    }

    /// `HOST:PORT` (`[HOST]:PORT` for an IPv6 address), for messages.
    public var endpoint: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    public var baseURL: String {
        host.contains(":") ? "http://[\(host)]:\(port)" : "http://\(host):\(port)"
    }

    public var description: String { "\(endpoint),\(serverID)" }
}

/// Why a mount could not be made or kept up. Every message names the problem.
public enum MountError: Error, CustomStringConvertible, Sendable {
    case badSource(String, String)
    case identityMismatch(source: String, actualID: String)
    case unreachable(source: String, reason: String)
    case verification(String)
    case cache(String)
    /// The cache directory was filled for another server (`cachedID`; nil: an older cache whose trusted
    /// root cannot be tied to `sourceID`).
    case cacheOfAnotherServer(directory: String, cachedID: String?, sourceID: String)
    case mountFailed(String)
    case nodeKey(String)
    /// The server says (signed) that the node key is not enrolled.
    case notEnrolled(node: String, reason: String)
    /// The server says (signed) that the node key is mounted elsewhere right now.
    case nodeInUse(String)

    public var description: String {
        switch self {
        case .badSource(let text, let why): "bad mount source '\(text)': \(why)"
        case .identityMismatch(let source, let actual):
            "server at \(source) is not the server named by the mount source: its initial root hashes to \(actual); refusing to mount"
        case .unreachable(let source, let reason):
            "\(reason); nothing is cached for \(source) yet, so there is nothing to show"
        case .verification(let why): "server metadata failed verification: \(why)"
        case .cache(let why): "local cache: \(why)"
        case .cacheOfAnotherServer(let directory, let cachedID, let sourceID):
            (cachedID.map { "cache \(directory) holds what was verified for server \($0), but the mount source names server \(sourceID)" }
                ?? "cache \(directory) was filled by an older upgradefs for a server it cannot tie to \(sourceID)")
                + "; refusing to mix them. Give this mount its own cache (leave out --cache (cache=) for "
                + "the default /var/cache/upgradefs/\(sourceID), or name an empty directory), or remove \(directory) if what it "
                + "holds is no longer wanted (it is filled again from the server)"
        case .mountFailed(let why): "mount failed: \(why)"
        case .nodeKey(let why): "node key: \(why)"
        case .notEnrolled(let node, let reason):
            "node \(node) is not enrolled on the server with this key (\(reason)); on the server run "
                + "`upgradefs enroll --state DIR \(node) PUBLICKEYHEX` (printed by `upgradefs keygen --node \(node)`)"
        case .nodeInUse(let reason): "refusing a second live mount of the node key: \(reason)"
        }
    }
}
