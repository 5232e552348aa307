import CWarmstartShim
import Foundation
import XCTest
import WarmstartTestSupport
@testable import WarmstartMemory

/// The SIGBUS guard (issue 12, defect 3): a peer that shrinks a file we map must cost the mapping
/// (zero pages and a flag), never the process; a fault nobody registered still crashes.
final class MappingFaultGuardTests: XCTestCase {
    /// A shared mapping of a fresh memfd of `size` bytes filled with 0xA5.
    func sharedMemfd(size: Int, flags: UInt32 = WS_MFD_CLOEXEC) throws -> (Int32, UnsafeMutableRawPointer) {
        let fd = ws_memfd_create("fault-guard-test", flags)
        guard fd >= 0 else { throw XCTSkip("memfd_create: errno \(errno)") }
        XCTAssertEqual(ftruncate(fd, off_t(size)), 0)
        let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)!
        XCTAssertNotEqual(p, MAP_FAILED)
        p.initializeMemory(as: UInt8.self, repeating: 0xA5, count: size)
        return (fd, p)
    }

    func testTruncatedRegisteredMappingReadsZerosAndSetsTheFlag() throws {
        let size = 64 << 10
        let (fd, p) = try sharedMemfd(size: size)
        defer { munmap(p, size); close(fd) }
        let before = MappingFaultGuard.registered
        let flag = MappingFaultFlag()
        var guarded: MappingFaultGuard? = try MappingFaultGuard(base: p, length: size, pageSize: 4096, fd: fd,
                                                                label: "memory region at guest 0x4000", flag: flag)
        XCTAssertEqual(MappingFaultGuard.registered, before + 1)
        XCTAssertFalse(guarded!.sealedAgainstShrink)
        XCTAssertFalse(flag.isSet)
        XCTAssertNil(flag.reason(peer: "front-end"))

        // The peer shrinks its file: every page of the mapping is now past its end.
        XCTAssertEqual(ftruncate(fd, 0), 0)
        let touched = p + 8192 + 5
        // Without the guard this load kills the process with SIGBUS.
        XCTAssertEqual(touched.load(as: UInt8.self), 0, "the faulting read re-executes on a zero page")
        XCTAssertTrue(flag.isSet)
        XCTAssertEqual(flag.faultAddress, UInt64(UInt(bitPattern: touched)))
        // The whole mapping was replaced: other pages read zeros too, and writes go nowhere harmful.
        let bytes = UnsafeRawBufferPointer(start: p, count: size)
        XCTAssertTrue(bytes.allSatisfy { $0 == 0 })
        p.storeBytes(of: 0x1234, toByteOffset: size - 8, as: UInt64.self)
        XCTAssertEqual(p.load(fromByteOffset: size - 8, as: UInt64.self), 0x1234)
        let reason = flag.reason(peer: "front-end") ?? ""
        XCTAssertTrue(reason.contains("front-end truncated its memory region at guest 0x4000"), reason)
        XCTAssertTrue(reason.contains("SIGBUS at 0x\(String(UInt(bitPattern: touched), radix: 16)), 0x2005 bytes into the mapping"), reason)

        guarded = nil
        XCTAssertEqual(MappingFaultGuard.registered, before, "unregistered on release")
        XCTAssertTrue((flag.reason(peer: "front-end") ?? "").contains("memory region at guest 0x4000"),
                      "the reason outlives the mapping that faulted")
    }

    /// Only the first fault is recorded; a second mapping on the same flag faulting later does not
    /// overwrite the reason, and is still made harmless.
    func testTwoMappingsOneFlagFirstFaultWins() throws {
        let size = 16 << 10
        let (fd1, p1) = try sharedMemfd(size: size)
        let (fd2, p2) = try sharedMemfd(size: size)
        defer { munmap(p1, size); close(fd1); munmap(p2, size); close(fd2) }
        let flag = MappingFaultFlag()
        let g1 = try MappingFaultGuard(base: p1, length: size, pageSize: 4096, fd: fd1, label: "region one", flag: flag)
        let g2 = try MappingFaultGuard(base: p2, length: size, pageSize: 4096, fd: fd2, label: "region two", flag: flag)
        XCTAssertEqual(ftruncate(fd2, 4096), 0)   // only past the first page
        XCTAssertEqual(p2.load(fromByteOffset: 0, as: UInt8.self), 0xA5, "the first page is still in the file")
        XCTAssertFalse(flag.isSet)
        XCTAssertEqual(p2.load(fromByteOffset: 4096, as: UInt8.self), 0)
        XCTAssertTrue(flag.reason(peer: "peer")?.contains("region two") ?? false)
        XCTAssertEqual(ftruncate(fd1, 0), 0)
        XCTAssertEqual(p1.load(as: UInt8.self), 0)
        XCTAssertTrue(flag.reason(peer: "peer")?.contains("region two") ?? false, "the first fault is the reason")
        withExtendedLifetime((g1, g2)) {}
    }

    /// A file sealed against shrinking cannot fault by shrinking: the guard says so (and is
    /// registered all the same), and the peer's ftruncate fails.
    func testSealedFileCannotBeShrunk() throws {
        let size = 16 << 10
        let (fd, p) = try sharedMemfd(size: size, flags: WS_MFD_CLOEXEC | WS_MFD_ALLOW_SEALING)
        defer { munmap(p, size); close(fd) }
        XCTAssertEqual(ws_seal_size(fd), 0)
        XCTAssertNotEqual(ws_file_seals(fd) & WS_F_SEAL_SHRINK, 0)
        let g = try MappingFaultGuard(base: p, length: size, pageSize: 4096, fd: fd, label: "sealed", flag: MappingFaultFlag())
        XCTAssertTrue(g.sealedAgainstShrink)
        XCTAssertEqual(ftruncate(fd, 0), -1)
        XCTAssertEqual(errno, EPERM)
        XCTAssertEqual(p.load(fromByteOffset: size - 1, as: UInt8.self), 0xA5)
        XCTAssertFalse(g.flag.isSet)
    }

    /// A fault in memory nobody registered is a real bug: it still kills the process with SIGBUS.
    /// Run in a fresh child process (this test binary again, with the Swift runtime's own crash
    /// handler off so the previous SIGBUS action is the default one): the child guards one mapping,
    /// then touches another, unguarded, truncated one.
    func testUnregisteredFaultStillCrashes() throws {
        if ProcessInfo.processInfo.environment["WS_FAULT_GUARD_CHILD"] == "1" {
            let size = 16 << 10
            let (ofd, other) = try sharedMemfd(size: 4096)
            let g = try MappingFaultGuard(base: other, length: 4096, pageSize: 4096, fd: ofd, label: "other", flag: MappingFaultFlag())
            let (fd, p) = try sharedMemfd(size: size)
            XCTAssertEqual(ftruncate(fd, 0), 0)
            _ = p.load(fromByteOffset: 100, as: UInt8.self)   // SIGBUS: nothing guards this mapping
            withExtendedLifetime(g) {}
            exit(3)   // not reached when the fault kills the process
        }
        // Under AddressSanitizer (test.sh's ASan step) the previous SIGBUS action is ASan's, which
        // reports and exits 1: the guard chains to it as it should. Leave SIGBUS to the default
        // action in the child so the check is the same with and without ASan.
        let asan = (ProcessInfo.processInfo.environment["ASAN_OPTIONS"].map { $0 + ":" } ?? "") + "handle_sigbus=0"
        let child = try ChildTest.run("WarmstartMemoryTests.MappingFaultGuardTests/testUnregisteredFaultStillCrashes",
                                      environment: ["WS_FAULT_GUARD_CHILD": "1", "ASAN_OPTIONS": asan], quiet: true)
        XCTAssertFalse(child.timedOut)
        XCTAssertEqual(child.reason, .uncaughtSignal, "the child exited with status \(child.status)")
        XCTAssertEqual(child.status, SIGBUS)
    }

    /// hugetlbfs: zero pages replace the whole huge-page mapping (MAP_FIXED over all of it, so
    /// no split of a huge page is ever asked for). Skips without free 2M hugepages.
    func testTruncatedHugetlbMappingReadsZeros() throws {
        guard let pool = Hugepages.pool(.huge2M), pool.available >= 2 else { throw XCTSkip("needs two free 2M hugepages") }
        let size = 4 << 20
        let (fd, p) = try sharedMemfd(size: size, flags: WS_MFD_CLOEXEC | WS_MFD_HUGETLB | WS_MFD_HUGE_2MB)
        defer { munmap(p, size); close(fd) }
        let flag = MappingFaultFlag()
        let g = try MappingFaultGuard(base: p, length: size, pageSize: 2 << 20, fd: fd, label: "huge region", flag: flag)
        XCTAssertEqual(ftruncate(fd, 2 << 20), 0)   // the second huge page is gone
        XCTAssertEqual(p.load(fromByteOffset: (2 << 20) + 123, as: UInt8.self), 0)
        XCTAssertTrue(flag.isSet)
        XCTAssertEqual(p.load(fromByteOffset: 0, as: UInt8.self), 0, "all of the mapping was replaced")
        withExtendedLifetime(g) {}
    }

    /// Our own memfd regions (a virtio-user port shares them with its back-end peer) are sealed:
    /// the peer cannot shrink them under us.
    func testOurMemfdRegionsCannotBeShrunkByAPeer() throws {
        let r = try MemoryRegion.memfd(name: "shared-with-peer", size: 64 << 10, pageSize: .small4K)
        XCTAssertNotEqual(ws_file_seals(r.fd.rawValue) & WS_F_SEAL_SHRINK, 0)
        XCTAssertEqual(ftruncate(r.fd.rawValue, 0), -1, "a peer holding the descriptor could shrink the region")
        XCTAssertEqual(errno, EPERM)
        r.base.storeBytes(of: 7, toByteOffset: (64 << 10) - 1, as: UInt8.self)
    }

    func testEmptyRangeIsRefused() {
        var x: UInt64 = 0
        XCTAssertThrowsError(try MappingFaultGuard(base: &x, length: 0, pageSize: 4096, fd: -1, label: "nothing", flag: MappingFaultFlag())) {
            XCTAssertEqual($0 as? MappingFaultGuardError, .invalidRange(label: "nothing"))
        }
    }
}
