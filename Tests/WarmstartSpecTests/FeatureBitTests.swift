import WarmstartSpec
import XCTest

final class FeatureBitTests: XCTestCase {
    func testVirtioFeatureBitsMatchTheSpec() {
        // virtio 1.2 §6 and §5.1.3; vhost-user.rst for LOG_ALL and PROTOCOL_FEATURES.
        let bits: [(VirtioFeatures, Int)] = [
            (.csum, 0), (.guestCsum, 1), (.mtu, 3), (.mac, 5), (.guestTSO4, 7), (.hostUFO, 14),
            (.mrgRxbuf, 15), (.status, 16), (.ctrlVQ, 17), (.guestAnnounce, 21), (.mq, 22),
            (.logAll, 26), (.anyLayout, 27), (.ringIndirectDesc, 28), (.ringEventIdx, 29),
            (.protocolFeatures, 30), (.version1, 32), (.accessPlatform, 33), (.ringPacked, 34), (.inOrder, 35),
        ]
        for (f, bit) in bits { XCTAssertEqual(f.rawValue, 1 << UInt64(bit), VirtioFeatures.names(f.rawValue).joined()) }
        XCTAssertEqual(VirtioFeatures(bit: 34), .ringPacked)
    }

    func testProtocolFeatureBitsMatchTheSpec() {
        XCTAssertEqual(VhostUserProtocolFeature.mq.rawValue, 0)
        XCTAssertEqual(VhostUserProtocolFeature.replyAck.rawValue, 3)
        XCTAssertEqual(VhostUserProtocolFeature.inflightSHMFD.rawValue, 12)
        XCTAssertEqual(VhostUserProtocolFeature.configureMemSlots.rawValue, 15)
        XCTAssertEqual(VhostUserProtocolFeature.status.rawValue, 16)
        XCTAssertEqual(VhostUserProtocolFeature.mask([.mq, .config]), 1 | 1 << 9)
    }

    func testNamesAreTheCaseNamesLowestFirstAndUnknownBitsByNumber() {
        XCTAssertEqual(VirtioFeatures.names(VirtioFeatures([.ringPacked, .version1, .mrgRxbuf]).rawValue | 1 << 40),
                       ["mrgRxbuf", "version1", "ringPacked", "bit 40"])
        XCTAssertEqual(VirtioFeatures.names(1 << 4 | 1 << 63), ["bit 4", "bit 63"])
        XCTAssertEqual(VirtioFeatures.names(0), [])
    }

    func testDescriptorFlags() {
        XCTAssertEqual(VirtqDescriptorFlags.next, 1)
        XCTAssertEqual(VirtqDescriptorFlags.write, 2)
        XCTAssertEqual(VirtqDescriptorFlags.indirect, 4)
        XCTAssertEqual(VirtqDescriptorFlags.avail, 0x80)
        XCTAssertEqual(VirtqDescriptorFlags.used, 0x8000)
    }
}
