import CWarmstartShim
#if canImport(Glibc)
import Glibc
#endif

/// What the old process lets the handoff do to it. The donor calls these from the thread that
/// serves the handoff connection, in this order: freeze, export, quiesce, then release (after the
/// commit) or resume (on any failure before it).
public struct HandoffDonorHooks {
    /// Stops the control loops at a message boundary (vhost-user messages wait in their sockets,
    /// so the memory table and rings cannot change under the transfer). Forwarding goes on.
    public var freeze: () throws -> Void
    /// Describes and lends everything: regions, pools, ports and sessions, counters. Called while
    /// the datapath still forwards.
    public var export: (inout HandoffStateBuilder) throws -> Void
    /// Quiesces every polling thread at a burst boundary (Datapath.pause, which also flushes their
    /// mbuf caches) and returns where every ring stopped, the counters and, when known, the time of
    /// the last forwarded packet.
    public var quiesce: () throws -> HandoffLive
    /// Before the commit point only: undo freeze and quiesce (Datapath.resume, control loops
    /// restarted) because of `reason`.
    public var resume: (_ reason: String) -> Void
    /// After the commit point: stop the polling threads for good and drop every resource (unmap,
    /// close). The process exits after the handoff returns.
    public var release: () -> Void
    public init(freeze: @escaping () throws -> Void = {}, export: @escaping (inout HandoffStateBuilder) throws -> Void,
                quiesce: @escaping () throws -> HandoffLive, resume: @escaping (String) -> Void, release: @escaping () -> Void) {
        self.freeze = freeze; self.export = export; self.quiesce = quiesce; self.resume = resume; self.release = release
    }
}

public struct HandoffTimeouts: Sendable {
    /// Each message exchange but the two below.
    public var stepMs: Int
    /// The new process maps everything between `state` and `ready`.
    public var mapMs: Int
    public init(stepMs: Int = 5000, mapMs: Int = 10000) { self.stepMs = stepMs; self.mapMs = mapMs }
}

/// How one handoff ended, on the donor side.
public enum HandoffDonorOutcome: Sendable, Equatable {
    /// The new process owns everything; this one holds nothing and should exit.
    case committed(newPid: Int32)
    /// Nothing changed hands; forwarding resumed (or was never paused). The reason says why.
    case rolledBack(reason: String)
    /// Refused before anything happened (another handoff running, version, already handed over).
    case refused(reason: String)
}

/// The old process's side. Serves handoff connections (from the control socket), one at a time:
/// a second one while the first runs is refused with a message that says so. Ownership stays here
/// until the commit message is sent; any failure, timeout or peer exit before that resumes
/// forwarding and says why.
public final class HandoffDonor: @unchecked Sendable {
    public let hooks: HandoffDonorHooks
    public let timeouts: HandoffTimeouts
    public let configuration: HandoffConfiguration
    /// Where the donor says what happens (stderr in the CLI).
    public var log: (String) -> Void

    private enum Phase { case idle, busy(pid: Int32, step: HandoffStepName), handedOver(pid: Int32) }
    private var phase = Phase.idle
    private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    public init(hooks: HandoffDonorHooks, configuration: HandoffConfiguration = HandoffConfiguration(),
                timeouts: HandoffTimeouts = HandoffTimeouts(), log: @escaping (String) -> Void = { _ in }) {
        self.hooks = hooks
        self.configuration = configuration
        self.timeouts = timeouts
        self.log = log
        pthread_mutex_init(lock, nil)
    }

    deinit { pthread_mutex_destroy(lock); lock.deallocate() }

    private func locked<T>(_ body: () -> T) -> T { pthread_mutex_lock(lock); defer { pthread_mutex_unlock(lock) }; return body() }

    public var isHandedOver: Bool { locked { if case .handedOver = phase { return true } else { return false } } }
    public var isBusy: Bool { locked { if case .busy = phase { return true } else { return false } } }

    private func setStep(_ s: HandoffStepName) {
        locked { if case let .busy(pid, _) = phase { phase = .busy(pid: pid, step: s) } }
    }

    /// Serves one handoff on `channel` (a connection accepted on the control socket whose first
    /// message was — or will be — `hello`). Blocks until the handoff ends; safe to call from
    /// several threads: only one handoff runs, the others are refused.
    @discardableResult
    public func serve(_ channel: HandoffChannel) -> HandoffDonorOutcome {
        // hello: who asks, and can we talk.
        // The new process's pid and uid come from the kernel: a peer of another user is refused
        // before anything is read from it, and the pid we name and remember is the real one.
        let peerPid: Int32
        do { peerPid = try channel.trustedPeer(step: .hello).pid } catch {
            log("handoff: \(error); nothing changed")
            try? channel.send(.refused, (try? HandoffJSON.encode(HandoffRefusal(reason: error.reason.description), step: .hello)) ?? [], step: .hello)
            return .refused(reason: error.description)
        }
        let hello: HandoffHello
        do {
            let f = try channel.expect(.hello, step: .hello, timeoutMs: timeouts.stepMs)
            hello = try HandoffJSON.decode(HandoffHello.self, f.payload, step: .hello)
        } catch {
            log("handoff: \(error); nothing changed")
            return .refused(reason: error.description)
        }
        if hello.pid != peerPid {
            log("handoff: the new process says it is pid \(hello.pid), the kernel says pid \(peerPid); using the kernel's")
        }
        let refusal: String? = locked {
            switch phase {
            case let .busy(pid, step):
                return "a handoff is already running (to pid \(pid), step '\(step.rawValue)'); one at a time"
            case let .handedOver(pid):
                return "this process (pid \(getpid())) has already handed over to pid \(pid) and is exiting"
            case .idle:
                // Versions: this process sends its own state in its own version; the new binary
                // decides whether it can read it (a newer binary reads the previous major).
                phase = .busy(pid: peerPid, step: .hello)
                return nil
            }
        }
        if let refusal {
            log("handoff: refused takeover from pid \(peerPid): \(refusal)")
            try? channel.send(.refused, (try? HandoffJSON.encode(HandoffRefusal(reason: refusal), step: .hello)) ?? [], step: .hello)
            return .refused(reason: refusal)
        }
        let outcome = run(channel, newPid: peerPid, newVersion: hello.version)
        locked {
            if case .committed = outcome { phase = .handedOver(pid: peerPid) } else { phase = .idle }
        }
        return outcome
    }

    private func run(_ ch: HandoffChannel, newPid: Int32, newVersion: HandoffVersion) -> HandoffDonorOutcome {
        var touched = false   // frozen or paused: resume must undo it
        var step = HandoffStepName.hello
        func rollBack(_ failure: HandoffFailure) -> HandoffDonorOutcome {
            let reason = failure.description
            let why = "takeover by pid \(newPid) failed at step '\(step.rawValue)': \(reason)"
            if touched {
                hooks.resume(why)
                log("handoff: \(why); resumed forwarding")
            } else {
                log("handoff: \(why); forwarding was never paused")
            }
            // Tell the new process, if it is still there, so it exits instead of waiting.
            if let p = try? HandoffJSON.encode(HandoffAbort(step: step.rawValue, reason: reason), step: step) {
                try? ch.send(.abort, p, step: step)
            }
            return .rolledBack(reason: why)
        }
        do {
            let me = HandoffHello(version: .current, pid: getpid())
            try ch.send(.welcome, try HandoffJSON.encode(me, step: .hello), step: .hello)

            // transfer: freeze the control plane, describe, lend every descriptor. Still forwarding.
            step = .transfer
            setStep(step)
            _ = try ch.expect(.prepare, step: step, timeoutMs: timeouts.stepMs)
            touched = true
            do { try hooks.freeze() } catch { return rollBack(.freezing(cause: "\(error)")) }
            var builder = HandoffStateBuilder(configuration: configuration, describedAtNs: ws_monotonic_ns())
            do { try hooks.export(&builder) } catch { return rollBack(.describing(cause: "\(error)")) }
            try ch.send(.state, try HandoffJSON.encode(builder.state, step: step), step: step)
            try ch.sendFDs(builder.fds, names: builder.state.fds, step: step)
            let portNames = builder.state.ports.map(\.name)
            if newVersion.hasBinaryLive { HandoffLive.warmUp(ports: portNames) }

            step = .map
            setStep(step)
            _ = try ch.expect(.mapped, step: step, timeoutMs: timeouts.mapMs)

            // quiesce: the blackout starts here.
            step = .quiesce
            setStep(step)
            var live: HandoffLive
            do { live = try hooks.quiesce() } catch { return rollBack(.quiescing(cause: "\(error)")) }
            live.quiescedAtNs = ws_monotonic_ns()
            let pl = newVersion.hasBinaryLive ? try live.binaryEncoded(ports: portNames) : try HandoffJSON.encode(live, step: step)
            try ch.send(.quiesced, pl, step: step)

            step = .commit
            setStep(step)
            _ = try ch.expect(.ready, step: step, timeoutMs: timeouts.stepMs)
            // The commit point. Before the message goes out we could still resume; once it is sent
            // the new process may be polling the same rings, so this one must never touch them again.
            do {
                try ch.send(.commit, step: step)
            } catch {
                // The new process is gone before it could know: nothing changed hands.
                return rollBack(error.reason)
            }
            // From here this process never forwards again. Releasing (joining threads, unmapping,
            // closing) waits for the new process's `resumed` (bounded), so it does not compete for
            // the CPU inside the blackout; it touches nothing the new process uses.
            step = .resume
            setStep(step)
            let confirmed = (try? ch.expect(.resumed, step: step, timeoutMs: timeouts.stepMs)) != nil
            hooks.release()
            if confirmed {
                log("handoff: committed to pid \(newPid), which is forwarding; released everything, exiting")
            } else {
                log("handoff: committed to pid \(newPid), which did not confirm it resumed; it owns everything now; released everything, exiting")
            }
            return .committed(newPid: newPid)
        } catch {
            return rollBack(error.reason)
        }
    }
}
