import XCTest
@testable import WarmstartVhostUser

final class WarmstartVhostUserSmokeTests: XCTestCase {
    func testModuleLinks() { XCTAssertTrue(true) }
}
