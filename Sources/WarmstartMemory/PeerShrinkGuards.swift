import CWarmstartShim
#if canImport(Glibc)
import Glibc
#endif

/// The lock over every region's `peerGuards` (set-up and teardown only, never the datapath).
enum PeerShrinkGuards {
    nonisolated(unsafe) static let lock: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }()

    static func locked<T>(_ body: () throws(MappingFaultGuardError) -> T) throws(MappingFaultGuardError) -> T {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        return try body()
    }
}

extension MemoryRegion {
    /// Whether a peer we hand `fd` to could shrink the file behind this mapping: the file is not
    /// sealed against shrinking (a snapshot file on hugetlbfs or /dev/shm cannot be sealed; our
    /// memfds are, see `memfd`).
    public var peerCanShrink: Bool {
        let seals = ws_file_seals(fd.rawValue)
        return !(seals >= 0 && seals & WS_F_SEAL_SHRINK != 0)
    }

    /// Guards every region of `regions` that a peer could shrink (`peerCanShrink`) against it
    /// under one flag, for the memory a virtio-user port lends its back-end: a truncated file then
    /// costs the ports that share it (the flag's owners), not the process — the SIGBUS handler
    /// maps zero pages over the whole region and sets the flag. Returns nil when every region is
    /// sealed (nothing to guard).
    ///
    /// Idempotent per set: a flag every such region is already guarded under is returned again, so
    /// every port over the same memory shares one flag; a region lost before (any of its flags
    /// set) makes the whole set lost, and that flag is returned. The guards live as long as the
    /// regions (a peer keeps our fd after it disconnects and may truncate it any time).
    /// `label` names a region in the fault's reason ("shared packet memory 'mbufs'").
    public static func guardAgainstPeerShrink(_ regions: [MemoryRegion], label: (MemoryRegion) -> String)
        throws(MappingFaultGuardError) -> MappingFaultFlag? {
        var seen = Set<ObjectIdentifier>()
        let exposed = regions.filter { seen.insert(ObjectIdentifier($0)).inserted && $0.peerCanShrink }
        guard let first = exposed.first else { return nil }
        let labels = exposed.map(label)
        return try PeerShrinkGuards.locked { () throws(MappingFaultGuardError) -> MappingFaultFlag in
            for r in exposed {
                if let lost = r.peerGuards.first(where: { $0.flag.isSet }) { return lost.flag }
            }
            if let common = first.peerGuards.first(where: { g in
                exposed.allSatisfy { r in r.peerGuards.contains { $0.flag === g.flag } }
            }) {
                return common.flag
            }
            let flag = MappingFaultFlag()
            var made: [(MemoryRegion, MappingFaultGuard)] = []
            do throws(MappingFaultGuardError) {
                for (r, name) in zip(exposed, labels) {
                    made.append((r, try MappingFaultGuard(base: r.base, length: r.size, pageSize: r.pageSize.bytes,
                                                          fd: r.fd.rawValue, label: name, flag: flag)))
                }
            } catch {
                for (_, g) in made { g.unregister() }
                throw error
            }
            for (r, g) in made { r.peerGuards.append(g) }
            return flag
        }
    }

    /// True once a peer shrank the file behind this mapping and the SIGBUS guard replaced it with
    /// zero pages (as far as a flag can tell: one of the flags this region is guarded under is
    /// set). Everything in it then reads zeros; its mbuf headers too. Slow path only (a lock).
    public var lostToPeer: Bool {
        (try? PeerShrinkGuards.locked { peerGuards.contains { $0.flag.isSet } }) ?? false
    }
}
