import XCTest
@testable import WarmstartBus

final class WarmstartBusSmokeTests: XCTestCase {
    func testModuleLinks() { XCTAssertTrue(true) }
}
