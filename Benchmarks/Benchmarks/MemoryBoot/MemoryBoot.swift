// The fast-boot core's figures (issue: fast-boot core §6): cold lay-out of 1,000,000 mbufs,
// restore of the same from a resident (hugetlbfs) and from a disk snapshot, and a 32-burst
// alloc+free through a per-thread cache.
import Benchmark
import Foundation
import WarmstartMemory
import WarmstartPools
import WarmstartSnapshot

let mbufs = Int(ProcessInfo.processInfo.environment["WARMSTART_BENCH_MBUFS"] ?? "") ?? 1_000_000
let config = SnapshotConfig(pool: MbufPoolConfig(count: mbufs))
let hugepages: HugepageMode = ProcessInfo.processInfo.environment["WARMSTART_BENCH_HUGEPAGES"] == "off" ? .off : .auto

/// A snapshot file created once for the restore benchmarks, removed at exit.
final class SnapshotFixture: @unchecked Sendable {
    let path: String
    init?(directory: String) {
        path = "\(directory)/warmstart-bench-\(getpid()).snap"
        do { try SnapshotWriter.create(path: path, config: config) } catch {
            print("benchmark: cannot create \(path): \(error)")
            return nil
        }
    }
    deinit { unlink(path) }
}

nonisolated(unsafe) var resident: SnapshotFixture?
nonisolated(unsafe) var disk: SnapshotFixture?

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .cpuTotal, .mallocCountTotal],
                                           timeUnits: .microseconds, warmupIterations: 1,
                                           maxDuration: .seconds(20), maxIterations: 25)

    Benchmark("cold lay-out, \(mbufs) mbufs (hugepage-init + mbuf-init)",
              configuration: .init(maxIterations: 7)) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try LiveMemory.coldLayout(config, hugepages: hugepages))
        }
    }

    Benchmark("restore, \(mbufs) mbufs, resident snapshot (hugetlbfs or tmpfs)",
              configuration: .init(setup: {
                  let dir = Hugepages.mount(for: .huge2M).map(\.path) ?? "/dev/shm"
                  resident = SnapshotFixture(directory: hugepages == .off ? "/dev/shm" : dir)
              }, teardown: { resident = nil })) { benchmark in
        guard let f = resident else { return }
        for _ in benchmark.scaledIterations {
            let file = try SnapshotFile.open(path: f.path)
            blackHole(try LiveMemory.restore(from: file, hugepages: hugepages))
        }
    }

    Benchmark("restore, \(mbufs) mbufs, disk snapshot (pages faulted on use)",
              configuration: .init(setup: { disk = SnapshotFixture(directory: "/var/tmp") },
                                   teardown: { disk = nil })) { benchmark in
        guard let f = disk else { return }
        for _ in benchmark.scaledIterations {
            let file = try SnapshotFile.open(path: f.path)
            blackHole(try LiveMemory.restore(from: file, hugepages: hugepages))
        }
    }

    Benchmark("mbuf alloc+free, 32-burst through a cache",
              configuration: .init(metrics: [.wallClock, .instructions, .mallocCountTotal], timeUnits: .nanoseconds,
                                   scalingFactor: .mega, maxDuration: .seconds(5))) { benchmark in
        let live = try LiveMemory.coldLayout(SnapshotConfig(pool: MbufPoolConfig(count: 8192)), hugepages: .off)
        let cache = MbufCache(pool: live.mbufPool, size: 256)
        let burst = UnsafeMutablePointer<Mbuf>.allocate(capacity: 32)
        defer { burst.deallocate() }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            _ = cache.allocBulk(burst, count: 32)
            cache.freeBulk(burst, count: 32)
        }
        benchmark.stopMeasurement()
        withExtendedLifetime(live) {}
    }
}
