import Foundation
import JSONRPC
import XCTest

@testable import TCPGateway

/// `tcpgw bridge`'s pieces: gateway addresses, the ssh command line, the filter that refuses
/// descriptor passing, the stdout writer, and the ssh link with real child processes.
final class GatewayAddressTests: XCTestCase {
    private func ssh(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> SSHGatewayAddress? {
        do {
            guard case .ssh(let remote) = try GatewayAddress(parsing: text) else {
                XCTFail("\(text) is not an ssh address", file: file, line: line)
                return nil
            }
            return remote
        } catch {
            XCTFail("\(text): \(error)", file: file, line: line)
            return nil
        }
    }

    /// The message for a refused address; fails the test when it is accepted.
    private func refusal(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            let parsed = try GatewayAddress(parsing: text)
            XCTFail("\(text.debugDescription) was accepted as \(parsed)", file: file, line: line)
            return ""
        } catch {
            return error.description
        }
    }

    func testFullAddress() {
        XCTAssertEqual(
            ssh("ssh://alice@gw.example.org:2222/run/user/1000/tcpgw.sock"),
            SSHGatewayAddress(user: "alice", host: "gw.example.org", port: 2222, socketPath: "/run/user/1000/tcpgw.sock"))
    }

    func testOptionalParts() {
        XCTAssertEqual(ssh("ssh://localhost"), SSHGatewayAddress(host: "localhost"))
        XCTAssertEqual(ssh("ssh://localhost:22"), SSHGatewayAddress(host: "localhost", port: 22))
        XCTAssertEqual(ssh("ssh://bob@h"), SSHGatewayAddress(user: "bob", host: "h"))
        XCTAssertEqual(ssh("ssh://h/tmp/gw.sock"), SSHGatewayAddress(host: "h", socketPath: "/tmp/gw.sock"))
        XCTAssertEqual(ssh("ssh://127.0.0.1:65535"), SSHGatewayAddress(host: "127.0.0.1", port: 65535))
        XCTAssertEqual(ssh("ssh://h:1")?.port, 1)
        XCTAssertEqual(ssh("SSH://h")?.host, "h", "the scheme is case-insensitive, as URL schemes are")
        XCTAssertEqual(ssh("ssh://u_1.x-y@h_1.x-y")?.user, "u_1.x-y")
        XCTAssertEqual(ssh("ssh://h/dir with space/it's.sock")?.socketPath, "/dir with space/it's.sock")
    }

    func testIPv6InBrackets() {
        XCTAssertEqual(ssh("ssh://[::1]"), SSHGatewayAddress(host: "::1"))
        XCTAssertEqual(ssh("ssh://me@[::1]:2200/s.sock"), SSHGatewayAddress(user: "me", host: "::1", port: 2200, socketPath: "/s.sock"))
        XCTAssertEqual(ssh("ssh://[2001:db8::7]:22")?.host, "2001:db8::7")
        XCTAssertEqual(ssh("ssh://[::ffff:127.0.0.1]")?.host, "::ffff:127.0.0.1")
    }

    func testDescriptionRoundTrips() {
        for text in ["ssh://h", "ssh://u@h:2/p.sock", "ssh://[::1]:22", "ssh://u@[::1]/x"] {
            XCTAssertEqual(ssh(text)?.description, text)
            XCTAssertEqual(try GatewayAddress(parsing: text).description, text)
        }
    }

    func testSocketPaths() throws {
        XCTAssertEqual(try GatewayAddress(parsing: "/tmp/gw.sock"), .unixSocket("/tmp/gw.sock"))
        XCTAssertEqual(try GatewayAddress(parsing: "relative.sock"), .unixSocket("relative.sock"))
        XCTAssertEqual(try GatewayAddress(parsing: "/tmp/a://b"), .unixSocket("/tmp/a://b"), "not a scheme: starts with '/'")
        XCTAssertTrue(refusal("").contains("empty"))
        XCTAssertTrue(refusal("/tmp/a\0b").contains("NUL"))
        XCTAssertTrue(refusal("/" + String(repeating: "x", count: 200)).contains("at most"))
    }

    func testOtherSchemesRefused() {
        XCTAssertTrue(refusal("tcp://127.0.0.1:1").contains("unsupported address 'tcp://...'"))
        XCTAssertTrue(refusal("unix:///tmp/x").contains("unsupported"))
    }

    func testMalformedHostAndUser() {
        XCTAssertTrue(refusal("ssh://").contains("the host is empty"))
        XCTAssertTrue(refusal("ssh:///tmp/x.sock").contains("the host is empty"))
        XCTAssertTrue(refusal("ssh://u@").contains("the host is empty"))
        XCTAssertTrue(refusal("ssh://:22").contains("the host is empty"))
        XCTAssertTrue(refusal("ssh://@h").contains("user name before '@' is empty"))
        XCTAssertTrue(refusal("ssh://a@b@c").contains("more than one '@'"))
        // Words that would be ssh options, or shell syntax.
        XCTAssertTrue(refusal("ssh://-oProxyCommand=touch%20x").contains("percent"))
        XCTAssertTrue(refusal("ssh://-oProxyCommand=x").contains("may not start with '-'"))
        XCTAssertTrue(refusal("ssh://-l@h").contains("user name '-l'"))
        XCTAssertTrue(refusal("ssh://h;rm").contains("the host 'h;rm'"))
        XCTAssertTrue(refusal("ssh://u$(id)@h").contains("user name"))
        XCTAssertTrue(refusal("ssh://h o").contains("the host 'h o'"))
        XCTAssertTrue(refusal("ssh://hôst").contains("the host"))
        XCTAssertTrue(refusal("ssh://" + String(repeating: "a", count: 254)).contains("the host"))
    }

    func testMalformedIPv6() {
        XCTAssertTrue(refusal("ssh://::1").contains("must be in brackets"))
        XCTAssertTrue(refusal("ssh://fe80::1:22").contains("must be in brackets"))
        XCTAssertTrue(refusal("ssh://[::1").contains("without its ']'"))
        XCTAssertTrue(refusal("ssh://[nothex]").contains("'[nothex]' is not an IPv6 address"))
        XCTAssertTrue(refusal("ssh://[]").contains("is not an IPv6 address"))
        XCTAssertTrue(refusal("ssh://[127.0.0.1]").contains("is not an IPv6 address"))
        XCTAssertTrue(refusal("ssh://[::1]x").contains("expected ':PORT'"))
        XCTAssertTrue(refusal("ssh://[::1]:").contains("port after ':' is empty"))
    }

    func testMalformedPort() {
        XCTAssertTrue(refusal("ssh://h:").contains("port after ':' is empty"))
        for bad in ["0", "65536", "99999", "+22", "-1", "22a", "0x16", "222222", " 22", "２２"] {
            let message = refusal("ssh://h:\(bad)")
            XCTAssertTrue(message.contains("port") || message.contains("host"), "\(bad): \(message)")
        }
        XCTAssertTrue(refusal("ssh://h:70000").contains("the port '70000' is not a number from 1 to 65535"))
    }

    func testForbiddenCharacters() {
        XCTAssertTrue(refusal("ssh://h%41").contains("percent-escapes are not supported"))
        XCTAssertTrue(refusal("ssh://h/a%20b.sock").contains("percent-escapes"))
        XCTAssertTrue(refusal("ssh://h\0x").contains("NUL"))
        XCTAssertTrue(refusal("ssh://h/x\0y").contains("NUL"))
        XCTAssertTrue(refusal("ssh://h/x\ny").contains("control character"))
        XCTAssertTrue(refusal("ssh://h\u{7F}").contains("control character"))
        XCTAssertTrue(refusal("ssh://h/x?y").contains("query or fragment"))
        XCTAssertTrue(refusal("ssh://h#f").contains("query or fragment"))
        // Control characters are shown escaped in the message (it goes to a terminal).
        XCTAssertFalse(refusal("ssh://h/x\u{1B}[31m").contains("\u{1B}"))
    }

    func testMalformedSocketPath() {
        XCTAssertTrue(refusal("ssh://h/").contains("leave the '/' out"))
        XCTAssertTrue(refusal("ssh://h/" + String(repeating: "p", count: 120)).contains("at most"))
    }
}

final class SSHCommandTests: XCTestCase {
    func testDefaultCommand() throws {
        let argv = try SSHCommand.argv(for: SSHGatewayAddress(host: "gw"), environment: [:])
        XCTAssertEqual(argv, ["ssh", "-T", "-o", "BatchMode=yes", "--", "gw", "tcpgw bridge"])
    }

    func testEveryPart() throws {
        let address = SSHGatewayAddress(user: "alice", host: "::1", port: 2222, socketPath: "/run/tcpgw.sock")
        let argv = try SSHCommand.argv(for: address, environment: [:])
        XCTAssertEqual(
            argv, ["ssh", "-T", "-o", "BatchMode=yes", "-p", "2222", "-l", "alice", "--", "::1", "tcpgw bridge --socket /run/tcpgw.sock"])
    }

    func testEnvironmentOverrides() throws {
        let env = ["TCPGW_SSH": "/opt/ssh -F '/tmp/my config' -o \"IdentityFile=/k ey\"", "TCPGW_REMOTE_BIN": "/opt/tcp gw/bin/tcpgw"]
        let argv = try SSHCommand.argv(for: SSHGatewayAddress(host: "h", socketPath: "/s"), environment: env)
        XCTAssertEqual(
            argv,
            ["/opt/ssh", "-F", "/tmp/my config", "-o", "IdentityFile=/k ey", "-T", "-o", "BatchMode=yes", "--", "h",
             "'/opt/tcp gw/bin/tcpgw' bridge --socket /s"])
        // Empty variables count as unset, as TCPGW_SOCKET does.
        XCTAssertEqual(try SSHCommand.argv(for: SSHGatewayAddress(host: "h"), environment: ["TCPGW_SSH": "", "TCPGW_REMOTE_BIN": ""]).first, "ssh")
    }

    func testBadEnvironment() {
        func message(_ env: [String: String]) -> String {
            do {
                _ = try SSHCommand.argv(for: SSHGatewayAddress(host: "h"), environment: env)
                XCTFail("accepted \(env)")
                return ""
            } catch { return error.description }
        }
        XCTAssertTrue(message(["TCPGW_SSH": "   "]).contains("TCPGW_SSH holds no command"))
        XCTAssertTrue(message(["TCPGW_SSH": "ssh -F 'x"]).contains("unterminated single quote"))
        XCTAssertTrue(message(["TCPGW_SSH": "ssh \"x"]).contains("unterminated double quote"))
        XCTAssertTrue(message(["TCPGW_SSH": "ssh x\\"]).contains("lone backslash"))
        XCTAssertTrue(message(["TCPGW_REMOTE_BIN": "tcpgw\nrm"]).contains("control character"))
    }

    func testWords() throws {
        XCTAssertEqual(try SSHCommand.words("  a\tb\n c  ", name: "X"), ["a", "b", "c"])
        XCTAssertEqual(try SSHCommand.words("a'b c'd", name: "X"), ["ab cd"])
        XCTAssertEqual(try SSHCommand.words("'' \"\"", name: "X"), ["", ""])
        XCTAssertEqual(try SSHCommand.words(#"a\ b \'c "d\"e\n$HOME" ~"#, name: "X"), ["a b", "'c", #"d"e\n$HOME"#, "~"])
        XCTAssertEqual(try SSHCommand.words("", name: "X"), [])
    }

    /// The remote command survives a real POSIX shell unchanged, however odd the parts.
    func testQuotingThroughARealShell() throws {
        let odd = ["plain", "with space", "it's", "'", "''", "$(touch /tmp/tcpgw-never)", "`id`", "a\"b", "\\", "*", "~", "-n", "é", "a;b|c&d"]
        for word in odd {
            let output = try run("/bin/sh", ["-c", "printf '%s' " + SSHCommand.shellQuote(word)])
            XCTAssertEqual(output, word)
        }
        let command = SSHCommand.remoteCommand(bin: "/bin/echo", socketPath: "/tmp/it's here/$x.sock")
        XCTAssertEqual(try run("/bin/sh", ["-c", command]), "bridge --socket /tmp/it's here/$x.sock\n")
        XCTAssertFalse(FileManager.default.fileExists(atPath: "/tmp/tcpgw-never"))
    }

    private func run(_ program: String, _ args: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = args
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }
}

final class BridgeRequestFilterTests: XCTestCase {
    private func feed(_ filter: inout BridgeRequestFilter, _ text: String) -> BridgeRequestFilter.Output {
        Array(text.utf8).withUnsafeBytes { filter.feed($0) }
    }

    private func answers(_ out: BridgeRequestFilter.Output) throws -> [JSONValue] {
        try out.toClient.map { line in
            XCTAssertEqual(line.last, 0x0A)
            XCTAssertEqual(line.filter { $0 == 0x0A }.count, 1, "one line")
            return try JanssonCodec.parse(Array(line.dropLast()))
        }
    }

    func testOrdinaryLinesPassUnchanged() {
        var filter = BridgeRequestFilter()
        let text = #"{"jsonrpc":"2.0","id":1,"method":"tcp.list"}"# + "\n\n" + #"{"id":2,"method":"tcp.send","params":[3,"tcp.flyAway is only data"]}"# + "\n"
        let out = feed(&filter, text)
        XCTAssertEqual(String(decoding: out.toGateway, as: UTF8.self), text)
        XCTAssertEqual(out.toClient, [])
        XCTAssertEqual(out.notices, [])
    }

    /// Any split of the input into reads gives the same bytes to the gateway and the same answers.
    func testSplitsAnywhere() throws {
        let lines = [
            #"{"jsonrpc":"2.0","id":1,"method":"tcp.list"}"#,
            #"{"jsonrpc":"2.0","id":2,"method":"tcp.flyAway","params":{"handle":4}}"#,
            #"{"jsonrpc":"2.0","id":3,"method":"tcp.send","params":{"handle":4,"data":"x\u0041y"}}"#,
            #"{"jsonrpc":"2.0","id":"c","method":"tcp.createByFd"}"#,
            "not json flyAway",
            #"{"jsonrpc":"2.0","id":5,"method":"gateway.info"}"#,
        ]
        let input = Array(lines.joined(separator: "\n").utf8) + [0x0A]
        let expected = Array([lines[0], lines[2], lines[4], lines[5]].joined(separator: "\n").utf8) + [0x0A]
        var rng = SplitMix64(seed: 0x5EED_0B1D)
        for round in 0..<200 {
            var filter = BridgeRequestFilter()
            var gateway: [UInt8] = []
            var client: [[UInt8]] = []
            var offset = 0
            while offset < input.count {
                let size = round == 0 ? 1 : round == 1 ? input.count : Int.random(in: 1...200, using: &rng)
                let end = min(input.count, offset + size)
                let out = input[offset..<end].withUnsafeBytes { filter.feed($0) }
                gateway += out.toGateway
                client += out.toClient
                offset = end
            }
            XCTAssertEqual(filter.finish(), BridgeRequestFilter.Output())
            XCTAssertEqual(gateway, expected, "round \(round)")
            XCTAssertEqual(client.count, 2, "round \(round)")
        }
    }

    func testFlyAwayRequestAnsweredByTheBridge() throws {
        var filter = BridgeRequestFilter()
        let out = feed(&filter, #"{"jsonrpc":"2.0","id":7,"method":"tcp.flyAway","params":{"handle":3}}"# + "\n")
        XCTAssertEqual(out.toGateway, [], "the gateway never sees it: the socket stays there")
        let answer = try XCTUnwrap(answers(out).first)
        XCTAssertEqual(answer["id"], 7)
        XCTAssertEqual(answer["jsonrpc"], "2.0")
        XCTAssertEqual(answer["error"]?["code"], .int(Int64(GatewayErrorCode.descriptor.rawValue)))
        guard case .string(let message)? = answer["error"]?["message"] else { return XCTFail("no message") }
        XCTAssertTrue(message.contains("SCM_RIGHTS") && message.contains("tcpgw bridge") && message.contains("handle stays"), message)
        XCTAssertEqual(answer["error"]?["data"]?["method"], "tcp.flyAway")
    }

    func testCreateByFdAndEscapedNames() throws {
        var filter = BridgeRequestFilter()
        let text = [
            #"{"jsonrpc":"2.0","id":"a","method":"tcp.createByFd"}"#,
            #"{"jsonrpc":"2.0","id":null,"method":"tcp.fly\u0041way","params":[1]}"#,
            #"{"jsonrpc":"2.0","id":{"x":1},"method":"\u0074cp.createByFd"}"#,
            #"{"jsonrpc":"2.0","id":4,"method":"tcp.list","method":"tcp.flyAway"}"#,  // duplicate: the last counts, as in the gateway
            #"{"jsonrpc":"2.0","id":5,"method":"tcp.flyAway","method":"tcp.list"}"#,
        ].joined(separator: "\n") + "\n"
        let out = feed(&filter, text)
        XCTAssertEqual(String(decoding: out.toGateway, as: UTF8.self), #"{"jsonrpc":"2.0","id":5,"method":"tcp.flyAway","method":"tcp.list"}"# + "\n")
        let got = try answers(out)
        XCTAssertEqual(got.map { $0["id"] }, ["a", .null, .null, 4])
        guard case .string(let message)? = got[0]["error"]?["message"] else { return XCTFail("no message") }
        XCTAssertTrue(message.contains("tcp.createByFd needs a socket passed with SCM_RIGHTS"), message)
    }

    func testNotificationDroppedWithANotice() {
        var filter = BridgeRequestFilter()
        let out = feed(&filter, #"{"jsonrpc":"2.0","method":"tcp.flyAway","params":{"handle":3}}"# + "\n")
        XCTAssertEqual(out.toGateway, [])
        XCTAssertEqual(out.toClient, [], "notifications are never answered")
        XCTAssertEqual(out.notices.count, 1)
        XCTAssertTrue(out.notices[0].contains("dropped a tcp.flyAway notification"))
    }

    func testBatchRefusedWhole() throws {
        var filter = BridgeRequestFilter()
        let batch = #"[{"jsonrpc":"2.0","id":1,"method":"tcp.list"},{"jsonrpc":"2.0","method":"tcp.list"},"#
            + #"{"jsonrpc":"2.0","id":2,"method":"tcp.flyAway","params":[9]},7]"#
        let out = feed(&filter, batch + "\n" + #"[{"jsonrpc":"2.0","method":"tcp.flyAway","params":[9]}]"# + "\n")
        XCTAssertEqual(out.toGateway, [], "no part of either batch runs")
        let got = try answers(out)
        XCTAssertEqual(got.count, 1, "an all-notification batch gets no answer")
        guard case .array(let items) = got[0] else { return XCTFail("not an array: \(got[0])") }
        XCTAssertEqual(items.map { $0["id"] }, [1, 2, .null])
        XCTAssertEqual(items.map { $0["error"]?["code"] }, [-32006, -32006, -32600])
        guard case .string(let sibling)? = items[0]["error"]?["message"] else { return XCTFail("no message") }
        XCTAssertTrue(sibling.contains("not run") && sibling.contains("tcp.flyAway"), sibling)
        XCTAssertEqual(out.notices.count, 2)
        // A batch without such calls passes untouched.
        let fine = #"[{"jsonrpc":"2.0","id":1,"method":"tcp.list"},{"id":2,"method":"\u0067ateway.info"}]"# + "\n"
        XCTAssertEqual(String(decoding: feed(&filter, fine).toGateway, as: UTF8.self), fine)
    }

    func testLastLineWithoutNewline() throws {
        var filter = BridgeRequestFilter()
        XCTAssertEqual(feed(&filter, #"{"id":1,"method":"tcp.flyAway","params":[1]}"#), BridgeRequestFilter.Output())
        let out = filter.finish()
        XCTAssertEqual(out.toGateway, [])
        XCTAssertEqual(try answers(out).first?["id"], 1)
        XCTAssertEqual(filter.finish(), BridgeRequestFilter.Output(), "nothing twice")
        var other = BridgeRequestFilter()
        _ = feed(&other, #"{"id":1,"method":"tcp.list"}"#)
        XCTAssertEqual(String(decoding: other.finish().toGateway, as: UTF8.self), #"{"id":1,"method":"tcp.list"}"#)
    }

    /// A line beyond the inspection bound passes whole, in order, without being held.
    func testOverLongLinesPassThrough() {
        var filter = BridgeRequestFilter(maxInspectedLineBytes: 64)
        let long = #"{"id":1,"method":"tcp.flyAway","params":{"handle":1,"pad":""# + String(repeating: "p", count: 100) + "\"}}\n"
        var gateway: [UInt8] = []
        for piece in stride(from: 0, to: long.utf8.count, by: 30) {
            let bytes = Array(long.utf8)[piece..<min(long.utf8.count, piece + 30)]
            let out = bytes.withUnsafeBytes { filter.feed($0) }
            gateway += out.toGateway
            XCTAssertEqual(out.toClient, [])
        }
        XCTAssertEqual(gateway, Array(long.utf8))
        // Back to inspecting at the next line.
        let out = feed(&filter, #"{"id":2,"method":"tcp.flyAway"}"# + "\n")
        XCTAssertEqual(out.toGateway, [])
        XCTAssertEqual(out.toClient.count, 1)
    }
}

final class BridgeOutputTests: XCTestCase {
    /// The bridge's own line waits for the gateway's line in progress to end.
    func testOwnLinesLandBetweenGatewayLines() throws {
        var fds: [Int32] = [-1, -1]
        XCTAssertEqual(pipe(&fds), 0)
        defer { close(fds[0]) }
        let output = BridgeOutput(fd: fds[1])
        XCTAssertTrue(Array("{\"a\":".utf8).withUnsafeBytes { output.relay($0) })
        let written = expectation(description: "own line written")
        Thread {
            _ = output.writeLine(Array("{\"own\":1}\n".utf8))
            written.fulfill()
        }.start()
        usleep(50_000)  // give the other thread every chance to write too early
        XCTAssertTrue(Array("1}\n{\"b\":2}\n".utf8).withUnsafeBytes { output.relay($0) })
        wait(for: [written], timeout: 10)
        output.endRelay()
        output.flush()
        close(fds[1])
        var got: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 256)
        while true {
            let n = read(fds[0], &buffer, buffer.count)
            if n <= 0 { break }
            got += buffer[0..<n]
        }
        let text = String(decoding: got, as: UTF8.self)
        XCTAssertTrue(text == "{\"a\":1}\n{\"own\":1}\n{\"b\":2}\n" || text == "{\"a\":1}\n{\"b\":2}\n{\"own\":1}\n", text)
    }
}

final class BridgeOutputQueueTests: XCTestCase {
    /// While the gateway's line is half written (stdout taken), the bridge's own lines queue up
    /// to the bound instead of stopping the thread that reads the client's requests.
    func testOwnLinesQueueWhileStdoutIsBusy() throws {
        var fds: [Int32] = [-1, -1]
        XCTAssertEqual(pipe(&fds), 0)
        defer { close(fds[0]) }
        let output = BridgeOutput(fd: fds[1], maxQueuedBytes: 200)
        XCTAssertTrue(Array("{\"partial\":".utf8).withUnsafeBytes { output.relay($0) })
        let queued = expectation(description: "ten lines queued without waiting")
        Thread {
            for i in 0..<10 { XCTAssertTrue(output.writeLine(Array("{\"n\":\(i)}\n".utf8))) }
            queued.fulfill()
        }.start()
        wait(for: [queued], timeout: 10)
        XCTAssertTrue(Array("1}\n".utf8).withUnsafeBytes { output.relay($0) })
        output.flush()
        close(fds[1])
        var got: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1024)
        while true {
            let n = read(fds[0], &buffer, buffer.count)
            if n <= 0 { break }
            got += buffer[0..<n]
        }
        let expected = "{\"partial\":1}\n" + (0..<10).map { "{\"n\":\($0)}\n" }.joined()
        XCTAssertEqual(String(decoding: got, as: UTF8.self), expected, "in order, none inside the gateway's line")
    }

    func testFailedStdoutEndsTheQueue() {
        var fds: [Int32] = [-1, -1]
        XCTAssertEqual(pipe(&fds), 0)
        close(fds[0])  // nobody reads: the write fails with EPIPE
        let previous = signal(SIGPIPE, SIG_IGN)
        defer {
            signal(SIGPIPE, previous)
            close(fds[1])
        }
        let output = BridgeOutput(fd: fds[1], maxQueuedBytes: 64)
        output.writeLine(Array("{\"a\":1}\n".utf8))
        output.flush()
        XCTAssertFalse(output.writeLine(Array("{\"b\":2}\n".utf8)), "a failed stdout refuses further lines")
    }
}

/// The ssh link with real processes standing in for ssh (TCPGW_SSH), so no sshd is needed:
/// `sh -c SCRIPT` takes the rest of the ssh arguments as its own positional parameters.
final class GatewayLinkTests: XCTestCase {
    private func link(_ script: String) throws -> GatewayLink {
        let address = GatewayAddress.ssh(SSHGatewayAddress(host: "example.invalid", socketPath: "/s.sock"))
        return try GatewayLink.connect(address, environment: ["TCPGW_SSH": "/bin/sh -c '\(script)' sh"])
    }

    private func readAll(_ fd: Int32) -> [UInt8] {
        var got: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while got.count < 1 << 20 {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            got += buffer[0..<n]
        }
        return got
    }

    /// A link whose write side is already closed (the script does not read).
    private func closedLink(_ script: String) throws -> GatewayLink {
        let made = try link(script)
        made.closeWrite()
        return made
    }

    func testRelaysBothWaysAndEndsCleanly() throws {
        let l = try link("cat")
        XCTAssertTrue(BridgeOutput.writeAll(l.writeFD, Array("hello\n".utf8)))
        l.closeWrite()
        XCTAssertEqual(readAll(l.readFD), Array("hello\n".utf8))
        XCTAssertEqual(l.finish(receivedAny: true), GatewayLinkEnd(status: 0, message: nil))
    }

    func testSSHSeesTheCommandLine() throws {
        let l = try link("printf \"%s|\" \"$@\"")
        l.closeWrite()
        XCTAssertEqual(
            String(decoding: readAll(l.readFD), as: UTF8.self),
            "-T|-o|BatchMode=yes|--|example.invalid|tcpgw bridge --socket /s.sock|")
        XCTAssertEqual(l.finish(receivedAny: true).status, 0)
    }

    func testStatusesTellWhatHappened() throws {
        let unreachable = try closedLink("exit 255")
        let end = unreachable.finish(receivedAny: false)
        XCTAssertEqual(end.status, 2)
        XCTAssertTrue(end.message?.contains("ssh failed (status 255") == true, end.message ?? "")
        XCTAssertTrue(end.message?.contains("ssh://example.invalid/s.sock") == true)

        let broke = try closedLink("exit 255")
        let brokeEnd = broke.finish(receivedAny: true)
        XCTAssertEqual(brokeEnd.status, 1)
        XCTAssertTrue(brokeEnd.message?.contains("the ssh connection broke") == true, brokeEnd.message ?? "")

        let notFound = try closedLink("exit 127")
        XCTAssertTrue(notFound.finish(receivedAny: false).message?.contains("TCPGW_REMOTE_BIN") == true)

        let remote = try closedLink("exit 3")
        let remoteEnd = remote.finish(receivedAny: true)
        XCTAssertEqual(remoteEnd.status, 1)
        XCTAssertTrue(remoteEnd.message?.contains("exited with status 3") == true)
        XCTAssertTrue(remoteEnd.message?.contains("session with the gateway is lost") == true)

        let killed = try closedLink("kill -9 $$")
        let killedEnd = killed.finish(receivedAny: true)
        XCTAssertEqual(killedEnd.status, 1)
        XCTAssertTrue(killedEnd.message?.contains("signal 9") == true, killedEnd.message ?? "")
    }

    func testAbandonKillsTheChild() throws {
        let l = try link("exec sleep 30")
        guard case .ssh(let pid, _) = l.carrier else { return XCTFail("not ssh") }
        l.abandon()
        XCTAssertEqual(kill(pid, 0), -1, "the child is gone and reaped")
        let previous = signal(SIGPIPE, SIG_IGN)  // as the bridge does
        defer { signal(SIGPIPE, previous) }
        XCTAssertFalse(BridgeOutput.writeAll(l.writeFD, [0x0A]), "the writing side sees the link gone")
        l.closeWrite()
    }

    func testMissingProgram() {
        let address = GatewayAddress.ssh(SSHGatewayAddress(host: "h"))
        XCTAssertThrowsError(try GatewayLink.connect(address, environment: ["TCPGW_SSH": "/nonexistent/ssh -v"])) { error in
            XCTAssertTrue("\(error)".contains("cannot run '/nonexistent/ssh'"), "\(error)")
        }
    }

    /// Over a socket each direction has its own descriptor: closing the write side leaves reading.
    func testUnixSocketDirections() throws {
        let path = "/tmp/tcpgw-linktest-\(getpid()).sock"
        unlink(path)
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(listener, 0)
        defer {
            close(listener)
            unlink(path)
        }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in path.utf8.enumerated() { raw[i] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        XCTAssertEqual(bound, 0)
        XCTAssertEqual(listen(listener, 1), 0)
        let l = try GatewayLink.connect(.unixSocket(path), environment: [:])
        XCTAssertNotEqual(l.readFD, l.writeFD)
        let peer = accept(listener, nil, nil)
        XCTAssertGreaterThanOrEqual(peer, 0)
        defer { close(peer) }
        XCTAssertTrue(BridgeOutput.writeAll(l.writeFD, Array("up\n".utf8)))
        l.closeWrite()
        XCTAssertEqual(readAll(peer), Array("up\n".utf8), "the peer saw the bytes, then the end")
        XCTAssertTrue(BridgeOutput.writeAll(peer, Array("down\n".utf8)))
        shutdown(peer, Int32(SHUT_WR))
        XCTAssertEqual(readAll(l.readFD), Array("down\n".utf8), "reading goes on after the write side closed")
        XCTAssertEqual(l.finish(receivedAny: true), GatewayLinkEnd(status: 0, message: nil))
    }

    func testUnixSocketRefused() {
        XCTAssertThrowsError(try GatewayLink.connect(.unixSocket("/nonexistent/gw.sock"), environment: [:])) { error in
            XCTAssertTrue("\(error)".contains("cannot connect to /nonexistent/gw.sock"), "\(error)")
        }
    }
}
