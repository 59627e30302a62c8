import CNetShim
import JSONRPC

/// Whether a new client may take a connection slot, by its uid (contract §13): one uid may
/// hold at most `maxConnectionsPerUid` connections (policy; default half of `--max-connections`),
/// so it cannot take every slot. A refused client gets one -32004 error line and is closed.
enum ConnectionAdmission {
    static func perUidLimit(policy: Policy, maxConnections: Int) -> Int {
        policy.maxConnectionsPerUid ?? max(1, maxConnections / 2)
    }

    /// Why the client on `fd` is refused, or nil when it may be admitted.
    /// `policy` is the client's own (its profile may set the limit).
    static func refusal(
        client: PeerCredentials, sessions: some Sequence<Session>, policy: Policy, maxConnections: Int
    ) -> String? {
        let uid = client.uid
        let limit = perUidLimit(policy: policy, maxConnections: maxConnections)
        var held = 0
        for session in sessions where session.peerUID == uid && !session.isClosed {
            held += 1
        }
        guard held >= limit else { return nil }
        return "uid \(uid) already has \(held) connections to the gateway (maximum \(limit) per uid)"
    }
}
