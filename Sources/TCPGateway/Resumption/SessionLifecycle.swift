/// The life of a client's session (contract §12): ordinary until `session.keep`; kept while
/// its connection is open; detached for the grace once that connection drops; resumed by a new
/// connection (which may take over one still open), or ended when the grace runs out. Pure:
/// the session carries out the actions.
struct SessionLifecycle: Equatable {
    enum State: Equatable {
        /// No `session.keep`: a dropped connection ends the session.
        case ordinary
        /// Kept, with its connection open.
        case attached
        /// Kept, its connection gone; `generation` names the grace timer that may end it.
        case detached(generation: Int)
        case ended
    }

    enum Action: Equatable {
        case none
        /// Close every handle and cancel every call: the disconnect path.
        case closeAll
        /// Keep everything for `milliseconds`, then deliver `graceExpired(generation)`.
        case startGrace(milliseconds: Int, generation: Int)
        /// A resume arrived while the old connection is open: close that one (silently) first.
        case takeOver
    }

    static let defaultGrace = 30_000
    static let maxGrace = 3_600_000

    private(set) var state = State.ordinary
    private(set) var grace = SessionLifecycle.defaultGrace
    private var generation = 0

    var isKept: Bool {
        switch state {
        case .attached, .detached: return true
        case .ordinary, .ended: return false
        }
    }

    var isDetached: Bool {
        if case .detached = state { return true }
        return false
    }

    /// `session.keep` (a second one only changes the grace).
    mutating func keep(grace: Int) {
        self.grace = grace
        if state == .ordinary { state = .attached }
    }

    /// The client's connection is gone.
    mutating func connectionDropped() -> Action {
        switch state {
        case .attached where grace > 0:
            generation += 1
            state = .detached(generation: generation)
            return .startGrace(milliseconds: grace, generation: generation)
        case .ordinary, .attached:
            state = .ended
            return .closeAll
        case .detached, .ended:
            return .none
        }
    }

    /// A grace timer fired; only the current one counts (a resume outdates it).
    mutating func graceExpired(generation fired: Int) -> Action {
        guard case .detached(let current) = state, current == fired else { return .none }
        state = .ended
        return .closeAll
    }

    /// Whether `resume()` would take the session on.
    var isResumable: Bool { isKept }

    /// A new connection resumes the session; nil when it is not resumable.
    mutating func resume() -> Action? {
        switch state {
        case .attached:
            return .takeOver
        case .detached:
            state = .attached
            return Action.none
        case .ordinary, .ended:
            return nil
        }
    }

    /// The session ended some other way (the gateway stops).
    mutating func end() {
        state = .ended
    }
}
