import XCTest
@testable import WarmstartRuntime

final class WarmstartRuntimeSmokeTests: XCTestCase {
    func testModuleLinks() { XCTAssertTrue(true) }
}
