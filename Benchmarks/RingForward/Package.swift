// swift-tools-version:5.9
// Same-thread device-side cost of forwarding through Warmstart's virtio rings (see
// Sources/RingForward/main.swift). A plain executable, so it runs under callgrind:
//   swift build -c release && valgrind --tool=callgrind --toggle-collect='*deviceStep*' \
//     .build/release/RingForward packed 64 20000      # Ir / (20000 × 32) = instructions per frame
// (valgrind 3.19 cannot read Swift 6's DWARF 5: `objcopy --strip-debug` the binary first.)
import PackageDescription
let package = Package(
    name: "RingForward",
    dependencies: [.package(name: "warmstart", path: "../..")],
    targets: [.executableTarget(name: "RingForward", dependencies: [.product(name: "WarmstartRuntime", package: "warmstart")],
        swiftSettings: [.unsafeFlags(["-Ounchecked", "-enforce-exclusivity=unchecked"])])]
)
