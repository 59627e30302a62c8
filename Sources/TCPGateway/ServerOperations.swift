import Foundation
import CNetShim
import JSONRPC

/// tcp.createServer, tcp.accept, tcp.mports.
enum ServerOperations {
    static func register(into table: inout [String: Dispatcher.Operation]) {
        table.add(TCPCreateServerParams.self, createServer)
        table.add(TCPAcceptParams.self, accept)
        table.add(TCPMportsParams.self, mports)
    }

    static func createServer(_ call: Call, _ p: TCPCreateServerParams) throws -> JSONValue? {
        let session = call.session
        let address = try SockAddr(params: p.sockaddr)
        let policy = session.policy
        let audit = CreationAudit(session)
        defer { audit.finish() }
        try audit.enforce(policy.decide(listen: address, ipv6Only: p.ipv6Only))
        let device = p.dev
        if let device {
            try audit.enforce(.flag(
                policy.allowBindToDevice, key: "allowBindToDevice", action: .bindToDevice,
                target: .init(address, device: device), refusal: "binding to a device ('dev') is not allowed"))
        }
        let options = ServerHandle.Options(
            backlog: p.backlog, device: device, ipv6Only: p.ipv6Only)
        try session.handles.ensureRoom()  // fail early when the limit is reached
        let socket = try ServerHandle.listen(on: address, options: options)
        let local = SockAddr.local(of: socket.raw) ?? address
        let server = try session.handles.openServer(socket, local: local, options: options)
        audit.handle = server.id
        return ["handle": .int(server.id), "local": local.json]
    }

    static func accept(_ call: Call, _ p: TCPAcceptParams) throws -> JSONValue? {
        let session = call.session
        let server = try session.handles.server(p.handle)
        if p.async {
            server.startAsyncAccepting()
            return true
        }
        try session.handles.ensureRoom()  // fail early when the limit is reached
        server.accept(
            timeoutMS: p.timeout,
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

    static func mports(_ call: Call, _ p: TCPMportsParams) throws -> JSONValue? {
        let server = try call.session.handles.server(p.handle)
        let count = p.mports
        // Each extra port, dual-stack too, audited up to the first refusal.
        for decision in call.session.policy.decisions(mports: count, of: server) {
            try call.session.enforce(decision, handle: server.id)
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
