/* test-volume-map.c: the receiver's disk mapping (volume.c) for the two
 * kinds of mapping that are not a file, without Xen or LVM:
 *   - lvm:VG/LV: names parsed and bounded (incmig__lvm_parse), refused
 *     with a message at the options already (check_opts), mapped to the
 *     target disk's lvm_vg/lvm_lv with nothing created (volume_map), two
 *     disks on one LV refused;
 *   - shared: several disks may be shared, not with nbd=; a DISK record
 *     for a disk mapped shared is refused naming it and what to do; the
 *     names reach the target (volume_shared);
 *   - -p for a target other than xen is refused.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "incmig-internal.h"

static void test_lvm_parse(void **state)
{
    char vg[128], lv[128], msg[512];
    char big[200];

    (void)state;
    assert_int_equal(incmig__lvm_parse("vg0/xvda", vg, lv, msg, sizeof msg),
                     0);
    assert_string_equal(vg, "vg0");
    assert_string_equal(lv, "xvda");
    assert_int_equal(incmig__lvm_parse("my.vg_1+/lv-2", vg, lv, msg,
                                       sizeof msg), 0);
    assert_string_equal(vg, "my.vg_1+");
    assert_string_equal(lv, "lv-2");

    static const char *const bad[] = {
        "vg0", "vg0/", "/lv", "vg0/lv/x", "-vg/lv", "vg/-lv", "./lv", "vg/..",
        "vg/l v", "vg/lv;rm", "v$g/lv", "", "vg//lv",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        msg[0] = '\0';
        assert_int_equal(incmig__lvm_parse(bad[i], vg, lv, msg, sizeof msg),
                         INCMIG_EINVAL);
        assert_non_null(strstr(msg, "is not lvm:VG/LV"));
    }
    /* 127 bytes is the longest name */
    memset(big, 'a', 127);
    big[127] = '\0';
    char spec[300];
    snprintf(spec, sizeof spec, "vg/%s", big);
    assert_int_equal(incmig__lvm_parse(spec, vg, lv, msg, sizeof msg), 0);
    assert_int_equal(strlen(lv), 127);
    snprintf(spec, sizeof spec, "vg/%sa", big);
    assert_int_equal(incmig__lvm_parse(spec, vg, lv, msg, sizeof msg),
                     INCMIG_EINVAL);
    snprintf(spec, sizeof spec, "%sa/lv", big);
    assert_int_equal(incmig__lvm_parse(spec, vg, lv, msg, sizeof msg),
                     INCMIG_EINVAL);
}

static void opts(struct incmig_receive_opts *o, int n, const char *const *map)
{
    incmig_receive_opts_init(o);
    o->target = "xen";
    for (int i = 0; i < n; i++) {
        o->disks[i].name = map[2 * i];
        o->disks[i].path = map[2 * i + 1];
    }
    o->ndisks = n;
}

static void test_check_opts(void **state)
{
    struct incmig_receive_opts o;

    (void)state;
    incmig_log_setup(0, NULL, "test");
    static const char *const good[] = { "xvda", "lvm:vg0/a", "xvdb", "shared",
                                        "xvdc", "shared" };
    opts(&o, 3, good);
    assert_int_equal(incmig__volume_check_opts(&o), 0);
    o.leave_paused = 1;
    assert_int_equal(incmig__volume_check_opts(&o), 0);
    o.target = NULL;                 /* sim: -p is the xen target's */
    assert_int_equal(incmig__volume_check_opts(&o), INCMIG_EINVAL);

    static const char *const badlvm[] = { "xvda", "lvm:vg0" };
    opts(&o, 1, badlvm);
    assert_int_equal(incmig__volume_check_opts(&o), INCMIG_EINVAL);

    static const char *const twolv[] = { "xvda", "lvm:vg0/a", "xvdb",
                                         "lvm:vg0/a" };
    opts(&o, 2, twolv);
    assert_int_equal(incmig__volume_check_opts(&o), INCMIG_EINVAL);

    static const char *const sharednbd[] = { "xvda", "shared" };
    opts(&o, 1, sharednbd);
    o.disks[0].nbd_uri = "unix:/tmp/x.sock";
    assert_int_equal(incmig__volume_check_opts(&o), INCMIG_EINVAL);
}

static void rec(struct incmig__disk_rec *r, const char *name)
{
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    r->size = 64 << 20;
    r->block_size = 4096;
}

static void test_map(void **state)
{
    struct incmig_receive_opts o;
    struct incmig__disk_rec recs[2];
    struct incmig__target_disk out[2];
    struct incmig__target t;
    char msg[INCMIG_MSG_MAX];
    int bad = -2;

    (void)state;
    static const char *const map[] = { "xvda", "lvm:vg0/guest-xvda", "xvdb",
                                       "shared" };
    opts(&o, 2, map);
    rec(&recs[0], "xvda");
    memset(out, 0, sizeof out);
    assert_int_equal(incmig__volume_map(&o, recs, 1, out, &bad, msg,
                                        sizeof msg), 0);
    assert_int_equal(bad, -1);
    assert_string_equal(out[0].path, "lvm:vg0/guest-xvda");
    assert_string_equal(out[0].lvm_vg, "vg0");
    assert_string_equal(out[0].lvm_lv, "guest-xvda");
    assert_false(out[0].reuse);
    assert_int_equal(out[0].size, 64 << 20);
    assert_null(strchr(out[0].nbd_uri, ':'));
    /* nothing was created, not even in the working directory */
    assert_int_not_equal(access("lvm:vg0", F_OK), 0);

    /* the source migrates a disk this receiver maps as shared */
    rec(&recs[1], "xvdb");
    memset(out, 0, sizeof out);
    msg[0] = '\0';
    assert_int_equal(incmig__volume_map(&o, recs, 2, out, &bad, msg,
                                        sizeof msg), INCMIG_EINVAL);
    assert_int_equal(bad, 1);
    assert_non_null(strstr(msg, "disk xvdb is on shared storage"));
    assert_non_null(strstr(msg, "--shared-disk xvdb"));

    /* the shared names reach the target */
    memset(&t, 0, sizeof t);
    incmig__volume_shared(&o, &t);
    assert_int_equal(t.nshared, 1);
    assert_string_equal(t.shared[0], "xvdb");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lvm_parse),
        cmocka_unit_test(test_check_opts),
        cmocka_unit_test(test_map),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
