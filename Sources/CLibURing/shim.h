#ifndef WARMSTART_CLIBURING_H
#define WARMSTART_CLIBURING_H
#include <liburing.h>
#endif
