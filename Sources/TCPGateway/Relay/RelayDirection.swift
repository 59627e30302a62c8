/// One direction of a relay (contract §11), source → destination, as a value: each input
/// returns the actions to take, and the driver (`Relay`) performs them and feeds back what the
/// system calls did. It keeps no descriptors, so it is tested without sockets.
///
/// Bytes taken from the source and not yet written are `held`: first the ones that were
/// already in user space when the relay began (`userspaceHeld`: the handle's inbox, an
/// attaching client's early bytes), then, in splice mode, the ones in the kernel pipe
/// (`pipeHeld`). In copy mode every byte goes through a bounded user-space buffer, so a fault
/// chain can see it. The source is read only while there is room, so nothing grows without
/// bound: a slow destination stops the reading and TCP's own backpressure does the rest.
///
/// The source's end of stream becomes a shutdown of the destination's writing side once
/// every byte before it has been written.
///
/// Faults (contract §10): in copy mode the driver may pass what it reads through fault chains
/// (the source handle's `in`, then the destination handle's `out`) instead of the buffer. The
/// direction then learns what the chains hold (`chain`), what they let go into the buffer
/// (`passed`) and when the end of stream comes out of them (`chainEnded`): the end never
/// overtakes the bytes a chain holds, and the source is not read while the chains ask so (a
/// stall, or more held than the high-water mark). A switch to copy mode waits until the kernel
/// pipe is empty (its bytes go first, in order); a switch back to splice, until the chains
/// hold nothing.
struct RelayDirection: Equatable {
    enum Mode: Equatable {
        /// Through a kernel pipe with splice(2): the bytes never enter user space.
        case splice
        /// read(2) into a bounded buffer, write(2) out: for bytes a fault must see.
        case copy
    }

    enum Phase: Equatable {
        case reading
        /// The source ended; what is held is still being written.
        case draining
        /// Copy mode: the source ended and its end is inside the fault chains, behind the bytes
        /// they hold; `chainEnded` brings it out.
        case endInChain
        /// Everything written and the destination's writing side shut.
        case ended
        case failed(errno: Int32)
        /// Stopped from outside (the client closed a handle): no more actions.
        case cancelled
    }

    enum Input: Equatable {
        /// The source may have bytes (or its end) to give.
        case sourceReady
        /// The destination may take bytes.
        case destinationReady
        /// A fill moved this many bytes (> 0) from the source.
        case filled(Int)
        /// A fill found nothing to move now (EAGAIN): no bytes, or, in splice mode, a full pipe.
        case fillWouldBlock
        /// The source reported end of stream.
        case sourceEnded
        /// A flush wrote this many bytes (> 0) to the destination.
        case flushed(Int)
        case flushWouldBlock
        /// A read, a write or the shutdown failed with this errno.
        case failed(errno: Int32)
        case cancel
        /// A read's bytes (this many) went into the fault chains, not the buffer.
        case fedToChain(Int)
        /// A read found the source's end and it went into the fault chains.
        case sourceEndedIntoChain
        /// The fault chains now hold this many bytes; whether they ask not to read the source.
        case chain(held: Int, stopsReading: Bool)
        /// The chains let this many bytes go into the buffer.
        case passed(Int)
        /// The source's end came out of the chains.
        case chainEnded
        /// How bytes should move from now on (faults were added or removed).
        case switchMode(Mode)
    }

    enum Action: Equatable {
        /// splice(source → pipe) of at most this many bytes; feed back filled/fillWouldBlock/sourceEnded/failed.
        case spliceIn(max: Int)
        /// read(source) into the buffer, at most this many bytes.
        case readIn(max: Int)
        /// write(destination) from the user-space bytes (they always go first), at most this many.
        case writeOut(max: Int)
        /// splice(pipe → destination) of at most this many bytes.
        case spliceOut(max: Int)
        /// shutdown(destination, SHUT_WR): everything before the source's end is written.
        case shutdownDestination
        /// This direction has ended cleanly.
        case reportEnd
        case reportError(errno: Int32)
    }

    private(set) var mode: Mode
    /// splice → copy asked while the pipe held bytes: no more filling until it is empty.
    private(set) var switchingTo: Mode?
    private let spliceCapacity: Int
    private let copyCapacity: Int
    /// What the fault chains hold (copy mode): not writable yet, but not finished either.
    private(set) var chainHeld = 0
    private(set) var chainStopsReading = false
    private(set) var phase: Phase
    private(set) var userspaceHeld: Int
    private(set) var pipeHeld = 0
    /// Splice mode: a fill found nothing while the pipe held bytes, which may mean the pipe is
    /// full (a pipe counts pages, not bytes); the source waits for the next flush rather than
    /// spinning on a readable socket.
    private(set) var fillBlocked = false

    /// `prefix` bytes are already in user space and go first; `sourceEnded` when the source's
    /// end of stream was read before the relay began. `capacity` is the pipe's (splice) or the
    /// buffer's (copy); `otherCapacity` the other mode's, for a switch (default: the same).
    init(mode: Mode, capacity: Int, otherCapacity: Int? = nil, prefix: Int = 0, sourceEnded: Bool = false) {
        self.mode = mode
        let other = max(otherCapacity ?? capacity, 1)
        self.spliceCapacity = mode == .splice ? max(capacity, 1) : other
        self.copyCapacity = mode == .copy ? max(capacity, 1) : other
        self.userspaceHeld = prefix
        self.phase = sourceEnded ? .draining : .reading
    }

    /// How much the pipe (splice) or the buffer (copy) may hold.
    var capacity: Int { mode == .splice ? spliceCapacity : copyCapacity }
    /// Bytes taken from the source that may be written now (the chains' are not yet).
    var held: Int { userspaceHeld + pipeHeld }
    var isFinished: Bool {
        switch phase {
        case .ended, .failed, .cancelled: return true
        case .reading, .draining, .endInChain: return false
        }
    }
    var isActive: Bool { !isFinished }

    /// Whether the source should be watched for reading.
    var wantsSource: Bool {
        guard phase == .reading, !fillBlocked, switchingTo == nil, !chainStopsReading else { return false }
        return room > 0
    }

    /// Whether the destination should be watched for writing.
    var wantsDestination: Bool { isActive && held > 0 }

    private var room: Int {
        switch mode {
        case .splice: return capacity - pipeHeld
        case .copy: return capacity - userspaceHeld
        }
    }

    /// What a start (or a finished prefix) needs at once: a source that had already ended
    /// with nothing held shuts the destination now.
    mutating func start() -> [Action] {
        if phase == .draining && held == 0 { return finish() }
        return held > 0 ? [flushAction()] : []
    }

    mutating func handle(_ input: Input) -> [Action] {
        guard isActive || input == .cancel else { return [] }
        switch input {
        case .sourceReady:
            guard wantsSource else { return [] }
            return [fillAction()]

        case .destinationReady:
            guard held > 0 else { return [] }
            return [flushAction()]

        case .filled(let count):
            guard phase == .reading, count > 0 else { return [] }
            switch mode {
            case .splice: pipeHeld += count
            case .copy: userspaceHeld += count
            }
            // Written on at once: most destinations take it without a trip through epoll.
            return [flushAction()]

        case .fillWouldBlock:
            if mode == .splice && pipeHeld > 0 { fillBlocked = true }
            return []

        case .sourceEnded:
            guard phase == .reading else { return [] }
            phase = .draining
            return held == 0 ? finish() : [flushAction()]

        case .flushed(let count):
            guard count > 0 else { return [] }
            let fromUser = min(count, userspaceHeld)
            userspaceHeld -= fromUser
            pipeHeld = max(pipeHeld - (count - fromUser), 0)
            fillBlocked = false
            if pipeHeld == 0, let target = switchingTo {
                // The pipe's bytes are out, in order: the new mode starts now.
                mode = target
                switchingTo = nil
            }
            if held > 0 { return [flushAction()] }
            if phase == .draining { return finish() }
            return wantsSource ? [fillAction()] : []

        case .flushWouldBlock:
            return []

        case .failed(let errno):
            phase = .failed(errno: errno)
            return [.reportError(errno: errno)]

        case .cancel:
            guard isActive else { return [] }
            phase = .cancelled
            return []

        case .fedToChain:
            // The chains' output comes as `passed`; level-triggered readiness brings more.
            return []

        case .sourceEndedIntoChain:
            guard phase == .reading else { return [] }
            phase = .endInChain
            return []

        case .chain(let heldBytes, let stops):
            chainHeld = max(heldBytes, 0)
            chainStopsReading = stops
            return []

        case .passed(let count):
            guard count > 0 else { return [] }
            userspaceHeld += count
            return [flushAction()]

        case .chainEnded:
            guard phase == .endInChain || phase == .reading else { return [] }
            phase = .draining
            return held == 0 ? finish() : [flushAction()]

        case .switchMode(let target):
            return switchMode(to: target)
        }
    }

    private mutating func switchMode(to target: Mode) -> [Action] {
        if target == mode {
            switchingTo = nil  // a switch asked and taken back before the pipe emptied
            return []
        }
        switch target {
        case .copy:
            fillBlocked = false
            if pipeHeld > 0 {
                // What the pipe holds was read before the fault came: it goes first, as it is.
                switchingTo = .copy
                return []
            }
            mode = .copy
            return []
        case .splice:
            // Only once the chains hold nothing (and the end is not inside them).
            guard chainHeld == 0, phase != .endInChain else { return [] }
            switchingTo = nil
            mode = .splice
            return []
        }
    }

    /// An action asked for earlier and still queued, as the direction would ask it now (nil:
    /// no longer wanted). Between the asking and the doing, a mode switch or the chains may
    /// have changed what a fill or a flush means: a splice into a direction that now copies
    /// would put bytes where nothing writes them from.
    func current(_ action: Action) -> Action? {
        switch action {
        case .spliceIn, .readIn: return wantsSource ? fillAction() : nil
        case .writeOut, .spliceOut: return wantsDestination ? flushAction() : nil
        // The ends are asked by the input that ended the direction: always done.
        case .shutdownDestination, .reportEnd, .reportError: return action
        }
    }

    private func fillAction() -> Action {
        mode == .splice ? .spliceIn(max: room) : .readIn(max: room)
    }

    private func flushAction() -> Action {
        userspaceHeld > 0 ? .writeOut(max: userspaceHeld) : .spliceOut(max: pipeHeld)
    }

    private mutating func finish() -> [Action] {
        phase = .ended
        return [.shutdownDestination, .reportEnd]
    }
}
