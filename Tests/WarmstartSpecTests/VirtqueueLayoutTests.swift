import WarmstartSpec
import XCTest

final class VirtqueueLayoutTests: XCTestCase {
    func testLayoutFollowsRingPacked() {
        XCTAssertEqual(VirtqueueLayout(features: [.version1]), .split)
        XCTAssertEqual(VirtqueueLayout(features: [.version1, .ringPacked]), .packed)
    }

    func testValidSizes() {
        for n in [1, 2, 256, 32768] { XCTAssertTrue(VirtqueueLayout.split.isValidSize(n), "\(n)") }
        for n in [0, 3, 100, 65536] { XCTAssertFalse(VirtqueueLayout.split.isValidSize(n), "\(n)") }
        for n in [1, 3, 100, 32768] { XCTAssertTrue(VirtqueueLayout.packed.isValidSize(n), "\(n)") }
        for n in [0, 32769] { XCTAssertFalse(VirtqueueLayout.packed.isValidSize(n), "\(n)") }
    }

    func testAreaSizes() {
        // Split: desc 16n; avail flags+idx+ring[n](+used_event); used flags+idx+ring[n]{id,len}(+avail_event).
        let s = VirtqueueLayout.split.areaSizes(size: 256, eventIndex: true)
        XCTAssertEqual(s.descriptors, 4096); XCTAssertEqual(s.driver, 6 + 512); XCTAssertEqual(s.device, 6 + 2048)
        let t = VirtqueueLayout.split.areaSizes(size: 256, eventIndex: false)
        XCTAssertEqual(t.descriptors, 4096); XCTAssertEqual(t.driver, 4 + 512); XCTAssertEqual(t.device, 4 + 2048)
        let p = VirtqueueLayout.packed.areaSizes(size: 100, eventIndex: true)
        XCTAssertEqual(p.descriptors, 1600); XCTAssertEqual(p.driver, 4); XCTAssertEqual(p.device, 4)
        XCTAssertEqual(VirtqueueLayout.packed.areaSizes(size: 100, eventIndex: false).driver, 4)
        XCTAssertTrue(VirtqueueLayout.split.areaAlignments == (16, 2, 4))
        XCTAssertTrue(VirtqueueLayout.packed.areaAlignments == (16, 4, 4))
    }

    func testRingFlags() {
        XCTAssertEqual(SplitVirtqueue.availNoInterrupt, 1)
        XCTAssertEqual(SplitVirtqueue.usedNoNotify, 1)
        XCTAssertEqual(PackedVirtqueue.eventFlagsEnable, 0)
        XCTAssertEqual(PackedVirtqueue.eventFlagsDisable, 1)
        XCTAssertEqual(PackedVirtqueue.eventFlagsDesc, 2)
    }
}
