// SPDX-License-Identifier: Apache-2.0
/*
 * test_event_json.c — net/event_json.c: the JSON form of an event
 * (DESIGN.md §5). Every field in and out, every error path with the
 * message it must give, both time forms, round trips (event → JSON →
 * event, stored event → JSON → stored event), the arena's ceiling.
 */
#include <criterion/criterion.h>

#include "format/common.h"
#include "net/event_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct net_arena arena;
static char err[512];

static void setup(void)
{
	net_arena_init(&arena, 1 << 20);
	err[0] = 0;
}

static void teardown(void)
{
	net_arena_free(&arena);
}

TestSuite(event_json, .init = setup, .fini = teardown);

static int parse(const char *line, Hodei__Audit__V1__AuditEvent *ev)
{
	return net_event_parse(line, strlen(line), &arena, ev, err, sizeof(err));
}

static bool bytes_eq(ProtobufCBinaryData b, const char *s)
{
	return b.len == strlen(s) && (b.len == 0 || memcmp(b.data, s, b.len) == 0);
}

/* Parses line, expects FMT_E_INVALID and a message equal to want (or
 * starting with it when prefix is set). */
static void expect_error(const char *line, const char *want, bool prefix)
{
	Hodei__Audit__V1__AuditEvent ev;
	int rc = parse(line, &ev);
	cr_assert_eq(rc, FMT_E_INVALID, "%s: rc %d", line, rc);
	if (prefix)
		cr_assert(strncmp(err, want, strlen(want)) == 0, "%s: got '%s', want '%s...'", line,
			  err, want);
	else
		cr_assert_str_eq(err, want, "%s", line);
}

static const char full_line[] =
	"{\"event_id\":\"0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B\","
	"\"occurred_at\":\"2024-05-01T12:00:00.123456789Z\","
	"\"actor_id\":\"user-1\",\"actor_type\":\"user\",\"action\":\"document.delete\","
	"\"resource_type\":\"document\",\"resource_id\":\"doc-9\",\"outcome\":\"denied\","
	"\"source_ip\":\"2001:db8::1\",\"user_agent\":\"curl/8\",\"request_id\":\"r-1\","
	"\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\","
	"\"attributes\":{\"mfa\":\"true\",\"région\":\"eu-ouest\"},"
	"\"details\":{\"reason\":\"policy\",\"n\":[1,2.5,0.1,true,null]}}";

Test(event_json, every_field_in)
{
	Hodei__Audit__V1__AuditEvent ev;
	cr_assert_eq(parse(full_line, &ev), 0, "%s", err);
	static const uint8_t id[16] = { 0x01, 0x90, 0xa1, 0xb2, 0xc3, 0xd4, 0x7e, 0x5f,
					0x8a, 0x9b, 0x0c, 0x1d, 0x2e, 0x3f, 0x4a, 0x5b };
	cr_assert_eq(ev.event_id.len, 16);
	cr_assert(memcmp(ev.event_id.data, id, 16) == 0);
	cr_assert_eq(ev.occurred_at_ns, 1714564800123456789LL);
	cr_assert(bytes_eq(ev.actor_id, "user-1"));
	cr_assert(bytes_eq(ev.actor_type, "user"));
	cr_assert(bytes_eq(ev.action, "document.delete"));
	cr_assert(bytes_eq(ev.resource_type, "document"));
	cr_assert(bytes_eq(ev.resource_id, "doc-9"));
	cr_assert_eq(ev.outcome, HODEI__AUDIT__V1__OUTCOME__OUTCOME_DENIED);
	cr_assert(bytes_eq(ev.source_ip, "2001:db8::1"));
	cr_assert(bytes_eq(ev.user_agent, "curl/8"));
	cr_assert(bytes_eq(ev.request_id, "r-1"));
	cr_assert(bytes_eq(ev.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736"));
	cr_assert_eq(ev.n_attributes, 2);
	cr_assert(bytes_eq(ev.attributes[0]->key, "mfa"));
	cr_assert(bytes_eq(ev.attributes[0]->value, "true"));
	cr_assert(bytes_eq(ev.attributes[1]->key, "région"));
	cr_assert(bytes_eq(ev.attributes[1]->value, "eu-ouest"));
	/* details: compact, key order kept, reals in their shortest form. */
	cr_assert(bytes_eq(ev.details_json, "{\"reason\":\"policy\",\"n\":[1,2.5,0.1,true,null]}"),
		  "%.*s", (int)ev.details_json.len, ev.details_json.data);

	/* The event packs into a valid AppendRequest. */
	Hodei__Audit__V1__AuditEvent *evs[] = { &ev };
	Hodei__Audit__V1__AppendRequest req = HODEI__AUDIT__V1__APPEND_REQUEST__INIT;
	req.n_events = 1;
	req.events = evs;
	uint8_t buf[2048];
	size_t n = hodei__audit__v1__append_request__get_packed_size(&req);
	cr_assert(n < sizeof(buf));
	hodei__audit__v1__append_request__pack(&req, buf);
	Hodei__Audit__V1__AppendRequest *back = hodei__audit__v1__append_request__unpack(NULL, n, buf);
	cr_assert(back && back->n_events == 1);
	cr_assert(bytes_eq(back->events[0]->action, "document.delete"));
	hodei__audit__v1__append_request__free_unpacked(back, NULL);
}

Test(event_json, minimal_event_and_defaults)
{
	Hodei__Audit__V1__AuditEvent ev;
	cr_assert_eq(parse("{\"actor_id\":\"a\",\"action\":\"b\"}\n", &ev), 0, "%s", err);
	cr_assert_eq(ev.event_id.len, 0);
	cr_assert_eq(ev.occurred_at_ns, 0);
	cr_assert_eq(ev.outcome, 0);
	cr_assert_eq(ev.n_attributes, 0);
	cr_assert_eq(ev.details_json.len, 0);
	cr_assert_eq(ev.actor_type.len, 0);
	/* An empty object is an event with nothing set: the server says what
	 * is missing. */
	cr_assert_eq(parse("{}", &ev), 0);
}

Test(event_json, null_means_absent_except_details)
{
	Hodei__Audit__V1__AuditEvent ev;
	cr_assert_eq(parse("{\"actor_id\":\"a\",\"action\":\"b\",\"event_id\":null,\"outcome\":null,"
			   "\"occurred_at\":null,\"attributes\":null,\"resource_id\":null}",
			   &ev),
		     0, "%s", err);
	cr_assert_eq(ev.event_id.len, 0);
	cr_assert_eq(ev.outcome, 0);
	cr_assert_eq(ev.resource_id.len, 0);
	cr_assert_eq(parse("{\"details\":null}", &ev), 0);
	cr_assert(bytes_eq(ev.details_json, "null"));
}

Test(event_json, details_any_value)
{
	static const struct {
		const char *in, *stored;
	} cases[] = {
		{ "\"text\"", "\"text\"" },
		{ "42", "42" },
		{ "-1.5e3", "-1500.0" },
		{ "1.5e20", "1.5e20" },
		{ "-1500.0", "-1500.0" },
		{ "true", "true" },
		{ "[ 1 , { \"a\" : [ ] } ]", "[1,{\"a\":[]}]" },
		{ "{\"z\":1,\"a\":2}", "{\"z\":1,\"a\":2}" },
		{ "\"caf\\u00e9 \\ud83d\\ude00\"", "\"café 😀\"" },
		{ "1e300", "1e300" },
	};
	for (size_t i = 0; i < FMT_ARRAY_LEN(cases); i++) {
		char line[256];
		snprintf(line, sizeof(line), "{\"details\":%s}", cases[i].in);
		Hodei__Audit__V1__AuditEvent ev;
		cr_assert_eq(parse(line, &ev), 0, "%s: %s", line, err);
		cr_assert(bytes_eq(ev.details_json, cases[i].stored), "%s -> %.*s", cases[i].in,
			  (int)ev.details_json.len, ev.details_json.data);
	}
}

Test(event_json, occurred_at_forms)
{
	static const struct {
		const char *text;
		int64_t ns;
	} cases[] = {
		{ "1970-01-01T00:00:00Z", 0 },
		{ "2024-05-01T12:00:00Z", 1714564800000000000LL },
		{ "2024-05-01t12:00:00.5z", 1714564800500000000LL },
		{ "2024-05-01 12:00:00.000000001Z", 1714564800000000001LL },
		{ "2024-05-01T14:00:00+02:00", 1714564800000000000LL },
		{ "2024-05-01T07:30:00.25-04:30", 1714564800250000000LL },
		{ "2024-02-29T00:00:00Z", 1709164800000000000LL },
		{ "2000-02-29T23:59:59.999999999Z", 951868799999999999LL },
		{ "1969-12-31T23:59:59.9Z", -100000000LL },
		{ "1677-09-21T00:12:43.145224192Z", INT64_MIN },
		{ "2262-04-11T23:47:16.854775807Z", INT64_MAX },
	};
	for (size_t i = 0; i < FMT_ARRAY_LEN(cases); i++) {
		char line[128];
		snprintf(line, sizeof(line), "{\"occurred_at\":\"%s\"}", cases[i].text);
		Hodei__Audit__V1__AuditEvent ev;
		cr_assert_eq(parse(line, &ev), 0, "%s: %s", line, err);
		cr_assert_eq(ev.occurred_at_ns, cases[i].ns, "%s: %lld", cases[i].text,
			     (long long)ev.occurred_at_ns);
	}
	Hodei__Audit__V1__AuditEvent ev;
	cr_assert_eq(parse("{\"occurred_at_ns\":1714564800123456789}", &ev), 0, "%s", err);
	cr_assert_eq(ev.occurred_at_ns, 1714564800123456789LL);
	cr_assert_eq(parse("{\"occurred_at_ns\":-5}", &ev), 0, "%s", err);
	cr_assert_eq(ev.occurred_at_ns, -5);
}

Test(event_json, time_format)
{
	char out[NET_TIME_TEXT_MAX];
	net_time_format(0, out);
	cr_assert_str_eq(out, "1970-01-01T00:00:00.000000000Z");
	net_time_format(1714564800123456789LL, out);
	cr_assert_str_eq(out, "2024-05-01T12:00:00.123456789Z");
	net_time_format(-1, out);
	cr_assert_str_eq(out, "1969-12-31T23:59:59.999999999Z");
	net_time_format(INT64_MIN, out);
	cr_assert_str_eq(out, "1677-09-21T00:12:43.145224192Z");
	net_time_format(INT64_MAX, out);
	cr_assert_str_eq(out, "2262-04-11T23:47:16.854775807Z");
	/* Every format parses back to the same instant. */
	for (int64_t ns = -3000000000000000000LL; ns < 3000000000000000000LL;
	     ns += 77777777777777777LL) {
		int64_t back;
		const char *why;
		net_time_format(ns, out);
		cr_assert_eq(net_time_parse(out, strlen(out), &back, &why), 0, "%s", out);
		cr_assert_eq(back, ns, "%s", out);
	}
}

Test(event_json, bad_times)
{
	static const struct {
		const char *text, *why;
	} cases[] = {
		{ "2024-05-01", "want YYYY-MM-DDThh:mm:ss[.fraction](Z|±hh:mm)" },
		{ "2024-05-01T12:00:00", "missing zone (want Z or ±hh:mm)" },
		{ "2024-05-01T12:00Z", "want YYYY-MM-DDThh:mm:ss[.fraction](Z|±hh:mm)" },
		{ "24-05-01T12:00:00Z", "want YYYY-MM-DDThh:mm:ss[.fraction](Z|±hh:mm)" },
		{ "2024-13-01T12:00:00Z", "no such date" },
		{ "2023-02-29T12:00:00Z", "no such date" },
		{ "2024-04-31T12:00:00Z", "no such date" },
		{ "2024-05-00T12:00:00Z", "no such date" },
		{ "2024-05-01T24:00:00Z", "no such time of day" },
		{ "2024-05-01T12:60:00Z", "no such time of day" },
		{ "2024-12-31T23:59:60Z", "leap second 60 is not supported" },
		{ "2024-05-01T12:00:00.1234567891Z", "more than 9 fractional digits" },
		{ "2024-05-01T12:00:00.Z", "no digits after '.'" },
		{ "2024-05-01T12:00:00+0200", "bad zone offset (want Z or ±hh:mm)" },
		{ "2024-05-01T12:00:00+24:00", "bad zone offset (want Z or ±hh:mm)" },
		{ "2024-05-01T12:00:00Zjunk", "trailing characters" },
		{ "2024-05-01T12:00:00 Z", "missing zone (want Z or ±hh:mm)" },
		{ "3000-01-01T00:00:00Z", "outside the range of Unix nanoseconds in int64 (1677..2262)" },
		{ "1600-01-01T00:00:00Z", "outside the range of Unix nanoseconds in int64 (1677..2262)" },
		{ "", "want YYYY-MM-DDThh:mm:ss[.fraction](Z|±hh:mm)" },
	};
	for (size_t i = 0; i < FMT_ARRAY_LEN(cases); i++) {
		char line[160], want[200];
		snprintf(line, sizeof(line), "{\"occurred_at\":\"%s\"}", cases[i].text);
		snprintf(want, sizeof(want), "occurred_at: not RFC 3339: %s", cases[i].why);
		expect_error(line, want, false);
	}
	expect_error("{\"occurred_at\":1714564800}", "occurred_at: must be an RFC 3339 string", false);
	expect_error("{\"occurred_at_ns\":\"1714564800\"}",
		     "occurred_at_ns: must be an integer (Unix time in ns)", false);
	expect_error("{\"occurred_at_ns\":1.5e18}", "occurred_at_ns: must be an integer (Unix time in ns)",
		     false);
	expect_error("{\"occurred_at_ns\":5,\"occurred_at\":\"2024-05-01T12:00:00Z\"}",
		     "occurred_at_ns: give occurred_at or occurred_at_ns, not both", false);
	expect_error("{\"occurred_at_ns\":99999999999999999999}", "not valid JSON: too big integer", true);
}

Test(event_json, bad_event_ids)
{
	static const char *const bad[] = {
		"0190a1b2c3d47e5f8a9b0c1d2e3f4a5b",       /* no dashes */
		"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5",    /* short */
		"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b0",  /* long */
		"{0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b}", /* braces */
		"0190a1b2-c3d4-7e5f-8a9b_0c1d2e3f4a5b",   /* wrong separator */
		"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5g",   /* not hex */
		"0190a1b-2c3d4-7e5f-8a9b-0c1d2e3f4a5b",   /* dash misplaced */
		"",
	};
	for (size_t i = 0; i < FMT_ARRAY_LEN(bad); i++) {
		char line[128];
		snprintf(line, sizeof(line), "{\"event_id\":\"%s\"}", bad[i]);
		expect_error(line, "event_id: not a canonical UUID (want 8-4-4-4-12 hex digits)", false);
	}
	expect_error("{\"event_id\":42}", "event_id: must be a string (a canonical UUID)", false);
}

Test(event_json, bad_fields)
{
	expect_error("{\"foo\":1}", "unknown field \"foo\"", false);
	expect_error("{\"actor_id\":\"a\",\"Action\":\"x\"}", "unknown field \"Action\"", false);
	expect_error("{\"occurredAt\":\"x\"}", "unknown field \"occurredAt\"", false);
	expect_error("{\"a\\nb\\\"c\":1}", "unknown field \"a?b?c\"", false);
	expect_error("{\"actor_id\":5}", "actor_id: must be a string", false);
	expect_error("{\"trace_id\":[]}", "trace_id: must be a string", false);
	expect_error("{\"user_agent\":true}", "user_agent: must be a string", false);
	expect_error("{\"outcome\":\"SUCCESS\"}",
		     "outcome: must be \"success\", \"failure\" or \"denied\"", false);
	expect_error("{\"outcome\":1}", "outcome: must be \"success\", \"failure\" or \"denied\"",
		     false);
	expect_error("{\"outcome\":\"unspecified\"}",
		     "outcome: must be \"success\", \"failure\" or \"denied\"", false);
	expect_error("{\"attributes\":[\"a\"]}", "attributes: must be an object of string values",
		     false);
	expect_error("{\"attributes\":{\"x\":1}}", "attributes.x: value must be a string", false);
	expect_error("{\"attributes\":{\"ok\":\"1\",\"x\":null}}",
		     "attributes.x: value must be a string", false);
	expect_error("{\"attributes\":{\"y\":{\"z\":\"1\"}}}", "attributes.y: value must be a string",
		     false);
	/* Server-assigned fields are refused in an event to append. */
	expect_error("{\"seq\":1}",
		     "seq: assigned by the server (found in search output); not accepted in an event "
		     "to append",
		     false);
	expect_error("{\"tenant_id\":\"t\"}", "tenant_id: assigned by the server", true);
	expect_error("{\"received_at\":\"2024-05-01T12:00:00Z\"}", "received_at: assigned by the server",
		     true);
	expect_error("{\"chain_hash\":\"00\"}", "chain_hash: assigned by the server", true);
	/* A very long unknown name is cut in the message. */
	char line[400], want[200];
	snprintf(line, sizeof(line), "{\"%0200d\":1}", 7);
	snprintf(want, sizeof(want), "unknown field \"%064d...\"", 0);
	expect_error(line, want, false);
}

Test(event_json, not_json_or_not_an_object)
{
	expect_error("", "not valid JSON:", true);
	expect_error("{\"actor_id\":\"a\"", "not valid JSON:", true);
	expect_error("{\"actor_id\":\"a\"} {}", "not valid JSON: end of file expected", true);
	expect_error("[{\"actor_id\":\"a\"}]", "an event must be a JSON object", false);
	expect_error("{\"actor_id\":\"a\",\"actor_id\":\"b\"}", "not valid JSON: duplicate object key",
		     true);
	expect_error("{'actor_id':'a'}", "not valid JSON:", true);
	Hodei__Audit__V1__AuditEvent ev;
	cr_assert_eq(net_event_parse("\"x\"", 3, &arena, &ev, err, sizeof(err)), FMT_E_INVALID);
	/* from_json refuses anything but an object too. */
	json_t *arr = json_array();
	cr_assert_eq(net_event_from_json(arr, &arena, &ev, err, sizeof(err)), FMT_E_INVALID);
	cr_assert_str_eq(err, "an event must be a JSON object");
	json_decref(arr);
}

Test(event_json, invalid_utf8_and_nul)
{
	/* Raw bytes that are not UTF-8, in a value and in a key. */
	expect_error("{\"actor_id\":\"\xff\"}", "not valid JSON: unable to decode byte 0xff", true);
	expect_error("{\"actor_id\":\"\xc0\xaf\"}", "not valid JSON: unable to decode byte 0xc0", true);
	expect_error("{\"\xed\xa0\x80\":\"x\"}", "not valid JSON: unable to decode byte 0xed", true);
	expect_error("{\"actor_id\":\"a\xe2\x82\"}", "not valid JSON:", true);
	/* Escapes that are not a Unicode scalar value. */
	expect_error("{\"actor_id\":\"\\ud800\"}", "not valid JSON: invalid Unicode '\\uD800'", true);
	expect_error("{\"actor_id\":\"\\udc00x\"}", "not valid JSON: invalid Unicode", true);
	/* NUL is refused, with a message that says so. */
	expect_error("{\"actor_id\":\"a\\u0000b\"}", "a string holds \\u0000 (NUL), which is not accepted",
		     true);
	/* A length that cuts a line short leaves an incomplete document. */
	Hodei__Audit__V1__AuditEvent ev;
	const char *line = "{\"actor_id\":\"abc\"}";
	cr_assert_eq(net_event_parse(line, 10, &arena, &ev, err, sizeof(err)), FMT_E_INVALID);
	/* Valid multi-byte UTF-8 is kept byte for byte. */
	cr_assert_eq(parse("{\"actor_id\":\"Zoë 日本 😀\"}", &ev), 0, "%s", err);
	cr_assert(bytes_eq(ev.actor_id, "Zoë 日本 😀"));
}

static char *dump_event(const Hodei__Audit__V1__AuditEvent *ev)
{
	json_t *o = net_event_to_json(ev);
	cr_assert(o != NULL);
	char *s = net_json_dump(o);
	json_decref(o);
	cr_assert(s != NULL);
	return s;
}

static bool bin_eq(ProtobufCBinaryData a, ProtobufCBinaryData b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}

static void assert_events_equal(const Hodei__Audit__V1__AuditEvent *a,
				const Hodei__Audit__V1__AuditEvent *b)
{
	cr_assert(bin_eq(a->event_id, b->event_id));
	cr_assert_eq(a->occurred_at_ns, b->occurred_at_ns);
	cr_assert(bin_eq(a->actor_id, b->actor_id));
	cr_assert(bin_eq(a->actor_type, b->actor_type));
	cr_assert(bin_eq(a->action, b->action));
	cr_assert(bin_eq(a->resource_type, b->resource_type));
	cr_assert(bin_eq(a->resource_id, b->resource_id));
	cr_assert_eq(a->outcome, b->outcome);
	cr_assert(bin_eq(a->source_ip, b->source_ip));
	cr_assert(bin_eq(a->user_agent, b->user_agent));
	cr_assert(bin_eq(a->request_id, b->request_id));
	cr_assert(bin_eq(a->trace_id, b->trace_id));
	cr_assert_eq(a->n_attributes, b->n_attributes);
	for (size_t i = 0; i < a->n_attributes; i++) {
		cr_assert(bin_eq(a->attributes[i]->key, b->attributes[i]->key));
		cr_assert(bin_eq(a->attributes[i]->value, b->attributes[i]->value));
	}
	cr_assert(bin_eq(a->details_json, b->details_json), "%.*s vs %.*s", (int)a->details_json.len,
		  a->details_json.data, (int)b->details_json.len, b->details_json.data);
}

Test(event_json, event_round_trip)
{
	static const char *const lines[] = {
		full_line,
		"{\"actor_id\":\"a\",\"action\":\"b\"}",
		"{\"actor_id\":\"a\",\"action\":\"b\",\"outcome\":\"success\",\"occurred_at_ns\":1}",
		"{\"actor_id\":\"a\",\"action\":\"b\",\"outcome\":\"failure\",\"details\":null}",
		"{\"occurred_at\":\"1969-07-20T20:17:40.000000001-05:00\",\"details\":[0.30000000000000004]}",
		"{\"attributes\":{},\"details\":\"\\\"quoted\\\" \\\\ \\n\"}",
	};
	for (size_t i = 0; i < FMT_ARRAY_LEN(lines); i++) {
		Hodei__Audit__V1__AuditEvent a, b;
		cr_assert_eq(parse(lines[i], &a), 0, "%s: %s", lines[i], err);
		char *text = dump_event(&a);
		cr_assert(strchr(text, '\n') == NULL);
		cr_assert_eq(parse(text, &b), 0, "%s: %s", text, err);
		assert_events_equal(&a, &b);
		/* And printing again gives the same text. */
		char *again = dump_event(&b);
		cr_assert_str_eq(text, again);
		free(text);
		free(again);
	}
}

Test(event_json, output_form)
{
	Hodei__Audit__V1__AuditEvent ev;
	cr_assert_eq(parse(full_line, &ev), 0, "%s", err);
	char *text = dump_event(&ev);
	cr_assert_str_eq(text,
			 "{\"event_id\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\","
			 "\"occurred_at\":\"2024-05-01T12:00:00.123456789Z\","
			 "\"actor_id\":\"user-1\",\"actor_type\":\"user\",\"action\":\"document.delete\","
			 "\"resource_type\":\"document\",\"resource_id\":\"doc-9\",\"outcome\":\"denied\","
			 "\"source_ip\":\"2001:db8::1\",\"user_agent\":\"curl/8\",\"request_id\":\"r-1\","
			 "\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\","
			 "\"attributes\":{\"mfa\":\"true\",\"région\":\"eu-ouest\"},"
			 "\"details\":{\"reason\":\"policy\",\"n\":[1,2.5,0.1,true,null]}}");
	free(text);
	/* Empty strings, outcome unset, no attributes: omitted. */
	Hodei__Audit__V1__AuditEvent empty = HODEI__AUDIT__V1__AUDIT_EVENT__INIT;
	text = dump_event(&empty);
	cr_assert_str_eq(text, "{}");
	free(text);
}

Test(event_json, output_of_unexpected_bytes)
{
	/* What a conforming server never sends is still shown, not dropped. */
	Hodei__Audit__V1__AuditEvent ev = HODEI__AUDIT__V1__AUDIT_EVENT__INIT;
	uint8_t id[3] = { 0xab, 0xcd, 0xef };
	ev.event_id = (ProtobufCBinaryData){ 3, id };
	ev.actor_id = (ProtobufCBinaryData){ 3, (uint8_t *)"a\xff" "b" };
	ev.details_json = (ProtobufCBinaryData){ 4, (uint8_t *)"{bad" };
	ev.outcome = 9;
	char *text = dump_event(&ev);
	cr_assert_str_eq(text, "{\"event_id\":\"abcdef\",\"actor_id\":\"a\xef\xbf\xbd" "b\","
			       "\"outcome\":9,\"details\":\"{bad\"}");
	free(text);
}

Test(event_json, stored_event_round_trip)
{
	Hodei__Audit__V1__AuditEvent ev;
	cr_assert_eq(parse(full_line, &ev), 0, "%s", err);
	uint8_t chain[32];
	for (int i = 0; i < 32; i++)
		chain[i] = (uint8_t)(i * 7 + 1);
	Hodei__Audit__V1__StoredEvent se = HODEI__AUDIT__V1__STORED_EVENT__INIT;
	se.event = &ev;
	se.tenant_id = (ProtobufCBinaryData){ 4, (uint8_t *)"acme" };
	se.seq = 42;
	se.received_at_ns = 1714564801000000001LL;
	se.chain_hash = (ProtobufCBinaryData){ 32, chain };
	json_t *o = net_stored_event_to_json(&se);
	char *text = net_json_dump(o);
	json_decref(o);
	cr_assert(strncmp(text, "{\"tenant_id\":\"acme\",\"seq\":42,\"event_id\":", 39) == 0, "%s",
		  text);
	cr_assert(strstr(text, "\"received_at\":\"2024-05-01T12:00:01.000000001Z\"") != NULL, "%s",
		  text);
	cr_assert(strstr(text, "\"chain_hash\":\"01080f161d242b323940474e555c636a71787f868d949ba2a9b0b7bec5ccd3da\"}") !=
			  NULL,
		  "%s", text);

	Hodei__Audit__V1__StoredEvent back;
	cr_assert_eq(net_stored_event_parse(text, strlen(text), &arena, &back, err, sizeof(err)), 0,
		     "%s", err);
	cr_assert(bin_eq(back.tenant_id, se.tenant_id));
	cr_assert_eq(back.seq, 42);
	cr_assert_eq(back.received_at_ns, se.received_at_ns);
	cr_assert(bin_eq(back.chain_hash, se.chain_hash));
	assert_events_equal(&ev, back.event);
	free(text);

	/* A stored event's event part is not an event to append. */
	Hodei__Audit__V1__AuditEvent again;
	cr_assert_eq(parse("{\"seq\":1,\"actor_id\":\"a\"}", &again), FMT_E_INVALID);
	/* Bad stored fields. */
	static const struct {
		const char *line, *want;
	} bad[] = {
		{ "{\"seq\":-1}", "seq: must be a non-negative integer" },
		{ "{\"seq\":\"1\"}", "seq: must be a non-negative integer" },
		{ "{\"chain_hash\":\"00\"}", "chain_hash: must be 64 hex digits" },
		{ "{\"chain_hash\":\"zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"}",
		  "chain_hash: must be 64 hex digits" },
		{ "{\"received_at\":5}", "received_at: must be an RFC 3339 string" },
		{ "{\"tenant_id\":5}", "tenant_id: must be a string" },
	};
	for (size_t i = 0; i < FMT_ARRAY_LEN(bad); i++) {
		cr_assert_eq(net_stored_event_parse(bad[i].line, strlen(bad[i].line), &arena, &back,
						    err, sizeof(err)),
			     FMT_E_INVALID, "%s", bad[i].line);
		cr_assert_str_eq(err, bad[i].want);
	}
}

Test(event_json, json_dump_reals)
{
	json_t *v = json_loads("[0.1,1.5,1e300,3.0,-0.0,1e-7,2.5e-3]", 0, NULL);
	char *s = net_json_dump(v);
	cr_assert_str_eq(s, "[0.1,1.5,1e300,3.0,-0.0,1e-7,0.0025]");
	free(s);
	json_decref(v);
	/* One value that needs 17 digits sets the precision for the whole
	 * document (jansson has one precision per dump): still exact. */
	v = json_loads("[0.1,123456789.123456789]", 0, NULL);
	s = net_json_dump(v);
	cr_assert_str_eq(s, "[0.10000000000000001,123456789.12345679]");
	json_t *back = json_loads(s, 0, NULL);
	cr_assert(json_equal(v, back));
	json_decref(back);
	free(s);
	json_decref(v);
	v = json_real(0.30000000000000004);
	s = net_json_dump(v);
	cr_assert_str_eq(s, "0.30000000000000004");
	free(s);
	json_decref(v);
}

Test(event_json, arena_ceiling_and_reuse)
{
	struct net_arena small;
	net_arena_init(&small, 256);
	Hodei__Audit__V1__AuditEvent ev;
	char line[1024];
	snprintf(line, sizeof(line), "{\"actor_id\":\"%0300d\"}", 1);
	cr_assert_eq(net_event_parse(line, strlen(line), &small, &ev, err, sizeof(err)), FMT_E_NOMEM);
	cr_assert_str_eq(err, "actor_id: out of memory");
	cr_assert(net_arena_alloc(&small, 200) != NULL);
	cr_assert(net_arena_alloc(&small, 100) == NULL);
	net_arena_reset(&small);
	cr_assert_eq(small.used_bytes, 0);
	cr_assert(net_arena_alloc(&small, 256) != NULL);
	cr_assert(net_arena_alloc(&small, 1) == NULL);
	cr_assert(net_arena_alloc(&small, SIZE_MAX) == NULL);
	net_arena_free(&small);
	/* Many events in one arena stay valid until the reset. */
	struct net_arena big;
	net_arena_init(&big, 64 << 20);
	Hodei__Audit__V1__AuditEvent evs[2000];
	for (int i = 0; i < 2000; i++) {
		snprintf(line, sizeof(line), "{\"actor_id\":\"user-%d\",\"attributes\":{\"i\":\"%d\"}}", i, i);
		cr_assert_eq(net_event_parse(line, strlen(line), &big, &evs[i], err, sizeof(err)), 0);
	}
	for (int i = 0; i < 2000; i++) {
		char want[32];
		snprintf(want, sizeof(want), "user-%d", i);
		cr_assert(bytes_eq(evs[i].actor_id, want));
	}
	net_arena_free(&big);
}
