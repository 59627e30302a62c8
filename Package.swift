// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "tcpgw",
    products: [
        .executable(name: "tcpgw", targets: ["tcpgw"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    ],
    targets: [
        // jansson, through pkg-config; the header shim wraps its macros for Swift.
        .systemLibrary(
            name: "CJansson",
            pkgConfig: "jansson",
            providers: [.apt(["libjansson-dev"])]
        ),
        // What Swift cannot import: SCM_RIGHTS, FIONREAD, fchmod-before-bind, TCP_INFO, sockaddr juggling.
        .target(name: "CNetShim"),
        .target(
            name: "JSONRPC",
            dependencies: ["CJansson", "CNetShim"]
        ),
        .target(
            name: "TCPGateway",
            dependencies: [
                "JSONRPC", "CNetShim",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "tcpgw",
            dependencies: [
                "TCPGateway", "JSONRPC", "CNetShim",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Codec figures for bench/: spliced long strings against plain jansson, same run.
        .executableTarget(
            name: "CodecBench",
            dependencies: ["JSONRPC"],
            path: "bench/CodecBench"
        ),
        .testTarget(name: "JSONRPCTests", dependencies: ["JSONRPC"]),
        // Unit tests for the gateway's pure pieces: codecs, policy rules, schema binding, addresses.
        .testTarget(
            name: "TCPGatewayTests",
            dependencies: [
                "TCPGateway", "JSONRPC", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ]
)

// libFuzzer targets (fuzz/), declared only when scripts/fuzz asks for them (TCPGW_FUZZ=1): it
// builds them with -sanitize=fuzzer,address into .build-fuzz. A debug build keeps compiling the
// dependencies quick, while the code under test is optimized (several times the executions).
if Context.environment["TCPGW_FUZZ"] != nil {
    package.targets += [
        .systemLibrary(name: "CLibFuzzer", path: "fuzz/CLibFuzzer"),
        .target(name: "FuzzSupport", dependencies: ["CLibFuzzer"], path: "fuzz/Support"),
        .executableTarget(name: "FuzzRequest", dependencies: ["FuzzSupport", "JSONRPC", "TCPGateway"], path: "fuzz/Request"),
        .executableTarget(name: "FuzzCodec", dependencies: ["FuzzSupport", "JSONRPC"], path: "fuzz/Codec"),
    ]
    for target in package.targets where ["JSONRPC", "TCPGateway", "FuzzSupport", "FuzzRequest", "FuzzCodec"].contains(target.name) {
        target.swiftSettings = (target.swiftSettings ?? []) + [.unsafeFlags(["-O"])]
    }
}
