import JSONRPC

/// Host name syntax as contract §7 states it (RFC 1123): dot-separated labels of letters,
/// digits and hyphens, 1–63 bytes each, none starting or ending with a hyphen, at most 253
/// bytes (not counting one trailing dot, which is allowed), and a last label that is not all
/// digits, so `127.1` and `300.1.1.1` are neither names nor addresses.
enum HostName {
    static let maxLength = 253

    static func isValid(_ text: String) -> Bool {
        var bytes = Array(text.utf8)
        if bytes.last == UInt8(ascii: ".") { bytes.removeLast() }
        guard !bytes.isEmpty, bytes.count <= maxLength else { return false }
        let labels = bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        for label in labels {
            guard (1...63).contains(label.count), label.allSatisfy(isLabelByte),
                label.first != UInt8(ascii: "-"), label.last != UInt8(ascii: "-")
            else { return false }
        }
        guard let last = labels.last, !last.allSatisfy({ (0x30...0x39).contains($0) }) else { return false }
        return true
    }

    /// The form names are compared in: lower case, without one trailing dot.
    static func canonical(_ text: String) -> String {
        var bytes = Array(text.utf8)
        if bytes.last == UInt8(ascii: ".") { bytes.removeLast() }
        return String(decoding: bytes.map { (0x41...0x5A).contains($0) ? $0 | 0x20 : $0 }, as: UTF8.self)
    }

    private static func isLabelByte(_ byte: UInt8) -> Bool {
        (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
            || byte == UInt8(ascii: "-")
    }
}

/// The name part of a policy rule (contract §8): `localhost` names exactly that host;
/// `*.example.com` names every host under example.com, but not example.com itself. Case and
/// one trailing dot do not matter.
struct HostPattern: Sendable, Equatable {
    /// Canonical; for a wildcard, the suffix without the `*.`.
    let name: String
    let wildcard: Bool

    /// nil when `text` is neither a host name nor `*.` followed by one.
    init?(_ text: String) {
        if text.hasPrefix("*.") {
            let rest = String(text.dropFirst(2))
            guard HostName.isValid(rest) else { return nil }
            name = HostName.canonical(rest)
            wildcard = true
        } else {
            guard HostName.isValid(text) else { return nil }
            name = HostName.canonical(text)
            wildcard = false
        }
    }

    func matches(host: String) -> Bool {
        let candidate = HostName.canonical(host)
        return wildcard ? candidate.hasSuffix("." + name) : candidate == name
    }

    var text: String { wildcard ? "*." + name : name }
}

/// The policy's judgement of a connect (or listen) by host name, from one list's allow and
/// deny rules (no allow list: everything not denied is allowed). Allowed when an allow rule
/// matches the name or the numeric address used, and no deny rule matches either.
struct NameRules {
    let list: String  // "connect" or "listen", for messages
    let allow: [AddressRule]?
    let deny: [AddressRule]

    /// Before anything is resolved: with an allow list, some allow rule must name the host
    /// (exactly or by wildcard), so a sandbox cannot use DNS as a side channel; a deny rule
    /// naming it for `port` (any port when nil, as for dns.lookup) refuses it too.
    func checkResolving(_ host: String, port: Int?, action: String) throws {
        if let rule = deny.first(where: { $0.matches(host: host, port: port, anyPortOnly: port == nil) }) {
            throw RPCError.policy("\(action) \(host) is refused by the '\(list)' deny rule '\(rule.text)'")
        }
        guard let allow else { return }
        if !allow.contains(where: { $0.names(host) }) {
            throw RPCError.policy(
                "\(action) \(host) is not allowed: no allow rule of the '\(list)' list names it, so it is not looked up")
        }
    }

    /// A resolved address of `host`: nil when allowed, else why not (the caller skips it).
    func refusal(of address: SockAddr, host: String, connecting: Bool) -> String? {
        let judged = JudgedAddress(address, connecting: connecting)
        if let rule = deny.first(where: { $0.matches(host: host, port: address.port) || $0.matches(judged) }) {
            return "\(address.addr) port \(address.port) (\(host)) matches the '\(list)' deny rule '\(rule.text)'"
        }
        guard let allow else { return nil }
        if allow.contains(where: { $0.matches(host: host, port: address.port) || $0.matches(judged) }) { return nil }
        return "\(address.addr) port \(address.port) (\(host)): no allow rule of the '\(list)' list matches"
    }
}

extension AddressRule {
    /// Whether this is a name rule that names `host`, whatever its ports.
    func names(_ host: String) -> Bool {
        name?.matches(host: host) ?? false
    }

    /// A name rule matching `host` and `port` (nil: only a rule for any port matches when
    /// `anyPortOnly`).
    func matches(host: String, port: Int?, anyPortOnly: Bool = false) -> Bool {
        guard let name, name.matches(host: host) else { return false }
        guard let port else { return !anyPortOnly || ports.isEmpty }
        return ports.isEmpty || ports.contains(where: { $0.contains(port) })
    }
}

extension Policy {
    /// The `connect` and `listen` lists' rules, for names.
    var connectNames: NameRules { NameRules(list: "connect", rules: connect) }
    var listenNames: NameRules { NameRules(list: "listen", rules: listen) }
}

extension NameRules {
    init(list: String, rules: RuleList?) {
        self.init(list: list, allow: rules?.allow?.map(\.addressRule), deny: rules?.deny.map(\.addressRule) ?? [])
    }
}
