#ifndef PORTICO_CHIREDIS_SHIM_H
#define PORTICO_CHIREDIS_SHIM_H
// Debian's libhiredis-dev installs under /usr/include/hiredis; no pkgConfig on purpose (see TOOLCHAIN.md:
// pkg-config's -D_FILE_OFFSET_BITS=64 makes SwiftPM warn), so include by full path.
#include <hiredis/hiredis.h>
#include <hiredis/read.h>
#endif
