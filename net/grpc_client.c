// SPDX-License-Identifier: Apache-2.0
/*
 * grpc_client.c — blocking gRPC over h2c on nghttp2 (see grpc_client.h).
 *
 * Data flow. Out: the caller's message gets the 5-byte gRPC prefix and is
 * appended to the stream's send buffer; nghttp2 pulls it through the data
 * provider (data_read), which answers NGHTTP2_ERR_DEFERRED when the buffer
 * is empty and the caller has not half-closed, and is resumed by the next
 * send; nghttp2_session_mem_send() serialises frames, which go to the
 * non-blocking socket (a short write keeps the rest in conn->wbuf). In: the
 * socket is read into conn->rbuf and fed to nghttp2_session_mem_recv(),
 * whose callbacks record headers and trailers and append DATA to the
 * stream's receive buffer; messages are cut from that buffer when the
 * caller asks for the next one.
 *
 * Everything happens inside pump(), which runs the connection until a
 * condition holds or the deadline passes. nghttp2 does flow control; we
 * announce large windows and let it send WINDOW_UPDATEs as data is
 * consumed (its default), since the receive buffer has its own ceiling.
 *
 * Stream life:
 *
 *   open ──HEADERS sent──▶ sending ──close_send (END_STREAM)──▶ half-closed
 *     │                      │                                    │
 *     └──────────────── trailers / RST_STREAM / GOAWAY / conn error / deadline
 *                                          ▼
 *                                        ended (status fixed, messages
 *                                        already received still readable)
 *
 * Invariants:
 *   1. A stream's status is fixed once (finish()), from the first of: the
 *      server's grpc-status, a client-side failure, an RST_STREAM code, the
 *      HTTP status.
 *   2. nghttp2 never sees a freed stream: net_grpc_stream_free clears the
 *      stream's user data before freeing it, and callbacks ignore NULL.
 *   3. in_len - in_off ≤ NET_GRPC_RECV_BUFFER_MAX and out_len - out_off ≤
 *      NET_GRPC_SEND_BUFFER_MAX + one message.
 */
#include "net/grpc_client.h"

#include "format/common.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef HODEI_VERSION
#define HODEI_VERSION "dev"
#endif

#define GRPC_PREFIX_BYTES 5
#define CONN_WINDOW_BYTES (64 << 20)
#define STREAM_WINDOW_BYTES (16 << 20)
#define READ_CHUNK_BYTES (64 * 1024)
#define MD_MAX 32

_Static_assert(NET_GRPC_MESSAGE_MAX <= UINT32_MAX, "the gRPC prefix holds a u32 length");

struct net_grpc_conn {
	int fd;
	SSL_CTX *tls_ctx; /* TLS: both set; h2c: both NULL */
	SSL *ssl;
	char tls_why[200]; /* OpenSSL's reason for the last TLS failure */
	nghttp2_session *session;
	char authority[280];
	bool broken; /* I/O error, EOF or a fatal nghttp2 error */
	bool goaway; /* the server sent GOAWAY: no new streams */
	char broken_why[256];
	uint8_t *wbuf; /* serialised bytes not yet written */
	size_t wbuf_len, wbuf_off, wbuf_cap;
	uint8_t rbuf[READ_CHUNK_BYTES];
};

struct net_grpc_stream {
	struct net_grpc_conn *c;
	int32_t id;
	int64_t deadline_ms; /* CLOCK_MONOTONIC; 0 = none */
	int timeout_ms;

	uint8_t *out; /* prefixed messages not yet taken by nghttp2 */
	size_t out_len, out_off, out_cap;
	bool send_closed; /* the caller half-closed */
	bool deferred;    /* data_read answered DEFERRED: resume on new data */

	int http_status;
	bool grpc_content_type;
	bool have_grpc_status;
	int grpc_status;
	char grpc_message[NET_GRPC_MESSAGE_TEXT_MAX];

	uint8_t *in; /* DATA received, not yet returned as messages */
	size_t in_len, in_off, in_cap;

	bool closed;       /* nghttp2 closed the stream */
	uint32_t rst_code; /* its HTTP/2 error code */
	bool failed;       /* a client-side failure fixed the status */
	struct net_grpc_status fail_status;
	bool ended; /* finish() ran: status is final */
	bool status_from_server;
	struct net_grpc_status status;
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void status_set(struct net_grpc_status *st, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void status_set(struct net_grpc_status *st, int code, const char *fmt, ...)
{
	va_list ap;
	st->code = code;
	va_start(ap, fmt);
	vsnprintf(st->message, sizeof(st->message), fmt, ap);
	va_end(ap);
}

static void conn_fail(struct net_grpc_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void conn_fail(struct net_grpc_conn *c, const char *fmt, ...)
{
	if (c->broken)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->broken_why, sizeof(c->broken_why), fmt, ap);
	va_end(ap);
	c->broken = true;
}

/* A client-side failure of one stream; the first one wins. */
static void stream_fail(struct net_grpc_stream *s, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void stream_fail(struct net_grpc_stream *s, int code, const char *fmt, ...)
{
	if (s->failed || s->ended)
		return;
	va_list ap;
	s->fail_status.code = code;
	va_start(ap, fmt);
	vsnprintf(s->fail_status.message, sizeof(s->fail_status.message), fmt, ap);
	va_end(ap);
	s->failed = true;
}

/* ---- buffers ---------------------------------------------------------------- */

/* Makes room for n more bytes after *len (compacting first). */
static int buf_reserve(uint8_t **buf, size_t *len, size_t *off, size_t *cap, size_t n)
{
	if (*off > 0 && (*off == *len || *off >= *cap / 2)) {
		memmove(*buf, *buf + *off, *len - *off);
		*len -= *off;
		*off = 0;
	}
	if (*cap - *len >= n)
		return 0;
	size_t want = *cap ? *cap : 4096;
	while (want - *len < n) {
		if (want > SIZE_MAX / 2)
			return -ENOMEM;
		want *= 2;
	}
	uint8_t *p = realloc(*buf, want);
	if (!p)
		return -ENOMEM;
	*buf = p;
	*cap = want;
	return 0;
}

/* ---- nghttp2 callbacks -------------------------------------------------------- */

static struct net_grpc_stream *stream_of(nghttp2_session *session, int32_t id)
{
	return nghttp2_session_get_stream_user_data(session, id);
}

static ssize_t data_read(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
			 uint32_t *flags, nghttp2_data_source *source, void *user)
{
	struct net_grpc_stream *s = source->ptr;
	if (!s)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	size_t avail = s->out_len - s->out_off;
	if (avail == 0) {
		if (s->send_closed) {
			*flags |= NGHTTP2_DATA_FLAG_EOF;
			return 0;
		}
		s->deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	size_t n = avail < length ? avail : length;
	memcpy(buf, s->out + s->out_off, n);
	s->out_off += n;
	if (s->out_off == s->out_len) {
		s->out_off = s->out_len = 0;
		if (s->send_closed)
			*flags |= NGHTTP2_DATA_FLAG_EOF;
	}
	return (ssize_t)n;
}

static int parse_int(const uint8_t *v, size_t len, int *out)
{
	if (len == 0 || len > 9)
		return -1;
	int n = 0;
	for (size_t i = 0; i < len; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		n = n * 10 + (v[i] - '0');
	}
	*out = n;
	return 0;
}

/* grpc-message is percent-encoded (gRPC over HTTP/2, "Responses"). */
static void percent_decode(const uint8_t *v, size_t len, char *out, size_t cap)
{
	size_t n = 0;
	for (size_t i = 0; i < len && n + 1 < cap; i++) {
		int hi = -1, lo = -1;
		if (v[i] == '%' && len - i > 2) {
			hi = fmt_hex_digit(v[i + 1]);
			lo = fmt_hex_digit(v[i + 2]);
		}
		if (hi >= 0 && lo >= 0) {
			out[n++] = (char)(hi << 4 | lo);
			i += 2;
		} else {
			out[n++] = (char)v[i];
		}
	}
	out[n] = 0;
}

static bool name_is(const uint8_t *name, size_t len, const char *want)
{
	return len == strlen(want) && memcmp(name, want, len) == 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *user)
{
	if (frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	struct net_grpc_stream *s = stream_of(session, frame->hd.stream_id);
	if (!s)
		return 0;
	if (name_is(name, namelen, ":status")) {
		if (parse_int(value, valuelen, &s->http_status))
			s->http_status = 0;
	} else if (name_is(name, namelen, "content-type")) {
		s->grpc_content_type = valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0;
	} else if (name_is(name, namelen, "grpc-status")) {
		int code;
		s->have_grpc_status = true;
		s->grpc_status = parse_int(value, valuelen, &code) ? GRPC_UNKNOWN : code;
	} else if (name_is(name, namelen, "grpc-message")) {
		percent_decode(value, valuelen, s->grpc_message, sizeof(s->grpc_message));
	}
	return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t id, const uint8_t *data,
			 size_t len, void *user)
{
	struct net_grpc_stream *s = stream_of(session, id);
	if (!s || s->failed)
		return 0;
	if (s->in_len - s->in_off + len > NET_GRPC_RECV_BUFFER_MAX) {
		stream_fail(s, GRPC_RESOURCE_EXHAUSTED,
			    "response larger than the client's limit of %u bytes",
			    NET_GRPC_RECV_BUFFER_MAX);
		nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
		return 0;
	}
	if (buf_reserve(&s->in, &s->in_len, &s->in_off, &s->in_cap, len)) {
		stream_fail(s, GRPC_RESOURCE_EXHAUSTED, "out of memory for the response");
		nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
		return 0;
	}
	memcpy(s->in + s->in_len, data, len);
	s->in_len += len;
	return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t id, uint32_t error_code, void *user)
{
	struct net_grpc_stream *s = stream_of(session, id);
	if (s) {
		s->closed = true;
		s->rst_code = error_code;
	}
	return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
	struct net_grpc_conn *c = user;
	if (frame->hd.type == NGHTTP2_GOAWAY) {
		c->goaway = true;
		/* Streams above last_stream_id are closed by nghttp2 with
		 * REFUSED_STREAM, which finish() maps to UNAVAILABLE. */
	}
	return 0;
}

static int on_frame_not_send(nghttp2_session *session, const nghttp2_frame *frame, int lib_error,
			     void *user)
{
	if (frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	struct net_grpc_stream *s = stream_of(session, frame->hd.stream_id);
	if (s) {
		stream_fail(s, GRPC_UNAVAILABLE, "request not sent: %s", nghttp2_strerror(lib_error));
		s->closed = true;
	}
	return 0;
}

/* ---- connection I/O --------------------------------------------------------------- */

static int conn_read(struct net_grpc_conn *c);

/* Whether TLS holds decrypted bytes not read yet: poll() cannot see them. */
static bool tls_pending(const struct net_grpc_conn *c)
{
	return c->ssl && SSL_pending(c->ssl) > 0;
}

/* Reads what has already arrived, without waiting: responses and trailers
 * the server sent before it closed are worth more than the write error
 * that its close causes. Bounded: at most 1024 reads. */
static void conn_drain(struct net_grpc_conn *c)
{
	for (int i = 0; i < 1024 && !c->broken; i++) {
		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
		if (!tls_pending(c) &&
		    (poll(&pfd, 1, 0) <= 0 || !(pfd.revents & (POLLIN | POLLHUP | POLLERR))))
			return;
		conn_read(c);
	}
}

/* The socket's send and recv, through TLS when the connection has it,
 * with the same results: bytes, 0 for end of stream (recv), or -1 with
 * errno (EAGAIN when TLS must wait for the socket either way; EPROTO, with
 * OpenSSL's reason in c->tls_why, for a TLS failure). */
static ssize_t tls_result(struct net_grpc_conn *c, int n)
{
	int err = SSL_get_error(c->ssl, n);
	if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
		errno = EAGAIN;
		return -1;
	}
	if (err == SSL_ERROR_ZERO_RETURN)
		return 0;
	if (err == SSL_ERROR_SYSCALL && errno) {
		ERR_clear_error();
		return -1;
	}
	char why[200];
	ERR_error_string_n(ERR_get_error(), why, sizeof(why));
	ERR_clear_error();
	if (err == SSL_ERROR_SYSCALL)
		return 0; /* the peer closed without close_notify */
	snprintf(c->tls_why, sizeof(c->tls_why), "TLS: %s", why);
	errno = EPROTO;
	return -1;
}

/* OpenSSL writes to the socket with write(), which raises SIGPIPE once the
 * server has closed; the h2c path uses MSG_NOSIGNAL. The caller's handling
 * of SIGPIPE is left as it is: the signal is blocked around each TLS call,
 * and one raised there (and not pending before) is consumed. */
struct sigpipe_guard {
	sigset_t old;
	bool pending_before;
};

static void sigpipe_block(struct sigpipe_guard *g)
{
	sigset_t pipe, pending;
	sigemptyset(&pipe);
	sigaddset(&pipe, SIGPIPE);
	sigpending(&pending);
	g->pending_before = sigismember(&pending, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe, &g->old);
}

static void sigpipe_unblock(struct sigpipe_guard *g)
{
	int saved = errno;
	sigset_t pipe;
	sigemptyset(&pipe);
	sigaddset(&pipe, SIGPIPE);
	struct timespec none = { 0, 0 };
	if (!g->pending_before)
		while (sigtimedwait(&pipe, NULL, &none) > 0) {
		}
	pthread_sigmask(SIG_SETMASK, &g->old, NULL);
	errno = saved;
}

/* What to say of a failure with errno err. */
static const char *conn_why(const struct net_grpc_conn *c, int err)
{
	return err == EPROTO && c->tls_why[0] ? c->tls_why : strerror(err);
}

static ssize_t conn_send(struct net_grpc_conn *c, const uint8_t *buf, size_t len)
{
	if (!c->ssl)
		return send(c->fd, buf, len, MSG_NOSIGNAL);
	ERR_clear_error();
	struct sigpipe_guard g;
	sigpipe_block(&g);
	errno = 0;
	int n = SSL_write(c->ssl, buf, (int)(len > INT32_MAX ? INT32_MAX : len));
	ssize_t r = n > 0 ? n : tls_result(c, n);
	if (r == 0) { /* closed under the write: as send() says it */
		errno = EPIPE;
		r = -1;
	}
	sigpipe_unblock(&g);
	return r;
}

static ssize_t conn_recv(struct net_grpc_conn *c, uint8_t *buf, size_t cap)
{
	if (!c->ssl)
		return recv(c->fd, buf, cap, 0);
	ERR_clear_error();
	struct sigpipe_guard g;
	sigpipe_block(&g); /* a read may answer the server, a key update */
	errno = 0;
	int n = SSL_read(c->ssl, buf, (int)cap);
	ssize_t r = n > 0 ? n : tls_result(c, n);
	sigpipe_unblock(&g);
	return r;
}

/* Writes what nghttp2 has to send until the socket would block. */
static int conn_flush(struct net_grpc_conn *c)
{
	for (;;) {
		if (c->wbuf_off == c->wbuf_len) {
			c->wbuf_off = c->wbuf_len = 0;
			const uint8_t *data;
			ssize_t n = nghttp2_session_mem_send(c->session, &data);
			if (n < 0) {
				conn_fail(c, "HTTP/2 error: %s", nghttp2_strerror((int)n));
				return -EPROTO;
			}
			if (n == 0)
				return 0;
			if (buf_reserve(&c->wbuf, &c->wbuf_len, &c->wbuf_off, &c->wbuf_cap, (size_t)n)) {
				conn_fail(c, "out of memory");
				return -ENOMEM;
			}
			memcpy(c->wbuf, data, (size_t)n);
			c->wbuf_len = (size_t)n;
		}
		ssize_t w = conn_send(c, c->wbuf + c->wbuf_off, c->wbuf_len - c->wbuf_off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (w < 0) {
			int err = errno;
			conn_drain(c);
			conn_fail(c, "connection to %s lost: %s", c->authority, conn_why(c, err));
			return -err;
		}
		c->wbuf_off += (size_t)w;
	}
}

static int conn_read(struct net_grpc_conn *c)
{
	ssize_t n = conn_recv(c, c->rbuf, sizeof(c->rbuf));
	if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
		return 0;
	if (n < 0) {
		int err = errno;
		conn_fail(c, "connection to %s lost: %s", c->authority, conn_why(c, err));
		return -err;
	}
	if (n == 0) {
		conn_fail(c, "connection closed by %s%s", c->authority,
			  c->goaway ? " after GOAWAY" : "");
		return -ECONNRESET;
	}
	ssize_t used = nghttp2_session_mem_recv(c->session, c->rbuf, (size_t)n);
	if (used < 0) {
		conn_fail(c, "HTTP/2 error from %s: %s (is it an h2c gRPC server?)", c->authority,
			  nghttp2_strerror((int)used));
		return -EPROTO;
	}
	return 0;
}

typedef bool pump_done_fn(struct net_grpc_stream *s);

/* Runs the connection until done(s), the stream's deadline or a connection
 * failure. Returns 0 when done(s) holds, -ETIMEDOUT, or a negative code
 * with c->broken set. */
static int pump(struct net_grpc_stream *s, pump_done_fn *done)
{
	struct net_grpc_conn *c = s->c;
	for (;;) {
		if (done(s))
			return 0;
		if (c->broken)
			return -ECONNRESET;
		int rc = conn_flush(c);
		if (rc)
			return rc;
		if (done(s))
			return 0;
		if (!nghttp2_session_want_read(c->session) && !nghttp2_session_want_write(c->session) &&
		    c->wbuf_off == c->wbuf_len) {
			conn_fail(c, "the HTTP/2 session with %s ended%s", c->authority,
				  c->goaway ? " (GOAWAY)" : " (is it a gRPC server speaking h2c?)");
			return -ECONNRESET;
		}
		int wait_ms = -1;
		if (s->deadline_ms) {
			int64_t left = s->deadline_ms - now_ms();
			if (left <= 0)
				return -ETIMEDOUT;
			wait_ms = left > INT32_MAX ? INT32_MAX : (int)left;
		}
		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
		if (c->wbuf_off < c->wbuf_len)
			pfd.events |= POLLOUT;
		int n = 1;
		if (tls_pending(c))
			pfd.revents = POLLIN; /* already decrypted: read without waiting */
		else
			n = poll(&pfd, 1, wait_ms);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			conn_fail(c, "poll: %s", strerror(errno));
			return -errno;
		}
		if (n > 0 && (pfd.revents & (POLLIN | POLLHUP | POLLERR))) {
			rc = conn_read(c);
			if (rc)
				return rc;
		}
	}
}

/* ---- connect ---------------------------------------------------------------------- */

/* Splits "host:port" / "[v6]:port" into host and port. */
static int split_target(const char *target, char *host, size_t host_cap, char *port, size_t port_cap)
{
	const char *colon, *h = target;
	size_t hlen;
	if (target[0] == '[') {
		const char *close = strchr(target, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		h = target + 1;
		hlen = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(target, ':');
		if (!colon || strchr(target, ':') != colon)
			return -EINVAL;
		hlen = (size_t)(colon - target);
	}
	size_t plen = strlen(colon + 1);
	if (hlen == 0 || hlen >= host_cap || plen == 0 || plen >= port_cap ||
	    strspn(colon + 1, "0123456789") != plen)
		return -EINVAL;
	memcpy(host, h, hlen);
	host[hlen] = 0;
	memcpy(port, colon + 1, plen + 1);
	return 0;
}

/* Connects one address within deadline_ms. Returns the fd or -errno. */
static int connect_one(const struct addrinfo *ai, int64_t deadline_ms)
{
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd < 0)
		return -errno;
	int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
	if (rc < 0 && errno != EINPROGRESS) {
		rc = -errno;
		goto fail;
	}
	if (rc < 0) {
		for (;;) {
			int wait_ms = -1;
			if (deadline_ms) {
				int64_t left = deadline_ms - now_ms();
				if (left <= 0) {
					rc = -ETIMEDOUT;
					goto fail;
				}
				wait_ms = (int)(left > INT32_MAX ? INT32_MAX : left);
			}
			struct pollfd pfd = { .fd = fd, .events = POLLOUT };
			int n = poll(&pfd, 1, wait_ms);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				rc = -errno;
				goto fail;
			}
			if (n > 0)
				break;
		}
		int err = 0;
		socklen_t len = sizeof(err);
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err) {
			rc = -err;
			goto fail;
		}
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
fail:
	close(fd);
	return rc;
}

static int session_start(struct net_grpc_conn *c)
{
	nghttp2_session_callbacks *cb;
	if (nghttp2_session_callbacks_new(&cb))
		return -ENOMEM;
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	nghttp2_session_callbacks_set_on_frame_not_send_callback(cb, on_frame_not_send);
	int rc = nghttp2_session_client_new(&c->session, cb, c);
	nghttp2_session_callbacks_del(cb);
	if (rc)
		return -ENOMEM;
	nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW_BYTES },
	};
	rc = nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, FMT_ARRAY_LEN(iv));
	if (!rc)
		rc = nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0,
							   CONN_WINDOW_BYTES);
	return rc ? -EPROTO : 0;
}

/* Sets up TLS on c's connected socket and runs the handshake until it is
 * done or deadline_ms passed: the server's certificate must chain to
 * tls->ca_file (or the system's roots) and name host; ALPN must agree on
 * "h2". Returns 0, or -1 with why filled in. */
static int tls_start(struct net_grpc_conn *c, const struct net_grpc_tls *tls, const char *host,
		     int64_t deadline_ms, char *why, size_t why_cap)
{
	static const unsigned char alpn[] = { 2, 'h', '2' };
	char err[200] = "";
	ERR_clear_error();
	c->tls_ctx = SSL_CTX_new(TLS_client_method());
	if (!c->tls_ctx || SSL_CTX_set_min_proto_version(c->tls_ctx, TLS1_2_VERSION) != 1)
		goto openssl_failed;
	SSL_CTX_set_verify(c->tls_ctx, SSL_VERIFY_PEER, NULL);
	if (tls->ca_file ? SSL_CTX_load_verify_locations(c->tls_ctx, tls->ca_file, NULL) != 1
			 : SSL_CTX_set_default_verify_paths(c->tls_ctx) != 1) {
		ERR_error_string_n(ERR_get_error(), err, sizeof(err));
		snprintf(why, why_cap, "cannot load the CA certificates %s: %s",
			 tls->ca_file ? tls->ca_file : "of the system", err);
		return -1;
	}
	c->ssl = SSL_new(c->tls_ctx);
	if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1 || SSL_set_alpn_protos(c->ssl, alpn, sizeof(alpn)))
		goto openssl_failed;
	SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* The certificate must name the host: an IP address as an IP SAN, a
	 * name as a DNS SAN (and then it is sent as SNI too). */
	unsigned char ip[16];
	bool is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
	if (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host) != 1
		  : SSL_set1_host(c->ssl, host) != 1 || SSL_set_tlsext_host_name(c->ssl, host) != 1)
		goto openssl_failed;
	for (;;) {
		ERR_clear_error();
		struct sigpipe_guard g;
		sigpipe_block(&g);
		errno = 0;
		int rc = SSL_connect(c->ssl);
		int e = rc == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, rc);
		sigpipe_unblock(&g);
		if (rc == 1)
			break;
		if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
			long v = SSL_get_verify_result(c->ssl);
			if (v != X509_V_OK)
				snprintf(why, why_cap, "the server's certificate was not accepted: %s",
					 X509_verify_cert_error_string(v));
			else if (e == SSL_ERROR_SYSCALL || ERR_peek_error() == 0)
				snprintf(why, why_cap, "the TLS handshake failed: %s",
					 errno ? strerror(errno) : "connection closed (is it a TLS port?)");
			else {
				ERR_error_string_n(ERR_get_error(), err, sizeof(err));
				snprintf(why, why_cap, "the TLS handshake failed: %s", err);
			}
			return -1;
		}
		int wait_ms = -1;
		if (deadline_ms) {
			int64_t left = deadline_ms - now_ms();
			if (left <= 0) {
				snprintf(why, why_cap, "the TLS handshake timed out");
				return -1;
			}
			wait_ms = (int)(left > INT32_MAX ? INT32_MAX : left);
		}
		struct pollfd pfd = { .fd = c->fd, .events = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT };
		if (poll(&pfd, 1, wait_ms) < 0 && errno != EINTR) {
			snprintf(why, why_cap, "poll: %s", strerror(errno));
			return -1;
		}
	}
	const unsigned char *got = NULL;
	unsigned got_len = 0;
	SSL_get0_alpn_selected(c->ssl, &got, &got_len);
	if (got_len != 2 || memcmp(got, "h2", 2)) {
		snprintf(why, why_cap, "the server did not agree on HTTP/2 (ALPN h2)");
		return -1;
	}
	return 0;
openssl_failed:
	ERR_error_string_n(ERR_get_error(), err, sizeof(err));
	snprintf(why, why_cap, "cannot set up TLS: %s", err);
	return -1;
}

int net_grpc_connect(const char *target, int timeout_ms, struct net_grpc_conn **out,
		     struct net_grpc_status *st)
{
	return net_grpc_connect_tls(target, timeout_ms, NULL, out, st);
}

int net_grpc_connect_tls(const char *target, int timeout_ms, const struct net_grpc_tls *tls,
			 struct net_grpc_conn **out, struct net_grpc_status *st)
{
	char host[256], port[16];
	*out = NULL;
	if (split_target(target, host, sizeof(host), port, sizeof(port))) {
		status_set(st, GRPC_UNAVAILABLE, "bad server address '%s' (want HOST:PORT or [IPv6]:PORT)",
			   target);
		return NET_E_TRANSPORT;
	}
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res = NULL;
	int gai = getaddrinfo(host, port, &hints, &res);
	if (gai) {
		status_set(st, GRPC_UNAVAILABLE, "cannot resolve %s: %s", host, gai_strerror(gai));
		return NET_E_TRANSPORT;
	}
	int64_t deadline_ms = timeout_ms > 0 ? now_ms() + timeout_ms : 0;
	int fd = -EHOSTUNREACH;
	for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next)
		fd = connect_one(ai, deadline_ms);
	freeaddrinfo(res);
	if (fd < 0) {
		status_set(st, GRPC_UNAVAILABLE, "cannot connect to %s: %s", target, strerror(-fd));
		return NET_E_TRANSPORT;
	}
	struct net_grpc_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		status_set(st, GRPC_INTERNAL, "out of memory");
		return NET_E_TRANSPORT;
	}
	c->fd = fd;
	snprintf(c->authority, sizeof(c->authority), "%s", target);
	char why[400];
	if (tls && tls_start(c, tls, host, deadline_ms, why, sizeof(why))) {
		status_set(st, GRPC_UNAVAILABLE, "cannot connect to %s over TLS: %s", target, why);
		net_grpc_close(c);
		return NET_E_TRANSPORT;
	}
	if (session_start(c) || conn_flush(c)) {
		status_set(st, GRPC_UNAVAILABLE, "cannot start HTTP/2 with %s: %s", target,
			   c->broken ? c->broken_why : "out of memory");
		net_grpc_close(c);
		return NET_E_TRANSPORT;
	}
	status_set(st, GRPC_OK, "%s", "");
	*out = c;
	return 0;
}

void net_grpc_close(struct net_grpc_conn *c)
{
	if (!c)
		return;
	if (c->session && !c->broken) {
		/* Best effort: one non-blocking attempt to say goodbye. */
		nghttp2_session_terminate_session(c->session, NGHTTP2_NO_ERROR);
		conn_flush(c);
	}
	nghttp2_session_del(c->session);
	if (c->ssl && !c->broken && SSL_is_init_finished(c->ssl)) {
		struct sigpipe_guard g;
		sigpipe_block(&g);
		SSL_shutdown(c->ssl); /* one non-blocking close_notify */
		sigpipe_unblock(&g);
	}
	SSL_free(c->ssl);
	SSL_CTX_free(c->tls_ctx);
	if (c->fd >= 0)
		close(c->fd);
	free(c->wbuf);
	free(c);
}

bool net_grpc_usable(const struct net_grpc_conn *c)
{
	return c && !c->broken && !c->goaway;
}

/* ---- streams ---------------------------------------------------------------------- */

static void grpc_timeout_value(int timeout_ms, char out[16])
{
	if (timeout_ms <= 99999999)
		snprintf(out, 16, "%dm", timeout_ms);
	else
		snprintf(out, 16, "%dS", timeout_ms / 1000);
}

static nghttp2_nv nv_make(const char *name, const char *value, uint8_t flags)
{
	nghttp2_nv nv = { (uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value), flags };
	return nv;
}

int net_grpc_stream_open(struct net_grpc_conn *c, const char *path, const struct net_grpc_md *md,
			 size_t md_count, int timeout_ms, struct net_grpc_stream **out,
			 struct net_grpc_status *st)
{
	*out = NULL;
	if (!net_grpc_usable(c)) {
		status_set(st, GRPC_UNAVAILABLE, "%s",
			   c->broken ? c->broken_why : "the server sent GOAWAY: reconnect");
		return NET_E_TRANSPORT;
	}
	if (md_count > MD_MAX) {
		status_set(st, GRPC_INTERNAL, "more than %d metadata entries", MD_MAX);
		return NET_E_TRANSPORT;
	}
	struct net_grpc_stream *s = calloc(1, sizeof(*s));
	if (!s) {
		status_set(st, GRPC_INTERNAL, "out of memory");
		return NET_E_TRANSPORT;
	}
	s->c = c;
	s->timeout_ms = timeout_ms > 0 ? timeout_ms : 0;
	s->deadline_ms = s->timeout_ms ? now_ms() + s->timeout_ms : 0;
	char timeout_text[16];
	nghttp2_nv nv[8 + MD_MAX];
	size_t n = 0;
	nv[n++] = nv_make(":method", "POST", NGHTTP2_NV_FLAG_NONE);
	nv[n++] = nv_make(":scheme", "http", NGHTTP2_NV_FLAG_NONE);
	nv[n++] = nv_make(":path", path, NGHTTP2_NV_FLAG_NONE);
	nv[n++] = nv_make(":authority", c->authority, NGHTTP2_NV_FLAG_NONE);
	nv[n++] = nv_make("te", "trailers", NGHTTP2_NV_FLAG_NONE);
	nv[n++] = nv_make("content-type", "application/grpc", NGHTTP2_NV_FLAG_NONE);
	nv[n++] = nv_make("user-agent", "hodei-audit/" HODEI_VERSION, NGHTTP2_NV_FLAG_NONE);
	if (s->timeout_ms) {
		grpc_timeout_value(s->timeout_ms, timeout_text);
		nv[n++] = nv_make("grpc-timeout", timeout_text, NGHTTP2_NV_FLAG_NONE);
	}
	for (size_t i = 0; i < md_count; i++)
		nv[n++] = nv_make(md[i].name, md[i].value,
				  strcmp(md[i].name, "authorization") ? NGHTTP2_NV_FLAG_NONE
								      : NGHTTP2_NV_FLAG_NO_INDEX);
	ASSERT(n <= FMT_ARRAY_LEN(nv));
	nghttp2_data_provider dp = { .source.ptr = s, .read_callback = data_read };
	int32_t id = nghttp2_submit_request(c->session, NULL, nv, n, &dp, s);
	if (id < 0) {
		status_set(st, GRPC_UNAVAILABLE, "cannot start a stream: %s", nghttp2_strerror(id));
		free(s);
		return NET_E_TRANSPORT;
	}
	s->id = id;
	status_set(st, GRPC_OK, "%s", "");
	*out = s;
	return 0;
}

/* Fixes the stream's final status (invariant 1). Called only once the
 * stream is closed, failed, or its connection is broken. */
static void finish(struct net_grpc_stream *s)
{
	if (s->ended)
		return;
	struct net_grpc_status *st = &s->status;
	s->status_from_server = false;
	if (s->failed) {
		*st = s->fail_status;
	} else if (s->have_grpc_status) {
		st->code = s->grpc_status;
		snprintf(st->message, sizeof(st->message), "%s", s->grpc_message);
		s->status_from_server = true;
	} else if (s->rst_code != NGHTTP2_NO_ERROR) {
		int code = s->rst_code == NGHTTP2_REFUSED_STREAM	? GRPC_UNAVAILABLE
			   : s->rst_code == NGHTTP2_CANCEL	     ? GRPC_CANCELLED
			   : s->rst_code == NGHTTP2_ENHANCE_YOUR_CALM ? GRPC_RESOURCE_EXHAUSTED
			   : s->rst_code == NGHTTP2_INADEQUATE_SECURITY ? GRPC_PERMISSION_DENIED
									: GRPC_INTERNAL;
		status_set(st, code, "stream reset by the server: %s",
			   nghttp2_http2_strerror(s->rst_code));
	} else if (!s->closed) {
		ASSERT(s->c->broken);
		status_set(st, GRPC_UNAVAILABLE, "%s", s->c->broken_why);
	} else if (s->http_status != 0 && s->http_status != 200) {
		int h = s->http_status;
		int code = h == 400 ? GRPC_INTERNAL : h == 401 ? GRPC_UNAUTHENTICATED
			   : h == 403 ? GRPC_PERMISSION_DENIED : h == 404 ? GRPC_UNIMPLEMENTED
			   : (h == 429 || h == 502 || h == 503 || h == 504) ? GRPC_UNAVAILABLE
									  : GRPC_UNKNOWN;
		status_set(st, code, "HTTP status %d from the server, without grpc-status", h);
	} else if (s->http_status == 200 && !s->grpc_content_type) {
		status_set(st, GRPC_UNKNOWN, "the response is not gRPC (content-type)");
	} else {
		status_set(st, GRPC_INTERNAL, "the stream ended without grpc-status");
	}
	s->ended = true;
}

static bool stream_over(const struct net_grpc_stream *s)
{
	return s->ended || s->closed || s->failed || s->c->broken;
}

static int ended_status(struct net_grpc_stream *s, struct net_grpc_status *st)
{
	finish(s);
	*st = s->status;
	if (st->code == GRPC_OK)
		return 0;
	return s->status_from_server ? NET_E_STATUS : NET_E_TRANSPORT;
}

/* Cancels the stream on the wire if it is still open there. */
static void stream_cancel(struct net_grpc_stream *s)
{
	if (!s->closed && !s->c->broken) {
		nghttp2_submit_rst_stream(s->c->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
		conn_flush(s->c);
	}
	s->closed = true;
}

/* Maps a pump() failure onto the stream. */
static void pump_failed(struct net_grpc_stream *s, int rc)
{
	if (rc == -ETIMEDOUT)
		stream_fail(s, GRPC_DEADLINE_EXCEEDED, "deadline of %d ms exceeded", s->timeout_ms);
	else
		stream_fail(s, GRPC_UNAVAILABLE, "%s", s->c->broken_why);
	stream_cancel(s);
	finish(s);
}

void net_grpc_stream_set_timeout(struct net_grpc_stream *s, int timeout_ms)
{
	s->timeout_ms = timeout_ms > 0 ? timeout_ms : 0;
	s->deadline_ms = s->timeout_ms ? now_ms() + s->timeout_ms : 0;
}

static bool done_sent(struct net_grpc_stream *s)
{
	return stream_over(s) || s->out_len - s->out_off <= NET_GRPC_SEND_BUFFER_MAX;
}

/* A send on a stream that is already over: its status, or INTERNAL when the
 * server ended it with OK while the client was still sending. */
static int send_on_ended(struct net_grpc_stream *s, struct net_grpc_status *st)
{
	int rc = ended_status(s, st);
	if (rc)
		return rc;
	status_set(st, GRPC_INTERNAL, "the server ended the stream before the client finished sending");
	return NET_E_TRANSPORT;
}

int net_grpc_stream_send(struct net_grpc_stream *s, const uint8_t *msg, size_t len,
			 struct net_grpc_status *st)
{
	ASSERT(!s->send_closed);
	if (stream_over(s))
		return send_on_ended(s, st);
	if (len > NET_GRPC_MESSAGE_MAX) {
		status_set(st, GRPC_RESOURCE_EXHAUSTED, "request message of %zu bytes over the limit of %u",
			   len, NET_GRPC_MESSAGE_MAX);
		return NET_E_TRANSPORT;
	}
	if (buf_reserve(&s->out, &s->out_len, &s->out_off, &s->out_cap, len + GRPC_PREFIX_BYTES)) {
		status_set(st, GRPC_RESOURCE_EXHAUSTED, "out of memory queueing a request");
		return NET_E_TRANSPORT;
	}
	uint8_t *p = s->out + s->out_len;
	p[0] = 0; /* not compressed */
	p[1] = (uint8_t)(len >> 24);
	p[2] = (uint8_t)(len >> 16);
	p[3] = (uint8_t)(len >> 8);
	p[4] = (uint8_t)len;
	if (len)
		memcpy(p + GRPC_PREFIX_BYTES, msg, len);
	s->out_len += len + GRPC_PREFIX_BYTES;
	if (s->deferred) {
		s->deferred = false;
		nghttp2_session_resume_data(s->c->session, s->id);
	}
	conn_drain(s->c); /* take in responses before writing more */
	conn_flush(s->c);
	if (!done_sent(s)) {
		int rc = pump(s, done_sent);
		if (rc)
			pump_failed(s, rc);
	}
	if (s->failed || s->c->broken)
		return send_on_ended(s, st);
	status_set(st, GRPC_OK, "%s", "");
	return 0;
}

int net_grpc_stream_close_send(struct net_grpc_stream *s, struct net_grpc_status *st)
{
	ASSERT(!s->send_closed);
	s->send_closed = true;
	if (stream_over(s))
		return send_on_ended(s, st);
	if (s->deferred) {
		s->deferred = false;
		nghttp2_session_resume_data(s->c->session, s->id);
	}
	conn_flush(s->c);
	status_set(st, GRPC_OK, "%s", "");
	return 0;
}

static uint32_t prefix_len(const uint8_t *p)
{
	return (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
}

/* Looks at the head of the receive buffer: the length of a complete
 * message, -1 when incomplete, -2 when the prefix is bad (the stream then
 * failed and was cancelled). */
static int64_t head_message(struct net_grpc_stream *s)
{
	size_t avail = s->in_len - s->in_off;
	if (s->failed || avail < GRPC_PREFIX_BYTES)
		return -1;
	const uint8_t *p = s->in + s->in_off;
	uint32_t len = prefix_len(p);
	if (p[0] != 0) {
		stream_fail(s, GRPC_INTERNAL,
			    "a response message has flags %u (compressed?); no compression was asked for",
			    p[0]);
	} else if (len > NET_GRPC_MESSAGE_MAX) {
		stream_fail(s, GRPC_RESOURCE_EXHAUSTED,
			    "a response message of %u bytes is over the client's limit of %u", len,
			    NET_GRPC_MESSAGE_MAX);
	} else {
		return avail - GRPC_PREFIX_BYTES < len ? -1 : (int64_t)len;
	}
	stream_cancel(s);
	s->in_off = s->in_len;
	return -2;
}

static bool done_recv(struct net_grpc_stream *s)
{
	return stream_over(s) || head_message(s) != -1;
}

int net_grpc_stream_recv(struct net_grpc_stream *s, uint8_t **msg, size_t *len,
			 struct net_grpc_status *st)
{
	*msg = NULL;
	*len = 0;
	if (!done_recv(s)) {
		int rc = pump(s, done_recv);
		if (rc)
			pump_failed(s, rc);
	}
	int64_t mlen = head_message(s);
	if (mlen >= 0) {
		*msg = malloc(mlen ? (size_t)mlen : 1);
		if (!*msg) {
			status_set(st, GRPC_RESOURCE_EXHAUSTED, "out of memory for a response");
			return NET_E_TRANSPORT;
		}
		memcpy(*msg, s->in + s->in_off + GRPC_PREFIX_BYTES, (size_t)mlen);
		*len = (size_t)mlen;
		s->in_off += GRPC_PREFIX_BYTES + (size_t)mlen;
		status_set(st, GRPC_OK, "%s", "");
		return 1;
	}
	bool ok_so_far = !s->have_grpc_status || s->grpc_status == GRPC_OK;
	if (!s->ended && !s->failed && s->closed && ok_so_far && s->in_len != s->in_off)
		stream_fail(s, GRPC_INTERNAL, "the response ended inside a message (%zu bytes left)",
			    s->in_len - s->in_off);
	return ended_status(s, st);
}

void net_grpc_stream_free(struct net_grpc_stream *s)
{
	if (!s)
		return;
	struct net_grpc_conn *c = s->c;
	stream_cancel(s);
	nghttp2_session_set_stream_user_data(c->session, s->id, NULL);
	free(s->out);
	free(s->in);
	free(s);
}

/* ---- unary ------------------------------------------------------------------------ */

int net_grpc_unary(struct net_grpc_conn *c, const char *path, const struct net_grpc_md *md,
		   size_t md_count, const uint8_t *req, size_t req_len, int timeout_ms,
		   uint8_t **resp, size_t *resp_len, struct net_grpc_status *st)
{
	struct net_grpc_stream *s;
	*resp = NULL;
	*resp_len = 0;
	int rc = net_grpc_stream_open(c, path, md, md_count, timeout_ms, &s, st);
	if (rc)
		return rc;
	rc = net_grpc_stream_send(s, req, req_len, st);
	if (!rc)
		rc = net_grpc_stream_close_send(s, st);
	uint8_t *msg = NULL, *extra = NULL;
	size_t len = 0, extra_len;
	if (!rc || rc == NET_E_STATUS) {
		rc = net_grpc_stream_recv(s, &msg, &len, st);
		if (rc == 1) {
			rc = net_grpc_stream_recv(s, &extra, &extra_len, st);
			if (rc == 1) {
				status_set(st, GRPC_INTERNAL, "more than one response message to %s", path);
				rc = NET_E_TRANSPORT;
			}
		} else if (rc == 0) {
			status_set(st, GRPC_INTERNAL, "no response message to %s", path);
			rc = NET_E_TRANSPORT;
		}
	}
	free(extra);
	net_grpc_stream_free(s);
	if (rc) {
		free(msg);
		return rc;
	}
	*resp = msg;
	*resp_len = len;
	return 0;
}
