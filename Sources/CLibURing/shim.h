#ifndef WARMSTART_CLIBURING_H
#define WARMSTART_CLIBURING_H
// liburing.h defines _XOPEN_SOURCE/_GNU_SOURCE when they are not set, which changes the glibc
// declarations it pulls in (fd_set's field becomes `fds_bits`) and makes them clash with Swift's
// Glibc module. Including the libc headers first, with the default feature set, fixes the
// declarations before liburing.h can change them.
#include <features.h>
#include <sys/types.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <inttypes.h>
#include <time.h>
#include <fcntl.h>
#include <sched.h>
#include <linux/stat.h>
#include <liburing.h>
#endif
