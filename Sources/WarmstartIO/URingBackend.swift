#if canImport(Glibc)
import Glibc
#endif
import CLibURing
import CWarmstartShim

/// io_uring backend: every operation becomes one SQE whose user_data is the op id; SQEs are
/// batched and submitted together with the wait (io_uring_submit_and_wait_timeout), so a burst of
/// probes for many devices costs one system call.
final class URingBackend: IOBackend {
    let name = "io_uring"
    private let ring: UnsafeMutablePointer<io_uring>
    private var pending: [UInt64: PendingOp] = [:]
    /// user_data of SQEs whose completion nobody waits for (cancel requests).
    private static let internalUserData: UInt64 = 0
    private var cqes: UnsafeMutablePointer<UnsafeMutablePointer<io_uring_cqe>?>
    private let cqeBatch = 64
    private var closed = false

    /// Fails with the errno of io_uring_queue_init (EPERM under io_uring_disabled or seccomp,
    /// ENOSYS on an old kernel) so the loop can fall back and say why.
    init(entries: UInt32) throws(IOError) {
        ring = .allocate(capacity: 1)
        memset(ring, 0, MemoryLayout<io_uring>.size)
        let rc = io_uring_queue_init(entries, ring, 0)
        if rc < 0 {
            ring.deallocate()
            throw IOError(errno: -rc, operation: "io_uring_queue_init")
        }
        cqes = .allocate(capacity: cqeBatch)
    }

    deinit {
        shutdown()
        ring.deallocate()
        cqes.deallocate()
    }

    /// Cancels whatever is still in flight and waits (briefly) for the kernel to let go of it
    /// before the ring and the ops' memory are released: a receive that completed after its
    /// buffer was freed would write into someone else's memory.
    func shutdown() {
        guard !closed else { return }
        closed = true
        if !pending.isEmpty {
            let s = sqe()
            io_uring_prep_cancel64(s, 0, Int32(IORING_ASYNC_CANCEL_ANY))
            io_uring_sqe_set_data64(s, URingBackend.internalUserData)
            var drained: [Completion] = []
            let deadline = ws_monotonic_ns() + 100_000_000
            while !pending.isEmpty && ws_monotonic_ns() < deadline {
                wait(timeoutNs: 10_000_000, into: &drained)
            }
        }
        io_uring_queue_exit(ring)
        pending.removeAll()
    }

    var inFlight: Int { pending.count }

    /// A free SQE; when the submission queue is full, flush it to the kernel first.
    private func sqe() -> UnsafeMutablePointer<io_uring_sqe> {
        if let s = io_uring_get_sqe(ring) { return s }
        _ = io_uring_submit(ring)
        guard let s = io_uring_get_sqe(ring) else { fatalError("io_uring: no SQE after submit") }
        return s
    }

    func enqueue(_ op: PendingOp) {
        let s = sqe()
        switch op.kind {
        case let .openat(dirfd, path, flags, mode):
            io_uring_prep_openat(s, dirfd, path, flags, mode)
        case let .read(fd, buffer, length, offset):
            io_uring_prep_read(s, fd, buffer, UInt32(length), offset == .max ? UInt64.max : offset)
        case let .write(fd, buffer, length, offset):
            io_uring_prep_write(s, fd, buffer, UInt32(length), offset == .max ? UInt64.max : offset)
        case let .statx(path, result):
            io_uring_prep_statx(s, AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, UInt32(STATX_BASIC_STATS), result)
        case let .connect(fd, address, length):
            address.withMemoryRebound(to: sockaddr.self, capacity: 1) { io_uring_prep_connect(s, fd, $0, length) }
        case let .accept(fd):
            io_uring_prep_accept(s, fd, nil, nil, Int32(SOCK_CLOEXEC.rawValue))
        case let .recvmsg(fd, header):
            io_uring_prep_recvmsg(s, fd, header.assumingMemoryBound(to: msghdr.self), UInt32(MSG_CMSG_CLOEXEC))
        case let .sendmsg(fd, header):
            io_uring_prep_sendmsg(s, fd, header.assumingMemoryBound(to: msghdr.self), UInt32(MSG_NOSIGNAL))
        case let .poll(fd, events):
            io_uring_prep_poll_add(s, fd, UInt32(UInt16(bitPattern: events)))
        case let .timeout(ns, spec):
            spec.pointee.tv_sec = Int64(ns / 1_000_000_000)
            spec.pointee.tv_nsec = Int64(ns % 1_000_000_000)
            io_uring_prep_timeout(s, spec, 0, 0)
        case let .close(fd):
            io_uring_prep_close(s, fd)
        }
        io_uring_sqe_set_data64(s, op.id)
        pending[op.id] = op
    }

    func cancel(id: UInt64) {
        guard pending[id] != nil else { return }
        let s = sqe()
        io_uring_prep_cancel64(s, id, 0)
        io_uring_sqe_set_data64(s, URingBackend.internalUserData)
    }

    func wait(timeoutNs: UInt64?, into out: inout [Completion]) {
        var cqe: UnsafeMutablePointer<io_uring_cqe>? = nil
        if let t = timeoutNs {
            var ts = __kernel_timespec(tv_sec: Int64(t / 1_000_000_000), tv_nsec: Int64(t % 1_000_000_000))
            _ = io_uring_submit_and_wait_timeout(ring, &cqe, 1, &ts, nil)
        } else {
            // Nothing in flight and no timeout would block forever; the loop's eventfd read is
            // always in flight, so this only waits for real work.
            _ = io_uring_submit_and_wait_timeout(ring, &cqe, 1, nil, nil)
        }
        while true {
            let n = Int(io_uring_peek_batch_cqe(ring, cqes, UInt32(cqeBatch)))
            if n == 0 { break }
            for i in 0..<n {
                guard let c = cqes[i] else { continue }
                let id = c.pointee.user_data
                let res = c.pointee.res
                if id != URingBackend.internalUserData, let op = pending.removeValue(forKey: id) {
                    out.append(Completion(op: op, result: res))
                }
            }
            io_uring_cq_advance(ring, UInt32(n))
            if n < cqeBatch { break }
        }
    }
}
