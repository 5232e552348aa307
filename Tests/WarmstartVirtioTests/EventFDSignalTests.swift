import XCTest
import CWarmstartShim
#if canImport(Glibc)
import Glibc
#endif
@testable import WarmstartVirtio

/// `eventFDSignal` on an eventfd a hostile peer shares (issue 12, defect 2): the peer can clear
/// O_NONBLOCK on the shared open file description and fill the counter. A blocking descriptor is
/// refused before any write; a peer that flips the flag between that check and the write has the
/// sleeping write interrupted by the watchdog. The calling thread never waits for good.
final class EventFDSignalTests: XCTestCase {
    var fd: Int32 = -1

    override func setUpWithError() throws {
        fd = ws_eventfd(0, WS_EFD_NONBLOCK | WS_EFD_CLOEXEC)
        XCTAssertGreaterThanOrEqual(fd, 0)
        XCTAssertEqual(ws_write_guard_register(), 0)
    }

    override func tearDown() {
        ws_write_guard_unregister()
        if fd >= 0 { close(fd) }
    }

    func fill() {
        var max: UInt64 = 0xffff_ffff_ffff_fffe
        XCTAssertEqual(withUnsafeBytes(of: &max) { write(fd, $0.baseAddress, 8) }, 8)
    }

    func setBlocking(_ blocking: Bool) {
        let flags = fcntl(fd, F_GETFL)
        XCTAssertEqual(fcntl(fd, F_SETFL, blocking ? flags & ~O_NONBLOCK : flags | O_NONBLOCK), 0)
    }

    func testDeliveredThenDroppedWhenTheCounterIsFull() {
        XCTAssertEqual(eventFDSignal(fd), .delivered)
        var value: UInt64 = 0
        XCTAssertEqual(withUnsafeMutableBytes(of: &value) { read(fd, $0.baseAddress, 8) }, 8)
        XCTAssertEqual(value, 1)
        fill()
        XCTAssertEqual(eventFDSignal(fd), .dropped, "EAGAIN on a full non-blocking counter")
    }

    /// Before the pre-write check this write slept for the watchdog's whole period (and without
    /// the watchdog, for good).
    func testDescriptorMadeBlockingIsRefusedWithoutAWrite() {
        fill()
        setBlocking(true)
        let interrupts = ws_write_guard_interrupts()
        XCTAssertEqual(ws_eventfd_signal(fd), WS_EVENTFD_MADE_BLOCKING)
        XCTAssertEqual(eventFDSignal(fd), .stuck)
        XCTAssertEqual(ws_write_guard_interrupts(), interrupts, "no write slept")
        setBlocking(false)
        var value: UInt64 = 0
        XCTAssertEqual(withUnsafeMutableBytes(of: &value) { read(fd, $0.baseAddress, 8) }, 8)
        XCTAssertEqual(value, 0xffff_ffff_ffff_fffe, "nothing was written")
    }

    /// The peer flips O_NONBLOCK as fast as it can while the counter is full: some write passes
    /// the check and then sleeps; the watchdog interrupts it (EINTR → `.stuck`). Every other
    /// attempt returns at once (EAGAIN or refused as blocking).
    func testFlagFlippedBetweenCheckAndWriteIsInterruptedByTheWatchdog() {
        fill()
        let stopWord = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
        stopWord.initialize(to: 0)
        defer { stopWord.deallocate() }
        let stop = UInt(bitPattern: stopWord)   // the flipper thread's view of the word
        let flipper = Thread { [fd] in
            let stop = UnsafeMutablePointer<UInt32>(bitPattern: stop)!
            let flags = fcntl(fd, F_GETFL)
            while ws_load_acquire_u32(stop) == 0 {
                _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK)
                _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
            }
            ws_store_release_u32(stop, 2)
        }
        flipper.start()
        let interrupts = ws_write_guard_interrupts()
        var results: [Int32: Int] = [:]
        let deadline = ws_monotonic_ns() + 30_000_000_000
        var slept: UInt64 = 0
        while ws_monotonic_ns() < deadline {
            let t0 = ws_monotonic_ns()
            let r = ws_eventfd_signal(fd)
            results[r, default: 0] += 1
            if r == -EINTR { slept = ws_monotonic_ns() - t0; break }
        }
        ws_store_release_u32(stopWord, 1)
        while ws_load_acquire_u32(stopWord) != 2 { usleep(100) }
        print("flag flipped under the writer: results \(results.sorted { $0.key < $1.key }), the interrupted write slept \(slept / 1_000_000) ms")
        XCTAssertEqual(results[-EINTR], 1, "no write was caught between the check and the write in 30 s: \(results)")
        XCTAssertGreaterThan(ws_write_guard_interrupts(), interrupts)
        XCTAssertGreaterThanOrEqual(slept, UInt64(WS_WRITE_GUARD_STUCK_NS), "interrupted only after the stuck period")
        XCTAssertEqual(Set(results.keys).subtracting([-EAGAIN, WS_EVENTFD_MADE_BLOCKING, -EINTR]), [], "unexpected results \(results)")
    }
}
