/* SPDX-License-Identifier: Apache-2.0
 *
 * admin.h — the admin HTTP/1.1 port (DESIGN.md §6, §10): GET /metrics,
 * /healthz, /readyz, on libmicrohttpd, with an extension point for routes
 * that later issues add (Vector.dev HTTP ingest).
 *
 * Data flow. One internal libmicrohttpd thread accepts, parses and answers
 * every request; the callbacks in struct admin_ops run on that thread, one
 * at a time, so they need no locking among themselves (but they must read
 * the rest of the process through atomics or its own snapshot functions,
 * e.g. eng_shard_stats()). /metrics gets a fresh bounded struct mx_buf,
 * ops->render_metrics fills it, and the buffer becomes the response body.
 *
 * Routes (the query string is ignored):
 *   GET|HEAD /metrics  200 text/plain; version=0.0.4; charset=utf-8
 *                      500 when the renderer fails or the exposition would
 *                      exceed metrics_bytes_max (counted, never truncated)
 *   GET|HEAD /healthz  200 "ok" while the process runs
 *   GET|HEAD /readyz   200 "ready", or 503 with ops->ready's reason
 *   other method on those three paths: 405 with Allow: GET, HEAD
 *   any other path: ops->handle_other if set and it accepts, else 404
 *
 * Invariants.
 *  A1 A response is queued on the second (or a later) access-handler call,
 *     so libmicrohttpd keeps the connection alive (FIELD-NOTES: answering
 *     on the first call forces Connection: close). The one exception is a
 *     refusal of a request body — a body sent to a route that reads none,
 *     or a Content-Length over body_bytes_max (413) — which is answered on
 *     the first call on purpose: the connection is then closed and the body
 *     never read.
 *  A2 Everything a client can make the admin hold is bounded: connections
 *     (connections_max), idle time (conn_timeout_s), request line and
 *     headers (conn_memory_bytes), request bodies (body_bytes_max, only for
 *     handle_other), reply bodies (reply_bytes_max) and the exposition
 *     (metrics_bytes_max). Each limit is exported by admin_write_metrics().
 *  A3 Every answered request is counted once in
 *     hodei_admin_requests_total{path,code}; path is one of a fixed set
 *     ("/metrics", "/healthz", "/readyz", "other"), so the series are
 *     bounded whatever clients send.
 *
 * Errors: functions return 0 or a negative code (-errno or enum fmt_err).
 */
#ifndef HODEI_NET_ADMIN_H
#define HODEI_NET_ADMIN_H

#include "net/metrics.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define ADMIN_CONNECTIONS_MAX_DEFAULT 64
#define ADMIN_CONN_TIMEOUT_S_DEFAULT 30
#define ADMIN_CONN_MEMORY_BYTES_DEFAULT (32u * 1024)
#define ADMIN_METRICS_BYTES_MAX_DEFAULT MX_BUF_BYTES_MAX_DEFAULT
#define ADMIN_BODY_BYTES_MAX_DEFAULT (1u * 1024 * 1024)
#define ADMIN_REPLY_BYTES_MAX_DEFAULT (64u * 1024)
#define ADMIN_WHY_BYTES 256 /* room for ops->ready's reason */

/* Every field 0 takes its default. */
struct admin_limits {
	uint32_t connections_max;   /* concurrent connections; more wait, not
				     * accepted, in the kernel's listen backlog */
	uint32_t conn_timeout_s;    /* an idle connection is closed after this */
	uint32_t conn_memory_bytes; /* per connection: request line and headers */
	uint32_t metrics_bytes_max; /* exposition size; over it /metrics is 500 */
	uint32_t body_bytes_max;    /* request body for handle_other; over: 413 */
	uint32_t reply_bytes_max;   /* reply body handle_other may write */
};

/* A request handed to ops->handle_other. Valid only during the call. */
struct admin_request {
	const char *method;  /* "POST", "PUT", ... as sent */
	const char *path;    /* without the query string */
	const uint8_t *body; /* the whole body, body_len bytes; NULL when empty */
	size_t body_len;
	void *impl;          /* for admin_request_header() */
};

/* A request header's value (name case-insensitive), or NULL. */
const char *admin_request_header(const struct admin_request *req, const char *name);
/* A query-string argument's value (already URL-decoded), or NULL. */
const char *admin_request_arg(const struct admin_request *req, const char *name);

/* What handle_other answers. status defaults to 200, content_type to
 * "text/plain; charset=utf-8" (must be a static string or outlive the
 * admin); body is an empty buffer bounded by reply_bytes_max. */
struct admin_reply {
	unsigned status;
	const char *content_type;
	struct mx_buf *body;
};

#define ADMIN_NOT_HANDLED 1 /* handle_other: not my route; answer 404 */

/* Fills out (sticky errors in out are handled by the admin: 500). Returns 0
 * or a negative code (500). */
typedef int admin_render_fn(void *ctx, struct mx_buf *out);
/* Returns true when ready; otherwise writes a NUL-terminated reason (at
 * most why_len bytes, why_len >= 1) for the 503 body. */
typedef bool admin_ready_fn(void *ctx, char *why, size_t why_len);
/* Returns 0 when rep is filled, ADMIN_NOT_HANDLED, or a negative code
 * (500). */
typedef int admin_handle_fn(void *ctx, const struct admin_request *req, struct admin_reply *rep);

struct admin_ops {
	void *ctx;                      /* passed to every callback */
	admin_render_fn *render_metrics; /* NULL: only the admin's own metrics */
	admin_ready_fn *ready;          /* NULL: always ready */
	admin_handle_fn *handle_other;  /* NULL: other paths are 404 */
	struct admin_limits limits;
};

struct admin;

/* Binds listen_addr ("127.0.0.1:8080", "[::1]:8080", "0.0.0.0:0": a
 * numeric IPv4 or bracketed IPv6 address and a port, 0 for any free port)
 * and starts the admin thread. ops is copied. Returns 0 and *out, or
 * FMT_E_INVALID (bad address), -ENOMEM, or -errno from binding
 * (-EADDRINUSE, ...; -EIO when libmicrohttpd gave no reason). */
int admin_start(const char *listen_addr, const struct admin_ops *ops, struct admin **out);

/* The bound port (the real one when listen_addr asked for port 0). */
uint16_t admin_port(const struct admin *a);

/* Stops the thread, closes every connection, frees a. NULL is a no-op. */
void admin_stop(struct admin *a);

/* Appends the admin's own families: hodei_admin_requests_total{path,code},
 * hodei_admin_connections, hodei_admin_connections_max,
 * hodei_admin_metrics_failures_total and the byte limits. Call it from
 * render_metrics (once per exposition; M2 refuses a second time). Returns
 * as mx_sample_u64(). */
int admin_write_metrics(const struct admin *a, struct mx_buf *out);

/* Parses listen_addr (the forms admin_start() takes; no host names, no
 * IPv6 zone ids) into *ss and *len. Returns 0 or FMT_E_INVALID. */
int admin_parse_listen(const char *listen_addr, struct sockaddr_storage *ss, socklen_t *len);

#endif
