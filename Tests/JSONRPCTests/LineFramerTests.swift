import XCTest
@testable import JSONRPC

/// LineFramer: newline-delimited framing with a size limit and stream offsets.
final class LineFramerTests: XCTestCase {
    // MARK: - Helpers

    private func feed(_ framer: inout LineFramer, _ bytes: [UInt8]) -> [LineFramer.Frame] {
        var frames: [LineFramer.Frame] = []
        bytes.withUnsafeBytes { framer.append($0, into: &frames) }
        return frames
    }

    private func feed(_ framer: inout LineFramer, _ text: String) -> [LineFramer.Frame] {
        feed(&framer, Array(text.utf8))
    }

    /// Feeds `bytes` in chunks of `size` (the last may be shorter) and collects every frame.
    private func feedChunked(_ framer: inout LineFramer, _ bytes: [UInt8], size: Int) -> [LineFramer.Frame] {
        var frames: [LineFramer.Frame] = []
        var start = 0
        while start < bytes.count {
            let end = min(start + size, bytes.count)
            frames += feed(&framer, Array(bytes[start..<end]))
            start = end
        }
        return frames
    }

    private func line(_ text: String, _ start: UInt64, _ end: UInt64) -> LineFramer.Frame {
        .line(Array(text.utf8), start: start, end: end)
    }

    // MARK: - Basic framing

    func testOneLinePerAppend() {
        var framer = LineFramer(maxLineBytes: 64)
        XCTAssertEqual(feed(&framer, "{\"a\":1}\n"), [line("{\"a\":1}", 0, 8)])
        XCTAssertEqual(feed(&framer, "xyz\n"), [line("xyz", 8, 12)])
        XCTAssertEqual(framer.bufferedBytes, 0)
    }

    func testManyLinesPerAppend() {
        var framer = LineFramer(maxLineBytes: 64)
        XCTAssertEqual(feed(&framer, "a\nbb\nccc\n"), [line("a", 0, 2), line("bb", 2, 5), line("ccc", 5, 9)])
    }

    func testPartialLineIsHeldUntilItsNewline() {
        var framer = LineFramer(maxLineBytes: 64)
        XCTAssertEqual(feed(&framer, "one\ntw"), [line("one", 0, 4)])
        XCTAssertEqual(framer.bufferedBytes, 2)
        XCTAssertEqual(feed(&framer, "o"), [])
        XCTAssertEqual(feed(&framer, "\nthree"), [line("two", 4, 8)])
        XCTAssertEqual(framer.bufferedBytes, 5)
        XCTAssertEqual(feed(&framer, "\n"), [line("three", 8, 14)])
        XCTAssertEqual(framer.bufferedBytes, 0)
    }

    func testLineSplitByteByByte() {
        var framer = LineFramer(maxLineBytes: 64)
        let text = "{\"jsonrpc\":\"2.0\",\"method\":\"tcp.x\",\"id\":1}\nsecond\r\n"
        let frames = feedChunked(&framer, Array(text.utf8), size: 1)
        XCTAssertEqual(frames, [line("{\"jsonrpc\":\"2.0\",\"method\":\"tcp.x\",\"id\":1}", 0, 42), line("second", 42, 50)])
    }

    func testEveryChunkSizeGivesTheSameFrames() {
        let text = Array("alpha\r\n\nbeta\n  \ngamma-gamma\ndelta\n".utf8)
        var reference = LineFramer(maxLineBytes: 8)
        let expected = feed(&reference, text)
        XCTAssertEqual(expected.count, 4)
        for size in 1...text.count {
            var framer = LineFramer(maxLineBytes: 8)
            XCTAssertEqual(feedChunked(&framer, text, size: size), expected, "chunk size \(size)")
        }
    }

    func testCRLFIsStripped() {
        var framer = LineFramer(maxLineBytes: 64)
        XCTAssertEqual(feed(&framer, "a\r\nb\r\n"), [line("a", 0, 3), line("b", 3, 6)])
        // Only one trailing CR goes; a CR elsewhere is data.
        XCTAssertEqual(feed(&framer, "c\rd\r\r\n"), [line("c\rd\r", 6, 12)])
    }

    func testCRLFSplitBetweenAppends() {
        var framer = LineFramer(maxLineBytes: 64)
        XCTAssertEqual(feed(&framer, "abc\r"), [])
        XCTAssertEqual(feed(&framer, "\n"), [line("abc", 0, 5)])
    }

    func testBlankLinesAreSkippedButCounted() {
        var framer = LineFramer(maxLineBytes: 64)
        XCTAssertEqual(feed(&framer, "\n\r\n  \t \n"), [])
        XCTAssertEqual(feed(&framer, "x\n\ny\n"), [line("x", 8, 10), line("y", 11, 13)])
    }

    func testLeadingAndInnerSpacesAreKept() {
        var framer = LineFramer(maxLineBytes: 64)
        XCTAssertEqual(feed(&framer, " {} \n"), [line(" {} ", 0, 5)])
    }

    func testNoNewlineNoFrame() {
        var framer = LineFramer(maxLineBytes: 64)
        XCTAssertEqual(feed(&framer, "no newline yet"), [])
        XCTAssertEqual(framer.bufferedBytes, 14)
        XCTAssertEqual(feed(&framer, []), [])
    }

    func testBinaryBytesPassThrough() {
        var framer = LineFramer(maxLineBytes: 64)
        let payload: [UInt8] = [0x00, 0xFF, 0x0D, 0x7F, 0x80]
        XCTAssertEqual(feed(&framer, payload + [0x0A]), [.line(payload, start: 0, end: 6)])
    }

    // MARK: - Size limit

    func testLineOfExactlyMaxBytesIsAccepted() {
        let max = 16
        let body = String(repeating: "x", count: max)
        var framer = LineFramer(maxLineBytes: max)
        XCTAssertEqual(feed(&framer, body + "\n"), [line(body, 0, 17)])
        // Same line, byte by byte.
        var slow = LineFramer(maxLineBytes: max)
        XCTAssertEqual(feedChunked(&slow, Array((body + "\n").utf8), size: 1), [line(body, 0, 17)])
        // Same line, with the newline in a later append.
        var split = LineFramer(maxLineBytes: max)
        XCTAssertEqual(feed(&split, body), [])
        XCTAssertEqual(feed(&split, "\n"), [line(body, 0, 17)])
    }

    func testLineOfMaxPlusOneIsOversizedAndNextLineStillFramed() {
        let max = 16
        let long = String(repeating: "y", count: max + 1)
        var framer = LineFramer(maxLineBytes: max)
        XCTAssertEqual(feed(&framer, long + "\nok\n"), [.oversized(start: 0, end: 18), line("ok", 18, 21)])
        XCTAssertEqual(framer.bufferedBytes, 0)
    }

    func testOversizedLineInManyChunksYieldsExactlyOneFrame() {
        let max = 32
        let long = Array(repeating: UInt8(ascii: "z"), count: 10 * max + 5) + [0x0A]
        let next = Array("{\"id\":1}\n".utf8)
        for size in [1, 3, max - 1, max, max + 1, 100] {
            var framer = LineFramer(maxLineBytes: max)
            let frames = feedChunked(&framer, long + next, size: size)
            XCTAssertEqual(frames, [.oversized(start: 0, end: UInt64(long.count)),
                                    .line(Array("{\"id\":1}".utf8), start: UInt64(long.count), end: UInt64(long.count + next.count))],
                           "chunk size \(size)")
            XCTAssertEqual(framer.bufferedBytes, 0, "chunk size \(size)")
        }
    }

    func testOversizedReportedOnlyWhenItsNewlineArrives() {
        var framer = LineFramer(maxLineBytes: 4)
        XCTAssertEqual(feed(&framer, "abcdefgh"), [])
        XCTAssertEqual(feed(&framer, "ijkl"), [])
        // The discarded tail is not buffered: memory stays bounded by the limit.
        XCTAssertLessThanOrEqual(framer.bufferedBytes, 5)
        XCTAssertEqual(feed(&framer, "mn\nab\n"), [.oversized(start: 0, end: 15), line("ab", 15, 18)])
    }

    func testBufferNeverExceedsLimitPlusOne() {
        let max = 10
        var framer = LineFramer(maxLineBytes: max)
        for _ in 0..<50 {
            _ = feed(&framer, Array(repeating: UInt8(ascii: "q"), count: 7))
            XCTAssertLessThanOrEqual(framer.bufferedBytes, max + 1)
        }
    }

    func testOversizedAfterGoodLinesInSameAppend() {
        var framer = LineFramer(maxLineBytes: 4)
        XCTAssertEqual(feed(&framer, "ab\n0123456789\ncd\n"),
                       [line("ab", 0, 3), .oversized(start: 3, end: 14), line("cd", 14, 17)])
    }

    func testTwoOversizedLinesInARow() {
        var framer = LineFramer(maxLineBytes: 4)
        XCTAssertEqual(feed(&framer, "abcdef\nghijkl\nm\n"),
                       [.oversized(start: 0, end: 7), .oversized(start: 7, end: 14), line("m", 14, 16)])
    }

    func testOversizedLineStartingMidAppendAfterPartialData() {
        var framer = LineFramer(maxLineBytes: 6)
        XCTAssertEqual(feed(&framer, "ok\nabc"), [line("ok", 0, 3)])
        XCTAssertEqual(feed(&framer, "defgh"), [])
        XCTAssertEqual(feed(&framer, "\n"), [.oversized(start: 3, end: 12)])
        XCTAssertEqual(feed(&framer, "x\n"), [line("x", 12, 14)])
    }

    func testOffsetsStayContinuousOverALongMixedStream() {
        // Build a stream of good, blank and oversized lines; every frame must start where the
        // previous non-skipped content ended, and the last end must be the stream length.
        let max = 12
        var stream: [UInt8] = []
        var expected: [LineFramer.Frame] = []
        for index in 0..<60 {
            let start = UInt64(stream.count)
            switch index % 4 {
            case 0:
                let text = Array("m\(index)".utf8)
                stream += text + [0x0A]
                expected.append(.line(text, start: start, end: UInt64(stream.count)))
            case 1:
                stream += Array("\r\n".utf8)
            case 2:
                stream += Array(repeating: UInt8(ascii: "L"), count: max + index) + [0x0A]
                expected.append(.oversized(start: start, end: UInt64(stream.count)))
            default:
                // max bytes including the CR: fits whether or not the CR is counted.
                let text = Array(repeating: UInt8(ascii: "e"), count: max - 1)
                stream += text + [0x0D, 0x0A]
                expected.append(.line(text, start: start, end: UInt64(stream.count)))
            }
        }
        for size in [1, 5, 13, 64, stream.count] {
            var framer = LineFramer(maxLineBytes: max)
            XCTAssertEqual(feedChunked(&framer, stream, size: size), expected, "chunk size \(size)")
        }
    }

    func testSeededRandomStreamsInRandomReads() {
        // Lines of every length around the limit (bytes other than "\n", a CR now and then, some
        // blank), cut into reads of random sizes: the frames are what the generator meant,
        // whether a line came whole in one read or in many.
        struct Lcg {  // seeded, so a failing round can be replayed
            var state: UInt64 = 0x5EED
            mutating func next() -> UInt64 {
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                return state >> 17
            }
        }
        var rng = Lcg()
        for round in 0..<40 {
            let max = 8 + Int(rng.next() % 64)
            var stream: [UInt8] = []
            var expected: [LineFramer.Frame] = []
            for _ in 0..<(20 + Int(rng.next() % 40)) {
                let start = UInt64(stream.count)
                let length = Int(rng.next() % UInt64(max + 4))
                var raw = (0..<length).map { _ -> UInt8 in
                    switch rng.next() % 8 {
                    case 0: return 0x20
                    case 1: return 0x0D
                    default: return UInt8(truncatingIfNeeded: 0x0B + rng.next() % 240)
                    }
                }
                if rng.next() % 4 == 0 { raw = raw.map { $0 == 0x0D ? 0x0D : 0x20 } }  // blank
                stream += raw + [0x0A]
                let end = UInt64(stream.count)
                if raw.count > max {
                    expected.append(.oversized(start: start, end: end))
                } else {
                    let content = raw.last == 0x0D ? Array(raw.dropLast()) : raw
                    if !content.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) {
                        expected.append(.line(content, start: start, end: end))
                    }
                }
            }
            var framer = LineFramer(maxLineBytes: max)
            var frames: [LineFramer.Frame] = []
            var at = 0
            while at < stream.count {
                let size = 1 + Int(rng.next() % UInt64(3 * max))
                let piece = Array(stream[at..<min(at + size, stream.count)])
                piece.withUnsafeBytes { framer.append($0, into: &frames) }
                at += piece.count
            }
            XCTAssertEqual(frames, expected, "round \(round)")
            XCTAssertEqual(framer.bufferedBytes, 0, "round \(round)")
        }
    }

    func testFramesFeedTheDecoder() {
        // End to end inside the module: framed bytes decode to the request they carried.
        var framer = LineFramer(maxLineBytes: 1024)
        let frames = feed(&framer, "{\"jsonrpc\":\"2.0\",\"method\":\"tcp.x\",\"id\":1}\r\n")
        guard case .line(let bytes, _, _)? = frames.first else { return XCTFail("no frame") }
        XCTAssertEqual(bytes.withUnsafeBytes { RPCMessage.decode($0) },
                       .single(.request(RPCRequest(id: 1, method: "tcp.x"))))
    }
}
