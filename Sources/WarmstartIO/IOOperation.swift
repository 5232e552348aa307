#if canImport(Glibc)
import Glibc
#endif
import CWarmstartShim
import CLibURing

/// One operation as both backends see it: the syscall to perform and the memory it points at.
/// The memory is owned by the `PendingOp` and stays put until the completion has been
/// dispatched, which is what io_uring requires (the kernel reads it after submission).
enum IOOpKind {
    case openat(dirfd: Int32, path: UnsafeMutablePointer<CChar>, flags: Int32, mode: mode_t)
    /// offset == UInt64.max: read at the file position (sockets, pipes, eventfd, tun).
    case read(fd: Int32, buffer: UnsafeMutableRawPointer, length: Int, offset: UInt64)
    case write(fd: Int32, buffer: UnsafeRawPointer, length: Int, offset: UInt64)
    /// AT_SYMLINK_NOFOLLOW always: the bus wants to know what is at the path itself.
    case statx(path: UnsafeMutablePointer<CChar>, result: UnsafeMutablePointer<statx>)
    case connect(fd: Int32, address: UnsafeMutablePointer<sockaddr_un>, length: socklen_t)
    case accept(fd: Int32)
    case recvmsg(fd: Int32, header: UnsafeMutableRawPointer)
    case sendmsg(fd: Int32, header: UnsafeMutableRawPointer)
    case poll(fd: Int32, events: Int16)
    case timeout(nanoseconds: UInt64, spec: UnsafeMutablePointer<__kernel_timespec>)
    case close(fd: Int32)

    /// Name used in error messages ("connect", "recvmsg", ...).
    var name: String {
        switch self {
        case .openat: return "openat"
        case .read: return "read"
        case .write: return "write"
        case .statx: return "statx"
        case .connect: return "connect"
        case .accept: return "accept"
        case .recvmsg: return "recvmsg"
        case .sendmsg: return "sendmsg"
        case .poll: return "poll"
        case .timeout: return "timeout"
        case .close: return "close"
        }
    }
}

/// A submitted operation waiting for its completion. `complete` receives the raw result the
/// kernel would put in a CQE: a value >= 0 or -errno (a timeout that fires gives -ETIME).
final class PendingOp {
    let id: UInt64
    let kind: IOOpKind
    let complete: (Int32) -> Void
    /// Raw allocations released when the op is gone (after its handler ran).
    var owned: [UnsafeMutableRawPointer] = []
    /// Poll backend: monotonic deadline of a timeout, or the time a connect retry is due.
    var deadlineNs: UInt64 = 0
    /// Poll backend: the socket was switched to O_NONBLOCK for a connect and must be restored.
    var restoreBlocking = false

    init(id: UInt64, kind: IOOpKind, complete: @escaping (Int32) -> Void) {
        self.id = id
        self.kind = kind
        self.complete = complete
    }

    deinit { for p in owned { p.deallocate() } }

    /// Copies a Swift string into op-owned, NUL-terminated memory.
    static func cString(_ s: String, into owned: inout [UnsafeMutableRawPointer]) -> UnsafeMutablePointer<CChar> {
        let utf8 = Array(s.utf8CString)
        let p = UnsafeMutablePointer<CChar>.allocate(capacity: utf8.count)
        p.initialize(from: utf8, count: utf8.count)
        owned.append(UnsafeMutableRawPointer(p))
        return p
    }

    static func allocate<T>(_ type: T.Type, into owned: inout [UnsafeMutableRawPointer]) -> UnsafeMutablePointer<T> {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: MemoryLayout<T>.size, alignment: MemoryLayout<T>.alignment)
        memset(raw, 0, MemoryLayout<T>.size)
        owned.append(raw)
        return raw.assumingMemoryBound(to: T.self)
    }

    static func allocateBytes(_ count: Int, into owned: inout [UnsafeMutableRawPointer]) -> UnsafeMutableRawPointer {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1), alignment: 16)
        owned.append(raw)
        return raw
    }
}

/// A completed operation, ready to be dispatched to its handler on the loop thread.
struct Completion {
    let op: PendingOp
    let result: Int32
}

/// What the IOLoop asks of a backend. Both run on the loop thread only.
protocol IOBackend: AnyObject {
    var name: String { get }
    /// Queues an operation; io_uring batches it into the next submit.
    func enqueue(_ op: PendingOp)
    /// Asks the kernel (or the poll set) to cancel a queued operation; its handler then receives
    /// -ECANCELED (or its real result if it finished first).
    func cancel(id: UInt64)
    /// Submits what is queued, waits up to `timeoutNs` (nil: until something completes) and
    /// appends completions to `out`.
    func wait(timeoutNs: UInt64?, into out: inout [Completion])
    /// Ops still owned by the backend (for tests and shutdown).
    var inFlight: Int { get }
    func shutdown()
}
