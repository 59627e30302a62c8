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

    // MARK: faults in the relay

    func testBytesFedToTheChainsAreWrittenOnlyOncePassed() {
        var d = D(mode: .copy, capacity: 100)
        XCTAssertEqual(d.handle(.sourceReady), [.readIn(max: 100)])
        XCTAssertEqual(d.handle(.fedToChain(60)), [], "nothing to write: the chain holds them")
        XCTAssertEqual(d.held, 0)
        XCTAssertFalse(d.wantsDestination)
        _ = d.handle(.chain(held: 60, stopsReading: false))
        XCTAssertTrue(d.wantsSource, "the chains hold less than the high-water mark")
        _ = d.handle(.chain(held: 0, stopsReading: false))
        XCTAssertEqual(d.handle(.passed(60)), [.writeOut(max: 60)])
        XCTAssertEqual(d.handle(.flushed(60)), [.readIn(max: 100)])
    }

    func testAChainThatHoldsTooMuchOrStallsStopsTheSource() {
        var d = D(mode: .copy, capacity: 100)
        _ = d.handle(.chain(held: 5000, stopsReading: true))
        XCTAssertFalse(d.wantsSource)
        XCTAssertEqual(d.handle(.sourceReady), [], "a stalled source is not read: a zero window")
        XCTAssertEqual(d.handle(.passed(10)), [.writeOut(max: 10)])
        XCTAssertEqual(d.handle(.flushed(10)), [], "still stopped after the write")
        _ = d.handle(.chain(held: 0, stopsReading: false))
        XCTAssertTrue(d.wantsSource, "removing the stall resumes")
        XCTAssertEqual(d.handle(.sourceReady), [.readIn(max: 100)])
    }

    func testTheEndStaysBehindWhatTheChainsHold() {
        var d = D(mode: .copy, capacity: 100)
        _ = d.handle(.fedToChain(40))
        _ = d.handle(.chain(held: 40, stopsReading: false))
        XCTAssertEqual(d.handle(.sourceEndedIntoChain), [], "no shutdown while the chain holds bytes")
        XCTAssertEqual(d.phase, .endInChain)
        XCTAssertFalse(d.wantsSource)
        XCTAssertFalse(d.isFinished)
        XCTAssertEqual(d.handle(.passed(40)), [.writeOut(max: 40)])
        XCTAssertEqual(d.handle(.flushed(40)), [], "written, but the end is still in the chain")
        XCTAssertEqual(d.handle(.chainEnded), [.shutdownDestination, .reportEnd])
        XCTAssertEqual(d.phase, .ended)
    }

    func testAnEndOutOfTheChainsWaitsForTheBytesBeforeIt() {
        var d = D(mode: .copy, capacity: 100)
        _ = d.handle(.sourceEndedIntoChain)
        XCTAssertEqual(d.handle(.passed(30)), [.writeOut(max: 30)])
        XCTAssertEqual(d.handle(.chainEnded), [.writeOut(max: 30)])
        XCTAssertEqual(d.handle(.flushed(30)), [.shutdownDestination, .reportEnd])
    }

    func testSwitchToCopyWaitsUntilThePipeIsEmptyAndKeepsOrder() {
        var d = D(mode: .splice, capacity: 1000, otherCapacity: 100)
        _ = d.handle(.filled(500))
        _ = d.handle(.flushWouldBlock)
        XCTAssertEqual(d.handle(.switchMode(.copy)), [])
        XCTAssertEqual(d.mode, .splice, "the pipe still holds bytes read before the fault")
        XCTAssertEqual(d.switchingTo, .copy)
        XCTAssertFalse(d.wantsSource, "nothing new is read until the pipe is empty")
        XCTAssertEqual(d.handle(.destinationReady), [.spliceOut(max: 500)])
        XCTAssertEqual(d.handle(.flushed(200)), [.spliceOut(max: 300)])
        XCTAssertEqual(d.mode, .splice)
        XCTAssertEqual(d.handle(.flushed(300)), [.readIn(max: 100)], "then it reads for the chains, with the copy buffer's size")
        XCTAssertEqual(d.mode, .copy)
        XCTAssertNil(d.switchingTo)
        XCTAssertEqual(d.capacity, 100)
    }

    func testSwitchToCopyWithAnEmptyPipeIsImmediate() {
        var d = D(mode: .splice, capacity: 1000, otherCapacity: 100)
        XCTAssertEqual(d.handle(.switchMode(.copy)), [])
        XCTAssertEqual(d.mode, .copy)
        XCTAssertEqual(d.handle(.sourceReady), [.readIn(max: 100)])
    }

    func testASwitchTakenBackBeforeThePipeEmptiedStaysSplicing() {
        var d = D(mode: .splice, capacity: 1000)
        _ = d.handle(.filled(10))
        _ = d.handle(.flushWouldBlock)
        _ = d.handle(.switchMode(.copy))
        _ = d.handle(.switchMode(.splice))
        XCTAssertNil(d.switchingTo)
        XCTAssertEqual(d.handle(.flushed(10)), [.spliceIn(max: 1000)])
        XCTAssertEqual(d.mode, .splice)
    }

    func testSwitchBackToSpliceOnlyOnceTheChainsHoldNothing() {
        var d = D(mode: .copy, capacity: 100, otherCapacity: 1000)
        _ = d.handle(.fedToChain(50))
        _ = d.handle(.chain(held: 50, stopsReading: false))
        XCTAssertEqual(d.handle(.switchMode(.splice)), [])
        XCTAssertEqual(d.mode, .copy, "the chains still hold bytes")
        _ = d.handle(.chain(held: 0, stopsReading: false))
        XCTAssertEqual(d.handle(.passed(50)), [.writeOut(max: 50)])
        _ = d.handle(.switchMode(.splice))
        XCTAssertEqual(d.mode, .splice)
        XCTAssertEqual(d.handle(.destinationReady), [.writeOut(max: 50)], "what the chains let go is written before anything spliced")
        XCTAssertEqual(d.handle(.flushed(50)), [.spliceIn(max: 1000)])
        var ending = D(mode: .copy, capacity: 100)
        _ = ending.handle(.sourceEndedIntoChain)
        _ = ending.handle(.switchMode(.splice))
        XCTAssertEqual(ending.mode, .copy, "the end is still inside the chains")
    }

    func testAQueuedFillOrFlushIsAskedAgainAfterASwitch() {
        var d = D(mode: .splice, capacity: 1000, otherCapacity: 100)
        let fill = d.handle(.sourceReady)
        XCTAssertEqual(fill, [.spliceIn(max: 1000)])
        _ = d.handle(.switchMode(.copy))
        XCTAssertEqual(d.current(.spliceIn(max: 1000)), .readIn(max: 100), "a splice queued before the switch becomes a read")
        _ = d.handle(.passed(10))
        XCTAssertEqual(d.current(.spliceOut(max: 5)), .writeOut(max: 10))
        _ = d.handle(.chain(held: 0, stopsReading: true))
        XCTAssertNil(d.current(.readIn(max: 100)), "no longer wanted: the chains stop the source")
        _ = d.handle(.flushed(10))
        XCTAssertNil(d.current(.writeOut(max: 10)), "nothing left to write")
        var ended = D(mode: .copy, capacity: 100)
        let actions = ended.handle(.sourceEnded)
        XCTAssertEqual(actions.compactMap { ended.current($0) }, [.shutdownDestination, .reportEnd], "ends always run")
    }

    func testStreamTokensAreBase64URLOf128Bits() {
        XCTAssertEqual(StreamTokens.base64url([0xFB, 0xFF, 0xFE]), "-__-")
        XCTAssertEqual(StreamTokens.base64url([UInt8](repeating: 0, count: 16)), String(repeating: "A", count: 22))
        XCTAssertEqual(StreamTokens.base64url(Array("Man".utf8) + [0x4D]), "TWFuTQ")
    }
}
