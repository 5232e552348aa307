// WarmstartVhostUserWire: the vhost-user wire (QEMU docs/interop/vhost-user.rst), what both sides
// speak. No session state: WarmstartVhostUser builds the back-end session and the front-end on it.
//
// Layers, one file each:
//   VhostUserRequest / VhostUserFeatures   request codes; the feature sets a port offers (the bits
//                                          themselves are WarmstartSpec's)
//   VhostUserHeader                        12-byte header; header errors are fatal (stream out of sync)
//   VhostUserMessage                       typed payloads, little-endian encode/decode, no Foundation
//   VhostUserMessageValidator              payload size, descriptor policy, vring index checks
//   VhostUserFrameDecoder                  bytes + descriptors in, whole frames out (both sides' readers)
//   VhostUserChannel                       blocking/non-blocking reads and writes with SCM_RIGHTS
//   VhostUserError                         typed errors, classified fatal or not by name
//   VirtioNetConfig                        the virtio-net config space GET_CONFIG/SET_CONFIG carry
//   SystemCalls                            descriptor plumbing (close, SIGPIPE)
