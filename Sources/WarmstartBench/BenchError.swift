#if canImport(Glibc)
import Glibc
#endif

/// Why `warmstart bench` (or the self-loopback, or a child process) could not run or finish: each
/// case names the thing and the reason.
public enum BenchError: Error, CustomStringConvertible, Sendable {
    // The options
    case frameSize(Int)
    case burst(Int)
    case inflight(Int)
    case inflightNeedsLoopback(mode: String)
    case testpmdUnavailable(String)
    // Setting up
    case spawn(program: String, errno: Int32)
    case temporaryDirectory(errno: Int32)
    case noGeneralRegion
    case backendExited(backend: String, log: String)
    case portDidNotStart(reason: String?, log: String)
    case noQueues
    // Running
    case backendGoneBeforeRun
    case backendGoneDuringRun
    /// The shared memory under the rings faulted (the peer truncated it): the fault's own words.
    case memoryLost(String)

    public var description: String {
        switch self {
        case .frameSize: return "--size must be 60...9216 bytes"
        case .burst: return "--burst must be 1...256"
        case let .inflight(n): return "--inflight \(n): must be 0 (no limit) or a number of frames"
        case let .inflightNeedsLoopback(mode): return "--inflight applies to --mode loopback only (this run is \(mode))"
        case let .testpmdUnavailable(why): return "--backend dpdk: \(why)"
        case let .spawn(program, e): return "cannot start \(program): \(String(cString: strerror(e)))"
        case let .temporaryDirectory(e):
            return "cannot create a temp directory for the loopback socket: \(String(cString: strerror(e)))"
        case .noGeneralRegion: return "no general-purpose region for the rings"
        case let .backendExited(backend, log): return "the \(backend) back-end exited before the port started; its log:\n\(log)"
        case let .portDidNotStart(reason, log): return "port did not start: \(reason ?? "timeout"); back-end log:\n\(log)"
        case .noQueues: return "port started without queues"
        case .backendGoneBeforeRun: return "the back-end went away before the run"
        case .backendGoneDuringRun: return "the back-end went away during the run"
        case let .memoryLost(why): return why
        }
    }
}
