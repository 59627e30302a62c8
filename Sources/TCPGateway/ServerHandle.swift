import Foundation
import CNetShim
import JSONRPC
import NIOCore

/// A listening TCP socket under a handle, plus the extra consecutive ports of `tcp.mports`.
///
/// The gateway accepts by hand (watching the listeners with the FD monitor) so that each new
/// connection's descriptor is known before NIO adopts it. Connections are taken from the
/// kernel's queue only when someone waits: a sync accept, or async accepting.
final class ServerHandle {
    struct Waiter {
        let id: UInt64
        let complete: (Result<(fd: Int32, remote: SockAddr), RPCError>) -> Void
        var timeout: Scheduled<Void>?
    }

    struct Options {
        var backlog: Int
        var device: String?
        var ipv6Only: Bool?
        var reuseAddr: Bool = true
    }

    let id: Int64
    unowned let session: Session
    private(set) var fds: [Int32]
    private(set) var local: SockAddr
    var options: Options
    private(set) var extraPorts = 0
    private(set) var asyncAccepting = false
    private var waiters: CircularBuffer<Waiter> = []
    private var nextWaiterID: UInt64 = 1
    private var armed: Set<Int32> = []
    private(set) var isClosed = false

    init(id: Int64, session: Session, fd: Int32, local: SockAddr, options: Options) {
        self.id = id
        self.session = session
        self.fds = [fd]
        self.local = local
        self.options = options
    }

    var primaryFD: Int32 { fds[0] }

    /// Creates, configures, binds and listens one socket. `reuseAddr` is on by default, as in
    /// the seed.
    static func listen(on address: SockAddr, options: Options) throws -> Int32 {
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
            return fd
        } catch {
            _ = tcpgw_close(fd)
            throw error
        }
    }

    // MARK: accepting

    func accept(timeoutMS: Int?, complete: @escaping (Result<(fd: Int32, remote: SockAddr), RPCError>) -> Void) {
        if waiters.isEmpty, let ready = acceptNow() {
            complete(.success(ready))
            return
        }
        if timeoutMS == 0 {
            complete(.failure(.timedOut("accept")))
            return
        }
        let waiterID = nextWaiterID
        nextWaiterID += 1
        var waiter = Waiter(id: waiterID, complete: complete, timeout: nil)
        if let ms = timeoutMS {
            waiter.timeout = session.loop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(ms))) { [weak self] in
                self?.expire(waiterID)
            }
        }
        waiters.append(waiter)
        armAll()
    }

    func startAsyncAccepting() {
        asyncAccepting = true
        drainQueue()
        armAll()
    }

    private func expire(_ waiterID: UInt64) {
        guard let index = waiters.firstIndex(where: { $0.id == waiterID }) else { return }
        let waiter = waiters.remove(at: index)
        waiter.complete(.failure(.timedOut("accept")))
    }

    /// One connection from any of the listeners, if the kernel has one queued.
    private func acceptNow() -> (fd: Int32, remote: SockAddr)? {
        for fd in fds {
            var peer = tcpgw_sockaddr()
            let newFD = tcpgw_accept(fd, &peer)
            if newFD >= 0 {
                return (newFD, SockAddr(peer))
            }
            if newFD == -EMFILE || newFD == -ENFILE { outOfDescriptors = true }
        }
        return nil
    }

    /// Set when accept failed for want of descriptors: the listener stays readable, so the next
    /// attempt waits a little instead of spinning.
    private var outOfDescriptors = false
    private var retryScheduled = false

    private func armAll() {
        guard !isClosed, !waiters.isEmpty || asyncAccepting else { return }
        if outOfDescriptors {
            outOfDescriptors = false
            guard !retryScheduled else { return }
            retryScheduled = true
            session.loop.assumeIsolated().scheduleTask(in: .milliseconds(100)) { [weak self] in
                guard let self else { return }
                self.retryScheduled = false
                self.drainQueue()
                self.armAll()
            }
            return
        }
        for fd in fds where !armed.contains(fd) {
            armed.insert(fd)
            session.gateway.monitor.arm(fd, for: .read) { [weak self] in
                guard let self else { return }
                self.armed.remove(fd)
                self.drainQueue()
                self.armAll()
            }
        }
    }

    /// Hands queued connections to sync waiters first, then to async accepting.
    private func drainQueue() {
        while !isClosed, !waiters.isEmpty || asyncAccepting {
            if asyncAccepting && waiters.isEmpty && !session.canAcceptAsync {
                return  // the handle limit is reached; connections wait in the kernel's queue
            }
            guard let ready = acceptNow() else { return }
            if let waiter = waiters.popFirst() {
                waiter.timeout?.cancel()
                waiter.complete(.success(ready))
            } else {
                session.adoptAccepted(server: self, fd: ready.fd, remote: ready.remote)
            }
        }
    }

    // MARK: options that touch every listener

    func forEachFD(_ body: (Int32) throws -> Void) throws {
        guard !isClosed else { throw RPCError.handleState("handle \(id) is closed") }
        for fd in fds { try body(fd) }
    }

    /// `tcp.mports`: listens on port+1 ... port+count as well (0 removes the extra ports).
    func setExtraPorts(_ count: Int) throws {
        guard !isClosed else { throw RPCError.handleState("handle \(id) is closed") }
        if count > 0 && local.port + count > 65535 {
            throw RPCError.invalidParams("'mports' would go past port 65535 (base port \(local.port))")
        }
        var created: [Int32] = []
        do {
            for offset in stride(from: 1, through: count, by: 1) {
                var address = local
                address.port = local.port + offset
                created.append(try ServerHandle.listen(on: address, options: options))
            }
        } catch {
            for fd in created { _ = tcpgw_close(fd) }
            throw error
        }
        for fd in fds.dropFirst() { release(fd) }
        fds = [fds[0]] + created
        extraPorts = count
        armAll()
    }

    /// `tcp.setIPv6Only` on a listening IPv6 server: Linux takes the option only before bind, so
    /// the listeners are made again on the same address and ports with the option set.
    func relisten(ipv6Only: Bool) throws {
        guard !isClosed else { throw RPCError.handleState("handle \(id) is closed") }
        var newOptions = options
        newOptions.ipv6Only = ipv6Only
        let ports = [local.port] + (0..<extraPorts).map { local.port + 1 + $0 }
        // Release first: the same ports are bound again at once.
        for fd in fds { release(fd) }
        fds = []
        var created: [Int32] = []
        do {
            for port in ports {
                var address = local
                address.port = port
                created.append(try ServerHandle.listen(on: address, options: newOptions))
            }
        } catch {
            for fd in created { _ = tcpgw_close(fd) }
            isClosed = true
            session.forget(id)
            throw error
        }
        fds = created
        options = newOptions
        armAll()
    }

    private func release(_ fd: Int32) {
        armed.remove(fd)
        session.gateway.monitor.remove(fd)
        _ = tcpgw_close(fd)
    }

    func close() {
        guard !isClosed else { return }
        isClosed = true
        for fd in fds { release(fd) }
        fds = []
        while let waiter = waiters.popFirst() {
            waiter.timeout?.cancel()
            waiter.complete(.failure(.unknownHandle(id)))
        }
    }

    /// For flyAway: a duplicate of the main listener, then the handle closes its own sockets.
    func detachForFlyAway() throws -> Int32 {
        guard !isClosed else { throw RPCError.handleState("handle \(id) is closed") }
        let copy = dup(fds[0])
        guard copy >= 0 else { throw SystemError(errno: errno, syscall: "dup") }
        close()
        return copy
    }
}
