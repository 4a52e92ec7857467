/* SPDX-License-Identifier: Apache-2.0
 *
 * dedup.c — a shard's memory of recently stored event ids (DESIGN.md §2.3,
 * promise 3), as declared in dedup.h.
 *
 * Two arrays, both sized at creation and never resized:
 *
 *   ring   entries_max slots of {tenant key, id, received_ns, hash}, a FIFO
 *          in insertion order. Because inserts come in non-decreasing
 *          received_ns order (older times are clamped), the head is always
 *          the oldest entry, so expiry and early eviction only ever pop the
 *          head.
 *   table  a power of two >= 2 * entries_max of uint64 values: 0 is empty,
 *          otherwise (low 32 bits of the key's hash << 32) | (ring slot + 1).
 *          Open addressing with linear probing. The hash bits in the slot
 *          give each entry's home and reject almost every non-matching
 *          slot without touching the ring, whose random reads were the
 *          cache misses that dominated the probe.
 *          Deletion shifts later members of the probe run backwards
 *          (Knuth, TAOCP vol. 3, §6.4 Algorithm R), so there are no
 *          tombstones and probe runs never grow with age.
 *
 * Invariants (checked by ASSERT where cheap):
 *   I1  count <= entries_max, and the live ring slots are
 *       head, head+1, ..., head+count-1 (mod entries_max).
 *   I2  each live ring slot is referenced by exactly one table slot, and
 *       every non-zero table slot references a live ring slot.
 *   I3  for a table slot p holding entry e, every slot from home(e) up to p
 *       (cyclically) is non-zero: e is reachable by probing from its home.
 *   I4  a (tenant key, id) is in the ring at most once: insert expires
 *       first, then returns early when the key is still present.
 *   I5  ring received_ns is non-decreasing from head to tail.
 *
 * The load factor stays <= 1/2, so a probe always meets an empty slot and
 * expected probe lengths are O(1); every entry is inserted and removed
 * once, so insert and expire are O(1) amortised.
 *
 * The stored 64-bit hash spares recomputing XXH3 during backward shifts and
 * lets lookups skip most key comparisons.
 *
 * The table is far larger than the caches, so each insert costs a miss or
 * two (its probe, and the eviction's when the ring is full). WAL replay
 * inserts millions in a row: eng_dedup_insert_many() hashes a group of
 * items first and prefetches every slot the group will touch, then inserts
 * them one by one exactly as eng_dedup_insert() would.
 */
#include "dedup.h"

#include "format/common.h"

#include <stdlib.h>
#include <string.h>

/* Larger rings would overflow the uint32 table values and index arithmetic,
 * and would need gigabytes anyway; such a request is refused like a failed
 * allocation. */
#define ENG_DEDUP_ENTRIES_LIMIT (UINT32_C(1) << 30)
#define ENG_DEDUP_KEY_BYTES (8 + FMT_EVENT_ID_BYTES)

_Static_assert(ENG_DEDUP_KEY_BYTES == 24, "tenant key u64 + 16-byte id");
_Static_assert((uint64_t)ENG_DEDUP_ENTRIES_LIMIT * 2 <= UINT32_MAX,
	       "table size and ring slot + 1 fit in 32 bits of a table value");

struct eng_dedup_entry {
	uint64_t tenant_key;
	uint64_t hash;
	int64_t received_ns;
	uint8_t id[FMT_EVENT_ID_BYTES];
};

struct eng_dedup {
	struct eng_dedup_entry *ring;
	uint64_t *table;
	uint32_t entries_max;
	uint32_t head;        /* ring slot of the oldest entry */
	uint32_t count;       /* live entries, <= entries_max */
	uint32_t table_mask;  /* table size - 1 */
	int64_t window_ns;
	int64_t newest_ns;    /* newest (clamped) received_ns inserted */
	uint64_t evicted_early;
};

static uint64_t key_hash(uint64_t tenant_key, const uint8_t id[FMT_EVENT_ID_BYTES])
{
	uint8_t buf[ENG_DEDUP_KEY_BYTES];
	fmt_put_u64(buf, tenant_key);
	memcpy(buf + 8, id, FMT_EVENT_ID_BYTES);
	return fmt_xxh3(buf, sizeof(buf));
}

/* now_ns - window_ns, saturated at INT64_MIN so that early clocks expire
 * nothing instead of overflowing. */
static int64_t cutoff_ns(const struct eng_dedup *d, int64_t now_ns)
{
	if (now_ns < INT64_MIN + d->window_ns)
		return INT64_MIN;
	return now_ns - d->window_ns;
}

static uint32_t ring_next(const struct eng_dedup *d, uint32_t slot)
{
	return slot + 1 == d->entries_max ? 0 : slot + 1;
}

static uint32_t slot_of(uint64_t value)
{
	return (uint32_t)value - 1;
}

static uint32_t home_of(const struct eng_dedup *d, uint64_t value)
{
	ASSERT(value != 0 && slot_of(value) < d->entries_max);
	return (uint32_t)(value >> 32) & d->table_mask;
}

static uint64_t table_value(uint64_t hash, uint32_t slot)
{
	return ((uint64_t)(uint32_t)hash << 32) | (slot + 1);
}

struct eng_dedup *eng_dedup_create(uint32_t entries_max, int64_t window_ns)
{
	ASSERT(entries_max >= 1);
	ASSERT(window_ns >= 0);
	if (entries_max > ENG_DEDUP_ENTRIES_LIMIT)
		return NULL;
	uint32_t table_size = 2;
	while (table_size < 2 * entries_max)
		table_size *= 2;

	struct eng_dedup *d = calloc(1, sizeof(*d));
	if (d == NULL)
		goto fail;
	d->ring = calloc(entries_max, sizeof(*d->ring));
	d->table = calloc(table_size, sizeof(*d->table));
	if (d->ring == NULL || d->table == NULL)
		goto fail;
	d->entries_max = entries_max;
	d->table_mask = table_size - 1;
	d->window_ns = window_ns;
	d->newest_ns = INT64_MIN;
	ASSERT((table_size & d->table_mask) == 0 && table_size >= 2 * entries_max);
	return d;
fail:
	eng_dedup_destroy(d);
	return NULL;
}

void eng_dedup_destroy(struct eng_dedup *d)
{
	if (d == NULL)
		return;
	free(d->ring);
	free(d->table);
	free(d);
}

uint64_t eng_dedup_bytes(const struct eng_dedup *d)
{
	return sizeof(*d) + (uint64_t)d->entries_max * sizeof(*d->ring) +
	       ((uint64_t)d->table_mask + 1) * sizeof(*d->table);
}

/* Probes for the key. Returns the table slot holding it, or, when absent,
 * the empty slot that ends its probe run (where an insert would go); *found
 * says which. The load factor <= 1/2 (I1, table >= 2 * entries_max)
 * guarantees an empty slot, so the loop is bounded by the table size. */
static uint32_t probe(const struct eng_dedup *d, uint64_t hash, uint64_t tenant_key,
		      const uint8_t id[FMT_EVENT_ID_BYTES], bool *found)
{
	uint32_t pos = (uint32_t)hash & d->table_mask;
	for (uint64_t n = 0; n <= d->table_mask; n++) {
		uint64_t v = d->table[pos];
		if (v == 0) {
			*found = false;
			return pos;
		}
		if ((uint32_t)(v >> 32) != (uint32_t)hash) {
			pos = (pos + 1) & d->table_mask;
			continue;
		}
		const struct eng_dedup_entry *e = &d->ring[slot_of(v)];
		if (e->hash == hash && e->tenant_key == tenant_key &&
		    memcmp(e->id, id, FMT_EVENT_ID_BYTES) == 0) {
			*found = true;
			return pos;
		}
		pos = (pos + 1) & d->table_mask;
	}
	ASSERT(!"dedup table has no empty slot");
	return 0;
}

/* Empties table slot `hole` and closes the gap (Algorithm R): walk the run
 * after it; an entry at j may move back into the hole when its home is not
 * cyclically inside (hole, j], i.e. when it is at least as far from its
 * home as the hole is from j. That keeps I3 for every entry of the run. */
static void table_remove(struct eng_dedup *d, uint32_t hole)
{
	uint32_t mask = d->table_mask;
	ASSERT(d->table[hole] != 0);
	d->table[hole] = 0;
	uint32_t j = hole;
	for (uint64_t n = 0; n < mask; n++) {
		j = (j + 1) & mask;
		uint64_t v = d->table[j];
		if (v == 0)
			return;
		uint32_t home = home_of(d, v);
		if (((j - home) & mask) >= ((j - hole) & mask)) {
			d->table[hole] = v;
			d->table[j] = 0;
			hole = j;
		}
	}
	ASSERT(!"dedup table has no empty slot");
}

/* Drops the oldest entry: finds its table slot by ring index (exact, no key
 * comparison needed) and removes it. */
static void pop_head(struct eng_dedup *d)
{
	ASSERT(d->count > 0 && d->count <= d->entries_max);
	uint64_t value = table_value(d->ring[d->head].hash, d->head);
	uint32_t pos = home_of(d, value);
	uint64_t n = 0;
	while (d->table[pos] != value) {
		ASSERT(d->table[pos] != 0 && n++ < d->table_mask);
		pos = (pos + 1) & d->table_mask;
	}
	table_remove(d, pos);
	d->head = ring_next(d, d->head);
	d->count--;
}

bool eng_dedup_contains(struct eng_dedup *d, uint64_t tenant_key,
			const uint8_t id[FMT_EVENT_ID_BYTES], int64_t now_ns)
{
	bool found;
	uint32_t pos = probe(d, key_hash(tenant_key, id), tenant_key, id, &found);
	if (!found)
		return false;
	return d->ring[slot_of(d->table[pos])].received_ns >= cutoff_ns(d, now_ns);
}

void eng_dedup_expire(struct eng_dedup *d, int64_t now_ns)
{
	int64_t cutoff = cutoff_ns(d, now_ns);
	uint32_t n = d->count;
	for (uint32_t i = 0; i < n; i++) {
		if (d->ring[d->head].received_ns >= cutoff)
			break;
		pop_head(d);
	}
}

/* Clamps the time to the newest seen (keeps I5: the head is the oldest
 * entry) and drops what has aged out, so that an expired id is new again. */
static int64_t advance(struct eng_dedup *d, int64_t received_ns)
{
	if (received_ns < d->newest_ns)
		received_ns = d->newest_ns;
	d->newest_ns = received_ns;
	eng_dedup_expire(d, received_ns);
	return received_ns;
}

/* Stores an absent key whose probe ended at empty slot `pos`. */
static void insert_absent(struct eng_dedup *d, uint64_t hash, uint32_t pos, uint64_t tenant_key,
			  const uint8_t id[FMT_EVENT_ID_BYTES], int64_t received_ns)
{
	bool found;
	if (d->count == d->entries_max) {
		pop_head(d);
		d->evicted_early++;
		/* The backward shift may have moved the empty slot found before. */
		pos = probe(d, hash, tenant_key, id, &found);
		ASSERT(!found);
	}
	ASSERT(d->table[pos] == 0 && d->count < d->entries_max);

	uint32_t slot = d->head + d->count;
	if (slot >= d->entries_max)
		slot -= d->entries_max;
	struct eng_dedup_entry *e = &d->ring[slot];
	e->tenant_key = tenant_key;
	e->hash = hash;
	e->received_ns = received_ns;
	memcpy(e->id, id, FMT_EVENT_ID_BYTES);
	d->table[pos] = table_value(hash, slot);
	d->count++;
	ASSERT(slot_of(d->table[pos]) == slot && d->ring[slot].hash == hash);
}

static void insert_hashed(struct eng_dedup *d, uint64_t hash, uint64_t tenant_key,
			  const uint8_t id[FMT_EVENT_ID_BYTES], int64_t received_ns)
{
	received_ns = advance(d, received_ns);
	bool found;
	uint32_t pos = probe(d, hash, tenant_key, id, &found);
	if (!found)
		insert_absent(d, hash, pos, tenant_key, id, received_ns);
}

void eng_dedup_insert(struct eng_dedup *d, uint64_t tenant_key,
		      const uint8_t id[FMT_EVENT_ID_BYTES], int64_t received_ns)
{
	insert_hashed(d, key_hash(tenant_key, id), tenant_key, id, received_ns);
}

/* Items hashed and prefetched ahead of their inserts: enough misses in
 * flight to cover a memory latency, few enough to stay in L1. */
#define ENG_DEDUP_PREFETCH 32

/* Prefetches the table slots where the probes of k hashed keys start, and
 * those of the entries a full ring drops for them (found from the ring's
 * stored hashes). Expiry by time may drop others; those are not
 * predicted. */
static void prefetch_slots(const struct eng_dedup *d, const uint64_t *hash, uint32_t k)
{
	for (uint32_t i = 0; i < k; i++)
		__builtin_prefetch(&d->table[(uint32_t)hash[i] & d->table_mask], 1);
	uint64_t evict = (uint64_t)d->count + k > d->entries_max
				 ? (uint64_t)d->count + k - d->entries_max
				 : 0;
	uint32_t slot = d->head;
	for (uint64_t i = 0; i < evict && i < d->count; i++) {
		__builtin_prefetch(&d->table[(uint32_t)d->ring[slot].hash & d->table_mask], 1);
		slot = ring_next(d, slot);
	}
}

void eng_dedup_insert_many(struct eng_dedup *d, const struct eng_dedup_item *items, uint32_t n)
{
	uint64_t hash[ENG_DEDUP_PREFETCH];
	ASSERT(items != NULL || n == 0);
	for (uint32_t at = 0; at < n; at += ENG_DEDUP_PREFETCH) {
		const struct eng_dedup_item *it = items + at;
		uint32_t k = FMT_MIN(n - at, (uint32_t)ENG_DEDUP_PREFETCH);
		for (uint32_t i = 0; i < k; i++)
			hash[i] = key_hash(it[i].tenant_key, it[i].id);
		prefetch_slots(d, hash, k);
		for (uint32_t i = 0; i < k; i++)
			insert_hashed(d, hash[i], it[i].tenant_key, it[i].id, it[i].received_ns);
	}
}

void eng_dedup_check_insert_many(struct eng_dedup *d, uint64_t tenant_key,
				 const uint8_t *const *ids, uint32_t n, int64_t now_ns, bool *dup)
{
	uint64_t hash[ENG_DEDUP_PREFETCH];
	ASSERT((ids != NULL && dup != NULL) || n == 0);
	/* Once for all: advancing again to the same time would drop nothing. */
	now_ns = advance(d, now_ns);
	for (uint32_t at = 0; at < n; at += ENG_DEDUP_PREFETCH) {
		uint32_t k = FMT_MIN(n - at, (uint32_t)ENG_DEDUP_PREFETCH);
		for (uint32_t i = 0; i < k; i++)
			hash[i] = key_hash(tenant_key, ids[at + i]);
		prefetch_slots(d, hash, k);
		for (uint32_t i = 0; i < k; i++) {
			const uint8_t *id = ids[at + i];
			uint32_t pos = probe(d, hash[i], tenant_key, id, &dup[at + i]);
			if (!dup[at + i]) /* found means live: advance() dropped the expired */
				insert_absent(d, hash[i], pos, tenant_key, id, now_ns);
		}
	}
}

bool eng_dedup_check_insert(struct eng_dedup *d, uint64_t tenant_key,
			    const uint8_t id[FMT_EVENT_ID_BYTES], int64_t now_ns)
{
	bool dup;
	eng_dedup_check_insert_many(d, tenant_key, &id, 1, now_ns, &dup);
	return dup;
}

uint32_t eng_dedup_count(const struct eng_dedup *d)
{
	return d->count;
}

uint64_t eng_dedup_evicted_early(const struct eng_dedup *d)
{
	return d->evicted_early;
}
