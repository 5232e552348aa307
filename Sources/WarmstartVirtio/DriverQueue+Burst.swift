import WarmstartPools

// Driver side, the transmit fast path: a burst of single-segment packets posted as one-descriptor
// chains, and the completed chains taken back as tokens, each in one pass with the queue's state
// in locals (the compiler cannot keep `st` fields in registers across stores into the rings: raw
// stores may alias them). Inlinable, so the loop runs in the caller's module with no call per
// packet (DPDK: virtio_xmit_pkts / virtio_xmit_pkts_packed and their cleanup).

extension DriverQueue {
    /// Writes the transmit virtio-net header (§5.1.6.2) into the `hs` bytes before `m`'s data: the
    /// mbuf's own header fields when it carries offload requests, else all zero; num_buffers is 0
    /// on transmit. The caller has checked that the headroom holds `hs` bytes.
    @inlinable @inline(__always)
    public static func storeTXHeader(_ m: Mbuf, at start: UnsafeMutableRawPointer, headerSize hs: Int) {
        if _fastPath(!m.offload.contains(.vnetHeaderValid)) {
            // Bytes 0..<8 and hs-4..<hs: the whole 12-byte (or legacy 10-byte) header, no branch.
            start.storeBytes(of: UInt64(0), as: UInt64.self)
            start.storeBytes(of: UInt32(0), toByteOffset: hs &- 4, as: UInt32.self)
        } else {
            storeOffloadTXHeader(m, at: start, headerSize: hs)
        }
    }

    @usableFromInline
    static func storeOffloadTXHeader(_ m: Mbuf, at start: UnsafeMutableRawPointer, headerSize hs: Int) {
        var header = m.vnetHeader
        header.numBuffers = 0
        var raw: (UInt64, UInt32) = (0, 0)
        withUnsafeMutableBytes(of: &raw) { header.store(to: $0.baseAddress!) }
        withUnsafeBytes(of: &raw) { start.copyMemory(from: $0.baseAddress!, byteCount: hs) }
    }

    /// Posts `pkts[0..<count]`, in order, each as one device-readable descriptor holding the
    /// virtio-net header (written into the headroom) and the data; token = the mbuf's header
    /// address. Stops at the first packet the fast path cannot take — ring full, a chained mbuf,
    /// headroom shorter than the header, data outside `window` — and returns how many it posted;
    /// the caller takes that packet the general way (`add`) or leaves it. Visible after `publish()`.
    @inlinable
    public func addTXBurst(_ pkts: UnsafePointer<Mbuf>, count: Int, window: GuestWindow) -> Int {
        let n = Swift.min(count, st.pointee.numFree)
        let k = layout == .split ? addSplitTX(pkts, n, window) : addPackedTX(pkts, Swift.min(n, st.pointee.freeIDCount), window)
        st.pointee.numFree &-= k
        return k
    }

    /// Split (§2.6.13): each packet gets the free list's head descriptor, written whole in one
    /// 16-byte store (flags 0: device-readable, last), and an avail ring entry; the avail index
    /// goes out once, in `publish()`.
    @inlinable
    func addSplitTX(_ pkts: UnsafePointer<Mbuf>, _ n: Int, _ window: GuestWindow) -> Int {
        let hs = options.netHeaderSize
        let s = st, chains = self.chains, shadowNext = self.shadowNext
        let ring = split.unsafelyUnwrapped
        var head = s.pointee.freeHead
        var avail = s.pointee.availShadow
        var k = 0
        while k < n {
            let m = pkts[k]
            guard let (addr, len) = Self.prepareTX(m, hs, window) else { break }
            (ring.desc + 16 &* head).storeBytes(of: SIMD2(addr.littleEndian, UInt64(len).littleEndian),
                                                as: SIMD2<UInt64>.self)
            chains[head] = DriverChain(single: m.header, tail: head)
            ring.setAvailEntry(avail, UInt16(truncatingIfNeeded: head))
            avail &+= 1
            head = Int(shadowNext[head])
            k &+= 1
        }
        s.pointee.freeHead = head
        s.pointee.availShadow = avail
        return k
    }

    /// Packed (§2.7.13 "Supplying Buffers to The Device"): a batch makes its first descriptor
    /// available last, so that one gets addr, len and id now and its flags in `publish()`; every
    /// later one is written whole, flags included, in one 16-byte store (the device reads past
    /// the first only once the first is available).
    @inlinable
    func addPackedTX(_ pkts: UnsafePointer<Mbuf>, _ n: Int, _ window: GuestWindow) -> Int {
        let hs = options.netHeaderSize
        let s = st, chains = self.chains, freeIDs = self.freeIDs, size = self.size
        let desc = packed.unsafelyUnwrapped.desc
        var slot = s.pointee.nextAvail
        var wrap = s.pointee.availWrap
        var ids = s.pointee.freeIDCount
        var flags = UInt64(PackedRing.availFlags(wrap: wrap)) << 48
        var k = 0
        if n > 0 && s.pointee.pendingSlot < 0 {
            let m = pkts[0]
            guard let (addr, len) = Self.prepareTX(m, hs, window) else { return 0 }
            ids &-= 1
            let id = freeIDs[ids]
            let p = desc + 16 &* slot
            p.storeBytes(of: addr.littleEndian, as: UInt64.self)
            p.storeBytes(of: len.littleEndian, toByteOffset: 8, as: UInt32.self)
            p.storeBytes(of: id.littleEndian, toByteOffset: 12, as: UInt16.self)
            s.pointee.pendingSlot = slot
            s.pointee.pendingFlags = UInt16(truncatingIfNeeded: flags >> 48)
            chains[Int(id)] = DriverChain(single: m.header, tail: 0)
            slot &+= 1
            if slot == size { slot = 0; wrap.toggle(); flags = UInt64(PackedRing.availFlags(wrap: wrap)) << 48 }
            k = 1
        }
        while k < n {
            let m = pkts[k]
            guard let (addr, len) = Self.prepareTX(m, hs, window) else { break }
            ids &-= 1
            let id = freeIDs[ids]
            let word = UInt64(len) | UInt64(id) << 32 | flags
            (desc + 16 &* slot).storeBytes(of: SIMD2(addr.littleEndian, word.littleEndian), as: SIMD2<UInt64>.self)
            chains[Int(id)] = DriverChain(single: m.header, tail: 0)
            slot &+= 1
            if slot == size { slot = 0; wrap.toggle(); flags = UInt64(PackedRing.availFlags(wrap: wrap)) << 48 }
            k &+= 1
        }
        s.pointee.nextAvail = slot
        s.pointee.availWrap = wrap
        s.pointee.freeIDCount = ids
        return k
    }

    /// The fast path's test and header write for one packet: guest address and length of header
    /// + data, or nil when the packet needs the general path.
    @inlinable @inline(__always)
    static func prepareTX(_ m: Mbuf, _ hs: Int, _ window: GuestWindow) -> (UInt64, UInt32)? {
        guard m.nextIndex == MbufLayout.noNext else { return nil }
        let off = Int(m.dataOffset)
        guard off >= hs else { return nil }
        let start = m.header + (MbufLayout.headerSize &+ off &- hs)
        let len = hs &+ Int(m.dataLength)
        guard let addr = window.guestAddress(of: start, length: len) else { return nil }
        storeTXHeader(m, at: start, headerSize: hs)
        return (addr, UInt32(truncatingIfNeeded: len))
    }

    /// Takes up to `max` completed chains and writes their tokens to `out`, freeing their
    /// descriptors (§2.6.14 / §2.7.1 used flags). Returns how many tokens it wrote and how many
    /// used entries named an id the driver did not post (out of range or not in flight): those
    /// free nothing.
    @inlinable
    public func reapTokens(_ out: UnsafeMutablePointer<UInt64>, max: Int) -> (count: Int, rejected: Int) {
        let (n, taken, freed) = layout == .split ? reapSplit(out, max) : reapPacked(out, max)
        st.pointee.numFree &+= freed
        return (n, taken &- n)
    }

    /// Split (§2.6.14): the used entries between our last position and used idx, read once.
    @inlinable
    func reapSplit(_ out: UnsafeMutablePointer<UInt64>, _ max: Int) -> (Int, Int, Int) {
        let s = st, chains = self.chains, shadowNext = self.shadowNext, size = self.size
        let ring = split.unsafelyUnwrapped
        let first = s.pointee.lastUsedSeen
        let entries = Swift.min(max, Int(ring.loadUsedIndex() &- first))
        var head = s.pointee.freeHead
        var n = 0, freed = 0
        for k in 0..<entries {
            let id = Int(ring.usedElement(first &+ UInt16(truncatingIfNeeded: k)).id)
            if id < size && chains[id].inUse {
                let c = chains[id]
                chains[id].inUse = false
                out[n] = c.token
                n &+= 1
                shadowNext[Int(c.tail)] = UInt16(truncatingIfNeeded: head)
                head = id
                freed &+= Int(c.length)
            }
        }
        s.pointee.lastUsedSeen = first &+ UInt16(truncatingIfNeeded: entries)
        s.pointee.freeHead = head
        return (n, entries, freed)
    }

    /// Packed (§2.7.14 "Receiving Used Buffers From The Device"): used descriptors in ring order,
    /// each one's flags read with acquire, skipping the rest of its chain.
    @inlinable
    func reapPacked(_ out: UnsafeMutablePointer<UInt64>, _ max: Int) -> (Int, Int, Int) {
        let s = st, chains = self.chains, freeIDs = self.freeIDs, size = self.size
        let ring = packed.unsafelyUnwrapped
        var slot = s.pointee.nextUsed
        var wrap = s.pointee.usedWrap
        var ids = s.pointee.freeIDCount
        var n = 0, taken = 0, freed = 0
        let bits = VirtqDescriptorFlags.avail | VirtqDescriptorFlags.used
        var usedBits = PackedRing.usedFlags(wrap: wrap)   // isUsed as one mask and compare
        while taken < max {
            if ring.loadFlags(slot) & bits != usedBits { break }
            taken &+= 1
            let id = Int(UInt16(littleEndian: ring.desc.load(fromByteOffset: 16 &* slot &+ 12, as: UInt16.self)))
            var advance = 1
            if id < size && chains[id].inUse {
                let c = chains[id]
                chains[id].inUse = false
                out[n] = c.token
                n &+= 1
                advance = Int(c.length)
                freeIDs[ids] = UInt16(truncatingIfNeeded: id)
                ids &+= 1
                freed &+= advance
            }
            slot &+= advance
            if slot >= size { slot &-= size; wrap.toggle(); usedBits = PackedRing.usedFlags(wrap: wrap) }
        }
        s.pointee.nextUsed = slot
        s.pointee.usedWrap = wrap
        s.pointee.freeIDCount = ids
        return (n, taken, freed)
    }
}
