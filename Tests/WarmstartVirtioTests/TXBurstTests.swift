import XCTest
import WarmstartMemory
import WarmstartPools
@testable import WarmstartVirtio
import WarmstartVirtioDriver
import WarmstartSpec

/// The driver's transmit fast path (DriverQueue+Burst.swift): bursts of single-segment mbufs
/// posted in one pass and completions taken back as tokens, against the device side's dequeue.
final class TXBurstTests: XCTestCase {
    /// The driver pool's region (A) as one translation window.
    func window(_ fx: Fixture, size: Int = Fixture.regionSize) -> GuestWindow {
        GuestWindow(host: fx.regionA.base, guest: Fixture.guestA, size: size)
    }

    func headerAddress(_ m: Mbuf) -> UInt64 { UInt64(UInt(bitPattern: m.header)) }

    /// Many bursts through a small ring (it wraps many times): every frame arrives whole with its
    /// header, every token comes back once, and the ring and the pool end as they started.
    func checkRoundTrips(_ layout: VirtqueueLayout) throws {
        let fx = try Fixture(layout: layout, size: 64)
        let w = window(fx)
        let pkts = UnsafeMutablePointer<Mbuf>.allocate(capacity: 64)
        let tokens = UnsafeMutablePointer<UInt64>.allocate(capacity: 64)
        defer { pkts.deallocate(); tokens.deallocate() }
        var offload = VirtioNetHeader()
        offload.flags = VirtioNetHeader.flagNeedsCsum
        offload.csumStart = 34
        offload.csumOffset = 16
        var sent = 0
        for round in 0..<40 {
            let count = 16 + round % 17
            var lengths: [Int] = []
            for k in 0..<count {
                let len = 60 + (round * 31 + k * 97) % 1900
                lengths.append(len)
                pkts[k] = fx.makeGuestPacket(length: len, seed: UInt8(truncatingIfNeeded: sent + k),
                                             header: k % 5 == 0 ? offload : nil)
                // A stale header in the headroom must not leak into the frame's virtio-net header.
                (pkts[k].data - 12).initializeMemory(as: UInt8.self, repeating: 0xA5, count: 12)
            }
            XCTAssertEqual(fx.driver.addTXBurst(pkts, count: count, window: w), count)
            XCTAssertEqual(fx.driver.numFree, 64 - count)
            fx.driver.publish()
            var got: [Mbuf] = []
            while got.count < count {
                let d = fx.dequeue()
                if d.isEmpty { break }
                got += d
            }
            XCTAssertEqual(got.count, count, "round \(round)")
            for (k, m) in got.enumerated() {
                XCTAssertEqual(fx.bytes(of: m, pool: fx.hostPool),
                               Fixture.expected(length: lengths[k], seed: UInt8(truncatingIfNeeded: sent + k)))
                XCTAssertEqual(m.vnetHeader, k % 5 == 0 ? offload : VirtioNetHeader(), "round \(round) frame \(k)")
                fx.hostPool.free(m)
            }
            let (n, rejected) = fx.driver.reapTokens(tokens, max: 64)
            XCTAssertEqual(rejected, 0)
            XCTAssertEqual((0..<n).map { tokens[$0] }, (0..<count).map { headerAddress(pkts[$0]) },
                           "tokens are the head mbufs, in the order the device used them")
            for k in 0..<n { fx.guestPool.free(Mbuf(header: UnsafeMutableRawPointer(bitPattern: UInt(tokens[k]))!)) }
            XCTAssertEqual(fx.driver.numFree, 64)
            sent += count
        }
        XCTAssertEqual(fx.driver.inFlightCount, 0)
        XCTAssertEqual(fx.guestPool.inUseCount, 0)
        XCTAssertEqual(fx.hostPool.inUseCount, 0)
        XCTAssertEqual(fx.device.counters.packets, UInt64(sent))
    }

    func testRoundTripsSplit() throws { try checkRoundTrips(.split) }
    func testRoundTripsPacked() throws { try checkRoundTrips(.packed) }

    /// Nothing is visible to the device before `publish()` (split: avail idx; packed: the batch's
    /// first descriptor's flags, written last).
    func checkNothingBeforePublish(_ layout: VirtqueueLayout) throws {
        let fx = try Fixture(layout: layout)
        let pkts = UnsafeMutablePointer<Mbuf>.allocate(capacity: 8)
        defer { pkts.deallocate() }
        for k in 0..<8 { pkts[k] = fx.makeGuestPacket(length: 64, seed: UInt8(k)) }
        XCTAssertEqual(fx.driver.addTXBurst(pkts, count: 8, window: window(fx)), 8)
        XCTAssertEqual(fx.dequeue().count, 0, "the device sees no chain before publish")
        if let ring = fx.driver.packed {
            XCTAssertFalse(PackedRing.isAvailable(ring.loadFlags(0), wrap: true), "first descriptor still unavailable")
            XCTAssertTrue(PackedRing.isAvailable(ring.loadFlags(1), wrap: true))
        }
        fx.driver.publish()
        let got = fx.dequeue()
        XCTAssertEqual(got.count, 8)
        for m in got { fx.hostPool.free(m) }
    }

    func testNothingBeforePublishSplit() throws { try checkNothingBeforePublish(.split) }
    func testNothingBeforePublishPacked() throws { try checkNothingBeforePublish(.packed) }

    /// The burst stops at the first packet it cannot take, and takes none after it: a chain, a
    /// headroom shorter than the header, data outside the window, a full ring.
    func checkStops(_ layout: VirtqueueLayout) throws {
        let fx = try Fixture(layout: layout, size: 8)
        let pkts = UnsafeMutablePointer<Mbuf>.allocate(capacity: 16)
        defer { pkts.deallocate() }
        func single() -> Mbuf { fx.makeGuestPacket(length: 100, seed: 1) }
        let w = window(fx)

        pkts[0] = single(); pkts[1] = fx.makeGuestPacket(length: 3000, seed: 2); pkts[2] = single()
        XCTAssertEqual(fx.driver.addTXBurst(pkts, count: 3, window: w), 1, "stops at the chain")

        pkts[0] = single()
        pkts[0].dataOffset = 4
        XCTAssertEqual(fx.driver.addTXBurst(pkts, count: 1, window: w), 0, "headroom shorter than the header")

        pkts[0] = single()
        let narrow = window(fx, size: Int(UInt(bitPattern: pkts[0].data) - UInt(bitPattern: fx.regionA.base)))
        XCTAssertEqual(fx.driver.addTXBurst(pkts, count: 1, window: narrow), 0, "data outside the window")

        for k in 0..<10 { pkts[k] = single() }
        XCTAssertEqual(fx.driver.addTXBurst(pkts, count: 10, window: w), 7, "7 slots left of 8")
        XCTAssertEqual(fx.driver.numFree, 0)
        XCTAssertEqual(fx.driver.addTXBurst(pkts + 7, count: 3, window: w), 0, "ring full")
        fx.driver.publish()
        let got = fx.dequeue()
        XCTAssertEqual(got.count, 8)
        for m in got { XCTAssertEqual(Int(m.packetLength), 100); fx.hostPool.free(m) }
    }

    func testStopsSplit() throws { try checkStops(.split) }
    func testStopsPacked() throws { try checkStops(.packed) }

    /// A device that returns ids it was never given, or one twice, frees nothing for them: the
    /// entries are counted as rejected and every posted buffer still comes back exactly once.
    func checkHostileCompletions(_ layout: VirtqueueLayout) throws {
        let fx = try Fixture(layout: layout, size: 16)
        let pkts = UnsafeMutablePointer<Mbuf>.allocate(capacity: 4)
        let tokens = UnsafeMutablePointer<UInt64>.allocate(capacity: 16)
        defer { pkts.deallocate(); tokens.deallocate() }
        for k in 0..<4 { pkts[k] = fx.makeGuestPacket(length: 64, seed: UInt8(k)) }
        XCTAssertEqual(fx.driver.addTXBurst(pkts, count: 4, window: window(fx)), 4)
        fx.driver.publish()
        // The device's used entries, written by hand: a real id, an id out of range, the same
        // real id again, an id in range that was never posted, then the other three real ones.
        var ids: [UInt16] = []
        if let ring = fx.driver.split {
            for slot in 0..<4 { ids.append(ring.availEntry(UInt16(slot))) }
            let used: [UInt16] = [ids[0], 999, ids[0], 15, ids[1], ids[2], ids[3]]
            for (slot, id) in used.enumerated() { ring.setUsedElement(UInt16(slot), id: UInt32(id), len: 0) }
            ring.storeUsedIndex(UInt16(used.count))
        } else if let ring = fx.driver.packed {
            for slot in 0..<4 { ids.append(ring.descriptor(slot).id) }
            let used: [UInt16] = [ids[0], 999, ids[0], 15, ids[1], ids[2], ids[3]]
            // Written in ring order with the device's wrap counter (1), as a device in order would.
            for (slot, id) in used.enumerated() {
                ring.setUsedBody(slot, id: id, len: 0)
                ring.storeFlags(slot, PackedRing.usedFlags(wrap: true))
            }
        }
        let (n, rejected) = fx.driver.reapTokens(tokens, max: 16)
        XCTAssertEqual(n, 4)
        XCTAssertEqual(rejected, 3)
        XCTAssertEqual(Set((0..<n).map { tokens[$0] }), Set((0..<4).map { headerAddress(pkts[$0]) }))
        XCTAssertEqual(fx.driver.inFlightCount, 0)
        for k in 0..<4 { fx.guestPool.free(pkts[k]) }
        XCTAssertEqual(fx.guestPool.inUseCount, 0)
    }

    func testHostileCompletionsSplit() throws { try checkHostileCompletions(.split) }
    func testHostileCompletionsPacked() throws { try checkHostileCompletions(.packed) }

    /// The shared header writer: all zero without offload requests (whatever the headroom held),
    /// the mbuf's own fields with num_buffers 0 otherwise; the legacy 10-byte header leaves the
    /// data alone.
    func testTXHeader() throws {
        let fx = try Fixture(layout: .split)
        let m = fx.makeGuestPacket(length: 64, seed: 9)
        let start = m.data - 12
        start.initializeMemory(as: UInt8.self, repeating: 0xA5, count: 12)
        DriverQueue.storeTXHeader(m, at: start, headerSize: 12)
        XCTAssertEqual(VirtioNetHeader(loadingFrom: start), VirtioNetHeader())
        var h = VirtioNetHeader()
        h.gsoType = VirtioNetHeader.gsoTCPv4
        h.gsoSize = 1448
        h.numBuffers = 7
        m.vnetHeader = h
        m.offload = .vnetHeaderValid
        DriverQueue.storeTXHeader(m, at: start, headerSize: 12)
        h.numBuffers = 0
        XCTAssertEqual(VirtioNetHeader(loadingFrom: start), h)
        m.offload = []
        (m.data - 10).initializeMemory(as: UInt8.self, repeating: 0xA5, count: 10)
        DriverQueue.storeTXHeader(m, at: m.data - 10, headerSize: 10)
        XCTAssertEqual((0..<10).map { (m.data - 10).load(fromByteOffset: $0, as: UInt8.self) }, [UInt8](repeating: 0, count: 10))
        XCTAssertEqual(m.data.load(as: UInt8.self), 9, "first data byte untouched")
        fx.guestPool.free(m)
    }
}
