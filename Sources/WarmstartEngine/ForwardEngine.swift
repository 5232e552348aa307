import CWarmstartShim
import WarmstartPools

/// The per-burst forwarding step of one polling thread: receive, count, decide where each packet
/// goes (io, macswap, l2), transmit, free what was not taken.
struct ForwardEngine {
    let mode: ForwardMode
    let pkts: UnsafeMutablePointer<Mbuf>
    let burst: Int
    let buckets: UnsafeMutablePointer<Mbuf>
    let bucketCounts: UnsafeMutablePointer<Int>
    let slots: Int
    let macTable: MACTable
    let firstPacketNs: UnsafeMutablePointer<UInt64>
    /// io with several threads: two queues of one port, polled by different threads, can map to
    /// the same peer queue (a port with more queue pairs than its peer), so io sends take the
    /// peer's transmit lock (one uncontended exchange per burst otherwise).
    let sharedTX: Bool
    /// txonly: the frame source (nil in the other modes).
    let source: TxOnlySource?

    /// Polls one queue once; returns the packets received (txonly: received + sent).
    @inline(__always)
    func poll(_ q: DatapathQueue, peers: [DatapathQueue], cache: MbufCache) -> Int {
        // The peer shrank this queue's memory (SIGBUS guard): stop using it, report it once.
        if ws_load_relaxed_u64(q.fault) != 0 { return faulted(q) }
        if let source { return generate(q, source, cache: cache) }
        let n = receive(q, cache: cache)
        if n == 0 { return 0 }
        if ws_load_relaxed_u64(firstPacketNs + q.slot) == 0 { ws_store_relaxed_u64(firstPacketNs + q.slot, ws_monotonic_ns()) }
        switch mode {
        case .io:
            if let peer = peers.first { send(pkts, n, to: peer, cache: cache, locked: sharedTX) } else { drop(pkts, n, on: q, cache: cache) }
        case .macswap:
            for i in 0..<n { swapMACs(pkts[i]) }
            send(pkts, n, to: q, cache: cache, locked: false)
        case .l2:
            switchBurst(from: q, peers: peers, n, cache: cache)
        case .txonly:
            drop(pkts, n, on: q, cache: cache)
        }
        return n
    }

    /// txonly: counts and frees what arrived (a source has nowhere to send it; not counted as
    /// drops), then sends one burst of generated frames; frames a full ring does not take are
    /// dropped and counted, as testpmd's txonly does.
    @inline(__always)
    func generate(_ q: DatapathQueue, _ source: TxOnlySource, cache: MbufCache) -> Int {
        let n = receive(q, cache: cache)
        for i in 0..<n { cache.free(pkts[i]) }
        let made = source.fill(pkts, count: burst, cache: cache)
        if made == 0 { return n }
        if ws_load_relaxed_u64(firstPacketNs + q.slot) == 0 { ws_store_relaxed_u64(firstPacketNs + q.slot, ws_monotonic_ns()) }
        send(pkts, made, to: q, cache: cache, locked: false)
        return n + made
    }

    /// One receive burst from `q` into `pkts`, counted on `q`.
    @inline(__always)
    func receive(_ q: DatapathQueue, cache: MbufCache) -> Int {
        guard let rx = q.caller else { return 0 }
        let pkts = pkts, burst = burst
        let n = rx._withUnsafeGuaranteedRef { $0.receive(into: pkts, max: burst, cache: cache) }
        if n == 0 { return 0 }
        var bytes: UInt64 = 0
        for i in 0..<n { bytes &+= UInt64(pkts[i].packetLength) }
        let c = q.counters
        c.pointee.rxPackets &+= UInt64(n)
        c.pointee.rxBytes &+= bytes
        return n
    }

    /// Off the hot path: the queue's memory is gone. Its owner closes the session (the flag's
    /// observer, told once); until the queue leaves the plan it is skipped.
    @inline(never)
    func faulted(_ q: DatapathQueue) -> Int {
        if !q.faultNoticed {
            q.faultNoticed = true
            q.faultFlag?.notice()
        }
        return 0
    }

    @inline(__always)
    func send(_ p: UnsafeMutablePointer<Mbuf>, _ n: Int, to dst: DatapathQueue, cache: MbufCache, locked: Bool) {
        guard let tx = dst.caller, ws_load_relaxed_u64(dst.fault) == 0 else { return drop(p, n, on: dst, cache: cache) }
        if locked { while ws_exchange_u32(dst.txLock, 1) != 0 { ws_cpu_relax() } }
        // Count bytes before the queue takes (and may free) the packets.
        var bytes: UInt64 = 0
        for i in 0..<n { bytes &+= UInt64(p[i].packetLength) }
        let sent = tx._withUnsafeGuaranteedRef { $0.transmit(p, count: n, cache: cache) }
        if sent < n {
            for i in sent..<n {
                bytes &-= UInt64(p[i].packetLength)
                cache.free(p[i])
            }
            dst.counters.pointee.drops &+= UInt64(n - sent)
        }
        dst.counters.pointee.txPackets &+= UInt64(sent)
        dst.counters.pointee.txBytes &+= bytes
        if locked { ws_store_release_u32(dst.txLock, 0) }
    }

    @inline(__always)
    func drop(_ p: UnsafeMutablePointer<Mbuf>, _ n: Int, on q: DatapathQueue, cache: MbufCache) {
        q.counters.pointee.drops &+= UInt64(n)
        for i in 0..<n { cache.free(p[i]) }
    }

    /// l2: learn each source MAC on the input slot, send to the learned slot, flood unknown and
    /// group destinations to every other slot (one reference per copy).
    func switchBurst(from q: DatapathQueue, peers: [DatapathQueue], _ n: Int, cache: MbufCache) {
        for s in 0..<slots { bucketCounts[s] = 0 }
        for i in 0..<n {
            let m = pkts[i]
            guard m.dataLength >= 14 else { q.counters.pointee.errors &+= 1; cache.free(m); continue }
            let frame = UnsafeRawPointer(m.data)
            macTable.learn(frame + 6, port: q.slot)
            if let dst = macTable.lookup(frame), dst < slots {
                if dst == q.slot { cache.free(m); continue } // already on its segment
                buckets[dst * burst + bucketCounts[dst]] = m
                bucketCounts[dst] += 1
            } else {
                var copies = 0
                for s in 0..<slots where s != q.slot && peers[s].queue != nil { copies += 1 }
                if copies == 0 { cache.free(m); continue }
                if copies > 1 { m.refCount = m.refCount &+ UInt16(copies - 1) }
                for s in 0..<slots where s != q.slot && peers[s].queue != nil {
                    buckets[s * burst + bucketCounts[s]] = m
                    bucketCounts[s] += 1
                }
            }
        }
        for s in 0..<slots where bucketCounts[s] > 0 {
            send(buckets + s * burst, bucketCounts[s], to: peers[s], cache: cache, locked: true)
        }
    }
}
