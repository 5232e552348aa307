import WarmstartPools
import WarmstartVirtio
import WarmstartVirtioDriver

// Receive without MRG_RXBUF: Linux virtio-net's "big packets" (add_recvbuf_big). Each receive
// buffer the device may fill with one whole frame is one descriptor chain over `rxSegments` mbufs
// — enough for the largest frame the negotiated features allow (VirtioUserPort.receiveSegments) —
// and the frame comes back as a chained mbuf.
//
// Chain layout, as Linux lays it out: descriptor 0 is the virtio-net header alone (the
// `headerSize` bytes in front of the first mbuf's data), descriptor 1 the first mbuf's data room,
// then one descriptor per further mbuf covering its header room and data room (`rxBufferLength`
// bytes at `rxBufferOffset`: their frame bytes start `headerSize` bytes before their usual data
// offset). The header-only first descriptor is not cosmetic: DPDK's packed-ring enqueue batches
// four descriptors at a time when each of them alone could hold a packet, without looking at
// NEXT, so a chain whose first descriptor can hold a small frame would be taken apart; a 12-byte
// first descriptor holds none.
//
// The chain's mbufs are linked (nextIndex) when posted and the head is the descriptor's token, so
// the ring keeps one token per chain and `reclaim()` frees the whole chain by freeing its head.

extension VirtioUserQueuePair {
    /// Posts chains while the ring has room for one, in bursts (once at least a burst's worth of
    /// descriptors is free). One publish and at most one kick per call.
    @inline(__always)
    func refillChains<S: MbufSource>(_ source: S) {
        let segs = rxSegments
        let descriptors = segs + 1
        guard rx.numFree >= Swift.max(descriptors, Swift.min(Self.refillBatch, rx.size)) else { return }
        let hs = headerSize
        let firstRoom = rxBufferLength - UInt32(truncatingIfNeeded: hs)
        var posted = false
        while rx.numFree >= descriptors {
            guard source.allocBulk(fresh, count: segs) else { break }
            let head = fresh[0]
            scratch[0] = DriverBuffer(addr: guest(head.data - hs), len: UInt32(truncatingIfNeeded: hs), writable: true)
            scratch[1] = DriverBuffer(addr: guest(head.data), len: firstRoom, writable: true)
            for k in 1..<segs {
                let m = fresh[k]
                fresh[k - 1].nextIndex = m.index
                scratch[k + 1] = DriverBuffer(addr: guest(m.header + rxBufferOffset), len: rxBufferLength, writable: true)
            }
            head.segmentCount = UInt16(truncatingIfNeeded: segs)
            guard rx.add(scratch, count: descriptors, token: UInt64(UInt(bitPattern: head.header))) != nil else {
                source.free(head)
                break
            }
            posted = true
        }
        if posted {
            rx.publish()
            if rx.needsKick() { kick(rxKickFD) }
        }
    }

    /// Used chains become chained mbufs: the frame (used length minus the header) fills the first
    /// mbuf's data room, then the further mbufs in order; mbufs the frame did not reach are freed.
    /// A used length shorter than the header or longer than the chain is an error (counted,
    /// chain freed).
    func receiveChains(into out: UnsafeMutablePointer<Mbuf>, max: Int, cache: MbufCache) -> Int {
        let n = rx.reap(completions, max: Swift.min(max, rx.size))
        var got = 0
        let hs = headerSize
        let room = Int(rxBufferLength)
        let firstRoom = room - hs
        let capacity = hs + firstRoom + room * (rxSegments - 1)
        let continuationOffset = UInt16(truncatingIfNeeded: rxBufferOffset - MbufLayout.headerSize)
        for k in 0..<n {
            let c = completions[k]
            guard c.token != .max, let h = UnsafeMutableRawPointer(bitPattern: UInt(c.token)) else {
                countErrors()
                continue
            }
            let head = Mbuf(header: h)
            let len = Int(c.length)
            guard len >= hs, len <= capacity else {
                countErrors()
                cache.free(head)
                continue
            }
            var left = len - hs
            var take = Swift.min(left, firstRoom)
            head.dataLength = UInt16(truncatingIfNeeded: take)
            left -= take
            var seg = head
            var used: UInt16 = 1
            while left > 0, let next = pool.nextSegment(of: seg) {
                seg = next
                seg.dataOffset = continuationOffset
                take = Swift.min(left, room)
                seg.dataLength = UInt16(truncatingIfNeeded: take)
                seg.packetLength = UInt32(truncatingIfNeeded: take)
                left -= take
                used &+= 1
            }
            if let rest = pool.nextSegment(of: seg) {
                seg.nextIndex = MbufLayout.noNext
                cache.free(rest)
            }
            head.segmentCount = used
            head.packetLength = UInt32(truncatingIfNeeded: len - hs)
            out[got] = head
            got += 1
        }
        refillChains(cache)
        return got
    }
}
