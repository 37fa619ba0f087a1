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
 *   incmig_receive()  the destination: creates each disk's volume where
 *                     its own mapping says, writes the pushed blocks,
 *                     restores the domain through a target backend, then
 *                     runs it through the PULL gates;
 *   incmig_migrate_main(), incmig_receive_main()
 *                     the two whole commands, options as argv strings, for
 *                     a toolstack: xl-incmig, and xl with its
 *                     --incremental-storage patch, run these.
 *
 * Every function returns 0 or a negative INCMIG_E* code, except the *_main
 * commands, which return an exit status as main() does.
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

/* Ask every running incmig_* call to end cleanly: each then returns
 * INCMIG_ECANCEL.  After the point of no return PULL is not abandoned:
 * what is still owed stays in the state file, and the call logs the
 * command that finishes (--resume).  Async-signal-safe: the caller's SIGINT/SIGTERM
 * handlers call it.  The library installs no signal handler and never
 * exits the process; callers should ignore SIGPIPE (a lost peer is then
 * an error return, INCMIG_ELINK). */
void incmig_stop(void);

/* Logging: 0 errors only, 1 progress and summary (default), 2 debug.
 * Messages go to `f` (stderr when NULL), each prefixed with `prefix`. */
void incmig_log_setup(int verbosity, FILE *f, const char *prefix);

/* Size strings: "64M", "1G", "4096", "4K".  Returns 0 or INCMIG_EINVAL. */
int incmig_parse_size(const char *s, uint64_t *val_r);

/* Who may connect, for the whole process (call once, before the
 * commands below).  TCP: with keys (a PSK file of USERNAME:HEXKEY lines,
 * or an X.509 directory in QEMU's layout) every TCP connection, the
 * migration stream and NBD (STARTTLS), uses TLS and refuses peers
 * without it; without keys, TCP is refused off loopback unless tls_off.
 * Unix sockets: created 0600 (0660 with socket_group), peers other than
 * our uid, root or the group are refused. */
struct incmig_security {
    int tls_off;              /* --tls=off: plain TCP anywhere */
    const char *psk_file;     /* --tls-psk */
    const char *psk_user;     /* --tls-username: the client's key, NULL =
                               * the file's first */
    const char *x509_dir;     /* --tls-x509 */
    const char *socket_group; /* --socket-group: name or gid, NULL = none */
};
int incmig_security_setup(const struct incmig_security *o);

/* The command-line options that fill it, shared by every command that
 * opens a transport: put INCMIG_SECURITY_OPTIONS in a getopt_long table
 * and hand the codes to incmig_security_option (1: taken; 0: not one of
 * them; -1: a bad value, said on stderr as CMD's usage error).
 * incmig_security_help: their lines for a --help text. */
enum { INCMIG_OPT_TLS = 0x1000, INCMIG_OPT_TLS_PSK, INCMIG_OPT_TLS_USER,
       INCMIG_OPT_TLS_X509, INCMIG_OPT_SOCKET_GROUP };
#define INCMIG_SECURITY_OPTIONS                                            \
    { "tls", required_argument, NULL, INCMIG_OPT_TLS },                   \
    { "tls-psk", required_argument, NULL, INCMIG_OPT_TLS_PSK },           \
    { "tls-username", required_argument, NULL, INCMIG_OPT_TLS_USER },     \
    { "tls-x509", required_argument, NULL, INCMIG_OPT_TLS_X509 },         \
    { "socket-group", required_argument, NULL, INCMIG_OPT_SOCKET_GROUP }
int incmig_security_option(struct incmig_security *s, const char *cmd,
                           int code, const char *arg);
const char *incmig_security_help(void);

/* A rendezvous NAME (no '/') lives in the private runtime directory
 * (/run/incmig, $XDG_RUNTIME_DIR/incmig); a path is taken as it is. */
int incmig_rendezvous_path(const char *name, char *buf, size_t cap);

/* ---- the simulated domain on the source ----------------------------------- */

struct incmig_serve_disk {
    const char *name;         /* disk name (the receiver maps it) */
    const char *image;        /* raw image file, must exist */
    const char *nbd_uri;      /* "unix:/path" or "tcp:HOST:PORT" */
    uint32_t block_size;      /* tracking granularity, 0 = 4096 */
};

#define INCMIG_SERVE_MAX_DISKS 8
#define INCMIG_FAULT_CORRUPT_STATE 1u  /* tests: flip a bit of the state */

struct incmig_serve_opts {
    const char *name;         /* domain name, NULL = the first disk's */
    int ndisks;
    struct incmig_serve_disk disks[INCMIG_SERVE_MAX_DISKS];
    const char *control_path; /* unix socket for the toolstack */
    int max_inflight;         /* NBD requests in flight, 0 = default */
    uint64_t memory;          /* bytes of simulated memory, 0 = 4 MiB */
    unsigned faults;          /* INCMIG_FAULT_*, for tests only */
};
void incmig_serve_opts_init(struct incmig_serve_opts *o);
void incmig_serve_opts_dispose(struct incmig_serve_opts *o);

/* Serves until released by the toolstack or stopped by incmig_stop(). */
int incmig_serve(const struct incmig_serve_opts *o);

/* ---- migration ----------------------------------------------------------- */

#define INCMIG_MAX_SHARED 8

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
    int compress;             /* block data: 0 adaptive (zstd when the link
                               * is the bottleneck), 1 always, -1 never */
    int progress;             /* progress line on stderr */
    int reconnect_s;          /* how long PULL retries a broken link */
    int timeout_s;            /* the handshake's deadline; the receiver's
                               * silence before GO is bounded by 4 times
                               * it (it may be restoring the domain)
                               * (0 = 30 s) */
    const char *control_path; /* unix socket taking BANDWIDTH requests
                               * while the migration runs, or NULL */
    int no_yield;             /* without a cap, PUSH yields to the guest's
                               * I/O (its latency at the export) unless
                               * this is set (--bandwidth max) */
    const char *state_dir;    /* where the state file of a PULL goes
                               * (NULL: /run/incmig, or
                               * $XDG_RUNTIME_DIR/incmig for non-root) */
    const char *resume;       /* finish the PULL of this state file (a
                               * path, or a migration id in state_dir):
                               * domain, host and transport come from it;
                               * reconnect_s, timeout_s, progress from here
                               * when set */
    /* Xen domains only (a simulated domain refuses them): */
    int nshared;              /* disks on shared storage: not tracked, not */
    const char *shared_disks[INCMIG_MAX_SHARED]; /* pushed (--shared-disk) */
    const char *config_file;  /* sent instead of the domain's stored
                               * configuration (xl's -C): libxl's JSON, or
                               * an xl config file (xl create --dryrun
                               * converts it) */
    int debug;                /* libxl's suspend with LIBXL_SUSPEND_DEBUG
                               * (xl's --debug) */
};

/* Change the cap of the migration whose control socket is control_path
 * (0: no cap); *bytes_sent_r (if not NULL) gets its bytes sent so far. */
int incmig_migrate_set_bandwidth(const char *control_path, uint64_t bandwidth,
                                 uint64_t *bytes_sent_r);

struct incmig_phase_bytes {
    uint64_t push;            /* PUSH rounds, incl. round 0 */
    uint64_t stopcopy;        /* while paused (bitmap, or blocks for PRECOPY) */
    uint64_t pull_demand;     /* PULL blocks fetched on demand */
    uint64_t pull_background; /* PULL blocks pushed in the background */
    uint64_t control;         /* handshake and other records */
    uint64_t state;           /* the domain's state stream (XEN_STREAM) */
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
    /* incremental migration: how round 0 was chosen ("full", "union",
     * "checksum"), why, and the blocks it had to send */
    char base[16];
    char base_reason[1024];
    uint64_t base_blocks;
    double base_s;                  /* deciding it, checksums included */
};

struct incmig_report {
    double total_s;           /* start to source release */
    double downtime_ms;       /* domain paused (as its backend reports)
                               * to the destination accepting its I/O:
                               * go_ms + dst_serve_ms (go_ms alone until
                               * the destination's REPORT arrives); the
                               * one-way transit of GO is not in it */
    double push_s, pull_s;
    double push_rate;         /* bytes/s of round 0 */
    struct incmig_phase_bytes wire;  /* totals */
    uint64_t wire_total;
    double state_s;           /* state pre-copy: start to end of stream */
    uint64_t state_bytes;     /* the domain's state stream, unframed */
    double dst_pull_s;        /* the destination's figures (REPORT) */
    double dst_restore_s;
    double dst_max_wait_ms;   /* longest a guest request waited in PULL */
    uint64_t dst_waits;       /* guest requests that waited in PULL */
    int ndisks;
    struct incmig_disk_report disks[8];
    char policy[16];
    double go_ms;             /* domain paused to GO sent */
    double dst_serve_ms;      /* GO received to the guest's I/O accepted
                               * on the destination (REPORT) */
    uint64_t push_yield_backoffs; /* PUSH yielding: times it slowed down
                               * for the guest */
    uint64_t push_yield_probes;   /* times it stopped for 0.1 s to measure
                               * the guest's latency alone */
    uint64_t compressed_in;   /* block bytes sent compressed, all phases */
    uint64_t compressed_out;  /*   and what they took compressed */
    uint64_t push_idle_reads; /* PUSH reads submitted at the IDLE I/O
                               * class (while yielding) */
};
void incmig_report_init(struct incmig_report *rep);
void incmig_report_dispose(struct incmig_report *rep);

void incmig_migrate_opts_init(struct incmig_migrate_opts *o);
void incmig_migrate_opts_dispose(struct incmig_migrate_opts *o);
int incmig_migrate(const struct incmig_migrate_opts *o,
                   struct incmig_report *rep);
void incmig_report_print(const struct incmig_report *rep, FILE *f);
void incmig_report_json(const struct incmig_report *rep, FILE *f);

/* ---- a copy's lineage (incremental migration) ----------------------------- */

/* What the copy at `image` proves (docs/specs: "Incremental migration"):
 * valid when its claim to generation gen holds; has_bitmap when the
 * blocks written since it (of block_size bytes; 0 = 4096) are known, then
 * changed_blocks of blocks; why, when not.  Reads only.  0, or
 * INCMIG_EINVAL / INCMIG_ENOMEM. */
struct incmig_lineage_info {
    int found;                /* IMAGE.incmig exists */
    int valid;
    int has_bitmap;
    char gen[33];             /* hex, "" when none */
    uint64_t blocks, changed_blocks;
    char why[512];
};
int incmig_lineage_info(const char *image, uint32_t block_size,
                        struct incmig_lineage_info *out);

/* ---- destination --------------------------------------------------------- */

/* Where the receiver puts each disk: the receiver decides, the source
 * never names a destination path. */
#define INCMIG_RECEIVE_MAX_DISKS 8
#define INCMIG_RECEIVE_MAX_ROOTS 16
struct incmig_receive_disk {
    const char *name;         /* the disk's name in the source's DISK record */
    const char *path;         /* its volume here: created by this migration
                               * (never an existing file, never through a
                               * symbolic link), inside one of the roots;
                               * "lvm:VG/LV": a logical volume created in
                               * VG (xen target); "shared": on shared
                               * storage, not migrated */
    const char *nbd_uri;      /* sim target: "unix:PATH" or "tcp:HOST:PORT"
                               * where the guest finds the disk after GO */
};

struct incmig_receive_opts {
    const char *target;       /* target backend: "sim" (NULL = "sim") */
    int ndisks;               /* disks[0..ndisks-1]: the mapping */
    struct incmig_receive_disk disks[INCMIG_RECEIVE_MAX_DISKS];
    int nroots;               /* allowed directories for the volumes; none:
                               * each disk's path may only be the one its
                               * mapping names */
    const char *roots[INCMIG_RECEIVE_MAX_ROOTS];
    const char *image;        /* shorthand for a one-disk domain, whatever
                               * its disk's name (with nbd_uri); not
                               * together with disks[] */
    const char *nbd_uri;
    const char *listen;       /* "HOST:PORT" for tcp; NULL = in_fd/out_fd */
    int exit_when_done;       /* exit once PULL is complete and the target
                               * is not in use any more (sim: no NBD client) */
    int reconnect_s;          /* how long to wait for a broken link */
    int timeout_s;            /* a connection's handshake must complete
                               * this long (0 = 30 s); the source may stay
                               * silent before GO 4 times as long */
    const char *rendezvous;   /* stdin/stdout mode: unix socket where the
                               * source's next ssh session reattaches
                               * (migrate-receive --attach) after a lost
                               * link during PULL */
    const char *state_dir;    /* as incmig_migrate_opts' */
    const char *resume;       /* restart on this state file (path or
                               * migration id) after this receiver died in
                               * PULL: serves the domain's disks again and
                               * waits for the source; mapping, target,
                               * --listen/--rendezvous come from the file */
    int leave_paused;         /* xen target: at GO the domain takes its
                               * name but stays paused (xl's -p) */
};

void incmig_receive_opts_init(struct incmig_receive_opts *o);
void incmig_receive_opts_dispose(struct incmig_receive_opts *o);

/* With o->listen NULL the stream is on in_fd/out_fd (ssh's stdin/stdout). */
int incmig_receive(const struct incmig_receive_opts *o, int in_fd,
                   int out_fd);

/* ---- the commands, for a toolstack (xl-incmig; xl --incremental-storage) -- */

/* `migrate [options] DOMAIN HOST`, argv as getopt sees it (argv[0] is the
 * command's name, not an option).  The options are migrate's in
 * xl-incmig(1): -s SSHCMD as xl's -s (default "ssh"; "" = plain TCP to
 * HOST:PORT), the --dest-* mapping passed to the receiver, the policy and
 * limits, --json; --incremental-storage is accepted and ignored (xl's
 * switch).  DOMAIN is a Xen domain's name or id, or sim:CONTROL_SOCKET.
 * `name` prefixes the messages and the usage line ("xl-incmig migrate");
 * `receiver` is the receiver's command on HOST over ssh (-C overrides it).
 * The report goes to stdout (verbosity >= 1), and as JSON with --json.
 * While it runs SIGINT/SIGTERM call incmig_stop() and SIGPIPE is ignored;
 * the previous dispositions are restored before it returns.
 * Returns 0 (done, or --help), 1 (the migration failed, with the failure
 * rules of incmig_migrate) or 2 (usage error, nothing was contacted). */
int incmig_migrate_main(const char *name, const char *receiver, int argc,
                        char **argv);

/* `migrate-receive [options]`, options as in xl-incmig(1); the stream is on
 * in_fd/out_fd (the ssh session's stdin/stdout) unless --listen.  Signals
 * as incmig_migrate_main, and SIGHUP is ignored (the receiver outlives the
 * ssh session that started it).  Returns 0, 1 or 2 as incmig_migrate_main;
 * nothing is ever written to out_fd but the stream. */
int incmig_receive_main(const char *name, int argc, char **argv, int in_fd,
                        int out_fd);

#ifdef __cplusplus
}
#endif
#endif
