import Foundation
import CNetShim
import JSONRPC
import NIOCore

/// tcp.createByFd, tcp.sockFd, tcp.flyAway, tcp.close: the descriptor's life under a handle.
enum DescriptorOperations {
    static func register(into table: inout [String: Dispatcher.Operation]) {
        table["tcp.createByFd"] = createByFd
        table["tcp.sockFd"] = sockFd
        table["tcp.flyAway"] = flyAway
        table["tcp.close"] = close
    }

    /// Puts a connected descriptor under a new handle and answers the creating call.
    static func adoptConnection(session: Session, fd: Int32, remote: SockAddr?, flowing: Bool, call: Call) {
        let handleID: Int64
        do {
            handleID = try session.allocateHandleID()
        } catch {
            _ = tcpgw_close(fd)
            call.fail(error)
            return
        }
        let connection = ConnectionHandle(id: handleID, session: session, fd: fd, flowing: flowing)
        connection.local = SockAddr.local(of: fd)
        connection.remote = remote ?? SockAddr.remote(of: fd)
        session.register(.connection(connection))
        connection.adopt(loop: session.loop) { result in
            switch result {
            case .success:
                call.succeed([
                    "handle": .int(handleID), "local": connection.local?.json ?? .null,
                    "remote": connection.remote?.json ?? .null,
                ])
            case .failure(let error):
                session.forget(handleID)
                call.fail(error)
            }
        }
    }

    static func createByFd(_ call: Call) throws -> JSONValue? {
        let session = call.session
        let passed = call.passedDescriptors
        call.passedDescriptors = []
        guard passed.count == 1, passed[0] >= 0 else {
            for fd in passed where fd >= 0 { _ = tcpgw_close(fd) }
            throw RPCError.descriptor(
                passed.isEmpty
                    ? "tcp.createByFd needs exactly one descriptor attached (SCM_RIGHTS) to the request's line; none arrived"
                    : "tcp.createByFd needs exactly one descriptor attached to the request's line; \(passed.count) arrived")
        }
        let fd = passed[0]
        guard session.gateway.policy.allowCreateByFd else {
            _ = tcpgw_close(fd)
            throw RPCError.policy("tcp.createByFd is not allowed")
        }
        var listening: Int32 = 0
        let family = tcpgw_socket_check_tcp(fd, &listening)
        guard family > 0 else {
            _ = tcpgw_close(fd)
            throw RPCError.descriptor("the attached descriptor is not a TCP socket (\(Errno.name(-family)))")
        }
        // hardening (SocketPolicyChecks.swift): the listen or connect rules apply to adopted sockets
        do { try session.gateway.policy.check(adopting: fd, listening: listening != 0) } catch {
            _ = tcpgw_close(fd)
            throw error
        }
        _ = tcpgw_set_nonblocking(fd, 1)
        if listening != 0 {
            let handleID: Int64
            do { handleID = try session.allocateHandleID() } catch {
                _ = tcpgw_close(fd)
                throw error
            }
            guard let local = SockAddr.local(of: fd) else {
                _ = tcpgw_close(fd)
                throw RPCError.descriptor("the attached listening socket has no address")
            }
            let server = ServerHandle(
                id: handleID, session: session, fd: fd, local: local, options: .init(backlog: 128, device: nil, ipv6Only: nil))
            session.register(.server(server))
            return ["handle": .int(handleID), "kind": "server", "local": local.json]
        }
        guard let remote = SockAddr.remote(of: fd) else {
            _ = tcpgw_close(fd)
            throw RPCError.descriptor("the attached TCP socket is neither listening nor connected")
        }
        let inner = Call(session: session, request: call.request) { result in
            switch result {
            case .success(let value):
                var object: JSONObject = ["handle": value.result["handle"] ?? .null, "kind": "connection"]
                object["local"] = value.result["local"]
                object["remote"] = value.result["remote"]
                call.succeed(.object(object))
            case .failure(let error):
                call.fail(error)
            }
        }
        adoptConnection(session: session, fd: fd, remote: remote, flowing: false, call: inner)
        return nil
    }

    static func sockFd(_ call: Call) throws -> JSONValue? {
        switch try call.session.lookup(call.params.handle) {
        case .connection(let connection): return .int(Int64(try connection.openFD()))
        case .server(let server):
            guard !server.isClosed else { throw RPCError.handleState("handle \(server.id) is closed") }
            return .int(Int64(server.primaryFD))
        }
    }

    static func flyAway(_ call: Call) throws -> JSONValue? {
        let session = call.session
        guard session.gateway.policy.allowFlyAway else { throw RPCError.policy("tcp.flyAway is not allowed") }
        let handleID = call.params.handle
        switch try session.lookup(handleID) {
        case .server(let server):
            let fd = try server.detachForFlyAway()
            session.forget(handleID)
            call.succeed(["buffered": "", "encoding": "base64", "eof": false], passing: fd)
        case .connection(let connection):
            guard connection.isOpen else { throw RPCError.handleState("handle \(handleID) is not connected") }
            // Pause first, then let queued writes reach the kernel: the socket leaves with
            // nothing of ours still pending in either direction.
            connection.setFlowing(false)
            connection.drainWrites {
                do {
                    let detached = try connection.detachForFlyAway()
                    session.forget(handleID)
                    call.succeed(
                        ["buffered": .string(Base64.encode(detached.buffered)), "encoding": "base64", "eof": .bool(detached.eof)],
                        passing: detached.fd)
                } catch {
                    call.fail(error)
                }
            }
        }
        return nil
    }

    static func close(_ call: Call) throws -> JSONValue? {
        let session = call.session
        let handleID = call.params.handle
        switch try session.lookup(handleID) {
        case .connection(let connection): connection.close()
        case .server(let server): server.close()
        }
        session.forget(handleID)
        return true
    }
}
