/// Signature primitives the pure core needs but does not implement: the
/// `Sodium` module provides them through libsodium, so the core stays free of C.
public protocol Ed25519Verifying: Sendable {
    func isValid(signature: [UInt8], message: [UInt8], publicKey: [UInt8]) -> Bool
}

public protocol Ed25519Signing: Sendable {
    var publicKey: [UInt8] { get }
    func sign(_ message: [UInt8]) -> [UInt8]
}
