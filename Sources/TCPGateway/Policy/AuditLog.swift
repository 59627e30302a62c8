import CNetShim
import Foundation
import JSONRPC
import Logging

/// `--audit FILE` (`-` for stderr): one JSON line per policy decision (contract §8), written
/// before the answer it leads to. The file is opened once, for appending. Each line is one
/// write(2) on the loop thread: it is a file (or stderr), so a blocking write of one line is
/// an accepted cost, and one write keeps lines from interleaving with other writers.
/// A failing write never stops the gateway; it is logged once.
final class AuditLog {
    private let fd: Int32
    private let ownsFD: Bool
    private let logger: Logger
    private var reportedFailure = false

    init(path: String, logger: Logger) throws {
        self.logger = logger
        if path == "-" {
            fd = 2
            ownsFD = false
            return
        }
        let opened = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard opened >= 0 else {
            throw GatewayStartError(description: "cannot open audit file \(path): \(String(cString: strerror(errno)))")
        }
        fd = opened
        ownsFD = true
    }

    deinit {
        if ownsFD { _ = close(fd) }
    }

    func record(_ decision: PolicyDecision, client: PeerCredentials, handle: Int64?) {
        let line: JSONValue = [
            "time": .string(RFC3339.format(Date())), "client": client.json, "action": .string(decision.action.rawValue),
            "target": decision.target.json, "decision": decision.allowed ? "allow" : "deny",
            "rule": decision.rule.map { .string($0) } ?? .null, "handle": handle.map { .int($0) } ?? .null,
        ]
        var bytes = JanssonCodec.serialize(line)
        bytes.append(0x0A)
        write(bytes)
    }

    private func write(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 {
                if !reportedFailure {
                    reportedFailure = true
                    let reason = n < 0 ? String(cString: strerror(errno)) : "nothing written"
                    logger.error("cannot write to the audit log: \(reason); further failures are not logged")
                }
                return
            }
            offset += n
        }
    }
}
