#if canImport(Glibc)
import Glibc
#endif
import CWarmstartShim
import Logging
import WarmstartBus
import WarmstartDatapath
import WarmstartMemory
import WarmstartSnapshot
import WarmstartVhostUser

/// Hot upgrade, new process side (`warmstart run --takeover PATH`): taker hooks that build a real
/// `Runtime` from what the running process hands over — its memory regions and live pools, its
/// ports' sockets and vhost-user sessions, TAP fds, counters and control socket. No MemoryBoot, no
/// probe: the bus adopts the connected and listening descriptors.
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
        var tapFDs: [Int32] = []
        var counters: QueueCounters?
    }

    let recorder: PhaseRecorder
    let logger: Logger
    let overrides: Overrides
    private var received: HandoffReceived?
    private var regions: [MemoryRegion] = []
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
    /// The runtime, once `activate` built it.
    public private(set) var runtime: Runtime?

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
            firstPacketNs: { [unowned self] in self.firstPacketNs() },
            abandon: { [unowned self] in self.abandon() })
    }

    /// map: regions mapped, configuration read, every port's descriptors and session taken.
    func adopt(_ r: HandoffReceived) throws {
        received = r
        let values = r.state.configuration.values
        do {
            specs = try (values[Runtime.HandoffKeys.ports] ?? "").split(separator: "\n").map { line throws(PortSpecError) in
                try PortSpec.parse(String(line))
            }
        } catch {
            throw HandoffError(.map, "cannot read the running process's ports: \(error)")
        }
        guard !specs.isEmpty else { throw HandoffError(.map, "the running process has no ports to hand over") }
        guard specs.count == r.state.ports.count else {
            throw HandoffError(.map, "the running process declares \(specs.count) ports but describes \(r.state.ports.count)")
        }
        if let f = values[Runtime.HandoffKeys.forward] {
            guard let m = ForwardMode(rawValue: f) else { throw HandoffError(.map, "unknown forwarding mode '\(f)'") }
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
                port.session = a.session; port.connectionFD = a.connectionFD; port.listenFD = a.listenFD
            case "tap":
                port.tapFDs = try r.adoptTapPort(p)
            default:
                throw HandoffError(.map, "port '\(p.name)': kind '\(p.kind)' cannot be taken over")
            }
            ports.append(port)
        }
        do {
            bus = try Bus(ports: specs, forceFallback: overrides.forceFallbackIO, bootOriginNs: recorder.clock.originNs)
        } catch {
            throw HandoffError(.map, "cannot create the control loop: \(error)")
        }
        if let i = values[Runtime.HandoffKeys.controlFD].flatMap({ Int($0) }) {
            controlFD = try r.fds.take(i)
            oldControlPath = values[Runtime.HandoffKeys.controlPath]
        }
        if let path = overrides.controlPath, path != oldControlPath {
            do { ownControl = try ControlServer(path: path, logger: logger) } catch {
                throw HandoffError(.map, "\(error)")
            }
        }
    }

    /// commit (inside the blackout): pools attached with their live state, rings moved to the
    /// final positions, the runtime built with the bus adopting every descriptor.
    func activate(_ live: HandoffLive) throws {
        guard let r = received else { throw HandoffError(.commit, "nothing was adopted") }
        let pools = try r.attachPools(in: regions)
        guard !pools.isEmpty else { throw HandoffError(.commit, "the running process handed over no mbuf pool") }
        let memory = LiveMemory.handedOver(regions: regions, pools: pools)
        for k in ports.indices {
            guard let s = ports[k].session else { continue }
            do {
                ports[k].rings = try s.applyHandoffPositions(live.positions(of: ports[k].name))
            } catch {
                throw HandoffError(.commit, "port '\(ports[k].name)': cannot apply the final ring positions: \(error)")
            }
        }
        let options = RuntimeOptions(ports: specs, forward: forward, cores: cores, durationSeconds: overrides.durationSeconds,
                                     controlPath: nil, forceFallbackIO: overrides.forceFallbackIO, txSize: txSize)
        let rt: Runtime
        do { rt = try Runtime(options: options, memory: memory, recorder: recorder, logger: logger, bus: bus) } catch {
            throw HandoffError(.commit, "cannot build the runtime: \(error)")
        }
        for k in ports.indices {
            let p = ports[k]
            ports[k].connectionFD = nil; ports[k].listenFD = nil; ports[k].tapFDs = []; ports[k].session = nil
            if let c = live.counters[p.name] ?? p.counters { rt.datapath.continueCounters(slot: p.slot, from: c) }
            var conn = p.connectionFD
            if !p.tapFDs.isEmpty {
                conn = p.tapFDs[0]
                for extra in p.tapFDs.dropFirst() { close(extra) }   // one queue per TAP port today
            }
            var attach: ((Device) -> Void)?
            if let session = p.session, let fd = p.connectionFD {
                let rings = p.rings
                attach = { [unowned rt] d in rt.vhostUser.adopt(device: d, fd: fd, bus: rt.bus, session: session, rings: rings) }
            }
            rt.bus.adopt(deviceAt: p.slot, connectionFD: conn, listeningFD: p.listenFD, attach: attach)
        }
        runtime = rt
    }

    /// After the commit: the bus adopts (queue pairs join the datapath before its threads start),
    /// then forwarding and the control socket start.
    func resume() throws {
        guard let rt = runtime else { throw HandoffError(.resume, "no runtime was built") }
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

    func firstPacketNs() -> UInt64? {
        guard let rt = runtime else { return nil }
        let firsts = (0..<rt.bus.devices.count).map { rt.datapath.firstPacketNs[$0] }.filter { $0 != 0 }
        return firsts.min()
    }

    /// Before the commit: drop whatever was adopted (closing every descriptor taken).
    func abandon() {
        guard runtime == nil || runtime?.running == false else { return }
        for p in ports {
            if let f = p.connectionFD { close(f) }
            if let f = p.listenFD { close(f) }
            for f in p.tapFDs { close(f) }
        }
        ports = []
        if controlFD >= 0 { close(controlFD); controlFD = -1 }
        runtime = nil
        bus = nil
        ownControl?.stop()
        ownControl = nil
        received = nil
    }
}

extension Runtime {
    /// Starts a runtime whose bus adopts handed-over descriptors: the adoption runs first on the
    /// loop thread (queue pairs join the datapath while no polling thread runs yet), then the
    /// polling threads, then the control socket (`control`, with the handoff command so a later
    /// upgrade can follow).
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
        datapath.start()
        control?.start()
    }
}
