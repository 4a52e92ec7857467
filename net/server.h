/* SPDX-License-Identifier: Apache-2.0
 *
 * server.h — the gRPC server: hodei.audit.v1.AuditService and
 * grpc.health.v1.Health over HTTP/2 (h2c with prior knowledge, or TLS with
 * ALPN h2), run inside the engine's shard threads.
 *
 * Data flow (docs/ARCHITECTURE.md "Network"):
 *
 *   listener (one per shard, SO_REUSEPORT) ─▶ connection, owned by the
 *   shard that accepted it ─▶ nghttp2 session ─▶ stream: headers (path,
 *   bearer token hashed at once, x-hodei-tenant, grpc-timeout) ─▶ auth ─▶
 *   DATA ─▶ gRPC message reassembly (limit) ─▶ protobuf-c decode (arena
 *   with a cap) ─▶ request ─▶ the tenant's shard through the engine's SPSC
 *   queues (this shard's producer) ─▶ completion on this shard's thread
 *   ─▶ response message + trailers.
 *
 * Nothing on this path takes a lock. A connection's memory is bounded by
 * HTTP/2 flow control: the bytes of a request's message are given back to
 * the client's window only when the request is finished, so a client can
 * never have more than the connection window buffered here.
 *
 * Lifecycle: srv_create() (binds the listeners, so the ports are known and
 * reported before recovery) ─▶ eng_open() with srv_hooks() ─▶ srv_start()
 * ─▶ ... ─▶ srv_drain() (SIGTERM: refuse new calls with UNAVAILABLE,
 * GOAWAY, finish the calls in flight) ─▶ srv_drained() ─▶ eng_close()
 * (the stop hooks close what is left) ─▶ srv_destroy().
 */
#ifndef HODEI_NET_SERVER_H
#define HODEI_NET_SERVER_H

#include "engine/engine.h"
#include "net/metrics.h"

#include <stdbool.h>
#include <stdint.h>

struct srv_config {
	const char *grpc_listen;          /* "host:port"; port 0 picks one */
	const char *keys_file;
	const char *tls_cert, *tls_key;   /* both or neither */
	uint32_t max_connections;         /* open at once, whole server */
	uint32_t max_streams;             /* concurrent streams per connection */
	uint32_t max_message_bytes;       /* one gRPC message */
	uint32_t conn_window_bytes;       /* per connection, buffered request bytes */
	uint32_t stream_inflight_max;     /* AppendStream requests in the engine at once */
	uint32_t tenant_labels_max;       /* tenants with their own metric label */
	uint32_t tenant_rate_eps;         /* the engine's, for messages and metrics */
	int64_t idle_timeout_ns;          /* connection with no stream */
	int64_t request_timeout_ns;       /* a request (or the preface) must arrive within */
	int64_t slow_query_ns;            /* Search/Count at least this long are logged (0: never) */
	uint32_t log_lines_per_s;         /* refusal and slow-query lines per shard and second */
};

void srv_config_default(struct srv_config *cfg);
/* Returns 0, or -1 with the rule cfg breaks in err (srv_create checks it
 * too; a caller checks it first to refuse a start before any side effect). */
int srv_config_check(const struct srv_config *cfg, char *err, size_t errlen);

struct srv;

/* Validates cfg, loads the keys, binds one listener per shard. limits are
 * the engine's (they decide the validation messages). Returns 0 or -1 with
 * a message in err. */
int srv_create(const struct srv_config *cfg, uint32_t shards, const struct fmt_limits *limits,
	       struct srv **out, char *err, size_t errlen);
/* The hooks to put in eng_config before eng_open(). */
struct eng_shard_hooks srv_hooks(struct srv *s);
/* After eng_open(): the shards start serving at their next tick. */
void srv_start(struct srv *s);
uint16_t srv_port(const struct srv *s);

/* Re-reads the keys file (SIGHUP). Returns 0, or -1 with err (the old keys
 * stay in force). Call from one thread (the main loop). */
int srv_reload_keys(struct srv *s, char *err, size_t errlen);
/* Frees key tables no shard can still be reading. Main loop, periodically. */
void srv_collect(struct srv *s);

/* SIGTERM: new calls get UNAVAILABLE, connections get GOAWAY, calls in
 * flight complete. srv_drained() turns true when no call is left. */
void srv_drain(struct srv *s);
bool srv_drained(const struct srv *s);
bool srv_ready(const struct srv *s);

/* Writes the server's metric families (requests, connections, events by
 * tenant, durations) into out. */
int srv_render_metrics(struct srv *s, struct mx_buf *out);

void srv_destroy(struct srv *s);

#endif
