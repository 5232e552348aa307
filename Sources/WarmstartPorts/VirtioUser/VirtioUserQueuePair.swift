import CWarmstartShim
import WarmstartEngine
import WarmstartMemory
import WarmstartPools
import WarmstartVirtio
import WarmstartVirtioDriver
#if canImport(Glibc)
import Glibc
#endif

/// One queue pair of a virtio-user port: Warmstart is the *driver* (the guest's side) of a
/// vhost-user back-end. Vring 2i is the receive queue (the device writes into our buffers),
/// vring 2i+1 the transmit queue (virtio 1.2 §5.1.2).
///
/// Zero copy both ways: the back-end maps our regions (SET_MEM_TABLE), so descriptors point
/// straight at mbuf data in the pool region.
/// - TX: the virtio-net header (§5.1.6) is written into the mbuf's headroom just before the data,
///   so header + first segment is one descriptor; further segments are chained descriptors. The
///   mbuf is freed when the device returns the chain (reaped at the next transmit burst).
/// - RX: fresh mbufs are posted as device-writable buffers starting `hs` bytes before their data,
///   so the header lands in the headroom and the frame at `data`. With MRG_RXBUF a frame may use
///   several buffers; `num_buffers` in the first one's header says how many (§5.1.6.4), and they
///   become a chained mbuf. Refill happens in bursts, once per receive call.
/// - Notifications: we poll, so used-buffer notifications are switched off (§2.6.7 / §2.7.10) and
///   the kick eventfd is written only when the device's suppression state asks (§2.6.10.1,
///   §2.7.10.1) — a polling back-end such as DPDK's asks for none.
///
/// Per burst: one reap, one publish, at most one kick; per packet only raw memory (no ARC, no
/// allocation, no existential calls). One polling thread at a time, as `BurstQueue` requires.
public final class VirtioUserQueuePair: BurstQueue {
    public let index: Int
    public let rx: DriverQueue
    public let tx: DriverQueue
    /// The eventfds we gave the back-end (owned; closed in deinit).
    public let rxKickFD: Int32, txKickFD: Int32, rxCallFD: Int32, txCallFD: Int32
    let pool: MbufPool
    let headerSize: Int
    let mergeable: Bool
    /// Guest-address translation for the pool's region (all our mbufs live there).
    let window: GuestWindow
    /// Bytes of one posted RX buffer: header + data room.
    let rxBufferLength: UInt32
    let rxBufferOffset: Int
    /// Mbufs per posted receive buffer (> 1: chains without MRG_RXBUF, VirtioUserBigPackets.swift).
    public let rxSegments: Int
    /// Set when the back-end (or anyone we lent the fds to) shrank a file behind the memory we
    /// share with it: the port's `VirtioUserPort.memoryFault`, nil when all of it is sealed.
    public let memoryFault: MappingFaultFlag?

    struct State {
        var kicks: UInt64 = 0
        /// Kicks the back-end's kick descriptor did not take (full counter), counted in `errors`
        /// too; and whether a kick write hung until the watchdog interrupted it (the peer shares
        /// the eventfd, made it blocking and filled it): kicks are then dropped without a write.
        var kicksDropped: UInt64 = 0
        var kickStuck: Bool = false
        // A mergeable frame whose later buffers have not been used yet.
        var pendingHead: UnsafeMutableRawPointer? = nil
        var pendingTail: UnsafeMutableRawPointer? = nil
        var pendingLeft = 0
    }
    let st: UnsafeMutablePointer<State>
    let completions: UnsafeMutablePointer<DriverCompletion>
    /// Tokens of reaped chains (both rings): mbufs' header addresses, i.e. `Mbuf` values; and
    /// the used lengths of reaped receive buffers.
    let reaped: UnsafeMutableRawPointer
    let usedLengths: UnsafeMutablePointer<UInt32>
    let fresh: UnsafeMutablePointer<Mbuf>
    let scratch: UnsafeMutablePointer<DriverBuffer>
    static let scratchCapacity = 64
    static let refillBatch = 32

    /// Errors, which the stats thread reads while the polling thread counts: a word of its own
    /// (not a field of `State`, whose every field the polling thread modifies), relaxed atomic on
    /// both sides (single writer: a load and a store, no locked instruction).
    let errorWord: UnsafeMutablePointer<UInt64>
    @inline(__always) func countErrors(_ n: UInt64 = 1) { ws_store_relaxed_u64(errorWord, ws_load_relaxed_u64(errorWord) &+ n) }
    public var errorCount: UInt64 { ws_load_relaxed_u64(errorWord) }
    public var kickCount: UInt64 { st.pointee.kicks }
    /// Kicks not delivered (full counter, or the descriptor hung a write: see `kick`).
    public var droppedKicks: UInt64 { st.pointee.kicksDropped }
    /// Whether a kick write hung and was interrupted by the write watchdog.
    public var kickDescriptorStuck: Bool { st.pointee.kickStuck }

    /// Takes ownership of the four eventfds. `rxSegments`: mbufs per receive buffer (1 ... 63).
    public init(index: Int, rx: DriverQueue, tx: DriverQueue, pool: MbufPool,
                rxKickFD: Int32, txKickFD: Int32, rxCallFD: Int32, txCallFD: Int32, rxSegments: Int = 1,
                memoryFault: MappingFaultFlag? = nil) {
        precondition(rxSegments >= 1 && rxSegments < Self.scratchCapacity, "1 to \(Self.scratchCapacity - 1) mbufs per receive buffer")
        self.rxSegments = rxSegments
        self.memoryFault = memoryFault
        self.index = index
        self.rx = rx
        self.tx = tx
        self.pool = pool
        self.rxKickFD = rxKickFD; self.txKickFD = txKickFD
        self.rxCallFD = rxCallFD; self.txCallFD = txCallFD
        headerSize = rx.options.netHeaderSize
        mergeable = rx.options.mergeableRxBuffers
        window = GuestWindow(host: pool.region.base, guest: pool.region.ioAddress, size: pool.region.size)
        precondition(pool.config.headroom >= headerSize, "mbuf headroom must hold the virtio-net header")
        rxBufferOffset = MbufLayout.headerSize + pool.config.headroom - headerSize
        rxBufferLength = UInt32(pool.config.dataRoom + headerSize)
        st = .allocate(capacity: 1)
        st.initialize(to: State())
        errorWord = .allocate(capacity: 1)
        errorWord.initialize(to: 0)
        let cap = max(rx.size, tx.size)
        completions = .allocate(capacity: cap)
        reaped = .allocate(byteCount: 8 * cap, alignment: 8)
        usedLengths = .allocate(capacity: rx.size)
        fresh = .allocate(capacity: Swift.max(Self.refillBatch, rxSegments))
        scratch = .allocate(capacity: Self.scratchCapacity)
        rx.disableCalls()
        tx.disableCalls()
    }

    deinit {
        st.deallocate(); errorWord.deallocate(); completions.deallocate(); reaped.deallocate(); usedLengths.deallocate(); fresh.deallocate(); scratch.deallocate()
        for fd in [rxKickFD, txKickFD, rxCallFD, txCallFD] where fd >= 0 { close(fd) }
    }

    @inline(__always)
    func guest(_ p: UnsafeMutableRawPointer) -> UInt64 {
        UInt64(UInt(bitPattern: p) &- window.host) &+ window.guest
    }

    /// Writes the back-end's kick eventfd. The back-end holds the same open file description, so
    /// it can make it blocking and fill it: the polling thread's write watchdog interrupts such a
    /// write (`eventFDSignal`), after which this pair's kicks are counted and dropped unwritten.
    @inline(__always)
    func kick(_ fd: Int32) {
        st.pointee.kicks &+= 1
        if st.pointee.kickStuck {
            st.pointee.kicksDropped &+= 1
            countErrors()
            return
        }
        switch eventFDSignal(fd) {
        case .delivered: break
        case .dropped:
            st.pointee.kicksDropped &+= 1
            countErrors()
        case .stuck:
            st.pointee.kicksDropped &+= 1
            countErrors()
            st.pointee.kickStuck = true
        }
    }

    // MARK: receive (vring 2i)

    /// Fills the receive ring from `source` in bursts of 32 (initial fill and each receive call):
    /// each fresh mbuf's room becomes one device-writable buffer, a burst in one pass.
    @inline(__always)
    func refill<S: MbufSource>(_ source: S) {
        if rxSegments > 1 { return refillChains(source) }
        var posted = false
        while rx.numFree >= Self.refillBatch {
            guard source.allocBulk(fresh, count: Self.refillBatch) else { break }
            let k = rx.addRXBurst(fresh, count: Self.refillBatch, offset: rxBufferOffset, length: rxBufferLength,
                                  window: window)
            posted = posted || k > 0
            if k < Self.refillBatch {
                // Not reached: the room was there and our mbufs lie in the pool's window.
                for i in k..<Self.refillBatch { source.free(fresh[i]) }
                break
            }
        }
        if posted {
            rx.publish()
            if rx.needsKick() { kick(rxKickFD) }
        }
    }

    /// Posts receive buffers until the ring is full (after set-up).
    public func fillReceiveRing() { refill(pool) }

    public func receiveBurst(into out: UnsafeMutablePointer<Mbuf>, max: Int, cache: MbufCache) -> Int {
        if rxSegments > 1 { return receiveChains(into: out, max: max, cache: cache) }
        let tokens = reaped.assumingMemoryBound(to: UInt64.self)
        let (n, rejected) = rx.reapTokens(tokens, lengths: usedLengths, max: Swift.min(max, rx.size))
        if rejected > 0 { countErrors(UInt64(rejected)) }
        var got = 0
        let hs = headerSize
        // Start pulling every received buffer's virtio-net header (the device just wrote it on
        // its core) before the loop below needs each one's num_buffers.
        if mergeable {
            for k in 0..<n { ws_prefetch(UnsafeRawPointer(bitPattern: UInt(tokens[k]) &+ UInt(rxBufferOffset))) }
        }
        for k in 0..<n {
            // Tokens are the header addresses of mbufs we posted (never 0).
            let h = UnsafeMutableRawPointer(bitPattern: UInt(tokens[k])).unsafelyUnwrapped
            let m = Mbuf(header: h)
            let len = Int(usedLengths[k])
            if let headPtr = st.pointee.pendingHead {
                // A further buffer of a mergeable frame: pure data from the buffer's start.
                let head = Mbuf(header: headPtr)
                guard len <= Int(rxBufferLength) else { countErrors(); cache.free(m); continue }
                m.dataOffset = UInt16(rxBufferOffset - MbufLayout.headerSize)
                m.dataLength = UInt16(len)
                m.packetLength = UInt32(len)
                Mbuf(header: st.pointee.pendingTail!).nextIndex = m.index
                head.segmentCount &+= 1
                head.packetLength &+= UInt32(len)
                st.pointee.pendingTail = h
                st.pointee.pendingLeft -= 1
                if st.pointee.pendingLeft == 0 {
                    st.pointee.pendingHead = nil
                    out[got] = head
                    got += 1
                }
                continue
            }
            guard len >= hs, len <= Int(rxBufferLength) else {
                countErrors()
                cache.free(m)
                continue
            }
            let dl = len - hs
            m.dataLength = UInt16(dl)
            m.packetLength = UInt32(dl)
            let buffers = mergeable ? Int((m.data - hs).load(fromByteOffset: 10, as: UInt16.self).littleEndian) : 1
            if buffers > 1 {
                st.pointee.pendingHead = h
                st.pointee.pendingTail = h
                st.pointee.pendingLeft = buffers - 1
            } else {
                out[got] = m
                got += 1
            }
        }
        refill(cache)
        return got
    }

    // MARK: transmit (vring 2i+1)

    /// Frees what the device has finished with: one pass over the used entries, then one bulk
    /// free of the head mbufs (their tokens).
    @inline(__always)
    func reapTX(_ cache: MbufCache) {
        let tokens = reaped.assumingMemoryBound(to: UInt64.self)
        let (n, rejected) = tx.reapTokens(tokens, max: tx.size)
        if rejected > 0 { countErrors(UInt64(rejected)) }
        if n > 0 {
            tokens.withMemoryRebound(to: Mbuf.self, capacity: n) { cache.freeBulk($0, count: n) }
        }
    }

    public func transmitBurst(_ pkts: UnsafeMutablePointer<Mbuf>, count: Int, cache: MbufCache) -> Int {
        // Reap only when short of descriptors (DPDK's tx_free_thresh): reading the used index on
        // every burst pulls a cache line the device is writing on the other core.
        if tx.numFree < Swift.max(count, Self.refillBatch) || count == 0 { reapTX(cache) }
        var sent = 0
        while true {
            // Single-segment packets in one pass; the packet it stops at goes the general way.
            sent += tx.addTXBurst(pkts + sent, count: count - sent, window: window)
            guard sent < count, addGeneral(pkts[sent]) else { break }
            sent += 1
        }
        if sent > 0 {
            tx.publish()
            if tx.needsKick() { kick(txKickFD) }
        }
        return sent
    }

    /// One packet the burst path did not take: a chain (header + first segment in one
    /// descriptor, one more per segment). False when it cannot go now (no room, headroom
    /// shorter than the header) or at all (memory outside the pool: counted as an error).
    func addGeneral(_ m: Mbuf) -> Bool {
        let hs = headerSize
        guard Int(m.segmentCount) <= tx.numFree, m.headroom >= hs else { return false }
        let start = m.data - hs
        let firstLen = hs + Int(m.dataLength)
        guard let first = window.guestAddress(of: start, length: firstLen) else { countErrors(); return false }
        scratch[0] = DriverBuffer(addr: first, len: UInt32(firstLen), writable: false)
        var n = 1
        var s = m
        while s.nextIndex != MbufLayout.noNext {
            guard let next = pool.nextSegment(of: s), n < Self.scratchCapacity,
                  let addr = window.guestAddress(of: next.data, length: Int(next.dataLength)) else {
                countErrors()
                return false
            }
            s = next
            scratch[n] = DriverBuffer(addr: addr, len: UInt32(s.dataLength), writable: false)
            n += 1
        }
        guard n <= tx.numFree else { return false }
        DriverQueue.storeTXHeader(m, at: start, headerSize: hs)
        return tx.add(scratch, count: n, token: UInt64(UInt(bitPattern: m.header))) != nil
    }

    // MARK: teardown

    /// After the back-end is gone (or has stopped the rings): every buffer still posted or in
    /// flight goes back to the pool, including a half-received mergeable frame.
    public func reclaim() {
        rx.reclaimInFlight { t in pool.free(Mbuf(header: UnsafeMutableRawPointer(bitPattern: UInt(t))!)) }
        tx.reclaimInFlight { t in pool.free(Mbuf(header: UnsafeMutableRawPointer(bitPattern: UInt(t))!)) }
        if let h = st.pointee.pendingHead { pool.free(Mbuf(header: h)) }
        st.pointee.pendingHead = nil
        st.pointee.pendingLeft = 0
    }
}
