#if canImport(Glibc)
import Glibc
#endif
import CLibURing
import CWarmstartShim

/// Fallback when io_uring is unavailable: plain system calls driven by poll(2).
/// Socket operations that could block wait for readiness first (accept, read, write, poll) or
/// use MSG_DONTWAIT (recvmsg/sendmsg), so one control thread still serves every port.
/// File operations (openat, statx, close) run at once; they do not block on sockets.
final class PollBackend: IOBackend {
    let name = "poll"
    /// Ops to attempt on the next wait (new ones and ones due again).
    private var runnable: [PendingOp] = []
    /// Ops waiting for readiness of (fd, events).
    private var waiting: [(op: PendingOp, fd: Int32, events: Int16)] = []
    /// Timeouts and connect retries, by deadline.
    private var timers: [PendingOp] = []
    /// Results known before the next wait (cancellations).
    private var finished: [Completion] = []

    var inFlight: Int { runnable.count + waiting.count + timers.count + finished.count }

    func shutdown() {
        runnable.removeAll(); waiting.removeAll(); timers.removeAll(); finished.removeAll()
    }

    func enqueue(_ op: PendingOp) { runnable.append(op) }

    func cancel(id: UInt64) {
        if let i = runnable.firstIndex(where: { $0.id == id }) {
            finish(runnable.remove(at: i), -ECANCELED)
        } else if let i = waiting.firstIndex(where: { $0.op.id == id }) {
            finish(waiting.remove(at: i).op, -ECANCELED)
        } else if let i = timers.firstIndex(where: { $0.id == id }) {
            finish(timers.remove(at: i), -ECANCELED)
        }
    }

    private func finish(_ op: PendingOp, _ res: Int32) {
        if op.restoreBlocking, case let .connect(fd, _, _) = op.kind { setNonBlocking(fd, false) }
        finished.append(Completion(op: op, result: res))
    }

    private enum Step { case done(Int32), wait(Int32, Int16), retryAt(UInt64) }

    /// Performs (or starts) one op. `ready` is true when poll(2) reported the fd ready.
    private func attempt(_ op: PendingOp, ready: Bool, revents: Int16 = 0) -> Step {
        func sys(_ r: Int) -> Step { r >= 0 ? .done(Int32(truncatingIfNeeded: r)) : .done(-errno) }
        switch op.kind {
        case let .openat(dirfd, path, flags, mode):
            return sys(Int(openat(dirfd, path, flags, mode)))
        case let .read(fd, buffer, length, offset):
            guard ready else { return .wait(fd, Int16(POLLIN)) }
            let r = offset == .max ? Glibc.read(fd, buffer, length) : pread(fd, buffer, length, off_t(offset))
            if r < 0 && errno == EAGAIN { return .wait(fd, Int16(POLLIN)) }
            return sys(r)
        case let .write(fd, buffer, length, offset):
            guard ready else { return .wait(fd, Int16(POLLOUT)) }
            let r = offset == .max ? Glibc.write(fd, buffer, length) : pwrite(fd, buffer, length, off_t(offset))
            if r < 0 && errno == EAGAIN { return .wait(fd, Int16(POLLOUT)) }
            return sys(r)
        case let .statx(path, result):
            var st = stat()
            if fstatat(AT_FDCWD, path, &st, AT_SYMLINK_NOFOLLOW) != 0 { return .done(-errno) }
            result.pointee.stx_mode = UInt16(truncatingIfNeeded: st.st_mode)
            result.pointee.stx_size = UInt64(st.st_size)
            result.pointee.stx_uid = st.st_uid
            return .done(0)
        case let .connect(fd, address, length):
            if ready {
                // EINPROGRESS finished: the outcome is in SO_ERROR.
                var err: Int32 = 0
                var len = socklen_t(MemoryLayout<Int32>.size)
                if getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 { return .done(-errno) }
                return .done(-err)
            }
            if !op.restoreBlocking && !isNonBlocking(fd) {
                setNonBlocking(fd, true)
                op.restoreBlocking = true
            }
            let r = address.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, length) }
            if r == 0 { return .done(0) }
            let e = errno
            if e == EINPROGRESS { return .wait(fd, Int16(POLLOUT)) }
            // AF_UNIX with a full backlog: no readiness to wait for, try again shortly.
            if e == EAGAIN { return .retryAt(ws_monotonic_ns() + 1_000_000) }
            return .done(-e)
        case let .accept(fd):
            guard ready else { return .wait(fd, Int16(POLLIN)) }
            let r = Glibc.accept(fd, nil, nil)
            if r < 0 { return errno == EAGAIN ? .wait(fd, Int16(POLLIN)) : .done(-errno) }
            _ = fcntl(r, F_SETFD, FD_CLOEXEC)
            return .done(r)
        case let .recvmsg(fd, header):
            let r = recvmsg(fd, header.assumingMemoryBound(to: msghdr.self), Int32(MSG_CMSG_CLOEXEC) | Int32(MSG_DONTWAIT))
            if r < 0 && errno == EAGAIN { return .wait(fd, Int16(POLLIN)) }
            return sys(r)
        case let .sendmsg(fd, header):
            let r = sendmsg(fd, header.assumingMemoryBound(to: msghdr.self), Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
            if r < 0 && errno == EAGAIN { return .wait(fd, Int16(POLLOUT)) }
            return sys(r)
        case let .poll(fd, events):
            return ready ? .done(Int32(UInt16(bitPattern: revents))) : .wait(fd, events)
        case let .timeout(ns, _):
            if op.deadlineNs == 0 { op.deadlineNs = ws_monotonic_ns() + ns }
            return ws_monotonic_ns() >= op.deadlineNs ? .done(-ETIME) : .retryAt(op.deadlineNs)
        case let .close(fd):
            return sys(Int(Glibc.close(fd)))
        }
    }

    private func apply(_ op: PendingOp, _ step: Step) {
        switch step {
        case let .done(res): finish(op, res)
        case let .wait(fd, events): waiting.append((op, fd, events))
        case let .retryAt(deadline):
            op.deadlineNs = deadline
            timers.append(op)
        }
    }

    func wait(timeoutNs: UInt64?, into out: inout [Completion]) {
        let batch = runnable
        runnable.removeAll(keepingCapacity: true)
        for op in batch { apply(op, attempt(op, ready: false)) }

        // Sleep until a fd is ready, the earliest timer, or the caller's timeout — but not at all
        // when results are already waiting to be dispatched.
        let now = ws_monotonic_ns()
        var sleepNs: UInt64? = timeoutNs
        if let earliest = timers.map({ $0.deadlineNs }).min() {
            let d = earliest > now ? earliest - now : 0
            sleepNs = min(sleepNs ?? d, d)
        }
        if !finished.isEmpty { sleepNs = 0 }
        var fds = waiting.map { pollfd(fd: $0.fd, events: $0.events, revents: 0) }
        let ms: Int32 = sleepNs.map { Int32(min(($0 + 999_999) / 1_000_000, 60_000)) } ?? -1
        let n = fds.withUnsafeMutableBufferPointer { Glibc.poll($0.baseAddress, nfds_t($0.count), ms) }
        if n > 0 {
            var still: [(op: PendingOp, fd: Int32, events: Int16)] = []
            let snapshot = waiting
            waiting.removeAll(keepingCapacity: true)
            for (i, w) in snapshot.enumerated() {
                if fds[i].revents != 0 {
                    let step = attempt(w.op, ready: true, revents: fds[i].revents)
                    if case let .wait(fd, ev) = step { still.append((w.op, fd, ev)) } else { apply(w.op, step) }
                } else {
                    still.append(w)
                }
            }
            waiting = still + waiting
        }
        let after = ws_monotonic_ns()
        let due = timers.filter { $0.deadlineNs <= after }
        timers.removeAll { $0.deadlineNs <= after }
        for op in due { apply(op, attempt(op, ready: false)) }

        out.append(contentsOf: finished)
        finished.removeAll(keepingCapacity: true)
    }

    private func isNonBlocking(_ fd: Int32) -> Bool { fcntl(fd, F_GETFL) & O_NONBLOCK != 0 }
    private func setNonBlocking(_ fd: Int32, _ on: Bool) {
        let fl = fcntl(fd, F_GETFL)
        guard fl >= 0 else { return }
        _ = fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK)
    }
}
