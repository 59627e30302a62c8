/// The active faults of one direction of a connection, in the order they were added: what
/// one stage lets go is the next one's input, and what the last lets go is the chain's output.
/// A chain with no stages and nothing in hand is idle: the handle then takes its plain path.
final class FaultChain {
    struct Output: Equatable {
        var items: [FaultItem] = []
        /// The fault whose stage asked for a reset: the chain stops there, and the connection
        /// is reset once `items` (what passed before it) are out.
        var resetBy: String?
        var wakeAt: UInt64?
    }

    private(set) var stages: [(name: String, stage: any FaultStage)] = []
    /// Output not yet handed out: pushed with no stage, or left by a removed last stage.
    private var carry: [FaultItem] = []

    var isIdle: Bool { stages.isEmpty && carry.isEmpty }
    var heldBytes: Int { stages.reduce(carry.reduce(0) { $0 + $1.count }) { $0 + $1.stage.heldBytes } }
    var stopsReading: Bool { stages.contains { $0.stage.stopsReading } }

    func add(_ stage: any FaultStage, name: String) {
        stages.append((name, stage))
    }

    /// Takes the stage off; what it held moves on to the next stage (or out), in order.
    @discardableResult
    func remove(_ name: String, now: UInt64) -> (any FaultStage)? {
        guard let index = stages.firstIndex(where: { $0.name == name }) else { return nil }
        let removed = stages.remove(at: index).stage
        let held = removed.drain()
        if index < stages.count {
            for item in held { stages[index].stage.accept(item, now: now) }
        } else {
            carry += held
        }
        return removed
    }

    func push(_ item: FaultItem, now: UInt64) {
        if let first = stages.first {
            first.stage.accept(item, now: now)
        } else {
            carry.append(item)
        }
    }

    /// Moves everything as far as it may go at `now`.
    func run(now: UInt64) -> Output {
        var output = Output()
        for index in stages.indices {
            let step = stages[index].stage.release(now: now)
            if index + 1 < stages.count {
                for item in step.items { stages[index + 1].stage.accept(item, now: now) }
            } else {
                carry += step.items
            }
            if step.reset {
                output.resetBy = stages[index].name
                break
            }
            if let at = step.wakeAt { output.wakeAt = min(output.wakeAt ?? at, at) }
        }
        output.items = carry
        carry = []
        return output
    }
}
