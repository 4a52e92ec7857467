// SPDX-License-Identifier: Apache-2.0
/*
 * append_bench.c — hodei-bench-append: the in-process append benchmark.
 *
 * What it measures: how many realistic audit events per second the engine
 * acknowledges as durable (the callback of eng_append_submit() runs only
 * after the WAL record is covered by a completed fsync), how long a batch
 * waits for that acknowledgement, and how well group commit amortises the
 * fsyncs. No network, no protobuf: this is the ceiling the server can get
 * from the engine.
 *
 * How. N producer threads each own an eng_producer and a fixed set of
 * `inflight` batch slots. A producer fills a free slot with `batch` events
 * for one tenant (picked uniformly among `tenants`), submits it, and when
 * no slot is free (or the engine's queue is full) waits for completions;
 * each callback records the batch's submit→ack latency and frees its slot.
 * So every producer keeps up to `inflight` batches in the engine at all
 * times — a closed loop, like a server with that many requests in flight.
 *
 * Events are built once per producer into a pool of templates (strings in
 * an arena, deterministic from --seed), so that generating load costs
 * little CPU next to the engine on a small machine; per batch the producer
 * copies the event views and stamps a fresh UUIDv7 event_id (unique, so
 * the dedup memory is exercised as it is in production) and occurred_at.
 *
 * The run is: warm-up (not measured), then the measured window of
 * --seconds or until --events events were acked. Figures are differences
 * of counters taken at the two ends of the window (ours, the engine's
 * eng_shard_stats, and the kernel's per-thread CPU and run-queue wait, so
 * a reader can tell a busy engine from a busy machine). Latency counts
 * batches submitted and acked inside the window, in a log-linear
 * histogram of 1/64 precision (bounded memory, like HdrHistogram).
 *
 * Output: a human summary on stderr, one JSON object on stdout (and in
 * --json-out). It never asserts on time: a slow machine gives small
 * numbers, not a failure. It exits non-zero only when it could not run.
 */
#include "bench/hist.h"
#include "bench/rng.h"
#include "engine/engine.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define PRODUCERS_MAX 256u
#define INFLIGHT_MAX 4096u
#define TENANTS_MAX 1000000u
#define POOL_EVENTS_DEFAULT 16384u
#define TIMELINE_MAX 3600u
#define STATUS_KINDS_MAX 16u
#define THREADS_MAX 512u
#define TICK_NS (10 * 1000000ll)
#define NS_PER_S 1000000000ll

/* ---- configuration ------------------------------------------------------- */

struct bench_config {
	uint32_t producers;
	uint32_t tenants;
	uint32_t batch;
	uint32_t inflight;
	double seconds;
	bool seconds_set;
	uint64_t events;         /* 0: run for `seconds` */
	double warmup_s;
	enum eng_io_backend io;
	uint32_t shards;         /* 0: engine default (one per CPU) */
	const char *data_dir;    /* NULL: fresh mkdtemp dir */
	bool keep;
	uint64_t seed;
	const char *json_out;
	uint32_t pool_events;
	uint64_t memtable_budget_mb; /* 0: engine default */
	uint32_t queue_depth;        /* 0: engine default */
};

/* ---- deterministic PRNG (bench/rng.h) -------------------------------------- */

static uint32_t rng_below(uint64_t *state, uint32_t n)
{
	ASSERT(n > 0);
	return bench_rng_below32(state, n);
}

/* ---- realistic events ------------------------------------------------------ */

struct action_def {
	const char *action;
	const char *resource_type;
	const char *id_prefix;
	uint32_t weight;
};

/* Reads dominate, as in real audit trails (weights are relative). */
static const struct action_def actions[] = {
	{ "document.read", "document", "doc", 300 },     { "document.update", "document", "doc", 80 },
	{ "document.create", "document", "doc", 40 },    { "document.delete", "document", "doc", 10 },
	{ "document.share", "document", "doc", 20 },     { "user.login", "user", "usr", 100 },
	{ "user.logout", "user", "usr", 40 },            { "user.password_change", "user", "usr", 8 },
	{ "user.mfa_enroll", "user", "usr", 5 },         { "invoice.read", "invoice", "inv", 60 },
	{ "invoice.create", "invoice", "inv", 30 },      { "invoice.update", "invoice", "inv", 30 },
	{ "invoice.pay", "invoice", "inv", 20 },         { "invoice.void", "invoice", "inv", 5 },
	{ "project.read", "project", "prj", 50 },        { "project.create", "project", "prj", 10 },
	{ "project.archive", "project", "prj", 5 },      { "role.assign", "role", "role", 8 },
	{ "role.revoke", "role", "role", 4 },            { "api_key.create", "api_key", "key", 5 },
	{ "api_key.revoke", "api_key", "key", 3 },       { "file.upload", "file", "file", 40 },
	{ "file.download", "file", "file", 60 },         { "settings.update", "settings", "cfg", 8 },
	{ "report.export", "report", "rpt", 15 },        { "payment.refund", "payment", "pay", 6 },
	{ "webhook.deliver", "webhook", "whk", 30 },     { "session.refresh", "session", "ses", 50 },
	{ "org.member_invite", "organization", "org", 8 }, { "org.member_remove", "organization", "org", 4 },
};

static const char *const user_agents[] = {
	"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
	"Chrome/124.0.0.0 Safari/537.36",
	"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
	"Version/17.4 Safari/605.1.15",
	"Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
	"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
	"Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
	"curl/8.4.0",
	"python-requests/2.31.0",
	"Go-http-client/2.0",
	"hodei-sdk-java/1.4.2 (OpenJDK 21.0.2; Linux amd64)",
	"okhttp/4.12.0",
	"aws-sdk-go-v2/1.26.1 os/linux lang/go#1.22.2 md/GOOS#linux md/GOARCH#amd64",
};

static const char *const services[] = { "billing-worker", "search-indexer", "sync-agent",
					"notification-service", "scim-provisioner" };

struct attr_def {
	const char *key;
	const char *values[4];
};

static const struct attr_def attr_defs[] = {
	{ "region", { "eu-west-1", "us-east-1", "ap-southeast-2", "eu-central-1" } },
	{ "plan", { "free", "team", "business", "enterprise" } },
	{ "mfa", { "true", "false", "true", "true" } },
	{ "client.version", { "4.18.2", "4.19.0", "5.0.0-rc.1", "3.9.7" } },
	{ "http.method", { "GET", "POST", "PATCH", "DELETE" } },
	{ "http.status", { "200", "201", "403", "404" } },
	{ "auth.method", { "password", "sso.saml", "sso.oidc", "api_key" } },
	{ "geo.country", { "ES", "US", "DE", "JP" } },
};

static const struct attr_def detail_defs[] = {
	{ "fields", { "title", "status,amount", "owner,visibility", "due_date" } },
	{ "previous", { "draft", "sent", "private", "active" } },
	{ "next", { "final", "paid", "shared", "archived" } },
	{ "bytes", { "18234", "1048576", "532", "77410" } },
	{ "format", { "pdf", "csv", "xlsx", "json" } },
	{ "reason", { "user_request", "policy", "expired", "admin_action" } },
	{ "via", { "web", "api", "mobile", "cli" } },
};

/* Strings of a producer's event pool; never freed before the run ends. */
struct arena {
	char *data;
	size_t used, cap;
};

static struct fmt_str arena_printf(struct arena *a, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static struct fmt_str arena_printf(struct arena *a, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(a->data + a->used, a->cap - a->used, fmt, ap);
	va_end(ap);
	ASSERT(n >= 0 && (size_t)n < a->cap - a->used); /* sized for the pool up front */
	struct fmt_str s = { a->data + a->used, (uint32_t)n };
	a->used += (size_t)n;
	return s;
}

static struct fmt_str arena_hex(struct arena *a, uint64_t *rng, uint32_t digits)
{
	static const char hex[] = "0123456789abcdef";
	ASSERT(a->cap - a->used > digits);
	char *p = a->data + a->used;
	for (uint32_t i = 0; i < digits; i++)
		p[i] = hex[bench_rng_next(rng) & 15];
	a->used += digits;
	return (struct fmt_str){ p, digits };
}

static const struct action_def *pick_action(uint64_t *rng)
{
	uint32_t total = 0;
	for (size_t i = 0; i < FMT_ARRAY_LEN(actions); i++)
		total += actions[i].weight;
	uint32_t w = rng_below(rng, total);
	for (size_t i = 0; i < FMT_ARRAY_LEN(actions); i++) {
		if (w < actions[i].weight)
			return &actions[i];
		w -= actions[i].weight;
	}
	ASSERT(0);
	return NULL;
}

static void gen_actor(struct fmt_event *ev, struct arena *a, uint64_t *rng)
{
	uint32_t kind = rng_below(rng, 100);
	if (kind < 80) {
		ev->str[FMT_F_ACTOR_ID] = arena_printf(a, "user-%u", 10000 + rng_below(rng, 90000));
		ev->str[FMT_F_ACTOR_TYPE] = fmt_str_c("user");
	} else if (kind < 95) {
		ev->str[FMT_F_ACTOR_ID] = arena_printf(
			a, "svc-%s", services[rng_below(rng, FMT_ARRAY_LEN(services))]);
		ev->str[FMT_F_ACTOR_TYPE] = fmt_str_c("service");
	} else {
		struct fmt_str key = arena_hex(a, rng, 12);
		ev->str[FMT_F_ACTOR_ID] = arena_printf(a, "apikey-%.*s", (int)key.len, key.ptr);
		ev->str[FMT_F_ACTOR_TYPE] = fmt_str_c("api_key");
	}
}

static void gen_source_ip(struct fmt_event *ev, struct arena *a, uint64_t *rng)
{
	static const uint32_t first_octets[] = { 10, 34, 52, 81, 91, 172, 185, 192, 198, 203 };
	/* Draws are taken into locals, last field first (the gcc build's
	 * order): the evaluation order of a call's arguments is unspecified. */
	if (rng_below(rng, 100) < 80) {
		uint32_t d = 1 + rng_below(rng, 254), c = rng_below(rng, 256), b = rng_below(rng, 256);
		uint32_t a0 = first_octets[rng_below(rng, FMT_ARRAY_LEN(first_octets))];
		ev->str[FMT_F_SOURCE_IP] = arena_printf(a, "%u.%u.%u.%u", a0, b, c, d);
		return;
	}
	uint32_t h[6];
	for (int i = 5; i >= 0; i--)
		h[i] = rng_below(rng, 65536);
	ev->str[FMT_F_SOURCE_IP] = arena_printf(a, "2001:db8:%x:%x:%x:%x:%x:%x", h[0], h[1], h[2], h[3],
						h[4], h[5]);
}

static void gen_attrs(struct fmt_event *ev, struct fmt_attr *slots, uint64_t *rng)
{
	uint32_t n = rng_below(rng, 5); /* 0..4 */
	uint32_t first = rng_below(rng, FMT_ARRAY_LEN(attr_defs));
	for (uint32_t i = 0; i < n; i++) {
		const struct attr_def *d = &attr_defs[(first + i) % FMT_ARRAY_LEN(attr_defs)];
		slots[i].key = fmt_str_c(d->key);
		slots[i].value = fmt_str_c(d->values[rng_below(rng, 4)]);
	}
	ev->attr_count = n;
	ev->attrs = n ? slots : NULL;
}

static void gen_details(struct fmt_event *ev, struct arena *a, uint64_t *rng)
{
	uint32_t n = 1 + rng_below(rng, 4); /* 1..4 pairs */
	uint32_t first = rng_below(rng, FMT_ARRAY_LEN(detail_defs));
	char *start = a->data + a->used;
	size_t len = arena_printf(a, "{").len;
	for (uint32_t i = 0; i < n; i++) {
		const struct attr_def *d = &detail_defs[(first + i) % FMT_ARRAY_LEN(detail_defs)];
		len += arena_printf(a, "%s\"%s\":\"%s\"", i ? "," : "", d->key,
				    d->values[rng_below(rng, 4)]).len;
	}
	len += arena_printf(a, "}").len;
	ev->details_json = (struct fmt_str){ start, (uint32_t)len };
}

/* Fills one template event; event_id and occurred_at are stamped per batch. */
static void gen_event(struct fmt_event *ev, struct fmt_attr *attr_slots, struct arena *a,
		      uint64_t *rng)
{
	memset(ev, 0, sizeof(*ev));
	const struct action_def *act = pick_action(rng);
	gen_actor(ev, a, rng);
	ev->str[FMT_F_ACTION] = fmt_str_c(act->action);
	ev->str[FMT_F_RESOURCE_TYPE] = fmt_str_c(act->resource_type);
	struct fmt_str rid = arena_hex(a, rng, 16);
	ev->str[FMT_F_RESOURCE_ID] = arena_printf(a, "%s_%.*s", act->id_prefix, (int)rid.len, rid.ptr);
	gen_source_ip(ev, a, rng);
	ev->str[FMT_F_USER_AGENT] = fmt_str_c(user_agents[rng_below(rng, FMT_ARRAY_LEN(user_agents))]);
	struct fmt_str req = arena_hex(a, rng, 24);
	ev->str[FMT_F_REQUEST_ID] = arena_printf(a, "req_%.*s", (int)req.len, req.ptr);
	if (rng_below(rng, 100) < 85)
		ev->str[FMT_F_TRACE_ID] = arena_hex(a, rng, 32);
	uint32_t o = rng_below(rng, 100);
	ev->outcome = o < 92 ? FMT_OUTCOME_SUCCESS : o < 97 ? FMT_OUTCOME_FAILURE : FMT_OUTCOME_DENIED;
	gen_attrs(ev, attr_slots, rng);
	gen_details(ev, a, rng);
}

/* ---- producers ------------------------------------------------------------- */

struct bench;
struct producer;

struct slot {
	struct eng_append req;
	struct fmt_event *events;   /* [batch] */
	struct producer *pr;
	int64_t submitted_ns;
	uint64_t canon_bytes;       /* canonical bytes of the batch's events */
};

struct status_count {
	int status;
	uint64_t batches;
};

struct producer {
	struct bench *b;
	uint32_t index;
	pthread_t thread;
	struct eng_producer *ep;
	uint64_t rng;
	struct arena arena;
	struct fmt_event *pool;      /* [pool_count] templates */
	struct fmt_attr *pool_attrs; /* [pool_count * 4] */
	uint32_t *pool_canon;        /* canonical size of each template, empty tenant */
	uint32_t pool_count, cursor;
	struct slot *slots;          /* [inflight] */
	uint32_t *free_slots;        /* stack of free slot indexes */
	uint32_t free_count;
	struct hist hist;            /* only this thread writes it until joined */
	struct status_count statuses[STATUS_KINDS_MAX];
	uint32_t status_kinds;
	uint64_t submit_full;        /* FMT_E_FULL from submit: waited, retried */
	uint64_t submit_error;
	/* Read by the main thread while the producer runs. */
	_Atomic uint64_t acked_events, acked_batches, acked_canon_bytes;
	_Atomic uint64_t rejected_batches, rejected_events;
};

struct bench {
	struct bench_config cfg;
	struct fmt_limits limits;      /* the engine's, to check generated events */
	struct eng_engine *eng;
	struct producer *producers;
	struct fmt_str *tenant_names;
	char *tenant_store;
	pthread_barrier_t start;
	_Atomic bool stop;
	_Atomic int64_t window_start_ns;  /* latency counts batches inside */
	_Atomic int64_t window_end_ns;
	_Atomic uint64_t engine_errors, engine_warnings;
};

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static int64_t real_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static void count_status(struct producer *pr, int status)
{
	for (uint32_t i = 0; i < pr->status_kinds; i++) {
		if (pr->statuses[i].status == status) {
			pr->statuses[i].batches++;
			return;
		}
	}
	if (pr->status_kinds < STATUS_KINDS_MAX)
		pr->statuses[pr->status_kinds++] = (struct status_count){ status, 1 };
}

/* Runs on the producer's thread from eng_producer_poll(). */
static void append_done(struct eng_append *req)
{
	struct slot *s = req->ctx;
	struct producer *pr = s->pr;
	int64_t now = mono_ns();
	if (req->status == 0) {
		ASSERT(req->accepted + req->duplicates == req->count);
		atomic_fetch_add_explicit(&pr->acked_events, req->accepted, memory_order_relaxed);
		atomic_fetch_add_explicit(&pr->acked_batches, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&pr->acked_canon_bytes, s->canon_bytes, memory_order_relaxed);
		if (s->submitted_ns >= atomic_load_explicit(&pr->b->window_start_ns, memory_order_relaxed) &&
		    now <= atomic_load_explicit(&pr->b->window_end_ns, memory_order_relaxed))
			hist_add(&pr->hist, (uint64_t)(now - s->submitted_ns));
	} else {
		count_status(pr, req->status);
		atomic_fetch_add_explicit(&pr->rejected_batches, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&pr->rejected_events, req->count, memory_order_relaxed);
	}
	ASSERT(pr->free_count < pr->b->cfg.inflight);
	pr->free_slots[pr->free_count++] = (uint32_t)(s - pr->slots);
}

/* Copies `batch` templates into the slot and stamps them for one tenant. */
static void slot_fill(struct producer *pr, struct slot *s)
{
	const struct bench_config *cfg = &pr->b->cfg;
	struct fmt_str tenant = pr->b->tenant_names[rng_below(&pr->rng, cfg->tenants)];
	int64_t now = real_ns();
	uint64_t canon = 0;
	for (uint32_t i = 0; i < cfg->batch; i++) {
		struct fmt_event *ev = &s->events[i];
		*ev = pr->pool[pr->cursor];
		canon += pr->pool_canon[pr->cursor] + tenant.len;
		pr->cursor = pr->cursor + 1 == pr->pool_count ? 0 : pr->cursor + 1;
		uint64_t r1 = bench_rng_next(&pr->rng), r2 = bench_rng_next(&pr->rng);
		uint8_t rand10[10];
		memcpy(rand10, &r1, 8);
		memcpy(rand10 + 8, &r2, 2);
		/* Clients report events up to a few seconds after they happened. */
		ev->occurred_at_ns = now - (int64_t)(r2 >> 16) % (3 * NS_PER_S);
		fmt_uuid_v7(ev->event_id, ev->occurred_at_ns, rand10);
	}
	memset(&s->req, 0, sizeof(s->req));
	s->req.tenant = tenant;
	s->req.events = s->events;
	s->req.count = cfg->batch;
	s->req.done = append_done;
	s->req.ctx = s;
	s->canon_bytes = canon;
}

/* Submits batches while a slot is free. Returns false on a fatal error. */
static bool producer_fill(struct producer *pr)
{
	while (pr->free_count > 0 && !atomic_load_explicit(&pr->b->stop, memory_order_relaxed)) {
		struct slot *s = &pr->slots[pr->free_slots[pr->free_count - 1]];
		slot_fill(pr, s);
		s->submitted_ns = mono_ns();
		int rc = eng_append_submit(pr->ep, &s->req);
		if (rc == FMT_E_FULL) {
			pr->submit_full++;
			return true; /* wait for completions, then retry */
		}
		if (rc != 0) {
			pr->submit_error++;
			count_status(pr, rc);
			return false;
		}
		pr->free_count--;
	}
	return true;
}

static void *producer_main(void *arg)
{
	struct producer *pr = arg;
	char name[16];
	snprintf(name, sizeof(name), "bench-prod%u", pr->index);
	pthread_setname_np(pthread_self(), name);
	pthread_barrier_wait(&pr->b->start);
	while (!atomic_load_explicit(&pr->b->stop, memory_order_relaxed)) {
		if (!producer_fill(pr))
			break;
		int rc = eng_producer_wait(pr->ep, TICK_NS);
		ASSERT(rc >= 0 || rc == -EINTR);
	}
	/* Every submitted batch gets its callback before the producer closes. */
	while (eng_producer_pending(pr->ep) > 0)
		eng_producer_wait(pr->ep, 100 * 1000000ll);
	return NULL;
}

/* Builds the producer's template pool and slots; all memory up front. */
static int producer_init(struct bench *b, struct producer *pr, uint32_t index)
{
	const struct bench_config *cfg = &b->cfg;
	pr->b = b;
	pr->index = index;
	pr->rng = cfg->seed ^ (0xA0761D6478BD642Full * (index + 1));
	pr->pool_count = cfg->pool_events;
	pr->arena.cap = (size_t)cfg->pool_events * 512;
	pr->arena.data = malloc(pr->arena.cap);
	pr->pool = calloc(pr->pool_count, sizeof(*pr->pool));
	pr->pool_attrs = calloc((size_t)pr->pool_count * 4, sizeof(*pr->pool_attrs));
	pr->pool_canon = calloc(pr->pool_count, sizeof(*pr->pool_canon));
	pr->slots = calloc(cfg->inflight, sizeof(*pr->slots));
	pr->free_slots = calloc(cfg->inflight, sizeof(*pr->free_slots));
	if (!pr->arena.data || !pr->pool || !pr->pool_attrs || !pr->pool_canon || !pr->slots ||
	    !pr->free_slots)
		return FMT_E_NOMEM;
	for (uint32_t i = 0; i < pr->pool_count; i++) {
		struct fmt_event *ev = &pr->pool[i];
		gen_event(ev, &pr->pool_attrs[(size_t)i * 4], &pr->arena, &pr->rng);
		ev->event_id[0] = 1; /* any non-zero id validates */
		struct fmt_invalid why;
		if (fmt_event_validate(ev, &b->limits, &why) != 0) {
			fprintf(stderr, "bench: generated an invalid event (%s: %s)\n", why.field,
				why.reason);
			return FMT_E_INVALID;
		}
		pr->pool_canon[i] = (uint32_t)fmt_event_canon_size(ev);
	}
	for (uint32_t i = 0; i < cfg->inflight; i++) {
		struct slot *s = &pr->slots[i];
		s->pr = pr;
		s->events = calloc(cfg->batch, sizeof(*s->events));
		if (!s->events)
			return FMT_E_NOMEM;
		pr->free_slots[pr->free_count++] = i;
	}
	return eng_producer_open(b->eng, &pr->ep);
}

static void producer_free(struct producer *pr)
{
	for (uint32_t i = 0; pr->slots && i < pr->b->cfg.inflight; i++)
		free(pr->slots[i].events);
	free(pr->slots);
	free(pr->free_slots);
	free(pr->pool);
	free(pr->pool_attrs);
	free(pr->pool_canon);
	free(pr->arena.data);
}

/* ---- snapshots of the counters ------------------------------------------- */

struct thread_cpu {
	int tid;
	char name[24];
	uint64_t ticks;    /* utime + stime, in clock ticks */
	uint64_t wait_ns;  /* runnable but waiting for a CPU (schedstat) */
};

/* Time the thread spent runnable but not running, from the scheduler's
 * statistics: on a shared machine this says whether a thread was slow
 * because it waited for a CPU rather than for I/O. */
static uint64_t read_thread_wait_ns(const char *tid)
{
	char path[300];
	unsigned long long run_ns = 0, wait_ns = 0;
	snprintf(path, sizeof(path), "/proc/self/task/%s/schedstat", tid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	if (fscanf(f, "%llu %llu", &run_ns, &wait_ns) != 2)
		wait_ns = 0;
	fclose(f);
	return wait_ns;
}

struct snapshot {
	int64_t mono_ns;
	uint64_t acked_events, acked_batches, acked_canon_bytes;
	uint64_t rejected_batches, rejected_events;
	struct eng_shard_stats total;
	struct eng_shard_stats *shards;  /* [shard_count] */
	double cpu_s;                    /* process user + system */
	uint64_t machine_busy_ticks, machine_total_ticks; /* /proc/stat, all CPUs */
	double loadavg_1m;
	struct thread_cpu threads[THREADS_MAX];
	uint32_t thread_count;
};

static void stats_add(struct eng_shard_stats *t, const struct eng_shard_stats *s)
{
	t->events_appended += s->events_appended;
	t->events_duplicate += s->events_duplicate;
	t->batches_committed += s->batches_committed;
	t->requests_rejected_invalid += s->requests_rejected_invalid;
	t->requests_rejected_budget += s->requests_rejected_budget;
	t->wal_bytes_written += s->wal_bytes_written;
	t->wal_fsyncs += s->wal_fsyncs;
	t->wal_files += s->wal_files;
	t->fsync_ns_total += s->fsync_ns_total;
	t->fsync_ns_max = FMT_MAX(t->fsync_ns_max, s->fsync_ns_max);
	t->segments_sealed += s->segments_sealed;
	t->segments_local += s->segments_local;
	t->segment_bytes_local += s->segment_bytes_local;
	t->memtable_bytes += s->memtable_bytes;
	t->memtable_rows += s->memtable_rows;
	t->dedup_entries += s->dedup_entries;
	t->dedup_evicted_early += s->dedup_evicted_early;
	t->tenants += s->tenants;
	t->queue_full += s->queue_full;
	t->failed = t->failed || s->failed;
}

/* Per-thread CPU time from /proc/self/task/<tid>/stat (fields 14, 15). */
static uint32_t read_thread_cpu(struct thread_cpu *out, uint32_t cap)
{
	DIR *d = opendir("/proc/self/task");
	uint32_t n = 0;
	if (!d)
		return 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL && n < cap) {
		if (de->d_name[0] == '.')
			continue;
		char path[300], line[1024];
		snprintf(path, sizeof(path), "/proc/self/task/%s/stat", de->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		size_t len = fread(line, 1, sizeof(line) - 1, f);
		fclose(f);
		line[len] = 0;
		char *open = strchr(line, '('), *close = strrchr(line, ')');
		if (!open || !close || close < open)
			continue;
		unsigned long long ut = 0, st = 0;
		/* After ")": state (field 3) ... utime (14) stime (15). */
		if (sscanf(close + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
			   &st) != 2)
			continue;
		struct thread_cpu *t = &out[n++];
		t->tid = atoi(de->d_name);
		snprintf(t->name, sizeof(t->name), "%.*s", (int)(close - open - 1), open + 1);
		t->ticks = ut + st;
		t->wait_ns = read_thread_wait_ns(de->d_name);
	}
	closedir(d);
	return n;
}

/* The whole machine's CPU time from /proc/stat's first line, so a reader
 * can see how much of the machine other processes took during the run. */
static void read_machine_cpu(struct snapshot *s)
{
	unsigned long long v[8] = { 0 };
	s->machine_busy_ticks = s->machine_total_ticks = 0;
	FILE *f = fopen("/proc/stat", "r");
	if (f) {
		if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
			   &v[4], &v[5], &v[6], &v[7]) == 8) {
			uint64_t idle = v[3] + v[4];
			s->machine_total_ticks = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
			s->machine_busy_ticks = s->machine_total_ticks - idle;
		}
		fclose(f);
	}
	s->loadavg_1m = 0;
	f = fopen("/proc/loadavg", "r");
	if (f) {
		if (fscanf(f, "%lf", &s->loadavg_1m) != 1)
			s->loadavg_1m = 0;
		fclose(f);
	}
}

static void snapshot_take(struct bench *b, struct snapshot *s)
{
	uint32_t shard_count = eng_shard_count(b->eng);
	memset(&s->total, 0, sizeof(s->total));
	for (uint32_t i = 0; i < shard_count; i++) {
		eng_shard_stats(b->eng, i, &s->shards[i]);
		stats_add(&s->total, &s->shards[i]);
	}
	s->total.io_backend = s->shards[0].io_backend;
	s->acked_events = s->acked_batches = s->acked_canon_bytes = 0;
	s->rejected_batches = s->rejected_events = 0;
	for (uint32_t p = 0; p < b->cfg.producers; p++) {
		struct producer *pr = &b->producers[p];
		s->acked_events += atomic_load_explicit(&pr->acked_events, memory_order_relaxed);
		s->acked_batches += atomic_load_explicit(&pr->acked_batches, memory_order_relaxed);
		s->acked_canon_bytes += atomic_load_explicit(&pr->acked_canon_bytes, memory_order_relaxed);
		s->rejected_batches += atomic_load_explicit(&pr->rejected_batches, memory_order_relaxed);
		s->rejected_events += atomic_load_explicit(&pr->rejected_events, memory_order_relaxed);
	}
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	s->cpu_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
		   (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
	s->thread_count = read_thread_cpu(s->threads, THREADS_MAX);
	read_machine_cpu(s);
	s->mono_ns = mono_ns();
}

/* ---- results --------------------------------------------------------------- */

struct results {
	double window_s;
	uint64_t events, batches, canon_bytes, rejected_batches, rejected_events;
	uint64_t wal_bytes, fsyncs, engine_events, fsync_ns;
	uint64_t segments_sealed;
	double cpu_s;
	struct hist hist;
	struct status_count statuses[STATUS_KINDS_MAX];
	uint32_t status_kinds;
	uint64_t submit_full, submit_error;
	uint64_t timeline[TIMELINE_MAX];
	uint32_t timeline_count;
};

static void results_compute(struct bench *b, const struct snapshot *a, const struct snapshot *z,
			    struct results *r)
{
	r->window_s = (double)(z->mono_ns - a->mono_ns) / 1e9;
	r->events = z->acked_events - a->acked_events;
	r->batches = z->acked_batches - a->acked_batches;
	r->canon_bytes = z->acked_canon_bytes - a->acked_canon_bytes;
	r->rejected_batches = z->rejected_batches - a->rejected_batches;
	r->rejected_events = z->rejected_events - a->rejected_events;
	r->wal_bytes = z->total.wal_bytes_written - a->total.wal_bytes_written;
	r->fsyncs = z->total.wal_fsyncs - a->total.wal_fsyncs;
	r->engine_events = z->total.events_appended - a->total.events_appended;
	r->fsync_ns = z->total.fsync_ns_total - a->total.fsync_ns_total;
	r->segments_sealed = z->total.segments_sealed - a->total.segments_sealed;
	r->cpu_s = z->cpu_s - a->cpu_s;
	for (uint32_t p = 0; p < b->cfg.producers; p++) {
		struct producer *pr = &b->producers[p];
		hist_merge(&r->hist, &pr->hist);
		r->submit_full += pr->submit_full;
		r->submit_error += pr->submit_error;
		for (uint32_t i = 0; i < pr->status_kinds; i++) {
			uint32_t k = 0;
			while (k < r->status_kinds && r->statuses[k].status != pr->statuses[i].status)
				k++;
			if (k == r->status_kinds && k < STATUS_KINDS_MAX)
				r->statuses[r->status_kinds++] = (struct status_count){ pr->statuses[i].status, 0 };
			if (k < r->status_kinds)
				r->statuses[k].batches += pr->statuses[i].batches;
		}
	}
}

static double per_s(double v, double s)
{
	return s > 0 ? v / s : 0;
}

static double ratio(double a, double b)
{
	return b > 0 ? a / b : 0;
}

static double ms(uint64_t ns)
{
	return (double)ns / 1e6;
}

/* ---- JSON output ----------------------------------------------------------- */

static void json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

static const char *io_name(enum eng_io_backend io)
{
	return io == ENG_IO_URING ? "uring" : io == ENG_IO_SYNC ? "sync" : io == ENG_IO_AUTO ? "auto" : "fault";
}

static void json_config(FILE *f, const struct bench *b)
{
	const struct bench_config *c = &b->cfg;
	fprintf(f, "\"config\":{\"producers\":%u,\"tenants\":%u,\"batch\":%u,\"inflight\":%u,", c->producers,
		c->tenants, c->batch, c->inflight);
	fprintf(f, "\"seconds\":%.3f,\"events\":%" PRIu64 ",\"warmup_s\":%.3f,\"io\":\"%s\",",
		c->seconds, c->events, c->warmup_s, io_name(c->io));
	fprintf(f, "\"shards\":%u,\"seed\":%" PRIu64 ",\"pool_events\":%u,\"memtable_budget_mb\":%" PRIu64
		",\"queue_depth\":%u,\"data_dir\":", eng_shard_count(b->eng), c->seed, c->pool_events,
		c->memtable_budget_mb, c->queue_depth);
	json_string(f, c->data_dir);
	fprintf(f, ",\"keep\":%s},", c->keep ? "true" : "false");
}

static void read_first_line(const char *path, const char *prefix, char *out, size_t cap)
{
	out[0] = 0;
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	char line[512];
	size_t plen = strlen(prefix);
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, prefix, plen) != 0)
			continue;
		char *v = strchr(line + plen, ':');
		v = v ? v + 1 : line + plen;
		while (*v == ' ' || *v == '\t')
			v++;
		v[strcspn(v, "\n")] = 0;
		snprintf(out, cap, "%s", v);
		break;
	}
	fclose(f);
}

static void json_machine(FILE *f)
{
	struct utsname u;
	char kernel[1024] = "", cpu[256], mem[64], host[256] = "";
	if (uname(&u) == 0)
		snprintf(kernel, sizeof(kernel), "%s %s %s %s", u.sysname, u.release, u.version, u.machine);
	gethostname(host, sizeof(host) - 1);
	read_first_line("/proc/cpuinfo", "model name", cpu, sizeof(cpu));
	read_first_line("/proc/meminfo", "MemTotal", mem, sizeof(mem));
	fprintf(f, "\"machine\":{\"nproc\":%ld,\"kernel\":", sysconf(_SC_NPROCESSORS_ONLN));
	json_string(f, kernel);
	fputs(",\"kernel_release\":", f);
	json_string(f, u.release);
	fputs(",\"cpu_model\":", f);
	json_string(f, cpu);
	fputs(",\"mem_total\":", f);
	json_string(f, mem);
	fputs(",\"hostname\":", f);
	json_string(f, host);
	fputs("},", f);
}

static void json_latency(FILE *f, const struct hist *h)
{
	fprintf(f, "\"latency_ms\":{\"samples\":%" PRIu64 ",\"min\":%.3f,\"mean\":%.3f,\"p50\":%.3f,"
		   "\"p90\":%.3f,\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f},",
		h->n, ms(h->min), h->n ? ms(h->sum) / (double)h->n : 0, ms(hist_quantile(h, 0.50)),
		ms(hist_quantile(h, 0.90)), ms(hist_quantile(h, 0.99)), ms(hist_quantile(h, 0.999)),
		ms(h->max));
}

static void json_engine(FILE *f, const struct results *r, const struct snapshot *z)
{
	fprintf(f, "\"wal_bytes_written\":%" PRIu64 ",\"wal_mb_per_s\":%.3f,", r->wal_bytes,
		per_s((double)r->wal_bytes / 1e6, r->window_s));
	fprintf(f, "\"fsyncs\":%" PRIu64 ",\"fsyncs_per_s\":%.2f,\"events_per_fsync\":%.2f,"
		   "\"batches_per_fsync\":%.3f,\"fsync_ms_mean\":%.3f,\"fsync_ms_max\":%.3f,",
		r->fsyncs, per_s((double)r->fsyncs, r->window_s), ratio((double)r->engine_events, (double)r->fsyncs),
		ratio((double)r->batches, (double)r->fsyncs), ratio(ms(r->fsync_ns), (double)r->fsyncs),
		ms(z->total.fsync_ns_max));
	fprintf(f, "\"memtable_bytes\":%" PRIu64 ",\"memtable_rows\":%" PRIu64 ",\"segments_sealed\":%" PRIu64
		   ",\"segments_sealed_total\":%" PRIu64 ",\"segment_bytes_local\":%" PRIu64
		   ",\"wal_files\":%" PRIu64 ",\"tenants_created\":%" PRIu64 ",\"dedup_entries\":%" PRIu64
		   ",\"dedup_evicted_early\":%" PRIu64 ",",
		z->total.memtable_bytes, z->total.memtable_rows, r->segments_sealed,
		z->total.segments_sealed, z->total.segment_bytes_local, z->total.wal_files,
		z->total.tenants, z->total.dedup_entries, z->total.dedup_evicted_early);
	fprintf(f, "\"engine_queue_full\":%" PRIu64 ",\"shard_failed\":%s,\"io_backend\":\"%s\",",
		z->total.queue_full, z->total.failed ? "true" : "false",
		io_name((enum eng_io_backend)z->total.io_backend));
}

static void json_rejections(FILE *f, const struct bench *b, const struct results *r)
{
	fprintf(f, "\"rejected_batches\":%" PRIu64 ",\"rejected_events\":%" PRIu64
		   ",\"submit_full_retries\":%" PRIu64 ",\"submit_errors\":%" PRIu64 ",\"rejections\":[",
		r->rejected_batches, r->rejected_events, r->submit_full, r->submit_error);
	for (uint32_t i = 0; i < r->status_kinds; i++) {
		fprintf(f, "%s{\"code\":%d,\"status\":", i ? "," : "", r->statuses[i].status);
		json_string(f, fmt_strerror(r->statuses[i].status));
		fprintf(f, ",\"batches\":%" PRIu64 "}", r->statuses[i].batches);
	}
	fprintf(f, "],\"engine_errors_logged\":%" PRIu64 ",\"engine_warnings_logged\":%" PRIu64 ",",
		atomic_load(&b->engine_errors), atomic_load(&b->engine_warnings));
}

static const struct thread_cpu *thread_before(const struct snapshot *a, int tid)
{
	static const struct thread_cpu none;
	for (uint32_t i = 0; i < a->thread_count; i++)
		if (a->threads[i].tid == tid)
			return &a->threads[i];
	return &none;
}

static void json_cpu(FILE *f, const struct results *r, const struct snapshot *a,
		     const struct snapshot *z)
{
	double tick_s = 1.0 / (double)sysconf(_SC_CLK_TCK);
	double ncpu = (double)sysconf(_SC_NPROCESSORS_ONLN);
	double busy = ratio((double)(z->machine_busy_ticks - a->machine_busy_ticks),
			    (double)(z->machine_total_ticks - a->machine_total_ticks));
	fprintf(f, "\"cpu\":{\"process_cores\":%.3f,\"us_per_event\":%.3f,"
		   "\"machine_busy_cores\":%.3f,\"other_processes_cores\":%.3f,"
		   "\"loadavg_1m_start\":%.2f,\"loadavg_1m_end\":%.2f,\"threads\":[",
		per_s(r->cpu_s, r->window_s), ratio(r->cpu_s * 1e6, (double)r->events),
		busy * ncpu, FMT_MAX(0.0, busy * ncpu - per_s(r->cpu_s, r->window_s)),
		a->loadavg_1m, z->loadavg_1m);
	for (uint32_t i = 0; i < z->thread_count; i++) {
		const struct thread_cpu *t = &z->threads[i];
		const struct thread_cpu *t0 = thread_before(a, t->tid);
		double used_s = (double)(t->ticks - t0->ticks) * tick_s;
		double wait_s = (double)(t->wait_ns - t0->wait_ns) / 1e9;
		fprintf(f, "%s{\"name\":", i ? "," : "");
		json_string(f, t->name);
		fprintf(f, ",\"tid\":%d,\"cpu_pct\":%.1f,\"runqueue_wait_pct\":%.1f}", t->tid,
			100.0 * per_s(used_s, r->window_s), 100.0 * per_s(wait_s, r->window_s));
	}
	fputs("]},", f);
}

static void json_shards(FILE *f, const struct bench *b, const struct results *r,
			const struct snapshot *a, const struct snapshot *z)
{
	fputs("\"per_shard\":[", f);
	for (uint32_t i = 0; i < eng_shard_count(b->eng); i++) {
		const struct eng_shard_stats *s0 = &a->shards[i], *s1 = &z->shards[i];
		uint64_t ev = s1->events_appended - s0->events_appended;
		uint64_t fs = s1->wal_fsyncs - s0->wal_fsyncs;
		fprintf(f, "%s{\"shard\":%u,\"events_appended\":%" PRIu64 ",\"fsyncs\":%" PRIu64
			   ",\"events_per_fsync\":%.2f,\"fsync_ms_mean\":%.3f,\"fsync_ms_max\":%.3f,"
			   "\"wal_bytes_written\":%" PRIu64 ",\"memtable_bytes\":%" PRIu64
			   ",\"segments_sealed\":%" PRIu64 ",\"tenants\":%" PRIu64 "}",
			i ? "," : "", i, ev, fs, ratio((double)ev, (double)fs),
			ratio(ms(s1->fsync_ns_total - s0->fsync_ns_total), (double)fs), ms(s1->fsync_ns_max),
			s1->wal_bytes_written - s0->wal_bytes_written, s1->memtable_bytes,
			s1->segments_sealed - s0->segments_sealed, s1->tenants);
	}
	fputs("],", f);
	fputs("\"timeline_events_per_s\":[", f);
	for (uint32_t i = 0; i < r->timeline_count; i++)
		fprintf(f, "%s%" PRIu64, i ? "," : "", r->timeline[i]);
	fputs("]", f);
}

static void json_write(FILE *f, const struct bench *b, const struct results *r,
		       const struct snapshot *a, const struct snapshot *z, int64_t started_real_ns)
{
	time_t t = (time_t)(started_real_ns / NS_PER_S);
	struct tm tm;
	char when[64];
	gmtime_r(&t, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	fprintf(f, "{\"benchmark\":\"append\",\"schema_version\":1,\"timestamp\":\"%s\",", when);
	json_config(f, b);
	json_machine(f);
	fprintf(f, "\"duration_s\":%.3f,\"events_acked\":%" PRIu64 ",\"batches_acked\":%" PRIu64
		   ",\"events_per_s\":%.1f,\"batches_per_s\":%.1f,",
		r->window_s, r->events, r->batches, per_s((double)r->events, r->window_s),
		per_s((double)r->batches, r->window_s));
	fprintf(f, "\"canonical_bytes\":%" PRIu64 ",\"canonical_mb_per_s\":%.3f,"
		   "\"event_canonical_bytes_avg\":%.1f,",
		r->canon_bytes, per_s((double)r->canon_bytes / 1e6, r->window_s),
		ratio((double)r->canon_bytes, (double)(r->batches * b->cfg.batch)));
	json_latency(f, &r->hist);
	json_engine(f, r, z);
	json_rejections(f, b, r);
	json_cpu(f, r, a, z);
	json_shards(f, b, r, a, z);
	fputs("}\n", f);
}

static void summary_write(FILE *f, const struct bench *b, const struct results *r,
			  const struct snapshot *a, const struct snapshot *z)
{
	const struct hist *h = &r->hist;
	fprintf(f, "hodei-bench-append: io=%s (%s) shards=%u producers=%u batch=%u inflight=%u "
		   "tenants=%u window=%.2fs\n",
		io_name(b->cfg.io), io_name((enum eng_io_backend)z->total.io_backend),
		eng_shard_count(b->eng), b->cfg.producers, b->cfg.batch, b->cfg.inflight,
		b->cfg.tenants, r->window_s);
	fprintf(f, "  acked      %" PRIu64 " events (%.0f events/s), %" PRIu64 " batches (%.0f/s)\n",
		r->events, per_s((double)r->events, r->window_s), r->batches,
		per_s((double)r->batches, r->window_s));
	fprintf(f, "  bytes      canonical %.1f MB/s (avg %.0f B/event), WAL %.1f MB/s\n",
		per_s((double)r->canon_bytes / 1e6, r->window_s),
		ratio((double)r->canon_bytes, (double)(r->batches * b->cfg.batch)),
		per_s((double)r->wal_bytes / 1e6, r->window_s));
	fprintf(f, "  ack latency p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms (%" PRIu64
		   " batches)\n",
		ms(hist_quantile(h, 0.5)), ms(hist_quantile(h, 0.9)), ms(hist_quantile(h, 0.99)),
		ms(h->max), h->n);
	fprintf(f, "  fsync      %.0f/s, %.1f events and %.2f batches per fsync, mean %.2f ms\n",
		per_s((double)r->fsyncs, r->window_s), ratio((double)r->engine_events, (double)r->fsyncs),
		ratio((double)r->batches, (double)r->fsyncs), ratio(ms(r->fsync_ns), (double)r->fsyncs));
	fprintf(f, "  memtables  %.1f MiB, %" PRIu64 " segments sealed in the window\n",
		(double)z->total.memtable_bytes / (1 << 20), r->segments_sealed);
	fprintf(f, "  cpu        %.2f cores, %.2f us/event; machine load %.1f -> %.1f%s\n",
		per_s(r->cpu_s, r->window_s), ratio(r->cpu_s * 1e6, (double)r->events), a->loadavg_1m,
		z->loadavg_1m, z->loadavg_1m > sysconf(_SC_NPROCESSORS_ONLN) ?
		" (other processes compete for the CPUs: figures are a lower bound)" : "");
	if (r->rejected_batches || r->submit_error)
		fprintf(f, "  REJECTED   %" PRIu64 " batches (%" PRIu64 " events), see \"rejections\"\n",
			r->rejected_batches, r->rejected_events);
}

/* ---- set-up ---------------------------------------------------------------- */

static void usage(FILE *f)
{
	fputs("usage: hodei-bench-append [options]\n"
	      "  --producers N        producer threads (2)\n"
	      "  --tenants N          tenants, one picked uniformly per batch (1000)\n"
	      "  --batch N            events per append request (100)\n"
	      "  --inflight N         batches in flight per producer (64)\n"
	      "  --seconds S          measured duration (10)\n"
	      "  --events N           stop once N events were acked in the window\n"
	      "  --warmup S           unmeasured warm-up before the window (1)\n"
	      "  --io auto|uring|sync I/O backend (auto)\n"
	      "  --shards N           shards (0: one per CPU)\n"
	      "  --data-dir DIR       data directory (default: fresh dir under /tmp, removed)\n"
	      "  --keep               keep the data directory\n"
	      "  --seed N             PRNG seed for the event content (1)\n"
	      "  --json-out FILE      also write the JSON result to FILE\n"
	      "  --pool N             event templates per producer (16384)\n"
	      "  --memtable-budget-mb N  engine memtable budget per shard (engine default)\n"
	      "  --queue-depth N      engine SPSC queue depth, power of two (engine default)\n",
	      f);
}

static bool parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

static bool parse_seconds(const char *s, double *out)
{
	char *end;
	double v = strtod(s, &end);
	if (end == s || *end || !(v >= 0) || v > 86400)
		return false;
	*out = v;
	return true;
}

static bool parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
	uint64_t v;
	if (!parse_u64(s, lo, hi, &v))
		return false;
	*out = (uint32_t)v;
	return true;
}

static bool parse_option(struct bench_config *c, int opt, const char *arg)
{
	switch (opt) {
	case 'p': return parse_u32(arg, 1, PRODUCERS_MAX, &c->producers);
	case 't': return parse_u32(arg, 1, TENANTS_MAX, &c->tenants);
	case 'b': return parse_u32(arg, 1, 65535, &c->batch);
	case 'i': return parse_u32(arg, 1, INFLIGHT_MAX, &c->inflight);
	case 's': c->seconds_set = true; return parse_seconds(arg, &c->seconds);
	case 'e': return parse_u64(arg, 1, UINT64_MAX, &c->events);
	case 'w': return parse_seconds(arg, &c->warmup_s);
	case 'S': return parse_u32(arg, 0, 1024, &c->shards);
	case 'd': c->data_dir = arg; return true;
	case 'k': c->keep = true; return true;
	case 'r': return parse_u64(arg, 0, UINT64_MAX, &c->seed);
	case 'j': c->json_out = arg; return true;
	case 'P': return parse_u32(arg, 1, 1u << 22, &c->pool_events);
	case 'm': return parse_u64(arg, 1, 1u << 30, &c->memtable_budget_mb);
	case 'q': return parse_u32(arg, 2, 1u << 20, &c->queue_depth);
	case 'o':
		if (strcmp(arg, "auto") == 0)
			c->io = ENG_IO_AUTO;
		else if (strcmp(arg, "uring") == 0)
			c->io = ENG_IO_URING;
		else if (strcmp(arg, "sync") == 0)
			c->io = ENG_IO_SYNC;
		else
			return false;
		return true;
	default: return false;
	}
}

/* Returns 0, 1 for --help, or -1 on a bad argument (message printed). */
static int parse_args(int argc, char **argv, struct bench_config *c)
{
	static const struct option opts[] = {
		{ "producers", required_argument, NULL, 'p' }, { "tenants", required_argument, NULL, 't' },
		{ "batch", required_argument, NULL, 'b' },     { "inflight", required_argument, NULL, 'i' },
		{ "seconds", required_argument, NULL, 's' },   { "events", required_argument, NULL, 'e' },
		{ "warmup", required_argument, NULL, 'w' },    { "io", required_argument, NULL, 'o' },
		{ "shards", required_argument, NULL, 'S' },    { "data-dir", required_argument, NULL, 'd' },
		{ "keep", no_argument, NULL, 'k' },            { "seed", required_argument, NULL, 'r' },
		{ "json-out", required_argument, NULL, 'j' },  { "pool", required_argument, NULL, 'P' },
		{ "memtable-budget-mb", required_argument, NULL, 'm' },
		{ "queue-depth", required_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },            { NULL, 0, NULL, 0 },
	};
	*c = (struct bench_config){ .producers = 2, .tenants = 1000, .batch = 100, .inflight = 64,
				    .seconds = 10, .warmup_s = 1, .io = ENG_IO_AUTO, .seed = 1,
				    .pool_events = POOL_EVENTS_DEFAULT };
	int opt, li = -1;
	while ((opt = getopt_long(argc, argv, "", opts, &li)) != -1) {
		if (opt == 'h') {
			usage(stdout);
			return 1;
		}
		if (opt == '?' || !parse_option(c, opt, optarg)) {
			if (opt != '?' && li >= 0)
				fprintf(stderr, "hodei-bench-append: bad value for --%s: %s\n",
					opts[li].name, optarg ? optarg : "");
			usage(stderr);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "hodei-bench-append: unexpected argument %s\n", argv[optind]);
		return -1;
	}
	if (c->queue_depth && (c->queue_depth & (c->queue_depth - 1))) {
		fprintf(stderr, "hodei-bench-append: --queue-depth must be a power of two\n");
		return -1;
	}
	if (c->pool_events < c->batch)
		c->pool_events = c->batch;
	if (c->events && !c->seconds_set)
		c->seconds = 0; /* no time limit: the window ends at --events */
	return 0;
}

static void engine_log(void *ctx, enum eng_log_level level, const char *msg)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };
	struct bench *b = ctx;
	if (level == ENG_LOG_ERROR)
		atomic_fetch_add(&b->engine_errors, 1);
	else if (level == ENG_LOG_WARN)
		atomic_fetch_add(&b->engine_warnings, 1);
	if (level <= ENG_LOG_WARN)
		fprintf(stderr, "engine %s: %s\n", names[level], msg);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	if (remove(path) != 0)
		fprintf(stderr, "hodei-bench-append: cannot remove %s: %s\n", path, strerror(errno));
	return 0;
}

static int tenants_init(struct bench *b)
{
	uint64_t rng = b->cfg.seed ^ 0x5EED7E4A47ull;
	b->tenant_names = calloc(b->cfg.tenants, sizeof(*b->tenant_names));
	b->tenant_store = malloc((size_t)b->cfg.tenants * 24);
	if (!b->tenant_names || !b->tenant_store)
		return FMT_E_NOMEM;
	for (uint32_t i = 0; i < b->cfg.tenants; i++) {
		char *at = b->tenant_store + (size_t)i * 24;
		/* A readable prefix plus a unique number, like real tenant ids. */
		static const char *const prefixes[] = { "acme", "globex", "initech", "umbrella",
							"hooli", "stark", "wayne", "tyrell" };
		int n = snprintf(at, 24, "%s-%06u", prefixes[rng_below(&rng, 8)], i);
		b->tenant_names[i] = (struct fmt_str){ at, (uint32_t)n };
		ASSERT(fmt_tenant_valid(b->tenant_names[i]));
	}
	return 0;
}

static int engine_start(struct bench *b, char *tmp_dir, size_t tmp_cap)
{
	struct bench_config *c = &b->cfg;
	if (!c->data_dir) {
		const char *base = getenv("TMPDIR");
		snprintf(tmp_dir, tmp_cap, "%s/hodei-bench-XXXXXX", base && *base ? base : "/tmp");
		if (!mkdtemp(tmp_dir)) {
			fprintf(stderr, "hodei-bench-append: mkdtemp: %s\n", strerror(errno));
			return -errno;
		}
		c->data_dir = tmp_dir;
	}
	struct eng_config ec;
	eng_config_default(&ec);
	ec.data_dir = c->data_dir;
	ec.shards = c->shards;
	ec.io = c->io;
	ec.producers_max = FMT_MAX(ec.producers_max, c->producers);
	if (c->memtable_budget_mb)
		ec.memtable_budget_bytes = c->memtable_budget_mb << 20;
	if (c->queue_depth)
		ec.queue_depth = c->queue_depth;
	ec.log = engine_log;
	ec.log_ctx = b;
	b->limits = ec.limits;
	if (c->batch > ec.limits.events_per_batch_max)
		fprintf(stderr, "hodei-bench-append: --batch %u is over the engine's limit of %u: "
				"every request will be refused\n", c->batch, ec.limits.events_per_batch_max);
	int rc = eng_open(&ec, &b->eng);
	if (rc)
		fprintf(stderr, "hodei-bench-append: eng_open(%s): %s\n", c->data_dir, fmt_strerror(rc));
	return rc;
}

/* ---- the run --------------------------------------------------------------- */

/* SIGINT/SIGTERM end the window early, so the run still reports and
 * removes its data directory. */
static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

static void signals_install(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

static void sleep_ns(int64_t ns)
{
	if (ns <= 0)
		return;
	struct timespec ts = { (time_t)(ns / NS_PER_S), (long)(ns % NS_PER_S) };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
	}
}

static bool window_over(const struct bench *b, const struct snapshot *a, int64_t now)
{
	const struct bench_config *c = &b->cfg;
	if (interrupted)
		return true;
	bool by_time = c->seconds_set || c->events == 0;
	if (by_time && now - a->mono_ns >= (int64_t)(c->seconds * 1e9))
		return true;
	if (c->events) {
		uint64_t acked = 0;
		for (uint32_t p = 0; p < c->producers; p++)
			acked += atomic_load_explicit(&b->producers[p].acked_events, memory_order_relaxed);
		if (acked - a->acked_events >= c->events)
			return true;
	}
	return false;
}

/* Waits out the warm-up, takes the window's first snapshot, then samples
 * once per tick (for the per-second timeline) until the window is over. */
static void measure(struct bench *b, struct snapshot *a, struct snapshot *z, struct results *r)
{
	int64_t warmup_end_ns = mono_ns() + (int64_t)(b->cfg.warmup_s * 1e9);
	while (!interrupted && mono_ns() < warmup_end_ns)
		sleep_ns(FMT_MIN(TICK_NS, warmup_end_ns - mono_ns()));
	snapshot_take(b, a);
	atomic_store(&b->window_start_ns, a->mono_ns);
	int64_t next_second = a->mono_ns + NS_PER_S;
	uint64_t acked_at_second = a->acked_events;
	for (;;) {
		sleep_ns(TICK_NS);
		int64_t now = mono_ns();
		if (now >= next_second && r->timeline_count < TIMELINE_MAX) {
			uint64_t acked = 0;
			for (uint32_t p = 0; p < b->cfg.producers; p++)
				acked += atomic_load_explicit(&b->producers[p].acked_events,
							      memory_order_relaxed);
			r->timeline[r->timeline_count++] = acked - acked_at_second;
			acked_at_second = acked;
			next_second += NS_PER_S;
		}
		if (window_over(b, a, now))
			break;
	}
	atomic_store(&b->window_end_ns, mono_ns());
	snapshot_take(b, z);
}

static int producers_start(struct bench *b)
{
	b->producers = calloc(b->cfg.producers, sizeof(*b->producers));
	if (!b->producers)
		return FMT_E_NOMEM;
	for (uint32_t p = 0; p < b->cfg.producers; p++) {
		int rc = producer_init(b, &b->producers[p], p);
		if (rc) {
			fprintf(stderr, "hodei-bench-append: producer %u: %s\n", p, fmt_strerror(rc));
			return rc;
		}
	}
	pthread_barrier_init(&b->start, NULL, b->cfg.producers + 1);
	for (uint32_t p = 0; p < b->cfg.producers; p++) {
		int rc = pthread_create(&b->producers[p].thread, NULL, producer_main, &b->producers[p]);
		ASSERT(rc == 0); /* a benchmark that cannot start its threads cannot run */
	}
	pthread_barrier_wait(&b->start);
	return 0;
}

static void producers_stop(struct bench *b)
{
	atomic_store(&b->stop, true);
	for (uint32_t p = 0; p < b->cfg.producers; p++)
		pthread_join(b->producers[p].thread, NULL);
	for (uint32_t p = 0; p < b->cfg.producers; p++)
		if (b->producers[p].ep)
			eng_producer_close(b->producers[p].ep);
	pthread_barrier_destroy(&b->start);
}

static int write_outputs(const struct bench *b, const struct results *r, const struct snapshot *a,
			 const struct snapshot *z, int64_t started_real_ns)
{
	char *json = NULL;
	size_t json_len = 0;
	FILE *mem = open_memstream(&json, &json_len);
	if (!mem)
		return -errno;
	json_write(mem, b, r, a, z, started_real_ns);
	fclose(mem);
	summary_write(stderr, b, r, a, z);
	fwrite(json, 1, json_len, stdout);
	fflush(stdout);
	int rc = 0;
	if (b->cfg.json_out) {
		FILE *f = fopen(b->cfg.json_out, "w");
		if (!f || fwrite(json, 1, json_len, f) != json_len || fclose(f) != 0) {
			fprintf(stderr, "hodei-bench-append: cannot write %s: %s\n", b->cfg.json_out,
				strerror(errno));
			rc = -EIO;
		}
	}
	free(json);
	return rc;
}

int main(int argc, char **argv)
{
	static struct bench b;      /* large (histograms): not on the stack */
	static struct snapshot a, z;
	static struct results r;
	static char tmp_dir[4096];
	int rc = parse_args(argc, argv, &b.cfg);
	if (rc)
		return rc > 0 ? 0 : 2;
	signals_install();
	atomic_store(&b.window_start_ns, INT64_MAX);
	atomic_store(&b.window_end_ns, INT64_MAX);
	int64_t started_real_ns = real_ns();
	int exit_code = 1;
	if (tenants_init(&b) != 0 || engine_start(&b, tmp_dir, sizeof(tmp_dir)) != 0)
		goto out;
	a.shards = calloc(eng_shard_count(b.eng), sizeof(*a.shards));
	z.shards = calloc(eng_shard_count(b.eng), sizeof(*z.shards));
	if (!a.shards || !z.shards || producers_start(&b) != 0)
		goto out;
	measure(&b, &a, &z, &r);
	producers_stop(&b);
	results_compute(&b, &a, &z, &r);
	exit_code = write_outputs(&b, &r, &a, &z, started_real_ns) == 0 && r.submit_error == 0 ? 0 : 1;
out:
	if (b.producers && !atomic_load(&b.stop) && b.producers[0].thread)
		producers_stop(&b);
	for (uint32_t p = 0; b.producers && !b.producers[0].thread && p < b.cfg.producers; p++)
		if (b.producers[p].ep) /* opened, but the threads never started */
			eng_producer_close(b.producers[p].ep);
	eng_close(b.eng);
	for (uint32_t p = 0; b.producers && p < b.cfg.producers; p++)
		producer_free(&b.producers[p]);
	free(b.producers);
	free(b.tenant_names);
	free(b.tenant_store);
	free(a.shards);
	free(z.shards);
	if (tmp_dir[0] && !b.cfg.keep)
		nftw(tmp_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	else if (b.cfg.data_dir)
		fprintf(stderr, "hodei-bench-append: data kept in %s\n", b.cfg.data_dir);
	return exit_code;
}
