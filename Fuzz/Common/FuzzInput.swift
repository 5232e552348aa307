// Shared by every fuzz target (compiled into each, not part of the package).
#if canImport(Glibc)
import Glibc
#endif

/// Reads the fuzzer's bytes front to back; past the end every read is 0 (an input may be cut
/// anywhere and still mean something).
struct FuzzInput {
    let base: UnsafePointer<UInt8>
    let count: Int
    var offset = 0

    init(_ data: UnsafePointer<UInt8>, _ n: Int) { base = data; count = n }

    var isEmpty: Bool { offset >= count }
    var remaining: Int { max(0, count - offset) }

    mutating func u8() -> UInt8 {
        guard offset < count else { return 0 }
        defer { offset += 1 }
        return base[offset]
    }
    mutating func u16() -> UInt16 { UInt16(u8()) | UInt16(u8()) << 8 }
    mutating func u32() -> UInt32 { UInt32(u16()) | UInt32(u16()) << 16 }
    mutating func u64() -> UInt64 { UInt64(u32()) | UInt64(u32()) << 32 }
    mutating func bool() -> Bool { u8() & 1 != 0 }

    /// Up to `n` bytes (fewer at the end of the input).
    mutating func bytes(_ n: Int) -> [UInt8] {
        let k = min(max(0, n), remaining)
        defer { offset += k }
        return Array(UnsafeBufferPointer(start: base + offset, count: k))
    }

    mutating func rest() -> [UInt8] { bytes(remaining) }
}

/// The lowest free descriptor number: equal before and after an input when nothing leaked.
func lowestFreeFD() -> Int32 {
    let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
    if fd >= 0 { close(fd) }
    return fd
}

/// Descriptors open in this process (for a leak report).
func openFDCount() -> Int {
    guard let d = opendir("/proc/self/fd") else { return -1 }
    defer { closedir(d) }
    var n = 0
    while readdir(d) != nil { n += 1 }
    return n - 3   // ".", "..", and the directory's own descriptor
}

/// Aborts (a crash libFuzzer records with its input) when an input left descriptors open.
struct FDLeakCheck {
    let lowest: Int32
    let count: Int
    init() { lowest = lowestFreeFD(); count = openFDCount() }
    func verify(_ what: String) {
        let now = openFDCount()
        if now != count {
            fatalError("\(what): descriptor leak: \(count) open before the input, \(now) after")
        }
    }
}

/// A property of the code under test; a violation is a finding (fatalError keeps its message in
/// -O builds, where precondition's is dropped).
@inline(__always)
func require(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError(message()) }
}

/// FUZZ_SKIP_KNOWN=1: inputs that reach a finding already reported (its reproducer is in
/// crashes-found/) are not reported again, so a long run can look past it. Never set in CI.
/// No finding is open now: every property is checked whatever it says.
let skipKnown = false
