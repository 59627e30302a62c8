import JSONRPC

/// Finds an object key given twice in one object of a JSON text. The parser keeps the last of
/// duplicated keys, which is right for requests but silently drops a line of a policy file, so
/// the policy loader asks this first (contract §8: a bad policy stops the gateway at start).
enum JSONDuplicateKeys {
    private struct Frame {
        let isObject: Bool
        let path: String
        var keys: Set<String> = []
        var expectingKey = true
        var key = ""
        var index = 0

        /// Where the value now being read sits: `connect`, `profiles[1]`, `profiles[1].connect`.
        var childPath: String {
            if isObject { return path.isEmpty ? key : "\(path).\(key)" }
            return "\(path)[\(index)]"
        }
    }

    /// "duplicate key 'uid' in profiles[0]" (or "duplicate key 'connect'" at the top level) for
    /// the first key that repeats within one object of `bytes`, which must be valid JSON (parse it
    /// first); nil when no key repeats. Keys are compared as decoded ("li\u0073ten" is "listen").
    static func firstDuplicate(in bytes: [UInt8]) -> String? {
        var stack: [Frame] = []
        var i = 0
        while i < bytes.count {
            switch bytes[i] {
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                stack.append(Frame(isObject: bytes[i] == UInt8(ascii: "{"), path: stack.last?.childPath ?? ""))
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                _ = stack.popLast()
            case UInt8(ascii: ","):
                if let top = stack.indices.last {
                    if stack[top].isObject { stack[top].expectingKey = true } else { stack[top].index += 1 }
                }
            case UInt8(ascii: ":"):
                if let top = stack.indices.last { stack[top].expectingKey = false }
            case UInt8(ascii: "\""):
                let start = i
                i += 1
                while i < bytes.count && bytes[i] != UInt8(ascii: "\"") {
                    i += bytes[i] == UInt8(ascii: "\\") ? 2 : 1
                }
                guard let top = stack.indices.last, stack[top].isObject, stack[top].expectingKey, i < bytes.count else {
                    break
                }
                let token = Array(bytes[start...i])
                let key: String
                if case .string(let decoded)? = try? JanssonCodec.parse(token) {
                    key = decoded
                } else {
                    key = String(decoding: token.dropFirst().dropLast(), as: UTF8.self)
                }
                if stack[top].keys.contains(key) {
                    let shown = key.replacingOccurrences(of: "\u{0}", with: "\\u0000")
                    let path = stack[top].path
                    return path.isEmpty ? "duplicate key '\(shown)'" : "duplicate key '\(shown)' in \(path)"
                }
                stack[top].keys.insert(key)
                stack[top].key = key
            default:
                break
            }
            i += 1
        }
        return nil
    }
}
