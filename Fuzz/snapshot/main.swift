// Fuzz target: the snapshot header and metadata parser (WarmstartSnapshot SnapshotFile.open, the
// layout checks, check(against:), mapRegions). The input is the file, written to a private
// directory; SnapshotFile.open reads it the way a restore does.
//
// Input: control u8, then the file's bytes. Control bit 0: store the right CRC-32C over header
// and metadata (so mutations get past the checksum); bit 1: extend the file to the size its
// header claims (up to 1 MiB; sparse) so the region geometry checks run.
import WarmstartPools
import WarmstartSnapshot
#if canImport(Glibc)
import Glibc
#endif

let directory: String = {
    var template = Array("/tmp/warmstart-fuzz-snapshot-XXXXXX".utf8CString)
    guard let p = mkdtemp(&template) else { fatalError("mkdtemp: errno \(errno)") }
    return String(cString: p)
}()
let path = directory + "/fuzz.snap"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ n: Int) -> CInt {
    var input = FuzzInput(data, n)
    let control = input.u8()
    var file = input.rest()
    func u64(_ o: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { $0 | UInt64(file[o + $1]) << (8 * UInt64($1)) }
    }
    if control & 1 != 0, file.count >= 256 {
        let metadataSize = u64(72)
        let end = 256 + Int(min(metadataSize, UInt64(file.count - 256)))
        var crc = file.withUnsafeBytes { CRC32C.update(0, $0.baseAddress!, 252) }
        if end > 256 { crc = file.withUnsafeBytes { CRC32C.update(crc, $0.baseAddress! + 256, end - 256) } }
        for i in 0..<4 { file[252 + i] = UInt8(truncatingIfNeeded: crc >> (8 * UInt32(i))) }
    }
    var length = file.count
    if control & 2 != 0, file.count >= 64 {
        let claimed = u64(56)
        if claimed >= UInt64(file.count), claimed <= 1 << 20 { length = Int(claimed) }
    }
    let check = FDLeakCheck()
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
    guard fd >= 0 else { fatalError("cannot write \(path): errno \(errno)") }
    let wrote = file.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    require(wrote == file.count, "short write")
    if length > file.count { require(ftruncate(fd, off_t(length)) == 0, "ftruncate") }
    close(fd)
    do {
        if let snapshot = try? SnapshotFile.open(path: path) {
            _ = snapshot.isResident
            let pool = snapshot.layout.pools.first?.config ?? MbufPoolConfig(count: 1024)
            try? snapshot.check(against: SnapshotConfig(pool: pool))
            if let regions = try? snapshot.mapRegions() { _ = regions.map(\.size) }
        }
        _ = try? SnapshotVerifier.verify(path: path)
    }
    check.verify("snapshot")
    return 0
}
