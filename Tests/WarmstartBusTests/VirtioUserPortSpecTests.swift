import XCTest
@testable import WarmstartBus

/// The virtio-user keys: packed, mrg, size, mac, mtu (and the existing queues, server).
final class VirtioUserPortSpecTests: XCTestCase {
    func testAcceptsVirtioUserKeys() throws {
        let s = try PortSpec.parse("virtio-user:/tmp/a.sock,packed=1,queues=2,mrg=0,server=1,size=512,mac=02:00:00:00:00:01,mtu=9000")
        XCTAssertEqual(s.option("packed"), "1")
        XCTAssertEqual(s.option("mrg"), "0")
        XCTAssertEqual(s.option("size"), "512")
        XCTAssertEqual(s.option("mac"), "02:00:00:00:00:01")
        XCTAssertEqual(s.option("mtu"), "9000")
        XCTAssertTrue(s.listens)
    }

    func testRejectsBadValuesWithTheReason() {
        for (spec, words) in [("virtio-user:/a,packed=2", "packed '2' must be 0, 1, on or off"),
                              ("virtio-user:/a,mrg=yes", "mrg 'yes' must be 0, 1, on or off"),
                              ("virtio-user:/a,size=300", "size '300' must be a power of two"),
                              ("virtio-user:/a,mac=02:00:00", "mac '02:00:00' is not six hexadecimal bytes"),
                              ("virtio-user:/a,mtu=40", "mtu '40' must be an integer from 68 to 65535"),
                              ("vhost-user:/a,packed=1", "unknown key 'packed'")] {
            XCTAssertThrowsError(try PortSpec.parse(spec), spec) { e in
                XCTAssertTrue("\(e)".contains(words), "\(spec): \(e)")
            }
        }
    }
}
