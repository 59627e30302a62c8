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
        let destination = try Destination(params: p.sockaddr)
        let policy = session.policy
        let audit = CreationAudit(session)
        defer { audit.finish() }
        if case .address(let address) = destination {
            try audit.enforce(policy.decide(listen: address, ipv6Only: p.ipv6Only))
        }
        let device = p.dev
        if let device {
            try audit.enforce(.flag(
                policy.allowBindToDevice, key: "allowBindToDevice", action: .bindToDevice,
                target: .init(destination.address, host: destination.host, device: device),
                refusal: "binding to a device ('dev') is not allowed"))
        }
        let options = ServerHandle.Options(
            backlog: p.backlog, device: device, ipv6Only: p.ipv6Only)
        try session.handles.ensureRoom()  // fail early when the limit is reached
        switch destination {
        case .address(let address):
            return try listen(session, on: address, options: options, host: nil, audit: audit)
        case .name(let host, let domain, let port):
            let rules = policy.listenNames
            try rules.checkResolving(host, port: port, action: "listening on")
            // Resolved off the loop; the first address is the one bound (contract §7).
            session.gateway.resolver.lookup(host, family: domain) { [weak session] result in
                guard let session, !session.isClosed else { return }
                do {
                    switch result {
                    case .failure(let error):
                        throw error.rpcError(host: host)
                    case .success(let found):
                        guard let first = found.first else { throw ResolveError(code: -2).rpcError(host: host) }
                        let address = SockAddr(first, port: port)
                        if let refusal = rules.refusal(of: address, host: host, connecting: false) {
                            throw RPCError.policy("listening on \(refusal)")
                        }
                        // A dual-stack `::` also listens on IPv4 0.0.0.0, judged too (as for a literal).
                        if DualStack.coversIPv4(address, ipv6Only: options.ipv6Only),
                            let refusal = rules.refusal(
                                of: SockAddr(domain: SockAddr.inet, addr: "0.0.0.0", port: port), host: host, connecting: false)
                        {
                            throw RPCError.policy("listening on \(address.addr) without ipv6Only also listens on \(refusal)")
                        }
                        try session.handles.ensureRoom()
                        call.succeed(try listen(session, on: address, options: options, host: host, audit: nil))
                    }
                } catch {
                    call.fail(error)
                }
            }
            return nil
        }
    }

    private static func listen(
        _ session: Session, on address: SockAddr, options: ServerHandle.Options, host: String?, audit: CreationAudit?
    ) throws -> JSONValue
    {
        let socket = try ServerHandle.listen(on: address, options: options)
        let local = SockAddr.local(of: socket.raw) ?? address
        let server = try session.handles.openServer(socket, local: local, options: options)
        audit?.handle = server.id
        var answer: JSONObject = ["handle": .int(server.id), "local": local.json]
        if let host { answer["host"] = .string(host) }
        return .object(answer)
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
                    let connection = try session.handles.openConnection(socket, remote: remote, flowing: false)
                    connection.inheritFaults(from: server)
                    call.succeed(DescriptorOperations.opened(connection))
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
