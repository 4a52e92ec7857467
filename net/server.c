// SPDX-License-Identifier: Apache-2.0
/*
 * server.c — the server's lifecycle and its life inside the shard threads:
 * listeners, the per-tick work (retries, flushes, sweeps, deferred frees),
 * draining on SIGTERM, key reloads on SIGHUP, and the metrics.
 *
 * Listeners. One socket per shard, all bound to the same address with
 * SO_REUSEPORT, so the kernel spreads new connections over the shards and
 * each shard accepts on its own with no shared accept queue or lock. They
 * are bound in srv_create(), before recovery, so the port is known (and
 * clients queue in the backlog) while the engine recovers; they join the
 * shard loops when the engine is open.
 *
 * Balancing. The kernel picks a listener by a hash of the connection's
 * addresses, and gRPC clients hold a few long-lived connections: with 4
 * connections over 2 shards the split is 3:1 or 4:0 five times in eight,
 * and the busier shard's core caps the whole server. So the shard that
 * accepts a connection gives it to the shard with the fewest connections
 * (`assigned`, counted from the moment it is chosen), itself on a tie; the
 * fd goes through that shard's bounded handoff list and eventfd, and the
 * connection lives on that shard only. A full list, or a shard that has
 * stopped listening (draining), keeps the connection where it was
 * accepted or refuses it as before.
 *
 * Keys. srv->keys is swapped atomically by srv_reload_keys(); a shard reads
 * it only during a tick and bumps its epoch after every tick, so a retired
 * table is freed once every shard's epoch has moved past the value it had
 * at retirement (srv_collect()).
 *
 * Draining (SIGTERM). srv_drain() sets `draining`; each shard, at its next
 * tick, closes its listener and sends GOAWAY on every connection. Calls
 * that arrive after that get UNAVAILABLE; calls in flight complete and are
 * answered. A shard is drained when it has no call in flight and no
 * connection left (a connection closes once its streams are done and its
 * output is written).
 */
#include "net/internal.h"
#include "net/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <openssl/err.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SWEEP_EVERY_NS (250 * 1000000ll)

int64_t srv_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

void srv_config_default(struct srv_config *cfg)
{
	*cfg = (struct srv_config){
		.grpc_listen = "127.0.0.1:50051",
		.max_connections = 1024,
		.max_streams = 100,
		.max_message_bytes = 4u << 20,
		.conn_window_bytes = 16u << 20,
		.stream_inflight_max = 16,
		.tenant_labels_max = 1000,
		.idle_timeout_ns = 300 * 1000000000ll,
		.request_timeout_ns = 30 * 1000000000ll,
		.slow_query_ns = 100 * 1000000ll,
		.log_lines_per_s = 20,
	};
}

void srv_count_request(struct srv_shard *sh, enum srv_method m, int status)
{
	if (status < 0 || status >= GRPC_STATUS_COUNT)
		status = GRPC_UNKNOWN;
	atomic_fetch_add_explicit(&sh->stats.requests[m][status], 1, memory_order_relaxed);
}

void srv_count_reject(struct srv_shard *sh, enum srv_reason r)
{
	atomic_fetch_add_explicit(&sh->stats.rejected[r], 1, memory_order_relaxed);
}

const struct auth_table *srv_keys(struct srv_shard *sh)
{
	return atomic_load_explicit(&sh->srv->keys, memory_order_acquire);
}

/* ---- listeners ------------------------------------------------------------ */

static int split_host_port(const char *addr, char *host, size_t cap, char **port)
{
	const char *colon = strrchr(addr, ':');
	if (!colon || colon[1] == 0)
		return -1;
	const char *h = addr;
	size_t hl = (size_t)(colon - addr);
	if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	if (hl >= cap)
		return -1;
	memcpy(host, h, hl);
	host[hl] = 0;
	*port = (char *)colon + 1;
	return 0;
}

static int bind_listener(const char *host, const char *port, int *fd_out, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *res = NULL;
	int rc = getaddrinfo(*host ? host : NULL, port, &hints, &res);
	if (rc) {
		snprintf(err, errlen, "grpc listen address %s:%s: %s", host, port, gai_strerror(rc));
		return -1;
	}
	int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
	    bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
		snprintf(err, errlen, "cannot listen on %s:%s: %s", host, port, strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(res);
		return -1;
	}
	freeaddrinfo(res);
	*fd_out = fd;
	return 0;
}

static uint16_t bound_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
		return 0;
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void peer_name(const struct sockaddr_storage *ss, char *out, size_t cap)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	uint16_t port = 0;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
		port = ntohs(a->sin_port);
		snprintf(out, cap, "%s:%u", ip, port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
		port = ntohs(a->sin6_port);
		snprintf(out, cap, "[%s]:%u", ip, port);
	} else {
		snprintf(out, cap, "?");
	}
}

/* The shard a new connection should live on: fewest assigned, `from`
 * first among equals. Counts it there. */
static struct srv_shard *balance_pick(struct srv_shard *from)
{
	struct srv *srv = from->srv;
	struct srv_shard *best = from;
	uint32_t best_n = atomic_load_explicit(&from->assigned, memory_order_relaxed);
	for (uint32_t i = 0; i < srv->shard_count; i++) {
		struct srv_shard *o = &srv->shards[i];
		uint32_t n = atomic_load_explicit(&o->assigned, memory_order_relaxed);
		if (n < best_n && atomic_load_explicit(&o->accepting, memory_order_relaxed)) {
			best = o;
			best_n = n;
		}
	}
	atomic_fetch_add_explicit(&best->assigned, 1, memory_order_relaxed);
	return best;
}

/* Hands fd to shard `to`; false when its list is full. */
static bool handoff_push(struct srv_shard *to, int fd, const char *peer)
{
	pthread_mutex_lock(&to->handoff_lock);
	bool ok = to->handoff_count < SRV_HANDOFF_MAX;
	if (ok) {
		struct srv_handoff *h = &to->handoff[to->handoff_count++];
		h->fd = fd;
		snprintf(h->peer, sizeof(h->peer), "%s", peer);
	}
	pthread_mutex_unlock(&to->handoff_lock);
	if (ok) {
		uint64_t one = 1;
		(void)!write(to->handoff_fd, &one, sizeof(one));
	}
	return ok;
}

static void on_handoff(struct eng_watch *w, uint32_t events)
{
	(void)events;
	struct srv_shard *sh = (struct srv_shard *)((char *)w - offsetof(struct srv_shard, handoff_watch));
	uint64_t n;
	(void)!read(sh->handoff_fd, &n, sizeof(n));
	struct srv_handoff got[SRV_HANDOFF_MAX];
	pthread_mutex_lock(&sh->handoff_lock);
	uint32_t count = sh->handoff_count;
	memcpy(got, sh->handoff, count * sizeof(*got));
	sh->handoff_count = 0;
	pthread_mutex_unlock(&sh->handoff_lock);
	for (uint32_t i = 0; i < count; i++) {
		atomic_fetch_add_explicit(&sh->stats.conns_handed_in, 1, memory_order_relaxed);
		conn_accept(sh, got[i].fd, got[i].peer); /* draining: it sends GOAWAY */
	}
}

static void on_listen(struct eng_watch *w, uint32_t events)
{
	struct srv_shard *sh = (struct srv_shard *)((char *)w - offsetof(struct srv_shard, listen_watch));
	while (sh->listening) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int fd = accept4(sh->listen_fd, (struct sockaddr *)&ss, &len,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN)
				nlog(NLOG_WARN, NULL, "accept: %s", strerror(errno));
			return;
		}
		char peer[64];
		peer_name(&ss, peer, sizeof(peer));
		struct srv_shard *to = balance_pick(sh);
		if (to != sh && !handoff_push(to, fd, peer)) {
			atomic_fetch_sub_explicit(&to->assigned, 1, memory_order_relaxed);
			atomic_fetch_add_explicit(&sh->assigned, 1, memory_order_relaxed);
			to = sh;
		}
		if (to == sh)
			conn_accept(sh, fd, peer);
	}
}

static void on_completions(struct eng_watch *w, uint32_t events)
{
	struct srv_shard *sh = (struct srv_shard *)((char *)w - offsetof(struct srv_shard, prod_watch));
	eng_producer_poll(sh->prod, UINT32_MAX);
}

static void listener_close(struct srv_shard *sh)
{
	atomic_store(&sh->accepting, false);
	if (sh->listening)
		eng_watch_del(sh->eng, sh->id, sh->listen_fd);
	sh->listening = false;
	if (sh->listen_fd >= 0)
		close(sh->listen_fd);
	sh->listen_fd = -1;
}

/* ---- shard hooks ------------------------------------------------------------ */

static int hook_start(void *ctx, struct eng_engine *eng, uint32_t shard)
{
	struct srv *srv = ctx;
	struct srv_shard *sh = &srv->shards[shard];
	sh->eng = eng;
	int rc = eng_producer_open(eng, &sh->prod);
	if (rc)
		return rc;
	sh->prod_watch.fn = on_completions;
	rc = eng_watch_add(eng, shard, eng_producer_fd(sh->prod), EPOLLIN | EPOLLET, &sh->prod_watch);
	if (rc)
		return rc;
	sh->listen_watch.fn = on_listen;
	rc = eng_watch_add(eng, shard, sh->listen_fd, EPOLLIN | EPOLLET, &sh->listen_watch);
	if (rc)
		return rc;
	sh->handoff_watch.fn = on_handoff;
	rc = eng_watch_add(eng, shard, sh->handoff_fd, EPOLLIN | EPOLLET, &sh->handoff_watch);
	if (rc)
		return rc;
	sh->listening = true;
	atomic_store(&sh->accepting, true);
	on_listen(&sh->listen_watch, EPOLLIN); /* connections that queued during recovery */
	return 0;
}

static void free_dead(struct srv_shard *sh)
{
	while (sh->dead) {
		struct conn *c = sh->dead;
		sh->dead = c->next;
		conn_free(c);
	}
}

static int64_t hook_tick(void *ctx, uint32_t shard)
{
	struct srv *srv = ctx;
	struct srv_shard *sh = &srv->shards[shard];
	int64_t now = srv_now_ns();
	if (atomic_load_explicit(&srv->draining, memory_order_relaxed) && !sh->drain_seen) {
		sh->drain_seen = true;
		listener_close(sh);
		for (struct conn *c = sh->conns; c; c = c->next)
			conn_goaway(c);
	}
	if (sh->retry_head)
		rpc_retry_submits(sh);
	if (now >= sh->next_sweep_ns) {
		conn_sweep(sh, now);
		sh->next_sweep_ns = now + SWEEP_EVERY_NS;
	}
	conn_flush_queued(sh);
	free_dead(sh);
	if (sh->drain_seen && sh->calls_in_engine == 0 && !sh->retry_head && sh->conn_count == 0)
		atomic_store(&sh->drained, true);
	atomic_fetch_add_explicit(&sh->epoch, 1, memory_order_release);
	if (sh->retry_head)
		return 1000000; /* 1 ms: the engine's queue was full */
	int64_t until_sweep = sh->next_sweep_ns - now;
	return until_sweep > 0 ? until_sweep : 0;
}

static void hook_stop(void *ctx, uint32_t shard)
{
	struct srv *srv = ctx;
	struct srv_shard *sh = &srv->shards[shard];
	listener_close(sh);
	on_handoff(&sh->handoff_watch, EPOLLIN); /* take them, to close them now */
	while (sh->conns)
		conn_close(sh->conns);
	/* Calls still parked for a retry never reached the engine. */
	struct call *list = sh->retry_head;
	sh->retry_head = sh->retry_tail = NULL;
	while (list) {
		struct call *next = list->next;
		list->st = NULL;
		call_free(list);
		list = next;
	}
	free_dead(sh);
	if (sh->prod && eng_producer_pending(sh->prod) == 0)
		eng_producer_close(sh->prod);
	sh->prod = NULL;
}

struct eng_shard_hooks srv_hooks(struct srv *s)
{
	return (struct eng_shard_hooks){ .ctx = s, .start = hook_start, .tick = hook_tick,
					 .stop = hook_stop };
}

/* ---- TLS ----------------------------------------------------------------- */

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned int inlen, void *arg)
{
	(void)ssl;
	(void)arg;
	unsigned char *sel;
	if (nghttp2_select_next_protocol(&sel, outlen, in, inlen) != 1)
		return SSL_TLSEXT_ERR_ALERT_FATAL; /* h2 only: gRPC needs HTTP/2 */
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

static int tls_setup(struct srv *s, char *err, size_t errlen)
{
	const struct srv_config *cfg = &s->cfg;
	if (!cfg->tls_cert && !cfg->tls_key)
		return 0;
	if (!cfg->tls_cert || !cfg->tls_key) {
		snprintf(err, errlen, "--tls-cert and --tls-key go together");
		return -1;
	}
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx)
		goto fail;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		SSL_CTX_free(ctx);
		goto fail;
	}
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
	s->tls = ctx;
	return 0;
fail:;
	char buf[256];
	ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
	snprintf(err, errlen, "TLS certificate %s / key %s: %s", cfg->tls_cert, cfg->tls_key, buf);
	return -1;
}

/* ---- while the engine recovers ---------------------------------------------- */

/* Before the shards serve, one thread answers every gRPC call on the
 * listeners with UNAVAILABLE ("not ready", DESIGN.md §5), so clients fail
 * fast and retry instead of hanging in the accept backlog. It serves one
 * connection at a time, briefly: recovery is seconds, and the calls it
 * sees are probes and retries. */

#define RECOVERY_CONN_NS (1000 * 1000000ll)

struct recovery_conn {
	struct srv *srv;
	bool answered;
};

static int recovery_on_frame(nghttp2_session *h2, const nghttp2_frame *frame, void *user_data)
{
	struct recovery_conn *rc = user_data;
	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	static const char code[] = "14", msg[] = "not ready: the server is recovering; retry";
	nghttp2_nv nv[] = {
		{ (uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE },
		{ (uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE },
		{ (uint8_t *)"grpc-status", (uint8_t *)code, 11, sizeof(code) - 1, NGHTTP2_NV_FLAG_NONE },
		{ (uint8_t *)"grpc-message", (uint8_t *)msg, 12, sizeof(msg) - 1, NGHTTP2_NV_FLAG_NONE },
	};
	nghttp2_submit_response(h2, frame->hd.stream_id, nv, 4, NULL);
	srv_count_reject(&rc->srv->shards[0], R_NOT_READY);
	rc->answered = true;
	return 0;
}

static void recovery_serve(struct srv *s, nghttp2_session_callbacks *cbs, int fd)
{
	struct recovery_conn rc = { .srv = s };
	nghttp2_session *h2;
	if (nghttp2_session_server_new(&h2, cbs, &rc) != 0) {
		close(fd);
		return;
	}
	nghttp2_submit_settings(h2, NGHTTP2_FLAG_NONE, NULL, 0);
	int64_t end = srv_now_ns() + RECOVERY_CONN_NS;
	bool goaway = false;
	while (srv_now_ns() < end) {
		const uint8_t *out;
		ssize_t n;
		while ((n = nghttp2_session_mem_send(h2, &out)) > 0)
			if (send(fd, out, (size_t)n, MSG_NOSIGNAL) != n)
				goto done;
		if (rc.answered && !goaway) {
			/* Answered: say goodbye, so the client reconnects (to the
			 * shards, once they serve) rather than reusing this. */
			nghttp2_submit_goaway(h2, NGHTTP2_FLAG_NONE,
					      nghttp2_session_get_last_proc_stream_id(h2),
					      NGHTTP2_NO_ERROR, NULL, 0);
			goaway = true;
			continue;
		}
		if (goaway && !nghttp2_session_want_write(h2))
			break;
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		if (poll(&pfd, 1, 50) <= 0)
			continue;
		uint8_t buf[16384];
		ssize_t got = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (got <= 0 && !(got < 0 && errno == EAGAIN))
			break;
		if (got > 0 && nghttp2_session_mem_recv(h2, buf, (size_t)got) < 0)
			break;
	}
done:
	nghttp2_session_del(h2);
	close(fd);
}

static void *recovery_main(void *arg)
{
	struct srv *s = arg;
	nghttp2_session_callbacks *cbs;
	if (nghttp2_session_callbacks_new(&cbs) != 0)
		return NULL;
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, recovery_on_frame);
	struct pollfd *pfd = calloc(s->shard_count, sizeof(*pfd));
	while (pfd && !atomic_load(&s->started)) {
		for (uint32_t i = 0; i < s->shard_count; i++)
			pfd[i] = (struct pollfd){ .fd = s->shards[i].listen_fd, .events = POLLIN };
		if (poll(pfd, s->shard_count, 50) <= 0)
			continue;
		for (uint32_t i = 0; i < s->shard_count && !atomic_load(&s->started); i++) {
			if (!(pfd[i].revents & POLLIN))
				continue;
			int fd = accept4(pfd[i].fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
			if (fd >= 0)
				recovery_serve(s, cbs, fd);
		}
	}
	free(pfd);
	nghttp2_session_callbacks_del(cbs);
	return NULL;
}

/* ---- lifecycle ------------------------------------------------------------- */

int srv_config_check(const struct srv_config *cfg, char *err, size_t errlen)
{
	if (cfg->max_connections < 1 || cfg->max_streams < 1 || cfg->stream_inflight_max < 1 ||
	    cfg->max_message_bytes < 1024 || cfg->max_message_bytes > (1u << 30) ||
	    cfg->conn_window_bytes < cfg->max_message_bytes + 65536u ||
	    cfg->conn_window_bytes > INT32_MAX || cfg->tenant_labels_max < 1 ||
	    cfg->idle_timeout_ns <= 0 || cfg->request_timeout_ns <= 0 || cfg->slow_query_ns < 0 ||
	    cfg->log_lines_per_s < 1) {
		snprintf(err, errlen,
			 "invalid server limits (connections, streams >= 1; message size 1 KiB..1 GiB; "
			 "connection window >= message size + 64 KiB; timeouts > 0; slow query >= 0; "
			 "log rate >= 1)");
		return -1;
	}
	return 0;
}

int srv_create(const struct srv_config *cfg, uint32_t shards, const struct fmt_limits *limits,
	       struct srv **out, char *err, size_t errlen)
{
	if (srv_config_check(cfg, err, errlen) != 0)
		return -1;
	struct srv *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	s->cfg = *cfg;
	s->limits = *limits;
	snprintf(s->keys_file, sizeof(s->keys_file), "%s", cfg->keys_file ? cfg->keys_file : "");
	s->shard_count = shards;
	s->shards = calloc(shards, sizeof(*s->shards));
	if (!s->shards || mx_labelset_init(&s->tenants, cfg->tenant_labels_max, 0) != 0 ||
	    mx_counter_vec_init(&s->appended, &s->tenants) != 0 ||
	    mx_counter_vec_init(&s->duplicates, &s->tenants) != 0) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	for (uint32_t i = 0; i < shards; i++) {
		struct srv_shard *sh = &s->shards[i];
		sh->srv = s;
		sh->id = i;
		sh->listen_fd = -1;
		sh->handoff_fd = -1;
		pthread_mutex_init(&sh->handoff_lock, NULL);
		mx_hist_init(&sh->stats.append_duration, NULL, 0);
		for (int k = 0; k < SRV_APPEND_STAGES; k++)
			mx_hist_init(&sh->stats.append_stage[k], NULL, 0);
		for (int m = 0; m < M_METHODS; m++)
			mx_hist_init(&sh->stats.request_duration[m], NULL, 0);
	}
	for (uint32_t i = 0; i < shards; i++) {
		if ((s->shards[i].handoff_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
			snprintf(err, errlen, "eventfd: %s", strerror(errno));
			goto fail;
		}
	}
	struct auth_table *keys = NULL;
	if (auth_table_load(s->keys_file, &keys, err, errlen) != 0)
		goto fail;
	atomic_store(&s->keys, keys);
	if (tls_setup(s, err, errlen) != 0)
		goto fail;
	char *port;
	if (split_host_port(cfg->grpc_listen, s->listen_host, sizeof(s->listen_host), &port) != 0) {
		snprintf(err, errlen, "grpc listen address %s: expected host:port", cfg->grpc_listen);
		goto fail;
	}
	char portbuf[8];
	for (uint32_t i = 0; i < shards; i++) {
		if (bind_listener(s->listen_host, i == 0 ? port : portbuf, &s->shards[i].listen_fd, err,
				  errlen) != 0)
			goto fail;
		if (i == 0) {
			s->port = bound_port(s->shards[0].listen_fd);
			snprintf(portbuf, sizeof(portbuf), "%u", s->port); /* port 0: the same for all */
		}
	}
	if (s->tls == NULL && pthread_create(&s->recovery_thread, NULL, recovery_main, s) == 0)
		s->recovery_running = true; /* TLS clients just wait in the backlog */
	*out = s;
	return 0;
fail:
	srv_destroy(s);
	return -1;
}

static void recovery_stop(struct srv *s)
{
	atomic_store(&s->started, true);
	if (s->recovery_running)
		pthread_join(s->recovery_thread, NULL);
	s->recovery_running = false;
}

void srv_start(struct srv *s)
{
	recovery_stop(s);
}

uint16_t srv_port(const struct srv *s)
{
	return s->port;
}

bool srv_ready(const struct srv *s)
{
	return atomic_load(&s->started) && !atomic_load(&s->draining);
}

void srv_drain(struct srv *s)
{
	atomic_store(&s->draining, true);
}

bool srv_drained(const struct srv *s)
{
	for (uint32_t i = 0; i < s->shard_count; i++)
		if (!atomic_load(&s->shards[i].drained))
			return false;
	return true;
}

int srv_reload_keys(struct srv *s, char *err, size_t errlen)
{
	struct auth_table *fresh = NULL;
	if (auth_table_load(s->keys_file, &fresh, err, errlen) != 0)
		return -1;
	struct srv_retired_keys *r = calloc(1, sizeof(*r));
	uint64_t *epochs = calloc(s->shard_count, sizeof(*epochs));
	if (!r || !epochs) {
		free(r);
		free(epochs);
		auth_table_free(fresh);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	r->table = atomic_exchange(&s->keys, fresh);
	for (uint32_t i = 0; i < s->shard_count; i++)
		epochs[i] = atomic_load_explicit(&s->shards[i].epoch, memory_order_acquire);
	r->epochs = epochs;
	r->next = s->retired;
	s->retired = r;
	return 0;
}

void srv_collect(struct srv *s)
{
	struct srv_retired_keys **pp = &s->retired;
	while (*pp) {
		struct srv_retired_keys *r = *pp;
		bool free_it = true;
		for (uint32_t i = 0; i < s->shard_count && free_it; i++)
			free_it = atomic_load_explicit(&s->shards[i].epoch, memory_order_acquire) >
				  r->epochs[i];
		if (!free_it) {
			pp = &r->next;
			continue;
		}
		*pp = r->next;
		auth_table_free(r->table);
		free(r->epochs);
		free(r);
	}
}

void srv_destroy(struct srv *s)
{
	if (!s)
		return;
	recovery_stop(s);
	for (uint32_t i = 0; s->shards && i < s->shard_count; i++) {
		struct srv_shard *sh = &s->shards[i];
		if (sh->listen_fd >= 0)
			close(sh->listen_fd);
		for (uint32_t k = 0; k < sh->handoff_count; k++)
			close(sh->handoff[k].fd); /* handed over after the shard stopped */
		if (sh->handoff_fd >= 0)
			close(sh->handoff_fd);
		pthread_mutex_destroy(&sh->handoff_lock);
	}
	free(s->shards);
	while (s->retired) {
		struct srv_retired_keys *r = s->retired;
		s->retired = r->next;
		auth_table_free(r->table);
		free(r->epochs);
		free(r);
	}
	auth_table_free(atomic_load(&s->keys));
	if (s->tls)
		SSL_CTX_free(s->tls);
	mx_counter_vec_destroy(&s->appended);
	mx_counter_vec_destroy(&s->duplicates);
	mx_labelset_destroy(&s->tenants);
	free(s);
}

/* ---- metrics ------------------------------------------------------------------ */

static const char *const reason_names[R_REASONS] = {
	[R_UNAUTHENTICATED] = "unauthenticated",
	[R_PERMISSION_DENIED] = "permission_denied",
	[R_INVALID_ARGUMENT] = "invalid_argument",
	[R_MESSAGE_TOO_BIG] = "message_too_big",
	[R_TOO_MANY_EVENTS] = "too_many_events",
	[R_MEMORY_BUDGET] = "memory_budget",
	[R_TENANTS_FULL] = "tenants_full",
	[R_DRAINING] = "draining",
	[R_DEADLINE] = "deadline_exceeded",
	[R_UNIMPLEMENTED] = "unimplemented",
	[R_STORAGE_FAILED] = "storage_failed",
	[R_NOT_READY] = "not_ready",
	[R_RATE_LIMITED] = "rate_limited",
	[R_DISK_BUDGET] = "disk_budget",
	[R_QUERY_TOO_BIG] = "query_too_big",
};

static uint64_t sum_shards(const struct srv *s, size_t offset)
{
	uint64_t n = 0;
	for (uint32_t i = 0; i < s->shard_count; i++)
		n += atomic_load_explicit((_Atomic uint64_t *)((char *)&s->shards[i].stats + offset),
					  memory_order_relaxed);
	return n;
}

#define SUM(field) sum_shards(s, offsetof(struct srv_stats, field))

static void counter(struct mx_buf *b, const char *name, const char *help, uint64_t v)
{
	mx_family(b, name, "counter", help);
	mx_sample_u64(b, name, NULL, 0, v);
}

static void gauge(struct mx_buf *b, const char *name, const char *help, uint64_t v)
{
	mx_family(b, name, "gauge", help);
	mx_sample_u64(b, name, NULL, 0, v);
}

int srv_render_metrics(struct srv *s, struct mx_buf *b)
{
	mx_family(b, "hodei_requests_total", "counter",
		  "gRPC calls answered, by method and status code.");
	for (int m = 0; m < M_METHODS; m++)
		for (int code = 0; code < GRPC_STATUS_COUNT; code++) {
			uint64_t n = 0;
			for (uint32_t i = 0; i < s->shard_count; i++)
				n += atomic_load_explicit(&s->shards[i].stats.requests[m][code],
							  memory_order_relaxed);
			if (!n && code != GRPC_OK)
				continue;
			struct mx_label l[] = { { "method", rpc_method_name((enum srv_method)m) },
						{ "code", grpc_status_name(code) } };
			mx_sample_u64(b, "hodei_requests_total", l, 2, n);
		}
	mx_family(b, "hodei_requests_rejected_total", "counter",
		  "Requests refused before or by the engine, by reason.");
	for (int r = 0; r < R_REASONS; r++) {
		struct mx_label l[] = { { "reason", reason_names[r] } };
		mx_sample_u64(b, "hodei_requests_rejected_total", l, 1, SUM(rejected[r]));
	}
	mx_family(b, "hodei_events_appended_total", "counter",
		  "Events stored (acknowledged), by tenant (capped; the rest is tenant=\"other\").");
	mx_counter_vec_write(b, "hodei_events_appended_total", "tenant", &s->tenants, &s->appended);
	mx_family(b, "hodei_events_duplicate_total", "counter",
		  "Events not stored again because their event_id was already stored, by tenant.");
	mx_counter_vec_write(b, "hodei_events_duplicate_total", "tenant", &s->tenants, &s->duplicates);
	gauge(b, "hodei_tenant_labels_max", "Tenants that get their own label before \"other\".",
	      s->cfg.tenant_labels_max);

	const struct mx_hist *h[64];
	uint32_t n = s->shard_count < 64 ? s->shard_count : 64;
	for (uint32_t i = 0; i < n; i++)
		h[i] = &s->shards[i].stats.append_duration;
	mx_family(b, "hodei_append_duration_seconds", "histogram",
		  "From an append request's arrival to its durable acknowledgement.");
	mx_hist_write_sum(b, "hodei_append_duration_seconds", NULL, 0, h, n);
	static const char *const stage_names[SRV_APPEND_STAGES] = {
		"receive", "queue", "wait", "commit", "deliver", "respond",
	};
	mx_family(b, "hodei_append_stage_duration_seconds", "histogram",
		  "Where an Append's time goes: receive (HEADERS to message decoded, unary only), "
		  "queue (to the engine shard running it), wait (to its WAL commit submitted), commit "
		  "(WAL write and fsync), deliver (back to the connection's thread), respond "
		  "(response queued to the last frame sent, unary only).");
	for (int k = 0; k < SRV_APPEND_STAGES; k++) {
		for (uint32_t i = 0; i < n; i++)
			h[i] = &s->shards[i].stats.append_stage[k];
		struct mx_label l[] = { { "stage", stage_names[k] } };
		mx_hist_write_sum(b, "hodei_append_stage_duration_seconds", l, 1, h, n);
	}
	mx_family(b, "hodei_request_duration_seconds", "histogram",
		  "gRPC call duration in the server, by method.");
	for (int m = 0; m < M_UNKNOWN; m++) {
		for (uint32_t i = 0; i < n; i++)
			h[i] = &s->shards[i].stats.request_duration[m];
		struct mx_label l[] = { { "method", rpc_method_name((enum srv_method)m) } };
		mx_hist_write_sum(b, "hodei_request_duration_seconds", l, 1, h, n);
	}

	gauge(b, "hodei_connections_open", "gRPC connections open now.", atomic_load(&s->conns_open));
	gauge(b, "hodei_connections_max", "gRPC connection limit (max_connections).",
	      s->cfg.max_connections);
	counter(b, "hodei_connections_accepted_total", "gRPC connections accepted.",
		SUM(conns_accepted));
	mx_family(b, "hodei_shard_connections", "gauge",
		  "gRPC connections per shard (each lives on one shard's thread).");
	for (uint32_t i = 0; i < s->shard_count; i++) {
		char id[12];
		snprintf(id, sizeof(id), "%u", i);
		struct mx_label l[] = { { "shard", id } };
		mx_sample_u64(b, "hodei_shard_connections", l, 1,
			      atomic_load_explicit(&s->shards[i].assigned, memory_order_relaxed));
	}
	counter(b, "hodei_connections_balanced_total",
		"gRPC connections accepted by one shard and handed to the one with the fewest.",
		SUM(conns_handed_in));
	counter(b, "hodei_connections_rejected_total",
		"gRPC connections refused because max_connections were open.", SUM(conns_rejected));
	counter(b, "hodei_connections_idle_closed_total",
		"gRPC connections closed after idle_timeout without a stream.", SUM(conns_idle_closed));
	counter(b, "hodei_connections_slow_closed_total",
		"Connections or requests ended because the client was too slow (request_timeout).",
		SUM(conns_slow_closed));
	counter(b, "hodei_grpc_received_bytes_total", "Bytes read from gRPC connections.",
		SUM(bytes_received));
	counter(b, "hodei_grpc_sent_bytes_total", "Bytes written to gRPC connections.", SUM(bytes_sent));
	counter(b, "hodei_log_lines_suppressed_total",
		"Refusal and slow-query log lines not written because a shard wrote its maximum "
		"per second.", SUM(log_suppressed));
	gauge(b, "hodei_log_lines_per_second_max",
	      "Refusal and slow-query log lines one shard writes per second at most (log_rate).",
	      s->cfg.log_lines_per_s);
	mx_family(b, "hodei_slow_queries_total", "counter",
		  "Search and Count calls that took at least slow_query in the server, by method "
		  "(each is logged, within the log line limit).");
	static const enum srv_method queries[] = { M_SEARCH, M_COUNT };
	for (size_t k = 0; k < FMT_ARRAY_LEN(queries); k++) {
		struct mx_label l[] = { { "method", rpc_method_name(queries[k]) } };
		mx_sample_u64(b, "hodei_slow_queries_total", l, 1, SUM(slow_queries[queries[k]]));
	}
	mx_family(b, "hodei_slow_query_threshold_seconds", "gauge",
		  "Search and Count calls at least this long are logged (0: never).");
	mx_sample_f64(b, "hodei_slow_query_threshold_seconds", NULL, 0, s->cfg.slow_query_ns / 1e9);
	counter(b, "hodei_engine_queue_full_total",
		"Requests that found the engine's queue full and were retried.", SUM(submit_retries));
	gauge(b, "hodei_grpc_max_message_bytes", "Largest gRPC message accepted.",
	      s->cfg.max_message_bytes);
	gauge(b, "hodei_grpc_max_streams", "Concurrent streams per connection.", s->cfg.max_streams);
	gauge(b, "hodei_tenant_rate_limit_events_per_second",
	      "Events per second one tenant may append (0: no limit).", s->cfg.tenant_rate_eps);
	gauge(b, "hodei_grpc_max_events_per_request", "Events one request may carry.",
	      s->limits.events_per_batch_max);
	gauge(b, "hodei_api_keys", "API keys loaded from the keys file.",
	      auth_table_count(atomic_load(&s->keys)));
	gauge(b, "hodei_ready", "1 when the server accepts calls (recovered, not draining).",
	      srv_ready(s) ? 1 : 0);
	return mx_buf_err(b);
}
