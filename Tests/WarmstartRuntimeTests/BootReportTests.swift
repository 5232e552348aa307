import Foundation
import XCTest
import WarmstartMemory
import WarmstartPools
import WarmstartSnapshot
@testable import WarmstartRuntime

final class BootReportTests: XCTestCase {
    func sample() -> BootReport {
        BootReport(phases: [
            BootPhase(name: "process-start", startMs: 0, ms: 4.2, work: "exec → main"),
            BootPhase(name: "snapshot-map", startMs: 4.3, ms: 0.05, budgetMs: Budgets.hugepages(bytes: 2 << 30), work: "2 GiB"),
            BootPhase(name: "mbuf-init", startMs: 4.4, ms: 0.01, budgetMs: 320, budgetHighMs: 520, work: "1000000 mbufs"),
        ], totalMs: 4.5, memory: .init(backing: "hugetlbfs", pageSize: "2M", bytes: 2 << 30, note: nil),
           snapshot: .init(path: "/dev/hugepages/x.snap", outcome: "restored", reason: nil),
           devices: [DeviceTiming(name: "vhost0", kind: "vhost-user", state: "started", probeMs: 0.2, startMs: 0.1,
                                  readyAtMs: 5.0, probeStartAtMs: 4.6)])
    }

    func testBudgetsScaleWithTheWork() {
        XCTAssertEqual(Budgets.hugepages(bytes: 2 << 30), 640)
        XCTAssertEqual(Budgets.mbufs(1_000_000).0, 320)
        XCTAssertEqual(Budgets.mbufs(1_000_000).1, 520)
        XCTAssertEqual(Budgets.probe(devices: 8).0, 1920)
        XCTAssertEqual(Budgets.start(devices: 8), 3520)
    }

    func testTextTableHasEveryPhaseAlignedWithBudgetsAndSpeedups() {
        let text = sample().renderText()
        let lines = text.split(separator: "\n")
        XCTAssertTrue(lines.contains { $0.hasPrefix("snapshot-map") && $0.contains("640 ms") && $0.contains("12800×") }, text)
        XCTAssertTrue(lines.contains { $0.hasPrefix("mbuf-init") && $0.contains("320 ms–520 ms") }, text)
        XCTAssertTrue(text.contains("snapshot: restored /dev/hugepages/x.snap"))
        XCTAssertTrue(text.contains("vhost0 (vhost-user): started"))
        // Columns line up: the "measured" column ends at the same place on every phase row.
        let rows = lines.filter { $0.hasPrefix("process-start") || $0.hasPrefix("snapshot-map") || $0.hasPrefix("mbuf-init") }
        let ends = rows.map { $0.range(of: " ms ")!.lowerBound.utf16Offset(in: $0) }
        XCTAssertEqual(Set(ends).count, 1, text)
    }

    func testJSONHasTheDocumentedKeysAndRoundTrips() throws {
        let data = try sample().jsonData()
        let object = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        XCTAssertNotNil(object["total_ms"])
        let phases = object["phases"] as! [[String: Any]]
        XCTAssertEqual(phases.map { $0["name"] as! String }, ["process-start", "snapshot-map", "mbuf-init"])
        XCTAssertEqual(phases[1]["budget_ms"] as? Double, 640)
        XCTAssertNotNil(phases[0]["ms"])
        let memory = object["memory"] as! [String: Any]
        XCTAssertEqual(memory["backing"] as? String, "hugetlbfs")
        XCTAssertEqual(memory["page_size"] as? String, "2M")
        let snap = object["snapshot"] as! [String: Any]
        XCTAssertEqual(snap["outcome"] as? String, "restored")
        XCTAssertEqual(snap["path"] as? String, "/dev/hugepages/x.snap")
        let dev = (object["devices"] as! [[String: Any]])[0]
        for key in ["name", "kind", "state", "probe_ms", "start_ms", "ready_at_ms"] { XCTAssertNotNil(dev[key], key) }
        XCTAssertEqual(try BootReport.decode(data), sample())
    }

    func testSVGDrawsOneBarPerPhaseAndDevice() {
        let svg = sample().renderSVG()
        XCTAssertTrue(svg.hasPrefix("<svg"))
        XCTAssertEqual(svg.components(separatedBy: "<rect").count - 1, 1 + 3 + 2, svg)  // background, 3 phases, probe+start
        XCTAssertTrue(svg.contains("vhost0"))
        XCTAssertTrue(svg.contains("process-start"))
    }
}
