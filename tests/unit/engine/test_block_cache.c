// SPDX-License-Identifier: Apache-2.0
/*
 * test_block_cache.c — the shard's cache of decoded segment blocks
 * (engine/block_cache.c), through the public API on a real engine (sync
 * I/O, one shard): the same searches and counts give the same answers
 * with the cache off, at its default size and squeezed to a few blocks
 * (so that entries are evicted and replaced all the time); the cache's
 * bytes never exceed its bound; a repeated search is served from it
 * (hits counted, no new misses); a bound of 0 turns it off entirely.
 *
 * Answers are compared as transcripts: per query its status, hit count,
 * page token and, per hit, the event's hash (format/hash.h, over every
 * field), its chain value, seq and received_at; per count its total and
 * groups. No timing is asserted.
 */
#include <criterion/criterion.h>

#include "engine_test_util.h"
#include "format/hash.h"


#define TENANT "acme"
#define EVENTS 3000u
#define SEAL_ROWS 1000u
#define BLOCK_ROWS 64u
#define SMALL_CACHE_BYTES (96u << 10)

struct transcript {
	uint8_t *p;
	size_t len, cap;
};

static void put(struct transcript *t, const void *data, size_t n)
{
	if (t->len + n > t->cap) {
		t->cap = FMT_MAX(t->cap * 2, t->len + n + 4096);
		t->p = realloc(t->p, t->cap);
		cr_assert_not_null(t->p);
	}
	memcpy(t->p + t->len, data, n);
	t->len += n;
}

struct fx {
	char dir[256];
	struct eng_config cfg;
	struct eng_engine *eng;
	struct eng_producer *p;
	uint32_t shard;
	uint64_t queries;       /* searches + counts submitted since the start */
};

static void fx_start(struct fx *fx, uint64_t cache_bytes)
{
	eng_config_default(&fx->cfg);
	fx->cfg.io = ENG_IO_SYNC;
	fx->cfg.shards = 1;
	fx->cfg.producers_max = 2;
	fx->cfg.dedup_entries_max = 100000;
	fx->cfg.memtable_budget_bytes = 64u << 20;
	fx->cfg.wal_buffer_bytes = 4u << 20;
	fx->cfg.seal_age_ns = 3600ll * 1000000000;
	fx->cfg.seal_rows = SEAL_ROWS;
	fx->cfg.block_rows = BLOCK_ROWS;
	fx->cfg.block_cache_bytes = cache_bytes;
	fx->eng = tu_open(fx->dir, &fx->cfg);
	cr_assert_not_null(fx->eng);
	cr_assert_eq(eng_producer_open(fx->eng, &fx->p), 0);
	fx->shard = eng_shard_of(fx->eng, fmt_str_c(TENANT));
	fx->queries = 0;
}

static void fx_stop(struct fx *fx)
{
	eng_producer_close(fx->p);
	eng_close(fx->eng);
	fx->p = NULL;
	fx->eng = NULL;
}

/* A fresh directory with EVENTS events of TENANT, most of them sealed in
 * segments of SEAL_ROWS rows (blocks of BLOCK_ROWS), the rest in memory,
 * and a few of another tenant; the engine is left running. */
static void fx_create(struct fx *fx, uint64_t cache_bytes)
{
	tu_tmpdir(fx->dir, sizeof(fx->dir));
	fx_start(fx, cache_bytes);
	struct eng_append req;
	for (uint32_t i = 0; i < EVENTS + 100; i += 100)
		cr_assert_eq(tu_append(fx->p, TENANT, i, 100, &req), 0);
	cr_assert_eq(tu_append(fx->p, "other", 0, 50, &req), 0);
	struct eng_shard_stats st;
	for (int i = 0; i < 6000; i++) {
		eng_shard_stats(fx->eng, fx->shard, &st);
		if (st.segments_sealed >= EVENTS / SEAL_ROWS)
			return;
		usleep(10000);
	}
	cr_assert_fail("only %llu segments sealed", (unsigned long long)st.segments_sealed);
}

static void fx_close(struct fx *fx)
{
	fx_stop(fx);
	tu_rmtree(fx->dir);
}

/* The shard's stats once every query submitted so far is in them (they
 * are published once per tick). */
static void settled_stats(struct fx *fx, struct eng_shard_stats *st)
{
	for (int i = 0; i < 2000; i++) {
		eng_shard_stats(fx->eng, fx->shard, st);
		if (st->searches + st->counts >= fx->queries)
			return;
		usleep(5000);
	}
	cr_assert_fail("stats never caught up with %llu queries", (unsigned long long)fx->queries);
}

/* Records the pages of a search, all of them or the first pages_max. */
static void record_pages(struct fx *fx, const struct eng_filter *f, bool oldest, uint32_t limit,
			 uint32_t pages_max, struct transcript *t)
{
	uint8_t token[ENG_PAGE_TOKEN_BYTES];
	uint32_t token_len = 0;
	uint8_t scratch[8192];
	for (uint32_t page = 0; page < pages_max; page++) {
		struct eng_search s;
		memset(&s, 0, sizeof(s));
		s.tenant = fmt_str_c(TENANT);
		if (f)
			s.filter = *f;
		s.limit = limit;
		s.oldest_first = oldest;
		s.page_token = token_len ? token : NULL;
		s.page_token_len = token_len;
		int rc = eng_search_wait(fx->p, &s);
		fx->queries++;
		cr_assert_eq(rc, 0, "search: %s", fmt_strerror(rc));
		put(t, &s.hit_count, sizeof(s.hit_count));
		for (uint32_t i = 0; i < s.hit_count; i++) {
			const struct fmt_event *ev = &s.hits[i].ev;
			uint8_t h[FMT_HASH_BYTES];
			cr_assert_eq(fmt_event_hash(ev, scratch, sizeof(scratch), h), 0);
			put(t, h, sizeof(h));
			put(t, s.hits[i].chain, FMT_HASH_BYTES);
			put(t, &ev->seq, sizeof(ev->seq));
			put(t, &ev->received_at_ns, sizeof(ev->received_at_ns));
		}
		put(t, &s.next_page_token_len, sizeof(s.next_page_token_len));
		put(t, s.next_page_token, s.next_page_token_len);
		token_len = s.next_page_token_len;
		memcpy(token, s.next_page_token, token_len);
		eng_search_release(&s);
		if (!token_len)
			return;
	}
	cr_assert(pages_max < 1000, "paging did not end");
}

static void record_search(struct fx *fx, const struct eng_filter *f, bool oldest, uint32_t limit,
			  struct transcript *t)
{
	record_pages(fx, f, oldest, limit, 1000, t);
}

static void record_count(struct fx *fx, const struct eng_filter *f, enum eng_count_by by,
			 struct transcript *t)
{
	struct eng_count c;
	memset(&c, 0, sizeof(c));
	c.tenant = fmt_str_c(TENANT);
	if (f)
		c.filter = *f;
	c.group_by = by;
	int rc = eng_count_wait(fx->p, &c);
	fx->queries++;
	cr_assert_eq(rc, 0, "count: %s", fmt_strerror(rc));
	put(t, &c.total, sizeof(c.total));
	put(t, &c.group_count, sizeof(c.group_count));
	for (uint32_t i = 0; i < c.group_count; i++) {
		put(t, c.groups[i].key.ptr, c.groups[i].key.len);
		put(t, &c.groups[i].count, sizeof(c.groups[i].count));
	}
	eng_count_release(&c);
}

/* A mix that reads blocks with many different column masks: newest and
 * oldest first, filtered (outcome, actor, action, time), a lookup by id,
 * full paging, and counts. With check_bound, the cache's bytes are checked
 * against its bound after every query. */
static void run_mix(struct fx *fx, struct transcript *t, bool check_bound)
{
	struct fmt_event ev;
	char store[256];
	tu_event(&ev, store, 1234);
	struct eng_filter filters[8];
	memset(filters, 0, sizeof(filters));
	filters[1].outcome = FMT_OUTCOME_FAILURE;
	filters[2].outcome = FMT_OUTCOME_DENIED;
	filters[3].actor_id = fmt_str_c("user-3");
	filters[4].action = fmt_str_c("document.delete");
	filters[4].from_ns = 1700000000000000000ll + 500 * 1000;
	filters[4].to_ns = 1700000000000000000ll + 2500 * 1000;
	filters[5].has_event_id = true;
	memcpy(filters[5].event_id, ev.event_id, FMT_EVENT_ID_BYTES);
	filters[6].resource_type = fmt_str_c("document");
	filters[6].outcome = FMT_OUTCOME_SUCCESS;
	filters[7].resource_id = fmt_str_c("doc-77");
	struct eng_shard_stats st;
	for (uint32_t i = 0; i < FMT_ARRAY_LEN(filters); i++) {
		record_search(fx, &filters[i], false, 100, t);
		record_search(fx, &filters[i], true, 37, t);
		record_count(fx, &filters[i], i % 2 ? ENG_COUNT_BY_ACTOR_ID : ENG_COUNT_BY_NONE, t);
		if (check_bound) {
			settled_stats(fx, &st);
			cr_assert_leq(st.block_cache_bytes, fx->cfg.block_cache_bytes);
		}
	}
	record_search(fx, NULL, false, 1000, t); /* every event, paged */
	record_count(fx, &filters[3], ENG_COUNT_BY_ACTION, t);
}

/* The same answers with the cache off, on, and squeezed, each run twice
 * (the second run finds the cache filled by the first). */
Test(block_cache, same_answers_on_and_off, .timeout = 240)
{
	struct fx fx;
	fx_create(&fx, 0);
	struct transcript ref = { 0 };
	run_mix(&fx, &ref, false);
	cr_assert_gt(ref.len, 0);
	const uint64_t sizes[] = { 0, 64ull << 20, SMALL_CACHE_BYTES };
	for (uint32_t k = 0; k < FMT_ARRAY_LEN(sizes); k++) {
		fx_stop(&fx);
		fx_start(&fx, sizes[k]);
		for (int run = 0; run < 2; run++) {
			struct transcript t = { 0 };
			run_mix(&fx, &t, true);
			cr_assert_eq(t.len, ref.len, "cache %llu run %d: transcript length differs",
				     (unsigned long long)sizes[k], run);
			cr_assert(memcmp(t.p, ref.p, ref.len) == 0, "cache %llu run %d: answers differ",
				  (unsigned long long)sizes[k], run);
			free(t.p);
		}
	}
	free(ref.p);
	fx_close(&fx);
}

/* A squeezed cache keeps evicting and stays within its bound. */
Test(block_cache, never_exceeds_its_bound, .timeout = 240)
{
	struct fx fx;
	fx_create(&fx, SMALL_CACHE_BYTES);
	struct transcript t = { 0 };
	run_mix(&fx, &t, true);
	run_mix(&fx, &t, true);
	struct eng_shard_stats st;
	settled_stats(&fx, &st);
	cr_assert_leq(st.block_cache_bytes, SMALL_CACHE_BYTES);
	cr_assert_gt(st.block_cache_bytes, 0);
	cr_assert_gt(st.block_cache_evictions, 0, "a cache of a few blocks never evicted");
	cr_assert_gt(st.block_cache_hits, 0);
	free(t.p);
	fx_close(&fx);
}

/* A repeated search takes the blocks holding its hits from the cache
 * (phase 2 decoded them in full), for both of its phases; "failures,
 * then denials" of one time range finds the first one's blocks there. */
Test(block_cache, repeated_search_hits, .timeout = 240)
{
	struct fx fx;
	fx_create(&fx, 64ull << 20);
	struct transcript t = { 0 };
	struct eng_filter failures = { .outcome = FMT_OUTCOME_FAILURE };
	struct eng_filter denied = { .outcome = FMT_OUTCOME_DENIED };
	struct eng_shard_stats st0, st1, st2, st3;
	settled_stats(&fx, &st0);
	cr_assert_eq(st0.block_cache_hits + st0.block_cache_misses, 0);
	record_pages(&fx, &failures, false, 100, 1, &t);
	settled_stats(&fx, &st1);
	cr_assert_eq(st1.block_cache_hits, 0);
	cr_assert_gt(st1.block_cache_misses, 0, "the first search read no block");
	cr_assert_gt(st1.block_cache_bytes, 0, "phase 2's full decodes were not kept");
	record_pages(&fx, &failures, false, 100, 1, &t);
	settled_stats(&fx, &st2);
	uint64_t hits = st2.block_cache_hits - st1.block_cache_hits;
	uint64_t misses = st2.block_cache_misses - st1.block_cache_misses;
	/* Phase 1 and phase 2 both find every block that holds a hit. */
	cr_assert_geq(hits, 2, "a repeated search found nothing in the cache");
	cr_assert_lt(misses, st1.block_cache_misses, "a repeated search missed as much");
	cr_assert_eq(st2.block_cache_bytes, st1.block_cache_bytes, "nothing new to keep");
	record_pages(&fx, &denied, false, 100, 1, &t);
	settled_stats(&fx, &st3);
	cr_assert_gt(st3.block_cache_hits, st2.block_cache_hits,
		     "the same blocks, another outcome: no hit");
	cr_assert_eq(st3.block_cache_evictions, 0);
	free(t.p);
	fx_close(&fx);
}

/* One page of a search; returns its profile. */
static struct eng_query_profile search_profiled(struct fx *fx, const struct eng_filter *f)
{
	struct eng_search s = { .tenant = fmt_str_c(TENANT), .filter = *f, .limit = 100 };
	cr_assert_eq(eng_search_wait(fx->p, &s), 0);
	fx->queries++;
	cr_assert_gt(s.hit_count, 0);
	eng_search_release(&s);
	return s.profile;
}

static void assert_profile_matches_stats(const struct eng_query_profile *pr,
					 const struct eng_shard_stats *before,
					 const struct eng_shard_stats *after)
{
	cr_assert_eq(pr->blocks_cached, after->block_cache_hits - before->block_cache_hits);
	cr_assert_eq(pr->blocks_decoded, after->block_cache_misses - before->block_cache_misses);
	cr_assert_eq(pr->footer_reads, after->footer_reads - before->footer_reads);
	cr_assert(pr->queued_ns >= 0 && pr->scan_ns > 0 && pr->scan_ns <= pr->run_ns);
	cr_assert(pr->read_ns >= 0 && pr->decode_ns >= 0 &&
		  pr->read_ns + pr->decode_ns <= pr->run_ns);
	cr_assert_eq(pr->bytes_read > 0, pr->blocks_decoded > 0);
}

/* A query's profile (what the slow-query log prints) counts the blocks it
 * took from the cache and those it read and decoded, as the shard's
 * counters do, and its phases fit in its run. */
Test(block_cache, profile_counts_what_a_query_read, .timeout = 240)
{
	struct fx fx;
	fx_create(&fx, 64ull << 20);
	struct eng_filter failures = { .outcome = FMT_OUTCOME_FAILURE };
	struct eng_shard_stats st0, st1, st2, st3;
	settled_stats(&fx, &st0);
	struct eng_query_profile first = search_profiled(&fx, &failures);
	settled_stats(&fx, &st1);
	assert_profile_matches_stats(&first, &st0, &st1);
	cr_assert_gt(first.blocks_decoded, 0);
	cr_assert_eq(first.blocks_cached, 0);
	cr_assert_gt(first.decode_ns, 0);
	struct eng_query_profile again = search_profiled(&fx, &failures);
	settled_stats(&fx, &st2);
	assert_profile_matches_stats(&again, &st1, &st2);
	cr_assert_geq(again.blocks_cached, 2, "the repeated search's blocks were cached");
	cr_assert_lt(again.blocks_decoded, first.blocks_decoded);

	struct eng_count c = { .tenant = fmt_str_c(TENANT), .filter = failures,
			       .group_by = ENG_COUNT_BY_ACTOR_ID };
	cr_assert_eq(eng_count_wait(fx.p, &c), 0);
	fx.queries++;
	eng_count_release(&c);
	settled_stats(&fx, &st3);
	assert_profile_matches_stats(&c.profile, &st2, &st3);
	cr_assert_gt(c.profile.blocks_cached + c.profile.blocks_decoded, 0);
	cr_assert_eq(c.profile.scan_ns, c.profile.run_ns, "a count has one phase");
	fx_close(&fx);
}

/* A bound of 0: no lookups, no bytes, the same answers. */
Test(block_cache, zero_turns_it_off, .timeout = 240)
{
	struct fx fx;
	fx_create(&fx, 0);
	struct transcript t = { 0 };
	run_mix(&fx, &t, false);
	run_mix(&fx, &t, false);
	struct eng_shard_stats st;
	settled_stats(&fx, &st);
	cr_assert_gt(st.searches, 0);
	cr_assert_eq(st.block_cache_hits, 0);
	cr_assert_eq(st.block_cache_misses, 0);
	cr_assert_eq(st.block_cache_evictions, 0);
	cr_assert_eq(st.block_cache_bytes, 0);
	free(t.p);
	fx_close(&fx);
}

/* The bound is validated. */
Test(block_cache, bound_is_validated)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	struct eng_config cfg;
	eng_config_default(&cfg);
	cr_assert_eq(cfg.block_cache_bytes, 64ull << 20);
	cfg.io = ENG_IO_SYNC;
	cfg.shards = 1;
	cfg.block_cache_bytes = ENG_BLOCK_CACHE_BYTES_MAX + 1;
	cfg.data_dir = dir;
	struct eng_engine *eng = NULL;
	cr_assert_eq(eng_open(&cfg, &eng), FMT_E_INVALID);
	cr_assert_null(eng);
	tu_rmtree(dir);
}
