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
        .target(name: "WarmstartVirtio", dependencies: ["WarmstartMemory", "WarmstartPools", "CWarmstartShim"], swiftSettings: release),
        .target(name: "WarmstartVhostUser", dependencies: ["WarmstartVirtio", "WarmstartBus", "WarmstartIO",
                                                           .product(name: "Logging", package: "swift-log")], swiftSettings: release),
        .target(name: "WarmstartDatapath", dependencies: ["WarmstartVhostUser", "WarmstartBus"], swiftSettings: release),
        .target(name: "WarmstartRuntime", dependencies: ["WarmstartSnapshot", "WarmstartDatapath",
                                                         .product(name: "Logging", package: "swift-log")], swiftSettings: release),
        .executableTarget(name: "warmstart", dependencies: [
            "WarmstartRuntime",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: release),

        // Test-only C (netns entry, seccomp filter, setfsuid): calls the product never makes.
        .target(name: "CWarmstartTestShim", path: "Tests/CWarmstartTestShim"),
        // What the tests share: the one guest (TestGuest), the one vhost-user back-end peer
        // (InProcessBackend), the child-test harness (ChildTest) and the testpmd launcher
        // (TestpmdHarness). Not a product; only the lower modules it needs.
        .target(name: "WarmstartTestSupport", dependencies: ["CWarmstartShim", "WarmstartMemory", "WarmstartPools",
                                                             "WarmstartVirtio", "WarmstartVhostUser",
                                                             .product(name: "SystemPackage", package: "swift-system")],
                path: "Tests/WarmstartTestSupport"),

        .testTarget(name: "WarmstartMemoryTests", dependencies: [
            "CWarmstartShim", .product(name: "SystemPackage", package: "swift-system"), "WarmstartMemory",
            "WarmstartTestSupport",
        ]),
        .testTarget(name: "WarmstartPoolsTests", dependencies: [
            "CWarmstartShim", .product(name: "SystemPackage", package: "swift-system"), "WarmstartMemory",
            "WarmstartPools",
        ]),
        .testTarget(name: "WarmstartSnapshotTests", dependencies: ["WarmstartMemory", "WarmstartPools", "WarmstartSnapshot"]),
        .testTarget(name: "WarmstartIOTests", dependencies: ["CWarmstartShim", "CWarmstartTestShim", "WarmstartIO"]),
        .testTarget(name: "WarmstartBusTests", dependencies: [
            "CWarmstartShim", "CWarmstartTestShim", "WarmstartIO", "WarmstartBus",
        ]),
        .testTarget(name: "WarmstartVirtioTests", dependencies: [
            "CWarmstartShim", "WarmstartMemory", "WarmstartPools", "WarmstartVirtio", "WarmstartTestSupport",
        ]),
        .testTarget(name: "WarmstartVhostUserTests", dependencies: [
            "CWarmstartShim", "WarmstartMemory", "WarmstartPools", "WarmstartBus", "WarmstartVirtio",
            "WarmstartVhostUser", "WarmstartTestSupport",
        ]),
        .testTarget(name: "WarmstartDatapathTests", dependencies: [
            "CWarmstartShim", "CWarmstartTestShim", "WarmstartMemory", "WarmstartPools", "WarmstartBus",
            "WarmstartVirtio", "WarmstartVhostUser", "WarmstartDatapath", "WarmstartTestSupport",
        ]),
        .testTarget(name: "WarmstartRuntimeTests", dependencies: [
            "CWarmstartShim", .product(name: "Logging", package: "swift-log"), "WarmstartMemory", "WarmstartPools",
            "WarmstartSnapshot", "WarmstartBus", "WarmstartVirtio", "WarmstartVhostUser", "WarmstartDatapath",
            "WarmstartRuntime", "WarmstartTestSupport",
        ]),
        // Runs the warmstart executable, or Warmstart's ports in-process (payload checks), against
        // DPDK's testpmd; skips without testpmd/hugepages.
        .testTarget(name: "WarmstartInteropTests", dependencies: [
            "WarmstartPools", "WarmstartSnapshot", "WarmstartBus", "WarmstartVirtio", "WarmstartVhostUser",
            "WarmstartDatapath", "WarmstartTestSupport",
        ]),
    ],
    swiftLanguageModes: [.v5]
)
