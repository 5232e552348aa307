import CWarmstartShim
import WarmstartPools
import WarmstartSpec

// Guest TX → mbufs (the device reads driver-written buffers, §2.6.8 used ring / §2.7.1 packed used descriptors, §5.1.6.2).
//
// Three phases per burst: (1) walk up to a burst of chains, collecting host pieces into the
// per-queue scratch; (2) take head mbufs in bulk and copy — header first (it may be split across
// descriptors), then data, chaining mbufs when a frame outgrows one data room (Dequeue+Copy.swift);
// (3) return every consumed chain to the used ring with len 0 and publish once.

/// `MbufLayout.noNext`, spelled here so the hot loops need no cross-module global.
@usableFromInline let mbufNoNext: UInt32 = 0xFFFF_FFFF

/// Longest frame accepted from a guest: a 64 KiB GSO frame plus link headers.
public let virtioMaxPacketLength = 65_536 + 32

extension VirtqueueDevice {
    /// Takes up to `maxCount` packets the guest transmitted, as mbufs (chained for large frames)
    /// with their virtio-net header in `vnetHeader`. Bad chains are dropped, returned to the
    /// guest, and counted. Returns how many mbufs were written to `out`.
    public func dequeueBurst(pool: MbufSource, into out: UnsafeMutablePointer<Mbuf>, maxCount: Int) -> Int {
        if st.pointee.broken || maxCount <= 0 { return 0 }
        let want = min(maxCount, options.burstSize)
        switch layout {
        case .split: return dequeueSplit(split.unsafelyUnwrapped, pool, out, want)
        case .packed: return dequeuePacked(packed.unsafelyUnwrapped, pool, out, want)
        }
    }

    func dequeueSplit(_ ring: SplitRing, _ pool: MbufSource, _ out: UnsafeMutablePointer<Mbuf>, _ want: Int) -> Int {
        guard let (produced, taken, more) = dequeueSplitSimple(ring, pool, out, want) else {
            return dequeueSplitGeneral(ring, pool, out, want)
        }
        if !more { return produced }
        return produced &+ dequeueSplitGeneral(ring, pool, out + produced, want &- taken)
    }

    /// Split counterpart of `dequeuePackedSimple`: heads whose descriptor is one direct,
    /// device-readable buffer in one region holding the header and a frame. Nil when the run is
    /// empty, the avail index is bad (the full walk marks the queue broken) or mbufs are short.
    @inline(__always)
    func dequeueSplitSimple(_ ring: SplitRing, _ pool: MbufSource, _ out: UnsafeMutablePointer<Mbuf>,
                            _ want: Int) -> (Int, Int, Bool)? {
        if netHeaderSize != 12 { return nil }
        let hs = 12
        let availIndex = ring.loadAvailIndex()
        let pending = Int(availIndex &- lastAvailIndex)
        if pending == 0 { return (0, 0, false) }
        if pending > size { return nil }
        let avail = min(pending, want)
        let special = VirtqDescriptorFlags.next | VirtqDescriptorFlags.indirect | VirtqDescriptorFlags.write
        let base = lastAvailIndex
        var k = 0
        var more = false
        while k < avail {
            let head = ring.availEntry(base &+ UInt16(truncatingIfNeeded: k))
            if Int(head) >= size { more = true; break }
            let d = ring.descriptor(Int(head))
            let len = Int(d.len)
            if d.flags & special != 0 || len < hs || len &- hs > virtioMaxPacketLength { more = true; break }
            guard let p = memory.translate(d.addr, UInt64(d.len)) else { more = true; break }
            prefetchBuffer(p, len, writable: false)
            segments[k] = Segment(host: p, length: len)
            chains[k].id = head
            k &+= 1
        }
        if k == 0 || !pool.allocBulk(mbufs, count: k) { return nil }
        let produced = copySimpleTX(pool, out, k)
        var used = lastUsedIndex
        for i in 0..<k {
            ring.setUsedElement(used, id: UInt32(chains[i].id), len: 0)
            used &+= 1
        }
        ring.storeUsedIndex(used)
        lastUsedIndex = used
        lastAvailIndex = base &+ UInt16(truncatingIfNeeded: k)
        if options.eventIndex && notificationsEnabled { ring.availEvent = lastAvailIndex }
        return (produced, k, more)
    }

    func dequeueSplitGeneral(_ ring: SplitRing, _ pool: MbufSource, _ out: UnsafeMutablePointer<Mbuf>, _ want: Int) -> Int {
        if want <= 0 { return 0 }
        let availIndex = ring.loadAvailIndex()
        let pending = Int(availIndex &- lastAvailIndex)
        if pending > size {
            markBroken(.availIndexTooFarAhead(availIndex: availIndex, lastAvailIndex: lastAvailIndex))
            return 0
        }
        var n = min(pending, want)
        if n == 0 { return 0 }
        // Phase 1: walk.
        var cursor = 0
        var walked = 0
        while walked < n {
            let head = ring.availEntry(lastAvailIndex &+ UInt16(truncatingIfNeeded: walked))
            var info = ChainInfo()
            if Int(head) >= size {
                info.id = head
                info.error = Int8(ChainError.indexOutOfRange.rawValue)
            } else {
                walkSplitChain(ring: ring, head: head, writable: false, cursor: &cursor, info: &info)
                if info.error == Int8(ChainError.tooFragmented.rawValue) && walked > 0 { break } // next burst
            }
            checkHeader(&info, &cursor)
            chains[walked] = info
            walked &+= 1
        }
        n = walked
        // Phase 2: copy.
        let (consumed, produced) = copyOut(pool, out, n)
        // Phase 3: used ring, once. Chains whose head index was out of range have no id to return.
        var used = lastUsedIndex
        for k in 0..<consumed {
            let c = chains[k]
            if c.error == Int8(ChainError.indexOutOfRange.rawValue) && Int(c.id) >= size { continue }
            ring.setUsedElement(used, id: UInt32(c.id), len: 0)
            used &+= 1
        }
        lastAvailIndex &+= UInt16(truncatingIfNeeded: consumed)
        if used != lastUsedIndex {
            ring.storeUsedIndex(used)
            lastUsedIndex = used
        }
        if options.eventIndex && notificationsEnabled { ring.availEvent = lastAvailIndex }
        return produced
    }

    func dequeuePacked(_ ring: PackedRing, _ pool: MbufSource, _ out: UnsafeMutablePointer<Mbuf>, _ want: Int) -> Int {
        guard let (produced, taken, more) = dequeuePackedSimple(ring, pool, out, want) else {
            return dequeuePackedGeneral(ring, pool, out, want)
        }
        // The simple run stopped at an available descriptor it does not take: the full walk
        // continues the burst from there.
        if !more { return produced }
        return produced &+ dequeuePackedGeneral(ring, pool, out + produced, want &- taken)
    }

    func dequeuePackedGeneral(_ ring: PackedRing, _ pool: MbufSource, _ out: UnsafeMutablePointer<Mbuf>, _ want: Int) -> Int {
        if want <= 0 { return 0 }
        var slot = Int(lastAvailIndex)
        var wrap = availWrapCounter
        var cursor = 0
        var walked = 0
        while walked < want {
            let f = ring.loadFlags(slot)
            if !PackedRing.isAvailable(f, wrap: wrap) { break }
            var info = ChainInfo()
            let start = cursor
            if !walkPackedChain(ring: ring, slot: slot, firstFlags: f, writable: false, cursor: &cursor, info: &info) {
                markBroken(.packedChainEndless(slot: slot))
                cursor = start
                break
            }
            if info.error == Int8(ChainError.tooFragmented.rawValue) && walked > 0 { break }
            checkHeader(&info, &cursor)
            chains[walked] = info
            walked &+= 1
            slot &+= Int(info.descriptorCount)
            if slot >= size { slot &-= size; wrap.toggle() }
        }
        if walked == 0 { return 0 }
        let (consumed, produced) = copyOut(pool, out, walked)
        returnPackedTX(ring, consumed)
        return produced
    }

    /// The common packed burst in two tight passes: descriptors that are one direct, device-readable
    /// buffer in one region, holding the 12-byte header and a frame. Every check of the full walk
    /// applies (direction, id < queue size, whole-range translation, header length); the first
    /// descriptor that is anything else — chained, indirect, writable, bad — ends the simple run and
    /// is left for the full walk, which counts and returns bad chains. Returns nil when the run is
    /// empty or mbufs are short, so the caller takes the full walk (nothing was consumed); else
    /// (mbufs produced, descriptors taken, whether an available descriptor it did not take follows).
    @inline(__always)
    func dequeuePackedSimple(_ ring: PackedRing, _ pool: MbufSource, _ out: UnsafeMutablePointer<Mbuf>,
                             _ want: Int) -> (Int, Int, Bool)? {
        if netHeaderSize != 12 { return nil }
        let hs = 12
        let n = size
        var slot = Int(lastAvailIndex)
        var wrap = availWrapCounter
        // AVAIL/USED bits as an available descriptor of this lap has them, and NEXT, WRITE and
        // INDIRECT clear: one compare per descriptor.
        let mask: UInt16 = VirtqDescriptorFlags.avail | VirtqDescriptorFlags.used
            | VirtqDescriptorFlags.next | VirtqDescriptorFlags.write | VirtqDescriptorFlags.indirect
        var expect = PackedRing.availFlags(wrap: wrap)
        var k = 0
        var more = false
        while k < want {
            let f = ring.loadFlags(slot)
            if f & mask != expect {
                more = PackedRing.isAvailable(f, wrap: wrap)
                break
            }
            let d = ring.descriptor(slot, flags: f)
            let len = Int(d.len)
            if len < hs || len &- hs > virtioMaxPacketLength || Int(d.id) >= n { more = true; break }
            guard let p = memory.translate(d.addr, UInt64(d.len)) else { more = true; break }
            prefetchBuffer(p, len, writable: false)
            segments[k] = Segment(host: p, length: len)
            chains[k].id = d.id
            chains[k].descriptorCount = 1
            chains[k].usedLength = 0
            k &+= 1
            slot &+= 1
            if slot == n { slot = 0; wrap.toggle(); expect = PackedRing.availFlags(wrap: wrap) }
        }
        if k == 0 || !pool.allocBulk(mbufs, count: k) { return nil }
        let produced = copySimpleTX(pool, out, k)
        returnPackedTX(ring, k)
        return (produced, k, more)
    }

    /// EVENT_IDX, packed (§2.7.10): ask for a kick once the driver makes the next slot available.
    @inline(__always)
    func armPackedKick(_ ring: PackedRing) {
        let offWrap = lastAvailIndex | (availWrapCounter ? 0x8000 : 0)
        PackedRing.storeEvent(ring.deviceEvent, offWrap: offWrap, flags: PackedVirtqueue.eventFlagsDesc)
    }

    /// Gives the guest-TX chains `0..<n` back (one used descriptor for the burst with IN_ORDER,
    /// one per chain otherwise) and, with EVENT_IDX, asks for the next kick.
    @inline(__always)
    func returnPackedTX(_ ring: PackedRing, _ n: Int) {
        if options.inOrder {
            publishPackedUsedInOrder(ring, n)
        } else {
            publishPackedUsed(ring, n, advanceAvail: true)
        }
        if options.eventIndex && notificationsEnabled { armPackedKick(ring) }
    }

    /// IN_ORDER (§2.7.9): the chains `0..<n` were used in the order the driver made them available,
    /// so one used descriptor, written where the batch starts with the buffer id of its last chain,
    /// reports all of them; the device then skips forward past every descriptor of the batch. Guest
    /// TX only (used length 0): the driver learns nothing per buffer that this drops. One cache line
    /// crosses to the driver per burst instead of one per four descriptors.
    func publishPackedUsedInOrder(_ ring: PackedRing, _ n: Int) {
        if n == 0 { return }
        let firstSlot = Int(lastUsedIndex)
        let firstFlags = PackedRing.usedFlags(wrap: usedWrapCounter)
        var descriptors = 0
        for k in 0..<n { descriptors &+= Int(chains[k].descriptorCount) }
        ring.setUsedBody(firstSlot, id: chains[n &- 1].id, len: 0)
        ring.storeFlags(firstSlot, firstFlags)
        var slot = firstSlot &+ descriptors
        var wrap = usedWrapCounter
        while slot >= size { slot &-= size; wrap.toggle() }
        lastUsedIndex = UInt16(truncatingIfNeeded: slot)
        usedWrapCounter = wrap
        var a = Int(lastAvailIndex) &+ descriptors
        var aw = availWrapCounter
        while a >= size { a &-= size; aw.toggle() }
        lastAvailIndex = UInt16(truncatingIfNeeded: a)
        availWrapCounter = aw
    }

    /// Writes the used descriptors of chains `0..<n` (packed, §2.7.1) — ids and lengths first, the
    /// first descriptor's flags last with release, so the driver sees the burst at once — and
    /// moves the avail position past them when `advanceAvail`.
    func publishPackedUsed(_ ring: PackedRing, _ n: Int, advanceAvail: Bool) {
        if n == 0 { return }
        var slot = Int(lastUsedIndex)
        var wrap = usedWrapCounter
        // Usually both positions stand together (nothing in flight): then avail follows used.
        let inStep = advanceAvail && lastAvailIndex == lastUsedIndex && availWrapCounter == wrap
        let firstSlot = slot
        let firstFlags = PackedRing.usedFlags(wrap: wrap)
        for k in 0..<n {
            let c = chains[k]
            ring.setUsedBody(slot, id: c.id, len: c.usedLength)
            if k > 0 { ring.storeFlags(slot, PackedRing.usedFlags(wrap: wrap)) }
            slot &+= Int(c.descriptorCount)
            if slot >= size { slot &-= size; wrap.toggle() }
        }
        ring.storeFlags(firstSlot, firstFlags)
        lastUsedIndex = UInt16(truncatingIfNeeded: slot)
        usedWrapCounter = wrap
        if inStep {
            lastAvailIndex = lastUsedIndex
            availWrapCounter = wrap
        } else if advanceAvail {
            // The same chains, in the same order, leave the avail side (in-flight chains handed
            // over by a hot upgrade may keep the two positions apart).
            var a = Int(lastAvailIndex)
            var aw = availWrapCounter
            for k in 0..<n {
                a &+= Int(chains[k].descriptorCount)
                if a >= size { a &-= size; aw.toggle() }
            }
            lastAvailIndex = UInt16(truncatingIfNeeded: a)
            availWrapCounter = aw
        }
    }
}
