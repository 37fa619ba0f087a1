/* incmig.h: the public API of libincmig, the live disk migration engine.
 *
 * This is the only header xl-incmig (and any other user) includes.  The
 * library's exports are limited to the symbols declared here by
 * libincmig.sym (a linker version script).
 *
 * Roles (see ARCHITECTURE.md):
 *   incmig_serve()    the source-side disk of a simulated guest: an NBD
 *                     export of an image with write tracking and a control
 *                     socket through which the toolstack pauses it, reads
 *                     and clears its bitmap, resumes or releases it;
 *   incmig_migrate()  the toolstack on the source: PUSH rounds,
 *                     stop-and-copy, then PULL until the destination
 *                     confirms;
 *   incmig_receive()  the destination: writes the pushed blocks, then
 *                     serves the guest through the PULL gate.
 *
 * Every function returns 0 or a negative INCMIG_E* code.
 */
#ifndef INCMIG_H
#define INCMIG_H

#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    INCMIG_OK = 0,
    INCMIG_EINVAL = -1,   /* bad argument, option or configuration */
    INCMIG_EIO = -2,      /* local I/O error */
    INCMIG_EPROTO = -3,   /* the peer sent something malformed */
    INCMIG_ELINK = -4,    /* the connection to the peer was lost */
    INCMIG_ENOSPC = -5,   /* destination out of space */
    INCMIG_EVERSION = -6, /* incompatible protocol version */
    INCMIG_ESIZE = -7,    /* disk size or block size mismatch */
    INCMIG_ENOMEM = -8,
    INCMIG_EPEER = -9,    /* the peer reported a failure */
    INCMIG_ENOTSUP = -10, /* feature not built or not supported here */
    INCMIG_ECANCEL = -11, /* interrupted by the user */
};

const char *incmig_strerror(int rc);

/* Logging: 0 errors only, 1 progress and summary (default), 2 debug.
 * Messages go to `f` (stderr when NULL), each prefixed with `prefix`. */
void incmig_log_setup(int verbosity, FILE *f, const char *prefix);

/* Size strings: "64M", "1G", "4096", "4K".  Returns 0 or INCMIG_EINVAL. */
int incmig_parse_size(const char *s, uint64_t *val_r);

/* ---- source disk of a simulated guest ---------------------------------- */

struct incmig_serve_opts {
    const char *image;        /* raw image file, must exist */
    const char *nbd_uri;      /* "unix:/path" or "tcp:HOST:PORT" */
    const char *control_path; /* unix socket for the toolstack */
    uint32_t block_size;      /* tracking granularity, 0 = 4096 */
    int max_inflight;         /* NBD requests in flight, 0 = default */
};

/* Serves until released by the toolstack or a SIGINT/SIGTERM. */
int incmig_serve(const struct incmig_serve_opts *o);

/* ---- migration ----------------------------------------------------------- */

enum incmig_policy {
    INCMIG_POLICY_DEFAULT = 0,  /* PUSH rounds until converged, then PULL */
    INCMIG_POLICY_PRECOPY = 1,  /* PUSH rounds, remaining blocks while paused */
    INCMIG_POLICY_SINGLE = 2,   /* round 0 only, then stop-and-copy + PULL */
};

struct incmig_migrate_opts {
    const char *domain;       /* "sim:CONTROL_PATH" or a Xen domain name */
    const char *host;         /* destination host (ssh) or HOST:PORT (tcp) */
    const char *ssh_command;  /* NULL = "ssh"; "" = plain TCP to host */
    const char *remote_command; /* receiver command line on the host (ssh) */
    const char *attach_command; /* ssh: command that reattaches to a running
                                 * receiver after a lost link in PULL (its
                                 * --rendezvous socket); NULL = no resume */
    enum incmig_policy policy;
    uint64_t bandwidth;       /* bytes/s cap on the link, 0 = none */
    uint32_t downtime_ms;     /* disk downtime budget for convergence */
    int max_rounds;           /* 0 = default (30) */
    int compress;             /* zlib level 1 for block data */
    int progress;             /* progress line on stderr */
    int reconnect_s;          /* how long PULL retries a broken link */
};

struct incmig_phase_bytes {
    uint64_t push;            /* PUSH rounds, incl. round 0 */
    uint64_t stopcopy;        /* while paused (bitmap, or blocks for PRECOPY) */
    uint64_t pull_demand;     /* PULL blocks fetched on demand */
    uint64_t pull_background; /* PULL blocks pushed in the background */
    uint64_t control;         /* handshake and other records */
};

struct incmig_disk_report {
    char name[64];
    uint64_t size, block_size;
    uint64_t allocated_blocks;      /* found allocated at round 0 */
    uint64_t pushed_blocks;         /* blocks sent by PUSH (all rounds) */
    uint64_t zero_blocks;           /* sent as zero markers */
    uint64_t final_dirty_blocks;    /* in the stop-and-copy bitmap */
    uint64_t demand_blocks;         /* fetched on demand in PULL */
    uint64_t background_blocks;     /* pushed in the background in PULL */
    struct incmig_phase_bytes wire;
    int rounds;
};

struct incmig_report {
    double total_s;           /* start to source release */
    double downtime_ms;       /* guest paused: pause to go */
    double push_s, pull_s;
    double push_rate;         /* bytes/s of round 0 */
    struct incmig_phase_bytes wire;  /* totals */
    uint64_t wire_total;
    int ndisks;
    struct incmig_disk_report disks[8];
    char policy[16];
};

int incmig_migrate(const struct incmig_migrate_opts *o,
                   struct incmig_report *rep);
void incmig_report_print(const struct incmig_report *rep, FILE *f);
void incmig_report_json(const struct incmig_report *rep, FILE *f);

/* ---- destination --------------------------------------------------------- */

struct incmig_receive_opts {
    const char *image;        /* destination image; created or resized */
    const char *nbd_uri;      /* where the destination serves the guest */
    const char *listen;       /* "HOST:PORT" for tcp; NULL = in_fd/out_fd */
    int exit_when_done;       /* exit once PULL is complete and no NBD
                               * client is connected any more */
    int reconnect_s;          /* how long to wait for a broken link */
    int force;                /* overwrite an existing image of another size */
    const char *rendezvous;   /* stdin/stdout mode: unix socket where the
                               * source's next ssh session reattaches
                               * (migrate-receive --attach) after a lost
                               * link during PULL */
};

/* With o->listen NULL the stream is on in_fd/out_fd (ssh's stdin/stdout). */
int incmig_receive(const struct incmig_receive_opts *o, int in_fd,
                   int out_fd);

#ifdef __cplusplus
}
#endif
#endif
