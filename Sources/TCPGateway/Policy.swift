import CNetShim
import Foundation
import JSONRPC

/// What a gateway's clients may do, from `--policy FILE`: a sandboxed program gets exactly the
/// network access written here. Without a file everything is allowed.
///
/// ```json
/// {"connect": ["127.0.0.0/8", "[::1]:6379", "*:8000-8100"], "listen": ["127.0.0.1", "::1"],
///  "allowBindToDevice": false, "allowCreateByFd": true, "allowFlyAway": true,
///  "maxHandlesPerConnection": 256}
/// ```
public struct Policy: Sendable {
    public var connect: [AddressRule]? = nil
    public var listen: [AddressRule]? = nil
    public var allowBindToDevice = true
    public var allowCreateByFd = true
    public var allowFlyAway = true
    public var maxHandlesPerConnection = 1024

    public init() {}

    public static let allowAll = Policy()

    public init(file path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw PolicyError("cannot read policy file \(path)")
        }
        let value: JSONValue
        do {
            value = try data.withUnsafeBytes { try JanssonCodec.parse($0) }
        } catch {
            throw PolicyError("policy file \(path) is not JSON: \(error)")
        }
        try self.init(json: value, source: path)
    }

    public init(json value: JSONValue, source: String = "policy") throws {
        guard case .object(let object) = value else { throw PolicyError("\(source): the policy must be a JSON object") }
        for (key, member) in object.members {
            switch key {
            case "connect", "listen":
                guard case .array(let items) = member else { throw PolicyError("\(source): '\(key)' must be an array of rules") }
                let rules = try items.map { item -> AddressRule in
                    guard case .string(let text) = item else { throw PolicyError("\(source): '\(key)' rules must be strings") }
                    do {
                        return try AddressRule(text)
                    } catch let error as PolicyError {
                        throw PolicyError("\(source): '\(key)': \(error.description)")
                    }
                }
                if key == "connect" { connect = rules } else { listen = rules }
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
            default:
                throw PolicyError("\(source): unknown key '\(key)'")
            }
        }
    }

    func check(connect address: SockAddr) throws {
        if let rules = connect, !rules.contains(where: { $0.matches(address) }) {
            throw RPCError.policy("connecting to \(address.addr) port \(address.port) is not in the policy's 'connect' list")
        }
    }

    func check(listen address: SockAddr) throws {
        if let rules = listen, !rules.contains(where: { $0.matches(address) }) {
            throw RPCError.policy("listening on \(address.addr) port \(address.port) is not in the policy's 'listen' list")
        }
    }
}

public struct PolicyError: Error, CustomStringConvertible {
    public let description: String
    init(_ text: String) { description = text }
}

/// "127.0.0.0/8", "::1", "[::1]:6379", "10.0.0.1:80,443", "*:8000-8100".
public struct AddressRule: Sendable {
    let family: Int32  // 0 = any address
    let prefix: [UInt8]
    let prefixLength: Int
    let ports: [ClosedRange<Int>]  // empty = any port

    public init(_ text: String) throws {
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
                let bounds = piece.split(separator: "-", omittingEmptySubsequences: false).map { Int($0) }
                guard (1...2).contains(bounds.count), bounds.allSatisfy({ $0 != nil && (0...65535).contains($0!) }),
                    bounds.first!! <= bounds.last!!
                else { throw PolicyError("rule '\(text)': bad port list '\(portPart)'") }
                ports.append(bounds.first!!...bounds.last!!)
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
            throw PolicyError("rule '\(text)': '\(addressPart)' is not an IP address")
        }
        let bits = bytes.count * 8
        if let length, !(0...bits).contains(length) { throw PolicyError("rule '\(text)': prefix length out of range") }
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

    func matches(_ address: SockAddr) -> Bool {
        if !ports.isEmpty && !ports.contains(where: { $0.contains(address.port) }) { return false }
        if family == 0 { return true }
        guard var (fam, bytes) = AddressRule.parse(address.addr) else { return false }
        // An IPv4-mapped IPv6 address is the IPv4 address it maps.
        if fam == SockAddr.inet6 && family == SockAddr.inet && bytes[0..<10].allSatisfy({ $0 == 0 })
            && bytes[10] == 0xFF && bytes[11] == 0xFF
        {
            fam = SockAddr.inet
            bytes = Array(bytes[12...])
        }
        guard fam == family else { return false }
        var remaining = prefixLength
        var index = 0
        while remaining > 0 {
            // The shift is done in UInt8 so its high bits fall off: `UInt8(0xFF << n)` shifted an
            // Int and trapped converting 0xFF0 for any prefix not a multiple of 8 ("10.16.0.0/12").
            let mask: UInt8 = remaining >= 8 ? 0xFF : UInt8(0xFF) << UInt8(8 - remaining)
            if bytes[index] & mask != prefix[index] & mask { return false }
            remaining -= 8
            index += 1
        }
        return true
    }
}
