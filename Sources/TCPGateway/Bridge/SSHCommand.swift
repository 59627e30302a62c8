import Foundation

/// The ssh command line that reaches a remote gateway: `ssh -T -o BatchMode=yes [-p PORT]
/// [-l USER] -- HOST 'tcpgw' bridge [--socket 'PATH']`, as an argv (no local shell runs it).
///
/// `TCPGW_SSH` replaces `ssh`: a program and its options, split into words as a shell would
/// split them (quotes, backslashes), without expansions. `TCPGW_REMOTE_BIN` is the tcpgw
/// program on the remote host (default `tcpgw`, found in the remote PATH).
public enum SSHCommand {
    public static let programVariable = "TCPGW_SSH"
    public static let remoteBinVariable = "TCPGW_REMOTE_BIN"

    public static func argv(for address: SSHGatewayAddress, environment: [String: String]) throws(GatewayAddressError) -> [String] {
        var argv = ["ssh"]
        if let custom = environment[programVariable], !custom.isEmpty {
            argv = try words(custom, name: programVariable)
            guard !argv.isEmpty else { throw GatewayAddressError("\(programVariable) holds no command") }
        }
        var remoteBin = "tcpgw"
        if let custom = environment[remoteBinVariable], !custom.isEmpty {
            guard !custom.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
                throw GatewayAddressError("\(remoteBinVariable) contains a control character")
            }
            remoteBin = custom
        }
        // No terminal (the stream is JSON lines), never a prompt (a bridge has no one to ask).
        argv += ["-T", "-o", "BatchMode=yes"]
        if let port = address.port { argv += ["-p", String(port)] }
        if let user = address.user { argv += ["-l", user] }
        // "--": whatever the host is, ssh reads it as the destination, never as an option.
        argv += ["--", address.host, remoteCommand(bin: remoteBin, socketPath: address.socketPath)]
        return argv
    }

    /// The command the remote user's shell runs. ssh hands the remote side one string, which
    /// that shell splits again: every part we did not write ourselves is quoted.
    public static func remoteCommand(bin: String, socketPath: String?) -> String {
        var command = shellQuote(bin) + " bridge"
        // Without a path the remote tcpgw picks its own default ($TCPGW_SOCKET, $XDG_RUNTIME_DIR...).
        if let socketPath { command += " --socket " + shellQuote(socketPath) }
        return command
    }

    /// `word` for a POSIX shell: as is when it holds only characters no shell treats specially,
    /// else in single quotes (a single quote inside becomes '\'').
    public static func shellQuote(_ word: String) -> String {
        let plain = !word.isEmpty && word.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
                || "/._-+=:,@".utf8.contains(c)
        }
        if plain { return word }
        return "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// Splits `text` into words as a POSIX shell does, with quotes and backslashes and nothing
    /// else: no variables, no globs, no `~`.
    static func words(_ text: String, name: String) throws(GatewayAddressError) -> [String] {
        enum Quote { case none, single, double }
        var words: [String] = []
        var current: [UInt8] = []
        var inWord = false
        var quote = Quote.none
        var escaped = false
        for c in text.utf8 {
            if escaped {
                // In double quotes a backslash escapes only these; elsewhere it stays.
                if quote == .double && !"\"\\$`".utf8.contains(c) { current.append(UInt8(ascii: "\\")) }
                current.append(c)
                escaped = false
                continue
            }
            switch quote {
            case .single:
                if c == UInt8(ascii: "'") { quote = .none } else { current.append(c) }
            case .double:
                if c == UInt8(ascii: "\"") {
                    quote = .none
                } else if c == UInt8(ascii: "\\") {
                    escaped = true
                } else {
                    current.append(c)
                }
            case .none:
                switch c {
                case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\n"):
                    if inWord {
                        words.append(String(decoding: current, as: UTF8.self))
                        current.removeAll()
                        inWord = false
                    }
                case UInt8(ascii: "'"):
                    quote = .single
                    inWord = true
                case UInt8(ascii: "\""):
                    quote = .double
                    inWord = true
                case UInt8(ascii: "\\"):
                    escaped = true
                    inWord = true
                default:
                    current.append(c)
                    inWord = true
                }
            }
        }
        if escaped && quote == .none { throw GatewayAddressError("\(name) ends with a lone backslash") }
        if quote != .none { throw GatewayAddressError("\(name) has an unterminated \(quote == .single ? "single" : "double") quote") }
        if inWord { words.append(String(decoding: current, as: UTF8.self)) }
        return words
    }
}
