import CNetShim
import Foundation
import Logging
import Synchronization

/// Tells a service manager how the gateway is doing, by the sd_notify protocol (contract §9):
/// newline-separated `KEY=VALUE` datagrams sent to the Unix socket named by `NOTIFY_SOCKET`
/// (a path, or `@name` in the abstract namespace). Written against the protocol, without
/// libsystemd. Without `NOTIFY_SOCKET` every call does nothing.
///
/// Immutable after init; sending is one `sendto`, safe from any thread.
public final class ServiceNotifier: Sendable {
    /// A state message waits at most this long for a full receiver; a watchdog ping never waits.
    static let sendTimeoutMS: Int32 = 1000

    let address: String?
    private let fd: Int32
    /// How often the loop pings the watchdog: half of `WATCHDOG_USEC`, when it is meant for us.
    public let watchdogIntervalMS: Int?
    private let logger: Logger
    private let failures = Mutex(0)

    public init(environment: [String: String] = ProcessInfo.processInfo.environment,
                pid: Int32 = getpid(), logger: Logger) {
        self.logger = logger
        var address = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
        if let named = address, !(named.count >= 2 && (named.hasPrefix("/") || named.hasPrefix("@"))) {
            logger.warning("NOTIFY_SOCKET=\(named) is neither an absolute path nor @name; no readiness notifications")
            address = nil
        }
        var fd: Int32 = -1
        if address != nil {
            fd = tcpgw_notify_socket(Self.sendTimeoutMS)
            if fd < 0 {
                logger.warning("cannot open a socket for readiness notifications: \(Errno.message(-fd))")
                address = nil
            }
        }
        self.address = address
        self.fd = fd
        self.watchdogIntervalMS = address == nil ? nil : Self.watchdogInterval(environment: environment, pid: pid, logger: logger)
    }

    deinit {
        if fd >= 0 { _ = tcpgw_close(fd) }
    }

    public var isActive: Bool { address != nil }

    /// Clients can connect (at start-up), or a reload is done.
    public func ready(status: String? = nil) {
        send("READY=1" + (status.map { "\nSTATUS=\($0)" } ?? ""))
    }

    /// A reload (SIGHUP) begins; `ready()` must follow when it is done. The monotonic time lets
    /// the manager tell this reload from an earlier one.
    public func reloading() {
        send("RELOADING=1\nMONOTONIC_USEC=\(tcpgw_monotonic_ns() / 1000)")
    }

    /// Shutting down (SIGTERM/SIGINT).
    public func stopping() {
        send("STOPPING=1")
    }

    /// The loop is alive. Never waits: a ping the manager cannot take is dropped, the next
    /// one comes half an interval later.
    func watchdogPing() {
        send("WATCHDOG=1", nowait: true)
    }

    private func send(_ message: String, nowait: Bool = false) {
        guard let address else { return }
        let bytes = Array(message.utf8)
        let rc = bytes.withUnsafeBytes { tcpgw_notify_send(fd, address, $0.baseAddress, $0.count, nowait ? 1 : 0) }
        guard rc < 0 else { return }
        // A manager that went away must not fill the log: the first failure is a warning.
        let first = failures.withLock { count in
            count += 1
            return count == 1
        }
        let text = "cannot notify \(address) (\(message.prefix(while: { $0 != "\n" }))): \(Errno.message(-rc)) (\(Errno.name(-rc)))"
        if first { logger.warning("\(text)") } else { logger.debug("\(text)") }
    }

    /// Half of `WATCHDOG_USEC` in milliseconds (at least 1), or nil when there is no watchdog
    /// for this process: unset, not a positive number, or `WATCHDOG_PID` naming another process.
    static func watchdogInterval(environment: [String: String], pid: Int32, logger: Logger) -> Int? {
        guard let text = environment["WATCHDOG_USEC"] else { return nil }
        if let owner = environment["WATCHDOG_PID"], !owner.isEmpty, Int32(owner) != pid { return nil }
        guard let usec = UInt64(text), usec > 0 else {
            logger.warning("WATCHDOG_USEC=\(text) is not a positive number of microseconds; no watchdog pings")
            return nil
        }
        return Int(max(1, min(usec / 2 / 1000, UInt64(Int32.max))))
    }
}
