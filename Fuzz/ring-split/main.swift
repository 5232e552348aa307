// Fuzz target: the split ring walker, device side (WarmstartVirtio Dequeue/Enqueue over a split
// ring), guest memory from the input. Harness: Fuzz/Common/DeviceRing.swift.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ n: Int) -> CInt {
    DeviceRingHarness.run(data, n, layout: .split)
    return 0
}
