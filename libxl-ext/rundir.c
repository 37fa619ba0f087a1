/* rundir.c: where incmig keeps its runtime files (sockets, state files):
 * /run/incmig for root, $XDG_RUNTIME_DIR/incmig otherwise (refused when
 * that is unset: never a guessable path in /tmp).  Created 0700. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "incmig-internal.h"

int incmig__runtime_dir(char *buf, size_t cap)
{
    const char *base = geteuid() == 0 ? "/run" : getenv("XDG_RUNTIME_DIR");

    if (!base || base[0] != '/') {
        ERR("no runtime directory: XDG_RUNTIME_DIR is not set (or not an "
            "absolute path) for this non-root user");
        return INCMIG_EINVAL;
    }
    if ((size_t)snprintf(buf, cap, "%s/incmig", base) >= cap) {
        ERR("runtime directory %s/incmig: path too long", base);
        return INCMIG_EINVAL;
    }
    if (mkdir(buf, 0700) < 0 && errno != EEXIST) {
        LOGE("cannot create the runtime directory %s", buf);
        return INCMIG_EIO;
    }
    return 0;
}
