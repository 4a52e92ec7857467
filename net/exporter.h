/* SPDX-License-Identifier: Apache-2.0
 *
 * exporter.h — the threads that take sealed segments off the node: the S3
 * replicator and the ClickHouse mirror are two exporters (DESIGN.md §2.6,
 * §2.7, §8). An exporter knows nothing of S3 or ClickHouse; its ops do.
 *
 * Data flow, per worker thread:
 *
 *   wait (a seal happened, or poll_interval passed)
 *     ─▶ prepare() until the target is usable (bucket exists and is
 *        versioned; schema created) — refused: log, metric, retry later,
 *        ingest goes on locally
 *     ─▶ export list request to every shard (engine/export.c) ─▶ the items
 *        this worker owns (segment_id mod workers)
 *     ─▶ export_one() on the worker's own connection (blocking network I/O,
 *        never on a shard thread) ─▶ export mark request ─▶ the shard makes
 *        it durable ─▶ next item
 *     ─▶ on failure: the error's kind is counted, the worker backs off
 *        exponentially with jitter (backoff_min..backoff_max) and retries.
 *
 * Invariants:
 *  X1 A segment is marked only after export_one() confirmed it, and the
 *     mark is durable before the worker moves on: after a crash, a segment
 *     is either marked or listed again.
 *  X2 export_one() must be idempotent: a segment exported but not marked
 *     (crash in between) is exported again, and that must not duplicate it
 *     (S3: HEAD with our checksum first; ClickHouse: count by segment
 *     first).
 *  X3 Uploads in flight are bounded by the number of workers.
 *  X4 The engine never waits for an exporter: a dead target only grows the
 *     backlog (the disk budget refuses appends when it is full).
 */
#ifndef HODEI_NET_EXPORTER_H
#define HODEI_NET_EXPORTER_H

#include "engine/engine.h"
#include "net/metrics.h"

#include <stddef.h>

#define EXPORTER_ERROR_KINDS_MAX 16

struct exporter_ops {
	const char *name;          /* "replicator", "mirror": logs */
	const char *metric_prefix; /* "hodei_replication", "hodei_mirror" */
	enum eng_export_kind kind;
	void *ctx;
	/* Error kinds export_one / prepare may report, by index (labels of
	 * <prefix>_errors_total{kind}). */
	const char *const *error_kinds;
	uint32_t error_kind_count;
	/* A worker's own state (a connection); NULL return: the worker retries
	 * later. */
	void *(*worker_open)(void *ctx);
	void (*worker_close)(void *worker);
	/* Whether the target is usable; 0, or an error (why filled, *kind set). */
	int (*prepare)(void *worker, char *why, size_t why_cap, uint32_t *kind);
	/* Exports one segment (X2). 0 and ref (e.g. the S3 version id, may be
	 * empty), or an error with why and *kind. */
	int (*export_one)(void *worker, const struct eng_export_item *it, char *ref, size_t ref_cap,
			  char *why, size_t why_cap, uint32_t *kind);
};

struct exporter_config {
	uint32_t workers;            /* threads, each one export in flight (X3) */
	int64_t poll_interval_ns;    /* look for work at least this often */
	int64_t backoff_min_ns;      /* first wait after a failure */
	int64_t backoff_max_ns;      /* cap of the exponential backoff */
	uint32_t list_batch;         /* items asked of a shard per list request */
};

void exporter_config_default(struct exporter_config *cfg);

struct exporter;

/* Starts the workers. ops and cfg are copied. Returns 0 or -errno. */
int exporter_start(struct eng_engine *eng, const struct exporter_ops *ops,
		   const struct exporter_config *cfg, struct exporter **out);
/* Stops the workers (an export in progress finishes or fails first). */
void exporter_stop(struct exporter *x);

/* <prefix>_backlog_segments, _backlog_bytes, _lag_seconds, _segments_total,
 * _errors_total{kind}, _ready, _workers. */
int exporter_render_metrics(struct exporter *x, struct mx_buf *b);

/* True when the target was usable at the last prepare and no segment waits
 * (for tests and /readyz-like checks). */
bool exporter_idle(const struct exporter *x);

#endif
