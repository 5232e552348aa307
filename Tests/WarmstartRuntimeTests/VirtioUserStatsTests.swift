import Foundation
import XCTest
import WarmstartBus
import WarmstartPorts
import WarmstartPools
import WarmstartSnapshot
@testable import WarmstartRuntime

/// A virtio-user port's MAC in the runtime's counters (`warmstart stats`, the exit counters): one
/// runtime whose virtio-user port drives its own vhost-user port over a socket in a temp
/// directory.
final class VirtioUserStatsTests: XCTestCase {
    func testCountersCarryTheVirtioUserPortsMAC() throws {
        let live = try LiveMemory.coldLayout(SnapshotConfig(pool: MbufPoolConfig(count: 8192, cacheSize: 64)), hugepages: .off)
        var template = Array("/tmp/ws-vustats-XXXXXX".utf8CString)
        let dir = String(cString: template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!)! })
        defer { rmdir(dir) }
        let sock = dir + "/be.sock"
        let ports = [try PortSpec.parse("vhost-user:\(sock),name=be"),
                     try PortSpec.parse("virtio-user:\(sock),name=fe,mac=02:00:00:00:0b:0e,backoff-min-ms=5"),
                     try PortSpec.parse("virtio-user:\(sock),name=fe-random,backoff-min-ms=5,queues=1")]
        let runtime = try Runtime(options: RuntimeOptions(ports: ports, forward: .io, cores: 1),
                                  memory: live, recorder: PhaseRecorder(clock: BootClock(environment: [:])))
        runtime.enableVirtioUserPorts()
        try runtime.start()
        defer { runtime.stop(); unlink(sock) }
        XCTAssertTrue(runtime.bus.wait(timeoutSeconds: 10) { $0[1].state == .started }, "\(runtime.bus.snapshot())")
        // The second front-end's socket connects too (the listener's backlog takes it); its port
        // exists from then on.
        let deadline = Date().addingTimeInterval(10)
        while runtime.virtioUser?.port(device: 2) == nil && Date() < deadline { usleep(1000) }
        let st = runtime.stats()
        XCTAssertNil(st.ports[0].mac, "a vhost-user port has none")
        XCTAssertEqual(st.ports[1].mac, "02:00:00:00:0b:0e")
        // Without mac=: random, locally administered, unicast (the back-end offers no address).
        let random = try XCTUnwrap(st.ports[2].mac.flatMap(PortSpec.parseMAC))
        XCTAssertEqual(random[0] & 0x03, 0x02)
        let text = st.renderText()
        XCTAssertTrue(text.contains("  mac 02:00:00:00:0b:0e\n"), text)
        let json = String(decoding: try st.jsonData(), as: UTF8.self)
        XCTAssertTrue(json.contains("\"mac\" : \"02:00:00:00:0b:0e\""), json)
    }
}
