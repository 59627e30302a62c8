import ArgumentParser
import CNetShim
import Foundation
import JSONRPC
import Logging
import TCPGateway

@main
struct TCPGW: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tcpgw",
        abstract: "A TCP socket gateway: real TCP sockets, driven as JSON-RPC 2.0 over a Unix socket.",
        discussion: """
            Clients connect to the gateway's Unix socket and send newline-delimited JSON-RPC 2.0 \
            requests such as {"jsonrpc":"2.0","id":1,"method":"tcp.createClient",\
            "params":{"sockaddr":{"addr":"127.0.0.1","port":6379}}}. The gateway holds the real \
            sockets under integer handles and pushes tcp.onAccept/onConnect/onData/onEnd/onClose \
            notifications. `tcpgw schema` prints every method (OpenRPC).

            Default socket: $TCPGW_SOCKET, else $XDG_RUNTIME_DIR/tcpgw.sock, else /tmp/tcpgw-<uid>.sock.
            """,
        version: Gateway.version,
        subcommands: [Serve.self, Call.self, Schema.self, Bridge.self, Attach.self],
        defaultSubcommand: nil
    )
}

struct SocketOption: ParsableArguments {
    @Option(name: .long, help: "The gateway's Unix socket path (default: see `tcpgw --help`).")
    var socket: String?

    var path: String { socket ?? GatewayConfig.defaultSocketPath() }

    /// The path to connect to (attach needs a plain Unix socket, no ssh://); a path no Unix
    /// socket address can hold is a clear error.
    func pathToConnect() throws -> String {
        let path = self.path
        if let problem = SocketPathOwner.problem(with: path) {
            FileHandle.standardError.write(Data("tcpgw: \(problem)\n".utf8))
            throw ExitCode(2)
        }
        return path
    }
}

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the gateway in the foreground until SIGTERM or SIGINT (SIGHUP reloads the policy).",
        discussion: """
            Listens on the Unix socket (mode 0600, or --socket-mode). A stale socket file is replaced; a live one \
            (another gateway answering) or a file that is not a socket is refused. Prints one line \
            naming the socket when ready. On SIGTERM/SIGINT it stops accepting, closes every \
            handle, removes the socket file and exits 0. On SIGHUP it re-reads the --policy file \
            (a file that does not load keeps the old policy; the log says why).

            As a service: --socket-mode sets the file's mode; socket activation (LISTEN_PID, \
            LISTEN_FDS=1) serves the listening socket in descriptor 3 and never removes it; with \
            NOTIFY_SOCKET set it sends READY=1, RELOADING=1 (SIGHUP), STOPPING=1 and WATCHDOG=1 \
            (every half of WATCHDOG_USEC). Units: contrib/systemd.
            """)

    @OptionGroup var socketOption: SocketOption

    @Option(help: "A JSON policy file limiting what clients may connect to, listen on and do.")
    var policy: String?

    @Option(help: "Write one JSON line per policy decision to this file (appended; `-` for stderr).")
    var audit: String?

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "notice"

    @Option(help: "Longest accepted request line, in bytes.")
    var maxMessageBytes: Int = 16 * 1024 * 1024

    @Option(help: "Most clients connected at once.")
    var maxConnections: Int = 128

    @Option(help: "Bytes queued for a slow client above which its flowing handles stop reading.")
    var outboundHighWatermark: Int = 1024 * 1024

    @Option(help: "Bytes held in memory for all clients together (lines, queued sends, answers and events).")
    var maxBufferBytes: Int = 512 * 1024 * 1024

    @Option(help: "Unacknowledged bytes a kept session (session.keep) holds for replay above which its flowing handles stop reading.")
    var replayBytes: Int = 8 * 1024 * 1024

    @Option(help: "The socket file's mode, in octal (default 0600); set before bind. Ignored under socket activation.")
    var socketMode: String?

    @Option(help: "Seed of every fault's randomness (jitter, slice sizes, toxicity), so runs repeat; default random.")
    var seed: UInt64?

    // Test knobs, hidden from --help: a short stream-token lifetime (expiry tests) and relays
    // that copy through user space instead of splicing (the path faults take).
    @Option(help: .hidden)
    var streamTokenMs: Int = 10_000

    @Option(help: .hidden)
    var relayMode: String = "splice"

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        guard maxMessageBytes >= 1024 else { throw ValidationError("--max-message-bytes must be at least 1024") }
        guard maxConnections >= 1 else { throw ValidationError("--max-connections must be at least 1") }
        guard maxBufferBytes >= 2 * maxMessageBytes else {
            throw ValidationError("--max-buffer-bytes must be at least twice --max-message-bytes (a whole line must fit)")
        }
        guard outboundHighWatermark >= 64 * 1024 else {
            throw ValidationError("--outbound-high-watermark must be at least 65536")
        }
        guard replayBytes >= 64 * 1024 else { throw ValidationError("--replay-bytes must be at least 65536") }
        if let socketMode {
            do { _ = try SocketMode(parsing: socketMode) } catch { throw ValidationError("--socket-mode: \(error)") }
        }
        guard (1...600_000).contains(streamTokenMs) else { throw ValidationError("--stream-token-ms must be 1...600000") }
        guard ["splice", "copy"].contains(relayMode) else { throw ValidationError("--relay-mode must be splice or copy") }
    }

    func run() throws {
        let level = Logger.Level(rawValue: logLevel)!
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "tcpgw")
        var config = GatewayConfig(socketPath: socketOption.path)
        config.maxMessageBytes = maxMessageBytes
        config.maxConnections = maxConnections
        config.outboundHighWatermark = outboundHighWatermark
        config.maxBufferBytes = maxBufferBytes
        config.replayBytes = replayBytes
        config.auditPath = audit
        config.faultSeed = seed

        config.streamTokenLifetimeMS = streamTokenMs
        config.relayCopyMode = relayMode == "copy"
        if let policy {
            do {
                config.loadedPolicy = try LoadedPolicy.file(policy)
            } catch {
                FileHandle.standardError.write(Data("tcpgw: \(error)\n".utf8))
                throw ExitCode(2)
            }
        }
        // Running as a service (contract §9): an inherited listener, readiness notifications.
        if let socketMode { config.socketMode = (try? SocketMode(parsing: socketMode)) ?? .default }
        do {
            if let inherited = try SocketActivation.take() {
                if socketOption.socket != nil || socketMode != nil {
                    logger.notice("socket activation: serving the inherited socket; --socket and --socket-mode do not apply")
                }
                config.socketPath = inherited.path
                config.inheritedListener = inherited
            }
        } catch {
            FileHandle.standardError.write(Data("tcpgw: \(error)\n".utf8))
            throw ExitCode(1)
        }
        // After the activation check: the notifier's socket must not take a free descriptor 3.
        let notifier = ServiceNotifier(logger: logger)
        config.notifier = notifier
        signal(SIGPIPE, SIG_IGN)
        let descriptorLimit = tcpgw_raise_nofile_limit()
        logger.debug("descriptor limit: \(descriptorLimit)")
        // SIGTERM/SIGINT are blocked before any thread exists, so every thread inherits the
        // mask and the signal waits for the sigwait below, however early it comes.
        var stopSignals = sigset_t()
        sigemptyset(&stopSignals)
        sigaddset(&stopSignals, SIGTERM)
        sigaddset(&stopSignals, SIGINT)
        sigaddset(&stopSignals, SIGHUP)  // policy reload, below
        pthread_sigmask(SIG_BLOCK, &stopSignals, nil)
        let gateway: Gateway
        do {
            gateway = try Gateway(config: config, logger: logger)
            try gateway.start()
        } catch {
            FileHandle.standardError.write(Data("tcpgw: \(error)\n".utf8))
            throw ExitCode(1)
        }
        FileHandle.standardError.write(Data("tcpgw: listening on \(config.socketPath)\n".utf8))
        var received: Int32 = 0
        while true {
            while sigwait(&stopSignals, &received) != 0 {}
            // SIGHUP: re-read the policy (read here, swapped in on the loop); failures are logged.
            guard received == SIGHUP else { break }
            // The manager hears of the reload before it starts and when it is done (§9).
            notifier.reloading()
            _ = gateway.reloadPolicy()
            notifier.ready()
        }
        notifier.stopping()
        logger.info("signal \(received): shutting down")
        gateway.shutdown()
        Foundation.exit(0)
    }
}

struct Call: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send one request to a running gateway and print its answer.",
        discussion: """
            Prints the result as JSON and exits 0, or prints the error object and exits 1 \
            (2 when the gateway cannot be reached). Example:
              tcpgw call tcp.createServer '{"sockaddr":{"addr":"127.0.0.1","port":0}}'
            Handles belong to the connection that made them, so they end when `call` exits. \
            --socket also takes ssh://[user@]host[:port][/socket] (see `tcpgw bridge --help`).
            """)

    @Argument(help: "Method name, e.g. gateway.info or tcp.constants.")
    var method: String

    @Argument(help: "Params as JSON: an object (by name) or an array (by position).")
    var params: String?

    @OptionGroup var socketOption: SocketOption

    func run() throws {
        var request: JSONObject = ["jsonrpc": "2.0", "id": 1, "method": .string(method)]
        if let params {
            do {
                request["params"] = try JanssonCodec.parse(params)
            } catch {
                FileHandle.standardError.write(Data("tcpgw: params are not valid JSON: \(error)\n".utf8))
                throw ExitCode(2)
            }
        }
        // A socket path, or ssh://... (the same link as `tcpgw bridge` uses).
        let link = try connectGateway(socketOption.path)
        var receivedAny = false
        // Over ssh the child is reaped, and why it failed said, on every way out.
        defer {
            link.closeWrite()
            let end = link.finish(receivedAny: receivedAny)
            if let message = end.message { FileHandle.standardError.write(Data("tcpgw: \(message)\n".utf8)) }
        }
        let fd = link.readFD
        var line = JanssonCodec.serialize(.object(request))
        line.append(0x0A)
        guard writeAll(link.writeFD, line) else {
            FileHandle.standardError.write(Data("tcpgw: the gateway closed the connection\n".utf8))
            throw ExitCode(2)
        }
        var pending: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            if let newline = pending.firstIndex(of: 0x0A) {
                let message = Array(pending[..<newline])
                pending.removeFirst(newline + 1)
                guard let value = try? JanssonCodec.parse(message) else { continue }
                if value["id"] == nil { continue }  // an event, not our answer
                if let result = value["result"] {
                    print(JanssonCodec.serializeToString(result))
                    return
                }
                print(JanssonCodec.serializeToString(value["error"] ?? .null))
                throw ExitCode(1)
            }
            let n = read(fd, &chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 {
                FileHandle.standardError.write(Data("tcpgw: the gateway closed the connection without answering\n".utf8))
                throw ExitCode(2)
            }
            receivedAny = true
            pending.append(contentsOf: chunk[0..<n])
        }
    }
}

struct Schema: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the OpenRPC document describing every method and event.")

    func run() throws {
        print(Gateway.openRPCDocument)
    }
}

struct Bridge: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Connect stdin/stdout to the gateway's socket (for shell clients and SSH forwarding).",
        discussion: """
            Copies stdin to the gateway and the gateway's lines to stdout until the gateway \
            closes the connection. When stdin ends, the write side is shut down and the gateway \
            ends the session (closing its handles).

            ADDRESS ssh://[user@]host[:port][/socket] reaches a gateway on another host: the \
            bridge runs `ssh -T -o BatchMode=yes [-p PORT] [-l USER] -- HOST tcpgw bridge \
            [--socket PATH]` and relays through it (no socket: the remote default). \
            $TCPGW_SSH replaces `ssh` (a program and its options, split like shell words, \
            e.g. "ssh -F $HOME/.ssh/lab_config", expanded by your shell: tcpgw expands nothing); \
            $TCPGW_REMOTE_BIN is the remote tcpgw program.

            Descriptor passing (tcp.createByFd, tcp.flyAway) cannot cross stdin/stdout: the \
            bridge answers those calls itself with -32006 and the gateway never sees them.

            Exit status: 0 when the gateway ended the session, 2 when it could not be reached \
            (ssh failed before any answer), 1 when the link broke in the middle.

            With --keep MS the session survives a dropped gateway connection: the bridge asks \
            for session.keep with a grace of MS, and after a drop reconnects with backoff within \
            the grace and resumes, resending what the gateway had not read, so the stdin/stdout \
            client notices nothing. It exits 1 when the session cannot be resumed in time. Over \
            ssh:// every reconnect runs ssh again (each ssh child is reaped, killed if it \
            lingers); the session lives in the remote gateway.

            The kept bridge refuses descriptor passing the same way (-32006, never sent, not \
            one of the counted lines) and exits with the same statuses: 2 when the gateway is \
            never reached (ssh's failure reported as above), 1 when the session is lost. \
            Differences: a drop is not status 1 but a resume, and a last line without its \
            newline is not sent (the gateway drops an unfinished line of a kept session).
            """)

    @Argument(help: "The gateway: a socket path or ssh://[user@]host[:port][/socket] (default: --socket, else the default socket).")
    var address: String?

    @OptionGroup var socketOption: SocketOption

    @Option(help: "Keep the session through dropped connections for this many milliseconds (1..3600000).")
    var keep: Int?

    func validate() throws {
        if let keep, !(1...3_600_000).contains(keep) {
            throw ValidationError("--keep must be between 1 and 3600000 (milliseconds)")
        }
    }

    func run() throws {
        if address != nil && socketOption.socket != nil {
            FileHandle.standardError.write(Data("tcpgw: give the gateway either as ADDRESS or with --socket, not both\n".utf8))
            throw ExitCode(2)
        }
        if let keep {
            let target: GatewayAddress
            do { target = try GatewayAddress(parsing: address ?? socketOption.path) } catch {
                FileHandle.standardError.write(Data("tcpgw: \(error)\n".utf8))
                throw ExitCode(2)
            }
            let transport: BridgeTransport
            switch target {
            case .unixSocket(let path):
                transport = UnixSocketTransport(path: path)
            case .ssh(let remote):
                do { transport = try SSHTransport(remote) } catch {
                    FileHandle.standardError.write(Data("tcpgw: \(error)\n".utf8))
                    throw ExitCode(2)
                }
            }
            signal(SIGPIPE, SIG_IGN)
            Foundation.exit(KeptBridge(transport: transport, grace: keep).run())
        }
        let link = try connectGateway(address ?? socketOption.path)
        let output = BridgeOutput()
        let upstream = Thread { BridgeRelay.clientToGateway(link, output) }
        upstream.start()
        switch BridgeRelay.gatewayToClient(link, output) {
        case .clientGone:
            link.abandon()
            Foundation.exit(0)
        case .linkEnded(let receivedAny):
            output.flush()  // the bridge's own answers still queued
            let end = link.finish(receivedAny: receivedAny)
            if let message = end.message { FileHandle.standardError.write(Data("tcpgw: \(message)\n".utf8)) }
            Foundation.exit(end.status)
        }
    }
}

/// The gateway at `address` (a socket path or ssh://...), connected; a bad address or a failed
/// connect is a message on stderr and exit status 2. SIGPIPE is ignored from here on: a link
/// that breaks is a failed write, not a dead process.
func connectGateway(_ address: String) throws -> GatewayLink {
    do {
        let target = try GatewayAddress(parsing: address)
        signal(SIGPIPE, SIG_IGN)
        return try GatewayLink.connect(target)
    } catch {
        FileHandle.standardError.write(Data("tcpgw: \(error)\n".utf8))
        throw ExitCode(2)
    }
}

func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
    var offset = 0
    while offset < bytes.count {
        let n = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return false }
        offset += n
    }
    return true
}

struct Attach: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Join a handle's raw byte stream (a tcp.stream token) to stdin/stdout.",
        discussion: """
            Connects to the gateway, presents TOKEN with tcp.attach as the first line, and then \
            copies stdin to the TCP connection and the connection to stdout, raw. When stdin ends, \
            the connection's writing side is shut down (the peer sees the end of stream). Once the \
            peer's end of stream has been written to stdout and stdin has ended (or the stream \
            refuses more bytes), attach exits 0, as a half-closed TCP connection ends. A refused token \
            (-32008) or any other error prints the error object on stderr and exits 1 (2 when the \
            gateway cannot be reached). Example:
              # the token comes from the connection that owns the handle, e.g. a shell session:
              tok=$(tcp_stream "$h" | jq -r .token)
              printf 'PING\\r\\n' | tcpgw attach "$tok"
            """)

    @Argument(help: "The token answered by tcp.stream (valid 10 s, single use, same uid).")
    var token: String

    @OptionGroup var socketOption: SocketOption

    func run() throws {
        let path = try socketOption.pathToConnect()
        let fd = tcpgw_unix_connect(path)
        guard fd >= 0 else {
            fail("cannot connect to \(path): \(String(cString: strerror(-fd)))", code: 2)
        }
        signal(SIGPIPE, SIG_IGN)
        // What this side writes is bounded by its own send buffer: larger means fewer wake-ups.
        _ = tcpgw_setsockopt_int(fd, tcpgw_const_sol_socket(), tcpgw_const_so_sndbuf(), 4 << 20)
        let request: JSONValue = [
            "jsonrpc": "2.0", "id": 1, "method": "tcp.attach", "params": ["token": .string(token)],
        ]
        guard writeAll(fd, JanssonCodec.serialize(request) + [0x0A]) else {
            fail("the gateway closed the connection", code: 2)
        }
        // The answer line, then the stream: bytes read past the newline are already the stream's.
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 256 * 1024)
        var newline: Int?
        while newline == nil {
            let n = read(fd, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { fail("the gateway closed the connection without answering", code: 2) }
            pending.append(contentsOf: buffer[0..<n])
            newline = pending.firstIndex(of: 0x0A)
        }
        guard let end = newline, let answer = try? JanssonCodec.parse(Array(pending[..<end])) else {
            fail("the gateway's answer is not JSON", code: 1)
        }
        guard answer["result"] != nil else {
            FileHandle.standardError.write(Data((JanssonCodec.serializeToString(answer["error"] ?? answer) + "\n").utf8))
            throw ExitCode(1)
        }
        let early = Array(pending[(end + 1)...])
        if !early.isEmpty && !writeAll(1, early) { fail("cannot write to stdout: \(String(cString: strerror(errno)))", code: 1) }

        let upstreamDone = DispatchSemaphore(value: 0)
        let upstream = Thread {
            defer { upstreamDone.signal() }
            var chunk = [UInt8](repeating: 0, count: 256 * 1024)
            while true {
                let n = read(0, &chunk, chunk.count)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                // The stream refusing bytes means it is over; the downstream side reports how.
                if !writeAll(fd, Array(chunk[0..<n])) { break }
            }
            _ = tcpgw_shutdown(fd, 1)
        }
        upstream.start()
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n < 0 { fail("the stream failed: \(String(cString: strerror(errno)))", code: 1) }
            if n == 0 { break }
            if !writeAll(1, Array(buffer[0..<n])) { fail("cannot write to stdout: \(String(cString: strerror(errno)))", code: 1) }
        }
        // The peer may still read what stdin brings after its own end (a half-close).
        upstreamDone.wait()
        Foundation.exit(0)
    }

    private func fail(_ message: String, code: Int32) -> Never {
        FileHandle.standardError.write(Data("tcpgw: \(message)\n".utf8))
        Foundation.exit(code)
    }
}
