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
        try session.gateway.policy.check(listen: address)
        let device = call.params.string("dev")
        if device != nil && !session.gateway.policy.allowBindToDevice {
            throw RPCError.policy("binding to a device ('dev') is not allowed")
        }
        let options = ServerHandle.Options(
            backlog: call.params.int("backlog") ?? 5, device: device, ipv6Only: call.params.bool("ipv6Only"))
        _ = try session.handles.allocateID()  // fail early when the limit is reached
        let socket = try ServerHandle.listen(on: address, options: options)
        let local = SockAddr.local(of: socket.raw) ?? address
        let server = try session.handles.openServer(socket, local: local, options: options)
        return ["handle": .int(server.id), "local": local.json]
    }

    static func accept(_ call: Call) throws -> JSONValue? {
        let session = call.session
        let server = try session.handles.server(call.params.handle)
        if call.params.bool("async") == true {
            server.startAsyncAccepting()
            return true
        }
        _ = try session.handles.allocateID()  // fail early when the limit is reached
        server.accept(
            timeoutMS: call.params.int("timeout"),
            accepted: { [weak session] socket, remote in
                guard let session else { return }
                do {
                    call.succeed(DescriptorOperations.opened(
                        try session.handles.openConnection(socket, remote: remote, flowing: false)))
                } catch {
                    call.fail(error)
                }
            },
            failed: { call.fail($0) })
        return nil
    }

    static func mports(_ call: Call) throws -> JSONValue? {
        let server = try call.session.handles.server(call.params.handle)
        let count = call.params.int("mports") ?? 0
        if count > 0 {
            for offset in 1...count {
                var address = server.local
                address.port += offset
                try call.session.gateway.policy.check(listen: address)
            }
        }
        try call.session.handles.reserveExtraListeners(count, replacing: server.extraPorts)
        do {
            try server.setExtraPorts(count)
        } catch {
            try? call.session.handles.reserveExtraListeners(server.extraPorts, replacing: count)
            throw error
        }
        return true
    }
}
