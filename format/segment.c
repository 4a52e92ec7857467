// SPDX-License-Identifier: Apache-2.0
/*
 * segment.c — the sealed segment codec (docs/FORMAT.md §5).
 *
 *   [header 32 B][block 0: 17 chunks][block 1: 17 chunks]...[footer][trailer 32 B]
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

_Static_assert(FMT_COL_COUNT == 17, "the v1 footer has 17 chunk refs per block");
_Static_assert(BLOCK_BYTES == 516, "block entry size is part of the format");
_Static_assert(FMT_SEG_ROWS_MAX <= RAW_MAX, "a row count fits every raw-length bound");
_Static_assert((uint64_t)META_BYTES + (uint64_t)BLOCKS_MAX * BLOCK_BYTES < UINT32_MAX,
	       "the largest footer length fits in u32");
_Static_assert(FMT_SEG_HEADER_BYTES == 32 && FMT_SEG_TRAILER_BYTES == 32, "fixed by the format");

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
static int rd_varint_long(struct rd *r, uint64_t *out)
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

/* Most varints of a block (lengths, dictionary indexes, small deltas) are
 * one byte: that case is inlined, the rest takes the checked loop. A lone
 * byte below 0x80 is always a minimal encoding. */
static inline int rd_varint(struct rd *r, uint64_t *out)
{
	if (r->left > 0 && r->p[0] < 0x80) {
		*out = *r->p++;
		r->left--;
		return 0;
	}
	return rd_varint_long(r, out);
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

/* ---- fixed-width structures -------------------------------------------- */

static void put_header(uint8_t out[FMT_SEG_HEADER_BYTES], const struct fmt_segment_meta *m)
{
	memcpy(out, header_magic, 8);
	fmt_put_u32(out + 8, FMT_SEG_VERSION);
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

static void put_trailer(uint8_t *p, uint64_t footer_offset, uint32_t footer_len,
			uint64_t footer_checksum)
{
	fmt_put_u64(p, footer_offset);
	fmt_put_u32(p + 8, footer_len);
	fmt_put_u32(p + 12, FMT_SEG_VERSION);
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
	size_t z = ZSTD_compressCCtx(w->cctx, dst, bound, w->raw.p, w->raw.len, w->level);
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
	return 0;
}

/* Appends footer and trailer, then fills in the header. */
static int write_tail(struct builder *w)
{
	uint64_t footer_offset = w->img.len;
	uint32_t footer_len = META_BYTES + w->meta.block_count * BLOCK_BYTES;
	int rc = buf_reserve(&w->img, (size_t)footer_len + FMT_SEG_TRAILER_BYTES);
	if (rc)
		return rc;
	uint8_t *f = w->img.p + footer_offset;
	put_meta(f, &w->meta);
	for (uint32_t b = 0; b < w->meta.block_count; b++)
		put_block_ref(f + META_BYTES + (size_t)b * BLOCK_BYTES, &w->blocks[b]);
	put_trailer(f + footer_len, footer_offset, footer_len, fmt_xxh3(f, footer_len));
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
	struct fmt_sha256_ctx *sha = fmt_sha256_ctx_new();
	if (!hashes || !sha) {
		free(hashes);
		fmt_sha256_ctx_free(sha);
		return FMT_E_NOMEM;
	}
	memcpy(m->chain_after, m->chain_before, FMT_HASH_BYTES);
	for (uint32_t i = 0; i < n; i++) {
#ifdef NDEBUG
		if (w->event_hashes) {
			memcpy(hashes[i], w->event_hashes[i], FMT_HASH_BYTES);
			fmt_chain_next_with(sha, m->chain_after, hashes[i], m->chain_after);
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
		fmt_sha256_with(sha, scratch, (size_t)len, hashes[i]);
		fmt_chain_next_with(sha, m->chain_after, hashes[i], m->chain_after);
		ASSERT(memcmp(m->chain_after, w->chains[i], FMT_HASH_BYTES) == 0);
		DEBUG_ASSERT(!w->event_hashes ||
			     memcmp(hashes[i], w->event_hashes[i], FMT_HASH_BYTES) == 0);
	}
	fmt_merkle_root((const uint8_t (*)[FMT_HASH_BYTES])hashes, n, m->merkle_root);
fail:
	fmt_sha256_ctx_free(sha);
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
	if (fmt_get_u32(trailer + 12) != FMT_SEG_VERSION)
		return FMT_E_VERSION;
	uint64_t off = fmt_get_u64(trailer);
	uint32_t len = fmt_get_u32(trailer + 8);
	if (len < META_BYTES || (len - META_BYTES) % BLOCK_BYTES != 0 ||
	    (len - META_BYTES) / BLOCK_BYTES > BLOCKS_MAX)
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
	if (fmt_get_u32(h + 8) != FMT_SEG_VERSION)
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

static int parse_meta(const uint8_t *p, uint32_t footer_len, struct fmt_segment_meta *m)
{
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
	if ((uint64_t)m->block_count * BLOCK_BYTES + META_BYTES != footer_len)
		return FMT_E_CORRUPT;
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
	seg = calloc(1, sizeof(*seg));
	if (!seg)
		return FMT_E_NOMEM;
	seg->file_size = file_size;
	seg->footer_offset = t_offset;
	seg->footer_len = footer_len;
	if ((rc = parse_meta(footer, footer_len, &seg->meta)))
		goto fail;
	seg->blocks = calloc(FMT_MAX(seg->meta.block_count, 1), sizeof(*seg->blocks));
	if (!seg->blocks) {
		rc = FMT_E_NOMEM;
		goto fail;
	}
	if ((rc = open_blocks(seg, footer)))
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
	free(seg);
}

/* ======================================================================= */
/* Decoding blocks                                                          */
/* ======================================================================= */

/* A string inside a column's decompressed bytes. */
struct sv {
	uint32_t off, len;
};

struct fmt_block {
	uint32_t rows;
	uint32_t mask;                  /* columns decoded */
	uint64_t *ints[3];              /* seq, received_at, occurred_at */
	uint8_t *raw[FMT_COL_COUNT];    /* decompressed bytes of the other columns */
	struct sv *str[STR_COLS];       /* views into raw[] of each string column */
	uint32_t *attr_first;           /* rows + 1: row i's attrs are [first[i], first[i+1]) */
	struct sv *attr_kv;             /* key, value per attribute */
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

static int dec_dict(struct rd *rd, const uint8_t *raw, uint32_t rows, struct sv *out)
{
	uint64_t count, idx;
	int rc = rd_varint(rd, &count);
	if (rc)
		return rc;
	if (count < 1 || count > rows)
		return FMT_E_CORRUPT;
	struct sv *dict = malloc((size_t)count * sizeof(*dict));
	if (!dict)
		return FMT_E_NOMEM;
	for (uint64_t k = 0; k < count && rc == 0; k++)
		rc = rd_sv(rd, raw, &dict[k]);
	for (uint32_t i = 0; i < rows && rc == 0; i++) {
		if ((rc = rd_varint(rd, &idx)) == 0 && idx >= count)
			rc = FMT_E_CORRUPT;
		if (rc == 0)
			out[i] = dict[idx];
	}
	free(dict);
	return rc;
}

static int dec_str(const struct fmt_chunk_ref *k, uint32_t rows, const uint8_t *raw,
		   struct sv *out)
{
	struct rd rd = { raw, k->raw_len };
	int rc = 0;
	if (k->encoding == FMT_ENC_DICT)
		rc = dec_dict(&rd, raw, rows, out);
	else
		for (uint32_t i = 0; i < rows && rc == 0; i++)
			rc = rd_sv(&rd, raw, &out[i]);
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
		blk->str[str_slot(c)] = malloc((size_t)blk->rows * sizeof(struct sv));
		if (!blk->str[str_slot(c)])
			return FMT_E_NOMEM;
		return dec_str(k, blk->rows, raw, blk->str[str_slot(c)]);
	case KIND_ATTRS:
		return dec_attrs(blk, k, raw);
	case KIND_OUTCOME:
		for (uint32_t i = 0; i < blk->rows; i++)
			if (raw[i] > FMT_OUTCOME_DENIED)
				return FMT_E_CORRUPT;
		return 0;
	default:
		ASSERT(k->raw_len == (uint64_t)fixed_width(c, k->encoding) * blk->rows);
		return 0;
	}
}

int fmt_block_decode(const struct fmt_segment *seg, uint32_t b, uint32_t col_mask,
		     const uint8_t *const chunk_bytes[FMT_COL_COUNT], struct fmt_block **out)
{
	ASSERT(b < seg->meta.block_count);
	ASSERT((col_mask & ~(uint32_t)FMT_COLS_ALL) == 0);
	const struct fmt_block_ref *r = &seg->blocks[b];
	ZSTD_DCtx *dctx = NULL;
	int rc = FMT_E_NOMEM;
	*out = NULL;
	struct fmt_block *blk = calloc(1, sizeof(*blk));
	if (!blk || !(dctx = ZSTD_createDCtx()))
		goto fail;
	blk->rows = r->row_count;
	for (unsigned c = 0; c < FMT_COL_COUNT; c++) {
		if (!(col_mask & (1u << c)))
			continue;
		ASSERT(chunk_bytes[c] != NULL);
		if ((rc = dec_column(seg, r, c, chunk_bytes[c], dctx, blk)))
			goto fail;
		blk->mask |= 1u << c;
	}
	ZSTD_freeDCtx(dctx);
	*out = blk;
	return 0;
fail:
	ZSTD_freeDCtx(dctx);
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

static struct fmt_str view(const struct fmt_block *blk, unsigned c, struct sv v)
{
	struct fmt_str s = { (const char *)blk->raw[c] + v.off, v.len };
	return s;
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
		if (blk->str[str_slot(c)])
			ev->str[c - FMT_COL_STR_FIRST] = view(blk, c, blk->str[str_slot(c)][i]);
	if (blk->str[str_slot(FMT_COL_DETAILS)])
		ev->details_json = view(blk, FMT_COL_DETAILS, blk->str[str_slot(FMT_COL_DETAILS)][i]);
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
			ev->str[f] = view(blk, FMT_COL_STR_FIRST + f,
					  blk->str[str_slot(FMT_COL_STR_FIRST + f)][i]);
}

void fmt_block_free(struct fmt_block *blk)
{
	if (!blk)
		return;
	for (unsigned c = 0; c < FMT_ARRAY_LEN(blk->ints); c++)
		free(blk->ints[c]);
	for (unsigned c = 0; c < FMT_COL_COUNT; c++)
		free(blk->raw[c]);
	for (unsigned s = 0; s < STR_COLS; s++)
		free(blk->str[s]);
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

static int verify_blocks(const struct fmt_segment *seg, const uint8_t *buf, size_t len,
			 struct verify *v, uint64_t *bad_seq)
{
	for (uint32_t b = 0; b < seg->meta.block_count; b++) {
		struct fmt_block *blk;
		int rc = fmt_block_decode_buf(seg, buf, len, b, FMT_COLS_ALL, &blk);
		if (rc)
			return rc;
		rc = verify_block(seg, blk, v, bad_seq);
		fmt_block_free(blk);
		if (rc)
			return rc;
	}
	return 0;
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
fail:
	fmt_segment_close(seg);
	if (v) {
		free(v->hashes);
		free(v->scratch);
	}
	free(v);
	return rc;
}
