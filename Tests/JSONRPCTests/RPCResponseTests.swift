import XCTest
@testable import JSONRPC

/// RPCResponse / RPCError: the shapes the gateway writes back.
final class RPCResponseTests: XCTestCase {
    func testSuccessShape() {
        let response = RPCResponse.success(id: 1, result: 19)
        XCTAssertEqual(TestSupport.keys(response), ["jsonrpc", "result", "id"])
        XCTAssertEqual(TestSupport.text(response), #"{"jsonrpc":"2.0","result":19,"id":1}"#)
    }

    func testSuccessEchoesEveryIdType() {
        let ids: [JSONValue] = ["abc", "", 7, -1, 1.5, nil, .int(Int64.max)]
        for id in ids {
            let response = RPCResponse.success(id: id, result: nil)
            XCTAssertEqual(response["id"], id)
            XCTAssertEqual(response["jsonrpc"], "2.0")
            // A null result is still present: "result" is REQUIRED on success.
            XCTAssertEqual(response["result"], .null)
            XCTAssertNil(response["error"])
        }
        XCTAssertEqual(TestSupport.text(RPCResponse.success(id: nil, result: nil)), #"{"jsonrpc":"2.0","result":null,"id":null}"#)
        XCTAssertEqual(TestSupport.text(RPCResponse.success(id: "x", result: ["a": [1]])),
                       #"{"jsonrpc":"2.0","result":{"a":[1]},"id":"x"}"#)
    }

    func testFailureShapeWithoutData() {
        let response = RPCResponse.failure(id: "7", error: RPCError(code: -32601, message: "method not found: x"))
        XCTAssertEqual(TestSupport.keys(response), ["jsonrpc", "error", "id"])
        XCTAssertEqual(TestSupport.keys(response["error"]), ["code", "message"])
        XCTAssertNil(response["result"])
        XCTAssertNil(response["error"]?["data"])
        XCTAssertEqual(TestSupport.text(response),
                       #"{"jsonrpc":"2.0","error":{"code":-32601,"message":"method not found: x"},"id":"7"}"#)
    }

    func testFailureShapeWithData() {
        let error = RPCError(code: -32001, message: "refused", data: ["errno": 111, "syscall": "connect"])
        let response = RPCResponse.failure(id: 3, error: error)
        XCTAssertEqual(TestSupport.keys(response["error"]), ["code", "message", "data"])
        XCTAssertEqual(response["error"]?["data"], ["errno": 111, "syscall": "connect"])
        XCTAssertEqual(TestSupport.text(response),
                       #"{"jsonrpc":"2.0","error":{"code":-32001,"message":"refused","data":{"errno":111,"syscall":"connect"}},"id":3}"#)
    }

    func testExplicitNullDataIsPresent() {
        // `data: .null` was set on purpose; only `data: nil` leaves the member out.
        let response = RPCResponse.failure(id: 1, error: RPCError(code: -32000, message: "m", data: .null))
        XCTAssertEqual(TestSupport.keys(response["error"]), ["code", "message", "data"])
        XCTAssertEqual(response["error"]?["data"], .null)
    }

    func testFailureWithNullIdForUnreadableRequests() {
        XCTAssertEqual(TestSupport.text(RPCResponse.failure(id: nil, error: .parseError("x"))),
                       #"{"jsonrpc":"2.0","error":{"code":-32700,"message":"parse error: x"},"id":null}"#)
    }

    func testNotificationShape() {
        let note = RPCResponse.notification(method: "tcp.onData", params: ["handle": 4, "data": "aGk="])
        XCTAssertEqual(TestSupport.keys(note), ["jsonrpc", "method", "params"])
        XCTAssertNil(note["id"])
        XCTAssertEqual(TestSupport.text(note), #"{"jsonrpc":"2.0","method":"tcp.onData","params":{"handle":4,"data":"aGk="}}"#)
    }

    func testStandardErrorCodes() {
        XCTAssertEqual(RPCError.parseError("a").code, -32700)
        XCTAssertEqual(RPCError.invalidRequest("a").code, -32600)
        XCTAssertEqual(RPCError.methodNotFound("tcp.nope").code, -32601)
        XCTAssertEqual(RPCError.invalidParams("a").code, -32602)
        XCTAssertEqual(RPCError.internalError("a").code, -32603)
        XCTAssertTrue(RPCError.methodNotFound("tcp.nope").message.contains("tcp.nope"))
        for error in [RPCError.parseError("a"), .invalidRequest("a"), .methodNotFound("a"), .invalidParams("a"), .internalError("a")] {
            XCTAssertNil(error.data)
            XCTAssertEqual(error.description, "\(error.message) (\(error.code))")
        }
    }

    func testResponsesAreSingleLines() {
        // Error messages may quote client input; it must not break the framing.
        let error = RPCError(code: -32602, message: "bad value \"a\nb\u{2028}\"", data: ["echo": "\r\n"])
        let bytes = JanssonCodec.serialize(RPCResponse.failure(id: "l\ni\rne", error: error))
        XCTAssertFalse(bytes.contains(0x0A))
        XCTAssertFalse(bytes.contains(0x0D))
        XCTAssertFalse(bytes.containsSequence([0xE2, 0x80, 0xA8]))
        XCTAssertEqual(try JanssonCodec.parse(bytes)["id"], "l\ni\rne")
    }
}
