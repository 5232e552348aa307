// WarmstartVhostUser: the two sides of the vhost-user protocol (QEMU docs/interop/vhost-user.rst),
// built on the wire in WarmstartVhostUserWire (header, messages, validator, frame decoder, channel).
//
// Layers, one file each:
//   VhostUserBackendSession (+Handlers)    the back-end state machine: message in → reply + events out
//   VhostUserBackendSession+Handoff        the session's state for hot upgrade, exported and restored
//   VhostUserSessionState+Validation       checks on a restored state before it is trusted
//   VhostUserBackendLoop                   a minimal blocking driver for tests and tools
//   VhostUserGuestMemory / VhostUserVring  mapped front-end memory, per-ring state, `VringSetup`
//   VhostUserEventFD                       which descriptors a vring's kick/call/err may be
//   VhostUserInflight                      INFLIGHT_SHMFD buffer (opt-in)
//   VhostUserFrontend                      the front-end sequence (what QEMU / virtio-user do)
//
// Datapath contract: build a queue on `.ringStarted(VringSetup)`, swap to the new setup on
// `.ringUpdated`, stop on `.ringStopped` (answer `ringPosition` so GET_VRING_BASE returns where the
// ring really stopped). Memory and eventfds are reference-counted: what an old setup points to
// stays mapped/open until the datapath drops that setup.
