import CWarmstartShim
import WarmstartSpec

// Descriptor chain walking with every check a hostile guest needs (split §2.6.5, packed §2.7.6 chaining):
// indices bounded by the queue size, chains cut at the queue size, each buffer translated over its
// whole length with overflow-checked arithmetic (piece by piece across regions), direction
// enforced. Walking only reads guest memory; nothing is consumed until the caller commits.

extension VirtqueueDevice {
    /// Appends the host pieces of guest buffer (addr, len) to the segment scratch at `cursor`.
    @inline(__always)
    func addBuffer(_ addr: UInt64, _ len: UInt32, _ cursor: inout Int) -> ChainError? {
        if len == 0 { return nil }
        var a = addr
        var rest = UInt64(len)
        if a.addingReportingOverflow(rest).overflow { return .lengthOverflow }
        while rest > 0 {
            guard let (p, n) = memory.contiguous(a, rest) else { return .addressOutsideMemory }
            if cursor >= segmentCapacity { return .tooFragmented }
            segments[cursor] = Segment(host: p, length: Int(n))
            cursor &+= 1
            a &+= n
            rest &-= n
        }
        return nil
    }

    /// Starts pulling the first one or two cache lines of the `len` bytes about to be read or
    /// written at `p` (header and a small frame) while the rest of the burst is walked: the guest's CPU wrote them last, and the copy phase would
    /// otherwise wait for each cross-core miss in turn.
    @inline(__always)
    func prefetchBuffer(_ p: UnsafeMutableRawPointer, _ len: Int, writable: Bool) {
        if writable {
            ws_prefetch_w(p)
            if len > 64 { ws_prefetch_w(p + 64) }
        } else {
            ws_prefetch(p)
            if len > 64 { ws_prefetch(p + 64) }
        }
    }

    /// Direction rule for virtio-net: TX chains only device-readable, RX chains only writable.
    @inline(__always)
    static func directionOK(_ flags: UInt16, writable: Bool) -> Bool {
        ((flags & VirtqDescriptorFlags.write) != 0) == writable
    }

    /// The common case first, inline: a chain of one direct descriptor whose buffer lies in one
    /// region. Every check of the full walk applies; anything else takes the full walk.
    @inline(__always)
    func walkSplitChain(ring: SplitRing, head: UInt16, writable: Bool, cursor: inout Int, info: inout ChainInfo) {
        let d = ring.descriptor(Int(head))
        let special = VirtqDescriptorFlags.next | VirtqDescriptorFlags.indirect
        if d.flags & special == 0 && Self.directionOK(d.flags, writable: writable) && d.len != 0
            && cursor < segmentCapacity && !d.addr.addingReportingOverflow(UInt64(d.len)).overflow,
           let p = memory.translate(d.addr, UInt64(d.len)) {
            prefetchBuffer(p, Int(d.len), writable: writable)
            segments[cursor] = Segment(host: p, length: Int(d.len))
            info.id = head
            info.descriptorCount = 1
            info.segmentStart = Int32(truncatingIfNeeded: cursor)
            cursor &+= 1
            info.segmentEnd = Int32(truncatingIfNeeded: cursor)
            info.capacity = Int(d.len)
            info.usedLength = 0
            info.error = -1
            return
        }
        walkSplit(ring: ring, head: head, writable: writable, cursor: &cursor, info: &info)
    }

    /// Packed counterpart of `walkSplitChain` (slot flags already read with acquire).
    @inline(__always)
    func walkPackedChain(ring: PackedRing, slot: Int, firstFlags: UInt16, writable: Bool,
                         cursor: inout Int, info: inout ChainInfo) -> Bool {
        let special = VirtqDescriptorFlags.next | VirtqDescriptorFlags.indirect
        if firstFlags & special == 0 && Self.directionOK(firstFlags, writable: writable) && cursor < segmentCapacity {
            let d = ring.descriptor(slot, flags: firstFlags)
            if d.len != 0 && Int(d.id) < size && !d.addr.addingReportingOverflow(UInt64(d.len)).overflow,
               let p = memory.translate(d.addr, UInt64(d.len)) {
                prefetchBuffer(p, Int(d.len), writable: writable)
                segments[cursor] = Segment(host: p, length: Int(d.len))
                info.id = d.id
                info.descriptorCount = 1
                info.segmentStart = Int32(truncatingIfNeeded: cursor)
                cursor &+= 1
                info.segmentEnd = Int32(truncatingIfNeeded: cursor)
                info.capacity = Int(d.len)
                info.usedLength = 0
                info.error = -1
                return true
            }
        }
        return walkPacked(ring: ring, slot: slot, firstFlags: firstFlags, writable: writable, cursor: &cursor, info: &info)
    }

    /// Walks the split chain starting at `head` (an avail ring entry, already range-checked),
    /// filling `info` and the segment scratch from `cursor`. On error `info.error` is set.
    func walkSplit(ring: SplitRing, head: UInt16, writable: Bool, cursor: inout Int, info: inout ChainInfo) {
        info.id = head
        info.descriptorCount = 1
        info.segmentStart = Int32(truncatingIfNeeded: cursor)
        info.capacity = 0
        info.usedLength = 0
        info.error = -1
        let n = size
        var index = Int(head)
        var visited = 0
        var total = 0
        while true {
            // §2.6.5: a descriptor index ≥ queue size is a driver error; a chain longer than the
            // queue means a loop (the table has only `size` entries).
            if index >= n { return fail(&info, .indexOutOfRange, &cursor) }
            visited &+= 1
            if visited > n { return fail(&info, .chainTooLong, &cursor) }
            let d = ring.descriptor(index)
            if d.flags & VirtqDescriptorFlags.indirect != 0 {
                if let e = walkIndirect(d, writable: writable, packed: false, cursor: &cursor, total: &total) {
                    return fail(&info, e, &cursor)
                }
                break // §2.6.5.3.1: an indirect descriptor has no NEXT (checked in walkIndirect).
            }
            if !Self.directionOK(d.flags, writable: writable) { return fail(&info, .wrongDirection, &cursor) }
            if let e = addBuffer(d.addr, d.len, &cursor) { return fail(&info, e, &cursor) }
            total &+= Int(d.len)
            if d.flags & VirtqDescriptorFlags.next == 0 { break }
            index = Int(d.next)
        }
        info.segmentEnd = Int32(truncatingIfNeeded: cursor)
        info.capacity = total
    }

    /// Walks the packed chain whose first descriptor sits at `slot` (flags already read with
    /// acquire and found available). Always sets `info.descriptorCount` to the number of ring
    /// slots the chain occupies, even on error, so the ring stays in step. Returns false when the
    /// chain never ends (NEXT on `size` descriptors): then the ring cannot be resynchronised.
    func walkPacked(ring: PackedRing, slot: Int, firstFlags: UInt16, writable: Bool,
                    cursor: inout Int, info: inout ChainInfo) -> Bool {
        info.segmentStart = Int32(truncatingIfNeeded: cursor)
        info.capacity = 0
        info.usedLength = 0
        info.error = -1
        let n = size
        var i = slot
        var count = 0
        var total = 0
        var error: ChainError? = nil
        var flags = firstFlags
        var id: UInt16 = 0
        while true {
            count &+= 1
            if count > n { return false }
            let d = ring.descriptor(i, flags: flags)
            id = d.id // §2.7.6: the buffer id is that of the last descriptor of the chain
            if error == nil {
                if d.flags & VirtqDescriptorFlags.indirect != 0 {
                    error = walkIndirect(d, writable: writable, packed: true, cursor: &cursor, total: &total)
                } else if !Self.directionOK(d.flags, writable: writable) {
                    error = .wrongDirection
                } else if let e = addBuffer(d.addr, d.len, &cursor) {
                    error = e
                } else {
                    total &+= Int(d.len)
                }
            }
            i &+= 1
            if i == n { i = 0 }
            if d.flags & VirtqDescriptorFlags.next == 0 { break }
            // Later descriptors of a chain are published by the first one's release store.
            flags = UInt16(littleEndian: ring.desc.load(fromByteOffset: 16 &* i &+ 14, as: UInt16.self))
        }
        info.id = id
        info.descriptorCount = UInt16(truncatingIfNeeded: count)
        if error == nil && Int(id) >= n { error = .badBufferID }
        if let error { fail(&info, error, &cursor) } else {
            info.segmentEnd = Int32(truncatingIfNeeded: cursor)
            info.capacity = total
        }
        return true
    }

    @inline(__always)
    func fail(_ info: inout ChainInfo, _ e: ChainError, _ cursor: inout Int) {
        info.error = Int8(e.rawValue)
        cursor = Int(info.segmentStart) // drop the pieces of a refused chain
        info.segmentEnd = info.segmentStart
        info.capacity = 0
    }
}
