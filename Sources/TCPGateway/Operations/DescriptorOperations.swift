import Foundation
import CNetShim
import JSONRPC

/// tcp.createByFd, tcp.sockFd, tcp.flyAway, tcp.close: the descriptor's life under a handle.
enum DescriptorOperations {
    static func register(into table: inout [String: Dispatcher.Operation]) {
        table.add(TCPCreateByFdParams.self, createByFd)
        table.add(TCPSockFdParams.self, sockFd)
        table.add(TCPFlyAwayParams.self, flyAway)
        table.add(TCPCloseParams.self, close)
    }

    /// The answer to a call that put a connection under a handle.
    static func opened(_ connection: ConnectionHandle) -> JSONValue {
        ["handle": .int(connection.id), "local": connection.local?.json ?? .null, "remote": connection.remote?.json ?? .null]
    }

    static func createByFd(_ call: Call, _ p: TCPCreateByFdParams) throws -> JSONValue? {
        let session = call.session
        var passed = call.passedDescriptors.takeAll()
        guard let socket = passed.takeOnly() else {
            throw RPCError.descriptor(
                passed.count == 0
                    ? "tcp.createByFd needs exactly one descriptor attached (SCM_RIGHTS) to the request's line; none arrived"
                    : "tcp.createByFd needs exactly one descriptor attached to the request's line; \(passed.count) arrived")
        }
        let policy = session.policy
        // Refused by the switch: that is the call's one decision. Allowed: the list's word on
        // the socket below is.
        if !policy.allowCreateByFd {
            try session.enforce(.flag(
                false, key: "allowCreateByFd", action: .createByFd,
                target: .init(SockAddr.remote(of: socket.raw) ?? SockAddr.local(of: socket.raw)),
                refusal: "tcp.createByFd is not allowed"))
        }
        var listening: Int32 = 0
        let family = tcpgw_socket_check_tcp(socket.raw, &listening)
        guard family > 0 else {
            throw RPCError.descriptor("the attached descriptor is not a TCP socket (\(Errno.name(-family)))")
        }
        // The listen or connect rules apply to adopted sockets too (refused: the socket closes).
        let audit = CreationAudit(session)
        defer { audit.finish() }
        if let decision = policy.decision(adopting: socket.raw, listening: listening != 0) {
            try audit.enforce(decision)
        }
        _ = tcpgw_set_nonblocking(socket.raw, 1)
        if listening != 0 {
            guard let local = SockAddr.local(of: socket.raw) else {
                throw RPCError.descriptor("the attached listening socket has no address")
            }
            let server = try session.handles.openServer(
                socket, local: local, options: .init(backlog: 128, device: nil, ipv6Only: nil))
            audit.handle = server.id
            return ["handle": .int(server.id), "kind": "server", "local": local.json]
        }
        guard let remote = SockAddr.remote(of: socket.raw) else {
            throw RPCError.descriptor("the attached TCP socket is neither listening nor connected")
        }
        let connection = try session.handles.openConnection(socket, remote: remote, flowing: false)
        audit.handle = connection.id
        return ["handle": .int(connection.id), "kind": "connection", "local": connection.local?.json ?? .null,
                "remote": remote.json]
    }

    static func sockFd(_ call: Call, _ p: TCPSockFdParams) throws -> JSONValue? {
        switch try call.session.handles.lookup(p.handle) {
        case .connection(let connection): return .int(Int64(try connection.openFD()))
        case .server(let server):
            guard !server.isClosed else { throw RPCError.handleState("handle \(server.id) is closed") }
            return .int(Int64(server.primaryFD))
        }
    }

    static func flyAway(_ call: Call, _ p: TCPFlyAwayParams) throws -> JSONValue? {
        let session = call.session
        let handleID = p.handle
        let target: SockAddr?
        switch try session.handles.lookup(handleID) {
        case .server(let server): target = server.local
        case .connection(let connection): target = connection.remote
        }
        try session.enforce(
            .flag(session.policy.allowFlyAway, key: "allowFlyAway", action: .flyAway, target: .init(target),
                  refusal: "tcp.flyAway is not allowed"),
            handle: handleID)
        switch try session.handles.lookup(handleID) {
        case .server(let server):
            let fd = try server.detachForFlyAway()
            session.handles.forget(handleID)
            call.succeed(["buffered": "", "encoding": "base64", "eof": false], passing: fd.release())
        case .connection(let connection):
            guard connection.isOpen else { throw RPCError.handleState("handle \(handleID) is not connected") }
            // Pause first, then let queued writes reach the kernel: the socket leaves with
            // nothing of ours still pending in either direction.
            connection.setFlowing(false)
            connection.drainWrites {
                do {
                    let detached = try connection.detachForFlyAway()
                    session.handles.forget(handleID)
                    call.succeed(
                        ["buffered": .string(Base64.encode(detached.buffered)), "encoding": "base64", "eof": .bool(detached.eof)],
                        passing: detached.fd.release())
                } catch {
                    call.fail(error)
                }
            }
        }
        return nil
    }

    static func close(_ call: Call, _ p: TCPCloseParams) throws -> JSONValue? {
        let session = call.session
        let handleID = p.handle
        switch try session.handles.lookup(handleID) {
        case .connection(let connection): connection.close()
        case .server(let server): server.close()
        }
        session.handles.forget(handleID)
        return true
    }
}
