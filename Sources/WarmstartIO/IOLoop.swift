#if canImport(Glibc)
import Glibc
#endif
import CLibURing
import CWarmstartShim

/// The control-plane event loop: one thread owns it, submits typed operations and receives each
/// completion in the handler of the operation that asked. Backed by io_uring, or by poll(2)
/// where io_uring is not available; `backendName` and `fallbackReason` say which ran and why.
///
/// Threading: every method except `post`, `stop` and the read-only properties must be called on
/// the loop thread (from a handler or posted work), or before the loop starts running.
public final class IOLoop: @unchecked Sendable {
    /// "io_uring" or "poll".
    public let backendName: String
    /// Why the poll fallback runs (nil when io_uring runs).
    public let fallbackReason: String?

    let backend: IOBackend
    private var nextID: UInt64 = 1
    private var completions: [Completion] = []

    // Cross-thread work queue, woken through an eventfd that always has a read in flight.
    private let postLock = ConditionLock()
    private var posted: [() -> Void] = []
    private var stopRequested = false
    private let wakeFD: Int32
    private let wakeBuffer = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)
    private var thread: pthread_t?
    private var loopThreadSet = false
    private var loopThread = pthread_t()

    /// Set WARMSTART_NO_IO_URING=1 (or pass `forceFallback`) to run the poll backend.
    public static let disableEnvironmentVariable = "WARMSTART_NO_IO_URING"

    public init(forceFallback: Bool = false, entries: UInt32 = 256) throws(IOError) {
        var reason: String? = nil
        var chosen: IOBackend? = nil
        if forceFallback {
            reason = "io_uring disabled by the caller"
        } else if let env = getenv(IOLoop.disableEnvironmentVariable), String(cString: env) == "1" {
            reason = "io_uring disabled by \(IOLoop.disableEnvironmentVariable)=1"
        } else if let sysctl = IOLoop.readSysctl("/proc/sys/kernel/io_uring_disabled"), sysctl == "2" {
            reason = "io_uring disabled by kernel.io_uring_disabled=2"
        } else {
            do {
                chosen = try URingBackend(entries: entries)
            } catch {
                // EPERM: sysctl or seccomp; ENOSYS: kernel without io_uring.
                var why = error.description
                if let sysctl = IOLoop.readSysctl("/proc/sys/kernel/io_uring_disabled"), sysctl != "0" {
                    why += " (kernel.io_uring_disabled=\(sysctl))"
                }
                reason = why
            }
        }
        backend = chosen ?? PollBackend()
        backendName = backend.name
        fallbackReason = chosen == nil ? reason : nil

        let efd = ws_eventfd(0, WS_EFD_CLOEXEC)
        if efd < 0 { throw IOError(errno: errno, operation: "eventfd") }
        wakeFD = efd
        armWake()
    }

    deinit {
        backend.shutdown()
        Glibc.close(wakeFD)
        wakeBuffer.deallocate()
    }

    private static func readSysctl(_ path: String) -> String? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        var buf = [UInt8](repeating: 0, count: 16)
        let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, 16) }
        guard n > 0 else { return nil }
        return String(decoding: buf[0..<n], as: UTF8.self).trimmingWhitespace()
    }

    private func armWake() {
        submit(.read(fd: wakeFD, buffer: wakeBuffer, length: 8, offset: .max)) { [unowned self] _ in
            self.armWake()
        }
    }

    // MARK: submission core

    @discardableResult
    func submit(_ kind: IOOpKind, owned: [UnsafeMutableRawPointer] = [], _ complete: @escaping (Int32) -> Void) -> IOOpID {
        let id = nextID
        nextID += 1
        let op = PendingOp(id: id, kind: kind, complete: complete)
        op.owned = owned
        backend.enqueue(op)
        return IOOpID(raw: id)
    }

    /// Cancels an operation; its handler receives an error with errno ECANCELED unless it
    /// completed first.
    public func cancel(_ id: IOOpID) { backend.cancel(id: id.raw) }

    /// Operations submitted and not yet completed (includes the loop's own wake-up read).
    public var operationsInFlight: Int { backend.inFlight }

    // MARK: running

    /// Runs queued posts, submits, waits up to `timeoutNs` (nil: until something happens) and
    /// dispatches completions. Returns the number of handlers run.
    @discardableResult
    public func runOnce(timeoutNs: UInt64? = nil) -> Int {
        if !loopThreadSet { loopThread = pthread_self(); loopThreadSet = true }
        var ran = drainPosted()
        completions.removeAll(keepingCapacity: true)
        backend.wait(timeoutNs: ran > 0 ? 0 : timeoutNs, into: &completions)
        let batch = completions
        completions.removeAll(keepingCapacity: true)
        for c in batch { c.op.complete(c.result) }
        ran += batch.count
        ran += drainPosted()
        return ran
    }

    /// Runs until `stop()`.
    public func run() {
        loopThread = pthread_self()
        loopThreadSet = true
        while !postLock.withLock({ stopRequested }) { runOnce(timeoutNs: nil) }
    }

    /// Thread-safe: asks `run()` to return after the current iteration.
    public func stop() {
        postLock.withLock { stopRequested = true }
        wake()
    }

    /// Thread-safe: runs `work` on the loop thread soon.
    public func post(_ work: @escaping () -> Void) {
        postLock.withLock { posted.append(work) }
        wake()
    }

    /// True on the thread that runs the loop.
    public var isOnLoopThread: Bool { loopThreadSet && pthread_equal(loopThread, pthread_self()) != 0 }

    private func wake() {
        var one: UInt64 = 1
        _ = Glibc.write(wakeFD, &one, 8)
    }

    private func drainPosted() -> Int {
        let work = postLock.withLock { () -> [() -> Void] in
            let w = posted
            posted.removeAll()
            return w
        }
        for w in work { w() }
        return work.count
    }

    // MARK: own thread

    /// Starts a thread that runs the loop until `stop()`.
    public func startThread() {
        precondition(thread == nil, "IOLoop thread already started")
        let box = Unmanaged.passRetained(self)
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { arg in
            let loop = Unmanaged<IOLoop>.fromOpaque(arg!).takeRetainedValue()
            loop.run()
            // The ring is torn down by the thread that used it: the cancellations submitted here
            // complete through this thread's task work. Submitted from the caller of
            // `stopAndJoin`, their late completions interrupt that thread's next blocking call
            // with a timeout (a recv under SO_RCVTIMEO returned EINTR; seen in the Bus tests).
            loop.backend.shutdown()
            return nil
        }, box.toOpaque())
        precondition(rc == 0, "pthread_create: \(IOError.message(rc))")
        thread = t
    }

    /// Releases every pending operation without running its handler (handlers often hold the
    /// object that submitted them, so this also breaks those reference cycles). Call after the
    /// loop stopped; the loop cannot be used afterwards. (A loop run by `startThread` has already
    /// shut its backend down on its own thread; this then only drops what was posted.)
    public func shutdown() {
        backend.shutdown()
        postLock.withLock { posted.removeAll() }
    }

    /// Stops the loop thread and waits for it to finish.
    public func stopAndJoin() {
        stop()
        if let t = thread {
            pthread_join(t, nil)
            thread = nil
        }
    }
}

extension String {
    func trimmingWhitespace() -> String {
        let ws: Set<Character> = [" ", "\n", "\t", "\r"]
        var s = Substring(self)
        while let f = s.first, ws.contains(f) { s = s.dropFirst() }
        while let l = s.last, ws.contains(l) { s = s.dropLast() }
        return String(s)
    }
}
