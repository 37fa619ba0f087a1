/* migrate-owed.c: the source's state file (owed.c), for `migrate --resume`.
 *
 * Entry points (migrate-internal.h): incmig__mig_prepare_state writes it
 * after DISKS (the options, the disks, every block owed);
 * incmig__mig_arm_state marks it in the downtime (every block still
 * owed) and incmig__mig_narrow_state puts the final bitmaps in after GO;
 * incmig__mig_state_complete empties it after COMPLETE;
 * incmig__mig_say_resume tells the user how to finish when this process
 * stops after GO.  For a resume, incmig__mig_resume_state reads the
 * options back (struct mig's ro and ro_* hold them, m->o then points to
 * ro) and incmig__mig_resume_check checks the domain against the file and
 * loads what is owed into each struct mdisk's dirty bitmap.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migrate-internal.h"

/* ---- the state file (owed.c) ----------------------------------------------- */

/* What `migrate --resume` needs to finish PULL, prepared (every block
 * owed) once the destination accepted the disks, before the downtime;
 * marked before COMMIT (arm_state) and narrowed to the final bitmaps (all
 * the destination may lack after GO) once GO is sent (narrow_state). */
int incmig__mig_prepare_state(struct mig *m)
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

/* In the downtime, before GO: the mark only.  The file still owes every
 * block (prepare), a superset of what the destination may lack, which is
 * always safe for the source (its disk is whole until COMPLETE, and a
 * resume sends what the destination's BITMAP names).  Narrowing it to
 * the final bitmaps rewrites every word (2 MiB at 64 GiB, 1.6 ms, on the
 * downtime's critical path): that waits until GO is sent (narrow_state). */
int incmig__mig_arm_state(struct mig *m)
{
    double t0 = incmig__now();
    int rc = incmig__owed_arm(&m->owed, NULL, true);

    if (rc)
        ERR("cannot update the state file %s: stopping before the point of "
            "no return", m->owed.path);
    else
        DBG("state file marked in %.1f ms (in the downtime; narrowed and "
            "made durable after GO)", (incmig__now() - t0) * 1000);
    return rc;
}

/* Right after GO, before the file is made durable: what is owed shrinks
 * from every block to the final bitmaps (so that a resume reports, and
 * the source's own count shows, what the destination may really lack). */
void incmig__mig_narrow_state(struct mig *m)
{
    struct incmig__bitmap sets[INCMIG_MAX_DISKS];
    double t0 = incmig__now();

    for (int i = 0; i < m->nd; i++)
        sets[i] = m->d[i].dirty;
    if (incmig__owed_arm(&m->owed, sets, false))
        ERR("the state file %s could not be narrowed to the final bitmaps: "
            "PULL goes on; a resume would offer every block", m->owed.path);
    else
        DBG("state file narrowed in %.1f ms, after GO",
            (incmig__now() - t0) * 1000);
}

/* After GO, when this process stops before COMPLETE: what is owed, and
 * the command that finishes. */
void incmig__mig_say_resume(struct mig *m)
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
int incmig__mig_state_complete(struct mig *m)
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
int incmig__mig_resume_state(struct mig *m, const struct incmig_migrate_opts *o)
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
int incmig__mig_resume_check(struct mig *m)
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
