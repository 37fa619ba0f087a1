/* cmd-set-bandwidth.c: `xl-incmig migrate-set-bandwidth SOCKET RATE`,
 * the link cap of a running migration, through its control socket
 * (migrate --control SOCKET).  RATE: bytes/s (e.g. 50M), or max for no
 * cap.  Prints the new cap and the bytes the migration has sent so far.
 *
 * Entry point: cmd_set_bandwidth().
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "incmig.h"
#include "xl-incmig.h"

int cmd_set_bandwidth(int argc, char **argv)
{
    uint64_t bw = 0, sent = 0;
    int rc;

    if (argc == 2 && !strcmp(argv[1], "--help")) {
        printf("usage: xl-incmig migrate-set-bandwidth SOCKET RATE\n\n"
               "Change the link cap of the migration started with\n"
               "`xl-incmig migrate --control SOCKET`: RATE in bytes/s (e.g.\n"
               "50M, at least 4K), or max for no cap.  It applies to the\n"
               "next record the migration sends.\n");
        return 0;
    }
    if (argc != 3) {
        xl_usage_error("migrate-set-bandwidth", "expected SOCKET RATE");
        return 2;
    }
    if (strcmp(argv[2], "max") &&
        (incmig_parse_size(argv[2], &bw) || bw < 4096)) {
        xl_usage_error("migrate-set-bandwidth", "bad RATE '%s' (bytes/s, "
                       "e.g. 100M, at least 4K, or max)", argv[2]);
        return 2;
    }
    rc = incmig_migrate_set_bandwidth(argv[1], bw, &sent);
    if (rc)
        return 1;
    if (bw)
        printf("bandwidth cap %" PRIu64 " bytes/s, %" PRIu64 " bytes sent\n",
               bw, sent);
    else
        printf("no bandwidth cap, %" PRIu64 " bytes sent\n", sent);
    return 0;
}
