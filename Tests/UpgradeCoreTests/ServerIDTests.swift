import Testing
import UpgradeCore

/// Vectors: `base64.b32encode(hashlib.sha256(data).digest()).decode().lower().rstrip("=")`.
@Suite struct ServerIDTests {
    @Test func knownVectors() {
        #expect(ServerID.of(initialRoot: []) == "4oymiquy7qobjgx36tejs35zeqt24qpemsnzgtfeswmrw6csxbkq")
        #expect(ServerID.of(initialRoot: Array("upgradefs".utf8)) == "jssmba24kamjcymxxkt2frxga5senekpbeaotubrzhopblkonbaq")
        #expect(ServerID.of(initialRoot: (0...255).map { UInt8($0) }) == "icx7f2os3cjc4r5p2rsi42lhjfyvq6c7xuo2q4hhcebgnp4ujcaa")
    }

    @Test func base32MatchesRFC4648TestVectors() {
        // RFC 4648 §10, lowercased, padding removed.
        let vectors = ["": "", "f": "my", "fo": "mzxq", "foo": "mzxw6", "foob": "mzxw6yq", "fooba": "mzxw6ytb", "foobar": "mzxw6ytboi"]
        for (input, output) in vectors {
            #expect(ServerID.base32(Array(input.utf8)) == output)
        }
    }

    @Test func idsAreWellFormed() {
        let id = ServerID.of(initialRoot: Array("root".utf8))
        #expect(id.count == 52)
        #expect(ServerID.isWellFormed(id))
    }

    @Test func malformedIDsAreRefused() {
        let good = "4oymiquy7qobjgx36tejs35zeqt24qpemsnzgtfeswmrw6csxbkq"
        #expect(ServerID.isWellFormed(good))
        #expect(!ServerID.isWellFormed(good.uppercased()))
        #expect(!ServerID.isWellFormed(String(good.dropLast())))
        #expect(!ServerID.isWellFormed(good + "a"))
        #expect(!ServerID.isWellFormed(String(good.dropLast()) + "1"))  // not in the alphabet
        #expect(!ServerID.isWellFormed(String(good.dropLast()) + "r"))  // non-zero padding bits
        #expect(!ServerID.isWellFormed(""))
    }
}
