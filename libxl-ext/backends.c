/* backends.c: the table of source domain backends.
 *
 * The engine (migrate.c) opens a domain through incmig__domain_open and
 * never names a backend.  The DOMAIN argument's form selects the entry:
 *
 *   form                 backend      file
 *   sim:CONTROL_SOCKET   simulated    sim/domain.c (an `xl-incmig serve`)
 *   NAME or domid        Xen          xen/domain.c (libxl + blkback), built
 *                                     with libxen-dev; else a clear error
 */
#include "config.h"

#include <string.h>

#include "incmig-internal.h"
#ifdef HAVE_XEN
#include "xen/xen.h"
#endif

struct backend {
    const char *prefix;        /* "" matches every name */
    const char *what;
    int (*open)(struct incmig__domain **d_r, const char *arg,
                const struct incmig__domain_args *a);
};

#ifndef HAVE_XEN
static int xen_missing(struct incmig__domain **d_r, const char *name,
                       const struct incmig__domain_args *a)
{
    (void)d_r;
    (void)a;
    ERR("domain '%s': this xl-incmig was built without Xen (libxen-dev); "
        "only sim:CONTROL_SOCKET (a guest served by `xl-incmig serve`) can "
        "be migrated", name);
    return INCMIG_ENOTSUP;
}
#endif

static int sim_open(struct incmig__domain **d_r, const char *ctl,
                    const struct incmig__domain_args *a)
{
    /* --debug is only more messages for it */
    if (a->nshared || a->config_file) {
        ERR("domain sim:%s: --shared-disk and -C are for Xen domains; a "
            "simulated domain has neither shared disks nor a configuration "
            "file", ctl);
        return INCMIG_EINVAL;
    }
    return incmig__sim_domain_open(d_r, ctl);
}

static const struct backend backends[] = {
    { "sim:", "simulated domain", sim_open },
#ifdef HAVE_XEN
    { "", "Xen domain", incmig__xen_domain_open },
#else
    { "", "Xen domain", xen_missing },
#endif
};

int incmig__domain_open(const char *spec, const struct incmig__domain_args *a,
                        struct incmig__domain **d_r)
{
    if (!spec || !*spec) {
        ERR("no domain given");
        return INCMIG_EINVAL;
    }
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++) {
        const struct backend *b = &backends[i];
        size_t n = strlen(b->prefix);
        if (strncmp(spec, b->prefix, n))
            continue;
        if (!spec[n]) {
            ERR("domain '%s': a %s needs a name after '%s'", spec, b->what,
                b->prefix);
            return INCMIG_EINVAL;
        }
        int rc = b->open(d_r, spec + n, a);
        if (!rc && (*d_r)->ndisks < 1) {
            ERR("domain '%s' has no disk to migrate%s", spec,
                b->open != sim_open ? " (its disks are on shared storage or "
                "CD-ROMs: plain `xl migrate` moves it)" : "");
            (*d_r)->ops->close(*d_r);
            *d_r = NULL;
            rc = INCMIG_EINVAL;
        }
        return rc;
    }
    return INCMIG_EINVAL;
}
