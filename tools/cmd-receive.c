/* cmd-receive.c: `xl-incmig migrate-receive`, the destination side.
 * Started by `migrate` through ssh (stream on stdin/stdout), or by hand
 * with --listen for plain TCP. */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "incmig.h"
#include "xl-incmig.h"

static void help(void)
{
    printf("usage: xl-incmig migrate-receive [options]\n"
           "       xl-incmig migrate-receive --resume STATEFILE|ID [options]\n"
           "Receive a migration: create each disk's volume where this side\n"
           "maps it, write the disks, restore the domain, and run it here\n"
           "from the moment the source says GO.\n\n"
           "  --disk NAME=PATH[,nbd=URI]\n"
           "                     where disk NAME (its name on the source) goes:\n"
           "                     a new file PATH, created by this migration\n"
           "                     (an existing file, or a symbolic link, is\n"
           "                     refused); nbd=URI: where the simulated guest\n"
           "                     finds the disk after GO (unix:PATH or\n"
           "                     tcp:HOST:PORT).  Repeat for each disk\n"
           "  --root DIR         the volumes must be inside DIR (repeatable);\n"
           "                     default: each disk only where --disk says\n"
           "  --image PATH       with --nbd URI: the one disk of a one-disk\n"
           "                     domain, whatever its name\n"
           "  --nbd URI          see --image\n"
           "  --target NAME      the target backend: sim (the default), or xen\n"
           "                     (a Xen dom0: restores the domain, its disks\n"
           "                     through dm + the kernel's NBD client until PULL ends)\n"
           "  --listen HOST:PORT accept the source over plain TCP instead of\n"
           "                     stdin/stdout (trusted networks only)\n"
           "  --exit-when-done   exit once the migration is complete and the\n"
           "                     guest has disconnected\n"
           "  --reconnect SECS   how long to wait for a lost source during\n"
           "                     PULL (default 600); also how long the\n"
           "                     source may be silent in PULL\n"
           "  --timeout SECS     a connection's handshake must complete this\n"
           "                     long (default 30), the source may be silent\n"
           "                     before GO 4 times as long; others connecting\n"
           "                     meanwhile do not hold up the source\n"
           "  --rendezvous PATH  (stdin/stdout mode) unix socket where the\n"
           "                     source reattaches after a lost link in PULL\n"
           "  --attach PATH      relay stdin/stdout to the receiver waiting on\n"
           "                     PATH (what the source runs over its new ssh\n"
           "                     session to resume PULL)\n"
           "  --state-dir DIR    where the state file of PULL goes (default\n"
           "                     /run/incmig, or $XDG_RUNTIME_DIR/incmig)\n"
           "  --resume STATEFILE|ID  restart a receiver that stopped or died\n"
           "                     after GO: serve the domain's disks again and\n"
           "                     wait for the source to finish PULL (mapping,\n"
           "                     target, --listen/--rendezvous from the file)\n");
}

/* --disk NAME=PATH[,nbd=URI]: NAME up to the first '=', URI after the last
 * ",nbd=" (so PATH may hold commas, but not ",nbd=").  The pieces point
 * into `spec`, which is modified. */
static int parse_disk(char *spec, struct incmig_receive_disk *d)
{
    char *eq = strchr(spec, '='), *nbd;

    if (!eq || eq == spec || !eq[1])
        return -1;
    *eq = '\0';
    d->name = spec;
    d->path = eq + 1;
    d->nbd_uri = NULL;
    nbd = NULL;
    for (char *p = strstr(d->path, ",nbd="); p; p = strstr(p + 1, ",nbd="))
        nbd = p;
    if (nbd) {
        *nbd = '\0';
        d->nbd_uri = nbd + 5;
        if (!*d->path || !*d->nbd_uri)
            return -1;
    }
    return 0;
}

/* --attach: splice stdin/stdout to a waiting receiver's rendezvous. */
static int attach(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    char buf[65536];
    bool in_open = true;

    if (strlen(path) >= sizeof sa.sun_path) {
        fprintf(stderr, "xl-incmig migrate-receive: --attach path too long\n");
        return 1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        fprintf(stderr, "xl-incmig migrate-receive: no receiver waiting at %s: "
                "%s\n", path, strerror(errno));
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    for (;;) {
        struct pollfd p[2] = { { .fd = in_open ? 0 : -1, .events = POLLIN },
                               { .fd = fd, .events = POLLIN } };
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return 1;
        }
        for (int i = 0; i < 2; i++) {
            if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t n = read(i ? fd : 0, buf, sizeof buf);
            if (n <= 0) {
                if (i)
                    return 0;          /* the receiver is done with us */
                shutdown(fd, SHUT_WR);
                in_open = false;
                continue;
            }
            for (ssize_t off = 0; off < n;) {
                ssize_t w = write(i ? 1 : fd, buf + off, (size_t)(n - off));
                if (w < 0 && errno == EINTR)
                    continue;
                if (w <= 0)
                    return 1;
                off += w;
            }
        }
    }
}

int cmd_receive(int argc, char **argv)
{
    static const struct option opts[] = {
        { "disk", required_argument, NULL, 'd' },
        { "root", required_argument, NULL, 'o' },
        { "image", required_argument, NULL, 'i' },
        { "nbd", required_argument, NULL, 'n' },
        { "target", required_argument, NULL, 't' },
        { "listen", required_argument, NULL, 'l' },
        { "exit-when-done", no_argument, NULL, 'x' },
        { "reconnect", required_argument, NULL, 'r' },
        { "timeout", required_argument, NULL, 'T' },
        { "rendezvous", required_argument, NULL, 'R' },
        { "attach", required_argument, NULL, 'A' },
        { "state-dir", required_argument, NULL, 'S' },
        { "resume", required_argument, NULL, 'U' },
        { "help", no_argument, NULL, 'h' },
        { 0 },
    };
    struct incmig_receive_opts o;
    char *specs[INCMIG_RECEIVE_MAX_DISKS] = { NULL };
    const char *attach_path = NULL;
    int c, ret = 2;

    incmig_receive_opts_init(&o);
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            if (o.ndisks >= INCMIG_RECEIVE_MAX_DISKS) {
                xl_usage_error("migrate-receive", "at most %d --disk",
                               INCMIG_RECEIVE_MAX_DISKS);
                goto out;
            }
            specs[o.ndisks] = strdup(optarg);
            if (!specs[o.ndisks] ||
                parse_disk(specs[o.ndisks], &o.disks[o.ndisks]) < 0) {
                xl_usage_error("migrate-receive", "bad --disk '%s': want "
                               "NAME=PATH or NAME=PATH,nbd=URI", optarg);
                free(specs[o.ndisks]);
                specs[o.ndisks] = NULL;
                goto out;
            }
            o.ndisks++;
            break;
        case 'o':
            if (o.nroots >= INCMIG_RECEIVE_MAX_ROOTS) {
                xl_usage_error("migrate-receive", "at most %d --root",
                               INCMIG_RECEIVE_MAX_ROOTS);
                goto out;
            }
            o.roots[o.nroots++] = optarg;
            break;
        case 'i': o.image = optarg; break;
        case 'n': o.nbd_uri = optarg; break;
        case 't': o.target = optarg; break;
        case 'l': o.listen = optarg; break;
        case 'x': o.exit_when_done = 1; break;
        case 'R': o.rendezvous = optarg; break;
        case 'A': attach_path = optarg; break;
        case 'S': o.state_dir = optarg; break;
        case 'U': o.resume = optarg; break;
        case 'T':
            o.timeout_s = atoi(optarg);
            if (o.timeout_s < 1) {
                xl_usage_error("migrate-receive", "--timeout must be >= 1 s");
                goto out;
            }
            break;
        case 'r':
            o.reconnect_s = atoi(optarg);
            if (o.reconnect_s < 1) {
                xl_usage_error("migrate-receive", "--reconnect must be >= 1");
                goto out;
            }
            break;
        case 'h': help(); ret = 0; goto out;
        default: goto out;
        }
    }
    if (attach_path) {
        if (optind != argc || o.image || o.nbd_uri || o.ndisks) {
            xl_usage_error("migrate-receive", "--attach takes no other "
                           "option");
            goto out;
        }
        ret = attach(attach_path);
        goto out;
    }
    if (optind != argc) {
        xl_usage_error("migrate-receive", "unexpected argument '%s'",
                       argv[optind]);
        goto out;
    }
    if (o.resume && (o.ndisks || o.image || o.nbd_uri || o.nroots ||
                     o.target || o.listen || o.rendezvous)) {
        xl_usage_error("migrate-receive", "--resume takes the mapping, the "
                       "target and where to wait for the source from its "
                       "state file: no --disk, --image, --nbd, --root, "
                       "--target, --listen or --rendezvous with it");
        goto out;
    }
    if (o.resume) {
        /* all from the state file */
    } else if (o.ndisks && (o.image || o.nbd_uri)) {
        xl_usage_error("migrate-receive", "--image/--nbd map a one-disk "
                       "domain; with --disk, map every disk with --disk");
        goto out;
    }
    if (!o.resume && !o.ndisks && (!o.image || !o.nbd_uri)) {
        xl_usage_error("migrate-receive", "need --image PATH and --nbd URI, "
                       "or --disk NAME=PATH[,nbd=URI] for each disk");
        goto out;
    }
    int rc = incmig_receive(&o, 0, 1);
    if (rc)
        fprintf(stderr, "xl-incmig migrate-receive: failed: %s\n",
                incmig_strerror(rc));
    ret = rc ? 1 : 0;
out:
    for (int i = 0; i < INCMIG_RECEIVE_MAX_DISKS; i++)
        free(specs[i]);
    incmig_receive_opts_dispose(&o);
    return ret;
}
