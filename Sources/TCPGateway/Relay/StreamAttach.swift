import JSONRPC
import NIOCore

extension Session {
    enum AttachOutcome {
        /// Not an attach: handle the line as usual (the chance to attach is over).
        case notAttach
        /// A failed attach, answered (-32602, -32008, -32000, -32001): go on as JSON-RPC.
        case refused
        /// The connection is now the raw byte stream of a handle.
        case attached
    }

    /// The first-line hook of `tcp.attach` (contract §11). `early` is what the client sent
    /// after the line, already read: on success it goes to the TCP socket first.
    func attachIfFirst(_ line: [UInt8], then early: UnsafeRawBufferPointer) -> AttachOutcome {
        guard case .single(.request(let request)) = line.withUnsafeBytes({ RPCMessage.decode($0) }),
            request.method == TCPAttachParams.method, let id = request.id
        else {
            mayAttach = false
            return .notAttach
        }
        let relay: Relay
        let buffered: Int
        let handle: ConnectionHandle
        do {
            guard let method = gateway.catalog.methods[request.method] else {
                throw RPCError.internalError("tcp.attach is not in the schema")
            }
            let params = try TCPAttachParams(try gateway.catalog.bind(method, request.params))
            try Relay.checkBudget(gateway)  // before the token is used up: a refusal may be retried
            handle = try gateway.streamTokens.redeem(params.token, uid: peerUID)
            var bytes = ByteBufferAllocator().buffer(capacity: early.count)
            bytes.writeBytes(early)
            (relay, buffered) = try Relay.attach(handle, early: bytes)
        } catch {
            answer(id, .failure(error.asRPCError))
            return .refused
        }
        gateway.logger.debug("client \(self.id) attached to handle \(handle.id) of client \(handle.session.id)")
        answer(id, .success(["handle": .int(handle.id), "buffered": .int(Int64(buffered))]))
        becameStream(relay)
        return .attached
    }
}
