import Logging
import WarmstartBus
import WarmstartIO
import WarmstartVhostUser

/// Hot upgrade (Docs/HANDOFF.md) on the vhost-user driver. Every method runs on the bus's loop
/// thread (`Bus.sync`).
extension VhostUserBackendPort {
    /// Old process, freeze: stop reading `device`'s connection at a message boundary. The pending
    /// io_uring recvmsg is cancelled: left outstanding it would swallow a message the front-end
    /// sends during or after the handoff (both processes hold the socket).
    public func freeze(_ device: Device) {
        guard let c = device.driverContext as? VhostUserConnection else { return }
        c.frozen = true
        if let op = c.pendingRead { bus(of: c).loop.cancel(op) }
    }

    /// Whether `device`'s connection is frozen with nothing outstanding, and whether it is at a
    /// message boundary (false: a message raced the cancel and was partly or wholly read here —
    /// the freeze must fail; `thaw` handles the message).
    public func frozenState(_ device: Device) -> (settled: Bool, atBoundary: Bool) {
        guard let c = device.driverContext as? VhostUserConnection else { return (true, true) }
        let settled = c.pendingRead == nil && !c.sending
        return (settled, c.header == nil && c.headerBytes.isEmpty && c.payload.isEmpty && c.fds.isEmpty)
    }

    /// Undoes `freeze` (the handoff rolled back): reading resumes where it stopped.
    public func thaw(_ device: Device) {
        guard let c = device.driverContext as? VhostUserConnection, c.frozen else { return }
        c.frozen = false
        c.readNext()
    }

    /// The session of `device`'s connection, nil when no front-end is connected.
    public func session(of device: Device) -> VhostUserBackendSession? {
        (device.driverContext as? VhostUserConnection)?.session
    }

    /// Where each ring of `device`'s built queue pairs stands. Only meaningful with the datapath
    /// paused.
    public func ringPositions(of device: Device) -> [(index: Int, base: VringBase)] {
        guard let c = device.driverContext as? VhostUserConnection else { return [] }
        return c.pairs.values.flatMap { p in
            [(p.rxSetup.index, p.position(ofRing: p.rxSetup.index)), (p.txSetup.index, p.position(ofRing: p.txSetup.index))]
        }
    }

    /// Where ring `index` of `device` stands now, read without taking its pair off the datapath
    /// (provisional while the datapath runs; the session's own `ringPosition` would detach the
    /// pair, as GET_VRING_BASE must — and stop forwarding long before the quiesce). Nil when the
    /// ring has no built pair.
    public func provisionalPosition(of device: Device, ring index: Int) -> VringBase? {
        guard let c = device.driverContext as? VhostUserConnection, let p = c.pairs[index / 2] else { return nil }
        return p.position(ofRing: index)
    }

    /// New process: `device`'s connection is the handed-over socket `fd`, served by the imported
    /// `session`; `rings` (at the final positions) become queue pairs on the datapath at once, and
    /// reading resumes. Use as the `attach` of `Bus.adopt`.
    public func adopt(device: Device, fd: Int32, bus: Bus, session: VhostUserBackendSession, rings: [VringSetup]) {
        var log = logger
        log[metadataKey: "port"] = "\(device.name)"
        let conn = VhostUserConnection(device: device, fd: fd, bus: bus, driver: self,
                                       configuration: Self.configuration(for: device.spec), logger: log, session: session)
        device.driverContext = conn
        for s in rings {
            conn.setups[s.index] = s
            conn.enabled[s.index] = s.enabled
        }
        log.info("vhost-user: adopted the handed-over connection (\(rings.count) started rings)")
        conn.rebuild()
        conn.readNext()
    }

    private func bus(of c: VhostUserConnection) -> Bus { c.bus }
}
