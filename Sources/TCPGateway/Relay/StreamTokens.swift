import CNetShim
import JSONRPC

/// The `tcp.stream` tokens not yet used (contract §11): 128 random bits, base64url, single
/// use, valid for a while, and only for a client with the owner's uid. Loop-confined.
final class StreamTokens {
    private struct Entry {
        weak var handle: ConnectionHandle?
        let handleID: Int64
        let uid: Int
        let expires: UInt64
    }

    /// Outstanding tokens per gateway: an expired one costs memory until the next issue sweeps it.
    static let limit = 4096

    let lifetimeMS: Int
    private var entries: [String: Entry] = [:]

    init(lifetimeMS: Int) {
        self.lifetimeMS = lifetimeMS
    }

    var count: Int { entries.count }

    func issue(for handle: ConnectionHandle) throws -> String {
        let now = tcpgw_monotonic_ns()
        entries = entries.filter { $0.value.expires > now && $0.value.handle != nil }
        guard entries.count < StreamTokens.limit else {
            throw RPCError.limit("\(StreamTokens.limit) stream tokens are waiting to be used")
        }
        let token = StreamTokens.fresh()
        entries[token] = Entry(
            handle: handle, handleID: handle.id, uid: handle.session.peerUID,
            expires: now + UInt64(lifetimeMS) * 1_000_000)
        return token
    }

    /// 128 random bits, base64url; never beginning with "-", so that `tcpgw attach TOKEN` (and
    /// any other command) reads it as an argument, not as options: tokens that would are drawn
    /// again (1 in 64), which keeps the rest uniform.
    static func fresh() -> String {
        var generator = SystemRandomNumberGenerator()  // getrandom(2)
        while true {
            var bytes: [UInt8] = []
            for _ in 0..<2 { withUnsafeBytes(of: generator.next() as UInt64) { bytes += $0 } }
            let token = base64url(bytes)
            if token.first != "-" { return token }
        }
    }

    /// The handle a token stands for; the token is used up, whatever the outcome. -32008 for a
    /// token that is unknown, used or expired, or presented by another uid (the owner's token
    /// stays usable then: someone else's guess must not spend it).
    func redeem(_ token: String, uid: Int) throws -> ConnectionHandle {
        guard let entry = entries[token], entry.expires > tcpgw_monotonic_ns() else {
            entries[token] = nil
            throw RPCError.gateway(.streamToken, "unknown, used or expired stream token")
        }
        guard entry.uid == uid else {
            throw RPCError.gateway(.streamToken, "unknown, used or expired stream token")
        }
        entries[token] = nil
        guard let handle = entry.handle, !handle.session.isClosed,
            case .connection(let current)? = handle.session.handles.all[entry.handleID], current === handle
        else {
            throw RPCError.unknownHandle(entry.handleID)
        }
        return handle
    }

    static func base64url(_ bytes: [UInt8]) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        var out: [UInt8] = []
        var index = 0
        while index < bytes.count {
            let chunk = bytes[index..<min(index + 3, bytes.count)]
            var value: UInt32 = 0
            for (offset, byte) in chunk.enumerated() { value |= UInt32(byte) << (16 - 8 * UInt32(offset)) }
            let characters = chunk.count + 1
            for position in 0..<characters { out.append(alphabet[Int((value >> (18 - 6 * UInt32(position))) & 63)]) }
            index += 3
        }
        return String(decoding: out, as: UTF8.self)
    }
}
