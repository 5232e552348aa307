import XCTest
import WarmstartMemory
import WarmstartPools
@testable import WarmstartSnapshot

/// Snapshots/golden-v1.0.snap and golden-v1.1.snap were written by formats 1.0 and 1.1 and are
/// committed: any change that makes this build unable to read them (or read them differently)
/// breaks existing files in the field.
final class GoldenSnapshotTests: XCTestCase {
    static func golden(_ version: String) -> String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Snapshots/golden-v\(version).snap").path
    }
    static let config = SnapshotConfig(pool: MbufPoolConfig(count: 64, headroom: 128, dataRoom: 2048, cacheSize: 32),
                                       memoryBytes: 1 << 20)

    /// Opens a copy on tmpfs (the golden files are resident-format, and a resident snapshot lives on
    /// tmpfs/hugetlbfs), restores it and takes every mbuf.
    func checkReads(_ version: String, minor: UInt16, elementsAt: Int) throws -> LiveMemory {
        let dir = ScratchDir(under: "/dev/shm")
        let path = dir.file("golden.snap")
        try FileManager.default.copyItem(atPath: Self.golden(version), toPath: path)
        XCTAssertEqual(chmod(path, 0o600), 0) // a checkout may leave it group/other writable
        let file = try SnapshotFile.open(path: path)
        XCTAssertEqual(file.header.major, 1)
        XCTAssertEqual(file.header.minor, minor)
        XCTAssertEqual(file.header.writer, "warmstart 0.1.0")
        XCTAssertTrue(file.isResident)
        XCTAssertEqual(file.layout.pageSize, .small4K)
        XCTAssertEqual(file.layout.regions.map(\.name), ["mbufs", "general"])
        XCTAssertEqual(file.layout.regions[0].ioAddress, 1 << 32)
        XCTAssertEqual(file.layout.pools.count, 1)
        XCTAssertEqual(file.layout.pools[0].config, Self.config.pool)
        XCTAssertEqual(file.layout.pools[0].elementSize, 2240)
        XCTAssertEqual(file.layout.elementsOffset(of: file.layout.pools[0]), elementsAt)
        XCTAssertTrue(try SnapshotVerifier.verify(path: path).ok)
        let live = try LiveMemory.restore(from: file)
        var n = 0
        while let m = live.mbufPool.alloc() {
            XCTAssertEqual(m.header - live.regions[0].base, elementsAt + Int(m.index) * 2240)
            n += 1
        }
        XCTAssertEqual(n, 64)
        return live
    }

    /// 1.0: the pool record covers control block, ring and elements; the elements come after the
    /// first two, and the control block the file still holds is not used (kept private).
    func testGoldenV10StillReads() throws {
        let live = try checkReads("1.0", minor: 0, elementsAt: MbufPoolConfig.metadataBytes(Self.config.pool))
        XCTAssertFalse(live.sharedRegions.contains { $0 === live.mbufPool.metadataRegion })
    }

    func testGoldenV11Reads() throws {
        let live = try checkReads("1.1", minor: 1, elementsAt: 0)
        XCTAssertEqual(live.mbufPool.elementRange, 0..<live.regions[0].size, "the packet region is the elements, nothing else")
    }

    func testGoldenBytesMatchWhatThisBuildWrites() throws {
        // Same layout written today gives the same header and metadata (the creation time aside).
        let dir = ScratchDir(under: "/dev/shm")
        let path = dir.file("fresh.snap")
        try SnapshotWriter.create(path: path, config: Self.config, createdUnixSeconds: 1_764_000_000)
        let a = try Data(contentsOf: URL(fileURLWithPath: Self.golden("1.1"))).prefix(4096)
        let b = try Data(contentsOf: URL(fileURLWithPath: path)).prefix(4096)
        XCTAssertEqual(a, b, "format 1.1 header and metadata changed")
    }
}
