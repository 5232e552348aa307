import XCTest
@testable import WarmstartMemory

final class MemoryTableTests: XCTestCase {
    let table = MemoryTable(entries: [
        .init(guestAddress: 0x1000, userAddress: 0x7000_0000, size: 0x1000, hostAddress: 0x10_0000),
        .init(guestAddress: 0x2000, userAddress: 0x7100_0000, size: 0x2000, hostAddress: 0x20_0000),
    ])

    func testWholeRangeIsTranslated() {
        XCTAssertEqual(table.translate(guest: 0x1000, length: 0x1000).map { UInt(bitPattern: $0) }, 0x10_0000)
        XCTAssertEqual(table.translate(guest: 0x2ff0, length: 0x10).map { UInt(bitPattern: $0) }, 0x20_0ff0)
        XCTAssertEqual(table.translate(user: 0x7100_0010, length: 8).map { UInt(bitPattern: $0) }, 0x20_0010)
    }

    func testRangeRunningPastAnEntryIsRefused() {
        // Starts inside entry 0 and runs one byte into entry 1's guest range: adjacent in guest
        // space but not in host space, so it must not be translated by its start alone.
        XCTAssertNil(table.translate(guest: 0x1fff, length: 2))
        XCTAssertNil(table.translate(guest: 0x3fff, length: 2))
        XCTAssertNil(table.translate(guest: 0x0fff, length: 1))
        XCTAssertNil(table.translate(guest: 0x4000, length: 0))
    }

    func testOverflowingRangesAreRefused() {
        XCTAssertNil(table.translate(guest: 0x1000, length: UInt64.max))
        XCTAssertNil(table.translate(guest: UInt64.max, length: 2))
        XCTAssertNil(table.translate(guest: UInt64.max - 1, length: UInt64.max))
    }

    func testContiguousWalksPieceByPiece() {
        let (p, n) = table.contiguous(guest: 0x1ff0, length: 0x100)!
        XCTAssertEqual(UInt(bitPattern: p), 0x10_0ff0)
        XCTAssertEqual(n, 0x10)
        XCTAssertNil(table.contiguous(guest: 0x9000, length: 1))
    }

    func testOverlapDetection() {
        XCTAssertFalse(table.hasOverlaps)
        var t = table
        t.add(.init(guestAddress: 0x2fff, userAddress: 0, size: 2, hostAddress: 0x30_0000))
        XCTAssertTrue(t.hasOverlaps)
        XCTAssertNotNil(t.remove(guestAddress: 0x2fff, size: 2))
        XCTAssertFalse(t.hasOverlaps)
    }
}
