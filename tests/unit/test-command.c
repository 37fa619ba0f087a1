/* test-command.c: incmig_migrate_main and incmig_receive_main as xl calls
 * them (the public library only, in a process that has its own signal
 * handlers and has used getopt before): xl's --incremental-storage switch
 * is accepted, and xl's -C, -p, -e and --debug with their meaning, exit
 * statuses are 0/1/2, a second call parses its argv
 * from the start, and the caller's signal dispositions are given back. */
#include "config.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "incmig.h"

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])))

static void callers_handler(int sig)
{
    (void)sig;
}

/* stdout to /dev/null while a --help prints */
static int quiet_stdout(void)
{
    fflush(stdout);
    int saved = dup(1);
    FILE *null = freopen("/dev/null", "w", stdout);
    (void)null;
    return saved;
}

static void restore_stdout(int saved)
{
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
}

static void test_xl_switch(void **state)
{
    (void)state;
    char *m[] = { "migrate", "--incremental-storage", "--help" };
    char *r[] = { "migrate-receive", "--incremental-storage", "--help" };
    int saved = quiet_stdout();
    int rm = incmig_migrate_main("xl migrate --incremental-storage",
                                 "xl migrate-receive --incremental-storage",
                                 ARGC(m), m);
    int rr = incmig_receive_main("xl migrate-receive --incremental-storage",
                                 ARGC(r), r, 0, 1);
    restore_stdout(saved);
    assert_int_equal(rm, 0);
    assert_int_equal(rr, 0);
}

static void test_usage_errors(void **state)
{
    (void)state;
    char *none[] = { "migrate" };
    char *three[] = { "migrate", "a", "b", "c" };
    char *rounds[] = { "migrate", "--incremental-storage", "--max-rounds", "0",
                       "d", "h" };
    char *unknown[] = { "migrate", "--frob", "d", "h" };
    char *recv[] = { "migrate-receive", "--disk", "xvda" };
    /* -C is xl's config file (never run on HOST as a command), and a
     * simulated domain has none */
    char *xl_c[] = { "migrate", "--incremental-storage", "-C", "/etc/xen/vm.cfg",
                     "-s", "", "sim:/nonexistent/x.ctl", "127.0.0.1:1" };
    char *shared_sim[] = { "migrate", "--shared-disk", "xvdb", "-s", "",
                           "sim:/nonexistent/x.ctl", "127.0.0.1:1" };
    char *shared_twice[] = { "migrate", "--shared-disk", "xvdb",
                             "--shared-disk", "xvdb", "dom", "h" };
    /* -p with plain TCP is the receiver's option */
    char *p_tcp[] = { "migrate", "-p", "-s", "", "dom", "127.0.0.1:1" };
    char *c_empty[] = { "migrate", "-C", "", "-s", "", "dom", "127.0.0.1:1" };
    char *resume_p[] = { "migrate", "--resume", "0123", "-p" };
    char *recv_p[] = { "migrate-receive", "--resume", "0123", "-p" };

    assert_int_equal(incmig_migrate_main("t", NULL, ARGC(none), none), 2);
    assert_int_equal(incmig_migrate_main("t", NULL, ARGC(three), three), 2);
    assert_int_equal(incmig_migrate_main("t", NULL, ARGC(rounds), rounds), 2);
    assert_int_equal(incmig_migrate_main("t", NULL, ARGC(unknown), unknown), 2);
    assert_int_equal(incmig_receive_main("t", ARGC(recv), recv, 0, 1), 2);
    assert_int_equal(incmig_migrate_main("t", NULL, ARGC(xl_c), xl_c), 2);
    assert_int_equal(incmig_migrate_main("t", NULL, ARGC(shared_sim),
                                         shared_sim), 2);
    assert_int_equal(incmig_migrate_main("t", NULL, ARGC(shared_twice),
                                         shared_twice), 2);
    assert_int_equal(incmig_migrate_main("t", NULL, ARGC(p_tcp), p_tcp), 2);
    assert_int_equal(incmig_migrate_main("t", NULL, ARGC(c_empty), c_empty),
                     2);
    assert_int_equal(incmig_migrate_main("t", NULL, ARGC(resume_p), resume_p),
                     2);
    assert_int_equal(incmig_receive_main("t", ARGC(recv_p), recv_p, 0, 1), 2);
}

/* xl's -e is taken (incmig's receiver never waits for the domain's death)
 * and -p/--debug reach the parse: the help still prints, status 0. */
static void test_xl_options(void **state)
{
    (void)state;
    char *m[] = { "migrate", "-e", "--debug", "--help" };
    char *r[] = { "migrate-receive", "-e", "-d", "-p", "--help" };
    int saved = quiet_stdout();
    int rm = incmig_migrate_main("t", NULL, ARGC(m), m);
    int rr = incmig_receive_main("t", ARGC(r), r, 0, 1);
    restore_stdout(saved);
    assert_int_equal(rm, 0);
    assert_int_equal(rr, 0);
}

/* A runtime failure (no such simulated domain: nothing is contacted) after
 * the signals were taken; a parse that did not start over would see "" as
 * an operand and give a usage error (2) instead. */
static void test_failure_and_signals(void **state)
{
    (void)state;
    char *help[] = { "migrate", "--help" };
    char *mig[] = { "migrate", "-s", "", "--no-progress",
                    "sim:/nonexistent/incmig-test.ctl", "127.0.0.1:1" };
    char *recv[] = { "migrate-receive", "--target", "nosuch", "--image",
                     "/nonexistent/x.img", "--nbd", "unix:/nonexistent/x.sock" };
    struct sigaction mine = { .sa_handler = callers_handler }, now;

    sigemptyset(&mine.sa_mask);
    sigaction(SIGINT, &mine, NULL);
    sigaction(SIGTERM, &mine, NULL);
    sigaction(SIGHUP, &mine, NULL);
    signal(SIGPIPE, SIG_DFL);

    int saved = quiet_stdout();
    assert_int_equal(incmig_migrate_main("t", NULL, ARGC(help), help), 0);
    restore_stdout(saved);
    assert_int_equal(incmig_migrate_main("t", NULL, ARGC(mig), mig), 1);
    assert_int_equal(incmig_receive_main("t", ARGC(recv), recv, 0, 1), 1);

    sigaction(SIGINT, NULL, &now);
    assert_ptr_equal(now.sa_handler, callers_handler);
    sigaction(SIGTERM, NULL, &now);
    assert_ptr_equal(now.sa_handler, callers_handler);
    sigaction(SIGHUP, NULL, &now);
    assert_ptr_equal(now.sa_handler, callers_handler);
    sigaction(SIGPIPE, NULL, &now);
    assert_ptr_equal(now.sa_handler, SIG_DFL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xl_switch),
        cmocka_unit_test(test_usage_errors),
        cmocka_unit_test(test_xl_options),
        cmocka_unit_test(test_failure_and_signals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
