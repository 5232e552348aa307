import XCTest
import Glibc
import Foundation
import CWarmstartShim
import WarmstartEngine
import WarmstartMemory
import WarmstartPools
import WarmstartPorts
import WarmstartTestSupport
import CWarmstartTestShim
import WarmstartIO
@testable import WarmstartBus

/// A TAP port opened by the bus (through `TapPort`) passes packets to and from the kernel, inside
/// a network namespace the test creates (and always deletes). The datapath's threads are not
/// started: the test reads and writes the TAP's fd itself.
final class TapPortTests: XCTestCase {
    private let tapMAC: [UInt8] = [0x02, 0, 0, 0, 0, 0x01]
    private let peerMAC: [UInt8] = [0x02, 0, 0, 0, 0, 0x02]
    private let tapIP: [UInt8] = [10, 77, 0, 1]
    private let peerIP: [UInt8] = [10, 77, 0, 2]

    func testTapPassesPacketsToAndFromTheKernel() throws {
        let ns = try makeTapTestNamespace("ws-test")
        defer { _ = try? ip(["netns", "del", ns]) }

        // Enter the namespace on this thread only long enough to start the bus (its loop thread
        // inherits the namespace, so the TAP is created there) and to open a UDP socket.
        let target = open("/var/run/netns/\(ns)", O_RDONLY | O_CLOEXEC)
        let home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
        XCTAssertGreaterThanOrEqual(target, 0); XCTAssertGreaterThanOrEqual(home, 0)
        defer { close(target); close(home) }
        XCTAssertEqual(ws_enter_netns(target), 0)
        let bus = try Bus(ports: [try PortSpec.parse("tap:wstap0")], bootOriginNs: ws_monotonic_ns())
        let tapPort = try makeTapPort(ports: ["wstap0"])
        tapPort.register(on: bus)
        bus.start()
        let udp = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        XCTAssertEqual(ws_enter_netns(home), 0, "could not return to the test's namespace")
        defer { bus.stop(); close(udp) }

        XCTAssertTrue(bus.waitUntilSettled(timeoutSeconds: testDeadline))
        let rec = try XCTUnwrap(bus.snapshot().first)
        XCTAssertEqual(rec.state, .started, rec.reason ?? "")
        XCTAssertNotNil(rec.probeMs)
        let tap = bus.devices[0].fd
        XCTAssertGreaterThanOrEqual(tap, 0)
        XCTAssertNotEqual(fcntl(tap, F_GETFL) & O_NONBLOCK, 0, "the TAP fd is non-blocking")

        XCTAssertEqual(try ip(["-n", ns, "link", "set", "wstap0", "address", "02:00:00:00:00:01", "up"]), 0)
        XCTAssertEqual(try ip(["-n", ns, "addr", "add", "10.77.0.1/24", "dev", "wstap0"]), 0)
        XCTAssertEqual(try ip(["-n", ns, "neigh", "add", "10.77.0.2", "lladdr", "02:00:00:00:00:02",
                                "dev", "wstap0", "nud", "permanent"]), 0)

        // Kernel → TAP: a UDP datagram to the neighbour comes out of the fd after the vnet header.
        var dst = sockaddr_in()
        dst.sin_family = sa_family_t(AF_INET)
        dst.sin_port = in_port_t(9999).bigEndian
        dst.sin_addr.s_addr = UInt32(10 | 77 << 8 | 0 << 16 | 2 << 24)
        let payload = Array("warmstart".utf8)
        let sent = withUnsafePointer(to: &dst) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(udp, payload, payload.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        XCTAssertEqual(sent, payload.count, String(cString: strerror(errno)))
        let udpFrame = try XCTUnwrap(readFrame(tap) { eth in
            eth.count > 42 && eth[12] == 0x08 && eth[13] == 0x00 && eth[23] == 17 && eth[36] == 0x27 && eth[37] == 0x0f
        }, "no UDP frame to 10.77.0.2:9999 came out of the TAP")
        bus.noteFirstPacket(deviceIndex: 0)
        XCTAssertEqual(Array(udpFrame[0..<6]), peerMAC)
        XCTAssertEqual(Array(udpFrame[30..<34]), peerIP)
        XCTAssertEqual(Array(udpFrame[42...]), payload)
        XCTAssertNotNil(bus.snapshot()[0].firstPacketMs)

        // TAP → kernel: an ICMP echo request to the TAP's address gets an echo reply back.
        let request = echoRequest(id: 0x5753, seq: 1)
        let wrote = ([UInt8](repeating: 0, count: 12) + request).withUnsafeBytes { write(tap, $0.baseAddress, $0.count) }
        XCTAssertEqual(wrote, 12 + request.count, String(cString: strerror(errno)))
        let reply = try XCTUnwrap(readFrame(tap) { eth in
            eth.count >= 42 && eth[12] == 0x08 && eth[13] == 0x00 && eth[23] == 1 && eth[34] == 0 && eth[38] == 0x57 && eth[39] == 0x53
        }, "no ICMP echo reply came back through the TAP")
        XCTAssertEqual(Array(reply[26..<30]), tapIP)
        XCTAssertEqual(Array(reply[30..<34]), peerIP)
    }

    /// A name that belongs to a device that is not a TAP (the loopback) fails with the step named.
    func testTapOnAnExistingNonTapInterfaceFails() throws {
        guard getuid() == 0 else { throw XCTSkip("needs root (CAP_NET_ADMIN) for TUNSETIFF") }
        guard access("/dev/net/tun", R_OK | W_OK) == 0 else { throw XCTSkip("/dev/net/tun is not available") }
        let bus = try Bus(ports: [try PortSpec.parse("tap:lo")], bootOriginNs: ws_monotonic_ns())
        try makeTapPort(ports: ["lo"]).register(on: bus)
        bus.start()
        defer { bus.stop() }
        XCTAssertTrue(bus.waitUntilSettled(timeoutSeconds: testDeadline))
        let r = try XCTUnwrap(bus.snapshot().first)
        XCTAssertEqual(r.state, .failed)
        XCTAssertTrue(r.reason?.hasPrefix("tap lo: TUNSETIFF: ") == true, r.reason ?? "nil")
    }

    /// A TAP driver over a datapath (threads not started) with a small pool of its own.
    private func makeTapPort(ports: [String]) throws -> TapPort {
        let cfg = MbufPoolConfig(count: 256, cacheSize: 0)
        let region = try MemoryRegion.memfd(name: "tap-test", size: PageSize.small4K.roundUp(MbufPoolConfig.bytesNeeded(cfg))!,
                                            pageSize: .small4K)
        let pool = try MbufPool.layOut(config: cfg, region: region, offset: 0, poolID: 0)
        return TapPort(datapath: Datapath(pool: pool, ports: ports))
    }

    /// A bus without a TAP driver cannot open a TAP: the device fails, naming what is missing.
    func testTapWithoutItsDriverFails() throws {
        let bus = try Bus(ports: [try PortSpec.parse("tap:wsnodrv0")], bootOriginNs: ws_monotonic_ns())
        bus.start()
        defer { bus.stop() }
        XCTAssertTrue(bus.waitUntilSettled(timeoutSeconds: testDeadline))
        let r = try XCTUnwrap(bus.snapshot().first)
        XCTAssertEqual(r.state, .failed)
        XCTAssertEqual(r.reason, "no driver registered for tap ports")
    }

    /// Reads frames (skipping the 12-byte virtio-net header) until one matches (or the deadline).
    private func readFrame(_ fd: Int32, matching: ([UInt8]) -> Bool) -> [UInt8]? {
        let deadline = Date().addingTimeInterval(testDeadline)
        var buf = [UInt8](repeating: 0, count: 2048)
        while Date() < deadline {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard Glibc.poll(&p, 1, 100) > 0 else { continue }
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, 2048) }
            guard n > 12 else { continue }
            let eth = Array(buf[12..<n])
            if matching(eth) { return eth }
        }
        return nil
    }

    private func echoRequest(id: UInt16, seq: UInt16) -> [UInt8] {
        var icmp: [UInt8] = [8, 0, 0, 0, UInt8(id >> 8), UInt8(id & 0xff), UInt8(seq >> 8), UInt8(seq & 0xff)]
        icmp += Array("ping from warmstart".utf8)
        let c = checksum(icmp)
        icmp[2] = UInt8(c >> 8); icmp[3] = UInt8(c & 0xff)
        let total = 20 + icmp.count
        var ip: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xff), 0, 1, 0x40, 0, 64, 1, 0, 0] + peerIP + tapIP
        let ic = checksum(ip)
        ip[10] = UInt8(ic >> 8); ip[11] = UInt8(ic & 0xff)
        return tapMAC + peerMAC + [0x08, 0x00] + ip + icmp
    }

    private func checksum(_ bytes: [UInt8]) -> UInt16 {
        var sum: UInt32 = 0
        var i = 0
        while i + 1 < bytes.count { sum += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1]); i += 2 }
        if i < bytes.count { sum += UInt32(bytes[i]) << 8 }
        while sum >> 16 != 0 { sum = (sum & 0xffff) + (sum >> 16) }
        return ~UInt16(sum)
    }
}
