/// The lifecycle of one connection handle (contract §4) as a value: each input returns the
/// actions to take, and the handle executes them and keeps no lifecycle flags of its own.
///
/// The rules it encodes:
/// - the peer's FIN is `tcp.onEnd` on a flowing handle (and EOF for `tcp.recv`); writing goes on;
/// - both directions finished with the peer involved (our `shutdown("w")` and the peer's FIN,
///   in either order) means the handle is gone: `tcp.onClose`;
/// - after the client's own `shutdown` of both directions the handle stays, CLOSED, with no
///   event, until `tcp.close`;
/// - a reset or an error ends the handle with `tcp.onClose {error}`;
/// - what the client ends itself (`tcp.close`, `tcp.flyAway`) gets no event.
struct ConnectionStateMachine: Equatable {
    enum Phase: Equatable {
        case connecting
        case open
        /// Ended by the client's own shutdown of both directions: kept until `tcp.close`.
        case closed
        /// No longer under a handle.
        case gone
    }

    enum Inbound: Equatable {
        case open
        /// The peer's FIN was read.
        case peerFinished
        /// The client shut reading down (`afterPeerFIN`: the FIN had been read before).
        case shutByClient(afterPeerFIN: Bool)
    }

    enum Outbound: Equatable {
        case open
        /// `shutdown("w")` waits for queued writes to reach the kernel (`thenRead`: "rw").
        case draining(thenRead: Bool)
        case shut
    }

    /// Why waiting calls fail.
    enum Failure: Equatable {
        case unknownHandle
        case system(Int32)
        case resumed
        /// A fault (contract §10) reset the connection.
        case fault(name: String, errno: Int32)
    }

    enum Input: Equatable {
        case connected
        case connectFailed
        case peerFinished
        /// A read or a write failed (reset, timeout of the kernel's own, ...), or a fault
        /// reset the connection (`fault` names it: tcp.onClose and later calls say so).
        case failed(errno: Int32, fault: String? = nil)
        case clientShutdown(read: Bool, write: Bool)
        /// Everything queued before a `shutdown("w")` has reached the kernel.
        case writesDrained
        case clientClose
        /// The socket left with `tcp.flyAway`.
        case detached
        case setFlowing(Bool)
        /// A relay (tcp.pipe, tcp.attach) that had the socket ended, cleanly or by `errno`.
        case relayEnded(errno: Int32?, fault: String? = nil)
    }

    enum Action: Equatable {
        case emitEnd
        case emitClose(errno: Int32?)
        /// Deliver what a paused handle had buffered as `tcp.onData` (on resuming).
        case emitBuffered
        case shutdownSocket(read: Bool, write: Bool)
        /// Feed `.writesDrained` back once the write queue is empty.
        case drainWrites
        case closeSocket
        /// Waiting `tcp.recv` calls take what is buffered, or EOF.
        case serveReceivers
        case failReceivers(Failure)
        /// Answer the `tcp.shutdown` calls waiting for their drain (a shutdown of reading
        /// alone is answered at once by the handle).
        case completeShutdowns
        /// Leave the handle table (the client is told through `tcp.onClose`, if at all).
        case forget
        /// Re-derive what the socket is watched for.
        case updateInterest
    }

    private(set) var phase: Phase
    private(set) var inbound: Inbound = .open
    private(set) var outbound: Outbound = .open
    private(set) var flowing: Bool
    /// `tcp.onEnd` went out: one FIN, one event, however often the handle is paused and resumed.
    private(set) var endAnnounced = false
    /// The fault that ended the handle, if one did.
    private(set) var endedByFault: String?

    init(connecting: Bool, flowing: Bool) {
        self.phase = connecting ? .connecting : .open
        self.flowing = flowing
    }

    /// The peer's FIN has been read (what `tcp.isEOF` reports).
    var peerFinished: Bool {
        switch inbound {
        case .open: return false
        case .peerFinished: return true
        case .shutByClient(let afterPeerFIN): return afterPeerFIN
        }
    }

    /// Whether reading from the socket can bring anything (bytes or the FIN).
    var canRead: Bool { phase == .open && inbound == .open }
    /// Whether `tcp.recv` answers at once with EOF when nothing is buffered.
    var inputEnded: Bool { inbound != .open || phase != .open }
    var canWrite: Bool { phase == .open && outbound == .open }
    var isOpen: Bool { phase == .open }

    mutating func handle(_ input: Input) -> [Action] {
        switch input {
        case .connected:
            guard phase == .connecting else { return [] }
            phase = .open
            return [.updateInterest]

        case .connectFailed:
            guard phase == .connecting else { return [] }
            phase = .gone
            return [.closeSocket, .forget]

        case .peerFinished:
            guard phase == .open, inbound == .open else { return [] }
            inbound = .peerFinished
            endAnnounced = flowing
            var actions: [Action] = flowing ? [.emitEnd] : []
            actions.append(.serveReceivers)
            if outbound == .shut {
                actions += end(event: true, errno: nil)
            } else {
                actions.append(.updateInterest)
            }
            return actions

        case .failed(let errno, let fault):
            switch phase {
            case .connecting:
                phase = .gone
                return [.closeSocket, .forget]
            case .open:
                phase = .gone
                endedByFault = fault
                let failure: Failure = fault.map { .fault(name: $0, errno: errno) } ?? .system(errno)
                return [.failReceivers(failure), .completeShutdowns, .closeSocket, .forget, .emitClose(errno: errno)]
            case .closed, .gone:
                return []
            }

        case .clientShutdown(let read, let write):
            guard phase == .open else { return [] }
            if write && outbound == .open {
                outbound = .draining(thenRead: read)
                return [.drainWrites]
            }
            if write, case .draining(let thenRead) = outbound {
                // Answered with the drain already under way, as the first shutdown is.
                if read && !thenRead { outbound = .draining(thenRead: true) }
                return []
            }
            // Reading only (or writing was shut already): takes effect, and is answered, at once.
            var actions: [Action] = []
            if read { actions += shutReading() }
            if outbound == .shut, case .shutByClient = inbound {
                actions += keepClosed()
            }
            return actions

        case .writesDrained:
            guard case .draining(let thenRead) = outbound else { return [] }
            outbound = .shut
            guard phase == .open else { return [.completeShutdowns] }
            var actions: [Action] = [.shutdownSocket(read: false, write: true)]
            if thenRead { actions += shutReading() }
            actions.append(.completeShutdowns)
            switch inbound {
            case .open: actions.append(.updateInterest)
            case .peerFinished: actions += end(event: true, errno: nil)
            case .shutByClient: actions += keepClosed()
            }
            return actions

        case .clientClose:
            let wasConnecting = phase == .connecting
            guard phase != .gone else { return [] }
            let wasClosed = phase == .closed
            phase = .gone
            if wasConnecting { return [.closeSocket] }
            return wasClosed ? [] : [.failReceivers(.unknownHandle), .completeShutdowns, .closeSocket]

        case .detached:
            guard phase == .open else { return [] }
            phase = .gone
            return [.failReceivers(.unknownHandle), .completeShutdowns]

        case .relayEnded(let errno, let fault):
            guard phase == .open else { return [] }
            phase = .gone
            endedByFault = fault
            return [.failReceivers(.unknownHandle), .completeShutdowns, .closeSocket, .forget, .emitClose(errno: errno)]

        case .setFlowing(let on):
            guard flowing != on else { return [] }
            flowing = on
            // Only an open (or connecting) handle has anything to hand over.
            guard on, phase == .open || phase == .connecting else { return [.updateInterest] }
            var actions: [Action] = [.emitBuffered]
            if peerFinished && !endAnnounced {
                endAnnounced = true
                actions.append(.emitEnd)
            }
            actions += [.failReceivers(.resumed), .updateInterest]
            return actions
        }
    }

    private mutating func shutReading() -> [Action] {
        guard case .open = phase else { return [] }
        switch inbound {
        case .open: inbound = .shutByClient(afterPeerFIN: false)
        case .peerFinished: inbound = .shutByClient(afterPeerFIN: true)
        case .shutByClient: return []
        }
        return [.shutdownSocket(read: true, write: false), .serveReceivers, .updateInterest]
    }

    /// Both directions finished with the peer involved: the handle is gone.
    private mutating func end(event: Bool, errno: Int32?) -> [Action] {
        phase = .gone
        return [.failReceivers(.unknownHandle), .closeSocket, .forget] + (event ? [.emitClose(errno: errno)] : [])
    }

    /// Both directions shut by the client itself: released, but kept as CLOSED until tcp.close.
    private mutating func keepClosed() -> [Action] {
        phase = .closed
        return [.failReceivers(.unknownHandle), .closeSocket]
    }
}
