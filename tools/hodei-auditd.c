// SPDX-License-Identifier: Apache-2.0
/*
 * hodei-auditd.c — the server binary. Until the gRPC front end lands, its
 * honest job on the embedded defaults is a guided run of the storage
 * engine: open a data directory (a fresh temporary one unless --data-dir),
 * append realistic events for several tenants from two producer threads
 * with durable group commit, search them, verify every tenant's chain,
 * restart the engine (recovery) and check that sequence numbers and chains
 * continue — printing what it did and how fast.
 */
#include "engine/engine.h"
#include "format/hash.h"

#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TENANTS 8
#define BATCH 100
#define INFLIGHT 32

static const char *const tenants[TENANTS] = { "acme", "globex", "initech", "umbrella",
					       "hooli", "stark", "wayne", "tyrell" };
static const char *const actions[] = { "user.login", "document.read", "document.update",
				       "document.delete", "invoice.create", "role.grant" };
static const char *const types[] = { "user", "document", "document", "document", "invoice", "role" };

struct batch {
	struct eng_append req;
	struct fmt_event ev[BATCH];
	char store[BATCH][160];
	bool busy;
};

struct producer_job {
	struct eng_engine *eng;
	uint32_t index;
	uint64_t events;
	uint64_t acked, failed;
	struct batch *batches;
};

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void fill(struct batch *b, uint32_t tenant, uint64_t n)
{
	memset(&b->req, 0, sizeof(b->req));
	for (uint32_t i = 0; i < BATCH; i++, n++) {
		struct fmt_event *e = &b->ev[i];
		char *s = b->store[i];
		uint32_t a = (uint32_t)(n * 2654435761u % FMT_ARRAY_LEN(actions));
		memset(e, 0, sizeof(*e));
		int la = snprintf(s, 32, "user-%llu", (unsigned long long)(n % 97));
		int lr = snprintf(s + 32, 32, "%s-%llu", types[a], (unsigned long long)(n % 1009));
		int lq = snprintf(s + 64, 48, "req-%016llx", (unsigned long long)n);
		e->str[FMT_F_ACTOR_ID] = (struct fmt_str){ s, (uint32_t)la };
		e->str[FMT_F_ACTOR_TYPE] = fmt_str_c("user");
		e->str[FMT_F_ACTION] = fmt_str_c(actions[a]);
		e->str[FMT_F_RESOURCE_TYPE] = fmt_str_c(types[a]);
		e->str[FMT_F_RESOURCE_ID] = (struct fmt_str){ s + 32, (uint32_t)lr };
		e->str[FMT_F_REQUEST_ID] = (struct fmt_str){ s + 64, (uint32_t)lq };
		e->str[FMT_F_SOURCE_IP] = fmt_str_c(n % 2 ? "203.0.113.7" : "2001:db8::42");
		e->str[FMT_F_USER_AGENT] = fmt_str_c("Mozilla/5.0 (X11; Linux x86_64) hodei-demo/1.0");
		e->outcome = n % 17 ? FMT_OUTCOME_SUCCESS : FMT_OUTCOME_DENIED;
		e->details_json = fmt_str_c("{\"via\":\"demo\",\"mfa\":true}");
	}
	b->req.tenant = fmt_str_c(tenants[tenant]);
	b->req.events = b->ev;
	b->req.count = BATCH;
}

static void batch_done(struct eng_append *req)
{
	struct batch *b = (struct batch *)req;
	struct producer_job *job = req->ctx;
	b->busy = false;
	if (req->status == 0)
		job->acked += req->accepted;
	else
		job->failed++;
}

static void *producer_main(void *arg)
{
	struct producer_job *job = arg;
	struct eng_producer *p;
	if (eng_producer_open(job->eng, &p) != 0)
		return NULL;
	uint64_t sent = 0, n = (uint64_t)job->index << 40;
	while (sent < job->events || eng_producer_pending(p)) {
		for (uint32_t i = 0; i < INFLIGHT && sent < job->events; i++) {
			struct batch *b = &job->batches[i];
			if (b->busy)
				continue;
			fill(b, (uint32_t)((n / BATCH) % TENANTS), n);
			b->req.done = batch_done;
			b->req.ctx = job;
			if (eng_append_submit(p, &b->req) != 0)
				break;
			b->busy = true;
			sent += BATCH;
			n += BATCH;
		}
		eng_producer_wait(p, 10 * 1000000);
	}
	eng_producer_close(p);
	return NULL;
}

static int ingest(struct eng_engine *eng, uint64_t events)
{
	struct producer_job jobs[2];
	pthread_t th[2];
	int64_t t0 = mono_ns();
	for (uint32_t i = 0; i < 2; i++) {
		jobs[i] = (struct producer_job){ .eng = eng, .index = i, .events = events / 2 };
		jobs[i].batches = calloc(INFLIGHT, sizeof(struct batch));
		pthread_create(&th[i], NULL, producer_main, &jobs[i]);
	}
	uint64_t acked = 0, failed = 0;
	for (uint32_t i = 0; i < 2; i++) {
		pthread_join(th[i], NULL);
		acked += jobs[i].acked;
		failed += jobs[i].failed;
		free(jobs[i].batches);
	}
	double secs = (double)(mono_ns() - t0) / 1e9;
	uint64_t fsyncs = 0;
	for (uint32_t s = 0; s < eng_shard_count(eng); s++) {
		struct eng_shard_stats st;
		eng_shard_stats(eng, s, &st);
		fsyncs += st.wal_fsyncs;
	}
	printf("appended %llu events for %d tenants in %.2f s: %.0f durable events/s, "
	       "%llu fsyncs (%.0f events per fsync), %llu batches failed\n",
	       (unsigned long long)acked, TENANTS, secs, (double)acked / secs,
	       (unsigned long long)fsyncs, fsyncs ? (double)acked / (double)fsyncs : 0.0,
	       (unsigned long long)failed);
	return failed ? 1 : 0;
}

static void show_search(struct eng_producer *p, const char *title, struct eng_search *q)
{
	int64_t t0 = mono_ns();
	int rc = eng_search_wait(p, q);
	double ms = (double)(mono_ns() - t0) / 1e6;
	printf("search %-44s -> %s, %u hits in %.2f ms", title, rc ? fmt_strerror(rc) : "ok",
	       q->hit_count, ms);
	if (q->hit_count) {
		const struct eng_hit *h = &q->hits[0];
		char chain[2 * FMT_HASH_BYTES + 1];
		fmt_hex(h->chain, FMT_HASH_BYTES, chain);
		printf("; newest: seq %llu %.*s %.*s %.*s chain %.16s…",
		       (unsigned long long)h->ev.seq, (int)h->ev.str[FMT_F_ACTOR_ID].len,
		       h->ev.str[FMT_F_ACTOR_ID].ptr, (int)h->ev.str[FMT_F_ACTION].len,
		       h->ev.str[FMT_F_ACTION].ptr, (int)h->ev.str[FMT_F_RESOURCE_ID].len,
		       h->ev.str[FMT_F_RESOURCE_ID].ptr, chain);
	}
	printf("\n");
	eng_search_release(q);
}

static int explore(struct eng_engine *eng)
{
	struct eng_producer *p;
	if (eng_producer_open(eng, &p) != 0)
		return 1;
	struct eng_search q = { .tenant = fmt_str_c("acme"), .limit = 10 };
	show_search(p, "acme, newest 10", &q);
	q = (struct eng_search){ .tenant = fmt_str_c("acme"), .limit = 100 };
	q.filter.actor_id = fmt_str_c("user-42");
	show_search(p, "acme, actor_id=user-42", &q);
	q = (struct eng_search){ .tenant = fmt_str_c("globex"), .limit = 100 };
	q.filter.action = fmt_str_c("document.delete");
	q.filter.outcome = FMT_OUTCOME_DENIED;
	show_search(p, "globex, action=document.delete denied", &q);
	int bad = 0;
	for (uint32_t t = 0; t < TENANTS; t++) {
		struct eng_verify v = { .tenant = fmt_str_c(tenants[t]) };
		int rc = eng_verify_wait(p, &v);
		char chain[2 * FMT_HASH_BYTES + 1];
		fmt_hex(v.chain, FMT_HASH_BYTES, chain);
		printf("verify %-9s %s: %llu events, %llu segments, chain %.16s…%s%s\n", tenants[t],
		       rc == 0 && v.ok ? "ok" : "FAILED", (unsigned long long)v.events_checked,
		       (unsigned long long)v.segments_checked, chain, v.ok ? "" : " — ", v.problem);
		bad += !(rc == 0 && v.ok);
	}
	eng_producer_close(p);
	return bad ? 1 : 0;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	return remove(path);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: hodei-auditd [--data-dir DIR] [--events N] [--io auto|uring|sync] [--repair]\n"
		   "Runs the storage engine on its embedded defaults: appends, searches,\n"
		   "verifies, restarts and checks recovery. The gRPC server comes next.\n"
		   "--repair cuts a WAL at a corrupt record instead of refusing to start\n"
		   "(what follows the damage is dropped, loudly).\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = { { "data-dir", required_argument, 0, 'd' },
					       { "events", required_argument, 0, 'n' },
					       { "io", required_argument, 0, 'i' },
					       { "repair", no_argument, 0, 'r' },
					       { "help", no_argument, 0, 'h' },
					       { 0, 0, 0, 0 } };
	const char *dir = getenv("HODEI_DATA_DIR");
	uint64_t events = 400000;
	struct eng_config cfg;
	eng_config_default(&cfg);
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == 'd')
			dir = optarg;
		else if (c == 'n')
			events = strtoull(optarg, NULL, 10);
		else if (c == 'r')
			cfg.repair = true;
		else if (c == 'i' && !strcmp(optarg, "sync"))
			cfg.io = ENG_IO_SYNC;
		else if (c == 'i' && !strcmp(optarg, "uring"))
			cfg.io = ENG_IO_URING;
		else if (c == 'i' && !strcmp(optarg, "auto"))
			cfg.io = ENG_IO_AUTO;
		else {
			usage(c == 'h' ? stdout : stderr);
			return c == 'h' ? 0 : 2;
		}
	}
	char tmp[] = "/tmp/hodei-demo-XXXXXX";
	if (!dir && !(dir = mkdtemp(tmp))) {
		perror("mkdtemp");
		return 3;
	}
	cfg.data_dir = dir;
	cfg.seal_rows = 50000;
	struct eng_engine *eng;
	int64_t t0 = mono_ns();
	int rc = eng_open(&cfg, &eng);
	if (rc) {
		fprintf(stderr, "hodei-auditd: cannot open %s: %s\n", dir, fmt_strerror(rc));
		return 1;
	}
	struct eng_shard_stats st;
	eng_shard_stats(eng, 0, &st);
	printf("hodei-auditd: engine on %s, %u shards, I/O backend %s\n", dir, eng_shard_count(eng),
	       eng_io_backend_name((enum eng_io_backend)st.io_backend));
	int bad = ingest(eng, events);
	bad |= explore(eng);
	eng_close(eng);
	t0 = mono_ns();
	if ((rc = eng_open(&cfg, &eng)) != 0) {
		fprintf(stderr, "hodei-auditd: recovery failed: %s\n", fmt_strerror(rc));
		return 1;
	}
	printf("restarted: recovery took %.1f ms\n", (double)(mono_ns() - t0) / 1e6);
	bad |= explore(eng);
	eng_close(eng);
	if (dir == tmp && !bad) {
		/* A temporary directory that passed every check has nothing left to
		 * show; one that failed is kept for `hodei-audit verify`. */
		if (nftw(tmp, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0)
			printf("all checks passed; removed %s\n", dir);
		return 0;
	}
	printf("%s; data in %s\n", bad ? "FAILED" : "all checks passed", dir);
	return bad ? 1 : 0;
}
