import XCTest
@testable import WarmstartMemory

final class WarmstartMemorySmokeTests: XCTestCase {
    func testModuleLinks() { XCTAssertTrue(true) }
}
