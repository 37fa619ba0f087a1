/* xen/target-config.c: the Xen state stream's header and the rewrite of
 * a migrating domain's configuration on the destination (declared in
 * xen/target-config.h; the Xen target, xen/target.c, calls both; the unit
 * test tests/unit/test-xen-target.c drives them without Xen).
 *
 * The header, as the source writes it (xen/domain.c):
 *
 *   offset  size  field
 *   0       8     "INCMIGXC"
 *   8       4     version, big-endian: INCMIG_XEN_STATE_VERSION (1)
 *   12      4     N, big-endian: bytes of JSON that follow, 1 .. 1 MiB
 *   16      N     libxl_domain_config_to_json of the domain's configuration
 *   16+N    ...   libxl's migration stream v2, to its END record
 *
 * N is bounded before anything is allocated for it.
 */
#include "config.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../incmig-internal.h"
#include "target-config.h"
#include "xen.h"

int incmig__xen_state_header(const uint8_t h[INCMIG_XEN_STATE_HDR],
                             uint32_t *len_r, char *msg, size_t cap)
{
    uint32_t v = (uint32_t)h[8] << 24 | (uint32_t)h[9] << 16 |
                 (uint32_t)h[10] << 8 | h[11];
    uint32_t n = (uint32_t)h[12] << 24 | (uint32_t)h[13] << 16 |
                 (uint32_t)h[14] << 8 | h[15];

    if (memcmp(h, INCMIG_XEN_STATE_MAGIC, 8)) {
        snprintf(msg, cap, "the domain's state stream does not start with "
                 "\"%s\": not a Xen domain's state from incmig",
                 INCMIG_XEN_STATE_MAGIC);
        return INCMIG_EPROTO;
    }
    if (v != INCMIG_XEN_STATE_VERSION) {
        snprintf(msg, cap, "the domain's state stream is version %u; this "
                 "receiver reads version %u", v, INCMIG_XEN_STATE_VERSION);
        return INCMIG_EPROTO;
    }
    if (n == 0 || n > INCMIG_XEN_CONFIG_MAX) {
        snprintf(msg, cap, "the domain's configuration is %u bytes long "
                 "(1 to %u accepted)", n, INCMIG_XEN_CONFIG_MAX);
        return INCMIG_EPROTO;
    }
    *len_r = n;
    return 0;
}

static int set_str(char **field, const char *v)
{
    char *s = strdup(v);
    if (!s)
        return INCMIG_ENOMEM;
    free(*field);
    *field = s;
    return 0;
}

const char *incmig__xen_disk_network(const libxl_device_disk *dk)
{
    const char *script = dk->script;

    if (script && *script) {
        const char *base = strrchr(script, '/');
        base = base ? base + 1 : script;
        /* block-incmig is block with the bitmap kept across restarts */
        if (strcmp(base, "block") && strcmp(base, "block-incmig"))
            return "its hotplug script attaches it on each host";
    }
    if (!dk->pdev_path || dk->pdev_path[0] != '/')
        return "its target is not a local path";
    return NULL;
}

static bool named(const char *vdev, int n, const char *const names[])
{
    for (int k = 0; k < n; k++)
        if (vdev && !strcmp(vdev, names[k]))
            return true;
    return false;
}

int incmig__xen_config_rewrite(libxl_domain_config *c, int n,
                               const char *const names[],
                               const char *const devs[], int nshared,
                               const char *const shared[], char *name_r,
                               size_t name_cap, char *msg, size_t cap)
{
    char inc[INCMIG_NAME_MAX + 32];
    int rc;

    if (!c->c_info.name || !*c->c_info.name ||
        strlen(c->c_info.name) > INCMIG_NAME_MAX) {
        snprintf(msg, cap, "the domain's configuration has no usable name");
        return INCMIG_EPROTO;
    }
    for (int i = 0; i < c->num_disks; i++)
        for (int j = 0; j < i; j++)
            if (c->disks[i].vdev && c->disks[j].vdev &&
                !strcmp(c->disks[i].vdev, c->disks[j].vdev)) {
                snprintf(msg, cap, "domain %s: its configuration has two "
                         "disks %s", c->c_info.name, c->disks[i].vdev);
                return INCMIG_EPROTO;
            }
    for (int i = 0; i < c->num_disks; i++) {
        const libxl_device_disk *dk = &c->disks[i];
        if (dk->is_cdrom || named(dk->vdev, n, names) ||
            named(dk->vdev, nshared, shared) || incmig__xen_disk_network(dk))
            continue;
        snprintf(msg, cap, "domain %s: disk %s (%s) is not migrated (the "
                 "source passes it through as shared storage) and this "
                 "receiver does not map it as shared: if %s is the same "
                 "storage here, give --disk %s=shared; refused before the "
                 "domain was restored", c->c_info.name,
                 dk->vdev ? dk->vdev : "?",
                 dk->pdev_path ? dk->pdev_path : "no path",
                 dk->pdev_path ? dk->pdev_path : "it",
                 dk->vdev ? dk->vdev : "NAME");
        return INCMIG_EINVAL;
    }
    for (int k = 0; k < n; k++) {
        libxl_device_disk *dk = NULL;
        for (int i = 0; i < c->num_disks && !dk; i++)
            if (c->disks[i].vdev && !strcmp(c->disks[i].vdev, names[k]) &&
                !c->disks[i].is_cdrom)
                dk = &c->disks[i];
        if (!dk) {
            snprintf(msg, cap, "domain %s: disk %s of the migration is not a "
                     "disk of the domain's configuration", c->c_info.name,
                     names[k]);
            return INCMIG_EPROTO;
        }
        rc = set_str(&dk->pdev_path, devs[k]);
        if (rc)
            goto nomem;
        dk->backend = LIBXL_DISK_BACKEND_PHY;
        dk->format = LIBXL_DISK_FORMAT_RAW;
        free(dk->script);
        dk->script = NULL;
    }
    snprintf(name_r, name_cap, "%s", c->c_info.name);
    snprintf(inc, sizeof inc, "%s--incoming", c->c_info.name);
    rc = set_str(&c->c_info.name, inc);
    if (rc)
        goto nomem;
    c->c_info.domid = INVALID_DOMID;
    return 0;
nomem:
    snprintf(msg, cap, "out of memory");
    return INCMIG_ENOMEM;
}

int incmig__xen_config_hook(libxl_domain_config *c, int n,
                            const char *const names[], const char *script)
{
    for (int k = 0; k < n; k++)
        for (int i = 0; i < c->num_disks; i++) {
            libxl_device_disk *dk = &c->disks[i];
            if (!dk->vdev || strcmp(dk->vdev, names[k]) || dk->is_cdrom)
                continue;
            if (set_str(&dk->script, script))
                return INCMIG_ENOMEM;
        }
    return 0;
}
