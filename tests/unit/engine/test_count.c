// SPDX-License-Identifier: Apache-2.0
/*
 * test_count.c — engine/count.c through the public API (engine.h), on a
 * real engine (sync I/O, two shards) in a fresh directory per test.
 *
 * The reference is a brute force over Search: every page of a search with
 * the same filter, tallied by the group column. Each count answer must
 * equal it exactly (total, every key and its count) and be sorted by count
 * descending, then key ascending. Data sets mix sealed segments (small
 * blocks, so zone maps and block edges matter) with memtable rows, and
 * columns the segment codec stores as dictionaries (action, resource
 * type: few values) with one it stores plain (actor_id: almost every
 * value distinct within a block).
 */
#include <criterion/criterion.h>

#include "engine/engine.h"
#include "engine_test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BASE_NS 1700000000000000000ll
#define STORE_BYTES 128
#define BATCH 40u
#define KEYS_MAX 4096u

static const char *const actions[] = { "doc.read", "doc.write", "doc.delete", "doc.share" };
static const char *const rtypes[] = { "document", "folder", "" };

/* ---- the engine ---------------------------------------------------------- */

struct fx {
	char dir[256];
	struct eng_config cfg;
	struct eng_engine *eng;
	struct eng_producer *p;
};

static void fx_start(struct fx *fx)
{
	int rc = eng_open(&fx->cfg, &fx->eng);
	cr_assert_eq(rc, 0, "eng_open: %s", fmt_strerror(rc));
	cr_assert_eq(eng_producer_open(fx->eng, &fx->p), 0);
}

/* The segment format the next fx_open writes (0: the newest). Each test
 * runs in its own process. */
static uint32_t segment_version;

static void fx_open(struct fx *fx, uint32_t groups_max, uint32_t scan_max)
{
	const char *base = getenv("HODEI_TEST_TMP");
	snprintf(fx->dir, sizeof(fx->dir), "%s/count-XXXXXX", base && *base ? base : "/tmp");
	cr_assert(mkdtemp(fx->dir) != NULL);
	eng_config_default(&fx->cfg);
	fx->cfg.data_dir = fx->dir;
	fx->cfg.io = ENG_IO_SYNC;
	fx->cfg.shards = 2;
	fx->cfg.producers_max = 4;
	fx->cfg.dedup_entries_max = 100000;
	fx->cfg.memtable_budget_bytes = 64u << 20;
	fx->cfg.wal_buffer_bytes = 4u << 20;
	fx->cfg.seal_age_ns = 3600ll * 1000000000;
	fx->cfg.seal_rows = 100;
	fx->cfg.block_rows = 16;
	if (groups_max)
		fx->cfg.count_groups_max = groups_max;
	fx->cfg.count_scan_rows_max = scan_max;
	fx->cfg.segment_version = segment_version;
	fx_start(fx);
}

static void fx_stop(struct fx *fx)
{
	eng_producer_close(fx->p);
	eng_close(fx->eng);
}

static void fx_close(struct fx *fx)
{
	fx_stop(fx);
	tu_rmtree(fx->dir);
}

static int64_t occ_of(uint32_t i)
{
	/* Mostly ascending, with every 13th event a little late, so that the
	 * zone maps of neighbouring blocks overlap. */
	return BASE_NS + ((int64_t)i - (i % 13 == 0 ? 20 : 0)) * 1000;
}

static void gen_event(struct fmt_event *ev, char *store, uint32_t salt, uint32_t i)
{
	memset(ev, 0, sizeof(*ev));
	for (int k = 0; k < FMT_EVENT_ID_BYTES; k++)
		ev->event_id[k] = (uint8_t)(0x70 + k);
	fmt_put_u32(ev->event_id, i + 1);
	fmt_put_u32(ev->event_id + 4, salt);
	ev->occurred_at_ns = occ_of(i);
	ev->outcome = i % 4; /* 0: unspecified */
	int n = snprintf(store, STORE_BYTES, "actor-%u-%u", salt, (i * 7) % 61);
	ev->str[FMT_F_ACTOR_ID] = (struct fmt_str){ store, (uint32_t)n };
	ev->str[FMT_F_ACTION] = fmt_str_c(actions[(i / 3) % 4]);
	ev->str[FMT_F_RESOURCE_TYPE] = fmt_str_c(rtypes[i % 3]);
	int m = snprintf(store + 64, STORE_BYTES - 64, "res-%u", i % 11);
	ev->str[FMT_F_RESOURCE_ID] = (struct fmt_str){ store + 64, (uint32_t)m };
}

/* Appends events [first, first + n) of tenant (salt makes ids differ). */
static void append(struct fx *fx, const char *tenant, uint32_t salt, uint32_t first, uint32_t n)
{
	struct fmt_event evs[BATCH];
	char store[BATCH][STORE_BYTES];
	for (uint32_t done = 0; done < n;) {
		uint32_t k = FMT_MIN(BATCH, n - done);
		for (uint32_t i = 0; i < k; i++)
			gen_event(&evs[i], store[i], salt, first + done + i);
		struct eng_append req;
		memset(&req, 0, sizeof(req));
		req.tenant = fmt_str_c(tenant);
		req.events = evs;
		req.count = k;
		int rc = eng_append_wait(fx->p, &req);
		cr_assert_eq(rc, 0, "append: %s", fmt_strerror(rc));
		cr_assert_eq(req.accepted, k);
		done += k;
	}
}

static void wait_sealed(struct fx *fx, const char *tenant, uint64_t n)
{
	uint32_t shard = eng_shard_of(fx->eng, fmt_str_c(tenant));
	struct eng_shard_stats st;
	for (int i = 0; i < 6000; i++) {
		eng_shard_stats(fx->eng, shard, &st);
		if (st.segments_sealed >= n)
			return;
		usleep(10000);
	}
	cr_assert_fail("only %llu segments sealed, wanted %llu",
		       (unsigned long long)st.segments_sealed, (unsigned long long)n);
}

/* ---- the reference: Search, tallied -------------------------------------- */

struct tally {
	uint64_t total;
	uint32_t n;
	struct {
		char key[160];
		uint32_t len;
		uint64_t count;
	} k[KEYS_MAX];
};

static struct fmt_str group_value(const struct fmt_event *ev, enum eng_count_by by)
{
	switch (by) {
	case ENG_COUNT_BY_ACTION: return ev->str[FMT_F_ACTION];
	case ENG_COUNT_BY_ACTOR_ID: return ev->str[FMT_F_ACTOR_ID];
	case ENG_COUNT_BY_RESOURCE_TYPE: return ev->str[FMT_F_RESOURCE_TYPE];
	default: {
		static const char *const names[] = { "", "success", "failure", "denied" };
		cr_assert(ev->outcome < 4);
		return fmt_str_c(names[ev->outcome]);
	}
	}
}

static void tally_add(struct tally *t, struct fmt_str key)
{
	for (uint32_t i = 0; i < t->n; i++)
		if (t->k[i].len == key.len && memcmp(t->k[i].key, key.ptr, key.len) == 0) {
			t->k[i].count++;
			return;
		}
	cr_assert(t->n < KEYS_MAX && key.len < sizeof(t->k[0].key));
	memcpy(t->k[t->n].key, key.ptr, key.len);
	t->k[t->n].len = key.len;
	t->k[t->n++].count = 1;
}

static void brute_force(struct fx *fx, const char *tenant, const struct eng_filter *f,
			enum eng_count_by by, struct tally *t)
{
	memset(t, 0, sizeof(*t));
	uint8_t token[ENG_PAGE_TOKEN_BYTES];
	uint32_t token_len = 0;
	for (int pages = 0; pages < 10000; pages++) {
		struct eng_search s;
		memset(&s, 0, sizeof(s));
		s.tenant = fmt_str_c(tenant);
		s.filter = *f;
		s.limit = ENG_SEARCH_LIMIT_MAX;
		s.page_token = token_len ? token : NULL;
		s.page_token_len = token_len;
		int rc = eng_search_wait(fx->p, &s);
		cr_assert_eq(rc, 0, "search: %s", fmt_strerror(rc));
		for (uint32_t i = 0; i < s.hit_count; i++) {
			t->total++;
			if (by != ENG_COUNT_BY_NONE)
				tally_add(t, group_value(&s.hits[i].ev, by));
		}
		token_len = s.next_page_token_len;
		memcpy(token, s.next_page_token, token_len);
		eng_search_release(&s);
		if (!token_len)
			return;
	}
	cr_assert_fail("search paging did not end");
}

static int count(struct fx *fx, const char *tenant, const struct eng_filter *f,
		 enum eng_count_by by, struct eng_count *c)
{
	memset(c, 0, sizeof(*c));
	c->tenant = fmt_str_c(tenant);
	if (f)
		c->filter = *f;
	c->group_by = by;
	return eng_count_wait(fx->p, c);
}

static void assert_sorted(const struct eng_count *c)
{
	for (uint32_t i = 1; i < c->group_count; i++) {
		const struct eng_count_group *a = &c->groups[i - 1], *b = &c->groups[i];
		cr_assert(a->count >= b->count, "groups not by count descending");
		if (a->count == b->count) {
			int r = memcmp(a->key.ptr, b->key.ptr, FMT_MIN(a->key.len, b->key.len));
			cr_assert(r < 0 || (r == 0 && a->key.len < b->key.len),
				  "equal counts not by key ascending");
		}
	}
}

/* Count equals the brute force exactly; returns the count's rows_scanned. */
static uint64_t check(struct fx *fx, const char *tenant, const struct eng_filter *f,
		      enum eng_count_by by)
{
	static struct tally want;
	brute_force(fx, tenant, f, by, &want);
	struct eng_count c;
	int rc = count(fx, tenant, f, by, &c);
	cr_assert_eq(rc, 0, "count: %s", fmt_strerror(rc));
	cr_assert_eq(c.total, want.total, "group_by %d: total %llu, search says %llu", (int)by,
		     (unsigned long long)c.total, (unsigned long long)want.total);
	uint32_t want_groups = by == ENG_COUNT_BY_NONE ? 0 : want.n;
	cr_assert_eq(c.group_count, want_groups, "group_by %d: %u groups, want %u", (int)by,
		     c.group_count, want_groups);
	uint64_t sum = 0;
	for (uint32_t i = 0; i < c.group_count; i++) {
		const struct eng_count_group *g = &c.groups[i];
		bool found = false;
		for (uint32_t k = 0; k < want.n && !found; k++) {
			if (want.k[k].len != g->key.len || memcmp(want.k[k].key, g->key.ptr, g->key.len))
				continue;
			found = true;
			cr_assert_eq(g->count, want.k[k].count, "key %.*s: %llu, search says %llu",
				     (int)g->key.len, g->key.ptr, (unsigned long long)g->count,
				     (unsigned long long)want.k[k].count);
		}
		cr_assert(found, "key %.*s not in the search results", (int)g->key.len, g->key.ptr);
		sum += g->count;
	}
	cr_assert(by == ENG_COUNT_BY_NONE || sum == c.total);
	assert_sorted(&c);
	uint64_t scanned = c.rows_scanned;
	eng_count_release(&c);
	eng_count_release(&c); /* safe twice */
	return scanned;
}

/* The filters every data set is checked with; n events were appended. */
static uint32_t filters(uint32_t salt, uint32_t n, struct eng_filter *out)
{
	uint32_t k = 0;
	memset(out, 0, 14 * sizeof(*out));
	k++; /* none */
	out[k++].action = fmt_str_c("doc.delete");
	static char actor[32];
	snprintf(actor, sizeof(actor), "actor-%u-5", salt);
	out[k++].actor_id = fmt_str_c(actor);
	out[k++].resource_type = fmt_str_c("");     /* empty: no condition */
	out[k++].resource_type = fmt_str_c("folder");
	out[k++].resource_id = fmt_str_c("res-7");
	out[k++].outcome = FMT_OUTCOME_DENIED;
	out[k].action = fmt_str_c("doc.write");
	out[k].outcome = FMT_OUTCOME_SUCCESS;
	out[k++].resource_type = fmt_str_c("document");
	out[k].from_ns = occ_of(n / 4 + 3); /* mid-block edges */
	out[k++].to_ns = occ_of(n / 2 + 5);
	out[k++].from_ns = occ_of(n / 3 + 1);
	out[k++].to_ns = occ_of(n / 3 + 1);
	out[k].has_event_id = true;
	fmt_put_u32(out[k].event_id, n / 2 + 1);
	fmt_put_u32(out[k].event_id + 4, salt);
	for (int i = 8; i < FMT_EVENT_ID_BYTES; i++)
		out[k].event_id[i] = (uint8_t)(0x70 + i);
	k++;
	out[k++].action = fmt_str_c("nothing.like.this");
	out[k].from_ns = occ_of(10);
	out[k].to_ns = occ_of(n - 10);
	out[k++].action = fmt_str_c("doc.share");
	return k;
}

static void check_everything(struct fx *fx, const char *tenant, uint32_t salt, uint32_t n)
{
	struct eng_filter fs[14];
	uint32_t nf = filters(salt, n, fs);
	for (uint32_t i = 0; i < nf; i++)
		for (int by = ENG_COUNT_BY_NONE; by <= ENG_COUNT_BY_OUTCOME; by++)
			check(fx, tenant, &fs[i], (enum eng_count_by)by);
}

/* Two tenants of the same shard, so isolation is tested where it matters. */
static void pick_tenants(struct fx *fx, const char **a, const char **b)
{
	static const char *const names[] = { "globex", "initech", "umbrella", "hooli", "wonka",
					     "stark", "wayne", "tyrell" };
	*a = "acme";
	*b = NULL;
	for (uint32_t i = 0; i < FMT_ARRAY_LEN(names) && !*b; i++)
		if (eng_shard_of(fx->eng, fmt_str_c(names[i])) == eng_shard_of(fx->eng, fmt_str_c(*a)))
			*b = names[i];
	cr_assert(*b != NULL);
}

/* ---- tests --------------------------------------------------------------- */

Test(count, memtable_only)
{
	struct fx fx;
	fx_open(&fx, 0, 0);
	append(&fx, "acme", 1, 0, 90);
	check_everything(&fx, "acme", 1, 90);
	fx_close(&fx);
}

Test(count, segments_and_memtable_match_search, .timeout = 240)
{
	struct fx fx;
	fx_open(&fx, 0, 0);
	const char *a, *b;
	pick_tenants(&fx, &a, &b);
	append(&fx, a, 1, 0, 640);
	append(&fx, b, 2, 0, 300);
	wait_sealed(&fx, a, 6);
	append(&fx, a, 1, 640, 60); /* memtable rows on top of the segments */
	check_everything(&fx, a, 1, 700);
	check_everything(&fx, b, 2, 300);

	/* The zone maps keep a narrow range cheap: only the blocks around it
	 * are decoded. Without a filter or a group, nothing is decoded but the
	 * blocks straddling the range's edges. */
	struct eng_filter narrow = { .from_ns = occ_of(401), .to_ns = occ_of(420) };
	cr_assert(check(&fx, a, &narrow, ENG_COUNT_BY_ACTION) <= 4 * 16);
	struct eng_filter wide = { .from_ns = occ_of(100), .to_ns = occ_of(600) };
	cr_assert(check(&fx, a, &wide, ENG_COUNT_BY_NONE) < 700 * 3 / 4);

	/* The same after a restart: manifest, segments and WAL replay. */
	fx_stop(&fx);
	fx_start(&fx);
	check_everything(&fx, a, 1, 700);
	fx_close(&fx);
}

Test(count, tenant_isolation_and_empty_tenants)
{
	struct fx fx;
	fx_open(&fx, 0, 0);
	const char *a, *b;
	pick_tenants(&fx, &a, &b);
	append(&fx, a, 1, 0, 250);
	append(&fx, b, 2, 0, 70);
	wait_sealed(&fx, a, 2);
	struct eng_count c;
	cr_assert_eq(count(&fx, b, NULL, ENG_COUNT_BY_ACTOR_ID, &c), 0);
	cr_assert_eq(c.total, 70, "B counts exactly its own events");
	for (uint32_t i = 0; i < c.group_count; i++)
		cr_assert(c.groups[i].key.len > 8 && memcmp(c.groups[i].key.ptr, "actor-2-", 8) == 0,
			  "a key of another tenant: %.*s", (int)c.groups[i].key.len,
			  c.groups[i].key.ptr);
	eng_count_release(&c);
	/* A's event ids and actors, counted as B: nothing. */
	struct eng_filter f = { .has_event_id = true };
	fmt_put_u32(f.event_id, 10);
	fmt_put_u32(f.event_id + 4, 1);
	for (int i = 8; i < FMT_EVENT_ID_BYTES; i++)
		f.event_id[i] = (uint8_t)(0x70 + i);
	cr_assert_eq(count(&fx, a, &f, ENG_COUNT_BY_NONE, &c), 0);
	cr_assert_eq(c.total, 1, "A finds its own event");
	cr_assert_eq(count(&fx, b, &f, ENG_COUNT_BY_NONE, &c), 0);
	cr_assert_eq(c.total, 0, "B does not find A's event");
	struct eng_filter actor = { .actor_id = fmt_str_c("actor-1-5") };
	cr_assert_eq(count(&fx, b, &actor, ENG_COUNT_BY_ACTION, &c), 0);
	cr_assert_eq(c.total, 0);
	cr_assert_eq(c.group_count, 0);
	/* Unknown tenants have nothing; malformed requests are refused. */
	cr_assert_eq(count(&fx, "ghost", NULL, ENG_COUNT_BY_ACTION, &c), 0);
	cr_assert_eq(c.total, 0);
	cr_assert_eq(c.group_count, 0);
	cr_assert_null(c.groups);
	cr_assert_eq(count(&fx, "not a tenant!", NULL, ENG_COUNT_BY_NONE, &c), FMT_E_INVALID);
	cr_assert_eq(count(&fx, a, NULL, (enum eng_count_by)99, &c), FMT_E_INVALID);
	struct eng_filter back = { .from_ns = 20, .to_ns = 10 };
	cr_assert_eq(count(&fx, a, &back, ENG_COUNT_BY_NONE, &c), FMT_E_INVALID);
	struct eng_filter bad_outcome = { .outcome = 9 };
	cr_assert_eq(count(&fx, a, &bad_outcome, ENG_COUNT_BY_NONE, &c), FMT_E_INVALID);
	fx_close(&fx);
}

Test(count, group_cap_is_a_clear_refusal)
{
	struct fx fx;
	fx_open(&fx, 4, 0);
	append(&fx, "acme", 1, 0, 230);
	wait_sealed(&fx, "acme", 2);
	struct eng_count c;
	/* 61 actors (plain chunks), 4 actions (dictionaries), 3 resource types. */
	cr_assert_eq(count(&fx, "acme", NULL, ENG_COUNT_BY_ACTOR_ID, &c), FMT_E_TOO_BIG);
	cr_assert_eq(c.over, ENG_COUNT_OVER_GROUPS);
	cr_assert_eq(c.limit, 4);
	cr_assert_eq(c.group_count, 0);
	cr_assert_null(c.groups);
	cr_assert_eq(count(&fx, "acme", NULL, ENG_COUNT_BY_ACTION, &c), 0, "exactly at the cap");
	cr_assert_eq(c.group_count, 4);
	cr_assert_eq(c.total, 230);
	eng_count_release(&c);
	check(&fx, "acme", &(struct eng_filter){ 0 }, ENG_COUNT_BY_OUTCOME);
	/* A filter that narrows the keys brings it under the cap. */
	struct eng_filter one = { .actor_id = fmt_str_c("actor-1-5") };
	check(&fx, "acme", &one, ENG_COUNT_BY_ACTOR_ID);
	struct eng_shard_stats st;
	eng_shard_stats(fx.eng, eng_shard_of(fx.eng, fmt_str_c("acme")), &st);
	for (int i = 0; i < 200 && st.counts_refused == 0; i++) {
		usleep(10000); /* stats are published once per tick */
		eng_shard_stats(fx.eng, eng_shard_of(fx.eng, fmt_str_c("acme")), &st);
	}
	cr_assert_eq(st.counts_refused, 1);
	cr_assert(st.counts >= 4 && st.count_rows_scanned > 0);
	fx_close(&fx);
}

/* Waits until the tenant's shard holds fewer than n unsealed rows. */
static void wait_memtable_below(struct fx *fx, const char *tenant, uint64_t n)
{
	struct eng_shard_stats st;
	for (int i = 0; i < 6000; i++) {
		eng_shard_stats(fx->eng, eng_shard_of(fx->eng, fmt_str_c(tenant)), &st);
		if (st.memtable_rows < n)
			return;
		usleep(10000);
	}
	cr_assert_fail("%llu rows still unsealed", (unsigned long long)st.memtable_rows);
}

Test(count, scan_cap_refuses_before_reading)
{
	struct fx fx;
	fx_open(&fx, 0, 200);
	append(&fx, "acme", 1, 0, 400);
	wait_sealed(&fx, "acme", 3);
	wait_memtable_below(&fx, "acme", 100); /* seal_rows */
	struct eng_count c;
	/* By actor (not a counted column): every block must be decoded. */
	int rc = count(&fx, "acme", NULL, ENG_COUNT_BY_ACTOR_ID, &c);
	cr_assert_eq(rc, FMT_E_TOO_BIG);
	cr_assert_eq(c.over, ENG_COUNT_OVER_ROWS);
	cr_assert_eq(c.limit, 200);
	cr_assert_eq(c.rows_scanned, 0, "refused from the zone maps, nothing decoded");
	/* A narrow range stays under it (at most four blocks of 16 and the
	 * memtable); a total of whole segments examines only the memtable. */
	struct eng_filter narrow = { .from_ns = occ_of(300), .to_ns = occ_of(330) };
	check(&fx, "acme", &narrow, ENG_COUNT_BY_ACTION);
	cr_assert_eq(count(&fx, "acme", NULL, ENG_COUNT_BY_NONE, &c), 0);
	cr_assert_eq(c.total, 400);
	cr_assert(c.rows_scanned < 100);
	/* By action, the segments' stored counts answer: only the memtable
	 * is examined, so the same bound lets it through. */
	struct eng_filter none = { 0 };
	cr_assert(check(&fx, "acme", &none, ENG_COUNT_BY_ACTION) < 100);
	fx_close(&fx);
}

/* Version-2 segments have no stored counts: every count is still exact
 * (scanned as before), also when they sit next to version-3 segments. */
Test(count, version2_segments_match_search, .timeout = 240)
{
	struct fx fx;
	segment_version = 2;
	fx_open(&fx, 0, 0);
	append(&fx, "acme", 1, 0, 320);
	wait_sealed(&fx, "acme", 3);
	check_everything(&fx, "acme", 1, 320);
	struct eng_filter none = { 0 };
	uint64_t v2_scanned = check(&fx, "acme", &none, ENG_COUNT_BY_ACTION);
	cr_assert(v2_scanned >= 300, "v2: every sealed row is decoded (%llu)",
		  (unsigned long long)v2_scanned);
	/* Restart writing version 3: the next segments carry counts. */
	fx_stop(&fx);
	fx.cfg.segment_version = 0;
	fx_start(&fx);
	append(&fx, "acme", 1, 320, 380);
	wait_sealed(&fx, "acme", 4); /* the statistics restart at 0 */
	check_everything(&fx, "acme", 1, 700);
	fx_close(&fx);
}

/* Blocks wholly inside the range are counted from their stored counts
 * (version 3): with no filter, with filters on counted columns that every
 * row or no row of a block passes, and with one on the group column. */
Test(count, stored_counts_skip_decoding, .timeout = 240)
{
	struct fx fx;
	fx_open(&fx, 0, 0);
	append(&fx, "acme", 1, 0, 400);
	wait_sealed(&fx, "acme", 4);
	wait_memtable_below(&fx, "acme", 1);
	struct eng_filter none = { 0 }, act = { .action = fmt_str_c("doc.delete") };
	struct eng_filter out = { .outcome = FMT_OUTCOME_DENIED };
	struct eng_filter act_out = { .action = fmt_str_c("doc.share"), .outcome = FMT_OUTCOME_DENIED };
	struct eng_filter actor = { .actor_id = fmt_str_c("actor-1-5") };
	for (int by = ENG_COUNT_BY_NONE; by <= ENG_COUNT_BY_OUTCOME; by++) {
		enum eng_count_by b = (enum eng_count_by)by;
		uint64_t scanned = check(&fx, "acme", &none, b);
		cr_assert(b == ENG_COUNT_BY_ACTOR_ID ? scanned == 400 : scanned == 0,
			  "by %d, no filter: %llu rows examined", by, (unsigned long long)scanned);
		scanned = check(&fx, "acme", &act, b);
		if (b == ENG_COUNT_BY_NONE || b == ENG_COUNT_BY_ACTION)
			cr_assert(scanned == 0, "by %d, action filter: %llu", by, (unsigned long long)scanned);
		check(&fx, "acme", &out, b);
		check(&fx, "acme", &act_out, b);
		scanned = check(&fx, "acme", &actor, b);
		cr_assert(scanned < 400, "the actor filters skip blocks: %llu", (unsigned long long)scanned);
	}
	struct eng_filter mid = { .from_ns = occ_of(37), .to_ns = occ_of(301) };
	check(&fx, "acme", &mid, ENG_COUNT_BY_ACTION);
	mid.action = fmt_str_c("doc.read");
	check(&fx, "acme", &mid, ENG_COUNT_BY_RESOURCE_TYPE);
	fx_close(&fx);
}
