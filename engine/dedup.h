/* SPDX-License-Identifier: Apache-2.0
 *
 * dedup.h — a shard's memory of recently stored event ids (DESIGN.md §2.3).
 *
 * A FIFO ring of entries {tenant key, event id, received_at} in insertion
 * (= time) order, indexed by an open-addressing hash table with linear
 * probing and backward-shift deletion. Entries older than the window are
 * dropped from the head as time passes; when the ring is full the oldest
 * entry is dropped early and counted (the window then is shorter than
 * configured, which the metric makes visible). Memory is fixed at
 * creation: entries_max ring slots and a table of twice that, rounded up
 * to a power of two. Used by one shard thread only.
 */
#ifndef HODEI_ENGINE_DEDUP_H
#define HODEI_ENGINE_DEDUP_H

#include "format/event.h"

#include <stdbool.h>

struct eng_dedup;

/* Returns NULL when the allocation fails. entries_max >= 1. */
struct eng_dedup *eng_dedup_create(uint32_t entries_max, int64_t window_ns);
void eng_dedup_destroy(struct eng_dedup *d);

/* Bytes of memory the structure holds (fixed). */
uint64_t eng_dedup_bytes(const struct eng_dedup *d);

/* True when (tenant_key, id) is remembered and not older than the window
 * relative to now_ns. */
bool eng_dedup_contains(struct eng_dedup *d, uint64_t tenant_key,
			const uint8_t id[FMT_EVENT_ID_BYTES], int64_t now_ns);

/* Remembers (tenant_key, id) as stored at received_ns. Must be called in
 * non-decreasing received_ns order (asserted loosely: an older time is
 * clamped to the newest seen). Drops expired and, if full, the oldest
 * entries first. */
void eng_dedup_insert(struct eng_dedup *d, uint64_t tenant_key,
		      const uint8_t id[FMT_EVENT_ID_BYTES], int64_t received_ns);

/* One event to remember, for eng_dedup_insert_many(). */
struct eng_dedup_item {
	uint64_t tenant_key;
	int64_t received_ns;
	uint8_t id[FMT_EVENT_ID_BYTES];
};

/* eng_dedup_insert() of items[0, n) in order, with the same result. The
 * table slots that the inserts and the evictions of a full ring will touch
 * are prefetched a few dozen items ahead, so that their cache misses
 * overlap instead of following one another (WAL replay inserts millions
 * in a row). */
void eng_dedup_insert_many(struct eng_dedup *d, const struct eng_dedup_item *items, uint32_t n);

/* One probe for the append path: returns true when (tenant_key, id) is
 * remembered within the window (a duplicate: nothing changes), otherwise
 * remembers it as stored at now_ns and returns false. Same time rules as
 * eng_dedup_insert(). */
bool eng_dedup_check_insert(struct eng_dedup *d, uint64_t tenant_key,
			    const uint8_t id[FMT_EVENT_ID_BYTES], int64_t now_ns);

/* eng_dedup_check_insert() of n ids of one tenant, all at now_ns, in
 * order, with the same results: dup[i] says whether ids[i] was remembered
 * (a second copy of an id within the call is a duplicate). The table
 * slots are prefetched a few dozen ids ahead, as by
 * eng_dedup_insert_many(): the append path checks a request at once. */
void eng_dedup_check_insert_many(struct eng_dedup *d, uint64_t tenant_key,
				 const uint8_t *const *ids, uint32_t n, int64_t now_ns, bool *dup);

/* Drops entries older than now_ns - window. */
void eng_dedup_expire(struct eng_dedup *d, int64_t now_ns);

uint32_t eng_dedup_count(const struct eng_dedup *d);
uint64_t eng_dedup_evicted_early(const struct eng_dedup *d);

#endif
