import WarmstartEngine
import WarmstartSpec
import WarmstartVhostUser

// Protocol 1.2: the `quiesced` payload (`HandoffLive`) is a fixed binary layout instead of JSON.
// It is the one document that crosses inside the blackout, and a JSON encode plus decode of it
// cost about 0.4 ms there (swift-foundation, measured on the 2-core VM); this costs microseconds.
// Ports are named by their index in the state document's `ports`, which both sides hold.
//
//   quiescedAtNs u64 | lastForwardNs u64 (0: none) | pausedAtNs u64 (0: unknown) | ring count u16 |
//   counter count u16 | 0 u32
//   ring:    port u16 | index u16 | last avail u16 | last used u16 | avail wrap u8 | used wrap u8 | 0 u16
//   counter: port u16 | 0 u16 | 0 u32 | rx packets, rx bytes, tx packets, tx bytes, drops, errors u64
//
// little-endian. Wrap counters are 0 or 1; reserved fields are 0; the length is exact. Both sides
// run the codec once before the pause (`warmUp`).
extension HandoffLive {
    static let binaryHeaderSize = 32
    static let binaryRingSize = 12
    static let binaryCounterSize = 56

    /// The binary payload; `ports` are the names in the state document's order.
    func binaryEncoded(ports: [String]) throws(HandoffError) -> [UInt8] {
        var index: [String: UInt16] = [:]
        for (i, p) in ports.enumerated() { index[p] = UInt16(i) }
        func port(_ name: String) throws(HandoffError) -> UInt16 {
            guard let i = index[name] else { throw HandoffError(.quiesce, .quiescedPortUnknown(name)) }
            return i
        }
        guard rings.count <= Int(UInt16.max), counters.count <= Int(UInt16.max) else {
            throw HandoffError(.quiesce, .quiescedTooLarge(rings: rings.count, counters: counters.count))
        }
        var out: [UInt8] = []
        out.reserveCapacity(Self.binaryHeaderSize + rings.count * Self.binaryRingSize + counters.count * Self.binaryCounterSize)
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        put(quiescedAtNs); put(lastForwardNs ?? 0); put(pausedAtNs ?? 0)
        put(UInt16(rings.count)); put(UInt16(counters.count)); put(UInt32(0))
        for r in rings {
            guard r.index >= 0, r.index <= Int(UInt16.max) else { throw HandoffError(.quiesce, .quiescedRingIndex(r.index)) }
            put(try port(r.port)); put(UInt16(r.index)); put(r.lastAvailIndex); put(r.lastUsedIndex)
            put(UInt8(r.availWrapCounter ? 1 : 0)); put(UInt8(r.usedWrapCounter ? 1 : 0)); put(UInt16(0))
        }
        for (name, c) in counters.sorted(by: { $0.key < $1.key }) {
            put(try port(name)); put(UInt16(0)); put(UInt32(0))
            put(c.rxPackets); put(c.rxBytes); put(c.txPackets); put(c.txBytes); put(c.drops); put(c.errors)
        }
        return out
    }

    /// Reads a binary payload; `ports` are the names in the state document's order. Every count,
    /// index, flag and reserved field is checked: a payload that does not follow the layout is an
    /// error naming the field.
    init(binary b: [UInt8], ports: [String]) throws(HandoffError) {
        func fail(_ field: String, _ why: String) -> HandoffError { HandoffError(.quiesce, .malformedQuiesced(field: field, problem: why)) }
        guard b.count >= Self.binaryHeaderSize else { throw fail("header", "\(b.count) bytes, shorter than its \(Self.binaryHeaderSize)-byte header") }
        func u8(_ o: Int) -> UInt8 { b[o] }
        func u16(_ o: Int) -> UInt16 { UInt16(b[o]) | UInt16(b[o + 1]) << 8 }
        func u32(_ o: Int) -> UInt32 { UInt32(u16(o)) | UInt32(u16(o + 2)) << 16 }
        func u64(_ o: Int) -> UInt64 { UInt64(u32(o)) | UInt64(u32(o + 4)) << 32 }
        let ringCount = Int(u16(24)), counterCount = Int(u16(26))
        guard u32(28) == 0 else { throw fail("header reserved", "reserved header field is \(u32(28))") }
        let expected = Self.binaryHeaderSize + ringCount * Self.binaryRingSize + counterCount * Self.binaryCounterSize
        guard b.count == expected else {
            throw fail("length", "\(b.count) bytes for \(ringCount) rings and \(counterCount) counters (expected \(expected))")
        }
        func port(_ o: Int, _ what: String) throws(HandoffError) -> String {
            let i = Int(u16(o))
            guard i < ports.count else { throw fail(what, "\(what) names port \(i) of \(ports.count)") }
            return ports[i]
        }
        func flag(_ o: Int, _ what: String) throws(HandoffError) -> Bool {
            guard u8(o) <= 1 else { throw fail(what, "\(what) is \(u8(o)), not 0 or 1") }
            return u8(o) == 1
        }
        var rings: [HandoffRingPosition] = []
        rings.reserveCapacity(ringCount)
        var o = Self.binaryHeaderSize
        for k in 0..<ringCount {
            let name = try port(o, "ring \(k)")
            guard u16(o + 10) == 0 else { throw fail("ring \(k) reserved", "ring \(k): reserved field is \(u16(o + 10))") }
            let base = VirtqueuePosition(lastAvailIndex: u16(o + 4), availWrapCounter: try flag(o + 8, "ring \(k) avail wrap counter"),
                                         lastUsedIndex: u16(o + 6), usedWrapCounter: try flag(o + 9, "ring \(k) used wrap counter"))
            rings.append(HandoffRingPosition(port: name, index: Int(u16(o + 2)), base: base))
            o += Self.binaryRingSize
        }
        var counters: [String: QueueCounters] = [:]
        for k in 0..<counterCount {
            let name = try port(o, "counter \(k)")
            guard u16(o + 2) == 0, u32(o + 4) == 0 else { throw fail("counter \(k) reserved", "counter \(k): reserved field is not 0") }
            guard counters[name] == nil else { throw fail("counter \(k) port", "port '\(name)' has two counter entries") }
            var c = QueueCounters()
            c.rxPackets = u64(o + 8); c.rxBytes = u64(o + 16); c.txPackets = u64(o + 24); c.txBytes = u64(o + 32)
            c.drops = u64(o + 40); c.errors = u64(o + 48)
            counters[name] = c
            o += Self.binaryCounterSize
        }
        let last = u64(8), paused = u64(16)
        self.init(quiescedAtNs: u64(0), pausedAtNs: paused == 0 ? nil : paused, lastForwardNs: last == 0 ? nil : last,
                  rings: rings, counters: counters)
    }
}

extension HandoffLive {
    /// Runs the binary codec (and `positions(of:)`) once on a dummy document, before the pause:
    /// the first run of a code path pays for its page faults, lazy symbol binding and generic
    /// metadata — tens of microseconds measured, which belong before the blackout, not in it.
    static func warmUp(ports: [String]) {
        guard let port = ports.first else { return }
        let dummy = HandoffLive(quiescedAtNs: 1, pausedAtNs: 1, lastForwardNs: 1,
                                rings: [HandoffRingPosition(port: port, index: 0, base: VirtqueuePosition())],
                                counters: [port: QueueCounters()])
        guard let bytes = try? dummy.binaryEncoded(ports: ports), let back = try? HandoffLive(binary: bytes, ports: ports) else { return }
        _ = back.positions(of: port)
    }
}
