// SPDX-License-Identifier: Apache-2.0
/*
 * test_wal.c — WAL replay rebuilds exactly what the engine held before it
 * stopped: every tenant's rows, chain and next seq, and the dedup memory
 * in insertion order (what a full ring forgets too). Tenants of very
 * different sizes over many small WAL files exercise the sizing pass
 * (memtables reserved from the WAL's record headers), the helper that
 * hashes events ahead of the replay, and the batched dedup inserts.
 */
#include <criterion/criterion.h>
#include <stdatomic.h>

#include "engine_test_util.h"

#define TENANTS 12
#define BATCH 40

struct tenant_log {
	char name[16];
	uint32_t first_event;        /* tu_event index of its first event */
	uint32_t events;
	uint64_t last_seq;
	uint8_t chain[FMT_HASH_BYTES];
};

static void config(struct eng_config *cfg, uint32_t shards, uint32_t dedup_entries)
{
	eng_config_default(cfg);
	cfg->shards = shards;
	cfg->io = ENG_IO_SYNC;
	cfg->producers_max = 2;
	cfg->dedup_entries_max = dedup_entries;
	cfg->wal_file_bytes = 64 << 10; /* many files */
	cfg->seal_rows = 1u << 20;      /* nothing is sealed: all of it is replayed */
	cfg->seal_bytes = 1ull << 34;
	cfg->seal_age_ns = 3600ll * 1000000000;
}

/* Tenant k gets about 4000 / (k + 1) events, in batches that interleave
 * the tenants, so that every WAL file holds several of them. */
static uint32_t fill(struct eng_producer *p, struct tenant_log *t)
{
	uint32_t next = 0;
	for (int k = 0; k < TENANTS; k++) {
		snprintf(t[k].name, sizeof(t[k].name), "tenant-%02d", k);
		t[k].events = 4000 / (uint32_t)(k + 1);
		t[k].first_event = next;
		next += t[k].events;
	}
	uint32_t done[TENANTS] = { 0 }, total = 0;
	for (bool more = true; more;) {
		more = false;
		for (int k = 0; k < TENANTS; k++) {
			if (done[k] == t[k].events)
				continue;
			uint32_t n = FMT_MIN(BATCH - (uint32_t)k, t[k].events - done[k]);
			struct eng_append req;
			cr_assert_eq(tu_append(p, t[k].name, t[k].first_event + done[k], n, &req), 0);
			cr_assert_eq(req.accepted, n);
			t[k].last_seq = req.last_seq;
			memcpy(t[k].chain, req.chain, FMT_HASH_BYTES);
			done[k] += n;
			total += n;
			more = true;
		}
	}
	return total;
}

static void check_replayed(struct eng_producer *p, const struct tenant_log *t)
{
	for (int k = 0; k < TENANTS; k++) {
		struct eng_verify v = { .tenant = fmt_str_c(t[k].name) };
		cr_assert_eq(eng_verify_wait(p, &v), 0);
		cr_assert(v.ok, "verify %s: %s", t[k].name, v.problem);
		cr_assert_eq(v.events_checked, t[k].events, "%s: %llu rows", t[k].name,
			     (unsigned long long)v.events_checked);
		cr_assert(memcmp(v.chain, t[k].chain, FMT_HASH_BYTES) == 0,
			  "%s: the chain head differs from the last ack's", t[k].name);
		struct eng_count c = { .tenant = fmt_str_c(t[k].name) };
		cr_assert_eq(eng_count_wait(p, &c), 0);
		cr_assert_eq(c.total, t[k].events, "%s: count %llu", t[k].name,
			     (unsigned long long)c.total);
	}
}

/* Opens an engine on dir with cfg, and fills it. */
static struct eng_engine *open_filled(const char *dir, struct eng_config *cfg,
				      struct tenant_log *t, struct eng_producer **p)
{
	struct eng_engine *eng = tu_open(dir, cfg);
	cr_assert(eng != NULL);
	cr_assert_eq(eng_producer_open(eng, p), 0);
	fill(*p, t);
	return eng;
}

/* Shard i's stats once published twice more: everything acknowledged
 * before the call is in them. */
static void settled_stats(struct eng_engine *eng, uint32_t i, struct eng_shard_stats *st)
{
	struct eng_shard_stats first;
	eng_shard_stats(eng, i, &first);
	do {
		usleep(1000);
		eng_shard_stats(eng, i, st);
	} while (st->publishes < first.publishes + 2);
}

Test(wal, replay_rebuilds_rows_chains_and_seq)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	struct tenant_log t[TENANTS];
	struct eng_config cfg;
	config(&cfg, 2, 100000);
	struct eng_producer *p;
	struct eng_engine *eng = open_filled(dir, &cfg, t, &p);
	eng_producer_close(p);
	eng_close(eng);

	for (int round = 0; round < 2; round++) {
		config(&cfg, 2, 100000);
		eng = tu_open(dir, &cfg);
		cr_assert(eng != NULL, "restart %d failed", round);
		cr_assert_eq(eng_producer_open(eng, &p), 0);
		check_replayed(p, t);
		/* Every stored id is remembered: a retry of the last batch
		 * and of the first event are duplicates. */
		for (int k = 0; k < TENANTS; k++) {
			struct eng_append req;
			cr_assert_eq(tu_append(p, t[k].name, t[k].first_event + t[k].events - 5, 5, &req), 0);
			cr_assert_eq(req.duplicates, 5, "%s: %u duplicates", t[k].name, req.duplicates);
			cr_assert_eq(tu_append(p, t[k].name, t[k].first_event, 1, &req), 0);
			cr_assert_eq(req.duplicates, 1);
		}
		eng_producer_close(p);
		eng_close(eng);
	}

	/* New events continue each tenant's seq and chain. */
	config(&cfg, 2, 100000);
	eng = tu_open(dir, &cfg);
	cr_assert(eng != NULL);
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	for (int k = 0; k < TENANTS; k++) {
		struct eng_append req;
		cr_assert_eq(tu_append(p, t[k].name, 1000000 + (uint32_t)k, 1, &req), 0);
		cr_assert_eq(req.accepted, 1);
		cr_assert_eq(req.first_seq, t[k].last_seq + 1, "%s", t[k].name);
		struct eng_verify v = { .tenant = fmt_str_c(t[k].name) };
		cr_assert_eq(eng_verify_wait(p, &v), 0);
		cr_assert(v.ok, "verify %s after a new event: %s", t[k].name, v.problem);
	}
	eng_producer_close(p);
	eng_close(eng);
}

/* A dedup ring smaller than the WAL: replay inserts in WAL order, so it
 * forgets exactly the oldest ids, as the running engine did. `order`
 * lists the events as they were appended (tenant, event index). */
struct appended {
	uint8_t tenant;
	uint32_t event;
};

static uint32_t fill_in_order(struct eng_producer *p, struct tenant_log *t, struct appended *order)
{
	uint32_t total = fill(p, t), n = 0;
	/* fill()'s round-robin, replayed without appending. */
	uint32_t done[TENANTS] = { 0 };
	for (bool more = true; more;) {
		more = false;
		for (int k = 0; k < TENANTS; k++) {
			uint32_t b = FMT_MIN(BATCH - (uint32_t)k, t[k].events - done[k]);
			for (uint32_t i = 0; i < b; i++)
				order[n++] = (struct appended){ (uint8_t)k, t[k].first_event + done[k] + i };
			done[k] += b;
			more = more || b;
		}
	}
	cr_assert_eq(n, total);
	return total;
}

Test(wal, replay_refills_a_full_dedup_ring_in_order)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	struct tenant_log t[TENANTS];
	static struct appended order[20000];
	struct eng_config cfg;
	const uint32_t ring = 3000, margin = 200;
	config(&cfg, 1, ring);
	struct eng_engine *eng = tu_open(dir, &cfg);
	cr_assert(eng != NULL);
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	uint32_t total = fill_in_order(p, t, order);
	cr_assert_gt(total, 2 * ring);
	eng_producer_close(p);
	eng_close(eng);

	eng = tu_open(dir, &cfg);
	cr_assert(eng != NULL);
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	check_replayed(p, t);
	struct eng_append req;
	/* The newest ids are remembered (a duplicate changes nothing)... */
	for (uint32_t i = total - ring + margin; i < total; i += 37) {
		const struct appended *a = &order[i];
		cr_assert_eq(tu_append(p, t[a->tenant].name, a->event, 1, &req), 0);
		cr_assert_eq(req.duplicates, 1, "appended #%u of %u: forgotten", i, total);
	}
	/* ... and the oldest are not (each accepted one pushes out one of
	 * the oldest remembered, which the margin leaves alone). */
	for (uint32_t i = 0; i < total - ring - margin; i += 997) {
		const struct appended *a = &order[i];
		cr_assert_eq(tu_append(p, t[a->tenant].name, a->event, 1, &req), 0);
		cr_assert_eq(req.accepted, 1, "appended #%u of %u: still remembered", i, total);
	}
	eng_producer_close(p);
	eng_close(eng);
}

/* One WAL file with more events than the replay's helper has hash slots
 * (it waits for the replay to free them): every row, chain and seq as
 * acknowledged. */
Test(wal, replay_of_a_file_longer_than_the_helper_ring, .timeout = 300)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	struct eng_config cfg;
	config(&cfg, 1, 1000);
	cfg.wal_file_bytes = 1ull << 30;
	struct eng_engine *eng = tu_open(dir, &cfg);
	cr_assert(eng != NULL);
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	const char *names[2] = { "big", "small" };
	const uint32_t events = 80000, batch = 1000;
	uint8_t chain[2][FMT_HASH_BYTES];
	uint64_t last[2] = { 0, 0 };
	for (uint32_t i = 0; i < events; i += batch) {
		int k = (i / batch) % 4 == 3; /* a quarter to "small" */
		struct eng_append req;
		cr_assert_eq(tu_append(p, names[k], i, batch, &req), 0);
		cr_assert_eq(req.accepted, batch);
		last[k] = req.last_seq;
		memcpy(chain[k], req.chain, FMT_HASH_BYTES);
	}
	eng_producer_close(p);
	eng_close(eng);

	eng = tu_open(dir, &cfg);
	cr_assert(eng != NULL);
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	for (int k = 0; k < 2; k++) {
		struct eng_verify v = { .tenant = fmt_str_c(names[k]) };
		cr_assert_eq(eng_verify_wait(p, &v), 0);
		cr_assert(v.ok, "verify %s: %s", names[k], v.problem);
		cr_assert_eq(v.events_checked, last[k]);
		cr_assert(memcmp(v.chain, chain[k], FMT_HASH_BYTES) == 0, "%s: chain head", names[k]);
	}
	eng_producer_close(p);
	eng_close(eng);
}

/* Every rotation is timed (the first file of a start is not a rotation):
 * the histogram counts them all, and its total and maximum agree. */
Test(wal, rotations_are_timed)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	struct tenant_log t[TENANTS];
	struct eng_config cfg;
	config(&cfg, 2, 100000);
	struct eng_producer *p;
	struct eng_engine *eng = open_filled(dir, &cfg, t, &p);
	for (uint32_t i = 0; i < cfg.shards; i++) {
		struct eng_shard_stats st;
		settled_stats(eng, i, &st);
		uint64_t timed = 0;
		uint32_t top = 0;
		for (uint32_t b = 0; b <= ENG_LATENCY_BOUNDS; b++) {
			timed += st.wal_rotation_hist[b];
			if (st.wal_rotation_hist[b])
				top = b;
		}
		cr_assert_gt(st.wal_rotations, 3, "shard %u: %llu files", i,
			     (unsigned long long)st.wal_rotations);
		cr_assert_eq(timed, st.wal_rotations - 1, "shard %u: %llu timed of %llu", i,
			     (unsigned long long)timed, (unsigned long long)st.wal_rotations);
		cr_assert_gt(st.wal_rotation_ns_max, 0);
		cr_assert_geq(st.wal_rotation_ns_total, st.wal_rotation_ns_max);
		/* The maximum lies in the highest bucket counted. */
		cr_assert(top == ENG_LATENCY_BOUNDS ||
				  st.wal_rotation_ns_max <= eng_latency_bounds_ns[top],
			  "shard %u: max %llu ns above bucket %u", i,
			  (unsigned long long)st.wal_rotation_ns_max, top);
		cr_assert(top == 0 || st.wal_rotation_ns_max > eng_latency_bounds_ns[top - 1]);
	}
	eng_producer_close(p);
	eng_close(eng);
	tu_rmtree(dir);
}

/* The slow-commit lines, from the shard thread. */
struct slow_log {
	atomic_int lines, well_formed;
};

static void slow_log_capture(void *ctx, enum eng_log_level level, const char *msg)
{
	struct slow_log *seen = ctx;
	if (!strstr(msg, "slow WAL commit"))
		return;
	atomic_fetch_add(&seen->lines, 1);
	if (level == ENG_LOG_WARN && strncmp(msg, "shard 0: slow WAL commit: ", 26) == 0 &&
	    strstr(msg, "fdatasync") && strstr(msg, "meanwhile:") &&
	    strstr(msg, "not logged since the last line"))
		atomic_fetch_add(&seen->well_formed, 1);
}

static double mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* With the threshold at 1 ns every commit is slow: each is counted, and
 * at most one line a second is written (the first at once). With 0,
 * none is. */
Test(wal, slow_commits_are_counted_and_logged_at_most_once_a_second, .timeout = 120)
{
	for (int off = 0; off < 2; off++) {
		char dir[256];
		tu_tmpdir(dir, sizeof(dir));
		struct tenant_log t[TENANTS];
		struct slow_log seen = { 0 };
		struct eng_config cfg;
		config(&cfg, 1, 100000);
		cfg.slow_commit_ns = off ? 0 : 1;
		cfg.log = slow_log_capture;
		cfg.log_ctx = &seen;
		struct eng_producer *p;
		double t0 = mono_s();
		struct eng_engine *eng = open_filled(dir, &cfg, t, &p);
		double took = mono_s() - t0;
		struct eng_shard_stats st;
		settled_stats(eng, 0, &st);
		cr_assert_gt(st.wal_fsyncs, 10);
		if (off) {
			cr_assert_eq(st.wal_slow_commits, 0);
			cr_assert_eq(atomic_load(&seen.lines), 0);
		} else {
			cr_assert_eq(st.wal_slow_commits, st.wal_fsyncs);
			int lines = atomic_load(&seen.lines);
			cr_assert_geq(lines, 1);
			cr_assert_leq(lines, (int)took + 1, "%d lines in %.2f s", lines, took);
			cr_assert_eq(atomic_load(&seen.well_formed), lines);
		}
		eng_producer_close(p);
		eng_close(eng);
		tu_rmtree(dir);
	}
}
