// SPDX-License-Identifier: Apache-2.0
/*
 * test_shard.c — the append path, group commit, dedup, sealing and
 * recovery through the public API, on real files.
 */
#include <criterion/criterion.h>

#include "engine_test_util.h"

#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static void cfg_small(struct eng_config *cfg, enum eng_io_backend io)
{
	eng_config_default(cfg);
	cfg->shards = 2;
	cfg->io = io;
	cfg->producers_max = 4;
	cfg->dedup_entries_max = 100000;
	cfg->memtable_budget_bytes = 64u << 20;
	cfg->wal_buffer_bytes = 4u << 20;
}

static void append_and_reopen(enum eng_io_backend io)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	struct eng_config cfg;
	cfg_small(&cfg, io);
	struct eng_engine *eng = tu_open(dir, &cfg);
	cr_assert(eng != NULL);
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	struct eng_append req;
	cr_assert_eq(tu_append(p, "acme", 0, 10, &req), 0);
	cr_assert_eq(req.accepted, 10);
	cr_assert_eq(req.first_seq, 1);
	cr_assert_eq(req.last_seq, 10);
	cr_assert_eq(tu_append(p, "acme", 10, 5, &req), 0);
	cr_assert_eq(req.first_seq, 11);
	cr_assert_eq(req.last_seq, 15);
	uint8_t chain[FMT_HASH_BYTES];
	memcpy(chain, req.chain, sizeof(chain));
	eng_producer_close(p);
	eng_close(eng);

	eng = tu_open(dir, &cfg);
	cr_assert(eng != NULL);
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	/* The same ids again: all duplicates, nothing stored. */
	cr_assert_eq(tu_append(p, "acme", 10, 5, &req), 0);
	cr_assert_eq(req.accepted, 0);
	cr_assert_eq(req.duplicates, 5);
	cr_assert(memcmp(req.chain, chain, sizeof(chain)) == 0);
	cr_assert_eq(tu_append(p, "acme", 100, 1, &req), 0);
	cr_assert_eq(req.first_seq, 16, "seq continues after restart, got %llu",
		     (unsigned long long)req.first_seq);
	struct eng_verify v = { .tenant = fmt_str_c("acme") };
	cr_assert_eq(eng_verify_wait(p, &v), 0);
	cr_assert(v.ok, "verify: %s", v.problem);
	cr_assert_eq(v.events_checked, 16);
	eng_producer_close(p);
	eng_close(eng);
}

Test(shard, append_reopen_sync) { append_and_reopen(ENG_IO_SYNC); }
Test(shard, append_reopen_uring) { append_and_reopen(ENG_IO_AUTO); }

Test(shard, invalid_batch_stores_nothing)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	struct eng_config cfg;
	cfg_small(&cfg, ENG_IO_SYNC);
	struct eng_engine *eng = tu_open(dir, &cfg);
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	struct fmt_event evs[3];
	char store[3][256];
	for (int i = 0; i < 3; i++)
		tu_event(&evs[i], store[i], (uint32_t)i);
	evs[2].str[FMT_F_ACTION] = (struct fmt_str){ "", 0 };
	struct eng_append req = { .tenant = fmt_str_c("acme"), .events = evs, .count = 3 };
	cr_assert_eq(eng_append_wait(p, &req), FMT_E_INVALID);
	cr_assert_eq(req.invalid_index, 2);
	cr_assert_str_eq(req.invalid.field, "action");
	evs[2].str[FMT_F_ACTION] = fmt_str_c("x.y");
	cr_assert_eq(eng_append_wait(p, &req), 0);
	cr_assert_eq(req.first_seq, 1, "a refused batch must not consume seqs");
	req.tenant = fmt_str_c("bad tenant!");
	cr_assert_eq(eng_append_wait(p, &req), FMT_E_INVALID);
	eng_producer_close(p);
	eng_close(eng);
}

Test(shard, seals_segments_and_recovers)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	struct eng_config cfg;
	cfg_small(&cfg, ENG_IO_AUTO);
	cfg.seal_rows = 100;
	cfg.block_rows = 16;
	struct eng_engine *eng = tu_open(dir, &cfg);
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	struct eng_append req;
	for (uint32_t b = 0; b < 25; b++) {
		cr_assert_eq(tu_append(p, b % 2 ? "t-odd" : "t-even", b * 20, 20, &req), 0);
		cr_assert_eq(req.accepted, 20);
	}
	/* Seals are asynchronous: wait until some happened. */
	struct eng_shard_stats st = { 0 };
	for (int i = 0; i < 200; i++) {
		uint64_t sealed = 0;
		for (uint32_t sh = 0; sh < eng_shard_count(eng); sh++) {
			eng_shard_stats(eng, sh, &st);
			sealed += st.segments_sealed;
		}
		if (sealed >= 2)
			break;
		usleep(20000);
	}
	eng_producer_close(p);
	eng_close(eng);
	eng = tu_open(dir, &cfg);
	cr_assert(eng != NULL);
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	const char *tenants[] = { "t-odd", "t-even" };
	for (int i = 0; i < 2; i++) {
		struct eng_verify v = { .tenant = fmt_str_c(tenants[i]) };
		cr_assert_eq(eng_verify_wait(p, &v), 0);
		cr_assert(v.ok, "verify %s: %s", tenants[i], v.problem);
		cr_assert_eq(v.events_checked, 12 * 20 + (i ? 20 : 0));
		cr_assert(v.segments_checked >= 1, "segments %llu", (unsigned long long)v.segments_checked);
	}
	cr_assert_eq(tu_append(p, "t-odd", 9000, 1, &req), 0);
	cr_assert_eq(req.first_seq, 241);
	/* The first batch is sealed by now; its ids are still remembered
	 * after the restart, from the segment. */
	cr_assert_eq(tu_append(p, "t-even", 0, 20, &req), 0);
	cr_assert_eq(req.duplicates, 20);
	cr_assert_eq(req.accepted, 0);
	eng_producer_close(p);
	eng_close(eng);
}

Test(shard, server_assigns_uuid_v7_and_receive_time)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	struct eng_config cfg;
	cfg_small(&cfg, ENG_IO_SYNC);
	struct eng_engine *eng = tu_open(dir, &cfg);
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	enum { N = 500 };
	struct fmt_event *evs = calloc(N, sizeof(*evs));
	char(*store)[256] = calloc(N, 256);
	for (uint32_t i = 0; i < N; i++) {
		tu_event(&evs[i], store[i], i);
		memset(evs[i].event_id, 0, 16);
		evs[i].occurred_at_ns = 0;
	}
	struct eng_append req = { .tenant = fmt_str_c("acme"), .events = evs, .count = N };
	cr_assert_eq(eng_append_wait(p, &req), 0);
	cr_assert_eq(req.accepted, N, "zero ids are assigned, never duplicates of each other");
	struct eng_search q = { .tenant = fmt_str_c("acme"), .limit = 1000, .oldest_first = true };
	cr_assert_eq(eng_search_wait(p, &q), 0);
	cr_assert_eq(q.hit_count, N);
	for (uint32_t i = 0; i < N; i++) {
		const struct fmt_event *e = &q.hits[i].ev;
		cr_assert_eq(e->event_id[6] >> 4, 7, "UUID version 7");
		cr_assert_eq(e->event_id[8] >> 6, 2, "RFC 4122 variant");
		cr_assert_eq(e->occurred_at_ns, req.received_at_ns, "occurred_at 0 means received now");
		for (uint32_t k = 0; k < i; k++)
			cr_assert(memcmp(e->event_id, q.hits[k].ev.event_id, 16) != 0);
	}
	eng_search_release(&q);
	free(evs);
	free(store);
	eng_producer_close(p);
	eng_close(eng);
}

/* A request larger than the dedup group (64), with zero ids (assigned by
 * the server, never remembered) among client ids, some repeated within
 * the request and some from an earlier request: exactly the client ids
 * seen before are duplicates, and the stored events are the others in
 * order. */
Test(shard, duplicates_among_assigned_ids)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	struct eng_config cfg;
	cfg_small(&cfg, ENG_IO_SYNC);
	struct eng_engine *eng = tu_open(dir, &cfg);
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	struct eng_append req;
	cr_assert_eq(tu_append(p, "acme", 1000, 10, &req), 0); /* ids 1000..1009 stored */
	enum { N = 150 };
	struct fmt_event *evs = calloc(N, sizeof(*evs));
	char(*store)[256] = calloc(N, 256);
	bool want_dup[N];
	bool stored[20] = { 0 }; /* id 1000 + j stored already */
	memset(stored, true, 10);
	uint32_t want_accepted = 0;
	for (uint32_t i = 0; i < N; i++) {
		/* i % 3 == 0: zero id; i % 3 == 1: id 1000 + i % 20 (the
		 * first ten were stored before, the rest repeat within the
		 * request); i % 3 == 2: a fresh id 5000 + i. */
		uint32_t id = i % 3 == 1 ? 1000 + i % 20 : 5000 + i;
		tu_event(&evs[i], store[i], id);
		evs[i].occurred_at_ns = 1750000000000000000ll + i; /* search order: i's */
		if (i % 3 == 0)
			memset(evs[i].event_id, 0, 16);
		want_dup[i] = i % 3 == 1 && stored[i % 20];
		if (i % 3 == 1)
			stored[i % 20] = true;
		want_accepted += !want_dup[i];
	}
	req = (struct eng_append){ .tenant = fmt_str_c("acme"), .events = evs, .count = N };
	cr_assert_eq(eng_append_wait(p, &req), 0);
	cr_assert_eq(req.accepted, want_accepted);
	cr_assert_eq(req.duplicates, N - want_accepted);
	struct eng_search q = { .tenant = fmt_str_c("acme"), .limit = 1000, .oldest_first = true };
	cr_assert_eq(eng_search_wait(p, &q), 0);
	cr_assert_eq(q.hit_count, 10 + want_accepted);
	uint32_t h = 10;
	for (uint32_t i = 0; i < N; i++) {
		if (want_dup[i])
			continue;
		const struct fmt_event *e = &q.hits[h++].ev;
		cr_assert(fmt_str_eq(e->str[FMT_F_RESOURCE_ID], evs[i].str[FMT_F_RESOURCE_ID]),
			  "event %u stored in its place", i);
		if (i % 3 != 0)
			cr_assert(memcmp(e->event_id, evs[i].event_id, 16) == 0, "event %u", i);
	}
	eng_search_release(&q);
	free(evs);
	free(store);
	eng_producer_close(p);
	eng_close(eng);
}

Test(shard, to_ns_zero_means_now)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	struct eng_config cfg;
	cfg_small(&cfg, ENG_IO_SYNC);
	struct eng_engine *eng = tu_open(dir, &cfg);
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	struct fmt_event evs[2];
	char store[2][256];
	tu_event(&evs[0], store[0], 1);
	tu_event(&evs[1], store[1], 2);
	int64_t hour = 3600ll * 1000000000;
	evs[1].occurred_at_ns = eng_now_ns_for_tests() + hour; /* a clock running ahead */
	struct eng_append req = { .tenant = fmt_str_c("acme"), .events = evs, .count = 2 };
	cr_assert_eq(eng_append_wait(p, &req), 0);
	struct eng_search q = { .tenant = fmt_str_c("acme") };
	cr_assert_eq(eng_search_wait(p, &q), 0);
	cr_assert_eq(q.hit_count, 1, "to_ns 0 is now: the future event is not in yet");
	eng_search_release(&q);
	q = (struct eng_search){ .tenant = fmt_str_c("acme") };
	q.filter.to_ns = evs[1].occurred_at_ns + 1;
	cr_assert_eq(eng_search_wait(p, &q), 0);
	cr_assert_eq(q.hit_count, 2);
	eng_search_release(&q);
	eng_producer_close(p);
	eng_close(eng);
}

/* Walks every page of tenant's events, oldest first, checking their
 * order; returns how many it saw. */
static uint32_t walk_pages(struct eng_producer *p, const char *tenant)
{
	uint32_t seen = 0;
	struct eng_search q = { .tenant = fmt_str_c(tenant), .limit = 7, .oldest_first = true };
	uint8_t token[ENG_PAGE_TOKEN_BYTES];
	for (int page = 0; page < 1000; page++) {
		cr_assert_eq(eng_search_wait(p, &q), 0);
		for (uint32_t i = 0; i < q.hit_count; i++)
			cr_assert_eq(q.hits[i].ev.seq, ++seen);
		uint32_t len = q.next_page_token_len;
		memcpy(token, q.next_page_token, len);
		eng_search_release(&q);
		if (!len)
			break;
		q = (struct eng_search){ .tenant = fmt_str_c(tenant), .limit = 7, .oldest_first = true,
					 .page_token = token, .page_token_len = len };
	}
	return seen;
}

/* One shard, tenant acme in twelve sealed segments of 20 rows (blocks
 * of 8), at most open_max segment files open. */
static struct eng_engine *twelve_segments(char *dir, size_t cap, struct eng_config *cfg,
					  uint32_t open_max, struct eng_producer **p)
{
	tu_tmpdir(dir, cap);
	cfg_small(cfg, ENG_IO_SYNC);
	cfg->shards = 1;
	cfg->seal_rows = 20;
	cfg->block_rows = 8;
	cfg->open_segments_max = open_max;
	struct eng_engine *eng = tu_open(dir, cfg);
	cr_assert(eng != NULL);
	cr_assert_eq(eng_producer_open(eng, p), 0);
	struct eng_append req;
	for (uint32_t b = 0; b < 12; b++)
		cr_assert_eq(tu_append(*p, "acme", b * 20, 20, &req), 0);
	cr_assert_eq(tu_wait_sealed(eng, 0, 12), 12);
	return eng;
}

Test(shard, open_segment_files_are_bounded)
{
	char dir[256];
	struct eng_config cfg;
	struct eng_producer *p;
	struct eng_engine *eng = twelve_segments(dir, sizeof(dir), &cfg, 3, &p);
	/* A walk over every page reads every segment, three files at most stay open. */
	cr_assert_eq(walk_pages(p, "acme"), 240);
	struct eng_verify v = { .tenant = fmt_str_c("acme") };
	cr_assert_eq(eng_verify_wait(p, &v), 0);
	cr_assert(v.ok, "%s", v.problem);
	struct eng_shard_stats st;
	tu_stats_settled(eng, 0, &st);
	cr_assert(st.segments_open <= 3, "open %llu", (unsigned long long)st.segments_open);
	cr_assert(st.segments_evicted > 0);
	eng_producer_close(p);
	eng_close(eng);
}

/* Footers stay in memory apart from the files, within their own budget:
 * those of segments this run sealed are never read back; after a restart
 * each is read once while it fits, and again and again when the budget
 * holds only a few. */
Test(shard, segment_footers_stay_in_memory_within_their_budget)
{
	char dir[256];
	struct eng_config cfg;
	struct eng_producer *p;
	struct eng_engine *eng = twelve_segments(dir, sizeof(dir), &cfg, 2, &p);
	cr_assert_eq(walk_pages(p, "acme"), 240);
	struct eng_shard_stats st;
	tu_stats_settled(eng, 0, &st);
	cr_assert_eq(st.footer_reads, 0, "sealed here: footers kept from the seal");
	cr_assert(st.footers_bytes > 0);
	cr_assert(st.segments_open <= 2);
	uint64_t all = st.footers_bytes;
	eng_producer_close(p);
	eng_close(eng);

	/* Room for about three footers. */
	cfg.footer_cache_bytes = all / 4;
	eng = tu_open(dir, &cfg);
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	cr_assert_eq(walk_pages(p, "acme"), 240);
	tu_stats_settled(eng, 0, &st);
	cr_assert(st.footer_reads >= 12, "%llu", (unsigned long long)st.footer_reads);
	cr_assert(st.footers_evicted > 0);
	cr_assert(st.footers_bytes <= cfg.footer_cache_bytes, "%llu bytes kept",
		  (unsigned long long)st.footers_bytes);
	uint64_t reads = st.footer_reads;
	cr_assert_eq(walk_pages(p, "acme"), 240);
	tu_stats_settled(eng, 0, &st);
	cr_assert(st.footer_reads > reads, "evicted footers are read again");
	eng_producer_close(p);
	eng_close(eng);

	/* Enough for all: each is read once. */
	cfg.footer_cache_bytes = 64u << 20;
	eng = tu_open(dir, &cfg);
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	cr_assert_eq(walk_pages(p, "acme"), 240);
	tu_stats_settled(eng, 0, &st);
	reads = st.footer_reads;
	cr_assert_eq(walk_pages(p, "acme"), 240);
	tu_stats_settled(eng, 0, &st);
	cr_assert_eq(st.footer_reads, reads, "resident footers are not read again");
	cr_assert_eq(st.footers_evicted, 0);
	struct eng_verify v = { .tenant = fmt_str_c("acme") };
	cr_assert_eq(eng_verify_wait(p, &v), 0);
	cr_assert(v.ok, "%s", v.problem);
	eng_producer_close(p);
	eng_close(eng);
}

Test(shard, verify_a_range_inside_a_segment)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	struct eng_config cfg;
	cfg_small(&cfg, ENG_IO_SYNC);
	cfg.shards = 1;
	cfg.seal_rows = 100;
	cfg.block_rows = 16;
	struct eng_engine *eng = tu_open(dir, &cfg);
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	struct eng_append first, second;
	cr_assert_eq(tu_append(p, "acme", 0, 50, &first), 0);
	cr_assert_eq(tu_append(p, "acme", 50, 100, &second), 0);
	uint64_t sealed = tu_wait_sealed(eng, 0, 1);
	cr_assert(sealed >= 1);
	struct eng_verify v = { .tenant = fmt_str_c("acme"), .from_seq = 1, .to_seq = 50 };
	cr_assert_eq(eng_verify_wait(p, &v), 0);
	cr_assert(v.ok, "%s", v.problem);
	cr_assert_eq(v.events_checked, 50);
	cr_assert(memcmp(v.chain, first.chain, FMT_HASH_BYTES) == 0,
		  "the chain after seq 50 is the one acked with seq 50");
	v = (struct eng_verify){ .tenant = fmt_str_c("acme"), .from_seq = 40, .to_seq = 120 };
	cr_assert_eq(eng_verify_wait(p, &v), 0);
	cr_assert(v.ok, "%s", v.problem);
	cr_assert_eq(v.events_checked, 81);
	v = (struct eng_verify){ .tenant = fmt_str_c("acme") };
	cr_assert_eq(eng_verify_wait(p, &v), 0);
	cr_assert_eq(v.events_checked, 150);
	cr_assert(memcmp(v.chain, second.chain, FMT_HASH_BYTES) == 0);
	eng_producer_close(p);
	eng_close(eng);
}

/* Appends 15 events to each of tenants t00..t(n-1). */
static void append_to_each(struct eng_producer *p, uint32_t n)
{
	char name[16];
	struct eng_append req;
	for (uint32_t t = 0; t < n; t++) {
		snprintf(name, sizeof(name), "t%02u", t);
		cr_assert_eq(tu_append(p, name, t * 100, 15, &req), 0);
	}
}

/* Tenants t00..t(n-1), 15 events each, verify as one segment each. */
static void verify_one_segment_each(struct eng_producer *p, uint32_t n)
{
	char name[16];
	for (uint32_t t = 0; t < n; t++) {
		snprintf(name, sizeof(name), "t%02u", t);
		struct eng_verify v = { .tenant = fmt_str_c(name) };
		cr_assert_eq(eng_verify_wait(p, &v), 0);
		cr_assert(v.ok && v.events_checked == 15 && v.segments_checked == 1, "%s: %s", name,
			  v.problem);
	}
}

Test(shard, small_ring_seals_many_tenants)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	struct eng_config cfg;
	cfg_small(&cfg, ENG_IO_AUTO);
	cfg.shards = 1;
	cfg.io_entries = 8; /* the WAL's two ops leave room for two segments per round */
	cfg.seal_rows = 10;
	cfg.block_rows = 4;
	struct eng_engine *eng = tu_open(dir, &cfg);
	cr_assert(eng != NULL);
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	append_to_each(p, 12);
	uint64_t sealed = tu_wait_sealed(eng, 0, 12);
	cr_assert_eq(sealed, 12, "one segment of 10 rows per tenant");
	verify_one_segment_each(p, 12);
	eng_producer_close(p);
	eng_close(eng);
}

/* Paced segment writing (seal.c): a round's images are written as one
 * stream cut in steps of seal_write_step_bytes, so small images share a
 * step and no step carries more than its size. The tenants are written
 * with sealing held off, then reopened with seal_rows under their row
 * count: the replay makes them all due together, so one round takes them
 * all. */
Test(shard, paced_seal_steps_share_small_images)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	struct eng_config cfg;
	cfg_small(&cfg, ENG_IO_AUTO);
	cfg.shards = 1;
	cfg.block_rows = 4;
	struct eng_engine *eng = tu_open(dir, &cfg);
	cr_assert(eng != NULL);
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	enum { TENANTS = 40 };
	append_to_each(p, TENANTS);
	eng_producer_close(p);
	eng_close(eng);

	cfg.seal_rows = 10;
	cfg.seal_write_step_bytes = 16u << 10;
	eng = tu_open(dir, &cfg);
	cr_assert(eng != NULL);
	cr_assert_eq(tu_wait_sealed(eng, 0, TENANTS), TENANTS, "one segment of 10 rows per tenant");
	struct eng_shard_stats st;
	tu_stats_settled(eng, 0, &st);
	uint64_t least = (st.segment_bytes_local + cfg.seal_write_step_bytes - 1) /
			 cfg.seal_write_step_bytes;
	cr_assert_geq(st.seal_write_steps, least, "%llu steps for %llu bytes: a step carried more "
		      "than its size", (unsigned long long)st.seal_write_steps,
		      (unsigned long long)st.segment_bytes_local);
	cr_assert_lt(st.seal_write_steps, TENANTS, "%llu steps for %u images of %llu bytes in all: "
		     "small images did not share steps", (unsigned long long)st.seal_write_steps,
		     TENANTS, (unsigned long long)st.segment_bytes_local);
	cr_assert_eq(st.seal_write_steps_hurried, 0, "the memtables are far under the budget");
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	verify_one_segment_each(p, TENANTS);
	eng_producer_close(p);
	eng_close(eng);
}

/* DESIGN.md §2.9: every limit is enforced, refuses with a clear status and
 * stores nothing. */
Test(shard, limits_refuse_and_store_nothing)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	struct eng_config cfg;
	cfg_small(&cfg, ENG_IO_SYNC);
	cfg.shards = 1;
	cfg.tenants_max = 2;
	cfg.queue_depth = 2;
	cfg.limits.events_per_batch_max = 8;
	cfg.wal_buffer_bytes = 64u << 10;
	struct eng_engine *eng = tu_open(dir, &cfg);
	cr_assert(eng != NULL);
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	struct eng_append req;
	cr_assert_eq(tu_append(p, "a", 0, 1, &req), 0);
	cr_assert_eq(tu_append(p, "b", 1, 1, &req), 0);
	cr_assert_eq(tu_append(p, "c", 2, 1, &req), FMT_E_FULL, "a third tenant is over tenants_max");
	cr_assert_eq(tu_append(p, "a", 3, 9, &req), FMT_E_TOO_BIG, "9 events > 8 per request");

	/* Eight events with 12 KiB of details do not fit a 64 KiB WAL buffer. */
	static char details[12 << 10];
	memset(details, ' ', sizeof(details));
	details[0] = '[';
	details[sizeof(details) - 1] = ']';
	struct fmt_event evs[8];
	char store[8][256];
	for (uint32_t i = 0; i < 8; i++) {
		tu_event(&evs[i], store[i], 100 + i);
		evs[i].details_json = (struct fmt_str){ details, sizeof(details) };
	}
	req = (struct eng_append){ .tenant = fmt_str_c("a"), .events = evs, .count = 8 };
	cr_assert_eq(eng_append_wait(p, &req), FMT_E_TOO_BIG);

	/* Two requests outstanding per shard at most: the third submit is refused. */
	struct eng_append r[3];
	for (int i = 0; i < 3; i++)
		r[i] = (struct eng_append){ .tenant = fmt_str_c("a"), .events = evs, .count = 1 };
	cr_assert_eq(eng_append_submit(p, &r[0]), 0);
	cr_assert_eq(eng_append_submit(p, &r[1]), 0);
	cr_assert_eq(eng_append_submit(p, &r[2]), FMT_E_FULL);
	while (eng_producer_pending(p))
		eng_producer_wait(p, 100 * 1000000);
	cr_assert_eq(r[0].status, 0);
	cr_assert_eq(r[1].accepted + r[1].duplicates, 1);

	struct eng_verify v = { .tenant = fmt_str_c("a") };
	cr_assert_eq(eng_verify_wait(p, &v), 0);
	cr_assert_eq(v.events_checked, 2, "only the one event of 'a' and the one of r[0] are stored");
	v = (struct eng_verify){ .tenant = fmt_str_c("c") };
	cr_assert_eq(eng_verify_wait(p, &v), 0);
	cr_assert_eq(v.events_checked, 0);
	struct eng_shard_stats st;
	tu_stats_settled(eng, 0, &st);
	cr_assert_eq(st.queue_full, 1);
	cr_assert_eq(st.requests_rejected_budget, 3, "tenants_max, batch size, WAL buffer");
	cr_assert_eq(st.tenants, 2);
	eng_producer_close(p);
	eng_close(eng);
}

static uint64_t wait_sealed_by(struct eng_engine *eng, enum eng_seal_reason why, uint64_t n)
{
	struct eng_shard_stats st;
	for (int i = 0; i < 500; i++) {
		eng_shard_stats(eng, 0, &st);
		if (st.segments_sealed_by[why] >= n)
			break;
		usleep(10000);
	}
	return st.segments_sealed_by[why];
}

static uint32_t tenant_segments(struct eng_producer *p, const char *tenant, uint64_t events)
{
	struct eng_verify v = { .tenant = fmt_str_c(tenant) };
	cr_assert_eq(eng_verify_wait(p, &v), 0);
	cr_assert(v.ok, "%s: %s", tenant, v.problem);
	cr_assert_eq(v.events_checked, events, "%s", tenant);
	return (uint32_t)v.segments_checked;
}

/* Appends batches of n events to tenant "big" of shard 0 until done()
 * holds for the shard's stats, waiting whenever the memtable budget
 * refuses one (a seal is running); returns how many were acknowledged. */
static uint32_t append_big_until(struct eng_engine *eng, struct eng_producer *p, uint32_t n,
				 bool (*done)(const struct eng_shard_stats *), const char *what)
{
	struct eng_append req;
	struct eng_shard_stats st;
	uint32_t sent = 0, tries = 0;
	do {
		cr_assert(sent < 200000 && ++tries < 5000, "no %s after %u events", what, sent);
		int rc = tu_append(p, "big", sent, n, &req);
		if (rc == FMT_E_NOMEM) { /* the budget, while the seal runs */
			usleep(10000);
		} else {
			cr_assert_eq(rc, 0, "append at %u: %s", sent, fmt_strerror(rc));
			sent += n;
		}
		eng_shard_stats(eng, 0, &st);
	} while (!done(&st));
	return sent;
}

static bool memory_sealed(const struct eng_shard_stats *st)
{
	return st->segments_sealed_by[ENG_SEAL_MEMORY] > 0;
}

static bool step_hurried(const struct eng_shard_stats *st)
{
	return st->seal_write_steps_hurried > 0;
}

/* Memory pressure seals the biggest tenants, not every tenant: small
 * tenants' rows stay together for one larger segment later. */
Test(shard, memory_pressure_seals_the_biggest_tenants_only)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	struct eng_config cfg;
	cfg_small(&cfg, ENG_IO_AUTO);
	cfg.shards = 1;
	cfg.memtable_budget_bytes = 4u << 20;
	cfg.wal_retain_bytes = 1ull << 30;
	struct eng_engine *eng = tu_open(dir, &cfg);
	cr_assert(eng != NULL);
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	char name[16];
	struct eng_append req;
	for (uint32_t t = 0; t < 20; t++) {
		snprintf(name, sizeof(name), "small%02u", t);
		cr_assert_eq(tu_append(p, name, 1000000 + t * 100, 10, &req), 0);
	}
	uint32_t big = append_big_until(eng, p, 1000, memory_sealed, "memory-pressure seal");
	struct eng_shard_stats st;
	cr_assert(wait_sealed_by(eng, ENG_SEAL_MEMORY, 1) >= 1);
	eng_shard_stats(eng, 0, &st);
	cr_assert_eq(st.segments_sealed, st.segments_sealed_by[ENG_SEAL_MEMORY],
		     "nothing else was due");
	cr_assert(tenant_segments(p, "big", big) >= 1);
	for (uint32_t t = 0; t < 20; t++) {
		snprintf(name, sizeof(name), "small%02u", t);
		cr_assert_eq(tenant_segments(p, name, 10), 0, "%s was cut by pressure", name);
	}
	eng_producer_close(p);
	eng_close(eng);
}

/* Paced writing gives way once the memtables pass 3/4 of the budget: the
 * rest of the round is written at once, so that slow steps do not leave
 * appends refused at the budget. Tiny steps make every round slow. */
Test(shard, paced_seal_hurries_when_the_memtables_fill)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	struct eng_config cfg;
	cfg_small(&cfg, ENG_IO_AUTO);
	cfg.shards = 1;
	cfg.memtable_budget_bytes = 4u << 20;
	cfg.wal_retain_bytes = 1ull << 30;
	cfg.seal_write_step_bytes = 4096;
	struct eng_engine *eng = tu_open(dir, &cfg);
	cr_assert(eng != NULL);
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	uint32_t sent = append_big_until(eng, p, 500, step_hurried, "hurried step");
	cr_assert_geq(tu_wait_sealed(eng, 0, 1), 1, "the hurried round ends");
	cr_assert_geq(tenant_segments(p, "big", sent), 1); /* and every acked event is stored */
	eng_producer_close(p);
	eng_close(eng);
}

/* A tenant whose oldest row sits wal_retain_bytes behind the newest WAL
 * file is sealed, however small, so that the old files can go. */
Test(shard, wal_retention_seals_old_rows_and_frees_files)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	struct eng_config cfg;
	cfg_small(&cfg, ENG_IO_AUTO);
	cfg.shards = 1;
	cfg.wal_buffer_bytes = 64u << 10;
	cfg.wal_file_bytes = 256u << 10;
	cfg.wal_retain_bytes = 512u << 10; /* two files */
	struct eng_engine *eng = tu_open(dir, &cfg);
	cr_assert(eng != NULL);
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	struct eng_append req;
	cr_assert_eq(tu_append(p, "quiet", 1000000, 5, &req), 0);
	uint32_t busy = 0;
	struct eng_shard_stats st;
	do {
		cr_assert(busy < 200000, "no WAL-retention seal after %u events", busy);
		int rc = tu_append(p, "busy", busy, 200, &req);
		cr_assert_eq(rc, 0, "append at %u: %s", busy, fmt_strerror(rc));
		busy += 200;
		usleep(5000); /* a slow writer: the seal scan runs in between */
		eng_shard_stats(eng, 0, &st);
	} while (st.segments_sealed_by[ENG_SEAL_WAL] < 2);
	cr_assert_eq(st.segments_sealed_by[ENG_SEAL_SIZE] + st.segments_sealed_by[ENG_SEAL_AGE] +
			     st.segments_sealed_by[ENG_SEAL_MEMORY],
		     0, "only WAL retention was due");
	cr_assert_eq(tenant_segments(p, "quiet", 5), 1);
	cr_assert(tenant_segments(p, "busy", busy) >= 1);
	/* The files behind the sealed rows are gone: at most the retained two
	 * and the one being written remain. */
	for (int i = 0; i < 500 && (eng_shard_stats(eng, 0, &st), st.wal_files > 3); i++)
		usleep(10000);
	cr_assert(st.wal_files <= 3, "%llu WAL files kept", (unsigned long long)st.wal_files);
	eng_producer_close(p);
	eng_close(eng);

	eng = tu_open(dir, &cfg);
	cr_assert(eng != NULL);
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	cr_assert_eq(tenant_segments(p, "quiet", 5), 1);
	(void)tenant_segments(p, "busy", busy);
	eng_producer_close(p);
	eng_close(eng);
}

/* Replayed rows keep their bytes in the replayed WAL files' mappings
 * (eng_memtable_add_borrowed): they must read right before and after
 * other rows are sealed and the older files are removed and unmapped. */
Test(shard, replayed_rows_read_right_until_and_after_their_files_go)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	struct eng_config cfg;
	cfg_small(&cfg, ENG_IO_AUTO);
	cfg.shards = 1;
	cfg.seal_rows = 1000000; /* nothing sealed in the first run */
	cfg.wal_buffer_bytes = 64u << 10;
	cfg.wal_file_bytes = 128u << 10;  /* several files to replay */
	cfg.block_rows = 16;
	struct eng_engine *eng = tu_open(dir, &cfg);
	cr_assert(eng != NULL);
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	struct eng_append req;
	for (uint32_t b = 0; b < 30; b++)
		cr_assert_eq(tu_append(p, "acme", b * 100, 100, &req), 0);
	cr_assert_eq(tu_append(p, "late", 1000000, 50, &req), 0); /* in the newest file only */
	struct eng_shard_stats st;
	tu_stats_settled(eng, 0, &st);
	uint64_t files = st.wal_files;
	cr_assert(files >= 4, "%llu WAL files", (unsigned long long)files);
	eng_producer_close(p);
	eng_close(eng);

	/* Replay; acme is sealed in pieces of 700, so its older files go while
	 * late's rows still borrow from the newest. */
	cfg.seal_rows = 700;
	eng = tu_open(dir, &cfg);
	cr_assert(eng != NULL);
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	cr_assert_eq(walk_pages(p, "late"), 50, "from the replayed rows");
	cr_assert_eq(tu_wait_sealed(eng, 0, 4), 4);
	for (int i = 0; i < 500 && (eng_shard_stats(eng, 0, &st), st.wal_files >= files); i++)
		usleep(10000);
	cr_assert(st.wal_files < files, "older files reclaimed");
	cr_assert_eq(walk_pages(p, "late"), 50, "after the older files went");
	cr_assert_eq(walk_pages(p, "acme"), 3000);
	cr_assert_eq(tu_append(p, "late", 2000000, 5, &req), 0);
	cr_assert_eq(req.first_seq, 51);
	const char *names[] = { "acme", "late" };
	const uint64_t events[] = { 3000, 55 };
	for (int i = 0; i < 2; i++) {
		struct eng_verify v = { .tenant = fmt_str_c(names[i]) };
		cr_assert_eq(eng_verify_wait(p, &v), 0);
		cr_assert(v.ok && v.events_checked == events[i], "%s: %s", names[i], v.problem);
	}
	eng_producer_close(p);
	eng_close(eng);
}

/* The ids of the threads named `name`, found in /proc/self/task; returns
 * how many there are. */
static int thread_ids_named(const char *name, pid_t *tids, int max)
{
	DIR *d = opendir("/proc/self/task");
	cr_assert(d != NULL);
	int n = 0;
	for (struct dirent *e; (e = readdir(d)) != NULL;) {
		if (e->d_name[0] == '.')
			continue;
		char path[300], comm[32] = "";
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue; /* the thread ended meanwhile */
		bool got = fgets(comm, sizeof(comm), f) != NULL;
		fclose(f);
		comm[strcspn(comm, "\n")] = '\0';
		if (!got || strcmp(comm, name) != 0)
			continue;
		cr_assert_lt(n, max);
		tids[n++] = (pid_t)atoi(e->d_name);
	}
	closedir(d);
	return n;
}

/* The CPUs each thread named `name` may run on; returns how many such
 * threads there are. */
static int threads_named(const char *name, cpu_set_t *sets, int max)
{
	pid_t tids[8];
	int n = thread_ids_named(name, tids, max < 8 ? max : 8);
	for (int i = 0; i < n; i++)
		cr_assert_eq(sched_getaffinity(tids[i], sizeof(sets[i]), &sets[i]), 0);
	return n;
}

/* Placement (ADR 0015): each shard thread is pinned to one CPU, and its
 * query helpers may run on every other CPU the process may use, so that
 * they decode beside the shard thread instead of taking turns with it.
 * With pinning off, or one CPU, the helpers keep the process's CPUs. */
static void helpers_placed(bool pin)
{
	cpu_set_t allowed;
	cr_assert_eq(sched_getaffinity(0, sizeof(allowed), &allowed), 0);
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	struct eng_config cfg;
	cfg_small(&cfg, ENG_IO_SYNC);
	cfg.query_helpers = 2;
	cfg.pin_threads = pin;
	struct eng_engine *eng = tu_open(dir, &cfg);
	cr_assert(eng != NULL);
	for (uint32_t id = 0; id < cfg.shards; id++) {
		char name[16];
		cpu_set_t shard[2], helpers[4];
		snprintf(name, sizeof(name), "hodei-shard%u", id);
		cr_assert_eq(threads_named(name, shard, 2), 1, "%s", name);
		snprintf(name, sizeof(name), "hodei-help%u", id);
		cr_assert_eq(threads_named(name, helpers, 4), 2, "%s", name);
		cpu_set_t want = allowed;
		if (pin) {
			cr_assert_eq(CPU_COUNT(&shard[0]), 1, "shard %u pinned to one CPU", id);
			if (CPU_COUNT(&allowed) > 1)
				CPU_XOR(&want, &allowed, &shard[0]);
		} else {
			cr_assert(CPU_EQUAL(&shard[0], &allowed), "shard %u not pinned", id);
		}
		for (int k = 0; k < 2; k++)
			cr_assert(CPU_EQUAL(&helpers[k], &want),
				  "shard %u helper %d: %d CPUs allowed, want %d", id, k,
				  CPU_COUNT(&helpers[k]), CPU_COUNT(&want));
	}
	eng_close(eng);
	tu_rmtree(dir);
}

Test(shard, query_helpers_run_off_their_shards_cpu) { helpers_placed(true); }
Test(shard, query_helpers_unpinned_without_pinning) { helpers_placed(false); }

/* sched_setattr(2)'s argument: glibc has no wrapper. */
struct sched_attr_v1 {
	uint32_t size, sched_policy;
	uint64_t sched_flags;
	int32_t sched_nice;
	uint32_t sched_priority;
	uint64_t sched_runtime, sched_deadline, sched_period;
	uint32_t sched_util_min, sched_util_max;
};

/* The scheduler slice of thread tid (0: the calling thread). */
static uint64_t slice_of(pid_t tid)
{
	struct sched_attr_v1 a = { 0 };
	cr_assert_eq(syscall(SYS_sched_getattr, tid, &a, sizeof(a), 0), 0, "%s", strerror(errno));
	return a.sched_runtime;
}

/* cfg.thread_slice_ns: the shard threads and their query helpers ask for
 * it (each as it starts); cfg.seal_slice_ns: the seal workers; a value out
 * of range is refused. Skipped on a kernel that keeps no slice for
 * SCHED_OTHER threads. */
Test(shard, shard_threads_and_helpers_ask_for_the_thread_slice, .timeout = 60)
{
	struct sched_attr_v1 probe = { .size = sizeof(probe), .sched_runtime = 300000 };
	if (syscall(SYS_sched_setattr, 0, &probe, 0) != 0 || slice_of(0) != 300000)
		cr_skip_test("this kernel keeps no scheduler slice for SCHED_OTHER threads");
	probe.sched_runtime = 0; /* back to the default for this thread */
	cr_assert_eq(syscall(SYS_sched_setattr, 0, &probe, 0), 0);
	uint64_t kernel_default = slice_of(0);
	cr_assert(kernel_default != 250000 && kernel_default != 20000000,
		  "pick other slices for this test");
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	struct eng_config cfg;
	cfg_small(&cfg, ENG_IO_SYNC);
	cfg.query_helpers = 2;
	cfg.thread_slice_ns = 250000;
	cfg.seal_slice_ns = 20000000;
	struct eng_engine *eng = tu_open(dir, &cfg);
	cr_assert(eng != NULL);
	const char *const names[] = { "hodei-shard", "hodei-help", "hodei-seal" };
	const uint64_t want[] = { 250000, 250000, 20000000 };
	for (uint32_t id = 0; id < cfg.shards; id++)
		for (int k = 0; k < 3; k++) {
			char name[16];
			pid_t tids[4];
			snprintf(name, sizeof(name), "%s%u", names[k], id);
			int n = thread_ids_named(name, tids, 4);
			cr_assert_gt(n, 0, "%s", name);
			for (int i = 0; i < n; i++) {
				/* Each asks as it starts: wait for it to have run. */
				for (int waited_ms = 0; slice_of(tids[i]) != want[k] && waited_ms < 10000;
				     waited_ms++)
					usleep(1000);
				cr_assert_eq(slice_of(tids[i]), want[k], "%s", name);
			}
		}
	eng_close(eng);
	tu_rmtree(dir);
	/* The threads of the process that asked for nothing keep the
	 * kernel's slice. */
	cr_assert_eq(slice_of(0), kernel_default);
	for (int k = 0; k < 4; k++) {
		tu_tmpdir(dir, sizeof(dir));
		cfg_small(&cfg, ENG_IO_SYNC);
		int64_t *field = k < 2 ? &cfg.thread_slice_ns : &cfg.seal_slice_ns;
		*field = k % 2 ? 200000000 : 50000;
		cfg.data_dir = dir;
		eng = NULL;
		cr_assert_eq(eng_open(&cfg, &eng), FMT_E_INVALID, "case %d: %lld ns", k, (long long)*field);
		tu_rmtree(dir);
	}
}
