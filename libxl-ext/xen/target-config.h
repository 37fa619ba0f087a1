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
 *     from devs[i] (phy, raw, no hotplug script); a name that no disk of
 *     the configuration has is INCMIG_EPROTO;
 *   - every other disk (CD-ROMs aside) is on shared storage and left as it
 *     is, if the receiver says so (its vdev is one of shared[], from
 *     --disk NAME=shared) or its type does (incmig__xen_disk_network);
 *     any other is INCMIG_EINVAL, naming it: the source passed through a
 *     disk this host may not see as the source did;
 *   - the domain is named NAME--incoming (xl's convention; renamed NAME
 *     at GO) and its domid is left for Xen to choose (the source's may be
 *     taken here: a localhost migration).
 * *name_r: NAME (cap bytes).  0 or INCMIG_EPROTO / INCMIG_ENOMEM with msg;
 * c is then partly rewritten: dispose of it. */
int incmig__xen_config_rewrite(libxl_domain_config *c, int n,
                               const char *const names[],
                               const char *const devs[], int nshared,
                               const char *const shared[], char *name_r,
                               size_t name_cap, char *msg, size_t cap);

/* After the rewrite: each disk of names[] runs the hotplug script
 * `script` (block-incmig, when this host has it: the bitmap is then saved
 * when the domain shuts down here; spec "Xen: blkback is the tracker").
 * 0 or INCMIG_ENOMEM. */
int incmig__xen_config_hook(libxl_domain_config *c, int n,
                            const char *const names[], const char *script);

/* Why disk dk is on shared storage by its type alone, or NULL: a hotplug
 * script other than "block" (iscsi, rbd, drbd...: the script attaches it
 * on each host), or a target that is not a local path (a qdisk on
 * rbd:..., iscsi://..., nbd:...).  The source does not migrate such a
 * disk; the destination accepts it, untouched, in the configuration. */
const char *incmig__xen_disk_network(const libxl_device_disk *dk);

#endif
