import WarmstartMemory
#if canImport(Glibc)
import Glibc
#endif

/// Hands out pieces of a shared region (the general-purpose region of `LiveMemory`) for things a
/// vhost-user peer must see: virtqueue rings of virtio-user ports. The region is already in the
/// memory table we send (SET_MEM_TABLE), so the back-end maps the rings with the rest of our
/// memory and no extra region (or fd) is needed — the table stays at one entry per region.
///
/// Bump allocation only: a port keeps its rings for its whole life and reuses them on every
/// reconnect, so nothing is ever given back. Thread-safe (ports attach from their own threads).
public final class RingArena: @unchecked Sendable {
    public let region: MemoryRegion
    public let start: Int
    public let end: Int
    private var next: Int
    private var mutex = pthread_mutex_t()

    /// Uses `region[offset ..< offset + length]` (default: all of it).
    public init(region: MemoryRegion, offset: Int = 0, length: Int? = nil) {
        self.region = region
        start = offset
        end = offset + (length ?? (region.size - offset))
        next = offset
        pthread_mutex_init(&mutex, nil)
    }

    deinit { pthread_mutex_destroy(&mutex) }

    nonisolated(unsafe) private static var arenas: [ObjectIdentifier: RingArena] = [:]
    nonisolated(unsafe) private static var arenasLock = pthread_mutex_t()
    nonisolated(unsafe) private static var arenasLockReady: Bool = {
        pthread_mutex_init(&arenasLock, nil)
        return true
    }()

    /// The one arena of `region` in this process: two users of one general-purpose region (a
    /// runtime's virtio-user ports and an in-process traffic generator) must not hand out the
    /// same bytes twice.
    public static func shared(for region: MemoryRegion) -> RingArena {
        _ = arenasLockReady
        pthread_mutex_lock(&arenasLock); defer { pthread_mutex_unlock(&arenasLock) }
        if let a = arenas[ObjectIdentifier(region)] { return a }
        let a = RingArena(region: region)
        arenas[ObjectIdentifier(region)] = a
        return a
    }

    /// Bytes still free.
    public var remaining: Int {
        pthread_mutex_lock(&mutex); defer { pthread_mutex_unlock(&mutex) }
        return end - next
    }

    /// `bytes` bytes aligned to `alignment` (a power of two): host pointer and I/O (guest)
    /// address, or nil when the arena is exhausted.
    public func allocate(bytes: Int, alignment: Int = 4096) -> (host: UnsafeMutableRawPointer, guest: UInt64)? {
        precondition(alignment > 0 && alignment & (alignment - 1) == 0)
        pthread_mutex_lock(&mutex); defer { pthread_mutex_unlock(&mutex) }
        let at = (next + alignment - 1) & ~(alignment - 1)
        guard bytes >= 0, at + bytes <= end else { return nil }
        next = at + bytes
        return (region.base + at, region.ioAddress + UInt64(at))
    }
}
