#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Why `fd` cannot be a vring's kick, call or err descriptor, or nil when it can; on success it
/// has been made non-blocking.
///
/// Only an eventfd is accepted (spec: "an event file descriptor"): a pipe or socket can raise
/// SIGPIPE or fill, a regular file grows without bound. The kind comes from the kernel's name
/// for the open file (`/proc/self/fd/N` of an eventfd reads `anon_inode:[eventfd]`; a file named
/// like that reads as an absolute path, so the name cannot be forged). O_NONBLOCK: a signal
/// to an eventfd whose counter is at its maximum then fails with EAGAIN (counted, dropped)
/// instead of blocking the polling thread.
func eventFDProblem(_ fd: Int32) -> String? {
    var st = stat()
    guard fstat(fd, &st) == 0 else { return "is not an open descriptor (errno \(errno))" }
    var buffer = [CChar](repeating: 0, count: 128)
    let n = readlink("/proc/self/fd/\(fd)", &buffer, buffer.count - 1)
    guard n > 0 else { return "cannot be identified (readlink of /proc/self/fd/\(fd) failed: errno \(errno))" }
    let name = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    guard name == "anon_inode:[eventfd]" else { return "is \(name), not an eventfd" }
    let flags = fcntl(fd, F_GETFL)
    guard flags >= 0, fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0 else {
        return "cannot be made non-blocking (errno \(errno))"
    }
    return nil
}
