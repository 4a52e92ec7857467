// SPDX-License-Identifier: Apache-2.0
/*
 * seal.c — turning a tenant's durable memtable rows into a segment.
 *
 * One seal at a time per shard, as a state machine driven by I/O
 * completions:
 *
 *   IDLE ──pick tenant, build image──▶ WRITING (write + fsync <id>.hseg.tmp)
 *   WRITING ──done──▶ rename to <id>.hseg, fsync the directory
 *           ──▶ MANIFEST (write + fsync the segment record)
 *   MANIFEST ──done──▶ add the segment to the tenant, drop the sealed rows
 *           from the memtable, reclaim WAL files ──▶ IDLE
 *
 * The sealed rows are the memtable's first n durable rows at pick time; the
 * memtable keeps growing meanwhile, and searches keep reading those rows
 * from the memtable until the segment replaces them in one step, so no row
 * is ever seen twice or missed.
 *
 * A tenant is sealed when its memtable reaches seal_rows or seal_bytes,
 * when its oldest row is older than seal_age, or — biggest first — when the
 * shard's memtables pass 3/4 of the memory budget. A failed segment write
 * is retried a second later (the rows are still in the WAL); a failed
 * manifest write stops the write path like a WAL failure does.
 */
#include "engine/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

enum seal_state { SEAL_WRITING = 1, SEAL_MANIFEST = 2 };

struct eng_seal {
	enum seal_state state;
	struct eng_tenant *t;
	uint32_t rows;
	uint8_t *image;
	size_t image_len;
	int fd;
	int write_result;
	struct eng_segment *seg;
	char tmp_path[4200], final_path[4200];
	struct eng_io_op op_write, op_fsync;
	uint8_t record[FMT_REC_HEADER_BYTES + ENG_MANIFEST_SEGMENT_BYTES];
};

#define SEAL_SCAN_INTERVAL_NS (250 * 1000000ll)
#define SEAL_RETRY_NS (1000 * 1000000ll)

void eng_segment_path(const struct eng_shard *s, uint64_t segment_id, char *out, size_t cap)
{
	snprintf(out, cap, "%s/segments/%016llx.hseg", s->dir, (unsigned long long)segment_id);
}

void eng_segment_free(struct eng_segment *seg)
{
	if (!seg)
		return;
	if (seg->footer)
		fmt_segment_close(seg->footer);
	if (seg->fd >= 0)
		close(seg->fd);
	free(seg);
}

static int pread_full(int fd, uint8_t *buf, size_t len, uint64_t off)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = pread(fd, buf + got, len - got, (off_t)(off + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : FMT_E_TRUNCATED;
		got += (size_t)n;
	}
	return 0;
}

int eng_segment_open_footer(struct eng_shard *s, struct eng_segment *seg)
{
	if (seg->footer)
		return 0;
	char path[4200];
	eng_segment_path(s, seg->segment_id, path, sizeof(path));
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	uint8_t head[FMT_SEG_HEADER_BYTES], trailer[FMT_SEG_TRAILER_BYTES];
	uint64_t foff = 0;
	uint32_t flen = 0;
	uint8_t *footer = NULL;
	int rc = FMT_E_TRUNCATED;
	if (seg->file_size < FMT_SEG_HEADER_BYTES + FMT_SEG_TRAILER_BYTES)
		goto fail;
	if ((rc = pread_full(fd, head, sizeof(head), 0)) != 0 ||
	    (rc = pread_full(fd, trailer, sizeof(trailer), seg->file_size - sizeof(trailer))) != 0 ||
	    (rc = fmt_segment_trailer(trailer, seg->file_size, &foff, &flen)) != 0)
		goto fail;
	footer = malloc(flen ? flen : 1);
	if (!footer) {
		rc = FMT_E_NOMEM;
		goto fail;
	}
	if ((rc = pread_full(fd, footer, flen, foff)) != 0 ||
	    (rc = fmt_segment_open(head, footer, flen, trailer, seg->file_size, &seg->footer)) != 0)
		goto fail;
	free(footer);
	seg->fd = fd;
	return 0;
fail:
	free(footer);
	close(fd);
	eng_log(s->eng, ENG_LOG_ERROR, "segment %s: %s", path, fmt_strerror(rc));
	return rc;
}

bool eng_seal_busy(const struct eng_shard *s)
{
	return s->seal != NULL;
}

static void seal_end(struct eng_shard *s, int err)
{
	struct eng_seal *z = s->seal;
	if (err) {
		eng_log(s->eng, ENG_LOG_ERROR, "shard %u: sealing tenant %s failed: %s", s->id,
			z->t->name, fmt_strerror(err));
		if (z->state == SEAL_WRITING)
			unlink(z->tmp_path);
		s->seal_retry_ns = eng_mono_ns() + SEAL_RETRY_NS;
		free(z->seg);
	}
	if (z->fd >= 0)
		close(z->fd);
	free(z->image);
	free(z);
	s->seal = NULL;
}

static void seal_committed(struct eng_shard *s)
{
	struct eng_seal *z = s->seal;
	struct eng_tenant *t = z->t;
	uint64_t before = eng_memtable_bytes(&t->active);
	int rc = eng_memtable_drop_prefix(&t->active, z->rows);
	ASSERT(rc == 0); /* TODO(budget): retry the drop instead of failing hard */
	s->memtable_bytes -= before - eng_memtable_bytes(&t->active);
	eng_tenant_add_segment(t, z->seg);
	ASSERT(t->active.first_seq == t->sealed_seq + 1); /* I1 */
	ASSERT(t->next_seq == t->active.first_seq + t->active.row_count); /* I2 */
	z->seg = NULL;
	s->stats.segments_sealed++;
	s->stats.memtable_rows -= z->rows;
	s->stats.segments_local++;
	s->stats.segment_bytes_local += z->image_len;
	seal_end(s, 0);
	eng_wal_reclaim(s);
}

static void seal_manifest_done(struct eng_io_op *op)
{
	struct eng_shard *s = op->ctx;
	struct eng_seal *z = s->seal;
	int err = z->write_result < 0 ? z->write_result : op->result;
	if (err < 0) {
		eng_log(s->eng, ENG_LOG_ERROR, "shard %u: manifest write failed: %s; refusing appends "
			"until restart", s->id, fmt_strerror(err));
		s->failed = true;
		seal_end(s, err);
		return;
	}
	s->manifest_size += sizeof(z->record);
	seal_committed(s);
}

static void seal_write_done(struct eng_io_op *op)
{
	struct eng_shard *s = op->ctx;
	s->seal->write_result = op->result < 0 ? op->result : 0;
}

static void submit_pair(struct eng_shard *s, int fd, void *buf, uint32_t len, uint64_t off,
			eng_io_done_fn fsync_done)
{
	struct eng_seal *z = s->seal;
	z->write_result = 0;
	z->op_write = (struct eng_io_op){ .kind = ENG_IO_WRITE, .fd = fd, .buf = buf, .len = len,
					  .offset = off, .done = seal_write_done, .ctx = s };
	z->op_fsync = (struct eng_io_op){ .kind = ENG_IO_FSYNC, .fd = fd, .done = fsync_done,
					  .ctx = s };
	int rc = eng_io_submit(s->io, &z->op_write);
	if (rc == 0)
		rc = eng_io_submit(s->io, &z->op_fsync);
	ASSERT(rc == 0); /* the ring holds the WAL's two ops and these two */
}

static void seal_file_done(struct eng_io_op *op)
{
	struct eng_shard *s = op->ctx;
	struct eng_seal *z = s->seal;
	int err = z->write_result < 0 ? z->write_result : op->result;
	if (err < 0) {
		seal_end(s, err);
		return;
	}
	close(z->fd);
	z->fd = -1;
	char dir[4200];
	snprintf(dir, sizeof(dir), "%s/segments", s->dir);
	if (rename(z->tmp_path, z->final_path) != 0 || (err = eng_fsync_dir(dir)) != 0) {
		seal_end(s, err ? err : -errno);
		return;
	}
	z->state = SEAL_MANIFEST;
	uint8_t *payload = z->record + FMT_REC_HEADER_BYTES;
	eng_manifest_encode_segment(z->t, z->seg, payload);
	fmt_rec_header_encode(z->record, FMT_REC_SEGMENT, 0, 0, payload, ENG_MANIFEST_SEGMENT_BYTES);
	submit_pair(s, s->manifest_fd, z->record, sizeof(z->record), s->manifest_size,
		    seal_manifest_done);
}

/* Describes the image just built, for the manifest and the tenant. */
static struct eng_segment *seal_describe(struct eng_shard *s, struct eng_seal *z, uint64_t id)
{
	struct fmt_segment *f = NULL;
	if (fmt_segment_open_buf(z->image, z->image_len, &f) != 0)
		return NULL;
	struct eng_segment *g = calloc(1, sizeof(*g));
	if (g) {
		const struct fmt_segment_meta *m = &f->meta;
		g->segment_id = id;
		g->first_seq = m->first_seq;
		g->last_seq = m->last_seq;
		g->row_count = m->row_count;
		g->file_size = z->image_len;
		g->file_checksum = fmt_xxh3(z->image, z->image_len);
		g->min_occurred_ns = m->min_occurred_ns;
		g->max_occurred_ns = m->max_occurred_ns;
		g->min_received_ns = m->min_received_ns;
		g->max_received_ns = m->max_received_ns;
		memcpy(g->chain_before, m->chain_before, FMT_HASH_BYTES);
		memcpy(g->chain_after, m->chain_after, FMT_HASH_BYTES);
		memcpy(g->merkle_root, m->merkle_root, FMT_HASH_BYTES);
		g->fd = -1;
	}
	fmt_segment_close(f);
	return g;
}

static int seal_start(struct eng_shard *s, struct eng_tenant *t, uint32_t rows)
{
	const struct eng_config *cfg = &s->eng->cfg;
	struct eng_seal *z = calloc(1, sizeof(*z));
	if (!z)
		return FMT_E_NOMEM;
	z->t = t;
	z->rows = rows;
	z->fd = -1;
	z->state = SEAL_WRITING;
	s->seal = z;
	uint64_t id = ((uint64_t)s->id << 40) | s->next_segment_no;
	struct fmt_segment_build_args args = { .segment_id = id, .shard = s->id,
					       .block_rows = cfg->block_rows,
					       .zstd_level = cfg->zstd_level,
					       .created_ns = eng_now_ns(),
					       .chain_before = t->active.chain_before };
	int rc = fmt_segment_build(&args, t->active.rows, (const uint8_t(*)[FMT_HASH_BYTES])t->active.chains,
				   rows, &z->image, &z->image_len);
	if (rc == 0 && !(z->seg = seal_describe(s, z, id)))
		rc = FMT_E_NOMEM;
	if (rc == 0) {
		eng_segment_path(s, id, z->final_path, sizeof(z->final_path));
		snprintf(z->tmp_path, sizeof(z->tmp_path), "%s.tmp", z->final_path);
		z->fd = open(z->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
		if (z->fd < 0)
			rc = -errno;
	}
	if (rc) {
		seal_end(s, rc);
		return rc;
	}
	s->next_segment_no++;
	ASSERT(z->image_len <= UINT32_MAX);
	submit_pair(s, z->fd, z->image, (uint32_t)z->image_len, 0, seal_file_done);
	return 0;
}

static bool seal_due(const struct eng_shard *s, const struct eng_tenant *t, int64_t now)
{
	const struct eng_config *cfg = &s->eng->cfg;
	const struct eng_memtable *m = &t->active;
	/* Rows count once durable: a seal takes only those, so waiting for
	 * them makes full-size segments rather than halves. */
	return eng_memtable_visible(m, t->durable_seq) >= cfg->seal_rows ||
	       eng_memtable_bytes(m) >= cfg->seal_bytes ||
	       now - m->oldest_received_ns >= cfg->seal_age_ns;
}

void eng_seal_maybe(struct eng_shard *s, bool force_all)
{
	int64_t mono = eng_mono_ns();
	if (s->seal || s->failed || mono < s->seal_retry_ns)
		return;
	bool pressure = s->memtable_bytes > s->eng->cfg.memtable_budget_bytes / 4 * 3;
	if (!force_all && !pressure && !s->seal_wanted && mono - s->seal_scan_ns < SEAL_SCAN_INTERVAL_NS)
		return;
	s->seal_scan_ns = mono;
	int64_t now = eng_now_ns();
	struct eng_tenant *pick = NULL;
	uint32_t pick_rows = 0;
	uint64_t pick_bytes = 0;
	for (uint32_t i = 0; i < s->tenant_slot_count; i++) {
		struct eng_tenant *t = s->tenant_slots[i];
		if (!t)
			continue;
		uint32_t rows = eng_memtable_visible(&t->active, t->durable_seq);
		if (rows == 0 || !(force_all || pressure || seal_due(s, t, now)))
			continue;
		uint64_t bytes = eng_memtable_bytes(&t->active);
		if (!pick || bytes > pick_bytes) {
			pick = t;
			pick_rows = FMT_MIN(rows, s->eng->cfg.seal_rows);
			pick_bytes = bytes;
		}
	}
	s->seal_wanted = pick != NULL;
	if (pick)
		seal_start(s, pick, pick_rows);
}

int eng_segment_read_block(struct eng_shard *s, struct eng_segment *seg, uint32_t b,
			   uint32_t col_mask, struct fmt_block **out)
{
	int rc = eng_segment_open_footer(s, seg);
	if (rc)
		return rc;
	ASSERT(b < seg->footer->meta.block_count);
	const struct fmt_block_ref *ref = &seg->footer->blocks[b];
	const uint8_t *chunks[FMT_COL_COUNT] = { 0 };
	uint8_t *bufs[FMT_COL_COUNT] = { 0 };
	for (uint32_t c = 0; c < FMT_COL_COUNT && rc == 0; c++) {
		if (!(col_mask & (1u << c)))
			continue;
		bufs[c] = malloc(ref->chunk[c].stored_len ? ref->chunk[c].stored_len : 1);
		if (!bufs[c])
			rc = FMT_E_NOMEM;
		else
			rc = pread_full(seg->fd, bufs[c], ref->chunk[c].stored_len, ref->chunk[c].offset);
		chunks[c] = bufs[c];
	}
	if (rc == 0)
		rc = fmt_block_decode(seg->footer, b, col_mask, chunks, out);
	for (uint32_t c = 0; c < FMT_COL_COUNT; c++)
		free(bufs[c]);
	return rc;
}

/* After a restart, remembers the ids of events sealed within the dedup
 * window, so that a retry of a batch acknowledged just before the restart
 * is still recognised (DESIGN.md §2.3). Events still in the WAL are
 * remembered by the replay. */
int eng_dedup_from_segments(struct eng_shard *s)
{
	int64_t horizon = eng_now_ns() - s->eng->cfg.dedup_window_ns;
	const uint32_t mask = (1u << FMT_COL_EVENT_ID) | (1u << FMT_COL_RECEIVED_AT) |
			      (1u << FMT_COL_SEQ);
	for (uint32_t i = 0; i < s->tenant_slot_count; i++) {
		struct eng_tenant *t = s->tenant_slots[i];
		for (uint32_t k = 0; t && k < t->segment_count; k++) {
			struct eng_segment *seg = t->segments[k];
			if (seg->max_received_ns < horizon)
				continue;
			int rc = eng_segment_open_footer(s, seg);
			for (uint32_t b = 0; rc == 0 && b < seg->footer->meta.block_count; b++) {
				struct fmt_block *blk = NULL;
				if ((rc = eng_segment_read_block(s, seg, b, mask, &blk)) != 0)
					break;
				for (uint32_t r = 0; r < fmt_block_rows(blk); r++) {
					struct fmt_event ev;
					struct fmt_attr attrs[1];
					fmt_block_row(seg->footer, blk, r, &ev, attrs, 1, NULL);
					if (ev.received_at_ns >= horizon)
						eng_dedup_insert(s->dedup, t->key, ev.event_id,
								 ev.received_at_ns);
				}
				fmt_block_free(blk);
			}
			if (rc)
				return rc;
		}
	}
	return 0;
}

void eng_seal_abandon(struct eng_shard *s)
{
	struct eng_seal *z = s->seal;
	if (!z)
		return;
	free(z->seg);
	if (z->fd >= 0)
		close(z->fd);
	free(z->image);
	free(z);
	s->seal = NULL;
}
