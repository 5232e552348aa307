import XCTest
import CWarmstartShim

/// ws_copy: the inline small-frame copy of the hot paths, every length 0...300 at odd
/// alignments, never a byte outside the destination range.
final class SmallCopyTests: XCTestCase {
    func testEveryLengthAndAlignment() {
        let cap = 512
        let src = UnsafeMutableRawPointer.allocate(byteCount: cap, alignment: 64)
        let dst = UnsafeMutableRawPointer.allocate(byteCount: cap, alignment: 64)
        defer { src.deallocate(); dst.deallocate() }
        for i in 0..<cap { src.storeBytes(of: UInt8(truncatingIfNeeded: i &* 7 &+ 3), toByteOffset: i, as: UInt8.self) }
        for n in 0...300 {
            for (so, dof) in [(0, 0), (1, 3), (5, 0), (0, 7), (13, 29)] {
                dst.initializeMemory(as: UInt8.self, repeating: 0xEE, count: cap)
                ws_copy(dst + 64 + dof, src + so, n)
                for i in 0..<cap {
                    let b = dst.load(fromByteOffset: i, as: UInt8.self)
                    let rel = i - 64 - dof
                    if rel >= 0 && rel < n {
                        if b != src.load(fromByteOffset: so + rel, as: UInt8.self) { return XCTFail("n=\(n) byte \(rel) wrong") }
                    } else if b != 0xEE {
                        return XCTFail("n=\(n) wrote outside the destination at \(rel)")
                    }
                }
            }
        }
    }
}
