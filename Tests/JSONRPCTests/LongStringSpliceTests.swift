import XCTest

@testable import JSONRPC

/// The long-string fast path must be invisible: every text parses and prints exactly as it
/// does through jansson alone.
final class LongStringSpliceTests: XCTestCase {
    private func parseBoth(_ text: String, file: StaticString = #filePath, line: UInt = #line) throws -> JSONValue {
        let bytes = Array(text.utf8)
        let fast = try bytes.withUnsafeBytes { try JanssonCodec.parse($0) }
        let slow = try bytes.withUnsafeBytes { try JanssonCodec.parse($0, splicing: false) }
        XCTAssertEqual(fast, slow, file: file, line: line)
        return fast
    }

    let long = String(repeating: "QUJD", count: 300)  // 1200 plain characters

    func testLongValuesAreCutAndRestored() throws {
        let text = #"{"jsonrpc":"2.0","id":1,"method":"tcp.send","params":{"handle":1,"data":"\#(long)","encoding":"base64"}}"#
        let cut = text.utf8.withContiguousStorageIfAvailable { LongStringSplice.cut(UnsafeRawBufferPointer($0)) } ?? nil
        XCTAssertEqual(cut?.pieces.count, 1, "the data string is spliced")
        XCTAssertLessThan(cut?.reduced.count ?? .max, 200)
        let value = try parseBoth(text)
        XCTAssertEqual(value["params"]?["data"], .string(long))
        XCTAssertEqual(value["params"]?["handle"], 1)
    }

    func testManyLongStringsInArraysKeepTheirOrder() throws {
        let parts = (0..<5).map { String(repeating: String($0), count: 600 + $0) }
        let text = "[" + parts.map { "\"\($0)\"" }.joined(separator: ",") + ",\"short\"]"
        XCTAssertEqual(try parseBoth(text), .array(parts.map { .string($0) } + ["short"]))
    }

    func testLongKeysAreNotSpliced() throws {
        let text = #"{"\#(long)":1, "\#(long)x" : "\#(long)"}"#
        let value = try parseBoth(text)
        XCTAssertEqual(value[long], 1)
        XCTAssertEqual(value[long + "x"], .string(long))
    }

    func testStringsWithEscapesOrNonASCIIGoThroughJansson() throws {
        let escaped = String(repeating: "a\\\"b\\n", count: 200)
        let unicode = String(repeating: "é☃", count: 400)
        let value = try parseBoth(#"{"a":"\#(escaped)","b":"\#(unicode)","c":"\#(long)"}"#)
        XCTAssertEqual(value["a"], .string(String(repeating: "a\"b\n", count: 200)))
        XCTAssertEqual(value["b"], .string(unicode))
        XCTAssertEqual(value["c"], .string(long))
    }

    func testAClientStringThatLooksLikeAPlaceholderIsNotConfused() throws {
        // With an escaped NUL anywhere, the whole message goes through jansson.
        let value = try parseBoth(#"["\u0000tcpgw:0","\#(long)"]"#)
        XCTAssertEqual(value, .array([.string("\u{0}tcpgw:0"), .string(long)]))
        let printed = JanssonCodec.serialize(value)
        XCTAssertEqual(printed, JanssonCodec.serialize(value, splicing: false))
        XCTAssertEqual(try JanssonCodec.parse(printed), value)
    }

    func testErrorsAreReportedAsWithoutSplicing() {
        for text in [#"{"a":"\#(long)",}"#, #"["\#(long)" "\#(long)"]"#, #"{"a":"\#(long)"#, #"["\#(long)",tru]"#] {
            let bytes = Array(text.utf8)
            let fast = bytes.withUnsafeBytes { raw -> JSONParseError? in
                do { _ = try JanssonCodec.parse(raw); return nil } catch { return error as? JSONParseError }
            }
            let slow = bytes.withUnsafeBytes { raw -> JSONParseError? in
                do { _ = try JanssonCodec.parse(raw, splicing: false); return nil } catch { return error as? JSONParseError }
            }
            XCTAssertNotNil(fast, text)
            XCTAssertEqual(fast, slow, text)
        }
    }

    func testAStringJustBelowTheThresholdIsLeftAlone() {
        let text = #"{"a":"\#(String(repeating: "x", count: LongStringSplice.threshold - 1))","b":"\#(long)"}"#
        let cut = Array(text.utf8).withUnsafeBytes { LongStringSplice.cut($0) }
        XCTAssertEqual(cut?.pieces.count, 1)
    }

    func testPrintingSplicesAndMatchesJansson() throws {
        let value: JSONValue = [
            "jsonrpc": "2.0", "id": 3,
            "result": ["data": .string(long), "list": [.string(long + "y"), "z", .string("\u{0}x")], "eof": false],
        ]
        let fast = JanssonCodec.serialize(value)
        XCTAssertEqual(fast, JanssonCodec.serialize(value, splicing: false))
        XCTAssertEqual(try JanssonCodec.parse(fast), value)
    }

    func testPrintingAStringThatLooksLikeAPlaceholder() throws {
        let value: JSONValue = [.string("\u{0}tcpgw:0"), .string(long)]
        let printed = JanssonCodec.serialize(value)
        XCTAssertEqual(printed, JanssonCodec.serialize(value, splicing: false))
        XCTAssertEqual(try JanssonCodec.parse(printed), value)
    }

    func testPlainRunStopsAtEveryNonPlainByteAtEveryPosition() {
        for byte in 0...255 {
            let plain = byte >= 0x20 && byte <= 0x7E && byte != 0x22 && byte != 0x5C
            for position in 0..<40 {  // the 16-byte steps, the 8-byte step, the last bytes
                var bytes = [UInt8](repeating: UInt8(ascii: "Q"), count: 40)
                bytes[position] = UInt8(byte)
                let end = bytes.withUnsafeBytes { LongStringSplice.plainRunEnd($0, from: 0) }
                XCTAssertEqual(end, plain ? bytes.count : position, "byte \(byte) at \(position)")
                let fromMiddle = bytes.withUnsafeBytes { LongStringSplice.plainRunEnd($0, from: 3) }
                XCTAssertEqual(fromMiddle, plain || position < 3 ? bytes.count : position, "byte \(byte) at \(position), from 3")
            }
        }
    }
}
