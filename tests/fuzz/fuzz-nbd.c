/* fuzz-nbd.c: libFuzzer harness for the NBD server's handshake and
 * request parser (libxl-ext/nbd.c).
 *
 * Plays a hostile client: the input is everything a client sends on one
 * connection, 4 bytes of client flags, then options (16-byte header and
 * payload), then, once an option has entered transmission, requests
 * (28-byte header, and a WRITE's payload).  The harness reads it as the
 * server's reader does, through the same functions, which do no I/O and
 * start no threads (incmig__nbd_client_flags, _opt_header, _option,
 * _request): it is fast and deterministic.  Each input is played against
 * four exports:
 *   mem     66536 bytes, every op; accepted requests are carried out on a
 *           buffer of exactly that size, so ASan sees any out-of-range one
 *   ro      1 MiB, read only, but with flush/trim/zero callbacks set
 *   huge    INT64_MAX bytes (the largest incmig__nbd_new takes), write and
 *           zero, no flush (so no FUA), no trim
 *   empty   0 bytes, read only
 * and once more against mem as a TCP export with keys, where STARTTLS
 * is required first (check_tls_option).
 * The op callbacks abort: the parsers must never call them.
 *
 * Besides "no crash, no leak, no UB", it checks:
 *   - an option header is refused exactly when its magic is wrong or its
 *     payload exceeds INCMIG_NBD_OPT_MAX (before the payload is read); the
 *     option parser reads no byte past the payload (it sits at the end of
 *     its buffer) and writes no byte past INCMIG_NBD_REPLY_MAX;
 *   - every option reply is well formed: magic, option echoed, a known
 *     type, lengths that add up, exactly one final ACK or error, last; an
 *     INFO reply describes this export (size, consistent flags, sane block
 *     sizes); only EXPORT_NAME or an ACKed GO enters transmission, only
 *     ABORT closes; EXPORT_NAME sends 10 or 134 bytes as negotiated;
 *   - every request gets the verdict an independent model of proto.md
 *     gives it from what the handshake advertised: QUEUE exactly when the
 *     command was advertised, its flags are allowed and its range is
 *     inside the export (READ/WRITE at most INCMIG_NBD_DATA_MAX); a
 *     queued command has its callback; DISC, a bad magic and a WRITE over
 *     INCMIG_NBD_DATA_MAX close the connection with no payload to read;
 *     any other payload is the WRITE's count and within that bound.
 *
 * Build and run: `make -C tests fuzz`, or by hand
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. -Ilibxl-ext \
 *     tests/fuzz/fuzz-nbd.c libxl-ext/{nbd,log}.c -lpthread
 *   ./a.out tests/fuzz/corpus/nbd
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "incmig-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* doc/proto.md, restated here rather than taken from nbd.c. */
#define IHAVEOPT UINT64_C(0x49484156454f5054)
#define REPLY_MAGIC UINT64_C(0x0003e889045565a9)
#define REQUEST_MAGIC 0x25609513u
enum { OPT_EXPORT_NAME = 1, OPT_ABORT = 2, OPT_LIST = 3, OPT_STARTTLS = 5,
       OPT_INFO = 6, OPT_GO = 7 };
enum { REP_ACK = 1, REP_SERVER = 2, REP_INFO = 3 };
#define REP_ERR_UNSUP 0x80000001u
#define REP_ERR_TLS_REQD 0x80000005u
#define REP_ERR_INVALID 0x80000003u
enum { INFO_EXPORT = 0, INFO_BLOCK_SIZE = 3 };
enum { TF_HAS_FLAGS = 1 << 0, TF_READ_ONLY = 1 << 1, TF_SEND_FLUSH = 1 << 2,
       TF_SEND_FUA = 1 << 3, TF_SEND_TRIM = 1 << 5,
       TF_SEND_WRITE_ZEROES = 1 << 6, TF_CAN_MULTI_CONN = 1 << 8 };
enum { CMD_READ = 0, CMD_WRITE = 1, CMD_DISC = 2, CMD_FLUSH = 3,
       CMD_TRIM = 4, CMD_WRITE_ZEROES = 6 };
enum { CMD_FLAG_FUA = 1 << 0, CMD_FLAG_NO_HOLE = 1 << 1 };
#define NBD_EPERM 1u
#define NBD_EINVAL 22u

#define MEM_SIZE 66536u

/* nbd.c's listeners, peer checks and TLS live in transport.c and tls.c;
 * the harness never listens nor starts TLS, so it does not link them. */
int incmig__unix_listen(const char *path, int *fd_r) { abort(); }
int incmig__tcp_listen(const char *hostport, int *fd_r) { abort(); }
bool incmig__peer_allowed(int fd, const char *what) { abort(); }
bool incmig__tls_on(void) { abort(); }
int incmig__tls_wrap(int fd, bool server, const char *host, const char *peer,
                     double timeout_s, int *fd_r) { abort(); }

static int cb_pread(void *o, void *b, uint32_t n, uint64_t off) { abort(); }
static int cb_pwrite(void *o, const void *b, uint32_t n, uint64_t off,
                     bool fua) { abort(); }
static int cb_flush(void *o) { abort(); }
static int cb_trim(void *o, uint32_t n, uint64_t off, bool fua) { abort(); }
static int cb_zero(void *o, uint32_t n, uint64_t off, bool may_trim,
                   bool fua) { abort(); }

static const struct incmig__nbd_ops ops_all = {
    .pread = cb_pread, .pwrite = cb_pwrite, .flush = cb_flush,
    .trim = cb_trim, .zero = cb_zero };
static const struct incmig__nbd_ops ops_ro_extra = {
    .pread = cb_pread, .flush = cb_flush, .trim = cb_trim, .zero = cb_zero };
static const struct incmig__nbd_ops ops_nofua = {
    .pread = cb_pread, .pwrite = cb_pwrite, .zero = cb_zero };
static const struct incmig__nbd_ops ops_ro = { .pread = cb_pread };

static const struct incmig__nbd_export exports[] = {
    { "fuzz:mem", MEM_SIZE, &ops_all },
    { "fuzz:ro", UINT64_C(1) << 20, &ops_ro_extra },
    { "fuzz:huge", INT64_MAX, &ops_nofua },
    { "fuzz:empty", 0, &ops_ro },
};

static uint8_t *opt_buf;        /* INCMIG_NBD_OPT_MAX, payload at its end */
static uint8_t *reply;          /* exactly INCMIG_NBD_REPLY_MAX */
static uint8_t *mem, *scratch;  /* the mem export, and a READ's data */

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)get16(p) << 16 | get16(p + 2);
}
static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) << 32 | get32(p + 4);
}
static bool pow2(uint32_t x) { return x && !(x & (x - 1)); }

/* What the handshake told the client. */
struct advert {
    bool have;
    uint64_t size;
    uint16_t flags;
};

/* Transmission flags must describe the export as it is, and never offer a
 * command whose callback is missing (a worker would call NULL). */
static void check_tflags(const struct incmig__nbd_export *e, uint16_t f)
{
    const struct incmig__nbd_ops *ops = e->ops;

    CHECK(f & TF_HAS_FLAGS);
    CHECK(!(f & ~(TF_HAS_FLAGS | TF_READ_ONLY | TF_SEND_FLUSH | TF_SEND_FUA |
                  TF_SEND_TRIM | TF_SEND_WRITE_ZEROES | TF_CAN_MULTI_CONN)));
    CHECK(!(f & TF_READ_ONLY) == !!ops->pwrite);
    CHECK(!(f & TF_SEND_FLUSH) || ops->flush);
    CHECK(!(f & TF_SEND_FUA) || ops->flush);
    CHECK(!(f & TF_SEND_TRIM) || (ops->trim && ops->pwrite));
    CHECK(!(f & TF_SEND_WRITE_ZEROES) || (ops->zero && ops->pwrite));
}

/* INFO/GO payload as proto.md defines it: u32 namelen, name, u16 n,
 * n * u16 info requests, nothing more. */
static bool info_go_well_formed(const uint8_t *d, uint32_t len)
{
    if (len < 6)
        return false;
    uint64_t namelen = get32(d);
    if (namelen + 6 > len)
        return false;
    return len == namelen + 6 + 2 * (uint64_t)get16(d + 4 + namelen);
}

/* Checks the replies to one option and the verdict that goes with them. */
static void check_option(const struct incmig__nbd_export *e, bool no_zeroes,
                         uint32_t opt, const uint8_t *d, uint32_t len,
                         int verdict, size_t rlen, struct advert *adv)
{
    CHECK(rlen <= INCMIG_NBD_REPLY_MAX);
    if (opt == OPT_EXPORT_NAME) {
        CHECK(verdict == INCMIG_NBD_SERVE);
        CHECK(rlen == (no_zeroes ? 10u : 134u));
        CHECK(get64(reply) == e->size);
        for (size_t i = 10; i < rlen; i++)
            CHECK(reply[i] == 0);
        check_tflags(e, get16(reply + 8));
        *adv = (struct advert){ true, get64(reply), get16(reply + 8) };
        return;
    }

    size_t off = 0;
    int nframes = 0, nexport = 0, nblock = 0;
    uint32_t last = 0;
    struct advert info = { false, 0, 0 };
    while (off < rlen) {
        CHECK(rlen - off >= 20);
        const uint8_t *h = reply + off;
        uint32_t type = get32(h + 12), flen = get32(h + 16);
        CHECK(get64(h) == REPLY_MAGIC);
        CHECK(get32(h + 8) == opt);
        CHECK(flen <= rlen - off - 20);
        CHECK(last != REP_ACK && !(last & 0x80000000u));  /* was final */
        const uint8_t *p = h + 20;
        switch (type) {
        case REP_ACK:
            CHECK(flen == 0);
            break;
        case REP_SERVER:
            CHECK(opt == OPT_LIST && flen >= 4 && get32(p) == flen - 4);
            break;
        case REP_INFO:
            CHECK(opt == OPT_INFO || opt == OPT_GO);
            CHECK(flen >= 2);
            if (get16(p) == INFO_EXPORT) {
                CHECK(flen == 12 && get64(p + 2) == e->size);
                check_tflags(e, get16(p + 10));
                info = (struct advert){ true, get64(p + 2), get16(p + 10) };
                nexport++;
            } else if (get16(p) == INFO_BLOCK_SIZE) {
                CHECK(flen == 14);
                uint32_t mn = get32(p + 2), pref = get32(p + 6),
                         mx = get32(p + 10);
                CHECK(pow2(mn) && pow2(pref) && pow2(mx) && mn <= pref &&
                      pref <= mx && mx <= INCMIG_NBD_DATA_MAX);
                nblock++;
            } else {
                CHECK(0);   /* we send no other information */
            }
            break;
        case REP_ERR_UNSUP:
        case REP_ERR_INVALID:
            CHECK(flen == 0);
            break;
        default:
            CHECK(0);
        }
        last = type;
        nframes++;
        off += 20 + (size_t)flen;
    }
    CHECK(nframes > 0 && (last == REP_ACK || (last & 0x80000000u)));

    switch (opt) {
    case OPT_ABORT:
        CHECK(verdict == INCMIG_NBD_CLOSE && nframes == 1 && last == REP_ACK);
        break;
    case OPT_LIST:
        CHECK(verdict == INCMIG_NBD_MORE);
        CHECK(len == 0 ? nframes == 2 && last == REP_ACK
                       : nframes == 1 && last == REP_ERR_INVALID);
        break;
    case OPT_INFO:
    case OPT_GO:
        if (info_go_well_formed(d, len)) {
            CHECK(last == REP_ACK && nexport == 1 && nblock <= 1);
            CHECK(verdict == (opt == OPT_GO ? INCMIG_NBD_SERVE
                                            : INCMIG_NBD_MORE));
            if (opt == OPT_GO)
                *adv = info;
        } else {
            CHECK(verdict == INCMIG_NBD_MORE && nframes == 1 &&
                  last == REP_ERR_INVALID);
        }
        break;
    default:
        CHECK(verdict == INCMIG_NBD_MORE && nframes == 1 &&
              last == REP_ERR_UNSUP);
        break;
    }
}

/* proto.md's rules for a request, from what the handshake advertised. */
static bool model_valid(const struct advert *a, uint16_t type,
                        uint16_t flags, uint64_t off, uint32_t count)
{
    uint16_t allowed;
    bool needs, ranged = true;

    switch (type) {
    case CMD_READ:
        needs = true;
        allowed = 0;
        break;
    case CMD_WRITE:
        needs = !(a->flags & TF_READ_ONLY);
        allowed = CMD_FLAG_FUA;
        break;
    case CMD_FLUSH:
        needs = a->flags & TF_SEND_FLUSH;
        allowed = 0;
        ranged = false;
        break;
    case CMD_TRIM:
        needs = (a->flags & TF_SEND_TRIM) && !(a->flags & TF_READ_ONLY);
        allowed = CMD_FLAG_FUA;
        break;
    case CMD_WRITE_ZEROES:
        needs = (a->flags & TF_SEND_WRITE_ZEROES) &&
                !(a->flags & TF_READ_ONLY);
        allowed = CMD_FLAG_FUA | CMD_FLAG_NO_HOLE;
        break;
    default:
        return false;
    }
    if (!needs || (flags & ~allowed))
        return false;
    if ((flags & CMD_FLAG_FUA) && !(a->flags & TF_SEND_FUA))
        return false;
    if (!ranged)
        return off == 0 && count == 0;
    if ((type == CMD_READ || type == CMD_WRITE) &&
        count > INCMIG_NBD_DATA_MAX)
        return false;
    return count > 0 && off <= a->size && count <= a->size - off;
}

/* Checks one request's verdict; carries out an accepted one on the mem
 * export.  payload: the bytes after the header in the input (at least
 * r->payload of them when the caller goes on). */
static void check_request(const struct incmig__nbd_export *e,
                          const struct advert *adv, const uint8_t *h,
                          int verdict, const struct incmig__nbd_req *r,
                          const uint8_t *payload, size_t avail)
{
    const struct incmig__nbd_ops *ops = e->ops;
    bool magic = get32(h) == REQUEST_MAGIC;

    if (magic) {
        CHECK(r->flags == get16(h + 4) && r->type == get16(h + 6) &&
              r->cookie == get64(h + 8) && r->offset == get64(h + 16) &&
              r->count == get32(h + 24));
    }
    if (!magic || r->type == CMD_DISC ||
        (r->type == CMD_WRITE && r->count > INCMIG_NBD_DATA_MAX)) {
        CHECK(verdict == INCMIG_NBD_CLOSE && r->payload == 0);
        return;
    }
    CHECK(verdict == INCMIG_NBD_QUEUE || verdict == INCMIG_NBD_REJECT);
    CHECK(r->payload == (r->type == CMD_WRITE ? r->count : 0));
    CHECK(r->payload <= INCMIG_NBD_DATA_MAX);   /* bounded before reading */

    bool valid = model_valid(adv, r->type, r->flags, r->offset, r->count);
    if (verdict == INCMIG_NBD_REJECT) {
        CHECK(!valid);
        CHECK(r->error == NBD_EINVAL ||
              (r->error == NBD_EPERM && (adv->flags & TF_READ_ONLY) &&
               (r->type == CMD_WRITE || r->type == CMD_TRIM ||
                r->type == CMD_WRITE_ZEROES)));
        return;
    }
    CHECK(valid && r->error == 0);
    switch (r->type) {
    case CMD_READ: CHECK(ops->pread); break;
    case CMD_WRITE: CHECK(ops->pwrite); break;
    case CMD_FLUSH: CHECK(ops->flush); break;
    case CMD_TRIM: CHECK(ops->trim); break;
    case CMD_WRITE_ZEROES: CHECK(ops->zero); break;
    default: CHECK(0);
    }
    if (e->size != MEM_SIZE || ops != &ops_all)
        return;
    switch (r->type) {
    case CMD_READ:
        memcpy(scratch, mem + r->offset, r->count);
        break;
    case CMD_WRITE:
        if (avail >= r->payload)
            memcpy(mem + r->offset, payload, r->payload);
        break;
    case CMD_TRIM:
    case CMD_WRITE_ZEROES:
        memset(mem + r->offset, 0, r->count);
        break;
    }
}

/* STARTTLS as NBD's proto.md wants it, for an export with TLS (keys):
 * until STARTTLS (empty, ACKed) succeeds only ABORT is served, other
 * options get ERR_TLS_REQD, EXPORT_NAME closes; once TLS is on, a second
 * STARTTLS is invalid.  Without keys STARTTLS is unsupported (check_option).
 * Returns true when it checked the option (it was TLS's to answer). */
static bool check_tls_option(const struct incmig__nbd_export *e,
                             uint32_t opt, uint32_t len, int verdict,
                             size_t rlen)
{
    uint32_t type = rlen >= 20 ? get32(reply + 12) : 0;

    if (e->tls == INCMIG_NBD_TLS_NONE || opt == OPT_ABORT ||
        (e->tls == INCMIG_NBD_TLS_ACTIVE && opt != OPT_STARTTLS))
        return false;
    if (opt == OPT_EXPORT_NAME) {
        CHECK(verdict == INCMIG_NBD_CLOSE && rlen == 0);
        return true;
    }
    CHECK(rlen == 20 && get64(reply) == REPLY_MAGIC &&
          get32(reply + 8) == opt && get32(reply + 16) == 0);
    if (opt == OPT_STARTTLS && e->tls == INCMIG_NBD_TLS_REQUIRED && !len)
        CHECK(verdict == INCMIG_NBD_STARTTLS && type == REP_ACK);
    else if (opt == OPT_STARTTLS)
        CHECK(verdict == INCMIG_NBD_MORE && type == REP_ERR_INVALID);
    else
        CHECK(verdict == INCMIG_NBD_MORE && type == REP_ERR_TLS_REQD);
    return true;
}

/* One connection's worth of input against export e. */
static void run(const struct incmig__nbd_export *e, const uint8_t *data,
                size_t size)
{
    size_t pos = 0;
    bool no_zeroes;
    struct advert adv = { false, 0, 0 };
    struct incmig__nbd_export ex = *e;

    if (size < 4)
        return;
    uint32_t cflags = get32(data);
    pos = 4;
    int rc = incmig__nbd_client_flags(e, cflags, &no_zeroes);
    CHECK((rc == 0) == ((cflags & 1) && !(cflags & ~3u)));
    if (rc < 0)
        return;
    CHECK(no_zeroes == !!(cflags & 2));

    for (;;) {
        uint32_t opt, len;
        size_t rlen;

        if (size - pos < 16)
            return;
        const uint8_t *h = data + pos;
        pos += 16;
        rc = incmig__nbd_opt_header(e, h, &opt, &len);
        CHECK((rc == 0) == (get64(h) == IHAVEOPT &&
                            get32(h + 12) <= INCMIG_NBD_OPT_MAX));
        if (rc < 0)
            return;
        CHECK(opt == get32(h + 8) && len == get32(h + 12));
        if (size - pos < len)
            return;             /* EOF in the payload */
        uint8_t *d = opt_buf + INCMIG_NBD_OPT_MAX - len;
        memcpy(d, data + pos, len);
        pos += len;
        int v = incmig__nbd_option(&ex, no_zeroes, opt, d, len, reply,
                                   &rlen);
        if (check_tls_option(&ex, opt, len, v, rlen)) {
            if (v == INCMIG_NBD_STARTTLS)
                ex.tls = INCMIG_NBD_TLS_ACTIVE;   /* the handshake worked */
            if (v == INCMIG_NBD_CLOSE)
                return;
            continue;
        }
        check_option(&ex, no_zeroes, opt, d, len, v, rlen, &adv);
        if (v == INCMIG_NBD_CLOSE)
            return;
        if (v == INCMIG_NBD_SERVE)
            break;
        CHECK(v == INCMIG_NBD_MORE);
    }
    CHECK(adv.have && adv.size == e->size);

    while (size - pos >= 28) {
        struct incmig__nbd_req r;
        const uint8_t *h = data + pos;
        pos += 28;
        int v = incmig__nbd_request(e, h, &r);
        check_request(e, &adv, h, v, &r, data + pos, size - pos);
        if (v == INCMIG_NBD_CLOSE || size - pos < r.payload)
            return;
        pos += r.payload;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!opt_buf) {
        incmig__verbosity = -1;     /* silence error logs */
        opt_buf = malloc(INCMIG_NBD_OPT_MAX);
        reply = malloc(INCMIG_NBD_REPLY_MAX);
        mem = calloc(1, MEM_SIZE);
        scratch = malloc(MEM_SIZE);
        CHECK(opt_buf && reply && mem && scratch);
    }
    for (size_t i = 0; i < sizeof exports / sizeof exports[0]; i++)
        run(&exports[i], data, size);
    struct incmig__nbd_export tls = exports[0];    /* mem, over TCP + keys */
    tls.tls = INCMIG_NBD_TLS_REQUIRED;
    run(&tls, data, size);
    return 0;
}
