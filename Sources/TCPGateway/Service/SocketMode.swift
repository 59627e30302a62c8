/// The permission bits of the gateway's socket file (`--socket-mode`, contract §9), written
/// in octal as `chmod` takes them: `0600`, `0660`, `660`.
public struct SocketMode: Sendable, Equatable, CustomStringConvertible {
    public let bits: UInt32

    public static let `default` = SocketMode(validBits: 0o600)

    private init(validBits: UInt32) {
        bits = validBits
    }

    /// Parses an octal mode; what is not one (or has bits beyond 0777: setuid, sticky) is an
    /// error whose message says why.
    public init(parsing text: String) throws(SocketModeError) {
        guard !text.isEmpty else { throw SocketModeError("the socket mode is empty; give an octal mode such as 0600") }
        guard text.utf8.count <= 12, text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "7") }) else {
            throw SocketModeError("the socket mode \(text.debugDescription) is not an octal number such as 0600 or 0660")
        }
        guard let value = UInt32(text, radix: 8), value <= 0o777 else {
            throw SocketModeError("the socket mode \(text) is above 0777: only permission bits are allowed")
        }
        bits = value
    }

    /// Four octal digits, as `stat` shows them.
    public var description: String {
        let digits = String(bits, radix: 8)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }
}

public struct SocketModeError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
