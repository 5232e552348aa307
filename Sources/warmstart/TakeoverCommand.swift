#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import Logging
import CWarmstartShim
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
        let env = ProcessInfo.processInfo.environment
        var options = HandoffTakerOptions()
        if let f = env["WARMSTART_HANDOFF_FAULT"] {
            guard let fault = HandoffFault(parsing: f) else {
                throw CLIError("WARMSTART_HANDOFF_FAULT=\(f): expected kill|crash|hang|fail:STEP")
            }
            options.fault = fault
        }
        let takeover = RuntimeTakeover(recorder: recorder,
                                       overrides: .init(controlPath: control, durationSeconds: duration))
        let startNs = ws_monotonic_ns()
        let handoff: HandoffReport
        do {
            let ch = try HandoffChannel.connectUpgrading(path: path)
            handoff = try HandoffTaker.takeover(channel: ch, hooks: takeover.hooks(), options: options,
                                                log: { FileHandleStderr.write("warmstart: \($0)\n") }, startNs: startNs)
        } catch {
            let consequence: String
            switch error.step {
            case .hello: consequence = "nothing changed"
            case .resume, .oldExit: consequence = "this was after the commit: the old process has released the ports"
            default: consequence = "the running process resumes forwarding"
            }
            throw CLIError("takeover from \(path) failed at step '\(error.step.rawValue)': \(error.reason); \(consequence)")
        }
        guard let runtime = takeover.runtime else { throw CLIError("takeover from \(path): no runtime after the commit") }
        defer { runtime.stop() }
        recorder.record("handoff", startNs: startNs, endNs: ws_monotonic_ns(),
                        work: "\(runtime.bus.devices.count) ports, blackout \(handoff.blackoutMs.map { "\(($0 * 100).rounded() / 100) ms" } ?? "unknown")")
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
