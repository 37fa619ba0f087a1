/* migrate.c: the source side of a migration (incmig_migrate).
 *
 * States, in order; "->fail" resumes the guest on the source, because
 * until GO the source is authoritative (ARCHITECTURE.md, failure rules):
 *
 *   CONNECT    transport up, headers + HELLO both ways       ->fail
 *   DISKS      DISK per disk, DISK_ACK per disk; with
 *              INCMIG_CAP_BASE a BASE report per disk, the
 *              DECIDE per disk (base.c) and the destination's
 *              checksums of the CHECKSUM disks                ->fail
 *   PUSH       round 0 (allocated blocks), rounds of dirty
 *              blocks until the convergence policy stops      ->fail
 *   STOPCOPY   guest suspended; final bitmap (or, for the
 *              pre-copy-only policy, the blocks) then READY;
 *              wait for the destination's READY               ->fail
 *   COMMIT     domain told it will not resume; GO sent.
 *              --- point of no return ---
 *              The state file (owed.c), prepared after DISKS, is
 *              armed with the final bitmaps after our READY.
 *   PULL       background push of the marked blocks; demand
 *              requests answered first; PULL_END; wait for
 *              COMPLETE.  A lost link is re-established and
 *              resumed (RESUME), never abandoned, until
 *              reconnect_s passes; a stop request, or that,
 *              ends this process and keeps the state file and
 *              the source's disk: `migrate --resume` finishes  ->stuck
 *   RELEASE    source disk let go, END sent, state file
 *              removed, report.
 *
 * The owed set in the state file only shrinks when the destination
 * confirms durably, i.e. at COMPLETE (it is sent once the destination's
 * own state file says nothing is owed): a RESUME's bitmap is what the
 * destination lacks in memory, and a crash of it could bring back blocks
 * written but not yet durable there.  incmig_migrate with o->resume starts at PULL with a RESUME
 * on a new connection, from the state file of a migrate that died.
 *
 * Threads: the main thread sends everything.  With --control, a thread
 * answers the control socket (control.c) and changes the link's cap.  During PULL a reader thread
 * takes PULL_REQ, COMPLETE and ERROR records off the stream and queues
 * demand requests, which the main thread serves between background extents.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "incmig-internal.h"

#define DEMAND_QUEUE 1024
#define PULL_EXTENT (256u << 10)
/* Disk extents between state chunks: small, the state stream goes first. */
#define PULL_EXTENT_STATE (256u << 10)
/* With FLOW: smaller, since the extents read ahead go out past the window. */
#define PULL_EXTENT_FLOW (64u << 10)

struct mdisk {
    struct incmig__disk disk;
    struct incmig__sender snd;
    struct incmig__bitmap dirty;     /* PUSH round set, then final set */
    struct incmig__base_src base;    /* lineage and round 0's decision */
    uint32_t bs;
    uint64_t nblocks;
};

struct mig {
    const struct incmig_migrate_opts *o;
    struct incmig_report *rep;
    struct incmig__domain *dom;
    struct incmig__stream st;
    bool st_open;
    pid_t ssh_pid;
    uint8_t mig_id[16];
    int nd;
    struct mdisk d[INCMIG_MAX_DISKS];
    uint8_t *buf;                    /* record encoding, INCMIG_REC_MAX */
    double t0;

    uint64_t caps;                   /* negotiated: INCMIG_CAP_* of both */
    int sstate;                      /* enum incmig__src_state */
    int state_rfd;                   /* the domain's state stream, or -1 */
    struct incmig__owed owed;        /* the state file, from COMMIT on */
    bool flow_on;                    /* INCMIG_CAP_FLOW, in STATE */
    struct incmig__flow flow;
    double flow_t;                   /* the last record read in STATE */
    struct incmig_migrate_opts ro;   /* resume: what the state file says */
    char *ro_text;                   /* resume: the state file's text */
    char ro_domain[4200], ro_host[1024], ro_ssh[4096], ro_attach[16384];
    char ro_shared[INCMIG_MAX_SHARED * 64];   /* "xvdb,xvdc" split */

    /* PULL, under lock */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t reader;
    bool reader_running;
    bool reader_done;          /* the reader left by itself */
    struct incmig__pull_req q[DEMAND_QUEUE];
    unsigned q_head, q_len;
    bool complete, link_down, report_done;
    int peer_rc;

    uint64_t bandwidth;              /* under lock: the cap now (0: none) */
    struct incmig__mctl *ctl;        /* the control socket, or NULL */
    bool yielding;                   /* under lock: PUSH's cap follows the
                                      * guest's I/O (yield.c) */
    struct incmig__yield y;
    bool background;                 /* under lock: no cap given, PUSH is
                                      * background I/O (background_io) */
    bool bg_io;                      /* main thread: PUSH reads at the IDLE
                                      * I/O class now */

    /* progress */
    double prog_last, prog_t;
    uint64_t prog_bytes;
    uint64_t prog_total, prog_base;
    const char *prog_what;
};

static void phase_add(struct mig *m, uint64_t *slot, uint64_t before)
{
    *slot += m->st.bytes_out + m->st.bytes_in - before;
}
static uint64_t wire_now(struct mig *m)
{
    return m->st.bytes_out + m->st.bytes_in;
}

/* ---- connection ---------------------------------------------------------- */

/* ---- the source state machine (spec: "Source states") ------------------ */

/* Which records from the destination each state accepts; anything else is
 * a protocol error ("unexpected X record in state S"), whatever the code
 * reading it expected.  ERROR is accepted everywhere (the migration
 * fails).  REPORT is optional (bit 31), indexed by REC_IDX. */
#define NTYPES (INCMIG_REC_FLOW + 2)
#define REC_IDX(t) ((t) == INCMIG_REC_REPORT ? INCMIG_REC_FLOW + 1 \
                    : (t) <= INCMIG_REC_FLOW ? (t) : NTYPES)
static const bool src_table[INCMIG_SRC_NSTATES][NTYPES] = {
    [INCMIG_SRC_HANDSHAKE] = { [INCMIG_REC_HELLO] = 1,
                               [INCMIG_REC_DISK_ACK] = 1,
                               [INCMIG_REC_BASE] = 1,
                               [INCMIG_REC_ERROR] = 1 },
    [INCMIG_SRC_PUSH] = { [INCMIG_REC_ROUND] = 1, [INCMIG_REC_ERROR] = 1 },
    [INCMIG_SRC_STATE] = { [INCMIG_REC_FLOW] = 1, [INCMIG_REC_ERROR] = 1 },
    [INCMIG_SRC_STOPCOPY] = { [INCMIG_REC_ROUND] = 1, [INCMIG_REC_READY] = 1,
                              [INCMIG_REC_FLOW] = 1, [INCMIG_REC_ERROR] = 1 },
    [INCMIG_SRC_PULL] = { [INCMIG_REC_PULL_REQ] = 1,
                          [INCMIG_REC_COMPLETE] = 1,
                          [REC_IDX(INCMIG_REC_REPORT)] = 1,
                          [INCMIG_REC_ERROR] = 1 },
    [INCMIG_SRC_RECONNECT] = { [INCMIG_REC_HELLO] = 1,
                               [INCMIG_REC_BITMAP] = 1,
                               [INCMIG_REC_READY] = 1,
                               [INCMIG_REC_ERROR] = 1 },
    [INCMIG_SRC_DONE] = { [INCMIG_REC_ERROR] = 1 },
    [INCMIG_SRC_FAILED] = { [INCMIG_REC_ERROR] = 1 },
};

const char *incmig__src_state_name(int state)
{
    static const char *names[INCMIG_SRC_NSTATES] = {
        "HANDSHAKE", "PUSH", "STATE", "STOPCOPY", "PULL", "RECONNECT",
        "DONE", "FAILED_RESUME",
    };
    return state >= 0 && state < INCMIG_SRC_NSTATES ? names[state] : "?";
}

int incmig__src_accepts(int state, uint32_t type)
{
    uint32_t i = REC_IDX(type);
    if (state < 0 || state >= INCMIG_SRC_NSTATES || i >= NTYPES ||
        !src_table[state][i])
        return INCMIG_EPROTO;
    return 0;
}

/* Deadlines for the state: the handshake must be done within timeout_s;
 * before GO neither side may stall the other for 4 * timeout_s (the
 * destination restores the domain before its READY); in PULL the
 * destination may be quiet for long (no guest reads of missing blocks)
 * while the background push runs, so no silence bound applies there.  A
 * stop request cancels reads before GO, and is noted in PULL, which
 * completes first. */
/* Without a cap PUSH is background I/O: its reads go at the IDLE I/O
 * class, so the block layer serves the guest's own requests first (also
 * where the backend reports no I/O to yield to, as on Xen, where the
 * guest's requests are blkback's); a cap, --bandwidth max and PULL go at
 * the normal class.  Main thread (it submits the reads). */
static void background_io(struct mig *m, bool on)
{
    if (m->bg_io == on)
        return;
    m->bg_io = on;
    for (int i = 0; i < m->nd; i++)
        if (m->d[i].snd.q)
            incmig__aioq_set_idle(m->d[i].snd.q, on);
}

static void set_state(struct mig *m, int state)
{
    double t = m->o->timeout_s > 0 ? m->o->timeout_s : 30;

    m->sstate = state;
    if (state != INCMIG_SRC_PUSH) {   /* yielding is for PUSH rounds */
        pthread_mutex_lock(&m->lock);
        if (m->yielding && m->st_open)
            incmig__stream_set_bandwidth(&m->st, m->bandwidth);
        pthread_mutex_unlock(&m->lock);
    }
    pthread_mutex_lock(&m->lock);
    bool bg = m->background;
    pthread_mutex_unlock(&m->lock);
    background_io(m, bg && state == INCMIG_SRC_PUSH);
    if (!m->st_open)
        return;
    m->st.deadline = state == INCMIG_SRC_HANDSHAKE ||
                     state == INCMIG_SRC_RECONNECT ? incmig__now() + t : 0;
    m->st.idle_s = state == INCMIG_SRC_PUSH || state == INCMIG_SRC_STATE ||
                   state == INCMIG_SRC_STOPCOPY ? 4 * t : 0;
    m->st.stop_cancels = state < INCMIG_SRC_PULL;
}

/* Every record read from the destination goes through here. */
static int src_check(struct mig *m, const struct incmig__rec *r)
{
    if (incmig__src_accepts(m->sstate, r->type) == 0)
        return 0;
    ERR("unexpected %s record from the receiver in state %s",
        incmig__rec_name(r->type), incmig__src_state_name(m->sstate));
    return INCMIG_EPROTO;
}

static int recv_checked(struct mig *m, struct incmig__rec *r)
{
    int rc = incmig__stream_recv(&m->st, r);
    return rc ? rc : src_check(m, r);
}

static void close_link(struct mig *m)
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

static int open_link(struct mig *m, bool quiet, bool resume)
{
    const struct incmig_migrate_opts *o = m->o;
    const char *ssh = o->ssh_command ? o->ssh_command : "ssh";
    int fd = -1, rc;
    uint64_t in = 0, out = 0;

    if (m->st_open) {   /* keep the byte counts across reconnects */
        in = m->st.bytes_in;
        out = m->st.bytes_out;
    }
    close_link(m);
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
    set_state(m, resume ? INCMIG_SRC_RECONNECT : INCMIG_SRC_HANDSHAKE);
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
        rc = src_check(m, &r);
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

static void send_error(struct mig *m, int code, const char *msg)
{
    struct incmig__error_rec e = { .code = code };
    snprintf(e.msg, sizeof e.msg, "%s", msg);
    int len = incmig__enc_error(&e, m->buf);
    if (m->st_open && len >= 0)
        incmig__stream_send(&m->st, INCMIG_REC_ERROR, m->buf, (uint32_t)len);
}

/* Read the next record, turning an ERROR from the peer into EPEER.  FLOW
 * records sent before the state stream ended are passed over in STOPCOPY. */
static int recv_expect(struct mig *m, struct incmig__rec *r, uint32_t type)
{
    int rc;
    do
        rc = recv_checked(m, r);
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
static int peer_reason(struct mig *m, int rc)
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

static int send_disks(struct mig *m)
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
        rc = recv_expect(m, &r, INCMIG_REC_DISK_ACK);
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

static int get_dirty(struct mig *m, uint64_t *total_r);

/* Before DISK: the trackers restart (what is written from now on goes to
 * round 1 or later), then each disk's lineage is read from the backend. */
static int read_lineage(struct mig *m)
{
    uint64_t dirty;
    int rc = get_dirty(m, &dirty);

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

/* The destination's BASE reports, the decisions, then its checksums of
 * the CHECKSUM disks, compared with ours block by block as they come. */
/* One BASE record of disk i and the kind expected. */
static int recv_base(struct mig *m, int i, uint8_t kind,
                     struct incmig__base_rec *b)
{
    struct incmig__rec r;
    int rc = recv_expect(m, &r, INCMIG_REC_BASE);
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
static int base_exchange(struct mig *m)
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

/* ---- progress ------------------------------------------------------------ */

/* The guest's I/O cannot be read (the backend said why): PUSH goes on
 * uncapped rather than fail a migration for want of a courtesy. */
static int yield_off(struct mig *m)
{
    ERR("warning: PUSH no longer yields to the guest: its I/O statistics cannot be "
         "read; PUSH runs uncapped (--bandwidth sets a cap)");
    pthread_mutex_lock(&m->lock);
    m->yielding = false;
    if (m->st_open)
        incmig__stream_set_bandwidth(&m->st, m->bandwidth);
    pthread_mutex_unlock(&m->lock);
    return 0;
}

/* PUSH yielding: the guest's I/O since the last window sets the cap. */
static int yield_poll(struct mig *m, double now)
{
    uint64_t reqs;
    double busy;
    int rc;

    if (m->sstate != INCMIG_SRC_PUSH || (m->y.have && now - m->y.t < 0.1))
        return 0;
    rc = m->dom->ops->activity(m->dom, &reqs, &busy);
    if (rc)
        return yield_off(m);
    uint64_t cap = incmig__yield_step(&m->y, now, reqs, busy);
    if (m->y.probe_due) {
        /* The guest alone for a window: PUSH sends nothing meanwhile. */
        uint64_t reqs1;
        double busy1, t1;
        usleep(100000);
        rc = m->dom->ops->activity(m->dom, &reqs1, &busy1);
        if (rc)
            return yield_off(m);
        t1 = incmig__now();
        incmig__yield_probe(&m->y, now, reqs, busy, t1, reqs1, busy1);
        DBG("PUSH yielding: the guest's latency alone %.3f ms, cap %.1f "
            "MB/s", m->y.base * 1000, cap / 1e6);
    }
    pthread_mutex_lock(&m->lock);
    if (m->yielding)
        incmig__stream_set_bandwidth(&m->st, cap);
    pthread_mutex_unlock(&m->lock);
    return 0;
}

static int progress_poll(void *opaque)
{
    struct mig *m = opaque;
    double now = incmig__now();

    if (incmig__stop_requested && m->sstate < INCMIG_SRC_PULL) {
        ERR("stopped before the point of no return");
        return INCMIG_ECANCEL;
    }
    pthread_mutex_lock(&m->lock);
    bool yielding = m->yielding, bg = m->background;
    pthread_mutex_unlock(&m->lock);
    background_io(m, bg && m->sstate == INCMIG_SRC_PUSH);
    if (yielding) {
        int rc = yield_poll(m, now);
        if (rc)
            return rc;
    }
    if (!m->o->progress || now - m->prog_last < 0.5)
        return 0;
    /* The rate over the last interval, so a new cap shows at once. */
    double el = now - m->prog_t;
    double rate = m->prog_t > 0 && el > 0
                      ? (double)(m->st.bytes_out - m->prog_bytes) / el : 0;
    m->prog_last = m->prog_t = now;
    m->prog_bytes = m->st.bytes_out;
    uint64_t done = 0;
    for (int i = 0; i < m->nd; i++)
        done += m->d[i].snd.blocks * m->d[i].bs;
    done -= m->prog_base;
    double eta = rate > 0 && m->prog_total > done
                     ? (double)(m->prog_total - done) / rate : 0;
    pthread_mutex_lock(&m->lock);
    uint64_t cap = m->bandwidth;
    pthread_mutex_unlock(&m->lock);
    char capbuf[48];
    if (yielding && m->y.out)
        snprintf(capbuf, sizeof capbuf, "yielding to the guest: %.1f MB/s",
                 m->y.out / 1e6);
    else if (yielding)
        snprintf(capbuf, sizeof capbuf, "guest idle: no cap");
    else if (cap)
        snprintf(capbuf, sizeof capbuf, "cap %.1f MB/s", cap / 1e6);
    else
        snprintf(capbuf, sizeof capbuf, "no cap");
    fprintf(stderr, "\r%s: %" PRIu64 "/%" PRIu64 " MiB  %.1f MB/s (%s)  "
            "ETA %.0fs   ", m->prog_what, done >> 20, m->prog_total >> 20,
            rate / 1e6, capbuf, eta);
    return 0;
}

/* The control socket's BANDWIDTH request (control thread). */
static int set_bandwidth(void *opaque, uint64_t bw, uint64_t *sent_r)
{
    struct mig *m = opaque;

    pthread_mutex_lock(&m->lock);
    m->bandwidth = bw;
    m->yielding = false;   /* the operator's cap rules from now on */
    m->background = false;
    incmig__stream_set_bandwidth(&m->st, bw);
    *sent_r = m->st.bytes_out;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

static void progress_begin(struct mig *m, const char *what, uint64_t total)
{
    m->prog_what = what;
    m->prog_total = total;
    m->prog_base = 0;
    for (int i = 0; i < m->nd; i++)
        m->prog_base += m->d[i].snd.blocks * m->d[i].bs;
}

static void progress_end(struct mig *m)
{
    if (m->o->progress && m->prog_last > 0) {
        fprintf(stderr, "\r%*s\r", 70, "");
        m->prog_last = 0;
    }
}

/* ---- PUSH ---------------------------------------------------------------- */

static int get_dirty(struct mig *m, uint64_t *total_r)
{
    uint64_t total = 0;
    for (int i = 0; i < m->nd; i++) {
        int rc = m->dom->ops->get_and_clear(m->dom, i, &m->d[i].dirty);
        if (rc)
            return rc;
        total += incmig__bitmap_count(&m->d[i].dirty) * m->d[i].bs;
    }
    *total_r = total;
    return 0;
}

static int send_round(struct mig *m, uint32_t round, uint8_t phase,
                      uint64_t *blocks_r)
{
    uint64_t before = 0, after = 0;
    int rc = 0;

    for (int i = 0; i < m->nd; i++)
        before += m->d[i].snd.blocks;
    for (int i = 0; i < m->nd && !rc; i++)
        rc = incmig__send_bitmap(&m->d[i].snd, phase, &m->d[i].dirty,
                                 INCMIG_BLOCKS_MAX, progress_poll, m);
    progress_end(m);
    if (rc)
        return rc;
    for (int i = 0; i < m->nd; i++)
        after += m->d[i].snd.blocks;
    struct incmig__round x = { .round = round, .blocks = after - before };
    int len = incmig__enc_round(&x, m->buf);
    if (len < 0)
        return len;
    *blocks_r = after - before;
    return incmig__stream_send(&m->st, INCMIG_REC_ROUND, m->buf, (uint32_t)len);
}

/* Wait until the destination has written every round up to `last` (it
 * echoes each ROUND): what is still in flight is caught up with now, while
 * the guest runs, not in the downtime. */
static int wait_rounds(struct mig *m, uint32_t last)
{
    struct incmig__rec r;
    struct incmig__round x;
    double t = incmig__now();

    for (;;) {
        int rc = recv_expect(m, &r, INCMIG_REC_ROUND);
        if (!rc)
            rc = incmig__dec_round(&r, &x);
        if (rc)
            return rc;
        if (x.round == last)
            break;
    }
    DBG("destination caught up with round %u in %.1f ms", last,
        (incmig__now() - t) * 1000);
    return 0;
}

/* The rate PUSH's convergence test assumes for the pause: at least 1 MB/s
 * (a yielding PUSH measures less than the pause, which does not yield,
 * will get), but never above the operator's cap, which holds in the pause
 * too (a 1 MB/s floor under a 16 KiB/s cap declared 300 KiB "fits the
 * budget": 19 s of downtime). */
static double pause_rate(struct mig *m, double rate)
{
    pthread_mutex_lock(&m->lock);
    uint64_t cap = m->yielding ? 0 : m->bandwidth;
    pthread_mutex_unlock(&m->lock);
    if (rate < 1e6)
        rate = 1e6;
    if (cap && rate > (double)cap)
        rate = (double)cap;
    return rate;
}

static int push(struct mig *m)
{
    const struct incmig_migrate_opts *o = m->o;
    struct incmig_report *rep = m->rep;
    uint64_t dirty, alloc = 0, blocks, w0 = wire_now(m);
    int max_rounds = o->max_rounds > 0 ? o->max_rounds : 30;
    double budget = (o->downtime_ms ? o->downtime_ms : 300) / 1000.0;
    int rc;

    /* Round 0: every block written since the trackers restarted (before
     * DISK, read_lineage), and what the decision says: everything
     * allocated (FULL), or the blocks base.c found (UNION, CHECKSUM). */
    rc = get_dirty(m, &dirty);
    if (rc)
        return rc;
    for (int i = 0; i < m->nd; i++) {
        struct incmig__bitmap map = {0};
        rc = incmig__bitmap_init(&map, m->d[i].nblocks);
        if (!rc)
            rc = incmig__disk_alloc_map(&m->d[i].disk, m->d[i].bs, &map);
        if (!rc)
            rep->disks[i].allocated_blocks = incmig__bitmap_count(&map);
        if (!rc)
            rc = incmig__bitmap_merge(&m->d[i].dirty,
                                      m->d[i].base.mode == INCMIG_MODE_FULL
                                          ? &map : &m->d[i].base.send);
        incmig__bitmap_dispose(&map);
        if (rc)
            return rc;
        alloc += incmig__bitmap_count(&m->d[i].dirty) * m->d[i].bs;
    }
    INFO("PUSH round 0: %" PRIu64 " MiB", alloc >> 20);
    double t = incmig__now();
    progress_begin(m, "PUSH round 0", alloc);
    rc = send_round(m, 0, INCMIG_PHASE_PUSH, &blocks);
    if (rc)
        return rc;
    double el = incmig__now() - t;
    double rate = pause_rate(m, el > 0 ? (double)(wire_now(m) - w0) / el
                                       : 1e9);
    rep->push_rate = rate;
    int round = 1;
    uint64_t prev = UINT64_MAX;
    for (;; round++) {
        rc = get_dirty(m, &dirty);
        if (rc)
            return rc;
        double est = (double)dirty / rate;
        const char *why = NULL;
        if (o->policy == INCMIG_POLICY_SINGLE)
            why = "single-pass policy";
        else if (est <= budget)
            why = "remaining set fits the downtime budget";
        else if (round > max_rounds)
            why = "round limit reached";
        else if (round >= 3 && dirty >= prev - prev / 10)
            why = "dirty set no longer shrinking";
        if (why) {
            INFO("PUSH converged after %d round(s): %s (%" PRIu64
                 " KiB dirty, %.0f ms at %.1f %s)", round, why,
                 dirty >> 10, est * 1000, rate < 1e6 ? rate / 1e3 : rate / 1e6,
                 rate < 1e6 ? "kB/s" : "MB/s");
            break;
        }
        prev = dirty;
        DBG("PUSH round %d: %" PRIu64 " KiB dirty", round, dirty >> 10);
        t = incmig__now();
        uint64_t w = wire_now(m);
        progress_begin(m, "PUSH round", dirty);
        rc = send_round(m, (uint32_t)round, INCMIG_PHASE_PUSH, &blocks);
        if (rc)
            return rc;
        el = incmig__now() - t;
        if (el > 0.05)
            rate = pause_rate(m, (rate + (double)(wire_now(m) - w) / el) / 2);
    }
    for (int i = 0; i < m->nd; i++)
        rep->disks[i].rounds = round;
    return wait_rounds(m, (uint32_t)(round - 1));
}

/* ---- the domain's state stream ------------------------------------------- */

/* The backend writes the domain's state stream (libxl's, for Xen) on a pipe
 * from its own thread: memory pre-copy, then the pause, then the rest.
 * Meanwhile this thread frames what comes out of the pipe as XEN_STREAM
 * records, first in line, and between chunks keeps pushing the disk blocks
 * the guest dirties (the trackers stay on).  The stream ends with an empty
 * XEN_STREAM; by then the domain is paused, and t_paused says since when. */
#define STATE_CHUNK (256u << 10)
#define STATE_POLL_MS 50

struct suspender {
    struct mig *m;
    int wfd;
    int rc;
    double t_paused;
};

static void *suspend_main(void *opaque)
{
    struct suspender *sp = opaque;
    struct incmig__domain *dom = sp->m->dom;
    sp->rc = dom->ops->suspend(dom, sp->wfd, &sp->t_paused);
    close(sp->wfd);   /* EOF for the pump, whatever the backend did */
    sp->wfd = -1;
    return NULL;
}

/* With INCMIG_CAP_FLOW: take the FLOW records that are in (waiting up to
 * wait_ms for one), note what we wrote meanwhile; 1 when the window is
 * full (flow.c), 0 when we may write, or an error (an ERROR from the
 * destination, a FLOW out of bounds). */
static int flow_poll(struct mig *m, int wait_ms)
{
    struct pollfd p = { .fd = m->st.rfd, .events = POLLIN };
    struct incmig__rec r;
    uint64_t acted;
    int rc;

    if (!m->flow_on)
        return 0;
    incmig__flow_sent(&m->flow, m->st.bytes_out, incmig__now());
    while (poll(&p, 1, incmig__flow_open(&m->flow) ? 0 : wait_ms) > 0) {
        m->flow_t = incmig__now();
        rc = recv_expect(m, &r, INCMIG_REC_FLOW);
        if (!rc)
            rc = incmig__dec_flow(&r, &acted);
        if (!rc && incmig__flow_acked(&m->flow, acted, incmig__now())) {
            ERR("the receiver's FLOW says %" PRIu64 " octets acted on, of "
                "%" PRIu64 " sent, after %" PRIu64 ": out of bounds", acted,
                m->flow.sent, m->flow.last_flow);
            rc = INCMIG_EPROTO;
        }
        if (rc)
            return rc;
    }
    if (incmig__flow_open(&m->flow))
        return 0;
    if (m->st.idle_s > 0 && incmig__now() - m->flow_t >= m->st.idle_s) {
        ERR("no FLOW from the receiver for %.0f s with %" PRIu64 " octets "
            "in flight: the link is considered lost", m->st.idle_s,
            m->flow.sent - m->flow.acked);
        return INCMIG_ELINK;
    }
    return 1;
}

/* send_bitmap's poll callback: stop between extents when state is
 * waiting, or the window is full. */
static int state_waiting(void *opaque)
{
    struct mig *m = opaque;
    struct pollfd p = { .fd = m->state_rfd, .events = POLLIN };
    int rc = flow_poll(m, 0);
    if (rc)
        return rc;
    return poll(&p, 1, 0) > 0 ? 1 : 0;
}

static int pump_chunk(struct mig *m, uint8_t *buf, bool *eof)
{
    ssize_t n = read(m->state_rfd, buf, STATE_CHUNK);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return 0;
    if (n < 0) {
        LOGE("reading the domain's state stream");
        return INCMIG_EIO;
    }
    if (n == 0) {
        *eof = true;
        return 0;
    }
    m->rep->state_bytes += (uint64_t)n;
    return incmig__stream_send(&m->st, INCMIG_REC_XEN_STREAM, buf, (uint32_t)n);
}

static int state_precopy(struct mig *m, double *t_paused_r)
{
    struct suspender sp = { .m = m, .wfd = -1, .rc = 0 };
    uint8_t *buf = malloc(STATE_CHUNK);
    int p[2] = { -1, -1 }, rc = 0;
    bool eof = false, started = false;
    pthread_t th;
    double t0 = incmig__now(), last_dirty = t0;
    uint64_t w0 = wire_now(m);

    if (!buf)
        return INCMIG_ENOMEM;
    if (pipe2(p, O_CLOEXEC) < 0) {
        LOGE("pipe");
        rc = INCMIG_EIO;
        goto out;
    }
    /* With FLOW the domain's writes wait in a small pipe, not in ours;
     * the window counts from the first XEN_STREAM (the destination's
     * FLOW records start there) */
    m->flow_on = false;
    fcntl(p[1], F_SETPIPE_SZ, m->caps & INCMIG_CAP_FLOW ? 64 << 10 : 1 << 20);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    m->state_rfd = p[0];
    sp.wfd = p[1];
    p[1] = -1;
    if (pthread_create(&th, NULL, suspend_main, &sp)) {
        close(sp.wfd);
        rc = INCMIG_ENOMEM;
        goto out;
    }
    started = true;
    INFO("state pre-copy of %s: the domain's own stream, disk blocks "
         "in between", m->dom->name);
    while (!eof && !rc) {
        if (incmig__stop_requested) {
            rc = INCMIG_ECANCEL;
            break;
        }
        rc = flow_poll(m, STATE_POLL_MS);
        if (rc == 1)
            rc = 0;        /* window full: wait for FLOW (or stop) */
        if (rc || (m->flow_on && !incmig__flow_open(&m->flow)))
            continue;
        struct pollfd sp0 = { .fd = m->state_rfd, .events = POLLIN };
        if (poll(&sp0, 1, 0) > 0) {
            if (!m->flow_on && (m->caps & INCMIG_CAP_FLOW)) {
                m->flow_t = incmig__now();
                incmig__flow_init(&m->flow, m->st.bytes_out, m->flow_t);
                m->flow_on = true;
            }
            rc = pump_chunk(m, buf, &eof);
            continue;
        }
        bool work = false;
        for (int i = 0; i < m->nd; i++)
            work |= incmig__bitmap_next_set(&m->d[i].dirty, 0) <
                    m->d[i].dirty.nbits;
        if (work) {
            for (int i = 0; i < m->nd && !rc; i++)
                rc = incmig__send_bitmap(&m->d[i].snd, INCMIG_PHASE_PUSH,
                                         &m->d[i].dirty, m->flow_on
                                             ? PULL_EXTENT_FLOW
                                             : PULL_EXTENT_STATE,
                                         state_waiting, m);
            if (rc == 1)
                rc = 0;
            continue;
        }
        if (incmig__now() - last_dirty >= STATE_POLL_MS / 1000.0) {
            uint64_t dirty;
            rc = get_dirty(m, &dirty);
            last_dirty = incmig__now();
            if (rc || dirty)
                continue;
        }
        struct pollfd pf = { .fd = m->state_rfd, .events = POLLIN };
        poll(&pf, 1, STATE_POLL_MS);
    }
out:
    if (started) {
        if (rc) {
            /* Unblock a backend still writing, then wait for it: the domain
             * must be in a known state before it is resumed. */
            close(m->state_rfd);
            m->state_rfd = -1;
        }
        pthread_join(th, NULL);
        if (!rc && sp.rc) {
            ERR("the domain's state could not be saved: %s",
                incmig_strerror(sp.rc));
            rc = sp.rc;
        }
    }
    if (m->state_rfd >= 0)
        close(m->state_rfd);
    m->state_rfd = -1;
    if (p[1] >= 0)
        close(p[1]);
    if (!rc)
        rc = incmig__stream_send(&m->st, INCMIG_REC_XEN_STREAM, NULL, 0);
    *t_paused_r = started && sp.t_paused > 0 ? sp.t_paused : incmig__now();
    m->rep->state_s = incmig__now() - t0;
    phase_add(m, &m->rep->wire.state, w0);
    if (!rc)
        INFO("state stream complete: %.1f MiB in %.2f s; domain paused "
             "%.1f ms ago", m->rep->state_bytes / 1048576.0, m->rep->state_s,
             (incmig__now() - *t_paused_r) * 1000);
    int outq = 0;
    if (!rc && ioctl(m->st.wfd, TIOCOUTQ, &outq) == 0)
        DBG("paused at [%.6f]; %d bytes not yet taken by the destination "
            "(our socket's send queue)", *t_paused_r, outq);
    free(buf);
    return rc;
}

/* ---- stop-and-copy ------------------------------------------------------- */

static int send_bitmaps(struct mig *m, uint8_t phase)
{
    int rc = 0;
    for (int i = 0; i < m->nd && !rc; i++)
        rc = incmig__send_bitmap_recs(&m->st, (uint32_t)i, phase,
                                      &m->d[i].dirty, m->buf);
    return rc;
}

static int arm_state(struct mig *m);

/* The domain is paused (state_precopy): what it wrote since the last
 * bitmap, plus what the last PUSH extents did not send, is the final set. */
static int stop_and_copy(struct mig *m, double t_paused)
{
    struct incmig_report *rep = m->rep;
    uint64_t dirty, blocks, w0;
    struct incmig__rec r;
    int rc;

    rc = get_dirty(m, &dirty);
    if (rc)
        return rc;
    DBG("final bitmap read %.1f ms after the pause: %" PRIu64 " KiB to "
        "leave on the source", (incmig__now() - t_paused) * 1000, dirty >> 10);
    w0 = wire_now(m);
    rc = incmig__stream_send(&m->st, INCMIG_REC_SUSPEND, NULL, 0);
    if (rc)
        return rc;
    for (int i = 0; i < m->nd; i++)
        rep->disks[i].final_dirty_blocks = incmig__bitmap_count(&m->d[i].dirty);
    if (m->o->policy == INCMIG_POLICY_PRECOPY) {
        progress_begin(m, "stop-and-copy", dirty);
        rc = send_round(m, UINT32_MAX, INCMIG_PHASE_STOPCOPY, &blocks);
        if (!rc)
            rc = wait_rounds(m, UINT32_MAX);
        if (rc)
            return rc;
    }
    rc = send_bitmaps(m, INCMIG_PHASE_STOPCOPY);
    DBG("stop-and-copy bitmaps sent %.1f ms after the pause",
        (incmig__now() - t_paused) * 1000);
    if (!rc)
        rc = incmig__stream_send(&m->st, INCMIG_REC_READY, NULL, 0);
    /* while the destination arms its own (two fdatasyncs side by side) */
    if (!rc)
        rc = arm_state(m);
    DBG("stop-and-copy sent %.1f ms after the pause", (incmig__now() - t_paused) * 1000);
    if (!rc)
        rc = recv_expect(m, &r, INCMIG_REC_READY);
    DBG("destination ready %.1f ms after the pause", (incmig__now() - t_paused) * 1000);
    phase_add(m, &rep->wire.stopcopy, w0);
    return rc;
}

/* ---- PULL ---------------------------------------------------------------- */

/* COMPLETE, and the destination's REPORT that follows it when both sides
 * speak this version (negotiated with the state stream). */
static bool complete_now(struct mig *m)
{
    return m->complete && (m->report_done || !(m->caps & INCMIG_CAP_STATE));
}

static bool json_num(const char *js, const char *key, double *v)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(js, pat);
    return p && sscanf(p + strlen(pat), "%lf", v) == 1;
}

/* The destination's figures (REPORT, JSON): what the source cannot see. */
static void dst_report(struct mig *m, const struct incmig__rec *r)
{
    struct incmig_report *rep = m->rep;
    char *js = malloc(r->len + 1);
    double v;

    if (!js)
        return;
    memcpy(js, r->body, r->len);
    js[r->len] = '\0';
    DBG("destination report: %s", js);
    if (json_num(js, "pull_s", &v))
        rep->dst_pull_s = v;
    if (json_num(js, "waits", &v))
        rep->dst_waits = (uint64_t)v;
    if (json_num(js, "max_wait_ms", &v))
        rep->dst_max_wait_ms = v;
    if (json_num(js, "restore_s", &v))
        rep->dst_restore_s = v;
    if (json_num(js, "serve_ms", &v) && v >= 0 && v < 1e9) {
        rep->dst_serve_ms = v;
        rep->downtime_ms = rep->go_ms + v;
    }
    free(js);
}

static void *reader_main(void *opaque)
{
    struct mig *m = opaque;
    struct incmig__rec r;
    int rc;

    for (;;) {
        rc = recv_checked(m, &r);
        pthread_mutex_lock(&m->lock);
        if (rc == INCMIG_EPROTO) {
            m->peer_rc = rc;
            m->link_down = true;
        } else if (rc) {
            m->link_down = true;
        } else if (r.type == INCMIG_REC_PULL_REQ) {
            struct incmig__pull_req p;
            if (incmig__dec_pull_req(&r, &p) == 0 && p.disk < (uint32_t)m->nd &&
                m->q_len < DEMAND_QUEUE) {
                m->q[(m->q_head + m->q_len++) % DEMAND_QUEUE] = p;
                DBG("demand request: disk %u blocks %" PRIu64 "+%u", p.disk,
                    p.first, p.nblocks);
            }
            /* a dropped request is still served by the background push */
        } else if (r.type == INCMIG_REC_COMPLETE) {
            m->complete = true;
        } else if (r.type == INCMIG_REC_REPORT) {
            dst_report(m, &r);
            m->report_done = true;
        } else if (r.type == INCMIG_REC_ERROR) {
            struct incmig__error_rec e;
            if (!incmig__dec_error(&r, &e))
                ERR("the receiver reports: %s", e.msg);
            m->peer_rc = INCMIG_EPEER;
            m->link_down = true;
        } else {
            DBG("ignoring %s during PULL", incmig__rec_name(r.type));
        }
        bool stop = m->link_down || complete_now(m);
        m->reader_done = stop;
        pthread_cond_broadcast(&m->cond);
        pthread_mutex_unlock(&m->lock);
        if (stop)
            break;
    }
    return NULL;
}

static int start_reader(struct mig *m)
{
    m->link_down = false;
    m->complete = false;
    m->report_done = false;
    m->reader_done = false;
    if (pthread_create(&m->reader, NULL, reader_main, m))
        return INCMIG_ENOMEM;
    m->reader_running = true;
    return 0;
}

static void stop_reader(struct mig *m)
{
    if (!m->reader_running)
        return;
    pthread_mutex_lock(&m->lock);
    bool done = m->reader_done;
    pthread_mutex_unlock(&m->lock);
    if (!done && m->st_open)    /* wake it; our sending side stays open */
        shutdown(m->st.rfd, SHUT_RD);
    pthread_join(m->reader, NULL);
    m->reader_running = false;
}

/* Serve queued demand requests; called between background extents.
 * Returns PULL_DONE once the destination has everything: the rest of the
 * background push would only be dropped there. */
#define PULL_DONE 1
static int serve_demand(void *opaque)
{
    struct mig *m = opaque;
    int rc = 0;

    for (;;) {
        struct incmig__pull_req p;
        if (incmig__stop_requested)
            return INCMIG_ECANCEL;
        pthread_mutex_lock(&m->lock);
        if (m->complete) {
            pthread_mutex_unlock(&m->lock);
            return PULL_DONE;
        }
        if (m->link_down) {
            pthread_mutex_unlock(&m->lock);
            return INCMIG_ELINK;
        }
        if (!m->q_len) {
            pthread_mutex_unlock(&m->lock);
            return 0;
        }
        p = m->q[m->q_head];
        m->q_head = (m->q_head + 1) % DEMAND_QUEUE;
        m->q_len--;
        pthread_mutex_unlock(&m->lock);

        struct mdisk *d = &m->d[p.disk];
        uint64_t before = d->snd.blocks, w0 = wire_now(m);
        rc = incmig__send_range_sync(&d->snd, INCMIG_PHASE_PULL_DEMAND,
                                     p.first, p.nblocks);
        m->rep->disks[p.disk].demand_blocks += d->snd.blocks - before;
        phase_add(m, &m->rep->wire.pull_demand, w0);
        if (rc)
            return rc;
        if (p.first < d->nblocks)
            incmig__bitmap_clear_range(&d->dirty, p.first,
                                       p.nblocks < d->nblocks - p.first
                                           ? p.nblocks : d->nblocks - p.first);
    }
}

/* In PULL a demand answer queues behind whatever background data sits in
 * the socket's send buffer: keep that small so that a guest read waiting
 * for a block is not kept waiting by megabytes already queued. */
static void small_send_buffer(struct mig *m)
{
    int sz = 256 << 10;
    setsockopt(m->st.wfd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
}

/* Reconnect after a lost link and learn what the destination still lacks. */
static int resume_link(struct mig *m)
{
    double end = incmig__now() + (m->o->reconnect_s > 0 ? m->o->reconnect_s : 600);
    bool said = false;

    for (;;) {
        stop_reader(m);
        int rc = open_link(m, true, true);
        if (!rc)
            rc = incmig__stream_send(&m->st, INCMIG_REC_RESUME, m->mig_id, 16);
        for (int i = 0; i < m->nd && !rc; i++)
            incmig__bitmap_clear_all(&m->d[i].dirty);
        struct incmig__rec r;
        while (!rc) {
            rc = recv_expect(m, &r, 0);
            if (rc)
                break;
            if (r.type == INCMIG_REC_READY)
                break;
            struct incmig__bitmap_rec br;
            if (r.type != INCMIG_REC_BITMAP || incmig__dec_bitmap(&r, &br) ||
                br.disk >= (uint32_t)m->nd) {
                rc = INCMIG_EPROTO;
                break;
            }
            rc = incmig__bitmap_decode(&m->d[br.disk].dirty, br.first,
                                       br.nbits, br.data, br.len);
        }
        if (!rc) {
            uint64_t left = 0;
            for (int i = 0; i < m->nd; i++)
                left += incmig__bitmap_count(&m->d[i].dirty);
            small_send_buffer(m);
            set_state(m, INCMIG_SRC_PULL);
            INFO("link re-established: PULL resumes, %" PRIu64
                 " blocks still missing on the destination", left);
            pthread_mutex_lock(&m->lock);
            m->q_len = 0;
            pthread_mutex_unlock(&m->lock);
            return start_reader(m);
        }
        if (rc == INCMIG_EPEER || rc == INCMIG_EPROTO ||
            rc == INCMIG_EVERSION || rc == INCMIG_ENOTSUP)
            return rc;
        if (incmig__now() > end) {
            ERR("could not re-establish the link within %d s",
                m->o->reconnect_s > 0 ? m->o->reconnect_s : 600);
            return INCMIG_ELINK;
        }
        if (incmig__stop_requested)
            return INCMIG_ECANCEL;
        if (!said) {
            ERR("link to the destination lost during PULL: the guest's reads "
                "of missing blocks wait; retrying");
            said = true;
        }
        sleep(1);
    }
}

/* PULL until COMPLETE; with `reconnect`, on a new connection first (a
 * resume).  A stop request ends it with INCMIG_ECANCEL (say_resume). */
/* Sending failed: did the destination say COMPLETE before the link went?
 * A receiver that has everything may close while our last blocks are
 * still in flight (its kernel then resets the connection, and our write
 * fails); its COMPLETE is still in our socket's queue.  The reader takes
 * what is queued and stops at the error; wait for it, bounded. */
static bool completed_before_loss(struct mig *m)
{
    struct timespec ts;

    if (!m->reader_running)
        return m->complete;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 2;
    pthread_mutex_lock(&m->lock);
    while (!m->reader_done &&
           pthread_cond_timedwait(&m->cond, &m->lock, &ts) == 0)
        ;
    bool done = m->complete;
    pthread_mutex_unlock(&m->lock);
    if (done)
        INFO("the link closed after the destination's COMPLETE: PULL is "
             "done");
    return done;
}

static int pull(struct mig *m, bool reconnect)
{
    int rc;
    bool end_sent = false;

    if (reconnect) {
        rc = resume_link(m);
    } else {
        small_send_buffer(m);
        rc = start_reader(m);
    }
    while (!rc) {
        /* background push of everything still marked */
        for (int i = 0; i < m->nd && !rc; i++) {
            uint64_t before = m->d[i].snd.blocks, w0 = wire_now(m);
            rc = incmig__send_bitmap(&m->d[i].snd, INCMIG_PHASE_PULL_BACKGROUND,
                                     &m->d[i].dirty, PULL_EXTENT, serve_demand, m);
            m->rep->disks[i].background_blocks += m->d[i].snd.blocks - before;
            phase_add(m, &m->rep->wire.pull_background, w0);
        }
        if (rc == PULL_DONE) {
            rc = 0;
            goto out;
        }
        if (!rc && !end_sent) {
            rc = incmig__stream_send(&m->st, INCMIG_REC_PULL_END, NULL, 0);
            end_sent = !rc;
            if (end_sent)
                DBG("PULL_END sent: every owed block is on its way");
        }
        /* wait for COMPLETE, answering late demand requests; once every
         * block was sent the destination owes COMPLETE: silence for
         * reconnect_s means the link is gone (then reconnect) */
        double quiet = m->o->reconnect_s > 0 ? m->o->reconnect_s : 600;
        double quiet_end = incmig__now() + quiet;
        while (!rc) {
            bool silent = false;
            pthread_mutex_lock(&m->lock);
            while (!complete_now(m) && !m->link_down && !m->q_len &&
                   !silent && !incmig__stop_requested) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += 250 * 1000000L;
                if (ts.tv_nsec >= 1000000000L) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&m->cond, &m->lock, &ts);
                silent = incmig__now() >= quiet_end;
            }
            bool done = complete_now(m) || (m->complete && m->link_down);
            bool down = m->link_down;
            pthread_mutex_unlock(&m->lock);
            if (!done && incmig__stop_requested) {
                rc = INCMIG_ECANCEL;
                break;
            }
            if (!done && !down && silent) {
                ERR("no word from the destination for %.0f s after every "
                    "block was sent: the link is considered lost", quiet);
                stop_reader(m);
                down = true;
            }
            if (done)
                goto out;
            if (down) {
                rc = INCMIG_ELINK;
                break;
            }
            rc = serve_demand(m);
            if (rc == PULL_DONE) {
                rc = 0;
                goto out;
            }
            if (!rc)
                quiet_end = incmig__now() + quiet;
        }
        if (rc == INCMIG_ELINK && completed_before_loss(m)) {
            rc = 0;
            goto out;
        }
        if (rc == INCMIG_ELINK && !m->peer_rc) {
            rc = resume_link(m);
            end_sent = false;
        }
    }
out:
    if (!rc) {
        /* The destination's REPORT follows its COMPLETE. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 2;
        pthread_mutex_lock(&m->lock);
        while (!complete_now(m) && !m->link_down &&
               pthread_cond_timedwait(&m->cond, &m->lock, &ts) == 0)
            ;
        pthread_mutex_unlock(&m->lock);
    }
    if (m->peer_rc && !rc)
        rc = m->peer_rc;
    stop_reader(m);
    return rc;
}

/* After commit: the source copy's generation once released, the one the
 * destination records too.  A failure costs only the next incremental. */
static void adopt(struct mig *m)
{
    for (int i = 0; i < m->nd && m->dom->ops->adopt; i++) {
        uint8_t gen[16];
        if (incmig__gen_zero(m->d[i].base.gen))
            continue;
        incmig__gen_derive(m->mig_id, (uint32_t)i, gen);
        if (m->dom->ops->adopt(m->dom, i, gen))
            ERR("disk %s: the source copy will not record its generation: "
                "the next migration back copies it in full",
                m->dom->disks[i].name);
    }
}

/* ---- the state file (owed.c) ----------------------------------------------- */

/* What `migrate --resume` needs to finish PULL, prepared (every block
 * owed) once the destination accepted the disks, before the downtime;
 * armed with the final bitmaps (all the destination may lack after GO)
 * before COMMIT (arm_state). */
static int prepare_state(struct mig *m)
{
    const struct incmig_migrate_opts *o = m->o;
    char k[32];
    uint64_t nb[INCMIG_MAX_DISKS];
    struct incmig__kv *kv = calloc(1, sizeof *kv);
    int rc;

    double t0 = incmig__now();

    if (!kv)
        return INCMIG_ENOMEM;
#define KV(...) incmig__kv_add(kv, __VA_ARGS__)
    KV("domain", "%s", o->domain);
    KV("host", "%s", o->host);
    KV("ssh", "%s", o->ssh_command ? o->ssh_command : "ssh");
    KV("attach", "%s", o->attach_command ? o->attach_command : "");
    KV("bandwidth", "%" PRIu64, o->bandwidth);
    KV("compress", "%d", o->compress ? 1 : 0);
    KV("reconnect", "%d", o->reconnect_s);
    KV("timeout", "%d", o->timeout_s);
    KV("disks", "%d", m->nd);
    char shared[INCMIG_MAX_SHARED * 64] = "";
    for (int i = 0; i < o->nshared && i < INCMIG_MAX_SHARED; i++)
        snprintf(shared + strlen(shared), sizeof shared - strlen(shared),
                 "%s%.62s", i ? "," : "", o->shared_disks[i]);
    KV("shared", "%s", shared);
    for (int i = 0; i < m->nd; i++) {
        snprintf(k, sizeof k, "disk%d.name", i);
        KV(k, "%s", m->dom->disks[i].name);
        snprintf(k, sizeof k, "disk%d.size", i);
        KV(k, "%" PRIu64, m->dom->disks[i].size);
    }
#undef KV
    for (int i = 0; i < m->nd; i++)
        nb[i] = m->d[i].nblocks;
    rc = incmig__owed_start(&m->owed, o->state_dir, "migrate", m->mig_id,
                            m->nd, nb, kv);
    free(kv);
    if (rc)
        ERR("cannot write the state file %s that PULL needs to survive a "
            "crash: stopping before the point of no return", m->owed.path);
    else
        DBG("state file %s prepared in %.1f ms", m->owed.path,
            (incmig__now() - t0) * 1000);
    return rc;
}

static int arm_state(struct mig *m)
{
    struct incmig__bitmap sets[INCMIG_MAX_DISKS];
    double t0 = incmig__now();
    int rc;

    for (int i = 0; i < m->nd; i++)
        sets[i] = m->d[i].dirty;
    rc = incmig__owed_arm(&m->owed, sets, true);
    if (rc)
        ERR("cannot update the state file %s: stopping before the point of "
            "no return", m->owed.path);
    else
        DBG("state file armed in %.1f ms (in the downtime; made durable "
            "after GO)", (incmig__now() - t0) * 1000);
    return rc;
}

/* After GO, when this process stops before COMPLETE: what is owed, and
 * the command that finishes. */
static void say_resume(struct mig *m)
{
    if (!incmig__owed_active(&m->owed))
        return;
    incmig__owed_sync(&m->owed);
    ERR("the guest runs on the destination; up to %" PRIu64 " of its "
        "blocks are only on this host, whose disk is kept until they are "
        "delivered.  Finish with: xl-incmig migrate --resume %s",
        incmig__owed_count(&m->owed), m->owed.path);
}

/* After COMPLETE: nothing is owed (a resume would only release). */
static int state_complete(struct mig *m)
{
    int rc = 0;

    for (int i = 0; i < m->nd && !rc; i++) {
        incmig__bitmap_clear_all(&m->d[i].dirty);
        rc = incmig__owed_keep(&m->owed, i, &m->d[i].dirty);
    }
    return rc ? rc : incmig__owed_sync(&m->owed);
}

/* migrate --resume: the options of the migration, from its state file;
 * reconnect_s, timeout_s and progress of the caller's options win. */
static int resume_state(struct mig *m, const struct incmig_migrate_opts *o)
{
    const char *path = m->owed.path;
    char *text = NULL;
    uint64_t x;
    int rc;

    rc = incmig__owed_resume(&m->owed, o->state_dir, "migrate", o->resume,
                             m->mig_id, &text);
    if (rc)
        return rc;
    rc = INCMIG_EINVAL;
    m->ro = *o;
    if (incmig__kv_get(text, "domain", m->ro_domain, sizeof m->ro_domain) ||
        incmig__kv_get(text, "host", m->ro_host, sizeof m->ro_host) ||
        incmig__kv_get(text, "ssh", m->ro_ssh, sizeof m->ro_ssh) ||
        incmig__kv_get(text, "attach", m->ro_attach, sizeof m->ro_attach) ||
        incmig__kv_num(path, text, "bandwidth", UINT64_MAX,
                       &m->ro.bandwidth) ||
        incmig__kv_num(path, text, "compress", 1, &x))
        goto bad;
    m->ro.compress = (int)x;
    m->ro.domain = m->ro_domain;
    m->ro.host = m->ro_host;
    m->ro.ssh_command = m->ro_ssh;
    m->ro.attach_command = m->ro_attach[0] ? m->ro_attach : NULL;
    if (!m->ro.reconnect_s &&
        !incmig__kv_num(path, text, "reconnect", INT32_MAX, &x))
        m->ro.reconnect_s = (int)x;
    if (!m->ro.timeout_s &&
        !incmig__kv_num(path, text, "timeout", INT32_MAX, &x))
        m->ro.timeout_s = (int)x;
    if (incmig__kv_num(path, text, "disks", INCMIG_MAX_DISKS, &x) ||
        (int)x != m->owed.nd)
        goto bad;
    /* the disks on shared storage, so that the domain opens with the
     * same disks (absent from files of earlier versions: none) */
    m->ro.nshared = 0;
    if (!incmig__kv_get(text, "shared", m->ro_shared, sizeof m->ro_shared))
        for (char *p = m->ro_shared, *q; *p; p = q) {
            q = p + strcspn(p, ",");
            if (*q)
                *q++ = '\0';
            if (*p && m->ro.nshared < INCMIG_MAX_SHARED)
                m->ro.shared_disks[m->ro.nshared++] = p;
        }
    m->o = &m->ro;
    rc = 0;
    goto out;
bad:
    ERR("state file %s: missing or malformed fields", path);
    rc = INCMIG_EINVAL;
out:
    if (!rc) {
        /* checked against the domain once it is open (resume_check) */
        free(m->ro_text);
        m->ro_text = text;
        text = NULL;
    }
    free(text);
    return rc;
}

/* The domain opened for a resume is the one of the state file. */
static int resume_check(struct mig *m)
{
    const char *text = m->ro_text;
    char k[32], v[INCMIG_NAME_MAX + 1];
    uint64_t size;

    if (m->dom->ndisks != m->owed.nd) {
        ERR("domain %s has %d disks, the state file %s %d", m->dom->name,
            m->dom->ndisks, m->owed.path, m->owed.nd);
        return INCMIG_EINVAL;
    }
    for (int i = 0; i < m->nd; i++) {
        struct mdisk *d = &m->d[i];
        snprintf(k, sizeof k, "disk%d.name", i);
        if (incmig__kv_get(text, k, v, sizeof v))
            return INCMIG_EINVAL;
        snprintf(k, sizeof k, "disk%d.size", i);
        if (incmig__kv_num(m->owed.path, text, k, INCMIG_DISK_MAX, &size))
            return INCMIG_EINVAL;
        if (strcmp(v, m->dom->disks[i].name) || size != m->dom->disks[i].size ||
            d->nblocks != m->owed.nblocks[i]) {
            ERR("disk %d of domain %s is not the one of the state file %s "
                "(%s, %" PRIu64 " bytes)", i, m->dom->name, m->owed.path, v,
                size);
            return INCMIG_EINVAL;
        }
        int rc = incmig__owed_get(&m->owed, i, &d->dirty);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- the whole migration ---------------------------------------------------- */

static int open_disks(struct mig *m)
{
    for (int i = 0; i < m->nd; i++) {
        struct incmig__dom_disk *dd = &m->dom->disks[i];
        struct mdisk *d = &m->d[i];
        int rc = incmig__disk_open(&d->disk, dd->path, 0, 0);
        if (rc)
            return rc;
        if (d->disk.size != dd->size) {
            ERR("disk %s: image %s is %" PRIu64 " bytes, the domain says %"
                PRIu64, dd->name, dd->path, d->disk.size, dd->size);
            return INCMIG_ESIZE;
        }
        d->bs = dd->block_size;
        d->nblocks = (dd->size + d->bs - 1) / d->bs;
        rc = incmig__bitmap_init(&d->dirty, d->nblocks);
        if (!rc)
            rc = incmig__sender_init(&d->snd, &m->st, &d->disk, (uint32_t)i,
                                     d->bs);
        if (rc)
            return rc;
        struct incmig_disk_report *dr = &m->rep->disks[i];
        snprintf(dr->name, sizeof dr->name, "%s", dd->name);
        dr->size = dd->size;
        dr->block_size = d->bs;
    }
    return 0;
}

void incmig_migrate_opts_init(struct incmig_migrate_opts *o)
{
    memset(o, 0, sizeof *o);
}

void incmig_migrate_opts_dispose(struct incmig_migrate_opts *o)
{
    memset(o, 0, sizeof *o);
}

int incmig_migrate(const struct incmig_migrate_opts *o,
                   struct incmig_report *rep)
{
    struct mig m;
    double t_susp = 0;
    int rc;
    bool suspended = false;

    memset(&m, 0, sizeof m);
    m.state_rfd = -1;
    incmig_report_init(rep);
    m.o = o;
    m.rep = rep;
    m.t0 = incmig__now();
    pthread_mutex_init(&m.lock, NULL);
    pthread_cond_init(&m.cond, NULL);
    incmig__owed_init(&m.owed);
    for (int i = 0; i < (int)INCMIG_MAX_DISKS; i++)
        m.d[i].disk.fd = m.d[i].disk.dfd = -1;
    if (o->resume) {
        rc = resume_state(&m, o);
        if (rc)
            goto out;
        o = m.o;
    }
    snprintf(rep->policy, sizeof rep->policy, "%s",
             o->policy == INCMIG_POLICY_PRECOPY ? "precopy"
             : o->policy == INCMIG_POLICY_SINGLE ? "single" : "default");
    if (!incmig__host_valid(o->host)) {
        ERR("'%s' is not a valid host name", o->host ? o->host : "");
        rc = INCMIG_EINVAL;
        goto out;
    }
    m.bandwidth = o->bandwidth;
    m.buf = malloc(INCMIG_REC_MAX);
    if (!m.buf)
        return INCMIG_ENOMEM;
    if (o->control_path) {
        rc = incmig__mctl_start(&m.ctl, o->control_path, set_bandwidth, &m);
        if (rc) {
            ERR("cannot open the control socket %s: nothing started",
                o->control_path);
            free(m.buf);
            return rc;
        }
    }
    if (!o->resume) {
        int ufd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        if (ufd < 0 || read(ufd, m.mig_id, 16) != 16)
            memcpy(m.mig_id, &m.t0, sizeof m.t0);
        if (ufd >= 0)
            close(ufd);
    }

    struct incmig__domain_args da = {
        .nshared = o->nshared, .shared = o->shared_disks,
        .config_file = o->config_file, .debug = o->debug,
    };
    rc = incmig__domain_open(o->domain, &da, &m.dom);
    if (rc && o->resume && incmig__owed_count(&m.owed) == 0) {
        INFO("the PULL of this migration was complete and its source "
             "released: nothing is left to do");
        incmig__owed_close(&m.owed, true);
        rc = 0;
        goto out;
    }
    if (rc)
        goto out;
    m.nd = m.dom->ndisks;
    rep->ndisks = m.nd;
    incmig__yield_init(&m.y);
    m.background = !o->bandwidth && !o->no_yield;
    m.yielding = m.background && m.dom->ops->activity;
    if (m.background && !m.dom->ops->activity)
        INFO("domain %s: its backend does not report the guest's I/O, so "
             "PUSH has no cap; its reads go at the idle I/O class",
             m.dom->name);
    rc = open_disks(&m);
    if (!rc && o->resume)
        rc = resume_check(&m);
    if (rc && o->resume)
        goto failed_badly;
    if (rc)
        goto failed_resume;
    if (o->resume) {
        uint64_t owed = incmig__owed_count(&m.owed);
        if (!owed)
            goto release;
        INFO("resuming the PULL of %s to %s from %s: up to %" PRIu64
             " blocks still owed", m.dom->name, o->host, m.owed.path, owed);
        set_state(&m, INCMIG_SRC_PULL);
        rc = pull(&m, true);
        if (rc)
            goto failed_badly;
        goto pulled;
    }
    uint64_t w0 = 0;
    rc = read_lineage(&m);
    if (!rc)
        rc = open_link(&m, false, false);
    if (!rc)
        rc = send_disks(&m);
    if (!rc)
        rc = base_exchange(&m);
    if (!rc)
        rc = prepare_state(&m);
    phase_add(&m, &rep->wire.control, w0);
    if (rc)
        goto failed_resume;
    set_state(&m, INCMIG_SRC_PUSH);

    w0 = wire_now(&m);
    double tp = incmig__now();
    rc = push(&m);
    phase_add(&m, &rep->wire.push, w0);
    rep->push_s = incmig__now() - tp;
    rep->push_yield_backoffs = m.y.backoffs;
    rep->push_yield_probes = m.y.probes;
    for (int i = 0; i < m.nd; i++)
        if (m.d[i].snd.q)
            rep->push_idle_reads += incmig__aioq_idle_reqs(m.d[i].snd.q);
    for (int i = 0; i < m.nd; i++) {
        rep->disks[i].pushed_blocks = m.d[i].snd.blocks;
        rep->disks[i].zero_blocks = m.d[i].snd.zero_blocks;
    }
    if (rc)
        goto failed_resume;

    /* The domain's state pre-copy (libxl's memory, for Xen), PUSH of what
     * the guest keeps writing in between, then the pause. */
    suspended = true;
    w0 = wire_now(&m);
    set_state(&m, INCMIG_SRC_STATE);
    rc = state_precopy(&m, &t_susp);
    for (int i = 0; i < m.nd; i++)
        rep->disks[i].pushed_blocks = m.d[i].snd.blocks;
    if (rc)
        goto failed_resume;
    set_state(&m, INCMIG_SRC_STOPCOPY);
    rc = stop_and_copy(&m, t_susp);
    if (!rc && incmig__stop_requested) {
        ERR("stopped before the point of no return");
        rc = INCMIG_ECANCEL;
    }
    if (rc)
        goto failed_resume;
    rc = m.dom->ops->commit(m.dom);
    if (rc)
        goto failed_resume;
    /* --- point of no return --- the guest will run on the destination. */
    rc = incmig__stream_send(&m.st, INCMIG_REC_GO, NULL, 0);
    rep->go_ms = (incmig__now() - t_susp) * 1000;
    rep->downtime_ms = rep->go_ms;
    if (rc) {
        ERR("sending GO failed: the guest is paused on the source and "
            "committed to the destination, which may not run it; check the "
            "destination before doing anything else");
        goto failed_badly;
    }
    INFO("GO: guest runs on the destination (GO sent %.1f ms after the "
         "pause)", rep->go_ms);
    /* Out of the downtime: the state file armed in it made durable (a
     * killed process already finds it in the page cache), the source
     * copy's new generation recorded. */
    if (incmig__owed_settle(&m.owed))
        ERR("the state file %s could not be made durable: PULL goes on, "
            "but if this host goes down before it completes, `migrate "
            "--resume` may refuse the file", m.owed.path);
    adopt(&m);

    double tpull = incmig__now();
    w0 = wire_now(&m);
    set_state(&m, INCMIG_SRC_PULL);
    rc = pull(&m, false);
    rep->pull_s = incmig__now() - tpull;
    if (rc)
        goto failed_badly;
pulled:
    set_state(&m, INCMIG_SRC_DONE);
    if (state_complete(&m))
        ERR("the state file %s could not be marked complete", m.owed.path);
release:
    rc = m.dom->ops->release(m.dom);
    if (rc)
        ERR("the source disk could not be released (migration itself is "
            "complete)");
    if (m.st_open) {
        uint64_t w1 = wire_now(&m);
        incmig__stream_send(&m.st, INCMIG_REC_END, NULL, 0);
        phase_add(&m, &rep->wire.control, w1);
    }
    incmig__owed_close(&m.owed, true);
    goto out;

failed_resume:
    incmig__owed_close(&m.owed, true);
    if (rc == INCMIG_ELINK && m.st_open)
        rc = peer_reason(&m, rc);
    set_state(&m, INCMIG_SRC_FAILED);
    {
        char msg[128];
        snprintf(msg, sizeof msg, "source aborted the migration: %s",
                 incmig_strerror(rc));
        send_error(&m, rc, msg);
    }
    if (m.dom && suspended) {
        if (m.dom->ops->resume(m.dom) == 0)
            INFO("migration failed before the point of no return: the guest "
                 "runs on the source, its disks untouched");
        else
            ERR("migration failed and the guest could not be resumed on the "
                "source");
    } else if (m.dom) {
        INFO("migration failed before the point of no return: the guest "
             "kept running on the source, its disks untouched");
    }
    goto out;
failed_badly:
    if (rc == INCMIG_ECANCEL)
        ERR("stopped during PULL");
    else
        ERR("migration failed after the point of no return: %s",
            incmig_strerror(rc));
    say_resume(&m);
out:
    stop_reader(&m);
    incmig__mctl_stop(m.ctl);
    rep->total_s = incmig__now() - m.t0;
    if (m.st_open) {
        rep->wire_total = m.st.bytes_out + m.st.bytes_in;
    }
    for (int i = 0; i < m.nd; i++) {
        struct incmig_disk_report *dr = &rep->disks[i];
        dr->wire.push = m.d[i].snd.wire[INCMIG_PHASE_PUSH];
        dr->wire.stopcopy += m.d[i].snd.wire[INCMIG_PHASE_STOPCOPY];
        dr->wire.pull_demand = m.d[i].snd.wire[INCMIG_PHASE_PULL_DEMAND];
        dr->wire.pull_background = m.d[i].snd.wire[INCMIG_PHASE_PULL_BACKGROUND];
        rep->compressed_in += m.d[i].snd.comp.in_bytes;
        rep->compressed_out += m.d[i].snd.comp.out_bytes;
        incmig__sender_dispose(&m.d[i].snd);
        incmig__bitmap_dispose(&m.d[i].dirty);
        incmig__bitmap_dispose(&m.d[i].base.mine);
        incmig__bitmap_dispose(&m.d[i].base.send);
        incmig__disk_close(&m.d[i].disk);
    }
    close_link(&m);
    if (m.dom)
        m.dom->ops->close(m.dom);
    incmig__owed_close(&m.owed, false);
    free(m.ro_text);
    free(m.buf);
    pthread_mutex_destroy(&m.lock);
    pthread_cond_destroy(&m.cond);
    return rc;
}
