/* flow.c: the source's window while the domain's state stream runs
 * (spec: "FLOW (21)").
 *
 * The domain pauses once its stream's last pre-copy bytes are written;
 * everything still queued between it and the destination then becomes
 * downtime.  So the source keeps what it wrote and the destination's
 * FLOW records did not yet cover within a window: the rate FLOW shows
 * times (the shortest round trip it showed + FLOW_SLACK_S), at least
 * FLOW_MIN_WINDOW.  On an idle path the window stays ahead of the round
 * trip (the link is not held back); when the receiver falls behind, the
 * round trip grows and the window does not, so at most about
 * FLOW_SLACK_S of stream waits there.
 *
 * Entry points: incmig__flow_init (at the start of the state stream,
 * with the stream's count of octets written then), _sent (after each
 * record written), _acked (a FLOW arrived), _open (may we write more?).
 * Send times live in a ring of FLOW_RING entries; when it is full the
 * newest entry is extended (its time kept: a round trip measured from it
 * can only come out longer, never shorter).
 */
#include "config.h"

#include <string.h>

#include "incmig-internal.h"

#define FLOW_SLACK_S 0.004
#define FLOW_MIN_WINDOW (256u << 10)
#define FLOW_RATE_S 0.02         /* rate measured over at least this */

void incmig__flow_init(struct incmig__flow *f, uint64_t sent, double now)
{
    memset(f, 0, sizeof *f);
    f->base = f->acked = f->sent = sent;
    f->rate_t = now;
    f->rate_b = sent;
    f->window = FLOW_MIN_WINDOW;
}

void incmig__flow_sent(struct incmig__flow *f, uint64_t sent, double now)
{
    if (sent <= f->sent)
        return;
    f->sent = sent;
    if (f->len == INCMIG_FLOW_RING) {
        f->ring[(f->head + f->len - 1) % INCMIG_FLOW_RING].end = sent;
        return;
    }
    unsigned i = (f->head + f->len++) % INCMIG_FLOW_RING;
    f->ring[i].end = sent;
    f->ring[i].t = now;
}

int incmig__flow_acked(struct incmig__flow *f, uint64_t acted, double now)
{
    if (acted < f->last_flow || acted > f->sent)
        return INCMIG_EPROTO;
    f->last_flow = acted;
    if (acted <= f->acked)
        return 0;
    f->acked = acted;
    double t = -1;
    while (f->len && f->ring[f->head].end <= acted) {
        t = f->ring[f->head].t;
        f->head = (f->head + 1) % INCMIG_FLOW_RING;
        f->len--;
    }
    if (t >= 0 && (f->min_rtt == 0 || now - t < f->min_rtt))
        f->min_rtt = now - t > 1e-6 ? now - t : 1e-6;
    if (now - f->rate_t >= FLOW_RATE_S) {
        double rate = (double)(acted - f->rate_b) / (now - f->rate_t);
        f->rate = f->rate > 0 ? (f->rate + rate) / 2 : rate;
        f->rate_t = now;
        f->rate_b = acted;
    }
    double w = f->rate * (f->min_rtt + FLOW_SLACK_S);
    f->window = w > FLOW_MIN_WINDOW ? (uint64_t)w : FLOW_MIN_WINDOW;
    return 0;
}

bool incmig__flow_open(const struct incmig__flow *f)
{
    return f->sent - f->acked < f->window;
}
