// SPDX-License-Identifier: Apache-2.0
/*
 * test_search.c — engine/search.c through the public API (engine.h), on a
 * real engine (sync I/O, two shards) in a fresh directory per test.
 *
 * Every test keeps a model of what it appended: each tenant's events in
 * seq order, with the server's received_at and the chain value after each
 * event computed independently with format/hash.h. A search answer is
 * checked hit by hit against the model (every field, the chain value) and
 * against a brute-force evaluation of the filter and the order; paging is
 * checked by walking every page until the token runs out and requiring
 * each expected event exactly once, in order. Event times come in two
 * shapes: ascending with seq (zone maps prune well) and shuffled with
 * pairs of equal times (zone maps overlap everywhere, seq breaks ties).
 * Lookups by event id are checked to prune through the segments' event-id
 * index, and to scan segments written in format version 1.
 */
#include <criterion/criterion.h>

#include "engine/engine.h"
#include "engine_test_util.h"
#include "format/hash.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BASE_NS 1700000000000000000ll
#define STORE_BYTES 4096
#define DETAILS_PAD_MAX 3000
#define ATTRS_PER_EVENT_MAX 3
#define PAGES_MAX 100000u
#define BATCH_MAX 50u

enum time_shape { TIME_ASCENDING, TIME_SHUFFLED };

/* ---- the model ----------------------------------------------------------- */

struct model {
	char name[FMT_TENANT_MAX + 1];
	uint32_t salt;                  /* makes event ids differ between tenants */
	enum time_shape shape;
	uint32_t count, cap;
	struct fmt_event *ev;           /* index seq - 1 */
	char (*store)[STORE_BYTES];
	struct fmt_attr (*attrs)[ATTRS_PER_EVENT_MAX];
	uint8_t (*chain)[FMT_HASH_BYTES];
	uint8_t last_chain[FMT_HASH_BYTES];
	uint32_t details_pad;           /* every third event's details this long */
};

static const char *const actions[] = { "doc.read", "doc.write", "doc.delete" };

static int64_t occ_of(enum time_shape shape, uint32_t i)
{
	if (shape == TIME_ASCENDING)
		return BASE_NS + (int64_t)i * 1000;
	/* 7919 is odd, so i -> 7919 i mod 4096 is a permutation; halving it
	 * gives every time to two events whose seqs are unrelated. */
	return BASE_NS + (int64_t)(((uint64_t)i * 7919u) % 4096u / 2u) * 1000;
}

__attribute__((format(printf, 3, 4))) static struct fmt_str put(char *store, size_t *at,
								  const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(store + *at, STORE_BYTES - *at, fmt, ap);
	va_end(ap);
	cr_assert(n > 0 && (size_t)n < STORE_BYTES - *at);
	struct fmt_str s = { store + *at, (uint32_t)n };
	*at += (size_t)n + 1;
	return s;
}

/* Fills the model's slot i (seq i + 1) with a deterministic client event. */
static void gen_event(struct model *m, uint32_t i)
{
	struct fmt_event *ev = &m->ev[i];
	char *st = m->store[i];
	size_t at = 0;
	memset(ev, 0, sizeof(*ev));
	for (int k = 0; k < FMT_EVENT_ID_BYTES; k++)
		ev->event_id[k] = (uint8_t)(0x40 + k);
	fmt_put_u32(ev->event_id, i + 1);
	fmt_put_u32(ev->event_id + 4, m->salt);
	ev->occurred_at_ns = occ_of(m->shape, i);
	ev->outcome = 1 + i % 3;
	ev->str[FMT_F_ACTOR_ID] = put(st, &at, "actor-%u", i % 5);
	ev->str[FMT_F_ACTOR_TYPE] = fmt_str_c(i % 4 ? "user" : "service");
	ev->str[FMT_F_ACTION] = fmt_str_c(actions[i % 3]);
	ev->str[FMT_F_RESOURCE_TYPE] = fmt_str_c(i % 2 ? "document" : "folder");
	ev->str[FMT_F_RESOURCE_ID] = put(st, &at, "res-%u", i % 11);
	ev->str[FMT_F_SOURCE_IP] = put(st, &at, "10.0.%u.%u", i % 200, 1 + i % 250);
	ev->str[FMT_F_USER_AGENT] = fmt_str_c("hodei-test/1.0");
	ev->str[FMT_F_REQUEST_ID] = put(st, &at, "req-%u-%u", m->salt, i);
	if (i % 2)
		ev->str[FMT_F_TRACE_ID] = put(st, &at, "%08x%024x", i, m->salt);
	ev->attr_count = i % (ATTRS_PER_EVENT_MAX + 1);
	for (uint32_t k = 0; k < ev->attr_count; k++) {
		m->attrs[i][k].key = put(st, &at, "key%u", k);
		m->attrs[i][k].value = put(st, &at, "value-%u-%u", i, k);
	}
	ev->attrs = ev->attr_count ? m->attrs[i] : NULL;
	if (m->details_pad && i % 3 == 0)
		ev->details_json = put(st, &at, "{\"n\":%u,\"pad\":\"%0*u\"}", i,
				       (int)m->details_pad, m->salt);
	else if (i % 5 == 0)
		ev->details_json = put(st, &at, "{\"n\":%u,\"k\":%u}", i, m->salt);
}

static void model_init(struct model *m, const char *name, uint32_t salt, enum time_shape shape,
		       uint32_t cap)
{
	memset(m, 0, sizeof(*m));
	snprintf(m->name, sizeof(m->name), "%s", name);
	m->salt = salt;
	m->shape = shape;
	m->cap = cap;
	m->ev = calloc(cap, sizeof(*m->ev));
	m->store = calloc(cap, sizeof(*m->store));
	m->attrs = calloc(cap, sizeof(*m->attrs));
	m->chain = calloc(cap, sizeof(*m->chain));
	cr_assert(m->ev && m->store && m->attrs && m->chain);
}

static void model_free(struct model *m)
{
	free(m->ev);
	free(m->store);
	free(m->attrs);
	free(m->chain);
}

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

static void fx_open(struct fx *fx, uint32_t seal_rows, uint32_t block_rows, uint32_t scan_max)
{
	const char *base = getenv("HODEI_TEST_TMP");
	snprintf(fx->dir, sizeof(fx->dir), "%s/search-XXXXXX", base && *base ? base : "/tmp");
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
	if (seal_rows)
		fx->cfg.seal_rows = seal_rows;
	if (block_rows)
		fx->cfg.block_rows = block_rows;
	if (scan_max)
		fx->cfg.search_scan_rows_max = scan_max;
	fx_start(fx);
}

static void fx_stop(struct fx *fx)
{
	eng_producer_close(fx->p);
	eng_close(fx->eng);
	fx->p = NULL;
	fx->eng = NULL;
}

static void fx_close(struct fx *fx)
{
	fx_stop(fx);
	tu_rmtree(fx->dir);
}

/* Appends the model's events [from, from + n) in batches, recording what
 * the server assigned and the chain values. */
static void append_range(struct fx *fx, struct model *m, uint32_t n, uint32_t batch)
{
	cr_assert(m->count + n <= m->cap && batch >= 1 && batch <= BATCH_MAX);
	uint8_t scratch[8192];
	for (uint32_t done = 0; done < n;) {
		uint32_t k = FMT_MIN(batch, n - done), first = m->count;
		for (uint32_t i = 0; i < k; i++)
			gen_event(m, first + i);
		struct eng_append req;
		memset(&req, 0, sizeof(req));
		req.tenant = fmt_str_c(m->name);
		req.events = &m->ev[first];
		req.count = k;
		int rc = eng_append_wait(fx->p, &req);
		cr_assert_eq(rc, 0, "append: %s", fmt_strerror(rc));
		cr_assert_eq(req.accepted, k);
		cr_assert_eq(req.first_seq, first + 1);
		for (uint32_t i = 0; i < k; i++) {
			struct fmt_event *ev = &m->ev[first + i];
			ev->tenant = fmt_str_c(m->name);
			ev->seq = first + 1 + i;
			ev->received_at_ns = req.received_at_ns;
			uint8_t h[FMT_HASH_BYTES];
			cr_assert_eq(fmt_event_hash(ev, scratch, sizeof(scratch), h), 0);
			fmt_chain_next(m->last_chain, h, m->last_chain);
			memcpy(m->chain[first + i], m->last_chain, FMT_HASH_BYTES);
		}
		cr_assert(memcmp(req.chain, m->last_chain, FMT_HASH_BYTES) == 0,
			  "the model's chain disagrees with the engine's");
		m->count += k;
		done += k;
	}
}

/* Waits (bounded) until the tenant's shard has sealed at least n segments. */
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

/* ---- expectations -------------------------------------------------------- */

static bool str_is(struct fmt_str a, struct fmt_str b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static bool model_match(const struct fmt_event *ev, const struct eng_filter *f)
{
	if (f->from_ns && ev->occurred_at_ns < f->from_ns)
		return false;
	if (f->to_ns && ev->occurred_at_ns >= f->to_ns)
		return false;
	if (f->actor_id.len && !str_is(ev->str[FMT_F_ACTOR_ID], f->actor_id))
		return false;
	if (f->action.len && !str_is(ev->str[FMT_F_ACTION], f->action))
		return false;
	if (f->resource_type.len && !str_is(ev->str[FMT_F_RESOURCE_TYPE], f->resource_type))
		return false;
	if (f->resource_id.len && !str_is(ev->str[FMT_F_RESOURCE_ID], f->resource_id))
		return false;
	if (f->outcome && ev->outcome != f->outcome)
		return false;
	return !f->has_event_id || memcmp(ev->event_id, f->event_id, FMT_EVENT_ID_BYTES) == 0;
}

static const struct model *sort_model;
static bool sort_oldest;

static int order_cmp(const void *a, const void *b)
{
	const struct fmt_event *x = &sort_model->ev[*(const uint32_t *)a];
	const struct fmt_event *y = &sort_model->ev[*(const uint32_t *)b];
	int r = x->occurred_at_ns != y->occurred_at_ns ? (x->occurred_at_ns < y->occurred_at_ns ? -1 : 1)
						       : (x->seq < y->seq ? -1 : x->seq > y->seq);
	return sort_oldest ? r : -r;
}

/* The model's indexes matching f, in the requested order. */
static uint32_t expect(const struct model *m, const struct eng_filter *f, bool oldest,
		       uint32_t *out)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < m->count; i++)
		if (model_match(&m->ev[i], f))
			out[n++] = i;
	sort_model = m;
	sort_oldest = oldest;
	qsort(out, n, sizeof(*out), order_cmp);
	return n;
}

static void assert_event_eq(const struct fmt_event *got, const struct fmt_event *want)
{
	cr_assert(str_is(got->tenant, want->tenant), "tenant differs at seq %llu",
		  (unsigned long long)want->seq);
	cr_assert_eq(got->seq, want->seq);
	cr_assert_eq(got->received_at_ns, want->received_at_ns);
	cr_assert_eq(got->occurred_at_ns, want->occurred_at_ns);
	cr_assert_eq(got->outcome, want->outcome);
	cr_assert(memcmp(got->event_id, want->event_id, FMT_EVENT_ID_BYTES) == 0);
	for (int f = 0; f < FMT_F_STRING_COUNT; f++)
		cr_assert(str_is(got->str[f], want->str[f]), "field %s differs at seq %llu",
			  fmt_field_name((enum fmt_field)f), (unsigned long long)want->seq);
	cr_assert(str_is(got->details_json, want->details_json));
	cr_assert_eq(got->attr_count, want->attr_count);
	for (uint32_t k = 0; k < want->attr_count; k++) {
		cr_assert(str_is(got->attrs[k].key, want->attrs[k].key));
		cr_assert(str_is(got->attrs[k].value, want->attrs[k].value));
	}
}

static void assert_hit(const struct model *m, const struct eng_hit *h)
{
	cr_assert(h->ev.seq >= 1 && h->ev.seq <= m->count, "seq %llu not in tenant %s",
		  (unsigned long long)h->ev.seq, m->name);
	assert_event_eq(&h->ev, &m->ev[h->ev.seq - 1]);
	cr_assert(memcmp(h->chain, m->chain[h->ev.seq - 1], FMT_HASH_BYTES) == 0,
		  "chain value differs at seq %llu", (unsigned long long)h->ev.seq);
}

/* ---- searching ----------------------------------------------------------- */

static int search(struct fx *fx, const char *tenant, const struct eng_filter *f, bool oldest,
		  uint32_t limit, const uint8_t *token, uint32_t token_len, struct eng_search *s)
{
	memset(s, 0, sizeof(*s));
	s->tenant = fmt_str_c(tenant);
	if (f)
		s->filter = *f;
	s->limit = limit;
	s->oldest_first = oldest;
	s->page_token = token;
	s->page_token_len = token_len;
	return eng_search_wait(fx->p, s);
}

static uint32_t effective_limit(uint32_t limit)
{
	return limit == 0 ? ENG_SEARCH_LIMIT_DEFAULT : FMT_MIN(limit, ENG_SEARCH_LIMIT_MAX);
}

/* Pages shorter than the limit that still carried a token (the scan cap). */
static uint32_t short_pages;

/* Walks every page and checks the concatenation against the model. With
 * strict, a page shorter than the limit must be the last (no scan cap). */
static uint32_t walk(struct fx *fx, const struct model *m, const struct eng_filter *f, bool oldest,
		     uint32_t limit, bool strict)
{
	uint32_t *want = calloc(m->count + 1, sizeof(*want));
	uint32_t n = expect(m, f, oldest, want), got = 0, pages = 0;
	uint8_t token[ENG_PAGE_TOKEN_BYTES];
	uint32_t token_len = 0;
	for (; pages < PAGES_MAX; pages++) {
		struct eng_search s;
		int rc = search(fx, m->name, f, oldest, limit, token_len ? token : NULL, token_len, &s);
		cr_assert_eq(rc, 0, "search: %s", fmt_strerror(rc));
		cr_assert_eq(s.status, 0);
		cr_assert(s.hit_count <= effective_limit(limit));
		cr_assert(s.next_page_token_len <= ENG_PAGE_TOKEN_BYTES);
		if (strict && s.hit_count < effective_limit(limit))
			cr_assert_eq(s.next_page_token_len, 0, "short page with a token");
		if (s.hit_count < effective_limit(limit) && s.next_page_token_len)
			short_pages++;
		for (uint32_t i = 0; i < s.hit_count; i++, got++) {
			cr_assert(got < n, "more hits than expected (%u)", n);
			cr_assert_eq(s.hits[i].ev.seq, m->ev[want[got]].seq,
				     "hit %u: seq %llu, expected %llu", got,
				     (unsigned long long)s.hits[i].ev.seq,
				     (unsigned long long)m->ev[want[got]].seq);
			assert_hit(m, &s.hits[i]);
		}
		token_len = s.next_page_token_len;
		memcpy(token, s.next_page_token, token_len);
		eng_search_release(&s);
		eng_search_release(&s); /* safe twice */
		if (token_len == 0)
			break;
	}
	cr_assert(pages < PAGES_MAX, "paging did not end");
	cr_assert_eq(got, n, "got %u of %u expected hits", got, n);
	free(want);
	return pages + 1;
}

/* The filters every data set is checked with. */
static uint32_t filters(const struct model *m, struct eng_filter *out)
{
	uint32_t n = 0;
	memset(out, 0, 12 * sizeof(*out));
	n++; /* no filter */
	out[n++].actor_id = fmt_str_c("actor-3");
	out[n++].action = fmt_str_c("doc.delete");
	out[n++].resource_type = fmt_str_c("folder");
	out[n++].resource_id = fmt_str_c("res-7");
	out[n++].outcome = FMT_OUTCOME_DENIED;
	out[n].actor_id = fmt_str_c("actor-1");
	out[n].action = fmt_str_c("doc.write");
	out[n++].outcome = FMT_OUTCOME_FAILURE;
	int64_t t1 = occ_of(m->shape, m->count / 4), t2 = occ_of(m->shape, m->count / 2);
	out[n].from_ns = FMT_MIN(t1, t2);
	out[n++].to_ns = FMT_MAX(t1, t2);
	out[n++].from_ns = occ_of(m->shape, m->count / 3);
	out[n++].to_ns = occ_of(m->shape, m->count / 3);
	out[n].has_event_id = true;
	memcpy(out[n++].event_id, m->ev[m->count / 2].event_id, FMT_EVENT_ID_BYTES);
	out[n++].actor_id = fmt_str_c("nobody");
	return n;
}

static void check_everything(struct fx *fx, const struct model *m, bool strict)
{
	struct eng_filter fs[12];
	uint32_t nf = filters(m, fs);
	static const uint32_t limits[] = { 1, 7, 0, 1000 };
	for (uint32_t i = 0; i < nf; i++)
		for (uint32_t l = 0; l < FMT_ARRAY_LEN(limits); l++)
			for (int oldest = 0; oldest < 2; oldest++)
				walk(fx, m, &fs[i], oldest, limits[l], strict);
}

/* Two tenants of the same shard, so isolation is tested where it matters. */
static void pick_tenants(struct fx *fx, const char **a, const char **b, const char **other)
{
	static const char *const names[] = { "globex", "initech", "umbrella", "hooli", "wonka",
					     "stark", "wayne", "tyrell" };
	*a = "acme";
	*b = *other = NULL;
	uint32_t sa = eng_shard_of(fx->eng, fmt_str_c(*a));
	for (uint32_t i = 0; i < FMT_ARRAY_LEN(names); i++) {
		uint32_t si = eng_shard_of(fx->eng, fmt_str_c(names[i]));
		if (si == sa && !*b)
			*b = names[i];
		if (si != sa && !*other)
			*other = names[i];
	}
	cr_assert(*b && *other);
}

/* ---- tests --------------------------------------------------------------- */

Test(search, memtable_filters_orders_and_paging)
{
	struct fx fx;
	fx_open(&fx, 0, 0, 0);
	const char *a, *b, *c;
	pick_tenants(&fx, &a, &b, &c);
	struct model ma, mb, mc;
	model_init(&ma, a, 1, TIME_SHUFFLED, 400);
	model_init(&mb, b, 2, TIME_ASCENDING, 300);
	model_init(&mc, c, 3, TIME_SHUFFLED, 100);
	append_range(&fx, &ma, 150, 50);
	append_range(&fx, &mb, 300, 37);
	append_range(&fx, &ma, 250, 13);
	append_range(&fx, &mc, 100, 50);
	check_everything(&fx, &ma, true);
	check_everything(&fx, &mb, true);
	check_everything(&fx, &mc, true);
	model_free(&ma);
	model_free(&mb);
	model_free(&mc);
	fx_close(&fx);
}

Test(search, limit_default_cap_and_last_page)
{
	struct fx fx;
	fx_open(&fx, 0, 0, 0);
	struct model m;
	model_init(&m, "acme", 1, TIME_ASCENDING, 1200);
	append_range(&fx, &m, 1200, 50);
	struct eng_search s;
	cr_assert_eq(search(&fx, m.name, NULL, false, 0, NULL, 0, &s), 0);
	cr_assert_eq(s.hit_count, ENG_SEARCH_LIMIT_DEFAULT);
	cr_assert_eq(s.hits[0].ev.seq, 1200, "newest first by default");
	cr_assert(s.next_page_token_len > 0);
	eng_search_release(&s);
	cr_assert_eq(search(&fx, m.name, NULL, true, 5000, NULL, 0, &s), 0);
	cr_assert_eq(s.hit_count, ENG_SEARCH_LIMIT_MAX);
	cr_assert_eq(s.hits[0].ev.seq, 1);
	cr_assert_eq(s.hits[999].ev.seq, 1000);
	cr_assert(s.next_page_token_len > 0);
	uint8_t token[ENG_PAGE_TOKEN_BYTES];
	uint32_t len = s.next_page_token_len;
	memcpy(token, s.next_page_token, len);
	eng_search_release(&s);
	cr_assert_eq(search(&fx, m.name, NULL, true, 5000, token, len, &s), 0);
	cr_assert_eq(s.hit_count, 200);
	cr_assert_eq(s.hits[0].ev.seq, 1001);
	cr_assert_eq(s.next_page_token_len, 0, "a short page is the last");
	eng_search_release(&s);
	model_free(&m);
	fx_close(&fx);
}

Test(search, page_token_tampered_or_misused)
{
	struct fx fx;
	fx_open(&fx, 0, 0, 0);
	const char *a, *b, *c;
	pick_tenants(&fx, &a, &b, &c);
	struct model ma, mb;
	model_init(&ma, a, 1, TIME_ASCENDING, 100);
	model_init(&mb, b, 2, TIME_ASCENDING, 100);
	append_range(&fx, &ma, 100, 50);
	append_range(&fx, &mb, 100, 50);
	struct eng_filter f = { .action = fmt_str_c("doc.read") };
	struct eng_search s;
	cr_assert_eq(search(&fx, a, &f, false, 5, NULL, 0, &s), 0);
	cr_assert_eq(s.hit_count, 5);
	uint8_t token[ENG_PAGE_TOKEN_BYTES + 1] = { 0 };
	uint32_t len = s.next_page_token_len;
	cr_assert(len > 0);
	memcpy(token, s.next_page_token, len);
	eng_search_release(&s);
	cr_assert_eq(search(&fx, a, &f, false, 5, token, len, &s), 0, "the genuine token works");
	cr_assert_eq(s.hit_count, 5);
	eng_search_release(&s);

	for (uint32_t i = 0; i < len; i++) {
		for (int bit = 0; bit < 8; bit++) {
			token[i] ^= (uint8_t)(1u << bit);
			int rc = search(&fx, a, &f, false, 5, token, len, &s);
			cr_assert_eq(rc, FMT_E_INVALID, "flipped bit %u of byte %u accepted", bit, i);
			cr_assert_eq(s.hit_count, 0);
			cr_assert_eq(s.next_page_token_len, 0);
			token[i] ^= (uint8_t)(1u << bit);
		}
	}
	cr_assert_eq(search(&fx, a, &f, false, 5, token, len - 1, &s), FMT_E_INVALID);
	cr_assert_eq(search(&fx, a, &f, false, 5, token, len + 1, &s), FMT_E_INVALID);
	cr_assert_eq(search(&fx, a, &f, true, 5, token, len, &s), FMT_E_INVALID, "other direction");
	struct eng_filter g = f;
	g.outcome = FMT_OUTCOME_SUCCESS;
	cr_assert_eq(search(&fx, a, &g, false, 5, token, len, &s), FMT_E_INVALID, "other filter");
	g = f;
	g.to_ns = BASE_NS + 1;
	cr_assert_eq(search(&fx, a, &g, false, 5, token, len, &s), FMT_E_INVALID, "other range");
	cr_assert_eq(search(&fx, a, NULL, false, 5, token, len, &s), FMT_E_INVALID, "no filter");
	cr_assert_eq(search(&fx, a, &f, false, 9, token, len, &s), 0, "limit may change");
	eng_search_release(&s);

	/* Tenant A's token presented by tenant B (same shard), by a tenant of
	 * another shard, and by a tenant that does not exist. */
	cr_assert_eq(search(&fx, b, &f, false, 5, token, len, &s), FMT_E_INVALID);
	cr_assert_eq(s.hit_count, 0);
	cr_assert_eq(search(&fx, c, &f, false, 5, token, len, &s), FMT_E_INVALID);
	cr_assert_eq(search(&fx, "no-such-tenant", &f, false, 5, token, len, &s), FMT_E_INVALID);
	model_free(&ma);
	model_free(&mb);
	fx_close(&fx);
}

Test(search, tenant_isolation)
{
	struct fx fx;
	fx_open(&fx, 0, 0, 0);
	const char *a, *b, *c;
	pick_tenants(&fx, &a, &b, &c);
	struct model ma, mb;
	model_init(&ma, a, 1, TIME_ASCENDING, 200);
	model_init(&mb, b, 2, TIME_ASCENDING, 50);
	append_range(&fx, &ma, 200, 50);
	append_range(&fx, &mb, 50, 50);
	struct eng_search s;
	cr_assert_eq(search(&fx, b, NULL, false, 1000, NULL, 0, &s), 0);
	cr_assert_eq(s.hit_count, 50, "B sees exactly its own events");
	for (uint32_t i = 0; i < s.hit_count; i++)
		assert_hit(&mb, &s.hits[i]);
	eng_search_release(&s);
	/* A's event ids, looked up by B: nothing. */
	for (uint32_t i = 0; i < ma.count; i += 17) {
		struct eng_filter f = { .has_event_id = true };
		memcpy(f.event_id, ma.ev[i].event_id, FMT_EVENT_ID_BYTES);
		cr_assert_eq(search(&fx, b, &f, false, 10, NULL, 0, &s), 0);
		cr_assert_eq(s.hit_count, 0);
		eng_search_release(&s);
	}
	cr_assert_eq(search(&fx, "ghost", NULL, false, 10, NULL, 0, &s), 0, "unknown tenant: ok");
	cr_assert_eq(s.hit_count, 0);
	cr_assert_eq(s.next_page_token_len, 0);
	struct eng_search bad;
	memset(&bad, 0, sizeof(bad));
	bad.tenant = fmt_str_c("not a tenant!");
	cr_assert_eq(eng_search_wait(fx.p, &bad), FMT_E_INVALID);
	cr_assert_eq(bad.hit_count, 0);
	model_free(&ma);
	model_free(&mb);
	fx_close(&fx);
}

Test(search, event_id_lookup)
{
	struct fx fx;
	fx_open(&fx, 0, 0, 0);
	struct model m;
	model_init(&m, "acme", 9, TIME_SHUFFLED, 300);
	append_range(&fx, &m, 300, 50);
	for (uint32_t i = 0; i < m.count; i += 23) {
		struct eng_filter f = { .has_event_id = true };
		memcpy(f.event_id, m.ev[i].event_id, FMT_EVENT_ID_BYTES);
		struct eng_search s;
		cr_assert_eq(search(&fx, m.name, &f, false, 0, NULL, 0, &s), 0);
		cr_assert_eq(s.hit_count, 1);
		assert_hit(&m, &s.hits[0]);
		cr_assert_eq(s.hits[0].ev.seq, i + 1);
		cr_assert_eq(s.next_page_token_len, 0);
		eng_search_release(&s);
	}
	struct eng_filter none = { .has_event_id = true };
	memset(none.event_id, 0xEE, FMT_EVENT_ID_BYTES);
	struct eng_search s;
	cr_assert_eq(search(&fx, m.name, &none, false, 0, NULL, 0, &s), 0);
	cr_assert_eq(s.hit_count, 0);
	model_free(&m);
	fx_close(&fx);
}

/* Looks up the model's event i by id: exactly that event. */
static void lookup_present(struct fx *fx, const struct model *m, uint32_t i, struct eng_search *s)
{
	struct eng_filter f = { .has_event_id = true };
	memcpy(f.event_id, m->ev[i].event_id, FMT_EVENT_ID_BYTES);
	cr_assert_eq(search(fx, m->name, &f, false, 0, NULL, 0, s), 0);
	cr_assert_eq(s->hit_count, 1, "event %u", i);
	assert_hit(m, &s->hits[0]);
	cr_assert_eq(s->hits[0].ev.seq, i + 1);
}

/* The event-id index: seals of exactly 100 rows (seal_rows) in 16-row
 * blocks, three written as format version 1 (no index: scanned) and four
 * as version 2 after a restart. A lookup reads only the version-1
 * segments and the block that holds the id; an absent id prunes every
 * version-2 segment without reading it. The mixed history verifies. */
Test(search, event_id_index_prunes_and_v1_segments_are_scanned, .timeout = 240)
{
	struct fx fx;
	fx_open(&fx, 100, 16, 0);
	fx_stop(&fx);
	fx.cfg.segment_version = 1;
	fx_start(&fx);
	struct model m;
	model_init(&m, "acme", 11, TIME_SHUFFLED, 700);
	append_range(&fx, &m, 300, 50);
	wait_sealed(&fx, m.name, 3);
	fx_stop(&fx);
	fx.cfg.segment_version = 0;
	fx_start(&fx);
	append_range(&fx, &m, 400, 50);
	wait_sealed(&fx, m.name, 4);
	struct eng_search s;
	for (uint32_t i = 0; i < m.count; i += 7) {
		lookup_present(&fx, &m, i, &s);
		if (i < 300) {
			/* The v2 segments are pruned, bar a rare false positive. */
			cr_assert_geq(s.rows_scanned, 300);
			cr_assert_leq(s.rows_scanned, 300 + 16, "event %u: scanned %llu", i,
				      (unsigned long long)s.rows_scanned);
		} else {
			cr_assert_geq(s.rows_scanned, 300 + 4, "the v1 rows and the hit's block");
			cr_assert_leq(s.rows_scanned, 300 + 2 * 16, "event %u: scanned %llu", i,
				      (unsigned long long)s.rows_scanned);
			cr_assert_geq(s.segments_pruned, 2);
		}
		eng_search_release(&s);
	}
	struct eng_filter none = { .has_event_id = true };
	memset(none.event_id, 0xEE, FMT_EVENT_ID_BYTES);
	cr_assert_eq(search(&fx, m.name, &none, false, 0, NULL, 0, &s), 0);
	cr_assert_eq(s.hit_count, 0);
	cr_assert_eq(s.rows_scanned, 300, "only the version-1 rows");
	cr_assert_eq(s.segments_read, 3);
	cr_assert_eq(s.segments_pruned, 4);
	eng_search_release(&s);
	/* Other filters are unaffected by the index. */
	check_everything(&fx, &m, true);
	struct eng_verify v;
	memset(&v, 0, sizeof(v));
	v.tenant = fmt_str_c(m.name);
	cr_assert_eq(eng_verify_wait(fx.p, &v), 0);
	cr_assert(v.ok, "verify: %s", v.problem);
	cr_assert_eq(v.segments_checked, 7);
	cr_assert_eq(v.events_checked, 700);
	model_free(&m);
	fx_close(&fx);
}

Test(search, time_range_edges)
{
	struct fx fx;
	fx_open(&fx, 0, 0, 0);
	struct model m;
	model_init(&m, "acme", 1, TIME_ASCENDING, 50);
	append_range(&fx, &m, 50, 50);
	int64_t t10 = occ_of(TIME_ASCENDING, 10), t20 = occ_of(TIME_ASCENDING, 20);
	struct eng_filter f = { .from_ns = t10, .to_ns = t20 };
	struct eng_search s;
	cr_assert_eq(search(&fx, m.name, &f, true, 100, NULL, 0, &s), 0);
	cr_assert_eq(s.hit_count, 10);
	cr_assert_eq(s.hits[0].ev.occurred_at_ns, t10, "from is inclusive");
	cr_assert_eq(s.hits[9].ev.occurred_at_ns, occ_of(TIME_ASCENDING, 19), "to is exclusive");
	eng_search_release(&s);
	f.to_ns = t10 + 1;
	cr_assert_eq(search(&fx, m.name, &f, true, 100, NULL, 0, &s), 0);
	cr_assert_eq(s.hit_count, 1);
	eng_search_release(&s);
	f.to_ns = t10;
	cr_assert_eq(search(&fx, m.name, &f, true, 100, NULL, 0, &s), 0, "empty range is valid");
	cr_assert_eq(s.hit_count, 0);
	f.to_ns = t10 - 1;
	cr_assert_eq(search(&fx, m.name, &f, true, 100, NULL, 0, &s), FMT_E_INVALID);
	cr_assert_eq(s.hit_count, 0);
	struct eng_filter only_to = { .to_ns = t10 };
	cr_assert_eq(search(&fx, m.name, &only_to, false, 100, NULL, 0, &s), 0);
	cr_assert_eq(s.hit_count, 10);
	cr_assert_eq(s.hits[0].ev.occurred_at_ns, occ_of(TIME_ASCENDING, 9));
	eng_search_release(&s);
	struct eng_filter only_from = { .from_ns = occ_of(TIME_ASCENDING, 49) };
	cr_assert_eq(search(&fx, m.name, &only_from, false, 100, NULL, 0, &s), 0);
	cr_assert_eq(s.hit_count, 1);
	cr_assert_eq(s.hits[0].ev.seq, 50);
	eng_search_release(&s);
	struct eng_filter bad_outcome = { .outcome = 9 };
	cr_assert_eq(search(&fx, m.name, &bad_outcome, false, 100, NULL, 0, &s), FMT_E_INVALID);
	model_free(&m);
	fx_close(&fx);
}

/* Results are copies: they survive appends, seals and more searches. */
Test(search, results_outlive_memtable_changes)
{
	struct fx fx;
	fx_open(&fx, 100, 16, 0);
	struct model m;
	model_init(&m, "acme", 1, TIME_ASCENDING, 400);
	append_range(&fx, &m, 90, 30);
	struct eng_search kept;
	cr_assert_eq(search(&fx, m.name, NULL, true, 90, NULL, 0, &kept), 0);
	cr_assert_eq(kept.hit_count, 90);
	append_range(&fx, &m, 310, 50);
	wait_sealed(&fx, m.name, 4);
	for (uint32_t i = 0; i < kept.hit_count; i++) {
		cr_assert_eq(kept.hits[i].ev.seq, i + 1);
		assert_hit(&m, &kept.hits[i]);
	}
	eng_search_release(&kept);
	model_free(&m);
	fx_close(&fx);
}

/* Hits bigger than search's first guess of the room (1 KiB each) grow the
 * results buffer while it is being filled, from blocks and the memtable:
 * every byte must still come back where it belongs. */
Test(search, results_larger_than_first_guess, .timeout = 240)
{
	struct fx fx;
	fx_open(&fx, 100, 16, 0);
	struct model m;
	model_init(&m, "acme", 3, TIME_SHUFFLED, 400);
	m.details_pad = DETAILS_PAD_MAX;
	append_range(&fx, &m, 300, 25);
	wait_sealed(&fx, m.name, 3);
	append_range(&fx, &m, 40, 20); /* these stay in the memtable */
	for (int oldest = 0; oldest <= 1; oldest++) {
		struct eng_search s;
		cr_assert_eq(search(&fx, m.name, NULL, oldest, 200, NULL, 0, &s), 0);
		cr_assert_eq(s.hit_count, 200);
		for (uint32_t i = 0; i < s.hit_count; i++)
			assert_hit(&m, &s.hits[i]);
		eng_search_release(&s);
	}
	check_everything(&fx, &m, true);
	model_free(&m);
	fx_close(&fx);
}

/* After a start the shard loads its segments' footers while idle, before
 * any request needs them (with a dedup window of 1 ns the start-up reads
 * none for dedup), and answers stay right. */
Test(search, footers_loaded_after_a_start, .timeout = 240)
{
	struct fx fx;
	fx_open(&fx, 100, 16, 0);
	struct model m;
	model_init(&m, "acme", 7, TIME_ASCENDING, 1000);
	append_range(&fx, &m, 1000, 25);
	wait_sealed(&fx, m.name, 10);
	fx_stop(&fx);
	fx.cfg.dedup_window_ns = 1;
	fx_start(&fx);
	uint32_t shard = eng_shard_of(fx.eng, fmt_str_c(m.name));
	struct eng_shard_stats st;
	for (int i = 0; i < 1000; i++) {
		eng_shard_stats(fx.eng, shard, &st);
		if (st.segments_local >= 10 && st.footer_reads == st.segments_local)
			break;
		usleep(10000);
	}
	cr_assert_geq(st.segments_local, 10);
	cr_assert_eq(st.footer_reads, st.segments_local, "%llu of %llu footers loaded",
		     (unsigned long long)st.footer_reads, (unsigned long long)st.segments_local);
	cr_assert_gt(st.footers_bytes, 0);
	check_everything(&fx, &m, true);
	eng_shard_stats(fx.eng, shard, &st);
	cr_assert_eq(st.footer_reads, st.segments_local, "a footer was read twice");
	model_free(&m);
	fx_close(&fx);
}

/* The query helpers decode a search's blocks beside the shard thread:
 * with none, one or three per shard, every answer is the model's, and
 * decodes are offered to helpers only when there are some. More than
 * ENG_QUERY_HELPERS_MAX is refused. */
Test(search, query_helpers_give_the_same_answers, .timeout = 240)
{
	static const uint32_t helpers[] = { 0, 1, 3 };
	struct fx fx;
	fx_open(&fx, 100, 16, 0);
	struct model m;
	model_init(&m, "acme", 13, TIME_SHUFFLED, 1100);
	append_range(&fx, &m, 1000, 25);
	wait_sealed(&fx, m.name, 10);
	append_range(&fx, &m, 30, 30); /* these stay in the memtable */
	for (uint32_t k = 0; k < FMT_ARRAY_LEN(helpers); k++) {
		fx_stop(&fx);
		fx.cfg.query_helpers = helpers[k];
		fx_start(&fx);
		check_everything(&fx, &m, true);
		uint32_t shard = eng_shard_of(fx.eng, fmt_str_c(m.name));
		struct eng_shard_stats st;
		for (int i = 0; i < 1000; i++) {
			eng_shard_stats(fx.eng, shard, &st);
			if (st.searches > 0 && (helpers[k] == 0 || st.query_decode_jobs > 0))
				break;
			usleep(10000);
		}
		cr_assert_gt(st.searches, 0);
		if (helpers[k] == 0)
			cr_assert_eq(st.query_decode_jobs, 0);
		else
			cr_assert_gt(st.query_decode_jobs, 0, "%u helpers: no decode offered",
				     helpers[k]);
		cr_assert_leq(st.query_decode_jobs_helped, st.query_decode_jobs);
	}
	fx_stop(&fx);
	fx.cfg.query_helpers = ENG_QUERY_HELPERS_MAX + 1;
	cr_assert_eq(eng_open(&fx.cfg, &fx.eng), FMT_E_INVALID);
	cr_assert_null(fx.eng);
	model_free(&m);
	tu_rmtree(fx.dir);
}

static void segments_case(enum time_shape shape)
{
	struct fx fx;
	fx_open(&fx, 100, 16, 0);
	struct model m;
	model_init(&m, "acme", 5, shape, 1100);
	append_range(&fx, &m, 1000, 25);
	wait_sealed(&fx, m.name, 10);
	append_range(&fx, &m, 37, 37); /* these stay in the memtable */
	check_everything(&fx, &m, true);
	struct eng_search s;
	cr_assert_eq(search(&fx, m.name, NULL, false, 10, NULL, 0, &s), 0);
	cr_assert(s.segments_read + s.segments_pruned >= 1);
	eng_search_release(&s);

	/* Everything again after a restart: manifest, segments and WAL replay. */
	fx_stop(&fx);
	fx_start(&fx);
	check_everything(&fx, &m, true);
	model_free(&m);
	fx_close(&fx);
}

Test(search, spans_segments_and_memtable_ascending, .timeout = 240)
{
	segments_case(TIME_ASCENDING);
}

Test(search, spans_segments_and_memtable_shuffled, .timeout = 240)
{
	segments_case(TIME_SHUFFLED);
}

Test(search, zone_maps_prune_segments)
{
	struct fx fx;
	fx_open(&fx, 100, 16, 0);
	struct model m;
	model_init(&m, "acme", 1, TIME_ASCENDING, 600);
	append_range(&fx, &m, 600, 50);
	wait_sealed(&fx, m.name, 5);
	/* Segment boundaries depend on commit timing, and seals may still be
	 * running; whatever they are, a range of ten events touches at most
	 * two segments and two blocks in each, and the others are pruned. */
	struct eng_filter f = { .from_ns = occ_of(TIME_ASCENDING, 410),
				.to_ns = occ_of(TIME_ASCENDING, 420) };
	struct eng_search s;
	cr_assert_eq(search(&fx, m.name, &f, false, 100, NULL, 0, &s), 0);
	cr_assert_eq(s.hit_count, 10);
	cr_assert(s.segments_read <= 2, "read %u segments", s.segments_read);
	cr_assert(s.segments_pruned >= 3, "pruned %u segments", s.segments_pruned);
	cr_assert(s.rows_scanned <= 64, "only the blocks overlapping the range, got %llu",
		  (unsigned long long)s.rows_scanned);
	eng_search_release(&s);
	/* Newest first with a small limit stops after the newest rows. */
	cr_assert_eq(search(&fx, m.name, NULL, false, 10, NULL, 0, &s), 0);
	cr_assert_eq(s.hit_count, 10);
	cr_assert_eq(s.hits[0].ev.seq, 600);
	cr_assert(s.segments_read <= 2, "read %u segments", s.segments_read);
	cr_assert(s.rows_scanned <= 100, "scanned %llu rows", (unsigned long long)s.rows_scanned);
	eng_search_release(&s);
	/* Oldest first: the oldest segment alone. */
	cr_assert_eq(search(&fx, m.name, NULL, true, 10, NULL, 0, &s), 0);
	cr_assert_eq(s.hits[0].ev.seq, 1);
	cr_assert_eq(s.segments_read, 1);
	cr_assert_eq(s.rows_scanned, 16, "one block");
	eng_search_release(&s);
	model_free(&m);
	fx_close(&fx);
}

static char logged_segment[64];
static atomic_int logged;

/* Runs on a shard thread: remembers that an error named the segment. */
static void log_capture(void *ctx, enum eng_log_level level, const char *msg)
{
	(void)ctx;
	if (level == ENG_LOG_ERROR && logged_segment[0] && strstr(msg, logged_segment))
		atomic_store(&logged, 1);
}

/* The oldest segment file of a tenant: ids grow, so the smallest name. */
static void oldest_segment(struct fx *fx, const char *tenant, char *path, size_t cap,
			   char *name, size_t name_cap)
{
	char dir[512];
	snprintf(dir, sizeof(dir), "%s/shard-%03u/segments", fx->dir,
		 eng_shard_of(fx->eng, fmt_str_c(tenant)));
	DIR *d = opendir(dir);
	cr_assert(d != NULL);
	name[0] = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		size_t n = strlen(e->d_name);
		if (n == 21 && strcmp(e->d_name + 16, ".hseg") == 0 &&
		    (!name[0] || strcmp(e->d_name, name) < 0))
			snprintf(name, name_cap, "%s", e->d_name);
	}
	closedir(d);
	cr_assert(name[0], "no segment in %s", dir);
	snprintf(path, cap, "%s/%s", dir, name);
	name[16] = 0; /* the segment id in hex, as logs print it */
}

/* A flipped bit in a chunk: the search that reads it fails, returns
 * nothing and logs the segment; searches that do not read it still work. */
Test(search, corrupt_chunk_is_reported)
{
	struct fx fx;
	fx_open(&fx, 100, 16, 0);
	fx_stop(&fx);
	fx.cfg.log = log_capture;
	fx_start(&fx);
	struct model m;
	model_init(&m, "acme", 1, TIME_ASCENDING, 400);
	append_range(&fx, &m, 400, 50);
	wait_sealed(&fx, m.name, 3);
	char path[600], id[32];
	oldest_segment(&fx, m.name, path, sizeof(path), id, sizeof(id));
	snprintf(logged_segment, sizeof(logged_segment), "%s", id);
	int fd = open(path, O_RDWR);
	cr_assert(fd >= 0);
	uint8_t byte;
	cr_assert_eq(pread(fd, &byte, 1, 40), 1); /* inside block 0's first chunks */
	byte ^= 0x10;
	cr_assert_eq(pwrite(fd, &byte, 1, 40), 1);
	close(fd);

	struct eng_search s;
	cr_assert_eq(search(&fx, m.name, NULL, false, 10, NULL, 0, &s), 0, "newest: not read");
	cr_assert_eq(s.hits[0].ev.seq, 400);
	eng_search_release(&s);
	cr_assert_eq(search(&fx, m.name, NULL, true, 10, NULL, 0, &s), FMT_E_CORRUPT);
	cr_assert_eq(s.hit_count, 0);
	cr_assert_eq(s.next_page_token_len, 0);
	cr_assert_null(s.hits);
	cr_assert(atomic_load(&logged), "no error naming segment %s was logged", id);
	struct eng_filter f = { .actor_id = fmt_str_c("actor-1") };
	cr_assert_eq(search(&fx, m.name, &f, true, 1000, NULL, 0, &s), FMT_E_CORRUPT);
	cr_assert_eq(s.hit_count, 0);
	model_free(&m);
	fx_close(&fx);
}

/* A tiny scan cap: pages may be short or empty, but every event still
 * comes exactly once, in order. */
static void scan_cap_case(enum time_shape shape)
{
	struct fx fx;
	fx_open(&fx, 100, 16, 40);
	struct model m;
	model_init(&m, "acme", 3, shape, 700);
	append_range(&fx, &m, 640, 40);
	wait_sealed(&fx, m.name, 6);
	append_range(&fx, &m, 20, 20);
	struct eng_filter none;
	memset(&none, 0, sizeof(none));
	struct eng_filter actor = { .actor_id = fmt_str_c("actor-2") };
	static const uint32_t limits[] = { 1, 10, 1000 };
	short_pages = 0;
	for (uint32_t l = 0; l < FMT_ARRAY_LEN(limits); l++) {
		for (int oldest = 0; oldest < 2; oldest++) {
			walk(&fx, &m, &none, oldest, limits[l], false);
			walk(&fx, &m, &actor, oldest, limits[l], false);
		}
	}
	cr_assert(short_pages > 0, "the scan cap never cut a page short");
	/* One page with the cap: fewer rows than everything were examined. */
	struct eng_search s;
	cr_assert_eq(search(&fx, m.name, NULL, false, 1000, NULL, 0, &s), 0);
	cr_assert(s.hit_count < 1000 && s.next_page_token_len > 0);
	cr_assert(s.rows_scanned < m.count, "scanned %llu", (unsigned long long)s.rows_scanned);
	eng_search_release(&s);
	model_free(&m);
	fx_close(&fx);
}

Test(search, scan_cap_pages_ascending, .timeout = 240)
{
	scan_cap_case(TIME_ASCENDING);
}

Test(search, scan_cap_pages_shuffled, .timeout = 240)
{
	scan_cap_case(TIME_SHUFFLED);
}
