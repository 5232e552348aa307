import CWarmstartShim
import WarmstartPools
#if canImport(Glibc)
import Glibc
#endif

/// One polling thread: picks up the newest plan at a burst boundary, polls its queues in bursts,
/// forwards, counts. Per burst it makes one call into each queue; per packet it touches only raw
/// memory (no ARC, no allocation, no closures).
final class PollingThread: @unchecked Sendable {
    unowned let datapath: Datapath
    let index: Int
    let cpu: Int
    let ackedGeneration = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    let parked = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
    let running = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
    /// Monotonic time of the first and the last burst forwarded while `Datapath.Control.stamp`
    /// was set (0: none); written by this thread only.
    let firstForwardNs = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    let lastForwardNs = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    /// When this thread last parked and last left a park (monotonic ns, 0: never).
    let parkedAtNs = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    let unparkedAtNs = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    var thread = pthread_t()
    var started = false
    /// The thread's mbuf cache while it runs, for statistics (set and cleared by the thread under
    /// the datapath's lock; others read only its count). The cache itself is made by the thread,
    /// so it lives in that thread's malloc arena, away from memory other threads write.
    var cacheForStats: MbufCache?

    init(datapath: Datapath, index: Int, cpu: Int) {
        self.datapath = datapath
        self.index = index
        self.cpu = cpu
        ackedGeneration.initialize(to: 0)
        parked.initialize(to: 0)
        running.initialize(to: 0)
        firstForwardNs.initialize(to: 0)
        lastForwardNs.initialize(to: 0)
        parkedAtNs.initialize(to: 0)
        unparkedAtNs.initialize(to: 0)
    }

    deinit {
        ackedGeneration.deallocate()
        parked.deallocate()
        running.deallocate()
        firstForwardNs.deallocate()
        lastForwardNs.deallocate()
        parkedAtNs.deallocate()
        unparkedAtNs.deallocate()
    }

    var isRunning: Bool { ws_load_acquire_u32(running) != 0 }

    func start() {
        ws_store_release_u32(running, 1)
        let ctx = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&thread, nil, { arg in
            let t = Unmanaged<PollingThread>.fromOpaque(arg!).takeRetainedValue()
            t.body()
            return nil
        }, ctx)
        if rc != 0 {
            Unmanaged<PollingThread>.fromOpaque(ctx).release()
            ws_store_release_u32(running, 0)
        } else {
            started = true
        }
    }

    func stopAndJoin() {
        ws_store_release_u32(running, 0)
        if started { pthread_join(thread, nil); started = false }
    }

    func body() {
        if cpu >= 0 { _ = ws_pin_thread(Int32(cpu)) }
        // Under the write watchdog: a signal to a peer's eventfd that the peer made blocking and
        // filled is interrupted instead of stopping this thread (and every port it serves).
        _ = ws_write_guard_register()
        defer { ws_write_guard_unregister() }
        let dp = datapath
        let cache = MbufCache(pool: dp.pool, size: dp.pool.config.cacheSize)
        dp.lock.locked { cacheForStats = cache }
        let burst = dp.options.burst
        let pkts = UnsafeMutablePointer<Mbuf>.allocate(capacity: burst)
        let slotCount = max(1, dp.portNames.count)
        // l2: one bucket of `burst` per destination slot.
        let buckets = UnsafeMutablePointer<Mbuf>.allocate(capacity: burst * slotCount)
        let bucketCounts = UnsafeMutablePointer<Int>.allocate(capacity: slotCount)
        defer {
            dp.lock.locked { cacheForStats = nil }
            cache.flush()
            pkts.deallocate(); buckets.deallocate(); bucketCounts.deallocate()
        }
        var myGeneration = UInt64.max
        var queues: [PlannedQueue] = []
        var empty = 0
        // A pause parks the thread after one more round over its queues, so what the guest sent
        // meanwhile is forwarded before the pause rather than after it (a thread the scheduler
        // had taken off its CPU would otherwise park on packets it could have sent). A thread
        // started paused parks before touching any queue: until it is resumed they are not its.
        var drained = true
        let source = dp.options.mode == .txonly ? TxOnlySource(pool: dp.pool, size: dp.options.txSize, stream: UInt8(truncatingIfNeeded: index)) : nil
        let engine = ForwardEngine(mode: dp.options.mode, pkts: pkts, burst: burst, buckets: buckets,
                                   bucketCounts: bucketCounts, slots: slotCount, macTable: dp.macTable,
                                   firstPacketNs: dp.firstPacketNs, sharedTX: dp.options.cores.count > 1, source: source)
        while ws_load_acquire_u32(running) != 0 {
            let g = ws_load_acquire_u64(dp.generation)
            if g != myGeneration {
                queues = dp.lock.locked { dp.published.perThread[index] }
                myGeneration = g
                ws_store_release_u64(ackedGeneration, g)
            }
            let control = ws_load_acquire_u32(dp.control)
            if control & Datapath.Control.pause != 0 {
                if drained {
                    cache.flush()
                    ws_store_release_u64(parkedAtNs, ws_monotonic_ns())
                    ws_store_release_u32(parked, 1)
                    // Parked naps last as long as asked, not 50 µs more (the default timer
                    // slack): a resume is seen within microseconds.
                    _ = ws_set_timer_slack_ns(1_000)
                    while true {
                        let c = ws_load_acquire_u32(dp.control)
                        if c & Datapath.Control.pause == 0 || ws_load_acquire_u32(running) == 0 { break }
                        // Naps, never a spin or a yield: a spinning thread would keep the
                        // handoff's own control thread off this CPU until its time slice ends,
                        // and a yield hands the CPU to any busy task for a whole slice. A resume
                        // that is known to come is checked every 2 µs instead of every 20.
                        usleep(c & Datapath.Control.resumeSoon != 0 ? 2 : 20)
                    }
                    ws_store_release_u64(unparkedAtNs, ws_monotonic_ns())
                    ws_store_release_u32(parked, 0)
                    _ = ws_set_timer_slack_ns(0)   // the process default again
                    continue
                }
                drained = true   // this round is the last before parking
            } else {
                drained = false
            }
            var got = 0
            queues.withUnsafeBufferPointer { qs in
                for pq in qs { got &+= engine.poll(pq.queue, peers: pq.peers, cache: cache) }
            }
            if got == 0 {
                empty &+= 1
                if empty > dp.options.spinBeforeNap && !drained { usleep(dp.options.napMicroseconds) }
            } else {
                empty = 0
                if control & Datapath.Control.stamp != 0 {
                    let now = ws_monotonic_ns()
                    if firstForwardNs.pointee == 0 { ws_store_release_u64(firstForwardNs, now) }
                    ws_store_release_u64(lastForwardNs, now)
                }
            }
        }
        ws_store_release_u64(ackedGeneration, UInt64.max)
    }
}
