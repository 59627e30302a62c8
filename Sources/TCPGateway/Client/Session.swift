import Foundation
import CNetShim
import JSONRPC
import Logging
import NIOCore

/// One client of the gateway, as a JSON-RPC connection: its Unix socket transport, the request
/// pipeline framing → JSON-RPC decoding → dispatch → encoded answers, batches, descriptors that
/// came with request lines, and the in-flight limit. The handles it owns are in `handles`.
final class Session {
    let id: Int
    unowned let gateway: Gateway
    let reactor: Reactor
    let transport: ClientTransport
    let handles: HandleTable
    private var framer: LineFramer
    private var receivedFDs: [ClientTransport.ReceivedDescriptor] = []
    private(set) var isClosed = false
    /// Requests whose answers are still owed; reading pauses when too many are in flight.
    private var inFlight = 0
    /// What this client has in the gateway's memory budget, and the unfinished line's share.
    private(set) var heldBytes = 0
    private var framedBytes = 0
    /// SO_PEERCRED at connect time: picks the policy profile, and names the client in audit lines.
    let credentials: PeerCredentials
    var peerUID: Int { credentials.uid }
    var peerPID: Int { credentials.pid }

    init(id: Int, gateway: Gateway, socket: consuming OwnedFD, credentials: PeerCredentials) {
        self.id = id
        self.gateway = gateway
        self.reactor = gateway.reactor
        self.credentials = credentials
        self.transport = ClientTransport(
            socket: socket, reactor: gateway.reactor, highWatermark: gateway.config.outboundHighWatermark)
        self.framer = LineFramer(maxLineBytes: gateway.config.maxMessageBytes)
        self.handles = HandleTable(gateway: gateway)
        handles.session = self
    }

    func start() throws {
        transport.onRead = { [unowned self] bytes, fds in self.received(bytes, fds) }
        transport.onClose = { [unowned self] in self.closeAll() }
        transport.onCongestion = { [unowned self] congested in self.congestionChanged(congested) }
        transport.onQueued = { [unowned self] delta in self.account(delta) }
        try transport.start()
        transport.resumeReading()
    }

    /// Flowing handles stop reading while this is true: the client does not keep up with its
    /// events, or holds more than its share of a spent buffer budget.
    var isCongested: Bool { transport.congested || isRestrained }

    private var isRestrained: Bool {
        gateway.budget.restrains(held: heldBytes, clients: gateway.sessionCount)
    }

    /// Bytes this client holds in memory changed by `delta`.
    func account(_ delta: Int) {
        heldBytes += delta
        gateway.budget.adjust(delta)
    }

    /// The budget became spent or free again.
    func budgetChanged() {
        handles.congestionChanged()
        updateReading()
    }

    // MARK: inbound

    /// Descriptors held for lines not yet complete. A request takes at most one, so more than a
    /// few means a client is hoarding them in the gateway's descriptor table: the surplus is
    /// closed at once (a line that brought several fails the exactly-one check anyway).
    private static let maxHeldDescriptors = 16

    private func received(_ bytes: UnsafeRawBufferPointer, _ fds: [ClientTransport.ReceivedDescriptor]) {
        for passed in fds {
            if receivedFDs.count < Session.maxHeldDescriptors {
                receivedFDs.append(passed)
            } else if passed.fd >= 0 {
                _ = tcpgw_close(passed.fd)
            }
        }
        var frames: [LineFramer.Frame] = []
        framer.append(bytes, into: &frames)
        for frame in frames {
            guard !isClosed else { break }
            switch frame {
            case .line(let line, _, let end):
                handleLine(line, passed: takeDescriptors(before: end))
            case .oversized(_, let end):
                for d in takeDescriptors(before: end) where d >= 0 { _ = tcpgw_close(d) }
                send(RPCResponse.failure(
                    id: .null,
                    error: .invalidRequest("message longer than the limit of \(gateway.config.maxMessageBytes) bytes; it was discarded")))
            }
        }
        let framed = framer.heldBytes
        account(framed - framedBytes)
        framedBytes = framed
        // Descriptors that came before any complete line stay queued with their offsets.
        if !isClosed { updateReading() }
    }

    /// The descriptors that arrived with the bytes of the line ending at stream offset `end`.
    /// Lines are handled in order, so anything before `end` not yet taken belongs to this one.
    private func takeDescriptors(before end: UInt64) -> [Int32] {
        guard !receivedFDs.isEmpty else { return [] }
        var taken: [Int32] = []
        receivedFDs.removeAll { d in
            if d.offset < end { taken.append(d.fd); return true }
            return false
        }
        return taken
    }

    /// Reads requests while the client keeps up with its answers and has room for more calls.
    private func updateReading() {
        if !transport.congested && !isRestrained && inFlight < gateway.config.maxInFlightRequests {
            transport.resumeReading()
        } else {
            transport.pauseReading()
        }
    }

    private func handleLine(_ line: [UInt8], passed: [Int32]) {
        if gateway.logger.logLevel <= .trace {
            let shown = String(decoding: line.prefix(300), as: UTF8.self)
            gateway.logger.trace("client \(id) sent \(line.count) bytes\(passed.isEmpty ? "" : " with \(passed.count) descriptor(s)"): \(shown)")
        }
        let message = line.withUnsafeBytes { RPCMessage.decode($0) }
        var descriptors = passed
        switch message {
        case .failure(let error):
            closeDescriptors(&descriptors)
            send(RPCResponse.failure(id: .null, error: error))
        case .single(let entry):
            inFlight += 1
            run(entry, descriptors: &descriptors) { [weak self] reply in
                guard let self else { return }
                self.inFlight -= 1
                if let reply { self.send(reply.json, passing: reply.fd) }
                self.updateReading()
            }
            closeDescriptors(&descriptors)
        case .batch(let entries):
            inFlight += 1
            var replies = [Reply?](repeating: nil, count: entries.count)
            var remaining = entries.count
            let complete: (Int, Reply?) -> Void = { [weak self] index, reply in
                guard let self else { return }
                replies[index] = reply
                remaining -= 1
                guard remaining == 0 else { return }
                self.inFlight -= 1
                let answered = replies.compactMap { $0 }
                let passing = answered.first(where: { $0.fd != nil })?.fd
                if !answered.isEmpty { self.send(.array(answered.map(\.json)), passing: passing) }
                self.updateReading()
            }
            var flyAways = 0
            for (index, var entry) in entries.enumerated() {
                // An answer line carries one descriptor, so a batch may fly one socket away;
                // further tcp.flyAway entries are refused before they touch their handles.
                if case .request(let request) = entry, gateway.catalog.methods[request.method]?.descriptor == .answer {
                    flyAways += 1
                    if flyAways > 1 {
                        guard let id = request.id else {
                            complete(index, nil)
                            continue
                        }
                        entry = .invalid(
                            id: id, error: .invalidRequest("only one tcp.flyAway per batch: an answer line carries one descriptor"))
                    }
                }
                run(entry, descriptors: &descriptors) { reply in complete(index, reply) }
            }
            closeDescriptors(&descriptors)
        }
    }

    private func closeDescriptors(_ descriptors: inout [Int32]) {
        for d in descriptors where d >= 0 { _ = tcpgw_close(d) }
        descriptors = []
    }

    struct Reply {
        let json: JSONValue
        let fd: Int32?
    }

    /// Runs one entry; `done` gets the answer (nil for notifications).
    private func run(_ entry: RPCEntry, descriptors: inout [Int32], done: @escaping (Reply?) -> Void) {
        switch entry {
        case .invalid(let id, let error):
            done(Reply(json: RPCResponse.failure(id: id, error: error), fd: nil))
        case .request(let request):
            let call = Call(session: self, request: request) { result in
                guard let id = request.id else {
                    if case .success(let value) = result, let fd = value.fd { _ = tcpgw_close(fd) }
                    done(nil)
                    return
                }
                switch result {
                case .success(let value):
                    done(Reply(json: RPCResponse.success(id: id, result: value.result), fd: value.fd))
                case .failure(let error):
                    done(Reply(json: RPCResponse.failure(id: id, error: error), fd: nil))
                }
            }
            if gateway.catalog.methods[request.method]?.descriptor == .request {
                call.passedDescriptors = descriptors
                descriptors = []
            }
            gateway.dispatcher.dispatch(call)
        }
    }

    // MARK: outbound

    func send(_ message: JSONValue, passing fd: Int32? = nil) {
        var bytes = JanssonCodec.serialize(message)
        bytes.append(0x0A)
        var buffer = ByteBufferAllocator().buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        transport.write(buffer, passing: fd)
    }

    func emit(_ method: String, _ params: JSONValue) {
        guard !isClosed else { return }
        send(RPCResponse.notification(method: method, params: params))
    }

    /// `tcp.onData`, encoded directly: the data path skips building a JSON tree.
    func emitData(handle: Int64, _ data: UnsafeRawBufferPointer) {
        guard !isClosed else { return }
        transport.write(DataFrameEncoder.onData(handle: handle, data))
    }

    private func congestionChanged(_ congested: Bool) {
        handles.congestionChanged()
        if congested {
            gateway.logger.debug("client \(id) is not reading; pausing its flowing handles")
        }
        updateReading()
    }

    /// A connection taken by async accepting: under a handle, then announced.
    func acceptedAsync(server: ServerHandle, socket: consuming OwnedFD, remote: SockAddr) {
        guard let connection = try? handles.openConnection(socket, remote: remote, flowing: true) else { return }
        emit("tcp.onAccept", ["handle": .int(server.id), "client": .int(connection.id), "remote": remote.json])
        // Reading starts only now, so no tcp.onData can precede the tcp.onAccept.
        connection.updateInterest()
    }

    /// The client went away: every handle it owns is closed and its calls are cancelled.
    func closeAll() {
        guard !isClosed else { return }
        isClosed = true
        handles.closeAll()
        account(-framedBytes)
        framedBytes = 0
        for d in receivedFDs where d.fd >= 0 { _ = tcpgw_close(d.fd) }
        receivedFDs.removeAll()
        transport.close()
        gateway.sessionEnded(self)
    }
}

/// One request being served: its validated params and the way to answer it.
final class Call {
    struct Success {
        let result: JSONValue
        let fd: Int32?
    }

    let session: Session
    let request: RPCRequest
    var params = Params(values: JSONObject())
    var passedDescriptors: [Int32] = []
    private var completion: ((Result<Success, RPCError>) -> Void)?

    init(session: Session, request: RPCRequest, completion: @escaping (Result<Success, RPCError>) -> Void) {
        self.session = session
        self.request = request
        self.completion = completion
    }

    func succeed(_ result: JSONValue, passing fd: Int32? = nil) {
        guard let completion else {
            if let fd { _ = tcpgw_close(fd) }
            return
        }
        self.completion = nil
        completion(.success(Success(result: result, fd: fd)))
    }

    func fail(_ error: Error) {
        guard let completion else { return }
        self.completion = nil
        completion(.failure(error.asRPCError))
    }
}
