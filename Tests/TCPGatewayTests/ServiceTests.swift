import Foundation
import Logging
import XCTest

@testable import TCPGateway

/// The pure parts of running as a service (contract §9); the integration suite
/// (tests/integration/test_service.py) drives the real binary.
final class SocketModeTests: XCTestCase {
    func testOctalModesParse() throws {
        XCTAssertEqual(try SocketMode(parsing: "0600").bits, 0o600)
        XCTAssertEqual(try SocketMode(parsing: "660").bits, 0o660)
        XCTAssertEqual(try SocketMode(parsing: "0777").bits, 0o777)
        XCTAssertEqual(try SocketMode(parsing: "0").bits, 0)
        XCTAssertEqual(try SocketMode(parsing: "00000666").bits, 0o666)
        XCTAssertEqual(SocketMode.default.bits, 0o600)
        XCTAssertEqual(try SocketMode(parsing: "60").description, "0060")
    }

    func testWhatIsNotAPermissionModeIsRefusedWithAReason() {
        let cases: [(String, String)] = [
            ("", "empty"), ("0800", "octal"), ("abc", "octal"), ("0o660", "octal"), ("-1", "octal"),
            (" 600", "octal"), ("1000", "0777"), ("4755", "0777"), ("1777", "0777"),
            ("7777777777777", "octal"),
        ]
        for (text, reason) in cases {
            XCTAssertThrowsError(try SocketMode(parsing: text), text) { error in
                XCTAssertTrue("\(error)".contains(reason), "\(text): \(error)")
            }
        }
    }
}

final class SocketActivationTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory = "/tmp/tgw-xc-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
    }

    override func tearDown() {
        for name in SocketActivation.variables { unsetenv(name) }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// /proc/PID/environ shows only the environment a process started with (proc(5)), so
    /// that the variables really are gone from the live environment is checked here.
    func testTakeAdoptsTheListenerAndUnsetsTheVariables() throws {
        let path = directory + "/activated.sock"
        let claimed = try SocketPathOwner.listen(at: path, backlog: 4, mode: 0o600)
        defer { close(claimed.fd) }
        setenv("LISTEN_PID", "\(getpid())", 1)
        setenv("LISTEN_FDS", "1", 1)
        setenv("LISTEN_FDNAMES", "tcpgw.socket", 1)
        let inherited = try SocketActivation.take(
            environment: ProcessInfo.processInfo.environment, pid: getpid(), descriptor: claimed.fd)
        XCTAssertEqual(inherited?.fd, claimed.fd)
        XCTAssertEqual(inherited?.path, path)
        for name in SocketActivation.variables {
            XCTAssertNil(getenv(name), "\(name) is still set")
        }
        XCTAssertNotEqual(fcntl(claimed.fd, F_GETFD) & FD_CLOEXEC, 0)
        XCTAssertNotEqual(fcntl(claimed.fd, F_GETFL) & O_NONBLOCK, 0)
    }

    func testVariablesForAnotherProcessAreLeftAlone() throws {
        setenv("LISTEN_PID", "1", 1)
        setenv("LISTEN_FDS", "1", 1)
        let inherited = try SocketActivation.take(
            environment: ProcessInfo.processInfo.environment, pid: getpid(), descriptor: -1)
        XCTAssertNil(inherited)
        XCTAssertEqual(getenv("LISTEN_PID").map { String(cString: $0) }, "1")
        XCTAssertEqual(getenv("LISTEN_FDS").map { String(cString: $0) }, "1")
    }

    func testNoVariablesNoListener() throws {
        XCTAssertNil(try SocketActivation.take(environment: [:], pid: getpid(), descriptor: -1))
        XCTAssertNil(try SocketActivation.take(environment: ["LISTEN_FDS": "1"], pid: getpid(), descriptor: -1))
    }

    func testADescriptorThatIsNotAListeningUnixStreamSocketIsRefused() throws {
        let file = open(directory + "/plain", O_RDWR | O_CREAT, 0o600)
        defer { close(file) }
        let env = ["LISTEN_PID": "\(getpid())", "LISTEN_FDS": "1"]
        XCTAssertThrowsError(try SocketActivation.take(environment: env, pid: getpid(), descriptor: file)) {
            XCTAssertTrue("\($0)".contains("is not a socket"), "\($0)")
        }
        XCTAssertThrowsError(try SocketActivation.take(environment: env, pid: getpid(), descriptor: 987_654)) {
            XCTAssertTrue("\($0)".contains("is not open"), "\($0)")
        }
        var two = env
        two["LISTEN_FDS"] = "2"
        XCTAssertThrowsError(try SocketActivation.take(environment: two, pid: getpid(), descriptor: file)) {
            XCTAssertTrue("\($0)".contains("exactly one"), "\($0)")
        }
    }
}

final class ServiceNotifierTests: XCTestCase {
    private let logger = Logger(label: "test")
    private let pid: Int32 = 4242

    func testWatchdogIsHalfTheInterval() {
        XCTAssertEqual(ServiceNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "400000"], pid: pid, logger: logger), 200)
        XCTAssertEqual(ServiceNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "30000000"], pid: pid, logger: logger), 15000)
        // Below a millisecond still pings, every millisecond.
        XCTAssertEqual(ServiceNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "1"], pid: pid, logger: logger), 1)
        XCTAssertEqual(
            ServiceNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "400000", "WATCHDOG_PID": "4242"], pid: pid, logger: logger), 200)
    }

    func testNoWatchdogForAnotherProcessOrWithoutAnInterval() {
        for env in [
            [:], ["WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"], ["WATCHDOG_USEC": "0"],
            ["WATCHDOG_USEC": "-5"], ["WATCHDOG_USEC": "soon"], ["WATCHDOG_USEC": ""],
        ] {
            XCTAssertNil(ServiceNotifier.watchdogInterval(environment: env, pid: pid, logger: logger), "\(env)")
        }
    }

    func testWithoutNotifySocketNothingIsSent() {
        let notifier = ServiceNotifier(environment: ["WATCHDOG_USEC": "400000"], pid: pid, logger: logger)
        XCTAssertFalse(notifier.isActive)
        XCTAssertNil(notifier.watchdogIntervalMS)
        notifier.ready()  // no socket, no crash
        for bad in ["relative", "@", "/", "x/y"] {
            XCTAssertFalse(ServiceNotifier(environment: ["NOTIFY_SOCKET": bad], pid: pid, logger: logger).isActive, bad)
        }
        XCTAssertTrue(ServiceNotifier(environment: ["NOTIFY_SOCKET": "@x"], pid: pid, logger: logger).isActive)
    }
}
