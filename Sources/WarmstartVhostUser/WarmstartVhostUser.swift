// WarmstartVhostUser: the vhost-user protocol (QEMU docs/interop/vhost-user.rst), both sides.
//
// Layers, one file each:
//   VhostUserRequest / VhostUserFeatures   request codes; the feature sets a port offers (the bits
//                                          themselves are WarmstartSpec's)
//   VhostUserHeader                        12-byte header; header errors are fatal (stream out of sync)
//   VhostUserMessage                       typed payloads, little-endian encode/decode, no Foundation
//   VhostUserMessageValidator              payload size, descriptor policy, vring index checks
//   VhostUserFrameDecoder                  bytes + descriptors in, whole frames out (both sides' readers)
//   VhostUserChannel                       blocking/non-blocking reads and writes with SCM_RIGHTS
//   VhostUserBackendSession (+Handlers)    the back-end state machine: message in → reply + events out
//   VhostUserGuestMemory / VhostUserVring  mapped front-end memory, per-ring state, `VringSetup`
//   VhostUserInflight                      INFLIGHT_SHMFD buffer (opt-in)
//   VhostUserFrontend                      the front-end sequence (what QEMU / virtio-user do)
//
// Datapath contract: build a queue on `.ringStarted(VringSetup)`, swap to the new setup on
// `.ringUpdated`, stop on `.ringStopped` (answer `ringPosition` so GET_VRING_BASE returns where the
// ring really stopped). Memory and eventfds are reference-counted: what an old setup points to
// stays mapped/open until the datapath drops that setup.
