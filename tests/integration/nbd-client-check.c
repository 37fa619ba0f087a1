/* nbd-client-check: NBD client checks against nbd-test-server (nbd.c).
 *
 *   nbd-client-check basic URI SIZE   libnbd: handshake, info, list, I/O,
 *                                     many requests in flight, errors
 *   nbd-client-check raw SOCKET       hand-made bytes on a unix socket:
 *                                     the error paths libnbd never takes
 *   nbd-client-check drain URI FILE   writes with many in flight until the
 *                                     server quiesces; then every write it
 *                                     acknowledged must be in FILE, and
 *                                     readable again after the restart
 *   nbd-client-check held SOCKET PID FILE start|quiesce
 *                                     against a server staged with --held:
 *                                     the handshake completes, 8 writes
 *                                     get no reply and change nothing in
 *                                     300 ms; then SIGUSR2 (start): all 8
 *                                     answered and in FILE; or SIGUSR1
 *                                     (quiesce): EOF, no reply, FILE as
 *                                     it was
 *   nbd-client-check quiesce SOCKET PID FILE
 *                                     40 slow writes sent at once, then
 *                                     SIGUSR1 to the server (quiesce): all
 *                                     40 must be answered before EOF
 *
 * Each check prints what it found and the program exits 1 on the first
 * mismatch.  (nbdsh would do, but needs python3-libnbd; this needs only
 * libnbd, which configure requires.)
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <libnbd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "FAIL: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (libnbd: %s)\n", nbd_get_error() ? nbd_get_error() : "-");
    exit(1);
}

#define CHECK(cond, ...) do { if (!(cond)) die(__VA_ARGS__); } while (0)

static void fill(uint8_t *b, size_t len, uint64_t seed)
{
    for (size_t i = 0; i < len; i++)
        b[i] = (uint8_t)((seed * 131 + i * 7 + (i >> 9)) ^ (seed >> 3));
}

static bool all_zero(const uint8_t *b, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (b[i])
            return false;
    return true;
}

/* ---- basic (libnbd) ---- */

static int list_cb(void *opaque, const char *name, const char *desc)
{
    int *n = opaque;
    if (strcmp(name, "") == 0)
        (*n)++;
    else
        (*n) += 100;   /* we export only "" */
    return 0;
}

static int aio_done(void *opaque, int *error)
{
    int *failed = opaque;
    if (*error)
        (*failed)++;
    return 1;   /* retire the command */
}

static struct nbd_handle *open_go(const char *uri)
{
    struct nbd_handle *h = nbd_create();
    CHECK(h, "nbd_create");
    CHECK(nbd_connect_uri(h, uri) == 0, "connect %s", uri);
    return h;
}

static int check_basic(const char *uri, int64_t size)
{
    struct nbd_handle *h = nbd_create(), *h2;
    const size_t M = 1 << 20;
    uint8_t *a = malloc(34 * M), *b = malloc(34 * M);
    int n = 0;

    CHECK(h && a && b, "allocation");
    /* Option phase: LIST, INFO, then GO. */
    CHECK(nbd_set_opt_mode(h, true) == 0, "set_opt_mode");
    CHECK(nbd_connect_uri(h, uri) == 0, "connect %s", uri);
    CHECK(nbd_get_structured_replies_negotiated(h) == 0,
          "server must refuse structured replies");
    CHECK(nbd_opt_list(h, (nbd_list_callback){ .callback = list_cb,
                                               .user_data = &n }) == 1 &&
          n == 1, "NBD_OPT_LIST: expected one export named \"\", got %d", n);
    CHECK(nbd_opt_info(h) == 0, "NBD_OPT_INFO");
    CHECK(nbd_get_size(h) == size, "size after INFO: %" PRId64 " != %" PRId64,
          nbd_get_size(h), size);
    CHECK(nbd_opt_go(h) == 0, "NBD_OPT_GO");
    CHECK(nbd_get_size(h) == size, "size");
    CHECK(nbd_is_read_only(h) == 0, "read only");
    CHECK(nbd_can_flush(h) == 1 && nbd_can_fua(h) == 1 && nbd_can_trim(h) == 1 &&
          nbd_can_zero(h) == 1 && nbd_can_multi_conn(h) == 1,
          "export flags: flush %d fua %d trim %d zero %d multi_conn %d",
          nbd_can_flush(h), nbd_can_fua(h), nbd_can_trim(h), nbd_can_zero(h),
          nbd_can_multi_conn(h));
    CHECK(nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM) == 1 &&
          nbd_get_block_size(h, LIBNBD_SIZE_PREFERRED) == 4096 &&
          nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM) == 32 << 20,
          "block sizes %" PRId64 "/%" PRId64 "/%" PRId64,
          nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM),
          nbd_get_block_size(h, LIBNBD_SIZE_PREFERRED),
          nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM));
    printf("ok handshake: list, info, go, flags, block sizes\n");

    /* Write, read back; unaligned too. */
    fill(a, M, 1);
    CHECK(nbd_pwrite(h, a, M, 0, 0) == 0, "pwrite 1M at 0");
    CHECK(nbd_pread(h, b, M, 0, 0) == 0 && !memcmp(a, b, M), "read back 1M");
    fill(a, 1000, 2);
    CHECK(nbd_pwrite(h, a, 1000, 4097, 0) == 0, "unaligned pwrite");
    CHECK(nbd_pread(h, b, 1000, 4097, 0) == 0 && !memcmp(a, b, 1000),
          "unaligned read back");
    CHECK(nbd_flush(h, 0) == 0, "flush");
    fill(a, M, 3);
    CHECK(nbd_pwrite(h, a, M, M, LIBNBD_CMD_FLAG_FUA) == 0, "FUA pwrite");
    CHECK(nbd_pread(h, b, M, M, 0) == 0 && !memcmp(a, b, M), "FUA read back");
    /* A full 32 MiB request, the advertised maximum. */
    fill(a, 32 * M, 4);
    CHECK(nbd_pwrite(h, a, 32 * M, size - 32 * (int64_t)M, 0) == 0,
          "32M pwrite at the end");
    CHECK(nbd_pread(h, b, 32 * M, size - 32 * (int64_t)M, 0) == 0 &&
          !memcmp(a, b, 32 * M), "32M read back");
    printf("ok write/read/flush/fua\n");

    /* The test server punches holes for trim and zero: zeroes read back. */
    CHECK(nbd_trim(h, 65536, 0, 0) == 0, "trim");
    CHECK(nbd_trim(h, 65536, 65536, LIBNBD_CMD_FLAG_FUA) == 0, "FUA trim");
    CHECK(nbd_pread(h, b, 131072, 0, 0) == 0 && all_zero(b, 131072),
          "trimmed range does not read as zeroes");
    CHECK(nbd_zero(h, 65536, 200000, 0) == 0, "zero");
    CHECK(nbd_zero(h, 65536, 300000, LIBNBD_CMD_FLAG_NO_HOLE |
                   LIBNBD_CMD_FLAG_FUA) == 0, "zero NO_HOLE FUA");
    CHECK(nbd_pread(h, b, 65536, 200000, 0) == 0 && all_zero(b, 65536) &&
          nbd_pread(h, b, 65536, 300000, 0) == 0 && all_zero(b, 65536),
          "zeroed ranges do not read as zeroes");
    CHECK(nbd_pread(h, b, 4097, 0, 0) == 0 && all_zero(b, 4097) &&
          nbd_pread(h, b + 4097, 1000, 4097 + 65536 * 2, 0) == 0,
          "reads around trimmed range");
    printf("ok trim/zero\n");

    /* Many requests in flight: 256 writes of 64K, then reads of them. */
    {
        enum { N = 256, L = 65536 };
        int failed = 0;
        uint8_t *w = malloc((size_t)N * L), *r = calloc(N, L);
        CHECK(w && r, "allocation");
        fill(w, (size_t)N * L, 5);
        for (int i = 0; i < N; i++)
            CHECK(nbd_aio_pwrite(h, w + (size_t)i * L, L, 2 * M + (uint64_t)i * L,
                                 (nbd_completion_callback){ .callback = aio_done,
                                                            .user_data = &failed },
                                 0) > 0, "aio_pwrite %d", i);
        int64_t peak = nbd_aio_in_flight(h);
        while (nbd_aio_in_flight(h) > 0)
            CHECK(nbd_poll(h, -1) >= 0, "poll (writes)");
        for (int i = 0; i < N; i++)
            CHECK(nbd_aio_pread(h, r + (size_t)i * L, L, 2 * M + (uint64_t)i * L,
                                (nbd_completion_callback){ .callback = aio_done,
                                                           .user_data = &failed },
                                0) > 0, "aio_pread %d", i);
        while (nbd_aio_in_flight(h) > 0)
            CHECK(nbd_poll(h, -1) >= 0, "poll (reads)");
        CHECK(failed == 0, "%d aio commands failed", failed);
        CHECK(!memcmp(w, r, (size_t)N * L), "aio read back differs");
        printf("ok %d writes + %d reads in flight (peak queued %" PRId64 ")\n",
               N, N, peak);
        free(w);
        free(r);
    }

    /* Errors the server must answer with EINVAL, connection staying up. */
    CHECK(nbd_set_strict_mode(h, 0) == 0, "strict mode off");
    CHECK(nbd_pread(h, b, 4096, size - 512, 0) == -1 &&
          nbd_get_errno() == EINVAL, "read across the end: errno %d",
          nbd_get_errno());
    CHECK(nbd_pread(h, b, 1, size, 0) == -1 && nbd_get_errno() == EINVAL,
          "read at the end: errno %d", nbd_get_errno());
    CHECK(nbd_pwrite(h, a, 8192, size - 4096, 0) == -1 &&
          nbd_get_errno() == EINVAL, "write across the end: errno %d",
          nbd_get_errno());
    CHECK(nbd_zero(h, 8192, size - 4096, 0) == -1 && nbd_get_errno() == EINVAL,
          "zero across the end");
    CHECK(nbd_pread(h, b, 33 * M, 0, 0) == -1 && nbd_get_errno() == EINVAL,
          "33M read (over the maximum): errno %d", nbd_get_errno());
    fill(a, 4096, 6);
    CHECK(nbd_pwrite(h, a, 4096, 8192, 0) == 0 &&
          nbd_pread(h, b, 4096, 8192, 0) == 0 && !memcmp(a, b, 4096),
          "connection unusable after the rejected requests");
    printf("ok out-of-range and oversize requests get EINVAL; connection "
           "still usable\n");

    /* A second client at once sees the first's flushed writes. */
    h2 = open_go(uri);
    CHECK(nbd_pread(h2, b, 4096, 8192, 0) == 0 && !memcmp(a, b, 4096),
          "second connection reads different data");
    CHECK(nbd_shutdown(h2, 0) == 0, "shutdown second");
    nbd_close(h2);
    CHECK(nbd_shutdown(h, 0) == 0, "shutdown (NBD_CMD_DISC)");
    nbd_close(h);
    printf("ok two connections; disconnect\n");
    free(a);
    free(b);
    return 0;
}

/* ---- raw protocol ---- */

static int raw_connect(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    CHECK(fd >= 0 && strlen(path) < sizeof sa.sun_path, "socket");
    strcpy(sa.sun_path, path);
    CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "connect %s",
          path);
    struct timeval tv = { 10, 0 };   /* a hung server fails the test */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static void wr(int fd, const void *b, size_t n)
{
    CHECK(send(fd, b, n, MSG_NOSIGNAL) == (ssize_t)n, "send %zu bytes", n);
}

/* Reads exactly n bytes; returns false on EOF before the first byte. */
static bool rd(int fd, void *b, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = recv(fd, (uint8_t *)b + got, n - got, 0);
        CHECK(r >= 0, "recv: %s", strerror(errno));
        if (r == 0) {
            CHECK(got == 0, "EOF in the middle of a reply");
            return false;
        }
        got += (size_t)r;
    }
    return true;
}

static void p16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xff; }
static void p32(uint8_t *p, uint32_t v) { p16(p, v >> 16); p16(p + 2, v); }
static void p64(uint8_t *p, uint64_t v) { p32(p, v >> 32); p32(p + 4, v); }
static uint32_t g32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | p[2] << 8 | p[3];
}
static uint64_t g64(const uint8_t *p)
{
    return (uint64_t)g32(p) << 32 | g32(p + 4);
}

static int raw_hello(const char *path, uint32_t cflags)
{
    uint8_t b[18], f[4];
    int fd = raw_connect(path);

    CHECK(rd(fd, b, 18), "greeting");
    CHECK(!memcmp(b, "NBDMAGICIHAVEOPT", 16) && b[16] == 0 && b[17] == 3,
          "greeting bytes");
    p32(f, cflags);
    wr(fd, f, 4);
    return fd;
}

static void send_opt(int fd, uint32_t opt, const void *data, uint32_t len)
{
    uint8_t h[16];
    memcpy(h, "IHAVEOPT", 8);
    p32(h + 8, opt);
    p32(h + 12, len);
    wr(fd, h, 16);
    if (len)
        wr(fd, data, len);
}

/* Reads one option reply, returns its type; skips its data. */
static uint32_t opt_reply(int fd, uint32_t opt)
{
    uint8_t h[20], junk[256];
    CHECK(rd(fd, h, 20), "option %u: EOF instead of a reply", opt);
    CHECK(g64(h) == UINT64_C(0x3e889045565a9) && g32(h + 8) == opt,
          "option %u: bad reply header", opt);
    uint32_t len = g32(h + 16);
    CHECK(len <= sizeof junk, "option reply too long");
    if (len)
        CHECK(rd(fd, junk, len), "option reply data");
    return g32(h + 12);
}

static void go(int fd)
{
    uint8_t d[6] = { 0 };
    send_opt(fd, 7, d, 6);
    uint32_t t;
    while ((t = opt_reply(fd, 7)) == 3)
        ;
    CHECK(t == 1, "GO: reply type 0x%x", t);
}

static void request(int fd, uint16_t flags, uint16_t type, uint64_t cookie,
                    uint64_t off, uint32_t len)
{
    uint8_t h[28];
    p32(h, 0x25609513);
    p16(h + 4, flags);
    p16(h + 6, type);
    p64(h + 8, cookie);
    p64(h + 16, off);
    p32(h + 24, len);
    wr(fd, h, 28);
}

static uint32_t reply(int fd, uint64_t cookie)
{
    uint8_t h[16];
    CHECK(rd(fd, h, 16), "EOF instead of the reply to %" PRIu64, cookie);
    CHECK(g32(h) == 0x67446698 && g64(h + 8) == cookie,
          "bad simple reply for cookie %" PRIu64, cookie);
    return g32(h + 4);
}

static void expect_eof(int fd, const char *what)
{
    uint8_t b[64];
    ssize_t r;
    while ((r = recv(fd, b, sizeof b, 0)) > 0)
        ;
    CHECK(r == 0 || errno == ECONNRESET, "%s: server kept the connection "
          "open (%s)", what, r < 0 ? strerror(errno) : "");
    close(fd);
}

static int check_raw(const char *path)
{
    static uint8_t buf[1 << 20];
    uint8_t b[134];
    int fd;

    /* Client flags: must be fixed newstyle, no unknown bits. */
    expect_eof(raw_hello(path, 0), "client flags 0");
    expect_eof(raw_hello(path, 1 | 0x100), "unknown client flag");
    printf("ok bad client flags close the connection\n");

    /* Unsupported and malformed options are refused, the session goes on. */
    fd = raw_hello(path, 1);
    send_opt(fd, 5, NULL, 0);
    CHECK(opt_reply(fd, 5) == 0x80000001u, "STARTTLS not ERR_UNSUP");
    send_opt(fd, 8, NULL, 0);
    CHECK(opt_reply(fd, 8) == 0x80000001u, "STRUCTURED_REPLY not ERR_UNSUP");
    send_opt(fd, 999, "xyz", 3);
    CHECK(opt_reply(fd, 999) == 0x80000001u, "unknown option not ERR_UNSUP");
    send_opt(fd, 3, "x", 1);
    CHECK(opt_reply(fd, 3) == 0x80000003u, "LIST with data not ERR_INVALID");
    uint8_t bad[10] = { 0, 0, 0, 200, 0, 0 };   /* name longer than option */
    send_opt(fd, 6, bad, 10);
    CHECK(opt_reply(fd, 6) == 0x80000003u, "malformed INFO not ERR_INVALID");
    send_opt(fd, 2, NULL, 0);
    CHECK(opt_reply(fd, 2) == 1, "ABORT not acknowledged");
    expect_eof(fd, "after ABORT");
    printf("ok unsupported/malformed options refused; ABORT\n");

    /* An option longer than the server's bound ends the connection. */
    fd = raw_hello(path, 1);
    uint8_t h[16];
    memcpy(h, "IHAVEOPT", 8);
    p32(h + 8, 7);
    p32(h + 12, 1u << 30);
    wr(fd, h, 16);
    expect_eof(fd, "1 GiB option");
    printf("ok oversized option closes the connection\n");

    /* EXPORT_NAME with and without NO_ZEROES. */
    fd = raw_hello(path, 1);
    send_opt(fd, 1, "anything", 8);
    CHECK(rd(fd, b, 134) && all_zero(b + 10, 124) && (b[9] & 1),
          "EXPORT_NAME reply (with 124 zeroes)");
    request(fd, 0, 0, 1, 0, 512);
    CHECK(reply(fd, 1) == 0 && rd(fd, buf, 512), "read after EXPORT_NAME");
    close(fd);
    fd = raw_hello(path, 3);
    send_opt(fd, 1, NULL, 0);
    CHECK(rd(fd, b, 10), "EXPORT_NAME reply (NO_ZEROES)");
    request(fd, 0, 0, 2, 0, 512);
    CHECK(reply(fd, 2) == 0 && rd(fd, buf, 512), "read after NO_ZEROES");
    close(fd);
    printf("ok EXPORT_NAME, with and without NO_ZEROES\n");

    /* Bad requests get EINVAL and the stream stays in step. */
    fd = raw_hello(path, 3);
    go(fd);
    request(fd, 0, 42, 10, 0, 512);
    CHECK(reply(fd, 10) == 22, "unknown command not EINVAL");
    request(fd, 0x8000, 0, 11, 0, 512);
    CHECK(reply(fd, 11) == 22, "unknown flag not EINVAL");
    request(fd, 2, 1, 12, 0, 512);               /* NO_HOLE on WRITE */
    wr(fd, buf, 512);
    CHECK(reply(fd, 12) == 22, "WRITE with NO_HOLE not EINVAL");
    request(fd, 0, 1, 13, UINT64_MAX - 100, 512); /* offset overflow */
    wr(fd, buf, 512);
    CHECK(reply(fd, 13) == 22, "WRITE at 2^64-100 not EINVAL");
    request(fd, 0, 3, 14, 4096, 0);
    CHECK(reply(fd, 14) == 22, "FLUSH with an offset not EINVAL");
    request(fd, 0, 0, 15, 0, 0);
    CHECK(reply(fd, 15) == 22, "zero-length READ not EINVAL");
    request(fd, 0, 0, 16, 0, 4096);
    CHECK(reply(fd, 16) == 0 && rd(fd, buf, 4096), "READ after bad requests");
    printf("ok bad requests get EINVAL, stream stays in step\n");
    /* A bad magic cannot be resynchronised: the server hangs up. */
    wr(fd, "garbage-garbage-garbage-garbage", 28);
    expect_eof(fd, "bad request magic");
    /* A WRITE over 32 MiB: its payload cannot be skipped safely. */
    fd = raw_hello(path, 3);
    go(fd);
    request(fd, 0, 1, 20, 0, 64u << 20);
    expect_eof(fd, "64 MiB WRITE");
    printf("ok bad magic and oversized WRITE close the connection\n");

    /* Clients vanishing: mid-payload, and with big reads unanswered. */
    fd = raw_hello(path, 3);
    go(fd);
    request(fd, 0, 1, 30, 0, 1 << 20);
    wr(fd, buf, 4096);
    close(fd);
    fd = raw_hello(path, 3);
    go(fd);
    for (int i = 0; i < 40; i++)
        request(fd, 0, 0, 40 + (uint64_t)i, 0, 1 << 20);
    close(fd);
    fd = raw_hello(path, 3);
    close(fd);
    /* The server is still there and serving. */
    fd = raw_hello(path, 3);
    go(fd);
    request(fd, 0, 0, 99, 0, 4096);
    CHECK(reply(fd, 99) == 0 && rd(fd, buf, 4096), "server after abrupt "
          "disconnects");
    request(fd, 0, 2, 100, 0, 0);                /* DISC */
    expect_eof(fd, "NBD_CMD_DISC");
    printf("ok abrupt disconnects survived; DISC\n");
    return 0;
}

/* ---- drain: acknowledged writes survive a quiesce ---- */

struct wr_ctx {
    uint8_t *acked;
    uint32_t i;
};

static int drain_cb(void *opaque, int *error)
{
    struct wr_ctx *c = opaque;
    if (*error == 0)
        c->acked[c->i] = 1;
    return 1;
}

static int check_drain(const char *uri, const char *file)
{
    enum { BS = 4096, QD = 128 };
    struct nbd_handle *h = open_go(uri);
    int64_t size = nbd_get_size(h);
    uint32_t nblocks = (uint32_t)(size / BS), next = 0, nacked = 0, bad = 0;
    uint8_t *acked = calloc(nblocks, 1), *w = malloc(BS), *r = malloc(BS);
    struct wr_ctx *ctx = calloc(nblocks, sizeof *ctx);
    FILE *f;

    CHECK(acked && w && r && ctx && nblocks > 0, "allocation");
    /* Phase 1: each block written once, QD in flight, until the server
     * ends the connection (it quiesces). */
    for (;;) {
        while (nbd_aio_is_ready(h) && nbd_aio_in_flight(h) < QD &&
               next < nblocks) {
            fill(w, BS, next + 1000);
            ctx[next] = (struct wr_ctx){ acked, next };
            if (nbd_aio_pwrite(h, w, BS, (uint64_t)next * BS,
                               (nbd_completion_callback){
                                   .callback = drain_cb,
                                   .user_data = &ctx[next] }, 0) < 0)
                break;
            next++;
        }
        if (nbd_aio_is_dead(h) || nbd_aio_is_closed(h))
            break;
        CHECK(next < nblocks, "the server never quiesced (all %u blocks "
              "written)", nblocks);
        if (nbd_poll(h, 1000) < 0)
            break;
    }
    nbd_close(h);
    for (uint32_t i = 0; i < nblocks; i++)
        nacked += acked[i];
    printf("sent %u writes, %u acknowledged before the connection ended\n",
           next, nacked);
    CHECK(nacked > 0, "no write was acknowledged");

    /* Every acknowledged write is in the file. */
    f = fopen(file, "rb");
    CHECK(f, "open %s", file);
    for (uint32_t i = 0; i < nblocks; i++) {
        if (!acked[i])
            continue;
        fill(w, BS, i + 1000);
        CHECK(fseeko(f, (off_t)i * BS, SEEK_SET) == 0 &&
              fread(r, 1, BS, f) == BS, "read %s", file);
        bad += memcmp(w, r, BS) != 0;
    }
    fclose(f);
    CHECK(bad == 0, "%u acknowledged writes are missing from %s", bad, file);
    printf("ok all %u acknowledged writes are in the file\n", nacked);

    /* Phase 2: after the restart the export serves them again. */
    for (int tries = 0;; tries++) {
        h = nbd_create();
        CHECK(h, "nbd_create");
        if (nbd_connect_uri(h, uri) == 0)
            break;
        nbd_close(h);
        CHECK(tries < 100, "cannot reconnect after the restart");
        usleep(200000);
    }
    for (uint32_t i = 0; i < nblocks; i++) {
        if (!acked[i])
            continue;
        fill(w, BS, i + 1000);
        CHECK(nbd_pread(h, r, BS, (uint64_t)i * BS, 0) == 0 &&
              !memcmp(w, r, BS), "block %u after reconnect", i);
    }
    nbd_shutdown(h, 0);
    nbd_close(h);
    printf("ok reconnected after restart, %u blocks read back\n", nacked);
    free(acked);
    free(ctx);
    free(w);
    free(r);
    return 0;
}

/* ---- quiesce: requests already read are all answered ---- */

static int check_quiesce(const char *path, pid_t server, const char *file)
{
    enum { N = 40, BS = 4096 };
    static uint8_t w[BS], r[BS];
    uint8_t seen[N] = { 0 };
    int fd = raw_hello(path, 3);
    struct timespec t0, t1;
    FILE *f;

    go(fd);
    for (int i = 0; i < N; i++) {
        fill(w, BS, (uint64_t)i + 5000);
        request(fd, 0, 1, (uint64_t)i, (uint64_t)i * BS, BS);
        wr(fd, w, BS);
    }
    /* The server reads 40 small requests in microseconds; the half second
     * makes sure all are read (and queued) before the quiesce. */
    usleep(500000);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK(kill(server, SIGUSR1) == 0, "signal the server");
    for (int i = 0; i < N; i++) {
        uint8_t h[16];
        CHECK(rd(fd, h, 16), "EOF after only %d of %d replies", i, N);
        uint64_t cookie = g64(h + 8);
        CHECK(g32(h) == 0x67446698 && cookie < N && !seen[cookie],
              "bad reply %d", i);
        CHECK(g32(h + 4) == 0, "write %" PRIu64 " failed: error %u", cookie,
              g32(h + 4));
        seen[cookie] = 1;
    }
    expect_eof(fd, "after the quiesce");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("ok %d replies then EOF, %.2f s after the quiesce began\n", N,
           (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    f = fopen(file, "rb");
    CHECK(f, "open %s", file);
    for (int i = 0; i < N; i++) {
        fill(w, BS, (uint64_t)i + 5000);
        CHECK(fread(r, 1, BS, f) == BS && !memcmp(w, r, BS),
              "write %d is not in %s", i, file);
    }
    fclose(f);
    printf("ok all %d writes are in the file\n", N);
    return 0;
}

/* ---- held: staged before serving, then started or quiesced ---- */

static int file_has(const char *file, int n, uint64_t seed0)
{
    static uint8_t w[4096], r[4096];
    FILE *f = fopen(file, "rb");
    int same = 0;

    CHECK(f, "open %s", file);
    for (int i = 0; i < n; i++) {
        fill(w, sizeof w, (uint64_t)i + seed0);
        CHECK(fread(r, 1, sizeof r, f) == sizeof r, "read %s", file);
        same += !memcmp(w, r, sizeof r);
    }
    fclose(f);
    return same;
}

static int check_held(const char *path, pid_t server, const char *file,
                      bool start)
{
    enum { N = 8, BS = 4096 };
    static uint8_t w[BS];
    struct pollfd p;
    struct timespec t0, t1;
    int fd = raw_hello(path, 3);

    go(fd);   /* the handshake completes while the server is held */
    for (int i = 0; i < N; i++) {
        fill(w, BS, (uint64_t)i + 7000);
        request(fd, 0, 1, (uint64_t)i, (uint64_t)i * BS, BS);
        wr(fd, w, BS);
    }
    p = (struct pollfd){ .fd = fd, .events = POLLIN };
    CHECK(poll(&p, 1, 300) == 0, "a held server answered before its start");
    CHECK(file_has(file, N, 7000) == 0, "a held server executed a write");
    printf("ok handshake done, %d writes held without a reply\n", N);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK(kill(server, start ? SIGUSR2 : SIGUSR1) == 0, "signal the server");
    if (!start) {
        expect_eof(fd, "after a quiesce of a held server");
        CHECK(file_has(file, N, 7000) == 0, "a dropped write was executed");
        printf("ok quiesce: EOF, no reply, the file unchanged\n");
        return 0;
    }
    for (int i = 0; i < N; i++) {
        uint8_t h[16];
        CHECK(rd(fd, h, 16), "EOF after %d of %d replies", i, N);
        CHECK(g32(h) == 0x67446698 && g32(h + 4) == 0 && g64(h + 8) < N,
              "bad reply %d", i);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECK(file_has(file, N, 7000) == N, "a write answered is not in %s", file);
    printf("ok start: %d replies %.1f ms after the signal\n", N,
           ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec -
            t0.tv_nsec)) / 1e6);
    close(fd);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 6 && !strcmp(argv[1], "held"))
        return check_held(argv[2], (pid_t)atoi(argv[3]), argv[4],
                          !strcmp(argv[5], "start"));
    if (argc == 4 && !strcmp(argv[1], "basic"))
        return check_basic(argv[2], strtoll(argv[3], NULL, 0));
    if (argc == 3 && !strcmp(argv[1], "raw"))
        return check_raw(argv[2]);
    if (argc == 4 && !strcmp(argv[1], "drain"))
        return check_drain(argv[2], argv[3]);
    if (argc == 5 && !strcmp(argv[1], "quiesce"))
        return check_quiesce(argv[2], (pid_t)atoi(argv[3]), argv[4]);
    fprintf(stderr, "usage: nbd-client-check basic URI SIZE | raw SOCKET | "
            "drain URI FILE | quiesce SOCKET PID FILE | held SOCKET PID "
            "FILE start|quiesce\n");
    return 2;
}
