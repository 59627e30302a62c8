import Foundation
import CNetShim
import JSONRPC
import NIOCore
import NIOPosix

/// A connected TCP socket under a handle. The socket is created (or accepted) by the gateway
/// and adopted by NIO, so its descriptor is known for sockFd, FIONREAD, TCP_INFO and flyAway.
///
/// Paused (the default for sync-created handles): NIO reads only when a `tcp.recv` waits, into a
/// buffer no larger than asked, so nothing is read that the client did not ask for. Flowing:
/// NIO reads freely and every chunk becomes a `tcp.onData` event, unless the client is congested.
final class ConnectionHandle {
    /// connecting: our own non-blocking connect is in progress (the descriptor is ours);
    /// adopting: NIO is taking the connected descriptor over; open: NIO owns it.
    enum Phase { case connecting, adopting, open, closed }

    struct PendingRecv {
        let id: UInt64
        let length: Int
        let complete: (Result<(ByteBuffer, Bool), RPCError>) -> Void
        var timeout: Scheduled<Void>?
    }

    let id: Int64
    unowned let session: Session
    private(set) var fd: Int32
    private(set) var channel: Channel?
    private(set) var phase: Phase = .connecting
    var local: SockAddr?
    var remote: SockAddr?
    private(set) var flowing: Bool
    private var buffered: ByteBuffer
    private(set) var eof = false
    private(set) var inputShut = false
    private(set) var outputShut = false
    private(set) var bytesIn: Int64 = 0
    private(set) var bytesOut: Int64 = 0
    private var pendingRecvs: CircularBuffer<PendingRecv> = []
    private var nextRecvID: UInt64 = 1
    private var readInFlight = false
    private(set) var closedByClient = false
    /// Closed by the client's own shutdown("rw"): no event, the handle stays until tcp.close.
    private var keepAfterClose = false
    private var pendingError: Int32? = nil
    var connectTimeout: Scheduled<Void>?
    var onConnected: ((Result<Void, Error>) -> Void)?
    private(set) var pendingWriteBytes = 0

    init(id: Int64, session: Session, fd: Int32, flowing: Bool) {
        self.id = id
        self.session = session
        self.fd = fd
        self.flowing = flowing
        self.buffered = ByteBufferAllocator().buffer(capacity: 0)
    }

    var isOpen: Bool { phase == .open }
    var bufferedBytes: Int { buffered.readableBytes }

    // MARK: adoption

    /// Hands the connected descriptor to NIO; completes when the channel is ready.
    func adopt(loop: EventLoop, completion: @escaping (Result<Void, Error>) -> Void) {
        phase = .adopting
        // NIO calls the initializer on this same loop; the bound reference says so.
        let handle = NIOLoopBound(self, eventLoop: loop)
        // Reading starts only after the creating answer or event is out, so no tcp.onData can
        // precede the tcp.onAccept/tcp.onConnect that introduces the handle.
        ClientBootstrap(group: loop)
            .channelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .channelOption(ChannelOptions.autoRead, value: false)
            .channelOption(ChannelOptions.maxMessagesPerRead, value: 2)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(TCPConnectionHandler(handle: handle.value))
                }
            }
            .withConnectedSocket(fd)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    self.channel = channel
                    self.phase = .open
                    if self.closedByClient {
                        // Closed (with its session) while NIO was taking it over.
                        channel.close(promise: nil)
                        completion(.failure(RPCError.unknownHandle(self.id)))
                        return
                    }
                    completion(.success(()))
                    self.applyAutoRead()
                case .failure(let error):
                    self.phase = .closed
                    completion(.failure(error))
                }
            }
    }

    // MARK: inbound, from the NIO handler

    func received(_ data: ByteBuffer) {
        bytesIn += Int64(data.readableBytes)
        readInFlight = false
        if flowing {
            session.emitData(handle: id, data)
        } else {
            var data = data
            buffered.writeBuffer(&data)
            serveRecvs()
        }
    }

    func readComplete() {
        readInFlight = false
        if !flowing && !pendingRecvs.isEmpty && buffered.readableBytes == 0 && !eof { requestRead() }
    }

    func inputEnded() {
        eof = true
        readInFlight = false
        if flowing {
            session.emit("tcp.onEnd", ["handle": .int(id)])
        }
        serveRecvs()
        if outputShut { finishBothDirections(peerWasLast: true) }
    }

    func failed(_ error: Error) {
        if let io = error as? IOError { pendingError = io.errnoCode }
    }

    func channelClosed() {
        let wasClient = closedByClient
        phase = .closed
        channel = nil
        failRecvs(pendingError.map { SystemError(errno: $0, syscall: "recv").rpcError } ?? .unknownHandle(id))
        if !wasClient && !keepAfterClose {
            var params: JSONObject = ["handle": .int(id)]
            if let err = pendingError { params["error"] = Errno.json(err) }
            session.forget(id)
            session.emit("tcp.onClose", .object(params))
        }
    }

    /// Both directions are done: release the socket. With the peer's FIN involved the client
    /// learns of it through tcp.onClose; after its own shutdown("rw") the handle stays, closed,
    /// until tcp.close.
    private func finishBothDirections(peerWasLast: Bool) {
        if !peerWasLast { keepAfterClose = true }
        channel?.close(promise: nil)
    }

    // MARK: recv

    func recv(length: Int, timeoutMS: Int?, complete: @escaping (Result<(ByteBuffer, Bool), RPCError>) -> Void) {
        if phase == .connecting || phase == .adopting {
            complete(.failure(.handleState("handle \(id) is still connecting")))
            return
        }
        // Top up from the kernel first when the buffer cannot fill the request by itself, so a
        // recv gets every byte that is already here (up to its length), not just the buffer's.
        let topUp = phase == .open && !eof && !inputShut && buffered.readableBytes > 0
            && buffered.readableBytes < length && tcpgw_fionread(fd) > 0
        if !topUp && (buffered.readableBytes > 0 || eof || inputShut || phase != .open) {
            if buffered.readableBytes == 0 && phase == .closed && !eof {
                complete(.failure(.handleState("handle \(id) is closed")))
                return
            }
            complete(.success(take(length)))
            return
        }
        if timeoutMS == 0 {
            // Poll: only what the kernel already has.
            if tcpgw_fionread(fd) > 0 {
                // Fall through to a read; it completes at once.
            } else {
                complete(.failure(.timedOut("recv")))
                return
            }
        }
        let recvID = nextRecvID
        nextRecvID += 1
        var pending = PendingRecv(id: recvID, length: length, complete: complete, timeout: nil)
        if let ms = timeoutMS {
            pending.timeout = session.loop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(max(ms, 1)))) { [weak self] in
                self?.expireRecv(recvID)
            }
        }
        pendingRecvs.append(pending)
        requestRead()
    }

    private func take(_ length: Int) -> (ByteBuffer, Bool) {
        let count = min(length, buffered.readableBytes)
        let slice = buffered.readSlice(length: count) ?? ByteBuffer()
        if buffered.readableBytes == 0 { buffered.clear() }
        let atEOF = count == 0 && (eof || inputShut)
        return (slice, atEOF)
    }

    private func requestRead() {
        guard let channel, !readInFlight, !flowing, !eof, !inputShut else { return }
        let wanted = (pendingRecvs.first?.length ?? 65536) - buffered.readableBytes
        // Read no more than the first waiting recv asked for, in one read: nothing extra piles
        // up in the gateway.
        try? channel.syncOptions?.setOption(
            ChannelOptions.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: max(wanted, 1)))
        try? channel.syncOptions?.setOption(ChannelOptions.maxMessagesPerRead, value: 1)
        readInFlight = true
        channel.read()
    }

    private func serveRecvs() {
        while let first = pendingRecvs.first, buffered.readableBytes > 0 || eof || inputShut {
            pendingRecvs.removeFirst()
            first.timeout?.cancel()
            first.complete(.success(take(first.length)))
        }
        if !pendingRecvs.isEmpty { requestRead() }
    }

    private func expireRecv(_ recvID: UInt64) {
        guard let index = pendingRecvs.firstIndex(where: { $0.id == recvID }) else { return }
        let pending = pendingRecvs.remove(at: index)
        // A read may still be outstanding: whatever it brings stays buffered for the next recv.
        pending.complete(.failure(.timedOut("recv")))
    }

    private func failRecvs(_ error: RPCError) {
        while let first = pendingRecvs.popFirst() {
            first.timeout?.cancel()
            first.complete(.failure(error))
        }
    }

    // MARK: send

    func send(_ data: ByteBuffer, timeoutMS: Int?, complete: @escaping (Result<Int, RPCError>) -> Void) {
        guard let channel, phase == .open else {
            complete(.failure(.handleState("handle \(id) is not connected")))
            return
        }
        guard !outputShut else {
            complete(.failure(.handleState("handle \(id) was shut down for writing")))
            return
        }
        let count = data.readableBytes
        if pendingWriteBytes + count > session.gateway.config.maxPendingWriteBytes {
            complete(.failure(.limit("more than \(session.gateway.config.maxPendingWriteBytes) bytes waiting to be sent on handle \(id)")))
            return
        }
        pendingWriteBytes += count
        var finished = false
        var timer: Scheduled<Void>? = nil
        if let ms = timeoutMS {
            timer = session.loop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(ms))) {
                guard !finished else { return }
                finished = true
                // The bytes stay queued and will still go out: nothing is lost or reordered.
                complete(.failure(.timedOut("send (the \(count) bytes stay queued and will be sent)")))
            }
        }
        channel.writeAndFlush(data).assumeIsolated().whenComplete { [weak self] result in
            guard let self else { return }
            self.pendingWriteBytes -= count
            timer?.cancel()
            if case .success = result { self.bytesOut += Int64(count) }
            guard !finished else { return }
            finished = true
            switch result {
            case .success: complete(.success(count))
            case .failure(let error):
                if let io = error as? IOError {
                    complete(.failure(SystemError(errno: io.errnoCode, syscall: "send").rpcError))
                } else {
                    complete(.failure(.handleState("send failed: the connection is closed (\(error))")))
                }
            }
        }
    }

    /// Completes after everything written so far has reached the kernel.
    func drainWrites(_ then: @escaping () -> Void) {
        guard let channel, phase == .open else { then(); return }
        channel.writeAndFlush(ByteBuffer()).assumeIsolated().whenComplete { _ in then() }
    }

    // MARK: flow

    func setFlowing(_ on: Bool) {
        guard flowing != on else { return }
        flowing = on
        if on {
            // Hand over what a recv had already read, and an EOF seen while paused.
            if buffered.readableBytes > 0 {
                let data = buffered
                buffered = ByteBuffer()
                session.emitData(handle: id, data)
            }
            if eof { session.emit("tcp.onEnd", ["handle": .int(id)]) }
            failRecvs(.handleState("handle \(id) was resumed: data now arrives as tcp.onData"))
        }
        applyAutoRead()
    }

    func applyAutoRead() {
        guard let channel else { return }
        let on = flowing && !session.isCongested && !eof && !inputShut
        try? channel.syncOptions?.setOption(ChannelOptions.autoRead, value: on)
        if on {
            try? channel.syncOptions?.setOption(ChannelOptions.recvAllocator, value: AdaptiveRecvByteBufferAllocator())
            try? channel.syncOptions?.setOption(ChannelOptions.maxMessagesPerRead, value: 4)
        }
    }

    // MARK: shutdown and close

    func shutdown(read: Bool, write: Bool, complete: @escaping (Result<Void, RPCError>) -> Void) {
        guard phase == .open else {
            complete(.failure(.handleState("handle \(id) is not connected")))
            return
        }
        let doRead = {
            if read && !self.inputShut {
                self.inputShut = true
                _ = tcpgw_shutdown(self.fd, 0)
                self.applyAutoRead()
                self.serveRecvs()
            }
        }
        if write && !outputShut {
            outputShut = true
            drainWrites {
                if self.phase == .open { _ = tcpgw_shutdown(self.fd, 1) }
                doRead()
                complete(.success(()))
                // Our FIN after the peer's: both directions are done, which the contract reports
                // as tcp.onClose whichever side finished first. After our own "r", it is ours.
                if self.eof && !self.inputShut {
                    self.finishBothDirections(peerWasLast: true)
                } else if self.inputShut {
                    self.finishBothDirections(peerWasLast: false)
                }
            }
        } else {
            doRead()
            if outputShut && inputShut { finishBothDirections(peerWasLast: false) }
            complete(.success(()))
        }
    }

    /// Closes at the client's request: no event follows.
    func close() {
        closedByClient = true
        connectTimeout?.cancel()
        failRecvs(.unknownHandle(id))
        switch phase {
        case .connecting:
            session.gateway.monitor.remove(fd)
            _ = tcpgw_close(fd)
            phase = .closed
            if let callback = onConnected {
                onConnected = nil
                callback(.failure(RPCError.handleState("handle \(id) was closed while connecting")))
            }
        case .adopting:
            break  // NIO owns the descriptor now; the adoption's completion closes the channel
        case .open:
            channel?.close(promise: nil)
        case .closed:
            break
        }
    }

    /// For flyAway: a duplicate of the descriptor to pass, then the handle lets go of its own.
    func detachForFlyAway() throws -> (fd: Int32, buffered: ByteBuffer, eof: Bool) {
        guard phase == .open else { throw RPCError.handleState("handle \(id) is not connected") }
        let copy = dup(fd)
        guard copy >= 0 else { throw SystemError(errno: errno, syscall: "dup") }
        let data = buffered
        buffered = ByteBuffer()
        close()
        return (copy, data, eof)
    }

    // MARK: state

    var state: TCPState {
        switch phase {
        case .connecting: return .synSent
        case .closed: return .closed
        case .adopting, .open:
            let raw = tcpgw_tcp_state(fd)
            return raw < 0 ? .closed : TCPState(linux: raw)
        }
    }

    /// The socket's descriptor while it is open; otherwise the handle-state error.
    func openFD() throws -> Int32 {
        guard phase != .closed else { throw RPCError.handleState("handle \(id) is closed") }
        return fd
    }
}

/// Connects NIO's events for one TCP channel to its handle.
final class TCPConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let handle: ConnectionHandle

    init(handle: ConnectionHandle) { self.handle = handle }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        handle.received(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        handle.readComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            handle.inputEnded()
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        handle.failed(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        handle.channelClosed()
    }
}
