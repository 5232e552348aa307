#if canImport(Glibc)
import Glibc
#endif
import CWarmstartShim
import WarmstartIO

/// TAP ports: open /dev/net/tun on the ring, then TUNSETIFF (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR) and
/// a 12-byte virtio-net header so frames carry the same header the vhost-user ports use and
/// checksum/GSO offloads can pass through. The fd is non-blocking for the datapath's poller.
extension Bus {
    public static let tunDevicePath = "/dev/net/tun"

    func probeTap(_ d: Device) {
        let ifname = d.spec.path
        d.pendingOp = loop.open(Bus.tunDevicePath, flags: O_RDWR) { [self] result in
            d.pendingOp = nil
            guard d.state == .probing else {
                if case .success(let fd) = result { Glibc.close(fd) }
                return
            }
            switch result {
            case .failure(let e):
                let hint = e.errno == ENOENT ? " (is the tun module loaded?)"
                    : (e.errno == EACCES || e.errno == EPERM) ? " (needs access to \(Bus.tunDevicePath))" : ""
                failed(d, reason: "tap \(ifname): open \(Bus.tunDevicePath): \(IOError.message(e.errno))\(hint)")
            case .success(let fd):
                var actual = [CChar](repeating: 0, count: 16)
                var step: UnsafePointer<CChar>? = nil
                let rc = ws_tap_configure(fd, ifname, &actual, &step)
                if rc < 0 {
                    Glibc.close(fd)
                    let what = step.map { String(cString: $0) } ?? "configure"
                    let hint = (rc == -EPERM) ? " (needs CAP_NET_ADMIN)" : (rc == -EBUSY ? " (interface in use by another process?)" : "")
                    failed(d, reason: "tap \(ifname): \(what): \(IOError.message(-rc))\(hint)")
                    return
                }
                connected(d, fd: fd)
            }
        }
    }
}
