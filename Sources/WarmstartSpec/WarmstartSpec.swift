// WarmstartSpec: the virtio and vhost-user *specification* vocabulary, one name per concept, and
// nothing else: no memory access, no I/O, no state. Every module that speaks virtio (Virtio,
// VhostUser and everything above) takes these names from here. It imports none of our modules.
//
// Section numbers are those of OASIS virtio 1.2 (cs01) and QEMU's docs/interop/vhost-user.rst.
//
//   VirtioFeatures            feature bits: device-independent (§6), virtio-net (§5.1.3), and the
//                             vhost-user bits in the same space (LOG_ALL, PROTOCOL_FEATURES)
//   VhostUserProtocolFeature  vhost-user protocol feature bits ("Protocol features")
//   VirtqDescriptorFlags      descriptor flags (§2.7.5 split, §2.8 packed)
//   VirtqueueLayout           split (§2.7) or packed (§2.8), and the sizes of each layout's areas
//   SplitVirtqueue            split-ring area sizes, alignments, flags (§2.7)
//   PackedVirtqueue           packed-ring area sizes, alignments, event suppression flags (§2.8)
//   VirtqueuePosition         where a ring stands (next avail / used, wrap counters, §2.8.1) and
//                             its vhost-user encoding (SET_VRING_BASE / GET_VRING_BASE)
//
// What the ring walkers use per burst (layouts, flags, feature tests) is @frozen / @inlinable, so
// code in other modules compiles to the same instructions as when it lived beside them.
