/// The policy as it applies to one client: the gateway's current policy (it may be reloaded)
/// through the profile this client's credentials pick, and the audit line of every decision.
extension Session {
    var policy: Policy { gateway.policy.effective(for: credentials) }

    /// Audits `decision` (before any answer is sent: this runs before the call completes) and
    /// throws its refusal. `handle` is the existing handle the decision is about, if any.
    func enforce(_ decision: PolicyDecision, handle: Int64? = nil) throws {
        gateway.audit?.record(decision, client: credentials, handle: handle)
        try decision.enforce()
    }

    /// Audits a decision whose refusal the caller carries out itself (a reset connection).
    func record(_ decision: PolicyDecision, handle: Int64?) {
        gateway.audit?.record(decision, client: credentials, handle: handle)
    }
}

/// The decisions of a call that creates a handle. A refusal is audited and thrown at once; an
/// allowed decision is audited by `finish()` (the caller's `defer`, so before the answer is
/// sent) naming the new handle, or no handle when the creation then failed.
final class CreationAudit {
    private let session: Session
    private var allowed: [PolicyDecision] = []
    /// The handle the call made, once it exists.
    var handle: Int64? = nil

    init(_ session: Session) {
        self.session = session
    }

    func enforce(_ decision: PolicyDecision) throws {
        guard decision.allowed else {
            finish()  // earlier allowed decisions first, in order
            try session.enforce(decision)
            return
        }
        allowed.append(decision)
    }

    func finish() {
        for decision in allowed { session.record(decision, handle: handle) }
        allowed = []
    }
}
