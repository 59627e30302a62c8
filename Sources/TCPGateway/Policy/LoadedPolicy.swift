import Foundation
import JSONRPC

/// The policy in force and where it came from, for `gateway.info` and SIGHUP reloads.
public struct LoadedPolicy: Sendable {
    public let policy: Policy
    /// The file's path; nil without `--policy`.
    public let source: String?
    /// SHA-256 of the file's bytes as read; nil without a file.
    public let sha256: String?
    public let loadedAt: Date

    public init(policy: Policy, source: String?, sha256: String?, loadedAt: Date = Date()) {
        self.policy = policy
        self.source = source
        self.sha256 = sha256
        self.loadedAt = loadedAt
    }

    /// No file: everything allowed.
    public static func none() -> LoadedPolicy { LoadedPolicy(policy: .allowAll, source: nil, sha256: nil) }

    /// Reads and checks the file at `path` (the bytes are read once: the digest is of what was
    /// parsed).
    public static func file(_ path: String) throws -> LoadedPolicy {
        let bytes = try Policy.readAll(path)
        return LoadedPolicy(policy: try Policy(bytes: bytes, source: path), source: path, sha256: SHA256.hex(bytes))
    }

    var json: JSONValue {
        [
            "source": source.map { .string($0) } ?? .null, "sha256": sha256.map { .string($0) } ?? .null,
            "loadedAt": .string(RFC3339.format(loadedAt)),
        ]
    }
}

/// RFC 3339 timestamps in UTC with milliseconds: "2026-12-01T09:40:00.123Z".
enum RFC3339 {
    static func format(_ date: Date) -> String {
        let seconds = date.timeIntervalSince1970
        var whole = time_t(seconds.rounded(.down))
        let millis = min(999, Int(((seconds - Double(whole)) * 1000).rounded(.down)))
        var parts = tm()
        gmtime_r(&whole, &parts)
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        let ms = millis < 10 ? "00\(millis)" : millis < 100 ? "0\(millis)" : "\(millis)"
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T"
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)).\(ms)Z"
    }
}
