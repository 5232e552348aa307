#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Closes a descriptor the vhost-user modules own; EINTR is not retried (Linux closes the fd
/// regardless). `package`: WarmstartVhostUser's session closes descriptors the same way.
@usableFromInline
package func closeFD(_ fd: Int32) {
    if fd >= 0 { _ = close(fd) }
}

/// Whether `fd` is an open descriptor of this process.
public func vhostUserFDIsOpen(_ fd: Int32) -> Bool {
    fcntl(fd, F_GETFD) != -1
}

/// The current errno as a value.
@usableFromInline
var currentErrno: Int32 { errno }

/// Ignores SIGPIPE for the whole process: a write to a pipe or socket whose reader is gone then
/// fails with EPIPE instead of killing the process (one peer that closed its end must cost only
/// its own connection). The runtime calls this when it starts, and the command-line tool first
/// thing in main; idempotent.
public func ignoreBrokenPipeSignals() {
    signal(SIGPIPE, SIG_IGN)
}
