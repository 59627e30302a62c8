import JSONRPC

/// tcp.pipe, tcp.stream, tcp.attach (contract §11): raw byte paths that skip JSON.
enum RelayOperations {
    static func register(into table: inout [String: Dispatcher.Operation]) {
        table.add(TCPPipeParams.self, pipe)
        table.add(TCPStreamParams.self, stream)
        table.add(TCPAttachParams.self, attach)
    }

    static func pipe(_ call: Call, _ p: TCPPipeParams) throws -> JSONValue? {
        let handles = call.session.handles
        let first = try handles.connection(p.handle)
        let second = try handles.connection(p.peer)
        guard first !== second else {
            throw RPCError.invalidParams("'peer' must be another handle than 'handle' (both are \(p.handle))")
        }
        let relay = try Relay.pipe(first, second)
        call.session.gateway.logger.debug(
            "client \(call.session.id): handles \(p.handle) and \(p.peer) are piped (\(relay.modes.map { "\($0)" }.joined(separator: ", ")))")
        return true
    }

    static func stream(_ call: Call, _ p: TCPStreamParams) throws -> JSONValue? {
        let connection = try call.session.handles.connection(p.handle)
        try connection.checkRelayable()
        let token = try call.session.gateway.streamTokens.issue(for: connection)
        return ["token": .string(token)]
    }

    /// Reached only when tcp.attach is not what starts a connection (`Session.attachIfFirst`
    /// takes that one).
    static func attach(_ call: Call, _ p: TCPAttachParams) throws -> JSONValue? {
        throw RPCError.invalidRequest(
            "tcp.attach must be the first line of a new connection, on its own (not in a batch, not after other requests)")
    }
}
