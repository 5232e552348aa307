import XCTest
import WarmstartBus
import WarmstartPorts

/// What the vhost-user back-end port offers, read from its `--port` spec (no runtime, no peer).
final class VhostUserPortConfigurationTests: XCTestCase {
    /// features=0x... masks what the port offers (the runtime's VhostPortTests show a packed-only
    /// front-end refused by such a port).
    func testFeatureMaskPerPort() throws {
        let mask = ~(UInt64(1) << 34)
        let spec = try PortSpec.parse("vhost-user:/x,features=0x\(String(mask, radix: 16))")
        XCTAssertEqual(VhostUserBackendPort.configuration(for: spec).offeredFeatures & (1 << 34), 0)
        XCTAssertThrowsError(try PortSpec.parse("vhost-user:/x,features=zz"))
    }
}
