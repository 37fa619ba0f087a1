/* ctl.c: the control protocol between the toolstack (migrate) and the
 * simulated guest's source disk (serve.c), and the "sim" domain backend.
 *
 * The protocol is described in incmig-internal.h next to its declarations.
 * Everything the client reads is bounded: a line is at most
 * INCMIG_CTL_LINE_MAX bytes and a bitmap payload at most what a disk of
 * INCMIG_DISK_MAX bytes can need.
 *
 * Entry points: incmig__sim_domain_open (the backend), the line and socket
 * helpers used by serve.c.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "incmig-internal.h"

int incmig__ctl_writeall(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;

    while (len) {
        ssize_t r = send(fd, p, len, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return INCMIG_ELINK;
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

int incmig__ctl_readall(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len) {
        ssize_t r = read(fd, p, len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return INCMIG_ELINK;
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

/* One byte at a time: lines are rare and short, and reading past the
 * newline would swallow the binary payload that may follow. */
int incmig__ctl_readline(int fd, char *buf, size_t cap)
{
    size_t n = 0;

    for (;;) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return INCMIG_ELINK;
        if (c == '\n')
            break;
        if (n + 1 >= cap)
            return INCMIG_EPROTO;
        buf[n++] = c;
    }
    buf[n] = '\0';
    return 0;
}

static int unix_addr(const char *path, struct sockaddr_un *sa)
{
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa->sun_path) {
        ERR("socket path too long (max %zu bytes): %s",
            sizeof sa->sun_path - 1, path);
        return INCMIG_EINVAL;
    }
    strcpy(sa->sun_path, path);
    return 0;
}

int incmig__unix_listen(const char *path, int *fd_r)
{
    struct sockaddr_un sa;
    int rc = unix_addr(path, &sa);
    if (rc)
        return rc;
    /* A stale socket from an earlier run would make bind fail; anything
     * that is not a socket is somebody's file and is left alone. */
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            ERR("%s exists and is not a socket; choose another path", path);
            return INCMIG_EINVAL;
        }
        unlink(path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        LOGE("socket");
        return INCMIG_EIO;
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        listen(fd, SOMAXCONN) < 0) {
        LOGE("cannot listen on %s", path);
        close(fd);
        return INCMIG_EIO;
    }
    *fd_r = fd;
    return 0;
}

int incmig__unix_connect(const char *path, int *fd_r)
{
    struct sockaddr_un sa;
    int rc = unix_addr(path, &sa);
    if (rc)
        return rc;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        LOGE("socket");
        return INCMIG_EIO;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        LOGE("cannot connect to %s", path);
        close(fd);
        return INCMIG_EIO;
    }
    *fd_r = fd;
    return 0;
}

/* ---- the sim domain backend -------------------------------------------- */

struct sim_domain {
    struct incmig__domain d;
    int fd;
    char ctl_path[4096];
};

/* Send one command, read "OK rest" into reply (or log the ERR). */
static int sim_cmd(struct sim_domain *s, const char *cmd, char *reply,
                   size_t cap)
{
    char line[INCMIG_CTL_LINE_MAX];
    int rc;

    snprintf(line, sizeof line, "%s\n", cmd);
    rc = incmig__ctl_writeall(s->fd, line, strlen(line));
    if (!rc)
        rc = incmig__ctl_readline(s->fd, line, sizeof line);
    if (rc) {
        ERR("simulated guest at %s: no answer to %s (is `xl-incmig serve` "
            "still running?)", s->ctl_path, cmd);
        return rc;
    }
    if (strncmp(line, "OK", 2) != 0) {
        ERR("simulated guest at %s refused %s: %s", s->ctl_path, cmd,
            strncmp(line, "ERR ", 4) ? line : line + 4);
        return INCMIG_EPEER;
    }
    if (reply)
        snprintf(reply, cap, "%s", line[2] ? line + 3 : "");
    return 0;
}

static int sim_get_and_clear(struct incmig__domain *d, int disk,
                             struct incmig__bitmap *out)
{
    struct sim_domain *s = (struct sim_domain *)d;
    char cmd[32], reply[128];
    uint64_t nbits, len;
    uint8_t *buf = NULL;
    int rc;

    snprintf(cmd, sizeof cmd, "GETCLEAR %d", disk);
    rc = sim_cmd(s, cmd, reply, sizeof reply);
    if (rc)
        goto out;
    if (sscanf(reply, "%" SCNu64 " %" SCNu64, &nbits, &len) != 2 ||
        nbits != out->nbits || len == 0 || len > nbits / 8 + 64) {
        ERR("simulated guest at %s: bad bitmap header '%s' (expected %" PRIu64
            " bits)", s->ctl_path, reply, out->nbits);
        rc = INCMIG_EPROTO;
        goto out;
    }
    buf = malloc(len);
    if (!buf) {
        rc = INCMIG_ENOMEM;
        goto out;
    }
    rc = incmig__ctl_readall(s->fd, buf, len);
    if (rc) {
        ERR("simulated guest at %s: bitmap truncated", s->ctl_path);
        goto out;
    }
    rc = incmig__bitmap_decode(out, 0, nbits, buf, len);
out:
    free(buf);
    return rc;
}

static int sim_simple(struct incmig__domain *d, const char *cmd)
{
    return sim_cmd((struct sim_domain *)d, cmd, NULL, 0);
}
static int sim_suspend(struct incmig__domain *d) { return sim_simple(d, "SUSPEND"); }
static int sim_resume(struct incmig__domain *d) { return sim_simple(d, "RESUME"); }
static int sim_commit(struct incmig__domain *d) { return sim_simple(d, "COMMIT"); }
static int sim_release(struct incmig__domain *d) { return sim_simple(d, "RELEASE"); }

static void sim_close(struct incmig__domain *d)
{
    struct sim_domain *s = (struct sim_domain *)d;
    if (s->fd >= 0)
        close(s->fd);
    free(s);
}

static const struct incmig__domain_ops sim_ops = {
    .get_and_clear = sim_get_and_clear,
    .suspend = sim_suspend,
    .resume = sim_resume,
    .commit = sim_commit,
    .release = sim_release,
    .close = sim_close,
};

int incmig__sim_domain_open(struct incmig__domain **d_r, const char *ctl_path)
{
    struct sim_domain *s;
    char reply[INCMIG_CTL_LINE_MAX];
    uint64_t size, bs;
    int pos = 0, rc;

    s = calloc(1, sizeof *s);
    if (!s)
        return INCMIG_ENOMEM;
    s->fd = -1;
    s->d.ops = &sim_ops;
    snprintf(s->ctl_path, sizeof s->ctl_path, "%s", ctl_path);
    rc = incmig__unix_connect(ctl_path, &s->fd);
    if (rc) {
        ERR("no simulated guest at %s: start one with `xl-incmig serve`",
            ctl_path);
        goto out;
    }
    rc = sim_cmd(s, "INFO", reply, sizeof reply);
    if (rc)
        goto out;
    struct incmig__dom_disk *dk = &s->d.disks[0];
    if (sscanf(reply, "%" SCNu64 " %" SCNu64 " %63s %n", &size, &bs,
               dk->name, &pos) != 3 || !pos || !reply[pos] ||
        !incmig__block_size_valid(bs) || size == 0 || size > INCMIG_DISK_MAX) {
        ERR("simulated guest at %s: bad INFO reply '%s'", ctl_path, reply);
        rc = INCMIG_EPROTO;
        goto out;
    }
    snprintf(dk->path, sizeof dk->path, "%s", reply + pos);
    dk->size = size;
    dk->block_size = (uint32_t)bs;
    snprintf(s->d.name, sizeof s->d.name, "%s", dk->name);
    s->d.ndisks = 1;
    *d_r = &s->d;
    s = NULL;
out:
    if (s)
        sim_close(&s->d);
    return rc;
}
