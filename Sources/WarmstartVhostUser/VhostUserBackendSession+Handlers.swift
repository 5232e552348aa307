// One handler per front-end request, each citing what the spec says it must do. A handler returns
// the explicit reply payload (for requests that have one) or nil, and throws on refusal. It takes
// the descriptors it keeps out of `fds`; whatever is left there is closed by the caller.

import WarmstartSpec
import WarmstartVhostUserWire

extension VhostUserBackendSession {
    func dispatch(_ request: VhostUserRequest, _ payload: VhostUserPayload, _ fds: inout [Int32],
                  _ events: inout [VhostUserEvent]) throws(VhostUserError) -> VhostUserPayload? {
        func fail(_ reason: VhostUserError.Reason) -> VhostUserError { VhostUserError(request: request, reason: reason) }
        func requireProtocol(_ f: VhostUserProtocolFeature) throws(VhostUserError) {
            guard protocolAcked(f) else { throw fail(.notNegotiated("VHOST_USER_PROTOCOL_F_\(f)")) }
        }

        switch (request, payload) {
        case (.getFeatures, _):
            return .u64(configuration.offeredFeatures)

        case let (.setFeatures, .u64(v)):
            let unoffered = v & ~configuration.offeredFeatures
            guard unoffered == 0 else {
                throw fail(.invalid("acks features that were not offered: \(VirtioFeatures.names(unoffered).joined(separator: ", "))"))
            }
            if vrings.contains(where: \.started), let old = ackedFeatures,
               (old ^ v) & VirtioFeatures.ringPacked.rawValue != 0 {
                throw fail(.invalid("cannot switch between split and packed rings while rings are started"))
            }
            ackedFeatures = v
            events.append(.featuresAcked(v))
            // "If VHOST_USER_F_PROTOCOL_FEATURES has not been negotiated, the ring starts directly
            // in the enabled state."
            if v & VirtioFeatures.protocolFeatures.rawValue == 0 {
                for i in vrings.indices { vrings[i].enabled = true }
            }
            try tryStartAll(&events, request: request)
            return nil

        case (.setOwner, _):
            ownerSet = true
            events.append(.ownerSet)
            return nil

        case (.resetOwner, _):
            // Deprecated; the spec recommends ignoring it or disabling all rings. We stop them.
            for i in vrings.indices {
                stop(i, &events)
                vrings[i].enabled = ackedFeatures.map { $0 & VirtioFeatures.protocolFeatures.rawValue == 0 } ?? false
            }
            return nil

        case let (.setMemTable, .memoryTable(regions)):
            try checkMemoryLimit(regions, request: request)   // before any mapping; fds closed by the caller
            let taken = fds
            fds = []
            var mapped: [GuestRegionMapping] = []
            for (k, region) in regions.enumerated() {
                do {
                    mapped.append(try GuestRegionMapping(region: region, fd: taken[k], request: request, fault: memoryFault))
                } catch {
                    for fd in taken[(k + 1)...] { closeFD(fd) }
                    throw error   // `mapped` is released here: its mappings are unmapped, fds closed
                }
            }
            try replaceMemory(mapped, &events, request: request)
            return nil

        case (.setLogBase, _), (.setLogFD, _):
            throw fail(.notNegotiated("dirty logging (VHOST_USER_PROTOCOL_F_LOG_SHMFD, VHOST_F_LOG_ALL are not offered)"))

        case let (.setVringNum, .vringState(s)):
            let i = Int(s.index)
            guard !vrings[i].started else { throw fail(.ring(index: i, "cannot resize a started ring")) }
            // virtio 1.2: queue size ≤ 32768; split rings need a power of two (checked again at start,
            // when the layout is certain).
            guard s.num >= 1, s.num <= 32768 else { throw fail(.ring(index: i, "size \(s.num) is not in 1...32768")) }
            if ackedFeatures != nil, layout == .split, s.num & (s.num - 1) != 0 {
                throw fail(.ring(index: i, "split ring size \(s.num) is not a power of two"))
            }
            // A base already set must still fit the new size (packed: slots < size).
            if ackedFeatures != nil, let raw = vrings[i].baseNum {
                _ = try startPosition(i, raw: raw, size: s.num, request: request)
            }
            vrings[i].num = s.num
            try tryStart(i, &events, request: request)
            return nil

        case let (.setVringAddr, .vringAddress(a)):
            let i = Int(a.index)
            if a.flags & VringAddressPayload.flagLog != 0 {
                throw fail(.notNegotiated("VHOST_VRING_F_LOG (dirty logging)"))
            }
            if a.flags != 0 { throw fail(.reservedBits("vring address flags", UInt64(a.flags))) }
            vrings[i].address = a
            if vrings[i].started {
                try refresh(i, &events, request: request)
            } else {
                try tryStart(i, &events, request: request)
            }
            return nil

        case let (.setVringBase, .vringState(s)):
            let i = Int(s.index)
            guard !vrings[i].started else { throw fail(.ring(index: i, "cannot set the base of a started ring")) }
            // Checked now when the layout is known (against the size too, when set), and again
            // when the ring starts (makeSetup), so a position outside the ring is never used.
            if ackedFeatures != nil {
                _ = try startPosition(i, raw: s.num, size: vrings[i].num, request: request)
            }
            vrings[i].baseNum = s.num
            return nil

        case let (.getVringBase, .vringState(s)):
            // "stop ring upon receiving VHOST_USER_GET_VRING_BASE"; the kick descriptor goes with
            // it: a restarted ring is kicked again (SET_VRING_KICK) before it runs.
            let i = Int(s.index)
            let num: UInt32
            if let base = stop(i, &events) {
                num = base.encode(layout: layout)
                vrings[i].kick = .unset
            } else {
                num = vrings[i].baseNum ?? vrings[i].base.encode(layout: layout)
            }
            return .vringState(VringStatePayload(index: s.index, num: num))

        case let (.setVringKick, .u64(v)), let (.setVringCall, .u64(v)), let (.setVringErr, .u64(v)):
            let i = Int(v & VringFilePayload.indexMask)
            if v & VringFilePayload.noFDFlag == 0, let fd = fds.first, let why = eventFDProblem(fd) {
                let what = request == .setVringKick ? "kick" : request == .setVringCall ? "call" : "err"
                throw fail(.ring(index: i, "\(what) descriptor \(why)"))   // left in `fds`: closed by the caller
            }
            let slot: EventFDSlot = v & VringFilePayload.noFDFlag != 0 ? .polling : .fd(VhostUserEventFD(fds.removeFirst()))
            switch request {
            // The previous descriptor is released here (closed once no VringSetup holds it).
            case .setVringKick: vrings[i].kick = slot
            case .setVringCall: vrings[i].call = slot
            default: vrings[i].err = slot
            }
            if vrings[i].started {
                try refresh(i, &events, request: request)
            } else {
                try tryStart(i, &events, request: request)
            }
            return nil

        case (.getProtocolFeatures, _):
            guard configuration.offeredFeatures & VirtioFeatures.protocolFeatures.rawValue != 0 else {
                throw fail(.notNegotiated("VHOST_USER_F_PROTOCOL_FEATURES (masked off on this port)"))
            }
            return .u64(configuration.protocolFeatures)

        case let (.setProtocolFeatures, .u64(v)):
            let unoffered = v & ~configuration.protocolFeatures
            guard unoffered == 0 else {
                throw fail(.invalid("acks protocol features that were not offered (0x\(hex(unoffered)))"))
            }
            ackedProtocolFeatures = v
            events.append(.protocolFeaturesAcked(v))
            return nil

        case (.getQueueNum, _):
            // Queue pairs, as DPDK's vhost library and QEMU's vhost-user-net read it.
            return .u64(UInt64(configuration.maxQueuePairs))

        case let (.setVringEnable, .vringState(s)):
            let i = Int(s.index)
            guard s.num <= 1 else { throw fail(.ring(index: i, "enable value \(s.num) is neither 0 nor 1")) }
            vrings[i].enabled = s.num == 1
            events.append(.ringEnabled(index: i, enabled: s.num == 1))
            if vrings[i].started {
                setups[i]?.enabled = s.num == 1
            } else {
                try tryStart(i, &events, request: request)
            }
            return nil

        case let (.sendRARP, .u64(v)):
            try requireProtocol(.rarp)
            // "The first 6 bytes of the payload contain the mac address of the guest."
            let mac = (0..<6).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) }
            rarpMAC = mac
            events.append(.rarpRequested(mac: mac))
            return nil

        case let (.netSetMTU, .u64(v)):
            try requireProtocol(.netMTU)
            // virtio 1.2 §5.1.4.1: mtu ≥ 68; it is a 16-bit field.
            guard v >= 68, v <= 65535 else { throw fail(.invalid("MTU \(v) is not in 68...65535")) }
            netConfig.mtu = UInt16(v)
            events.append(.mtuChanged(UInt16(v)))
            return nil

        case (.setBackendReqFD, _):
            throw fail(.notNegotiated("VHOST_USER_PROTOCOL_F_BACKEND_REQ"))

        case let (.getConfig, .config(c)):
            try requireProtocol(.config)
            guard let bytes = netConfig.read(offset: c.offset, size: c.size) else {
                throw fail(.invalid("config access [\(c.offset), +\(c.size)) is outside the \(VirtioNetConfig.size)-byte virtio-net config space"))
            }
            return .config(ConfigPayload(offset: c.offset, size: c.size, flags: c.flags, bytes: bytes))

        case let (.setConfig, .config(c)):
            try requireProtocol(.config)
            guard c.flags <= ConfigPayload.flagMigration else { throw fail(.reservedBits("config flags", UInt64(c.flags))) }
            guard VirtioNetConfig.checkRange(offset: c.offset, size: c.size) else {
                throw fail(.invalid("config access [\(c.offset), +\(c.size)) is outside the \(VirtioNetConfig.size)-byte virtio-net config space"))
            }
            guard netConfig.write(offset: c.offset, bytes: c.bytes, migration: c.flags == ConfigPayload.flagMigration) else {
                throw fail(.invalid("config bytes [\(c.offset), +\(c.size)) are read-only for the driver"))
            }
            events.append(.configChanged(netConfig))
            return nil

        case let (.getInflightFD, .inflight(p)):
            // The front-end says how many queues of which size; we create a zeroed buffer of the
            // spec's layout, keep it, and send its descriptor with the sizes filled in.
            try requireProtocol(.inflightSHMFD)
            guard p.numQueues >= 1, Int(p.numQueues) <= queueCount else {
                throw fail(.queueIndex(UInt64(p.numQueues), queues: queueCount))
            }
            guard p.queueSize >= 1, p.queueSize <= 32768 else { throw fail(.invalid("queue size \(p.queueSize) is not in 1...32768")) }
            let region = try VhostUserInflightRegion.create(numQueues: Int(p.numQueues), queueSize: Int(p.queueSize), layout: layout, fault: memoryFault)
            inflight = region
            replyFDs = [region.fd]
            return .inflight(region.payload)

        case let (.setInflightFD, .inflight(p)):
            try requireProtocol(.inflightSHMFD)
            guard Int(p.numQueues) <= queueCount else { throw fail(.queueIndex(UInt64(p.numQueues), queues: queueCount)) }
            inflight = try VhostUserInflightRegion(fd: fds.removeFirst(), payload: p, layout: layout, request: request, fault: memoryFault)
            return nil

        case (.resetDevice, _):
            try requireProtocol(.resetDevice)
            resetDevice(&events)
            return nil

        case (.getMaxMemSlots, _):
            return .u64(UInt64(configuration.maxMemorySlots))

        case let (.addMemReg, .memoryRegion(region)):
            try requireProtocol(.configureMemSlots)
            let current = memory?.regions ?? []
            guard current.count < configuration.maxMemorySlots else {
                throw fail(.tooManyRegions(current.count + 1, max: configuration.maxMemorySlots))
            }
            try checkMemoryLimit(current.map(\.region) + [region], request: request)
            let fd = fds.removeFirst()
            let mapping = try GuestRegionMapping(region: region, fd: fd, request: request, fault: memoryFault)
            try replaceMemory(current + [mapping], &events, request: request)
            return nil

        case let (.remMemReg, .memoryRegion(region)):
            try requireProtocol(.configureMemSlots)
            // "identified by its guest address, user address and size. The mmap offset is ignored."
            let current = memory?.regions ?? []
            guard let k = current.firstIndex(where: {
                $0.region.guestAddress == region.guestAddress && $0.region.userAddress == region.userAddress
                    && $0.region.size == region.size
            }) else {
                throw fail(.memory("no region at guest 0x\(hex(region.guestAddress)) user 0x\(hex(region.userAddress)) size 0x\(hex(region.size))"))
            }
            var remaining = current
            remaining.remove(at: k)
            try replaceMemory(remaining, &events, request: request)
            return nil

        case let (.setStatus, .u64(v)):
            try requireProtocol(.status)
            guard v <= 0xff else { throw fail(.reservedBits("device status", v)) }
            status = UInt8(v)
            events.append(.statusChanged(UInt8(v)))
            return nil

        case (.getStatus, _):
            return .u64(UInt64(status))

        default:
            throw fail(.unsupported("this back-end does not implement \(request)"))
        }
    }
}
