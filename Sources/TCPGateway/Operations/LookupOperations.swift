import JSONRPC

/// dns.lookup: a host name's addresses, resolved off the loop (contract §7).
enum LookupOperations {
    static func register(into table: inout [String: Dispatcher.Operation]) {
        table.add(DNSLookupParams.self, lookup)
    }

    static func lookup(_ call: Call, _ p: DNSLookupParams) throws -> JSONValue? {
        let session = call.session
        let host = p.host
        guard HostName.isValid(host) else {
            if host.utf8.contains(0) { throw RPCError.invalidParams("'host' must be a host name; it contains a NUL byte") }
            throw RPCError.invalidParams("'host' must be a host name, got \"\(host)\"")
        }
        // With a connect allow list, only names it names are looked up: no DNS side channel.
        try session.policy.connectNames.checkResolving(host, port: nil, action: "looking up")
        session.gateway.resolver.lookup(host, family: Int32(p.domain ?? 0)) { [weak session] result in
            guard let session, !session.isClosed else { return }
            switch result {
            case .failure(let error):
                call.fail(error.rpcError(host: host))
            case .success(let found):
                var seen: [SockAddrValue] = []
                for value in found where !seen.contains(value) { seen.append(value) }
                call.succeed(.array(seen.map { ["domain": .int(Int64($0.domain)), "addr": .string($0.addr)] }))
            }
        }
        return nil
    }
}
