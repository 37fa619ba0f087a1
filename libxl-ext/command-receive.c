/* command-receive.c: incmig_receive_main, the whole `migrate-receive`
 * command, run by `xl-incmig migrate-receive` and by `xl migrate-receive
 * --incremental-storage` alike (the source's incmig_migrate_main starts
 * either over ssh, the stream on the session's stdin/stdout).
 *
 * The receiver's own disk mapping comes from --disk NAME=PATH[,nbd=URI]
 * (or --image/--nbd for a one-disk domain) and --root; the source never
 * names a destination path.  --attach PATH is the other use: it relays
 * stdin/stdout to a receiver waiting on its rendezvous socket, which is
 * how a new ssh session resumes a PULL whose link broke.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "incmig-internal.h"

static void help(const char *name)
{
    printf("usage: %s [options]\n"
           "       %s --resume STATEFILE|ID [options]\n"
           "Receive a migration: create each disk's volume where this side\n"
           "maps it, write the disks, restore the domain, and run it here\n"
           "from the moment the source says GO.\n\n", name, name);
    printf("  --disk NAME=PATH[,nbd=URI]\n"
           "                     where disk NAME (its name on the source) goes:\n"
           "                     a new file PATH, created by this migration\n"
           "                     (an existing file, or a symbolic link, is\n"
           "                     refused); nbd=URI: where the simulated guest\n"
           "                     finds the disk after GO (unix:PATH or\n"
           "                     tcp:HOST:PORT).  Repeat for each disk\n"
           "  --disk NAME=lvm:VG/LV\n"
           "                     (xen target) a new logical volume LV in the\n"
           "                     volume group VG (LV must not exist)\n"
           "  --disk NAME=shared disk NAME is on shared storage here: not\n"
           "                     migrated, attached as the domain's\n"
           "                     configuration says\n"
           "  --root DIR         the volumes must be inside DIR (repeatable);\n"
           "                     default: each disk only where --disk says\n"
           "  --image PATH       with --nbd URI: the one disk of a one-disk\n"
           "                     domain, whatever its name\n"
           "  --nbd URI          see --image\n"
           "  --target NAME      the target backend: sim (the default), or xen\n"
           "                     (a Xen dom0: restores the domain, its disks\n"
           "                     through dm + the kernel's NBD client until PULL ends)\n"
           "  -p, --paused       (xen target) leave the domain paused at GO\n"
           "  -e                 accepted as xl's: this receiver never waits\n"
           "                     for the domain's death\n"
           "  -d, --debug        debug messages (libxl's too)\n"
           "  --listen HOST:PORT accept the source over TCP instead of\n"
           "                     stdin/stdout: TLS with --tls-psk/--tls-x509\n"
           "                     (required off loopback unless --tls=off)\n"
           "  --exit-when-done   exit once the migration is complete and the\n"
           "                     guest has disconnected\n"
           "  --reconnect SECS   how long to wait for a lost source during\n"
           "                     PULL (default 600); also how long the\n"
           "                     source may be silent in PULL\n"
           "  --timeout SECS     a connection's handshake must complete this\n"
           "                     long (default 30), the source may be silent\n"
           "                     before GO 4 times as long; others connecting\n"
           "                     meanwhile do not hold up the source\n"
           "  --rendezvous NAME  (stdin/stdout mode) unix socket where the\n"
           "                     source reattaches after a lost link in PULL:\n"
           "                     NAME in the runtime directory (/run/incmig,\n"
           "                     $XDG_RUNTIME_DIR/incmig), or a PATH with '/'\n"
           "  --attach NAME      relay stdin/stdout to the receiver waiting on\n"
           "                     NAME (what the source runs over its new ssh\n"
           "                     session to resume PULL)\n"
           "  --state-dir DIR    where the state file of PULL goes (default\n"
           "                     /run/incmig, or $XDG_RUNTIME_DIR/incmig)\n"
           "  --resume STATEFILE|ID  restart a receiver that stopped or died\n"
           "                     after GO: serve the domain's disks again and\n"
           "                     wait for the source to finish PULL (mapping,\n"
           "                     target, --listen/--rendezvous from the file)\n%s",
           incmig_security_help());
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

/* Copies what arrives on `from` to `to`: 1, 0 when `from` ended (EOF or
 * error), -1 when `to` cannot take it. */
static int relay(int from, int to)
{
    char buf[65536];
    ssize_t n = read(from, buf, sizeof buf);

    if (n < 0 && errno == EINTR)
        return 1;
    if (n <= 0)
        return 0;
    for (ssize_t off = 0; off < n;) {
        ssize_t w = write(to, buf + off, (size_t)(n - off));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        off += w;
    }
    return 1;
}

/* --attach: splice in_fd/out_fd to a waiting receiver's rendezvous. */
static int attach(const char *name, const char *rv, int in_fd, int out_fd)
{
    bool in_open = true;
    int fd, r, ret = 1;
    char path[4200];
    struct stat st;

    if (incmig_rendezvous_path(rv, path, sizeof path))
        return 1;
    if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
        fprintf(stderr, "%s: %s is not a socket (a symbolic link is not "
                "followed)\n", name, path);
        return 1;
    }
    if (incmig__unix_connect(path, &fd)) {
        fprintf(stderr, "%s: no receiver waiting at %s\n", name, path);
        return 1;
    }
    while (!incmig__stop_requested) {
        struct pollfd p[2] = { { .fd = in_open ? in_fd : -1, .events = POLLIN },
                               { .fd = fd, .events = POLLIN } };
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            r = relay(fd, out_fd);
            if (r <= 0) {
                ret = r == 0 ? 0 : 1;   /* the receiver is done with us */
                break;
            }
        }
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            r = relay(in_fd, fd);
            if (r < 0)
                break;
            if (r == 0) {
                shutdown(fd, SHUT_WR);
                in_open = false;
            }
        }
    }
    close(fd);
    return ret;
}

struct cmdline {
    const char *name;
    struct incmig_receive_opts o;
    char *specs[INCMIG_RECEIVE_MAX_DISKS];
    const char *attach;
    struct incmig_security sec;
};

static int disk_opt(struct cmdline *c, const char *arg)
{
    struct incmig_receive_opts *o = &c->o;

    if (o->ndisks >= INCMIG_RECEIVE_MAX_DISKS) {
        incmig__usage_error(c->name, "at most %d --disk",
                            INCMIG_RECEIVE_MAX_DISKS);
        return 2;
    }
    c->specs[o->ndisks] = strdup(arg);
    if (!c->specs[o->ndisks] ||
        parse_disk(c->specs[o->ndisks], &o->disks[o->ndisks]) < 0) {
        incmig__usage_error(c->name, "bad --disk '%s': want NAME=PATH or "
                            "NAME=PATH,nbd=URI", arg);
        return 2;
    }
    o->ndisks++;
    return 0;
}

static int seconds_opt(struct cmdline *c, const char *arg, int *val_r,
                       const char *what)
{
    char *end;
    long v = strtol(arg, &end, 10);

    if (end == arg || *end || v < 1 || v > 86400 * 7) {
        incmig__usage_error(c->name, "%s must be 1..604800 s", what);
        return 2;
    }
    *val_r = (int)v;
    return 0;
}

/* One option; 0, 2 (usage error) or -1 (--help printed). */
static int one_opt(struct cmdline *c, int opt, const char *arg)
{
    struct incmig_receive_opts *o = &c->o;

    switch (opt) {
    case 'k': return disk_opt(c, arg);
    case 'o':
        if (o->nroots >= INCMIG_RECEIVE_MAX_ROOTS) {
            incmig__usage_error(c->name, "at most %d --root",
                                INCMIG_RECEIVE_MAX_ROOTS);
            return 2;
        }
        o->roots[o->nroots++] = arg;
        return 0;
    case 'i': o->image = arg; return 0;
    case 'n': o->nbd_uri = arg; return 0;
    case 't': o->target = arg; return 0;
    case 'l': o->listen = arg; return 0;
    case 'x': o->exit_when_done = 1; return 0;
    case 'R': o->rendezvous = arg; return 0;
    case 'A': c->attach = arg; return 0;
    case 'S': o->state_dir = arg; return 0;
    case 'U': o->resume = arg; return 0;
    case 'T': return seconds_opt(c, arg, &o->timeout_s, "--timeout");
    case 'r': return seconds_opt(c, arg, &o->reconnect_s, "--reconnect");
    case 'X': return 0;             /* --incremental-storage: xl's switch */
    case 'p': o->leave_paused = 1; return 0;
    case 'e': return 0;             /* never waits for the domain's death */
    case 'd':
    case 'g': incmig__verbosity = 2; return 0;
    case 'h': help(c->name); return -1;
    default:
        switch (incmig_security_option(&c->sec, c->name, opt, arg)) {
        case 1: return 0;
        default: return 2;          /* said */
        }
    }
}

static int parse(struct cmdline *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "disk", required_argument, NULL, 'k' },
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
        { "incremental-storage", no_argument, NULL, 'X' },
        { "paused", no_argument, NULL, 'p' },
        { "debug", no_argument, NULL, 'g' },
        { "help", no_argument, NULL, 'h' },
        INCMIG_SECURITY_OPTIONS,
        { 0 },
    };
    int opt, rc;

    optind = 0;     /* glibc: a full restart, whoever parsed before us */
    opterr = 1;
    while ((opt = getopt_long(argc, argv, "pedh", opts, NULL)) != -1)
        if ((rc = one_opt(c, opt, optarg)))
            return rc;
    if (c->attach) {
        if (optind != argc || c->o.image || c->o.nbd_uri || c->o.ndisks) {
            incmig__usage_error(c->name, "--attach takes no other option");
            return 2;
        }
        return 0;
    }
    if (optind != argc) {
        incmig__usage_error(c->name, "unexpected argument '%s'", argv[optind]);
        return 2;
    }
    if (c->o.resume) {
        const struct incmig_receive_opts *o = &c->o;
        if (o->ndisks || o->image || o->nbd_uri || o->nroots || o->target ||
            o->listen || o->rendezvous || o->leave_paused) {
            incmig__usage_error(c->name, "--resume takes the mapping, the "
                                "target and where to wait for the source "
                                "from its state file: no --disk, --image, "
                                "--nbd, --root, --target, --listen, "
                                "--rendezvous or -p with it");
            return 2;
        }
        return 0;
    }
    if (c->o.ndisks && (c->o.image || c->o.nbd_uri)) {
        incmig__usage_error(c->name, "--image/--nbd map a one-disk domain; "
                            "with --disk, map every disk with --disk");
        return 2;
    }
    if (!c->o.ndisks && (!c->o.image || !c->o.nbd_uri)) {
        incmig__usage_error(c->name, "need --image PATH and --nbd URI, or "
                            "--disk NAME=PATH[,nbd=URI] for each disk");
        return 2;
    }
    return 0;
}

int incmig_receive_main(const char *name, int argc, char **argv, int in_fd,
                        int out_fd)
{
    struct cmdline c = { .name = name ? name : "migrate-receive" };
    struct incmig__signals sigs;
    int verbosity = incmig__verbosity, ret;

    incmig_receive_opts_init(&c.o);
    incmig__log_name(c.name);
    ret = parse(&c, argc, argv);
    if (ret)
        goto out;
    if (incmig_security_setup(&c.sec)) {
        fprintf(stderr, "%s: cannot set up TLS or sockets as asked (see the "
                "error above)\n", c.name);
        ret = 2;
        goto out;
    }
    incmig__signals_take(&sigs, true);
    if (c.attach) {
        ret = attach(c.name, c.attach, in_fd, out_fd);
    } else {
        int rc = incmig_receive(&c.o, in_fd, out_fd);
        if (rc)
            fprintf(stderr, "%s: failed: %s\n", c.name, incmig_strerror(rc));
        ret = rc ? 1 : 0;
    }
    incmig__signals_restore(&sigs);
out:
    if (ret < 0)        /* --help */
        ret = 0;
    incmig__verbosity = verbosity;  /* --debug was for this command */
    for (int i = 0; i < INCMIG_RECEIVE_MAX_DISKS; i++)
        free(c.specs[i]);
    incmig_receive_opts_dispose(&c.o);
    return ret;
}
