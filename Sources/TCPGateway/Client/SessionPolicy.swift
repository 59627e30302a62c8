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
