// SPDX-License-Identifier: Apache-2.0
/*
 * fuzz_request.c — libFuzzer target for the gRPC request path: everything
 * the server does with a client's request body before the engine stores
 * anything.
 *
 * Input layout: byte 0 picks the method (mod 8: 0 Append, 1 Search, 2
 * Verify, 3 Health, 4 Count; 5..7 as 1..3) and byte 1 the size of the
 * DATA chunks the body is cut into (1..256 bytes, so messages straddle
 * chunk boundaries in every way); the rest is the request body as it
 * would arrive over HTTP/2. The body goes through the server's own code:
 * gRPC message reassembly with a size limit (grpc_frame.c), protobuf-c
 * decoding into a capped arena (pb_arena.c), the wire-shape checks
 * (decode.c, Count's group_by included), and for Append the engine's
 * event validation with the server's JSON check (fmt_event_validate),
 * followed by the canonical encoding of every valid event. Any crash,
 * sanitizer report, leak or failed ASSERT is a finding.
 *
 * With -DHODEI_FUZZ=OFF, replay_main.c drives this file over the
 * checked-in corpus in tests/fuzz/corpus/request/ under CTest.
 */
#include "format/event.h"
#include "net/decode.h"
#include "net/grpc_frame.h"
#include "net/grpc_status.h"
#include "net/json_check.h"

#include "grpc/health/v1/health.pb-c.h"
#include "hodei/audit/v1/audit.pb-c.h"

#include <stdlib.h>

#define MESSAGE_MAX (1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t canon[1u << 20];

static void run_message(int method, const struct fmt_limits *lim, const uint8_t *msg, uint32_t len)
{
	struct pb_arena a;
	pb_arena_init(&a, 2 * (size_t)len + ((size_t)lim->events_per_batch_max + 1) * 1024 + (1u << 20));
	struct dec_error e;
	switch (method) {
	case 0: {
		struct eng_append req = { 0 };
		if (dec_append(&a, msg, len, lim, &req, &e) != GRPC_OK) {
			ASSERT(e.status != GRPC_OK && e.msg[0]);
			break;
		}
		for (uint32_t i = 0; i < req.count; i++) {
			struct fmt_event ev = req.events[i];
			struct fmt_invalid why;
			if (fmt_event_validate(&ev, lim, &why) != 0) {
				ASSERT(why.field && why.reason);
				continue;
			}
			ev.tenant = fmt_str_c("fuzz");
			ev.seq = i + 1;
			size_t n = fmt_event_canon_size(&ev);
			if (n <= sizeof(canon))
				ASSERT(fmt_event_canon_encode(&ev, canon, sizeof(canon)) == (int64_t)n);
		}
		break;
	}
	case 1: {
		struct eng_search req = { 0 };
		if (dec_search(&a, msg, len, lim, &req, &e) != GRPC_OK)
			ASSERT(e.status != GRPC_OK && e.msg[0]);
		else
			ASSERT(req.limit <= ENG_SEARCH_LIMIT_MAX && req.page_token_len <= ENG_PAGE_TOKEN_BYTES);
		break;
	}
	case 4: {
		struct eng_count req = { 0 };
		if (dec_count(&a, msg, len, lim, &req, &e) != GRPC_OK)
			ASSERT(e.status != GRPC_OK && e.msg[0]);
		else
			ASSERT(req.group_by <= ENG_COUNT_BY_OUTCOME &&
			       req.filter.outcome <= FMT_OUTCOME_DENIED);
		break;
	}
	case 2: {
		Hodei__Audit__V1__VerifyRequest *m =
			hodei__audit__v1__verify_request__unpack(&a.allocator, len, msg);
		(void)m;
		break;
	}
	default: {
		Grpc__Health__V1__HealthCheckRequest *m =
			grpc__health__v1__health_check_request__unpack(&a.allocator, len, msg);
		(void)m;
		break;
	}
	}
	pb_arena_release(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	int method = data[0] & 7;
	if (method > 4)
		method -= 4;
	size_t chunk = (size_t)data[1] + 1;
	data += 2;
	size -= 2;
	struct fmt_limits lim;
	fmt_limits_default(&lim);
	lim.details_json_valid = net_json_valid;
	struct gf_reader rd;
	gf_reader_init(&rd, MESSAGE_MAX);
	while (size) {
		size_t n = size < chunk ? size : chunk;
		const uint8_t *p = data;
		size_t left = n;
		while (left) {
			struct gf_message m;
			enum gf_result r = gf_reader_feed(&rd, &p, &left, &m);
			if (r == GF_NEED_MORE)
				break;
			if (r < 0) {
				gf_reader_free(&rd);
				return 0; /* the server answers and drops the stream */
			}
			ASSERT(m.len <= MESSAGE_MAX);
			if (!m.compressed)
				run_message(method, &lim, m.data ? m.data : (const uint8_t *)"", m.len);
			free(m.data);
		}
		data += n;
		size -= n;
	}
	gf_reader_free(&rd);
	return 0;
}
