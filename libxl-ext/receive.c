/* receive.c: the destination side of a migration (incmig_receive).
 *
 * The destination state machine of docs/specs/incmig-stream.md
 * ("Destination states"), written as one table, dst_table below: for each
 * state, the source records it takes, the handler of each and the state
 * it leads to.  Every record goes through dispatch(), which refuses (ERROR
 * to the source, then failure) any record the current state does not
 * take; incmig__dst_transition() exposes the table to the unit test.
 *
 *   state       record          handler       next
 *   HELLO       HELLO           on_hello      DISKS
 *   DISKS       DISK            on_disk       DISKS, BASE after the last
 *                                             disk (all validated, then
 *                                             created or reused, then
 *                                             acked, then BASE reports);
 *                                             without CAP_BASE the BASE
 *                                             state is passed: RECEIVING
 *   BASE        DECIDE          on_decide     BASE, RECEIVING after the
 *                                             last (checksums sent)
 *   RECEIVING   BLOCKS(PUSH)    on_blocks     RECEIVING
 *               ROUND           on_round      RECEIVING
 *               XEN_STREAM      on_state      RECEIVING (CAP_STATE only)
 *               SUSPEND         on_suspend    PAUSED (after the state
 *                                             stream's end, with CAP_STATE)
 *   PAUSED      BLOCKS(STOPCOPY) on_blocks    PAUSED
 *               ROUND           on_round      PAUSED
 *               BITMAP(STOPCOPY) on_bitmap    PAUSED (chunks in order)
 *               READY           on_ready      READY (every bitmap whole,
 *                                             restore succeeded; READY out)
 *   READY       GO              on_go         PULL (the domain runs here)
 *   PULL        BLOCKS(PULL_*)  on_blocks     PULL
 *               PULL_END        on_pull_end   PULL
 *               END             on_end        DONE (after COMPLETE only)
 *   WAIT_LINK   HELLO           on_hello      RESUMING (new connection)
 *   RESUMING    RESUME          on_resume     PULL
 *   (--resume: resume_state, then WAIT_LINK)
 *   any         ERROR           on_error      (failure)
 *
 * What is done where: the target backend (incmig-internal.h, "target
 * backend") creates the volumes, stages the PULL path, restores the
 * domain from the state stream, unpauses it at GO; receive.c writes the
 * PUSH blocks (libaio), arms the gates with the stop-and-copy bitmaps,
 * feeds the state stream (XEN_STREAM records) to the target's restore on
 * a thread through a pipe, and runs PULL through the gates.
 *
 * Failure rules: before GO any failure removes what this migration
 * created (target abort) and the receiver fails: the source still owns
 * the guest.  After GO the data is split between the hosts: a lost link
 * stalls the guest's reads of missing blocks and, with --listen or
 * --rendezvous, the receiver accepts the source's reconnection
 * (WAIT_LINK, RESUMING) and tells it what is still missing.  A stop
 * request (incmig_stop: the library installs no signal handler) fails the
 * migration before GO; from GO on it ends the receiver with what is owed
 * kept in the state file (owed.c, written before READY, marked at GO) and
 * the command that finishes said (say_resume).  A receiver restarted on
 * its state file (--resume: resume_state, RESTARTED in the spec) reopens
 * the volumes, serves the disks again and waits in WAIT_LINK.  After
 * COMPLETE a source that missed it may come back (late_source).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include "incmig-internal.h"

#define RECV_QD 8
#define STAY 1                 /* handler: guard not met, stay in state */

struct rdisk {
    struct incmig__disk *disk;     /* the target's volume */
    uint32_t bs;
    uint64_t nblocks;
    struct incmig__bitmap final;   /* stop-and-copy bitmap */
    uint64_t bm_next;              /* next bit of it expected */
    struct incmig__gate *gate;
    struct incmig__aioq *q;
    struct { uint64_t off, len; } fl[RECV_QD];   /* writes in flight, by
                                                  * tag; len 0: free */
    bool done;                     /* disk_done called */
    struct incmig__lineage lin;    /* a reused copy's claim (BASE) */
    int mode;                      /* DECIDE: INCMIG_MODE_* */
    uint64_t push_blocks, stopcopy_blocks, pull_blocks;
};

struct recv {
    const struct incmig_receive_opts *o;
    const struct incmig__target_kind *kind;
    struct incmig__target *t;
    struct incmig__stream st;
    bool st_open;
    pthread_mutex_t slock;     /* stream replacement vs gate requests */
    bool link_ok;
    int lfd;
    char rv_path[4200];        /* the rendezvous socket, resolved */
    uint8_t mig_id[16];
    char domain[INCMIG_NAME_MAX + 1];
    uint64_t caps;             /* negotiated: the source's & ours */
    int nd;
    int nrecs;
    int ndecided;              /* DECIDE records in */
    struct incmig__disk_rec recs[INCMIG_MAX_DISKS];
    struct rdisk d[INCMIG_MAX_DISKS];
    uint8_t *zbuf;             /* inflated block data */
    uint8_t *ebuf;             /* record encoding */
    int state;                 /* enum incmig__dst_state */
    bool complete_sent;
    bool error_sent;           /* an ERROR went out: say nothing more */
    double t_go;
    double serve_ms;           /* GO received to the guest's I/O accepted */
    struct incmig__owed owed;  /* the state file, from READY on */
    struct incmig_receive_opts ro;   /* o, or what the state file says */
    char ro_listen[512], ro_rv[4096], ro_target[64];

    /* the domain's state stream: XEN_STREAM bodies -> pipe -> restore */
    int state_wfd, state_rfd;
    bool restore_started;
    bool state_ended;          /* the empty XEN_STREAM came */
    pthread_t restore_thr;
    pthread_mutex_t rlock;
    bool restore_done;         /* under rlock */
    int restore_rc;            /* under rlock */
    double restore_s;          /* under rlock: end of the state stream
                                * to the end of restore */
    double t_state_end;        /* under rlock; set before the pipe's EOF */
    uint64_t state_bytes;
    uint64_t flow_sent;        /* the last FLOW's value */
    bool flow_done;            /* the FLOW after the state stream's end */
};

/* ERROR to the source (once: then say nothing more), not logged again. */
static int send_msg(struct recv *r, int code, const char *msg)
{
    struct incmig__error_rec e = { .code = code };
    uint8_t buf[INCMIG_MSG_MAX + 64];

    if (r->error_sent)
        return code;
    r->error_sent = true;
    snprintf(e.msg, sizeof e.msg, "%s", msg);
    int len = incmig__enc_error(&e, buf);
    if (r->st_open && len >= 0)
        incmig__stream_send(&r->st, INCMIG_REC_ERROR, buf, (uint32_t)len);
    return code;
}

/* Log a failure and send it to the source. */
static int send_error(struct recv *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int send_error(struct recv *r, int code, const char *fmt, ...)
{
    char msg[INCMIG_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ERR("%s", msg);
    return send_msg(r, code, msg);
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

/* ---- the domain's state stream -------------------------------------------- */

static void *restore_main(void *opaque)
{
    struct recv *r = opaque;
    char buf[65536];
    ssize_t n;

    int rc = r->t->ops->restore(r->t, r->state_rfd);
    double now = incmig__now();
    /* Read what is left, so that feeding the pipe never blocks on a
     * restore that stopped reading (a failure is reported at the next
     * XEN_STREAM record, or at READY). */
    while ((n = read(r->state_rfd, buf, sizeof buf)) > 0 ||
           (n < 0 && errno == EINTR))
        ;
    pthread_mutex_lock(&r->rlock);
    r->restore_rc = rc;
    r->restore_s = r->t_state_end > 0 ? now - r->t_state_end : 0;
    r->restore_done = true;
    pthread_mutex_unlock(&r->rlock);
    return NULL;
}

static int start_restore(struct recv *r)
{
    int fds[2];

    if (pipe2(fds, O_CLOEXEC) < 0) {
        LOGE("cannot create the state stream's pipe");
        return INCMIG_EIO;
    }
    r->state_rfd = fds[0];
    r->state_wfd = fds[1];
    if (pthread_create(&r->restore_thr, NULL, restore_main, r)) {
        ERR("cannot start the restore thread");
        return INCMIG_ENOMEM;
    }
    r->restore_started = true;
    return 0;
}

/* Ends the state stream (EOF on the pipe) and waits for restore. */
static int finish_restore(struct recv *r)
{
    if (r->state_wfd >= 0)
        close(r->state_wfd);
    r->state_wfd = -1;
    if (!r->restore_started)
        return 0;
    pthread_join(r->restore_thr, NULL);
    r->restore_started = false;
    return r->restore_rc;
}

static int restore_failed(struct recv *r)
{
    int rc;

    pthread_mutex_lock(&r->rlock);
    rc = r->restore_done ? r->restore_rc : 0;
    pthread_mutex_unlock(&r->rlock);
    return rc;
}

/* ---- handshake ------------------------------------------------------------ */

static int send_hello(struct recv *r, const struct incmig__hello *src)
{
    struct incmig__hello h = *src;
    int len;

    h.role = 1;
    h.caps = r->caps;
    len = incmig__enc_hello(&h, r->ebuf);
    if (len < 0)
        return len;
    return incmig__stream_send(&r->st, INCMIG_REC_HELLO, r->ebuf,
                               (uint32_t)len);
}

/* HELLO: the first one, or the first on a reconnection (WAIT_LINK). */
static int on_hello(struct recv *r, const struct incmig__rec *rec)
{
    struct incmig__hello h;
    int rc;

    rc = incmig__dec_hello(rec, &h);
    if (rc)
        return rc;
    if (h.role != 0)
        return send_error(r, INCMIG_EPROTO, "the peer is not a source");
    if (r->state == INCMIG_DST_WAIT_LINK) {
        if (memcmp(h.mig_id, r->mig_id, 16) || (int)h.ndisks != r->nd)
            return send_error(r, INCMIG_EPEER, "a different migration tried "
                              "to resume this one; refused");
        return send_hello(r, &h);
    }
    if (h.ndisks < 1 || h.ndisks > INCMIG_MAX_DISKS)
        return send_error(r, INCMIG_ENOTSUP, "domain %s has %u disks; this "
                          "receiver takes 1 to %u", h.name, h.ndisks,
                          INCMIG_MAX_DISKS);
    uint64_t ours = INCMIG_CAP_ZLIB | INCMIG_CAP_ZSTD | INCMIG_CAP_RESUME |
                    INCMIG_CAP_BASE | INCMIG_CAP_FLOW |
                    (r->kind->state ? INCMIG_CAP_STATE : 0);
    r->caps = h.caps & ours;
    if (r->kind->state_required && !(r->caps & INCMIG_CAP_STATE))
        return send_error(r, INCMIG_ENOTSUP, "domain %s: the %s target "
                          "restores the domain from its state stream and "
                          "the source offers none", h.name, r->kind->name);
    memcpy(r->mig_id, h.mig_id, 16);
    r->nd = (int)h.ndisks;
    snprintf(r->domain, sizeof r->domain, "%s", h.name);
    INFO("incoming migration of %s: %d disk%s%s", h.name, r->nd,
         r->nd > 1 ? "s" : "",
         r->caps & INCMIG_CAP_STATE ? ", with its state stream" : "");
    return send_hello(r, &h);
}

static int send_ack(struct recv *r, int index, int status, const char *msg)
{
    struct incmig__disk_ack a = { .index = (uint32_t)index, .status = status };
    snprintf(a.msg, sizeof a.msg, "%s", msg);
    int len = incmig__enc_disk_ack(&a, r->ebuf);
    if (len < 0)
        return len;
    return incmig__stream_send(&r->st, INCMIG_REC_DISK_ACK, r->ebuf,
                               (uint32_t)len);
}

/* Disk `bad` is refused: acks in order up to it (those before it were
 * fine), its own saying why; nothing more is sent. */
static int refuse_disk(struct recv *r, int bad, int rc, const char *msg,
                       bool logged)
{
    if (!logged)
        ERR("%s", msg);
    for (int i = 0; i < bad; i++)
        send_ack(r, i, 0, "ok");
    send_ack(r, bad, rc, msg);
    r->error_sent = true;
    return rc;
}

/* What this receiver holds of disk i: a reused copy (HAVE), with its
 * bitmap when it has one that fits a record. */
static int send_base_report(struct recv *r, int i)
{
    struct incmig__lineage *l = &r->d[i].lin;
    struct incmig__base_rec b = { .index = (uint32_t)i,
                                  .kind = INCMIG_BASE_REPORT };
    uint8_t *enc = NULL;
    size_t len = 0;
    int hl, rc;

    if (l->valid) {
        b.flags = INCMIG_BASE_HAVE;
        memcpy(b.gen, l->gen, 16);
        if (l->has_bitmap && l->bm.nbits == r->d[i].nblocks &&
            !incmig__bitmap_encode(&l->bm, 0, l->bm.nbits, &enc, &len) &&
            len <= INCMIG_REC_MAX - INCMIG_BASE_REPORT_HDR) {
            b.flags |= INCMIG_BASE_BITMAP;
            b.nbits = l->bm.nbits;
        } else {
            len = 0;
        }
    }
    hl = incmig__enc_base_hdr(&b, r->ebuf);
    rc = hl < 0 ? hl : incmig__stream_send2(&r->st, INCMIG_REC_BASE, r->ebuf,
                                            (uint32_t)hl, enc, (uint32_t)len);
    free(enc);
    return rc;
}

/* CHECKSUM: every block's XXH3-128, in chunks, while the source hashes
 * its own copy of each chunk as it arrives. */
static int send_sums(struct recv *r, int i)
{
    struct rdisk *d = &r->d[i];
    uint8_t *sums = r->ebuf + INCMIG_BASE_SUMS_HDR;
    int rc = 0;

    /* chunks of 16 MiB of disk: the source hashes one while we hash the
     * next */
    uint64_t per = (16u << 20) / d->bs;
    for (uint64_t first = 0; first < d->nblocks && !rc;) {
        uint64_t left = d->nblocks - first;
        struct incmig__base_rec b = {
            .index = (uint32_t)i, .kind = INCMIG_BASE_SUMS, .first = first,
            .count = (uint32_t)(left < per ? left : per),
        };
        int hl = incmig__enc_base_hdr(&b, r->ebuf);
        rc = hl < 0 ? hl : incmig__sums_compute(d->disk, d->bs, first,
                                                b.count, sums);
        if (rc)
            return send_error(r, rc, "disk %s: cannot read %s for its "
                              "checksums: %s", r->recs[i].name,
                              d->disk->path, incmig_strerror(rc));
        rc = incmig__stream_send(&r->st, INCMIG_REC_BASE, r->ebuf,
                                 (uint32_t)hl + 16 * b.count);
        first += b.count;
    }
    return rc;
}

static int on_decide(struct recv *r, const struct incmig__rec *rec)
{
    struct incmig__decide x;
    int rc = incmig__dec_decide(rec, &x);

    if (rc)
        return rc;
    if (x.index != (uint32_t)r->ndecided)
        return send_error(r, INCMIG_EPROTO, "DECIDE for disk %u, expected "
                          "disk %d", x.index, r->ndecided);
    if (x.mode != INCMIG_MODE_FULL && !r->d[x.index].lin.valid)
        return send_error(r, INCMIG_EPROTO, "DECIDE %s for disk %s, of which "
                          "this receiver holds no copy",
                          incmig__mode_name(x.mode), r->recs[x.index].name);
    r->d[x.index].mode = x.mode;
    INFO("disk %s: round 0 is %s: %s", r->recs[x.index].name,
         incmig__mode_name(x.mode), x.reason);
    if (++r->ndecided < r->nd)
        return STAY;
    for (int i = 0; i < r->nd && !rc; i++)
        if (r->d[i].mode == INCMIG_MODE_CHECKSUM)
            rc = send_sums(r, i);
    return rc;
}

/* Each disk's next generation; a reused copy's claim, read again before
 * prepare marks it in use (for the BASE report). */
static int take_lineage(struct recv *r, struct incmig__target_disk *td)
{
    char msg[INCMIG_MSG_MAX];
    int rc;

    for (int i = 0; i < r->nd; i++) {
        incmig__gen_derive(r->mig_id, (uint32_t)i, td[i].gen_next);
        if (!td[i].reuse)
            continue;
        if ((rc = incmig__volume_base(&td[i], &r->d[i].lin)))
            return refuse_disk(r, i, rc, "out of memory", false);
        if (!(r->caps & INCMIG_CAP_BASE)) {
            snprintf(msg, sizeof msg, "disk %s: %.500s is an older copy of "
                     "this disk, and the source does not do incremental "
                     "migrations: refused, nothing touched", td[i].name,
                     td[i].path);
            return refuse_disk(r, i, INCMIG_EINVAL, msg, false);
        }
        if (!r->d[i].lin.valid) {
            snprintf(msg, sizeof msg, "disk %s: %.500s changed since it "
                     "was checked: refused", td[i].name, td[i].path);
            return refuse_disk(r, i, INCMIG_EIO, msg, false);
        }
    }
    return 0;
}

/* Every DISK is in: validate them all, create nothing until then; then
 * prepare and stage every volume; then ack. */
static int prepare_state(struct recv *r);
static int take_disks(struct recv *r)
{
    struct incmig__target_disk td[INCMIG_MAX_DISKS];
    char msg[INCMIG_MSG_MAX] = "";
    int bad = -1, rc;

    memset(td, 0, sizeof td);
    rc = incmig__volume_map(r->o, r->recs, r->nd, td, &bad, msg, sizeof msg);
    if (rc)
        return refuse_disk(r, bad, rc, msg, false);
    rc = take_lineage(r, td);
    if (rc)
        return rc;
    rc = r->kind->open(&r->t, r->domain, r->nd, td, &bad, msg, sizeof msg);
    if (rc)
        return refuse_disk(r, bad < 0 ? 0 : bad, rc, msg, false);
    incmig__volume_shared(r->o, r->t);
    r->t->paused = r->o->leave_paused;

    for (int i = 0; i < r->nd; i++) {
        struct rdisk *d = &r->d[i];
        rc = r->t->ops->prepare(r->t, i, &d->disk);
        if (!rc) {
            d->bs = td[i].block_size;
            d->nblocks = (td[i].size + d->bs - 1) / d->bs;
            rc = incmig__bitmap_init(&d->final, d->nblocks);
            if (!rc)
                rc = incmig__aioq_new(&d->q, d->disk, RECV_QD,
                                      INCMIG_BLOCKS_MAX);
            if (!rc)
                rc = incmig__gate_new(&d->gate, d->disk, (uint32_t)i, d->bs,
                                      request_blocks, r);
            if (rc)
                incmig__target_fail(r->t, rc, "disk %s: cannot set up its "
                                    "writer and gate: %s", td[i].name,
                                    incmig_strerror(rc));
        }
        if (!rc)
            rc = r->t->ops->stage(r->t, i, d->gate);
        if (rc)
            return refuse_disk(r, i, rc, r->t->msg, true);
    }
    rc = prepare_state(r);
    if (rc)
        return rc;
    if (r->caps & INCMIG_CAP_STATE) {
        rc = start_restore(r);
        if (rc)
            return send_error(r, rc, "domain %s: cannot start its restore",
                              r->domain);
    }
    for (int i = 0; i < r->nd; i++) {
        INFO("disk %s: %" PRIu64 " bytes, %u-byte blocks -> %s%s%s",
             td[i].name, td[i].size, td[i].block_size, td[i].path,
             td[i].nbd_uri[0] ? ", served on " : "", td[i].nbd_uri);
        rc = send_ack(r, i, 0, "ok");
        if (rc)
            return rc;
    }
    for (int i = 0; i < r->nd && (r->caps & INCMIG_CAP_BASE) && !rc; i++)
        rc = send_base_report(r, i);
    return rc;
}

static int on_disk(struct recv *r, const struct incmig__rec *rec)
{
    struct incmig__disk_rec *dr = &r->recs[r->nrecs];
    int rc;

    rc = incmig__dec_disk(rec, dr);
    if (rc)
        return rc;
    if (dr->index != (uint32_t)r->nrecs)
        return send_error(r, INCMIG_EPROTO, "DISK record for disk %u, "
                          "expected disk %d", dr->index, r->nrecs);
    if (++r->nrecs < r->nd)
        return STAY;
    return take_disks(r);
}

/* ---- data ----------------------------------------------------------------- */

/* Wait for every queued write of d (ends every overlap). */
static int drain_disk(struct rdisk *d)
{
    memset(d->fl, 0, sizeof d->fl);
    return incmig__aioq_drain(d->q);
}

static int drain(struct recv *r)
{
    int rc = 0;
    for (int i = 0; i < r->nd && !rc; i++) {
        rc = drain_disk(&r->d[i]);
        if (rc)
            return send_error(r, rc, "writing the destination volume %s "
                              "failed: %s", r->d[i].disk->path,
                              incmig_strerror(rc));
    }
    return rc;
}

/* Blocks go to the volume through libaio, RECV_QD writes in flight.  Two
 * writes of the same block are never in flight together: the source may
 * send a block again before the next ROUND (it pushes dirty blocks
 * between chunks of the state stream), and the later copy must land last. */
static int write_push(struct recv *r, struct rdisk *d, uint64_t first,
                      uint32_t n, const uint8_t *data)
{
    uint64_t off = first * d->bs;
    size_t len = (size_t)n * d->bs;
    uint8_t *buf;
    int rc, slot = -1;

    /* a reused copy keeps its claim through a failure: every block
     * written into it joins its bitmap (keep_claims) */
    if (d->lin.has_bitmap && first < d->lin.bm.nbits)
        incmig__bitmap_set_range(&d->lin.bm, first,
                                 n < d->lin.bm.nbits - first
                                     ? n : d->lin.bm.nbits - first);

    /* The last block of a disk whose size is not a multiple of the block
     * size is sent whole (spec: BLOCKS): only the part inside the disk is
     * written, through the buffered fd (O_DIRECT wants whole sectors),
     * after the queued writes that may overlap it. */
    if (off + len > d->disk->size) {
        if (off >= d->disk->size) {
            rc = INCMIG_EPROTO;
            goto out;
        }
        rc = drain_disk(d);
        if (!rc)
            rc = data ? incmig__disk_pwrite(d->disk, data, d->disk->size - off,
                                            off)
                      : incmig__disk_punch(d->disk, off, d->disk->size - off);
        goto out;
    }

    bool overlap = false;
    for (int i = 0; i < RECV_QD; i++)
        if (d->fl[i].len && off < d->fl[i].off + d->fl[i].len &&
            d->fl[i].off < off + len)
            overlap = true;
    if (!data || overlap) {
        rc = drain_disk(d);
        if (rc || !data) {
            /* zeroes: ordered after the queued writes of the same blocks */
            if (!rc)
                rc = incmig__disk_punch(d->disk, off,
                                        off + len > d->disk->size
                                            ? d->disk->size - off : len);
            goto out;
        }
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
        if (tag < RECV_QD)
            d->fl[tag].len = 0;
        if (res) {
            rc = res;
            off = o2;
            goto out;
        }
    }
    for (int i = 0; i < RECV_QD && slot < 0; i++)
        if (!d->fl[i].len)
            slot = i;
    if (slot < 0) {          /* cannot be: fewer than RECV_QD in flight */
        rc = drain_disk(d);
        if (rc)
            goto out;
        slot = 0;
    }
    rc = incmig__aioq_get_buf(d->q, &buf);
    if (rc)
        goto out;
    memcpy(buf, data, len);
    rc = incmig__aioq_submit(d->q, true, buf, len, off, (uint64_t)slot);
    if (rc)
        incmig__aioq_put_buf(d->q, buf);
    else
        d->fl[slot].off = off, d->fl[slot].len = len;
out:
    if (rc)
        send_error(r, rc, "writing block %" PRIu64 " of the destination "
                   "volume %s failed: %s", off / d->bs, d->disk->path,
                   rc == INCMIG_ENOSPC ? "no space left on the destination"
                                       : incmig_strerror(rc));
    return rc;
}

/* The destination's figures, one JSON object (spec: REPORT). */
static int report_json(struct recv *r, const struct incmig__gate_stats *tot,
                       const struct incmig__gate_stats *per, char *buf,
                       size_t cap)
{
    size_t n = 0;
    double restore_s;

    pthread_mutex_lock(&r->rlock);
    restore_s = r->restore_s;
    pthread_mutex_unlock(&r->rlock);
#define OUT(...)                                                            \
    do {                                                                    \
        int k_ = snprintf(buf + n, cap - n, __VA_ARGS__);                   \
        if (k_ < 0 || (size_t)k_ >= cap - n)                                \
            return INCMIG_EINVAL;                                           \
        n += (size_t)k_;                                                    \
    } while (0)
    OUT("{\"pull_s\": %.3f, \"demand_requests\": %" PRIu64
        ", \"demand_blocks\": %" PRIu64 ", \"waits\": %" PRIu64
        ", \"max_wait_ms\": %.3f, \"state_bytes\": %" PRIu64
        ", \"restore_s\": %.3f, \"serve_ms\": %.3f, \"disks\": [",
        incmig__now() - r->t_go, tot->demand_requests, tot->demand_blocks,
        tot->waits, tot->max_wait_ms, r->state_bytes, restore_s,
        r->serve_ms);
    for (int i = 0; i < r->nd; i++) {
        const struct rdisk *d = &r->d[i];
        OUT("%s{\"name\": \"", i ? ", " : "");
        for (const char *p = r->recs[i].name; *p; p++) {
            unsigned char c = (unsigned char)*p;
            if (c == '"' || c == '\\')
                OUT("\\%c", c);
            else if (c < 0x20)
                OUT("\\u%04x", c);
            else
                OUT("%c", c);
        }
        OUT("\", \"demand_blocks\": %" PRIu64 ", \"waits\": %" PRIu64
            ", \"overwritten\": %" PRIu64 ", \"dropped\": %" PRIu64
            ", \"push_blocks\": %" PRIu64 ", \"stopcopy_blocks\": %" PRIu64
            ", \"final_dirty_blocks\": %" PRIu64 ", \"pull_blocks\": %"
            PRIu64 "}", per[i].demand_blocks, per[i].waits,
            per[i].overwritten, per[i].dropped, d->push_blocks,
            d->stopcopy_blocks, incmig__bitmap_count(&d->final),
            d->pull_blocks);
    }
    OUT("]}");
#undef OUT
    return (int)n;
}

static void maybe_complete(struct recv *r)
{
    if (r->state != INCMIG_DST_PULL || r->complete_sent)
        return;
    bool all = true;
    for (int i = 0; i < r->nd; i++) {
        struct rdisk *d = &r->d[i];
        if (incmig__gate_missing_count(d->gate)) {
            all = false;
            continue;
        }
        if (!d->done) {
            if (r->t->ops->disk_done(r->t, i)) {
                send_msg(r, INCMIG_EIO, r->t->msg);
                return;
            }
            d->done = true;
        }
    }
    if (!all)
        return;
    /* every volume flushed (disk_done): the file says nothing is owed */
    if (incmig__owed_sync(&r->owed)) {
        send_msg(r, INCMIG_EIO, "cannot update the destination's state file");
        return;
    }
    pthread_mutex_lock(&r->slock);
    if (r->link_ok &&
        incmig__stream_send(&r->st, INCMIG_REC_COMPLETE, NULL, 0) == 0) {
        struct incmig__gate_stats tot = {0}, per[INCMIG_MAX_DISKS];
        r->complete_sent = true;
        for (int i = 0; i < r->nd; i++) {
            incmig__gate_get_stats(r->d[i].gate, &per[i]);
            tot.demand_requests += per[i].demand_requests;
            tot.demand_blocks += per[i].demand_blocks;
            tot.waits += per[i].waits;
            tot.overwritten += per[i].overwritten;
            tot.dropped += per[i].dropped;
            if (per[i].max_wait_ms > tot.max_wait_ms)
                tot.max_wait_ms = per[i].max_wait_ms;
        }
        INFO("PULL complete after %.2f s: every block is here; the source "
             "may let go (%" PRIu64 " guest requests waited for %" PRIu64
             " blocks, the longest %.1f ms)", incmig__now() - r->t_go,
             tot.waits, tot.demand_blocks, tot.max_wait_ms);
        for (int i = 0; i < r->nd; i++) {
            const struct rdisk *d = &r->d[i];
            INFO("disk %s: %" PRIu64 " blocks pushed, %" PRIu64 " in the "
                 "stop-and-copy bitmap, %" PRIu64 " pulled (%" PRIu64 " on "
                 "demand), %" PRIu64 " guest requests waited, %" PRIu64
                 " overwritten by the guest, %" PRIu64 " late copies dropped",
                 r->recs[i].name, d->push_blocks + d->stopcopy_blocks,
                 incmig__bitmap_count(&d->final), d->pull_blocks,
                 per[i].demand_blocks, per[i].waits, per[i].overwritten,
                 per[i].dropped);
        }
        int len = report_json(r, &tot, per, (char *)r->ebuf, INCMIG_REC_MAX);
        if (len > 0)
            incmig__stream_send(&r->st, INCMIG_REC_REPORT, r->ebuf,
                                (uint32_t)len);
    }
    pthread_mutex_unlock(&r->slock);
}

static int on_blocks(struct recv *r, const struct incmig__rec *rec)
{
    static const uint8_t phase_of[INCMIG_DST_NSTATES] = {
        [INCMIG_DST_RECEIVING] = 1 << INCMIG_PHASE_PUSH,
        [INCMIG_DST_PAUSED] = 1 << INCMIG_PHASE_STOPCOPY,
        [INCMIG_DST_PULL] = 1 << INCMIG_PHASE_PULL_DEMAND |
                            1 << INCMIG_PHASE_PULL_BACKGROUND,
    };
    struct incmig__blocks b;
    uint32_t disk;
    int rc;

    if (rec->len < 4)
        return INCMIG_EPROTO;
    disk = (uint32_t)rec->body[0] << 24 | (uint32_t)rec->body[1] << 16 |
           (uint32_t)rec->body[2] << 8 | rec->body[3];
    if (disk >= (uint32_t)r->nd)
        return send_error(r, INCMIG_EPROTO, "BLOCKS record for unknown "
                          "disk %u", disk);
    struct rdisk *d = &r->d[disk];
    rc = incmig__dec_blocks(rec, d->bs, &b);
    if (rc)
        return rc;
    if (b.first >= d->nblocks || b.nblocks > d->nblocks - b.first)
        return send_error(r, INCMIG_EPROTO, "BLOCKS record for blocks %"
                          PRIu64 "+%u beyond disk %u's %" PRIu64 " blocks",
                          b.first, b.nblocks, disk, d->nblocks);
    if (b.phase > INCMIG_PHASE_PULL_BACKGROUND ||
        !(phase_of[r->state] & (1u << b.phase)))
        return send_error(r, INCMIG_EPROTO, "BLOCKS record of phase %u in "
                          "state %s", b.phase,
                          incmig__dst_state_name(r->state));
    if ((b.enc == INCMIG_ENC_ZLIB && !(r->caps & INCMIG_CAP_ZLIB)) ||
        (b.enc == INCMIG_ENC_ZSTD && !(r->caps & INCMIG_CAP_ZSTD)))
        return send_error(r, INCMIG_EPROTO, "compressed BLOCKS record but "
                          "that compression was not negotiated");
    const uint8_t *data = b.data;
    size_t want = (size_t)b.nblocks * d->bs;
    if (b.enc == INCMIG_ENC_ZERO) {
        data = NULL;
    } else if (b.enc == INCMIG_ENC_ZLIB) {
        uLongf out = want;
        if (uncompress(r->zbuf, &out, b.data, b.len) != Z_OK || out != want)
            return send_error(r, INCMIG_EPROTO, "BLOCKS record for blocks %"
                              PRIu64 "+%u of disk %u: bad compressed data",
                              b.first, b.nblocks, disk);
        data = r->zbuf;
    } else if (b.enc == INCMIG_ENC_ZSTD) {
        if (incmig__zstd_decode(r->zbuf, want, b.data, b.len))
            return send_error(r, INCMIG_EPROTO, "BLOCKS record for blocks %"
                              PRIu64 "+%u of disk %u: bad zstd data",
                              b.first, b.nblocks, disk);
        data = r->zbuf;
    }
    if (r->state != INCMIG_DST_PULL) {
        if (r->state == INCMIG_DST_PAUSED)
            d->stopcopy_blocks += b.nblocks;
        else
            d->push_blocks += b.nblocks;
        return write_push(r, d, b.first, b.nblocks, data);
    }
    d->pull_blocks += b.nblocks;
    rc = incmig__gate_fill(d->gate, b.first, b.nblocks, data);
    if (!rc)
        rc = incmig__owed_sync_maybe(&r->owed);
    if (rc)
        return send_error(r, rc, "writing pulled blocks %" PRIu64 "+%u of %s "
                          "failed: %s", b.first, b.nblocks, d->disk->path,
                          incmig_strerror(rc));
    maybe_complete(r);
    return 0;
}

/* Echo a ROUND once it is on disk: the source waits for the echo of its
 * last round before pausing the guest, so that the downtime does not
 * include catching up with data in flight. */
static int on_round(struct recv *r, const struct incmig__rec *rec)
{
    struct incmig__round x;
    int rc;

    rc = incmig__dec_round(rec, &x);
    if (!rc)
        rc = drain(r);
    if (rc)
        return rc;
    DBG("round %u: %" PRIu64 " blocks", x.round, x.blocks);
    int len = incmig__enc_round(&x, r->ebuf);
    return len < 0 ? len : incmig__stream_send(&r->st, INCMIG_REC_ROUND,
                                               r->ebuf, (uint32_t)len);
}

/* A chunk of the domain's state stream; an empty one ends it. */
static int on_state(struct recv *r, const struct incmig__rec *rec)
{
    int rc;

    if (!(r->caps & INCMIG_CAP_STATE))
        return send_error(r, INCMIG_EPROTO, "XEN_STREAM record, but no state "
                          "stream was negotiated (INCMIG_CAP_STATE)");
    if (r->state_ended)
        return send_error(r, INCMIG_EPROTO, "XEN_STREAM record after the end "
                          "of the state stream");
    rc = restore_failed(r);
    if (rc)
        return send_msg(r, rc, r->t->msg);
    if (rec->len == 0) {
        r->state_ended = true;
        pthread_mutex_lock(&r->rlock);
        r->t_state_end = incmig__now();
        pthread_mutex_unlock(&r->rlock);
        if (r->state_wfd >= 0)
            close(r->state_wfd);
        r->state_wfd = -1;
        int inq = 0;
        ioctl(r->st.rfd, FIONREAD, &inq);
        DBG("state stream complete: %" PRIu64 " bytes (%d bytes queued "
            "behind it)", r->state_bytes, inq);
        return 0;
    }
    for (uint32_t off = 0; off < rec->len;) {
        ssize_t n = write(r->state_wfd, rec->body + off, rec->len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return send_error(r, INCMIG_EIO, "domain %s: cannot pass its "
                              "state stream on to the restore: %s",
                              r->domain, strerror(errno));
        off += (uint32_t)n;
    }
    r->state_bytes += rec->len;
    return 0;
}

static int on_suspend(struct recv *r, const struct incmig__rec *rec)
{
    int rc = incmig__dec_empty(rec);

    if (rc)
        return rc;
    if ((r->caps & INCMIG_CAP_STATE) && !r->state_ended)
        return send_error(r, INCMIG_EPROTO, "SUSPEND before the end of the "
                          "state stream");
    double t0 = incmig__now();
    int inq = 0;
    ioctl(r->st.rfd, FIONREAD, &inq);
    rc = drain(r);
    DBG("SUSPEND: %d bytes queued behind it; writes in flight drained in "
        "%.1f ms", inq, (incmig__now() - t0) * 1000);
    return rc;
}

static int on_bitmap(struct recv *r, const struct incmig__rec *rec)
{
    struct incmig__bitmap_rec br;
    int rc;

    rc = incmig__dec_bitmap(rec, &br);
    if (rc)
        return rc;
    if (br.disk >= (uint32_t)r->nd || br.phase != INCMIG_PHASE_STOPCOPY)
        return send_error(r, INCMIG_EPROTO, "BITMAP record for disk %u, "
                          "phase %u: not a stop-and-copy bitmap of this "
                          "migration", br.disk, br.phase);
    struct rdisk *d = &r->d[br.disk];
    if (br.first != d->bm_next || br.nbits > d->nblocks - d->bm_next)
        return send_error(r, INCMIG_EPROTO, "BITMAP chunk of disk %u for "
                          "bits %" PRIu64 "+%" PRIu64 ": expected the chunk "
                          "at bit %" PRIu64 " of %" PRIu64 " (chunks are "
                          "contiguous, in order, within the disk)", br.disk,
                          br.first, br.nbits, d->bm_next, d->nblocks);
    rc = incmig__bitmap_decode(&d->final, br.first, br.nbits, br.data,
                               br.len);
    if (rc)
        return send_error(r, rc, "BITMAP chunk of disk %u at bit %" PRIu64
                          " is malformed", br.disk, br.first);
    d->bm_next += br.nbits;
    return 0;
}

/* The state file (owed.c) of this migration: what a receiver restarted
 * after GO (--resume) needs to serve the domain's disks again and finish
 * PULL.  Prepared with every block owed once the disks are staged, armed
 * with the stop-and-copy bitmaps before READY (arm_state). */
static int prepare_state(struct recv *r)
{
    const struct incmig_receive_opts *o = r->o;
    char k[32];
    uint64_t nb[INCMIG_MAX_DISKS];
    struct incmig__kv *kv = calloc(1, sizeof *kv);
    int rc;

    double t0 = incmig__now();

    if (!kv)
        return INCMIG_ENOMEM;
#define KV(...) incmig__kv_add(kv, __VA_ARGS__)
    KV("domain", "%s", r->domain);
    KV("target", "%s", r->kind->name);
    KV("caps", "%" PRIu64, r->caps);
    KV("listen", "%s", o->listen ? o->listen : "");
    KV("rendezvous", "%s", !o->listen && o->rendezvous ? o->rendezvous : "");
    KV("exit_when_done", "%d", o->exit_when_done);
    KV("reconnect", "%d", o->reconnect_s);
    KV("timeout", "%d", o->timeout_s);
    KV("disks", "%d", r->nd);
    for (int i = 0; i < r->nd; i++) {
        const struct incmig__target_disk *td = &r->t->disks[i];
        snprintf(k, sizeof k, "disk%d.name", i);
        KV(k, "%s", td->name);
        snprintf(k, sizeof k, "disk%d.size", i);
        KV(k, "%" PRIu64, td->size);
        snprintf(k, sizeof k, "disk%d.bs", i);
        KV(k, "%u", td->block_size);
        snprintf(k, sizeof k, "disk%d.path", i);
        KV(k, "%s", td->path);
        snprintf(k, sizeof k, "disk%d.nbd", i);
        KV(k, "%s", td->nbd_uri);
    }
#undef KV
    for (int i = 0; i < r->nd; i++)
        nb[i] = r->d[i].nblocks;
    rc = incmig__owed_start(&r->owed, o->state_dir, "receive", r->mig_id,
                            r->nd, nb, kv);
    free(kv);
    if (rc)
        return send_error(r, rc, "domain %s: cannot write the state file "
                          "%s that PULL needs to survive a crash: refused",
                          r->domain, r->owed.path);
    DBG("state file %s prepared in %.1f ms", r->owed.path,
        (incmig__now() - t0) * 1000);
    return 0;
}

/* In the downtime, before READY: the owed set is the stop-and-copy
 * bitmaps, durably; from here on the gates keep it in step. */
static int arm_state(struct recv *r)
{
    struct incmig__bitmap sets[INCMIG_MAX_DISKS];
    double t0 = incmig__now();
    int rc;

    for (int i = 0; i < r->nd; i++)
        sets[i] = r->d[i].final;
    rc = incmig__owed_arm(&r->owed, sets, false);   /* marked at GO */
    if (rc)
        return send_error(r, rc, "domain %s: cannot update the state file "
                          "%s: refused before GO", r->domain, r->owed.path);
    for (int i = 0; i < r->nd; i++) {
        r->owed.vol[i] = r->d[i].disk;
        incmig__gate_set_owed(r->d[i].gate, &r->owed);
    }
    DBG("state file armed in %.1f ms (in the downtime; made durable "
        "after GO)", (incmig__now() - t0) * 1000);
    return 0;
}

/* What a stop or a lost source leaves: what is owed, and how to finish. */
static void say_resume(struct recv *r)
{
    if (!incmig__owed_active(&r->owed))
        return;
    incmig__owed_sync(&r->owed);
    ERR("domain %s: %" PRIu64 " blocks are still owed by the source; they "
        "are kept in %s.  Restart this receiver with: xl-incmig "
        "migrate-receive --resume %s (the source finishes with `xl-incmig "
        "migrate --resume` if its migrate is gone too)", r->domain,
        incmig__owed_count(&r->owed), r->owed.path, r->owed.path);
}

/* The source's READY: the stop-and-copy data is complete.  Answer READY
 * only once every bitmap covered its disk and the domain is restored. */
static int on_ready(struct recv *r, const struct incmig__rec *rec)
{
    int rc = incmig__dec_empty(rec);

    if (rc)
        return rc;
    for (int i = 0; i < r->nd; i++)
        if (r->d[i].bm_next != r->d[i].nblocks)
            return send_error(r, INCMIG_EPROTO, "READY before the "
                              "stop-and-copy bitmap of disk %s was complete "
                              "(%" PRIu64 " of %" PRIu64 " blocks)",
                              r->recs[i].name, r->d[i].bm_next,
                              r->d[i].nblocks);
    double t0 = incmig__now();
    if (r->caps & INCMIG_CAP_STATE) {
        rc = finish_restore(r);
        if (rc)
            return send_msg(r, rc, r->t->msg);
        INFO("domain %s restored from its state stream (%" PRIu64 " bytes, "
             "%.3f s), paused", r->domain, r->state_bytes, r->restore_s);
    }
    /* No flush here, in the downtime: reads see what was written, the
     * guest's own flushes cover it, and each volume is made durable
     * before COMPLETE, when the source lets go of its copy. */
    double t1 = incmig__now();
    rc = drain(r);
    DBG("READY: restore finished in %.1f ms, writes drained in %.1f ms",
        (t1 - t0) * 1000, (incmig__now() - t1) * 1000);
    for (int i = 0; i < r->nd && !rc; i++) {
        rc = incmig__gate_mark_missing(r->d[i].gate, &r->d[i].final);
        INFO("stop-and-copy: %" PRIu64 " blocks of disk %s left on the "
             "source, gate armed", incmig__bitmap_count(&r->d[i].final),
             r->recs[i].name);
    }
    if (!rc)
        rc = arm_state(r);
    if (!rc)
        rc = incmig__stream_send(&r->st, INCMIG_REC_READY, NULL, 0);
    return rc;
}

/* In PULL a demand answer queues behind the background data already in
 * our socket's receive buffer, which we drain only as fast as blocks are
 * written: keep it small (as the source keeps its send buffer), so that
 * a guest read waiting for a block does not wait for megabytes. */
static void small_recv_buffer(struct recv *r)
{
    int sz = 256 << 10;
    setsockopt(r->st.rfd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
}

static int on_go(struct recv *r, const struct incmig__rec *rec)
{
    int rc = incmig__dec_empty(rec);

    if (rc)
        return rc;
    r->t_go = incmig__now();
    r->state = INCMIG_DST_PULL;   /* past the point of no return */
    small_recv_buffer(r);
    /* Before the domain runs: from here on the state file is what a
     * restarted receiver finishes PULL from (written: a killed receiver
     * finds it in the page cache; made durable just after the unpause,
     * and before any guest flush is answered). */
    if (incmig__owed_mark_go(&r->owed))
        ERR("domain %s: PULL goes on, but a crash of this receiver before "
            "it completes could not be recovered from", r->domain);
    rc = r->t->ops->unpause(r->t);
    if (rc)
        return send_msg(r, rc, r->t->msg);
    r->serve_ms = (incmig__now() - r->t_go) * 1000;
    if (incmig__owed_settle(&r->owed))
        ERR("domain %s: the state file %s could not be made durable: PULL "
            "goes on, but if this host goes down before it completes the "
            "file may not resume", r->domain, r->owed.path);
    INFO("GO: domain %s runs here (%s%s)", r->domain,
         r->t->disks[0].nbd_uri[0] ? "disk served on " : "disks attached",
         r->t->disks[0].nbd_uri);
    maybe_complete(r);
    return 0;
}

/* After PULL_END: whatever is still missing is asked for again. */
static int on_pull_end(struct recv *r, const struct incmig__rec *rec)
{
    int rc = incmig__dec_empty(rec);

    if (rc)
        return rc;
    maybe_complete(r);
    if (r->complete_sent)
        return 0;
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
    return 0;
}

static int on_end(struct recv *r, const struct incmig__rec *rec)
{
    int rc = incmig__dec_empty(rec);

    if (rc)
        return rc;
    if (!r->complete_sent)
        return send_error(r, INCMIG_EPROTO, "END before the migration was "
                          "complete");
    return 0;
}

/* RESUME on a new connection: tell the source what is still missing. */
static int on_resume(struct recv *r, const struct incmig__rec *rec)
{
    uint8_t id[16];
    int rc;

    rc = incmig__dec_resume(rec, id);
    if (rc)
        return rc;
    if (memcmp(id, r->mig_id, 16))
        return send_error(r, INCMIG_EPROTO, "RESUME of another migration");
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
    if (!rc)
        rc = incmig__stream_send(&r->st, INCMIG_REC_READY, NULL, 0);
    if (rc)
        return rc;
    pthread_mutex_lock(&r->slock);
    r->link_ok = true;
    r->complete_sent = false;
    pthread_mutex_unlock(&r->slock);
    INFO("source reconnected: PULL resumes");
    r->state = INCMIG_DST_PULL;
    small_recv_buffer(r);
    for (int i = 0; i < r->nd; i++)
        incmig__gate_relink(r->d[i].gate);
    maybe_complete(r);
    return 0;
}

static int on_error(struct recv *r, const struct incmig__rec *rec)
{
    struct incmig__error_rec e;

    r->error_sent = true;      /* the source is going away: no answer */
    if (!incmig__dec_error(rec, &e))
        ERR("the source reports: %s", e.msg);
    return INCMIG_EPEER;
}

/* A failure before GO: each reused copy still descends from its
 * generation, with the blocks this migration wrote into it added to its
 * bitmap (write_push), so a retry is still incremental. */
static void keep_claims(struct recv *r)
{
    for (int i = 0; i < r->nd && r->t; i++) {
        struct rdisk *d = &r->d[i];
        const struct incmig__target_disk *td = &r->t->disks[i];
        if (!td->reuse || !d->lin.valid || !d->disk || d->disk->fd < 0)
            continue;
        if (incmig__lineage_close(td->path, d->disk->fd, d->lin.gen, d->bs,
                                  d->lin.has_bitmap ? &d->lin.bm : NULL))
            ERR("disk %s: the older copy %s may be partly updated and its "
                "lineage could not be saved: its claim is void", td->name,
                td->path);
        else
            INFO("disk %s: the older copy %s keeps its generation, the "
                 "blocks written into it added to its bitmap", td->name,
                 td->path);
    }
}

/* ---- the table ------------------------------------------------------------ */

typedef int (*dst_handler)(struct recv *r, const struct incmig__rec *rec);
struct dst_edge {
    dst_handler fn;            /* NULL: the record is refused in this state */
    int next;
};
#define NTYPES (INCMIG_REC_DECIDE + 1)
#define TO(h, st) { h, INCMIG_DST_##st }
#define ERROR_IN(st) [INCMIG_REC_ERROR] = TO(on_error, st)

static const struct dst_edge dst_table[INCMIG_DST_NSTATES][NTYPES] = {
    [INCMIG_DST_HELLO] = {
        [INCMIG_REC_HELLO] = TO(on_hello, DISKS),
        ERROR_IN(HELLO),
    },
    [INCMIG_DST_DISKS] = {
        [INCMIG_REC_DISK] = TO(on_disk, BASE),
        ERROR_IN(DISKS),
    },
    [INCMIG_DST_BASE] = {
        [INCMIG_REC_DECIDE] = TO(on_decide, RECEIVING),
        ERROR_IN(BASE),
    },
    [INCMIG_DST_RECEIVING] = {
        [INCMIG_REC_BLOCKS] = TO(on_blocks, RECEIVING),
        [INCMIG_REC_ROUND] = TO(on_round, RECEIVING),
        [INCMIG_REC_XEN_STREAM] = TO(on_state, RECEIVING),
        [INCMIG_REC_SUSPEND] = TO(on_suspend, PAUSED),
        ERROR_IN(RECEIVING),
    },
    [INCMIG_DST_PAUSED] = {
        [INCMIG_REC_BLOCKS] = TO(on_blocks, PAUSED),
        [INCMIG_REC_ROUND] = TO(on_round, PAUSED),
        [INCMIG_REC_BITMAP] = TO(on_bitmap, PAUSED),
        [INCMIG_REC_READY] = TO(on_ready, READY),
        ERROR_IN(PAUSED),
    },
    [INCMIG_DST_READY] = {
        [INCMIG_REC_GO] = TO(on_go, PULL),
        ERROR_IN(READY),
    },
    [INCMIG_DST_PULL] = {
        [INCMIG_REC_BLOCKS] = TO(on_blocks, PULL),
        [INCMIG_REC_PULL_END] = TO(on_pull_end, PULL),
        [INCMIG_REC_END] = TO(on_end, DONE),
        ERROR_IN(PULL),
    },
    [INCMIG_DST_DONE] = {
        ERROR_IN(DONE),
    },
    [INCMIG_DST_WAIT_LINK] = {
        [INCMIG_REC_HELLO] = TO(on_hello, RESUMING),
        ERROR_IN(WAIT_LINK),
    },
    [INCMIG_DST_RESUMING] = {
        [INCMIG_REC_RESUME] = TO(on_resume, PULL),
        ERROR_IN(RESUMING),
    },
};

const char *incmig__dst_state_name(int state)
{
    static const char *names[INCMIG_DST_NSTATES] = {
        "HELLO", "DISKS", "BASE", "RECEIVING", "PAUSED", "READY", "PULL",
        "DONE", "WAIT_LINK", "RESUMING",
    };
    return state >= 0 && state < INCMIG_DST_NSTATES ? names[state] : "?";
}

int incmig__dst_transition(int state, uint32_t type, int *next_r)
{
    if (state < 0 || state >= INCMIG_DST_NSTATES || type >= NTYPES ||
        !dst_table[state][type].fn)
        return INCMIG_EPROTO;
    *next_r = dst_table[state][type].next;
    return 0;
}

/* While the state stream runs, with INCMIG_CAP_FLOW: what we acted on,
 * every 64 KiB and at its end (spec: FLOW). */
#define FLOW_EVERY (64u << 10)
static int send_flow(struct recv *r)
{
    uint8_t buf[8];

    if (!(r->caps & INCMIG_CAP_FLOW) || r->state != INCMIG_DST_RECEIVING ||
        r->flow_done || (!r->state_bytes && !r->state_ended))
        return 0;
    if (!r->state_ended && r->st.bytes_in - r->flow_sent < FLOW_EVERY)
        return 0;
    r->flow_done = r->state_ended;
    r->flow_sent = r->st.bytes_in;
    int len = incmig__enc_flow(r->flow_sent, buf);
    return incmig__stream_send(&r->st, INCMIG_REC_FLOW, buf, (uint32_t)len);
}

/* Every record from the source goes through here, and only here. */
static int dispatch(struct recv *r, const struct incmig__rec *rec)
{
    int next, rc;

    if (incmig__dst_transition(r->state, rec->type, &next))
        return send_error(r, INCMIG_EPROTO, "unexpected %s record in state "
                          "%s", incmig__rec_name(rec->type),
                          incmig__dst_state_name(r->state));
    rc = dst_table[r->state][rec->type].fn(r, rec);
    if (rc == STAY)
        return 0;
    if (rc)
        return rc;
    /* BASE exists only with INCMIG_CAP_BASE (spec: "Destination states") */
    if (next == INCMIG_DST_BASE && !(r->caps & INCMIG_CAP_BASE))
        next = INCMIG_DST_RECEIVING;
    r->state = next;
    return send_flow(r);
}

/* ---- restarting on the state file ------------------------------------------ */

static int kv_num(struct recv *r, const char *text, const char *key,
                  uint64_t max, uint64_t *v_r)
{
    return incmig__kv_num(r->owed.path, text, key, max, v_r);
}

/* migrate-receive --resume: this receiver died after GO; its state file
 * says what it served and what is still owed.  The volumes are opened
 * again (never created), the gates armed with the owed set, the domain's
 * disks served again, and the receiver waits for the source (WAIT_LINK),
 * on the --listen address or --rendezvous socket it had. */
static int resume_state(struct recv *r)
{
    struct incmig__target_disk td[INCMIG_MAX_DISKS];
    char k[32], *text = NULL, msg[INCMIG_MSG_MAX] = "";
    uint64_t n, caps;
    int rc, bad = -1;

    memset(td, 0, sizeof td);
    rc = incmig__owed_resume(&r->owed, r->o->state_dir, "receive",
                             r->o->resume, r->mig_id, &text);
    if (rc)
        goto out;
    rc = INCMIG_EINVAL;
    if (incmig__kv_get(text, "domain", r->domain, sizeof r->domain) ||
        incmig__kv_get(text, "target", r->ro_target, sizeof r->ro_target) ||
        incmig__kv_get(text, "listen", r->ro_listen, sizeof r->ro_listen) ||
        incmig__kv_get(text, "rendezvous", r->ro_rv, sizeof r->ro_rv) ||
        kv_num(r, text, "caps", UINT64_MAX, &caps) ||
        kv_num(r, text, "exit_when_done", 1, &n))
        goto bad;
    r->caps = caps;
    r->ro.exit_when_done = (int)n;
    r->ro.target = r->ro_target;
    r->ro.listen = r->ro_listen[0] ? r->ro_listen : NULL;
    r->ro.rendezvous = r->ro_rv[0] ? r->ro_rv : NULL;
    if (!r->ro.reconnect_s && !kv_num(r, text, "reconnect", INT32_MAX, &n))
        r->ro.reconnect_s = (int)n;
    if (!r->ro.timeout_s && !kv_num(r, text, "timeout", INT32_MAX, &n))
        r->ro.timeout_s = (int)n;
    if (kv_num(r, text, "disks", (uint64_t)r->owed.nd, &n) ||
        (int)n != r->owed.nd)
        goto bad;
    r->nd = r->nrecs = (int)n;
    for (int i = 0; i < r->nd; i++) {
        uint64_t size, bs;
        snprintf(k, sizeof k, "disk%d.size", i);
        if (kv_num(r, text, k, INCMIG_DISK_MAX, &size))
            goto bad;
        snprintf(k, sizeof k, "disk%d.bs", i);
        if (kv_num(r, text, k, INCMIG_BS_MAX, &bs) ||
            !incmig__block_size_valid(bs) ||
            (size + bs - 1) / bs != r->owed.nblocks[i])
            goto bad;
        td[i].size = r->recs[i].size = size;
        td[i].block_size = r->recs[i].block_size = (uint32_t)bs;
        r->recs[i].index = (uint32_t)i;
        snprintf(k, sizeof k, "disk%d.name", i);
        if (incmig__kv_get(text, k, td[i].name, sizeof td[i].name))
            goto bad;
        snprintf(r->recs[i].name, sizeof r->recs[i].name, "%s", td[i].name);
        snprintf(k, sizeof k, "disk%d.path", i);
        if (incmig__kv_get(text, k, td[i].path, sizeof td[i].path))
            goto bad;
        snprintf(k, sizeof k, "disk%d.nbd", i);
        if (incmig__kv_get(text, k, td[i].nbd_uri, sizeof td[i].nbd_uri))
            goto bad;
    }
    r->kind = incmig__target_find(r->ro.target);
    if (!r->kind)
        goto out;
    rc = r->kind->open(&r->t, r->domain, r->nd, td, &bad, msg, sizeof msg);
    if (rc) {
        ERR("%s", msg);
        goto out;
    }
    if (!r->t->ops->reopen) {
        ERR("the %s target cannot restart a PULL after a crash yet",
            r->kind->name);
        rc = INCMIG_ENOTSUP;
        goto out;
    }
    for (int i = 0; i < r->nd && !rc; i++) {
        struct rdisk *d = &r->d[i];
        d->bs = td[i].block_size;
        d->nblocks = r->owed.nblocks[i];
        d->bm_next = d->nblocks;
        rc = r->t->ops->reopen(r->t, i, &d->disk);
        if (!rc)
            rc = incmig__bitmap_init(&d->final, d->nblocks);
        if (!rc)
            rc = incmig__owed_get(&r->owed, i, &d->final);
        if (!rc)
            rc = incmig__gate_new(&d->gate, d->disk, (uint32_t)i, d->bs,
                                  request_blocks, r);
        if (!rc)
            rc = incmig__gate_mark_missing(d->gate, &d->final);
        if (!rc) {
            r->owed.vol[i] = d->disk;
            incmig__gate_set_owed(d->gate, &r->owed);
            rc = r->t->ops->stage(r->t, i, d->gate);
        }
    }
    if (!rc)
        rc = r->t->ops->unpause(r->t);
    if (rc)
        goto out;
    if (r->ro.listen)
        rc = incmig__tcp_listen(r->ro.listen, &r->lfd);
    else if (r->ro.rendezvous) {
        rc = incmig_rendezvous_path(r->ro.rendezvous, r->rv_path,
                                    sizeof r->rv_path);
        if (!rc)
            rc = incmig__unix_listen(r->rv_path, &r->lfd);
    }
    if (rc)
        goto out;
    r->t_go = incmig__now();
    r->state = INCMIG_DST_PULL;
    INFO("domain %s: restarted on %s, %" PRIu64 " blocks still owed by the "
         "source; its disks are served again", r->domain, r->owed.path,
         incmig__owed_count(&r->owed));
    goto out;
bad:
    ERR("state file %s: missing or malformed fields", r->owed.path);
    rc = INCMIG_EINVAL;
out:
    free(text);
    return rc;
}

/* ---- link ----------------------------------------------------------------- */

static void set_deadlines(struct recv *r);

static int open_stream(struct recv *r, int in_fd, int out_fd)
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
static int accept_source(struct recv *r, double end, int *fd_r)
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
static int recv_record(struct recv *r, struct incmig__rec *rec)
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
static int relink(struct recv *r)
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
        rc = accept_source(r, incmig__now() + (left < 1 ? left : 1), &fd);
        if (rc == INCMIG_ECANCEL)
            continue;
        if (rc)
            return rc;
        rc = open_stream(r, fd, fd);
        while (!rc && r->state != INCMIG_DST_PULL) {
            rc = recv_record(r, &rec);
            if (!rc)
                rc = dispatch(r, &rec);
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
static bool late_source(struct recv *r)
{
    struct incmig__rec rec;
    int fd, rc;

    struct pollfd p = { .fd = r->lfd, .events = POLLIN };

    if (r->lfd < 0 || poll(&p, 1, 100) <= 0 ||
        accept_source(r, incmig__now() + timeout_s(r), &fd))
        return false;
    r->state = INCMIG_DST_WAIT_LINK;
    rc = open_stream(r, fd, fd);
    while (!rc && r->state != INCMIG_DST_DONE) {
        rc = recv_record(r, &rec);
        if (!rc)
            rc = dispatch(r, &rec);
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

void incmig_receive_opts_init(struct incmig_receive_opts *o)
{
    memset(o, 0, sizeof *o);
}

void incmig_receive_opts_dispose(struct incmig_receive_opts *o)
{
    memset(o, 0, sizeof *o);
}

int incmig_receive(const struct incmig_receive_opts *o, int in_fd, int out_fd)
{
    struct recv r;
    struct incmig__rec rec;
    bool discard = false, complete = false;
    int rc;

    memset(&r, 0, sizeof r);
    r.ro = *o;
    r.o = o = &r.ro;
    r.lfd = -1;
    r.state_wfd = r.state_rfd = -1;
    r.state = INCMIG_DST_HELLO;
    incmig__owed_init(&r.owed);
    pthread_mutex_init(&r.slock, NULL);
    pthread_mutex_init(&r.rlock, NULL);
    r.zbuf = malloc(INCMIG_BLOCKS_MAX);
    r.ebuf = malloc(INCMIG_REC_MAX);
    if (!r.zbuf || !r.ebuf) {
        rc = INCMIG_ENOMEM;
        goto out;
    }
    if (o->resume) {
        rc = resume_state(&r);
        if (!rc && !incmig__owed_count(&r.owed)) {
            INFO("nothing is owed any more: the migration is complete");
            goto done;   /* a source that missed COMPLETE: late_source */
        }
        if (!rc)
            rc = relink(&r);
        if (rc)
            goto out;
        goto pull;
    }
    rc = incmig__volume_check_opts(o);
    if (rc)
        goto out;
    r.kind = incmig__target_find(o->target);
    if (!r.kind) {
        rc = INCMIG_EINVAL;
        goto out;
    }
    if (o->listen) {
        int fd;
        rc = incmig__tcp_listen(o->listen, &r.lfd);
        if (rc)
            goto out;
        INFO("waiting for the source on %s", o->listen);
        rc = accept_source(&r, 0, &fd);
        if (rc == INCMIG_ECANCEL)
            ERR("stopped while waiting for the source");
        if (rc)
            goto out;
        in_fd = out_fd = fd;
    }
    if (!o->listen && o->rendezvous) {
        rc = incmig_rendezvous_path(o->rendezvous, r.rv_path,
                                    sizeof r.rv_path);
        if (!rc)
            rc = incmig__unix_listen(r.rv_path, &r.lfd);
        if (rc)
            goto out;
    }
    pthread_mutex_lock(&r.slock);
    r.link_ok = true;
    pthread_mutex_unlock(&r.slock);
    rc = open_stream(&r, in_fd, out_fd);
    if (rc)
        goto failed_discard;

pull:
    while (r.state != INCMIG_DST_DONE) {
        rc = recv_record(&r, &rec);
        if (!rc)
            rc = dispatch(&r, &rec);
        if (!rc)
            continue;
        if (r.state != INCMIG_DST_PULL)
            goto failed_discard;
        if (r.complete_sent && (rc == INCMIG_ELINK || rc == INCMIG_ECANCEL))
            break;     /* the source has what it needs: done */
        if (rc == INCMIG_ECANCEL)
            ERR("stopped during PULL");
        if (rc != INCMIG_ELINK)
            goto out;
        rc = relink(&r);
        if (rc == INCMIG_ECANCEL)
            ERR("stopped while waiting for the source to reconnect");
        if (rc)
            goto out;
    }
done:
    complete = true;
    INFO("migration complete; %s", o->exit_when_done
         ? "serving the domain until it is done with this receiver"
         : "serving the domain until stopped");
    pthread_mutex_lock(&r.slock);
    r.link_ok = false;
    if (r.st_open)
        incmig__stream_dispose(&r.st);
    r.st_open = false;
    pthread_mutex_unlock(&r.slock);
    /* keep serving the domain: this process is its disk now */
    double idle_since = incmig__now();
    while (!incmig__stop_requested) {
        if (r.lfd < 0 || !late_source(&r))
            usleep(100 * 1000);
        if (r.t->ops->in_use(r.t) > 0)
            idle_since = incmig__now();
        else if (o->exit_when_done && incmig__now() - idle_since > 1.0)
            break;
    }
    rc = 0;
    goto out;

failed_discard:
    /* A stop seen here, or inside a read of the stream: said once. */
    if (rc == INCMIG_ECANCEL)
        ERR("stopped before the point of no return: the guest stays on the "
            "source");
    if (rc == INCMIG_ELINK)
        ERR("connection to the source lost before the point of no return");
    else if (rc != INCMIG_EPEER && !r.error_sent)
        send_error(&r, rc, "receiver failed: %s", incmig_strerror(rc));
    for (int i = 0; i < r.nd; i++)
        if (r.d[i].q)
            drain_disk(&r.d[i]);
    keep_claims(&r);
    discard = true;
out:
    if (!discard && !complete && r.owed.go && r.state >= INCMIG_DST_PULL)
        say_resume(&r);
    finish_restore(&r);
    for (int i = 0; i < (int)INCMIG_MAX_DISKS; i++)
        if (r.d[i].gate)
            incmig__gate_abort(r.d[i].gate);
    if (r.t)
        r.t->ops->stop(r.t);
    pthread_mutex_lock(&r.slock);
    r.link_ok = false;
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
        incmig__lineage_dispose(&d->lin);
    }
    if (r.t) {
        if (discard)
            r.t->ops->abort(r.t);
        r.t->ops->close(r.t);
    }
    incmig__owed_close(&r.owed, discard || complete);
    if (r.state_rfd >= 0)
        close(r.state_rfd);
    if (r.lfd >= 0) {
        close(r.lfd);
        if (r.rv_path[0])
            unlink(r.rv_path);
    }
    free(r.zbuf);
    free(r.ebuf);
    pthread_mutex_destroy(&r.rlock);
    pthread_mutex_destroy(&r.slock);
    return rc;
}
