/* SPDX-License-Identifier: Apache-2.0
 *
 * gen.h — a deterministic generator of realistic audit events for the
 * benchmarks (issue #5): the same seed gives the same events, byte for
 * byte, on every machine.
 *
 * Shape (checked by tests/unit/bench/test_gen.c):
 *   - tenants (default 1,000) drawn with Zipf skew s = 0.9: the top tenant
 *     has about 9.5 % of the events;
 *   - per tenant, a pool of users (user-<n>@<tenant>.example) and service
 *     accounts (svc-<name>), 85 % / 15 % of events;
 *   - 60 action verbs over 12 resource types, resource ids from a pool;
 *   - outcomes 90 % success, 7 % failure, 3 % denied;
 *   - IPv4 (80 %) and IPv6 source addresses, 12 user agents, a W3C trace id
 *     and a request id on every event;
 *   - 0 to 5 attributes, and a details JSON object of 50 to 300 bytes;
 *   - about 700 bytes per event as NDJSON (the JSON form of DESIGN.md §5).
 * Times advance by a fixed mean step from a fixed start, so they are
 * deterministic too (not the wall clock).
 */
#ifndef HODEI_BENCH_GEN_H
#define HODEI_BENCH_GEN_H

#include "format/event.h"

#include <stddef.h>
#include <stdint.h>

#define GEN_TENANTS_DEFAULT 1000u
#define GEN_ATTRS_MAX 5u
#define GEN_STEP_DEFAULT_NS 1000ll
#define GEN_START_NS 1767225600000000000ll /* 2026-01-01T00:00:00Z */

struct gen {
	uint64_t state;          /* splitmix64 */
	uint32_t tenants;
	double *zipf_cdf;        /* [tenants] */
	int64_t now_ns;
	int64_t step_ns;         /* mean gap between events (default 1 µs) */
	uint64_t count;
	uint32_t tenant_index;   /* the current event's tenant, 0 .. tenants - 1 (rank by size) */
	/* The current event's strings (valid until the next gen_next). */
	char tenant[FMT_TENANT_MAX + 1];
	char buf[2048];
	struct fmt_attr attrs[GEN_ATTRS_MAX];
};

/* Returns 0 or FMT_E_NOMEM / FMT_E_INVALID (tenants 0). Events are
 * GEN_STEP_DEFAULT_NS apart on average; set g->step_ns (2 .. 4e9) after
 * gen_init to spread them wider, e.g. 10 M events over 30 days for the
 * query benchmark (the draws, hence every other field, do not change). */
int gen_init(struct gen *g, uint64_t seed, uint32_t tenants);
void gen_free(struct gen *g);

/* The next event (its views point into g) and its tenant. */
void gen_next(struct gen *g, struct fmt_event *ev, struct fmt_str *tenant);

/* The event as one NDJSON line (DESIGN.md §5 JSON form; with "tenant_id"
 * unless tenant is empty, for tools that split by tenant, such as a
 * ClickHouse JSONEachRow feed) into out; returns its length without the
 * newline, or FMT_E_TOO_BIG. Uses jansson. */
int gen_ndjson(const struct fmt_event *ev, struct fmt_str tenant, char *out, size_t cap);

#endif
