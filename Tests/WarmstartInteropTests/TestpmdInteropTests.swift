import Foundation
import XCTest
import WarmstartTestSupport

/// `warmstart run --port vhost-user:SOCK` against DPDK's testpmd as the virtio-user front-end.
///
/// What the checks prove: the handshake works for each ring layout and buffer mode; every frame
/// testpmd transmits is taken by Warmstart (packets and bytes equal exactly, so each frame arrives
/// whole, header stripped, at its full length — chained mbufs for 9000 B); what Warmstart reflects
/// (macswap) is received by testpmd, up to the one burst still in flight when testpmd stopped.
/// Payload bytes are not compared here (testpmd does not check them); TestpmdPayloadTests and the
/// in-process tests (VhostPortTests) compare payloads byte for byte.
///
/// No check depends on speed: each test waits (with a deadline for a loaded machine) until
/// Warmstart has counted `frames` frames, then stops testpmd and compares exact counts. testpmd's
/// virtio-user negotiates VIRTIO_F_IN_ORDER by default (`in_order=1`), so these run the in-order
/// paths; `in_order=0` is covered by TestpmdPayloadTests.
final class TestpmdInteropTests: XCTestCase {
    struct Case { var packed: Bool; var mergeable: Bool; var size: Int }

    /// Frames Warmstart must have taken (and reflected) before testpmd is stopped: thousands of
    /// ring wraps' worth of 256-entry rings, a few milliseconds on a quiet machine.
    static let frames: UInt64 = 20_000

    /// testpmd io --tx-first through Warmstart's macswap and back: traffic both ways.
    func testLoopMatrix() throws {
        let cases = [
            Case(packed: false, mergeable: false, size: 64), Case(packed: false, mergeable: true, size: 64),
            Case(packed: true, mergeable: false, size: 64), Case(packed: true, mergeable: true, size: 64),
            Case(packed: false, mergeable: true, size: 1518), Case(packed: true, mergeable: false, size: 1518),
            Case(packed: false, mergeable: true, size: 9000), Case(packed: true, mergeable: true, size: 9000),
        ]
        for c in cases {
            print("interop: \(c.packed ? "packed" : "split") mrg_rxbuf=\(c.mergeable ? 1 : 0) \(c.size) B")
            try loop(c)
        }
    }

    func loop(_ c: Case) throws {
        let h = try TestpmdHarness(name: "loop\(c.packed ? "p" : "s")\(c.mergeable ? 1 : 0)-\(c.size)")
        defer { h.cleanup() }
        let sock = "\(h.dir)/vhost.sock"
        let ws = try h.startWarmstart(ports: ["vhost-user:\(sock),name=vm"])
        let tp = try h.startTestpmd(socket: sock, packed: c.packed, mergeable: c.mergeable, size: c.size)
        tp.send("set fwd io")
        tp.send("start tx_first")
        try h.waitForCounters(port: "vm", "carry \(Self.frames) frames both ways") {
            $0.rxPackets >= Self.frames && $0.txPackets >= Self.frames
        }
        let (t, w) = try h.stopAndCollect(tp, port: "vm")
        tp.quit()
        kill(ws.processIdentifier, SIGTERM)
        ws.waitUntilExit()
        let label = "\(c) testpmd \(t) warmstart \(w); logs \(h.dir)"
        XCTAssertGreaterThanOrEqual(t.tx, Self.frames, label)
        XCTAssertEqual(w.rxPackets, t.tx, "every frame testpmd sent reached Warmstart: \(label)")
        XCTAssertEqual(w.rxBytes, t.txBytes, label)
        XCTAssertEqual(w.rxBytes, w.rxPackets * UInt64(c.size), "whole frames: \(label)")
        XCTAssertGreaterThanOrEqual(w.txPackets, t.rx, label)
        XCTAssertLessThanOrEqual(w.txPackets - t.rx, 32, "at most the burst in flight: \(label)")
        XCTAssertEqual(w.txBytes - t.rxBytes, (w.txPackets - t.rx) * UInt64(c.size), label)
        XCTAssertEqual(w.txPackets, w.rxPackets, "every frame reflected, none dropped: \(label)")
        XCTAssertEqual(w.drops, 0, label)
        XCTAssertEqual(w.errors, 0, label)
        XCTAssertEqual(ws.terminationStatus, 0, label)
    }

    /// testpmd txonly → Warmstart counts every frame; what it cannot reflect (testpmd does not
    /// poll its RX in txonly) is dropped and counted, never lost.
    func testTxOnlyCounts() throws {
        for packed in [false, true] {
            let h = try TestpmdHarness(name: "txonly\(packed ? "p" : "s")")
            defer { h.cleanup() }
            let sock = "\(h.dir)/vhost.sock"
            let ws = try h.startWarmstart(ports: ["vhost-user:\(sock),name=vm"])
            let tp = try h.startTestpmd(socket: sock, packed: packed, mergeable: true, size: 64)
            tp.send("set fwd txonly")
            tp.send("start")
            try h.waitForCounters(port: "vm", "take \(Self.frames) frames") { $0.rxPackets >= Self.frames }
            let (t, w) = try h.stopAndCollect(tp, port: "vm")
            tp.quit()
            kill(ws.processIdentifier, SIGTERM)
            ws.waitUntilExit()
            let label = "packed=\(packed) testpmd \(t) warmstart \(w)"
            XCTAssertGreaterThanOrEqual(t.tx, Self.frames, label)
            XCTAssertEqual(w.rxPackets, t.tx, label)
            XCTAssertEqual(w.rxBytes, t.txBytes, label)
            XCTAssertEqual(w.txPackets + w.drops, w.rxPackets, "reflected or dropped, none lost: \(label)")
            XCTAssertEqual(w.errors, 0, label)
            XCTAssertEqual(ws.terminationStatus, 0, label)
        }
    }

    /// A front-end that sends a malformed message (bad version, then an oversize payload) loses
    /// its session — logged, the port probes again — while another port keeps forwarding.
    func testHostilePeerDoesNotDisturbOtherPort() throws {
        let h = try TestpmdHarness(name: "hostile")
        defer { h.cleanup() }
        let good = "\(h.dir)/good.sock", bad = "\(h.dir)/bad.sock"
        let ws = try h.startWarmstart(ports: ["vhost-user:\(good),name=good", "vhost-user:\(bad),name=bad"])
        let tp = try h.startTestpmd(socket: good, packed: true, mergeable: true, size: 64)
        tp.send("set fwd io")
        tp.send("start tx_first")
        let before = try h.waitForCounters(port: "good", "forward") { $0.rxPackets >= 1000 }
        // GET_FEATURES (1) with version 2 in the flags, then one claiming a 8 KiB payload.
        for (flags, size) in [(UInt32(2), UInt32(0)), (UInt32(1), UInt32(8192))] {
            let fd = try connectUnix(bad)
            var header: [UInt8] = []
            for v in [UInt32(1), flags, size] { withUnsafeBytes(of: v.littleEndian) { header += $0 } }
            _ = header.withUnsafeBytes { send(fd, $0.baseAddress, header.count, 0) }
            // The back-end drops the session: we read end-of-stream.
            var b = [UInt8](repeating: 0, count: 16)
            var tv = timeval(tv_sec: Int(TestpmdHarness.deadline), tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            let n = b.withUnsafeMutableBytes { read(fd, $0.baseAddress, 16) }
            let e = errno
            // End-of-stream, or a reset if the back-end closed with bytes of ours unread — never
            // the receive timeout (EAGAIN) or an answer.
            XCTAssertTrue(n == 0 || (n < 0 && e == ECONNRESET),
                          "the session was dropped (flags \(flags), size \(size)): read \(n), errno \(e)")
            close(fd)
        }
        let badState = try h.waitForCounters(port: "bad", "drop two sessions and accept again") {
            $0.reconnects >= 2 && $0.state == "probing"
        }
        let after = try h.waitForCounters(port: "good", "keep forwarding") { $0.rxPackets >= before.rxPackets + 10_000 }
        let (t, w) = try h.stopAndCollect(tp, port: "good")
        tp.quit()
        kill(ws.processIdentifier, SIGTERM)
        ws.waitUntilExit()
        XCTAssertEqual(after.state, "started")
        XCTAssertEqual(after.reconnects, 0, "the good port's session was never touched")
        XCTAssertEqual(badState.reconnects, 2, "two sessions dropped: \(badState)")
        XCTAssertEqual(badState.state, "probing", "the port accepts the next front-end")
        let label = "good port: testpmd \(t) warmstart \(w)"
        XCTAssertEqual(w.rxPackets, t.tx, "nothing lost on the good port: \(label)")
        XCTAssertLessThanOrEqual(w.txPackets - t.rx, 32, label)
        XCTAssertEqual(w.errors, 0, label)
        let log = (try? String(contentsOfFile: h.log("warmstart"), encoding: .utf8)) ?? ""
        XCTAssertTrue(log.contains("dropping the session"), log)
        XCTAssertEqual(ws.terminationStatus, 0)
    }

    /// Two queue pairs (queues=2) on two polling threads: both pairs start, carry traffic, and
    /// the totals agree with testpmd's.
    func testMultiQueueTwoPairsTwoThreads() throws {
        let h = try TestpmdHarness(name: "mq")
        defer { h.cleanup() }
        let sock = "\(h.dir)/vhost.sock"
        let ws = try h.startWarmstart(ports: ["vhost-user:\(sock),name=vm,queues=2"], cores: 2)
        let tp = try h.startTestpmd(socket: sock, packed: false, mergeable: true, size: 64, queues: 2)
        tp.send("set fwd io")
        tp.send("start tx_first")
        var perQueue: [UInt64] = []
        let both = try waitUntil(timeout: TestpmdHarness.deadline, interval: 10_000) {
            perQueue = try h.queueRxPackets(port: "vm")
            return perQueue.count == 2 && perQueue.allSatisfy { $0 >= Self.frames / 2 }
        }
        XCTAssertTrue(both, "both queue pairs carry traffic: \(perQueue)")
        let (t, w) = try h.stopAndCollect(tp, port: "vm")
        perQueue = try h.queueRxPackets(port: "vm")
        tp.quit()
        kill(ws.processIdentifier, SIGTERM)
        ws.waitUntilExit()
        XCTAssertEqual(perQueue.count, 2, "\(perQueue)")
        XCTAssertTrue(perQueue.allSatisfy { $0 > 0 }, "both queue pairs carried traffic: \(perQueue)")
        XCTAssertEqual(perQueue.reduce(0, +), w.rxPackets, "\(perQueue)")
        XCTAssertEqual(w.rxPackets, t.tx)
        XCTAssertLessThanOrEqual(w.txPackets - t.rx, 64, "at most one burst per queue in flight")
        XCTAssertEqual(w.errors, 0)
        XCTAssertEqual(ws.terminationStatus, 0)
    }

    /// `--boot-only` waits for the declared device, then prints the report with its row and the
    /// bus-probe / device-start phases, and exits 0.
    func testBootOnlyReportsTheDevice() throws {
        let h = try TestpmdHarness(name: "bootonly")
        defer { h.cleanup() }
        let sock = "\(h.dir)/vhost.sock"
        let json = "\(h.dir)/report.json"
        let ws = try h.startWarmstart(ports: ["vhost-user:\(sock),name=vm"], extra: ["--boot-only", "--device-wait", "20", "--report-json", json])
        // Warmstart exits as soon as the device started, taking testpmd's port down: no prompt wait.
        let tp = try h.startTestpmd(socket: sock, packed: true, mergeable: true, size: 64, waitForPrompt: false)
        _ = waitUntil(timeout: TestpmdHarness.deadline, interval: 20_000) { !ws.isRunning }
        tp.quit()
        XCTAssertFalse(ws.isRunning)
        ws.waitUntilExit()
        XCTAssertEqual(ws.terminationStatus, 0)
        let data = try Data(contentsOf: URL(fileURLWithPath: json))
        let obj = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        let devices = obj?["devices"] as? [[String: Any]] ?? []
        XCTAssertEqual(devices.first?["name"] as? String, "vm")
        XCTAssertEqual(devices.first?["kind"] as? String, "vhost-user")
        XCTAssertEqual(devices.first?["state"] as? String, "started")
        XCTAssertNotNil(devices.first?["probe_ms"] as? Double)
        XCTAssertNotNil(devices.first?["start_ms"] as? Double)
        XCTAssertNotNil(devices.first?["ready_at_ms"] as? Double)
        let phases = (obj?["phases"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        XCTAssertTrue(phases.contains("bus-probe") && phases.contains("device-start"), "\(phases)")
        let probe = (obj?["phases"] as? [[String: Any]])?.first { $0["name"] as? String == "bus-probe" }
        XCTAssertEqual(probe?["budget_ms"] as? Double, 240)
        XCTAssertEqual(probe?["budget_high_ms"] as? Double, 400)
    }

    func connectUnix(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { p in for (i, b) in path.utf8.enumerated() { p[i] = b } }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { close(fd); throw InteropError("connect \(path): errno \(errno)") }
        return fd
    }
}
