/* SPDX-License-Identifier: Apache-2.0
 *
 * rng.h — the benchmarks' one pseudo-random generator: splitmix64
 * (Steele, Lea, Flood 2014), fast, seedable with any 64-bit value, and the
 * same numbers on every machine, which is what makes the generator's events
 * and the query plans reproducible from a seed. Not for anything secret.
 */
#ifndef HODEI_BENCH_RNG_H
#define HODEI_BENCH_RNG_H

#include <stdint.h>

static inline uint64_t bench_rng_next(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [0, n) from the top 32 bits (multiply-shift; bias < n/2^32). */
static inline uint32_t bench_rng_below32(uint64_t *state, uint32_t n)
{
	return (uint32_t)(((bench_rng_next(state) >> 32) * (uint64_t)n) >> 32);
}

/* Uniform in [0, n) from all 64 bits (bias < n/2^64). */
static inline uint64_t bench_rng_below64(uint64_t *state, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)bench_rng_next(state) * n) >> 64);
}

#endif
