import WarmstartSpec

// What a queue is set up with. The feature set is fixed when a queue is set up: the fast path is
// chosen per queue, never per packet. The feature bits themselves are `VirtioFeatures` (WarmstartSpec).

/// What a queue needs to know at set-up. Built once from the negotiated features.
public struct VirtqueueOptions: Sendable, Equatable {
    public var features: VirtioFeatures
    /// Most chains handled by one `dequeueBurst` / packets by one `enqueueBurst` (≤ 256).
    public var burstSize: Int

    public init(features: VirtioFeatures, burstSize: Int = 32) {
        self.features = features
        self.burstSize = max(1, min(burstSize, 256))
    }

    public var layout: VirtqueueLayout { VirtqueueLayout(features: features) }
    public var mergeableRxBuffers: Bool { features.contains(.mrgRxbuf) }
    public var eventIndex: Bool { features.contains(.ringEventIdx) }
    public var indirectDescriptors: Bool { features.contains(.ringIndirectDesc) }
    public var inOrder: Bool { features.contains(.inOrder) }

    /// Size of the virtio-net header in front of every packet (§5.1.6): 12 bytes with VERSION_1 or
    /// MRG_RXBUF (`struct virtio_net_hdr_v1` / `_mrg_rxbuf`), else the legacy 10 bytes.
    public var netHeaderSize: Int {
        features.contains(.version1) || features.contains(.mrgRxbuf) ? 12 : 10
    }
}
