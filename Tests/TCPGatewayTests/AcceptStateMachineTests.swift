import XCTest

@testable import TCPGateway

/// A server's accepting as a value: when the listeners are watched, when queued connections
/// are taken, and the back-off after running out of descriptors.
final class AcceptStateMachineTests: XCTestCase {
    typealias A = AcceptStateMachine

    private func expect(
        _ m: inout A, _ body: (inout A) -> [A.Action], _ actions: [A.Action], _ message: String = "",
        file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertEqual(body(&m), actions, message, file: file, line: line)
    }

    func testInitialState() {
        let m = A()
        XCTAssertEqual(m.waiters, 0)
        XCTAssertFalse(m.asyncAccepting)
        XCTAssertFalse(m.backingOff)
        XCTAssertFalse(m.closed)
        XCTAssertEqual(A.retryMilliseconds, 100)
    }

    func testWaitersAddedAndLeft() {
        var m = A()
        expect(&m, { $0.waiterAdded() }, [.watch(true)])
        expect(&m, { $0.waiterAdded() }, [.watch(true)])
        XCTAssertEqual(m.waiters, 2)
        expect(&m, { $0.waiterLeft() }, [.watch(true)], "one waiter is still there")
        expect(&m, { $0.waiterLeft() }, [.watch(false)], "nobody waits any more")
        XCTAssertEqual(m.waiters, 0)
        expect(&m, { $0.waiterLeft() }, [.watch(false)], "an extra leave does not go below zero")
        XCTAssertEqual(m.waiters, 0)
        expect(&m, { $0.waiterAdded() }, [.watch(true)])
        XCTAssertEqual(m.waiters, 1)
    }

    func testAsyncAccepting() {
        var m = A()
        expect(&m, { $0.startAsync() }, [.drain, .watch(true)], "take what is queued already, then watch")
        XCTAssertTrue(m.asyncAccepting)
        expect(&m, { $0.waiterAdded() }, [.watch(true)])
        expect(&m, { $0.waiterLeft() }, [.watch(true)], "async accepting still wants connections")
        expect(&m, { $0.readable() }, [.drain])
        expect(&m, { $0.drained() }, [.watch(true)])
    }

    func testReadable() {
        var m = A()
        expect(&m, { $0.readable() }, [.watch(false)], "nobody wants connections: stop watching")
        expect(&m, { $0.drained() }, [.watch(false)])
        _ = m.waiterAdded()
        expect(&m, { $0.readable() }, [.drain])
        expect(&m, { $0.drained() }, [.watch(true)])
        _ = m.waiterLeft()
        expect(&m, { $0.drained() }, [.watch(false)])
    }

    func testOutOfDescriptors() {
        var m = A()
        _ = m.startAsync()
        expect(&m, { $0.outOfDescriptors() }, [.watch(false), .scheduleRetry(milliseconds: A.retryMilliseconds)])
        XCTAssertTrue(m.backingOff)
        expect(&m, { $0.outOfDescriptors() }, [], "a second EMFILE while backing off schedules nothing")
        // While backing off the listener stays readable; nothing may watch it again.
        expect(&m, { $0.readable() }, [.watch(false)])
        expect(&m, { $0.drained() }, [])
        expect(&m, { $0.waiterAdded() }, [])
        expect(&m, { $0.waiterLeft() }, [])
        XCTAssertEqual(m.waiters, 0)
        XCTAssertTrue(m.backingOff)
    }

    func testStartAsyncWhileBackingOff() {
        var m = A()
        _ = m.waiterAdded()
        _ = m.outOfDescriptors()
        expect(&m, { $0.startAsync() }, [])
        XCTAssertTrue(m.asyncAccepting, "remembered for the retry")
        expect(&m, { $0.retryDue() }, [.drain, .watch(true)])
    }

    func testRetryDue() {
        var wanted = A()
        _ = wanted.waiterAdded()
        _ = wanted.outOfDescriptors()
        expect(&wanted, { $0.retryDue() }, [.drain, .watch(true)])
        XCTAssertFalse(wanted.backingOff)
        expect(&wanted, { $0.retryDue() }, [], "one retry per back-off")
        expect(&wanted, { $0.outOfDescriptors() }, [.watch(false), .scheduleRetry(milliseconds: A.retryMilliseconds)], "and it can back off again")

        var unwanted = A()
        _ = unwanted.waiterAdded()
        _ = unwanted.outOfDescriptors()
        _ = unwanted.waiterLeft()  // the waiter timed out during the back-off
        expect(&unwanted, { $0.retryDue() }, [.drain, .watch(false)])

        var idle = A()
        expect(&idle, { $0.retryDue() }, [], "no back-off, no retry")
    }

    func testClose() {
        var m = A()
        _ = m.startAsync()
        _ = m.waiterAdded()
        expect(&m, { $0.close() }, [.watch(false)])
        XCTAssertTrue(m.closed)
        expect(&m, { $0.readable() }, [.watch(false)])
        expect(&m, { $0.drained() }, [.watch(false)])
        expect(&m, { $0.waiterLeft() }, [.watch(false)])
        expect(&m, { $0.outOfDescriptors() }, [])
        expect(&m, { $0.retryDue() }, [])
        XCTAssertFalse(m.backingOff)
        expect(&m, { $0.close() }, [.watch(false)], "closing twice only unwatches")
    }

    func testCloseWhileBackingOff() {
        var m = A()
        _ = m.startAsync()
        _ = m.outOfDescriptors()
        expect(&m, { $0.close() }, [.watch(false)])
        expect(&m, { $0.retryDue() }, [], "the retry timer that fires after close does nothing")
        expect(&m, { $0.outOfDescriptors() }, [])
    }

    /// Nothing is watched or drained after close.
    func testWaiterOrAsyncAfterCloseAsksForNothing() {
        var m = A()
        _ = m.close()
        expect(&m, { $0.waiterAdded() }, [])
        expect(&m, { $0.startAsync() }, [])
        expect(&m, { $0.readable() }, [.watch(false)], "but readiness is never served")
        expect(&m, { $0.drained() }, [.watch(false)])
    }
}
