import WarmstartMemory

extension MbufPool {
    /// Read-only check of a laid-out pool image that is not adopted: the same identity scan as
    /// `verifyImage()`, without writing the control block (a verify must never disturb a snapshot
    /// that a running process may have mapped).
    /// - Parameter inline: the image holds the control block and ring before the elements; else
    ///   the elements start at `offset`.
    public static func verifyImage(config: MbufPoolConfig, region: MemoryRegion, offset: Int, poolID: UInt16,
                                   inline: Bool = true, limit: Int = 10) -> [String] {
        let g = PoolControl.Geometry(config, separate: !inline)
        do {
            try config.validate()
            try fits(region, offset, g.separate ? g.elementBytes : g.totalBytes, poolID)
        } catch { return ["\(error)"] }
        var problems: [String] = []
        var more = 0
        let len = UInt16(config.bufferLength)
        var p = region.base + offset + g.elementsOffset
        for i in 0..<UInt32(config.count) {
            let m = Mbuf(header: p)
            if m.index != i || m.poolID != poolID || m.magic != MbufLayout.identityMagic || m.bufferLength != len {
                if problems.count < limit {
                    problems.append("element \(i): identity words are index \(m.index), pool \(m.poolID), magic 0x\(String(m.magic, radix: 16)), buffer length \(m.bufferLength); expected \(i), \(poolID), 0x\(String(MbufLayout.identityMagic, radix: 16)), \(len)")
                } else {
                    more += 1
                }
            }
            p += g.elementSize
        }
        if more > 0 { problems.append("... and \(more) more elements") }
        return problems
    }
}
