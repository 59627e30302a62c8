import Foundation
import CNetShim
import JSONRPC

/// tcp.createClient, sync and async.
enum ClientOperations {
    static func register(into table: inout [String: Dispatcher.Operation]) {
        table.add(TCPCreateClientParams.self, createClient)
    }

    static func createClient(_ call: Call, _ p: TCPCreateClientParams) throws -> JSONValue? {
        let session = call.session
        let address = try SockAddr(params: p.sockaddr)
        try session.gateway.policy.check(connect: address)
        let isAsync = p.async
        let timeoutMS = p.timeout
        let handleID = try session.allocateHandleID()
        let fd = try SystemError.check(tcpgw_tcp_socket(address.domain), "socket")
        let connection = ConnectionHandle(id: handleID, session: session, fd: fd, flowing: isAsync)
        connection.remote = address
        let started = tcpgw_connect_start(fd, address.addr, Int32(address.port), address.domain)
        if started < 0 {
            _ = tcpgw_close(fd)
            let error = SystemError(errno: -started, syscall: "connect")
            if !isAsync { throw error }
            // The async form reports through the event, as the seed's callback does.
            session.loop.assumeIsolated().execute {
                session.emit("tcp.onConnect", ["handle": .int(handleID), "error": error.eventJSON])
            }
            return ["handle": .int(handleID)]
        }
        session.register(.connection(connection))

        let finish: (Result<Void, Error>) -> Void = { [weak session] result in
            guard let session else { return }
            connection.connectTimeout?.cancel()
            switch result {
            case .success:
                connection.local = SockAddr.local(of: fd)
                connection.remote = SockAddr.remote(of: fd) ?? address
                connection.adopt(loop: session.loop) { adopted in
                    switch adopted {
                    case .success:
                        if isAsync {
                            session.emit("tcp.onConnect", ["handle": .int(handleID), "remote": connection.remote!.json])
                        } else {
                            call.succeed([
                                "handle": .int(handleID), "local": connection.local?.json ?? .null,
                                "remote": connection.remote!.json,
                            ])
                        }
                    case .failure(let error):
                        session.forget(handleID)
                        if isAsync {
                            session.emit("tcp.onConnect", ["handle": .int(handleID), "error": Errno.json(EIO)])
                        } else {
                            call.fail(error)
                        }
                    }
                }
            case .failure(let error):
                session.forget(handleID)
                if isAsync {
                    // A handle the client closed itself gets no event.
                    guard !connection.closedByClient else { return }
                    let code: Int32 = (error as? SystemError)?.errno ?? ETIMEDOUT
                    session.emit("tcp.onConnect", ["handle": .int(handleID), "error": Errno.json(code)])
                } else {
                    call.fail(error)
                }
            }
        }
        connection.onConnected = finish
        let complete: (Result<Void, Error>) -> Void = { result in
            guard let callback = connection.onConnected else { return }
            connection.onConnected = nil
            callback(result)
        }
        if started == 0 {
            complete(.success(()))
        } else {
            session.gateway.monitor.arm(fd, for: .write) { [weak session] in
                guard let session else { return }
                session.gateway.monitor.remove(fd)
                let soError = tcpgw_so_error(fd)
                if soError == 0 {
                    complete(.success(()))
                } else {
                    _ = tcpgw_close(fd)
                    complete(.failure(SystemError(errno: soError > 0 ? soError : -soError, syscall: "connect")))
                }
            }
            if let ms = timeoutMS {
                connection.connectTimeout = session.loop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(ms))) { [weak session] in
                    guard let session, connection.onConnected != nil else { return }
                    session.gateway.monitor.remove(fd)
                    _ = tcpgw_close(fd)
                    if isAsync {
                        complete(.failure(SystemError(errno: ETIMEDOUT, syscall: "connect")))
                    } else {
                        complete(.failure(RPCError.timedOut("connect")))
                    }
                }
            }
        }
        return isAsync ? ["handle": .int(handleID)] : nil
    }
}
