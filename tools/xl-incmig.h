/* xl-incmig.h: the subcommands of xl-incmig, one file each. */
#ifndef XL_INCMIG_H
#define XL_INCMIG_H

int cmd_serve(int argc, char **argv);
int cmd_migrate(int argc, char **argv);
int cmd_receive(int argc, char **argv);
int cmd_guest(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_lineage(int argc, char **argv);
int cmd_set_bandwidth(int argc, char **argv);

/* Shared by the subcommands: -v/-q handling and the program's path. */
extern int xl_verbose;
extern const char *xl_self;   /* path of this executable, for children */
void xl_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* --tls=off, --tls-psk, --tls-username, --tls-x509, --socket-group
 * (security.c, INCMIG_SECURITY_OPTIONS in serve's option table). */
/* 1: it was one of them; 0: not; -1: bad value (said). */
int xl_security_opt(const char *cmd, int c, const char *arg);
int xl_security_apply(const char *cmd);   /* 0, or -1 (said) */

#endif
