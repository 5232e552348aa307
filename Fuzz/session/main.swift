// Fuzz target: a vhost-user back-end session (WarmstartVhostUser VhostUserBackendSession) fed a
// sequence of front-end messages with synthesized descriptors and a real memfd, through ring
// start. Harness: Fuzz/Common/Session.swift.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ n: Int) -> CInt {
    SessionHarness.run(data, n)
    return 0
}
