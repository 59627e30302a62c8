import Glibc
import XCTest

@testable import TCPGateway

/// The relay's per-direction machine (contract §11), both modes, without sockets: each test
/// plays the results of the system calls and checks the actions asked for.
final class RelayDirectionTests: XCTestCase {
    typealias D = RelayDirection

    func testSpliceFillsThenFlushesAtOnce() {
        var d = D(mode: .splice, capacity: 1000)
        XCTAssertEqual(d.start(), [])
        XCTAssertTrue(d.wantsSource)
        XCTAssertFalse(d.wantsDestination)
        XCTAssertEqual(d.handle(.sourceReady), [.spliceIn(max: 1000)])
        XCTAssertEqual(d.handle(.filled(600)), [.spliceOut(max: 600)])
        XCTAssertEqual(d.pipeHeld, 600)
        XCTAssertEqual(d.handle(.flushed(600)), [.spliceIn(max: 1000)])
        XCTAssertEqual(d.held, 0)
    }

    func testCopyModeReadsAndWritesThroughTheBuffer() {
        var d = D(mode: .copy, capacity: 100)
        XCTAssertEqual(d.handle(.sourceReady), [.readIn(max: 100)])
        XCTAssertEqual(d.handle(.filled(100)), [.writeOut(max: 100)])
        XCTAssertFalse(d.wantsSource, "a full buffer stops reading")
        XCTAssertEqual(d.handle(.flushed(30)), [.writeOut(max: 70)])
        XCTAssertEqual(d.handle(.flushWouldBlock), [])
        XCTAssertTrue(d.wantsDestination)
        XCTAssertTrue(d.wantsSource, "room again after a partial write")
        XCTAssertEqual(d.handle(.sourceReady), [.readIn(max: 30)])
        XCTAssertEqual(d.handle(.filled(30)), [.writeOut(max: 100)])
        XCTAssertEqual(d.handle(.flushed(100)), [.readIn(max: 100)])
        XCTAssertEqual(d.pipeHeld, 0)
    }

    func testSlowDestinationStopsTheSourceAtCapacity() {
        var d = D(mode: .splice, capacity: 100)
        _ = d.handle(.filled(100))
        XCTAssertEqual(d.handle(.flushWouldBlock), [])
        XCTAssertFalse(d.wantsSource)
        XCTAssertEqual(d.handle(.sourceReady), [], "no read while the pipe is full")
        XCTAssertEqual(d.handle(.destinationReady), [.spliceOut(max: 100)])
    }

    func testPipeRefusingMoreWaitsForAFlushInsteadOfSpinning() {
        var d = D(mode: .splice, capacity: 1000)
        _ = d.handle(.filled(10))
        _ = d.handle(.flushWouldBlock)
        XCTAssertTrue(d.wantsSource)
        XCTAssertEqual(d.handle(.fillWouldBlock), [])
        XCTAssertTrue(d.fillBlocked)
        XCTAssertFalse(d.wantsSource)
        XCTAssertEqual(d.handle(.flushed(10)), [.spliceIn(max: 1000)])
        XCTAssertTrue(d.wantsSource)
    }

    func testEmptyFillWithNothingHeldKeepsWatchingTheSource() {
        var d = D(mode: .splice, capacity: 1000)
        XCTAssertEqual(d.handle(.fillWouldBlock), [])
        XCTAssertTrue(d.wantsSource)
        var c = D(mode: .copy, capacity: 10)
        _ = c.handle(.filled(5))
        XCTAssertEqual(c.handle(.fillWouldBlock), [])
        XCTAssertFalse(c.fillBlocked, "copy mode knows its buffer's room")
    }

    func testPrefixGoesFirstThenThePipe() {
        var d = D(mode: .splice, capacity: 1000, prefix: 5)
        XCTAssertEqual(d.start(), [.writeOut(max: 5)])
        XCTAssertTrue(d.wantsSource, "the pipe fills behind the prefix")
        _ = d.handle(.flushWouldBlock)
        XCTAssertEqual(d.handle(.filled(50)), [.writeOut(max: 5)])
        XCTAssertEqual(d.handle(.flushed(3)), [.writeOut(max: 2)])
        XCTAssertEqual(d.handle(.flushed(2)), [.spliceOut(max: 50)])
        XCTAssertEqual(d.userspaceHeld, 0)
        XCTAssertEqual(d.pipeHeld, 50)
    }

    func testLargePrefixInCopyModeBlocksReadingUntilDrained() {
        var d = D(mode: .copy, capacity: 10, prefix: 25)
        XCTAssertFalse(d.wantsSource)
        XCTAssertEqual(d.start(), [.writeOut(max: 25)])
        XCTAssertEqual(d.handle(.flushed(20)), [.writeOut(max: 5)])
        XCTAssertTrue(d.wantsSource)
    }

    func testEndOfStreamShutsTheDestinationAfterTheHeldBytes() {
        for mode in [D.Mode.splice, .copy] {
            var d = D(mode: mode, capacity: 100)
            _ = d.handle(.filled(40))
            _ = d.handle(.flushWouldBlock)
            XCTAssertEqual(d.handle(.sourceEnded), [mode == .splice ? .spliceOut(max: 40) : .writeOut(max: 40)])
            XCTAssertEqual(d.phase, .draining)
            XCTAssertFalse(d.wantsSource)
            XCTAssertEqual(d.handle(.flushWouldBlock), [])
            XCTAssertEqual(d.handle(.flushed(40)), [.shutdownDestination, .reportEnd])
            XCTAssertEqual(d.phase, .ended)
            XCTAssertFalse(d.wantsDestination)
            XCTAssertEqual(d.handle(.sourceReady), [])
        }
    }

    func testEndOfStreamWithNothingHeldShutsAtOnce() {
        var d = D(mode: .splice, capacity: 100)
        XCTAssertEqual(d.handle(.sourceEnded), [.shutdownDestination, .reportEnd])
        XCTAssertTrue(d.isFinished)
    }

    func testSourceThatHadEndedBeforeTheRelay() {
        var empty = D(mode: .splice, capacity: 100, prefix: 0, sourceEnded: true)
        XCTAssertEqual(empty.start(), [.shutdownDestination, .reportEnd])
        var buffered = D(mode: .copy, capacity: 100, prefix: 7, sourceEnded: true)
        XCTAssertEqual(buffered.start(), [.writeOut(max: 7)])
        XCTAssertFalse(buffered.wantsSource)
        XCTAssertEqual(buffered.handle(.flushed(7)), [.shutdownDestination, .reportEnd])
    }

    func testFailuresReportOnceAndStopEverything() {
        for input in [D.Input.failed(errno: ECONNRESET)] {
            var d = D(mode: .splice, capacity: 100)
            _ = d.handle(.filled(10))
            XCTAssertEqual(d.handle(input), [.reportError(errno: ECONNRESET)])
            XCTAssertEqual(d.phase, .failed(errno: ECONNRESET))
            XCTAssertFalse(d.wantsSource)
            XCTAssertFalse(d.wantsDestination, "bytes held by a failed direction are dropped with it")
            XCTAssertEqual(d.handle(.failed(errno: EPIPE)), [])
            XCTAssertEqual(d.handle(.destinationReady), [])
            XCTAssertEqual(d.handle(.sourceEnded), [])
        }
    }

    func testCancelIsQuietAndFinal() {
        var d = D(mode: .copy, capacity: 100)
        _ = d.handle(.filled(10))
        XCTAssertEqual(d.handle(.cancel), [])
        XCTAssertEqual(d.phase, .cancelled)
        XCTAssertEqual(d.handle(.destinationReady), [])
        XCTAssertEqual(d.handle(.sourceEnded), [])
        var ended = D(mode: .splice, capacity: 10)
        _ = ended.handle(.sourceEnded)
        XCTAssertEqual(ended.handle(.cancel), [])
        XCTAssertEqual(ended.phase, .ended, "an ended direction stays ended")
    }

    func testNonsenseResultsChangeNothing() {
        var d = D(mode: .splice, capacity: 100)
        XCTAssertEqual(d.handle(.filled(0)), [])
        XCTAssertEqual(d.handle(.flushed(0)), [])
        XCTAssertEqual(d.handle(.destinationReady), [], "nothing held, nothing to write")
        XCTAssertEqual(d.held, 0)
        _ = d.handle(.sourceEnded)
        XCTAssertEqual(d.handle(.filled(5)), [], "no bytes after the end of stream")
    }

    func testStreamTokensAreBase64URLOf128Bits() {
        XCTAssertEqual(StreamTokens.base64url([0xFB, 0xFF, 0xFE]), "-__-")
        XCTAssertEqual(StreamTokens.base64url([UInt8](repeating: 0, count: 16)), String(repeating: "A", count: 22))
        XCTAssertEqual(StreamTokens.base64url(Array("Man".utf8) + [0x4D]), "TWFuTQ")
    }
}
