/// The virtio-net device configuration space (virtio 1.2 §5.1.4) as GET_CONFIG / SET_CONFIG see it:
///   mac[6] @0 | status u16 @6 | max_virtqueue_pairs u16 @8 | mtu u16 @10   (12 bytes)
/// The later fields (speed, duplex, RSS) are not offered, so the space ends at 12 bytes and any
/// access past it is refused.
public struct VirtioNetConfig: Sendable, Equatable {
    public static let size = 12
    /// VIRTIO_NET_S_LINK_UP
    public static let statusLinkUp: UInt16 = 1
    /// VIRTIO_NET_S_ANNOUNCE
    public static let statusAnnounce: UInt16 = 2

    public var mac: [UInt8]
    public var status: UInt16
    public var maxVirtqueuePairs: UInt16
    public var mtu: UInt16

    public init(mac: [UInt8] = [0x02, 0, 0, 0, 0, 1], status: UInt16 = VirtioNetConfig.statusLinkUp,
                maxVirtqueuePairs: UInt16 = 1, mtu: UInt16 = 1500) {
        precondition(mac.count == 6, "a MAC address is 6 bytes")
        self.mac = mac
        self.status = status
        self.maxVirtqueuePairs = maxVirtqueuePairs
        self.mtu = mtu
    }

    public var bytes: [UInt8] {
        var w = WireWriter(capacity: Self.size)
        w.append(mac)
        w.u16(status)
        w.u16(maxVirtqueuePairs)
        w.u16(mtu)
        return w.bytes
    }

    public init(bytes: [UInt8]) {
        precondition(bytes.count == Self.size)
        var r = WireReader(bytes, offset: 6)
        self.mac = Array(bytes[0..<6])
        self.status = r.u16()
        self.maxVirtqueuePairs = r.u16()
        self.mtu = r.u16()
    }

    /// Checks that `[offset, offset+size)` lies inside the 12-byte space (overflow-safe).
    public static func checkRange(offset: UInt32, size: UInt32) -> Bool {
        let (end, o) = offset.addingReportingOverflow(size)
        return !o && end <= UInt32(Self.size)
    }

    /// Reads `size` bytes at `offset`; nil when out of range.
    public func read(offset: UInt32, size: UInt32) -> [UInt8]? {
        guard Self.checkRange(offset: offset, size: size) else { return nil }
        return Array(bytes[Int(offset)..<Int(offset + size)])
    }

    /// Writes bytes at `offset`. A driver write (not migration) may only touch the MAC: the other
    /// fields are read-only for the driver (virtio 1.2 §5.1.4; the MAC is writable for legacy
    /// drivers and by QEMU's vDPA-style set-config path).
    public mutating func write(offset: UInt32, bytes newBytes: [UInt8], migration: Bool) -> Bool {
        guard Self.checkRange(offset: offset, size: UInt32(newBytes.count)) else { return false }
        if !migration && Int(offset) + newBytes.count > 6 { return false }
        var all = bytes
        all.replaceSubrange(Int(offset)..<Int(offset) + newBytes.count, with: newBytes)
        self = VirtioNetConfig(bytes: all)
        return true
    }
}
