/* xen/xen.h: the Xen backends (built with libxen): the source domain
 * backend (xen/domain.c) and what it shares with the destination's Xen
 * target (xen/target.c): the framing of the Xen state stream, which the
 * spec describes ("Xen state stream"). */
#ifndef INCMIG_XEN_H
#define INCMIG_XEN_H

#include <stddef.h>

#include <libxl.h>
#include <xentoollog.h>

#include "../incmig-internal.h"

#define INCMIG_XEN_STATE_VERSION 1u
#define INCMIG_XEN_CONFIG_MAX (1u << 20)   /* the JSON configuration */

/* DOMAIN: a running domain's name or id. */
int incmig__xen_domain_open(struct incmig__domain **d_r, const char *spec,
                            const struct incmig__domain_args *a);

/* A libxl context reaping only its own children, and its logger
 * (libxl's messages at warnings, debug with --debug); 0, or
 * INCMIG_ENOTSUP/ENOMEM with msg saying why (xen/ctx.c). */
int incmig__xen_ctx_open(libxl_ctx **ctx_r,
                         xentoollog_logger_stdiostream **lg_r,
                         char *msg, size_t cap);
void incmig__xen_ctx_close(libxl_ctx *ctx, xentoollog_logger_stdiostream *lg);

#endif
