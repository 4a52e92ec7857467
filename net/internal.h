/* SPDX-License-Identifier: Apache-2.0
 *
 * internal.h — the server's private structures, shared by server.c
 * (listeners, lifecycle, metrics), conn.c (connections, HTTP/2, streams)
 * and rpc.c (the methods).
 *
 * Ownership. A connection belongs to the shard thread that accepted it and
 * is only touched there. A stream belongs to its connection. A call (one
 * request handed to the engine) is owned by the stream while the stream
 * lives; if the stream dies first (client reset, deadline, connection
 * closed) the call is detached and frees itself when the engine completes
 * it — the engine borrows the call's memory until then.
 *
 * Freeing. A connection can be closed from inside a callback of another
 * fd of the same tick (a completion that fails a write). So a closed
 * connection only moves to the shard's `dead` list and is freed at the
 * end of the tick, after every watch callback ran.
 *
 * Invariants:
 *  N1 Each byte of DATA received is given back to HTTP/2 flow control
 *     exactly once: at once when discarded, or when the call holding it
 *     ends (call->credit).
 *  N2 A stream answers exactly once: one response (headers, messages,
 *     trailers) or one trailers-only error; `st->answered` guards it.
 *  N3 AppendStream responses go out in request order: only the head of a
 *     stream's call list may write its response.
 */
#ifndef HODEI_NET_INTERNAL_H
#define HODEI_NET_INTERNAL_H

#include "engine/engine.h"
#include "net/auth.h"
#include "net/grpc_frame.h"
#include "net/grpc_status.h"
#include "net/metrics.h"
#include "net/pb_arena.h"
#include "net/server.h"

#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>
#include <stdatomic.h>

enum srv_method {
	M_APPEND,
	M_APPEND_STREAM,
	M_SEARCH,
	M_VERIFY,
	M_COUNT,
	M_HEALTH,
	M_UNKNOWN,
	M_METHODS
};

/* Why a request was refused: hodei_requests_rejected_total{reason}. */
enum srv_reason {
	R_UNAUTHENTICATED,
	R_PERMISSION_DENIED,
	R_INVALID_ARGUMENT,
	R_MESSAGE_TOO_BIG,
	R_TOO_MANY_EVENTS,
	R_MEMORY_BUDGET,
	R_TENANTS_FULL,
	R_DRAINING,
	R_DEADLINE,
	R_UNIMPLEMENTED,
	R_STORAGE_FAILED,
	R_NOT_READY,
	R_RATE_LIMITED,
	R_DISK_BUDGET,
	R_QUERY_TOO_BIG,
	R_REASONS
};

struct srv_shard;
struct conn;
struct stream;

/* One request in the engine (or about to be). */
struct call {
	union {
		struct eng_append append;
		struct eng_search search;
		struct eng_count count;
		struct eng_verify verify;
	} u;
	enum srv_method method;
	struct stream *st;          /* NULL once detached */
	struct srv_shard *sh;
	struct call *next;          /* in the stream's list */
	struct pb_arena arena;      /* the decoded message and derived arrays */
	uint8_t *msg;               /* the raw message (malloc) */
	uint32_t credit;            /* flow-control bytes to give back at the end (N1) */
	int64_t start_ns;
	char tenant[FMT_TENANT_MAX + 1];
	bool in_engine;             /* submitted, callback not yet run */
	bool done;
	int status;                 /* gRPC status once done */
	char message[256];
	uint8_t *resp;              /* packed response message (malloc), once done */
	uint32_t resp_len;
};

struct stream {
	struct conn *c;
	int32_t id;
	enum srv_method method;
	char path[128];
	uint32_t header_bytes;
	bool is_post, grpc_content_type;
	bool has_token, token_malformed, has_tenant_header, tenant_header_bad;
	bool encoding_unsupported;
	uint8_t token_hash[AUTH_HASH_BYTES];
	char tenant_header[FMT_TENANT_MAX + 1];
	char request_id[64];
	int64_t deadline_ns;        /* 0: none (grpc-timeout) */
	int64_t last_data_ns;
	int64_t opened_ns;          /* HEADERS received */
	int64_t answered_ns;        /* unary Append: its response queued (0: not yet) */
	/* After headers: who is calling. */
	enum auth_role role;
	char tenant[FMT_TENANT_MAX + 1];
	/* Request body. */
	struct gf_reader rd;
	uint8_t *unary_msg;         /* unary: the one message, until END_STREAM */
	uint32_t unary_len;
	uint32_t messages;
	bool end_stream_recv;
	bool discard;               /* refused: DATA is consumed and dropped */
	/* Calls of this stream in request order (N3). */
	struct call *calls_head, *calls_tail;
	uint32_t calls_inflight;
	/* Response. */
	bool answered;              /* N2 */
	bool headers_sent;
	bool want_trailers;
	bool deferred;
	int final_status;
	char final_message[256];
	uint8_t *out;               /* response messages waiting for DATA frames */
	size_t out_len, out_off, out_cap;
	struct stream *prev, *next; /* in the connection's list */
	uint32_t received, credited; /* DATA bytes, and those owned by messages (N1) */
};

struct conn {
	struct eng_watch watch;
	struct srv_shard *sh;
	int fd;
	SSL *ssl;
	bool tls_done;
	nghttp2_session *h2;
	char peer[64];
	struct conn *prev, *next;   /* in the shard's live list */
	int64_t accepted_ns, last_active_ns;
	uint32_t streams;           /* open streams */
	bool goaway_sent;
	bool dead;
	bool flush_queued;
	struct conn *flush_next;    /* in the shard's flush list */
	struct stream *stream_list;
	/* Bytes nghttp2 produced that the socket has not taken yet. */
	const uint8_t *pend;
	size_t pend_len;
};

/* Where an Append's time goes, in order. receive and respond are timed
 * for unary Appends only (a stream's messages share their HEADERS and
 * last frame); the engine's four for every Append that succeeded. */
enum srv_append_stage {
	STAGE_RECEIVE, /* HEADERS frame to message decoded */
	STAGE_QUEUE,   /* submitted to the engine to run by its shard */
	STAGE_WAIT,    /* run (encoded into the WAL buffer) to its commit submitted */
	STAGE_COMMIT,  /* WAL write + fsync, to the shard seeing it complete */
	STAGE_DELIVER, /* completed by the shard to its callback on this thread */
	STAGE_RESPOND, /* response queued to the stream's last frame sent */
	SRV_APPEND_STAGES
};

/* Relaxed atomics written by one shard thread, read by the admin thread. */
struct srv_stats {
	_Atomic uint64_t requests[M_METHODS][GRPC_STATUS_COUNT];
	_Atomic uint64_t rejected[R_REASONS];
	_Atomic uint64_t conns_accepted, conns_closed, conns_rejected, conns_handed_in;
	_Atomic uint64_t conns_idle_closed, conns_slow_closed;
	_Atomic uint64_t bytes_received, bytes_sent;
	_Atomic uint64_t submit_retries;
	_Atomic uint64_t log_suppressed;
	_Atomic uint64_t slow_queries[M_METHODS];  /* Search and Count over slow_query_ns */
	struct mx_hist append_duration;
	/* An Append's stages (enum srv_append_stage). */
	struct mx_hist append_stage[SRV_APPEND_STAGES];
	struct mx_hist request_duration[M_METHODS];
};

/* A connection accepted by one shard for another (server.c). */
struct srv_handoff {
	int fd;
	char peer[64];
};

#define SRV_HANDOFF_MAX 64

struct srv_shard {
	struct srv *srv;
	uint32_t id;
	struct eng_engine *eng;
	struct eng_producer *prod;
	struct eng_watch listen_watch, prod_watch;
	int listen_fd;
	bool listening;
	struct conn *conns;         /* live connections */
	struct conn *dead;          /* closed this tick, freed at its end */
	struct conn *flush_head;    /* connections with output to write */
	struct call *retry_head, *retry_tail; /* engine queue was full */
	uint32_t conn_count;
	uint32_t calls_in_engine;
	int64_t next_sweep_ns;
	int64_t log_window_ns;      /* refusal and slow-query lines: at most log_lines_per_s */
	uint32_t log_lines;
	bool drain_seen;
	_Atomic uint64_t epoch;     /* ticks completed (key table reclamation) */
	_Atomic bool drained;       /* draining and nothing left in flight */
	struct srv_stats stats;
	/* Connection balancing (server.c): connections this shard owns or
	 * has been handed (read by every shard), and the ones another shard
	 * accepted for it, taken at its next wake-up (handoff_lock). */
	_Atomic uint32_t assigned;
	_Atomic bool accepting;     /* listening: may be handed connections */
	int handoff_fd;             /* eventfd: handoffs are waiting */
	struct eng_watch handoff_watch;
	pthread_mutex_t handoff_lock;
	struct srv_handoff handoff[SRV_HANDOFF_MAX];
	uint32_t handoff_count;
};

struct srv_retired_keys {
	struct auth_table *table;
	uint64_t *epochs;           /* each shard's epoch when it was retired */
	struct srv_retired_keys *next;
};

struct srv {
	struct srv_config cfg;
	struct fmt_limits limits;
	char listen_host[256];
	uint16_t port;
	uint32_t shard_count;
	struct srv_shard *shards;
	SSL_CTX *tls;
	_Atomic(struct auth_table *) keys;
	struct srv_retired_keys *retired;
	_Atomic bool started;
	pthread_t recovery_thread;  /* answers UNAVAILABLE until started */
	bool recovery_running;
	_Atomic bool draining;
	_Atomic uint32_t conns_open;
	struct mx_labelset tenants;
	struct mx_counter_vec appended, duplicates;
	char keys_file[4096];
};

/* conn.c */
void conn_accept(struct srv_shard *sh, int fd, const char *peer);
void conn_close(struct conn *c);
void conn_flush(struct conn *c);
/* Queues c for a flush at the end of the tick. */
void conn_want_flush(struct conn *c);
void conn_flush_queued(struct srv_shard *sh);
void conn_free(struct conn *c);
void conn_sweep(struct srv_shard *sh, int64_t now);
void conn_goaway(struct conn *c);
/* Answers a stream: trailers-only error, or a response whose messages
 * were queued with stream_send_message() followed by OK trailers. */
void stream_finish(struct stream *st, int status, const char *message);
int stream_send_message(struct stream *st, const uint8_t *msg, uint32_t len);
void stream_give_back(struct conn *c, int32_t stream_id, uint32_t bytes);

/* rpc.c */
enum srv_method rpc_method_of(const char *path);
const char *rpc_method_name(enum srv_method m);
/* Headers are in: authenticate and authorise. Returns GRPC_OK or a status
 * (with message) to answer at once. */
int rpc_authorize(struct stream *st, char *message, size_t cap);
/* One complete request message of st (ownership of msg passes). */
void rpc_on_message(struct stream *st, uint8_t *msg, uint32_t len);
/* The stream's request side ended (END_STREAM). */
void rpc_on_end(struct stream *st);
/* Writes out every finished call at the head of st's list (N3). */
void rpc_flush_calls(struct stream *st);
/* Ends st with an error; on an AppendStream, after the responses of the
 * requests before it (N3). reason: enum srv_reason. */
void rpc_stream_fail(struct stream *st, int reason, int status, const char *message);
/* The stream is gone: detach its calls. */
void rpc_detach_calls(struct stream *st);
void rpc_retry_submits(struct srv_shard *sh);
void call_free(struct call *call);

/* server.c */
void srv_count_request(struct srv_shard *sh, enum srv_method m, int status);
void srv_count_reject(struct srv_shard *sh, enum srv_reason r);
const struct auth_table *srv_keys(struct srv_shard *sh);
int64_t srv_now_ns(void);   /* CLOCK_MONOTONIC */
/* Whether shard sh may write another refusal or slow-query log line this
 * second (at most cfg.log_lines_per_s, conn.c); one not written is counted in
 * hodei_log_lines_suppressed_total. */
bool srv_log_line_allowed(struct srv_shard *sh);

#endif
