/* xen/lvm.h: LVM logical volumes as the Xen target's volumes
 * (--disk NAME=lvm:VG/LV), through lvs(8), lvcreate(8) and lvremove(8)
 * (xen/lvm.c). */
#ifndef INCMIG_XEN_LVM_H
#define INCMIG_XEN_LVM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One logical volume this migration creates.  uuid is LVM's own
 * identifier of the LV created: remove takes away that LV and no other,
 * even if another of the same name took its place. */
struct incmig__lv {
    char vg[128], lv[128];
    char uuid[64];
    char dev[256];            /* /dev/mapper/VG-LV */
    bool created;
};

/* Before anything is created: the LVM tools are installed, VG exists, LV
 * does not.  0, or INCMIG_ENOTSUP / INCMIG_EINVAL with msg. */
int incmig__lvm_check(const char *vg, const char *lv, char *msg, size_t cap);
/* lvcreate VG/LV of at least size bytes (LVM rounds up to its extent
 * size), then its uuid and device.  INCMIG_ENOSPC when VG has too little
 * free space, INCMIG_EIO otherwise, with msg. */
int incmig__lvm_create(struct incmig__lv *l, const char *vg, const char *lv,
                       uint64_t size, char *msg, size_t cap);
/* lvremove of the LV created, only while VG/LV is still it (same uuid);
 * nothing when none was created.  Logs what it did or why not. */
void incmig__lvm_remove(struct incmig__lv *l);

#endif
