import WarmstartPools

/// Where the copy paths get and return packet buffers. `MbufPool` and `MbufCache` conform; the
/// calls happen once per burst (bulk) or once per extra segment, never per byte.
public protocol MbufSource: AnyObject {
    /// Fills `out[0..<count]` with fresh single-segment mbufs, or takes none and returns false.
    func allocBulk(_ out: UnsafeMutablePointer<Mbuf>, count: Int) -> Bool
    func alloc() -> Mbuf?
    /// Frees the whole chain starting at `m`.
    func free(_ m: Mbuf)
    /// The segment after `m` in its chain, or nil.
    func nextSegment(of m: Mbuf) -> Mbuf?
}

extension MbufPool: MbufSource {}

extension MbufCache: MbufSource {
    @inlinable
    public func nextSegment(of m: Mbuf) -> Mbuf? { pool.nextSegment(of: m) }
}
