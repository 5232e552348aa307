import Foundation
import XCTest
import WarmstartBus
import WarmstartMemory
import WarmstartPools
import WarmstartTestSupport
@testable import WarmstartVhostUser
@testable import WarmstartVhostUserWire
@testable import WarmstartPorts
import WarmstartSpec

/// A virtio-user port's MAC: `mac=` (checked, errors name the port and the value), else the
/// back-end's when it has one in its config space (CONFIG + VIRTIO_NET_F_MAC), else a random
/// locally administered unicast address kept for the port's life; `mac=` is written into a
/// back-end that has an address and a back-end that keeps another one is refused.
final class VirtioUserMACTests: XCTestCase {
    static let backendMAC: [UInt8] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55]
    static let ours: [UInt8] = [0x02, 0xAA, 0xBB, 0xCC, 0xDD, 0x01]

    /// A Warmstart back-end that offers VIRTIO_NET_F_MAC with `backendMAC` in its config space.
    var backendWithMAC: VhostUserBackendConfiguration {
        VhostUserBackendConfiguration(netConfig: VirtioNetConfig(mac: Self.backendMAC), optInFeatures: VirtioFeatures.mac.rawValue)
    }

    func testRandomLocallyAdministeredUnicastWithoutMacOrBackendAddress() throws {
        let fe = try FrontendSide()
        let (port, _, n, _) = try connectVirtioUser(fe, VirtioUserConfig())
        XCTAssertEqual(n.features & VirtioFeatures.mac.rawValue, 0, "our default back-end offers no MAC")
        let mac = port.mac
        XCTAssertEqual(mac.count, 6)
        XCTAssertEqual(mac[0] & 0x01, 0, "unicast: \(PortSpec.formatMAC(mac))")
        XCTAssertEqual(mac[0] & 0x02, 0x02, "locally administered: \(PortSpec.formatMAC(mac))")
        // Chosen once per port: the same after the connection is set up again.
        port.teardown()
        let be2 = try InProcessBackend()
        addTeardownBlock { [weak be2] in be2?.stop() }
        port.queues = try port.establish(fd: be2.frontendFD).1
        XCTAssertEqual(port.mac, mac, "kept across reconnects")
        // And another port gets another one (48 random bits: equal only by a 2^-46 accident).
        let other = try VirtioUserPort(config: VirtioUserConfig(), regions: fe.regions, pool: fe.pool, arena: fe.arena)
        XCTAssertNotEqual(other.mac, mac)
    }

    func testMacOptionIsThePortsAddress() throws {
        let fe = try FrontendSide()
        let (port, _, _, _) = try connectVirtioUser(fe, VirtioUserConfig(mac: Self.ours))
        XCTAssertEqual(port.mac, Self.ours)
        let spec = try PortSpec.parse("virtio-user:/tmp/x.sock,mac=02:aa:bb:cc:dd:01,name=vu7")
        XCTAssertEqual(try VirtioUserConfig(spec: spec).mac, Self.ours)
    }

    func testBackendAddressIsTakenWithoutMacOption() throws {
        let fe = try FrontendSide()
        let (port, be, n, _) = try connectVirtioUser(fe, VirtioUserConfig(), backend: backendWithMAC)
        XCTAssertNotEqual(n.features & VirtioFeatures.mac.rawValue, 0, "F_MAC negotiated")
        XCTAssertEqual(port.mac, Self.backendMAC)
        XCTAssertEqual(be.session.netConfig.mac, Self.backendMAC, "the back-end's address is unchanged")
    }

    func testMacOptionIsWrittenIntoTheBackendsConfigSpace() throws {
        let fe = try FrontendSide()
        let (port, be, _, _) = try connectVirtioUser(fe, VirtioUserConfig(mac: Self.ours), backend: backendWithMAC)
        XCTAssertEqual(port.mac, Self.ours)
        XCTAssertEqual(be.session.netConfig.mac, Self.ours, "SET_CONFIG put mac= into the back-end: the two agree")
    }

    func testBackendThatKeepsAnotherAddressIsRefused() throws {
        let fe = try FrontendSide()
        // A back-end that acks SET_CONFIG but keeps its own address.
        let be = try InProcessBackend(configuration: backendWithMAC) { frame, _, session in
            if frame.header.knownRequest == .setConfig { session.netConfig.mac = Self.backendMAC }
        }
        addTeardownBlock { [weak be] in be?.stop() }
        let port = try VirtioUserPort(config: VirtioUserConfig(name: "vu3", mac: Self.ours), regions: fe.regions,
                                      pool: fe.pool, arena: fe.arena)
        XCTAssertThrowsError(try port.establish(fd: be.frontendFD)) { e in
            let text = "\(e)"
            XCTAssertTrue(text.contains("vu3") && text.contains("02:aa:bb:cc:dd:01") && text.contains("02:11:22:33:44:55"), text)
            XCTAssertTrue((e as? VirtioUserError)?.isPermanent ?? false, "reconnecting would not help: \(text)")
        }
        XCTAssertEqual(fe.pool.inUseCount, 0, "nothing posted")
    }

    func testBadMacIsNamedWithThePort() {
        for (value, words) in [("02:00:00", "is not six hexadecimal bytes"), ("01:00:5e:00:00:01", "multicast"),
                               ("00:00:00:00:00:00", "all zeros"), ("02:00:00:00:00:0g", "is not six hexadecimal bytes")] {
            XCTAssertThrowsError(try PortSpec.parse("virtio-user:/tmp/a.sock,mac=\(value)")) { e in
                XCTAssertTrue("\(e)".contains("port 'virtio-user:/tmp/a.sock,mac=\(value)'") && "\(e)".contains(words), "\(e)")
            }
            // A spec built without the parser is checked when the port is made.
            let spec = PortSpec(kind: .virtioUser, path: "/tmp/a.sock", options: [("name", "vu9"), ("mac", value)])
            XCTAssertThrowsError(try VirtioUserConfig(spec: spec)) { e in
                XCTAssertTrue("\(e)".contains("port vu9: mac '\(value)'") && "\(e)".contains(words), "\(e)")
            }
        }
    }

    func testFormatAndParseRoundTrip() {
        XCTAssertEqual(PortSpec.formatMAC([0x02, 0x0a, 0xff, 0, 1, 0x10]), "02:0a:ff:00:01:10")
        XCTAssertEqual(PortSpec.parseMAC("02:0A:ff:00:01:10"), [0x02, 0x0a, 0xff, 0, 1, 0x10])
        XCTAssertNil(PortSpec.parseMAC("02:0a:ff:00:01"))
        XCTAssertNil(PortSpec.parseMAC("02:0a:ff:00:01:100"))
    }
}
