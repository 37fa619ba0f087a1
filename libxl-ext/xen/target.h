/* xen/target.h: the Xen target, the destination's backend for a Xen
 * domain (xen/target.c); an entry of the table of targets (volume.c).
 * No Xen header here: the table includes it. */
#ifndef INCMIG_XEN_TARGET_H
#define INCMIG_XEN_TARGET_H

#include "../incmig-internal.h"

int incmig__xen_target_open(struct incmig__target **t_r, const char *domain,
                            int ndisks, const struct incmig__target_disk *disks,
                            int *bad_r, char *msg, size_t cap);

#endif
