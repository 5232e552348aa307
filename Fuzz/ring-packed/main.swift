// Fuzz target: the packed ring walker, device side (WarmstartVirtio Dequeue/Enqueue over a packed
// ring), guest memory from the input. Harness: Fuzz/Common/DeviceRing.swift.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ n: Int) -> CInt {
    DeviceRingHarness.run(data, n, layout: .packed)
    return 0
}
