import Foundation
import CNetShim
import JSONRPC
import Logging
import NIOCore

/// One client of the gateway, as a JSON-RPC connection: its Unix socket transport, the request
/// pipeline framing → JSON-RPC decoding → dispatch → encoded answers, batches, descriptors that
/// came with request lines, and the in-flight limit. The handles it owns are in `handles`.
///
/// A kept session (`session.keep`, contract §12) outlives its connection: the transport is
/// replaceable, and its lines are numbered and kept in `replay` until acknowledged (see
/// Session+Resumption.swift).
final class Session {
    let id: Int
    unowned let gateway: Gateway
    let reactor: Reactor
    /// This client's connection; a resume replaces it (the old one is closed first).
    private(set) var transport: ClientTransport
    let handles: HandleTable
    private var framer: LineFramer
    private var receivedFDs: [ClientTransport.ReceivedDescriptor] = []
    private(set) var isClosed = false
    /// Requests whose answers are still owed; reading pauses when too many are in flight.
    private var inFlight = 0
    /// What this client has in the gateway's memory budget, and the unfinished line's share.
    private(set) var heldBytes = 0
    private var framedBytes = 0
    /// Bytes read from the client so far (where the next read starts in its stream).
    private var receivedTotal: UInt64 = 0
    /// Until a line other than a failed `tcp.attach` arrives, a `tcp.attach` may turn this
    /// connection into a byte stream (contract §11).
    var mayAttach = true
    /// Lines read on this connection (so `session.resume` knows it is the first).
    private(set) var linesRead = 0

    // Resumption (contract §12): all nil or idle until session.keep.
    var lifecycle = SessionLifecycle()
    /// The lines written since session.keep, until acknowledged; nil for an ordinary session
    /// (the one branch the hot write paths take).
    var replay: ReplayLog?
    var token: String?
    /// The client's lines read since its session.keep.
    var clientLines: UInt64 = 0
    /// More than --replay-bytes is kept: flowing handles stop reading until acks release some.
    var replayCongested = false
    var graceTimer: ReactorTimer?
    /// Set when a session.resume on this connection handed it to the kept session.
    private var successor: Session?
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
            socket: socket, reactor: gateway.reactor, readBuffer: gateway.clientReadScratch,
            highWatermark: gateway.config.outboundHighWatermark)
        self.framer = LineFramer(maxLineBytes: gateway.config.maxMessageBytes)
        self.handles = HandleTable(gateway: gateway)
        handles.session = self
    }

    func start() throws {
        bindTransport()
        try transport.start()
        transport.resumeReading()
    }

    private func bindTransport() {
        transport.onRead = { [unowned self] bytes, fds in self.received(bytes, fds) }
        transport.onClose = { [unowned self] in self.transportClosed() }
        transport.onCongestion = { [unowned self] congested in self.congestionChanged(congested) }
        transport.onQueued = { [unowned self] delta in self.account(delta) }
    }

    /// Flowing handles stop reading while this is true: the client does not keep up with its
    /// events, holds more than its share of a spent buffer budget, or has too many lines kept
    /// for replay unacknowledged.
    var isCongested: Bool { (transport.congested && !transport.isClosed) || isRestrained || replayCongested }

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
        let chunkStart = receivedTotal
        receivedTotal += UInt64(bytes.count)
        framer.append(bytes, into: &frames)
        // A session.resume hands this connection (and the rest of what it read) to the kept session.
        var receiver = self
        for frame in frames {
            if let next = receiver.successor { receiver = next }
            guard !receiver.isClosed else { break }
            // What follows an attach line in this read is already the stream's (contract §11).
            if receiver === self, mayAttach, case .line(let line, _, let end) = frame {
                switch attachIfFirst(line, then: UnsafeRawBufferPointer(rebasing: bytes[Int(end - chunkStart)...])) {
                case .attached: return
                case .refused: _ = takeDescriptors(before: end); continue  // closed: an attach takes none
                case .notAttach: break
                }
            }
            if case .oversized = frame { receiver.mayAttach = false }
            receiver.handleFrame(frame)
        }
        if let next = receiver.successor { receiver = next }
        receiver.framingDone()
    }

    private func framingDone() {
        let framed = framer.heldBytes
        account(framed - framedBytes)
        framedBytes = framed
        // Descriptors that came before any complete line stay queued with their offsets.
        if !isClosed { updateReading() }
    }

    private func handleFrame(_ frame: LineFramer.Frame) {
        linesRead += 1
        if replay != nil { clientLines += 1 }
        switch frame {
        case .line(let line, _, let end):
            handleLine(line, passed: takeDescriptors(before: end))
        case .oversized(_, let end):
            _ = takeDescriptors(before: end)  // dropped: closed with the discarded line
            send(RPCResponse.failure(
                id: .null,
                error: .invalidRequest("message longer than the limit of \(gateway.config.maxMessageBytes) bytes; it was discarded")))
        }
    }

    /// The descriptors that arrived with the bytes of the line ending at stream offset `end`.
    /// Lines are handled in order, so anything before `end` not yet taken belongs to this one.
    private func takeDescriptors(before end: UInt64) -> PassedDescriptors {
        guard !receivedFDs.isEmpty else { return PassedDescriptors(adopting: []) }
        var taken: [Int32] = []
        receivedFDs.removeAll { d in
            if d.offset < end { taken.append(d.fd); return true }
            return false
        }
        return PassedDescriptors(adopting: taken)
    }

    /// Reads requests while the client keeps up with its answers and has room for more calls.
    private func updateReading() {
        if !transport.congested && !isRestrained && inFlight < gateway.config.maxInFlightRequests {
            transport.resumeReading()
        } else {
            transport.pauseReading()
        }
    }

    /// Handles one request line; descriptors that came with it and that no call takes close
    /// when it is done (dropping `descriptors` closes them).
    private func handleLine(_ line: [UInt8], passed: consuming PassedDescriptors) {
        var descriptors = passed
        if gateway.logger.logLevel <= .trace {
            let shown = String(decoding: line.prefix(300), as: UTF8.self)
            let count = descriptors.count
            gateway.logger.trace("client \(id) sent \(line.count) bytes\(count == 0 ? "" : " with \(count) descriptor(s)"): \(shown)")
        }
        let message = line.withUnsafeBytes { RPCMessage.decode($0) }
        switch message {
        case .failure(let error):
            send(RPCResponse.failure(id: .null, error: error))
        case .single(let entry):
            inFlight += 1
            run(entry, descriptors: &descriptors, answer: .single)
        case .batch(let entries):
            inFlight += 1
            let batch = Batch(count: entries.count)
            var flyAways = 0
            for (index, var entry) in entries.enumerated() {
                // An answer line carries one descriptor, so a batch may fly one socket away;
                // further tcp.flyAway entries are refused before they touch their handles.
                if case .request(let request) = entry, gateway.catalog.methods[request.method]?.descriptor == .answer {
                    flyAways += 1
                    if flyAways > 1 {
                        guard let id = request.id else {
                            deliver(nil, to: .batch(batch, index))
                            continue
                        }
                        entry = .invalid(
                            id: id, error: .invalidRequest("only one tcp.flyAway per batch: an answer line carries one descriptor"))
                    }
                }
                run(entry, descriptors: &descriptors, answer: .batch(batch, index))
            }
        }
    }

    /// One answer: a result or an error for the request with `id`.
    struct Reply {
        let id: JSONValue
        let outcome: Result<JSONValue, RPCError>
        let fd: Int32?
        /// The whole answer line, already written (a data answer: see `Call.succeed(received:)`);
        /// `outcome` is then only a placeholder. Calls in a batch never get one: their answers
        /// are built as values.
        var line: ByteBuffer? = nil

        var json: JSONValue {
            switch outcome {
            case .success(let result): return RPCResponse.success(id: id, result: result)
            case .failure(let error): return RPCResponse.failure(id: id, error: error)
            }
        }
    }

    /// The answers of one batch, gathered until the last entry is done.
    final class Batch {
        var replies: [Reply?]
        var remaining: Int

        init(count: Int) {
            replies = [Reply?](repeating: nil, count: count)
            remaining = count
        }
    }

    /// Where an entry's answer goes: its own line, or its place in a batch.
    enum Answer {
        case single
        case batch(Batch, Int)
    }

    /// Runs one entry; its answer (none for a notification) goes to `answer`.
    private func run(_ entry: RPCEntry, descriptors: inout PassedDescriptors, answer: Answer) {
        switch entry {
        case .invalid(let id, let error):
            deliver(Reply(id: id, outcome: .failure(error), fd: nil), to: answer)
        case .request(let request):
            let route = gateway.dispatcher.route(request.method)
            let call = Call(session: self, request: request, answer: answer)
            if replay != nil, route?.method.descriptor == .answer {
                // A replayed answer could not carry its descriptor (contract §12).
                call.fail(RPCError.descriptor("\(request.method) is refused on a kept session: a replayed answer cannot carry a descriptor"))
                return
            }
            if route?.method.descriptor == .request {
                call.passedDescriptors = descriptors.takeAll()
            }
            gateway.dispatcher.dispatch(call, route)
        }
    }

    /// A call is done (`Call.succeed` / `Call.fail`).
    fileprivate func finish(_ call: Call, _ outcome: Result<Call.Success, RPCError>) {
        guard let id = call.request.id else {
            if case .success(let value) = outcome, let fd = value.fd { _ = tcpgw_close(fd) }
            deliver(nil, to: call.answer)
            return
        }
        switch outcome {
        case .success(let value):
            deliver(Reply(id: id, outcome: .success(value.result), fd: value.fd, line: value.line), to: call.answer)
        case .failure(let error): deliver(Reply(id: id, outcome: .failure(error), fd: nil), to: call.answer)
        }
    }

    private func deliver(_ reply: Reply?, to answer: Answer) {
        switch answer {
        case .single:
            inFlight -= 1
            if let reply { send(reply) }
            updateReading()
        case .batch(let batch, let index):
            batch.replies[index] = reply
            batch.remaining -= 1
            guard batch.remaining == 0 else { return }
            inFlight -= 1
            let answered = batch.replies.compactMap { $0 }
            let passing = answered.first(where: { $0.fd != nil })?.fd
            if !answered.isEmpty { send(.array(answered.map(\.json)), passing: passing) }
            updateReading()
        }
    }

    /// Sends an answer line (for a first line handled before dispatch, like `tcp.attach`).
    func answer(_ id: JSONValue, _ outcome: Result<JSONValue, RPCError>) {
        send(Reply(id: id, outcome: outcome, fd: nil))
    }

    // MARK: outbound

    /// An answer line; a result goes out without building its envelope object.
    private func send(_ reply: Reply) {
        if let line = reply.line { return send(line: line) }
        guard reply.fd == nil, case .success(let result) = reply.outcome else {
            send(reply.json, passing: reply.fd)
            return
        }
        guard replay == nil else {
            writeKept { LineEncoder.writeSuccess(id: reply.id, result: result, into: &$0) }
            return
        }
        transport.writeLine { LineEncoder.writeSuccess(id: reply.id, result: result, into: &$0) }
    }

    func send(_ message: JSONValue, passing fd: Int32? = nil) {
        guard replay == nil else {
            writeKept(passing: fd) { LineEncoder.write(message, into: &$0) }
            return
        }
        guard let fd else {
            transport.writeLine { LineEncoder.write(message, into: &$0) }
            return
        }
        var buffer = ByteBufferAllocator().buffer(capacity: 256)
        LineEncoder.write(message, into: &buffer)
        transport.write(buffer, passing: fd)
    }

    func emit(_ method: String, _ params: JSONValue) {
        guard !isClosed else { return }
        send(RPCResponse.notification(method: method, params: params))
    }

    /// `tcp.onData`, encoded directly: the data path skips building a JSON tree.
    func emitData(handle: Int64, _ data: UnsafeRawBufferPointer) {
        guard !isClosed else { return }
        send(line: DataFrameEncoder.onData(handle: handle, data))
    }

    /// A line already written out (a data frame): counted and kept on a kept session.
    private func send(line: ByteBuffer) {
        guard replay == nil else { return keep(line: line) }
        transport.write(line)
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
        connection.inheritFaults(from: server)
        emit("tcp.onAccept", ["handle": .int(server.id), "client": .int(connection.id), "remote": remote.json])
        // Reading starts only now, so no tcp.onData can precede the tcp.onAccept.
        connection.updateInterest()
    }

    /// This connection became an attached stream (`tcp.attach`): it stops being a client.
    /// Its answer is written first; the socket then leaves the transport for `relay`.
    func becameStream(_ relay: Relay) {
        isClosed = true
        account(-framedBytes)
        framedBytes = 0
        for d in receivedFDs where d.fd >= 0 { _ = tcpgw_close(d.fd) }
        receivedFDs.removeAll()
        transport.handOver { [self] socket in
            relay.startStream(socket)
            gateway.sessionEnded(self)
        }
    }

    /// The client went away: every handle it owns is closed and its calls are cancelled.
    func closeAll() {
        guard !isClosed else { return }
        isClosed = true
        lifecycle.end()
        handles.closeAll()
        account(-framedBytes)
        framedBytes = 0
        for d in receivedFDs where d.fd >= 0 { _ = tcpgw_close(d.fd) }
        receivedFDs.removeAll()
        endResumption()
        transport.close()
        gateway.sessionEnded(self)
    }

    /// The connection dropped: the disconnect path, or for a kept session its grace.
    private func transportClosed() {
        switch lifecycle.connectionDropped() {
        case .closeAll:
            closeAll()
        case .startGrace(let milliseconds, let generation):
            dropUnfinishedInput()
            gateway.logger.debug("client \(id): connection dropped; its session is kept for \(milliseconds) ms")
            graceTimer = reactor.schedule(in: milliseconds) { [weak self] in self?.graceExpired(generation) }
            // The dead connection's congestion no longer holds the handles back.
            handles.congestionChanged()
        case .none, .takeOver:
            break
        }
    }

    private func graceExpired(_ generation: Int) {
        guard lifecycle.graceExpired(generation: generation) == .closeAll else { return }
        gateway.logger.debug("client \(id): its grace ran out without a resume")
        closeAll()
    }

    /// A line the dropped connection left unfinished is discarded (the client resends it),
    /// and descriptors not yet matched to a line close with it.
    private func dropUnfinishedInput() {
        framer = LineFramer(maxLineBytes: gateway.config.maxMessageBytes)
        account(-framedBytes)
        framedBytes = 0
        for d in receivedFDs where d.fd >= 0 { _ = tcpgw_close(d.fd) }
        receivedFDs.removeAll()
    }

    // MARK: handing a connection over (session.resume)

    /// `session.resume` from `newcomer` (a new connection whose first line it was, already
    /// answered): this kept session takes the connection over, replays its lines after
    /// `received` and goes on live. The caller has checked the token, uid and `received`.
    func adopt(_ newcomer: Session, received: UInt64) {
        guard let action = lifecycle.resume() else { return }
        if action == .takeOver {
            // The old connection closes first; its unsent lines are in the log anyway.
            transport.onClose = nil
            transport.close()
        }
        graceTimer?.cancel()
        graceTimer = nil
        dropUnfinishedInput()
        acknowledge(received)
        // The newcomer's connection, with what it had read beyond its first line.
        transport = newcomer.transport
        let queued = transport.queuedBytes
        newcomer.account(-queued - newcomer.framedBytes)
        account(queued + newcomer.framedBytes)
        framer = newcomer.framer
        framedBytes = newcomer.framedBytes
        receivedFDs = newcomer.receivedFDs
        newcomer.framedBytes = 0
        newcomer.receivedFDs = []
        newcomer.successor = self
        newcomer.isClosed = true
        gateway.sessionEnded(newcomer, handedOver: true)
        bindTransport()
        gateway.logger.debug("client \(id) resumed on the connection of client \(newcomer.id)")
        if let replay {
            for slice in replay.lines(after: received) { transport.write(slice) }
        }
        handles.congestionChanged()
        updateReading()
    }
}

/// One request being served: its validated params and the way to answer it.
final class Call {
    struct Success {
        let result: JSONValue
        let fd: Int32?
        var line: ByteBuffer? = nil
    }

    let session: Session
    let request: RPCRequest
    fileprivate let answer: Session.Answer
    var params = Params(values: JSONObject())
    /// What came with the request's line, for a method that takes descriptors.
    var passedDescriptors = PassedDescriptors(adopting: [])
    private var done = false

    init(session: Session, request: RPCRequest, answer: Session.Answer) {
        self.session = session
        self.request = request
        self.answer = answer
    }

    /// Whether this call is an entry of a batch (its answer waits for the whole batch).
    var inBatch: Bool {
        if case .batch = answer { return true }
        return false
    }

    func succeed(_ result: JSONValue, passing fd: Int32? = nil) {
        guard !done else {
            if let fd { _ = tcpgw_close(fd) }
            return
        }
        done = true
        session.finish(self, .success(Success(result: result, fd: fd)))
    }

    /// Answers a `tcp.recv`/`tcp.recvfrom`. In base64 on a line of its own, the answer is
    /// written straight from the bytes (`DataFrameEncoder.recvAnswer`); otherwise, and in a
    /// batch, it is built as a value like any other result.
    func succeed(received bytes: ByteBuffer, encoding: DataEncoding, eof: Bool, remote: JSONValue?) {
        if encoding == .base64, !inBatch, !done, let id = request.id,
            let line = DataFrameEncoder.recvAnswer(id: id, bytes, eof: eof, remote: remote)
        {
            done = true
            session.finish(self, .success(Success(result: .null, fd: nil, line: line)))
            return
        }
        var answer: JSONObject = [
            "data": .string(encoding.encode(bytes)), "encoding": .string(encoding.rawValue), "eof": .bool(eof),
        ]
        if let remote { answer["remote"] = remote }
        succeed(.object(answer))
    }

    func fail(_ error: Error) {
        guard !done else { return }
        done = true
        session.finish(self, .failure(error.asRPCError))
    }
}
