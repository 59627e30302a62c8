import NIOCore

/// What travels through a fault chain: bytes, in order, then perhaps the end of the stream
/// (the peer's FIN), which must not overtake the bytes before it.
enum FaultItem: Equatable {
    case bytes(ByteBuffer)
    case end

    var count: Int {
        if case .bytes(let buffer) = self { return buffer.readableBytes }
        return 0
    }
}

/// What a stage lets go when asked at a moment: items for the next stage, whether the
/// connection must be reset now, and when to ask again (nil: not before new input).
struct StageOutput: Equatable {
    var items: [FaultItem] = []
    var reset = false
    var wakeAt: UInt64?
}

/// One fault's effect on a stream, as a state machine over bytes and time: nothing here
/// touches a socket or a clock, so each stage is tested with a hand-moved time. Times are
/// monotonic nanoseconds.
protocol FaultStage: AnyObject {
    func accept(_ item: FaultItem, now: UInt64)
    func release(now: UInt64) -> StageOutput
    /// Everything still held, in order, when the fault is removed (nothing is lost).
    func drain() -> [FaultItem]
    var heldBytes: Int { get }
    /// stall on `in`: the socket is not read while this stage is there.
    var stopsReading: Bool { get }
}

extension FaultStage {
    var stopsReading: Bool { false }
}

private let nsPerMS: UInt64 = 1_000_000

/// A stage that passes what it gets at once (resetPeer, slowClose, the part of limitData that
/// fits); subclasses decide about resets.
class PassingStage {
    fileprivate var passed: [FaultItem] = []
    fileprivate var passedBytes = 0

    fileprivate func pass(_ item: FaultItem) {
        passed.append(item)
        passedBytes += item.count
    }

    fileprivate func takePassed() -> [FaultItem] {
        let items = passed
        passed = []
        passedBytes = 0
        return items
    }

    var heldBytes: Int { passedBytes }
    func drain() -> [FaultItem] { takePassed() }
}

/// latency {latency, jitter}: each chunk waits latency ± a uniform draw within jitter; a chunk
/// never leaves before the one ahead of it.
final class LatencyStage: FaultStage {
    private var queue: CircularBuffer<(item: FaultItem, due: UInt64)> = []
    private var lastDue: UInt64 = 0
    private var random: FaultRandom
    private let latency: Int
    private let jitter: Int
    private(set) var heldBytes = 0

    init(latency: Int, jitter: Int, random: FaultRandom) {
        self.latency = latency
        self.jitter = jitter
        self.random = random
    }

    func accept(_ item: FaultItem, now: UInt64) {
        let wait = max(0, latency + random.spread(jitter))
        let due = max(now + UInt64(wait) * nsPerMS, lastDue)
        lastDue = due
        queue.append((item, due))
        heldBytes += item.count
    }

    func release(now: UInt64) -> StageOutput {
        var output = StageOutput()
        while let first = queue.first, first.due <= now {
            queue.removeFirst()
            heldBytes -= first.item.count
            output.items.append(first.item)
        }
        output.wakeAt = queue.first?.due
        return output
    }

    func drain() -> [FaultItem] {
        let items = queue.map(\.item)
        queue.removeAll()
        heldBytes = 0
        return items
    }
}

/// bandwidth {rate}: a token bucket of `rate` KiB per second, holding at most a twentieth of a
/// second's worth (so an idle stream cannot burst); chunks are split to fit.
final class BandwidthStage: FaultStage {
    private var queue: CircularBuffer<FaultItem> = []
    private let bytesPerSecond: Double
    private let burst: Double
    private var tokens: Double
    private var refilledAt: UInt64
    private(set) var heldBytes = 0

    init(rateKiB: Int, now: UInt64) {
        bytesPerSecond = Double(rateKiB) * 1024
        burst = max(bytesPerSecond / 20, 1)
        tokens = rateKiB == 0 ? 0 : burst
        refilledAt = now
    }

    func accept(_ item: FaultItem, now: UInt64) {
        queue.append(item)
        heldBytes += item.count
    }

    func release(now: UInt64) -> StageOutput {
        if now > refilledAt {
            tokens = min(burst, tokens + Double(now - refilledAt) / 1e9 * bytesPerSecond)
            refilledAt = now
        }
        var output = StageOutput()
        while let first = queue.first {
            guard case .bytes(var buffer) = first else {
                queue.removeFirst()
                output.items.append(.end)
                continue
            }
            let n = min(buffer.readableBytes, Int(tokens))
            if n == 0 { break }
            tokens -= Double(n)
            heldBytes -= n
            if let slice = buffer.readSlice(length: n) { output.items.append(.bytes(slice)) }
            if buffer.readableBytes == 0 {
                queue.removeFirst()
            } else {
                queue[queue.startIndex] = .bytes(buffer)
            }
        }
        if let first = queue.first, bytesPerSecond > 0 {
            let need = min(Double(first.count), burst) - tokens
            output.wakeAt = now + UInt64(max(need, 1) / bytesPerSecond * 1e9) + 1
        }
        return output
    }

    func drain() -> [FaultItem] {
        let items = Array(queue)
        queue.removeAll()
        heldBytes = 0
        return items
    }
}

/// slicer {averageSize, sizeVariation, delayUs}: the stream cut into slices of averageSize ±
/// a uniform draw within sizeVariation (at least 1 byte), `delayUs` apart; each slice leaves
/// as an item of its own.
final class SlicerStage: FaultStage {
    private var pending = ByteBuffer()
    private var endPending = false
    private var nextAt: UInt64 = 0
    private var random: FaultRandom
    private let averageSize: Int
    private let sizeVariation: Int
    private let delayNS: UInt64

    init(averageSize: Int, sizeVariation: Int, delayUs: Int, random: FaultRandom) {
        self.averageSize = averageSize
        self.sizeVariation = sizeVariation
        self.delayNS = UInt64(delayUs) * 1000
        self.random = random
    }

    var heldBytes: Int { pending.readableBytes }

    func accept(_ item: FaultItem, now: UInt64) {
        switch item {
        case .bytes(var buffer): pending.writeBuffer(&buffer)
        case .end: endPending = true
        }
    }

    func release(now: UInt64) -> StageOutput {
        var output = StageOutput()
        while pending.readableBytes > 0 {
            if now < nextAt {
                output.wakeAt = nextAt
                return output
            }
            let size = max(1, averageSize + random.spread(sizeVariation))
            if let slice = pending.readSlice(length: min(size, pending.readableBytes)) {
                output.items.append(.bytes(slice))
            }
            if delayNS > 0 { nextAt = now + delayNS }
        }
        pending.clear()
        if endPending {
            endPending = false
            output.items.append(.end)
        }
        return output
    }

    func drain() -> [FaultItem] {
        var items: [FaultItem] = pending.readableBytes > 0 ? [.bytes(pending)] : []
        if endPending { items.append(.end) }
        pending = ByteBuffer()
        endPending = false
        return items
    }
}

/// limitData {bytes}: `bytes` pass; once they have, the connection is reset.
final class LimitDataStage: PassingStage, FaultStage {
    private var remaining: Int64
    private var tripped = false

    init(bytes: Int64) { remaining = bytes }

    func accept(_ item: FaultItem, now: UInt64) {
        guard !tripped else { return }
        guard case .bytes(var buffer) = item else {
            pass(item)
            return
        }
        let n = Int(min(Int64(buffer.readableBytes), remaining))
        if n > 0, let slice = buffer.readSlice(length: n) { pass(.bytes(slice)) }
        remaining -= Int64(n)
        if remaining <= 0 { tripped = true }
    }

    func release(now: UInt64) -> StageOutput {
        StageOutput(items: takePassed(), reset: tripped)
    }
}

/// timeout {timeout}: nothing passes (a dead path: bytes and the FIN are dropped); `timeout`
/// ms after it took effect (0: never) the connection is reset.
final class TimeoutStage: FaultStage {
    private let deadline: UInt64?
    private(set) var dropped = 0

    init(timeoutMS: Int, now: UInt64) {
        deadline = timeoutMS > 0 ? now + UInt64(timeoutMS) * nsPerMS : nil
    }

    var heldBytes: Int { 0 }
    func accept(_ item: FaultItem, now: UInt64) { dropped += item.count }
    func drain() -> [FaultItem] { [] }

    func release(now: UInt64) -> StageOutput {
        guard let deadline else { return StageOutput() }
        return now >= deadline ? StageOutput(reset: true) : StageOutput(wakeAt: deadline)
    }
}

/// resetPeer {timeout}: everything passes; `timeout` ms after it took effect the connection is
/// reset.
final class ResetPeerStage: PassingStage, FaultStage {
    private let deadline: UInt64

    init(timeoutMS: Int, now: UInt64) {
        deadline = now + UInt64(timeoutMS) * nsPerMS
    }

    func accept(_ item: FaultItem, now: UInt64) { pass(item) }

    func release(now: UInt64) -> StageOutput {
        now >= deadline ? StageOutput(items: takePassed(), reset: true) : StageOutput(items: takePassed(), wakeAt: deadline)
    }
}

/// slowClose {delay}: everything passes; the handle asks `delayMS` when it closes or shuts down.
final class SlowCloseStage: PassingStage, FaultStage {
    let delayMS: Int

    init(delayMS: Int) { self.delayMS = delayMS }

    func accept(_ item: FaultItem, now: UInt64) { pass(item) }
    func release(now: UInt64) -> StageOutput { StageOutput(items: takePassed()) }
}

/// stall {}: holds everything until removed; on `in` the socket is not read meanwhile, so
/// the peer's window fills and nothing is dropped.
final class StallStage: FaultStage {
    private var held: [FaultItem] = []
    private(set) var heldBytes = 0
    let stopsReading: Bool

    init(stopsReading: Bool) { self.stopsReading = stopsReading }

    func accept(_ item: FaultItem, now: UInt64) {
        held.append(item)
        heldBytes += item.count
    }

    func release(now: UInt64) -> StageOutput { StageOutput() }

    func drain() -> [FaultItem] {
        let items = held
        held = []
        heldBytes = 0
        return items
    }
}
