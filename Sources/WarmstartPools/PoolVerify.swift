/// Image checks for `snapshot verify`: read-only scans of a laid-out pool.
extension MbufPool {
    /// Scans every element's identity words (index, poolID, magic, bufferLength) and returns one
    /// message per problem: the first `limit`, then one line counting the rest. Empty when sound.
    public func verifyImage(limit: Int = 10) -> [String] {
        var problems: [String] = []
        var more = 0
        func report(_ s: @autoclosure () -> String) {
            if problems.count < limit { problems.append(s()) } else { more += 1 }
        }
        var i: UInt32 = 0
        while i < count32 {
            let m = element(i)
            let index = m.index, id = m.poolID, magic = m.magic, len = m.bufferLength
            if index != i { report("mbuf pool \(poolID): element \(i): index word is \(index), expected \(i)") }
            if id != poolID { report("mbuf pool \(poolID): element \(i): pool id word is \(id), expected \(poolID)") }
            if magic != MbufLayout.identityMagic {
                report("mbuf pool \(poolID): element \(i): magic is 0x\(String(magic, radix: 16)), expected 0x"
                       + String(MbufLayout.identityMagic, radix: 16))
            }
            if len != bufferLength16 {
                report("mbuf pool \(poolID): element \(i): bufferLength is \(len), expected \(bufferLength16)")
            }
            i &+= 1
        }
        if more > 0 { problems.append("mbuf pool \(poolID): ... and \(more) more problems") }
        return problems
    }
}
