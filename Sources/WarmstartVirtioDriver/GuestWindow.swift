/// One contiguous host range and its guest (I/O) address: the whole translation a driver needs
/// when every buffer it posts lies in one region (a virtio-user port's mbuf pool). A range is
/// translated only when it lies whole inside the window.
@frozen
public struct GuestWindow: Sendable {
    public let host: UInt
    public let guest: UInt64
    public let size: UInt

    @inlinable public init(host: UnsafeRawPointer, guest: UInt64, size: Int) {
        self.host = UInt(bitPattern: host)
        self.guest = guest
        self.size = UInt(size)
    }

    /// Guest address of `[p, p + length)`, or nil when any of it is outside the window.
    @inlinable @inline(__always)
    public func guestAddress(of p: UnsafeRawPointer, length: Int) -> UInt64? {
        let off = UInt(bitPattern: p) &- host
        guard off < size, UInt(bitPattern: length) <= size &- off else { return nil }
        return UInt64(off) &+ guest
    }
}
