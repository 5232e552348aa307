#if canImport(Glibc)
import Glibc
#endif
import CWarmstartShim
import Logging
import WarmstartBus
import WarmstartHandoff
import WarmstartEngine

/// Hot upgrade, old process side (Docs/HANDOFF.md): the donor hooks backed by this runtime, and
/// the `handoff` command on its control socket.
extension Runtime {
    /// Configuration names the new process reads (RuntimeTakeover).
    typealias HandoffKeys = HandoffConfiguration.Keys

    /// Registers `{"cmd":"handoff"}` on `server`: each such connection is served by the donor on
    /// its own thread (one handoff at a time; the donor refuses a second one and says why).
    func registerHandoff(on server: ControlServer) {
        let values = [HandoffKeys.ports: options.ports.map(\.description).joined(separator: "\n"),
                      HandoffKeys.forward: options.forward.rawValue, HandoffKeys.cores: "\(options.cores)",
                      HandoffKeys.txSize: "\(options.txSize)",
                      HandoffKeys.controlPath: server.path]
        let donor = HandoffDonor(hooks: donorHooks(), configuration: HandoffConfiguration(arguments: CommandLine.arguments, values: values),
                                 log: { [logger] line in logger.notice("\(line)") })
        server.registerUpgrade("handoff") { [weak self] fd in
            runDetached {
                let outcome = donor.serve(HandoffChannel(fd: fd))
                guard case let .committed(pid) = outcome, let self else { return }
                self.markHandedOver(to: pid)
                // Wakes `waitForTermination` in the main thread (SIGTERM is blocked everywhere
                // and taken synchronously there); the CLI sees `handedOverTo` and exits 0.
                kill(getpid(), SIGTERM)
            }
        }
    }

    func donorHooks() -> HandoffDonorHooks {
        HandoffDonorHooks(
            freeze: { [unowned self] in try self.freezeControlPlane() },
            export: { [unowned self] b in try self.describe(into: &b) },
            quiesce: { [unowned self] in self.quiesce() },
            resume: { [unowned self] why in self.resumeAfterFailedHandoff(why) },
            release: { [unowned self] in self.releaseAfterHandoff() })
    }

    /// Stops accepting and cancels every connection's pending receive, then waits (bounded) until
    /// nothing is outstanding. A message that raced the cancel fails the freeze (the donor resumes;
    /// the message is handled here; the next attempt will do).
    func freezeControlPlane() throws {
        // The blackout's first end: the polling threads stamp every burst from now on.
        datapath.recordForwardTimes()
        bus.sync { [bus, vhostUser] in
            bus.freezeAccepting()
            for d in bus.devices where d.kind == .vhostUser || d.kind == .vhostUserClient { vhostUser.freeze(d) }
        }
        let deadline = ws_monotonic_ns() + 1_000_000_000
        while true {
            let (settled, problem): (Bool, RuntimeError?) = bus.sync { [bus, vhostUser] in
                let accepts = bus.acceptingFrozenState()
                if let name = accepts.raced.first {
                    return (true, .connectedWhileFreezing(port: name))
                }
                var settled = accepts.settled
                for d in bus.devices where d.kind == .vhostUser || d.kind == .vhostUserClient {
                    let s = vhostUser.frozenState(d)
                    if s.settled && !s.atBoundary {
                        return (true, .messageWhileFreezing(port: d.name))
                    }
                    settled = settled && s.settled
                }
                return (settled, nil)
            }
            if let problem { throw problem }
            if settled { return }
            if ws_monotonic_ns() > deadline {
                throw RuntimeError.freezeTimedOut(seconds: 1)
            }
            usleep(100)
        }
    }

    /// Regions, pools, every port (sockets, session, counters) and the control socket.
    func describe(into b: inout HandoffStateBuilder) throws {
        for r in memory.regions { b.addRegion(r) }
        for p in memory.pools { try b.addPool(p, regions: memory.regions) }
        let stats = datapath.stats()
        var builder = b
        let result: Result<HandoffStateBuilder, RuntimeError> = bus.sync { [bus, vhostUser] in
            for d in bus.devices {
                let counters = d.index < stats.count ? stats[d.index].total : nil
                switch d.kind {
                case .vhostUser, .vhostUserClient:
                    builder.addVhostUserPort(name: d.name, path: d.spec.path, listenFD: d.listeningFD >= 0 ? d.listeningFD : nil,
                                             connectionFD: d.fd >= 0 ? d.fd : nil, session: vhostUser.session(of: d),
                                             positions: { vhostUser.provisionalPosition(of: d, ring: $0) }, counters: counters)
                case .tap:
                    builder.addTapPort(name: d.name, interface: d.spec.path, fds: d.fd >= 0 ? [d.fd] : [], counters: counters)
                case .virtioUser:
                    return .failure(.cannotHandOver(port: d.name, kind: "virtio-user"))
                }
            }
            return .success(builder)
        }
        b = try result.get()
        // The pairs whose final positions `quiesce` reads (the control plane is frozen: they
        // cannot change before the handoff ends).
        handoffPairs = bus.sync { [bus, vhostUser] in bus.devices.map { (port: $0.name, pairs: vhostUser.builtPairs(of: $0)) } }
        if let control {
            b.state.configuration.values[HandoffKeys.controlFD] = "\(b.register(control.listeningFD, "control socket \(control.path)"))"
        }
    }

    /// The blackout starts: park every polling thread, read where each ring stands and when the
    /// last burst went.
    func quiesce() -> HandoffLive {
        datapath.pause()
        // Straight from the pairs taken at export: a trip to the loop thread here would put two
        // thread wake-ups inside the blackout.
        var rings: [HandoffRingPosition] = []
        for (port, pairs) in handoffPairs {
            for p in pairs {
                rings.append(HandoffRingPosition(port: port, index: p.rxSetup.index, base: p.position(ofRing: p.rxSetup.index)))
                rings.append(HandoffRingPosition(port: port, index: p.txSetup.index, base: p.position(ofRing: p.txSetup.index)))
            }
        }
        var counters: [String: QueueCounters] = [:]
        for s in datapath.stats() where s.slot < bus.devices.count { counters[bus.devices[s.slot].name] = s.total }
        return HandoffLive(pausedAtNs: datapath.parkedAtNs, lastForwardNs: datapath.lastForwardNs, rings: rings, counters: counters)
    }

    /// Before the commit: forward again and re-arm every receive and accept.
    func resumeAfterFailedHandoff(_ why: String) {
        handoffPairs = []
        datapath.stopRecordingForwardTimes()
        datapath.resume()
        bus.sync { [bus, vhostUser] in
            for d in bus.devices where d.kind == .vhostUser || d.kind == .vhostUserClient { vhostUser.thaw(d) }
            bus.thawAccepting()
        }
        logger.warning("handoff: \(why); forwarding and serving vhost-user messages again")
    }

    /// After the commit: stop the threads, close (never shut down, never unlink) every descriptor.
    func releaseAfterHandoff() {
        handoffPairs = []
        datapath.stop()
        bus.release()
        control?.handOver()
    }
}
