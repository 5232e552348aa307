import XCTest
import Foundation
@testable import WarmstartBus

final class PortSpecTests: XCTestCase {
    func testParsesEachKind() throws {
        let v = try PortSpec.parse("vhost-user:/run/ws/p0.sock,mode=0660,queues=2")
        XCTAssertEqual(v.kind, .vhostUser)
        XCTAssertEqual(v.path, "/run/ws/p0.sock")
        XCTAssertEqual(v.socketMode, 0o660)
        XCTAssertEqual(v.option("queues"), "2")
        XCTAssertEqual(v.name, "p0.sock")
        XCTAssertTrue(v.listens)
        XCTAssertEqual(v.description, "vhost-user:/run/ws/p0.sock,mode=0660,queues=2")

        XCTAssertEqual(try PortSpec.parse("vhost-user:/x").socketMode, 0o600, "default mode is 0600")
        let c = try PortSpec.parse("vhost-user-client:/tmp/q.sock,name=uplink")
        XCTAssertEqual(c.kind, .vhostUserClient)
        XCTAssertEqual(c.name, "uplink")
        XCTAssertFalse(c.listens)
        XCTAssertFalse(try PortSpec.parse("virtio-user:/tmp/b.sock").listens)
        XCTAssertTrue(try PortSpec.parse("virtio-user:/tmp/b.sock,server=1").listens)
        let t = try PortSpec.parse("tap:wstap0")
        XCTAssertEqual(t.kind, .tap)
        XCTAssertEqual(t.name, "wstap0")
    }

    func testUnknownKindListsValidKinds() {
        XCTAssertThrowsError(try PortSpec.parse("af-xdp:eth0")) { e in
            XCTAssertEqual("\(e)", "port 'af-xdp:eth0': unknown kind 'af-xdp' (valid kinds: vhost-user, vhost-user-client, virtio-user, tap)")
        }
        XCTAssertThrowsError(try PortSpec.parse("eth0")) { e in
            XCTAssertTrue("\(e)".contains("expected KIND:PATH (valid kinds: vhost-user"), "\(e)")
        }
    }

    func testUnknownKeyListsValidKeys() {
        XCTAssertThrowsError(try PortSpec.parse("vhost-user:/x,speed=10")) { e in
            XCTAssertEqual("\(e)", "port 'vhost-user:/x,speed=10': unknown key 'speed' for vhost-user (valid keys: name, mode, queues, features, max-memory)")
        }
        XCTAssertThrowsError(try PortSpec.parse("tap:t0,mode=0600")) { e in
            XCTAssertTrue("\(e)".contains("valid keys: name, queues"), "\(e)")
        }
        XCTAssertThrowsError(try PortSpec.parse("vhost-user:/x,mode=rw")) { e in
            XCTAssertTrue("\(e)".contains("not an octal permission"), "\(e)")
        }
        XCTAssertThrowsError(try PortSpec.parse("vhost-user:")) { e in
            XCTAssertTrue("\(e)".contains("needs a socket path"), "\(e)")
        }
        XCTAssertThrowsError(try PortSpec.parse("tap:averyveryverylongname")) { e in
            XCTAssertTrue("\(e)".contains("longer than 15"), "\(e)")
        }
    }

    func testConfigFileAndArguments() throws {
        let dir = makeTempDir("cfg")
        defer { removeTree(dir) }
        let path = dir + "/ports.conf"
        try """
        # two guests and the host
        vhost-user:/run/ws/vm1.sock,mode=0660   # first VM
        port vhost-user-client:/run/qemu/vm2.sock

        tap:ws0
        """.write(toFile: path, atomically: true, encoding: .utf8)
        let specs = try PortSpec.loadConfig(path: path)
        XCTAssertEqual(specs.map(\.kind), [.vhostUser, .vhostUserClient, .tap])
        XCTAssertEqual(specs[0].socketMode, 0o660)

        let all = try PortSpec.fromArguments(["--boot-only", "--port", "tap:ws1", "--config", path, "--port=virtio-user:/b"])
        XCTAssertEqual(all.map(\.kind), [.tap, .vhostUser, .vhostUserClient, .tap, .virtioUser])

        try "tap:ok\nbogus:thing\n".write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try PortSpec.loadConfig(path: path)) { e in
            XCTAssertTrue("\(e)".hasPrefix("\(path):2: port 'bogus:thing': unknown kind"), "\(e)")
        }
        XCTAssertThrowsError(try PortSpec.loadConfig(path: dir + "/missing")) { e in
            XCTAssertEqual("\(e)", "config \(dir)/missing: No such file or directory")
        }
    }

    func testReportJSON() {
        let r = DeviceRecord(name: "p\"0", kind: "vhost-user", path: "/x", state: .started, probeMs: 1.5, startMs: 0.25,
                             readyAtMs: 12, firstPacketMs: nil, reason: nil, reconnects: 0)
        XCTAssertEqual(BusReport.devicesJSON([r]),
                       #"[{"name":"p\"0","kind":"vhost-user","path":"/x","state":"started","probe_ms":1.500,"start_ms":0.250,"ready_at_ms":12.000,"first_packet_ms":null,"reconnects":0,"reason":null}]"#)
        let json = BusReport.devicesJSON([r, r])
        XCTAssertNoThrow(try JSONSerialization.jsonObject(with: Data(json.utf8)))
        let p = BusReport.phases([r, r])
        XCTAssertEqual(p.probeMs, 1.5)
        XCTAssertEqual(p.dpdkProbeMs, 480...800)
        XCTAssertEqual(p.dpdkStartMs, 880)
    }
}
