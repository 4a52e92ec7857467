// SPDX-License-Identifier: Apache-2.0
/*
 * exporter.c — worker threads that move sealed segments to a target (see
 * exporter.h for the data flow and invariants X1–X4).
 *
 * Waking: a watcher thread polls the engine's seal eventfd and the
 * exporter's stop eventfd and bumps a generation under the exporter's
 * mutex, which the idle workers wait on (with poll_interval as a bound).
 * The mutex is never taken by a shard thread.
 */
#include "net/exporter.h"
#include "net/log.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

struct worker {
	struct exporter *x;
	uint32_t index;
	pthread_t thread;
	bool started;
};

struct exporter {
	struct eng_engine *eng;
	struct exporter_ops ops;
	struct exporter_config cfg;
	struct worker *workers;
	pthread_t watcher;
	bool watcher_started;
	int stop_fd;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	uint64_t wake_gen;              /* under mu */
	_Atomic bool stop;
	/* Metrics (relaxed atomics). */
	_Atomic uint64_t backlog_segments, backlog_bytes;
	_Atomic int64_t oldest_pending_ns;
	_Atomic uint64_t exported;
	_Atomic uint64_t errors[EXPORTER_ERROR_KINDS_MAX];
	_Atomic uint32_t ready;         /* workers whose last prepare succeeded */
	_Atomic bool listed;            /* a full listing has been done */
};

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

void exporter_config_default(struct exporter_config *cfg)
{
	*cfg = (struct exporter_config){
		.workers = 2,
		.poll_interval_ns = 1000 * 1000000ll,
		.backoff_min_ns = 200 * 1000000ll,
		.backoff_max_ns = 30 * 1000000000ll,
		.list_batch = 256,
	};
}

/* Waits until woken (a seal, a stop) or ns passed. */
static void wait_for(struct exporter *x, uint64_t *seen, int64_t ns)
{
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += ns / 1000000000ll;
	until.tv_nsec += ns % 1000000000ll;
	if (until.tv_nsec >= 1000000000l) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000l;
	}
	pthread_mutex_lock(&x->mu);
	while (!atomic_load(&x->stop) && x->wake_gen == *seen)
		if (pthread_cond_timedwait(&x->cond, &x->mu, &until) == ETIMEDOUT)
			break;
	*seen = x->wake_gen;
	pthread_mutex_unlock(&x->mu);
}

static void wake_all(struct exporter *x)
{
	pthread_mutex_lock(&x->mu);
	x->wake_gen++;
	pthread_cond_broadcast(&x->cond);
	pthread_mutex_unlock(&x->mu);
}

static void *watcher_main(void *arg)
{
	struct exporter *x = arg;
	struct pollfd pfd[2] = { { .fd = eng_seal_event_fd(x->eng), .events = POLLIN },
				 { .fd = x->stop_fd, .events = POLLIN } };
	while (!atomic_load(&x->stop)) {
		if (poll(pfd, 2, 1000) <= 0)
			continue;
		if (pfd[0].revents & POLLIN) {
			uint64_t n;
			(void)!read(pfd[0].fd, &n, sizeof(n));
			wake_all(x);
		}
	}
	return NULL;
}

/* Exponential backoff with full jitter in [b/2, b]. */
static int64_t backoff_next(const struct exporter_config *cfg, int64_t prev)
{
	int64_t b = prev ? prev * 2 : cfg->backoff_min_ns;
	if (b > cfg->backoff_max_ns)
		b = cfg->backoff_max_ns;
	return b;
}

static int64_t jitter(int64_t b)
{
	uint32_t r = 0;
	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
		r = (uint32_t)now_ns();
	return b / 2 + (int64_t)((double)(b / 2) * (r / 4294967296.0));
}

static void count_error(struct exporter *x, uint32_t kind)
{
	if (kind >= x->ops.error_kind_count || kind >= EXPORTER_ERROR_KINDS_MAX)
		kind = x->ops.error_kind_count ? x->ops.error_kind_count - 1 : 0;
	atomic_fetch_add_explicit(&x->errors[kind], 1, memory_order_relaxed);
}

/* One pass over every shard's pending segments. Returns 1 when something
 * was exported (look again at once), 0 when there was nothing for this
 * worker, -1 after a failure (back off). Without `export` it only counts
 * the backlog (while the target is unusable, the metrics stay true). */
static int pass(struct worker *w, struct eng_producer *p, void *conn, struct eng_export_item *items,
		bool export)
{
	struct exporter *x = w->x;
	uint32_t shards = eng_shard_count(x->eng), nw = x->cfg.workers;
	uint64_t backlog = 0, bytes = 0;
	int64_t oldest = 0;
	int result = 0;
	for (uint32_t sh = 0; sh < shards; sh++) {
		struct eng_export_list req = { .shard = sh, .kind = x->ops.kind, .items = items,
					       .cap = x->cfg.list_batch };
		int rc = eng_export_list_wait(p, &req);
		if (rc) {
			nlog(NLOG_WARN, NULL, "%s: cannot list shard %u: %s", x->ops.name, sh,
			     fmt_strerror(rc));
			return -1;
		}
		backlog += req.pending;
		bytes += req.pending_bytes;
		if (req.oldest_pending_ns && (!oldest || req.oldest_pending_ns < oldest))
			oldest = req.oldest_pending_ns;
		for (uint32_t i = 0; export && i < req.count && result >= 0 && !atomic_load(&x->stop);
		     i++) {
			const struct eng_export_item *it = &items[i];
			if (it->segment_id % nw != w->index)
				continue;
			char ref[ENG_EXPORT_REF_MAX + 1] = "", why[512] = "";
			uint32_t kind = 0;
			rc = x->ops.export_one(conn, it, ref, sizeof(ref), why, sizeof(why), &kind);
			if (rc) {
				count_error(x, kind);
				nlog(NLOG_WARN, &(struct nlog_fields){ .tenant = it->tenant, .code = -1 },
				     "%s: segment %016llx: %s", x->ops.name,
				     (unsigned long long)it->segment_id, why);
				result = -1;
				break;
			}
			struct eng_export_mark m = { .tenant = fmt_str_c(it->tenant),
						     .segment_id = it->segment_id, .kind = x->ops.kind,
						     .ref = fmt_str_c(ref) };
			rc = eng_export_mark_wait(p, &m);
			if (rc) {
				nlog(NLOG_ERROR, &(struct nlog_fields){ .tenant = it->tenant, .code = -1 },
				     "%s: segment %016llx exported but not recorded: %s", x->ops.name,
				     (unsigned long long)it->segment_id, fmt_strerror(rc));
				result = -1;
				break;
			}
			atomic_fetch_add_explicit(&x->exported, 1, memory_order_relaxed);
			nlog(NLOG_DEBUG, &(struct nlog_fields){ .tenant = it->tenant, .code = -1 },
			     "%s: segment %016llx done%s%s", x->ops.name,
			     (unsigned long long)it->segment_id, ref[0] ? ", version " : "", ref);
			result = 1;
		}
		if (result < 0)
			return -1;
	}
	/* The figures of this pass, taken before its own exports: the next
	 * pass refreshes them. */
	atomic_store(&x->backlog_segments, backlog);
	atomic_store(&x->backlog_bytes, bytes);
	atomic_store(&x->oldest_pending_ns, oldest);
	atomic_store(&x->listed, true);
	return result;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct exporter *x = w->x;
	struct eng_producer *p = NULL;
	struct eng_export_item *items = calloc(x->cfg.list_batch, sizeof(*items));
	void *conn = NULL;
	bool prepared = false, said_refused = false;
	int64_t backoff = 0;
	uint64_t seen = 0;
	while (!atomic_load(&x->stop)) {
		if (!p && (!items || eng_producer_open(x->eng, &p) != 0)) {
			p = NULL;
			wait_for(x, &seen, x->cfg.backoff_max_ns);
			continue;
		}
		if (!conn && !(conn = x->ops.worker_open(x->ops.ctx))) {
			backoff = backoff_next(&x->cfg, backoff);
			wait_for(x, &seen, jitter(backoff));
			continue;
		}
		if (!prepared) {
			char why[512] = "";
			uint32_t kind = 0;
			if (x->ops.prepare(conn, why, sizeof(why), &kind) != 0) {
				count_error(x, kind);
				if (!said_refused || nlog_get_level() >= NLOG_DEBUG)
					nlog(NLOG_ERROR, NULL, "%s: target not usable, segments stay local "
					     "and ingest goes on: %s", x->ops.name, why);
				said_refused = true;
				if (w->index == 0)
					pass(w, p, conn, items, false);
				backoff = backoff_next(&x->cfg, backoff);
				wait_for(x, &seen, jitter(backoff));
				continue;
			}
			if (said_refused)
				nlog(NLOG_INFO, NULL, "%s: target usable again", x->ops.name);
			said_refused = false;
			prepared = true;
			atomic_fetch_add(&x->ready, 1);
		}
		int r = pass(w, p, conn, items, true);
		if (r < 0) {
			/* Check the target again before the next try: a bucket
			 * may have lost its versioning, a table its database. */
			prepared = false;
			atomic_fetch_sub(&x->ready, 1);
			backoff = backoff_next(&x->cfg, backoff);
			wait_for(x, &seen, jitter(backoff));
			continue;
		}
		backoff = 0;
		if (r == 0)
			wait_for(x, &seen, x->cfg.poll_interval_ns);
	}
	if (prepared)
		atomic_fetch_sub(&x->ready, 1);
	if (conn)
		x->ops.worker_close(conn);
	if (p)
		eng_producer_close(p);
	free(items);
	return NULL;
}

int exporter_start(struct eng_engine *eng, const struct exporter_ops *ops,
		   const struct exporter_config *cfg, struct exporter **out)
{
	if (cfg->workers < 1 || cfg->workers > 64 || cfg->list_batch < 1 ||
	    cfg->backoff_min_ns <= 0 || cfg->backoff_max_ns < cfg->backoff_min_ns ||
	    cfg->poll_interval_ns <= 0 || ops->error_kind_count > EXPORTER_ERROR_KINDS_MAX)
		return -EINVAL;
	struct exporter *x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	x->eng = eng;
	x->ops = *ops;
	x->cfg = *cfg;
	pthread_mutex_init(&x->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&x->cond, &ca);
	pthread_condattr_destroy(&ca);
	x->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	x->workers = calloc(cfg->workers, sizeof(*x->workers));
	int rc = x->stop_fd < 0 || !x->workers ? -ENOMEM : 0;
	if (!rc)
		rc = -pthread_create(&x->watcher, NULL, watcher_main, x);
	x->watcher_started = rc == 0;
	for (uint32_t i = 0; !rc && i < cfg->workers; i++) {
		x->workers[i] = (struct worker){ .x = x, .index = i };
		rc = -pthread_create(&x->workers[i].thread, NULL, worker_main, &x->workers[i]);
		x->workers[i].started = rc == 0;
		char name[16];
		snprintf(name, sizeof(name), "hodei-%.6s%u", ops->name, i);
		if (!rc)
			pthread_setname_np(x->workers[i].thread, name);
	}
	if (rc) {
		exporter_stop(x);
		return rc;
	}
	*out = x;
	return 0;
}

void exporter_stop(struct exporter *x)
{
	if (!x)
		return;
	atomic_store(&x->stop, true);
	if (x->stop_fd >= 0) {
		uint64_t one = 1;
		(void)!write(x->stop_fd, &one, sizeof(one));
	}
	wake_all(x);
	for (uint32_t i = 0; x->workers && i < x->cfg.workers; i++)
		if (x->workers[i].started)
			pthread_join(x->workers[i].thread, NULL);
	if (x->watcher_started)
		pthread_join(x->watcher, NULL);
	if (x->stop_fd >= 0)
		close(x->stop_fd);
	free(x->workers);
	pthread_cond_destroy(&x->cond);
	pthread_mutex_destroy(&x->mu);
	free(x);
}

bool exporter_idle(const struct exporter *x)
{
	return atomic_load(&((struct exporter *)x)->listed) &&
	       atomic_load(&((struct exporter *)x)->backlog_segments) == 0 &&
	       atomic_load(&((struct exporter *)x)->ready) > 0;
}

int exporter_render_metrics(struct exporter *x, struct mx_buf *b)
{
	char name[128];
	const char *p = x->ops.metric_prefix;
#define FAMILY(sfx, type, help)                                  \
	snprintf(name, sizeof(name), "%s_%s", p, sfx);           \
	mx_family(b, name, type, help)
	FAMILY("backlog_segments", "gauge", "Sealed segments not exported yet.");
	mx_sample_u64(b, name, NULL, 0, atomic_load(&x->backlog_segments));
	FAMILY("backlog_bytes", "gauge", "Bytes of sealed segments not exported yet.");
	mx_sample_u64(b, name, NULL, 0, atomic_load(&x->backlog_bytes));
	int64_t oldest = atomic_load(&x->oldest_pending_ns);
	double lag = oldest ? (double)(now_ns() - oldest) / 1e9 : 0;
	FAMILY("lag_seconds", "gauge",
	       "Age of the newest event of the oldest segment not exported yet (0: none waits).");
	mx_sample_f64(b, name, NULL, 0, lag > 0 ? lag : 0);
	FAMILY("segments_total", "counter", "Segments exported and recorded in the manifest.");
	mx_sample_u64(b, name, NULL, 0, atomic_load(&x->exported));
	FAMILY("errors_total", "counter", "Failed exports and target checks, by kind.");
	for (uint32_t k = 0; k < x->ops.error_kind_count; k++) {
		struct mx_label l[] = { { "kind", x->ops.error_kinds[k] } };
		mx_sample_u64(b, name, l, 1, atomic_load(&x->errors[k]));
	}
	FAMILY("ready", "gauge", "1 when the target was usable at the last check.");
	mx_sample_u64(b, name, NULL, 0, atomic_load(&x->ready) > 0 ? 1 : 0);
	FAMILY("workers", "gauge", "Export threads (exports in flight at most).");
	mx_sample_u64(b, name, NULL, 0, x->cfg.workers);
#undef FAMILY
	return mx_buf_err(b);
}
