import Foundation
import CNetShim
import JSONRPC
import NIOCore

/// What a server's accepting does next, as a value: whether the listeners are watched and
/// when to try again after running out of descriptors (the listener stays readable then, so
/// watching it would spin).
struct AcceptStateMachine: Equatable {
    enum Action: Equatable {
        /// Take queued connections now, for waiters first, then for async accepting.
        case drain
        case watch(Bool)
        case scheduleRetry(milliseconds: Int)
    }

    static let retryMilliseconds = 100

    private(set) var waiters = 0
    private(set) var asyncAccepting = false
    private(set) var backingOff = false
    private(set) var closed = false

    private var wanted: Bool { !closed && (waiters > 0 || asyncAccepting) }

    mutating func waiterAdded() -> [Action] {
        waiters += 1
        return backingOff || closed ? [] : [.watch(true)]
    }

    mutating func waiterLeft() -> [Action] {
        waiters = max(0, waiters - 1)
        return backingOff ? [] : [.watch(wanted)]
    }

    mutating func startAsync() -> [Action] {
        asyncAccepting = true
        return backingOff || closed ? [] : [.drain, .watch(true)]
    }

    mutating func readable() -> [Action] { wanted && !backingOff ? [.drain] : [.watch(false)] }

    mutating func outOfDescriptors() -> [Action] {
        guard !backingOff, !closed else { return [] }
        backingOff = true
        return [.watch(false), .scheduleRetry(milliseconds: AcceptStateMachine.retryMilliseconds)]
    }

    mutating func retryDue() -> [Action] {
        guard backingOff, !closed else { return [] }
        backingOff = false
        return [.drain, .watch(wanted)]
    }

    /// After a drain: keep watching only while someone still wants connections.
    mutating func drained() -> [Action] { backingOff ? [] : [.watch(wanted)] }

    mutating func close() -> [Action] {
        closed = true
        return [.watch(false)]
    }
}

/// A listening TCP socket under a handle, plus the extra consecutive ports of `tcp.mports`.
///
/// The gateway accepts by hand so that each new connection's descriptor is its own from the
/// start. Connections are taken from the kernel's queue only when someone waits: a sync
/// accept, or async accepting.
final class ServerHandle {
    /// Gets the accepted socket (its owner from now on) and the peer's address.
    typealias AcceptedHandler = (consuming OwnedFD, SockAddr) -> Void

    private struct Waiter {
        let id: UInt64
        let accepted: AcceptedHandler
        let failed: (RPCError) -> Void
        var timer: ReactorTimer?
    }

    /// One listening socket of the server, watched on its behalf.
    private final class Listener: ReactorSource {
        let socket: OwnedFD
        var watch = IOWatch()
        unowned let server: ServerHandle

        init(socket: consuming OwnedFD, server: ServerHandle) {
            self.socket = socket
            self.server = server
        }

        func ready(_ events: IOEvents) { server.apply(server.accepting.readable()) }
    }

    struct Options {
        var backlog: Int
        var device: String?
        var ipv6Only: Bool?
        var reuseAddr: Bool = true
    }

    let id: Int64
    unowned let session: Session
    private let reactor: Reactor
    private var listeners: [Listener] = []
    private(set) var local: SockAddr
    var options: Options
    private(set) var extraPorts = 0
    /// Faults every connection accepted from now on gets its own instance of (contract §10).
    var faultTemplates: [FaultSpec] = []
    private var accepting = AcceptStateMachine()
    private var waiters: CircularBuffer<Waiter> = []
    private var nextWaiterID: UInt64 = 1

    init(id: Int64, session: Session, socket: consuming OwnedFD, local: SockAddr, options: Options) {
        self.id = id
        self.session = session
        self.reactor = session.gateway.reactor
        self.local = local
        self.options = options
        listeners = [Listener(socket: socket, server: self)]
    }

    var isClosed: Bool { accepting.closed }
    var asyncAccepting: Bool { accepting.asyncAccepting }
    var primaryFD: Int32 { listeners.first?.socket.raw ?? -1 }
    var listenerCount: Int { listeners.count }

    /// Creates, configures, binds and listens one socket. `reuseAddr` is on by default, as in
    /// the seed.
    static func listen(on address: SockAddr, options: Options) throws -> OwnedFD {
        let fd = try SystemError.check(tcpgw_tcp_socket(address.domain), "socket")
        do {
            try SystemError.check(
                tcpgw_setsockopt_int(fd, tcpgw_const_sol_socket(), tcpgw_const_so_reuseaddr(), options.reuseAddr ? 1 : 0),
                "setsockopt")
            if address.domain == SockAddr.inet6, let v6only = options.ipv6Only {
                try SystemError.check(
                    tcpgw_setsockopt_int(fd, tcpgw_const_ipproto_ipv6(), tcpgw_const_ipv6_v6only(), v6only ? 1 : 0),
                    "setsockopt")
            }
            if let device = options.device {
                try SystemError.check(tcpgw_bind_to_device(fd, device), "setsockopt")
            }
            try SystemError.check(tcpgw_bind(fd, address.addr, Int32(address.port), address.domain), "bind")
            try SystemError.check(tcpgw_listen(fd, Int32(options.backlog)), "listen")
            return OwnedFD(adopting: fd)
        } catch {
            _ = tcpgw_close(fd)
            throw error
        }
    }

    // MARK: accepting

    func accept(timeoutMS: Int?, accepted: @escaping AcceptedHandler, failed: @escaping (RPCError) -> Void) {
        var remote = SockAddr(domain: 0, addr: "", port: 0)
        if waiters.isEmpty, let ready = acceptNow(&remote) {
            accepted(ready, remote)
            return
        }
        if timeoutMS == 0 {
            failed(.timedOut("accept"))
            return
        }
        let waiterID = nextWaiterID
        nextWaiterID += 1
        var waiter = Waiter(id: waiterID, accepted: accepted, failed: failed, timer: nil)
        if let ms = timeoutMS {
            waiter.timer = reactor.schedule(in: ms) { [weak self] in self?.expire(waiterID) }
        }
        waiters.append(waiter)
        apply(accepting.waiterAdded())
    }

    func startAsyncAccepting() {
        apply(accepting.startAsync())
    }

    private func expire(_ waiterID: UInt64) {
        guard let index = waiters.firstIndex(where: { $0.id == waiterID }) else { return }
        let waiter = waiters.remove(at: index)
        waiter.failed(.timedOut("accept"))
        apply(accepting.waiterLeft())
    }

    /// Connections from addresses the policy's `accept` list refuses, reset per call at most:
    /// a flood of them cannot hold the loop (the listener stays readable and is served again).
    private static let maxRefusedPerCall = 64

    /// One connection from any of the listeners, if the kernel has one queued that the policy's
    /// `accept` list allows. A refused one is reset at once (RST, not FIN), audited, and never
    /// handed on: the caller keeps waiting for the next.
    private func acceptNow(_ remote: inout SockAddr) -> OwnedFD? {
        var refused = 0
        for listener in listeners {
            while refused < ServerHandle.maxRefusedPerCall {
                var peer = tcpgw_sockaddr()
                let newFD = tcpgw_accept(listener.socket.raw, &peer)
                if newFD == -EMFILE || newFD == -ENFILE {
                    apply(accepting.outOfDescriptors())
                    return nil
                }
                if newFD < 0 { break }  // this listener's queue is empty
                let socket = OwnedFD(adopting: newFD)
                let from = SockAddr(peer)
                let decision = session.policy.decide(accept: from)
                session.record(decision, handle: id)
                guard decision.allowed else {
                    session.gateway.logger.info("server \(id): \(decision.refusal ?? "refused"); reset")
                    _ = tcpgw_set_linger(socket.raw, 1, 0)
                    refused += 1
                    continue  // dropping `socket` closes it: with linger {1, 0}, a reset
                }
                remote = from
                return socket
            }
        }
        return nil
    }

    fileprivate func apply(_ actions: [AcceptStateMachine.Action]) {
        for action in actions {
            switch action {
            case .drain:
                drainQueue()
            case .watch(let on):
                for listener in listeners {
                    try? listener.watch.set(on ? .read : [], fd: listener.socket.raw, source: listener, reactor: reactor)
                }
            case .scheduleRetry(let ms):
                reactor.schedule(in: ms) { [weak self] in
                    guard let self else { return }
                    self.apply(self.accepting.retryDue())
                }
            }
        }
    }

    /// Hands queued connections to sync waiters first, then to async accepting.
    private func drainQueue() {
        while !accepting.closed, !waiters.isEmpty || accepting.asyncAccepting {
            if accepting.asyncAccepting && waiters.isEmpty && !session.handles.hasRoom {
                break  // the handle limit is reached; connections wait in the kernel's queue
            }
            var remote = SockAddr(domain: 0, addr: "", port: 0)
            guard let ready = acceptNow(&remote) else { break }
            if let waiter = waiters.popFirst() {
                waiter.timer?.cancel()
                _ = accepting.waiterLeft()
                waiter.accepted(ready, remote)
            } else {
                session.acceptedAsync(server: self, socket: ready, remote: remote)
            }
        }
        apply(accepting.drained())
    }

    // MARK: options that touch every listener

    func forEachFD(_ body: (Int32) throws -> Void) throws {
        guard !isClosed else { throw RPCError.handleState("handle \(id) is closed") }
        for listener in listeners { try body(listener.socket.raw) }
    }

    /// `tcp.mports`: listens on port+1 ... port+count as well (0 removes the extra ports).
    func setExtraPorts(_ count: Int) throws {
        guard !isClosed else { throw RPCError.handleState("handle \(id) is closed") }
        if count > 0 && local.port + count > 65535 {
            throw RPCError.invalidParams("'mports' would go past port 65535 (base port \(local.port))")
        }
        // Ports already listened on stay as they are (binding them again would collide with
        // ourselves); only the missing ones are created, and those beyond `count` released.
        var created: [Listener] = []
        for offset in stride(from: extraPorts + 1, through: count, by: 1) {
            var address = local
            address.port = local.port + offset
            // A failure drops (and so closes) what was created so far.
            created.append(Listener(socket: try ServerHandle.listen(on: address, options: options), server: self))
        }
        for listener in listeners.dropFirst(1 + count) { listener.watch.cancel(reactor: reactor) }
        listeners = Array(listeners.prefix(1 + count)) + created
        extraPorts = count
        apply(accepting.drained())
    }

    /// `tcp.setIPv6Only` on a listening IPv6 server: Linux takes the option only before bind, so
    /// the listeners are made again on the same address and ports with the option set.
    func relisten(ipv6Only: Bool) throws {
        guard !isClosed else { throw RPCError.handleState("handle \(id) is closed") }
        var newOptions = options
        newOptions.ipv6Only = ipv6Only
        let ports = [local.port] + (0..<extraPorts).map { local.port + 1 + $0 }
        // Release first: the same ports are bound again at once.
        releaseListeners()
        do {
            for port in ports {
                var address = local
                address.port = port
                listeners.append(Listener(socket: try ServerHandle.listen(on: address, options: newOptions), server: self))
            }
        } catch {
            releaseListeners()
            close()
            session.handles.forget(id)
            throw error
        }
        options = newOptions
        apply(accepting.drained())
    }

    private func releaseListeners() {
        for listener in listeners { listener.watch.cancel(reactor: reactor) }
        listeners = []  // closes them
    }

    func close() {
        guard !accepting.closed else { return }
        apply(accepting.close())
        releaseListeners()
        while let waiter = waiters.popFirst() {
            waiter.timer?.cancel()
            waiter.failed(.unknownHandle(id))
        }
    }

    /// For flyAway: a duplicate of the main listener, then the handle closes its own sockets.
    func detachForFlyAway() throws -> OwnedFD {
        guard !isClosed else { throw RPCError.handleState("handle \(id) is closed") }
        let copy = dup(primaryFD)
        guard copy >= 0 else { throw SystemError(errno: errno, syscall: "dup") }
        close()
        return OwnedFD(adopting: copy)
    }
}
