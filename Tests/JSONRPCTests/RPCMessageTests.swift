import XCTest
@testable import JSONRPC

/// RPCMessage.decode: the JSON-RPC 2.0 envelope checks, following section 7 ("Examples") of the spec
/// with the gateway's method names. Which methods exist is the dispatcher's business, not the decoder's.
final class RPCMessageTests: XCTestCase {
    // MARK: - Helpers

    private func request(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> RPCRequest? {
        guard case .single(.request(let request)) = TestSupport.decode(text) else {
            XCTFail("expected a single request, got \(TestSupport.decode(text))", file: file, line: line)
            return nil
        }
        return request
    }

    /// Asserts `text` decodes to one invalid entry with code -32600 and the given echoed id.
    private func assertInvalid(_ text: String, id: JSONValue, file: StaticString = #filePath, line: UInt = #line) {
        guard case .single(.invalid(let echoed, let error)) = TestSupport.decode(text) else {
            return XCTFail("expected an invalid single entry, got \(TestSupport.decode(text))", file: file, line: line)
        }
        XCTAssertEqual(echoed, id, "echoed id", file: file, line: line)
        XCTAssertEqual(error.code, -32600, file: file, line: line)
        XCTAssertNil(error.data, file: file, line: line)
        XCTAssertFalse(error.message.isEmpty, file: file, line: line)
    }

    private func assertFailure(_ text: String, code: Int, file: StaticString = #filePath, line: UInt = #line) {
        guard case .failure(let error) = TestSupport.decode(text) else {
            return XCTFail("expected a failure, got \(TestSupport.decode(text))", file: file, line: line)
        }
        XCTAssertEqual(error.code, code, file: file, line: line)
    }

    private func batch(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> [RPCEntry] {
        guard case .batch(let entries) = TestSupport.decode(text) else {
            XCTFail("expected a batch, got \(TestSupport.decode(text))", file: file, line: line)
            return []
        }
        return entries
    }

    // MARK: - Spec section 7

    func testCallWithPositionalParameters() {
        let first = request(#"{"jsonrpc": "2.0", "method": "tcp.send", "params": [42, 23], "id": 1}"#)
        XCTAssertEqual(first, RPCRequest(id: 1, method: "tcp.send", params: [42, 23]))
        XCTAssertEqual(first?.isNotification, false)
        let second = request(#"{"jsonrpc": "2.0", "method": "tcp.send", "params": [23, 42], "id": 2}"#)
        XCTAssertEqual(second?.params, [23, 42])
        XCTAssertEqual(second?.id, .int(2))
    }

    func testCallWithNamedParametersKeepsParamOrder() {
        let call = request(#"{"jsonrpc": "2.0", "method": "tcp.send", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}"#)
        XCTAssertEqual(call?.id, .int(3))
        XCTAssertEqual(call?.params, ["subtrahend": 23, "minuend": 42])
        XCTAssertEqual(TestSupport.keys(call?.params), ["subtrahend", "minuend"])
        let other = request(#"{"jsonrpc": "2.0", "method": "tcp.send", "params": {"minuend": 42, "subtrahend": 23}, "id": 4}"#)
        XCTAssertEqual(TestSupport.keys(other?.params), ["minuend", "subtrahend"])
    }

    func testNotifications() {
        let update = request(#"{"jsonrpc": "2.0", "method": "tcp.update", "params": [1,2,3,4,5]}"#)
        XCTAssertEqual(update, RPCRequest(id: nil, method: "tcp.update", params: [1, 2, 3, 4, 5]))
        XCTAssertEqual(update?.isNotification, true)
        let foobar = request(#"{"jsonrpc": "2.0", "method": "tcp.foobar"}"#)
        XCTAssertEqual(foobar?.isNotification, true)
        XCTAssertNil(foobar?.params)
    }

    func testNonExistentMethodStillDecodes() {
        // -32601 is the dispatcher's answer; the envelope is fine.
        XCTAssertEqual(request(#"{"jsonrpc": "2.0", "method": "foobar", "id": "1"}"#),
                       RPCRequest(id: "1", method: "foobar"))
    }

    func testInvalidJSON() {
        assertFailure(#"{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]"#, code: -32700)
    }

    func testInvalidRequestObject() {
        // method 1, params "bar": invalid, and no id to echo.
        assertInvalid(#"{"jsonrpc": "2.0", "method": 1, "params": "bar"}"#, id: .null)
    }

    func testBatchWithInvalidJSON() {
        assertFailure(#"[ {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"}, {"jsonrpc": "2.0", "method" ]"#,
                      code: -32700)
    }

    func testEmptyArray() {
        assertFailure("[]", code: -32600)
        assertFailure(" [ ] ", code: -32600)
    }

    func testInvalidBatchOfOne() {
        let entries = batch("[1]")
        XCTAssertEqual(entries.count, 1)
        guard case .invalid(let id, let error)? = entries.first else { return XCTFail("expected invalid entry") }
        XCTAssertEqual(id, .null)
        XCTAssertEqual(error.code, -32600)
    }

    func testInvalidBatchOfThree() {
        let entries = batch("[1,2,3]")
        XCTAssertEqual(entries.count, 3)
        for entry in entries {
            guard case .invalid(let id, let error) = entry else { return XCTFail("expected invalid entry, got \(entry)") }
            XCTAssertEqual(id, .null)
            XCTAssertEqual(error.code, -32600)
        }
    }

    func testMixedBatchKeepsOrderAndKinds() {
        let entries = batch("""
            [
                {"jsonrpc": "2.0", "method": "tcp.sum", "params": [1,2,4], "id": "1"},
                {"jsonrpc": "2.0", "method": "tcp.notifyHello", "params": [7]},
                {"jsonrpc": "2.0", "method": "tcp.send", "params": [42,23], "id": "2"},
                {"foo": "boo"},
                {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
                {"jsonrpc": "2.0", "method": "tcp.getData", "id": "9"}
            ]
            """)
        guard entries.count == 6 else { return XCTFail("expected 6 entries, got \(entries.count)") }
        XCTAssertEqual(entries[0], .request(RPCRequest(id: "1", method: "tcp.sum", params: [1, 2, 4])))
        XCTAssertEqual(entries[1], .request(RPCRequest(id: nil, method: "tcp.notifyHello", params: [7])))
        XCTAssertEqual(entries[2], .request(RPCRequest(id: "2", method: "tcp.send", params: [42, 23])))
        guard case .invalid(let id, let error) = entries[3] else { return XCTFail("entry 3 must be invalid") }
        XCTAssertEqual(id, .null)
        XCTAssertEqual(error.code, -32600)
        XCTAssertEqual(entries[4], .request(RPCRequest(id: "5", method: "foo.get", params: ["name": "myself"])))
        XCTAssertEqual(entries[5], .request(RPCRequest(id: "9", method: "tcp.getData")))
    }

    func testAllNotificationBatch() {
        let entries = batch("""
            [{"jsonrpc": "2.0", "method": "tcp.notifySum", "params": [1,2,4]},{"jsonrpc": "2.0", "method": "tcp.notifyHello", "params": [7]}]
            """)
        XCTAssertEqual(entries.count, 2)
        for entry in entries {
            guard case .request(let request) = entry else { return XCTFail("expected request, got \(entry)") }
            XCTAssertTrue(request.isNotification)
        }
    }

    // MARK: - ids

    func testAcceptedIdTypes() {
        XCTAssertEqual(request(#"{"jsonrpc":"2.0","method":"m","id":"abc"}"#)?.id, .string("abc"))
        XCTAssertEqual(request(#"{"jsonrpc":"2.0","method":"m","id":""}"#)?.id, .string(""))
        XCTAssertEqual(request(#"{"jsonrpc":"2.0","method":"m","id":-7}"#)?.id, .int(-7))
        XCTAssertEqual(request(#"{"jsonrpc":"2.0","method":"m","id":9223372036854775807}"#)?.id, .int(Int64.max))
        XCTAssertEqual(request(#"{"jsonrpc":"2.0","method":"m","id":1.5}"#)?.id, .double(1.5))
    }

    func testNullIdIsARequestNotANotification() {
        // Only a missing id makes a notification; an explicit null must still be answered.
        let call = request(#"{"jsonrpc":"2.0","method":"m","id":null}"#)
        XCTAssertEqual(call?.id, .null)
        XCTAssertEqual(call?.isNotification, false)
    }

    func testIdIsEchoedWhenReadableEvenIfRequestIsInvalid() {
        assertInvalid(#"{"jsonrpc":"1.0","method":"m","id":7}"#, id: 7)
        assertInvalid(#"{"method":"m","id":"x"}"#, id: "x")
        assertInvalid(#"{"jsonrpc":"2.0","id":2.5}"#, id: 2.5)
        assertInvalid(#"{"jsonrpc":"2.0","method":["m"],"id":8}"#, id: 8)
        assertInvalid(#"{"jsonrpc":"2.0","method":"m","params":"p","id":9}"#, id: 9)
    }

    func testUnusableIdIsReplacedByNull() {
        assertInvalid(#"{"jsonrpc":"2.0","method":"m","id":{"a":1}}"#, id: .null)
        assertInvalid(#"{"jsonrpc":"2.0","method":"m","id":[1]}"#, id: .null)
        assertInvalid(#"{"jsonrpc":"2.0","method":"m","id":true}"#, id: .null)
        assertInvalid(#"{"jsonrpc":"2.0","method":"m","id":false}"#, id: .null)
    }

    // MARK: - jsonrpc / method / params

    func testJsonrpcMemberMustBeExactly20() {
        assertInvalid(#"{"method":"m","id":1}"#, id: 1)
        assertInvalid(#"{"jsonrpc":"1.0","method":"m","id":1}"#, id: 1)
        assertInvalid(#"{"jsonrpc":2.0,"method":"m","id":1}"#, id: 1)
        assertInvalid(#"{"jsonrpc":"2","method":"m","id":1}"#, id: 1)
        assertInvalid(#"{"jsonrpc":"2.0 ","method":"m","id":1}"#, id: 1)
        assertInvalid(#"{"jsonrpc":null,"method":"m","id":1}"#, id: 1)
    }

    func testMethodMustBeAString() {
        assertInvalid(#"{"jsonrpc":"2.0","id":1}"#, id: 1)
        assertInvalid(#"{"jsonrpc":"2.0","method":1,"id":1}"#, id: 1)
        assertInvalid(#"{"jsonrpc":"2.0","method":null,"id":1}"#, id: 1)
        assertInvalid(#"{"jsonrpc":"2.0","method":{"name":"m"},"id":1}"#, id: 1)
        assertInvalid(#"{"jsonrpc":"2.0","method":true,"id":1}"#, id: 1)
    }

    func testParamsMustBeStructured() {
        assertInvalid(#"{"jsonrpc":"2.0","method":"m","params":"bar","id":1}"#, id: 1)
        assertInvalid(#"{"jsonrpc":"2.0","method":"m","params":3,"id":1}"#, id: 1)
        assertInvalid(#"{"jsonrpc":"2.0","method":"m","params":1.5,"id":1}"#, id: 1)
        assertInvalid(#"{"jsonrpc":"2.0","method":"m","params":true,"id":1}"#, id: 1)
        assertInvalid(#"{"jsonrpc":"2.0","method":"m","params":null,"id":1}"#, id: 1)
        // Invalid params on a would-be notification: still invalid, id null.
        assertInvalid(#"{"jsonrpc":"2.0","method":"m","params":"x"}"#, id: .null)
    }

    func testEmptyStructuredParamsAreKept() {
        XCTAssertEqual(request(#"{"jsonrpc":"2.0","method":"m","params":[],"id":1}"#)?.params, .array([]))
        XCTAssertEqual(request(#"{"jsonrpc":"2.0","method":"m","params":{},"id":1}"#)?.params, .object(JSONObject()))
    }

    func testMemberOrderInTheEnvelopeDoesNotMatter() {
        XCTAssertEqual(request(#"{"id":5,"params":{"a":1},"method":"tcp.x","jsonrpc":"2.0"}"#),
                       RPCRequest(id: 5, method: "tcp.x", params: ["a": 1]))
    }

    func testNonObjectSingleMessagesAreInvalid() {
        for text in ["1", "\"x\"", "null", "true", "1.5"] {
            assertInvalid(text, id: .null)
        }
    }

    func testNestedArrayInsideBatchIsOneInvalidEntry() {
        let entries = batch(#"[[{"jsonrpc":"2.0","method":"m","id":1}],{"jsonrpc":"2.0","method":"m","id":2}]"#)
        XCTAssertEqual(entries.count, 2)
        guard entries.count == 2, case .invalid(let id, let error) = entries[0] else { return XCTFail() }
        XCTAssertEqual(id, .null)
        XCTAssertEqual(error.code, -32600)
        XCTAssertEqual(entries[1], .request(RPCRequest(id: 2, method: "m")))
    }

    func testBatchEntryEchoesItsOwnId() {
        let entries = batch(#"[{"jsonrpc":"1.0","method":"m","id":"a"},{"jsonrpc":"2.0","method":"m","id":{}}]"#)
        XCTAssertEqual(entries.count, 2)
        guard entries.count == 2 else { return }
        guard case .invalid(let first, _) = entries[0], case .invalid(let second, _) = entries[1] else {
            return XCTFail("both entries must be invalid: \(entries)")
        }
        XCTAssertEqual(first, "a")
        XCTAssertEqual(second, .null)
    }

    func testParseErrorsAndEmptyLinesAreMinus32700() {
        assertFailure("", code: -32700)
        assertFailure("{", code: -32700)
        assertFailure("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":1} trailing", code: -32700)
        assertFailure("[1,2", code: -32700)
    }

    func testParseErrorMessageNamesThePosition() {
        guard case .failure(let error) = TestSupport.decode("[1,2,,3]") else { return XCTFail() }
        XCTAssertTrue(error.message.hasPrefix("parse error: "), error.message)
        XCTAssertTrue(error.message.contains("at byte "), error.message)
        XCTAssertNil(error.data)
    }

    func testDecodingAValueDirectly() {
        XCTAssertEqual(RPCMessage.decode(["jsonrpc": "2.0", "method": "m"] as JSONValue),
                       .single(.request(RPCRequest(id: nil, method: "m"))))
        XCTAssertEqual(RPCMessage.decode(JSONValue.array([])), .failure(.invalidRequest("empty batch")))
    }

    // MARK: - RPCRequest.json

    func testRequestJSONRoundTripsThroughDecode() throws {
        let original = RPCRequest(id: "r1", method: "tcp.connect", params: ["host": "127.0.0.1", "port": 80])
        XCTAssertEqual(TestSupport.text(original.json),
                       #"{"jsonrpc":"2.0","method":"tcp.connect","params":{"host":"127.0.0.1","port":80},"id":"r1"}"#)
        XCTAssertEqual(RPCMessage.decode(try JanssonCodec.parse(JanssonCodec.serialize(original.json))),
                       .single(.request(original)))
        let note = RPCRequest(id: nil, method: "tcp.x")
        XCTAssertEqual(TestSupport.text(note.json), #"{"jsonrpc":"2.0","method":"tcp.x"}"#)
    }
}
