import WarmstartEngine
import WarmstartPools
import WarmstartSpec
import WarmstartVhostUser
import WarmstartVirtio

/// Why a started vring could not be turned into a queue, or moved.
public enum VhostQueueError: Error, CustomStringConvertible, Sendable {
    /// Vring `index`'s size or areas do not make a ring (the ring layer's error).
    case layout(index: Int, any Error)
    /// Vring `index` cannot start from, or move to, the position given.
    case position(index: Int, VirtqueueError)
    /// Hot upgrade: vring `index` was built, but no final position was handed over for it.
    case noFinalPosition(index: Int)
    /// Hot upgrade: the final positions handed over do not match the rings built.
    case positionCount(handedOver: Int, built: Int)

    public var description: String {
        switch self {
        case let .layout(i, e): return "vring \(i): \(e)"
        case let .position(i, e): return "vring \(i): \(e)"
        case let .noFinalPosition(i): return "vring \(i): no final position was handed over"
        case let .positionCount(handedOver, built): return "\(handedOver) final ring positions were handed over for \(built) built rings"
        }
    }
}

/// One vhost-user queue pair as the datapath drives it: the device side of the guest's TX ring
/// (vring 2q+1, dequeued into mbufs) and of its RX ring (vring 2q, mbufs enqueued into it).
///
/// Owned by one polling thread at a time (the Datapath's plan guarantees it). It holds both
/// `VringSetup`s, so the guest memory and the call eventfds it points into stay mapped and open
/// until the pair is dropped — which the driver does only after `Datapath.detach` returned.
public final class VhostQueuePair: BurstQueue {
    public let pairIndex: Int
    /// vring 2q: the guest receives (we enqueue).
    public let guestRX: VirtqueueDevice
    /// vring 2q+1: the guest transmits (we dequeue).
    public let guestTX: VirtqueueDevice
    /// Kept alive for the pointers and descriptors the devices use.
    public let rxSetup: VringSetup
    public let txSetup: VringSetup
    // -1: the front-end polls (NOFD), never signal.
    @usableFromInline let rxCall: Int32
    @usableFromInline let txCall: Int32

    /// Builds both devices, starting each ring from `rxState`/`txState` when given (a ring that was
    /// stopped and restarts keeps its own position), else from the setup's base.
    public init(rx: VringSetup, tx: VringSetup, burst: Int = 32,
                rxState: VirtqueuePosition? = nil, txState: VirtqueuePosition? = nil) throws(VhostQueueError) {
        precondition(rx.index % 2 == 0 && tx.index == rx.index + 1, "a queue pair is vrings 2q and 2q+1")
        pairIndex = rx.index / 2
        rxSetup = rx
        txSetup = tx
        guestRX = try Self.device(rx, burst: burst, state: rxState)
        guestTX = try Self.device(tx, burst: burst, state: txState)
        rxCall = rx.callFD ?? -1
        txCall = tx.callFD ?? -1
        // We poll: ask the guest not to kick us (saves it a syscall per burst).
        guestRX.setNotifications(enabled: false)
        guestTX.setNotifications(enabled: false)
    }

    static func device(_ s: VringSetup, burst: Int, state: VirtqueuePosition?) throws(VhostQueueError) -> VirtqueueDevice {
        let options = VirtqueueOptions(features: VirtioFeatures(rawValue: s.features), burstSize: burst)
        let start = state ?? s.base
        switch s.layout {
        case .split:
            let ring: SplitRing
            do { ring = try SplitRing(size: s.size, desc: s.descriptors, avail: s.driverArea, used: s.deviceArea) } catch {
                throw .layout(index: s.index, error)
            }
            return VirtqueueDevice(split: ring, memory: s.memory.table, options: options, state: start)
        case .packed:
            let ring: PackedRing
            do { ring = try PackedRing(size: s.size, desc: s.descriptors, driverEvent: s.driverArea, deviceEvent: s.deviceArea) } catch {
                throw .layout(index: s.index, error)
            }
            do { return try VirtqueueDevice(packed: ring, memory: s.memory.table, options: options, state: start) } catch {
                throw .position(index: s.index, error)
            }
        }
    }

    // MARK: BurstQueue (one call per burst; the per-packet work is in the Virtio layer)

    public func receiveBurst(into out: UnsafeMutablePointer<Mbuf>, max: Int, cache: MbufCache) -> Int {
        let n = guestTX.dequeueBurst(pool: cache, into: out, maxCount: max)
        // Returning TX buffers is a used-buffer notification too; the guest asks for it only
        // when it wants its TX ring reclaimed, so ask needsCall once per burst.
        if n > 0 && txCall >= 0 { guestTX.signal(callFD: txCall) }
        return n
    }

    public func transmitBurst(_ pkts: UnsafeMutablePointer<Mbuf>, count: Int, cache: MbufCache) -> Int {
        var done = 0
        // enqueueBurst handles at most one virtqueue burst; a datapath burst may be larger.
        while done < count {
            let n = guestRX.enqueueBurst(pool: cache, pkts + done, count: count - done)
            if n == 0 { break }
            done += n
        }
        if done > 0 {
            if rxCall >= 0 { guestRX.signal(callFD: rxCall) }
            // The queue owns what it took: the data is in guest memory now.
            for i in 0..<done { cache.free(pkts[i]) }
        }
        return done
    }

    /// Queue errors for the port's `errors` counter: bad chains, and used-buffer notifications the
    /// front-end's call descriptor would not take (counted there, so stats show a peer that
    /// stopped reading its eventfd).
    public var errorCount: UInt64 {
        let a = guestRX.counters, b = guestTX.counters
        return a.errors.reduce(0, &+) &+ b.errors.reduce(0, &+) &+ a.callsDropped &+ b.callsDropped
    }

    /// Used-buffer notifications dropped on both rings (the call descriptor did not take them).
    public var droppedCalls: UInt64 { guestRX.counters.callsDropped &+ guestTX.counters.callsDropped }

    /// The rings (vring indexes) whose call descriptor hung a write until the watchdog interrupted
    /// it; their calls are dropped from then on. Not yet reported by `takeNewlyStuckCallRings`.
    /// Control plane only.
    var reportedStuck: Set<Int> = []
    public func takeNewlyStuckCallRings() -> [Int] {
        var out: [Int] = []
        for (dev, index) in [(guestRX, rxSetup.index), (guestTX, txSetup.index)]
        where dev.callDescriptorStuck && !reportedStuck.contains(index) {
            reportedStuck.insert(index)
            out.append(index)
        }
        return out
    }

    /// Where each ring stands, as GET_VRING_BASE reports it. Only valid once no thread polls it.
    public func position(ofRing index: Int) -> VirtqueuePosition {
        index == rxSetup.index ? guestRX.state : guestTX.state
    }

    /// Moves ring `index` to `base` (hot upgrade: the pair was built before the previous owner
    /// paused). Only once no thread polls it.
    public func reposition(ring index: Int, to base: VirtqueuePosition) throws(VhostQueueError) {
        do { try (index == rxSetup.index ? guestRX : guestTX).reposition(to: base) } catch {
            throw .position(index: index, error)
        }
    }

    /// Why a ring stopped working, if the guest broke it.
    public var brokenReason: String? {
        if let r = guestRX.brokenReason { return "vring \(rxSetup.index): \(r)" }
        if let r = guestTX.brokenReason { return "vring \(txSetup.index): \(r)" }
        return nil
    }
}
