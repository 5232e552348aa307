import WarmstartPools
import WarmstartSpec
import WarmstartVirtio

// Driver side, the burst paths: single-segment packets (transmit) or whole mbuf rooms (receive)
// posted as one-descriptor chains, and completed chains taken back as tokens, each burst in one
// pass with the queue's state in locals (the compiler cannot keep `st` fields in registers across
// stores into the rings: raw stores may alias them). Inlinable, so the loop runs in the caller's
// module with no call per packet (DPDK: virtio_xmit_pkts / virtio_xmit_pkts_packed and their
// cleanup, virtqueue_enqueue_recv_refill).

extension DriverQueue {
    /// Writes the transmit virtio-net header (§5.1.6.2) into the `hs` bytes before `m`'s data: the
    /// mbuf's own header fields when it carries offload requests, else all zero; num_buffers is 0
    /// on transmit. The caller has checked that the headroom holds `hs` bytes.
    @inlinable @inline(__always)
    public static func storeTXHeader(_ m: Mbuf, at start: UnsafeMutableRawPointer, headerSize hs: Int) {
        if _fastPath(!m.offload.contains(.vnetHeaderValid)) {
            // Bytes 0..<8 and hs-4..<hs cover the whole 12-byte (or legacy 10-byte) header. A
            // recycled buffer we sent before already holds zeros: then the line is left clean,
            // and the device reads it from its own cache instead of pulling it from ours.
            let lo = start.loadUnaligned(as: UInt64.self)
            let hi = start.loadUnaligned(fromByteOffset: hs &- 4, as: UInt32.self)
            if lo | UInt64(hi) != 0 {
                start.storeBytes(of: UInt64(0), as: UInt64.self)
                start.storeBytes(of: UInt32(0), toByteOffset: hs &- 4, as: UInt32.self)
            }
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
        addSingles(pkts, count, writable: false, TXBuffers(headerSize: options.netHeaderSize, window: window))
    }

    /// Posts each of `bufs[0..<count]` as one device-writable buffer of `length` bytes starting
    /// `offset` bytes into the mbuf (from its header); token = the mbuf's header address.
    /// Stops at a full ring or a buffer outside `window`; returns how many it posted.
    @inlinable
    public func addRXBurst(_ bufs: UnsafePointer<Mbuf>, count: Int, offset: Int, length: UInt32,
                           window: GuestWindow) -> Int {
        addSingles(bufs, count, writable: true, RXBuffers(offset: offset, length: length, window: window))
    }

    /// One-descriptor chains for `pkts[0..<count]` up to the first one `buffer` refuses (nil) or
    /// the end of the free descriptors / ids; `buffer` gives each one's guest address and length
    /// (a generic, not a closure: specialised and inlined, it costs no call per packet).
    @inlinable @inline(__always)
    func addSingles<B: SingleBuffers>(_ pkts: UnsafePointer<Mbuf>, _ count: Int, writable: Bool, _ buffer: B) -> Int {
        let n = Swift.min(count, st.pointee.numFree)
        let flags = writable ? VirtqDescriptorFlags.write : 0
        let k = layout == .split ? addSplit(pkts, n, flags, buffer)
                                 : addPacked(pkts, Swift.min(n, st.pointee.freeIDCount), flags, buffer)
        st.pointee.numFree &-= k
        return k
    }

    /// Split (§2.6.13): each buffer gets the free list's head descriptor, written whole in one
    /// 16-byte store (no NEXT: a chain of one), and an avail ring entry; the avail index goes out
    /// once, in `publish()`.
    @inlinable @inline(__always)
    func addSplit<B: SingleBuffers>(_ pkts: UnsafePointer<Mbuf>, _ n: Int, _ flags: UInt16, _ buffer: B) -> Int {
        let s = st, chains = self.chains, shadowNext = self.shadowNext
        let ring = split.unsafelyUnwrapped
        var head = s.pointee.freeHead
        var avail = s.pointee.availShadow
        let word = UInt64(flags) << 32
        var k = 0
        while k < n {
            let m = pkts[k]
            guard let (addr, len) = buffer.buffer(m) else { break }
            (ring.desc + 16 &* head).storeBytes(of: SIMD2(addr.littleEndian, (UInt64(len) | word).littleEndian),
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
    @inlinable @inline(__always)
    func addPacked<B: SingleBuffers>(_ pkts: UnsafePointer<Mbuf>, _ n: Int, _ flags: UInt16, _ buffer: B) -> Int {
        let s = st, chains = self.chains, freeIDs = self.freeIDs, size = self.size
        let desc = packed.unsafelyUnwrapped.desc
        var slot = s.pointee.nextAvail
        var wrap = s.pointee.availWrap
        var ids = s.pointee.freeIDCount
        var f = UInt64(flags | PackedRing.availFlags(wrap: wrap)) << 48
        var k = 0
        if n > 0 && s.pointee.pendingSlot < 0 {
            let m = pkts[0]
            guard let (addr, len) = buffer.buffer(m) else { return 0 }
            ids &-= 1
            let id = freeIDs[ids]
            let p = desc + 16 &* slot
            p.storeBytes(of: addr.littleEndian, as: UInt64.self)
            p.storeBytes(of: len.littleEndian, toByteOffset: 8, as: UInt32.self)
            p.storeBytes(of: id.littleEndian, toByteOffset: 12, as: UInt16.self)
            s.pointee.pendingSlot = slot
            s.pointee.pendingFlags = UInt16(truncatingIfNeeded: f >> 48)
            chains[Int(id)] = DriverChain(single: m.header, tail: 0)
            slot &+= 1
            if slot == size { slot = 0; wrap.toggle(); f = UInt64(flags | PackedRing.availFlags(wrap: wrap)) << 48 }
            k = 1
        }
        while k < n {
            let m = pkts[k]
            guard let (addr, len) = buffer.buffer(m) else { break }
            ids &-= 1
            let id = freeIDs[ids]
            let word = UInt64(len) | UInt64(id) << 32 | f
            (desc + 16 &* slot).storeBytes(of: SIMD2(addr.littleEndian, word.littleEndian), as: SIMD2<UInt64>.self)
            chains[Int(id)] = DriverChain(single: m.header, tail: 0)
            slot &+= 1
            if slot == size { slot = 0; wrap.toggle(); f = UInt64(flags | PackedRing.availFlags(wrap: wrap)) << 48 }
            k &+= 1
        }
        s.pointee.nextAvail = slot
        s.pointee.availWrap = wrap
        s.pointee.freeIDCount = ids
        return k
    }

    /// Takes up to `max` completed chains and writes their tokens to `out` (and, when given, the
    /// used lengths to `lengths`), freeing their descriptors (§2.6.14 / §2.7.1 used flags).
    /// Returns how many tokens it wrote and how many used entries named an id the driver did not
    /// post (out of range or not in flight): those free nothing.
    @inlinable
    public func reapTokens(_ out: UnsafeMutablePointer<UInt64>, max: Int) -> (count: Int, rejected: Int) {
        reap(out, NoUsedLengths(), max)
    }

    /// `reapTokens`, also writing each chain's used length (bytes the device wrote) to `lengths`.
    @inlinable
    public func reapTokens(_ out: UnsafeMutablePointer<UInt64>, lengths: UnsafeMutablePointer<UInt32>,
                           max: Int) -> (count: Int, rejected: Int) {
        reap(out, UsedLengths(lengths), max)
    }

    @inlinable @inline(__always)
    func reap<L: UsedLengthSink>(_ out: UnsafeMutablePointer<UInt64>, _ lengths: L, _ max: Int) -> (count: Int, rejected: Int) {
        let (n, taken, freed) = layout == .split ? reapSplit(out, lengths, max) : reapPacked(out, lengths, max)
        st.pointee.numFree &+= freed
        return (n, taken &- n)
    }

    /// Split (§2.6.14): the used entries between our last position and used idx, read once.
    @inlinable
    func reapSplit<L: UsedLengthSink>(_ out: UnsafeMutablePointer<UInt64>, _ lengths: L, _ max: Int) -> (Int, Int, Int) {
        let s = st, chains = self.chains, shadowNext = self.shadowNext, size = self.size
        let ring = split.unsafelyUnwrapped
        let first = s.pointee.lastUsedSeen
        let entries = Swift.min(max, Int(ring.loadUsedIndex() &- first))
        var head = s.pointee.freeHead
        var n = 0, freed = 0
        for k in 0..<entries {
            let (id32, len) = ring.usedElement(first &+ UInt16(truncatingIfNeeded: k))
            let id = Int(id32)
            if id < size && chains[id].inUse {
                let c = chains[id]
                chains[id].inUse = false
                out[n] = c.token
                lengths.store(n, len)
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
    func reapPacked<L: UsedLengthSink>(_ out: UnsafeMutablePointer<UInt64>, _ lengths: L, _ max: Int) -> (Int, Int, Int) {
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
                if L.wanted {
                    lengths.store(n, UInt32(littleEndian: ring.desc.load(fromByteOffset: 16 &* slot &+ 8, as: UInt32.self)))
                }
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

/// What a one-descriptor chain holds for each mbuf of a burst: its guest address and length, or
/// nil when the mbuf needs the general path.
@usableFromInline
protocol SingleBuffers {
    func buffer(_ m: Mbuf) -> (UInt64, UInt32)?
}

/// Transmit: the virtio-net header (written into the headroom) and the data, for a single-segment
/// mbuf whose headroom holds the header and whose bytes all lie in the window.
@frozen @usableFromInline
struct TXBuffers: SingleBuffers {
    @usableFromInline let headerSize: Int
    @usableFromInline let window: GuestWindow
    @inlinable init(headerSize: Int, window: GuestWindow) { self.headerSize = headerSize; self.window = window }

    @inlinable @inline(__always)
    func buffer(_ m: Mbuf) -> (UInt64, UInt32)? {
        let hs = headerSize
        guard m.nextIndex == MbufLayout.noNext else { return nil }
        let off = Int(m.dataOffset)
        guard off >= hs else { return nil }
        let start = m.header + (MbufLayout.headerSize &+ off &- hs)
        let len = hs &+ Int(m.dataLength)
        guard let addr = window.guestAddress(of: start, length: len) else { return nil }
        DriverQueue.storeTXHeader(m, at: start, headerSize: hs)
        return (addr, UInt32(truncatingIfNeeded: len))
    }
}

/// Receive: `length` bytes from `offset` into the mbuf (from its header), all in the window.
@frozen @usableFromInline
struct RXBuffers: SingleBuffers {
    @usableFromInline let offset: Int
    @usableFromInline let length: UInt32
    @usableFromInline let window: GuestWindow
    @inlinable init(offset: Int, length: UInt32, window: GuestWindow) {
        self.offset = offset; self.length = length; self.window = window
    }

    @inlinable @inline(__always)
    func buffer(_ m: Mbuf) -> (UInt64, UInt32)? {
        window.guestAddress(of: m.header + offset, length: Int(length)).map { ($0, length) }
    }
}

/// Where a reap puts used lengths: nowhere (transmit) or an array (receive); a generic rather
/// than an optional, so each specialisation has no test per entry.
@usableFromInline
protocol UsedLengthSink {
    static var wanted: Bool { get }
    func store(_ i: Int, _ length: UInt32)
}

@frozen @usableFromInline
struct NoUsedLengths: UsedLengthSink {
    @inlinable init() {}
    @inlinable static var wanted: Bool { false }
    @inlinable @inline(__always) func store(_ i: Int, _ length: UInt32) {}
}

@frozen @usableFromInline
struct UsedLengths: UsedLengthSink {
    @usableFromInline let p: UnsafeMutablePointer<UInt32>
    @inlinable init(_ p: UnsafeMutablePointer<UInt32>) { self.p = p }
    @inlinable static var wanted: Bool { true }
    @inlinable @inline(__always) func store(_ i: Int, _ length: UInt32) { p[i] = length }
}
