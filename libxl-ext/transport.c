/* transport.c: the connections a migration runs over.
 *
 * xl's habit: by default the receiver is started on the destination with
 * ssh and the stream runs over ssh's stdin/stdout; `-s ""` (an empty ssh
 * command) means plain TCP to HOST:PORT, for trusted networks and tests.
 * The stream itself (stream.c) only sees a pair of fds.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "incmig-internal.h"

bool incmig__host_valid(const char *host)
{
    if (!host || !*host || strlen(host) > 255 || host[0] == '-')
        return false;
    for (const char *p = host; *p; p++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                    "0123456789.-_:@[]%", *p))
            return false;
    return true;
}

static int split_hostport(const char *hostport, char *host, size_t hcap,
                          char *port, size_t pcap)
{
    const char *colon;

    if (!incmig__host_valid(hostport))
        goto bad;
    if (hostport[0] == '[') {
        const char *close_b = strchr(hostport, ']');
        if (!close_b || close_b[1] != ':')
            goto bad;
        snprintf(host, hcap, "%.*s", (int)(close_b - hostport - 1),
                 hostport + 1);
        colon = close_b + 1;
    } else {
        colon = strrchr(hostport, ':');
        if (!colon)
            goto bad;
        snprintf(host, hcap, "%.*s", (int)(colon - hostport), hostport);
    }
    snprintf(port, pcap, "%s", colon + 1);
    if (!*port || strspn(port, "0123456789") != strlen(port) ||
        atoi(port) <= 0 || atoi(port) > 65535)
        goto bad;
    return 0;
bad:
    ERR("'%s' is not HOST:PORT", hostport ? hostport : "");
    return INCMIG_EINVAL;
}

static int resolve(const char *hostport, bool passive, struct addrinfo **ai_r)
{
    char host[256], port[16];
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
    int rc = split_hostport(hostport, host, sizeof host, port, sizeof port);
    if (rc)
        return rc;
    if (passive)
        hints.ai_flags = AI_PASSIVE;
    int r = getaddrinfo(*host ? host : NULL, port, &hints, ai_r);
    if (r) {
        ERR("cannot resolve %s: %s", hostport, gai_strerror(r));
        return INCMIG_EINVAL;
    }
    return 0;
}

static void tune(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int incmig__tcp_connect(const char *hostport, int *fd_r)
{
    struct addrinfo *ai = NULL;
    int fd = -1, rc = resolve(hostport, false, &ai);
    if (rc)
        return rc;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
            break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd < 0) {
        DBG("cannot connect to %s: %s", hostport, strerror(errno));
        return INCMIG_ELINK;
    }
    tune(fd);
    *fd_r = fd;
    return 0;
}

int incmig__tcp_listen(const char *hostport, int *fd_r)
{
    struct addrinfo *ai = NULL;
    int fd = -1, one = 1, rc = resolve(hostport, true, &ai);
    if (rc)
        return rc;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0)
            break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd < 0) {
        LOGE("cannot listen on %s", hostport);
        return INCMIG_EIO;
    }
    *fd_r = fd;
    return 0;
}

int incmig__tcp_accept(int lfd, double timeout_s, int *fd_r)
{
    double end = incmig__now() + timeout_s;
    for (;;) {
        int ms = 500;
        if (timeout_s >= 0) {
            double left = end - incmig__now();
            if (left <= 0)
                return INCMIG_ECANCEL;
            if (left * 1000 < ms)
                ms = (int)(left * 1000) + 1;
        }
        struct pollfd p = { .fd = lfd, .events = POLLIN };
        int r = poll(&p, 1, ms);
        if (r < 0 && errno != EINTR) {
            LOGE("poll on listening socket");
            return INCMIG_EIO;
        }
        if (r <= 0)
            continue;
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        tune(fd);
        *fd_r = fd;
        return 0;
    }
}

char *incmig__shell_quote(const char *s)
{
    size_t n = 3;
    for (const char *p = s; *p; p++)
        n += *p == '\'' ? 4 : 1;
    char *out = malloc(n), *o = out;
    if (!out)
        return NULL;
    *o++ = '\'';
    for (const char *p = s; *p; p++) {
        if (*p == '\'') {
            memcpy(o, "'\\''", 4);
            o += 4;
        } else {
            *o++ = *p;
        }
    }
    *o++ = '\'';
    *o = '\0';
    return out;
}

int incmig__ssh_spawn(const char *ssh_cmd, const char *host,
                      const char *remote_cmd, int *fd_r, pid_t *pid_r)
{
    int sv[2];
    char *cmd = NULL;

    if (!incmig__host_valid(host)) {
        ERR("'%s' is not a valid host name", host ? host : "");
        return INCMIG_EINVAL;
    }
    /* The local shell runs ssh; ssh hands the remote command to the remote
     * user's shell, which splits it again: so it travels as one quoted
     * word and keeps its own quoting for the far side. */
    char *q = incmig__shell_quote(remote_cmd);
    if (!q)
        return INCMIG_ENOMEM;
    int n = asprintf(&cmd, "exec %s %s %s", ssh_cmd, host, q);
    free(q);
    if (n < 0)
        return INCMIG_ENOMEM;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        LOGE("socketpair");
        free(cmd);
        return INCMIG_EIO;
    }
    DBG("running: %s", cmd);
    pid_t pid = fork();
    if (pid < 0) {
        LOGE("fork");
        close(sv[0]);
        close(sv[1]);
        free(cmd);
        return INCMIG_EIO;
    }
    if (pid == 0) {
        dup2(sv[1], 0);
        dup2(sv[1], 1);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(sv[1]);
    free(cmd);
    *fd_r = sv[0];
    *pid_r = pid;
    return 0;
}

/* ---- unix sockets ---------------------------------------------------------- */

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

/* ---- the domain's state stream (backends write it to the engine's pipe) -- */

int incmig__write_state(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            LOGE("writing the domain's state stream");
            return INCMIG_ELINK;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}
