import CNetShim
import Foundation

/// What a registered descriptor wants to hear about.
struct IOInterest: OptionSet, Sendable {
    let rawValue: UInt8
    static let read = IOInterest(rawValue: 1)
    static let write = IOInterest(rawValue: 2)
}

/// What epoll reported for a descriptor. A hang-up or an error counts as both readable and
/// writable: the next read or write says what happened, with its errno.
struct IOEvents {
    let raw: UInt32
    var readable: Bool { raw & Reactor.readMask != 0 }
    var writable: Bool { raw & Reactor.writeMask != 0 }
    var hangup: Bool { raw & Reactor.hangupMask != 0 }
}

/// Something that owns a descriptor registered with the reactor.
protocol ReactorSource: AnyObject {
    func ready(_ events: IOEvents)
}

/// Work an object asks to run after the current batch of events (see `Reactor.defer`).
protocol DeferredWork: AnyObject {
    func runDeferred()
}

/// The gateway's one event loop: every descriptor (Unix clients, listeners, connects in
/// progress, connections) is watched by one level-triggered epoll set and served on the thread
/// that calls `run()`, so no state needs a lock and no readiness event hops between threads.
///
/// Besides descriptors it runs timers (a binary heap, one-shot, cancellable) and deferred work
/// (`execute`: after the current batch of events, before the next wait), and takes work from
/// other threads through an eventfd (`submit`).
final class Reactor: @unchecked Sendable {  // loop-confined, except `submit` and `stop` (locked)
    struct Token: Equatable {
        fileprivate let index: UInt32
        fileprivate let generation: UInt32
        fileprivate var packed: UInt64 { UInt64(generation) << 32 | UInt64(index) }
    }

    private struct Slot {
        var generation: UInt32 = 0
        var fd: Int32 = -1
        var events: UInt32 = 0
        var source: ReactorSource?
    }

    static let readMask = tcpgw_epoll_in() | tcpgw_epoll_hup() | tcpgw_epoll_err()
    static let writeMask = tcpgw_epoll_out() | tcpgw_epoll_hup() | tcpgw_epoll_err()
    static let hangupMask = tcpgw_epoll_hup() | tcpgw_epoll_err()
    private static let wakeToken = UInt64.max

    private let epfd: Int32
    private let wakefd: Int32
    private var slots: [Slot] = []
    private var freeSlots: [UInt32] = []
    private var timers = TimerHeap()
    private var deferred: [() -> Void] = []
    private var deferredWork: [DeferredWork] = []
    private var loopThread: pthread_t?

    private let lock = NSLock()
    private var submitted: [@Sendable () -> Void] = []
    private var stopRequested = false

    init() throws {
        let ep = tcpgw_epoll_create()
        guard ep >= 0 else { throw SystemError(errno: -ep, syscall: "epoll_create1") }
        let wake = tcpgw_eventfd()
        guard wake >= 0 else {
            _ = tcpgw_close(ep)
            throw SystemError(errno: -wake, syscall: "eventfd")
        }
        epfd = ep
        wakefd = wake
        _ = tcpgw_epoll_ctl(epfd, 0, wakefd, tcpgw_epoll_in(), Reactor.wakeToken)
    }

    deinit {
        _ = tcpgw_close(epfd)
        _ = tcpgw_close(wakefd)
    }

    var isOnLoop: Bool {
        guard let loopThread else { return true }  // not running yet: set-up happens before
        return pthread_equal(loopThread, pthread_self()) != 0
    }

    // MARK: descriptors

    /// Starts watching `fd` for `interest` (empty still reports hang-ups and errors).
    func register(_ fd: Int32, _ interest: IOInterest, _ source: ReactorSource) throws -> Token {
        assert(isOnLoop)
        let index: UInt32
        if let reused = freeSlots.popLast() {
            index = reused
        } else {
            index = UInt32(slots.count)
            slots.append(Slot())
        }
        slots[Int(index)].generation &+= 1
        let token = Token(index: index, generation: slots[Int(index)].generation)
        let events = Reactor.epollEvents(interest)
        let rc = tcpgw_epoll_ctl(epfd, 0, fd, events, token.packed)
        guard rc == 0 else {
            freeSlots.append(index)
            throw SystemError(errno: -rc, syscall: "epoll_ctl")
        }
        slots[Int(index)].fd = fd
        slots[Int(index)].events = events
        slots[Int(index)].source = source
        return token
    }

    /// Changes what a registered descriptor is watched for; no syscall when nothing changes.
    func update(_ token: Token, _ interest: IOInterest) {
        assert(isOnLoop)
        guard let slot = live(token) else { return }
        let events = Reactor.epollEvents(interest)
        guard slots[slot].events != events else { return }
        slots[slot].events = events
        _ = tcpgw_epoll_ctl(epfd, 1, slots[slot].fd, events, token.packed)
    }

    /// Stops watching; call before the descriptor is closed or handed away. Events already
    /// fetched for it are dropped (the slot's generation no longer matches).
    func deregister(_ token: Token) {
        assert(isOnLoop)
        guard let slot = live(token) else { return }
        _ = tcpgw_epoll_ctl(epfd, 2, slots[slot].fd, 0, 0)
        slots[slot].source = nil
        slots[slot].fd = -1
        slots[slot].generation &+= 1
        freeSlots.append(UInt32(slot))
    }

    private func live(_ token: Token) -> Int? {
        let slot = Int(token.index)
        guard slot < slots.count, slots[slot].generation == token.generation, slots[slot].source != nil else { return nil }
        return slot
    }

    private static func epollEvents(_ interest: IOInterest) -> UInt32 {
        (interest.contains(.read) ? tcpgw_epoll_in() : 0) | (interest.contains(.write) ? tcpgw_epoll_out() : 0)
    }

    // MARK: timers and deferred work

    /// Runs `body` on the loop after `milliseconds` (at the earliest), unless cancelled first.
    @discardableResult
    func schedule(in milliseconds: Int, _ body: @escaping () -> Void) -> ReactorTimer {
        assert(isOnLoop)
        let delay = UInt64(max(milliseconds, 0)) * 1_000_000
        let timer = ReactorTimer(deadline: tcpgw_monotonic_ns() &+ delay, body: body)
        timers.push(timer)
        return timer
    }

    /// Runs `body` after the events now being handled, before the loop waits again: work
    /// queued while a batch is handled (answers to flush, say) leaves together.
    func execute(_ body: @escaping () -> Void) {
        assert(isOnLoop)
        deferred.append(body)
    }

    /// `execute` for an object's own work, without a closure to allocate (the hot path: a
    /// client's answers are flushed this way once per loop iteration).
    func `defer`(_ work: DeferredWork) {
        assert(isOnLoop)
        deferredWork.append(work)
    }

    /// Runs `body` on the loop; callable from any thread.
    func submit(_ body: @escaping @Sendable () -> Void) {
        lock.lock()
        submitted.append(body)
        lock.unlock()
        _ = tcpgw_eventfd_signal(wakefd)
    }

    /// Makes `run()` return after the current iteration; callable from any thread.
    func stop() {
        lock.lock()
        stopRequested = true
        lock.unlock()
        _ = tcpgw_eventfd_signal(wakefd)
    }

    // MARK: the loop

    /// Serves events on the calling thread until `stop()`.
    func run() {
        loopThread = pthread_self()
        var tokens = [UInt64](repeating: 0, count: 256)
        var events = [UInt32](repeating: 0, count: 256)
        while true {
            runDeferred()
            lock.lock()
            let stopping = stopRequested
            lock.unlock()
            if stopping { break }
            let n = tcpgw_epoll_wait(epfd, &tokens, &events, 256, timers.waitMilliseconds(now: tcpgw_monotonic_ns()))
            if n > 0 {
                for i in 0..<Int(n) {
                    let token = tokens[i]
                    if token == Reactor.wakeToken {
                        _ = tcpgw_eventfd_drain(wakefd)
                        runSubmitted()
                        continue
                    }
                    let slot = Int(token & 0xFFFF_FFFF)
                    guard slot < slots.count, UInt64(slots[slot].generation) == token >> 32,
                        let source = slots[slot].source
                    else { continue }
                    source.ready(IOEvents(raw: events[i]))
                }
            }
            let now = tcpgw_monotonic_ns()
            while let due = timers.popDue(now: now) { due() }
        }
        runDeferred()
    }

    private func runDeferred() {
        // Work may queue more work; bounded so a task that re-queues itself cannot starve I/O.
        var rounds = 0
        while (!deferred.isEmpty || !deferredWork.isEmpty) && rounds < 16 {
            if !deferred.isEmpty {
                let batch = deferred
                deferred.removeAll(keepingCapacity: true)
                for body in batch { body() }
            }
            if !deferredWork.isEmpty {
                let batch = deferredWork
                deferredWork.removeAll(keepingCapacity: true)
                for work in batch { work.runDeferred() }
            }
            rounds += 1
        }
    }

    private func runSubmitted() {
        lock.lock()
        let batch = submitted
        submitted.removeAll()
        lock.unlock()
        for body in batch { body() }
    }
}

/// A one-shot timer; `cancel()` drops its work at once (the heap forgets it when it comes due).
final class ReactorTimer {
    fileprivate let deadline: UInt64
    fileprivate let sequence: UInt64
    fileprivate var body: (() -> Void)?
    private nonisolated(unsafe) static var counter: UInt64 = 0  // loop-confined

    fileprivate init(deadline: UInt64, body: @escaping () -> Void) {
        self.deadline = deadline
        ReactorTimer.counter &+= 1
        self.sequence = ReactorTimer.counter
        self.body = body
    }

    func cancel() { body = nil }
    var isPending: Bool { body != nil }
}

/// Timers by deadline (ties in the order they were set).
private struct TimerHeap {
    private var heap: [ReactorTimer] = []

    private static func earlier(_ a: ReactorTimer, _ b: ReactorTimer) -> Bool {
        a.deadline != b.deadline ? a.deadline < b.deadline : a.sequence < b.sequence
    }

    mutating func push(_ timer: ReactorTimer) {
        heap.append(timer)
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard TimerHeap.earlier(heap[child], heap[parent]) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    private mutating func popFirst() -> ReactorTimer {
        let first = heap[0]
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1
                let right = left + 1
                var smallest = parent
                if left < heap.count && TimerHeap.earlier(heap[left], heap[smallest]) { smallest = left }
                if right < heap.count && TimerHeap.earlier(heap[right], heap[smallest]) { smallest = right }
                if smallest == parent { break }
                heap.swapAt(parent, smallest)
                parent = smallest
            }
        }
        return first
    }

    /// epoll_wait's timeout: -1 with no timer, else the milliseconds to the first (rounded up).
    mutating func waitMilliseconds(now: UInt64) -> Int32 {
        while let first = heap.first, first.body == nil { _ = popFirst() }
        guard let first = heap.first else { return -1 }
        if first.deadline <= now { return 0 }
        let ms = (first.deadline - now + 999_999) / 1_000_000
        return Int32(min(ms, 3_600_000))
    }

    /// The next timer that is due (its work taken out), if any. The caller runs the work, so
    /// that work may set timers of its own.
    mutating func popDue(now: UInt64) -> (() -> Void)? {
        while let first = heap.first, first.deadline <= now || first.body == nil {
            let timer = popFirst()
            if let body = timer.body {
                timer.body = nil
                return body
            }
        }
        return nil
    }
}

/// A descriptor's registration as its owner wants it: registered while it wants something
/// (or always, for sockets whose hang-up must be seen at once), with the syscalls kept to the
/// changes.
struct IOWatch {
    private(set) var token: Reactor.Token?
    private var current: IOInterest = []
    /// Stay registered with no interest, so that a hang-up is still reported.
    let watchHangupWhenIdle: Bool

    init(watchHangupWhenIdle: Bool = false) {
        self.watchHangupWhenIdle = watchHangupWhenIdle
    }

    var interest: IOInterest { current }

    /// Watches `fd` for exactly `interest` from now on.
    mutating func set(_ interest: IOInterest, fd: Int32, source: ReactorSource, reactor: Reactor) throws {
        if let token {
            if interest.isEmpty && !watchHangupWhenIdle {
                reactor.deregister(token)
                self.token = nil
            } else {
                reactor.update(token, interest)
            }
        } else if !interest.isEmpty || watchHangupWhenIdle {
            token = try reactor.register(fd, interest, source)
        }
        current = interest
    }

    /// Stops watching (before the descriptor closes or leaves).
    mutating func cancel(reactor: Reactor) {
        if let token { reactor.deregister(token) }
        token = nil
        current = []
    }
}
