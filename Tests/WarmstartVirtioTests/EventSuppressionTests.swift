import XCTest
import CWarmstartShim
import WarmstartMemory
import WarmstartPools
@testable import WarmstartVirtio
import WarmstartSpec

final class EventSuppressionTests: XCTestCase {
    func testNeedEventRule() {
        // §2.6.7.2: notify when event lies in [old, new).
        XCTAssertTrue(virtqNeedEvent(event: 5, new: 6, old: 5))
        XCTAssertFalse(virtqNeedEvent(event: 6, new: 6, old: 5))
        XCTAssertTrue(virtqNeedEvent(event: 0xFFFF, new: 2, old: 0xFFFE)) // across the 16-bit wrap
        XCTAssertFalse(virtqNeedEvent(event: 3, new: 2, old: 0xFFFE))
    }

    func transmit(_ fx: Fixture, _ n: Int) {
        for i in 0..<n { fx.postTX(length: 64, seed: UInt8(i)) }
        fx.driver.publish()
        let got = fx.dequeue()
        XCTAssertEqual(got.count, n)
        got.forEach { fx.hostPool.free($0) }
    }

    /// The driver asks for a call after 3 used chains: none after 1, one when the third crosses.
    func checkUsedEvent(_ layout: VirtqueueLayout) throws {
        let fx = try Fixture(layout: layout, size: 16, features: [.version1, .ringEventIdx])
        for round in 0..<12 { // rounds walk the indices around the ring several times
            fx.driver.requestCall(afterUsed: 3)
            transmit(fx, 1)
            XCTAssertFalse(fx.device.needsCall(), "round \(round)")
            transmit(fx, 1)
            XCTAssertFalse(fx.device.needsCall(), "round \(round)")
            transmit(fx, 2)
            XCTAssertTrue(fx.device.needsCall(), "round \(round)")
            XCTAssertFalse(fx.device.needsCall(), "nothing new published")
            XCTAssertEqual(fx.reapTX().count, 4)
        }
        XCTAssertEqual(fx.device.counters.calls, 12)
    }

    func testUsedEventSplit() throws { try checkUsedEvent(.split) }
    func testUsedEventPacked() throws { try checkUsedEvent(.packed) }

    /// Without EVENT_IDX: the flag (split NO_INTERRUPT / packed disable) decides.
    func checkFlags(_ layout: VirtqueueLayout) throws {
        let fx = try Fixture(layout: layout, size: 16, features: [.version1])
        transmit(fx, 1)
        XCTAssertTrue(fx.device.needsCall())
        fx.driver.disableCalls()
        transmit(fx, 1)
        XCTAssertFalse(fx.device.needsCall())
        fx.driver.requestCall()
        transmit(fx, 1)
        XCTAssertTrue(fx.device.needsCall())
    }

    func testCallFlagsSplit() throws { try checkFlags(.split) }
    func testCallFlagsPacked() throws { try checkFlags(.packed) }

    /// Kicks: with EVENT_IDX the device's avail_event (written as it consumes) says when; with
    /// notifications disabled (polling) the driver does not kick.
    func checkKick(_ layout: VirtqueueLayout, eventIndex: Bool) throws {
        var f: VirtioFeatures = [.version1]
        if eventIndex { f.insert(.ringEventIdx) }
        let fx = try Fixture(layout: layout, size: 16, features: f)
        fx.device.setNotifications(enabled: true)
        for round in 0..<10 {
            fx.postTX(length: 64, seed: 0)
            fx.driver.publish()
            XCTAssertTrue(fx.driver.needsKick(), "round \(round)")
            fx.postTX(length: 64, seed: 0)
            fx.driver.publish()
            // The device has not run since: with EVENT_IDX it already has its kick.
            XCTAssertEqual(fx.driver.needsKick(), !eventIndex, "round \(round)")
            fx.dequeue().forEach { fx.hostPool.free($0) }
            if round % 2 == 0 { fx.device.setNotifications(enabled: true) } // dequeue re-arms too
            _ = fx.reapTX()
        }
        fx.device.setNotifications(enabled: false)
        fx.postTX(length: 64, seed: 0)
        fx.driver.publish()
        if !eventIndex || layout == .packed { XCTAssertFalse(fx.driver.needsKick()) }
    }

    func testKickSplit() throws { try checkKick(.split, eventIndex: false) }
    func testKickSplitEventIndex() throws { try checkKick(.split, eventIndex: true) }
    func testKickPacked() throws { try checkKick(.packed, eventIndex: false) }
    func testKickPackedEventIndex() throws { try checkKick(.packed, eventIndex: true) }

    func testSignalWritesEventfd() throws {
        let fx = try Fixture(layout: .split, size: 16, features: [.version1, .ringEventIdx])
        let fd = ws_eventfd(0, WS_EFD_NONBLOCK | WS_EFD_CLOEXEC)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        fx.driver.requestCall(afterUsed: 2)
        transmit(fx, 1)
        XCTAssertFalse(fx.device.signal(callFD: fd))
        transmit(fx, 1)
        XCTAssertTrue(fx.device.signal(callFD: fd))
        var v: UInt64 = 0
        XCTAssertEqual(read(fd, &v, 8), 8)
        XCTAssertEqual(v, 1)
    }

    /// Hot-upgrade hand-over: a new device object continues from the old one's state.
    func checkHandOver(_ layout: VirtqueueLayout) throws {
        let fx = try Fixture(layout: layout, size: 16)
        for _ in 0..<5 { transmit(fx, 7); _ = fx.reapTX() }
        let state = fx.device.state
        let next: VirtqueueDevice
        switch layout {
        case .split: next = VirtqueueDevice(split: fx.device.split!, memory: fx.table, options: fx.options, state: state)
        case .packed: next = try VirtqueueDevice(packed: fx.device.packed!, memory: fx.table, options: fx.options, state: state)
        }
        fx.postTX(length: 300, seed: 4)
        fx.driver.publish()
        let n = next.dequeueBurst(pool: fx.hostPool, into: fx.out, maxCount: 32)
        XCTAssertEqual(n, 1)
        XCTAssertEqual(fx.bytes(of: fx.out[0], pool: fx.hostPool), Fixture.expected(length: 300, seed: 4))
        fx.hostPool.free(fx.out[0])
        XCTAssertEqual(fx.reapTX().count, 1)
    }

    func testHandOverSplit() throws { try checkHandOver(.split) }
    func testHandOverPacked() throws { try checkHandOver(.packed) }

    func testSetUpErrors() throws {
        let r = try MemoryRegion.memfd(name: "g", size: 1 << 20, pageSize: .small4K, ioAddress: 0x4000)
        let t = MemoryTable(regions: [r])
        XCTAssertThrowsError(try SplitRing(size: 100, memory: t, desc: 0x4000, avail: 0x8000, used: 0x9000)) {
            XCTAssertEqual($0 as? VirtqueueError, .invalidSize(100, layout: .split))
        }
        XCTAssertNoThrow(try PackedRing(size: 100, memory: t, desc: 0x4000, driverEvent: 0x8000, deviceEvent: 0x8004))
        XCTAssertThrowsError(try PackedRing(size: 40000, memory: t, desc: 0x4000, driverEvent: 0x8000, deviceEvent: 0x8004))
        // The used ring runs past the end of the region.
        XCTAssertThrowsError(try SplitRing(size: 256, memory: t, desc: 0x4000, avail: 0x8000, used: 0x4000 + (1 << 20) - 100)) {
            XCTAssertEqual($0 as? VirtqueueError, .areaOutsideMemory(area: "used ring", address: 0x4000 + (1 << 20) - 100, length: 6 + 8 * 256))
        }
        XCTAssertThrowsError(try SplitRing(size: 256, memory: t, desc: 0xFFFF_FFFF_FFFF_F000, avail: 0x8000, used: 0x9000)) {
            guard case .areaOverflows? = $0 as? VirtqueueError else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try SplitRing(size: 256, memory: t, desc: 0x4008, avail: 0x8000, used: 0x9000)) {
            XCTAssertEqual($0 as? VirtqueueError, .misaligned(area: "descriptor table", address: 0x4008, alignment: 16))
        }
        // User addresses (vhost-user SET_VRING_ADDR) translate through the same table.
        let base = UInt64(UInt(bitPattern: r.base))
        XCTAssertNoThrow(try SplitRing(size: 256, memory: t, desc: base, avail: base + 0x1000, used: base + 0x2000, addressSpace: .user))
        print(VirtqueueError.areaOutsideMemory(area: "used ring", address: 0x10, length: 6))
    }
}
