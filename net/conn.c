// SPDX-License-Identifier: Apache-2.0
/*
 * conn.c — connections: socket (or TLS) I/O, the nghttp2 server session,
 * gRPC streams and their responses. Runs on the shard thread that accepted
 * the connection; see internal.h for ownership and invariants N1–N3.
 *
 * I/O is edge-triggered: on every readiness event a connection reads until
 * EAGAIN (nghttp2 consumes everything it is given; HTTP/2 flow control,
 * not the socket, bounds what a client can make us buffer) and writes what
 * nghttp2 has until EAGAIN. Output produced by completions is written once
 * per tick (the shard's flush list), so one completion batch costs one
 * send per connection, not one per response.
 *
 * A request's life on a stream:
 *   HEADERS  ─▶ on_header: path, content-type, the bearer token (hashed
 *               at once, never stored), x-hodei-tenant, grpc-timeout,
 *               grpc-encoding, x-request-id; header bytes capped
 *   end of headers ─▶ draining? method known? encoding? auth (rpc.c)
 *   DATA     ─▶ gRPC message reassembly (size limit) ─▶ rpc_on_message
 *   END_STREAM ─▶ rpc_on_end
 * and its answer: response HEADERS + DATA (messages) + trailers, or one
 * trailers-only HEADERS for an error before any message (N2).
 */
#include "net/internal.h"
#include "net/log.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define HEADER_BYTES_MAX (16u << 10) /* per request, names + values + 32 each */
#define READ_CHUNK (64u << 10)

static struct stream *stream_of(struct conn *c, int32_t id)
{
	return nghttp2_session_get_stream_user_data(c->h2, id);
}

void conn_want_flush(struct conn *c)
{
	if (c->flush_queued || c->dead)
		return;
	c->flush_queued = true;
	c->flush_next = c->sh->flush_head;
	c->sh->flush_head = c;
}

void conn_flush_queued(struct srv_shard *sh)
{
	while (sh->flush_head) {
		struct conn *c = sh->flush_head;
		sh->flush_head = c->flush_next;
		c->flush_queued = false;
		if (!c->dead)
			conn_flush(c);
	}
}

void stream_give_back(struct conn *c, int32_t stream_id, uint32_t bytes)
{
	if (!bytes || c->dead)
		return;
	nghttp2_session_consume_connection(c->h2, bytes);
	if (stream_of(c, stream_id))
		nghttp2_session_consume_stream(c->h2, stream_id, bytes);
	conn_want_flush(c);
}

/* ---- socket I/O ------------------------------------------------------------ */

/* Returns bytes read, 0 on EOF, -EAGAIN, or another -errno / -EPROTO. */
static ssize_t conn_recv(struct conn *c, uint8_t *buf, size_t cap)
{
	if (!c->ssl) {
		for (;;) {
			ssize_t n = recv(c->fd, buf, cap, 0);
			if (n >= 0)
				return n;
			if (errno != EINTR)
				return -errno;
		}
	}
	int n = SSL_read(c->ssl, buf, (int)cap);
	if (n > 0)
		return n;
	int err = SSL_get_error(c->ssl, n);
	ERR_clear_error();
	if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
		return -EAGAIN;
	if (err == SSL_ERROR_ZERO_RETURN)
		return 0;
	return -EPROTO;
}

static ssize_t conn_send(struct conn *c, const uint8_t *buf, size_t len)
{
	if (!c->ssl) {
		for (;;) {
			ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
			if (n >= 0)
				return n;
			if (errno != EINTR)
				return -errno;
		}
	}
	int n = SSL_write(c->ssl, buf, (int)(len > INT32_MAX ? INT32_MAX : len));
	if (n > 0)
		return n;
	int err = SSL_get_error(c->ssl, n);
	ERR_clear_error();
	if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
		return -EAGAIN;
	return -EPROTO;
}

/* TLS: finishes the handshake; the peer must have chosen h2 by ALPN.
 * Returns 1 done, 0 in progress, -1 failed. */
static int conn_handshake(struct conn *c)
{
	int rc = SSL_do_handshake(c->ssl);
	if (rc == 1) {
		const unsigned char *alpn = NULL;
		unsigned int len = 0;
		SSL_get0_alpn_selected(c->ssl, &alpn, &len);
		if (len != 2 || memcmp(alpn, "h2", 2) != 0) {
			nlog(NLOG_INFO, &(struct nlog_fields){ .peer = c->peer, .code = -1 },
			     "TLS client did not negotiate h2 by ALPN: closing");
			return -1;
		}
		c->tls_done = true;
		return 1;
	}
	int err = SSL_get_error(c->ssl, rc);
	ERR_clear_error();
	if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
		return 0;
	nlog(NLOG_INFO, &(struct nlog_fields){ .peer = c->peer, .code = -1 }, "TLS handshake failed");
	return -1;
}

void conn_flush(struct conn *c)
{
	struct srv_stats *st = &c->sh->stats;
	while (!c->dead) {
		if (!c->pend_len) {
			const uint8_t *data;
			ssize_t n = nghttp2_session_mem_send(c->h2, &data);
			if (n < 0) {
				conn_close(c);
				return;
			}
			if (n == 0)
				break;
			c->pend = data;
			c->pend_len = (size_t)n;
		}
		ssize_t w = conn_send(c, c->pend, c->pend_len);
		if (w == -EAGAIN)
			return; /* EPOLLOUT will call us again */
		if (w < 0) {
			conn_close(c);
			return;
		}
		atomic_fetch_add_explicit(&st->bytes_sent, (uint64_t)w, memory_order_relaxed);
		c->pend += w;
		c->pend_len -= (size_t)w;
	}
	if (!c->dead && !nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2))
		conn_close(c); /* GOAWAY exchanged and every stream done */
}

static void conn_read(struct conn *c)
{
	uint8_t buf[READ_CHUNK];
	while (!c->dead) {
		if (c->ssl && !c->tls_done) {
			int hs = conn_handshake(c);
			if (hs < 0) {
				conn_close(c);
				return;
			}
			if (hs == 0)
				return;
		}
		ssize_t n = conn_recv(c, buf, sizeof(buf));
		if (n == -EAGAIN)
			return;
		if (n <= 0) {
			conn_close(c); /* EOF or error: the peer is gone */
			return;
		}
		c->last_active_ns = srv_now_ns();
		atomic_fetch_add_explicit(&c->sh->stats.bytes_received, (uint64_t)n, memory_order_relaxed);
		ssize_t used = nghttp2_session_mem_recv(c->h2, buf, (size_t)n);
		if (used < 0) {
			nlog(NLOG_DEBUG, &(struct nlog_fields){ .peer = c->peer, .code = -1 },
			     "HTTP/2 error: %s", nghttp2_strerror((int)used));
			conn_flush(c); /* nghttp2 queued a GOAWAY */
			conn_close(c);
			return;
		}
	}
}

static void conn_on_events(struct eng_watch *w, uint32_t events)
{
	struct conn *c = (struct conn *)w;
	if (c->dead)
		return;
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP))
		conn_read(c);
	if (!c->dead)
		conn_flush(c);
}

/* ---- streams ------------------------------------------------------------- */

static void stream_unlink(struct conn *c, struct stream *st)
{
	if (st->prev)
		st->prev->next = st->next;
	else
		c->stream_list = st->next;
	if (st->next)
		st->next->prev = st->prev;
	st->prev = st->next = NULL;
}

static void stream_free(struct stream *st)
{
	rpc_detach_calls(st);
	gf_reader_free(&st->rd);
	free(st->unary_msg);
	free(st->out);
	free(st);
}

/* grpc-message is percent-encoded (PROTOCOL-HTTP2.md): bytes outside
 * 0x20..0x7E and '%' itself become %XX. */
static void percent_encode(const char *in, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	for (const unsigned char *p = (const unsigned char *)in; *p && o + 4 < cap; p++) {
		if (*p >= 0x20 && *p <= 0x7e && *p != '%') {
			out[o++] = (char)*p;
		} else {
			out[o++] = '%';
			out[o++] = hex[*p >> 4];
			out[o++] = hex[*p & 15];
		}
	}
	out[o] = 0;
}

#define NV(n, v) { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE }

static ssize_t stream_read_cb(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
			      uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
	struct stream *st = source->ptr;
	size_t n = st->out_len - st->out_off;
	if (n > length)
		n = length;
	memcpy(buf, st->out + st->out_off, n);
	st->out_off += n;
	if (st->out_off == st->out_len)
		st->out_off = st->out_len = 0;
	if (st->out_len)
		return (ssize_t)n;
	if (st->want_trailers) {
		char code[12], msg[3 * sizeof(st->final_message) + 1];
		snprintf(code, sizeof(code), "%d", st->final_status);
		percent_encode(st->final_message, msg, sizeof(msg));
		nghttp2_nv nv[] = { NV("grpc-status", code), NV("grpc-message", msg) };
		size_t nnv = msg[0] ? 2 : 1;
		*data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
		if (nghttp2_submit_trailer(session, id, nv, nnv) != 0)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		st->want_trailers = false;
		return (ssize_t)n;
	}
	if (n)
		return (ssize_t)n;
	st->deferred = true;
	return NGHTTP2_ERR_DEFERRED;
}

static int stream_start_response(struct stream *st)
{
	nghttp2_nv nv[] = {
		NV(":status", "200"),
		NV("content-type", "application/grpc"),
		NV("grpc-accept-encoding", "identity"),
	};
	nghttp2_data_provider prd = { .source.ptr = st, .read_callback = stream_read_cb };
	if (nghttp2_submit_response(st->c->h2, st->id, nv, 3, &prd) != 0)
		return -1;
	st->headers_sent = true;
	return 0;
}

int stream_send_message(struct stream *st, const uint8_t *msg, uint32_t len)
{
	if (st->answered)
		return -1;
	size_t need = st->out_len + GF_PREFIX_BYTES + len;
	if (need > st->out_cap) {
		size_t cap = st->out_cap ? st->out_cap : 4096;
		while (cap < need)
			cap *= 2;
		uint8_t *p = realloc(st->out, cap);
		if (!p)
			return -1;
		st->out = p;
		st->out_cap = cap;
	}
	gf_prefix(st->out + st->out_len, len);
	memcpy(st->out + st->out_len + GF_PREFIX_BYTES, msg, len);
	st->out_len += GF_PREFIX_BYTES + len;
	if (!st->headers_sent) {
		if (stream_start_response(st) != 0)
			return -1;
	} else if (st->deferred) {
		st->deferred = false;
		nghttp2_session_resume_data(st->c->h2, st->id);
	}
	conn_want_flush(st->c);
	return 0;
}

bool srv_log_line_allowed(struct srv_shard *sh)
{
	int64_t now = srv_now_ns();
	if (now - sh->log_window_ns >= 1000000000ll) {
		sh->log_window_ns = now;
		sh->log_lines = 0;
	}
	if (++sh->log_lines > sh->srv->cfg.log_lines_per_s) {
		atomic_fetch_add_explicit(&sh->stats.log_suppressed, 1, memory_order_relaxed);
		return false;
	}
	return true;
}

/* Refusals are logged: auth failures at warn (someone holds a bad or
 * revoked key), server-side failures at warn, client mistakes at debug.
 * A flood of bad requests cannot flood the log: past log_lines_per_s a
 * second per shard, lines are counted in a metric instead. */
static void log_refusal(struct stream *st, int status)
{
	struct srv_shard *sh = st->c->sh;
	enum nlog_level level = NLOG_DEBUG;
	if (status == GRPC_UNAUTHENTICATED || status == GRPC_PERMISSION_DENIED ||
	    status == GRPC_INTERNAL || status == GRPC_DATA_LOSS)
		level = NLOG_WARN;
	else if (status == GRPC_UNAVAILABLE || status == GRPC_RESOURCE_EXHAUSTED)
		level = NLOG_INFO;
	if (level > nlog_get_level() || !srv_log_line_allowed(sh))
		return;
	nlog(level,
	     &(struct nlog_fields){ .tenant = st->tenant, .request_id = st->request_id,
				     .peer = st->c->peer, .method = rpc_method_name(st->method),
				     .code = status },
	     "%s: %s", grpc_status_name(status), st->final_message);
}

void stream_finish(struct stream *st, int status, const char *message)
{
	if (st->answered)
		return;
	st->answered = true;
	st->final_status = status;
	snprintf(st->final_message, sizeof(st->final_message), "%s", message ? message : "");
	srv_count_request(st->c->sh, st->method, status);
	if (status != GRPC_OK)
		log_refusal(st, status);
	if (!st->headers_sent) {
		/* Trailers-only: one HEADERS frame with END_STREAM. */
		char code[12], msg[3 * sizeof(st->final_message) + 1];
		snprintf(code, sizeof(code), "%d", status);
		percent_encode(st->final_message, msg, sizeof(msg));
		nghttp2_nv nv[] = {
			NV(":status", "200"), NV("content-type", "application/grpc"),
			NV("grpc-accept-encoding", "identity"), NV("grpc-status", code),
			NV("grpc-message", msg),
		};
		size_t nnv = msg[0] ? 5 : 4;
		if (nghttp2_submit_response(st->c->h2, st->id, nv, nnv, NULL) != 0)
			nghttp2_submit_rst_stream(st->c->h2, NGHTTP2_FLAG_NONE, st->id,
						  NGHTTP2_INTERNAL_ERROR);
		st->headers_sent = true;
	} else {
		st->want_trailers = true;
		if (st->deferred) {
			st->deferred = false;
			nghttp2_session_resume_data(st->c->h2, st->id);
		}
	}
	if (status != GRPC_OK)
		st->discard = true;
	/* What the client sent that no call owns goes back now (N1). */
	stream_give_back(st->c, st->id, st->received - st->credited);
	st->credited = st->received;
	conn_want_flush(st->c);
}

/* A plain HTTP answer for requests that are not gRPC at all. */
static void stream_http_error(struct stream *st, const char *status)
{
	st->answered = true;
	st->discard = true;
	nghttp2_nv nv[] = { NV(":status", status) };
	nghttp2_submit_response(st->c->h2, st->id, nv, 1, NULL);
	srv_count_request(st->c->sh, M_UNKNOWN, GRPC_UNIMPLEMENTED);
}

static bool header_is(const uint8_t *name, size_t len, const char *want)
{
	return strlen(want) == len && memcmp(name, want, len) == 0;
}

/* grpc-timeout: 1-8 ASCII digits and a unit (H M S m u n). */
static int64_t parse_timeout(const uint8_t *v, size_t len)
{
	if (len < 2 || len > 9)
		return -1;
	int64_t n = 0;
	for (size_t i = 0; i + 1 < len; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		n = n * 10 + (v[i] - '0');
	}
	switch (v[len - 1]) {
	case 'H': return n * 3600 * 1000000000ll;
	case 'M': return n * 60 * 1000000000ll;
	case 'S': return n * 1000000000ll;
	case 'm': return n * 1000000ll;
	case 'u': return n * 1000ll;
	case 'n': return n;
	default: return -1;
	}
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		     void *user_data)
{
	struct conn *c = user_data;
	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0; /* trailers of a request carry nothing we use */
	struct stream *st = stream_of(c, frame->hd.stream_id);
	if (!st)
		return 0;
	st->header_bytes += (uint32_t)(namelen + valuelen + 32);
	if (st->header_bytes > HEADER_BYTES_MAX)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
	if (header_is(name, namelen, ":method")) {
		st->is_post = valuelen == 4 && memcmp(value, "POST", 4) == 0;
	} else if (header_is(name, namelen, ":path")) {
		if (valuelen < sizeof(st->path)) {
			memcpy(st->path, value, valuelen);
			st->path[valuelen] = 0;
		}
	} else if (header_is(name, namelen, "content-type")) {
		st->grpc_content_type = valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0 &&
					(valuelen == 16 || value[16] == '+' || value[16] == ';');
	} else if (header_is(name, namelen, "authorization")) {
		st->has_token = true;
		if (valuelen > 7 && strncasecmp((const char *)value, "Bearer ", 7) == 0)
			auth_hash_token((const char *)value + 7, valuelen - 7, st->token_hash);
		else
			st->token_malformed = true;
	} else if (header_is(name, namelen, "x-hodei-tenant")) {
		st->has_tenant_header = true;
		if (fmt_tenant_valid((struct fmt_str){ (const char *)value, (uint32_t)valuelen }) &&
		    valuelen <= FMT_TENANT_MAX) {
			memcpy(st->tenant_header, value, valuelen);
			st->tenant_header[valuelen] = 0;
		} else {
			st->tenant_header_bad = true;
		}
	} else if (header_is(name, namelen, "grpc-timeout")) {
		int64_t t = parse_timeout(value, valuelen);
		if (t >= 0)
			st->deadline_ns = srv_now_ns() + t;
	} else if (header_is(name, namelen, "grpc-encoding")) {
		st->encoding_unsupported = !(valuelen == 8 && memcmp(value, "identity", 8) == 0);
	} else if (header_is(name, namelen, "x-request-id")) {
		size_t n = 0;
		for (size_t i = 0; i < valuelen && n + 1 < sizeof(st->request_id); i++)
			if (value[i] > 0x20 && value[i] < 0x7f && value[i] != '"' && value[i] != '\\')
				st->request_id[n++] = (char)value[i];
		st->request_id[n] = 0;
	}
	return 0;
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	struct conn *c = user_data;
	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	struct stream *st = calloc(1, sizeof(*st));
	if (!st)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	st->c = c;
	st->id = frame->hd.stream_id;
	st->method = M_UNKNOWN;
	st->last_data_ns = st->opened_ns = srv_now_ns();
	st->next = c->stream_list;
	if (c->stream_list)
		c->stream_list->prev = st;
	c->stream_list = st;
	c->streams++;
	nghttp2_session_set_stream_user_data(session, st->id, st);
	return 0;
}

/* End of a request's headers: decide whether to serve it at all. */
static void stream_on_headers(struct stream *st)
{
	struct srv *srv = st->c->sh->srv;
	char msg[256];
	if (!st->is_post || !st->grpc_content_type) {
		stream_http_error(st, "415"); /* gRPC over HTTP/2: not a gRPC request */
		return;
	}
	st->method = rpc_method_of(st->path);
	if (atomic_load_explicit(&srv->draining, memory_order_relaxed) ||
	    !atomic_load_explicit(&srv->started, memory_order_relaxed)) {
		srv_count_reject(st->c->sh, R_DRAINING);
		stream_finish(st, GRPC_UNAVAILABLE, "the server is shutting down; retry on another node");
		return;
	}
	if (st->method == M_UNKNOWN) {
		srv_count_reject(st->c->sh, R_UNIMPLEMENTED);
		snprintf(msg, sizeof(msg), "unknown method %.100s", st->path);
		stream_finish(st, GRPC_UNIMPLEMENTED, msg);
		return;
	}
	if (st->encoding_unsupported) {
		srv_count_reject(st->c->sh, R_UNIMPLEMENTED);
		stream_finish(st, GRPC_UNIMPLEMENTED,
			      "grpc-encoding not supported: send uncompressed messages (identity)");
		return;
	}
	int status = rpc_authorize(st, msg, sizeof(msg));
	if (status != GRPC_OK) {
		stream_finish(st, status, msg);
		return;
	}
	gf_reader_init(&st->rd, srv->cfg.max_message_bytes);
}

static void stream_on_end(struct stream *st)
{
	st->end_stream_recv = true;
	if (st->answered || st->discard)
		return;
	if (gf_reader_partial(&st->rd)) {
		srv_count_reject(st->c->sh, R_INVALID_ARGUMENT);
		stream_finish(st, GRPC_INVALID_ARGUMENT, "request ends inside a message");
		return;
	}
	rpc_on_end(st);
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	struct conn *c = user_data;
	struct stream *st = stream_of(c, frame->hd.stream_id);
	if (!st)
		return 0;
	if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
		stream_on_headers(st);
	if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
	    (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
		stream_on_end(st);
	return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t id, const uint8_t *data,
			 size_t len, void *user_data)
{
	struct conn *c = user_data;
	struct stream *st = stream_of(c, id);
	if (!st || st->discard || st->answered) {
		stream_give_back(c, id, (uint32_t)len); /* dropped at once (N1) */
		if (st)
			st->received += (uint32_t)len, st->credited += (uint32_t)len;
		return 0;
	}
	st->received += (uint32_t)len;
	st->last_data_ns = srv_now_ns();
	while (len && !st->answered && !st->discard) {
		struct gf_message m;
		enum gf_result r = gf_reader_feed(&st->rd, &data, &len, &m);
		if (r == GF_NEED_MORE)
			break;
		char msg[200];
		if (r == GF_E_TOO_BIG) {
			snprintf(msg, sizeof(msg), "message of %u bytes is over the limit of %u bytes",
				 m.declared_len, st->rd.max_len);
			rpc_stream_fail(st, R_MESSAGE_TOO_BIG, GRPC_RESOURCE_EXHAUSTED, msg);
			break;
		}
		if (r == GF_E_NOMEM) {
			rpc_stream_fail(st, R_MEMORY_BUDGET, GRPC_RESOURCE_EXHAUSTED,
					"out of memory for the message");
			break;
		}
		if (r == GF_E_FLAG || (r == GF_MESSAGE && m.compressed)) {
			free(m.data);
			rpc_stream_fail(st, R_UNIMPLEMENTED, GRPC_UNIMPLEMENTED,
					"compressed messages are not supported: send identity");
			break;
		}
		st->credited += GF_PREFIX_BYTES + m.len;
		rpc_on_message(st, m.data, m.len);
	}
	if (st->answered || st->discard) {
		/* Whatever is left of this chunk is dropped (N1). */
		stream_give_back(c, id, st->received - st->credited);
		st->credited = st->received;
	}
	return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t id, uint32_t error_code,
			   void *user_data)
{
	struct conn *c = user_data;
	struct stream *st = stream_of(c, id);
	if (!st)
		return 0;
	nghttp2_session_set_stream_user_data(session, id, NULL);
	if (st->received > st->credited)
		nghttp2_session_consume_connection(session, st->received - st->credited);
	stream_unlink(c, st);
	c->streams--;
	c->last_active_ns = srv_now_ns();
	if (st->answered_ns)
		mx_hist_observe_ns(&c->sh->stats.append_stage[STAGE_RESPOND],
				   (uint64_t)(c->last_active_ns - st->answered_ns));
	if (!st->answered)
		srv_count_request(c->sh, st->method, GRPC_CANCELLED);
	stream_free(st);
	return 0;
}

static nghttp2_session_callbacks *session_callbacks;
static nghttp2_option *session_options;
static pthread_once_t session_once = PTHREAD_ONCE_INIT;

static void session_setup_once(void)
{
	nghttp2_session_callbacks *cbs;
	if (nghttp2_session_callbacks_new(&cbs) != 0)
		return;
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
	nghttp2_option *opt;
	if (nghttp2_option_new(&opt) != 0) {
		nghttp2_session_callbacks_del(cbs);
		return;
	}
	/* Flow-control credit is ours to give back (N1). */
	nghttp2_option_set_no_auto_window_update(opt, 1);
	session_callbacks = cbs;
	session_options = opt;
}

/* Refuses a connection over the limit politely: an HTTP/2 GOAWAY saying
 * why (h2c only; a TLS peer just sees the close). */
static void refuse(int fd, bool tls)
{
	nghttp2_session *h2;
	if (!tls && session_callbacks &&
	    nghttp2_session_server_new2(&h2, session_callbacks, NULL, session_options) == 0) {
		static const char why[] = "connection limit reached";
		nghttp2_submit_settings(h2, NGHTTP2_FLAG_NONE, NULL, 0);
		nghttp2_submit_goaway(h2, NGHTTP2_FLAG_NONE, 0, NGHTTP2_REFUSED_STREAM,
				      (const uint8_t *)why, sizeof(why) - 1);
		const uint8_t *data;
		ssize_t n;
		while ((n = nghttp2_session_mem_send(h2, &data)) > 0)
			if (send(fd, data, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) != n)
				break;
		nghttp2_session_del(h2);
	}
	close(fd);
}

void conn_accept(struct srv_shard *sh, int fd, const char *peer)
{
	struct srv *srv = sh->srv;
	pthread_once(&session_once, session_setup_once);
	uint32_t open = atomic_fetch_add(&srv->conns_open, 1);
	if (open >= srv->cfg.max_connections || !session_callbacks) {
		atomic_fetch_sub(&srv->conns_open, 1);
		atomic_fetch_sub_explicit(&sh->assigned, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&sh->stats.conns_rejected, 1, memory_order_relaxed);
		nlog(NLOG_WARN, &(struct nlog_fields){ .peer = peer, .code = -1 },
		     "connection refused: %u connections open (max_connections)", open);
		refuse(fd, srv->tls != NULL);
		return;
	}
	atomic_fetch_add_explicit(&sh->stats.conns_accepted, 1, memory_order_relaxed);
	struct conn *c = calloc(1, sizeof(*c));
	if (!c) {
		atomic_fetch_sub(&srv->conns_open, 1);
		atomic_fetch_sub_explicit(&sh->assigned, 1, memory_order_relaxed);
		close(fd);
		return;
	}
	c->watch.fn = conn_on_events;
	c->sh = sh;
	c->fd = fd;
	snprintf(c->peer, sizeof(c->peer), "%s", peer);
	c->accepted_ns = c->last_active_ns = srv_now_ns();
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (nghttp2_session_server_new2(&c->h2, session_callbacks, c, session_options) != 0)
		goto fail;
	nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, srv->cfg.max_streams },
		/* A stream's window must hold its largest message, or that
		 * message could never arrive (credit returns when it is done). */
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, srv->cfg.max_message_bytes + 64 * 1024 },
		{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, HEADER_BYTES_MAX },
	};
	if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 3) != 0 ||
	    nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0,
						  (int32_t)srv->cfg.conn_window_bytes) != 0)
		goto fail;
	if (srv->tls) {
		c->ssl = SSL_new(srv->tls);
		if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1)
			goto fail;
		SSL_set_accept_state(c->ssl);
	}
	if (eng_watch_add(sh->eng, sh->id, fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, &c->watch))
		goto fail;
	c->next = sh->conns;
	if (sh->conns)
		sh->conns->prev = c;
	sh->conns = c;
	sh->conn_count++;
	if (atomic_load_explicit(&srv->draining, memory_order_relaxed))
		conn_goaway(c);
	conn_on_events(&c->watch, EPOLLIN);
	return;
fail:
	if (c->ssl)
		SSL_free(c->ssl);
	if (c->h2)
		nghttp2_session_del(c->h2);
	free(c);
	close(fd);
	atomic_fetch_sub(&srv->conns_open, 1);
	atomic_fetch_sub_explicit(&sh->assigned, 1, memory_order_relaxed);
}

void conn_close(struct conn *c)
{
	if (c->dead)
		return;
	c->dead = true;
	struct srv_shard *sh = c->sh;
	eng_watch_del(sh->eng, sh->id, c->fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		sh->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	sh->conn_count--;
	atomic_fetch_sub_explicit(&sh->assigned, 1, memory_order_relaxed);
	/* Streams die with the connection; their calls in the engine are
	 * detached now, so no completion can reach this connection. */
	while (c->stream_list) {
		struct stream *st = c->stream_list;
		stream_unlink(c, st);
		if (!st->answered)
			srv_count_request(sh, st->method, GRPC_CANCELLED);
		stream_free(st);
	}
	c->next = sh->dead;
	sh->dead = c;
	atomic_fetch_add_explicit(&sh->stats.conns_closed, 1, memory_order_relaxed);
}

void conn_free(struct conn *c)
{
	struct srv *srv = c->sh->srv;
	nghttp2_session_del(c->h2);
	if (c->ssl)
		SSL_free(c->ssl);
	close(c->fd);
	free(c);
	atomic_fetch_sub(&srv->conns_open, 1);
}

void conn_goaway(struct conn *c)
{
	if (c->goaway_sent || c->dead)
		return;
	c->goaway_sent = true;
	nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE,
			      nghttp2_session_get_last_proc_stream_id(c->h2), NGHTTP2_NO_ERROR,
			      NULL, 0);
	conn_want_flush(c);
}

/* Timeouts, once per sweep: idle connections, clients that never finish
 * a preface or a request, and gRPC deadlines. */
void conn_sweep(struct srv_shard *sh, int64_t now)
{
	const struct srv_config *cfg = &sh->srv->cfg;
	for (struct conn *c = sh->conns, *next; c; c = next) {
		next = c->next;
		if (c->streams == 0 && now - c->last_active_ns > cfg->idle_timeout_ns) {
			atomic_fetch_add_explicit(&sh->stats.conns_idle_closed, 1, memory_order_relaxed);
			conn_goaway(c);
			conn_flush(c);
			conn_close(c);
			continue;
		}
		if (c->ssl && !c->tls_done && now - c->accepted_ns > cfg->request_timeout_ns) {
			atomic_fetch_add_explicit(&sh->stats.conns_slow_closed, 1, memory_order_relaxed);
			conn_close(c);
			continue;
		}
		for (struct stream *st = c->stream_list; st; st = st->next) {
			if (st->answered)
				continue;
			if (st->deadline_ns && now > st->deadline_ns) {
				srv_count_reject(sh, R_DEADLINE);
				rpc_detach_calls(st);
				stream_finish(st, GRPC_DEADLINE_EXCEEDED, "deadline exceeded (grpc-timeout)");
			} else if (!st->end_stream_recv && st->calls_head == NULL &&
				   now - st->last_data_ns > cfg->request_timeout_ns) {
				atomic_fetch_add_explicit(&sh->stats.conns_slow_closed, 1,
							  memory_order_relaxed);
				stream_finish(st, GRPC_DEADLINE_EXCEEDED,
					      "request not received in time (request_timeout)");
			}
		}
	}
}
