/* SPDX-License-Identifier: Apache-2.0
 *
 * spsc.h — a bounded single-producer/single-consumer ring of pointers, the
 * only way shards and producers talk. Capacity is a power of two fixed at
 * creation. The producer owns `tail`, the consumer owns `head`; each reads
 * the other's index with acquire and publishes its own with release, and
 * caches the other's last value to avoid touching its cache line on every
 * call.
 */
#ifndef HODEI_ENGINE_SPSC_H
#define HODEI_ENGINE_SPSC_H

#include "format/common.h"

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

struct eng_spsc {
	alignas(64) _Atomic uint64_t head; /* next slot to pop (consumer) */
	uint64_t tail_cache;
	alignas(64) _Atomic uint64_t tail; /* next slot to push (producer) */
	uint64_t head_cache;
	alignas(64) uint32_t mask;
	void **slots;
};

static inline int eng_spsc_init(struct eng_spsc *q, uint32_t capacity)
{
	ASSERT(capacity >= 2 && (capacity & (capacity - 1)) == 0);
	memset(q, 0, sizeof(*q));
	q->slots = calloc(capacity, sizeof(void *));
	if (!q->slots)
		return FMT_E_NOMEM;
	q->mask = capacity - 1;
	return 0;
}

static inline void eng_spsc_free(struct eng_spsc *q)
{
	free(q->slots);
	q->slots = NULL;
}

/* Producer side. Returns false when full. */
static inline bool eng_spsc_push(struct eng_spsc *q, void *item)
{
	uint64_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
	if (tail - q->head_cache > q->mask) {
		q->head_cache = atomic_load_explicit(&q->head, memory_order_acquire);
		if (tail - q->head_cache > q->mask)
			return false;
	}
	q->slots[tail & q->mask] = item;
	atomic_store_explicit(&q->tail, tail + 1, memory_order_release);
	return true;
}

/* Consumer side. Returns NULL when empty. */
static inline void *eng_spsc_pop(struct eng_spsc *q)
{
	uint64_t head = atomic_load_explicit(&q->head, memory_order_relaxed);
	if (head == q->tail_cache) {
		q->tail_cache = atomic_load_explicit(&q->tail, memory_order_acquire);
		if (head == q->tail_cache)
			return NULL;
	}
	void *item = q->slots[head & q->mask];
	atomic_store_explicit(&q->head, head + 1, memory_order_release);
	return item;
}

/* Consumer side: the next item without removing it, or NULL. */
static inline void *eng_spsc_peek(struct eng_spsc *q)
{
	uint64_t head = atomic_load_explicit(&q->head, memory_order_relaxed);
	if (head == q->tail_cache) {
		q->tail_cache = atomic_load_explicit(&q->tail, memory_order_acquire);
		if (head == q->tail_cache)
			return NULL;
	}
	return q->slots[head & q->mask];
}

#endif
