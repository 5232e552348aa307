import XCTest
@testable import WarmstartMemory

final class MemoryRegionTests: XCTestCase {
    func testPageSizeParsingAndRounding() {
        XCTAssertEqual(PageSize(parsing: "2M"), .huge2M)
        XCTAssertEqual(PageSize(parsing: "1gib"), .huge1G)
        XCTAssertEqual(PageSize(parsing: "4KB"), .small4K)
        XCTAssertNil(PageSize(parsing: "3M"))
        XCTAssertEqual(PageSize.huge2M.roundUp(1), 2 << 20)
        XCTAssertEqual(PageSize.small4K.roundUp(8192), 8192)
        XCTAssertNil(PageSize.huge2M.roundUp(Int.max))
    }

    func testMemfdRegionIsSharedThroughItsFD() throws {
        let r = try MemoryRegion.memfd(name: "t", size: 64 << 10, pageSize: .small4K, ioAddress: 0x1000_0000)
        XCTAssertEqual(r.backing, .memfd)
        r.base.storeBytes(of: 0xABCD_EF01, toByteOffset: 4096, as: UInt32.self)
        // A second mapping of the same fd (what a vhost-user peer does) sees the same bytes.
        let again = try MemoryRegion(name: "peer", fd: r.fd, fileOffset: 4096, size: 4096, pageSize: .small4K,
                                     backing: .memfd, ownsFD: false)
        XCTAssertEqual(again.base.load(as: UInt32.self), 0xABCD_EF01)
        XCTAssertNil(r.pointer(at: 64 << 10, length: 1))
        XCTAssertNotNil(r.pointer(at: (64 << 10) - 1, length: 1))
    }

    func testSizeMustBeAPageMultiple() {
        XCTAssertThrowsError(try MemoryRegion.memfd(name: "t", size: 5000, pageSize: .small4K)) {
            XCTAssertEqual($0 as? MemoryError, .sizeNotPageMultiple(size: 5000, pageSize: .small4K))
            XCTAssertTrue("\($0)".contains("not a multiple of the page size 4K"))
        }
        XCTAssertThrowsError(try MemoryRegion.memfd(name: "t", size: 0, pageSize: .small4K))
    }

    func testNotEnoughHugepagesSaysHowManyAreFreeAndHowToReserve() throws {
        guard let pool = Hugepages.pool(.huge2M) else { throw XCTSkip("no 2M hugepages in this kernel") }
        let tooMany = (pool.available + 1) * PageSize.huge2M.bytes
        XCTAssertThrowsError(try MemoryRegion.memfd(name: "big", size: tooMany, pageSize: .huge2M)) { e in
            guard case MemoryError.notEnoughHugepages(_, let needed, let free) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(needed, pool.available + 1)
            XCTAssertEqual(free, pool.available)
            XCTAssertTrue("\(e)".contains("nr_hugepages"), "\(e)")
        }
        XCTAssertThrowsError(try MemoryRegion.choosePageSize(bytes: tooMany, mode: .require, preferred: .huge2M))
        XCTAssertEqual(try MemoryRegion.choosePageSize(bytes: tooMany, mode: .auto, preferred: .huge2M), .small4K)
        XCTAssertEqual(try MemoryRegion.choosePageSize(bytes: 4096, mode: .off, preferred: .huge2M), .small4K)
    }

    func testHugepageRegionWhenAvailable() throws {
        guard let pool = Hugepages.pool(.huge2M), pool.available >= 2 else {
            throw XCTSkip("fewer than 2 free 2M hugepages: hugepage region case skipped")
        }
        let r = try MemoryRegion.memfd(name: "h", size: 4 << 20, pageSize: .huge2M)
        XCTAssertEqual(r.backing, .memfdHugetlb)
        r.prefault()
        XCTAssertEqual(Hugepages.pool(.huge2M)!.free, pool.free - 2)
    }

    func testFileSystemKinds() throws {
        XCTAssertEqual(try FileSystemKind.of(path: "/dev/shm").kind, .tmpfs)
        XCTAssertEqual(try FileSystemKind.of(path: "/proc").kind, .disk)
        XCTAssertThrowsError(try FileSystemKind.of(path: "/no/such/dir"))
        if let m = Hugepages.mount(for: .huge2M) {
            let fs = try FileSystemKind.of(path: m.path)
            XCTAssertEqual(fs.kind, .hugetlbfs)
            XCTAssertEqual(fs.pageBytes, 2 << 20)
        }
    }
}
