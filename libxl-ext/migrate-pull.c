/* migrate-pull.c: PULL, after GO: the blocks the destination lacks.
 *
 * Entry points (migrate-internal.h): incmig__mig_pull pushes every block
 * still marked in the background, serving the destination's demand
 * requests (PULL_REQ) first between extents, sends PULL_END and waits for
 * COMPLETE and the destination's REPORT; a lost link is re-established
 * and resumed (RESUME, then the destination's bitmaps of what it still
 * lacks) until reconnect_s passes.  A reader thread takes PULL_REQ,
 * COMPLETE, REPORT and ERROR off the stream; incmig__mig_stop_reader
 * stops it.  Data: struct mig's PULL fields, under its lock (the demand
 * queue q, complete, link_down, report_done, peer_rc); each struct
 * mdisk's dirty bitmap is the set still owed, main thread only.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "migrate-internal.h"

#define PULL_EXTENT (256u << 10)

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
        rc = incmig__mig_recv_checked(m, &r);
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

void incmig__mig_stop_reader(struct mig *m)
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
        uint64_t before = d->snd.blocks, w0 = incmig__mig_wire_now(m);
        rc = incmig__send_range_sync(&d->snd, INCMIG_PHASE_PULL_DEMAND,
                                     p.first, p.nblocks);
        m->rep->disks[p.disk].demand_blocks += d->snd.blocks - before;
        incmig__mig_phase_add(m, &m->rep->wire.pull_demand, w0);
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
        incmig__mig_stop_reader(m);
        int rc = incmig__mig_open_link(m, true, true);
        if (!rc)
            rc = incmig__stream_send(&m->st, INCMIG_REC_RESUME, m->mig_id, 16);
        for (int i = 0; i < m->nd && !rc; i++)
            incmig__bitmap_clear_all(&m->d[i].dirty);
        struct incmig__rec r;
        while (!rc) {
            rc = incmig__mig_recv_expect(m, &r, 0);
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
            incmig__mig_set_state(m, INCMIG_SRC_PULL);
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

/* PULL until COMPLETE; with `reconnect`, on a new connection first (a
 * resume).  A stop request ends it with INCMIG_ECANCEL (say_resume). */
int incmig__mig_pull(struct mig *m, bool reconnect)
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
            uint64_t before = m->d[i].snd.blocks, w0 = incmig__mig_wire_now(m);
            rc = incmig__send_bitmap(&m->d[i].snd, INCMIG_PHASE_PULL_BACKGROUND,
                                     &m->d[i].dirty, PULL_EXTENT, serve_demand, m);
            m->rep->disks[i].background_blocks += m->d[i].snd.blocks - before;
            incmig__mig_phase_add(m, &m->rep->wire.pull_background, w0);
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
                incmig__deadline(&ts, CLOCK_REALTIME, 0.25);
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
                incmig__mig_stop_reader(m);
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
    incmig__mig_stop_reader(m);
    return rc;
}
