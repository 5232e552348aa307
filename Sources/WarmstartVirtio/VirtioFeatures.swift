// Feature bits the ring layer needs to know (virtio 1.1 §6 "Reserved Feature Bits", §5.1.3).
// The set is fixed when a queue is set up: the fast path is chosen per queue, never per packet.

/// The feature bits that change how a virtqueue is walked or filled.
public struct VirtioFeatures: OptionSet, Sendable, Hashable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// VIRTIO_NET_F_MRG_RXBUF (bit 15, §5.1.3): a received packet may use several buffers.
    public static let mergeableRxBuffers = VirtioFeatures(rawValue: 1 << 15)
    /// VIRTIO_F_RING_INDIRECT_DESC (bit 28, §2.6.5.3 / §2.7.7).
    public static let indirectDescriptors = VirtioFeatures(rawValue: 1 << 28)
    /// VIRTIO_F_RING_EVENT_IDX (bit 29, §2.6.7 / §2.6.8 / §2.7.10).
    public static let eventIndex = VirtioFeatures(rawValue: 1 << 29)
    /// VIRTIO_F_VERSION_1 (bit 32): little-endian rings, 12-byte virtio-net header.
    public static let version1 = VirtioFeatures(rawValue: 1 << 32)
    /// VIRTIO_F_RING_PACKED (bit 34, §2.7).
    public static let ringPacked = VirtioFeatures(rawValue: 1 << 34)
    /// VIRTIO_F_IN_ORDER (bit 35, §2.6.9 / §2.7.9): buffers are used in the order they were made
    /// available, so a device may report a batch of guest-TX buffers with one used element.
    public static let inOrder = VirtioFeatures(rawValue: 1 << 35)
}

/// Which of the two ring layouts a queue uses (§2.6 split, §2.7 packed).
public enum VirtqueueLayout: Sendable, Equatable {
    case split
    case packed
}

/// What a queue needs to know at set-up. Built once from the negotiated features.
public struct VirtqueueOptions: Sendable, Equatable {
    public var features: VirtioFeatures
    /// Most chains handled by one `dequeueBurst` / packets by one `enqueueBurst` (≤ 256).
    public var burstSize: Int

    public init(features: VirtioFeatures, burstSize: Int = 32) {
        self.features = features
        self.burstSize = max(1, min(burstSize, 256))
    }

    public var layout: VirtqueueLayout { features.contains(.ringPacked) ? .packed : .split }
    public var mergeableRxBuffers: Bool { features.contains(.mergeableRxBuffers) }
    public var eventIndex: Bool { features.contains(.eventIndex) }
    public var indirectDescriptors: Bool { features.contains(.indirectDescriptors) }
    public var inOrder: Bool { features.contains(.inOrder) }

    /// Size of the virtio-net header in front of every packet (§5.1.6): 12 bytes with VERSION_1 or
    /// MRG_RXBUF (`struct virtio_net_hdr_v1` / `_mrg_rxbuf`), else the legacy 10 bytes.
    public var netHeaderSize: Int {
        features.contains(.version1) || features.contains(.mergeableRxBuffers) ? 12 : 10
    }
}

/// Descriptor flag bits (§2.6.5 split, §2.7.1 packed).
public enum VirtqDescriptorFlags {
    public static let next: UInt16 = 1
    public static let write: UInt16 = 2
    public static let indirect: UInt16 = 4
    /// Packed only (§2.7.1): bit 7 and bit 15.
    public static let avail: UInt16 = 1 << 7
    public static let used: UInt16 = 1 << 15
}
