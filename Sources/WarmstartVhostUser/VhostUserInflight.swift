import CWarmstartShim
import WarmstartMemory
import WarmstartSpec
#if canImport(Glibc)
import Glibc
import WarmstartVhostUserWire
#endif

/// The inflight I/O tracking buffer (spec "Inflight I/O tracking", GET_INFLIGHT_FD /
/// SET_INFLIGHT_FD): one region per virtqueue, back to back, shared with the front-end so that a
/// restarted back-end can resubmit what was in flight. Created zeroed (version 0 = "uninitialized
/// buffer"); the ring layer initialises and maintains each queue's region.
///
/// Per-queue region size, each rounded up to 64 bytes (the alignment QEMU and DPDK use):
/// - split:  QueueRegionSplit header 16 B (features u64, version, desc_num, last_batch_head,
///           used_idx u16) + queue_size × DescStateSplit 16 B;
/// - packed: QueueRegionPacked header 29 B (features u64, six u16, two u8, 7 B padding) +
///           queue_size × DescStatePacked 32 B.
public final class VhostUserInflightRegion: @unchecked Sendable {
    public static let alignment = 64
    public let fd: Int32
    public let layout: VirtqueueLayout
    public let numQueues: Int
    public let queueSize: Int
    public let queueRegionSize: Int
    public let mmapOffset: UInt64
    public let mmapSize: UInt64
    let mapBase: UnsafeMutableRawPointer
    let mapLength: Int
    /// Registered with the SIGBUS guard from mmap to munmap: the front-end holds the descriptor
    /// and could shrink the file (ours from GET_INFLIGHT_FD is sealed against that).
    let guarded: MappingFaultGuard

    public static func queueRegionSize(queueSize: Int, layout: VirtqueueLayout) -> Int {
        let raw = layout == .split ? 16 + 16 * queueSize : 29 + 32 * queueSize
        return (raw + alignment - 1) / alignment * alignment
    }

    /// GET_INFLIGHT_FD: a new zeroed memfd for `numQueues` queues of `queueSize` descriptors.
    static func create(numQueues: Int, queueSize: Int, layout: VirtqueueLayout,
                       fault: MappingFaultFlag) throws(VhostUserError) -> VhostUserInflightRegion {
        let size = numQueues * queueRegionSize(queueSize: queueSize, layout: layout)
        let fd = ws_memfd_create("warmstart:vhost-inflight", WS_MFD_CLOEXEC | WS_MFD_ALLOW_SEALING)
        guard fd >= 0 else {
            throw VhostUserError(request: .getInflightFD, reason: .memory("memfd_create for the inflight buffer failed: errno \(errno)"))
        }
        guard ftruncate(fd, off_t(size)) == 0 else {
            let e = errno
            closeFD(fd)
            throw VhostUserError(request: .getInflightFD, reason: .memory("ftruncate of the inflight buffer to \(size) bytes failed: errno \(e)"))
        }
        // The front-end gets this descriptor: it must not be able to shrink the file under us.
        let sealed = ws_seal_size(fd)
        guard sealed == 0 else {
            closeFD(fd)
            throw VhostUserError(request: .getInflightFD, reason: .memory("sealing the inflight buffer's size failed: errno \(-sealed)"))
        }
        let payload = InflightPayload(mmapSize: UInt64(size), mmapOffset: 0, numQueues: UInt16(numQueues), queueSize: UInt16(queueSize))
        return try VhostUserInflightRegion(fd: fd, payload: payload, layout: layout, request: .getInflightFD, fault: fault)
    }

    /// Maps `payload.mmapSize` bytes of `fd` at `payload.mmapOffset` (SET_INFLIGHT_FD, or after
    /// create). Takes ownership of `fd`; checks sizes with overflow-safe arithmetic.
    init(fd: Int32, payload p: InflightPayload, layout: VirtqueueLayout, request: VhostUserRequest,
         fault: MappingFaultFlag) throws(VhostUserError) {
        func fail(_ why: String) -> VhostUserError {
            closeFD(fd)
            return VhostUserError(request: request, reason: .memory(why))
        }
        let perQueue = Self.queueRegionSize(queueSize: Int(p.queueSize), layout: layout)
        let needed = UInt64(p.numQueues) * UInt64(perQueue)
        guard p.numQueues >= 1, p.queueSize >= 1, p.queueSize <= 32768 else {
            throw fail("inflight buffer for \(p.numQueues) queues of \(p.queueSize) descriptors is not valid")
        }
        guard p.mmapSize >= needed else {
            throw fail("inflight buffer is \(p.mmapSize) bytes, \(needed) needed for \(p.numQueues) \(layout) queues of \(p.queueSize)")
        }
        let (end, o) = p.mmapOffset.addingReportingOverflow(p.mmapSize)
        guard !o, end <= UInt64(Int.max / 2) else { throw fail("inflight mmap offset + size overflows") }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw fail("fstat of the inflight fd failed: errno \(errno)") }
        guard UInt64(max(0, Int(st.st_size))) >= end else {
            throw fail("inflight buffer needs 0x\(hex(end)) bytes of its file but the file has 0x\(hex(UInt64(max(0, Int(st.st_size)))))")
        }
        // Map from 0 (page-aligned file offset) through the end, as for memory regions.
        let length = Int(end)
        let ptr = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let ptr, ptr != MAP_FAILED else { throw fail("mmap of the inflight buffer failed: errno \(errno)") }
        do {
            // st_blksize: hugetlbfs reports its page size there, and the kernel rounds the
            // mapping up to it.
            guarded = try MappingFaultGuard(base: ptr, length: length, pageSize: max(Int(st.st_blksize), Int(sysconf(Int32(_SC_PAGESIZE)))),
                                            fd: fd, label: "inflight buffer", flag: fault)
        } catch {
            munmap(ptr, length)
            throw fail("\(error)")
        }
        self.fd = fd
        self.layout = layout
        self.numQueues = Int(p.numQueues)
        self.queueSize = Int(p.queueSize)
        self.queueRegionSize = perQueue
        self.mmapOffset = p.mmapOffset
        self.mmapSize = p.mmapSize
        self.mapBase = ptr
        self.mapLength = length
    }

    deinit {
        guarded.unregister()
        munmap(mapBase, mapLength)
        closeFD(fd)
    }

    public var payload: InflightPayload {
        InflightPayload(mmapSize: mmapSize, mmapOffset: mmapOffset, numQueues: UInt16(numQueues), queueSize: UInt16(queueSize))
    }

    /// The region of queue `index`, or nil when the buffer has no such queue.
    public func queueRegion(_ index: Int) -> UnsafeMutableRawPointer? {
        guard index >= 0, index < numQueues else { return nil }
        return mapBase + Int(mmapOffset) + index * queueRegionSize
    }
}
