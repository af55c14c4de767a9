import Crypto

/// The self-certifying name of a server: RFC 4648 base32 (lowercase, no
/// padding) of SHA-256 over the exact bytes of its `1.root.json`. 52 characters.
public enum ServerID {
    public static let length = 52

    public static func of(initialRoot bytes: [UInt8]) -> String {
        base32(Array(SHA256.hash(data: bytes)))
    }

    /// True for exactly the strings `of(initialRoot:)` can produce: 52
    /// characters from `a-z2-7`, the unused low bits of the last one zero.
    public static func isWellFormed(_ id: String) -> Bool {
        let chars = Array(id.utf8)
        guard chars.count == length, chars.allSatisfy({ base32Value($0) != nil }) else { return false }
        // 256 bits = 51 * 5 + 1: the last character carries one bit.
        return base32Value(chars[length - 1])! & 0x0F == 0
    }

    /// RFC 4648 base32, lowercase alphabet, no padding.
    public static func base32(_ data: [UInt8]) -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567".utf8)
        var out: [UInt8] = []
        out.reserveCapacity((data.count * 8 + 4) / 5)
        var buffer: UInt32 = 0
        var bits = 0
        for byte in data {
            buffer = (buffer << 8) | UInt32(byte)
            bits += 8
            while bits >= 5 {
                bits -= 5
                out.append(alphabet[Int((buffer >> UInt32(bits)) & 0x1F)])
            }
        }
        if bits > 0 {
            out.append(alphabet[Int((buffer << UInt32(5 - bits)) & 0x1F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func base32Value(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "a")...UInt8(ascii: "z"): c - UInt8(ascii: "a")
        case UInt8(ascii: "2")...UInt8(ascii: "7"): c - UInt8(ascii: "2") + 26
        default: nil
        }
    }
}
