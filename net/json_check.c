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
#include <stdalign.h>
#include <stdbool.h>
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
 * int64_t (yajl's own conversion refuses INT64_MIN), a real must be finite.
 * An integer of at most 18 digits always fits, and most numbers in details
 * are such: they need no conversion. */
static int on_number(void *ctx, const char *s, size_t len)
{
	(void)ctx;
	bool integer = true;
	for (size_t i = 0; i < len && integer; i++)
		integer = s[i] != '.' && s[i] != 'e' && s[i] != 'E';
	if (integer && len - (len > 0 && s[0] == '-') <= 18)
		return 1;
	char small[64];
	char *text = len < sizeof(small) ? small : malloc(len + 1);
	if (!text)
		return 0;
	memcpy(text, s, len);
	text[len] = '\0';
	errno = 0;
	int ok;
	if (!integer) {
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

/* yajl allocates its handle, its lexer and its nesting stack for every
 * parse, and frees them at the end: four to six malloc/free pairs per
 * event, about a fifth of this check's cost. They come from a per-thread
 * scratch buffer instead, bumped by each allocation and reset when the
 * last block is freed; what does not fit (deep nesting) goes to malloc.
 * Each block starts with its size, for realloc. */
#define SCRATCH_BYTES 8192
#define SCRATCH_ALIGN 16

static _Thread_local struct scratch {
	alignas(SCRATCH_ALIGN) unsigned char buf[SCRATCH_BYTES];
	size_t used;
	unsigned live;
} scratch;

static bool in_scratch(const void *p)
{
	const unsigned char *c = p;
	return c >= scratch.buf && c < scratch.buf + SCRATCH_BYTES;
}

static void *scratch_malloc(void *ctx, size_t size)
{
	(void)ctx;
	size_t need = SCRATCH_ALIGN + (size + SCRATCH_ALIGN - 1) / SCRATCH_ALIGN * SCRATCH_ALIGN;
	if (size > SCRATCH_BYTES || need > SCRATCH_BYTES - scratch.used)
		return malloc(size);
	unsigned char *block = scratch.buf + scratch.used;
	memcpy(block, &size, sizeof(size));
	scratch.used += need;
	scratch.live++;
	return block + SCRATCH_ALIGN;
}

static void scratch_free(void *ctx, void *p)
{
	(void)ctx;
	if (!in_scratch(p)) {
		free(p);
		return;
	}
	if (--scratch.live == 0)
		scratch.used = 0;
}

static void *scratch_realloc(void *ctx, void *p, size_t size)
{
	if (!p)
		return scratch_malloc(ctx, size);
	if (!in_scratch(p))
		return realloc(p, size);
	size_t old;
	memcpy(&old, (unsigned char *)p - SCRATCH_ALIGN, sizeof(old));
	void *q = scratch_malloc(ctx, size);
	if (q) {
		memcpy(q, p, old < size ? old : size);
		scratch_free(ctx, p);
	}
	return q;
}

static yajl_alloc_funcs scratch_funcs = {
	.malloc = scratch_malloc,
	.realloc = scratch_realloc,
	.free = scratch_free,
};

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
	yajl_handle h = yajl_alloc(&callbacks, &scratch_funcs, &d);
	if (!h)
		return false;
	yajl_config(h, yajl_dont_validate_strings, 1);
	bool ok = yajl_parse(h, (const unsigned char *)json, len) == yajl_status_ok &&
		  yajl_complete_parse(h) == yajl_status_ok;
	yajl_free(h);
	return ok;
}
