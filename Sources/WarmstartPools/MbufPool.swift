import CWarmstartShim
import WarmstartMemory

/// A pool of fixed-size packet buffers at an offset inside a `MemoryRegion`.
///
/// Free state is the free ring plus a bump counter, `nextFresh`: elements in [nextFresh, count)
/// were never handed out. A pristine pool is therefore "ring empty, nextFresh 0", which `restore`
/// writes in O(1) without visiting a single element. Allocation takes from the ring first, then
/// bumps; every allocation writes the whole header, so no header content from an earlier run is
/// trusted. Nothing in shared memory is a pointer: the pool may be mapped at any address.
///
/// Two placements. Inline: control block, free ring and elements one after the other from
/// `offset` in `region` (`MbufPoolConfig.bytesNeeded`). Separate metadata: the control block and
/// ring in `metadataRegion` (`MbufPoolConfig.metadataBytes`), the elements alone from `offset`
/// in `region` (`MbufPoolConfig.elementBytes`) — what the runtime uses, so that the packet region
/// can be given to a peer (a virtio-user back-end) without the pool's own state: a peer that
/// holds a region's fd can write any byte of it.
///
/// Offsets must be multiples of 4096 (elements are page aligned); every size above is a page
/// multiple, so pools can be placed back to back in one region.
///
/// Hot-path methods are `@inlinable` so callers in other modules get them inlined. Dataplane
/// threads should go through an `MbufCache`; the pool's own alloc/free touch the shared ring on
/// every call.
public final class MbufPool: @unchecked Sendable {
    public let config: MbufPoolConfig
    public let poolID: UInt16
    /// Inline: where the pool starts inside `region`. Separate: where its elements start.
    public let offset: Int
    /// The region of the elements (the packet memory); keeps the mapping alive.
    public let region: MemoryRegion
    /// The region of the control block and free ring: `region` itself when inline.
    public let metadataRegion: MemoryRegion
    /// Where the control block starts inside `metadataRegion`.
    public let metadataOffset: Int
    /// The pool's control block, in this process's mapping.
    public let base: UnsafeMutableRawPointer
    public let ringMode: PoolRing.Mode
    let geometry: PoolControl.Geometry

    @usableFromInline let ring: PoolRing
    @usableFromInline let el: PoolElements
    @usableFromInline let elements: UnsafeMutableRawPointer
    @usableFromInline let elementStride: Int
    @usableFromInline let count32: UInt32
    @usableFromInline let headroom16: UInt16
    @usableFromInline let bufferLength16: UInt16
    @usableFromInline let nextFresh: UnsafeMutablePointer<UInt64>
    @usableFromInline let doubleFrees: UnsafeMutablePointer<UInt64>
    @usableFromInline let badFrees: UnsafeMutablePointer<UInt64>
    @usableFromInline let corruptIndices: UnsafeMutablePointer<UInt64>
    /// A bad or double free traps in debug builds (assertionFailure) and is counted in every build;
    /// tests clear this to check the counting without trapping.
    @usableFromInline var trapOnBadFree = true
    /// Frees of mbufs whose headers were wiped (see `lostCount`); private to this process.
    let lostToFault = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)

    /// The metadata lives in a region of its own: `region` can be shared without it.
    public var hasSeparateMetadata: Bool { geometry.separate }

    /// The bytes of `region` that hold the elements: [start, end). All a peer needs to see.
    public var elementRange: Range<Int> {
        let start = elements - region.base
        return start..<(start + geometry.elementBytes)
    }

    private init(config: MbufPoolConfig, site: Site, poolID: UInt16, mode: PoolRing.Mode, geometry g: PoolControl.Geometry) {
        self.config = config
        self.poolID = poolID
        self.offset = site.offset
        self.region = site.region
        self.metadataRegion = site.metadata?.region ?? site.region
        self.metadataOffset = site.metadata?.offset ?? site.offset
        self.ringMode = mode
        self.geometry = g
        let b = metadataRegion.base + metadataOffset
        base = b
        ring = PoolRing(header: b + PoolControl.ringHeaderOffset, slots: b + g.ringOffset,
                        capacity: g.capacity, mode: mode)
        elements = g.separate ? site.region.base + site.offset : b + g.elementsOffset
        elementStride = g.elementSize
        count32 = UInt32(config.count)
        headroom16 = UInt16(config.headroom)
        bufferLength16 = UInt16(config.bufferLength)
        el = PoolElements(base: elements, stride: elementStride, count: count32, poolID: poolID,
                          headroom: headroom16, bufferLength: bufferLength16)
        nextFresh = (b + PoolControl.nextFreshOffset).bindMemory(to: UInt64.self, capacity: 1)
        doubleFrees = (b + PoolControl.doubleFreeOffset).bindMemory(to: UInt64.self, capacity: 1)
        badFrees = (b + PoolControl.badFreeOffset).bindMemory(to: UInt64.self, capacity: 1)
        corruptIndices = (b + PoolControl.corruptIndexOffset).bindMemory(to: UInt64.self, capacity: 1)
        lostToFault.initialize(to: 0)
    }

    deinit { lostToFault.deallocate() }

    /// Where a pool goes: its elements (inline: everything) at `offset` in `region`, and with
    /// separate metadata, its control block and ring at `metadata.offset` in `metadata.region`.
    struct Site {
        var region: MemoryRegion
        var offset: Int
        var metadata: (region: MemoryRegion, offset: Int)?
    }

    /// Checks the config and that each part fits its region, page aligned, not overlapping.
    static func placement(_ config: MbufPoolConfig, _ site: Site, _ poolID: UInt16) throws -> PoolControl.Geometry {
        try config.validate()
        let g = PoolControl.Geometry(config, separate: site.metadata != nil)
        guard let m = site.metadata else {
            try fits(site.region, site.offset, g.totalBytes, poolID)
            return g
        }
        try fits(site.region, site.offset, g.elementBytes, poolID)
        try fits(m.region, m.offset, g.metadataBytes, poolID)
        if m.region === site.region, m.offset < site.offset + g.elementBytes, site.offset < m.offset + g.metadataBytes {
            throw PoolError.invalidConfig(field: "metadata offset", value: m.offset,
                                          reason: "the control block and ring would overlap the elements at \(site.offset)")
        }
        return g
    }

    /// `bytes` from page-aligned `offset` lie inside `region`.
    static func fits(_ region: MemoryRegion, _ offset: Int, _ bytes: Int, _ poolID: UInt16) throws {
        guard offset >= 0, offset % MbufPoolConfig.pageAlignment == 0 else {
            throw PoolError.misalignedOffset(poolID: poolID, offset: offset, alignment: MbufPoolConfig.pageAlignment)
        }
        guard offset <= region.size, bytes <= region.size - offset else {
            throw PoolError.regionTooSmall(poolID: poolID, needed: bytes, offset: offset, regionSize: region.size)
        }
    }

    static func site(_ region: MemoryRegion, _ offset: Int, _ metadata: MemoryRegion?, _ metadataOffset: Int) -> Site {
        Site(region: region, offset: offset, metadata: metadata.map { ($0, metadataOffset) })
    }

    // MARK: lay out, restore, attach

    /// The mbuf init phase: writes each element's identity words (never its data room), then a
    /// pristine control block. Touching every header faults in every page that holds one (all of
    /// them when elementSize ≤ the page size), which is where the time goes.
    /// - Parameter metadata: where the control block and ring go (separate metadata), or nil for
    ///   an inline pool.
    public static func layOut(config: MbufPoolConfig, region: MemoryRegion, offset: Int,
                              metadata: MemoryRegion? = nil, metadataOffset: Int = 0, poolID: UInt16,
                              mode: PoolRing.Mode = .mpmc) throws -> MbufPool {
        let site = site(region, offset, metadata, metadataOffset)
        let g = try placement(config, site, poolID)
        let b = (metadata ?? region).base + (metadata == nil ? offset : metadataOffset)
        // Invalidate first: a crash during the loop must leave a block `attach` rejects.
        ws_store_release_u32(b.bindMemory(to: UInt32.self, capacity: 1), 0)
        writeIdentities(config: config, at: metadata == nil ? b + g.elementsOffset : region.base + offset, poolID: poolID)
        PoolControl.writePristine(at: b, config: config, geometry: g, poolID: poolID)
        return MbufPool(config: config, site: site, poolID: poolID, mode: mode, geometry: g)
    }

    /// Writes the identity words of every element of a pool whose elements start at `offset` in
    /// `region`, and nothing else: a snapshot file holds the elements only, the control block is
    /// written where the pool is restored.
    public static func layOutElements(config: MbufPoolConfig, region: MemoryRegion, offset: Int, poolID: UInt16) throws {
        try config.validate()
        try fits(region, offset, MbufPoolConfig.elementBytes(config), poolID)
        writeIdentities(config: config, at: region.base + offset, poolID: poolID)
    }

    static func writeIdentities(config: MbufPoolConfig, at first: UnsafeMutableRawPointer, poolID: UInt16) {
        var p = first
        let stride = config.elementSize
        let n = UInt32(config.count)
        let len = UInt16(config.bufferLength)
        var i: UInt32 = 0
        while i < n {
            Mbuf(header: p).writeIdentity(index: i, poolID: poolID, bufferLength: len)
            p += stride
            i &+= 1
        }
    }

    /// O(1) restore of a laid-out image (a snapshot, or this pool after arbitrary use): rewrites the
    /// control block pristine (ring empty, nextFresh 0, counters 0). Never reads an element: each
    /// one's header is rewritten when it is next allocated.
    public static func restore(config: MbufPoolConfig, region: MemoryRegion, offset: Int,
                               metadata: MemoryRegion? = nil, metadataOffset: Int = 0, poolID: UInt16,
                               mode: PoolRing.Mode = .mpmc) throws -> MbufPool {
        let site = site(region, offset, metadata, metadataOffset)
        let g = try placement(config, site, poolID)
        PoolControl.writePristine(at: (metadata ?? region).base + (metadata == nil ? offset : metadataOffset),
                                  config: config, geometry: g, poolID: poolID)
        return MbufPool(config: config, site: site, poolID: poolID, mode: mode, geometry: g)
    }

    /// Hot upgrade: adopts a live pool, keeping its ring and bump state, after checking the control
    /// block (magic, version, config, geometry, a quiescent and plausible ring).
    /// - Parameter checkRing: false while the previous owner may still be allocating (a handoff
    ///   attaches before the old process pauses); then call `checkRingQuiescent()` once it has.
    public static func attach(config: MbufPoolConfig, region: MemoryRegion, offset: Int,
                              metadata: MemoryRegion? = nil, metadataOffset: Int = 0, poolID: UInt16,
                              mode: PoolRing.Mode = .mpmc, checkRing: Bool = true) throws -> MbufPool {
        let site = site(region, offset, metadata, metadataOffset)
        let g = try placement(config, site, poolID)
        let at = metadata == nil ? offset : metadataOffset
        try PoolControl.validate(at: (metadata ?? region).base + at, config: config, geometry: g, poolID: poolID,
                                 offset: at, ring: checkRing)
        return MbufPool(config: config, site: site, poolID: poolID, mode: mode, geometry: g)
    }

    /// The ring check `attach(checkRing: false)` left out: quiescent, and holding no more than was
    /// ever handed out. Only once every other user is paused.
    public func checkRingQuiescent() throws {
        try PoolControl.validateRing(at: base, config: config, geometry: geometry, poolID: poolID)
    }

    // MARK: allocation

    /// The element at `index`, without a bounds check.
    @inlinable @inline(__always)
    func element(_ index: UInt32) -> Mbuf { el.element(index) }

    /// The element at `index` after a reset of its whole header.
    @inlinable @inline(__always)
    func initialize(_ index: UInt32) -> Mbuf { el.initialize(index) }

    /// Takes up to `n` never-used elements from the bump counter.
    @inlinable @inline(__always)
    func takeFresh(_ n: Int) -> (start: UInt32, count: Int) {
        let total = UInt64(count32)
        // Once exhausted, do not keep dirtying the shared line.
        if ws_load_relaxed_u64(nextFresh) >= total { return (0, 0) }
        let old = ws_fetch_add_u64(nextFresh, UInt64(n))
        if old >= total { return (0, 0) }
        return (UInt32(truncatingIfNeeded: old), Int(Swift.min(UInt64(n), total - old)))
    }

    /// One mbuf, or nil when the pool is empty.
    @inlinable
    public func alloc() -> Mbuf? {
        while true {
            let r = ring.reserveDequeue(1, exact: true)
            if r.count == 0 { break }
            let index = ring.slot(r.start)
            ring.publishDequeue(start: r.start, count: 1)
            if _fastPath(index < count32) { return initialize(index) }
            dropCorrupt(index) // and take the next one
        }
        let f = takeFresh(1)
        return f.count == 1 ? initialize(f.start) : nil
    }

    /// `n` mbufs into `out`, or none and false (rte_pktmbuf_alloc_bulk). Indices are copied out
    /// of the ring first and headers written after the dequeue is published, so other consumers
    /// are not held up by header stores.
    @inlinable
    public func allocBulk(_ out: UnsafeMutablePointer<Mbuf>, count n: Int) -> Bool {
        if n <= 0 { return n == 0 }
        return withUnsafeTemporaryAllocation(of: UInt32.self, capacity: n) { buffer in
            let indices = buffer.baseAddress!
            var got = keepInRange(indices, ring.dequeueBurst(indices, max: n))
            if got < n {
                let f = takeFresh(n - got)
                var i = 0
                while i < f.count {
                    indices[got] = f.start &+ UInt32(truncatingIfNeeded: i)
                    got += 1
                    i += 1
                }
                if got < n {
                    if got > 0 { putMany(indices, got) } // headers untouched: just give them back
                    return false
                }
            }
            let el = self.el // a local: not reloaded after each header store
            var i = 0
            while i < n {
                out[i] = el.initialize(indices[i])
                i &+= 1
            }
            return true
        }
    }

    /// The first `n` indices at `p`, just taken off the shared ring, with every one outside the
    /// pool dropped (and counted): the ring is in shared memory, so an index read from it is
    /// checked before it becomes a pointer. One compare per index and one branch per burst.
    /// Returns how many are left (in place, in order).
    @inlinable @inline(__always)
    func keepInRange(_ p: UnsafeMutablePointer<UInt32>, _ n: Int) -> Int {
        let limit = count32
        var bad: UInt32 = 0
        var i = 0
        while i < n {
            bad |= p[i] >= limit ? 1 : 0 // no branch per index (measured: cheaper than a max-reduction)
            i &+= 1
        }
        return _fastPath(bad == 0) ? n : dropOutOfRange(p, n)
    }

    @usableFromInline
    func dropOutOfRange(_ p: UnsafeMutablePointer<UInt32>, _ n: Int) -> Int {
        var kept = 0
        for i in 0..<n {
            if p[i] < count32 {
                p[kept] = p[i]
                kept += 1
            } else {
                dropCorrupt(p[i])
            }
        }
        return kept
    }

    /// An index off the free ring that is not one of this pool's elements: the ring's memory was
    /// written by someone else. Counted (`corruptIndexCount`) and dropped, never dereferenced.
    @usableFromInline
    func dropCorrupt(_ index: UInt32) {
        _ = ws_fetch_add_u64(corruptIndices, 1)
    }

    /// Puts one index on the ring. The ring can hold every element, so this only fails when
    /// something was put back twice; the element is then dropped and counted.
    @inlinable @inline(__always)
    func putOne(_ index: UInt32) {
        let r = ring.reserveEnqueue(1, exact: true)
        if r.count == 1 {
            ring.setSlot(r.start, index)
            ring.publishEnqueue(start: r.start, count: 1)
        } else {
            ringOverflow(index)
        }
    }

    @usableFromInline
    func ringOverflow(_ index: UInt32) {
        reportBadFree(index: index, double: false,
                      "mbuf pool \(poolID): free ring full when returning mbuf \(index) (an mbuf was freed twice)")
    }

    // MARK: free

    /// Checks a segment being freed and drops one reference. Returns 1 when the segment must go
    /// back to the free list, 0 when someone still holds it, -1 when the free was bad (counted).
    @inlinable @inline(__always)
    func prefree(_ m: Mbuf) -> Int {
        let v = el.prefree(m)
        return v == .release ? 1 : prefreeSlow(m, v)
    }

    /// The uncommon verdicts: a shared segment, or a bad free to count (and trap on in debug).
    @usableFromInline
    func prefreeSlow(_ m: Mbuf, _ v: FreeVerdict) -> Int {
        switch v {
        case .release: return 1
        case .shared: return dropSharedReference(m)
        case .badIdentity: badIdentity(m); return -1
        case .doubleFree:
            reportBadFree(index: m.index, double: true, "mbuf pool \(poolID): double free of mbuf \(m.index)")
            return -1
        }
    }

    @usableFromInline
    func dropSharedReference(_ m: Mbuf) -> Int {
        let p = (m.header + MbufLayout.refCount).assumingMemoryBound(to: UInt16.self)
        let old = ws_fetch_add_u16(p, 0xFFFF) // - 1
        if old == 1 { return 1 }
        if old == 0 {
            ws_store_relaxed_u16(p, 0)
            reportBadFree(index: m.index, double: true, "mbuf pool \(poolID): double free of mbuf \(m.index)")
            return -1
        }
        return 0
    }

    @usableFromInline
    func badIdentity(_ m: Mbuf) {
        // One of our elements whose header a peer's truncation wiped (the SIGBUS guard mapped zero
        // pages over the region): the mbuf was in flight then and is lost, not a bug here.
        let off = UInt(bitPattern: m.header) &- UInt(bitPattern: elements)
        if off < UInt(count32) &* UInt(elementStride), off % UInt(elementStride) == 0, region.lostToPeer {
            _ = ws_fetch_add_u64(lostToFault, 1)
            return
        }
        reportBadFree(index: m.index, double: false,
                      "mbuf pool \(poolID): free of a buffer that is not one of its mbufs (header \(m.header), "
                      + "index word \(m.index), pool id \(m.poolID), magic 0x\(String(m.magic, radix: 16)))")
    }

    @usableFromInline
    func reportBadFree(index: UInt32, double: Bool, _ message: @autoclosure () -> String) {
        _ = ws_fetch_add_u64(double ? doubleFrees : badFrees, 1)
        if trapOnBadFree { assertionFailure(message()) }
    }

    /// Frees every segment of the chain starting at `m`; each segment goes back when its own
    /// refCount reaches 0 (rte_pktmbuf_free). Bad frees are counted and stop the walk.
    @inlinable
    public func free(_ m: Mbuf) {
        var seg = m
        var budget = count32
        while true {
            let next = seg.nextIndex // before the segment goes back and may be reused
            let r = prefree(seg)
            if r < 0 { return }
            if r > 0 { putOne(seg.index) }
            if next == MbufLayout.noNext { return }
            budget &-= 1
            guard next < count32, budget > 0 else {
                reportBadFree(index: next, double: false, "mbuf pool \(poolID): chain has a bad next index \(next)")
                return
            }
            seg = element(next)
        }
    }

    /// Frees `n` chains. Single segments are gathered and go back to the ring 64 at a time, one
    /// reservation per batch instead of one per mbuf.
    @inlinable
    public func freeBulk(_ ms: UnsafePointer<Mbuf>, count n: Int) {
        withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 64) { buffer in
            let batch = buffer.baseAddress!
            var k = 0
            var i = 0
            while i < n {
                let m = ms[i]
                i &+= 1
                if m.nextIndex != MbufLayout.noNext {
                    free(m)
                } else if prefree(m) > 0 {
                    batch[k] = m.index
                    k &+= 1
                    if k == 64 {
                        putMany(batch, k)
                        k = 0
                    }
                }
            }
            if k > 0 { putMany(batch, k) }
        }
    }

    @inlinable
    func putMany(_ indices: UnsafeMutablePointer<UInt32>, _ n: Int) {
        let put = ring.enqueueBurst(indices, count: n)
        if _slowPath(put < n) {
            for i in put..<n { ringOverflow(indices[i]) }
        }
    }

    // MARK: lookup and counters

    /// The mbuf with element index `index`, or nil when out of range.
    @inlinable
    public func mbuf(at index: UInt32) -> Mbuf? { index < count32 ? element(index) : nil }

    @inlinable
    public func nextSegment(of m: Mbuf) -> Mbuf? {
        let next = m.nextIndex
        return next < count32 ? element(next) : nil
    }

    /// Elements never handed out since lay-out or restore.
    public var neverUsedCount: Int {
        let n = ws_load_relaxed_u64(nextFresh)
        return config.count - Int(Swift.min(n, UInt64(count32)))
    }

    /// Elements on the shared free ring.
    public var ringCount: Int { ring.count }

    /// Ring plus never used (approximate while other threads run). Mbufs sitting in per-thread
    /// caches count as in use until the cache is flushed.
    public var availableCount: Int { ringCount + neverUsedCount }

    public var inUseCount: Int { config.count - availableCount }

    /// Frees of an mbuf whose refCount was already 0.
    public var doubleFreeCount: Int { Int(ws_load_relaxed_u64(doubleFrees)) }

    /// Frees of something that is not one of this pool's mbufs (wrong identity, bad chain), and
    /// elements dropped because the ring was full.
    public var badFreeCount: Int { Int(ws_load_relaxed_u64(badFrees)) }

    /// Indices taken off the free ring that were outside the pool (dropped): nonzero only when
    /// something other than a pool user wrote the ring's shared memory.
    public var corruptIndexCount: Int { Int(ws_load_relaxed_u64(corruptIndices)) }

    /// Mbufs lost to a peer that shrank the shared file behind the pool: they were in flight
    /// when the SIGBUS guard replaced the region with zero pages, so their headers read zeros and
    /// their frees cannot return them (counted here instead of as bad frees; the pool is that
    /// many mbufs smaller from then on).
    public var lostCount: Int { Int(ws_load_relaxed_u64(lostToFault)) }
}
