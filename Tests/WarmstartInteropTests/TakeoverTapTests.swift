import Foundation
import XCTest
import WarmstartTestSupport

/// `--takeover` of a TAP port, no testpmd needed: the interface survives the old process (its fd
/// was handed over), the new process's port is started and reflects a frame sent on it.
final class TakeoverTapTests: XCTestCase {
    func testTapPortIsTakenOver() throws {
        guard getuid() == 0, FileManager.default.fileExists(atPath: "/dev/net/tun") else {
            throw XCTSkip("TAP needs root and /dev/net/tun")
        }
        guard let bin = TestpmdHarness.findWarmstart() else { throw XCTSkip("warmstart executable not found under .build") }
        let dir = "/tmp/ws-tko-\(getpid())-tap"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let ifname = "wstko\(getpid() % 10000)"
        var children: [Process] = []
        defer {
            for p in children where p.isRunning { kill(p.processIdentifier, SIGKILL) }
            for p in children { p.waitUntilExit() }
            try? FileManager.default.removeItem(atPath: dir)
        }
        func spawn(_ args: [String], _ log: String) throws -> Process {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: bin)
            p.arguments = args
            FileManager.default.createFile(atPath: "\(dir)/\(log).log", contents: nil)
            let h = try FileHandle(forWritingTo: URL(fileURLWithPath: "\(dir)/\(log).log"))
            p.standardOutput = h; p.standardError = h
            try p.run()
            children.append(p)
            return p
        }
        func text(_ log: String) -> String { (try? String(contentsOfFile: "\(dir)/\(log).log", encoding: .utf8)) ?? "" }
        func ifindex() -> String? { try? String(contentsOfFile: "/sys/class/net/\(ifname)/ifindex", encoding: .utf8) }
        func until(_ seconds: Double = TestpmdHarness.deadline, _ cond: () -> Bool) -> Bool {
            waitUntil(timeout: seconds, interval: 20_000, cond)
        }
        let ctl = "\(dir)/control", json = "\(dir)/r.json"
        let old = try spawn(["run", "--no-snapshot", "--hugepages", "off", "--mbufs", "4096", "--port", "tap:\(ifname)",
                             "--forward", "macswap", "--control", ctl], "old")
        XCTAssertTrue(until { FileManager.default.fileExists(atPath: ctl) && ifindex() != nil }, text("old"))
        let index = ifindex()
        let new = try spawn(["run", "--takeover", ctl, "--report-json", json], "new")
        XCTAssertTrue(until { !old.isRunning }, "old process still running: \(text("old"))")
        old.waitUntilExit()
        XCTAssertEqual(old.terminationStatus, 0, text("old"))
        XCTAssertTrue(until { FileManager.default.fileExists(atPath: json) }, text("new"))
        XCTAssertEqual(ifindex(), index, "the interface survived: its fd was handed over")
        XCTAssertTrue(new.isRunning, text("new"))
        // A frame sent on the interface comes back through the new process (macswap): sent and
        // read on a packet socket bound to the interface, again until it is back (the first may
        // go out before the link is up), then both counters of the new process show it.
        let up = try spawn_ip(["link", "set", ifname, "up"])
        XCTAssertEqual(up, 0)
        let ifi = Int32((index ?? "").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        let probe = try PacketSocket(ifindex: ifi, etherType: 0x88B5)
        let frame: [UInt8] = [0x02, 0x57, 0x53, 0, 0, 0x02, 0x02, 0x57, 0x53, 0, 0, 0x01, 0x88, 0xB5]
            + Array("warmstart takeover tap".utf8) + [UInt8](repeating: 0xA5, count: 40)
        let swapped = Array(frame[6..<12]) + Array(frame[0..<6]) + Array(frame[12...])
        var sent = 0
        let back = until {
            if probe.send(frame) { sent += 1 }
            return probe.receive(timeoutMs: 100).contains(swapped)
        }
        XCTAssertTrue(back, "the frame came back through the new process (\(sent) sent): \(text("new"))")
        var port: [String: Any]?
        let counted = until {
            port = ((try? TestpmdHarness.stats(control: ctl))?["ports"] as? [[String: Any]])?.first
            let total = port?["total"] as? [String: Any]
            func n(_ k: String) -> Int { (total?[k] as? NSNumber)?.intValue ?? 0 }
            return n("rx_packets") >= 1 && n("tx_packets") >= 1
        }
        XCTAssertTrue(counted, "the new process counts what it received on the handed-over TAP fd: \(String(describing: port))")
        XCTAssertEqual(port?["state"] as? String, "started")
        kill(new.processIdentifier, SIGTERM)
        new.waitUntilExit()
        XCTAssertEqual(new.terminationStatus, 0, text("new"))
        XCTAssertTrue(text("new").contains("handoff: committed"), text("new"))
        XCTAssertTrue(until { ifindex() == nil }, "the interface goes with the last process holding it")
    }

    private func spawn_ip(_ args: [String]) throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["ip"] + args
        try p.run(); p.waitUntilExit()
        return p.terminationStatus
    }
}

/// `struct sockaddr_ll` (<linux/if_packet.h>, not exported by Glibc's module), field for field.
struct LinkLayerAddress {
    static let outgoing: UInt8 = 4   // PACKET_OUTGOING: a frame this host sent
    var family = UInt16(AF_PACKET)
    var protocolBigEndian: UInt16 = 0
    var ifindex: Int32 = 0
    var hardwareType: UInt16 = 0
    var packetType: UInt8 = 0
    var addressLength: UInt8 = 0
    var address: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0, 0, 0)
}

/// An AF_PACKET socket on one interface and one EtherType: frames sent go out on the interface,
/// frames received are those the interface receives (never our own outgoing ones).
final class PacketSocket {
    let fd: Int32
    let ifindex: Int32
    let etherType: UInt16
    static let addressSize = socklen_t(MemoryLayout<LinkLayerAddress>.size)

    init(ifindex: Int32, etherType: UInt16) throws {
        precondition(MemoryLayout<LinkLayerAddress>.size == 20, "sockaddr_ll is 20 bytes")
        self.ifindex = ifindex
        self.etherType = etherType
        fd = socket(AF_PACKET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Int32(etherType.bigEndian))
        guard fd >= 0 else { throw InteropError("AF_PACKET socket: errno \(errno)") }
        var a = address
        let rc = withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, Self.addressSize) }
        }
        guard rc == 0 else { close(fd); throw InteropError("AF_PACKET bind to ifindex \(ifindex): errno \(errno)") }
    }

    deinit { close(fd) }

    var address: LinkLayerAddress {
        LinkLayerAddress(protocolBigEndian: etherType.bigEndian, ifindex: ifindex, addressLength: 6)
    }

    func send(_ frame: [UInt8]) -> Bool {
        var a = address
        let n = frame.withUnsafeBytes { b in
            withUnsafePointer(to: &a) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, b.baseAddress, b.count, 0, $0, Self.addressSize) }
            }
        }
        return n == frame.count
    }

    /// Frames received within `timeoutMs` (what is queued, or the first that arrives).
    func receive(timeoutMs: Int32) -> [[UInt8]] {
        var out: [[UInt8]] = []
        var buf = [UInt8](repeating: 0, count: 2048)
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while poll(&pfd, 1, out.isEmpty ? timeoutMs : 0) == 1 {
            var from = LinkLayerAddress()
            var len = Self.addressSize
            let n = buf.withUnsafeMutableBytes { b in
                withUnsafeMutablePointer(to: &from) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, b.baseAddress, b.count, 0, $0, &len) }
                }
            }
            if n <= 0 { break }
            if from.packetType != LinkLayerAddress.outgoing { out.append(Array(buf[0..<n])) }
        }
        return out
    }
}
