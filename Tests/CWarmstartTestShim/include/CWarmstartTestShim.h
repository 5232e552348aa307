// Test-only C: calls the tests make that Swift cannot import and that the product never makes.
// (The production shim, Sources/CWarmstartShim, holds only what Warmstart itself calls.)
#ifndef CWARMSTART_TEST_SHIM_H
#define CWARMSTART_TEST_SHIM_H

/// setns(fd, CLONE_NEWNET) for the calling thread. Returns 0 or -errno.
int ws_enter_netns(int fd);
/// Installs a seccomp filter on the calling thread (and threads it creates later) that makes
/// io_uring_setup fail with EPERM, as a hardened container does. Tests use it to exercise the
/// fallback for real. Returns 0 or -errno.
int ws_seccomp_deny_io_uring(void);
/// setfsuid(2) for the calling thread (tests use it to see permission errors as root).
int ws_setfsuid(unsigned int uid);

#endif
