import WarmstartMemory
import WarmstartPools

extension LiveMemory {
    /// Hot upgrade: the memory of the process this one replaces — regions mapped from the passed
    /// descriptors and pools attached with their live ring state — as this process's memory. No
    /// snapshot, no lay-out, no page touched: the pages are the old process's, still in use.
    public static func handedOver(regions: [MemoryRegion], pools: [MbufPool]) -> LiveMemory {
        precondition(!pools.isEmpty, "a handed-over memory has at least the mbuf pool")
        return LiveMemory(origin: .handedOver, regions: regions, pools: pools, snapshot: nil)
    }
}
