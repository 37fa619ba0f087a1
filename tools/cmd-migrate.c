/* cmd-migrate.c: `xl-incmig migrate DOMAIN HOST`, the toolstack side.
 * The whole command lives in libincmig (incmig_migrate_main), so that
 * `xl migrate --incremental-storage` runs the very same code; here it is
 * only given its name and the receiver it starts over ssh. */
#include "config.h"

#include "incmig.h"
#include "xl-incmig.h"

int cmd_migrate(int argc, char **argv)
{
    return incmig_migrate_main("xl-incmig migrate",
                               "xl-incmig migrate-receive", argc, argv);
}
