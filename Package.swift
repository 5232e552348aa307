// swift-tools-version:6.0
// Warmstart: a fast-boot packet-processing runtime.
// One module per layer; dependencies point one way:
// memory → pools → snapshot → io/bus → virtio → vhost-user → datapath → runtime → CLI.
import PackageDescription

// Release: -Ounchecked, and no dynamic exclusivity checks (the hot path's per-thread classes,
// e.g. MbufCache, paid swift_beginAccess per packet: ~6% of a polling core, measured with perf).
let release: [SwiftSetting] = [.unsafeFlags(["-Ounchecked", "-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "warmstart",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "warmstart", targets: ["warmstart"]),
        .library(name: "WarmstartRuntime", targets: ["WarmstartRuntime"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
    ],
    targets: [
        // C: only what Swift cannot import (fences, atomics on raw shared memory, cmsg, GNU calls).
        .target(name: "CWarmstartShim"),
        // Debian's liburing-dev (pkg-config liburing).
        .systemLibrary(name: "CLibURing", pkgConfig: "liburing",
                       providers: [.apt(["liburing-dev"])]),

        .target(name: "WarmstartMemory",
                dependencies: ["CWarmstartShim", .product(name: "SystemPackage", package: "swift-system")], swiftSettings: release),
        .target(name: "WarmstartPools", dependencies: ["WarmstartMemory", "CWarmstartShim"], swiftSettings: release),
        .target(name: "WarmstartSnapshot", dependencies: ["WarmstartMemory", "WarmstartPools"], swiftSettings: release),
        .target(name: "WarmstartIO", dependencies: ["CLibURing", "CWarmstartShim",
                                                    .product(name: "SystemPackage", package: "swift-system")], swiftSettings: release),
        .target(name: "WarmstartBus", dependencies: ["WarmstartIO", "WarmstartPools",
                                                     .product(name: "Logging", package: "swift-log")], swiftSettings: release),
        // The virtio / vhost-user spec vocabulary (feature bits, descriptor flags, ring layouts and
        // positions): at the bottom, imports nothing.
        .target(name: "WarmstartSpec", swiftSettings: release),
        .target(name: "WarmstartVirtio", dependencies: ["WarmstartSpec", "WarmstartMemory", "WarmstartPools", "CWarmstartShim"], swiftSettings: release),
        .target(name: "WarmstartVhostUser", dependencies: ["WarmstartSpec", "WarmstartMemory", "CWarmstartShim",
                                                           .product(name: "Logging", package: "swift-log")], swiftSettings: release),
        .target(name: "WarmstartDatapath", dependencies: ["WarmstartVhostUser", "WarmstartVirtio", "WarmstartBus", "WarmstartSpec"], swiftSettings: release),
        .target(name: "WarmstartRuntime", dependencies: ["WarmstartSnapshot", "WarmstartDatapath", "WarmstartSpec",
                                                         .product(name: "Logging", package: "swift-log")], swiftSettings: release),
        .executableTarget(name: "warmstart", dependencies: [
            "WarmstartRuntime",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: release),

        .testTarget(name: "WarmstartMemoryTests", dependencies: ["WarmstartMemory"]),
        .testTarget(name: "WarmstartPoolsTests", dependencies: ["WarmstartPools"]),
        .testTarget(name: "WarmstartSnapshotTests", dependencies: ["WarmstartSnapshot"]),
        .testTarget(name: "WarmstartIOTests", dependencies: ["WarmstartIO"]),
        .testTarget(name: "WarmstartBusTests", dependencies: ["WarmstartBus"]),
        .testTarget(name: "WarmstartSpecTests", dependencies: ["WarmstartSpec"]),
        .testTarget(name: "WarmstartVirtioTests", dependencies: ["WarmstartVirtio"]),
        .testTarget(name: "WarmstartVhostUserTests", dependencies: ["WarmstartVhostUser", "WarmstartVirtio", "WarmstartBus"]),
        .testTarget(name: "WarmstartDatapathTests", dependencies: ["WarmstartDatapath"]),
        .testTarget(name: "WarmstartRuntimeTests", dependencies: ["WarmstartRuntime"]),
        // Runs the warmstart executable, or Warmstart's ports in-process (payload checks), against
        // DPDK's testpmd; skips without testpmd/hugepages.
        .testTarget(name: "WarmstartInteropTests", dependencies: ["WarmstartRuntime"]),
    ],
    swiftLanguageModes: [.v5]
)
