// SPDX-License-Identifier: Apache-2.0
/*
 * test_gen.c — the benchmark generator keeps its promises (bench/gen.h):
 * deterministic per seed, every event valid under the limits of DESIGN.md
 * §5, and the shape issue #5 asks for — measured over 200,000 events of
 * one fixed seed, so the figures are exact, not statistical luck.
 */
#include <criterion/criterion.h>

#include "bench/gen.h"
#include "format/hash.h"

#include <jansson.h>
#include <string.h>

static bool json_ok(const char *s, size_t n)
{
	json_error_t e;
	json_t *v = json_loadb(s, n, JSON_DECODE_ANY, &e);
	json_decref(v);
	return v != NULL;
}

Test(gen, same_seed_same_events)
{
	struct gen a, b, c;
	cr_assert_eq(gen_init(&a, 42, 1000), 0);
	cr_assert_eq(gen_init(&b, 42, 1000), 0);
	cr_assert_eq(gen_init(&c, 43, 1000), 0);
	char la[8192], lb[8192], lc[8192];
	int differ = 0;
	for (int i = 0; i < 10000; i++) {
		struct fmt_event ea, eb, ec;
		struct fmt_str ta, tb, tc;
		gen_next(&a, &ea, &ta);
		gen_next(&b, &eb, &tb);
		gen_next(&c, &ec, &tc);
		int na = gen_ndjson(&ea, ta, la, sizeof(la));
		int nb = gen_ndjson(&eb, tb, lb, sizeof(lb));
		int nc = gen_ndjson(&ec, tc, lc, sizeof(lc));
		cr_assert(na > 0 && na == nb && memcmp(la, lb, (size_t)na) == 0, "event %d differs", i);
		differ += nc != na || memcmp(la, lc, (size_t)na) != 0;
	}
	cr_assert_gt(differ, 9900, "another seed gives other events");
	gen_free(&a);
	gen_free(&b);
	gen_free(&c);
}

/* "The same seed gives the same events, byte for byte, on every machine":
 * pinned as the SHA-256 of seed 1's first 1,000 NDJSON lines (what
 * `hodei-bench-gen --count 1000` prints), so a build whose compiler draws
 * in another order (argument evaluation order is unspecified in C) fails
 * here. The test suite builds with gcc and with clang. */
Test(gen, seed_1_is_pinned)
{
	struct gen g;
	cr_assert_eq(gen_init(&g, 1, GEN_TENANTS_DEFAULT), 0);
	static char all[1000 * 8192];
	size_t len = 0;
	for (int i = 0; i < 1000; i++) {
		struct fmt_event ev;
		struct fmt_str tenant;
		gen_next(&g, &ev, &tenant);
		int n = gen_ndjson(&ev, (struct fmt_str){ 0 }, all + len, sizeof(all) - len - 1);
		cr_assert_gt(n, 0);
		len += (size_t)n;
		all[len++] = '\n';
	}
	uint8_t h[FMT_HASH_BYTES];
	char hex[2 * FMT_HASH_BYTES + 1];
	fmt_sha256(all, len, h);
	fmt_hex(h, FMT_HASH_BYTES, hex);
	cr_expect_str_eq(hex, "8cdc778ebd2169388927763cea125f3e2a5358a5c84b805c78d5c170d9f91db8");
	gen_free(&g);
}

Test(gen, shape_of_the_events)
{
	struct gen g;
	cr_assert_eq(gen_init(&g, 7, 1000), 0);
	struct fmt_limits lim;
	fmt_limits_default(&lim);
	lim.details_json_valid = json_ok;
	enum { N = 200000 };
	static uint32_t per_tenant[1000];
	uint64_t outcome[4] = { 0 }, bytes = 0, attrs_hist[GEN_ATTRS_MAX + 1] = { 0 }, v6 = 0, svc = 0;
	uint32_t dmin = UINT32_MAX, dmax = 0;
	char line[8192];
	for (int i = 0; i < N; i++) {
		struct fmt_event ev;
		struct fmt_str t;
		gen_next(&g, &ev, &t);
		struct fmt_invalid why;
		cr_assert_eq(fmt_event_validate(&ev, &lim, &why), 0, "event %d: %s %s", i, why.field,
			     why.reason);
		unsigned k = (unsigned)atoi(t.ptr + 7);
		cr_assert_lt(k, 1000);
		per_tenant[k]++;
		outcome[ev.outcome]++;
		attrs_hist[ev.attr_count]++;
		v6 += memchr(ev.str[FMT_F_SOURCE_IP].ptr, ':', ev.str[FMT_F_SOURCE_IP].len) != NULL;
		svc += ev.str[FMT_F_ACTOR_TYPE].len == 7;
		if (ev.details_json.len < dmin)
			dmin = ev.details_json.len;
		if (ev.details_json.len > dmax)
			dmax = ev.details_json.len;
		int n = gen_ndjson(&ev, t, line, sizeof(line));
		cr_assert_gt(n, 0);
		bytes += (uint64_t)n + 1;
	}
	double top = (double)per_tenant[0] / N;
	cr_assert(top > 0.08 && top < 0.12, "top tenant has %.3f of the events", top);
	cr_assert(per_tenant[999] > 0, "the smallest tenant gets events too");
	cr_assert(outcome[1] > N * 0.88 && outcome[1] < N * 0.92);
	cr_assert(outcome[2] > N * 0.06 && outcome[2] < N * 0.08);
	cr_assert(outcome[3] > N * 0.02 && outcome[3] < N * 0.04);
	for (int a = 0; a <= (int)GEN_ATTRS_MAX; a++)
		cr_assert_gt(attrs_hist[a], N / 10, "attributes: %d never or rarely used", a);
	cr_assert(dmin >= 50 && dmax <= 300, "details of %u..%u bytes", dmin, dmax);
	cr_assert(v6 > N * 0.15 && v6 < N * 0.25);
	cr_assert(svc > N * 0.12 && svc < N * 0.18);
	double avg = (double)bytes / N;
	cr_assert(avg > 600 && avg < 800, "%.0f bytes per NDJSON event", avg);
	gen_free(&g);
}
