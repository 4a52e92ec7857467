/* SPDX-License-Identifier: Apache-2.0
 *
 * engine_test_util.h — helpers shared by the engine's unit tests: a fresh
 * data directory per test (and its removal), realistic events, and
 * synchronous appends.
 */
#ifndef HODEI_TESTS_ENGINE_UTIL_H
#define HODEI_TESTS_ENGINE_UTIL_H

#include "engine/engine.h"

#include <criterion/criterion.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static inline int64_t eng_now_ns_for_tests(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void tu_tmpdir(char *out, size_t cap)
{
	const char *base = getenv("HODEI_TEST_TMP");
	snprintf(out, cap, "%s/eng-XXXXXX", base && *base ? base : "/tmp");
	if (!mkdtemp(out))
		abort();
}

static inline int tu_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Removes a directory tree (one tu_tmpdir() made). */
static inline void tu_rmtree(const char *dir)
{
	nftw(dir, tu_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* The whole file at path, malloc'ed; aborts when it cannot be read. */
static inline uint8_t *tu_read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		perror(path);
		abort();
	}
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
	if (n < 0 || !buf || fread(buf, 1, (size_t)n, f) != (size_t)n)
		abort();
	fclose(f);
	*len = (size_t)n;
	return buf;
}

/* Replaces the file at path with buf; aborts when it cannot. */
static inline void tu_write_file(const char *path, const uint8_t *buf, size_t len)
{
	FILE *f = fopen(path, "wb");
	if (!f) {
		perror(path);
		abort();
	}
	if (fwrite(buf, 1, len, f) != len || fclose(f) != 0)
		abort();
}

/* An event with stable, readable content derived from i. Strings live in
 * the caller's `store` (>= 256 bytes) for the event's lifetime. */
static inline void tu_event(struct fmt_event *ev, char *store, uint32_t i)
{
	memset(ev, 0, sizeof(*ev));
	int n = snprintf(store, 256, "user-%u", i % 7);
	ev->str[FMT_F_ACTOR_ID] = (struct fmt_str){ store, (uint32_t)n };
	const char *action = (i % 3 == 0) ? "document.delete" : "document.read";
	ev->str[FMT_F_ACTION] = fmt_str_c(action);
	ev->str[FMT_F_RESOURCE_TYPE] = fmt_str_c("document");
	int m = snprintf(store + 64, 128, "doc-%u", i);
	ev->str[FMT_F_RESOURCE_ID] = (struct fmt_str){ store + 64, (uint32_t)m };
	ev->str[FMT_F_SOURCE_IP] = fmt_str_c("10.1.2.3");
	ev->outcome = 1 + i % 3;
	ev->occurred_at_ns = 1700000000000000000ll + (int64_t)i * 1000;
	for (int k = 0; k < 16; k++)
		ev->event_id[k] = (uint8_t)((i * 2654435761u) >> (k % 4 * 8)) ^ (uint8_t)k;
	ev->event_id[15] = (uint8_t)i;
	ev->event_id[14] = (uint8_t)(i >> 8);
	ev->event_id[13] = (uint8_t)(i >> 16);
	ev->event_id[12] = 0xA5;
}

static inline struct eng_engine *tu_open(const char *dir, struct eng_config *cfg)
{
	cfg->data_dir = dir;
	struct eng_engine *eng = NULL;
	int rc = eng_open(cfg, &eng);
	if (rc != 0) {
		fprintf(stderr, "eng_open: %s\n", fmt_strerror(rc));
		return NULL;
	}
	return eng;
}

/* Appends events [first, first + n) to tenant as one batch. */
static inline int tu_append(struct eng_producer *p, const char *tenant, uint32_t first, uint32_t n,
			    struct eng_append *req)
{
	struct fmt_event *evs = calloc(n, sizeof(*evs));
	char *store = calloc(n, 256);
	for (uint32_t i = 0; i < n; i++)
		tu_event(&evs[i], store + 256 * i, first + i);
	memset(req, 0, sizeof(*req));
	req->tenant = fmt_str_c(tenant);
	req->events = evs;
	req->count = n;
	int rc = eng_append_wait(p, req);
	free(evs);
	free(store);
	return rc;
}

/* Shard `shard`'s stats once they count everything that completed before
 * the call: the shard publishes them once per turn of its loop, so two
 * more publishes are enough. Waits as long as the machine needs (a busy
 * host under sanitizers can starve the shard thread for a while). */
static inline void tu_stats_settled(struct eng_engine *eng, uint32_t shard,
				    struct eng_shard_stats *st)
{
	eng_shard_stats(eng, shard, st);
	uint64_t want = st->publishes + 2;
	for (int waited_ms = 0; st->publishes < want; waited_ms++) {
		cr_assert_lt(waited_ms, 120000, "shard %u published no stats in 120 s", shard);
		usleep(1000);
		eng_shard_stats(eng, shard, st);
	}
}

/* Waits (up to ~5 s) until shard `shard` sealed at least n segments, since
 * seals are asynchronous; returns how many it sealed. */
static inline uint64_t tu_wait_sealed(struct eng_engine *eng, uint32_t shard, uint64_t n)
{
	struct eng_shard_stats st;
	for (int i = 0; i < 500; i++) {
		eng_shard_stats(eng, shard, &st);
		if (st.segments_sealed >= n)
			break;
		usleep(10000);
	}
	return st.segments_sealed;
}

#endif
