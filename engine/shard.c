// SPDX-License-Identifier: Apache-2.0
/*
 * shard.c — a shard's thread: its loop, the append path and group commit.
 *
 * One tick of the loop:
 *
 *   drain inboxes ──▶ append: validate, dedup, seq, hash, encode into the
 *        │                    filling WAL buffer and the tenant's memtable
 *        │            search / count / verify: run now, complete
 *        ▼
 *   commit_start: if nothing is in flight and the filling buffer holds
 *        │        requests, write it and fsync it (one fsync covers them
 *        │        all), and swap buffers so the next tick fills the other
 *        ▼
 *   seal check ──▶ eng_io_run(deadline) ──▶ completions:
 *        fsync done: durable_seq advances, the buffer's requests complete
 *        ▼
 *   wake the producers that got completions (one eventfd write each)
 *
 * Group commit comes from the double buffer: while one buffer's fsync is
 * in flight, every request that arrives is encoded into the other, and all
 * of them share the next fsync.
 *
 * An I/O error on the WAL stops the shard's write path for good (state
 * `failed`): after a failed fsync the kernel may have dropped the dirty
 * pages, so nothing written since the last good fsync can be trusted, and
 * the only safe recovery is a restart that replays what is really on disk.
 * Every request of the failed and of the filling buffer completes with
 * -EIO, so none of them is acknowledged; later appends get -EIO at once.
 */
#include "engine/internal.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

const uint64_t eng_latency_bounds_ns[ENG_LATENCY_BOUNDS] = {
	100000,	   250000,    500000,	  1000000,   2500000,	5000000,    10000000,	25000000,
	50000000, 100000000, 250000000, 500000000, 1000000000, 2500000000, 5000000000, 10000000000,
};

void eng_latency_note(uint64_t hist[ENG_LATENCY_BOUNDS + 1], uint64_t *total, uint64_t *max,
		      uint64_t ns)
{
	uint32_t b = 0;
	while (b < ENG_LATENCY_BOUNDS && ns > eng_latency_bounds_ns[b])
		b++;
	hist[b]++;
	*total += ns;
	if (ns > *max)
		*max = ns;
}

#define TICK_REQUESTS_MAX 4096   /* requests drained per tick */
#define IDLE_WAIT_NS (100 * 1000000ll)

void eng_shard_wake(struct eng_shard *s)
{
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&s->sleeping, memory_order_relaxed)) {
		uint64_t one = 1;
		(void)!write(s->wake_fd, &one, sizeof(one));
	}
}

void eng_complete(struct eng_shard *s, struct eng_req_hdr *req)
{
	struct eng_producer *p = req->producer;
	bool ok = eng_spsc_push(&p->outbox[s->id], req);
	ASSERT(ok); /* bounded by the producer's per-shard pending limit */
	if (!s->woken_mark[p->index]) {
		s->woken_mark[p->index] = 1;
		s->woken[s->woken_count++] = p->index;
	}
}

static void wake_producers(struct eng_shard *s)
{
	for (uint32_t i = 0; i < s->woken_count; i++) {
		uint32_t p = s->woken[i];
		uint64_t one = 1;
		(void)!write(s->eng->producers[p].event_fd, &one, sizeof(one));
		s->woken_mark[p] = 0;
	}
	s->woken_count = 0;
}

/* ---- tenants ------------------------------------------------------------- */

struct eng_tenant *eng_tenant_find(struct eng_shard *s, struct fmt_str name)
{
	uint64_t key = eng_tenant_key(name);
	uint32_t mask = s->tenant_slot_count - 1;
	for (uint32_t i = (uint32_t)key & mask;; i = (i + 1) & mask) {
		struct eng_tenant *t = s->tenant_slots[i];
		if (!t)
			return NULL;
		if (t->key == key && t->name_len == name.len && memcmp(t->name, name.ptr, name.len) == 0)
			return t;
	}
}

static int tenant_table_grow(struct eng_shard *s)
{
	uint32_t count = s->tenant_slot_count * 2;
	struct eng_tenant **slots = calloc(count, sizeof(*slots));
	if (!slots)
		return FMT_E_NOMEM;
	for (uint32_t i = 0; i < s->tenant_slot_count; i++) {
		struct eng_tenant *t = s->tenant_slots[i];
		if (!t)
			continue;
		uint32_t j = (uint32_t)t->key & (count - 1);
		while (slots[j])
			j = (j + 1) & (count - 1);
		slots[j] = t;
	}
	free(s->tenant_slots);
	s->tenant_slots = slots;
	s->tenant_slot_count = count;
	return 0;
}

struct eng_tenant *eng_tenant_get(struct eng_shard *s, struct fmt_str name, int *err)
{
	struct eng_tenant *t = eng_tenant_find(s, name);
	if (t)
		return t;
	if (s->tenant_count >= s->eng->cfg.tenants_max) {
		*err = FMT_E_FULL;
		return NULL;
	}
	if ((s->tenant_count + 1) * 2 > s->tenant_slot_count && tenant_table_grow(s) != 0) {
		*err = FMT_E_NOMEM;
		return NULL;
	}
	t = calloc(1, sizeof(*t));
	if (!t) {
		*err = FMT_E_NOMEM;
		return NULL;
	}
	ASSERT(name.len >= 1 && name.len <= FMT_TENANT_MAX);
	memcpy(t->name, name.ptr, name.len);
	t->name_len = (uint8_t)name.len;
	t->key = eng_tenant_key(name);
	t->next_seq = 1;
	eng_memtable_init(&t->sealing, 1, t->chain);
	eng_memtable_init(&t->active, 1, t->chain);
	uint32_t mask = s->tenant_slot_count - 1;
	uint32_t i = (uint32_t)t->key & mask;
	while (s->tenant_slots[i])
		i = (i + 1) & mask;
	s->tenant_slots[i] = t;
	s->tenant_count++;
	s->stats.tenants = s->tenant_count;
	return t;
}

/* ---- append -------------------------------------------------------------- */

static void fail_append(struct eng_shard *s, struct eng_append *req, int status)
{
	req->status = status;
	req->accepted = 0;
	if (status == FMT_E_INVALID)
		s->stats.requests_rejected_invalid++;
	else if (status == ENG_E_RATE)
		s->stats.requests_rejected_rate++;
	else if (status == ENG_E_DISK)
		s->stats.requests_rejected_disk++;
	else
		s->stats.requests_rejected_budget++;
	eng_complete(s, &req->hdr);
}

/* The tenant's token bucket, refilled to now: tenant_rate_eps tokens a
 * second, at most the burst. A new tenant starts full. */
static double rate_refill(const struct eng_config *cfg, struct eng_tenant *t)
{
	double burst = cfg->tenant_burst ? cfg->tenant_burst
					 : FMT_MAX(cfg->tenant_rate_eps, cfg->limits.events_per_batch_max);
	int64_t now = eng_mono_ns();
	if (t->rate_at_ns == 0)
		t->rate_tokens = burst;
	else
		t->rate_tokens += (double)(now - t->rate_at_ns) * cfg->tenant_rate_eps / 1e9;
	if (t->rate_tokens > burst)
		t->rate_tokens = burst;
	t->rate_at_ns = now;
	return t->rate_tokens;
}

/* Checks everything that can refuse a request before any state changes,
 * so a refused request leaves no trace (DESIGN.md §2.2). Returns 0 and the
 * WAL bytes the request needs, or a status. */
static int append_check(struct eng_shard *s, struct eng_append *req, uint64_t *bytes)
{
	const struct eng_config *cfg = &s->eng->cfg;
	if (!fmt_tenant_valid(req->tenant)) {
		req->invalid = (struct fmt_invalid){ "tenant_id", "not 1-64 chars of [A-Za-z0-9._-]", 64 };
		return FMT_E_INVALID;
	}
	if (s->disk_full)
		return ENG_E_DISK;
	if (req->count == 0) {
		req->invalid = (struct fmt_invalid){ "events", "empty", 0 };
		return FMT_E_INVALID;
	}
	if (req->count > cfg->limits.events_per_batch_max)
		return FMT_E_TOO_BIG;
	uint64_t need = FMT_REC_HEADER_BYTES;
	for (uint32_t i = 0; i < req->count; i++) {
		struct fmt_event ev = req->events[i];
		int rc = req->validated ? 0 : fmt_event_validate(&ev, &cfg->limits, &req->invalid);
		if (rc) {
			req->invalid_index = i;
			return rc;
		}
		ev.tenant = req->tenant;
		need += 4 + fmt_event_canon_size(&ev);
	}
	if (need > s->wal.buf[0].cap || need > UINT32_MAX)
		return FMT_E_TOO_BIG;
	struct eng_tenant *t = eng_tenant_find(s, req->tenant);
	if (cfg->tenant_rate_eps && t && rate_refill(cfg, t) < (double)req->count)
		return ENG_E_RATE;
	static const struct eng_memtable empty;
	uint64_t grow = eng_memtable_growth(t ? &t->active : &empty, req->count, need);
	if (s->memtable_bytes + grow > cfg->memtable_budget_bytes) {
		s->seal_wanted = true;
		return FMT_E_NOMEM;
	}
	*bytes = need;
	return 0;
}

/* Ten bytes of kernel randomness for a UUIDv7, drawn from a per-shard
 * buffer refilled 4 KiB at a time: one getrandom() per ~400 ids. */
static const uint8_t *shard_random10(struct eng_shard *s)
{
	if (s->rand_used + 10 > sizeof(s->rand_buf)) {
		ssize_t n = getrandom(s->rand_buf, sizeof(s->rand_buf), 0);
		ASSERT(n == (ssize_t)sizeof(s->rand_buf));
		s->rand_used = 0;
	}
	const uint8_t *r = s->rand_buf + s->rand_used;
	s->rand_used += 10;
	return r;
}

static bool id_is_zero(const uint8_t id[FMT_EVENT_ID_BYTES])
{
	for (int i = 0; i < FMT_EVENT_ID_BYTES; i++)
		if (id[i])
			return false;
	return true;
}

/* Encodes one accepted event at buf->data + buf->len (after its u32
 * length), chains it and adds it to the memtable. */
static void append_one(struct eng_shard *s, struct eng_tenant *t, struct eng_wal_buf *buf,
		       struct fmt_event *ev)
{
	uint8_t *at = buf->data + buf->len;
	struct fmt_event view;
	struct fmt_attr attrs[FMT_ATTRS_HARD_MAX];
	int64_t n = fmt_event_canon_encode_view(ev, at + 4, buf->cap - buf->len - 4, &view, attrs,
						FMT_ATTRS_HARD_MAX);
	ASSERT(n > 0); /* append_check reserved the room; validation bounded the attributes */
	fmt_put_u32(at, (uint32_t)n);
	uint8_t hash[FMT_HASH_BYTES];
	fmt_sha256(at + 4, (size_t)n, hash);
	fmt_chain_next(t->chain, hash, t->chain);
	int rc = eng_memtable_add(&t->active, at + 4, (uint32_t)n, &view, hash, t->chain, s->wal.gen);
	ASSERT(rc == 0); /* TODO(budget): an allocation failure here is fatal */
	t->next_seq++;
	buf->len += 4 + (uint64_t)n;
}

/* Makes room for one more request in the buffer's list. */
static int buf_reserve_req(struct eng_wal_buf *buf)
{
	if (buf->req_count < buf->req_cap)
		return 0;
	uint32_t cap = buf->req_cap ? buf->req_cap * 2 : 256;
	struct eng_append **reqs = realloc(buf->reqs, cap * sizeof(*reqs));
	if (!reqs)
		return FMT_E_NOMEM;
	buf->reqs = reqs;
	buf->req_cap = cap;
	return 0;
}

/* A request's events are checked against the dedup memory a group at a
 * time, so that the table's cache misses overlap. */
#define APPEND_DEDUP_GROUP 64

/* dup[i]: whether events[i]'s id is one the shard stored within the window
 * (or one earlier in the group); the others are remembered now. A
 * server-assigned id cannot come back in a retry, so only client ids take
 * room in the dedup memory. */
static void dedup_group(struct eng_shard *s, const struct eng_tenant *t,
			const struct fmt_event *events, uint32_t k, int64_t now, bool *dup)
{
	const uint8_t *ids[APPEND_DEDUP_GROUP];
	uint32_t index[APPEND_DEDUP_GROUP];
	bool found[APPEND_DEDUP_GROUP];
	uint32_t m = 0;
	ASSERT(k <= APPEND_DEDUP_GROUP);
	for (uint32_t i = 0; i < k; i++) {
		dup[i] = false;
		if (!id_is_zero(events[i].event_id)) {
			ids[m] = events[i].event_id;
			index[m++] = i;
		}
	}
	eng_dedup_check_insert_many(s->dedup, t->key, ids, m, now, found);
	for (uint32_t j = 0; j < m; j++)
		dup[index[j]] = found[j];
}

/* Returns false when the request must wait for room in the WAL buffer. */
static bool append_run(struct eng_shard *s, struct eng_append *req)
{
	req->run_ns = eng_mono_ns();
	if (s->failed) {
		fail_append(s, req, -EIO);
		return true;
	}
	uint64_t need = 0;
	int rc = append_check(s, req, &need);
	if (rc) {
		fail_append(s, req, rc);
		return true;
	}
	struct eng_wal_buf *buf = &s->wal.buf[s->wal.filling];
	if (buf->cap - buf->len < need || buf_reserve_req(buf) != 0)
		return false; /* wait for the commit in flight to free the other buffer */
	struct eng_tenant *t = eng_tenant_get(s, req->tenant, &rc);
	if (!t) {
		fail_append(s, req, rc);
		return true;
	}
	if (s->eng->cfg.tenant_rate_eps) {
		if (rate_refill(&s->eng->cfg, t) < (double)req->count) {
			fail_append(s, req, ENG_E_RATE); /* a new tenant's first request */
			return true;
		}
		t->rate_tokens -= req->count;
	}
	int64_t now = eng_now_ns();
	uint64_t mem_before = eng_memtable_bytes(&t->active);
	uint64_t rec_at = buf->len;
	buf->len += FMT_REC_HEADER_BYTES;
	req->received_at_ns = now;
	req->accepted = req->duplicates = 0;
	req->first_seq = req->last_seq = 0;
	for (uint32_t at = 0; at < req->count; at += APPEND_DEDUP_GROUP) {
		uint32_t k = FMT_MIN(req->count - at, (uint32_t)APPEND_DEDUP_GROUP);
		bool dup[APPEND_DEDUP_GROUP];
		dedup_group(s, t, req->events + at, k, now, dup);
		for (uint32_t i = 0; i < k; i++) {
			struct fmt_event ev = req->events[at + i];
			if (dup[i]) {
				req->duplicates++;
				continue;
			}
			if (id_is_zero(ev.event_id))
				fmt_uuid_v7(ev.event_id, now, shard_random10(s));
			ev.tenant = req->tenant;
			ev.seq = t->next_seq;
			ev.received_at_ns = now;
			if (ev.occurred_at_ns == 0)
				ev.occurred_at_ns = now;
			if (req->accepted++ == 0)
				req->first_seq = ev.seq;
			req->last_seq = ev.seq;
			append_one(s, t, buf, &ev);
		}
	}
	if (req->accepted) {
		uint8_t *hdr = buf->data + rec_at;
		uint8_t *payload = hdr + FMT_REC_HEADER_BYTES;
		fmt_rec_header_encode(hdr, FMT_REC_BATCH, (uint16_t)req->accepted, req->first_seq,
				      payload, (uint32_t)(buf->len - rec_at - FMT_REC_HEADER_BYTES),
				      s->wal.salt);
	} else {
		buf->len = rec_at;
	}
	memcpy(req->chain, t->chain, FMT_HASH_BYTES);
	req->hdr.tenant = t;
	s->memtable_bytes += eng_memtable_bytes(&t->active) - mem_before;
	if (t->active.row_count >= s->eng->cfg.seal_rows ||
	    eng_memtable_bytes(&t->active) >= s->eng->cfg.seal_bytes)
		s->seal_wanted = true;
	buf->reqs[buf->req_count++] = req; /* room reserved above */
	s->stats.events_appended += req->accepted;
	s->stats.memtable_rows += req->accepted;
	s->stats.events_duplicate += req->duplicates;
	return true;
}

/* ---- group commit -------------------------------------------------------- */

/* Completes the buffer's requests; committed_at is when their commit was
 * submitted (or now, when none was). */
static void commit_finish(struct eng_shard *s, struct eng_wal_buf *buf, int status,
			  int64_t committed_at)
{
	int64_t now = eng_mono_ns();
	if (!committed_at)
		committed_at = now;
	for (uint32_t i = 0; i < buf->req_count; i++) {
		struct eng_append *req = buf->reqs[i];
		struct eng_tenant *t = req->hdr.tenant;
		req->status = status;
		req->queued_ns = req->hdr.submitted_ns;
		req->commit_ns = committed_at;
		req->done_ns = now;
		if (status == 0 && req->accepted && t->durable_seq < req->last_seq)
			t->durable_seq = req->last_seq;
		if (status)
			req->accepted = 0;
		eng_complete(s, &req->hdr);
	}
	buf->req_count = 0;
	buf->len = 0;
}

static void wal_fail(struct eng_shard *s, int err)
{
	if (!s->failed)
		eng_log(s->eng, ENG_LOG_ERROR,
			"shard %u: WAL write failed (%s); refusing appends until restart", s->id,
			fmt_strerror(err));
	s->failed = true;
	s->stats.failed = true;
}

static void wal_write_done(struct eng_io_op *op)
{
	struct eng_shard *s = op->ctx;
	s->wal.write_result = op->result;
	s->wal.write_done_ns = eng_mono_ns();
}

/* A commit that took at least cfg.slow_commit_ns: counted, and logged
 * with what else the shard did meanwhile. On a device whose cache flush
 * carries every byte written before it, a WAL fdatasync waits behind the
 * segment data written just before (ADR 0019), and a shard thread blocked
 * in its own file-system calls (rotations, retiring WAL files) sees
 * completions late. One line per shard and second at most; the next line
 * says how many were not logged. */
static void slow_commit_note(struct eng_shard *s, const struct eng_wal_buf *buf, int64_t took)
{
	struct eng_wal *w = &s->wal;
	s->stats.wal_slow_commits++;
	int64_t now = eng_mono_ns();
	if (w->slow_logged_ns && now - w->slow_logged_ns < 1000000000) {
		w->slow_unlogged++;
		return;
	}
	struct eng_io_counts c;
	eng_io_counts(s->io, &c);
	const struct eng_io_counts *a = &w->commit_io;
	/* Not the commit's own write and fsync. */
	uint64_t writes = c.ops[ENG_IO_WRITE] - a->ops[ENG_IO_WRITE] - 1;
	uint64_t write_kib = (c.bytes[ENG_IO_WRITE] - a->bytes[ENG_IO_WRITE] - buf->len) >> 10;
	uint64_t wb = c.ops[ENG_IO_WRITEBACK] - a->ops[ENG_IO_WRITEBACK];
	uint64_t wb_kib = (c.bytes[ENG_IO_WRITEBACK] - a->bytes[ENG_IO_WRITEBACK]) >> 10;
	uint64_t fsyncs = c.ops[ENG_IO_FSYNC] - a->ops[ENG_IO_FSYNC] - 1;
	uint64_t reads = c.ops[ENG_IO_READ] - a->ops[ENG_IO_READ];
	int64_t write_ns = w->write_done_ns >= w->commit_started_ns
				   ? w->write_done_ns - w->commit_started_ns
				   : took;
	eng_log(s->eng, ENG_LOG_WARN,
		"shard %u: slow WAL commit: %.1f ms (write %.1f ms, then fdatasync %.1f ms) of %llu KiB "
		"for %u requests; meanwhile: %llu other writes (%llu KiB), %llu ranges written back "
		"(%llu KiB), %llu other fsyncs, %llu reads, %llu WAL rotations, shard thread blocked "
		"%.1f ms; %llu slow commits not logged since the last line",
		s->id, (double)took / 1e6, (double)write_ns / 1e6, (double)(took - write_ns) / 1e6,
		(unsigned long long)(buf->len >> 10), buf->req_count, (unsigned long long)writes,
		(unsigned long long)write_kib, (unsigned long long)wb, (unsigned long long)wb_kib,
		(unsigned long long)fsyncs, (unsigned long long)reads,
		(unsigned long long)(s->stats.wal_rotations - w->commit_rotations),
		(double)(s->stats.shard_blocked_ns - w->commit_blocked_ns) / 1e6,
		(unsigned long long)w->slow_unlogged);
	w->slow_logged_ns = now;
	w->slow_unlogged = 0;
}

static void wal_fsync_done(struct eng_io_op *op)
{
	struct eng_shard *s = op->ctx;
	struct eng_wal *w = &s->wal;
	struct eng_wal_buf *buf = &w->buf[1 - w->filling];
	int err = w->write_result < 0 ? w->write_result : op->result;
	int64_t took = eng_mono_ns() - w->commit_started_ns;
	w->in_flight = false;
	s->stats.wal_fsyncs++;
	eng_latency_note(s->stats.fsync_hist, &s->stats.fsync_ns_total, &s->stats.fsync_ns_max,
			 (uint64_t)took);
	if (s->eng->cfg.slow_commit_ns && took >= s->eng->cfg.slow_commit_ns)
		slow_commit_note(s, buf, took);
	if (err < 0 || s->failed) {
		wal_fail(s, err < 0 ? err : -EIO);
		commit_finish(s, buf, -EIO, w->commit_started_ns);
		return;
	}
	w->size += buf->len;
	s->stats.wal_bytes_written += buf->len;
	s->stats.batches_committed += buf->req_count;
	commit_finish(s, buf, 0, w->commit_started_ns);
}

static void commit_start(struct eng_shard *s)
{
	struct eng_wal *w = &s->wal;
	struct eng_wal_buf *buf = &w->buf[w->filling];
	if (w->in_flight || buf->req_count == 0)
		return;
	if (s->failed) {
		commit_finish(s, buf, -EIO, 0);
		return;
	}
	if (buf->len == 0) {
		/* Only duplicates: their originals are durable, since nothing
		 * is in flight. */
		commit_finish(s, buf, 0, 0);
		return;
	}
	if (w->size + buf->len > s->eng->cfg.wal_file_bytes && w->size > FMT_FILE_HEADER_BYTES) {
		int rc = eng_wal_rotate(s);
		if (rc) {
			wal_fail(s, rc);
			commit_finish(s, buf, -EIO, 0);
			return;
		}
		/* Its records were checked with the old file's salt. */
		fmt_rec_reseed(buf->data, buf->len, s->wal.salt);
	}
	w->write_op = (struct eng_io_op){ .kind = ENG_IO_WRITE, .fd = w->fd, .buf = buf->data,
					  .len = (uint32_t)buf->len, .offset = w->size,
					  .done = wal_write_done, .ctx = s };
	w->fsync_op = (struct eng_io_op){ .kind = ENG_IO_FSYNC, .fd = w->fd,
					  .done = wal_fsync_done, .ctx = s };
	w->write_result = 0;
	int rc = eng_io_submit(s->io, &w->write_op);
	if (rc == 0)
		rc = eng_io_submit(s->io, &w->fsync_op);
	ASSERT(rc == 0); /* the ring is sized for the WAL's two ops plus a seal's */
	w->commit_started_ns = eng_mono_ns();
	eng_io_counts(s->io, &w->commit_io);
	w->commit_rotations = s->stats.wal_rotations;
	w->commit_blocked_ns = s->stats.shard_blocked_ns;
	w->in_flight = true;
	w->filling = 1 - w->filling;
}

/* ---- the loop ------------------------------------------------------------ */

/* Search, count and verify may need segments that live only in S3 (remote.c):
 * returns true when the request was parked or failed instead of run. */
static bool not_readable(struct eng_shard *s, struct eng_req_hdr *hdr)
{
	int err = 0;
	if (eng_remote_ready(s, hdr, &err))
		return false;
	if (!err) {
		eng_park(s, hdr);
		return true;
	}
	eng_read_req_set_status(hdr, err);
	eng_complete(s, hdr);
	return true;
}

static void dispatch(struct eng_shard *s, struct eng_req_hdr *hdr, bool *keep)
{
	*keep = false;
	switch (hdr->kind) {
	case ENG_REQ_APPEND:
		*keep = !append_run(s, (struct eng_append *)hdr);
		break;
	case ENG_REQ_SEARCH:
		if (not_readable(s, hdr))
			break;
		s->req_gen++;
		s->stats.searches++;
		eng_search_run(s, (struct eng_search *)hdr);
		eng_segment_cache_release(s);
		eng_complete(s, hdr);
		break;
	case ENG_REQ_COUNT:
		if (not_readable(s, hdr))
			break;
		s->req_gen++;
		s->stats.counts++;
		eng_count_run(s, (struct eng_count *)hdr);
		eng_segment_cache_release(s);
		eng_complete(s, hdr);
		break;
	case ENG_REQ_VERIFY:
		if (not_readable(s, hdr))
			break;
		s->req_gen++;
		s->stats.verifies++;
		eng_verify_run(s, (struct eng_verify *)hdr);
		eng_segment_cache_release(s);
		eng_complete(s, hdr);
		break;
	case ENG_REQ_EXPORT_LIST:
		eng_export_list_run(s, (struct eng_export_list *)hdr);
		eng_complete(s, hdr);
		break;
	case ENG_REQ_EXPORT_MARK:
		eng_export_mark_queue(s, (struct eng_export_mark *)hdr);
		break;
	default:
		ASSERT(0);
	}
}

enum drain_result { DRAINED, LEFT_NO_ROOM, LEFT_BUDGET };

/* Runs queued requests, at most TICK_REQUESTS_MAX per tick. An append
 * that does not fit the filling WAL buffer stays first in its queue. */
static enum drain_result drain_inboxes(struct eng_shard *s)
{
	uint32_t budget = TICK_REQUESTS_MAX;
	enum drain_result res = DRAINED;
	for (uint32_t p = 0; p < s->eng->cfg.producers_max; p++) {
		struct eng_req_hdr *hdr;
		while ((hdr = eng_spsc_peek(&s->inbox[p])) != NULL) {
			if (budget == 0)
				return LEFT_BUDGET;
			bool keep;
			dispatch(s, hdr, &keep);
			if (keep) {
				res = LEFT_NO_ROOM;
				break;
			}
			eng_spsc_pop(&s->inbox[p]);
			budget--;
		}
	}
	return res;
}

static bool inboxes_empty(struct eng_shard *s)
{
	for (uint32_t p = 0; p < s->eng->cfg.producers_max; p++)
		if (eng_spsc_peek(&s->inbox[p]))
			return false;
	return true;
}

static void publish_stats(struct eng_shard *s)
{
	s->stats.dedup_entries = eng_dedup_count(s->dedup);
	s->stats.dedup_evicted_early = eng_dedup_evicted_early(s->dedup);
	s->stats.memtable_bytes = s->memtable_bytes;
	s->stats.failed = s->failed;
	s->stats.queue_full = atomic_load_explicit(&s->queue_full, memory_order_relaxed);
	s->stats.publishes++;
	pthread_mutex_lock(&s->stats_lock);
	s->published = s->stats;
	pthread_mutex_unlock(&s->stats_lock);
}

/* Stopping: parked reads will not get their segments any more. */
static void fail_parked(struct eng_shard *s)
{
	while (s->parked_head) {
		struct eng_req_hdr *r = s->parked_head;
		s->parked_head = r->next;
		eng_read_req_set_status(r, FMT_E_SHUTDOWN);
		eng_complete(s, r);
	}
	s->parked_tail = NULL;
}

static bool quiescent(struct eng_shard *s)
{
	return !s->wal.in_flight && s->wal.buf[s->wal.filling].req_count == 0 &&
	       !eng_seal_busy(s) && eng_io_in_flight(s->io) == 0 && !s->man_cur && !s->man_head &&
	       !s->marks_head && !s->marks_inflight_count && !s->removing_count && !s->parked_head;
}

#define LOOP_EVENTS_MAX 64

/* Runs the callback of every ready watch of the loop fd (the wake-up
 * eventfd is just drained). Returns true when more may be ready. */
static bool loop_dispatch(struct eng_shard *s)
{
	struct epoll_event evs[LOOP_EVENTS_MAX];
	int n = epoll_wait(s->loop_fd, evs, LOOP_EVENTS_MAX, 0);
	for (int i = 0; i < n; i++) {
		struct eng_watch *w = evs[i].data.ptr;
		if (w == &s->wake_watch)
			eng_io_wake_drain(s->wake_fd);
		else
			w->fn(w, evs[i].events);
	}
	return n == LOOP_EVENTS_MAX;
}

static void hooks_start(struct eng_shard *s)
{
	const struct eng_shard_hooks *h = &s->eng->cfg.hooks;
	if (!h->start)
		return;
	int rc = h->start(h->ctx, s->eng, s->id);
	if (rc) {
		eng_log(s->eng, ENG_LOG_ERROR, "shard %u: hook start failed: %s", s->id, fmt_strerror(rc));
		return;
	}
	s->hook_started = true;
}

#define DISK_CHECK_EVERY_NS (100 * 1000000ll)
/* Footer warm-up work per idle tick: a request that arrives meanwhile
 * waits at most about this long. */
#define WARM_STEP_NS (1000000ll)

/* The disk budget (DESIGN.md §2.6): this shard's share of
 * disk_budget_bytes, counting its local segments and its WAL files (old
 * and free ones at their full size: an upper bound), and the file system's free
 * space against disk_reserve_bytes, checked every 100 ms. Appends are
 * refused (ENG_E_DISK) while either is crossed; nothing already stored is
 * touched, and a shard never reaches ENOSPC, which would stop it. */
static void disk_check(struct eng_shard *s)
{
	const struct eng_config *cfg = &s->eng->cfg;
	if (!cfg->disk_budget_bytes && !cfg->disk_reserve_bytes)
		return;
	int64_t now = eng_mono_ns();
	if (now < s->disk_next_check_ns)
		return;
	s->disk_next_check_ns = now + DISK_CHECK_EVERY_NS;
	uint64_t wal_old = s->stats.wal_files ? s->stats.wal_files - 1 : 0;
	uint64_t used = s->stats.segment_bytes_local +
			(wal_old + s->stats.wal_free_files) * cfg->wal_file_bytes + s->wal.size;
	bool full = cfg->disk_budget_bytes && used > cfg->disk_budget_bytes / s->eng->shard_count;
	struct statvfs v;
	if (!full && cfg->disk_reserve_bytes && statvfs(s->dir, &v) == 0 &&
	    (uint64_t)v.f_bavail * v.f_frsize < cfg->disk_reserve_bytes)
		full = true;
	if (full != s->disk_full)
		eng_log(s->eng, full ? ENG_LOG_WARN : ENG_LOG_INFO,
			"shard %u: %s (%llu bytes used, budget %llu for this shard, reserve %llu)", s->id,
			full ? "disk budget reached: refusing appends" : "disk budget ok again: appending",
			(unsigned long long)used,
			(unsigned long long)(cfg->disk_budget_bytes / s->eng->shard_count),
			(unsigned long long)cfg->disk_reserve_bytes);
	s->disk_full = full;
	s->stats.disk_full = full;
	s->stats.disk_used_bytes = used;
}

/* sched_setattr(2)'s argument: glibc has no wrapper. */
struct sched_attr_v1 {
	uint32_t size, sched_policy;
	uint64_t sched_flags;
	int32_t sched_nice;
	uint32_t sched_priority;
	uint64_t sched_runtime, sched_deadline, sched_period;
	uint32_t sched_util_min, sched_util_max;
};

void eng_thread_slice_ask(struct eng_shard *s, const char *who, int64_t ns)
{
	if (!ns)
		return;
	/* Keeps the policy (SCHED_OTHER) and the nice value. */
	struct sched_attr_v1 a = { .size = sizeof(a), .sched_policy = SCHED_OTHER,
				   .sched_nice = getpriority(PRIO_PROCESS, 0), .sched_runtime = (uint64_t)ns };
	if (syscall(SYS_sched_setattr, 0, &a, 0) != 0)
		eng_log(s->eng, ENG_LOG_WARN, "shard %u: %s: cannot ask for a %llu us scheduler slice: %s",
			s->id, who, (unsigned long long)(ns / 1000), strerror(errno));
}

static void *shard_main(void *arg)
{
	struct eng_shard *s = arg;
	const struct eng_shard_hooks *hooks = &s->eng->cfg.hooks;
	int64_t hook_wait = -1;
	eng_thread_slice_ask(s, "shard thread", s->eng->cfg.thread_slice_ns);
	hooks_start(s);
	for (;;) {
		if (atomic_load(&s->eng->power_cut))
			return NULL; /* leave everything in flight, as a power cut does */
		bool stopping = atomic_load(&s->eng->stopping);
		disk_check(s);
		for (struct eng_req_hdr *r = eng_fetch_progress(s), *next; r; r = next) {
			next = r->next; /* parked requests whose segments may have arrived */
			bool keep;
			dispatch(s, r, &keep);
		}
		if (stopping)
			fail_parked(s);
		else
			eng_retention_tick(s);
		enum drain_result left = drain_inboxes(s);
		commit_start(s);
		eng_export_marks_flush(s);
		eng_seal_progress(s);
		if (!stopping)
			eng_seal_maybe(s);
		if (!stopping && !s->warm_done && left == DRAINED && inboxes_empty(s))
			eng_footers_warm(s, WARM_STEP_NS);
		publish_stats(s);
		wake_producers(s);
		if (stopping && quiescent(s) && inboxes_empty(s))
			break;
		/* Sleep only when nothing can progress without an event: new
		 * requests (the producer writes wake_fd when it sees `sleeping`),
		 * an I/O completion, a hook's fd, or the hook's deadline. */
		int64_t wait = IDLE_WAIT_NS;
		if (hook_wait >= 0 && hook_wait < wait)
			wait = hook_wait;
		if (left == LEFT_BUDGET || (left == LEFT_NO_ROOM && !s->wal.in_flight))
			wait = 0;
		atomic_store(&s->sleeping, true);
		atomic_thread_fence(memory_order_seq_cst);
		if ((left == DRAINED && !inboxes_empty(s)) || eng_seal_ready(s) ||
		    (!s->warm_done && !stopping))
			wait = 0;
		int rc = eng_io_run(s->io, wait);
		atomic_store(&s->sleeping, false);
		ASSERT(rc >= 0 || rc == -EINTR);
		bool more = loop_dispatch(s);
		if (s->hook_started && hooks->tick)
			hook_wait = hooks->tick(hooks->ctx, s->id);
		if (more)
			hook_wait = 0;
	}
	publish_stats(s);
	wake_producers(s);
	if (s->hook_started && hooks->stop)
		hooks->stop(hooks->ctx, s->id);
	return NULL;
}

/* Pins the shard thread to the (id mod n)-th CPU this process may use, so
 * that its ring, caches and memtables stay on one core, and its query
 * helpers to every other allowed CPU (ADR 0015, "Placement"): a helper
 * exists to decode beside the shard thread, and the scheduler otherwise
 * often wakes it on the waker's CPU, where it only takes turns with the
 * shard thread. With one allowed CPU the helpers are left as they are.
 * Failure (a cpuset that changed, a sandbox) is logged and harmless. */
static void pin_to_cpu(struct eng_shard *s)
{
	cpu_set_t allowed, one;
	if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0)
		return;
	int n = CPU_COUNT(&allowed);
	if (n <= 0)
		return;
	int want = (int)(s->id % (uint32_t)n);
	for (int cpu = 0, k = 0; cpu < CPU_SETSIZE; cpu++) {
		if (!CPU_ISSET(cpu, &allowed) || k++ != want)
			continue;
		CPU_ZERO(&one);
		CPU_SET(cpu, &one);
		int rc = pthread_setaffinity_np(s->thread, sizeof(one), &one);
		if (rc)
			eng_log(s->eng, ENG_LOG_WARN, "shard %u: cannot pin to CPU %d: %s", s->id, cpu,
				strerror(rc));
		CPU_CLR(cpu, &allowed);
		if (n > 1 && (rc = eng_helpers_pin(s, &allowed)))
			eng_log(s->eng, ENG_LOG_WARN, "shard %u: cannot keep its query helpers off CPU %d: %s",
				s->id, cpu, strerror(rc));
		return;
	}
}

int eng_shard_start(struct eng_shard *s)
{
	uint32_t n = s->eng->cfg.producers_max;
	s->woken = calloc(n, sizeof(*s->woken));
	s->woken_mark = calloc(n, 1);
	if (!s->woken || !s->woken_mark)
		return FMT_E_NOMEM;
	int rc = eng_seal_worker_start(s);
	if (rc == 0)
		rc = eng_helpers_start(s);
	if (rc)
		return rc;
	rc = pthread_create(&s->thread, NULL, shard_main, s);
	if (rc)
		return -rc;
	s->thread_started = true;
	char name[16];
	snprintf(name, sizeof(name), "hodei-shard%u", s->id);
	pthread_setname_np(s->thread, name);
	if (s->eng->cfg.pin_threads)
		pin_to_cpu(s);
	return 0;
}
