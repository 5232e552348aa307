import XCTest
import WarmstartMemory
import WarmstartPools
@testable import WarmstartVirtio
@testable import WarmstartVirtioDriver
import WarmstartSpec

/// Random rings: garbage descriptors, flags, indices, indirect tables. The device must never
/// crash, never break the queue for per-chain garbage, and account for every chain exactly once.
final class FuzzTests: XCTestCase {
    struct Rng {
        var s: UInt64
        mutating func next() -> UInt64 {
            s &+= 0x9E37_79B9_7F4A_7C15
            var z = s
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
        mutating func chance(_ percent: Int) -> Bool { below(100) < percent }
    }

    static let tableGuest = Fixture.guestB + UInt64(Fixture.tableOffset)

    static func address(_ r: inout Rng) -> UInt64 {
        switch r.below(8) {
        case 0: return r.next()                                                  // anywhere
        case 1: return Fixture.guestB + UInt64(Fixture.regionSize) - UInt64(r.below(200)) // near the end
        case 2: return Fixture.guestB - UInt64(r.below(200))                     // across A/B
        case 3: return UInt64.max - UInt64(r.below(100))                         // overflow
        case 4: return tableGuest + UInt64(r.below(8) * 64)                      // an indirect table
        default: return Fixture.guestB + UInt64(Fixture.rxOffset + r.below(1 << 20))
        }
    }

    static func length(_ r: inout Rng) -> UInt32 {
        switch r.below(6) {
        case 0: return 0
        case 1: return UInt32(r.below(16))
        case 2: return UInt32(16 * (1 + r.below(8)))
        case 3: return UInt32(truncatingIfNeeded: r.next())
        default: return UInt32(r.below(3000))
        }
    }

    /// Percent chance of WRITE: low for TX fuzzing, high for RX (so chains get through to the copy).
    static var writePercent = 15

    static func flags(_ r: inout Rng) -> UInt16 {
        var f: UInt16 = 0
        if r.chance(35) { f |= VirtqDescriptorFlags.next }
        if r.chance(writePercent) { f |= VirtqDescriptorFlags.write }
        if r.chance(15) { f |= VirtqDescriptorFlags.indirect }
        return f
    }

    /// Fills the indirect-table area with random entries (split and packed layouts alike).
    static func scribbleTables(_ fx: Fixture, _ r: inout Rng) {
        let p = fx.host(tableGuest, 8 * 64)
        for i in 0..<(8 * 4) {
            let e = p + 16 * i
            e.storeBytes(of: address(&r), as: UInt64.self)
            e.storeBytes(of: length(&r), toByteOffset: 8, as: UInt32.self)
            e.storeBytes(of: flags(&r), toByteOffset: 12, as: UInt16.self)
            e.storeBytes(of: r.chance(50) ? flags(&r) : UInt16(r.below(40)), toByteOffset: 14, as: UInt16.self)
        }
    }

    func fuzzSplit(seed: UInt64, receive: Bool) throws {
        var r = Rng(s: seed)
        Self.writePercent = receive ? 90 : 10
        let fx = try Fixture(layout: .split, size: 32, features: [.version1, .ringIndirectDesc, .mrgRxbuf])
        let ring = fx.driver.split!
        let pk = [fx.makeHostPacket(length: 64, seed: 1), fx.makeHostPacket(length: 1500, seed: 2),
                  fx.makeHostPacket(length: 5000, seed: 3)]
        var posted = 0
        for _ in 0..<300 {
            Self.scribbleTables(fx, &r)
            for i in 0..<ring.size where r.chance(50) {
                ring.setDescriptor(i, SplitDescriptor(addr: Self.address(&r), len: Self.length(&r), flags: Self.flags(&r),
                                                      next: UInt16(r.below(ring.size + 3))))
            }
            // Never more heads outstanding than the ring holds (that would be a broken driver,
            // tested on its own); RX may leave heads waiting for a packet that fits.
            let outstanding = Int(fx.driver.availShadow &- fx.device.lastAvailIndex)
            let k = min(1 + r.below(8), ring.size - outstanding)
            for _ in 0..<k { fx.driver.postRawHead(UInt16(r.below(ring.size + 2))) }
            posted += k
            fx.driver.publish()
            if receive {
                var burst = (0..<(1 + r.below(6))).map { pk[$0 % 3] }
                while burst.count > 0 {
                    let n = burst.withUnsafeBufferPointer { fx.device.enqueueBurst(pool: fx.hostPool, $0.baseAddress!, count: $0.count) }
                    if n == 0 { break }
                    burst.removeFirst(n)
                }
            } else {
                while true {
                    let n = fx.device.dequeueBurst(pool: fx.hostPool, into: fx.out, maxCount: 32)
                    for i in 0..<n {
                        XCTAssertLessThanOrEqual(Int(fx.out[i].packetLength), virtioMaxPacketLength)
                        fx.hostPool.free(fx.out[i])
                    }
                    if n == 0 && fx.device.lastAvailIndex == fx.driver.availShadow { break }
                    if n == 0 && fx.device.counters.allocFailures > 0 { break }
                }
                XCTAssertEqual(fx.device.lastAvailIndex, fx.driver.availShadow)
            }
            XCTAssertFalse(fx.device.isBroken)
        }
        let c = fx.device.counters
        if !receive { XCTAssertEqual(c.packets + c.dropped, UInt64(posted)) }
        XCTAssertEqual(c.totalErrors, c.dropped - c.allocFailures)
        XCTAssertGreaterThan(c.dropped, 0)
        pk.forEach { fx.hostPool.free($0) }
        XCTAssertEqual(fx.hostPool.inUseCount, 0)
    }

    func testFuzzSplitTX() throws { for s in 1...4 { try fuzzSplit(seed: UInt64(s), receive: false) } }
    func testFuzzSplitRX() throws { for s in 1...4 { try fuzzSplit(seed: UInt64(s) << 8, receive: true) } }

    func fuzzPacked(seed: UInt64, receive: Bool) throws {
        var r = Rng(s: seed)
        Self.writePercent = receive ? 90 : 10
        let fx = try Fixture(layout: .packed, size: 37, features: [.version1, .ringIndirectDesc, .mrgRxbuf])
        let ring = fx.driver.packed!
        let pk = [fx.makeHostPacket(length: 64, seed: 1), fx.makeHostPacket(length: 3000, seed: 2)]
        var chainsPosted = 0
        for _ in 0..<300 {
            Self.scribbleTables(fx, &r)
            // Write k descriptors from the device's position; the last one ends the chain.
            var slot = Int(fx.device.lastAvailIndex)
            var wrap = fx.device.availWrapCounter
            let startSlot = slot
            let startWrap = wrap
            let k = 1 + r.below(ring.size - 1)
            var firstFlags: UInt16 = 0
            for i in 0..<k {
                var f = Self.flags(&r)
                if i == k - 1 { f &= ~VirtqDescriptorFlags.next }
                if f & VirtqDescriptorFlags.next == 0 { chainsPosted += 1 }
                f |= PackedRing.availFlags(wrap: wrap)
                let id = r.chance(90) ? UInt16(r.below(ring.size)) : UInt16(truncatingIfNeeded: r.next())
                ring.setBody(slot, addr: Self.address(&r), len: Self.length(&r), id: id)
                if i == 0 { firstFlags = f } else { ring.storeFlags(slot, f) }
                slot += 1
                if slot == ring.size { slot = 0; wrap.toggle() }
            }
            ring.storeFlags(startSlot, firstFlags)
            if receive {
                var rounds = 0
                while fx.device.lastAvailIndex != UInt16(slot) || fx.device.availWrapCounter != wrap {
                    let burst = (0..<(1 + r.below(6))).map { pk[$0 % 2] }
                    let n = burst.withUnsafeBufferPointer { fx.device.enqueueBurst(pool: fx.hostPool, $0.baseAddress!, count: $0.count) }
                    rounds += 1
                    if n == 0 || rounds > 100 { break }
                }
                // A packet may be waiting for more buffers: complete the lap with a TX walk.
                if fx.device.lastAvailIndex != UInt16(slot) || fx.device.availWrapCounter != wrap {
                    // The tail chains wait for a packet they can hold; this seed's lap ends here.
                    break
                }
            } else {
                while true {
                    let n = fx.device.dequeueBurst(pool: fx.hostPool, into: fx.out, maxCount: 32)
                    for i in 0..<n { fx.hostPool.free(fx.out[i]) }
                    if n == 0 { break }
                }
            }
            XCTAssertFalse(fx.device.isBroken)
            if !receive {
                XCTAssertEqual(Int(fx.device.lastAvailIndex), slot, "from \(startSlot)/\(startWrap) k \(k)")
                XCTAssertEqual(fx.device.availWrapCounter, wrap)
                XCTAssertEqual(fx.device.lastUsedIndex, fx.device.lastAvailIndex)
            }
        }
        let c = fx.device.counters
        if !receive { XCTAssertEqual(c.packets + c.dropped, UInt64(chainsPosted)) }
        XCTAssertGreaterThan(c.dropped, 0)
        pk.forEach { fx.hostPool.free($0) }
        XCTAssertEqual(fx.hostPool.inUseCount, 0)
    }

    func testFuzzPackedTX() throws { for s in 1...4 { try fuzzPacked(seed: UInt64(s) << 16, receive: false) } }
    func testFuzzPackedRX() throws { for s in 1...4 { try fuzzPacked(seed: UInt64(s) << 24, receive: true) } }
}
