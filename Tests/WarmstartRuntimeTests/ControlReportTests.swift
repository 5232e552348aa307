import Foundation
import XCTest
import WarmstartBus
import WarmstartMemory
import WarmstartPools
import WarmstartSnapshot
@testable import WarmstartRuntime

/// `warmstart report --control PATH`: a running runtime answers with its boot report.
final class ControlReportTests: XCTestCase {
    func testRunningRuntimeServesItsBootReport() throws {
        let dir = "/tmp/ws-report-\(getpid())"
        mkdir(dir, 0o700)
        defer { unlink("\(dir)/ctl"); unlink("\(dir)/a.sock"); rmdir(dir) }
        let recorder = PhaseRecorder(clock: BootClock(environment: [:]))
        let memory = try LiveMemory.coldLayout(SnapshotConfig(pool: MbufPoolConfig(count: 512)), hugepages: .off,
                                               phases: { name, t0, t1, work in recorder.record(name, startNs: t0, endNs: t1, work: work) })
        let runtime = try Runtime(options: RuntimeOptions(ports: [try PortSpec.parse("vhost-user:\(dir)/a.sock")],
                                                          controlPath: "\(dir)/ctl"),
                                  memory: memory, recorder: recorder)
        try runtime.start()
        defer { runtime.stop() }

        // Before the CLI has assembled the report, the request fails with the reason.
        let early = try ControlClient.request(path: "\(dir)/ctl", ControlRequest(cmd: "report"))
        XCTAssertTrue(early.contains("\"ok\":false") && early.contains("not ready"), early)

        runtime.reportProvider = {
            BootReport(phases: recorder.phases, totalMs: 1, memory: MemoryBoot.memorySection(memory, mode: .off),
                       snapshot: .init(path: nil, outcome: "none", reason: nil), devices: runtime.deviceTimings())
        }
        let line = try ControlClient.request(path: "\(dir)/ctl", ControlRequest(cmd: "report"))
        struct Answer: Decodable { var ok: Bool; var result: BootReport? }
        let answer = try JSONDecoder().decode(Answer.self, from: Data(line.utf8))
        XCTAssertTrue(answer.ok)
        let report = try XCTUnwrap(answer.result)
        XCTAssertEqual(report.phases.map(\.name), ["hugepage-init", "mbuf-init"])
        XCTAssertEqual(report.memory.pageSize, "4K")
        XCTAssertEqual(report.devices.first?.kind, "vhost-user")
    }
}
