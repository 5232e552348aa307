import XCTest
import WarmstartVhostUserWire
@testable import WarmstartPorts

/// Issue 13: a vhost-user failure is sorted by its reason, each one by name; the words stay.
final class VirtioUserErrorTests: XCTestCase {
    func sorted(_ r: VhostUserError.Reason) -> VirtioUserError { .from(VhostUserError(request: nil, reason: r)) }

    func testVhostUserFailuresAreSorted() {
        guard case .backendGone = sorted(.connectionClosed) else { return XCTFail("\(sorted(.connectionClosed))") }
        guard case .backendGone = sorted(.io("recvmsg", errno: 104)) else { return XCTFail() }
        guard case .protocolError = sorted(.peerFailed(1)) else { return XCTFail() }
        guard case .protocolError = sorted(.badVersion(2)) else { return XCTFail() }
        guard case let .missingFeatures(names) = sorted(.missingFeatures(["MAC"])) else { return XCTFail() }
        XCTAssertEqual(names, ["MAC"])
        XCTAssertFalse(sorted(.connectionClosed).isPermanent, "the bus reconnects")
        XCTAssertFalse(sorted(.peerFailed(1)).isPermanent)
        XCTAssertTrue(sorted(.missingFeatures([])).isPermanent)
        XCTAssertEqual("\(sorted(.connectionClosed))", "the vhost-user back-end went away: vhost-user: the peer closed the connection")
    }

    func testConfigProblemsReadAsBefore() {
        XCTAssertTrue(VirtioUserError.badConfig(.queuePairs(0)).isPermanent)
        XCTAssertEqual("\(VirtioUserError.badConfig(.queuePairs(0)))", "queues=0 is outside 1...128")
        XCTAssertEqual("\(VirtioUserError.badConfig(.mtu(port: "vu0", value: "9")))", "port vu0: mtu '9' must be an integer from 68 to 65535")
        XCTAssertEqual("\(VirtioUserError.badConfig(.macKept(port: "vu0", wanted: "02:00:00:00:00:01", kept: "02:00:00:00:00:02")))",
                       "port vu0: mac=02:00:00:00:00:01 but the back-end keeps 02:00:00:00:00:02 in its config space")
    }
}
