import ArgumentParser
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import WarmstartMemory
import WarmstartRuntime
import WarmstartSnapshot

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Boot the runtime (restoring or creating the snapshot), print the boot timing report.",
        discussion: "With no --snapshot, the default snapshot is used and created on the first run: on hugetlbfs (/dev/hugepages) when 2M pages are free, else on /dev/shm.")

    @OptionGroup var layout: LayoutOptions
    @Option(help: "Snapshot to restore from (created first if it does not exist).")
    var snapshot: String?
    @Flag(name: .customLong("no-snapshot"), help: "Lay memory out cold, without a snapshot.")
    var noSnapshot = false
    @Option(name: .customLong("snapshot-fallback"), help: "When the snapshot cannot be used: cold (warn and boot cold) or fail.")
    var snapshotFallback: SnapshotFallback = .cold
    @Flag(name: .customLong("boot-only"), help: "Boot, print the report and exit.")
    var bootOnly = false
    @Option(name: .customLong("report-json"), help: "Write the boot report as JSON to this file.")
    var reportJSON: String?
    @Option(name: .customLong("report-svg"), help: "Draw the boot timeline as SVG to this file.")
    var reportSVG: String?

    func run() throws {
        let clock = BootClock(environment: ProcessInfo.processInfo.environment)
        let recorder = PhaseRecorder(clock: clock)
        recorder.record("process-start", startNs: clock.originNs, endNs: clock.mainNs, work: "exec → main")
        let cfg = try layout.snapshotConfig()
        var path = snapshot
        if path == nil && !noSnapshot {
            let need = MbufPoolConfigBytes.estimate(cfg)
            path = DefaultSnapshot.path(hugepages: layout.hugepages, bytesNeeded: need)
        }
        let options = MemoryOptions(snapshot: cfg, hugepages: layout.hugepages, pageSize: layout.pageSize,
                                    snapshotPath: noSnapshot ? nil : path, createIfMissing: true,
                                    fallback: snapshotFallback)
        let live: LiveMemory
        let snap: BootReport.Snapshot
        do {
            (live, snap) = try MemoryBoot.boot(options, recorder: recorder) { warning in
                FileHandleStderr.write("warmstart: warning: \(warning)\n")
            }
        } catch {
            throw CLIError("\(error)")
        }
        let report = BootReport(phases: recorder.phases, totalMs: clock.nowMs(),
                                memory: MemoryBoot.memorySection(live, mode: layout.hugepages), snapshot: snap,
                                processStartCoarse: clock.coarse)
        print(report.renderText(), terminator: "")
        try writeReports(report, json: reportJSON, svg: reportSVG)
        withExtendedLifetime(live) {}
    }
}

func writeReports(_ report: BootReport, json: String?, svg: String?) throws {
    if let json {
        let data: Data
        do { data = try report.jsonData() } catch { throw CLIError("cannot encode the report: \(error)") }
        try writeFile(json, Array(data) + [0x0A])
    }
    if let svg { try writeFile(svg, Array(report.renderSVG().utf8)) }
}
