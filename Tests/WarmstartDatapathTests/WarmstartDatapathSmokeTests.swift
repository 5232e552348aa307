import XCTest
@testable import WarmstartDatapath

final class WarmstartDatapathSmokeTests: XCTestCase {
    func testModuleLinks() { XCTAssertTrue(true) }
}
