/* SPDX-License-Identifier: Apache-2.0
 *
 * hodei-audit-clickhouse.h — `hodei-audit clickhouse ...`: the ClickHouse
 * mirror from the command line (net/clickhouse.h). hodei-audit.c
 * dispatches to cli_clickhouse().
 *
 *   clickhouse mirror --data-dir DIR   mirror every sealed segment of a data
 *                                      directory (offline backfill; exactly
 *                                      once, so it can be re-run)
 *   clickhouse schema                  print the SQL of the schema
 *   clickhouse count --tenant T        plain count() of a tenant's rows
 */
#ifndef HODEI_TOOLS_CLICKHOUSE_H
#define HODEI_TOOLS_CLICKHOUSE_H

/* The usage text's part for these commands. */
extern const char cli_clickhouse_usage_text[];

/* Takes main's argc/argv (argv[1] is "clickhouse") and returns an exit code
 * of enum cli_exit (tools/hodei-audit-client.h). */
int cli_clickhouse(int argc, char **argv);

#endif
