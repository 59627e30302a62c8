import CNetShim
import Glibc
import NIOCore

/// Joins two byte streams inside the gateway (contract §11): two connection handles
/// (`tcp.pipe`), or a connection handle and an attached Unix stream (`tcp.attach`). Each
/// direction runs a `RelayDirection`; this driver owns the kernel pipes and the user-space
/// buffers, watches both sockets with the reactor (the handles stop watching theirs while
/// relayed), and performs the directions' actions.
///
/// When both directions have ended, each handle is gone with `tcp.onClose`; when one fails
/// (a reset, an error), every TCP socket of the relay is reset and each handle is gone with
/// `tcp.onClose {error}`. A client closing one of the handles closes the whole relay quietly.
final class Relay {
    /// One end: a connection handle's socket (borrowed; the handle keeps owning it), or an
    /// attached stream's socket (owned here).
    private struct Side {
        let handle: ConnectionHandle?
        var fd: Int32
    }

    /// A kernel pipe per direction, where a direction splices. 1 MiB where the system allows:
    /// fewer wake-ups per MiB.
    static let pipeSize = 1 << 20
    /// The send buffer asked for on an attached stream's socket.
    static let streamBufferSize: Int32 = 4 << 20
    /// A copying direction's buffer.
    static let copyCapacity = 256 * 1024
    /// Reads and writes per wake-up and direction: enough to move bulk data, few enough that
    /// one relay cannot starve the loop.
    private static let movesPerWakeup = 16

    private let reactor: Reactor
    private var sides: [Side]
    private var directions: [RelayDirection]
    private var pipes: [(read: Int32, write: Int32)?]
    private var userspace: [ByteBuffer]
    private var watchers: [RelayWatcher] = []
    /// The attached stream's socket, once it is here.
    private var stream: OwnedFD?
    private(set) var isFinished = false
    private var started = false

    /// How a direction moves its bytes. Splice, unless a fault on either handle needs to see
    /// them (contract §10): the one place where that is decided.
    static func mode(from source: ConnectionHandle?, to destination: ConnectionHandle?, gateway: Gateway) -> RelayDirection.Mode {
        if gateway.config.relayCopyMode { return .copy }
        return .splice
    }

    /// `tcp.pipe`: takes both handles over and starts at once. Throws, changing nothing, when
    /// either cannot be piped or the kernel refuses a pipe.
    static func pipe(_ first: ConnectionHandle, _ second: ConnectionHandle) throws -> Relay {
        let gateway = first.session.gateway
        try first.checkRelayable()
        try second.checkRelayable()
        let modes = [mode(from: first, to: second, gateway: gateway), mode(from: second, to: first, gateway: gateway)]
        let relay = try Relay(reactor: gateway.reactor, modes: modes, handles: [first, second])
        let a = first.beginRelay(relay)
        let b = second.beginRelay(relay)
        relay.sides = [Side(handle: first, fd: a.fd), Side(handle: second, fd: b.fd)]
        relay.prepare(0, prefix: a.buffered, sourceEnded: a.eof)
        relay.prepare(1, prefix: b.buffered, sourceEnded: b.eof)
        relay.start()
        return relay
    }

    /// `tcp.attach`: takes the handle over now (nothing more reaches its owner) and answers
    /// how many bytes it had buffered; the stream's socket comes with `startStream`, once the
    /// attach answer has been written to it. `early` are bytes the attaching client sent after
    /// its attach line, already read: they go to the TCP socket first.
    static func attach(_ handle: ConnectionHandle, early: ByteBuffer) throws -> (Relay, buffered: Int) {
        let gateway = handle.session.gateway
        try handle.checkRelayable()
        let modes = [mode(from: handle, to: nil, gateway: gateway), mode(from: nil, to: handle, gateway: gateway)]
        let relay = try Relay(reactor: gateway.reactor, modes: modes, handles: [handle])
        let taken = handle.beginRelay(relay)
        relay.sides = [Side(handle: handle, fd: taken.fd), Side(handle: nil, fd: -1)]
        let buffered = taken.buffered.readableBytes
        relay.prepare(0, prefix: taken.buffered, sourceEnded: taken.eof)
        relay.prepare(1, prefix: early, sourceEnded: false)
        return (relay, buffered)
    }

    private init(reactor: Reactor, modes: [RelayDirection.Mode], handles: [ConnectionHandle]) throws {
        self.reactor = reactor
        self.sides = []
        self.directions = []
        self.pipes = [nil, nil]
        self.userspace = [ByteBuffer(), ByteBuffer()]
        // Pipes first: a refusal (out of descriptors) leaves the handles as they were.
        var capacities = [Relay.copyCapacity, Relay.copyCapacity]
        for (index, mode) in modes.enumerated() where mode == .splice {
            var fds: [Int32] = [-1, -1]
            let capacity = fds.withUnsafeMutableBufferPointer { tcpgw_pipe($0.baseAddress, Int32(Relay.pipeSize)) }
            if capacity < 0 {
                closePipes()
                throw SystemError(errno: -capacity, syscall: "pipe2")
            }
            pipes[index] = (fds[0], fds[1])
            capacities[index] = Int(capacity)
        }
        directions = modes.enumerated().map { RelayDirection(mode: $1, capacity: capacities[$0]) }
    }

    deinit {
        closePipes()
    }

    private func prepare(_ index: Int, prefix: ByteBuffer, sourceEnded: Bool) {
        userspace[index] = prefix
        directions[index] = RelayDirection(
            mode: directions[index].mode, capacity: directions[index].capacity, prefix: prefix.readableBytes,
            sourceEnded: sourceEnded)
    }

    /// The attached stream's socket arrived (nil: the client went away before the answer
    /// reached it, which fails the relay).
    func startStream(_ socket: consuming OwnedFD?) {
        guard !isFinished else { return }  // the owner closed the handle meanwhile: socket closes
        guard let owned = socket.take() else {
            fail(errno: ECONNRESET)
            return
        }
        sides[1].fd = owned.raw
        // A Unix stream's writer is bounded by its own send buffer (208 KiB by default): a
        // bigger one (as far as net.core.wmem_max allows) means fewer, larger splices.
        _ = tcpgw_setsockopt_int(owned.raw, tcpgw_const_sol_socket(), tcpgw_const_so_sndbuf(), Relay.streamBufferSize)
        stream = consume owned
        start()
    }

    private func start() {
        started = true
        watchers = sides.indices.map { RelayWatcher(relay: self, side: $0) }
        for index in directions.indices { run(index, directions[index].start()) }
        settle()
    }

    // MARK: what the handles see

    /// The other handle of a pipe, for `tcp.list`'s `pipedTo`.
    func peer(of handle: ConnectionHandle) -> ConnectionHandle? {
        guard let other = sides.first(where: { $0.handle !== handle })?.handle else { return nil }
        return other
    }

    var isStream: Bool { sides.count == 2 && sides[1].handle == nil }

    /// A client closed `closing` (or its session ended): the relay stops, quietly; the other
    /// handle of a pipe closes too, the attached stream closes.
    func cancel(closing: ConnectionHandle) {
        guard !isFinished else { return }
        for index in directions.indices { _ = directions[index].handle(.cancel) }
        let others = stop().filter { $0 !== closing }
        for other in others { other.relayCancelled() }
    }

    // MARK: readiness

    fileprivate func ready(side: Int, _ events: IOEvents) {
        guard !isFinished else { return }
        // Direction `side` reads this side; direction `1 - side` writes it.
        if events.readable { run(side, directions[side].handle(.sourceReady)) }
        if events.writable && !isFinished { run(1 - side, directions[1 - side].handle(.destinationReady)) }
        settle()
    }

    /// Performs `actions` of direction `index` and what their results lead to. Reads and
    /// writes are bounded per call (level-triggered readiness brings the rest); ends and
    /// errors always run.
    private func run(_ index: Int, _ actions: [RelayDirection.Action]) {
        var pending = actions[...]
        var moves = 0
        while let action = pending.popFirst() {
            if isFinished { return }
            switch action {
            case .spliceIn, .readIn, .writeOut, .spliceOut:
                guard moves < Relay.movesPerWakeup else { continue }
                moves += 1
            case .shutdownDestination, .reportEnd, .reportError:
                break
            }
            if let feedback = perform(action, index) {
                pending.append(contentsOf: directions[index].handle(feedback))
            }
        }
    }

    private func perform(_ action: RelayDirection.Action, _ index: Int) -> RelayDirection.Input? {
        let source = sides[index]
        let destination = sides[1 - index]
        switch action {
        case .spliceIn(let most):
            guard let pipe = pipes[index] else { return .failed(errno: EBADF) }
            let n = tcpgw_splice(source.fd, pipe.write, most)
            return filled(n, from: source)

        case .readIn(let most):
            let wanted = most
            var n = 0
            // The buffer stays within the direction's capacity: written bytes make room again.
            if userspace[index].readableBytes == 0 {
                userspace[index].clear()
            } else if userspace[index].writableBytes < wanted {
                userspace[index].discardReadBytes()
            }
            userspace[index].writeWithUnsafeMutableBytes(minimumWritableBytes: wanted) { buffer in
                n = tcpgw_read(source.fd, buffer.baseAddress, wanted)
                return max(n, 0)
            }
            return filled(n, from: source)

        case .writeOut(let most):
            let n = userspace[index].withUnsafeReadableBytes { raw in
                tcpgw_write(destination.fd, raw.baseAddress, min(most, raw.count))
            }
            if n > 0 {
                userspace[index].moveReaderIndex(forwardBy: n)
                // A drained prefix gives its memory back; a copy buffer keeps its storage.
                if userspace[index].readableBytes == 0 && directions[index].mode == .splice { userspace[index] = ByteBuffer() }
            }
            return flushed(n, to: destination)

        case .spliceOut(let most):
            guard let pipe = pipes[index] else { return .failed(errno: EBADF) }
            let n = tcpgw_splice(pipe.read, destination.fd, most)
            return flushed(n == 0 ? -Int(EAGAIN) : n, to: destination)

        case .shutdownDestination:
            // A destination whose peer already left refuses with ENOTCONN: nothing more to say.
            _ = tcpgw_shutdown(destination.fd, 1)
            return nil

        case .reportEnd, .reportError:
            return nil
        }
    }

    private func filled(_ n: Int, from source: Side) -> RelayDirection.Input {
        if n > 0 {
            source.handle?.countRelayed(read: n)
            return .filled(n)
        }
        if n == 0 { return .sourceEnded }
        if n == -Int(EAGAIN) || n == -Int(EINTR) { return .fillWouldBlock }
        return .failed(errno: Int32(-n))
    }

    private func flushed(_ n: Int, to destination: Side) -> RelayDirection.Input {
        if n > 0 {
            destination.handle?.countRelayed(written: n)
            return .flushed(n)
        }
        if n == -Int(EAGAIN) || n == -Int(EINTR) || n == 0 { return .flushWouldBlock }
        return .failed(errno: Int32(-n))
    }

    /// After a round of actions: finish when the directions say so, else watch what they want.
    private func settle() {
        guard !isFinished, started else { return }
        for direction in directions {
            if case .failed(let errno) = direction.phase {
                fail(errno: errno)
                return
            }
        }
        if directions.allSatisfy({ $0.phase == .ended }) {
            finish(errno: nil)
            return
        }
        for (index, side) in sides.enumerated() {
            var interest: IOInterest = []
            if directions[index].wantsSource { interest.insert(.read) }
            if directions[1 - index].wantsDestination { interest.insert(.write) }
            do {
                try watchers[index].set(interest, fd: side.fd, reactor: reactor)
            } catch {
                fail(errno: (error as? SystemError)?.errno ?? EBADF)
                return
            }
        }
    }

    private func fail(errno: Int32) {
        // A broken relay must not look like a clean end to either peer: reset every TCP socket.
        for side in sides where side.handle != nil && side.fd >= 0 { _ = tcpgw_set_linger(side.fd, 1, 0) }
        finish(errno: errno)
    }

    private func finish(errno: Int32?) {
        guard !isFinished else { return }
        let handles = stop()
        for handle in handles { handle.relayFinished(errno: errno) }
    }

    /// Stops watching, closes the pipes and the stream, and lets go of the handles (which
    /// are returned, for the caller to tell): no descriptor of the relay stays open.
    private func stop() -> [ConnectionHandle] {
        isFinished = true
        for index in watchers.indices { watchers[index].cancel(reactor: reactor) }
        watchers = []
        closePipes()
        stream = nil
        userspace = [ByteBuffer(), ByteBuffer()]
        let handles = sides.compactMap(\.handle)
        sides = sides.map { _ in Side(handle: nil, fd: -1) }
        return handles
    }

    private func closePipes() {
        for index in pipes.indices {
            if let pipe = pipes[index] {
                _ = tcpgw_close(pipe.read)
                _ = tcpgw_close(pipe.write)
            }
            pipes[index] = nil
        }
    }

    /// For tests and tcp.list: how each direction moves its bytes.
    var modes: [RelayDirection.Mode] { directions.map(\.mode) }
}

/// One side's socket as the reactor sees it.
private final class RelayWatcher: ReactorSource {
    unowned let relay: Relay
    let side: Int
    private var watch = IOWatch()

    init(relay: Relay, side: Int) {
        self.relay = relay
        self.side = side
    }

    func set(_ interest: IOInterest, fd: Int32, reactor: Reactor) throws {
        try watch.set(interest, fd: fd, source: self, reactor: reactor)
    }

    func cancel(reactor: Reactor) {
        watch.cancel(reactor: reactor)
    }

    func ready(_ events: IOEvents) {
        relay.ready(side: side, events)
    }
}
