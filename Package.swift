// swift-tools-version:6.0
// Warmstart: a fast-boot packet-processing runtime.
// One module per concern; the dependencies form a DAG, listed per module (what it owns, what it
// may import) at the top of Docs/ARCHITECTURE.md. Each target's dependencies are exactly the
// modules its files import: scripts/check-structure.py (run by scripts/test.sh) holds both to it.
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
        .target(name: "WarmstartSnapshot", dependencies: [
            "CWarmstartShim", "WarmstartMemory", "WarmstartPools",
            .product(name: "SystemPackage", package: "swift-system"),
        ], swiftSettings: release),
        .target(name: "WarmstartIO", dependencies: ["CWarmstartShim", "CLibURing"], swiftSettings: release),
        .target(name: "WarmstartBus", dependencies: ["WarmstartIO", "CLibURing", "CWarmstartShim"], swiftSettings: release),
        // The virtio / vhost-user spec vocabulary (feature bits, descriptor flags, ring layouts and
        // positions): at the bottom, imports nothing.
        .target(name: "WarmstartSpec", swiftSettings: release),
        .target(name: "WarmstartVirtio", dependencies: ["CWarmstartShim", "WarmstartMemory", "WarmstartPools", "WarmstartSpec"], swiftSettings: release),
        // The driver side of a virtqueue (the virtio-user front-end, the tests' mock guest).
        .target(name: "WarmstartVirtioDriver", dependencies: [
            "CWarmstartShim", "WarmstartPools", "WarmstartSpec", "WarmstartVirtio",
        ], swiftSettings: release),
        // The vhost-user wire, what both sides speak: request codes, header, typed messages, the
        // validator, the frame decoder and the SCM_RIGHTS channel.
        .target(name: "WarmstartVhostUserWire", dependencies: ["CWarmstartShim", "WarmstartSpec"], swiftSettings: release),
        // The vhost-user sides: the back-end session (guest memory, vrings, inflight, handoff
        // state) and the front-end sequence.
        .target(name: "WarmstartVhostUser", dependencies: [
            "CWarmstartShim", "WarmstartMemory", "WarmstartSpec", "WarmstartVhostUserWire",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: release),
        // The forwarding engine: polling threads, bursts, forward modes, the MAC table. Knows ports
        // only as `BurstQueue`s.
        .target(name: "WarmstartEngine", dependencies: ["WarmstartPools", "WarmstartMemory", "CWarmstartShim"], swiftSettings: release),
        // The port drivers: vhost-user back-end, virtio-user front-end, TAP.
        .target(name: "WarmstartPorts", dependencies: [
            "CWarmstartShim", "WarmstartMemory", "WarmstartPools", "WarmstartIO", "WarmstartBus",
            "WarmstartSpec", "WarmstartVirtio", "WarmstartVirtioDriver", "WarmstartVhostUserWire",
            "WarmstartVhostUser", "WarmstartEngine", .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: release),
        // Hot upgrade's mechanics: the wire, the state document, the donor and taker state machines.
        .target(name: "WarmstartHandoff", dependencies: [
            "CWarmstartShim", "WarmstartMemory", "WarmstartPools", "WarmstartSpec", "WarmstartVhostUser", "WarmstartVhostUserWire",
            "WarmstartEngine", .product(name: "SystemPackage", package: "swift-system"),
        ], swiftSettings: release),
        // Boot, the control socket, reports and the Runtime object (which drives handoff).
        .target(name: "WarmstartRuntime", dependencies: ["CWarmstartShim", "WarmstartMemory", "WarmstartPools", "WarmstartSnapshot", "WarmstartIO",
                                                         "WarmstartBus", "WarmstartVhostUser", "WarmstartVhostUserWire", "WarmstartEngine", "WarmstartPorts", "WarmstartHandoff",
                                                         .product(name: "Logging", package: "swift-log")], swiftSettings: release),
        // `warmstart bench`, the self-loopback and the testpmd launcher: the CLI's and the tests'
        // tools, in no product (the WarmstartRuntime library does not export them).
        .target(name: "WarmstartBench", dependencies: [
            "CWarmstartShim", "WarmstartMemory", "WarmstartPools", "WarmstartSnapshot", "WarmstartBus",
            "WarmstartPorts", "WarmstartRuntime",
        ], swiftSettings: release),
        .executableTarget(name: "warmstart", dependencies: [
            "WarmstartRuntime", "WarmstartBench",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "SystemPackage", package: "swift-system"),
        ], swiftSettings: release),

        // Instructions per packet of the virtio-user generator and transmit path against a device in
        // the same process (scripts/callgrind-virtio-user.sh runs it under callgrind). Here rather
        // than in Benchmarks/Package.swift: it drives WarmstartBench, which no product exports.
        .executableTarget(name: "VirtioUserTX", dependencies: [
            "CWarmstartShim", "WarmstartMemory", "WarmstartPools", "WarmstartSnapshot", "WarmstartSpec",
            "WarmstartVirtio", "WarmstartVirtioDriver", "WarmstartPorts", "WarmstartBench",
        ],
                          path: "Benchmarks/VirtioUserTX"),

        // Test-only C (netns entry, seccomp filter, setfsuid): calls the product never makes.
        .target(name: "CWarmstartTestShim", path: "Tests/CWarmstartTestShim"),
        // What the tests share: the one guest (TestGuest), the one vhost-user back-end peer
        // (InProcessBackend), the child-test harness (ChildTest) and the testpmd launcher
        // (TestpmdHarness). Not a product; only the lower modules it needs.
        .target(name: "WarmstartTestSupport", dependencies: [
            "CWarmstartShim", "WarmstartMemory", "WarmstartPools", "WarmstartSpec", "WarmstartVirtio",
            "WarmstartVirtioDriver", "WarmstartVhostUserWire", "WarmstartVhostUser",
            .product(name: "SystemPackage", package: "swift-system"),
        ],
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
        .testTarget(name: "WarmstartSpecTests", dependencies: ["WarmstartSpec"]),
        .testTarget(name: "WarmstartVirtioTests", dependencies: [
            "CWarmstartShim", "WarmstartMemory", "WarmstartPools", "WarmstartSpec", "WarmstartVirtio",
            "WarmstartVirtioDriver", "WarmstartTestSupport",
        ]),
        .testTarget(name: "WarmstartVhostUserWireTests", dependencies: ["CWarmstartShim", "WarmstartVhostUserWire", "WarmstartTestSupport"]),
        .testTarget(name: "WarmstartVhostUserTests", dependencies: [
            "CWarmstartShim", "WarmstartMemory", "WarmstartPools", "WarmstartBus", "WarmstartSpec",
            "WarmstartVirtio", "WarmstartVhostUser", "WarmstartVhostUserWire", "WarmstartTestSupport",
        ]),
        .testTarget(name: "WarmstartEngineTests", dependencies: [
            "CWarmstartShim", "WarmstartMemory", "WarmstartPools", "WarmstartEngine",
            "WarmstartTestSupport",
        ]),
        .testTarget(name: "WarmstartPortsTests", dependencies: [
            "CWarmstartShim", "WarmstartMemory", "WarmstartPools", "WarmstartIO", "WarmstartBus",
            "WarmstartSpec", "WarmstartVirtio", "WarmstartVhostUser", "WarmstartVhostUserWire", "WarmstartEngine", "WarmstartPorts",
            "CWarmstartTestShim", "WarmstartTestSupport",
        ]),
        .testTarget(name: "WarmstartHandoffTests", dependencies: [
            "CWarmstartShim", "WarmstartMemory", "WarmstartPools", "WarmstartSnapshot", "WarmstartSpec",
            "WarmstartVhostUser", "WarmstartVhostUserWire", "WarmstartEngine", "WarmstartHandoff",
        ]),
        .testTarget(name: "WarmstartBenchTests", dependencies: [
            "CWarmstartShim", "WarmstartMemory", "WarmstartPools", "WarmstartSnapshot", "WarmstartBus",
            "WarmstartEngine", "WarmstartRuntime", "WarmstartBench",
        ]),
        .testTarget(name: "WarmstartRuntimeTests", dependencies: [
            "CWarmstartShim", "WarmstartMemory", "WarmstartPools", "WarmstartSnapshot", "WarmstartBus",
            "WarmstartSpec", "WarmstartVirtio", "WarmstartVirtioDriver", "WarmstartVhostUserWire",
            "WarmstartVhostUser", "WarmstartEngine", "WarmstartPorts", "WarmstartHandoff",
            "WarmstartRuntime", "WarmstartBench", "WarmstartTestSupport",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Runs the warmstart executable, or Warmstart's ports in-process (payload checks), against
        // DPDK's testpmd; skips without testpmd/hugepages.
        .testTarget(name: "WarmstartInteropTests", dependencies: [
            "WarmstartPools", "WarmstartSnapshot", "WarmstartBus", "WarmstartSpec", "WarmstartVirtio",
            "WarmstartVhostUser", "WarmstartEngine", "WarmstartPorts", "WarmstartTestSupport",
        ]),
    ],
    swiftLanguageModes: [.v5]
)
