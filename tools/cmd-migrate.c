/* cmd-migrate.c: `xl-incmig migrate DOMAIN HOST`, the toolstack side.
 * Options follow `xl migrate` where they overlap (-s for the transport
 * command, -C for the receiver command). */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "incmig.h"
#include "xl-incmig.h"

static void help(void)
{
    printf("usage: xl-incmig migrate [options] DOMAIN HOST\n"
           "       xl-incmig migrate --resume STATEFILE|ID [options]\n"
           "Live-migrate DOMAIN and its local disks to HOST: PUSH rounds while\n"
           "it runs, stop-and-copy of the write bitmap only, then PULL.\n"
           "DOMAIN is a Xen domain's name or id, or sim:CONTROL_SOCKET for a\n"
           "simulated domain served by `xl-incmig serve`.\n\n"
           "  -s SSHCMD           transport command (default \"ssh\"); \"\" means\n"
           "                      plain TCP and HOST is HOST:PORT of a receiver\n"
           "                      started with --listen\n"
           "  -C CMD              receiver command on HOST (default\n"
           "                      \"xl-incmig migrate-receive\")\n"
           "  --dest-image PATH   destination image (ssh transport)\n"
           "  --dest-nbd URI      where the destination serves the guest (ssh)\n"
           "  --dest-disk NAME=PATH[,nbd=URI]  the receiver's volume for disk\n"
           "                      NAME (ssh; one per disk; see migrate-receive)\n"
           "  --dest-root DIR     the receiver's allowed root (ssh)\n"
           "  --dest-target T     the receiver's target: xen or sim (ssh)\n"
           "  --debug             debug messages (as xl's --debug)\n"
           "  --policy P          default | precopy | single\n"
           "                        default: PUSH until converged, then PULL\n"
           "                        precopy: PUSH, remaining blocks while paused\n"
           "                        single:  round 0 only, then PULL\n"
           "  --bandwidth RATE    cap on the link, bytes/s (e.g. 100M)\n"
           "  --downtime MS       downtime budget for convergence (default 300)\n"
           "  --max-rounds N      PUSH round limit (default 30)\n"
           "  --compress          zlib-compress block data\n"
           "  --reconnect SECS    how long PULL retries a lost link (600)\n"
           "  --timeout SECS      the handshake's deadline (30); the receiver\n"
           "                      may be silent 4 times as long before GO\n"
           "  --json FILE         also write the report as JSON (- = stdout)\n"
           "  --state-dir DIR     where the state file of PULL goes (default\n"
           "                      /run/incmig, or $XDG_RUNTIME_DIR/incmig)\n"
           "  --resume STATEFILE|ID  finish the PULL of a migrate that stopped\n"
           "                      or died after GO (from its state file; the\n"
           "                      domain, host and transport are in it)\n"
           "  --no-progress       no progress line\n");
}

/* Single-quote s for /bin/sh into out. */
static int shell_quote(const char *s, char *out, size_t cap)
{
    size_t n = 0;
    if (cap < 3)
        return -1;
    out[n++] = '\'';
    for (; *s; s++) {
        const char *piece = *s == '\'' ? "'\\''" : NULL;
        size_t len = piece ? 4 : 1;
        if (n + len + 2 > cap)
            return -1;
        if (piece)
            memcpy(out + n, piece, 4);
        else
            out[n] = *s;
        n += len;
    }
    out[n++] = '\'';
    out[n] = '\0';
    return 0;
}

int cmd_migrate(int argc, char **argv)
{
    static const struct option opts[] = {
        { "policy", required_argument, NULL, 'p' },
        { "bandwidth", required_argument, NULL, 'b' },
        { "downtime", required_argument, NULL, 'd' },
        { "max-rounds", required_argument, NULL, 'm' },
        { "compress", no_argument, NULL, 'z' },
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
        { "state-dir", required_argument, NULL, 'S' },
        { "resume", required_argument, NULL, 'U' },
        { "help", no_argument, NULL, 'h' },
        { 0 },
    };
    struct incmig_migrate_opts o = {0};
    struct incmig_report rep;
    const char *json = NULL, *dest_image = NULL, *dest_nbd = NULL;
    const char *remote = "xl-incmig migrate-receive";
    char remote_buf[16384], attach_buf[16384];
    /* receiver options passed through the ssh transport, already quoted */
    char dest_args[12288] = "";
    size_t dlen = 0;
    uint64_t v;
    int c;

    o.progress = isatty(2);
    while ((c = getopt_long(argc, argv, "s:C:h", opts, NULL)) != -1) {
        switch (c) {
        case 's': o.ssh_command = optarg; break;
        case 'C': remote = optarg; break;
        case 'p':
            if (!strcmp(optarg, "default")) o.policy = INCMIG_POLICY_DEFAULT;
            else if (!strcmp(optarg, "precopy")) o.policy = INCMIG_POLICY_PRECOPY;
            else if (!strcmp(optarg, "single")) o.policy = INCMIG_POLICY_SINGLE;
            else {
                xl_usage_error("migrate", "unknown --policy '%s' (default, "
                               "precopy or single)", optarg);
                return 2;
            }
            break;
        case 'b':
            if (incmig_parse_size(optarg, &v) || v < 4096) {
                xl_usage_error("migrate", "bad --bandwidth '%s' (bytes/s, "
                               "e.g. 100M, at least 4K)", optarg);
                return 2;
            }
            o.bandwidth = v;
            break;
        case 'd':
            o.downtime_ms = (uint32_t)atoi(optarg);
            if (atoi(optarg) < 1 || atoi(optarg) > 600000) {
                xl_usage_error("migrate", "--downtime must be 1..600000 ms");
                return 2;
            }
            break;
        case 'm':
            o.max_rounds = atoi(optarg);
            if (o.max_rounds < 1 || o.max_rounds > 1000) {
                xl_usage_error("migrate", "--max-rounds must be 1..1000");
                return 2;
            }
            break;
        case 'z': o.compress = 1; break;
        case 'O':
            o.timeout_s = atoi(optarg);
            if (o.timeout_s < 1) {
                xl_usage_error("migrate", "--timeout must be >= 1 s");
                return 2;
            }
            break;
        case 'r':
            o.reconnect_s = atoi(optarg);
            if (o.reconnect_s < 1) {
                xl_usage_error("migrate", "--reconnect must be >= 1 s");
                return 2;
            }
            break;
        case 'j': json = optarg; break;
        case 'P': o.progress = 0; break;
        case 'I': dest_image = optarg; break;
        case 'N': dest_nbd = optarg; break;
        case 'D': case 'R': case 'T': {
            char q[4200];
            const char *flag = c == 'D' ? "--disk" : c == 'R' ? "--root" : "--target";
            if (shell_quote(optarg, q, sizeof q) ||
                dlen + strlen(flag) + strlen(q) + 3 >= sizeof dest_args) {
                xl_usage_error("migrate", "destination options too long");
                return 2;
            }
            dlen += (size_t)snprintf(dest_args + dlen, sizeof dest_args - dlen,
                                     " %s %s", flag, q);
            break;
        }
        case 'g': incmig_log_setup(2, stderr, "xl-incmig migrate"); break;
        case 'S': o.state_dir = optarg; break;
        case 'U': o.resume = optarg; break;
        case 'h': help(); return 0;
        default: return 2;
        }
    }
    if (o.resume) {
        if (optind != argc || o.ssh_command || dest_image || dest_nbd || dlen ||
            strcmp(remote, "xl-incmig migrate-receive")) {
            xl_usage_error("migrate", "--resume takes the domain, host and "
                           "transport from its state file: no DOMAIN, HOST, "
                           "-s, -C or --dest-* with it");
            return 2;
        }
    } else if (optind != argc - 2) {
        xl_usage_error("migrate", "need DOMAIN and HOST");
        return 2;
    } else {
        o.domain = argv[optind];
        o.host = argv[optind + 1];
    }
    if (o.resume) {
        /* all from the state file */
    } else if (!o.ssh_command || *o.ssh_command) {
        char qi[4200] = "", qn[4200] = "", one[8500] = "";
        if (!dlen && (!dest_image || !dest_nbd)) {
            xl_usage_error("migrate", "the ssh transport needs --dest-image "
                           "and --dest-nbd (a one-disk domain), or --dest-disk "
                           "NAME=PATH for each disk, for the receiver");
            return 2;
        }
        if ((dest_image && shell_quote(dest_image, qi, sizeof qi)) ||
            (dest_nbd && shell_quote(dest_nbd, qn, sizeof qn))) {
            xl_usage_error("migrate", "destination path too long");
            return 2;
        }
        if (dest_image && dest_nbd)
            snprintf(one, sizeof one, " --image %s --nbd %s", qi, qn);
        /* where the receiver waits for our next ssh session if the link
         * breaks during PULL */
        char rv[128];
        snprintf(rv, sizeof rv, "/tmp/incmig-rendezvous-%ld-%ld.sock",
                 (long)getpid(), (long)time(NULL));
        snprintf(remote_buf, sizeof remote_buf,
                 "%s%s%s --exit-when-done --rendezvous %s",
                 remote, one, dest_args, rv);
        snprintf(attach_buf, sizeof attach_buf, "%s --attach %s", remote, rv);
        o.remote_command = remote_buf;
        o.attach_command = attach_buf;
    } else if (dest_image || dest_nbd || dlen) {
        xl_usage_error("migrate", "--dest-image/--dest-nbd belong, as "
                       "every --dest-* option, to the receiver's command "
                       "line with plain TCP (-s \"\")");
        return 2;
    }
    int rc = incmig_migrate(&o, &rep);
    if (xl_verbose && (rc == 0 || rep.wire_total > 0))
        incmig_report_print(&rep, stdout);
    if (json) {
        FILE *f = strcmp(json, "-") ? fopen(json, "w") : stdout;
        if (!f) {
            perror(json);
        } else {
            incmig_report_json(&rep, f);
            if (f != stdout)
                fclose(f);
        }
    }
    if (rc) {
        if (o.resume)
            fprintf(stderr, "xl-incmig migrate: resume of %s failed: %s\n",
                    o.resume, incmig_strerror(rc));
        else
            fprintf(stderr, "xl-incmig migrate: migration of %s to %s "
                    "failed: %s\n", o.domain, o.host, incmig_strerror(rc));
        return 1;
    }
    return 0;
}
