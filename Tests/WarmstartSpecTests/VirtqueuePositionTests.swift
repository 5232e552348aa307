import WarmstartSpec
import XCTest

final class VirtqueuePositionTests: XCTestCase {
    func testNewRingStandsAtZeroWithWrapCountersSet() {
        XCTAssertEqual(VirtqueuePosition(), VirtqueuePosition(lastAvailIndex: 0, availWrapCounter: true,
                                                              lastUsedIndex: 0, usedWrapCounter: true))
    }

    func testSplitEncodingIsTheSixteenBitIndex() {
        XCTAssertEqual(VirtqueuePosition.decode(0xfffe, layout: .split),
                       VirtqueuePosition(lastAvailIndex: 0xfffe, lastUsedIndex: 0xfffe))
        XCTAssertNil(VirtqueuePosition.decode(0x10000, layout: .split))
        XCTAssertEqual(VirtqueuePosition(lastAvailIndex: 0x1234, lastUsedIndex: 7).encode(layout: .split), 0x1234)
    }

    func testPackedEncodingCarriesSlotsAndWrapCounters() {
        let num: UInt32 = 5 | 1 << 15 | 3 << 16
        let p = VirtqueuePosition(lastAvailIndex: 5, availWrapCounter: true, lastUsedIndex: 3, usedWrapCounter: false)
        XCTAssertEqual(VirtqueuePosition.decode(num, layout: .packed), p)
        XCTAssertEqual(p.encode(layout: .packed), num)
        let q = VirtqueuePosition(lastAvailIndex: 42, availWrapCounter: false, lastUsedIndex: 40, usedWrapCounter: true)
        XCTAssertEqual(q.encode(layout: .packed), 42 | (40 | 1 << 15) << 16)
        XCTAssertEqual(VirtqueuePosition.decode(q.encode(layout: .packed), layout: .packed), q)
    }

    func testPackedLowHalfOnlyTakesUsedEqualToAvail() {
        // Low half only (DPDK style): used = avail.
        XCTAssertEqual(VirtqueuePosition.decode(7 | 1 << 15, layout: .packed),
                       VirtqueuePosition(lastAvailIndex: 7, availWrapCounter: true, lastUsedIndex: 7, usedWrapCounter: true))
    }

    func testProblem() {
        let any = VirtqueuePosition(lastAvailIndex: 0xffff, lastUsedIndex: 0x1234)
        XCTAssertNil(any.problem(size: 256, layout: .split), "split indices are free-running")
        XCTAssertEqual(any.problem(size: 0, layout: .split), "ring size 0 is not in 1...32768")
        XCTAssertNil(VirtqueuePosition(lastAvailIndex: 99, lastUsedIndex: 99).problem(size: 100, layout: .packed))
        XCTAssertEqual(VirtqueuePosition(lastAvailIndex: 100, lastUsedIndex: 0).problem(size: 100, layout: .packed),
                       "packed ring position: next avail slot 100 is outside a ring of 100 descriptors")
        XCTAssertEqual(VirtqueuePosition(lastAvailIndex: 0, lastUsedIndex: 0x7fff).problem(size: 100, layout: .packed),
                       "packed ring position: next used slot 32767 is outside a ring of 100 descriptors")
    }
}
