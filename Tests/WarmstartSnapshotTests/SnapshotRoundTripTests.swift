import XCTest
import WarmstartMemory
import WarmstartPools
@testable import WarmstartSnapshot

final class SnapshotRoundTripTests: XCTestCase {
    func testCRC32CKnownVector() {
        // RFC 3720 B.4: 32 bytes of zeros → 0x8A9136AA; "123456789" → 0xE3069283.
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0, count: 32)), 0x8A91_36AA)
        XCTAssertEqual(CRC32C.checksum(Array("123456789".utf8)), 0xE306_9283)
    }

    func testResidentRoundTripOnTmpfs() throws {
        let dir = ScratchDir(under: "/dev/shm")
        let path = dir.file("a.snap")
        let layout = try SnapshotWriter.create(path: path, config: Fixture.small)
        XCTAssertEqual(layout.pageSize, .small4K)
        let file = try SnapshotFile.open(path: path)
        XCTAssertTrue(file.isResident)
        XCTAssertEqual(file.layout, layout)
        let live = try LiveMemory.restore(from: file)
        XCTAssertEqual(live.origin, .restoredResident)
        XCTAssertEqual(live.pools.count, 1)
        XCTAssertEqual(live.mbufPool.availableCount, 512)
        // Every mbuf can be taken once, then the pool is empty.
        var seen = Set<UInt32>()
        while let m = live.mbufPool.alloc() { XCTAssertTrue(seen.insert(m.index).inserted) }
        XCTAssertEqual(seen.count, 512)
        XCTAssertEqual(live.table.entries.count, 2)
        XCTAssertEqual(live.table.entries[0].guestAddress, SnapshotLayout.ioBase)
    }

    func testRestoreIsPristineAfterUse() throws {
        let dir = ScratchDir(under: "/dev/shm")
        let path = dir.file("b.snap")
        try SnapshotWriter.create(path: path, config: Fixture.small)
        do {
            let live = try LiveMemory.restore(from: try SnapshotFile.open(path: path))
            // Use the pool and leave it dirty: mbufs held, headers scribbled.
            for _ in 0..<300 {
                let m = live.mbufPool.alloc()!
                m.dataLength = 999
                m.refCount = 7
            }
        }
        let again = try LiveMemory.restore(from: try SnapshotFile.open(path: path))
        XCTAssertEqual(again.mbufPool.availableCount, 512, "restore resets the pool whatever the last run left")
        let m = again.mbufPool.alloc()!
        XCTAssertEqual(m.dataLength, 0)
        XCTAssertEqual(m.refCount, 1)
        XCTAssertEqual(Int(m.dataOffset), 128)
        // The payload is still a valid image.
        XCTAssertTrue(try SnapshotVerifier.verify(path: path).ok)
    }

    func testDiskSnapshotKeepsLayoutOnly() throws {
        let dir = ScratchDir(under: NSTemporaryDirectory().hasPrefix("/tmp") ? "/tmp" : NSTemporaryDirectory())
        let (kind, _) = try FileSystemKind.of(path: dir.path)
        try XCTSkipIf(kind != .disk, "scratch directory is on \(kind), not a disk file system")
        let path = dir.file("c.snap")
        try SnapshotWriter.create(path: path, config: Fixture.small)
        let file = try SnapshotFile.open(path: path)
        XCTAssertFalse(file.isResident)
        var st = stat()
        stat(path, &st)
        XCTAssertLessThan(Int(st.st_blocks) * 512, 64 * 1024, "region extents are holes")
        let live = try LiveMemory.restore(from: file, hugepages: .off)
        XCTAssertEqual(live.origin, .restoredDisk)
        XCTAssertEqual(live.backing, .memfd)
        XCTAssertEqual(live.mbufPool.availableCount, 512)
        XCTAssertNotNil(live.mbufPool.alloc())
        let report = try SnapshotVerifier.verify(path: path)
        XCTAssertTrue(report.ok)
        XCTAssertTrue(report.checks.last!.detail.contains("disk snapshot"))
    }

    func testCreateReplacesAtomicallyAndLeavesNoTemp() throws {
        let dir = ScratchDir(under: "/dev/shm")
        let path = dir.file("d.snap")
        try SnapshotWriter.create(path: path, config: Fixture.small)
        try SnapshotWriter.create(path: path, config: SnapshotConfig(pool: MbufPoolConfig(count: 256)))
        XCTAssertEqual(try SnapshotFile.open(path: path).layout.pools[0].config.count, 256)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["d.snap"])
    }

    func testMemoryOptionSizesGeneralRegion() throws {
        let pool = MbufPoolConfig(count: 512)
        let needed = MbufPoolConfig.elementBytes(pool) // format 1.1: the file holds the elements only
        let l = try SnapshotLayout.plan(SnapshotConfig(pool: pool, memoryBytes: needed + (1 << 20)), pageSize: .small4K)
        XCTAssertEqual(l.regions.count, 2)
        XCTAssertEqual(l.regions[1].size, 1 << 20)
        XCTAssertEqual(l.memoryBytes, UInt64(needed + (1 << 20)))
        XCTAssertThrowsError(try SnapshotLayout.plan(SnapshotConfig(pool: pool, memoryBytes: needed - 4096), pageSize: .small4K)) {
            XCTAssertTrue("\($0)".contains("less than"), "\($0)")
        }
        XCTAssertThrowsError(try SnapshotLayout.plan(SnapshotConfig(pool: MbufPoolConfig(count: 0)), pageSize: .small4K))
    }

    func testColdLayoutWithoutHugepages() throws {
        let live = try LiveMemory.coldLayout(Fixture.small, hugepages: .off)
        XCTAssertEqual(live.origin, .cold)
        XCTAssertEqual(live.pageSize, .small4K)
        XCTAssertEqual(live.backing, .memfd)
        XCTAssertEqual(live.mbufPool.availableCount, 512)
        XCTAssertTrue(live.mbufPool.verifyImage().isEmpty)
    }

    func testHugepageSnapshotRoundTrip() throws {
        guard let mount = Fixture.hugetlbfsMount else {
            throw XCTSkip("no hugetlbfs mount with 24 free 2M pages: hugepage snapshot case skipped")
        }
        let dir = ScratchDir(under: mount)
        let path = dir.file("h.snap")
        let before = Hugepages.pool(.huge2M)!.free
        let layout = try SnapshotWriter.create(path: path, config: Fixture.small)
        XCTAssertEqual(layout.pageSize, .huge2M)
        do {
            let live = try LiveMemory.restore(from: try SnapshotFile.open(path: path))
            XCTAssertEqual(live.backing, .hugetlbfs)
            XCTAssertEqual(live.pageSize, .huge2M)
            XCTAssertNotNil(live.mbufPool.alloc())
            XCTAssertTrue(try SnapshotVerifier.verify(path: path).ok)
        }
        // A 4K page size on hugetlbfs is refused with the reason.
        XCTAssertThrowsError(try SnapshotWriter.create(path: dir.file("x.snap"), config: Fixture.small, pageSize: .small4K)) {
            guard case SnapshotError.pageSizeUnavailable = $0 else { return XCTFail("\($0)") }
        }
        unlink(path)
        XCTAssertEqual(Hugepages.pool(.huge2M)!.free, before, "the snapshot's pages are returned when it is removed")
    }

    func testColdLayoutInHugepages() throws {
        guard let pool = Hugepages.pool(.huge2M), pool.available >= 24 else {
            throw XCTSkip("fewer than 24 free 2M hugepages: cold hugepage case skipped")
        }
        let live = try LiveMemory.coldLayout(Fixture.small, hugepages: .require)
        XCTAssertEqual(live.backing, .memfdHugetlb)
        XCTAssertEqual(live.pageSize, .huge2M)
        XCTAssertNotNil(live.mbufPool.alloc())
    }
}
