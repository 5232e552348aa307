/// Little-endian encoding of the snapshot's fixed-layout records into plain byte arrays.
struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    /// A NUL-padded fixed-width text field (cut to fit).
    mutating func text(_ s: String, width: Int) {
        var u = Array(s.utf8.prefix(width))
        u += [UInt8](repeating: 0, count: width - u.count)
        bytes.append(contentsOf: u)
    }
    mutating func zeros(_ n: Int) { bytes += [UInt8](repeating: 0, count: n) }
    mutating func pad(to size: Int) { if bytes.count < size { zeros(size - bytes.count) } }
}

/// Reads fixed-layout records; every read is bounds checked and a short buffer reads as an error.
struct ByteReader {
    let bytes: [UInt8]
    var offset: Int

    init(_ bytes: [UInt8], at offset: Int = 0) {
        self.bytes = bytes
        self.offset = offset
    }

    struct Short: Error {}

    mutating func take(_ n: Int) throws -> ArraySlice<UInt8> {
        guard n >= 0, offset <= bytes.count, n <= bytes.count - offset else { throw Short() }
        defer { offset += n }
        return bytes[offset..<offset + n]
    }
    mutating func u16() throws -> UInt16 { try take(2).reversed().reduce(0) { $0 << 8 | UInt16($1) } }
    mutating func u32() throws -> UInt32 { try take(4).reversed().reduce(0) { $0 << 8 | UInt32($1) } }
    mutating func u64() throws -> UInt64 { try take(8).reversed().reduce(0) { $0 << 8 | UInt64($1) } }
    mutating func text(width: Int) throws -> String {
        let raw = try take(width)
        return String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
    }
    mutating func skip(_ n: Int) throws { _ = try take(n) }
}
