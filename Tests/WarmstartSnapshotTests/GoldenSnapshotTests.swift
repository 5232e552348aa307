import XCTest
import WarmstartMemory
import WarmstartPools
@testable import WarmstartSnapshot

/// Snapshots/golden-v1.0.snap was written by format 1.0 and is committed: any change that makes this
/// build unable to read it (or read it differently) breaks existing files in the field.
final class GoldenSnapshotTests: XCTestCase {
    static var golden: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Snapshots/golden-v1.0.snap").path
    }

    func testGoldenSnapshotStillReads() throws {
        // Copy to tmpfs: the golden file is resident-format, and a resident snapshot lives on tmpfs/hugetlbfs.
        let dir = ScratchDir(under: "/dev/shm")
        let path = dir.file("golden.snap")
        try FileManager.default.copyItem(atPath: Self.golden, toPath: path)
        let file = try SnapshotFile.open(path: path)
        XCTAssertEqual(file.header.major, 1)
        XCTAssertEqual(file.header.minor, 0)
        XCTAssertEqual(file.header.writer, "warmstart 0.1.0")
        XCTAssertTrue(file.isResident)
        XCTAssertEqual(file.layout.pageSize, .small4K)
        XCTAssertEqual(file.layout.regions.map(\.name), ["mbufs", "general"])
        XCTAssertEqual(file.layout.regions[0].ioAddress, 1 << 32)
        XCTAssertEqual(file.layout.pools.count, 1)
        XCTAssertEqual(file.layout.pools[0].config, MbufPoolConfig(count: 64, headroom: 128, dataRoom: 2048, cacheSize: 32))
        XCTAssertEqual(file.layout.pools[0].elementSize, 2240)
        XCTAssertTrue(try SnapshotVerifier.verify(path: path).ok)
        let live = try LiveMemory.restore(from: file)
        var n = 0
        while live.mbufPool.alloc() != nil { n += 1 }
        XCTAssertEqual(n, 64)
    }

    func testGoldenBytesMatchWhatThisBuildWrites() throws {
        // Same layout written today gives the same header and metadata (the creation time aside).
        let dir = ScratchDir(under: "/dev/shm")
        let path = dir.file("fresh.snap")
        let cfg = SnapshotConfig(pool: MbufPoolConfig(count: 64, headroom: 128, dataRoom: 2048, cacheSize: 32),
                                 memoryBytes: 1 << 20)
        try SnapshotWriter.create(path: path, config: cfg, createdUnixSeconds: 1_764_000_000)
        let a = try Data(contentsOf: URL(fileURLWithPath: Self.golden)).prefix(4096)
        let b = try Data(contentsOf: URL(fileURLWithPath: path)).prefix(4096)
        XCTAssertEqual(a, b, "format 1.0 header and metadata changed")
    }
}
