import Glibc
import XCTest

@testable import TCPGateway

/// The connection lifecycle of contract §4 as the machine encodes it: each input's exact
/// actions and the state it leaves, with no socket involved.
final class ConnectionStateMachineTests: XCTestCase {
    typealias M = ConnectionStateMachine

    /// Everything the machine reports about itself, in one comparable value.
    private struct Snapshot: Equatable, CustomStringConvertible {
        var phase: M.Phase
        var inbound: M.Inbound
        var outbound: M.Outbound
        var peerFinished: Bool
        var canRead: Bool
        var inputEnded: Bool
        var canWrite: Bool

        init(
            _ phase: M.Phase, _ inbound: M.Inbound = .open, _ outbound: M.Outbound = .open,
            peerFinished: Bool = false, canRead: Bool, inputEnded: Bool, canWrite: Bool
        ) {
            self.phase = phase
            self.inbound = inbound
            self.outbound = outbound
            self.peerFinished = peerFinished
            self.canRead = canRead
            self.inputEnded = inputEnded
            self.canWrite = canWrite
        }

        init(of m: M) {
            self.init(
                m.phase, m.inbound, m.outbound, peerFinished: m.peerFinished, canRead: m.canRead,
                inputEnded: m.inputEnded, canWrite: m.canWrite)
        }

        var description: String {
            "\(phase) in:\(inbound) out:\(outbound) peerFinished:\(peerFinished) canRead:\(canRead) "
                + "inputEnded:\(inputEnded) canWrite:\(canWrite)"
        }
    }

    /// Feeds `input` and checks the actions it returns.
    private func expect(
        _ m: inout M, _ input: M.Input, _ actions: [M.Action], _ message: String = "",
        file: StaticString = #filePath, line: UInt = #line
    ) {
        let got = m.handle(input)
        XCTAssertEqual(got, actions, "actions for \(input) \(message)", file: file, line: line)
    }

    private func expectState(_ m: M, _ state: Snapshot, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(Snapshot(of: m), state, file: file, line: line)
    }

    /// Every input the machine takes, for "nothing happens any more" checks.
    private static let allInputs: [M.Input] = [
        .connected, .connectFailed, .peerFinished, .failed(errno: ECONNRESET),
        .clientShutdown(read: false, write: true), .clientShutdown(read: true, write: false),
        .clientShutdown(read: true, write: true), .writesDrained, .clientClose, .detached,
    ]

    private func expectInert(
        _ m: M, except skipped: [M.Input] = [], file: StaticString = #filePath, line: UInt = #line
    ) {
        for input in ConnectionStateMachineTests.allInputs where !skipped.contains(input) {
            var copy = m
            XCTAssertEqual(copy.handle(input), [], "\(input) in \(Snapshot(of: m))", file: file, line: line)
            XCTAssertEqual(copy, m, "\(input) changed the machine", file: file, line: line)
        }
    }

    /// A freshly connected machine after `.peerFinished`, checking that step.
    private func openAfterPeerFIN(flowing: Bool, file: StaticString = #filePath, line: UInt = #line) -> M {
        var m = M(connecting: false, flowing: flowing)
        expect(&m, .peerFinished, (flowing ? [.emitEnd] : []) + [.serveReceivers, .updateInterest], file: file, line: line)
        return m
    }

    private static let openState = Snapshot(.open, canRead: true, inputEnded: false, canWrite: true)

    // MARK: - Connecting

    func testRelayEndedIsGoneWithCloseEventAndErrorWhenThereIsOne() {
        var clean = M(connecting: false, flowing: false)
        expect(&clean, .relayEnded(errno: nil), [.failReceivers(.unknownHandle), .completeShutdowns, .closeSocket, .forget, .emitClose(errno: nil)])
        XCTAssertEqual(clean.phase, .gone)
        expect(&clean, .relayEnded(errno: nil), [], "once")
        var reset = M(connecting: false, flowing: true)
        _ = reset.handle(.peerFinished)
        expect(&reset, .relayEnded(errno: ECONNRESET), [.failReceivers(.unknownHandle), .completeShutdowns, .closeSocket, .forget, .emitClose(errno: ECONNRESET)])
        var closed = M(connecting: false, flowing: false)
        _ = closed.handle(.clientClose)
        expect(&closed, .relayEnded(errno: nil), [], "a handle the client closed has nothing to report")
        var connecting = M(connecting: true, flowing: false)
        expect(&connecting, .relayEnded(errno: nil), [], "never relayed while connecting")
        XCTAssertNil(reset.endedByFault)
    }

    func testRelayEndedByAFaultKeepsItsName() {
        var m = M(connecting: false, flowing: true)
        expect(&m, .relayEnded(errno: ECONNRESET, fault: "limitData_in"), [.failReceivers(.unknownHandle), .completeShutdowns, .closeSocket, .forget, .emitClose(errno: ECONNRESET)])
        XCTAssertEqual(m.endedByFault, "limitData_in", "for tcp.onClose's fault and the handle table's memory")
    }

    func testInitialStates() {
        let connecting = M(connecting: true, flowing: true)
        expectState(connecting, Snapshot(.connecting, canRead: false, inputEnded: true, canWrite: false))
        XCTAssertTrue(connecting.flowing)
        XCTAssertFalse(connecting.isOpen)

        let open = M(connecting: false, flowing: false)
        expectState(open, ConnectionStateMachineTests.openState)
        XCTAssertFalse(open.flowing)
        XCTAssertTrue(open.isOpen)
    }

    func testConnectingThenConnected() {
        var m = M(connecting: true, flowing: true)
        expect(&m, .connected, [.updateInterest])
        expectState(m, ConnectionStateMachineTests.openState)
        XCTAssertTrue(m.flowing, "an async handle stays flowing once connected")
        expect(&m, .connected, [], "a second connected is ignored")
        expect(&m, .connectFailed, [], "a late connect failure is ignored")
        expectState(m, ConnectionStateMachineTests.openState)
    }

    func testConnectFailed() {
        var m = M(connecting: true, flowing: true)
        expect(&m, .connectFailed, [.closeSocket, .forget])
        expectState(m, Snapshot(.gone, canRead: false, inputEnded: true, canWrite: false))
        // tcp.onConnect {error} is the handle's connect completion, not a machine event.
        expectInert(m)
    }

    func testFailedWhileConnecting() {
        var m = M(connecting: true, flowing: false)
        expect(&m, .failed(errno: ECONNREFUSED), [.closeSocket, .forget])
        expectState(m, Snapshot(.gone, canRead: false, inputEnded: true, canWrite: false))
        expectInert(m)
    }

    func testClientCloseWhileConnecting() {
        var m = M(connecting: true, flowing: true)
        expect(&m, .clientClose, [.closeSocket])
        expectState(m, Snapshot(.gone, canRead: false, inputEnded: true, canWrite: false))
        expectInert(m)
    }

    func testInputsThatNeedAnOpenHandleAreIgnoredWhileConnecting() {
        let m = M(connecting: true, flowing: true)
        expectInert(m, except: [.connected, .connectFailed, .failed(errno: ECONNRESET), .clientClose])
    }

    // MARK: - The peer's FIN

    func testPeerFINOnAFlowingHandle() {
        var m = openAfterPeerFIN(flowing: true)
        expectState(m, Snapshot(.open, .peerFinished, peerFinished: true, canRead: false, inputEnded: true, canWrite: true))
        expect(&m, .peerFinished, [], "one FIN, one onEnd")
    }

    func testPeerFINOnAPausedHandle() {
        var m = openAfterPeerFIN(flowing: false)
        expectState(m, Snapshot(.open, .peerFinished, peerFinished: true, canRead: false, inputEnded: true, canWrite: true))
        expect(&m, .peerFinished, [])
    }

    // MARK: - Both directions finished: tcp.onClose

    func testShutdownWriteThenPeerFIN() {
        for flowing in [true, false] {
            var m = M(connecting: false, flowing: flowing)
            expect(&m, .clientShutdown(read: false, write: true), [.drainWrites])
            expectState(m, Snapshot(.open, .open, .draining(thenRead: false), canRead: true, inputEnded: false, canWrite: false))
            expect(&m, .writesDrained, [.shutdownSocket(read: false, write: true), .completeShutdowns, .updateInterest])
            expectState(m, Snapshot(.open, .open, .shut, canRead: true, inputEnded: false, canWrite: false))
            expect(
                &m, .peerFinished,
                (flowing ? [.emitEnd] : []) + [
                    .serveReceivers, .failReceivers(.unknownHandle), .closeSocket, .forget, .emitClose(errno: nil),
                ])
            expectState(m, Snapshot(.gone, .peerFinished, .shut, peerFinished: true, canRead: false, inputEnded: true, canWrite: false))
            expectInert(m)
        }
    }

    func testPeerFINThenShutdownWrite() {
        var m = openAfterPeerFIN(flowing: true)
        expect(&m, .clientShutdown(read: false, write: true), [.drainWrites])
        expectState(
            m, Snapshot(.open, .peerFinished, .draining(thenRead: false), peerFinished: true, canRead: false, inputEnded: true, canWrite: false))
        // The shutdown is answered before the event that follows it.
        expect(
            &m, .writesDrained,
            [.shutdownSocket(read: false, write: true), .completeShutdowns, .failReceivers(.unknownHandle), .closeSocket, .forget, .emitClose(errno: nil)])
        expectState(m, Snapshot(.gone, .peerFinished, .shut, peerFinished: true, canRead: false, inputEnded: true, canWrite: false))
        expectInert(m)
    }

    func testPeerFINWhileDrainingThenDrained() {
        var m = M(connecting: false, flowing: true)
        expect(&m, .clientShutdown(read: false, write: true), [.drainWrites])
        // The FIN arrives before the queued writes reach the kernel: onEnd now, onClose once drained.
        expect(&m, .peerFinished, [.emitEnd, .serveReceivers, .updateInterest])
        expect(
            &m, .writesDrained,
            [.shutdownSocket(read: false, write: true), .completeShutdowns, .failReceivers(.unknownHandle), .closeSocket, .forget, .emitClose(errno: nil)])
        XCTAssertEqual(m.phase, .gone)
    }

    // MARK: - The client's own shutdown of both directions: kept as CLOSED, no event

    func testShutdownReadThenWrite() {
        var m = M(connecting: false, flowing: true)
        expect(&m, .clientShutdown(read: true, write: false), [.shutdownSocket(read: true, write: false), .serveReceivers, .updateInterest])
        expectState(m, Snapshot(.open, .shutByClient(afterPeerFIN: false), canRead: false, inputEnded: true, canWrite: true))
        expect(&m, .peerFinished, [], "reading is shut: a FIN can no longer be read")
        expect(&m, .clientShutdown(read: false, write: true), [.drainWrites])
        expect(&m, .writesDrained, [.shutdownSocket(read: false, write: true), .completeShutdowns, .failReceivers(.unknownHandle), .closeSocket])
        expectState(m, Snapshot(.closed, .shutByClient(afterPeerFIN: false), .shut, canRead: false, inputEnded: true, canWrite: false))
        XCTAssertFalse(m.isOpen)
        expectInert(m, except: [.clientClose])
        // tcp.close of the kept handle: the socket is already closed, no event.
        expect(&m, .clientClose, [])
        XCTAssertEqual(m.phase, .gone)
        expectInert(m)
    }

    func testShutdownWriteThenRead() {
        var m = M(connecting: false, flowing: false)
        expect(&m, .clientShutdown(read: false, write: true), [.drainWrites])
        expect(&m, .writesDrained, [.shutdownSocket(read: false, write: true), .completeShutdowns, .updateInterest])
        expect(
            &m, .clientShutdown(read: true, write: false),
            [.shutdownSocket(read: true, write: false), .serveReceivers, .updateInterest, .failReceivers(.unknownHandle), .closeSocket])
        expectState(m, Snapshot(.closed, .shutByClient(afterPeerFIN: false), .shut, canRead: false, inputEnded: true, canWrite: false))
    }

    func testShutdownReadWriteAtOnce() {
        var m = M(connecting: false, flowing: true)
        expect(&m, .clientShutdown(read: true, write: true), [.drainWrites])
        expectState(m, Snapshot(.open, .open, .draining(thenRead: true), canRead: true, inputEnded: false, canWrite: false))
        expect(
            &m, .writesDrained,
            [
                .shutdownSocket(read: false, write: true), .shutdownSocket(read: true, write: false), .serveReceivers, .updateInterest,
                .completeShutdowns, .failReceivers(.unknownHandle), .closeSocket,
            ])
        expectState(m, Snapshot(.closed, .shutByClient(afterPeerFIN: false), .shut, canRead: false, inputEnded: true, canWrite: false))
        expect(&m, .clientClose, [])
        XCTAssertEqual(m.phase, .gone)
    }

    /// The current rule: once the client has shut reading itself, the end of both directions
    /// is the client's doing, even when the peer's FIN had been read first, so the handle is
    /// kept as CLOSED with no tcp.onClose. (Contract §4 names "our shutdown "w" and the peer's
    /// FIN" as an onClose case without mentioning a shutdown "r" in between: reported.)
    func testShutdownReadAfterPeerFINThenWrite() {
        var m = openAfterPeerFIN(flowing: true)
        expect(&m, .clientShutdown(read: true, write: false), [.shutdownSocket(read: true, write: false), .serveReceivers, .updateInterest])
        expectState(m, Snapshot(.open, .shutByClient(afterPeerFIN: true), peerFinished: true, canRead: false, inputEnded: true, canWrite: true))
        expect(&m, .clientShutdown(read: false, write: true), [.drainWrites])
        expect(&m, .writesDrained, [.shutdownSocket(read: false, write: true), .completeShutdowns, .failReceivers(.unknownHandle), .closeSocket])
        expectState(m, Snapshot(.closed, .shutByClient(afterPeerFIN: true), .shut, peerFinished: true, canRead: false, inputEnded: true, canWrite: false))
    }

    /// Same rule for "rw" after the peer's FIN: kept, no event (while "w" alone would be onClose).
    func testPeerFINThenShutdownReadWrite() {
        var m = openAfterPeerFIN(flowing: false)
        expect(&m, .clientShutdown(read: true, write: true), [.drainWrites])
        expect(
            &m, .writesDrained,
            [
                .shutdownSocket(read: false, write: true), .shutdownSocket(read: true, write: false), .serveReceivers, .updateInterest,
                .completeShutdowns, .failReceivers(.unknownHandle), .closeSocket,
            ])
        expectState(m, Snapshot(.closed, .shutByClient(afterPeerFIN: true), .shut, peerFinished: true, canRead: false, inputEnded: true, canWrite: false))
    }

    // MARK: - Repeated shutdowns

    func testSecondShutdownWriteWhileDraining() {
        var m = M(connecting: false, flowing: true)
        expect(&m, .clientShutdown(read: false, write: true), [.drainWrites])
        // No second drain, and no early answer: both calls are answered when the drain is done.
        expect(&m, .clientShutdown(read: false, write: true), [])
        expectState(m, Snapshot(.open, .open, .draining(thenRead: false), canRead: true, inputEnded: false, canWrite: false))
        expect(&m, .writesDrained, [.shutdownSocket(read: false, write: true), .completeShutdowns, .updateInterest])
        expect(&m, .writesDrained, [], "one drain, one shutdown of the socket")
        expectState(m, Snapshot(.open, .open, .shut, canRead: true, inputEnded: false, canWrite: false))
    }

    func testShutdownReadWhileDrainingWrite() {
        var m = M(connecting: false, flowing: true)
        expect(&m, .clientShutdown(read: false, write: true), [.drainWrites])
        expect(&m, .clientShutdown(read: true, write: false), [.shutdownSocket(read: true, write: false), .serveReceivers, .updateInterest])
        expectState(m, Snapshot(.open, .shutByClient(afterPeerFIN: false), .draining(thenRead: false), canRead: false, inputEnded: true, canWrite: false))
        expect(&m, .writesDrained, [.shutdownSocket(read: false, write: true), .completeShutdowns, .failReceivers(.unknownHandle), .closeSocket])
        XCTAssertEqual(m.phase, .closed)
    }

    func testRepeatedShutdownsAfterTheyTookEffect() {
        var m = M(connecting: false, flowing: true)
        expect(&m, .clientShutdown(read: true, write: false), [.shutdownSocket(read: true, write: false), .serveReceivers, .updateInterest])
        expect(&m, .clientShutdown(read: true, write: false), [], "reading is shut once (the handle answers at once)")

        var w = M(connecting: false, flowing: true)
        expect(&w, .clientShutdown(read: false, write: true), [.drainWrites])
        expect(&w, .writesDrained, [.shutdownSocket(read: false, write: true), .completeShutdowns, .updateInterest])
        expect(&w, .clientShutdown(read: false, write: true), [], "writing is shut once (the handle answers at once)")
        expectState(w, Snapshot(.open, .open, .shut, canRead: true, inputEnded: false, canWrite: false))
    }

    // MARK: - Reset, error

    func testResetWhileOpen() {
        var m = M(connecting: false, flowing: true)
        expect(
            &m, .failed(errno: ECONNRESET),
            [.failReceivers(.system(ECONNRESET)), .completeShutdowns, .closeSocket, .forget, .emitClose(errno: ECONNRESET)])
        expectState(m, Snapshot(.gone, canRead: false, inputEnded: true, canWrite: false))
        expectInert(m)
    }

    func testResetByAFaultNamesIt() {
        var m = M(connecting: false, flowing: false)
        XCTAssertNil(m.endedByFault)
        expect(
            &m, .failed(errno: ECONNRESET, fault: "limitData_in"),
            [.failReceivers(.fault(name: "limitData_in", errno: ECONNRESET)), .completeShutdowns, .closeSocket, .forget,
             .emitClose(errno: ECONNRESET)])
        XCTAssertEqual(m.endedByFault, "limitData_in")
        expectInert(m)
        var plain = M(connecting: false, flowing: true)
        _ = plain.handle(.failed(errno: ECONNRESET))
        XCTAssertNil(plain.endedByFault, "a reset by the peer names no fault")
    }

    func testErrorOnAPausedHandleAfterPeerFIN() {
        var m = openAfterPeerFIN(flowing: false)
        expect(
            &m, .failed(errno: EPIPE),
            [.failReceivers(.system(EPIPE)), .completeShutdowns, .closeSocket, .forget, .emitClose(errno: EPIPE)])
        expectState(m, Snapshot(.gone, .peerFinished, peerFinished: true, canRead: false, inputEnded: true, canWrite: false))
    }

    func testErrorWhileDraining() {
        var m = M(connecting: false, flowing: true)
        expect(&m, .clientShutdown(read: false, write: true), [.drainWrites])
        expect(
            &m, .failed(errno: ETIMEDOUT),
            [.failReceivers(.system(ETIMEDOUT)), .completeShutdowns, .closeSocket, .forget, .emitClose(errno: ETIMEDOUT)])
        // The drain marker still finishes (the write queue is failed after the machine ends):
        // it answers any shutdown left, nothing else.
        expect(&m, .writesDrained, [.completeShutdowns])
        expect(&m, .writesDrained, [])
        expectState(m, Snapshot(.gone, .open, .shut, canRead: false, inputEnded: true, canWrite: false))
    }

    func testErrorAfterClose() {
        var closed = M(connecting: false, flowing: true)
        _ = closed.handle(.clientShutdown(read: true, write: true))
        _ = closed.handle(.writesDrained)
        XCTAssertEqual(closed.phase, .closed)
        expect(&closed, .failed(errno: ECONNRESET), [], "a kept CLOSED handle has no socket to fail")

        var gone = M(connecting: false, flowing: true)
        expect(&gone, .clientClose, [.failReceivers(.unknownHandle), .completeShutdowns, .closeSocket])
        expect(&gone, .failed(errno: ECONNRESET), [])
        XCTAssertEqual(gone.phase, .gone)
    }

    // MARK: - What the client ends itself: no event

    func testClientClose() {
        for flowing in [true, false] {
            var m = M(connecting: false, flowing: flowing)
            expect(&m, .clientClose, [.failReceivers(.unknownHandle), .completeShutdowns, .closeSocket])
            expectState(m, Snapshot(.gone, canRead: false, inputEnded: true, canWrite: false))
            expectInert(m)
        }
    }

    func testClientCloseAfterPeerFINAndWhileDraining() {
        var m = openAfterPeerFIN(flowing: true)
        expect(&m, .clientShutdown(read: false, write: true), [.drainWrites])
        expect(&m, .clientClose, [.failReceivers(.unknownHandle), .completeShutdowns, .closeSocket])
        // Releasing the socket finishes the drain marker: no shutdown, no event.
        expect(&m, .writesDrained, [.completeShutdowns])
        expectInert(m)
    }

    func testFlyAway() {
        var m = openAfterPeerFIN(flowing: false)
        expect(&m, .detached, [.failReceivers(.unknownHandle), .completeShutdowns])
        expectState(m, Snapshot(.gone, .peerFinished, peerFinished: true, canRead: false, inputEnded: true, canWrite: false))
        expectInert(m)
    }

    func testFlyAwayNeedsAnOpenHandle() {
        var connecting = M(connecting: true, flowing: true)
        expect(&connecting, .detached, [])
        XCTAssertEqual(connecting.phase, .connecting)

        var closed = M(connecting: false, flowing: true)
        _ = closed.handle(.clientShutdown(read: true, write: true))
        _ = closed.handle(.writesDrained)
        expect(&closed, .detached, [])
        XCTAssertEqual(closed.phase, .closed)
    }

    // MARK: - Flowing and paused

    func testResumeWithABufferedFIN() {
        var m = openAfterPeerFIN(flowing: false)
        expect(&m, .setFlowing(true), [.emitBuffered, .emitEnd, .failReceivers(.resumed), .updateInterest])
        XCTAssertTrue(m.flowing)
        expectState(m, Snapshot(.open, .peerFinished, peerFinished: true, canRead: false, inputEnded: true, canWrite: true))
    }

    func testResumeAndPause() {
        var m = M(connecting: false, flowing: false)
        expect(&m, .setFlowing(false), [], "already paused")
        expect(&m, .setFlowing(true), [.emitBuffered, .failReceivers(.resumed), .updateInterest])
        XCTAssertTrue(m.flowing)
        expect(&m, .setFlowing(true), [], "already flowing")
        expect(&m, .setFlowing(false), [.updateInterest])
        XCTAssertFalse(m.flowing)
        expectState(m, ConnectionStateMachineTests.openState)
    }

    func testFlowingWhileConnecting() {
        var m = M(connecting: true, flowing: false)
        expect(&m, .setFlowing(true), [.emitBuffered, .failReceivers(.resumed), .updateInterest])
        expect(&m, .connected, [.updateInterest])
        XCTAssertTrue(m.flowing)
    }

    /// One FIN, one tcp.onEnd: pausing and resuming after it does not announce it again.
    func testPauseResumeAfterFINOnAFlowingHandleDoesNotEmitEndAgain() {
        var m = openAfterPeerFIN(flowing: true)
        expect(&m, .setFlowing(false), [.updateInterest])
        expect(&m, .setFlowing(true), [.emitBuffered, .failReceivers(.resumed), .updateInterest])
        expect(&m, .setFlowing(false), [.updateInterest])
        expect(&m, .setFlowing(true), [.emitBuffered, .failReceivers(.resumed), .updateInterest])
    }

    /// A kept CLOSED handle is still reachable by tcp.resume: only the flag changes, no event.
    func testSetFlowingOnAClosedHandleEmitsNothing() {
        var closed = openAfterPeerFIN(flowing: false)
        _ = closed.handle(.clientShutdown(read: true, write: true))
        _ = closed.handle(.writesDrained)
        XCTAssertEqual(closed.phase, .closed)
        expect(&closed, .setFlowing(true), [.updateInterest])
        XCTAssertEqual(closed.phase, .closed, "only the flag changes")

        var gone = M(connecting: false, flowing: true)
        _ = gone.handle(.clientClose)
        expect(&gone, .setFlowing(false), [.updateInterest])
        XCTAssertEqual(gone.phase, .gone)
    }

    // MARK: - After the handle is gone

    func testNothingAfterGone() {
        var paths: [(String, M)] = []
        var closed = M(connecting: false, flowing: true)
        _ = closed.handle(.clientClose)
        paths.append(("clientClose", closed))
        var reset = M(connecting: false, flowing: false)
        _ = reset.handle(.failed(errno: ECONNRESET))
        paths.append(("reset", reset))
        var finished = M(connecting: false, flowing: true)
        _ = finished.handle(.clientShutdown(read: false, write: true))
        _ = finished.handle(.writesDrained)
        _ = finished.handle(.peerFinished)
        paths.append(("both directions", finished))
        var detached = M(connecting: false, flowing: true)
        _ = detached.handle(.detached)
        paths.append(("flyAway", detached))
        var refused = M(connecting: true, flowing: true)
        _ = refused.handle(.connectFailed)
        paths.append(("connectFailed", refused))

        for (name, m) in paths {
            XCTAssertEqual(m.phase, .gone, name)
            expectInert(m)
        }
    }
}
