import WarmstartRuntime

/// An error printed as `warmstart: <text>` with exit status 1 (no usage dump: the input was fine,
/// the thing it named was not). Each case names the step; the error it carries says why.
enum CLIError: Error, CustomStringConvertible {
    /// Memory could not be booted (snapshot, hugepages, cold lay-out).
    case boot(any Error)
    /// The runtime over the ports could not be built or started.
    case start(any Error)
    case encodeReport(any Error)
    case write(path: String, any Error)
    case read(path: String, any Error)
    case notABootReport(path: String, any Error)
    /// `snapshot create|inspect|verify`.
    case snapshot(any Error)
    /// The control socket could not be asked.
    case control(any Error)
    /// The control socket answered something that is not the expected JSON.
    case controlAnswer(path: String, command: String, line: String)
    /// The control socket answered with a failure.
    case controlRefused(path: String, reason: String?)
    case takeover(TakeoverError)
    /// The self-contained loopback (`run` without ports).
    case loopback(any Error)
    case bench(any Error)

    var description: String {
        switch self {
        case let .boot(e), let .start(e), let .snapshot(e), let .control(e): return "\(e)"
        case let .encodeReport(e): return "cannot encode the report: \(e)"
        case let .write(path, e): return "cannot write \(path): \(e)"
        case let .read(path, e): return "cannot read \(path): \(e)"
        case let .notABootReport(path, e): return "\(path) is not a Warmstart boot report: \(e)"
        case let .controlAnswer(path, cmd, line): return "control socket \(path): the answer to '\(cmd)' is not the expected JSON: \(line.prefix(200))"
        case let .controlRefused(path, reason): return "control socket \(path): \(reason ?? "request failed")"
        case let .takeover(e): return e.description
        case let .loopback(e): return "self-contained loopback: \(e)"
        case let .bench(e): return "bench: \(e)"
        }
    }
}
