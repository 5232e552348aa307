// Fuzz target: the split ring, driver side (WarmstartVirtioDriver DriverQueue: the virtio-user front-end
// reaping used entries an untrusted back-end wrote). Harness: Fuzz/Common/DriverRing.swift.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ n: Int) -> CInt {
    DriverRingHarness.run(data, n, layout: .split)
    return 0
}
