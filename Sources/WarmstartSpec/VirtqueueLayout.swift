/// The two virtqueue formats (virtio 1.2 §2.6 "Virtqueues"): split (§2.7) and packed (§2.8),
/// the latter when VIRTIO_F_RING_PACKED (`VirtioFeatures.ringPacked`) is negotiated. Each has
/// three areas in guest memory (§2.6: descriptor area, driver area, device area):
///
///     split   descriptor table   available ring (driver area)   used ring (device area)
///     packed  descriptor ring    driver event suppression        device event suppression
@frozen
public enum VirtqueueLayout: Sendable, Equatable {
    case split
    case packed

    /// Spelled out and `@inlinable`: the derived `==` is an opaque call from other modules, and
    /// the driver's burst paths (`layout == .split`), inlined into their callers, pay for it.
    @inlinable public static func == (a: VirtqueueLayout, b: VirtqueueLayout) -> Bool {
        switch (a, b) {
        case (.split, .split), (.packed, .packed): return true
        case (.split, .packed), (.packed, .split): return false
        }
    }

    /// The layout the negotiated `features` select.
    @inlinable public init(features: VirtioFeatures) {
        self = features.contains(.ringPacked) ? .packed : .split
    }

    /// Whether a queue of `size` entries is legal in this layout (§2.7: a power of two; §2.8: any
    /// size; at most 32768 in both).
    @inlinable public func isValidSize(_ size: Int) -> Bool {
        switch self {
        case .split: return SplitVirtqueue.isValidSize(size)
        case .packed: return PackedVirtqueue.isValidSize(size)
        }
    }

    /// Byte sizes of the three areas of a queue of `size` entries. `eventIndex`: whether the split
    /// rings carry used_event / avail_event (VIRTIO_F_EVENT_IDX); the packed areas do not change.
    @inlinable public func areaSizes(size: Int, eventIndex: Bool) -> (descriptors: Int, driver: Int, device: Int) {
        switch self {
        case .split:
            return (SplitVirtqueue.descriptorTableBytes(size: size),
                    SplitVirtqueue.availRingBytes(size: size, eventIndex: eventIndex),
                    SplitVirtqueue.usedRingBytes(size: size, eventIndex: eventIndex))
        case .packed:
            return (PackedVirtqueue.descriptorRingBytes(size: size),
                    PackedVirtqueue.eventSuppressionBytes, PackedVirtqueue.eventSuppressionBytes)
        }
    }

    /// Required alignment of each area, in bytes (§2.7's alignment table; §2.8 / §2.8.10 packed).
    @inlinable public var areaAlignments: (descriptors: Int, driver: Int, device: Int) {
        switch self {
        case .split: return (16, 2, 4)
        case .packed: return (16, 4, 4)
        }
    }
}

/// The split virtqueue's areas (virtio 1.2 §2.7), all fields little-endian:
///
///     descriptor table  16 × size           align 16   {addr u64, len u32, flags u16, next u16}  §2.7.5
///     available ring    4 + 2 × size (+2)   align 2    {flags, idx, ring[size], used_event}       §2.7.6
///     used ring         4 + 8 × size (+2)   align 4    {flags, idx, ring[size]{id u32, len u32}, avail_event}  §2.7.8
///
/// used_event and avail_event (the "+2") exist with VIRTIO_F_EVENT_IDX.
public enum SplitVirtqueue {
    /// The largest queue size (§2.7: Queue Size is a power of 2, at most 32768).
    @inlinable public static var maxSize: Int { 32768 }
    @inlinable public static func isValidSize(_ n: Int) -> Bool { n >= 1 && n <= 32768 && n & (n - 1) == 0 }

    @inlinable public static func descriptorTableBytes(size: Int) -> Int { 16 * size }
    /// The available ring, with used_event when `eventIndex` (a ring laid out before the features
    /// are known must leave room for it).
    @inlinable public static func availRingBytes(size: Int, eventIndex: Bool) -> Int {
        4 + 2 * size + (eventIndex ? 2 : 0)
    }
    /// The used ring, with avail_event when `eventIndex`.
    @inlinable public static func usedRingBytes(size: Int, eventIndex: Bool) -> Int {
        4 + 8 * size + (eventIndex ? 2 : 0)
    }

    /// VIRTQ_AVAIL_F_NO_INTERRUPT (§2.7.7): the driver asks for no used-buffer notifications.
    @inlinable public static var availNoInterrupt: UInt16 { 1 }
    /// VIRTQ_USED_F_NO_NOTIFY (§2.7.10): the device asks for no available-buffer notifications.
    @inlinable public static var usedNoNotify: UInt16 { 1 }
}

/// The packed virtqueue's areas (virtio 1.2 §2.8), all fields little-endian:
///
///     descriptor ring           16 × size   align 16   {addr u64, len u32, id u16, flags u16}   pvirtq_desc
///     driver event suppression  4 bytes     align 4    {desc (off_wrap) u16, flags u16}          §2.8.10
///     device event suppression  4 bytes     align 4
public enum PackedVirtqueue {
    /// The largest queue size (§2.8: any size up to 32768).
    @inlinable public static var maxSize: Int { 32768 }
    @inlinable public static func isValidSize(_ n: Int) -> Bool { n >= 1 && n <= 32768 }

    @inlinable public static func descriptorRingBytes(size: Int) -> Int { 16 * size }
    @inlinable public static var eventSuppressionBytes: Int { 4 }

    /// RING_EVENT_FLAGS_ENABLE (§2.8.10): notify on every used / available buffer.
    @inlinable public static var eventFlagsEnable: UInt16 { 0 }
    /// RING_EVENT_FLAGS_DISABLE: no notifications.
    @inlinable public static var eventFlagsDisable: UInt16 { 1 }
    /// RING_EVENT_FLAGS_DESC (with VIRTIO_F_EVENT_IDX): notify when the descriptor at off_wrap
    /// (offset bits 0-14, wrap counter bit 15) is used / made available.
    @inlinable public static var eventFlagsDesc: UInt16 { 2 }
}

/// Descriptor flag bits (virtio 1.2 §2.7.5 `struct virtq_desc`, §2.8 `struct pvirtq_desc`).
public enum VirtqDescriptorFlags {
    /// VIRTQ_DESC_F_NEXT: the chain continues (split: at `next`; packed: in the next slot).
    @inlinable public static var next: UInt16 { 1 }
    /// VIRTQ_DESC_F_WRITE: the buffer is device-writable.
    @inlinable public static var write: UInt16 { 2 }
    /// VIRTQ_DESC_F_INDIRECT: the buffer is a table of descriptors (§2.7.5.3 / §2.8.7).
    @inlinable public static var indirect: UInt16 { 4 }
    /// VIRTQ_DESC_F_AVAIL (packed only, bit 7, §2.8.1): equals the driver's wrap counter when
    /// the descriptor is made available.
    @inlinable public static var avail: UInt16 { 1 << 7 }
    /// VIRTQ_DESC_F_USED (packed only, bit 15, §2.8.1): equals the device's wrap counter when the
    /// descriptor is used.
    @inlinable public static var used: UInt16 { 1 << 15 }
}
