/* SPDX-License-Identifier: Apache-2.0
 *
 * log.h — structured logs: one JSON object per line on stderr (DESIGN.md
 * §6), with the keys time (RFC 3339, UTC, ms), level, msg and, when known,
 * tenant, request_id, peer, method and code. A line is written with one
 * write(2), so lines of different threads never interleave.
 *
 * Never pass a key, a bearer token or an event payload: nothing here
 * filters them out.
 */
#ifndef HODEI_NET_LOG_H
#define HODEI_NET_LOG_H

#include "engine/engine.h"

#include <stddef.h>

enum nlog_level { NLOG_ERROR = 0, NLOG_WARN = 1, NLOG_INFO = 2, NLOG_DEBUG = 3 };

/* Context of a log line; every field is optional (NULL / 0 / -1). */
struct nlog_fields {
	const char *tenant;
	size_t tenant_len;       /* 0: tenant is NUL-terminated */
	const char *request_id;
	const char *peer;
	const char *method;
	int code;                /* gRPC status, -1: none */
};
#define NLOG_FIELDS_NONE ((struct nlog_fields){ .code = -1 })

void nlog_set_level(enum nlog_level level);
enum nlog_level nlog_get_level(void);
/* "error", "warn", "info", "debug"; returns 0 or -1. */
int nlog_level_parse(const char *s, enum nlog_level *out);

void nlog(enum nlog_level level, const struct nlog_fields *f, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* An eng_log_fn that writes the engine's messages as log lines. */
void nlog_engine(void *ctx, enum eng_log_level level, const char *msg);

#endif
