import CWarmstartShim
import WarmstartPools
import WarmstartSpec

// Mbufs → guest RX (the device writes driver-supplied buffers, §5.1.6.3, §5.1.6.4).
//
// Per burst: (1) reserve chains for each packet — one chain that must hold header + packet, or,
// with VIRTIO_NET_F_MRG_RXBUF, as many chains as it takes (num_buffers = their count); (2) copy
// header then data, consecutively, across the reserved pieces; (3) publish the used entries once.
// A packet the guest has no room for yet stops the burst and is left to the caller.

/// Where the next available chain comes from; one conformer per layout, so the reservation loop is
/// specialised per layout at compile time (no per-packet layout test).
protocol AvailChainCursor {
    /// Walks the next available chain into `info` (writable buffers); false when none is available.
    mutating func next(_ dev: VirtqueueDevice, cursor: inout Int, info: inout ChainInfo) -> Bool
}

struct SplitAvailCursor: AvailChainCursor {
    let ring: SplitRing
    let base: UInt16
    let pending: Int
    var taken = 0
    @inline(__always)
    mutating func next(_ dev: VirtqueueDevice, cursor: inout Int, info: inout ChainInfo) -> Bool {
        if taken >= pending { return false }
        let head = ring.availEntry(base &+ UInt16(truncatingIfNeeded: taken))
        taken &+= 1
        if Int(head) >= dev.size {
            info = ChainInfo()
            info.id = head
            info.error = Int8(ChainError.indexOutOfRange.rawValue)
            info.segmentStart = Int32(truncatingIfNeeded: cursor)
            info.segmentEnd = info.segmentStart
            return true
        }
        dev.walkSplitChain(ring: ring, head: head, writable: true, cursor: &cursor, info: &info)
        return true
    }
}

struct PackedAvailCursor: AvailChainCursor {
    let ring: PackedRing
    var slot: Int
    var wrap: Bool
    @inline(__always)
    mutating func next(_ dev: VirtqueueDevice, cursor: inout Int, info: inout ChainInfo) -> Bool {
        let f = ring.loadFlags(slot)
        if !PackedRing.isAvailable(f, wrap: wrap) { return false }
        if !dev.walkPackedChain(ring: ring, slot: slot, firstFlags: f, writable: true, cursor: &cursor, info: &info) {
            dev.markBroken(.packedChainEndless(slot: slot))
            return false
        }
        slot &+= Int(info.descriptorCount)
        if slot >= dev.size { slot &-= dev.size; wrap.toggle() }
        return true
    }
}

/// Writes bytes consecutively across the pieces of a packet's reserved chains, never past them,
/// and adds what it wrote to each chain's used length.
struct ScatterCursor {
    var chain: Int
    let endChain: Int
    var seg: Int
    var off = 0

    @inline(__always)
    mutating func put(_ dev: VirtqueueDevice, _ source: UnsafeRawPointer, _ count: Int) -> Int {
        var src = source
        var left = count
        while left > 0 {
            while seg == Int(dev.chains[chain].segmentEnd) {
                chain &+= 1
                if chain >= endChain { return count &- left }
                seg = Int(dev.chains[chain].segmentStart)
                off = 0
            }
            let s = dev.segments[seg]
            let n = min(left, s.length &- off)
            (s.host + off).copyMemory(from: src, byteCount: n)
            dev.chains[chain].usedLength &+= UInt32(truncatingIfNeeded: n)
            src += n
            left &-= n
            off &+= n
            if off == s.length { seg &+= 1; off = 0 }
        }
        return count
    }
}

extension VirtqueueDevice {
    /// Copies up to a burst of packets into the guest's receive buffers. Returns how many leading
    /// packets of `packets` were handled — delivered, or dropped and counted (bad chain, too
    /// large); the rest found no guest buffer and were not attempted. The caller keeps ownership
    /// of every mbuf (free or retry them).
    public func enqueueBurst(pool: MbufSource, _ packets: UnsafePointer<Mbuf>, count: Int) -> Int {
        if st.pointee.broken || count <= 0 { return 0 }
        let want = min(count, options.burstSize)
        switch layout {
        case .split:
            let ring = split.unsafelyUnwrapped
            guard let (simple, more) = enqueueSplitSimple(ring, packets, want) else {
                return enqueueSplitGeneral(ring, pool, packets, want)
            }
            if !more { return simple }
            return simple &+ enqueueSplitGeneral(ring, pool, packets + simple, want &- simple)
        case .packed:
            let ring = packed.unsafelyUnwrapped
            guard let (simple, more) = enqueuePackedSimple(ring, packets, want) else {
                return enqueuePackedGeneral(ring, pool, packets, want)
            }
            if !more { return simple }
            return simple &+ enqueuePackedGeneral(ring, pool, packets + simple, want &- simple)
        }
    }

    func enqueueSplitGeneral(_ ring: SplitRing, _ pool: MbufSource, _ packets: UnsafePointer<Mbuf>, _ want: Int) -> Int {
        if want <= 0 { return 0 }
        let availIndex = ring.loadAvailIndex()
        let pending = Int(availIndex &- lastAvailIndex)
        if pending > size {
            markBroken(.availIndexTooFarAhead(availIndex: availIndex, lastAvailIndex: lastAvailIndex))
            return 0
        }
        if pending == 0 { return 0 }
        var c = SplitAvailCursor(ring: ring, base: lastAvailIndex, pending: pending)
        let (handled, chainCount) = reserve(&c, packets, want)
        copyIn(pool, packets, handled)
        var used = lastUsedIndex
        for k in 0..<chainCount {
            let ch = chains[k]
            if Int(ch.id) >= size { continue } // a head out of range has no id to return
            ring.setUsedElement(used, id: UInt32(ch.id), len: ch.usedLength)
            used &+= 1
        }
        lastAvailIndex &+= UInt16(truncatingIfNeeded: c.taken)
        if used != lastUsedIndex {
            ring.storeUsedIndex(used)
            lastUsedIndex = used
        }
        if options.eventIndex && notificationsEnabled { ring.availEvent = lastAvailIndex }
        return handled
    }

    /// Split counterpart of `enqueuePackedSimple`: heads whose descriptor is one direct,
    /// device-writable buffer in one region with room for the header and a one-segment packet.
    /// Nil when the run is empty or the avail index is bad (the full path marks the queue broken).
    @inline(__always)
    func enqueueSplitSimple(_ ring: SplitRing, _ packets: UnsafePointer<Mbuf>, _ want: Int) -> (Int, Bool)? {
        if netHeaderSize != 12 { return nil }
        let hs = 12
        let availIndex = ring.loadAvailIndex()
        let pending = Int(availIndex &- lastAvailIndex)
        if pending == 0 { return (0, false) }
        if pending > size { return nil }
        let avail = min(pending, want)
        let mask = VirtqDescriptorFlags.next | VirtqDescriptorFlags.indirect | VirtqDescriptorFlags.write
        let base = lastAvailIndex
        var k = 0
        var more = false
        while k < avail {
            let m = packets[k]
            if m.nextIndex != mbufNoNext { more = true; break }
            let head = ring.availEntry(base &+ UInt16(truncatingIfNeeded: k))
            if Int(head) >= size { more = true; break }
            let d = ring.descriptor(Int(head))
            // The header is in memory a virtio-user peer may share and rewrite: its data length is
            // read once here, checked, and pass 2 copies what was checked (the used length).
            let used = hs &+ Int(m.dataLength)
            if d.flags & mask != VirtqDescriptorFlags.write || Int(d.len) < used { more = true; break }
            guard let p = memory.translate(d.addr, UInt64(d.len)) else { more = true; break }
            prefetchBuffer(p, used, writable: true)
            segments[k] = Segment(host: p, length: Int(d.len))
            chains[k].usedLength = UInt32(truncatingIfNeeded: used)
            chains[k].id = head
            k &+= 1
        }
        if k == 0 { return nil }
        writeSimpleRX(packets, k)
        var used = lastUsedIndex
        for i in 0..<k {
            ring.setUsedElement(used, id: UInt32(chains[i].id), len: chains[i].usedLength)
            used &+= 1
        }
        ring.storeUsedIndex(used)
        lastUsedIndex = used
        lastAvailIndex = base &+ UInt16(truncatingIfNeeded: k)
        if options.eventIndex && notificationsEnabled { ring.availEvent = lastAvailIndex }
        return (k, more)
    }

    func enqueuePackedGeneral(_ ring: PackedRing, _ pool: MbufSource, _ packets: UnsafePointer<Mbuf>, _ want: Int) -> Int {
        if want <= 0 { return 0 }
        var c = PackedAvailCursor(ring: ring, slot: Int(lastAvailIndex), wrap: availWrapCounter)
        let (handled, chainCount) = reserve(&c, packets, want)
        copyIn(pool, packets, handled)
        publishPackedUsed(ring, chainCount, advanceAvail: true)
        if options.eventIndex && notificationsEnabled && chainCount > 0 { armPackedKick(ring) }
        return handled
    }

    /// The common packed receive burst in two tight passes: a one-segment packet into one direct,
    /// device-writable descriptor (in one region) that holds the 12-byte header and the frame —
    /// with or without MRG_RXBUF, num_buffers is then 1. Pass 1 reads and checks the descriptors
    /// (id < queue size, whole-range translation) and starts pulling each buffer; pass 2 writes
    /// header and frame. The first packet or descriptor that is anything else ends the run and is
    /// left to the full path. Nil when the run is empty (nothing consumed); else (packets
    /// delivered, whether the full path should continue the burst).
    @inline(__always)
    func enqueuePackedSimple(_ ring: PackedRing, _ packets: UnsafePointer<Mbuf>, _ want: Int) -> (Int, Bool)? {
        if netHeaderSize != 12 { return nil }
        let hs = 12
        let n = size
        var slot = Int(lastAvailIndex)
        var wrap = availWrapCounter
        let mask: UInt16 = VirtqDescriptorFlags.avail | VirtqDescriptorFlags.used
            | VirtqDescriptorFlags.next | VirtqDescriptorFlags.write | VirtqDescriptorFlags.indirect
        var expect = PackedRing.availFlags(wrap: wrap) | VirtqDescriptorFlags.write
        var k = 0
        var more = false
        while k < want {
            let m = packets[k]
            if m.nextIndex != mbufNoNext { more = true; break }
            let f = ring.loadFlags(slot)
            if f & mask != expect {
                more = PackedRing.isAvailable(f, wrap: wrap)
                break
            }
            let d = ring.descriptor(slot, flags: f)
            let used = hs &+ Int(m.dataLength) // read once: see the split path
            if Int(d.id) >= n || Int(d.len) < used { more = true; break }
            guard let p = memory.translate(d.addr, UInt64(d.len)) else { more = true; break }
            prefetchBuffer(p, used, writable: true)
            segments[k] = Segment(host: p, length: Int(d.len))
            chains[k].usedLength = UInt32(truncatingIfNeeded: used)
            chains[k].id = d.id
            chains[k].descriptorCount = 1
            k &+= 1
            slot &+= 1
            if slot == n { slot = 0; wrap.toggle(); expect = PackedRing.availFlags(wrap: wrap) | VirtqDescriptorFlags.write }
        }
        if k == 0 { return nil }
        writeSimpleRX(packets, k)
        publishPackedUsed(ring, k, advanceAvail: true)
        if options.eventIndex && notificationsEnabled { armPackedKick(ring) }
        return (k, more)
    }

    /// Pass 2 of the simple receive paths: packet `i` (one segment) into `segments[i]` — the
    /// header raw from the mbuf's virtio-net field (bytes 40..51) or zeros, num_buffers 1, then the
    /// frame of the length pass 1 checked and put in `chains[i].usedLength` (with the header).
    @inline(__always)
    func writeSimpleRX(_ packets: UnsafePointer<Mbuf>, _ k: Int) {
        let hs = 12
        var bytes: UInt64 = 0
        for i in 0..<k {
            let m = packets[i]
            let g = segments[i].host
            if m.offload.rawValue & 1 != 0 { // vnetHeaderValid: the mbuf's header field, raw (bytes 40..51)
                let hb = UnsafeRawPointer(m.header + 40)
                g.storeBytes(of: hb.load(as: UInt64.self), as: UInt64.self)
                g.storeBytes(of: hb.load(fromByteOffset: 8, as: UInt16.self), toByteOffset: 8, as: UInt16.self)
            } else {
                g.storeBytes(of: 0, as: UInt64.self)
                g.storeBytes(of: 0, toByteOffset: 8, as: UInt16.self)
            }
            g.storeBytes(of: UInt16(1).littleEndian, toByteOffset: 10, as: UInt16.self) // num_buffers
            // The length pass 1 read and checked against the buffer, never the header's again.
            let frame = Int(chains[i].usedLength) &- hs
            ws_copy(g + hs, m.data, frame)
            bytes &+= UInt64(frame)
        }
        st.pointee.packets &+= UInt64(k)
        st.pointee.bytes &+= bytes
    }

    /// Phase 1: reserves chains for packets `0..<want`. Returns the packets handled and the chains
    /// taken (only chains of handled packets; a packet that could not be given all its chains
    /// gives them back to the ring untouched).
    @inline(__always)
    func reserve<C: AvailChainCursor>(_ c: inout C, _ packets: UnsafePointer<Mbuf>, _ want: Int) -> (Int, Int) {
        let mergeable = options.mergeableRxBuffers
        var cursor = 0
        var taken = 0
        var p = 0
        outer: while p < want {
            let needed = netHeaderSize &+ Int(packets[p].packetLength)
            let saved = c
            let first = taken
            var capacity = 0
            var dropped = false
            repeat {
                if taken >= chainCapacity { c = saved; taken = first; break outer }
                var info = ChainInfo()
                if !c.next(self, cursor: &cursor, info: &info) {
                    c = saved; taken = first
                    break outer
                }
                if info.error == Int8(ChainError.tooFragmented.rawValue) && p > 0 {
                    c = saved; taken = first // scratch full: the rest next burst
                    break outer
                }
                chains[taken] = info
                taken &+= 1
                if info.error >= 0 {
                    count(ChainError(rawValue: Int(info.error))!)
                    dropped = true
                    break
                }
                capacity &+= info.capacity
                if !mergeable && capacity < needed {
                    count(.packetTooLarge)
                    dropped = true
                    break
                }
            } while capacity < needed
            if dropped {
                for k in first..<taken { chains[k].usedLength = 0; chains[k].segmentEnd = chains[k].segmentStart }
                packetChains[p] = (Int32(truncatingIfNeeded: first), 0)
            } else {
                packetChains[p] = (Int32(truncatingIfNeeded: first), Int32(truncatingIfNeeded: taken &- first))
            }
            p &+= 1
        }
        return (p, taken)
    }

    /// Phase 2: header (num_buffers = chains used) and data of each packet that got its chains.
    @inline(__always)
    func copyIn(_ pool: MbufSource, _ packets: UnsafePointer<Mbuf>, _ n: Int) {
        for p in 0..<n {
            let (first, chainCount) = packetChains[p]
            if chainCount == 0 { continue }
            let m = packets[p]
            // §5.1.6.4: without MRG_RXBUF the device sets num_buffers to 1.
            let numBuffers = options.mergeableRxBuffers ? UInt16(truncatingIfNeeded: chainCount) : 1
            let fc = Int(first)
            var s = ScatterCursor(chain: fc, endChain: fc &+ Int(chainCount), seg: Int(chains[fc].segmentStart))
            let hs = netHeaderSize
            let hasPiece = chains[fc].segmentEnd > chains[fc].segmentStart
            let firstPiece = hasPiece ? segments[s.seg] : Segment(host: UnsafeMutableRawPointer(bitPattern: 1)!, length: 0)
            if hs == VirtioNetHeader.size && firstPiece.length >= hs {
                // The usual case: the header goes straight into the first piece, copied raw from
                // the mbuf's header field (the same little-endian layout; bytes 40..51), or zeros.
                let g = firstPiece.host
                if m.offload.rawValue & 1 != 0 { // vnetHeaderValid
                    let hb = UnsafeRawPointer(m.header + 40) // MbufLayout.vnetFlags
                    g.storeBytes(of: hb.load(as: UInt64.self), as: UInt64.self)
                    g.storeBytes(of: hb.load(fromByteOffset: 8, as: UInt16.self), toByteOffset: 8, as: UInt16.self)
                } else {
                    g.storeBytes(of: 0, as: UInt64.self)
                    g.storeBytes(of: 0, toByteOffset: 8, as: UInt16.self)
                }
                g.storeBytes(of: numBuffers.littleEndian, toByteOffset: 10, as: UInt16.self)
                chains[fc].usedLength &+= UInt32(hs)
                if firstPiece.length == hs { s.seg &+= 1 } else { s.off = hs }
            } else {
                var header = m.offload.rawValue & 1 != 0 ? m.vnetHeader : VirtioNetHeader() // vnetHeaderValid
                header.numBuffers = numBuffers
                var raw: (UInt64, UInt32) = (0, 0)
                withUnsafeMutableBytes(of: &raw) { header.store(to: $0.baseAddress!) }
                _ = withUnsafeBytes(of: &raw) { s.put(self, $0.baseAddress!, hs) }
            }
            var seg = m
            var total = 0
            let dataLength = Int(m.dataLength)
            if s.chain == fc && s.seg == Int(chains[fc].segmentStart) && s.off == hs && m.nextIndex == mbufNoNext && firstPiece.length &- hs >= dataLength {
                // Fast path: one mbuf segment into the rest of the first piece.
                ws_copy(firstPiece.host + hs, m.data, dataLength)
                chains[fc].usedLength &+= UInt32(truncatingIfNeeded: dataLength)
                st.pointee.packets &+= 1
                st.pointee.bytes &+= UInt64(dataLength)
                continue
            }
            // At most 65535 segments (segmentCount's range): a chain whose links loop — headers a
            // peer's truncation wiped read next = 0, element 0's too — must not hang this thread.
            var budget = 0xFFFF
            while true {
                total &+= s.put(self, UnsafeRawPointer(seg.data), Int(seg.dataLength))
                budget &-= 1
                if seg.nextIndex == mbufNoNext || budget == 0 { break }
                guard let next = pool.nextSegment(of: seg) else { break }
                seg = next
            }
            st.pointee.packets &+= 1
            st.pointee.bytes &+= UInt64(total)
        }
    }
}
