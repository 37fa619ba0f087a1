/* cmd-serve.c: `xl-incmig serve`, the simulated guest's source disk. */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "incmig.h"
#include "xl-incmig.h"

static void help(void)
{
    printf("usage: xl-incmig serve [options] IMAGE\n"
           "Serve IMAGE over NBD as a guest's disk, tracking every write, until\n"
           "a migration releases it or a signal stops it.\n\n"
           "  --nbd URI          unix:PATH or tcp:HOST:PORT (required)\n"
           "  --control PATH     control socket for `migrate sim:PATH`\n"
           "                     (default IMAGE.ctl)\n"
           "  --block-size SIZE  tracking granularity, 4K..1M (default 4K)\n"
           "  --requests N       NBD requests in flight (default 8 workers)\n");
}

int cmd_serve(int argc, char **argv)
{
    static const struct option opts[] = {
        { "nbd", required_argument, NULL, 'n' },
        { "control", required_argument, NULL, 'c' },
        { "block-size", required_argument, NULL, 'b' },
        { "requests", required_argument, NULL, 'r' },
        { "help", no_argument, NULL, 'h' },
        { 0 },
    };
    struct incmig_serve_opts o = {0};
    char ctl[4096];
    uint64_t v;
    int c;

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'n': o.nbd_uri = optarg; break;
        case 'c': o.control_path = optarg; break;
        case 'b':
            if (incmig_parse_size(optarg, &v) || v < 4096 || v > (1u << 20) ||
                (v & (v - 1))) {
                xl_usage_error("serve", "bad --block-size '%s': a power of "
                               "two from 4K to 1M", optarg);
                return 2;
            }
            o.block_size = (uint32_t)v;
            break;
        case 'r':
            o.max_inflight = atoi(optarg);
            if (o.max_inflight < 1 || o.max_inflight > 256) {
                xl_usage_error("serve", "--requests must be 1..256");
                return 2;
            }
            break;
        case 'h': help(); return 0;
        default: return 2;
        }
    }
    if (optind != argc - 1 || !o.nbd_uri) {
        xl_usage_error("serve", "need IMAGE and --nbd URI");
        return 2;
    }
    o.image = argv[optind];
    if (!o.control_path) {
        snprintf(ctl, sizeof ctl, "%s.ctl", o.image);
        o.control_path = ctl;
    }
    int rc = incmig_serve(&o);
    if (rc)
        fprintf(stderr, "xl-incmig serve: %s\n", incmig_strerror(rc));
    return rc ? 1 : 0;
}
