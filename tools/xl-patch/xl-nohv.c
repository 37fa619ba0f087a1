/* xl-nohv.c: the patched xl's own code, run without a hypervisor, for the
 * checks of `make xl-patched` and tests/integration/xl-patched.sh.
 *
 * xl's main() allocates a libxl context before anything else, which needs
 * Xen (even for `xl help`).  This main replaces it (xl.o is linked with its
 * main renamed) and dispatches through xl's own command table to:
 *   help [CMD]                      xl's help(), from the patched table
 *   migrate --incremental-storage ...
 *   migrate-receive --incremental-storage ...
 *                                   xl's main_migrate/main_migrate_receive,
 *                                   which the patch hands to libincmig
 * The rest of xl needs its libxl context and is refused here.
 */
#include <stdio.h>
#include <string.h>

#include <libxl.h>

#include "xl.h"

static int has_switch(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--incremental-storage"))
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    const struct cmd_spec *c;

    if (argc >= 2 && !strcmp(argv[1], "help")) {
        help(argc > 2 ? argv[2] : NULL);
        return 0;
    }
    if (argc < 2 || (strcmp(argv[1], "migrate") &&
                     strcmp(argv[1], "migrate-receive")) ||
        !has_switch(argc - 1, argv + 1)) {
        fprintf(stderr, "usage: xl-nohv help [COMMAND]\n"
                "       xl-nohv migrate|migrate-receive --incremental-storage "
                "[ARGS]\n(xl's code without Xen: nothing else runs here)\n");
        return 2;
    }
    c = cmdtable_lookup(argv[1]);
    if (!c) {
        fprintf(stderr, "xl-nohv: xl's table has no %s\n", argv[1]);
        return 2;
    }
    return c->cmd_impl(argc - 1, argv + 1);
}
