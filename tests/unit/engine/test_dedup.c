/* SPDX-License-Identifier: Apache-2.0
 *
 * test_dedup.c — engine/dedup.c: a shard's memory of recent event ids.
 *
 * Small cases pin each rule of dedup.h (tenant keys separate ids, the
 * window is inclusive, a full ring evicts its oldest entry early and counts
 * it, duplicates refresh nothing, older times are clamped). A seeded
 * randomized test then runs 10^5 operations against a brute-force model and
 * compares every answer. Its keys are drawn partly from a pool whose hashes
 * all land in four adjacent table slots that wrap around the end of the
 * table, so probe runs are long and every deletion exercises the backward
 * shift, including across the wrap.
 */
#include <criterion/criterion.h>

#include "engine/dedup.h"
#include "format/common.h"

#include <string.h>

#define ID_BYTES FMT_EVENT_ID_BYTES

static void make_id(uint8_t id[ID_BYTES], uint64_t n)
{
	memset(id, 0xA5, ID_BYTES);
	fmt_put_u64(id, n);
}

Test(dedup, insert_then_contains)
{
	struct eng_dedup *d = eng_dedup_create(8, 1000);
	cr_assert_not_null(d);
	uint8_t a[ID_BYTES], b[ID_BYTES];
	make_id(a, 1);
	make_id(b, 2);
	cr_assert_eq(eng_dedup_count(d), 0);
	cr_assert(!eng_dedup_contains(d, 7, a, 100));
	eng_dedup_insert(d, 7, a, 100);
	cr_assert(eng_dedup_contains(d, 7, a, 100));
	cr_assert(eng_dedup_contains(d, 7, a, 600));
	cr_assert(!eng_dedup_contains(d, 7, b, 100));
	cr_assert_eq(eng_dedup_count(d), 1);
	eng_dedup_insert(d, 7, b, 150);
	cr_assert(eng_dedup_contains(d, 7, a, 150));
	cr_assert(eng_dedup_contains(d, 7, b, 150));
	cr_assert_eq(eng_dedup_count(d), 2);
	cr_assert_eq(eng_dedup_evicted_early(d), 0);
	eng_dedup_destroy(d);
}

Test(dedup, tenant_key_separates_same_id)
{
	struct eng_dedup *d = eng_dedup_create(8, 1000);
	uint8_t a[ID_BYTES];
	make_id(a, 42);
	eng_dedup_insert(d, 1, a, 0);
	cr_assert(eng_dedup_contains(d, 1, a, 0));
	cr_assert(!eng_dedup_contains(d, 2, a, 0));
	eng_dedup_insert(d, 2, a, 0);
	cr_assert(eng_dedup_contains(d, 1, a, 0));
	cr_assert(eng_dedup_contains(d, 2, a, 0));
	cr_assert_eq(eng_dedup_count(d), 2);
	eng_dedup_destroy(d);
}

Test(dedup, window_expiry_is_inclusive)
{
	struct eng_dedup *d = eng_dedup_create(8, 1000);
	uint8_t a[ID_BYTES];
	make_id(a, 1);
	eng_dedup_insert(d, 1, a, 100);
	cr_assert(eng_dedup_contains(d, 1, a, 1100));
	cr_assert(!eng_dedup_contains(d, 1, a, 1101));
	eng_dedup_expire(d, 1100);
	cr_assert_eq(eng_dedup_count(d), 1);
	eng_dedup_expire(d, 1101);
	cr_assert_eq(eng_dedup_count(d), 0);
	cr_assert(!eng_dedup_contains(d, 1, a, 100));
	cr_assert_eq(eng_dedup_evicted_early(d), 0);
	eng_dedup_destroy(d);
}

Test(dedup, insert_expires_old_entries)
{
	struct eng_dedup *d = eng_dedup_create(8, 1000);
	uint8_t a[ID_BYTES], b[ID_BYTES];
	make_id(a, 1);
	make_id(b, 2);
	eng_dedup_insert(d, 1, a, 0);
	eng_dedup_insert(d, 1, b, 2000);
	cr_assert_eq(eng_dedup_count(d), 1);
	cr_assert(!eng_dedup_contains(d, 1, a, 0));
	cr_assert(eng_dedup_contains(d, 1, b, 2000));
	/* The expired id is new again and gets a fresh entry. */
	eng_dedup_insert(d, 1, a, 2001);
	cr_assert(eng_dedup_contains(d, 1, a, 3001));
	cr_assert_eq(eng_dedup_count(d), 2);
	eng_dedup_destroy(d);
}

Test(dedup, duplicate_insert_refreshes_nothing)
{
	struct eng_dedup *d = eng_dedup_create(8, 1000);
	uint8_t a[ID_BYTES];
	make_id(a, 1);
	eng_dedup_insert(d, 1, a, 0);
	eng_dedup_insert(d, 1, a, 900);
	cr_assert_eq(eng_dedup_count(d), 1);
	cr_assert(eng_dedup_contains(d, 1, a, 1000));
	cr_assert(!eng_dedup_contains(d, 1, a, 1001));
	eng_dedup_destroy(d);
}

Test(dedup, older_time_is_clamped_to_newest)
{
	struct eng_dedup *d = eng_dedup_create(8, 100);
	uint8_t a[ID_BYTES], b[ID_BYTES];
	make_id(a, 1);
	make_id(b, 2);
	eng_dedup_insert(d, 1, a, 1000);
	eng_dedup_insert(d, 1, b, 500);
	/* Stored as 1000, so still inside the window at 1100. */
	cr_assert(eng_dedup_contains(d, 1, b, 1100));
	eng_dedup_expire(d, 1100);
	cr_assert_eq(eng_dedup_count(d), 2);
	eng_dedup_expire(d, 1101);
	cr_assert_eq(eng_dedup_count(d), 0);
	eng_dedup_destroy(d);
}

Test(dedup, full_ring_evicts_oldest_early_and_counts)
{
	struct eng_dedup *d = eng_dedup_create(4, INT64_MAX);
	uint8_t id[ID_BYTES];
	for (uint64_t i = 0; i < 6; i++) {
		make_id(id, i);
		eng_dedup_insert(d, 3, id, (int64_t)i);
	}
	cr_assert_eq(eng_dedup_count(d), 4);
	cr_assert_eq(eng_dedup_evicted_early(d), 2);
	for (uint64_t i = 0; i < 6; i++) {
		make_id(id, i);
		cr_assert_eq(eng_dedup_contains(d, 3, id, 6), i >= 2, "id %llu",
			     (unsigned long long)i);
	}
	/* A duplicate of a remembered id evicts nothing. */
	make_id(id, 5);
	eng_dedup_insert(d, 3, id, 7);
	cr_assert_eq(eng_dedup_evicted_early(d), 2);
	eng_dedup_destroy(d);
}

Test(dedup, single_entry_ring)
{
	struct eng_dedup *d = eng_dedup_create(1, 10);
	uint8_t a[ID_BYTES], b[ID_BYTES];
	make_id(a, 1);
	make_id(b, 2);
	eng_dedup_insert(d, 1, a, 0);
	eng_dedup_insert(d, 1, b, 1);
	cr_assert(!eng_dedup_contains(d, 1, a, 1));
	cr_assert(eng_dedup_contains(d, 1, b, 1));
	cr_assert_eq(eng_dedup_count(d), 1);
	cr_assert_eq(eng_dedup_evicted_early(d), 1);
	eng_dedup_insert(d, 1, b, 20);
	cr_assert_eq(eng_dedup_count(d), 1);
	cr_assert_eq(eng_dedup_evicted_early(d), 1);
	eng_dedup_destroy(d);
}

Test(dedup, extreme_times_do_not_overflow)
{
	struct eng_dedup *d = eng_dedup_create(4, 1000);
	uint8_t a[ID_BYTES];
	make_id(a, 1);
	eng_dedup_insert(d, 1, a, INT64_MIN);
	cr_assert(eng_dedup_contains(d, 1, a, INT64_MIN + 5));
	eng_dedup_expire(d, INT64_MIN);
	cr_assert_eq(eng_dedup_count(d), 1);
	eng_dedup_insert(d, 1, a, INT64_MAX);
	cr_assert_eq(eng_dedup_count(d), 1);
	cr_assert(eng_dedup_contains(d, 1, a, INT64_MAX));
	eng_dedup_destroy(d);
}

Test(dedup, bytes_are_fixed_at_creation)
{
	struct eng_dedup *d = eng_dedup_create(100, 50);
	uint64_t bytes = eng_dedup_bytes(d);
	/* 100 ring entries of at least key + time, and a table of >= 200
	 * uint32 slots. */
	cr_assert_geq(bytes, 100 * (8 + ID_BYTES + 8) + 200 * 4);
	uint8_t id[ID_BYTES];
	for (uint64_t i = 0; i < 10000; i++) {
		make_id(id, i % 300);
		eng_dedup_insert(d, i % 3, id, (int64_t)i);
		cr_assert_eq(eng_dedup_bytes(d), bytes);
	}
	eng_dedup_expire(d, INT64_MAX);
	cr_assert_eq(eng_dedup_count(d), 0);
	cr_assert_eq(eng_dedup_bytes(d), bytes);
	eng_dedup_destroy(d);
}

/* ---- randomized comparison against a brute-force model ---------------- */

#define MODEL_CAP 128
#define POOL_KEYS 512
#define CLUSTER_TABLE 128 /* table size dedup.h promises for entries_max 64 */

struct key {
	uint64_t tenant_key;
	uint8_t id[ID_BYTES];
};

/* The same rules as dedup.h, stated as plainly as possible: a FIFO array
 * scanned linearly. */
struct model {
	struct key keys[MODEL_CAP];
	int64_t received_ns[MODEL_CAP];
	uint32_t count, entries_max;
	int64_t window_ns, newest_ns;
	uint64_t evicted_early;
};

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static bool model_expired(const struct model *m, int64_t received_ns, int64_t now_ns)
{
	/* received < now - window, computed without overflow for test times. */
	return received_ns + m->window_ns < now_ns;
}

static int model_find(const struct model *m, const struct key *k)
{
	for (uint32_t i = 0; i < m->count; i++)
		if (m->keys[i].tenant_key == k->tenant_key &&
		    memcmp(m->keys[i].id, k->id, ID_BYTES) == 0)
			return (int)i;
	return -1;
}

static void model_pop(struct model *m)
{
	memmove(&m->keys[0], &m->keys[1], (m->count - 1) * sizeof(m->keys[0]));
	memmove(&m->received_ns[0], &m->received_ns[1], (m->count - 1) * sizeof(int64_t));
	m->count--;
}

static void model_expire(struct model *m, int64_t now_ns)
{
	while (m->count > 0 && model_expired(m, m->received_ns[0], now_ns))
		model_pop(m);
}

static bool model_contains(const struct model *m, const struct key *k, int64_t now_ns)
{
	int i = model_find(m, k);
	return i >= 0 && !model_expired(m, m->received_ns[i], now_ns);
}

static void model_insert(struct model *m, const struct key *k, int64_t received_ns)
{
	if (received_ns < m->newest_ns)
		received_ns = m->newest_ns;
	m->newest_ns = received_ns;
	model_expire(m, received_ns);
	if (model_find(m, k) >= 0)
		return;
	if (m->count == m->entries_max) {
		model_pop(m);
		m->evicted_early++;
	}
	m->keys[m->count] = *k;
	m->received_ns[m->count] = received_ns;
	m->count++;
}

static uint32_t home_slot(const struct key *k)
{
	uint8_t buf[8 + ID_BYTES];
	fmt_put_u64(buf, k->tenant_key);
	memcpy(buf + 8, k->id, ID_BYTES);
	return (uint32_t)fmt_xxh3(buf, sizeof(buf)) & (CLUSTER_TABLE - 1);
}

/* Fills the pool: the first half are keys whose home slot (for a 128-slot
 * table) is 126, 127, 0 or 1, found by search; the rest are ordinary. A few
 * tenant keys share ids so that tenant separation is exercised too. */
static void fill_pool(struct key *pool, uint64_t *rng)
{
	uint32_t n = 0;
	while (n < POOL_KEYS / 2) {
		struct key k = { .tenant_key = rng_next(rng) % 4 };
		make_id(k.id, rng_next(rng));
		uint32_t h = home_slot(&k);
		if (h >= CLUSTER_TABLE - 2 || h <= 1)
			pool[n++] = k;
	}
	for (; n < POOL_KEYS; n++) {
		pool[n].tenant_key = n % 4;
		make_id(pool[n].id, n / 4);
	}
}

static void check_all_keys(struct eng_dedup *d, const struct model *m,
			   const struct key *pool, int64_t now_ns, uint64_t op)
{
	for (uint32_t i = 0; i < POOL_KEYS; i++)
		cr_assert_eq(eng_dedup_contains(d, pool[i].tenant_key, pool[i].id, now_ns),
			     model_contains(m, &pool[i], now_ns),
			     "op %llu key %u now %lld", (unsigned long long)op, i,
			     (long long)now_ns);
}

/* One randomized run. Time advances at a rate that changes every 1000 ops
 * (0 keeps the ring full and evicting, large rates expire it), and now and
 * then goes backwards to exercise clamping. */
static void run_model(uint32_t entries_max, int64_t window_ns, uint64_t seed, uint64_t ops)
{
	static const int64_t rates[] = { 0, 1, 10, 100, 1000 };
	static struct key pool[POOL_KEYS];
	static struct model m;
	cr_assert_leq(entries_max, MODEL_CAP);
	memset(&m, 0, sizeof(m));
	m.entries_max = entries_max;
	m.window_ns = window_ns;
	m.newest_ns = INT64_MIN;
	uint64_t rng = seed;
	fill_pool(pool, &rng);
	struct eng_dedup *d = eng_dedup_create(entries_max, window_ns);
	cr_assert_not_null(d);
	uint64_t bytes = eng_dedup_bytes(d);
	int64_t now = 0, rate = 0;

	for (uint64_t op = 0; op < ops; op++) {
		if (op % 1000 == 0)
			rate = rates[rng_next(&rng) % FMT_ARRAY_LEN(rates)];
		now += rate > 0 ? (int64_t)(rng_next(&rng) % (uint64_t)(2 * rate)) : 0;
		int64_t t = now - (rng_next(&rng) % 16 == 0 ? (int64_t)(rng_next(&rng) % 50) : 0);
		const struct key *k = &pool[rng_next(&rng) % POOL_KEYS];
		uint64_t kind = rng_next(&rng) % 16;
		if (kind < 7) {
			eng_dedup_insert(d, k->tenant_key, k->id, t);
			model_insert(&m, k, t);
		} else if (kind < 8) {
			/* A request's ids, as the append path checks them: one
			 * tenant, one time, repeats possible. */
			static const uint8_t *ids[100];
			static const struct key *keys[100];
			bool dup[100];
			uint32_t n = (uint32_t)(rng_next(&rng) % FMT_ARRAY_LEN(ids)) + 1;
			for (uint32_t i = 0; i < n; i++) {
				const struct key *b;
				do
					b = &pool[rng_next(&rng) % POOL_KEYS];
				while (b->tenant_key != k->tenant_key);
				keys[i] = b;
				ids[i] = b->id;
			}
			eng_dedup_check_insert_many(d, k->tenant_key, ids, n, t, dup);
			int64_t at = t < m.newest_ns ? m.newest_ns : t;
			for (uint32_t i = 0; i < n; i++) {
				cr_assert_eq(dup[i], model_contains(&m, keys[i], at),
					     "seed %llu op %llu id %u", (unsigned long long)seed,
					     (unsigned long long)op, i);
				model_insert(&m, keys[i], t);
			}
		} else if (kind < 9) {
			/* A batch, as WAL replay inserts: up to a few prefetch
			 * groups, times mostly rising, sometimes older. */
			static struct eng_dedup_item items[100];
			uint32_t n = (uint32_t)(rng_next(&rng) % FMT_ARRAY_LEN(items)) + 1;
			for (uint32_t i = 0; i < n; i++) {
				const struct key *b = &pool[rng_next(&rng) % POOL_KEYS];
				items[i].tenant_key = b->tenant_key;
				memcpy(items[i].id, b->id, ID_BYTES);
				items[i].received_ns = t + (int64_t)i - (int64_t)(rng_next(&rng) % 4);
				model_insert(&m, b, items[i].received_ns);
			}
			eng_dedup_insert_many(d, items, n);
		} else if (kind < 15) {
			cr_assert_eq(eng_dedup_contains(d, k->tenant_key, k->id, t),
				     model_contains(&m, k, t), "seed %llu op %llu",
				     (unsigned long long)seed, (unsigned long long)op);
		} else {
			eng_dedup_expire(d, t);
			model_expire(&m, t);
		}
		cr_assert_eq(eng_dedup_count(d), m.count, "seed %llu op %llu",
			     (unsigned long long)seed, (unsigned long long)op);
		cr_assert_eq(eng_dedup_evicted_early(d), m.evicted_early);
		if (op % 997 == 0)
			check_all_keys(d, &m, pool, now, op);
	}
	check_all_keys(d, &m, pool, now, ops);
	cr_assert_eq(eng_dedup_bytes(d), bytes);
	cr_assert_gt(m.evicted_early, 0, "the run never filled the ring");
	eng_dedup_destroy(d);
}

Test(dedup, model_clustered_small_table)
{
	run_model(64, 2000, 0x5EED0001ull, 100000);
}

Test(dedup, model_odd_size)
{
	run_model(100, 5000, 0x5EED0002ull, 100000);
}

Test(dedup, model_tiny_rings)
{
	run_model(1, 100, 0x5EED0003ull, 100000);
	run_model(7, 300, 0x5EED0004ull, 100000);
}

Test(dedup, check_insert_is_contains_then_insert)
{
	const int64_t window = 1000;
	struct eng_dedup *d = eng_dedup_create(4, window);
	cr_assert(d != NULL);
	uint8_t a[ID_BYTES], b[ID_BYTES];
	make_id(a, 1);
	make_id(b, 2);
	cr_assert(!eng_dedup_check_insert(d, 7, a, 100), "first time: new, remembered");
	cr_assert(eng_dedup_check_insert(d, 7, a, 200), "second time: duplicate");
	cr_assert(!eng_dedup_check_insert(d, 8, a, 200), "another tenant's id is its own");
	cr_assert_eq(eng_dedup_count(d), 2, "a duplicate adds nothing");
	cr_assert(eng_dedup_check_insert(d, 7, a, 100 + window), "still inside the window");
	cr_assert(!eng_dedup_check_insert(d, 7, a, 101 + window), "aged out: new again");
	for (uint64_t i = 10; i < 14; i++) {
		make_id(b, i);
		cr_assert(!eng_dedup_check_insert(d, 7, b, 2000));
	}
	cr_assert_eq(eng_dedup_count(d), 4);
	cr_assert(eng_dedup_evicted_early(d) >= 1, "a full ring drops its oldest early");
	eng_dedup_destroy(d);
}
