/* stream.c: the migration stream codec (docs/specs/incmig-stream.md).
 *
 * Entry points:
 *   incmig__stream_init/dispose       an endpoint over a pair of fds
 *   incmig__stream_send_header/recv_header
 *                                     the 16-byte stream header, once per
 *                                     direction
 *   incmig__stream_send/recv          one framed record
 *   incmig__enc_* / incmig__dec_*     record bodies
 *   incmig__rec_name                  "HELLO", "BLOCKS", ... for messages
 *
 * Framing (all integers big-endian):
 *
 *   +---------+---------+----------------+---------+
 *   | u32 type| u32 len | body (len)     | u32 crc |   crc = crc32c(type,len,body)
 *   +---------+---------+----------------+---------+
 *
 * len is checked against INCMIG_REC_MAX before anything is read into the
 * receive buffer, which is allocated once at init (INCMIG_REC_MAX + 12), so
 * a hostile peer can never make us allocate.  The receive buffer holds the
 * whole frame, so the CRC is computed in one pass and r->body points at
 * rbuf + 8.  Sends use writev/sendmsg of three pieces so block data is
 * never copied.
 *
 * Decoders trust nothing: the body length must be exactly what the fields
 * imply, reserved fields must be zero, strings carry an explicit u16
 * length, are bounded and may not contain NUL.  Checks that need to know
 * the disks (offsets against the disk size) are the caller's.
 *
 * SIGPIPE: on sockets we use MSG_NOSIGNAL; on pipes (ssh's stdin/stdout)
 * we block SIGPIPE in the calling thread around the write and consume a
 * SIGPIPE we caused, so a dead peer is an INCMIG_ELINK, never a signal.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "be.h"
#include "incmig-internal.h"

#define STREAM_HDR_LEN 16        /* magic(8) version(4) flags(4) */
#define FRAME_HDR_LEN 8          /* type(4) len(4) */
#define FRAME_CRC_LEN 4

/* ---- big-endian helpers -------------------------------------------------- */

/* ---- CRC-32C ------------------------------------------------------------- */

/* CRC-32C (Castagnoli, as in iSCSI, ext4 and btrfs) rather than zlib's
 * CRC-32: x86's SSE4.2 computes it in hardware, several times faster than
 * zlib's table code, and every byte of a migration goes through it twice.
 * The table path serves CPUs without the instruction; both give the same
 * result (test-stream checks the standard test vector). */
static uint32_t crc_table[256];
static bool crc_hw;
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
#if defined(__x86_64__)
    __builtin_cpu_init();
    crc_hw = __builtin_cpu_supports("sse4.2");
#endif
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t crc_run_hw(uint32_t c, const uint8_t *p, size_t n)
{
    uint64_t c64 = c;
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c64 = __builtin_ia32_crc32di(c64, v);
    }
    c = (uint32_t)c64;
    while (n--)
        c = __builtin_ia32_crc32qi(c, *p++);
    return c;
}
#endif

uint32_t incmig__crc32c(uint32_t crc, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    uint32_t c = ~crc;

    pthread_once(&crc_once, crc_init);
#if defined(__x86_64__)
    if (crc_hw)
        return ~crc_run_hw(c, p, n);
#endif
    while (n--)
        c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
    return ~c;
}

static uint32_t frame_crc(const uint8_t *hdr, const uint8_t *body,
                          uint32_t len)
{
    uint32_t c = incmig__crc32c(0, hdr, FRAME_HDR_LEN);
    if (len)
        c = incmig__crc32c(c, body, len);
    return c;
}

/* ---- record names -------------------------------------------------------- */

static bool rec_known(uint32_t type)
{
    return (type >= INCMIG_REC_HELLO && type <= INCMIG_REC_XEN_STREAM) ||
           type == INCMIG_REC_BASE || type == INCMIG_REC_DECIDE ||
           type == INCMIG_REC_FLOW ||
           type == INCMIG_REC_REPORT;
}

const char *incmig__rec_name(uint32_t type)
{
    switch (type) {
    case INCMIG_REC_HELLO: return "HELLO";
    case INCMIG_REC_DISK: return "DISK";
    case INCMIG_REC_DISK_ACK: return "DISK_ACK";
    case INCMIG_REC_BLOCKS: return "BLOCKS";
    case INCMIG_REC_ROUND: return "ROUND";
    case INCMIG_REC_SUSPEND: return "SUSPEND";
    case INCMIG_REC_BITMAP: return "BITMAP";
    case INCMIG_REC_READY: return "READY";
    case INCMIG_REC_GO: return "GO";
    case INCMIG_REC_PULL_REQ: return "PULL_REQ";
    case INCMIG_REC_PULL_END: return "PULL_END";
    case INCMIG_REC_COMPLETE: return "COMPLETE";
    case INCMIG_REC_ERROR: return "ERROR";
    case INCMIG_REC_RESUME: return "RESUME";
    case INCMIG_REC_END: return "END";
    case INCMIG_REC_XEN_STREAM: return "XEN_STREAM";
    case INCMIG_REC_BASE: return "BASE";
    case INCMIG_REC_DECIDE: return "DECIDE";
    case INCMIG_REC_FLOW: return "FLOW";
    case INCMIG_REC_REPORT: return "REPORT";
    default: return "unknown";
    }
}

/* ---- init / dispose ------------------------------------------------------ */

int incmig__stream_init(struct incmig__stream *s, int rfd, int wfd)
{
    memset(s, 0, sizeof *s);
    s->rfd = rfd;
    s->wfd = wfd;
    s->rbuf = malloc(FRAME_HDR_LEN + INCMIG_REC_MAX + FRAME_CRC_LEN);
    if (!s->rbuf) {
        ERR("cannot allocate the %u-byte stream receive buffer",
            (unsigned)(INCMIG_REC_MAX + FRAME_HDR_LEN + FRAME_CRC_LEN));
        return INCMIG_ENOMEM;
    }
    /* The mutex exists exactly while rbuf is set: dispose keys on rbuf. */
    pthread_mutex_init(&s->wlock, NULL);
    return 0;
}

void incmig__stream_dispose(struct incmig__stream *s)
{
    if (s->rbuf) {
        free(s->rbuf);
        s->rbuf = NULL;
        pthread_mutex_destroy(&s->wlock);
    }
    if (s->rfd >= 0)
        close(s->rfd);
    if (s->wfd >= 0 && s->wfd != s->rfd)
        close(s->wfd);
    s->rfd = s->wfd = -1;
}

/* ---- low-level I/O ------------------------------------------------------- */

static bool fd_is_socket(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

/* One writev/sendmsg; returns bytes written or -1 with errno. */
static ssize_t write_some(int fd, bool sock, bool nowait, struct iovec *iov,
                          int iovcnt)
{
    if (sock) {
        struct msghdr m = { .msg_iov = iov, .msg_iovlen = iovcnt };
        return sendmsg(fd, &m, MSG_NOSIGNAL | (nowait ? MSG_DONTWAIT : 0));
    }

    /* A pipe: keep a SIGPIPE from killing the process.  If SIGPIPE was
     * already pending before we blocked it, it is not ours to consume. */
    sigset_t pipe_set, old_set, pending;
    bool was_pending;
    ssize_t r;
    int saved;

    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
    sigpending(&pending);
    was_pending = sigismember(&pending, SIGPIPE);
    r = writev(fd, iov, iovcnt);
    saved = errno;
    if (r < 0 && saved == EPIPE && !was_pending) {
        static const struct timespec zero = { 0, 0 };
        while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &old_set, NULL);
    errno = saved;
    return r;
}

/* Wait until fd is ready for `events` (POLLIN/POLLOUT), in slices of at
 * most 250 ms so that a stop request and the deadlines are seen: 0 ready,
 * INCMIG_ECANCEL (stop, reads only), INCMIG_ELINK (a deadline passed,
 * logged with `what`).  `last` is when the peer last made progress. */
static int wait_fd(struct incmig__stream *s, int fd, short events,
                   double last, const char *what)
{
    for (;;) {
        double now = incmig__now(), slice = 0.25;
        if (events == POLLIN && s->stop_cancels && incmig__stop_requested) {
            ERR("stopped while waiting for %s from the peer", what);
            return INCMIG_ECANCEL;
        }
        if (s->deadline > 0 && now >= s->deadline) {
            ERR("the peer took too long: deadline passed while %s %s",
                events == POLLIN ? "receiving" : "sending", what);
            return INCMIG_ELINK;
        }
        if (s->idle_s > 0 && now - last >= s->idle_s) {
            ERR("no progress from the peer for %.0f s while %s %s: "
                "the link is considered lost", s->idle_s,
                events == POLLIN ? "receiving" : "sending", what);
            return INCMIG_ELINK;
        }
        if (s->deadline > 0 && s->deadline - now < slice)
            slice = s->deadline - now;
        if (s->idle_s > 0 && last + s->idle_s - now < slice)
            slice = last + s->idle_s - now;
        struct pollfd p = { .fd = fd, .events = events };
        int n = poll(&p, 1, slice > 0 ? (int)(slice * 1000) + 1 : 0);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR) {
            LOGE("waiting for the peer (%s)", what);
            return INCMIG_ELINK;
        }
    }
}

/* Write every byte of iov[]; EINTR and partial writes are retried.  On a
 * socket with a deadline set, writes do not block: a peer that stops
 * reading is bounded like a silent one. */
static int write_all(struct incmig__stream *s, struct iovec *iov, int iovcnt,
                     const char *what)
{
    bool sock = fd_is_socket(s->wfd);
    double last = incmig__now();

    while (iovcnt > 0) {
        if (iov->iov_len == 0) {
            iov++;
            iovcnt--;
            continue;
        }
        bool timed = sock && (s->deadline > 0 || s->idle_s > 0);
        ssize_t r = write_some(s->wfd, sock, timed, iov, iovcnt);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (timed && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                int rc = wait_fd(s, s->wfd, POLLOUT, last, what);
                if (rc)
                    return rc;
                continue;
            }
            if (errno == EPIPE || errno == ECONNRESET)
                ERR("connection to peer lost while sending %s", what);
            else
                LOGE("error sending %s to peer", what);
            return INCMIG_ELINK;
        }
        s->bytes_out += (uint64_t)r;
        last = incmig__now();
        size_t n = (size_t)r;
        while (n > 0 && n >= iov->iov_len) {
            n -= iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (n > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + n;
            iov->iov_len -= n;
        }
    }
    return 0;
}

/* Read exactly len bytes.  Returns 0, or INCMIG_ELINK after logging: `what`
 * names the thing being read; EOF before its first byte and EOF inside it
 * get different messages. */
static int read_all(struct incmig__stream *s, uint8_t *buf, size_t len,
                    const char *what, bool at_boundary)
{
    size_t got = 0;
    double last = incmig__now();
    bool timed = s->deadline > 0 || s->idle_s > 0 || s->stop_cancels;

    while (got < len) {
        if (timed) {
            int rc = wait_fd(s, s->rfd, POLLIN, last, what);
            if (rc)
                return rc;
        }
        ssize_t r = read(s->rfd, buf + got, len - got);
        if (r < 0) {
            if (errno == EINTR) {
                if (s->stop_cancels && incmig__stop_requested) {
                    ERR("stopped while waiting for %s from the peer", what);
                    return INCMIG_ECANCEL;
                }
                continue;
            }
            LOGE("error receiving %s from peer", what);
            return INCMIG_ELINK;
        }
        if (r == 0) {
            if (got == 0 && at_boundary)
                ERR("connection closed by peer (expecting %s)", what);
            else
                ERR("truncated record: connection closed by peer in the "
                    "middle of %s (%zu of %zu bytes)", what, got, len);
            return INCMIG_ELINK;
        }
        got += (size_t)r;
        s->bytes_in += (uint64_t)r;
        last = incmig__now();
    }
    return 0;
}

/* Sleep until `due` on the monotonic clock (incmig__now's clock). */
static void sleep_until(double due)
{
    struct timespec ts;
    ts.tv_sec = (time_t)due;
    ts.tv_nsec = (long)((due - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* Called with wlock held before sending `n` bytes.  The budget is
 * bandwidth * (now - pace_t0); we wait until what was already sent fits,
 * so at most one record goes out ahead of the budget (the burst).  Credit
 * left unused by an idle sender is forgotten after 50 ms, so a pause is
 * not followed by a burst above the cap. */
static void pace(struct incmig__stream *s, size_t n)
{
    for (;;) {
        uint64_t bw = __atomic_load_n(&s->bandwidth, __ATOMIC_ACQUIRE);
        double now = incmig__now();
        if (bw != s->pace_bw) {
            /* A new cap: the bytes still owed under the old one carry
             * over (as bytes), what was sent before is settled. */
            double left = 0;
            if (s->pace_bw && s->pace_t0 > 0) {
                double due = s->pace_t0 +
                             (double)s->pace_bytes / (double)s->pace_bw;
                if (due > now)
                    left = (due - now) * (double)s->pace_bw;
            }
            s->pace_bw = bw;
            s->pace_t0 = now;
            s->pace_bytes = (uint64_t)left;
        }
        if (bw == 0)
            return;
        double due = s->pace_t0 + (double)s->pace_bytes / (double)bw;
        if (s->pace_t0 == 0 || due < now - 0.05) {
            s->pace_t0 = now;
            s->pace_bytes = 0;
            due = now;
        }
        if (due <= now)
            break;
        sleep_until(due < now + 0.1 ? due : now + 0.1);
    }
    s->pace_bytes += n;
}

void incmig__stream_set_bandwidth(struct incmig__stream *s, uint64_t bw)
{
    __atomic_store_n(&s->bandwidth, bw, __ATOMIC_RELEASE);
}

/* ---- header -------------------------------------------------------------- */

int incmig__stream_send_header(struct incmig__stream *s)
{
    uint8_t hdr[STREAM_HDR_LEN];
    struct iovec iov = { hdr, sizeof hdr };
    int rc;

    memcpy(hdr, INCMIG_STREAM_MAGIC, 8);
    put32(hdr + 8, INCMIG_STREAM_VERSION);
    put32(hdr + 12, 0);
    pthread_mutex_lock(&s->wlock);
    pace(s, sizeof hdr);
    rc = write_all(s, &iov, 1, "the stream header");
    pthread_mutex_unlock(&s->wlock);
    return rc;
}

int incmig__stream_recv_header(struct incmig__stream *s)
{
    uint8_t hdr[STREAM_HDR_LEN];
    int rc;

    rc = read_all(s, hdr, sizeof hdr, "the stream header", true);
    if (rc)
        return rc;
    if (hdr[0] == 0x16 && hdr[1] == 3) {
        ERR("the peer starts a TLS handshake: give this side the same "
            "--tls-psk or --tls-x509 as the peer");
        return INCMIG_EPROTO;
    }
    if (memcmp(hdr, INCMIG_STREAM_MAGIC, 8) != 0) {
        /* Usually a shell banner or an error message from ssh or the
         * remote command: show it. */
        char shown[9];
        for (int i = 0; i < 8; i++)
            shown[i] = (hdr[i] >= 0x20 && hdr[i] < 0x7f) ? (char)hdr[i] : '.';
        shown[8] = '\0';
        ERR("not an incmig stream (starts with \"%s\"): check that the peer "
            "runs xl-incmig and that nothing else writes to the connection",
            shown);
        return INCMIG_EPROTO;
    }
    uint32_t version = get32(hdr + 8), flags = get32(hdr + 12);
    if (version != INCMIG_STREAM_VERSION) {
        ERR("peer speaks incmig stream version %" PRIu32 ", this side "
            "speaks version %u: install the same incmig on both hosts",
            version, INCMIG_STREAM_VERSION);
        return INCMIG_EVERSION;
    }
    if (flags != 0) {
        ERR("stream header has reserved flags %#" PRIx32 " set", flags);
        return INCMIG_EPROTO;
    }
    return 0;
}

/* ---- records ------------------------------------------------------------- */

int incmig__stream_send2(struct incmig__stream *s, uint32_t type,
                         const void *body, uint32_t len, const void *data,
                         uint32_t dlen)
{
    uint8_t hdr[FRAME_HDR_LEN], crc[FRAME_CRC_LEN];
    uint64_t total = (uint64_t)len + dlen;
    int rc;

    if (total > INCMIG_REC_MAX || (len && !body) || (dlen && !data)) {
        ERR("refusing to send %s record of %" PRIu64 " bytes (limit %u)",
            incmig__rec_name(type), total, (unsigned)INCMIG_REC_MAX);
        return INCMIG_EINVAL;
    }
    put32(hdr, type);
    put32(hdr + 4, (uint32_t)total);
    uint32_t c = frame_crc(hdr, body, len);
    if (dlen)
        c = incmig__crc32c(c, data, dlen);
    put32(crc, c);
    struct iovec iov[4] = {
        { hdr, sizeof hdr },
        { (void *)body, len },
        { (void *)data, dlen },
        { crc, sizeof crc },
    };
    pthread_mutex_lock(&s->wlock);
    pace(s, sizeof hdr + total + sizeof crc);
    rc = write_all(s, iov, 4, incmig__rec_name(type));
    pthread_mutex_unlock(&s->wlock);
    return rc;
}

int incmig__stream_send(struct incmig__stream *s, uint32_t type,
                        const void *body, uint32_t len)
{
    return incmig__stream_send2(s, type, body, len, NULL, 0);
}

int incmig__stream_recv(struct incmig__stream *s, struct incmig__rec *r)
{
    int rc;

    for (;;) {
        uint8_t *hdr = s->rbuf, *body = s->rbuf + FRAME_HDR_LEN;
        uint64_t off = s->bytes_in;

        rc = read_all(s, hdr, FRAME_HDR_LEN, "a record header", true);
        if (rc)
            return rc;
        uint32_t type = get32(hdr), len = get32(hdr + 4);
        const char *name = incmig__rec_name(type);
        if (len > INCMIG_REC_MAX) {
            ERR("record type %#" PRIx32 " (%s) at stream offset %" PRIu64
                " claims a %" PRIu32 "-byte body, over the %u-byte limit: "
                "the peer is broken or not incmig", type, name, off, len,
                (unsigned)INCMIG_REC_MAX);
            return INCMIG_EPROTO;
        }
        bool known = rec_known(type);
        if (!known && !(type & INCMIG_REC_OPTIONAL)) {
            ERR("unknown mandatory record type %" PRIu32 " (%#" PRIx32 ") "
                "at stream offset %" PRIu64 ": the peer runs an "
                "incompatible incmig; install the same version on both "
                "hosts", type, type, off);
            return INCMIG_EPROTO;
        }
        rc = read_all(s, body, len + FRAME_CRC_LEN, "a record body", false);
        if (rc)
            return rc;
        uint32_t want = get32(body + len), got = frame_crc(hdr, body, len);
        if (want != got) {
            ERR("record at stream offset %" PRIu64 " (%s, %" PRIu32
                " bytes) checksum mismatch (%#08" PRIx32 " != %#08" PRIx32
                "): data corrupted in transit", off, name, len, got, want);
            return INCMIG_EPROTO;
        }
        if (!known) {
            DBG("skipping unknown optional record type %#" PRIx32
                " (%" PRIu32 " bytes)", type, len);
            continue;
        }
        r->type = type;
        r->len = len;
        r->body = body;
        return 0;
    }
}

/* ---- body codecs --------------------------------------------------------- */

static int expect_type(const struct incmig__rec *r, uint32_t type)
{
    if (r->type != type) {
        ERR("expected a %s record, got %s (type %#" PRIx32 ")",
            incmig__rec_name(type), incmig__rec_name(r->type), r->type);
        return INCMIG_EPROTO;
    }
    return 0;
}

static int expect_len(const struct incmig__rec *r, uint32_t len)
{
    if (r->len != len) {
        ERR("%s record body is %" PRIu32 " bytes, expected %" PRIu32,
            incmig__rec_name(r->type), r->len, len);
        return INCMIG_EPROTO;
    }
    return 0;
}

static int expect_min_len(const struct incmig__rec *r, uint32_t len)
{
    if (r->len < len) {
        ERR("%s record body is %" PRIu32 " bytes, shorter than its "
            "%" PRIu32 "-byte fixed part", incmig__rec_name(r->type), r->len,
            len);
        return INCMIG_EPROTO;
    }
    return 0;
}

/* Strings on the wire: u16 length, bytes, no NUL, no terminator. */
static int enc_str(uint8_t *p, const char *str, size_t max, const char *what)
{
    size_t n = strnlen(str, max + 1);
    if (n > max) {
        ERR("%s is longer than %zu bytes", what, max);
        return INCMIG_EINVAL;
    }
    put16(p, (uint16_t)n);
    memcpy(p + 2, str, n);
    return (int)(2 + n);
}

/* Decode the string at `off`, which must end the body exactly. */
static int dec_str(const struct incmig__rec *r, uint32_t off, char *out,
                   size_t max, const char *what)
{
    if (r->len < off + 2u) {
        ERR("%s record too short for its %s length", incmig__rec_name(r->type),
            what);
        return INCMIG_EPROTO;
    }
    uint16_t n = get16(r->body + off);
    if (n > max) {
        ERR("%s record: %s of %u bytes, over the %zu-byte limit",
            incmig__rec_name(r->type), what, n, max);
        return INCMIG_EPROTO;
    }
    if (r->len != off + 2u + n) {
        ERR("%s record body is %" PRIu32 " bytes, but its %s of %u bytes "
            "implies %" PRIu32, incmig__rec_name(r->type), r->len, what, n,
            off + 2u + n);
        return INCMIG_EPROTO;
    }
    if (memchr(r->body + off + 2, 0, n)) {
        ERR("%s record: %s contains a NUL byte", incmig__rec_name(r->type),
            what);
        return INCMIG_EPROTO;
    }
    memcpy(out, r->body + off + 2, n);
    out[n] = '\0';
    return 0;
}

static bool bs_ok(uint64_t bs)
{
    return bs >= INCMIG_BS_MIN && bs <= INCMIG_BS_MAX && (bs & (bs - 1)) == 0;
}

/* Blocks of the smallest size a disk can have: bounds every block number. */
#define MAX_BLOCKS_ANY (INCMIG_DISK_MAX / INCMIG_BS_MIN)

/* HELLO: u32 version, u32 role, u64 caps, u8[16] mig_id, u32 ndisks,
 *        u16 name_len, name */
#define HELLO_FIXED 38

int incmig__enc_hello(const struct incmig__hello *h, uint8_t *buf)
{
    int n;

    if (h->role > 1 || h->ndisks > INCMIG_MAX_DISKS)
        return INCMIG_EINVAL;
    put32(buf, h->version);
    put32(buf + 4, h->role);
    put64(buf + 8, h->caps);
    memcpy(buf + 16, h->mig_id, 16);
    put32(buf + 32, h->ndisks);
    n = enc_str(buf + 36, h->name, INCMIG_NAME_MAX, "domain name");
    return n < 0 ? n : 36 + n;
}

int incmig__dec_hello(const struct incmig__rec *r, struct incmig__hello *h)
{
    int rc;

    if ((rc = expect_type(r, INCMIG_REC_HELLO)) ||
        (rc = expect_min_len(r, HELLO_FIXED)))
        return rc;
    const uint8_t *p = r->body;
    h->version = get32(p);
    h->role = get32(p + 4);
    h->caps = get64(p + 8);
    memcpy(h->mig_id, p + 16, 16);
    h->ndisks = get32(p + 32);
    if (h->version != INCMIG_STREAM_VERSION) {
        ERR("peer's HELLO announces protocol version %" PRIu32 ", this side "
            "speaks %u: install the same incmig on both hosts", h->version,
            INCMIG_STREAM_VERSION);
        return INCMIG_EVERSION;
    }
    if (h->role > 1) {
        ERR("HELLO record: role %" PRIu32 " is neither source (0) nor "
            "destination (1)", h->role);
        return INCMIG_EPROTO;
    }
    if (h->ndisks > INCMIG_MAX_DISKS || (h->role == 0 && h->ndisks == 0)) {
        ERR("HELLO record: %" PRIu32 " disks, must be %s%u",
            h->ndisks, h->role == 0 ? "1 to " : "at most ", INCMIG_MAX_DISKS);
        return INCMIG_EPROTO;
    }
    return dec_str(r, 36, h->name, INCMIG_NAME_MAX, "domain name");
}

/* DISK: u32 index, u32 block_size, u64 size, u8[16] lineage,
 *       u16 name_len, name */
#define DISK_FIXED 34

int incmig__enc_disk(const struct incmig__disk_rec *d, uint8_t *buf)
{
    int n;

    if (d->index >= INCMIG_MAX_DISKS || !bs_ok(d->block_size) ||
        d->size == 0 || d->size > INCMIG_DISK_MAX)
        return INCMIG_EINVAL;
    put32(buf, d->index);
    put32(buf + 4, d->block_size);
    put64(buf + 8, d->size);
    memcpy(buf + 16, d->lineage, 16);
    n = enc_str(buf + 32, d->name, INCMIG_NAME_MAX, "disk name");
    return n < 0 ? n : 32 + n;
}

int incmig__dec_disk(const struct incmig__rec *r, struct incmig__disk_rec *d)
{
    int rc;

    if ((rc = expect_type(r, INCMIG_REC_DISK)) ||
        (rc = expect_min_len(r, DISK_FIXED)))
        return rc;
    const uint8_t *p = r->body;
    d->index = get32(p);
    d->block_size = get32(p + 4);
    d->size = get64(p + 8);
    memcpy(d->lineage, p + 16, 16);
    if (d->index >= INCMIG_MAX_DISKS) {
        ERR("DISK record: disk index %" PRIu32 " out of range (at most %u "
            "disks)", d->index, INCMIG_MAX_DISKS);
        return INCMIG_EPROTO;
    }
    if (!bs_ok(d->block_size)) {
        ERR("DISK record for disk %" PRIu32 ": block size %" PRIu32 " is "
            "not a power of two from %u to %u", d->index, d->block_size,
            INCMIG_BS_MIN, INCMIG_BS_MAX);
        return INCMIG_EPROTO;
    }
    if (d->size == 0 || d->size > INCMIG_DISK_MAX) {
        ERR("DISK record for disk %" PRIu32 ": size %" PRIu64 " bytes is "
            "not from 1 to %" PRIu64, d->index, d->size, INCMIG_DISK_MAX);
        return INCMIG_EPROTO;
    }
    return dec_str(r, 32, d->name, INCMIG_NAME_MAX, "disk name");
}

/* DISK_ACK: u32 index, s32 status, u16 msg_len, msg */
#define DISK_ACK_FIXED 10

int incmig__enc_disk_ack(const struct incmig__disk_ack *a, uint8_t *buf)
{
    int n;

    if (a->index >= INCMIG_MAX_DISKS || a->status > 0)
        return INCMIG_EINVAL;
    put32(buf, a->index);
    put32(buf + 4, (uint32_t)a->status);
    n = enc_str(buf + 8, a->msg, INCMIG_MSG_MAX, "DISK_ACK message");
    return n < 0 ? n : 8 + n;
}

int incmig__dec_disk_ack(const struct incmig__rec *r,
                         struct incmig__disk_ack *a)
{
    int rc;

    if ((rc = expect_type(r, INCMIG_REC_DISK_ACK)) ||
        (rc = expect_min_len(r, DISK_ACK_FIXED)))
        return rc;
    a->index = get32(r->body);
    a->status = (int32_t)get32(r->body + 4);
    if (a->index >= INCMIG_MAX_DISKS) {
        ERR("DISK_ACK record: disk index %" PRIu32 " out of range",
            a->index);
        return INCMIG_EPROTO;
    }
    if (a->status > 0) {
        ERR("DISK_ACK record for disk %" PRIu32 ": status %" PRId32
            " is neither 0 nor an error code", a->index, a->status);
        return INCMIG_EPROTO;
    }
    return dec_str(r, 8, a->msg, INCMIG_MSG_MAX, "DISK_ACK message");
}

/* BLOCKS: u32 disk, u8 phase, u8 enc, u16 reserved, u64 first,
 *         u32 nblocks, data */
int incmig__enc_blocks_hdr(const struct incmig__blocks *b, uint8_t *buf)
{
    if (b->disk >= INCMIG_MAX_DISKS || b->phase > INCMIG_PHASE_PULL_BACKGROUND
        || b->enc > INCMIG_ENC_ZSTD || b->nblocks == 0 ||
        b->len > INCMIG_REC_MAX - INCMIG_BLOCKS_HDR)
        return INCMIG_EINVAL;
    put32(buf, b->disk);
    buf[4] = b->phase;
    buf[5] = b->enc;
    put16(buf + 6, 0);
    put64(buf + 8, b->first);
    put32(buf + 16, b->nblocks);
    return INCMIG_BLOCKS_HDR;
}

int incmig__dec_blocks(const struct incmig__rec *r, uint32_t block_size,
                       struct incmig__blocks *b)
{
    int rc;

    if (!bs_ok(block_size)) {
        ERR("decoding BLOCKS with invalid block size %" PRIu32, block_size);
        return INCMIG_EINVAL;
    }
    if ((rc = expect_type(r, INCMIG_REC_BLOCKS)) ||
        (rc = expect_min_len(r, INCMIG_BLOCKS_HDR)))
        return rc;
    const uint8_t *p = r->body;
    b->disk = get32(p);
    b->phase = p[4];
    b->enc = p[5];
    uint16_t reserved = get16(p + 6);
    b->first = get64(p + 8);
    b->nblocks = get32(p + 16);
    b->data = p + INCMIG_BLOCKS_HDR;
    b->len = r->len - INCMIG_BLOCKS_HDR;

    if (b->disk >= INCMIG_MAX_DISKS) {
        ERR("BLOCKS record: disk index %" PRIu32 " out of range", b->disk);
        return INCMIG_EPROTO;
    }
    if (b->phase > INCMIG_PHASE_PULL_BACKGROUND) {
        ERR("BLOCKS record for disk %" PRIu32 ": unknown phase %u",
            b->disk, b->phase);
        return INCMIG_EPROTO;
    }
    if (reserved != 0) {
        ERR("BLOCKS record for disk %" PRIu32 ": reserved field is %#x, "
            "not 0", b->disk, reserved);
        return INCMIG_EPROTO;
    }
    if (b->nblocks == 0 ||
        (uint64_t)b->nblocks * block_size > INCMIG_BLOCKS_MAX) {
        ERR("BLOCKS record for disk %" PRIu32 ": %" PRIu32 " blocks of %"
            PRIu32 " bytes, must be 1 to %u bytes' worth", b->disk,
            b->nblocks, block_size, (unsigned)INCMIG_BLOCKS_MAX);
        return INCMIG_EPROTO;
    }
    /* first + nblocks cannot wrap: both bounded; the caller compares with
     * the disk size, this keeps first * block_size from overflowing. */
    if (b->first > INCMIG_DISK_MAX / block_size - b->nblocks) {
        ERR("BLOCKS record for disk %" PRIu32 ": blocks %" PRIu64 "+%"
            PRIu32 " lie beyond the largest possible disk", b->disk,
            b->first, b->nblocks);
        return INCMIG_EPROTO;
    }
    uint32_t want = b->nblocks * block_size;
    switch (b->enc) {
    case INCMIG_ENC_RAW:
        if (b->len != want) {
            ERR("BLOCKS record for disk %" PRIu32 " at block %" PRIu64
                ": %" PRIu32 " data bytes for %" PRIu32 " raw blocks, "
                "expected %" PRIu32, b->disk, b->first, b->len, b->nblocks,
                want);
            return INCMIG_EPROTO;
        }
        break;
    case INCMIG_ENC_ZLIB:
    case INCMIG_ENC_ZSTD:
        if (b->len == 0) {
            ERR("BLOCKS record for disk %" PRIu32 " at block %" PRIu64
                ": empty compressed data", b->disk, b->first);
            return INCMIG_EPROTO;
        }
        break;
    case INCMIG_ENC_ZERO:
        if (b->len != 0) {
            ERR("BLOCKS record for disk %" PRIu32 " at block %" PRIu64
                ": zero blocks carry %" PRIu32 " data bytes, expected none",
                b->disk, b->first, b->len);
            return INCMIG_EPROTO;
        }
        b->data = NULL;
        break;
    default:
        ERR("BLOCKS record for disk %" PRIu32 ": unknown encoding %u",
            b->disk, b->enc);
        return INCMIG_EPROTO;
    }
    return 0;
}

/* BITMAP: u32 disk, u8 phase, u8[3] reserved, u64 first, u64 nbits, data */
int incmig__enc_bitmap_hdr(const struct incmig__bitmap_rec *m, uint8_t *buf)
{
    if (m->disk >= INCMIG_MAX_DISKS ||
        m->phase > INCMIG_PHASE_PULL_BACKGROUND || m->nbits == 0 ||
        m->nbits > MAX_BLOCKS_ANY || m->first > MAX_BLOCKS_ANY - m->nbits)
        return INCMIG_EINVAL;
    put32(buf, m->disk);
    buf[4] = m->phase;
    buf[5] = buf[6] = buf[7] = 0;
    put64(buf + 8, m->first);
    put64(buf + 16, m->nbits);
    return INCMIG_BITMAP_HDR;
}

int incmig__dec_bitmap(const struct incmig__rec *r,
                       struct incmig__bitmap_rec *m)
{
    int rc;

    if ((rc = expect_type(r, INCMIG_REC_BITMAP)) ||
        (rc = expect_min_len(r, INCMIG_BITMAP_HDR + 1)))
        return rc;
    const uint8_t *p = r->body;
    m->disk = get32(p);
    m->phase = p[4];
    m->first = get64(p + 8);
    m->nbits = get64(p + 16);
    m->data = p + INCMIG_BITMAP_HDR;
    m->len = r->len - INCMIG_BITMAP_HDR;
    if (m->disk >= INCMIG_MAX_DISKS) {
        ERR("BITMAP record: disk index %" PRIu32 " out of range", m->disk);
        return INCMIG_EPROTO;
    }
    if (m->phase > INCMIG_PHASE_PULL_BACKGROUND) {
        ERR("BITMAP record for disk %" PRIu32 ": unknown phase %u", m->disk,
            m->phase);
        return INCMIG_EPROTO;
    }
    if (p[5] || p[6] || p[7]) {
        ERR("BITMAP record for disk %" PRIu32 ": reserved bytes not zero",
            m->disk);
        return INCMIG_EPROTO;
    }
    if (m->nbits == 0 || m->nbits > MAX_BLOCKS_ANY ||
        m->first > MAX_BLOCKS_ANY - m->nbits) {
        ERR("BITMAP record for disk %" PRIu32 ": bits %" PRIu64 "+%" PRIu64
            " are empty or lie beyond the largest possible disk", m->disk,
            m->first, m->nbits);
        return INCMIG_EPROTO;
    }
    return 0;
}

/* ROUND: u32 round, u64 blocks */
int incmig__enc_round(const struct incmig__round *x, uint8_t *buf)
{
    put32(buf, x->round);
    put64(buf + 4, x->blocks);
    return 12;
}

int incmig__dec_round(const struct incmig__rec *r, struct incmig__round *x)
{
    int rc;

    if ((rc = expect_type(r, INCMIG_REC_ROUND)) || (rc = expect_len(r, 12)))
        return rc;
    x->round = get32(r->body);
    x->blocks = get64(r->body + 4);
    /* Every block of every disk, at most: anything above is nonsense. */
    if (x->blocks > MAX_BLOCKS_ANY * INCMIG_MAX_DISKS) {
        ERR("ROUND record %" PRIu32 ": %" PRIu64 " blocks is more than all "
            "disks can hold", x->round, x->blocks);
        return INCMIG_EPROTO;
    }
    return 0;
}

/* PULL_REQ: u32 disk, u64 first, u32 nblocks */
int incmig__enc_pull_req(const struct incmig__pull_req *q, uint8_t *buf)
{
    if (q->disk >= INCMIG_MAX_DISKS || q->nblocks == 0 ||
        q->nblocks > INCMIG_BLOCKS_MAX / INCMIG_BS_MIN)
        return INCMIG_EINVAL;
    put32(buf, q->disk);
    put64(buf + 4, q->first);
    put32(buf + 12, q->nblocks);
    return 16;
}

int incmig__dec_pull_req(const struct incmig__rec *r,
                         struct incmig__pull_req *q)
{
    int rc;

    if ((rc = expect_type(r, INCMIG_REC_PULL_REQ)) ||
        (rc = expect_len(r, 16)))
        return rc;
    q->disk = get32(r->body);
    q->first = get64(r->body + 4);
    q->nblocks = get32(r->body + 12);
    if (q->disk >= INCMIG_MAX_DISKS) {
        ERR("PULL_REQ record: disk index %" PRIu32 " out of range", q->disk);
        return INCMIG_EPROTO;
    }
    if (q->nblocks == 0 || q->nblocks > INCMIG_BLOCKS_MAX / INCMIG_BS_MIN) {
        ERR("PULL_REQ record for disk %" PRIu32 ": %" PRIu32 " blocks, must "
            "be 1 to %u", q->disk, q->nblocks,
            (unsigned)(INCMIG_BLOCKS_MAX / INCMIG_BS_MIN));
        return INCMIG_EPROTO;
    }
    if (q->first > MAX_BLOCKS_ANY - q->nblocks) {
        ERR("PULL_REQ record for disk %" PRIu32 ": blocks %" PRIu64 "+%"
            PRIu32 " lie beyond the largest possible disk", q->disk,
            q->first, q->nblocks);
        return INCMIG_EPROTO;
    }
    return 0;
}

/* ERROR: s32 code, u16 msg_len, msg */
int incmig__enc_error(const struct incmig__error_rec *e, uint8_t *buf)
{
    int n;

    if (e->code >= 0)
        return INCMIG_EINVAL;
    put32(buf, (uint32_t)e->code);
    n = enc_str(buf + 4, e->msg, INCMIG_MSG_MAX, "ERROR message");
    return n < 0 ? n : 4 + n;
}

int incmig__dec_error(const struct incmig__rec *r, struct incmig__error_rec *e)
{
    int rc;

    if ((rc = expect_type(r, INCMIG_REC_ERROR)) ||
        (rc = expect_min_len(r, 6)))
        return rc;
    e->code = (int32_t)get32(r->body);
    if (e->code >= 0) {
        ERR("ERROR record: code %" PRId32 " is not negative", e->code);
        return INCMIG_EPROTO;
    }
    return dec_str(r, 4, e->msg, INCMIG_MSG_MAX, "ERROR message");
}

int incmig__dec_empty(const struct incmig__rec *r)
{
    return expect_len(r, 0);
}

int incmig__dec_resume(const struct incmig__rec *r, uint8_t mig_id[16])
{
    int rc;

    if ((rc = expect_type(r, INCMIG_REC_RESUME)) || (rc = expect_len(r, 16)))
        return rc;
    memcpy(mig_id, r->body, 16);
    return 0;
}

int incmig__enc_flow(uint64_t acted, uint8_t *buf)
{
    put64(buf, acted);
    return 8;
}

int incmig__dec_flow(const struct incmig__rec *r, uint64_t *acted_r)
{
    int rc;

    if ((rc = expect_type(r, INCMIG_REC_FLOW)) || (rc = expect_len(r, 8)))
        return rc;
    *acted_r = get64(r->body);
    return 0;
}

/* BASE: u32 index, u8 kind, u8[3] reserved, then
 *   REPORT: u32 flags, u8[16] gen, u64 nbits, bitmap encoding
 *   SUMS:   u64 first, u32 count, 16 * count octets */
int incmig__enc_base_hdr(const struct incmig__base_rec *b, uint8_t *buf)
{
    if (b->index >= INCMIG_MAX_DISKS)
        return INCMIG_EINVAL;
    put32(buf, b->index);
    buf[4] = b->kind;
    buf[5] = buf[6] = buf[7] = 0;
    if (b->kind == INCMIG_BASE_REPORT) {
        put32(buf + 8, b->flags);
        memcpy(buf + 12, b->gen, 16);
        put64(buf + 28, b->nbits);
        return INCMIG_BASE_REPORT_HDR;
    }
    if (b->kind != INCMIG_BASE_SUMS || b->count < 1 ||
        b->count > INCMIG_SUMS_MAX)
        return INCMIG_EINVAL;
    put64(buf + 8, b->first);
    put32(buf + 16, b->count);
    return INCMIG_BASE_SUMS_HDR;
}

int incmig__dec_base(const struct incmig__rec *r, struct incmig__base_rec *b)
{
    const uint8_t *p = r->body;
    int rc;

    memset(b, 0, sizeof *b);
    if ((rc = expect_type(r, INCMIG_REC_BASE)) || (rc = expect_min_len(r, 8)))
        return rc;
    b->index = get32(p);
    b->kind = p[4];
    if (b->index >= INCMIG_MAX_DISKS || p[5] || p[6] || p[7]) {
        ERR("BASE record: disk index %" PRIu32 " out of range or reserved "
            "octets set", b->index);
        return INCMIG_EPROTO;
    }
    if (b->kind == INCMIG_BASE_REPORT) {
        if ((rc = expect_min_len(r, INCMIG_BASE_REPORT_HDR)))
            return rc;
        b->flags = get32(p + 8);
        memcpy(b->gen, p + 12, 16);
        b->nbits = get64(p + 28);
        b->data = p + INCMIG_BASE_REPORT_HDR;
        b->len = r->len - INCMIG_BASE_REPORT_HDR;
        bool have = b->flags & INCMIG_BASE_HAVE;
        bool bm = b->flags & INCMIG_BASE_BITMAP;
        bool gen0 = true;
        for (int i = 0; i < 16; i++)
            gen0 &= b->gen[i] == 0;
        if (b->flags & ~(INCMIG_BASE_HAVE | INCMIG_BASE_BITMAP) ||
            (bm && !have) || (!have && !gen0) || (have && gen0) ||
            (bm ? b->nbits < 1 || b->nbits > INCMIG_DISK_MAX / INCMIG_BS_MIN ||
                      b->len < 1
                : b->nbits || b->len)) {
            ERR("BASE record for disk %" PRIu32 ": flags %#" PRIx32 ", %"
                PRIu64 " bits and %" PRIu32 " octets of bitmap do not agree",
                b->index, b->flags, b->nbits, b->len);
            return INCMIG_EPROTO;
        }
        return 0;
    }
    if (b->kind != INCMIG_BASE_SUMS) {
        ERR("BASE record for disk %" PRIu32 ": unknown kind %u", b->index,
            b->kind);
        return INCMIG_EPROTO;
    }
    if ((rc = expect_min_len(r, INCMIG_BASE_SUMS_HDR)))
        return rc;
    b->first = get64(p + 8);
    b->count = get32(p + 16);
    b->data = p + INCMIG_BASE_SUMS_HDR;
    b->len = r->len - INCMIG_BASE_SUMS_HDR;
    if (b->count < 1 || b->count > INCMIG_SUMS_MAX ||
        b->first > INCMIG_DISK_MAX / INCMIG_BS_MIN - b->count) {
        ERR("BASE(SUMS) record for disk %" PRIu32 ": %" PRIu32 " sums from "
            "block %" PRIu64 " out of range", b->index, b->count, b->first);
        return INCMIG_EPROTO;
    }
    return expect_len(r, INCMIG_BASE_SUMS_HDR + 16 * b->count);
}

/* DECIDE: u32 index, u8 mode, u8[3] reserved, u16 reason_len, reason */
int incmig__enc_decide(const struct incmig__decide *x, uint8_t *buf)
{
    if (x->index >= INCMIG_MAX_DISKS || x->mode > INCMIG_MODE_CHECKSUM)
        return INCMIG_EINVAL;
    put32(buf, x->index);
    buf[4] = x->mode;
    buf[5] = buf[6] = buf[7] = 0;
    int n = enc_str(buf + 8, x->reason, INCMIG_MSG_MAX, "decision reason");
    return n < 0 ? n : 8 + n;
}

int incmig__dec_decide(const struct incmig__rec *r, struct incmig__decide *x)
{
    int rc;

    if ((rc = expect_type(r, INCMIG_REC_DECIDE)) || (rc = expect_min_len(r, 10)))
        return rc;
    x->index = get32(r->body);
    x->mode = r->body[4];
    if (x->index >= INCMIG_MAX_DISKS || x->mode > INCMIG_MODE_CHECKSUM ||
        r->body[5] || r->body[6] || r->body[7]) {
        ERR("DECIDE record: disk %" PRIu32 ", mode %u, or reserved octets "
            "out of range", x->index, x->mode);
        return INCMIG_EPROTO;
    }
    return dec_str(r, 8, x->reason, INCMIG_MSG_MAX, "decision reason");
}

const char *incmig__mode_name(int mode)
{
    return mode == INCMIG_MODE_UNION ? "union"
           : mode == INCMIG_MODE_CHECKSUM ? "checksum" : "full";
}
