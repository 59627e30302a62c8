import NIOCore
import XCTest

@testable import TCPGateway

/// The pieces of contract §12 that need no socket: the gateway's replay log, the session's
/// lifecycle, the token, and the bridge's log of what it wrote.
final class ReplayLogTests: XCTestCase {
    private func append(_ log: inout ReplayLog, _ text: String) {
        Array(text.utf8).withUnsafeBytes { log.append($0) }
    }

    private func replayed(_ log: ReplayLog, after count: UInt64) -> String {
        log.lines(after: count).map { String(buffer: $0) }.joined()
    }

    func testLinesAreNumberedAndReplayedAfterACount() {
        var log = ReplayLog()
        XCTAssertEqual(log.written, 0)
        XCTAssertEqual(replayed(log, after: 0), "")
        append(&log, "a\n")
        append(&log, "bb\n")
        append(&log, "ccc\n")
        XCTAssertEqual(log.written, 3)
        XCTAssertEqual(log.retainedBytes, 9)
        XCTAssertEqual(replayed(log, after: 0), "a\nbb\nccc\n")
        XCTAssertEqual(replayed(log, after: 1), "bb\nccc\n")
        XCTAssertEqual(replayed(log, after: 3), "")
    }

    func testAcknowledgingReleasesWholeLinesOnly() {
        var log = ReplayLog()
        for text in ["one\n", "two\n", "three\n"] { append(&log, text) }
        XCTAssertEqual(log.acknowledge(2), 8)
        XCTAssertEqual(log.acknowledged, 2)
        XCTAssertEqual(log.retainedBytes, 6)
        XCTAssertEqual(log.retainedLines, 1)
        XCTAssertEqual(replayed(log, after: 2), "three\n")
        // An older or equal count changes nothing.
        XCTAssertEqual(log.acknowledge(1), 0)
        XCTAssertEqual(log.acknowledge(2), 0)
        XCTAssertEqual(log.retainedBytes, 6)
        append(&log, "four\n")
        XCTAssertEqual(replayed(log, after: 3), "four\n")
        XCTAssertEqual(log.acknowledge(4), 11)
        XCTAssertEqual(log.retainedBytes, 0)
        XCTAssertEqual(replayed(log, after: 4), "")
        // Appending after everything was released starts a fresh chunk.
        append(&log, "five\n")
        XCTAssertEqual(replayed(log, after: 4), "five\n")
    }

    func testLinesAcrossChunksAndLongerThanAChunk() {
        var log = ReplayLog()
        var expected: [String] = []
        var generator = SplitMix64(seed: 7)
        for i in 0..<400 {
            // Mostly small lines, some longer than a chunk: they get a chunk of their own.
            let length = i % 97 == 0 ? ReplayLog.chunkBytes + 10 : Int(generator.next() % 3000)
            let line = String(repeating: Character(UnicodeScalar(UInt8(65 + i % 26))), count: length) + "\n"
            expected.append(line)
            append(&log, line)
        }
        XCTAssertEqual(log.retainedBytes, expected.reduce(0) { $0 + $1.utf8.count })
        for count in [0, 1, 96, 97, 98, 250, 399, 400] {
            XCTAssertEqual(replayed(log, after: UInt64(count)), expected[count...].joined(), "after \(count)")
        }
        var released = 0
        for count in [3, 97, 98, 300] {
            released += log.acknowledge(UInt64(count))
            XCTAssertEqual(released, expected[..<count].reduce(0) { $0 + $1.utf8.count })
            XCTAssertEqual(replayed(log, after: UInt64(count)), expected[count...].joined(), "after releasing \(count)")
        }
    }
}

final class SessionLifecycleTests: XCTestCase {
    typealias L = SessionLifecycle

    func testOrdinarySessionsEndWithTheirConnection() {
        var l = L()
        XCTAssertFalse(l.isKept)
        XCTAssertFalse(l.isResumable)
        XCTAssertEqual(l.connectionDropped(), .closeAll)
        XCTAssertEqual(l.state, .ended)
        XCTAssertNil(l.resume())
        XCTAssertEqual(l.connectionDropped(), .none)
    }

    func testDetachedForTheGraceThenExpired() {
        var l = L()
        l.keep(grace: 5000)
        XCTAssertEqual(l.state, .attached)
        XCTAssertEqual(l.connectionDropped(), .startGrace(milliseconds: 5000, generation: 1))
        XCTAssertTrue(l.isDetached)
        XCTAssertEqual(l.graceExpired(generation: 1), .closeAll)
        XCTAssertEqual(l.state, .ended)
        XCTAssertNil(l.resume(), "an expired session cannot be resumed")
    }

    func testResumedBeforeTheGraceOutdatesItsTimer() {
        var l = L()
        l.keep(grace: 100)
        XCTAssertEqual(l.connectionDropped(), .startGrace(milliseconds: 100, generation: 1))
        XCTAssertEqual(l.resume(), L.Action.none)
        XCTAssertEqual(l.state, .attached)
        XCTAssertEqual(l.graceExpired(generation: 1), .none, "the old timer fires after the resume")
        XCTAssertEqual(l.state, .attached)
        // A second drop has a timer of its own.
        XCTAssertEqual(l.connectionDropped(), .startGrace(milliseconds: 100, generation: 2))
        XCTAssertEqual(l.graceExpired(generation: 1), .none)
        XCTAssertEqual(l.graceExpired(generation: 2), .closeAll)
    }

    func testTakeoverOfAnOpenConnection() {
        var l = L()
        l.keep(grace: 1000)
        XCTAssertEqual(l.resume(), .takeOver)
        XCTAssertEqual(l.state, .attached)
    }

    func testASecondKeepOnlyChangesTheGraceAndZeroEndsAtOnce() {
        var l = L()
        XCTAssertEqual(l.grace, L.defaultGrace)
        l.keep(grace: 1000)
        l.keep(grace: 0)
        XCTAssertEqual(l.state, .attached)
        XCTAssertEqual(l.grace, 0)
        XCTAssertEqual(l.connectionDropped(), .closeAll)
        XCTAssertEqual(l.state, .ended)
    }

    func testEndedIsFinal() {
        var l = L()
        l.keep(grace: 1000)
        l.end()
        XCTAssertNil(l.resume())
        XCTAssertEqual(l.connectionDropped(), .none)
        XCTAssertEqual(l.graceExpired(generation: 0), .none)
    }

    func testTokensAre128BitsOfBase64url() {
        var seen = Set<String>()
        for _ in 0..<200 {
            let token = SessionToken.make()
            XCTAssertEqual(token.utf8.count, 22)
            XCTAssertTrue(token.utf8.allSatisfy { b in
                (b >= 65 && b <= 90) || (b >= 97 && b <= 122) || (b >= 48 && b <= 57) || b == 45 || b == 95
            }, token)
            seen.insert(token)
        }
        XCTAssertEqual(seen.count, 200)
        // RFC 4648 §10 vectors, without padding, and the URL-safe letters.
        XCTAssertEqual(SessionToken.base64url(Array("foobar".utf8)), "Zm9vYmFy")
        XCTAssertEqual(SessionToken.base64url(Array("fo".utf8)), "Zm8")
        XCTAssertEqual(SessionToken.base64url(Array("f".utf8)), "Zg")
        XCTAssertEqual(SessionToken.base64url([0xFB, 0xFF]), "-_8")
    }
}

final class UpstreamLogTests: XCTestCase {
    private func unsent(_ log: UpstreamLog) -> String {
        log.withUnsent { String(decoding: $0, as: UTF8.self) }
    }

    func testBlankLinesAreNotCountedButAreSent() {
        var log = UpstreamLog()
        for line in ["a\n", "\n", " \t\r\n", "b\n"] { log.append(line: Array(line.utf8)[...]) }
        XCTAssertEqual(log.lines, 2)
        XCTAssertEqual(unsent(log), "a\n\n \t\r\nb\n")
    }

    func testRewindResendsWhatTheGatewayHadNotRead() {
        var log = UpstreamLog()
        for line in ["1\n", "2\n", "3\n"] { log.append(line: Array(line.utf8)[...]) }
        log.sent(6)
        XCTAssertEqual(log.unsentBytes, 0)
        XCTAssertTrue(log.rewind(to: 1))
        XCTAssertEqual(unsent(log), "2\n3\n")
        XCTAssertEqual(log.released, 1)
        XCTAssertFalse(log.rewind(to: 0), "lines already released cannot be resent")
        XCTAssertFalse(log.rewind(to: 4), "the gateway cannot have read more than was written")
        log.release(upTo: 3)
        XCTAssertEqual(log.retainedBytes, 0)
        XCTAssertTrue(log.rewind(to: 3))
        XCTAssertEqual(unsent(log), "")
    }

    func testReleasingCompactsWithoutLosingUnsentBytes() {
        var log = UpstreamLog()
        let line = String(repeating: "x", count: 999) + "\n"
        for _ in 0..<200 { log.append(line: Array(line.utf8)[...]) }
        log.sent(150 * 1000)
        log.release(upTo: 120)
        XCTAssertEqual(log.retainedBytes, 80 * 1000)
        XCTAssertEqual(log.unsentBytes, 50 * 1000)
        XCTAssertTrue(log.rewind(to: 130))
        XCTAssertEqual(log.unsentBytes, 70 * 1000)
        XCTAssertEqual(log.lines, 200)
    }
}
