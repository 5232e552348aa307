import CWarmstartShim
#if canImport(Glibc)
import Glibc
#endif

/// Why memory shared by a peer could not be guarded.
public enum MappingFaultGuardError: Error, CustomStringConvertible, Equatable {
    /// sigaction(SIGBUS) failed: the process could not install the handler.
    case handlerNotInstalled(errno: Int32)
    /// Every slot of the fixed-size guard table is taken.
    case tableFull(label: String)
    /// The range is empty or wraps.
    case invalidRange(label: String)

    public var description: String {
        switch self {
        case let .handlerNotInstalled(e):
            return "cannot install the SIGBUS handler that guards shared memory: errno \(e)"
        case let .tableFull(label):
            return "cannot guard the \(label): every fault-guard slot is in use (too many shared mappings)"
        case let .invalidRange(label):
            return "cannot guard the \(label): its range is empty or wraps"
        }
    }
}

/// The broken-memory flag of one owner (a vhost-user session): set by the SIGBUS handler when any
/// mapping registered with it faulted, because the peer shrank the file behind it.
///
/// `words[0]` is 0 until a fault, then the guard slot of the mapping that faulted first + 1;
/// `words[1]` the faulting address. The datapath loads `words[0]` once per burst per queue. The
/// words stay allocated as long as this object, and every `MappingFaultGuard` holds it, so the
/// handler never writes to freed memory.
public final class MappingFaultFlag: @unchecked Sendable {
    public let words: UnsafeMutablePointer<UInt64>
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    /// What each registered slot maps, for the reason (control side).
    private var labels: [Int32: (label: String, base: UInt64)] = [:]
    private var observers: [() -> Void] = []
    private var noticed = false

    public init() {
        words = .allocate(capacity: 2)
        words.initialize(repeating: 0, count: 2)
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        words.deallocate()
    }

    private func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    /// True once a registered mapping faulted.
    @inlinable public var isSet: Bool { ws_load_acquire_u64(words) != 0 }

    /// The faulting address, once set.
    public var faultAddress: UInt64? { isSet ? ws_load_acquire_u64(words + 1) : nil }

    /// "front-end truncated its memory region at guest 0x… (SIGBUS at 0x…)", once set; `peer`
    /// names who shares the memory, `whose` whose memory it was ("its": the peer's own; "the":
    /// ours, lent to the peer).
    public func reason(peer: String, whose: String = "its") -> String? {
        let w = ws_load_acquire_u64(words)
        guard w != 0 else { return nil }
        let known = locked { labels[Int32(truncatingIfNeeded: w &- 1)] }
        let at = ws_load_acquire_u64(words + 1)
        let offset = known.map { at >= $0.base ? ", 0x\(String(at - $0.base, radix: 16)) bytes into the mapping" : "" } ?? ""
        return "\(peer) truncated \(whose) \(known?.label ?? "shared memory") (SIGBUS at 0x\(String(at, radix: 16))\(offset); "
            + "the mapping now reads zeros)"
    }

    /// Adds what `notice()` calls (once): e.g. post the session's close to its loop. A flag
    /// shared by several owners (the virtio-user ports over one pool) has one observer each; one
    /// added after the notice runs at once, on the caller's thread.
    public func onNotice(_ body: @escaping () -> Void) {
        let late = locked { () -> Bool in
            if noticed { return true }
            observers.append(body)
            return false
        }
        if late { body() }
    }

    /// The first thread to see the flag (a polling thread at a burst boundary, or the control
    /// thread after a message) calls this; the observers run once, on that thread.
    public func notice() {
        let o = locked { () -> [() -> Void] in
            if noticed { return [] }
            noticed = true
            defer { observers = [] }
            return observers
        }
        for f in o { f() }
    }

    func remember(_ slot: Int32, _ label: String, base: UnsafeMutableRawPointer) {
        locked { labels[slot] = (label, UInt64(UInt(bitPattern: base))) }
    }

    func forget(_ slot: Int32) {
        // The slot that faulted keeps its label: the reason is read after the mapping is gone.
        locked { if ws_load_acquire_u64(words) != UInt64(slot) + 1 { labels[slot] = nil } }
    }
}

/// One guarded mapping of memory a peer can shrink: registered with the process-wide SIGBUS
/// handler while this object lives. Create it right after mmap, drop it right before munmap.
public final class MappingFaultGuard: @unchecked Sendable {
    public let slot: Int32
    public let flag: MappingFaultFlag
    /// The file carries F_SEAL_SHRINK: shrinking cannot fault this mapping (registered anyway).
    public let sealedAgainstShrink: Bool

    /// Guards `[base, base+length)` (rounded up to `pageSize`, the mapping's page size), mapped
    /// from `fd`. `label` names it in the reason ("memory region at guest 0x…").
    public init(base: UnsafeMutableRawPointer, length: Int, pageSize: Int, fd: Int32, label: String,
                flag: MappingFaultFlag) throws(MappingFaultGuardError) {
        let rc = ws_fault_guard_install()
        guard rc == 0 else { throw .handlerNotInstalled(errno: -rc) }
        let seals = fd >= 0 ? ws_file_seals(fd) : -1
        sealedAgainstShrink = seals >= 0 && seals & WS_F_SEAL_SHRINK != 0
        guard length > 0 else { throw .invalidRange(label: label) }
        let s = ws_fault_guard_register(base, length, max(0, pageSize), flag.words)
        if s == -ENOSPC { throw .tableFull(label: label) }
        guard s >= 0 else { throw .invalidRange(label: label) }
        slot = s
        self.flag = flag
        flag.remember(s, label, base: base)
    }

    private var live = true

    /// Unregisters now (the owner's deinit, right before munmap: stored properties are released
    /// only after a deinit body, which would leave an unmapped range registered meanwhile).
    public func unregister() {
        guard live else { return }
        live = false
        ws_fault_guard_unregister(slot)
        flag.forget(slot)
    }

    deinit { unregister() }

    /// Mappings guarded now, process-wide (tests).
    public static var registered: Int { Int(ws_fault_guard_count()) }
}
