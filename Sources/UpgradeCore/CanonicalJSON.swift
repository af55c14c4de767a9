/// OLPC canonical JSON exactly as securesystemslib's `encode_canonical` writes
/// it (the bytes TUF signatures cover): object keys sorted by code point, no
/// whitespace, strings escape only `"` and `\` and are otherwise raw UTF-8,
/// integers in decimal, no floats.
extension JSONValue {
    public func canonicalBytes() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        write(to: &out, escapeControlCharacters: false)
        return out
    }

    /// The canonical form, except that control characters (U+0000–U+001F) in
    /// strings are written as `\u00XX` escapes. For every document without
    /// control characters this is byte-identical to `canonicalBytes()`;
    /// otherwise it is still what a strict JSON parser (Python's `json.loads`,
    /// `JSONValue.parse`) accepts, and parsing it yields the same value, so
    /// signatures over the canonical form still verify. Metadata files are
    /// written in this form.
    public func canonicalFileBytes() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        write(to: &out, escapeControlCharacters: true)
        return out
    }

    private func write(to out: inout [UInt8], escapeControlCharacters: Bool) {
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .int(let i): out.append(contentsOf: String(i).utf8)
        case .string(let s): Self.writeString(s, to: &out, escapeControlCharacters: escapeControlCharacters)
        case .array(let elements):
            out.append(UInt8(ascii: "["))
            for (i, element) in elements.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                element.write(to: &out, escapeControlCharacters: escapeControlCharacters)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            for (i, (key, value)) in Self.canonicallySorted(members).enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                Self.writeString(key, to: &out, escapeControlCharacters: escapeControlCharacters)
                out.append(UInt8(ascii: ":"))
                value.write(to: &out, escapeControlCharacters: escapeControlCharacters)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    /// Python's `sorted(dict.items())` orders keys by code point, which is
    /// the byte order of their UTF-8 forms. (Swift's `String <` would not do:
    /// it compares by canonical equivalence.)
    static func canonicallySorted(_ members: [String: JSONValue]) -> [(String, JSONValue)] {
        members.map { (Array($0.key.utf8), $0.key, $0.value) }
            .sorted { $0.0.lexicographicallyPrecedes($1.0) }
            .map { ($0.1, $0.2) }
    }

    private static func writeString(_ s: String, to out: inout [UInt8], escapeControlCharacters: Bool) {
        out.append(UInt8(ascii: "\""))
        for byte in s.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                out.append(UInt8(ascii: "\\"))
                out.append(byte)
            case 0x00..<0x20 where escapeControlCharacters:
                let hex: [UInt8] = Array("0123456789abcdef".utf8)
                out.append(contentsOf: "\\u00".utf8)
                out.append(hex[Int(byte >> 4)])
                out.append(hex[Int(byte & 0x0F)])
            default:
                out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
