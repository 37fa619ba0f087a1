/* cmd-receive.c: `xl-incmig migrate-receive`, the destination side.
 * Started by `migrate` through ssh (stream on stdin/stdout), or by hand
 * with --listen for plain TCP.  The whole command lives in libincmig
 * (incmig_receive_main), shared with `xl migrate-receive
 * --incremental-storage`. */
#include "config.h"

#include <unistd.h>

#include "incmig.h"
#include "xl-incmig.h"

int cmd_receive(int argc, char **argv)
{
    return incmig_receive_main("xl-incmig migrate-receive", argc, argv,
                               STDIN_FILENO, STDOUT_FILENO);
}
