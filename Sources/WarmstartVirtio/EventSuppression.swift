import CWarmstartShim
import WarmstartSpec
#if canImport(Glibc)
import Glibc
#endif

// Notification suppression (§2.6.7 / §2.6.8 split, §2.7.10 packed, VIRTIO_F_RING_EVENT_IDX).

/// vring_need_event (§2.6.7.2): true when `newIndex` has moved past `event` since `oldIndex`,
/// all in free-running 16-bit arithmetic.
@inlinable
public func virtqNeedEvent(event: UInt16, new newIndex: UInt16, old oldIndex: UInt16) -> Bool {
    (newIndex &- event &- 1) < (newIndex &- oldIndex)
}

/// What became of one eventfd signal.
public enum EventFDSignalResult: Equatable, Sendable {
    case delivered
    /// Not taken (EAGAIN: the counter is full on a non-blocking descriptor; or another error).
    case dropped
    /// The peer, which shares the open file description, cleared O_NONBLOCK: found before the
    /// write (no wait at all), or the write slept on a full counter and the write watchdog
    /// interrupted it. The descriptor must not be written again (a write could sleep).
    case stuck
}

/// Writes 1 to an eventfd the peer also holds, never waiting on the peer for long.
///
/// The session accepts only eventfds and makes them non-blocking, so a full counter normally
/// fails with EAGAIN at once. The peer can make its copy blocking again: the shim checks the
/// description's flags before each write and refuses a blocking one (`.stuck`, no wait); a peer
/// that flips the flag between that check and the write has the sleeping write interrupted by the
/// watchdog after `WS_WRITE_GUARD_STUCK_NS` (`.stuck` again; the thread must be registered with
/// `ws_write_guard_register`, as every polling thread is). EINTR is not retried: only that
/// watchdog's signal interrupts a write to an eventfd here, and only one that slept.
@inlinable
public func eventFDSignal(_ fd: Int32) -> EventFDSignalResult {
    let r = ws_eventfd_signal(fd)
    if r == 0 { return .delivered }
    return r == -EINTR || r == WS_EVENTFD_MADE_BLOCKING ? .stuck : .dropped
}

/// Writes 1 to an eventfd. Returns whether the signal was delivered (see `eventFDSignal`).
@discardableResult
public func virtqSignal(_ fd: Int32) -> Bool {
    eventFDSignal(fd) == .delivered
}

extension VirtqueueDevice {
    /// After publishing used entries: whether the driver wants a used-buffer notification now.
    /// Split: used_event crossed (EVENT_IDX) or VIRTQ_AVAIL_F_NO_INTERRUPT clear. Packed: the
    /// driver event suppression structure says enable, or desc mode with the off/wrap passed.
    /// Each call covers the used entries published since the previous call.
    public func needsCall() -> Bool {
        // The used entries must be visible before the driver's suppression fields are read (the
        // driver does the mirror image: writes used_event, then re-reads used idx).
        ws_fence_seq_cst()
        let result: Bool
        switch layout {
        case .split:
            let ring = split.unsafelyUnwrapped
            let new = lastUsedIndex
            let old = signalledUsed
            if old == new {
                result = false
            } else if options.eventIndex {
                result = virtqNeedEvent(event: ring.usedEvent, new: new, old: old)
            } else {
                result = (ring.availFlags & SplitVirtqueue.availNoInterrupt) == 0
            }
            signalledUsed = new
        case .packed:
            let ring = packed.unsafelyUnwrapped
            let (offWrap, flags) = PackedRing.loadEvent(ring.driverEvent)
            let new = Int(lastUsedIndex)
            var old = Int(signalledUsed)
            if signalledUsed == lastUsedIndex && signalledUsedWrap == usedWrapCounter {
                result = false
            } else if flags == PackedVirtqueue.eventFlagsDisable {
                result = false
            } else if flags == PackedVirtqueue.eventFlagsDesc && options.eventIndex {
                // Bring old and the event offset into the used counter's current lap (§2.7.10).
                if new <= old { old -= size }
                var off = Int(offWrap & 0x7FFF)
                if (offWrap >> 15 != 0) != usedWrapCounter { off -= size }
                result = virtqNeedEvent(event: UInt16(truncatingIfNeeded: off),
                                        new: UInt16(truncatingIfNeeded: new),
                                        old: UInt16(truncatingIfNeeded: old))
            } else {
                result = true
            }
            signalledUsed = lastUsedIndex
            signalledUsedWrap = usedWrapCounter
        }
        if result { st.pointee.calls &+= 1 }
        return result
    }

    /// Signals `callFD` when `needsCall()` says so. Returns whether it signalled. A signal the
    /// descriptor would not take (EAGAIN: counter full; any error) is counted in `callsDropped`
    /// and dropped: the polling thread never waits on the peer. A write the watchdog had to
    /// interrupt marks the descriptor stuck: every later call to it is counted and dropped
    /// without a write, until the ring is rebuilt with another descriptor.
    @discardableResult
    public func signal(callFD: Int32) -> Bool {
        guard needsCall() else { return false }
        if st.pointee.callStuck {
            st.pointee.callsDropped &+= 1
            return true
        }
        switch eventFDSignal(callFD) {
        case .delivered: break
        case .dropped: st.pointee.callsDropped &+= 1
        case .stuck:
            st.pointee.callsDropped &+= 1
            st.pointee.callStuck = true
        }
        return true
    }

    /// Asks the driver for kicks (enabled) or not (while polling). Split: VIRTQ_USED_F_NO_NOTIFY,
    /// or with EVENT_IDX avail_event (left stale while disabled). Packed: the device event
    /// suppression structure (desc mode at the next avail slot with EVENT_IDX).
    /// After enabling, the caller must poll once more: buffers may have arrived before the write.
    public func setNotifications(enabled: Bool) {
        notificationsEnabled = enabled
        switch layout {
        case .split:
            let ring = split.unsafelyUnwrapped
            if options.eventIndex {
                if enabled { ring.availEvent = lastAvailIndex }
            } else {
                ring.usedFlags = enabled ? 0 : SplitVirtqueue.usedNoNotify
            }
        case .packed:
            let ring = packed.unsafelyUnwrapped
            if !enabled {
                PackedRing.storeEvent(ring.deviceEvent, offWrap: 0, flags: PackedVirtqueue.eventFlagsDisable)
            } else if options.eventIndex {
                armPackedKick(ring)
            } else {
                PackedRing.storeEvent(ring.deviceEvent, offWrap: 0, flags: PackedVirtqueue.eventFlagsEnable)
            }
        }
        ws_fence_seq_cst()
    }
}
