import WarmstartMemory

// The state document arrives from another process. It is checked whole, as a vhost-user message
// is, right after it is decoded and before any descriptor is received, mapped or taken: counts
// against limits, every index against what it indexes, every size and offset for overflow, every
// name for what it may hold. Bad state is refused with a clear error; the donor is told (abort)
// and keeps forwarding. (Sessions are checked by `VhostUserSessionState.validate` as they are
// imported, against the port's configuration; ring positions where they are applied.)

extension HandoffState {
    /// Limits no real process comes near; they bound what a hostile document can make us allocate.
    public static let maxDescriptors = 4096
    public static let maxRegions = 256
    public static let maxPorts = 256
    public static let maxNameBytes = 256

    public func validate() throws(HandoffError) {
        func fail(_ field: String, _ why: String) -> HandoffError { HandoffError(.transfer, .invalidState(field: field, problem: why)) }
        func name(_ s: String, _ field: String, _ what: String) throws(HandoffError) {
            guard !s.isEmpty, s.utf8.count <= Self.maxNameBytes else { throw fail(field, "\(what) is empty or longer than \(Self.maxNameBytes) bytes") }
            guard !s.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
                throw fail(field, "\(what) contains control characters")
            }
        }
        guard fds.count <= Self.maxDescriptors else { throw fail("fds", "\(fds.count) descriptors, at most \(Self.maxDescriptors)") }
        for (i, n) in fds.enumerated() { try name(n, "fds[\(i)]", "the name of descriptor \(i)") }
        guard regions.count <= Self.maxRegions else { throw fail("regions", "\(regions.count) memory regions, at most \(Self.maxRegions)") }
        guard ports.count <= Self.maxPorts else { throw fail("ports", "\(ports.count) ports, at most \(Self.maxPorts)") }
        // Each descriptor index inside the table, and used once. (Sessions' own indices are
        // checked again, with the rest of each session, when it is imported.)
        var used = Set<Int>()
        func index(_ i: Int, _ field: String, _ what: String) throws(HandoffError) {
            guard i >= 0, i < fds.count else { throw fail(field, "\(what): descriptor index \(i) is outside the table of \(fds.count)") }
            guard used.insert(i).inserted else { throw fail(field, "\(what): descriptor index \(i) is used twice") }
        }
        for (k, r) in regions.enumerated() {
            try name(r.name, "regions[\(k)].name", "region \(k)'s name")
            try index(r.fd, "regions[\(k)].fd", "region \(k) '\(r.name)'")
            guard r.size > 0, r.fileOffset >= 0 else { throw fail("regions[\(k)].size", "region \(k) '\(r.name)': size \(r.size), file offset \(r.fileOffset)") }
            guard !r.fileOffset.addingReportingOverflow(r.size).overflow,
                  !r.ioAddress.addingReportingOverflow(UInt64(r.size)).overflow else {
                throw fail("regions[\(k)].size", "region \(k) '\(r.name)': offset or address + size \(r.size) overflows")
            }
            guard PageSize(bytes: r.pageSize) != nil else { throw fail("regions[\(k)].pageSize", "region \(k) '\(r.name)': unknown page size \(r.pageSize)") }
            guard MemoryBacking(rawValue: r.backing) != nil else { throw fail("regions[\(k)].backing", "region \(k) '\(r.name)': unknown backing '\(r.backing)'") }
        }
        for (k, p) in pools.enumerated() {
            guard p.region >= 0, p.region < regions.count else { throw fail("pools[\(k)].region", "pool \(k) (id \(p.poolID)) names region \(p.region) of \(regions.count)") }
            guard p.offset >= 0, p.offset < regions[p.region].size else {
                throw fail("pools[\(k)].offset", "pool \(k) (id \(p.poolID)) at offset \(p.offset) is outside its region of \(regions[p.region].size) bytes")
            }
            // Private metadata (format 1.1): both fields or neither, in another region, inside it.
            switch (p.metadataRegion, p.metadataOffset) {
            case (nil, nil):
                break
            case let (m?, o?):
                guard m >= 0, m < regions.count, m != p.region else {
                    throw fail("pools[\(k)].metadataRegion", "pool \(k) (id \(p.poolID)) names metadata region \(m) of \(regions.count) (its elements are in region \(p.region))")
                }
                guard o >= 0, o < regions[m].size else {
                    throw fail("pools[\(k)].metadataOffset", "pool \(k) (id \(p.poolID)) metadata at offset \(o) is outside its region of \(regions[m].size) bytes")
                }
            default:
                throw fail("pools[\(k)].metadataRegion", "pool \(k) (id \(p.poolID)) has a metadata region or offset without the other")
            }
        }
        var names = Set<String>()
        for (k, p) in ports.enumerated() {
            try name(p.name, "ports[\(k)].name", "port \(k)'s name")
            guard names.insert(p.name).inserted else { throw fail("ports[\(k)].name", "port name '\(p.name)' appears twice") }
            if let path = p.path { try name(path, "ports[\(k)].path", "port '\(p.name)''s path") }
            switch p.kind {
            case "vhost-user":
                guard p.tapFDs == nil else { throw fail("ports[\(k)].tapFDs", "port '\(p.name)': a vhost-user port with TAP descriptors") }
                if let i = p.listenFD { try index(i, "ports[\(k)].listenFD", "port '\(p.name)' listening socket") }
                if let i = p.connectionFD { try index(i, "ports[\(k)].connectionFD", "port '\(p.name)' connection") }
            case "tap":
                guard p.session == nil, p.listenFD == nil, p.connectionFD == nil else {
                    throw fail("ports[\(k)].session", "port '\(p.name)': a TAP port with vhost-user descriptors or a session")
                }
                let queues = p.tapFDs ?? []
                guard !queues.isEmpty, queues.count <= 256 else { throw fail("ports[\(k)].tapFDs", "port '\(p.name)': \(queues.count) TAP queues") }
                for (q, i) in queues.enumerated() { try index(i, "ports[\(k)].tapFDs[\(q)]", "port '\(p.name)' TAP queue \(q)") }
            default:
                throw fail("ports[\(k)].kind", "port '\(p.name)': unknown kind '\(p.kind)'")
            }
        }
        if let c = configuration.values[HandoffConfiguration.Keys.cores], Int(c).map({ (1...1024).contains($0) }) != true {
            throw fail("configuration.\(HandoffConfiguration.Keys.cores)", "cores '\(c)' is not a number in 1...1024")
        }
        if let t = configuration.values[HandoffConfiguration.Keys.txSize], Int(t).map({ (1...65536).contains($0) }) != true {
            throw fail("configuration.\(HandoffConfiguration.Keys.txSize)", "tx-size '\(t)' is not a number in 1...65536")
        }
        if let c = configuration.values[HandoffConfiguration.Keys.controlFD] {
            guard let i = Int(c) else { throw fail("configuration.\(HandoffConfiguration.Keys.controlFD)", "control-fd '\(c)' is not a number") }
            try index(i, "configuration.\(HandoffConfiguration.Keys.controlFD)", "the control socket")
        }
    }
}
