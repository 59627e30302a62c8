import JSONRPC

/// One decision of the policy (contract §8): what it was about, whether it was allowed, and
/// by which rule. A denied decision carries the refusal's message (-32003). Every decision is
/// written to the audit log, when there is one, before the answer it leads to.
struct PolicyDecision {
    enum Action: String {
        case connect, listen, accept, lookup, createByFd, flyAway, bindToDevice
    }

    struct Target {
        var addr: String?
        var port: Int?
        var host: String? = nil
        /// The interface of a bindToDevice decision.
        var device: String? = nil

        init(addr: String?, port: Int?, host: String? = nil, device: String? = nil) {
            self.addr = addr
            self.port = port
            self.host = host
            self.device = device
        }

        init(_ address: SockAddr?, host: String? = nil, device: String? = nil) {
            self.init(addr: address?.addr, port: address?.port, host: host, device: device)
        }

        var json: JSONValue {
            var object: JSONObject = [
                "addr": addr.map { .string($0) } ?? .null, "port": port.map { .int(Int64($0)) } ?? .null,
            ]
            if let host { object["host"] = .string(host) }
            if let device { object["device"] = .string(device) }
            return .object(object)
        }
    }

    static let noAllowRule = "no allow rule"

    var action: Action
    var target: Target
    let allowed: Bool
    /// The rule that decided: the matching allow or deny rule, "no allow rule", a switch's
    /// key; nil when nothing restricts the action.
    let rule: String?
    /// The message of the -32003 answer, for a denied decision.
    let refusal: String?

    /// Throws the refusal of a denied decision.
    func enforce() throws {
        if let refusal { throw RPCError.policy(refusal) }
    }

    /// A list's decision on one judged address. `described` starts the refusal's message
    /// ("connecting to 10.0.0.1 port 80").
    static func judging(
        _ list: RuleList?, name: String, action: Action, target: Target, judged: JudgedAddress, described: String
    ) -> PolicyDecision {
        switch list?.judge(judged, host: target.host) ?? .allowed(rule: nil) {
        case .allowed(let rule):
            return PolicyDecision(action: action, target: target, allowed: true, rule: rule, refusal: nil)
        case .denied(let rule?):
            return PolicyDecision(
                action: action, target: target, allowed: false, rule: rule,
                refusal: "\(described): the policy's '\(name)' deny rule '\(rule)' matches")
        case .denied(nil):
            return PolicyDecision(
                action: action, target: target, allowed: false, rule: noAllowRule,
                refusal: "\(described): no allow rule in the policy's '\(name)' list matches")
        }
    }

    /// A yes/no switch such as `allowFlyAway`.
    static func flag(_ allowed: Bool, key: String, action: Action, target: Target, refusal: String) -> PolicyDecision {
        PolicyDecision(
            action: action, target: target, allowed: allowed, rule: allowed ? nil : key,
            refusal: allowed ? nil : "\(refusal) (the policy's '\(key)' is false)")
    }
}
