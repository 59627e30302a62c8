import CNetShim
import Foundation
import JSONRPC
import NIOCore
import XCTest

@testable import TCPGateway

extension Base64 {
    /// The decoded bytes as an array (what the tests compare); nil if it is not base64.
    static func decode(_ text: String) -> [UInt8]? {
        var buffer = ByteBufferAllocator().buffer(capacity: 0)
        return decode(text, appendingTo: &buffer) ? Array(buffer.readableBytesView) : nil
    }
}

/// Base64, Hex, DataEncoding and the hand-written tcp.onData frame.
final class DataCodecTests: XCTestCase {
    typealias S = GatewayTestSupport

    // MARK: - Base64

    /// Every length 0...300 (all three tail shapes, many times over), byte for byte against Foundation.
    func testBase64RoundTripsAgainstFoundationForEveryLength() {
        var rng = SplitMix64(seed: 0x7C9_0001)
        for length in 0...300 {
            let bytes = S.randomBytes(length, &rng)
            let ours = Base64.encode(S.buffer(bytes))
            let foundation = Data(bytes).base64EncodedString()
            XCTAssertEqual(ours, foundation, "encode, length \(length)")
            XCTAssertEqual(ours.utf8.count, Base64.encodedLength(length), "encodedLength, length \(length)")
            XCTAssertEqual(Base64.decode(foundation), bytes, "decode of Foundation's text, length \(length)")
            XCTAssertEqual(Data(base64Encoded: ours).map { [UInt8]($0) }, bytes, "Foundation decodes ours, length \(length)")
        }
    }

    /// The vectorised encoders (SSSE3, AVX2, whichever this CPU has) against the scalar one and
    /// Foundation: every length up to 200 (each tail and each split between vector steps and the
    /// scalar loop), then long buffers at every start offset modulo 32 (unaligned loads).
    func testBase64EveryInstructionSetMatchesTheScalarEncoder() {
        var rng = SplitMix64(seed: 0x7C9_0011)
        let best = Int(tcpgw_base64_best_level())
        XCTAssertTrue((0...2).contains(best))
        func encoded(_ bytes: [UInt8], level: Int32) -> String {
            var out = [UInt8](repeating: 0, count: Base64.encodedLength(bytes.count) + 64)
            let count = bytes.withUnsafeBytes { input in
                out.withUnsafeMutableBytes { tcpgw_base64_encode_level(input.baseAddress, input.count, $0.baseAddress, level) }
            }
            XCTAssertEqual(count, Base64.encodedLength(bytes.count))
            XCTAssertTrue(out[count...].allSatisfy { $0 == 0 }, "nothing written past the end, \(bytes.count) bytes")
            return String(decoding: out[..<count], as: UTF8.self)
        }
        var cases = (0...200).map { S.randomBytes($0, &rng) }
        cases += [Array(0...255), [UInt8](repeating: 0xFF, count: 300), [UInt8](repeating: 0, count: 300)]
        let long = S.randomBytes(70_000, &rng)
        cases += (0..<32).map { Array(long[$0...]) }
        for bytes in cases {
            let foundation = Data(bytes).base64EncodedString()
            for level: Int32 in 0...2 {
                XCTAssertEqual(encoded(bytes, level: level), foundation, "level \(level), \(bytes.count) bytes")
            }
            XCTAssertEqual(Base64.encode(S.buffer(bytes)), foundation, "the chosen encoder, \(bytes.count) bytes")
        }
    }

    /// The vectorised decoders take whole blocks of the standard alphabet and stop at the first
    /// block holding anything else; what they leave, the scalar code decodes and judges. Checked
    /// at every level, for every length, with the odd character at every position.
    func testBase64VectorDecodersStopAtAnythingButTheStandardAlphabet() {
        var rng = SplitMix64(seed: 0x7C9_0013)
        for level: Int32 in 0...2 {
            for length in [0, 12, 13, 24, 47, 48, 96, 300, 3000] {
                let bytes = S.randomBytes(length, &rng)
                let text = Array(Data(bytes).base64EncodedString().utf8)
                let stripped = text.count - text.reversed().prefix(while: { $0 == UInt8(ascii: "=") }).count
                var out = [UInt8](repeating: 0xAA, count: bytes.count)
                let used = text.withUnsafeBytes { input in
                    out.withUnsafeMutableBytes {
                        tcpgw_base64_decode_prefix_level(input.baseAddress, stripped, $0.baseAddress, $0.count, level)
                    }
                }
                XCTAssertEqual(used % 16, 0)
                XCTAssertLessThanOrEqual(used, stripped)
                if level == 0 { XCTAssertEqual(used, 0) }
                if level > 0 && Int(tcpgw_base64_best_level()) > 0 {
                    // It stops only for lack of room (a step writes 4 bytes past what it decodes).
                    XCTAssertGreaterThan(used + 16 + 16, min(stripped, (out.count - 4) / 3 * 4), "level \(level), \(length)")
                }
                XCTAssertEqual(Array(out[..<(used / 4 * 3)]), Array(bytes[..<(used / 4 * 3)]), "level \(level), \(length)")
                // A step's store may run 8 bytes past what it decoded (AVX2: 32 for 24), never past `cap`.
                XCTAssertTrue(out[min(out.count, used / 4 * 3 + 8)...].allSatisfy { $0 == 0xAA },
                              "nothing written past what it decoded but the step's slack")
            }
            // An odd character anywhere: the decoder stops at or before its block.
            let text = Array(Data(S.randomBytes(96, &rng)).base64EncodedString().utf8)  // 128 characters
            for position in 0..<text.count {
                for odd: UInt8 in [UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "="), 0x00, 0x80, 0xFF, 0x40, 0x7B, 0x2C] {
                    var bad = text
                    bad[position] = odd
                    var out = [UInt8](repeating: 0, count: 256)
                    let used = bad.withUnsafeBytes { input in
                        out.withUnsafeMutableBytes {
                            tcpgw_base64_decode_prefix_level(input.baseAddress, input.count, $0.baseAddress, $0.count, level)
                        }
                    }
                    XCTAssertLessThanOrEqual(used, position, "level \(level), \(odd) at \(position)")
                }
            }
        }
        // Through Base64.decode: bad characters past the vector blocks are still refused, and
        // the URL-safe alphabet still decodes.
        let long = S.randomBytes(3000, &rng)
        let good = Data(long).base64EncodedString()
        XCTAssertEqual(Base64.decode(good), long)
        for position in [0, 17, 1000, 3990, good.utf8.count - 3] {
            var bytes = Array(good.utf8)
            bytes[position] = UInt8(ascii: "*")
            XCTAssertNil(Base64.decode(String(decoding: bytes, as: UTF8.self)), "a bad character at \(position)")
        }
        let urlSafe = good.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        XCTAssertEqual(Base64.decode(urlSafe), long)
    }

    func testBase64EdgeBytes() {
        for bytes: [UInt8] in [[0], [0xFF], [0, 0], [0xFF, 0xFF], [0, 0, 0], [0xFF, 0xFF, 0xFF], Array(0...255)] {
            let text = Base64.encode(S.buffer(bytes))
            XCTAssertEqual(text, Data(bytes).base64EncodedString())
            XCTAssertEqual(Base64.decode(text), bytes)
        }
        XCTAssertEqual(Base64.decode(""), [])
        XCTAssertEqual(Base64.encode(S.buffer([])), "")
    }

    func testBase64EncodeAppendsToExistingBufferContent() {
        // encode(_:into:) appends; the frame encoder relies on it writing after the head.
        var out = ByteBufferAllocator().buffer(capacity: 4)
        out.writeString("x=")
        Array("hello".utf8).withUnsafeBytes { Base64.encode($0, into: &out) }
        XCTAssertEqual(String(buffer: out), "x=aGVsbG8=")
    }

    func testBase64AcceptsUnpaddedInput() {
        var rng = SplitMix64(seed: 0x7C9_0002)
        for length in 0...64 {
            let bytes = S.randomBytes(length, &rng)
            let padded = Data(bytes).base64EncodedString()
            let unpadded = String(padded.prefix(while: { $0 != "=" }))
            XCTAssertEqual(Base64.decode(unpadded), bytes, "unpadded, length \(length)")
        }
        XCTAssertEqual(Base64.decode("aGk"), Array("hi".utf8))
        XCTAssertEqual(Base64.decode("aA"), Array("h".utf8))
    }

    func testBase64RejectsBadCharacters() {
        for bad in ["aGk*", "aG k", " aGk=", "aGk=\n", "aGVsbG8h\r\n", "a.bc", "aGVs\u{0}bG8=", "aGé=", "YWJj#A==", "!!!!"] {
            XCTAssertNil(Base64.decode(bad), "\(bad.debugDescription) should be rejected")
        }
    }

    func testBase64RejectsBadPadding() {
        // Padding in the middle, too much padding, padding not reaching a multiple of 4.
        for bad in ["=", "==", "===", "====", "A===", "AA=", "AAA==", "AA===", "AB=C", "A=BC", "AA==AA==", "aGk==", "aA=", "=aGk"] {
            XCTAssertNil(Base64.decode(bad), "\(bad.debugDescription) should be rejected")
        }
        // The good neighbours of those, so the rejections are about the padding.
        XCTAssertEqual(Base64.decode("AA=="), [0])
        XCTAssertEqual(Base64.decode("AAA="), [0, 0])
        XCTAssertEqual(Base64.decode("aGk="), Array("hi".utf8))
    }

    func testBase64RejectsLengthOneModFour() {
        for bad in ["A", "AAAAA", "aGVsbG8hA", "AAAAAAAAA"] {
            XCTAssertNil(Base64.decode(bad), "\(bad.debugDescription) (length % 4 == 1) should be rejected")
        }
    }

    func testBase64DecodesTheURLSafeAlphabet() {
        var rng = SplitMix64(seed: 0x7C9_0003)
        var sawBoth = (dash: false, underscore: false)
        for length in 1...120 {
            let bytes = S.randomBytes(length, &rng)
            let standard = Data(bytes).base64EncodedString()
            let urlSafe = standard.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            sawBoth.dash = sawBoth.dash || urlSafe.contains("-")
            sawBoth.underscore = sawBoth.underscore || urlSafe.contains("_")
            XCTAssertEqual(Base64.decode(urlSafe), bytes, "url-safe, length \(length)")
            XCTAssertEqual(Base64.decode(String(urlSafe.prefix(while: { $0 != "=" }))), bytes, "url-safe unpadded")
        }
        XCTAssertTrue(sawBoth.dash && sawBoth.underscore, "the sample must exercise both URL-safe characters")
        XCTAssertEqual(Base64.decode("-_-_"), [0xFB, 0xFF, 0xBF])
        XCTAssertEqual(Base64.decode("+/+/"), [0xFB, 0xFF, 0xBF])
        // Encoding stays standard.
        XCTAssertEqual(Base64.encode(S.buffer([0xFB, 0xFF, 0xBF])), "+/+/")
    }

    // MARK: - Hex

    func testHexRoundTrip() {
        var rng = SplitMix64(seed: 0x7C9_0004)
        for length in 0...80 {
            let bytes = S.randomBytes(length, &rng)
            let text = Hex.encode(S.buffer(bytes))
            XCTAssertEqual(text, bytes.map { String(format: "%02x", $0) }.joined(), "length \(length)")
            XCTAssertEqual(Hex.decode(text), bytes)
            XCTAssertEqual(Hex.decode(text.uppercased()), bytes)
        }
        XCTAssertEqual(Hex.encode(S.buffer(Array(0...255))).count, 512)
    }

    func testHexAcceptsEitherCaseAndEncodesLower() {
        XCTAssertEqual(Hex.decode("DEADbeef"), [0xDE, 0xAD, 0xBE, 0xEF])
        XCTAssertEqual(Hex.decode("00ff7F80"), [0x00, 0xFF, 0x7F, 0x80])
        XCTAssertEqual(Hex.encode(S.buffer([0xAB, 0xCD, 0x0F])), "abcd0f")
        XCTAssertEqual(Hex.decode(""), [])
    }

    func testHexRejectsOddLengthAndNonHex() {
        for bad in ["0", "abc", "0g", "g0", "zz", "0x00", " 00", "00 ", "-1", "é0", "+f", "0\n"] {
            XCTAssertNil(Hex.decode(bad), "\(bad.debugDescription) should be rejected")
        }
    }

    // MARK: - DataEncoding

    /// What `encoding` appends for `text` after a prefix already in the buffer (the prefix must stay).
    private func appended(_ encoding: DataEncoding, _ text: String, param: String = "data") throws -> [UInt8] {
        var out = S.buffer([0xEE])
        defer { XCTAssertEqual(out.getInteger(at: out.readerIndex, as: UInt8.self), 0xEE) }
        try encoding.decode(text, param: param, appendingTo: &out)
        return Array(out.readableBytesView.dropFirst())
    }

    func testDataEncodingDecode() throws {
        XCTAssertEqual(try appended(.utf8, "héllo €"), Array("héllo €".utf8))
        XCTAssertEqual(try appended(.utf8, ""), [])
        XCTAssertEqual(try appended(.base64, "aGk="), Array("hi".utf8))
        XCTAssertEqual(try appended(.hex, "6869"), Array("hi".utf8))
        for encoding in [DataEncoding.utf8, .base64, .hex] {
            for length in [0, 1, 2, 3, 64, 1000] {  // the room asked for holds what is decoded
                let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
                let text = encoding.encode(S.buffer(bytes))
                let got = try appended(encoding, text)
                XCTAssertLessThanOrEqual(got.count, encoding.decodedCapacity(text), "\(encoding) \(length)")
                if encoding != .utf8 { XCTAssertEqual(got, bytes, "\(encoding) \(length)") }
            }
        }

        var out = S.buffer([1, 2])
        let base64Error = S.rpcError { try DataEncoding.base64.decode("a*", param: "data[2]", appendingTo: &out) }
        XCTAssertEqual(base64Error?.code, -32602)
        XCTAssertEqual(base64Error?.message, "invalid params: 'data[2]' is not valid base64")
        XCTAssertEqual(Array(out.readableBytesView), [1, 2])  // a refused text appends nothing
        let hexError = S.rpcError { try DataEncoding.hex.decode("abc", param: "data", appendingTo: &out) }
        XCTAssertEqual(hexError?.code, -32602)
        XCTAssertEqual(hexError?.message, "invalid params: 'data' is not valid hex")
        XCTAssertEqual(Array(out.readableBytesView), [1, 2])
    }

    func testDataEncodingEncode() {
        let bytes: [UInt8] = Array("héllo".utf8)
        XCTAssertEqual(DataEncoding.utf8.encode(S.buffer(bytes)), "héllo")
        XCTAssertEqual(DataEncoding.base64.encode(S.buffer(bytes)), Data(bytes).base64EncodedString())
        XCTAssertEqual(DataEncoding.hex.encode(S.buffer(bytes)), "68c3a96c6c6f")
        XCTAssertEqual(DataEncoding(rawValue: "utf8"), .utf8)
        XCTAssertNil(DataEncoding(rawValue: "UTF8"))
        XCTAssertNil(DataEncoding(rawValue: "latin1"))
    }

    func testDataEncodingUTF8ReplacesInvalidBytes() {
        // A lone continuation byte, a truncated 2-byte sequence at the end, an invalid lead byte.
        XCTAssertEqual(DataEncoding.utf8.encode(S.buffer([0x61, 0x80, 0x62])), "a\u{FFFD}b")
        XCTAssertEqual(DataEncoding.utf8.encode(S.buffer([0x61, 0xC3])), "a\u{FFFD}")
        XCTAssertEqual(DataEncoding.utf8.encode(S.buffer([0xFF])), "\u{FFFD}")
        let decoded = DataEncoding.utf8.encode(S.buffer([0xFE, 0x41, 0xFE]))
        XCTAssertEqual(Array(decoded.unicodeScalars), ["\u{FFFD}", "A", "\u{FFFD}"])
    }

    func testDataEncodingEncodesOnlyTheReadableBytes() {
        var buffer = S.buffer(Array("xxhi".utf8))
        buffer.moveReaderIndex(forwardBy: 2)
        XCTAssertEqual(DataEncoding.utf8.encode(buffer), "hi")
        XCTAssertEqual(DataEncoding.base64.encode(buffer), "aGk=")
        XCTAssertEqual(DataEncoding.hex.encode(buffer), "6869")
    }

    // MARK: - DataFrameEncoder

    func testOnDataFrameMatchesJansson() throws {
        var rng = SplitMix64(seed: 0x7C9_0005)
        // Lengths around the three base64 tails and past LongStringSplice's 512-character threshold.
        let lengths = [0, 1, 2, 3, 4, 5, 100, 383, 384, 385, 386, 1000, 65536]
        let handles: [Int64] = [1, 42, 9_007_199_254_740_991, Int64.max]
        for (index, length) in lengths.enumerated() {
            let handle = handles[index % handles.count]
            let bytes = S.randomBytes(length, &rng)
            let frame = DataFrameEncoder.onData(handle: handle, S.buffer(bytes))
            let frameBytes = Array(frame.readableBytesView)

            XCTAssertEqual(frameBytes.last, 0x0A, "ends with a newline, length \(length)")
            XCTAssertEqual(frameBytes.filter { $0 == 0x0A }.count, 1, "exactly one newline, length \(length)")
            XCTAssertFalse(frameBytes.contains(0x0D), "no carriage return, length \(length)")

            let expected: JSONValue = [
                "jsonrpc": "2.0", "method": "tcp.onData",
                "params": ["handle": .int(handle), "data": .string(Data(bytes).base64EncodedString()), "encoding": "base64"],
            ]
            let parsed = try JanssonCodec.parse(Array(frameBytes.dropLast()))
            XCTAssertEqual(parsed, expected, "length \(length)")
            // Same members in the same order (JSONObject equality ignores order).
            XCTAssertEqual(TestKeys.of(parsed), ["jsonrpc", "method", "params"])
            XCTAssertEqual(TestKeys.of(parsed["params"]), ["handle", "data", "encoding"])

            // Byte for byte what jansson prints for the same object, spliced or not.
            XCTAssertEqual(frameBytes, JanssonCodec.serialize(expected) + [0x0A], "vs serialize, length \(length)")
            XCTAssertEqual(frameBytes, JanssonCodec.serialize(expected, splicing: false) + [0x0A], "vs plain jansson, length \(length)")
        }
    }

    /// The written tcp.recv / tcp.recvfrom answer line is what the generic path prints for the
    /// same result (`LineEncoder.writeSuccess` and jansson), for ids and remotes of each kind.
    func testRecvAnswerMatchesTheGenericWriter() throws {
        var rng = SplitMix64(seed: 0x7C9_0012)
        let ids: [JSONValue] = [1, 0, -5, .int(Int64.max), "req-7", .null]
        let remotes: [JSONValue?] = [nil, .null, ["address": "127.0.0.1", "port": 5555, "family": "IPv4"]]
        for (index, length) in [0, 1, 2, 3, 64, 385, 65536, 262_144].enumerated() {
            let bytes = S.randomBytes(length, &rng)
            for (idIndex, id) in ids.enumerated() {
                let remote = remotes[(index + idIndex) % remotes.count]
                let eof = (index + idIndex) % 2 == 0
                let line = try XCTUnwrap(DataFrameEncoder.recvAnswer(id: id, S.buffer(bytes), eof: eof, remote: remote))
                var result: JSONObject = [
                    "data": .string(Data(bytes).base64EncodedString()), "encoding": "base64", "eof": .bool(eof),
                ]
                if let remote { result["remote"] = remote }
                var generic = ByteBufferAllocator().buffer(capacity: 64)
                LineEncoder.writeSuccess(id: id, result: .object(result), into: &generic)
                XCTAssertEqual(Array(line.readableBytesView), Array(generic.readableBytesView), "\(length) bytes, id \(id)")
                let envelope = RPCResponse.success(id: id, result: .object(result))
                XCTAssertEqual(Array(line.readableBytesView), JanssonCodec.serialize(envelope) + [0x0A], "vs jansson")
            }
        }
    }

    func testRecvAnswerLeavesIdsItCannotWriteToTheGenericWriter() {
        let data = S.buffer([1, 2, 3])
        XCTAssertNil(DataFrameEncoder.recvAnswer(id: "caf\u{E9}", data, eof: false, remote: nil), "non-ASCII id")
        XCTAssertNil(DataFrameEncoder.recvAnswer(id: "a\"b", data, eof: false, remote: nil), "an id to escape")
        XCTAssertNil(DataFrameEncoder.recvAnswer(id: 1.5, data, eof: false, remote: nil), "a real id")
        XCTAssertNil(DataFrameEncoder.recvAnswer(id: 1, data, eof: false, remote: ["address": "a\nb"]))
        XCTAssertNotNil(DataFrameEncoder.recvAnswer(id: 1, data, eof: true, remote: nil))
    }

    func testOnDataFrameUsesOnlyTheReadableBytes() throws {
        var buffer = S.buffer([9, 9, 9, 1, 2, 3])
        buffer.moveReaderIndex(forwardBy: 3)
        let frame = DataFrameEncoder.onData(handle: 7, buffer)
        XCTAssertEqual(
            String(buffer: frame),
            "{\"jsonrpc\":\"2.0\",\"method\":\"tcp.onData\",\"params\":{\"handle\":7,\"data\":\"AQID\",\"encoding\":\"base64\"}}\n")
        XCTAssertEqual(buffer.readableBytes, 3, "the source buffer is not consumed")
    }
}

/// Member names in order, for order-sensitive assertions.
enum TestKeys {
    static func of(_ value: JSONValue?) -> [String]? {
        if case .object(let object)? = value { return object.keys }
        return nil
    }
}
