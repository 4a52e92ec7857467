// SPDX-License-Identifier: Apache-2.0
/*
 * test_json_check.c — net_json_valid(): what details_json may hold. The
 * accepted set is kept equal to what the output side (jansson) reads back,
 * so every case is also checked against jansson's verdict.
 */
#include "net/json_check.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static bool jansson_ok(const char *s, size_t len)
{
	json_t *v = json_loadb(s, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
	json_decref(v);
	return v != NULL;
}

static void expect(const char *s, size_t len, bool want)
{
	cr_expect_eq(net_json_valid(s, len), want, "net_json_valid(%.*s) != %d", (int)len, s, want);
	cr_expect_eq(jansson_ok(s, len), want, "jansson disagrees on %.*s", (int)len, s);
}

#define VALID(lit) expect(lit, sizeof(lit) - 1, true)
#define INVALID(lit) expect(lit, sizeof(lit) - 1, false)

Test(json_check, values_of_every_type)
{
	VALID("{}");
	VALID("[]");
	VALID("{\"reason\":\"policy\",\"n\":[1,2.5,-0.1e3,true,false,null],\"o\":{\"k\":\"v\"}}");
	VALID("\"just a string\"");
	VALID("42");
	VALID("-9223372036854775808");
	VALID("1.7976931348623157e308");
	VALID("true");
	VALID("null");
	VALID("  \n\t{\"a\":1}\r\n ");
	VALID("\"\\u0000 and \\ud83d\\ude00 and \\\"\\\\\\/\\b\\f\\n\\r\\t\"");
	VALID("\"caf\xc3\xa9\"");
}

Test(json_check, not_one_value)
{
	INVALID("");
	INVALID("   ");
	INVALID("{} {}");
	INVALID("1 2");
	INVALID("{\"a\":1}x");
	INVALID("{\"a\":1");
	INVALID("[1,2");
	INVALID("[1,]");
	INVALID("{\"a\":1,}");
	INVALID("{a:1}");
	INVALID("'single'");
	INVALID("\"unterminated");
	INVALID("nul");
	INVALID("01");
	INVALID("1.");
	INVALID("+1");
	INVALID("NaN");
	INVALID("[1] // comment");
	INVALID("/* c */ 1");
	INVALID("\"bad escape \\x\"");
	INVALID("\"raw\ttab\"");
}

Test(json_check, numbers_out_of_range)
{
	INVALID("9223372036854775808");
	INVALID("[1e400]");
	INVALID("-1e999");
}

Test(json_check, nesting_up_to_the_limit)
{
	size_t n = NET_JSON_DEPTH_MAX + 1;
	char *s = malloc(2 * n + 1);
	cr_assert_not_null(s);
	memset(s, '[', n);
	memset(s + n, ']', n);
	/* NET_JSON_DEPTH_MAX levels: fine; one more: refused. */
	expect(s + 1, 2 * (n - 1), true);
	expect(s, 2 * n, false);
	free(s);
}

Test(json_check, a_cut_anywhere_is_refused)
{
	static const char doc[] = "{\"reason\":\"policy\",\"n\":[1,2.5,true,null],\"s\":\"x\\u00e9\"}";
	for (size_t len = 1; len + 1 < sizeof(doc); len++)
		cr_expect_not(net_json_valid(doc, len), "prefix of %zu bytes accepted", len);
	cr_expect(net_json_valid(doc, sizeof(doc) - 1));
}

/* Integers of up to 18 digits skip the conversion; the edges around it. */
Test(json_check, integers_around_64_bits)
{
	VALID("999999999999999999");
	VALID("-999999999999999999");
	VALID("9223372036854775807");
	VALID("-9223372036854775808");
	VALID("[0,-0,1,-1]");
	INVALID("9223372036854775808");
	INVALID("-9223372036854775809");
	INVALID("9999999999999999999");
	INVALID("[1,99999999999999999999]");
}

/* The parser's memory comes from a per-thread scratch buffer that is reset
 * after each parse, with malloc beyond it (deep nesting): parses of every
 * kind, one after another, each get their own verdict. */
Test(json_check, parses_in_a_row)
{
	size_t n = NET_JSON_DEPTH_MAX;
	char *deep = malloc(2 * n);
	cr_assert_not_null(deep);
	memset(deep, '[', n);
	memset(deep + n, ']', n);
	static const char small[] = "{\"a\":[1,{\"b\":\"c\"}]}";
	static const char cut[] = "{\"a\":[1,{\"b\":";
	for (int i = 0; i < 200; i++) {
		cr_assert(net_json_valid(deep, 2 * n));
		cr_assert_not(net_json_valid(deep, 2 * n - 1));
		cr_assert(net_json_valid(small, sizeof(small) - 1));
		cr_assert_not(net_json_valid(cut, sizeof(cut) - 1));
		cr_assert_not(net_json_valid(deep, n)); /* opened, never closed */
	}
	free(deep);
}

Test(json_check, long_numbers)
{
	VALID("0.0000000000000000000000000000000000000000000000000000000000000000000000000000001");
	VALID("1e-400");
	INVALID("123456789012345678901234567890123456789012345678901234567890123456789012345678901");
}
