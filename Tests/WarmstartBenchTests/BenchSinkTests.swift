import Foundation
import XCTest
import CWarmstartShim
import WarmstartBus
import WarmstartPools
import WarmstartSnapshot
@testable import WarmstartBench
@testable import WarmstartRuntime

/// The sink direction of `warmstart bench`: the back-end generates, Warmstart's front-end receives
/// and counts. Here the back-end is a runtime in this process (`--forward txonly` on a vhost-user
/// port over the same memory), as `--backend warmstart` runs it in a child.
final class BenchSinkTests: XCTestCase {
    func testSinkCountsWhatTheBackendGenerates() throws {
        for (packed, size) in [(false, 1518), (true, 64), (false, 9000)] {
            let live = try LiveMemory.coldLayout(SnapshotConfig(pool: MbufPoolConfig(count: 16384, cacheSize: 64)), hugepages: .off)
            let rec = PhaseRecorder(clock: BootClock(environment: [:]))
            var template = Array("/tmp/ws-sink-test-XXXXXX".utf8CString)
            let dir = String(cString: template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!)! })
            defer { rmdir(dir) }
            let sock = dir + "/be.sock"
            let runtime = try Runtime(options: RuntimeOptions(ports: [try PortSpec.parse("vhost-user:\(sock),name=gen")],
                                                              forward: .txonly, cores: 1, txSize: size),
                                      memory: live, recorder: rec)
            try runtime.start()
            defer { runtime.stop(); unlink(sock) }
            var o = BenchOptions()
            o.mode = .sink
            o.duration = 0.5
            o.size = size
            o.packed = packed
            o.mac = [0x02, 0x5A, 0, 0, 0, 0x07]
            o.cpu = Runtime.cpus(forThreads: 1)[0] == 0 ? 1 : 0
            let r = try Bench.drive(memory: live, socket: sock, options: o, startNs: ws_monotonic_ns())
            XCTAssertEqual(r.mode, "sink")
            XCTAssertGreaterThan(r.rxPackets, 0, "frames received (\(size) B, packed \(packed))")
            XCTAssertEqual(r.txPackets, 0, "the sink sends nothing")
            // Gbit/s is from the bytes received: every frame had the size asked for.
            let bytes = r.gbps * 1e9 / 8 * r.seconds
            XCTAssertEqual(bytes / Double(r.rxPackets), Double(size), accuracy: 0.5)
            XCTAssertNotNil(r.latencyP50Us, "one-way latency from the back-end's send stamp")
            XCTAssertEqual(r.mac, "02:5a:00:00:00:07")
            let gen = runtime.stats().ports[0]
            XCTAssertGreaterThanOrEqual(gen.total.txPackets, r.rxPackets, "the back-end sent at least what we counted")
        }
    }

    func testTestpmdForwardStatisticsGiveTheDrops() {
        let log = """
              ---------------------- Forward statistics for port 0  ----------------------
              RX-packets: 0              RX-dropped: 0             RX-total: 0
              TX-packets: 1207           TX-dropped: 98765         TX-total: 99972
              ----------------------------------------------------------------------------
            """
        XCTAssertEqual(Testpmd.txDropped(log: "Port 0: link state change event\n" + log), 98765)
        XCTAssertNil(Testpmd.txDropped(log: "TX-dropped: 5\n(no forward statistics)"))
    }
}
