/* receive-handshake.c: the receiver's handshake, before any block (spec
 * "Destination states": HELLO, DISKS, BASE).
 *
 * Entry points, handlers of dst_table (receive.c):
 *   incmig__recv_on_hello   HELLO, the first one or the first on a
 *                           reconnection: capabilities negotiated, HELLO
 *                           back
 *   incmig__recv_on_disk    DISK; after the last one every disk is
 *                           validated, then created or reused, staged and
 *                           acked, then reported (BASE) (take_disks)
 *   incmig__recv_on_decide  DECIDE, each disk's round 0; after the last
 *                           one, the checksums of the CHECKSUM disks
 *
 * Data: r->recs (the DISK records) and, per disk, r->d[i] set up here:
 * its volume, its PUSH writer, its gate, a reused copy's claim (lin);
 * take_disks also prepares the state file (receive-owed.c) and starts
 * the restore thread (receive-data.c).
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "receive-internal.h"

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
int incmig__recv_on_hello(struct recv *r, const struct incmig__rec *rec)
{
    struct incmig__hello h;
    int rc;

    rc = incmig__dec_hello(rec, &h);
    if (rc)
        return rc;
    if (h.role != 0)
        return incmig__recv_send_error(r, INCMIG_EPROTO,
                                       "the peer is not a source");
    if (r->state == INCMIG_DST_WAIT_LINK) {
        if (memcmp(h.mig_id, r->mig_id, 16) || (int)h.ndisks != r->nd)
            return incmig__recv_send_error(r, INCMIG_EPEER, "a different "
                                           "migration tried to resume this "
                                           "one; refused");
        return send_hello(r, &h);
    }
    if (h.ndisks < 1 || h.ndisks > INCMIG_MAX_DISKS)
        return incmig__recv_send_error(r, INCMIG_ENOTSUP, "domain %s has %u "
                                       "disks; this receiver takes 1 to %u",
                                       h.name, h.ndisks, INCMIG_MAX_DISKS);
    uint64_t ours = INCMIG_CAP_ZLIB | INCMIG_CAP_ZSTD | INCMIG_CAP_RESUME |
                    INCMIG_CAP_BASE | INCMIG_CAP_FLOW |
                    (r->kind->state ? INCMIG_CAP_STATE : 0);
    r->caps = h.caps & ours;
    if (r->kind->state_required && !(r->caps & INCMIG_CAP_STATE))
        return incmig__recv_send_error(r, INCMIG_ENOTSUP, "domain %s: the %s "
                                       "target restores the domain from its "
                                       "state stream and the source offers "
                                       "none", h.name, r->kind->name);
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
            return incmig__recv_send_error(r, rc, "disk %s: cannot read %s "
                                           "for its checksums: %s",
                                           r->recs[i].name, d->disk->path,
                                           incmig_strerror(rc));
        rc = incmig__stream_send(&r->st, INCMIG_REC_BASE, r->ebuf,
                                 (uint32_t)hl + 16 * b.count);
        first += b.count;
    }
    return rc;
}

int incmig__recv_on_decide(struct recv *r, const struct incmig__rec *rec)
{
    struct incmig__decide x;
    int rc = incmig__dec_decide(rec, &x);

    if (rc)
        return rc;
    if (x.index != (uint32_t)r->ndecided)
        return incmig__recv_send_error(r, INCMIG_EPROTO, "DECIDE for disk %u, "
                                       "expected disk %d", x.index,
                                       r->ndecided);
    if (x.mode != INCMIG_MODE_FULL && !r->d[x.index].lin.valid)
        return incmig__recv_send_error(r, INCMIG_EPROTO, "DECIDE %s for disk "
                                       "%s, of which this receiver holds no "
                                       "copy", incmig__mode_name(x.mode),
                                       r->recs[x.index].name);
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
                                      incmig__recv_request_blocks, r);
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
    rc = incmig__recv_prepare_state(r);
    if (rc)
        return rc;
    if (r->caps & INCMIG_CAP_STATE) {
        rc = incmig__recv_start_restore(r);
        if (rc)
            return incmig__recv_send_error(r, rc, "domain %s: cannot start "
                                           "its restore", r->domain);
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

int incmig__recv_on_disk(struct recv *r, const struct incmig__rec *rec)
{
    struct incmig__disk_rec *dr = &r->recs[r->nrecs];
    int rc;

    rc = incmig__dec_disk(rec, dr);
    if (rc)
        return rc;
    if (dr->index != (uint32_t)r->nrecs)
        return incmig__recv_send_error(r, INCMIG_EPROTO, "DISK record for "
                                       "disk %u, expected disk %d", dr->index,
                                       r->nrecs);
    if (++r->nrecs < r->nd)
        return STAY;
    return take_disks(r);
}
