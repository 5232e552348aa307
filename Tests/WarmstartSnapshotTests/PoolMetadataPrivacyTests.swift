import XCTest
import WarmstartMemory
import WarmstartPools
@testable import WarmstartSnapshot

/// However memory boots, the pools' control blocks and free rings live in a region of their own
/// that is not among the regions a peer may be given (`sharedRegions`), and the packet region
/// holds the elements only.
final class PoolMetadataPrivacyTests: XCTestCase {
    func assertPrivate(_ live: LiveMemory, file: StaticString = #filePath, line: UInt = #line) {
        let pool = live.mbufPool
        XCTAssertTrue(pool.hasSeparateMetadata, file: file, line: line)
        XCTAssertEqual(live.sharedRegions.map(\.name), ["mbufs", "general"], file: file, line: line)
        XCTAssertEqual(live.regions.count, 3, "the metadata region is still one of the live regions (handoff)", file: file, line: line)
        for r in live.sharedRegions {
            XCTAssertFalse(pool.base >= r.base && pool.base < r.base + r.size, "control block inside '\(r.name)'", file: file, line: line)
            XCTAssertNotEqual(r.fd.rawValue, pool.metadataRegion.fd.rawValue, file: file, line: line)
        }
        XCTAssertTrue(pool.region === live.regions[0], file: file, line: line)
        XCTAssertTrue(live.generalRegion === live.regions[1], file: file, line: line)
        XCTAssertEqual(live.totalBytes, live.sharedRegions.reduce(0) { $0 + $1.size }, file: file, line: line)
        var n = 0
        while pool.alloc() != nil { n += 1 }
        XCTAssertEqual(n, pool.config.count, file: file, line: line)
    }

    func testColdLayout() throws {
        assertPrivate(try LiveMemory.coldLayout(SnapshotConfig(pool: MbufPoolConfig(count: 512)), hugepages: .off))
    }

    func testResidentRestore() throws {
        let dir = ScratchDir(under: "/dev/shm")
        let path = dir.file("p.snap")
        try SnapshotWriter.create(path: path, config: SnapshotConfig(pool: MbufPoolConfig(count: 512)))
        let live = try LiveMemory.restore(from: try SnapshotFile.open(path: path))
        XCTAssertEqual(live.origin, .restoredResident)
        assertPrivate(live)
        // The snapshot file (the fd a peer would get for both shared regions) holds no control block.
        XCTAssertEqual(live.mbufPool.elementRange, 0..<live.regions[0].size)
    }

    func testDiskRestore() throws {
        let dir = ScratchDir(under: FileManager.default.temporaryDirectory.path)
        let path = dir.file("p.snap")
        try SnapshotWriter.create(path: path, config: SnapshotConfig(pool: MbufPoolConfig(count: 512)))
        let file = try SnapshotFile.open(path: path)
        try XCTSkipIf(file.isResident, "the temporary directory is tmpfs")
        let live = try LiveMemory.restore(from: file, hugepages: .off)
        assertPrivate(live)
    }
}
