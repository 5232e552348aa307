#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CWarmstartShim
import WarmstartBus
import WarmstartPorts
import WarmstartMemory
import WarmstartPools
import WarmstartRuntime
import WarmstartSnapshot
#if canImport(Glibc)
import Glibc
#endif

/// `warmstart bench`: Warmstart's virtio-user front-end as traffic generator and sink against a
/// vhost-user back-end in another process — Warmstart's own (`warmstart run --port vhost-user:…`)
/// or DPDK's testpmd (`--backend dpdk`) — over a socket in a private temp directory.
public struct BenchOptions: Sendable {
    /// oneway: we generate, the back-end drops (rxonly); loopback: we generate, the back-end
    /// reflects (macswap); sink: the back-end generates (testpmd txonly / warmstart run
    /// --forward txonly), we receive and count.
    public enum Mode: String, Sendable, CaseIterable, Codable { case oneway, loopback, sink }
    public enum Backend: String, Sendable, CaseIterable, Codable { case warmstart, dpdk }

    public var packed = false
    public var size = 64
    public var burst = 32
    public var duration = 5.0
    public var mode = Mode.loopback
    public var backend = Backend.warmstart
    /// The back-end connects to us (we listen, `server=1`) instead of the other way round.
    public var frontendListens = false
    public var queueSize = 256
    /// Loopback: most frames sent and not yet back at once; nil: the receive ring's size, so the
    /// back-end always finds room to return a frame (drops then are real losses, and latency is
    /// not a full ring's queueing); 0: no limit but the rings'.
    public var inflight: Int?
    public var mbufs = 32768
    /// CPU for the generator; the back-end's forwarding core is the other one.
    public var cpu = 0
    public var hugepages = HugepageMode.auto
    /// Our own executable (for `--backend warmstart`).
    public var selfPath = "/proc/self/exe"
    /// The front-end port's MAC (`mac=`); nil: the port chooses (see VirtioUserPort.mac).
    public var mac: [UInt8]?
    public init() {}
}

public struct BenchResult: Sendable, Codable {
    public var backend: String
    public var layout: String
    public var mode: String
    public var frameBytes: Int
    public var burst: Int
    public var seconds: Double
    public var txPackets: UInt64
    public var rxPackets: UInt64
    /// Loopback: sent and never seen back. One way: 0 (the ring is lossless; a full ring just
    /// makes the generator wait). Sink: frames the back-end generated and could not put in our
    /// receive ring (its own count over its whole run: testpmd's TX-dropped, warmstart's drops).
    public var drops: UInt64
    /// Packets per second: received back (loopback), taken by the back-end (one way), received
    /// (sink).
    public var mpps: Double
    /// Frame bytes (L2, no preamble or gap) per second × 8.
    public var gbps: Double
    public var latencyP50Us: Double?
    public var latencyP99Us: Double?
    public var latencyP999Us: Double?
    public var setupMs: Double
    /// Mpps of each whole second of the run (received back in loopback, sent one way): the
    /// per-second figures comparisons should take the median of.
    public var perSecondMpps: [Double]
    /// The front-end port's MAC (the generator's source address).
    public var mac: String?

    public func text() -> String {
        var s = "bench: \(backend) back-end, \(layout) ring, \(mode), \(frameBytes) B frames, burst \(burst), \(String(format2(seconds))) s\n"
        s += "  \(format2(mpps)) Mpps, \(format2(gbps)) Gbit/s; tx \(txPackets), rx \(rxPackets), drops \(drops)"
        s += mode == BenchOptions.Mode.sink.rawValue ? " (the back-end's count)\n" : "\n"
        if let a = latencyP50Us, let b = latencyP99Us, let c = latencyP999Us {
            let how = mode == BenchOptions.Mode.sink.rawValue ? "one way, back-end send → received" : "round trip"
            s += "  latency p50 \(format2(a)) µs, p99 \(format2(b)) µs, p99.9 \(format2(c)) µs (\(how))\n"
        }
        if let mac { s += "  front-end port MAC \(mac)\n" }
        s += "  set-up (back-end start → port started) \(format2(setupMs)) ms\n"
        return s
    }
}

func format2(_ v: Double) -> String {
    let r = (v * 100).rounded() / 100
    var s = "\(r)"
    if let dot = s.firstIndex(of: "."), s.distance(from: dot, to: s.endIndex) == 2 { s += "0" }
    return s
}

public enum Bench {
    /// Offsets in the payload: a sequence number and the send time (monotonic ns).
    static let seqOffset = 14
    static let stampOffset = 22

    /// Runs one benchmark. `progress` gets a line once a second for runs longer than 3 s.
    public static func run(_ o: BenchOptions, progress: (String) -> Void = { _ in }) throws -> BenchResult {
        guard o.size >= 60, o.size <= 9216 else { throw BenchError.frameSize(o.size) }
        guard o.burst >= 1, o.burst <= 256 else { throw BenchError.burst(o.burst) }
        if let n = o.inflight {
            guard n >= 0 else { throw BenchError.inflight(n) }
            guard o.mode == .loopback else { throw BenchError.inflightNeedsLoopback(mode: o.mode.rawValue) }
        }
        // Memory as the runtime lays it out: a pool region and a general-purpose region, both
        // shared with the back-end.
        let live = try LiveMemory.coldLayout(SnapshotConfig(pool: MbufPoolConfig(count: o.mbufs, cacheSize: 256)),
                                             hugepages: o.hugepages)
        let dir = "/tmp/ws-vuser-bench-\(getpid())"
        mkdir(dir, 0o700)
        let sock = dir + "/vhost.sock"
        unlink(sock)
        let prefix = "ws-vuser-bench-\(getpid())"
        defer {
            unlink(sock)
            rmdir(dir)
        }
        let t0 = ws_monotonic_ns()
        let other = o.cpu == 0 ? 1 : 0
        let argv: [String]
        switch o.backend {
        case .dpdk:
            if let why = Testpmd.unavailableReason() { throw BenchError.testpmdUnavailable(why) }
            let forward = ["oneway": "rxonly", "loopback": "macswap", "sink": "txonly"][o.mode.rawValue]!
            // txonly: frames of --size bytes in bursts of --burst; mbufs big enough for one frame.
            // (--mbuf-size before --txpkts: testpmd checks the segment length against it.)
            let sink = o.mode == .sink ? (o.size > 2048 ? ["--mbuf-size=\(o.size + 256)"] : []) + ["--txpkts=\(o.size)", "--burst=\(o.burst)"] : []
            argv = Testpmd.vhostArguments(socket: sock, client: o.frontendListens, forward: forward, prefix: prefix,
                                          lcores: "\(o.cpu),\(other)", mainLcore: o.cpu, extra: sink)
        case .warmstart:
            argv = [resolvedPath(o.selfPath), "run", "--port", (o.frontendListens ? "vhost-user-client:" : "vhost-user:") + sock,
                    "--forward", o.mode == .sink ? "txonly" : "macswap", "--cores", "\(other)", "--no-snapshot", "--mbufs", "16384"]
                + (o.mode == .sink ? ["--tx-size", "\(o.size)", "--control", dir + "/control.sock"] : [])
        }
        let child = try ChildProcess(argv, logPath: dir + "/backend.log")
        defer {
            child.stop()
            if o.backend == .dpdk { Testpmd.cleanup(prefix: prefix) }
            unlink(dir + "/backend.log")
        }
        var r = try drive(memory: live, socket: sock, options: o, startNs: t0, progress: progress,
                          backendAlive: { child.isRunning }, backendLog: { child.logTail() })
        if o.mode == .sink {
            switch o.backend {
            case .warmstart:
                r.drops = (try? backendDrops(control: dir + "/control.sock")) ?? 0
                child.stop()
            case .dpdk:
                child.stop()
                r.drops = Testpmd.txDropped(log: child.log) ?? 0
            }
        }
        return r
    }

    /// What a `warmstart run` back-end counted as dropped (its control socket's stats).
    static func backendDrops(control: String) throws -> UInt64 {
        let line = try ControlClient.request(path: control, ControlRequest(cmd: "stats"))
        struct Answer: Decodable { var result: RuntimeStats? }
        let stats = try JSONDecoder().decode(Answer.self, from: Data(line.utf8)).result
        return stats?.ports.reduce(0) { $0 + $1.total.drops } ?? 0
    }
}

extension Bench {
    /// The front-end half on its own: a virtio-user port on `socket` over `memory` (its regions
    /// are what the back-end maps), the generator on `options.cpu`, until `options.duration` has
    /// passed. The back-end may be a child process (`bench`) or live in this very process (the
    /// self-contained `warmstart run`, whose vhost-user port shares the same memory).
    public static func drive(memory live: LiveMemory, socket sock: String, options o: BenchOptions, startNs t0: UInt64,
                             progress: (String) -> Void = { _ in }, backendAlive: @escaping () -> Bool = { true },
                             backendLog: () -> String = { "" }) throws -> BenchResult {
        guard let general = live.generalRegion else { throw BenchError.noGeneralRegion }
        // testpmd needs the listening side up first; the Bus retries connects with
        // backoff, so starting both at once is fine.
        var spec = "virtio-user:\(sock),packed=\(o.packed ? 1 : 0),size=\(o.queueSize),backoff-min-ms=5,backoff-max-ms=50"
        if o.frontendListens { spec += ",server=1" }
        if let mac = o.mac { spec += ",mac=\(PortSpec.formatMAC(mac))" }
        let bus = try Bus(ports: [try PortSpec.parse(spec)])
        // We poll the queues ourselves: a teardown (back-end gone) waits until we let go of them.
        let lease = QueueLease()
        let driver = VirtioUserDriver(regions: live.sharedRegions, pool: live.mbufPool, arena: RingArena.shared(for: general))
        driver.beforeTeardown = { _ in lease.revoke() }
        bus.register(driver: driver, for: .virtioUser)
        bus.start()
        defer { bus.stop() }
        let deadline = ws_monotonic_ns() + 20_000_000_000
        while bus.snapshot()[0].state != .started {
            if !backendAlive() {
                throw BenchError.backendExited(backend: "\(o.backend)", log: backendLog())
            }
            if bus.snapshot()[0].state == .failed || ws_monotonic_ns() > deadline {
                throw BenchError.portDidNotStart(reason: bus.snapshot()[0].reason, log: backendLog())
            }
            usleep(1000)
        }
        let setupMs = Double(ws_monotonic_ns() - t0) / 1e6
        guard let port = bus.devices[0].driverContext as? VirtioUserPort, let q = port.queues.first else {
            throw BenchError.noQueues
        }
        _ = ws_pin_thread(Int32(o.cpu))
        // This thread drives the queue like a polling thread: its kicks go through the write
        // watchdog too (a back-end that made its kick eventfd blocking and full cannot hang it).
        _ = ws_write_guard_register()
        defer { ws_write_guard_unregister() }
        let alive = { backendAlive() && bus.snapshot()[0].state == .started }
        var r: BenchResult
        if o.mode == .sink {
            r = try Sink(options: o, pool: live.mbufPool, queue: q).run(setupMs: setupMs, lease: lease, progress: progress, alive: alive)
        } else {
            r = try Generator(options: o, pool: live.mbufPool, queue: q, sourceMAC: port.mac)
                .run(setupMs: setupMs, lease: lease, progress: progress, alive: alive)
        }
        r.mac = PortSpec.formatMAC(port.mac)
        return r
    }
}

/// The real path behind a symlink such as /proc/self/exe (a wrapper like setpriv would otherwise
/// resolve /proc/self/exe to itself).
func resolvedPath(_ path: String) -> String {
    var buf = [CChar](repeating: 0, count: 4096)
    let n = readlink(path, &buf, buf.count - 1)
    return n > 0 ? String(cString: Array(buf[0..<n]) + [0]) : path
}
