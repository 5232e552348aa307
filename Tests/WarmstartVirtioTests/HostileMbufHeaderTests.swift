import Foundation
import XCTest
import WarmstartMemory
import WarmstartPools
import WarmstartTestSupport
@testable import WarmstartVirtio
import WarmstartSpec

/// Issue 12: a virtio-user back-end shares the pool's elements, headers included, and may rewrite
/// any header at any time. The last element of a pool, its data offset and length both 0xFFFF,
/// sends the enqueue's copy about 128 KiB past the end of the pool's mapping: before regions
/// carried their trailing guard the process died of SIGSEGV there. Run in a child process (this
/// test binary again) so a crash fails the test instead of killing the run.
final class HostileMbufHeaderTests: XCTestCase {
    static let childVariable = "WS_HOSTILE_MBUF_CHILD"

    func testLastElementWithMaximalOffsetAndLengthIsEnqueuedWithoutFault() throws {
        if ProcessInfo.processInfo.environment[Self.childVariable] == "1" {
            for layout in [VirtqueueLayout.split, .packed] { try enqueueHostileLastElement(layout) }
            // The child's verdict as its exit status (42: ran through, every assertion held).
            exit((testRun?.totalFailureCount ?? 1) == 0 ? 42 : 43)
        }
        let child = try ChildTest.run("WarmstartVirtioTests.HostileMbufHeaderTests/testLastElementWithMaximalOffsetAndLengthIsEnqueuedWithoutFault",
                                      environment: [Self.childVariable: "1"], quiet: true)
        XCTAssertFalse(child.timedOut)
        XCTAssertEqual(child.reason, .exit, "the child died of signal \(child.status)")
        XCTAssertEqual(child.status, 42, "the child's assertions failed (43) or it ran no scenario")
    }

    func enqueueHostileLastElement(_ layout: VirtqueueLayout) throws {
        let fx = try Fixture(layout: layout)
        let room = 12 + 0xFFFF
        for i in 0..<2 {
            XCTAssertNotNil(fx.driver.addRX(addr: fx.rxAddress(i, size: room), len: UInt32(room), token: UInt64(i)))
        }
        fx.driver.publish()
        let m = try XCTUnwrap(fx.hostPool.mbuf(at: UInt32(fx.hostPool.config.count - 1)))
        XCTAssertLessThan(fx.hostRegion.base + fx.hostRegion.size - m.header, 4096 + MbufLayout.headerSize,
                          "the pool's last element ends its region's last page")
        // As a hostile peer writes them: every 16-bit field at its maximum.
        m.dataOffset = 0xFFFF
        m.dataLength = 0xFFFF
        m.packetLength = 0xFFFF
        var p = m
        XCTAssertEqual(fx.device.enqueueBurst(pool: fx.hostPool, &p, count: 1), 1)
        XCTAssertEqual(fx.driver.reap(fx.completions, max: 16), 1)
        XCTAssertEqual(fx.completions[0].length, UInt32(room))
        // The general path (two mbufs: the hostile one chained behind a good head).
        let head = fx.makeHostPacket(length: 60, seed: 1)
        head.nextIndex = m.index
        head.segmentCount = 2
        head.packetLength = 60 + 0xFFFF
        XCTAssertEqual(fx.device.enqueueBurst(pool: fx.hostPool, [head], count: 1), 1)
        XCTAssertEqual(fx.driver.reap(fx.completions, max: 16), 1)

        // A driver-side receive buffer from a header whose offset passes its buffer length is refused.
        let g = try XCTUnwrap(fx.guestPool.mbuf(at: UInt32(fx.guestPool.config.count - 1)))
        g.dataOffset = 0xFFFF
        g.dataLength = 0
        XCTAssertNil(fx.driver.addRX(g, memory: fx.map))
    }
}
