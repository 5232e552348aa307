#if canImport(Glibc)
import Glibc
#endif
import WarmstartIO

/// What the runtime refused or failed to do: each case names the thing and the reason.
public enum RuntimeError: Error, CustomStringConvertible, Sendable {
    /// The bus's event loop (io_uring, or the fallback) could not be set up.
    case controlLoop(IOError)
    /// `report` was asked before whoever assembles the boot report set `reportProvider`.
    case reportNotReady
    /// Hot upgrade, freezing: a front-end connected to `port` while accepts were being cancelled.
    case connectedWhileFreezing(port: String)
    /// Hot upgrade, freezing: a vhost-user message for `port` arrived while receives were cancelled.
    case messageWhileFreezing(port: String)
    /// Hot upgrade, freezing: a cancelled receive or accept had not completed after `seconds`.
    case freezeTimedOut(seconds: Int)
    /// Hot upgrade: `port` is of a kind whose state cannot be handed over yet.
    case cannotHandOver(port: String, kind: String)

    public var description: String {
        switch self {
        case let .controlLoop(e): return "cannot create the control loop: \(e)"
        case .reportNotReady: return "the boot report is not ready yet"
        case let .connectedWhileFreezing(port): return "port '\(port)': a front-end connected while freezing; try the handoff again"
        case let .messageWhileFreezing(port): return "port '\(port)': a vhost-user message arrived while freezing; try the handoff again"
        case let .freezeTimedOut(s): return "a receive or accept was still outstanding \(s) s after cancelling it"
        case let .cannotHandOver(port, kind): return "port '\(port)': \(kind) ports cannot be handed over yet"
        }
    }
}

/// A control socket's failure: the socket and the reason.
public struct ControlSocketError: Error, CustomStringConvertible, Sendable, Equatable {
    public var path: String
    public var reason: Reason

    public init(_ path: String, _ reason: Reason) { self.path = path; self.reason = reason }

    public enum Reason: Sendable, Equatable, CustomStringConvertible {
        // Serving (`warmstart run --control PATH`)
        case existsAndIsNotASocket
        case inUse
        case pathTooLong
        case privateDirectory(directory: String, errno: Int32)
        case stagingPathTooLong(staging: String)
        case socket(errno: Int32)
        case bind(errno: Int32)
        case chmodOrListen(errno: Int32)
        case rename(errno: Int32)
        // Asking (`warmstart stats|report --control PATH`)
        case connect(errno: Int32)
        case noPeerCredentials
        case untrustedPeer(String)
        case send(errno: Int32)
        case noAnswer(errno: Int32)
        case closedWithoutAnswer

        public var description: String {
            switch self {
            case .existsAndIsNotASocket: return "exists and is not a socket; refusing to replace it"
            case .inUse: return "another process is listening on it"
            case .pathTooLong: return "path is longer than a unix socket address allows"
            case let .privateDirectory(directory, e): return "cannot create a private directory in \(directory) to bind in: \(Self.text(e))"
            case let .stagingPathTooLong(staging):
                return "the private directory's socket path \(staging) is longer than a unix socket address allows; use a shorter directory"
            case let .socket(e): return "socket: \(Self.text(e))"
            case let .bind(e): return "bind: \(Self.text(e))"
            case let .chmodOrListen(e): return "chmod/listen: \(Self.text(e))"
            case let .rename(e): return "cannot move the socket into place: \(Self.text(e))"
            case let .connect(e): return "cannot connect: \(Self.text(e))"
            case .noPeerCredentials: return "the kernel gave no credentials for the process listening on it"
            case let .untrustedPeer(why): return "not asking the process listening on it: \(why)"
            case let .send(e): return "send: \(Self.text(e))"
            case let .noAnswer(e): return "no answer: \(Self.text(e))"
            case .closedWithoutAnswer: return "closed without an answer"
            }
        }

        static func text(_ e: Int32) -> String { String(cString: strerror(e)) }
    }

    public var description: String {
        switch reason {
        case .connect:
            return "control socket \(path): \(reason) (is `warmstart run --control \(path)` running?)"
        case .existsAndIsNotASocket, .inUse, .pathTooLong, .privateDirectory, .stagingPathTooLong, .socket, .bind,
             .chmodOrListen, .rename, .noPeerCredentials, .untrustedPeer, .send, .noAnswer, .closedWithoutAnswer:
            return "control socket \(path): \(reason)"
        }
    }
}
