import Foundation
import XCTest
import WarmstartMemory
import WarmstartPools
import WarmstartSnapshot
@testable import WarmstartRuntime

final class MemoryBootTests: XCTestCase {
    var path = ""
    let cfg = SnapshotConfig(pool: MbufPoolConfig(count: 256))

    override func setUp() { path = "/dev/shm/warmstart-boot-test-\(getpid()).snap" }
    override func tearDown() { unlink(path) }

    func boot(_ options: MemoryOptions) throws -> (LiveMemory, BootReport.Snapshot, [BootPhase], [String]) {
        let rec = PhaseRecorder(clock: BootClock(environment: [:]))
        var warnings: [String] = []
        let (live, snap) = try MemoryBoot.boot(options, recorder: rec) { warnings.append($0) }
        return (live, snap, rec.phases, warnings)
    }

    func testFirstRunCreatesThenRestores() throws {
        let opts = MemoryOptions(snapshot: cfg, hugepages: .off, snapshotPath: path, createIfMissing: true)
        let (_, first, phases1, _) = try boot(opts)
        XCTAssertEqual(first.outcome, "created")
        XCTAssertTrue(phases1.contains { $0.name == "hugepage-init" })
        let (live, second, phases2, warnings) = try boot(opts)
        XCTAssertEqual(second.outcome, "restored")
        XCTAssertEqual(live.origin, .restoredResident)
        XCTAssertEqual(Set(phases2.map(\.name)), ["snapshot-open", "snapshot-map", "mbuf-init"])
        XCTAssertTrue(warnings.isEmpty)
        XCTAssertEqual(phases2.first { $0.name == "mbuf-init" }?.budgetMs, Budgets.mbufs(256).0)
    }

    func testCorruptSnapshotFallsBackColdWithAWarning() throws {
        let opts = MemoryOptions(snapshot: cfg, hugepages: .off, snapshotPath: path, createIfMissing: true)
        _ = try boot(opts)
        let fd = open(path, O_RDWR)
        var b: UInt8 = 0
        pread(fd, &b, 1, 300)
        b ^= 0x10
        pwrite(fd, &b, 1, 300)
        close(fd)
        let (live, snap, _, warnings) = try boot(opts)
        XCTAssertEqual(snap.outcome, "cold-fallback")
        XCTAssertEqual(live.origin, .cold)
        XCTAssertTrue(snap.reason!.contains("CRC-32C"), snap.reason!)
        XCTAssertEqual(warnings.count, 1)
        XCTAssertTrue(warnings[0].contains(path))
        XCTAssertEqual(live.mbufPool.availableCount, 256, "the cold pool is whole")
    }

    func testFallbackFailThrows() throws {
        var opts = MemoryOptions(snapshot: cfg, hugepages: .off, snapshotPath: path, createIfMissing: false, fallback: .fail)
        XCTAssertThrowsError(try boot(opts)) { XCTAssertTrue("\($0)".contains("no such file"), "\($0)") }
        opts.createIfMissing = true
        XCTAssertNoThrow(try boot(opts))
        opts.snapshot = SnapshotConfig(pool: MbufPoolConfig(count: 300))
        opts.createIfMissing = false
        XCTAssertThrowsError(try boot(opts)) { XCTAssertTrue("\($0)".contains("mbufs is 256 in the snapshot, 300 requested"), "\($0)") }
    }

    func testColdBootWithoutSnapshot() throws {
        let (live, snap, phases, _) = try boot(MemoryOptions(snapshot: cfg, hugepages: .off))
        XCTAssertEqual(snap.outcome, "none")
        XCTAssertEqual(live.origin, .cold)
        XCTAssertEqual(phases.map(\.name), ["hugepage-init", "mbuf-init"])
        let mem = MemoryBoot.memorySection(live, mode: .off)
        XCTAssertEqual(mem.backing, "memfd")
        XCTAssertEqual(mem.pageSize, "4K")
    }

    func testBootClockUsesTheLauncherTimestamp() {
        let now = BootClock(environment: [:]).mainNs
        let c = BootClock(environment: ["WARMSTART_EXEC_NS": String(now - 5_000_000)])
        XCTAssertFalse(c.coarse)
        XCTAssertGreaterThanOrEqual(c.ms(c.mainNs), 5.0)
        XCTAssertLessThan(c.ms(c.mainNs), 1000)
        let epoch = String(format: "%.6f", Date().timeIntervalSince1970 - 0.003)
        let e = BootClock(environment: ["WARMSTART_EXEC_EPOCH": epoch])
        XCTAssertFalse(e.coarse)
        XCTAssertGreaterThanOrEqual(e.ms(e.mainNs), 2.0)
        XCTAssertLessThan(e.ms(e.mainNs), 1000)
        let coarse = BootClock(environment: ["WARMSTART_EXEC_NS": "garbage"])
        XCTAssertTrue(coarse.coarse)
    }
}
