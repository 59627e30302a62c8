/// Everything the gateway holds in memory for its clients, together (contract §13): unfinished
/// request lines, bytes accepted by `tcp.send` and not yet written, answers and events not yet
/// written. Each session reports its changes here.
///
/// While the budget is spent, a client holding at least its share (the budget divided among the
/// clients) is not read from, nor are its flowing handles; the others go on, so the client that
/// holds the most waits and nobody is disconnected. `tcp.send` that would queue beyond the budget
/// is refused.
final class MemoryBudget {
    let limit: Int
    private(set) var used = 0
    /// Called when the budget becomes spent or free again: sessions re-derive their reading.
    var onChange: ((_ spent: Bool) -> Void)?

    init(limit: Int) {
        self.limit = limit
    }

    var isSpent: Bool { used >= limit }

    func adjust(_ delta: Int) {
        guard delta != 0 else { return }
        let wasSpent = isSpent
        used += delta
        if wasSpent != isSpent { onChange?(isSpent) }
    }

    /// Whether `count` more bytes may be queued.
    func hasRoom(for count: Int) -> Bool { used + count <= limit }

    /// Whether a client holding `held` bytes, one of `clients`, must wait for now.
    func restrains(held: Int, clients: Int) -> Bool {
        isSpent && held >= limit / max(1, clients)
    }
}
