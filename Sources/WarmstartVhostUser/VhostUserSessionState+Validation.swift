// A handed-over session state comes from another process through a socket: it is checked field by
// field the way the vhost-user messages that built it were (SET_VRING_NUM, SET_VRING_ADDR,
// SET_MEM_TABLE, SET_INFLIGHT_FD, SET_CONFIG), before anything is taken, mapped or computed from it.
// (Ring positions — last avail / used index against the ring size — are checked where they are
// applied.)

import WarmstartSpec
import WarmstartVhostUserWire

extension VhostUserSessionState {
    /// Refuses a state that no sequence of valid vhost-user messages could have produced for a
    /// port with `configuration`, naming the field and the reason. Cheap: no descriptor is
    /// touched, nothing is mapped.
    public func validate(configuration: VhostUserBackendConfiguration) throws(VhostUserError) {
        func fail(_ why: String) -> VhostUserError { VhostUserError(request: nil, reason: .invalid("handoff: " + why)) }
        guard maxQueuePairs == configuration.maxQueuePairs else {
            throw fail("the session has \(maxQueuePairs) queue pairs, this port is configured for \(configuration.maxQueuePairs)")
        }
        let ringCount = 2 * configuration.maxQueuePairs
        guard vrings.count == ringCount else { throw fail("\(vrings.count) vrings for \(configuration.maxQueuePairs) queue pairs") }
        guard netConfig.count == VirtioNetConfig.size else { throw fail("config space is \(netConfig.count) bytes, not \(VirtioNetConfig.size)") }
        if let mac = rarpMAC, mac.count != 6 { throw fail("RARP MAC address is \(mac.count) bytes, not 6") }
        let packed = (ackedFeatures ?? 0) & VirtioFeatures.ringPacked.rawValue != 0
        // Every descriptor index at most once, and none negative.
        var indices = Set<Int>()
        func index(_ i: Int, _ what: String) throws(VhostUserError) {
            guard i >= 0 else { throw fail("\(what): descriptor index \(i) is negative") }
            guard indices.insert(i).inserted else { throw fail("\(what): descriptor index \(i) is used twice") }
        }
        if let memory {
            guard memory.count <= configuration.maxMemorySlots else {
                throw fail("\(memory.count) memory regions, at most \(configuration.maxMemorySlots)")
            }
            for (k, r) in memory.enumerated() {
                try index(r.fd, "memory region \(k)")
                guard r.size > 0 else { throw fail("memory region \(k) has size 0") }
                guard !r.guestAddress.addingReportingOverflow(r.size).overflow, !r.userAddress.addingReportingOverflow(r.size).overflow,
                      !r.mmapOffset.addingReportingOverflow(r.size).overflow else {
                    throw fail("memory region \(k): an address + size 0x\(hex(r.size)) overflows")
                }
            }
        }
        var seen = [Bool](repeating: false, count: ringCount)
        for v in vrings {
            guard v.index >= 0, v.index < ringCount else { throw fail("vring index \(v.index) is not in 0..<\(ringCount)") }
            guard !seen[v.index] else { throw fail("vring \(v.index) is described twice") }
            seen[v.index] = true
            if let n = v.size {
                // SET_VRING_NUM: 1...32768, a power of two on a split ring (a size of 0 trapped
                // in the size arithmetic before this check existed).
                guard n >= 1, n <= 32768 else { throw fail("vring \(v.index): size \(n) is not in 1...32768") }
                guard packed || n & (n - 1) == 0 else { throw fail("vring \(v.index): split ring size \(n) is not a power of two") }
            }
            let addresses = [v.descriptorAddress, v.availableAddress, v.usedAddress].compactMap { $0 }.count
            guard addresses == 0 || addresses == 3 else { throw fail("vring \(v.index): \(addresses) of its 3 ring addresses given") }
            // SET_VRING_ADDR flags: only VHOST_VRING_F_LOG (bit 0) is defined.
            guard v.addressFlags & ~1 == 0 else { throw fail("vring \(v.index): unknown address flags 0x\(hex(UInt64(v.addressFlags)))") }
            if v.started {
                guard v.size != nil, addresses == 3, memory != nil, ackedFeatures != nil else {
                    throw fail("vring \(v.index) is started but its size, addresses, memory or features are missing")
                }
            }
            for (slot, what) in [(v.kick, "kick"), (v.call, "call"), (v.err, "err")] {
                switch slot.kind {
                case .fd:
                    guard let i = slot.fd else { throw fail("vring \(v.index) \(what): an eventfd slot has no descriptor index") }
                    try index(i, "vring \(v.index) \(what)")
                case .unset, .polling:
                    guard slot.fd == nil else { throw fail("vring \(v.index) \(what): a \(slot.kind.rawValue) slot names a descriptor") }
                }
            }
        }
        if let inf = inflight {
            try index(inf.fd, "inflight buffer")
            guard inf.numQueues >= 1, Int(inf.numQueues) <= ringCount else {
                throw fail("inflight buffer for \(inf.numQueues) queues, this port has \(ringCount)")
            }
            guard inf.queueSize >= 1, inf.queueSize <= 32768 else { throw fail("inflight queue size \(inf.queueSize) is not in 1...32768") }
            guard !inf.mmapOffset.addingReportingOverflow(inf.mmapSize).overflow else { throw fail("inflight mmap offset + size overflows") }
        }
    }
}
