// SPDX-License-Identifier: Apache-2.0
/*
 * test_audit_proto.c — the C generated from proto/hodei/audit/v1/audit.proto
 * at build time speaks the wire format DESIGN.md §5 fixes: field numbers
 * and types are checked against hand-assembled protobuf bytes, and a full
 * AppendRequest survives a round trip.
 *
 * A string holding a NUL byte keeps its full length (the reason strings
 * are generated as bytes).
 */
#include <criterion/criterion.h>

#include "hodei/audit/v1/audit.pb-c.h"

#include <string.h>

/* Strings are generated as ProtobufCBinaryData (proto/CMakeLists.txt). */
#define STR(s) ((ProtobufCBinaryData){ strlen(s), (uint8_t *)(s) })
#define cr_assert_bin_str(b, s) \
	cr_assert((b).len == strlen(s) && memcmp((b).data, (s), (b).len) == 0)

Test(audit_proto, append_request_round_trip)
{
	Hodei__Audit__V1__Attribute attr = HODEI__AUDIT__V1__ATTRIBUTE__INIT;
	attr.key = STR("mfa");
	attr.value = STR("true");
	Hodei__Audit__V1__Attribute *attrs[] = { &attr };
	uint8_t id[16];
	for (int i = 0; i < 16; i++)
		id[i] = (uint8_t)i;
	Hodei__Audit__V1__AuditEvent ev = HODEI__AUDIT__V1__AUDIT_EVENT__INIT;
	ev.event_id = (ProtobufCBinaryData){ sizeof(id), id };
	ev.occurred_at_ns = 1700000000123456789ll;
	ev.actor_id = STR("user-1");
	ev.action = STR("document.delete");
	ev.outcome = HODEI__AUDIT__V1__OUTCOME__OUTCOME_DENIED;
	ev.source_ip = STR("2001:db8::1");
	ev.n_attributes = 1;
	ev.attributes = attrs;
	ev.details_json = (ProtobufCBinaryData){ 2, (uint8_t *)"{}" };
	Hodei__Audit__V1__AuditEvent *evs[] = { &ev, &ev };
	Hodei__Audit__V1__AppendRequest req = HODEI__AUDIT__V1__APPEND_REQUEST__INIT;
	req.n_events = 2;
	req.events = evs;

	size_t n = hodei__audit__v1__append_request__get_packed_size(&req);
	uint8_t buf[1024];
	cr_assert(n < sizeof(buf));
	cr_assert_eq(hodei__audit__v1__append_request__pack(&req, buf), n);
	Hodei__Audit__V1__AppendRequest *back =
		hodei__audit__v1__append_request__unpack(NULL, n, buf);
	cr_assert(back != NULL);
	cr_assert_eq(back->n_events, 2);
	const Hodei__Audit__V1__AuditEvent *e = back->events[1];
	cr_assert_eq(e->event_id.len, 16);
	cr_assert(memcmp(e->event_id.data, id, 16) == 0);
	cr_assert_eq(e->occurred_at_ns, 1700000000123456789ll);
	cr_assert_bin_str(e->actor_id, "user-1");
	cr_assert_bin_str(e->action, "document.delete");
	cr_assert_eq(e->outcome, HODEI__AUDIT__V1__OUTCOME__OUTCOME_DENIED);
	cr_assert_bin_str(e->source_ip, "2001:db8::1");
	cr_assert_eq(e->n_attributes, 1);
	cr_assert_bin_str(e->attributes[0]->key, "mfa");
	cr_assert_eq(e->details_json.len, 2);
	hodei__audit__v1__append_request__free_unpacked(back, NULL);
}

/* Field numbers are the contract: decode bytes written by hand. */
Test(audit_proto, field_numbers_match_the_design)
{
	/* AuditEvent: actor_id (3) "a", action (5) "b", outcome (8) = 2,
	 * trace_id (12) "t", details_json (14) "1". */
	static const uint8_t ev_bytes[] = { 0x1a, 1, 'a', 0x2a, 1, 'b', 0x40, 2,
					    0x62, 1, 't', 0x72, 1, '1' };
	Hodei__Audit__V1__AuditEvent *e =
		hodei__audit__v1__audit_event__unpack(NULL, sizeof(ev_bytes), ev_bytes);
	cr_assert(e != NULL);
	cr_assert_bin_str(e->actor_id, "a");
	cr_assert_bin_str(e->action, "b");
	cr_assert_eq(e->outcome, HODEI__AUDIT__V1__OUTCOME__OUTCOME_FAILURE);
	cr_assert_bin_str(e->trace_id, "t");
	cr_assert_eq(e->details_json.len, 1);
	hodei__audit__v1__audit_event__free_unpacked(e, NULL);

	/* SearchRequest: limit (9) = 5, oldest_first (11) = true, page_token (10) "x". */
	static const uint8_t sr_bytes[] = { 0x48, 5, 0x52, 1, 'x', 0x58, 1 };
	Hodei__Audit__V1__SearchRequest *s =
		hodei__audit__v1__search_request__unpack(NULL, sizeof(sr_bytes), sr_bytes);
	cr_assert(s != NULL);
	cr_assert_eq(s->limit, 5);
	cr_assert(s->oldest_first);
	cr_assert_eq(s->page_token.len, 1);
	hodei__audit__v1__search_request__free_unpacked(s, NULL);
}

Test(audit_proto, truncated_input_is_refused)
{
	static const uint8_t bytes[] = { 0x1a, 5, 'a' }; /* length 5, one byte present */
	cr_assert(hodei__audit__v1__audit_event__unpack(NULL, sizeof(bytes), bytes) == NULL);
}

/* A NUL inside a string is kept, with the bytes after it. */
Test(audit_proto, strings_keep_nul_bytes)
{
	static const uint8_t ev_bytes[] = { 0x1a, 3, 'a', 0, 'b' };
	Hodei__Audit__V1__AuditEvent *e =
		hodei__audit__v1__audit_event__unpack(NULL, sizeof(ev_bytes), ev_bytes);
	cr_assert(e != NULL);
	cr_assert_eq(e->actor_id.len, 3);
	cr_assert(memcmp(e->actor_id.data, "a\0b", 3) == 0);
	hodei__audit__v1__audit_event__free_unpacked(e, NULL);
}
