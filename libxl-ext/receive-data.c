/* receive-data.c: what the source sends before GO: PUSH and
 * stop-and-copy blocks, the stop-and-copy bitmaps, the domain's state
 * stream, then READY.
 *
 * Entry points, handlers of dst_table (receive.c):
 *   incmig__recv_on_blocks   BLOCKS of every phase (PULL's go through the
 *                            gate, receive-pull.c)
 *   incmig__recv_on_round, _on_state (XEN_STREAM), _on_suspend,
 *   _on_bitmap, _on_ready
 * and:
 *   incmig__recv_start_restore, _finish_restore  the restore thread
 *   incmig__recv_drain_disk   wait for a disk's queued writes
 *   incmig__recv_keep_claims  a failure before GO: reused copies keep
 *                             their claim
 *
 * Data: each struct rdisk's fl[] holds its PUSH writes in flight, by
 * libaio tag (len 0: a free slot); the state stream goes from the
 * XEN_STREAM bodies into a pipe (r->state_wfd) that the restore thread
 * reads (r->state_rfd); r->rlock guards what that thread reports.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <zlib.h>

#include "receive-internal.h"

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

int incmig__recv_start_restore(struct recv *r)
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
int incmig__recv_finish_restore(struct recv *r)
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

/* ---- data ----------------------------------------------------------------- */

/* Wait for every queued write of d (ends every overlap). */
int incmig__recv_drain_disk(struct rdisk *d)
{
    memset(d->fl, 0, sizeof d->fl);
    return incmig__aioq_drain(d->q);
}

static int drain(struct recv *r)
{
    int rc = 0;
    for (int i = 0; i < r->nd && !rc; i++) {
        rc = incmig__recv_drain_disk(&r->d[i]);
        if (rc)
            return incmig__recv_send_error(r, rc, "writing the destination "
                                           "volume %s failed: %s",
                                           r->d[i].disk->path,
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
        rc = incmig__recv_drain_disk(d);
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
        rc = incmig__recv_drain_disk(d);
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
        rc = incmig__recv_drain_disk(d);
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
        incmig__recv_send_error(r, rc, "writing block %" PRIu64 " of the "
                                "destination volume %s failed: %s",
                                off / d->bs, d->disk->path,
                                rc == INCMIG_ENOSPC
                                    ? "no space left on the destination"
                                    : incmig_strerror(rc));
    return rc;
}

int incmig__recv_on_blocks(struct recv *r, const struct incmig__rec *rec)
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
        return incmig__recv_send_error(r, INCMIG_EPROTO, "BLOCKS record for "
                                       "unknown disk %u", disk);
    struct rdisk *d = &r->d[disk];
    rc = incmig__dec_blocks(rec, d->bs, &b);
    if (rc)
        return rc;
    if (b.first >= d->nblocks || b.nblocks > d->nblocks - b.first)
        return incmig__recv_send_error(r, INCMIG_EPROTO, "BLOCKS record for "
                                       "blocks %" PRIu64 "+%u beyond disk "
                                       "%u's %" PRIu64 " blocks", b.first,
                                       b.nblocks, disk, d->nblocks);
    if (b.phase > INCMIG_PHASE_PULL_BACKGROUND ||
        !(phase_of[r->state] & (1u << b.phase)))
        return incmig__recv_send_error(r, INCMIG_EPROTO, "BLOCKS record of "
                                       "phase %u in state %s", b.phase,
                                       incmig__dst_state_name(r->state));
    if ((b.enc == INCMIG_ENC_ZLIB && !(r->caps & INCMIG_CAP_ZLIB)) ||
        (b.enc == INCMIG_ENC_ZSTD && !(r->caps & INCMIG_CAP_ZSTD)))
        return incmig__recv_send_error(r, INCMIG_EPROTO, "compressed BLOCKS "
                                       "record but that compression was not "
                                       "negotiated");
    const uint8_t *data = b.data;
    size_t want = (size_t)b.nblocks * d->bs;
    if (b.enc == INCMIG_ENC_ZERO) {
        data = NULL;
    } else if (b.enc == INCMIG_ENC_ZLIB) {
        uLongf out = want;
        if (uncompress(r->zbuf, &out, b.data, b.len) != Z_OK || out != want)
            return incmig__recv_send_error(r, INCMIG_EPROTO, "BLOCKS record "
                                           "for blocks %" PRIu64 "+%u of disk "
                                           "%u: bad compressed data", b.first,
                                           b.nblocks, disk);
        data = r->zbuf;
    } else if (b.enc == INCMIG_ENC_ZSTD) {
        if (incmig__zstd_decode(r->zbuf, want, b.data, b.len))
            return incmig__recv_send_error(r, INCMIG_EPROTO, "BLOCKS record "
                                           "for blocks %" PRIu64 "+%u of disk "
                                           "%u: bad zstd data", b.first,
                                           b.nblocks, disk);
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
        return incmig__recv_send_error(r, rc, "writing pulled blocks %" PRIu64
                                       "+%u of %s failed: %s", b.first,
                                       b.nblocks, d->disk->path,
                                       incmig_strerror(rc));
    incmig__recv_maybe_complete(r);
    return 0;
}

/* Echo a ROUND once it is on disk: the source waits for the echo of its
 * last round before pausing the guest, so that the downtime does not
 * include catching up with data in flight. */
int incmig__recv_on_round(struct recv *r, const struct incmig__rec *rec)
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
int incmig__recv_on_state(struct recv *r, const struct incmig__rec *rec)
{
    int rc;

    if (!(r->caps & INCMIG_CAP_STATE))
        return incmig__recv_send_error(r, INCMIG_EPROTO, "XEN_STREAM record, "
                                       "but no state stream was negotiated "
                                       "(INCMIG_CAP_STATE)");
    if (r->state_ended)
        return incmig__recv_send_error(r, INCMIG_EPROTO, "XEN_STREAM record "
                                       "after the end of the state stream");
    rc = restore_failed(r);
    if (rc)
        return incmig__recv_send_msg(r, rc, r->t->msg);
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
            return incmig__recv_send_error(r, INCMIG_EIO, "domain %s: cannot "
                                           "pass its state stream on to the "
                                           "restore: %s", r->domain,
                                           strerror(errno));
        off += (uint32_t)n;
    }
    r->state_bytes += rec->len;
    return 0;
}

int incmig__recv_on_suspend(struct recv *r, const struct incmig__rec *rec)
{
    int rc = incmig__dec_empty(rec);

    if (rc)
        return rc;
    if ((r->caps & INCMIG_CAP_STATE) && !r->state_ended)
        return incmig__recv_send_error(r, INCMIG_EPROTO, "SUSPEND before the "
                                       "end of the state stream");
    double t0 = incmig__now();
    int inq = 0;
    ioctl(r->st.rfd, FIONREAD, &inq);
    rc = drain(r);
    DBG("SUSPEND: %d bytes queued behind it; writes in flight drained in "
        "%.1f ms", inq, (incmig__now() - t0) * 1000);
    return rc;
}

int incmig__recv_on_bitmap(struct recv *r, const struct incmig__rec *rec)
{
    struct incmig__bitmap_rec br;
    int rc;

    rc = incmig__dec_bitmap(rec, &br);
    if (rc)
        return rc;
    if (br.disk >= (uint32_t)r->nd || br.phase != INCMIG_PHASE_STOPCOPY)
        return incmig__recv_send_error(r, INCMIG_EPROTO, "BITMAP record for "
                                       "disk %u, phase %u: not a "
                                       "stop-and-copy bitmap of this "
                                       "migration", br.disk, br.phase);
    struct rdisk *d = &r->d[br.disk];
    if (br.first != d->bm_next || br.nbits > d->nblocks - d->bm_next)
        return incmig__recv_send_error(r, INCMIG_EPROTO, "BITMAP chunk of "
                                       "disk %u for bits %" PRIu64 "+%" PRIu64
                                       ": expected the chunk at bit %" PRIu64
                                       " of %" PRIu64 " (chunks are "
                                       "contiguous, in order, within the "
                                       "disk)", br.disk, br.first, br.nbits,
                                       d->bm_next, d->nblocks);
    rc = incmig__bitmap_decode(&d->final, br.first, br.nbits, br.data,
                               br.len);
    if (rc)
        return incmig__recv_send_error(r, rc, "BITMAP chunk of disk %u at bit "
                                       "%" PRIu64 " is malformed", br.disk,
                                       br.first);
    d->bm_next += br.nbits;
    return 0;
}

/* The source's READY: the stop-and-copy data is complete.  Answer READY
 * only once every bitmap covered its disk and the domain is restored. */
int incmig__recv_on_ready(struct recv *r, const struct incmig__rec *rec)
{
    int rc = incmig__dec_empty(rec);

    if (rc)
        return rc;
    for (int i = 0; i < r->nd; i++)
        if (r->d[i].bm_next != r->d[i].nblocks)
            return incmig__recv_send_error(r, INCMIG_EPROTO, "READY before "
                                           "the stop-and-copy bitmap of disk "
                                           "%s was complete (%" PRIu64 " of %"
                                           PRIu64 " blocks)", r->recs[i].name,
                                           r->d[i].bm_next, r->d[i].nblocks);
    double t0 = incmig__now();
    if (r->caps & INCMIG_CAP_STATE) {
        rc = incmig__recv_finish_restore(r);
        if (rc)
            return incmig__recv_send_msg(r, rc, r->t->msg);
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
        rc = incmig__recv_arm_state(r);
    if (!rc)
        rc = incmig__stream_send(&r->st, INCMIG_REC_READY, NULL, 0);
    return rc;
}

/* A failure before GO: each reused copy still descends from its
 * generation, with the blocks this migration wrote into it added to its
 * bitmap (write_push), so a retry is still incremental. */
void incmig__recv_keep_claims(struct recv *r)
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
