// SPDX-License-Identifier: Apache-2.0
/*
 * json_check.c — is details_json one valid JSON value? (json_check.h)
 *
 * Every appended event with details pays for this check on the shard
 * thread, so it must not build anything: yajl's event parser lexes the
 * bytes and calls back per token, and the callbacks keep only the nesting
 * depth. (Parsing into a jansson tree cost a quarter of the server's CPU
 * at full ingest: one allocation per value, number conversion, hashing of
 * object keys.)
 *
 * What is accepted, kept equal to what the output side (net/event_json.c,
 * jansson) reads back: one value, any type at the top level, whitespace
 * around it, nothing after it; integers that fit in 64 bits and finite
 * reals (converted with strtoll/strtod, as jansson does); nesting at most NET_JSON_DEPTH_MAX
 * (jansson's own limit). UTF-8 is checked before this by fmt_event_validate
 * (strictly: no overlongs, no surrogates), so yajl's own, looser, string
 * check is turned off.
 */
#include "net/json_check.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

struct depth {
	unsigned level;
};

static int on_open(void *ctx)
{
	struct depth *d = ctx;
	return ++d->level <= NET_JSON_DEPTH_MAX;
}

static int on_open_map(void *ctx)
{
	return on_open(ctx);
}

static int on_close(void *ctx)
{
	struct depth *d = ctx;
	d->level--;
	return 1;
}

/* yajl hands the number's text over unconverted when a number callback is
 * set; it is converted here as jansson does it: an integer must fit in
 * int64_t (yajl's own conversion refuses INT64_MIN), a real must be finite. */
static int on_number(void *ctx, const char *s, size_t len)
{
	char small[64];
	char *text = len < sizeof(small) ? small : malloc(len + 1);
	if (!text)
		return 0;
	memcpy(text, s, len);
	text[len] = '\0';
	errno = 0;
	int ok;
	if (strpbrk(text, ".eE")) {
		double v = strtod(text, NULL);
		ok = errno != ERANGE || fabs(v) < 1.0; /* underflow to 0 is fine */
		ok = ok && isfinite(v);
	} else {
		(void)strtoll(text, NULL, 10);
		ok = errno != ERANGE;
	}
	if (text != small)
		free(text);
	return ok;
}

static const yajl_callbacks callbacks = {
	.yajl_number = on_number,
	.yajl_start_map = on_open_map,
	.yajl_end_map = on_close,
	.yajl_start_array = on_open,
	.yajl_end_array = on_close,
};

bool net_json_valid(const char *json, size_t len)
{
	struct depth d = { 0 };
	yajl_handle h = yajl_alloc(&callbacks, NULL, &d);
	if (!h)
		return false;
	yajl_config(h, yajl_dont_validate_strings, 1);
	bool ok = yajl_parse(h, (const unsigned char *)json, len) == yajl_status_ok &&
		  yajl_complete_parse(h) == yajl_status_ok;
	yajl_free(h);
	return ok;
}
