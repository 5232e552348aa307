// Virtio feature bits a vhost-user-net back-end negotiates (virtio 1.2 §5.1.3 and §6, plus the
// vhost-user bit 30). Defined here, not imported from WarmstartVirtio, so that this module builds on
// its own; the numbers are the spec's and cannot drift.

/// One feature bit of a virtio-net device as seen over vhost-user.
public enum VirtioNetFeature: Int, Sendable, CaseIterable {
    case csum = 0               // VIRTIO_NET_F_CSUM
    case guestCsum = 1          // VIRTIO_NET_F_GUEST_CSUM
    case ctrlGuestOffloads = 2
    case mtu = 3                // VIRTIO_NET_F_MTU
    case mac = 5
    case gso = 6                // VIRTIO_NET_F_GSO (legacy)
    case guestTSO4 = 7
    case guestTSO6 = 8
    case guestECN = 9
    case guestUFO = 10
    case hostTSO4 = 11
    case hostTSO6 = 12
    case hostECN = 13
    case hostUFO = 14
    case mrgRxbuf = 15          // VIRTIO_NET_F_MRG_RXBUF
    case status = 16            // VIRTIO_NET_F_STATUS
    case ctrlVQ = 17
    case guestAnnounce = 21     // VIRTIO_NET_F_GUEST_ANNOUNCE
    case mq = 22                // VIRTIO_NET_F_MQ
    case logAll = 26            // VHOST_F_LOG_ALL (dirty logging; not offered, see session)
    case anyLayout = 27         // VIRTIO_F_ANY_LAYOUT
    case ringIndirectDesc = 28  // VIRTIO_F_RING_INDIRECT_DESC
    case ringEventIdx = 29      // VIRTIO_F_RING_EVENT_IDX
    case protocolFeatures = 30  // VHOST_USER_F_PROTOCOL_FEATURES
    case version1 = 32          // VIRTIO_F_VERSION_1
    case accessPlatform = 33
    case ringPacked = 34        // VIRTIO_F_RING_PACKED
    case inOrder = 35           // VIRTIO_F_IN_ORDER

    public var mask: UInt64 { 1 << UInt64(rawValue) }

    public static func mask(_ features: [VirtioNetFeature]) -> UInt64 {
        features.reduce(0) { $0 | $1.mask }
    }

    /// Names of the bits set in `mask`, for errors ("missing VERSION_1"); unknown bits by number.
    public static func names(_ mask: UInt64) -> [String] {
        (0..<64).compactMap { bit -> String? in
            guard mask & (1 << UInt64(bit)) != 0 else { return nil }
            return VirtioNetFeature(rawValue: bit).map { "\($0)" } ?? "bit \(bit)"
        }
    }
}

public enum VhostUserFeatures {
    /// What a Warmstart port offers by default: the virtio-net set the datapath implements.
    /// LOG_ALL is not offered: this back-end does not implement dirty-page logging (live migration
    /// of a guest attached to it is refused by QEMU rather than silently corrupting memory).
    public static let netDefault: UInt64 = VirtioNetFeature.mask([
        .version1, .ringPacked, .ringEventIdx, .ringIndirectDesc, .anyLayout, .mrgRxbuf, .mq,
        .csum, .guestCsum, .mtu, .status, .gso, .guestTSO4, .guestTSO6, .guestECN, .guestUFO,
        .hostTSO4, .hostTSO6, .hostECN, .hostUFO, .guestAnnounce, .protocolFeatures, .inOrder,
    ])

    /// The protocol features this back-end really implements (each has a handler in the session).
    /// Not offered: LOG_SHMFD (no dirty logging), BACKEND_REQ (no back-end channel),
    /// INBAND_NOTIFICATIONS, PAGEFAULT, DEVICE_STATE; INFLIGHT_SHMFD is opt-in (below).
    public static let protocolDefault: UInt64 = VhostUserProtocolFeature.mask([
        .mq, .rarp, .replyAck, .netMTU, .config, .resetDevice, .configureMemSlots, .status,
    ])

    /// Implemented in the control plane but offered only when a port asks for it: INFLIGHT_SHMFD
    /// (the session creates/maps the buffer and hands each ring its region; offering it promises
    /// the front-end that the ring layer keeps that region up to date).
    public static let protocolOptIn: UInt64 = VhostUserProtocolFeature.inflightSHMFD.mask
}
