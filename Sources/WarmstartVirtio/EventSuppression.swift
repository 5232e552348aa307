import CWarmstartShim
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

/// Writes 1 to an eventfd (write(2) of a UInt64). Returns whether the signal was delivered.
///
/// The descriptor is the peer's (a vhost-user call fd): the session accepts only eventfds and
/// makes them non-blocking, so a counter the peer left at its maximum fails here with EAGAIN
/// instead of blocking the polling thread. The caller counts an undelivered signal and moves on.
@discardableResult
public func virtqSignal(_ fd: Int32) -> Bool {
    var one: UInt64 = 1
    while true {
        let r = withUnsafeBytes(of: &one) { write(fd, $0.baseAddress, 8) }
        if r == 8 { return true }
        if r < 0 && errno == EINTR { continue }
        return false
    }
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
                result = (ring.availFlags & SplitRing.availNoInterrupt) == 0
            }
            signalledUsed = new
        case .packed:
            let ring = packed.unsafelyUnwrapped
            let (offWrap, flags) = PackedRing.loadEvent(ring.driverEvent)
            let new = Int(lastUsedIndex)
            var old = Int(signalledUsed)
            if signalledUsed == lastUsedIndex && signalledUsedWrap == usedWrapCounter {
                result = false
            } else if flags == PackedRing.eventFlagsDisable {
                result = false
            } else if flags == PackedRing.eventFlagsDesc && options.eventIndex {
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
    /// and dropped: the polling thread never waits on the peer.
    @discardableResult
    public func signal(callFD: Int32) -> Bool {
        guard needsCall() else { return false }
        if !virtqSignal(callFD) { st.pointee.callsDropped &+= 1 }
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
                ring.usedFlags = enabled ? 0 : SplitRing.usedNoNotify
            }
        case .packed:
            let ring = packed.unsafelyUnwrapped
            if !enabled {
                PackedRing.storeEvent(ring.deviceEvent, offWrap: 0, flags: PackedRing.eventFlagsDisable)
            } else if options.eventIndex {
                armPackedKick(ring)
            } else {
                PackedRing.storeEvent(ring.deviceEvent, offWrap: 0, flags: PackedRing.eventFlagsEnable)
            }
        }
        ws_fence_seq_cst()
    }
}
