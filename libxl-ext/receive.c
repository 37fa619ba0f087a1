/* receive.c: the destination side of a migration (incmig_receive).
 *
 * States (records from the source, and what each does here):
 *
 *   HELLO      HELLO in, HELLO out (same migration id)
 *   DISKS      DISK in -> target image prepared, PULL gate and NBD export
 *              staged now (bound, not served), not in the downtime
 *              -> DISK_ACK out (status says why a disk cannot be taken)
 *   PUSH       BLOCKS (phase PUSH) written through libaio; ROUND drains
 *              the queue so that a block rewritten in a later round is
 *              never reordered with its older copy
 *   STOPCOPY   SUSPEND; BITMAP* (the blocks the guest wrote last);
 *              BLOCKS (phase STOPCOPY, pre-copy-only policy); READY in ->
 *              queue drained, image flushed, gates armed -> READY out
 *   GO         the export is served through the gate: the guest runs here
 *   PULL       BLOCKS (PULL_*) go through the gate; the gate's demand
 *              requests go out as PULL_REQ; once nothing is missing,
 *              COMPLETE out; PULL_END in: anything still missing is
 *              requested again; END in: done
 *
 * Failure rules: before GO any failure discards the partial copy (the
 * source still owns the guest) and the receiver exits with an error.
 * After GO the data is split between the hosts: a lost link stalls the
 * guest's reads of missing blocks and, with --listen, the receiver accepts
 * the source's reconnection (RESUME) and tells it what is still missing.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "incmig-internal.h"

#define RECV_QD 8
/* NBD workers on the destination: requests for missing blocks hold a
 * worker while they wait, and those for present blocks must still find
 * one free (as many as one client may have in flight). */
#define GATE_WORKERS 64

enum rstate { R_DISKS, R_PUSH, R_STOPCOPY, R_PULL, R_DONE };

struct rdisk {
    struct incmig__disk disk;
    bool created;              /* regular file we (re)created: discardable */
    uint32_t bs;
    uint64_t nblocks;
    struct incmig__bitmap final;   /* stop-and-copy bitmap */
    struct incmig__gate *gate;
    struct incmig__aioq *q;
};

struct recv {
    const struct incmig_receive_opts *o;
    struct incmig__stream st;
    bool st_open;
    pthread_mutex_t slock;     /* stream replacement vs gate requests */
    bool link_ok;
    int lfd;
    uint8_t mig_id[16];
    int nd;
    struct rdisk d[INCMIG_MAX_DISKS];
    struct incmig__nbd_server *nbd;
    uint8_t *zbuf;             /* inflated block data */
    uint8_t *ebuf;             /* record encoding */
    enum rstate state;
    bool complete_sent;
    bool error_sent;           /* an ERROR went out: say nothing more */
    double t_go;
};

static const char *state_name(enum rstate st)
{
    static const char *names[] = { "DISKS", "PUSH", "STOPCOPY", "PULL", "DONE" };
    return names[st];
}

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig) { stop_requested = sig; }

static int send_error(struct recv *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int send_error(struct recv *r, int code, const char *fmt, ...)
{
    struct incmig__error_rec e = { .code = code };
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.msg, sizeof e.msg, fmt, ap);
    va_end(ap);
    ERR("%s", e.msg);
    if (r->error_sent)
        return code;
    r->error_sent = true;
    uint8_t buf[INCMIG_MSG_MAX + 64];
    int len = incmig__enc_error(&e, buf);
    if (r->st_open && len >= 0)
        incmig__stream_send(&r->st, INCMIG_REC_ERROR, buf, (uint32_t)len);
    return code;
}

/* Gate callback, on NBD worker threads: ask the source for blocks. */
static int request_blocks(void *opaque, uint32_t disk, uint64_t first,
                          uint32_t n)
{
    struct recv *r = opaque;
    uint8_t buf[64];
    struct incmig__pull_req p = { .disk = disk, .first = first, .nblocks = n };
    int rc = INCMIG_ELINK;

    pthread_mutex_lock(&r->slock);
    if (r->link_ok) {
        int len = incmig__enc_pull_req(&p, buf);
        rc = len < 0 ? len
                     : incmig__stream_send(&r->st, INCMIG_REC_PULL_REQ, buf,
                                           (uint32_t)len);
    }
    pthread_mutex_unlock(&r->slock);
    return rc;
}

/* ---- handshake ----------------------------------------------------------- */

static int hello(struct recv *r, bool resume)
{
    struct incmig__rec rec;
    struct incmig__hello h;
    int rc;

    rc = incmig__stream_send_header(&r->st);
    if (!rc)
        rc = incmig__stream_recv_header(&r->st);
    if (!rc)
        rc = incmig__stream_recv(&r->st, &rec);
    if (rc)
        return rc;
    if (rec.type != INCMIG_REC_HELLO) {
        ERR("expected HELLO from the source, got %s", incmig__rec_name(rec.type));
        return INCMIG_EPROTO;
    }
    rc = incmig__dec_hello(&rec, &h);
    if (rc)
        return rc;
    if (h.role != 0)
        return send_error(r, INCMIG_EPROTO, "the peer is not a source");
    if (resume) {
        if (memcmp(h.mig_id, r->mig_id, 16) || (int)h.ndisks != r->nd)
            return send_error(r, INCMIG_EPEER, "a different migration tried "
                              "to resume this one; refused");
    } else {
        if (h.ndisks < 1 || h.ndisks > 1)
            return send_error(r, INCMIG_ENOTSUP, "domain %s has %u disks; "
                              "this receiver serves exactly one", h.name,
                              h.ndisks);
        memcpy(r->mig_id, h.mig_id, 16);
        r->nd = (int)h.ndisks;
        INFO("incoming migration of %s", h.name);
    }
    h.role = 1;
    h.caps = INCMIG_CAP_ZLIB | INCMIG_CAP_RESUME;
    int len = incmig__enc_hello(&h, r->ebuf);
    if (len < 0)
        return len;
    return incmig__stream_send(&r->st, INCMIG_REC_HELLO, r->ebuf, (uint32_t)len);
}

static int send_ack(struct recv *r, uint32_t index, int status, const char *msg)
{
    struct incmig__disk_ack a = { .index = index, .status = status };
    snprintf(a.msg, sizeof a.msg, "%s", msg);
    int len = incmig__enc_disk_ack(&a, r->ebuf);
    if (len < 0)
        return len;
    return incmig__stream_send(&r->st, INCMIG_REC_DISK_ACK, r->ebuf,
                               (uint32_t)len);
}

/* Prepare the target volume for one disk.  A regular file is recreated
 * sparse (all zeroes: round 0 does not send holes); an existing file of
 * another size is refused so that nothing is overwritten by mistake. */
static int prepare_disk(struct recv *r, const struct incmig__disk_rec *dr,
                        char *msg, size_t cap)
{
    struct rdisk *d = &r->d[dr->index];
    const char *path = r->o->image;
    struct stat sb;
    int rc;

    if (!incmig__block_size_valid(dr->block_size)) {
        snprintf(msg, cap, "disk %u: block size %u is not a power of two "
                 "between 4 KiB and 1 MiB", dr->index, dr->block_size);
        return INCMIG_EINVAL;
    }
    if (dr->size == 0 || dr->size > INCMIG_DISK_MAX) {
        snprintf(msg, cap, "disk %u: size %" PRIu64 " out of range",
                 dr->index, dr->size);
        return INCMIG_EINVAL;
    }
    if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size != 0 &&
        (uint64_t)sb.st_size != dr->size && !r->o->force) {
        snprintf(msg, cap, "destination image %s is %" PRIu64 " bytes but "
                 "disk %s is %" PRIu64 " bytes: remove it or use --force",
                 path, (uint64_t)sb.st_size, dr->name, dr->size);
        return INCMIG_ESIZE;
    }
    bool exists = stat(path, &sb) == 0;
    if (exists && S_ISREG(sb.st_mode) && truncate(path, 0) < 0) {
        snprintf(msg, cap, "cannot reset destination image %s: %s", path,
                 strerror(errno));
        return INCMIG_EIO;
    }
    rc = incmig__disk_open(&d->disk, path, INCMIG_DISK_WRITE | INCMIG_DISK_CREATE,
                           dr->size);
    if (rc) {
        snprintf(msg, cap, "cannot prepare destination image %s for disk %s "
                 "(%" PRIu64 " bytes): %s", path, dr->name, dr->size,
                 incmig_strerror(rc));
        return rc;
    }
    d->created = !exists || S_ISREG(sb.st_mode);
    if (d->disk.size != dr->size) {
        snprintf(msg, cap, "destination %s is %" PRIu64 " bytes, disk %s is %"
                 PRIu64, path, d->disk.size, dr->name, dr->size);
        return INCMIG_ESIZE;
    }
    d->bs = dr->block_size;
    d->nblocks = (dr->size + d->bs - 1) / d->bs;
    rc = incmig__bitmap_init(&d->final, d->nblocks);
    if (!rc)
        rc = incmig__aioq_new(&d->q, &d->disk, RECV_QD, INCMIG_BLOCKS_MAX);
    if (!rc)
        rc = incmig__gate_new(&d->gate, &d->disk, dr->index, d->bs,
                              request_blocks, r);
    if (!rc)
        rc = incmig__nbd_new(&r->nbd, r->o->nbd_uri, dr->size,
                             &incmig__gate_nbd_ops, d->gate, GATE_WORKERS);
    if (rc)
        snprintf(msg, cap, "cannot stage the destination export of disk %s "
                 "on %s: %s", dr->name, r->o->nbd_uri, incmig_strerror(rc));
    return rc;
}

static int recv_disks(struct recv *r)
{
    struct incmig__rec rec;
    int rc;

    for (int i = 0; i < r->nd; i++) {
        struct incmig__disk_rec dr;
        char msg[INCMIG_MSG_MAX] = "";
        rc = incmig__stream_recv(&r->st, &rec);
        if (rc)
            return rc;
        if (rec.type != INCMIG_REC_DISK) {
            ERR("expected DISK, got %s", incmig__rec_name(rec.type));
            return INCMIG_EPROTO;
        }
        rc = incmig__dec_disk(&rec, &dr);
        if (!rc && dr.index != (uint32_t)i) {
            ERR("DISK record for disk %u, expected %d", dr.index, i);
            rc = INCMIG_EPROTO;
        }
        if (rc)
            return rc;
        rc = prepare_disk(r, &dr, msg, sizeof msg);
        if (rc) {
            ERR("%s", msg);
            send_ack(r, (uint32_t)i, rc, msg);
            return rc;
        }
        INFO("disk %s: %" PRIu64 " bytes, %u-byte blocks -> %s, served on %s",
             dr.name, dr.size, dr.block_size, r->o->image, r->o->nbd_uri);
        rc = send_ack(r, (uint32_t)i, 0, "ok");
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- data ---------------------------------------------------------------- */

static int drain(struct recv *r)
{
    int rc = 0;
    for (int i = 0; i < r->nd && !rc; i++) {
        rc = incmig__aioq_drain(r->d[i].q);
        if (rc)
            return send_error(r, rc, "writing the destination image %s "
                              "failed: %s", r->d[i].disk.path,
                              incmig_strerror(rc));
    }
    return rc;
}

static int write_push(struct recv *r, struct rdisk *d, uint64_t first,
                      uint32_t n, const uint8_t *data)
{
    uint64_t off = first * d->bs;
    size_t len = (size_t)n * d->bs;
    uint8_t *buf;
    int rc;

    if (!data) {
        /* zeroes: order it after queued writes of the same blocks */
        rc = incmig__aioq_drain(d->q);
        if (!rc)
            rc = incmig__disk_punch(&d->disk, off,
                                    off + len > d->disk.size ? d->disk.size - off
                                                             : len);
        goto out;
    }
    while (incmig__aioq_inflight(d->q) >= RECV_QD) {
        uint64_t tag, o2;
        size_t l2;
        uint8_t *b2;
        int res;
        rc = incmig__aioq_reap(d->q, &tag, &o2, &l2, &b2, &res);
        if (rc)
            goto out;
        incmig__aioq_put_buf(d->q, b2);
        if (res) {
            rc = res;
            off = o2;
            goto out;
        }
    }
    rc = incmig__aioq_get_buf(d->q, &buf);
    if (rc)
        goto out;
    memcpy(buf, data, len);
    rc = incmig__aioq_submit(d->q, true, buf, len, off, 0);
    if (rc)
        incmig__aioq_put_buf(d->q, buf);
out:
    if (rc)
        send_error(r, rc, "writing block %" PRIu64 " of the destination "
                   "image %s failed: %s", off / d->bs, d->disk.path,
                   rc == INCMIG_ENOSPC ? "no space left on the destination"
                                       : incmig_strerror(rc));
    return rc;
}

static void maybe_complete(struct recv *r)
{
    if (r->state != R_PULL || r->complete_sent)
        return;
    for (int i = 0; i < r->nd; i++)
        if (incmig__gate_missing_count(r->d[i].gate))
            return;
    for (int i = 0; i < r->nd; i++)
        if (incmig__disk_flush(&r->d[i].disk)) {
            send_error(r, INCMIG_EIO, "cannot flush the destination image "
                       "%s before completing", r->d[i].disk.path);
            return;
        }
    pthread_mutex_lock(&r->slock);
    if (r->link_ok &&
        incmig__stream_send(&r->st, INCMIG_REC_COMPLETE, NULL, 0) == 0) {
        r->complete_sent = true;
        struct incmig__gate_stats st = {0}, one;
        for (int i = 0; i < r->nd; i++) {
            incmig__gate_get_stats(r->d[i].gate, &one);
            st.waits += one.waits;
            st.demand_blocks += one.demand_blocks;
            if (one.max_wait_ms > st.max_wait_ms)
                st.max_wait_ms = one.max_wait_ms;
        }
        INFO("PULL complete after %.2f s: every block is here; the source "
             "may let go (%" PRIu64 " guest requests waited for %" PRIu64
             " blocks, the longest %.1f ms)", incmig__now() - r->t_go,
             st.waits, st.demand_blocks, st.max_wait_ms);
    }
    pthread_mutex_unlock(&r->slock);
}

static int on_blocks(struct recv *r, const struct incmig__rec *rec)
{
    struct incmig__blocks b;
    uint32_t disk;
    int rc;

    if (rec->len < 4)
        return INCMIG_EPROTO;
    disk = (uint32_t)rec->body[0] << 24 | (uint32_t)rec->body[1] << 16 |
           (uint32_t)rec->body[2] << 8 | rec->body[3];
    if (disk >= (uint32_t)r->nd) {
        ERR("BLOCKS record for unknown disk %u", disk);
        return INCMIG_EPROTO;
    }
    struct rdisk *d = &r->d[disk];
    rc = incmig__dec_blocks(rec, d->bs, &b);
    if (rc)
        return rc;
    if (b.first >= d->nblocks || b.nblocks > d->nblocks - b.first)
        return send_error(r, INCMIG_EPROTO, "BLOCKS record for blocks %"
                          PRIu64 "+%u beyond disk %u's %" PRIu64 " blocks",
                          b.first, b.nblocks, disk, d->nblocks);
    bool pull = b.phase == INCMIG_PHASE_PULL_DEMAND ||
                b.phase == INCMIG_PHASE_PULL_BACKGROUND;
    if (pull != (r->state == R_PULL))
        return send_error(r, INCMIG_EPROTO, "BLOCKS record of phase %u in "
                          "state %s", b.phase, state_name(r->state));
    const uint8_t *data = b.data;
    size_t want = (size_t)b.nblocks * d->bs;
    if (b.enc == INCMIG_ENC_ZERO) {
        data = NULL;
    } else if (b.enc == INCMIG_ENC_ZLIB) {
        uLongf out = want;
        if (uncompress(r->zbuf, &out, b.data, b.len) != Z_OK || out != want) {
            ERR("BLOCKS record for blocks %" PRIu64 "+%u of disk %u: bad "
                "compressed data", b.first, b.nblocks, disk);
            return INCMIG_EPROTO;
        }
        data = r->zbuf;
    }
    if (!pull)
        return write_push(r, d, b.first, b.nblocks, data);
    rc = incmig__gate_fill(d->gate, b.first, b.nblocks, data);
    if (rc)
        return send_error(r, rc, "writing pulled blocks %" PRIu64 "+%u of %s "
                          "failed: %s", b.first, b.nblocks, d->disk.path,
                          incmig_strerror(rc));
    maybe_complete(r);
    return 0;
}

static int send_missing(struct recv *r)
{
    int rc = 0;
    for (int i = 0; i < r->nd && !rc; i++) {
        struct incmig__bitmap m = {0};
        rc = incmig__bitmap_init(&m, r->d[i].nblocks);
        if (!rc)
            rc = incmig__gate_get_missing(r->d[i].gate, &m);
        if (!rc)
            rc = incmig__send_bitmap_recs(&r->st, (uint32_t)i,
                                          INCMIG_PHASE_PULL_BACKGROUND, &m,
                                          r->ebuf);
        incmig__bitmap_dispose(&m);
    }
    return rc;
}

/* After PULL_END: whatever is still missing is asked for again. */
static void rerequest_missing(struct recv *r)
{
    for (int i = 0; i < r->nd; i++) {
        struct incmig__bitmap m = {0};
        uint64_t pos = 0, start, len;
        uint32_t per = INCMIG_BLOCKS_MAX / r->d[i].bs;
        if (incmig__bitmap_init(&m, r->d[i].nblocks) ||
            incmig__gate_get_missing(r->d[i].gate, &m)) {
            incmig__bitmap_dispose(&m);
            continue;
        }
        while (incmig__bitmap_next_run(&m, &pos, &start, &len))
            for (uint64_t k; len; start += k, len -= k) {
                k = len < per ? len : per;
                request_blocks(r, (uint32_t)i, start, (uint32_t)k);
            }
        incmig__bitmap_dispose(&m);
    }
}

static int bad_state(struct recv *r, const struct incmig__rec *rec, int rc)
{
    if (rc)
        return rc;
    return send_error(r, INCMIG_EPROTO, "unexpected %s record in state %s",
                      incmig__rec_name(rec->type), state_name(r->state));
}

static int on_record(struct recv *r, const struct incmig__rec *rec)
{
    int rc = 0;

    switch (rec->type) {
    case INCMIG_REC_BLOCKS:
        return on_blocks(r, rec);
    case INCMIG_REC_ROUND: {
        /* Echo it once the round is on disk: the source waits for the echo
         * of its last round before pausing the guest, so that the
         * downtime does not include catching up with data in flight. */
        struct incmig__round x;
        rc = incmig__dec_round(rec, &x);
        if (!rc)
            rc = drain(r);
        if (!rc) {
            DBG("round %u: %" PRIu64 " blocks", x.round, x.blocks);
            int len = incmig__enc_round(&x, r->ebuf);
            rc = len < 0 ? len : incmig__stream_send(&r->st, INCMIG_REC_ROUND,
                                                     r->ebuf, (uint32_t)len);
        }
        return rc;
    }
    case INCMIG_REC_SUSPEND:
        if ((rc = incmig__dec_empty(rec)) || r->state != R_PUSH)
            return bad_state(r, rec, rc);
        r->state = R_STOPCOPY;
        return drain(r);
    case INCMIG_REC_BITMAP: {
        struct incmig__bitmap_rec br;
        rc = incmig__dec_bitmap(rec, &br);
        if (rc)
            return rc;
        if (r->state != R_STOPCOPY || br.disk >= (uint32_t)r->nd)
            return send_error(r, INCMIG_EPROTO, "unexpected BITMAP record "
                              "(disk %u) in state %s", br.disk,
                              state_name(r->state));
        return incmig__bitmap_decode(&r->d[br.disk].final, br.first, br.nbits,
                                     br.data, br.len);
    }
    case INCMIG_REC_READY:
        if ((rc = incmig__dec_empty(rec)) || r->state != R_STOPCOPY)
            return bad_state(r, rec, rc);
        /* No flush here, in the downtime: reads see what was written, the
         * guest's own flushes cover it, and the image is made durable
         * before COMPLETE, when the source lets go of its copy. */
        rc = drain(r);
        for (int i = 0; i < r->nd && !rc; i++) {
            rc = incmig__gate_mark_missing(r->d[i].gate, &r->d[i].final);
            INFO("stop-and-copy: %" PRIu64 " blocks of disk %d left on the "
                 "source, gate armed", incmig__bitmap_count(&r->d[i].final), i);
        }
        if (!rc)
            rc = incmig__stream_send(&r->st, INCMIG_REC_READY, NULL, 0);
        return rc;
    case INCMIG_REC_GO:
        if ((rc = incmig__dec_empty(rec)) || r->state != R_STOPCOPY)
            return bad_state(r, rec, rc);
        r->state = R_PULL;
        r->t_go = incmig__now();
        rc = incmig__nbd_start(r->nbd);
        if (rc)
            return rc;
        INFO("GO: serving the guest on %s", r->o->nbd_uri);
        maybe_complete(r);
        return 0;
    case INCMIG_REC_PULL_END:
        if ((rc = incmig__dec_empty(rec)) || r->state != R_PULL)
            return bad_state(r, rec, rc);
        maybe_complete(r);
        if (!r->complete_sent)
            rerequest_missing(r);
        return 0;
    case INCMIG_REC_END:
        if ((rc = incmig__dec_empty(rec)) || r->state != R_PULL ||
            !r->complete_sent) {
            ERR("END before the migration was complete");
            return rc ? rc : INCMIG_EPROTO;
        }
        r->state = R_DONE;
        return 0;
    case INCMIG_REC_ERROR: {
        struct incmig__error_rec e;
        if (!incmig__dec_error(rec, &e))
            ERR("the source reports: %s", e.msg);
        return INCMIG_EPEER;
    }
    default:
        return bad_state(r, rec, 0);
    }
}

/* ---- link ---------------------------------------------------------------- */

static int open_stream(struct recv *r, int in_fd, int out_fd)
{
    pthread_mutex_lock(&r->slock);
    if (r->st_open)
        incmig__stream_dispose(&r->st);
    r->st_open = false;
    int rc = incmig__stream_init(&r->st, in_fd, out_fd);
    if (!rc)
        r->st_open = true;
    pthread_mutex_unlock(&r->slock);
    return rc;
}

/* PULL lost its link: wait for the source to come back (RESUME). */
static int relink(struct recv *r)
{
    double t = r->o->reconnect_s > 0 ? r->o->reconnect_s : 600;
    struct incmig__rec rec;
    uint8_t id[16];

    pthread_mutex_lock(&r->slock);
    r->link_ok = false;
    pthread_mutex_unlock(&r->slock);
    if (r->lfd < 0) {
        ERR("link to the source lost during PULL; without --listen or "
            "--rendezvous this receiver cannot take a reconnection");
        return INCMIG_ELINK;
    }
    ERR("link to the source lost during PULL: the guest's reads of missing "
        "blocks wait; waiting up to %.0f s for the source to reconnect", t);
    double end = incmig__now() + t;
    while (!stop_requested) {
        int fd, rc;
        double left = end - incmig__now();
        if (left <= 0) {
            ERR("the source did not come back within %.0f s", t);
            return INCMIG_ELINK;
        }
        rc = incmig__tcp_accept(r->lfd, left < 1 ? left : 1, &fd);
        if (rc == INCMIG_ECANCEL)
            continue;
        if (rc)
            return rc;
        rc = open_stream(r, fd, fd);
        if (!rc)
            rc = hello(r, true);
        if (!rc)
            rc = incmig__stream_recv(&r->st, &rec);
        if (!rc && (rec.type != INCMIG_REC_RESUME ||
                    incmig__dec_resume(&rec, id) || memcmp(id, r->mig_id, 16)))
            rc = INCMIG_EPROTO;
        if (!rc)
            rc = send_missing(r);
        if (!rc)
            rc = incmig__stream_send(&r->st, INCMIG_REC_READY, NULL, 0);
        if (!rc) {
            pthread_mutex_lock(&r->slock);
            r->link_ok = true;
            r->complete_sent = false;
            pthread_mutex_unlock(&r->slock);
            INFO("source reconnected: PULL resumes");
            for (int i = 0; i < r->nd; i++)
                incmig__gate_relink(r->d[i].gate);
            maybe_complete(r);
            return 0;
        }
        DBG("a reconnection attempt failed: %s", incmig_strerror(rc));
    }
    return INCMIG_ECANCEL;
}

static void discard(struct recv *r)
{
    for (int i = 0; i < r->nd; i++) {
        struct rdisk *d = &r->d[i];
        if (d->disk.path && d->created) {
            unlink(d->disk.path);
            INFO("partial copy %s discarded; the guest stays on the source",
                 d->disk.path);
        }
    }
}

int incmig_receive(const struct incmig_receive_opts *o, int in_fd, int out_fd)
{
    struct recv r;
    struct incmig__rec rec;
    struct sigaction sa = { .sa_handler = on_signal };
    int rc;

    memset(&r, 0, sizeof r);
    r.o = o;
    r.lfd = -1;
    pthread_mutex_init(&r.slock, NULL);
    for (int i = 0; i < (int)INCMIG_MAX_DISKS; i++)
        r.d[i].disk.fd = r.d[i].disk.dfd = -1;
    if (!o->image || !o->nbd_uri) {
        ERR("the receiver needs a destination image and an NBD address");
        return INCMIG_EINVAL;
    }
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    r.zbuf = malloc(INCMIG_BLOCKS_MAX);
    r.ebuf = malloc(INCMIG_REC_MAX);
    if (!r.zbuf || !r.ebuf) {
        rc = INCMIG_ENOMEM;
        goto out;
    }
    if (o->listen) {
        int fd;
        rc = incmig__tcp_listen(o->listen, &r.lfd);
        if (rc)
            goto out;
        INFO("waiting for the source on %s", o->listen);
        do
            rc = incmig__tcp_accept(r.lfd, 1, &fd);
        while (rc == INCMIG_ECANCEL && !stop_requested);
        if (rc)
            goto out;
        in_fd = out_fd = fd;
    }
    if (!o->listen && o->rendezvous) {
        rc = incmig__unix_listen(o->rendezvous, &r.lfd);
        if (rc)
            goto out;
    }
    rc = open_stream(&r, in_fd, out_fd);
    if (rc)
        goto out;
    r.link_ok = true;
    rc = hello(&r, false);
    if (!rc)
        rc = recv_disks(&r);
    if (rc)
        goto failed_discard;
    r.state = R_PUSH;
    while (r.state != R_DONE && !stop_requested) {
        rc = incmig__stream_recv(&r.st, &rec);
        if (!rc)
            rc = on_record(&r, &rec);
        if (!rc)
            continue;
        if (r.state != R_PULL)
            goto failed_discard;
        if (rc != INCMIG_ELINK)
            goto out;
        rc = relink(&r);
        if (rc)
            goto out;
    }
    if (stop_requested && r.state != R_DONE) {
        rc = INCMIG_ECANCEL;
        if (r.state != R_PULL)
            goto failed_discard;
        goto out;
    }
    INFO("migration complete; serving the guest until %s",
         o->exit_when_done ? "its last client disconnects" : "stopped");
    pthread_mutex_lock(&r.slock);
    r.link_ok = false;
    if (r.st_open)
        incmig__stream_dispose(&r.st);
    r.st_open = false;
    pthread_mutex_unlock(&r.slock);
    /* keep serving the guest: this process is its disk now */
    double idle_since = incmig__now();
    while (!stop_requested) {
        usleep(100 * 1000);
        if (incmig__nbd_clients(r.nbd) > 0)
            idle_since = incmig__now();
        else if (o->exit_when_done && incmig__now() - idle_since > 1.0)
            break;
    }
    rc = 0;
    goto out;

failed_discard:
    if (rc == INCMIG_ELINK)
        ERR("connection to the source lost before the point of no return");
    else if (rc != INCMIG_EPEER && !r.error_sent)
        send_error(&r, rc, "receiver failed: %s", incmig_strerror(rc));
    for (int i = 0; i < r.nd; i++)
        if (r.d[i].q)
            incmig__aioq_drain(r.d[i].q);
    discard(&r);
out:
    for (int i = 0; i < (int)INCMIG_MAX_DISKS; i++)
        if (r.d[i].gate)
            incmig__gate_abort(r.d[i].gate);
    if (r.nbd)
        incmig__nbd_free(r.nbd);
    pthread_mutex_lock(&r.slock);
    if (r.st_open)
        incmig__stream_dispose(&r.st);
    r.st_open = false;
    pthread_mutex_unlock(&r.slock);
    for (int i = 0; i < (int)INCMIG_MAX_DISKS; i++) {
        struct rdisk *d = &r.d[i];
        if (d->gate)
            incmig__gate_free(d->gate);
        if (d->q)
            incmig__aioq_free(d->q);
        incmig__bitmap_dispose(&d->final);
        incmig__disk_close(&d->disk);
    }
    if (r.lfd >= 0) {
        close(r.lfd);
        if (!o->listen && o->rendezvous)
            unlink(o->rendezvous);
    }
    free(r.zbuf);
    free(r.ebuf);
    pthread_mutex_destroy(&r.slock);
    return rc;
}
