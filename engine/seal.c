// SPDX-License-Identifier: Apache-2.0
/*
 * seal.c — turning tenants' durable memtable rows into segments, and
 * reading segments back (footers, blocks, dedup memory after a restart).
 *
 * Seals run in rounds, one round at a time per shard, as a state machine
 * driven by I/O completions. A round seals up to SEAL_BATCH_MAX tenants at
 * once, so that a shard with thousands of small tenants pays three fsync
 * latencies per round, not per tenant:
 *
 *   IDLE ──pick tenants, freeze their memtables──▶ BUILDING
 *        (the shard's seal worker thread encodes and compresses the
 *         images and creates their temporary files, so the shard keeps
 *         committing appends meanwhile and never waits for the journal)
 *   BUILDING ──built──▶ WRITING
 *        (write <id>.hseg.tmp for every tenant, one image after the other
 *         in paced steps, then fsync them all at once)
 *   WRITING ──all done──▶ NAMING
 *        (the seal worker renames each to <id>.hseg and fsyncs the
 *         directory once: the shard thread never waits for the journal
 *         commit that fsync makes, nor for the renames' journal handles)
 *   NAMING ──named──▶ MANIFEST (write + fsync one record per segment, in
 *        one write)
 *   MANIFEST ──done──▶ add each segment to its tenant, free the frozen
 *        memtables, reclaim WAL files ──▶ IDLE
 *
 * Freezing. The sealed rows are each active memtable's first n durable
 * rows at pick time. The shard moves that memtable to tenant->sealing as it
 * is (no copy) and starts a fresh active memtable holding only the rows
 * past n (rows not yet durable, or past seal_rows: usually few), so the
 * worker reads the frozen rows in place while appends go on, and nothing
 * is re-added when the round ends. Queries read the frozen rows until the
 * segment replaces them in one step, so no row is ever seen twice or
 * missed. A failed round leaves the frozen memtable in place; the next
 * round seals it as it is.
 *
 * A tenant is due when its durable rows reach seal_rows, its memtable
 * seal_bytes, its oldest row seal_age, or when that row sits in a WAL file
 * wal_retain_bytes behind the newest. Under memory pressure (the shard's
 * memtables past half the budget) the biggest other tenants are sealed
 * too, until a quarter of the budget would be left (eng_seal_maybe; ADR
 * 0011). A failed segment write abandons the round and retries it a
 * second later (the rows are still in the WAL); a failed manifest write
 * stops the write path like a WAL failure does (docs/adr/0002).
 */
#include "engine/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

enum seal_state { SEAL_BUILDING = 1, SEAL_WRITING = 2, SEAL_NAMING = 3, SEAL_MANIFEST = 4 };

#define SEAL_BATCH_MAX 64
#define SEAL_BATCH_ROWS_MAX (1u << 20)
#define SEAL_RECORD_BYTES (FMT_REC_HEADER_BYTES + ENG_MANIFEST_SEGMENT_BYTES)
_Static_assert(2 * SEAL_BATCH_MAX + 4 <= 256, "a whole round fits the default ring");

struct seal_item {
	struct eng_seal *z;
	struct eng_tenant *t;
	uint32_t rows;                /* t->sealing's rows, once frozen */
	enum eng_seal_reason reason;
	uint64_t segment_id;
	int64_t created_ns;
	uint8_t *image;
	size_t image_len;
	int fd;                       /* the temporary file, opened by the worker */
	bool created;                 /* tmp_path exists, made by this round */
	int result;
	struct eng_segment *seg;
	struct fmt_segment *footer;   /* seg's, parsed by the worker */
	char tmp_path[4200], final_path[4200];
	size_t written;               /* paced: bytes of image given to a step so far */
	struct eng_io_op op_write, op_writeback, op_fsync;
};

struct eng_seal {
	struct eng_shard *s;
	enum seal_state state;
	/* The worker's part of the state is done (BUILDING: the images are
	 * built; NAMING: the files are named, with naming_result): set by the
	 * worker, read by the shard. */
	_Atomic bool worker_done;
	int naming_result;
	uint32_t count, pending;
	uint32_t writing;             /* paced: the item the next step starts in */
	uint32_t step_ranges;         /* paced: ranges of the step in flight not written back */
	struct seal_item item[SEAL_BATCH_MAX];
	uint8_t records[SEAL_BATCH_MAX * SEAL_RECORD_BYTES];
	struct eng_manifest_write man;
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
	free(seg->version_id);
	free(seg);
}

int eng_pread_full(int fd, uint8_t *buf, size_t len, uint64_t off)
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

/* The two clock caches of a shard's segments (internal.h): open files,
 * bounded by open_segments_max, and parsed footers, bounded by
 * footer_cache_bytes. A segment is in the file cache exactly when its fd is
 * open, in the footer cache exactly when its footer is set. Footers are
 * kept apart from files because a lookup by id or a count tests many
 * segments' footers (filters, zone maps, stored counts) and reads few
 * segments' blocks: with files and footers bound together, a store of more
 * segments than open files re-read most footers on every such query. */
static bool cache_over(const struct eng_shard *s, const struct eng_segment_cache *c, uint64_t room)
{
	const struct eng_config *cfg = &s->eng->cfg;
	if (c == &s->footers)
		return c->bytes + room > cfg->footer_cache_bytes;
	return c->count + room > cfg->open_segments_max;
}

static void cache_drop(struct eng_shard *s, struct eng_segment_cache *c, struct eng_segment *seg)
{
	if (c == &s->footers) {
		c->bytes -= seg->footer_bytes;
		fmt_segment_close(seg->footer);
		seg->footer = NULL;
		seg->footer_bytes = 0;
		s->stats.footers_bytes = c->bytes;
	} else {
		close(seg->fd);
		seg->fd = -1;
		s->stats.segments_open = c->count;
	}
}

/* Drops segments (clock order) until `room` more fits, sparing those the
 * current request has used: a request's own segments stay until it ends,
 * so a cache may briefly hold more than its bound. */
static void cache_trim(struct eng_shard *s, struct eng_segment_cache *c, uint64_t room)
{
	for (uint32_t tries = 0; cache_over(s, c, room) && c->count && tries < 2 * c->count;
	     tries++) {
		c->hand = c->hand < c->count ? c->hand : 0;
		struct eng_segment *victim = c->slots[c->hand];
		if (victim->used_gen == s->req_gen) {
			c->hand++;
			continue;
		}
		c->slots[c->hand] = c->slots[--c->count];
		cache_drop(s, c, victim);
		if (c == &s->footers)
			s->stats.footers_evicted++;
		else
			s->stats.segments_evicted++;
	}
}

static int cache_add(struct eng_shard *s, struct eng_segment_cache *c, struct eng_segment *seg)
{
	cache_trim(s, c, c == &s->footers ? seg->footer_bytes : 1);
	if (c->count == c->cap) {
		uint32_t cap = c->cap ? c->cap * 2 : 64;
		struct eng_segment **slots = realloc(c->slots, cap * sizeof(*slots));
		if (!slots)
			return FMT_E_NOMEM;
		c->slots = slots;
		c->cap = cap;
	}
	c->slots[c->count++] = seg;
	c->bytes += c == &s->footers ? seg->footer_bytes : 0;
	s->stats.segments_open = s->open_segments.count;
	s->stats.footers_bytes = s->footers.bytes;
	return 0;
}

static void cache_remove(struct eng_shard *s, struct eng_segment_cache *c, struct eng_segment *seg)
{
	for (uint32_t i = 0; i < c->count; i++)
		if (c->slots[i] == seg) {
			c->slots[i] = c->slots[--c->count];
			if (c->hand >= c->count)
				c->hand = 0;
			cache_drop(s, c, seg);
			return;
		}
}

void eng_segment_close(struct eng_shard *s, struct eng_segment *seg)
{
	if (seg->footer)
		cache_remove(s, &s->footers, seg);
	if (seg->fd >= 0)
		cache_remove(s, &s->open_segments, seg);
}

void eng_segment_cache_release(struct eng_shard *s)
{
	s->req_gen++; /* nothing is in use any more */
	cache_trim(s, &s->open_segments, 0);
	cache_trim(s, &s->footers, 0);
}

void eng_segment_cache_free(struct eng_shard *s)
{
	free(s->open_segments.slots);
	free(s->footers.slots);
	memset(&s->open_segments, 0, sizeof(s->open_segments));
	memset(&s->footers, 0, sizeof(s->footers));
}

int eng_segment_open_fd(struct eng_shard *s, struct eng_segment *seg)
{
	seg->used_gen = s->req_gen;
	if (seg->fd >= 0)
		return 0;
	char path[4200];
	eng_segment_read_path(s, seg, path, sizeof(path));
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int rc = -errno;
		eng_log(s->eng, ENG_LOG_ERROR, "segment %s: %s", path, fmt_strerror(rc));
		return rc;
	}
	seg->fd = fd;
	int rc = cache_add(s, &s->open_segments, seg);
	if (rc) {
		close(fd);
		seg->fd = -1;
	}
	return rc;
}

static int footer_install(struct eng_shard *s, struct eng_segment *seg, struct fmt_segment *f)
{
	seg->footer = f;
	seg->footer_bytes = (uint32_t)FMT_MIN(fmt_segment_mem_bytes(f), (size_t)UINT32_MAX);
	int rc = cache_add(s, &s->footers, seg);
	if (rc) {
		fmt_segment_close(f);
		seg->footer = NULL;
		seg->footer_bytes = 0;
	}
	return rc;
}

/* Footer warm-up. After a start the footer cache is empty, and the first
 * lookup or count in a tenant read all of its footers (a first Q3 took up
 * to 9 ms where the same one warm took under 1 ms). So while the shard is
 * idle it loads them ahead: tenants in table order, each tenant's local
 * segments newest first (the likeliest to be asked), for at most budget_ns
 * a call, until every local footer is loaded or the cache is 7/8 full (it
 * never evicts to make room). A segment that cannot be read is logged by
 * eng_segment_open_footer and skipped; requests report it when they need
 * it. Best effort: a tenant table that grows meanwhile (slots move) may
 * make it skip or revisit a tenant. */
bool eng_footers_warm(struct eng_shard *s, int64_t budget_ns)
{
	const uint64_t full = s->eng->cfg.footer_cache_bytes / 8 * 7;
	int64_t deadline = eng_mono_ns() + budget_ns;
	bool more = true;
	while (more && eng_mono_ns() < deadline) {
		if (s->warm_slot >= s->tenant_slot_count || s->footers.bytes >= full) {
			more = false;
			break;
		}
		struct eng_tenant *t = s->tenant_slots[s->warm_slot];
		if (!t || s->warm_seg >= t->segment_count) {
			s->warm_slot++;
			s->warm_seg = 0;
			continue;
		}
		struct eng_segment *seg = t->segments[t->segment_count - 1 - s->warm_seg++];
		if (!seg->remote && !seg->footer)
			(void)eng_segment_open_footer(s, seg);
	}
	eng_segment_cache_release(s); /* files opened on the way go back under their bound */
	s->warm_done = !more;
	return more;
}

void eng_segment_keep_footer(struct eng_shard *s, struct eng_segment *seg,
			     struct fmt_segment *footer)
{
	ASSERT(!seg->footer);
	if (s->eng->cfg.footer_cache_bytes == 0 || footer_install(s, seg, footer) != 0)
		fmt_segment_close(footer);
}

int eng_segment_open_footer(struct eng_shard *s, struct eng_segment *seg)
{
	seg->used_gen = s->req_gen;
	if (seg->footer)
		return 0;
	int rc = eng_segment_open_fd(s, seg);
	if (rc)
		return rc;
	uint8_t head[FMT_SEG_HEADER_BYTES], trailer[FMT_SEG_TRAILER_BYTES];
	uint64_t foff = 0;
	uint32_t flen = 0;
	uint8_t *footer = NULL;
	struct fmt_segment *f = NULL;
	rc = FMT_E_TRUNCATED;
	if (seg->file_size < FMT_SEG_HEADER_BYTES + FMT_SEG_TRAILER_BYTES)
		goto fail;
	if ((rc = eng_pread_full(seg->fd, head, sizeof(head), 0)) != 0 ||
	    (rc = eng_pread_full(seg->fd, trailer, sizeof(trailer),
				 seg->file_size - sizeof(trailer))) != 0 ||
	    (rc = fmt_segment_trailer(trailer, seg->file_size, &foff, &flen)) != 0)
		goto fail;
	footer = malloc(flen ? flen : 1);
	if (!footer) {
		rc = FMT_E_NOMEM;
		goto fail;
	}
	if ((rc = eng_pread_full(seg->fd, footer, flen, foff)) != 0 ||
	    (rc = fmt_segment_open(head, footer, flen, trailer, seg->file_size, &f)) != 0)
		goto fail;
	free(footer);
	s->stats.footer_reads++;
	/* Over a zero budget the footer is still needed by this request:
	 * it is kept until the request ends, like any other. */
	return footer_install(s, seg, f);
fail:
	free(footer);
	char path[4200];
	eng_segment_read_path(s, seg, path, sizeof(path));
	eng_log(s->eng, ENG_LOG_ERROR, "segment %s: %s", path, fmt_strerror(rc));
	return rc;
}

bool eng_seal_busy(const struct eng_shard *s)
{
	return s->seal != NULL;
}

/* Ends a round: on error, removes its temporary files; frees it. */
static void seal_end(struct eng_shard *s, int err)
{
	struct eng_seal *z = s->seal;
	for (uint32_t i = 0; i < z->count; i++) {
		struct seal_item *it = &z->item[i];
		if (err && it->created && z->state != SEAL_MANIFEST)
			unlink(it->tmp_path); /* (a renamed one is gone: recovery removes it) */
		if (it->fd >= 0)
			close(it->fd);
		free(it->image);
		fmt_segment_close(it->footer); /* NULL once handed to the cache */
		eng_segment_free(it->seg);     /* NULL once handed to the tenant */
	}
	if (err) {
		eng_log(s->eng, ENG_LOG_ERROR, "shard %u: sealing tenant %s (and %u more) failed: %s",
			s->id, z->item[0].t->name, z->count - 1, fmt_strerror(err));
		s->seal_retry_ns = eng_mono_ns() + SEAL_RETRY_NS;
	}
	free(z);
	s->seal = NULL;
}

void eng_seal_abandon(struct eng_shard *s)
{
	/* The worker has been stopped: a round it was building is finished. */
	ASSERT(!s->seal_worker_started);
	if (s->seal)
		seal_end(s, 0);
}

static void seal_committed(struct eng_shard *s)
{
	struct eng_seal *z = s->seal;
	for (uint32_t i = 0; i < z->count; i++) {
		struct seal_item *it = &z->item[i];
		struct eng_tenant *t = it->t;
		ASSERT(t->sealing.row_count == it->rows);
		s->memtable_bytes -= eng_memtable_bytes(&t->sealing);
		eng_memtable_free(&t->sealing);
		eng_memtable_init(&t->sealing, t->active.first_seq, t->active.chain_before);
		eng_tenant_add_segment(t, it->seg);
		eng_segment_keep_footer(s, it->seg, it->footer);
		it->footer = NULL;
		ASSERT(t->active.first_seq == t->sealed_seq + 1); /* I1 */
		ASSERT(t->next_seq == t->active.first_seq + t->active.row_count); /* I2 */
		it->seg = NULL;
		s->stats.segments_sealed++;
		s->stats.segments_sealed_by[it->reason]++;
		s->stats.memtable_rows -= it->rows;
		s->stats.segments_local++;
		s->stats.segment_bytes_local += it->image_len;
	}
	seal_end(s, 0);
	int64_t t0 = eng_mono_ns();
	eng_wal_reclaim(s);
	s->stats.shard_blocked_ns += (uint64_t)(eng_mono_ns() - t0);
	uint64_t one = 1; /* exporters (S3, ClickHouse) have new work */
	(void)!write(s->eng->seal_event_fd, &one, sizeof(one));
}

static void seal_manifest_done(struct eng_manifest_write *w, int err)
{
	struct eng_seal *z = w->ctx;
	struct eng_shard *s = z->s;
	if (err < 0) {
		eng_log(s->eng, ENG_LOG_ERROR, "shard %u: manifest write failed: %s; refusing appends "
			"until restart", s->id, fmt_strerror(err));
		s->failed = true;
		seal_end(s, err);
		return;
	}
	seal_committed(s);
}

static void item_write_done(struct eng_io_op *op)
{
	struct seal_item *it = op->ctx;
	it->result = op->result < 0 ? op->result : 0;
}

static void submit_op(struct eng_shard *s, struct eng_io_op *op)
{
	int rc = eng_io_submit(s->io, op);
	ASSERT(rc == 0); /* the ring holds the WAL's two ops and a whole round */
}

/* Hands z to the seal worker for its part of the current state. */
static void seal_hand_to_worker(struct eng_shard *s, struct eng_seal *z)
{
	atomic_store_explicit(&z->worker_done, false, memory_order_relaxed);
	pthread_mutex_lock(&s->seal_lock);
	ASSERT(s->seal_job == NULL);
	s->seal_job = z;
	pthread_cond_signal(&s->seal_cond);
	pthread_mutex_unlock(&s->seal_lock);
}

/* Every segment file is durable: the worker gives them their names. */
static void seal_files_durable(struct eng_shard *s)
{
	struct eng_seal *z = s->seal;
	int err = 0;
	for (uint32_t i = 0; i < z->count && !err; i++)
		err = z->item[i].result;
	if (err) {
		seal_end(s, err);
		return;
	}
	z->state = SEAL_NAMING;
	seal_hand_to_worker(s, z);
}

/* Seal worker: renames every file to its final name and makes the names
 * durable. The shard touches none of the items meanwhile. */
static int seal_name_files(struct eng_shard *s, struct eng_seal *z)
{
	for (uint32_t i = 0; i < z->count; i++) {
		struct seal_item *it = &z->item[i];
		close(it->fd);
		it->fd = -1;
		if (rename(it->tmp_path, it->final_path) != 0)
			return -errno;
	}
	char dir[4200];
	snprintf(dir, sizeof(dir), "%s/segments", s->dir);
	return eng_fsync_dir(dir);
}

/* Shard thread, once the worker named the files: record them. */
static void seal_record(struct eng_shard *s)
{
	struct eng_seal *z = s->seal;
	if (z->naming_result) {
		seal_end(s, z->naming_result);
		return;
	}
	z->state = SEAL_MANIFEST;
	for (uint32_t i = 0; i < z->count; i++) {
		uint8_t *rec = z->records + (size_t)i * SEAL_RECORD_BYTES;
		uint8_t *payload = rec + FMT_REC_HEADER_BYTES;
		eng_manifest_encode_segment(z->item[i].t, z->item[i].seg, payload);
		fmt_rec_header_encode(rec, FMT_REC_SEGMENT, 0, 0, payload, ENG_MANIFEST_SEGMENT_BYTES,
				      0);
	}
	z->man = (struct eng_manifest_write){ .buf = z->records, .len = z->count * SEAL_RECORD_BYTES,
					      .done = seal_manifest_done, .ctx = z };
	eng_manifest_append(s, &z->man);
}

static void item_fsync_done(struct eng_io_op *op)
{
	struct seal_item *it = op->ctx;
	if (op->result < 0 && it->result == 0)
		it->result = op->result;
	struct eng_seal *z = it->z;
	ASSERT(z->pending > 0);
	if (--z->pending == 0)
		seal_files_durable(z->s);
}

/* Describes the image just built, for the manifest and the tenant, and
 * keeps its parsed footer (it->footer) for the shard's footer cache. */
static struct eng_segment *seal_describe(struct seal_item *it, uint64_t id)
{
	struct fmt_segment *f = NULL;
	if (fmt_segment_open_buf(it->image, it->image_len, &f) != 0)
		return NULL;
	struct eng_segment *g = calloc(1, sizeof(*g));
	if (g) {
		const struct fmt_segment_meta *m = &f->meta;
		g->segment_id = id;
		g->first_seq = m->first_seq;
		g->last_seq = m->last_seq;
		g->row_count = m->row_count;
		g->file_size = it->image_len;
		g->file_checksum = fmt_xxh3(it->image, it->image_len);
		g->min_occurred_ns = m->min_occurred_ns;
		g->max_occurred_ns = m->max_occurred_ns;
		g->min_received_ns = m->min_received_ns;
		g->max_received_ns = m->max_received_ns;
		memcpy(g->chain_before, m->chain_before, FMT_HASH_BYTES);
		memcpy(g->chain_after, m->chain_after, FMT_HASH_BYTES);
		memcpy(g->merkle_root, m->merkle_root, FMT_HASH_BYTES);
		g->fd = -1;
		it->footer = f;
	} else {
		fmt_segment_close(f);
	}
	return g;
}

/* Worker thread: builds one tenant's segment image from its snapshot. */
static int item_build(const struct eng_config *cfg, uint32_t shard, struct seal_item *it)
{
	struct eng_tenant *t = it->t;
	const struct eng_memtable *m = &t->sealing; /* frozen: nothing writes it */
	struct fmt_segment_build_args args = { .segment_id = it->segment_id, .shard = shard,
					       .block_rows = cfg->block_rows,
					       .zstd_level = cfg->zstd_level,
					       .version = cfg->segment_version,
					       .id_filter_bits = cfg->id_filter_bits,
					       .created_ns = it->created_ns,
					       .chain_before = m->chain_before,
					       .tenant = { t->name, t->name_len },
					       .event_hashes = (const uint8_t(*)[FMT_HASH_BYTES])m->hashes };
	int rc = fmt_segment_build(&args, m->rows, (const uint8_t(*)[FMT_HASH_BYTES])m->chains,
				   it->rows,
				   &it->image, &it->image_len);
	if (rc)
		return rc;
	if (!(it->seg = seal_describe(it, it->segment_id)))
		return FMT_E_NOMEM;
	ASSERT(it->image_len <= UINT32_MAX);
	/* Here rather than on the shard thread: creating a file waits for
	 * the filesystem's journal, tens of ms while segments are flushed. */
	it->fd = open(it->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (it->fd < 0)
		return -errno;
	it->created = true;
	return 0;
}

/* Shard thread: freezes the rows the worker seals (see the header). */
static int item_freeze(struct eng_shard *s, struct seal_item *it)
{
	struct eng_tenant *t = it->t;
	if (t->sealing.row_count == 0) {
		struct eng_memtable rest;
		ASSERT(it->rows >= 1 && it->rows <= t->active.row_count);
		if (it->rows == t->active.row_count) {
			eng_memtable_init(&rest, t->active.first_seq + it->rows,
					  t->active.chains[it->rows - 1]);
		} else {
			int rc = eng_memtable_split(&t->active, it->rows, &rest);
			if (rc)
				return rc;
			s->memtable_bytes += eng_memtable_bytes(&rest);
		}
		eng_memtable_free(&t->sealing); /* empty: its init allocated nothing */
		t->sealing = t->active;
		t->active = rest;
	}
	/* A round that failed left these rows frozen: they are sealed as is. */
	it->rows = t->sealing.row_count;
	ASSERT(t->sealing.first_seq == t->sealed_seq + 1); /* I1 */
	ASSERT(t->active.first_seq == t->sealing.first_seq + it->rows);
	it->segment_id = ((uint64_t)s->id << 40) | s->next_segment_no++;
	it->created_ns = eng_now_ns();
	eng_segment_path(s, it->segment_id, it->final_path, sizeof(it->final_path));
	size_t len = strlen(it->final_path);
	ASSERT(len + sizeof(".tmp") <= sizeof(it->tmp_path));
	memcpy(it->tmp_path, it->final_path, len);
	memcpy(it->tmp_path + len, ".tmp", sizeof(".tmp"));
	return 0;
}

static void *seal_worker_main(void *arg)
{
	struct eng_shard *s = arg;
	eng_thread_slice_ask(s, "seal worker", s->eng->cfg.seal_slice_ns);
	pthread_mutex_lock(&s->seal_lock);
	for (;;) {
		while (!s->seal_job && !s->wal.spare_want && !s->seal_worker_stop)
			pthread_cond_wait(&s->seal_cond, &s->seal_lock);
		if (s->wal.spare_want && !s->seal_worker_stop) {
			eng_wal_spare_make(s); /* first: a rotation may be waiting for it */
			continue;
		}
		if (!s->seal_job)
			break;
		struct eng_seal *z = s->seal_job;
		s->seal_job = NULL;
		pthread_mutex_unlock(&s->seal_lock);
		if (z->state == SEAL_NAMING)
			z->naming_result = seal_name_files(s, z);
		else
			for (uint32_t i = 0; i < z->count; i++)
				z->item[i].result = item_build(&s->eng->cfg, s->id, &z->item[i]);
		atomic_store_explicit(&z->worker_done, true, memory_order_release);
		eng_shard_wake(s);
		pthread_mutex_lock(&s->seal_lock);
	}
	pthread_mutex_unlock(&s->seal_lock);
	return NULL;
}

int eng_seal_worker_start(struct eng_shard *s)
{
	pthread_mutex_init(&s->seal_lock, NULL);
	pthread_cond_init(&s->seal_cond, NULL);
	pthread_cond_init(&s->spare_cond, NULL);
	s->wal.spare_fd = -1;
	int rc = pthread_create(&s->seal_worker, NULL, seal_worker_main, s);
	if (rc)
		return -rc;
	s->seal_worker_started = true;
	eng_wal_spare_request(s, s->wal.gen + 1);
	char name[16];
	snprintf(name, sizeof(name), "hodei-seal%u", s->id);
	pthread_setname_np(s->seal_worker, name);
	return 0;
}

/* Stops the worker after the round it is building, if any. */
void eng_seal_worker_stop(struct eng_shard *s)
{
	if (!s->seal_worker_started)
		return;
	pthread_mutex_lock(&s->seal_lock);
	s->seal_worker_stop = true;
	pthread_cond_signal(&s->seal_cond);
	pthread_mutex_unlock(&s->seal_lock);
	pthread_join(s->seal_worker, NULL);
	s->seal_worker_started = false;
	eng_wal_spare_drop(s);
	pthread_mutex_destroy(&s->seal_lock);
	pthread_cond_destroy(&s->seal_cond);
	pthread_cond_destroy(&s->spare_cond);
}

static void seal_start(struct eng_shard *s, struct eng_seal *z)
{
	s->seal = z;
	z->s = s;
	z->state = SEAL_BUILDING;
	for (uint32_t i = 0; i < z->count; i++) {
		z->item[i].fd = -1;
		z->item[i].z = z;
	}
	for (uint32_t i = 0; i < z->count; i++) {
		int rc = item_freeze(s, &z->item[i]);
		if (rc) {
			seal_end(s, rc);
			return;
		}
	}
	seal_hand_to_worker(s, z);
}

static void item_fsync_submit(struct eng_shard *s, struct seal_item *it)
{
	it->op_fsync = (struct eng_io_op){ .kind = ENG_IO_FSYNC, .fd = it->fd,
					   .done = item_fsync_done, .ctx = it };
	submit_op(s, &it->op_fsync);
}

/* Paced writing (cfg.seal_write_step_bytes > 0). The round's images are
 * written as one stream cut in steps of at most that many bytes. A step
 * takes the next bytes of one image or of several (small images share a
 * step: a round's median image is ~90 KB), writes each range, then writes
 * it back to the device (ENG_IO_WRITEBACK); the next step starts when every
 * range of this one is written back. So the device never holds more than
 * one step of segment data ahead of a WAL fsync, whose cache flush would
 * carry it all: with a round's images written and fsynced at once, a WAL
 * fsync behind the burst took 10-100 ms (docs/PERFORMANCE.md, thirteenth
 * round). Once every image is written back, they are all fsynced at once,
 * as before: the fsyncs then carry metadata only, in one or two journal
 * commits for the round. A failed range ends its image (the round then
 * fails as before); the other images go on, so the round's end is the
 * same whichever range failed.
 *
 * Pacing gives way when the seals fall behind: while the shard's memtables
 * are past 3/4 of the budget (appends are refused at the budget), a step
 * takes everything left of the round at once. Paced rounds are slower
 * (one step written back at a time), and at the maximum ingest rate they
 * would otherwise fill the budget: paced alone, `--max` lost half its
 * events to refusals.
 *
 * Invariant: an image is in at most one range per step (ranges of one
 * image are consecutive, and a step ends an image's range only at the
 * step's end), so its one op_write/op_writeback pair is enough. */
static void seal_step(struct eng_shard *s);

static void step_range_done(struct eng_seal *z)
{
	ASSERT(z->step_ranges > 0);
	if (--z->step_ranges == 0)
		seal_step(z->s);
}

static void item_range_written_back(struct eng_io_op *op)
{
	struct seal_item *it = op->ctx;
	if (op->result < 0 && it->result == 0)
		it->result = op->result;
	step_range_done(it->z);
}

static void item_range_written(struct eng_io_op *op)
{
	struct seal_item *it = op->ctx;
	struct eng_shard *s = it->z->s;
	if (op->result < 0) {
		if (it->result == 0)
			it->result = op->result;
		step_range_done(it->z);
		return;
	}
	it->op_writeback = (struct eng_io_op){ .kind = ENG_IO_WRITEBACK, .fd = it->fd,
					       .offset = op->offset, .len = op->len,
					       .done = item_range_written_back, .ctx = it };
	submit_op(s, &it->op_writeback);
}

static void seal_step(struct eng_shard *s)
{
	struct eng_seal *z = s->seal;
	const struct eng_config *cfg = &s->eng->cfg;
	/* Behind: the rest of the round at once. */
	bool hurry = s->memtable_bytes > cfg->memtable_budget_bytes / 4 * 3;
	uint64_t room = hurry ? UINT64_MAX : cfg->seal_write_step_bytes;
	ASSERT(z->step_ranges == 0);
	while (room > 0 && z->writing < z->count) {
		struct seal_item *it = &z->item[z->writing];
		if (it->result != 0 || it->written == it->image_len) {
			z->writing++;
			continue;
		}
		uint32_t n = (uint32_t)FMT_MIN(room, (uint64_t)(it->image_len - it->written));
		it->op_write = (struct eng_io_op){ .kind = ENG_IO_WRITE, .fd = it->fd,
						   .buf = it->image + it->written, .len = n,
						   .offset = it->written,
						   .done = item_range_written, .ctx = it };
		it->written += n;
		room -= n;
		z->step_ranges++;
		submit_op(s, &it->op_write);
	}
	if (z->step_ranges > 0) {
		s->stats.seal_write_steps++;
		s->stats.seal_write_steps_hurried += hurry;
		return;
	}
	for (uint32_t i = 0; i < z->count; i++)
		item_fsync_submit(s, &z->item[i]);
}

/* Shard thread, once the worker built the images: open the temporary
 * files and write them. */
static void seal_write(struct eng_shard *s)
{
	struct eng_seal *z = s->seal;
	z->state = SEAL_WRITING;
	int err = 0;
	for (uint32_t i = 0; i < z->count && !err; i++)
		err = z->item[i].result;
	if (err) {
		seal_end(s, err);
		return;
	}
	z->pending = z->count;
	if (s->eng->cfg.seal_write_step_bytes) {
		seal_step(s); /* z->writing and z->step_ranges start at 0: calloc'd */
		return;
	}
	for (uint32_t i = 0; i < z->count; i++) {
		struct seal_item *it = &z->item[i];
		it->op_write = (struct eng_io_op){ .kind = ENG_IO_WRITE, .fd = it->fd, .buf = it->image,
						   .len = (uint32_t)it->image_len,
						   .done = item_write_done, .ctx = it };
		submit_op(s, &it->op_write);
		item_fsync_submit(s, it);
	}
}

const char *const eng_seal_reason_names[ENG_SEAL_REASONS] = {
	[ENG_SEAL_RETRY] = "retry", [ENG_SEAL_SIZE] = "size", [ENG_SEAL_AGE] = "age",
	[ENG_SEAL_WAL] = "wal", [ENG_SEAL_MEMORY] = "memory",
};

/* Why tenant t is due on its own (ENG_SEAL_REASONS: it is not). */
static enum eng_seal_reason seal_due(const struct eng_shard *s, const struct eng_tenant *t,
				     uint32_t rows, int64_t now)
{
	const struct eng_config *cfg = &s->eng->cfg;
	const struct eng_memtable *m = &t->active;
	/* Rows count once durable: a seal takes only those, so waiting for
	 * them makes full-size segments rather than halves. */
	if (rows >= cfg->seal_rows || eng_memtable_bytes(m) >= cfg->seal_bytes)
		return ENG_SEAL_SIZE;
	if (now - m->oldest_received_ns >= cfg->seal_age_ns)
		return ENG_SEAL_AGE;
	uint64_t files = FMT_MAX(1, cfg->wal_retain_bytes / cfg->wal_file_bytes);
	if (m->gen[0] + files <= s->wal.gen)
		return ENG_SEAL_WAL;
	return ENG_SEAL_REASONS;
}

/* A round's candidates, in the order it takes them: tenants due on their
 * own first, then (under memory pressure) the rest; biggest first within
 * each. Keeps the SEAL_BATCH_MAX first. */
struct seal_pick {
	uint32_t count;
	struct seal_cand {
		struct eng_tenant *t;
		uint32_t rows;
		enum eng_seal_reason reason;
		uint64_t bytes;
	} c[SEAL_BATCH_MAX];
};

static bool cand_before(const struct seal_cand *a, const struct seal_cand *b)
{
	bool a_due = a->reason != ENG_SEAL_MEMORY, b_due = b->reason != ENG_SEAL_MEMORY;
	return a_due != b_due ? a_due : a->bytes > b->bytes;
}

static void pick_insert(struct seal_pick *p, struct seal_cand c)
{
	uint32_t i = p->count < SEAL_BATCH_MAX ? p->count++ : SEAL_BATCH_MAX;
	if (i == SEAL_BATCH_MAX) {
		if (!cand_before(&c, &p->c[SEAL_BATCH_MAX - 1]))
			return;
		i = SEAL_BATCH_MAX - 1;
	}
	while (i > 0 && cand_before(&c, &p->c[i - 1])) {
		p->c[i] = p->c[i - 1];
		i--;
	}
	p->c[i] = c;
}

bool eng_seal_ready(const struct eng_shard *s)
{
	return s->seal && (s->seal->state == SEAL_BUILDING || s->seal->state == SEAL_NAMING) &&
	       atomic_load_explicit(&s->seal->worker_done, memory_order_acquire);
}

void eng_seal_progress(struct eng_shard *s)
{
	if (!eng_seal_ready(s))
		return;
	if (s->seal->state == SEAL_BUILDING)
		seal_write(s);
	else
		seal_record(s);
}

/* Starts a round if anything is due (see the header). Under memory
 * pressure the round also takes the biggest other tenants, until what it
 * frees brings the shard down to a quarter of its budget: cutting only
 * those keeps small tenants' rows together in fewer, larger segments
 * (their age or the WAL they hold seals them later), and every query pays
 * per segment. */
void eng_seal_maybe(struct eng_shard *s)
{
	int64_t mono = eng_mono_ns();
	if (s->seal || s->failed || mono < s->seal_retry_ns)
		return;
	const struct eng_config *cfg = &s->eng->cfg;
	bool pressure = s->memtable_bytes > cfg->memtable_budget_bytes / 2;
	if (!pressure && !s->seal_wanted && mono - s->seal_scan_ns < SEAL_SCAN_INTERVAL_NS)
		return;
	s->seal_scan_ns = mono;
	s->seal_wanted = false;
	struct seal_pick pick = { 0 };
	int64_t now = eng_now_ns();
	for (uint32_t i = 0; i < s->tenant_slot_count; i++) {
		struct eng_tenant *t = s->tenant_slots[i];
		if (t && t->sealing.row_count) { /* left by a failed round */
			pick_insert(&pick, (struct seal_cand){ t, t->sealing.row_count, ENG_SEAL_RETRY,
							      eng_memtable_bytes(&t->sealing) });
			continue;
		}
		uint32_t rows = t ? eng_memtable_visible(&t->active, t->durable_seq) : 0;
		if (rows == 0)
			continue;
		enum eng_seal_reason why = seal_due(s, t, rows, now);
		if (why == ENG_SEAL_REASONS && !pressure)
			continue;
		pick_insert(&pick, (struct seal_cand){ t, FMT_MIN(rows, cfg->seal_rows),
						      why == ENG_SEAL_REASONS ? ENG_SEAL_MEMORY : why,
						      eng_memtable_bytes(&t->active) });
	}
	/* Bound the round's build time, and its ops to what the ring holds
	 * besides the WAL's write and fsync (two per segment, two for the
	 * manifest). */
	uint32_t ops_room = (cfg->io_entries - 4) / 2;
	uint64_t low = cfg->memtable_budget_bytes / 4;
	uint64_t to_free = s->memtable_bytes > low ? s->memtable_bytes - low : 0;
	uint64_t rows = 0, freed = 0;
	struct eng_seal *z = NULL;
	for (uint32_t i = 0; i < pick.count; i++) {
		const struct seal_cand *c = &pick.c[i];
		if (c->reason == ENG_SEAL_MEMORY && freed >= to_free)
			break; /* the rest are smaller memory-only candidates */
		uint32_t n = z ? z->count : 0;
		if (n == ops_room || (n > 0 && rows + c->rows > SEAL_BATCH_ROWS_MAX)) {
			s->seal_wanted = true; /* more is due: next round, right away */
			break;
		}
		if (!z && !(z = calloc(1, sizeof(*z))))
			return;
		z->item[n].t = c->t;
		z->item[n].rows = c->rows;
		z->item[n].reason = c->reason;
		z->count = n + 1;
		rows += c->rows;
		freed += c->bytes;
	}
	if (pick.count == SEAL_BATCH_MAX)
		s->seal_wanted = true; /* there may be more candidates than one round holds */
	if (z)
		seal_start(s, z);
}

int eng_segment_read_block(struct eng_shard *s, struct eng_segment *seg, uint32_t b,
			   uint32_t col_mask, struct fmt_block **out)
{
	int rc = eng_segment_open_footer(s, seg);
	if (rc == 0)
		rc = eng_segment_open_fd(s, seg);
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
			rc = eng_pread_full(seg->fd, bufs[c], ref->chunk[c].stored_len, ref->chunk[c].offset);
		chunks[c] = bufs[c];
	}
	if (rc == 0)
		rc = fmt_block_decode_with(s->decoder, seg->footer, b, col_mask, chunks, out);
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
			if (seg->max_received_ns < horizon || seg->remote)
				continue; /* remote: older than any sane retention */
			s->req_gen++;
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

