#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import CWarmstartShim
import Logging
import WarmstartBus
import WarmstartEngine
import WarmstartIO
import WarmstartPorts
import WarmstartSnapshot
import WarmstartVhostUserWire

/// What `warmstart run` was asked to run with ports.
public struct RuntimeOptions: Sendable {
    public var ports: [PortSpec]
    public var forward: ForwardMode
    /// Polling threads (pinned, see `Runtime.cpus(forThreads:)`).
    public var cores: Int
    /// `--boot-only`: how long to wait for every device to be started or failed.
    public var deviceWaitSeconds: Double
    /// nil: run until SIGINT/SIGTERM.
    public var durationSeconds: Double?
    public var controlPath: String?
    public var forceFallbackIO: Bool
    /// `--forward txonly`: bytes per generated frame.
    public var txSize: Int

    public init(ports: [PortSpec], forward: ForwardMode = .io, cores: Int = 1,
                deviceWaitSeconds: Double = Bus.defaultDeviceWaitSeconds, durationSeconds: Double? = nil,
                controlPath: String? = nil, forceFallbackIO: Bool = false, txSize: Int = 64) {
        self.ports = ports; self.forward = forward; self.cores = max(1, cores)
        self.deviceWaitSeconds = deviceWaitSeconds; self.durationSeconds = durationSeconds
        self.controlPath = controlPath; self.forceFallbackIO = forceFallbackIO; self.txSize = txSize
    }
}

/// A running Warmstart with ports: the datapath over the declared ports, the bus probing them with
/// the vhost-user driver registered, and (optionally) the control socket.
///
/// Order of shutdown matters: the bus goes first (each device leaves the datapath before its
/// memory is released), then the polling threads, then the control socket.
public final class Runtime: @unchecked Sendable {
    public let options: RuntimeOptions
    public let memory: LiveMemory
    public let datapath: Datapath
    public let bus: Bus
    public let vhostUser: VhostUserBackendPort
    public let tap: TapPort
    /// Set by `enableVirtioUserPorts()`.
    public internal(set) var virtioUser: VirtioUserDriver?
    public internal(set) var control: ControlServer?
    /// Builds the boot report on request (`warmstart report --control PATH`); set by whoever
    /// assembles the report (the CLI), read from the control thread.
    public var reportProvider: (() -> BootReport)? {
        get { reportLock.locked { reportSource } }
        set { reportLock.locked { reportSource = newValue } }
    }
    private var reportSource: (() -> BootReport)?
    private let reportLock = PThreadMutex()
    let recorder: PhaseRecorder
    let logger: Logger
    var busStartNs: UInt64 = 0
    var running = false
    /// Hot upgrade, old side: the queue pairs of each port, taken at export (Runtime+Donor.swift).
    var handoffPairs: [(port: String, pairs: [VhostQueuePair])] = []
    private let handoffLock = PThreadMutex()
    private var handedOverPid: Int32?
    /// Set once a hot upgrade committed: the new process (this pid) owns everything.
    public var handedOverTo: Int32? { handoffLock.locked { handedOverPid } }
    func markHandedOver(to pid: Int32) { handoffLock.locked { handedOverPid = pid } }

    /// `bus`: one built beforehand over the same ports (a takeover builds it — io_uring setup
    /// included — before the old process pauses, so it is not inside the blackout).
    public init(options: RuntimeOptions, memory: LiveMemory, recorder: PhaseRecorder,
                logger: Logger = Logger(label: "warmstart"), bus prebuilt: Bus? = nil) throws {
        self.options = options
        self.memory = memory
        self.recorder = recorder
        self.logger = logger
        if let prebuilt {
            bus = prebuilt
        } else {
            do throws(IOError) {
                bus = try Bus(ports: options.ports, forceFallback: options.forceFallbackIO, bootOriginNs: recorder.clock.originNs)
            } catch {
                throw RuntimeError.controlLoop(error)
            }
        }
        let cpus = Self.cpus(forThreads: options.cores)
        datapath = Datapath(pool: memory.mbufPool, ports: bus.devices.map(\.name),
                            options: Datapath.Options(mode: options.forward, cores: cpus, txSize: options.txSize))
        vhostUser = VhostUserBackendPort(datapath: datapath, logger: Logger(label: "warmstart.vhost-user"))
        vhostUser.register(on: bus)
        tap = TapPort(datapath: datapath)
        tap.register(on: bus)
    }

    /// CPUs for `n` polling threads: the last `n` online CPUs (the control thread and the rest of
    /// the system keep CPU 0); with more threads than CPUs they wrap around.
    public static func cpus(forThreads n: Int) -> [Int] {
        let online = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        return (0..<n).map { (online - n + $0 + n * online) % online }
    }

    /// Starts the polling threads, the probe of every port, and the control socket.
    public func start() throws {
        precondition(!running, "Runtime.start called twice")
        // A peer that closed its end of a pipe or socket must not kill the process.
        ignoreBrokenPipeSignals()
        if let path = options.controlPath {
            let server = try ControlServer(path: path, logger: logger)
            serveCommands(on: server)
            control = server
        }
        running = true
        datapath.start()
        busStartNs = ws_monotonic_ns()
        bus.start()
        control?.start()
    }

    /// The control commands: stats, devices, and handoff (hot upgrade, Runtime+Donor.swift).
    func serveCommands(on server: ControlServer) {
        server.register("stats") { [unowned self] _ in try ControlServer.encode(self.stats()) }
        server.register("devices") { [unowned self] _ in try ControlServer.encode(self.deviceTimings()) }
        server.register("report") { [unowned self] _ in
            guard let report = self.reportLock.locked({ self.reportSource })?() else {
                throw RuntimeError.reportNotReady
            }
            return try ControlServer.encode(report)
        }
        registerHandoff(on: server)
    }

    /// Waits until every declared device is started or failed, or `deviceWaitSeconds` passed.
    @discardableResult
    public func waitForDevices() -> Bool { bus.waitUntilSettled(timeoutSeconds: options.deviceWaitSeconds) }

    /// Stops the bus (devices leave the datapath first), the polling threads, the control socket.
    public func stop() {
        guard running else { return }
        running = false
        // After a hot upgrade the new process serves the control socket and the ports: the release
        // already closed them without shutdown or unlink.
        if handedOverTo != nil { datapath.stop(); return }
        control?.stop()
        bus.stop()
        datapath.stop()
    }

    deinit { stop() }

    // MARK: report

    /// Per-device rows for the boot report.
    public func deviceTimings() -> [DeviceTiming] {
        let clock = recorder.clock
        return bus.snapshot().enumerated().map { i, r in
            let first = datapath.firstPacketNs[i]
            return DeviceTiming(name: r.name, kind: r.kind, state: r.state.rawValue, probeMs: r.probeMs,
                                startMs: r.startMs, readyAtMs: r.readyAtMs,
                                probeStartAtMs: busStartNs == 0 ? nil : clock.ms(busStartNs),
                                firstPacketAtMs: first == 0 ? nil : clock.ms(first), reason: r.reason)
        }
    }

    /// Adds `bus-probe`, `device-start` and (when traffic flowed) `first-packet` to the phases.
    /// Probes run in parallel, so each phase lasts as long as its slowest device; budgets scale
    /// with the devices that did the work.
    public func recordDevicePhases() {
        let records = bus.snapshot()
        let n = records.count
        guard n > 0, busStartNs != 0 else { return }
        let probed = records.compactMap(\.probeMs)
        let started = records.compactMap(\.startMs)
        let probeNs = UInt64((probed.max() ?? 0) * 1e6)
        // Budgets for the devices that did the work: a port nobody connected to did not probe.
        let probeBudget = Budgets.probe(devices: probed.count)
        recorder.record("bus-probe", startNs: busStartNs, endNs: busStartNs + probeNs,
                        work: "\(probed.count) of \(n) devices connected",
                        budget: probed.isEmpty ? nil : probeBudget.0, budgetHigh: probed.isEmpty ? nil : probeBudget.1)
        let startNs = UInt64((started.max() ?? 0) * 1e6)
        recorder.record("device-start", startNs: busStartNs + probeNs, endNs: busStartNs + probeNs + startNs,
                        work: "\(started.count) of \(n) devices started",
                        budget: started.isEmpty ? nil : Budgets.start(devices: started.count))
        let firsts = (0..<n).map { datapath.firstPacketNs[$0] }.filter { $0 != 0 }
        if let first = firsts.min() {
            recorder.record("first-packet", startNs: busStartNs, endNs: max(first, busStartNs),
                            work: "bus start → first packet received")
        }
    }

    public var ioDescription: String { bus.ioDescription }

    // MARK: counters

    public func stats() -> RuntimeStats {
        let records = bus.snapshot()
        let ports = datapath.stats().map { p -> RuntimeStats.Port in
            let r = p.slot < records.count ? records[p.slot] : nil
            return RuntimeStats.Port(name: p.name, kind: r?.kind ?? "", state: r?.state.rawValue ?? "", slot: p.slot,
                                     total: p.total, queues: p.queues, reconnects: r?.reconnects ?? 0, reason: r?.reason,
                                     mac: virtioUser?.port(device: p.slot).map { PortSpec.formatMAC($0.mac) })
        }
        let inUse = memory.pools.reduce(0) { $0 + $1.inUseCount }
        return RuntimeStats(forward: options.forward.rawValue, cores: options.cores, ports: ports,
                            process: .current(mbufsInUse: inUse, mbufsCached: datapath.cachedMbufs))
    }

    // MARK: signals

    /// Blocks SIGINT and SIGTERM in the calling thread and every thread it creates afterwards, so
    /// `waitForTermination` can take them synchronously. Call before starting any thread.
    public static func blockTerminationSignals() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// Waits for SIGINT/SIGTERM or until `seconds` pass (nil: forever). Returns the signal, or nil
    /// when the time ran out.
    public static func waitForTermination(seconds: Double?) -> Int32? {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        let deadline = seconds.map { ws_monotonic_ns() + UInt64(max(0, $0) * 1e9) }
        while true {
            var ts = timespec(tv_sec: 1, tv_nsec: 0)
            if let deadline {
                let now = ws_monotonic_ns()
                if now >= deadline { return nil }
                let left = min(deadline - now, 1_000_000_000)
                ts = timespec(tv_sec: Int(left / 1_000_000_000), tv_nsec: Int(left % 1_000_000_000))
            }
            let sig = sigtimedwait(&set, nil, &ts)
            if sig > 0 { return sig }
        }
    }
}
