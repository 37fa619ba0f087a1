/* cmd-demo.c: `xl-incmig demo`, a live migration of the simulated guest
 * on this machine, with every part a real process:
 *
 *   serve   (source disk: NBD export + write tracking)   unix socket
 *   guest   (NBD client writing and checking its disk)   -> source, then
 *                                                           destination
 *   migrate (this process: the toolstack)                 -> TCP loopback
 *   migrate-receive (destination: image + PULL gate)
 *   verify  (destination image against the guest's journal and the
 *            image as it was before the guest started)
 *
 * Prints the report, the guest's own view of the pause, and
 * "N blocks verified, M mismatches".
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "incmig.h"
#include "xl-incmig.h"

static void help(void)
{
    printf("usage: xl-incmig demo [options]\n"
           "Live-migrate a simulated guest, with its disk, between two\n"
           "processes on this machine, and verify every block afterwards.\n\n"
           "  --size SIZE        disk size (default 512M), half of it allocated\n"
           "  --rate RATE        guest writes, bytes/s (default 20M; 0 = idle)\n"
           "  --policy P         default | precopy | single\n"
           "  --bandwidth RATE   cap on the migration link (default none)\n"
           "  --compress[=MODE]  block data: auto (default), on, off\n"
           "  --warmup SECS      guest runs before migrating (default 2)\n"
           "  --after SECS       guest runs on the destination after (default 2)\n"
           "  --dir DIR          work directory (default: a new one in /tmp)\n"
           "  --json FILE        the migration report as JSON\n"
           "  --keep             keep the work directory\n");
}

static pid_t spawn(const char *log, char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(xl_self, argv);
        _exit(127);
    }
    return pid;
}

static int wait_exit(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static bool wait_file(const char *path, double secs)
{
    struct timespec ts = { 0, 50 * 1000 * 1000 };
    for (int i = 0; i < secs * 20; i++) {
        if (access(path, F_OK) == 0)
            return true;
        nanosleep(&ts, NULL);
    }
    return false;
}

static int free_port(void)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    socklen_t len = sizeof sa;
    int port = -1, fd = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* Source image: every other MiB holds pseudo-random data, the rest is a
 * hole; the same bytes go to the "original" copy used by verify. */
static int make_images(const char *src, const char *orig, uint64_t size)
{
    const size_t chunk = 1 << 20;
    uint64_t x = 0x9e3779b97f4a7c15ull;
    int rc = -1;
    uint64_t *buf = malloc(chunk);
    int a = open(src, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int b = open(orig, O_WRONLY | O_CREAT | O_TRUNC, 0644);

    if (!buf || a < 0 || b < 0 || ftruncate(a, (off_t)size) < 0 ||
        ftruncate(b, (off_t)size) < 0)
        goto out;
    for (uint64_t off = 0; off < size; off += 2 * chunk) {
        size_t len = size - off < chunk ? (size_t)(size - off) : chunk;
        for (size_t i = 0; i < chunk / 8; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            buf[i] = x;
        }
        if (pwrite(a, buf, len, (off_t)off) != (ssize_t)len ||
            pwrite(b, buf, len, (off_t)off) != (ssize_t)len)
            goto out;
    }
    rc = 0;
out:
    if (a >= 0)
        close(a);
    if (b >= 0)
        close(b);
    free(buf);
    return rc;
}

static void print_file(const char *path, const char *prefix)
{
    char line[1024];
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    while (fgets(line, sizeof line, f))
        printf("%s%s", prefix, line);
    fclose(f);
}

int cmd_demo(int argc, char **argv)
{
    static const struct option opts[] = {
        { "size", required_argument, NULL, 's' },
        { "rate", required_argument, NULL, 'r' },
        { "policy", required_argument, NULL, 'p' },
        { "bandwidth", required_argument, NULL, 'b' },
        { "compress", optional_argument, NULL, 'z' },
        { "warmup", required_argument, NULL, 'w' },
        { "after", required_argument, NULL, 'a' },
        { "dir", required_argument, NULL, 'd' },
        { "json", required_argument, NULL, 'j' },
        { "keep", no_argument, NULL, 'k' },
        { "help", no_argument, NULL, 'h' },
        { 0 },
    };
    struct incmig_migrate_opts mo = { .ssh_command = "" };
    struct incmig_report rep;
    uint64_t size = 512ull << 20;
    const char *rate = "20M", *json = NULL, *policy = "default";
    char dirbuf[] = "/tmp/incmig-demo.XXXXXX";
    const char *dir = NULL;
    double warmup = 2, after = 2;
    int keep = 0, c, status = 1;
    pid_t serve = -1, guest = -1, recv = -1;

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        uint64_t v;
        switch (c) {
        case 's':
            if (incmig_parse_size(optarg, &v) || v < (1 << 20) || v > (64ull << 30)) {
                xl_usage_error("demo", "--size must be 1M..64G");
                return 2;
            }
            size = v;
            break;
        case 'r':
            if (incmig_parse_size(optarg, &v)) {
                xl_usage_error("demo", "bad --rate '%s'", optarg);
                return 2;
            }
            rate = optarg;
            break;
        case 'p':
            policy = optarg;
            if (!strcmp(optarg, "precopy")) mo.policy = INCMIG_POLICY_PRECOPY;
            else if (!strcmp(optarg, "single")) mo.policy = INCMIG_POLICY_SINGLE;
            else if (strcmp(optarg, "default")) {
                xl_usage_error("demo", "unknown --policy '%s'", optarg);
                return 2;
            }
            break;
        case 'b':
            if (incmig_parse_size(optarg, &v) || v < 4096) {
                xl_usage_error("demo", "bad --bandwidth '%s'", optarg);
                return 2;
            }
            mo.bandwidth = v;
            break;
        case 'z':
            if (!optarg || !strcmp(optarg, "on")) {
                mo.compress = 1;
            } else if (!strcmp(optarg, "off")) {
                mo.compress = -1;
            } else if (!strcmp(optarg, "auto")) {
                mo.compress = 0;
            } else {
                xl_usage_error("demo", "bad --compress '%s' (auto, on or "
                               "off)", optarg);
                return 2;
            }
            break;
        case 'w': warmup = atof(optarg); break;
        case 'a': after = atof(optarg); break;
        case 'd': dir = optarg; break;
        case 'j': json = optarg; break;
        case 'k': keep = 1; break;
        case 'h': help(); return 0;
        default: return 2;
        }
    }
    if (optind != argc) {
        xl_usage_error("demo", "unexpected argument '%s'", argv[optind]);
        return 2;
    }
    if (!dir) {
        if (!mkdtemp(dirbuf)) {
            perror("mkdtemp");
            return 1;
        }
        dir = dirbuf;
    } else if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        perror(dir);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);

    char src[4200], orig[4200], dst[4200], ssock[4200], dsock[4200], ctl[4200],
        journal[4200], gstats[4200], slog[4200], glog[4200], rlog[4200],
        vlog[4200], uris[9000], listen[64], sizebuf[32], dom[4300];
#define P(buf, name) snprintf(buf, sizeof buf, "%s/%s", dir, name)
    P(src, "source.img"); P(orig, "original.img"); P(dst, "destination.img");
    P(ssock, "source.sock"); P(dsock, "destination.sock"); P(ctl, "source.ctl");
    P(journal, "guest.journal"); P(gstats, "guest.json");
    P(slog, "serve.log"); P(glog, "guest.log"); P(rlog, "receive.log");
    P(vlog, "verify.log");
#undef P
    snprintf(uris, sizeof uris, "nbd+unix:///?socket=%s,nbd+unix:///?socket=%s",
             ssock, dsock);
    snprintf(dom, sizeof dom, "sim:%s", ctl);
    snprintf(sizebuf, sizeof sizebuf, "%" PRIu64, size);
    int port = free_port();
    if (port < 0) {
        fprintf(stderr, "xl-incmig demo: no free TCP port on 127.0.0.1\n");
        goto out;
    }
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);

    printf("demo: %s disk of %" PRIu64 " MiB (half allocated), guest writing "
           "%s/s, policy %s, work directory %s\n", "simulated", size >> 20,
           rate, policy, dir);
    fflush(stdout);
    /* A demo run again in the same --dir: its own earlier copy goes (the
     * receiver never overwrites a file it did not create). */
    if (unlink(dst) < 0 && errno != ENOENT) {
        fprintf(stderr, "xl-incmig demo: cannot remove %s: %s\n", dst,
                strerror(errno));
        goto out;
    }
    if (make_images(src, orig, size)) {
        fprintf(stderr, "xl-incmig demo: cannot create images in %s: %s\n",
                dir, strerror(errno));
        goto out;
    }
    char nbd_s[4300], nbd_d[4300];
    snprintf(nbd_s, sizeof nbd_s, "unix:%s", ssock);
    snprintf(nbd_d, sizeof nbd_d, "unix:%s", dsock);
    serve = spawn(slog, (char *[]){ "xl-incmig", "serve", "--nbd", nbd_s,
                                    "--control", ctl, src, NULL });
    if (!wait_file(ctl, 10)) {
        fprintf(stderr, "xl-incmig demo: the source export did not start; "
                "see %s\n", slog);
        goto out;
    }
    guest = spawn(glog, (char *[]){ "xl-incmig", "guest", "--nbd", uris,
                                    "--seconds", "0", "--rate", (char *)rate,
                                    "--journal", journal, "--stats-json",
                                    gstats, NULL });
    recv = spawn(rlog, (char *[]){ "xl-incmig", "migrate-receive", "--listen",
                                   listen, "--image", dst, "--nbd", nbd_d,
                                   "--exit-when-done", NULL });
    usleep((useconds_t)(warmup * 1e6));

    mo.domain = dom;
    mo.host = listen;
    mo.progress = isatty(2);
    mo.reconnect_s = 30;
    int rc = incmig_migrate(&mo, &rep);
    incmig_report_print(&rep, stdout);
    if (json) {
        FILE *f = fopen(json, "w");
        if (f) {
            incmig_report_json(&rep, f);
            fclose(f);
        }
    }
    if (rc) {
        fprintf(stderr, "xl-incmig demo: migration failed: %s (logs in %s)\n",
                incmig_strerror(rc), dir);
        keep = 1;
        goto out;
    }
    usleep((useconds_t)(after * 1e6));
    kill(guest, SIGTERM);
    int gst = wait_exit(guest);
    guest = -1;
    int rst = wait_exit(recv);
    recv = -1;
    print_file(glog, "");
    pid_t v = spawn(vlog, (char *[]){ "xl-incmig", "verify", "--journal",
                                      journal, "--image", dst, "--original",
                                      orig, NULL });
    int vst = wait_exit(v);
    print_file(vlog, "");
    if (gst || rst || vst) {
        fprintf(stderr, "xl-incmig demo: FAILED (guest %d, receiver %d, "
                "verify %d); logs kept in %s\n", gst, rst, vst, dir);
        keep = 1;
        goto out;
    }
    status = 0;
out:
    if (guest > 0) {
        kill(guest, SIGTERM);
        wait_exit(guest);
    }
    if (recv > 0) {
        kill(recv, SIGTERM);
        wait_exit(recv);
    }
    if (serve > 0) {
        kill(serve, SIGTERM);
        wait_exit(serve);
    }
    if (!keep) {
        const char *names[] = { "source.img", "original.img", "destination.img",
                                "guest.journal", "guest.json", "serve.log",
                                "guest.log", "receive.log", "verify.log",
                                "guest.journal.tmp", NULL };
        for (int i = 0; names[i]; i++) {
            char p[4200];
            snprintf(p, sizeof p, "%s/%s", dir, names[i]);
            unlink(p);
        }
        rmdir(dir);
    } else {
        printf("work directory kept: %s\n", dir);
    }
    return status;
}
