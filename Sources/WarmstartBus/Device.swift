import WarmstartIO

/// Life of a device on the bus. Boot waits for none of them: each joins the datapath when it
/// reaches `started`, independently of the others.
public enum DeviceState: String, Sendable, CaseIterable {
    case declared, probing, negotiating, ready, started, stopped, failed

    /// `--boot-only` and `waitUntilSettled` stop waiting for a device in one of these states.
    public var isSettled: Bool { self == .started || self == .failed || self == .stopped }
}

/// One port on the bus. Mutated only on the bus's loop thread; other threads read
/// `DeviceRecord` snapshots (`Bus.snapshot()`).
public final class Device: @unchecked Sendable {
    /// Position in the bus's list (stable for the bus's lifetime).
    public let index: Int
    public let name: String
    public let spec: PortSpec
    public var kind: DeviceKind { spec.kind }

    public internal(set) var state: DeviceState = .declared
    /// Why the device failed, or why it is probing again (peer closed, retrying a connect).
    public internal(set) var reason: String?
    /// The connected descriptor handed to the driver (socket or TAP fd), -1 before that.
    public internal(set) var fd: Int32 = -1
    /// How many times the connection was lost and probed again.
    public internal(set) var reconnects = 0
    /// Driver-owned state (the vhost-user layer keeps its session here).
    public var driverContext: AnyObject?

    // Monotonic timestamps in ns (0: not reached). Each probe cycle restarts probe/connect.
    var probeStartNs: UInt64 = 0
    var connectedNs: UInt64 = 0
    var readyNs: UInt64 = 0
    var startedNs: UInt64 = 0
    var firstStartedNs: UInt64 = 0
    /// The cycle that first started the device (its boot): kept when a lost peer restarts the others.
    var firstProbeStartNs: UInt64 = 0
    var firstConnectedNs: UInt64 = 0

    // Probe machinery.
    var listenFD: Int32 = -1
    /// We created the socket file (and unlink it at stop).
    var ownsSocketFile = false
    var pendingOp: IOOpID?
    var backoffNs: UInt64 = 0
    var attachedDriver: DeviceDriver?
    /// Bumped on every new connection so late completions for an old one are ignored.
    var generation: UInt64 = 0
    /// Hot upgrade: descriptors handed over by the previous process, used by `Bus.start` instead
    /// of probing (see Bus+Handoff.swift).
    var adoption: Adoption?
    /// Hot upgrade: accepting is suspended (a cancelled accept's completion is not a failure).
    var acceptFrozen = false

    /// The listening socket (server ports), -1 when none. Read on the loop thread.
    public var listeningFD: Int32 { listenFD }

    init(index: Int, name: String, spec: PortSpec) {
        self.index = index
        self.name = name
        self.spec = spec
    }
}

/// A plain snapshot of a device for the report and `warmstart stats`.
public struct DeviceRecord: Sendable, Equatable {
    public var name: String
    public var kind: String
    public var path: String
    public var state: DeviceState
    /// Probe start → socket connected / TAP open (latest cycle; while a device that lost its peer
    /// waits for the next one, the cycle that first started it).
    public var probeMs: Double?
    /// Connected → started (protocol negotiation and start), of the same cycle.
    public var startMs: Double?
    /// Boot origin → first time the device was started (it joined the datapath).
    public var readyAtMs: Double?
    /// Boot origin → first packet the datapath saw on this device.
    public var firstPacketMs: Double?
    public var reason: String?
    public var reconnects: Int
}

/// A protocol layer on top of a connected device (vhost-user backend, virtio-user frontend, ...).
/// The bus calls it on the loop thread; it uses `bus.loop` for its I/O and moves the device on
/// with `bus.negotiating/ready/started/failed/peerClosed`.
public protocol DeviceDriver: AnyObject {
    /// The socket connection (or TAP fd) exists; the device is `negotiating`. The bus owns `fd`
    /// and closes it when the device is detached.
    func attach(device: Device, fd: Int32, bus: Bus)
    /// The bus is dropping the connection (peer closed, failure, or stop): cancel pending
    /// operations and forget `fd`.
    func detach(device: Device, bus: Bus)
}

/// A driver whose devices the bus cannot probe by itself (a TAP: its descriptor comes from
/// /dev/net/tun and an ioctl, not from a socket). The bus calls `open` where it would probe; the
/// driver opens the descriptor (`Bus.open`) and hands it over with `Bus.connected`, or fails the
/// device, and the bus then drives it like any other.
public protocol DeviceOpener: DeviceDriver {
    /// Loop thread; the device is `probing`.
    func open(device: Device, bus: Bus)
}
