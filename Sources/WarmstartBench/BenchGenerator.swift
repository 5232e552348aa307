import CWarmstartShim
import WarmstartPorts
import WarmstartMemory
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
    /// Receive burst limit: the array's capacity or the ring's size, the smaller.
    let rxMax: Int

    /// Counters and the fill level of `pk`, in raw memory beside the arrays.
    struct Counters {
        var have = 0
        var seq: UInt64 = 0
        var tx: UInt64 = 0
        var rx: UInt64 = 0
        /// Time stamps older than this are not ours (recycled buffers of an earlier run).
        var start: UInt64 = 0
        /// Loopback: most frames on their way at once (0: no limit but the rings'), and frames
        /// written off as lost (sent, not back, and nothing came back for a second), which no
        /// longer hold the window.
        var window: UInt64 = 0
        var lost: UInt64 = 0
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

    /// `sourceMAC`: the front-end port's own address, the frames' source.
    public init(options: BenchOptions, pool: MbufPool, queue: VirtioUserQueuePair,
                sourceMAC: [UInt8] = [0x02, 0, 0, 0, 0, 0x01]) {
        precondition(sourceMAC.count == 6, "a MAC address is 6 bytes")
        o = options
        self.pool = pool
        q = queue
        cache = MbufCache(pool: pool)
        size = options.size
        burst = options.burst
        room = pool.config.dataRoom
        singleSegment = size <= room && room >= Self.stampedBytes
        template = .allocate(byteCount: max(options.size, Self.stampedBytes), alignment: 64)
        // Ethernet II to a locally administered address from the port's MAC, EtherType 0x88B5
        // (local experimental).
        let head: [UInt8] = [0x02, 0, 0, 0, 0, 0x02] + sourceMAC + [0x88, 0xB5]
        // Sequence number and send time stay 0 in the template: only sampled frames carry them.
        for i in 0..<max(options.size, Self.stampedBytes) {
            let stampField = i >= Bench.seqOffset && i < Bench.stampOffset + 8
            template.storeBytes(of: i < 14 ? head[i] : stampField ? 0 : UInt8(truncatingIfNeeded: i),
                                toByteOffset: i, as: UInt8.self)
        }
        pk = .allocate(capacity: options.burst)
        rx = .allocate(capacity: Self.rxCapacity)
        rxMax = min(Self.rxCapacity, queue.rx.size)
        c = .allocate(capacity: 1)
        c.initialize(to: Counters())
        if options.mode == .loopback { c.pointee.window = UInt64(options.inflight ?? queue.rx.size) }
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
        var count = have
        if c.pointee.window > 0 {
            // Loopback: no more on their way than the window (by default one receive ring's
            // worth: the back-end never finds our receive ring full when this thread is late).
            let inFlight = c.pointee.tx &- c.pointee.rx &- c.pointee.lost
            let room = c.pointee.window > inFlight ? Int(truncatingIfNeeded: c.pointee.window &- inFlight) : 0
            count = Swift.min(have, room)
        }
        let sent = q.transmitBurst(pk, count: count, cache: cache)
        c.pointee.tx &+= UInt64(sent)
        if sent > 0 && sent < have {
            for k in 0..<(have - sent) { pk[k] = pk[sent + k] }
        }
        c.pointee.have = have - sent
        let n = q.receiveBurst(into: rx, max: rxMax, cache: cache)
        if n > 0 {
            let later = ws_monotonic_ns()
            let start = c.pointee.start
            for k in 0..<n {
                // Only sampled frames carry a send time (one in `stampEvery`, by sequence number:
                // unbiased by where a frame sits in its burst); the rest read 0.
                let m = rx[k]
                guard m.dataLength >= UInt16(Bench.stampOffset + 8) else { continue }
                let stamp = m.data.loadUnaligned(fromByteOffset: Bench.stampOffset, as: UInt64.self)
                if stamp != 0 && stamp <= later && stamp >= start { latency.record(later - stamp) }
            }
            cache.freeBulk(rx, count: n)
            c.pointee.rx &+= UInt64(n)
        }
        return sent
    }

    /// Sends and receives until the duration has passed, the back-end goes away (`alive`, once a
    /// second) or the bus revokes `lease` (the port is being torn down: the queues are not
    /// touched again, and the run ends with the reason).
    func run(setupMs: Double, lease: QueueLease, progress: (String) -> Void, alive: () -> Bool) throws -> BenchResult {
        guard lease.acquire() else { throw BenchError.backendGoneBeforeRun }
        defer { lease.release() }
        // One load per round, no reference counting: the flag's word, when the memory can shrink.
        let faultWord = q.memoryFault.map { UnsafePointer($0.words) }
        var failure: BenchError?
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
            if lease.revoked { failure = .backendGoneDuringRun; break }
            if let w = faultWord, ws_load_relaxed_u64(w) != 0 { failure = .memoryLost(memoryLost(q.memoryFault!)); break }
            _ = round(now: now)
            iterations &+= 1
            if iterations & 1023 == 0 && now >= nextReport {
                if !alive() { failure = .backendGoneDuringRun; break }
                let tx = c.pointee.tx, rxCount = c.pointee.rx
                let counted = o.mode == .loopback ? rxCount - lastRx : tx - lastTx
                if o.mode == .loopback && rxCount == lastRx && tx > rxCount {
                    // Nothing came back for a second: what is still out is lost, and frees the window.
                    c.pointee.lost = tx - rxCount
                }
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
        // Drain what is still on its way back (loopback), so drops count only real losses: until
        // everything is back, or nothing came back for a second (frames really lost). A fixed
        // window is outlasted by a back-end thread a loaded machine holds off its CPU, and counts
        // a ring's worth of frames still in flight as drops. Yield while nothing comes: the
        // back-end may be waiting for this CPU.
        var lastBack = ws_monotonic_ns()
        while failure == nil && o.mode == .loopback && c.pointee.rx < tx && !lease.revoked
                && ws_monotonic_ns() - lastBack < 1_000_000_000 {
            let n = q.receiveBurst(into: rx, max: rxMax, cache: cache)
            if n > 0 { cache.freeBulk(rx, count: n) }
            c.pointee.rx &+= UInt64(n)
            _ = q.transmitBurst(pk, count: 0, cache: cache)
            if n > 0 { lastBack = ws_monotonic_ns() } else { sched_yield() }
        }
        let rxCount = c.pointee.rx
        cache.flush()
        if let failure { throw failure }
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
    }
    cache.freeBulk(rx, count: n)
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
        let max = min(o.burst, q.rx.size)
        let rx = UnsafeMutablePointer<Mbuf>.allocate(capacity: max)
        defer { rx.deallocate() }
        guard lease.acquire() else { throw BenchError.backendGoneBeforeRun }
        defer { lease.release() }
        // One load per round, no reference counting: the flag's word, when the memory can shrink.
        let faultWord = q.memoryFault.map { UnsafePointer($0.words) }
        var failure: BenchError?
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
        var now = start
        while true {
            // The clock once every 64 turns (a vDSO call costs as much as receiving a few frames;
            // 64 turns are well under a millisecond), and after each burst whose stamps it reads.
            if iterations & 63 == 0 {
                now = ws_monotonic_ns()
                if now >= end { break }
            }
            if lease.revoked { failure = .backendGoneDuringRun; break }
            if let w = faultWord, ws_load_relaxed_u64(w) != 0 { failure = .memoryLost(memoryLost(q.memoryFault!)); break }
            let n = q.receiveBurst(into: rx, max: max, cache: cache)
            if n > 0 {
                if stamped { now = ws_monotonic_ns() }
                rxBytes &+= consumeReceived(rx, n, cache: cache, latency: latency, stamped: stamped, start: start, now: now)
                rxCount &+= UInt64(n)
            }
            iterations &+= 1
            if iterations & 1023 == 0 && now >= nextReport {
                if !alive() { failure = .backendGoneDuringRun; break }
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
        if let failure { throw failure }
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

/// The bench polls its queue pair itself (no datapath): a peer that truncated the memory we share
/// ends the run with the reason, and the driver is told so it takes the port down.
func memoryLost(_ fault: MappingFaultFlag) -> String {
    fault.notice()
    return fault.reason(peer: "back-end peer", whose: "the") ?? "the shared memory was truncated"
}
