/* nbd.c: a small NBD server (fixed newstyle handshake, simple replies).
 *
 * Used as the export of the simulated guest's source disk (serve.c) and as
 * the destination's PULL gate (gate.c), where the Linux kernel's nbd client
 * or qemu sits on it.  The protocol is the NetworkBlockDevice project's
 * doc/proto.md; only what those clients need is implemented.
 *
 * Entry points (incmig-internal.h, "NBD server"): incmig__nbd_new binds and
 * listens, incmig__nbd_start accepts and serves, incmig__nbd_hold accepts
 * and reads requests but holds them until start (the destination stages
 * its export that way before the pause), incmig__nbd_quiesce drains
 * and closes every connection (start again resumes), incmig__nbd_clients,
 * incmig__nbd_free.  The parsing and checking of what clients send is
 * apart from the sockets and threads ("the protocol, without sockets or
 * threads" below): incmig__nbd_client_flags, _opt_header, _option and
 * _request, which tests/fuzz/fuzz-nbd.c drives as a hostile client.
 *
 * Handshake: "NBDMAGIC" "IHAVEOPT", flags FIXED_NEWSTYLE|NO_ZEROES; the
 * client must set C_FIXED_NEWSTYLE and no unknown bit.  Options:
 *   EXPORT_NAME, GO   any export name is accepted: there is one export
 *   INFO              NBD_INFO_EXPORT, then NBD_INFO_BLOCK_SIZE (1/4K/32M)
 *   LIST              one export, named ""
 *   ABORT             ACK, then close
 *   STARTTLS          over TCP with keys (tls.c): ACK, then the TLS
 *                     handshake, and the rest of the connection through
 *                     tls.c's relay; until then any other option gets
 *                     NBD_REP_ERR_TLS_REQD (EXPORT_NAME, which has no
 *                     error reply, closes).  Without keys: ERR_UNSUP.
 *   anything else     NBD_REP_ERR_UNSUP (STRUCTURED_REPLY, ...)
 * An option longer than OPT_MAX bytes ends the connection.
 *
 * Transmission: READ, WRITE(FUA), DISC, FLUSH, TRIM(FUA),
 * WRITE_ZEROES(NO_HOLE, FUA).  Each request is validated once by the
 * reader; a bad range, flag or command gets EINVAL and the connection goes
 * on.  A bad magic, or a WRITE longer than DATA_MAX (its payload cannot be
 * skipped safely), ends the connection.
 *
 * Threading model:
 *   acceptor  one thread while started: polls the listening socket and a
 *             wake pipe, accepts, creates a connection and its reader;
 *             reaps (joins) connections whose reader has finished.
 *   reader    one per connection: handshake, then reads requests (with
 *             WRITE payloads into a per-request buffer) and queues them;
 *             waits while the connection has CONN_MAX_REQS requests or
 *             CONN_MAX_BYTES bytes in flight.  When it stops reading (EOF,
 *             error, DISC, quiesce) it waits until every queued request is
 *             answered, then closes the socket: the fd never goes away under
 *             a worker.
 *   workers   a pool shared by all connections, started by the first
 *             start or hold; while held (s->held) none takes a request,
 *             and a quiesce drops the queued ones unanswered (never
 *             executed, never acknowledged).  Otherwise each takes a request,
 *             calls the ops callback (which may block for a long time) and
 *             queues the reply on its connection: workers never wait for
 *             a client's socket.
 *   writer    one per connection: sends its queued replies in order; a
 *             client that takes no reply bytes for SEND_IDLE_S is dropped
 *             (its socket shut down, its replies discarded, READs still
 *             queued for it skipped, writes done all the same); once a
 *             quiesce started, after QUIESCE_SEND_IDLE_S, so a client that
 *             will not drain is cut, not waited for.
 * s->lock guards the queue, the connection list and every counter and
 * flag below; c->wlock only serialises replies on one socket.  No thread
 * holds both.
 *
 * Connection states (c->state, under s->lock):
 *   state       entered when                     leaves to
 *   HANDSHAKE   accepted                         SERVING (GO/EXPORT_NAME),
 *                                                DRAINING (abort/EOF/error/quiesce)
 *   SERVING     options done                     DRAINING (EOF, DISC, bad
 *                                                request, quiesce)
 *   DRAINING    reader stopped reading           FINISHED when inflight == 0
 *   FINISHED    socket closed, reader returning  reaped: joined and freed
 * Quiesce sets c->stop on every connection and shutdown(SHUT_RD)s it: a
 * reader blocked in recv sees EOF, one that is waiting for a free slot
 * sees c->stop.  A request whose header and payload were fully read is
 * always executed and answered before the socket is closed; a request
 * only partly read when the stop came was never acknowledged, so dropping
 * it loses nothing the client was told is done.
 *
 * incmig__nbd_start and incmig__nbd_quiesce are called by the server's
 * owner from one thread (they are not meant to race each other); quiesce
 * and free are idempotent.
 *
 * Memory: request buffers are bounded per connection (CONN_MAX_BYTES,
 * CONN_MAX_REQS) and for all connections together (SERVER_MAX_BYTES); a
 * request counts until its reply is sent or discarded.
 *
 * Known limits: a connection whose ops callbacks block (PULL gate) stays
 * counted by incmig__nbd_clients until they return, even if its client
 * has gone.  The number of clients is not capped (each costs two
 * threads).
 * Over TCP, closing with unread requests in the receive queue makes the
 * kernel send an RST, which may discard replies the client has not read
 * yet; the writes they acknowledge are done all the same.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "be.h"
#include "incmig-internal.h"

/* ---- protocol constants (doc/proto.md) ---- */
#define NBDMAGIC UINT64_C(0x4e42444d41474943)       /* "NBDMAGIC" */
#define IHAVEOPT UINT64_C(0x49484156454f5054)       /* "IHAVEOPT" */
#define REPLY_MAGIC UINT64_C(0x0003e889045565a9)    /* option replies */
#define REQUEST_MAGIC 0x25609513u
#define SIMPLE_REPLY_MAGIC 0x67446698u

#define FLAG_FIXED_NEWSTYLE 1u
#define FLAG_NO_ZEROES 2u

#define OPT_EXPORT_NAME 1u
#define OPT_ABORT 2u
#define OPT_LIST 3u
#define OPT_STARTTLS 5u
#define OPT_INFO 6u
#define OPT_GO 7u

#define REP_ACK 1u
#define REP_SERVER 2u
#define REP_INFO 3u
#define REP_ERR_UNSUP 0x80000001u
#define REP_ERR_INVALID 0x80000003u
#define REP_ERR_TLS_REQD 0x80000005u

#define INFO_EXPORT 0u
#define INFO_BLOCK_SIZE 3u

#define TF_HAS_FLAGS (1u << 0)
#define TF_READ_ONLY (1u << 1)
#define TF_SEND_FLUSH (1u << 2)
#define TF_SEND_FUA (1u << 3)
#define TF_SEND_TRIM (1u << 5)
#define TF_SEND_WRITE_ZEROES (1u << 6)
#define TF_CAN_MULTI_CONN (1u << 8)

#define CMD_READ 0u
#define CMD_WRITE 1u
#define CMD_DISC 2u
#define CMD_FLUSH 3u
#define CMD_TRIM 4u
#define CMD_WRITE_ZEROES 6u

#define CMD_FLAG_FUA (1u << 0)
#define CMD_FLAG_NO_HOLE (1u << 1)

#define NBD_EPERM 1u
#define NBD_EIO 5u
#define NBD_ENOMEM 12u
#define NBD_EINVAL 22u
#define NBD_ENOSPC 28u
#define NBD_EOVERFLOW 75u
#define NBD_ENOTSUP 95u
#define NBD_ESHUTDOWN 108u

/* ---- our bounds ---- */
#define OPT_MAX INCMIG_NBD_OPT_MAX     /* longest option payload accepted */
#define DATA_MAX INCMIG_NBD_DATA_MAX   /* READ/WRITE length, advertised max */
#define BS_PREFERRED 4096u
#define CONN_MAX_REQS 64               /* requests in flight per connection */
#define CONN_MAX_BYTES (UINT64_C(128) << 20) /* their buffers, per connection */
#define SERVER_MAX_BYTES (UINT64_C(512) << 20) /* all connections together */
/* A client that reads none of its replies for this long is dropped; while
 * the server quiesces (the guest is being paused), for much less: its
 * replies are not waited for, the writes they acknowledge are done. */
#define SEND_IDLE_S 5.0
#define QUIESCE_SEND_IDLE_S 0.1
#define HANDSHAKE_S 30                 /* a client's whole handshake */
#define WORKERS_DEFAULT 8
#define WORKERS_MAX 256

enum conn_state { HANDSHAKE, SERVING, DRAINING, FINISHED };

struct conn;

struct req {
    struct req *next;        /* worker queue, then the connection's replies */
    struct conn *c;
    uint32_t error;          /* NBD error of the reply */
    uint16_t flags, type;
    uint64_t cookie, offset;
    uint32_t count;
    uint8_t *buf;            /* WRITE payload, or NULL (READ allocates) */
};

struct conn {
    struct conn *next;              /* s->conns */
    struct incmig__nbd_server *s;
    int fd;
    pthread_t reader;
    pthread_mutex_t wlock;          /* unused; kept for the layout */
    bool dead;                      /* under s->lock: a reply write failed */
    bool no_zeroes;
    pthread_t writer;               /* sends the replies of outq */
    bool writer_running;
    bool writer_exit;               /* under s->lock: no more replies */
    pthread_cond_t ocond;           /* outq not empty, or writer_exit */
    struct req *ohead, *otail;      /* under s->lock: replies to send */
    volatile int cut;               /* quiesce: stalled sends give up */
    /* under s->lock: */
    enum conn_state state;
    bool stop;                      /* quiesce/free: read nothing more */
    int inflight;                   /* queued or executing requests */
    uint64_t inflight_bytes;
};

struct incmig__nbd_server {
    pthread_mutex_t lock;
    pthread_cond_t cond;            /* any change of state below */
    pthread_cond_t qcond;           /* queue not empty, or stopping */
    int lfd;
    int wake[2];                    /* wakes the acceptor's poll */
    char *unix_path;                /* to unlink on free, or NULL */
    char *uri;                      /* for messages */
    uint64_t size;
    struct incmig__nbd_ops ops;
    struct incmig__nbd_export ex;   /* uri, size, &ops: what the parsers see */
    void *opaque;
    int nworkers;
    pthread_t *workers;
    int workers_started;
    bool stopping;                  /* free: workers exit */
    bool held;                      /* staged: requests queue, none runs */
    bool accepting;                 /* acceptor keeps going */
    bool acceptor_running;
    pthread_t acceptor;
    struct req *qhead, *qtail;
    struct conn *conns;             /* all connections not yet reaped */
    uint64_t inflight_bytes;        /* all connections' request buffers */
    int nclients;                   /* connections not FINISHED */
};

/* ---- byte order ---- */

/* ---- the protocol, without sockets or threads ----
 *
 * What the reader decides about the bytes a client sends is decided here,
 * over bytes it has already read: the client flags, each option header
 * (bounded before its payload is read), each option (the replies are
 * built in a buffer the reader then sends), each request header (checked
 * once; the payload bound is known before any of it is read).  The reader
 * only moves bytes; tests/fuzz/fuzz-nbd.c calls the same functions as a
 * hostile client would reach them.
 *
 *   function                  input               verdict
 *   incmig__nbd_client_flags  4-byte flags        0, or -1: close
 *   incmig__nbd_opt_header    16-byte header      0 (read len bytes), -1: close
 *   incmig__nbd_option        option + payload    MORE, SERVE, CLOSE (+ replies)
 *   incmig__nbd_request       28-byte header      QUEUE, REJECT, CLOSE
 */

static uint16_t export_tflags(const struct incmig__nbd_ops *ops)
{
    uint16_t f = TF_HAS_FLAGS | TF_CAN_MULTI_CONN;

    if (!ops->pwrite)
        f |= TF_READ_ONLY;
    if (ops->flush)
        f |= TF_SEND_FLUSH | TF_SEND_FUA;
    if (ops->pwrite && ops->trim)
        f |= TF_SEND_TRIM;
    if (ops->pwrite && ops->zero)
        f |= TF_SEND_WRITE_ZEROES;
    return f;
}

int incmig__nbd_client_flags(const struct incmig__nbd_export *e,
                             uint32_t cflags, bool *no_zeroes_r)
{
    *no_zeroes_r = false;
    if (!(cflags & FLAG_FIXED_NEWSTYLE) ||
        (cflags & ~(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))) {
        PEER_ERR("nbd %s: client flags 0x%" PRIx32 " not supported (this server "
            "speaks fixed newstyle only); closing", e->uri, cflags);
        return -1;
    }
    *no_zeroes_r = cflags & FLAG_NO_ZEROES;
    return 0;
}

int incmig__nbd_opt_header(const struct incmig__nbd_export *e,
                           const uint8_t h[16], uint32_t *opt_r,
                           uint32_t *len_r)
{
    *opt_r = get32(h + 8);
    *len_r = get32(h + 12);
    if (get64(h) != IHAVEOPT) {
        PEER_ERR("nbd %s: bad option magic from client; closing", e->uri);
        return -1;
    }
    if (*len_r > OPT_MAX) {
        PEER_ERR("nbd %s: option %" PRIu32 " of %" PRIu32 " bytes exceeds "
            "the %u byte limit; closing", e->uri, *opt_r, *len_r, OPT_MAX);
        return -1;
    }
    return 0;
}

/* Appends one option reply (header, then len bytes of data) at out + *n. */
static void opt_reply(uint8_t *out, size_t *n, uint32_t opt, uint32_t type,
                      const void *data, uint32_t len)
{
    uint8_t *h = out + *n;

    put64(h, REPLY_MAGIC);
    put32(h + 8, opt);
    put32(h + 12, type);
    put32(h + 16, len);
    if (len)
        memcpy(h + 20, data, len);
    *n += 20 + (size_t)len;
}

/* NBD_OPT_INFO / NBD_OPT_GO: data = u32 namelen, name, u16 n, n * u16.
 * At most 3 replies, 86 bytes. */
static int opt_info_go(const struct incmig__nbd_export *e, uint32_t opt,
                       const uint8_t *d, uint32_t len, uint8_t *out,
                       size_t *n)
{
    uint8_t info[14];
    uint32_t namelen;

    if (len < 6)
        goto invalid;
    namelen = get32(d);
    if (namelen > len - 6)
        goto invalid;
    uint16_t nreq = get16(d + 4 + namelen);
    if ((uint64_t)len != 6 + (uint64_t)namelen + 2 * (uint64_t)nreq)
        goto invalid;
    /* Requests for NAME/DESCRIPTION are optional to honour; we send
     * EXPORT (mandatory) and BLOCK_SIZE (min 1, so safe unrequested). */
    put16(info, INFO_EXPORT);
    put64(info + 2, e->size);
    put16(info + 10, export_tflags(e->ops));
    opt_reply(out, n, opt, REP_INFO, info, 12);
    put16(info, INFO_BLOCK_SIZE);
    put32(info + 2, 1);
    put32(info + 6, BS_PREFERRED);
    put32(info + 10, DATA_MAX);
    opt_reply(out, n, opt, REP_INFO, info, 14);
    opt_reply(out, n, opt, REP_ACK, NULL, 0);
    return opt == OPT_GO ? INCMIG_NBD_SERVE : INCMIG_NBD_MORE;

invalid:
    DBG("nbd %s: malformed option %" PRIu32 " (length %" PRIu32 ")",
        e->uri, opt, len);
    opt_reply(out, n, opt, REP_ERR_INVALID, NULL, 0);
    return INCMIG_NBD_MORE;
}

int incmig__nbd_option(const struct incmig__nbd_export *e, bool no_zeroes,
                       uint32_t opt, const uint8_t *data, uint32_t len,
                       uint8_t *reply, size_t *reply_len_r)
{
    *reply_len_r = 0;
    if (opt == OPT_STARTTLS && e->tls != INCMIG_NBD_TLS_NONE) {
        bool ok = e->tls == INCMIG_NBD_TLS_REQUIRED && len == 0;
        opt_reply(reply, reply_len_r, opt, ok ? REP_ACK : REP_ERR_INVALID,
                  NULL, 0);
        return ok ? INCMIG_NBD_STARTTLS : INCMIG_NBD_MORE;
    }
    if (e->tls == INCMIG_NBD_TLS_REQUIRED && opt != OPT_ABORT) {
        if (opt == OPT_EXPORT_NAME) {
            PEER_ERR("nbd %s: a client asked for the export without TLS, "
                     "which this server requires; closing", e->uri);
            return INCMIG_NBD_CLOSE;
        }
        opt_reply(reply, reply_len_r, opt, REP_ERR_TLS_REQD, NULL, 0);
        return INCMIG_NBD_MORE;
    }
    switch (opt) {
    case OPT_EXPORT_NAME:
        /* No reply frame: size, flags, and 124 zeroes unless the client
         * negotiated NO_ZEROES.  Any name selects the export. */
        memset(reply, 0, 10 + 124);
        put64(reply, e->size);
        put16(reply + 8, export_tflags(e->ops));
        *reply_len_r = no_zeroes ? 10 : 10 + 124;
        return INCMIG_NBD_SERVE;
    case OPT_ABORT:
        opt_reply(reply, reply_len_r, opt, REP_ACK, NULL, 0);
        return INCMIG_NBD_CLOSE;
    case OPT_LIST: {
        static const uint8_t srv[4];   /* one export, name "" */
        if (len != 0) {
            opt_reply(reply, reply_len_r, opt, REP_ERR_INVALID, NULL, 0);
            return INCMIG_NBD_MORE;
        }
        opt_reply(reply, reply_len_r, opt, REP_SERVER, srv, sizeof srv);
        opt_reply(reply, reply_len_r, opt, REP_ACK, NULL, 0);
        return INCMIG_NBD_MORE;
    }
    case OPT_INFO:
    case OPT_GO:
        return opt_info_go(e, opt, data, len, reply, reply_len_r);
    default:
        opt_reply(reply, reply_len_r, opt, REP_ERR_UNSUP, NULL, 0);
        return INCMIG_NBD_MORE;
    }
}

/* The checks of doc/proto.md: 0, or the NBD error to reply. */
static uint32_t validate(const struct incmig__nbd_export *e, uint16_t type,
                         uint16_t flags, uint64_t off, uint32_t count)
{
    const struct incmig__nbd_ops *ops = e->ops;
    uint16_t allowed;
    bool ranged = true;

    switch (type) {
    case CMD_READ:
        allowed = 0;
        break;
    case CMD_WRITE:
        if (!ops->pwrite)
            return NBD_EPERM;
        allowed = CMD_FLAG_FUA;
        break;
    case CMD_FLUSH:
        if (!ops->flush)
            return NBD_EINVAL;
        allowed = 0;
        ranged = false;
        if (off != 0 || count != 0)
            return NBD_EINVAL;
        break;
    case CMD_TRIM:
        if (!ops->trim)
            return NBD_EINVAL;
        if (!ops->pwrite)
            return NBD_EPERM;
        allowed = CMD_FLAG_FUA;
        break;
    case CMD_WRITE_ZEROES:
        if (!ops->zero)
            return NBD_EINVAL;
        if (!ops->pwrite)
            return NBD_EPERM;
        allowed = CMD_FLAG_FUA | CMD_FLAG_NO_HOLE;
        break;
    default:
        return NBD_EINVAL;
    }
    if (flags & ~allowed)
        return NBD_EINVAL;
    if ((flags & CMD_FLAG_FUA) && !ops->flush)
        return NBD_EINVAL;
    if ((type == CMD_READ || type == CMD_WRITE) && count > DATA_MAX)
        return NBD_EINVAL;
    if (ranged && (count == 0 || off > e->size || count > e->size - off))
        return NBD_EINVAL;
    return 0;
}

int incmig__nbd_request(const struct incmig__nbd_export *e,
                        const uint8_t h[28], struct incmig__nbd_req *r)
{
    r->flags = get16(h + 4);
    r->type = get16(h + 6);
    r->cookie = get64(h + 8);
    r->offset = get64(h + 16);
    r->count = get32(h + 24);
    r->payload = 0;
    r->error = 0;
    if (get32(h) != REQUEST_MAGIC) {
        PEER_ERR("nbd %s: bad request magic 0x%08" PRIx32 "; closing the "
            "connection (the stream cannot be resynchronised)",
            e->uri, get32(h));
        return INCMIG_NBD_CLOSE;
    }
    if (r->type == CMD_DISC)
        return INCMIG_NBD_CLOSE;
    if (r->type == CMD_WRITE && r->count > DATA_MAX) {
        /* Its payload can neither be taken nor skipped safely. */
        PEER_ERR("nbd %s: WRITE of %" PRIu32 " bytes at offset %" PRIu64
            " exceeds the %" PRIu32 " byte maximum; closing the "
            "connection", e->uri, r->count, r->offset, DATA_MAX);
        return INCMIG_NBD_CLOSE;
    }
    r->payload = r->type == CMD_WRITE ? r->count : 0;
    r->error = validate(e, r->type, r->flags, r->offset, r->count);
    if (r->error) {
        DBG("nbd %s: rejecting command %u flags 0x%x offset %" PRIu64
            " length %" PRIu32, e->uri, r->type, r->flags, r->offset,
            r->count);
        return INCMIG_NBD_REJECT;
    }
    return INCMIG_NBD_QUEUE;
}

/* ---- socket helpers ---- */

/* 0, or -1 on EOF or error (the peer went away or we were shut down). */
static int recv_all(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len > 0) {
        ssize_t r = recv(fd, p, len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

/* Writes every byte of iov[0..n); MSG_NOSIGNAL so a vanished client is an
 * EPIPE here rather than a SIGPIPE for the whole process.  Never blocks
 * for long: a client that takes no bytes for SEND_IDLE_S (or, once `cut`
 * is set by a quiesce, for QUIESCE_SEND_IDLE_S) fails with ETIMEDOUT. */
static int send_all(int fd, struct iovec *iov, int n, volatile int *cut)
{
    double last = incmig__now();

    while (n > 0) {
        struct msghdr m = { .msg_iov = iov, .msg_iovlen = (size_t)n };
        ssize_t r = sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            double idle = incmig__now() - last;
            if (idle >= SEND_IDLE_S ||
                (cut && *cut && idle >= QUIESCE_SEND_IDLE_S)) {
                errno = ETIMEDOUT;
                return -1;
            }
            struct pollfd p = { .fd = fd, .events = POLLOUT };
            poll(&p, 1, 10);
            continue;
        }
        if (r < 0)
            return -1;
        last = incmig__now();
        while (n > 0 && (size_t)r >= iov->iov_len) {
            r -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + r;
            iov->iov_len -= (size_t)r;
        }
    }
    return 0;
}

static int send_buf(int fd, const void *buf, size_t len)
{
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    return send_all(fd, &iov, 1, NULL);
}

/* ---- handshake ---- */

/* STARTTLS was acknowledged: the TLS handshake on the TCP socket, then
 * the connection goes on over tls.c's relay (c->fd swapped under the
 * lock, since quiesce shuts it down).  -1: close (the TCP socket is). */
static int start_tls(struct conn *c, double left_s)
{
    int fd, tcp = c->fd;

    if (left_s < 1)
        left_s = 1;
    if (incmig__tls_wrap(tcp, true, NULL, "an NBD client", left_s, &fd)) {
        pthread_mutex_lock(&c->s->lock);
        c->fd = -1;
        pthread_mutex_unlock(&c->s->lock);
        return -1;
    }
    pthread_mutex_lock(&c->s->lock);
    c->fd = fd;
    pthread_mutex_unlock(&c->s->lock);
    return 0;
}

/* 0: enter transmission; -1: close the connection. */
static int handshake(struct conn *c)
{
    struct incmig__nbd_export ex = c->s->ex;
    const struct incmig__nbd_export *e = &ex;
    uint8_t b[18], reply[INCMIG_NBD_REPLY_MAX];
    uint8_t *data = NULL;
    int ret = -1;

    /* The handshake has a deadline: a client that connects and says
     * nothing (or a byte now and then) is closed, not kept for ever. */
    struct timeval tv = { .tv_sec = HANDSHAKE_S };
    (void)setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    double t0 = incmig__now();
    if (!c->s->unix_path && incmig__tls_on())
        ex.tls = INCMIG_NBD_TLS_REQUIRED;

    put64(b, NBDMAGIC);
    put64(b + 8, IHAVEOPT);
    put16(b + 16, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    if (send_buf(c->fd, b, 18) < 0 || recv_all(c->fd, b, 4) < 0 ||
        incmig__nbd_client_flags(e, get32(b), &c->no_zeroes) < 0)
        goto out;

    data = malloc(OPT_MAX);
    if (!data)
        goto out;
    for (;;) {
        uint32_t opt, len;
        size_t rlen;

        if (incmig__now() - t0 > HANDSHAKE_S) {
            PEER_INFO("nbd %s: a client did not finish its handshake within %d "
                 "s: closed", c->s->uri, HANDSHAKE_S);
            goto out;
        }
        if (recv_all(c->fd, b, 16) < 0 ||
            incmig__nbd_opt_header(e, b, &opt, &len) < 0)
            goto out;
        if (len && recv_all(c->fd, data, len) < 0)
            goto out;
        int next = incmig__nbd_option(e, c->no_zeroes, opt, data, len, reply,
                                      &rlen);
        if (rlen && send_buf(c->fd, reply, rlen) < 0)
            goto out;
        if (next == INCMIG_NBD_STARTTLS) {
            if (start_tls(c, HANDSHAKE_S - (incmig__now() - t0)) < 0)
                goto out;
            ex.tls = INCMIG_NBD_TLS_ACTIVE;
            (void)setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            continue;
        }
        if (next == INCMIG_NBD_SERVE)
            ret = 0;
        if (next != INCMIG_NBD_MORE)
            goto out;
    }

out:
    tv.tv_sec = 0;       /* transmission: requests may be far apart */
    (void)setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    free(data);
    return ret;
}

/* ---- transmission ---- */

static uint32_t nbd_errno(int err)
{
    switch (err) {
    case EPERM: case EROFS: return NBD_EPERM;
    case EIO: return NBD_EIO;
    case ENOMEM: return NBD_ENOMEM;
    case EINVAL: return NBD_EINVAL;
    case ENOSPC: case EDQUOT: case EFBIG: return NBD_ENOSPC;
    case EOVERFLOW: return NBD_EOVERFLOW;
    case ENOTSUP: return NBD_ENOTSUP;
    case ESHUTDOWN: return NBD_ESHUTDOWN;
    default: return NBD_EIO;
    }
}

/* Sends a simple reply; data only when error == 0.  A failed write marks
 * the connection dead and shuts it down so the reader stops too. */
/* The reply to q goes on its connection's queue; the connection's writer
 * sends it and frees q (a worker never waits for a client's socket). */
static void queue_reply(struct req *q, uint32_t error)
{
    struct conn *c = q->c;
    struct incmig__nbd_server *s = c->s;

    q->error = error;
    q->next = NULL;
    pthread_mutex_lock(&s->lock);
    if (c->otail)
        c->otail->next = q;
    else
        c->ohead = q;
    c->otail = q;
    pthread_cond_signal(&c->ocond);
    pthread_mutex_unlock(&s->lock);
}

/* A reply the reader gives itself (a refused request, no memory): counted
 * in flight like a request until it is sent. */
static void reply_now(struct conn *c, uint64_t cookie, uint32_t error)
{
    struct incmig__nbd_server *s = c->s;
    struct req *q = calloc(1, sizeof *q);

    if (!q) {
        pthread_mutex_lock(&s->lock);
        c->dead = true;
        pthread_mutex_unlock(&s->lock);
        shutdown(c->fd, SHUT_RDWR);
        return;
    }
    q->c = c;
    q->cookie = cookie;
    pthread_mutex_lock(&s->lock);
    c->inflight++;
    pthread_mutex_unlock(&s->lock);
    queue_reply(q, error);
}

static uint64_t req_bytes(const struct req *q)
{
    return q->type == CMD_READ || q->type == CMD_WRITE ? q->count : 0;
}

/* One per connection: sends the queued replies in order.  A client that
 * does not read them is dropped (send_all's deadline): its replies are
 * discarded, its socket shut down, and the requests still queued for it
 * are executed all the same (nothing acknowledged is lost). */
static void *writer_main(void *arg)
{
    struct conn *c = arg;
    struct incmig__nbd_server *s = c->s;

    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!c->ohead && !c->writer_exit)
            pthread_cond_wait(&c->ocond, &s->lock);
        struct req *q = c->ohead;
        if (!q)
            break;
        c->ohead = q->next;
        if (!c->ohead)
            c->otail = NULL;
        bool dead = c->dead;
        pthread_mutex_unlock(&s->lock);

        if (!dead) {
            uint8_t h[16];
            bool data = q->error == 0 && q->type == CMD_READ && q->count;
            struct iovec iov[2] = {
                { .iov_base = h, .iov_len = sizeof h },
                { .iov_base = q->buf, .iov_len = data ? q->count : 0 },
            };
            put32(h, SIMPLE_REPLY_MAGIC);
            put32(h + 4, q->error);
            put64(h + 8, q->cookie);
            if (send_all(c->fd, iov, data ? 2 : 1, &c->cut) < 0) {
                if (errno == ETIMEDOUT)
                    PEER_INFO("nbd %s: a client did not read its replies for "
                         "%.1f s: dropped", s->uri,
                         c->cut ? QUIESCE_SEND_IDLE_S : SEND_IDLE_S);
                else
                    DBG("nbd %s: client gone while replying: %s", s->uri,
                        strerror(errno));
                dead = true;
                shutdown(c->fd, SHUT_RDWR);
            }
        }

        pthread_mutex_lock(&s->lock);
        if (dead)
            c->dead = true;
        c->inflight--;
        c->inflight_bytes -= req_bytes(q);
        s->inflight_bytes -= req_bytes(q);
        pthread_cond_broadcast(&s->cond);
        free(q->buf);
        free(q);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static void execute(struct req *q)
{
    struct conn *c = q->c;
    struct incmig__nbd_server *s = c->s;
    bool fua = q->flags & CMD_FLAG_FUA;
    int r = 0;

    /* A READ for a client already dropped has no one to answer: skip it
     * (writes are done all the same: they may have been acknowledged to
     * the guest through a flush, and they change the disk). */
    pthread_mutex_lock(&s->lock);
    bool dead = c->dead;
    pthread_mutex_unlock(&s->lock);
    if (dead && q->type == CMD_READ) {
        queue_reply(q, NBD_EIO);
        return;
    }
    switch (q->type) {
    case CMD_READ:
        q->buf = malloc(q->count);
        if (!q->buf) {
            r = -ENOMEM;
            break;
        }
        r = s->ops.pread(s->opaque, q->buf, q->count, q->offset);
        break;
    case CMD_WRITE:
        r = s->ops.pwrite(s->opaque, q->buf, q->count, q->offset, fua);
        break;
    case CMD_FLUSH:
        r = s->ops.flush(s->opaque);
        break;
    case CMD_TRIM:
        r = s->ops.trim(s->opaque, q->count, q->offset, fua);
        break;
    case CMD_WRITE_ZEROES:
        r = s->ops.zero(s->opaque, q->count, q->offset,
                        !(q->flags & CMD_FLAG_NO_HOLE), fua);
        break;
    default:
        r = -EINVAL;   /* the reader only queues the commands above */
        break;
    }
    if (r > 0)
        r = 0;
    if (r < 0)
        DBG("nbd %s: command %u offset %" PRIu64 " length %" PRIu32
            " failed: %s", s->uri, q->type, q->offset, q->count,
            strerror(-r));
    (void)c;
    queue_reply(q, r < 0 ? nbd_errno(-r) : 0);
}

static void *worker_main(void *arg)
{
    struct incmig__nbd_server *s = arg;

    pthread_mutex_lock(&s->lock);
    for (;;) {
        while ((!s->qhead || s->held) && !s->stopping)
            pthread_cond_wait(&s->qcond, &s->lock);
        if (!s->qhead || s->held)
            break;   /* stopping, and nothing left to answer */
        struct req *q = s->qhead;
        s->qhead = q->next;
        if (!s->qhead)
            s->qtail = NULL;
        pthread_mutex_unlock(&s->lock);

        execute(q);          /* hands q to its connection's writer */

        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* Reads and discards a payload we will not use (a WRITE being rejected),
 * so the stream stays in step.  len <= DATA_MAX. */
static int skip_payload(int fd, uint32_t len)
{
    uint8_t tmp[4096];

    while (len > 0) {
        uint32_t n = len < sizeof tmp ? len : (uint32_t)sizeof tmp;
        if (recv_all(fd, tmp, n) < 0)
            return -1;
        len -= n;
    }
    return 0;
}

/* Reads requests until EOF, DISC, a fatal protocol error or a stop. */
static void serve_requests(struct conn *c)
{
    struct incmig__nbd_server *s = c->s;
    uint8_t h[28];

    for (;;) {
        struct incmig__nbd_req r;

        pthread_mutex_lock(&s->lock);
        bool stop = c->stop;
        pthread_mutex_unlock(&s->lock);
        if (stop || recv_all(c->fd, h, sizeof h) < 0)
            return;
        switch (incmig__nbd_request(&s->ex, h, &r)) {
        case INCMIG_NBD_QUEUE:
            break;
        case INCMIG_NBD_REJECT:
            if (r.payload && skip_payload(c->fd, r.payload) < 0)
                return;
            reply_now(c, r.cookie, r.error);
            continue;
        default:
            return;
        }

        /* Wait for a slot: this is what bounds memory per connection. */
        uint64_t bytes = r.type == CMD_READ || r.type == CMD_WRITE ? r.count
                                                                   : 0;
        pthread_mutex_lock(&s->lock);
        while (!c->stop && ((c->inflight > 0 &&
                (c->inflight >= CONN_MAX_REQS ||
                 c->inflight_bytes + bytes > CONN_MAX_BYTES)) ||
               (s->inflight_bytes > 0 &&
                s->inflight_bytes + bytes > SERVER_MAX_BYTES)))
            pthread_cond_wait(&s->cond, &s->lock);
        pthread_mutex_unlock(&s->lock);
        /* On a stop we still finish reading this request: its header is
         * in, and its payload, if any, is likely already buffered. */

        struct req *q = calloc(1, sizeof *q);
        if (!q)
            goto nomem;
        q->c = c;
        q->flags = r.flags;
        q->type = r.type;
        q->cookie = r.cookie;
        q->offset = r.offset;
        q->count = r.count;
        if (r.payload) {
            q->buf = malloc(r.payload);
            if (!q->buf) {
                free(q);
                goto nomem;
            }
            if (recv_all(c->fd, q->buf, r.payload) < 0) {
                free(q->buf);
                free(q);
                return;
            }
        }
        pthread_mutex_lock(&s->lock);
        if (s->held && c->stop) {   /* quiesced before serving: dropped */
            pthread_mutex_unlock(&s->lock);
            free(q->buf);
            free(q);
            return;
        }
        c->inflight++;
        c->inflight_bytes += bytes;
        s->inflight_bytes += bytes;
        q->next = NULL;
        if (s->qtail)
            s->qtail->next = q;
        else
            s->qhead = q;
        s->qtail = q;
        pthread_cond_signal(&s->qcond);
        pthread_mutex_unlock(&s->lock);
        continue;

    nomem:
        ERR("nbd %s: out of memory for a request of %" PRIu32 " bytes",
            s->uri, r.count);
        if (r.payload && skip_payload(c->fd, r.payload) < 0)
            return;
        reply_now(c, r.cookie, NBD_ENOMEM);
    }
}

static void *reader_main(void *arg)
{
    struct conn *c = arg;
    struct incmig__nbd_server *s = c->s;

    if (handshake(c) == 0 &&
        pthread_create(&c->writer, NULL, writer_main, c) == 0) {
        c->writer_running = true;
        pthread_mutex_lock(&s->lock);
        if (c->state == HANDSHAKE)
            c->state = SERVING;
        pthread_mutex_unlock(&s->lock);
        serve_requests(c);
    }

    pthread_mutex_lock(&s->lock);
    c->state = DRAINING;
    while (c->inflight > 0)
        pthread_cond_wait(&s->cond, &s->lock);
    c->writer_exit = true;
    pthread_cond_signal(&c->ocond);
    if (c->writer_running) {
        pthread_mutex_unlock(&s->lock);
        pthread_join(c->writer, NULL);
        pthread_mutex_lock(&s->lock);
    }
    /* Closed under the lock: quiesce shuts down c->fd under it too, and
     * must never touch a number the kernel has already handed out again. */
    close(c->fd);
    c->fd = -1;
    c->state = FINISHED;
    s->nclients--;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* Joins and frees connections whose reader has finished. */
static void reap(struct incmig__nbd_server *s)
{
    struct conn *done = NULL, **pp;

    pthread_mutex_lock(&s->lock);
    for (pp = &s->conns; *pp;) {
        struct conn *c = *pp;
        if (c->state == FINISHED) {
            *pp = c->next;
            c->next = done;
            done = c;
        } else {
            pp = &c->next;
        }
    }
    pthread_mutex_unlock(&s->lock);
    while (done) {
        struct conn *c = done;
        done = c->next;
        pthread_join(c->reader, NULL);
        pthread_mutex_destroy(&c->wlock);
        pthread_cond_destroy(&c->ocond);
        free(c);
    }
}

static void accept_one(struct incmig__nbd_server *s)
{
    struct conn *c;
    int fd, r, one = 1;

    fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
            errno != ECONNABORTED) {
            LOGE("nbd %s: accept", s->uri);
            usleep(100000);   /* EMFILE & co: do not spin */
        }
        return;
    }
    if (!incmig__peer_allowed(fd, s->uri)) {
        close(fd);
        return;
    }
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c = calloc(1, sizeof *c);
    if (!c) {
        ERR("nbd %s: out of memory for a new connection", s->uri);
        close(fd);
        return;
    }
    c->s = s;
    c->fd = fd;
    c->state = HANDSHAKE;
    pthread_mutex_init(&c->wlock, NULL);
    pthread_cond_init(&c->ocond, NULL);
    pthread_mutex_lock(&s->lock);
    c->next = s->conns;
    s->conns = c;
    s->nclients++;
    r = pthread_create(&c->reader, NULL, reader_main, c);
    if (r) {
        s->conns = c->next;
        s->nclients--;
    }
    pthread_mutex_unlock(&s->lock);
    if (r) {
        errno = r;
        LOGE("nbd %s: cannot start a thread for a new connection", s->uri);
        pthread_mutex_destroy(&c->wlock);
        pthread_cond_destroy(&c->ocond);
        close(fd);
        free(c);
        return;
    }
    DBG("nbd %s: client connected", s->uri);
}

static void *acceptor_main(void *arg)
{
    struct incmig__nbd_server *s = arg;

    for (;;) {
        struct pollfd p[2] = {
            { .fd = s->lfd, .events = POLLIN },
            { .fd = s->wake[0], .events = POLLIN },
        };
        pthread_mutex_lock(&s->lock);
        bool go = s->accepting;
        pthread_mutex_unlock(&s->lock);
        if (!go)
            break;
        reap(s);
        int r = poll(p, 2, -1);
        if (r < 0 && errno != EINTR) {
            LOGE("nbd %s: poll", s->uri);
            usleep(100000);
            continue;
        }
        if (r > 0 && (p[0].revents & POLLIN))
            accept_one(s);
        if (r > 0 && (p[1].revents & POLLIN)) {
            char junk[16];
            while (read(s->wake[0], junk, sizeof junk) > 0)
                ;
        }
    }
    return NULL;
}

/* ---- listening ---- */

/* The listening socket is the transports' (ctl.c, transport.c), made
 * non-blocking for the acceptor's poll loop. */
static int listen_unix(struct incmig__nbd_server *s, const char *path)
{
    int rc = incmig__unix_listen(path, &s->lfd);
    if (rc)
        return rc;
    s->unix_path = strdup(path);
    if (!s->unix_path)
        return INCMIG_ENOMEM;
    return fcntl(s->lfd, F_SETFL, O_NONBLOCK) < 0 ? INCMIG_EIO : 0;
}

static int listen_tcp(struct incmig__nbd_server *s, const char *hostport)
{
    int rc = incmig__tcp_listen(hostport, &s->lfd);
    if (rc)
        return rc;
    return fcntl(s->lfd, F_SETFL, O_NONBLOCK) < 0 ? INCMIG_EIO : 0;
}

/* ---- entry points ---- */

int incmig__nbd_new(struct incmig__nbd_server **s_r, const char *listen_uri,
                    uint64_t size, const struct incmig__nbd_ops *ops,
                    void *opaque, int workers)
{
    struct incmig__nbd_server *s = NULL;
    int rc;

    *s_r = NULL;
    if (!listen_uri || !ops || !ops->pread || size > INT64_MAX ||
        workers > WORKERS_MAX) {
        ERR("nbd: invalid server parameters (uri %s, size %" PRIu64
            ", workers %d)", listen_uri ? listen_uri : "(none)", size,
            workers);
        return INCMIG_EINVAL;
    }
    s = calloc(1, sizeof *s);
    if (!s)
        return INCMIG_ENOMEM;
    s->lfd = s->wake[0] = s->wake[1] = -1;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    pthread_cond_init(&s->qcond, NULL);
    s->size = size;
    s->ops = *ops;
    s->opaque = opaque;
    s->nworkers = workers > 0 ? workers : WORKERS_DEFAULT;
    s->uri = strdup(listen_uri);
    s->ex = (struct incmig__nbd_export){ .uri = s->uri, .size = size,
                                         .ops = &s->ops };
    s->workers = calloc((size_t)s->nworkers, sizeof *s->workers);
    if (!s->uri || !s->workers) {
        rc = INCMIG_ENOMEM;
        goto out;
    }
    if (pipe2(s->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
        LOGE("nbd: pipe");
        rc = INCMIG_EIO;
        goto out;
    }
    if (strncmp(listen_uri, "unix:", 5) == 0) {
        rc = listen_unix(s, listen_uri + 5);
    } else if (strncmp(listen_uri, "tcp:", 4) == 0) {
        rc = listen_tcp(s, listen_uri + 4);
    } else {
        ERR("nbd: listen address '%s' is neither unix:PATH nor "
            "tcp:HOST:PORT", listen_uri);
        rc = INCMIG_EINVAL;
    }
    if (rc)
        goto out;
    *s_r = s;
    s = NULL;
out:
    incmig__nbd_free(s);
    return rc;
}

/* Workers, listening socket and acceptor, under s->lock. */
static int run_locked(struct incmig__nbd_server *s)
{
    int rc = 0, r;

    if (s->acceptor_running)
        return 0;   /* already accepting */
    while (s->workers_started < s->nworkers) {
        r = pthread_create(&s->workers[s->workers_started], NULL,
                           worker_main, s);
        if (r) {
            errno = r;
            LOGE("nbd %s: cannot start worker thread", s->uri);
            rc = INCMIG_ENOMEM;
            goto out;
        }
        s->workers_started++;
    }
    if (s->lfd < 0) {   /* closed by quiesce: listen again */
        if (s->unix_path) {
            free(s->unix_path);
            s->unix_path = NULL;
        }
        rc = strncmp(s->uri, "unix:", 5) == 0 ? listen_unix(s, s->uri + 5)
                                              : listen_tcp(s, s->uri + 4);
        if (rc)
            goto out;
    }
    s->accepting = true;
    r = pthread_create(&s->acceptor, NULL, acceptor_main, s);
    if (r) {
        errno = r;
        LOGE("nbd %s: cannot start the accepting thread", s->uri);
        s->accepting = false;
        rc = INCMIG_ENOMEM;
        goto out;
    }
    s->acceptor_running = true;
out:
    return rc;
}

int incmig__nbd_hold(struct incmig__nbd_server *s)
{
    int rc;

    pthread_mutex_lock(&s->lock);
    s->held = !s->acceptor_running;
    rc = run_locked(s);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int incmig__nbd_start(struct incmig__nbd_server *s)
{
    int rc;

    pthread_mutex_lock(&s->lock);
    rc = run_locked(s);
    if (!rc && s->held) {
        s->held = false;
        pthread_cond_broadcast(&s->qcond);
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* Quiesce of a held server: the requests it queued were never executed
 * nor acknowledged, so they are dropped unanswered (the client retries
 * them elsewhere).  Under s->lock, after every c->stop is set. */
static void drop_held(struct incmig__nbd_server *s)
{
    if (!s->held)
        return;
    while (s->qhead) {
        struct req *q = s->qhead;
        s->qhead = q->next;
        q->c->inflight--;
        q->c->inflight_bytes -= req_bytes(q);
        s->inflight_bytes -= req_bytes(q);
        free(q->buf);
        free(q);
    }
    s->qtail = NULL;
}

void incmig__nbd_quiesce_begin(struct incmig__nbd_server *s)
{
    bool join;

    /* 1. Stop accepting and stop listening: a paused guest's disk must
     * refuse connections at once (a client then tries the destination)
     * rather than hold them in the backlog; start listens again. */
    pthread_mutex_lock(&s->lock);
    join = s->acceptor_running;
    s->accepting = false;
    s->acceptor_running = false;
    pthread_mutex_unlock(&s->lock);
    if (join) {
        (void)!write(s->wake[1], "q", 1);
        pthread_join(s->acceptor, NULL);
        close(s->lfd);
        s->lfd = -1;
        if (s->unix_path)
            unlink(s->unix_path);
    }

    /* 2. Stop every reader; SHUT_RD wakes one blocked in recv while the
     * write side stays open for the replies still owed. */
    pthread_mutex_lock(&s->lock);
    for (struct conn *c = s->conns; c; c = c->next) {
        if (c->state == FINISHED)
            continue;
        c->stop = true;
        c->cut = 1;          /* a client not reading its replies is cut */
        shutdown(c->fd, SHUT_RD);
    }
    drop_held(s);
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

void incmig__nbd_quiesce_wait(struct incmig__nbd_server *s)
{
    /* 3. Each reader closes its socket once its requests are answered. */
    pthread_mutex_lock(&s->lock);
    while (s->nclients > 0)
        pthread_cond_wait(&s->cond, &s->lock);
    pthread_mutex_unlock(&s->lock);
    reap(s);
}

int incmig__nbd_quiesce(struct incmig__nbd_server *s)
{
    incmig__nbd_quiesce_begin(s);
    incmig__nbd_quiesce_wait(s);
    return 0;
}

int incmig__nbd_clients(struct incmig__nbd_server *s)
{
    int n;

    pthread_mutex_lock(&s->lock);
    n = s->nclients;
    pthread_mutex_unlock(&s->lock);
    return n;
}

void incmig__nbd_free(struct incmig__nbd_server *s)
{
    if (!s)
        return;
    (void)incmig__nbd_quiesce(s);
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_cond_broadcast(&s->qcond);
    pthread_mutex_unlock(&s->lock);
    for (int i = 0; i < s->workers_started; i++)
        pthread_join(s->workers[i], NULL);
    if (s->lfd >= 0)
        close(s->lfd);
    if (s->unix_path) {
        unlink(s->unix_path);
        free(s->unix_path);
    }
    if (s->wake[0] >= 0)
        close(s->wake[0]);
    if (s->wake[1] >= 0)
        close(s->wake[1]);
    pthread_cond_destroy(&s->qcond);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s->workers);
    free(s->uri);
    free(s);
}
