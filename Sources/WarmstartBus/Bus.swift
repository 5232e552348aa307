#if canImport(Glibc)
import Glibc
#endif
import CWarmstartShim
import WarmstartIO

/// Owns the declared devices and probes them all at once on one IOLoop (one control thread for
/// every port). A device that is slow, absent or failing never delays another: each one's probe
/// is a chain of operations on the ring, and each joins the datapath when it reaches `started`.
public final class Bus: @unchecked Sendable {
    public let loop: IOLoop
    public let devices: [Device]
    /// Monotonic ns that report times are measured from (process start by default).
    public let bootOriginNs: UInt64

    private var drivers: [DeviceKind: DeviceDriver] = [:]
    func drivers(for kind: DeviceKind) -> DeviceDriver? { drivers[kind] }
    private var startedHooks: [(Device) -> Void] = []
    private var changeHooks: [(DeviceRecord) -> Void] = []
    private var leftHooks: [(Device) -> Void] = []
    var leftHooksForRelease: [(Device) -> Void] { leftHooks }
    let ownsLoopThread: Bool
    var running = false

    // Published state for other threads.
    private let lock = ConditionLock()
    private var records: [DeviceRecord]
    private var firstPacketNs: [UInt64]

    /// - Parameters:
    ///   - loop: an existing loop to share; nil creates one (honouring WARMSTART_NO_IO_URING).
    ///   - bootOriginNs: where report times start; default the process start (ws_image_start_ns).
    public init(ports: [PortSpec], loop: IOLoop? = nil, forceFallback: Bool = false,
                bootOriginNs: UInt64 = ws_image_start_ns()) throws(IOError) {
        if let loop { self.loop = loop } else { self.loop = try IOLoop(forceFallback: forceFallback) }
        ownsLoopThread = loop == nil
        self.bootOriginNs = bootOriginNs
        var seen: [String: Int] = [:]
        var list: [Device] = []
        for (i, spec) in ports.enumerated() {
            // Two ports with the same name (same socket file name in two directories) stay
            // distinguishable in the report.
            var name = spec.name
            if let n = seen[name] { seen[spec.name] = n + 1; name += "#\(n + 1)" } else { seen[name] = 1 }
            list.append(Device(index: i, name: name, spec: spec))
        }
        devices = list
        records = []
        firstPacketNs = Array(repeating: 0, count: list.count)
        records = list.map { record(of: $0) }
    }

    /// How long `--boot-only` waits for devices to settle unless `--device-wait` says otherwise.
    public static let defaultDeviceWaitSeconds: Double = 2

    /// Human-readable: which I/O backend runs and, for the fallback, why.
    public var ioDescription: String {
        loop.fallbackReason.map { "\(loop.backendName) (\($0))" } ?? loop.backendName
    }

    // MARK: configuration (before start)

    /// The protocol layer for `kind` (for a TAP, a `DeviceOpener`: it also opens the device).
    public func register(driver: DeviceDriver, for kind: DeviceKind) { drivers[kind] = driver }

    /// Called on the loop thread each time a device reaches `started` (the datapath adds it).
    public func onDeviceStarted(_ hook: @escaping (Device) -> Void) { startedHooks.append(hook) }

    /// Called on the loop thread when a started device leaves `started` (peer gone, failure, stop),
    /// before its fd is closed, so the datapath stops polling it.
    public func onDeviceLeftDatapath(_ hook: @escaping (Device) -> Void) { leftHooks.append(hook) }

    /// Called on the loop thread after every state change.
    public func onStateChange(_ hook: @escaping (DeviceRecord) -> Void) { changeHooks.append(hook) }

    // MARK: running

    /// Probes every device at once. Starts the loop thread when the bus created the loop; with a
    /// shared loop the caller runs it.
    public func start() {
        precondition(!running, "Bus.start called twice")
        running = true
        loop.post { [self] in
            for d in devices {
                if let a = d.adoption { d.adoption = nil; beginAdopted(d, a) } else { beginProbe(d) }
            }
        }
        if ownsLoopThread { loop.startThread() }
    }

    /// Call `stop()` before dropping a started bus: pending operations hold the bus.
    ///
    /// Closes every connection and listening socket (removing socket files the bus created),
    /// moves unsettled devices to `stopped`, and stops the loop thread if the bus owns it.
    public func stop() {
        guard running else { return }
        running = false
        let done = ConditionLock()
        var finished = false
        loop.post { [self] in
            for d in devices { shutdown(d) }
            done.withLock { finished = true }
            done.broadcast()
        }
        if ownsLoopThread {
            // Give cancelled operations a moment to complete before the ring goes away.
            let deadline = ws_monotonic_ns() + 200_000_000
            done.withLock { while !finished && done.wait(untilMonotonicNs: deadline) {} }
            loop.stopAndJoin()
            loop.shutdown()
        }
    }

    // MARK: snapshots (any thread)

    public func snapshot() -> [DeviceRecord] { lock.withLock { records } }

    /// Waits until every device is started or failed, or `timeoutSeconds` pass.
    /// Returns true when all settled.
    @discardableResult
    public func waitUntilSettled(timeoutSeconds: Double) -> Bool {
        let deadline = ws_monotonic_ns() + UInt64(max(0, timeoutSeconds) * 1e9)
        return lock.withLock {
            while !records.allSatisfy({ $0.state.isSettled }) {
                if ws_monotonic_ns() >= deadline { return false }
                _ = lock.wait(untilMonotonicNs: deadline)
            }
            return true
        }
    }

    /// Waits until `predicate` holds for the snapshot, or the timeout. For tests and tools.
    @discardableResult
    public func wait(timeoutSeconds: Double, until predicate: ([DeviceRecord]) -> Bool) -> Bool {
        let deadline = ws_monotonic_ns() + UInt64(max(0, timeoutSeconds) * 1e9)
        return lock.withLock {
            while !predicate(records) {
                if ws_monotonic_ns() >= deadline { return false }
                _ = lock.wait(untilMonotonicNs: deadline)
            }
            return true
        }
    }

    /// Thread-safe: the datapath saw the first packet on device `index` (only the first counts).
    public func noteFirstPacket(deviceIndex index: Int) {
        let now = ws_monotonic_ns()
        lock.withLock {
            guard firstPacketNs[index] == 0 else { return }
            firstPacketNs[index] = now
            records[index].firstPacketMs = ms(now - min(now, bootOriginNs))
        }
    }

    // MARK: transitions (loop thread; drivers call these)

    public func negotiating(_ d: Device) { transition(d, to: .negotiating) }

    public func ready(_ d: Device) {
        d.readyNs = ws_monotonic_ns()
        transition(d, to: .ready)
    }

    public func started(_ d: Device) {
        let now = ws_monotonic_ns()
        d.startedNs = now
        if d.firstStartedNs == 0 {
            d.firstStartedNs = now
            d.firstProbeStartNs = d.probeStartNs
            d.firstConnectedNs = d.connectedNs
        }
        d.reason = nil
        transition(d, to: .started)
        for h in startedHooks { h(d) }
    }

    /// Permanent failure: the connection is dropped and the device is not probed again.
    public func failed(_ d: Device, reason: String) {
        dropConnection(d)
        closeListener(d)
        d.reason = reason
        transition(d, to: .failed)
    }

    /// The peer went away (or broke the protocol in a way worth retrying): drop the connection
    /// and probe again — a client reconnects with backoff, a server accepts the next peer.
    public func peerClosed(_ d: Device, reason: String) {
        guard d.fd >= 0 else { return }
        dropConnection(d)
        d.reconnects += 1
        d.reason = reason
        reprobe(d)
    }

    func transition(_ d: Device, to state: DeviceState) {
        d.state = state
        let rec = record(of: d)
        lock.withLock { records[d.index] = rec.with(firstPacketMs: records[d.index].firstPacketMs) }
        lock.broadcast()
        for h in changeHooks { h(rec) }
    }

    func record(of d: Device) -> DeviceRecord {
        func span(_ a: UInt64, _ b: UInt64) -> Double? { a != 0 && b >= a ? ms(b - a) : nil }
        // The cycle under way, unless a device that once started is probing again: then the one
        // that first started it (the boot report's figures).
        let latest = d.firstStartedNs == 0 || d.startedNs != 0
        return DeviceRecord(name: d.name, kind: d.kind.rawValue, path: d.spec.path, state: d.state,
                            probeMs: latest ? span(d.probeStartNs, d.connectedNs) : span(d.firstProbeStartNs, d.firstConnectedNs),
                            startMs: latest ? span(d.connectedNs, d.startedNs) : span(d.firstConnectedNs, d.firstStartedNs),
                            readyAtMs: d.firstStartedNs == 0 ? nil : ms(d.firstStartedNs - min(d.firstStartedNs, bootOriginNs)),
                            firstPacketMs: nil, reason: d.reason, reconnects: d.reconnects)
    }

    // MARK: probe plumbing shared by the kinds

    func beginProbe(_ d: Device) {
        d.probeStartNs = ws_monotonic_ns()
        d.connectedNs = 0
        d.startedNs = 0
        transition(d, to: .probing)
        switch d.kind {
        case .vhostUser: probeServer(d)
        case .vhostUserClient: probeClient(d)
        case .virtioUser: d.spec.listens ? probeServer(d) : probeClient(d)
        case .tap: openByDriver(d)
        }
    }

    /// After a lost connection: probe the same way again, keeping the listening socket.
    func reprobe(_ d: Device) {
        d.probeStartNs = ws_monotonic_ns()
        d.connectedNs = 0
        d.startedNs = 0
        transition(d, to: .probing)
        switch d.kind {
        case .vhostUser: acceptNext(d)
        case .virtioUser where d.spec.listens: acceptNext(d)
        case .vhostUserClient, .virtioUser: scheduleReconnect(d, after: d.backoffMinNs)
        case .tap: openByDriver(d)
        }
    }

    /// The socket connection (or TAP fd) exists: hand it to the driver. Loop thread; a
    /// `DeviceOpener` calls it with the descriptor it opened.
    public func connected(_ d: Device, fd: Int32) {
        d.fd = fd
        d.generation += 1
        d.connectedNs = ws_monotonic_ns()
        d.backoffNs = 0
        guard let driver = drivers[d.kind] else {
            failed(d, reason: "no driver registered for \(d.kind.rawValue) ports")
            return
        }
        d.attachedDriver = driver
        transition(d, to: .negotiating)
        driver.attach(device: d, fd: fd, bus: self)
    }

    /// Detaches the driver and closes the connection (shutdown first: io_uring operations hold
    /// their own file reference, so only shutdown wakes a pending receive on it).
    func dropConnection(_ d: Device) {
        if d.state == .started { for h in leftHooks { h(d) } }
        if let op = d.pendingOp { loop.cancel(op); d.pendingOp = nil }
        if let drv = d.attachedDriver { d.attachedDriver = nil; drv.detach(device: d, bus: self) }
        if d.fd >= 0 {
            if d.kind != .tap { Glibc.shutdown(d.fd, Int32(SHUT_RDWR)) }
            Glibc.close(d.fd)
            d.fd = -1
        }
    }

    func closeListener(_ d: Device) {
        if d.listenFD >= 0 {
            Glibc.shutdown(d.listenFD, Int32(SHUT_RDWR))
            Glibc.close(d.listenFD)
            d.listenFD = -1
        }
        if d.ownsSocketFile {
            unlink(d.spec.path)
            d.ownsSocketFile = false
        }
    }

    private func shutdown(_ d: Device) {
        dropConnection(d)
        closeListener(d)
        if !d.state.isSettled || d.state == .started {
            if d.state == .started {
                d.reason = nil
            } else if let why = d.reason {
                // A device that ran and lost its peer is waiting for the next one, not probing anew.
                d.reason = d.firstStartedNs != 0 ? "stopped while waiting for its peer again (\(why))" : "stopped while probing: \(why)"
            } else {
                d.reason = "stopped before it was ready"
            }
            transition(d, to: .stopped)
        }
    }
}

func ms(_ ns: UInt64) -> Double { Double(ns) / 1e6 }

extension DeviceRecord {
    func with(firstPacketMs: Double?) -> DeviceRecord {
        var r = self
        r.firstPacketMs = firstPacketMs
        return r
    }
}
