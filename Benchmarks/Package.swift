// swift-tools-version:6.1
// Warmstart's package-benchmark suites, kept out of the main package so its tests never build
// the benchmark framework. Run: ./run.sh (reserves hugepages for the 1M-mbuf cases, then puts
// the reservation back).
import PackageDescription

let package = Package(
    name: "warmstart-benchmarks",
    platforms: [.macOS(.v13)],
    dependencies: [
        .package(name: "warmstart", path: ".."),
        .package(url: "https://github.com/ordo-one/package-benchmark", from: "1.38.0", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "MemoryBoot",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "WarmstartRuntime", package: "warmstart"),
            ],
            path: "Benchmarks/MemoryBoot",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        // VirtioUserTX (the generator's instructions per packet) is a target of the main package:
        // it drives WarmstartBench, which is in no product.
    ]
)
