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

#endif
