import CWarmstartShim
import WarmstartPools
import WarmstartSpec

// Guest TX → mbufs (the device reads driver-written buffers, §2.6.8 used ring / §2.7.1 packed used descriptors, §5.1.6.2).
//
// Three phases per burst: (1) walk up to a burst of chains, collecting host pieces into the
// per-queue scratch; (2) take head mbufs in bulk and copy — header first (it may be split across
// descriptors), then data, chaining mbufs when a frame outgrows one data room; (3) return every
// consumed chain to the used ring with len 0 and publish once.

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

    /// Pass 2 of the simple guest-TX paths: `segments[0..<k]` (header + frame each) into the `k`
    /// mbufs in `mbufs`, header raw into the mbuf's virtio-net field (bytes 40..51, same layout).
    /// A frame larger than one mbuf goes through the general copy (chained); one that cannot get
    /// its segments is dropped and counted, and so is one whose header fails
    /// `virtioNetHeaderIsValid`. Returns the mbufs written to `out`.
    ///
    /// The header is read from guest memory exactly once, into two registers: the check, the
    /// copy into the mbuf and the offload flags all use those values, so a guest that rewrites
    /// its buffer meanwhile cannot get a header past the check that differs from the one checked.
    @inline(__always)
    func copySimpleTX(_ pool: MbufSource, _ out: UnsafeMutablePointer<Mbuf>, _ k: Int) -> Int {
        let hs = 12
        let offloads = guestSendsOffloads
        var produced = 0
        var bytes: UInt64 = 0
        for i in 0..<k {
            let m = mbufs[i]
            let sg = segments[i]
            let src = UnsafeRawPointer(sg.host)
            let frame = sg.length &- hs
            let h0 = src.loadUnaligned(as: UInt64.self)
            let h1 = src.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
            // The usual header is all zero but num_buffers: valid whatever was negotiated, and its
            // offload flags are just vnetHeaderValid. One or, one test per frame; anything else
            // takes the full check, out of line.
            var flags: UInt64 = 1
            if h0 | UInt64(truncatingIfNeeded: h1 & 0xFFFF) != 0 {
                if !checkedNetHeader(h0, h1, frameLength: frame, offloads: offloads) {
                    dropBadHeader(m, pool)
                    continue
                }
                flags = Self.offloadFlags(h0)
            }
            let hb = m.header + 40
            hb.storeBytes(of: h0, as: UInt64.self)
            hb.storeBytes(of: h1, toByteOffset: 8, as: UInt32.self)
            // Before the copy, so nothing of the header stays live across its call (the chained
            // copy below sets the same flags again from the mbuf's copy).
            m.offload = MbufOffload(rawValue: flags)
            if frame <= m.tailroom {
                ws_copy(m.data, src + hs, frame)
                m.dataLength = UInt16(truncatingIfNeeded: frame)
                m.packetLength = UInt32(truncatingIfNeeded: frame)
            } else {
                // Larger than one mbuf (a GSO frame): the general copy chains segments. The header
                // is in the mbuf and checked already: it copies only the frame.
                var c = ChainInfo()
                c.id = chains[i].id
                c.descriptorCount = 1
                c.segmentStart = Int32(truncatingIfNeeded: i)
                c.segmentEnd = Int32(truncatingIfNeeded: i &+ 1)
                c.capacity = sg.length
                c.error = -1
                if copyChain(c, into: m, pool, headerCopied: true) != .copied {
                    pool.free(m)
                    st.pointee.allocFailures &+= 1
                    st.pointee.dropped &+= 1
                    continue
                }
            }
            out[produced] = m
            produced &+= 1
            bytes &+= UInt64(frame)
        }
        st.pointee.packets &+= UInt64(produced)
        st.pointee.bytes &+= bytes
        return produced
    }

    /// Whether this queue's guest may send a non-trivial header (an offload was negotiated); read
    /// once per burst. A literal mask: no global accessor on the hot path.
    @inline(__always)
    var guestSendsOffloads: Bool { options.features.rawValue & (1 | 0xF << 11 | 1 << 56) != 0 }

    /// A frame whose header failed the check: its mbuf back to the pool, counted by name. Out of
    /// line: the simple loop keeps its registers.
    @inline(never)
    func dropBadHeader(_ m: Mbuf, _ pool: MbufSource) {
        pool.free(m)
        count(.badNetHeader)
    }

    /// `virtioNetHeaderIsValid` on values already read (the one place the dequeue paths check a
    /// header: a unit test calls it to show the decision depends on these values only).
    @inline(__always)
    func checkedNetHeader(_ h0: UInt64, _ h1: UInt32, frameLength: Int, offloads: Bool) -> Bool {
        virtioNetHeaderIsValid(h0, h1, frameLength: frameLength, offloads: offloads)
    }

    /// `MbufOffload` bits from a header's first 8 bytes, spelled as literals (the library's static
    /// lets are not inlinable and would cost a global accessor call per packet): vnetHeaderValid,
    /// NEEDS_CSUM → needsChecksum, DATA_VALID → dataValid, a gso_type → gso.
    @inline(__always)
    static func offloadFlags(_ h0: UInt64) -> UInt64 {
        1 | (h0 & 3) << 1 | (h0 & 0xFF00 != 0 ? 1 << 3 : 0)
    }

    /// Refuses a good chain too short for the net header (before any subtraction), and one too long.
    @inline(__always)
    func checkHeader(_ info: inout ChainInfo, _ cursor: inout Int) {
        if info.error >= 0 { count(ChainError(rawValue: Int(info.error))!); return }
        if info.capacity < netHeaderSize {
            fail(&info, .headerTooShort, &cursor)
            count(.headerTooShort)
        } else if info.capacity - netHeaderSize > virtioMaxPacketLength {
            fail(&info, .packetTooLong, &cursor)
            count(.packetTooLong)
        }
    }

    /// Copies the walked chains `0..<n` into mbufs. Returns how many chains were consumed (a
    /// shortage of mbufs stops early, leaving the rest in the ring) and how many mbufs produced.
    func copyOut(_ pool: MbufSource, _ out: UnsafeMutablePointer<Mbuf>, _ n: Int) -> (Int, Int) {
        var good = 0
        for k in 0..<n where chains[k].error < 0 { good &+= 1 }
        var bulk = good > 0 && pool.allocBulk(mbufs, count: good)
        var taken = 0
        var produced = 0
        var k = 0
        while k < n {
            let c = chains[k]
            if c.error >= 0 { k &+= 1; continue }
            let head: Mbuf
            if bulk {
                head = mbufs[taken]
                taken &+= 1
            } else if let m = pool.alloc() {
                head = m
            } else {
                st.pointee.allocFailures &+= 1
                bulk = false
                return (k, produced)
            }
            switch copyChain(c, into: head, pool, headerCopied: false) {
            case .copied:
                out[produced] = head
                produced &+= 1
                st.pointee.packets &+= 1
                st.pointee.bytes &+= UInt64(c.capacity &- netHeaderSize)
            case .noMbuf:
                pool.free(head)
                st.pointee.allocFailures &+= 1
                st.pointee.dropped &+= 1
            case .badHeader:
                pool.free(head)
                count(.badNetHeader)
            }
            k &+= 1
        }
        return (n, produced)
    }

    /// How `copyChain` ended.
    @usableFromInline enum ChainCopy { case copied, noMbuf, badHeader }

    /// Header then data, from the chain's pieces into `head` (+ segments as needed). The header is
    /// checked on its copy in the mbuf, before any data is copied, and the offload flags are taken
    /// from that same copy. With `headerCopied` the caller has put a checked header in the mbuf
    /// already and the chain is one piece that starts with it (the simple paths' large frames).
    @inline(__always)
    func copyChain(_ c: ChainInfo, into head: Mbuf, _ pool: MbufSource, headerCopied: Bool) -> ChainCopy {
        var seg = Int(c.segmentStart)
        var off = 0
        // The header goes straight into the mbuf's 12-byte virtio-net header field (the same
        // little-endian layout): two loads and two stores when the first piece holds it (the usual
        // case), else gathered byte by byte (it may straddle pieces; a legacy 10-byte header
        // leaves num_buffers 0).
        let hb = head.header + 40 // MbufLayout.vnetFlags (a literal: no cross-module global access)
        let first = segments[seg]
        if headerCopied {
            off = netHeaderSize
        } else if netHeaderSize == VirtioNetHeader.size && first.length >= VirtioNetHeader.size {
            let src = UnsafeRawPointer(first.host)
            hb.storeBytes(of: src.loadUnaligned(as: UInt64.self), as: UInt64.self)
            hb.storeBytes(of: src.loadUnaligned(fromByteOffset: 8, as: UInt32.self), toByteOffset: 8, as: UInt32.self)
            off = VirtioNetHeader.size
            if off == first.length { seg &+= 1; off = 0 }
        } else {
            hb.storeBytes(of: 0, as: UInt64.self)
            hb.storeBytes(of: 0, toByteOffset: 8, as: UInt32.self)
            var got = 0
            while got < netHeaderSize {
                let s = segments[seg]
                let n = min(netHeaderSize &- got, s.length &- off)
                (hb + got).copyMemory(from: s.host + off, byteCount: n)
                got &+= n
                off &+= n
                if off == s.length { seg &+= 1; off = 0 }
            }
        }
        let total = c.capacity &- netHeaderSize
        // Guest-controlled values from here on come from the copy, never from guest memory.
        let h0 = hb.loadUnaligned(as: UInt64.self)
        if !headerCopied {
            let h1 = hb.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
            if !checkedNetHeader(h0, h1, frameLength: total, offloads: guestSendsOffloads) { return .badHeader }
        }
        var m = head
        var dst = m.data
        var room = m.tailroom
        var filled = 0
        var segmentCount: UInt16 = 1
        var left = total
        m.dataLength = 0
        m.nextIndex = mbufNoNext
        let end = Int(c.segmentEnd)
        if end == seg &+ 1 && total <= room {
            // Fast path: the data is one piece and fits the head mbuf.
            ws_copy(dst, segments[seg].host + off, total)
            filled = total
            left = 0
        }
        while left > 0 && seg < end {
            let s = segments[seg]
            var avail = s.length &- off
            var src = s.host + off
            while avail > 0 {
                // `while`, not `if`, and `<=`: tail room comes from a header a virtio-user peer
                // may rewrite, so a negative one (offset + length over the buffer) is none.
                while room <= 0 {
                    m.dataLength = UInt16(truncatingIfNeeded: filled)
                    guard let next = pool.alloc() else {
                        head.segmentCount = segmentCount
                        return .noMbuf
                    }
                    next.dataLength = 0
                    next.nextIndex = mbufNoNext
                    m.nextIndex = next.index
                    m = next
                    segmentCount &+= 1
                    dst = m.data
                    room = m.tailroom
                    filled = 0
                }
                let n = min(avail, room)
                dst.copyMemory(from: src, byteCount: n)
                dst += n
                src += n
                room &-= n
                filled &+= n
                avail &-= n
                left &-= n
            }
            seg &+= 1
            off = 0
        }
        m.dataLength = UInt16(truncatingIfNeeded: filled)
        head.packetLength = UInt32(truncatingIfNeeded: total)
        head.segmentCount = segmentCount
        head.offload = MbufOffload(rawValue: Self.offloadFlags(h0))
        return .copied
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
