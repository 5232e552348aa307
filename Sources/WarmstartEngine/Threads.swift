#if canImport(Glibc)
import Glibc
#endif

/// A pthread mutex (Foundation-free builds have no NSLock). Control-plane use only.
public final class PThreadMutex: @unchecked Sendable {
    private let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    public init() { pthread_mutex_init(m, nil) }
    deinit { pthread_mutex_destroy(m); m.deallocate() }
    public func locked<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(m)
        defer { pthread_mutex_unlock(m) }
        return try body()
    }
}

/// Runs `body` on a new detached thread (on this one if no thread can be created).
public func runDetached(_ body: @escaping () -> Void) {
    final class Box { let body: () -> Void; init(_ b: @escaping () -> Void) { body = b } }
    var t = pthread_t()
    let ctx = Unmanaged.passRetained(Box(body)).toOpaque()
    let rc = pthread_create(&t, nil, { arg in
        Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue().body()
        return nil
    }, ctx)
    if rc == 0 {
        pthread_detach(t)
    } else {
        Unmanaged<Box>.fromOpaque(ctx).takeRetainedValue().body()
    }
}
