import Foundation
import CNetShim
import JSONRPC

/// tcp.createServer, tcp.accept, tcp.mports.
enum ServerOperations {
    static func register(into table: inout [String: Dispatcher.Operation]) {
        table["tcp.createServer"] = createServer
        table["tcp.accept"] = accept
        table["tcp.mports"] = mports
    }

    static func createServer(_ call: Call) throws -> JSONValue? {
        let session = call.session
        let address = try SockAddr(params: call.params["sockaddr"]!)
        try session.gateway.policy.check(listen: address, ipv6Only: call.params.bool("ipv6Only"))
        let device = call.params.string("dev")
        if device != nil && !session.gateway.policy.allowBindToDevice {
            throw RPCError.policy("binding to a device ('dev') is not allowed")
        }
        let options = ServerHandle.Options(
            backlog: call.params.int("backlog") ?? 5, device: device, ipv6Only: call.params.bool("ipv6Only"))
        let handleID = try session.allocateHandleID()
        let fd = try ServerHandle.listen(on: address, options: options)
        let local = SockAddr.local(of: fd) ?? address
        let server = ServerHandle(id: handleID, session: session, fd: fd, local: local, options: options)
        session.register(.server(server))
        return ["handle": .int(handleID), "local": local.json]
    }

    static func accept(_ call: Call) throws -> JSONValue? {
        let session = call.session
        let server = try session.server(call.params.handle)
        if call.params.bool("async") == true {
            server.startAsyncAccepting()
            return true
        }
        _ = try session.allocateHandleID()  // fail early when the limit is reached
        server.accept(timeoutMS: call.params.int("timeout")) { [weak session] result in
            guard let session else { return }
            switch result {
            case .failure(let error):
                call.fail(error)
            case .success(let accepted):
                DescriptorOperations.adoptConnection(
                    session: session, fd: accepted.fd, remote: accepted.remote, flowing: false, call: call)
            }
        }
        return nil
    }

    static func mports(_ call: Call) throws -> JSONValue? {
        let server = try call.session.server(call.params.handle)
        let count = call.params.int("mports") ?? 0
        try call.session.gateway.policy.check(mports: count, of: server)  // each port, dual-stack too
        try call.session.checkHandleBudget(extraPorts: count, of: server)  // each port counts
        try server.setExtraPorts(count)
        return true
    }
}
