import CNetShim
import JSONRPC

/// An IPv4/IPv6 address and port as the seed spells it: `{domain, addr, port}`.
struct SockAddr: Equatable {
    static let inet: Int32 = 2
    static let inet6: Int32 = 10

    var domain: Int32
    var addr: String
    var port: Int

    init(domain: Int32, addr: String, port: Int) {
        self.domain = domain
        self.addr = addr
        self.port = port
    }

    init(_ raw: tcpgw_sockaddr) {
        domain = raw.family
        addr = withUnsafeBytes(of: raw.addr) { bytes in
            String(decoding: bytes.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        port = Int(raw.port)
    }

    /// From a request's `sockaddr` (validated: `domain`, when given, is 2 or 10).
    init(params value: SockAddrParam) throws {
        let addr = value.addr
        let port = value.port
        let domain = Int32(value.domain ?? 0)
        // The text goes to C as a NUL-terminated string, where "127.0.0.1\u{0}x" would read as
        // 127.0.0.1: a NUL, or any byte no address literal holds, is refused before that.
        if addr.utf8.contains(0) {
            throw RPCError.invalidParams("'sockaddr.addr' must be an IPv4 or IPv6 address literal; it contains a NUL byte")
        }
        // Check the address text now, so a typo is an invalid param rather than an OS error.
        var storage = [UInt8](repeating: 0, count: 128)  // room for a sockaddr_storage
        var len: UInt32 = 0
        var family: Int32 = -1
        if SockAddr.holdsOnlyLiteralBytes(addr) {
            family = storage.withUnsafeMutableBytes { tcpgw_resolve(domain, addr, Int32(port), $0.baseAddress, &len) }
        }
        guard family > 0 else {
            if domain != 0 {
                throw RPCError.invalidParams("'sockaddr.addr' must be an \(domain == SockAddr.inet6 ? "IPv6" : "IPv4") address literal, got \"\(addr)\"")
            }
            throw RPCError.invalidParams("'sockaddr.addr' must be an IPv4 or IPv6 address literal, got \"\(addr)\"")
        }
        self.init(domain: family, addr: addr, port: port)
    }

    /// Whether each byte of `text` may appear in an address literal (`127.0.0.1`, `::1`,
    /// `fe80::1%eth0`): hex digits, '.' and ':', then after one '%' an interface name (printable
    /// ASCII without '/' or '%'). inet_pton and if_nametoindex judge the rest.
    static func holdsOnlyLiteralBytes(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        let scopeStart = bytes.firstIndex(of: UInt8(ascii: "%")) ?? bytes.endIndex
        let addressOK = bytes[..<scopeStart].allSatisfy { byte in
            (0x30...0x39).contains(byte) || (0x41...0x46).contains(byte) || (0x61...0x66).contains(byte)
                || byte == UInt8(ascii: ".") || byte == UInt8(ascii: ":")
        }
        let scopeOK = bytes[scopeStart...].dropFirst().allSatisfy { byte in
            (0x21...0x7E).contains(byte) && byte != UInt8(ascii: "/") && byte != UInt8(ascii: "%")
        }
        return addressOK && scopeOK
    }

    var json: JSONValue {
        ["domain": .int(Int64(domain)), "addr": .string(addr), "port": .int(Int64(port))]
    }

    static func local(of fd: Int32) -> SockAddr? {
        var raw = tcpgw_sockaddr()
        return tcpgw_sockname(fd, &raw) == 0 ? SockAddr(raw) : nil
    }

    static func remote(of fd: Int32) -> SockAddr? {
        var raw = tcpgw_sockaddr()
        return tcpgw_peername(fd, &raw) == 0 ? SockAddr(raw) : nil
    }
}

/// TCP states numbered as the seed's lwIP stack numbers them.
enum TCPState: Int, CaseIterable {
    case closed = 0, listen, synSent, synRcvd, established, finWait1, finWait2, closeWait, closing, lastAck, timeWait

    var name: String {
        ["CLOSED", "LISTEN", "SYN_SENT", "SYN_RCVD", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2",
         "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT"][rawValue]
    }

    /// `{"state":4,"name":"ESTABLISHED"}`, built once per state (tcp.getState answers it).
    var json: JSONValue { TCPState.jsonByState[rawValue] }
    private static let jsonByState: [JSONValue] = allCases.map { ["state": .int(Int64($0.rawValue)), "name": .string($0.name)] }

    /// From Linux's TCP_INFO tcpi_state (include/net/tcp_states.h).
    init(linux: Int32) {
        switch linux {
        case 1: self = .established
        case 2: self = .synSent
        case 3, 12: self = .synRcvd
        case 4: self = .finWait1
        case 5: self = .finWait2
        case 6: self = .timeWait
        case 8: self = .closeWait
        case 9: self = .lastAck
        case 10: self = .listen
        case 11: self = .closing
        default: self = .closed
        }
    }
}
