import XCTest
@testable import WarmstartIO

final class WarmstartIOSmokeTests: XCTestCase {
    func testModuleLinks() { XCTAssertTrue(true) }
}
