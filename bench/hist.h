/* SPDX-License-Identifier: Apache-2.0
 *
 * hist.h — a log-linear latency histogram for the benchmarks, in the
 * manner of HdrHistogram: bounded memory (about 30 KiB) whatever the number
 * of samples, and a relative error of at most 1/64 (1.6 %) per value.
 *
 * Values below 2 * 2^HIST_SUB_BITS are exact; above, each power of two is
 * cut into 2^HIST_SUB_BITS equal buckets. A quantile is the top of the
 * first bucket whose cumulative count reaches ceil(q * n), clipped to the
 * largest value seen, so a reported p99 is never below the true p99 by
 * more than one bucket's width. One writer per histogram; merge them after
 * the writers stopped.
 */
#ifndef HODEI_BENCH_HIST_H
#define HODEI_BENCH_HIST_H

#include "format/common.h"

#include <stdint.h>

#define HIST_SUB_BITS 6
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS (2 * HIST_SUB + (63 - HIST_SUB_BITS - 1) * HIST_SUB)

struct hist {
	uint64_t counts[HIST_BUCKETS];
	uint64_t n, sum, min, max;
};

static inline uint32_t hist_index(uint64_t v)
{
	if (v < 2 * HIST_SUB)
		return (uint32_t)v;
	uint32_t e = 63u - (uint32_t)__builtin_clzll(v); /* >= HIST_SUB_BITS + 1 */
	uint32_t shift = e - HIST_SUB_BITS;
	uint32_t m = (uint32_t)(v >> shift);             /* [HIST_SUB, 2 * HIST_SUB) */
	uint32_t i = 2 * HIST_SUB + (e - HIST_SUB_BITS - 1) * HIST_SUB + (m - HIST_SUB);
	ASSERT(i < HIST_BUCKETS);
	return i;
}

/* The highest value that falls into bucket i. */
static inline uint64_t hist_bucket_high(uint32_t i)
{
	if (i < 2 * HIST_SUB)
		return i;
	uint32_t e = (i - 2 * HIST_SUB) / HIST_SUB + HIST_SUB_BITS + 1;
	uint32_t m = (i - 2 * HIST_SUB) % HIST_SUB + HIST_SUB;
	uint32_t shift = e - HIST_SUB_BITS;
	return (((uint64_t)m + 1) << shift) - 1;
}

static inline void hist_add(struct hist *h, uint64_t v)
{
	h->counts[hist_index(v)]++;
	if (h->n == 0 || v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
	h->n++;
	h->sum += v;
}

static inline void hist_merge(struct hist *into, const struct hist *h)
{
	for (uint32_t i = 0; i < HIST_BUCKETS; i++)
		into->counts[i] += h->counts[i];
	if (h->n && (into->n == 0 || h->min < into->min))
		into->min = h->min;
	if (h->max > into->max)
		into->max = h->max;
	into->n += h->n;
	into->sum += h->sum;
}

/* The value at quantile q (0..1); 0 when empty. */
static inline uint64_t hist_quantile(const struct hist *h, double q)
{
	if (h->n == 0)
		return 0;
	uint64_t rank = (uint64_t)(q * (double)h->n + 0.999999);
	if (rank < 1)
		rank = 1;
	uint64_t seen = 0;
	for (uint32_t i = 0; i < HIST_BUCKETS; i++) {
		seen += h->counts[i];
		if (seen >= rank)
			return FMT_MIN(hist_bucket_high(i), h->max);
	}
	return h->max;
}

#endif
