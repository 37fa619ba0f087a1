/* xl-incmig: live migration of a guest together with its local disks.
 *
 * One subcommand per file (cmd-*.c), each an entry of the table below,
 * the way xl and tmux are organised.  Only libincmig's public header is
 * used (and libnbd, by the simulated guest).
 */
#include "config.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "incmig.h"
#include "xl-incmig.h"

int xl_verbose = 1;
const char *xl_self = "xl-incmig";

/* stop: SIGINT/SIGTERM ask the library to end cleanly (incmig_stop), for
 * the long-running commands whose library calls honour it; the others keep
 * the default action or install their own handlers.  migrate and
 * migrate-receive are whole commands of the library, which takes the
 * signals it needs itself (as it does under xl). */
static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
    int stop;
} cmds[] = {
    { "migrate", cmd_migrate, "migrate a guest and its disks to another host", 0 },
    { "migrate-receive", cmd_receive, "receive a migration (run by migrate)", 0 },
    { "serve", cmd_serve, "serve a simulated domain's disks with write tracking", 1 },
    { "guest", cmd_guest, "run the simulated guest workload (an NBD client)", 0 },
    { "verify", cmd_verify, "check a disk image against a guest's journal", 0 },
    { "demo", cmd_demo, "live-migrate a simulated guest on this machine", 0 },
};

static void on_stop(int sig)
{
    (void)sig;
    incmig_stop();
}

void xl_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "xl-incmig %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see `xl-incmig %s --help` or xl-incmig(1))\n", cmd);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: xl-incmig [-v|-q] COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        fprintf(f, "  %-16s %s\n", cmds[i].name, cmds[i].summary);
    fprintf(f, "\n`xl-incmig COMMAND --help` for a command's options; "
               "xl-incmig(1) for the whole story.\n");
}

int main(int argc, char **argv)
{
    static char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        xl_self = self;
    }
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "-v"))
            xl_verbose++;
        else if (!strcmp(argv[i], "-q"))
            xl_verbose = 0;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--version")) {
            printf("xl-incmig %s\n", PACKAGE_VERSION);
            return 0;
        } else {
            fprintf(stderr, "xl-incmig: unknown option %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    for (size_t c = 0; c < sizeof cmds / sizeof cmds[0]; c++) {
        if (!strcmp(argv[i], cmds[c].name)) {
            char prefix[64];
            snprintf(prefix, sizeof prefix, "xl-incmig %s", cmds[c].name);
            incmig_log_setup(xl_verbose, stderr, prefix);
            /* A lost peer is an error return, never a signal. */
            signal(SIGPIPE, SIG_IGN);
            if (cmds[c].stop) {
                struct sigaction sa = { .sa_handler = on_stop };
                sigaction(SIGINT, &sa, NULL);
                sigaction(SIGTERM, &sa, NULL);
                /* the receiver outlives the ssh session that started it */
                signal(SIGHUP, SIG_IGN);
            }
            return cmds[c].fn(argc - i, argv + i);
        }
    }
    fprintf(stderr, "xl-incmig: unknown command '%s'\n", argv[i]);
    usage(stderr);
    return 2;
}
