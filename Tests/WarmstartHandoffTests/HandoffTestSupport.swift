import Foundation
import WarmstartVhostUserWire

// The two helpers the wire tests share with WarmstartRuntimeTests' handoff harness (a test target
// cannot import another's).

func countOpenFDs() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1 }

func socketPair() -> (Int32, Int32) { VhostUserChannel.socketPair()! }
