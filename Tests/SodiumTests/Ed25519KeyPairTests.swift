import Foundation
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

/// No description of a key pair — print, debug print, dump, string interpolation, or the default
/// description of a value that holds one (how a service group logs its services) — shows its secret.
struct KeyPairDescriptionTests {
    struct Holder { let name: String; let key: Ed25519KeyPair }

    /// Every way the secret's bytes could be written: hex (both cases), base64, and Swift's array form.
    static func leaks(of secret: [UInt8], in text: String) -> [String] {
        let seed = Array(secret[..<32])
        var forms: [String] = []
        for window in stride(from: 0, through: seed.count - 8, by: 4) {
            let part = Array(seed[window..<(window + 8)])
            let hex = part.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
            forms += [hex, hex.uppercased(), part.map(String.init).joined(separator: ", ")]
        }
        forms.append(String(Data(seed).base64EncodedString().prefix(12)))
        return forms.filter { text.contains($0) }
    }

    @Test func aKeyPairNeverPrintsOrReflectsItsSecret() {
        let key = Ed25519KeyPair.generate()
        var dumped = ""
        dump(Holder(name: "timestamp", key: key), to: &dumped)
        let texts = [
            "\(key)", String(describing: key), String(reflecting: key), dumped,
            "\(Holder(name: "timestamp", key: key))", String(reflecting: Holder(name: "timestamp", key: key)),
            "\([key])", "\(Mirror(reflecting: key).children.map { "\($0.label ?? ""): \($0.value)" })",
        ]
        for text in texts {
            #expect(Self.leaks(of: key.secretKey, in: text).isEmpty, "secret in: \(text)")
            #expect(text.contains(key.keyID), "the key id names the key: \(text)")
        }
    }
}
