import JSONRPC

/// session.keep, session.ack, session.resume (contract §12; the session's side is in
/// Resumption/Session+Resumption.swift).
enum SessionOperations {
    static func register(into table: inout [String: Dispatcher.Operation]) {
        table.add(SessionKeepParams.self, keep)
        table.add(SessionAckParams.self, ack)
        table.add(SessionResumeParams.self, resume)
    }

    static func keep(_ call: Call, _ p: SessionKeepParams) throws -> JSONValue? {
        // The answer must be the line before the first counted one, which a batch cannot promise.
        guard !call.inBatch else {
            throw RPCError.invalidRequest("session.keep must be a request of its own, not inside a batch")
        }
        call.session.keep(call, grace: p.grace ?? SessionLifecycle.defaultGrace)
        return nil
    }

    static func ack(_ call: Call, _ p: SessionAckParams) throws -> JSONValue? {
        let session = call.session
        guard let log = session.replay else {
            throw RPCError.unknownSession("this connection has no kept session (session.keep first)")
        }
        let received = UInt64(p.received)
        guard received <= log.written else {
            throw RPCError.invalidParams("received: \(received) is beyond the \(log.written) lines written")
        }
        session.acknowledge(received)
        return true
    }

    static func resume(_ call: Call, _ p: SessionResumeParams) throws -> JSONValue? {
        let newcomer = call.session
        guard newcomer.linesRead == 1, !call.inBatch, newcomer.replay == nil, newcomer.handles.count == 0 else {
            throw RPCError.invalidRequest("session.resume must be the first line of a new connection, as a request of its own")
        }
        // Unknown, expired and foreign tokens look the same: nothing tells them apart.
        guard let target = newcomer.gateway.keptSessions[p.token], !target.isClosed,
            target.lifecycle.isResumable, target.credentials.uid == newcomer.credentials.uid
        else {
            throw RPCError.unknownSession("unknown or expired session")
        }
        guard let log = target.replay else { throw RPCError.unknownSession("unknown or expired session") }
        let received = UInt64(p.received)
        guard received >= log.acknowledged, received <= log.written else {
            throw RPCError.invalidParams(
                "received: \(received) is outside the lines kept (\(log.acknowledged) acknowledged, \(log.written) written)")
        }
        // Answered on the new connection before it changes hands: not a counted line.
        call.succeed(["received": .int(Int64(target.clientLines)), "handles": target.handleEntries])
        target.adopt(newcomer, received: received)
        return nil
    }
}
