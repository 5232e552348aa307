import CWarmstartShim
import WarmstartDatapath
import WarmstartPools
#if canImport(Glibc)
import Glibc
#endif

/// The generator/sink loop (one thread: send a burst, receive a burst).
final class Generator {
    let o: BenchOptions
    let pool: MbufPool
    let q: VirtioUserQueuePair
    let cache: MbufCache
    let template: UnsafeMutableRawPointer
    let latency = LatencyHistogram()

    /// `sourceMAC`: the front-end port's own address, the frames' source.
    init(options: BenchOptions, pool: MbufPool, queue: VirtioUserQueuePair, sourceMAC: [UInt8]) {
        o = options
        self.pool = pool
        q = queue
        cache = MbufCache(pool: pool)
        template = .allocate(byteCount: options.size, alignment: 64)
        // Ethernet II to a locally administered address from the port's MAC, EtherType 0x88B5
        // (local experimental).
        let head: [UInt8] = [0x02, 0, 0, 0, 0, 0x02] + sourceMAC + [0x88, 0xB5]
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

    /// Sends and receives until the duration has passed, the back-end goes away (`alive`, once a
    /// second) or the bus revokes `lease` (the port is being torn down: the queues are not
    /// touched again, and the run ends with the reason).
    func run(setupMs: Double, lease: QueueLease, progress: (String) -> Void, alive: () -> Bool) throws -> BenchResult {
        let burst = o.burst
        let pk = UnsafeMutablePointer<Mbuf>.allocate(capacity: burst)
        let rx = UnsafeMutablePointer<Mbuf>.allocate(capacity: 256)
        let rxMax = min(256, q.rx.size)
        defer { pk.deallocate(); rx.deallocate() }
        guard lease.acquire() else { throw BenchError("the back-end went away before the run") }
        defer { lease.release() }
        var failure: String?
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
            if lease.revoked { failure = "the back-end went away during the run"; break }
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
            let n = q.receiveBurst(into: rx, max: rxMax, cache: cache)
            if n > 0 {
                now = ws_monotonic_ns()
                rxBytes &+= consumeReceived(rx, n, cache: cache, latency: latency, stamped: true, start: start, now: now)
                rxCount &+= UInt64(n)
            }
            iterations &+= 1
            if iterations & 1023 == 0 && now >= nextReport {
                if !alive() { failure = "the back-end went away during the run"; break }
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
        while failure == nil && o.mode == .loopback && ws_monotonic_ns() < drainEnd && rxCount < tx && !lease.revoked {
            let n = q.receiveBurst(into: rx, max: rxMax, cache: cache)
            for k in 0..<n { cache.free(rx[k]) }
            rxCount &+= UInt64(n)
            _ = q.transmitBurst(pk, count: 0, cache: cache)
        }
        cache.flush()
        if let failure { throw BenchError(failure) }
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

/// Frees `n` received frames and returns their bytes; with `stamped`, records the latency of each
/// whose send stamp (offset `Bench.stampOffset`, in the first segment) lies in [start, now].
@inline(__always)
func consumeReceived(_ rx: UnsafeMutablePointer<Mbuf>, _ n: Int, cache: MbufCache, latency: LatencyHistogram,
                     stamped: Bool, start: UInt64, now: UInt64) -> UInt64 {
    var bytes: UInt64 = 0
    for k in 0..<n {
        let m = rx[k]
        if stamped && m.dataLength >= UInt16(Bench.stampOffset + 8) {
            let stamp = m.data.loadUnaligned(fromByteOffset: Bench.stampOffset, as: UInt64.self)
            if stamp <= now && stamp >= start { latency.record(now - stamp) }
        }
        bytes &+= UInt64(m.packetLength)
        cache.free(m)
    }
    return bytes
}

/// The sink loop (sink mode, one thread): the back-end generates, we receive, count and free.
final class Sink {
    let o: BenchOptions
    let pool: MbufPool
    let q: VirtioUserQueuePair
    let cache: MbufCache
    let latency = LatencyHistogram()

    init(options: BenchOptions, pool: MbufPool, queue: VirtioUserQueuePair) {
        o = options
        self.pool = pool
        q = queue
        cache = MbufCache(pool: pool)
    }

    /// Receives until the duration has passed, the back-end goes away or the bus revokes `lease`.
    func run(setupMs: Double, lease: QueueLease, progress: (String) -> Void, alive: () -> Bool) throws -> BenchResult {
        let max = min(256, q.rx.size)
        let rx = UnsafeMutablePointer<Mbuf>.allocate(capacity: max)
        defer { rx.deallocate() }
        guard lease.acquire() else { throw BenchError("the back-end went away before the run") }
        defer { lease.release() }
        var failure: String?
        var rxCount: UInt64 = 0, rxBytes: UInt64 = 0, lastRx: UInt64 = 0
        let start = ws_monotonic_ns()
        let end = start + UInt64(o.duration * 1e9)
        var nextReport = start + 1_000_000_000
        var iterations = 0
        var samples: [Double] = []
        samples.reserveCapacity(Int(o.duration) + 2)
        // Warmstart's txonly stamps its send time where our generator does (same monotonic
        // clock across processes): one-way latency. testpmd's frames carry no stamp.
        let stamped = o.backend == .warmstart
        while true {
            var now = ws_monotonic_ns()
            if now >= end { break }
            if lease.revoked { failure = "the back-end went away during the run"; break }
            let n = q.receiveBurst(into: rx, max: max, cache: cache)
            if n > 0 {
                if stamped { now = ws_monotonic_ns() }
                rxBytes &+= consumeReceived(rx, n, cache: cache, latency: latency, stamped: stamped, start: start, now: now)
                rxCount &+= UInt64(n)
            }
            iterations &+= 1
            if iterations & 1023 == 0 && now >= nextReport {
                if !alive() { failure = "the back-end went away during the run"; break }
                samples.append(Double(rxCount - lastRx) / 1e6)
                if o.duration > 3 {
                    let secs = Double(now - start) / 1e9
                    progress("  \(Int(secs.rounded())) s: rx \(format2(Double(rxCount - lastRx) / 1e6)) Mpps")
                }
                lastRx = rxCount
                nextReport += 1_000_000_000
            }
        }
        let elapsed = Double(ws_monotonic_ns() - start) / 1e9
        cache.flush()
        if let failure { throw BenchError(failure) }
        let us = { (v: UInt64?) in v.map { Double($0) / 1000 } }
        return BenchResult(backend: o.backend.rawValue, layout: o.packed ? "packed" : "split", mode: o.mode.rawValue,
                           frameBytes: o.size, burst: o.burst, seconds: elapsed, txPackets: 0, rxPackets: rxCount,
                           drops: 0, mpps: Double(rxCount) / elapsed / 1e6, gbps: Double(rxBytes) * 8 / elapsed / 1e9,
                           latencyP50Us: us(latency.quantile(0.5)), latencyP99Us: us(latency.quantile(0.99)),
                           latencyP999Us: us(latency.quantile(0.999)), setupMs: setupMs, perSecondMpps: samples)
    }
}

/// The generator's (or sink's) hold on a port's queue pairs, for a caller that polls them itself
/// (no datapath): the bus revokes it before the port is torn down — its loop thread waits until
/// the holder has stopped touching the queues, so posted mbufs are never reclaimed under a burst
/// in progress. The holder checks once per burst.
final class QueueLease: @unchecked Sendable {
    /// [0]: revoked; [1]: the holder is using the queues.
    private let words = UnsafeMutablePointer<UInt32>.allocate(capacity: 2)
    init() { words.initialize(repeating: 0, count: 2) }
    deinit { words.deallocate() }

    /// Holder: starts using the queues; false when the lease was already revoked.
    func acquire() -> Bool {
        ws_store_release_u32(words + 1, 1)
        ws_fence_seq_cst()   // the store above before the load below (revoke() mirrors it)
        if ws_load_acquire_u32(words) != 0 { release(); return false }
        return true
    }

    /// Holder, once per burst.
    var revoked: Bool { ws_load_acquire_u32(words) != 0 }

    /// Holder: done with the queues.
    func release() { ws_store_release_u32(words + 1, 0) }

    /// Bus loop thread: no further use; returns once the holder has let go (or never held).
    func revoke() {
        ws_store_release_u32(words, 1)
        ws_fence_seq_cst()
        while ws_load_acquire_u32(words + 1) != 0 { usleep(20) }
    }
}
