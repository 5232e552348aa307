import XCTest
import WarmstartMemory
import WarmstartPools
@testable import WarmstartVirtio
import WarmstartVirtioDriver
import WarmstartSpec

/// Guest TX → device dequeue, both layouts.
final class TransmitTests: XCTestCase {
    func checkTX(_ layout: VirtqueueLayout) throws {
        let fx = try Fixture(layout: layout)
        var h = VirtioNetHeader()
        h.flags = VirtioNetHeader.flagNeedsCsum
        h.gsoType = VirtioNetHeader.gsoTCPv4
        h.headerLength = 54
        h.gsoSize = 1448
        h.csumStart = 34
        h.csumOffset = 16
        let lengths = [64, 1518, 9000, 65_000]
        for (i, len) in lengths.enumerated() {
            XCTAssertNotNil(fx.postTX(length: len, seed: UInt8(i * 7), header: i >= 2 ? h : nil))
        }
        fx.driver.publish()
        let got = fx.dequeue()
        XCTAssertEqual(got.count, lengths.count)
        for (i, m) in got.enumerated() {
            XCTAssertEqual(Int(m.packetLength), lengths[i])
            XCTAssertEqual(fx.bytes(of: m, pool: fx.hostPool), Fixture.expected(length: lengths[i], seed: UInt8(i * 7)))
            XCTAssertEqual(Int(m.segmentCount), (lengths[i] + 2047) / 2048)
            XCTAssertTrue(m.offload.contains(.vnetHeaderValid))
            if i >= 2 {
                XCTAssertEqual(m.vnetHeader, h)
                XCTAssertTrue(m.offload.contains(.needsChecksum))
                XCTAssertTrue(m.offload.contains(.gso))
            } else {
                XCTAssertEqual(m.vnetHeader, VirtioNetHeader())
                XCTAssertFalse(m.offload.contains(.gso))
            }
            fx.hostPool.free(m)
        }
        let done = fx.reapTX()
        XCTAssertEqual(done.count, lengths.count)
        XCTAssertTrue(done.allSatisfy { $0.length == 0 && $0.token != .max })
        XCTAssertEqual(fx.device.counters.packets, UInt64(lengths.count))
        XCTAssertEqual(fx.device.counters.dropped, 0)
        XCTAssertEqual(fx.driver.numFree, fx.driver.size)
        XCTAssertEqual(fx.hostPool.inUseCount, 0)
    }

    func testSplitTX() throws { try checkTX(.split) }
    func testPackedTX() throws { try checkTX(.packed) }

    /// A header split across descriptors, and a buffer that spans the two guest regions.
    func checkSplitHeaderAndSpan(_ layout: VirtqueueLayout) throws {
        let fx = try Fixture(layout: layout)
        var h = VirtioNetHeader()
        h.flags = VirtioNetHeader.flagDataValid
        h.csumStart = 0x1234
        let hdr = fx.rxAddress(0, size: 64)
        h.store(to: fx.host(hdr, 12))
        // Data spans the A/B boundary: starts 100 bytes before the end of region A (past the pool).
        let data = Fixture.guestB - 100
        let pA = fx.regionA.base + Fixture.regionSize - 100
        for k in 0..<100 { pA.storeBytes(of: UInt8(k), toByteOffset: k, as: UInt8.self) }
        for k in 0..<200 { fx.regionB.base.storeBytes(of: UInt8(truncatingIfNeeded: 100 + k), toByteOffset: (2 << 20) + k, as: UInt8.self) }
        for k in 0..<64 { fx.regionB.base.storeBytes(of: UInt8(truncatingIfNeeded: 200 + k), toByteOffset: k, as: UInt8.self) }
        let b: [DriverBuffer] = [
            DriverBuffer(addr: hdr, len: 5, writable: false),
            DriverBuffer(addr: hdr + 5, len: 7, writable: false),
            DriverBuffer(addr: data, len: 100, writable: false),
            DriverBuffer(addr: Fixture.guestB + UInt64(2 << 20), len: 200, writable: false),
        ]
        b.withUnsafeBufferPointer { _ = fx.driver.add($0.baseAddress!, count: 4, token: 1 << 40) }
        // One buffer crossing the boundary from region A into region B.
        let cross = DriverBuffer(addr: hdr, len: 12, writable: false)
        let span = DriverBuffer(addr: data, len: 164, writable: false)
        [cross, span].withUnsafeBufferPointer { _ = fx.driver.add($0.baseAddress!, count: 2, token: 1 << 41) }
        fx.driver.publish()
        let got = fx.dequeue()
        XCTAssertEqual(got.count, 2)
        XCTAssertEqual(got.first?.vnetHeader, h)
        XCTAssertEqual(fx.bytes(of: got[0], pool: fx.hostPool), (0..<300).map { UInt8(truncatingIfNeeded: $0) })
        let second = fx.bytes(of: got[1], pool: fx.hostPool)
        XCTAssertEqual(second.count, 164)
        XCTAssertEqual(Array(second[0..<100]), (0..<100).map { UInt8($0) })
        XCTAssertEqual(Array(second[100...]), (0..<64).map { UInt8(truncatingIfNeeded: 200 + $0) })
        got.forEach { fx.hostPool.free($0) }
        XCTAssertEqual(fx.device.counters.dropped, 0)
    }

    func testSplitHeaderAndRegionSpanSplit() throws { try checkSplitHeaderAndSpan(.split) }
    func testSplitHeaderAndRegionSpanPacked() throws { try checkSplitHeaderAndSpan(.packed) }

    /// Indirect descriptors: header and two data pieces in one indirect table.
    func checkIndirect(_ layout: VirtqueueLayout) throws {
        let fx = try Fixture(layout: layout)
        let base = fx.rxAddress(0, size: 4096)
        for k in 0..<3000 { fx.host(base + 64).storeBytes(of: UInt8(truncatingIfNeeded: k * 3), toByteOffset: k, as: UInt8.self) }
        VirtioNetHeader().store(to: fx.host(base, 12))
        let b: [DriverBuffer] = [
            DriverBuffer(addr: base, len: 12, writable: false),
            DriverBuffer(addr: base + 64, len: 1000, writable: false),
            DriverBuffer(addr: base + 1064, len: 2000, writable: false),
        ]
        let tg = Fixture.guestB + UInt64(Fixture.tableOffset)
        for round in 0..<3 {
            b.withUnsafeBufferPointer {
                _ = fx.driver.addIndirect($0.baseAddress!, count: 3, token: 1 << 40 | UInt64(round),
                                          table: fx.host(tg + UInt64(round * 64), 48), tableGuest: tg + UInt64(round * 64))
            }
            XCTAssertNotNil(fx.postTX(length: 100, seed: UInt8(round)))
        }
        fx.driver.publish()
        let got = fx.dequeue()
        XCTAssertEqual(got.count, 6)
        for (i, m) in got.enumerated() {
            if i % 2 == 0 {
                XCTAssertEqual(fx.bytes(of: m, pool: fx.hostPool), (0..<3000).map { UInt8(truncatingIfNeeded: $0 * 3) })
            } else {
                XCTAssertEqual(fx.bytes(of: m, pool: fx.hostPool), Fixture.expected(length: 100, seed: UInt8(i / 2)))
            }
            fx.hostPool.free(m)
        }
        XCTAssertEqual(fx.reapTX().count, 6)
        XCTAssertEqual(fx.device.counters.dropped, 0)
    }

    func testIndirectSplit() throws { try checkIndirect(.split) }
    func testIndirectPacked() throws { try checkIndirect(.packed) }

    /// A packed indirect TX table as DPDK's virtio driver writes it (net/virtio, every version
    /// through 24.x): vring_desc_init_indirect_packed marks every entry WRITE once, the transmit
    /// path then writes NEXT|AVAIL/USED into the data entries and never touches the header entry,
    /// which stays WRITE. Only WRITE is a valid flag in a packed table (the others are ignored),
    /// and a device SHOULD NOT (not MUST NOT) read a device-writable buffer: the chain is read
    /// whole. Found by TestpmdPayloadTests: every multi-segment frame from testpmd's packed-ring
    /// virtio-user was dropped as `wrongDirection`.
    func testPackedIndirectTXTableWithDPDKFlags() throws {
        let fx = try Fixture(layout: .packed)
        let base = fx.rxAddress(0, size: 4096)
        for k in 0..<3000 { fx.host(base + 64).storeBytes(of: UInt8(truncatingIfNeeded: k * 5), toByteOffset: k, as: UInt8.self) }
        VirtioNetHeader().store(to: fx.host(base, 12))
        let b: [DriverBuffer] = [
            DriverBuffer(addr: base, len: 12, writable: false),
            DriverBuffer(addr: base + 64, len: 1000, writable: false),
            DriverBuffer(addr: base + 1064, len: 2000, writable: false),
        ]
        let tg = Fixture.guestB + UInt64(Fixture.tableOffset)
        let table = fx.host(tg, 48)
        _ = b.withUnsafeBufferPointer { fx.driver.addIndirect($0.baseAddress!, count: 3, token: 1 << 40, table: table, tableGuest: tg) }
        // Flags at byte 14 of each pvirtq_desc, as DPDK leaves them.
        let dpdkFlags: [UInt16] = [VirtqDescriptorFlags.write, VirtqDescriptorFlags.next | VirtqDescriptorFlags.avail,
                                   VirtqDescriptorFlags.avail]
        for (k, f) in dpdkFlags.enumerated() { table.storeBytes(of: f.littleEndian, toByteOffset: 16 * k + 14, as: UInt16.self) }
        XCTAssertNotNil(fx.postTX(length: 100, seed: 7))
        fx.driver.publish()
        let got = fx.dequeue()
        XCTAssertEqual(got.count, 2)
        if got.count == 2 {
            XCTAssertEqual(fx.bytes(of: got[0], pool: fx.hostPool), (0..<3000).map { UInt8(truncatingIfNeeded: $0 * 5) })
            XCTAssertEqual(fx.bytes(of: got[1], pool: fx.hostPool), Fixture.expected(length: 100, seed: 7))
        }
        got.forEach { fx.hostPool.free($0) }
        XCTAssertEqual(fx.device.counters.totalErrors, 0)
        XCTAssertEqual(fx.reapTX().count, 2)
    }

    /// Many more packets than the ring holds: indices wrap, packed wrap counters flip.
    func checkWrap(_ layout: VirtqueueLayout) throws {
        let size = 64
        let fx = try Fixture(layout: layout, size: size)
        var seq = 0
        var received = 0
        var flips = 0
        var lastWrap = fx.device.usedWrapCounter
        while received < 10 * size {
            // Post a varying number, so chains straddle the ring's end.
            let n = min(1 + seq % 23, fx.driver.numFree)
            for _ in 0..<n {
                XCTAssertNotNil(fx.postTX(length: 60 + seq % 200, seed: UInt8(truncatingIfNeeded: seq)))
                seq += 1
            }
            fx.driver.publish()
            while true {
                let got = fx.dequeue()
                if got.isEmpty { break }
                for m in got {
                    XCTAssertEqual(fx.bytes(of: m, pool: fx.hostPool),
                                   Fixture.expected(length: 60 + received % 200, seed: UInt8(truncatingIfNeeded: received)))
                    fx.hostPool.free(m)
                    received += 1
                }
            }
            if fx.device.usedWrapCounter != lastWrap { flips += 1; lastWrap = fx.device.usedWrapCounter }
            _ = fx.reapTX()
        }
        XCTAssertEqual(received, seq)
        if layout == .packed { XCTAssertGreaterThanOrEqual(flips, 9) }
        XCTAssertEqual(fx.device.counters.dropped, 0)
        XCTAssertEqual(fx.driver.numFree, size)
    }

    func testWrapSplit() throws { try checkWrap(.split) }
    func testWrapPacked() throws { try checkWrap(.packed) }

    /// An mbuf shortage leaves chains in the ring; they come out once mbufs are back.
    func testPoolShortageLeavesChains() throws {
        for layout in [VirtqueueLayout.split, .packed] {
            let fx = try Fixture(layout: layout, poolCount: 4)
            for i in 0..<6 { fx.postTX(length: 100, seed: UInt8(i)) }
            fx.driver.publish()
            let first = fx.dequeue()
            XCTAssertEqual(first.count, 4)
            XCTAssertGreaterThan(fx.device.counters.allocFailures, 0)
            first.forEach { fx.hostPool.free($0) }
            let second = fx.dequeue()
            XCTAssertEqual(second.count, 2)
            XCTAssertEqual(fx.bytes(of: second[1], pool: fx.hostPool), Fixture.expected(length: 100, seed: 5))
            second.forEach { fx.hostPool.free($0) }
            XCTAssertEqual(fx.reapTX().count, 6)
        }
    }
}

/// Legacy 10-byte header (no VERSION_1, no MRG_RXBUF) and a per-thread MbufCache as the source.
final class HeaderAndSourceTests: XCTestCase {
    func testLegacyHeaderBothWays() throws {
        for layout in [VirtqueueLayout.split, .packed] {
            let fx = try Fixture(layout: layout, features: [])
            XCTAssertEqual(fx.device.netHeaderSize, 10)
            var h = VirtioNetHeader()
            h.flags = VirtioNetHeader.flagNeedsCsum
            h.csumStart = 14
            h.csumOffset = 6
            fx.postTX(length: 300, seed: 3, header: h)
            fx.driver.publish()
            let got = fx.dequeue()
            XCTAssertEqual(got.count, 1)
            XCTAssertEqual(got.first?.vnetHeader, h)
            XCTAssertEqual(fx.bytes(of: got[0], pool: fx.hostPool), Fixture.expected(length: 300, seed: 3))
            // And back: 10 header bytes, then the data.
            fx.driver.addRX(addr: fx.rxAddress(0, size: 2048), len: 2048, token: 0)
            fx.driver.publish()
            XCTAssertEqual(got.withUnsafeBufferPointer { fx.device.enqueueBurst(pool: fx.hostPool, $0.baseAddress!, count: 1) }, 1)
            let n = fx.driver.reap(fx.completions, max: 8)
            XCTAssertEqual(n, 2)
            XCTAssertEqual(fx.completions[1].length, 310)
            let p = fx.host(fx.rxAddress(0, size: 2048), 310)
            XCTAssertEqual(p.load(as: UInt8.self), VirtioNetHeader.flagNeedsCsum)
            XCTAssertEqual(Array(UnsafeRawBufferPointer(start: p + 10, count: 300)), Fixture.expected(length: 300, seed: 3))
            got.forEach { fx.hostPool.free($0) }
        }
    }

    func testMbufCacheSource() throws {
        for layout in [VirtqueueLayout.split, .packed] {
            let fx = try Fixture(layout: layout)
            let cache = MbufCache(pool: fx.hostPool, size: 64)
            for i in 0..<40 { fx.postTX(length: 64 + i * 100, seed: UInt8(i)) }
            fx.driver.publish()
            var seen = 0
            while seen < 40 {
                let n = fx.device.dequeueBurst(pool: cache, into: fx.out, maxCount: 32)
                XCTAssertGreaterThan(n, 0)
                for k in 0..<n {
                    XCTAssertEqual(fx.bytes(of: fx.out[k], pool: fx.hostPool),
                                   Fixture.expected(length: 64 + (seen + k) * 100, seed: UInt8(seen + k)))
                }
                cache.freeBulk(fx.out, count: n)
                seen += n
            }
            cache.flush()
            XCTAssertEqual(fx.hostPool.inUseCount, 0)
            XCTAssertEqual(fx.reapTX().count, 40)
        }
    }
}

/// Tiny rings: every packet wraps (packed size 1 flips the wrap counters on each one).
final class TinyRingTests: XCTestCase {
    func testTinyRings() throws {
        for (layout, size) in [(VirtqueueLayout.split, 1), (.split, 2), (.packed, 1), (.packed, 3)] {
            let fx = try Fixture(layout: layout, size: size)
            for i in 0..<20 {
                XCTAssertNotNil(fx.postTX(length: 64 + i, seed: UInt8(i)), "\(layout) \(size)")
                fx.driver.publish()
                let got = fx.dequeue()
                XCTAssertEqual(got.count, 1, "\(layout) \(size) packet \(i)")
                if let m = got.first {
                    XCTAssertEqual(fx.bytes(of: m, pool: fx.hostPool), Fixture.expected(length: 64 + i, seed: UInt8(i)))
                    fx.hostPool.free(m)
                }
                XCTAssertEqual(fx.reapTX().count, 1)
                // And one RX packet through the same queue pair state machine.
                XCTAssertNotNil(fx.driver.addRX(addr: fx.rxAddress(0, size: 2048), len: 2048, token: 9))
                fx.driver.publish()
                let pk = [fx.makeHostPacket(length: 100, seed: UInt8(i))]
                XCTAssertEqual(pk.withUnsafeBufferPointer { fx.device.enqueueBurst(pool: fx.hostPool, $0.baseAddress!, count: 1) }, 1)
                XCTAssertEqual(fx.driver.reap(fx.completions, max: 4), 1)
                XCTAssertEqual(fx.completions[0].length, 112)
                fx.hostPool.free(pk[0])
            }
            XCTAssertEqual(fx.device.counters.packets, 40)
            XCTAssertEqual(fx.device.counters.dropped, 0)
        }
    }
}
