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
        try session.gateway.policy.check(listen: address)
        let device = p.dev
        if device != nil && !session.gateway.policy.allowBindToDevice {
            throw RPCError.policy("binding to a device ('dev') is not allowed")
        }
        let options = ServerHandle.Options(
            backlog: p.backlog, device: device, ipv6Only: p.ipv6Only)
        let handleID = try session.allocateHandleID()
        let fd = try ServerHandle.listen(on: address, options: options)
        let local = SockAddr.local(of: fd) ?? address
        let server = ServerHandle(id: handleID, session: session, fd: fd, local: local, options: options)
        session.register(.server(server))
        return ["handle": .int(handleID), "local": local.json]
    }

    static func accept(_ call: Call, _ p: TCPAcceptParams) throws -> JSONValue? {
        let session = call.session
        let server = try session.server(p.handle)
        if p.async {
            server.startAsyncAccepting()
            return true
        }
        _ = try session.allocateHandleID()  // fail early when the limit is reached
        server.accept(timeoutMS: p.timeout) { [weak session] result in
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

    static func mports(_ call: Call, _ p: TCPMportsParams) throws -> JSONValue? {
        let server = try call.session.server(p.handle)
        let count = p.mports
        if count > 0 {
            for offset in 1...count {
                var address = server.local
                address.port += offset
                try call.session.gateway.policy.check(listen: address)
            }
        }
        try server.setExtraPorts(count)
        return true
    }
}
