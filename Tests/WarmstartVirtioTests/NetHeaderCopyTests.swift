import XCTest
import WarmstartMemory
import WarmstartPools
@testable import WarmstartVirtio
import WarmstartSpec

/// Issue 12, defects 7 and 8 at the function level: the header rules on raw values, and that the
/// value checked is the value forwarded.
final class NetHeaderCopyTests: XCTestCase {
    typealias T = NetHeaderValidationTests
    func badHeaderCount(_ fx: Fixture) -> UInt64 { fx.device.counters.count(.badNetHeader) }

    /// The rules one by one on the values (both loads of the header: bytes 0..<8, 8..<12).
    func testRules() {
        func ok(_ h: VirtioNetHeader, _ len: Int, offloads: Bool = true) -> Bool {
            var raw = [UInt8](repeating: 0, count: 12)
            raw.withUnsafeMutableBytes { h.store(to: $0.baseAddress!) }
            let h0 = raw.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
            let h1 = raw.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt32.self) }
            return virtioNetHeaderIsValid(h0, h1, frameLength: len, offloads: offloads)
        }
        for (what, h) in T.badHeaders(length: 1500) { XCTAssertFalse(ok(h, 1500), what) }
        for h in T.goodHeaders(length: 1500) { XCTAssertTrue(ok(h, 1500), "\(h)") }
        var mergeable = VirtioNetHeader()
        mergeable.numBuffers = 3
        XCTAssertTrue(ok(mergeable, 60, offloads: false), "num_buffers is the driver's to leave as it likes")
        XCTAssertFalse(ok(T.header(csumOffset: 1), 60, offloads: false))
        XCTAssertTrue(ok(T.header(flags: 1, gso: 5, hdrLen: 42, gsoSize: 1400, csumStart: 34, csumOffset: 6), 1500))
        XCTAssertFalse(ok(T.header(flags: 1, gso: 0x85, hdrLen: 42, gsoSize: 1400, csumStart: 34, csumOffset: 6), 1500))
    }

    /// Defect 8: what is checked is what is forwarded. The simple path loads the header once into
    /// two registers and decides, copies and derives the offload flags from those values; a guest
    /// The mbuf carries exactly the header that was checked, and its offload flags are a function
    /// of that copy. (A race inside the burst cannot be staged deterministically; the code reads each
    /// header byte of guest memory exactly once — see copySimpleTX and copyChain.)
    func testDecisionAndUseAreOnTheSameCopy() throws {
        for layout in [VirtqueueLayout.split, .packed] {
            let fx = try Fixture(layout: layout)
            let good = T.header(flags: 1, gso: 1, hdrLen: 54, gsoSize: 1448, csumStart: 34, csumOffset: 16)
            let m0 = fx.makeGuestPacket(length: 1500, seed: 9, header: good)
            XCTAssertNotNil(fx.driver.addTX(m0, pool: fx.guestPool, memory: fx.map, scratch: fx.scratch, scratchCapacity: 64))
            fx.driver.publish()
            let got = fx.dequeue()
            XCTAssertEqual(got.count, 1)
            guard let m = got.first else { continue }
            XCTAssertEqual(m.vnetHeader, good)
            let copy = (m.header + 40).loadUnaligned(as: UInt64.self)
            XCTAssertEqual(m.offload.rawValue, VirtqueueDevice.offloadFlags(copy))
            XCTAssertTrue(m.offload.contains(.needsChecksum) && m.offload.contains(.gso))
            fx.hostPool.free(m)
            XCTAssertEqual(badHeaderCount(fx), 0)
        }
    }
}
