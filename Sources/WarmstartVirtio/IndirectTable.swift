// Indirect descriptor tables (§2.6.5.3 split, §2.7.7 packed).
//
// Checks: the feature was negotiated; INDIRECT is not combined with NEXT; the table length is a
// nonzero multiple of 16 with at most `size` entries; the table lies in one region; no entry is
// itself INDIRECT; entry directions match the chain's (except WRITE in packed TX tables, below).
// Split tables chain with NEXT inside the table (bounded by the entry count); packed tables are
// read in order (§2.7.7: entries are used sequentially).

import WarmstartSpec

extension VirtqueueDevice {
    func walkIndirect(_ d: SplitDescriptor, writable: Bool, packed: Bool, cursor: inout Int, total: inout Int) -> ChainError? {
        walkIndirect(addr: d.addr, len: d.len, flags: d.flags, writable: writable, packed: packed, cursor: &cursor, total: &total)
    }

    func walkIndirect(_ d: PackedDescriptor, writable: Bool, packed: Bool, cursor: inout Int, total: inout Int) -> ChainError? {
        walkIndirect(addr: d.addr, len: d.len, flags: d.flags, writable: writable, packed: packed, cursor: &cursor, total: &total)
    }

    func walkIndirect(addr: UInt64, len: UInt32, flags: UInt16, writable: Bool, packed: Bool,
                      cursor: inout Int, total: inout Int) -> ChainError? {
        if !options.indirectDescriptors { return .indirectNotNegotiated }
        if flags & VirtqDescriptorFlags.next != 0 { return .indirectWithNext }
        if len == 0 || len % 16 != 0 { return .indirectBadLength }
        let entries = Int(len / 16)
        if entries > size { return .indirectTooLarge }
        if addr.addingReportingOverflow(UInt64(len)).overflow { return .lengthOverflow }
        guard let table = memory.translate(addr, UInt64(len)) else { return .indirectOutsideMemory }
        var index = 0
        var visited = 0
        while true {
            if index >= entries { return .indexOutOfRange }
            visited &+= 1
            if visited > entries { return .chainTooLong }
            // Split tables hold `virtq_desc` (flags at byte 12); packed ones `pvirtq_desc` (flags at 14).
            var e = SplitRing.loadDescriptor(table + 16 &* index)
            if packed { e.flags = e.next }
            if e.flags & VirtqDescriptorFlags.indirect != 0 { return .nestedIndirect }
            // A packed table of a chain the device reads (TX) may carry WRITE: DPDK's virtio
            // driver marks every entry WRITE at set-up and never clears it in the header entry
            // (DPDK's vhost ignores entry flags). Reading a device-writable buffer is a SHOULD NOT
            // for the device (§2.7 "The Virtqueue Descriptor Table"), writing a readable one a
            // MUST NOT: the check stays for chains the device writes (RX) and for split tables.
            if !(packed && !writable) && !Self.directionOK(e.flags, writable: writable) { return .wrongDirection }
            if let err = addBuffer(e.addr, e.len, &cursor) { return err }
            total &+= Int(e.len)
            if packed {
                index &+= 1
                if index == entries { return nil }
            } else {
                if e.flags & VirtqDescriptorFlags.next == 0 { return nil }
                index = Int(e.next)
            }
        }
    }
}
