// SPDX-License-Identifier: Apache-2.0
/*
 * helper.c — a shard's query helpers: threads that decode the blocks a
 * query needs beside the shard thread, so that a Search whose hits lie in
 * several cold blocks, or in one, is not bound to one core's zstd.
 *
 * Data flow. The shard thread (read.c, eng_query_blocks) reads the stored
 * chunks of the blocks a query wants into its own buffer and describes
 * each decode as a job: a footer, a block, a column mask, the chunk bytes.
 * eng_decode_jobs_run() offers the batch to the helpers, takes jobs
 * itself from the same counter, and returns once every job is done; the
 * shard thread then merges, checks and caches the blocks as before. A
 * helper touches nothing but its jobs: immutable footers and chunk bytes
 * that the shard thread keeps alive until the batch is over (it does no
 * other work meanwhile), and the job's own result fields. Nothing else of
 * the shard is shared, so the shard stays the owner of its tenants, its
 * caches and its files (DESIGN.md §3): a helper is a pair of hands, not
 * a second owner.
 *
 * Invariants:
 *  H1 A job is run exactly once: its index comes from one fetch-add on
 *     `next`, by whichever thread gets it.
 *  H2 When eng_decode_jobs_run() returns, no helper runs a job of that
 *     batch and none will: the offer is withdrawn (jobs = NULL) under the
 *     lock and the shard thread waits until no helper is busy. A helper
 *     reads the offer only under the lock, so one that wakes late finds
 *     nothing; results written by a helper are published by its unlock
 *     (busy = false) before the shard thread reads them.
 *  H3 A helper never blocks the shard thread for longer than the job it
 *     is running: a helper that has not woken yet is not waited for (the
 *     shard thread runs every job itself then).
 *
 * Count: cfg.query_helpers per shard (0: none, every job runs on the shard
 * thread). Each helper has its own zstd context (fmt_decoder). Counted in
 * the shard's stats: query_decode_jobs (jobs of batches offered to
 * helpers) and query_decode_jobs_helped (those a helper ran).
 */
#include "engine/internal.h"

#include <stdio.h>
#include <stdlib.h>

struct eng_helper {
	struct eng_shard *s;
	pthread_t thread;
	struct fmt_decoder *decoder;
};

static void job_run(struct fmt_decoder *d, struct eng_decode_job *j)
{
	j->rc = fmt_block_decode_with(d, j->footer, j->block, j->mask, j->chunks, &j->out);
}

/* Takes jobs of the batch until none is left; returns how many it ran. */
static uint32_t jobs_take(struct eng_helpers *h, struct eng_decode_job *jobs, uint32_t n,
			  struct fmt_decoder *d)
{
	uint32_t ran = 0;
	for (;;) {
		uint32_t i = atomic_fetch_add_explicit(&h->next, 1, memory_order_relaxed);
		if (i >= n)
			return ran;
		job_run(d, &jobs[i]);
		ran++;
	}
}

static void *helper_main(void *arg)
{
	struct eng_helper *me = arg;
	struct eng_helpers *h = &me->s->helpers;
	uint64_t seen = 0;
	eng_thread_slice_ask(me->s, "query helper", me->s->eng->cfg.thread_slice_ns);
	pthread_mutex_lock(&h->mu);
	for (;;) {
		while (!h->stop && (!h->jobs || h->gen == seen))
			pthread_cond_wait(&h->work, &h->mu);
		if (h->stop)
			break;
		seen = h->gen;
		struct eng_decode_job *jobs = h->jobs;
		uint32_t n = h->job_count;
		h->busy++;
		pthread_mutex_unlock(&h->mu);
		uint32_t ran = jobs_take(h, jobs, n, me->decoder);
		pthread_mutex_lock(&h->mu);
		h->ran += ran;
		if (--h->busy == 0)
			pthread_cond_signal(&h->idle);
	}
	pthread_mutex_unlock(&h->mu);
	return NULL;
}

int eng_helpers_start(struct eng_shard *s)
{
	struct eng_helpers *h = &s->helpers;
	uint32_t want = s->eng->cfg.query_helpers;
	ASSERT(h->count == 0 && !h->all);
	if (want == 0)
		return 0;
	pthread_mutex_init(&h->mu, NULL);
	pthread_cond_init(&h->work, NULL);
	pthread_cond_init(&h->idle, NULL);
	h->inited = true;
	h->all = calloc(want, sizeof(*h->all));
	if (!h->all)
		return FMT_E_NOMEM;
	for (uint32_t i = 0; i < want; i++) {
		struct eng_helper *me = &h->all[i];
		me->s = s;
		if (fmt_decoder_new(&me->decoder) != 0)
			return FMT_E_NOMEM;
		int rc = pthread_create(&me->thread, NULL, helper_main, me);
		if (rc) {
			fmt_decoder_free(me->decoder);
			me->decoder = NULL;
			return -rc;
		}
		h->count++;
		char name[16];
		snprintf(name, sizeof(name), "hodei-help%u", s->id);
		pthread_setname_np(me->thread, name);
	}
	return 0;
}

int eng_helpers_pin(struct eng_shard *s, const cpu_set_t *cpus)
{
	struct eng_helpers *h = &s->helpers;
	int first = 0;
	for (uint32_t i = 0; i < h->count; i++) {
		int rc = pthread_setaffinity_np(h->all[i].thread, sizeof(*cpus), cpus);
		first = first ? first : rc;
	}
	return first;
}

void eng_helpers_stop(struct eng_shard *s)
{
	struct eng_helpers *h = &s->helpers;
	if (!h->inited)
		return;
	pthread_mutex_lock(&h->mu);
	h->stop = true;
	pthread_cond_broadcast(&h->work);
	pthread_mutex_unlock(&h->mu);
	for (uint32_t i = 0; i < h->count; i++) {
		pthread_join(h->all[i].thread, NULL);
		fmt_decoder_free(h->all[i].decoder);
	}
	free(h->all);
	pthread_mutex_destroy(&h->mu);
	pthread_cond_destroy(&h->work);
	pthread_cond_destroy(&h->idle);
	memset(h, 0, sizeof(*h));
}

void eng_decode_jobs_run(struct eng_shard *s, struct eng_decode_job *jobs, uint32_t n)
{
	struct eng_helpers *h = &s->helpers;
	if (h->count == 0 || n < 2) {
		for (uint32_t i = 0; i < n; i++)
			job_run(s->decoder, &jobs[i]);
		return;
	}
	pthread_mutex_lock(&h->mu);
	h->jobs = jobs;
	h->job_count = n;
	atomic_store_explicit(&h->next, 0, memory_order_relaxed);
	h->gen++;
	h->ran = 0;
	if (n > 2)
		pthread_cond_broadcast(&h->work);
	else
		pthread_cond_signal(&h->work); /* one job for us, one for a helper */
	pthread_mutex_unlock(&h->mu);
	jobs_take(h, jobs, n, s->decoder);
	pthread_mutex_lock(&h->mu);
	h->jobs = NULL; /* H2: a helper that wakes from now on finds nothing */
	while (h->busy)
		pthread_cond_wait(&h->idle, &h->mu);
	uint32_t helped = h->ran;
	pthread_mutex_unlock(&h->mu);
	s->stats.query_decode_jobs += n;
	s->stats.query_decode_jobs_helped += helped;
}
