// WarmstartVirtio: the virtio ring layer, the device side and what both sides share (OASIS
// virtio 1.1 §2.6 split virtqueues, §2.7 packed virtqueues, §5.1 virtio-net).
//
//   SplitRing / PackedRing     ring layouts over raw host pointers into shared guest memory,
//                              with constructors that translate and check each area
//   VirtqueueDevice            the device side (what the backend runs), layout fixed at set-up:
//     dequeueBurst             guest TX → mbufs (Dequeue.swift; the copy: Dequeue+Copy.swift)
//     enqueueBurst             mbufs → guest RX, mergeable buffers (Enqueue.swift)
//     needsCall / signal       used-buffer notifications, event idx (EventSuppression.swift)
//     setNotifications         kick suppression while polling
//     state                    where it stands (`VirtqueuePosition`), for hot upgrade
//   DescriptorChain / IndirectTable   chain walking with every hostile-guest check
//   GuestMemoryMap             the queue's flat copy of the MemoryTable (guest → host)
//   MbufSource                 where the copy paths take mbufs (MbufPool, MbufCache)
//
// The driver side (DriverQueue: the virtio-user front-end, the tests' mock guest) is
// WarmstartVirtioDriver, built on the rings here.
//
// The spec's names (feature bits, descriptor flags, layouts, area sizes, positions) come from
// WarmstartSpec.
