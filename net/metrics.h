/* SPDX-License-Identifier: Apache-2.0
 *
 * metrics.h — the Prometheus text exposition format (version 0.0.4) writer,
 * lock-free histograms and a bounded tenant label set (DESIGN.md §10).
 *
 * Data flow. Hot paths (shard threads, connection threads) only touch
 * atomics: mx_hist_observe_ns() and mx_counter_vec_add() are a few relaxed
 * fetch-adds, never a lock or an allocation. On a scrape, the admin thread
 * (net/admin.c) hands a fresh struct mx_buf to the renderer, which reads the
 * atomics and appends families and samples; the finished buffer becomes the
 * HTTP response body. There is no global registry: whoever owns a counter
 * writes it.
 *
 * Invariants.
 *  M1 A buffer never holds more than bytes_max bytes of content, and always
 *     holds whole lines: a call that would overflow, or that is invalid,
 *     leaves the content as it was before the call and records a sticky
 *     error (FMT_E_TOO_BIG, FMT_E_INVALID, FMT_E_STATE or -ENOMEM). Every
 *     later call is a no-op returning that error, so a renderer may write
 *     everything and check mx_buf_err() once.
 *  M2 Each family's # HELP and # TYPE lines are written once, and all of its
 *     samples follow them contiguously (the format requires grouping):
 *     mx_family() for the family being written is a no-op, for a family
 *     already closed it is FMT_E_STATE. A sample's name must be its
 *     family's name (counters and gauges) or the family name with _bucket,
 *     _sum or _count (histograms, written only by mx_hist_write*()).
 *  M3 Metric and label names are checked against the format's grammar;
 *     label values and HELP text are escaped (\\, \" and \n in values; \\
 *     and \n in HELP), so any byte string is a safe label value.
 *  M4 Integers are printed exactly (uint64 in decimal, no detour through
 *     double). A histogram's bucket bounds and _sum are kept in integer
 *     nanoseconds and printed as exact decimal seconds.
 *  M5 A histogram's buckets are counted non-cumulatively with relaxed
 *     atomics and summed at write time; _count is the +Inf bucket, so
 *     _count and the buckets always agree within one exposition (the _sum
 *     may lag by the observations in flight during the scrape).
 *  M6 A label set hands out slots 0..cap-1 once each and never takes them
 *     back; lookups of a known name are lock-free, only the first sight of
 *     a name takes the mutex. A name that does not fit (set full, longer
 *     than name_bytes_max, empty, or literally "other") gets MX_SLOT_OTHER,
 *     written as tenant="other", so label cardinality is at most cap + 1.
 *
 * Limits (each with a default, each configurable by the caller):
 *   mx_buf_init(bytes_initial, bytes_max)   16 KiB, 16 MiB
 *   mx_hist_init(bounds, n)                 n <= MX_HIST_BOUNDS_MAX (32)
 *   mx_labelset_init(cap, name_bytes_max)   cap <= MX_LABELSET_CAP_MAX,
 *                                           names <= FMT_TENANT_MAX (64)
 *   labels per sample                       MX_LABELS_MAX (8)
 */
#ifndef HODEI_NET_METRICS_H
#define HODEI_NET_METRICS_H

#include "format/common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MX_BUF_BYTES_INITIAL_DEFAULT (16u * 1024)
#define MX_BUF_BYTES_MAX_DEFAULT (16u * 1024 * 1024)
#define MX_LABELS_MAX 8        /* labels one sample may carry (le excluded) */
#define MX_HIST_BOUNDS_MAX 32  /* finite bucket bounds of one histogram */
#define MX_LABELSET_CAP_MAX (1u << 20)
#define MX_LABELSET_NAME_BYTES_DEFAULT 64
#define MX_SLOT_OTHER UINT32_MAX
#define MX_OTHER_LABEL "other"

/* ---- output buffer ---------------------------------------------------- */

struct mx_buf {
	char *data;        /* NUL-terminated after len; owned */
	size_t len;        /* content bytes (M1: len <= bytes_max) */
	size_t cap;        /* allocated bytes, > len */
	size_t bytes_max;
	int err;           /* sticky first error, 0 while healthy */
	/* Families written so far, as offsets of their names inside data
	 * (the name of a "# HELP name ..." line), for M2. */
	struct mx_family_ref {
		size_t off;
		uint32_t len;
		uint8_t type;
	} *families;
	uint32_t families_len, families_cap;
};

/* Sets b up empty. bytes_initial / bytes_max of 0 take the defaults; the
 * initial allocation is min(bytes_initial, bytes_max) + 1. Returns 0 or
 * -ENOMEM (b is then safe to pass to mx_buf_free()). */
int mx_buf_init(struct mx_buf *b, size_t bytes_initial, size_t bytes_max);
void mx_buf_free(struct mx_buf *b);
/* Empties b (content, families and error) and keeps its memory. */
void mx_buf_reset(struct mx_buf *b);
/* The sticky error (0, FMT_E_TOO_BIG, FMT_E_INVALID, FMT_E_STATE, -ENOMEM). */
static inline int mx_buf_err(const struct mx_buf *b) { return b->err; }
/* Hands the content over: returns the malloc'd, NUL-terminated data (the
 * caller frees it with free()) and its length in *len, and leaves b empty
 * with no memory (mx_buf_init() again to reuse it). NULL when b has an
 * error or no memory. */
char *mx_buf_take(struct mx_buf *b, size_t *len);

/* Raw appends for non-metric bodies (admin replies). Same M1 rules, but no
 * line structure: a failing call appends nothing. Return 0 or the error. */
int mx_buf_put(struct mx_buf *b, const void *data, size_t len);
int mx_buf_puts(struct mx_buf *b, const char *s);
__attribute__((format(printf, 2, 3))) int mx_buf_printf(struct mx_buf *b, const char *fmt, ...);

/* ---- families and samples --------------------------------------------- */

struct mx_label {
	const char *key;   /* [a-zA-Z_][a-zA-Z0-9_]*, not "__..." */
	const char *value; /* any NUL-terminated bytes; escaped on output */
};

/* Opens family `name` ([a-zA-Z_:][a-zA-Z0-9_:]*) of `type` "counter",
 * "gauge", "histogram" or "untyped" with its HELP text (escaped). A no-op
 * when name is the family being written (M2). Returns 0, FMT_E_INVALID (bad
 * name or type), FMT_E_STATE (family already closed, or re-opened with
 * another type), FMT_E_TOO_BIG or -ENOMEM. */
int mx_family(struct mx_buf *b, const char *name, const char *type, const char *help);

/* One sample line `name{k="v",...} value` of the open family. labels may be
 * NULL when n_labels is 0. Returns 0 or an error as above (FMT_E_STATE: no
 * open family, or name is not it; FMT_E_INVALID: bad label name, duplicate
 * key, n_labels > MX_LABELS_MAX). f64 prints the shortest decimal that
 * reads back to the same double, NaN as NaN and infinities as +Inf/-Inf. */
int mx_sample_u64(struct mx_buf *b, const char *name, const struct mx_label *labels,
		  size_t n_labels, uint64_t value);
int mx_sample_i64(struct mx_buf *b, const char *name, const struct mx_label *labels,
		  size_t n_labels, int64_t value);
int mx_sample_f64(struct mx_buf *b, const char *name, const struct mx_label *labels,
		  size_t n_labels, double value);

/* ---- histograms ------------------------------------------------------- */

struct mx_hist {
	/* buckets[i] counts observations v with bounds_ns[i-1] < v <=
	 * bounds_ns[i]; buckets[n_bounds] those above the last bound (+Inf). */
	_Atomic uint64_t buckets[MX_HIST_BOUNDS_MAX + 1];
	_Atomic uint64_t sum_ns;
	uint32_t n_bounds;
	uint64_t bounds_ns[MX_HIST_BOUNDS_MAX]; /* strictly increasing, > 0 */
};

/* Latency buckets from 100 µs to 10 s (Prometheus' defaults, extended down
 * for fsync and append latencies that are often below a millisecond). */
extern const double mx_duration_bounds_s[];
extern const uint32_t mx_duration_bounds_n;

/* Sets h up with finite upper bounds in seconds (strictly increasing, each
 * > 0 and <= 1e9 after rounding to whole nanoseconds) and zero counts.
 * bounds_s NULL takes mx_duration_bounds_s. Returns 0, FMT_E_INVALID or
 * FMT_E_TOO_BIG (n > MX_HIST_BOUNDS_MAX). Not thread-safe: initialise
 * before sharing. */
int mx_hist_init(struct mx_hist *h, const double *bounds_s, uint32_t n);

/* Records one duration. Safe from any thread at any time: relaxed atomics,
 * no locks. Give each busy thread its own histogram to avoid contended
 * cache lines, and merge them with mx_hist_write_sum(). */
void mx_hist_observe_ns(struct mx_hist *h, uint64_t ns);

/* Writes name_bucket{labels...,le="..."} (cumulative, ending with +Inf),
 * name_sum (seconds) and name_count for the open histogram family `name`.
 * The _sum variant adds up n >= 1 histograms that must have identical
 * bounds (asserted). labels must not use the key "le" (FMT_E_INVALID).
 * Returns 0 or an error as for mx_sample_u64(). */
int mx_hist_write(struct mx_buf *b, const char *name, const struct mx_label *labels,
		  size_t n_labels, const struct mx_hist *h);
int mx_hist_write_sum(struct mx_buf *b, const char *name, const struct mx_label *labels,
		      size_t n_labels, const struct mx_hist *const *hists, size_t n);

/* ---- bounded tenant label set ----------------------------------------- */

struct mx_labelset {
	pthread_mutex_t mu;         /* taken only to add a name */
	uint32_t cap;               /* slots 0..cap-1 */
	uint32_t name_bytes_max;
	uint32_t table_mask;        /* table size - 1; size >= 2 * cap, power of 2 */
	_Atomic uint32_t used;      /* slots handed out; names below are immutable */
	_Atomic uint32_t *table;    /* 0 empty, else slot + 1 (published release) */
	char *names;                /* cap records of name_bytes_max + 1 bytes */
	_Atomic uint64_t other_lookups; /* lookups answered MX_SLOT_OTHER */
};

/* cap in 1..MX_LABELSET_CAP_MAX; name_bytes_max 0 takes the default (64).
 * Memory is allocated here, once. Returns 0, FMT_E_INVALID or -ENOMEM. */
int mx_labelset_init(struct mx_labelset *ls, uint32_t cap, uint32_t name_bytes_max);
void mx_labelset_destroy(struct mx_labelset *ls);

/* The slot of name[0..len), added if new and room is left; MX_SLOT_OTHER
 * otherwise (M6). Any thread. Lock-free when the name is known; callers on
 * hot paths cache the slot next to their own per-tenant state. */
uint32_t mx_labelset_slot(struct mx_labelset *ls, const char *name, size_t len);

/* Slots handed out so far; slots below it have a stable name. */
static inline uint32_t mx_labelset_used(const struct mx_labelset *ls)
{
	return atomic_load_explicit(&((struct mx_labelset *)ls)->used, memory_order_acquire);
}

/* The label value of a slot: its name, or "other" for MX_SLOT_OTHER.
 * slot must be MX_SLOT_OTHER or below mx_labelset_used(). */
const char *mx_labelset_name(const struct mx_labelset *ls, uint32_t slot);

/* Per-slot counters (optional helper; callers may keep their own arrays
 * indexed by slot, with one extra entry for MX_SLOT_OTHER). */
struct mx_counter_vec {
	uint32_t n;          /* cap + 1; v[cap] is "other" */
	_Atomic uint64_t *v;
};

int mx_counter_vec_init(struct mx_counter_vec *c, const struct mx_labelset *ls);
void mx_counter_vec_destroy(struct mx_counter_vec *c);

static inline void mx_counter_vec_add(struct mx_counter_vec *c, uint32_t slot, uint64_t delta)
{
	uint32_t i = slot == MX_SLOT_OTHER ? c->n - 1 : slot;
	ASSERT(i < c->n);
	atomic_fetch_add_explicit(&c->v[i], delta, memory_order_relaxed);
}

/* Writes one sample of the open family `name` per slot handed out, with
 * the label key="<name>", then key="other" (always, 0 included).
 * Returns as mx_sample_u64(). */
int mx_counter_vec_write(struct mx_buf *b, const char *name, const char *key,
			 const struct mx_labelset *ls, const struct mx_counter_vec *c);

#endif
