#if canImport(Glibc)
import Glibc
#endif

/// A pthread mutex with a condition variable. The pthread objects live in their own allocation
/// because they must never move, and Swift gives no stable address to a stored property.
public final class ConditionLock: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let cond: UnsafeMutablePointer<pthread_cond_t>

    public init() {
        mutex = .allocate(capacity: 1)
        cond = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        // CLOCK_MONOTONIC so a wall-clock step cannot stretch or cut a wait.
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(cond, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        cond.deallocate()
    }

    @inline(__always)
    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// Wakes every waiter; call with or without the lock held.
    public func broadcast() { pthread_cond_broadcast(cond) }

    /// Waits (lock held by the caller, inside `withLock`) until signalled or `deadlineNs`
    /// (CLOCK_MONOTONIC) passes. Returns false on timeout.
    public func wait(untilMonotonicNs deadlineNs: UInt64) -> Bool {
        var ts = timespec(tv_sec: Int(deadlineNs / 1_000_000_000), tv_nsec: Int(deadlineNs % 1_000_000_000))
        return pthread_cond_timedwait(cond, mutex, &ts) != ETIMEDOUT
    }
}
