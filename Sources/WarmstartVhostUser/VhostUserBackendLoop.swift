#if canImport(Glibc)
import Glibc
import WarmstartVhostUserWire
#endif

/// A minimal blocking driver: reads messages from a channel, hands them to the session, sends the
/// replies, and passes the events on. The io_uring loop (WarmstartIO) will replace it in the
/// runtime; tests and tools use this one.
extension VhostUserBackendSession {
    /// Serves until the peer closes or a fatal error. Returns the error that ended the session
    /// (`.connectionClosed` for a normal end).
    @discardableResult
    public func serve(_ channel: VhostUserChannel,
                      onMessage: (VhostUserFrame, VhostUserOutcome) -> Void = { _, _ in },
                      onEvents: ([VhostUserEvent]) -> Void = { _ in }) -> VhostUserError {
        while true {
            let frame: VhostUserFrame
            do {
                guard let f = try channel.receiveFrame() else {
                    // Non-blocking socket with nothing complete yet: wait instead of spinning.
                    var p = pollfd(fd: channel.fd, events: Int16(POLLIN), revents: 0)
                    _ = poll(&p, 1, -1)
                    continue
                }
                frame = f
            } catch {
                return error
            }
            let outcome = receive(header: frame.header, payload: frame.payload, fds: frame.fds)
            onMessage(frame, outcome)
            if !outcome.events.isEmpty { onEvents(outcome.events) }
            if let reply = outcome.reply {
                do { try channel.send(reply) } catch { return error }
            }
            if outcome.isFatal { return outcome.error ?? VhostUserError(request: nil, reason: .connectionClosed) }
        }
    }
}
