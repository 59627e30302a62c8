import JSONRPC

/// A request's `sockaddr` where a host name may stand for the address (contract §7):
/// `tcp.createClient` and `tcp.createServer`.
enum Destination {
    case address(SockAddr)
    /// A syntactically valid host name, `domain` 0 (any), 2 or 10, as given.
    case name(String, domain: Int32, port: Int)

    init(params value: SockAddrParam) throws {
        let text = value.addr
        let domain = Int32(value.domain ?? 0)
        let wanted = domain == SockAddr.inet6 ? "an IPv6" : domain == SockAddr.inet ? "an IPv4" : "an IPv4 or IPv6"
        if text.utf8.contains(0) {
            throw RPCError.invalidParams("'sockaddr.addr' must be \(wanted) address literal or a host name; it contains a NUL byte")
        }
        if let address = try? SockAddr(params: value) {
            self = .address(address)
        } else if HostName.isValid(text) {
            self = .name(text, domain: domain, port: value.port)
        } else {
            throw RPCError.invalidParams("'sockaddr.addr' must be \(wanted) address literal or a host name, got \"\(text)\"")
        }
    }
}

extension SockAddr {
    init(_ value: SockAddrValue, port: Int) {
        self.init(domain: value.domain, addr: value.addr, port: port)
    }
}

extension Destination {
    /// The address, when one was given as a literal.
    var address: SockAddr? {
        if case .address(let address) = self { return address }
        return nil
    }

    /// The host name, when one was given.
    var host: String? {
        if case .name(let host, _, _) = self { return host }
        return nil
    }
}
