/* command-migrate.c: incmig_migrate_main, the whole `migrate` command of a
 * toolstack, run by `xl-incmig migrate` and by `xl migrate
 * --incremental-storage` alike.  Options follow `xl migrate` where they
 * overlap, with xl's meaning:
 *
 *   xl's option   here
 *   -s SSHCMD     the transport command ("" = plain TCP to HOST:PORT)
 *   -C CONFIG     the configuration sent instead of the domain's stored
 *                 one (xen/domain.c reads it: libxl JSON or an xl file)
 *   -p            the domain stays paused on the destination: --paused on
 *                 the receiver's command line (ssh); with plain TCP the
 *                 receiver's own -p
 *   -e            accepted: incmig's receiver never stays to wait for the
 *                 domain's death (it exits once PULL is complete), which
 *                 is what -e asks
 *   --debug       debug messages here and on the receiver (--debug), and
 *                 libxl's debug suspend (LIBXL_SUSPEND_DEBUG)
 *   -D            not taken: the destination's domid is Xen's choice
 *
 * --receiver CMD is the receiver's command on HOST.
 *
 * Over ssh the receiver on HOST is started with the --dest-* options
 * turned into its own mapping (--disk/--root/--target, each quoted for the
 * remote shell), and with a rendezvous socket through which a second ssh
 * session reattaches (`RECEIVER --attach PATH`) if the link breaks in
 * PULL.  Then incmig_migrate() runs, and the report is printed.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "incmig-internal.h"

/* the receiver's command line, a bound on what ssh carries */
#define REMOTE_MAX 16384

struct cmdline {
    const char *name;
    struct incmig_migrate_opts o;
    const char *json, *dest_image, *dest_nbd, *receiver;
    bool xl_switch;         /* --incremental-storage: xl runs us */
    bool receiver_given;    /* --receiver CMD */
    bool paused;            /* -p: the receiver's --paused */
    char *dest_args;        /* " --disk 'A=..' --root '..'", quoted */
    char *remote, *attach;  /* the ssh transport's two commands */
    struct incmig_security sec;
};

static void help(const char *name, const char *receiver)
{
    printf("usage: %s [options] DOMAIN HOST\n"
           "       %s --resume STATEFILE|ID [options]\n"
           "Live-migrate DOMAIN and its local disks to HOST: PUSH rounds while\n"
           "it runs, stop-and-copy of the write bitmap only, then PULL.\n"
           "DOMAIN is a Xen domain's name or id, or sim:CONTROL_SOCKET for a\n"
           "simulated domain served by `xl-incmig serve`.\n\n", name, name);
    printf("  -s SSHCMD           transport command (default \"ssh\"); \"\" means\n"
           "                      plain TCP and HOST is HOST:PORT of a receiver\n"
           "                      started with --listen\n"
           "  --receiver CMD      receiver command on HOST (default\n"
           "                      \"%s\")\n"
           "  -C CONFIG           send CONFIG (an xl configuration file, or\n"
           "                      libxl's JSON) instead of the domain's stored\n"
           "                      configuration (Xen domains)\n"
           "  -p                  leave the domain paused on HOST (ssh; with\n"
           "                      plain TCP give -p to migrate-receive)\n"
           "  -e                  accepted as xl's: the receiver never waits\n"
           "                      for the domain's death on HOST\n"
           "  --shared-disk VDEV  disk VDEV is on shared storage: not tracked,\n"
           "                      not copied (repeatable; network disks are\n"
           "                      shared without it)\n",
           receiver);
    printf("  --dest-image PATH   destination image (ssh transport)\n"
           "  --dest-nbd URI      where the destination serves the guest (ssh)\n"
           "  --dest-disk NAME=PATH[,nbd=URI]  the receiver's volume for disk\n"
           "                      NAME (ssh; one per disk; see migrate-receive)\n"
           "  --dest-root DIR     the receiver's allowed root (ssh)\n"
           "  --dest-target T     the receiver's target: xen or sim (ssh)\n"
           "  --debug             debug messages here and on HOST, and libxl's\n"
           "                      debug suspend (as xl's --debug)\n"
           "  --policy P          default | precopy | single\n"
           "                        default: PUSH until converged, then PULL\n"
           "                        precopy: PUSH, remaining blocks while paused\n"
           "                        single:  round 0 only, then PULL\n"
           "  --bandwidth RATE    cap on the link, bytes/s (e.g. 100M); max: no\n"
           "                      cap at all; by default PUSH yields to the\n"
           "                      guest's I/O (slows down when it is busy)\n"
           "  --control SOCKET    unix socket through which the cap may be\n"
           "                      changed while it runs (migrate-set-bandwidth)\n"
           "  --downtime MS       downtime budget for convergence (default 300)\n"
           "  --max-rounds N      PUSH round limit (default 30)\n"
           "  --compress[=MODE]   block data: auto (default: zstd when the link\n"
           "                      is the bottleneck), on (always), off\n"
           "  --reconnect SECS    how long PULL retries a lost link (600)\n"
           "  --timeout SECS      the handshake's deadline (30); the receiver\n"
           "                      may be silent 4 times as long before GO\n"
           "  --json FILE         also write the report as JSON (- = stdout)\n"
           "  --state-dir DIR     where the state file of PULL goes (default\n"
           "                      /run/incmig, or $XDG_RUNTIME_DIR/incmig)\n"
           "  --resume STATEFILE|ID  finish the PULL of a migrate that stopped\n"
           "                      or died after GO (from its state file; the\n"
           "                      domain, host and transport are in it)\n"
           "  --no-progress       no progress line\n"
           "(plain TCP, -s \"\": TLS as below, required off loopback)\n%s",
           incmig_security_help());
}

/* Appends " FLAG 'VALUE'" to c->dest_args; 0 or 2 (usage error). */
static int add_dest_arg(struct cmdline *c, const char *flag, const char *value)
{
    char *q = incmig__shell_quote(value), *grown = NULL;
    size_t have = c->dest_args ? strlen(c->dest_args) : 0;

    if (q && have + strlen(flag) + strlen(q) + 3 < REMOTE_MAX / 2 &&
        asprintf(&grown, "%s %s %s", c->dest_args ? c->dest_args : "", flag,
                 q) >= 0) {
        free(c->dest_args);
        c->dest_args = grown;
        free(q);
        return 0;
    }
    free(q);
    incmig__usage_error(c->name, "destination options too long");
    return 2;
}

/* atoi with a range: 0, or 2 after the usage error `what`. */
static int int_opt(struct cmdline *c, const char *arg, long lo, long hi,
                   int *val_r, const char *what)
{
    char *end;
    long v = strtol(arg, &end, 10);

    if (end == arg || *end || v < lo || v > hi) {
        incmig__usage_error(c->name, "%s", what);
        return 2;
    }
    *val_r = (int)v;
    return 0;
}

static int policy_opt(struct cmdline *c, const char *arg)
{
    if (!strcmp(arg, "default"))
        c->o.policy = INCMIG_POLICY_DEFAULT;
    else if (!strcmp(arg, "precopy"))
        c->o.policy = INCMIG_POLICY_PRECOPY;
    else if (!strcmp(arg, "single"))
        c->o.policy = INCMIG_POLICY_SINGLE;
    else {
        incmig__usage_error(c->name, "unknown --policy '%s' (default, "
                            "precopy or single)", arg);
        return 2;
    }
    return 0;
}

static int bandwidth_opt(struct cmdline *c, const char *arg)
{
    uint64_t v;

    if (!strcmp(arg, "max")) {
        c->o.bandwidth = 0;
        c->o.no_yield = 1;
        return 0;
    }
    if (incmig_parse_size(arg, &v) || v < 4096) {
        incmig__usage_error(c->name, "bad --bandwidth '%s' (bytes/s, e.g. "
                            "100M, at least 4K, or max)", arg);
        return 2;
    }
    c->o.bandwidth = v;
    return 0;
}

static int compress_opt(struct cmdline *c, const char *arg)
{
    if (!arg || !strcmp(arg, "on"))
        c->o.compress = 1;
    else if (!strcmp(arg, "off"))
        c->o.compress = -1;
    else if (!strcmp(arg, "auto"))
        c->o.compress = 0;
    else {
        incmig__usage_error(c->name, "bad --compress '%s' (auto, on or off)",
                            arg);
        return 2;
    }
    return 0;
}

/* One option; 0, 2 (usage error) or -1 (--help printed). */
static int one_opt(struct cmdline *c, int opt, const char *arg)
{
    int v;

    switch (opt) {
    case 's': c->o.ssh_command = arg; return 0;
    case 'C': c->o.config_file = arg; return 0;
    case 'c': c->receiver = arg; c->receiver_given = true; return 0;
    case 'p': c->paused = true; return 0;
    case 'e': return 0;             /* the receiver never waits (above) */
    case 'H':
        if (c->o.nshared >= INCMIG_MAX_SHARED || !*arg) {
            incmig__usage_error(c->name, "--shared-disk VDEV: a disk name, "
                                "at most %d times", INCMIG_MAX_SHARED);
            return 2;
        }
        for (int i = 0; i < c->o.nshared; i++)
            if (!strcmp(c->o.shared_disks[i], arg)) {
                incmig__usage_error(c->name, "--shared-disk %s is given "
                                    "twice", arg);
                return 2;
            }
        c->o.shared_disks[c->o.nshared++] = arg;
        return 0;
    case 'y': return policy_opt(c, arg);
    case 'b': return bandwidth_opt(c, arg);
    case 'd':
        if (int_opt(c, arg, 1, 600000, &v, "--downtime must be 1..600000 ms"))
            return 2;
        c->o.downtime_ms = (uint32_t)v;
        return 0;
    case 'm':
        return int_opt(c, arg, 1, 1000, &c->o.max_rounds,
                       "--max-rounds must be 1..1000");
    case 'O':
        return int_opt(c, arg, 1, 86400, &c->o.timeout_s,
                       "--timeout must be 1..86400 s");
    case 'r':
        return int_opt(c, arg, 1, 86400 * 7, &c->o.reconnect_s,
                       "--reconnect must be 1..604800 s");
    case 'z': return compress_opt(c, arg);
    case 'K': c->o.control_path = arg; return 0;
    case 'j': c->json = arg; return 0;
    case 'P': c->o.progress = 0; return 0;
    case 'I': c->dest_image = arg; return 0;
    case 'N': c->dest_nbd = arg; return 0;
    case 'D': return add_dest_arg(c, "--disk", arg);
    case 'R': return add_dest_arg(c, "--root", arg);
    case 'T': return add_dest_arg(c, "--target", arg);
    case 'g': incmig__verbosity = 2; c->o.debug = 1; return 0;
    case 'x': c->xl_switch = true; return 0;
    case 'S': c->o.state_dir = arg; return 0;
    case 'U': c->o.resume = arg; return 0;
    case 'h': help(c->name, c->receiver); return -1;
    default:
        switch (incmig_security_option(&c->sec, c->name, opt, arg)) {
        case 1: return 0;
        case -1: return 2;
        default: return 2;          /* getopt said what */
        }
    }
}

static int parse(struct cmdline *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "policy", required_argument, NULL, 'y' },
        { "shared-disk", required_argument, NULL, 'H' },
        { "bandwidth", required_argument, NULL, 'b' },
        { "downtime", required_argument, NULL, 'd' },
        { "max-rounds", required_argument, NULL, 'm' },
        { "compress", optional_argument, NULL, 'z' },
        { "control", required_argument, NULL, 'K' },
        { "reconnect", required_argument, NULL, 'r' },
        { "timeout", required_argument, NULL, 'O' },
        { "json", required_argument, NULL, 'j' },
        { "no-progress", no_argument, NULL, 'P' },
        { "dest-image", required_argument, NULL, 'I' },
        { "dest-nbd", required_argument, NULL, 'N' },
        { "dest-disk", required_argument, NULL, 'D' },
        { "dest-root", required_argument, NULL, 'R' },
        { "dest-target", required_argument, NULL, 'T' },
        { "debug", no_argument, NULL, 'g' },
        { "receiver", required_argument, NULL, 'c' },
        { "incremental-storage", no_argument, NULL, 'x' },
        { "state-dir", required_argument, NULL, 'S' },
        { "resume", required_argument, NULL, 'U' },
        { "help", no_argument, NULL, 'h' },
        INCMIG_SECURITY_OPTIONS,
        { 0 },
    };
    int opt, rc;

    optind = 0;     /* glibc: a full restart, whoever parsed before us */
    opterr = 1;
    while ((opt = getopt_long(argc, argv, "s:C:peh", opts, NULL)) != -1)
        if ((rc = one_opt(c, opt, optarg)))
            return rc;
    if (c->o.resume) {
        if (optind != argc || c->o.ssh_command || c->dest_image ||
            c->dest_nbd || c->dest_args || c->o.config_file ||
            c->receiver_given || c->paused || c->o.nshared) {
            incmig__usage_error(c->name, "--resume takes the domain, host "
                                "and transport from its state file: no "
                                "DOMAIN, HOST, -s, -C, -p, --receiver, "
                                "--shared-disk or --dest-* with it");
            return 2;
        }
        return 0;
    }
    if (optind != argc - 2) {
        incmig__usage_error(c->name, "need DOMAIN and HOST");
        return 2;
    }
    c->o.domain = argv[optind];
    c->o.host = argv[optind + 1];
    if (!strncmp(c->o.domain, "sim:", 4) &&
        (c->o.config_file || c->o.nshared || c->paused)) {
        incmig__usage_error(c->name, "-C, -p and --shared-disk are for Xen "
                            "domains, not the simulated %s", c->o.domain);
        return 2;
    }
    if (c->o.config_file && !*c->o.config_file) {
        incmig__usage_error(c->name, "-C needs a configuration file");
        return 2;
    }
    return 0;
}

/* The ssh transport's receiver command and its reattach command; 0, 1
 * (out of memory) or 2 (usage error). */
static int ssh_commands(struct cmdline *c)
{
    char *qi = NULL, *qn = NULL, *one = NULL;
    char rv[128];
    int rc = 2;

    if (!c->dest_args && (!c->dest_image || !c->dest_nbd)) {
        incmig__usage_error(c->name, "the ssh transport needs --dest-image "
                            "and --dest-nbd (a one-disk domain), or "
                            "--dest-disk NAME=PATH for each disk, for the "
                            "receiver");
        return 2;
    }
    if (c->dest_image && c->dest_nbd) {
        qi = incmig__shell_quote(c->dest_image);
        qn = incmig__shell_quote(c->dest_nbd);
        if (!qi || !qn || asprintf(&one, " --image %s --nbd %s", qi, qn) < 0) {
            one = NULL;
            rc = 1;
            goto out;
        }
    }
    /* where the receiver waits for our next ssh session if the link
     * breaks during PULL */
    uint8_t rnd[8];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        ERR("getrandom: no random name for the rendezvous socket");
        rc = 1;
        goto out;
    }
    /* a name in the receiver's private runtime directory */
    snprintf(rv, sizeof rv, "rendezvous-%02x%02x%02x%02x%02x%02x%02x%02x.sock",
             rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    if (asprintf(&c->remote, "%s%s%s%s%s --exit-when-done --rendezvous %s",
                 c->receiver, one ? one : "",
                 c->dest_args ? c->dest_args : "",
                 c->paused ? " --paused" : "",
                 c->o.debug ? " --debug" : "", rv) < 0)
        c->remote = NULL;
    if (asprintf(&c->attach, "%s --attach %s", c->receiver, rv) < 0)
        c->attach = NULL;
    if (!c->remote || !c->attach) {
        rc = 1;
        goto out;
    }
    if (strlen(c->remote) >= REMOTE_MAX) {
        incmig__usage_error(c->name, "destination options too long");
        goto out;
    }
    c->o.remote_command = c->remote;
    c->o.attach_command = c->attach;
    rc = 0;
out:
    if (rc == 1)
        ERR("out of memory");
    free(qi);
    free(qn);
    free(one);
    return rc;
}

static void write_reports(const struct cmdline *c, int rc,
                          const struct incmig_report *rep)
{
    if (incmig__verbosity >= 1 && (rc == 0 || rep->wire_total > 0))
        incmig_report_print(rep, stdout);
    if (!c->json)
        return;
    FILE *f = strcmp(c->json, "-") ? fopen(c->json, "w") : stdout;
    if (!f) {
        LOGE("cannot write the JSON report to %s", c->json);
        return;
    }
    incmig_report_json(rep, f);
    if (f != stdout)
        fclose(f);
    else
        fflush(stdout);
}

int incmig_migrate_main(const char *name, const char *receiver, int argc,
                        char **argv)
{
    struct cmdline c = { .name = name ? name : "migrate" };
    struct incmig_report rep;
    struct incmig__signals sigs;
    int verbosity = incmig__verbosity, ret;

    incmig_migrate_opts_init(&c.o);
    incmig_report_init(&rep);
    c.receiver = receiver ? receiver : "xl-incmig migrate-receive";
    c.o.progress = isatty(2);
    incmig__log_name(c.name);
    ret = parse(&c, argc, argv);
    if (ret)
        goto out;
    if (c.o.resume) {
        /* all from the state file */
    } else if (!c.o.ssh_command || *c.o.ssh_command) {
        ret = ssh_commands(&c);
        if (ret)
            goto out;
    } else if (c.dest_image || c.dest_nbd || c.dest_args) {
        incmig__usage_error(c.name, "--dest-image/--dest-nbd belong, as "
                            "every --dest-* option, to the receiver's "
                            "command line with plain TCP (-s \"\")");
        ret = 2;
        goto out;
    } else if (c.paused) {
        incmig__usage_error(c.name, "-p belongs to the receiver's command "
                            "line with plain TCP (-s \"\"): migrate-receive "
                            "-p");
        ret = 2;
        goto out;
    }
    if (incmig_security_setup(&c.sec)) {
        fprintf(stderr, "%s: cannot set up TLS or sockets as asked (see the "
                "error above)\n", c.name);
        ret = 2;
        goto out;
    }
    incmig__signals_take(&sigs, false);
    int rc = incmig_migrate(&c.o, &rep);
    incmig__signals_restore(&sigs);
    write_reports(&c, rc, &rep);
    if (rc && c.o.resume)
        fprintf(stderr, "%s: resume of %s failed: %s\n", c.name, c.o.resume,
                incmig_strerror(rc));
    else if (rc)
        fprintf(stderr, "%s: migration of %s to %s failed: %s\n", c.name,
                c.o.domain, c.o.host, incmig_strerror(rc));
    ret = rc ? 1 : 0;
out:
    if (ret < 0)        /* --help */
        ret = 0;
    incmig__verbosity = verbosity;  /* --debug was for this command */
    incmig_report_dispose(&rep);
    incmig_migrate_opts_dispose(&c.o);
    free(c.dest_args);
    free(c.remote);
    free(c.attach);
    return ret;
}
