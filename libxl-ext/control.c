/* control.c: the control socket of a running migration (migrate
 * --control PATH), and its client (incmig_migrate_set_bandwidth).
 *
 * Protocol: one request line per connection on a unix socket, one reply
 * line, then the server closes:
 *   BANDWIDTH <bytes/s>   0 = no cap  -> "OK <bytes/s> <bytes sent so far>"
 *   anything else                     -> "ERR <message>"
 * Lines are at most INCMIG_CTL_LINE_MAX bytes; a client has CLIENT_S
 * seconds to send its line (one that says nothing does not hold the
 * socket).  The new cap is applied by the callback the owner gives (the
 * stream's pacing takes it before its next record, well within a second).
 *
 * Entry points (incmig-internal.h, "control socket"): incmig__mctl_start,
 * incmig__mctl_stop; incmig_migrate_set_bandwidth (public).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "incmig-internal.h"

#define CLIENT_S 2

struct incmig__mctl {
    int lfd;
    int wake[2];
    char *path;
    pthread_t thr;
    incmig__mctl_bw_fn set_bw;
    void *opaque;
};

static void serve_one(struct incmig__mctl *c, int fd)
{
    struct timeval tv = { .tv_sec = CLIENT_S };
    char line[INCMIG_CTL_LINE_MAX], reply[128];
    uint64_t bw, sent = 0;
    char extra;

    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (incmig__ctl_readline(fd, line, sizeof line) != 0)
        return;
    if (sscanf(line, "BANDWIDTH %" SCNu64 " %c", &bw, &extra) == 1 &&
        strspn(line + 10, "0123456789") == strlen(line + 10) &&
        strlen(line + 10) <= 19) {
        int rc = c->set_bw(c->opaque, bw, &sent);
        if (rc)
            snprintf(reply, sizeof reply, "ERR %s\n", incmig_strerror(rc));
        else
            snprintf(reply, sizeof reply, "OK %" PRIu64 " %" PRIu64 "\n", bw,
                     sent);
        if (!rc && bw)
            INFO("bandwidth cap now %.1f MB/s (control socket)", bw / 1e6);
        else if (!rc)
            INFO("bandwidth cap lifted (control socket)");
    } else {
        snprintf(reply, sizeof reply, "ERR unknown request (expected "
                 "BANDWIDTH <bytes/s>)\n");
    }
    (void)incmig__ctl_writeall(fd, reply, strlen(reply));
}

static void *mctl_main(void *arg)
{
    struct incmig__mctl *c = arg;

    for (;;) {
        struct pollfd p[2] = {
            { .fd = c->lfd, .events = POLLIN },
            { .fd = c->wake[0], .events = POLLIN },
        };
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            LOGE("control socket %s: poll", c->path);
            break;
        }
        if (p[1].revents)
            break;
        if (p[0].revents & POLLIN) {
            int fd = accept4(c->lfd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0) {
                serve_one(c, fd);
                close(fd);
            }
        }
    }
    return NULL;
}

int incmig__mctl_start(struct incmig__mctl **c_r, const char *path,
                       incmig__mctl_bw_fn set_bw, void *opaque)
{
    struct incmig__mctl *c;
    int rc, r;

    *c_r = NULL;
    c = calloc(1, sizeof *c);
    if (!c)
        return INCMIG_ENOMEM;
    c->lfd = c->wake[0] = c->wake[1] = -1;
    c->set_bw = set_bw;
    c->opaque = opaque;
    c->path = strdup(path);
    if (!c->path) {
        rc = INCMIG_ENOMEM;
        goto out;
    }
    rc = incmig__unix_listen(path, &c->lfd);
    if (rc)
        goto out;
    if (pipe2(c->wake, O_CLOEXEC) < 0) {
        LOGE("control socket: pipe");
        rc = INCMIG_EIO;
        goto out;
    }
    r = pthread_create(&c->thr, NULL, mctl_main, c);
    if (r) {
        errno = r;
        LOGE("control socket %s: cannot start its thread", path);
        rc = INCMIG_ENOMEM;
        goto out;
    }
    *c_r = c;
    c = NULL;
out:
    if (c) {
        if (c->lfd >= 0) {
            close(c->lfd);
            unlink(path);
        }
        if (c->wake[0] >= 0)
            close(c->wake[0]);
        if (c->wake[1] >= 0)
            close(c->wake[1]);
        free(c->path);
        free(c);
    }
    return rc;
}

void incmig__mctl_stop(struct incmig__mctl *c)
{
    if (!c)
        return;
    (void)!write(c->wake[1], "q", 1);
    pthread_join(c->thr, NULL);
    close(c->lfd);
    unlink(c->path);
    close(c->wake[0]);
    close(c->wake[1]);
    free(c->path);
    free(c);
}

int incmig_migrate_set_bandwidth(const char *control_path, uint64_t bandwidth,
                                 uint64_t *bytes_sent_r)
{
    struct timeval tv = { .tv_sec = 5 };
    char line[INCMIG_CTL_LINE_MAX];
    uint64_t echo, sent;
    int fd = -1, rc;

    rc = incmig__unix_connect(control_path, &fd);
    if (rc) {
        ERR("no migration answers on %s (is `xl-incmig migrate --control "
            "%s` running?)", control_path, control_path);
        goto out;
    }
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    snprintf(line, sizeof line, "BANDWIDTH %" PRIu64 "\n", bandwidth);
    rc = incmig__ctl_writeall(fd, line, strlen(line));
    if (!rc)
        rc = incmig__ctl_readline(fd, line, sizeof line);
    if (rc) {
        ERR("the migration on %s did not answer", control_path);
        rc = INCMIG_ELINK;
        goto out;
    }
    if (sscanf(line, "OK %" SCNu64 " %" SCNu64, &echo, &sent) != 2 ||
        echo != bandwidth) {
        ERR("the migration on %s refused: %s", control_path,
            strncmp(line, "ERR ", 4) ? line : line + 4);
        rc = INCMIG_EINVAL;
        goto out;
    }
    if (bytes_sent_r)
        *bytes_sent_r = sent;
out:
    if (fd >= 0)
        close(fd);
    return rc;
}
