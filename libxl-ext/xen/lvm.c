/* xen/lvm.c: LVM logical volumes as the Xen target's volumes.
 *
 * `migrate-receive --target xen --disk NAME=lvm:VG/LV` maps a disk to a
 * logical volume that this migration creates in the existing volume group
 * VG (volume.c parses and checks the names).  The rules are those of a
 * volume file (volume.c): never one this migration did not create, and
 * on a failure before GO only the one it created is removed.
 *
 *   step        what runs                               refusal / outcome
 *   check       (open, before anything is created)
 *               lvs, lvcreate, lvremove installed       ENOTSUP, naming lvm2
 *               vgs VG                                  "no volume group VG"
 *               lvs VG/LV fails                         "VG/LV already exists"
 *   create      (prepare) lvcreate --name LV --size     "insufficient free
 *               SECTORSs VG; its uuid and dm path        space" -> ENOSPC
 *               from lvs
 *   remove      (abort) lvs VG/LV has the uuid          otherwise left alone
 *               created -> lvremove -f --select          and said so
 *               lv_uuid=UUID VG
 *
 * lvcreate fails if the LV exists, so a volume that appeared between check
 * and create is never taken over; the uuid makes remove exact.  The tools
 * run through incmig__dm_run (xen/dm.c: posix_spawn, output captured).
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../incmig-internal.h"
#include "dm.h"
#include "lvm.h"

int incmig__lvm_check(const char *vg, const char *lv, char *msg, size_t cap)
{
    static const char *const tools[] = { "lvs", "vgs", "lvcreate",
                                         "lvremove" };
    char name[300], m2[INCMIG_MSG_MAX];

    for (size_t i = 0; i < sizeof tools / sizeof tools[0]; i++)
        if (!incmig__dm_have(tools[i])) {
            snprintf(msg, cap, "lvm:%s/%s needs %s (package lvm2), not "
                     "installed here: refused, nothing created", vg, lv,
                     tools[i]);
            return INCMIG_ENOTSUP;
        }
    const char *vgs[] = { "vgs", "--noheadings", "-o", "vg_name", vg, NULL };
    if (incmig__dm_run(vgs, NULL, 0, m2, sizeof m2)) {
        snprintf(msg, cap, "lvm:%s/%s: no volume group %s here (%s): "
                 "refused, nothing created", vg, lv, vg, m2);
        return INCMIG_EINVAL;
    }
    snprintf(name, sizeof name, "%s/%s", vg, lv);
    const char *lvs[] = { "lvs", "--noheadings", "-o", "lv_name", name, NULL };
    if (incmig__dm_run(lvs, NULL, 0, m2, sizeof m2) == 0) {
        snprintf(msg, cap, "lvm:%s: the logical volume already exists; the "
                 "receiver creates its volumes and never overwrites one it "
                 "did not create: refused, nothing touched (remove it or map "
                 "the disk elsewhere)", name);
        return INCMIG_EINVAL;
    }
    return 0;
}

/* lvs' uuid and dm path of VG/LV: 0, or INCMIG_EIO with msg. */
static int lv_info(const char *name, char uuid[64], char dev[256], char *msg,
                   size_t cap)
{
    const char *argv[] = { "lvs", "--noheadings", "-o", "lv_uuid,lv_dm_path",
                           name, NULL };
    char out[512];
    int rc = incmig__dm_run(argv, out, sizeof out, msg, cap);

    if (rc)
        return rc;
    if (sscanf(out, " %63s %255s", uuid, dev) != 2 ||
        strncmp(dev, "/dev/mapper/", 12)) {
        snprintf(msg, cap, "lvs %s: unexpected answer '%.200s'", name, out);
        return INCMIG_EIO;
    }
    return 0;
}

int incmig__lvm_create(struct incmig__lv *l, const char *vg, const char *lv,
                       uint64_t size, char *msg, size_t cap)
{
    char name[300], sectors[32], m2[INCMIG_MSG_MAX];
    struct stat sb;
    int rc;

    memset(l, 0, sizeof *l);
    snprintf(l->vg, sizeof l->vg, "%s", vg);
    snprintf(l->lv, sizeof l->lv, "%s", lv);
    snprintf(name, sizeof name, "%s/%s", vg, lv);
    snprintf(sectors, sizeof sectors, "%" PRIu64 "s", (size + 511) / 512);
    const char *argv[] = { "lvcreate", "--yes", "--activate", "y", "--name",
                           lv, "--size", sectors, vg, NULL };
    rc = incmig__dm_run(argv, NULL, 0, m2, sizeof m2);
    if (rc) {
        bool nospace = strstr(m2, "insufficient free space") ||
                       strstr(m2, "Insufficient free space");
        snprintf(msg, cap, "cannot create lvm:%s of %" PRIu64 " bytes%s: %s",
                 name, size, nospace ? " (no space left in the volume group)"
                                     : "", m2);
        return nospace ? INCMIG_ENOSPC : INCMIG_EIO;
    }
    rc = lv_info(name, l->uuid, l->dev, m2, sizeof m2);
    if (rc) {
        /* made a moment ago, by name: ours, though its uuid is unknown */
        const char *rm[] = { "lvremove", "-f", name, NULL };
        incmig__dm_run(rm, NULL, 0, m2, sizeof m2);
        snprintf(msg, cap, "lvm:%s was created but cannot be found (%s); "
                 "removed", name, m2);
        return INCMIG_EIO;
    }
    l->created = true;
    if (stat(l->dev, &sb) < 0) {
        /* no udev to make the node: dmsetup makes it */
        const char *mk[] = { "dmsetup", "mknodes", l->dev + 12, NULL };
        incmig__dm_run(mk, NULL, 0, m2, sizeof m2);
    }
    if (stat(l->dev, &sb) < 0 || !S_ISBLK(sb.st_mode)) {
        snprintf(msg, cap, "lvm:%s was created but %s is not a block device",
                 name, l->dev);
        return INCMIG_EIO;
    }
    INFO("lvm:%s created (%s, uuid %s)", name, l->dev, l->uuid);
    return 0;
}

void incmig__lvm_remove(struct incmig__lv *l)
{
    char name[300], uuid[64], dev[256], msg[INCMIG_MSG_MAX], sel[96];

    if (!l->created)
        return;
    l->created = false;
    snprintf(name, sizeof name, "%s/%s", l->vg, l->lv);
    if (lv_info(name, uuid, dev, msg, sizeof msg) || strcmp(uuid, l->uuid)) {
        ERR("partial copy lvm:%s not removed: it is no longer the logical "
            "volume this migration created (uuid %s)", name, l->uuid);
        return;
    }
    snprintf(sel, sizeof sel, "lv_uuid=%s", l->uuid);
    const char *argv[] = { "lvremove", "-f", "--select", sel, l->vg, NULL };
    if (incmig__dm_run(argv, NULL, 0, msg, sizeof msg))
        ERR("partial copy lvm:%s not removed: %s; remove it by hand "
            "(lvremove %s)", name, msg, name);
    else
        INFO("partial copy lvm:%s removed; the guest stays on the source",
             name);
}
