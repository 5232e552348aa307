import CWarmstartShim
#if canImport(Glibc)
import Glibc
#endif

/// What the new process does with what it receives.
public struct HandoffTakerHooks {
    /// Maps and adopts everything (regions, sessions, ports) while the old process still forwards,
    /// and builds what it can without ring positions. Throwing aborts the handoff: the old process
    /// resumes.
    public var adopt: (HandoffReceived) throws -> Void
    /// After the old process paused: attach the pools (`HandoffReceived.attachPools`), build the
    /// queues at the final ring positions, continue the counters. Keep it short: it is inside the
    /// blackout. Throwing aborts the handoff.
    public var activate: (HandoffLive) throws -> Void
    /// After the commit: start forwarding.
    public var resume: () throws -> Void
    /// Monotonic time of the first packet forwarded since `resume`, nil until then (blackout).
    public var firstPacketNs: () -> UInt64?
    /// Monotonic time from which every polling thread polls again after `resume`, nil when not
    /// known (the blackout's breakdown then has no `not polling` figure).
    public var pollingSinceNs: () -> UInt64?
    /// Drops what `adopt` built, when the handoff fails before the commit.
    public var abandon: () -> Void
    public init(adopt: @escaping (HandoffReceived) throws -> Void, activate: @escaping (HandoffLive) throws -> Void = { _ in },
                resume: @escaping () throws -> Void, firstPacketNs: @escaping () -> UInt64? = { nil },
                pollingSinceNs: @escaping () -> UInt64? = { nil }, abandon: @escaping () -> Void = {}) {
        self.adopt = adopt; self.activate = activate; self.resume = resume; self.firstPacketNs = firstPacketNs
        self.pollingSinceNs = pollingSinceNs; self.abandon = abandon
    }
}

/// Test and drill faults: the new process fails at the start of a step, the way it would for real.
public enum HandoffFault: Sendable, Equatable {
    /// Closes the connection as a crash would (in-process tests).
    case crash(HandoffStepName)
    /// SIGKILLs this process (kill -9 drills: `WARMSTART_HANDOFF_FAULT=kill:map`).
    case kill(HandoffStepName)
    /// Stops answering (the old process's timeout must fire).
    case hang(HandoffStepName)
    /// Fails the step with an error (e.g. "cannot map"): the new process aborts and says why.
    case fail(HandoffStepName)

    var step: HandoffStepName {
        switch self { case let .crash(s), let .kill(s), let .hang(s), let .fail(s): s }
    }

    /// Parses "kill:map", "crash:transfer", "hang:quiesce", "fail:map".
    public init?(parsing text: String) {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        guard parts.count == 2, let step = HandoffStepName(rawValue: parts[1]) else { return nil }
        switch parts[0] {
        case "crash": self = .crash(step)
        case "kill": self = .kill(step)
        case "hang": self = .hang(step)
        case "fail": self = .fail(step)
        default: return nil
        }
    }
}

public struct HandoffTakerOptions: Sendable {
    public var timeouts: HandoffTimeouts
    /// How long to wait for the first forwarded packet after resuming, to measure the blackout.
    public var trafficWaitMs: Int
    /// How long to wait for the old process to let go of the connection (its exit).
    public var oldExitWaitMs: Int
    public var fault: HandoffFault?
    public init(timeouts: HandoffTimeouts = HandoffTimeouts(), trafficWaitMs: Int = 1000, oldExitWaitMs: Int = 5000,
                fault: HandoffFault? = nil) {
        self.timeouts = timeouts; self.trafficWaitMs = trafficWaitMs; self.oldExitWaitMs = oldExitWaitMs; self.fault = fault
    }
}

/// The new process's side of a handoff (`warmstart run --takeover PATH`).
public enum HandoffTaker {
    /// Connects to the old process's control socket and takes over. Returns the report for
    /// `BootReport.handoff`; throws a `HandoffError` naming the step when the takeover failed (the
    /// old process then keeps forwarding).
    public static func takeover(path: String, hooks: HandoffTakerHooks, options: HandoffTakerOptions = HandoffTakerOptions(),
                                log: (String) -> Void = { _ in }) throws(HandoffError) -> HandoffReport {
        let t0 = ws_monotonic_ns()
        let ch = try HandoffChannel.connect(path: path)
        return try takeover(channel: ch, hooks: hooks, options: options, log: log, startNs: t0)
    }

    public static func takeover(channel ch: HandoffChannel, hooks: HandoffTakerHooks, options: HandoffTakerOptions = HandoffTakerOptions(),
                                log: (String) -> Void = { _ in }, startNs: UInt64? = nil) throws(HandoffError) -> HandoffReport {
        var steps: [HandoffStep] = []
        var live: HandoffLive?
        var mark = startNs ?? ws_monotonic_ns()
        func done(_ s: HandoffStepName) {
            let now = ws_monotonic_ns()
            steps.append(HandoffStep(name: s.rawValue, ms: Double(now &- mark) / 1e6))
            mark = now
        }
        let t = options.timeouts
        var adopted = false
        // Inside the blackout (monotonic ns): `quiesced` received, `ready` sent, `commit` received.
        var quiescedInNs: UInt64 = 0, readyOutNs: UInt64 = 0, commitInNs: UInt64 = 0
        // Before the commit, a failure here is reported to the old process, which resumes; what was
        // adopted is dropped. `told` is set once the old process has been sent an abort.
        var told = false
        func abort(_ e: HandoffError) -> HandoffError {
            if let p = try? HandoffJSON.encode(HandoffAbort(step: e.step.rawValue, reason: e.reason.description), step: e.step) {
                try? ch.send(.abort, p, step: e.step)
            }
            told = true
            return e
        }
        func fault(_ s: HandoffStepName) throws(HandoffError) {
            guard let f = options.fault, f.step == s else { return }
            switch f {
            case .kill: kill(getpid(), SIGKILL)
            case .crash: shutdown(ch.fd, Int32(SHUT_RDWR)); throw HandoffError(s, .injected(.crash))
            case .hang: while true { sleep(3600) }
            case .fail: throw abort(HandoffError(s, .injected(.failure)))
            }
        }

        do {
            try preCommit()
        } catch {
            if adopted { hooks.abandon() }
            // When the old process gave up first (its timeout), its abort is waiting in our socket:
            // its reason is the better one to report.
            if !told, let why = ch.pendingAbortReason() {
                throw HandoffError(error.step, .peerSaid(error.reason, why))
            }
            throw error
        }

        func preCommit() throws(HandoffError) {
            // hello: versions both ways. We read the old process's state only if we know its major.
            try fault(.hello)
            // Whoever is at the other end is checked by the kernel's word, before anything it
            // sends is believed (HandoffChannel.connect did this too; a channel may come from
            // elsewhere).
            let donor: PeerCredentials
            do { donor = try ch.trustedPeer(step: .hello) } catch { throw abort(error) }
            try ch.send(.hello, try HandoffJSON.encode(HandoffHello(version: .current, pid: getpid()), step: .hello), step: .hello)
            let welcome = try HandoffJSON.decode(HandoffHello.self, try ch.expect(.welcome, step: .hello, timeoutMs: t.stepMs).payload, step: .hello)
            guard HandoffVersion.current.canRead(welcome.version) else {
                throw abort(HandoffError(.hello, .versionMismatch(peerPid: donor.pid, peer: welcome.version)))
            }
            log("handoff: taking over from pid \(donor.pid) (protocol \(welcome.version))")
            done(.hello)

            try fault(.transfer)
            try ch.send(.prepare, step: .transfer)
            let stateFrame = try ch.expect(.state, step: .transfer, timeoutMs: t.stepMs)
            let decoded: HandoffState
            do { decoded = try HandoffJSON.decode(HandoffState.self, stateFrame.payload, step: .transfer) } catch { throw abort(error) }
            guard HandoffVersion.current.canRead(decoded.version) else {
                throw abort(HandoffError(.transfer, .stateVersion(decoded.version)))
            }
            do { try decoded.validate() } catch { throw abort(error) }
            let fds = HandoffFDTable(fds: try ch.receiveFDs(names: decoded.fds, step: .transfer, timeoutMs: t.stepMs), names: decoded.fds)
            let portNames = decoded.ports.map(\.name)
            if welcome.version.hasBinaryLive { HandoffLive.warmUp(ports: portNames) }
            done(.transfer)

            try fault(.map)
            do {
                adopted = true
                try hooks.adopt(HandoffReceived(state: decoded, fds: fds))
            } catch let e as HandoffError {
                throw abort(e)
            } catch {
                throw abort(HandoffError(.map, .adoption(cause: "\(error)")))
            }
            if fds.untaken > 0 {
                log("handoff: \(fds.untaken) handed-over descriptors were not used; closing them")
            }
            try ch.send(.mapped, step: .map)
            done(.map)

            try fault(.quiesce)
            let liveFrame = try ch.expect(.quiesced, step: .quiesce, timeoutMs: t.stepMs)
            quiescedInNs = ws_monotonic_ns()
            let l: HandoffLive
            do {
                l = welcome.version.hasBinaryLive ? try HandoffLive(binary: liveFrame.payload, ports: portNames)
                    : try HandoffJSON.decode(HandoffLive.self, liveFrame.payload, step: .quiesce)
            } catch { throw abort(error) }
            live = l
            done(.quiesce)

            try fault(.commit)
            do { try hooks.activate(l) } catch let e as HandoffError { throw abort(e) } catch {
                throw abort(HandoffError(.commit, .activation(cause: "\(error)")))
            }
            try ch.send(.ready, step: .commit)
            readyOutNs = ws_monotonic_ns()
            _ = try ch.expect(.commit, step: .commit, timeoutMs: t.stepMs)
            commitInNs = ws_monotonic_ns()
            done(.commit)
        }
        // From here on everything is ours: no failure sends anything back.

        try fault(.resume)
        do { try hooks.resume() } catch {
            throw HandoffError(.resume, .resumption(cause: "\(error)"))
        }
        let resumedAt = ws_monotonic_ns()
        done(.resume)

        // The blackout: from the old process's last forwarded burst to our first, both stamped by
        // the polling threads (CLOCK_MONOTONIC is system-wide). Wait for that first burst (bounded)
        // before telling the old process we forward: its release (joining threads, unmapping) must
        // not compete for the CPU inside the blackout.
        var first = hooks.firstPacketNs()
        let waitEnd = resumedAt &+ UInt64(options.trafficWaitMs) * 1_000_000
        while first == nil && ws_monotonic_ns() < waitEnd {
            usleep(50)
            first = hooks.firstPacketNs()
        }
        // With several threads the first burst may come before every thread left its park.
        var pollingSince = hooks.pollingSinceNs()
        let pollingWaitEnd = ws_monotonic_ns() &+ 5_000_000
        while first != nil && pollingSince == nil && ws_monotonic_ns() < pollingWaitEnd {
            usleep(50)
            pollingSince = hooks.pollingSinceNs()
        }
        let measured = Self.blackout(live: live, quiescedInNs: quiescedInNs, readyOutNs: readyOutNs, commitInNs: commitInNs,
                                     pollingSinceNs: pollingSince, firstNs: first, trafficWaitMs: options.trafficWaitMs)
        mark = ws_monotonic_ns()   // the wait is not part of any step

        try fault(.oldExit)
        try? ch.send(.resumed, step: .oldExit)
        // The old process closes the connection once it has released everything (or exits).
        // Nothing more is expected: the next read ends with end-of-stream (or the wait runs out).
        if let f = try? ch.receive(step: .oldExit, timeoutMs: options.oldExitWaitMs) {
            for d in f.fds { _ = close(d) }
            log("handoff: unexpected \(f.type) from the old process after the commit")
        }
        done(.oldExit)
        return HandoffReport(outcome: "committed", blackoutMs: measured.ms, blackoutNote: measured.note,
                             blackoutParts: measured.parts, notPollingMs: measured.notPollingMs, steps: steps)
    }

    /// The blackout and where it went, in consecutive parts that add up to it: the old process
    /// polls but nothing comes (`old-idle`: last burst → its first thread parks), the pause is
    /// seen and the positions read (`pause`), `quiesced` reaches us (`quiesced-message`), the
    /// final positions are applied and `ready` sent (`activate`), `commit` comes back
    /// (`commit-message`), our threads leave their park (`unpark`), our threads poll but nothing
    /// comes yet (`new-idle`: → our first burst). `pause` through `unpark` is the time no thread
    /// of either process polled (`notPollingMs`); the idle parts are the guest's. No figure when
    /// either side forwarded nothing: an idle guest has no blackout to measure, and the pause
    /// time is no stand-in for a packet.
    static func blackout(live: HandoffLive?, quiescedInNs: UInt64, readyOutNs: UInt64, commitInNs: UInt64, pollingSinceNs: UInt64?,
                         firstNs: UInt64?, trafficWaitMs: Int) -> (ms: Double?, note: String?, parts: [HandoffStep], notPollingMs: Double?) {
        guard let live, let last = live.lastForwardNs else {
            return (nil, "the old process forwarded nothing since the handoff began (idle guest)", [], nil)
        }
        guard let first = firstNs else {
            return (nil, "this process forwarded nothing within \(trafficWaitMs) ms of resuming (idle guest)", [], nil)
        }
        func ms(_ a: UInt64, _ b: UInt64) -> Double { Double(Int64(bitPattern: b &- a)) / 1e6 }
        // Each point at or after the one before (several threads park and unpark at their own
        // times), so the parts never go negative and add up to the whole.
        let parked = max(last, live.pausedAtNs ?? last)
        let quiesced = max(parked, live.quiescedAtNs)
        let polling = min(max(commitInNs, pollingSinceNs ?? commitInNs), max(first, commitInNs))
        let points: [(String, UInt64)] = [("old-idle", parked), ("pause", quiesced), ("quiesced-message", quiescedInNs),
                                          ("activate", readyOutNs), ("commit-message", commitInNs), ("unpark", polling),
                                          ("new-idle", max(first, polling))]
        var parts: [HandoffStep] = []
        var previous = last
        for (name, at) in points {
            parts.append(HandoffStep(name: name, ms: ms(previous, at)))
            previous = at
        }
        let notPolling = live.pausedAtNs != nil && pollingSinceNs != nil ? ms(parked, polling) : nil
        return (ms(last, first), nil, parts, notPolling)
    }
}
