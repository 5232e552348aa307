import Foundation
import XCTest
import CWarmstartShim
import CWarmstartTestShim
import WarmstartMemory
import WarmstartPools
@testable import WarmstartPorts
import WarmstartTestSupport

/// TapQueue against the kernel, in a network namespace the test creates and always deletes.
final class TapQueueTests: XCTestCase {
    let tapMAC: [UInt8] = [0x02, 0, 0, 0, 0, 0x11]
    let peerMAC: [UInt8] = [0x02, 0, 0, 0, 0, 0x12]

    func testFramesGoToAndComeFromTheKernelStack() throws {
        let ns = try makeTapTestNamespace("ws-tapq")
        defer { _ = try? ip(["netns", "del", ns]) }

        // Open the TAP inside the namespace (setns on this thread only, then back).
        let target = open("/var/run/netns/\(ns)", O_RDONLY | O_CLOEXEC)
        let home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
        defer { close(target); close(home) }
        XCTAssertEqual(ws_enter_netns(target), 0)
        let fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC)
        var actual = [CChar](repeating: 0, count: 16)
        var step: UnsafePointer<CChar>? = nil
        let rc = ws_tap_configure(fd, "wsq0", &actual, &step)
        XCTAssertEqual(ws_enter_netns(home), 0)
        XCTAssertEqual(rc, 0)
        defer { close(fd) }
        XCTAssertEqual(try ip(["-n", ns, "link", "set", "wsq0", "address", "02:00:00:00:00:11", "up"]), 0)
        XCTAssertEqual(try ip(["-n", ns, "addr", "add", "10.78.0.1/24", "dev", "wsq0"]), 0)
        XCTAssertEqual(try ip(["-n", ns, "neigh", "add", "10.78.0.2", "lladdr", "02:00:00:00:00:12", "dev", "wsq0", "nud", "permanent"]), 0)

        let cfg = MbufPoolConfig(count: 256, cacheSize: 32)
        let region = try MemoryRegion.memfd(name: "tap", size: PageSize.small4K.roundUp(MbufPoolConfig.bytesNeeded(cfg))!, pageSize: .small4K)
        let pool = try MbufPool.layOut(config: cfg, region: region, offset: 0, poolID: 0)
        let cache = MbufCache(pool: pool)
        let q = TapQueue(fd: fd, name: "wsq0")
        let burst = UnsafeMutablePointer<Mbuf>.allocate(capacity: 32)
        defer { burst.deallocate() }

        // An ICMP echo request from the datapath to the TAP's address: the kernel answers.
        let request = echoRequest()
        let m = cache.alloc()!
        request.withUnsafeBytes { m.data.copyMemory(from: $0.baseAddress!, byteCount: request.count) }
        m.dataLength = UInt16(request.count)
        m.packetLength = UInt32(request.count)
        burst[0] = m
        XCTAssertEqual(q.transmitBurst(burst, count: 1, cache: cache), 1)

        var reply: [UInt8]?
        let deadline = Date().addingTimeInterval(testDeadline)
        while reply == nil && Date() < deadline {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            _ = poll(&p, 1, 100)
            let n = q.receiveBurst(into: burst, max: 32, cache: cache)
            for i in 0..<n {
                let f = Array(UnsafeRawBufferPointer(start: burst[i].data, count: Int(burst[i].dataLength)))
                XCTAssertTrue(burst[i].offload.contains(.vnetHeaderValid))
                if f.count >= 42 && f[23] == 1 && f[34] == 0 { reply = f }
                cache.free(burst[i])
            }
        }
        let r = try XCTUnwrap(reply, "no ICMP echo reply came back through the TAP queue")
        XCTAssertEqual(Array(r[0..<6]), peerMAC)
        XCTAssertEqual(Array(r[26..<30]), [10, 78, 0, 1])
        XCTAssertEqual(Array(r[42...]), Array(request[42...]), "the echo payload comes back intact")
        XCTAssertEqual(q.errorCount, 0)
        cache.flush()
        XCTAssertEqual(pool.inUseCount, 0)
    }

    func echoRequest() -> [UInt8] {
        var icmp: [UInt8] = [8, 0, 0, 0, 0x57, 0x53, 0, 1] + Array("tap queue from warmstart".utf8)
        let c = checksum(icmp)
        icmp[2] = UInt8(c >> 8); icmp[3] = UInt8(c & 0xff)
        let total = 20 + icmp.count
        var ipHeader: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xff), 0, 1, 0x40, 0, 64, 1, 0, 0, 10, 78, 0, 2, 10, 78, 0, 1]
        let ic = checksum(ipHeader)
        ipHeader[10] = UInt8(ic >> 8); ipHeader[11] = UInt8(ic & 0xff)
        return tapMAC + peerMAC + [0x08, 0x00] + ipHeader + icmp
    }

    func checksum(_ bytes: [UInt8]) -> UInt16 {
        var sum: UInt32 = 0
        var i = 0
        while i + 1 < bytes.count { sum += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1]); i += 2 }
        if i < bytes.count { sum += UInt32(bytes[i]) << 8 }
        while sum >> 16 != 0 { sum = (sum & 0xffff) + (sum >> 16) }
        return ~UInt16(sum)
    }
}
