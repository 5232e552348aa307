import Logging
import WarmstartBus
import WarmstartIO
import WarmstartSpec
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
        return (settled, c.atMessageBoundary)
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

    /// The queue pairs built for `device`'s rings. Taken at export: with the control plane frozen
    /// they cannot change until the handoff ends, so their final positions can be read straight
    /// from them once the datapath is paused, without a trip to the loop thread.
    public func builtPairs(of device: Device) -> [VhostQueuePair] {
        guard let c = device.driverContext as? VhostUserConnection else { return [] }
        return c.pairs.keys.sorted().compactMap { c.pairs[$0] }
    }

    /// Where ring `index` of `device` stands now, read without taking its pair off the datapath
    /// (provisional while the datapath runs; the session's own `ringPosition` would detach the
    /// pair, as GET_VRING_BASE must — and stop forwarding long before the quiesce). Nil when the
    /// ring has no built pair.
    public func provisionalPosition(of device: Device, ring index: Int) -> VirtqueuePosition? {
        guard let c = device.driverContext as? VhostUserConnection, let p = c.pairs[index / 2] else { return nil }
        return p.position(ofRing: index)
    }

    /// New process, while the old one still forwards (before `Bus.start`, with the datapath's
    /// threads not started yet): `device`'s connection is the handed-over socket `fd`, served by
    /// the imported `session`; `rings` (at provisional positions) become queue pairs on the
    /// datapath now, so the blackout has only `moveRings` left to do. Nothing reads the socket
    /// until `startPrepared`: until the commit the old process may resume and own it.
    public func prepareAdoption(device: Device, fd: Int32, bus: Bus, session: VhostUserBackendSession,
                                rings: [VringSetup]) -> PreparedVhostUserConnection {
        var log = logger
        log[metadataKey: "port"] = "\(device.name)"
        let conn = VhostUserConnection(device: device, fd: fd, bus: bus, driver: self,
                                       configuration: Self.configuration(for: device.spec), logger: log, session: session)
        for s in rings {
            conn.setups[s.index] = s
            conn.enabled[s.index] = s.enabled
        }
        conn.buildPairs()
        let active = conn.activePairs
        if !active.isEmpty {
            datapath.attach(slot: conn.slot, queues: active)
            conn.attachedSlot = true
        }
        return PreparedVhostUserConnection(conn)
    }

    /// Inside the blackout (the old process paused, this datapath's threads parked): every built
    /// pair's rings move to their final positions. A built ring without a final position, or a
    /// position for a ring without a pair, means the two processes disagree: the handoff must
    /// abort. No allocation.
    public func moveRings(of p: PreparedVhostUserConnection, to positions: [Int: VirtqueuePosition]) throws(VhostQueueError) {
        let c = p.connection
        var moved = 0
        func move(_ pair: VhostQueuePair, _ i: Int) throws(VhostQueueError) {
            guard let b = positions[i] else { throw .noFinalPosition(index: i) }
            try pair.reposition(ring: i, to: b)
            moved += 1
        }
        for pair in c.pairs.values {
            try move(pair, pair.rxSetup.index)
            try move(pair, pair.txSetup.index)
        }
        guard moved == positions.count else {
            throw .positionCount(handedOver: positions.count, built: moved)
        }
    }

    /// Loop thread, after the commit, as the `attach` of `Bus.adopt`: the prepared connection
    /// serves `device` from now on (its pairs already forward) and reading resumes.
    public func startPrepared(_ p: PreparedVhostUserConnection, device: Device) {
        let c = p.connection
        device.driverContext = c
        c.logger.info("vhost-user: adopted the handed-over connection (\(c.setups.count) started rings, \(c.pairs.count) queue pairs)")
        let active = c.activePairs
        if c.attachedSlot {
            bus(of: c).ready(device)
            bus(of: c).started(device)
        }
        onQueuesChanged?(device, active)
        c.readNext()
    }

    /// The handoff failed before the commit: the prepared pairs leave the datapath (stop its
    /// threads first: parked threads acknowledge no new plan). The socket is not closed here.
    public func abandonPrepared(_ p: PreparedVhostUserConnection) { p.connection.close() }

    private func bus(of c: VhostUserConnection) -> Bus { c.bus }
}

/// A handed-over vhost-user connection made ready before the commit (`prepareAdoption`).
public final class PreparedVhostUserConnection {
    let connection: VhostUserConnection
    init(_ c: VhostUserConnection) { connection = c }
}
