/* migrate-state.c: the domain's state stream, then stop-and-copy.
 *
 * Entry points (migrate-internal.h): incmig__mig_state_precopy runs the
 * backend's suspend on a thread that writes the domain's state on a pipe,
 * frames it as XEN_STREAM records and pushes dirty disk blocks between
 * its chunks, paced by the receiver's FLOW records when both speak
 * INCMIG_CAP_FLOW (flow.c); it returns with the domain paused.
 * incmig__mig_stop_and_copy then sends SUSPEND, the final bitmaps (or,
 * for the pre-copy-only policy, the blocks), READY, arms the state file,
 * and waits for the destination's READY.  Data: struct mig's state_rfd
 * and flow fields; each struct mdisk's dirty bitmap and sender.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "migrate-internal.h"

/* Disk extents between state chunks: small, the state stream goes first. */
#define PULL_EXTENT_STATE (256u << 10)
/* With FLOW: smaller, since the extents read ahead go out past the window. */
#define PULL_EXTENT_FLOW (64u << 10)

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
        rc = incmig__mig_recv_expect(m, &r, INCMIG_REC_FLOW);
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

int incmig__mig_state_precopy(struct mig *m, double *t_paused_r)
{
    struct suspender sp = { .m = m, .wfd = -1, .rc = 0 };
    uint8_t *buf = malloc(STATE_CHUNK);
    int p[2] = { -1, -1 }, rc = 0;
    bool eof = false, started = false;
    pthread_t th;
    double t0 = incmig__now(), last_dirty = t0;
    uint64_t w0 = incmig__mig_wire_now(m);

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
            rc = incmig__mig_get_dirty(m, &dirty);
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
    incmig__mig_phase_add(m, &m->rep->wire.state, w0);
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

/* The domain is paused (state_precopy): what it wrote since the last
 * bitmap, plus what the last PUSH extents did not send, is the final set. */
int incmig__mig_stop_and_copy(struct mig *m, double t_paused)
{
    struct incmig_report *rep = m->rep;
    uint64_t dirty, blocks, w0;
    struct incmig__rec r;
    int rc;

    rc = incmig__mig_get_dirty(m, &dirty);
    if (rc)
        return rc;
    DBG("final bitmap read %.1f ms after the pause: %" PRIu64 " KiB to "
        "leave on the source", (incmig__now() - t_paused) * 1000, dirty >> 10);
    w0 = incmig__mig_wire_now(m);
    rc = incmig__stream_send(&m->st, INCMIG_REC_SUSPEND, NULL, 0);
    if (rc)
        return rc;
    for (int i = 0; i < m->nd; i++)
        rep->disks[i].final_dirty_blocks = incmig__bitmap_count(&m->d[i].dirty);
    if (m->o->policy == INCMIG_POLICY_PRECOPY) {
        incmig__mig_progress_begin(m, "stop-and-copy", dirty);
        rc = incmig__mig_send_round(m, UINT32_MAX, INCMIG_PHASE_STOPCOPY,
                                    &blocks);
        if (!rc)
            rc = incmig__mig_wait_rounds(m, UINT32_MAX);
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
        rc = incmig__mig_arm_state(m);
    DBG("stop-and-copy sent %.1f ms after the pause", (incmig__now() - t_paused) * 1000);
    if (!rc)
        rc = incmig__mig_recv_expect(m, &r, INCMIG_REC_READY);
    DBG("destination ready %.1f ms after the pause", (incmig__now() - t_paused) * 1000);
    incmig__mig_phase_add(m, &rep->wire.stopcopy, w0);
    return rc;
}
