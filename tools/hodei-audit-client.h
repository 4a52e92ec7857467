/* SPDX-License-Identifier: Apache-2.0
 *
 * hodei-audit-client.h — the commands of hodei-audit that talk to a server
 * over gRPC (append, search, tail, count, verify --server, health) and
 * `keys new`. hodei-audit.c dispatches to them; the offline commands
 * (inspect, verify --data-dir) stay there.
 */
#ifndef HODEI_TOOLS_CLIENT_H
#define HODEI_TOOLS_CLIENT_H

#include <stdbool.h>

/* Exit codes of every hodei-audit command (listed in the usage text). */
enum cli_exit {
	CLI_OK = 0,
	CLI_PROBLEMS = 1,   /* verify found problems */
	CLI_USAGE = 2,      /* bad flags, bad input line */
	CLI_UNREADABLE = 3, /* a file or directory cannot be read */
	CLI_AUTH = 4,       /* UNAUTHENTICATED or PERMISSION_DENIED */
	CLI_SERVER = 5,     /* any other non-OK status, or no connection */
};

/* The usage text's part for these commands. */
extern const char cli_usage_text[];

/* Each takes main's argc/argv (argv[1] is the command) and returns an exit
 * code. Usage errors print the message and a pointer to `help`. */
int cli_append(int argc, char **argv);
int cli_search(int argc, char **argv);
int cli_tail(int argc, char **argv);
int cli_count(int argc, char **argv);
int cli_health(int argc, char **argv);
int cli_verify_remote(int argc, char **argv);
int cli_keys(int argc, char **argv);

/* Matches "--name VALUE" or "--name=VALUE" at argv[*i], for every
 * hodei-audit command. Returns 1 (with *val, *i advanced past a separate
 * value), 0 if argv[*i] is another flag, -1 if the value is missing. */
int cli_flag_value(int argc, char **argv, int *i, const char *name, const char **val);

/* True when `verify` should go to a server: --server was given, or
 * HODEI_SERVER is set and --data-dir was not. */
bool cli_verify_is_remote(int argc, char **argv);

#endif
