import CWarmstartShim
import WarmstartBus
import WarmstartDatapath
import WarmstartMemory
import WarmstartPools
import WarmstartSnapshot
#if canImport(Glibc)
import Glibc
#endif

/// `warmstart bench`: Warmstart's virtio-user front-end as traffic generator and sink against a
/// vhost-user back-end in another process — Warmstart's own (`warmstart run --port vhost-user:…`)
/// or DPDK's testpmd (`--backend dpdk`) — over a socket in a private temp directory.
public struct BenchOptions: Sendable {
    public enum Mode: String, Sendable, CaseIterable, Codable { case oneway, loopback }
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
    public var mbufs = 32768
    /// CPU for the generator; the back-end's forwarding core is the other one.
    public var cpu = 0
    public var hugepages = HugepageMode.auto
    /// Our own executable (for `--backend warmstart`).
    public var selfPath = "/proc/self/exe"
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
    /// makes the generator wait).
    public var drops: UInt64
    /// Packets per second: received back (loopback) or taken by the back-end (one way).
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

    public func text() -> String {
        var s = "bench: \(backend) back-end, \(layout) ring, \(mode), \(frameBytes) B frames, burst \(burst), \(String(format2(seconds))) s\n"
        s += "  \(format2(mpps)) Mpps, \(format2(gbps)) Gbit/s; tx \(txPackets), rx \(rxPackets), drops \(drops)\n"
        if let a = latencyP50Us, let b = latencyP99Us, let c = latencyP999Us {
            s += "  latency p50 \(format2(a)) µs, p99 \(format2(b)) µs, p99.9 \(format2(c)) µs (round trip)\n"
        }
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
        guard o.size >= 60, o.size <= 9216 else { throw BenchError("--size must be 60...9216 bytes") }
        guard o.burst >= 1, o.burst <= 256 else { throw BenchError("--burst must be 1...256") }
        // Memory as the runtime lays it out: a pool region and a general-purpose region, both
        // shared with the back-end.
        let live = try LiveMemory.coldLayout(SnapshotConfig(pool: MbufPoolConfig(count: o.mbufs, cacheSize: 256)),
                                             hugepages: o.hugepages)
        guard let general = live.generalRegion else { throw BenchError("no general-purpose region for the rings") }
        let dir = "/tmp/ws-bench-\(getpid())"
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
            if let why = Testpmd.unavailableReason() { throw BenchError("--backend dpdk: \(why)") }
            argv = Testpmd.vhostArguments(socket: sock, client: o.frontendListens,
                                          forward: o.mode == .oneway ? "rxonly" : "macswap", prefix: prefix,
                                          lcores: "\(o.cpu),\(other)", mainLcore: o.cpu)
        case .warmstart:
            argv = [o.selfPath, "run", "--port", (o.frontendListens ? "vhost-user-client:" : "vhost-user:") + sock,
                    "--forward", "macswap", "--cores", "\(other)", "--no-snapshot", "--mbufs", "16384"]
        }
        let child = try ChildProcess(argv, logPath: dir + "/backend.log")
        defer {
            child.stop()
            if o.backend == .dpdk { Testpmd.cleanup(prefix: prefix) }
            unlink(dir + "/backend.log")
        }
        // The listening side must be up first (REFERENCE.md §6); the Bus retries connects with
        // backoff, so starting both at once is fine.
        var spec = "virtio-user:\(sock),packed=\(o.packed ? 1 : 0),size=\(o.queueSize),backoff-min-ms=5,backoff-max-ms=50"
        if o.frontendListens { spec += ",server=1" }
        let bus = try Bus(ports: [try PortSpec.parse(spec)])
        bus.register(driver: VirtioUserDriver(regions: live.regions, pool: live.mbufPool, arena: RingArena(region: general)),
                     for: .virtioUser)
        bus.start()
        defer { bus.stop() }
        let deadline = ws_monotonic_ns() + 20_000_000_000
        while bus.snapshot()[0].state != .started {
            if !child.isRunning {
                throw BenchError("the \(o.backend) back-end exited before the port started; its log:\n\(child.logTail())")
            }
            if bus.snapshot()[0].state == .failed || ws_monotonic_ns() > deadline {
                throw BenchError("port did not start: \(bus.snapshot()[0].reason ?? "timeout"); back-end log:\n\(child.logTail())")
            }
            usleep(1000)
        }
        let setupMs = Double(ws_monotonic_ns() - t0) / 1e6
        guard let port = bus.devices[0].driverContext as? VirtioUserPort, let q = port.queues.first else {
            throw BenchError("port started without queues")
        }
        _ = ws_pin_thread(Int32(o.cpu))
        return try Generator(options: o, pool: live.mbufPool, queue: q).run(setupMs: setupMs, progress: progress) {
            child.isRunning && bus.snapshot()[0].state == .started
        }
    }
}

/// The generator/sink loop (one thread: send a burst, receive a burst).
final class Generator {
    let o: BenchOptions
    let pool: MbufPool
    let q: VirtioUserQueuePair
    let cache: MbufCache
    let template: UnsafeMutableRawPointer
    let latency = LatencyHistogram()

    init(options: BenchOptions, pool: MbufPool, queue: VirtioUserQueuePair) {
        o = options
        self.pool = pool
        q = queue
        cache = MbufCache(pool: pool)
        template = .allocate(byteCount: options.size, alignment: 64)
        // Ethernet II, locally administered MACs, EtherType 0x88B5 (local experimental).
        let head: [UInt8] = [0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x88, 0xB5]
        for i in 0..<options.size { template.storeBytes(of: i < 14 ? head[i] : UInt8(truncatingIfNeeded: i), toByteOffset: i, as: UInt8.self) }
    }
    deinit { template.deallocate() }

    /// Builds one frame (a chain when larger than the data room) stamped with `seq` and `now`.
    @inline(__always)
    func build(_ m: Mbuf, seq: UInt64, now: UInt64) -> Bool {
        let room = Int(pool.config.dataRoom)
        var seg = m
        var off = 0
        while true {
            let n = min(room, o.size - off)
            // Headers, sequence and time stamp only (the first 64 bytes), as testpmd's txonly
            // writes only its headers: the payload is whatever the recycled buffer holds.
            if off == 0 { seg.data.copyMemory(from: template, byteCount: min(n, 64)) }
            seg.dataLength = UInt16(n)
            seg.packetLength = UInt32(n)
            off += n
            if off >= o.size { break }
            guard let next = cache.alloc() else { return false }
            _ = pool.append(next, to: m)
            seg = next
        }
        m.packetLength = UInt32(o.size)
        m.data.storeBytes(of: seq, toByteOffset: Bench.seqOffset, as: UInt64.self)
        m.data.storeBytes(of: now, toByteOffset: Bench.stampOffset, as: UInt64.self)
        return true
    }

    func run(setupMs: Double, progress: (String) -> Void, alive: () -> Bool) throws -> BenchResult {
        let burst = o.burst
        let pk = UnsafeMutablePointer<Mbuf>.allocate(capacity: burst)
        let rx = UnsafeMutablePointer<Mbuf>.allocate(capacity: 256)
        defer { pk.deallocate(); rx.deallocate() }
        var have = 0
        var seq: UInt64 = 0
        var tx: UInt64 = 0, rxCount: UInt64 = 0, rxBytes: UInt64 = 0
        let start = ws_monotonic_ns()
        let end = start + UInt64(o.duration * 1e9)
        var nextReport = start + 1_000_000_000
        var lastTx: UInt64 = 0, lastRx: UInt64 = 0
        var iterations = 0
        var samples: [Double] = []
        samples.reserveCapacity(Int(o.duration) + 2)
        while true {
            var now = ws_monotonic_ns()
            if now >= end { break }
            // Fill the burst (unsent frames from the last round stay at the front).
            if have < burst && cache.allocBulk(pk + have, count: burst - have) {
                // One allocation per burst; a frame that cannot get its further segments is dropped here.
                var k = have
                while k < burst {
                    if build(pk[k], seq: seq, now: now) {
                        seq &+= 1
                        pk[have] = pk[k]
                        have += 1
                    } else {
                        cache.free(pk[k])
                    }
                    k += 1
                }
            }
            let sent = q.transmitBurst(pk, count: have, cache: cache)
            tx &+= UInt64(sent)
            if sent > 0 && sent < have {
                for k in 0..<(have - sent) { pk[k] = pk[sent + k] }
            }
            have -= sent
            let n = q.receiveBurst(into: rx, max: 256, cache: cache)
            if n > 0 {
                now = ws_monotonic_ns()
                for k in 0..<n {
                    let m = rx[k]
                    let stamp = m.data.loadUnaligned(fromByteOffset: Bench.stampOffset, as: UInt64.self)
                    if stamp <= now && stamp >= start { latency.record(now - stamp) }
                    rxBytes &+= UInt64(m.packetLength)
                    cache.free(m)
                }
                rxCount &+= UInt64(n)
            }
            iterations &+= 1
            if iterations & 1023 == 0 && now >= nextReport {
                if !alive() { throw BenchError("the back-end went away during the run") }
                let counted = o.mode == .loopback ? rxCount - lastRx : tx - lastTx
                samples.append(Double(counted) / 1e6)
                if o.duration > 3 {
                    let secs = Double(now - start) / 1e9
                    progress("  \(Int(secs.rounded())) s: tx \(format2(Double(tx - lastTx) / 1e6)) Mpps, rx \(format2(Double(rxCount - lastRx) / 1e6)) Mpps")
                }
                lastTx = tx; lastRx = rxCount
                nextReport += 1_000_000_000
            }
        }
        let elapsed = Double(ws_monotonic_ns() - start) / 1e9
        for k in 0..<have { cache.free(pk[k]) }
        // Drain what is still on its way back (loopback), so drops count only real losses.
        let drainEnd = ws_monotonic_ns() + 200_000_000
        while o.mode == .loopback && ws_monotonic_ns() < drainEnd && rxCount < tx {
            let n = q.receiveBurst(into: rx, max: 256, cache: cache)
            for k in 0..<n { cache.free(rx[k]) }
            rxCount &+= UInt64(n)
            _ = q.transmitBurst(pk, count: 0, cache: cache)
        }
        cache.flush()
        if getenv("WARMSTART_BENCH_DEBUG") != nil {
            let line = "pool: in use \(pool.inUseCount) bad frees \(pool.badFreeCount) double frees \(pool.doubleFreeCount) q errors \(q.errorCount) kicks \(q.kickCount)\n"
            _ = line.withCString { fputs($0, stderr) }
        }
        let counted = o.mode == .loopback ? rxCount : tx
        let us = { (v: UInt64?) in v.map { Double($0) / 1000 } }
        return BenchResult(backend: o.backend.rawValue, layout: o.packed ? "packed" : "split", mode: o.mode.rawValue,
                           frameBytes: o.size, burst: o.burst, seconds: elapsed, txPackets: tx, rxPackets: rxCount,
                           drops: o.mode == .loopback ? tx &- min(tx, rxCount) : 0,
                           mpps: Double(counted) / elapsed / 1e6,
                           gbps: Double(counted) * Double(o.size) * 8 / elapsed / 1e9,
                           latencyP50Us: o.mode == .loopback ? us(latency.quantile(0.5)) : nil,
                           latencyP99Us: o.mode == .loopback ? us(latency.quantile(0.99)) : nil,
                           latencyP999Us: o.mode == .loopback ? us(latency.quantile(0.999)) : nil,
                           setupMs: setupMs, perSecondMpps: samples)
    }
}
