// Request codes of the vhost-user protocol (QEMU docs/interop/vhost-user.rst, "Front-end message
// types" and "Back-end message types"). Each number was checked against the spec's `:id:` line.

/// A front-end → back-end request (the codes on the main socket).
public enum VhostUserRequest: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case getFeatures = 1
    case setFeatures = 2
    case setOwner = 3
    case resetOwner = 4
    case setMemTable = 5
    case setLogBase = 6
    case setLogFD = 7
    case setVringNum = 8
    case setVringAddr = 9
    case setVringBase = 10
    case getVringBase = 11
    case setVringKick = 12
    case setVringCall = 13
    case setVringErr = 14
    case getProtocolFeatures = 15
    case setProtocolFeatures = 16
    case getQueueNum = 17
    case setVringEnable = 18
    case sendRARP = 19
    case netSetMTU = 20
    case setBackendReqFD = 21
    case iotlbMsg = 22
    case setVringEndian = 23
    case getConfig = 24
    case setConfig = 25
    case createCryptoSession = 26
    case closeCryptoSession = 27
    case postcopyAdvise = 28
    case postcopyListen = 29
    case postcopyEnd = 30
    case getInflightFD = 31
    case setInflightFD = 32
    case gpuSetSocket = 33
    case resetDevice = 34
    case vringKick = 35
    case getMaxMemSlots = 36
    case addMemReg = 37
    case remMemReg = 38
    case setStatus = 39
    case getStatus = 40
    case getSharedObject = 41
    case setDeviceStateFD = 42
    case checkDeviceState = 43

    /// The spec's name, for logs and errors.
    public var description: String {
        switch self {
        case .getFeatures: return "VHOST_USER_GET_FEATURES"
        case .setFeatures: return "VHOST_USER_SET_FEATURES"
        case .setOwner: return "VHOST_USER_SET_OWNER"
        case .resetOwner: return "VHOST_USER_RESET_OWNER"
        case .setMemTable: return "VHOST_USER_SET_MEM_TABLE"
        case .setLogBase: return "VHOST_USER_SET_LOG_BASE"
        case .setLogFD: return "VHOST_USER_SET_LOG_FD"
        case .setVringNum: return "VHOST_USER_SET_VRING_NUM"
        case .setVringAddr: return "VHOST_USER_SET_VRING_ADDR"
        case .setVringBase: return "VHOST_USER_SET_VRING_BASE"
        case .getVringBase: return "VHOST_USER_GET_VRING_BASE"
        case .setVringKick: return "VHOST_USER_SET_VRING_KICK"
        case .setVringCall: return "VHOST_USER_SET_VRING_CALL"
        case .setVringErr: return "VHOST_USER_SET_VRING_ERR"
        case .getProtocolFeatures: return "VHOST_USER_GET_PROTOCOL_FEATURES"
        case .setProtocolFeatures: return "VHOST_USER_SET_PROTOCOL_FEATURES"
        case .getQueueNum: return "VHOST_USER_GET_QUEUE_NUM"
        case .setVringEnable: return "VHOST_USER_SET_VRING_ENABLE"
        case .sendRARP: return "VHOST_USER_SEND_RARP"
        case .netSetMTU: return "VHOST_USER_NET_SET_MTU"
        case .setBackendReqFD: return "VHOST_USER_SET_BACKEND_REQ_FD"
        case .iotlbMsg: return "VHOST_USER_IOTLB_MSG"
        case .setVringEndian: return "VHOST_USER_SET_VRING_ENDIAN"
        case .getConfig: return "VHOST_USER_GET_CONFIG"
        case .setConfig: return "VHOST_USER_SET_CONFIG"
        case .createCryptoSession: return "VHOST_USER_CREATE_CRYPTO_SESSION"
        case .closeCryptoSession: return "VHOST_USER_CLOSE_CRYPTO_SESSION"
        case .postcopyAdvise: return "VHOST_USER_POSTCOPY_ADVISE"
        case .postcopyListen: return "VHOST_USER_POSTCOPY_LISTEN"
        case .postcopyEnd: return "VHOST_USER_POSTCOPY_END"
        case .getInflightFD: return "VHOST_USER_GET_INFLIGHT_FD"
        case .setInflightFD: return "VHOST_USER_SET_INFLIGHT_FD"
        case .gpuSetSocket: return "VHOST_USER_GPU_SET_SOCKET"
        case .resetDevice: return "VHOST_USER_RESET_DEVICE"
        case .vringKick: return "VHOST_USER_VRING_KICK"
        case .getMaxMemSlots: return "VHOST_USER_GET_MAX_MEM_SLOTS"
        case .addMemReg: return "VHOST_USER_ADD_MEM_REG"
        case .remMemReg: return "VHOST_USER_REM_MEM_REG"
        case .setStatus: return "VHOST_USER_SET_STATUS"
        case .getStatus: return "VHOST_USER_GET_STATUS"
        case .getSharedObject: return "VHOST_USER_GET_SHARED_OBJECT"
        case .setDeviceStateFD: return "VHOST_USER_SET_DEVICE_STATE_FD"
        case .checkDeviceState: return "VHOST_USER_CHECK_DEVICE_STATE"
        }
    }

    /// Requests the spec says always get a reply ("Communication": GET_FEATURES,
    /// GET_PROTOCOL_FEATURES, GET_VRING_BASE, SET_LOG_BASE with LOG_SHMFD, GET_INFLIGHT_FD), plus the
    /// ones whose `:reply payload:` is not N/A (GET_QUEUE_NUM, GET_CONFIG, GET_MAX_MEM_SLOTS,
    /// GET_STATUS). For these REPLY_ACK changes nothing: the explicit reply is the acknowledgement.
    public var hasExplicitReply: Bool {
        switch self {
        case .getFeatures, .getProtocolFeatures, .getVringBase, .getQueueNum, .getConfig,
             .getInflightFD, .getMaxMemSlots, .getStatus, .setLogBase, .iotlbMsg, .postcopyEnd,
             .createCryptoSession, .postcopyAdvise, .getSharedObject, .setDeviceStateFD, .checkDeviceState:
            return true
        default:
            return false
        }
    }
}

/// A back-end → front-end request, sent on the back-end channel (SET_BACKEND_REQ_FD). Listed for
/// completeness and logging; this module does not offer BACKEND_REQ, so it never sends them.
public enum VhostUserBackendRequest: UInt32, Sendable, CaseIterable {
    case iotlbMsg = 1
    case configChangeMsg = 2
    case vringHostNotifierMsg = 3
    case vringCall = 4
    case vringErr = 5
    case sharedObjectAdd = 6
    case sharedObjectRemove = 7
    case sharedObjectLookup = 8
}
