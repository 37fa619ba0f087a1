/* receive-link.c: the receiver's link to the source: the stream and its
 * deadlines, choosing the source among the connections on --listen or
 * --rendezvous, and the reconnections.
 *
 * Entry points:
 *   incmig__recv_open_stream    a stream on a connection, headers
 *                               exchanged
 *   incmig__recv_accept_source  the source among pending connections
 *   incmig__recv_record         the next record, within the deadline of
 *                               the state we are in
 *   incmig__recv_relink         PULL lost its link: WAIT_LINK, RESUMING,
 *                               PULL again
 *   incmig__recv_late_source    after DONE: a source that missed COMPLETE
 *
 * r->slock covers replacing the stream against the gates' requests
 * (incmig__recv_request_blocks, receive-pull.c).
 */
#include "config.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "receive-internal.h"

static void set_deadlines(struct recv *r);

int incmig__recv_open_stream(struct recv *r, int in_fd, int out_fd)
{
    pthread_mutex_lock(&r->slock);
    if (r->st_open)
        incmig__stream_dispose(&r->st);
    r->st_open = false;
    int rc = incmig__stream_init(&r->st, in_fd, out_fd);
    if (!rc)
        r->st_open = true;
    r->error_sent = false;
    if (!rc) {
        r->st.deadline = 0;
        set_deadlines(r);
    }
    pthread_mutex_unlock(&r->slock);
    if (!rc)
        rc = incmig__stream_send_header(&r->st);
    if (!rc)
        rc = incmig__stream_recv_header(&r->st);
    return rc;
}

static double timeout_s(const struct recv *r)
{
    return r->o->timeout_s > 0 ? r->o->timeout_s : 30;
}

static double reconnect_s(const struct recv *r)
{
    return r->o->reconnect_s > 0 ? r->o->reconnect_s : 600;
}

/* Deadlines on the stream for the state we are in: the handshake (HELLO,
 * DISK*; on a reconnection HELLO, RESUME) must be done within timeout_s
 * of the connection; before GO the source may be silent for 4 * timeout_s; in
 * PULL for reconnect_s (then the link counts as lost).  A stop request
 * cancels reads only before GO. */
static void set_deadlines(struct recv *r)
{
    switch (r->state) {
    case INCMIG_DST_HELLO: case INCMIG_DST_DISKS:
    case INCMIG_DST_WAIT_LINK: case INCMIG_DST_RESUMING:
        if (r->st.deadline == 0)
            r->st.deadline = incmig__now() + timeout_s(r);
        r->st.idle_s = 0;
        break;
    case INCMIG_DST_PULL: case INCMIG_DST_DONE:
        r->st.deadline = 0;
        r->st.idle_s = reconnect_s(r);
        break;
    default:
        /* the source may rightly say nothing for a while: a Xen guest
         * taking its time to suspend, no dirty block meanwhile */
        r->st.deadline = 0;
        r->st.idle_s = 4 * timeout_s(r);
    }
    r->st.stop_cancels = r->state < INCMIG_DST_PULL;
}

/* Pending connections on the listening socket: the first to show a whole
 * stream header (peeked, left in the socket for the stream to read) is
 * the source; its HELLO follows our header, within the handshake's
 * deadline.  Others are kept meanwhile, so a squatter
 * that connects and sends nothing (or a byte a second) cannot hold up the
 * real source; each is closed after timeout_s, and the others once the
 * source is chosen.  A connection whose bytes cannot start an incmig
 * stream (wrong magic or version, an oversized first record) or that
 * ends in the middle is chosen too, so that the stream reports it.
 * Returns INCMIG_ECANCEL at `end` (0: never) or on a stop request. */
#define PENDING_MAX 8
#define PEEK_MAX 16
/* one that starts TLS and stalls holds up the source at most this long */
#define TLS_HANDSHAKE_S 10.0
int incmig__recv_accept_source(struct recv *r, double end, int *fd_r)
{
    struct { int fd; double t0; } pend[PENDING_MAX];
    int np = 0, rc = INCMIG_ECANCEL;

    *fd_r = -1;
    while (!incmig__stop_requested) {
        double now = incmig__now();
        if (end > 0 && now >= end)
            break;
        for (int i = 0; i < np; i++)
            if (now - pend[i].t0 >= timeout_s(r)) {
                PEER_ERR("a connection sent no incmig handshake within %.0f s: "
                         "closed", timeout_s(r));
                close(pend[i].fd);
                pend[i--] = pend[--np];
            }
        struct pollfd p[PENDING_MAX + 1];
        for (int i = 0; i < np; i++)
            p[i] = (struct pollfd){ .fd = pend[i].fd,
                                    .events = POLLIN | POLLRDHUP };
        p[np] = (struct pollfd){ .fd = r->lfd, .events = POLLIN };
        int n = poll(p, (nfds_t)np + 1, 250);
        if (n < 0 && errno != EINTR) {
            LOGE("waiting for the source");
            rc = INCMIG_EIO;
            break;
        }
        if (n <= 0)
            continue;
        for (int i = 0; i < np && *fd_r < 0; i++) {
            if (!p[i].revents)
                continue;
            uint8_t b[PEEK_MAX];
            ssize_t k = recv(pend[i].fd, b, sizeof b, MSG_PEEK | MSG_DONTWAIT);
            bool pick = false, drop = false;
            if (k < 0)
                drop = errno != EAGAIN && errno != EINTR;
            else if (k == 0)
                drop = true;       /* closed without a byte: not a source */
            else if (memcmp(b, INCMIG_STREAM_MAGIC, k < 8 ? (size_t)k : 8))
                pick = true;       /* not incmig: the stream says so */
            else if (k >= 16 && memcmp(b + 8, "\0\0\0\1\0\0\0\0", 8))
                pick = true;       /* another version: the stream says so */
            else if (k >= 16)
                pick = true;       /* a whole header: the source answers
                                    * ours with its HELLO */
            if (!pick && !drop && (p[i].revents & (POLLRDHUP | POLLHUP)))
                pick = true;       /* ended inside the handshake */
            if (pick) {
                *fd_r = pend[i].fd;
                pend[i] = pend[--np];
            } else if (drop) {
                close(pend[i].fd);
                pend[i] = pend[--np];
            }
        }
        if (*fd_r >= 0 && r->o->listen && incmig__tls_on() &&
            incmig__tls_wrap(*fd_r, true, NULL, "a connection",
                             timeout_s(r) < TLS_HANDSHAKE_S ? timeout_s(r)
                                                            : TLS_HANDSHAKE_S,
                             fd_r))
            continue;          /* refused (said why); wait for the source */
        if (*fd_r >= 0) {
            rc = 0;
            break;
        }
        if ((p[np].revents & POLLIN) && np < PENDING_MAX) {
            int fd = accept4(r->lfd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0 && !incmig__peer_allowed(fd, "the rendezvous")) {
                close(fd);
            } else if (fd >= 0) {
                pend[np].fd = fd;
                pend[np++].t0 = incmig__now();
            }
        } else if (p[np].revents & POLLIN) {
            /* full: the oldest pending connection makes room */
            PEER_ERR("too many connections without a handshake: closing the "
                     "oldest");
            int o = 0;
            for (int i = 1; i < np; i++)
                if (pend[i].t0 < pend[o].t0)
                    o = i;
            close(pend[o].fd);
            pend[o] = pend[--np];
        }
    }
    for (int i = 0; i < np; i++) {
        if (*fd_r >= 0)
            INFO("another connection was waiting while the source connected: "
                 "closed");
        close(pend[i].fd);
    }
    if (rc == 0) {
        int one = 1;
        setsockopt(*fd_r, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return rc;
}

/* The next record from the source.  A stop request (incmig_stop) ends
 * the wait with INCMIG_ECANCEL: before GO the guest stays on the source;
 * from GO on the state file keeps what is owed, and the receiver says how
 * to finish (say_resume). */
int incmig__recv_record(struct recv *r, struct incmig__rec *rec)
{
    double since = incmig__now();

    for (;;) {
        if (incmig__stop_requested)
            return INCMIG_ECANCEL;   /* said by the caller */
        set_deadlines(r);
        if (r->st.idle_s > 0 && incmig__now() - since >= r->st.idle_s) {
            ERR("no record from the source for %.0f s in state %s: the link "
                "is considered lost", r->st.idle_s,
                incmig__dst_state_name(r->state));
            return INCMIG_ELINK;
        }
        if (r->st.deadline > 0 && incmig__now() >= r->st.deadline) {
            ERR("the source did not complete its handshake within %.0f s",
                timeout_s(r));
            return INCMIG_ELINK;
        }
        struct pollfd p = { .fd = r->st.rfd, .events = POLLIN };
        int n = poll(&p, 1, 250);
        if (n > 0)
            return incmig__stream_recv(&r->st, rec);
        if (n < 0 && errno != EINTR) {
            LOGE("waiting for the source");
            return INCMIG_ELINK;
        }
    }
}

/* PULL lost its link: WAIT_LINK for the source to come back, RESUMING on
 * a new connection, PULL again once it resumed. */
int incmig__recv_relink(struct recv *r)
{
    double t = r->o->reconnect_s > 0 ? r->o->reconnect_s : 600;
    struct incmig__rec rec;

    pthread_mutex_lock(&r->slock);
    r->link_ok = false;
    pthread_mutex_unlock(&r->slock);
    r->state = INCMIG_DST_WAIT_LINK;
    if (r->lfd < 0) {
        ERR("link to the source lost during PULL; without --listen or "
            "--rendezvous this receiver cannot take a reconnection");
        return INCMIG_ELINK;
    }
    ERR("link to the source lost during PULL: the guest's reads of missing "
        "blocks wait; waiting up to %.0f s for the source to reconnect", t);
    double end = incmig__now() + t;
    for (;;) {
        int fd, rc;
        double left = end - incmig__now();
        if (incmig__stop_requested)
            return INCMIG_ECANCEL;
        if (left <= 0) {
            ERR("the source did not come back within %.0f s", t);
            return INCMIG_ELINK;
        }
        rc = incmig__recv_accept_source(r,
                                        incmig__now() + (left < 1 ? left : 1),
                                        &fd);
        if (rc == INCMIG_ECANCEL)
            continue;
        if (rc)
            return rc;
        rc = incmig__recv_open_stream(r, fd, fd);
        while (!rc && r->state != INCMIG_DST_PULL) {
            rc = incmig__recv_record(r, &rec);
            if (!rc)
                rc = incmig__recv_dispatch(r, &rec);
        }
        if (!rc)
            return 0;
        r->state = INCMIG_DST_WAIT_LINK;
        DBG("a reconnection attempt failed: %s", incmig_strerror(rc));
    }
}

/* After DONE, while serving the domain: a source that missed COMPLETE (its
 * link or its migrate died before it read it) comes back to learn it, as
 * it would in PULL: HELLO, RESUME, an empty BITMAP, READY, COMPLETE, then
 * its END.  Returns whether a connection was taken (then no sleep). */
bool incmig__recv_late_source(struct recv *r)
{
    struct incmig__rec rec;
    int fd, rc;

    struct pollfd p = { .fd = r->lfd, .events = POLLIN };

    if (r->lfd < 0 || poll(&p, 1, 100) <= 0 ||
        incmig__recv_accept_source(r, incmig__now() + timeout_s(r), &fd))
        return false;
    r->state = INCMIG_DST_WAIT_LINK;
    rc = incmig__recv_open_stream(r, fd, fd);
    while (!rc && r->state != INCMIG_DST_DONE) {
        rc = incmig__recv_record(r, &rec);
        if (!rc)
            rc = incmig__recv_dispatch(r, &rec);
    }
    DBG("a source came back after the migration was complete: %s",
        rc ? incmig_strerror(rc) : "told so");
    pthread_mutex_lock(&r->slock);
    r->link_ok = false;
    if (r->st_open)
        incmig__stream_dispose(&r->st);
    r->st_open = false;
    pthread_mutex_unlock(&r->slock);
    r->state = INCMIG_DST_DONE;
    return true;
}
