import CNetShim
import JSONRPC
import NIOCore

/// The faults of one connection handle: what the client installed (with each fault's
/// toxicity draw), the two chains of active stages, and the one timer that moves them on.
/// The handle gives it sinks (where the in-chain delivers, where the out-chain writes) and
/// asks it whether to read; everything else about faults lives here.
final class HandleFaults {
    struct Installed {
        let spec: FaultSpec
        let active: Bool
        var random: FaultRandom
    }

    /// Where the chains' output goes and what the handle must do; set by the handle.
    struct Sinks {
        /// In-chain output: bytes for the client, then perhaps the peer's FIN.
        var deliver: (ByteBuffer) -> Void = { _ in }
        var deliveredEnd: () -> Void = {}
        /// After a batch of deliveries (a paused handle serves its waiting recv calls).
        var delivered: () -> Void = {}
        /// Out-chain output: bytes for the socket.
        var write: (ByteBuffer) -> Void = { _ in }
        /// A fault asks for the connection to be reset.
        var reset: (String) -> Void = { _ in }
        /// Whether the socket should be read may have changed.
        var interestChanged: () -> Void = {}
        /// Bytes held in the chains changed by this much (the gateway's memory budget).
        var account: (Int) -> Void = { _ in }
        /// The socket, for TCP_NODELAY while a slicer works on `out`.
        var fd: () -> Int32 = { -1 }
    }

    var sinks = Sinks()
    private(set) var installed: [Installed] = []
    private let inChain = FaultChain()
    private let outChain = FaultChain()
    private let reactor: Reactor
    private let handleID: Int64
    private let seed: UInt64
    private let highWater: Int
    /// Stages exist only once the connection is established: time-based faults count from then.
    private var established = false
    private var stopped = false
    private var inEnded = false
    private var held = 0
    private var timer: ReactorTimer?
    private var timerAt: UInt64 = .max
    private var pumping = false
    private var drainWaiters: [() -> Void] = []
    /// TCP_NODELAY as it was before a slicer on `out` turned it on.
    private var savedNoDelay: Int32?

    init(handleID: Int64, gateway: Gateway) {
        self.handleID = handleID
        self.reactor = gateway.reactor
        self.seed = gateway.faultSeed
        self.highWater = gateway.config.outboundHighWatermark
    }

    static func now() -> UInt64 { tcpgw_monotonic_ns() }

    // MARK: what the handle asks

    /// Bytes read from the socket must go through the in-chain.
    var inActive: Bool { !inChain.isIdle }
    /// Bytes accepted by tcp.send must go through the out-chain.
    var outActive: Bool { !outChain.isIdle }
    /// The socket must not be read: a stall, too much held, or the FIN already taken.
    var stopsReading: Bool { inActive && (inEnded || inChain.stopsReading || inChain.heldBytes > highWater) }
    var heldOutBytes: Int { outChain.heldBytes }
    var heldInBytes: Int { inChain.heldBytes }
    /// A stall on `in`: the socket must not be read (a relay asks this; a plain handle, `stopsReading`).
    var stallsIn: Bool { inActive && inChain.stopsReading }
    /// A slicer works on `out`: each slice goes to the socket in its own write.
    var slicesOut: Bool { outChain.stages.contains { $0.stage is SlicerStage } }
    /// How late a close or shutdown("w") reaches the peer (the longest active slowClose).
    var closeDelayMS: Int? {
        let delays = (inChain.stages + outChain.stages).compactMap { ($0.stage as? SlowCloseStage)?.delayMS }
        return delays.max()
    }

    var names: [String] { installed.map(\.spec.name) }
    /// A slicer works on `in`: each slice is delivered on its own.
    var keepsSliceBoundaries: Bool { inChain.stages.contains { $0.stage is SlicerStage } }
    var json: JSONValue { .array(installed.map { $0.spec.json(active: $0.active) }) }

    // MARK: installing

    func add(_ spec: FaultSpec) throws {
        try installed.map(\.spec).ensureUnused(spec.name)
        var random = FaultRandom(gatewaySeed: seed, handle: handleID, stream: spec.stream.rawValue, name: spec.name)
        let active = spec.toxicity >= 1 || (spec.toxicity > 0 && random.unit() < spec.toxicity)
        installed.append(Installed(spec: spec, active: active, random: random))
        if established && active { instantiate(installed[installed.count - 1]) }
        pump()
    }

    func remove(_ name: String) throws {
        guard let index = installed.firstIndex(where: { $0.spec.name == name }) else {
            throw RPCError.invalidParams("'name': handle \(handleID) has no fault named '\(name)'")
        }
        let spec = installed.remove(at: index).spec
        let now = HandleFaults.now()
        if spec.stream == .in { inChain.remove(name, now: now) } else { outChain.remove(name, now: now) }
        if spec.kind == .slicer && spec.stream == .out { restoreNoDelay() }
        pump()
        sinks.interestChanged()
    }

    /// The connection is up: the active faults start working.
    func establish() {
        guard !established else { return }
        established = true
        for fault in installed where fault.active { instantiate(fault) }
        pump()
    }

    private func instantiate(_ fault: Installed) {
        let spec = fault.spec
        let a = spec.attributes
        let now = HandleFaults.now()
        let stage: any FaultStage
        switch spec.kind {
        case .latency: stage = LatencyStage(latency: a.latency, jitter: a.jitter, random: fault.random)
        case .bandwidth: stage = BandwidthStage(rateKiB: a.rate, now: now)
        case .slicer:
            stage = SlicerStage(averageSize: a.averageSize, sizeVariation: a.sizeVariation, delayUs: a.delayUs, random: fault.random)
            if spec.stream == .out { setNoDelay() }
        case .limitData: stage = LimitDataStage(bytes: a.bytes)
        case .timeout: stage = TimeoutStage(timeoutMS: a.timeout, now: now)
        case .resetPeer: stage = ResetPeerStage(timeoutMS: a.timeout, now: now)
        case .slowClose: stage = SlowCloseStage(delayMS: a.delay)
        case .stall: stage = StallStage(stopsReading: spec.stream == .in)
        }
        (spec.stream == .in ? inChain : outChain).add(stage, name: spec.name)
    }

    // MARK: the data path

    func feedIn(_ bytes: ByteBuffer) {
        inChain.push(.bytes(bytes), now: HandleFaults.now())
        pump()
    }

    /// The peer's FIN: it follows the bytes before it through the chain.
    func feedInEnd() {
        inEnded = true
        inChain.push(.end, now: HandleFaults.now())
        pump()
    }

    func feedOut(_ bytes: ByteBuffer) {
        outChain.push(.bytes(bytes), now: HandleFaults.now())
        pump()
    }

    /// Runs `then` once the out-chain holds nothing (a shutdown("w") waits for that).
    func whenOutDrained(_ then: @escaping () -> Void) {
        if outChain.heldBytes == 0 {
            then()
        } else {
            drainWaiters.append(then)
        }
    }

    /// Moves both chains on as far as they may go now, and sets the timer for the next step.
    func pump() {
        guard !stopped, !pumping else { return }
        pumping = true
        defer { pumping = false }
        let now = HandleFaults.now()
        let inbound = inChain.run(now: now)
        var deliveredAny = false
        for item in inbound.items {
            guard !stopped else { return }
            switch item {
            case .bytes(let bytes):
                deliveredAny = true
                sinks.deliver(bytes)
            case .end:
                sinks.deliveredEnd()
            }
        }
        if deliveredAny && !stopped { sinks.delivered() }
        guard !stopped else { return }
        if let name = inbound.resetBy { return resetBy(name) }
        let outbound = outChain.run(now: now)
        for case .bytes(let bytes) in outbound.items where !stopped { sinks.write(bytes) }
        guard !stopped else { return }
        if let name = outbound.resetBy { return resetBy(name) }
        if outChain.heldBytes == 0 && !drainWaiters.isEmpty {
            let waiters = drainWaiters
            drainWaiters = []
            for waiter in waiters { waiter() }
        }
        updateHeld()
        schedule(at: [inbound.wakeAt, outbound.wakeAt].compactMap { $0 }.min(), now: now)
        sinks.interestChanged()
    }

    private func resetBy(_ name: String) {
        pumping = false
        sinks.reset(name)
    }

    private func schedule(at wakeAt: UInt64?, now: UInt64) {
        guard let wakeAt else {
            timer?.cancel()
            timer = nil
            timerAt = .max
            return
        }
        if timer?.isPending == true && timerAt <= wakeAt { return }
        timer?.cancel()
        timerAt = wakeAt
        let ms = wakeAt > now ? Int((wakeAt - now + 999_999) / 1_000_000) : 0
        timer = reactor.schedule(in: ms) { [weak self] in
            guard let self else { return }
            self.timer = nil
            self.timerAt = .max
            self.pump()
        }
    }

    private func updateHeld() {
        let now = inChain.heldBytes + outChain.heldBytes
        if now != held {
            sinks.account(now - held)
            held = now
        }
    }

    /// For flyAway: every byte the in-chain holds, in order (the stages are taken off).
    func takeHeldIn() -> [ByteBuffer] {
        let now = HandleFaults.now()
        for name in inChain.stages.map(\.name) { inChain.remove(name, now: now) }
        return inChain.run(now: now).items.compactMap { item in
            if case .bytes(let bytes) = item { return bytes }
            return nil
        }
    }

    /// The handle is going: timers stop, held bytes are released from the budget.
    func stop() {
        guard !stopped else { return }
        stopped = true
        timer?.cancel()
        timer = nil
        sinks.account(-held)
        held = 0
        let waiters = drainWaiters
        drainWaiters = []
        for waiter in waiters { waiter() }
    }

    /// slowClose on a released socket: it closes (FIN) `afterMS` later.
    static func closeLater(_ socket: consuming OwnedFD, afterMS: Int, reactor: Reactor) {
        let held = HeldSocket(socket)
        reactor.schedule(in: afterMS) { held.close() }
    }

    private final class HeldSocket {
        private var socket: OwnedFD?
        init(_ socket: consuming OwnedFD) { self.socket = consume socket }
        func close() { socket = nil }
    }

    // MARK: TCP_NODELAY for slicer on out

    private func setNoDelay() {
        let fd = sinks.fd()
        guard fd >= 0, savedNoDelay == nil else { return }
        var current: Int32 = 0
        if tcpgw_getsockopt_int(fd, tcpgw_const_ipproto_tcp(), tcpgw_const_tcp_nodelay(), &current) >= 0 {
            savedNoDelay = current
        }
        _ = tcpgw_setsockopt_int(fd, tcpgw_const_ipproto_tcp(), tcpgw_const_tcp_nodelay(), 1)
    }

    private func restoreNoDelay() {
        guard let saved = savedNoDelay,
            !outChain.stages.contains(where: { $0.stage is SlicerStage })
        else { return }
        savedNoDelay = nil
        let fd = sinks.fd()
        if fd >= 0 { _ = tcpgw_setsockopt_int(fd, tcpgw_const_ipproto_tcp(), tcpgw_const_tcp_nodelay(), saved) }
    }
}
