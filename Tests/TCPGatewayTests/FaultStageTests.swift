import NIOCore
import XCTest

@testable import TCPGateway

/// Each fault stage and the chain, driven with a hand-moved clock (nanoseconds) and no socket.
final class FaultStageTests: XCTestCase {
    private let ms: UInt64 = 1_000_000

    private func bytes(_ text: String) -> FaultItem {
        var buffer = ByteBufferAllocator().buffer(capacity: text.utf8.count)
        buffer.writeString(text)
        return .bytes(buffer)
    }

    private func text(_ items: [FaultItem]) -> String {
        items.map { item -> String in
            guard case .bytes(let buffer) = item else { return "<end>" }
            return String(buffer: buffer)
        }.joined(separator: "|")
    }

    func testLatencyHoldsEachChunkAndKeepsOrder() {
        let stage = LatencyStage(latency: 100, jitter: 0, random: FaultRandom(seed: 1))
        stage.accept(bytes("a"), now: 0)
        stage.accept(bytes("b"), now: 50 * ms)
        XCTAssertEqual(stage.heldBytes, 2)
        var out = stage.release(now: 99 * ms)
        XCTAssertEqual(out.items, [])
        XCTAssertEqual(out.wakeAt, 100 * ms)
        out = stage.release(now: 100 * ms)
        XCTAssertEqual(text(out.items), "a")
        XCTAssertEqual(out.wakeAt, 150 * ms)
        out = stage.release(now: 200 * ms)
        XCTAssertEqual(text(out.items), "b")
        XCTAssertNil(out.wakeAt)
        XCTAssertEqual(stage.heldBytes, 0)
    }

    func testLatencyJitterStaysInRangeAndNeverReorders() {
        let stage = LatencyStage(latency: 50, jitter: 40, random: FaultRandom(seed: 9))
        for i in 0..<200 { stage.accept(bytes("\(i),"), now: UInt64(i) * ms) }
        var released: [FaultItem] = []
        var dues: [UInt64] = []
        var now: UInt64 = 0
        while now < 400 * ms {
            let out = stage.release(now: now)
            if !out.items.isEmpty { dues.append(now) }
            released += out.items
            now += ms
        }
        XCTAssertEqual(text(released), (0..<200).map { "\($0)," }.joined(separator: "|"))
        // The first chunk waited 50 ± 40 ms; the last came no later than 199 + 90 ms.
        XCTAssertGreaterThanOrEqual(dues.first ?? 0, 10 * ms)
        XCTAssertLessThanOrEqual(dues.last ?? .max, 290 * ms)
        XCTAssertGreaterThan(Set(dues).count, 20, "jitter made no difference")
    }

    func testLatencyKeepsTheEndBehindTheBytes() {
        let stage = LatencyStage(latency: 10, jitter: 0, random: FaultRandom(seed: 1))
        stage.accept(bytes("x"), now: 0)
        stage.accept(.end, now: 0)
        XCTAssertEqual(text(stage.release(now: 10 * ms).items), "x|<end>")
    }

    func testBandwidthPacesBytes() {
        // 10 KiB/s: a burst of 512 bytes, then 10240 bytes a second.
        let stage = BandwidthStage(rateKiB: 10, now: 0)
        var chunk = ByteBufferAllocator().buffer(capacity: 10240)
        chunk.writeRepeatingByte(7, count: 10240)
        stage.accept(.bytes(chunk), now: 0)
        var now: UInt64 = 0
        var passed = 0
        var releasedAt: [UInt64: Int] = [:]
        while passed < 10240 && now < 5_000 * ms {
            let out = stage.release(now: now)
            let n = out.items.reduce(0) { $0 + $1.count }
            passed += n
            if n > 0 { releasedAt[now] = n }
            XCTAssertLessThanOrEqual(n, 512, "more than the burst at once")
            now = out.wakeAt ?? (now + ms)
        }
        XCTAssertEqual(passed, 10240)
        // 10240 - 512 bytes at 10240/s take about 0.95 s.
        XCTAssertGreaterThan(now, 900 * ms)
        XCTAssertLessThan(now, 1_100 * ms)
    }

    func testBandwidthZeroPassesNothing() {
        let stage = BandwidthStage(rateKiB: 0, now: 0)
        stage.accept(bytes("abc"), now: 0)
        let out = stage.release(now: 10_000 * ms)
        XCTAssertEqual(out.items, [])
        XCTAssertNil(out.wakeAt)
        XCTAssertEqual(text(stage.drain()), "abc")
    }

    func testSlicerCutsAndSpacesSlices() {
        let stage = SlicerStage(averageSize: 3, sizeVariation: 0, delayUs: 2000, random: FaultRandom(seed: 1))
        stage.accept(bytes("abcdefgh"), now: 0)
        var out = stage.release(now: 0)
        XCTAssertEqual(text(out.items), "abc")
        XCTAssertEqual(out.wakeAt, 2 * ms)
        out = stage.release(now: 1 * ms)
        XCTAssertEqual(out.items, [])
        out = stage.release(now: 2 * ms)
        XCTAssertEqual(text(out.items), "def")
        stage.accept(.end, now: 2 * ms)
        out = stage.release(now: 4 * ms)
        XCTAssertEqual(text(out.items), "gh|<end>")
    }

    func testSlicerVariationStaysInRangeAndIsAtLeastOne() {
        let stage = SlicerStage(averageSize: 2, sizeVariation: 5, delayUs: 0, random: FaultRandom(seed: 3))
        var all = ByteBufferAllocator().buffer(capacity: 5000)
        all.writeRepeatingByte(1, count: 5000)
        stage.accept(.bytes(all), now: 0)
        let sizes = stage.release(now: 0).items.map(\.count)
        XCTAssertEqual(sizes.reduce(0, +), 5000)
        XCTAssertEqual(sizes.dropLast().min(), 1)
        XCTAssertEqual(sizes.max(), 7)
    }

    func testLimitDataPassesTheLimitThenResets() {
        let stage = LimitDataStage(bytes: 5)
        stage.accept(bytes("abc"), now: 0)
        var out = stage.release(now: 0)
        XCTAssertEqual(text(out.items), "abc")
        XCTAssertFalse(out.reset)
        stage.accept(bytes("defg"), now: 0)
        out = stage.release(now: 0)
        XCTAssertEqual(text(out.items), "de")
        XCTAssertTrue(out.reset)
    }

    func testTimeoutDropsAndResetsAtItsDeadline() {
        let stage = TimeoutStage(timeoutMS: 100, now: 0)
        stage.accept(bytes("gone"), now: 0)
        stage.accept(.end, now: 0)
        var out = stage.release(now: 50 * ms)
        XCTAssertEqual(out, StageOutput(items: [], reset: false, wakeAt: 100 * ms))
        XCTAssertEqual(stage.dropped, 4)
        out = stage.release(now: 100 * ms)
        XCTAssertTrue(out.reset)
        let never = TimeoutStage(timeoutMS: 0, now: 0)
        XCTAssertEqual(never.release(now: 1_000_000 * ms), StageOutput())
    }

    func testResetPeerPassesThenResets() {
        let stage = ResetPeerStage(timeoutMS: 20, now: 0)
        stage.accept(bytes("hi"), now: 0)
        var out = stage.release(now: 10 * ms)
        XCTAssertEqual(text(out.items), "hi")
        XCTAssertEqual(out.wakeAt, 20 * ms)
        out = stage.release(now: 20 * ms)
        XCTAssertTrue(out.reset)
        XCTAssertTrue(ResetPeerStage(timeoutMS: 0, now: 5).release(now: 5).reset)
    }

    func testStallHoldsUntilDrained() {
        let stage = StallStage(stopsReading: true)
        stage.accept(bytes("a"), now: 0)
        stage.accept(.end, now: 0)
        XCTAssertEqual(stage.release(now: 1_000 * ms), StageOutput())
        XCTAssertTrue(stage.stopsReading)
        XCTAssertEqual(stage.heldBytes, 1)
        XCTAssertEqual(text(stage.drain()), "a|<end>")
        XCTAssertEqual(stage.heldBytes, 0)
    }

    func testChainFeedsStagesInOrderAndRemovalLosesNothing() {
        let chain = FaultChain()
        XCTAssertTrue(chain.isIdle)
        chain.add(LatencyStage(latency: 10, jitter: 0, random: FaultRandom(seed: 1)), name: "lat")
        chain.add(StallStage(stopsReading: true), name: "stall")
        chain.push(bytes("one"), now: 0)
        XCTAssertTrue(chain.stopsReading)
        var out = chain.run(now: 10 * ms)
        XCTAssertEqual(out.items, [])  // past the latency, held by the stall
        XCTAssertEqual(chain.heldBytes, 3)
        chain.push(bytes("two"), now: 10 * ms)
        chain.remove("stall", now: 10 * ms)
        XCTAssertFalse(chain.stopsReading)
        out = chain.run(now: 10 * ms)
        XCTAssertEqual(text(out.items), "one")
        XCTAssertEqual(out.wakeAt, 20 * ms)
        chain.remove("lat", now: 11 * ms)
        out = chain.run(now: 11 * ms)
        XCTAssertEqual(text(out.items), "two")
        XCTAssertTrue(chain.isIdle)
    }

    func testChainResetLetsOutWhatPassedFirst() {
        let chain = FaultChain()
        chain.add(LimitDataStage(bytes: 2), name: "limit")
        chain.push(bytes("abcd"), now: 0)
        let out = chain.run(now: 0)
        XCTAssertEqual(text(out.items), "ab")
        XCTAssertEqual(out.resetBy, "limit")
    }
}
