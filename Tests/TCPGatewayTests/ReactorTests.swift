import Dispatch
import Foundation
import Glibc
import XCTest

@testable import TCPGateway

/// The event loop itself: timers, deferred and submitted work, stopping, and readiness on
/// Unix socket pairs (no network). Every run is bounded: a loop that does not stop fails the
/// test instead of hanging it.
final class ReactorTests: XCTestCase {
    /// What happened on the loop, in order; readable from the test thread once the loop is done.
    private final class Log: @unchecked Sendable {  // locked
        private let lock = NSLock()
        private var items: [String] = []

        func add(_ item: String) {
            lock.lock()
            items.append(item)
            lock.unlock()
        }

        var all: [String] {
            lock.lock()
            defer { lock.unlock() }
            return items
        }
    }

    /// A registered descriptor's owner that records what it was told.
    private final class Probe: ReactorSource {
        let name: String
        private(set) var calls: [IOEvents] = []
        var onReady: ((IOEvents) -> Void)?

        init(_ name: String = "probe") { self.name = name }

        func ready(_ events: IOEvents) {
            calls.append(events)
            onReady?(events)
        }
    }

    /// A thread running `reactor.run()`.
    private struct LoopThread {
        let finished = DispatchSemaphore(value: 0)

        init(_ reactor: Reactor) {
            let finished = self.finished
            Thread {
                reactor.run()
                finished.signal()
            }.start()
        }

        /// Whether `run()` returned within `seconds`.
        func join(within seconds: Double) -> Bool {
            finished.wait(timeout: .now() + seconds) == .success
        }
    }

    /// Runs the loop on a thread until the test's own work stops it; fails (and stops it) after
    /// `seconds`.
    private func run(_ reactor: Reactor, within seconds: Double = 2, file: StaticString = #filePath, line: UInt = #line) {
        let loop = LoopThread(reactor)
        if !loop.join(within: seconds) {
            XCTFail("the loop was still running after \(seconds) s", file: file, line: line)
            reactor.stop()
            _ = loop.join(within: 2)
        }
    }

    private func socketPair(file: StaticString = #filePath, line: UInt = #line) throws -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        let rc = socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds)
        guard rc == 0 else {
            XCTFail("socketpair: errno \(errno)", file: file, line: line)
            throw SystemError(errno: errno, syscall: "socketpair")
        }
        return (fds[0], fds[1])
    }

    private func writeByte(_ fd: Int32) {
        var byte: UInt8 = 0x78
        XCTAssertEqual(Glibc.write(fd, &byte, 1), 1)
    }

    private func readByte(_ fd: Int32) {
        var byte: UInt8 = 0
        XCTAssertEqual(Glibc.read(fd, &byte, 1), 1)
    }

    // MARK: - Timers

    func testTimersFireInDeadlineOrder() throws {
        let reactor = try Reactor()
        let log = Log()
        reactor.schedule(in: 30) { log.add("30") }
        reactor.schedule(in: 10) { log.add("10") }
        reactor.schedule(in: 20) { log.add("20") }
        reactor.schedule(in: 0) { log.add("0") }
        reactor.schedule(in: -5) { log.add("-5 counts as 0") }
        reactor.schedule(in: 40) { [unowned reactor] in
            log.add("stop")
            reactor.stop()
        }
        run(reactor)
        XCTAssertEqual(log.all, ["0", "-5 counts as 0", "10", "20", "30", "stop"])
    }

    func testTiesFireInTheOrderSet() throws {
        let reactor = try Reactor()
        let log = Log()
        // Interleaved delays push the heap around; equal delays must keep the order they were set.
        let delays = [5, 0, 10]
        var expected: [(Int, Int)] = []
        for i in 0..<60 {
            let delay = delays[i % 3]
            expected.append((delay, i))
            reactor.schedule(in: delay) { log.add("\(delay):\(i)") }
        }
        reactor.schedule(in: 20) { [unowned reactor] in reactor.stop() }
        run(reactor)
        let order = expected.sorted { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }.map { "\($0.0):\($0.1)" }
        XCTAssertEqual(log.all, order)
    }

    func testCancelDropsTheWork() throws {
        let reactor = try Reactor()
        let log = Log()
        let cancelled = reactor.schedule(in: 5) { log.add("cancelled before the loop ran") }
        XCTAssertTrue(cancelled.isPending)
        cancelled.cancel()
        XCTAssertFalse(cancelled.isPending)
        // Both due in the same batch: the first cancels the second.
        var second: ReactorTimer?
        reactor.schedule(in: 0) {
            log.add("first")
            second?.cancel()
        }
        second = reactor.schedule(in: 0) { log.add("cancelled by the first") }
        reactor.schedule(in: 20) { [unowned reactor] in
            log.add("stop")
            reactor.stop()
        }
        run(reactor)
        XCTAssertEqual(log.all, ["first", "stop"])
        XCTAssertFalse(second?.isPending ?? true)
    }

    func testTimerIsNotPendingOnceItRan() throws {
        let reactor = try Reactor()
        let timer = reactor.schedule(in: 0) { [unowned reactor] in reactor.stop() }
        run(reactor)
        XCTAssertFalse(timer.isPending)
        timer.cancel()  // harmless after it ran
    }

    /// A timer's work sets more timers (the heap is not being accessed while the work runs).
    func testTimerWorkSchedulesTimers() throws {
        let reactor = try Reactor()
        let log = Log()
        reactor.schedule(in: 1) { [unowned reactor] in
            log.add("first")
            reactor.schedule(in: 5) { [unowned reactor] in
                log.add("third")
                reactor.stop()
            }
            reactor.schedule(in: 0) { log.add("second") }
            let dropped = reactor.schedule(in: 0) { log.add("cancelled") }
            dropped.cancel()
        }
        run(reactor)
        XCTAssertEqual(log.all, ["first", "second", "third"])
    }

    func testTimerChain() throws {
        let reactor = try Reactor()
        let log = Log()
        func step(_ n: Int) {
            log.add("\(n)")
            if n == 10 {
                reactor.stop()
            } else {
                reactor.schedule(in: n % 2) { step(n + 1) }
            }
        }
        reactor.schedule(in: 0) { step(1) }
        run(reactor)
        XCTAssertEqual(log.all, (1...10).map { "\($0)" })
    }

    // MARK: - Deferred work

    func testExecuteRunsAfterTheCurrentBatch() throws {
        let reactor = try Reactor()
        let log = Log()
        reactor.execute { log.add("set up before run") }
        reactor.schedule(in: 0) { [unowned reactor] in
            log.add("t1")
            reactor.execute { log.add("deferred by t1") }
        }
        reactor.schedule(in: 0) { log.add("t2") }
        reactor.schedule(in: 30) { [unowned reactor] in
            log.add("stop")
            reactor.stop()
        }
        run(reactor)
        XCTAssertEqual(log.all, ["set up before run", "t1", "t2", "deferred by t1", "stop"])
    }

    /// Nothing else is pending: deferred work that waited for the next wake-up would hang here.
    func testExecuteRunsBeforeTheNextWait() throws {
        let reactor = try Reactor()
        let log = Log()
        reactor.schedule(in: 0) { [unowned reactor] in
            reactor.execute { [unowned reactor] in
                log.add("d1")
                reactor.execute { [unowned reactor] in
                    log.add("d2")
                    reactor.execute {
                        log.add("d3")
                        reactor.stop()
                    }
                }
            }
        }
        run(reactor)
        XCTAssertEqual(log.all, ["d1", "d2", "d3"])
    }

    func testExecuteAfterAReadinessBatch() throws {
        let (a1, b1) = try socketPair()
        let (a2, b2) = try socketPair()
        defer { for fd in [a1, b1, a2, b2] { close(fd) } }
        let reactor = try Reactor()
        let log = Log()
        for (fd, name) in [(a1, "one"), (a2, "two")] {
            let probe = Probe(name)
            probe.onReady = { [unowned reactor] _ in
                self.readByte(fd)
                log.add("ready")
                if log.all.count == 1 {
                    reactor.execute {
                        log.add("deferred")
                        reactor.stop()
                    }
                }
            }
            _ = try reactor.register(fd, .read, probe)  // the reactor keeps the probe while registered
        }
        writeByte(b1)
        writeByte(b2)
        run(reactor)
        XCTAssertEqual(log.all, ["ready", "ready", "deferred"], "both were ready in one batch; deferred work follows it")
    }

    // MARK: - Other threads

    func testSubmitFromAnotherThreadRunsOnTheLoop() throws {
        let reactor = try Reactor()
        let log = Log()
        let started = DispatchSemaphore(value: 0)
        let loopThread = LoopThreadID()
        reactor.execute {
            loopThread.set(pthread_self())
            started.signal()
        }
        let loop = LoopThread(reactor)
        XCTAssertEqual(started.wait(timeout: .now() + 2), .success)
        XCTAssertFalse(reactor.isOnLoop, "the test thread is not the loop")

        let submitted = DispatchSemaphore(value: 0)
        Thread {
            for i in 0..<50 {
                reactor.submit {
                    let same = loopThread.matches(pthread_self()) && reactor.isOnLoop
                    log.add(same ? "\(i)" : "\(i) off the loop")
                }
            }
            reactor.submit { submitted.signal() }
        }.start()
        XCTAssertEqual(submitted.wait(timeout: .now() + 2), .success, "submitted work ran")
        reactor.stop()
        XCTAssertTrue(loop.join(within: 2))
        XCTAssertEqual(log.all, (0..<50).map { "\($0)" }, "in the order submitted, on the loop thread")
    }

    func testStopFromAnotherThreadEndsRun() throws {
        let reactor = try Reactor()
        let started = DispatchSemaphore(value: 0)
        reactor.execute { started.signal() }
        let loop = LoopThread(reactor)  // nothing to watch: it waits without a timeout
        XCTAssertEqual(started.wait(timeout: .now() + 2), .success)
        Thread { reactor.stop() }.start()
        XCTAssertTrue(loop.join(within: 2), "stop() woke the waiting loop")
    }

    func testStopBeforeRun() throws {
        let reactor = try Reactor()
        let log = Log()
        reactor.execute { log.add("deferred") }
        reactor.stop()
        run(reactor)
        XCTAssertEqual(log.all, ["deferred"], "run() still does the deferred work, then returns")
    }

    // MARK: - Readiness

    func testReadableAfterTheOtherEndWrites() throws {
        let (a, b) = try socketPair()
        defer { close(a); close(b) }
        let reactor = try Reactor()
        let probe = Probe()
        probe.onReady = { [unowned reactor] _ in reactor.stop() }
        _ = try reactor.register(a, .read, probe)
        // Written once the loop waits, so readiness has to wake it.
        reactor.schedule(in: 10) { self.writeByte(b) }
        run(reactor)
        XCTAssertEqual(probe.calls.count, 1)
        XCTAssertTrue(probe.calls.first?.readable ?? false)
        XCTAssertFalse(probe.calls.first?.writable ?? true, "not watched for writing")
        XCTAssertFalse(probe.calls.first?.hangup ?? true)
    }

    func testWritableInterest() throws {
        let (a, b) = try socketPair()
        defer { close(a); close(b) }
        let reactor = try Reactor()
        let probe = Probe()
        probe.onReady = { [unowned reactor] _ in reactor.stop() }
        _ = try reactor.register(a, .write, probe)
        run(reactor)
        XCTAssertEqual(probe.calls.count, 1)
        XCTAssertTrue(probe.calls.first?.writable ?? false)
        XCTAssertFalse(probe.calls.first?.readable ?? true)
    }

    func testUpdateToEmptyInterestStopsReports() throws {
        let (a, b) = try socketPair()
        defer { close(a); close(b) }
        let reactor = try Reactor()
        let log = Log()
        let probe = Probe()
        let token = Box<Reactor.Token>()
        probe.onReady = { [unowned reactor] _ in
            log.add("ready")
            guard log.all.count == 1, let registered = token.value else {
                reactor.stop()
                return
            }
            // The byte stays unread: level-triggered, it would be reported on every wait.
            reactor.update(registered, [])
            reactor.schedule(in: 30) {
                log.add("watch again")
                reactor.update(registered, .read)
            }
        }
        token.value = try reactor.register(a, .read, probe)
        writeByte(b)
        run(reactor)
        XCTAssertEqual(log.all, ["ready", "watch again", "ready"])
    }

    /// An event already fetched for a descriptor deregistered earlier in the same batch is
    /// dropped, even when a new registration has taken over its slot.
    func testDeregisteredDescriptorGetsNoPendingEvent() throws {
        let (a1, b1) = try socketPair()
        let (a2, b2) = try socketPair()
        let (a3, b3) = try socketPair()
        defer { for fd in [a1, b1, a2, b2, a3, b3] { close(fd) } }
        let reactor = try Reactor()
        let log = Log()
        let first = Probe("one")
        let second = Probe("two")
        let newcomer = Probe("newcomer")
        newcomer.onReady = { [unowned reactor] _ in
            log.add("newcomer")
            self.readByte(a3)
            reactor.stop()
        }
        let tokens = Box<[String: Reactor.Token]>()
        tokens.value = [:]
        for (probe, fd, other) in [(first, a1, "two"), (second, a2, "one")] {
            probe.onReady = { [unowned reactor, unowned newcomer] _ in
                log.add("ready")
                self.readByte(fd)
                guard let otherToken = tokens.value?[other] else { return }
                // The other descriptor's event is in this batch already.
                reactor.deregister(otherToken)
                tokens.value?[other] = nil
                tokens.value?["newcomer"] = try? reactor.register(a3, .read, newcomer)
                // Readable only later: a call to the newcomer before this is a stale event.
                reactor.schedule(in: 20) {
                    log.add("wrote")
                    self.writeByte(b3)
                }
            }
        }
        tokens.value?["one"] = try reactor.register(a1, .read, first)
        tokens.value?["two"] = try reactor.register(a2, .read, second)
        writeByte(b1)
        writeByte(b2)
        run(reactor)
        XCTAssertEqual(log.all, ["ready", "wrote", "newcomer"])
        XCTAssertEqual(first.calls.count + second.calls.count, 1, "only the first of the batch was served")
        XCTAssertNotNil(tokens.value?["newcomer"], "registered (in the freed slot)")
        XCTAssertEqual(newcomer.calls.count, 1)
        XCTAssertTrue(newcomer.calls.first?.readable ?? false)
    }

    func testDeregisterStopsReports() throws {
        let (a, b) = try socketPair()
        defer { close(a); close(b) }
        let reactor = try Reactor()
        let probe = Probe()
        let token = Box<Reactor.Token>()
        probe.onReady = { [unowned reactor] _ in
            if let registered = token.value { reactor.deregister(registered) }
            reactor.deregister(token.value!)  // twice: ignored
            reactor.update(token.value!, .read)  // a stale token: ignored
            reactor.schedule(in: 30) { reactor.stop() }
        }
        token.value = try reactor.register(a, .read, probe)
        writeByte(b)
        run(reactor)
        XCTAssertEqual(probe.calls.count, 1)
    }

    func testHangupIsReportedWithEmptyInterest() throws {
        let (a, b) = try socketPair()
        defer { close(a) }
        let reactor = try Reactor()
        let probe = Probe()
        probe.onReady = { [unowned reactor] _ in reactor.stop() }
        _ = try reactor.register(a, [], probe)
        close(b)
        run(reactor)
        XCTAssertEqual(probe.calls.count, 1)
        let events = try XCTUnwrap(probe.calls.first)
        XCTAssertTrue(events.hangup)
        XCTAssertTrue(events.readable, "a hang-up counts as readable")
        XCTAssertTrue(events.writable, "and as writable")
    }

    // MARK: - IOWatch

    func testIOWatchRegistersOnlyWhileInterested() throws {
        let (a, b) = try socketPair()
        defer { close(a); close(b) }
        let reactor = try Reactor()
        let probe = Probe()
        var watch = IOWatch()
        XCTAssertFalse(watch.watchHangupWhenIdle)
        try watch.set([], fd: a, source: probe, reactor: reactor)
        XCTAssertNil(watch.token, "nothing wanted: not registered")
        try watch.set(.read, fd: a, source: probe, reactor: reactor)
        let token = try XCTUnwrap(watch.token)
        XCTAssertEqual(watch.interest, .read)
        try watch.set([.read, .write], fd: a, source: probe, reactor: reactor)
        XCTAssertEqual(watch.token, token, "a change of interest keeps the registration")
        XCTAssertEqual(watch.interest, [.read, .write])
        try watch.set([], fd: a, source: probe, reactor: reactor)
        XCTAssertNil(watch.token, "deregistered when nothing is wanted")
        XCTAssertEqual(watch.interest, [])
        try watch.set(.write, fd: a, source: probe, reactor: reactor)
        XCTAssertNotNil(watch.token)
        XCTAssertNotEqual(watch.token, token, "a new registration")
        watch.cancel(reactor: reactor)
        XCTAssertNil(watch.token)
        XCTAssertEqual(watch.interest, [])
    }

    func testIOWatchHangupWhenIdleStaysRegistered() throws {
        let (a, b) = try socketPair()
        defer { close(a); close(b) }
        let reactor = try Reactor()
        let probe = Probe()
        var watch = IOWatch(watchHangupWhenIdle: true)
        try watch.set([], fd: a, source: probe, reactor: reactor)
        let token = try XCTUnwrap(watch.token, "registered with no interest")
        try watch.set(.read, fd: a, source: probe, reactor: reactor)
        XCTAssertEqual(watch.token, token)
        try watch.set([], fd: a, source: probe, reactor: reactor)
        XCTAssertEqual(watch.token, token, "still registered when idle")
        XCTAssertEqual(watch.interest, [])
        watch.cancel(reactor: reactor)
        XCTAssertNil(watch.token)
    }

    func testIOWatchIdleHangupIsSeenOnlyWhenAsked() throws {
        for watchHangup in [true, false] {
            let (a, b) = try socketPair()
            defer { close(a) }
            let reactor = try Reactor()
            let log = Log()
            let probe = Probe()
            probe.onReady = { [unowned reactor] events in
                log.add(events.hangup ? "hangup" : "other")
                reactor.stop()
            }
            var watch = IOWatch(watchHangupWhenIdle: watchHangup)
            try watch.set(.read, fd: a, source: probe, reactor: reactor)
            try watch.set([], fd: a, source: probe, reactor: reactor)
            close(b)
            reactor.schedule(in: 30) { [unowned reactor] in
                log.add("timeout")
                reactor.stop()
            }
            run(reactor)
            XCTAssertEqual(log.all, watchHangup ? ["hangup"] : ["timeout"], "watchHangupWhenIdle: \(watchHangup)")
        }
    }
}

/// A value set on one thread and read on another.
private final class LoopThreadID: @unchecked Sendable {  // locked
    private let lock = NSLock()
    private var thread: pthread_t?

    func set(_ value: pthread_t) {
        lock.lock()
        thread = value
        lock.unlock()
    }

    func matches(_ other: pthread_t) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard let thread else { return false }
        return pthread_equal(thread, other) != 0
    }
}

/// A mutable slot for closures on the loop (set up before it runs, read after it stopped).
private final class Box<Value> {
    var value: Value?
}
