#if canImport(Glibc)
import Glibc
#endif
import WarmstartIO

/// Devices whose driver opens them (`DeviceOpener`, a TAP): the bus asks the driver, and lends it
/// the ring to open with.
extension Bus {
    /// Loop thread: the device is `probing`; its driver opens it, or it fails.
    func openByDriver(_ d: Device) {
        guard let opener = drivers(for: d.kind) as? DeviceOpener else {
            failed(d, reason: "no driver registered for \(d.kind.rawValue) ports")
            return
        }
        opener.open(device: d, bus: self)
    }

    /// Loop thread, for a `DeviceOpener`: opens `path` on the ring as the device's pending
    /// operation (the bus cancels it when the device stops). `done` runs only while the device is
    /// still probing; a descriptor that arrives later is closed.
    public func open(_ d: Device, path: String, flags: Int32, _ done: @escaping (IOResult<Int32>) -> Void) {
        d.pendingOp = loop.open(path, flags: flags) { result in
            d.pendingOp = nil
            guard d.state == .probing else {
                if case .success(let fd) = result { Glibc.close(fd) }
                return
            }
            done(result)
        }
    }
}
