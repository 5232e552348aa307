#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import Logging
import WarmstartRuntime

extension Run {
    /// `warmstart run --takeover PATH`: boot this binary, take everything over from the process
    /// serving the control socket PATH, print the boot report with its handoff section, forward.
    func runTakeover(path: String) throws {
        Runtime.blockTerminationSignals()
        LoggingSetup.bootstrap()
        let clock = BootClock(environment: ProcessInfo.processInfo.environment)
        let recorder = PhaseRecorder(clock: clock)
        recorder.record("process-start", startNs: clock.originNs, endNs: clock.mainNs, work: "exec → main")
        let (runtime, handoff): (Runtime, HandoffReport)
        do {
            (runtime, handoff) = try RuntimeTakeover.run(from: path, recorder: recorder,
                                                         overrides: .init(controlPath: control, durationSeconds: duration),
                                                         environment: ProcessInfo.processInfo.environment,
                                                         log: { FileHandleStderr.write("warmstart: \($0)\n") })
        } catch {
            throw CLIError.takeover(error)
        }
        defer { runtime.stop() }
        func report() -> BootReport {
            BootReport(phases: recorder.phases, totalMs: clock.nowMs(),
                       memory: MemoryBoot.memorySection(runtime.memory, mode: layout.hugepages),
                       snapshot: .init(path: nil, outcome: "none", reason: "memory handed over by the previous process"),
                       devices: runtime.deviceTimings(), ioBackend: runtime.ioDescription, handoff: handoff,
                       processStartCoarse: clock.coarse)
        }
        let r = report()
        print(r.renderText(), terminator: "")
        try writeReports(r, json: reportJSON, svg: reportSVG)
        let signal = Runtime.waitForTermination(seconds: duration)
        if printHandover(runtime) { return }
        runtime.stop()
        if let signal { print("stopped by signal \(signal)") }
        print(runtime.stats().renderText(), terminator: "")
    }
}
