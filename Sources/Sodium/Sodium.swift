import CSodium
import UpgradeCore

/// The only module that talks to libsodium. Everything else sees Swift types:
/// byte arrays in, byte arrays and booleans out.
public enum Sodium {
    /// Initialises libsodium once; safe to call from any thread, any number of times.
    public static let ready: Bool = sodium_init() >= 0

    /// `count` bytes from the operating system's secure random source.
    public static func randomBytes(_ count: Int) -> [UInt8] {
        precondition(ready, "libsodium failed to initialise")
        var bytes = [UInt8](repeating: 0, count: count)
        bytes.withUnsafeMutableBytes { if let base = $0.baseAddress { randombytes_buf(base, $0.count) } }
        return bytes
    }

    /// Overwrites a secret in place so it does not linger in memory.
    public static func wipe(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { if let base = $0.baseAddress { sodium_memzero(base, $0.count) } }
    }

    /// Constant-time comparison of two equally long byte strings.
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        return a.withUnsafeBytes { pa in b.withUnsafeBytes { pb in sodium_memcmp(pa.baseAddress, pb.baseAddress, a.count) == 0 } }
    }
}

/// An Ed25519 key pair (libsodium's `crypto_sign_*`). The secret key is the
/// 64-byte libsodium form (seed followed by public key).
public struct Ed25519KeyPair: Ed25519Signing, Sendable {
    public static let publicKeyBytes = Int(crypto_sign_PUBLICKEYBYTES)
    public static let secretKeyBytes = Int(crypto_sign_SECRETKEYBYTES)
    public static let signatureBytes = Int(crypto_sign_BYTES)

    public let publicKey: [UInt8]
    public let secretKey: [UInt8]

    /// A fresh key pair from the secure random source.
    public static func generate() -> Ed25519KeyPair {
        precondition(Sodium.ready, "libsodium failed to initialise")
        var pk = [UInt8](repeating: 0, count: publicKeyBytes)
        var sk = [UInt8](repeating: 0, count: secretKeyBytes)
        _ = crypto_sign_keypair(&pk, &sk)
        return Ed25519KeyPair(publicKey: pk, secretKey: sk)
    }

    /// Restores a key pair from its 64-byte secret key (seed, then public key); fails if the public
    /// half stored in it is not the one derived from the seed. (libsodium's `crypto_sign_ed25519_sk_to_pk`
    /// only copies the stored half, so the key pair is derived again from the seed and compared.)
    public init(secretKey: [UInt8]) throws(KeyError) {
        guard Sodium.ready else { throw KeyError(message: "libsodium failed to initialise") }
        guard secretKey.count == Self.secretKeyBytes else {
            throw KeyError(message: "an Ed25519 secret key is \(Self.secretKeyBytes) bytes, got \(secretKey.count)")
        }
        let seedBytes = Int(crypto_sign_SEEDBYTES)
        var seed = Array(secretKey[..<seedBytes])
        var derivedPublic = [UInt8](repeating: 0, count: Self.publicKeyBytes)
        var derivedSecret = [UInt8](repeating: 0, count: Self.secretKeyBytes)
        defer {
            Sodium.wipe(&seed)
            Sodium.wipe(&derivedSecret)
        }
        guard crypto_sign_seed_keypair(&derivedPublic, &derivedSecret, seed) == 0 else {
            throw KeyError(message: "cannot derive an Ed25519 key pair from the secret key's seed")
        }
        guard Sodium.constantTimeEqual(Array(secretKey[seedBytes...]), derivedPublic) else {
            throw KeyError(message: "the secret key's public half does not match its seed")
        }
        self.init(publicKey: derivedPublic, secretKey: secretKey)
    }

    private init(publicKey: [UInt8], secretKey: [UInt8]) {
        self.publicKey = publicKey
        self.secretKey = secretKey
    }

    public func sign(_ message: [UInt8]) -> [UInt8] {
        var signature = [UInt8](repeating: 0, count: Self.signatureBytes)
        _ = crypto_sign_detached(&signature, nil, message, UInt64(message.count), secretKey)
        return signature
    }
}

/// A key pair prints, debug-prints and reflects (`print`, `dump`, string interpolation, a logger's
/// metadata, a service group's description of its services) as its TUF key id only: the secret
/// never leaves through a description.
extension Ed25519KeyPair: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The TUF key id (hex SHA-256 of the public key object): public, and names the key.
    public var keyID: String { TUFKey(ed25519PublicKey: publicKey).keyID }
    public var description: String { "Ed25519KeyPair(keyid: \(keyID))" }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["keyid": keyID], displayStyle: .struct) }
}

public struct KeyError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}

/// Ed25519 verification through libsodium.
public struct SodiumVerifier: Ed25519Verifying, Sendable {
    public init() { precondition(Sodium.ready, "libsodium failed to initialise") }

    public func isValid(signature: [UInt8], message: [UInt8], publicKey: [UInt8]) -> Bool {
        guard signature.count == Ed25519KeyPair.signatureBytes,
              publicKey.count == Ed25519KeyPair.publicKeyBytes else { return false }
        return crypto_sign_verify_detached(signature, message, UInt64(message.count), publicKey) == 0
    }
}
