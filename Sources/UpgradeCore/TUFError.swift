import Foundation

/// Every way TUF metadata or a target can be refused. The descriptions are
/// shown to operators, so each names the role and the numbers involved.
public enum TUFError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Not JSON, or JSON that does not have the shape the role requires.
    case malformed(String)
    /// `_type` names another role than the one expected.
    case wrongType(expected: TUFRole, got: String)
    /// `spec_version` is not a TUF 1.x version.
    case unsupportedSpecVersion(String)
    /// A signature by one of the role's authorised keys does not verify
    /// (and the threshold was therefore not met): tampered or forged data.
    case badSignature(role: TUFRole)
    /// Fewer distinct authorised keys signed than the role's threshold.
    case thresholdNotMet(role: TUFRole, got: Int, need: Int)
    /// A new root is not signed by a threshold of the currently trusted root's keys.
    case rootNotSignedByTrustedRoot(version: Int, got: Int, need: Int)
    /// A version went down.
    case rollback(role: TUFRole, trusted: Int, new: Int)
    /// The offered metadata has the same version as the trusted one: nothing new.
    case equalVersion(role: TUFRole)
    case expired(role: TUFRole, expires: Date)
    /// A version differs from the one the referring metadata names (mix-and-match),
    /// or a root is not exactly the next version.
    case wrongVersion(role: TUFRole, expected: Int, got: Int)
    case hashMismatch(what: String)
    case lengthMismatch(what: String, expected: Int64, got: Int64)
    /// Snapshot does not list a file the trusted snapshot listed, or targets has
    /// no entry for a requested path.
    case missing(what: String)
    /// An update was attempted before the metadata it depends on was trusted.
    case outOfOrder(String)

    public var description: String {
        switch self {
        case .malformed(let why):
            "malformed metadata: \(why)"
        case .wrongType(let expected, let got):
            "wrong metadata type: expected \(expected.rawValue), got \"\(got)\""
        case .unsupportedSpecVersion(let v):
            "unsupported TUF spec_version \"\(v)\""
        case .badSignature(let role):
            "\(role.rawValue) signature does not verify (tampered or forged metadata)"
        case .thresholdNotMet(let role, let got, let need):
            "\(role.rawValue) is signed by \(got) of the \(need) required keys"
        case .rootNotSignedByTrustedRoot(let version, let got, let need):
            "root version \(version) is signed by \(got) of the \(need) required keys of the trusted root"
        case .rollback(let role, let trusted, let new):
            "\(role.rawValue) rollback: trusted version \(trusted), server offered \(new)"
        case .equalVersion(let role):
            "\(role.rawValue) unchanged: server offered the trusted version again"
        case .expired(let role, let expires):
            "\(role.rawValue) expired at \(TUFDate.format(expires)) (freeze attack or stale server)"
        case .wrongVersion(let role, let expected, let got):
            "\(role.rawValue) version mismatch: expected version \(expected), got \(got)"
        case .hashMismatch(let what):
            "\(what): SHA-256 does not match the signed metadata"
        case .lengthMismatch(let what, let expected, let got):
            "\(what): length does not match the signed metadata (expected \(expected) bytes, got \(got))"
        case .missing(let what):
            "\(what) is missing"
        case .outOfOrder(let why):
            why
        }
    }
}
