import Foundation
import Testing
import UpgradeCore

private func parse(_ text: String) throws -> JSONValue { try JSONValue.parse(Array(text.utf8)) }
private func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

@Suite struct JSONParserTests {
    @Test func parsesEveryKindOfValue() throws {
        let value = try parse(#" { "a" : [1, -2, true, false, null, "s\u00e9\n\ud83d\ude00"], "b": {} } "#)
        #expect(
            value
                == .object([
                    "a": [1, -2, true, false, .null, .string("sé\n😀")],
                    "b": .object([:]),
                ]))
        #expect(value["a"]?.arrayValue?.first?.intValue == 1)
        #expect(value["missing"] == nil)
    }

    @Test func parsesInt64Bounds() throws {
        #expect(try parse("9223372036854775807") == .int(Int64.max))
        #expect(try parse("-9223372036854775808") == .int(Int64.min))
        #expect(throws: JSONError.self) { try parse("9223372036854775808") }
        #expect(throws: JSONError.self) { try parse("-9223372036854775809") }
        #expect(throws: JSONError.self) { try parse("123456789012345678901234567890") }
    }

    @Test(arguments: ["1.0", "1e5", "1E5", "-0.5", "0.1", "2e-3"])
    func rejectsFloats(_ text: String) {
        #expect(throws: JSONError.self) { try parse(text) }
        #expect(throws: JSONError.self) { try parse("{\"n\":\(text)}") }
    }

    @Test(arguments: [
        "", " ", "{", "}", "[", "[1,]", "[,1]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "{\"a\":}", "01", "-", "--1", "+1",
        "tru", "nul", "truee", "[1 2]", "\"unterminated", "\"bad escape \\x\"", "\"\\u12\"", "\"\\uZZZZ\"",
        "\"lone \\ud800\"", "\"lone \\udc00\"", "\"\\ud800\\u0041\"", "1 2", "{} x", "NaN", "Infinity", "'a'",
        "{\"a\":1,\"a\":2}",
    ])
    func rejectsMalformedText(_ text: String) {
        #expect(throws: JSONError.self) { try parse(text) }
    }

    @Test func rejectsInvalidUTF8AndRawControlCharacters() {
        let cases: [[UInt8]] = [
            [0x22, 0xFF, 0x22],  // invalid byte
            [0x22, 0xC0, 0xAF, 0x22],  // overlong "/"
            [0x22, 0xED, 0xA0, 0x80, 0x22],  // UTF-8 encoded surrogate
            [0x22, 0xF4, 0x90, 0x80, 0x80, 0x22],  // above U+10FFFF
            [0x22, 0xE2, 0x82, 0x22],  // truncated
            [0x22, 0x0A, 0x22],  // raw newline in a string
            [0x22, 0x00, 0x22],  // raw NUL in a string
            [0xEF, 0xBB, 0xBF, 0x31],  // byte order mark
        ]
        for bytes in cases {
            #expect(throws: JSONError.self, "\(bytes)") { try JSONValue.parse(bytes) }
        }
    }

    @Test func boundsNestingDepth() throws {
        let ok = String(repeating: "[", count: JSONValue.maxNestingDepth) + String(repeating: "]", count: JSONValue.maxNestingDepth)
        _ = try parse(ok)
        let deep = String(repeating: "[", count: JSONValue.maxNestingDepth + 1) + String(repeating: "]", count: JSONValue.maxNestingDepth + 1)
        #expect(throws: JSONError.self) { try parse(deep) }
        // Far too deep for a recursive parser without a bound: must throw, not overflow the stack.
        #expect(throws: JSONError.self) { try parse(String(repeating: "[", count: 200_000)) }
        #expect(throws: JSONError.self) { try parse(String(repeating: "{\"a\":", count: 200_000)) }
    }

    @Test func neverTrapsOnMutatedInput() {
        // Every truncation and every single-byte corruption of a real document either parses or throws.
        let doc = Array(#"{"signed":{"a":[1,-2,"x\"y\\z\u00e9",true,null],"b":{"c":""}},"n":-0}"#.utf8)
        for end in 0...doc.count { _ = try? JSONValue.parse(Array(doc[..<end])) }
        for i in doc.indices {
            for b: UInt8 in [0x00, 0x22, 0x5C, 0x7B, 0x7D, 0x5B, 0x5D, 0x2C, 0x3A, 0x2D, 0x30, 0x2E, 0x65, 0x80, 0xFF] {
                var mutated = doc
                mutated[i] = b
                _ = try? JSONValue.parse(mutated)
            }
        }
    }

    @Test func errorSaysWhere() {
        #expect(throws: JSONError(offset: 5, reason: "floating-point numbers are not allowed")) { try parse("{\"a\":1.5}") }
    }
}

/// Vectors produced by securesystemslib 1.6.0's `encode_canonical` (the
/// encoder python-tuf signs with), hex of its UTF-8 output.
@Suite struct JSONCanonicalTests {
    @Test func sortsKeysAndDropsWhitespace() throws {
        let value = try parse(#"{"b": 1, "a": "x", "c": [true, false, null]}"#)
        #expect(hex(value.canonicalBytes()) == "7b2261223a2278222c2262223a312c2263223a5b747275652c66616c73652c6e756c6c5d7d")
        #expect(String(decoding: value.canonicalBytes(), as: UTF8.self) == #"{"a":"x","b":1,"c":[true,false,null]}"#)
    }

    @Test func escapesOnlyQuoteAndBackslash() throws {
        let value = try parse(#"{"quote": "a\"b\\c/d", "ctl": "line1\nline2\ttab\u0001", "uni": "\u00e9\u20ac\ud83d\ude00"}"#)
        #expect(
            hex(value.canonicalBytes())
                == "7b2263746c223a226c696e65310a6c696e65320974616201222c2271756f7465223a22615c22625c5c632f64222c22756e69223a22c3a9e282acf09f9880227d"
        )
    }

    @Test func sortsKeysByCodePoint() throws {
        let value = try parse(
            #"{"\u00e9": 1, "z": 2, "Z": 3, "\u00ff": 4, "\ud83d\ude00": 5, "\uffff": 6, "a": {"nested": {"k": []}}, "": {}}"#)
        #expect(
            hex(value.canonicalBytes())
                == "7b22223a7b7d2c225a223a332c2261223a7b226e6573746564223a7b226b223a5b5d7d7d2c227a223a322c22c3a9223a312c22c3bf223a342c22efbfbf223a362c22f09f9880223a357d"
        )
    }

    @Test func sortsDecomposedKeysByCodePointNotByNormalisedForm() throws {
        // "e" + U+0301 sorts before "f" by code point, after it once normalised to "é".
        let value = try parse(#"{"f": 1, "e\u0301": 2}"#)
        #expect(hex(value.canonicalBytes()) == "7b2265cc81223a322c2266223a317d")
    }

    @Test func writesIntegersInDecimal() throws {
        let value = try parse("[-9223372036854775808, 9223372036854775807, 0, -1]")
        #expect(hex(value.canonicalBytes()) == "5b2d393232333337323033363835343737353830382c393232333337323033363835343737353830372c302c2d315d")
        #expect(try parse("-0").canonicalBytes() == Array("0".utf8))
    }

    @Test func preservesDecomposedCharacters() throws {
        // "e" + combining acute must not be normalised to "é": the signature covers the exact code points.
        let value = try parse("\"e\\u0301\"")
        #expect(value.canonicalBytes() == [0x22, 0x65, 0xCC, 0x81, 0x22])
    }

    @Test func fileFormEscapesControlCharactersAndParsesBack() throws {
        let value = try parse(#"{"d":"a\nb\u0000c\"","k":1}"#)
        let file = value.canonicalFileBytes()
        #expect(String(decoding: file, as: UTF8.self) == #"{"d":"a\u000ab\u0000c\"","k":1}"#)
        #expect(try JSONValue.parse(file) == value)
        #expect(try JSONValue.parse(file).canonicalBytes() == value.canonicalBytes())
        // Without control characters both forms are the same bytes.
        let plain = try parse(#"{"z":[1,"x"],"a":null}"#)
        #expect(plain.canonicalFileBytes() == plain.canonicalBytes())
    }

    @Test func canonicalFormIsAFixedPoint() throws {
        let value = try parse(#"{"signed":{"b":[{"y":1,"x":2}],"a":"\\"}}"#)
        let once = value.canonicalBytes()
        #expect(try JSONValue.parse(once).canonicalBytes() == once)
    }
}
