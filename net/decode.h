/* SPDX-License-Identifier: Apache-2.0
 *
 * decode.h — request messages to engine requests: protobuf-c decode into a
 * capped arena (net/pb_arena.h), then the checks of the wire shape that
 * need no engine state (event_id length, counts, Search and Count
 * arguments). The server (rpc.c) and the request-path fuzz target share
 * it.
 *
 * On success the engine request's pointers (events, attributes, filter
 * strings, page token) point into the arena and the raw message, which
 * must outlive the request. On failure, *e holds the gRPC status, the
 * metrics reason and a message naming the field.
 */
#ifndef HODEI_NET_DECODE_H
#define HODEI_NET_DECODE_H

#include "engine/engine.h"
#include "net/pb_arena.h"

struct dec_error {
	int status;         /* enum grpc_status */
	int reason;         /* enum srv_reason (net/internal.h) */
	char msg[256];
};

/* Fills req->events and req->count (not tenant, done, ctx). Returns
 * GRPC_OK or e->status. */
int dec_append(struct pb_arena *a, const uint8_t *msg, size_t len, const struct fmt_limits *lim,
	       struct eng_append *req, struct dec_error *e);

/* Fills req's filter, limit, order and page token (not tenant, done, ctx). */
int dec_search(struct pb_arena *a, const uint8_t *msg, size_t len, const struct fmt_limits *lim,
	       struct eng_search *req, struct dec_error *e);

/* Fills req's filter and group_by (not tenant, done, ctx); the filter's
 * limit, page token and order are ignored. Errors name the field as
 * "filter.<field>" or "group_by". */
int dec_count(struct pb_arena *a, const uint8_t *msg, size_t len, const struct fmt_limits *lim,
	      struct eng_count *req, struct dec_error *e);

/* The error of a failed unpack: over the arena cap, or malformed. */
void dec_failed(const struct pb_arena *a, const char *what, struct dec_error *e);

#endif
