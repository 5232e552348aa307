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
        // Drain what is still on its way back (loopback), so drops count only real losses: until
        // everything is back, or nothing came back for a second (frames really lost). A fixed
        // window (it was 200 ms) is outlasted by a back-end thread a loaded machine holds off
        // its CPU, and counted a ring's worth of frames still in flight as drops. Yield while
        // nothing comes: the back-end may be waiting for this CPU.
        var lastBack = ws_monotonic_ns()
        while o.mode == .loopback && rxCount < tx && ws_monotonic_ns() - lastBack < 1_000_000_000 {
            let n = q.receiveBurst(into: rx, max: 256, cache: cache)
            for k in 0..<n { cache.free(rx[k]) }
            rxCount &+= UInt64(n)
            _ = q.transmitBurst(pk, count: 0, cache: cache)
            if n > 0 { lastBack = ws_monotonic_ns() } else { sched_yield() }
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
