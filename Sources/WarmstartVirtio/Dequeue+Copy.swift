import CWarmstartShim
import WarmstartPools

// Guest TX → mbufs, pass 2: copying walked chains (Dequeue.swift) out of guest memory into mbufs —
// the virtio-net header first (it may be split across descriptors), then data, chaining mbufs when
// a frame outgrows one data room — and the header checks on the way (§5.1.6.2).

extension VirtqueueDevice {
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
}
