// What a vhost-user-net port offers. The feature bits themselves are the spec's: `VirtioFeatures`
// and `VhostUserProtocolFeature` (WarmstartSpec).

import WarmstartSpec

/// The feature sets a Warmstart vhost-user-net port offers.
public enum VhostUserFeatures {
    /// What a Warmstart port offers by default: the virtio-net set the datapath implements.
    /// LOG_ALL is not offered: this back-end does not implement dirty-page logging (live migration
    /// of a guest attached to it is refused by QEMU rather than silently corrupting memory).
    public static let netDefault: UInt64 = VirtioFeatures([
        .version1, .ringPacked, .ringEventIdx, .ringIndirectDesc, .anyLayout, .mrgRxbuf, .mq,
        .csum, .guestCsum, .mtu, .status, .gso, .guestTSO4, .guestTSO6, .guestECN, .guestUFO,
        .hostTSO4, .hostTSO6, .hostECN, .hostUFO, .guestAnnounce, .protocolFeatures, .inOrder,
    ]).rawValue

    /// Offered only when a port asks (`VhostUserBackendConfiguration.optInFeatures`): MAC — the
    /// address in the config space is then the device's, and drivers (DPDK's virtio-user, Linux)
    /// take it instead of choosing their own; off by default so every port does not hand out the
    /// same default address.
    public static let netOptIn: UInt64 = VirtioFeatures.mac.rawValue

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
