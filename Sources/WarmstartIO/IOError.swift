#if canImport(Glibc)
import Glibc
#endif

/// A failed operation: which call, on what, and the kernel's errno.
/// `description` reads like "connect /run/ws/p0.sock: Connection refused".
public struct IOError: Error, CustomStringConvertible, Equatable, Sendable {
    public let errno: Int32
    public let operation: String

    public init(errno: Int32, operation: String) {
        self.errno = errno
        self.operation = operation
    }

    public var description: String { "\(operation): \(IOError.message(errno))" }

    /// strerror(3) text for an errno value.
    public static func message(_ code: Int32) -> String {
        guard let s = strerror(code) else { return "errno \(code)" }
        return String(cString: s)
    }

    public var isCanceled: Bool { errno == ECANCELED }
}

public typealias IOResult<T> = Result<T, IOError>

/// Identifies one submitted operation, e.g. to cancel it.
public struct IOOpID: Hashable, Sendable, CustomStringConvertible {
    public let raw: UInt64
    public var description: String { "op#\(raw)" }
}

/// A message received from a socket with the descriptors it carried (SCM_RIGHTS).
/// The receiver owns every fd in `fds`.
public struct ReceivedMessage: Sendable {
    public var bytes: [UInt8]
    public var fds: [Int32]
    /// The payload or the control data did not fit; extra descriptors were closed.
    public var truncated: Bool
}

/// What `statx` reports about a path (the few fields the bus needs).
public struct FileStatus: Sendable, Equatable {
    public var mode: UInt32
    public var size: UInt64
    public var uid: UInt32

    public var fileType: UInt32 { mode & UInt32(S_IFMT) }
    public var isSocket: Bool { fileType == UInt32(S_IFSOCK) }
    public var isDirectory: Bool { fileType == UInt32(S_IFDIR) }
    public var isRegular: Bool { fileType == UInt32(S_IFREG) }

    /// "regular file", "directory", ... for error messages.
    public var typeName: String {
        switch fileType {
        case UInt32(S_IFSOCK): return "socket"
        case UInt32(S_IFREG): return "regular file"
        case UInt32(S_IFDIR): return "directory"
        case UInt32(S_IFLNK): return "symbolic link"
        case UInt32(S_IFIFO): return "fifo"
        case UInt32(S_IFCHR): return "character device"
        case UInt32(S_IFBLK): return "block device"
        default: return "file of type \(String(fileType, radix: 8))"
        }
    }
}
