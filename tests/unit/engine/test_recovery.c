// SPDX-License-Identifier: Apache-2.0
/*
 * test_recovery.c — power cuts: with the fault backend, every write not
 * covered by a completed fsync is dropped (eng_power_cut), then the engine
 * restarts on plain syscalls. Every acknowledged event must be there, once,
 * at the seq its ack reported, and every chain must verify. Also: a torn
 * WAL tail is cut, damage in the middle stops the start unless repair.
 * With small WAL files, the power cuts also hit recycled files (ADR 0016),
 * whose unsynced overwrites the fault backend undoes; version 1 files
 * (written before salts) still replay.
 */
#include <criterion/criterion.h>

#include "engine_test_util.h"
#include "format/record.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>

#define TENANTS 4
#define BATCH 10
#define INFLIGHT 8
#define ACKS_MAX 100000

struct ack {
	uint32_t tenant;
	uint32_t first_event; /* tu_event index of the batch's first event */
	uint64_t first_seq;
};

struct load {
	struct eng_engine *eng;
	struct eng_producer *p;
	_Atomic bool stop;
	struct ack acks[ACKS_MAX];
	uint32_t ack_count;       /* written by the load thread only */
	_Atomic uint32_t acked;   /* ack_count, for the cutting thread */
	uint32_t next_event;
};

struct slot {
	struct eng_append req;
	struct fmt_event ev[BATCH];
	char store[BATCH][256];
	uint32_t tenant, first_event;
	struct load *load;
	bool busy;
};

static const char *const tenant_names[TENANTS] = { "alpha", "beta", "gamma", "delta" };

static void slot_done(struct eng_append *r)
{
	struct slot *s = (struct slot *)r;
	s->busy = false;
	if (r->status != 0)
		return;
	cr_assert_eq(r->accepted, BATCH);
	struct load *l = s->load;
	if (l->ack_count < ACKS_MAX)
		l->acks[l->ack_count++] = (struct ack){ s->tenant, s->first_event, r->first_seq };
	atomic_fetch_add(&l->acked, 1);
}

static void *load_main(void *arg)
{
	struct load *l = arg;
	struct slot *slots = calloc(INFLIGHT, sizeof(*slots));
	while (!atomic_load(&l->stop)) {
		for (int i = 0; i < INFLIGHT; i++) {
			struct slot *s = &slots[i];
			if (s->busy)
				continue;
			s->load = l;
			s->first_event = l->next_event;
			s->tenant = (l->next_event / BATCH) % TENANTS;
			for (uint32_t k = 0; k < BATCH; k++)
				tu_event(&s->ev[k], s->store[k], l->next_event + k);
			s->req = (struct eng_append){ .tenant = fmt_str_c(tenant_names[s->tenant]),
						      .events = s->ev, .count = BATCH, .done = slot_done };
			if (eng_append_submit(l->p, &s->req) != 0)
				break;
			s->busy = true;
			l->next_event += BATCH;
		}
		eng_producer_wait(l->p, 2 * 1000000);
	}
	/* Acks pushed before the cut are real: collect them. */
	eng_producer_poll(l->p, UINT32_MAX);
	free(slots);
	return NULL;
}

static void check_acked(const char *dir, const struct load *l)
{
	struct eng_config cfg;
	eng_config_default(&cfg);
	cfg.shards = 2;
	cfg.io = ENG_IO_SYNC;
	cfg.producers_max = 4;
	cfg.dedup_entries_max = 100000;
	struct eng_engine *eng = tu_open(dir, &cfg);
	cr_assert(eng != NULL, "restart after the power cut failed");
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	for (uint32_t i = 0; i < l->ack_count; i++) {
		const struct ack *a = &l->acks[i];
		for (uint32_t k = 0; k < BATCH; k++) {
			struct fmt_event want;
			char store[256];
			tu_event(&want, store, a->first_event + k);
			struct eng_search q = { .tenant = fmt_str_c(tenant_names[a->tenant]) };
			q.filter.has_event_id = true;
			memcpy(q.filter.event_id, want.event_id, 16);
			cr_assert_eq(eng_search_wait(p, &q), 0);
			cr_assert_eq(q.hit_count, 1, "acked event %u of tenant %s: %u hits",
				     a->first_event + k, tenant_names[a->tenant], q.hit_count);
			cr_assert_eq(q.hits[0].ev.seq, a->first_seq + k);
			eng_search_release(&q);
		}
	}
	for (int t = 0; t < TENANTS; t++) {
		struct eng_verify v = { .tenant = fmt_str_c(tenant_names[t]) };
		cr_assert_eq(eng_verify_wait(p, &v), 0);
		cr_assert(v.ok, "verify %s: %s", tenant_names[t], v.problem);
	}
	eng_producer_close(p);
	eng_close(eng);
}

/* One load, cut at a seeded moment; returns the WAL generations started
 * in recycled files before the cut. wal_file_bytes 0: the default. */
static uint64_t power_cut_round(const char *dir, unsigned seed, uint64_t wal_file_bytes)
{
	struct eng_config cfg;
	eng_config_default(&cfg);
	cfg.shards = 2;
	cfg.io = ENG_IO_FAULT;
	cfg.producers_max = 4;
	cfg.dedup_entries_max = 100000;
	cfg.seal_rows = 200;
	cfg.block_rows = 32;
	if (wal_file_bytes)
		cfg.wal_file_bytes = wal_file_bytes;
	struct load *l = calloc(1, sizeof(*l));
	l->eng = tu_open(dir, &cfg);
	cr_assert(l->eng != NULL);
	l->next_event = seed * 1000000u;
	cr_assert_eq(eng_producer_open(l->eng, &l->p), 0);
	pthread_t th;
	pthread_create(&th, NULL, load_main, l);
	/* The cut comes a seeded while after the first ack, not after the
	 * start: on a slow machine (sanitizers, a busy CI host) the first
	 * fsync can take longer than any fixed sleep. */
	for (int waited_ms = 0; atomic_load(&l->acked) == 0; waited_ms++) {
		cr_assert_lt(waited_ms, 120000, "no batch was acknowledged in 120 s");
		usleep(1000);
	}
	usleep((seed * 7919u) % 150000);
	uint64_t recycled = 0;
	for (uint32_t i = 0; i < cfg.shards; i++) {
		struct eng_shard_stats st;
		eng_shard_stats(l->eng, i, &st);
		recycled += st.wal_recycled;
	}
	cr_assert_eq(eng_power_cut(l->eng), 0);
	atomic_store(&l->stop, true);
	pthread_join(th, NULL);
	eng_close(l->eng);
	cr_assert(l->ack_count > 0, "no batch was acknowledged before the cut");
	check_acked(dir, l);
	free(l);
	return recycled;
}

Test(recovery, power_cuts_lose_nothing_acked, .timeout = 600)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	for (unsigned round = 1; round <= 6; round++)
		power_cut_round(dir, round, 0);
}

/* 16 KiB WAL files: rotations every few batches, and every retired file
 * recycled, so most cuts land in a file that holds older records. */
Test(recovery, power_cuts_in_recycled_wal_files_lose_nothing_acked, .timeout = 600)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	uint64_t recycled = 0;
	for (unsigned round = 1; round <= 6; round++)
		recycled += power_cut_round(dir, round, 16u << 10);
	cr_assert_gt(recycled, 0, "no WAL file was recycled: the test ran without its subject");
	cr_log_info("%llu WAL generations started in recycled files", (unsigned long long)recycled);
}

static void wal_file(const char *dir, char *out, size_t cap)
{
	snprintf(out, cap, "%s/shard-000/wal/wal-%016llx.log", dir, 1ull);
}

static struct eng_engine *open_one(const char *dir, bool repair)
{
	struct eng_config cfg;
	eng_config_default(&cfg);
	cfg.shards = 1;
	cfg.io = ENG_IO_SYNC;
	cfg.producers_max = 2;
	cfg.dedup_entries_max = 10000;
	cfg.repair = repair;
	return tu_open(dir, &cfg);
}

static void write_three_batches(const char *dir)
{
	struct eng_engine *eng = open_one(dir, false);
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	struct eng_append req;
	for (uint32_t b = 0; b < 3; b++)
		cr_assert_eq(tu_append(p, "acme", b * 5, 5, &req), 0);
	eng_producer_close(p);
	eng_close(eng);
}

static void tear_last_batch(const char *wal)
{
	struct stat st;
	cr_assert_eq(stat(wal, &st), 0);
	cr_assert_eq(truncate(wal, st.st_size - 7), 0);
}

/* The start succeeds, and the torn third batch (seq 11-15) is gone. */
static void expect_torn_batch_gone(const char *dir)
{
	struct eng_engine *eng = open_one(dir, false);
	cr_assert(eng != NULL, "a torn tail must not stop the start");
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	struct eng_append req;
	cr_assert_eq(tu_append(p, "acme", 100, 1, &req), 0);
	cr_assert_eq(req.first_seq, 11, "the torn batch (seq 11-15) is gone, seq continues at 11");
	eng_producer_close(p);
	eng_close(eng);
}

Test(recovery, torn_tail_is_cut)
{
	char dir[256], wal[512];
	tu_tmpdir(dir, sizeof(dir));
	write_three_batches(dir);
	wal_file(dir, wal, sizeof(wal));
	tear_last_batch(wal);
	expect_torn_batch_gone(dir);
}

/* A crash leaves the next generation's file, created ahead by the seal
 * worker, after the file whose tail it tore: that tail is still the newest
 * write, cut rather than called damage. */
Test(recovery, torn_tail_before_a_spare_file_is_cut)
{
	char dir[256], wal[512], spare[512];
	tu_tmpdir(dir, sizeof(dir));
	write_three_batches(dir);
	wal_file(dir, wal, sizeof(wal));
	tear_last_batch(wal);
	snprintf(spare, sizeof(spare), "%s/shard-000/wal/wal-%016llx.log", dir, 2ull);
	struct fmt_file_header h = { .version = FMT_FILE_VERSION, .generation = 2 };
	memcpy(h.magic, "HODEIWAL", 8);
	uint8_t hdr[FMT_FILE_HEADER_BYTES];
	fmt_file_header_encode(&h, hdr);
	int fd = open(spare, O_WRONLY | O_CREAT | O_EXCL, 0640);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, hdr, sizeof(hdr)), (ssize_t)sizeof(hdr));
	close(fd);
	expect_torn_batch_gone(dir);
}

/* Three batches of "acme" (seq 1-15) in generation 1, a salted file, read
 * back: its path in wal, its bytes (malloc'ed) and its header. */
static uint8_t *three_batches_image(const char *dir, char *wal, size_t cap, size_t *len,
				    struct fmt_file_header *h)
{
	write_three_batches(dir);
	wal_file(dir, wal, cap);
	uint8_t *img = tu_read_file(wal, len);
	cr_assert_eq(fmt_file_header_decode(img, *len, h), 0);
	cr_assert_eq(h->version, FMT_FILE_VERSION_SALTED);
	cr_assert_neq(h->salt, 0);
	return img;
}

/* Shard 0's WAL directory: its free files (wal-<gen>.free), and how many
 * of them share their generation with a live file (wal-<gen>.log). */
struct free_census {
	uint32_t free, also_live;
};

static struct free_census free_files_census(const char *dir)
{
	char wal[512];
	snprintf(wal, sizeof(wal), "%s/shard-000/wal", dir);
	DIR *d = opendir(wal);
	cr_assert(d, "%s", wal);
	struct free_census c = { 0 };
	for (struct dirent *e; (e = readdir(d)) != NULL;) {
		if (!strstr(e->d_name, ".free"))
			continue;
		c.free++;
		unsigned long long gen;
		char tail[8], live[600];
		if (sscanf(e->d_name, "wal-%16llx.%4s", &gen, tail) != 2 || strcmp(tail, "free"))
			continue;
		snprintf(live, sizeof(live), "%s/wal-%016llx.log", wal, gen);
		c.also_live += access(live, F_OK) == 0;
	}
	closedir(d);
	return c;
}

static uint32_t free_files_on_disk(const char *dir)
{
	return free_files_census(dir).free;
}

/* One shard on the sync backend, keeping at most `limit` free WAL files. */
static void recycle_cfg(struct eng_config *cfg, uint32_t limit)
{
	eng_config_default(cfg);
	cfg->shards = 1;
	cfg->io = ENG_IO_SYNC;
	cfg->wal_recycle_files = limit;
}

/* wal_recycle_files bounds the retired files kept (0: none, all deleted,
 * nothing recycled), at run time and after a restart; above its maximum
 * the engine refuses to open. */
Test(recovery, free_wal_files_stay_within_wal_recycle_files, .timeout = 120)
{
	char dir[256];
	struct eng_config cfg;
	for (uint32_t limit = 0; limit <= 1; limit++) {
		tu_tmpdir(dir, sizeof(dir));
		recycle_cfg(&cfg, limit);
		cfg.producers_max = 2;
		cfg.seal_rows = 1000; /* each seal retires many 16 KiB files at once */
		cfg.block_rows = 32;
		cfg.wal_file_bytes = 16u << 10;
		struct eng_engine *eng = tu_open(dir, &cfg);
		cr_assert(eng != NULL);
		struct eng_producer *p;
		cr_assert_eq(eng_producer_open(eng, &p), 0);
		struct eng_append req;
		for (uint32_t b = 0; b < 300; b++)
			cr_assert_eq(tu_append(p, "acme", b * 10, 10, &req), 0);
		cr_assert_geq(tu_wait_sealed(eng, 0, 2), 2);
		struct eng_shard_stats st;
		eng_shard_stats(eng, 0, &st);
		cr_assert_leq(st.wal_free_files, limit);
		if (limit == 0)
			cr_assert_eq(st.wal_recycled, 0);
		cr_assert_leq(free_files_on_disk(dir), limit);
		eng_producer_close(p);
		eng_close(eng);
		/* The spare kept at shutdown may make one more, and three
		 * strays (not even WAL files) more; a start keeps at most the
		 * limit, and a stray it tries to recycle is deleted. */
		cr_assert_leq(free_files_on_disk(dir), limit + 1);
		for (int k = 0; k < 3; k++) {
			char stray[512];
			snprintf(stray, sizeof(stray), "%s/shard-000/wal/wal-%016llx.free", dir,
				 0xf000ull + (unsigned long long)k);
			tu_write_file(stray, (const uint8_t *)"not a WAL file", 14);
		}
		cr_assert((eng = tu_open(dir, &cfg)) != NULL);
		eng_shard_stats(eng, 0, &st);
		cr_assert_leq(st.wal_free_files, limit);
		eng_close(eng);
		cr_assert_leq(free_files_on_disk(dir), limit + (limit > 0));
		tu_rmtree(dir);
	}
	tu_tmpdir(dir, sizeof(dir));
	recycle_cfg(&cfg, ENG_WAL_RECYCLE_FILES_MAX + 1);
	cfg.data_dir = dir;
	struct eng_engine *eng = NULL;
	cr_assert_eq(eng_open(&cfg, &eng), FMT_E_INVALID);
	cr_assert_null(eng);
	tu_rmtree(dir);
}

/* Counts the engine's warnings and errors (and prints them). */
static void count_warnings(void *ctx, enum eng_log_level level, const char *msg)
{
	if (level <= ENG_LOG_WARN) {
		atomic_fetch_add((_Atomic uint32_t *)ctx, 1);
		fprintf(stderr, "%s\n", msg);
	}
}

/* A start names its first WAL file past every free file. The spare kept
 * at a stop is wal-<last+1>.free: a start that began at <last+1> had a free
 * file and a live one of one generation whenever it recycled another free
 * file first (the directory's order decides). When that generation was
 * retired, its file was renamed over the free one, and the free list named
 * one file twice: a "cannot recycle" warning later, or, when the seal
 * worker was recycling the old free file at that moment, its rename to the
 * new generation's name moved the retired file there instead, while the
 * shard appended (and acknowledged) into the unlinked old one: those
 * events were lost at the next start, which refused with a seq gap.
 * Several stops and starts, so that the directory order varies. */
Test(recovery, a_start_names_its_wal_files_past_every_free_file, .timeout = 120)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	_Atomic uint32_t warnings = 0;
	struct eng_config cfg;
	recycle_cfg(&cfg, 4);
	cfg.producers_max = 2;
	cfg.seal_rows = 100;
	cfg.block_rows = 32;
	cfg.wal_file_bytes = 16u << 10;
	cfg.log = count_warnings;
	cfg.log_ctx = &warnings;
	uint64_t recycled = 0;
	for (uint32_t start = 0; start < 8; start++) {
		struct eng_engine *eng = tu_open(dir, &cfg);
		cr_assert(eng != NULL);
		struct eng_producer *p;
		cr_assert_eq(eng_producer_open(eng, &p), 0);
		struct eng_append req;
		for (uint32_t b = 0; b < 60; b++) {
			cr_assert_eq(tu_append(p, "acme", (start * 60 + b) * 10, 10, &req), 0);
			cr_assert_eq(free_files_census(dir).also_live, 0,
				     "a free file beside its live namesake: start %u, batch %u", start, b);
		}
		struct eng_shard_stats st;
		tu_stats_settled(eng, 0, &st);
		recycled += st.wal_recycled;
		eng_producer_close(p);
		eng_close(eng);
		cr_assert_gt(free_files_on_disk(dir), 0, "no free file at stop %u", start);
	}
	cr_assert_gt(recycled, 0, "no WAL file was recycled: the test ran without its subject");
	cr_assert_eq(atomic_load(&warnings), 0);
	tu_rmtree(dir);
}

/* The same, with the next generation's file a recycled one: its old
 * records (under its prev_salt) do not make it a used file, so the torn
 * file before it is still the newest. */
Test(recovery, torn_tail_before_a_recycled_spare_is_cut)
{
	char dir[256], wal[512], spare[512];
	tu_tmpdir(dir, sizeof(dir));
	size_t len;
	struct fmt_file_header h;
	uint8_t *img = three_batches_image(dir, wal, sizeof(wal), &len, &h);
	/* The spare: the whole file as it was, under a new header. */
	h.generation = 2;
	h.prev_salt = h.salt;
	h.salt ^= 0x5555;
	fmt_file_header_encode(&h, img);
	snprintf(spare, sizeof(spare), "%s/shard-000/wal/wal-%016llx.log", dir, 2ull);
	tu_write_file(spare, img, len);
	free(img);
	tear_last_batch(wal);
	expect_torn_batch_gone(dir);
}

/* WAL files written before salts (version 1: records checked with seed 0)
 * replay as they did. The engine's own file is rewritten as version 1. */
Test(recovery, version_1_wal_files_replay)
{
	char dir[256], wal[512];
	tu_tmpdir(dir, sizeof(dir));
	size_t len;
	struct fmt_file_header h;
	uint8_t *img = three_batches_image(dir, wal, sizeof(wal), &len, &h);
	uint64_t salt = h.salt;
	h.version = FMT_FILE_VERSION;
	fmt_file_header_encode(&h, img);
	uint32_t records = 0;
	for (size_t off = FMT_FILE_HEADER_BYTES; off < len; records++) {
		struct fmt_rec rec;
		int64_t n = fmt_rec_decode(img + off, len - off, 1u << 20, salt, &rec);
		cr_assert_gt(n, 0, "record at %zu", off);
		fmt_rec_header_encode(img + off, rec.kind, rec.count, rec.seq, rec.payload,
				      rec.payload_len, 0);
		off += (size_t)n;
	}
	cr_assert_eq(records, 3);
	tu_write_file(wal, img, len);
	free(img);
	struct eng_engine *eng = open_one(dir, false);
	cr_assert(eng != NULL, "a version 1 WAL file must replay");
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	struct eng_append req;
	cr_assert_eq(tu_append(p, "acme", 100, 1, &req), 0);
	cr_assert_eq(req.first_seq, 16, "the three batches (seq 1-15) replayed");
	struct eng_verify v = { .tenant = fmt_str_c("acme") };
	cr_assert_eq(eng_verify_wait(p, &v), 0);
	cr_assert(v.ok, "verify: %s", v.problem);
	cr_assert_eq(v.events_checked, 16);
	eng_producer_close(p);
	eng_close(eng);
}

Test(recovery, damage_in_the_middle_stops_the_start_unless_repair)
{
	char dir[256], wal[512];
	tu_tmpdir(dir, sizeof(dir));
	write_three_batches(dir);
	wal_file(dir, wal, sizeof(wal));
	int fd = open(wal, O_RDWR);
	cr_assert(fd >= 0);
	uint8_t b;
	off_t at = 64 + 32 + 40; /* inside the first batch's payload */
	cr_assert_eq(pread(fd, &b, 1, at), 1);
	b ^= 0x10;
	cr_assert_eq(pwrite(fd, &b, 1, at), 1);
	close(fd);
	cr_assert(open_one(dir, false) == NULL, "a corrupt record before valid ones must stop the start");
	struct eng_engine *eng = open_one(dir, true);
	cr_assert(eng != NULL, "repair cuts the log at the damage");
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	struct eng_append req;
	cr_assert_eq(tu_append(p, "acme", 100, 1, &req), 0);
	cr_assert_eq(req.first_seq, 1, "everything from the damage on was dropped");
	eng_producer_close(p);
	eng_close(eng);
}
