// SPDX-License-Identifier: Apache-2.0
/*
 * gen_main.c — hodei-bench-gen: prints the benchmark's realistic events
 * (bench/gen.h) as NDJSON, one per line, the JSON form of DESIGN.md §5 that
 * `hodei-audit append` reads; --with-tenant-id adds "tenant_id" (for feeds
 * that split by tenant). Same --seed, same output.
 *
 *   hodei-bench-gen [--seed N] [--count N] [--tenants N] [--step-ns N]
 *                   [--with-tenant-id | --clickhouse]
 *
 * --step-ns is the mean gap between events' occurred_at (default 1000).
 *
 * --clickhouse prints instead the rows the ClickHouse mirror would write
 * for these events (the table of docs/CLICKHOUSE.md, as JSONEachRow), for
 * the side-by-side benchmark (bench/clickhouse_bench.py). The fields
 * hodei-auditd adds on append are made up the way it makes them: seq 1, 2,
 * ... per tenant; chain_hash = SHA-256(previous || SHA-256(event)) per
 * tenant, the event's hash taken over its NDJSON line (same size and
 * entropy as the engine's, not the same value); received_at_ns =
 * occurred_at_ns + 0..65 ms taken from the event id's last two bytes;
 * segment_id numbers each run of CH_SEGMENT_ROWS rows of a tenant in order
 * of first appearance.
 */
#include "bench/gen.h"
#include "format/hash.h"

#include <jansson.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CH_SEGMENT_ROWS 100000u
#define CH_SECONDS_MAX 4354819199ll /* DateTime's last second */

struct ch_tenant {
	uint64_t seq;
	uint64_t segment_id;
	uint8_t chain[FMT_HASH_BYTES];
};

/* One mirror row as a JSONEachRow line (occurred_at as Unix seconds, which
 * 18.16 reads for a DateTime); returns its length or FMT_E_TOO_BIG. */
static int ch_row(const struct fmt_event *ev, struct fmt_str tenant, struct ch_tenant *t,
		  uint64_t *segments, const char *line, size_t line_len, char *out, size_t cap)
{
	static const char *const outcomes[] = { "unspecified", "success", "failure", "denied" };
	static const char *const names[FMT_F_STRING_COUNT] = {
		"actor_id", "actor_type", "action", "resource_type", "resource_id",
		"source_ip", "user_agent", "request_id", "trace_id",
	};
	uint8_t h[FMT_HASH_BYTES];
	fmt_sha256(line, line_len, h);
	fmt_chain_next(t->chain, h, t->chain);
	if (t->seq++ % CH_SEGMENT_ROWS == 0)
		t->segment_id = ++*segments;
	char id[37], chain[2 * FMT_HASH_BYTES + 1];
	fmt_uuid_format(ev->event_id, id);
	fmt_hex(t->chain, FMT_HASH_BYTES, chain);
	int64_t secs = ev->occurred_at_ns / 1000000000;
	int64_t recv_us = ((int64_t)ev->event_id[14] << 8 | ev->event_id[15]) * 1000;
	json_t *o = json_object(), *keys = json_array(), *values = json_array();
	json_object_set_new(o, "tenant_id", json_stringn(tenant.ptr, tenant.len));
	json_object_set_new(o, "event_id", json_string(id));
	json_object_set_new(o, "seq", json_integer((json_int_t)t->seq));
	json_object_set_new(o, "occurred_at", json_integer(secs < 0 ? 0 : secs > CH_SECONDS_MAX ? CH_SECONDS_MAX : secs));
	json_object_set_new(o, "occurred_at_ns", json_integer(ev->occurred_at_ns));
	json_object_set_new(o, "received_at_ns", json_integer(ev->occurred_at_ns + recv_us));
	for (int f = 0; f < FMT_F_STRING_COUNT; f++) {
		if (f == FMT_F_SOURCE_IP)
			json_object_set_new(o, "outcome", json_string(outcomes[ev->outcome <= 3 ? ev->outcome : 0]));
		json_object_set_new(o, names[f], json_stringn(ev->str[f].ptr, ev->str[f].len));
	}
	for (uint32_t i = 0; i < ev->attr_count; i++) {
		json_array_append_new(keys, json_stringn(ev->attrs[i].key.ptr, ev->attrs[i].key.len));
		json_array_append_new(values, json_stringn(ev->attrs[i].value.ptr, ev->attrs[i].value.len));
	}
	json_object_set_new(o, "attr_keys", keys);
	json_object_set_new(o, "attr_values", values);
	json_object_set_new(o, "details_json", json_stringn(ev->details_json.ptr, ev->details_json.len));
	json_object_set_new(o, "chain_hash", json_string(chain));
	json_object_set_new(o, "segment_id", json_integer((json_int_t)t->segment_id));
	size_t n = json_dumpb(o, out, cap, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	return n == 0 || n >= cap ? FMT_E_TOO_BIG : (int)n;
}

int main(int argc, char **argv)
{
	unsigned long long seed = 1, count = 1000, tenants = GEN_TENANTS_DEFAULT, step = GEN_STEP_DEFAULT_NS;
	bool with_tenant = false, clickhouse = false;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--with-tenant-id") == 0) {
			with_tenant = true;
			continue;
		}
		if (strcmp(argv[i], "--clickhouse") == 0) {
			with_tenant = clickhouse = true;
			continue;
		}
		unsigned long long *dst = strcmp(argv[i], "--seed") == 0      ? &seed
					  : strcmp(argv[i], "--count") == 0   ? &count
					  : strcmp(argv[i], "--tenants") == 0 ? &tenants
					  : strcmp(argv[i], "--step-ns") == 0 ? &step
									      : NULL;
		char *end = NULL;
		if (!dst || i + 1 >= argc || (*dst = strtoull(argv[++i], &end, 10), *end) ||
		    (dst == &tenants && (tenants < 1 || tenants > 100000)) ||
		    (dst == &step && (step < 2 || step > 4000000000ull))) {
			fprintf(stderr, "usage: hodei-bench-gen [--seed N] [--count N] [--tenants 1..100000] "
					"[--step-ns 2..4000000000] [--with-tenant-id | --clickhouse]\n");
			return 2;
		}
	}
	struct gen g;
	if (gen_init(&g, seed, (uint32_t)tenants) != 0)
		return 1;
	g.step_ns = (int64_t)step;
	struct ch_tenant *ch = clickhouse ? calloc(tenants, sizeof(*ch)) : NULL;
	uint64_t segments = 0;
	if (clickhouse && !ch)
		return 1;
	char line[8192], row[16384];
	for (unsigned long long i = 0; i < count; i++) {
		struct fmt_event ev;
		struct fmt_str tenant;
		gen_next(&g, &ev, &tenant);
		int n = gen_ndjson(&ev, with_tenant ? tenant : (struct fmt_str){ 0 }, line, sizeof(line));
		const char *out = line;
		if (n >= 0 && ch) {
			n = ch_row(&ev, tenant, &ch[g.tenant_index], &segments, line, (size_t)n, row,
				   sizeof(row));
			out = row;
		}
		if (n < 0 || fwrite(out, 1, (size_t)n, stdout) != (size_t)n || putchar('\n') == EOF)
			return 1;
	}
	free(ch);
	gen_free(&g);
	return fflush(stdout) == 0 ? 0 : 1;
}
