import CWarmstartShim

/// The pool's control block: the first bytes at the pool's offset. Everything in it is an offset,
/// an index or a counter, never a pointer, so another process (or this one after a restart) may map
/// it anywhere.
///
///     line 0  identity: magic "WSPL", layout version, config, capacity, offsets, pool id
///     line 1  nextFresh: elements [nextFresh, count) were never handed out (bump allocator)
///     line 2  ring producer head      line 3  ring producer tail
///     line 4  ring consumer head      line 5  ring consumer tail
///     line 6  bad-free counters
///     then the ring slots (UInt32 element indices), then, page aligned, the elements.
///
/// Heads, tails and counters each get their own cache line so producers and consumers on different
/// cores do not bounce one line between them.
public enum PoolControl {
    /// "WSPL" read as a big-endian number, like MbufLayout.identityMagic.
    public static let magic: UInt32 = 0x5753_504C
    public static let layoutVersion: UInt32 = 1

    // Line 0.
    static let magicOffset = 0            // UInt32, written last with release
    static let versionOffset = 4          // UInt32
    static let countOffset = 8            // UInt64
    static let headroomOffset = 16        // UInt32
    static let dataRoomOffset = 20        // UInt32
    static let cacheSizeOffset = 24       // UInt32
    static let elementSizeOffset = 28     // UInt32
    static let capacityOffset = 32        // UInt64
    static let ringOffsetOffset = 40      // UInt32
    static let poolIDOffset = 44          // UInt16
    static let elementsOffsetOffset = 48  // UInt64
    static let flagsOffset = 56           // UInt32: Flags (then 4 bytes of 0)
    // Line 1.
    static let nextFreshOffset = 64       // UInt64
    // Lines 2...5: the ring's heads and tails (PoolRing.headerBytes).
    static let ringHeaderOffset = 128
    // Line 6.
    static let doubleFreeOffset = 384     // UInt64
    static let badFreeOffset = 392        // UInt64
    static let corruptIndexOffset = 400   // UInt64: out-of-range indices found on the ring

    public static let size = 448

    /// Bits of the flags word (0 in blocks written before it existed: inline).
    enum Flags {
        /// The elements live in another region (`Geometry.separate`).
        static let separateElements: UInt32 = 1
    }

    /// Where each part lives. Inline (the original layout): control block, ring, then the
    /// elements, all from the pool base. Separate: the control block and ring (the metadata) in a
    /// region of their own, never shared with a peer, and the elements from their own offset in
    /// the packet region (issue 12: a virtio-user back-end maps the packet memory only).
    struct Geometry: Equatable {
        var ringOffset: Int
        var capacity: Int
        /// Inline: where the elements start, from the pool base. Separate: 0 (they start at the
        /// elements' own offset).
        var elementsOffset: Int
        var elementSize: Int
        /// Inline: control block, ring and elements. Separate: control block and ring only.
        var totalBytes: Int
        /// Control block and ring, page aligned.
        var metadataBytes: Int
        /// The elements, page aligned.
        var elementBytes: Int
        var separate: Bool

        init(_ c: MbufPoolConfig, separate: Bool = false) {
            capacity = c.ringCapacity
            ringOffset = PoolControl.size
            let ringEnd = ringOffset + MbufPoolConfig.roundUp(capacity * 4, MbufPoolConfig.cacheLine)
            metadataBytes = MbufPoolConfig.roundUp(ringEnd, MbufPoolConfig.pageAlignment)
            elementSize = c.elementSize
            elementBytes = MbufPoolConfig.roundUp(c.count * elementSize, MbufPoolConfig.pageAlignment)
            self.separate = separate
            elementsOffset = separate ? 0 : metadataBytes
            totalBytes = separate ? metadataBytes : metadataBytes + elementBytes
        }
    }

    /// Writes the identity line and pristine state: ring empty, nextFresh 0, counters 0.
    /// The magic goes last (release), so a crash half way leaves a block `attach` rejects.
    static func writePristine(at p: UnsafeMutableRawPointer, config c: MbufPoolConfig, geometry g: Geometry,
                              poolID: UInt16) {
        ws_store_release_u32(p.assumingMemoryBound(to: UInt32.self), 0)
        p.storeBytes(of: layoutVersion, toByteOffset: versionOffset, as: UInt32.self)
        p.storeBytes(of: UInt64(c.count), toByteOffset: countOffset, as: UInt64.self)
        p.storeBytes(of: UInt32(c.headroom), toByteOffset: headroomOffset, as: UInt32.self)
        p.storeBytes(of: UInt32(c.dataRoom), toByteOffset: dataRoomOffset, as: UInt32.self)
        p.storeBytes(of: UInt32(c.cacheSize), toByteOffset: cacheSizeOffset, as: UInt32.self)
        p.storeBytes(of: UInt32(g.elementSize), toByteOffset: elementSizeOffset, as: UInt32.self)
        p.storeBytes(of: UInt64(g.capacity), toByteOffset: capacityOffset, as: UInt64.self)
        p.storeBytes(of: UInt32(g.ringOffset), toByteOffset: ringOffsetOffset, as: UInt32.self)
        p.storeBytes(of: poolID, toByteOffset: poolIDOffset, as: UInt16.self)
        p.storeBytes(of: 0, toByteOffset: poolIDOffset + 2, as: UInt16.self)
        p.storeBytes(of: 0, toByteOffset: 36, as: UInt32.self)
        p.storeBytes(of: UInt64(g.elementsOffset), toByteOffset: elementsOffsetOffset, as: UInt64.self)
        p.storeBytes(of: UInt64(g.separate ? Flags.separateElements : 0), toByteOffset: flagsOffset, as: UInt64.self)
        p.storeBytes(of: 0, toByteOffset: nextFreshOffset, as: UInt64.self)
        PoolRing.resetHeader(p + ringHeaderOffset)
        p.storeBytes(of: 0, toByteOffset: doubleFreeOffset, as: UInt64.self)
        p.storeBytes(of: 0, toByteOffset: badFreeOffset, as: UInt64.self)
        p.storeBytes(of: 0, toByteOffset: corruptIndexOffset, as: UInt64.self)
        ws_store_release_u32(p.assumingMemoryBound(to: UInt32.self), magic)
    }

    /// Checks a live control block against what the caller expects (for `attach`): its layout,
    /// then its ring (`validateRing`) unless the owner may still be using it.
    static func validate(at p: UnsafeMutableRawPointer, config c: MbufPoolConfig, geometry g: Geometry,
                         poolID: UInt16, offset: Int, ring: Bool = true) throws {
        let found = ws_load_acquire_u32(p.assumingMemoryBound(to: UInt32.self))
        guard found == magic else { throw PoolError.badMagic(poolID: poolID, offset: offset, found: found) }
        let version = p.load(fromByteOffset: versionOffset, as: UInt32.self)
        guard version == layoutVersion else {
            throw PoolError.layoutVersionMismatch(poolID: poolID, found: version, expected: layoutVersion)
        }
        func check(_ field: String, _ stored: Int, _ expected: Int) throws {
            if stored != expected {
                throw PoolError.configMismatch(poolID: poolID, field: field, stored: stored, expected: expected)
            }
        }
        try check("poolID", Int(p.load(fromByteOffset: poolIDOffset, as: UInt16.self)), Int(poolID))
        try check("count", Int(truncatingIfNeeded: p.load(fromByteOffset: countOffset, as: UInt64.self)), c.count)
        try check("headroom", Int(p.load(fromByteOffset: headroomOffset, as: UInt32.self)), c.headroom)
        try check("dataRoom", Int(p.load(fromByteOffset: dataRoomOffset, as: UInt32.self)), c.dataRoom)
        try check("cacheSize", Int(p.load(fromByteOffset: cacheSizeOffset, as: UInt32.self)), c.cacheSize)
        try check("elementSize", Int(p.load(fromByteOffset: elementSizeOffset, as: UInt32.self)), g.elementSize)
        try check("ringCapacity", Int(truncatingIfNeeded: p.load(fromByteOffset: capacityOffset, as: UInt64.self)),
                  g.capacity)
        try check("ringOffset", Int(p.load(fromByteOffset: ringOffsetOffset, as: UInt32.self)), g.ringOffset)
        try check("separateElements", Int(p.load(fromByteOffset: flagsOffset, as: UInt32.self) & Flags.separateElements),
                  g.separate ? Int(Flags.separateElements) : 0)
        try check("elementsOffset",
                  Int(truncatingIfNeeded: p.load(fromByteOffset: elementsOffsetOffset, as: UInt64.self)),
                  g.elementsOffset)
        if ring { try validateRing(at: p, config: c, geometry: g, poolID: poolID) }
    }

    /// The ring must be quiescent and hold no more than was ever handed out.
    static func validateRing(at p: UnsafeMutableRawPointer, config c: MbufPoolConfig, geometry g: Geometry,
                             poolID: UInt16) throws {
        let h = p + ringHeaderOffset
        let ph = h.load(fromByteOffset: PoolRing.prodHeadOffset, as: UInt64.self)
        let pt = h.load(fromByteOffset: PoolRing.prodTailOffset, as: UInt64.self)
        let ch = h.load(fromByteOffset: PoolRing.consHeadOffset, as: UInt64.self)
        let ct = h.load(fromByteOffset: PoolRing.consTailOffset, as: UInt64.self)
        guard ph == pt else {
            throw PoolError.corruptRing(poolID: poolID, reason: "producer head \(ph) != producer tail \(pt) "
                                        + "(an enqueue was in flight or the block is damaged)")
        }
        guard ch == ct else {
            throw PoolError.corruptRing(poolID: poolID, reason: "consumer head \(ch) != consumer tail \(ct) "
                                        + "(a dequeue was in flight or the block is damaged)")
        }
        guard ct <= pt, pt - ct <= UInt64(g.capacity) else {
            throw PoolError.corruptRing(poolID: poolID, reason: "producer tail \(pt) and consumer tail \(ct) "
                                        + "do not describe 0...\(g.capacity) entries")
        }
        let fresh = min(p.load(fromByteOffset: nextFreshOffset, as: UInt64.self), UInt64(c.count))
        guard pt - ct <= fresh else {
            throw PoolError.corruptRing(poolID: poolID, reason: "ring holds \(pt - ct) entries but only \(fresh) "
                                        + "mbufs were ever handed out")
        }
    }
}
