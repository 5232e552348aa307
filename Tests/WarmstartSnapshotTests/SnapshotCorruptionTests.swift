import XCTest
import WarmstartMemory
import WarmstartPools
@testable import WarmstartSnapshot

/// The corruption matrix: each way a snapshot can be wrong gets its own clear error.
final class SnapshotCorruptionTests: XCTestCase {
    var dir: ScratchDir!
    var path: String!

    override func setUpWithError() throws {
        dir = ScratchDir(under: "/dev/shm")
        path = dir.file("s.snap")
        try SnapshotWriter.create(path: path, config: Fixture.small)
    }

    override func tearDown() { dir = nil }

    func assertOpenFails(_ check: (SnapshotError) -> Bool, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try SnapshotFile.open(path: path), file: file, line: line) { error in
            guard let e = error as? SnapshotError else { return XCTFail("not a SnapshotError: \(error)", file: file, line: line) }
            XCTAssertTrue(check(e), "unexpected error: \(e)", file: file, line: line)
            XCTAssertTrue("\(e)".contains(path), "the error names the file: \(e)", file: file, line: line)
        }
    }

    func testMissingFile() {
        XCTAssertThrowsError(try SnapshotFile.open(path: dir.file("none.snap"))) {
            XCTAssertTrue("\($0)".contains("no such file"), "\($0)")
        }
    }

    func testWrongMagic() {
        Fixture.flip(path, offset: 0)
        assertOpenFails { if case .badMagic = $0 { return true }; return false }
    }

    func testNotASnapshotAtAll() throws {
        try Data("hello, this is not a snapshot\n".utf8).write(to: URL(fileURLWithPath: path))
        assertOpenFails { if case .truncated = $0 { return true }; return false }
    }

    func testUnsupportedMajorVersion() {
        Fixture.patchHeader(path) { $0.storeBytes(of: UInt16(2).littleEndian, toByteOffset: 8, as: UInt16.self) }
        assertOpenFails { if case .unsupportedVersion(_, 2, SnapshotHeader.formatMinor) = $0 { return true }; return false }
    }

    func testNewerMinorVersion() {
        Fixture.patchHeader(path) { $0.storeBytes(of: UInt16(7).littleEndian, toByteOffset: 10, as: UInt16.self) }
        assertOpenFails { if case .unsupportedVersion(_, 1, 7) = $0 { return true }; return false }
    }

    func testTruncatedFile() {
        let size = Int(try! SnapshotFile.open(path: path).header.fileSize)
        truncate(path, off_t(size - 4096))
        assertOpenFails { if case .truncated = $0 { return true }; return false }
    }

    func testTruncatedToHeaderOnly() {
        truncate(path, 100)
        assertOpenFails { if case .truncated = $0 { return true }; return false }
    }

    func testFlippedBitsInHeaderFields() throws {
        // Every header field after the magic and version is covered by the CRC.
        for offset in [12, 20, 48, 56, 64, 80, 84, 104, 116, 124, 128, 200, 252] {
            try SnapshotWriter.create(path: path, config: Fixture.small)
            Fixture.flip(path, offset: offset, bit: 3)
            XCTAssertThrowsError(try SnapshotFile.open(path: path), "bit flip at header offset \(offset)") { e in
                XCTAssertTrue(e is SnapshotError, "\(e)")
            }
        }
    }

    func testFlippedBitInMetadata() {
        Fixture.flip(path, offset: SnapshotHeader.size + 20, bit: 5)
        assertOpenFails { if case .checksumMismatch = $0 { return true }; return false }
    }

    func testMetadataLiesBehindAValidChecksum() {
        // A region pushed past the end of the file, CRC recomputed: caught by the geometry checks.
        Fixture.patchHeader(path) { p in
            let regionOffset = SnapshotHeader.size + 24  // region 0 fileOffset
            p.storeBytes(of: UInt64(1 << 40).littleEndian, toByteOffset: regionOffset, as: UInt64.self)
        }
        assertOpenFails { if case .corruptMetadata(_, let r) = $0 { return r.contains("outside the file") }; return false }
    }

    func testPoolConfigLiesBehindAValidChecksum() {
        Fixture.patchHeader(path) { p in
            let poolCount = SnapshotHeader.size + 2 * RegionRecord.size + 32
            p.storeBytes(of: UInt64(900_000).littleEndian, toByteOffset: poolCount, as: UInt64.self)
        }
        assertOpenFails { if case .corruptMetadata = $0 { return true }; return false }
    }

    func testFlippedBitsInPayloadAreFoundByVerify() throws {
        XCTAssertTrue(try SnapshotVerifier.verify(path: path).ok)
        let file = try SnapshotFile.open(path: path)
        let pool = file.layout.regions[0].fileOffset
        // The 10th element's index word.
        let elements = Int(pool) + file.layout.elementsOffset(of: file.layout.pools[0])
        Fixture.flip(path, offset: elements + 10 * Fixture.small.pool.elementSize + MbufLayout.index, bit: 1)
        // The header is intact, so inspect (and a boot) still open it ...
        XCTAssertTrue(try SnapshotVerifier.inspect(path: path).ok)
        // ... but verify reads the payload and names the element.
        let report = try SnapshotVerifier.verify(path: path)
        XCTAssertFalse(report.ok)
        XCTAssertTrue(report.checks.last!.detail.contains("element 10"), report.checks.last!.detail)
        // A boot never trusts those words: restore resets the pool and alloc rewrites every header.
        let live = try LiveMemory.restore(from: try SnapshotFile.open(path: path))
        var indices = Set<UInt32>()
        while let m = live.mbufPool.alloc() { indices.insert(m.index) }
        XCTAssertEqual(indices.count, 512)
        XCTAssertTrue(indices.contains(10))
    }

    func testLayoutMismatchWithRequestedConfiguration() throws {
        let file = try SnapshotFile.open(path: path)
        XCTAssertNoThrow(try file.check(against: Fixture.small))
        for (cfg, field) in [
            (SnapshotConfig(pool: MbufPoolConfig(count: 1000)), "mbufs"),
            (SnapshotConfig(pool: MbufPoolConfig(count: 512, dataRoom: 4096)), "data room"),
            (SnapshotConfig(pool: MbufPoolConfig(count: 512, headroom: 256)), "headroom"),
            (SnapshotConfig(pool: MbufPoolConfig(count: 512), memoryBytes: 64 << 20), "memory"),
        ] {
            XCTAssertThrowsError(try file.check(against: cfg)) { e in
                guard case SnapshotError.layoutMismatch(_, let f, _, _) = e else { return XCTFail("\(e)") }
                XCTAssertEqual(f, field)
            }
        }
    }

    func testPageSizeTheFileSystemDoesNotGive() {
        // A snapshot on tmpfs that claims 2M pages: tmpfs gives 4K.
        Fixture.patchHeader(path) { $0.storeBytes(of: UInt64(2 << 20).littleEndian, toByteOffset: 48, as: UInt64.self) }
        assertOpenFails { if case .pageSizeUnavailable = $0 { return true }; return false }
        XCTAssertThrowsError(try SnapshotWriter.create(path: dir.file("p.snap"), config: Fixture.small, pageSize: .huge2M)) {
            guard case SnapshotError.pageSizeUnavailable(_, let rec, let gives) = $0 else { return XCTFail("\($0)") }
            XCTAssertEqual(rec, 2 << 20)
            XCTAssertEqual(gives, 4096)
            XCTAssertTrue("\($0)".contains("hugetlbfs"), "the error says where 2M pages can be had: \($0)")
        }
    }

    func testDirectoryIsNotASnapshot() {
        XCTAssertThrowsError(try SnapshotFile.open(path: dir.path)) { XCTAssertTrue("\($0)".contains(dir.path), "\($0)") }
    }

    func testCreateInMissingDirectory() {
        XCTAssertThrowsError(try SnapshotWriter.create(path: "/nonexistent-dir-ws/x.snap", config: Fixture.small)) {
            guard case SnapshotError.cannotCreate(let p, _) = $0 else { return XCTFail("\($0)") }
            XCTAssertEqual(p, "/nonexistent-dir-ws/x.snap")
        }
    }
}
