/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum iSCSI, ext4 and the
/// snapshot header use. Slice-by-8 tables: the metadata it covers is a few KiB, so this runs once
/// per restore in microseconds.
public enum CRC32C {
    static let tables: [[UInt32]] = {
        var t = [[UInt32]](repeating: [UInt32](repeating: 0, count: 256), count: 8)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
            t[0][i] = c
        }
        for i in 0..<256 {
            for k in 1..<8 { t[k][i] = (t[k - 1][i] >> 8) ^ t[0][Int(t[k - 1][i] & 0xFF)] }
        }
        return t
    }()

    /// Continues a checksum over `count` bytes at `p` (start with `crc` = 0).
    public static func update(_ crc: UInt32, _ p: UnsafeRawPointer, _ count: Int) -> UInt32 {
        var c = ~crc
        var i = 0
        let t = tables
        while i + 8 <= count {
            let lo = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: i, as: UInt32.self)) ^ c
            let hi = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: i + 4, as: UInt32.self))
            c = t[7][Int(lo & 0xFF)] ^ t[6][Int((lo >> 8) & 0xFF)] ^ t[5][Int((lo >> 16) & 0xFF)]
                ^ t[4][Int(lo >> 24)] ^ t[3][Int(hi & 0xFF)] ^ t[2][Int((hi >> 8) & 0xFF)]
                ^ t[1][Int((hi >> 16) & 0xFF)] ^ t[0][Int(hi >> 24)]
            i += 8
        }
        while i < count {
            c = t[0][Int((c ^ UInt32(p.load(fromByteOffset: i, as: UInt8.self))) & 0xFF)] ^ (c >> 8)
            i += 1
        }
        return ~c
    }

    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress else { return 0 }
        return update(0, base, bytes.count)
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0) }
    }
}
