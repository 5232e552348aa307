import CWarmstartShim
import WarmstartPools
import WarmstartSpec
import WarmstartVirtio

// Driver side, continued: used buffers (§2.6.14 split; packed: §2.7.1 used flags), notifications (§2.6.10, §2.7.10) and
// the packet helpers the mock driver and a virtio-user frontend use.

extension DriverQueue {
    /// Takes up to `max` completed chains. A device-returned id the driver did not post (out of
    /// range or not in flight) is reported with token `UInt64.max` and frees nothing.
    public func reap(_ out: UnsafeMutablePointer<DriverCompletion>, max: Int) -> Int {
        var n = 0
        switch layout {
        case .split:
            let ring = split.unsafelyUnwrapped
            let usedIndex = ring.loadUsedIndex()
            while n < max && lastUsedSeen != usedIndex {
                let (id32, len) = ring.usedElement(lastUsedSeen)
                lastUsedSeen &+= 1
                let id = Int(id32)
                if id < size && chains[id].inUse {
                    let c = chains[id]
                    out[n] = DriverCompletion(token: c.token, length: len, id: UInt16(id))
                    chains[id].inUse = false
                    shadowNext[Int(c.tail)] = UInt16(truncatingIfNeeded: freeHead)
                    freeHead = id
                    numFree += Int(c.length)
                } else {
                    out[n] = DriverCompletion(token: .max, length: len, id: UInt16(truncatingIfNeeded: id32))
                }
                n += 1
            }
        case .packed:
            let ring = packed.unsafelyUnwrapped
            while n < max {
                let f = ring.loadFlags(nextUsed)
                if !PackedRing.isUsed(f, wrap: usedWrap) { break }
                let d = ring.descriptor(nextUsed, flags: f)
                let id = Int(d.id)
                var advance = 1
                if id < size && chains[id].inUse {
                    out[n] = DriverCompletion(token: chains[id].token, length: d.len, id: d.id)
                    chains[id].inUse = false
                    advance = Int(chains[id].length)
                    freeIDs[freeIDCount] = d.id
                    freeIDCount += 1
                    numFree += advance
                } else {
                    out[n] = DriverCompletion(token: .max, length: d.len, id: d.id)
                }
                nextUsed += advance
                if nextUsed >= size { nextUsed -= size; usedWrap.toggle() }
                n += 1
            }
        }
        return n
    }

    /// After `publish()`: whether the device wants a kick (§2.6.10 / §2.7.10). Covers
    /// everything published since the previous call.
    public func needsKick() -> Bool {
        ws_fence_seq_cst()
        switch layout {
        case .split:
            let ring = split.unsafelyUnwrapped
            let old = kickedAvail
            let new = availShadow
            kickedAvail = new
            if old == new { return false }
            if options.eventIndex { return virqNeedEventDriver(ring.availEvent, new, old) }
            return ring.usedFlags & SplitVirtqueue.usedNoNotify == 0
        case .packed:
            let ring = packed.unsafelyUnwrapped
            let (offWrap, flags) = PackedRing.loadEvent(ring.deviceEvent)
            let new = nextAvail
            var old = kickedSlot
            let moved = kickedSlot != nextAvail || kickedWrap != availWrap
            kickedSlot = nextAvail
            kickedWrap = availWrap
            if !moved || flags == PackedVirtqueue.eventFlagsDisable { return false }
            if flags == PackedVirtqueue.eventFlagsDesc && options.eventIndex {
                if new <= old { old -= size }
                var off = Int(offWrap & 0x7FFF)
                if (offWrap >> 15 != 0) != availWrap { off -= size }
                return virqNeedEventDriver(UInt16(truncatingIfNeeded: off), UInt16(truncatingIfNeeded: new),
                                           UInt16(truncatingIfNeeded: old))
            }
            return true
        }
    }

    @inline(__always)
    func virqNeedEventDriver(_ e: UInt16, _ n: UInt16, _ o: UInt16) -> Bool { virtqNeedEvent(event: e, new: n, old: o) }

    /// Asks for a used-buffer notification once `count` more chains have been used (EVENT_IDX:
    /// used_event / desc mode), or for every one (`count` 1 without EVENT_IDX).
    public func requestCall(afterUsed count: Int = 1) {
        switch layout {
        case .split:
            let ring = split.unsafelyUnwrapped
            if options.eventIndex { ring.usedEvent = lastUsedSeen &+ UInt16(truncatingIfNeeded: count - 1) }
            ring.availFlags = 0
        case .packed:
            let ring = packed.unsafelyUnwrapped
            if options.eventIndex {
                var slot = nextUsed + count - 1
                var w = usedWrap
                while slot >= size { slot -= size; w.toggle() }
                PackedRing.storeEvent(ring.driverEvent, offWrap: UInt16(slot) | (w ? 0x8000 : 0),
                                      flags: PackedVirtqueue.eventFlagsDesc)
            } else {
                PackedRing.storeEvent(ring.driverEvent, offWrap: 0, flags: PackedVirtqueue.eventFlagsEnable)
            }
        }
        ws_fence_seq_cst()
    }

    /// Asks for no used-buffer notifications (the driver polls).
    public func disableCalls() {
        switch layout {
        case .split: split.unsafelyUnwrapped.availFlags = SplitVirtqueue.availNoInterrupt
        case .packed:
            PackedRing.storeEvent(packed.unsafelyUnwrapped.driverEvent, offWrap: 0, flags: PackedVirtqueue.eventFlagsDisable)
        }
    }

    // MARK: packets

    /// Posts a TX packet: the virtio-net header is written into the mbuf's headroom, in front of
    /// the data, so header and first segment are one descriptor; one descriptor per further
    /// segment. The mbufs must lie in guest memory (`memory`). Token is the head mbuf's index.
    @discardableResult
    public func addTX(_ m: Mbuf, pool: MbufSource, memory: GuestMemoryMap,
                      scratch: UnsafeMutablePointer<DriverBuffer>, scratchCapacity: Int) -> UInt16? {
        let hs = options.netHeaderSize
        guard m.headroom >= hs else { return nil }
        let start = m.data - hs
        DriverQueue.storeTXHeader(m, at: start, headerSize: hs)
        guard let g = memory.guestAddress(of: start, length: hs + Int(m.dataLength)) else { return nil }
        scratch[0] = DriverBuffer(addr: g, len: UInt32(hs + Int(m.dataLength)), writable: false)
        var n = 1
        var s = m
        while s.nextIndex != MbufLayout.noNext, let next = pool.nextSegment(of: s) {
            s = next
            guard n < scratchCapacity,
                  let ga = memory.guestAddress(of: s.data, length: max(Int(s.dataLength), 1)) else { return nil }
            scratch[n] = DriverBuffer(addr: ga, len: UInt32(s.dataLength), writable: false)
            n += 1
        }
        return add(scratch, count: n, token: UInt64(m.index))
    }

    /// Posts one device-writable receive buffer.
    @discardableResult
    public func addRX(addr: UInt64, len: UInt32, token: UInt64) -> UInt16? {
        var b = DriverBuffer(addr: addr, len: len, writable: true)
        return add(&b, count: 1, token: token)
    }

    /// Posts an mbuf's whole room (from its data start, minus room for the header in front) as
    /// one device-writable receive buffer; token = the mbuf's index. The mbuf must lie in guest
    /// memory. Complete it with `finishRX`.
    @discardableResult
    public func addRX(_ m: Mbuf, memory: GuestMemoryMap) -> UInt16? {
        let hs = options.netHeaderSize
        guard m.headroom >= hs else { return nil }
        let start = m.data - hs
        let room = hs + m.tailroom + Int(m.dataLength)
        guard room > hs else { return nil } // a header a peer rewrote (buffer length under the offset)
        guard let g = memory.guestAddress(of: start, length: room) else { return nil }
        return addRX(addr: g, len: UInt32(room), token: UInt64(m.index))
    }

    /// Turns a used receive buffer posted by `addRX(_:memory:)` into packet data: data length
    /// from the used length (the header is in front of the data), and for the first buffer of a
    /// packet the virtio-net header and offload flags. Returns the header's num_buffers (how many
    /// buffers, this one included, the packet spans with MRG_RXBUF), or nil for a used length
    /// shorter than the header. Continuation buffers (`first` false) carry data only.
    public func finishRX(_ m: Mbuf, usedLength: UInt32, first: Bool = true) -> UInt16? {
        let hs = options.netHeaderSize
        if !first {
            m.dataOffset = m.dataOffset &- UInt16(hs) // the whole buffer is data
            m.dataLength = UInt16(truncatingIfNeeded: min(Int(usedLength), Int(m.bufferLength) - Int(m.dataOffset)))
            m.packetLength = UInt32(m.dataLength)
            return 0
        }
        guard Int(usedLength) >= hs else { return nil }
        var header = VirtioNetHeader(loadingFrom: UnsafeRawPointer(m.data - hs))
        if hs < VirtioNetHeader.size { header.numBuffers = 1 }
        m.dataLength = UInt16(truncatingIfNeeded: min(Int(usedLength) - hs, m.tailroom + Int(m.dataLength)))
        m.packetLength = UInt32(m.dataLength)
        var flags: MbufOffload = .vnetHeaderValid
        if header.flags & VirtioNetHeader.flagNeedsCsum != 0 { flags.insert(.needsChecksum) }
        if header.flags & VirtioNetHeader.flagDataValid != 0 { flags.insert(.dataValid) }
        if header.gsoType != VirtioNetHeader.gsoNone { flags.insert(.gso) }
        m.offload = flags
        m.vnetHeader = header
        return header.numBuffers
    }

    // MARK: test hooks (hostile drivers)

    /// Split: puts a raw head index in the avail ring (no bookkeeping); visible after `publish()`.
    public func postRawHead(_ head: UInt16) {
        split.unsafelyUnwrapped.setAvailEntry(availShadow, head)
        availShadow &+= 1
    }

    /// Split: publishes an arbitrary avail idx.
    public func publishRawAvailIndex(_ idx: UInt16) { split.unsafelyUnwrapped.storeAvailIndex(idx) }

    /// The avail index (split shadow) / next avail slot (packed) and wrap counter.
    public var availPosition: (index: Int, wrap: Bool) {
        layout == .split ? (Int(availShadow), true) : (nextAvail, availWrap)
    }
}
