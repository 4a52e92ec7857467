// SPDX-License-Identifier: Apache-2.0
/*
 * verify.c — recomputing a tenant's history on the shard thread.
 *
 * For every segment in seq order: the manifest's record and the file must
 * agree (size, XXH3 of the whole file), the file must pass
 * fmt_segment_verify_buf (every chunk checksum, every event hash, the chain
 * row by row, the Merkle root), its footer must carry the chain values and
 * root the manifest recorded, and it must continue the previous segment
 * (first seq, chain_before). Then the durable memtable rows are re-hashed
 * from their canonical bytes and chained on. The first failure stops the
 * check and names the seq and the segment.
 *
 * With a seq range, segments wholly outside it are skipped and the check
 * starts from the chain value recorded before the first segment checked.
 */
#include "engine/internal.h"
#include "engine/offline.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static void problem(struct eng_verify *req, uint64_t seq, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void problem(struct eng_verify *req, uint64_t seq, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(req->problem, sizeof(req->problem), fmt, ap);
	va_end(ap);
	req->ok = false;
	req->first_bad_seq = seq;
}

static int read_segment(struct eng_shard *s, const struct eng_segment *g, uint8_t **out)
{
	char path[4200];
	eng_segment_read_path(s, g, path, sizeof(path));
	size_t len = 0;
	int rc = eng_file_read_all(path, out, &len);
	if (rc == 0 && len != g->file_size) {
		free(*out);
		rc = FMT_E_TRUNCATED;
	}
	return rc;
}

/* Sets req->chain to the chain value after the last seq of the request's
 * range within this (already verified) segment. */
static bool chain_at_end_of_range(struct eng_verify *req, const struct eng_segment *g,
				  const struct fmt_segment *f, const uint8_t *buf)
{
	if (!req->to_seq || req->to_seq >= g->last_seq) {
		memcpy(req->chain, g->chain_after, FMT_HASH_BYTES);
		return true;
	}
	for (uint32_t b = 0; b < f->meta.block_count; b++) {
		const struct fmt_block_ref *ref = &f->blocks[b];
		if (req->to_seq < ref->first_seq || req->to_seq > ref->last_seq)
			continue;
		struct fmt_block *blk = NULL;
		if (fmt_block_decode_buf(f, buf, g->file_size, b, 1u << FMT_COL_CHAIN, &blk) != 0)
			break;
		struct fmt_event ev;
		struct fmt_attr attrs[1];
		fmt_block_row(f, blk, (uint32_t)(req->to_seq - ref->first_seq), &ev, attrs, 1, req->chain);
		fmt_block_free(blk);
		return true;
	}
	problem(req, req->to_seq, "segment %016llx: no row for seq %llu",
		(unsigned long long)g->segment_id, (unsigned long long)req->to_seq);
	return false;
}

/* Checks one segment; returns false (with the problem set) on a failure. */
static bool verify_segment(struct eng_shard *s, struct eng_verify *req, const struct eng_segment *g,
			   const uint8_t prev_chain[FMT_HASH_BYTES], uint64_t expect_seq)
{
	unsigned long long id = (unsigned long long)g->segment_id;
	if (expect_seq && g->first_seq != expect_seq) {
		problem(req, expect_seq, "segment %016llx starts at seq %llu, expected %llu", id,
			(unsigned long long)g->first_seq, (unsigned long long)expect_seq);
		return false;
	}
	if (prev_chain && memcmp(prev_chain, g->chain_before, FMT_HASH_BYTES)) {
		problem(req, g->first_seq, "segment %016llx does not continue the chain", id);
		return false;
	}
	uint8_t *buf;
	int rc = read_segment(s, g, &buf);
	if (rc) {
		problem(req, g->first_seq, "segment %016llx unreadable: %s", id, fmt_strerror(rc));
		return false;
	}
	uint64_t bad = 0;
	struct fmt_segment *f = NULL;
	bool ok = false;
	if (fmt_xxh3(buf, g->file_size) != g->file_checksum)
		problem(req, g->first_seq, "segment %016llx: file checksum differs from the manifest", id);
	else if ((rc = fmt_segment_verify_buf(buf, g->file_size, &bad)) != 0)
		problem(req, bad ? bad : g->first_seq, "segment %016llx: %s", id, fmt_strerror(rc));
	else if (fmt_segment_open_buf(buf, g->file_size, &f) != 0 ||
		 memcmp(f->meta.chain_after, g->chain_after, FMT_HASH_BYTES) ||
		 memcmp(f->meta.merkle_root, g->merkle_root, FMT_HASH_BYTES) ||
		 f->meta.first_seq != g->first_seq || f->meta.last_seq != g->last_seq)
		problem(req, g->first_seq, "segment %016llx: footer differs from the manifest", id);
	else
		ok = chain_at_end_of_range(req, g, f, buf);
	fmt_segment_close(f);
	free(buf);
	return ok;
}

/* Checks memtable m's durable rows against the chain; on success, *prev
 * and *expect are where the next rows must continue. */
static bool verify_memtable(struct eng_verify *req, const struct eng_tenant *t,
			    const struct eng_memtable *m, const uint8_t **prev, uint64_t *expect)
{
	const uint8_t *prev_chain = *prev;
	uint64_t expect_seq = *expect;
	uint32_t n = eng_memtable_visible(m, t->durable_seq);
	if (n == 0)
		return true;
	if (expect_seq && m->first_seq != expect_seq) {
		problem(req, expect_seq, "unsealed events start at seq %llu, expected %llu",
			(unsigned long long)m->first_seq, (unsigned long long)expect_seq);
		return false;
	}
	uint8_t chain[FMT_HASH_BYTES];
	memcpy(chain, prev_chain ? prev_chain : m->chain_before, FMT_HASH_BYTES);
	for (uint32_t i = 0; i < n; i++) {
		uint64_t seq = m->first_seq + i;
		if (req->to_seq && seq > req->to_seq)
			break;
		uint8_t hash[FMT_HASH_BYTES];
		fmt_sha256(m->canon[i], m->canon_len[i], hash);
		fmt_chain_next(chain, hash, chain);
		if (m->rows[i].seq != seq || memcmp(chain, m->chains[i], FMT_HASH_BYTES)) {
			problem(req, seq, "unsealed event seq %llu does not match its chain value",
				(unsigned long long)seq);
			return false;
		}
		if (!req->from_seq || seq >= req->from_seq)
			req->events_checked++;
	}
	memcpy(req->chain, chain, FMT_HASH_BYTES);
	*prev = m->chains[n - 1];
	*expect = m->first_seq + n;
	return true;
}

void eng_verify_run(struct eng_shard *s, struct eng_verify *req)
{
	req->status = 0;
	req->ok = true;
	req->events_checked = req->segments_checked = req->first_bad_seq = 0;
	req->problem[0] = 0;
	memset(req->chain, 0, sizeof(req->chain));
	if (req->to_seq && req->from_seq > req->to_seq) {
		req->status = FMT_E_INVALID;
		return;
	}
	struct eng_tenant *t = eng_tenant_find(s, req->tenant);
	if (!t)
		return;
	const uint8_t *prev = NULL;  /* NULL: accept the first checked chain_before */
	uint64_t expect = 0;
	for (uint32_t i = 0; i < t->segment_count; i++) {
		const struct eng_segment *g = t->segments[i];
		if (req->to_seq && g->first_seq > req->to_seq)
			return;
		if (req->from_seq && g->last_seq < req->from_seq)
			continue;
		if (!prev && g->first_seq == 1) {
			static const uint8_t genesis[FMT_HASH_BYTES];
			prev = genesis;
			expect = 1;
		}
		if (!verify_segment(s, req, g, prev, expect))
			return;
		req->segments_checked++;
		/* The whole segment was checked; count the events of the range. */
		uint64_t lo = FMT_MAX(g->first_seq, req->from_seq ? req->from_seq : 1);
		uint64_t hi = req->to_seq ? FMT_MIN(g->last_seq, req->to_seq) : g->last_seq;
		req->events_checked += hi >= lo ? hi - lo + 1 : 0;
		prev = g->chain_after;
		expect = g->last_seq + 1;
	}
	if (req->to_seq && t->sealed_seq >= req->to_seq)
		return;
	if (!verify_memtable(req, t, &t->sealing, &prev, &expect) ||
	    (req->to_seq && expect > req->to_seq))
		return;
	verify_memtable(req, t, &t->active, &prev, &expect);
}
