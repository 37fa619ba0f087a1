/* migrate-internal.h: what the files of the source side share.
 *
 * The source side of a migration (incmig_migrate) is split by phase, in
 * the order of the states (migrate.c's top comment):
 *   migrate.c        the state machine (which records each state accepts,
 *                    its deadlines) and incmig_migrate, which runs the
 *                    phases below in order and owns the failure rules
 *   migrate-link.c   the connection: ssh, TCP or TLS, headers and HELLO;
 *                    records read and checked, errors from the peer; DISKS
 *                    and the BASE exchange of an incremental migration
 *   migrate-push.c   the progress line, PUSH yielding to the guest, the
 *                    control socket's cap; PUSH rounds and convergence
 *   migrate-state.c  the domain's state stream, disk blocks in between,
 *                    then stop-and-copy up to both READYs
 *   migrate-pull.c   PULL: the reader thread, demand requests served
 *                    between background extents, a lost link resumed
 *   migrate-owed.c   the state file (owed.c): prepared, armed, completed,
 *                    and read back by `migrate --resume`
 *
 * Data: one struct mig per migration, on incmig_migrate's stack, with a
 * struct mdisk per disk.  The main thread owns it; the fields marked
 * "under lock" are shared with the PULL reader thread and the control
 * socket's thread.  Functions used across these files are incmig__mig_*
 * (never exported: libincmig.sym); the rest are static in their file.
 */
#ifndef INCMIG_MIGRATE_INTERNAL_H
#define INCMIG_MIGRATE_INTERNAL_H

#include "incmig-internal.h"

#define DEMAND_QUEUE 1024

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

/* Bytes on the wire, both ways: now, and added to a phase's count. */
static inline void incmig__mig_phase_add(struct mig *m, uint64_t *slot,
                                         uint64_t before)
{
    *slot += m->st.bytes_out + m->st.bytes_in - before;
}
static inline uint64_t incmig__mig_wire_now(struct mig *m)
{
    return m->st.bytes_out + m->st.bytes_in;
}

/* migrate.c: the state machine */
/* PUSH's reads at the IDLE I/O class or not (main thread). */
void incmig__mig_background_io(struct mig *m, bool on);
/* Enter a state: its deadlines, PUSH's cap and I/O class. */
void incmig__mig_set_state(struct mig *m, int state);
/* Every record read from the destination goes through here. */
int incmig__mig_src_check(struct mig *m, const struct incmig__rec *r);
int incmig__mig_recv_checked(struct mig *m, struct incmig__rec *r);

/* migrate-link.c: the connection, DISKS, the BASE exchange */
void incmig__mig_close_link(struct mig *m);
int incmig__mig_open_link(struct mig *m, bool quiet, bool resume);
void incmig__mig_send_error(struct mig *m, int code, const char *msg);
int incmig__mig_recv_expect(struct mig *m, struct incmig__rec *r,
                            uint32_t type);
int incmig__mig_peer_reason(struct mig *m, int rc);
int incmig__mig_send_disks(struct mig *m);
int incmig__mig_read_lineage(struct mig *m);
int incmig__mig_base_exchange(struct mig *m);

/* migrate-push.c: progress, yielding, PUSH */
int incmig__mig_set_bandwidth(void *opaque, uint64_t bw, uint64_t *sent_r);
void incmig__mig_progress_begin(struct mig *m, const char *what,
                                uint64_t total);
int incmig__mig_get_dirty(struct mig *m, uint64_t *total_r);
int incmig__mig_send_round(struct mig *m, uint32_t round, uint8_t phase,
                           uint64_t *blocks_r);
int incmig__mig_wait_rounds(struct mig *m, uint32_t last);
int incmig__mig_push(struct mig *m);

/* migrate-state.c: the state stream, stop-and-copy */
int incmig__mig_state_precopy(struct mig *m, double *t_paused_r);
int incmig__mig_stop_and_copy(struct mig *m, double t_paused);

/* migrate-pull.c: PULL */
void incmig__mig_stop_reader(struct mig *m);
int incmig__mig_pull(struct mig *m, bool reconnect);

/* migrate-owed.c: the state file */
int incmig__mig_prepare_state(struct mig *m);
int incmig__mig_arm_state(struct mig *m);
void incmig__mig_narrow_state(struct mig *m);
void incmig__mig_say_resume(struct mig *m);
int incmig__mig_state_complete(struct mig *m);
int incmig__mig_resume_state(struct mig *m,
                             const struct incmig_migrate_opts *o);
int incmig__mig_resume_check(struct mig *m);

#endif
