// SPDX-License-Identifier: Apache-2.0
/*
 * search.c — SearchRequest (DESIGN.md §5), run on the shard thread that
 * owns the tenant: filter one tenant's events, order them by (occurred_at,
 * seq), return one page and a token for the next.
 *
 * Sources ("units"). The tenant's sealed segments, and the rows of its
 * two memtables — the one a seal round froze (kept until its segment is
 * stored) and the active one — that are durable (I3) and not already in a
 * segment (rows are told apart by seq, which is unique per tenant). Only
 * the tenant named by the request is looked up; a segment whose footer
 * names another tenant is reported as corrupt, never read. The filter
 * checks, which memtable rows are seen and the segment reads are shared
 * with count.c (read.c).
 *
 * Order and cursor. "Output order" is (occurred_at desc, seq desc), or asc
 * for oldest_first. Every unit and every block has a *best* bound, the
 * earliest key in output order any of its rows can have — (max occurred,
 * last seq) newest first, (min occurred, first seq) oldest first — and a
 * *worst* bound. Units are visited best first, and the blocks of a segment
 * too, so the scan meets the likely hits early.
 *
 * Two phases. Phase 1 reads and decodes only the columns the filters and
 * the order need (seq, occurred_at, and the filtered string, outcome and
 * event_id columns) and keeps the best `limit` matching rows in a binary
 * heap whose root is the worst of them; a unit or block is skipped without
 * reading when it is outside the time range, wholly at or before the
 * cursor, or when the heap is full and its best bound cannot beat the root
 * (then every later unit or block is skipped too: they are sorted), or,
 * with an event_id filter, when the segment's event-id index (min/max id
 * and Bloom filter per block, in the footer: FORMAT.md §5.5) says the
 * block cannot hold that id, or with an actor_id filter, when the block's
 * actor filter (format v3, FORMAT.md §5.5.2) rules the actor out; a
 * segment none of whose blocks can match is pruned without reading a
 * chunk. Version-1 segments have no index and are
 * scanned. A block that a lookup by id does read is first read by its
 * event_id chunk alone, and left there when the id is not in it (a Bloom
 * false positive, or a version-1 block). The memtable is always scanned
 * (they are in memory). Phase
 * 2 decodes all columns of just the blocks that hold the final hits, one
 * block at a time, and copies each hit, its strings and attributes once,
 * into ONE buffer (req->result_mem) so results stay valid however the
 * memtable changes. Memory: the heap (`limit` entries), one decoded block
 * and the results (limit x event size).
 * Phase 2 asks for the blocks of up to ENG_QUERY_BLOCKS_MAX groups of
 * hits at once (eng_query_blocks), so that their decodes run together on
 * the shard thread and its query helpers (helper.c); at most that many
 * decoded blocks are held at a time.
 * Blocks come through eng_query_block() (read.c), so the shard's cache of
 * decoded blocks (block_cache.c) serves a block that a recent query
 * decoded with the columns asked for: phase 2's full decodes serve both
 * phases of the next search that reaches the same blocks (the second of
 * "failures, then denials" of a day, or the same page asked again).
 *
 * Page token (26 bytes, little-endian):
 *   [0] version 1 [1] flags (bit 0: oldest_first) [2..10) occurred_at_ns
 *   [10..18) seq [18..26) XXH3-64 over the body, the tenant and the filter.
 * It means "strictly after this key in output order". A token of another
 * length, version, direction, tenant or filter is refused (FMT_E_INVALID).
 * The checksum catches mistakes, not forgers, and need not: the token only
 * moves a cursor within the requesting tenant's own events, which the
 * request names; it carries no authority. A token is returned when a page
 * holds `limit` hits and a matching row was left out (or a block was
 * skipped because the heap was full), or when the scan stopped early.
 *
 * Scan cap (cfg.search_scan_rows_max; 0: none). Rows examined are counted
 * per decoded block (the memtable counts as one block). Before each block
 * the cap is checked; when reached, let F be the best bound of everything
 * not yet scanned. Every unscanned row is at or after F, so the hits
 * strictly before F are exactly right; hits at or after F are dropped and
 * the token points just before F, so the next page resumes there: the
 * client gets fewer than `limit` hits (maybe none) and a token, never a
 * wrong order or a gap. To guarantee progress the scan stops only where
 * the new cursor is strictly past the request's; blocks that straddle the
 * request's cursor are always finished, so the cap is soft (with zone maps
 * that overlap everywhere, a page can scan everything). F is always some
 * block's or unit's bound, so a full walk takes at most one page per block.
 *
 * Time range: from_ns inclusive (0: no lower bound), to_ns exclusive (0:
 * now, read once per request, as DESIGN.md §5 says; an event whose client
 * clock put it in the future shows up once its time has come). An explicit
 * from_ns > to_ns, an outcome outside
 * enum fmt_outcome or a malformed tenant id is FMT_E_INVALID; a well-formed
 * tenant this shard does not know simply has no events (status 0).
 *
 * Counters: rows_scanned as above; segments_read counts segments with at
 * least one block read (or taken from the block cache); segments_pruned
 * those skipped without reading a chunk (by manifest time range, cursor, zone maps, the event-id index or
 * the heap bound).
 * Segments left unvisited by the scan cap count in neither.
 */
#include "engine/internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <unistd.h>

#define TOKEN_VERSION 1
#define TOKEN_FLAG_OLDEST 1u
#define TOKEN_BODY_BYTES 18
#define TOKEN_BYTES (TOKEN_BODY_BYTES + 8)
#define FILTER_STRINGS 4
#define DIGEST_INPUT_BYTES \
	(TOKEN_BODY_BYTES + 1 + FMT_TENANT_MAX + 8 + 8 + FILTER_STRINGS * 12 + 4 + 1 + FMT_EVENT_ID_BYTES)

_Static_assert(TOKEN_BYTES <= ENG_PAGE_TOKEN_BYTES, "page token too long");
_Static_assert(ENG_SEARCH_LIMIT_DEFAULT <= ENG_SEARCH_LIMIT_MAX, "default over max");
_Static_assert(sizeof(struct eng_hit) % _Alignof(struct fmt_attr) == 0, "hit packing alignment");
_Static_assert(FMT_COL_COUNT <= 32, "column masks are 32 bits");

struct key {
	int64_t occ;
	uint64_t seq;
};

/* A matching row found by phase 1. */
struct cand {
	struct key key;
	uint32_t unit;
	uint32_t block;   /* 0 for the memtable */
	uint32_t row;     /* within the block, or memtable row index */
};

/* A source: one sealed segment, or the memtable's rows [row_first, row_end). */
struct unit {
	struct eng_segment *seg;   /* NULL: the memtable mem */
	const struct eng_memtable *mem;
	struct key lo, hi;         /* every row's key is within [lo, hi] */
	uint32_t row_first, row_end;
};

struct search {
	struct eng_shard *s;
	struct eng_search *req;
	const struct eng_filter *f;
	struct eng_tenant *t;
	bool newest;
	bool has_cursor;
	struct key cursor;         /* rows strictly after it in output order */
	int64_t lo_ns;             /* inclusive */
	int64_t hi_ns;             /* exclusive, when has_hi */
	bool has_hi;
	uint64_t id_key;           /* fmt_event_id_key(filter event_id), when it has one */
	uint64_t actor_key;        /* fmt_actor_key(filter actor_id), when it has one */
	uint32_t mask;             /* phase-1 columns */
	uint32_t limit;
	uint64_t scan_max;
	struct unit *units;
	uint32_t unit_count;
	struct cand *heap;         /* root: the worst kept candidate */
	uint32_t heap_count;
	bool more;                 /* a matching row may have been left out */
	bool cut;                  /* stopped by the scan cap */
	struct key cut_cursor;
	uint32_t *order;           /* block order within one segment */
	uint32_t order_cap;
	struct eng_query q;        /* segment reads (read.c) */
	struct fmt_attr *attrs;    /* FMT_ATTRS_HARD_MAX slots */
};

/* ---- keys and order ------------------------------------------------------ */

static int key_cmp(struct key a, struct key b)
{
	if (a.occ != b.occ)
		return a.occ < b.occ ? -1 : 1;
	if (a.seq != b.seq)
		return a.seq < b.seq ? -1 : 1;
	return 0;
}

/* < 0 when a comes before b in the request's output order. */
static int out_cmp(const struct search *c, struct key a, struct key b)
{
	int r = key_cmp(a, b);
	return c->newest ? -r : r;
}

/* The key just before k in output order. */
static struct key key_pred_out(const struct search *c, struct key k)
{
	if (c->newest) {
		if (k.seq != UINT64_MAX)
			return (struct key){ k.occ, k.seq + 1 };
		ASSERT(k.occ != INT64_MAX);
		return (struct key){ k.occ + 1, 0 };
	}
	if (k.seq != 0)
		return (struct key){ k.occ, k.seq - 1 };
	ASSERT(k.occ != INT64_MIN);
	return (struct key){ k.occ - 1, UINT64_MAX };
}

static struct key bound_best(const struct search *c, struct key lo, struct key hi)
{
	return c->newest ? hi : lo;
}

static struct key bound_worst(const struct search *c, struct key lo, struct key hi)
{
	return c->newest ? lo : hi;
}

static struct key unit_best(const struct search *c, const struct unit *u)
{
	return bound_best(c, u->lo, u->hi);
}

static struct key block_lo(const struct fmt_block_ref *b)
{
	return (struct key){ b->min_occurred_ns, b->first_seq };
}

static struct key block_hi(const struct fmt_block_ref *b)
{
	return (struct key){ b->max_occurred_ns, b->last_seq };
}

/* Whether rows within [lo, hi] can be in the time range and after the cursor. */
static bool bounds_may_match(const struct search *c, struct key lo, struct key hi)
{
	if (hi.occ < c->lo_ns || (c->has_hi && lo.occ >= c->hi_ns))
		return false;
	return !c->has_cursor || out_cmp(c, bound_worst(c, lo, hi), c->cursor) > 0;
}

/* ---- request checks and page tokens -------------------------------------- */

static int filter_check(struct search *c)
{
	c->has_hi = true;
	return eng_filter_prepare(c->req->tenant, c->f, &c->lo_ns, &c->hi_ns);
}

static uint64_t str_hash(struct fmt_str s)
{
	return s.len ? fmt_xxh3(s.ptr, s.len) : fmt_xxh3("", 0);
}

/* XXH3-64 binding a token body to the tenant, the filter and (through the
 * body's flags) the direction. */
static uint64_t token_digest(const struct search *c, const uint8_t body[TOKEN_BODY_BYTES])
{
	const struct eng_filter *f = c->f;
	const struct fmt_str strs[FILTER_STRINGS] = { f->actor_id, f->action, f->resource_type,
						      f->resource_id };
	uint8_t buf[DIGEST_INPUT_BYTES];
	uint8_t *p = buf;
	memcpy(p, body, TOKEN_BODY_BYTES);
	p += TOKEN_BODY_BYTES;
	ASSERT(c->req->tenant.len <= FMT_TENANT_MAX);
	*p++ = (uint8_t)c->req->tenant.len;
	memset(p, 0, FMT_TENANT_MAX);
	memcpy(p, c->req->tenant.ptr, c->req->tenant.len);
	p += FMT_TENANT_MAX;
	fmt_put_u64(p, (uint64_t)f->from_ns);
	fmt_put_u64(p + 8, (uint64_t)f->to_ns);
	p += 16;
	for (uint32_t i = 0; i < FILTER_STRINGS; i++, p += 12) {
		fmt_put_u32(p, strs[i].len);
		fmt_put_u64(p + 4, str_hash(strs[i]));
	}
	fmt_put_u32(p, f->outcome);
	p += 4;
	*p++ = f->has_event_id ? 1 : 0;
	if (f->has_event_id)
		memcpy(p, f->event_id, FMT_EVENT_ID_BYTES);
	else
		memset(p, 0, FMT_EVENT_ID_BYTES);
	p += FMT_EVENT_ID_BYTES;
	ASSERT(p == buf + sizeof(buf));
	return fmt_xxh3(buf, sizeof(buf));
}

static int token_parse(struct search *c)
{
	const struct eng_search *req = c->req;
	if (req->page_token_len == 0)
		return 0;
	if (!req->page_token || req->page_token_len != TOKEN_BYTES)
		return FMT_E_INVALID;
	const uint8_t *p = req->page_token;
	uint8_t flags = c->newest ? 0 : TOKEN_FLAG_OLDEST;
	if (p[0] != TOKEN_VERSION || p[1] != flags)
		return FMT_E_INVALID;
	if (fmt_get_u64(p + TOKEN_BODY_BYTES) != token_digest(c, p))
		return FMT_E_INVALID;
	c->cursor.occ = (int64_t)fmt_get_u64(p + 2);
	c->cursor.seq = fmt_get_u64(p + 10);
	c->has_cursor = true;
	return 0;
}

static void token_write(struct search *c, struct key k)
{
	uint8_t *p = c->req->next_page_token;
	p[0] = TOKEN_VERSION;
	p[1] = c->newest ? 0 : TOKEN_FLAG_OLDEST;
	fmt_put_u64(p + 2, (uint64_t)k.occ);
	fmt_put_u64(p + 10, k.seq);
	fmt_put_u64(p + TOKEN_BODY_BYTES, token_digest(c, p));
	c->req->next_page_token_len = TOKEN_BYTES;
}

/* ---- units --------------------------------------------------------------- */

static int unit_cmp(const void *a, const void *b, void *ctx)
{
	const struct search *c = ctx;
	return out_cmp(c, unit_best(c, a), unit_best(c, b));
}

/* A memtable's durable rows that no segment holds yet. */
static void unit_add_memtable(struct search *c, const struct eng_memtable *m)
{
	uint32_t first, end;
	if (!eng_memtable_unsealed(c->t, m, &first, &end))
		return;
	struct unit u = {
		.seg = NULL,
		.mem = m,
		.lo = { m->min_occurred_ns, m->first_seq + first },
		.hi = { m->max_occurred_ns, m->first_seq + end - 1 },
		.row_first = first,
		.row_end = end,
	};
	if (bounds_may_match(c, u.lo, u.hi))
		c->units[c->unit_count++] = u;
}

static int units_build(struct search *c)
{
	const struct eng_tenant *t = c->t;
	c->units = calloc((size_t)t->segment_count + 2, sizeof(*c->units));
	if (!c->units)
		return FMT_E_NOMEM;
	for (uint32_t i = 0; i < t->segment_count; i++) {
		struct eng_segment *seg = t->segments[i];
		ASSERT(seg->row_count == 0 || seg->first_seq <= seg->last_seq);
		struct unit u = {
			.seg = seg,
			.lo = { seg->min_occurred_ns, seg->first_seq },
			.hi = { seg->max_occurred_ns, seg->last_seq },
		};
		if (seg->row_count == 0 || !bounds_may_match(c, u.lo, u.hi)) {
			c->req->segments_pruned++;
			continue;
		}
		c->units[c->unit_count++] = u;
	}
	unit_add_memtable(c, &t->sealing);
	unit_add_memtable(c, &t->active);
	qsort_r(c->units, c->unit_count, sizeof(*c->units), unit_cmp, c);
	return 0;
}

/* ---- candidates ---------------------------------------------------------- */

static bool row_matches(const struct search *c, const struct fmt_event *ev)
{
	ASSERT(c->has_hi);
	if (c->has_cursor &&
	    out_cmp(c, (struct key){ ev->occurred_at_ns, ev->seq }, c->cursor) <= 0)
		return false;
	return eng_filter_row(c->f, c->lo_ns, c->hi_ns, ev);
}

static bool heap_full(const struct search *c)
{
	return c->heap_count == c->limit;
}

static void heap_swap(struct cand *h, uint32_t a, uint32_t b)
{
	struct cand tmp = h[a];
	h[a] = h[b];
	h[b] = tmp;
}

static void heap_sift_up(struct search *c, uint32_t i)
{
	while (i > 0) {
		uint32_t parent = (i - 1) / 2;
		if (out_cmp(c, c->heap[i].key, c->heap[parent].key) <= 0)
			break;
		heap_swap(c->heap, i, parent);
		i = parent;
	}
}

static void heap_sift_down(struct search *c, uint32_t i)
{
	for (;;) { /* bounded: i at least doubles each round */
		uint32_t l = 2 * i + 1, r = l + 1, worst = i;
		if (l < c->heap_count && out_cmp(c, c->heap[l].key, c->heap[worst].key) > 0)
			worst = l;
		if (r < c->heap_count && out_cmp(c, c->heap[r].key, c->heap[worst].key) > 0)
			worst = r;
		if (worst == i)
			return;
		heap_swap(c->heap, i, worst);
		i = worst;
	}
}

static void heap_offer(struct search *c, struct cand cd)
{
	if (!heap_full(c)) {
		c->heap[c->heap_count++] = cd;
		heap_sift_up(c, c->heap_count - 1);
		return;
	}
	c->more = true;
	if (out_cmp(c, cd.key, c->heap[0].key) >= 0)
		return;
	c->heap[0] = cd;
	heap_sift_down(c, 0);
}

/* Whether nothing at or after `best` can enter the heap any more. */
static bool heap_excludes(struct search *c, struct key best)
{
	if (!heap_full(c) || out_cmp(c, best, c->heap[0].key) < 0)
		return false;
	c->more = true;
	return true;
}

/* At the scan cap, decides whether to stop before a block whose best bound
 * is `best`, units [next, unit_count) being still unvisited. */
static bool maybe_cut(struct search *c, struct key best, uint32_t next)
{
	if (c->req->rows_scanned < c->scan_max)
		return false;
	struct key frontier = best;
	if (next < c->unit_count) {
		struct key nb = unit_best(c, &c->units[next]);
		if (out_cmp(c, nb, frontier) < 0)
			frontier = nb;
	}
	struct key cur = key_pred_out(c, frontier);
	if (c->has_cursor && out_cmp(c, cur, c->cursor) <= 0)
		return false; /* no progress yet: finish the straddling blocks */
	c->cut = true;
	c->cut_cursor = cur;
	return true;
}

/* ---- reading segments ---------------------------------------------------- */

static int block_load(struct search *c, struct eng_segment *seg, uint32_t b, uint32_t mask,
		      struct fmt_block **out)
{
	return eng_query_block(&c->q, seg, b, mask, out);
}

struct block_sort {
	const struct search *c;
	const struct fmt_block_ref *blocks;
};

static int block_cmp(const void *a, const void *b, void *ctx)
{
	const struct block_sort *bs = ctx;
	const struct fmt_block_ref *x = &bs->blocks[*(const uint32_t *)a];
	const struct fmt_block_ref *y = &bs->blocks[*(const uint32_t *)b];
	return out_cmp(bs->c, bound_best(bs->c, block_lo(x), block_hi(x)),
		       bound_best(bs->c, block_lo(y), block_hi(y)));
}

/* Fills c->order with the blocks that may hold matches, best first. */
static int block_order(struct search *c, const struct fmt_segment *fs, uint32_t *n)
{
	uint32_t count = fs->meta.block_count;
	if (count > c->order_cap) {
		uint32_t *p = realloc(c->order, (size_t)count * sizeof(*p));
		if (!p)
			return FMT_E_NOMEM;
		c->order = p;
		c->order_cap = count;
	}
	*n = 0;
	for (uint32_t b = 0; b < count; b++) {
		const struct fmt_block_ref *ref = &fs->blocks[b];
		if (!ref->row_count || !bounds_may_match(c, block_lo(ref), block_hi(ref)))
			continue;
		if (c->f->has_event_id && !fmt_block_may_hold_id(fs, b, c->f->event_id, c->id_key))
			continue; /* certainly not in this block: never read */
		if (c->f->actor_id.len && !fmt_block_may_hold_actor(fs, b, c->actor_key))
			continue; /* v3: the block's actor filter rules the actor out */
		c->order[(*n)++] = b;
	}
	struct block_sort bs = { c, fs->blocks };
	qsort_r(c->order, *n, sizeof(*c->order), block_cmp, &bs);
	return 0;
}

/* ---- phase 1: scan ------------------------------------------------------- */

/* A lookup by event id first reads the block's event_id chunk alone: most
 * blocks it reads are Bloom false positives (or version-1 blocks), and an
 * id absent from the block ends the visit there, before the other columns
 * are read and every row is viewed. Sets *absent; counts the rows then. */
static int id_precheck(struct search *c, struct eng_segment *seg, uint32_t b, bool *absent)
{
	struct fmt_block *blk;
	int rc = block_load(c, seg, b, 1u << FMT_COL_EVENT_ID, &blk);
	if (rc)
		return rc;
	*absent = !fmt_block_has_event_id(blk, c->f->event_id);
	if (*absent)
		c->req->rows_scanned += fmt_block_rows(blk);
	eng_query_block_release(&c->q, blk);
	return 0;
}

static int scan_block(struct search *c, uint32_t u, uint32_t b)
{
	struct eng_segment *seg = c->units[u].seg;
	const struct fmt_block_ref *ref = &seg->footer->blocks[b];
	struct fmt_block *blk;
	bool absent = false;
	int rc = c->f->has_event_id ? id_precheck(c, seg, b, &absent) : 0;
	if (rc || absent)
		return rc;
	rc = block_load(c, seg, b, c->mask, &blk);
	if (rc)
		return rc;
	/* Rows are in seq order; visiting them in output order (backwards when
	 * newest first) fills the heap with the likely hits first, so that most
	 * later rows lose against its root without a sift. */
	struct fmt_event ev = { 0 }; /* row_matches reads only phase-1 columns */
	for (uint32_t k = 0; k < ref->row_count; k++) {
		uint32_t i = c->newest ? ref->row_count - 1 - k : k;
		fmt_block_row_cols(blk, i, c->mask, &ev);
		ASSERT(ev.seq == ref->first_seq + i);
		if (row_matches(c, &ev))
			heap_offer(c, (struct cand){ { ev.occurred_at_ns, ev.seq }, u, b, i });
	}
	c->req->rows_scanned += ref->row_count;
	eng_query_block_release(&c->q, blk);
	return 0;
}

static int scan_segment(struct search *c, uint32_t u)
{
	struct eng_segment *seg = c->units[u].seg;
	int rc = eng_query_segment_open(&c->q, seg);
	if (rc)
		return rc;
	uint32_t n;
	if ((rc = block_order(c, seg->footer, &n)) != 0)
		return rc;
	bool read = false;
	for (uint32_t i = 0; i < n; i++) {
		const struct fmt_block_ref *ref = &seg->footer->blocks[c->order[i]];
		struct key best = bound_best(c, block_lo(ref), block_hi(ref));
		if (heap_excludes(c, best) || maybe_cut(c, best, u + 1))
			break; /* sorted: no later block can do better */
		if ((rc = scan_block(c, u, c->order[i])) != 0)
			return rc;
		read = true;
	}
	if (read)
		c->req->segments_read++;
	else if (!c->cut)
		c->req->segments_pruned++;
	return 0;
}

static void scan_memtable(struct search *c, uint32_t u)
{
	const struct unit *un = &c->units[u];
	const struct eng_memtable *m = un->mem;
	for (uint32_t k = un->row_first; k < un->row_end; k++) {
		uint32_t i = c->newest ? un->row_end - 1 - (k - un->row_first) : k;
		const struct fmt_event *ev = &m->rows[i];
		ASSERT(ev->seq == m->first_seq + i); /* I1 */
		if (row_matches(c, ev))
			heap_offer(c, (struct cand){ { ev->occurred_at_ns, ev->seq }, u, 0, i });
	}
	c->req->rows_scanned += un->row_end - un->row_first;
}

static int scan_all(struct search *c)
{
	for (uint32_t u = 0; u < c->unit_count; u++) {
		struct key best = unit_best(c, &c->units[u]);
		if (heap_excludes(c, best)) {
			for (uint32_t k = u; k < c->unit_count; k++)
				c->req->segments_pruned += c->units[k].seg ? 1 : 0;
			return 0;
		}
		if (maybe_cut(c, best, u + 1))
			return 0;
		if (c->units[u].seg) {
			int rc = scan_segment(c, u);
			if (rc)
				return rc;
		} else {
			scan_memtable(c, u);
		}
		if (c->cut)
			return 0;
	}
	return 0;
}

/* ---- phase 2: results ---------------------------------------------------- */

/* The results are built in ONE buffer, req->result_mem:
 *
 *   [n struct eng_hit][hit copy][hit copy]...   a hit copy: its attribute
 *                                               array, then the bytes of its
 *                                               attribute keys and values,
 *                                               tenant, strings and details
 *
 * Each hit is copied once, straight from its decoded block (or memtable
 * row), in block order; the buffer grows (and may move) as copies are
 * added, so a hit's pointers are set only at the end, from its copy's
 * offset and its lengths (hit_layout). */
struct writer {
	uint8_t *mem;   /* NULL: only count */
	size_t at;
	bool copy;      /* false: the bytes are there already, only point at them */
};

static struct fmt_str put_str(struct writer *w, struct fmt_str s)
{
	struct fmt_str r = { NULL, s.len };
	if (w->mem) {
		r.ptr = (const char *)w->mem + w->at;
		if (w->copy && s.len)
			memcpy(w->mem + w->at, s.ptr, s.len);
	}
	w->at += s.len;
	return r;
}

/* One hit copy at mem. With src: copies src there (mem NULL: only sizes
 * it) and sets *ev to the copy. Without: *ev's lengths and the attribute
 * array at mem are right, and only *ev's pointers are set to the copy at
 * mem (after the buffer moved). Returns the bytes the copy takes, rounded
 * up so that the next copy's attribute array is aligned. */
static size_t hit_layout(struct fmt_event *ev, const struct fmt_event *src, uint8_t *mem)
{
	const struct fmt_event *from = src ? src : ev;
	struct writer w = { mem, (size_t)from->attr_count * sizeof(struct fmt_attr), src != NULL };
	struct fmt_attr *attrs = (struct fmt_attr *)(void *)mem;
	struct fmt_event out = *from;
	out.attrs = (mem && from->attr_count) ? attrs : NULL;
	for (uint32_t k = 0; k < from->attr_count; k++) {
		struct fmt_attr a = src ? src->attrs[k] : attrs[k];
		a.key = put_str(&w, a.key);
		a.value = put_str(&w, a.value);
		if (mem)
			attrs[k] = a;
	}
	out.tenant = put_str(&w, from->tenant);
	for (uint32_t f = 0; f < FMT_F_STRING_COUNT; f++)
		out.str[f] = put_str(&w, from->str[f]);
	out.details_json = put_str(&w, from->details_json);
	if (ev)
		*ev = out;
	return (w.at + 7) & ~(size_t)7;
}

struct results {
	uint8_t *mem;
	size_t len, cap;
	size_t *off;    /* per hit: where its copy starts in mem */
};

/* Copies ev as hit h, growing the buffer as needed. */
static int results_add(struct results *r, uint32_t h, const struct fmt_event *ev,
		       const uint8_t chain[FMT_HASH_BYTES])
{
	size_t need = hit_layout(NULL, ev, NULL);
	if (r->cap - r->len < need) {
		size_t cap = FMT_MAX(r->cap * 2, r->len + need);
		uint8_t *mem = realloc(r->mem, cap);
		if (!mem)
			return FMT_E_NOMEM;
		r->mem = mem;
		r->cap = cap;
	}
	struct eng_hit *hit = (struct eng_hit *)(void *)r->mem + h;
	r->off[h] = r->len;
	r->len += hit_layout(&hit->ev, ev, r->mem + r->len);
	memcpy(hit->chain, chain, FMT_HASH_BYTES);
	return 0;
}

static int cand_pos_cmp(const void *a, const void *b, void *ctx)
{
	const struct cand *cands = ctx;
	const struct cand *x = &cands[*(const uint32_t *)a], *y = &cands[*(const uint32_t *)b];
	if (x->unit != y->unit)
		return x->unit < y->unit ? -1 : 1;
	if (x->block != y->block)
		return x->block < y->block ? -1 : 1;
	return x->row < y->row ? -1 : (x->row > y->row);
}

/* Copies the k hits idx[0..k) that share one block: blk, or the memtable
 * when blk is NULL. */
static int results_add_group(struct search *c, struct results *r, const struct cand *hits,
			     const uint32_t *idx, uint32_t k, const struct fmt_block *blk)
{
	const struct unit *un = &c->units[hits[idx[0]].unit];
	int rc = 0;
	if (!blk) {
		const struct eng_memtable *m = un->mem;
		for (uint32_t i = 0; i < k && rc == 0; i++) {
			uint32_t row = hits[idx[i]].row;
			rc = results_add(r, idx[i], &m->rows[row], m->chains[row]);
		}
		return rc;
	}
	for (uint32_t i = 0; i < k && rc == 0; i++) {
		uint32_t h = idx[i];
		struct fmt_event ev;
		uint8_t chain[FMT_HASH_BYTES];
		fmt_block_row(un->seg->footer, blk, hits[h].row, &ev, c->attrs, FMT_ATTRS_HARD_MAX,
			      chain);
		/* Phase 1 read the same row from the same immutable file. */
		ASSERT(ev.seq == hits[h].key.seq && ev.occurred_at_ns == hits[h].key.occ);
		rc = results_add(r, h, &ev, chain);
	}
	return rc;
}

/* Copies the hits of groups [g0, g1) (group g: idx[at[g]..at[g + 1]), one
 * block or the memtable each), whose segment blocks are read and decoded
 * together (eng_query_blocks: beside the query helpers). Returns the end
 * of what it did: g1, or where ENG_QUERY_BLOCKS_MAX blocks were reached. */
static int results_add_groups(struct search *c, struct results *r, const struct cand *hits,
			      const uint32_t *idx, const uint32_t *at, uint32_t g0, uint32_t g1,
			      uint32_t *end)
{
	struct eng_block_want want[ENG_QUERY_BLOCKS_MAX];
	uint32_t n = 0, g = g0;
	for (; g < g1; g++) {
		const struct cand *first = &hits[idx[at[g]]];
		struct eng_segment *seg = c->units[first->unit].seg;
		if (!seg)
			continue;
		if (n == ENG_QUERY_BLOCKS_MAX)
			break;
		want[n++] = (struct eng_block_want){ .seg = seg, .block = first->block };
	}
	*end = g;
	int rc = n ? eng_query_blocks(&c->q, want, n, FMT_COLS_ALL) : 0;
	for (uint32_t k = 0; rc == 0 && g0 < *end; g0++) {
		const struct fmt_block *blk = c->units[hits[idx[at[g0]]].unit].seg ? want[k++].blk : NULL;
		rc = results_add_group(c, r, hits, idx + at[g0], at[g0 + 1] - at[g0], blk);
	}
	for (uint32_t k = 0; k < n && want[k].blk; k++)
		eng_query_block_release(&c->q, want[k].blk);
	return rc;
}

/* Builds req->result_mem from the n hits in output order. */
static int results_build(struct search *c, const struct cand *hits, uint32_t n)
{
	/* A first guess of the room: typical events take well under 1 KiB. */
	size_t head = (size_t)n * sizeof(struct eng_hit);
	struct results r = { .mem = malloc(head + (size_t)n * 1024), .len = head,
			     .cap = head + (size_t)n * 1024 };
	r.off = malloc((size_t)n * sizeof(*r.off));
	uint32_t *idx = malloc((size_t)n * sizeof(*idx));
	uint32_t *at = malloc(((size_t)n + 1) * sizeof(*at));
	int rc = FMT_E_NOMEM;
	if (!r.mem || !r.off || !idx || !at)
		goto fail;
	for (uint32_t i = 0; i < n; i++)
		idx[i] = i;
	qsort_r(idx, n, sizeof(*idx), cand_pos_cmp, (void *)hits);
	uint32_t groups = 0;
	for (uint32_t i = 0; i < n; i++) {
		const struct cand *x = &hits[idx[i]];
		if (i == 0 || x->unit != hits[idx[i - 1]].unit || x->block != hits[idx[i - 1]].block)
			at[groups++] = i;
	}
	at[groups] = n;
	rc = 0;
	for (uint32_t g = 0; g < groups && rc == 0;)
		rc = results_add_groups(c, &r, hits, idx, at, g, groups, &g);
	if (rc)
		goto fail;
	struct eng_hit *out = (struct eng_hit *)(void *)r.mem;
	for (uint32_t h = 0; h < n; h++)
		hit_layout(&out[h].ev, NULL, r.mem + r.off[h]);
	c->req->result_mem = r.mem;
	c->req->hits = out;
	c->req->hit_count = n;
	r.mem = NULL;
fail:
	free(r.mem);
	free(r.off);
	free(idx);
	free(at);
	return rc;
}

/* Empties the heap into output order, drops what the scan cap left
 * unresolved, builds the hits and the next page token. */
static int finish(struct search *c)
{
	uint32_t n = c->heap_count;
	struct cand *sorted = malloc((size_t)FMT_MAX(n, 1u) * sizeof(*sorted));
	if (!sorted)
		return FMT_E_NOMEM;
	for (uint32_t i = n; i-- > 0;) {
		sorted[i] = c->heap[0];
		c->heap[0] = c->heap[--c->heap_count];
		heap_sift_down(c, 0);
	}
	for (uint32_t i = 1; i < n; i++)
		ASSERT(out_cmp(c, sorted[i - 1].key, sorted[i].key) < 0);
	while (c->cut && n > 0 && out_cmp(c, sorted[n - 1].key, c->cut_cursor) > 0)
		n--;
	int rc = n ? results_build(c, sorted, n) : 0;
	if (rc == 0 && n == c->limit && (c->more || c->cut))
		token_write(c, sorted[n - 1].key);
	else if (rc == 0 && c->cut)
		token_write(c, c->cut_cursor);
	free(sorted);
	return rc;
}

/* ---- entry --------------------------------------------------------------- */

static int search_prepare(struct search *c)
{
	const struct eng_config *cfg = &c->s->eng->cfg;
	int rc = filter_check(c);
	if (rc == 0)
		rc = token_parse(c);
	if (rc)
		return rc;
	c->limit = c->req->limit ? FMT_MIN(c->req->limit, (uint32_t)ENG_SEARCH_LIMIT_MAX)
				 : ENG_SEARCH_LIMIT_DEFAULT;
	c->scan_max = cfg->search_scan_rows_max ? cfg->search_scan_rows_max : UINT64_MAX;
	c->mask = (1u << FMT_COL_SEQ) | (1u << FMT_COL_OCCURRED_AT) | eng_filter_columns(c->f);
	if (c->f->has_event_id)
		c->id_key = fmt_event_id_key(c->f->event_id);
	if (c->f->actor_id.len)
		c->actor_key = fmt_actor_key(c->f->actor_id);
	c->heap = malloc((size_t)c->limit * sizeof(*c->heap));
	c->attrs = malloc(FMT_ATTRS_HARD_MAX * sizeof(*c->attrs));
	if (!c->heap || !c->attrs)
		return FMT_E_NOMEM;
	return 0;
}

static void search_reset_outputs(struct eng_search *req)
{
	req->status = 0;
	req->hits = NULL;
	req->hit_count = 0;
	req->result_mem = NULL;
	req->next_page_token_len = 0;
	req->rows_scanned = 0;
	req->segments_read = 0;
	req->segments_pruned = 0;
}

void eng_search_run(struct eng_shard *s, struct eng_search *req)
{
	struct search c = { .s = s, .req = req, .f = &req->filter, .newest = !req->oldest_first };
	search_reset_outputs(req);
	eng_query_begin(&c.q, s, "search", &req->hdr, &req->profile);
	int rc = search_prepare(&c);
	if (rc)
		goto fail;
	c.t = eng_tenant_find(s, req->tenant);
	if (!c.t)
		goto done; /* an unknown tenant has no events */
	c.q.t = c.t;
	ASSERT(c.t->name_len == req->tenant.len &&
	       memcmp(c.t->name, req->tenant.ptr, req->tenant.len) == 0);
	if ((rc = units_build(&c)) != 0 || (rc = scan_all(&c)) != 0)
		goto fail;
	req->profile.scan_ns = eng_mono_ns() - c.q.start_ns;
	if ((rc = finish(&c)) != 0)
		goto fail;
	goto done;
fail:
	eng_search_release(req);
	req->next_page_token_len = 0;
	req->status = rc;
done:
	free(c.units);
	free(c.heap);
	free(c.order);
	eng_query_end(&c.q);
	free(c.attrs);
}
