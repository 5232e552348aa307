// Driver side: taking back what a device will never return. When a vhost-user back-end goes away
// (socket closed) the rings die with the connection (a new back-end starts from a fresh ring,
// virtio 1.2 §2.6/§2.7 "device reset"), so every buffer still posted is the driver's again.

extension DriverQueue {
    /// Calls `body` with the token of every chain still in flight (posted, not reaped) and marks
    /// them free. Only after the device has stopped touching the ring (peer gone or
    /// GET_VRING_BASE answered): the caller frees the buffers the tokens name.
    public func reclaimInFlight(_ body: (UInt64) -> Void) {
        for id in 0..<size where chains[id].inUse {
            chains[id].inUse = false
            body(chains[id].token)
        }
    }

    /// Chains posted and not yet reaped.
    public var inFlightCount: Int {
        var n = 0
        for id in 0..<size where chains[id].inUse { n += 1 }
        return n
    }
}
