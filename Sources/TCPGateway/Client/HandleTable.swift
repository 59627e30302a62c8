import CNetShim
import Glibc
import JSONRPC
import NIOCore

/// The handles one client owns: registering them (within the policy's limit), finding them
/// by number (another client's number is unknown here), and closing them all when the client
/// goes.
final class HandleTable {
    enum Handle {
        case connection(ConnectionHandle)
        case server(ServerHandle)
    }

    unowned let gateway: Gateway
    /// Set once by the session that owns this table.
    unowned(unsafe) var session: Session!
    private(set) var all: [Int64: Handle] = [:]
    /// Listening sockets beyond a server's first (tcp.mports) count against the limit too.
    private var extraListeners = 0
    /// Handles a fault ended, with the fault's name, for the next call's error (the most
    /// recent ones only: a bounded memory of why a handle is gone).
    private var endedByFault: [Int64: String] = [:]
    private var endedOrder: CircularBuffer<Int64> = []
    private static let endedMemory = 1024

    init(gateway: Gateway) {
        self.gateway = gateway
    }

    var count: Int { all.count }
    private var used: Int { all.count + extraListeners }
    private var limit: Int { session.policy.maxHandlesPerConnection }
    var hasRoom: Bool { used < limit }

    /// The limit error when no handle can be added (checked before any work is done).
    func ensureRoom() throws {
        if used >= limit {
            throw RPCError.limit("this connection already has \(used) handles (maximum \(limit))")
        }
    }

    /// A fresh handle number, or the limit error.
    private func allocateID() throws -> Int64 {
        try ensureRoom()
        return gateway.nextHandleID()
    }

    /// The one way a connection comes under a handle: connect, accept and createByFd all
    /// open it here.
    func openConnection(_ socket: consuming OwnedFD?, remote: SockAddr?, flowing: Bool, connecting: Bool = false) throws
        -> ConnectionHandle
    {
        let id = try allocateID()
        let connection = ConnectionHandle(
            id: id, session: session, socket: socket, remote: remote, flowing: flowing, connecting: connecting)
        all[id] = .connection(connection)
        gateway.logger.debug("client \(session.id): handle \(id) is a connection to \(remote.map { "\($0.addr) port \($0.port)" } ?? "?")")
        return connection
    }

    func openServer(_ socket: consuming OwnedFD, local: SockAddr, options: ServerHandle.Options) throws -> ServerHandle {
        let id = try allocateID()
        let server = ServerHandle(id: id, session: session, socket: socket, local: local, options: options)
        all[id] = .server(server)
        gateway.logger.debug("client \(session.id): handle \(id) listens on \(local.addr) port \(local.port)")
        return server
    }

    /// Room for `count` more listeners of an existing server (tcp.mports), replacing `previous`.
    func reserveExtraListeners(_ count: Int, replacing previous: Int) throws {
        let after = used - previous + count
        if after > limit {
            throw RPCError.limit("\(count) extra ports would make \(after) handles on this connection (maximum \(limit))")
        }
        extraListeners += count - previous
    }

    func forget(_ id: Int64, endedByFault fault: String? = nil) {
        guard let handle = all.removeValue(forKey: id) else { return }
        if let fault {
            endedByFault[id] = fault
            endedOrder.append(id)
            if endedOrder.count > HandleTable.endedMemory, let oldest = endedOrder.popFirst() {
                endedByFault[oldest] = nil
            }
        }
        if case .server(let server) = handle { extraListeners -= server.extraPorts }
        gateway.logger.debug("client \(session.id): handle \(id) is gone")
    }

    func lookup(_ id: Int64) throws -> Handle {
        guard let handle = all[id] else {
            if let fault = endedByFault[id] { throw RPCError.endedByFault(id, fault: fault, errno: ECONNRESET) }
            throw RPCError.unknownHandle(id)
        }
        return handle
    }

    func connection(_ id: Int64) throws -> ConnectionHandle {
        switch try lookup(id) {
        case .connection(let c): return c
        case .server: throw RPCError.handleState("handle \(id) is a server; this method needs a connection")
        }
    }

    func server(_ id: Int64) throws -> ServerHandle {
        switch try lookup(id) {
        case .server(let s): return s
        case .connection: throw RPCError.handleState("handle \(id) is a connection; this method needs a server")
        }
    }

    /// The client's outbound queue crossed a watermark: flowing handles re-derive their reading.
    func congestionChanged() {
        for case .connection(let connection) in all.values where connection.flowing { connection.updateInterest() }
    }

    func closeAll() {
        if !all.isEmpty {
            gateway.logger.debug("client \(session.id): closing its \(all.count) handle(s)")
        }
        let handles = all
        all.removeAll()
        extraListeners = 0
        for handle in handles.values {
            switch handle {
            case .connection(let c): c.close()
            case .server(let s): s.close()
            }
        }
    }
}
