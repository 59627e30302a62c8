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
    static func refusal(fd: Int32, sessions: some Sequence<Session>, policy: Policy, maxConnections: Int) -> String? {
        var uid: Int32 = -1
        var pid: Int32 = -1
        _ = tcpgw_peer_uid(fd, &uid, &pid)
        let limit = perUidLimit(policy: policy, maxConnections: maxConnections)
        var held = 0
        for session in sessions where session.peerUID == Int(uid) && !session.isClosed {
            held += 1
        }
        guard held >= limit else { return nil }
        return "uid \(uid) already has \(held) connections to the gateway (maximum \(limit) per uid)"
    }
}
