import Foundation
import JSONRPC
import NIOCore
import XCTest

@testable import TCPGateway

/// A seeded generator, so a failing random round trip can be reproduced exactly.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

enum GatewayTestSupport {
    /// `count` random bytes from `rng`.
    static func randomBytes(_ count: Int, _ rng: inout SplitMix64) -> [UInt8] {
        (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
    }

    static func buffer(_ bytes: [UInt8]) -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        return buffer
    }

    /// The `RPCError` `body` throws, failing the test when it throws nothing or something else.
    static func rpcError(
        file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Void
    ) -> RPCError? {
        do {
            try body()
            XCTFail("expected an RPCError, nothing was thrown", file: file, line: line)
        } catch let error as RPCError {
            return error
        } catch {
            XCTFail("expected an RPCError, got \(error)", file: file, line: line)
        }
        return nil
    }

    /// The `PolicyError` text `body` throws, failing the test otherwise.
    static func policyError(
        file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Void
    ) -> String? {
        do {
            try body()
            XCTFail("expected a PolicyError, nothing was thrown", file: file, line: line)
        } catch let error as PolicyError {
            return error.description
        } catch {
            XCTFail("expected a PolicyError, got \(error)", file: file, line: line)
        }
        return nil
    }
}
