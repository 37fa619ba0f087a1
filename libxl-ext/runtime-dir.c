/* runtime-dir.c: where incmig keeps its runtime files (sockets).
 *
 * incmig__runtime_dir: /run/incmig for root, $XDG_RUNTIME_DIR/incmig for
 * others (the session's private tmpfs), and as a last resort
 * /tmp/incmig-UID as tmux does: created 0700 if missing, and refused
 * unless it is a real directory (not a symlink) of ours that nobody else
 * may write to, so a path others can guess gives them nothing.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "incmig-internal.h"

int incmig__runtime_dir(char *buf, size_t cap)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    struct stat st;
    int n;

    if (geteuid() == 0)
        n = snprintf(buf, cap, "/run/incmig");
    else if (xdg && xdg[0] == '/')
        n = snprintf(buf, cap, "%s/incmig", xdg);
    else
        n = snprintf(buf, cap, "/tmp/incmig-%ld", (long)geteuid());
    if (n < 0 || (size_t)n >= cap) {
        ERR("runtime directory path too long");
        return INCMIG_EINVAL;
    }
    if (mkdir(buf, 0700) < 0 && errno != EEXIST) {
        LOGE("cannot create the runtime directory %s", buf);
        return INCMIG_EIO;
    }
    if (lstat(buf, &st) < 0 || !S_ISDIR(st.st_mode) ||
        st.st_uid != geteuid() || (st.st_mode & 022)) {
        ERR("%s is not a directory of ours that only we may write to: "
            "refusing to keep sockets there", buf);
        return INCMIG_EINVAL;
    }
    return 0;
}
