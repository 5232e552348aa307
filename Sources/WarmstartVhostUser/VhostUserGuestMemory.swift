import WarmstartMemory
#if canImport(Glibc)
import Glibc
import WarmstartVhostUserWire
#endif

/// One front-end memory region mapped into this process (SET_MEM_TABLE / ADD_MEM_REG).
///
/// The whole file is mapped from offset 0 through `mmap_offset + size`, rounded up to the file's
/// block size (hugetlbfs reports its page size there, and a hugetlbfs mapping must be a whole number
/// of pages), MAP_SHARED; the region starts `mmap_offset` bytes in. Mapping from 0 keeps the mmap
/// offset argument page-aligned whatever `mmap_offset` is.
/// The mapping and the descriptor live exactly as long as this object: unmapped and closed in deinit.
/// While mapped it is registered with the SIGBUS guard (`fault`): a front-end that shrinks the
/// file costs its session (zero pages replace the mapping, the flag closes the session), never
/// the process.
public final class GuestRegionMapping: @unchecked Sendable {
    public let region: MemoryRegionPayload
    public let fd: Int32
    /// Host address of the region's first byte (guest address `region.guestAddress`).
    public let host: UnsafeMutableRawPointer
    let mapBase: UnsafeMutableRawPointer
    let mapSize: Int
    /// Registered from mmap to munmap.
    let guarded: MappingFaultGuard

    /// The session's broken-memory flag this mapping sets when it faults.
    public var fault: MappingFaultFlag { guarded.flag }

    /// Maps `region` from `fd`, taking ownership of `fd` (closed on failure too).
    public init(region: MemoryRegionPayload, fd: Int32, request: VhostUserRequest, fault: MappingFaultFlag) throws(VhostUserError) {
        func fail(_ why: String) -> VhostUserError {
            closeFD(fd)
            return VhostUserError(request: request, reason: .memory(why))
        }
        let r = region
        guard r.size > 0 else { throw fail("region at guest 0x\(hex(r.guestAddress)) has size 0") }
        guard !r.guestAddress.addingReportingOverflow(r.size).overflow else {
            throw fail("region guest address 0x\(hex(r.guestAddress)) + size 0x\(hex(r.size)) overflows")
        }
        guard !r.userAddress.addingReportingOverflow(r.size).overflow else {
            throw fail("region user address 0x\(hex(r.userAddress)) + size 0x\(hex(r.size)) overflows")
        }
        let (end, o) = r.mmapOffset.addingReportingOverflow(r.size)
        guard !o, end <= UInt64(Int.max / 2) else {
            throw fail("region mmap offset 0x\(hex(r.mmapOffset)) + size 0x\(hex(r.size)) overflows")
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw fail("fstat of the region's fd failed: errno \(errno)") }
        // A mapping beyond the end of the file would fault (SIGBUS) on first touch: refuse it now.
        guard UInt64(max(0, Int(st.st_size))) >= end else {
            throw fail("region needs 0x\(hex(end)) bytes of its file (mmap offset + size) but the file has 0x\(hex(UInt64(max(0, Int(st.st_size)))))")
        }
        let align = max(Int(st.st_blksize), Int(sysconf(Int32(_SC_PAGESIZE))))
        let (rounded, o2) = Int(end).addingReportingOverflow(align - 1)
        guard !o2 else { throw fail("region size overflows when rounded to the file's block size") }
        let size = rounded / align * align
        let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let p, p != MAP_FAILED else {
            throw fail("mmap of \(size) bytes failed: errno \(errno)")
        }
        do {
            guarded = try MappingFaultGuard(base: p, length: size, pageSize: align, fd: fd,
                                            label: "memory region at guest 0x\(hex(r.guestAddress))", flag: fault)
        } catch {
            munmap(p, size)
            throw fail("\(error)")
        }
        self.region = region
        self.fd = fd
        self.mapBase = p
        self.mapSize = size
        self.host = p + Int(r.mmapOffset)
    }

    deinit {
        guarded.unregister()
        munmap(mapBase, mapSize)
        closeFD(fd)
    }

    var entry: MemoryTable.Entry {
        MemoryTable.Entry(guestAddress: region.guestAddress, userAddress: region.userAddress,
                          size: region.size, hostAddress: UInt(bitPattern: host))
    }
}

/// The front-end's memory as this process sees it: the mapped regions and their translation table.
///
/// Lifetime (the datapath handshake): this is a reference-counted object. The session holds the
/// current one; every `VringSetup` holds the one its pointers point into. When the front-end
/// replaces the table, the session drops its reference and emits `.memoryTableReplaced`; a region
/// is unmapped only when the last holder — the session or a datapath queue still built on the old
/// table — lets go. So a datapath that swaps to the new setup between bursts never touches unmapped
/// memory, and nothing stays mapped once nobody uses it.
public final class VhostUserGuestMemory: @unchecked Sendable {
    public let regions: [GuestRegionMapping]
    public let table: MemoryTable
    /// Increases with every replacement, so logs and the datapath can tell tables apart.
    public let generation: UInt64
    /// The session's broken-memory flag (every region of a session shares it); nil without regions.
    public var fault: MappingFaultFlag? { regions.first?.fault }

    init(regions: [GuestRegionMapping], generation: UInt64, request: VhostUserRequest) throws(VhostUserError) {
        let table = MemoryTable(entries: regions.map(\.entry))
        if table.hasOverlaps {
            throw VhostUserError(request: request, reason: .memory("memory regions overlap in guest address space"))
        }
        if Self.userRangesOverlap(regions.map(\.region)) {
            throw VhostUserError(request: request, reason: .memory("memory regions overlap in user address space"))
        }
        self.regions = regions
        self.table = table
        self.generation = generation
    }

    static func userRangesOverlap(_ rs: [MemoryRegionPayload]) -> Bool {
        let sorted = rs.sorted { $0.userAddress < $1.userAddress }
        for i in sorted.indices.dropFirst() where sorted[i - 1].userAddress &+ sorted[i - 1].size > sorted[i].userAddress {
            return true
        }
        return false
    }

    /// Host pointer of `[userAddress, userAddress+length)`, all of it inside one region.
    public func translate(user address: UInt64, length: UInt64) -> UnsafeMutableRawPointer? {
        table.translate(user: address, length: length)
    }

    public func translate(guest address: UInt64, length: UInt64) -> UnsafeMutableRawPointer? {
        table.translate(guest: address, length: length)
    }
}

func hex(_ v: UInt64) -> String { String(v, radix: 16) }
