#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Closes a descriptor this module owns; EINTR is not retried (Linux closes the fd regardless).
@usableFromInline
func closeFD(_ fd: Int32) {
    if fd >= 0 { _ = close(fd) }
}

/// Whether `fd` is an open descriptor of this process.
public func vhostUserFDIsOpen(_ fd: Int32) -> Bool {
    fcntl(fd, F_GETFD) != -1
}

/// The current errno as a value.
@usableFromInline
var currentErrno: Int32 { errno }
