import CNetShim
import Foundation
import JSONRPC

/// What a gateway's clients may do, from `--policy FILE`: a sandboxed program gets exactly the
/// network access written here. Without a file everything is allowed.
///
/// ```json
/// {"connect": {"allow": ["127.0.0.0/8", "[::1]:6379"], "deny": ["127.0.0.1:22"]},
///  "listen": ["127.0.0.1", "::1"], "accept": ["127.0.0.0/8"],
///  "allowBindToDevice": false, "allowCreateByFd": true, "allowFlyAway": true,
///  "maxHandlesPerConnection": 256, "maxConnectionsPerUid": 16,
///  "profiles": [{"uid": 1000, "connect": ["*"]}]}
/// ```
public struct Policy: Sendable {
    public var connect: RuleList? = nil
    public var listen: RuleList? = nil
    /// Which remote addresses may connect in to a server.
    public var accept: RuleList? = nil
    public var allowBindToDevice = true
    public var allowCreateByFd = true
    public var allowFlyAway = true
    public var maxHandlesPerConnection = 1024
    /// Connections one uid may hold at once; nil = half of `--max-connections` (at least 1).
    public var maxConnectionsPerUid: Int? = nil
    /// Per-client replacements of the keys above, picked by credentials (`effective(for:)`).
    public var profiles: [PolicyProfile] = []

    public init() {}

    public static let allowAll = Policy()

    public init(file path: String) throws {
        try self.init(bytes: try Policy.readAll(path), source: path)
    }

    /// A policy file's bytes; `source` names it in errors.
    public init(bytes: [UInt8], source path: String) throws {
        let value: JSONValue
        do {
            value = try JanssonCodec.parse(bytes)
        } catch {
            throw PolicyError("policy file \(path) is not JSON: \(error)")
        }
        // The parser keeps the last of duplicated keys; in a policy that silently drops a rule.
        if let duplicate = JSONDuplicateKeys.firstDuplicate(in: bytes) {
            throw PolicyError("\(path): \(duplicate)")
        }
        try self.init(json: value, source: path)
    }

    /// The largest policy file read: enough for any real policy, and a bound on what a path
    /// such as /dev/zero can make the gateway hold.
    static let maxFileBytes = 4 * 1024 * 1024

    /// Everything in the file at `path`, read until end of file: pipes and process
    /// substitution (`--policy <(...)`) work too, where the size from stat means nothing.
    static func readAll(_ path: String) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw PolicyError("cannot read policy file \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw PolicyError("cannot read policy file \(path): \(String(cString: strerror(errno)))") }
            if n == 0 { return bytes }
            bytes.append(contentsOf: chunk[0..<n])
            if bytes.count > maxFileBytes {
                throw PolicyError("policy file \(path) is larger than \(maxFileBytes) bytes")
            }
        }
    }

    public init(json value: JSONValue, source: String = "policy") throws {
        guard case .object(let object) = value else { throw PolicyError("\(source): the policy must be a JSON object") }
        var profileList: JSONValue? = nil
        for (key, member) in object.members {
            if key == "profiles" {
                profileList = member
            } else {
                try apply(key, member, source: source)
            }
        }
        // Profiles last: they replace top-level keys wherever those stand in the file.
        if let profileList { profiles = try PolicyProfile.parse(profileList, base: self, source: source) }
    }

    /// Sets one top-level key (also a profile's key, on a copy of the top level).
    mutating func apply(_ key: String, _ member: JSONValue, source: String) throws {
        switch key {
        case "connect": connect = try RuleList.parse(member, key: key, source: source)
        case "listen": listen = try RuleList.parse(member, key: key, source: source)
        case "accept": accept = try RuleList.parse(member, key: key, source: source)
        case "allowBindToDevice", "allowCreateByFd", "allowFlyAway":
            guard case .bool(let flag) = member else { throw PolicyError("\(source): '\(key)' must be a boolean") }
            switch key {
            case "allowBindToDevice": allowBindToDevice = flag
            case "allowCreateByFd": allowCreateByFd = flag
            default: allowFlyAway = flag
            }
        case "maxHandlesPerConnection":
            guard case .int(let n) = member, n >= 1, n <= 1_000_000 else {
                throw PolicyError("\(source): 'maxHandlesPerConnection' must be an integer in 1..1000000")
            }
            maxHandlesPerConnection = Int(n)
        case "maxConnectionsPerUid":
            guard case .int(let n) = member, n >= 1, n <= 1_000_000 else {
                throw PolicyError("\(source): 'maxConnectionsPerUid' must be an integer in 1..1000000")
            }
            maxConnectionsPerUid = Int(n)
        default:
            throw PolicyError("\(source): unknown key '\(key)'")
        }
    }

    /// The policy for a client with these credentials: the first profile whose uid or gid
    /// matches, else the top level.
    func effective(for client: PeerCredentials) -> Policy {
        profiles.first(where: { $0.matches(client) })?.policy ?? self
    }

    /// A destination of `tcp.createClient`, or the peer of a connected socket passed to
    /// `tcp.createByFd`, judged as what it reaches (see `JudgedAddress`). `host` is the name
    /// the client gave, for name rules.
    func decide(connect address: SockAddr, host: String? = nil, action: PolicyDecision.Action = .connect) -> PolicyDecision {
        let judged = JudgedAddress(address, connecting: true)
        return PolicyDecision.judging(
            connect, name: "connect", action: action, target: .init(address, host: host), judged: judged,
            described: "connecting to \(address.addr) port \(address.port)\(judged.note(for: address))")
    }

    /// A local address a server listens on. An IPv6 listener on `::` that is not IPv6-only
    /// (`ipv6Only` false, or absent with the system's dual-stack default) also listens on IPv4
    /// `0.0.0.0`, and is checked as both.
    func decide(listen address: SockAddr, ipv6Only: Bool?, action: PolicyDecision.Action = .listen) -> PolicyDecision {
        decide(listen: address, alsoIPv4: DualStack.coversIPv4(address, ipv6Only: ipv6Only), action: action)
    }

    /// A local address a server listens on; `alsoIPv4` when the socket is dual-stack.
    func decide(listen address: SockAddr, alsoIPv4: Bool, action: PolicyDecision.Action = .listen) -> PolicyDecision {
        let judged = JudgedAddress(address, connecting: false)
        let target = PolicyDecision.Target(address)
        var decisions = [
            PolicyDecision.judging(
                listen, name: "listen", action: action, target: target, judged: judged,
                described: "listening on \(address.addr) port \(address.port)\(judged.note(for: address))")
        ]
        var wildcards = judged.isUnspecified ? [judged] : []
        if alsoIPv4 {
            let any = JudgedAddress(family: SockAddr.inet, bytes: [0, 0, 0, 0], port: address.port)
            decisions.append(PolicyDecision.judging(
                listen, name: "listen", action: action, target: target, judged: any,
                described: "listening on \(address.addr) port \(address.port) without ipv6Only also listens on IPv4 0.0.0.0 port \(address.port)"))
            wildcards.append(any)
        }
        // A listener on the unspecified address takes connections to every address of its
        // family, so a deny rule for any of them (on that port) refuses it: a deny always wins.
        for any in wildcards {
            if let rule = listen?.denyRule(within: any) {
                decisions.append(PolicyDecision(
                    action: action, target: target, allowed: false, rule: rule.text,
                    refusal: "listening on \(address.addr) port \(address.port) would also serve every \(any.family == SockAddr.inet ? "IPv4" : "IPv6") address: the policy's 'listen' deny rule '\(rule.text)' matches one of them"))
            }
        }
        return decisions.first(where: { !$0.allowed }) ?? decisions[0]
    }

    /// A remote address connecting in to a server (mapped addresses are judged as IPv4).
    func decide(accept remote: SockAddr) -> PolicyDecision {
        let judged = JudgedAddress(remote, connecting: false)
        return PolicyDecision.judging(
            accept, name: "accept", action: .accept, target: .init(remote), judged: judged,
            described: "a connection from \(remote.addr) port \(remote.port)\(judged.note(for: remote))")
    }

    func check(connect address: SockAddr) throws { try decide(connect: address).enforce() }
    func check(listen address: SockAddr, ipv6Only: Bool?) throws { try decide(listen: address, ipv6Only: ipv6Only).enforce() }
    func check(listen address: SockAddr, alsoIPv4: Bool) throws { try decide(listen: address, alsoIPv4: alsoIPv4).enforce() }
}

/// An address as the policy judges it (contract §8): an IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`) is the IPv4 address it maps, and a connect to the unspecified address
/// (`0.0.0.0`, `::`) is judged as the loopback address Linux sends it to (`127.0.0.1`, `::1`).
/// A scope suffix (`fe80::1%eth0`) is not part of the address. Text that is no address literal
/// has no family: only rules for any address (`*`) match it.
struct JudgedAddress: Equatable {
    let family: Int32  // 0 = not an address literal
    let bytes: [UInt8]
    let port: Int

    init(family: Int32, bytes: [UInt8], port: Int) {
        self.family = family
        self.bytes = bytes
        self.port = port
    }

    init(_ address: SockAddr, connecting: Bool) {
        port = address.port
        let text = address.addr.split(separator: "%", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
        guard let (parsedFamily, parsedBytes) = AddressRule.parse(text) else {
            family = 0
            bytes = []
            return
        }
        var fam = parsedFamily
        var raw = parsedBytes
        if let v4 = JudgedAddress.unmapped(family: fam, bytes: raw) {
            fam = SockAddr.inet
            raw = v4
        }
        if connecting && raw.allSatisfy({ $0 == 0 }) {
            raw = fam == SockAddr.inet ? [127, 0, 0, 1] : [UInt8](repeating: 0, count: 15) + [1]
        }
        family = fam
        bytes = raw
    }

    /// `0.0.0.0` or `::` (after unmapping).
    var isUnspecified: Bool { family != 0 && bytes.allSatisfy { $0 == 0 } }

    /// The IPv4 address an IPv4-mapped IPv6 address maps, or nil for any other address.
    static func unmapped(family: Int32, bytes: [UInt8]) -> [UInt8]? {
        guard family == SockAddr.inet6, bytes.count == 16, bytes[0..<10].allSatisfy({ $0 == 0 }),
            bytes[10] == 0xFF, bytes[11] == 0xFF
        else { return nil }
        return Array(bytes[12...])
    }

    /// " (judged as 127.0.0.1)" when the policy judged `address` as another address.
    func note(for address: SockAddr) -> String {
        guard family != 0, let (givenFamily, givenBytes) = AddressRule.parse(address.addr),
            givenFamily != family || givenBytes != bytes
        else { return "" }
        return " (judged as \(text))"
    }

    var text: String {
        var buffer = [CChar](repeating: 0, count: 64)
        let ok = bytes.withUnsafeBytes { raw in
            inet_ntop(family, raw.baseAddress, &buffer, socklen_t(buffer.count)) != nil
        }
        guard ok else { return "?" }
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

public struct PolicyError: Error, CustomStringConvertible {
    public let description: String
    init(_ text: String) { description = text }
}

/// "127.0.0.0/8", "::1", "[::1]:6379", "10.0.0.1:80,443", "*:8000-8100", or a host name
/// rule (NameRules.swift): "localhost:6379", "*.example.com:443".
public struct AddressRule: Sendable {
    let family: Int32  // 0 = any address (or a name rule)
    let prefix: [UInt8]
    let prefixLength: Int
    let ports: [ClosedRange<Int>]  // empty = any port
    /// Set for a name rule, which matches names only, never an address.
    private(set) var name: HostPattern? = nil
    /// The rule as written, for refusal messages.
    let text: String

    public init(_ text: String) throws {
        self.text = text
        // Rule text reaches inet_pton as a C string, which would end at a NUL.
        if text.utf8.contains(0) {
            throw PolicyError("rule '\(text.replacingOccurrences(of: "\u{0}", with: "\\u0000"))': contains a NUL byte")
        }
        var addressPart = text
        var portPart: String? = nil
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw PolicyError("rule '\(text)': missing ']'") }
            addressPart = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            if rest.hasPrefix(":") { portPart = String(rest.dropFirst()) } else if !rest.isEmpty {
                throw PolicyError("rule '\(text)': unexpected text after ']'")
            }
        } else if text.filter({ $0 == ":" }).count == 1 {
            let pieces = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            addressPart = String(pieces[0])
            portPart = String(pieces[1])
        }
        var ports: [ClosedRange<Int>] = []
        if let portPart, portPart != "*" {
            // Empty pieces are kept so they fail below: omitting them read "127.0.0.1:" as any
            // port and "80-" as 80, silently widening or changing a sandbox's rule.
            for piece in portPart.split(separator: ",", omittingEmptySubsequences: false) {
                let bounds = piece.split(separator: "-", omittingEmptySubsequences: false).compactMap { Int($0) }
                guard (1...2).contains(bounds.count), bounds.count == piece.split(separator: "-", omittingEmptySubsequences: false).count,
                    let low = bounds.first, let high = bounds.last, (0...65535).contains(low), (0...65535).contains(high),
                    low <= high
                else { throw PolicyError("rule '\(text)': bad port list '\(portPart)'") }
                ports.append(low...high)
            }
        }
        self.ports = ports
        if addressPart == "*" || addressPart.isEmpty {
            family = 0
            prefix = []
            prefixLength = 0
            return
        }
        var length: Int? = nil
        if let slash = addressPart.firstIndex(of: "/") {
            length = Int(addressPart[addressPart.index(after: slash)...])
            addressPart = String(addressPart[..<slash])
            if length == nil { throw PolicyError("rule '\(text)': bad prefix length") }
        }
        guard let (fam, bytes) = AddressRule.parse(addressPart) else {
            if length == nil, let pattern = HostPattern(addressPart) {
                family = 0
                prefix = []
                prefixLength = 0
                name = pattern
                return
            }
            throw PolicyError("rule '\(text)': '\(addressPart)' is not an IP address or host name")
        }
        let bits = bytes.count * 8
        if let length, !(0...bits).contains(length) { throw PolicyError("rule '\(text)': prefix length out of range") }
        // A rule in IPv4-mapped form (`::ffff:127.0.0.1`, `::ffff:0:0/96`) is the IPv4 rule:
        // mapped addresses are judged as the IPv4 addresses they map.
        if let v4 = JudgedAddress.unmapped(family: fam, bytes: bytes), (length ?? bits) >= 96 {
            family = SockAddr.inet
            prefix = v4
            prefixLength = (length ?? bits) - 96
            return
        }
        family = fam
        prefix = bytes
        prefixLength = length ?? bits
    }

    static func parse(_ text: String) -> (Int32, [UInt8])? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return (SockAddr.inet, withUnsafeBytes(of: v4) { Array($0) })
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            return (SockAddr.inet6, withUnsafeBytes(of: v6) { Array($0) })
        }
        return nil
    }

    /// Whether the rule matches `address` as a listen address is judged (mapped addresses are
    /// IPv4; the unspecified address is itself).
    func matches(_ address: SockAddr) -> Bool {
        matches(JudgedAddress(address, connecting: false))
    }

    func matches(_ address: JudgedAddress) -> Bool {
        if name != nil { return false }
        if !ports.isEmpty && !ports.contains(where: { $0.contains(address.port) }) { return false }
        if family == 0 { return true }
        guard address.family == family else { return false }
        var remaining = prefixLength
        var index = 0
        while remaining > 0 {
            // The shift is done in UInt8 so its high bits fall off: `UInt8(0xFF << n)` shifted an
            // Int and trapped converting 0xFF0 for any prefix not a multiple of 8 ("10.16.0.0/12").
            let mask: UInt8 = remaining >= 8 ? 0xFF : UInt8(0xFF) << UInt8(8 - remaining)
            if address.bytes[index] & mask != prefix[index] & mask { return false }
            remaining -= 8
            index += 1
        }
        return true
    }
}
