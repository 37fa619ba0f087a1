/* report.c: the figures of a migration, for people and for programs.
 *
 * The three figures the field uses come first: total migration time,
 * total data transferred, downtime.  Then bytes on the wire per phase and
 * per disk the block counts that explain them.  The JSON form carries the
 * same numbers with stable key names (documented in xl-incmig(1)).
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "incmig-internal.h"

/* A JSON string's contents. */
static void json_str(FILE *f, const char *s)
{
    for (const char *p = s; *p; p++)
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
            fprintf(f, "\\u%04x", (unsigned char)*p);
        else
            fputc(*p, f);
}

static void mib(FILE *f, const char *label, uint64_t bytes)
{
    fprintf(f, "  %-26s %10.1f MiB  (%" PRIu64 " bytes)\n", label,
            bytes / 1048576.0, bytes);
}

void incmig_report_print(const struct incmig_report *r, FILE *f)
{
    fprintf(f, "migration report (policy %s)\n", r->policy);
    fprintf(f, "  %-26s %10.3f s\n", "total migration time", r->total_s);
    mib(f, "total data transferred", r->wire_total);
    fprintf(f, "  %-26s %10.1f ms (pause to GO %.1f, GO to serving %.1f)"
            "\n", "disk downtime", r->downtime_ms, r->go_ms, r->dst_serve_ms);
    fprintf(f, "  %-26s %10.3f s (round 0 at %.1f MB/s)\n", "PUSH time",
            r->push_s, r->push_rate / 1e6);
    if (r->push_yield_probes)
        fprintf(f, "  %-26s %10" PRIu64 " times (%" PRIu64 " probes of the "
                "guest alone; %" PRIu64 " reads at the idle I/O class)\n",
                "PUSH yielded to the guest", r->push_yield_backoffs,
                r->push_yield_probes, r->push_idle_reads);
    fprintf(f, "  %-26s %10.3f s (%.1f MiB)\n", "domain state pre-copy",
            r->state_s, r->state_bytes / 1048576.0);
    fprintf(f, "  %-26s %10.3f s\n", "PULL time", r->pull_s);
    if (r->dst_waits || r->dst_pull_s > 0)
        fprintf(f, "  %-26s %10" PRIu64 " (longest %.1f ms)\n",
                "guest requests that waited", r->dst_waits, r->dst_max_wait_ms);
    if (r->compressed_in)
        fprintf(f, "  %-26s %10.1f MiB to %.1f MiB\n", "compressed",
                r->compressed_in / 1048576.0, r->compressed_out / 1048576.0);
    fprintf(f, "bytes on the wire by phase\n");
    mib(f, "PUSH rounds", r->wire.push);
    mib(f, "domain state", r->wire.state);
    mib(f, "stop-and-copy", r->wire.stopcopy);
    mib(f, "PULL on demand", r->wire.pull_demand);
    mib(f, "PULL background", r->wire.pull_background);
    mib(f, "handshake and control", r->wire.control);
    for (int i = 0; i < r->ndisks; i++) {
        const struct incmig_disk_report *d = &r->disks[i];
        fprintf(f, "disk %d (%s): %" PRIu64 " bytes, %" PRIu64 "-byte blocks\n",
                i, d->name, d->size, d->block_size);
        fprintf(f, "  %-26s %s, %" PRIu64 " blocks (%.3f s): %s\n",
                "round 0", d->base, d->base_blocks, d->base_s, d->base_reason);
        fprintf(f, "  %-26s %" PRIu64 "\n", "allocated blocks", d->allocated_blocks);
        fprintf(f, "  %-26s %" PRIu64 " (%" PRIu64 " as zero markers) in %d "
                "round(s)\n", "pushed blocks", d->pushed_blocks,
                d->zero_blocks, d->rounds);
        fprintf(f, "  %-26s %" PRIu64 "\n", "stop-and-copy bitmap blocks",
                d->final_dirty_blocks);
        fprintf(f, "  %-26s %" PRIu64 "\n", "PULL blocks on demand",
                d->demand_blocks);
        fprintf(f, "  %-26s %" PRIu64 "\n", "PULL blocks background",
                d->background_blocks);
        fprintf(f, "  %-26s %.1f / %.1f / %.1f / %.1f MiB\n",
                "push/stop/demand/backgr.", d->wire.push / 1048576.0,
                d->wire.stopcopy / 1048576.0, d->wire.pull_demand / 1048576.0,
                d->wire.pull_background / 1048576.0);
    }
}

void incmig_report_json(const struct incmig_report *r, FILE *f)
{
    fprintf(f, "{\"policy\":\"%s\",\"total_s\":%.6f,\"downtime_ms\":%.3f,"
            "\"wire_bytes\":%" PRIu64 ",\"push_s\":%.6f,\"pull_s\":%.6f,"
            "\"push_rate_bps\":%.0f,\"wire\":{\"push\":%" PRIu64
            ",\"stopcopy\":%" PRIu64 ",\"pull_demand\":%" PRIu64
            ",\"pull_background\":%" PRIu64 ",\"control\":%" PRIu64
            ",\"state\":%" PRIu64 "},\"state_s\":%.6f,\"state_bytes\":%"
            PRIu64 ",\"dst_pull_s\":%.6f,\"dst_restore_s\":%.6f,"
            "\"dst_waits\":%" PRIu64 ",\"dst_max_wait_ms\":%.3f,"
            "\"go_ms\":%.3f,\"dst_serve_ms\":%.3f,"
            "\"push_yield_backoffs\":%" PRIu64 ",\"push_yield_probes\":%"
            PRIu64 ",\"push_idle_reads\":%" PRIu64
            ",\"compressed_in_bytes\":%" PRIu64
            ",\"compressed_out_bytes\":%" PRIu64 ",\"disks\":[",
            r->policy, r->total_s, r->downtime_ms, r->wire_total, r->push_s,
            r->pull_s, r->push_rate, r->wire.push, r->wire.stopcopy,
            r->wire.pull_demand, r->wire.pull_background, r->wire.control,
            r->wire.state, r->state_s, r->state_bytes, r->dst_pull_s,
            r->dst_restore_s, r->dst_waits, r->dst_max_wait_ms, r->go_ms,
            r->dst_serve_ms, r->push_yield_backoffs, r->push_yield_probes,
            r->push_idle_reads, r->compressed_in, r->compressed_out);
    for (int i = 0; i < r->ndisks; i++) {
        const struct incmig_disk_report *d = &r->disks[i];
        fprintf(f, "%s{\"name\":\"", i ? "," : "");
        json_str(f, d->name);
        fprintf(f, "\",\"base\":\"%s\",\"base_reason\":\"", d->base);
        json_str(f, d->base_reason);
        fprintf(f, "\",\"base_blocks\":%" PRIu64 ",\"base_s\":%.6f",
                d->base_blocks, d->base_s);
        fprintf(f, ",\"size\":%" PRIu64 ",\"block_size\":%" PRIu64
                ",\"allocated_blocks\":%" PRIu64 ",\"pushed_blocks\":%" PRIu64
                ",\"zero_blocks\":%" PRIu64 ",\"rounds\":%d"
                ",\"final_dirty_blocks\":%" PRIu64 ",\"demand_blocks\":%" PRIu64
                ",\"background_blocks\":%" PRIu64 ",\"wire\":{\"push\":%"
                PRIu64 ",\"stopcopy\":%" PRIu64 ",\"pull_demand\":%" PRIu64
                ",\"pull_background\":%" PRIu64 "}}",
                d->size, d->block_size, d->allocated_blocks, d->pushed_blocks,
                d->zero_blocks, d->rounds, d->final_dirty_blocks,
                d->demand_blocks, d->background_blocks, d->wire.push,
                d->wire.stopcopy, d->wire.pull_demand, d->wire.pull_background);
    }
    fprintf(f, "]}\n");
}

void incmig_report_init(struct incmig_report *rep)
{
    memset(rep, 0, sizeof *rep);
}

void incmig_report_dispose(struct incmig_report *rep)
{
    memset(rep, 0, sizeof *rep);
}
