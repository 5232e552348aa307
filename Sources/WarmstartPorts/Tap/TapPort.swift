#if canImport(Glibc)
import Glibc
#endif
import CWarmstartShim
import WarmstartBus
import WarmstartEngine
import WarmstartIO

/// TAP ports, the driver: opens /dev/net/tun on the bus's ring, then TUNSETIFF
/// (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR) and a 12-byte virtio-net header so frames carry the same
/// header the vhost-user ports use and checksum/GSO offloads can pass through. The fd is
/// non-blocking for the polling threads. An open TAP needs no negotiation: it is started at once
/// and joins the datapath as one `TapQueue`, and leaves it before the bus closes its fd.
public final class TapPort: DeviceOpener {
    public static let tunDevicePath = "/dev/net/tun"

    public let datapath: Datapath

    public init(datapath: Datapath) {
        self.datapath = datapath
    }

    /// Makes this the driver of the bus's TAP ports. Before `bus.start()`.
    public func register(on bus: Bus) {
        bus.register(driver: self, for: .tap)
    }

    public func open(device d: Device, bus: Bus) {
        let ifname = d.spec.path
        bus.open(d, path: TapPort.tunDevicePath, flags: O_RDWR) { result in
            switch result {
            case .failure(let e):
                let hint = e.errno == ENOENT ? " (is the tun module loaded?)"
                    : (e.errno == EACCES || e.errno == EPERM) ? " (needs access to \(TapPort.tunDevicePath))" : ""
                bus.failed(d, reason: "tap \(ifname): open \(TapPort.tunDevicePath): \(IOError.message(e.errno))\(hint)")
            case .success(let fd):
                var actual = [CChar](repeating: 0, count: 16)
                var step: UnsafePointer<CChar>? = nil
                let rc = ws_tap_configure(fd, ifname, &actual, &step)
                if rc < 0 {
                    Glibc.close(fd)
                    let what = step.map { String(cString: $0) } ?? "configure"
                    let hint = (rc == -EPERM) ? " (needs CAP_NET_ADMIN)" : (rc == -EBUSY ? " (interface in use by another process?)" : "")
                    bus.failed(d, reason: "tap \(ifname): \(what): \(IOError.message(-rc))\(hint)")
                    return
                }
                bus.connected(d, fd: fd)
            }
        }
    }

    /// The TAP is open (probed, or handed over by the previous process): started, on the datapath.
    public func attach(device: Device, fd: Int32, bus: Bus) {
        bus.ready(device)
        bus.started(device)
        datapath.attach(slot: device.index, queues: [TapQueue(fd: fd, name: device.name)])
    }

    /// Before the bus closes the fd: off the datapath (a started TAP only: one that never started
    /// has no queue there).
    public func detach(device: Device, bus: Bus) {
        if device.state == .started { datapath.detach(slot: device.index) }
    }
}
