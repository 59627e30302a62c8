import CNetShim
import Foundation

/// Whether an IPv6 listener also listens on IPv4 (contract §8): a socket bound to `::` that is
/// not IPv6-only takes IPv4 connections to any address too, as if it listened on `0.0.0.0`.
enum DualStack {
    /// For a listener about to be created on `address`: `ipv6Only` as requested, absent meaning
    /// the system's default (`net.ipv6.bindv6only`).
    static func coversIPv4(_ address: SockAddr, ipv6Only: Bool?) -> Bool {
        guard isIPv6Any(address) else { return false }
        switch ipv6Only {
        case true?: return false
        case false?: return true
        case nil: return systemDefaultIsDualStack()
        }
    }

    /// For an existing socket bound to `local`: what its IPV6_V6ONLY option says. A socket whose
    /// option cannot be read is taken as dual-stack (the wider reading).
    static func coversIPv4(fd: Int32, local: SockAddr) -> Bool {
        guard isIPv6Any(local) else { return false }
        var v6only: Int32 = 0
        guard tcpgw_getsockopt_int(fd, tcpgw_const_ipproto_ipv6(), tcpgw_const_ipv6_v6only(), &v6only) == 0 else {
            return true
        }
        return v6only == 0
    }

    /// `net.ipv6.bindv6only` is 0 (new IPv6 sockets are dual-stack) unless it says 1. When it
    /// cannot be read, sockets are taken as dual-stack (the wider reading).
    static func systemDefaultIsDualStack() -> Bool {
        guard let text = try? String(contentsOfFile: "/proc/sys/net/ipv6/bindv6only", encoding: .utf8) else {
            return true
        }
        return text.trimmingCharacters(in: .whitespacesAndNewlines) != "1"
    }

    /// `::` (any IPv6 address), whatever its spelling.
    static func isIPv6Any(_ address: SockAddr) -> Bool {
        guard address.domain == SockAddr.inet6 else { return false }
        let text = address.addr.split(separator: "%", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
        guard let (family, bytes) = AddressRule.parse(text), family == SockAddr.inet6 else { return false }
        return bytes.allSatisfy { $0 == 0 }
    }
}
