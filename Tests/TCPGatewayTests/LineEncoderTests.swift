import JSONRPC
import NIOCore
import XCTest

@testable import TCPGateway

/// The hand-written small-message encoder prints exactly what jansson prints.
final class LineEncoderTests: XCTestCase {
    private func encoded(_ value: JSONValue) -> [UInt8] {
        var buffer = ByteBufferAllocator().buffer(capacity: 0)
        LineEncoder.write(value, into: &buffer)
        return buffer.readBytes(length: buffer.readableBytes) ?? []
    }

    func testMatchesJanssonByteForByte() {
        let values: [JSONValue] = [
            .null, true, false, 0, 7, -1, 10, 99, 100, -10, .int(Int64.max), .int(Int64.min), "", "ESTABLISHED",
            "a\"b", "back\\slash", "tab\there", "new\nline", "\u{0}nul", "caf\u{e9}", "line\u{2028}sep", "del\u{7f}",
            1.5, 0.1, [], [:], [1, "two", nil, [true]], ["": 1], ["state": 4, "name": "ESTABLISHED"],
            ["jsonrpc": "2.0", "result": ["state": 4, "name": "ESTABLISHED"], "id": 12345],
            ["jsonrpc": "2.0", "result": ["uptime": 0.27], "id": "x"],
            ["jsonrpc": "2.0", "error": ["code": -32602, "message": "invalid params: 'handle' is required"], "id": .null],
            ["nested": ["deeper": [["k": "v"], [:], []]], "z": -0],
        ]
        for value in values {
            XCTAssertEqual(
                String(decoding: encoded(value), as: UTF8.self),
                String(decoding: JanssonCodec.serialize(value) + [0x0A], as: UTF8.self), "\(value)")
        }
    }

    func testOnlySimpleValuesSkipJansson() {
        XCTAssertEqual(LineEncoder.simpleLength(["state": 4, "name": "ESTABLISHED"]), 32)
        XCTAssertNil(LineEncoder.simpleLength(["uptime": 0.5]))
        XCTAssertNil(LineEncoder.simpleLength(["quote": "\""]))
        XCTAssertNil(LineEncoder.simpleLength([["caf\u{e9}": 1]]))
    }
}
