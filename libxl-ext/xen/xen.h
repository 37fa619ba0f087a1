/* xen/xen.h: the Xen backends (built with libxen): the source domain
 * backend (xen/domain.c) and what it shares with the destination's Xen
 * target (xen/target.c): the framing of the Xen state stream, which the
 * spec describes ("Xen state stream"). */
#ifndef INCMIG_XEN_H
#define INCMIG_XEN_H

#include "../incmig-internal.h"

#define INCMIG_XEN_STATE_VERSION 1u
#define INCMIG_XEN_CONFIG_MAX (1u << 20)   /* the JSON configuration */

/* DOMAIN: a running domain's name or id. */
int incmig__xen_domain_open(struct incmig__domain **d_r, const char *spec);

#endif
