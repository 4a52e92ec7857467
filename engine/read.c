// SPDX-License-Identifier: Apache-2.0
/*
 * read.c — what the queries (search.c, count.c) share: the checks of a
 * filter, the evaluation of a filter on one row, which memtable rows a
 * query sees, and reading a tenant's segment blocks on the shard thread.
 *
 * Filter (DESIGN.md §5, ADR 0005): from_ns inclusive (0: no lower bound),
 * to_ns exclusive (0: now, read once per request); string filters and the
 * event_id are exact matches; outcome 0 means any. All conditions AND.
 *
 * Memtable rows a query sees: the durable ones (I3) that no segment holds
 * yet. While a seal is in progress its rows stay in the memtable until the
 * segment is stored, so rows are told apart by seq (unique per tenant).
 *
 * Segment reads. A segment is opened through the shard's open-segment
 * cache (its footer kept), and checked against the manifest before any
 * chunk is read: a footer naming another tenant, segment or seq range is
 * FMT_E_CORRUPT, so tenant isolation does not rest on file names. The
 * chunks of one block that a query needs are read with as few preads as
 * their positions allow (adjacent chunks coalesce) into one buffer the
 * query owns, then decoded (fmt_block_decode checks every checksum); a
 * block comes from the shard's cache of fully decoded blocks instead when
 * it is there (block_cache.c), and a full decode is offered to it, so
 * callers give blocks back with eng_query_block_release(), never free
 * them. A
 * segment shorter than its footer says is corrupt, as far as a query is
 * concerned. Every failure is logged with the query's name, the tenant,
 * the segment and the block.
 *
 * Several blocks at once (eng_query_blocks: Search's phase 2 asks for the
 * blocks of up to ENG_QUERY_BLOCKS_MAX groups of hits together). The
 * chunks of every block not cached are read first, into the query's one
 * buffer; then the decodes run as one batch on the shard thread and its
 * query helpers (helper.c), a full decode split in two jobs (the wide
 * attributes and details columns, about half of the time, apart) and
 * merged after (fmt_block_merge). Everything but the decoding itself —
 * the cache, the logs, the stats — stays on the shard thread.
 */
#include "engine/internal.h"

#include <inttypes.h>
#include <stdlib.h>

static bool str_ok(struct fmt_str s)
{
	return s.len == 0 || s.ptr != NULL;
}

int eng_filter_prepare(struct fmt_str tenant, const struct eng_filter *f, int64_t *lo_ns,
		       int64_t *hi_ns)
{
	if (!str_ok(tenant) || !fmt_tenant_valid(tenant))
		return FMT_E_INVALID;
	if (!str_ok(f->actor_id) || !str_ok(f->action) || !str_ok(f->resource_type) ||
	    !str_ok(f->resource_id))
		return FMT_E_INVALID;
	if (f->outcome > FMT_OUTCOME_DENIED)
		return FMT_E_INVALID;
	*lo_ns = f->from_ns ? f->from_ns : INT64_MIN;
	if (f->to_ns && *lo_ns > f->to_ns)
		return FMT_E_INVALID;
	*hi_ns = f->to_ns ? f->to_ns : eng_now_ns();
	return 0;
}

uint32_t eng_filter_columns(const struct eng_filter *f)
{
	uint32_t mask = 0;
	if (f->outcome)
		mask |= 1u << FMT_COL_OUTCOME;
	if (f->has_event_id)
		mask |= 1u << FMT_COL_EVENT_ID;
	if (f->actor_id.len)
		mask |= 1u << (FMT_COL_STR_FIRST + FMT_F_ACTOR_ID);
	if (f->action.len)
		mask |= 1u << (FMT_COL_STR_FIRST + FMT_F_ACTION);
	if (f->resource_type.len)
		mask |= 1u << (FMT_COL_STR_FIRST + FMT_F_RESOURCE_TYPE);
	if (f->resource_id.len)
		mask |= 1u << (FMT_COL_STR_FIRST + FMT_F_RESOURCE_ID);
	return mask;
}

bool eng_filter_row(const struct eng_filter *f, int64_t lo_ns, int64_t hi_ns,
		    const struct fmt_event *ev)
{
	if (ev->occurred_at_ns < lo_ns || ev->occurred_at_ns >= hi_ns)
		return false;
	if (f->outcome && ev->outcome != f->outcome)
		return false;
	if (f->has_event_id && memcmp(ev->event_id, f->event_id, FMT_EVENT_ID_BYTES) != 0)
		return false;
	if (f->actor_id.len && !fmt_str_eq(ev->str[FMT_F_ACTOR_ID], f->actor_id))
		return false;
	if (f->action.len && !fmt_str_eq(ev->str[FMT_F_ACTION], f->action))
		return false;
	if (f->resource_type.len && !fmt_str_eq(ev->str[FMT_F_RESOURCE_TYPE], f->resource_type))
		return false;
	return !f->resource_id.len || fmt_str_eq(ev->str[FMT_F_RESOURCE_ID], f->resource_id);
}

bool eng_memtable_unsealed(const struct eng_tenant *t, const struct eng_memtable *m,
			   uint32_t *first, uint32_t *end)
{
	uint32_t visible = eng_memtable_visible(m, t->durable_seq);
	uint64_t sealed_last = 0;
	for (uint32_t i = 0; i < t->segment_count; i++)
		sealed_last = FMT_MAX(sealed_last, t->segments[i]->last_seq);
	*first = 0;
	*end = visible;
	if (visible && sealed_last >= m->first_seq)
		*first = (uint32_t)FMT_MIN((uint64_t)visible, sealed_last - m->first_seq + 1);
	ASSERT(*first <= *end);
	ASSERT(*first == *end || m->min_occurred_ns <= m->max_occurred_ns);
	return *first < *end;
}

/* ---- segments ------------------------------------------------------------ */

static void eng_query_free(struct eng_query *q)
{
	free(q->io_buf);
	q->io_buf = NULL;
	q->io_cap = 0;
}

void eng_query_begin(struct eng_query *q, struct eng_shard *s, const char *what,
		     const struct eng_req_hdr *h, struct eng_query_profile *prof)
{
	int64_t now = eng_mono_ns();
	*q = (struct eng_query){ .s = s, .what = what, .prof = prof, .start_ns = now,
				 .footer_reads_before = s->stats.footer_reads };
	*prof = (struct eng_query_profile){ .queued_ns = now - h->submitted_ns };
}

void eng_query_end(struct eng_query *q)
{
	q->prof->run_ns = eng_mono_ns() - q->start_ns;
	q->prof->footer_reads = (uint32_t)(q->s->stats.footer_reads - q->footer_reads_before);
	eng_query_free(q);
}

int eng_query_segment_open(struct eng_query *q, struct eng_segment *seg)
{
	/* Also when the footer is cached: this marks the segment used by the
	 * request, so that opening another one cannot evict it meanwhile. */
	int rc = eng_segment_open_footer(q->s, seg);
	if (rc) {
		eng_log(q->s->eng, ENG_LOG_ERROR,
			"shard %u: %s of tenant %s: segment %016" PRIx64 " unreadable: %s", q->s->id,
			q->what, q->t->name, seg->segment_id, fmt_strerror(rc));
		return rc;
	}
	ASSERT(seg->footer);
	const struct fmt_segment_meta *meta = &seg->footer->meta;
	if (strcmp(meta->tenant, q->t->name) != 0 || meta->segment_id != seg->segment_id ||
	    meta->row_count != seg->row_count || meta->first_seq != seg->first_seq ||
	    meta->last_seq != seg->last_seq) {
		eng_log(q->s->eng, ENG_LOG_ERROR,
			"shard %u: %s of tenant %s: segment %016" PRIx64
			" footer does not match the manifest",
			q->s->id, q->what, q->t->name, seg->segment_id);
		return FMT_E_CORRUPT;
	}
	return 0;
}

#define READ_GAP_BYTES (16u << 10)

static int pread_chunks(int fd, uint8_t *buf, size_t len, uint64_t off)
{
	int rc = eng_pread_full(fd, buf, len, off);
	return rc == FMT_E_TRUNCATED ? FMT_E_CORRUPT : rc;
}

static int io_buf_reserve(struct eng_query *q, size_t need)
{
	if (need <= q->io_cap)
		return 0;
	uint8_t *p = realloc(q->io_buf, need);
	if (!p)
		return FMT_E_NOMEM;
	q->io_buf = p;
	q->io_cap = need;
	return 0;
}

/* Bytes read_chunks() reads for the columns in mask of a block: their
 * chunks, and the gaps it reads through. */
static size_t chunk_span(const struct fmt_block_ref *ref, uint32_t mask)
{
	size_t total = 0;
	uint64_t end = 0;
	bool any = false;
	for (uint32_t col = 0; col < FMT_COL_COUNT; col++) {
		const struct fmt_chunk_ref *ch = &ref->chunk[col];
		if (!(mask & (1u << col)))
			continue;
		if (any && ch->offset >= end && ch->offset - end <= READ_GAP_BYTES)
			total += ch->offset - end;
		total += ch->stored_len;
		end = ch->offset + ch->stored_len;
		any = true;
	}
	return total;
}

/* Reads the stored chunks of block b for the columns in mask into buf
 * (chunk_span() bytes), coalescing chunks that are adjacent in the file
 * into one pread, and reading through a gap of at most READ_GAP_BYTES
 * between two of them (a scan's seq and occurred_at chunks have
 * received_at between them, a few dozen bytes): copying a few KiB more
 * from the page cache costs less than another system call per block. */
static int read_chunks(struct eng_query *q, struct eng_segment *seg, uint32_t b, uint32_t mask,
		       uint8_t *buf, const uint8_t *ptrs[FMT_COL_COUNT])
{
	const struct fmt_block_ref *ref = &seg->footer->blocks[b];
	int rc = eng_segment_open_fd(q->s, seg); /* the footer may be resident alone */
	if (rc)
		return rc;
	size_t at = 0, run_at = 0, run_len = 0;
	uint64_t run_off = 0;
	for (uint32_t col = 0; col < FMT_COL_COUNT; col++) {
		const struct fmt_chunk_ref *ch = &ref->chunk[col];
		ptrs[col] = NULL;
		if (!(mask & (1u << col)))
			continue;
		ASSERT(ch->offset + ch->stored_len <= seg->footer->footer_offset); /* checked by open */
		uint64_t run_end = run_off + run_len;
		if (run_len && ch->offset >= run_end && ch->offset - run_end <= READ_GAP_BYTES) {
			at += ch->offset - run_end;
			run_len += ch->offset - run_end;
		} else {
			if (run_len && (rc = pread_chunks(seg->fd, buf + run_at, run_len, run_off)))
				return rc;
			run_at = at;
			run_off = ch->offset;
			run_len = 0;
		}
		run_len += ch->stored_len;
		ptrs[col] = buf + at;
		at += ch->stored_len;
	}
	ASSERT(at == chunk_span(ref, mask));
	return run_len ? pread_chunks(seg->fd, buf + run_at, run_len, run_off) : 0;
}

/* The wide columns: a full decode's second job. They take about half of
 * a block's decode time (docs/PERFORMANCE.md, "Query helpers"). */
#define WIDE_COLS ((1u << FMT_COL_ATTRS) | (1u << FMT_COL_DETAILS))

static void block_failed(struct eng_query *q, const struct eng_block_want *w, int rc)
{
	eng_log(q->s->eng, ENG_LOG_ERROR, "shard %u: %s of tenant %s: segment %016" PRIx64
		" block %u: %s", q->s->id, q->what, q->t->name, w->seg->segment_id, w->block,
		fmt_strerror(rc));
}

/* The decoded block of job j (and j + 1 when split), or NULL and *rc. */
static struct fmt_block *job_result(struct eng_decode_job *jobs, uint32_t j, bool split, int *rc)
{
	struct fmt_block *blk = jobs[j].out, *wide = split ? jobs[j + 1].out : NULL;
	*rc = jobs[j].rc ? jobs[j].rc : split ? jobs[j + 1].rc : 0;
	if (*rc) {
		fmt_block_free(blk);
		fmt_block_free(wide);
		return NULL;
	}
	if (wide)
		fmt_block_merge(blk, wide);
	return blk;
}

int eng_query_blocks(struct eng_query *q, struct eng_block_want *w, uint32_t n, uint32_t mask)
{
	ASSERT(n >= 1 && n <= ENG_QUERY_BLOCKS_MAX && mask != 0);
	struct eng_shard *s = q->s;
	uint32_t miss[ENG_QUERY_BLOCKS_MAX], misses = 0;
	size_t at[ENG_QUERY_BLOCKS_MAX], total = 0;
	for (uint32_t i = 0; i < n; i++) {
		ASSERT(w[i].seg->footer && w[i].block < w[i].seg->footer->meta.block_count);
		w[i].blk = eng_block_cache_get(s, w[i].seg->segment_id, w[i].block);
		if (w[i].blk) {
			ASSERT(fmt_block_rows(w[i].blk) == w[i].seg->footer->blocks[w[i].block].row_count);
			continue;
		}
		at[misses] = total;
		total += chunk_span(&w[i].seg->footer->blocks[w[i].block], mask);
		miss[misses++] = i;
	}
	q->prof->blocks_cached += n - misses;
	if (misses == 0)
		return 0;
	int64_t t0 = eng_mono_ns();
	int rc = io_buf_reserve(q, total ? total : 1);
	/* Split a full decode only where a helper can take half of it. */
	const bool split = s->helpers.count && (mask & WIDE_COLS) && (mask & ~WIDE_COLS);
	const uint8_t *chunks[ENG_QUERY_BLOCKS_MAX][FMT_COL_COUNT];
	struct eng_decode_job jobs[2 * ENG_QUERY_BLOCKS_MAX];
	uint32_t nj = 0;
	for (uint32_t m = 0; m < misses && rc == 0; m++) {
		struct eng_block_want *x = &w[miss[m]];
		if ((rc = read_chunks(q, x->seg, x->block, mask, q->io_buf + at[m], chunks[m]))) {
			block_failed(q, x, rc);
			break;
		}
		struct eng_decode_job job = { .footer = x->seg->footer, .chunks = chunks[m],
					      .block = x->block, .mask = mask };
		if (split) {
			jobs[nj] = job;
			jobs[nj++].mask = mask & ~WIDE_COLS;
			job.mask = mask & WIDE_COLS;
		}
		jobs[nj++] = job;
	}
	int64_t t1 = eng_mono_ns();
	q->prof->read_ns += t1 - t0;
	q->prof->bytes_read += total;
	if (rc == 0) {
		eng_decode_jobs_run(s, jobs, nj);
		q->prof->decode_ns += eng_mono_ns() - t1;
		q->prof->blocks_decoded += misses;
	} else {
		nj = 0; /* a read failed: nothing was decoded */
	}
	for (uint32_t m = 0, j = 0; j < nj; m++, j += split ? 2 : 1) {
		struct eng_block_want *x = &w[miss[m]];
		int err;
		struct fmt_block *blk = job_result(jobs, j, split, &err);
		if (!blk) {
			block_failed(q, x, err);
			rc = rc ? rc : err;
			continue;
		}
		ASSERT(fmt_block_rows(blk) == x->seg->footer->blocks[x->block].row_count);
		ASSERT(fmt_block_mask(blk) == mask);
		eng_block_cache_put(s, x->seg->segment_id, x->block, blk); /* either way, released the same */
		x->blk = blk;
	}
	for (uint32_t i = 0; rc && i < n; i++) {
		if (w[i].blk)
			eng_query_block_release(q, w[i].blk);
		w[i].blk = NULL;
	}
	return rc;
}

int eng_query_block(struct eng_query *q, struct eng_segment *seg, uint32_t b, uint32_t mask,
		    struct fmt_block **out)
{
	struct eng_block_want w = { .seg = seg, .block = b };
	int rc = eng_query_blocks(q, &w, 1, mask);
	*out = w.blk;
	return rc;
}

void eng_query_block_release(struct eng_query *q, struct fmt_block *blk)
{
	eng_block_cache_release(q->s, blk);
}
