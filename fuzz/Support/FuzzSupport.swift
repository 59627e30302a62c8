import CLibFuzzer

#if canImport(Glibc)
import Glibc
#endif

/// Shared by the fuzz targets: turning libFuzzer's bytes into what the targets feed the code.
public enum FuzzInput {
    /// Plain bytes that a 0x01 in the input stands for. The splice only acts on strings of 512
    /// plain bytes or more, which random mutation seldom writes; one 0x01 byte is 511 of them,
    /// so "\u{1}x" sits exactly at the threshold. (0x01 is a control byte: nothing treats it
    /// specially, so the stand-in loses no coverage.)
    public static let longRun: [UInt8] = Array(String(repeating: "QUJDRA+/", count: 64).utf8.prefix(511))

    /// The input with its first few 0x01 bytes replaced by `longRun` (a few: each run costs the
    /// targets time, and more of them find nothing new).
    public static func expand(_ data: UnsafeRawBufferPointer, runs: Int = 8) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(data.count)
        var left = runs
        for byte in data {
            if byte == 0x01 && left > 0 {
                out.append(contentsOf: longRun)
                left -= 1
            } else {
                out.append(byte)
            }
        }
        return out
    }

    /// A small deterministic generator seeded by the input, so a crash reproduces from its file.
    public struct Generator {
        private var state: UInt64

        public init(_ bytes: [UInt8]) {
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a
            for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
            state = hash | 1
        }

        public mutating func next(below bound: Int) -> Int {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return Int(state % UInt64(bound))
        }
    }

    /// Runs libFuzzer with the process's arguments on the target's LLVMFuzzerTestOneInput.
    public static func run() -> Never {
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, LLVMFuzzerTestOneInput))
    }

    /// Stops the run with a message libFuzzer records with the input.
    public static func fail(_ message: String) -> Never {
        fatalError("fuzz invariant: " + message)
    }
}
