/* test-dst-table.c: the destination state machine (receive.c's dst_table)
 * against the table of docs/specs/incmig-stream.md, "Destination states";
 * and the source's (migrate.c's src_table) against "Source states".
 *
 * The expected table is written here a second time, from the spec, as the
 * list of allowed (state, record, next state) edges; every other pair of
 * a state and a record type (including the types only the destination
 * sends, unknown ones and the optional REPORT) must be refused. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "incmig-internal.h"

struct edge {
    int state;
    uint32_t type;
    int next;
};

#define S(x) INCMIG_DST_##x
#define R(x) INCMIG_REC_##x

/* The spec's table, edge by edge. */
static const struct edge spec[] = {
    { S(HELLO), R(HELLO), S(DISKS) },
    { S(DISKS), R(DISK), S(BASE) },   /* after the last DISK; RECEIVING
                                       * at once without INCMIG_CAP_BASE */
    { S(BASE), R(DECIDE), S(RECEIVING) },    /* after the last DECIDE */
    { S(RECEIVING), R(BLOCKS), S(RECEIVING) },
    { S(RECEIVING), R(ROUND), S(RECEIVING) },
    { S(RECEIVING), R(XEN_STREAM), S(RECEIVING) },
    { S(RECEIVING), R(SUSPEND), S(PAUSED) },
    { S(PAUSED), R(BLOCKS), S(PAUSED) },
    { S(PAUSED), R(ROUND), S(PAUSED) },
    { S(PAUSED), R(BITMAP), S(PAUSED) },
    { S(PAUSED), R(READY), S(READY) },
    { S(READY), R(GO), S(PULL) },
    { S(PULL), R(BLOCKS), S(PULL) },
    { S(PULL), R(PULL_END), S(PULL) },
    { S(PULL), R(END), S(DONE) },
    { S(WAIT_LINK), R(HELLO), S(RESUMING) },
    { S(RESUMING), R(RESUME), S(PULL) },
};

static const struct edge *find(int state, uint32_t type)
{
    for (size_t i = 0; i < sizeof spec / sizeof spec[0]; i++)
        if (spec[i].state == state && spec[i].type == type)
            return &spec[i];
    return NULL;
}

/* Every (state, type) pair: allowed with the spec's next state, or
 * refused; ERROR is taken in every state (and ends the migration). */
static void test_every_pair(void **unused)
{
    (void)unused;
    for (int st = 0; st < INCMIG_DST_NSTATES; st++) {
        for (uint32_t type = 0; type <= 40; type++) {
            const struct edge *e = find(st, type);
            int next = -1, rc = incmig__dst_transition(st, type, &next);
            if (type == INCMIG_REC_ERROR) {
                assert_int_equal(rc, 0);
                assert_int_equal(next, st);
            } else if (e) {
                assert_int_equal(rc, 0);
                assert_int_equal(next, e->next);
            } else {
                if (rc != INCMIG_EPROTO)
                    fail_msg("state %s takes record %u (%s), the spec says "
                             "it must not", incmig__dst_state_name(st), type,
                             incmig__rec_name(type));
            }
        }
        int next;
        assert_int_equal(incmig__dst_transition(st, INCMIG_REC_REPORT, &next),
                         INCMIG_EPROTO);
        assert_int_equal(incmig__dst_transition(st, UINT32_MAX, &next),
                         INCMIG_EPROTO);
    }
}

/* The rules the issue spells out, one by one. */
static void test_rules(void **unused)
{
    int next;
    (void)unused;

    /* GO only once READY was sent */
    for (int st = 0; st < INCMIG_DST_NSTATES; st++)
        if (st != INCMIG_DST_READY)
            assert_int_equal(incmig__dst_transition(st, R(GO), &next),
                             INCMIG_EPROTO);
    /* no BITMAP after READY; no XEN_STREAM outside RECEIVING */
    assert_int_equal(incmig__dst_transition(S(READY), R(BITMAP), &next),
                     INCMIG_EPROTO);
    assert_int_equal(incmig__dst_transition(S(PULL), R(BITMAP), &next),
                     INCMIG_EPROTO);
    for (int st = 0; st < INCMIG_DST_NSTATES; st++)
        if (st != INCMIG_DST_RECEIVING)
            assert_int_equal(incmig__dst_transition(st, R(XEN_STREAM),
                                                    &next), INCMIG_EPROTO);
    /* records only the destination sends are never taken */
    const uint32_t dst_only[] = { R(DISK_ACK), R(PULL_REQ), R(COMPLETE),
                                  R(BASE), R(FLOW) };
    for (int st = 0; st < INCMIG_DST_NSTATES; st++)
        for (size_t i = 0; i < 5; i++)
            assert_int_equal(incmig__dst_transition(st, dst_only[i], &next),
                             INCMIG_EPROTO);
    /* out-of-range states */
    assert_int_equal(incmig__dst_transition(-1, R(HELLO), &next),
                     INCMIG_EPROTO);
    assert_int_equal(incmig__dst_transition(INCMIG_DST_NSTATES, R(HELLO),
                                            &next), INCMIG_EPROTO);
    assert_string_equal(incmig__dst_state_name(S(PAUSED)), "PAUSED");
    assert_string_equal(incmig__dst_state_name(99), "?");
}

/* The source's table (migrate.c's src_table) against the spec's "Source
 * states", column "accepts" (ERROR in every state). */
#define SS(x) INCMIG_SRC_##x
static const struct { int state; uint32_t type; } src_spec[] = {
    { SS(HANDSHAKE), R(HELLO) }, { SS(HANDSHAKE), R(DISK_ACK) },
    { SS(HANDSHAKE), R(BASE) },
    { SS(PUSH), R(ROUND) },
    { SS(STATE), R(FLOW) },
    { SS(STOPCOPY), R(ROUND) }, { SS(STOPCOPY), R(READY) },
    { SS(STOPCOPY), R(FLOW) },
    { SS(PULL), R(PULL_REQ) }, { SS(PULL), R(COMPLETE) },
    { SS(PULL), R(REPORT) },
    { SS(RECONNECT), R(HELLO) }, { SS(RECONNECT), R(BITMAP) },
    { SS(RECONNECT), R(READY) },
};

static void test_src_table(void **unused)
{
    (void)unused;
    for (int st = 0; st < INCMIG_SRC_NSTATES; st++) {
        for (uint32_t type = 0; type <= 40; type++) {
            bool want = type == INCMIG_REC_ERROR;
            for (size_t i = 0; i < sizeof src_spec / sizeof src_spec[0]; i++)
                want |= src_spec[i].state == st && src_spec[i].type == type;
            int rc = incmig__src_accepts(st, type);
            if (want)
                assert_int_equal(rc, 0);
            else if (rc != INCMIG_EPROTO)
                fail_msg("source state %s takes record %u (%s), the spec "
                         "says it must not", incmig__src_state_name(st), type,
                         incmig__rec_name(type));
        }
        assert_int_equal(incmig__src_accepts(st, R(REPORT)),
                         st == SS(PULL) ? 0 : INCMIG_EPROTO);
        assert_int_equal(incmig__src_accepts(st, UINT32_MAX), INCMIG_EPROTO);
    }
    assert_int_equal(incmig__src_accepts(-1, R(ERROR)), INCMIG_EPROTO);
    assert_int_equal(incmig__src_accepts(SS(NSTATES), R(ERROR)), INCMIG_EPROTO);
    assert_string_equal(incmig__src_state_name(SS(STOPCOPY)), "STOPCOPY");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_pair),
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_src_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
