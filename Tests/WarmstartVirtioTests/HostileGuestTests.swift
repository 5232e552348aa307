import XCTest
import WarmstartMemory
import WarmstartPools
@testable import WarmstartVirtio
@testable import WarmstartVirtioDriver
import WarmstartSpec

/// One hostile chain between two good packets: the bad one is dropped and counted, returned to
/// the guest where the layout allows, and the good ones pass. Nothing crashes.
final class HostileGuestTests: XCTestCase {
    /// The fields a test may corrupt, for either layout (`next` is the split next / packed id).
    struct Desc { var addr: UInt64; var len: UInt32; var flags: UInt16; var next: UInt16 }

    /// Posts a 64 B TX packet and corrupts its (first) descriptor before publishing.
    static func corruptTX(_ fx: Fixture, _ change: (inout Desc) -> Void) {
        switch fx.driver.layout {
        case .split:
            let ring = fx.driver.split!
            let head = Int(fx.postTX(length: 64, seed: 0xAA)!)
            let d0 = ring.descriptor(head)
            var d = Desc(addr: d0.addr, len: d0.len, flags: d0.flags, next: d0.next)
            change(&d)
            ring.setDescriptor(head, SplitDescriptor(addr: d.addr, len: d.len, flags: d.flags, next: d.next))
        case .packed:
            let ring = fx.driver.packed!
            let slot = fx.driver.availPosition.index
            XCTAssertNotNil(fx.postTX(length: 64, seed: 0xAA))
            let d0 = ring.descriptor(slot, flags: fx.driver.pendingFlags)
            var d = Desc(addr: d0.addr, len: d0.len, flags: d0.flags, next: d0.id)
            change(&d)
            ring.setBody(slot, addr: d.addr, len: d.len, id: d.next)
            fx.driver.pendingFlags = d.flags
        }
    }

    /// Posts an indirect TX chain (header + 64 B) and corrupts the indirect descriptor, or the
    /// table's first entry's flags.
    static func corruptIndirect(_ fx: Fixture, descriptor: ((inout Desc) -> Void)? = nil,
                                entryFlags: ((UInt16) -> UInt16)? = nil) {
        let base = fx.rxAddress(0, size: 4096)
        VirtioNetHeader().store(to: fx.host(base, 12))
        let b = [DriverBuffer(addr: base, len: 12, writable: false), DriverBuffer(addr: base + 64, len: 64, writable: false)]
        let tg = Fixture.guestB + UInt64(Fixture.tableOffset)
        let slot = fx.driver.availPosition.index
        let id = b.withUnsafeBufferPointer {
            fx.driver.addIndirect($0.baseAddress!, count: 2, token: 1 << 40, table: fx.host(tg, 32), tableGuest: tg)!
        }
        if let entryFlags {
            let off = fx.driver.layout == .split ? 12 : 14
            let p = fx.host(tg, 32) + off
            p.storeBytes(of: entryFlags(p.load(as: UInt16.self)), as: UInt16.self)
        }
        if let descriptor { corruptAt(fx, fx.driver.layout == .split ? Int(id) : slot, descriptor) }
    }

    static func corruptAt(_ fx: Fixture, _ index: Int, _ change: (inout Desc) -> Void) {
        if let ring = fx.driver.split {
            let d0 = ring.descriptor(index)
            var d = Desc(addr: d0.addr, len: d0.len, flags: d0.flags, next: d0.next)
            change(&d)
            ring.setDescriptor(index, SplitDescriptor(addr: d.addr, len: d.len, flags: d.flags, next: d.next))
        } else {
            let ring = fx.driver.packed!
            let d0 = ring.descriptor(index, flags: fx.driver.pendingFlags)
            var d = Desc(addr: d0.addr, len: d0.len, flags: d0.flags, next: d0.id)
            change(&d)
            ring.setBody(index, addr: d.addr, len: d.len, id: d.next)
            fx.driver.pendingFlags = d.flags
        }
    }

    /// good packet, hostile chain, good packet; the hostile one must cost exactly one `error`.
    func hostile(_ layout: VirtqueueLayout, _ error: ChainError, returned: Bool = true,
                 features: VirtioFeatures = [.version1, .ringIndirectDesc],
                 file: StaticString = #filePath, line: UInt = #line, _ post: (Fixture) -> Void) throws {
        let fx = try Fixture(layout: layout, features: features)
        fx.postTX(length: 64, seed: 1)
        fx.driver.publish()
        var got = fx.dequeue()
        XCTAssertEqual(got.count, 1, file: file, line: line)
        got.forEach { fx.hostPool.free($0) }
        post(fx)
        fx.driver.publish()
        XCTAssertEqual(fx.dequeue().count, 0, "hostile chain must not yield a packet", file: file, line: line)
        XCTAssertEqual(fx.device.counters.count(error), 1, "\(error)", file: file, line: line)
        XCTAssertEqual(fx.device.counters.dropped, 1, file: file, line: line)
        XCTAssertEqual(fx.device.counters.totalErrors, 1, file: file, line: line)
        XCTAssertFalse(fx.device.isBroken, file: file, line: line)
        fx.postTX(length: 100, seed: 2)
        fx.driver.publish()
        got = fx.dequeue()
        XCTAssertEqual(got.count, 1, file: file, line: line)
        if let m = got.first {
            XCTAssertEqual(fx.bytes(of: m, pool: fx.hostPool), Fixture.expected(length: 100, seed: 2), file: file, line: line)
            fx.hostPool.free(m)
        }
        let done = fx.reapTX()
        XCTAssertEqual(done.count, returned ? 3 : 2, file: file, line: line)
        XCTAssertTrue(done.allSatisfy { $0.length == 0 }, file: file, line: line)
        XCTAssertEqual(fx.device.counters.packets, 2, file: file, line: line)
    }

    static let both: [VirtqueueLayout] = [.split, .packed]

    func testAddressOutsideMemory() throws {
        for l in Self.both { try hostile(l, .addressOutsideMemory) { Self.corruptTX($0) { $0.addr = 0x9000_0000 } } }
    }

    func testRangeRunsPastRegionEnd() throws {
        let end = Fixture.guestB + UInt64(Fixture.regionSize)
        for l in Self.both { try hostile(l, .addressOutsideMemory) { Self.corruptTX($0) { $0.addr = end - 100; $0.len = 1000 } } }
    }

    func testLengthOverflow() throws {
        for l in Self.both { try hostile(l, .lengthOverflow) { Self.corruptTX($0) { $0.addr = .max - 50; $0.len = 100 } } }
    }

    func testDescriptorLoop() throws {
        try hostile(.split, .chainTooLong) { fx in
            Self.corruptTX(fx) { $0.flags |= VirtqDescriptorFlags.next; $0.next = UInt16(fx.driver.size - 1) }
            // The last descriptor points back at the head.
            let head = fx.driver.split!.availEntry(fx.driver.availShadow &- 1)
            fx.driver.split!.setDescriptor(fx.driver.size - 1, SplitDescriptor(
                addr: Fixture.guestA, len: 16, flags: VirtqDescriptorFlags.next, next: head))
        }
    }

    func testChainLongerThanQueue() throws {
        try hostile(.split, .chainTooLong) { fx in
            Self.corruptTX(fx) { _ in }
            let ring = fx.driver.split!
            let n = ring.size
            let head = Int(ring.availEntry(fx.driver.availShadow &- 1))
            for i in 0..<n where i != head {
                ring.setDescriptor(i, SplitDescriptor(addr: Fixture.guestA, len: 16, flags: VirtqDescriptorFlags.next,
                                                      next: UInt16((i + 1) % n)))
            }
            let d = ring.descriptor(head)
            ring.setDescriptor(head, SplitDescriptor(addr: d.addr, len: d.len, flags: VirtqDescriptorFlags.next,
                                                     next: UInt16((head + 1) % n)))
        }
    }

    func testNextIndexOutOfRange() throws {
        try hostile(.split, .indexOutOfRange) { fx in
            Self.corruptTX(fx) { $0.flags |= VirtqDescriptorFlags.next; $0.next = UInt16(fx.driver.size + 5) }
        }
    }

    func testHeadIndexOutOfRange() throws {
        try hostile(.split, .indexOutOfRange, returned: false) { fx in fx.driver.postRawHead(UInt16(fx.driver.size + 3)) }
    }

    func testNestedIndirect() throws {
        for l in Self.both {
            try hostile(l, .nestedIndirect) { Self.corruptIndirect($0, entryFlags: { $0 | VirtqDescriptorFlags.indirect }) }
        }
    }

    func testIndirectLengthNotMultipleOf16() throws {
        for l in Self.both { try hostile(l, .indirectBadLength) { Self.corruptIndirect($0, descriptor: { $0.len = 20 }) } }
    }

    func testIndirectLengthZero() throws {
        for l in Self.both { try hostile(l, .indirectBadLength) { Self.corruptIndirect($0, descriptor: { $0.len = 0 }) } }
    }

    func testIndirectTooLarge() throws {
        for l in Self.both { try hostile(l, .indirectTooLarge) { Self.corruptIndirect($0, descriptor: { $0.len = 16 * 257 }) } }
    }

    func testIndirectTableOutsideMemory() throws {
        for l in Self.both { try hostile(l, .indirectOutsideMemory) { Self.corruptIndirect($0, descriptor: { $0.addr = 0x7000_0000 }) } }
    }

    func testIndirectWithNext() throws {
        // Split only: in a packed ring NEXT really continues the chain into the next slot.
        try hostile(.split, .indirectWithNext) { Self.corruptIndirect($0, descriptor: { $0.flags |= VirtqDescriptorFlags.next }) }
    }

    func testIndirectNotNegotiated() throws {
        for l in Self.both { try hostile(l, .indirectNotNegotiated, features: [.version1]) { Self.corruptIndirect($0) } }
    }

    func testHeaderTooShort() throws {
        for l in Self.both { try hostile(l, .headerTooShort) { Self.corruptTX($0) { $0.len = 8 } } }
    }

    func testWritableDescriptorInTX() throws {
        for l in Self.both { try hostile(l, .wrongDirection) { Self.corruptTX($0) { $0.flags |= VirtqDescriptorFlags.write } } }
    }

    /// Split indirect TX tables keep the direction check (packed TX tables do not: see
    /// TransmitTests.testPackedIndirectTXTableWithDPDKFlags).
    func testWritableEntryInSplitIndirectTX() throws {
        try hostile(.split, .wrongDirection) { Self.corruptIndirect($0, entryFlags: { $0 | VirtqDescriptorFlags.write }) }
    }

    func testPackedBadBufferID() throws {
        try hostile(.packed, .badBufferID) { Self.corruptTX($0) { $0.next = 0x7FFF } }
    }

    func testAvailIndexTooFarAhead() throws {
        let fx = try Fixture(layout: .split)
        fx.postTX(length: 64, seed: 1)
        fx.driver.publishRawAvailIndex(UInt16(fx.driver.size + 2))
        XCTAssertEqual(fx.dequeue().count, 0)
        XCTAssertTrue(fx.device.isBroken)
        XCTAssertEqual(fx.device.brokenReason, .availIndexTooFarAhead(availIndex: UInt16(fx.driver.size + 2), lastAvailIndex: 0))
        // A broken queue stays quiet.
        fx.driver.publish()
        XCTAssertEqual(fx.dequeue().count, 0)
        let pk = [fx.makeHostPacket(length: 64, seed: 0)]
        XCTAssertEqual(pk.withUnsafeBufferPointer { fx.device.enqueueBurst(pool: fx.hostPool, $0.baseAddress!, count: 1) }, 0)
        fx.hostPool.free(pk[0])
    }

    func testPackedEndlessChainBreaksQueue() throws {
        let fx = try Fixture(layout: .packed, size: 16)
        Self.corruptTX(fx) { $0.flags |= VirtqDescriptorFlags.next }
        for i in 1..<16 { fx.driver.packed!.storeFlags(i, VirtqDescriptorFlags.next) }
        fx.driver.publish()
        XCTAssertEqual(fx.dequeue().count, 0)
        XCTAssertEqual(fx.device.brokenReason, .packedChainEndless(slot: 0))
    }

    /// RX: a readable buffer in a receive chain drops that packet; the next uses the next buffer.
    func testReadableDescriptorInRX() throws {
        for l in Self.both {
            let fx = try Fixture(layout: l)
            let slot = fx.driver.availPosition.index
            let head = fx.driver.addRX(addr: fx.rxAddress(0, size: 2048), len: 2048, token: 0)!
            Self.corruptAt(fx, l == .split ? Int(head) : slot) { $0.flags &= ~VirtqDescriptorFlags.write }
            fx.driver.addRX(addr: fx.rxAddress(1, size: 2048), len: 2048, token: 1)
            fx.driver.publish()
            let pk = [fx.makeHostPacket(length: 64, seed: 1), fx.makeHostPacket(length: 64, seed: 2)]
            XCTAssertEqual(pk.withUnsafeBufferPointer { fx.device.enqueueBurst(pool: fx.hostPool, $0.baseAddress!, count: 2) }, 2)
            XCTAssertEqual(fx.device.counters.count(.wrongDirection), 1)
            XCTAssertEqual(fx.device.counters.packets, 1)
            let n = fx.driver.reap(fx.completions, max: 8)
            XCTAssertEqual(n, 2)
            XCTAssertEqual(fx.completions[0].length, 0)
            XCTAssertEqual(fx.completions[1].length, 76)
            XCTAssertEqual(Array(UnsafeRawBufferPointer(start: fx.host(fx.rxAddress(1, size: 2048)) + 12, count: 64)),
                           Fixture.expected(length: 64, seed: 2))
            pk.forEach { fx.hostPool.free($0) }
        }
    }

    /// RX: an address outside guest memory is never written.
    func testRXOutsideMemory() throws {
        for l in Self.both {
            let fx = try Fixture(layout: l)
            fx.driver.addRX(addr: Fixture.guestB + UInt64(Fixture.regionSize) - 10, len: 2048, token: 0)
            fx.driver.addRX(addr: fx.rxAddress(1, size: 2048), len: 2048, token: 1)
            fx.driver.publish()
            let pk = [fx.makeHostPacket(length: 64, seed: 1), fx.makeHostPacket(length: 64, seed: 2)]
            XCTAssertEqual(pk.withUnsafeBufferPointer { fx.device.enqueueBurst(pool: fx.hostPool, $0.baseAddress!, count: 2) }, 2)
            XCTAssertEqual(fx.device.counters.count(.addressOutsideMemory), 1)
            XCTAssertEqual(fx.device.counters.packets, 1)
            pk.forEach { fx.hostPool.free($0) }
        }
    }
}
