import CWarmstartShim
import WarmstartBus
import WarmstartEngine
import WarmstartIO
import WarmstartMemory
import WarmstartPools
import WarmstartVhostUser
#if canImport(Glibc)
import Glibc
#endif

/// The Bus driver for `virtio-user` ports. The Bus owns the socket (connect with backoff, or
/// listen/accept with `server=1`); on each new connection this driver runs the frontend sequence
/// on a short-lived thread (so a slow back-end never holds up the Bus's loop or another port),
/// then moves the device to `started` on the loop thread with its queue pairs in
/// `(device.driverContext as! VirtioUserPort).queues` — the Bus's started hooks hand them to the
/// datapath.
///
/// A back-end that disappears: a poll on the socket completes (hang-up or EOF); the device is
/// reported `peerClosed` with the reason, the datapath lets go of its queues (left hook), every
/// posted mbuf returns to the pool, and the Bus connects again — the next connection negotiates
/// from scratch (a new vhost-user session is a device reset for the back-end).
public final class VirtioUserDriver: DeviceDriver {
    public let regions: [MemoryRegion]
    public let pool: MbufPool
    public let arena: RingArena
    /// When set, started ports join it (slot = device index) and leave it before their mbufs are
    /// reclaimed; nil: the caller polls `VirtioUserPort.queues` itself (bench, tests).
    public let datapath: Datapath?
    /// Called on the loop thread when a port with live queue pairs is torn down, before its
    /// posted mbufs go back to the pool: a caller that polls the queues itself (no datapath)
    /// returns from it only once it no longer touches them. Set before the bus starts.
    public var beforeTeardown: ((Device) -> Void)?

    /// One connection's life: set-up may finish after the Bus dropped it.
    final class Connection {
        let fd: Int32
        let device: Device
        var dropped = false
        var watch: IOOpID?
        init(fd: Int32, device: Device) { self.fd = fd; self.device = device }
    }
    private var connections: [ObjectIdentifier: Connection] = [:]
    private let portsLock = PThreadMutex()
    private var ports: [Int: VirtioUserPort] = [:]

    /// The port of device `index` once the bus has attached it (any thread): its MAC for the
    /// counters, its queue pairs for tools.
    public func port(device index: Int) -> VirtioUserPort? { portsLock.locked { ports[index] } }

    /// `regions`: every region shared with the back-end (LiveMemory.sharedRegions: packet memory and
    /// the general region, never the pool's metadata); `arena`: where the
    /// rings go (the general-purpose region).
    public init(regions: [MemoryRegion], pool: MbufPool, arena: RingArena, datapath: Datapath? = nil) {
        self.regions = regions
        self.pool = pool
        self.arena = arena
        self.datapath = datapath
    }

    /// Registers for `virtio-user` ports.
    public func register(on bus: Bus) { bus.register(driver: self, for: .virtioUser) }

    public func attach(device: Device, fd: Int32, bus: Bus) {
        let port: VirtioUserPort
        if let p = device.driverContext as? VirtioUserPort {
            port = p
        } else {
            do {
                port = try VirtioUserPort(config: VirtioUserConfig(spec: device.spec), regions: regions, pool: pool, arena: arena)
            } catch {
                bus.failed(device, reason: error.description)
                return
            }
            device.driverContext = port
            portsLock.locked { ports[device.index] = port }
            // A polling thread that finds the shared memory truncated tells the loop, which takes
            // down every port of this driver that shares it (once per flag; see `memoryLost`).
            port.memoryFault?.onNotice { [weak self] in
                bus.loop.post { self?.memoryLost(bus: bus) }
            }
        }
        let conn = Connection(fd: fd, device: device)
        connections[ObjectIdentifier(device)] = conn
        // Blocking I/O with a deadline on the set-up thread: a back-end that accepts and then says
        // nothing must not hang the port forever.
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK)
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let loop = bus.loop
        runDetached {
            let result: Result<(VhostUserNegotiation, [VirtioUserQueuePair]), VirtioUserError>
            do throws(VirtioUserError) { result = .success(try port.establish(fd: fd)) } catch { result = .failure(error) }
            loop.post { [self] in
                self.finish(device: device, port: port, conn: conn, bus: bus, result: result)
            }
        }
    }

    private func finish(device: Device, port: VirtioUserPort, conn: Connection, bus: Bus,
                        result: Result<(VhostUserNegotiation, [VirtioUserQueuePair]), VirtioUserError>) {
        switch result {
        case let .success((n, pairs)):
            if conn.dropped {
                for p in pairs { p.reclaim() }
                return
            }
            if let why = port.memoryLostReason {
                for p in pairs { p.reclaim() }
                bus.failed(device, reason: why)
                return
            }
            port.negotiation = n
            port.queues = pairs
            port.connections += 1
            bus.ready(device)
            datapath?.attach(slot: device.index, queues: pairs)
            bus.started(device)
            conn.watch = bus.loop.poll(fd: conn.fd, events: Int16(POLLIN) | 0x2000 /* POLLRDHUP */) { [self] r in
                guard !conn.dropped, case .success = r else { return }
                bus.peerClosed(device, reason: "vhost-user back-end at \(device.spec.path) closed the connection; reconnecting")
                _ = self
            }
        case let .failure(e):
            if conn.dropped { return }
            if e.isPermanent {
                bus.failed(device, reason: e.description)
            } else {
                bus.peerClosed(device, reason: e.description)
            }
        }
    }

    /// Loop thread: memory some port shares was truncated (the SIGBUS guard replaced it with zero
    /// pages). Every port of ours whose memory is lost fails with the reason — nothing would be
    /// shared any more on a reconnect — and its posted mbufs (wiped, so counted as lost by the
    /// pool) are let go. Other ports, vhost-user ones included, keep running over the zeroed
    /// memory: pool metadata is private, and every mbuf header is rewritten when allocated.
    func memoryLost(bus: Bus) {
        for conn in Array(connections.values) where !conn.dropped {
            guard let port = conn.device.driverContext as? VirtioUserPort, let why = port.memoryLostReason else { continue }
            bus.failed(conn.device, reason: why)
        }
    }

    public func detach(device: Device, bus: Bus) {
        guard let conn = connections.removeValue(forKey: ObjectIdentifier(device)) else { return }
        conn.dropped = true
        if let w = conn.watch { bus.loop.cancel(w); conn.watch = nil }
        // A set-up thread still talking to the back-end on this socket fails now instead of
        // holding the port's set-up lock (and this loop thread) until its receive times out.
        Glibc.shutdown(conn.fd, Int32(SHUT_RDWR))
        // Whoever polls the queues lets go first (the datapath's threads at a burst boundary, or
        // the caller's own loop); only then may the posted mbufs go back to the pool.
        if let p = device.driverContext as? VirtioUserPort, !p.queues.isEmpty {
            datapath?.detach(slot: device.index)
            beforeTeardown?(device)
        }
        (device.driverContext as? VirtioUserPort)?.teardown()
    }
}
