/* backends.c: the table of source domain backends.
 *
 * The engine (migrate.c) opens a domain through incmig__domain_open and
 * never names a backend.  The DOMAIN argument's form selects the entry:
 *
 *   form                 backend      file
 *   sim:CONTROL_SOCKET   simulated    sim/domain.c (an `xl-incmig serve`)
 *   NAME or domid        Xen          not in this build yet: a clear error
 *
 * A Xen backend (libxl + blkback's write bitmap) is added as one more
 * entry, built when libxen-dev is present.
 */
#include "config.h"

#include <string.h>

#include "incmig-internal.h"

struct backend {
    const char *prefix;        /* "" matches every name */
    const char *what;
    int (*open)(struct incmig__domain **d_r, const char *arg);
};

static int xen_missing(struct incmig__domain **d_r, const char *name)
{
    (void)d_r;
    ERR("domain '%s': Xen domains are not supported by this build yet; "
        "use sim:CONTROL_SOCKET for a guest served by `xl-incmig serve`",
        name);
    return INCMIG_ENOTSUP;
}

static const struct backend backends[] = {
    { "sim:", "simulated domain", incmig__sim_domain_open },
    { "", "Xen domain", xen_missing },
};

int incmig__domain_open(const char *spec, struct incmig__domain **d_r)
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
        int rc = b->open(d_r, spec + n);
        if (!rc && (*d_r)->ndisks < 1) {
            ERR("domain '%s' has no disk to migrate", spec);
            (*d_r)->ops->close(*d_r);
            *d_r = NULL;
            rc = INCMIG_EINVAL;
        }
        return rc;
    }
    return INCMIG_EINVAL;
}
