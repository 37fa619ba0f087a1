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
           "  --force            overwrite an existing image of another size\n"
           "  --rendezvous PATH  (stdin/stdout mode) unix socket where the\n"
           "                     source reattaches after a lost link in PULL\n"
           "  --attach PATH      relay stdin/stdout to the receiver waiting on\n"
           "                     PATH (what the source runs over its new ssh\n"
           "                     session to resume PULL)\n");
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
        { "image", required_argument, NULL, 'i' },
        { "nbd", required_argument, NULL, 'n' },
        { "listen", required_argument, NULL, 'l' },
        { "exit-when-done", no_argument, NULL, 'x' },
        { "reconnect", required_argument, NULL, 'r' },
        { "force", no_argument, NULL, 'f' },
        { "rendezvous", required_argument, NULL, 'R' },
        { "attach", required_argument, NULL, 'A' },
        { "help", no_argument, NULL, 'h' },
        { 0 },
    };
    struct incmig_receive_opts o = {0};
    const char *attach_path = NULL;
    int c;

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'i': o.image = optarg; break;
        case 'n': o.nbd_uri = optarg; break;
        case 'l': o.listen = optarg; break;
        case 'x': o.exit_when_done = 1; break;
        case 'f': o.force = 1; break;
        case 'R': o.rendezvous = optarg; break;
        case 'A': attach_path = optarg; break;
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
    if (attach_path) {
        if (optind != argc || o.image || o.nbd_uri) {
            xl_usage_error("migrate-receive", "--attach takes no other "
                           "option");
            return 2;
        }
        return attach(attach_path);
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
