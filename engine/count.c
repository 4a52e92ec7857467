// SPDX-License-Identifier: Apache-2.0
/*
 * count.c — CountRequest (DESIGN.md §5, ADR 0009), run on the shard thread
 * that owns the tenant: how many of its events match a filter, in all and
 * per value of one column (action, actor_id, resource_type or outcome).
 *
 * Sources are those of search (read.c): the tenant's sealed segments and
 * the durable memtable rows no segment holds yet, with the same filter
 * semantics (time range [from_ns, to_ns), 0 = now; exact string, outcome
 * and event_id matches). Only the tenant named by the request is looked
 * up, and a segment whose footer names another tenant is never read.
 * Blocks are read through eng_query_block(), so a block that a recent
 * query decoded with the columns needed comes from the shard's block cache.
 *
 * Work per block (a segment's zone map gives its time range):
 *
 *   outside [lo, hi) ──────────────────────────▶ skipped, nothing read
 *   inside, no filter, no group_by ────────────▶ total += rows, nothing read
 *   otherwise: decode only the filter columns, the group column, and
 *   occurred_at only when the block straddles an edge of the range
 *     ─▶ selection of matching rows, narrowed one condition at a time
 *     ─▶ total += selected; group: per dictionary code, then per key
 *
 * A whole segment inside the range with no filter and no group_by is
 * counted from the manifest without opening it.
 *
 * Stored counts (segment format v3). The footer holds, per block, the
 * rows per value of outcome, action and resource_type. For a block wholly
 * inside the range they settle each condition on those columns: no row
 * has the value (the block adds nothing), every row has it (the condition
 * is dropped for this block), or some rows do. When no condition is left,
 * or one partial condition on the group column itself (or with no
 * group_by), the block is counted from the footer: no chunk is read and
 * its rows are not examined. Otherwise only the conditions left and the
 * group column are decoded. Edge blocks, v1/v2 segments and columns with
 * too many values to be counted are scanned as before. With an actor_id
 * condition, a block whose actor filter rules the actor out is skipped.
 *
 * Dictionaries. A string chunk that the segment codec stored as a
 * dictionary (DICT) is used as one: a string filter is compared once per
 * entry, then rows are kept by code; the group column is counted per code
 * in a small array and only the entries with a count are hashed into the
 * group table. A PLAIN chunk (many distinct values) falls back to one
 * comparison or one hash per selected row, as do memtable rows.
 *
 * Bounds (ADR 0009). Count cannot page, so its bounds refuse instead of
 * answering in part: before any chunk is read, the rows the plan would
 * examine (blocks that must be decoded, plus memtable rows) are summed
 * from the zone maps; over count_scan_rows_max the request fails. More
 * distinct keys than count_groups_max fails as soon as the table would
 * pass it. Both are FMT_E_TOO_BIG with `over` and `limit` saying which.
 * Memory: the group table (at most count_groups_max keys, at most twice
 * as many slots), three scratch arrays of one block's rows, one decoded
 * block, and the packed result.
 *
 * Result: groups sorted by count descending, then key ascending (bytewise,
 * a prefix first), packed with their keys into one allocation owned by
 * the request (req->result_mem). Outcome keys are spelt as in the JSON
 * form (fmt_outcome_name): "success", "failure", "denied", and "" for an
 * event sent without one.
 *
 * Counters: rows_scanned (rows of decoded blocks and memtable rows
 * examined); segments_read (at least one chunk read); segments_pruned (the
 * segments of the tenant none of whose chunks was read).
 */
#include "engine/internal.h"

#include <stdlib.h>

#define GROUP_SLOTS_MIN 64u
#define COL_OCC (1u << FMT_COL_OCCURRED_AT)
#define COL_OUTCOME (1u << FMT_COL_OUTCOME)
#define COL_EVENT_ID (1u << FMT_COL_EVENT_ID)
#define COL_ACTOR (1u << (FMT_COL_STR_FIRST + FMT_F_ACTOR_ID))
#define OUTCOMES (FMT_OUTCOME_DENIED + 1)

_Static_assert(GROUP_SLOTS_MIN >= 2 && (GROUP_SLOTS_MIN & (GROUP_SLOTS_MIN - 1)) == 0,
	       "group table size is a power of two");

/* One distinct key; an empty slot has count 0 (every key added has >= 1). */
struct group {
	uint64_t hash;
	uint64_t count;
	size_t key_off;
	uint32_t key_len;
};

/* Distinct keys and their counts: open addressing with linear probing on
 * XXH3-64 of the key; the keys' bytes are copied into one growing array
 * (blocks are freed long before the answer is built). */
struct groups {
	struct group *slots;
	uint32_t cap;              /* power of two, >= 2 * n */
	uint32_t n, max;
	char *keys;
	size_t keys_len, keys_cap;
};

struct count {
	struct eng_shard *s;
	struct eng_count *req;
	const struct eng_filter *f;
	struct eng_tenant *t;
	struct eng_query q;
	int64_t lo_ns, hi_ns;      /* [lo, hi) */
	uint32_t cond_mask;        /* columns of the conditions other than time */
	uint32_t group_mask;       /* the group column, or 0 */
	unsigned group_col;
	enum fmt_field group_field;
	uint64_t outcomes[OUTCOMES];
	struct groups g;
	uint32_t *sel;             /* selected rows of one block */
	uint32_t *code_counts;     /* per dictionary entry of one block, twice */
	uint8_t *match;            /* per dictionary entry: passes one string filter */
	uint32_t scratch_rows;     /* capacity of the three */
	/* Stored counts of the segment being counted (v3). */
	uint64_t actor_key;        /* fmt_actor_key(filter actor_id), when it has one */
	uint32_t want_code[FMT_SEG_COUNTED_COLS]; /* a condition's value's code; NO_CODE: absent */
	bool stored_groups;        /* key_counts holds counts to add to the group table */
	uint32_t *pair_code, *pair_count; /* one block's stored pairs */
	uint64_t *key_counts;      /* per code of the group column, one segment */
	uint32_t pairs_cap, key_counts_cap;
};

#define NO_CODE UINT32_MAX

/* The columns with stored counts, in the footer's order. */
static const unsigned counted_col[FMT_SEG_COUNTED_COLS] = {
	FMT_COL_OUTCOME,
	FMT_COL_STR_FIRST + FMT_F_ACTION,
	FMT_COL_STR_FIRST + FMT_F_RESOURCE_TYPE,
};

/* ---- the group table ----------------------------------------------------- */

static uint64_t key_hash(struct fmt_str key)
{
	return fmt_xxh3(key.len ? key.ptr : "", key.len);
}

static struct fmt_str group_key(const struct groups *g, const struct group *e)
{
	/* keys is NULL until a non-empty key is stored. */
	return (struct fmt_str){ g->keys ? g->keys + e->key_off : "", e->key_len };
}

static struct group *slot_find(const struct groups *g, uint64_t hash, struct fmt_str key)
{
	uint32_t mask = g->cap - 1;
	for (uint32_t i = (uint32_t)hash & mask, probe = 0; probe < g->cap; probe++, i = (i + 1) & mask) {
		struct group *e = &g->slots[i];
		if (e->count == 0 || (e->hash == hash && fmt_str_eq(group_key(g, e), key)))
			return e;
	}
	ASSERT(0); /* the table is never more than half full */
	return NULL;
}

static int groups_grow(struct groups *g)
{
	uint32_t cap = g->cap ? 2 * g->cap : GROUP_SLOTS_MIN;
	struct group *old = g->slots;
	uint32_t old_cap = g->cap;
	g->slots = calloc(cap, sizeof(*g->slots));
	if (!g->slots) {
		g->slots = old;
		return FMT_E_NOMEM;
	}
	g->cap = cap;
	for (uint32_t i = 0; i < old_cap; i++)
		if (old[i].count)
			*slot_find(g, old[i].hash, group_key(g, &old[i])) = old[i];
	free(old);
	return 0;
}

static int keys_append(struct groups *g, struct fmt_str key, size_t *off)
{
	if (g->keys_len + key.len > g->keys_cap) {
		size_t cap = FMT_MAX(2 * g->keys_cap, g->keys_len + key.len + 256);
		char *p = realloc(g->keys, cap);
		if (!p)
			return FMT_E_NOMEM;
		g->keys = p;
		g->keys_cap = cap;
	}
	*off = g->keys_len;
	if (key.len)
		memcpy(g->keys + g->keys_len, key.ptr, key.len);
	g->keys_len += key.len;
	return 0;
}

/* Adds n (>= 1) to key's count. Returns 0, FMT_E_TOO_BIG (a new key past
 * g->max) or FMT_E_NOMEM. */
static int groups_add(struct groups *g, struct fmt_str key, uint64_t n)
{
	ASSERT(n > 0);
	uint64_t hash = key_hash(key);
	struct group *e = g->cap ? slot_find(g, hash, key) : NULL;
	if (e && e->count) {
		e->count += n;
		return 0;
	}
	if (g->n == g->max)
		return FMT_E_TOO_BIG;
	int rc;
	if (2 * ((uint64_t)g->n + 1) > g->cap) {
		if ((rc = groups_grow(g)) != 0)
			return rc;
		e = slot_find(g, hash, key);
	}
	ASSERT(e && e->count == 0);
	size_t off;
	if ((rc = keys_append(g, key, &off)) != 0)
		return rc;
	*e = (struct group){ .hash = hash, .count = n, .key_off = off, .key_len = key.len };
	g->n++;
	return 0;
}

static void groups_free(struct groups *g)
{
	free(g->slots);
	free(g->keys);
}

/* ---- selection of one block's rows --------------------------------------- */

static int scratch_reserve(struct count *c, uint32_t rows)
{
	if (rows <= c->scratch_rows)
		return 0;
	free(c->sel);
	free(c->code_counts);
	free(c->match);
	c->sel = malloc((size_t)rows * sizeof(*c->sel));
	c->code_counts = malloc(2 * (size_t)rows * sizeof(*c->code_counts));
	c->match = malloc(rows);
	c->scratch_rows = c->sel && c->code_counts && c->match ? rows : 0;
	return c->scratch_rows ? 0 : FMT_E_NOMEM;
}

/* Keeps the selected rows whose occurred_at is in [lo, hi). */
static uint32_t keep_time(struct count *c, const struct fmt_block *blk, uint32_t n)
{
	const uint64_t *occ = fmt_block_ints(blk, FMT_COL_OCCURRED_AT);
	uint32_t k = 0;
	for (uint32_t j = 0; j < n; j++) {
		uint32_t i = c->sel[j];
		int64_t t = (int64_t)occ[i];
		if (t >= c->lo_ns && t < c->hi_ns)
			c->sel[k++] = i;
	}
	return k;
}

static uint32_t keep_outcome(struct count *c, const struct fmt_block *blk, uint32_t n)
{
	const uint8_t *o = fmt_block_fixed(blk, FMT_COL_OUTCOME);
	uint32_t k = 0;
	for (uint32_t j = 0; j < n; j++)
		if (o[c->sel[j]] == c->f->outcome)
			c->sel[k++] = c->sel[j];
	return k;
}

static uint32_t keep_event_id(struct count *c, const struct fmt_block *blk, uint32_t n)
{
	const uint8_t *ids = fmt_block_fixed(blk, FMT_COL_EVENT_ID);
	uint32_t k = 0;
	for (uint32_t j = 0; j < n; j++)
		if (memcmp(ids + (size_t)c->sel[j] * FMT_EVENT_ID_BYTES, c->f->event_id,
			   FMT_EVENT_ID_BYTES) == 0)
			c->sel[k++] = c->sel[j];
	return k;
}

/* Keeps the selected rows whose string column col equals want: per
 * dictionary entry, then per code, when the chunk is a dictionary. */
static uint32_t keep_str(struct count *c, const struct fmt_block *blk, unsigned col,
			 struct fmt_str want, uint32_t n)
{
	const uint32_t *codes;
	uint32_t entries = fmt_block_dict(blk, col, &codes), k = 0;
	if (entries) {
		bool any = false;
		for (uint32_t e = 0; e < entries; e++) {
			c->match[e] = fmt_str_eq(fmt_block_dict_entry(blk, col, e), want) ? 1 : 0;
			any = any || c->match[e];
		}
		for (uint32_t j = 0; any && j < n; j++)
			if (c->match[codes[c->sel[j]]])
				c->sel[k++] = c->sel[j];
		return k;
	}
	for (uint32_t j = 0; j < n; j++)
		if (fmt_str_eq(fmt_block_str(blk, col, c->sel[j]), want))
			c->sel[k++] = c->sel[j];
	return k;
}

/* Selects the block's rows that pass the conditions on the columns in
 * conds (and the time range when mask has occurred_at) into c->sel;
 * returns how many. */
static uint32_t select_rows(struct count *c, const struct fmt_block *blk, uint32_t rows,
			    uint32_t mask, uint32_t conds)
{
	static const struct {
		uint32_t col;
		size_t filter_off;
	} strs[] = {
		{ FMT_COL_STR_FIRST + FMT_F_ACTOR_ID, offsetof(struct eng_filter, actor_id) },
		{ FMT_COL_STR_FIRST + FMT_F_ACTION, offsetof(struct eng_filter, action) },
		{ FMT_COL_STR_FIRST + FMT_F_RESOURCE_TYPE, offsetof(struct eng_filter, resource_type) },
		{ FMT_COL_STR_FIRST + FMT_F_RESOURCE_ID, offsetof(struct eng_filter, resource_id) },
	};
	uint32_t n = rows;
	for (uint32_t i = 0; i < rows; i++)
		c->sel[i] = i;
	if (mask & COL_OCC)
		n = keep_time(c, blk, n);
	if (n && (conds & COL_OUTCOME))
		n = keep_outcome(c, blk, n);
	if (n && (conds & COL_EVENT_ID))
		n = keep_event_id(c, blk, n);
	for (size_t k = 0; n && k < FMT_ARRAY_LEN(strs); k++) {
		if (!(conds & (1u << strs[k].col)))
			continue;
		struct fmt_str want = *(const struct fmt_str *)((const char *)c->f + strs[k].filter_off);
		n = keep_str(c, blk, strs[k].col, want, n);
	}
	return n;
}

/* Counts outcomes into four interleaved histograms: consecutive rows
 * mostly share an outcome, and one counter would make every increment
 * wait for the previous one. */
static void group_outcomes(struct count *c, const uint8_t *o, const uint32_t *sel, uint32_t n)
{
	uint32_t h[4][OUTCOMES] = { { 0 } };
	if (sel)
		for (uint32_t j = 0; j < n; j++)
			h[j & 3][o[sel[j]]]++;
	else
		for (uint32_t i = 0; i < n; i++)
			h[i & 3][o[i]]++;
	for (uint32_t k = 0; k < OUTCOMES; k++)
		c->outcomes[k] += (uint64_t)h[0][k] + h[1][k] + h[2][k] + h[3][k];
}

/* Counts the selected rows (all rows when sel is NULL) per group: per
 * dictionary code (two interleaved counter arrays, for the same reason
 * as outcomes), then per key. */
static int group_rows(struct count *c, const struct fmt_block *blk, const uint32_t *sel,
		      uint32_t n)
{
	if (c->req->group_by == ENG_COUNT_BY_OUTCOME) {
		group_outcomes(c, fmt_block_fixed(blk, FMT_COL_OUTCOME), sel, n);
		return 0;
	}
	const uint32_t *codes;
	uint32_t entries = fmt_block_dict(blk, c->group_col, &codes);
	int rc = 0;
	if (!entries) {
		for (uint32_t j = 0; j < n && rc == 0; j++)
			rc = groups_add(&c->g, fmt_block_str(blk, c->group_col, sel ? sel[j] : j), 1);
		return rc;
	}
	uint32_t *c0 = c->code_counts, *c1 = c->code_counts + entries;
	memset(c0, 0, 2 * (size_t)entries * sizeof(*c0));
	uint32_t j = 0;
	if (sel) {
		for (; j + 1 < n; j += 2) {
			c0[codes[sel[j]]]++;
			c1[codes[sel[j + 1]]]++;
		}
		if (j < n)
			c0[codes[sel[j]]]++;
	} else {
		for (; j + 1 < n; j += 2) {
			c0[codes[j]]++;
			c1[codes[j + 1]]++;
		}
		if (j < n)
			c0[codes[j]]++;
	}
	for (uint32_t e = 0; e < entries && rc == 0; e++)
		if (c0[e] + c1[e])
			rc = groups_add(&c->g, fmt_block_dict_entry(blk, c->group_col, e), c0[e] + c1[e]);
	return rc;
}

/* ---- plan and scan ------------------------------------------------------- */

/* Whether rows with times in [min, max] may match; *mask: the columns to
 * decode (0: every row counts without reading anything). */
static bool range_columns(const struct count *c, int64_t min, int64_t max, uint32_t *mask)
{
	if (max < c->lo_ns || min >= c->hi_ns)
		return false;
	*mask = c->cond_mask | c->group_mask;
	if (min < c->lo_ns || max >= c->hi_ns)
		*mask |= COL_OCC;
	return true;
}

static int count_block(struct count *c, struct eng_segment *seg, uint32_t b, uint32_t mask,
		       uint32_t conds)
{
	const struct fmt_block_ref *ref = &seg->footer->blocks[b];
	struct fmt_block *blk;
	int rc = scratch_reserve(c, ref->row_count);
	if (rc == 0)
		rc = eng_query_block(&c->q, seg, b, mask, &blk);
	if (rc)
		return rc;
	c->req->rows_scanned += ref->row_count;
	bool narrow = conds || (mask & COL_OCC); /* a condition may be on the group column */
	uint32_t n = narrow ? select_rows(c, blk, ref->row_count, mask, conds) : ref->row_count;
	c->req->total += n;
	if (c->group_mask && n)
		rc = group_rows(c, blk, narrow ? c->sel : NULL, n);
	eng_query_block_release(&c->q, blk);
	return rc;
}

/* ---- stored counts (segment format v3) ----------------------------------- */

/* Sizes the pair and per-code arrays for the segment's dictionaries and
 * finds the codes of the conditions' values; clears the per-code counts. */
static int stored_prepare(struct count *c, const struct fmt_segment *fs)
{
	const struct fmt_str want[FMT_SEG_COUNTED_COLS] = { { NULL, 0 }, c->f->action,
							    c->f->resource_type };
	uint32_t keys_max = 0;
	for (unsigned k = 0; k < FMT_SEG_COUNTED_COLS; k++) {
		uint32_t keys = fmt_segment_count_keys(fs, counted_col[k]);
		keys_max = FMT_MAX(keys_max, keys);
		c->want_code[k] = NO_CODE;
		if (k == 0)
			c->want_code[k] = c->f->outcome < keys ? c->f->outcome : NO_CODE;
		for (uint32_t e = 0; k > 0 && e < keys && c->want_code[k] == NO_CODE; e++)
			if (fmt_str_eq(fmt_segment_count_key(fs, counted_col[k], e), want[k]))
				c->want_code[k] = e;
	}
	if (keys_max > c->pairs_cap) {
		free(c->pair_code);
		free(c->pair_count);
		free(c->key_counts);
		c->pair_code = malloc((size_t)keys_max * sizeof(*c->pair_code));
		c->pair_count = malloc((size_t)keys_max * sizeof(*c->pair_count));
		c->key_counts = calloc(keys_max, sizeof(*c->key_counts));
		c->pairs_cap = c->pair_code && c->pair_count && c->key_counts ? keys_max : 0;
		if (!c->pairs_cap)
			return FMT_E_NOMEM;
	}
	c->stored_groups = false;
	return 0;
}

/* Rows of block b whose column col has the value of code `code`. */
static uint32_t stored_rows(struct count *c, const struct fmt_segment *fs, uint32_t b, unsigned col,
			    uint32_t code)
{
	uint32_t n = fmt_block_counts(fs, b, col, c->pair_code, c->pair_count);
	for (uint32_t j = 0; j < n && c->pair_code[j] <= code; j++)
		if (c->pair_code[j] == code)
			return c->pair_count[j];
	return 0;
}

/* Adds n rows under code `code` of the group column. */
static void stored_group_add(struct count *c, uint32_t code, uint64_t n)
{
	if (c->req->group_by == ENG_COUNT_BY_OUTCOME) {
		ASSERT(code < OUTCOMES);
		c->outcomes[code] += n;
	} else {
		c->key_counts[code] += n;
		c->stored_groups = true;
	}
}

/* Moves the segment's per-code counts into the group table. */
static int stored_groups_flush(struct count *c, const struct fmt_segment *fs)
{
	int rc = 0;
	if (!c->stored_groups)
		return 0;
	uint32_t keys = fmt_segment_count_keys(fs, c->group_col);
	for (uint32_t e = 0; e < keys && rc == 0; e++) {
		if (c->key_counts[e])
			rc = groups_add(&c->g, fmt_segment_count_key(fs, c->group_col, e), c->key_counts[e]);
		c->key_counts[e] = 0;
	}
	c->stored_groups = false;
	return rc;
}

/* Block b lies wholly inside the time range. Settles the conditions on
 * counted columns from the footer (see the top of this file): returns
 * true when the block is counted (with scan) without reading it, false
 * when it must be decoded for the conditions left in *conds. */
static bool count_stored(struct count *c, const struct fmt_segment *fs, uint32_t b, uint32_t *conds,
			 bool scan)
{
	uint32_t rows = fs->blocks[b].row_count, partial = 0, part_n = 0;
	unsigned part_k = 0;
	for (unsigned k = 0; k < FMT_SEG_COUNTED_COLS; k++) {
		uint32_t bit = 1u << counted_col[k];
		if (!(*conds & bit) || !fmt_segment_count_keys(fs, counted_col[k]))
			continue;
		uint32_t n = c->want_code[k] == NO_CODE ? 0 : stored_rows(c, fs, b, counted_col[k], c->want_code[k]);
		if (n == 0)
			return true; /* no row of the block matches */
		if (n == rows) {
			*conds &= ~bit;
			continue;
		}
		partial |= bit;
		part_n = n;
		part_k = k;
	}
	bool group_stored = c->group_mask && fmt_segment_count_keys(fs, c->group_col);
	if (*conds == 0 && (!c->group_mask || group_stored)) {
		if (scan && c->group_mask) {
			uint32_t n = fmt_block_counts(fs, b, c->group_col, c->pair_code, c->pair_count);
			for (uint32_t j = 0; j < n; j++)
				stored_group_add(c, c->pair_code[j], c->pair_count[j]);
		}
		c->req->total += scan ? rows : 0;
		return true;
	}
	if (*conds == partial && (partial & (partial - 1)) == 0 && partial &&
	    (!c->group_mask || c->group_col == counted_col[part_k])) {
		if (scan && c->group_mask)
			stored_group_add(c, c->want_code[part_k], part_n);
		c->req->total += scan ? part_n : 0;
		return true;
	}
	return false;
}

bool eng_count_from_manifest(const struct eng_count *req, const struct eng_segment *g)
{
	const struct eng_filter *f = &req->filter;
	if (req->group_by != ENG_COUNT_BY_NONE || eng_filter_columns(f) != 0)
		return false;
	/* With to_ns 0 ("now", read when the count runs, later than this),
	 * an event dated in the future keeps its segment needed. */
	int64_t hi = f->to_ns ? f->to_ns : eng_now_ns();
	return g->row_count == 0 || ((!f->from_ns || g->min_occurred_ns >= f->from_ns) &&
				     g->max_occurred_ns < hi);
}

/* Counts one segment; with scan false only adds the rows it would examine
 * to *rows (the plan). */
static int count_segment(struct count *c, struct eng_segment *seg, bool scan, uint64_t *rows)
{
	uint32_t mask;
	if (seg->row_count == 0 || !range_columns(c, seg->min_occurred_ns, seg->max_occurred_ns, &mask))
		return 0;
	if (mask == 0) { /* wholly inside, nothing to decode: the manifest says it all */
		if (scan)
			c->req->total += seg->row_count;
		return 0;
	}
	int rc = eng_query_segment_open(&c->q, seg);
	if (rc)
		return rc;
	const struct fmt_segment *fs = seg->footer;
	bool read = false, stored = fs->meta.version >= 3;
	if (stored && (rc = stored_prepare(c, fs)) != 0)
		return rc;
	if (stored && c->cond_mask == 0 && !(mask & COL_OCC) &&
	    fmt_segment_count_keys(fs, c->group_col)) {
		/* Wholly inside the range, no condition, a stored group column:
		 * the segment's totals per value count it (v3). */
		if (!scan)
			return 0;
		const uint32_t *total = fmt_segment_count_totals(fs, c->group_col);
		for (uint32_t e = 0; e < fmt_segment_count_keys(fs, c->group_col); e++)
			if (total[e])
				stored_group_add(c, e, total[e]);
		c->req->total += seg->row_count;
		return stored_groups_flush(c, fs);
	}
	for (uint32_t b = 0; b < fs->meta.block_count; b++) {
		const struct fmt_block_ref *ref = &fs->blocks[b];
		uint32_t conds = c->cond_mask;
		if (!ref->row_count || !range_columns(c, ref->min_occurred_ns, ref->max_occurred_ns, &mask))
			continue;
		if ((c->cond_mask & COL_ACTOR) && !fmt_block_may_hold_actor(fs, b, c->actor_key))
			continue; /* v3: the actor is certainly not in this block */
		if (mask && !(mask & COL_OCC) && stored) {
			if (count_stored(c, fs, b, &conds, scan))
				continue;
			mask = conds | c->group_mask;
		}
		if (mask == 0) {
			c->req->total += scan ? ref->row_count : 0;
		} else if (!scan) {
			*rows += ref->row_count;
		} else {
			if ((rc = count_block(c, seg, b, mask, conds)) != 0)
				return rc;
			read = true;
		}
	}
	if (scan && read)
		c->req->segments_read++;
	return stored && scan ? stored_groups_flush(c, fs) : 0;
}

static int count_memtable(struct count *c, const struct eng_memtable *m, bool scan,
			  uint64_t *rows)
{
	uint32_t first, end;
	if (!eng_memtable_unsealed(c->t, m, &first, &end) || m->max_occurred_ns < c->lo_ns ||
	    m->min_occurred_ns >= c->hi_ns)
		return 0;
	if (!scan) {
		*rows += end - first;
		return 0;
	}
	int rc = 0;
	for (uint32_t i = first; i < end && rc == 0; i++) {
		const struct fmt_event *ev = &m->rows[i];
		ASSERT(ev->seq == m->first_seq + i); /* I1 */
		if (!eng_filter_row(c->f, c->lo_ns, c->hi_ns, ev))
			continue;
		c->req->total++;
		ASSERT(ev->outcome < OUTCOMES); /* validated before it was stored */
		if (c->req->group_by == ENG_COUNT_BY_OUTCOME)
			c->outcomes[ev->outcome]++;
		else if (c->group_mask)
			rc = groups_add(&c->g, ev->str[c->group_field], 1);
	}
	c->req->rows_scanned += end - first;
	return rc;
}

/* Pass 1 (plan, scan false): opens what must be read and sums the rows to
 * examine; pass 2 counts. */
static int count_pass(struct count *c, bool scan, uint64_t *rows)
{
	for (uint32_t k = 0; k < c->t->segment_count; k++) {
		int rc = count_segment(c, c->t->segments[k], scan, rows);
		if (rc)
			return rc;
	}
	int rc = count_memtable(c, &c->t->sealing, scan, rows);
	return rc ? rc : count_memtable(c, &c->t->active, scan, rows);
}

/* ---- result -------------------------------------------------------------- */

static int group_cmp(const void *a, const void *b, void *ctx)
{
	const struct groups *g = ctx;
	const struct group *x = *(const struct group *const *)a, *y = *(const struct group *const *)b;
	if (x->count != y->count)
		return x->count > y->count ? -1 : 1;
	struct fmt_str kx = group_key(g, x), ky = group_key(g, y);
	int r = memcmp(kx.ptr, ky.ptr, FMT_MIN(kx.len, ky.len));
	if (r)
		return r;
	return kx.len < ky.len ? -1 : (kx.len > ky.len);
}

static int results_build(struct count *c)
{
	struct groups *g = &c->g;
	for (uint32_t o = 0; o < OUTCOMES; o++) {
		int rc = c->outcomes[o] ? groups_add(g, fmt_str_c(fmt_outcome_name(o)), c->outcomes[o]) : 0;
		if (rc)
			return rc;
	}
	if (g->n == 0)
		return 0;
	struct group **order = malloc((size_t)g->n * sizeof(*order));
	size_t head = (size_t)g->n * sizeof(struct eng_count_group);
	uint8_t *mem = malloc(head + g->keys_len + 1);
	if (!order || !mem) {
		free(order);
		free(mem);
		return FMT_E_NOMEM;
	}
	uint32_t n = 0;
	for (uint32_t i = 0; i < g->cap; i++)
		if (g->slots[i].count)
			order[n++] = &g->slots[i];
	ASSERT(n == g->n);
	qsort_r(order, n, sizeof(*order), group_cmp, g);
	struct eng_count_group *out = (struct eng_count_group *)(void *)mem;
	char *keys = (char *)mem + head;
	uint64_t sum = 0;
	for (uint32_t i = 0, at = 0; i < n; i++) {
		struct fmt_str k = group_key(g, order[i]);
		if (k.len)
			memcpy(keys + at, k.ptr, k.len);
		out[i] = (struct eng_count_group){ { keys + at, k.len }, order[i]->count };
		at += k.len;
		sum += order[i]->count;
	}
	ASSERT(sum == c->req->total);
	free(order);
	c->req->result_mem = mem;
	c->req->groups = out;
	c->req->group_count = n;
	return 0;
}

/* ---- entry --------------------------------------------------------------- */

static int count_prepare(struct count *c)
{
	const struct eng_config *cfg = &c->s->eng->cfg;
	static const enum fmt_field fields[] = {
		[ENG_COUNT_BY_ACTION] = FMT_F_ACTION,
		[ENG_COUNT_BY_ACTOR_ID] = FMT_F_ACTOR_ID,
		[ENG_COUNT_BY_RESOURCE_TYPE] = FMT_F_RESOURCE_TYPE,
	};
	int rc = eng_filter_prepare(c->req->tenant, c->f, &c->lo_ns, &c->hi_ns);
	if (rc)
		return rc;
	switch (c->req->group_by) {
	case ENG_COUNT_BY_NONE:
		break;
	case ENG_COUNT_BY_OUTCOME:
		c->group_col = FMT_COL_OUTCOME;
		c->group_mask = COL_OUTCOME;
		break;
	case ENG_COUNT_BY_ACTION:
	case ENG_COUNT_BY_ACTOR_ID:
	case ENG_COUNT_BY_RESOURCE_TYPE:
		c->group_field = fields[c->req->group_by];
		c->group_col = FMT_COL_STR_FIRST + c->group_field;
		c->group_mask = 1u << c->group_col;
		break;
	default:
		return FMT_E_INVALID;
	}
	c->cond_mask = eng_filter_columns(c->f);
	if (c->cond_mask & COL_ACTOR)
		c->actor_key = fmt_actor_key(c->f->actor_id);
	c->g.max = cfg->count_groups_max;
	ASSERT(c->g.max >= 1); /* eng_open checks it */
	return 0;
}

static void count_reset_outputs(struct eng_count *req)
{
	req->status = 0;
	req->over = ENG_COUNT_OVER_NONE;
	req->limit = 0;
	req->total = 0;
	req->groups = NULL;
	req->group_count = 0;
	req->result_mem = NULL;
	req->rows_scanned = 0;
	req->segments_read = 0;
	req->segments_pruned = 0;
}

static int count_run(struct count *c)
{
	const struct eng_config *cfg = &c->s->eng->cfg;
	uint64_t rows = 0;
	int rc = count_pass(c, false, &rows);
	if (rc)
		return rc;
	if (cfg->count_scan_rows_max && rows > cfg->count_scan_rows_max) {
		c->req->over = ENG_COUNT_OVER_ROWS;
		c->req->limit = cfg->count_scan_rows_max;
		return FMT_E_TOO_BIG;
	}
	if ((rc = count_pass(c, true, &rows)) == 0)
		rc = results_build(c);
	if (rc == FMT_E_TOO_BIG) {
		c->req->over = ENG_COUNT_OVER_GROUPS;
		c->req->limit = cfg->count_groups_max;
	}
	ASSERT(rc != 0 || c->req->rows_scanned == rows);
	c->req->segments_pruned = c->t->segment_count - c->req->segments_read;
	return rc;
}

void eng_count_run(struct eng_shard *s, struct eng_count *req)
{
	struct count c = { .s = s, .req = req, .f = &req->filter };
	count_reset_outputs(req);
	eng_query_begin(&c.q, s, "count", &req->hdr, &req->profile);
	int rc = count_prepare(&c);
	if (rc == 0 && (c.t = eng_tenant_find(s, req->tenant)) != NULL) {
		ASSERT(c.t->name_len == req->tenant.len &&
		       memcmp(c.t->name, req->tenant.ptr, req->tenant.len) == 0);
		c.q.t = c.t;
		rc = count_run(&c);
	} /* else: an unknown tenant has no events */
	if (rc) {
		eng_count_release(req);
		req->total = 0;
		req->status = rc;
		if (req->over)
			s->stats.counts_refused++;
	}
	s->stats.count_rows_scanned += req->rows_scanned;
	eng_query_end(&c.q);
	req->profile.scan_ns = req->profile.run_ns; /* one phase */
	groups_free(&c.g);
	free(c.sel);
	free(c.code_counts);
	free(c.match);
	free(c.pair_code);
	free(c.pair_count);
	free(c.key_counts);
}
