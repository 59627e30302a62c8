import CNetShim
import Glibc
import JSONRPC
import NIOCore

/// A connected (or connecting) TCP socket under a handle. The handle owns the descriptor,
/// watches it with the reactor, reads and writes it itself, and runs its lifecycle through
/// `ConnectionStateMachine`.
///
/// Paused (the default for sync-created handles): the socket is read only while a `tcp.recv`
/// waits, and no more than it asked for, so nothing piles up that the client did not ask for.
/// Flowing: every read becomes a `tcp.onData` event, unless the client is congested.
final class ConnectionHandle: ReactorSource {
    typealias RecvResult = Result<(ByteBuffer, Bool), RPCError>

    private struct Receiver {
        let id: UInt64
        let length: Int
        let complete: (RecvResult) -> Void
        var timer: ReactorTimer?
    }

    private struct PendingWrite {
        var bytes: ByteBuffer
        let count: Int
        /// nil for a drain marker's follower-less writes; a drain marker has no bytes.
        let done: ((Result<Int, RPCError>) -> Void)?
    }

    /// Reads per readiness event on a flowing handle: enough to move bulk data, few enough
    /// that one busy socket cannot starve the others.
    private static let readsPerWakeup = 4
    static let readChunk = 64 * 1024

    let id: Int64
    unowned let session: Session
    private let reactor: Reactor
    private var socket: OwnedFD?
    private var watch = IOWatch()
    private var machine: ConnectionStateMachine
    var local: SockAddr?
    var remote: SockAddr?
    private var inbox: ByteBuffer
    private var outbox: CircularBuffer<PendingWrite> = []
    /// Accepted by tcp.send and not yet written: counted in the gateway's memory budget.
    private(set) var pendingWriteBytes = 0 {
        didSet { session.account(pendingWriteBytes - oldValue) }
    }
    private var receivers: CircularBuffer<Receiver> = []
    private var nextReceiverID: UInt64 = 1
    private var shutdownWaiters: [(Result<Void, RPCError>) -> Void] = []
    private var connectTimer: ReactorTimer?
    private var connectCompletion: ((Result<Void, ConnectFailure>) -> Void)?
    /// Where a failed attempt of a multi-address connect goes instead of ending it.
    private var retry: ((SystemError) -> Void)?
    private(set) var bytesIn: Int64 = 0
    private(set) var bytesOut: Int64 = 0
    /// Faults (contract §10); nil until the first is added, so a handle without any takes
    /// the plain path at the cost of one nil check.
    private(set) var faults: HandleFaults?
    /// Slice lengths at the front of the inbox while a slicer works on `in`: a recv answers at
    /// most one slice.
    private var inboxSlices: CircularBuffer<Int> = []
    /// Set while `tcp.pipe` or `tcp.attach` moves this socket's bytes (contract §11): the
    /// relay watches the socket then, and the client neither reads nor writes it.
    private(set) var relay: Relay?

    enum ConnectFailure: Error {
        case system(SystemError)
        case timedOut
        case closed
        /// A connect by name that never got to connect: the name did not resolve, or the
        /// policy refused every address. `event` is the `error` of its tcp.onConnect.
        case rejected(RPCError, event: JSONValue)
    }

    /// `socket` is nil only for a connect by name still being resolved (`attempt` brings one).
    init(id: Int64, session: Session, socket: consuming OwnedFD?, remote: SockAddr?, flowing: Bool, connecting: Bool) {
        self.id = id
        self.session = session
        self.reactor = session.gateway.reactor
        self.remote = remote
        self.machine = ConnectionStateMachine(connecting: connecting, flowing: flowing)
        self.inbox = ByteBuffer()
        self.socket = consume socket
        if !connecting { local = SockAddr.local(of: fd) }
    }

    /// The descriptor while the handle owns one, else -1.
    var fd: Int32 { socket?.raw ?? -1 }
    var flowing: Bool { machine.flowing }
    var isOpen: Bool { machine.isOpen }
    var isConnecting: Bool { machine.phase == .connecting }
    var isClosed: Bool { machine.phase == .closed || machine.phase == .gone }
    var eof: Bool { machine.peerFinished }
    var bufferedBytes: Int { inbox.readableBytes }

    // MARK: connecting

    /// Connects the socket to `address`; `completion` runs once, unless the client closes the
    /// handle first (then it gets `.closed`).
    func connect(to address: SockAddr, timeoutMS: Int?, completion: @escaping (Result<Void, ConnectFailure>) -> Void) {
        beginConnecting(timeoutMS: timeoutMS, completion: completion)
        startAttempt(address)
    }

    /// Starts a connect whose addresses come later, one at a time (a host name's): `timeoutMS`
    /// bounds them all from now, and `close()` or the timeout end it as for one address.
    func beginConnecting(timeoutMS: Int?, completion: @escaping (Result<Void, ConnectFailure>) -> Void) {
        connectCompletion = completion
        if let ms = timeoutMS {
            connectTimer = reactor.schedule(in: ms) { [weak self] in self?.connectFinished(.failure(.timedOut)) }
        }
    }

    /// Whether a connect begun here is still waiting for its outcome.
    var awaitsConnect: Bool { connectCompletion != nil }

    /// One attempt of a connect begun with `beginConnecting`, on a fresh `socket` for
    /// `address`. Success ends the connect; an OS failure goes to `failed`, the connect still
    /// pending, so the caller may try the next address or `endConnect` with the error.
    func attempt(_ address: SockAddr, socket fresh: consuming OwnedFD, failed: @escaping (SystemError) -> Void) {
        guard connectCompletion != nil else { return }
        watch.cancel(reactor: reactor)
        socket = consume fresh
        remote = address
        retry = failed
        startAttempt(address)
    }

    /// Ends a connect begun with `beginConnecting` with `failure`.
    func endConnect(_ failure: ConnectFailure) {
        connectFinished(.failure(failure))
    }

    private func startAttempt(_ address: SockAddr) {
        let started = tcpgw_connect_start(fd, address.addr, Int32(address.port), address.domain)
        if started <= 0 {
            // Finished at once: report it after the creating call's answer, as a later one would be.
            let result: Result<Void, ConnectFailure> =
                started == 0 ? .success(()) : .failure(.system(SystemError(errno: -started, syscall: "connect")))
            reactor.execute { [weak self] in self?.connectFinished(result) }
            return
        }
        updateInterest()
    }

    private func connectFinished(_ result: Result<Void, ConnectFailure>) {
        guard let completion = connectCompletion else { return }
        // An attempt of several failed: its caller decides what comes next.
        if case .failure(.system(let error)) = result, let failed = retry {
            retry = nil
            watch.cancel(reactor: reactor)
            failed(error)
            return
        }
        retry = nil
        connectCompletion = nil
        connectTimer?.cancel()
        connectTimer = nil
        switch result {
        case .success:
            apply(machine.handle(.connected))
            local = SockAddr.local(of: fd)
            remote = SockAddr.remote(of: fd) ?? remote
            faults?.establish()
        case .failure:
            apply(machine.handle(.connectFailed))
        }
        completion(result)
    }

    // MARK: readiness

    func ready(_ events: IOEvents) {
        if machine.phase == .connecting {
            guard events.writable else { return }
            let soError = tcpgw_so_error(fd)
            if soError == 0 {
                connectFinished(.success(()))
            } else {
                let code = soError > 0 ? soError : -soError
                connectFinished(.failure(.system(SystemError(errno: code, syscall: "connect"))))
            }
            return
        }
        if events.writable && !outbox.isEmpty { flushWrites() }
        if events.readable {
            // Level-triggered: a read interest no longer wanted (congestion, say) is dropped here.
            if wantsRead { readAvailable() } else { updateInterest() }
        }
    }

    /// Whether the socket should be read now: flowing and the client keeping up, or a
    /// `tcp.recv` waiting.
    private var wantsRead: Bool {
        guard machine.canRead else { return false }
        if let faults, faults.stopsReading { return false }
        return machine.flowing ? !session.isCongested : !receivers.isEmpty
    }

    func updateInterest() {
        guard relay == nil, let raw = socket?.raw else { return }
        var interest: IOInterest = []
        if machine.phase == .connecting || !outbox.isEmpty { interest.insert(.write) }
        if wantsRead { interest.insert(.read) }
        do {
            try watch.set(interest, fd: raw, source: self, reactor: reactor)
        } catch {
            // epoll refused the descriptor: surface it as the socket's failure (a connect in
            // progress reports it as the connect's).
            let failure = (error as? SystemError) ?? SystemError(errno: EBADF, syscall: "epoll_ctl")
            if connectCompletion != nil {
                reactor.execute { [weak self] in self?.connectFinished(.failure(.system(failure))) }
            } else {
                apply(machine.handle(.failed(errno: failure.errno)))
            }
        }
    }

    private func readAvailable() {
        if machine.flowing {
            let scratch = session.gateway.readScratch
            for _ in 0..<ConnectionHandle.readsPerWakeup {
                let n = tcpgw_read(fd, scratch.baseAddress, ConnectionHandle.readChunk)
                guard readSucceeded(n) else { return }
                if let faults, faults.inActive {
                    faults.feedIn(ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: scratch[0..<n])))
                    if faults.stopsReading { break }
                } else {
                    session.emitData(handle: id, UnsafeRawBufferPointer(rebasing: scratch[0..<n]))
                }
                if n < ConnectionHandle.readChunk || session.isCongested || !machine.flowing { break }
            }
            updateInterest()
        } else if let first = receivers.first {
            readIntoInbox(upTo: first.length)
            serveReceivers()
        }
    }

    /// One read into the inbox of at most `limit` bytes (what the waiting recv asked for).
    @discardableResult
    private func readIntoInbox(upTo limit: Int) -> Bool {
        let wanted = max(limit - inbox.readableBytes, 1)
        var result = 0
        if let faults, faults.inActive {
            // A stall (or a full chain) keeps the socket unread, even for a recv's own read.
            guard !faults.stopsReading else { return false }
            // Through the in-chain: what it lets go reaches the inbox through its sink.
            var chunk = ByteBufferAllocator().buffer(capacity: wanted)
            chunk.writeWithUnsafeMutableBytes(minimumWritableBytes: wanted) { buffer in
                result = tcpgw_read(fd, buffer.baseAddress, wanted)
                return max(result, 0)
            }
            guard readSucceeded(result) else { return false }
            faults.feedIn(chunk)
            return true
        }
        inbox.writeWithUnsafeMutableBytes(minimumWritableBytes: wanted) { buffer in
            result = tcpgw_read(fd, buffer.baseAddress, wanted)
            return max(result, 0)
        }
        return readSucceeded(result)
    }

    /// Counts a read's bytes, or feeds its FIN or failure to the machine (then false).
    private func readSucceeded(_ n: Int) -> Bool {
        if n > 0 {
            bytesIn += Int64(n)
            return true
        }
        if n == 0, let faults, faults.inActive {
            faults.feedInEnd()  // the FIN must not overtake the bytes the chain holds
        } else if n == 0 {
            apply(machine.handle(.peerFinished))
        } else if n != -Int(EAGAIN) && n != -Int(EINTR) {
            apply(machine.handle(.failed(errno: Int32(-n))))
        }
        return false
    }

    // MARK: recv

    func recv(length: Int, timeoutMS: Int?, complete: @escaping (RecvResult) -> Void) {
        if let refusal = relayRefusal {
            complete(.failure(refusal))
            return
        }
        if machine.phase == .connecting {
            complete(.failure(.handleState("handle \(id) is still connecting")))
            return
        }
        if receivers.isEmpty {
            // Take what the kernel already has (no more than asked), without a trip through epoll.
            if machine.canRead && inbox.readableBytes < length { readIntoInbox(upTo: length) }
            if inbox.readableBytes > 0 || machine.inputEnded {
                if inbox.readableBytes == 0 && !machine.isOpen && !machine.peerFinished {
                    complete(.failure(.handleState("handle \(id) is closed")))
                } else {
                    complete(.success(take(length)))
                }
                return
            }
            if timeoutMS == 0 {
                complete(.failure(.timedOut("recv")))
                return
            }
        }
        let receiverID = nextReceiverID
        nextReceiverID += 1
        var receiver = Receiver(id: receiverID, length: length, complete: complete, timer: nil)
        if let ms = timeoutMS {
            receiver.timer = reactor.schedule(in: max(ms, 1)) { [weak self] in self?.expireReceiver(receiverID) }
        }
        receivers.append(receiver)
        updateInterest()
    }

    private func take(_ length: Int) -> (ByteBuffer, Bool) {
        var count = min(length, inbox.readableBytes)
        if let slice = inboxSlices.first {
            count = min(count, slice)
            if slice - count > 0 { inboxSlices[inboxSlices.startIndex] = slice - count } else { inboxSlices.removeFirst() }
        }
        let slice = inbox.readSlice(length: count) ?? ByteBuffer()
        if inbox.readableBytes == 0 { inbox.clear() }
        return (slice, count == 0 && machine.inputEnded)
    }

    private func serveReceivers() {
        while let first = receivers.first, inbox.readableBytes > 0 || machine.inputEnded {
            receivers.removeFirst()
            first.timer?.cancel()
            first.complete(.success(take(first.length)))
        }
        updateInterest()
    }

    private func expireReceiver(_ receiverID: UInt64) {
        guard let index = receivers.firstIndex(where: { $0.id == receiverID }) else { return }
        let receiver = receivers.remove(at: index)
        receiver.complete(.failure(.timedOut("recv")))
        updateInterest()
    }

    private func failReceivers(_ failure: ConnectionStateMachine.Failure) {
        let error: RPCError
        switch failure {
        case .unknownHandle: error = .unknownHandle(id)
        case .system(let code): error = SystemError(errno: code, syscall: "recv").rpcError
        case .resumed: error = .handleState("handle \(id) was resumed: data now arrives as tcp.onData")
        case .fault(let name, let code): error = .endedByFault(id, fault: name, errno: code)
        }
        while let first = receivers.popFirst() {
            first.timer?.cancel()
            first.complete(.failure(error))
        }
    }

    // MARK: send

    func send(_ data: ByteBuffer, timeoutMS: Int?, complete: @escaping (Result<Int, RPCError>) -> Void) {
        if let refusal = relayRefusal {
            complete(.failure(refusal))
            return
        }
        guard machine.isOpen else {
            complete(.failure(.handleState("handle \(id) is not connected")))
            return
        }
        guard machine.canWrite else {
            complete(.failure(.handleState("handle \(id) was shut down for writing")))
            return
        }
        let count = data.readableBytes
        let limit = session.gateway.config.maxPendingWriteBytes
        if pendingWriteBytes + count > limit {
            complete(.failure(.limit("more than \(limit) bytes waiting to be sent on handle \(id)")))
            return
        }
        let budget = session.gateway.budget
        if !outbox.isEmpty && !budget.hasRoom(for: count) {
            complete(.failure(.limit(
                "the gateway's buffer budget (--max-buffer-bytes \(budget.limit)) is spent; the \(count) bytes were not queued")))
            return
        }
        if let faults, faults.outActive {
            // What the chain holds counts as queued: the same limits apply.
            guard pendingWriteBytes + faults.heldOutBytes + count <= limit else {
                complete(.failure(.limit("more than \(limit) bytes waiting to be sent on handle \(id)")))
                return
            }
            guard budget.hasRoom(for: count) else {
                complete(.failure(.limit(
                    "the gateway's buffer budget (--max-buffer-bytes \(budget.limit)) is spent; the \(count) bytes were not queued")))
                return
            }
            faults.feedOut(data)  // answered once the out-chain has taken the bytes
            complete(.success(count))
            return
        }
        var data = data
        if outbox.isEmpty {
            // Straight to the kernel when nothing waits: most sends finish here.
            let written = data.withUnsafeReadableBytes { tcpgw_write(fd, $0.baseAddress, $0.count) }
            if written == count {
                bytesOut += Int64(count)
                complete(.success(count))
                return
            }
            if written < 0 && written != -Int(EAGAIN) && written != -Int(EINTR) {
                let error = SystemError(errno: Int32(-written), syscall: "send")
                complete(.failure(error.rpcError))
                apply(machine.handle(.failed(errno: error.errno)))
                return
            }
            if written > 0 {
                bytesOut += Int64(written)
                data.moveReaderIndex(forwardBy: written)
            }
        }
        var finished = false
        var timer: ReactorTimer?
        if let ms = timeoutMS {
            timer = reactor.schedule(in: ms) {
                guard !finished else { return }
                finished = true
                // The bytes stay queued and still go out: nothing is lost or reordered.
                complete(.failure(.timedOut("send (the \(count) bytes stay queued and will be sent)")))
            }
        }
        pendingWriteBytes += data.readableBytes
        outbox.append(PendingWrite(bytes: data, count: count) { result in
            timer?.cancel()
            guard !finished else { return }
            finished = true
            complete(result)
        })
        updateInterest()
    }

    /// Calls `then` once everything queued so far has reached the kernel (or failed).
    func drainWrites(_ then: @escaping () -> Void) {
        if let faults, faults.heldOutBytes > 0, machine.isOpen {
            // What the out-chain holds goes first.
            faults.whenOutDrained { [weak self] in
                guard let self else { return then() }
                self.drainWrites(then)
            }
            return
        }
        if outbox.isEmpty || !machine.isOpen {
            then()
            return
        }
        outbox.append(PendingWrite(bytes: ByteBuffer(), count: 0) { _ in then() })
    }

    private func flushWrites() {
        while var first = outbox.first {
            if first.bytes.readableBytes > 0 {
                let written = first.bytes.withUnsafeReadableBytes { tcpgw_write(fd, $0.baseAddress, $0.count) }
                if written == -Int(EAGAIN) || written == -Int(EINTR) { break }
                if written < 0 {
                    failWrites(SystemError(errno: Int32(-written), syscall: "send"))
                    return
                }
                bytesOut += Int64(written)
                pendingWriteBytes -= written
                first.bytes.moveReaderIndex(forwardBy: written)
                if first.bytes.readableBytes > 0 {
                    outbox[outbox.startIndex] = first
                    break
                }
            }
            outbox.removeFirst()
            first.done?(.success(first.count))
        }
        updateInterest()
    }

    private func failWrites(_ error: SystemError) {
        let queued = outbox
        outbox.removeAll()
        pendingWriteBytes = 0
        // The handle ends first, so a drain waiting among these writes sees it gone.
        apply(machine.handle(.failed(errno: error.errno)))
        for write in queued { write.done?(write.count == 0 ? .success(0) : .failure(error.rpcError)) }
    }

    // MARK: flow

    func setFlowing(_ on: Bool) {
        apply(machine.handle(.setFlowing(on)))
    }

    // MARK: shutdown and close

    func shutdown(read: Bool, write: Bool, complete: @escaping (Result<Void, RPCError>) -> Void) {
        if let refusal = relayRefusal {
            complete(.failure(refusal))
            return
        }
        guard machine.isOpen else {
            complete(.failure(.handleState("handle \(id) is not connected")))
            return
        }
        // A shutdown of writing is answered once queued writes have reached the kernel.
        let waitsForDrain = write && machine.outbound != .shut
        if waitsForDrain { shutdownWaiters.append(complete) }
        apply(machine.handle(.clientShutdown(read: read, write: write)))
        if !waitsForDrain { complete(.success(())) }
    }

    /// Closes at the client's request: no event follows.
    func close() {
        if let relay {
            self.relay = nil
            relay.cancel(closing: self)
        }
        if let completion = connectCompletion {
            connectCompletion = nil
            retry = nil
            connectTimer?.cancel()
            apply(machine.handle(.clientClose))
            completion(.failure(.closed))
            return
        }
        apply(machine.handle(.clientClose))
        releaseSocket()
    }

    /// For flyAway: the socket itself (writes already drained by the caller) and what had been
    /// read but not delivered; the handle lets go of both.
    struct Detached: ~Copyable {
        var fd: OwnedFD
        let buffered: ByteBuffer
        let eof: Bool
    }

    func detachForFlyAway() throws -> Detached {
        if let refusal = relayRefusal { throw refusal }
        guard machine.isOpen, let owned = socket.take() else {
            throw RPCError.handleState("handle \(id) is not connected")
        }
        watch.cancel(reactor: reactor)
        let eof = machine.peerFinished
        apply(machine.handle(.detached))
        if let faults {
            // What the in-chain held was read from the socket already: it goes with the socket.
            for chunk in faults.takeHeldIn() { inbox.writeImmutableBuffer(chunk) }
            faults.stop()
        }
        let data = inbox
        inbox = ByteBuffer()
        inboxSlices.removeAll()
        return Detached(fd: owned, buffered: data, eof: eof)
    }

    private func releaseSocket() {
        watch.cancel(reactor: reactor)
        if let faults {
            faults.stop()
            if machine.endedByFault == nil, let delay = faults.closeDelayMS, let held = socket.take() {
                HandleFaults.closeLater(held, afterMS: delay, reactor: reactor)  // slowClose
            }
        }
        socket = nil  // closes it
        connectTimer?.cancel()
        let queued = outbox
        outbox.removeAll()
        pendingWriteBytes = 0
        for write in queued where write.count == 0 { write.done?(.success(0)) }
        for write in queued where write.count > 0 {
            write.done?(.failure(.handleState("send failed: handle \(id) is closed")))
        }
    }

    // MARK: relayed (tcp.pipe, tcp.attach)

    /// -32001 for what a relayed handle cannot do (its bytes belong to the relay).
    var relayRefusal: RPCError? {
        guard let relay else { return nil }
        if let peer = relay.peer(of: self) {
            return .handleState("handle \(id) is piped to handle \(peer.id): its bytes go there, not to the client")
        }
        return .handleState("handle \(id) is attached to a stream: its bytes go there, not to the client")
    }

    /// Throws the reason this handle cannot be piped or attached now.
    func checkRelayable() throws {
        if let refusal = relayRefusal { throw refusal }
        guard machine.isOpen, fd >= 0 else {
            throw RPCError.handleState(
                machine.phase == .connecting ? "handle \(id) is still connecting" : "handle \(id) is not connected")
        }
        guard machine.outbound == .open else { throw RPCError.handleState("handle \(id) was shut down for writing") }
        if case .shutByClient = machine.inbound { throw RPCError.handleState("handle \(id) was shut down for reading") }
        guard outbox.isEmpty else {
            throw RPCError.handleState("handle \(id) still has \(pendingWriteBytes) bytes waiting to be sent")
        }
    }

    /// Hands the socket's traffic to `relay` (after `checkRelayable`): the handle stops watching
    /// it, waiting `tcp.recv` calls fail, and what had been read but not delivered goes to the
    /// relay, to be written first.
    func beginRelay(_ relay: Relay) -> (fd: Int32, buffered: ByteBuffer, eof: Bool) {
        self.relay = relay
        watch.cancel(reactor: reactor)
        let refusal = relayRefusal ?? .handleState("handle \(id) is relayed")
        while let first = receivers.popFirst() {
            first.timer?.cancel()
            first.complete(.failure(refusal))
        }
        let buffered = inbox
        inbox = ByteBuffer()
        return (fd, buffered, machine.peerFinished)
    }

    func countRelayed(read count: Int) { bytesIn += Int64(count) }
    func countRelayed(written count: Int) { bytesOut += Int64(count) }

    /// The relay has ended (both directions, or by `errno`, a reset by `fault` of this
    /// handle's): the handle is gone with tcp.onClose.
    func relayFinished(errno: Int32?, fault: String? = nil) {
        relay = nil
        apply(machine.handle(.relayEnded(errno: errno, fault: fault)))
    }

    /// The client closed the relay's other end: this one closes with it, quietly.
    func relayCancelled() {
        relay = nil
        close()
        session.handles.forget(id)
    }

    // MARK: executing the machine's actions

    private func apply(_ actions: [ConnectionStateMachine.Action]) {
        for action in actions {
            switch action {
            case .emitEnd:
                session.emit("tcp.onEnd", ["handle": .int(id)])
            case .emitClose(let errno):
                var params: JSONObject = ["handle": .int(id)]
                if let errno { params["error"] = Errno.json(errno) }
                if let fault = machine.endedByFault { params["fault"] = .string(fault) }
                session.emit("tcp.onClose", .object(params))
            case .emitBuffered:
                if inbox.readableBytes > 0 {
                    let data = inbox
                    inbox = ByteBuffer()
                    inboxSlices.removeAll()
                    data.withUnsafeReadableBytes { session.emitData(handle: id, $0) }
                }
            case .shutdownSocket(let read, let write):
                if write, let delay = faults?.closeDelayMS {
                    // slowClose: the FIN reaches the peer late (a reading shutdown takes effect now).
                    if read { _ = tcpgw_shutdown(fd, 0) }
                    reactor.schedule(in: delay) { [weak self] in
                        if let self, let raw = self.socket?.raw { _ = tcpgw_shutdown(raw, 1) }
                    }
                } else {
                    _ = tcpgw_shutdown(fd, read && write ? 2 : read ? 0 : 1)
                }
            case .drainWrites:
                drainWrites { [weak self] in
                    guard let self else { return }
                    self.apply(self.machine.handle(.writesDrained))
                }
            case .closeSocket:
                releaseSocket()
            case .serveReceivers:
                serveReceivers()
            case .failReceivers(let failure):
                failReceivers(failure)
            case .completeShutdowns:
                let waiters = shutdownWaiters
                shutdownWaiters = []
                for waiter in waiters { waiter(.success(())) }
            case .forget:
                session.handles.forget(id, endedByFault: machine.endedByFault)
            case .updateInterest:
                updateInterest()
            }
        }
    }

    // MARK: faults

    /// The faults, created with their sinks on first use: the in-chain delivers to the inbox or
    /// as tcp.onData, the out-chain writes to the socket. While relayed, both chains' output,
    /// their resets and their changes go to the relay instead.
    func faultsCreatingIfNeeded() -> HandleFaults {
        if let faults { return faults }
        let created = HandleFaults(handleID: id, gateway: session.gateway)
        created.sinks = HandleFaults.Sinks(
            deliver: { [unowned self] bytes in
                if let relay { return relay.chainDelivered(bytes, from: self) }
                if machine.flowing {
                    bytes.withUnsafeReadableBytes { session.emitData(handle: id, $0) }
                } else {
                    if self.faults?.keepsSliceBoundaries == true { inboxSlices.append(bytes.readableBytes) }
                    inbox.writeImmutableBuffer(bytes)
                }
            },
            deliveredEnd: { [unowned self] in
                if let relay { return relay.chainDeliveredEnd(from: self) }
                apply(machine.handle(.peerFinished))
            },
            delivered: { [unowned self] in if relay == nil && !machine.flowing { serveReceivers() } },
            write: { [unowned self] bytes in
                if let relay { return relay.chainWrote(bytes, to: self) }
                writeFromChain(bytes)
            },
            reset: { [unowned self] name in
                if let relay { return relay.chainReset(self, fault: name) }
                if let raw = socket?.raw { _ = tcpgw_set_linger(raw, 1, 0) }  // close sends RST
                apply(machine.handle(.failed(errno: ECONNRESET, fault: name)))
            },
            interestChanged: { [unowned self] in
                if let relay { return relay.chainsChanged() }
                updateInterest()
            },
            account: { [unowned self] delta in session.account(delta) },
            fd: { [unowned self] in fd })
        faults = created
        if machine.isOpen { created.establish() }
        return created
    }

    /// Out-chain output: written as tcp.send would, with nobody waiting for the answer.
    private func writeFromChain(_ chunk: ByteBuffer) {
        guard machine.isOpen, socket != nil else { return }
        var data = chunk
        if outbox.isEmpty {
            let written = data.withUnsafeReadableBytes { tcpgw_write(fd, $0.baseAddress, $0.count) }
            if written < 0 && written != -Int(EAGAIN) && written != -Int(EINTR) {
                apply(machine.handle(.failed(errno: Int32(-written))))
                return
            }
            if written > 0 {
                bytesOut += Int64(written)
                data.moveReaderIndex(forwardBy: written)
            }
            if data.readableBytes == 0 { return }
        }
        pendingWriteBytes += data.readableBytes
        outbox.append(PendingWrite(bytes: data, count: data.readableBytes, done: nil))
        updateInterest()
    }

    // MARK: state

    var state: TCPState {
        switch machine.phase {
        case .connecting: return .synSent
        case .closed, .gone: return .closed
        case .open:
            let raw = tcpgw_tcp_state(fd)
            return raw < 0 ? .closed : TCPState(linux: raw)
        }
    }

    /// The socket's descriptor while the handle holds one; otherwise the handle-state error.
    func openFD() throws -> Int32 {
        if socket == nil && isConnecting {
            throw RPCError.handleState("handle \(id) has no socket yet: its host name is being resolved")
        }
        guard let raw = socket?.raw, !isClosed else { throw RPCError.handleState("handle \(id) is closed") }
        return raw
    }
}
