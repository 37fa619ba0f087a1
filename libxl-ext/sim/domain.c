/* sim/domain.c: the "sim" domain backend (the toolstack's side of the
 * simulated domain) and the control protocol's line helpers.
 *
 * The protocol is described in incmig-internal.h next to its declarations.
 * Everything the client reads is bounded: a line is at most
 * INCMIG_CTL_LINE_MAX bytes and a bitmap payload at most what a disk of
 * INCMIG_DISK_MAX bytes can need.
 *
 * Entry points: incmig__sim_domain_open (the backend, reached through the
 * table in backends.c), the line helpers used by sim/serve.c.
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
 * newline would swallow the binary payload that may follow.  A descriptor
 * passed with the line (SCM_RIGHTS) goes to *passed_r (-1 when none);
 * with passed_r NULL any such descriptor is closed. */
int incmig__ctl_readline_fd(int fd, char *buf, size_t cap, int *passed_r)
{
    size_t n = 0;

    if (passed_r)
        *passed_r = -1;
    for (;;) {
        char c;
        union {
            struct cmsghdr h;
            char buf[CMSG_SPACE(sizeof(int))];
        } u;
        struct iovec iov = { .iov_base = &c, .iov_len = 1 };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
                             .msg_control = u.buf,
                             .msg_controllen = sizeof u.buf };
        ssize_t r = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
        if (r < 0 && errno == ENOTSOCK)
            r = read(fd, &c, 1);
        else if (r > 0)
            for (struct cmsghdr *h = CMSG_FIRSTHDR(&mh); h;
                 h = CMSG_NXTHDR(&mh, h)) {
                int pfd;
                if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS ||
                    h->cmsg_len != CMSG_LEN(sizeof(int)))
                    continue;
                memcpy(&pfd, CMSG_DATA(h), sizeof pfd);
                if (passed_r && *passed_r < 0)
                    *passed_r = pfd;
                else
                    close(pfd);
            }
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

int incmig__ctl_readline(int fd, char *buf, size_t cap)
{
    return incmig__ctl_readline_fd(fd, buf, cap, NULL);
}

/* ---- the sim domain backend -------------------------------------------- */

struct sim_domain {
    struct incmig__domain d;
    int fd;
    char ctl_path[4096];
};

/* Send one command on fd (with a descriptor attached when pass_fd >= 0),
 * read "OK rest" into reply (or log the ERR). */
static int sim_cmd_on(struct sim_domain *s, int fd, const char *cmd,
                      int pass_fd, char *reply, size_t cap)
{
    char line[INCMIG_CTL_LINE_MAX];
    int rc;

    snprintf(line, sizeof line, "%s\n", cmd);
    if (pass_fd >= 0) {
        union {
            struct cmsghdr h;
            char buf[CMSG_SPACE(sizeof(int))];
        } u;
        struct iovec iov = { .iov_base = line, .iov_len = strlen(line) };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
                             .msg_control = u.buf,
                             .msg_controllen = sizeof u.buf };
        memset(&u, 0, sizeof u);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
        ssize_t n;
        do
            n = sendmsg(fd, &mh, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        rc = n == (ssize_t)iov.iov_len ? 0 : INCMIG_ELINK;
    } else {
        rc = incmig__ctl_writeall(fd, line, strlen(line));
    }
    if (!rc)
        rc = incmig__ctl_readline(fd, line, sizeof line);
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

static int sim_cmd(struct sim_domain *s, const char *cmd, char *reply,
                   size_t cap)
{
    return sim_cmd_on(s, s->fd, cmd, -1, reply, cap);
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
        ERR("simulated guest at %s: bad bitmap header '%s' for disk %d "
            "(expected %" PRIu64 " bits)", s->ctl_path, reply, disk,
            out->nbits);
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

/* The state stream runs on a connection of its own (the first one keeps
 * answering GETCLEAR meanwhile); the reply comes once the guest is paused
 * and its whole state has been written to state_fd. */
static int sim_suspend(struct incmig__domain *d, int state_fd,
                       double *t_paused_r)
{
    struct sim_domain *s = (struct sim_domain *)d;
    char reply[128];
    int fd = -1, rc;

    rc = incmig__unix_connect(s->ctl_path, &fd);
    if (!rc)
        rc = sim_cmd_on(s, fd, "SUSPEND", state_fd, reply, sizeof reply);
    if (!rc && sscanf(reply, "%lf", t_paused_r) != 1) {
        ERR("simulated guest at %s: bad SUSPEND reply '%s'", s->ctl_path,
            reply);
        rc = INCMIG_EPROTO;
    }
    if (fd >= 0)
        close(fd);
    return rc;
}

static int sim_lineage(struct incmig__domain *d, int disk, uint8_t gen[16],
                       bool *bitmap_r, struct incmig__bitmap *out, char *why,
                       size_t cap)
{
    struct sim_domain *s = (struct sim_domain *)d;
    char cmd[32], reply[INCMIG_CTL_LINE_MAX], hex[33];
    uint64_t nbits, len;
    unsigned has;
    int pos = 0, rc;
    uint8_t *buf = NULL;

    *bitmap_r = false;
    snprintf(cmd, sizeof cmd, "LINEAGE %d", disk);
    rc = sim_cmd(s, cmd, reply, sizeof reply);
    if (rc)
        return rc;
    if (sscanf(reply, "%32s %u %" SCNu64 " %" SCNu64 " %n", hex, &has, &nbits,
               &len, &pos) != 4 || pos == 0 || incmig__gen_parse(hex, gen) ||
        has > 1 || nbits != out->nbits || (has && len == 0) ||
        (!has && len) || len > nbits / 8 + 64) {
        ERR("simulated guest at %s: bad lineage '%s' for disk %d",
            s->ctl_path, reply, disk);
        return INCMIG_EPROTO;
    }
    snprintf(why, cap, "%s", reply + pos);
    if (!has)
        return 0;
    buf = malloc(len);
    if (!buf)
        return INCMIG_ENOMEM;
    rc = incmig__ctl_readall(s->fd, buf, len);
    if (!rc)
        rc = incmig__bitmap_decode(out, 0, nbits, buf, len);
    free(buf);
    *bitmap_r = !rc;
    return rc;
}

static int sim_adopt(struct incmig__domain *d, int disk, const uint8_t gen[16])
{
    char cmd[64], hex[33];
    snprintf(cmd, sizeof cmd, "ADOPT %d %s", disk, incmig__gen_hex(gen, hex));
    return sim_cmd((struct sim_domain *)d, cmd, NULL, 0);
}

static int sim_activity(struct incmig__domain *d, uint64_t *reqs_r,
                        double *busy_s_r)
{
    struct sim_domain *s = (struct sim_domain *)d;
    char reply[128];
    uint64_t ns;
    int rc = sim_cmd(s, "ACTIVITY", reply, sizeof reply);

    if (!rc && sscanf(reply, "%" SCNu64 " %" SCNu64, reqs_r, &ns) != 2) {
        ERR("simulated guest at %s: bad ACTIVITY reply '%s'", s->ctl_path,
            reply);
        rc = INCMIG_EPROTO;
    }
    if (!rc)
        *busy_s_r = (double)ns / 1e9;
    return rc;
}

static int sim_simple(struct incmig__domain *d, const char *cmd)
{
    return sim_cmd((struct sim_domain *)d, cmd, NULL, 0);
}
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
    .lineage = sim_lineage,
    .adopt = sim_adopt,
    .suspend = sim_suspend,
    .activity = sim_activity,
    .resume = sim_resume,
    .commit = sim_commit,
    .release = sim_release,
    .close = sim_close,
};

static int sim_disk_info(struct sim_domain *s, int i)
{
    char cmd[32], reply[INCMIG_CTL_LINE_MAX];
    struct incmig__dom_disk *dk = &s->d.disks[i];
    uint64_t size, bs;
    int pos = 0, rc;

    snprintf(cmd, sizeof cmd, "DISK %d", i);
    rc = sim_cmd(s, cmd, reply, sizeof reply);
    if (rc)
        return rc;
    if (sscanf(reply, "%" SCNu64 " %" SCNu64 " %63s %n", &size, &bs,
               dk->name, &pos) != 3 || !pos || !reply[pos] ||
        !incmig__block_size_valid(bs) || size == 0 || size > INCMIG_DISK_MAX) {
        ERR("simulated guest at %s: bad DISK reply '%s'", s->ctl_path, reply);
        return INCMIG_EPROTO;
    }
    snprintf(dk->path, sizeof dk->path, "%s", reply + pos);
    dk->size = size;
    dk->block_size = (uint32_t)bs;
    return 0;
}

int incmig__sim_domain_open(struct incmig__domain **d_r, const char *ctl_path)
{
    struct sim_domain *s;
    char reply[INCMIG_CTL_LINE_MAX];
    int n = 0, pos = 0, rc;

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
    if (sscanf(reply, "%d %n", &n, &pos) != 1 || n < 1 ||
        n > (int)INCMIG_MAX_DISKS || !reply[pos] ||
        strlen(reply + pos) > INCMIG_NAME_MAX) {
        ERR("simulated guest at %s: bad INFO reply '%s'", ctl_path, reply);
        rc = INCMIG_EPROTO;
        goto out;
    }
    snprintf(s->d.name, sizeof s->d.name, "%s", reply + pos);
    s->d.ndisks = n;
    for (int i = 0; i < n && !rc; i++)
        rc = sim_disk_info(s, i);
    if (rc)
        goto out;
    *d_r = &s->d;
    s = NULL;
out:
    if (s)
        sim_close(&s->d);
    return rc;
}
