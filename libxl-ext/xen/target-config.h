/* xen/target-config.h: the pure parts of the Xen target (xen/target.c),
 * apart so that the unit test reaches them without Xen: the header of the
 * Xen state stream, and the rewrite of the domain's configuration for this
 * host (xen/target-config.c). */
#ifndef INCMIG_XEN_TARGET_CONFIG_H
#define INCMIG_XEN_TARGET_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include <libxl.h>

#define INCMIG_XEN_STATE_MAGIC "INCMIGXC"
#define INCMIG_XEN_STATE_HDR 16

/* "INCMIGXC", u32 version, u32 N (1 .. INCMIG_XEN_CONFIG_MAX, xen/xen.h):
 * *len_r = N, or INCMIG_EPROTO with msg (a version this build does not
 * read included). */
int incmig__xen_state_header(const uint8_t h[INCMIG_XEN_STATE_HDR],
                             uint32_t *len_r, char *msg, size_t cap);

/* The domain's configuration as the source sent it, made this host's:
 *   - each disk incmig migrates (its vdev is one of names[]) is attached
 *     from devs[i] (phy, raw, no hotplug script); other disks (shared
 *     storage) are left as they are; a name that no disk of the
 *     configuration has is INCMIG_EPROTO;
 *   - the domain is named NAME--incoming (xl's convention; renamed NAME
 *     at GO) and its domid is left for Xen to choose (the source's may be
 *     taken here: a localhost migration).
 * *name_r: NAME (cap bytes).  0 or INCMIG_EPROTO / INCMIG_ENOMEM with msg;
 * c is then partly rewritten: dispose of it. */
int incmig__xen_config_rewrite(libxl_domain_config *c, int n,
                               const char *const names[],
                               const char *const devs[], char *name_r,
                               size_t name_cap, char *msg, size_t cap);

/* After the rewrite: each disk of names[] runs the hotplug script
 * `script` (block-incmig, when this host has it: the bitmap is then saved
 * when the domain shuts down here; spec "Xen: blkback is the tracker").
 * 0 or INCMIG_ENOMEM. */
int incmig__xen_config_hook(libxl_domain_config *c, int n,
                            const char *const names[], const char *script);

#endif
