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
        subcommands: [Serve.self, Call.self, Schema.self, Bridge.self],
        defaultSubcommand: nil
    )
}

struct SocketOption: ParsableArguments {
    @Option(name: .long, help: "The gateway's Unix socket path (default: see `tcpgw --help`).")
    var socket: String?

    var path: String { socket ?? GatewayConfig.defaultSocketPath() }

    /// The path to connect to; a path no Unix socket address can hold is a clear error.
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
            Handles belong to the connection that made them, so they end when `call` exits.
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
        let path = try socketOption.pathToConnect()
        let fd = tcpgw_unix_connect(path)
        guard fd >= 0 else {
            FileHandle.standardError.write(Data("tcpgw: cannot connect to \(path): \(String(cString: strerror(-fd)))\n".utf8))
            throw ExitCode(2)
        }
        defer { close(fd) }
        var line = JanssonCodec.serialize(.object(request))
        line.append(0x0A)
        guard writeAll(fd, line) else {
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
            if n <= 0 {
                FileHandle.standardError.write(Data("tcpgw: the gateway closed the connection without answering\n".utf8))
                throw ExitCode(2)
            }
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

            With --keep MS the session survives a dropped gateway connection: the bridge asks \
            for session.keep with a grace of MS, and after a drop reconnects with backoff within \
            the grace and resumes, resending what the gateway had not read, so the stdin/stdout \
            client notices nothing. It exits 1 when the session cannot be resumed in time.
            """)

    @OptionGroup var socketOption: SocketOption

    @Option(help: "Keep the session through dropped connections for this many milliseconds (1..3600000).")
    var keep: Int?

    func validate() throws {
        if let keep, !(1...3_600_000).contains(keep) {
            throw ValidationError("--keep must be between 1 and 3600000 (milliseconds)")
        }
    }

    func run() throws {
        let path = try socketOption.pathToConnect()
        if let keep {
            let status = KeptBridge(transport: UnixSocketTransport(path: path), grace: keep).run()
            Foundation.exit(status)
        }
        let fd = tcpgw_unix_connect(path)
        guard fd >= 0 else {
            FileHandle.standardError.write(Data("tcpgw: cannot connect to \(path): \(String(cString: strerror(-fd)))\n".utf8))
            throw ExitCode(2)
        }
        signal(SIGPIPE, SIG_IGN)
        let upstream = Thread {
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = read(0, &buffer, buffer.count)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                if !writeAll(fd, Array(buffer[0..<n])) { break }
            }
            _ = tcpgw_shutdown(fd, 1)
        }
        upstream.start()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            if !writeAll(1, Array(buffer[0..<n])) { break }
        }
        Foundation.exit(0)
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
