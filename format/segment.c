// SPDX-License-Identifier: Apache-2.0
/*
 * segment.c — the sealed segment codec (docs/FORMAT.md §5).
 *
 *   [header 32 B][block 0: 17 chunks][block 1: 17 chunks]...[footer][trailer 32 B]
 *   footer (v1) = [meta 248 B][block entry 516 B] x blocks
 *   footer (v2) = the same, then [id index head 8 B][min/max event id 32 B] x blocks
 *                 [split-block Bloom filter of each block's ids] x blocks
 *   footer (v3) = the same, then the block summaries: [head 12 B][outcome pairs] x blocks
 *                 per string column [dictionary][pairs] x blocks, [actor filter] x blocks
 *
 * Writing: fmt_segment_build() checks the rows (one tenant, contiguous seq),
 * recomputes every event hash to check the chain it is given and to fill
 * the Merkle root, then encodes each block column by column. Each chunk
 * gets whichever applicable encoding is smallest before compression (ints:
 * PLAIN or zigzag DELTA; strings: PLAIN or DICT; the rest PLAIN), is
 * compressed as one zstd frame and appended; its position, lengths,
 * encoding and XXH3-64 go to the footer. The footer is fixed-width
 * little-endian, so a reader never has to trust a length it has not
 * bounded first.
 *
 * Why every bit is covered: the header is rebuilt from the footer and
 * compared byte for byte (it also carries its own XXH3 so it can be checked
 * alone); the footer's XXH3 is in the trailer; every trailer field is either
 * a constant, the footer checksum, or a length/offset that must agree with
 * the file size; and chunks tile [32, footer_offset) exactly, each with its
 * own checksum in the footer. A flipped bit anywhere therefore fails
 * fmt_segment_open() or the decode of the chunk that holds it.
 *
 * Reading never trusts the footer for a size before bounding it: the block
 * count follows from the footer length (which the file size bounds), a
 * chunk's raw length is capped at RAW_MAX and must match the zstd frame's
 * declared content size, and a block's row count must fit in its chunks'
 * raw lengths (at least one byte per row in every column), so the memory a
 * decode allocates is proportional to bytes that really decompressed.
 *
 * The event-id index (version 2, see segment.h for why it is in the
 * footer): the writer and the verifier compute it with the same function
 * (id_index_compute) from the ids of a block, so verify can demand byte
 * equality. A filter's size follows from its block's row count and the
 * footer's bits per row, so a reader never trusts a stored filter length,
 * and the filters must fill the footer exactly. Version-1 files have no
 * index: every probe answers "may hold", which makes search scan them.
 *
 * The block summaries (version 3): one builder (struct summary) makes the
 * section for the writer, rebuilds it from every decoded row for verify
 * (byte equality, so the writer's rules are enforced too), and rebuilds
 * one block's part with the segment's dictionaries preloaded for the
 * per-block check. Open walks the whole section once, bounding every
 * varint, so reading counts later needs no checks.
 */
#include "segment.h"

#include "hash.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>
#include <zstd_errors.h>

#define RAW_MAX (256u << 20)            /* a chunk's encoded bytes */
#define BLOCKS_MAX (1u << 16)           /* blocks per segment */
#define META_BYTES 248                  /* fixed part of the footer */
#define BLOCK_FIXED_BYTES 40            /* per block, before its chunk refs */
#define CHUNK_REF_BYTES 28
#define BLOCK_BYTES (BLOCK_FIXED_BYTES + FMT_COL_COUNT * CHUNK_REF_BYTES)
#define STR_COLS (FMT_F_STRING_COUNT + 1) /* the 9 fields, then details */
#define ZSTD_LEVEL_DEFAULT 3
#define VARINT_MAX_BYTES 10
#define ID_HEAD_BYTES 8                 /* v2: id filter kind, bits per row */
#define ID_RANGE_BYTES (2 * FMT_EVENT_ID_BYTES) /* v2, per block: min, max event id */
#define ID_FILTER_KIND_SBBF 1           /* split-block Bloom, XXH3-64 key, Parquet salts */
#define SBBF_WORDS 8
#define SUM_HEAD_BYTES 12               /* v3: summary kind, count keys max, actor filter bits */
#define SUM_KIND 1                      /* counts as varint pairs, actor split-block Bloom filters */

_Static_assert(FMT_COL_COUNT == 17, "the v1 footer has 17 chunk refs per block");
_Static_assert(BLOCK_BYTES == 516, "block entry size is part of the format");
_Static_assert(FMT_SEG_ROWS_MAX <= RAW_MAX, "a row count fits every raw-length bound");
_Static_assert((uint64_t)META_BYTES + (uint64_t)BLOCKS_MAX * BLOCK_BYTES < UINT32_MAX,
	       "the largest footer length fits in u32");
_Static_assert(FMT_SEG_HEADER_BYTES == 32 && FMT_SEG_TRAILER_BYTES == 32, "fixed by the format");
_Static_assert(FMT_SEG_ID_BUCKET_BYTES == SBBF_WORDS * 4, "a bucket is 8 u32 words");
/* The largest v2 footer: every block entry and id range, and filters of at
 * most BITS_MAX bits per row plus one bucket of rounding per block. */
_Static_assert((uint64_t)META_BYTES + ID_HEAD_BYTES +
		       (uint64_t)BLOCKS_MAX * (BLOCK_BYTES + ID_RANGE_BYTES + FMT_SEG_ID_BUCKET_BYTES) +
		       (uint64_t)FMT_SEG_ROWS_MAX * FMT_SEG_ID_FILTER_BITS_MAX / 8 <
	       UINT32_MAX,
	       "the largest v2 footer length fits in u32");

static const uint8_t header_magic[8] = { 'H', 'S', 'E', 'G', 0x0D, 0x0A, 0x1A, 0x0A };
static const uint8_t trailer_magic[8] = { 'H', 'S', 'E', 'G', 'E', 'N', 'D', 0x0A };

/* ---- column kinds ------------------------------------------------------ */

enum col_kind { KIND_INT, KIND_STR, KIND_ID, KIND_OUTCOME, KIND_ATTRS, KIND_CHAIN };

static enum col_kind col_kind(unsigned c)
{
	if (c <= FMT_COL_OCCURRED_AT)
		return KIND_INT;
	if (c == FMT_COL_EVENT_ID)
		return KIND_ID;
	if (c == FMT_COL_OUTCOME)
		return KIND_OUTCOME;
	if (c == FMT_COL_ATTRS)
		return KIND_ATTRS;
	if (c == FMT_COL_CHAIN)
		return KIND_CHAIN;
	ASSERT((c >= FMT_COL_STR_FIRST && c <= FMT_COL_STR_LAST) || c == FMT_COL_DETAILS);
	return KIND_STR;
}

/* Index of a string column in struct fmt_block's str[]. */
static unsigned str_slot(unsigned c)
{
	ASSERT(col_kind(c) == KIND_STR);
	return c == FMT_COL_DETAILS ? FMT_F_STRING_COUNT : c - FMT_COL_STR_FIRST;
}

/* Bytes per row of a fixed-width column, 0 for variable-width ones. */
static uint32_t fixed_width(unsigned c, uint8_t enc)
{
	switch (col_kind(c)) {
	case KIND_INT: return enc == FMT_ENC_PLAIN ? 8 : 0;
	case KIND_ID: return FMT_EVENT_ID_BYTES;
	case KIND_OUTCOME: return 1;
	case KIND_CHAIN: return FMT_HASH_BYTES;
	default: return 0;
	}
}

static bool encoding_allowed(unsigned c, uint8_t enc)
{
	switch (col_kind(c)) {
	case KIND_INT: return enc == FMT_ENC_PLAIN || enc == FMT_ENC_DELTA;
	case KIND_STR: return enc == FMT_ENC_PLAIN || enc == FMT_ENC_DICT;
	default: return enc == FMT_ENC_PLAIN;
	}
}

/* ---- varints and zigzag ------------------------------------------------ */


/* Zigzag on two's-complement bit patterns, all in unsigned arithmetic. */
static uint64_t zigzag(uint64_t d)
{
	return (d << 1) ^ ((d >> 63) ? UINT64_MAX : 0);
}

static uint64_t unzigzag(uint64_t u)
{
	return (u >> 1) ^ (0 - (u & 1));
}

struct rd {
	const uint8_t *p;
	size_t left;
};

/* LEB128, at most 10 bytes, minimal (no trailing 0x80/0x00 padding). */
static __attribute__((noinline)) int rd_varint_slow(struct rd *r, uint64_t *out)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < VARINT_MAX_BYTES; i++) {
		if (r->left == 0)
			return FMT_E_CORRUPT;
		uint8_t b = *r->p++;
		r->left--;
		if (i == VARINT_MAX_BYTES - 1 && b > 1)
			return FMT_E_CORRUPT;
		v |= (uint64_t)(b & 0x7F) << (7 * i);
		if (!(b & 0x80)) {
			if (b == 0 && i > 0)
				return FMT_E_CORRUPT;
			*out = v;
			return 0;
		}
	}
	return FMT_E_CORRUPT;
}

/* The one- and two-byte cases (dictionary codes, string lengths, small
 * deltas: nearly every varint of a segment), on a bare pointer so that
 * loops keep it in a register. Returns false when the slow path must
 * decide (longer, at the end of the input, or malformed). */
static inline bool varint_fast(const uint8_t **pp, const uint8_t *end, uint64_t *out)
{
	const uint8_t *p = *pp;
	if (end - p < 2)
		return false;
	if (p[0] < 0x80) {
		*out = p[0];
		*pp = p + 1;
		return true;
	}
	if (p[1] < 0x80 && p[1] != 0) {
		*out = (uint64_t)(p[0] & 0x7F) | (uint64_t)p[1] << 7;
		*pp = p + 2;
		return true;
	}
	return false;
}

static inline int rd_varint(struct rd *r, uint64_t *out)
{
	const uint8_t *p = r->p;
	if (!varint_fast(&p, r->p + r->left, out))
		return rd_varint_slow(r, out);
	r->left -= (size_t)(p - r->p);
	r->p = p;
	return 0;
}

static int rd_bytes(struct rd *r, uint64_t n, const uint8_t **out)
{
	if (n > r->left)
		return FMT_E_CORRUPT;
	*out = r->p;
	r->p += n;
	r->left -= (size_t)n;
	return 0;
}

/* ---- growable buffer (writer side) ------------------------------------- */

struct buf {
	uint8_t *p;
	size_t len, cap;
};

static int buf_reserve(struct buf *b, size_t more)
{
	if (b->cap - b->len >= more)
		return 0;
	if (more > SIZE_MAX / 4 - b->len)
		return FMT_E_NOMEM;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap - b->len < more)
		cap *= 2;
	uint8_t *p = realloc(b->p, cap);
	if (!p)
		return FMT_E_NOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

/* ---- the event-id index: min/max and split-block Bloom filter ---------- */

/* The eight odd constants of Parquet's split-block Bloom filter: probe i
 * sets bit (x * salt[i]) >> 27 of word i of the key's bucket. */
static const uint32_t sbbf_salt[SBBF_WORDS] = { 0x47b6137bu, 0x44974d91u, 0x8824ad5bu,
						 0xa2b7289du, 0x705495c7u, 0x2df1424bu,
						 0x9efc4947u, 0x5c6bfb31u };

/* Buckets of a block of `rows` rows at `bits` bits per row (at least 1). */
static uint32_t id_filter_buckets(uint32_t rows, uint32_t bits)
{
	uint64_t n = ((uint64_t)rows * bits + 8 * FMT_SEG_ID_BUCKET_BYTES - 1) /
		     (8 * FMT_SEG_ID_BUCKET_BYTES);
	ASSERT(n <= UINT32_MAX / FMT_SEG_ID_BUCKET_BYTES);
	return (uint32_t)FMT_MAX(n, 1);
}

static uint8_t *sbbf_bucket(const uint8_t *filter, uint32_t buckets, uint64_t key)
{
	uint64_t i = ((key >> 32) * buckets) >> 32; /* < buckets: multiply-shift */
	return (uint8_t *)filter + i * FMT_SEG_ID_BUCKET_BYTES;
}

static void sbbf_insert(uint8_t *filter, uint32_t buckets, uint64_t key)
{
	uint8_t *bucket = sbbf_bucket(filter, buckets, key);
	uint32_t x = (uint32_t)key;
	for (unsigned i = 0; i < SBBF_WORDS; i++) {
		uint8_t *w = bucket + 4 * i;
		fmt_put_u32(w, fmt_get_u32(w) | (1u << ((x * sbbf_salt[i]) >> 27)));
	}
}

static bool sbbf_may_hold(const uint8_t *filter, uint32_t buckets, uint64_t key)
{
	const uint8_t *bucket = sbbf_bucket(filter, buckets, key);
	uint32_t x = (uint32_t)key;
	for (unsigned i = 0; i < SBBF_WORDS; i++)
		if (!(fmt_get_u32(bucket + 4 * i) & (1u << ((x * sbbf_salt[i]) >> 27))))
			return false;
	return true;
}

uint64_t fmt_event_id_key(const uint8_t id[FMT_EVENT_ID_BYTES])
{
	return fmt_xxh3(id, FMT_EVENT_ID_BYTES);
}

/* The index of n >= 1 ids, the i-th at ids + i * stride: their bytewise
 * min and max, and the filter (filter_bytes, zeroed here). The writer and
 * the verifier both use this, so verify can demand byte equality. */
static void id_index_compute(const uint8_t *ids, size_t stride, uint32_t n,
			     uint8_t min[FMT_EVENT_ID_BYTES], uint8_t max[FMT_EVENT_ID_BYTES],
			     uint8_t *filter, uint32_t filter_bytes)
{
	ASSERT(n >= 1 && filter_bytes % FMT_SEG_ID_BUCKET_BYTES == 0 && filter_bytes > 0);
	uint32_t buckets = filter_bytes / FMT_SEG_ID_BUCKET_BYTES;
	memset(filter, 0, filter_bytes);
	memcpy(min, ids, FMT_EVENT_ID_BYTES);
	memcpy(max, ids, FMT_EVENT_ID_BYTES);
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *id = ids + (size_t)i * stride;
		if (memcmp(id, min, FMT_EVENT_ID_BYTES) < 0)
			memcpy(min, id, FMT_EVENT_ID_BYTES);
		if (memcmp(id, max, FMT_EVENT_ID_BYTES) > 0)
			memcpy(max, id, FMT_EVENT_ID_BYTES);
		sbbf_insert(filter, buckets, fmt_event_id_key(id));
	}
}

/* ---- block summaries (version 3): counts and actor filter --------------- */

/* The counted columns, in the order of the summary section. */
static const unsigned sum_col[FMT_SEG_COUNTED_COLS] = {
	FMT_COL_OUTCOME,
	FMT_COL_STR_FIRST + FMT_F_ACTION,
	FMT_COL_STR_FIRST + FMT_F_RESOURCE_TYPE,
};
#define SUM_DICTS (FMT_SEG_COUNTED_COLS - 1) /* the string columns, after outcome */
#define SUM_OUTCOMES (FMT_OUTCOME_DENIED + 1)
#define COL_ACTOR (FMT_COL_STR_FIRST + FMT_F_ACTOR_ID)

static int sum_index(unsigned col)
{
	for (int k = 0; k < FMT_SEG_COUNTED_COLS; k++)
		if (sum_col[k] == col)
			return k;
	return -1;
}

/* One block's rows as the summary builder sees them: the writer's events
 * or a decoded block (verify). */
struct sum_rows {
	uint32_t n;
	unsigned (*outcome)(const void *ctx, uint32_t i);
	struct fmt_str (*str)(const void *ctx, unsigned col, uint32_t i);
	const void *ctx;
};

/* A string column's segment dictionary: code -> value in order of first
 * appearance, found through an open-addressing table (code + 1, 0 free). */
struct sum_dict {
	uint32_t *slot;
	uint32_t mask;
	uint64_t *hash;     /* per code */
	uint32_t *key_off;  /* per code: its bytes in keys */
	uint32_t *key_len;
	struct buf keys;    /* varint length + bytes per code: the footer's form */
	uint32_t n;
	bool over;          /* more than keys_max values: the column is not counted */
	struct buf pairs;   /* per block: its pairs */
};

/* Builds the summary section block by block. The writer, verify (whole
 * segment) and the per-block check (dictionaries preloaded) all run this
 * one code, so the checks can demand byte equality. */
struct summary {
	uint32_t keys_max, actor_bits, rows_max;
	uint32_t dict_bytes_per_row; /* the writer's: FMT_SEG_COUNT_DICT_BYTES_DEFAULT */
	uint64_t rows;              /* of the blocks added */
	struct buf outcome;         /* per block: outcome pairs */
	struct sum_dict dict[SUM_DICTS];
	struct buf actor;           /* per block: varint buckets, then the filter */
	uint32_t *code_count;       /* per code; zero between uses */
	uint32_t *touched;          /* codes one block used */
	uint64_t *set;              /* one block's distinct actor keys: open addressing */
	uint8_t *set_used;
	uint64_t *distinct;
	uint32_t set_mask;
};

static void sum_free(struct summary *s)
{
	for (unsigned k = 0; k < SUM_DICTS; k++) {
		struct sum_dict *d = &s->dict[k];
		free(d->slot);
		free(d->hash);
		free(d->key_off);
		free(d->key_len);
		free(d->keys.p);
		free(d->pairs.p);
	}
	free(s->outcome.p);
	free(s->actor.p);
	free(s->code_count);
	free(s->touched);
	free(s->set);
	free(s->set_used);
	free(s->distinct);
}

static uint32_t pow2_at_least(uint64_t n)
{
	uint32_t size = 2;
	while (size < n)
		size *= 2;
	return size;
}

/* keys_max 1..FMT_SEG_COUNT_KEYS_MAX; rows: the segment's rows (no column
 * has more distinct values, so the tables need no more room). */
static int sum_init(struct summary *s, uint32_t keys_max, uint32_t actor_bits, uint32_t rows)
{
	ASSERT(keys_max >= 1 && keys_max <= FMT_SEG_COUNT_KEYS_MAX);
	ASSERT(actor_bits >= 1 && actor_bits <= FMT_SEG_ID_FILTER_BITS_MAX);
	memset(s, 0, sizeof(*s));
	s->keys_max = keys_max;
	s->actor_bits = actor_bits;
	uint32_t keys = FMT_MAX(FMT_MIN(keys_max, rows), 1);
	bool ok = true;
	for (unsigned k = 0; k < SUM_DICTS; k++) {
		struct sum_dict *d = &s->dict[k];
		uint32_t size = pow2_at_least(2 * (uint64_t)keys);
		d->mask = size - 1;
		d->slot = calloc(size, sizeof(*d->slot));
		d->hash = malloc((size_t)keys * sizeof(*d->hash));
		d->key_off = malloc((size_t)keys * sizeof(*d->key_off));
		d->key_len = malloc((size_t)keys * sizeof(*d->key_len));
		ok = ok && d->slot && d->hash && d->key_off && d->key_len;
	}
	s->code_count = calloc(FMT_MAX(keys, SUM_OUTCOMES), sizeof(*s->code_count));
	if (ok && s->code_count)
		return 0;
	sum_free(s);
	return FMT_E_NOMEM;
}

/* Room for a block of n rows in the per-block scratch (grown on demand,
 * so a reader allocates for blocks it has decoded, not for a footer's
 * claims). */
static int sum_reserve_rows(struct summary *s, uint32_t n)
{
	if (n <= s->rows_max)
		return 0;
	uint32_t set_size = pow2_at_least(2 * (uint64_t)n);
	free(s->touched);
	free(s->set);
	free(s->set_used);
	free(s->distinct);
	s->touched = malloc((size_t)n * sizeof(*s->touched));
	s->set = malloc((size_t)set_size * sizeof(*s->set));
	s->set_used = calloc(set_size, 1);
	s->distinct = malloc((size_t)n * sizeof(*s->distinct));
	s->set_mask = set_size - 1;
	s->rows_max = s->touched && s->set && s->set_used && s->distinct ? n : 0;
	return s->rows_max ? 0 : FMT_E_NOMEM;
}

/* The code of v in d, adding it when new: 0, or 1 when the column just
 * passed keys_max values (d->over), or FMT_E_NOMEM. */
static int dict_code(struct summary *s, struct sum_dict *d, struct fmt_str v, uint32_t *code)
{
	uint64_t h = fmt_xxh3(v.len ? v.ptr : "", v.len);
	for (uint32_t i = (uint32_t)h & d->mask, probe = 0; probe <= d->mask;
	     probe++, i = (i + 1) & d->mask) {
		uint32_t e = d->slot[i];
		if (e && d->hash[e - 1] == h && d->key_len[e - 1] == v.len &&
		    (v.len == 0 || memcmp(d->keys.p + d->key_off[e - 1], v.ptr, v.len) == 0)) {
			*code = e - 1;
			return 0;
		}
		if (e)
			continue;
		if (d->n == s->keys_max || d->n > d->mask / 2) {
			d->over = true;
			return 1;
		}
		int rc = buf_reserve(&d->keys, VARINT_MAX_BYTES + (size_t)v.len);
		if (rc)
			return rc;
		uint8_t *p = fmt_put_varint(d->keys.p + d->keys.len, v.len);
		if (v.len)
			memcpy(p, v.ptr, v.len);
		ASSERT(p + v.len - d->keys.p <= UINT32_MAX);
		d->key_off[d->n] = (uint32_t)(p - d->keys.p);
		d->key_len[d->n] = v.len;
		d->keys.len = (size_t)(p + v.len - d->keys.p);
		d->hash[d->n] = h;
		d->slot[i] = ++d->n;
		*code = d->n - 1;
		return 0;
	}
	ASSERT(0); /* the table is never more than half full */
	return FMT_E_NOMEM;
}

static int u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* Appends the block's pairs from code_count over the nt touched codes
 * (and zeroes those counts): varint n, then per code ascending varint
 * (code - previous code - 1, the first: code) and varint count. */
static int sum_put_pairs(struct summary *s, struct buf *out, uint32_t nt)
{
	int rc = buf_reserve(out, VARINT_MAX_BYTES * (1 + 2 * (size_t)nt));
	if (rc)
		return rc;
	qsort(s->touched, nt, sizeof(*s->touched), u32_cmp);
	uint8_t *p = fmt_put_varint(out->p + out->len, nt);
	for (uint32_t j = 0, next = 0; j < nt; j++) {
		uint32_t code = s->touched[j];
		p = fmt_put_varint(p, code - next);
		p = fmt_put_varint(p, s->code_count[code]);
		s->code_count[code] = 0;
		next = code + 1;
	}
	out->len = (size_t)(p - out->p);
	return 0;
}

static void sum_note(struct summary *s, uint32_t code, uint32_t *nt)
{
	if (s->code_count[code]++ == 0)
		s->touched[(*nt)++] = code;
}

/* Buckets of an actor filter over `distinct` actors (at least 1). */
static uint32_t actor_filter_buckets(uint32_t distinct, uint32_t bits)
{
	return id_filter_buckets(distinct, bits);
}

static int sum_actors(struct summary *s, const struct sum_rows *r)
{
	uint32_t nd = 0;
	for (uint32_t i = 0; i < r->n; i++) {
		struct fmt_str a = r->str(r->ctx, COL_ACTOR, i);
		uint64_t key = fmt_actor_key(a);
		uint32_t h = (uint32_t)key & s->set_mask;
		while (s->set_used[h] && s->set[h] != key)
			h = (h + 1) & s->set_mask;
		if (!s->set_used[h]) {
			s->set_used[h] = 1;
			s->set[h] = key;
			s->distinct[nd++] = key;
		}
	}
	uint32_t buckets = actor_filter_buckets(nd, s->actor_bits);
	size_t bytes = (size_t)buckets * FMT_SEG_ID_BUCKET_BYTES;
	int rc = buf_reserve(&s->actor, VARINT_MAX_BYTES + bytes);
	if (rc == 0) {
		uint8_t *p = fmt_put_varint(s->actor.p + s->actor.len, buckets);
		memset(p, 0, bytes);
		for (uint32_t j = 0; j < nd; j++)
			sbbf_insert(p, buckets, s->distinct[j]);
		s->actor.len = (size_t)(p + bytes - s->actor.p);
	}
	memset(s->set_used, 0, (size_t)s->set_mask + 1); /* 2 x rows_max bytes */
	return rc;
}

/* Adds one block (1..rows_max rows) to every part of the summary. */
static int sum_block(struct summary *s, const struct sum_rows *r)
{
	ASSERT(r->n >= 1);
	s->rows += r->n;
	int rc = sum_reserve_rows(s, r->n);
	if (rc)
		return rc;
	uint32_t nt = 0;
	for (uint32_t i = 0; i < r->n; i++) {
		unsigned o = r->outcome(r->ctx, i);
		ASSERT(o < SUM_OUTCOMES); /* checked by build_check and the decoder */
		sum_note(s, o, &nt);
	}
	rc = sum_put_pairs(s, &s->outcome, nt);
	for (unsigned k = 0; k < SUM_DICTS && rc == 0; k++) {
		struct sum_dict *d = &s->dict[k];
		nt = 0;
		for (uint32_t i = 0; i < r->n && !d->over && rc == 0; i++) {
			uint32_t code;
			if ((rc = dict_code(s, d, r->str(r->ctx, sum_col[1 + k], i), &code)) == 0)
				sum_note(s, code, &nt);
		}
		if (rc == 1) { /* over: the column is not counted; forget its pairs */
			for (uint32_t j = 0; j < nt; j++)
				s->code_count[s->touched[j]] = 0;
			d->pairs.len = 0;
			rc = 0;
		} else if (rc == 0 && !d->over) {
			rc = sum_put_pairs(s, &d->pairs, nt);
		}
	}
	return rc ? rc : sum_actors(s, r);
}

/* The section (FORMAT.md §5.5.2): head, outcome pairs, per string column
 * its dictionary and pairs, the actor filters. Returns its bytes in out
 * (the caller frees out->p). */
static int sum_finish(struct summary *s, struct buf *out, const struct fmt_segment *stored)
{
	/* Which columns a writer leaves out is its choice (count_keys_max
	 * aside): a rebuild for verify follows the stored segment's. */
	for (unsigned k = 0; k < SUM_DICTS; k++)
		if (stored ? stored->count_keys[1 + k] == 0
			   : (uint64_t)s->dict[k].keys.len > (uint64_t)s->dict_bytes_per_row * s->rows)
			s->dict[k].over = true;
	size_t len = SUM_HEAD_BYTES + s->outcome.len + s->actor.len;
	for (unsigned k = 0; k < SUM_DICTS; k++)
		len += VARINT_MAX_BYTES +
		       (s->dict[k].over ? 0 : s->dict[k].keys.len + s->dict[k].pairs.len);
	int rc = buf_reserve(out, len);
	if (rc)
		return rc;
	uint8_t *p = out->p + out->len;
	fmt_put_u32(p, SUM_KIND);
	fmt_put_u32(p + 4, s->keys_max);
	fmt_put_u32(p + 8, s->actor_bits);
	p += SUM_HEAD_BYTES;
	if (s->outcome.len)
		memcpy(p, s->outcome.p, s->outcome.len);
	p += s->outcome.len;
	for (unsigned k = 0; k < SUM_DICTS; k++) {
		const struct sum_dict *d = &s->dict[k];
		p = fmt_put_varint(p, d->over ? 0 : d->n);
		if (d->over || !d->n)
			continue;
		memcpy(p, d->keys.p, d->keys.len);
		p += d->keys.len;
		memcpy(p, d->pairs.p, d->pairs.len);
		p += d->pairs.len;
	}
	if (s->actor.len)
		memcpy(p, s->actor.p, s->actor.len);
	p += s->actor.len;
	out->len = (size_t)(p - out->p);
	return 0;
}

uint64_t fmt_actor_key(struct fmt_str actor_id)
{
	return fmt_xxh3(actor_id.len ? actor_id.ptr : "", actor_id.len);
}

/* ---- fixed-width structures -------------------------------------------- */

static void put_header(uint8_t out[FMT_SEG_HEADER_BYTES], const struct fmt_segment_meta *m)
{
	ASSERT(m->version >= FMT_SEG_VERSION_MIN && m->version <= FMT_SEG_VERSION);
	memcpy(out, header_magic, 8);
	fmt_put_u32(out + 8, m->version);
	fmt_put_u32(out + 12, m->shard);
	fmt_put_u64(out + 16, m->segment_id);
	fmt_put_u64(out + 24, fmt_xxh3(out, 24));
}

static void put_meta(uint8_t *p, const struct fmt_segment_meta *m)
{
	size_t tlen = strlen(m->tenant);
	ASSERT(tlen >= 1 && tlen <= FMT_TENANT_MAX);
	memset(p, 0, META_BYTES);
	fmt_put_u32(p, (uint32_t)tlen);
	memcpy(p + 4, m->tenant, tlen);
	fmt_put_u32(p + 68, m->shard);
	fmt_put_u64(p + 72, m->segment_id);
	fmt_put_u32(p + 80, m->row_count);
	fmt_put_u32(p + 84, m->block_rows);
	fmt_put_u32(p + 88, m->block_count);
	fmt_put_u32(p + 92, FMT_COL_COUNT);
	fmt_put_u64(p + 96, m->first_seq);
	fmt_put_u64(p + 104, m->last_seq);
	fmt_put_u64(p + 112, (uint64_t)m->min_occurred_ns);
	fmt_put_u64(p + 120, (uint64_t)m->max_occurred_ns);
	fmt_put_u64(p + 128, (uint64_t)m->min_received_ns);
	fmt_put_u64(p + 136, (uint64_t)m->max_received_ns);
	fmt_put_u64(p + 144, (uint64_t)m->created_ns);
	memcpy(p + 152, m->chain_before, FMT_HASH_BYTES);
	memcpy(p + 184, m->chain_after, FMT_HASH_BYTES);
	memcpy(p + 216, m->merkle_root, FMT_HASH_BYTES);
}

static void put_block_ref(uint8_t *p, const struct fmt_block_ref *r)
{
	fmt_put_u32(p, r->first_row);
	fmt_put_u32(p + 4, r->row_count);
	fmt_put_u64(p + 8, r->first_seq);
	fmt_put_u64(p + 16, r->last_seq);
	fmt_put_u64(p + 24, (uint64_t)r->min_occurred_ns);
	fmt_put_u64(p + 32, (uint64_t)r->max_occurred_ns);
	for (unsigned c = 0; c < FMT_COL_COUNT; c++) {
		uint8_t *q = p + BLOCK_FIXED_BYTES + c * CHUNK_REF_BYTES;
		fmt_put_u64(q, r->chunk[c].offset);
		fmt_put_u32(q + 8, r->chunk[c].stored_len);
		fmt_put_u32(q + 12, r->chunk[c].raw_len);
		fmt_put_u32(q + 16, r->chunk[c].encoding);
		fmt_put_u64(q + 20, r->chunk[c].checksum);
	}
}

static void put_trailer(uint8_t *p, uint32_t version, uint64_t footer_offset, uint32_t footer_len,
			uint64_t footer_checksum)
{
	fmt_put_u64(p, footer_offset);
	fmt_put_u32(p + 8, footer_len);
	fmt_put_u32(p + 12, version);
	fmt_put_u64(p + 16, footer_checksum);
	memcpy(p + 24, trailer_magic, 8);
}

/* ======================================================================= */
/* Writing                                                                  */
/* ======================================================================= */

/* Dictionary scratch, sized once for the largest block. */
struct dict {
	uint32_t *slot;  /* open addressing: dict index + 1, 0 when free */
	uint32_t *first; /* dict index -> row (in block) of first occurrence */
	uint32_t *idx;   /* row (in block) -> dict index */
	uint32_t mask;   /* table size - 1; table size >= 2 * rows */
	uint32_t count;
};

struct builder {
	const struct fmt_event *rows;
	const uint8_t (*chains)[FMT_HASH_BYTES];
	const uint8_t (*event_hashes)[FMT_HASH_BYTES]; /* optional, see segment.h */
	struct fmt_segment_meta meta;
	struct fmt_block_ref *blocks;
	struct buf img;  /* the segment image being built */
	struct buf raw;  /* one chunk's encoded bytes */
	struct buf filters; /* v2: every block's id filter, in block order */
	struct summary sum; /* v3: the block summaries */
	bool sum_ready;
	struct buf sum_bytes;
	struct dict dict;
	ZSTD_CCtx *cctx;
	int level;
};

static uint64_t row_int(const struct fmt_event *ev, unsigned c)
{
	switch (c) {
	case FMT_COL_SEQ: return ev->seq;
	case FMT_COL_RECEIVED_AT: return (uint64_t)ev->received_at_ns;
	case FMT_COL_OCCURRED_AT: return (uint64_t)ev->occurred_at_ns;
	default: ASSERT(0);
	}
	return 0;
}

static struct fmt_str row_str(const struct fmt_event *ev, unsigned c)
{
	if (c == FMT_COL_DETAILS)
		return ev->details_json;
	ASSERT(c >= FMT_COL_STR_FIRST && c <= FMT_COL_STR_LAST);
	return ev->str[c - FMT_COL_STR_FIRST];
}

static uint8_t *put_str(uint8_t *p, struct fmt_str s)
{
	p = fmt_put_varint(p, s.len);
	if (s.len)
		memcpy(p, s.ptr, s.len);
	return p + s.len;
}

static int dict_init(struct dict *d, uint32_t max_rows)
{
	uint32_t size = 2;
	while (size < 2 * (uint64_t)max_rows)
		size *= 2;
	d->mask = size - 1;
	d->slot = malloc((size_t)size * sizeof(uint32_t));
	d->first = malloc((size_t)FMT_MAX(max_rows, 1) * sizeof(uint32_t));
	d->idx = malloc((size_t)FMT_MAX(max_rows, 1) * sizeof(uint32_t));
	return d->slot && d->first && d->idx ? 0 : FMT_E_NOMEM;
}

static void dict_free(struct dict *d)
{
	free(d->slot);
	free(d->first);
	free(d->idx);
}

/* Finds the distinct values of column c over rows[0, n) in order of first
 * appearance; returns the size of the DICT encoding. */
static uint64_t dict_build(struct dict *d, const struct fmt_event *rows, uint32_t n, unsigned c)
{
	ASSERT((uint64_t)n * 2 <= (uint64_t)d->mask + 1);
	memset(d->slot, 0, ((size_t)d->mask + 1) * sizeof(uint32_t));
	d->count = 0;
	uint64_t len = 0;
	for (uint32_t i = 0; i < n; i++) {
		struct fmt_str s = row_str(&rows[i], c);
		uint32_t h = (uint32_t)fmt_xxh3(s.ptr, s.len) & d->mask;
		uint32_t e = 0;
		for (uint32_t probe = 0; probe <= d->mask; probe++, h = (h + 1) & d->mask) {
			e = d->slot[h];
			if (e == 0) {
				d->first[d->count] = i;
				e = d->slot[h] = ++d->count;
				len += fmt_varint_size(s.len) + s.len;
				break;
			}
			if (fmt_str_eq(row_str(&rows[d->first[e - 1]], c), s))
				break;
		}
		ASSERT(e != 0);
		d->idx[i] = e - 1;
		len += fmt_varint_size(e - 1);
	}
	return len + fmt_varint_size(d->count);
}

/* Reserves the raw buffer for an encoding of exactly size bytes. */
static int raw_begin(struct builder *w, uint64_t size, uint8_t **p)
{
	if (size > RAW_MAX)
		return FMT_E_TOO_BIG;
	w->raw.len = 0;
	int rc = buf_reserve(&w->raw, FMT_MAX((size_t)size, 1));
	*p = w->raw.p;
	return rc;
}

static void raw_end(struct builder *w, const uint8_t *end, uint64_t size)
{
	ASSERT((uint64_t)(end - w->raw.p) == size);
	w->raw.len = (size_t)size;
}

static int enc_int(struct builder *w, const struct fmt_event *rows, uint32_t n, unsigned c,
		   uint8_t *enc)
{
	uint64_t delta_len = 0, prev = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t v = row_int(&rows[i], c);
		delta_len += fmt_varint_size(zigzag(v - prev));
		prev = v;
	}
	uint64_t plain_len = 8ull * n;
	*enc = delta_len < plain_len ? FMT_ENC_DELTA : FMT_ENC_PLAIN;
	uint64_t size = FMT_MIN(delta_len, plain_len);
	uint8_t *p;
	int rc = raw_begin(w, size, &p);
	if (rc)
		return rc;
	prev = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t v = row_int(&rows[i], c);
		if (*enc == FMT_ENC_PLAIN) {
			fmt_put_u64(p, v);
			p += 8;
		} else {
			p = fmt_put_varint(p, zigzag(v - prev));
		}
		prev = v;
	}
	raw_end(w, p, size);
	return 0;
}

static int enc_str(struct builder *w, const struct fmt_event *rows, uint32_t n, unsigned c,
		   uint8_t *enc)
{
	uint64_t plain_len = 0;
	for (uint32_t i = 0; i < n; i++) {
		struct fmt_str s = row_str(&rows[i], c);
		plain_len += fmt_varint_size(s.len) + s.len;
	}
	struct dict *d = &w->dict;
	uint64_t dict_len = dict_build(d, rows, n, c);
	*enc = dict_len < plain_len ? FMT_ENC_DICT : FMT_ENC_PLAIN;
	uint64_t size = FMT_MIN(dict_len, plain_len);
	uint8_t *p;
	int rc = raw_begin(w, size, &p);
	if (rc)
		return rc;
	if (*enc == FMT_ENC_PLAIN) {
		for (uint32_t i = 0; i < n; i++)
			p = put_str(p, row_str(&rows[i], c));
	} else {
		p = fmt_put_varint(p, d->count);
		for (uint32_t k = 0; k < d->count; k++)
			p = put_str(p, row_str(&rows[d->first[k]], c));
		for (uint32_t i = 0; i < n; i++)
			p = fmt_put_varint(p, d->idx[i]);
	}
	raw_end(w, p, size);
	return 0;
}

static int enc_attrs(struct builder *w, const struct fmt_event *rows, uint32_t n, uint8_t *enc)
{
	uint64_t size = 0;
	for (uint32_t i = 0; i < n; i++) {
		size += fmt_varint_size(rows[i].attr_count);
		for (uint32_t k = 0; k < rows[i].attr_count; k++) {
			const struct fmt_attr *a = &rows[i].attrs[k];
			size += fmt_varint_size(a->key.len) + a->key.len;
			size += fmt_varint_size(a->value.len) + a->value.len;
		}
	}
	*enc = FMT_ENC_PLAIN;
	uint8_t *p;
	int rc = raw_begin(w, size, &p);
	if (rc)
		return rc;
	for (uint32_t i = 0; i < n; i++) {
		p = fmt_put_varint(p, rows[i].attr_count);
		for (uint32_t k = 0; k < rows[i].attr_count; k++) {
			p = put_str(p, rows[i].attrs[k].key);
			p = put_str(p, rows[i].attrs[k].value);
		}
	}
	raw_end(w, p, size);
	return 0;
}

/* event_id, outcome and chain: PLAIN, fixed width. */
static int enc_fixed(struct builder *w, uint32_t first, uint32_t n, unsigned c, uint8_t *enc)
{
	uint32_t width = fixed_width(c, FMT_ENC_PLAIN);
	uint64_t size = (uint64_t)width * n;
	*enc = FMT_ENC_PLAIN;
	uint8_t *p;
	int rc = raw_begin(w, size, &p);
	if (rc)
		return rc;
	for (uint32_t i = 0; i < n; i++) {
		const struct fmt_event *ev = &w->rows[first + i];
		if (c == FMT_COL_EVENT_ID)
			memcpy(p, ev->event_id, FMT_EVENT_ID_BYTES);
		else if (c == FMT_COL_OUTCOME)
			*p = (uint8_t)ev->outcome;
		else
			memcpy(p, w->chains[first + i], FMT_HASH_BYTES);
		p += width;
	}
	raw_end(w, p, size);
	return 0;
}

static int enc_column(struct builder *w, uint32_t first, uint32_t n, unsigned c, uint8_t *enc)
{
	const struct fmt_event *rows = w->rows + first;
	switch (col_kind(c)) {
	case KIND_INT: return enc_int(w, rows, n, c, enc);
	case KIND_STR: return enc_str(w, rows, n, c, enc);
	case KIND_ATTRS: return enc_attrs(w, rows, n, enc);
	default: return enc_fixed(w, first, n, c, enc);
	}
}

/* Event ids and chain values are random bytes that no zstd level shrinks
 * (16.0 and 32.0 bytes a row at every level from 3 to -10, on the
 * benchmark's events); the fastest levels find that out in a fifth of
 * level 1's time. */
#define ZSTD_LEVEL_RANDOM (-10)

static int chunk_level(const struct builder *w, unsigned c)
{
	if (c == FMT_COL_EVENT_ID || c == FMT_COL_CHAIN)
		return FMT_MIN(w->level, ZSTD_LEVEL_RANDOM);
	return w->level;
}

static int write_chunk(struct builder *w, struct fmt_chunk_ref *ref, uint32_t first, uint32_t n,
		       unsigned c)
{
	int rc = enc_column(w, first, n, c, &ref->encoding);
	if (rc)
		return rc;
	ASSERT(encoding_allowed(c, ref->encoding));
	size_t bound = ZSTD_compressBound(w->raw.len);
	if ((rc = buf_reserve(&w->img, bound)))
		return rc;
	uint8_t *dst = w->img.p + w->img.len;
	size_t z = ZSTD_compressCCtx(w->cctx, dst, bound, w->raw.p, w->raw.len, chunk_level(w, c));
	if (ZSTD_isError(z))
		return FMT_E_NOMEM; /* the destination is large enough: only allocation fails */
	ASSERT(z >= 4 && z <= bound && z <= UINT32_MAX);
	ref->offset = w->img.len;
	ref->stored_len = (uint32_t)z;
	ref->raw_len = (uint32_t)w->raw.len;
	ref->checksum = fmt_xxh3(dst, z);
	w->img.len += z;
	return 0;
}

/* v2: the block's min/max event id and its filter, appended to w->filters. */
static int write_id_index(struct builder *w, struct fmt_block_ref *ref)
{
	uint32_t bytes = id_filter_buckets(ref->row_count, w->meta.id_filter_bits) *
			 FMT_SEG_ID_BUCKET_BYTES;
	int rc = buf_reserve(&w->filters, bytes);
	if (rc)
		return rc;
	ASSERT(w->filters.len + bytes <= UINT32_MAX);
	ref->id_filter_at = (uint32_t)w->filters.len;
	ref->id_filter_bytes = bytes;
	id_index_compute(w->rows[ref->first_row].event_id, sizeof(struct fmt_event), ref->row_count,
			 ref->min_event_id, ref->max_event_id, w->filters.p + w->filters.len, bytes);
	w->filters.len += bytes;
	return 0;
}

static struct fmt_str event_str(const void *ctx, unsigned col, uint32_t i)
{
	return row_str((const struct fmt_event *)ctx + i, col);
}

static unsigned event_outcome(const void *ctx, uint32_t i)
{
	return ((const struct fmt_event *)ctx)[i].outcome;
}

static int write_block(struct builder *w, uint32_t b)
{
	struct fmt_block_ref *ref = &w->blocks[b];
	uint32_t first = b * w->meta.block_rows;
	uint32_t n = FMT_MIN(w->meta.block_rows, w->meta.row_count - first);
	ASSERT(n >= 1);
	ref->first_row = first;
	ref->row_count = n;
	ref->first_seq = w->meta.first_seq + first;
	ref->last_seq = ref->first_seq + n - 1;
	ref->min_occurred_ns = ref->max_occurred_ns = w->rows[first].occurred_at_ns;
	for (uint32_t i = 1; i < n; i++) {
		int64_t t = w->rows[first + i].occurred_at_ns;
		ref->min_occurred_ns = FMT_MIN(ref->min_occurred_ns, t);
		ref->max_occurred_ns = FMT_MAX(ref->max_occurred_ns, t);
	}
	for (unsigned c = 0; c < FMT_COL_COUNT; c++) {
		int rc = write_chunk(w, &ref->chunk[c], first, n, c);
		if (rc)
			return rc;
	}
	int rc = w->meta.version >= 2 ? write_id_index(w, ref) : 0;
	if (rc == 0 && w->meta.version >= 3) {
		struct sum_rows r = { n, event_outcome, event_str, w->rows + first };
		rc = sum_block(&w->sum, &r);
	}
	return rc;
}

/* v2: the event-id index after the block entries (FORMAT.md §5.5). */
static void put_id_index(uint8_t *p, const struct builder *w)
{
	uint32_t n = w->meta.block_count;
	fmt_put_u32(p, ID_FILTER_KIND_SBBF);
	fmt_put_u32(p + 4, w->meta.id_filter_bits);
	p += ID_HEAD_BYTES;
	for (uint32_t b = 0; b < n; b++, p += ID_RANGE_BYTES) {
		memcpy(p, w->blocks[b].min_event_id, FMT_EVENT_ID_BYTES);
		memcpy(p + FMT_EVENT_ID_BYTES, w->blocks[b].max_event_id, FMT_EVENT_ID_BYTES);
	}
	if (w->filters.len)
		memcpy(p, w->filters.p, w->filters.len);
}

/* Appends footer and trailer, then fills in the header. */
static int write_tail(struct builder *w)
{
	uint64_t footer_offset = w->img.len;
	uint64_t len = META_BYTES + (uint64_t)w->meta.block_count * BLOCK_BYTES;
	if (w->meta.version >= 2)
		len += ID_HEAD_BYTES + (uint64_t)w->meta.block_count * ID_RANGE_BYTES + w->filters.len;
	int rc = w->meta.version >= 3 ? sum_finish(&w->sum, &w->sum_bytes, NULL) : 0;
	if (rc)
		return rc;
	len += w->sum_bytes.len;
	/* Up to v2 the static assertions bound the footer; v3's dictionaries
	 * hold whatever strings the events have. */
	if (len > UINT32_MAX - FMT_SEG_HEADER_BYTES - FMT_SEG_TRAILER_BYTES)
		return FMT_E_TOO_BIG;
	uint32_t footer_len = (uint32_t)len;
	if ((rc = buf_reserve(&w->img, (size_t)footer_len + FMT_SEG_TRAILER_BYTES)))
		return rc;
	uint8_t *f = w->img.p + footer_offset;
	put_meta(f, &w->meta);
	for (uint32_t b = 0; b < w->meta.block_count; b++)
		put_block_ref(f + META_BYTES + (size_t)b * BLOCK_BYTES, &w->blocks[b]);
	if (w->meta.version >= 2)
		put_id_index(f + META_BYTES + (size_t)w->meta.block_count * BLOCK_BYTES, w);
	if (w->sum_bytes.len)
		memcpy(f + footer_len - w->sum_bytes.len, w->sum_bytes.p, w->sum_bytes.len);
	put_trailer(f + footer_len, w->meta.version, footer_offset, footer_len,
		    fmt_xxh3(f, footer_len));
	w->img.len += (size_t)footer_len + FMT_SEG_TRAILER_BYTES;
	put_header(w->img.p, &w->meta);
	return 0;
}

static int build_check(const struct fmt_segment_build_args *args, const struct fmt_event *rows,
		       uint32_t n, struct fmt_str *tenant)
{
	ASSERT(args && args->chain_before);
	uint32_t block_rows = args->block_rows ? args->block_rows : FMT_SEG_BLOCK_ROWS_DEFAULT;
	if (n > FMT_SEG_ROWS_MAX || block_rows > FMT_SEG_ROWS_MAX)
		return FMT_E_INVALID;
	if (n / block_rows + (n % block_rows != 0) > BLOCKS_MAX)
		return FMT_E_INVALID;
	if (args->zstd_level < ZSTD_minCLevel() || args->zstd_level > ZSTD_maxCLevel())
		return FMT_E_INVALID;
	if (args->version && (args->version < FMT_SEG_VERSION_MIN || args->version > FMT_SEG_VERSION))
		return FMT_E_INVALID;
	if (args->id_filter_bits > FMT_SEG_ID_FILTER_BITS_MAX ||
	    args->actor_filter_bits > FMT_SEG_ID_FILTER_BITS_MAX ||
	    args->count_keys_max > FMT_SEG_COUNT_KEYS_MAX ||
	    args->count_dict_bytes_per_row > FMT_SEG_COUNT_DICT_BYTES_MAX)
		return FMT_E_INVALID;
	*tenant = args->tenant.len ? args->tenant : (n ? rows[0].tenant : args->tenant);
	if (!fmt_tenant_valid(*tenant))
		return FMT_E_INVALID;
	if (n && rows[0].seq > UINT64_MAX - (n - 1))
		return FMT_E_INVALID;
	for (uint32_t i = 0; i < n; i++) {
		const struct fmt_event *ev = &rows[i];
		if (!fmt_str_eq(ev->tenant, *tenant) || ev->seq != rows[0].seq + i)
			return FMT_E_INVALID;
		if (ev->outcome > FMT_OUTCOME_DENIED || ev->attr_count > FMT_ATTRS_HARD_MAX)
			return FMT_E_INVALID;
		if (ev->attr_count && !ev->attrs)
			return FMT_E_INVALID;
	}
	return 0;
}

static void build_meta(struct builder *w, const struct fmt_segment_build_args *args,
		       struct fmt_str tenant, uint32_t n)
{
	struct fmt_segment_meta *m = &w->meta;
	m->version = args->version ? args->version : FMT_SEG_VERSION;
	if (m->version >= 2)
		m->id_filter_bits = args->id_filter_bits ? args->id_filter_bits
							 : FMT_SEG_ID_FILTER_BITS_DEFAULT;
	if (m->version >= 3) {
		m->count_keys_max = args->count_keys_max ? args->count_keys_max
							 : FMT_SEG_COUNT_KEYS_DEFAULT;
		m->actor_filter_bits = args->actor_filter_bits ? args->actor_filter_bits
							       : FMT_SEG_ACTOR_FILTER_BITS_DEFAULT;
	}
	memcpy(m->tenant, tenant.ptr, tenant.len);
	m->tenant[tenant.len] = 0;
	m->segment_id = args->segment_id;
	m->shard = args->shard;
	m->row_count = n;
	m->block_rows = args->block_rows ? args->block_rows : FMT_SEG_BLOCK_ROWS_DEFAULT;
	m->block_count = n / m->block_rows + (n % m->block_rows != 0);
	m->created_ns = args->created_ns;
	memcpy(m->chain_before, args->chain_before, FMT_HASH_BYTES);
	if (n == 0)
		return;
	m->first_seq = w->rows[0].seq;
	m->last_seq = w->rows[0].seq + n - 1;
	m->min_occurred_ns = m->max_occurred_ns = w->rows[0].occurred_at_ns;
	m->min_received_ns = m->max_received_ns = w->rows[0].received_at_ns;
	for (uint32_t i = 1; i < n; i++) {
		const struct fmt_event *ev = &w->rows[i];
		m->min_occurred_ns = FMT_MIN(m->min_occurred_ns, ev->occurred_at_ns);
		m->max_occurred_ns = FMT_MAX(m->max_occurred_ns, ev->occurred_at_ns);
		m->min_received_ns = FMT_MIN(m->min_received_ns, ev->received_at_ns);
		m->max_received_ns = FMT_MAX(m->max_received_ns, ev->received_at_ns);
	}
}

/* Recomputes every event hash: checks the given chain (a mismatch is the
 * caller's bug) and fills chain_after and the Merkle root. */
static int build_hashes(struct builder *w)
{
	struct fmt_segment_meta *m = &w->meta;
	uint32_t n = m->row_count;
	uint8_t (*hashes)[FMT_HASH_BYTES] = malloc((size_t)FMT_MAX(n, 1) * FMT_HASH_BYTES);
	uint8_t *scratch = NULL;
	size_t cap = 0;
	int rc = 0;
	if (!hashes)
		return FMT_E_NOMEM;
	memcpy(m->chain_after, m->chain_before, FMT_HASH_BYTES);
	for (uint32_t i = 0; i < n; i++) {
#ifdef NDEBUG
		if (w->event_hashes) {
			memcpy(hashes[i], w->event_hashes[i], FMT_HASH_BYTES);
			fmt_chain_next(m->chain_after, hashes[i], m->chain_after);
			ASSERT(memcmp(m->chain_after, w->chains[i], FMT_HASH_BYTES) == 0);
			continue;
		}
#endif
		size_t need = fmt_event_canon_size(&w->rows[i]);
		if (need > cap) {
			uint8_t *p = realloc(scratch, need);
			if (!p) {
				rc = FMT_E_NOMEM;
				goto fail;
			}
			scratch = p;
			cap = need;
		}
		int64_t len = fmt_event_canon_encode(&w->rows[i], scratch, cap);
		ASSERT(len > 0);
		fmt_sha256(scratch, (size_t)len, hashes[i]);
		fmt_chain_next(m->chain_after, hashes[i], m->chain_after);
		ASSERT(memcmp(m->chain_after, w->chains[i], FMT_HASH_BYTES) == 0);
		DEBUG_ASSERT(!w->event_hashes ||
			     memcmp(hashes[i], w->event_hashes[i], FMT_HASH_BYTES) == 0);
	}
	fmt_merkle_root((const uint8_t (*)[FMT_HASH_BYTES])hashes, n, m->merkle_root);
fail:
	free(scratch);
	free(hashes);
	return rc;
}

/* What was written must open: assert the on-disk invariants before the
 * image leaves the builder, with the same code that checks them on read. */
static void self_check(const uint8_t *img, size_t len, const struct fmt_segment_meta *m)
{
	struct fmt_segment *seg = NULL;
	int rc = fmt_segment_open_buf(img, len, &seg);
	ASSERT(rc == 0);
	ASSERT(seg->file_size == len && memcmp(&seg->meta, m, sizeof(*m)) == 0);
	fmt_segment_close(seg);
}

int fmt_segment_build(const struct fmt_segment_build_args *args, const struct fmt_event *rows,
		      const uint8_t (*chains)[FMT_HASH_BYTES], uint32_t n, uint8_t **out,
		      size_t *out_len)
{
	struct builder w;
	struct fmt_str tenant;
	memset(&w, 0, sizeof(w));
	*out = NULL;
	*out_len = 0;
	int rc = build_check(args, rows, n, &tenant);
	if (rc)
		return rc;
	ASSERT(n == 0 || (rows && chains));
	w.rows = rows;
	w.chains = chains;
	w.event_hashes = args->event_hashes;
	w.level = args->zstd_level ? args->zstd_level : ZSTD_LEVEL_DEFAULT;
	build_meta(&w, args, tenant, n);
	if ((rc = build_hashes(&w)))
		goto fail;
	w.blocks = calloc(FMT_MAX(w.meta.block_count, 1), sizeof(*w.blocks));
	w.cctx = ZSTD_createCCtx();
	if (!w.blocks || !w.cctx || (rc = dict_init(&w.dict, FMT_MIN(n, w.meta.block_rows)))) {
		rc = FMT_E_NOMEM;
		goto fail;
	}
	if (w.meta.version >= 3 &&
	    (rc = sum_init(&w.sum, w.meta.count_keys_max, w.meta.actor_filter_bits, n)))
		goto fail;
	w.sum_ready = w.meta.version >= 3;
	w.sum.dict_bytes_per_row = args->count_dict_bytes_per_row ? args->count_dict_bytes_per_row
								  : FMT_SEG_COUNT_DICT_BYTES_DEFAULT;
	if ((rc = buf_reserve(&w.img, FMT_SEG_HEADER_BYTES)))
		goto fail;
	w.img.len = FMT_SEG_HEADER_BYTES;
	for (uint32_t b = 0; b < w.meta.block_count; b++)
		if ((rc = write_block(&w, b)))
			goto fail;
	if ((rc = write_tail(&w)))
		goto fail;
	self_check(w.img.p, w.img.len, &w.meta);
	*out = w.img.p;
	*out_len = w.img.len;
	w.img.p = NULL;
fail:
	free(w.img.p);
	free(w.raw.p);
	free(w.filters.p);
	free(w.sum_bytes.p);
	if (w.sum_ready)
		sum_free(&w.sum);
	free(w.blocks);
	dict_free(&w.dict);
	ZSTD_freeCCtx(w.cctx);
	return rc;
}

/* ======================================================================= */
/* Opening                                                                  */
/* ======================================================================= */

int fmt_segment_trailer(const uint8_t trailer[FMT_SEG_TRAILER_BYTES], uint64_t file_size,
			uint64_t *footer_offset, uint32_t *footer_len)
{
	if (file_size < FMT_SEG_HEADER_BYTES + META_BYTES + FMT_SEG_TRAILER_BYTES)
		return FMT_E_TRUNCATED;
	if (memcmp(trailer + 24, trailer_magic, 8) != 0)
		return FMT_E_CORRUPT;
	uint32_t version = fmt_get_u32(trailer + 12);
	if (version < FMT_SEG_VERSION_MIN || version > FMT_SEG_VERSION)
		return FMT_E_VERSION;
	uint64_t off = fmt_get_u64(trailer);
	uint32_t len = fmt_get_u32(trailer + 8);
	/* Version 2's length depends on the blocks' rows: open checks it. */
	if (version == 1 && (len < META_BYTES || (len - META_BYTES) % BLOCK_BYTES != 0 ||
			     (len - META_BYTES) / BLOCK_BYTES > BLOCKS_MAX))
		return FMT_E_CORRUPT;
	if (version >= 2 && len < META_BYTES + ID_HEAD_BYTES + (version >= 3 ? SUM_HEAD_BYTES : 0))
		return FMT_E_CORRUPT;
	if (len > file_size - FMT_SEG_HEADER_BYTES - FMT_SEG_TRAILER_BYTES ||
	    off != file_size - FMT_SEG_TRAILER_BYTES - len)
		return FMT_E_CORRUPT;
	*footer_offset = off;
	*footer_len = len;
	return 0;
}

static int check_header(const uint8_t *h)
{
	if (memcmp(h, header_magic, 8) != 0)
		return FMT_E_CORRUPT;
	uint32_t version = fmt_get_u32(h + 8);
	if (version < FMT_SEG_VERSION_MIN || version > FMT_SEG_VERSION)
		return FMT_E_VERSION;
	if (fmt_get_u64(h + 24) != fmt_xxh3(h, 24))
		return FMT_E_CORRUPT;
	return 0;
}

static int parse_tenant(const uint8_t *p, char tenant[FMT_TENANT_MAX + 1])
{
	uint32_t len = fmt_get_u32(p);
	if (len < 1 || len > FMT_TENANT_MAX)
		return FMT_E_CORRUPT;
	struct fmt_str t = { (const char *)p + 4, len };
	if (!fmt_tenant_valid(t))
		return FMT_E_CORRUPT;
	for (uint32_t i = len; i < FMT_TENANT_MAX; i++)
		if (p[4 + i] != 0)
			return FMT_E_CORRUPT;
	memcpy(tenant, t.ptr, len);
	tenant[len] = 0;
	return 0;
}

static bool meta_consistent(const struct fmt_segment_meta *m)
{
	if (m->block_rows < 1 || m->block_rows > FMT_SEG_ROWS_MAX || m->row_count > FMT_SEG_ROWS_MAX)
		return false;
	if (m->row_count == 0)
		return m->block_count == 0 && m->first_seq == 0 && m->last_seq == 0 &&
		       m->min_occurred_ns == 0 && m->max_occurred_ns == 0 &&
		       m->min_received_ns == 0 && m->max_received_ns == 0 &&
		       memcmp(m->chain_before, m->chain_after, FMT_HASH_BYTES) == 0;
	return m->block_count >= 1 && m->block_count <= m->row_count &&
	       m->last_seq >= m->first_seq && m->last_seq - m->first_seq == m->row_count - 1 &&
	       m->min_occurred_ns <= m->max_occurred_ns &&
	       m->min_received_ns <= m->max_received_ns;
}

/* The footer bytes the block entries (and, v2, the id ranges and the
 * index head) take, before any filter. */
static uint64_t footer_fixed_len(uint32_t version, uint64_t blocks)
{
	if (version == 1)
		return META_BYTES + blocks * BLOCK_BYTES;
	return META_BYTES + blocks * (BLOCK_BYTES + ID_RANGE_BYTES) + ID_HEAD_BYTES;
}

static int parse_meta(const uint8_t *p, uint32_t footer_len, uint32_t version,
		      struct fmt_segment_meta *m)
{
	m->version = version;
	int rc = parse_tenant(p, m->tenant);
	if (rc)
		return rc;
	m->shard = fmt_get_u32(p + 68);
	m->segment_id = fmt_get_u64(p + 72);
	m->row_count = fmt_get_u32(p + 80);
	m->block_rows = fmt_get_u32(p + 84);
	m->block_count = fmt_get_u32(p + 88);
	if (fmt_get_u32(p + 92) != FMT_COL_COUNT)
		return FMT_E_CORRUPT;
	m->first_seq = fmt_get_u64(p + 96);
	m->last_seq = fmt_get_u64(p + 104);
	m->min_occurred_ns = (int64_t)fmt_get_u64(p + 112);
	m->max_occurred_ns = (int64_t)fmt_get_u64(p + 120);
	m->min_received_ns = (int64_t)fmt_get_u64(p + 128);
	m->max_received_ns = (int64_t)fmt_get_u64(p + 136);
	m->created_ns = (int64_t)fmt_get_u64(p + 144);
	memcpy(m->chain_before, p + 152, FMT_HASH_BYTES);
	memcpy(m->chain_after, p + 184, FMT_HASH_BYTES);
	memcpy(m->merkle_root, p + 216, FMT_HASH_BYTES);
	uint64_t fixed = footer_fixed_len(version, m->block_count);
	/* v1: exact. v2: the filters follow; open_id_index checks their sum. */
	if (version == 1 ? fixed != footer_len : fixed > footer_len || m->block_count > BLOCKS_MAX)
		return FMT_E_CORRUPT;
	if (version >= 2) {
		const uint8_t *head = p + META_BYTES + (size_t)m->block_count * BLOCK_BYTES;
		m->id_filter_bits = fmt_get_u32(head + 4);
		if (fmt_get_u32(head) != ID_FILTER_KIND_SBBF || m->id_filter_bits < 1 ||
		    m->id_filter_bits > FMT_SEG_ID_FILTER_BITS_MAX)
			return FMT_E_CORRUPT;
	}
	return meta_consistent(m) ? 0 : FMT_E_CORRUPT;
}

static void parse_block_ref(const uint8_t *p, struct fmt_block_ref *r)
{
	r->first_row = fmt_get_u32(p);
	r->row_count = fmt_get_u32(p + 4);
	r->first_seq = fmt_get_u64(p + 8);
	r->last_seq = fmt_get_u64(p + 16);
	r->min_occurred_ns = (int64_t)fmt_get_u64(p + 24);
	r->max_occurred_ns = (int64_t)fmt_get_u64(p + 32);
	for (unsigned c = 0; c < FMT_COL_COUNT; c++) {
		const uint8_t *q = p + BLOCK_FIXED_BYTES + c * CHUNK_REF_BYTES;
		uint32_t enc = fmt_get_u32(q + 16);
		r->chunk[c].offset = fmt_get_u64(q);
		r->chunk[c].stored_len = fmt_get_u32(q + 8);
		r->chunk[c].raw_len = fmt_get_u32(q + 12);
		/* Out-of-range values map to 0, which no column allows. */
		r->chunk[c].encoding = enc <= 0xFF ? (uint8_t)enc : 0;
		r->chunk[c].checksum = fmt_get_u64(q + 20);
	}
}

/* A chunk must start where the previous one ended, use an encoding its
 * column allows, and have lengths consistent with the block's rows. */
static bool chunk_ok(const struct fmt_chunk_ref *k, unsigned c, uint32_t rows, uint64_t at,
		     uint64_t footer_offset)
{
	if (k->offset != at || !encoding_allowed(c, k->encoding))
		return false;
	if (k->raw_len > RAW_MAX || k->stored_len < 4 ||
	    k->stored_len > ZSTD_compressBound(k->raw_len))
		return false;
	if (k->stored_len > footer_offset - at)
		return false;
	uint32_t width = fixed_width(c, k->encoding);
	if (width)
		return k->raw_len == (uint64_t)width * rows;
	/* Variable-width encodings take at least one byte per row (DICT one
	 * more for its count), so rows never exceed the decompressed bytes. */
	return k->raw_len >= (uint64_t)rows + (k->encoding == FMT_ENC_DICT);
}

struct open_walk {
	uint64_t row;    /* next expected first_row */
	uint64_t offset; /* next expected chunk offset */
	int64_t min_occurred, max_occurred;
};

static bool block_ok(const struct fmt_segment *seg, const struct fmt_block_ref *r,
		     struct open_walk *walk)
{
	const struct fmt_segment_meta *m = &seg->meta;
	if (r->first_row != walk->row || r->row_count < 1 || r->row_count > m->block_rows ||
	    r->row_count > m->row_count - walk->row)
		return false;
	if (r->first_seq != m->first_seq + r->first_row ||
	    r->last_seq != r->first_seq + (r->row_count - 1))
		return false;
	if (r->min_occurred_ns > r->max_occurred_ns || r->min_occurred_ns < m->min_occurred_ns ||
	    r->max_occurred_ns > m->max_occurred_ns)
		return false;
	for (unsigned c = 0; c < FMT_COL_COUNT; c++) {
		if (!chunk_ok(&r->chunk[c], c, r->row_count, walk->offset, seg->footer_offset))
			return false;
		walk->offset += r->chunk[c].stored_len;
	}
	walk->row += r->row_count;
	walk->min_occurred = FMT_MIN(walk->min_occurred, r->min_occurred_ns);
	walk->max_occurred = FMT_MAX(walk->max_occurred, r->max_occurred_ns);
	return true;
}

static int open_blocks(struct fmt_segment *seg, const uint8_t *footer)
{
	const struct fmt_segment_meta *m = &seg->meta;
	struct open_walk walk = { 0, FMT_SEG_HEADER_BYTES, INT64_MAX, INT64_MIN };
	for (uint32_t b = 0; b < m->block_count; b++) {
		struct fmt_block_ref *r = &seg->blocks[b];
		parse_block_ref(footer + META_BYTES + (size_t)b * BLOCK_BYTES, r);
		if (!block_ok(seg, r, &walk))
			return FMT_E_CORRUPT;
	}
	if (walk.row != m->row_count || walk.offset != seg->footer_offset)
		return FMT_E_CORRUPT;
	if (m->row_count &&
	    (walk.min_occurred != m->min_occurred_ns || walk.max_occurred != m->max_occurred_ns))
		return FMT_E_CORRUPT;
	return 0;
}

/* v3: one block's pairs of a column with `keys` codes: 1..min(keys, rows)
 * pairs, codes strictly ascending and below keys, counts >= 1 summing to
 * rows. Adds each count to total[code]. */
static int open_pairs(struct rd *r, uint32_t keys, uint32_t rows, uint32_t *total)
{
	uint64_t n, gap, count, sum = 0, next = 0;
	int rc = rd_varint(r, &n);
	if (rc || n < 1 || n > FMT_MIN(keys, rows))
		return FMT_E_CORRUPT;
	for (uint64_t j = 0; j < n; j++) {
		if (rd_varint(r, &gap) || rd_varint(r, &count) || gap >= keys - next || count < 1 ||
		    count > rows - sum)
			return FMT_E_CORRUPT;
		total[next + gap] += (uint32_t)count; /* segment rows < 2^32 */
		next += gap + 1;
		sum += count;
	}
	return sum == rows ? 0 : FMT_E_CORRUPT;
}

/* v3: a string column's dictionary (keys distinct values, at most the
 * rows and the writer's bound), views into seg->summary. */
static int open_dict(struct fmt_segment *seg, struct rd *r, unsigned k)
{
	uint64_t keys, len;
	const uint8_t *bytes;
	if (rd_varint(r, &keys) || keys > seg->meta.count_keys_max || keys > seg->meta.row_count)
		return FMT_E_CORRUPT;
	if (keys == 0)
		return 0;
	seg->count_key[k] = malloc((size_t)keys * sizeof(struct fmt_str));
	if (!seg->count_key[k])
		return FMT_E_NOMEM;
	for (uint64_t e = 0; e < keys; e++) {
		if (rd_varint(r, &len) || rd_bytes(r, len, &bytes))
			return FMT_E_CORRUPT;
		seg->count_key[k][e] = (struct fmt_str){ (const char *)bytes, (uint32_t)len };
	}
	seg->count_keys[k] = (uint32_t)keys;
	return 0;
}

/* v3: the summary section fills the rest of the footer (FORMAT.md
 * §5.5.2). It is copied out and walked once, checking every count and
 * bound, so that reading it later needs no checks. */
static int open_summary(struct fmt_segment *seg, const uint8_t *p, uint64_t len)
{
	struct fmt_segment_meta *m = &seg->meta;
	if (len < SUM_HEAD_BYTES || fmt_get_u32(p) != SUM_KIND)
		return FMT_E_CORRUPT;
	m->count_keys_max = fmt_get_u32(p + 4);
	m->actor_filter_bits = fmt_get_u32(p + 8);
	if (m->count_keys_max < 1 || m->count_keys_max > FMT_SEG_COUNT_KEYS_MAX ||
	    m->actor_filter_bits < 1 || m->actor_filter_bits > FMT_SEG_ID_FILTER_BITS_MAX)
		return FMT_E_CORRUPT;
	if (!(seg->summary = malloc((size_t)len)))
		return FMT_E_NOMEM;
	memcpy(seg->summary, p, (size_t)len);
	seg->summary_len = (uint32_t)len; /* <= footer_len */
	struct rd r = { seg->summary + SUM_HEAD_BYTES, (size_t)len - SUM_HEAD_BYTES };
	int rc = 0;
	seg->count_keys[0] = SUM_OUTCOMES;
	for (unsigned k = 0; k < FMT_SEG_COUNTED_COLS && rc == 0; k++) {
		if (k > 0 && (rc = open_dict(seg, &r, k)) != 0)
			break;
		if (!seg->count_keys[k])
			continue;
		if (!(seg->count_total[k] = calloc(seg->count_keys[k], sizeof(uint32_t)))) {
			rc = FMT_E_NOMEM;
			break;
		}
		for (uint32_t b = 0; b < m->block_count && rc == 0; b++) {
			seg->blocks[b].counts_at[k] = (uint32_t)(r.p - seg->summary);
			rc = open_pairs(&r, seg->count_keys[k], seg->blocks[b].row_count,
					seg->count_total[k]);
		}
	}
	for (uint32_t b = 0; b < m->block_count && rc == 0; b++) {
		struct fmt_block_ref *ref = &seg->blocks[b];
		uint64_t buckets;
		const uint8_t *filter;
		ref->actor_at = (uint32_t)(r.p - seg->summary);
		if (rd_varint(&r, &buckets) || buckets < 1 ||
		    buckets > actor_filter_buckets(ref->row_count, m->actor_filter_bits) ||
		    rd_bytes(&r, buckets * FMT_SEG_ID_BUCKET_BYTES, &filter)) {
			rc = FMT_E_CORRUPT;
			break;
		}
		ref->actor_filter_at = (uint32_t)(filter - seg->summary);
		ref->actor_filter_bytes = (uint32_t)(buckets * FMT_SEG_ID_BUCKET_BYTES);
	}
	if (rc == 0 && r.left != 0)
		rc = FMT_E_CORRUPT;
	return rc;
}

/* v2: reads each block's id range, sizes its filter from its (already
 * checked) row count, requires the filters to fill the rest of the footer
 * exactly, and copies them out (the caller may free the footer bytes). */
static int open_id_index(struct fmt_segment *seg, const uint8_t *footer)
{
	const struct fmt_segment_meta *m = &seg->meta;
	const uint8_t *p = footer + META_BYTES + (size_t)m->block_count * BLOCK_BYTES + ID_HEAD_BYTES;
	uint64_t total = 0;
	for (uint32_t b = 0; b < m->block_count; b++, p += ID_RANGE_BYTES) {
		struct fmt_block_ref *r = &seg->blocks[b];
		memcpy(r->min_event_id, p, FMT_EVENT_ID_BYTES);
		memcpy(r->max_event_id, p + FMT_EVENT_ID_BYTES, FMT_EVENT_ID_BYTES);
		if (memcmp(r->min_event_id, r->max_event_id, FMT_EVENT_ID_BYTES) > 0)
			return FMT_E_CORRUPT;
		r->id_filter_bytes = id_filter_buckets(r->row_count, m->id_filter_bits) *
				     FMT_SEG_ID_BUCKET_BYTES;
		r->id_filter_at = (uint32_t)total; /* < footer_len: checked below */
		total += r->id_filter_bytes;
	}
	/* v2: the filters end the footer; v3: the summary section follows. */
	uint64_t end = footer_fixed_len(m->version, m->block_count) + total;
	if (m->version == 2 ? end != seg->footer_len : end > seg->footer_len)
		return FMT_E_CORRUPT;
	seg->id_filters = malloc(total ? (size_t)total : 1);
	if (!seg->id_filters)
		return FMT_E_NOMEM;
	if (total)
		memcpy(seg->id_filters, p, (size_t)total);
	if (m->version >= 3)
		return open_summary(seg, footer + end, seg->footer_len - end);
	return 0;
}

int fmt_segment_open(const uint8_t *header, const uint8_t *footer, uint32_t footer_len,
		     const uint8_t trailer[FMT_SEG_TRAILER_BYTES], uint64_t file_size,
		     struct fmt_segment **out)
{
	uint64_t t_offset;
	uint32_t t_len;
	uint8_t expect[FMT_SEG_HEADER_BYTES];
	struct fmt_segment *seg = NULL;
	*out = NULL;
	int rc = check_header(header);
	if (rc || (rc = fmt_segment_trailer(trailer, file_size, &t_offset, &t_len)))
		return rc;
	if (t_len != footer_len || fmt_get_u64(trailer + 16) != fmt_xxh3(footer, footer_len))
		return FMT_E_CORRUPT;
	uint32_t version = fmt_get_u32(trailer + 12); /* in range: checked by the trailer */
	seg = calloc(1, sizeof(*seg));
	if (!seg)
		return FMT_E_NOMEM;
	seg->file_size = file_size;
	seg->footer_offset = t_offset;
	seg->footer_len = footer_len;
	if ((rc = parse_meta(footer, footer_len, version, &seg->meta)))
		goto fail;
	seg->blocks = calloc(FMT_MAX(seg->meta.block_count, 1), sizeof(*seg->blocks));
	if (!seg->blocks) {
		rc = FMT_E_NOMEM;
		goto fail;
	}
	if ((rc = open_blocks(seg, footer)))
		goto fail;
	if (version >= 2 && (rc = open_id_index(seg, footer)))
		goto fail;
	put_header(expect, &seg->meta);
	if (memcmp(expect, header, FMT_SEG_HEADER_BYTES) != 0) {
		rc = FMT_E_CORRUPT;
		goto fail;
	}
	*out = seg;
	return 0;
fail:
	fmt_segment_close(seg);
	return rc;
}

int fmt_segment_open_buf(const uint8_t *buf, size_t len, struct fmt_segment **out)
{
	uint64_t footer_offset;
	uint32_t footer_len;
	*out = NULL;
	if (len < FMT_SEG_HEADER_BYTES + FMT_SEG_TRAILER_BYTES)
		return FMT_E_TRUNCATED;
	const uint8_t *trailer = buf + len - FMT_SEG_TRAILER_BYTES;
	int rc = fmt_segment_trailer(trailer, len, &footer_offset, &footer_len);
	if (rc)
		return rc;
	return fmt_segment_open(buf, buf + footer_offset, footer_len, trailer, len, out);
}

void fmt_segment_close(struct fmt_segment *seg)
{
	if (!seg)
		return;
	free(seg->blocks);
	free(seg->id_filters);
	free(seg->summary);
	for (unsigned k = 0; k < FMT_SEG_COUNTED_COLS; k++) {
		free(seg->count_key[k]);
		free(seg->count_total[k]);
	}
	free(seg);
}

size_t fmt_segment_mem_bytes(const struct fmt_segment *seg)
{
	size_t n = sizeof(*seg) + (size_t)FMT_MAX(seg->meta.block_count, 1) * sizeof(*seg->blocks) +
		   seg->summary_len;
	for (uint32_t b = 0; b < seg->meta.block_count; b++)
		n += seg->blocks[b].id_filter_bytes;
	for (unsigned k = 0; k < FMT_SEG_COUNTED_COLS; k++)
		n += (size_t)seg->count_keys[k] * (sizeof(struct fmt_str) + sizeof(uint32_t));
	return n;
}

bool fmt_segment_has_id_index(const struct fmt_segment *seg)
{
	return seg->meta.version >= 2;
}

bool fmt_block_may_hold_id(const struct fmt_segment *seg, uint32_t b,
			   const uint8_t id[FMT_EVENT_ID_BYTES], uint64_t key)
{
	ASSERT(b < seg->meta.block_count);
	DEBUG_ASSERT(key == fmt_event_id_key(id));
	if (!fmt_segment_has_id_index(seg))
		return true;
	const struct fmt_block_ref *r = &seg->blocks[b];
	if (memcmp(id, r->min_event_id, FMT_EVENT_ID_BYTES) < 0 ||
	    memcmp(id, r->max_event_id, FMT_EVENT_ID_BYTES) > 0)
		return false;
	return sbbf_may_hold(seg->id_filters + r->id_filter_at,
			     r->id_filter_bytes / FMT_SEG_ID_BUCKET_BYTES, key);
}

uint32_t fmt_segment_count_keys(const struct fmt_segment *seg, unsigned col)
{
	int k = sum_index(col);
	return k < 0 || seg->meta.version < 3 ? 0 : seg->count_keys[k];
}

struct fmt_str fmt_segment_count_key(const struct fmt_segment *seg, unsigned col, uint32_t k)
{
	int i = sum_index(col);
	ASSERT(i > 0 && k < seg->count_keys[i]);
	return seg->count_key[i][k];
}

uint32_t fmt_block_counts(const struct fmt_segment *seg, uint32_t b, unsigned col,
			  uint32_t *codes, uint32_t *counts)
{
	int k = sum_index(col);
	ASSERT(k >= 0 && seg->count_keys[k] && b < seg->meta.block_count);
	uint32_t at = seg->blocks[b].counts_at[k];
	struct rd r = { seg->summary + at, seg->summary_len - at };
	uint64_t n, gap, count;
	int rc = rd_varint(&r, &n); /* every value was checked on open */
	for (uint32_t j = 0, next = 0; j < n && rc == 0; j++) {
		rc = rd_varint(&r, &gap) | rd_varint(&r, &count);
		next += (uint32_t)gap;
		codes[j] = next++;
		counts[j] = (uint32_t)count;
	}
	ASSERT(rc == 0);
	return (uint32_t)n;
}

const uint32_t *fmt_segment_count_totals(const struct fmt_segment *seg, unsigned col)
{
	int k = sum_index(col);
	ASSERT(k >= 0 && seg->meta.version >= 3 && seg->count_keys[k]);
	return seg->count_total[k];
}

bool fmt_block_may_hold_actor(const struct fmt_segment *seg, uint32_t b, uint64_t key)
{
	ASSERT(b < seg->meta.block_count);
	if (seg->meta.version < 3)
		return true;
	const struct fmt_block_ref *r = &seg->blocks[b];
	return sbbf_may_hold(seg->summary + r->actor_filter_at,
			     r->actor_filter_bytes / FMT_SEG_ID_BUCKET_BYTES, key);
}

/* ======================================================================= */
/* Decoding blocks                                                          */
/* ======================================================================= */

/* A string inside a column's decompressed bytes. */
struct sv {
	uint32_t off, len;
};

/* A string column is kept as its chunk stored it: a PLAIN chunk as one
 * view per row; a DICT chunk as its dictionary (dict_count views) and one
 * code per row, so that a scan can work on codes (count per code, match a
 * filter once per entry) and a row's value costs one more load. */
struct fmt_block {
	uint32_t rows;
	uint32_t mask;                  /* columns decoded */
	uint64_t *ints[3];              /* seq, received_at, occurred_at */
	uint8_t *raw[FMT_COL_COUNT];    /* decompressed bytes of the other columns */
	struct sv *str[STR_COLS];       /* views into raw[]: per row, or the dictionary */
	uint32_t *codes[STR_COLS];      /* DICT chunks: per row, an index into str[] */
	uint32_t dict_count[STR_COLS];  /* DICT chunks: entries of str[] */
	uint32_t *attr_first;           /* rows + 1: row i's attrs are [first[i], first[i+1]) */
	struct sv *attr_kv;             /* key, value per attribute */
	uint64_t mem_bytes;             /* heap bytes of all the above: fmt_block_mem_bytes() */
};

/* Verifies the checksum, then inflates the single zstd frame of exactly
 * raw_len bytes into a new buffer. */
static int fetch_chunk(ZSTD_DCtx *dctx, const struct fmt_chunk_ref *k, const uint8_t *bytes,
		       uint8_t **raw)
{
	*raw = NULL;
	if (fmt_xxh3(bytes, k->stored_len) != k->checksum)
		return FMT_E_CORRUPT;
	ASSERT(k->stored_len >= 4 && k->raw_len <= RAW_MAX);
	if (fmt_get_u32(bytes) != ZSTD_MAGICNUMBER ||
	    ZSTD_findFrameCompressedSize(bytes, k->stored_len) != k->stored_len ||
	    ZSTD_getFrameContentSize(bytes, k->stored_len) != k->raw_len)
		return FMT_E_CORRUPT;
	uint8_t *p = malloc(FMT_MAX(k->raw_len, 1));
	if (!p)
		return FMT_E_NOMEM;
	size_t z = ZSTD_decompressDCtx(dctx, p, k->raw_len, bytes, k->stored_len);
	if (ZSTD_isError(z) || z != k->raw_len) {
		free(p);
		if (ZSTD_isError(z) && ZSTD_getErrorCode(z) == ZSTD_error_memory_allocation)
			return FMT_E_NOMEM;
		return FMT_E_CORRUPT;
	}
	*raw = p;
	return 0;
}

static int check_ints(const struct fmt_segment *seg, const struct fmt_block_ref *r, unsigned c,
		      const uint64_t *v)
{
	int64_t lo = INT64_MAX, hi = INT64_MIN;
	for (uint32_t i = 0; i < r->row_count; i++) {
		if (c == FMT_COL_SEQ) {
			if (v[i] != r->first_seq + i)
				return FMT_E_CORRUPT;
			continue;
		}
		lo = FMT_MIN(lo, (int64_t)v[i]);
		hi = FMT_MAX(hi, (int64_t)v[i]);
	}
	if (c == FMT_COL_OCCURRED_AT && (lo != r->min_occurred_ns || hi != r->max_occurred_ns))
		return FMT_E_CORRUPT;
	if (c == FMT_COL_RECEIVED_AT &&
	    (lo < seg->meta.min_received_ns || hi > seg->meta.max_received_ns))
		return FMT_E_CORRUPT;
	return 0;
}

static int dec_int(const struct fmt_segment *seg, const struct fmt_block_ref *r, unsigned c,
		   const uint8_t *raw, uint64_t *out)
{
	const struct fmt_chunk_ref *k = &r->chunk[c];
	struct rd rd = { raw, k->raw_len };
	uint64_t prev = 0;
	for (uint32_t i = 0; i < r->row_count; i++) {
		const uint8_t *p;
		uint64_t zz;
		int rc;
		if (k->encoding == FMT_ENC_PLAIN) {
			if ((rc = rd_bytes(&rd, 8, &p)))
				return rc;
			prev = fmt_get_u64(p);
		} else {
			if ((rc = rd_varint(&rd, &zz)))
				return rc;
			prev += unzigzag(zz);
		}
		out[i] = prev;
	}
	if (rd.left != 0)
		return FMT_E_CORRUPT;
	return check_ints(seg, r, c, out);
}

static int rd_sv(struct rd *rd, const uint8_t *raw, struct sv *out)
{
	uint64_t len;
	const uint8_t *p;
	int rc = rd_varint(rd, &len);
	if (rc || (rc = rd_bytes(rd, len, &p)))
		return rc;
	out->off = (uint32_t)(p - raw);
	out->len = (uint32_t)len;
	return 0;
}

/* A DICT chunk: the dictionary into *dict (count entries, 1 <= count <=
 * rows), then one code per row into codes[]. */
static int dec_dict(struct rd *rd, const uint8_t *raw, uint32_t rows, struct sv **dict,
		    uint32_t *dict_count, uint32_t *codes)
{
	uint64_t count, idx;
	int rc = rd_varint(rd, &count);
	if (rc)
		return rc;
	if (count < 1 || count > rows)
		return FMT_E_CORRUPT;
	*dict = malloc((size_t)count * sizeof(**dict));
	if (!*dict)
		return FMT_E_NOMEM;
	*dict_count = (uint32_t)count;
	for (uint64_t k = 0; k < count && rc == 0; k++)
		rc = rd_sv(rd, raw, &(*dict)[k]);
	if (rc)
		return rc;
	/* The codes: the hot loop of a scan over a dictionary column. */
	const uint8_t *p = rd->p, *end = rd->p + rd->left;
	for (uint32_t i = 0; i < rows; i++) {
		if (!varint_fast(&p, end, &idx)) {
			struct rd slow = { p, (size_t)(end - p) };
			if ((rc = rd_varint_slow(&slow, &idx)) != 0)
				return rc;
			p = slow.p;
		}
		if (idx >= count)
			return FMT_E_CORRUPT;
		codes[i] = (uint32_t)idx;
	}
	rd->left = (size_t)(end - p);
	rd->p = p;
	return 0;
}

static int dec_str(const struct fmt_chunk_ref *k, struct fmt_block *blk, unsigned slot,
		   const uint8_t *raw)
{
	struct rd rd = { raw, k->raw_len };
	int rc = 0;
	if (k->encoding == FMT_ENC_DICT) {
		blk->codes[slot] = malloc((size_t)FMT_MAX(blk->rows, 1u) * sizeof(uint32_t));
		if (!blk->codes[slot])
			return FMT_E_NOMEM;
		rc = dec_dict(&rd, raw, blk->rows, &blk->str[slot], &blk->dict_count[slot],
			      blk->codes[slot]);
	} else {
		blk->str[slot] = malloc((size_t)FMT_MAX(blk->rows, 1u) * sizeof(struct sv));
		if (!blk->str[slot])
			return FMT_E_NOMEM;
		for (uint32_t i = 0; i < blk->rows && rc == 0; i++)
			rc = rd_sv(&rd, raw, &blk->str[slot][i]);
	}
	if (rc == 0 && rd.left != 0)
		rc = FMT_E_CORRUPT;
	return rc;
}

/* Makes room for `need` attributes in blk->attr_kv (doubling). Each
 * attribute takes at least two raw bytes, so a chunk that decodes never
 * needs more than raw_len / 2 of them and the array stays proportional to
 * the bytes that really decompressed. */
static int attrs_reserve(struct fmt_block *blk, uint64_t *cap, uint64_t need)
{
	if (need <= *cap)
		return 0;
	uint64_t n = FMT_MAX(need, 2 * *cap);
	struct sv *kv = realloc(blk->attr_kv, (size_t)n * 2 * sizeof(struct sv));
	if (!kv)
		return FMT_E_NOMEM;
	blk->attr_kv = kv;
	blk->mem_bytes += (n - *cap) * 2 * sizeof(struct sv);
	*cap = n;
	return 0;
}

/* One pass over the attrs chunk: per row a count, then key/value strings. */
static int dec_attrs(struct fmt_block *blk, const struct fmt_chunk_ref *k, const uint8_t *raw)
{
	struct rd rd = { raw, k->raw_len };
	uint64_t t = 0, cap = 0;
	blk->attr_first = malloc(((size_t)blk->rows + 1) * sizeof(uint32_t));
	if (!blk->attr_first)
		return FMT_E_NOMEM;
	int rc = attrs_reserve(blk, &cap, FMT_MIN((uint64_t)blk->rows * 4, k->raw_len / 2) + 1);
	for (uint32_t i = 0; i < blk->rows && rc == 0; i++) {
		uint64_t count;
		if ((rc = rd_varint(&rd, &count)) != 0)
			break;
		if (count > FMT_ATTRS_HARD_MAX || count > rd.left / 2)
			return FMT_E_CORRUPT;
		if ((rc = attrs_reserve(blk, &cap, t + count)) != 0)
			break;
		blk->attr_first[i] = (uint32_t)t;
		for (uint64_t a = 0; a < count && rc == 0; a++, t++)
			if ((rc = rd_sv(&rd, raw, &blk->attr_kv[2 * t])) == 0)
				rc = rd_sv(&rd, raw, &blk->attr_kv[2 * t + 1]);
	}
	if (rc)
		return rc;
	ASSERT(t <= k->raw_len / 2);
	blk->attr_first[blk->rows] = (uint32_t)t;
	return rd.left == 0 ? 0 : FMT_E_CORRUPT;
}

/* An event id as two big-endian halves: ids order as these pairs do
 * (memcmp order), in two integer compares instead of a call. */
struct id128 {
	uint64_t hi, lo;
};

static struct id128 id_load(const uint8_t *p)
{
	return (struct id128){ __builtin_bswap64(fmt_get_u64(p)), __builtin_bswap64(fmt_get_u64(p + 8)) };
}

static int id128_cmp(struct id128 a, struct id128 b)
{
	if (a.hi != b.hi)
		return a.hi < b.hi ? -1 : 1;
	return (a.lo > b.lo) - (a.lo < b.lo);
}

/* v2: the block's ids must span exactly its id zone map, as occurred_at
 * spans its time zone map (the filter itself is checked by verify). */
static int check_ids(const struct fmt_segment *seg, const struct fmt_block_ref *r,
		     const uint8_t *ids)
{
	if (!fmt_segment_has_id_index(seg))
		return 0;
	bool lo = false, hi = false;
	const struct id128 min = id_load(r->min_event_id), max = id_load(r->max_event_id);
	for (uint32_t i = 0; i < r->row_count; i++) {
		struct id128 id = id_load(ids + (size_t)i * FMT_EVENT_ID_BYTES);
		int a = id128_cmp(id, min), z = id128_cmp(id, max);
		if (a < 0 || z > 0)
			return FMT_E_CORRUPT;
		lo |= a == 0;
		hi |= z == 0;
	}
	return lo && hi ? 0 : FMT_E_CORRUPT;
}

static int dec_column(const struct fmt_segment *seg, const struct fmt_block_ref *r, unsigned c,
		      const uint8_t *bytes, ZSTD_DCtx *dctx, struct fmt_block *blk)
{
	const struct fmt_chunk_ref *k = &r->chunk[c];
	uint8_t *raw;
	int rc = fetch_chunk(dctx, k, bytes, &raw);
	if (rc)
		return rc;
	blk->raw[c] = raw; /* owned by the block from here on */
	switch (col_kind(c)) {
	case KIND_INT:
		blk->ints[c] = malloc((size_t)blk->rows * sizeof(uint64_t));
		if (!blk->ints[c])
			return FMT_E_NOMEM;
		rc = dec_int(seg, r, c, raw, blk->ints[c]);
		free(raw);
		blk->raw[c] = NULL;
		return rc;
	case KIND_STR:
		return dec_str(k, blk, str_slot(c), raw);
	case KIND_ATTRS:
		return dec_attrs(blk, k, raw);
	case KIND_OUTCOME:
		for (uint32_t i = 0; i < blk->rows; i++)
			if (raw[i] > FMT_OUTCOME_DENIED)
				return FMT_E_CORRUPT;
		return 0;
	case KIND_ID:
		ASSERT(k->raw_len == (uint64_t)FMT_EVENT_ID_BYTES * blk->rows);
		return check_ids(seg, r, raw);
	default:
		ASSERT(k->raw_len == (uint64_t)fixed_width(c, k->encoding) * blk->rows);
		return 0;
	}
}

struct fmt_decoder {
	ZSTD_DCtx *dctx;
};

int fmt_decoder_new(struct fmt_decoder **out)
{
	struct fmt_decoder *d = calloc(1, sizeof(*d));
	if (!d || !(d->dctx = ZSTD_createDCtx())) {
		free(d);
		return FMT_E_NOMEM;
	}
	*out = d;
	return 0;
}

void fmt_decoder_free(struct fmt_decoder *d)
{
	if (!d)
		return;
	ZSTD_freeDCtx(d->dctx);
	free(d);
}

/* Heap bytes a decoded column holds (attr_kv is counted by attrs_reserve,
 * as it grows): what fmt_block_mem_bytes() adds up for a cache's bound. */
static uint64_t col_mem_bytes(const struct fmt_block *blk, const struct fmt_chunk_ref *k,
			      unsigned c)
{
	uint64_t rows = blk->rows;
	switch (col_kind(c)) {
	case KIND_INT:
		return rows * sizeof(uint64_t); /* the raw bytes were freed */
	case KIND_STR: {
		unsigned slot = str_slot(c);
		uint64_t n = FMT_MAX(k->raw_len, 1);
		if (blk->codes[slot])
			return n + FMT_MAX(rows, 1) * sizeof(uint32_t) +
			       (uint64_t)blk->dict_count[slot] * sizeof(struct sv);
		return n + FMT_MAX(rows, 1) * sizeof(struct sv);
	}
	case KIND_ATTRS:
		return FMT_MAX(k->raw_len, 1) + (rows + 1) * sizeof(uint32_t);
	default:
		return FMT_MAX(k->raw_len, 1);
	}
}

int fmt_block_decode(const struct fmt_segment *seg, uint32_t b, uint32_t col_mask,
		     const uint8_t *const chunk_bytes[FMT_COL_COUNT], struct fmt_block **out)
{
	struct fmt_decoder *d;
	int rc = fmt_decoder_new(&d);
	if (rc) {
		*out = NULL;
		return rc;
	}
	rc = fmt_block_decode_with(d, seg, b, col_mask, chunk_bytes, out);
	fmt_decoder_free(d);
	return rc;
}

int fmt_block_decode_with(struct fmt_decoder *d, const struct fmt_segment *seg, uint32_t b,
			  uint32_t col_mask, const uint8_t *const chunk_bytes[FMT_COL_COUNT],
			  struct fmt_block **out)
{
	ASSERT(b < seg->meta.block_count);
	ASSERT((col_mask & ~(uint32_t)FMT_COLS_ALL) == 0);
	const struct fmt_block_ref *r = &seg->blocks[b];
	ZSTD_DCtx *dctx = d->dctx;
	int rc = FMT_E_NOMEM;
	*out = NULL;
	struct fmt_block *blk = calloc(1, sizeof(*blk));
	if (!blk)
		goto fail;
	blk->rows = r->row_count;
	blk->mem_bytes = sizeof(*blk);
	for (unsigned c = 0; c < FMT_COL_COUNT; c++) {
		if (!(col_mask & (1u << c)))
			continue;
		ASSERT(chunk_bytes[c] != NULL);
		if ((rc = dec_column(seg, r, c, chunk_bytes[c], dctx, blk)))
			goto fail;
		blk->mask |= 1u << c;
		blk->mem_bytes += col_mem_bytes(blk, &r->chunk[c], c);
	}
	*out = blk;
	return 0;
fail:
	fmt_block_free(blk);
	return rc;
}

int fmt_block_decode_buf(const struct fmt_segment *seg, const uint8_t *buf, size_t len,
			 uint32_t b, uint32_t col_mask, struct fmt_block **out)
{
	const uint8_t *bytes[FMT_COL_COUNT] = { 0 };
	ASSERT(b < seg->meta.block_count);
	*out = NULL;
	for (unsigned c = 0; c < FMT_COL_COUNT; c++) {
		const struct fmt_chunk_ref *k = &seg->blocks[b].chunk[c];
		if (!(col_mask & (1u << c)))
			continue;
		if (k->offset > len || k->stored_len > len - k->offset)
			return FMT_E_CORRUPT;
		bytes[c] = buf + k->offset;
	}
	return fmt_block_decode(seg, b, col_mask, bytes, out);
}

uint32_t fmt_block_rows(const struct fmt_block *blk)
{
	return blk->rows;
}

uint32_t fmt_block_mask(const struct fmt_block *blk)
{
	return blk->mask;
}

uint64_t fmt_block_mem_bytes(const struct fmt_block *blk)
{
	return blk->mem_bytes;
}

static struct fmt_str view(const struct fmt_block *blk, unsigned c, struct sv v)
{
	struct fmt_str s = { (const char *)blk->raw[c] + v.off, v.len };
	return s;
}

/* Row i of a decoded string column. */
static struct fmt_str str_view(const struct fmt_block *blk, unsigned c, uint32_t i)
{
	unsigned slot = str_slot(c);
	ASSERT(i < blk->rows && (blk->mask & (1u << c)));
	return view(blk, c, blk->str[slot][blk->codes[slot] ? blk->codes[slot][i] : i]);
}

void fmt_block_row(const struct fmt_segment *seg, const struct fmt_block *blk, uint32_t i,
		   struct fmt_event *ev, struct fmt_attr *attr_buf, uint32_t attr_cap,
		   uint8_t chain[FMT_HASH_BYTES])
{
	ASSERT(i < blk->rows);
	memset(ev, 0, sizeof(*ev));
	for (int f = 0; f < FMT_F_STRING_COUNT; f++)
		ev->str[f] = fmt_str_c("");
	ev->details_json = fmt_str_c("");
	ev->tenant = fmt_str_c(seg->meta.tenant);
	ev->seq = blk->ints[FMT_COL_SEQ] ? blk->ints[FMT_COL_SEQ][i] : 0;
	if (blk->ints[FMT_COL_RECEIVED_AT])
		ev->received_at_ns = (int64_t)blk->ints[FMT_COL_RECEIVED_AT][i];
	if (blk->ints[FMT_COL_OCCURRED_AT])
		ev->occurred_at_ns = (int64_t)blk->ints[FMT_COL_OCCURRED_AT][i];
	if (blk->raw[FMT_COL_EVENT_ID])
		memcpy(ev->event_id, blk->raw[FMT_COL_EVENT_ID] + (size_t)i * FMT_EVENT_ID_BYTES,
		       FMT_EVENT_ID_BYTES);
	if (blk->raw[FMT_COL_OUTCOME])
		ev->outcome = blk->raw[FMT_COL_OUTCOME][i];
	for (unsigned c = FMT_COL_STR_FIRST; c <= FMT_COL_STR_LAST; c++)
		if (blk->mask & (1u << c))
			ev->str[c - FMT_COL_STR_FIRST] = str_view(blk, c, i);
	if (blk->mask & (1u << FMT_COL_DETAILS))
		ev->details_json = str_view(blk, FMT_COL_DETAILS, i);
	if (blk->attr_first) {
		uint32_t a0 = blk->attr_first[i], n = blk->attr_first[i + 1] - a0;
		ASSERT(n <= attr_cap && n <= FMT_ATTRS_HARD_MAX);
		for (uint32_t a = 0; a < n; a++) {
			attr_buf[a].key = view(blk, FMT_COL_ATTRS, blk->attr_kv[2 * (a0 + a)]);
			attr_buf[a].value = view(blk, FMT_COL_ATTRS, blk->attr_kv[2 * (a0 + a) + 1]);
		}
		ev->attr_count = n;
		ev->attrs = n ? attr_buf : NULL;
	}
	if (chain && blk->raw[FMT_COL_CHAIN])
		memcpy(chain, blk->raw[FMT_COL_CHAIN] + (size_t)i * FMT_HASH_BYTES, FMT_HASH_BYTES);
	else if (chain)
		memset(chain, 0, FMT_HASH_BYTES);
}

bool fmt_block_has_event_id(const struct fmt_block *blk, const uint8_t id[FMT_EVENT_ID_BYTES])
{
	ASSERT(blk->mask & (1u << FMT_COL_EVENT_ID));
	const uint8_t *ids = blk->raw[FMT_COL_EVENT_ID];
	for (uint32_t i = 0; i < blk->rows; i++)
		if (memcmp(ids + (size_t)i * FMT_EVENT_ID_BYTES, id, FMT_EVENT_ID_BYTES) == 0)
			return true;
	return false;
}

const uint64_t *fmt_block_ints(const struct fmt_block *blk, unsigned col)
{
	ASSERT(col_kind(col) == KIND_INT);
	return blk->ints[col];
}

const uint8_t *fmt_block_fixed(const struct fmt_block *blk, unsigned col)
{
	ASSERT(col_kind(col) == KIND_ID || col_kind(col) == KIND_OUTCOME ||
	       col_kind(col) == KIND_CHAIN);
	return blk->raw[col];
}

struct fmt_str fmt_block_str(const struct fmt_block *blk, unsigned col, uint32_t i)
{
	return str_view(blk, col, i);
}

uint32_t fmt_block_dict(const struct fmt_block *blk, unsigned col, const uint32_t **codes)
{
	unsigned slot = str_slot(col);
	ASSERT(blk->mask & (1u << col));
	*codes = blk->codes[slot];
	return blk->codes[slot] ? blk->dict_count[slot] : 0;
}

struct fmt_str fmt_block_dict_entry(const struct fmt_block *blk, unsigned col, uint32_t k)
{
	unsigned slot = str_slot(col);
	ASSERT(blk->codes[slot] && k < blk->dict_count[slot]);
	return view(blk, col, blk->str[slot][k]);
}

void fmt_block_row_cols(const struct fmt_block *blk, uint32_t i, uint32_t col_mask,
			struct fmt_event *ev)
{
	ASSERT(i < blk->rows);
	ASSERT((col_mask & ~blk->mask) == 0);
	ASSERT((col_mask & ((1u << FMT_COL_ATTRS) | (1u << FMT_COL_DETAILS) |
			    (1u << FMT_COL_CHAIN))) == 0);
	if (col_mask & (1u << FMT_COL_SEQ))
		ev->seq = blk->ints[FMT_COL_SEQ][i];
	if (col_mask & (1u << FMT_COL_RECEIVED_AT))
		ev->received_at_ns = (int64_t)blk->ints[FMT_COL_RECEIVED_AT][i];
	if (col_mask & (1u << FMT_COL_OCCURRED_AT))
		ev->occurred_at_ns = (int64_t)blk->ints[FMT_COL_OCCURRED_AT][i];
	if (col_mask & (1u << FMT_COL_EVENT_ID))
		memcpy(ev->event_id, blk->raw[FMT_COL_EVENT_ID] + (size_t)i * FMT_EVENT_ID_BYTES,
		       FMT_EVENT_ID_BYTES);
	if (col_mask & (1u << FMT_COL_OUTCOME))
		ev->outcome = blk->raw[FMT_COL_OUTCOME][i];
	uint32_t strs = col_mask >> FMT_COL_STR_FIRST;
	for (unsigned f = 0; strs != 0 && f < FMT_F_STRING_COUNT; f++, strs >>= 1)
		if (strs & 1)
			ev->str[f] = str_view(blk, FMT_COL_STR_FIRST + f, i);
}

void fmt_block_merge(struct fmt_block *dst, struct fmt_block *src)
{
	ASSERT(dst->rows == src->rows && (dst->mask & src->mask) == 0);
	for (unsigned c = 0; c < FMT_COL_COUNT; c++) {
		if (!(src->mask & (1u << c)))
			continue;
		dst->raw[c] = src->raw[c];
		src->raw[c] = NULL;
		switch (col_kind(c)) {
		case KIND_INT:
			dst->ints[c] = src->ints[c];
			src->ints[c] = NULL;
			break;
		case KIND_STR: {
			unsigned slot = str_slot(c);
			dst->str[slot] = src->str[slot];
			dst->codes[slot] = src->codes[slot];
			dst->dict_count[slot] = src->dict_count[slot];
			src->str[slot] = NULL;
			src->codes[slot] = NULL;
			break;
		}
		case KIND_ATTRS:
			dst->attr_first = src->attr_first;
			dst->attr_kv = src->attr_kv;
			src->attr_first = NULL;
			src->attr_kv = NULL;
			break;
		default:
			break;
		}
	}
	dst->mask |= src->mask;
	dst->mem_bytes += src->mem_bytes - sizeof(*src);
	fmt_block_free(src);
}

void fmt_block_free(struct fmt_block *blk)
{
	if (!blk)
		return;
	for (unsigned c = 0; c < FMT_ARRAY_LEN(blk->ints); c++)
		free(blk->ints[c]);
	for (unsigned c = 0; c < FMT_COL_COUNT; c++)
		free(blk->raw[c]);
	for (unsigned s = 0; s < STR_COLS; s++) {
		free(blk->str[s]);
		free(blk->codes[s]);
	}
	free(blk->attr_first);
	free(blk->attr_kv);
	free(blk);
}

/* ======================================================================= */
/* Verifying                                                                */
/* ======================================================================= */

struct verify {
	uint8_t chain[FMT_HASH_BYTES];
	uint8_t (*hashes)[FMT_HASH_BYTES];
	uint32_t nhash;
	uint8_t *scratch;
	size_t scratch_cap;
	int64_t min_received, max_received;
	struct fmt_attr attrs[FMT_ATTRS_HARD_MAX];
	struct summary sum;        /* v3: the summary section rebuilt from the rows */
	bool sum_ready;
};

/* Recomputes the chain over one decoded block, comparing it with the
 * stored chain column row by row. */
static int verify_block(const struct fmt_segment *seg, const struct fmt_block *blk,
			struct verify *v, uint64_t *bad_seq)
{
	void *p = realloc(v->hashes, ((size_t)v->nhash + blk->rows) * FMT_HASH_BYTES);
	if (!p)
		return FMT_E_NOMEM;
	v->hashes = p;
	for (uint32_t i = 0; i < blk->rows; i++) {
		struct fmt_event ev;
		uint8_t stored[FMT_HASH_BYTES];
		fmt_block_row(seg, blk, i, &ev, v->attrs, FMT_ATTRS_HARD_MAX, stored);
		size_t need = fmt_event_canon_size(&ev);
		if (need > v->scratch_cap) {
			uint8_t *s = realloc(v->scratch, need);
			if (!s)
				return FMT_E_NOMEM;
			v->scratch = s;
			v->scratch_cap = need;
		}
		int rc = fmt_event_hash(&ev, v->scratch, v->scratch_cap, v->hashes[v->nhash]);
		ASSERT(rc == 0);
		fmt_chain_next(v->chain, v->hashes[v->nhash++], v->chain);
		if (memcmp(v->chain, stored, FMT_HASH_BYTES) != 0) {
			*bad_seq = ev.seq;
			return FMT_E_CHAIN;
		}
		v->min_received = FMT_MIN(v->min_received, ev.received_at_ns);
		v->max_received = FMT_MAX(v->max_received, ev.received_at_ns);
	}
	return 0;
}

int fmt_block_check_id_index(const struct fmt_segment *seg, uint32_t b,
			     const struct fmt_block *blk)
{
	ASSERT(b < seg->meta.block_count && blk->rows == seg->blocks[b].row_count);
	ASSERT(blk->mask & (1u << FMT_COL_EVENT_ID));
	if (!fmt_segment_has_id_index(seg))
		return 0;
	const struct fmt_block_ref *r = &seg->blocks[b];
	uint8_t min[FMT_EVENT_ID_BYTES], max[FMT_EVENT_ID_BYTES];
	uint8_t *filter = malloc(r->id_filter_bytes);
	if (!filter)
		return FMT_E_NOMEM;
	id_index_compute(blk->raw[FMT_COL_EVENT_ID], FMT_EVENT_ID_BYTES, blk->rows, min, max, filter,
			 r->id_filter_bytes);
	bool same = memcmp(min, r->min_event_id, FMT_EVENT_ID_BYTES) == 0 &&
		    memcmp(max, r->max_event_id, FMT_EVENT_ID_BYTES) == 0 &&
		    memcmp(filter, seg->id_filters + r->id_filter_at, r->id_filter_bytes) == 0;
	free(filter);
	return same ? 0 : FMT_E_CORRUPT;
}

static struct fmt_str block_str(const void *ctx, unsigned col, uint32_t i)
{
	return str_view(ctx, col, i);
}

static unsigned block_outcome(const void *ctx, uint32_t i)
{
	return ((const struct fmt_block *)ctx)->raw[FMT_COL_OUTCOME][i];
}

static struct sum_rows block_sum_rows(const struct fmt_block *blk)
{
	return (struct sum_rows){ blk->rows, block_outcome, block_str, blk };
}

/* Whether the n bytes at `at` of the stored section equal p. */
static bool summary_has(const struct fmt_segment *seg, uint32_t at, const uint8_t *p, size_t n)
{
	return at <= seg->summary_len && n <= seg->summary_len - at &&
	       (n == 0 || memcmp(seg->summary + at, p, n) == 0);
}

/* Loads the segment's dictionaries into s under their stored codes; a
 * column the footer does not count is marked over. */
static int sum_preload(struct summary *s, const struct fmt_segment *seg)
{
	for (unsigned k = 0; k < SUM_DICTS; k++) {
		struct sum_dict *d = &s->dict[k];
		uint32_t keys = seg->count_keys[1 + k];
		d->over = keys == 0 && seg->meta.row_count > 0;
		for (uint32_t e = 0; e < keys; e++) {
			uint32_t code;
			int rc = dict_code(s, d, seg->count_key[1 + k][e], &code);
			if (rc < 0)
				return rc;
			if (rc || code != e) /* a repeated value */
				return FMT_E_CORRUPT;
		}
	}
	return 0;
}

int fmt_block_check_summary(const struct fmt_segment *seg, uint32_t b, const struct fmt_block *blk)
{
	ASSERT(b < seg->meta.block_count && blk->rows == seg->blocks[b].row_count);
	if (seg->meta.version < 3)
		return 0;
	for (unsigned k = 0; k < FMT_SEG_COUNTED_COLS; k++)
		ASSERT(blk->mask & (1u << sum_col[k]));
	ASSERT(blk->mask & (1u << COL_ACTOR));
	const struct fmt_block_ref *r = &seg->blocks[b];
	struct summary s;
	struct sum_rows rows = block_sum_rows(blk);
	int rc = sum_init(&s, seg->meta.count_keys_max, seg->meta.actor_filter_bits,
			  seg->meta.row_count);
	if (rc)
		return rc;
	if ((rc = sum_preload(&s, seg)) == 0 && (rc = sum_block(&s, &rows)) == 0) {
		bool same = summary_has(seg, r->counts_at[0], s.outcome.p, s.outcome.len) &&
			    summary_has(seg, r->actor_at, s.actor.p, s.actor.len);
		for (unsigned k = 0; k < SUM_DICTS; k++) {
			const struct sum_dict *d = &s.dict[k];
			if (seg->count_keys[1 + k])
				same = same && !d->over && d->n == seg->count_keys[1 + k] &&
				       summary_has(seg, r->counts_at[1 + k], d->pairs.p, d->pairs.len);
		}
		rc = same ? 0 : FMT_E_CORRUPT;
	}
	sum_free(&s);
	return rc;
}

static int verify_blocks(const struct fmt_segment *seg, const uint8_t *buf, size_t len,
			 struct verify *v, uint64_t *bad_seq)
{
	for (uint32_t b = 0; b < seg->meta.block_count; b++) {
		struct fmt_block *blk;
		int rc = fmt_block_decode_buf(seg, buf, len, b, FMT_COLS_ALL, &blk);
		if (rc)
			return rc;
		/* The chain first: it names the seq of an altered event. */
		rc = verify_block(seg, blk, v, bad_seq);
		if (rc == 0)
			rc = fmt_block_check_id_index(seg, b, blk);
		if (rc == 0 && v->sum_ready) {
			struct sum_rows rows = block_sum_rows(blk);
			rc = sum_block(&v->sum, &rows);
		}
		fmt_block_free(blk);
		if (rc)
			return rc;
	}
	return 0;
}

/* v3: the summary section rebuilt from every row must equal the stored
 * one byte for byte (codes in order of first appearance, exact counts, a
 * column counted only when it has at most count_keys_max values, every
 * actor filter). A column the segment leaves out is left out of the
 * rebuild too: which ones a writer counts is its choice, and one left out
 * hides nothing (Count reads its rows). */
static int verify_summary(const struct fmt_segment *seg, struct verify *v)
{
	struct buf out = { 0 };
	int rc = sum_finish(&v->sum, &out, seg);
	if (rc == 0 && (out.len != seg->summary_len || memcmp(out.p, seg->summary, out.len) != 0))
		rc = FMT_E_CORRUPT;
	free(out.p);
	return rc;
}

int fmt_segment_verify_buf(const uint8_t *buf, size_t len, uint64_t *bad_seq)
{
	struct fmt_segment *seg = NULL;
	uint8_t root[FMT_HASH_BYTES];
	uint64_t ignored;
	bad_seq = bad_seq ? bad_seq : &ignored;
	*bad_seq = 0;
	struct verify *v = calloc(1, sizeof(*v));
	if (!v)
		return FMT_E_NOMEM;
	int rc = fmt_segment_open_buf(buf, len, &seg);
	if (rc)
		goto fail;
	memcpy(v->chain, seg->meta.chain_before, FMT_HASH_BYTES);
	v->min_received = INT64_MAX;
	v->max_received = INT64_MIN;
	if (seg->meta.version >= 3) {
		if ((rc = sum_init(&v->sum, seg->meta.count_keys_max, seg->meta.actor_filter_bits,
				   seg->meta.row_count)))
			goto fail;
		v->sum_ready = true;
	}
	if ((rc = verify_blocks(seg, buf, len, v, bad_seq)))
		goto fail;

	ASSERT(v->nhash == seg->meta.row_count);
	if (seg->meta.row_count && (v->min_received != seg->meta.min_received_ns ||
				    v->max_received != seg->meta.max_received_ns)) {
		rc = FMT_E_CORRUPT;
		goto fail;
	}
	if (memcmp(v->chain, seg->meta.chain_after, FMT_HASH_BYTES) != 0) {
		*bad_seq = seg->meta.last_seq;
		rc = FMT_E_CHAIN;
		goto fail;
	}
	fmt_merkle_root((const uint8_t (*)[FMT_HASH_BYTES])v->hashes, v->nhash, root);
	if (memcmp(root, seg->meta.merkle_root, FMT_HASH_BYTES) != 0)
		rc = FMT_E_CHAIN;
	else if (v->sum_ready)
		rc = verify_summary(seg, v);
fail:
	fmt_segment_close(seg);
	if (v) {
		free(v->hashes);
		free(v->scratch);
		if (v->sum_ready)
			sum_free(&v->sum);
	}
	free(v);
	return rc;
}
