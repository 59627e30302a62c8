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
        let audit = CreationAudit(session)
        defer { audit.finish() }
        try audit.enforce(session.policy.decide(connect: address))
        let isAsync = p.async
        let timeoutMS = p.timeout
        try session.handles.ensureRoom()  // fail early when the limit is reached
        let socket = OwnedFD(adopting: try SystemError.check(tcpgw_tcp_socket(address.domain), "socket"))
        let connection = try session.handles.openConnection(socket, remote: address, flowing: isAsync, connecting: true)
        let handleID = connection.id
        audit.handle = handleID
        connection.connect(to: address, timeoutMS: timeoutMS) { [weak session] result in
            guard let session, !session.isClosed else { return }
            switch result {
            case .success:
                let remote = connection.remote ?? address
                if isAsync {
                    session.emit("tcp.onConnect", ["handle": .int(handleID), "remote": remote.json])
                    connection.updateInterest()  // reading starts after the event that introduces it
                } else {
                    call.succeed(["handle": .int(handleID), "local": connection.local?.json ?? .null, "remote": remote.json])
                }
            case .failure(let failure):
                guard isAsync else {
                    switch failure {
                    case .system(let error): call.fail(error)
                    case .timedOut: call.fail(RPCError.timedOut("connect"))
                    case .closed: call.fail(RPCError.handleState("handle \(handleID) was closed while connecting"))
                    }
                    return
                }
                // The async form reports through the event, as the seed's callback does; a
                // handle the client closed itself gets none.
                switch failure {
                case .system(let error): session.emit("tcp.onConnect", ["handle": .int(handleID), "error": error.eventJSON])
                case .timedOut: session.emit("tcp.onConnect", ["handle": .int(handleID), "error": Errno.json(ETIMEDOUT)])
                case .closed: break
                }
            }
        }
        return isAsync ? ["handle": .int(handleID)] : nil
    }
}
