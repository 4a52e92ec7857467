// SPDX-License-Identifier: Apache-2.0
/*
 * test_grpc_client.c — net/grpc_client.c against a scripted HTTP/2 peer.
 *
 * Each test starts a thread that accepts one connection on 127.0.0.1 (a
 * free port) and answers with an nghttp2 server session in one of the
 * behaviours a real server or a broken network shows: a response cut into
 * 7-byte DATA frames, trailers-only errors, GOAWAY, RST_STREAM, a
 * compressed or oversized message, no grpc-status, an HTTP error, silence,
 * an echoing bidirectional stream. The client must return the right
 * status and message for each, and never hang or crash.
 */
#include <criterion/criterion.h>

#include "net/grpc_client.h"

#include <arpa/inet.h>
#include <nghttp2/nghttp2.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum mode {
	M_SPLIT,         /* one message in 7-byte DATA frames, then OK */
	M_TRAILERS_ONLY, /* HEADERS with grpc-status 16 and END_STREAM */
	M_GOAWAY,        /* GOAWAY (last stream 0), then close */
	M_RST_REFUSED,   /* RST_STREAM REFUSED_STREAM */
	M_COMPRESSED,    /* a message with the compressed flag */
	M_NO_STATUS,     /* a message and END_STREAM without trailers */
	M_HTTP_404,      /* :status 404 and END_STREAM */
	M_TOO_BIG,       /* a prefix announcing 100 MiB */
	M_SILENT,        /* never answers */
	M_ECHO,          /* answers every message with itself, then OK */
	M_CLOSE,         /* closes the TCP connection on the request */
};

#define SPLIT_BYTES 50000

struct peer {
	int listen_fd;
	int port;
	enum mode mode;
	pthread_t thread;
	/* What the client sent (first stream). */
	char path[128], te[32], content_type[64], user_agent[64], timeout[32], auth[128];
	/* The response being written. */
	uint8_t *out;
	size_t out_len, out_off;
	size_t chunk_max;
	bool request_done, trailers_sent, deferred;
	int32_t stream_id;
	uint8_t in[1 << 16]; /* echo: request bytes not yet echoed */
	size_t in_len;
};

static void out_add(struct peer *p, const void *b, size_t n)
{
	p->out = realloc(p->out, p->out_len + n);
	memcpy(p->out + p->out_len, b, n);
	p->out_len += n;
}

static void out_message(struct peer *p, uint8_t flag, uint32_t len, const uint8_t *body, size_t body_len)
{
	uint8_t prefix[5] = { flag, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
			      (uint8_t)len };
	out_add(p, prefix, 5);
	if (body_len)
		out_add(p, body, body_len);
}

static ssize_t peer_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
			 uint32_t *flags, nghttp2_data_source *src, void *user)
{
	struct peer *p = user;
	size_t avail = p->out_len - p->out_off;
	if (avail) {
		size_t n = avail < length ? avail : length;
		if (p->chunk_max && n > p->chunk_max)
			n = p->chunk_max;
		memcpy(buf, p->out + p->out_off, n);
		p->out_off += n;
		return (ssize_t)n;
	}
	if (!p->request_done) {
		p->deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	*flags |= NGHTTP2_DATA_FLAG_EOF;
	if (p->mode == M_NO_STATUS)
		return 0;
	*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
	nghttp2_nv tr[] = { { (uint8_t *)"grpc-status", (uint8_t *)"0", 11, 1, 0 } };
	nghttp2_submit_trailer(s, id, tr, 1);
	return 0;
}

static nghttp2_nv nv(const char *n, const char *v)
{
	return (nghttp2_nv){ (uint8_t *)n, (uint8_t *)v, strlen(n), strlen(v), 0 };
}

static void respond(nghttp2_session *s, struct peer *p, int32_t id)
{
	nghttp2_nv ok[] = { nv(":status", "200"), nv("content-type", "application/grpc") };
	nghttp2_data_provider dp = { .read_callback = peer_read };
	static uint8_t big[SPLIT_BYTES];
	switch (p->mode) {
	case M_SPLIT:
		for (size_t i = 0; i < sizeof(big); i++)
			big[i] = (uint8_t)(i * 31);
		out_message(p, 0, sizeof(big), big, sizeof(big));
		p->chunk_max = 7;
		nghttp2_submit_response(s, id, ok, 2, &dp);
		break;
	case M_TRAILERS_ONLY: {
		nghttp2_nv h[] = { nv(":status", "200"), nv("content-type", "application/grpc"),
				   nv("grpc-status", "16"), nv("grpc-message", "bad%20key%3A%20%E2%9C%97") };
		nghttp2_submit_response(s, id, h, 4, NULL);
		break;
	}
	case M_GOAWAY:
		nghttp2_submit_goaway(s, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
		break;
	case M_RST_REFUSED:
		nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, id, NGHTTP2_REFUSED_STREAM);
		break;
	case M_COMPRESSED:
		out_message(p, 1, 3, (const uint8_t *)"abc", 3);
		nghttp2_submit_response(s, id, ok, 2, &dp);
		break;
	case M_NO_STATUS:
		out_message(p, 0, 3, (const uint8_t *)"abc", 3);
		nghttp2_submit_response(s, id, ok, 2, &dp);
		break;
	case M_HTTP_404: {
		nghttp2_nv h[] = { nv(":status", "404") };
		nghttp2_submit_response(s, id, h, 1, NULL);
		break;
	}
	case M_TOO_BIG:
		out_message(p, 0, 100u << 20, (const uint8_t *)"abc", 3);
		nghttp2_submit_response(s, id, ok, 2, &dp);
		break;
	default:
		break;
	}
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
		     const uint8_t *value, size_t vlen, uint8_t flags, void *user)
{
	struct peer *p = user;
	struct {
		const char *name;
		char *dst;
		size_t cap;
	} want[] = {
		{ ":path", p->path, sizeof(p->path) },		{ "te", p->te, sizeof(p->te) },
		{ "content-type", p->content_type, sizeof(p->content_type) },
		{ "user-agent", p->user_agent, sizeof(p->user_agent) },
		{ "grpc-timeout", p->timeout, sizeof(p->timeout) },
		{ "authorization", p->auth, sizeof(p->auth) },
	};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		if (strlen(want[i].name) == nlen && !memcmp(want[i].name, name, nlen))
			snprintf(want[i].dst, want[i].cap, "%.*s", (int)vlen, value);
	return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
		   void *user)
{
	struct peer *p = user;
	if (p->mode != M_ECHO)
		return 0;
	memcpy(p->in + p->in_len, data, len);
	p->in_len += len;
	/* Echo every complete message. */
	size_t off = 0;
	while (p->in_len - off >= 5) {
		uint32_t n = (uint32_t)p->in[off + 1] << 24 | (uint32_t)p->in[off + 2] << 16 |
			     (uint32_t)p->in[off + 3] << 8 | p->in[off + 4];
		if (p->in_len - off - 5 < n)
			break;
		out_add(p, p->in + off, 5 + n);
		off += 5 + n;
	}
	memmove(p->in, p->in + off, p->in_len - off);
	p->in_len -= off;
	if (p->deferred) {
		p->deferred = false;
		nghttp2_session_resume_data(s, id);
	}
	return 0;
}

static int on_frame(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
	struct peer *p = user;
	if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
		p->stream_id = f->hd.stream_id;
		if (p->mode == M_ECHO) {
			nghttp2_nv ok[] = { nv(":status", "200"), nv("content-type", "application/grpc") };
			nghttp2_data_provider dp = { .read_callback = peer_read };
			nghttp2_submit_response(s, f->hd.stream_id, ok, 2, &dp);
		}
	}
	if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
	    (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
		p->request_done = true;
		if (p->mode == M_ECHO) {
			if (p->deferred) {
				p->deferred = false;
				nghttp2_session_resume_data(s, f->hd.stream_id);
			}
		} else {
			respond(s, p, f->hd.stream_id);
		}
	}
	return 0;
}

static void *peer_main(void *arg)
{
	struct peer *p = arg;
	int fd = accept(p->listen_fd, NULL, NULL);
	if (fd < 0)
		return NULL;
	nghttp2_session_callbacks *cb;
	nghttp2_session *s;
	nghttp2_session_callbacks_new(&cb);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame);
	nghttp2_session_server_new(&s, cb, p);
	nghttp2_session_callbacks_del(cb);
	nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, NULL, 0);
	uint8_t buf[16384];
	for (;;) {
		const uint8_t *data;
		ssize_t n;
		while ((n = nghttp2_session_mem_send(s, &data)) > 0)
			if (write(fd, data, (size_t)n) != n)
				goto out;
		if (p->mode == M_GOAWAY && p->request_done)
			goto out;
		if (p->mode == M_CLOSE && p->stream_id)
			goto out;
		if (!nghttp2_session_want_read(s) && !nghttp2_session_want_write(s))
			goto out;
		ssize_t r = read(fd, buf, sizeof(buf));
		if (r <= 0 || nghttp2_session_mem_recv(s, buf, (size_t)r) < 0)
			goto out;
	}
out:
	nghttp2_session_del(s);
	close(fd);
	free(p->out);
	return NULL;
}

static struct peer *peer_start(enum mode mode)
{
	struct peer *p = calloc(1, sizeof(*p));
	p->mode = mode;
	p->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	cr_assert_eq(bind(p->listen_fd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(p->listen_fd, 4), 0);
	socklen_t len = sizeof(a);
	getsockname(p->listen_fd, (struct sockaddr *)&a, &len);
	p->port = ntohs(a.sin_port);
	pthread_create(&p->thread, NULL, peer_main, p);
	return p;
}

static struct net_grpc_conn *dial(struct peer *p)
{
	char target[32];
	struct net_grpc_status st;
	struct net_grpc_conn *c;
	snprintf(target, sizeof(target), "127.0.0.1:%d", p->port);
	cr_assert_eq(net_grpc_connect(target, 5000, &c, &st), 0, "%s", st.message);
	return c;
}

/* One unary call in the given mode; returns its rc, *st filled. */
static int unary(enum mode mode, int timeout_ms, struct net_grpc_status *st, uint8_t **resp,
		 size_t *resp_len, struct peer **out_peer)
{
	struct peer *p = peer_start(mode);
	struct net_grpc_conn *c = dial(p);
	struct net_grpc_md md[] = { { "authorization", "Bearer hk_test" } };
	int rc = net_grpc_unary(c, "/hodei.audit.v1.AuditService/Search", md, 1,
				(const uint8_t *)"\x48\x05", 2, timeout_ms, resp, resp_len, st);
	net_grpc_close(c);
	pthread_join(p->thread, NULL);
	close(p->listen_fd);
	if (out_peer)
		*out_peer = p;
	else
		free(p);
	return rc;
}

Test(grpc_client, response_in_many_frames_and_request_headers)
{
	struct net_grpc_status st;
	uint8_t *resp;
	size_t len;
	struct peer *p;
	cr_assert_eq(unary(M_SPLIT, 3000, &st, &resp, &len, &p), 0, "%s", st.message);
	cr_assert_eq(st.code, GRPC_OK);
	cr_assert_eq(len, SPLIT_BYTES);
	for (size_t i = 0; i < len; i++)
		cr_assert_eq(resp[i], (uint8_t)(i * 31), "byte %zu", i);
	free(resp);
	cr_assert_str_eq(p->path, "/hodei.audit.v1.AuditService/Search");
	cr_assert_str_eq(p->te, "trailers");
	cr_assert_str_eq(p->content_type, "application/grpc");
	cr_assert(strncmp(p->user_agent, "hodei-audit/", 12) == 0, "%s", p->user_agent);
	cr_assert_str_eq(p->timeout, "3000m");
	cr_assert_str_eq(p->auth, "Bearer hk_test");
	free(p);
}

Test(grpc_client, no_deadline_no_grpc_timeout)
{
	struct net_grpc_status st;
	uint8_t *resp;
	size_t len;
	struct peer *p;
	cr_assert_eq(unary(M_SPLIT, 0, &st, &resp, &len, &p), 0, "%s", st.message);
	cr_assert_str_eq(p->timeout, "");
	free(resp);
	free(p);
}

static void expect_status(enum mode mode, int timeout_ms, int rc_want, int code, const char *msg)
{
	struct net_grpc_status st;
	uint8_t *resp = (uint8_t *)1;
	size_t len;
	int rc = unary(mode, timeout_ms, &st, &resp, &len, NULL);
	cr_assert_eq(rc, rc_want, "mode %d: rc %d (%s)", mode, rc, st.message);
	cr_assert_eq(st.code, code, "mode %d: %s: %s", mode, grpc_status_name(st.code), st.message);
	cr_assert(strstr(st.message, msg) != NULL, "mode %d: '%s' lacks '%s'", mode, st.message, msg);
	cr_assert_null(resp);
}

Test(grpc_client, trailers_only_error)
{
	expect_status(M_TRAILERS_ONLY, 3000, NET_E_STATUS, GRPC_UNAUTHENTICATED, "bad key: ✗");
}

Test(grpc_client, goaway_is_unavailable)
{
	expect_status(M_GOAWAY, 3000, NET_E_TRANSPORT, GRPC_UNAVAILABLE, "");
}

Test(grpc_client, refused_stream_is_unavailable)
{
	expect_status(M_RST_REFUSED, 3000, NET_E_TRANSPORT, GRPC_UNAVAILABLE, "REFUSED_STREAM");
}

Test(grpc_client, compressed_message_is_internal)
{
	expect_status(M_COMPRESSED, 3000, NET_E_TRANSPORT, GRPC_INTERNAL, "compress");
}

Test(grpc_client, missing_grpc_status_is_internal)
{
	expect_status(M_NO_STATUS, 3000, NET_E_TRANSPORT, GRPC_INTERNAL, "without grpc-status");
}

Test(grpc_client, http_404_is_unimplemented)
{
	expect_status(M_HTTP_404, 3000, NET_E_TRANSPORT, GRPC_UNIMPLEMENTED, "HTTP status 404");
}

Test(grpc_client, oversized_message_is_refused)
{
	expect_status(M_TOO_BIG, 3000, NET_E_TRANSPORT, GRPC_RESOURCE_EXHAUSTED, "limit");
}

Test(grpc_client, silence_hits_the_deadline)
{
	expect_status(M_SILENT, 200, NET_E_TRANSPORT, GRPC_DEADLINE_EXCEEDED, "200 ms");
}

Test(grpc_client, closed_connection_is_unavailable)
{
	expect_status(M_CLOSE, 3000, NET_E_TRANSPORT, GRPC_UNAVAILABLE, "");
}

Test(grpc_client, connect_failures)
{
	struct net_grpc_status st;
	struct net_grpc_conn *c;
	cr_assert_eq(net_grpc_connect("127.0.0.1", 1000, &c, &st), NET_E_TRANSPORT);
	cr_assert_eq(st.code, GRPC_UNAVAILABLE);
	cr_assert(strstr(st.message, "bad server address") != NULL, "%s", st.message);
	cr_assert_eq(net_grpc_connect("127.0.0.1:1", 1000, &c, &st), NET_E_TRANSPORT);
	cr_assert(strstr(st.message, "Connection refused") != NULL, "%s", st.message);
	cr_assert_eq(net_grpc_connect("[::1", 1000, &c, &st), NET_E_TRANSPORT);
	cr_assert_eq(net_grpc_connect("host:port", 1000, &c, &st), NET_E_TRANSPORT);
}

Test(grpc_client, stream_pipelines_in_order)
{
	struct peer *p = peer_start(M_ECHO);
	struct net_grpc_conn *c = dial(p);
	struct net_grpc_stream *s;
	struct net_grpc_status st;
	cr_assert_eq(net_grpc_stream_open(c, "/hodei.audit.v1.AuditService/AppendStream", NULL, 0, 0,
					  &s, &st),
		     0);
	enum { N = 1000, W = 8 };
	uint32_t sent = 0, got = 0;
	bool closed = false;
	while (got < N) {
		while (sent < N && sent - got < W) {
			uint8_t msg[4096];
			size_t len = 4 + (sent * 37) % 4000;
			memset(msg, (int)(sent & 0xff), len);
			memcpy(msg, &sent, 4);
			cr_assert_eq(net_grpc_stream_send(s, msg, len, &st), 0, "%s", st.message);
			sent++;
		}
		if (sent == N && !closed) {
			cr_assert_eq(net_grpc_stream_close_send(s, &st), 0);
			closed = true;
		}
		uint8_t *m;
		size_t len;
		net_grpc_stream_set_timeout(s, 5000);
		cr_assert_eq(net_grpc_stream_recv(s, &m, &len, &st), 1, "%s", st.message);
		uint32_t idx;
		memcpy(&idx, m, 4);
		cr_assert_eq(idx, got, "response %u out of order (%u)", got, idx);
		cr_assert_eq(len, 4 + (got * 37) % 4000);
		free(m);
		got++;
	}
	uint8_t *m;
	size_t len;
	cr_assert_eq(net_grpc_stream_recv(s, &m, &len, &st), 0, "%s", st.message);
	cr_assert_eq(st.code, GRPC_OK);
	net_grpc_stream_free(s);
	cr_assert(net_grpc_usable(c));
	net_grpc_close(c);
	pthread_join(p->thread, NULL);
	close(p->listen_fd);
	free(p);
}
