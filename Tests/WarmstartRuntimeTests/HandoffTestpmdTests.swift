import CWarmstartShim
import Foundation
import XCTest
import WarmstartTestSupport
@testable import WarmstartRuntime
@testable import WarmstartHandoff

/// DPDK's testpmd (virtio-user) as the guest: it negotiates with this process's backend, loops
/// packets through it (io forwarding, --tx-first), and the backend is handed to a child process
/// mid-stream. testpmd must keep forwarding without reconnecting or renegotiating, and at the end
/// its own counters must show nothing dropped.
/// Opt-in (needs hugepages and dpdk-testpmd): WARMSTART_DPDK_INTEROP=1 swift test --filter HandoffTestpmdTests
final class HandoffTestpmdTests: XCTestCase {
    func testTestpmdKeepsForwardingAcrossAProcessUpgrade() throws {
        let env = ProcessInfo.processInfo.environment
        guard env["WARMSTART_DPDK_INTEROP"] == "1" else { throw XCTSkip("set WARMSTART_DPDK_INTEROP=1 to run against dpdk-testpmd") }
        let harness = try TestpmdHarness(name: "upgrade", prefixBase: "ws-upg", needsWarmstart: false)
        let vhostPath = harness.dir + "/vhost.sock", control = harness.dir + "/control.sock"
        let report = harness.dir + "/report.json", log = harness.log("testpmd")
        let listener = HandoffProcessTests.listen(vhostPath)
        // The harness kills testpmd by pid and removes its files and (unless the test failed) its log.
        var cleanup: [() -> Void] = [{ close(listener); harness.cleanup(keepLogs: (self.testRun?.failureCount ?? 0) > 0) }]
        defer { for c in cleanup.reversed() { c() } }

        let pmd = try harness.startTestpmd(vdevs: ["net_virtio_user0,path=\(vhostPath),queues=1,packed_vq=0,mrg_rxbuf=1"],
                                           appArgs: ["--forward-mode=io", "--tx-first", "--stats-period", "1", "--nb-cores=1"])

        var p = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, 30_000) == 1 else { return XCTFail("testpmd did not connect; log \(log)") }
        let backend = try HandoffBackend(connection: accept(listener, nil, nil))
        cleanup.append { backend.releaseAll() }
        XCTAssertTrue(waitUntil(interval: 10_000) { backend.datapath.stats()[0].total.rxPackets >= 100_000 },
                      "no traffic from testpmd; log \(log)")
        let before = backend.datapath.stats()[0].total

        // The old process's control socket; the child takes over from it.
        let donor = HandoffDonor(hooks: backend.donorHooks())
        let cfd = HandoffProcessTests.listen(control)
        cleanup.append { shutdown(cfd, Int32(SHUT_RDWR)); close(cfd) }
        let outcomes = DispatchSemaphore(value: 0)
        let lock = NSLock()
        var results: [HandoffDonorOutcome] = []
        Thread {
            while true {
                let c = accept(cfd, nil, nil)
                if c < 0 { return }
                Thread {
                    let o = donor.serve(HandoffChannel(fd: c))
                    lock.withLock { results.append(o) }
                    outcomes.signal()
                }.start()
            }
        }.start()
        func spawn(fault: String?) throws -> Process {
            try ChildTest.start("WarmstartRuntimeTests.HandoffProcessTests/testChildTakesOver",
                                environment: [HandoffProcessTests.childControl: control, HandoffProcessTests.childReport: report,
                                              HandoffProcessTests.childFault: fault],
                                inheritStderr: true)
        }
        // kill -9 of the new process at each step: testpmd keeps being served by this one.
        for step in ["hello", "transfer", "map", "quiesce", "commit"] {
            let k = try spawn(fault: "kill:\(step)")
            k.waitUntilExit()
            XCTAssertEqual(k.terminationStatus, SIGKILL, step)
            XCTAssertEqual(outcomes.wait(timeout: .now() + testDeadline), .success, step)
            let o = lock.withLock { results.last }
            if case .committed? = o { XCTFail("\(step): committed") }
            let rx = backend.datapath.stats()[0].total.rxPackets
            XCTAssertTrue(waitUntil { backend.datapath.stats()[0].total.rxPackets >= rx + 10_000 }, "\(step): old backend not forwarding")
        }
        print("testpmd: five kill -9 drills survived; old backend forwarded \(backend.datapath.stats()[0].total.rxPackets) packets")
        let outcome = outcomes
        var result: HandoffDonorOutcome? { lock.withLock { results.last } }
        let child = try spawn(fault: nil)
        cleanup.append { if child.isRunning { kill(child.processIdentifier, SIGKILL) }; child.waitUntilExit() }
        XCTAssertEqual(outcome.wait(timeout: .now() + testDeadline), .success)
        XCTAssertEqual(result, .committed(newPid: child.processIdentifier))
        var decoded: HandoffReport?
        waitUntil { decoded = try? JSONDecoder().decode(HandoffReport.self, from: Data(contentsOf: URL(fileURLWithPath: report))); return decoded != nil }
        let r = try XCTUnwrap(decoded, "no handoff report at \(report)")
        print("testpmd handoff: blackout \(r.blackoutMs ?? -1) ms; " + r.steps.map { "\($0.name) \(String(format: "%.3f", $0.ms)) ms" }.joined(separator: ", "))
        print("old backend forwarded \(before.rxPackets) packets before the kill -9 drills")

        // testpmd keeps forwarding through the child: its RX count (printed every second) grows.
        let rxAtHandoff = Self.last("RX-packets:", in: log) ?? 0
        XCTAssertTrue(waitUntil(interval: 100_000) { (Self.last("RX-packets:", in: log) ?? 0) > rxAtHandoff + 100_000 },
                      "testpmd stalled after the handoff; log \(log)")

        // Stop testpmd: it stops its port (GET_VRING_BASE, answered by the child) and prints totals.
        kill(pmd.processIdentifier, SIGINT)
        waitUntil(interval: 10_000) { !pmd.isRunning }
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        let tx = Self.last("TX-packets:", in: log) ?? 0, rx = Self.last("RX-packets:", in: log) ?? 0
        let txDropped = Self.last("TX-dropped:", in: log) ?? -1, rxDropped = Self.last("RX-dropped:", in: log) ?? -1
        print("testpmd totals: TX \(tx) RX \(rx) TX-dropped \(txDropped) RX-dropped \(rxDropped)")
        XCTAssertEqual(txDropped, 0)
        XCTAssertEqual(rxDropped, 0)
        // io forwarding re-sends what it receives: the packets that never came back are the ones
        // still circulating when it stopped (one --tx-first burst), or lost.
        XCTAssertLessThanOrEqual(tx - rx, 32, "packets sent − packets received")
        XCTAssertFalse(text.contains("VHOST_CONFIG") && text.contains("disconnect"), "testpmd saw a disconnect")
        waitUntil(interval: 10_000) { !child.isRunning }
        XCTAssertFalse(child.isRunning, "the child exits when testpmd closes the connection")
    }

    /// The last number after `key` in the file.
    static func last(_ key: String, in path: String) -> Int? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        var value: Int?
        var rest = Substring(text)
        while let r = rest.range(of: key) {
            rest = rest[r.upperBound...]
            let digits = rest.drop { $0 == " " }.prefix { $0.isNumber }
            if let v = Int(digits) { value = v }
        }
        return value
    }
}
