import CWarmstartShim

/// A per-thread cache of free element indices in front of a pool's shared ring (DPDK's
/// rte_mempool_cache): alloc and free are a pop or push on a private stack, and the ring is only
/// touched to refill or flush `chunk` (size/2) indices at a time.
///
/// Owned by exactly one thread; not for sharing. `flush()` returns everything to the ring (call it
/// when the thread quiesces; deinit does it too).
public final class MbufCache {
    public let pool: MbufPool
    /// The level a flush brings the cache back to.
    public let size: Int
    @usableFromInline let stack: UnsafeMutablePointer<UInt32>
    /// The fill level lives in raw memory next to the stack, not in a stored `var`: a class's
    /// stored vars get dynamic exclusivity checks (swift_beginAccess) on every access.
    @usableFromInline let state: UnsafeMutablePointer<Int>
    @inlinable var length: Int {
        @inline(__always) get { state.pointee }
        @inline(__always) set { state.pointee = newValue }
    }
    /// size + chunk: the flush threshold (DPDK flushes at 1.5 × size).
    @usableFromInline let capacity: Int
    /// How many indices one refill or flush moves.
    @usableFromInline let chunk: Int
    /// A copy of the pool's element geometry, one load away instead of two.
    @usableFromInline let el: PoolElements

    /// A cache of `size` mbufs (default: the pool's cacheSize), at most MbufPoolConfig.maxCacheSize.
    /// Size 0 makes a pass-through to the pool.
    public init(pool: MbufPool, size: Int? = nil) {
        let s = Swift.max(0, Swift.min(size ?? pool.config.cacheSize, MbufPoolConfig.maxCacheSize))
        self.pool = pool
        self.size = s
        chunk = s == 0 ? 0 : Swift.max(1, s / 2)
        capacity = s + chunk
        let raw = UnsafeMutableRawPointer.allocate(byteCount: 64 + 4 * Swift.max(1, capacity), alignment: 64)
        state = raw.bindMemory(to: Int.self, capacity: 1)
        state.initialize(to: 0)
        stack = (raw + 64).bindMemory(to: UInt32.self, capacity: Swift.max(1, capacity))
        el = pool.el
    }

    deinit {
        flush()
        UnsafeMutableRawPointer(state).deallocate()
    }

    /// Mbufs held by this cache.
    public var count: Int { length }

    /// `count` read from another thread (statistics): a single atomic load, so the value is one
    /// the owner really had, if possibly out of date by the time it is used.
    public var countSeenFromOutside: Int {
        Int(ws_load_relaxed_u64(UnsafeMutableRawPointer(state).assumingMemoryBound(to: UInt64.self)))
    }

    @inlinable
    public func alloc() -> Mbuf? {
        var len = length
        if _slowPath(len == 0) {
            if capacity == 0 { return pool.alloc() }
            refill(1)
            len = length
            if len == 0 { return nil }
        }
        len &-= 1
        length = len
        return el.initialize(stack[len])
    }

    /// `n` mbufs into `out`, or none and false.
    @inlinable
    public func allocBulk(_ out: UnsafeMutablePointer<Mbuf>, count n: Int) -> Bool {
        var len = length
        if _slowPath(n > len) {
            if n > capacity { return pool.allocBulk(out, count: n) }
            refill(n)
            len = length
            if n > len { return false }
        }
        len &-= n
        length = len
        let el = self.el
        let top = stack + len
        var i = 0
        while i < n {
            out[i] = el.initialize(top[i])
            i &+= 1
        }
        return true
    }

    /// Frees the chain at `m` (see MbufPool.free): each segment whose refCount reaches 0 comes
    /// back to this cache.
    @inlinable
    public func free(_ m: Mbuf) {
        var len = length
        freeOne(m, el, &len)
        length = len
    }

    @inlinable
    public func freeBulk(_ ms: UnsafePointer<Mbuf>, count n: Int) {
        let el = self.el
        var len = length
        var i = 0
        while i < n {
            freeOne(ms[i], el, &len)
            i &+= 1
        }
        length = len
    }

    /// The free fast path on a local copy of `length`: a single segment holding the last reference.
    @inlinable @inline(__always)
    func freeOne(_ m: Mbuf, _ el: PoolElements, _ len: inout Int) {
        if _fastPath(m.nextIndex == MbufLayout.noNext) {
            let v = el.prefree(m)
            if _fastPath(v == .release) || pool.prefreeSlow(m, v) > 0 { push(m.index, &len) }
        } else {
            length = len
            freeChain(m)
            len = length
        }
    }

    @inlinable @inline(__always)
    func push(_ index: UInt32, _ len: inout Int) {
        if _slowPath(len == capacity) {
            if capacity == 0 { pool.putOne(index); return }
            length = len
            flushChunk()
            len = length
        }
        stack[len] = index
        len &+= 1
    }

    @usableFromInline
    func freeChain(_ m: Mbuf) {
        var len = length
        defer { length = len }
        var seg = m
        var budget = el.count
        while true {
            let next = seg.nextIndex
            let r = pool.prefree(seg)
            if r < 0 { return }
            if r > 0 { push(seg.index, &len) }
            if next == MbufLayout.noNext { return }
            budget &-= 1
            guard next < el.count, budget > 0 else {
                pool.reportBadFree(index: next, double: false,
                                   "mbuf pool \(pool.poolID): chain has a bad next index \(next)")
                return
            }
            seg = el.element(next)
        }
    }

    /// Fills the cache so it holds at least `n` (if the pool has them) plus a chunk to spare:
    /// from the ring first, then from never-used elements.
    @usableFromInline
    func refill(_ n: Int) {
        let want = Swift.min(capacity, n + chunk) - length
        if want <= 0 { return }
        // Off the shared ring: checked before anything pops them (the stack itself is private).
        var got = pool.keepInRange(stack + length, pool.ring.dequeueBurst(stack + length, max: want))
        if got < want {
            let f = pool.takeFresh(want - got)
            var i = 0
            while i < f.count {
                stack[length + got] = f.start &+ UInt32(truncatingIfNeeded: i)
                got += 1
                i += 1
            }
        }
        length += got
    }

    /// Returns the top `chunk` indices to the ring.
    @usableFromInline
    func flushChunk() {
        let n = pool.ring.enqueueBurst(stack + (length - chunk), count: chunk)
        if n < chunk {
            // The ring holds every element, so it is only full after a double insert; drop the rest.
            for i in n..<chunk { pool.ringOverflow(stack[length - chunk + i]) }
        }
        length -= chunk
    }

    /// Returns every cached mbuf to the pool's ring.
    public func flush() {
        guard length > 0 else { return }
        let n = pool.ring.enqueueBurst(stack, count: length)
        if n < length {
            for i in n..<length { pool.ringOverflow(stack[i]) }
        }
        length = 0
    }
}
