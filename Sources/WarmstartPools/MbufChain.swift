/// Multi-segment packets: segments chain by element index (`nextIndex`), the first segment holds
/// the chain's segmentCount and packetLength, as in DPDK.
extension MbufPool {
    /// The last segment of the chain starting at `head`, or nil when the chain is broken or longer
    /// than the pool (a cycle).
    @inlinable
    public func lastSegment(of head: Mbuf) -> Mbuf? {
        var seg = head
        var budget = count32
        while true {
            let next = seg.nextIndex
            if next == MbufLayout.noNext { return seg }
            budget &-= 1
            guard next < count32, budget > 0 else { return nil }
            seg = element(next)
        }
    }

    /// Chains `segment` (itself possibly a chain) after the last segment of `head`
    /// (rte_pktmbuf_chain): head's segmentCount and packetLength grow by the segment's. Set each
    /// segment's packetLength (its own data length for a single segment) before appending.
    /// Returns false, changing nothing, when `segment` is not one of this pool's mbufs, the chain is
    /// broken, or segmentCount would overflow.
    @inlinable @discardableResult
    public func append(_ segment: Mbuf, to head: Mbuf) -> Bool {
        let index = segment.index
        guard index < count32, element(index) == segment, segment != head,
              Int(head.segmentCount) + Int(segment.segmentCount) <= Int(UInt16.max),
              let last = lastSegment(of: head) else { return false }
        last.nextIndex = index
        head.segmentCount &+= segment.segmentCount
        head.packetLength &+= segment.packetLength
        return true
    }

    /// Copies the data of every segment of the chain at `m`, in order, into `to`, at most `max`
    /// bytes. Returns the number of bytes copied.
    @inlinable
    public func copyOut(_ m: Mbuf, to: UnsafeMutableRawPointer, max: Int) -> Int {
        var seg = m
        var copied = 0
        var budget = count32
        while copied < max {
            let n = Swift.min(Int(seg.dataLength), max - copied)
            if n > 0 { (to + copied).copyMemory(from: UnsafeRawPointer(seg.data), byteCount: n) }
            copied += n
            let next = seg.nextIndex
            budget &-= 1
            guard next < count32, budget > 0 else { break }
            seg = element(next)
        }
        return copied
    }
}

extension Mbuf {
    /// Appends `count` bytes from `bytes` at the end of this segment's data and grows dataLength
    /// and packetLength (a single-segment convenience). Returns false when there is no tailroom.
    @inlinable @discardableResult
    public func append(bytes: UnsafeRawPointer, count: Int) -> Bool {
        guard count >= 0, count <= tailroom else { return false }
        (data + Int(dataLength)).copyMemory(from: bytes, byteCount: count)
        dataLength &+= UInt16(count)
        packetLength &+= UInt32(count)
        return true
    }
}
