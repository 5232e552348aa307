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
    var thread = pthread_t()
    var started = false

    init(datapath: Datapath, index: Int, cpu: Int) {
        self.datapath = datapath
        self.index = index
        self.cpu = cpu
        ackedGeneration.initialize(to: 0)
        parked.initialize(to: 0)
        running.initialize(to: 0)
    }

    deinit {
        ackedGeneration.deallocate()
        parked.deallocate()
        running.deallocate()
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
        let dp = datapath
        let cache = MbufCache(pool: dp.pool, size: dp.pool.config.cacheSize)
        let burst = dp.options.burst
        let pkts = UnsafeMutablePointer<Mbuf>.allocate(capacity: burst)
        let slotCount = max(1, dp.portNames.count)
        // l2: one bucket of `burst` per destination slot.
        let buckets = UnsafeMutablePointer<Mbuf>.allocate(capacity: burst * slotCount)
        let bucketCounts = UnsafeMutablePointer<Int>.allocate(capacity: slotCount)
        defer {
            cache.flush()
            pkts.deallocate(); buckets.deallocate(); bucketCounts.deallocate()
        }
        var myGeneration = UInt64.max
        var queues: [PlannedQueue] = []
        var empty = 0
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
            if ws_load_acquire_u32(dp.pauseRequested) != 0 {
                cache.flush()
                ws_store_release_u32(parked, 1)
                while ws_load_acquire_u32(dp.pauseRequested) != 0 && ws_load_acquire_u32(running) != 0 { usleep(20) }
                ws_store_release_u32(parked, 0)
                continue
            }
            var got = 0
            queues.withUnsafeBufferPointer { qs in
                for pq in qs { got &+= engine.poll(pq.queue, peers: pq.peers, cache: cache) }
            }
            if got == 0 {
                empty &+= 1
                if empty > dp.options.spinBeforeNap { usleep(dp.options.napMicroseconds) }
            } else {
                empty = 0
            }
        }
        ws_store_release_u64(ackedGeneration, UInt64.max)
    }
}
