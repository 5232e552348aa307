import XCTest
import WarmstartMemory
import WarmstartPools
@testable import WarmstartVirtio
import WarmstartSpec

/// Issue 12, defect 3: a peer truncated the file behind the pool and the SIGBUS guard replaced it
/// with zero pages, under a burst in flight. A wiped header reads next = 0: element 0's own wiped
/// header points at itself, so the enqueue's chain walk looped forever on the polling thread
/// (this test hung before the walk was bounded). Now the packet costs a bounded walk, nothing more.
final class WipedMbufEnqueueTests: XCTestCase {
    func testWipedHeaderChainLoopEnds() throws {
        for layout in [VirtqueueLayout.split, .packed] {
            let fx = try Fixture(layout: layout)
            for i in 0..<4 {
                XCTAssertNotNil(fx.driver.addRX(addr: fx.rxAddress(i, size: 2048), len: 2048, token: UInt64(i)))
            }
            fx.driver.publish()
            let m = try XCTUnwrap(fx.hostPool.mbuf(at: 0))
            m.header.initializeMemory(as: UInt8.self, repeating: 0, count: MbufLayout.headerSize)
            XCTAssertEqual(m.nextIndex, 0, "a wiped header chains to element 0, itself")
            var p = m
            let n = fx.device.enqueueBurst(pool: fx.hostPool, &p, count: 1)
            XCTAssertLessThanOrEqual(n, 1)
            XCTAssertLessThanOrEqual(fx.driver.reap(fx.completions, max: 16), 1)
        }
    }
}
