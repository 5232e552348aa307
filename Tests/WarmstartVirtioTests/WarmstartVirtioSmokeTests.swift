import XCTest
@testable import WarmstartVirtio

final class WarmstartVirtioSmokeTests: XCTestCase {
    func testModuleLinks() { XCTAssertTrue(true) }
}
