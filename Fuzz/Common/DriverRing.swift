import WarmstartSpec
import WarmstartVirtio
import WarmstartVirtioDriver

/// The driver side of a virtqueue (what the virtio-user front-end runs) against an untrusted
/// back-end: the fuzzer plays the device, writing anything anywhere in the shared ring memory
/// between the driver's operations. The driver must never hand back a token it did not post, hand
/// one back twice, or let its free-descriptor bookkeeping go out of range.
///
/// Input: 0 ring size selector | 1 features | then operations, each a kind byte and its arguments:
///   0 add a chain (count, per buffer: addr u16, len u16, writable) · 1 add an indirect chain ·
///   2 publish and ask needsKick · 3 device scribbles (offset u16, length u8, bytes) ·
///   4 reap (max) · 5 reapTokens with lengths (max) · 6 requestCall / disableCalls ·
///   7 device completes (split: used element id u16, len u32; packed: slot u8, id u16, len u32)
enum DriverRingHarness {
    static let ringGuest: UInt64 = 0x40000
    static let ringBytes = 0x8000
    /// Rings in the first half, indirect tables in the second.
    static let memory = UnsafeMutableRawPointer.allocate(byteCount: 2 * ringBytes, alignment: 4096)
    static let completions = UnsafeMutablePointer<DriverCompletion>.allocate(capacity: 512)
    static let tokens = UnsafeMutablePointer<UInt64>.allocate(capacity: 512)
    static let lengths = UnsafeMutablePointer<UInt32>.allocate(capacity: 512)
    static let buffers = UnsafeMutablePointer<DriverBuffer>.allocate(capacity: 8)
    /// Per token (1...maxTokens): 0 never posted, 1 in flight, 2 returned.
    static let maxTokens = 4096
    static let tokenState = UnsafeMutablePointer<UInt8>.allocate(capacity: maxTokens + 1)

    static func run(_ data: UnsafePointer<UInt8>, _ n: Int, layout: VirtqueueLayout) {
        var input = FuzzInput(data, n)
        let sizeSelector = Int(input.u8())
        let featureBits = input.u8()
        var features: VirtioFeatures = [.version1]
        if featureBits & 1 != 0 { features.insert(.ringIndirectDesc) }
        if featureBits & 2 != 0 { features.insert(.ringEventIdx) }
        if featureBits & 4 != 0 { features.insert(.inOrder) }
        if layout == .packed { features.insert(.ringPacked) }
        let size = layout == .split ? 1 << (sizeSelector % 9) : 1 + sizeSelector % 256
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: 2 * ringBytes)
        tokenState.initialize(repeating: 0, count: maxTokens + 1)
        guard let q = try? DriverQueue(layout: layout, size: size, host: memory, guest: ringGuest, length: ringBytes,
                                       options: VirtqueueOptions(features: features)) else {
            fatalError("driver queue of \(size) does not fit the fixture")
        }
        let used = DriverQueue.ringBytes(layout: layout, size: size)
        var nextToken: UInt64 = 1

        func returned(_ token: UInt64, _ how: String) {
            guard token >= 1, token < nextToken, tokenState[Int(token)] == 1 else {
                fatalError("\(how) handed back token \(token), which is \(token >= 1 && token < nextToken ? "not in flight" : "was never posted")")
            }
            tokenState[Int(token)] = 2
        }
        func checkFree() {
            require(q.numFree >= 0 && q.numFree <= size, "numFree \(q.numFree) outside 0...\(size)")
        }

        var steps = 0
        while !input.isEmpty && steps < 256 {
            steps += 1
            let kind = input.u8() & 7
            switch kind {
            case 0, 1:
                let count = 1 + Int(input.u8() % 4)
                for k in 0..<count {
                    let b = input.u8()
                    buffers[k] = DriverBuffer(addr: 0x50000 + UInt64(input.u16()), len: UInt32(input.u16()), writable: b & 1 != 0)
                }
                guard nextToken <= UInt64(maxTokens) else { break }
                let id: UInt16?
                if kind == 1 {
                    let table = memory + ringBytes + 64 * (Int(nextToken) % 64)
                    id = q.addIndirect(buffers, count: count, token: nextToken, table: table,
                                       tableGuest: ringGuest + UInt64(table - memory))
                } else {
                    id = q.add(buffers, count: count, token: nextToken)
                }
                if let id {
                    require(Int(id) < size, "add returned id \(id) for a ring of \(size)")
                    tokenState[Int(nextToken)] = 1
                    nextToken += 1
                }
                checkFree()
            case 2:
                q.publish()
                _ = q.needsKick()
            case 3:
                let off = Int(input.u16()) % used
                let bytes = input.bytes(Int(input.u8() % 32))
                let k = min(bytes.count, used - off)
                for i in 0..<k { memory.storeBytes(of: bytes[i], toByteOffset: off + i, as: UInt8.self) }
            case 4:
                let got = q.reap(completions, max: 1 + Int(input.u8()))
                for i in 0..<got where completions[i].token != .max { returned(completions[i].token, "reap") }
                checkFree()
            case 5:
                let (got, rejected) = q.reapTokens(tokens, lengths: lengths, max: 1 + Int(input.u8()))
                require(got >= 0 && rejected >= 0, "reapTokens returned \(got), \(rejected)")
                for i in 0..<got { returned(tokens[i], "reapTokens") }
                checkFree()
            case 6:
                let a = input.u8()
                if a & 1 != 0 { q.requestCall(afterUsed: 1 + Int(a >> 1)) } else { q.disableCalls() }
            default:
                switch layout {
                case .split:
                    let ring = q.split!
                    let idx = ring.loadUsedIndex()
                    ring.setUsedElement(idx, id: UInt32(input.u16()), len: input.u32())
                    ring.storeUsedIndex(idx &+ 1)
                case .packed:
                    let ring = q.packed!
                    let slot = Int(input.u8()) % size
                    let wrap = input.bool()
                    ring.setUsedBody(slot, id: input.u16(), len: input.u32())
                    ring.storeFlags(slot, PackedRing.usedFlags(wrap: wrap))
                }
            }
        }
        // The back-end goes away: every chain still in flight comes back exactly once.
        q.reclaimInFlight { returned($0, "reclaimInFlight") }
        for t in 1..<Int(nextToken) where tokenState[t] != 2 {
            fatalError("token \(t) was posted and never came back (in flight \(tokenState[t] == 1))")
        }
    }
}
