// WarmstartVirtioDriver: the driver side of a virtqueue (OASIS virtio 1.1 §2.6.13-14 split, §2.7.13-14
// packed, §5.1.6 virtio-net): what the virtio-user front-end and the tests' mock guest run against
// a device. The rings themselves (SplitRing, PackedRing), guest memory and event suppression are
// WarmstartVirtio's, shared with the device side.
//
//   DriverQueue                one queue's rings, laid out in a buffer the caller owns, and the
//                              driver's private bookkeeping (free list, ids, tokens)
//     add / addIndirect        chains of buffers, visible after publish() (DriverQueue.swift)
//     addTXBurst / addRXBurst  one-descriptor chains for a burst of mbufs, and
//     reapTokens               completions as tokens, inlined into the caller (DriverQueue+Burst.swift)
//     reap / needsKick         completions, notifications, packet helpers (DriverCompletions.swift)
//     reclaimInFlight          what a device that went away will never return (DriverQueue+Reclaim.swift)
//   GuestWindow                one region's host → guest translation for the burst paths
//
// The hot paths are @inlinable: a front-end's loop runs them in its own module, with no call per
// packet. What they use of WarmstartVirtio's rings is @inlinable there too.
