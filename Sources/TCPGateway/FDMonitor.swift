import CNetShim
import Foundation
import NIOCore

/// Readiness notifications for descriptors that NIO does not own: the gateway's Unix socket
/// connections (read with recvmsg for SCM_RIGHTS), TCP listeners (accepted by hand so each new
/// socket's descriptor is known) and connects in progress.
///
/// One thread waits in epoll; every interest is one-shot and every callback runs on the event
/// loop, so all state stays on the loop thread.
final class FDMonitor: @unchecked Sendable {  // its state is touched on the loop only; the thread only waits and hops there
    struct Interest: OptionSet {
        let rawValue: Int
        static let read = Interest(rawValue: 1)
        static let write = Interest(rawValue: 2)
    }

    private struct Registration {
        let token: UInt64
        var onRead: (() -> Void)?
        var onWrite: (() -> Void)?
        var wanted: Interest {
            var interest: Interest = []
            if onRead != nil { interest.insert(.read) }
            if onWrite != nil { interest.insert(.write) }
            return interest
        }
    }

    private let loop: EventLoop
    private let epfd: Int32
    private let wakefd: Int32
    private var thread: Thread?
    // Loop-only state. A descriptor can wait to read and to write at once (a client socket
    // with queued answers); each registration has its own token so that an event for a closed
    // and reused descriptor number is recognised as stale.
    private var registrations: [Int32: Registration] = [:]
    private var fdForToken: [UInt64: Int32] = [:]
    private var nextToken: UInt64 = 1
    private let stopped = ManagedAtomicFlag()
    private let readableMask = tcpgw_epoll_readable_mask()
    private let writableMask = tcpgw_epoll_writable_mask()

    init(loop: EventLoop) throws {
        self.loop = loop
        let ep = tcpgw_epoll_create()
        guard ep >= 0 else { throw SystemError(errno: -ep, syscall: "epoll_create1") }
        let wake = tcpgw_eventfd()
        guard wake >= 0 else {
            _ = tcpgw_close(ep)
            throw SystemError(errno: -wake, syscall: "eventfd")
        }
        epfd = ep
        wakefd = wake
        _ = tcpgw_epoll_arm(epfd, wakefd, 1, 0, 0, 1)
        let thread = Thread { [epfd, wakefd, loop, stopped, self] in
            var tokens = [UInt64](repeating: 0, count: 64)
            var events = [UInt32](repeating: 0, count: 64)
            while !stopped.isSet {
                let n = tcpgw_epoll_wait(epfd, &tokens, &events, 64, -1)
                if n < 0 { continue }  // EINTR
                var fired: [(UInt64, UInt32)] = []
                for i in 0..<Int(n) {
                    if tokens[i] == 0 {
                        _ = tcpgw_eventfd_drain(wakefd)
                        _ = tcpgw_epoll_arm(epfd, wakefd, 1, 0, 0, 0)
                    } else {
                        fired.append((tokens[i], events[i]))
                    }
                }
                if !fired.isEmpty {
                    let batch = fired
                    loop.execute { self.fire(batch) }
                }
            }
        }
        thread.name = "tcpgw-fdmonitor"
        self.thread = thread
        thread.start()
    }

    /// Calls `callback` on the loop once `fd` is ready for `interest` (or has an error/hang-up).
    /// A read and a write interest on the same descriptor are independent.
    func arm(_ fd: Int32, for interest: Interest, _ callback: @escaping () -> Void) {
        loop.preconditionInEventLoop()
        let isNew = registrations[fd] == nil
        var registration = registrations[fd] ?? Registration(token: nextToken)
        if isNew {
            nextToken += 1
            fdForToken[registration.token] = fd
        }
        if interest.contains(.read) { registration.onRead = callback }
        if interest.contains(.write) { registration.onWrite = callback }
        registrations[fd] = registration
        if !update(fd, registration, add: isNew) {
            // epoll refuses (e.g. a regular file): report readiness at once so the caller's
            // syscall surfaces the real error.
            let token = registration.token
            loop.execute { self.fire([(token, self.readableMask | self.writableMask)]) }
        }
    }

    private func update(_ fd: Int32, _ registration: Registration, add: Bool) -> Bool {
        let wanted = registration.wanted
        return tcpgw_epoll_arm(
            epfd, fd, wanted.contains(.read) ? 1 : 0, wanted.contains(.write) ? 1 : 0, registration.token,
            add ? 1 : 0) == 0
    }

    /// Forgets `fd`; call before closing it.
    func remove(_ fd: Int32) {
        loop.preconditionInEventLoop()
        guard let registration = registrations.removeValue(forKey: fd) else { return }
        fdForToken[registration.token] = nil
        _ = tcpgw_epoll_remove(epfd, fd)
    }

    private func fire(_ events: [(UInt64, UInt32)]) {
        for (token, mask) in events {
            guard let fd = fdForToken[token], var registration = registrations[fd], registration.token == token else {
                continue
            }
            let onRead = mask & readableMask != 0 ? registration.onRead : nil
            let onWrite = mask & writableMask != 0 ? registration.onWrite : nil
            if onRead != nil { registration.onRead = nil }
            if onWrite != nil { registration.onWrite = nil }
            registrations[fd] = registration
            // One-shot: re-arm whatever interest is still waiting.
            if !registration.wanted.isEmpty { _ = update(fd, registration, add: false) }
            onRead?()
            onWrite?()
        }
    }

    func shutdown() {
        stopped.set()
        _ = tcpgw_eventfd_signal(wakefd)
        // The thread exits at its next wake-up; the descriptors die with the process.
    }
}

/// A set-once flag shared with the monitor thread.
final class ManagedAtomicFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
    func set() { lock.lock(); value = true; lock.unlock() }
}
