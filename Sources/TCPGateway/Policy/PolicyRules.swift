import JSONRPC

/// One rule of a policy list, with the text it was written as (refusals and audit lines name
/// it). Address rules today; host-name rules (contract §8) are another `Kind`.
public struct PolicyRule: Sendable {
    enum Kind: Sendable {
        case address(AddressRule)
    }

    let text: String
    let kind: Kind

    public init(_ text: String) throws {
        self.text = text
        kind = .address(try AddressRule(text))
    }

    /// Whether the rule matches a target: an address rule matches the address as judged; a
    /// name rule (`localhost:6379`, `*.example.com`) matches `host`, the name the client gave.
    func matches(_ address: JudgedAddress, host: String?) -> Bool {
        switch kind {
        case .address(let rule):
            if rule.matches(address) { return true }
            guard let host else { return false }
            return rule.matches(host: host, port: address.port)
        }
    }

    /// The rule as an address-or-name rule (what `NameRules` judges names with).
    var addressRule: AddressRule {
        switch kind {
        case .address(let rule): return rule
        }
    }
}

/// A `connect`, `listen` or `accept` list (contract §8): an array of rules means
/// `{"allow": [...]}`. Without `allow` everything not denied is allowed; an empty `allow`
/// allows nothing; a deny rule always wins.
public struct RuleList: Sendable {
    public var allow: [PolicyRule]?
    public var deny: [PolicyRule] = []

    public init(allow: [PolicyRule]?, deny: [PolicyRule] = []) {
        self.allow = allow
        self.deny = deny
    }

    enum Verdict: Equatable {
        /// The allow rule that matched, nil when the list has no `allow`.
        case allowed(rule: String?)
        /// The deny rule that matched, nil when no allow rule matched.
        case denied(rule: String?)

        var isAllowed: Bool { if case .allowed = self { return true } else { return false } }
    }

    /// The list's word on one target. Deny rules are asked first: one that matches wins
    /// whatever the allow rules say.
    func judge(_ address: JudgedAddress, host: String? = nil) -> Verdict {
        if let rule = deny.first(where: { $0.matches(address, host: host) }) { return .denied(rule: rule.text) }
        guard let allow else { return .allowed(rule: nil) }
        if let rule = allow.first(where: { $0.matches(address, host: host) }) { return .allowed(rule: rule.text) }
        return .denied(rule: nil)
    }

    /// The first deny rule for some address of `wildcard`'s family on its port: what a
    /// listener on the unspecified address would also serve.
    func denyRule(within wildcard: JudgedAddress) -> PolicyRule? {
        deny.first { rule in
            switch rule.kind {
            case .address(let address):
                return (address.family == 0 || address.family == wildcard.family)
                    && (address.ports.isEmpty || address.ports.contains { $0.contains(wildcard.port) })
            }
        }
    }

    /// `[rules]` or `{"allow": [rules], "deny": [rules]}`; errors name `key` (and the member).
    static func parse(_ value: JSONValue, key: String, source: String) throws -> RuleList {
        switch value {
        case .array:
            return RuleList(allow: try rules(value, name: key, source: source))
        case .object(let object):
            var list = RuleList(allow: nil)
            for (member, rules) in object.members {
                switch member {
                case "allow": list.allow = try self.rules(rules, name: "\(key).allow", source: source)
                case "deny": list.deny = try self.rules(rules, name: "\(key).deny", source: source)
                default: throw PolicyError("\(source): '\(key)': unknown key '\(member)' (only 'allow' and 'deny')")
                }
            }
            return list
        default:
            throw PolicyError("\(source): '\(key)' must be an array of rules or an object with 'allow' and 'deny' arrays")
        }
    }

    private static func rules(_ value: JSONValue, name: String, source: String) throws -> [PolicyRule] {
        guard case .array(let items) = value else { throw PolicyError("\(source): '\(name)' must be an array of rules") }
        return try items.map { item in
            guard case .string(let text) = item else { throw PolicyError("\(source): '\(name)' rules must be strings") }
            do {
                return try PolicyRule(text)
            } catch let error as PolicyError {
                throw PolicyError("\(source): '\(name)': \(error.description)")
            }
        }
    }
}
