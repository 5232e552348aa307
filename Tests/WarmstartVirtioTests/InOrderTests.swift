import XCTest
import WarmstartMemory
import WarmstartPools
@testable import WarmstartVirtio
import WarmstartSpec

/// VIRTIO_F_IN_ORDER on the packed ring (§2.7.9): the device reports a burst of guest-TX buffers
/// with one used descriptor — written where the burst starts, carrying the buffer id of its last
/// chain — and skips forward past every descriptor of the burst. The driver here is written by
/// hand into the ring, so each check reads exactly what a real driver would see.
final class InOrderTests: XCTestCase {
    let bufferSize = 2048

    /// Makes slot `slot` available: `headerBytes` zero bytes + `payload` bytes (byte i = seed &+ i)
    /// in RX-area buffer `buffer`, with `id` and the NEXT bit as given.
    func post(_ fx: Fixture, ring: PackedRing, slot: Int, wrap: Bool, id: UInt16, buffer: Int,
              payload: Int, seed: UInt8, next: Bool = false, headerBytes: Int = 12) {
        let guest = fx.rxAddress(buffer, size: bufferSize)
        let host = fx.host(guest, bufferSize)
        memset(host, 0, headerBytes)
        for i in 0..<payload { host.storeBytes(of: seed &+ UInt8(truncatingIfNeeded: i), toByteOffset: headerBytes + i, as: UInt8.self) }
        ring.setBody(slot, addr: guest, len: UInt32(headerBytes + payload), id: id)
        var flags = PackedRing.availFlags(wrap: wrap)
        if next { flags |= VirtqDescriptorFlags.next }
        ring.storeFlags(slot, flags)
    }

    func payload(_ m: Mbuf, _ fx: Fixture) -> [UInt8] { fx.bytes(of: m, pool: fx.hostPool) }

    func testPackedInOrderWritesOneUsedDescriptorPerBurst() throws {
        let fx = try Fixture(layout: .packed, size: 8, features: [.version1, .inOrder])
        XCTAssertTrue(fx.device.options.inOrder)
        let ring = fx.driver.packed!

        // Burst 1: slots 0–4, ids 7, 6, 5, 4, 3 (ids are < queue size; any order the driver likes).
        for k in 0..<5 { post(fx, ring: ring, slot: k, wrap: true, id: UInt16(7 - k), buffer: k, payload: 60, seed: UInt8(k)) }
        var got = fx.dequeue()
        XCTAssertEqual(got.count, 5)
        for (k, m) in got.enumerated() {
            XCTAssertEqual(payload(m, fx), Fixture.expected(length: 60, seed: UInt8(k)))
            fx.hostPool.free(m)
        }
        XCTAssertEqual(ring.loadFlags(0), PackedRing.usedFlags(wrap: true))
        XCTAssertEqual(ring.descriptor(0).id, 3, "the one used descriptor names the burst's last buffer")
        XCTAssertEqual(ring.descriptor(0).len, 0)
        for k in 1..<5 { XCTAssertEqual(ring.loadFlags(k), PackedRing.availFlags(wrap: true), "slot \(k) is skipped, not written") }
        XCTAssertEqual(fx.device.lastUsedIndex, 5)
        XCTAssertEqual(fx.device.lastAvailIndex, 5)

        // Burst 2 wraps: slots 5, 6, 7 (wrap 1) then 0, 1 (wrap 0), ids 0–4.
        let slots = [(5, true), (6, true), (7, true), (0, false), (1, false)]
        for (k, (s, w)) in slots.enumerated() {
            post(fx, ring: ring, slot: s, wrap: w, id: UInt16(k), buffer: 8 + k, payload: 100, seed: UInt8(50 + k))
        }
        got = fx.dequeue()
        XCTAssertEqual(got.count, 5)
        for (k, m) in got.enumerated() {
            XCTAssertEqual(payload(m, fx), Fixture.expected(length: 100, seed: UInt8(50 + k)))
            fx.hostPool.free(m)
        }
        XCTAssertEqual(ring.loadFlags(5), PackedRing.usedFlags(wrap: true), "written with the wrap counter of where the burst starts")
        XCTAssertEqual(ring.descriptor(5).id, 4)
        XCTAssertEqual(ring.loadFlags(0), PackedRing.availFlags(wrap: false))
        XCTAssertEqual(fx.device.lastUsedIndex, 2)
        XCTAssertFalse(fx.device.usedWrapCounter)
        XCTAssertFalse(fx.device.availWrapCounter)

        // Burst 3: a two-descriptor chain at slots 2–3 (header, then data; id on the last) and a
        // single at slot 4: one used descriptor at slot 2 with the id of the single, skip 3 slots.
        post(fx, ring: ring, slot: 3, wrap: false, id: 5, buffer: 20, payload: 64, seed: 9, headerBytes: 0)
        post(fx, ring: ring, slot: 2, wrap: false, id: 0, buffer: 21, payload: 0, seed: 0, next: true)
        post(fx, ring: ring, slot: 4, wrap: false, id: 6, buffer: 22, payload: 64, seed: 77)
        got = fx.dequeue()
        XCTAssertEqual(got.count, 2)
        XCTAssertEqual(payload(got[0], fx), Fixture.expected(length: 64, seed: 9))
        XCTAssertEqual(payload(got[1], fx), Fixture.expected(length: 64, seed: 77))
        got.forEach { fx.hostPool.free($0) }
        XCTAssertEqual(ring.loadFlags(2), PackedRing.usedFlags(wrap: false))
        XCTAssertEqual(ring.descriptor(2).id, 6)
        XCTAssertEqual(fx.device.lastUsedIndex, 5)
        XCTAssertEqual(fx.device.counters.packets, 12)
        XCTAssertEqual(fx.device.counters.dropped, 0)
        XCTAssertEqual(fx.hostPool.inUseCount, 0)
        XCTAssertTrue(fx.dequeue().isEmpty, "nothing left available")
    }

    /// A bad chain inside an in-order burst is still returned in order (covered by the one used
    /// descriptor), counted, and costs only itself.
    func testPackedInOrderBadChainInBurst() throws {
        let fx = try Fixture(layout: .packed, size: 8, features: [.version1, .inOrder])
        let ring = fx.driver.packed!
        post(fx, ring: ring, slot: 0, wrap: true, id: 1, buffer: 0, payload: 60, seed: 1)
        // Too short for the 12-byte header.
        ring.setBody(1, addr: fx.rxAddress(1, size: bufferSize), len: 4, id: 2)
        ring.storeFlags(1, PackedRing.availFlags(wrap: true))
        post(fx, ring: ring, slot: 2, wrap: true, id: 3, buffer: 2, payload: 60, seed: 3)
        // The simple run stops before the bad descriptor (the full walk takes it, and what follows,
        // on the next call): two bursts, each reported by one used descriptor where it starts.
        var got = fx.dequeue()
        got += fx.dequeue()
        XCTAssertTrue(fx.dequeue().isEmpty)
        XCTAssertEqual(got.count, 2)
        XCTAssertEqual(payload(got[0], fx), Fixture.expected(length: 60, seed: 1))
        XCTAssertEqual(payload(got[1], fx), Fixture.expected(length: 60, seed: 3))
        got.forEach { fx.hostPool.free($0) }
        XCTAssertEqual(ring.loadFlags(0), PackedRing.usedFlags(wrap: true))
        XCTAssertEqual(ring.descriptor(0).id, 1)
        XCTAssertEqual(ring.loadFlags(1), PackedRing.usedFlags(wrap: true))
        XCTAssertEqual(ring.descriptor(1).id, 3, "the bad chain is covered by the burst that returns it")
        XCTAssertEqual(ring.loadFlags(2), PackedRing.availFlags(wrap: true))
        XCTAssertEqual(fx.device.lastUsedIndex, 3)
        XCTAssertEqual(fx.device.counters.count(.headerTooShort), 1)
    }

    /// A burst the single-descriptor fast path starts and the full walk finishes (a chain in the
    /// middle): each part is reported by its own used descriptor — at the burst's first slot with
    /// the id of the last single, then at the chain's first slot with the id of the part's last
    /// buffer — and every other slot is skipped. The driver reclaims both parts in order.
    func testPackedInOrderFastPathThenFullWalkInOneBurst() throws {
        let fx = try Fixture(layout: .packed, size: 8, features: [.version1, .inOrder])
        let ring = fx.driver.packed!
        post(fx, ring: ring, slot: 0, wrap: true, id: 7, buffer: 0, payload: 60, seed: 1)
        post(fx, ring: ring, slot: 1, wrap: true, id: 6, buffer: 1, payload: 60, seed: 2)
        post(fx, ring: ring, slot: 3, wrap: true, id: 5, buffer: 2, payload: 64, seed: 3, headerBytes: 0)
        post(fx, ring: ring, slot: 2, wrap: true, id: 0, buffer: 3, payload: 0, seed: 0, next: true)
        post(fx, ring: ring, slot: 4, wrap: true, id: 4, buffer: 4, payload: 60, seed: 4)
        let got = fx.dequeue()
        XCTAssertEqual(got.count, 4)
        for (k, m) in got.enumerated() {
            XCTAssertEqual(payload(m, fx), Fixture.expected(length: k == 2 ? 64 : 60, seed: UInt8(k + 1)), "packet \(k)")
        }
        got.forEach { fx.hostPool.free($0) }
        XCTAssertEqual(ring.loadFlags(0), PackedRing.usedFlags(wrap: true))
        XCTAssertEqual(ring.descriptor(0).id, 6, "the fast path's part ends with the second single")
        XCTAssertEqual(ring.loadFlags(2), PackedRing.usedFlags(wrap: true))
        XCTAssertEqual(ring.descriptor(2).id, 4, "the full walk's part ends with the last single")
        for k in [1, 3, 4] { XCTAssertEqual(ring.loadFlags(k), PackedRing.availFlags(wrap: true), "slot \(k) skipped") }
        XCTAssertEqual(fx.device.lastUsedIndex, 5)
        XCTAssertEqual(fx.device.lastAvailIndex, 5)
        XCTAssertEqual(fx.device.counters.packets, 4)
        XCTAssertEqual(fx.hostPool.inUseCount, 0)
    }

    /// An mbuf shortage part-way through an in-order burst: the one used descriptor covers only
    /// the chains taken (it carries the id of the last of them, and the device skips only their
    /// slots); the rest stay available and come out, reported the same way, once mbufs are back.
    func testPackedInOrderPoolShortageReportsOnlyWhatWasTaken() throws {
        let fx = try Fixture(layout: .packed, size: 8, features: [.version1, .inOrder], poolCount: 3)
        let ring = fx.driver.packed!
        for k in 0..<5 { post(fx, ring: ring, slot: k, wrap: true, id: UInt16(7 - k), buffer: k, payload: 60, seed: UInt8(k)) }
        let first = fx.dequeue()
        XCTAssertEqual(first.count, 3, "three mbufs: three chains taken")
        XCTAssertGreaterThan(fx.device.counters.allocFailures, 0)
        for (k, m) in first.enumerated() { XCTAssertEqual(payload(m, fx), Fixture.expected(length: 60, seed: UInt8(k))) }
        XCTAssertEqual(ring.loadFlags(0), PackedRing.usedFlags(wrap: true))
        XCTAssertEqual(ring.descriptor(0).id, 5, "the id of the last chain taken, not of the burst's last")
        for k in 1..<5 { XCTAssertEqual(ring.loadFlags(k), PackedRing.availFlags(wrap: true), "slot \(k) not written") }
        XCTAssertEqual(fx.device.lastUsedIndex, 3)
        XCTAssertEqual(fx.device.lastAvailIndex, 3, "chains 3 and 4 stay available")
        first.forEach { fx.hostPool.free($0) }

        let second = fx.dequeue()
        XCTAssertEqual(second.count, 2)
        for (k, m) in second.enumerated() { XCTAssertEqual(payload(m, fx), Fixture.expected(length: 60, seed: UInt8(3 + k))) }
        second.forEach { fx.hostPool.free($0) }
        XCTAssertEqual(ring.loadFlags(3), PackedRing.usedFlags(wrap: true))
        XCTAssertEqual(ring.descriptor(3).id, 3)
        XCTAssertEqual(ring.loadFlags(4), PackedRing.availFlags(wrap: true), "slot 4 skipped")
        XCTAssertEqual(fx.device.lastUsedIndex, 5)
        XCTAssertEqual(fx.device.lastAvailIndex, 5)
        XCTAssertEqual(fx.device.counters.packets, 5)
        XCTAssertEqual(fx.device.counters.dropped, 0)
        XCTAssertEqual(fx.hostPool.inUseCount, 0)
    }

    /// Without IN_ORDER every chain gets its own used descriptor (the default path is unchanged).
    func testPackedWithoutInOrderWritesEveryChain() throws {
        let fx = try Fixture(layout: .packed, size: 8, features: [.version1])
        let ring = fx.driver.packed!
        for k in 0..<3 { post(fx, ring: ring, slot: k, wrap: true, id: UInt16(5 + k), buffer: k, payload: 60, seed: UInt8(k)) }
        let got = fx.dequeue()
        XCTAssertEqual(got.count, 3)
        got.forEach { fx.hostPool.free($0) }
        for k in 0..<3 {
            XCTAssertEqual(ring.loadFlags(k), PackedRing.usedFlags(wrap: true))
            XCTAssertEqual(ring.descriptor(k).id, UInt16(5 + k))
        }
    }
}
