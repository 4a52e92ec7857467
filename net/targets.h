/* SPDX-License-Identifier: Apache-2.0
 *
 * targets.h — the two places sealed segments go (DESIGN.md §8), as
 * exporter ops (net/exporter.h):
 *
 *   replicator  S3 (net/s3.h): at start and after failures the bucket must
 *               exist with versioning Enabled, else nothing is uploaded
 *               (loudly: log, hodei_replication_ready 0,
 *               hodei_replication_versioning_enabled 0) and ingest goes on
 *               locally. A segment goes to <prefix>/segments/<tenant>/<yyyy>
 *               /<mm>/<dd>/<id>.hseg (the UTC date of its first received
 *               event) with Content-MD5 on every request (the server
 *               verifies it) and its XXH3 in x-amz-meta-hodei-xxh3. Before
 *               uploading, a HEAD: an object with our checksum and size is
 *               the upload of a run that crashed before its mark, and its
 *               version id is recorded without a new version (X2).
 *   mirror      ClickHouse (net/clickhouse.h): ch_mirror_segment's
 *               count-then-insert protocol makes every export idempotent.
 *
 * Both read the segment from its local file, which stays until the
 * segment is replicated (retention comes later).
 */
#ifndef HODEI_NET_TARGETS_H
#define HODEI_NET_TARGETS_H

#include "net/clickhouse.h"
#include "net/exporter.h"
#include "net/s3.h"

#include <pthread.h>
#include <stdatomic.h>

struct replicator_ctx {
	struct s3_config cfg;
	const atomic_bool *cancel;         /* set at shutdown: transfers stop */
	_Atomic int versioning;            /* enum s3_versioning, 0 = not checked yet */
	_Atomic uint64_t reused;           /* uploads found already there (HEAD) */
};

/* Fills ops for S3; ctx must outlive the exporter. */
void replicator_ops(struct replicator_ctx *ctx, struct exporter_ops *ops);
/* hodei_replication_versioning_enabled, _bucket_info, _reused_total. */
int replicator_render_metrics(struct replicator_ctx *ctx, struct mx_buf *b);

/* Reads back segments that live only in S3 (local retention passed), for
 * the engine's eng_fetcher: the shard queues a request (never blocks), a
 * worker GETs the recorded version into dest_path + ".tmp", checks its
 * size and XXH3 against the manifest, renames it and reports to the
 * engine. The queue is bounded; a full queue fails the read (the caller
 * retries). */
#define FETCHER_QUEUE_MAX 256
#define FETCHER_WORKERS 2

struct fetcher {
	struct s3_config cfg;
	const atomic_bool *cancel;
	struct eng_engine *_Atomic eng;     /* set once the engine is open */
	pthread_mutex_t mu;
	pthread_cond_t cond;
	struct eng_fetch_req queue[FETCHER_QUEUE_MAX];
	uint32_t head, count;
	bool stop;
	pthread_t threads[FETCHER_WORKERS];
	uint32_t started;
	_Atomic uint64_t fetched, failed, bytes;
};

/* Starts the workers; returns 0 or -errno. f->cfg must be set. */
int fetcher_start(struct fetcher *f);
void fetcher_stop(struct fetcher *f);
/* The engine side of it (eng_config.fetcher). */
struct eng_fetcher fetcher_ops(struct fetcher *f);
int fetcher_render_metrics(struct fetcher *f, struct mx_buf *b);

struct mirror_ctx {
	struct ch_config cfg;
	_Atomic uint64_t rows_inserted, rows_present;
};

void mirror_ops(struct mirror_ctx *ctx, struct exporter_ops *ops);
int mirror_render_metrics(struct mirror_ctx *ctx, struct mx_buf *b);

#endif
