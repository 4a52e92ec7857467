// SPDX-License-Identifier: Apache-2.0
/*
 * test_event.c — format/event.c: validation against every limit of
 * DESIGN.md §5 (at the limit and one past it), UTF-8 and field syntax
 * checks, the canonical encoding (round trips, every truncation, trailing
 * bytes, versions) and UUIDs.
 *
 * The golden vector pins the on-disk format: its expected SHA-256 was
 * computed once, independently of this code, by a Python script that
 * follows the encoding documented at the top of event.c (struct.pack with
 * '<' for every integer, u32 length prefixes). If it changes, the canonical
 * encoding changed, and every stored event hash with it.
 */
#include <criterion/criterion.h>

#include "format/event.h"
#include "format/hash.h"

#include <stdio.h>
#include <stdlib.h>

/* Bytes of 'a' long enough for the largest limit plus one. */
#define FILL_BYTES (16 * 1024 + 16)
static char fill_buf[FILL_BYTES];

static struct fmt_str fill(uint32_t n)
{
	ASSERT(n <= FILL_BYTES);
	if (fill_buf[0] != 'a')
		memset(fill_buf, 'a', sizeof(fill_buf));
	struct fmt_str s = { fill_buf, n };
	return s;
}

static struct fmt_str str_n(const char *p, uint32_t n)
{
	struct fmt_str s = { p, n };
	return s;
}

static struct fmt_attr golden_attrs[2];

/* The golden event: every field set, two attributes, one of them not ASCII. */
static void golden_event(struct fmt_event *ev)
{
	memset(ev, 0, sizeof(*ev));
	for (int i = 0; i < 16; i++)
		ev->event_id[i] = (uint8_t)i;
	ev->tenant = fmt_str_c("acme");
	ev->seq = 42;
	ev->received_at_ns = 1700000000123456789LL;
	ev->occurred_at_ns = 1700000000000000000LL;
	ev->outcome = FMT_OUTCOME_SUCCESS;
	ev->str[FMT_F_ACTOR_ID] = fmt_str_c("alice");
	ev->str[FMT_F_ACTOR_TYPE] = fmt_str_c("user");
	ev->str[FMT_F_ACTION] = fmt_str_c("document.delete");
	ev->str[FMT_F_RESOURCE_TYPE] = fmt_str_c("document");
	ev->str[FMT_F_RESOURCE_ID] = fmt_str_c("doc-123");
	ev->str[FMT_F_SOURCE_IP] = fmt_str_c("192.0.2.1");
	ev->str[FMT_F_USER_AGENT] = fmt_str_c("curl/8.0");
	ev->str[FMT_F_REQUEST_ID] = fmt_str_c("req-1");
	ev->str[FMT_F_TRACE_ID] = fmt_str_c("4bf92f3577b34da6a3ce929d0e0e4736");
	golden_attrs[0].key = fmt_str_c("k1");
	golden_attrs[0].value = fmt_str_c("v1");
	golden_attrs[1].key = fmt_str_c("r\xc3\xa9gion");      /* "région" */
	golden_attrs[1].value = fmt_str_c("\xe2\x82\xacuro"); /* "€uro" */
	ev->attrs = golden_attrs;
	ev->attr_count = 2;
	ev->details_json = fmt_str_c("{\"reason\":\"cleanup\"}");
}

/* A minimal valid client event. */
static void base_event(struct fmt_event *ev)
{
	memset(ev, 0, sizeof(*ev));
	ev->str[FMT_F_ACTOR_ID] = fmt_str_c("alice");
	ev->str[FMT_F_ACTION] = fmt_str_c("login");
}

static int validate(const struct fmt_event *ev, struct fmt_invalid *why)
{
	struct fmt_limits l;
	fmt_limits_default(&l);
	memset(why, 0, sizeof(*why));
	return fmt_event_validate(ev, &l, why);
}

static void expect_invalid(const struct fmt_event *ev, const char *field)
{
	struct fmt_invalid why;
	int rc = validate(ev, &why);
	cr_assert_eq(rc, FMT_E_INVALID, "expected %s invalid, got %d", field, rc);
	cr_assert_not_null(why.field);
	cr_assert_not_null(why.reason);
	cr_assert_str_eq(why.field, field);
}

static void expect_valid(const struct fmt_event *ev)
{
	struct fmt_invalid why;
	int rc = validate(ev, &why);
	cr_assert_eq(rc, 0, "expected valid, got %d (%s: %s)", rc, why.field ? why.field : "-",
		     why.reason ? why.reason : "-");
}

/* ---- validation ---------------------------------------------------------- */

Test(event_validate, defaults_match_design)
{
	struct fmt_limits l;
	fmt_limits_default(&l);
	cr_assert_eq(l.actor_id_max, 512);
	cr_assert_eq(l.resource_id_max, 512);
	cr_assert_eq(l.short_field_max, 128);
	cr_assert_eq(l.user_agent_max, 512);
	cr_assert_eq(l.request_id_max, 128);
	cr_assert_eq(l.attrs_max, 32);
	cr_assert_eq(l.attr_key_max, 64);
	cr_assert_eq(l.attr_value_max, 1024);
	cr_assert_eq(l.details_json_max, 16384);
	cr_assert_eq(l.events_per_batch_max, 10000);
	cr_assert_null(l.details_json_valid);
}

Test(event_validate, base_and_golden_are_valid)
{
	struct fmt_event ev;
	base_event(&ev);
	expect_valid(&ev);
	golden_event(&ev);
	expect_valid(&ev);
	struct fmt_invalid why;
	struct fmt_limits l;
	fmt_limits_default(&l);
	cr_assert_eq(fmt_event_validate(&ev, &l, NULL), 0);
	ev.outcome = 9;
	cr_assert_eq(fmt_event_validate(&ev, &l, NULL), FMT_E_INVALID, "why may be NULL");
	(void)why;
}

Test(event_validate, string_field_limits)
{
	static const struct {
		enum fmt_field f;
		uint32_t limit;
		const char *name;
	} cases[] = {
		{ FMT_F_ACTOR_ID, 512, "actor_id" },
		{ FMT_F_RESOURCE_ID, 512, "resource_id" },
		{ FMT_F_ACTION, 128, "action" },
		{ FMT_F_ACTOR_TYPE, 128, "actor_type" },
		{ FMT_F_RESOURCE_TYPE, 128, "resource_type" },
		{ FMT_F_USER_AGENT, 512, "user_agent" },
		{ FMT_F_REQUEST_ID, 128, "request_id" },
	};
	for (size_t i = 0; i < FMT_ARRAY_LEN(cases); i++) {
		struct fmt_event ev;
		base_event(&ev);
		ev.str[cases[i].f] = fill(cases[i].limit);
		expect_valid(&ev);
		ev.str[cases[i].f] = fill(cases[i].limit + 1);
		struct fmt_invalid why;
		cr_assert_eq(validate(&ev, &why), FMT_E_INVALID, "%s at limit+1", cases[i].name);
		cr_assert_str_eq(why.field, cases[i].name);
		cr_assert_eq(why.limit, cases[i].limit, "%s limit", cases[i].name);
		cr_assert_str_eq(fmt_field_name(cases[i].f), cases[i].name);
	}
}

Test(event_validate, field_names)
{
	static const char *const names[FMT_F_STRING_COUNT] = {
		"actor_id", "actor_type", "action", "resource_type", "resource_id",
		"source_ip", "user_agent", "request_id", "trace_id",
	};
	for (int f = 0; f < FMT_F_STRING_COUNT; f++)
		cr_assert_str_eq(fmt_field_name((enum fmt_field)f), names[f]);
}

Test(event_validate, limits_are_configurable)
{
	struct fmt_limits l;
	fmt_limits_default(&l);
	l.actor_id_max = 4;
	struct fmt_event ev;
	base_event(&ev);
	ev.str[FMT_F_ACTOR_ID] = fill(4);
	cr_assert_eq(fmt_event_validate(&ev, &l, NULL), 0);
	ev.str[FMT_F_ACTOR_ID] = fill(5);
	cr_assert_eq(fmt_event_validate(&ev, &l, NULL), FMT_E_INVALID);
}

Test(event_validate, required_fields)
{
	struct fmt_event ev;
	struct fmt_invalid why;
	base_event(&ev);
	ev.str[FMT_F_ACTOR_ID] = str_n(NULL, 0);
	cr_assert_eq(validate(&ev, &why), FMT_E_INVALID);
	cr_assert_str_eq(why.field, "actor_id");
	cr_assert_str_eq(why.reason, "required");

	base_event(&ev);
	ev.str[FMT_F_ACTION] = str_n("", 0);
	cr_assert_eq(validate(&ev, &why), FMT_E_INVALID);
	cr_assert_str_eq(why.field, "action");
	cr_assert_str_eq(why.reason, "required");

	/* Every other string may be empty. */
	base_event(&ev);
	expect_valid(&ev);
}

Test(event_validate, attribute_count)
{
	static struct fmt_attr attrs[33];
	static char keys[33][4];
	for (int i = 0; i < 33; i++) {
		snprintf(keys[i], sizeof(keys[i]), "k%d", i);
		attrs[i].key = fmt_str_c(keys[i]);
		attrs[i].value = fmt_str_c("v");
	}
	struct fmt_event ev;
	struct fmt_invalid why;
	base_event(&ev);
	ev.attrs = attrs;
	ev.attr_count = 32;
	expect_valid(&ev);
	ev.attr_count = 33;
	cr_assert_eq(validate(&ev, &why), FMT_E_INVALID);
	cr_assert_str_eq(why.field, "attributes");
	cr_assert_eq(why.limit, 32);
}

Test(event_validate, attribute_key_and_value_limits)
{
	struct fmt_attr a;
	struct fmt_event ev;
	struct fmt_invalid why;
	base_event(&ev);
	ev.attrs = &a;
	ev.attr_count = 1;

	a.key = fill(64);
	a.value = fill(1024);
	expect_valid(&ev);

	a.key = fill(65);
	cr_assert_eq(validate(&ev, &why), FMT_E_INVALID);
	cr_assert_str_eq(why.field, "attributes.key");
	cr_assert_eq(why.limit, 64);

	a.key = fill(64);
	a.value = fill(1025);
	cr_assert_eq(validate(&ev, &why), FMT_E_INVALID);
	cr_assert_str_eq(why.field, "attributes.value");
	cr_assert_eq(why.limit, 1024);

	a.key = str_n("", 0);
	a.value = fmt_str_c("v");
	cr_assert_eq(validate(&ev, &why), FMT_E_INVALID);
	cr_assert_str_eq(why.field, "attributes.key");
	cr_assert_str_eq(why.reason, "empty");

	/* An empty value is allowed. */
	a.key = fmt_str_c("k");
	a.value = str_n(NULL, 0);
	expect_valid(&ev);
}

Test(event_validate, details_json_limit)
{
	struct fmt_event ev;
	struct fmt_invalid why;
	base_event(&ev);
	ev.details_json = fill(16384);
	expect_valid(&ev);
	ev.details_json = fill(16385);
	cr_assert_eq(validate(&ev, &why), FMT_E_INVALID);
	cr_assert_str_eq(why.field, "details_json");
	cr_assert_eq(why.limit, 16384);
}

static bool json_is_object(const char *json, size_t len)
{
	return len >= 2 && json[0] == '{' && json[len - 1] == '}';
}

Test(event_validate, details_json_hook)
{
	struct fmt_limits l;
	fmt_limits_default(&l);
	l.details_json_valid = json_is_object;
	struct fmt_event ev;
	struct fmt_invalid why;
	base_event(&ev);
	ev.details_json = fmt_str_c("{}");
	cr_assert_eq(fmt_event_validate(&ev, &l, &why), 0);
	ev.details_json = fmt_str_c("{");
	cr_assert_eq(fmt_event_validate(&ev, &l, &why), FMT_E_INVALID);
	cr_assert_str_eq(why.field, "details_json");
	/* Empty details are not passed to the hook. */
	ev.details_json = str_n(NULL, 0);
	cr_assert_eq(fmt_event_validate(&ev, &l, &why), 0);
}

/* ---- UTF-8 ---------------------------------------------------------------- */

struct bytes_case {
	const char *s;
	uint32_t len;
};
#define BC(lit) { lit, sizeof(lit) - 1 }

static const struct bytes_case bad_utf8[] = {
	BC("\xc0\xaf"),             /* overlong '/' (2 bytes) */
	BC("\xc1\xbf"),             /* overlong (2 bytes) */
	BC("\xe0\x80\xaf"),         /* overlong '/' (3 bytes) */
	BC("\xe0\x9f\xbf"),         /* overlong U+07FF (3 bytes) */
	BC("\xf0\x80\x80\xaf"),     /* overlong '/' (4 bytes) */
	BC("\xf0\x8f\xbf\xbf"),     /* overlong U+FFFF (4 bytes) */
	BC("\xed\xa0\x80"),         /* surrogate U+D800 */
	BC("\xed\xbf\xbf"),         /* surrogate U+DFFF */
	BC("\xf4\x90\x80\x80"),     /* U+110000, past Unicode */
	BC("\xf5\x80\x80\x80"),     /* lead byte 0xF5 */
	BC("\xff"),                 /* 0xFF never appears */
	BC("a\xfe"),                /* 0xFE never appears */
	BC("\x80"),                 /* lone continuation byte */
	BC("\xe2\x82"),             /* truncated 3-byte sequence at the end */
	BC("\xe2\x82x"),            /* truncated 3-byte sequence, then ASCII */
	BC("\xf0\x9f\x98"),         /* truncated 4-byte sequence */
	BC("\xc3"),                 /* truncated 2-byte sequence */
	BC("ok\xc3"),               /* truncated after valid text */
};

static const struct bytes_case good_utf8[] = {
	BC(""),
	BC("plain ascii"),
	BC("\xc3\xa9"),             /* é */
	BC("\xe2\x82\xac"),         /* € */
	BC("\xf0\x9f\x98\x80"),     /* 😀, a 4-byte emoji */
	BC("\xed\x9f\xbf"),         /* U+D7FF, just below the surrogates */
	BC("\xee\x80\x80"),         /* U+E000, just above them */
	BC("\xef\xbf\xbf"),         /* U+FFFF */
	BC("\xf4\x8f\xbf\xbf"),     /* U+10FFFF, the last code point */
	BC("\xc2\x80"),             /* U+0080, the first 2-byte code point */
	BC("\xe0\xa0\x80"),         /* U+0800, the first 3-byte one */
	BC("\xf0\x90\x80\x80"),     /* U+10000, the first 4-byte one */
	BC("a\x00" "b"),            /* NUL is valid UTF-8 */
};

Test(event_utf8, direct)
{
	for (size_t i = 0; i < FMT_ARRAY_LEN(bad_utf8); i++)
		cr_assert(!fmt_utf8_valid(bad_utf8[i].s, bad_utf8[i].len), "bad case %zu", i);
	for (size_t i = 0; i < FMT_ARRAY_LEN(good_utf8); i++)
		cr_assert(fmt_utf8_valid(good_utf8[i].s, good_utf8[i].len), "good case %zu", i);
	cr_assert(fmt_utf8_valid(NULL, 0));
}

/* A valid sequence cut anywhere but at its end is invalid: the validator
 * must not read past len even when a lead byte promises more. */
Test(event_utf8, cut_sequences)
{
	const char *emoji = "\xf0\x9f\x98\x80";
	for (uint32_t n = 1; n < 4; n++) {
		char *heap = malloc(n);
		memcpy(heap, emoji, n);
		cr_assert(!fmt_utf8_valid(heap, n), "cut at %u", n);
		free(heap);
	}
}

Test(event_utf8, in_every_field)
{
	for (size_t i = 0; i < FMT_ARRAY_LEN(bad_utf8); i++) {
		struct fmt_str bad = str_n(bad_utf8[i].s, bad_utf8[i].len);
		struct fmt_event ev;
		struct fmt_attr a;
		static const enum fmt_field plain[] = {
			FMT_F_ACTOR_ID, FMT_F_ACTOR_TYPE, FMT_F_ACTION, FMT_F_RESOURCE_TYPE,
			FMT_F_RESOURCE_ID, FMT_F_USER_AGENT, FMT_F_REQUEST_ID,
		};
		for (size_t k = 0; k < FMT_ARRAY_LEN(plain); k++) {
			base_event(&ev);
			ev.str[plain[k]] = bad;
			expect_invalid(&ev, fmt_field_name(plain[k]));
		}
		base_event(&ev);
		ev.attrs = &a;
		ev.attr_count = 1;
		a.key = bad;
		a.value = fmt_str_c("v");
		expect_invalid(&ev, "attributes.key");
		a.key = fmt_str_c("k");
		a.value = bad;
		expect_invalid(&ev, "attributes.value");
		base_event(&ev);
		ev.details_json = bad;
		expect_invalid(&ev, "details_json");
	}
	for (size_t i = 0; i < FMT_ARRAY_LEN(good_utf8); i++) {
		struct fmt_event ev;
		struct fmt_attr a = { fmt_str_c("k"), str_n(good_utf8[i].s, good_utf8[i].len) };
		base_event(&ev);
		ev.str[FMT_F_USER_AGENT] = a.value;
		ev.details_json = a.value;
		ev.attrs = &a;
		ev.attr_count = 1;
		expect_valid(&ev);
	}
}

/* ---- source_ip, trace_id, outcome, time ----------------------------------- */

Test(event_validate, source_ip)
{
	static const struct bytes_case good[] = {
		BC("192.0.2.1"),
		BC("0.0.0.0"),
		BC("255.255.255.255"),
		BC("::"),
		BC("::1"),
		BC("2001:db8::1"),
		BC("2001:DB8:0:0:8:800:200C:417A"),
		BC("::ffff:192.0.2.1"),   /* IPv4-mapped IPv6 */
		BC("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"), /* 45 chars, the longest */
	};
	static const struct bytes_case bad[] = {
		BC("1.2.3"),
		BC("::g"),
		BC("1.2.3.4 "),
		BC(" 1.2.3.4"),
		BC("256.1.1.1"),
		BC("1.2.3.4.5"),
		BC("1.2.3.4/24"),
		BC("fe80::1%eth0"),
		BC("localhost"),
		BC("1::2::3"),
		BC("1.2.3.4\x00"),        /* embedded NUL: not a literal */
		BC("::1\x00garbage"),
		BC("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.2555"),
		BC("\xc3\xa9"),
	};
	struct fmt_event ev;
	for (size_t i = 0; i < FMT_ARRAY_LEN(good); i++) {
		base_event(&ev);
		ev.str[FMT_F_SOURCE_IP] = str_n(good[i].s, good[i].len);
		expect_valid(&ev);
	}
	for (size_t i = 0; i < FMT_ARRAY_LEN(bad); i++) {
		base_event(&ev);
		ev.str[FMT_F_SOURCE_IP] = str_n(bad[i].s, bad[i].len);
		struct fmt_invalid why;
		cr_assert_eq(validate(&ev, &why), FMT_E_INVALID, "bad ip case %zu", i);
		cr_assert_str_eq(why.field, "source_ip");
	}
	/* Not NUL-terminated: the view ends before the next byte. */
	const char *txt = "10.0.0.1x";
	base_event(&ev);
	ev.str[FMT_F_SOURCE_IP] = str_n(txt, 8);
	expect_valid(&ev);
}

Test(event_validate, trace_id)
{
	struct fmt_event ev;
	base_event(&ev);
	ev.str[FMT_F_TRACE_ID] = fmt_str_c("4bf92f3577b34da6a3ce929d0e0e4736");
	expect_valid(&ev);
	ev.str[FMT_F_TRACE_ID] = fmt_str_c("4BF92F3577B34DA6A3CE929D0E0E4736");
	expect_valid(&ev);
	ev.str[FMT_F_TRACE_ID] = fmt_str_c("4bf92f3577b34da6a3ce929d0e0e473");   /* 31 */
	expect_invalid(&ev, "trace_id");
	ev.str[FMT_F_TRACE_ID] = fmt_str_c("4bf92f3577b34da6a3ce929d0e0e47366"); /* 33 */
	expect_invalid(&ev, "trace_id");
	ev.str[FMT_F_TRACE_ID] = fmt_str_c("4bf92f3577b34da6a3ce929d0e0e473g");  /* non-hex */
	expect_invalid(&ev, "trace_id");
	ev.str[FMT_F_TRACE_ID] = fmt_str_c("4bf92f35-7b34da6a3ce929d0e0e4736");
	expect_invalid(&ev, "trace_id");
	ev.str[FMT_F_TRACE_ID] = str_n("4bf92f3577b34da6a3ce929d0e0e473\0", 32);
	expect_invalid(&ev, "trace_id");
}

/* Every byte value, first, in the middle and last: valid exactly when it
 * is a hex digit of either case. */
Test(event_validate, trace_id_every_byte)
{
	struct fmt_event ev;
	base_event(&ev);
	static const int positions[] = { 0, 15, 31 };
	char id[32];
	for (int c = 0; c < 256; c++) {
		for (size_t k = 0; k < FMT_ARRAY_LEN(positions); k++) {
			int at = positions[k];
			memset(id, 'a', sizeof(id));
			id[at] = (char)c;
			ev.str[FMT_F_TRACE_ID] = str_n(id, sizeof(id));
			bool want = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
				    (c >= 'A' && c <= 'F');
			struct fmt_invalid why = { 0 };
			cr_expect_eq(validate(&ev, &why), want ? 0 : FMT_E_INVALID, "byte 0x%02x at %d",
				     c, at);
		}
	}
}

Test(event_validate, outcome_and_time)
{
	struct fmt_event ev;
	base_event(&ev);
	for (uint32_t o = FMT_OUTCOME_UNSPECIFIED; o <= FMT_OUTCOME_DENIED; o++) {
		ev.outcome = o;
		expect_valid(&ev);
	}
	ev.outcome = 4;
	expect_invalid(&ev, "outcome");
	ev.outcome = UINT32_MAX;
	expect_invalid(&ev, "outcome");

	base_event(&ev);
	ev.occurred_at_ns = 0;
	expect_valid(&ev);
	ev.occurred_at_ns = INT64_MAX;
	expect_valid(&ev);
	ev.occurred_at_ns = -1;
	expect_invalid(&ev, "occurred_at_ns");
}

/* ---- tenant ---------------------------------------------------------------- */

Test(event_tenant, edges)
{
	cr_assert(!fmt_tenant_valid(str_n("", 0)));
	cr_assert(!fmt_tenant_valid(str_n(NULL, 0)));
	cr_assert(fmt_tenant_valid(fmt_str_c("a")));
	cr_assert(fmt_tenant_valid(fill(64)));
	cr_assert(!fmt_tenant_valid(fill(65)));
	cr_assert(fmt_tenant_valid(fmt_str_c("Acme-Corp_01.eu")));
	cr_assert(fmt_tenant_valid(fmt_str_c("..")));
	static const char *const bad[] = {
		"a b", "a/b", "a\\b", "a:b", "a@b", "r\xc3\xa9gion", "a\tb", "a+b", "*",
	};
	for (size_t i = 0; i < FMT_ARRAY_LEN(bad); i++)
		cr_assert(!fmt_tenant_valid(fmt_str_c(bad[i])), "tenant %s", bad[i]);
	cr_assert(!fmt_tenant_valid(str_n("a\0b", 3)));
}

/* ---- canonical encoding ------------------------------------------------- */

static void assert_str_same(struct fmt_str a, struct fmt_str b, const char *what)
{
	cr_assert_eq(a.len, b.len, "%s length %u != %u", what, a.len, b.len);
	cr_assert(a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0, "%s bytes", what);
}

static void assert_events_same(const struct fmt_event *a, const struct fmt_event *b)
{
	cr_assert(memcmp(a->event_id, b->event_id, 16) == 0);
	cr_assert_eq(a->occurred_at_ns, b->occurred_at_ns);
	cr_assert_eq(a->outcome, b->outcome);
	for (int f = 0; f < FMT_F_STRING_COUNT; f++)
		assert_str_same(a->str[f], b->str[f], fmt_field_name((enum fmt_field)f));
	cr_assert_eq(a->attr_count, b->attr_count);
	for (uint32_t i = 0; i < a->attr_count; i++) {
		assert_str_same(a->attrs[i].key, b->attrs[i].key, "attr key");
		assert_str_same(a->attrs[i].value, b->attrs[i].value, "attr value");
	}
	assert_str_same(a->details_json, b->details_json, "details_json");
	assert_str_same(a->tenant, b->tenant, "tenant");
	cr_assert_eq(a->seq, b->seq);
	cr_assert_eq(a->received_at_ns, b->received_at_ns);
}

static void assert_str_identical(struct fmt_str a, struct fmt_str b, const char *what)
{
	cr_assert(a.ptr == b.ptr && a.len == b.len, "%s: %p+%u against %p+%u", what,
		  (const void *)a.ptr, a.len, (const void *)b.ptr, b.len);
}

static void assert_views_identical(const struct fmt_event *a, const struct fmt_event *b,
				   const struct fmt_attr *a_attrs, const struct fmt_attr *b_attrs)
{
	cr_assert(memcmp(a->event_id, b->event_id, sizeof(a->event_id)) == 0);
	cr_assert_eq(a->occurred_at_ns, b->occurred_at_ns);
	cr_assert_eq(a->outcome, b->outcome);
	for (int f = 0; f < FMT_F_STRING_COUNT; f++)
		assert_str_identical(a->str[f], b->str[f], fmt_field_name((enum fmt_field)f));
	cr_assert_eq(a->attr_count, b->attr_count);
	cr_assert_eq(a->attrs, a->attr_count ? a_attrs : NULL);
	cr_assert_eq(b->attrs, b->attr_count ? b_attrs : NULL);
	for (uint32_t i = 0; i < a->attr_count; i++) {
		assert_str_identical(a->attrs[i].key, b->attrs[i].key, "attr key");
		assert_str_identical(a->attrs[i].value, b->attrs[i].value, "attr value");
	}
	assert_str_identical(a->details_json, b->details_json, "details_json");
	assert_str_identical(a->tenant, b->tenant, "tenant");
	cr_assert_eq(a->seq, b->seq);
	cr_assert_eq(a->received_at_ns, b->received_at_ns);
}

/* Encodes ev into a fresh heap buffer of exactly its size (so ASan sees any
 * read past the end), checks the size, decodes and compares. */
static uint8_t *round_trip(const struct fmt_event *ev, size_t *len_out)
{
	size_t n = fmt_event_canon_size(ev);
	uint8_t *buf = malloc(n);
	cr_assert_not_null(buf);
	cr_assert_eq(fmt_event_canon_encode(ev, buf, n), (int64_t)n);
	static struct fmt_attr attr_buf[FMT_ATTRS_HARD_MAX];
	struct fmt_event back;
	cr_assert_eq(fmt_event_canon_decode(buf, n, &back, attr_buf, FMT_ATTRS_HARD_MAX), 0);
	assert_events_same(ev, &back);
	/* The views point into the decoded buffer, not into the source. */
	if (back.str[FMT_F_ACTOR_ID].len)
		cr_assert((const uint8_t *)back.str[FMT_F_ACTOR_ID].ptr >= buf &&
			  (const uint8_t *)back.str[FMT_F_ACTOR_ID].ptr < buf + n);
	/* Re-encoding the decoded view gives the same bytes. */
	uint8_t *again = malloc(n);
	cr_assert_eq(fmt_event_canon_encode(&back, again, n), (int64_t)n);
	cr_assert(memcmp(buf, again, n) == 0);
	/* The view that encoding gives is exactly what decoding would give:
	 * the same pointers, lengths and values. */
	static struct fmt_attr view_attrs[FMT_ATTRS_HARD_MAX], again_attrs[FMT_ATTRS_HARD_MAX];
	struct fmt_event view, decoded;
	cr_assert_eq(fmt_event_canon_encode_view(ev, again, n, &view, view_attrs,
						 FMT_ATTRS_HARD_MAX),
		     (int64_t)n);
	cr_assert(memcmp(buf, again, n) == 0);
	cr_assert_eq(fmt_event_canon_decode(again, n, &decoded, again_attrs, FMT_ATTRS_HARD_MAX), 0);
	assert_views_identical(&view, &decoded, view_attrs, again_attrs);
	if (ev->attr_count)
		cr_assert_eq(fmt_event_canon_encode_view(ev, again, n, &view, view_attrs,
							 ev->attr_count - 1),
			     FMT_E_TOO_BIG);
	free(again);
	*len_out = n;
	return buf;
}

Test(event_canon, round_trip_all_fields)
{
	struct fmt_event ev;
	golden_event(&ev);
	size_t n;
	free(round_trip(&ev, &n));
	cr_assert_eq(n, 237);
}

Test(event_canon, round_trip_empty_fields)
{
	struct fmt_event ev;
	memset(&ev, 0, sizeof(ev));
	size_t n;
	uint8_t *buf = round_trip(&ev, &n);
	cr_assert_eq(n, 87, "fixed part of the encoding");
	uint8_t digest[FMT_HASH_BYTES];
	char hex[2 * FMT_HASH_BYTES + 1];
	fmt_sha256(buf, n, digest);
	fmt_hex(digest, sizeof(digest), hex);
	/* Computed with the same Python script as the golden vector. */
	cr_assert_str_eq(hex, "0497098056620751ca49cf4866fbf079c9ffaee3bd3d9e60aba1e2348b779f34");
	free(buf);
}

Test(event_canon, round_trip_extremes)
{
	struct fmt_event ev;
	golden_event(&ev);
	ev.seq = UINT64_MAX;
	ev.received_at_ns = INT64_MIN;
	ev.occurred_at_ns = INT64_MAX;
	ev.outcome = 255;
	ev.tenant = fill(64);
	memset(ev.event_id, 0xff, 16);
	ev.details_json = fill(16385);
	size_t n;
	free(round_trip(&ev, &n));
}

Test(event_canon, round_trip_unicode)
{
	struct fmt_event ev;
	golden_event(&ev);
	ev.str[FMT_F_ACTOR_ID] = fmt_str_c("\xe5\xb1\xb1\xe7\x94\xb0\xf0\x9f\x98\x80"); /* 山田😀 */
	ev.str[FMT_F_ACTION] = fmt_str_c("\xd0\xb4\xd0\xb5\xd0\xb9\xd1\x81\xd1\x82\xd0\xb2\xd0\xb8\xd0\xb5");
	ev.details_json = fmt_str_c("{\"\xc3\xa9\":\"\xe2\x82\xac\"}");
	ev.str[FMT_F_USER_AGENT] = str_n("nul\0inside", 10);
	expect_valid(&ev);
	size_t n;
	free(round_trip(&ev, &n));
}

Test(event_canon, round_trip_attribute_counts)
{
	static struct fmt_attr attrs[FMT_ATTRS_HARD_MAX];
	static char keys[FMT_ATTRS_HARD_MAX][8];
	for (int i = 0; i < FMT_ATTRS_HARD_MAX; i++) {
		snprintf(keys[i], sizeof(keys[i]), "k%d", i);
		attrs[i].key = fmt_str_c(keys[i]);
		attrs[i].value = i % 3 ? fmt_str_c(keys[i]) : str_n(NULL, 0);
	}
	struct fmt_event ev;
	golden_event(&ev);
	ev.attrs = attrs;
	static const uint32_t counts[] = { 0, 1, 32, 33, FMT_ATTRS_HARD_MAX };
	for (size_t i = 0; i < FMT_ARRAY_LEN(counts); i++) {
		ev.attr_count = counts[i];
		size_t n;
		uint8_t *buf = round_trip(&ev, &n);
		struct fmt_event back;
		static struct fmt_attr attr_buf[FMT_ATTRS_HARD_MAX];
		cr_assert_eq(fmt_event_canon_decode(buf, n, &back, attr_buf, counts[i]), 0,
			     "attr_cap exactly the count");
		if (counts[i] == 0)
			cr_assert_null(back.attrs);
		if (counts[i] > 0)
			cr_assert_eq(fmt_event_canon_decode(buf, n, &back, attr_buf, counts[i] - 1),
				     FMT_E_TOO_BIG, "attr_cap one short");
		free(buf);
	}
}

/* Every strict prefix of an encoding is truncated, never corrupt or valid;
 * each prefix lives in its own heap buffer so ASan catches over-reads. */
static void assert_every_prefix_truncated(const uint8_t *buf, size_t n)
{
	static struct fmt_attr attr_buf[FMT_ATTRS_HARD_MAX];
	for (size_t k = 0; k < n; k++) {
		uint8_t *p = malloc(k ? k : 1);
		memcpy(p, buf, k);
		struct fmt_event back;
		int rc = fmt_event_canon_decode(p, k, &back, attr_buf, FMT_ATTRS_HARD_MAX);
		cr_assert_eq(rc, FMT_E_TRUNCATED, "prefix %zu of %zu: %d", k, n, rc);
		free(p);
	}
}

Test(event_canon, every_truncation)
{
	struct fmt_event ev;
	golden_event(&ev);
	size_t n;
	uint8_t *buf = round_trip(&ev, &n);
	assert_every_prefix_truncated(buf, n);
	free(buf);

	memset(&ev, 0, sizeof(ev));
	buf = round_trip(&ev, &n);
	assert_every_prefix_truncated(buf, n);
	free(buf);

	static struct fmt_attr attrs[FMT_ATTRS_HARD_MAX];
	for (int i = 0; i < FMT_ATTRS_HARD_MAX; i++)
		attrs[i] = (struct fmt_attr){ fmt_str_c("key"), fmt_str_c("value") };
	golden_event(&ev);
	ev.attrs = attrs;
	ev.attr_count = FMT_ATTRS_HARD_MAX;
	buf = round_trip(&ev, &n);
	assert_every_prefix_truncated(buf, n);
	free(buf);
}

Test(event_canon, trailing_bytes_corrupt)
{
	struct fmt_event ev, back;
	struct fmt_attr attr_buf[8];
	golden_event(&ev);
	size_t n = fmt_event_canon_size(&ev);
	uint8_t *buf = calloc(1, n + 16);
	cr_assert_eq(fmt_event_canon_encode(&ev, buf, n + 16), (int64_t)n);
	for (size_t extra = 1; extra <= 16; extra++)
		cr_assert_eq(fmt_event_canon_decode(buf, n + extra, &back, attr_buf, 8),
			     FMT_E_CORRUPT, "%zu trailing bytes", extra);
	free(buf);
}

Test(event_canon, version)
{
	struct fmt_event ev, back;
	struct fmt_attr attr_buf[8];
	golden_event(&ev);
	size_t n;
	uint8_t *buf = round_trip(&ev, &n);
	cr_assert_eq(buf[0], FMT_CANON_VERSION);
	static const uint8_t bad[] = { 0, 2, 0x7f, 0xff };
	for (size_t i = 0; i < FMT_ARRAY_LEN(bad); i++) {
		buf[0] = bad[i];
		cr_assert_eq(fmt_event_canon_decode(buf, n, &back, attr_buf, 8), FMT_E_VERSION);
	}
	free(buf);
}

/* Offsets in the golden encoding (tenant "acme"): version 0, tenant length
 * 1, tenant 2..6, seq 6, received 14, id 22, occurred 38, outcome 46,
 * actor_id length 47. */
Test(event_canon, malformed_lengths)
{
	struct fmt_event ev, back;
	struct fmt_attr attr_buf[FMT_ATTRS_HARD_MAX];
	golden_event(&ev);
	size_t n;
	uint8_t *buf = round_trip(&ev, &n);

	/* A tenant longer than any tenant may be. */
	buf[1] = FMT_TENANT_MAX + 1;
	cr_assert_eq(fmt_event_canon_decode(buf, n, &back, attr_buf, 8), FMT_E_CORRUPT);
	buf[1] = 4;

	/* A string length that runs past the end. */
	cr_assert_eq(fmt_get_u32(buf + 47), 5);
	fmt_put_u32(buf + 47, UINT32_MAX);
	cr_assert_eq(fmt_event_canon_decode(buf, n, &back, attr_buf, 8), FMT_E_TRUNCATED);
	/* A shorter one leaves bytes over or misreads the rest. */
	fmt_put_u32(buf + 47, 4);
	cr_assert_lt(fmt_event_canon_decode(buf, n, &back, attr_buf, 8), 0);
	fmt_put_u32(buf + 47, 5);
	cr_assert_eq(fmt_event_canon_decode(buf, n, &back, attr_buf, 8), 0);
	free(buf);

	/* More attributes than any event may have: corrupt, whatever attr_cap. */
	memset(&ev, 0, sizeof(ev));
	buf = round_trip(&ev, &n);
	size_t count_off = n - 8; /* u32 attr count, then u32 details length */
	cr_assert_eq(fmt_get_u32(buf + count_off), 0);
	fmt_put_u32(buf + count_off, FMT_ATTRS_HARD_MAX + 1);
	cr_assert_eq(fmt_event_canon_decode(buf, n, &back, attr_buf, FMT_ATTRS_HARD_MAX),
		     FMT_E_CORRUPT);
	fmt_put_u32(buf + count_off, UINT32_MAX);
	cr_assert_eq(fmt_event_canon_decode(buf, n, &back, attr_buf, FMT_ATTRS_HARD_MAX),
		     FMT_E_CORRUPT);
	fmt_put_u32(buf + count_off, 1);
	cr_assert_eq(fmt_event_canon_decode(buf, n, &back, attr_buf, FMT_ATTRS_HARD_MAX),
		     FMT_E_TRUNCATED);
	free(buf);
}

Test(event_canon, encode_cap)
{
	struct fmt_event ev;
	golden_event(&ev);
	size_t n = fmt_event_canon_size(&ev);
	uint8_t *buf = malloc(n);
	cr_assert_eq(fmt_event_canon_encode(&ev, buf, n - 1), FMT_E_TOO_BIG);
	cr_assert_eq(fmt_event_canon_encode(&ev, buf, 0), FMT_E_TOO_BIG);
	cr_assert_eq(fmt_event_canon_encode(&ev, buf, n), (int64_t)n);
	free(buf);
}

/* The golden vector: see the comment at the top of this file. */
Test(event_canon, golden_vector)
{
	struct fmt_event ev;
	golden_event(&ev);
	uint8_t buf[512];
	int64_t n = fmt_event_canon_encode(&ev, buf, sizeof(buf));
	cr_assert_eq(n, 237);
	uint8_t digest[FMT_HASH_BYTES];
	char hex[2 * FMT_HASH_BYTES + 1];
	fmt_sha256(buf, (size_t)n, digest);
	fmt_hex(digest, sizeof(digest), hex);
	cr_assert_str_eq(hex, "82327db515d0b6f6c7b1278b5baecac3f7a1ba55319ff9ce50e75da9026a3904");

	uint8_t scratch[237];
	uint8_t via_event_hash[FMT_HASH_BYTES];
	cr_assert_eq(fmt_event_hash(&ev, scratch, sizeof(scratch), via_event_hash), 0);
	cr_assert(memcmp(via_event_hash, digest, FMT_HASH_BYTES) == 0);

	/* The server fields are covered: moving the event changes its hash. */
	ev.seq = 43;
	cr_assert_eq(fmt_event_hash(&ev, scratch, sizeof(scratch), via_event_hash), 0);
	cr_assert(memcmp(via_event_hash, digest, FMT_HASH_BYTES) != 0);
	golden_event(&ev);
	ev.tenant = fmt_str_c("acmf");
	cr_assert_eq(fmt_event_hash(&ev, scratch, sizeof(scratch), via_event_hash), 0);
	cr_assert(memcmp(via_event_hash, digest, FMT_HASH_BYTES) != 0);
}

/* ---- UUIDs ------------------------------------------------------------------ */

Test(event_uuid, v7_layout)
{
	static const uint8_t rnd_ff[10] = { 0xff, 0xff, 0xff, 0xff, 0xff,
					    0xff, 0xff, 0xff, 0xff, 0xff };
	static const uint8_t rnd_seq[10] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 };
	uint8_t id[16];
	char s[37];
	/* Expected strings computed in Python from RFC 9562 §5.7. */
	fmt_uuid_v7(id, 1700000000123456789LL, rnd_ff);
	fmt_uuid_format(id, s);
	cr_assert_str_eq(s, "018bcfe5-687b-7fff-bfff-ffffffffffff");
	fmt_uuid_v7(id, 1700000000123456789LL, rnd_seq);
	fmt_uuid_format(id, s);
	cr_assert_str_eq(s, "018bcfe5-687b-7001-8203-040506070809");
	cr_assert_eq(s[14], '7');
	cr_assert(s[19] == '8' || s[19] == '9' || s[19] == 'a' || s[19] == 'b');
}

Test(event_uuid, format_parse_round_trip)
{
	uint8_t id[16], back[16];
	char s[37];
	for (int round = 0; round < 64; round++) {
		for (int i = 0; i < 16; i++)
			id[i] = (uint8_t)(round * 37 + i * 11);
		fmt_uuid_format(id, s);
		cr_assert_eq(strlen(s), 36);
		cr_assert_eq(fmt_uuid_parse(s, 36, back), 0);
		cr_assert(memcmp(id, back, 16) == 0);
	}
	cr_assert_eq(fmt_uuid_parse("018BCFE5-687B-7FFF-BFFF-FFFFFFFFFFFF", 36, back), 0);
	fmt_uuid_format(back, s);
	cr_assert_str_eq(s, "018bcfe5-687b-7fff-bfff-ffffffffffff");
}

Test(event_uuid, parse_rejects_malformed)
{
	static const char *const bad[] = {
		"",
		"018bcfe5-687b-7fff-bfff-fffffffffff",    /* 35 */
		"018bcfe5-687b-7fff-bfff-fffffffffffff",  /* 37 */
		"018bcfe5687b7fffbffffffffffffffff",      /* no dashes */
		"018bcfe5-687b-7fff-bfff_ffffffffffff",   /* wrong separator */
		"018bcfe-5687b-7fff-bfff-ffffffffffff",   /* dash misplaced */
		"018bcfe5-687b-7fff-bfff-fffffffffffg",   /* non-hex last */
		"g18bcfe5-687b-7fff-bfff-ffffffffffff",   /* non-hex first */
		"{18bcfe5-687b-7fff-bfff-fffffffffff}",
		"018bcfe5-687b-7fff-bfff-ffffffff fff",
		"018bcfe5 687b 7fff bfff ffffffffffff",
		"------------------------------------",
	};
	uint8_t out[16];
	for (size_t i = 0; i < FMT_ARRAY_LEN(bad); i++)
		cr_assert_eq(fmt_uuid_parse(bad[i], strlen(bad[i]), out), FMT_E_INVALID,
			     "uuid %s", bad[i]);
	/* The length is what counts, not a NUL. */
	cr_assert_eq(fmt_uuid_parse("018bcfe5-687b-7fff-bfff-ffffffffffff", 35, out),
		     FMT_E_INVALID);
	cr_assert_eq(fmt_uuid_parse("018bcfe5-687b-7fff-bfff-ffffffffff\0f", 36, out),
		     FMT_E_INVALID);
}
