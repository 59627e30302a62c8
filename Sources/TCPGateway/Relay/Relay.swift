import CNetShim
import Glibc
import JSONRPC
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
///
/// Faults (contract §10): a direction whose source handle's `in` chain or destination
/// handle's `out` chain is active copies, and what it reads goes through those chains (in,
/// then out) before the buffer. The chains' sinks call back here (`chainDelivered`,
/// `chainWrote`, ...); those calls only take note, and the notes become the direction's inputs
/// in `absorb`, so a chain never runs the relay from inside its own pump. Each change of the
/// chains re-picks the directions' modes (`Relay.mode`).
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
    /// What a relay counts against `--max-buffer-bytes` (contract §13) while it runs: both
    /// directions' user-space buffers at their largest, whether a direction splices or copies
    /// now (a fault can make it copy at any time, and a reservation cannot be refused then).
    static let budgetShare = 2 * copyCapacity
    /// Reads and writes per wake-up and direction: enough to move bulk data, few enough that
    /// one relay cannot starve the loop.
    private static let movesPerWakeup = 16

    /// What the chains did for a direction since it was last told.
    private struct Note {
        var passed = 0
        var ended = false
    }

    private let reactor: Reactor
    private unowned let gateway: Gateway
    private var sides: [Side]
    private var directions: [RelayDirection]
    private var pipes: [(read: Int32, write: Int32)?]
    private var userspace: [ByteBuffer]
    /// Lengths at the front of a direction's buffer that go out in writes of their own (a
    /// slicer's slices): empty when no slicer works.
    private var segments: [CircularBuffer<Int>] = [[], []]
    private var segmentedBytes = [0, 0]
    /// Each direction's (splice, copy) capacities, for a mode switch.
    private var capacities: [(splice: Int, copy: Int)] = []
    private var notes = [Note(), Note()]
    /// A fault of `handle` asked for a reset.
    private var resetBy: (handle: ConnectionHandle, fault: String)?
    private var work: CircularBuffer<(index: Int, action: RelayDirection.Action)> = []
    private var running = false
    private var kickScheduled = false
    /// Bytes the chains of a direction may hold before the source is not read (the handles'
    /// own limit).
    private let highWater: Int
    private var watchers: [RelayWatcher] = []
    /// The attached stream's socket, once it is here.
    private var stream: OwnedFD?
    private(set) var isFinished = false
    private var started = false

    /// How a direction moves its bytes. Splice, unless a fault needs to see them (contract
    /// §10): the source's `in` chain or the destination's `out` chain is active. The one place
    /// where that is decided.
    static func mode(from source: ConnectionHandle?, to destination: ConnectionHandle?, gateway: Gateway) -> RelayDirection.Mode {
        if gateway.config.relayCopyMode { return .copy }
        if source?.faults?.inActive == true || destination?.faults?.outActive == true { return .copy }
        return .splice
    }

    /// `tcp.pipe`: takes both handles over and starts at once. Throws, changing nothing, when
    /// either cannot be piped or the kernel refuses a pipe.
    static func pipe(_ first: ConnectionHandle, _ second: ConnectionHandle) throws -> Relay {
        let gateway = first.session.gateway
        try first.checkRelayable()
        try second.checkRelayable()
        try checkBudget(gateway)
        let modes = [mode(from: first, to: second, gateway: gateway), mode(from: second, to: first, gateway: gateway)]
        let relay = try Relay(gateway: gateway, modes: modes)
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
        try checkBudget(gateway)
        let modes = [mode(from: handle, to: nil, gateway: gateway), mode(from: nil, to: handle, gateway: gateway)]
        let relay = try Relay(gateway: gateway, modes: modes)
        let taken = handle.beginRelay(relay)
        relay.sides = [Side(handle: handle, fd: taken.fd), Side(handle: nil, fd: -1)]
        let buffered = taken.buffered.readableBytes
        relay.prepare(0, prefix: taken.buffered, sourceEnded: taken.eof)
        relay.prepare(1, prefix: early, sourceEnded: false)
        return (relay, buffered)
    }

    /// -32004 unless the buffer budget has room for one more relay's buffers; checked before a
    /// relay takes anything over (and, for `tcp.attach`, before its token is used up).
    static func checkBudget(_ gateway: Gateway) throws {
        guard gateway.budget.hasRoom(for: budgetShare) else {
            throw RPCError.limit(
                "the gateway's buffer budget (--max-buffer-bytes \(gateway.budget.limit)) has no room for a relay's "
                    + "buffers (\(budgetShare) bytes)")
        }
    }

    private init(gateway: Gateway, modes: [RelayDirection.Mode]) throws {
        self.reactor = gateway.reactor
        self.gateway = gateway
        self.highWater = gateway.config.outboundHighWatermark
        self.sides = []
        self.directions = []
        self.pipes = [nil, nil]
        self.userspace = [ByteBuffer(), ByteBuffer()]
        // Pipes first: a refusal (out of descriptors) leaves the handles as they were. Every
        // direction gets one (a copying direction splices again once its faults are gone),
        // unless the test knob keeps the relay copying.
        capacities = modes.map { _ in (Relay.copyCapacity, Relay.copyCapacity) }
        if !gateway.config.relayCopyMode {
            for index in modes.indices {
                var fds: [Int32] = [-1, -1]
                let capacity = fds.withUnsafeMutableBufferPointer { tcpgw_pipe($0.baseAddress, Int32(Relay.pipeSize)) }
                if capacity < 0 {
                    closePipes()
                    throw SystemError(errno: -capacity, syscall: "pipe2")
                }
                pipes[index] = (fds[0], fds[1])
                capacities[index].splice = Int(capacity)
            }
        }
        directions = modes.enumerated().map { direction(mode: $1, index: $0, prefix: 0, sourceEnded: false) }
        gateway.budget.adjust(Relay.budgetShare)  // given back when it stops
    }

    private func direction(mode: RelayDirection.Mode, index: Int, prefix: Int, sourceEnded: Bool) -> RelayDirection {
        let (splice, copy) = capacities[index]
        return RelayDirection(
            mode: mode, capacity: mode == .splice ? splice : copy, otherCapacity: mode == .splice ? copy : splice,
            prefix: prefix, sourceEnded: sourceEnded)
    }

    deinit {
        closePipes()
    }

    private func prepare(_ index: Int, prefix: ByteBuffer, sourceEnded: Bool) {
        userspace[index] = prefix
        directions[index] = direction(
            mode: directions[index].mode, index: index, prefix: prefix.readableBytes, sourceEnded: sourceEnded)
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
        for index in directions.indices { enqueue(index, directions[index].start()) }
        drive()
        settle()
    }

    // MARK: what the handles see

    /// The other handle of a pipe, for `tcp.list`'s `pipedTo`.
    func peer(of handle: ConnectionHandle) -> ConnectionHandle? {
        guard let other = sides.first(where: { $0.handle !== handle })?.handle else { return nil }
        return other
    }

    var isStream: Bool { sides.count == 2 && sides[1].handle == nil }

    /// For `tcp.list`'s `relayMode`: how the bytes read from `handle`'s socket move now.
    func mode(readingFrom handle: ConnectionHandle) -> RelayDirection.Mode? {
        guard let index = sides.firstIndex(where: { $0.handle === handle }) else { return nil }
        return directions[index].mode
    }

    // MARK: what the fault chains of the handles do (their sinks, while relayed)

    /// `handle`'s in-chain let `bytes` go: on to the destination's out-chain, if active, else
    /// to be written.
    func chainDelivered(_ bytes: ByteBuffer, from handle: ConnectionHandle) {
        guard !isFinished, let index = side(of: handle) else { return }
        if let faults = sides[1 - index].handle?.faults, faults.outActive {
            faults.feedOut(bytes)
        } else {
            append(bytes, to: index, segment: handle.faults?.keepsSliceBoundaries == true)
        }
    }

    /// `handle`'s in-chain let the source's end go: it follows what the out-chain holds.
    func chainDeliveredEnd(from handle: ConnectionHandle) {
        guard !isFinished, let index = side(of: handle) else { return }
        endThroughOutChain(index)
    }

    /// `handle`'s out-chain let `bytes` go: they are written to its socket.
    func chainWrote(_ bytes: ByteBuffer, to handle: ConnectionHandle) {
        guard !isFinished, let index = side(of: handle) else { return }
        append(bytes, to: 1 - index, segment: handle.faults?.slicesOut == true)
    }

    /// A fault of `handle` resets the connection: the relay fails, every TCP socket is reset.
    func chainReset(_ handle: ConnectionHandle, fault: String) {
        guard !isFinished else { return }
        if resetBy == nil { resetBy = (handle, fault) }
        kick()
    }

    /// A chain's content, stages or stall changed: the directions are told, their modes re-picked.
    func chainsChanged() {
        kick()
    }

    private func side(of handle: ConnectionHandle) -> Int? {
        sides.firstIndex { $0.handle === handle }
    }

    private func append(_ bytes: ByteBuffer, to index: Int, segment: Bool) {
        let count = bytes.readableBytes
        guard count > 0 else { return }
        if segment || !segments[index].isEmpty {
            // Bytes already waiting before the first slice keep their own (one) write.
            let before = userspace[index].readableBytes - segmentedBytes[index]
            if segments[index].isEmpty && before > 0 {
                segments[index].append(before)
                segmentedBytes[index] += before
            }
            segments[index].append(count)
            segmentedBytes[index] += count
        }
        // The buffer is bounded by the direction's room; written bytes give their space back.
        if userspace[index].readableBytes == 0 {
            userspace[index].clear()
        } else if userspace[index].readerIndex > userspace[index].readableBytes {
            userspace[index].discardReadBytes()
        }
        userspace[index].writeImmutableBuffer(bytes)
        notes[index].passed += count
        kick()
    }

    private func endThroughOutChain(_ index: Int) {
        if let faults = sides[1 - index].handle?.faults, faults.outActive {
            faults.whenOutDrained { [weak self] in self?.noteEnd(index) }
        } else {
            noteEnd(index)
        }
    }

    private func noteEnd(_ index: Int) {
        guard !isFinished else { return }
        notes[index].ended = true
        kick()
    }

    /// Notes taken outside a round of actions are acted on in the loop's next turn: never from
    /// inside a chain's pump.
    private func kick() {
        guard !running, !kickScheduled, !isFinished else { return }
        kickScheduled = true
        reactor.execute { [weak self] in
            guard let self else { return }
            self.kickScheduled = false
            self.drive()
            self.settle()
        }
    }

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
        if events.readable { enqueue(side, directions[side].handle(.sourceReady)) }
        if events.writable { enqueue(1 - side, directions[1 - side].handle(.destinationReady)) }
        drive()
        settle()
    }

    private func enqueue(_ index: Int, _ actions: [RelayDirection.Action]) {
        for action in actions { work.append((index, action)) }
    }

    /// Performs the queued actions and what their results (and the chains' notes) lead to.
    /// Reads and writes are bounded per round and direction (level-triggered readiness brings
    /// the rest); ends and errors always run.
    private func drive() {
        guard started, !running, !isFinished else { return }
        running = true
        defer { running = false }
        var moves = [0, 0]
        absorb()
        while let (index, queued) = work.popFirst() {
            if isFinished { break }
            guard let action = directions[index].current(queued) else { continue }
            switch action {
            case .spliceIn, .readIn, .writeOut, .spliceOut:
                guard moves[index] < Relay.movesPerWakeup else { continue }
                moves[index] += 1
            case .shutdownDestination, .reportEnd, .reportError:
                break
            }
            if let feedback = perform(action, index) {
                enqueue(index, directions[index].handle(feedback))
            }
            absorb()
        }
        if isFinished { work.removeAll() }
    }

    /// Tells the directions what the chains did and hold, and re-picks their modes.
    private func absorb() {
        guard !isFinished else { return }
        if let reset = resetBy {
            resetBy = nil
            // What the chains let go before the reset goes out first, as far as the sockets take it.
            for index in directions.indices where userspace[index].readableBytes > 0 && sides[1 - index].fd >= 0 {
                _ = perform(.writeOut(max: userspace[index].readableBytes), index)
            }
            fail(errno: ECONNRESET, fault: reset)
            return
        }
        for index in directions.indices where directions[index].isActive {
            let source = sides[index].handle?.faults
            let destination = sides[1 - index].handle?.faults
            let held = (source?.heldInBytes ?? 0) + (destination?.heldOutBytes ?? 0)
            let stops = source?.stallsIn == true || held > highWater
            enqueue(index, directions[index].handle(.chain(held: held, stopsReading: stops)))
            let wanted = Relay.mode(from: sides[index].handle, to: sides[1 - index].handle, gateway: gateway)
            enqueue(index, directions[index].handle(.switchMode(wanted)))
            let note = notes[index]
            notes[index] = Note()
            if note.passed > 0 { enqueue(index, directions[index].handle(.passed(note.passed))) }
            if note.ended { enqueue(index, directions[index].handle(.chainEnded)) }
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
            if let into = chains(index) { return readIntoChains(index, into, most: most) }
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
            // A slice goes in a write of its own (with TCP_NODELAY, a segment of its own).
            let limit = min(most, segments[index].first ?? most)
            let n = userspace[index].withUnsafeReadableBytes { raw in
                tcpgw_write(destination.fd, raw.baseAddress, min(limit, raw.count))
            }
            if n > 0 {
                consumeSegments(index, n)
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
            if let handle = destination.handle, let delay = handle.faults?.closeDelayMS {
                // slowClose: the FIN reaches the destination's peer late (unless the handle
                // has let go of its socket by then: its own close is delayed the same way).
                let fd = destination.fd
                reactor.schedule(in: delay) { [weak handle] in
                    if let handle, fd >= 0, handle.fd == fd { _ = tcpgw_shutdown(fd, 1) }
                }
                return nil
            }
            // A destination whose peer already left refuses with ENOTCONN: nothing more to say.
            _ = tcpgw_shutdown(destination.fd, 1)
            return nil

        case .reportEnd, .reportError:
            return nil
        }
    }

    /// Where direction `index` must put what it reads, when a fault chain is active: the
    /// source's in-chain, else the destination's out-chain.
    private enum ChainEntry {
        case inChain(HandleFaults)
        case outChain(HandleFaults)
    }

    private func chains(_ index: Int) -> ChainEntry? {
        if let faults = sides[index].handle?.faults, faults.inActive { return .inChain(faults) }
        if let faults = sides[1 - index].handle?.faults, faults.outActive { return .outChain(faults) }
        return nil
    }

    /// A read for the chains: in chunks of a handle's own read size, so each fault sees what
    /// it would on a plain handle; the end of stream follows the bytes through the chains.
    private func readIntoChains(_ index: Int, _ entry: ChainEntry, most: Int) -> RelayDirection.Input {
        let source = sides[index]
        let wanted = min(most, ConnectionHandle.readChunk)
        var chunk = ByteBufferAllocator().buffer(capacity: wanted)
        var n = 0
        chunk.writeWithUnsafeMutableBytes(minimumWritableBytes: wanted) { buffer in
            n = tcpgw_read(source.fd, buffer.baseAddress, wanted)
            return max(n, 0)
        }
        if n > 0 {
            source.handle?.countRelayed(read: n)
            switch entry {
            case .inChain(let faults): faults.feedIn(chunk)
            case .outChain(let faults): faults.feedOut(chunk)
            }
            return .fedToChain(n)
        }
        if n == 0 {
            switch entry {
            case .inChain(let faults): faults.feedInEnd()
            case .outChain: endThroughOutChain(index)
            }
            return .sourceEndedIntoChain
        }
        return filled(n, from: source)
    }

    private func consumeSegments(_ index: Int, _ written: Int) {
        segmentedBytes[index] = max(segmentedBytes[index] - written, 0)
        var left = written
        while left > 0, let first = segments[index].first {
            if first <= left {
                segments[index].removeFirst()
                left -= first
            } else {
                segments[index][segments[index].startIndex] = first - left
                left = 0
            }
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

    /// `fault`: the handle whose fault reset the connection, and the fault's name, for its
    /// `tcp.onClose`.
    private func fail(errno: Int32, fault: (handle: ConnectionHandle, fault: String)? = nil) {
        // A broken relay must not look like a clean end to either peer: reset every TCP socket.
        for side in sides where side.handle != nil && side.fd >= 0 { _ = tcpgw_set_linger(side.fd, 1, 0) }
        finish(errno: errno, fault: fault)
    }

    private func finish(errno: Int32?, fault: (handle: ConnectionHandle, fault: String)? = nil) {
        guard !isFinished else { return }
        let handles = stop()
        for handle in handles {
            handle.relayFinished(errno: errno, fault: fault.flatMap { $0.handle === handle ? $0.fault : nil })
        }
    }

    /// Stops watching, closes the pipes and the stream, and lets go of the handles (which
    /// are returned, for the caller to tell): no descriptor of the relay stays open.
    private func stop() -> [ConnectionHandle] {
        if !isFinished { gateway.budget.adjust(-Relay.budgetShare) }
        isFinished = true
        for index in watchers.indices { watchers[index].cancel(reactor: reactor) }
        watchers = []
        closePipes()
        stream = nil
        userspace = [ByteBuffer(), ByteBuffer()]
        segments = [[], []]
        segmentedBytes = [0, 0]
        work.removeAll()
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
