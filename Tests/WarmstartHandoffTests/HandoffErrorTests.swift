import XCTest
@testable import WarmstartHandoff
#if canImport(Glibc)
import Glibc
#endif

/// Issue 13: a handoff failure is a case that names what went wrong; the words are the operator's.
final class HandoffErrorTests: XCTestCase {
    func testMessagesReadAsBefore() {
        XCTAssertEqual("\(HandoffError(.hello, .timedOut(ms: 50)))", "handoff failed at step 'hello': timed out after 50 ms waiting for the peer")
        XCTAssertEqual("\(HandoffFailure.peerSaid(.peerClosed, "aborted at step 'map': injected failure"))",
                       "the peer closed the connection (it exited or crashed); the running process said: aborted at step 'map': injected failure")
        XCTAssertEqual("\(HandoffFailure.system(.recvmsg, errno: EBADF))", "recvmsg: \(String(cString: strerror(EBADF)))")
        XCTAssertEqual("\(HandoffFailure.peerAborted(step: nil, reason: nil))", "the peer aborted at step '?': no reason given")
        XCTAssertEqual("\(HandoffFailure.injected(.crash))", "injected crash")
    }

    func testCategories() {
        XCTAssertEqual(HandoffFailure.notHandoffProtocol(magic: 0).category, .wire)
        XCTAssertEqual(HandoffFailure.noPeerCredentials.category, .peerCredentials)
        XCTAssertEqual(HandoffFailure.versionMismatch(peerPid: 1, peer: HandoffVersion(major: 2, minor: 0)).category, .version)
        XCTAssertEqual(HandoffFailure.invalidState(field: "fds", problem: "x").category, .document)
        XCTAssertEqual(HandoffFailure.descriptorIndex(3, tableSize: 2).category, .resources)
        XCTAssertEqual(HandoffFailure.timedOut(ms: 1).category, .timeout)
        XCTAssertEqual(HandoffFailure.peerClosedWhileSending(.commit).category, .peerGone)
        XCTAssertEqual(HandoffFailure.injected(.failure).category, .local)
        // What the running process said adds words, not a kind.
        XCTAssertEqual(HandoffFailure.peerSaid(.timedOut(ms: 1), "aborted").category, .timeout)
    }
}
