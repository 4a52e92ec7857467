// SPDX-License-Identifier: Apache-2.0
//
// Tests of net/admin.c with real HTTP on loopback (libcurl, and plain
// sockets where the connection itself is under test): routes, content
// types, readiness following the callback, 404/405 with Allow, HEAD,
// keep-alive, the exposition bound, the extension route and its body
// bound, the connection limit and idle timeout, IPv6, listen-address
// parsing, and the live /metrics body through `promtool check metrics`.
// Every server listens on port 0: Criterion runs tests in parallel.
#include "net/admin.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct ctx {
	_Atomic bool not_ready;
	char why[64];        /* written before not_ready is set */
	_Atomic bool big;    /* render more than the limit */
	_Atomic bool fail;   /* render returns an error */
	_Atomic(struct admin *) admin;
	_Atomic uint64_t renders;
	struct mx_hist hist;
};

static int render(void *p, struct mx_buf *b)
{
	struct ctx *c = p;
	if (atomic_load(&c->fail))
		return FMT_E_INVALID;
	uint64_t n = atomic_fetch_add(&c->renders, 1) + 1;
	mx_family(b, "hodei_test_renders_total", "counter", "Scrapes rendered by the test.");
	struct mx_label l = { "note", "a \"quoted\" \\ value\nline 2" };
	mx_sample_u64(b, "hodei_test_renders_total", &l, 1, n);
	mx_family(b, "hodei_test_duration_seconds", "histogram", "Test durations.");
	mx_hist_write(b, "hodei_test_duration_seconds", NULL, 0, &c->hist);
	if (atomic_load(&c->big)) {
		mx_family(b, "hodei_test_big", "gauge", "Padding.");
		char v[16];
		for (int i = 0; i < 10000; i++) {
			snprintf(v, sizeof(v), "%d", i);
			struct mx_label k = { "i", v };
			mx_sample_u64(b, "hodei_test_big", &k, 1, (uint64_t)i);
		}
	}
	return admin_write_metrics(atomic_load(&c->admin), b);
}

static bool ready(void *p, char *why, size_t why_len)
{
	struct ctx *c = p;
	if (!atomic_load(&c->not_ready))
		return true;
	snprintf(why, why_len, "%s", c->why);
	return false;
}

/* The extension point as Vector ingest will use it: POST /ingest. */
static int handle_other(void *p, const struct admin_request *req, struct admin_reply *rep)
{
	if (strcmp(req->path, "/ingest") != 0)
		return ADMIN_NOT_HANDLED;
	if (strcmp(req->method, "POST") != 0) {
		rep->status = 405;
		mx_buf_puts(rep->body, "POST only\n");
		return 0;
	}
	const char *x = admin_request_header(req, "x-test");
	const char *q = admin_request_arg(req, "q");
	rep->status = 202;
	rep->content_type = "application/json";
	mx_buf_printf(rep->body, "{\"bytes\":%zu,\"x\":\"%s\",\"q\":\"%s\",\"first\":\"%c\"}",
		      req->body_len, x ? x : "", q ? q : "",
		      req->body_len ? (char)req->body[0] : '-');
	return 0;
}

static struct ctx *ctx_new(void)
{
	struct ctx *c = calloc(1, sizeof(*c));
	cr_assert_not_null(c);
	cr_assert_eq(mx_hist_init(&c->hist, NULL, 0), 0);
	mx_hist_observe_ns(&c->hist, 3000000);
	return c;
}

static struct admin *start(struct ctx *c, const char *addr, const struct admin_limits *lim)
{
	struct admin_ops ops = {
		.ctx = c, .render_metrics = render, .ready = ready, .handle_other = handle_other,
	};
	if (lim)
		ops.limits = *lim;
	struct admin *a = NULL;
	int rc = admin_start(addr, &ops, &a);
	cr_assert_eq(rc, 0, "admin_start(%s): %s", addr, fmt_strerror(rc));
	cr_assert_neq(admin_port(a), 0);
	atomic_store(&c->admin, a);
	return a;
}

/* ---- HTTP through libcurl ----------------------------------------------- */

struct http {
	long code;
	char body[1 << 20];
	size_t len;
	char ctype[128];
	char allow[64];
	bool conn_close;
	long new_connections;
	curl_off_t content_length;
	CURLcode err;
};

static size_t on_body(char *p, size_t size, size_t n, void *u)
{
	struct http *h = u;
	size_t take = FMT_MIN(size * n, sizeof(h->body) - 1 - h->len);
	memcpy(h->body + h->len, p, take);
	h->len += take;
	h->body[h->len] = '\0';
	return size * n;
}

static void header_value(const char *line, size_t len, const char *name, char *out, size_t cap)
{
	size_t nl = strlen(name);
	if (len <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
		return;
	const char *v = line + nl + 1;
	while (*v == ' ')
		v++;
	size_t vl = (size_t)(line + len - v);
	while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
		vl--;
	vl = FMT_MIN(vl, cap - 1);
	memcpy(out, v, vl);
	out[vl] = '\0';
}

static size_t on_header(char *p, size_t size, size_t n, void *u)
{
	struct http *h = u;
	char conn[32] = "";
	header_value(p, size * n, "Allow", h->allow, sizeof(h->allow));
	header_value(p, size * n, "Connection", conn, sizeof(conn));
	if (strcasecmp(conn, "close") == 0)
		h->conn_close = true;
	return size * n;
}

/* One request on handle e (which keeps its connections between calls). */
static struct http *http(CURL *e, const char *host, uint16_t port, const char *method,
			 const char *path, const char *body, size_t body_len,
			 struct curl_slist *headers)
{
	static struct http h; /* large; one request at a time per test process */
	memset(&h, 0, sizeof(h));
	char url[256];
	snprintf(url, sizeof(url), "http://%s:%u%s", host, port, path);
	curl_easy_reset(e);
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, &h);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, &h);
	curl_easy_setopt(e, CURLOPT_TIMEOUT, 20L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	if (headers)
		curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
	if (strcmp(method, "HEAD") == 0) {
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	} else if (body) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
		if (strcmp(method, "POST") != 0)
			curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	} else if (strcmp(method, "GET") != 0) {
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	}
	h.err = curl_easy_perform(e);
	if (h.err == CURLE_OK) {
		char *ct = NULL;
		curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &h.code);
		curl_easy_getinfo(e, CURLINFO_CONTENT_TYPE, &ct);
		curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &h.new_connections);
		curl_easy_getinfo(e, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &h.content_length);
		snprintf(h.ctype, sizeof(h.ctype), "%s", ct ? ct : "");
	}
	return &h;
}

static struct http *get(CURL *e, struct admin *a, const char *method, const char *path)
{
	struct http *h = http(e, "127.0.0.1", admin_port(a), method, path, NULL, 0, NULL);
	cr_assert_eq(h->err, CURLE_OK, "%s %s: %s", method, path, curl_easy_strerror(h->err));
	return h;
}

static void setup(void)
{
	cr_assert_eq(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);
}

static void teardown(void)
{
	curl_global_cleanup();
}

TestSuite(admin, .init = setup, .fini = teardown);

/* ---- plain sockets -------------------------------------------------------- */

static int connect_local(uint16_t port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "%s", strerror(errno));
	return fd;
}

static void send_all(int fd, const char *s)
{
	size_t n = strlen(s);
	while (n) {
		ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
		cr_assert_gt(w, 0, "%s", strerror(errno));
		s += w;
		n -= (size_t)w;
	}
}

/* Reads one response (headers and a Content-Length body) into buf;
 * returns the status code. Waits at most 10 s per read. */
static int read_response(int fd, char *buf, size_t cap)
{
	size_t len = 0;
	char *end = NULL;
	long body = -1;
	for (;;) {
		if (end) {
			const char *cl = strcasestr(buf, "\r\ncontent-length:");
			cr_assert_not_null(cl);
			body = strtol(cl + strlen("\r\ncontent-length:"), NULL, 10);
			if (len >= (size_t)(end + 4 - buf) + (size_t)body)
				break;
		}
		struct pollfd p = { .fd = fd, .events = POLLIN };
		cr_assert_eq(poll(&p, 1, 10000), 1, "no response");
		ssize_t r = recv(fd, buf + len, cap - 1 - len, 0);
		cr_assert_gt(r, 0, "connection closed mid-response");
		len += (size_t)r;
		buf[len] = '\0';
		if (!end)
			end = strstr(buf, "\r\n\r\n");
	}
	cr_assert_eq(len, (size_t)(end + 4 - buf) + (size_t)body, "more bytes than one response");
	int code = 0;
	cr_assert_eq(sscanf(buf, "HTTP/1.1 %d", &code), 1);
	return code;
}

/* ---- routes ---------------------------------------------------------------- */

Test(admin, healthz_is_ok)
{
	struct ctx *c = ctx_new();
	struct admin *a = start(c, "127.0.0.1:0", NULL);
	CURL *e = curl_easy_init();
	struct http *h = get(e, a, "GET", "/healthz");
	cr_assert_eq(h->code, 200);
	cr_assert_str_eq(h->body, "ok\n");
	cr_assert_str_eq(h->ctype, "text/plain; charset=utf-8");
	curl_easy_cleanup(e);
	admin_stop(a);
	free(c);
}

Test(admin, metrics_content_type_body_and_own_counters)
{
	struct ctx *c = ctx_new();
	struct admin *a = start(c, "127.0.0.1:0", NULL);
	CURL *e = curl_easy_init();
	get(e, a, "GET", "/healthz");
	get(e, a, "GET", "/metrics");
	struct http *h = get(e, a, "GET", "/metrics?x=1");
	cr_assert_eq(h->code, 200);
	cr_assert_str_eq(h->ctype, "text/plain; version=0.0.4; charset=utf-8");
	cr_assert(strstr(h->body, "# TYPE hodei_test_renders_total counter\n"
				  "hodei_test_renders_total{note=\"a \\\"quoted\\\" \\\\ value\\nline 2\"} 2\n"),
		  "%s", h->body);
	cr_assert(strstr(h->body, "hodei_test_duration_seconds_bucket{le=\"0.005\"} 1\n"));
	cr_assert(strstr(h->body, "hodei_admin_requests_total{path=\"/healthz\",code=\"200\"} 1\n"));
	cr_assert(strstr(h->body, "hodei_admin_requests_total{path=\"/metrics\",code=\"200\"} 1\n"));
	cr_assert(strstr(h->body, "hodei_admin_connections_max 64\n"));
	cr_assert(strstr(h->body, "hodei_admin_connections 1\n"));
	curl_easy_cleanup(e);
	admin_stop(a);
	free(c);
}

Test(admin, readyz_follows_the_callback)
{
	struct ctx *c = ctx_new();
	struct admin *a = start(c, "127.0.0.1:0", NULL);
	CURL *e = curl_easy_init();
	struct http *h = get(e, a, "GET", "/readyz");
	cr_assert_eq(h->code, 200);
	cr_assert_str_eq(h->body, "ready\n");

	snprintf(c->why, sizeof(c->why), "draining: SIGTERM received");
	atomic_store(&c->not_ready, true);
	h = get(e, a, "GET", "/readyz");
	cr_assert_eq(h->code, 503);
	cr_assert_str_eq(h->body, "draining: SIGTERM received\n");
	cr_assert_str_eq(h->ctype, "text/plain; charset=utf-8");
	h = get(e, a, "GET", "/healthz"); /* alive while not ready */
	cr_assert_eq(h->code, 200);

	atomic_store(&c->not_ready, false);
	h = get(e, a, "GET", "/readyz");
	cr_assert_eq(h->code, 200);
	curl_easy_cleanup(e);
	admin_stop(a);
	free(c);
}

Test(admin, unknown_paths_404_other_methods_405)
{
	struct ctx *c = ctx_new();
	struct admin *a = start(c, "127.0.0.1:0", NULL);
	CURL *e = curl_easy_init();
	static const char *const missing[] = { "/", "/nope", "/metrics/", "/healthzz", "/METRICS" };
	for (size_t i = 0; i < FMT_ARRAY_LEN(missing); i++) {
		struct http *h = get(e, a, "GET", missing[i]);
		cr_assert_eq(h->code, 404, "%s", missing[i]);
	}
	static const char *const methods[] = { "POST", "PUT", "DELETE", "OPTIONS", "PATCH" };
	static const char *const paths[] = { "/metrics", "/healthz", "/readyz" };
	for (size_t i = 0; i < FMT_ARRAY_LEN(methods); i++) {
		for (size_t k = 0; k < FMT_ARRAY_LEN(paths); k++) {
			struct http *h = http(e, "127.0.0.1", admin_port(a), methods[i], paths[k],
					      i < 2 ? "x" : NULL, i < 2 ? 1 : 0, NULL);
			cr_assert_eq(h->err, CURLE_OK);
			cr_assert_eq(h->code, 405, "%s %s", methods[i], paths[k]);
			cr_assert_str_eq(h->allow, "GET, HEAD");
		}
	}
	struct http *h = get(e, a, "GET", "/metrics");
	cr_assert(strstr(h->body, "hodei_admin_requests_total{path=\"/readyz\",code=\"405\"} 5\n"));
	cr_assert(strstr(h->body, "hodei_admin_requests_total{path=\"other\",code=\"404\"} 5\n"));
	curl_easy_cleanup(e);
	admin_stop(a);
	free(c);
}

Test(admin, head_sends_headers_without_body)
{
	struct ctx *c = ctx_new();
	struct admin *a = start(c, "127.0.0.1:0", NULL);
	CURL *e = curl_easy_init();
	struct http *h = get(e, a, "HEAD", "/metrics");
	cr_assert_eq(h->code, 200);
	cr_assert_eq(h->len, 0);
	cr_assert_str_eq(h->ctype, "text/plain; version=0.0.4; charset=utf-8");
	cr_assert_gt(h->content_length, 0);
	h = get(e, a, "HEAD", "/healthz");
	cr_assert_eq(h->code, 200);
	cr_assert_eq(h->len, 0);
	cr_assert_eq(h->content_length, 3);
	h = get(e, a, "HEAD", "/readyz");
	cr_assert_eq(h->code, 200);
	curl_easy_cleanup(e);
	admin_stop(a);
	free(c);
}

Test(admin, keep_alive_two_requests_on_one_connection)
{
	struct ctx *c = ctx_new();
	struct admin *a = start(c, "127.0.0.1:0", NULL);
	CURL *e = curl_easy_init();
	struct http *h = get(e, a, "GET", "/metrics");
	cr_assert_eq(h->new_connections, 1);
	cr_assert(!h->conn_close);
	h = get(e, a, "GET", "/healthz");
	cr_assert_eq(h->code, 200);
	cr_assert_eq(h->new_connections, 0, "the second request opened a new connection");
	cr_assert(!h->conn_close);
	curl_easy_cleanup(e);

	/* The same with a bare socket: two requests, one connection. */
	static char buf[1 << 16];
	int fd = connect_local(admin_port(a));
	for (int i = 0; i < 2; i++) {
		send_all(fd, i == 0 ? "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
				    : "GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n");
		cr_assert_eq(read_response(fd, buf, sizeof(buf)), 200);
		cr_assert_null(strcasestr(buf, "connection: close"), "%s", buf);
		cr_assert(strstr(buf, i == 0 ? "\r\n\r\nok\n" : "\r\n\r\nready\n"), "%s", buf);
	}
	close(fd);
	admin_stop(a);
	free(c);
}

Test(admin, exposition_over_limit_or_failing_is_500_and_counted)
{
	struct ctx *c = ctx_new();
	struct admin_limits lim = { .metrics_bytes_max = 8192 };
	struct admin *a = start(c, "127.0.0.1:0", &lim);
	CURL *e = curl_easy_init();
	atomic_store(&c->big, true);
	struct http *h = get(e, a, "GET", "/metrics");
	cr_assert_eq(h->code, 500);
	cr_assert(strstr(h->body, "limit 8192 bytes"), "%s", h->body);
	atomic_store(&c->big, false);
	atomic_store(&c->fail, true);
	h = get(e, a, "GET", "/metrics");
	cr_assert_eq(h->code, 500);
	atomic_store(&c->fail, false);
	h = get(e, a, "GET", "/metrics");
	cr_assert_eq(h->code, 200);
	cr_assert_leq(h->len, 8192);
	cr_assert(strstr(h->body, "hodei_admin_metrics_failures_total{reason=\"too_big\"} 1\n"));
	cr_assert(strstr(h->body, "hodei_admin_metrics_failures_total{reason=\"render\"} 1\n"));
	cr_assert(strstr(h->body, "hodei_admin_requests_total{path=\"/metrics\",code=\"500\"} 2\n"));
	cr_assert(strstr(h->body, "hodei_admin_metrics_bytes_max 8192\n"));
	curl_easy_cleanup(e);
	admin_stop(a);
	free(c);
}

Test(admin, extension_route_gets_body_headers_and_bound)
{
	struct ctx *c = ctx_new();
	struct admin_limits lim = { .body_bytes_max = 4096 };
	struct admin *a = start(c, "127.0.0.1:0", &lim);
	CURL *e = curl_easy_init();
	struct curl_slist *hdr = curl_slist_append(NULL, "X-Test: vector");
	struct http *h = http(e, "127.0.0.1", admin_port(a), "POST", "/ingest?q=7", "hello", 5, hdr);
	cr_assert_eq(h->err, CURLE_OK);
	cr_assert_eq(h->code, 202);
	cr_assert_str_eq(h->ctype, "application/json");
	cr_assert_str_eq(h->body, "{\"bytes\":5,\"x\":\"vector\",\"q\":\"7\",\"first\":\"h\"}");

	static char big[100000];
	memset(big, 'z', sizeof(big));
	h = http(e, "127.0.0.1", admin_port(a), "POST", "/ingest", big, 4096, NULL);
	cr_assert_eq(h->code, 202, "exactly the limit is accepted");
	cr_assert(strstr(h->body, "\"bytes\":4096"));
	h = http(e, "127.0.0.1", admin_port(a), "POST", "/ingest", big, sizeof(big), NULL);
	cr_assert_eq(h->err, CURLE_OK, "%s", curl_easy_strerror(h->err));
	cr_assert_eq(h->code, 413);

	h = get(e, a, "GET", "/ingest");
	cr_assert_eq(h->code, 405);
	cr_assert_str_eq(h->body, "POST only\n");
	h = http(e, "127.0.0.1", admin_port(a), "POST", "/elsewhere", "x", 1, NULL);
	cr_assert_eq(h->code, 404);
	h = http(e, "127.0.0.1", admin_port(a), "POST", "/metrics", "x", 1, NULL);
	cr_assert_eq(h->code, 405);
	h = get(e, a, "GET", "/healthz"); /* still serving after the early 413 */
	cr_assert_eq(h->code, 200);
	curl_slist_free_all(hdr);
	curl_easy_cleanup(e);
	admin_stop(a);
	free(c);
}

/* A chunked body has no length up front: it is collected up to the limit,
 * the rest is dropped, and the answer (413) comes at its end — on a
 * connection that stays usable. */
Test(admin, extension_route_chunked_body_bound)
{
	struct ctx *c = ctx_new();
	struct admin_limits lim = { .body_bytes_max = 4096 };
	struct admin *a = start(c, "127.0.0.1:0", &lim);
	static char buf[1 << 16], chunk[3000 + 1];
	memset(chunk, 'q', sizeof(chunk) - 1);
	int fd = connect_local(admin_port(a));
	for (int chunks = 1; chunks <= 2; chunks++) { /* 3000 bytes, then 6000 */
		send_all(fd, "POST /ingest HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
		for (int i = 0; i < chunks; i++) {
			send_all(fd, "BB8\r\n"); /* 3000 */
			send_all(fd, chunk);
			send_all(fd, "\r\n");
		}
		send_all(fd, "0\r\n\r\n");
		int code = read_response(fd, buf, sizeof(buf));
		if (chunks == 1) {
			cr_assert_eq(code, 202, "%s", buf);
			cr_assert(strstr(buf, "\"bytes\":3000"), "%s", buf);
		} else {
			cr_assert_eq(code, 413, "%s", buf);
		}
	}
	send_all(fd, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"); /* same connection */
	cr_assert_eq(read_response(fd, buf, sizeof(buf)), 200);
	close(fd);
	admin_stop(a);
	free(c);
}

Test(admin, connection_limit_holds_new_connections_back)
{
	struct ctx *c = ctx_new();
	struct admin_limits lim = { .connections_max = 1 };
	struct admin *a = start(c, "127.0.0.1:0", &lim);
	static char buf[1 << 16];
	int fd1 = connect_local(admin_port(a));
	send_all(fd1, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
	cr_assert_eq(read_response(fd1, buf, sizeof(buf)), 200); /* fd1 holds the one slot */

	/* A second connection is not accepted while the slot is held: it waits
	 * in the kernel's backlog, unanswered... */
	int fd2 = connect_local(admin_port(a));
	send_all(fd2, "GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n");
	struct pollfd p = { .fd = fd2, .events = POLLIN };
	cr_assert_eq(poll(&p, 1, 300), 0, "a connection over the limit was served");
	/* ...and is served once the slot is free. */
	close(fd1);
	cr_assert_eq(read_response(fd2, buf, sizeof(buf)), 200);
	cr_assert(strstr(buf, "\r\n\r\nready\n"));
	close(fd2);
	admin_stop(a);
	free(c);
}

Test(admin, idle_connections_time_out)
{
	struct ctx *c = ctx_new();
	struct admin_limits lim = { .conn_timeout_s = 1 };
	struct admin *a = start(c, "127.0.0.1:0", &lim);
	static char buf[1 << 16];
	int fd = connect_local(admin_port(a));
	send_all(fd, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
	cr_assert_eq(read_response(fd, buf, sizeof(buf)), 200);
	struct pollfd p = { .fd = fd, .events = POLLIN };
	cr_assert_eq(poll(&p, 1, 15000), 1, "an idle connection stayed open");
	cr_assert_eq(recv(fd, buf, sizeof(buf), 0), 0);
	close(fd);
	admin_stop(a);
	free(c);
}

Test(admin, listens_on_ipv6_loopback)
{
	int probe = socket(AF_INET6, SOCK_STREAM, 0);
	struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	bool have_v6 = probe >= 0 && bind(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	if (probe >= 0)
		close(probe);
	if (!have_v6)
		cr_skip_test("no IPv6 loopback on this machine");
	struct ctx *c = ctx_new();
	struct admin *a = start(c, "[::1]:0", NULL);
	CURL *e = curl_easy_init();
	struct http *h = http(e, "[::1]", admin_port(a), "GET", "/healthz", NULL, 0, NULL);
	cr_assert_eq(h->err, CURLE_OK, "%s", curl_easy_strerror(h->err));
	cr_assert_eq(h->code, 200);
	curl_easy_cleanup(e);
	admin_stop(a);
	free(c);
}

Test(admin, listen_addresses_parse)
{
	struct sockaddr_storage ss;
	socklen_t len;
	cr_assert_eq(admin_parse_listen("127.0.0.1:8080", &ss, &len), 0);
	cr_assert_eq(ss.ss_family, AF_INET);
	cr_assert_eq(ntohs(((struct sockaddr_in *)&ss)->sin_port), 8080);
	cr_assert_eq(len, sizeof(struct sockaddr_in));
	cr_assert_eq(admin_parse_listen("[::1]:65535", &ss, &len), 0);
	cr_assert_eq(ss.ss_family, AF_INET6);
	cr_assert_eq(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port), 65535);
	cr_assert_eq(admin_parse_listen("0.0.0.0:0", &ss, &len), 0);
	cr_assert_eq(admin_parse_listen("[::]:9", &ss, &len), 0);
	static const char *const bad[] = {
		"8080", ":8080", "localhost:80", "1.2.3.4:65536", "1.2.3.4:", "1.2.3.4:x1",
		"1.2.3.4:+80", "[::1]8080", "::1:80", "[::1]", "1.2.3:80", "[1.2.3.4]:80",
		"", "1.2.3.4:123456",
	};
	for (size_t i = 0; i < FMT_ARRAY_LEN(bad); i++)
		cr_assert_eq(admin_parse_listen(bad[i], &ss, &len), FMT_E_INVALID, "%s", bad[i]);
	cr_assert_eq(admin_parse_listen(NULL, &ss, &len), FMT_E_INVALID);

	struct admin_ops ops = { 0 };
	struct admin *a = (struct admin *)&ops;
	cr_assert_eq(admin_start("8080", &ops, &a), FMT_E_INVALID); /* never a bare port */
	cr_assert_null(a);
}

Test(admin, port_in_use_is_an_error)
{
	struct ctx *c = ctx_new();
	struct admin *a = start(c, "127.0.0.1:0", NULL);
	char addr[64];
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", admin_port(a));
	struct admin_ops ops = { .ctx = c };
	struct admin *b = NULL;
	int rc = admin_start(addr, &ops, &b);
	cr_assert_eq(rc, -EADDRINUSE, "got %d (%s)", rc, fmt_strerror(rc));
	cr_assert_null(b);
	admin_stop(a);
	free(c);
}

Test(admin, defaults_without_callbacks)
{
	struct admin_ops ops = { 0 };
	struct admin *a = NULL;
	cr_assert_eq(admin_start("127.0.0.1:0", &ops, &a), 0);
	CURL *e = curl_easy_init();
	struct http *h = get(e, a, "GET", "/readyz");
	cr_assert_eq(h->code, 200);
	h = get(e, a, "POST", "/anything");
	cr_assert_eq(h->code, 404);
	h = get(e, a, "GET", "/metrics"); /* only the admin's own families */
	cr_assert_eq(h->code, 200);
	cr_assert(strstr(h->body, "# TYPE hodei_admin_requests_total counter\n"));
	curl_easy_cleanup(e);
	admin_stop(a);
	admin_stop(NULL);
}

Test(admin, promtool_accepts_live_metrics)
{
	if (system("command -v promtool >/dev/null 2>&1") != 0)
		cr_skip_test("promtool not found (Debian package prometheus; scripts/setup.sh installs it)");
	struct ctx *c = ctx_new();
	struct admin *a = start(c, "127.0.0.1:0", NULL);
	CURL *e = curl_easy_init();
	get(e, a, "GET", "/healthz");
	get(e, a, "GET", "/nope");
	struct http *h = get(e, a, "GET", "/metrics");
	cr_assert_eq(h->code, 200);
	FILE *p = popen("promtool check metrics", "w");
	cr_assert_not_null(p);
	fwrite(h->body, 1, h->len, p);
	int st = pclose(p);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "promtool failed on:\n%s", h->body);
	curl_easy_cleanup(e);
	admin_stop(a);
	free(c);
}
