/// The randomness of faults: one gateway seed (`tcpgw serve --seed N`, else random), from which
/// each fault on each connection derives its own stream, so a run repeats draw for draw when the
/// seed and the calls are the same (handle numbers follow the calls).
struct FaultRandom: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    /// The stream of the fault `name` on handle `handle`, in `stream` ("in" or "out").
    init(gatewaySeed: UInt64, handle: Int64, stream: String, name: String) {
        var mixed = gatewaySeed
        mixed = FaultRandom.mix(mixed ^ UInt64(bitPattern: handle))
        mixed = FaultRandom.mix(mixed ^ FaultRandom.fnv1a(stream))
        mixed = FaultRandom.mix(mixed ^ FaultRandom.fnv1a(name))
        state = mixed
    }

    /// SplitMix64: small, fast, and every seed gives a full-period stream.
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return FaultRandom.mix(state)
    }

    /// A uniform draw in 0..<1.
    mutating func unit() -> Double { Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0) }

    /// A uniform integer in -spread...spread.
    mutating func spread(_ spread: Int) -> Int {
        guard spread > 0 else { return 0 }
        return Int(next() % UInt64(2 * spread + 1)) - spread
    }

    private static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A hash that is the same in every process (Swift's Hasher is seeded per process).
    private static func fnv1a(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01B3
        }
        return hash
    }
}
