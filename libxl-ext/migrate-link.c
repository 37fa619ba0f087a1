/* migrate-link.c: the source's link to the receiver, and the handshake.
 *
 * Entry points (migrate-internal.h): incmig__mig_open_link connects (ssh,
 * TCP, or TCP with TLS), exchanges the stream headers and HELLO and
 * settles the capabilities and compression; a resume reattaches through
 * the attach command.  incmig__mig_close_link undoes it.
 * incmig__mig_recv_expect reads the next record, checked against the
 * state, and turns an ERROR from the receiver into its code;
 * incmig__mig_peer_reason looks for that ERROR after a failed send;
 * incmig__mig_send_error sends ours.  The DISKS state:
 * incmig__mig_send_disks (DISK / DISK_ACK), then for an incremental
 * migration incmig__mig_read_lineage and incmig__mig_base_exchange (BASE
 * reports, DECIDE, checksums; base.c decides).  Data: struct mig's stream
 * and ssh child, each struct mdisk's sender and struct incmig__base_src.
 */
#include "config.h"

#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "migrate-internal.h"

/* ---- connection ---------------------------------------------------------- */

void incmig__mig_close_link(struct mig *m)
{
    if (m->st_open) {
        incmig__stream_dispose(&m->st);
        m->st_open = false;
    }
    if (m->ssh_pid > 0) {
        int status;
        kill(m->ssh_pid, SIGTERM);
        waitpid(m->ssh_pid, &status, 0);
        m->ssh_pid = 0;
    }
}


/* TLS to the receiver, checking its certificate against the host we
 * connect to (HOST of HOST:PORT, without IPv6 brackets). */
static int tls_client(const struct incmig_migrate_opts *o, int fd, int *fd_r)
{
    char host[256];
    const char *h = o->host, *colon = strrchr(h, ':');
    size_t n = colon ? (size_t)(colon - h) : strlen(h);

    if (n && h[0] == '[' && h[n - 1] == ']') {
        h++;
        n -= 2;
    }
    snprintf(host, sizeof host, "%.*s", (int)n, h);
    return incmig__tls_wrap(fd, false, host, o->host,
                            o->timeout_s > 0 ? o->timeout_s : 30, fd_r);
}

int incmig__mig_open_link(struct mig *m, bool quiet, bool resume)
{
    const struct incmig_migrate_opts *o = m->o;
    const char *ssh = o->ssh_command ? o->ssh_command : "ssh";
    int fd = -1, rc;
    uint64_t in = 0, out = 0;

    if (m->st_open) {   /* keep the byte counts across reconnects */
        in = m->st.bytes_in;
        out = m->st.bytes_out;
    }
    incmig__mig_close_link(m);
    if (*ssh) {
        const char *remote = o->remote_command ? o->remote_command
                                               : "xl-incmig migrate-receive";
        if (resume && !o->attach_command) {
            ERR("the ssh transport was given no way to reattach to the "
                "receiver (attach command)");
            return INCMIG_ENOTSUP;
        }
        if (resume)
            remote = o->attach_command;
        rc = incmig__ssh_spawn(ssh, o->host, remote, &fd, &m->ssh_pid);
    } else {
        rc = incmig__tcp_connect(o->host, &fd);
        if (rc == INCMIG_ELINK && !quiet)
            ERR("cannot connect to the receiver at %s: is `xl-incmig "
                "migrate-receive --listen %s` running there?", o->host,
                o->host);
        if (!rc && incmig__tls_on())
            rc = tls_client(o, fd, &fd);
    }
    if (rc)
        return rc;
    rc = incmig__stream_init(&m->st, fd, fd);
    if (rc) {
        close(fd);
        return rc;
    }
    m->st_open = true;
    m->st.bytes_in = in;
    m->st.bytes_out = out;
    pthread_mutex_lock(&m->lock);
    m->st.bandwidth = m->bandwidth;
    pthread_mutex_unlock(&m->lock);
    incmig__mig_set_state(m, resume ? INCMIG_SRC_RECONNECT
                                   : INCMIG_SRC_HANDSHAKE);
    rc = incmig__stream_send_header(&m->st);
    if (!rc)
        rc = incmig__stream_recv_header(&m->st);
    if (rc == INCMIG_ELINK && !*ssh && !incmig__tls_on())
        ERR("no stream header from the receiver at %s: if it requires "
            "TLS, give this side its --tls-psk or --tls-x509", o->host);
    if (rc)
        return rc;

    struct incmig__hello h = {
        .version = INCMIG_STREAM_VERSION, .role = 0,
        .caps = INCMIG_CAP_ZLIB | INCMIG_CAP_ZSTD | INCMIG_CAP_RESUME |
                INCMIG_CAP_FLOW |
                INCMIG_CAP_STATE | INCMIG_CAP_BASE,
        .ndisks = (uint32_t)m->nd,
    };
    memcpy(h.mig_id, m->mig_id, 16);
    snprintf(h.name, sizeof h.name, "%s", m->dom->name);
    int len = incmig__enc_hello(&h, m->buf);
    if (len < 0)
        return len;
    rc = incmig__stream_send(&m->st, INCMIG_REC_HELLO, m->buf, (uint32_t)len);
    if (rc)
        return rc;

    struct incmig__rec r;
    struct incmig__hello peer;
    rc = incmig__stream_recv(&m->st, &r);
    if (!rc && r.type != INCMIG_REC_ERROR)
        rc = incmig__mig_src_check(m, &r);
    if (rc)
        return rc;
    if (r.type == INCMIG_REC_ERROR) {
        struct incmig__error_rec e;
        if (!incmig__dec_error(&r, &e))
            ERR("receiver refused the migration: %s", e.msg);
        return INCMIG_EPEER;
    }
    if (r.type != INCMIG_REC_HELLO) {
        ERR("expected HELLO from the receiver, got %s", incmig__rec_name(r.type));
        return INCMIG_EPROTO;
    }
    rc = incmig__dec_hello(&r, &peer);
    if (rc)
        return rc;
    if (peer.role != 1) {
        ERR("the peer is not a receiver (role %u)", peer.role);
        return INCMIG_EPROTO;
    }
    /* Each side uses what both announced. */
    m->caps = h.caps & peer.caps;
    if (!(m->caps & INCMIG_CAP_STATE)) {
        ERR("the receiver cannot take the domain's state stream (an older "
            "incmig?); update it");
        return INCMIG_ENOTSUP;
    }
    /* zstd when both have it, zlib for an older receiver. */
    int mode = m->o->compress > 0 ? INCMIG_COMP_ALWAYS
             : m->o->compress < 0 ? INCMIG_COMP_OFF : INCMIG_COMP_AUTO;
    int enc = m->caps & INCMIG_CAP_ZSTD ? INCMIG_ENC_ZSTD : INCMIG_ENC_ZLIB;
    if (!(m->caps & (INCMIG_CAP_ZSTD | INCMIG_CAP_ZLIB))) {
        if (mode == INCMIG_COMP_ALWAYS && !resume)
            INFO("the receiver does not take compressed blocks: sending "
                 "them raw");
        mode = INCMIG_COMP_OFF;
    }
    for (int i = 0; i < m->nd; i++) {
        if (resume && m->d[i].snd.comp.mode == mode &&
            m->d[i].snd.comp.enc == enc)
            continue;   /* keep what was learnt about the link */
        rc = incmig__sender_compress(&m->d[i].snd, mode, enc);
        if (rc)
            return rc;
    }
    return 0;
}

void incmig__mig_send_error(struct mig *m, int code, const char *msg)
{
    struct incmig__error_rec e = { .code = code };
    snprintf(e.msg, sizeof e.msg, "%s", msg);
    int len = incmig__enc_error(&e, m->buf);
    if (m->st_open && len >= 0)
        incmig__stream_send(&m->st, INCMIG_REC_ERROR, m->buf, (uint32_t)len);
}

/* Read the next record, turning an ERROR from the peer into EPEER.  FLOW
 * records sent before the state stream ended are passed over in STOPCOPY. */
int incmig__mig_recv_expect(struct mig *m, struct incmig__rec *r, uint32_t type)
{
    int rc;
    do
        rc = incmig__mig_recv_checked(m, r);
    while (!rc && r->type == INCMIG_REC_FLOW &&
           m->sstate == INCMIG_SRC_STOPCOPY && type != INCMIG_REC_FLOW);
    if (rc)
        return rc;
    if (r->type == INCMIG_REC_ERROR) {
        struct incmig__error_rec e;
        if (!incmig__dec_error(r, &e)) {
            ERR("the receiver failed: %s", e.msg);
            return e.code < 0 && e.code >= INCMIG_ECANCEL ? e.code
                                                          : INCMIG_EPEER;
        }
        return INCMIG_EPROTO;
    }
    if (type && r->type != type) {
        ERR("expected %s from the receiver, got %s", incmig__rec_name(type),
            incmig__rec_name(r->type));
        return INCMIG_EPROTO;
    }
    return 0;
}

/* A send failed: the receiver may have said why before it closed (a full
 * disk, a bad record).  Read what is left for up to a second. */
int incmig__mig_peer_reason(struct mig *m, int rc)
{
    struct incmig__rec r;
    struct pollfd p = { .fd = m->st.rfd, .events = POLLIN };
    double end = incmig__now() + 1.0;

    while (incmig__now() < end && poll(&p, 1, 200) > 0) {
        if (incmig__stream_recv(&m->st, &r))
            break;
        if (r.type == INCMIG_REC_ERROR) {
            struct incmig__error_rec e;
            if (incmig__dec_error(&r, &e))
                break;
            ERR("the receiver failed: %s", e.msg);
            return e.code < 0 && e.code >= INCMIG_ECANCEL ? e.code
                                                          : INCMIG_EPEER;
        }
    }
    return rc;
}

int incmig__mig_send_disks(struct mig *m)
{
    int rc = 0;

    for (int i = 0; i < m->nd && !rc; i++) {
        struct incmig__dom_disk *dd = &m->dom->disks[i];
        struct incmig__disk_rec d = {
            .index = (uint32_t)i, .block_size = dd->block_size,
            .size = dd->size,
        };
        memcpy(d.lineage, m->d[i].base.gen, 16);
        snprintf(d.name, sizeof d.name, "%s", dd->name);
        int len = incmig__enc_disk(&d, m->buf);
        rc = len < 0 ? len
                     : incmig__stream_send(&m->st, INCMIG_REC_DISK, m->buf,
                                           (uint32_t)len);
    }
    for (int i = 0; i < m->nd && !rc; i++) {
        struct incmig__rec r;
        struct incmig__disk_ack a;
        rc = incmig__mig_recv_expect(m, &r, INCMIG_REC_DISK_ACK);
        if (!rc)
            rc = incmig__dec_disk_ack(&r, &a);
        if (!rc && (a.index != (uint32_t)i)) {
            ERR("receiver acknowledged disk %u, expected %d", a.index, i);
            rc = INCMIG_EPROTO;
        }
        if (!rc && a.status) {
            ERR("the receiver cannot take disk %d (%s): %s", i,
                m->dom->disks[i].name, a.msg);
            rc = a.status < 0 && a.status >= INCMIG_ECANCEL ? a.status
                                                            : INCMIG_EPEER;
        }
    }
    return rc;
}

/* ---- incremental migration (base.c) -------------------------------------- */

/* Before DISK: the trackers restart (what is written from now on goes to
 * round 1 or later), then each disk's lineage is read from the backend. */
int incmig__mig_read_lineage(struct mig *m)
{
    uint64_t dirty;
    int rc = incmig__mig_get_dirty(m, &dirty);

    for (int i = 0; i < m->nd && !rc; i++) {
        struct incmig__base_src *b = &m->d[i].base;
        incmig__bitmap_clear_all(&m->d[i].dirty);
        b->name = m->dom->disks[i].name;
        b->disk = &m->d[i].disk;
        b->bs = m->d[i].bs;
        b->nblocks = m->d[i].nblocks;
        b->mode = INCMIG_MODE_FULL;
        snprintf(b->why, sizeof b->why, "the domain's backend keeps no "
                 "lineage");
        rc = incmig__bitmap_init(&b->mine, b->nblocks);
        if (!rc)
            rc = incmig__bitmap_init(&b->send, b->nblocks);
        if (!rc && m->dom->ops->lineage)
            rc = m->dom->ops->lineage(m->dom, i, b->gen, &b->has_bitmap,
                                      &b->mine, b->why, sizeof b->why);
    }
    return rc;
}

static int send_decide(struct mig *m, int i)
{
    struct incmig__base_src *b = &m->d[i].base;
    struct incmig__decide x = { .index = (uint32_t)i, .mode = (uint8_t)b->mode };
    snprintf(x.reason, sizeof x.reason, "%s", b->reason);
    int len = incmig__enc_decide(&x, m->buf);
    return len < 0 ? len : incmig__stream_send(&m->st, INCMIG_REC_DECIDE,
                                               m->buf, (uint32_t)len);
}

/* One BASE record of disk i and the kind expected. */
static int recv_base(struct mig *m, int i, uint8_t kind,
                     struct incmig__base_rec *b)
{
    struct incmig__rec r;
    int rc = incmig__mig_recv_expect(m, &r, INCMIG_REC_BASE);
    if (!rc)
        rc = incmig__dec_base(&r, b);
    if (!rc && (b->index != (uint32_t)i || b->kind != kind)) {
        ERR("expected the receiver's %s of disk %d",
            kind == INCMIG_BASE_REPORT ? "BASE report" : "checksums", i);
        rc = INCMIG_EPROTO;
    }
    return rc;
}

/* The decision of disk i, in the log and the report. */
static void note_decision(struct mig *m, int i, double t0)
{
    struct incmig__base_src *bs = &m->d[i].base;
    struct incmig_disk_report *dr = &m->rep->disks[i];

    snprintf(dr->base, sizeof dr->base, "%s", incmig__mode_name(bs->mode));
    snprintf(dr->base_reason, sizeof dr->base_reason, "%s", bs->reason);
    dr->base_blocks = bs->mode == INCMIG_MODE_FULL
                          ? 0 : incmig__bitmap_count(&bs->send);
    dr->base_s = incmig__now() - t0;
    INFO("disk %s: round 0 %s: %s", bs->name,
         bs->mode == INCMIG_MODE_FULL ? "copies the whole disk"
         : bs->mode == INCMIG_MODE_UNION ? "sends the union of both bitmaps"
         : "sends the blocks whose checksums differ", bs->reason);
    if (bs->mode != INCMIG_MODE_FULL)
        INFO("disk %s: %" PRIu64 " of %" PRIu64 " blocks to send (decided "
             "in %.3f s)", bs->name, dr->base_blocks, bs->nblocks,
             dr->base_s);
}

/* The destination's BASE reports, the decisions, then its checksums of
 * the CHECKSUM disks, compared with ours chunk by chunk as they come. */
int incmig__mig_base_exchange(struct mig *m)
{
    struct incmig__base_rec b;
    double t0 = incmig__now();
    bool cap = m->caps & INCMIG_CAP_BASE;
    int rc = 0;

    for (int i = 0; i < m->nd && !rc; i++) {
        struct incmig__base_src *bs = &m->d[i].base;
        if (!cap)
            snprintf(bs->reason, sizeof bs->reason, "the receiver does not "
                     "take incremental migrations");
        else if (!(rc = recv_base(m, i, INCMIG_BASE_REPORT, &b)))
            rc = incmig__base_decide(bs, &b);
    }
    for (int i = 0; i < m->nd && !rc && cap; i++)
        rc = send_decide(m, i);
    /* checksums take what reading the disk takes: a silence bound (as in
     * PUSH) instead of the handshake's deadline */
    m->st.deadline = 0;
    m->st.idle_s = 4 * (m->o->timeout_s > 0 ? m->o->timeout_s : 30);
    for (int i = 0; i < m->nd && !rc; i++) {
        struct incmig__base_src *bs = &m->d[i].base;
        while (!rc && bs->mode == INCMIG_MODE_CHECKSUM &&
               bs->sums_next < bs->nblocks)
            if (!(rc = recv_base(m, i, INCMIG_BASE_SUMS, &b)))
                rc = incmig__base_compare(bs, &b);
        if (!rc)
            note_decision(m, i, t0);
    }
    return rc;
}
