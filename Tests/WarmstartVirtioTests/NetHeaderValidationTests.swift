import XCTest
import WarmstartMemory
import WarmstartPools
@testable import WarmstartVirtio
import WarmstartSpec

/// Issue 12, defects 7 and 8: a guest's virtio-net header is checked as the kernel checks one on a
/// tap device before it goes anywhere, a bad one drops its frame and is counted by name, and the
/// header is read from guest memory once.
final class NetHeaderValidationTests: XCTestCase {
    /// The per-error counter for bad virtio-net headers, found by its name.
    func badHeaderCount(_ fx: Fixture) -> UInt64? {
        guard let e = ChainError.allCases.first(where: { "\($0)".hasPrefix("virtio-net header invalid") }) else { return nil }
        return fx.device.counters.count(e)
    }

    static func header(flags: UInt8 = 0, gso: UInt8 = 0, hdrLen: UInt16 = 0, gsoSize: UInt16 = 0,
                       csumStart: UInt16 = 0, csumOffset: UInt16 = 0) -> VirtioNetHeader {
        var h = VirtioNetHeader()
        h.flags = flags; h.gsoType = gso; h.headerLength = hdrLen; h.gsoSize = gsoSize
        h.csumStart = csumStart; h.csumOffset = csumOffset
        return h
    }

    /// One bad header of each class, for a frame of `length` bytes.
    static func badHeaders(length: Int) -> [(String, VirtioNetHeader)] {
        let n = UInt16(length)
        return [
            ("unknown gso_type 2", header(flags: 1, gso: 2, hdrLen: 54, gsoSize: 1448, csumStart: 34, csumOffset: 16)),
            ("ECN bit without a type", header(gso: 0x80, gsoSize: 1448)),
            ("gso_type with gso_size 0", header(flags: 1, gso: 1, hdrLen: 54, gsoSize: 0, csumStart: 34, csumOffset: 16)),
            ("gso_size past the frame", header(flags: 1, gso: 4, hdrLen: 54, gsoSize: n + 1, csumStart: 54, csumOffset: 16)),
            ("hdr_len past the frame", header(hdrLen: n + 1)),
            ("checksum field past the frame", header(flags: 1, csumStart: n - 10, csumOffset: 9)),
            ("checksum start far outside", header(flags: 1, csumStart: 0xFFFF, csumOffset: 0xFFFF)),
            ("unknown flag bit (RSC_INFO)", header(flags: 4)),
            ("UDP_L4 without NEEDS_CSUM", header(gso: 5, hdrLen: 42, gsoSize: 1400)),
        ]
    }

    /// Good headers: none, a TSO4 one, a checksum one whose field ends exactly at the frame's end.
    static func goodHeaders(length: Int) -> [VirtioNetHeader] {
        let mss = UInt16(min(1448, length / 2))
        return [VirtioNetHeader(),
         header(flags: 1, gso: 1, hdrLen: 54, gsoSize: mss, csumStart: 34, csumOffset: 16),
         header(flags: 1, gso: 0x81, hdrLen: 54, gsoSize: mss, csumStart: 34, csumOffset: 16),
         header(flags: 1, csumStart: UInt16(length - 2), csumOffset: 0)]
    }

    /// Every bad class is dropped and counted, on the simple path (200 B: one descriptor holding
    /// header and frame) and on the full walk (9000 B: the driver's 2 KiB mbufs make a chain of
    /// descriptors, copied by copyChain), and the good headers between them go through unchanged.
    func check(_ layout: VirtqueueLayout, length: Int) throws {
        let fx = try Fixture(layout: layout)
        let bad = Self.badHeaders(length: length)
        let good = Self.goodHeaders(length: length)
        var expected: [VirtioNetHeader] = []
        for (i, (_, h)) in bad.enumerated() {
            XCTAssertNotNil(fx.postTX(length: length, seed: UInt8(i), header: h))
            let g = good[i % good.count]
            XCTAssertNotNil(fx.postTX(length: length, seed: UInt8(i), header: g))
            expected.append(g)
        }
        fx.driver.publish()
        var got: [Mbuf] = []
        while true {
            let b = fx.dequeue()
            if b.isEmpty { break }
            got += b
        }
        XCTAssertEqual(got.map(\.vnetHeader), expected, "\(layout) \(length) B: only the good headers went through")
        for m in got { fx.hostPool.free(m) }
        XCTAssertEqual(badHeaderCount(fx), UInt64(bad.count), "\(layout) \(length) B: each bad header counted by name")
        XCTAssertEqual(fx.device.counters.dropped, UInt64(bad.count))
        XCTAssertEqual(fx.device.counters.packets, UInt64(expected.count))
        // Dropped chains are still returned to the guest.
        XCTAssertEqual(fx.reapTX().count, 2 * bad.count)
        XCTAssertEqual(fx.hostPool.inUseCount, 0)
    }

    func testBadHeadersDroppedSplitSimple() throws { try check(.split, length: 200) }
    func testBadHeadersDroppedPackedSimple() throws { try check(.packed, length: 200) }
    func testBadHeadersDroppedSplitChained() throws { try check(.split, length: 9000) }
    func testBadHeadersDroppedPackedChained() throws { try check(.packed, length: 9000) }

    /// Without a negotiated offload, any header field but num_buffers set is refused: even one the
    /// kernel would take (a valid checksum request), because the guest may not send it.
    func testWithoutOffloadsOnlyAZeroHeaderPasses() throws {
        for layout in [VirtqueueLayout.split, .packed] {
            let fx = try Fixture(layout: layout, offloads: false)
            XCTAssertNotNil(fx.postTX(length: 100, seed: 1, header: Self.header(flags: 1, csumStart: 34, csumOffset: 16)))
            XCTAssertNotNil(fx.postTX(length: 100, seed: 2, header: Self.header(flags: 2)))
            XCTAssertNotNil(fx.postTX(length: 100, seed: 3, header: VirtioNetHeader()))
            fx.driver.publish()
            let got = fx.dequeue()
            XCTAssertEqual(got.count, 1)
            XCTAssertEqual(got.first.map { fx.bytes(of: $0, pool: fx.hostPool) }, Fixture.expected(length: 100, seed: 3))
            for m in got { fx.hostPool.free(m) }
            XCTAssertEqual(badHeaderCount(fx), 2)
        }
    }
}
