/* SPDX-License-Identifier: Apache-2.0
 *
 * hodei-audit-s3.h — `hodei-audit s3 ...`: the operator's view of the S3
 * bucket the replicator writes to (net/s3.h, docs/S3.md): check the bucket
 * and its versioning, put, head, get and list objects. hodei-audit.c
 * dispatches to cli_s3(); exit codes are enum cli_exit's.
 */
#ifndef HODEI_TOOLS_S3_H
#define HODEI_TOOLS_S3_H

/* The usage text's part for these commands. */
extern const char cli_s3_usage_text[];

/* Takes main's argc/argv (argv[1] is "s3", argv[2] the subcommand) and
 * returns an exit code. */
int cli_s3(int argc, char **argv);

#endif
