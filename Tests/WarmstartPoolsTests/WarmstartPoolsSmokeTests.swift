import XCTest
@testable import WarmstartPools

final class WarmstartPoolsSmokeTests: XCTestCase {
    func testModuleLinks() { XCTAssertTrue(true) }
}
