import CWarmstartShim
import WarmstartDatapath
import WarmstartPools
#if canImport(Glibc)
import Glibc
#endif

/// The generator/sink loop (one thread: send a burst, receive a burst). `round(now:)` is one
/// turn of it and `run` turns it until the duration has passed; the SPI lets the
/// instruction-count harness (Benchmarks/VirtioUserTX) drive the very same rounds against a
/// device in its own process.
@_spi(Benchmarks)
public final class Generator {
    let o: BenchOptions
    let pool: MbufPool
    let q: VirtioUserQueuePair
    let cache: MbufCache
    let template: UnsafeMutableRawPointer
    let latency = LatencyHistogram()
    /// The burst being built (frames the queue did not take stay at its front) and the
    /// receive array.
    let pk: UnsafeMutablePointer<Mbuf>
    let rx: UnsafeMutablePointer<Mbuf>
    static let rxCapacity = 256

    /// Counters and the fill level of `pk`, in raw memory beside the arrays.
    struct Counters {
        var have = 0
        var seq: UInt64 = 0
        var tx: UInt64 = 0
        var rx: UInt64 = 0
        /// Time stamps older than this are not ours (recycled buffers of an earlier run).
        var start: UInt64 = 0
    }
    let c: UnsafeMutablePointer<Counters>
    /// Frame bytes, burst size and the pool's data room, copied out of `o` and `pool`.
    let size: Int
    let burst: Int
    let room: Int
    /// Frames fit one mbuf and the 64 header bytes fit its room: the per-frame work is the
    /// lengths and, at most, a 64-byte copy.
    let singleSegment: Bool

    public var txPackets: UInt64 { c.pointee.tx }
    public var rxPackets: UInt64 { c.pointee.rx }

    public init(options: BenchOptions, pool: MbufPool, queue: VirtioUserQueuePair) {
        o = options
        self.pool = pool
        q = queue
        cache = MbufCache(pool: pool)
        size = options.size
        burst = options.burst
        room = pool.config.dataRoom
        singleSegment = size <= room && room >= Self.stampedBytes
        template = .allocate(byteCount: max(options.size, Self.stampedBytes), alignment: 64)
        // Ethernet II, locally administered MACs, EtherType 0x88B5 (local experimental).
        let head: [UInt8] = [0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x88, 0xB5]
        // Sequence number and send time stay 0 in the template: only sampled frames carry them.
        for i in 0..<max(options.size, Self.stampedBytes) {
            let stampField = i >= Bench.seqOffset && i < Bench.stampOffset + 8
            template.storeBytes(of: i < 14 ? head[i] : stampField ? 0 : UInt8(truncatingIfNeeded: i),
                                toByteOffset: i, as: UInt8.self)
        }
        pk = .allocate(capacity: options.burst)
        rx = .allocate(capacity: Self.rxCapacity)
        c = .allocate(capacity: 1)
        c.initialize(to: Counters())
    }
    deinit {
        for k in 0..<c.pointee.have { cache.free(pk[k]) }
        template.deallocate(); pk.deallocate(); rx.deallocate(); c.deallocate()
    }

    /// Bytes of each frame the generator writes: headers (and on sampled frames the sequence
    /// number and send time), as testpmd's txonly writes only its headers; the payload is
    /// whatever the recycled buffer holds.
    static let stampedBytes = 64

    /// One frame in this many carries its sequence number and send time: the frames whose round
    /// trip the loopback records. The others are the template alone.
    static let stampEvery: UInt64 = 8

    /// The template's first 64 bytes to `d`: four 16-byte moves, each a load then a store
    /// (ws_copy's all-loads-then-stores order spills here).
    @inline(__always)
    func copyTemplate(to d: UnsafeMutableRawPointer) {
        let t = template.assumingMemoryBound(to: UInt8.self), p = d.assumingMemoryBound(to: UInt8.self)
        ws_copy16(p, t); ws_copy16(p + 16, t + 16); ws_copy16(p + 32, t + 32); ws_copy16(p + 48, t + 48)
    }

    /// Whether `d` already starts with the template's 64 bytes (a recycled buffer that carried an
    /// unsampled frame of ours). Then nothing is written: the lines stay clean, and the back-end
    /// reads them from its own cache instead of pulling them from ours.
    @inline(__always)
    func holdsTemplate(_ d: UnsafeMutableRawPointer) -> Bool {
        let t = UnsafeRawPointer(template)
        var x = SIMD2<UInt64>()
        for i in stride(from: 0, to: Self.stampedBytes, by: 16) {
            x |= d.loadUnaligned(fromByteOffset: i, as: SIMD2<UInt64>.self) ^ t.load(fromByteOffset: i, as: SIMD2<UInt64>.self)
        }
        return x[0] | x[1] == 0
    }

    /// The first 64 bytes of frame `seq` at `d`: the template, stamped when sampled.
    @inline(__always)
    func writeHeaders(_ d: UnsafeMutableRawPointer, seq: UInt64, now: UInt64) {
        if seq % Self.stampEvery == 0 {
            copyTemplate(to: d)
            d.storeBytes(of: seq, toByteOffset: Bench.seqOffset, as: UInt64.self)
            d.storeBytes(of: now, toByteOffset: Bench.stampOffset, as: UInt64.self)
        } else if !holdsTemplate(d) {
            copyTemplate(to: d)
        }
    }

    /// Builds one frame as a chain of data-room-sized segments.
    func buildChain(_ m: Mbuf, seq: UInt64, now: UInt64) -> Bool {
        var seg = m
        var off = 0
        while true {
            let n = min(room, size - off)
            if off == 0 { ws_copy(seg.data, template, min(n, Self.stampedBytes)) }  // room may be < 64
            seg.dataLength = UInt16(n)
            seg.packetLength = UInt32(n)
            off += n
            if off >= o.size { break }
            guard let next = cache.alloc() else { return false }
            _ = pool.append(next, to: m)
            seg = next
        }
        m.packetLength = UInt32(size)
        if seq % Self.stampEvery == 0 && Int(m.dataLength) >= Bench.stampOffset + 8 {
            m.data.storeBytes(of: seq, toByteOffset: Bench.seqOffset, as: UInt64.self)
            m.data.storeBytes(of: now, toByteOffset: Bench.stampOffset, as: UInt64.self)
        }
        return true
    }

    /// One round: fill the burst (one bulk allocation), send it, take what came back (loopback:
    /// latency from each frame's time stamp). Returns how many frames the queue took.
    @inline(never)
    public func round(now: UInt64) -> Int {
        let burst = self.burst
        var have = c.pointee.have
        if have < burst && cache.allocBulk(pk + have, count: burst - have) {
            var seq = c.pointee.seq
            if singleSegment {
                let length = UInt16(size)
                for k in have..<burst {
                    let m = pk[k]
                    writeHeaders(m.data, seq: seq, now: now)
                    m.dataLength = length
                    m.packetLength = UInt32(length)
                    seq &+= 1
                }
                have = burst
            } else {
                // A frame that cannot get its further segments is dropped here.
                var k = have
                while k < burst {
                    if buildChain(pk[k], seq: seq, now: now) {
                        seq &+= 1
                        pk[have] = pk[k]
                        have += 1
                    } else {
                        cache.free(pk[k])
                    }
                    k += 1
                }
            }
            c.pointee.seq = seq
        }
        let sent = q.transmitBurst(pk, count: have, cache: cache)
        c.pointee.tx &+= UInt64(sent)
        if sent > 0 && sent < have {
            for k in 0..<(have - sent) { pk[k] = pk[sent + k] }
        }
        c.pointee.have = have - sent
        let n = q.receiveBurst(into: rx, max: Self.rxCapacity, cache: cache)
        if n > 0 {
            let later = ws_monotonic_ns()
            let start = c.pointee.start
            for k in 0..<n {
                // Only sampled frames carry a send time (one in `stampEvery`, by sequence number:
                // unbiased by where a frame sits in its burst); the rest read 0.
                let stamp = rx[k].data.loadUnaligned(fromByteOffset: Bench.stampOffset, as: UInt64.self)
                if stamp != 0 && stamp <= later && stamp >= start { latency.record(later - stamp) }
            }
            cache.freeBulk(rx, count: n)
            c.pointee.rx &+= UInt64(n)
        }
        return sent
    }

    func run(setupMs: Double, progress: (String) -> Void, alive: () -> Bool) throws -> BenchResult {
        let start = ws_monotonic_ns()
        c.pointee.start = start
        let end = start + UInt64(o.duration * 1e9)
        var nextReport = start + 1_000_000_000
        var lastTx: UInt64 = 0, lastRx: UInt64 = 0
        var iterations = 0
        var samples: [Double] = []
        samples.reserveCapacity(Int(o.duration) + 2)
        while true {
            let now = ws_monotonic_ns()
            if now >= end { break }
            _ = round(now: now)
            iterations &+= 1
            if iterations & 1023 == 0 && now >= nextReport {
                if !alive() { throw BenchError("the back-end went away during the run") }
                let tx = c.pointee.tx, rxCount = c.pointee.rx
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
        for k in 0..<c.pointee.have { cache.free(pk[k]) }
        c.pointee.have = 0
        let tx = c.pointee.tx
        // Drain what is still on its way back (loopback), so drops count only real losses.
        let drainEnd = ws_monotonic_ns() + 200_000_000
        while o.mode == .loopback && ws_monotonic_ns() < drainEnd && c.pointee.rx < tx {
            let n = q.receiveBurst(into: rx, max: Self.rxCapacity, cache: cache)
            for k in 0..<n { cache.free(rx[k]) }
            c.pointee.rx &+= UInt64(n)
            _ = q.transmitBurst(pk, count: 0, cache: cache)
        }
        let rxCount = c.pointee.rx
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
