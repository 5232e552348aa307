import CWarmstartShim
import WarmstartHandoff

/// Why `warmstart run --takeover PATH` did not end with this process forwarding.
public enum TakeoverError: Error, CustomStringConvertible, Sendable {
    /// WARMSTART_HANDOFF_FAULT (a test's injected fault) is not kill|crash|hang|fail:STEP.
    case unknownFault(String)
    /// The handoff with the process serving `path` failed at a step.
    case handoffFailed(path: String, HandoffError)
    /// The handoff committed but left no runtime behind.
    case noRuntime(path: String)

    public var description: String {
        switch self {
        case let .unknownFault(f):
            return "WARMSTART_HANDOFF_FAULT=\(f): expected kill|crash|hang|fail:STEP"
        case let .handoffFailed(path, error):
            return "takeover from \(path) failed at step '\(error.step.rawValue)': \(error.reason); \(Self.consequence(of: error.step))"
        case let .noRuntime(path):
            return "takeover from \(path): no runtime after the commit"
        }
    }

    /// What a failure at `step` left running.
    static func consequence(of step: HandoffStepName) -> String {
        switch step {
        case .hello: return "nothing changed"
        case .resume, .oldExit: return "this was after the commit: the old process has released the ports"
        case .transfer, .map, .quiesce, .commit: return "the running process resumes forwarding"
        }
    }
}

extension RuntimeTakeover {
    /// `warmstart run --takeover PATH`: connects to the running process's control socket, takes
    /// everything over and returns the runtime that now forwards, with the handoff's report (and
    /// its `handoff` phase recorded). `environment`'s WARMSTART_HANDOFF_FAULT injects a fault
    /// (tests).
    public static func run(from path: String, recorder: PhaseRecorder, overrides: Overrides, environment: [String: String],
                           log: (String) -> Void) throws(TakeoverError) -> (runtime: Runtime, handoff: HandoffReport) {
        var options = HandoffTakerOptions()
        if let f = environment["WARMSTART_HANDOFF_FAULT"] {
            guard let fault = HandoffFault(parsing: f) else { throw .unknownFault(f) }
            options.fault = fault
        }
        let takeover = RuntimeTakeover(recorder: recorder, overrides: overrides)
        let startNs = ws_monotonic_ns()
        let handoff: HandoffReport
        do {
            let ch = try HandoffChannel.connectUpgrading(path: path)
            handoff = try HandoffTaker.takeover(channel: ch, hooks: takeover.hooks(), options: options, log: log, startNs: startNs)
        } catch {
            throw .handoffFailed(path: path, error)
        }
        guard let runtime = takeover.runtime else { throw .noRuntime(path: path) }
        recorder.record("handoff", startNs: startNs, endNs: ws_monotonic_ns(),
                        work: "\(runtime.bus.devices.count) ports, blackout \(handoff.blackoutMs.map { "\(($0 * 100).rounded() / 100) ms" } ?? "unknown")")
        return (runtime, handoff)
    }
}
