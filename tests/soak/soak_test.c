// SPDX-License-Identifier: Apache-2.0
/*
 * soak_test.c — memory stays bounded at full ingest rate (CTest label
 * `slow`).
 *
 * Runs the engine with small budgets (memtables 48 MiB per shard, dedup
 * 200k entries, seal thresholds far away so that only the memory budget
 * forces seals) and two producer threads appending as fast as they can for
 * HODEI_SOAK_SECONDS (default 150). Every second it samples the process's
 * resident memory and the shards' memtable bytes. It fails when:
 *   - a shard's memtable bytes ever exceed its budget (the budget is
 *     enforced: early seals, then refusal with FMT_E_NOMEM);
 *   - resident memory in the last third of the run is more than 64 MiB
 *     above its maximum in the middle third (it must be flat, not grow);
 *   - nothing was sealed early or the dedup memory never evicted (so the
 *     run did reach the budgets it is meant to exercise);
 *   - any append failed with something other than a budget refusal.
 * It prints the samples, and closes with "N passed, N failed".
 */
#include "engine/engine.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PRODUCERS 2
#define BATCH 200
#define INFLIGHT 16
#define BUDGET (48ull << 20)

struct slot {
	struct eng_append req;
	struct fmt_event ev[BATCH];
	char store[BATCH][96];
	bool busy;
};

static _Atomic bool stop;
static _Atomic uint64_t acked, refused, failed;

static void done(struct eng_append *r)
{
	((struct slot *)r)->busy = false;
	if (r->status == 0)
		atomic_fetch_add(&acked, r->accepted);
	else if (r->status == FMT_E_NOMEM)
		atomic_fetch_add(&refused, 1);
	else
		atomic_fetch_add(&failed, 1);
}

static void fill(struct slot *s, uint64_t n)
{
	for (uint32_t i = 0; i < BATCH; i++, n++) {
		struct fmt_event *e = &s->ev[i];
		memset(e, 0, sizeof(*e));
		int l = snprintf(s->store[i], 96, "actor-%llu", (unsigned long long)(n % 5000));
		e->str[FMT_F_ACTOR_ID] = (struct fmt_str){ s->store[i], (uint32_t)l };
		e->str[FMT_F_ACTION] = fmt_str_c("document.read");
		e->str[FMT_F_RESOURCE_ID] = (struct fmt_str){ s->store[i], (uint32_t)l };
		e->str[FMT_F_USER_AGENT] = fmt_str_c("soak/1.0 (a user agent of realistic length, "
						     "about eighty bytes long)");
		memcpy(e->event_id, &n, sizeof(n));
		e->event_id[15] = 0x5A;
	}
	char *t = s->store[0] + 48;
	snprintf(t, 48, "tenant-%llu", (unsigned long long)(n / BATCH % 64));
	s->req = (struct eng_append){ .tenant = fmt_str_c(t), .events = s->ev, .count = BATCH,
				      .done = done, .ctx = NULL };
}

static void *producer(void *arg)
{
	struct eng_producer *p;
	if (eng_producer_open(arg, &p) != 0)
		return NULL;
	struct slot *slots = calloc(INFLIGHT, sizeof(*slots));
	static _Atomic uint64_t counter;
	while (!atomic_load(&stop)) {
		for (int i = 0; i < INFLIGHT; i++) {
			if (slots[i].busy)
				continue;
			fill(&slots[i], atomic_fetch_add(&counter, BATCH));
			if (eng_append_submit(p, &slots[i].req) != 0)
				break;
			slots[i].busy = true;
		}
		eng_producer_wait(p, 5 * 1000000);
	}
	eng_producer_close(p);
	free(slots);
	return NULL;
}

static long rss_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kib = -1;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	if (f)
		fclose(f);
	return kib;
}

int main(void)
{
	const char *env = getenv("HODEI_SOAK_SECONDS");
	int seconds = env ? atoi(env) : 150;
	if (seconds < 6)
		seconds = 6;
	char dir[] = "/tmp/hodei-soak-XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	struct eng_config cfg;
	eng_config_default(&cfg);
	cfg.data_dir = dir;
	cfg.shards = 2;
	cfg.memtable_budget_bytes = BUDGET;
	cfg.dedup_entries_max = 200000;
	cfg.seal_rows = 1u << 24;
	cfg.seal_bytes = 1ull << 40;
	cfg.seal_age_ns = 3600ll * 1000000000;
	cfg.wal_file_bytes = 32u << 20;
	struct eng_engine *eng;
	if (eng_open(&cfg, &eng) != 0)
		return 1;
	pthread_t th[PRODUCERS];
	for (int i = 0; i < PRODUCERS; i++)
		pthread_create(&th[i], NULL, producer, eng);
	long *rss = calloc((size_t)seconds, sizeof(long));
	int over_budget = 0;
	for (int s = 0; s < seconds; s++) {
		sleep(1);
		rss[s] = rss_kib();
		uint64_t mem = 0;
		for (uint32_t i = 0; i < eng_shard_count(eng); i++) {
			struct eng_shard_stats st;
			eng_shard_stats(eng, i, &st);
			over_budget += st.memtable_bytes > BUDGET;
			mem += st.memtable_bytes;
		}
		printf("t=%3ds rss=%6ld MiB memtables=%4llu MiB acked=%llu refused=%llu\n", s + 1,
		       rss[s] / 1024, (unsigned long long)(mem >> 20),
		       (unsigned long long)atomic_load(&acked), (unsigned long long)atomic_load(&refused));
		fflush(stdout);
	}
	atomic_store(&stop, true);
	for (int i = 0; i < PRODUCERS; i++)
		pthread_join(th[i], NULL);
	uint64_t sealed = 0, evicted = 0;
	for (uint32_t i = 0; i < eng_shard_count(eng); i++) {
		struct eng_shard_stats st;
		eng_shard_stats(eng, i, &st);
		sealed += st.segments_sealed;
		evicted += st.dedup_evicted_early;
	}
	eng_close(eng);
	long mid = 0, last = 0;
	for (int s = seconds / 3; s < 2 * seconds / 3; s++)
		mid = rss[s] > mid ? rss[s] : mid;
	for (int s = 2 * seconds / 3; s < seconds; s++)
		last = rss[s] > last ? rss[s] : last;
	int bad = 0;
#define CHECK(cond, ...) do { if (!(cond)) { bad++; printf("FAIL: " __VA_ARGS__); printf("\n"); } } while (0)
	CHECK(over_budget == 0, "memtables exceeded the budget in %d samples", over_budget);
	CHECK(last <= mid + 64 * 1024, "rss grew from %ld MiB to %ld MiB", mid / 1024, last / 1024);
	CHECK(sealed > 0, "no early seal happened under memory pressure");
	CHECK(evicted > 0, "the dedup memory never reached its bound");
	CHECK(atomic_load(&failed) == 0, "%llu appends failed", (unsigned long long)atomic_load(&failed));
	printf("soak: %llu events acked, %llu refusals, %llu seals, %llu dedup evictions, rss %ld -> %ld MiB\n",
	       (unsigned long long)atomic_load(&acked), (unsigned long long)atomic_load(&refused),
	       (unsigned long long)sealed, (unsigned long long)evicted, mid / 1024, last / 1024);
	printf("%d passed, %d failed\n", 5 - bad, bad);
	free(rss);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	(void)!system(cmd);
	return bad ? 1 : 0;
}
