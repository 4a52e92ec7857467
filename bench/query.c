// SPDX-License-Identifier: Apache-2.0
/*
 * query.c — hodei-bench-query: the query benchmark (issue #5). Two steps,
 * so that hodei-audit and another store (a ClickHouse benchmark reads the
 * same plan) answer the very same questions:
 *
 *   plan  re-runs the deterministic generator (bench/gen.h) with the
 *         parameters the store was loaded with and samples query
 *         parameters from that stream, with its own RNG (--plan-seed), into
 *         one JSON plan on stdout;
 *   run   asks a running hodei-auditd every query of a plan over ONE
 *         connection, one query in flight (this measures latency, not
 *         throughput), checks every answer, and prints per-kind latency
 *         percentiles as one JSON object on stdout and a table on stderr.
 *
 * The six kinds of query (names are part of the plan format):
 *   Q1     latest 100 events of a mid-size tenant, newest first, no filter
 *   Q1top  the same on the top tenant
 *   Q2     one tenant + one actor over one UTC day, first 100 newest first
 *   Q3     exact lookup of one existing event by event_id
 *   Q4     Count by action over the 7 UTC days ending with an event's day
 *   Q5     the top tenant's failures and denials in one UTC day, first 100
 *          newest first: two Searches (FAILURE, DENIED) merged, as a
 *          client must do it; its latency is the sum of both calls
 * Time ranges: from_ns inclusive, to_ns exclusive, days midnight to
 * midnight UTC.
 *
 * Sampling (plan), one pass over the stream in bounded memory: events are
 * counted per tenant (Q1's "mid-size" = count rank in [20, 200), clipped
 * to the tenants that have events; with 20 or fewer, the lower half of the
 * ranks), and three independent reservoirs of --samples events feed Q2, Q3
 * and Q4 — a uniform sample of events, so bigger tenants are asked more,
 * as in reality. Q5 picks a uniform day of the data span. Reservoirs are
 * shuffled at the end, so the warm-up of `run` (the first samples) is not
 * biased towards early events.
 *
 * Run. Kinds are interleaved round-robin (Q1[0], Q1top[0], Q2[0], ...,
 * Q1[1], ...), first --warmup samples per kind unmeasured (taken from the
 * start of each list, cycling when the list is shorter), then every sample
 * --repeat times, measured. A latency covers packing, the call(s) and
 * unpacking: what a client waits. A Search page that comes back short
 * with a page token (the server's scan cap) is followed until the asked
 * number of hits, as a client would; the extra calls count in the latency.
 * A call that fails is an error (counted by status, e.g. UNIMPLEMENTED
 * while Count is missing) and the run goes on; its time is not in the
 * percentiles. A reply that breaks its filter, its order (occurred_at,
 * then seq, newest first) or, for Q3, is not exactly the asked event is
 * "wrong". hits_mean is the mean number of events a query returned (Q4:
 * of groups). UNAUTHENTICATED or PERMISSION_DENIED stops the run (exit 1):
 * nothing after it would be measured.
 *
 * Limits: --samples ≤ SAMPLES_MAX, --repeat ≤ REPEAT_MAX, Search pages
 * followed per query ≤ PAGES_MAX (reaching it counts the query as wrong),
 * plan strings checked against DESIGN.md §5's limits. Latencies are kept
 * and sorted (samples × repeat of them per kind).
 *
 * Exit codes: 0 done (errors and wrong answers are in the report), 1 the
 * plan cannot be read, the target cannot be reached or refused the key,
 * 2 usage.
 */
#include "bench/gen.h"
#include "bench/rng.h"
#include "format/common.h"
#include "format/event.h"
#include "hodei/audit/v1/audit.pb-c.h"
#include "net/grpc_client.h"
#include "net/grpc_status.h"
#include "net/units.h"

#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SAMPLES_DEFAULT 300u
#define SAMPLES_MAX 100000u
#define WARMUP_DEFAULT 20u
#define REPEAT_MAX 1000u
#define TENANTS_MAX 100000u      /* hodei-bench-gen's own limit */
#define STEP_NS_MAX 4000000000ull
#define ACTOR_BYTES_MAX 512u     /* DESIGN.md §5 */
#define SEARCH_LIMIT 100u
#define PAGES_MAX 64u
#define MID_RANK_FROM 20u
#define MID_RANK_TO 200u
#define DAY_NS (86400ll * 1000000000ll)
#define Q4_DAYS 7
#define CONNECT_TIMEOUT_MS 10000
#define CALL_TIMEOUT_DEFAULT_NS (60ll * 1000000000ll)
#define EXIT_FAIL 1
#define EXIT_USAGE 2

#define PATH_SEARCH "/hodei.audit.v1.AuditService/Search"
#define PATH_COUNT "/hodei.audit.v1.AuditService/Count"

_Static_assert(Q4_DAYS >= 1, "Q4 covers at least its event's day");
_Static_assert(MID_RANK_FROM < MID_RANK_TO, "mid-size ranks are a range");
_Static_assert(SEARCH_LIMIT <= 1000, "DESIGN.md §5: Search limit ≤ 1000");

enum kind { Q1, Q1TOP, Q2, Q3, Q4, Q5, KIND_COUNT };
static const char *const kind_names[KIND_COUNT] = { "Q1", "Q1top", "Q2", "Q3", "Q4", "Q5" };

/* Uniform in [0, n), n ≥ 1, from the plan's own splitmix64 stream. */
static uint64_t rng_below(uint64_t *state, uint64_t n)
{
	ASSERT(n > 0);
	return bench_rng_below64(state, n);
}

static int64_t day_start_ns(int64_t t)
{
	int64_t r = t % DAY_NS;
	return t - (r < 0 ? r + DAY_NS : r);
}

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int usage(const char *why)
{
	if (why)
		fprintf(stderr, "hodei-bench-query: %s\n", why);
	fprintf(stderr,
		"usage: hodei-bench-query plan --seed S --count N --tenants T --step-ns X\n"
		"                              [--samples K] [--plan-seed P] > plan.json\n"
		"       hodei-bench-query run --plan FILE --target HOST:PORT [--key KEY]\n"
		"                             [--warmup N] [--only Q1,Q1top,Q2,Q3,Q4,Q5]\n"
		"                             [--repeat R] [--timeout 60s]\n"
		"  --key defaults to $HODEI_API_KEY (an admin key: queries name their tenant).\n");
	return EXIT_USAGE;
}

/* A decimal flag value in [lo, hi]; returns false (after a message) if not. */
static bool flag_u64(const char *name, const char *v, uint64_t lo, uint64_t hi, uint64_t *out)
{
	if (units_parse_u64(v, out) != 0 || *out < lo || *out > hi) {
		fprintf(stderr, "hodei-bench-query: --%s: want a number in %" PRIu64 "..%" PRIu64
				", got \"%s\"\n", name, lo, hi, v);
		return false;
	}
	return true;
}

/* ---- plan ------------------------------------------------------------------------ */

struct plan_args {
	uint64_t seed, count, tenants, step_ns, samples, plan_seed;
};

/* One sampled event of the stream. */
struct pick {
	uint32_t tenant; /* index n of "tenant-%04u" */
	int64_t occurred_at_ns;
	uint8_t event_id[FMT_EVENT_ID_BYTES];
	char actor_id[ACTOR_BYTES_MAX + 1];
};

/* Algorithm R: after `seen` events, slot[0..len) is a uniform sample of
 * min(seen, cap) of them. */
struct reservoir {
	struct pick *slot;
	uint32_t cap, len;
	uint64_t seen;
};

struct plan_state {
	struct plan_args a;
	uint64_t rng;
	uint64_t *per_tenant;    /* [tenants] events counted */
	int64_t first_ns, last_ns;
	struct reservoir res[3]; /* Q2, Q3, Q4 */
};

static uint32_t tenant_index(struct fmt_str t, uint32_t tenants)
{
	/* gen.c names tenant n "tenant-%04u" (a NUL-terminated view into the
	 * generator); anything else means the generator changed. */
	ASSERT(t.len > 7 && t.len <= FMT_TENANT_MAX && memcmp(t.ptr, "tenant-", 7) == 0);
	char *end = NULL;
	unsigned long n = strtoul(t.ptr + 7, &end, 10);
	ASSERT(end == t.ptr + t.len && n < tenants);
	return (uint32_t)n;
}

static void reservoir_offer(struct reservoir *r, uint64_t *rng, const struct fmt_event *ev,
			    uint32_t tenant)
{
	uint64_t i = r->seen++;
	uint64_t at = i < r->cap ? i : rng_below(rng, i + 1);
	if (at >= r->cap)
		return;
	struct pick *p = &r->slot[at];
	if (at == r->len)
		r->len++;
	struct fmt_str actor = ev->str[FMT_F_ACTOR_ID];
	ASSERT(actor.len > 0 && actor.len <= ACTOR_BYTES_MAX);
	p->tenant = tenant;
	p->occurred_at_ns = ev->occurred_at_ns;
	memcpy(p->event_id, ev->event_id, sizeof(p->event_id));
	memcpy(p->actor_id, actor.ptr, actor.len);
	p->actor_id[actor.len] = 0;
}

static void reservoir_shuffle(struct reservoir *r, uint64_t *rng)
{
	for (uint32_t i = r->len; i > 1; i--) {
		uint32_t j = (uint32_t)rng_below(rng, i);
		struct pick t = r->slot[i - 1];
		r->slot[i - 1] = r->slot[j];
		r->slot[j] = t;
	}
}

/* The one pass over the generator: counts and reservoirs. */
static int plan_scan(struct plan_state *ps)
{
	struct gen g;
	if (gen_init(&g, ps->a.seed, (uint32_t)ps->a.tenants) != 0) {
		fprintf(stderr, "hodei-bench-query: plan: out of memory\n");
		return EXIT_FAIL;
	}
	g.step_ns = (int64_t)ps->a.step_ns;
	for (uint64_t i = 0; i < ps->a.count; i++) {
		struct fmt_event ev;
		struct fmt_str tenant;
		gen_next(&g, &ev, &tenant);
		uint32_t t = tenant_index(tenant, (uint32_t)ps->a.tenants);
		ps->per_tenant[t]++;
		if (i == 0)
			ps->first_ns = ev.occurred_at_ns;
		ASSERT(ev.occurred_at_ns >= ps->last_ns); /* the generator's clock only advances */
		ps->last_ns = ev.occurred_at_ns;
		for (int k = 0; k < 3; k++)
			reservoir_offer(&ps->res[k], &ps->rng, &ev, t);
	}
	gen_free(&g);
	return 0;
}

static char *tenant_name(uint32_t t, char out[FMT_TENANT_MAX + 1])
{
	snprintf(out, FMT_TENANT_MAX + 1, "tenant-%04u", t);
	return out;
}

static json_t *obj_tenant(uint32_t t)
{
	char name[FMT_TENANT_MAX + 1];
	return json_pack("{s:s}", "tenant", tenant_name(t, name));
}

static json_t *obj_range(uint32_t t, int64_t from_ns, int64_t to_ns)
{
	char name[FMT_TENANT_MAX + 1];
	return json_pack("{s:s, s:I, s:I}", "tenant", tenant_name(t, name), "from_ns",
			 (json_int_t)from_ns, "to_ns", (json_int_t)to_ns);
}

/* Tenants with events, by count descending (index ascending on ties). */
static const uint64_t *rank_counts;
static int rank_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	if (rank_counts[x] != rank_counts[y])
		return rank_counts[x] > rank_counts[y] ? -1 : 1;
	return x < y ? -1 : x > y;
}

static uint32_t rank_tenants(const struct plan_state *ps, uint32_t *ranked)
{
	uint32_t n = 0;
	for (uint32_t t = 0; t < ps->a.tenants; t++)
		if (ps->per_tenant[t])
			ranked[n++] = t;
	rank_counts = ps->per_tenant;
	qsort(ranked, n, sizeof(*ranked), rank_cmp);
	return n;
}

/* Q1's mid-size ranks [*lo, *hi) among n ranked tenants (n ≥ 1). */
static void mid_ranks(uint32_t n, uint32_t *lo, uint32_t *hi)
{
	*lo = MID_RANK_FROM;
	*hi = FMT_MIN(MID_RANK_TO, n);
	if (*lo >= *hi) {
		*lo = n / 2;
		*hi = n;
	}
	ASSERT(*lo < *hi && *hi <= n);
}

static json_t *plan_queries(struct plan_state *ps, const uint32_t *ranked, uint32_t lo, uint32_t hi)
{
	json_t *q = json_object(), *arr[KIND_COUNT];
	uint32_t top = ranked[0];
	for (int k = 0; k < KIND_COUNT; k++) {
		arr[k] = json_array();
		json_object_set_new(q, kind_names[k], arr[k]);
	}
	for (uint64_t i = 0; i < ps->a.samples; i++) {
		json_array_append_new(arr[Q1], obj_tenant(ranked[lo + rng_below(&ps->rng, hi - lo)]));
		json_array_append_new(arr[Q1TOP], obj_tenant(top));
	}
	for (uint32_t i = 0; i < ps->res[0].len; i++) {
		const struct pick *p = &ps->res[0].slot[i];
		int64_t day = day_start_ns(p->occurred_at_ns);
		char name[FMT_TENANT_MAX + 1];
		json_t *o = json_pack("{s:s, s:s, s:I, s:I}", "tenant", tenant_name(p->tenant, name),
				      "actor_id", p->actor_id, "from_ns", (json_int_t)day, "to_ns",
				      (json_int_t)(day + DAY_NS));
		json_array_append_new(arr[Q2], o);
	}
	for (uint32_t i = 0; i < ps->res[1].len; i++) {
		const struct pick *p = &ps->res[1].slot[i];
		char id[37];
		fmt_uuid_format(p->event_id, id);
		json_t *o = obj_tenant(p->tenant);
		json_object_set_new(o, "event_id", json_string(id));
		json_array_append_new(arr[Q3], o);
	}
	for (uint32_t i = 0; i < ps->res[2].len; i++) {
		const struct pick *p = &ps->res[2].slot[i];
		int64_t to = day_start_ns(p->occurred_at_ns) + DAY_NS;
		json_array_append_new(arr[Q4], obj_range(p->tenant, to - Q4_DAYS * DAY_NS, to));
	}
	int64_t first_day = day_start_ns(ps->first_ns);
	uint64_t days = (uint64_t)((day_start_ns(ps->last_ns) - first_day) / DAY_NS) + 1;
	for (uint64_t i = 0; i < ps->a.samples; i++) {
		int64_t day = first_day + (int64_t)rng_below(&ps->rng, days) * DAY_NS;
		json_array_append_new(arr[Q5], obj_range(top, day, day + DAY_NS));
	}
	return q;
}

static int plan_write(struct plan_state *ps)
{
	uint32_t *ranked = malloc(ps->a.tenants * sizeof(*ranked));
	if (!ranked) {
		fprintf(stderr, "hodei-bench-query: plan: out of memory\n");
		return EXIT_FAIL;
	}
	uint32_t n = rank_tenants(ps, ranked), lo, hi;
	ASSERT(n >= 1); /* count ≥ 1 */
	mid_ranks(n, &lo, &hi);
	for (int k = 0; k < 3; k++)
		reservoir_shuffle(&ps->res[k], &ps->rng);
	char top[FMT_TENANT_MAX + 1];
	json_t *root = json_pack(
		"{s:{s:I, s:I, s:I, s:I}, s:{s:I, s:I, s:s, s:I}, s:{s:I, s:I, s:[I, I]}}",
		"generator", "seed", (json_int_t)ps->a.seed, "count", (json_int_t)ps->a.count,
		"tenants", (json_int_t)ps->a.tenants, "step_ns", (json_int_t)ps->a.step_ns,
		"data", "first_ns", (json_int_t)ps->first_ns, "last_ns", (json_int_t)ps->last_ns,
		"top_tenant", tenant_name(ranked[0], top), "events_per_tenant_top",
		(json_int_t)ps->per_tenant[ranked[0]],
		"plan", "seed", (json_int_t)ps->a.plan_seed, "samples", (json_int_t)ps->a.samples,
		"q1_ranks", (json_int_t)lo, (json_int_t)hi);
	ASSERT(root);
	json_object_set_new(root, "queries", plan_queries(ps, ranked, lo, hi));
	uint64_t top_count = ps->per_tenant[ranked[0]];
	free(ranked);
	int rc = json_dumpf(root, stdout, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
	json_decref(root);
	if (rc != 0 || putchar('\n') == EOF || fflush(stdout) != 0) {
		fprintf(stderr, "hodei-bench-query: plan: cannot write the plan to stdout\n");
		return EXIT_FAIL;
	}
	fprintf(stderr, "hodei-bench-query: plan: %" PRIu64 " events, %u tenants with events, "
			"top %s (%" PRIu64 "), Q1 ranks [%u, %u)\n",
		ps->a.count, n, top, top_count, lo, hi);
	return 0;
}

static int plan_parse(int argc, char **argv, struct plan_args *a)
{
	static const struct option opts[] = {
		{ "seed", required_argument, 0, 's' },    { "count", required_argument, 0, 'c' },
		{ "tenants", required_argument, 0, 't' }, { "step-ns", required_argument, 0, 'x' },
		{ "samples", required_argument, 0, 'k' }, { "plan-seed", required_argument, 0, 'p' },
		{ 0, 0, 0, 0 },
	};
	*a = (struct plan_args){ .seed = 1, .count = 1000, .tenants = GEN_TENANTS_DEFAULT,
				 .step_ns = GEN_STEP_DEFAULT_NS, .samples = SAMPLES_DEFAULT,
				 .plan_seed = 1 };
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		const char *name = NULL;
		for (const struct option *o = opts; o->name; o++)
			if (o->val == c)
				name = o->name;
		bool ok = c == 's'   ? flag_u64(name, optarg, 0, UINT64_MAX, &a->seed)
			  : c == 'c' ? flag_u64(name, optarg, 1, INT64_MAX, &a->count)
			  : c == 't' ? flag_u64(name, optarg, 1, TENANTS_MAX, &a->tenants)
			  : c == 'x' ? flag_u64(name, optarg, 2, STEP_NS_MAX, &a->step_ns)
			  : c == 'k' ? flag_u64(name, optarg, 1, SAMPLES_MAX, &a->samples)
			  : c == 'p' ? flag_u64(name, optarg, 0, UINT64_MAX, &a->plan_seed)
				     : false;
		if (!ok)
			return usage(NULL);
	}
	if (optind != argc)
		return usage("plan: unexpected argument");
	return 0;
}

static int cmd_plan(int argc, char **argv)
{
	struct plan_state ps = { 0 };
	int rc = plan_parse(argc, argv, &ps.a);
	if (rc)
		return rc;
	ps.rng = ps.a.plan_seed;
	ps.per_tenant = calloc(ps.a.tenants, sizeof(*ps.per_tenant));
	rc = ps.per_tenant ? 0 : EXIT_FAIL;
	for (int k = 0; k < 3 && rc == 0; k++) {
		ps.res[k].cap = (uint32_t)ps.a.samples;
		ps.res[k].slot = calloc(ps.a.samples, sizeof(struct pick));
		if (!ps.res[k].slot)
			rc = EXIT_FAIL;
	}
	if (rc)
		fprintf(stderr, "hodei-bench-query: plan: out of memory\n");
	else
		rc = plan_scan(&ps);
	if (rc == 0)
		rc = plan_write(&ps);
	for (int k = 0; k < 3; k++)
		free(ps.res[k].slot);
	free(ps.per_tenant);
	return rc;
}

/* ---- run: the plan ----------------------------------------------------------------- */

struct query {
	char tenant[FMT_TENANT_MAX + 1];
	char actor_id[ACTOR_BYTES_MAX + 1];
	int64_t from_ns, to_ns;
	uint8_t event_id[FMT_EVENT_ID_BYTES];
};

struct kind_run {
	bool on;
	uint32_t n;
	struct query *q;
	/* Results of the measured queries. */
	double *lat_us; /* [n × repeat], the OK ones */
	uint64_t measured, ok, errors, wrong;
	double hits_sum;
	uint64_t by_status[GRPC_STATUS_COUNT];
	char first_error[NET_GRPC_MESSAGE_TEXT_MAX + 64];
};

static bool copy_str(char *dst, size_t cap, const char *src)
{
	size_t n = strlen(src);
	if (n == 0 || n >= cap)
		return false;
	memcpy(dst, src, n + 1);
	return true;
}

/* One sample of kind k from its JSON object; false with *why set. */
static bool query_parse(enum kind k, json_t *o, struct query *q, const char **why)
{
	const char *tenant = NULL, *actor = NULL, *id = NULL;
	json_int_t from = 0, to = 0;
	json_error_t err;
	int rc = k == Q1 || k == Q1TOP ? json_unpack_ex(o, &err, 0, "{s:s}", "tenant", &tenant)
		 : k == Q2 ? json_unpack_ex(o, &err, 0, "{s:s, s:s, s:I, s:I}", "tenant", &tenant,
					    "actor_id", &actor, "from_ns", &from, "to_ns", &to)
		 : k == Q3 ? json_unpack_ex(o, &err, 0, "{s:s, s:s}", "tenant", &tenant, "event_id", &id)
			   : json_unpack_ex(o, &err, 0, "{s:s, s:I, s:I}", "tenant", &tenant, "from_ns",
					    &from, "to_ns", &to);
	*why = "missing or mistyped field (tenant, actor_id, event_id, from_ns, to_ns)";
	if (rc != 0)
		return false;
	*why = "tenant is not a valid tenant id";
	if (!fmt_tenant_valid((struct fmt_str){ tenant, (uint32_t)strlen(tenant) }) ||
	    !copy_str(q->tenant, sizeof(q->tenant), tenant))
		return false;
	*why = "actor_id empty or over 512 bytes";
	if (actor && !copy_str(q->actor_id, sizeof(q->actor_id), actor))
		return false;
	*why = "event_id is not a UUID";
	if (id && fmt_uuid_parse(id, strlen(id), q->event_id) != 0)
		return false;
	*why = "from_ns must be ≥ 0 and below to_ns";
	if ((k == Q2 || k == Q4 || k == Q5) && (from < 0 || from >= to))
		return false;
	q->from_ns = from;
	q->to_ns = to;
	return true;
}

static int plan_load_kind(json_t *queries, enum kind k, struct kind_run *kr, const char *path)
{
	json_t *arr = json_object_get(queries, kind_names[k]);
	if (!arr) {
		fprintf(stderr, "hodei-bench-query: run: %s: no queries.%s: skipped\n", path,
			kind_names[k]);
		kr->on = false;
		return 0;
	}
	if (!json_is_array(arr) || json_array_size(arr) > SAMPLES_MAX * 10) {
		fprintf(stderr, "hodei-bench-query: run: %s: queries.%s is not an array of at most %u\n",
			path, kind_names[k], SAMPLES_MAX * 10);
		return EXIT_FAIL;
	}
	kr->n = (uint32_t)json_array_size(arr);
	kr->q = calloc(kr->n ? kr->n : 1, sizeof(*kr->q));
	if (!kr->q) {
		fprintf(stderr, "hodei-bench-query: run: out of memory\n");
		return EXIT_FAIL;
	}
	for (uint32_t i = 0; i < kr->n; i++) {
		const char *why;
		if (!query_parse(k, json_array_get(arr, i), &kr->q[i], &why)) {
			fprintf(stderr, "hodei-bench-query: run: %s: queries.%s[%u]: %s\n", path,
				kind_names[k], i, why);
			return EXIT_FAIL;
		}
	}
	return 0;
}

/* Loads the plan; *generator gets a new reference to its "generator". */
static int plan_load(const char *path, struct kind_run *kinds, json_t **generator)
{
	json_error_t err;
	json_t *root = json_load_file(path, 0, &err);
	if (!root) {
		if (err.line > 0)
			fprintf(stderr, "hodei-bench-query: run: %s: line %d: %s\n", path, err.line,
				err.text);
		else
			fprintf(stderr, "hodei-bench-query: run: cannot read the plan: %s\n", err.text);
		return EXIT_FAIL;
	}
	json_t *queries = json_object_get(root, "queries");
	*generator = json_incref(json_object_get(root, "generator"));
	int rc = 0;
	if (!json_is_object(queries) || !json_is_object(*generator)) {
		fprintf(stderr, "hodei-bench-query: run: %s: no \"queries\" or \"generator\" object: "
				"not a plan\n", path);
		rc = EXIT_FAIL;
	}
	for (int k = 0; k < KIND_COUNT && rc == 0; k++)
		if (kinds[k].on)
			rc = plan_load_kind(queries, (enum kind)k, &kinds[k], path);
	json_decref(root);
	return rc;
}

/* ---- run: calls ------------------------------------------------------------------- */

struct client {
	const char *target;
	struct net_grpc_conn *conn;
	char auth[1024];
	int timeout_ms;
};

/* What one query came to. */
struct outcome {
	int code;        /* grpc status of the first failed call, or OK */
	char message[NET_GRPC_MESSAGE_TEXT_MAX];
	int64_t ns;      /* summed over its calls */
	uint64_t hits;
	bool wrong;
};

/* The hits of one logical Search, across the pages it took. */
struct hits {
	Hodei__Audit__V1__SearchResponse *page[PAGES_MAX];
	uint32_t pages;
	Hodei__Audit__V1__StoredEvent *ev[SEARCH_LIMIT];
	uint32_t n;
	bool over;       /* more hits than asked, or PAGES_MAX reached */
};

static void hits_free(struct hits *h)
{
	for (uint32_t i = 0; i < h->pages; i++)
		protobuf_c_message_free_unpacked(&h->page[i]->base, NULL);
	h->pages = 0;
	h->n = 0;
}

static int client_connect(struct client *cl)
{
	struct net_grpc_status st;
	net_grpc_close(cl->conn);
	cl->conn = NULL;
	if (net_grpc_connect(cl->target, CONNECT_TIMEOUT_MS, &cl->conn, &st) != 0) {
		fprintf(stderr, "hodei-bench-query: run: cannot connect to %s: %s: %s\n", cl->target,
			grpc_status_name(st.code), st.message);
		return EXIT_FAIL;
	}
	return 0;
}

/* One unary call, timed from packing the request to unpacking the reply.
 * On OK, *resp is the reply (caller frees). The outcome keeps the first
 * failure. */
static bool call(struct client *cl, const char *path, const char *tenant,
		 const ProtobufCMessage *req, const ProtobufCMessageDescriptor *desc,
		 ProtobufCMessage **resp, struct outcome *out)
{
	struct net_grpc_md md[2] = { { "authorization", cl->auth }, { "x-hodei-tenant", tenant } };
	struct net_grpc_status st = { GRPC_OK, "" };
	uint8_t stack[4096], *buf = stack, *body = NULL;
	size_t len = protobuf_c_message_get_packed_size(req), body_len = 0;
	int64_t t0 = mono_ns();
	if (len > sizeof(stack) && !(buf = malloc(len))) {
		st = (struct net_grpc_status){ GRPC_INTERNAL, "out of memory packing the request" };
		goto done;
	}
	protobuf_c_message_pack(req, buf);
	if (net_grpc_unary(cl->conn, path, md, 2, buf, len, cl->timeout_ms, &body, &body_len, &st) ==
	    0) {
		*resp = protobuf_c_message_unpack(desc, NULL, body_len, body);
		if (!*resp)
			st = (struct net_grpc_status){ GRPC_INTERNAL, "cannot decode the response" };
	}
done:
	out->ns += mono_ns() - t0;
	if (buf != stack)
		free(buf);
	free(body);
	if (st.code != GRPC_OK && out->code == GRPC_OK) {
		out->code = st.code;
		snprintf(out->message, sizeof(out->message), "%s", st.message);
	}
	return st.code == GRPC_OK;
}

/* Searches until `want` hits or no page token. Returns false on a failed call. */
static bool search(struct client *cl, const char *tenant, Hodei__Audit__V1__SearchRequest req,
		   uint32_t want, struct hits *h, struct outcome *out)
{
	ASSERT(want >= 1 && want <= SEARCH_LIMIT);
	h->pages = h->n = 0;
	h->over = false;
	for (;;) {
		Hodei__Audit__V1__SearchResponse *r = NULL;
		req.limit = want - h->n;
		if (!call(cl, PATH_SEARCH, tenant, &req.base, &hodei__audit__v1__search_response__descriptor,
			  (ProtobufCMessage **)&r, out))
			return false;
		h->page[h->pages++] = r;
		for (size_t i = 0; i < r->n_events; i++) {
			if (h->n == want) {
				h->over = true; /* the server sent more than the limit */
				break;
			}
			h->ev[h->n++] = r->events[i];
		}
		if (h->n == want || r->next_page_token.len == 0)
			return true;
		if (h->pages == PAGES_MAX) {
			h->over = true;
			return true;
		}
		req.page_token = r->next_page_token; /* lives in h->page[] */
	}
}

static bool bin_eq(ProtobufCBinaryData b, const void *p, size_t len)
{
	return b.len == len && (len == 0 || memcmp(b.data, p, len) == 0);
}

/* Newest first: (occurred_at, seq) strictly descending. */
static bool before(const Hodei__Audit__V1__StoredEvent *a, const Hodei__Audit__V1__StoredEvent *b)
{
	return a->event->occurred_at_ns > b->event->occurred_at_ns ||
	       (a->event->occurred_at_ns == b->event->occurred_at_ns && a->seq > b->seq);
}

/* Does every hit satisfy the query's filter, in newest-first order? */
static bool hits_valid(Hodei__Audit__V1__StoredEvent *const *ev, uint32_t n, const struct query *q,
		       int outcome)
{
	for (uint32_t i = 0; i < n; i++) {
		const Hodei__Audit__V1__StoredEvent *s = ev[i];
		if (!s->event || !bin_eq(s->tenant_id, q->tenant, strlen(q->tenant)))
			return false;
		const Hodei__Audit__V1__AuditEvent *e = s->event;
		if (q->actor_id[0] && !bin_eq(e->actor_id, q->actor_id, strlen(q->actor_id)))
			return false;
		if (q->to_ns && (e->occurred_at_ns < q->from_ns || e->occurred_at_ns >= q->to_ns))
			return false;
		if (outcome && (int)e->outcome != outcome)
			return false;
		if (i > 0 && !before(ev[i - 1], s))
			return false;
	}
	return true;
}

static void run_search_kind(struct client *cl, enum kind k, const struct query *q,
			    struct outcome *out)
{
	Hodei__Audit__V1__SearchRequest req = HODEI__AUDIT__V1__SEARCH_REQUEST__INIT;
	struct hits h;
	uint32_t want = SEARCH_LIMIT;
	if (k == Q2) {
		req.actor_id = (ProtobufCBinaryData){ strlen(q->actor_id), (uint8_t *)q->actor_id };
		req.from_ns = q->from_ns;
		req.to_ns = q->to_ns;
	} else if (k == Q3) {
		req.event_id = (ProtobufCBinaryData){ FMT_EVENT_ID_BYTES, (uint8_t *)q->event_id };
		want = 1;
	}
	if (search(cl, q->tenant, req, want, &h, out)) {
		out->hits = h.n;
		out->wrong = h.over || !hits_valid(h.ev, h.n, q, 0);
		/* hits_valid checked that every hit has its event. */
		if (k == Q3 && !out->wrong)
			out->wrong = h.n != 1 ||
				     !bin_eq(h.ev[0]->event->event_id, q->event_id, FMT_EVENT_ID_BYTES);
	}
	hits_free(&h);
}

/* Q5: FAILURE and DENIED, each first 100 newest first, merged, first 100. */
static void run_q5(struct client *cl, const struct query *q, struct outcome *out)
{
	static const int outcomes[2] = { HODEI__AUDIT__V1__OUTCOME__OUTCOME_FAILURE,
					 HODEI__AUDIT__V1__OUTCOME__OUTCOME_DENIED };
	struct hits h[2] = { { .pages = 0 }, { .pages = 0 } };
	bool ok = true;
	for (int i = 0; i < 2 && ok; i++) {
		Hodei__Audit__V1__SearchRequest req = HODEI__AUDIT__V1__SEARCH_REQUEST__INIT;
		req.from_ns = q->from_ns;
		req.to_ns = q->to_ns;
		req.outcome = outcomes[i];
		ok = search(cl, q->tenant, req, SEARCH_LIMIT, &h[i], out);
		out->wrong |= ok && (h[i].over || !hits_valid(h[i].ev, h[i].n, q, outcomes[i]));
	}
	if (ok && out->wrong) {
		out->hits = FMT_MIN(SEARCH_LIMIT, h[0].n + h[1].n);
	} else if (ok) {
		/* Both lists are valid, so every hit has its event. */
		Hodei__Audit__V1__StoredEvent *merged[SEARCH_LIMIT];
		uint32_t a = 0, b = 0, n = 0;
		while (n < SEARCH_LIMIT && (a < h[0].n || b < h[1].n))
			merged[n++] = b == h[1].n || (a < h[0].n && before(h[0].ev[a], h[1].ev[b]))
					      ? h[0].ev[a++]
					      : h[1].ev[b++];
		out->hits = n;
		out->wrong |= !hits_valid(merged, n, q, 0);
	}
	hits_free(&h[0]);
	hits_free(&h[1]);
}

static void run_q4(struct client *cl, const struct query *q, struct outcome *out)
{
	Hodei__Audit__V1__SearchRequest filter = HODEI__AUDIT__V1__SEARCH_REQUEST__INIT;
	Hodei__Audit__V1__CountRequest req = HODEI__AUDIT__V1__COUNT_REQUEST__INIT;
	Hodei__Audit__V1__CountResponse *r = NULL;
	filter.from_ns = q->from_ns;
	filter.to_ns = q->to_ns;
	req.filter = &filter;
	req.group_by = (ProtobufCBinaryData){ 6, (uint8_t *)"action" };
	if (!call(cl, PATH_COUNT, q->tenant, &req.base, &hodei__audit__v1__count_response__descriptor,
		  (ProtobufCMessage **)&r, out))
		return;
	uint64_t sum = 0;
	for (size_t i = 0; i < r->n_groups; i++)
		sum += r->groups[i]->count;
	out->hits = r->n_groups;
	out->wrong = sum != r->total;
	protobuf_c_message_free_unpacked(&r->base, NULL);
}

static void run_one(struct client *cl, enum kind k, const struct query *q, struct outcome *out)
{
	*out = (struct outcome){ .code = GRPC_OK };
	if (k == Q4)
		run_q4(cl, q, out);
	else if (k == Q5)
		run_q5(cl, q, out);
	else
		run_search_kind(cl, k, q, out);
}

/* ---- run: loop and report ---------------------------------------------------------- */

static void record(struct kind_run *kr, const struct outcome *o)
{
	kr->measured++;
	kr->by_status[o->code >= 0 && o->code < GRPC_STATUS_COUNT ? o->code : GRPC_UNKNOWN]++;
	if (o->code != GRPC_OK) {
		if (kr->errors++ == 0)
			snprintf(kr->first_error, sizeof(kr->first_error), "%s: %s",
				 grpc_status_name(o->code), o->message);
		return;
	}
	kr->lat_us[kr->ok++] = (double)o->ns / 1000.0;
	kr->hits_sum += (double)o->hits;
	kr->wrong += o->wrong;
}

/* Runs sample i % n of each kind, round-robin. Returns 0 or EXIT_FAIL
 * (connection lost for good, key refused). */
static int run_round(struct client *cl, struct kind_run *kinds, uint32_t i, bool measure)
{
	for (int k = 0; k < KIND_COUNT; k++) {
		struct kind_run *kr = &kinds[k];
		if (!kr->on || kr->n == 0 || (measure && i >= kr->n))
			continue;
		if (!net_grpc_usable(cl->conn) && client_connect(cl) != 0)
			return EXIT_FAIL;
		struct outcome o;
		run_one(cl, (enum kind)k, &kr->q[i % kr->n], &o);
		if (o.code == GRPC_UNAUTHENTICATED || o.code == GRPC_PERMISSION_DENIED) {
			fprintf(stderr, "hodei-bench-query: run: %s refused the key (%s: %s)\n",
				cl->target, grpc_status_name(o.code), o.message);
			return EXIT_FAIL;
		}
		if (measure)
			record(kr, &o);
	}
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v[0..n), n ≥ 1. */
static double pct(const double *v, uint64_t n, double p)
{
	uint64_t r = (uint64_t)ceil(p * (double)n);
	return v[r ? r - 1 : 0];
}

/* The figures of one kind; NAN where nothing succeeded (printed as null). */
static void kind_figures(struct kind_run *kr, double fig[6])
{
	for (int i = 0; i < 6; i++)
		fig[i] = NAN;
	if (kr->ok == 0)
		return;
	qsort(kr->lat_us, kr->ok, sizeof(double), cmp_double);
	double sum = 0;
	for (uint64_t i = 0; i < kr->ok; i++)
		sum += kr->lat_us[i];
	fig[0] = pct(kr->lat_us, kr->ok, 0.50);
	fig[1] = pct(kr->lat_us, kr->ok, 0.95);
	fig[2] = pct(kr->lat_us, kr->ok, 0.99);
	fig[3] = kr->lat_us[kr->ok - 1];
	fig[4] = sum / (double)kr->ok;
	fig[5] = kr->hits_sum / (double)kr->ok;
}

static const char *const figure_names[6] = { "p50_us", "p95_us", "p99_us", "max_us", "mean_us",
					      "hits_mean" };

static json_t *kind_report(struct kind_run *kr, double fig[6])
{
	json_t *o = json_pack("{s:I, s:I, s:I}", "samples", (json_int_t)kr->measured, "errors",
			      (json_int_t)kr->errors, "wrong", (json_int_t)kr->wrong);
	kind_figures(kr, fig);
	for (int i = 0; i < 6; i++) {
		double scale = i == 5 ? 100.0 : 10.0; /* 0.1 µs, 0.01 hits */
		json_object_set_new(o, figure_names[i], isnan(fig[i])
								 ? json_null()
								 : json_real(round(fig[i] * scale) / scale));
	}
	json_t *st = json_object();
	for (int c = 0; c < GRPC_STATUS_COUNT; c++)
		if (kr->by_status[c])
			json_object_set_new(st, grpc_status_name(c),
					    json_integer((json_int_t)kr->by_status[c]));
	json_object_set_new(o, "statuses", st);
	if (kr->errors)
		json_object_set_new(o, "first_error", json_string(kr->first_error));
	return o;
}

static void table_row(const char *name, const struct kind_run *kr, const double fig[6])
{
	fprintf(stderr, "%-6s %8" PRIu64 " %7" PRIu64 " %6" PRIu64, name, kr->measured, kr->errors,
		kr->wrong);
	fprintf(stderr, " %10.1f %10.1f %10.1f %10.1f %10.1f %7.2f\n", fig[0], fig[1], fig[2], fig[3],
		fig[4], fig[5]);
}

static int report(const char *target, json_t *generator, uint64_t warmup, uint64_t repeat,
		  struct kind_run *kinds)
{
	json_t *root = json_pack("{s:s, s:s, s:O, s:I, s:I}", "benchmark", "query", "target", target,
				 "generator", generator, "warmup", (json_int_t)warmup, "repeat",
				 (json_int_t)repeat);
	json_t *q = json_object();
	json_object_set_new(root, "queries", q);
	fprintf(stderr, "%-6s %8s %7s %6s %10s %10s %10s %10s %10s %7s\n", "query", "samples",
		"errors", "wrong", "p50_us", "p95_us", "p99_us", "max_us", "mean_us", "hits");
	for (int k = 0; k < KIND_COUNT; k++) {
		if (!kinds[k].on)
			continue;
		double fig[6];
		json_t *o = kind_report(&kinds[k], fig);
		table_row(kind_names[k], &kinds[k], fig);
		json_object_set_new(q, kind_names[k], o);
		if (kinds[k].errors)
			fprintf(stderr, "  %s: first error: %s\n", kind_names[k], kinds[k].first_error);
	}
	/* 12 digits print 0.1 µs-rounded values as they are (5989.1, not 5989.1000000000004). */
	int rc = json_dumpf(root, stdout, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12));
	json_decref(root);
	if (rc != 0 || putchar('\n') == EOF || fflush(stdout) != 0) {
		fprintf(stderr, "hodei-bench-query: run: cannot write the report to stdout\n");
		return EXIT_FAIL;
	}
	return 0;
}

struct run_args {
	const char *plan, *target, *key;
	uint64_t warmup, repeat;
	int64_t timeout_ns;
};

static bool parse_only(const char *list, struct kind_run *kinds)
{
	char buf[256];
	if (snprintf(buf, sizeof(buf), "%s", list) >= (int)sizeof(buf))
		return false;
	for (int k = 0; k < KIND_COUNT; k++)
		kinds[k].on = false;
	for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		int k = 0;
		while (k < KIND_COUNT && strcmp(t, kind_names[k]) != 0)
			k++;
		if (k == KIND_COUNT)
			return false;
		kinds[k].on = true;
	}
	return true;
}

static int run_parse(int argc, char **argv, struct run_args *a, struct kind_run *kinds)
{
	static const struct option opts[] = {
		{ "plan", required_argument, 0, 'p' },   { "target", required_argument, 0, 't' },
		{ "key", required_argument, 0, 'k' },    { "warmup", required_argument, 0, 'w' },
		{ "only", required_argument, 0, 'o' },   { "repeat", required_argument, 0, 'r' },
		{ "timeout", required_argument, 0, 'T' }, { 0, 0, 0, 0 },
	};
	*a = (struct run_args){ .key = getenv("HODEI_API_KEY"), .warmup = WARMUP_DEFAULT, .repeat = 1,
				.timeout_ns = CALL_TIMEOUT_DEFAULT_NS };
	for (int k = 0; k < KIND_COUNT; k++)
		kinds[k].on = true;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		bool ok = true;
		switch (c) {
		case 'p': a->plan = optarg; break;
		case 't': a->target = optarg; break;
		case 'k': a->key = optarg; break;
		case 'w': ok = flag_u64("warmup", optarg, 0, SAMPLES_MAX, &a->warmup); break;
		case 'r': ok = flag_u64("repeat", optarg, 1, REPEAT_MAX, &a->repeat); break;
		case 'o': ok = parse_only(optarg, kinds); break;
		case 'T':
			ok = units_parse_duration_ns(optarg, 0, &a->timeout_ns) == 0 &&
			     a->timeout_ns >= 1000000 && a->timeout_ns / 1000000 <= INT32_MAX;
			break;
		default: ok = false;
		}
		if (!ok)
			return usage(c == 'o'   ? "--only: a comma-separated list of Q1,Q1top,Q2,Q3,Q4,Q5"
				     : c == 'T' ? "--timeout: a duration such as 30s or 500ms"
						: NULL);
	}
	if (optind != argc)
		return usage("run: unexpected argument");
	if (!a->plan || !a->target)
		return usage("run: --plan and --target are required");
	if (!a->key || !a->key[0] || strpbrk(a->key, "\r\n") || strlen(a->key) > 900)
		return usage("run: --key (or $HODEI_API_KEY): a plausible API key is required");
	return 0;
}

static int run_all(struct client *cl, struct kind_run *kinds, const struct run_args *a)
{
	uint32_t max_n = 0;
	for (int k = 0; k < KIND_COUNT; k++) {
		struct kind_run *kr = &kinds[k];
		if (!kr->on)
			continue;
		kr->lat_us = malloc((kr->n * a->repeat + 1) * sizeof(double));
		if (!kr->lat_us) {
			fprintf(stderr, "hodei-bench-query: run: out of memory\n");
			return EXIT_FAIL;
		}
		max_n = FMT_MAX(max_n, kr->n);
	}
	for (uint32_t i = 0; i < a->warmup; i++)
		if (run_round(cl, kinds, i, false) != 0)
			return EXIT_FAIL;
	for (uint64_t r = 0; r < a->repeat; r++)
		for (uint32_t i = 0; i < max_n; i++)
			if (run_round(cl, kinds, i, true) != 0)
				return EXIT_FAIL;
	return 0;
}

static int cmd_run(int argc, char **argv)
{
	struct run_args a;
	struct kind_run kinds[KIND_COUNT] = { 0 };
	struct client cl = { 0 };
	json_t *generator = NULL;
	int rc = run_parse(argc, argv, &a, kinds);
	if (rc)
		return rc;
	rc = plan_load(a.plan, kinds, &generator);
	if (rc == 0) {
		cl.target = a.target;
		cl.timeout_ms = (int)(a.timeout_ns / 1000000);
		snprintf(cl.auth, sizeof(cl.auth), "Bearer %s", a.key);
		rc = client_connect(&cl);
	}
	if (rc == 0)
		rc = run_all(&cl, kinds, &a);
	if (rc == 0)
		rc = report(a.target, generator, a.warmup, a.repeat, kinds);
	net_grpc_close(cl.conn);
	json_decref(generator);
	for (int k = 0; k < KIND_COUNT; k++) {
		free(kinds[k].q);
		free(kinds[k].lat_us);
	}
	return rc;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "plan") == 0)
		return cmd_plan(argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "run") == 0)
		return cmd_run(argc - 1, argv + 1);
	return usage(argc >= 2 && strcmp(argv[1], "--help") != 0 ? "unknown command" : NULL);
}
