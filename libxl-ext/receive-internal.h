/* receive-internal.h: what the parts of the receiver share (receive.c,
 * receive-link.c, receive-handshake.c, receive-data.c, receive-pull.c,
 * receive-owed.c; receive.c's opening comment says which does what).
 *
 * Data layout: struct recv is one incoming migration, on the stack of
 * incmig_receive (receive.c) and passed to every function below: the
 * stream to the source, what HELLO and DISK negotiated, one struct rdisk
 * per disk (its volume, its PUSH writer with the writes in flight, its
 * stop-and-copy bitmap, its PULL gate, the claim of a reused copy), the
 * state file, and the domain's state stream on its way to the restore
 * thread.  Two locks: slock (the stream and link_ok) against the gates'
 * NBD worker threads, which ask the source for blocks; rlock (restore_*,
 * t_state_end) against the restore thread.
 *
 * Functions: the incmig__recv_on_* are handlers of dst_table (receive.c),
 * one per record and state; each returns 0, STAY or an INCMIG_E* code.
 * Everything else of the receiver is static in its file.
 */
#ifndef INCMIG_RECEIVE_INTERNAL_H
#define INCMIG_RECEIVE_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

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

/* ---- receive.c ----------------------------------------------------------- */

/* ERROR to the source (once: then say nothing more), not logged again. */
int incmig__recv_send_msg(struct recv *r, int code, const char *msg);
/* Log a failure and send it to the source. */
int incmig__recv_send_error(struct recv *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Every record from the source goes through here, and only here. */
int incmig__recv_dispatch(struct recv *r, const struct incmig__rec *rec);

/* ---- receive-link.c: the stream to the source ---------------------------- */

int incmig__recv_open_stream(struct recv *r, int in_fd, int out_fd);
int incmig__recv_accept_source(struct recv *r, double end, int *fd_r);
int incmig__recv_record(struct recv *r, struct incmig__rec *rec);
int incmig__recv_relink(struct recv *r);
bool incmig__recv_late_source(struct recv *r);

/* ---- receive-handshake.c: HELLO, DISK, DECIDE ---------------------------- */

int incmig__recv_on_hello(struct recv *r, const struct incmig__rec *rec);
int incmig__recv_on_disk(struct recv *r, const struct incmig__rec *rec);
int incmig__recv_on_decide(struct recv *r, const struct incmig__rec *rec);

/* ---- receive-data.c: before GO ------------------------------------------- */

int incmig__recv_on_blocks(struct recv *r, const struct incmig__rec *rec);
int incmig__recv_on_round(struct recv *r, const struct incmig__rec *rec);
int incmig__recv_on_state(struct recv *r, const struct incmig__rec *rec);
int incmig__recv_on_suspend(struct recv *r, const struct incmig__rec *rec);
int incmig__recv_on_bitmap(struct recv *r, const struct incmig__rec *rec);
int incmig__recv_on_ready(struct recv *r, const struct incmig__rec *rec);
int incmig__recv_start_restore(struct recv *r);
/* Ends the state stream (EOF on the pipe) and waits for restore. */
int incmig__recv_finish_restore(struct recv *r);
/* Wait for every queued write of d (ends every overlap). */
int incmig__recv_drain_disk(struct rdisk *d);
/* A failure before GO: each reused copy keeps its claim. */
void incmig__recv_keep_claims(struct recv *r);

/* ---- receive-pull.c: GO and after ---------------------------------------- */

/* Gate callback, on NBD worker threads: ask the source for blocks. */
int incmig__recv_request_blocks(void *opaque, uint32_t disk, uint64_t first,
                                uint32_t n);
void incmig__recv_maybe_complete(struct recv *r);
int incmig__recv_on_go(struct recv *r, const struct incmig__rec *rec);
int incmig__recv_on_pull_end(struct recv *r, const struct incmig__rec *rec);
int incmig__recv_on_end(struct recv *r, const struct incmig__rec *rec);
int incmig__recv_on_resume(struct recv *r, const struct incmig__rec *rec);

/* ---- receive-owed.c: the state file -------------------------------------- */

int incmig__recv_prepare_state(struct recv *r);
int incmig__recv_arm_state(struct recv *r);
/* What a stop or a lost source leaves: what is owed, and how to finish. */
void incmig__recv_say_resume(struct recv *r);
/* migrate-receive --resume: the receiver rebuilt from its state file. */
int incmig__recv_resume_state(struct recv *r);

#endif
