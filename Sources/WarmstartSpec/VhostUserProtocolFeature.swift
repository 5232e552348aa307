/// One vhost-user protocol feature bit (vhost-user.rst "Protocol features"), negotiated with
/// GET_/SET_PROTOCOL_FEATURES once VHOST_USER_F_PROTOCOL_FEATURES (`VirtioFeatures.protocolFeatures`)
/// is acked. The case name is the spec's VHOST_USER_PROTOCOL_F_ suffix.
public enum VhostUserProtocolFeature: Int, Sendable, CaseIterable {
    case mq = 0
    case logSHMFD = 1
    case rarp = 2
    case replyAck = 3
    case netMTU = 4
    case backendReq = 5
    case crossEndian = 6
    case cryptoSession = 7
    case pagefault = 8
    case config = 9
    case backendSendFD = 10
    case hostNotifier = 11
    case inflightSHMFD = 12
    case resetDevice = 13
    case inbandNotifications = 14
    case configureMemSlots = 15
    case status = 16
    case xenMmap = 17
    case sharedObject = 18
    case deviceState = 19

    public var mask: UInt64 { 1 << UInt64(rawValue) }

    public static func mask(_ features: [VhostUserProtocolFeature]) -> UInt64 {
        features.reduce(0) { $0 | $1.mask }
    }
}
