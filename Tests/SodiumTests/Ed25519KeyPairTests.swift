import Sodium
import Testing

/// Restoring a key pair from a stored 64-byte secret (key files keep that form).
struct Ed25519KeyPairTests {
    @Test func aStoredSecretRestoresTheSameKeyPair() throws {
        let original = Ed25519KeyPair.generate()
        let restored = try Ed25519KeyPair(secretKey: original.secretKey)
        #expect(restored.publicKey == original.publicKey)
        let message = Array("hello".utf8)
        #expect(SodiumVerifier().isValid(signature: restored.sign(message), message: message, publicKey: original.publicKey))
    }

    /// A secret whose stored public half was altered would sign with the seed's key while claiming
    /// another: every signature it made would fail to verify under the key it names.
    @Test(arguments: [32, 47, 63])
    func aSecretWhosePublicHalfWasAlteredIsRefused(byte: Int) {
        var secret = Ed25519KeyPair.generate().secretKey
        secret[byte] ^= 0x01
        #expect {
            _ = try Ed25519KeyPair(secretKey: secret)
        } throws: { error in
            (error as? KeyError)?.message == "the secret key's public half does not match its seed"
        }
    }

    @Test func aSecretWhoseSeedWasAlteredIsRefused() {
        var secret = Ed25519KeyPair.generate().secretKey
        secret[0] ^= 0x80
        #expect(throws: KeyError.self) { try Ed25519KeyPair(secretKey: secret) }
    }

    @Test(arguments: [0, 32, 63, 65])
    func aSecretOfTheWrongLengthIsRefused(count: Int) {
        #expect(throws: KeyError.self) { try Ed25519KeyPair(secretKey: [UInt8](repeating: 7, count: count)) }
    }
}
