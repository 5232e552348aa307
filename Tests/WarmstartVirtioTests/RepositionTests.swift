import XCTest
import WarmstartMemory
import WarmstartPools
@testable import WarmstartVirtio
import WarmstartSpec

/// Hot upgrade builds the new process's queue before the old one pauses, at a provisional
/// position, and moves it to where the old one stopped (`reposition`): the driver sees one queue
/// that carries on, never a replay.
final class RepositionTests: XCTestCase {
    /// A second device over the fixture's rings (the new process's view of the same memory).
    func secondDevice(_ fx: Fixture, layout: VirtqueueLayout) throws -> VirtqueueDevice {
        switch layout {
        case .split:
            let ring = try SplitRing(size: fx.driver.size, memory: fx.table, desc: fx.driver.descAddress,
                                     avail: fx.driver.driverAreaAddress, used: fx.driver.deviceAreaAddress)
            return VirtqueueDevice(split: ring, memory: fx.table, options: fx.options)
        case .packed:
            let ring = try PackedRing(size: fx.driver.size, memory: fx.table, desc: fx.driver.descAddress,
                                      driverEvent: fx.driver.driverAreaAddress, deviceEvent: fx.driver.deviceAreaAddress)
            return VirtqueueDevice(packed: ring, memory: fx.table, options: fx.options)
        }
    }

    func checkCarriesOn(_ layout: VirtqueueLayout) throws {
        let fx = try Fixture(layout: layout, size: 8)
        var token = 0
        var next = 0   // the token the driver expects next
        var stoppedAt = VirtqueuePosition()
        // Enough rounds that the packed ring's wrap counters flip more than once.
        for round in 0..<5 {
            // The old process: 3 packets. Then a new device, built at position 0, moved to where the
            // old one stopped, takes 3 more; the driver gets its buffers back in order.
            let device = round == 0 ? fx.device : try secondDevice(fx, layout: layout)
            if round > 0 { try device.reposition(to: stoppedAt) }
            for _ in 0..<3 {
                XCTAssertNotNil(fx.driver.addRX(addr: fx.rxAddress(token % 8, size: 2048), len: 2048, token: UInt64(token)))
                token += 1
            }
            fx.driver.publish()
            let pk = (0..<3).map { fx.makeHostPacket(length: 64, seed: UInt8($0)) }
            XCTAssertEqual(pk.withUnsafeBufferPointer { device.enqueueBurst(pool: fx.hostPool, $0.baseAddress!, count: 3) }, 3)
            pk.forEach { fx.hostPool.free($0) }
            let n = fx.driver.reap(fx.completions, max: 16)
            XCTAssertEqual((0..<n).map { Int(fx.completions[$0].token) }, Array(next..<(next + 3)), "round \(round)")
            next += 3
            stoppedAt = device.state
        }
    }

    func testSplitCarriesOn() throws { try checkCarriesOn(.split) }
    func testPackedCarriesOnAcrossWraps() throws { try checkCarriesOn(.packed) }

    func testPackedPositionOutsideTheRingIsRefused() throws {
        let fx = try Fixture(layout: .packed, size: 8)
        XCTAssertThrowsError(try fx.device.reposition(to: VirtqueuePosition(lastAvailIndex: 8, lastUsedIndex: 0))) { e in
            XCTAssertEqual("\(e)", "last avail slot 8 is outside the packed ring of 8 descriptors")
        }
        XCTAssertThrowsError(try fx.device.reposition(to: VirtqueuePosition(lastAvailIndex: 0, lastUsedIndex: 9)))
        XCTAssertEqual(fx.device.state, VirtqueuePosition(), "a refused position changes nothing")
    }
}
