/* fuzz-states.c: libFuzzer harness for the protocol's state machines.
 *
 * fuzz-stream feeds bytes to the parsers; this one feeds record SEQUENCES
 * to the state machines: the input is a program of records (type and
 * fields chosen by the fuzzer), each framed with a valid checksum by
 * incmig__stream_send into a memfd and read back with incmig__stream_recv
 * and the decoders, so every record reaches the state machine intact.
 * The first input byte picks the machine:
 *
 *   even  the destination's table (incmig__dst_transition, receive.c) for
 *         records from the source, with the guards receive-*.c's handlers
 *         apply (bitmap chunks of each disk contiguous and in order, READY
 *         only when every bitmap is whole, SUSPEND only after the end of
 *         the state stream, END only after COMPLETE);
 *   odd   the source's table (incmig__src_accepts, migrate.c) for records
 *         from the destination, the source moving through its states as
 *         migrate.c does (HANDSHAKE .. PULL, RECONNECT, DONE).
 *
 * Invariants (abort on violation), whatever the sequence:
 *   - GO is taken only in READY, entered only by READY from PAUSED, after
 *     SUSPEND, with every disk's stop-and-copy bitmap whole;
 *   - BLOCKS of a PULL phase and PULL_END only in PULL; nothing but ERROR
 *     after END (DONE); records only the destination sends never accepted;
 *   - the source takes DISK_ACK only in HANDSHAKE, READY only in STOPCOPY
 *     or RECONNECT, PULL_REQ / COMPLETE / REPORT only in PULL, never a
 *     record only the source sends; ERROR always.
 *
 * Build and run: `make -C tests fuzz` (FUZZ_SECONDS each).
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "incmig-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NBITS 64            /* blocks per fuzzed disk */
#define MAXREC 64           /* records per input */

static uint8_t buf[INCMIG_REC_MAX];

struct in {
    const uint8_t *p;
    size_t n;
};
static uint8_t take(struct in *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

#define CHECK(c) do { if (!(c)) abort(); } while (0)

/* Frame one record and read it back through the stream reader. */
static int roundtrip(int fd, struct incmig__stream *w, struct incmig__stream *r,
                     uint32_t type, const uint8_t *body, uint32_t len,
                     struct incmig__rec *rec)
{
    if (ftruncate(fd, 0) || lseek(fd, 0, SEEK_SET))
        abort();
    if (incmig__stream_send(w, type, body, len))
        abort();
    if (lseek(fd, 0, SEEK_SET))
        abort();
    return incmig__stream_recv(r, rec);
}

static int body_for(uint32_t type, struct in *in, int ndisks, uint32_t *len_r)
{
    uint8_t k = take(in);
    switch (type) {
    case INCMIG_REC_HELLO: {
        struct incmig__hello h = { .version = 1, .role = k & 1,
                                   .caps = take(in) & 7,
                                   .ndisks = (uint32_t)ndisks };
        memcpy(h.name, "fuzz", 5);
        *len_r = (uint32_t)incmig__enc_hello(&h, buf);
        return 0;
    }
    case INCMIG_REC_DISK: {
        struct incmig__disk_rec d = { .index = k % INCMIG_MAX_DISKS,
                                      .block_size = 4096,
                                      .size = NBITS * 4096 };
        snprintf(d.name, sizeof d.name, "xvd%c", 'a' + (k & 7));
        *len_r = (uint32_t)incmig__enc_disk(&d, buf);
        return 0;
    }
    case INCMIG_REC_DISK_ACK: {
        struct incmig__disk_ack a = { .index = k % INCMIG_MAX_DISKS };
        *len_r = (uint32_t)incmig__enc_disk_ack(&a, buf);
        return 0;
    }
    case INCMIG_REC_BLOCKS: {
        struct incmig__blocks b = { .disk = (uint32_t)(k % ndisks),
                                    .phase = take(in) & 3,
                                    .enc = INCMIG_ENC_ZERO,
                                    .first = take(in) % NBITS, .nblocks = 1 };
        *len_r = (uint32_t)incmig__enc_blocks_hdr(&b, buf);
        return 0;
    }
    case INCMIG_REC_ROUND: {
        struct incmig__round x = { .round = k };
        *len_r = (uint32_t)incmig__enc_round(&x, buf);
        return 0;
    }
    case INCMIG_REC_BITMAP: {
        struct incmig__bitmap bm;
        uint64_t first = take(in) % NBITS, nbits = 1 + take(in) % NBITS;
        if (first + nbits > NBITS)
            nbits = NBITS - first;
        incmig__bitmap_init(&bm, NBITS);
        uint8_t *enc;
        size_t elen;
        if (incmig__bitmap_encode(&bm, first, nbits, &enc, &elen))
            abort();
        struct incmig__bitmap_rec m = { .disk = (uint32_t)(k % ndisks),
                                        .phase = take(in) & 3, .first = first,
                                        .nbits = nbits };
        int h = incmig__enc_bitmap_hdr(&m, buf);
        memcpy(buf + h, enc, elen);
        *len_r = (uint32_t)(h + (int)elen);
        free(enc);
        incmig__bitmap_dispose(&bm);
        return 0;
    }
    case INCMIG_REC_PULL_REQ: {
        struct incmig__pull_req p = { .disk = (uint32_t)(k % ndisks),
                                      .first = take(in) % NBITS, .nblocks = 1 };
        *len_r = (uint32_t)incmig__enc_pull_req(&p, buf);
        return 0;
    }
    case INCMIG_REC_ERROR: {
        struct incmig__error_rec e = { .code = INCMIG_EPEER };
        memcpy(e.msg, "fuzz", 5);
        *len_r = (uint32_t)incmig__enc_error(&e, buf);
        return 0;
    }
    case INCMIG_REC_DECIDE: {
        struct incmig__decide x = { .index = (uint32_t)(k % ndisks),
                                    .mode = take(in) % 3 };
        *len_r = (uint32_t)incmig__enc_decide(&x, buf);
        return 0;
    }
    case INCMIG_REC_BASE: {
        struct incmig__base_rec b = { .index = (uint32_t)(k % ndisks) };
        *len_r = (uint32_t)incmig__enc_base_hdr(&b, buf);
        return 0;
    }
    case INCMIG_REC_RESUME:
        memset(buf, k, 16);
        *len_r = 16;
        return 0;
    case INCMIG_REC_XEN_STREAM:
        *len_r = k & 1 ? 8 : 0;   /* odd: a chunk; even: the end */
        memset(buf, k, *len_r);
        return 0;
    case INCMIG_REC_REPORT:
        memcpy(buf, "{}", 2);
        *len_r = 2;
        return 0;
    default:               /* empty bodies */
        *len_r = 0;
        return 0;
    }
}

static const uint32_t all_types[] = {
    INCMIG_REC_HELLO, INCMIG_REC_DISK, INCMIG_REC_DISK_ACK, INCMIG_REC_BLOCKS,
    INCMIG_REC_ROUND, INCMIG_REC_SUSPEND, INCMIG_REC_BITMAP, INCMIG_REC_READY,
    INCMIG_REC_GO, INCMIG_REC_PULL_REQ, INCMIG_REC_PULL_END,
    INCMIG_REC_COMPLETE, INCMIG_REC_ERROR, INCMIG_REC_RESUME, INCMIG_REC_END,
    INCMIG_REC_XEN_STREAM, INCMIG_REC_REPORT, INCMIG_REC_BASE,
    INCMIG_REC_DECIDE,
};
#define NALL (sizeof all_types / sizeof all_types[0])

static bool dst_only(uint32_t t)
{
    return t == INCMIG_REC_DISK_ACK || t == INCMIG_REC_PULL_REQ ||
           t == INCMIG_REC_COMPLETE || t == INCMIG_REC_REPORT ||
           t == INCMIG_REC_BASE;
}

static bool src_only(uint32_t t)
{
    return t == INCMIG_REC_DISK || t == INCMIG_REC_BLOCKS ||
           t == INCMIG_REC_SUSPEND || t == INCMIG_REC_GO ||
           t == INCMIG_REC_PULL_END || t == INCMIG_REC_RESUME ||
           t == INCMIG_REC_END || t == INCMIG_REC_XEN_STREAM ||
           t == INCMIG_REC_DECIDE;
}

/* The destination: table + the handlers' guards, as receive-*.c have them. */
static void run_dst(struct in *in, int fd, struct incmig__stream *w,
                    struct incmig__stream *r)
{
    int state = INCMIG_DST_HELLO, nd = 1 + take(in) % 2, ndisk = 0;
    bool cap_state = take(in) & 1, state_end = false, suspended = false;
    bool complete = false, ready_ok = false, cap_base = take(in) & 1;
    int ndecided = 0;
    uint64_t bm_next[2] = { 0, 0 };

    for (int i = 0; i < MAXREC && in->n; i++) {
        uint8_t op = take(in);
        if (op == 0xff) {            /* the link breaks */
            if (state == INCMIG_DST_PULL)
                state = INCMIG_DST_WAIT_LINK;
            else if (state != INCMIG_DST_DONE && state != INCMIG_DST_WAIT_LINK)
                return;              /* before GO: the migration fails */
            continue;
        }
        if (op == 0xfe && state == INCMIG_DST_PULL) {
            complete = true;         /* the gates emptied: COMPLETE sent */
            continue;
        }
        uint32_t type = all_types[op % NALL], len;
        struct incmig__rec rec;
        body_for(type, in, nd, &len);
        if (roundtrip(fd, w, r, type, buf, len, &rec))
            abort();                 /* valid framing must read back */
        CHECK(rec.type == type && rec.len == len);

        int next;
        if (incmig__dst_transition(state, rec.type, &next)) {
            return;                  /* refused: ERROR, migration fails */
        }
        CHECK(!dst_only(rec.type));
        CHECK(state != INCMIG_DST_DONE || rec.type == INCMIG_REC_ERROR);
        if (rec.type == INCMIG_REC_ERROR)
            return;
        /* the handlers' guards (refusals end the run) */
        bool stay = false;
        switch (rec.type) {
        case INCMIG_REC_DISK:
            if (++ndisk < nd)
                stay = true;
            break;
        case INCMIG_REC_DECIDE: {
            struct incmig__decide x;
            if (incmig__dec_decide(&rec, &x) || x.index != (uint32_t)ndecided ||
                x.mode != INCMIG_MODE_FULL)
                return;              /* no copy here: FULL only */
            CHECK(cap_base && state == INCMIG_DST_BASE);
            if (++ndecided < nd)
                stay = true;
            break;
        }
        case INCMIG_REC_XEN_STREAM:
            if (!cap_state || state_end)
                return;
            if (rec.len == 0)
                state_end = true;
            break;
        case INCMIG_REC_SUSPEND:
            if (cap_state && !state_end)
                return;
            suspended = true;
            break;
        case INCMIG_REC_BLOCKS: {
            struct incmig__blocks b;
            if (incmig__dec_blocks(&rec, 4096, &b) || b.disk >= (uint32_t)nd)
                return;
            bool pull = b.phase >= INCMIG_PHASE_PULL_DEMAND;
            if (pull != (state == INCMIG_DST_PULL) ||
                (b.phase == INCMIG_PHASE_PUSH) != (state == INCMIG_DST_RECEIVING))
                return;
            CHECK(!pull || state == INCMIG_DST_PULL);
            break;
        }
        case INCMIG_REC_BITMAP: {
            struct incmig__bitmap_rec m;
            if (incmig__dec_bitmap(&rec, &m) || m.disk >= (uint32_t)nd ||
                m.phase != INCMIG_PHASE_STOPCOPY || m.first != bm_next[m.disk])
                return;
            bm_next[m.disk] += m.nbits;
            break;
        }
        case INCMIG_REC_READY:
            for (int d = 0; d < nd; d++)
                if (bm_next[d] != NBITS)
                    return;          /* "READY before the bitmap ..." */
            ready_ok = true;
            break;
        case INCMIG_REC_GO:
            CHECK(state == INCMIG_DST_READY && ready_ok && suspended);
            for (int d = 0; d < nd; d++)
                CHECK(bm_next[d] == NBITS);
            break;
        case INCMIG_REC_PULL_END:
            CHECK(state == INCMIG_DST_PULL);
            break;
        case INCMIG_REC_END:
            if (!complete)
                return;              /* "END before COMPLETE" */
            break;
        }
        if (next == INCMIG_DST_BASE && !cap_base)
            next = INCMIG_DST_RECEIVING;    /* as dispatch() does */
        if (!stay) {
            CHECK(next != INCMIG_DST_READY || state == INCMIG_DST_PAUSED);
            CHECK(next != INCMIG_DST_PULL || state == INCMIG_DST_READY ||
                  state == INCMIG_DST_PULL || state == INCMIG_DST_RESUMING);
            state = next;
        }
    }
}

/* The source: migrate.c's states, its table for what the receiver sends. */
static void run_src(struct in *in, int fd, struct incmig__stream *w,
                    struct incmig__stream *r)
{
    int state = INCMIG_SRC_HANDSHAKE;

    for (int i = 0; i < MAXREC && in->n; i++) {
        uint8_t op = take(in);
        if (op >= 0xf8) {            /* the source moves on by itself */
            static const int order[] = {
                INCMIG_SRC_HANDSHAKE, INCMIG_SRC_PUSH, INCMIG_SRC_STATE,
                INCMIG_SRC_STOPCOPY, INCMIG_SRC_PULL, INCMIG_SRC_RECONNECT,
                INCMIG_SRC_DONE, INCMIG_SRC_FAILED,
            };
            state = order[op - 0xf8];
            continue;
        }
        uint32_t type = all_types[op % NALL], len;
        struct incmig__rec rec;
        body_for(type, in, 1, &len);
        if (roundtrip(fd, w, r, type, buf, len, &rec))
            abort();
        CHECK(rec.type == type);
        CHECK(incmig__src_accepts(state, rec.type) == 0 ||
              rec.type != INCMIG_REC_ERROR);
        if (incmig__src_accepts(state, rec.type))
            continue;
        CHECK(!src_only(rec.type));
        if (rec.type == INCMIG_REC_DISK_ACK)
            CHECK(state == INCMIG_SRC_HANDSHAKE);
        if (rec.type == INCMIG_REC_READY)
            CHECK(state == INCMIG_SRC_STOPCOPY || state == INCMIG_SRC_RECONNECT);
        if (rec.type == INCMIG_REC_PULL_REQ || rec.type == INCMIG_REC_COMPLETE ||
            rec.type == INCMIG_REC_REPORT)
            CHECK(state == INCMIG_SRC_PULL);
        if (state == INCMIG_SRC_STATE || state == INCMIG_SRC_DONE ||
            state == INCMIG_SRC_FAILED)
            CHECK(rec.type == INCMIG_REC_ERROR);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static struct incmig__stream w, r;
    struct in in = { data, size };

    if (fd < 0) {
        incmig__verbosity = -1;
        fd = memfd_create("fuzz-states", 0);
        /* two endpoints on one memfd: one writes a frame, one reads it
         * back; kept for the whole run (each holds a 4 MiB buffer) */
        if (fd < 0 || incmig__stream_init(&w, -1, fd) ||
            incmig__stream_init(&r, fd, -1))
            abort();
    }
    if (size < 1)
        return 0;
    if (take(&in) & 1)
        run_src(&in, fd, &w, &r);
    else
        run_dst(&in, fd, &w, &r);
    return 0;
}
