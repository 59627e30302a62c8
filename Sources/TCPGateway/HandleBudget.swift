import JSONRPC

/// What counts against `maxHandlesPerConnection` (contract §13): every handle, and every extra
/// port of `tcp.mports`, since each holds a listening descriptor of its own.
extension Session {
    var handleSlotsInUse: Int {
        handles.values.reduce(handles.count) { sum, handle in
            if case .server(let server) = handle { return sum + server.extraPorts }
            return sum
        }
    }

    /// The error for one more handle, or nil while there is room.
    var handleLimitError: RPCError? {
        let maximum = gateway.policy.maxHandlesPerConnection
        let used = handleSlotsInUse
        guard used >= maximum else { return nil }
        return RPCError.limit("this connection already has \(used) handles and extra ports (maximum \(maximum))")
    }

    /// `tcp.mports`: `count` extra ports in place of the server's current ones must fit.
    func checkHandleBudget(extraPorts count: Int, of server: ServerHandle) throws {
        let maximum = gateway.policy.maxHandlesPerConnection
        let others = handleSlotsInUse - server.extraPorts
        if others + count > maximum {
            throw RPCError.limit(
                "\(count) extra ports would make \(others + count) handles and extra ports on this connection (maximum \(maximum))")
        }
    }
}
