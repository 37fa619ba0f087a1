/* security.c: serve's share of the options that say who may connect
 * (the library parses them: incmig_security_option). */
#include "config.h"

#include <stdio.h>

#include "incmig.h"
#include "xl-incmig.h"

static struct incmig_security sec;

int xl_security_opt(const char *cmd, int c, const char *arg)
{
    char name[64];
    snprintf(name, sizeof name, "xl-incmig %s", cmd);
    return incmig_security_option(&sec, name, c, arg);
}

int xl_security_apply(const char *cmd)
{
    if (incmig_security_setup(&sec)) {
        fprintf(stderr, "xl-incmig %s: cannot set up TLS or sockets as "
                "asked (see the error above)\n", cmd);
        return -1;
    }
    return 0;
}
