#if canImport(Glibc)
import Glibc
#endif
import CLibURing

/// AF_UNIX socket addresses and sockets, shared by the io_uring and poll backends.
public enum UnixSocket {
    /// Largest path that fits sun_path with its terminating NUL.
    public static let maxPathLength = MemoryLayout<sockaddr_un>.size - MemoryLayout<sa_family_t>.size - 1

    /// Fills `addr` for `path`; returns the address length or nil when the path is too long.
    public static func fill(_ addr: UnsafeMutablePointer<sockaddr_un>, path: String) -> socklen_t? {
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty, bytes.count <= maxPathLength else { return nil }
        memset(addr, 0, MemoryLayout<sockaddr_un>.size)
        addr.pointee.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.pointee.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        return socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1)
    }

    /// A new blocking AF_UNIX stream socket with close-on-exec.
    public static func makeStream() -> IOResult<Int32> {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { return .failure(IOError(errno: errno, operation: "socket(AF_UNIX)")) }
        return .success(fd)
    }

    /// bind(2) then chmod(2) the socket file then listen(2). The mode is applied before listen so
    /// no peer can connect while the file still has the umask's permissions.
    public static func listen(fd: Int32, path: String, mode: mode_t, backlog: Int32 = 64) -> IOResult<Void> {
        let addr = UnsafeMutablePointer<sockaddr_un>.allocate(capacity: 1)
        defer { addr.deallocate() }
        guard let len = fill(addr, path: path) else {
            return .failure(IOError(errno: ENAMETOOLONG, operation: "bind \(path)"))
        }
        let rc = addr.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
        if rc != 0 { return .failure(IOError(errno: errno, operation: "bind \(path)")) }
        if chmod(path, mode) != 0 { return .failure(IOError(errno: errno, operation: "chmod \(path)")) }
        if Glibc.listen(fd, backlog) != 0 { return .failure(IOError(errno: errno, operation: "listen \(path)")) }
        return .success(())
    }
}
