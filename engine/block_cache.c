// SPDX-License-Identifier: Apache-2.0
/*
 * block_cache.c — a shard's cache of decoded segment blocks, so that a
 * query does not decompress again what a recent one just decoded: the
 * second Search of "failures, then denials" on the same day reads the
 * same blocks as the first, and a repeated "latest 100" reads the same
 * blocks every time. Reads go through eng_query_block() (read.c), shared
 * by Search and Count.
 *
 * Key: (segment id, block index). A segment is immutable once stored, and
 * its id is unique within its shard for the life of the process (seal.c
 * takes ids from the shard's next_segment_no, which only grows and starts
 * past every id the manifest names), so one key names one content.
 * Tenant isolation: a query reaches only its own tenant's segments (the
 * eng_segment comes from the tenant's list and its footer is checked
 * against the tenant by eng_query_segment_open() before any block is
 * looked up), and ids are unique across the shard's tenants, so the
 * segment id alone can never hand one tenant's block to another. When a
 * segment's local file goes away (local retention, remote-cache eviction,
 * remote.c), its entries are dropped, so a block is never served for a
 * segment that is not readable any more. A block is checked (checksums,
 * zone maps) when it is decoded; a later change to the file on disk is
 * not seen by the blocks already cached (verify reads the files).
 *
 * Value: a decoded struct fmt_block. Only full decodes (FMT_COLS_ALL,
 * what Search's phase 2 asks for the blocks holding its hits) are kept,
 * and they serve any request for the block, whatever its columns: phase 1
 * of the next Search, phase 2, a Count. Partial decodes (phase 1, Count)
 * are not kept: with them in, the benchmark's Q1top and Q5 gained nothing
 * more and Q2, Q3 and Q4 lost 6-23 % to churn (2.6x more evictions of the
 * full blocks that do pay; docs/PERFORMANCE.md, "Decoded-block cache"). So an
 * entry always holds every column, a key has at most one entry, and a
 * lookup that finds the key is a hit.
 *
 * Bound and ownership. Entries count their decoded bytes plus the entry
 * itself against cfg.block_cache_bytes; least recently used entries are
 * evicted first. A block handed to a query is pinned (pins > 0: off the
 * LRU list, on the pinned list) and is never evicted nor freed until the
 * query gives it back with eng_query_block_release(); a block that does
 * not fit (everything else pinned, or larger than the bound) is returned
 * uncached and freed by that release. So `bytes <= cap_bytes` always
 * holds. A query holds at most a few blocks at once, so the pinned list
 * that release walks stays short.
 *
 * Threads: used by the shard thread only (queries run there), like the
 * open-segment cache; no locking. Counted in the shard's stats:
 * block_cache_hits, _misses, _evictions and _bytes.
 */
#include "engine/internal.h"

#include <stdlib.h>

#define BUCKET_BYTES (16u << 10) /* one bucket per this many bytes of bound */
#define BUCKETS_MIN 64u
#define BUCKETS_MAX (1u << 20)

static void list_init(struct eng_block_entry *head)
{
	head->prev = head->next = head;
}

static void list_unlink(struct eng_block_entry *e)
{
	e->prev->next = e->next;
	e->next->prev = e->prev;
	e->prev = e->next = NULL;
}

/* Inserts e after head: the most recently used end of the LRU list. */
static void list_push(struct eng_block_entry *head, struct eng_block_entry *e)
{
	e->prev = head;
	e->next = head->next;
	head->next->prev = e;
	head->next = e;
}

int eng_block_cache_init(struct eng_block_cache *c, uint64_t cap_bytes)
{
	memset(c, 0, sizeof(*c));
	c->cap_bytes = cap_bytes;
	list_init(&c->lru);
	list_init(&c->pinned);
	if (cap_bytes == 0)
		return 0;
	uint64_t want = FMT_MIN(FMT_MAX(cap_bytes / BUCKET_BYTES, (uint64_t)BUCKETS_MIN),
				(uint64_t)BUCKETS_MAX);
	uint32_t n = BUCKETS_MIN;
	while (n < want)
		n *= 2;
	c->buckets = calloc(n, sizeof(*c->buckets));
	if (!c->buckets)
		return FMT_E_NOMEM;
	c->bucket_mask = n - 1;
	return 0;
}

static struct eng_block_entry **bucket_of(struct eng_block_cache *c, uint64_t segment_id,
					  uint32_t block)
{
	uint8_t key[12];
	fmt_put_u64(key, segment_id);
	fmt_put_u32(key + 8, block);
	return &c->buckets[fmt_xxh3(key, sizeof(key)) & c->bucket_mask];
}

static struct eng_block_entry *find(struct eng_block_cache *c, uint64_t segment_id, uint32_t block)
{
	struct eng_block_entry *e = *bucket_of(c, segment_id, block);
	while (e && (e->segment_id != segment_id || e->block != block))
		e = e->hnext;
	return e;
}

static void unhash(struct eng_block_cache *c, struct eng_block_entry *e)
{
	struct eng_block_entry **p = bucket_of(c, e->segment_id, e->block);
	while (*p != e) {
		ASSERT(*p != NULL);
		p = &(*p)->hnext;
	}
	*p = e->hnext;
	e->hnext = NULL;
}

static void entry_free(struct eng_block_cache *c, struct eng_block_entry *e)
{
	ASSERT(e->pins == 0 && c->bytes >= e->bytes);
	c->bytes -= e->bytes;
	fmt_block_free(e->blk);
	free(e);
}

/* Removes an unpinned entry from the table and the LRU list, and frees it. */
static void entry_remove(struct eng_block_cache *c, struct eng_block_entry *e)
{
	ASSERT(e->pins == 0 && !e->dropped);
	unhash(c, e);
	list_unlink(e);
	entry_free(c, e);
}

static void publish(struct eng_shard *s)
{
	s->stats.block_cache_bytes = s->block_cache.bytes;
}

void eng_block_cache_free(struct eng_block_cache *c)
{
	/* Queries release their blocks before they complete: nothing is pinned. */
	ASSERT(c->pinned.next == &c->pinned || c->pinned.next == NULL);
	while (c->lru.next && c->lru.next != &c->lru)
		entry_remove(c, c->lru.next);
	free(c->buckets);
	c->buckets = NULL;
}

struct fmt_block *eng_block_cache_get(struct eng_shard *s, uint64_t segment_id, uint32_t block)
{
	struct eng_block_cache *c = &s->block_cache;
	if (!c->buckets)
		return NULL;
	struct eng_block_entry *e = find(c, segment_id, block);
	if (!e) {
		s->stats.block_cache_misses++;
		return NULL;
	}
	ASSERT(fmt_block_mask(e->blk) == FMT_COLS_ALL);
	s->stats.block_cache_hits++;
	list_unlink(e); /* from the LRU list, or the pinned one if already lent */
	list_push(&c->pinned, e);
	e->pins++;
	return e->blk;
}

/* Evicts least recently used entries until `need` more bytes fit; false
 * when they cannot (the rest is pinned). */
static bool make_room(struct eng_shard *s, uint64_t need)
{
	struct eng_block_cache *c = &s->block_cache;
	while (c->bytes + need > c->cap_bytes) {
		struct eng_block_entry *victim = c->lru.prev;
		if (victim == &c->lru)
			return false;
		entry_remove(c, victim);
		s->stats.block_cache_evictions++;
	}
	return true;
}

bool eng_block_cache_put(struct eng_shard *s, uint64_t segment_id, uint32_t block,
			 struct fmt_block *blk)
{
	struct eng_block_cache *c = &s->block_cache;
	if (!c->buckets || fmt_block_mask(blk) != FMT_COLS_ALL)
		return false;
	uint64_t bytes = fmt_block_mem_bytes(blk) + sizeof(struct eng_block_entry);
	if (bytes > c->cap_bytes)
		return false;
	/* Its lookup missed just before, on this thread: no entry can exist. */
	ASSERT(find(c, segment_id, block) == NULL);
	struct eng_block_entry *e = calloc(1, sizeof(*e));
	if (!e || !make_room(s, bytes)) {
		free(e);
		publish(s);
		return false;
	}
	e->segment_id = segment_id;
	e->block = block;
	e->blk = blk;
	e->bytes = bytes;
	e->pins = 1;
	struct eng_block_entry **b = bucket_of(c, segment_id, block);
	e->hnext = *b;
	*b = e;
	list_push(&c->pinned, e);
	c->bytes += bytes;
	ASSERT(c->bytes <= c->cap_bytes);
	publish(s);
	return true;
}

void eng_block_cache_release(struct eng_shard *s, struct fmt_block *blk)
{
	struct eng_block_cache *c = &s->block_cache;
	if (!blk)
		return;
	struct eng_block_entry *e = c->pinned.next;
	while (e && e != &c->pinned && e->blk != blk)
		e = e->next;
	if (!e || e == &c->pinned) {
		fmt_block_free(blk); /* lent uncached */
		return;
	}
	ASSERT(e->pins > 0);
	if (--e->pins)
		return;
	list_unlink(e);
	if (e->dropped) {
		entry_free(c, e);
		publish(s);
		return;
	}
	list_push(&c->lru, e);
}

void eng_block_cache_drop_segment(struct eng_shard *s, uint64_t segment_id)
{
	struct eng_block_cache *c = &s->block_cache;
	if (!c->buckets)
		return;
	/* Rare (a segment's local file is removed) and bounded by the entries
	 * the cache holds: a walk of both lists is simpler than an index. */
	for (struct eng_block_entry *e = c->lru.next, *next; e != &c->lru; e = next) {
		next = e->next;
		if (e->segment_id == segment_id)
			entry_remove(c, e);
	}
	for (struct eng_block_entry *e = c->pinned.next; e != &c->pinned; e = e->next)
		if (e->segment_id == segment_id && !e->dropped) {
			unhash(c, e);
			e->dropped = true; /* its holder frees it */
		}
	publish(s);
}
