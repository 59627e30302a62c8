import CNetShim
import Foundation
import JSONRPC
import Logging

/// Settings of one gateway process.
public struct GatewayConfig: Sendable {
    public var socketPath: String
    // Running as a service (contract §9; Service/).
    /// The socket file's mode, set before `bind`.
    public var socketMode = SocketMode.default
    /// A listener from socket activation, served instead of creating one; its file is the
    /// manager's and never removed. `socketPath` is then its path.
    public var inheritedListener: InheritedListener?
    /// Readiness and watchdog notifications for a service manager.
    public var notifier: ServiceNotifier?
    public var maxMessageBytes = 16 * 1024 * 1024
    /// Answers and events queued for one client above which its flowing handles stop reading.
    public var outboundHighWatermark = 1024 * 1024
    public var maxConnections = 128
    public var maxInFlightRequests = 4096
    /// Bytes accepted by `tcp.send` but not yet written to the kernel, per handle.
    public var maxPendingWriteBytes = 64 * 1024 * 1024
    public var maxRecvLength = 16 * 1024 * 1024
    /// Everything held in memory for all clients together (contract §13).
    public var maxBufferBytes = 512 * 1024 * 1024
    /// Unacknowledged lines a kept session holds above which its flowing handles stop reading (§12).
    public var replayBytes = 8 * 1024 * 1024
    /// The policy and the file it came from (`gateway.info`, SIGHUP reloads).
    public var loadedPolicy = LoadedPolicy.none()
    /// `--audit FILE`: where policy decisions are logged (`-` for stderr); nil for nowhere.
    public var auditPath: String? = nil
    /// The seed of every fault's randomness (`--seed`); nil: a random one, logged at start.
    public var faultSeed: UInt64? = nil

    /// The policy alone, as from no file.
    public var policy: Policy {
        get { loadedPolicy.policy }
        set { loadedPolicy = LoadedPolicy(policy: newValue, source: nil, sha256: nil) }
    }
    /// How long a `tcp.stream` token may wait for its `tcp.attach` (contract §11: 10 s; shorter
    /// only for tests of expiry).
    public var streamTokenLifetimeMS = 10_000
    /// Every relay direction copies through user space instead of splicing (a test knob for
    /// the copy path that faults use).
    public var relayCopyMode = false
    /// How host names are resolved (on resolver threads); tests inject their own.
    public var resolve: ResolveFunction = Resolver.system

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

/// The daemon: a Unix socket listener, its sessions, and the one reactor that owns them all.
/// Its mutable state is confined to the reactor's thread (start runs before that thread
/// exists; shutdown is submitted to it), hence the unchecked conformance: the CLI's signal
/// handling calls `shutdown` from another thread.
public final class Gateway: @unchecked Sendable {
    public static let version = "0.1.0"

    public let config: GatewayConfig
    let logger: Logger
    let reactor: Reactor
    let catalog: MethodCatalog
    let budget: MemoryBudget
    let resolver: Resolver
    /// Outstanding `tcp.stream` tokens (contract §11).
    let streamTokens: StreamTokens
    private(set) var dispatcher: Dispatcher!
    private var sessions: [Int: Session] = [:]
    /// Kept sessions by token (contract §12), until they end.
    var keptSessions: [String: Session] = [:]
    private var nextSessionID = 1
    private var handleCounter: Int64 = 0
    private var listener: ClientListener?
    /// The socket file, removed at exit only while it is still the one this gateway made.
    private var socketFile: SocketPathOwner?
    private var loopThread: Thread?
    private let loopDone = DispatchSemaphore(value: 0)
    let startTime = Date()
    /// Every fault draw derives from this (contract §10: `--seed N` repeats them).
    let faultSeed: UInt64
    private var stopped = false
    /// The policy in force: loop-confined, replaced by `reloadPolicy` (SIGHUP). Sessions read
    /// it at each decision, so new decisions follow a reload and existing handles stay.
    private(set) var loadedPolicy: LoadedPolicy
    var policy: Policy { loadedPolicy.policy }
    let audit: AuditLog?
    /// Where flowing handles read into before the bytes are encoded as tcp.onData (the loop
    /// serves one read at a time, so one buffer serves every handle).
    let readScratch: UnsafeMutableRawBufferPointer
    /// Where clients' requests are read into, likewise shared.
    let clientReadScratch: UnsafeMutableRawBufferPointer

    public init(config: GatewayConfig, logger: Logger) throws {
        self.config = config
        self.logger = logger
        self.catalog = try MethodCatalog(json: OpenRPCDocument.json)
        self.reactor = try Reactor()
        self.budget = MemoryBudget(limit: config.maxBufferBytes)
        self.loadedPolicy = config.loadedPolicy
        self.audit = try config.auditPath.map { try AuditLog(path: $0, logger: logger) }
        self.resolver = Resolver(reactor: reactor, resolve: config.resolve)
        self.faultSeed = config.faultSeed ?? UInt64.random(in: 0...UInt64.max)
        logger.debug("fault seed \(faultSeed) (repeat its draws with --seed \(faultSeed))")
        self.streamTokens = StreamTokens(lifetimeMS: config.streamTokenLifetimeMS)
        self.readScratch = .allocate(byteCount: ConnectionHandle.readChunk, alignment: 16)
        self.clientReadScratch = .allocate(byteCount: 256 * 1024, alignment: 16)
        self.dispatcher = try Dispatcher(gateway: self)
        budget.onChange = { [unowned self] spent in
            if spent { logger.warning("the buffer budget (\(config.maxBufferBytes) bytes) is spent; the largest clients wait") }
            for session in Array(sessions.values) { session.budgetChanged() }
        }
    }

    deinit {
        readScratch.deallocate()
        clientReadScratch.deallocate()
    }

    /// Prepares the socket path and starts accepting clients on the reactor's thread. Ready
    /// (clients can connect) when this returns.
    public func start() throws {
        let listener: ClientListener
        if let inherited = config.inheritedListener {
            // Socket activation: no socket file of ours to claim or remove (socketFile stays nil).
            listener = ClientListener(socket: OwnedFD(adopting: inherited.fd), gateway: self)
        } else {
            // Probes a file already there without blocking, and records the new file's identity.
            let claimed = try SocketPathOwner.listen(at: config.socketPath, backlog: 128, mode: config.socketMode.bits)
            socketFile = claimed.owner
            listener = ClientListener(socket: OwnedFD(adopting: claimed.fd), gateway: self)
        }
        try listener.start()
        self.listener = listener
        let thread = Thread { [self] in
            reactor.run()
            loopDone.signal()
        }
        thread.name = "tcpgw-loop"
        loopThread = thread
        thread.start()
        startServiceNotifications()
    }

    /// A client connected: a session for it, unless the gateway is full.
    /// SO_SNDBUF asked for each client's Unix socket.
    static let clientSendBuffer: Int32 = 1 << 20

    func accepted(_ socket: consuming OwnedFD) {
        guard !stopped else { return }
        // Credentials at connect time pick the client's policy profile for its whole session.
        let credentials = PeerCredentials(socket: socket.raw)
        let refusal: String? =
            sessions.count >= config.maxConnections
            ? "the gateway already serves \(config.maxConnections) connections"
            // One uid cannot take every connection slot.
            : ConnectionAdmission.refusal(
                client: credentials, sessions: sessions.values, policy: policy.effective(for: credentials),
                maxConnections: config.maxConnections)
        if let refusal {
            logger.warning("refusing a client: \(refusal)")
            let line = JanssonCodec.serialize(RPCResponse.failure(id: .null, error: .limit(refusal))) + [0x0A]
            _ = line.withUnsafeBytes { tcpgw_send_with_fd(socket.raw, $0.baseAddress, $0.count, -1, 1) }
            return  // dropping the socket closes it
        }
        // Room for several data lines in the kernel (Linux doubles the value, within
        // net.core.wmem_max): with the default ~208 KiB, two 87 KB tcp.onData lines fill it and
        // the loop waits on the client between them. Measured: flowing data to a Python client
        // 730 -> 855-880 MiB/s. Our own queue and its watermark bound what sits above it.
        _ = tcpgw_setsockopt_int(socket.raw, tcpgw_const_sol_socket(), tcpgw_const_so_sndbuf(), Gateway.clientSendBuffer)
        let session = Session(id: nextSessionID, gateway: self, socket: socket, credentials: credentials)
        nextSessionID += 1
        sessions[session.id] = session
        logger.debug(
            "client \(session.id) connected (uid \(credentials.uid), gid \(credentials.gid), pid \(credentials.pid))")
        do {
            try session.start()
        } catch {
            logger.warning("could not watch client \(session.id): \(error)")
            session.closeAll()
        }
    }

    /// `session` is gone: disconnected, or its connection was handed to a kept session.
    func sessionEnded(_ session: Session, handedOver: Bool = false) {
        sessions[session.id] = nil
        if !handedOver { logger.debug("client \(session.id) disconnected") }
    }

    func nextHandleID() -> Int64 {
        handleCounter += 1
        return handleCounter
    }

    var sessionCount: Int { sessions.count }
    var handleCount: Int { sessions.values.reduce(0) { $0 + $1.handles.count } }

    /// SIGHUP (contract §8): reads the policy file again and, when it loads, makes it the
    /// policy for every decision from now on; a file that does not load keeps the old policy
    /// and the failure says why (it is logged too). Handles already made stay. The file is read
    /// on the calling thread and only the swap runs on the loop, so a slow file never stalls
    /// the clients. Call from any thread but the loop's; returns once the new policy is in force.
    public func reloadPolicy() -> Result<LoadedPolicy, PolicyError> {
        guard let path = config.loadedPolicy.source else {
            logger.notice("SIGHUP: no --policy file, nothing to reload")
            return .success(config.loadedPolicy)
        }
        let loaded: LoadedPolicy
        do {
            loaded = try LoadedPolicy.file(path)
        } catch {
            let failure = (error as? PolicyError) ?? PolicyError("\(path): \(error)")
            logger.error("policy reload failed, keeping the old policy: \(failure.description)")
            return .failure(failure)
        }
        let swapped = DispatchSemaphore(value: 0)
        reactor.submit { [self] in
            loadedPolicy = loaded
            swapped.signal()
        }
        // Bounded: a loop that has already stopped never runs the swap.
        _ = swapped.wait(timeout: .now() + 5)
        logger.notice("policy reloaded from \(path) (sha256 \(loaded.sha256 ?? "-"))")
        return .success(loaded)
    }

    /// Stops accepting, closes every handle and client, removes the socket file, and stops
    /// the loop. Callable from any thread.
    public func shutdown() {
        reactor.submit { [self] in
            guard !stopped else { return }
            stopped = true
            if let listener {
                listener.close()
                _ = socketFile?.removeIfStillOurs()  // never a successor's file
                self.listener = nil
            }
            for session in Array(sessions.values) { session.closeAll() }
            resolver.stop()
            reactor.stop()
        }
        if loopThread != nil { loopDone.wait() }
    }
}

/// The gateway's Unix listening socket, accepting clients as they come.
final class ClientListener: ReactorSource {
    private var socket: OwnedFD?
    private var watch = IOWatch()
    unowned let gateway: Gateway

    init(socket: consuming OwnedFD, gateway: Gateway) {
        self.socket = consume socket
        self.gateway = gateway
    }

    func start() throws {
        guard let fd = socket?.raw else { return }
        try watch.set(.read, fd: fd, source: self, reactor: gateway.reactor)
    }

    func ready(_ events: IOEvents) {
        guard let fd = socket?.raw else { return }
        // Bounded per wake-up, so a flood of clients cannot starve the handles' I/O.
        for _ in 0..<256 {
            let client = tcpgw_accept(fd, nil)
            if client == -EMFILE || client == -ENFILE {
                // Out of descriptors: the listener stays readable, so watching it now would spin.
                // The client waits in the backlog; try again shortly.
                gateway.logger.warning("out of file descriptors; clients wait in the backlog")
                try? watch.set([], fd: fd, source: self, reactor: gateway.reactor)
                gateway.reactor.schedule(in: AcceptStateMachine.retryMilliseconds) { [weak self] in
                    guard let self, let fd = self.socket?.raw else { return }
                    try? self.watch.set(.read, fd: fd, source: self, reactor: self.gateway.reactor)
                }
                return
            }
            if client < 0 { return }
            gateway.accepted(OwnedFD(adopting: client))
        }
    }

    func close() {
        watch.cancel(reactor: gateway.reactor)
        socket = nil
    }
}

extension Gateway {
    /// The OpenRPC document, exactly as committed in schema/tcpgw.openrpc.json.
    public static var openRPCDocument: String { OpenRPCDocument.json }
}
