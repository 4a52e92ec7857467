/* SPDX-License-Identifier: Apache-2.0
 *
 * admin.c — the admin HTTP/1.1 port on libmicrohttpd (routes, limits and
 * invariants A1..A3 in admin.h). libmicrohttpd is included here only.
 *
 * One request's life, as libmicrohttpd drives the access handler:
 *
 *   call 1 (headers parsed)   allocate struct admin_req, pick the route,
 *                             answer nothing yet (A1) — except a refusal:
 *                             a body on a route that reads none, or a
 *                             Content-Length over body_bytes_max (413);
 *                             libmicrohttpd then closes without reading it
 *   call 2..k (body chunks)   handle_other routes: collect into a buffer
 *                             bounded by body_bytes_max; past it (chunked
 *                             bodies) drop the rest and answer 413 at the end
 *   last call (no more body)  answer: queue one response, count it (A3)
 *   completed callback        free struct admin_req
 *
 * The daemon runs its own polling thread (MHD_USE_AUTO_INTERNAL_THREAD):
 * every callback, including the ops, runs on it, one at a time. Counters
 * the render callback reads are atomics, so admin_write_metrics() may also
 * be called from another thread.
 */
#include "net/admin.h"
#include "net/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum admin_path { P_METRICS, P_HEALTHZ, P_READYZ, P_OTHER, P_COUNT };

static const char *const path_names[P_COUNT] = {
	[P_METRICS] = "/metrics",
	[P_HEALTHZ] = "/healthz",
	[P_READYZ] = "/readyz",
	[P_OTHER] = "other",
};

enum metrics_failure { MF_TOO_BIG, MF_RENDER, MF_COUNT };
static const char *const failure_names[MF_COUNT] = { "too_big", "render" };

#define CODE_MIN 100
#define CODE_MAX 599
#define CODES (CODE_MAX - CODE_MIN + 1)
#define TEXT_PLAIN "text/plain; charset=utf-8"
#define PROM_TEXT "text/plain; version=0.0.4; charset=utf-8"
#define LOG_LINE_BYTES 512

struct admin {
	struct MHD_Daemon *daemon;
	struct admin_ops ops;       /* limits resolved: no zero left */
	uint16_t port;
	_Atomic uint64_t requests[P_COUNT][CODES];
	_Atomic uint64_t connections_open;
	_Atomic uint64_t metrics_failures[MF_COUNT];
	_Atomic uint64_t metrics_last_bytes;
};

/* Per request (libmicrohttpd's con_cls). */
struct admin_req {
	enum admin_path path;
	bool collect;        /* body goes to handle_other */
	bool answered;       /* a response is queued: ignore what follows */
	bool too_big;        /* the body passed body_bytes_max: 413 at its end */
	struct mx_buf body;  /* when collect; data NULL until the first chunk */
};

/* ---- logging ---------------------------------------------------------- */

/* libmicrohttpd's own messages; fmt is its format string. */
__attribute__((format(printf, 2, 0))) static void on_mhd_log(void *cls, const char *fmt,
							      va_list ap)
{
	char msg[LOG_LINE_BYTES];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	size_t n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	nlog(NLOG_WARN, NULL, "admin port: %s", msg);
}

/* ---- listen address ----------------------------------------------------- */

static int parse_port(const char *s, uint16_t *port)
{
	size_t n = strlen(s);
	if (n < 1 || n > 5)
		return FMT_E_INVALID;
	uint32_t v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return FMT_E_INVALID;
		v = v * 10 + (uint32_t)(s[i] - '0');
	}
	if (v > 65535)
		return FMT_E_INVALID;
	*port = (uint16_t)v;
	return 0;
}

int admin_parse_listen(const char *listen_addr, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[INET6_ADDRSTRLEN];
	const char *host_start, *host_end, *port_text;
	bool v6 = listen_addr && listen_addr[0] == '[';
	if (!listen_addr)
		return FMT_E_INVALID;
	if (v6) {
		host_start = listen_addr + 1;
		host_end = strchr(host_start, ']');
		if (!host_end || host_end[1] != ':')
			return FMT_E_INVALID;
		port_text = host_end + 2;
	} else {
		host_start = listen_addr;
		host_end = strrchr(listen_addr, ':');
		if (!host_end || memchr(host_start, ':', (size_t)(host_end - host_start)))
			return FMT_E_INVALID; /* no port, or IPv6 without brackets */
		port_text = host_end + 1;
	}
	size_t host_len = (size_t)(host_end - host_start);
	uint16_t port;
	if (host_len < 1 || host_len >= sizeof(host) || parse_port(port_text, &port))
		return FMT_E_INVALID;
	memcpy(host, host_start, host_len);
	host[host_len] = '\0';

	memset(ss, 0, sizeof(*ss));
	if (v6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons(port);
		if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
			return FMT_E_INVALID;
		*len = sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;
		a->sin_family = AF_INET;
		a->sin_port = htons(port);
		if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
			return FMT_E_INVALID;
		*len = sizeof(*a);
	}
	return 0;
}

/* ---- responses ---------------------------------------------------------- */

static void count(struct admin *a, enum admin_path path, unsigned status)
{
	ASSERT(path < P_COUNT && status >= CODE_MIN && status <= CODE_MAX);
	atomic_fetch_add_explicit(&a->requests[path][status - CODE_MIN], 1, memory_order_relaxed);
}

/* Queues one response. mode says who owns body (MHD_RESPMEM_MUST_FREE:
 * libmicrohttpd free()s it, also when this fails). */
static enum MHD_Result respond(struct admin *a, struct MHD_Connection *c, struct admin_req *r,
			       unsigned status, const char *content_type, void *body,
			       size_t len, enum MHD_ResponseMemoryMode mode, bool allow)
{
	ASSERT(!r->answered);
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, mode);
	if (!resp) {
		if (mode == MHD_RESPMEM_MUST_FREE)
			free(body);
		return MHD_NO; /* libmicrohttpd closes the connection */
	}
	enum MHD_Result ok = MHD_YES;
	if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) != MHD_YES ||
	    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES ||
	    (allow && MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD") != MHD_YES))
		ok = MHD_NO;
	if (ok == MHD_YES)
		ok = MHD_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	if (ok == MHD_YES) {
		r->answered = true;
		count(a, r->path, status);
	}
	return ok;
}

static enum MHD_Result respond_text(struct admin *a, struct MHD_Connection *c,
				    struct admin_req *r, unsigned status, const char *text,
				    bool allow)
{
	return respond(a, c, r, status, TEXT_PLAIN, (void *)text, strlen(text),
		       MHD_RESPMEM_PERSISTENT, allow);
}

static enum MHD_Result respond_copy(struct admin *a, struct MHD_Connection *c,
				    struct admin_req *r, unsigned status, const char *text)
{
	return respond(a, c, r, status, TEXT_PLAIN, (void *)text, strlen(text),
		       MHD_RESPMEM_MUST_COPY, false);
}

/* ---- routes ------------------------------------------------------------- */

static enum admin_path route(const char *url)
{
	for (int p = 0; p < P_OTHER; p++)
		if (strcmp(url, path_names[p]) == 0)
			return (enum admin_path)p;
	return P_OTHER;
}

static enum MHD_Result answer_metrics(struct admin *a, struct MHD_Connection *c,
				      struct admin_req *r)
{
	struct mx_buf b;
	int rc = mx_buf_init(&b, 0, a->ops.limits.metrics_bytes_max);
	if (rc == 0)
		rc = a->ops.render_metrics ? a->ops.render_metrics(a->ops.ctx, &b)
					   : admin_write_metrics(a, &b);
	if (rc == 0)
		rc = mx_buf_err(&b);
	size_t len = 0;
	char *body = rc == 0 ? mx_buf_take(&b, &len) : NULL;
	mx_buf_free(&b);
	if (!body) {
		enum metrics_failure f = rc == FMT_E_TOO_BIG ? MF_TOO_BIG : MF_RENDER;
		atomic_fetch_add_explicit(&a->metrics_failures[f], 1, memory_order_relaxed);
		char msg[LOG_LINE_BYTES];
		int n = snprintf(msg, sizeof(msg) - 1, "metrics exposition failed: %s (limit %u bytes)",
				 fmt_strerror(rc ? rc : -ENOMEM), a->ops.limits.metrics_bytes_max);
		nlog(NLOG_ERROR, NULL, "admin port: %s", msg);
		strcpy(msg + FMT_MIN((size_t)n, sizeof(msg) - 2), "\n");
		return respond_copy(a, c, r, MHD_HTTP_INTERNAL_SERVER_ERROR, msg);
	}
	atomic_store_explicit(&a->metrics_last_bytes, len, memory_order_relaxed);
	return respond(a, c, r, MHD_HTTP_OK, PROM_TEXT, body, len, MHD_RESPMEM_MUST_FREE, false);
}

static enum MHD_Result answer_readyz(struct admin *a, struct MHD_Connection *c,
				     struct admin_req *r)
{
	char why[ADMIN_WHY_BYTES + 1];
	why[0] = '\0';
	if (!a->ops.ready || a->ops.ready(a->ops.ctx, why, ADMIN_WHY_BYTES))
		return respond_text(a, c, r, MHD_HTTP_OK, "ready\n", false);
	why[ADMIN_WHY_BYTES - 1] = '\0'; /* whatever the callback wrote */
	size_t n = strlen(why);
	if (n == 0)
		n = (size_t)snprintf(why, sizeof(why), "not ready");
	why[n] = '\n';
	why[n + 1] = '\0';
	return respond_copy(a, c, r, MHD_HTTP_SERVICE_UNAVAILABLE, why);
}

static enum MHD_Result answer_other(struct admin *a, struct MHD_Connection *c,
				    struct admin_req *r, const char *method, const char *url)
{
	if (!a->ops.handle_other)
		return respond_text(a, c, r, MHD_HTTP_NOT_FOUND, "not found\n", false);
	struct admin_request req = {
		.method = method,
		.path = url,
		.body = r->body.data && r->body.len ? (const uint8_t *)r->body.data : NULL,
		.body_len = r->body.data ? r->body.len : 0,
		.impl = c,
	};
	struct mx_buf out;
	struct admin_reply rep = { MHD_HTTP_OK, TEXT_PLAIN, &out };
	int rc = mx_buf_init(&out, 0, a->ops.limits.reply_bytes_max);
	if (rc == 0)
		rc = a->ops.handle_other(a->ops.ctx, &req, &rep);
	if (rc == ADMIN_NOT_HANDLED) {
		mx_buf_free(&out);
		return respond_text(a, c, r, MHD_HTTP_NOT_FOUND, "not found\n", false);
	}
	if (rc == 0 && (rep.status < CODE_MIN || rep.status > CODE_MAX || !rep.content_type))
		rc = FMT_E_INVALID;
	if (rc == 0)
		rc = mx_buf_err(&out);
	size_t len = 0;
	char *body = rc == 0 ? mx_buf_take(&out, &len) : NULL;
	mx_buf_free(&out);
	if (!body) {
		char msg[LOG_LINE_BYTES];
		int n = snprintf(msg, sizeof(msg) - 1, "%s %s failed: %s", method, url,
				 fmt_strerror(rc ? rc : -ENOMEM));
		nlog(NLOG_ERROR, NULL, "admin port: %s", msg);
		strcpy(msg + FMT_MIN((size_t)n, sizeof(msg) - 2), "\n");
		return respond_copy(a, c, r, MHD_HTTP_INTERNAL_SERVER_ERROR, msg);
	}
	return respond(a, c, r, rep.status, rep.content_type, body, len, MHD_RESPMEM_MUST_FREE,
		       false);
}

static enum MHD_Result answer(struct admin *a, struct MHD_Connection *c, struct admin_req *r,
			      const char *method, const char *url)
{
	if (r->path == P_OTHER)
		return answer_other(a, c, r, method, url);
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return respond_text(a, c, r, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n",
				    true);
	switch (r->path) {
	case P_METRICS:
		return answer_metrics(a, c, r);
	case P_HEALTHZ:
		return respond_text(a, c, r, MHD_HTTP_OK, "ok\n", false);
	case P_READYZ:
		return answer_readyz(a, c, r);
	default:
		ASSERT(!"unreachable route");
		return MHD_NO;
	}
}

/* Content-Length, or -1 when the request has no length but may have a body
 * (Transfer-Encoding), or 0. */
static int64_t body_announced(struct MHD_Connection *c)
{
	const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
						     MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (cl)
		return (int64_t)FMT_MIN(strtoull(cl, NULL, 10), (unsigned long long)INT64_MAX);
	if (MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING))
		return -1;
	return 0;
}

/* The first call: headers are in, nothing is answered (A1), unless the
 * request carries a body that nobody will read, or one over the limit.
 * Those are answered now: libmicrohttpd can queue a response only before
 * the body is read, and then closes the connection without reading it,
 * which is what a refusal should do. */
static enum MHD_Result begin(struct admin *a, struct MHD_Connection *c, const char *method,
			     const char *url, void **con_cls)
{
	struct admin_req *r = calloc(1, sizeof(*r));
	if (!r)
		return MHD_NO;
	r->path = route(url);
	r->collect = r->path == P_OTHER && a->ops.handle_other;
	*con_cls = r;
	int64_t body = body_announced(c);
	if (body != 0 && !r->collect)
		return answer(a, c, r, method, url);
	if (r->collect && body > (int64_t)a->ops.limits.body_bytes_max)
		return respond_text(a, c, r, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large\n",
				    false);
	return MHD_YES;
}

/* Takes one chunk of a body for handle_other. Past body_bytes_max (only
 * possible without a Content-Length) the rest is read and dropped, and the
 * answer is 413. */
static enum MHD_Result take_body(struct admin *a, struct admin_req *r, const char *data,
				 size_t len)
{
	if (!r->collect || r->too_big)
		return MHD_YES;
	if (!r->body.data && mx_buf_init(&r->body, 0, a->ops.limits.body_bytes_max) != 0)
		return MHD_NO;
	int rc = mx_buf_put(&r->body, data, len);
	if (rc == FMT_E_TOO_BIG) {
		r->too_big = true;
		mx_buf_free(&r->body);
		return MHD_YES;
	}
	return rc == 0 ? MHD_YES : MHD_NO;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url,
				 const char *method, const char *version,
				 const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	struct admin *a = cls;
	struct admin_req *r = *con_cls;
	if (!r)
		return begin(a, c, method, url, con_cls);
	if (*upload_data_size) {
		size_t n = *upload_data_size;
		*upload_data_size = 0;
		return r->answered ? MHD_YES : take_body(a, r, upload_data, n);
	}
	if (r->answered)
		return MHD_YES;
	if (r->too_big)
		return respond_text(a, c, r, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large\n",
				    false);
	return answer(a, c, r, method, url);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct admin_req *r = *con_cls;
	if (!r)
		return;
	mx_buf_free(&r->body);
	free(r);
	*con_cls = NULL;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
			  enum MHD_ConnectionNotificationCode toe)
{
	struct admin *a = cls;
	if (toe == MHD_CONNECTION_NOTIFY_STARTED)
		atomic_fetch_add_explicit(&a->connections_open, 1, memory_order_relaxed);
	else if (toe == MHD_CONNECTION_NOTIFY_CLOSED)
		atomic_fetch_sub_explicit(&a->connections_open, 1, memory_order_relaxed);
}

const char *admin_request_header(const struct admin_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->impl, MHD_HEADER_KIND, name);
}

const char *admin_request_arg(const struct admin_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->impl, MHD_GET_ARGUMENT_KIND, name);
}

/* ---- start and stop ----------------------------------------------------- */

static void limits_resolve(struct admin_limits *l)
{
	if (!l->connections_max)
		l->connections_max = ADMIN_CONNECTIONS_MAX_DEFAULT;
	if (!l->conn_timeout_s)
		l->conn_timeout_s = ADMIN_CONN_TIMEOUT_S_DEFAULT;
	if (!l->conn_memory_bytes)
		l->conn_memory_bytes = ADMIN_CONN_MEMORY_BYTES_DEFAULT;
	if (!l->metrics_bytes_max)
		l->metrics_bytes_max = ADMIN_METRICS_BYTES_MAX_DEFAULT;
	if (!l->body_bytes_max)
		l->body_bytes_max = ADMIN_BODY_BYTES_MAX_DEFAULT;
	if (!l->reply_bytes_max)
		l->reply_bytes_max = ADMIN_REPLY_BYTES_MAX_DEFAULT;
}

static uint16_t bound_port(struct MHD_Daemon *d)
{
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	if (info && info->port)
		return info->port;
	info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_LISTEN_FD);
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (!info || getsockname(info->listen_fd, (struct sockaddr *)&ss, &len) != 0)
		return 0;
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

int admin_start(const char *listen_addr, const struct admin_ops *ops, struct admin **out)
{
	struct sockaddr_storage ss;
	socklen_t ss_len;
	ASSERT(ops && out);
	*out = NULL;
	if (admin_parse_listen(listen_addr, &ss, &ss_len) != 0)
		return FMT_E_INVALID;
	struct admin *a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->ops = *ops;
	limits_resolve(&a->ops.limits);

	unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
	uint16_t port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6) {
		flags |= MHD_USE_IPv6;
		port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	}
	errno = 0;
	a->daemon = MHD_start_daemon(
		flags, port /* bound from SOCK_ADDR; this one is only for messages */,
		NULL, NULL, on_access, a,
		MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, a, /* first, to catch all */
		MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
		MHD_OPTION_CONNECTION_LIMIT, (unsigned int)a->ops.limits.connections_max,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)a->ops.limits.conn_timeout_s,
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)a->ops.limits.conn_memory_bytes,
		MHD_OPTION_NOTIFY_COMPLETED, on_completed, a,
		MHD_OPTION_NOTIFY_CONNECTION, on_connection, a,
		MHD_OPTION_END);
	if (!a->daemon) {
		int err = errno ? -errno : -EIO;
		free(a);
		return err;
	}
	a->port = bound_port(a->daemon);
	ASSERT(a->port != 0);
	*out = a;
	return 0;
}

uint16_t admin_port(const struct admin *a)
{
	return a->port;
}

void admin_stop(struct admin *a)
{
	if (!a)
		return;
	MHD_stop_daemon(a->daemon);
	free(a);
}

/* ---- the admin's own metrics -------------------------------------------- */

static int write_requests(const struct admin *a, struct mx_buf *out)
{
	static const char name[] = "hodei_admin_requests_total";
	mx_family(out, name, "counter", "Requests answered by the admin HTTP port.");
	for (int p = 0; p < P_COUNT; p++) {
		for (int i = 0; i < CODES; i++) {
			uint64_t v = atomic_load_explicit(
				&((struct admin *)a)->requests[p][i], memory_order_relaxed);
			if (v == 0)
				continue;
			char code[8];
			snprintf(code, sizeof(code), "%d", CODE_MIN + i);
			struct mx_label l[] = { { "path", path_names[p] }, { "code", code } };
			mx_sample_u64(out, name, l, 2, v);
		}
	}
	return mx_buf_err(out);
}

static void gauge(struct mx_buf *out, const char *name, const char *help, uint64_t v)
{
	mx_family(out, name, "gauge", help);
	mx_sample_u64(out, name, NULL, 0, v);
}

int admin_write_metrics(const struct admin *a, struct mx_buf *out)
{
	struct admin *m = (struct admin *)a; /* atomics are read, never written */
	const struct admin_limits *l = &a->ops.limits;
	write_requests(a, out);
	static const char failures[] = "hodei_admin_metrics_failures_total";
	mx_family(out, failures, "counter",
		  "Scrapes of /metrics answered 500, by reason (too_big: over the byte limit).");
	for (int f = 0; f < MF_COUNT; f++) {
		struct mx_label lb = { "reason", failure_names[f] };
		mx_sample_u64(out, failures, &lb, 1,
			      atomic_load_explicit(&m->metrics_failures[f], memory_order_relaxed));
	}
	gauge(out, "hodei_admin_connections", "Open connections to the admin HTTP port.",
	      atomic_load_explicit(&m->connections_open, memory_order_relaxed));
	gauge(out, "hodei_admin_connections_max",
	      "Limit of concurrent admin connections; more wait to be accepted.", l->connections_max);
	gauge(out, "hodei_admin_connection_timeout_seconds",
	      "Idle time after which an admin connection is closed.", l->conn_timeout_s);
	gauge(out, "hodei_admin_connection_memory_bytes",
	      "Memory per admin connection for the request line and headers.",
	      l->conn_memory_bytes);
	gauge(out, "hodei_admin_metrics_bytes",
	      "Size of the last complete /metrics exposition.",
	      atomic_load_explicit(&m->metrics_last_bytes, memory_order_relaxed));
	gauge(out, "hodei_admin_metrics_bytes_max",
	      "Limit of a /metrics exposition; over it the scrape fails.", l->metrics_bytes_max);
	gauge(out, "hodei_admin_request_body_bytes_max",
	      "Limit of a request body on extension routes; over it 413.", l->body_bytes_max);
	gauge(out, "hodei_admin_reply_bytes_max",
	      "Limit of a reply body on extension routes.", l->reply_bytes_max);
	return mx_buf_err(out);
}
