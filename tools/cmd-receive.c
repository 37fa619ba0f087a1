/* cmd-receive.c: `xl-incmig migrate-receive`, the destination side.
 * Started by `migrate` through ssh (stream on stdin/stdout), or by hand
 * with --listen for plain TCP. */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "incmig.h"
#include "xl-incmig.h"

static void help(void)
{
    printf("usage: xl-incmig migrate-receive [options]\n"
           "Receive a migration: write the disk to IMAGE and serve the guest\n"
           "from it over NBD from the moment the source says GO.\n\n"
           "  --image PATH       destination image (created; an existing file\n"
           "                     of another size is refused without --force)\n"
           "  --nbd URI          where the guest is served: unix:PATH or\n"
           "                     tcp:HOST:PORT (required)\n"
           "  --listen HOST:PORT accept the source over plain TCP instead of\n"
           "                     stdin/stdout (trusted networks only)\n"
           "  --exit-when-done   exit once the migration is complete and the\n"
           "                     guest has disconnected\n"
           "  --reconnect SECS   how long to wait for a lost source during\n"
           "                     PULL (default 600)\n"
           "  --force            overwrite an existing image of another size\n");
}

int cmd_receive(int argc, char **argv)
{
    static const struct option opts[] = {
        { "image", required_argument, NULL, 'i' },
        { "nbd", required_argument, NULL, 'n' },
        { "listen", required_argument, NULL, 'l' },
        { "exit-when-done", no_argument, NULL, 'x' },
        { "reconnect", required_argument, NULL, 'r' },
        { "force", no_argument, NULL, 'f' },
        { "help", no_argument, NULL, 'h' },
        { 0 },
    };
    struct incmig_receive_opts o = {0};
    int c;

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'i': o.image = optarg; break;
        case 'n': o.nbd_uri = optarg; break;
        case 'l': o.listen = optarg; break;
        case 'x': o.exit_when_done = 1; break;
        case 'f': o.force = 1; break;
        case 'r':
            o.reconnect_s = atoi(optarg);
            if (o.reconnect_s < 1) {
                xl_usage_error("migrate-receive", "--reconnect must be >= 1");
                return 2;
            }
            break;
        case 'h': help(); return 0;
        default: return 2;
        }
    }
    if (optind != argc || !o.image || !o.nbd_uri) {
        xl_usage_error("migrate-receive", "need --image PATH and --nbd URI");
        return 2;
    }
    int rc = incmig_receive(&o, 0, 1);
    if (rc)
        fprintf(stderr, "xl-incmig migrate-receive: failed: %s\n",
                incmig_strerror(rc));
    return rc ? 1 : 0;
}
