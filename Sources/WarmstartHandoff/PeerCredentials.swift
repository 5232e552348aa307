#if canImport(Glibc)
import Glibc
#endif

/// Who is at the other end of a connected unix socket, as the kernel says (SO_PEERCRED, unix(7)):
/// the peer's pid, uid and gid when it connected (or called socketpair/listen). Never taken from a
/// message: a peer can write any pid it likes into one.
public struct PeerCredentials: Sendable, Equatable, CustomStringConvertible {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32

    /// Reads the credentials of `fd`'s peer; nil when the socket has none (not a connected unix
    /// socket). `struct ucred` is three 32-bit fields (pid_t, uid_t, gid_t) on every Linux ABI;
    /// Glibc's Swift module hides it behind _GNU_SOURCE, so it is read as three words here.
    public static func of(_ fd: Int32) -> PeerCredentials? {
        var words: (Int32, UInt32, UInt32) = (0, 0, 0)
        var length = socklen_t(MemoryLayout<(Int32, UInt32, UInt32)>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &words, &length) == 0,
              length == socklen_t(MemoryLayout<(Int32, UInt32, UInt32)>.size) else { return nil }
        return PeerCredentials(pid: words.0, uid: words.1, gid: words.2)
    }

    /// The rule for the control socket and both sides of a handoff: the peer runs as this
    /// process's real or effective user, or as root.
    public var isTrusted: Bool { uid == 0 || uid == geteuid() || uid == getuid() }

    /// Why the peer is refused, for the log and the error; nil when it is trusted.
    public var refusal: String? {
        isTrusted ? nil : "peer pid \(pid) runs as uid \(uid), not as this process's uid \(geteuid()) nor root"
    }

    public var description: String { "pid \(pid) uid \(uid) gid \(gid)" }
}
