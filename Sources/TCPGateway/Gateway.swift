import CNetShim
import Foundation
import JSONRPC
import Logging
import NIOCore
import NIOPosix

/// Settings of one gateway process.
public struct GatewayConfig: Sendable {
    public var socketPath: String
    public var maxMessageBytes = 16 * 1024 * 1024
    /// Answers and events queued for one client above which its flowing handles stop reading.
    public var outboundHighWatermark = 1024 * 1024
    public var maxConnections = 128
    public var maxInFlightRequests = 4096
    /// Bytes accepted by `tcp.send` but not yet written to the kernel, per handle.
    public var maxPendingWriteBytes = 64 * 1024 * 1024
    public var maxRecvLength = 16 * 1024 * 1024
    public var policy = Policy.allowAll

    public init(socketPath: String) {
        self.socketPath = socketPath
    }

    /// `$TCPGW_SOCKET`, else `$XDG_RUNTIME_DIR/tcpgw.sock`, else `/tmp/tcpgw-<uid>.sock`.
    public static func defaultSocketPath(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let path = environment["TCPGW_SOCKET"], !path.isEmpty { return path }
        if let dir = environment["XDG_RUNTIME_DIR"], !dir.isEmpty { return dir + "/tcpgw.sock" }
        return "/tmp/tcpgw-\(getuid()).sock"
    }
}

public struct GatewayStartError: Error, CustomStringConvertible {
    public let description: String
}

/// The daemon: a Unix socket listener, its sessions, and the one event loop that owns them all.
/// Its mutable state is confined to `loop` (start and shutdown hop there), hence the unchecked
/// conformance: the CLI's signal handling calls `shutdown` from another thread.
public final class Gateway: @unchecked Sendable {
    public static let version = "0.1.0"

    public let config: GatewayConfig
    let logger: Logger
    let group: MultiThreadedEventLoopGroup
    let loop: EventLoop
    private(set) var monitor: FDMonitor!
    let catalog: MethodCatalog
    private(set) var dispatcher: Dispatcher!
    private var sessions: [Int: Session] = [:]
    private var nextSessionID = 1
    private var handleCounter: Int64 = 0
    private var listenFD: Int32 = -1
    private var socketFile: SocketPathOwner?  // hardening: removed at exit only while still ours
    let startTime = Date()
    private var stopped = false
    var policy: Policy { config.policy }

    public init(config: GatewayConfig, logger: Logger) throws {
        self.config = config
        self.logger = logger
        self.catalog = try MethodCatalog(json: OpenRPCDocument.json)
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.loop = group.next()
        self.monitor = try FDMonitor(loop: loop)
        self.dispatcher = try Dispatcher(gateway: self)
    }

    /// Prepares the socket path and starts accepting clients. Ready when this returns.
    public func start() throws {
        try loop.submit { try self.startOnLoop() }.wait()
    }

    private func startOnLoop() throws {
        // hardening (SocketPathOwner.swift): probes without blocking, records device and inode.
        let claimed = try SocketPathOwner.listen(at: config.socketPath, backlog: 128, mode: 0o600)
        listenFD = claimed.fd
        socketFile = claimed.owner
        armAccept()
    }

    private func armAccept() {
        guard !stopped else { return }
        monitor.arm(listenFD, for: .read) { [weak self] in self?.acceptClients() }
    }

    private func acceptClients() {
        while !stopped {
            let fd = tcpgw_accept(listenFD, nil)
            if fd == -EMFILE || fd == -ENFILE {
                // Out of descriptors: the listener stays readable, so re-arming now would spin.
                // The client waits in the backlog; try again shortly.
                logger.warning("out of file descriptors; clients wait in the backlog")
                loop.assumeIsolated().scheduleTask(in: .milliseconds(100)) { self.armAccept() }
                return
            }
            if fd < 0 { break }
            if sessions.count >= config.maxConnections {
                logger.warning("refusing a client: \(config.maxConnections) connections already")
                let message = JanssonCodec.serialize(RPCResponse.failure(
                    id: .null, error: .limit("the gateway already serves \(config.maxConnections) connections")))
                _ = (message + [0x0A]).withUnsafeBytes { tcpgw_send_with_fd(fd, $0.baseAddress, $0.count, -1, 1) }
                _ = tcpgw_close(fd)
                continue
            }
            // hardening (ConnectionAdmission.swift): one uid cannot take every connection.
            if let refusal = ConnectionAdmission.refusal(
                fd: fd, sessions: sessions.values, policy: policy, maxConnections: config.maxConnections)
            {
                logger.warning("refusing a client: \(refusal)")
                ConnectionAdmission.refuse(fd, refusal)
                continue
            }
            let session = Session(id: nextSessionID, gateway: self, fd: fd)
            nextSessionID += 1
            sessions[session.id] = session
            logger.debug("client \(session.id) connected (uid \(session.peerUID), pid \(session.peerPID))")
            session.start()
        }
        armAccept()
    }

    func sessionEnded(_ session: Session) {
        sessions[session.id] = nil
        logger.debug("client \(session.id) disconnected")
    }

    func nextHandleID() -> Int64 {
        handleCounter += 1
        return handleCounter
    }

    var sessionCount: Int { sessions.count }
    var handleCount: Int { sessions.values.reduce(0) { $0 + $1.handles.count } }

    /// Stops accepting, closes every handle and client, removes the socket file.
    public func shutdown() {
        try? loop.submit {
            guard !self.stopped else { return }
            self.stopped = true
            if self.listenFD >= 0 {
                self.monitor.remove(self.listenFD)
                _ = tcpgw_close(self.listenFD)
                self.socketFile?.removeIfStillOurs()  // hardening: not a successor's file
            }
            for session in Array(self.sessions.values) { session.closeAll() }
            self.monitor.shutdown()
        }.wait()
        // Give NIO's closes a moment to reach the kernel before the process ends.
        try? group.syncShutdownGracefully()
    }
}

extension Gateway {
    /// The OpenRPC document, exactly as committed in schema/tcpgw.openrpc.json.
    public static var openRPCDocument: String { OpenRPCDocument.json }
}
