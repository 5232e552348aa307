/// A set of virtio feature bits (virtio 1.2 §2.2 "Feature Bits"): the device-independent bits
/// (§6 "Reserved Feature Bits"), the virtio-net bits (§5.1.3 "Feature bits"), and the two
/// vhost-user bits that share the space (VHOST_F_LOG_ALL 26, VHOST_USER_F_PROTOCOL_FEATURES 30).
///
/// The members are `@inlinable` computed properties, not stored `static let`s: a ring walker in
/// another module then tests a bit against a constant instead of calling a global's accessor.
@frozen
public struct VirtioFeatures: OptionSet, Sendable, Hashable {
    public let rawValue: UInt64
    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue }
    /// The single bit `bit` (0...63).
    @inlinable public init(bit: Int) { self.rawValue = 1 << UInt64(bit) }

    /// VIRTIO_NET_F_CSUM (0): the device handles packets with partial checksum.
    @inlinable public static var csum: Self { Self(bit: 0) }
    /// VIRTIO_NET_F_GUEST_CSUM (1): the driver handles packets with partial checksum.
    @inlinable public static var guestCsum: Self { Self(bit: 1) }
    /// VIRTIO_NET_F_CTRL_GUEST_OFFLOADS (2).
    @inlinable public static var ctrlGuestOffloads: Self { Self(bit: 2) }
    /// VIRTIO_NET_F_MTU (3): the device reports its maximum MTU in the config space.
    @inlinable public static var mtu: Self { Self(bit: 3) }
    /// VIRTIO_NET_F_MAC (5): the device has a given MAC address in the config space.
    @inlinable public static var mac: Self { Self(bit: 5) }
    /// VIRTIO_NET_F_GSO (6, legacy).
    @inlinable public static var gso: Self { Self(bit: 6) }
    /// VIRTIO_NET_F_GUEST_TSO4 (7).
    @inlinable public static var guestTSO4: Self { Self(bit: 7) }
    /// VIRTIO_NET_F_GUEST_TSO6 (8).
    @inlinable public static var guestTSO6: Self { Self(bit: 8) }
    /// VIRTIO_NET_F_GUEST_ECN (9).
    @inlinable public static var guestECN: Self { Self(bit: 9) }
    /// VIRTIO_NET_F_GUEST_UFO (10).
    @inlinable public static var guestUFO: Self { Self(bit: 10) }
    /// VIRTIO_NET_F_HOST_TSO4 (11).
    @inlinable public static var hostTSO4: Self { Self(bit: 11) }
    /// VIRTIO_NET_F_HOST_TSO6 (12).
    @inlinable public static var hostTSO6: Self { Self(bit: 12) }
    /// VIRTIO_NET_F_HOST_ECN (13).
    @inlinable public static var hostECN: Self { Self(bit: 13) }
    /// VIRTIO_NET_F_HOST_UFO (14).
    @inlinable public static var hostUFO: Self { Self(bit: 14) }
    /// VIRTIO_NET_F_MRG_RXBUF (15, §5.1.6.3): a received packet may span several buffers.
    @inlinable public static var mrgRxbuf: Self { Self(bit: 15) }
    /// VIRTIO_NET_F_STATUS (16): the config space has a link status field.
    @inlinable public static var status: Self { Self(bit: 16) }
    /// VIRTIO_NET_F_CTRL_VQ (17).
    @inlinable public static var ctrlVQ: Self { Self(bit: 17) }
    /// VIRTIO_NET_F_GUEST_ANNOUNCE (21).
    @inlinable public static var guestAnnounce: Self { Self(bit: 21) }
    /// VIRTIO_NET_F_MQ (22): several receive/transmit queue pairs.
    @inlinable public static var mq: Self { Self(bit: 22) }
    /// VHOST_F_LOG_ALL (26, vhost-user): dirty-page logging for live migration.
    @inlinable public static var logAll: Self { Self(bit: 26) }
    /// VIRTIO_F_ANY_LAYOUT (27, legacy; implied by VERSION_1).
    @inlinable public static var anyLayout: Self { Self(bit: 27) }
    /// VIRTIO_F_INDIRECT_DESC (28, §2.7.5.3 / §2.8.7; VIRTIO_F_RING_INDIRECT_DESC in virtio 1.0):
    /// indirect descriptor tables.
    @inlinable public static var ringIndirectDesc: Self { Self(bit: 28) }
    /// VIRTIO_F_EVENT_IDX (29, §2.7.7 / §2.7.10 / §2.8.10; VIRTIO_F_RING_EVENT_IDX in virtio 1.0):
    /// used_event / avail_event and the packed rings' event offsets.
    @inlinable public static var ringEventIdx: Self { Self(bit: 29) }
    /// VHOST_USER_F_PROTOCOL_FEATURES (30, vhost-user): protocol features are negotiated.
    @inlinable public static var protocolFeatures: Self { Self(bit: 30) }
    /// VIRTIO_F_VERSION_1 (32): virtio 1.x (little-endian rings, 12-byte virtio-net header).
    @inlinable public static var version1: Self { Self(bit: 32) }
    /// VIRTIO_F_ACCESS_PLATFORM (33).
    @inlinable public static var accessPlatform: Self { Self(bit: 33) }
    /// VIRTIO_F_RING_PACKED (34, §2.8): the packed virtqueue layout.
    @inlinable public static var ringPacked: Self { Self(bit: 34) }
    /// VIRTIO_F_IN_ORDER (35, §2.7.9 / §2.8.8): buffers are used in the order they were made
    /// available, so a device may report a batch of buffers with one used element.
    @inlinable public static var inOrder: Self { Self(bit: 35) }

    /// The named bits, by number, for messages ("missing version1").
    static let named: [(bit: Int, name: String)] = [
        (0, "csum"), (1, "guestCsum"), (2, "ctrlGuestOffloads"), (3, "mtu"), (5, "mac"), (6, "gso"),
        (7, "guestTSO4"), (8, "guestTSO6"), (9, "guestECN"), (10, "guestUFO"), (11, "hostTSO4"),
        (12, "hostTSO6"), (13, "hostECN"), (14, "hostUFO"), (15, "mrgRxbuf"), (16, "status"),
        (17, "ctrlVQ"), (21, "guestAnnounce"), (22, "mq"), (26, "logAll"), (27, "anyLayout"),
        (28, "ringIndirectDesc"), (29, "ringEventIdx"), (30, "protocolFeatures"), (32, "version1"),
        (33, "accessPlatform"), (34, "ringPacked"), (35, "inOrder"),
    ]

    /// Names of the bits set in `mask`, lowest first, for errors; unnamed bits as "bit N".
    public static func names(_ mask: UInt64) -> [String] {
        (0..<64).compactMap { bit -> String? in
            guard mask & (1 << UInt64(bit)) != 0 else { return nil }
            return named.first { $0.bit == bit }?.name ?? "bit \(bit)"
        }
    }
}
