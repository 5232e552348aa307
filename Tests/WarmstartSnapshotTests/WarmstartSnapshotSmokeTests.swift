import XCTest
@testable import WarmstartSnapshot

final class WarmstartSnapshotSmokeTests: XCTestCase {
    func testModuleLinks() { XCTAssertTrue(true) }
}
