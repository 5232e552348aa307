import ArgumentParser
import WarmstartBench
import WarmstartRuntime

extension Run {
    /// `warmstart run` with no port (and no --boot-only): the self-contained main job. Boots as
    /// usual, then runs a loopback inside this process (`SelfLoopback`: the runtime's vhost-user
    /// back-end forwarding macswap on its polling core, Warmstart's virtio-user front-end
    /// generating 64 B frames on the other) for --duration seconds (default 3), and prints the
    /// boot timing report (boot ends when the loopback is up) and the throughput.
    func runLoopback(live: LiveMemory, snapshot snap: BootReport.Snapshot, recorder: PhaseRecorder,
                     clock: BootClock) throws {
        let seconds = duration ?? 3
        let r: SelfLoopback.Result
        do {
            r = try SelfLoopback.run(memory: live, recorder: recorder, duration: seconds) { print($0) }
        } catch {
            throw CLIError.loopback(error)
        }
        let report = BootReport(phases: recorder.phases, totalMs: r.readyMs,
                                memory: MemoryBoot.memorySection(live, mode: layout.hugepages), snapshot: snap,
                                devices: r.runtime.deviceTimings(), ioBackend: r.runtime.ioDescription,
                                processStartCoarse: clock.coarse)
        print(report.renderText(), terminator: "")
        print("loopback: vhost-user back-end (macswap) ↔ virtio-user front-end in this process, over a socket in a temp directory")
        print(r.traffic.text(), terminator: "")
        print(r.runtime.stats().renderText(), terminator: "")
        try writeReports(report, json: reportJSON, svg: reportSVG)
    }
}
