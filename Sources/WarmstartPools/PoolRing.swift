import CWarmstartShim

/// A fixed-capacity ring of UInt32 element indices in shared memory, after DPDK's rte_ring:
/// each side has a head (reserved) and a tail (published). A producer reserves slots by moving the
/// producer head (CAS when several producers may race, a plain store when there is one), writes the
/// slots, waits for earlier producers to publish, then publishes with a release store of the tail.
/// Consumers mirror this. Heads and tails are 64-bit and only ever grow, so they never wrap in
/// practice and full/empty are never ambiguous; the slot is `position & mask`.
///
/// Like rte_ring, a thread preempted between reserve and publish stalls later threads on the same
/// side until it runs again; pin dataplane threads.
///
/// The ring holds no pointers and keeps no state outside its memory, so any process that maps the
/// memory may construct a `PoolRing` over it.
@frozen
public struct PoolRing {
    /// Whether each side may be used by one thread (cheaper: no CAS, no waiting) or by many.
    @frozen
    public struct Mode: Equatable, Hashable, Sendable, Codable, CustomStringConvertible {
        public var singleProducer: Bool
        public var singleConsumer: Bool
        @inlinable public init(singleProducer: Bool, singleConsumer: Bool) {
            self.singleProducer = singleProducer
            self.singleConsumer = singleConsumer
        }
        /// Multi-producer, multi-consumer (the default).
        public static let mpmc = Mode(singleProducer: false, singleConsumer: false)
        /// Single-producer, single-consumer (RING_F_SP_ENQ | RING_F_SC_DEQ).
        public static let spsc = Mode(singleProducer: true, singleConsumer: true)
        public static let mpsc = Mode(singleProducer: false, singleConsumer: true)
        public static let spmc = Mode(singleProducer: true, singleConsumer: false)
        public var description: String { (singleProducer ? "SP" : "MP") + "/" + (singleConsumer ? "SC" : "MC") }
    }

    // Header: four cache lines, one per word, so the two sides do not share a line.
    public static let headerBytes = 256
    static let prodHeadOffset = 0
    static let prodTailOffset = 64
    static let consHeadOffset = 128
    static let consTailOffset = 192

    @usableFromInline let prodHead: UnsafeMutablePointer<UInt64>
    @usableFromInline let prodTail: UnsafeMutablePointer<UInt64>
    @usableFromInline let consHead: UnsafeMutablePointer<UInt64>
    @usableFromInline let consTail: UnsafeMutablePointer<UInt64>
    @usableFromInline let slots: UnsafeMutablePointer<UInt32>
    @usableFromInline let mask: UInt64
    public let capacity: Int
    public let mode: Mode

    /// A ring whose header (`headerBytes`, 64-byte aligned) and slots (capacity × 4 bytes) live at
    /// the given addresses. Does not touch the memory: call `reset()` for a new ring.
    public init(header: UnsafeMutableRawPointer, slots: UnsafeMutableRawPointer, capacity: Int, mode: Mode) {
        precondition(capacity > 0 && capacity & (capacity - 1) == 0, "ring capacity must be a power of two")
        prodHead = (header + Self.prodHeadOffset).bindMemory(to: UInt64.self, capacity: 1)
        prodTail = (header + Self.prodTailOffset).bindMemory(to: UInt64.self, capacity: 1)
        consHead = (header + Self.consHeadOffset).bindMemory(to: UInt64.self, capacity: 1)
        consTail = (header + Self.consTailOffset).bindMemory(to: UInt64.self, capacity: 1)
        self.slots = slots.bindMemory(to: UInt32.self, capacity: capacity)
        self.mask = UInt64(capacity - 1)
        self.capacity = capacity
        self.mode = mode
    }

    /// A stand-alone ring at `memory`: header then slots (`bytesNeeded(capacity:)` bytes).
    public init(memory: UnsafeMutableRawPointer, capacity: Int, mode: Mode) {
        self.init(header: memory, slots: memory + Self.headerBytes, capacity: capacity, mode: mode)
    }

    public static func bytesNeeded(capacity: Int) -> Int { headerBytes + capacity * 4 }

    /// Empties the ring (all heads and tails 0). Only when no thread is using it.
    public func reset() { Self.resetHeader(UnsafeMutableRawPointer(prodHead)) }

    static func resetHeader(_ h: UnsafeMutableRawPointer) {
        for off in [prodHeadOffset, prodTailOffset, consHeadOffset, consTailOffset] {
            ws_store_release_u64((h + off).assumingMemoryBound(to: UInt64.self), 0)
        }
    }

    /// Entries published and not yet consumed (a snapshot; may be stale by the time it returns).
    @inlinable public var count: Int {
        let ct = ws_load_acquire_u64(consTail)
        let pt = ws_load_acquire_u64(prodTail)
        let n = pt &- ct
        return n > UInt64(capacity) ? capacity : Int(n) // a torn pair of loads can overshoot
    }

    @inlinable public var freeCount: Int { capacity - count }

    // MARK: two-phase operations (reserve, access slots, publish)

    /// Reserves up to `n` slots to write (`exact`: all n or none). Returns the first position and
    /// how many were reserved; publish them with `publishEnqueue`.
    @inlinable @inline(__always)
    public func reserveEnqueue(_ n: Int, exact: Bool) -> (start: UInt64, count: Int) {
        let cap = UInt64(capacity)
        var old = ws_load_acquire_u64(prodHead)
        while true {
            let free = cap &+ ws_load_acquire_u64(consTail) &- old
            var k = UInt64(n)
            if k > free {
                if exact { return (old, 0) }
                k = free
            }
            if k == 0 { return (old, 0) }
            if mode.singleProducer {
                ws_store_relaxed_u64(prodHead, old &+ k)
                return (old, Int(k))
            }
            if ws_cas_u64(prodHead, &old, old &+ k) != 0 { return (old, Int(k)) }
            ws_cpu_relax()
        }
    }

    /// Publishes slots written after `reserveEnqueue`, in reservation order.
    @inlinable @inline(__always)
    public func publishEnqueue(start: UInt64, count: Int) {
        if !mode.singleProducer {
            while ws_load_relaxed_u64(prodTail) != start { ws_cpu_relax() }
        }
        ws_store_release_u64(prodTail, start &+ UInt64(count))
    }

    /// Reserves up to `n` entries to read (`exact`: all n or none).
    @inlinable @inline(__always)
    public func reserveDequeue(_ n: Int, exact: Bool) -> (start: UInt64, count: Int) {
        var old = ws_load_acquire_u64(consHead)
        while true {
            let entries = ws_load_acquire_u64(prodTail) &- old
            var k = UInt64(n)
            if k > entries {
                if exact { return (old, 0) }
                k = entries
            }
            if k == 0 { return (old, 0) }
            if mode.singleConsumer {
                ws_store_relaxed_u64(consHead, old &+ k)
                return (old, Int(k))
            }
            if ws_cas_u64(consHead, &old, old &+ k) != 0 { return (old, Int(k)) }
            ws_cpu_relax()
        }
    }

    @inlinable @inline(__always)
    public func publishDequeue(start: UInt64, count: Int) {
        if !mode.singleConsumer {
            while ws_load_relaxed_u64(consTail) != start { ws_cpu_relax() }
        }
        ws_store_release_u64(consTail, start &+ UInt64(count))
    }

    @inlinable @inline(__always)
    public func slot(_ position: UInt64) -> UInt32 { slots[Int(truncatingIfNeeded: position & mask)] }

    @inlinable @inline(__always)
    public func setSlot(_ position: UInt64, _ value: UInt32) {
        slots[Int(truncatingIfNeeded: position & mask)] = value
    }

    // MARK: copying operations

    /// Enqueues all `n` indices or none (rte_ring_enqueue_bulk).
    @inlinable
    public func enqueueBulk(_ from: UnsafePointer<UInt32>, count n: Int) -> Bool {
        enqueue(from, n, exact: true) == n
    }

    /// Enqueues as many of the `n` indices as fit; returns how many (rte_ring_enqueue_burst).
    @inlinable
    public func enqueueBurst(_ from: UnsafePointer<UInt32>, count n: Int) -> Int { enqueue(from, n, exact: false) }

    /// Dequeues exactly `n` indices or none (rte_ring_dequeue_bulk).
    @inlinable
    public func dequeueBulk(_ into: UnsafeMutablePointer<UInt32>, count n: Int) -> Bool {
        dequeue(into, n, exact: true) == n
    }

    /// Dequeues up to `n` indices; returns how many (rte_ring_dequeue_burst).
    @inlinable
    public func dequeueBurst(_ into: UnsafeMutablePointer<UInt32>, max n: Int) -> Int { dequeue(into, n, exact: false) }

    @inlinable @inline(__always)
    func enqueue(_ from: UnsafePointer<UInt32>, _ n: Int, exact: Bool) -> Int {
        let r = reserveEnqueue(n, exact: exact)
        if r.count == 0 { return 0 }
        copyIn(from, start: r.start, count: r.count)
        publishEnqueue(start: r.start, count: r.count)
        return r.count
    }

    @inlinable @inline(__always)
    func dequeue(_ into: UnsafeMutablePointer<UInt32>, _ n: Int, exact: Bool) -> Int {
        let r = reserveDequeue(n, exact: exact)
        if r.count == 0 { return 0 }
        copyOut(into, start: r.start, count: r.count)
        publishDequeue(start: r.start, count: r.count)
        return r.count
    }

    /// Copies in at most two runs (before and after the wrap), which the compiler turns into memcpy.
    @inlinable @inline(__always)
    func copyIn(_ from: UnsafePointer<UInt32>, start: UInt64, count n: Int) {
        let first = Int(truncatingIfNeeded: start & mask)
        let run = Swift.min(n, capacity - first)
        (slots + first).update(from: from, count: run)
        if run < n { slots.update(from: from + run, count: n - run) }
    }

    @inlinable @inline(__always)
    func copyOut(_ into: UnsafeMutablePointer<UInt32>, start: UInt64, count n: Int) {
        let first = Int(truncatingIfNeeded: start & mask)
        let run = Swift.min(n, capacity - first)
        into.update(from: slots + first, count: run)
        if run < n { (into + run).update(from: slots, count: n - run) }
    }
}
