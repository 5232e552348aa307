#if canImport(Glibc)
import Glibc
#endif
import CWarmstartShim
import Logging
import WarmstartBus
import WarmstartHandoff
import WarmstartEngine
import WarmstartPorts
import WarmstartMemory
import WarmstartPools
import WarmstartSnapshot
import WarmstartVhostUser

/// Hot upgrade, new process side (`warmstart run --takeover PATH`): taker hooks that build a real
/// `Runtime` from what the running process hands over — its memory regions and live pools, its
/// ports' sockets and vhost-user sessions, TAP fds, counters and control socket. No MemoryBoot, no
/// probe: the bus adopts the connected and listening descriptors.
///
/// Everything is built while the old process still forwards (`adopt`): regions mapped, pools
/// attached, the runtime, each vhost-user connection's queue pairs on the datapath at provisional
/// ring positions, the polling threads created, pinned and parked. Inside the blackout `activate`
/// only checks the pools' rings, moves each ring to its final position and has the parked threads
/// watch for the resume closely; after the commit `resume` unparks them — one store — and only
/// then starts the control plane (bus loop, vhost-user reads, control socket).
public final class RuntimeTakeover: @unchecked Sendable {
    public struct Overrides: Sendable {
        /// Serve the control socket here instead of taking the old one's over.
        public var controlPath: String?
        public var durationSeconds: Double?
        public var forceFallbackIO: Bool
        public init(controlPath: String? = nil, durationSeconds: Double? = nil, forceFallbackIO: Bool = false) {
            self.controlPath = controlPath; self.durationSeconds = durationSeconds; self.forceFallbackIO = forceFallbackIO
        }
    }

    struct Port {
        var slot: Int
        var name: String
        var connectionFD: Int32?
        var listenFD: Int32?
        var session: VhostUserBackendSession?
        var rings: [VringSetup] = []
        /// The connection with its queue pairs on the datapath, built before the pause.
        var prepared: PreparedVhostUserConnection?
        var tapFDs: [Int32] = []
        var counters: QueueCounters?
    }

    let recorder: PhaseRecorder
    let logger: Logger
    let overrides: Overrides
    private var received: HandoffReceived?
    private var regions: [MemoryRegion] = []
    private var pools: [MbufPool] = []
    private var specs: [PortSpec] = []
    private var forward = ForwardMode.io
    private var cores = 1
    private var txSize = 64
    private var ports: [Port] = []
    private var controlFD: Int32 = -1
    private var oldControlPath: String?
    /// Built in `adopt`, before the pause.
    private var bus: Bus?
    /// `--control` naming another path than the old one's: bound in `adopt`, so a failure (a live
    /// socket there) aborts the handoff instead of failing after the commit.
    private var ownControl: ControlServer?
    /// What the old process handed over after its pause (`activate`), for `resume`.
    private var live: HandoffLive?
    /// The runtime, built in `adopt` (its polling threads parked until `resume`).
    public private(set) var runtime: Runtime?
    private var committed = false

    public init(recorder: PhaseRecorder, overrides: Overrides, logger: Logger = Logger(label: "warmstart")) {
        self.recorder = recorder
        self.overrides = overrides
        self.logger = logger
    }

    deinit { abandon() }

    public func hooks() -> HandoffTakerHooks {
        HandoffTakerHooks(
            adopt: { [unowned self] r in try self.adopt(r) },
            activate: { [unowned self] live in try self.activate(live) },
            resume: { [unowned self] in try self.resume() },
            firstPacketNs: { [unowned self] in self.runtime?.datapath.firstForwardNs },
            pollingSinceNs: { [unowned self] in self.runtime?.datapath.unparkedAtNs },
            abandon: { [unowned self] in self.abandon() })
    }

    /// map: regions mapped, configuration read, every port's descriptors and session taken, and
    /// the runtime prepared (`prepare`).
    func adopt(_ r: HandoffReceived) throws {
        received = r
        let values = r.state.configuration.values
        do {
            specs = try (values[Runtime.HandoffKeys.ports] ?? "").split(separator: "\n").map { line throws(PortSpecError) in
                try PortSpec.parse(String(line))
            }
        } catch {
            throw TakeoverAdoptionError.portSpecs(error)
        }
        guard !specs.isEmpty else { throw TakeoverAdoptionError.noPorts }
        guard specs.count == r.state.ports.count else {
            throw TakeoverAdoptionError.portCount(declared: specs.count, described: r.state.ports.count)
        }
        if let f = values[Runtime.HandoffKeys.forward] {
            guard let m = ForwardMode(rawValue: f) else { throw TakeoverAdoptionError.forwardMode(f) }
            forward = m
        }
        cores = values[Runtime.HandoffKeys.cores].flatMap { Int($0) } ?? 1
        txSize = values[Runtime.HandoffKeys.txSize].flatMap { Int($0) } ?? 64
        regions = try r.mapRegions()
        for (i, p) in r.state.ports.enumerated() {
            var port = Port(slot: i, name: p.name, counters: p.counters)
            switch p.kind {
            case "vhost-user":
                let a = try r.adoptVhostUserPort(p, configuration: VhostUserBackendPort.configuration(for: specs[i]))
                port.session = a.session; port.rings = a.rings; port.connectionFD = a.connectionFD; port.listenFD = a.listenFD
            case "tap":
                port.tapFDs = try r.adoptTapPort(p)
            default:
                throw TakeoverAdoptionError.portKind(port: p.name, kind: p.kind)
            }
            ports.append(port)
        }
        do {
            bus = try Bus(ports: specs, forceFallback: overrides.forceFallbackIO, bootOriginNs: recorder.clock.originNs)
        } catch {
            throw RuntimeError.controlLoop(error)
        }
        if let i = values[Runtime.HandoffKeys.controlFD].flatMap({ Int($0) }) {
            controlFD = try r.fds.take(i)
            oldControlPath = values[Runtime.HandoffKeys.controlPath]
        }
        if let path = overrides.controlPath, path != oldControlPath {
            do { ownControl = try ControlServer(path: path, logger: logger) } catch {
                throw TakeoverAdoptionError.controlServer(error)
            }
        }
        try prepare(r)
    }

    /// Still before the pause: the pools attached (their rings are checked once the old process
    /// has paused), the runtime on that memory (same port slots), each handed-over connection's
    /// queue pairs built at the provisional positions and on the datapath, and the polling
    /// threads started parked — created, pinned, their caches allocated.
    private func prepare(_ r: HandoffReceived) throws {
        pools = try r.attachPools(in: regions, inMotion: true)
        guard !pools.isEmpty else { throw TakeoverAdoptionError.noPool }
        let memory = LiveMemory.handedOver(regions: regions, pools: pools)
        let options = RuntimeOptions(ports: specs, forward: forward, cores: cores, durationSeconds: overrides.durationSeconds,
                                     controlPath: nil, forceFallbackIO: overrides.forceFallbackIO, txSize: txSize)
        let rt: Runtime
        do { rt = try Runtime(options: options, memory: memory, recorder: recorder, logger: logger, bus: bus) } catch {
            throw TakeoverAdoptionError.runtime(error)
        }
        for k in ports.indices {
            guard let session = ports[k].session, let fd = ports[k].connectionFD else { continue }
            ports[k].prepared = rt.vhostUser.prepareAdoption(device: rt.bus.devices[ports[k].slot], fd: fd, bus: rt.bus,
                                                             session: session, rings: ports[k].rings)
        }
        runtime = rt
        // The blackout's second end: the first burst a thread forwards is stamped.
        rt.datapath.recordForwardTimes()
        rt.datapath.startPaused()
    }

    /// commit (inside the blackout): the pools' rings are quiescent, every ring moves to its
    /// final position, and the parked threads check for the resume every 2 µs.
    func activate(_ live: HandoffLive) throws {
        guard let r = received, let rt = runtime else { throw TakeoverAdoptionError.nothingAdopted }
        try r.checkPoolRings(pools)
        for p in ports {
            guard let prepared = p.prepared else { continue }
            do { try rt.vhostUser.moveRings(of: prepared, to: live.positions(of: p.name)) } catch {
                throw TakeoverAdoptionError.ringPositions(port: p.name, error)
            }
        }
        self.live = live
        rt.datapath.expectResume()
    }

    /// After the commit: the parked threads forward (one store), then the control plane starts —
    /// counters continued, the bus adopting every descriptor (the prepared connections resume
    /// reading), the control socket (the old one's, adopted, unless `--control` names another).
    func resume() throws {
        guard let rt = runtime else { throw TakeoverAdoptionError.noRuntime }
        rt.datapath.resume()
        committed = true
        // Out of the polling threads' way until their first burst (bounded): this thread may
        // share a CPU with one, and starting the control plane keeps a CPU busy for a few
        // hundred microseconds.
        let until = ws_monotonic_ns() &+ 2_000_000
        while rt.datapath.firstForwardNs == nil && ws_monotonic_ns() < until { usleep(20) }
        for k in ports.indices {
            let p = ports[k]
            ports[k].connectionFD = nil; ports[k].listenFD = nil; ports[k].tapFDs = []; ports[k].session = nil; ports[k].prepared = nil
            if let c = live?.counters[p.name] ?? p.counters { rt.datapath.continueCounters(slot: p.slot, from: c) }
            if let session = p.session, let positions = live?.positions(of: p.name) {
                // The session's own record of where its rings start (the pairs already run there).
                do { _ = try session.applyHandoffPositions(positions) } catch {
                    logger.warning("handoff: port '\(p.name)': \(error)")
                }
            }
            var conn = p.connectionFD
            if !p.tapFDs.isEmpty {
                conn = p.tapFDs[0]
                for extra in p.tapFDs.dropFirst() { close(extra) }   // one queue per TAP port today
            }
            var attach: ((Device) -> Void)?
            if let prepared = p.prepared {
                attach = { [unowned rt] d in rt.vhostUser.startPrepared(prepared, device: d) }
            }
            rt.bus.adopt(deviceAt: p.slot, connectionFD: conn, listeningFD: p.listenFD, attach: attach)
        }
        var control: ControlServer?
        if let own = ownControl {
            control = own
            ownControl = nil
            // Nobody serves the old path any more (the old process exits, we close our copy).
            if controlFD >= 0 { close(controlFD); controlFD = -1 }
            if let old = oldControlPath { unlink(old) }
        } else if controlFD >= 0, let path = oldControlPath {
            control = ControlServer(path: path, listeningFD: controlFD, logger: logger)
            controlFD = -1
        }
        rt.startAdopted(control: control)
    }

    /// Before the commit: drop whatever was adopted (parked threads stopped, prepared pairs off
    /// the datapath, every descriptor taken closed).
    func abandon() {
        guard !committed else { return }
        if let rt = runtime {
            // Parked threads acknowledge no new plan: stop them before the pairs leave.
            rt.datapath.stop()
            for p in ports { if let prepared = p.prepared { rt.vhostUser.abandonPrepared(prepared) } }
        }
        for p in ports {
            if let f = p.connectionFD { close(f) }
            if let f = p.listenFD { close(f) }
            for f in p.tapFDs { close(f) }
        }
        ports = []
        if controlFD >= 0 { close(controlFD); controlFD = -1 }
        runtime = nil
        bus = nil
        pools = []
        ownControl?.stop()
        ownControl = nil
        received = nil
    }
}

extension Runtime {
    /// Starts a runtime whose bus adopts handed-over descriptors (its polling threads already
    /// run, over the prepared queue pairs): the adoption runs first on the loop thread, then the
    /// control socket (`control`, with the handoff command so a later upgrade can follow).
    func startAdopted(control server: ControlServer?) {
        precondition(!running, "Runtime.start called twice")
        if let server {
            serveCommands(on: server)
            control = server
        }
        running = true
        busStartNs = ws_monotonic_ns()
        bus.start()
        bus.sync {}   // the adoption (posted first) has run
        control?.start()
    }
}

/// Why the new process could not build a runtime from what the running process handed over
/// (thrown by the taker hooks; the handoff reports it at the step it happened).
enum TakeoverAdoptionError: Error, CustomStringConvertible {
    case portSpecs(PortSpecError)
    case noPorts
    case portCount(declared: Int, described: Int)
    case forwardMode(String)
    case portKind(port: String, kind: String)
    /// The control socket named by `--control` could not be served.
    case controlServer(any Error)
    case noPool
    case runtime(any Error)
    case nothingAdopted
    case ringPositions(port: String, VhostQueueError)
    case noRuntime

    var description: String {
        switch self {
        case let .portSpecs(e): return "cannot read the running process's ports: \(e)"
        case .noPorts: return "the running process has no ports to hand over"
        case let .portCount(declared, described): return "the running process declares \(declared) ports but describes \(described)"
        case let .forwardMode(f): return "unknown forwarding mode '\(f)'"
        case let .portKind(port, kind): return "port '\(port)': kind '\(kind)' cannot be taken over"
        case let .controlServer(e): return "\(e)"
        case .noPool: return "the running process handed over no mbuf pool"
        case let .runtime(e): return "cannot build the runtime: \(e)"
        case .nothingAdopted: return "nothing was adopted"
        case let .ringPositions(port, e): return "port '\(port)': \(e)"
        case .noRuntime: return "no runtime was built"
        }
    }
}
