// SPDX-License-Identifier: Apache-2.0
/*
 * test_fault.c — failing the Nth write or fsync (engine/io_fault.c) and
 * checking that nothing acknowledged is lost (DESIGN.md §2.1–2.2).
 *
 * Each case opens a fresh data directory with io = ENG_IO_FAULT and one
 * shard, appends batches one at a time with eng_append_wait, restarts with
 * the plain sync backend and checks what survived:
 *   - with no seals, every append is exactly one WAL write and one fsync
 *     (file headers are written with plain syscalls, not through the
 *     backend), so the Nth batch is the one that fails, with -EIO, and
 *     every later one gets -EIO too: the shard refuses writes after an
 *     I/O error until it is restarted;
 *   - with small seals, the Nth write may be a WAL, segment or manifest
 *     write depending on timing; a failed segment write must cost nothing
 *     (the seal is retried), a failed manifest write stops the write path
 *     like a WAL error; the log says which it was;
 *   - after the restart every acked batch is there at its acked seqs with
 *     its acked chain value, verify passes, a batch that failed is there
 *     entirely or not at all (retrying it gives all duplicates or none),
 *     and new appends continue the seqs.
 * Lookups by event id need engine/search.c; while search answers
 * FMT_E_STATE the chain values and verify's counts carry the check.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include "engine_test_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define BATCHES 12u
#define BATCH_EVENTS 5u
#define SEAL_BATCHES 14u
#define SEAL_BATCH_EVENTS 10u
#define K_MAX 10u
#define SEAL_K_MAX 24u

enum fault_kind { FAIL_WRITE, FAIL_FSYNC };

/* What the engine logged, from any thread: errors, and among them the
 * ones that name the manifest. */
struct log_seen {
	atomic_int errors, manifest_errors;
};

static void capture_log(void *ctx, enum eng_log_level level, const char *msg)
{
	struct log_seen *seen = ctx;
	if (level != ENG_LOG_ERROR)
		return;
	atomic_fetch_add(&seen->errors, 1);
	if (strstr(msg, "manifest"))
		atomic_fetch_add(&seen->manifest_errors, 1);
}

static void cfg_fault(struct eng_config *cfg, enum fault_kind kind, uint64_t k,
		      struct log_seen *seen)
{
	eng_config_default(cfg);
	cfg->shards = 1;
	cfg->producers_max = 2;
	cfg->dedup_entries_max = 10000;
	cfg->memtable_budget_bytes = 64u << 20;
	cfg->wal_buffer_bytes = 1u << 20;
	cfg->io = ENG_IO_FAULT;
	if (kind == FAIL_WRITE)
		cfg->fault.fail_write_nth = k;
	else
		cfg->fault.fail_fsync_nth = k;
	cfg->log = capture_log;
	cfg->log_ctx = seen;
}

/* One batch as the test sent it and as its ack described it. */
struct sent {
	uint32_t first;             /* tu_event() index of its first event */
	uint32_t count;
	int status;
	uint64_t first_seq, last_seq;
	uint8_t chain[FMT_HASH_BYTES];
};

static void send_batch(struct eng_producer *p, const char *tenant, struct sent *b)
{
	struct eng_append req;
	b->status = tu_append(p, tenant, b->first, b->count, &req);
	b->first_seq = req.first_seq;
	b->last_seq = req.last_seq;
	memcpy(b->chain, req.chain, FMT_HASH_BYTES);
	if (b->status == 0) {
		cr_assert_eq(req.accepted, b->count);
		cr_assert_eq(req.duplicates, 0);
		cr_assert_eq(b->last_seq - b->first_seq + 1, b->count);
	} else {
		cr_assert_eq(b->status, -EIO, "batch at %u: status %s, expected -EIO or 0", b->first,
			     fmt_strerror(b->status));
		cr_assert_eq(req.accepted, 0, "a failed batch reports no accepted events");
	}
}

/* Verifies the tenant's whole history; returns its event count. */
static uint64_t verify_all(struct eng_producer *p, const char *tenant)
{
	struct eng_verify v = { .tenant = fmt_str_c(tenant) };
	cr_assert_eq(eng_verify_wait(p, &v), 0);
	cr_assert(v.ok, "verify %s: %s (first bad seq %llu)", tenant, v.problem,
		  (unsigned long long)v.first_bad_seq);
	return v.events_checked;
}

/* Looks an event up by id. Returns the number of hits (the seq of the
 * first in *seq), or -1 when search is not available in this build. */
static int find_by_id(struct eng_producer *p, const char *tenant, uint32_t index, uint64_t *seq)
{
	struct fmt_event ev;
	char store[256];
	tu_event(&ev, store, index);
	struct eng_search s = { .tenant = fmt_str_c(tenant), .limit = 10 };
	s.filter.has_event_id = true;
	memcpy(s.filter.event_id, ev.event_id, FMT_EVENT_ID_BYTES);
	int rc = eng_search_wait(p, &s);
	if (rc == FMT_E_STATE) {
		eng_search_release(&s);
		return -1;
	}
	cr_assert_eq(rc, 0, "search by id: %s", fmt_strerror(rc));
	int hits = (int)s.hit_count;
	if (hits > 0) {
		*seq = s.hits[0].ev.seq;
		cr_assert(memcmp(s.hits[0].ev.event_id, ev.event_id, FMT_EVENT_ID_BYTES) == 0);
	}
	eng_search_release(&s);
	return hits;
}

static bool search_missing; /* set (and warned about) once per test process */

/* Every acked batch is stored at its acked seqs. Without seals, verify up
 * to the batch's last seq also reproduces the ack's chain value (with
 * segments, verify's chain is per segment, so only search can tell). */
static void check_acked(struct eng_producer *p, const char *tenant, const struct sent *b,
			uint32_t n, bool chains)
{
	for (uint32_t i = 0; i < n; i++) {
		if (b[i].status != 0)
			continue;
		if (chains) {
			struct eng_verify v = { .tenant = fmt_str_c(tenant), .from_seq = 1,
						.to_seq = b[i].last_seq };
			cr_assert_eq(eng_verify_wait(p, &v), 0);
			cr_assert(v.ok, "verify to %llu: %s", (unsigned long long)b[i].last_seq, v.problem);
			cr_assert(memcmp(v.chain, b[i].chain, FMT_HASH_BYTES) == 0,
				  "chain after acked seq %llu differs from its ack",
				  (unsigned long long)b[i].last_seq);
		}
		for (uint32_t j = 0; j < b[i].count && !search_missing; j++) {
			uint64_t seq = 0;
			int hits = find_by_id(p, tenant, b[i].first + j, &seq);
			if (hits < 0) {
				cr_log_warn("search unavailable (FMT_E_STATE): ids not looked up");
				search_missing = true;
				break;
			}
			cr_assert_eq(hits, 1, "acked event %u found %d times", b[i].first + j, hits);
			cr_assert_eq(seq, b[i].first_seq + j, "acked event %u at seq %llu, acked at %llu",
				     b[i].first + j, (unsigned long long)seq,
				     (unsigned long long)(b[i].first_seq + j));
		}
	}
}

/* Retries a batch that was not acked after the restart: it was stored
 * entirely (all duplicates) or not at all (all accepted), never in part.
 * Returns how many of its events were new. */
static uint32_t retry_batch(struct eng_producer *p, const char *tenant, const struct sent *b)
{
	struct eng_append req;
	cr_assert_eq(tu_append(p, tenant, b->first, b->count, &req), 0);
	cr_assert(req.accepted == b->count || req.duplicates == b->count,
		  "batch at %u stored in part: %u accepted, %u duplicates", b->first, req.accepted,
		  req.duplicates);
	return req.accepted;
}

static struct eng_engine *reopen_sync(const char *dir, struct eng_config *cfg)
{
	cfg->io = ENG_IO_SYNC;
	memset(&cfg->fault, 0, sizeof(cfg->fault));
	struct eng_engine *eng = tu_open(dir, cfg);
	cr_assert(eng != NULL, "restart after the fault failed");
	return eng;
}

/* After the restart: acked batches intact, seqs continue, a failed batch
 * is all or nothing. `stored` is verify's count after the restart. */
static void check_after_restart(struct eng_producer *p, const struct sent *b, uint32_t n,
				uint64_t stored, bool chains)
{
	check_acked(p, "acme", b, n, chains);
	struct sent next = { .first = 100000, .count = 3 };
	send_batch(p, "acme", &next);
	cr_assert_eq(next.status, 0, "append after the restart: %s", fmt_strerror(next.status));
	cr_assert_eq(next.first_seq, stored + 1, "seq continues after the restart: got %llu, want %llu",
		     (unsigned long long)next.first_seq, (unsigned long long)(stored + 1));
	uint64_t total = stored + next.count;
	for (uint32_t i = 0; i < n; i++)
		if (b[i].status != 0)
			total += retry_batch(p, "acme", &b[i]);
	cr_assert_eq(verify_all(p, "acme"), total);
}

/* The k-th WAL write or fsync fails; no seals. */
static void wal_case(enum fault_kind kind, uint32_t k)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	struct log_seen seen = { 0 };
	struct eng_config cfg;
	cfg_fault(&cfg, kind, k, &seen);
	struct eng_engine *eng = tu_open(dir, &cfg);
	cr_assert(eng != NULL);
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	struct sent b[BATCHES];
	for (uint32_t i = 0; i < BATCHES; i++) {
		b[i] = (struct sent){ .first = i * BATCH_EVENTS, .count = BATCH_EVENTS };
		send_batch(p, "acme", &b[i]);
		cr_assert_eq(b[i].status, i + 1 < k ? 0 : -EIO, "k=%u: batch %u got %s", k, i + 1,
			     fmt_strerror(b[i].status));
	}
	uint64_t acked = (uint64_t)(k - 1) * BATCH_EVENTS;
	/* Nothing unacknowledged is visible, even before the restart. */
	cr_assert_eq(verify_all(p, "acme"), acked);
	struct eng_shard_stats st;
	eng_shard_stats(eng, 0, &st);
	cr_assert(st.failed, "k=%u: the shard must stop its write path", k);
	cr_assert(atomic_load(&seen.errors) >= 1, "k=%u: the WAL failure is logged", k);
	eng_producer_close(p);
	eng_close(eng);

	eng = reopen_sync(dir, &cfg);
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	uint64_t stored = verify_all(p, "acme");
	if (kind == FAIL_WRITE)
		cr_assert_eq(stored, acked, "k=%u: the failed write never reached the file", k);
	else
		cr_assert(stored == acked || stored == acked + BATCH_EVENTS,
			  "k=%u: %llu events stored, %llu acked", k, (unsigned long long)stored,
			  (unsigned long long)acked);
	check_after_restart(p, b, BATCHES, stored, true);
	eng_producer_close(p);
	eng_close(eng);
}

Test(fault, wal_write_fails)
{
	for (uint32_t k = 1; k <= K_MAX; k++)
		wal_case(FAIL_WRITE, k);
}

Test(fault, wal_fsync_fails)
{
	for (uint32_t k = 1; k <= K_MAX; k++)
		wal_case(FAIL_FSYNC, k);
}

/* Which kind of write each seal case broke, over all k. */
struct seal_tally {
	uint32_t wal, segment, manifest, none;
	off_t largest;                /* the largest segment file seen */
};

/* The size of the largest segment file of shard 0 under dir. */
static off_t largest_segment(const char *dir)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/shard-000/segments", dir);
	DIR *d = opendir(path);
	cr_assert(d != NULL);
	off_t most = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		struct stat st;
		if (fstatat(dirfd(d), e->d_name, &st, 0) == 0 && S_ISREG(st.st_mode))
			most = st.st_size > most ? st.st_size : most;
	}
	closedir(d);
	return most;
}

/* How seal_case() picks its failure, besides k. */
struct seal_plan {
	uint64_t step;        /* cfg.seal_write_step_bytes (0: the default) */
	uint32_t rows;        /* cfg.seal_rows */
	const char *nth_suffix; /* the kth write of these files only (NULL: of any file) */
};

static void seal_case(enum fault_kind kind, uint32_t k, struct seal_tally *tally,
		      const struct seal_plan *plan)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	struct log_seen seen = { 0 };
	struct eng_config cfg;
	cfg_fault(&cfg, kind, k, &seen);
	cfg.seal_rows = plan->rows;
	if (plan->step)
		cfg.seal_write_step_bytes = plan->step;
	cfg.fault.nth_path_suffix = plan->nth_suffix;
	cfg.block_rows = 8;
	cfg.wal_file_bytes = 16u << 10; /* rotate and reclaim WAL files too */
	struct eng_engine *eng = tu_open(dir, &cfg);
	cr_assert(eng != NULL);
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	struct sent b[SEAL_BATCHES];
	uint64_t last_acked = 0;
	bool failed = false;
	for (uint32_t i = 0; i < SEAL_BATCHES; i++) {
		b[i] = (struct sent){ .first = i * SEAL_BATCH_EVENTS, .count = SEAL_BATCH_EVENTS };
		send_batch(p, "acme", &b[i]);
		cr_assert(!(failed && b[i].status == 0), "k=%u: batch %u acked after a failure", k, i + 1);
		failed |= b[i].status != 0;
		if (b[i].status == 0)
			last_acked = b[i].last_seq;
	}
	eng_producer_close(p);
	eng_close(eng); /* lets a seal in flight finish: its errors are logged now */
	/* A failed WAL or manifest write stops the write path (appends fail);
	 * a failed segment write is logged and retried, and appends go on. */
	bool logged = atomic_load(&seen.errors) > 0;
	bool manifest = atomic_load(&seen.manifest_errors) > 0;
	tally->manifest += manifest;
	tally->wal += !manifest && failed;
	tally->segment += !manifest && !failed && logged;
	tally->none += !logged;
	cr_assert(!failed || logged, "k=%u: appends failed but nothing was logged", k);

	eng = reopen_sync(dir, &cfg);
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	uint64_t stored = verify_all(p, "acme");
	cr_assert(stored >= last_acked && stored <= last_acked + SEAL_BATCH_EVENTS,
		  "k=%u: %llu events stored, last acked seq %llu", k, (unsigned long long)stored,
		  (unsigned long long)last_acked);
	check_after_restart(p, b, SEAL_BATCHES, stored, false);
	eng_producer_close(p);
	eng_close(eng);
	off_t most = largest_segment(dir);
	tally->largest = most > tally->largest ? most : tally->largest;
}

/* seal_case for k = 1..SEAL_K_MAX, then, until at least want_segment
 * segment and want_manifest manifest writes have been hit, for the kth
 * write of segment files only, then of the manifest only. Which write is
 * the kth of all depends on how far the seal worker got behind the
 * appends, and on a loaded machine (a test run beside others) the sweep
 * can miss every manifest write: a k past a run's last write hits
 * nothing, and each run interleaves its writes anew. The kth write of one
 * kind of file is always that kind. Logs and returns what was hit. */
static struct seal_tally seal_cases(enum fault_kind kind, const struct seal_plan *plan,
				    uint32_t want_segment, uint32_t want_manifest)
{
	struct seal_tally tally = { 0 };
	for (uint32_t k = 1; k <= SEAL_K_MAX; k++)
		seal_case(kind, k, &tally, plan);
	struct seal_plan only = *plan;
	only.nth_suffix = ".hseg.tmp";
	for (uint32_t k = 1; tally.segment < want_segment && k <= SEAL_K_MAX; k++)
		seal_case(kind, k, &tally, &only);
	only.nth_suffix = "/manifest.log";
	for (uint32_t k = 1; tally.manifest < want_manifest && k <= SEAL_K_MAX; k++)
		seal_case(kind, k, &tally, &only);
	cr_log_info("%s failures hit: wal %u, segment %u, manifest %u, none %u",
		    kind == FAIL_WRITE ? "write" : "fsync", tally.wal, tally.segment, tally.manifest,
		    tally.none);
	return tally;
}

/* The Nth write (WAL, segment or manifest: whichever it is) fails while
 * seals run; over all N, each kind of seal write must have been hit. */
Test(fault, seal_write_fails)
{
	struct seal_plan plan = { .rows = 2 * SEAL_BATCH_EVENTS };
	struct seal_tally tally = seal_cases(FAIL_WRITE, &plan, 1, 1);
	cr_assert(tally.segment > 0, "no case failed a segment write");
	cr_assert(tally.manifest > 0, "no case failed a manifest write");
}

/* The same with segments written in 4 KiB steps (each written back
 * before the next): a failure between two steps of one image fails the
 * round, which is retried, and costs nothing acknowledged. k counts
 * segment writes only, so every k up to a run's steps hits one. */
Test(fault, seal_write_fails_between_steps, .timeout = 240)
{
	struct seal_plan plan = { .step = 4096, .rows = 8 * SEAL_BATCH_EVENTS, .nth_suffix = ".hseg.tmp" };
	struct seal_tally tally = seal_cases(FAIL_WRITE, &plan, 2, 0);
	cr_assert(tally.segment > 1, "fewer than two cases failed a segment step");
	cr_assert_gt(tally.largest, 2 * 4096, "no segment took three steps");
}

Test(fault, seal_fsync_fails)
{
	struct seal_plan plan = { .rows = 2 * SEAL_BATCH_EVENTS };
	struct seal_tally tally = seal_cases(FAIL_FSYNC, &plan, 1, 1);
	cr_assert(tally.segment > 0, "no case failed a segment fsync");
	cr_assert(tally.manifest > 0, "no case failed a manifest fsync");
}

/* Every event of the tenant, newest first, page by page: each acked seq
 * 1..n exactly once. */
static void search_all_once(struct eng_producer *p, const char *tenant, uint64_t n)
{
	uint8_t *seen = calloc(n + 1, 1);
	cr_assert(seen != NULL);
	uint8_t token[ENG_PAGE_TOKEN_BYTES];
	uint32_t token_len = 0;
	uint64_t hits = 0;
	do {
		struct eng_search s = { .tenant = fmt_str_c(tenant), .limit = 7 };
		s.page_token = token_len ? token : NULL;
		s.page_token_len = token_len;
		cr_assert_eq(eng_search_wait(p, &s), 0);
		for (uint32_t i = 0; i < s.hit_count; i++) {
			uint64_t seq = s.hits[i].ev.seq;
			cr_assert(seq >= 1 && seq <= n, "seq %llu out of 1..%llu",
				  (unsigned long long)seq, (unsigned long long)n);
			cr_assert(!seen[seq], "seq %llu returned twice", (unsigned long long)seq);
			seen[seq] = 1;
		}
		hits += s.hit_count;
		token_len = s.next_page_token_len;
		memcpy(token, s.next_page_token, token_len);
		eng_search_release(&s);
	} while (token_len);
	cr_assert_eq(hits, n, "search returned %llu of %llu events", (unsigned long long)hits,
		     (unsigned long long)n);
	free(seen);
}

/* A seal round that cannot store its segment leaves the rows it froze in
 * place (retried every second, failing again), while appends go on into
 * a fresh memtable: search, count and verify see every acked event once,
 * across both memtables, and a restart seals them. */
Test(fault, frozen_rows_stay_readable_while_seals_fail, .timeout = 120)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	struct log_seen seen = { 0 };
	struct eng_config cfg;
	cfg_fault(&cfg, FAIL_WRITE, 0, &seen);
	cfg.fault.fail_path_suffix = ".hseg.tmp";
	cfg.seal_rows = 2 * SEAL_BATCH_EVENTS;
	cfg.block_rows = 8;
	struct eng_engine *eng = tu_open(dir, &cfg);
	cr_assert(eng != NULL);
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	struct sent b[SEAL_BATCHES];
	for (uint32_t k = 0; k < SEAL_BATCHES; k++) {
		b[k] = (struct sent){ .first = k * SEAL_BATCH_EVENTS, .count = SEAL_BATCH_EVENTS };
		send_batch(p, "acme", &b[k]);
		cr_assert_eq(b[k].status, 0, "a failed seal does not fail appends");
		/* Halfway, until a round has failed: its rows then stay frozen
		 * and the second half goes to the fresh memtable. */
		for (int w = 0; k == SEAL_BATCHES / 2 && w < 3000 && !atomic_load(&seen.errors); w++)
			usleep(10 * 1000);
	}
	cr_assert(atomic_load(&seen.errors) > 0, "no seal round failed");
	uint64_t total = SEAL_BATCHES * SEAL_BATCH_EVENTS;
	struct eng_shard_stats st;
	eng_shard_stats(eng, 0, &st);
	cr_assert_eq(st.segments_sealed, 0, "every segment write fails");
	cr_assert(!st.failed, "a failed segment write does not stop the write path");
	cr_assert_eq(verify_all(p, "acme"), total);
	check_acked(p, "acme", b, SEAL_BATCHES, true);
	search_all_once(p, "acme", total);
	struct eng_count c = { .tenant = fmt_str_c("acme"), .group_by = ENG_COUNT_BY_OUTCOME };
	cr_assert_eq(eng_count_wait(p, &c), 0);
	cr_assert_eq(c.total, total, "count %llu, stored %llu", (unsigned long long)c.total,
		     (unsigned long long)total);
	eng_count_release(&c);
	eng_producer_close(p);
	eng_close(eng);

	eng = reopen_sync(dir, &cfg);
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	cr_assert(tu_wait_sealed(eng, 0, 1) >= 1, "after the restart the rows are sealed");
	cr_assert_eq(verify_all(p, "acme"), total);
	search_all_once(p, "acme", total);
	eng_producer_close(p);
	eng_close(eng);
}

/* A tenant of the other shard, for a given tenant. */
static void other_shard_tenant(struct eng_engine *eng, const char *a, char *out, size_t cap)
{
	uint32_t sa = eng_shard_of(eng, fmt_str_c(a));
	for (uint32_t i = 0; i < 1000; i++) {
		snprintf(out, cap, "other-%u", i);
		if (eng_shard_of(eng, fmt_str_c(out)) != sa)
			return;
	}
	cr_assert_fail("no tenant on another shard");
}

/* An I/O error stops one shard's write path, not the others'. */
Test(fault, other_shard_keeps_working)
{
	char dir[256], other[32];
	tu_tmpdir(dir, sizeof(dir));
	struct log_seen seen = { 0 };
	struct eng_config cfg;
	cfg_fault(&cfg, FAIL_WRITE, 2, &seen);
	cfg.shards = 2;
	struct eng_engine *eng = tu_open(dir, &cfg);
	cr_assert(eng != NULL);
	other_shard_tenant(eng, "acme", other, sizeof(other));
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	struct sent a[3], o = { .first = 500, .count = 4 };
	for (uint32_t i = 0; i < 3; i++) {
		a[i] = (struct sent){ .first = i * 10, .count = 10 };
		send_batch(p, "acme", &a[i]);
		cr_assert_eq(a[i].status, i == 0 ? 0 : -EIO);
	}
	send_batch(p, other, &o); /* the other shard's first write */
	cr_assert_eq(o.status, 0, "the other shard still appends");
	eng_producer_close(p);
	eng_close(eng);

	eng = reopen_sync(dir, &cfg);
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	cr_assert_eq(verify_all(p, "acme"), 10);
	cr_assert_eq(verify_all(p, other), 4);
	check_acked(p, other, &o, 1, true);
	eng_producer_close(p);
	eng_close(eng);
}

#define GROUP_BATCHES 16u
#define GROUP_WAVE 4u /* so there are at least GROUP_BATCHES / GROUP_WAVE commits */

struct async_batch {
	struct sent sent;
	struct eng_append req;
	struct fmt_event events[BATCH_EVENTS];
	char store[BATCH_EVENTS][256];
	bool done;
};

static void async_done(struct eng_append *req)
{
	struct async_batch *a = req->ctx;
	a->sent.status = req->status;
	a->sent.first_seq = req->first_seq;
	a->sent.last_seq = req->last_seq;
	memcpy(a->sent.chain, req->chain, FMT_HASH_BYTES);
	a->done = true;
}

/* Submits the batches in waves of GROUP_WAVE, all of a wave at once so
 * that commits hold several, and waits for each wave: at least one commit
 * per wave. */
static void send_all_async(struct eng_producer *p, struct async_batch *a, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		a[i].sent = (struct sent){ .first = i * BATCH_EVENTS, .count = BATCH_EVENTS };
		for (uint32_t j = 0; j < BATCH_EVENTS; j++)
			tu_event(&a[i].events[j], a[i].store[j], a[i].sent.first + j);
		a[i].req = (struct eng_append){ .tenant = fmt_str_c("acme"), .events = a[i].events,
						.count = BATCH_EVENTS, .done = async_done,
						.ctx = &a[i] };
		cr_assert_eq(eng_append_submit(p, &a[i].req), 0);
		if ((i + 1) % GROUP_WAVE != 0 && i + 1 < n)
			continue;
		for (int spins = 0; spins < 1000 && eng_producer_pending(p) > 0; spins++)
			eng_producer_wait(p, 10 * 1000000);
		cr_assert_eq(eng_producer_pending(p), 0, "appends never completed");
	}
}

/* The k-th write or fsync fails while several batches share commits: the
 * acked batches are a prefix of the submitted ones (in order, all with
 * status 0), every later one gets -EIO, and the restart keeps the prefix. */
static void group_case(enum fault_kind kind, uint32_t k)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	struct log_seen seen = { 0 };
	struct eng_config cfg;
	cfg_fault(&cfg, kind, k, &seen);
	struct eng_engine *eng = tu_open(dir, &cfg);
	cr_assert(eng != NULL);
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	static struct async_batch a[GROUP_BATCHES];
	send_all_async(p, a, GROUP_BATCHES);
	struct sent b[GROUP_BATCHES];
	uint32_t acked = 0;
	for (uint32_t i = 0; i < GROUP_BATCHES; i++) {
		b[i] = a[i].sent;
		cr_assert(b[i].status == 0 || b[i].status == -EIO, "status %s",
			  fmt_strerror(b[i].status));
		cr_assert(!(b[i].status == 0 && i > acked), "k=%u: batch %u acked after a failed one",
			  k, i + 1);
		if (b[i].status == 0) {
			cr_assert_eq(b[i].first_seq, (uint64_t)acked * BATCH_EVENTS + 1);
			acked++;
		}
	}
	cr_assert(acked < GROUP_BATCHES, "k=%u: no commit failed", k);
	cr_assert_eq(verify_all(p, "acme"), (uint64_t)acked * BATCH_EVENTS);
	eng_producer_close(p);
	eng_close(eng);

	eng = reopen_sync(dir, &cfg);
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	uint64_t stored = verify_all(p, "acme");
	cr_assert(stored >= (uint64_t)acked * BATCH_EVENTS, "k=%u: acked events lost", k);
	if (kind == FAIL_WRITE)
		cr_assert_eq(stored, (uint64_t)acked * BATCH_EVENTS, "k=%u: a failed write was kept", k);
	check_after_restart(p, b, GROUP_BATCHES, stored, true);
	eng_producer_close(p);
	eng_close(eng);
}

Test(fault, group_commit_write_fails)
{
	for (uint32_t k = 1; k <= GROUP_BATCHES / GROUP_WAVE; k++)
		group_case(FAIL_WRITE, k);
}

Test(fault, group_commit_fsync_fails)
{
	for (uint32_t k = 1; k <= GROUP_BATCHES / GROUP_WAVE; k++)
		group_case(FAIL_FSYNC, k);
}
