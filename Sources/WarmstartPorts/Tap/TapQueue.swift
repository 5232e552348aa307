import CWarmstartShim
import WarmstartEngine
import WarmstartPools
#if canImport(Glibc)
import Glibc
#endif

/// A TAP interface as a datapath queue. The Bus opened the fd with IFF_VNET_HDR and a 12-byte
/// virtio-net header (virtio 1.x layout), non-blocking: every frame read or written is that header
/// followed by the Ethernet frame, so checksum and GSO state travel with the packet exactly as they
/// do on a vhost-user port.
///
/// One read(2) or writev(2) per packet: that is what a TAP costs; it is the path to the host's
/// kernel stack, not a fast path.
public final class TapQueue: BurstQueue, @unchecked Sendable {
    public let fd: Int32
    public let name: String
    @usableFromInline let errors = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    /// iovecs for one writev: the header, then up to 63 segments.
    @usableFromInline let iov = UnsafeMutablePointer<iovec>.allocate(capacity: 64)
    @usableFromInline let header = UnsafeMutableRawPointer.allocate(byteCount: VirtioNetHeader.size, alignment: 8)

    /// `fd` stays the Bus's: the queue never closes it.
    public init(fd: Int32, name: String) {
        self.fd = fd
        self.name = name
        errors.initialize(to: 0)
    }

    deinit {
        errors.deallocate()
        iov.deallocate()
        header.deallocate()
    }

    public var errorCount: UInt64 { ws_load_relaxed_u64(errors) }

    /// Reads frames until the fd has none (EAGAIN) or `max` are in. The header lands in the
    /// mbuf's headroom just before the data, so one read fills both.
    public func receiveBurst(into out: UnsafeMutablePointer<Mbuf>, max: Int, cache: MbufCache) -> Int {
        var n = 0
        while n < max {
            guard let m = cache.alloc() else { break }
            let hdr = VirtioNetHeader.size
            guard m.headroom >= hdr else { cache.free(m); break }
            let start = m.data - hdr
            let room = hdr + m.tailroom
            guard room > hdr else { cache.free(m); _ = ws_fetch_add_u64(errors, 1); continue } // a rewritten header
            let got = read(fd, start, room)
            if got < 0 {
                cache.free(m)
                if errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR { _ = ws_fetch_add_u64(errors, 1) }
                break
            }
            // A frame that fills the whole buffer may have been cut short by it: never pass on a
            // truncated frame. A frame shorter than an Ethernet header is not a frame.
            if got >= room || got < hdr + 14 {
                cache.free(m)
                _ = ws_fetch_add_u64(errors, 1)
                continue
            }
            let vnet = VirtioNetHeader(loadingFrom: start)
            m.vnetHeader = vnet
            var flags: MbufOffload = [.vnetHeaderValid]
            if vnet.flags & VirtioNetHeader.flagNeedsCsum != 0 { flags.insert(.needsChecksum) }
            if vnet.flags & VirtioNetHeader.flagDataValid != 0 { flags.insert(.dataValid) }
            if vnet.gsoType & ~VirtioNetHeader.gsoECN != VirtioNetHeader.gsoNone { flags.insert(.gso) }
            m.offload = flags
            m.dataLength = UInt16(got - hdr)
            m.packetLength = UInt32(got - hdr)
            out[n] = m
            n += 1
        }
        return n
    }

    /// Writes each frame as header + segments in one writev; stops at the first that the kernel
    /// will not take now (EAGAIN), and frees what it sent.
    public func transmitBurst(_ pkts: UnsafeMutablePointer<Mbuf>, count: Int, cache: MbufCache) -> Int {
        var sent = 0
        while sent < count {
            let m = pkts[sent]
            var vnet = m.offload.contains(.vnetHeaderValid) ? m.vnetHeader : VirtioNetHeader()
            vnet.numBuffers = 0
            vnet.store(to: header)
            iov[0] = iovec(iov_base: header, iov_len: VirtioNetHeader.size)
            var parts = 1
            var seg: Mbuf? = m
            var total = VirtioNetHeader.size
            while let s = seg, parts < 64 {
                iov[parts] = iovec(iov_base: s.data, iov_len: Int(s.dataLength))
                total += Int(s.dataLength)
                parts += 1
                seg = cache.pool.nextSegment(of: s)
            }
            if seg != nil {
                // More segments than one writev takes: drop it rather than send half a frame.
                _ = ws_fetch_add_u64(errors, 1)
                cache.free(m)
                sent += 1
                continue
            }
            let w = writev(fd, iov, Int32(parts))
            if w < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS || errno == EINTR { break }
                _ = ws_fetch_add_u64(errors, 1)
            } else if w != total {
                _ = ws_fetch_add_u64(errors, 1)
            }
            cache.free(m)
            sent += 1
        }
        return sent
    }
}
