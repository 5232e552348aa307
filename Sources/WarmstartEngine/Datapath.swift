import CWarmstartShim
import WarmstartMemory
import WarmstartPools
#if canImport(Glibc)
import Glibc
#endif

/// The forwarding plane: declared port slots, the queues that have joined them, and the polling
/// threads that move bursts between them.
///
/// Ports join and leave while the threads run (a device that becomes ready joins; one whose peer
/// goes away leaves). The control side never touches a running thread's state: it publishes a new
/// *generation* (a new plan of which thread polls which queue) and waits until every thread has
/// acknowledged it at a burst boundary. After that, nothing still refers to a removed queue.
/// `pause()` uses the same handshake to quiesce all threads between bursts (hot upgrade).
///
/// Hot upgrade needs two more things of the threads, both chosen through one control word they
/// read once per loop iteration anyway (so they cost nothing when off): a new process starts its
/// threads parked and has them watch closely just before it resumes them (`startPaused`,
/// `expectResume`), and both processes stamp the time of every burst forwarded while a handoff
/// runs (`recordForwardTimes`): the old one's last and the new one's first are the blackout.
public final class Datapath: @unchecked Sendable {
    public struct Options: Sendable {
        public var mode: ForwardMode
        /// CPUs to pin polling threads to; one thread per entry. Empty: one unpinned thread.
        public var cores: [Int]
        public var burst: Int
        /// Empty polls before a thread starts napping (so an idle datapath does not burn a core).
        public var spinBeforeNap: Int
        public var napMicroseconds: UInt32
        /// txonly: bytes per generated frame (60 ... 9216; chained when larger than the data room).
        public var txSize: Int
        public init(mode: ForwardMode = .io, cores: [Int] = [], burst: Int = 32, spinBeforeNap: Int = 20_000,
                    napMicroseconds: UInt32 = 50, txSize: Int = 64) {
            self.mode = mode; self.cores = cores; self.burst = max(1, min(burst, 256))
            self.spinBeforeNap = spinBeforeNap; self.napMicroseconds = napMicroseconds
            self.txSize = max(TxOnlySource.minFrame, min(txSize, TxOnlySource.maxFrame))
        }
    }

    public let options: Options
    public let pool: MbufPool
    public let portNames: [String]
    public let macTable = MACTable()
    let lock = PThreadMutex()
    /// Queues per port slot, control side (strong references).
    var slots: [[DatapathQueue]]
    var threads: [PollingThread] = []
    /// Plan currently published (per thread: its queues), kept alive until every thread acks a newer one.
    var published: Plan
    var retired: [Plan] = []
    let generation = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    /// Bits of `Control`, read by every polling thread once per loop iteration.
    let control = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
    enum Control {
        /// Park at the next burst boundary.
        static let pause: UInt32 = 1
        /// While parked, check for the resume every 2 µs instead of every 20.
        static let resumeSoon: UInt32 = 2
        /// Stamp the monotonic time of every burst forwarded (one clock read per non-empty burst).
        static let stamp: UInt32 = 4
    }
    /// When `recordForwardTimes` began: older stamps do not count.
    var stampsSinceNs: UInt64 = 0
    /// Per slot: monotonic ns of the first packet received, 0 until then.
    public let firstPacketNs: UnsafeMutablePointer<UInt64>

    /// `ports`: the declared port names, in order (io mode pairs slot 0 with 1, 2 with 3, …).
    public init(pool: MbufPool, ports: [String], options: Options = Options()) {
        self.pool = pool
        self.portNames = ports
        self.options = options
        slots = Array(repeating: [], count: ports.count)
        published = Plan(threads: max(1, options.cores.count))
        generation.initialize(to: 0)
        control.initialize(to: 0)
        firstPacketNs = .allocate(capacity: max(1, ports.count))
        firstPacketNs.initialize(repeating: 0, count: max(1, ports.count))
    }

    deinit {
        stop()
        generation.deallocate()
        control.deallocate()
        firstPacketNs.deallocate()
    }

    /// The slot that receives what `slot` receives, in io mode.
    public func ioPeer(of slot: Int) -> Int {
        let n = portNames.count
        if slot % 2 == 0 { return slot + 1 < n ? slot + 1 : slot }
        return slot - 1
    }

    // MARK: joining and leaving

    /// Adds a port's queue pairs to slot `slot` (replacing any it had) and returns when every
    /// polling thread runs the new plan.
    public func attach(slot: Int, queues: [BurstQueue]) {
        precondition(slot >= 0 && slot < portNames.count, "port slot \(slot) out of range")
        let replaced = lock.locked { () -> [DatapathQueue] in
            let old = slots[slot]
            slots[slot] = queues.enumerated().map { DatapathQueue(slot: slot, index: $0.offset, queue: $0.element) }
            departing[slot, default: []] += old
            publishLocked()
            return old
        }
        waitForAllThreads()
        fold(replaced, slot: slot)
    }

    /// Removes slot `slot`'s queues; when this returns no polling thread refers to them any more,
    /// and their counters are folded into the slot's history.
    public func detach(slot: Int) {
        let removed = lock.locked { () -> [DatapathQueue] in
            let old = slots[slot]
            slots[slot] = []
            departing[slot, default: []] += old
            publishLocked()
            return old
        }
        waitForAllThreads()
        fold(removed, slot: slot)
    }

    /// Adds the counters of queues no thread polls any more to the slot's history. Only after the
    /// threads acknowledged the plan without them: a thread still finishing a burst on a queue
    /// counts into it until then, and folding earlier would lose those counts.
    func fold(_ queues: [DatapathQueue], slot: Int) {
        guard !queues.isEmpty else { return }
        lock.locked {
            departing[slot]?.removeAll { d in queues.contains { $0 === d } }
            for q in queues {
                var c = q.counters.pointee
                c.errors &+= q.queue?.errorCount ?? 0
                history[slot] = (history[slot] ?? QueueCounters()) + c
                // Per queue index too, so a port that went away still shows its queues' counts.
                var h = queueHistory[slot] ?? []
                while h.count <= q.index { h.append(QueueCounters()) }
                h[q.index] = h[q.index] + c
                queueHistory[slot] = h
            }
        }
    }

    var history: [Int: QueueCounters] = [:]
    /// Queues taken out of a slot whose counters are not folded yet (threads may still finish a
    /// burst on them): `stats()` counts them meanwhile, so a port's totals never dip while it
    /// leaves.
    var departing: [Int: [DatapathQueue]] = [:]

    /// Hot upgrade: slot `slot` continues counters a previous process counted (added to its history).
    public func continueCounters(slot: Int, from c: QueueCounters) {
        lock.locked { history[slot] = (history[slot] ?? QueueCounters()) + c }
    }
    var queueHistory: [Int: [QueueCounters]] = [:]

    /// Builds a new plan from the slots (queues dealt round-robin to threads) and publishes it.
    func publishLocked() {
        let n = max(1, options.cores.count)
        let plan = Plan(threads: n)
        var k = 0
        for (slot, queues) in slots.enumerated() {
            for q in queues {
                // The peers go into the plan, never into the queue object: a thread may be
                // reading the previous plan's peer list while this one is built.
                plan.add(PlannedQueue(queue: q, peers: peers(of: slot, queueIndex: q.index)), toThread: k % n)
                k += 1
            }
        }
        retired.append(published)
        published = plan
        ws_fetch_add_u64(generation, 1)
    }

    func peers(of slot: Int, queueIndex: Int) -> [DatapathQueue] {
        switch options.mode {
        case .io:
            let peer = slots[ioPeer(of: slot)]
            return peer.isEmpty ? [] : [peer[queueIndex % peer.count]]
        case .macswap, .txonly:
            return [slots[slot][queueIndex]]
        case .l2:
            // Every port, by slot (index = slot); the engine picks the learned one or floods.
            return slots.indices.map { s in
                let q = slots[s]
                return q.isEmpty ? DatapathQueue.absent(slot: s) : q[queueIndex % q.count]
            }
        }
    }

    /// Waits until every running thread has acknowledged the current generation, then lets the
    /// plans they no longer use go.
    func waitForAllThreads() {
        let target = ws_load_acquire_u64(generation)
        for t in threads where t.isRunning {
            while ws_load_acquire_u64(t.ackedGeneration) < target && t.isRunning { ws_cpu_relax(); sched_yield() }
        }
        lock.locked { retired.removeAll() }
    }

    // MARK: threads

    /// Starts the polling threads; does nothing when they run already.
    public func start() {
        let created = lock.locked { () -> [PollingThread] in
            guard threads.isEmpty else { return [] }
            let cores = options.cores.isEmpty ? [-1] : options.cores
            for (i, cpu) in cores.enumerated() {
                threads.append(PollingThread(datapath: self, index: i, cpu: cpu))
            }
            return threads
        }
        for t in created { t.start() }
    }

    public func stop() {
        let ts = lock.locked { () -> [PollingThread] in
            let t = threads
            threads = []
            return t
        }
        for t in ts { t.stopAndJoin() }
    }

    /// Quiesces every polling thread at a burst boundary; returns once all of them are parked
    /// (their mbuf caches flushed).
    public func pause() {
        _ = ws_fetch_or_u32(control, Control.pause)
        waitUntilParked()
    }

    /// Lets parked threads poll again.
    public func resume() { _ = ws_fetch_and_u32(control, ~(Control.pause | Control.resumeSoon)) }

    /// Hot upgrade, new process: starts the polling threads parked — created, pinned, their mbuf
    /// caches and burst arrays allocated — so that only `resume()` is left for the blackout.
    /// Returns once every thread is parked. Parked threads nap 20 µs at a time.
    public func startPaused() {
        _ = ws_fetch_or_u32(control, Control.pause)
        start()
        waitUntilParked()
    }

    /// Parked threads nap 2 µs at a time instead of 20, so the next `resume()` takes effect
    /// within microseconds. For the short moment before a resume that is known to come (inside
    /// a handoff's blackout). Never a spin: a spinning thread would keep a thread that shares
    /// its CPU — the one that is to say "resume" — waiting for its time slice to end.
    public func expectResume() { _ = ws_fetch_or_u32(control, Control.resumeSoon) }

    func waitUntilParked() {
        let ts = lock.locked { threads }
        for t in ts where t.isRunning {
            // A thread parks within a burst (microseconds): spin first. A yield would hand this
            // CPU to any other busy task (a guest's poller) for a whole time slice, milliseconds,
            // inside a handoff's blackout. After 20 µs (this thread may share the polling
            // thread's CPU) sleep briefly instead: a sleeper gets its CPU back on waking.
            let sleepAfter = ws_monotonic_ns() &+ 20_000
            while ws_load_acquire_u32(t.parked) == 0 && t.isRunning {
                ws_cpu_relax()
                if ws_monotonic_ns() > sleepAfter { usleep(10) }
            }
        }
    }

    // MARK: forwarding times (hot upgrade)

    /// From now on every thread stamps the time of each burst it forwards (after its transmit),
    /// until `stopRecordingForwardTimes`. Off, the threads read no clock.
    public func recordForwardTimes() {
        lock.locked { stampsSinceNs = ws_monotonic_ns() }
        _ = ws_fetch_or_u32(control, Control.stamp)
    }

    public func stopRecordingForwardTimes() { _ = ws_fetch_and_u32(control, ~Control.stamp) }

    /// The last burst any thread forwarded since `recordForwardTimes`, nil when none did (an idle
    /// guest). Exact once the threads are paused.
    public var lastForwardNs: UInt64? {
        lock.locked {
            let last = threads.map { ws_load_acquire_u64($0.lastForwardNs) }.max() ?? 0
            return last >= stampsSinceNs && last != 0 ? last : nil
        }
    }

    /// When the first thread parked (while paused: from then on at least one thread polls
    /// nothing). Nil when not paused.
    public var parkedAtNs: UInt64? {
        lock.locked {
            guard !threads.isEmpty, threads.allSatisfy({ ws_load_acquire_u32($0.parked) != 0 }) else { return nil }
            return threads.map { ws_load_acquire_u64($0.parkedAtNs) }.min()
        }
    }

    /// After `resume()`: when the last thread left its park (from then on every thread polls).
    /// Nil while any thread is still parked.
    public var unparkedAtNs: UInt64? {
        lock.locked {
            guard !threads.isEmpty, threads.allSatisfy({ ws_load_acquire_u32($0.parked) == 0 }) else { return nil }
            let t = threads.map { ws_load_acquire_u64($0.unparkedAtNs) }
            return t.contains(0) ? nil : t.max()
        }
    }

    /// The first burst any thread forwarded while recording, nil until one did.
    public var firstForwardNs: UInt64? {
        lock.locked {
            let firsts = threads.map { ws_load_acquire_u64($0.firstForwardNs) }.filter { $0 >= stampsSinceNs && $0 != 0 }
            return firsts.min()
        }
    }

    // MARK: stats

    /// Mbufs in the polling threads' caches now (statistics: read from outside, approximate
    /// while the threads run, exact when they are paused or idle).
    public var cachedMbufs: Int { lock.locked { threads.reduce(0) { $0 + ($1.cacheForStats?.countSeenFromOutside ?? 0) } } }

    public struct PortStats: Sendable, Codable, Equatable {
        public var name: String
        public var slot: Int
        public var total: QueueCounters
        public var queues: [QueueCounters]
        public var firstPacketNs: UInt64?

        enum CodingKeys: String, CodingKey { case name, slot, total, queues, firstPacketNs = "first_packet_ns" }
    }

    /// Counters of every port: live queues plus what left ports counted before.
    public func stats() -> [PortStats] {
        lock.locked {
            slots.enumerated().map { slot, queues in
                let live = queues.map { q -> QueueCounters in
                    var c = q.counters.pointee
                    c.errors &+= q.queue?.errorCount ?? 0
                    return c
                }
                let leaving = (departing[slot] ?? []).map { q -> (Int, QueueCounters) in
                    var c = q.counters.pointee
                    c.errors &+= q.queue?.errorCount ?? 0
                    return (q.index, c)
                }
                let past = leaving.map(\.1).reduce(history[slot] ?? QueueCounters(), +)
                let total = live.reduce(past, +)
                // Per queue index: what it counts now plus what earlier attachments counted.
                var qs = queueHistory[slot] ?? []
                for (i, c) in live.enumerated().map({ ($0.offset, $0.element) }) + leaving {
                    while qs.count <= i { qs.append(QueueCounters()) }
                    qs[i] = qs[i] + c
                }
                let first = ws_load_relaxed_u64(firstPacketNs + slot)
                return PortStats(name: portNames[slot], slot: slot, total: total, queues: qs,
                                 firstPacketNs: first == 0 ? nil : first)
            }
        }
    }
}

/// A queue pair that has joined the datapath, with its counters.
public final class DatapathQueue: @unchecked Sendable {
    public let slot: Int
    public let index: Int
    /// The port's queue pair; the engine knows it only as a `BurstQueue` and calls it once per
    /// burst.
    public let queue: BurstQueue?
    /// What the polling threads call: `queue` behind a class of our own, reached unretained (this
    /// object holds it), so a burst costs a table call and no reference counting (a call through
    /// the `BurstQueue` existential retains and releases the queue around every poll).
    let caller: Unmanaged<BurstCaller>?
    public let counters: UnsafeMutablePointer<QueueCounters>
    /// Held while transmitting in l2 mode, where several threads may send to one queue.
    let txLock = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
    /// Non-zero once the peer shrank memory the queue uses (`MappingFaultFlag.words[0]`, or a
    /// word that stays 0): loaded once per burst; the queue is then neither polled nor sent to.
    let fault: UnsafePointer<UInt64>
    let faultFlag: MappingFaultFlag?
    /// The polling thread that owns the queue has told the flag's observer (that thread only).
    var faultNoticed = false

    init(slot: Int, index: Int, queue: BurstQueue?) {
        self.slot = slot
        self.index = index
        self.queue = queue
        caller = queue.map { Unmanaged.passRetained(makeBurstCaller($0)) }
        faultFlag = queue?.memoryFault
        fault = UnsafePointer(faultFlag?.words ?? DatapathQueue.neverFaults)
        counters = .allocate(capacity: 1)
        counters.initialize(to: QueueCounters())
        txLock.initialize(to: 0)
    }

    static func absent(slot: Int) -> DatapathQueue { DatapathQueue(slot: slot, index: 0, queue: nil) }

    /// The fault word of queues with no guarded memory: always 0.
    static let neverFaults: UnsafeMutablePointer<UInt64> = {
        let p = UnsafeMutablePointer<UInt64>.allocate(capacity: 2)
        p.initialize(repeating: 0, count: 2)
        return p
    }()

    deinit {
        caller?.release()
        counters.deallocate()
        txLock.deallocate()
    }
}

/// A queue's burst calls behind a class the engine owns (see `DatapathQueue.caller`).
class BurstCaller {
    func receive(into out: UnsafeMutablePointer<Mbuf>, max: Int, cache: MbufCache) -> Int { 0 }
    func transmit(_ pkts: UnsafeMutablePointer<Mbuf>, count: Int, cache: MbufCache) -> Int { 0 }
}

/// One per concrete queue type, made with the existential opened: its calls go to the queue's
/// own witnesses on a guaranteed reference.
final class BurstCallerOf<Q: BurstQueue>: BurstCaller {
    let queue: Q
    init(_ queue: Q) { self.queue = queue }
    override func receive(into out: UnsafeMutablePointer<Mbuf>, max: Int, cache: MbufCache) -> Int {
        queue.receiveBurst(into: out, max: max, cache: cache)
    }
    override func transmit(_ pkts: UnsafeMutablePointer<Mbuf>, count: Int, cache: MbufCache) -> Int {
        queue.transmitBurst(pkts, count: count, cache: cache)
    }
}

func makeBurstCaller<Q: BurstQueue>(_ queue: Q) -> BurstCaller { BurstCallerOf(queue) }

/// Which queues each thread polls, in one generation.
final class Plan: @unchecked Sendable {
    var perThread: [[PlannedQueue]]
    init(threads: Int) { perThread = Array(repeating: [], count: threads) }
    func add(_ q: PlannedQueue, toThread t: Int) { perThread[t].append(q) }
}

/// A queue as one plan routes it: where its packets go (io: one peer; macswap: none needed; l2:
/// every slot, by slot). Immutable once published.
struct PlannedQueue {
    let queue: DatapathQueue
    let peers: [DatapathQueue]
}

