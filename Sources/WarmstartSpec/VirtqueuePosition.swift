/// Where a virtqueue stands: the next available entry the device reads and the next used entry
/// it writes, with the two wrap counters of a packed ring (virtio 1.2 §2.8.1 "Driver and Device
/// Ring Wrap Counters"). What a hot upgrade hands over, and what vhost-user's SET_VRING_BASE /
/// GET_VRING_BASE carry (`decode` / `encode`).
///
/// Split: free-running 16-bit indices (§2.7.6 / §2.7.8 `idx`); a ring walker reduces them to a
/// slot with `index & (size - 1)`, and the wrap counters are unused (true). Packed: descriptor
/// slots (0..<size) plus the wrap counters.
@frozen
public struct VirtqueuePosition: Sendable, Equatable {
    public var lastAvailIndex: UInt16
    public var availWrapCounter: Bool
    public var lastUsedIndex: UInt16
    public var usedWrapCounter: Bool

    /// Wrap counters start at 1 (§2.8.1); a new ring stands at slot / index 0.
    @inlinable
    public init(lastAvailIndex: UInt16 = 0, availWrapCounter: Bool = true,
                lastUsedIndex: UInt16 = 0, usedWrapCounter: Bool = true) {
        self.lastAvailIndex = lastAvailIndex
        self.availWrapCounter = availWrapCounter
        self.lastUsedIndex = lastUsedIndex
        self.usedWrapCounter = usedWrapCounter
    }

    /// Decodes the 32-bit `num` of SET_VRING_BASE (vhost-user.rst "Ring state description"):
    /// - split: the next available-ring index to process (16 bits; the used index is read from
    ///   the used ring in guest memory, so it is taken equal here); nil when `num` is wider;
    /// - packed: bits 0-14 next available descriptor index, bit 15 driver (avail) wrap counter,
    ///   bits 16-30 next used descriptor index, bit 31 device (used) wrap counter. Front-ends that
    ///   only fill the low 16 bits (DPDK virtio-user) stopped the ring with used == avail, so when
    ///   the high half is zero the used position is taken equal to the avail one.
    public static func decode(_ num: UInt32, layout: VirtqueueLayout) -> VirtqueuePosition? {
        switch layout {
        case .split:
            guard num <= 0xffff else { return nil }
            return VirtqueuePosition(lastAvailIndex: UInt16(num), availWrapCounter: true,
                                     lastUsedIndex: UInt16(num), usedWrapCounter: true)
        case .packed:
            let avail = UInt16(num & 0x7fff), availWrap = num & (1 << 15) != 0
            let high = num >> 16
            if high == 0 {
                return VirtqueuePosition(lastAvailIndex: avail, availWrapCounter: availWrap,
                                         lastUsedIndex: avail, usedWrapCounter: availWrap)
            }
            return VirtqueuePosition(lastAvailIndex: avail, availWrapCounter: availWrap,
                                     lastUsedIndex: UInt16(high & 0x7fff), usedWrapCounter: high & (1 << 15) != 0)
        }
    }

    /// The 32-bit `num` GET_VRING_BASE returns (the encoding `decode` reads).
    public func encode(layout: VirtqueueLayout) -> UInt32 {
        switch layout {
        case .split:
            return UInt32(lastAvailIndex)
        case .packed:
            let avail = UInt32(lastAvailIndex & 0x7fff) | (availWrapCounter ? 1 << 15 : 0)
            let used = UInt32(lastUsedIndex & 0x7fff) | (usedWrapCounter ? 1 << 15 : 0)
            return avail | used << 16
        }
    }

    /// Why this position cannot be used on a ring of `size` descriptors, or nil when it can.
    /// Split: any 16-bit avail/used index is legal (free-running; the ring walkers reduce it to a
    /// slot with `index & (size - 1)`). Packed: both positions are descriptor slots and must lie
    /// inside the ring (§2.8.1), or used descriptors would be written past its end.
    public func problem(size: Int, layout: VirtqueueLayout) -> String? {
        guard size >= 1 else { return "ring size \(size) is not in 1...32768" }
        switch layout {
        case .split:
            return nil
        case .packed:
            if Int(lastAvailIndex) >= size {
                return "packed ring position: next avail slot \(lastAvailIndex) is outside a ring of \(size) descriptors"
            }
            if Int(lastUsedIndex) >= size {
                return "packed ring position: next used slot \(lastUsedIndex) is outside a ring of \(size) descriptors"
            }
            return nil
        }
    }
}
