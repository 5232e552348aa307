import ArgumentParser
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import Logging
import WarmstartBus
import WarmstartEngine
import WarmstartMemory
import WarmstartRuntime
import WarmstartSnapshot

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Boot the runtime (restoring or creating the snapshot), bring up the ports and forward.",
        discussion: """
            With no --snapshot, the default snapshot is used and created on the first run: on hugetlbfs (/dev/hugepages) when 2M pages are free, else on /dev/shm.
            With ports, the runtime forwards until SIGINT/SIGTERM or --duration, then prints per-port and per-queue counters; with --boot-only it waits for the devices (--device-wait), prints the boot report and exits.
            Port kinds: vhost-user:PATH (listen), vhost-user-client:PATH (connect); keys: name=, queues=N, features=0xMASK, mode= (socket mode). virtio-user:PATH (Warmstart as the driver of a vhost-user back-end); keys: name=, queues=N, packed=0|1, mrg=0|1, size=N, mac=, mtu=N, server=1.
            """)

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
    @Option(name: .customLong("port"), help: "A port: KIND:PATH[,key=value...] (repeatable).")
    var ports: [String] = []
    @Option(help: "A file of ports, one --port value per line (# comments).")
    var config: String?
    @Option(help: "Forwarding: io (ports paired 0↔1, 2↔3; an odd last port to itself), macswap, l2, or txonly (a traffic source: every queue sends --tx-size byte frames, what arrives is dropped).")
    var forward: ForwardMode = .io
    @Option(name: .customLong("tx-size"), help: "With --forward txonly: frame size in bytes (60...9216).")
    var txSize: Int = 64
    @Option(help: "Polling threads, pinned to the last N CPUs.")
    var cores: Int = 1
    @Option(name: .customLong("device-wait"), help: "With --boot-only: seconds to wait for every device to be started or failed.")
    var deviceWait: Double = Bus.defaultDeviceWaitSeconds
    @Option(help: "Forward for this many seconds, then print the counters and exit (default: until SIGINT/SIGTERM).")
    var duration: Double?
    @Option(help: "Serve the control socket (JSON lines; `warmstart stats --control PATH`) at this path.")
    var control: String?
    @Option(help: "Hot upgrade: take over the running warmstart whose control socket is PATH (its memory, ports, sessions and control socket), then keep forwarding.")
    var takeover: String?

    func validate() throws {
        guard cores >= 1 else { throw ValidationError("--cores must be at least 1") }
        guard deviceWait >= 0 else { throw ValidationError("--device-wait must not be negative") }
        if let d = duration, d < 0 { throw ValidationError("--duration must not be negative") }
        guard txSize >= 60, txSize <= 9216 else { throw ValidationError("--tx-size must be 60...9216 bytes") }
    }

    func portSpecs() throws -> [PortSpec] {
        do {
            var specs = try ports.map { p throws(PortSpecError) in try PortSpec.parse(p) }
            if let config { specs += try PortSpec.loadConfig(path: config) }
            return specs
        } catch {
            throw ValidationError(error.description)
        }
    }

    func run() throws {
        if let takeover {
            guard ports.isEmpty, config == nil else {
                throw ValidationError("--takeover takes the running process's ports; do not pass --port or --config")
            }
            guard !bootOnly else {
                throw ValidationError("--takeover cannot be combined with --boot-only: the new process must keep forwarding once it owns the ports")
            }
            return try runTakeover(path: takeover)
        }
        let specs = try portSpecs()
        // Before any thread exists, so every thread inherits the mask and SIGINT/SIGTERM are
        // taken synchronously by the main thread (counters printed, sockets cleaned up).
        if !specs.isEmpty { Runtime.blockTerminationSignals() }
        LoggingSetup.bootstrap()
        let clock = BootClock(environment: ProcessInfo.processInfo.environment)
        let recorder = PhaseRecorder(clock: clock)
        recorder.record("process-start", startNs: clock.originNs, endNs: clock.mainNs, work: "exec → main")
        let cfg = try layout.snapshotConfig()
        var path = snapshot
        if path == nil && !noSnapshot {
            let need = cfg.estimatedBytes
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
        if specs.isEmpty {
            return try runWithoutPorts(live: live, snapshot: snap, recorder: recorder, clock: clock)
        }
        try runWithPorts(specs, live: live, snapshot: snap, recorder: recorder, clock: clock)
    }

    /// `warmstart run` with no port: boot memory and print the report. This is the hook for the
    /// self-contained loopback default (no-port runs will forward over an in-process pair).
    func runWithoutPorts(live: LiveMemory, snapshot snap: BootReport.Snapshot, recorder: PhaseRecorder,
                         clock: BootClock) throws {
        if !bootOnly { return try runLoopback(live: live, snapshot: snap, recorder: recorder, clock: clock) }
        let report = BootReport(phases: recorder.phases, totalMs: clock.nowMs(),
                                memory: MemoryBoot.memorySection(live, mode: layout.hugepages), snapshot: snap,
                                processStartCoarse: clock.coarse)
        print(report.renderText(), terminator: "")
        try writeReports(report, json: reportJSON, svg: reportSVG)
        withExtendedLifetime(live) {}
    }

    /// Ports declared: datapath + bus + drivers (+ control socket). --boot-only waits for the
    /// devices and prints the report; otherwise forward until a signal or --duration, then print
    /// the report and the counters.
    func runWithPorts(_ specs: [PortSpec], live: LiveMemory, snapshot snap: BootReport.Snapshot,
                      recorder: PhaseRecorder, clock: BootClock) throws {
        let options = RuntimeOptions(ports: specs, forward: forward, cores: cores, deviceWaitSeconds: deviceWait,
                                     durationSeconds: duration, controlPath: control, txSize: txSize)
        let runtime: Runtime
        do {
            runtime = try Runtime(options: options, memory: live, recorder: recorder)
            runtime.enableVirtioUserPorts()
            try runtime.start()
        } catch {
            throw CLIError("\(error)")
        }
        defer { runtime.stop() }
        func report() -> BootReport {
            BootReport(phases: recorder.phases, totalMs: clock.nowMs(),
                       memory: MemoryBoot.memorySection(live, mode: layout.hugepages), snapshot: snap,
                       devices: runtime.deviceTimings(), ioBackend: runtime.ioDescription,
                       processStartCoarse: clock.coarse)
        }
        runtime.reportProvider = report
        if bootOnly {
            runtime.waitForDevices()
            runtime.recordDevicePhases()
            let r = report()
            print(r.renderText(), terminator: "")
            try writeReports(r, json: reportJSON, svg: reportSVG)
            return
        }
        let signal = Runtime.waitForTermination(seconds: duration)
        if printHandover(runtime) { return }
        runtime.recordDevicePhases()
        let r = report()
        // Counters are read before the ports go down, then again would lose nothing: detaching
        // folds a port's counters into its history.
        runtime.stop()
        print(r.renderText(), terminator: "")
        if let signal { print("stopped by signal \(signal)") }
        print(runtime.stats().renderText(), terminator: "")
        try writeReports(r, json: reportJSON, svg: reportSVG)
    }
}

extension ForwardMode: ExpressibleByArgument {}

func writeReports(_ report: BootReport, json: String?, svg: String?) throws {
    if let json {
        let data: Data
        do { data = try report.jsonData() } catch { throw CLIError("cannot encode the report: \(error)") }
        try writeFile(json, Array(data) + [0x0A])
    }
    if let svg { try writeFile(svg, Array(report.renderSVG().utf8)) }
}

/// After a committed hot upgrade the new process owns the ports and there is nothing here to clean
/// up: prints the last counters and who forwards now, and returns true. False when not handed over.
func printHandover(_ runtime: Runtime) -> Bool {
    guard let pid = runtime.handedOverTo else { return false }
    print(runtime.stats().renderText(), terminator: "")
    print("warmstart: handed over to pid \(pid), which forwards now; exiting")
    return true
}
