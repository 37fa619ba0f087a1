/* linkproxy.c: a TCP proxy whose link the failure tests can cut.
 *
 * usage: linkproxy LISTEN_PORT TARGET_HOST:TARGET_PORT [--control PATH]
 *
 * Listens on 127.0.0.1:LISTEN_PORT and forwards every connection to the
 * target, both ways.  Prints "ready" once listening.  Commands, one a
 * line, come from PATH: a FIFO made by the test (mkfifo), or, when PATH
 * does not exist, a unix socket the proxy creates (each command is then
 * answered "ok" or "error ...", which lets a test wait for it):
 *   cut              close every current connection, both sides, with a
 *                    RST (SO_LINGER 0): the peers see a broken link, not
 *                    an orderly end
 *   down             cut, and refuse new connections (accept + RST)
 *   up               accept again
 *   cut-after BYTES  cut once BYTES more bytes have been forwarded (both
 *                    directions together); exact to the byte
 *   quit             exit
 *
 * Design: one poll loop, nonblocking sockets, one buffer per direction and
 * connection (a full buffer stops reading from that side, so a slow peer
 * is not hidden by unbounded buffering).  A read EOF is passed on as
 * shutdown(SHUT_WR) once the buffer is flushed.  The target connect is
 * blocking: targets are local in the tests.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_CONN 64
#define MAX_CTL 8
#define BUF_SIZE (64 * 1024)
#define MAX_LINE 128

struct dir {
    char buf[BUF_SIZE];
    size_t len;
    bool eof;          /* the reading side ended */
    bool shut;         /* passed on as shutdown(SHUT_WR) */
};

struct conn {
    int fd[2];         /* 0 = client, 1 = target */
    struct dir d[2];   /* d[i]: bytes read from fd[i], to write to fd[1-i] */
};

struct ctl {
    int fd;
    char line[MAX_LINE];
    size_t len;
};

static struct conn *conns[MAX_CONN];
static struct ctl ctls[MAX_CTL];
static bool down;
static long long budget = -1;       /* bytes left before a cut; -1 = off */
static bool ctl_is_socket;

static void rst_close(int fd)
{
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };

    if (fd < 0)
        return;
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

static void conn_cut(int i)
{
    rst_close(conns[i]->fd[0]);
    rst_close(conns[i]->fd[1]);
    free(conns[i]);
    conns[i] = NULL;
}

static int cut_all(void)
{
    int n = 0;

    for (int i = 0; i < MAX_CONN; i++) {
        if (conns[i]) {
            conn_cut(i);
            n++;
        }
    }
    return n;
}

static void set_nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static int connect_target(const char *host, const char *port)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
    int fd = -1;

    if (getaddrinfo(host, port, &hints, &res) != 0)
        return -1;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* Returns a reply for the control socket. */
static const char *command(char *line)
{
    static char reply[64];
    long long n;
    char *end;

    line[strcspn(line, "\r\n")] = '\0';
    if (strcmp(line, "cut") == 0) {
        snprintf(reply, sizeof reply, "ok cut %d", cut_all());
    } else if (strcmp(line, "down") == 0) {
        down = true;
        snprintf(reply, sizeof reply, "ok down, cut %d", cut_all());
    } else if (strcmp(line, "up") == 0) {
        down = false;
        snprintf(reply, sizeof reply, "ok up");
    } else if (strncmp(line, "cut-after ", 10) == 0 &&
               (n = strtoll(line + 10, &end, 10)) >= 0 && *end == '\0' &&
               end != line + 10) {
        budget = n;
        if (budget == 0) {
            budget = -1;
            cut_all();
        }
        snprintf(reply, sizeof reply, "ok cut-after %lld", n);
    } else if (strcmp(line, "quit") == 0) {
        printf("linkproxy: quit\n");
        exit(0);
    } else if (line[0] == '\0') {
        return NULL;
    } else {
        snprintf(reply, sizeof reply, "error: unknown command (cut, down, "
                 "up, cut-after BYTES, quit)");
    }
    printf("linkproxy: %s\n", reply);
    fflush(stdout);
    return reply;
}

/* Read control bytes; returns -1 when a socket client went away. */
static int ctl_read(struct ctl *c)
{
    char tmp[256];
    ssize_t r = read(c->fd, tmp, sizeof tmp);

    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    if (r <= 0)
        return -1;
    for (ssize_t k = 0; k < r; k++) {
        if (tmp[k] != '\n') {
            /* An over-long line is cut short and then rejected. */
            if (c->len < MAX_LINE - 1)
                c->line[c->len++] = tmp[k];
            continue;
        }
        c->line[c->len] = '\0';
        c->len = 0;
        const char *reply = command(c->line);
        if (reply && ctl_is_socket) {
            char out[80];
            int m = snprintf(out, sizeof out, "%s\n", reply);
            if (write(c->fd, out, (size_t)m) < 0)
                return -1;
        }
    }
    return 0;
}

/* Move buffered bytes of direction i to the other side. Returns -1 when
 * the connection broke. */
static int flush_dir(struct conn *c, int i)
{
    struct dir *d = &c->d[i];

    while (d->len > 0) {
        size_t want = d->len;
        if (budget >= 0 && (long long)want > budget)
            want = (size_t)budget;
        if (want == 0)
            break;
        ssize_t w = write(c->fd[1 - i], d->buf, want);
        if (w < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        if (w < 0)
            return -1;
        memmove(d->buf, d->buf + w, d->len - (size_t)w);
        d->len -= (size_t)w;
        if (budget >= 0)
            budget -= w;
        if (budget == 0) {
            budget = -1;
            printf("linkproxy: cut-after reached, cut %d\n", cut_all());
            fflush(stdout);
            return 1;
        }
    }
    if (d->eof && d->len == 0 && !d->shut) {
        shutdown(c->fd[1 - i], SHUT_WR);
        d->shut = true;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *ctl_path = NULL;
    char host[256], *colon;
    int lfd, cfd = -1, one = 1;
    struct sockaddr_in sin = { .sin_family = AF_INET };
    struct stat st;

    if (argc == 5 && strcmp(argv[3], "--control") == 0)
        ctl_path = argv[4];
    else if (argc != 3) {
        fprintf(stderr, "usage: linkproxy LISTEN_PORT TARGET_HOST:TARGET_PORT "
                "[--control FIFO_OR_UNIXSOCK]\n");
        return 2;
    }
    if (strlen(argv[2]) >= sizeof host ||
        !(colon = strrchr(argv[2], ':'))) {
        fprintf(stderr, "linkproxy: target must be HOST:PORT: %s\n", argv[2]);
        return 2;
    }
    snprintf(host, sizeof host, "%.*s", (int)(colon - argv[2]), argv[2]);
    const char *tport = colon + 1;
    signal(SIGPIPE, SIG_IGN);

    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((uint16_t)atoi(argv[1]));
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sin, sizeof sin) < 0 ||
        listen(lfd, 16) < 0) {
        fprintf(stderr, "linkproxy: cannot listen on 127.0.0.1:%s: %s\n",
                argv[1], strerror(errno));
        return 1;
    }
    set_nonblock(lfd);

    for (int i = 0; i < MAX_CTL; i++)
        ctls[i].fd = -1;
    if (ctl_path && stat(ctl_path, &st) == 0 && S_ISFIFO(st.st_mode)) {
        /* O_RDWR: the FIFO never reports EOF between two writers. */
        ctls[0].fd = open(ctl_path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
        if (ctls[0].fd < 0) {
            fprintf(stderr, "linkproxy: cannot open %s: %s\n", ctl_path,
                    strerror(errno));
            return 1;
        }
    } else if (ctl_path) {
        struct sockaddr_un sun = { .sun_family = AF_UNIX };
        if (strlen(ctl_path) >= sizeof sun.sun_path) {
            fprintf(stderr, "linkproxy: control path too long\n");
            return 1;
        }
        strcpy(sun.sun_path, ctl_path);
        cfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (cfd < 0 || bind(cfd, (struct sockaddr *)&sun, sizeof sun) < 0 ||
            listen(cfd, 4) < 0) {
            fprintf(stderr, "linkproxy: cannot create the control socket "
                    "%s: %s\n", ctl_path, strerror(errno));
            return 1;
        }
        ctl_is_socket = true;
    }
    printf("ready\n");
    fflush(stdout);

    for (;;) {
        struct pollfd pfd[2 + MAX_CTL + 2 * MAX_CONN];
        int n = 0;

        pfd[n++] = (struct pollfd){ .fd = lfd, .events = POLLIN };
        pfd[n++] = (struct pollfd){ .fd = cfd, .events = POLLIN };
        for (int i = 0; i < MAX_CTL; i++)
            pfd[n++] = (struct pollfd){ .fd = ctls[i].fd, .events = POLLIN };
        for (int i = 0; i < MAX_CONN; i++) {
            struct conn *c = conns[i];
            for (int s = 0; s < 2; s++) {
                short ev = 0;
                if (c && !c->d[s].eof && c->d[s].len < BUF_SIZE)
                    ev |= POLLIN;
                if (c && c->d[1 - s].len > 0)
                    ev |= POLLOUT;
                pfd[n++] = (struct pollfd){ .fd = c ? c->fd[s] : -1,
                                            .events = ev };
            }
        }
        if (poll(pfd, (nfds_t)n, -1) < 0) {
            if (errno == EINTR)
                continue;
            perror("linkproxy: poll");
            return 1;
        }

        if (pfd[0].revents & POLLIN) {
            int a = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
            int slot = -1;
            for (int i = 0; i < MAX_CONN && slot < 0; i++)
                if (!conns[i])
                    slot = i;
            if (a >= 0 && (down || slot < 0)) {
                rst_close(a);
            } else if (a >= 0) {
                int b = connect_target(host, tport);
                struct conn *c = b >= 0 ? calloc(1, sizeof *c) : NULL;
                if (!c) {
                    rst_close(a);
                    rst_close(b);
                } else {
                    setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    setsockopt(b, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    set_nonblock(a);
                    set_nonblock(b);
                    c->fd[0] = a;
                    c->fd[1] = b;
                    conns[slot] = c;
                }
            }
        }
        if (pfd[1].revents & POLLIN) {
            int a = accept4(cfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            for (int i = 0; a >= 0 && i < MAX_CTL; i++) {
                if (ctls[i].fd < 0) {
                    ctls[i] = (struct ctl){ .fd = a };
                    a = -1;
                }
            }
            if (a >= 0)
                close(a);
        }
        for (int i = 0; i < MAX_CTL; i++) {
            if (ctls[i].fd >= 0 && (pfd[2 + i].revents & (POLLIN | POLLHUP)) &&
                ctl_read(&ctls[i]) < 0 && ctl_is_socket) {
                close(ctls[i].fd);
                ctls[i].fd = -1;
            }
        }
        for (int i = 0; i < MAX_CONN; i++) {
            struct pollfd *p = &pfd[2 + MAX_CTL + 2 * i];
            struct conn *c = conns[i];
            int broken = 0;

            /* A command or a cut-after above may have freed it. */
            if (!c || p[0].fd != c->fd[0])
                continue;
            for (int s = 0; s < 2 && !broken; s++) {
                struct dir *d = &c->d[s];
                if (p[s].revents & (POLLIN | POLLHUP | POLLERR) && !d->eof &&
                    d->len < BUF_SIZE) {
                    ssize_t r = read(c->fd[s], d->buf + d->len,
                                     BUF_SIZE - d->len);
                    if (r > 0)
                        d->len += (size_t)r;
                    else if (r == 0)
                        d->eof = true;
                    else if (errno != EAGAIN && errno != EINTR)
                        broken = -1;
                }
                if (!broken)
                    broken = flush_dir(c, s);
            }
            if (broken > 0)
                break;      /* cut-after fired: every connection is gone */
            if (broken < 0) {
                /* One side reset: pass the reset on. */
                conn_cut(i);
            } else if (c->d[0].eof && c->d[1].eof && !c->d[0].len &&
                       !c->d[1].len) {
                close(c->fd[0]);
                close(c->fd[1]);
                free(c);
                conns[i] = NULL;
            }
        }
    }
}
