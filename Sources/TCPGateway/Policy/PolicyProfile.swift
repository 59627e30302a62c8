import CNetShim
import JSONRPC

/// A client's credentials as its Unix socket had them at connect time (SO_PEERCRED); -1 where
/// the kernel gave none.
public struct PeerCredentials: Sendable, Equatable {
    public let uid: Int
    public let gid: Int
    public let pid: Int

    public init(uid: Int, gid: Int, pid: Int) {
        self.uid = uid
        self.gid = gid
        self.pid = pid
    }

    /// The peer of the Unix socket `fd`.
    init(socket fd: Int32) {
        var uid: Int32 = -1
        var gid: Int32 = -1
        var pid: Int32 = -1
        if tcpgw_peer_cred(fd, &uid, &gid, &pid) != 0 {
            uid = -1
            gid = -1
            pid = -1
        }
        self.init(uid: Int(uid), gid: Int(gid), pid: Int(pid))
    }

    var json: JSONValue { ["uid": .int(Int64(uid)), "gid": .int(Int64(gid)), "pid": .int(Int64(pid))] }
}

/// One entry of the policy's `profiles` (contract §8): `{"uid": 1000, ...}` or
/// `{"gid": 100, ...}`; the other keys replace the top-level ones for a client it matches.
/// `policy` is the top level with those keys applied, made once at load.
public struct PolicyProfile: Sendable {
    let uid: Int?
    let gid: Int?
    let policy: Policy

    func matches(_ client: PeerCredentials) -> Bool {
        (uid != nil && uid == client.uid) || (gid != nil && gid == client.gid)
    }

    static func parse(_ value: JSONValue, base: Policy, source: String) throws -> [PolicyProfile] {
        guard case .array(let items) = value else { throw PolicyError("\(source): 'profiles' must be an array of objects") }
        var top = base
        top.profiles = []
        return try items.enumerated().map { index, item in
            let name = "\(source): 'profiles[\(index)]'"
            guard case .object(let object) = item else { throw PolicyError("\(name) must be an object") }
            var uid: Int? = nil
            var gid: Int? = nil
            var policy = top
            for (key, member) in object.members {
                switch key {
                case "uid", "gid":
                    // uid_t and gid_t are 32-bit; -1 is "none" and matches nobody.
                    guard case .int(let n) = member, n >= 0, n < 0xFFFF_FFFF else {
                        throw PolicyError("\(name): '\(key)' must be an integer in 0..4294967294")
                    }
                    if key == "uid" { uid = Int(n) } else { gid = Int(n) }
                case "profiles":
                    throw PolicyError("\(name): unknown key 'profiles' (profiles do not nest)")
                default:
                    try policy.apply(key, member, source: name)
                }
            }
            guard uid != nil || gid != nil else { throw PolicyError("\(name) needs a 'uid' or a 'gid'") }
            return PolicyProfile(uid: uid, gid: gid, policy: policy)
        }
    }
}
