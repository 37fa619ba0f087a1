/* cmd-serve.c: `xl-incmig serve`, the simulated domain on the source. */
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
           "       xl-incmig serve [options] --disk NAME=IMAGE,nbd=URI[,bs=SIZE]...\n"
           "Serve a simulated domain: each disk image over NBD, tracking every\n"
           "write, and a few MiB of memory that the guest's writes dirty, until\n"
           "a migration releases it or a signal stops it.\n\n"
           "  --disk SPEC        one disk (up to %d): NAME=IMAGE,nbd=URI[,bs=SIZE]\n"
           "  --nbd URI          with IMAGE: unix:PATH or tcp:HOST:PORT\n"
           "  --block-size SIZE  with IMAGE: tracking granularity, 4K..1M (4K)\n"
           "  --name NAME        domain name (default: the first disk's name)\n"
           "  --control PATH     control socket for `migrate sim:PATH`\n"
           "                     (default IMAGE.ctl, or the first disk's)\n"
           "  --memory SIZE      simulated memory, 4K..256M (default 4M)\n"
           "  --requests N       NBD requests in flight (default 8 workers)\n"
           "  --fault corrupt-state  tests only: corrupt the state stream\n"
           "  --debug            debug messages (the pause, bitmap hand-overs)\n"
           "%s", INCMIG_SERVE_MAX_DISKS, incmig_security_help());
}

static int parse_bs(const char *what, const char *s, uint32_t *bs_r)
{
    uint64_t v;
    if (incmig_parse_size(s, &v) || v < 4096 || v > (1u << 20) || (v & (v - 1))) {
        xl_usage_error("serve", "bad %s '%s': a power of two from 4K to 1M",
                       what, s);
        return -1;
    }
    *bs_r = (uint32_t)v;
    return 0;
}

/* NAME=IMAGE,nbd=URI[,bs=SIZE]; spec is modified in place. */
static int parse_disk(char *spec, struct incmig_serve_disk *d)
{
    char *eq = strchr(spec, '='), *tok, *save = NULL;

    if (!eq || eq == spec) {
        xl_usage_error("serve", "--disk '%s': expected NAME=IMAGE,nbd=URI", spec);
        return -1;
    }
    *eq = '\0';
    d->name = spec;
    for (const char *p = spec; *p; p++)
        if (!(*p >= 'a' && *p <= 'z') && !(*p >= 'A' && *p <= 'Z') &&
            !(*p >= '0' && *p <= '9') && !strchr("-_.", *p)) {
            xl_usage_error("serve", "disk name '%s': letters, digits, - _ . only",
                           spec);
            return -1;
        }
    d->image = strtok_r(eq + 1, ",", &save);
    while ((tok = strtok_r(NULL, ",", &save))) {
        if (!strncmp(tok, "nbd=", 4))
            d->nbd_uri = tok + 4;
        else if (!strncmp(tok, "bs=", 3)) {
            if (parse_bs("bs=", tok + 3, &d->block_size))
                return -1;
        } else {
            xl_usage_error("serve", "--disk %s: unknown key '%s'", d->name, tok);
            return -1;
        }
    }
    if (!d->image || !*d->image || !d->nbd_uri) {
        xl_usage_error("serve", "--disk %s: needs an image and nbd=URI", d->name);
        return -1;
    }
    return 0;
}

int cmd_serve(int argc, char **argv)
{
    static const struct option opts[] = {
        { "disk", required_argument, NULL, 'd' },
        { "nbd", required_argument, NULL, 'n' },
        { "name", required_argument, NULL, 'N' },
        { "control", required_argument, NULL, 'c' },
        { "block-size", required_argument, NULL, 'b' },
        { "memory", required_argument, NULL, 'm' },
        { "requests", required_argument, NULL, 'r' },
        { "fault", required_argument, NULL, 'F' },
        { "debug", no_argument, NULL, 'g' },
        { "help", no_argument, NULL, 'h' },
        INCMIG_SECURITY_OPTIONS,
        { 0 },
    };
    struct incmig_serve_opts o;
    const char *nbd = NULL;
    uint32_t bs = 0;
    char ctl[4096];
    int c, rc;

    incmig_serve_opts_init(&o);
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            if (o.ndisks >= INCMIG_SERVE_MAX_DISKS) {
                xl_usage_error("serve", "at most %d disks", INCMIG_SERVE_MAX_DISKS);
                return 2;
            }
            if (parse_disk(optarg, &o.disks[o.ndisks++]))
                return 2;
            break;
        case 'n': nbd = optarg; break;
        case 'N': o.name = optarg; break;
        case 'c': o.control_path = optarg; break;
        case 'b':
            if (parse_bs("--block-size", optarg, &bs))
                return 2;
            break;
        case 'm':
            if (incmig_parse_size(optarg, &o.memory) || o.memory < 4096 ||
                o.memory > (256u << 20)) {
                xl_usage_error("serve", "--memory must be 4K..256M");
                return 2;
            }
            break;
        case 'r':
            o.max_inflight = atoi(optarg);
            if (o.max_inflight < 1 || o.max_inflight > 256) {
                xl_usage_error("serve", "--requests must be 1..256");
                return 2;
            }
            break;
        case 'F':
            if (strcmp(optarg, "corrupt-state")) {
                xl_usage_error("serve", "unknown --fault '%s'", optarg);
                return 2;
            }
            o.faults |= INCMIG_FAULT_CORRUPT_STATE;
            break;
        case 'g': incmig_log_setup(2, stderr, "xl-incmig serve"); break;
        case 'h': help(); return 0;
        default:
            if (xl_security_opt("serve", c, optarg) != 1)
                return 2;
        }
    }
    if (xl_security_apply("serve"))
        return 2;
    if (optind == argc - 1 && o.ndisks == 0 && nbd) {
        /* one disk: IMAGE --nbd URI, named after the image */
        const char *img = argv[optind];
        const char *base = strrchr(img, '/') ? strrchr(img, '/') + 1 : img;
        o.disks[0] = (struct incmig_serve_disk){
            .name = base, .image = img, .nbd_uri = nbd, .block_size = bs,
        };
        o.ndisks = 1;
    } else if (optind != argc || o.ndisks == 0 || nbd || bs) {
        xl_usage_error("serve", "need IMAGE and --nbd URI, or --disk "
                       "options (not both)");
        return 2;
    }
    if (!o.control_path) {
        snprintf(ctl, sizeof ctl, "%s.ctl", o.disks[0].image);
        o.control_path = ctl;
    }
    rc = incmig_serve(&o);
    if (rc)
        fprintf(stderr, "xl-incmig serve: %s\n", incmig_strerror(rc));
    incmig_serve_opts_dispose(&o);
    return rc ? 1 : 0;
}
