import WarmstartMemory
import WarmstartVhostUser

extension VhostQueuePair {
    /// The session's broken-memory flag: both rings and the inflight buffer belong to one
    /// session, whose mappings all set this one flag (see `MappingFaultGuard`).
    public var memoryFault: MappingFaultFlag? { rxSetup.memory.fault }
}
