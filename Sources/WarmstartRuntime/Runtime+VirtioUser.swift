import WarmstartBus
import WarmstartPorts

extension Runtime {
    /// Registers Warmstart's virtio-user driver on the runtime's bus, for `--port virtio-user:…`
    /// (Warmstart as the driver of someone else's vhost-user back-end). A started port joins the
    /// datapath in its slot (the device index) and leaves it, at a burst boundary, before its
    /// posted mbufs go back to the pool. Call before `start()`.
    public func enableVirtioUserPorts() {
        guard let general = memory.generalRegion else { return }
        let driver = VirtioUserDriver(regions: memory.sharedRegions, pool: memory.mbufPool, arena: RingArena.shared(for: general),
                                      datapath: datapath)
        driver.register(on: bus)
        virtioUser = driver
    }
}
