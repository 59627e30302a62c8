import XCTest
@testable import JSONRPC

/// JanssonCodec: jansson text <-> JSONValue, in both directions.
final class JanssonCodecTests: XCTestCase {
    // MARK: - Parsing every JSON type

    func testParsesScalarsAtTopLevel() throws {
        XCTAssertEqual(try JanssonCodec.parse("null"), .null)
        XCTAssertEqual(try JanssonCodec.parse("true"), .bool(true))
        XCTAssertEqual(try JanssonCodec.parse("false"), .bool(false))
        XCTAssertEqual(try JanssonCodec.parse("0"), .int(0))
        XCTAssertEqual(try JanssonCodec.parse("42"), .int(42))
        XCTAssertEqual(try JanssonCodec.parse("-17"), .int(-17))
        XCTAssertEqual(try JanssonCodec.parse("1.5"), .double(1.5))
        XCTAssertEqual(try JanssonCodec.parse("\"hi\""), .string("hi"))
        XCTAssertEqual(try JanssonCodec.parse("[]"), .array([]))
        XCTAssertEqual(try JanssonCodec.parse("{}"), .object(JSONObject()))
    }

    func testSurroundingWhitespaceIsAccepted() throws {
        XCTAssertEqual(try JanssonCodec.parse(" \t\r\n{\"a\" : [ 1 , 2 ] }\r\n "), ["a": [1, 2]])
    }

    func testIntegersAndRealsStayDistinct() throws {
        // "1.0" is a real in JSON text; the gateway's type checks depend on the distinction.
        XCTAssertEqual(try JanssonCodec.parse("1.0"), .double(1.0))
        XCTAssertEqual(try JanssonCodec.parse("1"), .int(1))
        XCTAssertEqual(try JanssonCodec.parse("1e2"), .double(100))
        XCTAssertEqual(try JanssonCodec.parse("-2.5E-3"), .double(-0.0025))
        XCTAssertEqual(try JanssonCodec.parse("0.1"), .double(0.1))
        guard case .double(let negativeZero) = try JanssonCodec.parse("-0.0") else {
            return XCTFail("-0.0 must parse as a real")
        }
        XCTAssertEqual(negativeZero, 0)
        XCTAssertEqual(negativeZero.sign, .minus)
    }

    func testInt64Extremes() throws {
        XCTAssertEqual(try JanssonCodec.parse("9223372036854775807"), .int(Int64.max))
        XCTAssertEqual(try JanssonCodec.parse("-9223372036854775808"), .int(Int64.min))
        XCTAssertEqual(try JanssonCodec.parse("[4294967296,-4294967297]"), [.int(4_294_967_296), .int(-4_294_967_297)])
    }

    func testIntegerBeyondInt64IsReadAsARealNotAWrap() throws {
        // Valid JSON that jansson cannot hold as an integer: it is read as a (large) real, so the
        // schema check rejects it as out of range instead of a wrapped or clamped value slipping by.
        XCTAssertEqual(try JanssonCodec.parse("9223372036854775808"), .double(9_223_372_036_854_775_808.0))
        XCTAssertEqual(try JanssonCodec.parse("-9223372036854775809"), .double(-9_223_372_036_854_775_809.0))
        XCTAssertEqual(try JanssonCodec.parse("[1,99999999999999999999]"), [.int(1), .double(1e20)])
        // Digits inside strings are left alone.
        XCTAssertEqual(
            try JanssonCodec.parse(#"{"s":"99999999999999999999","n":99999999999999999999}"#),
            ["s": "99999999999999999999", "n": .double(1e20)])
    }

    func testRealOverflowIsAParseError() {
        XCTAssertNotNil(TestSupport.parseError("1e400"))
    }

    func testNestedStructures() throws {
        let value = try JanssonCodec.parse(#"{"a":[1,{"b":[[],{}],"c":null}],"d":{"e":{"f":[true,false,"x",2.5]}}}"#)
        let expected: JSONValue = [
            "a": [1, ["b": [[], .object(JSONObject())], "c": nil]],
            "d": ["e": ["f": [true, false, "x", 2.5]]],
        ]
        XCTAssertEqual(value, expected)
        XCTAssertEqual(value["d"]?["e"]?["f"], [true, false, "x", 2.5])
    }

    func testDeepNestingWithinJanssonsLimitParses() throws {
        // jansson caps nesting at 2048; 500 levels is well inside and must come back intact.
        let depth = 500
        let text = String(repeating: "[", count: depth) + "7" + String(repeating: "]", count: depth)
        var value = try JanssonCodec.parse(text)
        for _ in 0..<depth {
            guard case .array(let items) = value, items.count == 1 else { return XCTFail("lost a level") }
            value = items[0]
        }
        XCTAssertEqual(value, .int(7))
    }

    func testNestingBeyondJanssonsLimitIsAnErrorNotACrash() {
        let depth = 5000
        let text = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
        XCTAssertNotNil(TestSupport.parseError(text))
    }

    // MARK: - Strings and Unicode

    func testStringEscapes() throws {
        XCTAssertEqual(try JanssonCodec.parse(#""a\"b\\c\/d\be\ff\ng\rh\ti""#), .string("a\"b\\c/d\u{8}e\u{C}f\ng\rh\ti"))
    }

    func testUnicodeEscapesIncludingSurrogatePairs() throws {
        XCTAssertEqual(try JanssonCodec.parse(#""\u00e9\u4E2D\ud83d\ude00""#), .string("é中😀"))
    }

    func testRawUTF8IncludingAstralCharacters() throws {
        let text = "\"é中😀𝄞\""
        XCTAssertEqual(try JanssonCodec.parse(text), .string("é中😀𝄞"))
        XCTAssertEqual(try JanssonCodec.parse(Array(text.utf8)), .string("é中😀𝄞"))
    }

    func testEmbeddedNULInStringIsKept() throws {
        let value = try JanssonCodec.parse(#"["a\u0000b","\u0000"]"#)
        XCTAssertEqual(value, ["a\u{0}b", "\u{0}"])
        guard case .array(let items) = value, case .string(let first) = items[0] else { return XCTFail() }
        // Not truncated at the NUL: three UTF-8 bytes.
        XCTAssertEqual(Array(first.utf8), [0x61, 0x00, 0x62])
    }

    func testLoneSurrogateIsAParseError() {
        XCTAssertNotNil(TestSupport.parseError(#""\ud800""#))
        XCTAssertNotNil(TestSupport.parseError(#""\udc00x""#))
    }

    func testInvalidUTF8IsAParseError() {
        XCTAssertNotNil(TestSupport.parseError([0x22, 0xFF, 0x22]))
        // Truncated 3-byte sequence.
        XCTAssertNotNil(TestSupport.parseError([0x22, 0xE4, 0xB8, 0x22]))
        // Overlong encoding of "/".
        XCTAssertNotNil(TestSupport.parseError([0x22, 0xC0, 0xAF, 0x22]))
    }

    func testRawControlCharacterInStringIsAParseError() {
        XCTAssertNotNil(TestSupport.parseError("\"a\nb\""))
        XCTAssertNotNil(TestSupport.parseError([0x22, 0x61, 0x00, 0x62, 0x22]))
    }

    func testRawNULByteAfterAValueIsAParseError() {
        // A NUL must not act as a terminator that hides trailing bytes.
        // (jansson 2.14 alone accepts "1\0" and "true\0"; the codec refuses raw NUL up front.)
        XCTAssertEqual(TestSupport.parseError([0x31, 0x00])?.position, 1)
        XCTAssertEqual(TestSupport.parseError(Array("true".utf8) + [0x00])?.position, 4)
        XCTAssertNotNil(TestSupport.parseError([0x7B, 0x7D, 0x00, 0x78]))
        XCTAssertNotNil(TestSupport.parseError([0x00]))
    }

    func testLineSeparatorsAreWrittenAsEscapes() throws {
        XCTAssertEqual(TestSupport.text(.string("a\u{2028}b\u{2029}")), #""a\u2028b\u2029""#)
        // Other characters sharing the E2 lead byte stay raw UTF-8.
        XCTAssertEqual(TestSupport.text(.string("\u{2027}\u{202A}€…")), "\"\u{2027}\u{202A}€…\"")
        // At the very end of the output (as an object key's last character) too.
        var object = JSONObject()
        object["k\u{2028}"] = .string("\u{2029}")
        XCTAssertEqual(TestSupport.text(.object(object)), #"{"k\u2028":"\u2029"}"#)
    }

    func testEmptyStringAndEmptyKey() throws {
        let value = try JanssonCodec.parse(#"{"":"","x":""}"#)
        XCTAssertEqual(TestSupport.keys(value), ["", "x"])
        XCTAssertEqual(value[""], .string(""))
        XCTAssertEqual(value["x"], .string(""))
    }

    // MARK: - Objects

    func testMemberOrderIsKept() throws {
        let value = try JanssonCodec.parse(#"{"zeta":1,"alpha":2,"mid":3,"beta":4,"a":5}"#)
        XCTAssertEqual(TestSupport.keys(value), ["zeta", "alpha", "mid", "beta", "a"])
        XCTAssertEqual(TestSupport.text(value), #"{"zeta":1,"alpha":2,"mid":3,"beta":4,"a":5}"#)
    }

    func testManyMembersKeepOrder() throws {
        // Enough members to force jansson's hashtable to grow several times.
        let names = (0..<300).map { "k\((($0 * 7919) % 1000))" }
        let text = "{" + names.enumerated().map { "\"\($0.element)\":\($0.offset)" }.joined(separator: ",") + "}"
        let value = try JanssonCodec.parse(text)
        XCTAssertEqual(TestSupport.keys(value), names)
        XCTAssertEqual(TestSupport.text(value), text)
    }

    func testDuplicateKeyKeepsLastValue() throws {
        let value = try JanssonCodec.parse(#"{"a":1,"b":2,"a":3}"#)
        XCTAssertEqual(value["a"], .int(3))
        XCTAssertEqual(TestSupport.keys(value)?.filter { $0 == "a" }.count, 1)
    }

    func testUnicodeKeys() throws {
        let value = try JanssonCodec.parse(#"{"\u00e9":1,"😀":2}"#)
        XCTAssertEqual(TestSupport.keys(value), ["é", "😀"])
    }

    // MARK: - Parse errors

    func testEmptyInputIsAParseError() {
        let error = TestSupport.parseError("")
        XCTAssertEqual(error?.position, 0)
        XCTAssertNotNil(TestSupport.parseError("   "))
    }

    func testParseErrorsCarryMessageAndPosition() {
        // (input, byte offset jansson reports: how far it had read when it gave up)
        let cases: [(String, Int)] = [
            ("{\"a\":}", 6),
            ("[1,2,,3]", 6),
            ("[1,2", 4),
            ("tru", 3),
            ("{\"method\": \"x\" \"id\": 1}", 19),
        ]
        for (text, position) in cases {
            guard let error = TestSupport.parseError(text) else { continue }
            XCTAssertEqual(error.position, position, "position for \(text)")
            XCTAssertFalse(error.message.isEmpty, text)
            XCTAssertEqual(error.description, "\(error.message) at byte \(error.position)")
        }
    }

    func testParseErrorPositionGrowsWithPrefix() {
        // The same mistake later in the text is reported later: the position is real, not a constant.
        let early = TestSupport.parseError("[,]")
        let late = TestSupport.parseError("[1,2,3,4,5,6,7,8,9,,]")
        XCTAssertNotNil(early)
        XCTAssertNotNil(late)
        if let early, let late { XCTAssertGreaterThan(late.position, early.position + 10) }
    }

    func testTrailingGarbageIsAParseError() {
        XCTAssertNotNil(TestSupport.parseError("{} x"))
        XCTAssertNotNil(TestSupport.parseError("1 2"))
        XCTAssertNotNil(TestSupport.parseError("{}{}"))
    }

    func testNonJSONSpellingsAreRejected() {
        for text in ["NaN", "Infinity", "-Infinity", "'a'", "{a:1}", "[1,]", "{\"a\":1,}", "01", "+1", ".5", "0x10", "nul"] {
            XCTAssertNotNil(TestSupport.parseError(text), text)
        }
    }

    // MARK: - Serializing

    func testSerializesCompactly() {
        let value: JSONValue = ["a": [1, 2.5, "x", nil, true, false], "b": .object(JSONObject())]
        XCTAssertEqual(TestSupport.text(value), #"{"a":[1,2.5,"x",null,true,false],"b":{}}"#)
    }

    func testSerializesScalarsAtTopLevel() {
        XCTAssertEqual(TestSupport.text(.null), "null")
        XCTAssertEqual(TestSupport.text(.bool(true)), "true")
        XCTAssertEqual(TestSupport.text(.int(Int64.min)), "-9223372036854775808")
        XCTAssertEqual(TestSupport.text(.int(Int64.max)), "9223372036854775807")
        XCTAssertEqual(TestSupport.text(.string("")), "\"\"")
        XCTAssertEqual(TestSupport.text(.array([])), "[]")
    }

    func testNonFiniteRealsBecomeNull() {
        XCTAssertEqual(TestSupport.text([.double(.nan), .double(.infinity), .double(-.infinity)]), "[null,null,null]")
    }

    func testRealsStayRealsThroughARoundTrip() throws {
        // 1.0 must not come back as the integer 1.
        XCTAssertEqual(try JanssonCodec.parse(JanssonCodec.serialize(.double(1.0))), .double(1.0))
        XCTAssertEqual(try JanssonCodec.parse(JanssonCodec.serialize(.double(-0.0))), .double(-0.0))
    }

    func testRealsRoundTripExactly() throws {
        // A double id must be echoed as the same number the client sent.
        let values: [Double] = [
            0.1, 0.1 + 0.2, 1.0 / 3.0, -2.25e-10, 1e300, Double.leastNonzeroMagnitude, 123456789.123456789,
            Double.greatestFiniteMagnitude, -Double.greatestFiniteMagnitude, Double.leastNormalMagnitude,
            1.7e12 + 0.123,
        ]
        for number in values {
            let bytes = JanssonCodec.serialize(.double(number))
            let text = String(decoding: bytes, as: UTF8.self)
            do {
                let back = try JanssonCodec.parse(bytes)
                XCTAssertEqual(back, .double(number), "\(number) serialized as \(text)")
            } catch {
                XCTFail("\(number) serialized as \(text), which does not parse: \(error)")
            }
        }
    }

    func testRoundTripOfAComplexValue() throws {
        var object = JSONObject()
        object["z"] = .int(-1)
        object["é😀"] = .string("line1\nline2\r\ttab \u{0} nul \u{2028}\u{2029} \"q\" \\ /")
        object[""] = .array([.null, .bool(false), .double(-1.25), .int(Int64.max), .int(Int64.min)])
        object["nested"] = ["a": ["b": ["c": []]]]
        let value = JSONValue.object(object)
        let back = try JanssonCodec.parse(JanssonCodec.serialize(value))
        XCTAssertEqual(back, value)
        XCTAssertEqual(TestSupport.keys(back), ["z", "é😀", "", "nested"])
    }

    func testEmptyStringsAndEmptyKeysRoundTrip() throws {
        let value: JSONValue = ["": "", "a": ["": ""]]
        let text = TestSupport.text(value)
        XCTAssertEqual(text, #"{"":"","a":{"":""}}"#)
        XCTAssertEqual(try JanssonCodec.parse(text), value)
    }

    func testEmbeddedNULInStringIsEscapedAndKept() throws {
        let bytes = JanssonCodec.serialize(.string("a\u{0}b"))
        XCTAssertFalse(bytes.contains(0), "raw NUL in output")
        XCTAssertEqual(String(decoding: bytes, as: UTF8.self), #""a\u0000b""#)
        XCTAssertEqual(try JanssonCodec.parse(bytes), .string("a\u{0}b"))
    }

    func testAstralCharactersSerializeAsValidUTF8() throws {
        let bytes = JanssonCodec.serialize(.string("😀𝄞"))
        XCTAssertEqual(try JanssonCodec.parse(bytes), .string("😀𝄞"))
        XCTAssertNotNil(String(validating: bytes, as: UTF8.self))
    }

    func testSerializedOutputNeverContainsALineBreak() throws {
        // The wire is newline-delimited: a raw line break inside a string would split a message.
        // U+2028/U+2029 count too: line-oriented readers that decode text (Python's splitlines,
        // pre-2019 JavaScript) treat them as line ends.
        let nasty = "a\nb\rc\r\nd\u{2028}e\u{2029}f\u{85}g\u{B}h\u{C}i\u{1C}j\u{1E}"
        var key = JSONObject()
        key[nasty] = .string(nasty)
        let values: [JSONValue] = [.string(nasty), .array([.string(nasty), .string("\n")]), .object(key)]
        for value in values {
            let bytes = JanssonCodec.serialize(value)
            XCTAssertFalse(bytes.contains(0x0A), "raw LF in \(String(decoding: bytes, as: UTF8.self))")
            XCTAssertFalse(bytes.contains(0x0D), "raw CR in \(String(decoding: bytes, as: UTF8.self))")
            XCTAssertFalse(bytes.containsSequence([0xE2, 0x80, 0xA8]), "raw U+2028")
            XCTAssertFalse(bytes.containsSequence([0xE2, 0x80, 0xA9]), "raw U+2029")
            XCTAssertFalse(bytes.contains(where: { $0 < 0x20 }), "raw control byte")
            XCTAssertEqual(try JanssonCodec.parse(bytes), value, "round trip")
        }
    }

    func testSerializeToStringMatchesSerialize() {
        let value: JSONValue = ["a": [1, "\n"]]
        XCTAssertEqual(JanssonCodec.serializeToString(value), String(decoding: JanssonCodec.serialize(value), as: UTF8.self))
    }

    func testPrettyOutputParsesBackToTheSameValue() throws {
        let value: JSONValue = ["b": [1, 2], "a": ["c": "d"]]
        let pretty = JanssonCodec.serializeToString(value, pretty: true)
        XCTAssertTrue(pretty.contains("\n"), "pretty output is indented over lines")
        let back = try JanssonCodec.parse(pretty)
        XCTAssertEqual(back, value)
        XCTAssertEqual(TestSupport.keys(back), ["b", "a"])
    }

    func testLargeStringRoundTrips() throws {
        let big = String(repeating: "0123456789abcdef", count: 65_536) + "é"
        let bytes = JanssonCodec.serialize(.string(big))
        XCTAssertEqual(bytes.count, big.utf8.count + 2)
        XCTAssertEqual(try JanssonCodec.parse(bytes), .string(big))
    }

    // MARK: - JSONValue / JSONObject basics the codec relies on

    func testObjectSubscriptSetReplacesInPlaceAndNilRemoves() {
        var object: JSONObject = ["a": 1, "b": 2, "c": 3]
        object["b"] = "x"
        XCTAssertEqual(object.keys, ["a", "b", "c"])
        XCTAssertEqual(object["b"], .string("x"))
        object["a"] = nil
        XCTAssertEqual(object.keys, ["b", "c"])
        XCTAssertNil(object["a"])
    }

    func testObjectEqualityIgnoresOrderButNotContent() {
        let left: JSONObject = ["a": 1, "b": 2]
        let right: JSONObject = ["b": 2, "a": 1]
        XCTAssertEqual(left, right)
        XCTAssertNotEqual(left, ["a": 1, "b": 3] as JSONObject)
        XCTAssertNotEqual(left, ["a": 1] as JSONObject)
        XCTAssertNotEqual(left, ["a": 1, "c": 2] as JSONObject)
    }

    func testTypeNames() {
        let names = ([nil, true, 1, 1.5, "s", [], ["k": 1]] as [JSONValue]).map(\.typeName)
        XCTAssertEqual(names, ["null", "boolean", "integer", "number", "string", "array", "object"])
    }
}

/// Reals print in 15 digits when that gives the same double back, else in 17.
final class RealPrecisionTests: XCTestCase {
    func testShortRealsPrintShort() {
        XCTAssertEqual(JanssonCodec.serializeToString(.double(0.27)), "0.27")
        XCTAssertEqual(JanssonCodec.serializeToString(["uptime": .double(12.345)]), #"{"uptime":12.345}"#)
    }

    func testRealsThatNeed17DigitsKeepThem() throws {
        let sum = 0.1 + 0.2
        let text = JanssonCodec.serializeToString(["id": .double(sum), "other": .double(0.5)])
        XCTAssertEqual(try JanssonCodec.parse(text)["id"], .double(sum), text)
        let big = JanssonCodec.serialize(.double(Double.greatestFiniteMagnitude))
        XCTAssertEqual(try JanssonCodec.parse(big), .double(Double.greatestFiniteMagnitude))
    }
}
