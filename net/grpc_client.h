/* SPDX-License-Identifier: Apache-2.0
 *
 * grpc_client.h — a blocking gRPC client over HTTP/2, cleartext with prior
 * knowledge (h2c) or TLS (OpenSSL, ALPN "h2", the server's certificate
 * verified), built on nghttp2, for hodei-audit and the benchmarks.
 *
 * One net_grpc_conn is one TCP connection and one nghttp2 session. It is
 * driven only from inside the calls below (no thread, no callbacks to the
 * caller): each call runs the connection — poll(), read, nghttp2, write —
 * until what it waits for has happened or its deadline passed. Calls on one
 * connection run one after another on one thread; several streams may be
 * open at once (a call waiting on one stream also moves the others).
 *
 * Status: every call ends with a struct net_grpc_status. When the server
 * answered, it is the server's grpc-status and grpc-message (percent-
 * decoded). When the client could not get an answer it is made up the way
 * gRPC clients do it: connection refused, reset or closed, GOAWAY, a
 * request not sent → UNAVAILABLE; deadline → DEADLINE_EXCEEDED; a response
 * over the size limit → RESOURCE_EXHAUSTED; a malformed response (no
 * grpc-status, bad framing, a compressed message) → INTERNAL, or the
 * gRPC mapping of the HTTP status. The message always says what happened.
 *
 * Limits: one response message ≤ NET_GRPC_MESSAGE_MAX; bytes received but
 * not yet read by the caller ≤ NET_GRPC_RECV_BUFFER_MAX per stream;
 * request bytes not yet taken by nghttp2 ≤ NET_GRPC_SEND_BUFFER_MAX per
 * stream (a send beyond it blocks until the peer's flow-control window
 * lets the bytes out).
 */
#ifndef HODEI_NET_GRPC_CLIENT_H
#define HODEI_NET_GRPC_CLIENT_H

#include "net/grpc_status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NET_GRPC_MESSAGE_MAX (64u << 20)
#define NET_GRPC_RECV_BUFFER_MAX (64u << 20)
#define NET_GRPC_SEND_BUFFER_MAX (64u << 20)
#define NET_GRPC_MESSAGE_TEXT_MAX 512

enum net_grpc_err {
	NET_E_STATUS = -1101,    /* the server ended the call with a non-OK status */
	NET_E_TRANSPORT = -1102, /* no answer: the client made up the status */
};

struct net_grpc_status {
	int code;                                /* enum grpc_status */
	char message[NET_GRPC_MESSAGE_TEXT_MAX]; /* "" when the server sent none */
};

/* One header of request metadata; name in lowercase. The value of
 * "authorization" is never indexed by HPACK (sent as never-indexed). */
struct net_grpc_md {
	const char *name;
	const char *value;
};

struct net_grpc_conn;
struct net_grpc_stream;

/* Connects to target ("host:port", "[v6addr]:port") within timeout_ms
 * (0 = the system's), sends the HTTP/2 preface and settings (a 64 MiB
 * connection window, 16 MiB per stream, no server push).
 * Returns 0 with *out set, or NET_E_TRANSPORT with *st = UNAVAILABLE
 * (a bad target, DNS, refused, timed out) or INTERNAL (out of memory). */
int net_grpc_connect(const char *target, int timeout_ms, struct net_grpc_conn **out,
		     struct net_grpc_status *st);

/* TLS for net_grpc_connect_tls: the server's certificate must chain to
 * ca_file's certificates (PEM), or to the system's when ca_file is NULL,
 * and name the target's host (DNS name or IP address). */
struct net_grpc_tls {
	const char *ca_file;
};

/* net_grpc_connect over TLS when tls is not NULL (h2c when it is): the
 * handshake, within the same timeout, must verify the server and agree on
 * ALPN "h2". A failed handshake or verification is UNAVAILABLE, and the
 * message says why (OpenSSL's reason, the verification result). */
int net_grpc_connect_tls(const char *target, int timeout_ms, const struct net_grpc_tls *tls,
			 struct net_grpc_conn **out, struct net_grpc_status *st);

/* Sends GOAWAY if possible, closes the socket, frees everything. Every
 * stream of the connection must have been freed first. NULL is a no-op. */
void net_grpc_close(struct net_grpc_conn *c);

/* False once the connection failed or the server sent GOAWAY: new calls
 * would fail with UNAVAILABLE; connect again. */
bool net_grpc_usable(const struct net_grpc_conn *c);

/* One unary call: sends req (req_len bytes of protobuf, without the gRPC
 * prefix), waits for the response within timeout_ms (0 = no deadline; also
 * sent as grpc-timeout). On 0 (status OK), *resp (malloc'd, caller frees)
 * and *resp_len hold the one response message. Returns 0, NET_E_STATUS or
 * NET_E_TRANSPORT; *st is always filled. */
int net_grpc_unary(struct net_grpc_conn *c, const char *path, const struct net_grpc_md *md,
		   size_t md_count, const uint8_t *req, size_t req_len, int timeout_ms,
		   uint8_t **resp, size_t *resp_len, struct net_grpc_status *st);

/* Opens a bidirectional stream (e.g. AppendStream); timeout_ms (0 = none)
 * bounds the whole stream. Returns 0 with *out set, or NET_E_TRANSPORT
 * (connection unusable, out of memory). The stream borrows c. */
int net_grpc_stream_open(struct net_grpc_conn *c, const char *path, const struct net_grpc_md *md,
			 size_t md_count, int timeout_ms, struct net_grpc_stream **out,
			 struct net_grpc_status *st);

/* Queues one request message (copied; len ≤ NET_GRPC_MESSAGE_MAX) and
 * writes what the connection can take now without waiting. Blocks only
 * while more than NET_GRPC_SEND_BUFFER_MAX bytes are queued. Returns 0, or
 * NET_E_TRANSPORT / NET_E_STATUS when the stream already ended (then *st
 * holds why; read the responses already received with _recv first if they
 * matter). */
int net_grpc_stream_send(struct net_grpc_stream *s, const uint8_t *msg, size_t len,
			 struct net_grpc_status *st);

/* Half-closes: no more requests (END_STREAM after the queued bytes).
 * Returns 0 or as net_grpc_stream_send. */
int net_grpc_stream_close_send(struct net_grpc_stream *s, struct net_grpc_status *st);

/* Restarts the stream's deadline: timeout_ms from now (0 = none). For a
 * long stream, set before each wait so that it bounds the silence of the
 * server, not the length of the stream. Not sent to the server. */
void net_grpc_stream_set_timeout(struct net_grpc_stream *s, int timeout_ms);

/* Waits for the next response message, in order. Returns 1 with *msg
 * (malloc'd, caller frees) and *len set; 0 when the stream ended with
 * status OK (*st = OK); NET_E_STATUS or NET_E_TRANSPORT when it ended
 * otherwise (messages that arrived before the end are returned first). */
int net_grpc_stream_recv(struct net_grpc_stream *s, uint8_t **msg, size_t *len,
			 struct net_grpc_status *st);

/* Frees the stream; a stream that has not ended is cancelled (RST_STREAM
 * CANCEL). NULL is a no-op. */
void net_grpc_stream_free(struct net_grpc_stream *s);

#endif
