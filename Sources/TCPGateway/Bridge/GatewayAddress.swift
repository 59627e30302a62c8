import CNetShim
import Foundation

/// Where a client finds its gateway: a Unix socket path, or a gateway on another host reached
/// by running `tcpgw bridge` there over ssh (contract §12, "Remote gateways").
public enum GatewayAddress: Equatable, Sendable, CustomStringConvertible {
    case unixSocket(String)
    case ssh(SSHGatewayAddress)

    /// `ssh://[user@]host[:port][/socket]`, or anything else as a socket path. Another
    /// `scheme://` is refused: it is surely not meant as a file name.
    public init(parsing text: String) throws(GatewayAddressError) {
        if let scheme = GatewayAddress.scheme(of: text) {
            guard scheme.lowercased() == "ssh" else {
                throw GatewayAddressError(
                    "unsupported address '\(scheme)://...': a gateway address is a Unix socket path or ssh://[user@]host[:port][/socket]")
            }
            self = .ssh(try SSHGatewayAddress(parsing: String(text.dropFirst(scheme.count + 3))))
            return
        }
        if let problem = SocketPathOwner.problem(with: text) { throw GatewayAddressError(problem) }
        self = .unixSocket(text)
    }

    public var description: String {
        switch self {
        case .unixSocket(let path): return path
        case .ssh(let remote): return remote.description
        }
    }

    /// The `scheme` of `scheme://...` (RFC 3986 letters), or nil.
    static func scheme(of text: String) -> String? {
        guard let range = text.range(of: "://") else { return nil }
        let scheme = text[..<range.lowerBound]
        guard let first = scheme.unicodeScalars.first, first.isASCIILetter,
            scheme.unicodeScalars.allSatisfy({ $0.isASCIILetter || $0.isASCIIDigit || "+-.".unicodeScalars.contains($0) })
        else { return nil }
        return String(scheme)
    }
}

/// The parts of `ssh://[user@]host[:port][/socket]`. nil parts are left to ssh (user, port:
/// its own configuration) or to the remote tcpgw (socket: its default socket path there).
public struct SSHGatewayAddress: Equatable, Sendable, CustomStringConvertible {
    public var user: String?
    /// Without brackets: `::1` for `ssh://[::1]`.
    public var host: String
    public var port: Int?
    /// Absolute; nil means the remote gateway's default socket.
    public var socketPath: String?

    public init(user: String? = nil, host: String, port: Int? = nil, socketPath: String? = nil) {
        self.user = user
        self.host = host
        self.port = port
        self.socketPath = socketPath
    }

    public var description: String {
        let who = user.map { "\($0)@" } ?? ""
        let name = host.contains(":") ? "[\(host)]" : host
        return "ssh://\(who)\(name)\(port.map { ":\($0)" } ?? "")\(socketPath ?? "")"
    }

    /// Parses what follows `ssh://`. Every part is checked strictly: these words end up in an
    /// ssh command line, where a host such as `-oProxyCommand=...` would be an option.
    init(parsing rest: String) throws(GatewayAddressError) {
        let whole = "ssh://" + rest
        for scalar in rest.unicodeScalars {
            switch scalar {
            case "\0": throw GatewayAddressError("\(GatewayAddressError.quoted(whole)): contains a NUL byte")
            case "%":
                throw GatewayAddressError(
                    "\(GatewayAddressError.quoted(whole)): percent-escapes are not supported; write the characters themselves")
            case "?", "#":
                throw GatewayAddressError("\(GatewayAddressError.quoted(whole)): '\(scalar)' (a URL query or fragment) is not supported")
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    throw GatewayAddressError("\(GatewayAddressError.quoted(whole)): contains a control character")
                }
            }
        }
        let authority: Substring
        let path: Substring?
        if let slash = rest.firstIndex(of: "/") {
            authority = rest[..<slash]
            path = rest[slash...]
        } else {
            authority = rest[...]
            path = nil
        }
        var hostPort = authority
        if let at = authority.firstIndex(of: "@") {
            let name = authority[..<at]
            hostPort = authority[authority.index(after: at)...]
            guard !hostPort.contains("@") else { throw GatewayAddressError("\(whole): more than one '@'") }
            guard !name.isEmpty else { throw GatewayAddressError("\(whole): the user name before '@' is empty") }
            guard SSHGatewayAddress.isSafeWord(name) else {
                throw GatewayAddressError(
                    "\(whole): the user name '\(name)' may hold only letters, digits, '.', '_' and '-', and may not start with '-'")
            }
            user = String(name)
        } else {
            user = nil
        }
        var portText: Substring?
        if hostPort.hasPrefix("[") {
            guard let close = hostPort.firstIndex(of: "]") else {
                throw GatewayAddressError("\(whole): '[' without its ']' around an IPv6 address")
            }
            let literal = hostPort[hostPort.index(after: hostPort.startIndex)..<close]
            guard SSHGatewayAddress.isIPv6Literal(String(literal)) else {
                throw GatewayAddressError("\(whole): '[\(literal)]' is not an IPv6 address")
            }
            host = String(literal)
            let after = hostPort[hostPort.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw GatewayAddressError("\(whole): '\(after)' after ']' (expected ':PORT')") }
                portText = after.dropFirst()
            }
        } else {
            var name = hostPort
            if let colon = hostPort.firstIndex(of: ":") {
                name = hostPort[..<colon]
                let after = hostPort[hostPort.index(after: colon)...]
                guard !after.contains(":") else {
                    throw GatewayAddressError("\(whole): an IPv6 address must be in brackets, as in ssh://[::1]")
                }
                portText = after
            }
            guard !name.isEmpty else { throw GatewayAddressError("\(whole): the host is empty") }
            guard SSHGatewayAddress.isSafeWord(name), name.utf8.count <= 253 else {
                throw GatewayAddressError(
                    "\(whole): the host '\(name)' may hold only letters, digits, '.', '_' and '-', and may not start with '-'")
            }
            host = String(name)
        }
        if let portText {
            guard !portText.isEmpty else { throw GatewayAddressError("\(whole): the port after ':' is empty") }
            guard portText.utf8.count <= 5, portText.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                let number = Int(portText), (1...65535).contains(number)
            else { throw GatewayAddressError("\(whole): the port '\(portText)' is not a number from 1 to 65535") }
            port = number
        } else {
            port = nil
        }
        if let path {
            guard path != "/" else {
                throw GatewayAddressError("\(whole): the socket path '/' is a directory; leave the '/' out for the remote gateway's default socket")
            }
            if let problem = SocketPathOwner.problem(with: String(path)) { throw GatewayAddressError("\(whole): \(problem)") }
            socketPath = String(path)
        } else {
            socketPath = nil
        }
    }

    /// Letters, digits, `.`, `_`, `-`; not empty and not starting with `-` (an ssh option).
    static func isSafeWord(_ word: Substring) -> Bool {
        guard let first = word.utf8.first, first != UInt8(ascii: "-") else { return false }
        return word.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2E || c == 0x5F || c == 0x2D
        }
    }

    static func isIPv6Literal(_ text: String) -> Bool {
        var storage = in6_addr()
        return inet_pton(AF_INET6, text, &storage) == 1
    }
}

public struct GatewayAddressError: Error, Equatable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }

    /// Text that may hold control characters, shown escaped (it goes to a terminal).
    static func quoted(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            if scalar.value < 0x20 || scalar.value == 0x7F {
                out += String(format: "\\x%02x", scalar.value)
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}

extension Unicode.Scalar {
    fileprivate var isASCIILetter: Bool { (0x41...0x5A).contains(value) || (0x61...0x7A).contains(value) }
    fileprivate var isASCIIDigit: Bool { (0x30...0x39).contains(value) }
}
