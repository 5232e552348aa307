import CWarmstartShim
import Logging
import WarmstartBus
import WarmstartEngine
import WarmstartIO
import WarmstartSpec
import WarmstartVhostUser
import WarmstartVhostUserWire
import WarmstartVirtio
#if canImport(Glibc)
import Glibc
#endif

/// The Bus driver for `vhost-user` and `vhost-user-client` ports: Warmstart as the vhost-user
/// back-end. One instance serves every such port; each connection gets a `VhostUserConnection`
/// (kept in `Device.driverContext`) that runs the session on the bus's IOLoop.
///
/// The device's Datapath slot is its bus index. A device is `started` while at least one queue
/// pair is polled, and goes back to `negotiating` when the front-end stops its last pair.
public final class VhostUserBackendPort: DeviceDriver {
    public let datapath: Datapath
    public let logger: Logger
    /// Called on the loop thread after a device's set of polled queue pairs changed (tests, stats).
    public var onQueuesChanged: ((Device, [VhostQueuePair]) -> Void)?

    public init(datapath: Datapath, logger: Logger = Logger(label: "warmstart.vhost-user")) {
        self.datapath = datapath
        self.logger = logger
    }

    /// Registers this driver for both back-end kinds.
    public func register(on bus: Bus) {
        bus.register(driver: self, for: .vhostUser)
        bus.register(driver: self, for: .vhostUserClient)
    }

    /// The session configuration a port spec asks for: `queues=N` queue pairs, `features=0x...`
    /// as a mask over the features Warmstart offers, `max-memory=SIZE` the front-end's memory cap.
    public static func configuration(for spec: PortSpec) -> VhostUserBackendConfiguration {
        let pairs = spec.option("queues").flatMap { Int($0) } ?? 1
        let mask = spec.option("features").flatMap(parseFeatureMask) ?? ~0
        return VhostUserBackendConfiguration(maxQueuePairs: max(1, min(pairs, 128)), featureMask: mask,
                                             maxMemoryBytes: spec.maxMemoryBytes ?? VhostUserBackendConfiguration.defaultMaxMemoryBytes)
    }

    /// `0x...` hexadecimal or decimal.
    public static func parseFeatureMask(_ text: String) -> UInt64? {
        if text.hasPrefix("0x") || text.hasPrefix("0X") { return UInt64(text.dropFirst(2), radix: 16) }
        return UInt64(text)
    }

    // MARK: DeviceDriver (loop thread)

    public func attach(device: Device, fd: Int32, bus: Bus) {
        var log = logger
        log[metadataKey: "port"] = "\(device.name)"
        let conn = VhostUserConnection(device: device, fd: fd, bus: bus, driver: self,
                                       configuration: Self.configuration(for: device.spec), logger: log)
        device.driverContext = conn
        conn.start()
    }

    public func detach(device: Device, bus: Bus) {
        guard let conn = device.driverContext as? VhostUserConnection else { return }
        device.driverContext = nil
        conn.close()
    }

    /// The queue pairs device `index` polls now (loop thread).
    public func queuePairs(of device: Device) -> [VhostQueuePair] {
        (device.driverContext as? VhostUserConnection)?.activePairs ?? []
    }
}

/// One vhost-user connection: reads framed messages with the loop's message operations, feeds
/// the session, sends replies, and turns ring events into queue pairs on the datapath.
final class VhostUserConnection {
    let device: Device
    let fd: Int32
    unowned let bus: Bus
    unowned let driver: VhostUserBackendPort
    let session: VhostUserBackendSession
    var logger: Logger
    var closed = false

    /// Framing: a message may arrive over several recvmsg calls (the partial one's descriptors
    /// are the decoder's). `ready` holds a whole message that came in while frozen.
    var decoder = VhostUserFrameDecoder(expectReply: false)
    var frames: [VhostUserFrame] = []
    var ready: VhostUserFrame?

    /// The datapath's view: started rings, built pairs, and the positions of stopped rings.
    var setups: [Int: VringSetup] = [:]
    var enabled: [Int: Bool] = [:]
    var pairs: [Int: VhostQueuePair] = [:]
    /// Positions of rings stopped by GET_VRING_BASE, for the second ring of a pair (its pair is
    /// already gone when the front-end asks for it).
    var stoppedStates: [Int: VirtqueuePosition] = [:]
    /// Positions of running rings whose memory or addresses changed: the rebuilt pair resumes here.
    var keptStates: [Int: VirtqueuePosition] = [:]
    var attachedSlot = false
    /// Hot upgrade: reading stopped at a message boundary (see VhostUserPort+Handoff.swift).
    var frozen = false
    /// The outstanding receive / whether a reply is being sent (freeze waits for neither).
    var pendingRead: IOOpID?
    var sending = false

    init(device: Device, fd: Int32, bus: Bus, driver: VhostUserBackendPort,
         configuration: VhostUserBackendConfiguration, logger: Logger, session adopted: VhostUserBackendSession? = nil) {
        self.device = device
        self.fd = fd
        self.bus = bus
        self.driver = driver
        self.logger = logger
        session = adopted ?? VhostUserBackendSession(configuration: configuration, logger: logger)
        session.ringPosition = { [unowned self] index in self.ringPosition(index) }
        // A polling thread that finds the session's memory faulted (the front-end shrank a file)
        // tells the loop, which closes this session only.
        let loop = bus.loop
        session.memoryFault.onNotice { [weak self] in loop.post { self?.memoryFaulted() } }
    }

    var datapath: Datapath { driver.datapath }
    var slot: Int { device.index }

    var activePairs: [VhostQueuePair] {
        pairs.keys.sorted().compactMap { q in
            enabled[2 * q] != false && enabled[2 * q + 1] != false ? pairs[q] : nil
        }
    }

    func start() {
        logger.info("vhost-user: front-end connected")
        readNext()
    }

    /// The bus is dropping the connection: stop polling, release every ring and the memory.
    func close() {
        guard !closed else { return }
        closed = true
        detachFromDatapath()
        pairs = [:]
        setups = [:]
        decoder.reset()
        for f in ready?.fds ?? [] { Glibc.close(f) }
        ready = nil
    }

    /// Nothing of a message is held: no byte, no descriptor, no message waiting to be handled.
    var atMessageBoundary: Bool { decoder.isAtBoundary && ready == nil }

    // MARK: reading

    func readNext() {
        guard !closed, !frozen else { return }
        if let frame = ready {
            ready = nil
            return deliver(frame)
        }
        // Never past the part in progress, so one read holds bytes of one message only.
        pendingRead = bus.loop.receiveMessage(fd: fd, maxBytes: decoder.bytesWanted, maxFDs: VhostUserFrameDecoder.maxFDs) { [self] result in
            pendingRead = nil
            if closed {
                if case let .success(m) = result { for f in m.fds { Glibc.close(f) } }
                return
            }
            switch result {
            case let .failure(e):
                if e.isCanceled { return }
                lost("receive failed: \(e)")
            case let .success(m):
                frames.removeAll(keepingCapacity: true)
                do throws(VhostUserFrameError) {
                    try decoder.feed(m.bytes, fds: m.fds, fdsTruncated: m.truncated, into: &frames)
                } catch {
                    return frameError(error)
                }
                if m.bytes.isEmpty { return lost("front-end closed the connection") }
                ready = frames.first
                frames.removeAll(keepingCapacity: true)
                readNext()
            }
        }
    }

    /// The byte stream stopped framing: drop the session with the reason.
    func frameError(_ error: VhostUserFrameError) {
        switch error {
        case let .header(e): protocolError("invalid message header: \(e)")
        case .tooManyFDs, .fdsWithoutBytes: protocolError("\(error)")
        case .truncated: lost("front-end closed the connection")
        }
    }

    /// A whole message is in: handle it, reply, apply the events, read the next.
    func deliver(_ frame: VhostUserFrame) {
        let h = frame.header
        let outcome = session.receive(header: h, payload: frame.payload, fds: frame.fds)
        let name = h.knownRequest.map { "\($0)" } ?? "request \(h.request)"
        // A fault while handling the message (the control thread touched memory that was gone).
        if session.memoryFault.isSet { return memoryFaulted() }
        if let e = outcome.error {
            logger.warning("vhost-user: refused \(name): \(e)")
        }
        apply(outcome.events)
        if outcome.isFatal {
            return protocolError("fatal error in \(name): \(outcome.error.map { "\($0)" } ?? "unknown")")
        }
        guard let reply = outcome.reply else { return readNext() }
        sending = true
        bus.loop.sendMessage(fd: fd, bytes: reply.encoded(), fds: reply.fds) { [self] result in
            sending = false
            if closed { return }
            if case let .failure(e) = result {
                if !e.isCanceled { lost("reply to \(name) failed: \(e)") }
                return
            }
            readNext()
        }
    }

    /// The front-end broke the protocol: log it and drop this session only (the port accepts or
    /// reconnects to the next front-end; other ports keep forwarding).
    func protocolError(_ why: String) {
        logger.error("vhost-user: dropping the session: \(why)")
        bus.peerClosed(device, reason: "protocol error: \(why)")
    }

    /// The front-end shrank memory this session maps (the SIGBUS guard replaced it with zero
    /// pages): drop the session with the reason; the port waits for the next front-end.
    func memoryFaulted() {
        guard !closed, let why = session.memoryFault.reason(peer: "front-end") else { return }
        logger.error("vhost-user: dropping the session: \(why)")
        bus.peerClosed(device, reason: why)
    }

    func lost(_ why: String) {
        logger.info("vhost-user: \(why)")
        bus.peerClosed(device, reason: why)
    }

    // MARK: rings → queue pairs

    func apply(_ events: [VhostUserEvent]) {
        var changed = false
        for e in events {
            switch e {
            case let .ringStarted(s):
                // A (re)started ring begins at the base the session holds (SET_VRING_BASE or
                // where it stopped), not at anything kept here.
                setups[s.index] = s
                stoppedStates[s.index] = nil
                keptStates[s.index] = nil
                enabled[s.index] = s.enabled
                changed = true
            case let .ringUpdated(s):
                // New memory or addresses under a running ring: rebuild its pair at the same position.
                if let pair = pairs[s.index / 2] {
                    detachFromDatapath()
                    keptStates[pair.rxSetup.index] = pair.position(ofRing: pair.rxSetup.index)
                    keptStates[pair.txSetup.index] = pair.position(ofRing: pair.txSetup.index)
                    pairs[s.index / 2] = nil
                }
                setups[s.index] = s
                changed = true
            case let .ringStopped(index, _):
                // ringPosition already took the pair off the datapath (and kept its position).
                _ = ringPosition(index)
                setups[index] = nil
                keptStates[index] = nil
                changed = true
            case let .ringEnabled(index, on):
                enabled[index] = on
                changed = true
            case .deviceReset:
                detachFromDatapath()
                pairs = [:]; setups = [:]; stoppedStates = [:]; keptStates = [:]
                changed = true
            default:
                break
            }
        }
        if changed { rebuild() }
    }

    /// GET_VRING_BASE (or reset) on a started ring: take the slot off the datapath first, so no
    /// thread touches the ring, then report where the ring stands.
    func ringPosition(_ index: Int) -> VirtqueuePosition? {
        if let pair = pairs[index / 2] {
            detachFromDatapath()
            stoppedStates[pair.rxSetup.index] = pair.position(ofRing: pair.rxSetup.index)
            stoppedStates[pair.txSetup.index] = pair.position(ofRing: pair.txSetup.index)
            pairs[index / 2] = nil
        }
        return stoppedStates[index]
    }

    /// Builds the pairs whose two rings are started, then publishes the enabled ones to the slot.
    func rebuild() {
        buildPairs()
        let active = activePairs
        detachFromDatapath()
        if !active.isEmpty {
            datapath.attach(slot: slot, queues: active)
            attachedSlot = true
            if device.state != .started {
                bus.ready(device)
                bus.started(device)
            }
        } else if device.state == .started {
            bus.negotiating(device)
        }
        driver.onQueuesChanged?(device, active)
    }

    /// Builds a queue pair for every q whose rings 2q and 2q+1 are both started and that has none.
    func buildPairs() {
        let queueCount = session.queueCount
        for q in 0..<(queueCount / 2) where pairs[q] == nil {
            guard let rx = setups[2 * q], let tx = setups[2 * q + 1] else { continue }
            do {
                // A ring rebuilt under new memory keeps the position it had; so does the half of a
                // pair that kept running while the other half was stopped and restarted (its
                // position is in stoppedStates; ringStarted cleared the restarted ring's entry).
                // A (re)started ring begins at its setup's base.
                let pair = try VhostQueuePair(rx: rx, tx: tx, burst: datapath.options.burst,
                                              rxState: keptStates.removeValue(forKey: 2 * q) ?? stoppedStates.removeValue(forKey: 2 * q),
                                              txState: keptStates.removeValue(forKey: 2 * q + 1) ?? stoppedStates.removeValue(forKey: 2 * q + 1))
                pairs[q] = pair
                logger.info("vhost-user: queue pair \(q) ready (\(rx.layout), \(rx.size) descriptors, mrg_rxbuf \(rx.mergeableRxBuffers ? "on" : "off"))")
            } catch {
                logger.error("vhost-user: queue pair \(q): \(error)")
            }
        }
    }

    func detachFromDatapath() {
        if attachedSlot {
            datapath.detach(slot: slot)
            attachedSlot = false
        }
        reportStuckCalls()
    }

    /// Logs, once per ring, a call descriptor the front-end made blocking (refused before a write,
    /// or a write the watchdog interrupted)
    /// (the polling thread cannot log; this runs whenever the control plane takes the rings off
    /// the datapath: a ring stopped, the memory changed, the session ended).
    func reportStuckCalls() {
        for (q, pair) in pairs.sorted(by: { $0.key < $1.key }) {
            for ring in pair.takeNewlyStuckCallRings() {
                logger.error("vhost-user: queue pair \(q) vring \(ring): the front-end made its call descriptor blocking (a write could sleep on it; none waited more than \(WS_WRITE_GUARD_STUCK_NS / 1_000_000) ms); its notifications are dropped (counted as errors) until the ring gets another call descriptor")
            }
        }
    }
}
