import Logging
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Log lines go to stderr (stdout carries the report and counters); WARMSTART_LOG=debug|info|
/// warning|error sets the level (default info).
enum LoggingSetup {
    static func bootstrap() {
        let level = ProcessInfo.processInfo.environment["WARMSTART_LOG"].flatMap { Logger.Level(rawValue: $0) } ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
    }
}
