// SPDX-License-Identifier: Apache-2.0
/*
 * engine.c — opening and closing the engine, producers, the synchronous
 * helpers, configuration defaults, logging and stats.
 *
 * eng_open() creates the data directory, then for each shard creates its
 * directory, recovers it (manifest, then WAL replay; see wal.c) and starts
 * its thread. Recovery of all shards happens before any thread starts, so
 * a failed start leaves nothing running.
 */
#include "engine/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void eng_config_default(struct eng_config *c)
{
	memset(c, 0, sizeof(*c));
	c->data_dir = "./hodei-data";
	c->shards = 0;
	c->pin_threads = true;
	c->io = ENG_IO_AUTO;
	c->io_entries = 256;
	c->producers_max = 64;
	c->queue_depth = 1024;
	c->tenants_max = 100000;
	c->disk_reserve_bytes = 256ull << 20;
	c->local_retention_ns = -1;
	c->remote_cache_bytes = 1ull << 30;
	c->seal_rows = 500000;
	c->seal_bytes = 64ull << 20;
	c->seal_write_step_bytes = 256u << 10; /* ADR 0019: measured best */
	c->seal_age_ns = 60ll * 1000000000;
	c->memtable_budget_bytes = 512ull << 20;
	c->wal_retain_bytes = 512ull << 20;
	c->wal_buffer_bytes = 16ull << 20;
	c->wal_file_bytes = 128ull << 20;
	c->wal_recycle_files = 2;
	c->slow_commit_ns = 100 * 1000000ll;
	c->dedup_window_ns = 15ll * 60 * 1000000000;
	c->dedup_entries_max = 1u << 20;
	c->block_rows = FMT_SEG_BLOCK_ROWS_DEFAULT;
	c->zstd_level = 1; /* the big columns are entropy-bound: level 3 saves 0.7 %, at 2.3x the CPU */
	c->search_scan_rows_max = 50u << 20;
	c->count_groups_max = 10000;
	c->count_scan_rows_max = ENG_COUNT_SCAN_ROWS_DEFAULT;
	c->open_segments_max = 1024;
	c->footer_cache_bytes = 64ull << 20;
	c->block_cache_bytes = 64ull << 20;
	c->query_helpers = 1;
	fmt_limits_default(&c->limits);
}

int64_t eng_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t eng_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void log_default(void *ctx, enum eng_log_level lvl, const char *msg)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };
	char when[64];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	/* msg is produced by the engine itself and holds no quotes or
	 * control characters except through file names, which we escape. */
	fprintf(stderr, "{\"time\":\"%s.%03ldZ\",\"level\":\"%s\",\"msg\":\"", when,
		ts.tv_nsec / 1000000, names[lvl]);
	for (const char *p = msg; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(stderr, "\\%c", *p);
		else if ((unsigned char)*p < 0x20)
			fprintf(stderr, "\\u%04x", *p);
		else
			fputc(*p, stderr);
	}
	fputs("\"}\n", stderr);
}

void eng_log(const struct eng_engine *eng, enum eng_log_level lvl, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (eng && eng->cfg.log)
		eng->cfg.log(eng->cfg.log_ctx, lvl, msg);
	else
		log_default(NULL, lvl, msg);
}

static int mkdir_p(const char *path)
{
	char buf[4096];
	size_t n = strlen(path);
	if (n == 0 || n >= sizeof(buf))
		return FMT_E_INVALID;
	memcpy(buf, path, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (buf[i] != '/' && buf[i] != 0)
			continue;
		char c = buf[i];
		buf[i] = 0;
		if (mkdir(buf, 0750) != 0 && errno != EEXIST)
			return -errno;
		buf[i] = c;
	}
	return 0;
}

/* NULL when c is usable, else what is wrong with it (for the log line). */
static const char *config_check(const struct eng_config *c)
{
	if (!c->data_dir || !c->data_dir[0] || strlen(c->data_dir) > 3000)
		return "data_dir: empty or longer than 3000 bytes";
	if (c->queue_depth < 2 || (c->queue_depth & (c->queue_depth - 1)))
		return "queue_depth: want a power of two >= 2";
	if (c->producers_max < 1 || c->producers_max > 4096)
		return "producers_max: want 1..4096";
	if (c->shards > 1024)
		return "shards: want 0..1024";
	if (c->limits.events_per_batch_max < 1 || c->limits.events_per_batch_max > 65535)
		return "events_per_batch_max: want 1..65535";
	if (c->limits.attrs_max > FMT_ATTRS_HARD_MAX)
		return "attrs_max: over the format's hard maximum";
	if (c->wal_buffer_bytes < (1u << 16))
		return "wal_buffer_bytes: want at least 64 KiB";
	if (c->wal_recycle_files > ENG_WAL_RECYCLE_FILES_MAX)
		return "wal_recycle_files: want 0..64";
	if (c->seal_rows < 1 || c->seal_rows > FMT_SEG_ROWS_MAX)
		return "seal_rows: want 1..the format's rows per segment";
	if (c->dedup_entries_max < 1)
		return "dedup_entries_max: want at least 1";
	if (c->block_rows < 1 || c->block_rows > FMT_SEG_ROWS_MAX)
		return "block_rows: want 1..the format's rows per segment";
	if (c->tenants_max < 1)
		return "tenants_max: want at least 1";
	if (c->io_entries < 8)
		return "io_entries: want at least 8";
	if (c->open_segments_max < 1)
		return "open_segments_max: want at least 1";
	if (c->id_filter_bits > FMT_SEG_ID_FILTER_BITS_MAX)
		return "id_filter_bits: over the format's maximum";
	if (c->segment_version > FMT_SEG_VERSION ||
	    (c->segment_version && c->segment_version < FMT_SEG_VERSION_MIN))
		return "segment_version: not a version this build writes";
	if (c->count_groups_max < 1)
		return "count_groups_max: want at least 1";
	if (c->slow_commit_ns < 0)
		return "slow_commit_ns: want 0 (off) or more";
	if (c->thread_slice_ns && (c->thread_slice_ns < 100000 || c->thread_slice_ns > 100000000))
		return "thread_slice_ns: want 0 or 100 us..100 ms";
	if (c->seal_slice_ns && (c->seal_slice_ns < 100000 || c->seal_slice_ns > 100000000))
		return "seal_slice_ns: want 0 or 100 us..100 ms";
	if (c->seal_write_step_bytes &&
	    (c->seal_write_step_bytes < 4096 || c->seal_write_step_bytes > (1ull << 30)))
		return "seal_write_step_bytes: want 0 or 4 KiB..1 GiB";
	if (c->query_helpers > ENG_QUERY_HELPERS_MAX)
		return "query_helpers: want 0..8";
	if (c->block_cache_bytes > ENG_BLOCK_CACHE_BYTES_MAX)
		return "block_cache_bytes: want at most 1 TiB";
	if (c->footer_cache_bytes > ENG_BLOCK_CACHE_BYTES_MAX)
		return "footer_cache_bytes: want at most 1 TiB";
	return NULL;
}

static int shard_init(struct eng_engine *eng, uint32_t i)
{
	struct eng_shard *s = &eng->shards[i];
	s->eng = eng;
	s->id = i;
	s->manifest_fd = -1;
	s->wal.fd = -1;
	s->wake_fd = -1;
	s->loop_fd = -1;
	s->rand_used = sizeof(s->rand_buf);
	s->req_gen = 1;
	pthread_mutex_init(&s->stats_lock, NULL);
	pthread_mutex_init(&s->fetch_mu, NULL);
	snprintf(s->dir, sizeof(s->dir), "%s/shard-%03u", eng->data_dir, i);
	int rc = mkdir_p(s->dir);
	if (rc)
		return rc;
	s->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (s->wake_fd < 0)
		return -errno;
	s->loop_fd = epoll_create1(EPOLL_CLOEXEC);
	if (s->loop_fd < 0)
		return -errno;
	struct epoll_event wake = { .events = EPOLLIN, .data.ptr = &s->wake_watch };
	if (epoll_ctl(s->loop_fd, EPOLL_CTL_ADD, s->wake_fd, &wake) != 0)
		return -errno;
	s->inbox = calloc(eng->cfg.producers_max, sizeof(*s->inbox));
	if (!s->inbox)
		return FMT_E_NOMEM;
	for (uint32_t p = 0; p < eng->cfg.producers_max; p++)
		if ((rc = eng_spsc_init(&s->inbox[p], eng->cfg.queue_depth)) != 0)
			return rc;
	s->tenant_slot_count = 64;
	s->tenant_slots = calloc(s->tenant_slot_count, sizeof(*s->tenant_slots));
	s->dedup = eng_dedup_create(eng->cfg.dedup_entries_max, eng->cfg.dedup_window_ns);
	if (!s->tenant_slots || !s->dedup || fmt_decoder_new(&s->decoder) != 0)
		return FMT_E_NOMEM;
	if ((rc = eng_block_cache_init(&s->block_cache, eng->cfg.block_cache_bytes)) != 0)
		return rc;
	const char *why = NULL;
	rc = eng_io_create(eng->cfg.io, eng->cfg.io_entries, s->loop_fd, &eng->cfg.fault, &s->io, &why);
	if (rc) {
		eng_log(eng, ENG_LOG_ERROR, "shard %u: I/O backend %s failed: %s", i,
			eng_io_backend_name(eng->cfg.io), fmt_strerror(rc));
		return rc;
	}
	if (why && i == 0)
		eng_log(eng, ENG_LOG_WARN, "io_uring unavailable, using plain syscalls: %s", why);
	s->stats.io_backend = (int)eng_io_backend_of(s->io);
	s->published.io_backend = s->stats.io_backend;
	if ((rc = eng_manifest_load(s)) != 0)
		return rc;
	if ((rc = eng_dedup_from_segments(s)) != 0) {
		eng_log(eng, ENG_LOG_ERROR, "shard %u: cannot rebuild dedup memory from segments: %s", i,
			fmt_strerror(rc));
		return rc;
	}
	return eng_wal_replay(s);
}

static void shard_free(struct eng_shard *s)
{
	struct eng_engine *eng = s->eng;
	if (!eng)
		return;
	for (uint32_t i = 0; s->tenant_slots && i < s->tenant_slot_count; i++) {
		struct eng_tenant *t = s->tenant_slots[i];
		if (!t)
			continue;
		eng_memtable_free(&t->sealing);
		eng_memtable_free(&t->active);
		for (uint32_t k = 0; k < t->segment_count; k++)
			eng_segment_free(t->segments[k]);
		free(t->segments);
		free(t);
	}
	free(s->tenant_slots);
	eng_block_cache_free(&s->block_cache);
	eng_segment_cache_free(s);
	eng_export_free(s);
	eng_remote_free(s);
	eng_seal_worker_stop(s);
	eng_helpers_stop(s);
	if (s->io)
		eng_io_destroy(s->io); /* before the buffers its ops point into */
	s->io = NULL;
	eng_seal_abandon(s);
	eng_wal_close(&s->wal);
	if (s->manifest_fd >= 0)
		close(s->manifest_fd);
	if (s->wake_fd >= 0)
		close(s->wake_fd);
	if (s->loop_fd >= 0)
		close(s->loop_fd);
	for (uint32_t p = 0; s->inbox && p < eng->cfg.producers_max; p++)
		eng_spsc_free(&s->inbox[p]);
	free(s->inbox);
	if (s->dedup)
		eng_dedup_destroy(s->dedup);
	free(s->woken);
	free(s->woken_mark);
	fmt_decoder_free(s->decoder);
	pthread_mutex_destroy(&s->stats_lock);
	pthread_mutex_destroy(&s->fetch_mu);
}

struct shard_init_job {
	struct eng_engine *eng;
	uint32_t shard;
	int rc;
};

static void *shard_init_thread(void *arg)
{
	struct shard_init_job *j = arg;
	j->rc = shard_init(j->eng, j->shard);
	return NULL;
}

/* Recovers every shard, each on a thread of its own: a shard's recovery
 * (manifest, dedup memory, WAL replay) touches only that shard's state,
 * and replaying a large WAL is CPU-bound (decode, SHA-256, memtable), so
 * the start takes the time of the slowest shard, not of their sum. The
 * first error in shard order is returned; a shard whose thread cannot be
 * started recovers on this thread. */
static int shards_init(struct eng_engine *eng)
{
	uint32_t n = eng->shard_count;
	struct shard_init_job *jobs = calloc(n, sizeof(*jobs));
	pthread_t *threads = calloc(n, sizeof(*threads));
	bool *started = calloc(n, sizeof(*started));
	int rc = 0;
	if (!jobs || !threads || !started) {
		rc = FMT_E_NOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < n; i++) {
		jobs[i] = (struct shard_init_job){ .eng = eng, .shard = i };
		started[i] = n > 1 && pthread_create(&threads[i], NULL, shard_init_thread, &jobs[i]) == 0;
		if (!started[i])
			shard_init_thread(&jobs[i]);
	}
	for (uint32_t i = 0; i < n; i++) {
		if (started[i])
			pthread_join(threads[i], NULL);
		if (!rc)
			rc = jobs[i].rc;
	}
out:
	free(jobs);
	free(threads);
	free(started);
	return rc;
}

int eng_open(const struct eng_config *cfg, struct eng_engine **out)
{
	const char *bad = config_check(cfg);
	if (bad) {
		eng_log(NULL, ENG_LOG_ERROR, "invalid engine configuration: %s", bad);
		return FMT_E_INVALID;
	}
	int rc;
	struct eng_engine *eng = calloc(1, sizeof(*eng));
	if (!eng)
		return FMT_E_NOMEM;
	eng->cfg = *cfg;
	snprintf(eng->data_dir, sizeof(eng->data_dir), "%s", cfg->data_dir);
	eng->cfg.data_dir = eng->data_dir;
	eng->shard_count = cfg->shards ? cfg->shards : (uint32_t)sysconf(_SC_NPROCESSORS_ONLN);
	if (eng->shard_count < 1)
		eng->shard_count = 1;
	pthread_mutex_init(&eng->producers_lock, NULL);
	eng->seal_event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	eng->shards = calloc(eng->shard_count, sizeof(*eng->shards));
	eng->producers = calloc(cfg->producers_max, sizeof(*eng->producers));
	if (!eng->shards || !eng->producers) {
		rc = FMT_E_NOMEM;
		goto fail;
	}
	if ((rc = mkdir_p(eng->data_dir)) != 0) {
		eng_log(eng, ENG_LOG_ERROR, "cannot create data directory %s: %s", eng->data_dir,
			fmt_strerror(rc));
		goto fail;
	}
	if ((rc = shards_init(eng)) != 0)
		goto fail;
	for (uint32_t i = 0; i < eng->shard_count; i++)
		if ((rc = eng_shard_start(&eng->shards[i])) != 0)
			goto fail;
	*out = eng;
	return 0;
fail:
	eng_close(eng);
	return rc;
}

int eng_power_cut(struct eng_engine *eng)
{
	atomic_store(&eng->power_cut, true);
	atomic_store(&eng->stopping, true);
	int rc = 0;
	for (uint32_t i = 0; i < eng->shard_count; i++) {
		struct eng_shard *s = &eng->shards[i];
		if (s->thread_started) {
			eng_shard_wake(s);
			pthread_join(s->thread, NULL);
			s->thread_started = false;
		}
		eng_seal_worker_stop(s);
		int err = eng_io_fault_crash(s->io);
		if (err && !rc)
			rc = err;
	}
	return rc;
}

void eng_close(struct eng_engine *eng)
{
	if (!eng)
		return;
	atomic_store(&eng->stopping, true);
	for (uint32_t i = 0; eng->shards && i < eng->shard_count; i++) {
		struct eng_shard *s = &eng->shards[i];
		if (s->thread_started) {
			eng_shard_wake(s);
			pthread_join(s->thread, NULL);
		}
	}
	for (uint32_t i = 0; eng->shards && i < eng->shard_count; i++)
		shard_free(&eng->shards[i]);
	for (uint32_t p = 0; eng->producers && p < eng->cfg.producers_max; p++) {
		struct eng_producer *pr = &eng->producers[p];
		if (!pr->outbox)
			continue;
		for (uint32_t i = 0; i < eng->shard_count; i++)
			eng_spsc_free(&pr->outbox[i]);
		free(pr->outbox);
		free(pr->pending_shard);
		if (pr->event_fd >= 0)
			close(pr->event_fd);
	}
	free(eng->shards);
	free(eng->producers);
	if (eng->seal_event_fd >= 0)
		close(eng->seal_event_fd);
	pthread_mutex_destroy(&eng->producers_lock);
	free(eng);
}

static int watch_ctl(struct eng_engine *eng, uint32_t shard, int op, int fd, uint32_t events,
		     struct eng_watch *w)
{
	if (shard >= eng->shard_count)
		return -EINVAL;
	struct epoll_event ev = { .events = events, .data.ptr = w };
	return epoll_ctl(eng->shards[shard].loop_fd, op, fd, &ev) == 0 ? 0 : -errno;
}

int eng_watch_add(struct eng_engine *eng, uint32_t shard, int fd, uint32_t events,
		  struct eng_watch *w)
{
	return watch_ctl(eng, shard, EPOLL_CTL_ADD, fd, events, w);
}

int eng_watch_mod(struct eng_engine *eng, uint32_t shard, int fd, uint32_t events,
		  struct eng_watch *w)
{
	return watch_ctl(eng, shard, EPOLL_CTL_MOD, fd, events, w);
}

int eng_watch_del(struct eng_engine *eng, uint32_t shard, int fd)
{
	return watch_ctl(eng, shard, EPOLL_CTL_DEL, fd, 0, NULL);
}

uint32_t eng_shard_count(const struct eng_engine *eng)
{
	return eng->shard_count;
}

uint64_t eng_tenant_key(struct fmt_str name)
{
	return fmt_xxh3(name.ptr, name.len);
}

uint32_t eng_shard_of(const struct eng_engine *eng, struct fmt_str tenant)
{
	return (uint32_t)(eng_tenant_key(tenant) % eng->shard_count);
}

/* ---- producers ----------------------------------------------------------- */

static int producer_setup(struct eng_engine *eng, struct eng_producer *p, uint32_t index)
{
	p->eng = eng;
	p->index = index;
	p->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (p->event_fd < 0)
		return -errno;
	p->outbox = calloc(eng->shard_count, sizeof(*p->outbox));
	p->pending_shard = calloc(eng->shard_count, sizeof(*p->pending_shard));
	if (!p->outbox || !p->pending_shard)
		return FMT_E_NOMEM;
	for (uint32_t i = 0; i < eng->shard_count; i++) {
		int rc = eng_spsc_init(&p->outbox[i], eng->cfg.queue_depth);
		if (rc)
			return rc;
	}
	return 0;
}

int eng_producer_open(struct eng_engine *eng, struct eng_producer **out)
{
	int rc = FMT_E_FULL;
	pthread_mutex_lock(&eng->producers_lock);
	for (uint32_t i = 0; i < eng->cfg.producers_max; i++) {
		struct eng_producer *p = &eng->producers[i];
		if (p->in_use)
			continue;
		if (!p->outbox && (rc = producer_setup(eng, p, i)) != 0)
			break;
		p->in_use = true;
		p->pending = 0;
		*out = p;
		rc = 0;
		break;
	}
	pthread_mutex_unlock(&eng->producers_lock);
	return rc;
}

void eng_producer_close(struct eng_producer *p)
{
	while (p->pending && !atomic_load(&p->eng->power_cut))
		eng_producer_wait(p, 100 * 1000000);
	pthread_mutex_lock(&p->eng->producers_lock);
	p->in_use = false;
	pthread_mutex_unlock(&p->eng->producers_lock);
}

int eng_producer_fd(const struct eng_producer *p)
{
	return p->event_fd;
}

uint32_t eng_producer_pending(const struct eng_producer *p)
{
	return p->pending;
}

static void run_callback(struct eng_req_hdr *hdr)
{
	switch (hdr->kind) {
	case ENG_REQ_APPEND: {
		struct eng_append *r = (struct eng_append *)hdr;
		if (r->done)
			r->done(r);
		break;
	}
	case ENG_REQ_SEARCH: {
		struct eng_search *r = (struct eng_search *)hdr;
		if (r->done)
			r->done(r);
		break;
	}
	case ENG_REQ_COUNT: {
		struct eng_count *r = (struct eng_count *)hdr;
		if (r->done)
			r->done(r);
		break;
	}
	case ENG_REQ_VERIFY: {
		struct eng_verify *r = (struct eng_verify *)hdr;
		if (r->done)
			r->done(r);
		break;
	}
	case ENG_REQ_EXPORT_LIST: {
		struct eng_export_list *r = (struct eng_export_list *)hdr;
		if (r->done)
			r->done(r);
		break;
	}
	case ENG_REQ_EXPORT_MARK: {
		struct eng_export_mark *r = (struct eng_export_mark *)hdr;
		if (r->done)
			r->done(r);
		break;
	}
	default:
		ASSERT(0);
	}
}

int eng_producer_poll(struct eng_producer *p, uint32_t max)
{
	uint64_t drained;
	(void)!read(p->event_fd, &drained, sizeof(drained));
	int ran = 0;
	for (uint32_t i = 0; i < p->eng->shard_count && (uint32_t)ran < max; i++) {
		struct eng_req_hdr *hdr;
		while ((uint32_t)ran < max && (hdr = eng_spsc_pop(&p->outbox[i])) != NULL) {
			ASSERT(p->pending > 0 && p->pending_shard[i] > 0);
			p->pending--;
			p->pending_shard[i]--;
			run_callback(hdr);
			ran++;
		}
	}
	return ran;
}

int eng_producer_wait(struct eng_producer *p, int64_t timeout_ns)
{
	int ran = eng_producer_poll(p, UINT32_MAX);
	if (ran || p->pending == 0)
		return ran;
	struct pollfd pfd = { .fd = p->event_fd, .events = POLLIN };
	int ms = timeout_ns < 0 ? -1 : (int)(timeout_ns / 1000000);
	if (poll(&pfd, 1, ms) < 0 && errno != EINTR)
		return -errno;
	return eng_producer_poll(p, UINT32_MAX);
}

static int submit_to(struct eng_producer *p, struct eng_req_hdr *hdr, int kind, uint32_t shard)
{
	struct eng_engine *eng = p->eng;
	if (atomic_load_explicit(&eng->stopping, memory_order_relaxed))
		return FMT_E_SHUTDOWN;
	if (shard >= eng->shard_count)
		return FMT_E_INVALID;
	hdr->kind = kind;
	hdr->producer = p;
	hdr->submitted_ns = eng_mono_ns();
	struct eng_shard *s = &eng->shards[shard];
	/* Bounding a producer's requests per shard by the queue depth bounds
	 * the completions the shard can owe it, so its outbox never fills. */
	if (p->pending_shard[shard] >= eng->cfg.queue_depth ||
	    !eng_spsc_push(&s->inbox[p->index], hdr)) {
		atomic_fetch_add_explicit(&s->queue_full, 1, memory_order_relaxed);
		return FMT_E_FULL;
	}
	p->pending++;
	p->pending_shard[shard]++;
	eng_shard_wake(s);
	return 0;
}

static int submit(struct eng_producer *p, struct eng_req_hdr *hdr, int kind, struct fmt_str tenant)
{
	return submit_to(p, hdr, kind, eng_shard_of(p->eng, tenant));
}

int eng_export_list_submit(struct eng_producer *p, struct eng_export_list *req)
{
	return submit_to(p, &req->hdr, ENG_REQ_EXPORT_LIST, req->shard);
}

int eng_export_mark_submit(struct eng_producer *p, struct eng_export_mark *req)
{
	if (!fmt_tenant_valid(req->tenant))
		return FMT_E_INVALID;
	return submit(p, &req->hdr, ENG_REQ_EXPORT_MARK, req->tenant);
}

int eng_seal_event_fd(const struct eng_engine *eng)
{
	return eng->seal_event_fd;
}

int eng_append_submit(struct eng_producer *p, struct eng_append *req)
{
	return submit(p, &req->hdr, ENG_REQ_APPEND, req->tenant);
}

int eng_search_submit(struct eng_producer *p, struct eng_search *req)
{
	req->result_mem = NULL;
	req->hits = NULL;
	req->hit_count = 0;
	return submit(p, &req->hdr, ENG_REQ_SEARCH, req->tenant);
}

int eng_count_submit(struct eng_producer *p, struct eng_count *req)
{
	req->result_mem = NULL;
	req->groups = NULL;
	req->group_count = 0;
	return submit(p, &req->hdr, ENG_REQ_COUNT, req->tenant);
}

void eng_count_release(struct eng_count *req)
{
	free(req->result_mem);
	req->result_mem = NULL;
	req->groups = NULL;
	req->group_count = 0;
}

int eng_verify_submit(struct eng_producer *p, struct eng_verify *req)
{
	return submit(p, &req->hdr, ENG_REQ_VERIFY, req->tenant);
}

void eng_search_release(struct eng_search *req)
{
	free(req->result_mem);
	req->result_mem = NULL;
	req->hits = NULL;
	req->hit_count = 0;
}

struct wait_ctx {
	bool done;
};

static void append_waited(struct eng_append *r) { ((struct wait_ctx *)r->ctx)->done = true; }
static void search_waited(struct eng_search *r) { ((struct wait_ctx *)r->ctx)->done = true; }
static void verify_waited(struct eng_verify *r) { ((struct wait_ctx *)r->ctx)->done = true; }
static void count_waited(struct eng_count *r) { ((struct wait_ctx *)r->ctx)->done = true; }

/* Submits through `submit_fn`, retrying while the queue is full, and waits
 * for the request's own callback. */
#define WAIT_FOR(p, req, waited_fn, submit_fn)                              \
	do {                                                                 \
		struct wait_ctx w = { false };                               \
		(req)->done = (waited_fn);                                   \
		(req)->ctx = &w;                                             \
		int rc;                                                      \
		while ((rc = submit_fn((p), (req))) == FMT_E_FULL)          \
			eng_producer_wait((p), 1000000);                     \
		if (rc)                                                      \
			return rc;                                           \
		while (!w.done)                                              \
			eng_producer_wait((p), 100 * 1000000);               \
		return (req)->status;                                        \
	} while (0)

int eng_append_wait(struct eng_producer *p, struct eng_append *req)
{
	WAIT_FOR(p, req, append_waited, eng_append_submit);
}

int eng_search_wait(struct eng_producer *p, struct eng_search *req)
{
	WAIT_FOR(p, req, search_waited, eng_search_submit);
}

int eng_count_wait(struct eng_producer *p, struct eng_count *req)
{
	WAIT_FOR(p, req, count_waited, eng_count_submit);
}

int eng_verify_wait(struct eng_producer *p, struct eng_verify *req)
{
	WAIT_FOR(p, req, verify_waited, eng_verify_submit);
}

static void list_waited(struct eng_export_list *r) { ((struct wait_ctx *)r->ctx)->done = true; }
static void mark_waited(struct eng_export_mark *r) { ((struct wait_ctx *)r->ctx)->done = true; }

int eng_export_list_wait(struct eng_producer *p, struct eng_export_list *req)
{
	WAIT_FOR(p, req, list_waited, eng_export_list_submit);
}

int eng_export_mark_wait(struct eng_producer *p, struct eng_export_mark *req)
{
	WAIT_FOR(p, req, mark_waited, eng_export_mark_submit);
}

void eng_shard_stats(const struct eng_engine *eng, uint32_t shard, struct eng_shard_stats *out)
{
	ASSERT(shard < eng->shard_count);
	struct eng_shard *s = &eng->shards[shard];
	pthread_mutex_lock(&s->stats_lock);
	*out = s->published;
	pthread_mutex_unlock(&s->stats_lock);
}
