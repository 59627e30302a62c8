import XCTest

@testable import JSONRPC

/// Issue 6: no string a peer or a client controls may be taken for a placeholder of the
/// long-string splice, in either direction. Every case compares the spliced path with jansson
/// alone and checks the round trip.
final class SpliceForgeryTests: XCTestCase {
    let long = String(repeating: "QUJD", count: 150)  // 600 plain characters
    let xs = String(repeating: "X", count: 600)

    /// Spliced printing gives jansson's bytes, and they read back as the value (unless a key
    /// holds a NUL: jansson prints those but refuses to read them).
    private func assertPrintsFaithfully(_ value: JSONValue, readsBack: Bool = true, file: StaticString = #filePath, line: UInt = #line) {
        let spliced = JanssonCodec.serialize(value)
        let plain = JanssonCodec.serialize(value, splicing: false)
        XCTAssertEqual(String(decoding: spliced, as: UTF8.self), String(decoding: plain, as: UTF8.self), file: file, line: line)
        guard readsBack else { return }
        XCTAssertEqual(try? JanssonCodec.parse(spliced), value, "round trip", file: file, line: line)
        XCTAssertEqual(try? spliced.withUnsafeBytes { try JanssonCodec.parse($0, splicing: false) }, value, "round trip, plain parse", file: file, line: line)
    }

    /// Spliced parsing gives what jansson alone gives.
    private func assertParsesFaithfully(_ text: String, file: StaticString = #filePath, line: UInt = #line) throws -> JSONValue {
        let bytes = Array(text.utf8)
        let spliced = try bytes.withUnsafeBytes { try JanssonCodec.parse($0) }
        let plain = try bytes.withUnsafeBytes { try JanssonCodec.parse($0, splicing: false) }
        XCTAssertEqual(spliced, plain, file: file, line: line)
        return spliced
    }

    // The reported peer-data case: handle 1's text names placeholder 0, handle 2's answer is long.
    func testPeerTextWithAnEscapedLookingMarkerBesideALongAnswer() {
        let batch: JSONValue = [
            RPCResponse.success(id: 1, result: ["data": #"see \u0000tcpgw:0 here"#, "encoding": "utf8", "eof": false]),
            RPCResponse.success(id: 2, result: ["data": .string(long), "encoding": "base64", "eof": false]),
        ]
        assertPrintsFaithfully(batch)
    }

    func testPeerTextWithARealNULMarkerBesideALongAnswer() {
        let batch: JSONValue = [
            RPCResponse.success(id: 1, result: ["data": "see \u{0}tcpgw:0 here", "encoding": "utf8", "eof": false]),
            RPCResponse.success(id: 2, result: ["data": .string(long), "encoding": "base64", "eof": false]),
        ]
        assertPrintsFaithfully(batch)
    }

    // The reported client case: a long id and an error message that quotes the method name.
    func testALongIdIsEchoedWhenTheMethodNameHoldsAMarker() throws {
        let line = #"{"jsonrpc":"2.0","id":"\#(xs)","method":"a\u0000tcpgw:0"}"#
        guard case .single(.request(let request)) = TestSupport.decode(line) else { return XCTFail("not a request") }
        XCTAssertEqual(request.id, .string(xs))
        XCTAssertEqual(request.method, "a\u{0}tcpgw:0")
        let answer = RPCResponse.failure(id: request.id ?? .null, error: .methodNotFound(request.method))
        assertPrintsFaithfully(answer)
        let back = try JanssonCodec.parse(JanssonCodec.serialize(answer))
        XCTAssertEqual(back["id"], .string(xs))
        XCTAssertEqual(back["error"]?["message"], answer["error"]?["message"])
    }

    func testALongIdIsEchoedWhenTheMethodNameHoldsABackslashMarker() throws {
        // No NUL here: the parse splices the id, and the printed method name holds the
        // marker's escaped text after a backslash.
        let line = #"{"jsonrpc":"2.0","id":"\#(xs)","method":"a\\u0000tcpgw:0"}"#
        guard case .single(.request(let request)) = TestSupport.decode(line) else { return XCTFail("not a request") }
        XCTAssertEqual(request.id, .string(xs))
        XCTAssertEqual(request.method, #"a\u0000tcpgw:0"#)
        assertPrintsFaithfully(RPCResponse.failure(id: request.id ?? .null, error: .methodNotFound(request.method)))
    }

    func testMarkersInKeysValuesAndEveryIndex() {
        let forged = ["\u{0}tcpgw:0", "\u{0}tcpgw:1", "\u{0}tcpgw:", "\u{0}tcpgw:00", "x\u{0}tcpgw:0",
                      #"\u0000tcpgw:0"#, #"\\u0000tcpgw:1"#, #"a\u0000tcpgw:12b"#, "\u{0}tcpgw:0\u{0}tcpgw:1",
                      "\u{0}tcpgw:99999999999999999999999"]
        for text in forged {
            assertPrintsFaithfully([.string(text), .string(long), .string(text), .string(long + "y")])
            let nulKey = text.contains("\u{0}")
            assertPrintsFaithfully(.object([text: .string(long), "b": .string(text)]), readsBack: !nulKey)
            assertPrintsFaithfully(.object(["a": [[.string(long)], [.string(text)]], text: [.string(long + "z")]]), readsBack: !nulKey)
            assertPrintsFaithfully([.string(long), .object([text: .object([text: .string(long)])])], readsBack: !nulKey)
        }
    }

    func testManyLongStringsAroundForgedMarkers() {
        var items: [JSONValue] = []
        for n in 0..<30 {
            items.append(.string(String(repeating: Character(UnicodeScalar(UInt8(65 + n % 26))), count: 512 + n)))
            items.append(.string("x\u{0}tcpgw:\(29 - n)"))
            items.append(.string(#"\u0000tcpgw:"# + String(n)))
        }
        assertPrintsFaithfully(.array(items))
        assertPrintsFaithfully(.object(["list": .array(items), "n": 1.5]))
        // And with strings that are exactly placeholders, which used to send all to jansson.
        assertPrintsFaithfully(.array(items + [.string("\u{0}tcpgw:0"), .string(long)]))
    }

    // Parse side: what a client sends.
    func testParsedMarkersInKeysAndValuesStayText() throws {
        for text in [#"["\\u0000tcpgw:0","\#(long)"]"#, #"{"\\u0000tcpgw:0":"\#(long)"}"#,
                     #"{"y":"\#(long)","x":"\u0000tcpgw:0"}"#, #"[["\#(long)"],[["\u0000tcpgw:0"]]]"#,
                     #"{"a":"\#(long)","a":"\u0000tcpgw:0"}"#, #"{"a":"\u0000tcpgw:0","a":"\#(long)"}"#] {
            let value = try assertParsesFaithfully(text)
            assertPrintsFaithfully(value)
        }
    }

    func testANULInAKeyIsTheSameParseErrorEitherWay() {
        // jansson refuses NULs in keys; the spliced path must not turn that into a value.
        let bytes = Array(#"{"\u0000tcpgw:0":"\#(long)","x":"\#(long)"}"#.utf8)
        let errors = [true, false].map { splicing in
            bytes.withUnsafeBytes { raw -> JSONParseError? in
                do { _ = try JanssonCodec.parse(raw, splicing: splicing); return nil } catch { return error as? JSONParseError }
            }
        }
        XCTAssertNotNil(errors[0])
        XCTAssertEqual(errors[0], errors[1])
    }

    func testDuplicateKeysWithLongValuesKeepTheLast() throws {
        let other = String(repeating: "Zz", count: 300)
        let value = try assertParsesFaithfully(#"{"d":"\#(long)","e":1,"d":"\#(other)","f":["\#(long)"]}"#)
        XCTAssertEqual(value["d"], .string(other))
        XCTAssertEqual(value["f"], [.string(long)])
    }

    func testLongKeysAndValuesThatAreEqual() throws {
        let value = try assertParsesFaithfully(#"{"\#(long)":"\#(long)","k":{"\#(long)" :"\#(long)"}}"#)
        XCTAssertEqual(value[long], .string(long))
        XCTAssertEqual(value["k"]?[long], .string(long))
        assertPrintsFaithfully(value)
    }

    func testPlaceholderNumbersCannotOverflow() {
        let text = Array("\u{0}tcpgw:99999999999999999999999999".utf8)
        XCTAssertNil(text.withUnsafeBytes { LongStringSplice.pieceIndex($0) })
    }
}

/// The paste itself: it fills only the strings at the recorded positions, and refuses output
/// that does not have the expected shape there.
final class SplicePasteTests: XCTestCase {
    private func paste(_ text: String, _ strings: [String], _ ordinals: [Int]) -> String? {
        LongStringSplice.paste(Array(text.utf8), strings, at: ordinals).map { String(decoding: $0, as: UTF8.self) }
    }

    func testFillsByPositionNotByLooks() {
        let out = #"{"a":"\\u0000tcpgw:0","\u0000tcpgw:0":"\u0000tcpgw:0","b":["\u0000tcpgw:1"]}"#
        // Strings in writing order: 0 a, 1 \\u0000tcpgw:0, 2 the NUL key, 3 value, 4 b, 5 the array's.
        XCTAssertEqual(paste(out, ["L0", "L1"], [3, 5]), #"{"a":"\\u0000tcpgw:0","\u0000tcpgw:0":"L0","b":["L1"]}"#)
    }

    func testRefusesWhatIsNotAPlaceholderThere() {
        let out = #"["x","\u0000tcpgw:0","\u0000tcpgw:1"]"#
        XCTAssertNil(paste(out, ["L"], [0]), "not a placeholder")
        XCTAssertNil(paste(out, ["L"], [2]), "placeholder 1 where 0 is expected")
        XCTAssertNil(paste(out, ["L", "M"], [1, 3]), "fewer strings than recorded")
        XCTAssertNil(paste(#"["\u0000tcpgw:0"#, ["L"], [0]), "unterminated")
        XCTAssertNil(paste(#"["\u0000tcpgw:0\"#, ["L"], [0]), "ends inside an escape")
        XCTAssertNil(paste(#"[\"\u0000tcpgw:0"]"#, ["L"], [0]), "a backslash outside a string")
        XCTAssertNil(paste(#"["\u0000tcpgw:00"]"#, ["L"], [0]), "extra digit")
        XCTAssertEqual(paste(out, ["L", "M"], [1, 2]), #"["x","L","M"]"#)
    }
}
