import CNetShim
import Foundation
import NIOCore

/// Readiness notifications for descriptors that NIO does not own: the gateway's Unix socket
/// connections (read with recvmsg for SCM_RIGHTS), TCP listeners (accepted by hand so each new
/// socket's descriptor is known) and connects in progress.
///
/// One thread waits in epoll; every interest is one-shot and every callback runs on the event
/// loop, so all state stays on the loop thread.
final class FDMonitor {
    struct Interest: OptionSet {
        let rawValue: Int
        static let read = Interest(rawValue: 1)
        static let write = Interest(rawValue: 2)
    }

    private let loop: EventLoop
    private let epfd: Int32
    private let wakefd: Int32
    private var thread: Thread?
    // Written on the loop, read by the waiting thread only through epoll tokens.
    private var callbacks: [UInt64: (fd: Int32, callback: () -> Void)] = [:]
    private var tokenForFD: [Int32: UInt64] = [:]
    private var registered: Set<Int32> = []
    private var nextToken: UInt64 = 1
    private let stopped = ManagedAtomicFlag()

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
        let thread = Thread { [epfd, wakefd, loop, stopped, weak self] in
            var tokens = [UInt64](repeating: 0, count: 64)
            var events = [UInt32](repeating: 0, count: 64)
            while !stopped.isSet {
                let n = tcpgw_epoll_wait(epfd, &tokens, &events, 64, -1)
                if n < 0 { continue }  // EINTR
                var fired: [UInt64] = []
                for i in 0..<Int(n) {
                    if tokens[i] == 0 {
                        _ = tcpgw_eventfd_drain(wakefd)
                        _ = tcpgw_epoll_arm(epfd, wakefd, 1, 0, 0, 0)
                    } else {
                        fired.append(tokens[i])
                    }
                }
                if !fired.isEmpty {
                    loop.execute { self?.fire(fired) }
                }
            }
        }
        thread.name = "tcpgw-fdmonitor"
        self.thread = thread
        thread.start()
    }

    /// Calls `callback` on the loop once `fd` is ready for `interest` (or has an error/hang-up).
    func arm(_ fd: Int32, for interest: Interest, _ callback: @escaping () -> Void) {
        loop.preconditionInEventLoop()
        let token = nextToken
        nextToken += 1
        if let old = tokenForFD[fd] { callbacks[old] = nil }
        tokenForFD[fd] = token
        callbacks[token] = (fd, callback)
        let add: Int32 = registered.contains(fd) ? 0 : 1
        let rc = tcpgw_epoll_arm(
            epfd, fd, interest.contains(.read) ? 1 : 0, interest.contains(.write) ? 1 : 0, token, add)
        if rc == 0 {
            registered.insert(fd)
        } else {
            // epoll refuses (e.g. a regular file): report readiness at once so the caller's
            // syscall surfaces the real error.
            loop.execute { self.fire([token]) }
        }
    }

    /// Forgets `fd`; call before closing it.
    func remove(_ fd: Int32) {
        loop.preconditionInEventLoop()
        if let token = tokenForFD.removeValue(forKey: fd) { callbacks[token] = nil }
        if registered.remove(fd) != nil { _ = tcpgw_epoll_remove(epfd, fd) }
    }

    private func fire(_ tokens: [UInt64]) {
        for token in tokens {
            guard let entry = callbacks.removeValue(forKey: token) else { continue }
            if tokenForFD[entry.fd] == token { tokenForFD[entry.fd] = nil }
            entry.callback()
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
