/* xen/ctx.c: the one way incmig opens libxl, for the source domain backend
 * (xen/domain.c) and the destination target (xen/target.c).
 *
 * libxl is told to reap only its own children
 * (libxl_sigchld_owner_libxl_always_selective_reap): incmig spawns ssh,
 * dmsetup and losetup and waits for each by pid, and libxl's default
 * (reap every child while it has one of its own) could take their exit
 * status first. */
#include "config.h"

#include <stdio.h>
#include <unistd.h>

#include "../incmig-internal.h"
#include "xen.h"

static const libxl_childproc_hooks chld_hooks = {
    .chldowner = libxl_sigchld_owner_libxl_always_selective_reap,
};

int incmig__xen_ctx_open(libxl_ctx **ctx_r, xentoollog_logger_stdiostream **lg_r,
                         char *msg, size_t cap)
{
    /* Without Xen, libxl's own complaints would bury the one that helps. */
    bool xen = access("/proc/xen/capabilities", R_OK) == 0;

    *ctx_r = NULL;
    *lg_r = NULL;
    if (!xen) {
        snprintf(msg, cap, "not dom0 of a running Xen host (no "
                 "/proc/xen/capabilities here)");
        return INCMIG_ENOTSUP;
    }
    *lg_r = xtl_createlogger_stdiostream(stderr, incmig__verbosity > 1
                                                 ? XTL_DEBUG : XTL_WARN, 0);
    if (!*lg_r) {
        snprintf(msg, cap, "out of memory");
        return INCMIG_ENOMEM;
    }
    if (libxl_ctx_alloc(ctx_r, LIBXL_VERSION, 0, (xentoollog_logger *)*lg_r)) {
        snprintf(msg, cap, "libxl cannot reach Xen (xencommons stopped?)");
        xtl_logger_destroy((xentoollog_logger *)*lg_r);
        *lg_r = NULL;
        *ctx_r = NULL;
        return INCMIG_ENOTSUP;
    }
    libxl_childproc_setmode(*ctx_r, &chld_hooks, NULL);
    return 0;
}

void incmig__xen_ctx_close(libxl_ctx *ctx, xentoollog_logger_stdiostream *lg)
{
    if (ctx)
        libxl_ctx_free(ctx);
    if (lg)
        xtl_logger_destroy((xentoollog_logger *)lg);
}
