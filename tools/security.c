/* security.c: the options that say who may connect, shared by migrate,
 * migrate-receive and serve (each puts XL_SECURITY_OPTIONS in its option
 * table, hands unknown codes to xl_security_opt, and calls
 * xl_security_apply before its work). */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "incmig.h"
#include "xl-incmig.h"

static struct incmig_security sec;

const char xl_security_help[] =
    "  --tls-psk FILE     TLS with pre-shared keys (USERNAME:HEXKEY lines,\n"
    "                     as psktool writes them) on every TCP connection\n"
    "  --tls-username NAME  the key of FILE to use as a client (default: "
    "first)\n"
    "  --tls-x509 DIR     TLS with certificates: DIR/ca-cert.pem and\n"
    "                     {server,client}-{cert,key}.pem\n"
    "  --tls=off          plain TCP even off loopback (trusted networks only)\n"
    "  --socket-group G   unix sockets 0660 for group G (default 0600)\n";

int xl_security_opt(const char *cmd, int c, const char *arg)
{
    switch (c) {
    case XL_OPT_TLS:
        if (strcmp(arg, "off")) {
            xl_usage_error(cmd, "--tls takes 'off' (TLS is on when keys are "
                           "given with --tls-psk or --tls-x509)");
            return -1;
        }
        sec.tls_off = 1;
        return 1;
    case XL_OPT_TLS_PSK: sec.psk_file = arg; return 1;
    case XL_OPT_TLS_USER: sec.psk_user = arg; return 1;
    case XL_OPT_TLS_X509: sec.x509_dir = arg; return 1;
    case XL_OPT_SOCKET_GROUP: sec.socket_group = arg; return 1;
    default: return 0;
    }
}

int xl_security_apply(const char *cmd)
{
    if (incmig_security_setup(&sec)) {
        fprintf(stderr, "xl-incmig %s: cannot set up TLS or sockets as "
                "asked (see the error above)\n", cmd);
        return -1;
    }
    return 0;
}
