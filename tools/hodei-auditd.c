// SPDX-License-Identifier: Apache-2.0
/*
 * hodei-auditd.c — the server (DESIGN.md §6).
 *
 * Start-up, in this order, so that every step is observable:
 *   1. configuration: flags, else HODEI_* environment variables, else the
 *      embedded defaults (`--help` lists all three);
 *   2. the keys file: created on first start with one admin key for tenant
 *      "default", printed once on stdout;
 *   3. the gRPC listeners are bound (the port is known from here on) and
 *      the admin port starts: /healthz answers, /readyz says "recovering";
 *   4. the engine recovers and starts its shard threads, which also run
 *      the gRPC connections (net/server.c); /readyz turns 200;
 *   5. the main thread waits for signals: SIGHUP re-reads the keys file,
 *      SIGTERM/SIGINT drain (not ready at once, new calls UNAVAILABLE,
 *      calls in flight answered) and exit 0 within the grace period.
 *
 * Every signal is blocked in every thread and read by the main thread from
 * a signalfd, so no handler ever runs inside the data path.
 */
#include "engine/engine.h"
#include "net/admin.h"
#include "net/auth.h"
#include "net/json_check.h"
#include "net/log.h"
#include "net/server.h"
#include "net/targets.h"
#include "net/units.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#ifndef HODEI_VERSION
#define HODEI_VERSION "0.1.0"
#endif

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

struct daemon {
	struct eng_config eng_cfg;
	struct srv_config srv_cfg;
	char data_dir[PATH_MAX];
	char keys_file[PATH_MAX];
	char admin_listen[256];
	char grpc_listen[256];
	char tls_cert[PATH_MAX], tls_key[PATH_MAX];   /* "": none */
	int64_t grace_ns;
	enum nlog_level log_level;
	struct eng_engine *eng;
	struct srv *srv;
	struct admin *admin;
	_Atomic int phase; /* enum phase */
	/* Sealed segments leaving the node (issue #4). */
	uint32_t replication_workers, mirror_workers;
	struct replicator_ctx s3;
	struct mirror_ctx ch;
	struct exporter *replicator, *mirror;
	struct fetcher fetcher;
	bool fetcher_started;
	int mirror_lock_fd;
	atomic_bool cancel;
};

enum phase { PHASE_RECOVERING = 0, PHASE_SERVING = 1, PHASE_DRAINING = 2, PHASE_FAILED = 3 };

/* ---- configuration ------------------------------------------------------- */

enum opt_kind { O_STR, O_STR_OPT, O_U32, O_SIZE, O_DUR, O_IO, O_LEVEL, O_BOOL, O_ENV };

struct opt {
	const char *flag;  /* without "--" */
	const char *env;
	enum opt_kind kind;
	size_t off;        /* into struct daemon */
	size_t cap;        /* O_STR, O_STR_OPT (may be empty): buffer size;
			    * O_SIZE: the field's width (4 or 8 bytes) */
	const char *help;
};

#define D(field) offsetof(struct daemon, field)
/* An O_SIZE option: its width comes from the field it sets. */
#define SIZE(field) O_SIZE, D(field), sizeof(((struct daemon *)0)->field)

static const struct opt opts[] = {
	{ "data-dir", "HODEI_DATA_DIR", O_STR, D(data_dir), PATH_MAX, "data directory (./hodei-data)" },
	{ "grpc-listen", "HODEI_GRPC_LISTEN", O_STR, D(grpc_listen), 256,
	  "gRPC address host:port (127.0.0.1:50051)" },
	{ "admin-listen", "HODEI_ADMIN_LISTEN", O_STR, D(admin_listen), 256,
	  "admin HTTP address ip:port: /metrics /healthz /readyz (127.0.0.1:8080)" },
	{ "shards", "HODEI_SHARDS", O_U32, D(eng_cfg.shards), 0, "shard threads (0: one per core)" },
	{ "keys-file", "HODEI_KEYS_FILE", O_STR, D(keys_file), PATH_MAX, "API keys file (<data-dir>/keys)" },
	{ "io", "HODEI_IO", O_IO, D(eng_cfg.io), 0, "auto (io_uring, else syscalls), uring or sync" },
	{ "tls-cert", "HODEI_TLS_CERT", O_STR_OPT, D(tls_cert), PATH_MAX,
	  "TLS certificate chain (PEM); none: h2c" },
	{ "tls-key", "HODEI_TLS_KEY", O_STR_OPT, D(tls_key), PATH_MAX, "TLS private key (PEM)" },
	{ "seal-age", "HODEI_SEAL_AGE", O_DUR, D(eng_cfg.seal_age_ns), 0, "seal a tenant's data this old (60s)" },
	{ "seal-rows", "HODEI_SEAL_ROWS", O_U32, D(eng_cfg.seal_rows), 0, "... or at this many rows (500000)" },
	{ "seal-bytes", "HODEI_SEAL_BYTES", SIZE(eng_cfg.seal_bytes), "... or this many bytes (64MiB)" },
	{ "seal-write-step", "HODEI_SEAL_WRITE_STEP", SIZE(eng_cfg.seal_write_step_bytes),
	  "write a seal round's segments in steps this big, each written back before the next (256KiB; 0: at once)" },
	{ "thread-slice", "HODEI_THREAD_SLICE", O_DUR, D(eng_cfg.thread_slice_ns), 0,
	  "scheduler slice the shard threads and query helpers ask for, so that they preempt "
	  "longer-slice threads at wakeup (0: the kernel's; 100us..100ms; Linux 6.12+)" },
	{ "seal-slice", "HODEI_SEAL_SLICE", O_DUR, D(eng_cfg.seal_slice_ns), 0,
	  "scheduler slice the seal workers ask for (0: the kernel's; 100us..100ms; Linux 6.12+)" },
	{ "block-rows", "HODEI_BLOCK_ROWS", O_U32, D(eng_cfg.block_rows), 0,
	  "rows per block of a new segment: a search decodes whole blocks (512)" },
	{ "open-segments", "HODEI_OPEN_SEGMENTS", O_U32, D(eng_cfg.open_segments_max), 0,
	  "per shard: segment files and footers kept open (1024)" },
	{ "footer-cache-bytes", "HODEI_FOOTER_CACHE_BYTES", SIZE(eng_cfg.footer_cache_bytes),
	  "per shard: segment footers (filters, zone maps, counts) kept in memory (64MiB)" },
	{ "block-cache-bytes", "HODEI_BLOCK_CACHE_BYTES", SIZE(eng_cfg.block_cache_bytes),
	  "per shard: decoded segment blocks kept in memory for the next query (64MiB; 0: off)" },
	{ "query-helpers", "HODEI_QUERY_HELPERS", O_U32, D(eng_cfg.query_helpers), 0,
	  "per shard: threads that decode a query's blocks beside the shard thread (1; 0: none; max 8)" },
	{ "dedup-window", "HODEI_DEDUP_WINDOW", O_DUR, D(eng_cfg.dedup_window_ns), 0,
	  "event_id dedup window (15m)" },
	{ "memtable-budget", "HODEI_MEMTABLE_BUDGET", SIZE(eng_cfg.memtable_budget_bytes),
	  "unsealed events per shard before appends are refused (512MiB)" },
	{ "wal-retain", "HODEI_WAL_RETAIN", SIZE(eng_cfg.wal_retain_bytes),
	  "per shard: WAL kept for unsealed events; older ones are sealed (512MiB)" },
	{ "wal-recycle-files", "HODEI_WAL_RECYCLE_FILES", O_U32, D(eng_cfg.wal_recycle_files), 0,
	  "per shard: retired WAL files kept to be overwritten, so that a commit changes no "
	  "file size (2; 0: delete them; max 64)" },
	{ "disk-budget", "HODEI_DISK_BUDGET", SIZE(eng_cfg.disk_budget_bytes),
	  "WAL + local segments before appends are refused (0: no limit)" },
	{ "disk-reserve", "HODEI_DISK_RESERVE", SIZE(eng_cfg.disk_reserve_bytes),
	  "free space kept on the data file system; below it appends are refused (256MiB)" },
	{ "tenants-max", "HODEI_TENANTS_MAX", O_U32, D(eng_cfg.tenants_max), 0, "tenants per shard" },
	{ "tenant-rate", "HODEI_TENANT_RATE", O_U32, D(eng_cfg.tenant_rate_eps), 0,
	  "events/s one tenant may append; over it RESOURCE_EXHAUSTED (0: no limit)" },
	{ "tenant-burst", "HODEI_TENANT_BURST", O_U32, D(eng_cfg.tenant_burst), 0,
	  "events a tenant may append at once above its rate (0: max(rate, max-events))" },
	{ "count-groups-max", "HODEI_COUNT_GROUPS_MAX", O_U32, D(eng_cfg.count_groups_max), 0,
	  "distinct keys one Count may return; more is RESOURCE_EXHAUSTED (10000)" },
	{ "count-scan-rows-max", "HODEI_COUNT_SCAN_ROWS_MAX", O_U32, D(eng_cfg.count_scan_rows_max), 0,
	  "events one Count may examine; more is RESOURCE_EXHAUSTED (10000000; 0: no limit)" },
	{ "max-events", "HODEI_MAX_EVENTS", O_U32, D(eng_cfg.limits.events_per_batch_max), 0,
	  "events per request (10000)" },
	{ "max-message-bytes", "HODEI_MAX_MESSAGE_BYTES", SIZE(srv_cfg.max_message_bytes),
	  "largest gRPC message (4MiB)" },
	{ "max-connections", "HODEI_MAX_CONNECTIONS", O_U32, D(srv_cfg.max_connections), 0,
	  "gRPC connections open at once (1024)" },
	{ "max-streams", "HODEI_MAX_STREAMS", O_U32, D(srv_cfg.max_streams), 0,
	  "concurrent streams per connection (100)" },
	{ "conn-window-bytes", "HODEI_CONN_WINDOW_BYTES", SIZE(srv_cfg.conn_window_bytes),
	  "request bytes one connection may have buffered (16MiB)" },
	{ "stream-inflight", "HODEI_STREAM_INFLIGHT", O_U32, D(srv_cfg.stream_inflight_max), 0,
	  "AppendStream requests of one stream in the engine at once (16)" },
	{ "tenant-labels-max", "HODEI_TENANT_LABELS_MAX", O_U32, D(srv_cfg.tenant_labels_max), 0,
	  "tenants with their own metrics label, the rest is \"other\" (1000)" },
	{ "idle-timeout", "HODEI_IDLE_TIMEOUT", O_DUR, D(srv_cfg.idle_timeout_ns), 0,
	  "close a connection without streams after (5m)" },
	{ "request-timeout", "HODEI_REQUEST_TIMEOUT", O_DUR, D(srv_cfg.request_timeout_ns), 0,
	  "a request or TLS handshake must arrive within (30s)" },
	{ "slow-query", "HODEI_SLOW_QUERY", O_DUR, D(srv_cfg.slow_query_ns), 0,
	  "log each Search or Count that takes at least this long, with where its time went "
	  "(100ms; 0s: never)" },
	{ "slow-commit", "HODEI_SLOW_COMMIT", O_DUR, D(eng_cfg.slow_commit_ns), 0,
	  "log a WAL commit (write and fdatasync) that takes at least this long, with what the "
	  "shard's other I/O did meanwhile; one line per shard and second at most (100ms; 0s: never)" },
	{ "log-rate", "HODEI_LOG_RATE", O_U32, D(srv_cfg.log_lines_per_s), 0,
	  "refusal and slow-query log lines per shard and second; more are counted, not written (20)" },
	{ "grace", "HODEI_GRACE", O_DUR, D(grace_ns), 0, "SIGTERM: time to finish calls in flight (10s)" },
	{ "s3-endpoint", "HODEI_S3_ENDPOINT", O_ENV, 0, 0,
	  "S3-compatible endpoint URL (none: AWS for the region)" },
	{ "s3-bucket", "HODEI_S3_BUCKET", O_ENV, 0, 0,
	  "bucket (versioning Enabled) that sealed segments replicate to; none: S3 off" },
	{ "s3-prefix", "HODEI_S3_PREFIX", O_ENV, 0, 0, "object key prefix" },
	{ "s3-region", "HODEI_S3_REGION", O_ENV, 0, 0, "region for SigV4 (us-east-1)" },
	{ "s3-path-style", "HODEI_S3_PATH_STYLE", O_ENV, 0, 0,
	  "auto, true (path-style URLs) or false (virtual-hosted)" },
	{ "s3-multipart-threshold", "HODEI_S3_MULTIPART_THRESHOLD", O_ENV, 0, 0,
	  "segments larger than this upload in parts (64MiB)" },
	{ "s3-part-size", "HODEI_S3_PART_SIZE", O_ENV, 0, 0, "multipart part size (16MiB)" },
	{ "local-retention", "HODEI_LOCAL_RETENTION", O_DUR, D(eng_cfg.local_retention_ns), 0,
	  "with S3: remove a segment's local file this long after it is replicated (168h); "
	  "reads then fetch it back" },
	{ "remote-cache-bytes", "HODEI_REMOTE_CACHE_BYTES", SIZE(eng_cfg.remote_cache_bytes),
	  "per shard: segments read back from S3 kept on local disk (1GiB)" },
	{ "replication-workers", "HODEI_REPLICATION_WORKERS", O_U32, D(replication_workers), 0,
	  "uploads in flight at once (2); credentials: AWS_* variables or HODEI_S3_CREDENTIALS_FILE" },
	{ "clickhouse-url", "HODEI_CLICKHOUSE_URL", O_ENV, 0, 0,
	  "ClickHouse HTTP URL to mirror sealed segments to; none: mirror off" },
	{ "clickhouse-user", "HODEI_CLICKHOUSE_USER", O_ENV, 0, 0,
	  "ClickHouse user (password: HODEI_CLICKHOUSE_PASSWORD only)" },
	{ "clickhouse-database", "HODEI_CLICKHOUSE_DATABASE", O_ENV, 0, 0, "database (hodei_audit)" },
	{ "mirror-workers", "HODEI_MIRROR_WORKERS", O_U32, D(mirror_workers), 0,
	  "ClickHouse inserts in flight at once (2)" },
	{ "log-level", "HODEI_LOG_LEVEL", O_LEVEL, D(log_level), 0, "error, warn, info or debug (info)" },
	{ "repair", "HODEI_REPAIR", O_BOOL, D(eng_cfg.repair), 0,
	  "cut a WAL at mid-file damage instead of refusing to start" },
};
#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

static void usage(FILE *f)
{
	fprintf(f, "usage: hodei-auditd [--flag value]...\n\n"
		   "Every flag also reads from its environment variable; flags win.\n"
		   "Durations: 500ms, 10s, 5m, 1h. Sizes: 4096, 64KiB, 4MiB, 1GiB.\n\n");
	for (size_t i = 0; i < N_OPTS; i++)
		fprintf(f, "  --%-20s %-26s %s\n", opts[i].flag, opts[i].env, opts[i].help);
	fprintf(f, "  --%-20s %-26s %s\n", "version", "", "print the version");
}

static int set_opt(struct daemon *d, const struct opt *o, const char *v, const char *src)
{
	char *base = (char *)d;
	uint64_t u;
	int64_t ns;
	switch (o->kind) {
	case O_STR:
	case O_STR_OPT:
		if (strlen(v) >= o->cap || (!*v && o->kind == O_STR))
			goto bad;
		strcpy(base + o->off, v);
		return 0;
	case O_U32:
		if (units_parse_u64(v, &u) || u > UINT32_MAX)
			goto bad;
		*(uint32_t *)(base + o->off) = (uint32_t)u;
		return 0;
	case O_SIZE:
		if (units_parse_size(v, &u))
			goto bad;
		if (o->cap == sizeof(uint64_t)) {
			*(uint64_t *)(base + o->off) = u;
			return 0;
		}
		ASSERT(o->cap == sizeof(uint32_t));
		if (u > UINT32_MAX)
			goto bad;
		*(uint32_t *)(base + o->off) = (uint32_t)u;
		return 0;
	case O_DUR:
		if (units_parse_duration_ns(v, 0, &ns))
			goto bad;
		*(int64_t *)(base + o->off) = ns;
		return 0;
	case O_IO:
		if (strcmp(v, "auto") == 0)
			d->eng_cfg.io = ENG_IO_AUTO;
		else if (strcmp(v, "uring") == 0)
			d->eng_cfg.io = ENG_IO_URING;
		else if (strcmp(v, "sync") == 0)
			d->eng_cfg.io = ENG_IO_SYNC;
		else
			goto bad;
		return 0;
	case O_LEVEL:
		if (nlog_level_parse(v, &d->log_level))
			goto bad;
		return 0;
	case O_ENV:
		/* Read by the S3 / ClickHouse configuration (net/s3.c,
		 * net/clickhouse.c): the flag is its variable, set. */
		if (setenv(o->env, v, 1) != 0)
			goto bad;
		return 0;
	case O_BOOL:
		if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0)
			*(bool *)(base + o->off) = true;
		else if (strcmp(v, "0") == 0 || strcmp(v, "false") == 0)
			*(bool *)(base + o->off) = false;
		else
			goto bad;
		return 0;
	}
bad:
	fprintf(stderr, "hodei-auditd: %s: invalid value \"%s\" for --%s (%s)\n", src, v, o->flag,
		o->help);
	return -1;
}

static int configure(struct daemon *d, int argc, char **argv)
{
	eng_config_default(&d->eng_cfg);
	d->eng_cfg.limits.details_json_valid = net_json_valid;
	srv_config_default(&d->srv_cfg);
	snprintf(d->data_dir, sizeof(d->data_dir), "./hodei-data");
	snprintf(d->admin_listen, sizeof(d->admin_listen), "127.0.0.1:8080");
	snprintf(d->grpc_listen, sizeof(d->grpc_listen), "%s", d->srv_cfg.grpc_listen);
	d->grace_ns = 10 * 1000000000ll;
	d->log_level = NLOG_INFO;
	d->replication_workers = 2;
	d->eng_cfg.local_retention_ns = INT64_MIN; /* "not set": 168h with S3, never without */
	d->mirror_workers = 2;
	d->mirror_lock_fd = -1;
	/* Environment first, then flags over it. */
	for (size_t i = 0; i < N_OPTS; i++) {
		const char *v = getenv(opts[i].env);
		if (v && set_opt(d, &opts[i], v, opts[i].env) != 0)
			return EXIT_USAGE;
	}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			exit(EXIT_OK);
		}
		if (strcmp(a, "--version") == 0) {
			printf("hodei-auditd %s\n", HODEI_VERSION);
			exit(EXIT_OK);
		}
		if (strncmp(a, "--", 2) != 0) {
			fprintf(stderr, "hodei-auditd: unexpected argument \"%s\" (see --help)\n", a);
			return EXIT_USAGE;
		}
		const char *name = a + 2, *eq = strchr(name, '=');
		size_t len = eq ? (size_t)(eq - name) : strlen(name);
		const struct opt *o = NULL;
		for (size_t k = 0; k < N_OPTS; k++)
			if (strlen(opts[k].flag) == len && strncmp(opts[k].flag, name, len) == 0)
				o = &opts[k];
		if (!o) {
			fprintf(stderr, "hodei-auditd: unknown flag --%.*s (see --help)\n", (int)len, name);
			return EXIT_USAGE;
		}
		const char *v = eq ? eq + 1 : NULL;
		if (!v && o->kind == O_BOOL)
			v = "true";
		if (!v) {
			if (i + 1 >= argc) {
				fprintf(stderr, "hodei-auditd: --%s needs a value\n", o->flag);
				return EXIT_USAGE;
			}
			v = argv[++i];
		}
		if (set_opt(d, o, v, "flag") != 0)
			return EXIT_USAGE;
	}
	if (!d->keys_file[0])
		snprintf(d->keys_file, sizeof(d->keys_file), "%s/keys", d->data_dir);
	d->eng_cfg.data_dir = d->data_dir;
	d->srv_cfg.keys_file = d->keys_file;
	d->srv_cfg.grpc_listen = d->grpc_listen;
	d->srv_cfg.tls_cert = d->tls_cert[0] ? d->tls_cert : NULL;
	d->srv_cfg.tls_key = d->tls_key[0] ? d->tls_key : NULL;
	d->srv_cfg.tenant_rate_eps = d->eng_cfg.tenant_rate_eps;
	if (d->srv_cfg.max_message_bytes + 65536u > d->srv_cfg.conn_window_bytes)
		d->srv_cfg.conn_window_bytes = d->srv_cfg.max_message_bytes + 65536u;
	char err[256];
	if (srv_config_check(&d->srv_cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "hodei-auditd: %s\n", err);
		return EXIT_USAGE;
	}
	return EXIT_OK;
}

/* ---- admin callbacks --------------------------------------------------------- */

static bool ready(void *ctx, char *why, size_t cap)
{
	struct daemon *d = ctx;
	switch (atomic_load(&d->phase)) {
	case PHASE_RECOVERING:
		snprintf(why, cap, "recovering");
		return false;
	case PHASE_DRAINING:
		snprintf(why, cap, "draining (shutting down)");
		return false;
	case PHASE_FAILED:
		snprintf(why, cap, "failed to start");
		return false;
	default:
		break;
	}
	for (uint32_t i = 0; i < eng_shard_count(d->eng); i++) {
		struct eng_shard_stats st;
		eng_shard_stats(d->eng, i, &st);
		if (st.failed) {
			snprintf(why, cap, "shard %u: storage failed (restart to recover)", i);
			return false;
		}
	}
	if (access(d->data_dir, W_OK) != 0) {
		snprintf(why, cap, "data directory not writable: %s", strerror(errno));
		return false;
	}
	return true;
}

#define ENGINE_COUNTER(name, help, field)                                    \
	do {                                                                 \
		mx_family(b, name, "counter", help);                         \
		mx_sample_u64(b, name, NULL, 0, sum.field);                  \
	} while (0)
#define ENGINE_GAUGE(name, help, value)                                      \
	do {                                                                 \
		mx_family(b, name, "gauge", help);                           \
		mx_sample_u64(b, name, NULL, 0, value);                      \
	} while (0)

/* Adds a shard's stats histogram (eng_latency_bounds_ns) to h. */
static void hist_add(struct mx_hist *h, const uint64_t counts[ENG_LATENCY_BOUNDS + 1],
		     uint64_t sum_ns)
{
	for (int k = 0; k <= ENG_LATENCY_BOUNDS; k++)
		atomic_fetch_add(&h->buckets[k], counts[k]);
	atomic_fetch_add(&h->sum_ns, sum_ns);
}

static int render(void *ctx, struct mx_buf *b)
{
	struct daemon *d = ctx;
	srv_render_metrics(d->srv, b);
	struct eng_shard_stats sum = { 0 };
	/* rebuilt from the shards' counts at each scrape */
	static struct mx_hist fsync, rotation;
	double bounds[ENG_LATENCY_BOUNDS];
	for (int i = 0; i < ENG_LATENCY_BOUNDS; i++)
		bounds[i] = (double)eng_latency_bounds_ns[i] / 1e9;
	mx_hist_init(&fsync, bounds, ENG_LATENCY_BOUNDS);
	mx_hist_init(&rotation, bounds, ENG_LATENCY_BOUNDS);
	uint32_t failed = 0, disk_full = 0, shards = d->eng && atomic_load(&d->phase) != PHASE_RECOVERING
					      ? eng_shard_count(d->eng)
					      : 0;
	for (uint32_t i = 0; i < shards; i++) {
		struct eng_shard_stats st;
		eng_shard_stats(d->eng, i, &st);
		sum.events_appended += st.events_appended;
		sum.events_duplicate += st.events_duplicate;
		sum.batches_committed += st.batches_committed;
		sum.wal_bytes_written += st.wal_bytes_written;
		sum.wal_fsyncs += st.wal_fsyncs;
		sum.wal_slow_commits += st.wal_slow_commits;
		sum.shard_blocked_ns += st.shard_blocked_ns;
		sum.wal_rotations += st.wal_rotations;
		sum.wal_rotations_inline += st.wal_rotations_inline;
		sum.wal_recycled += st.wal_recycled;
		sum.wal_free_files += st.wal_free_files;
		hist_add(&fsync, st.fsync_hist, st.fsync_ns_total);
		hist_add(&rotation, st.wal_rotation_hist, st.wal_rotation_ns_total);
		sum.segments_sealed += st.segments_sealed;
		sum.seal_write_steps += st.seal_write_steps;
		sum.seal_write_steps_hurried += st.seal_write_steps_hurried;
		for (int k = 0; k < ENG_SEAL_REASONS; k++)
			sum.segments_sealed_by[k] += st.segments_sealed_by[k];
		sum.wal_files += st.wal_files;
		sum.segments_local += st.segments_local;
		sum.segment_bytes_local += st.segment_bytes_local;
		sum.segments_replicated += st.segments_replicated;
		sum.segments_mirrored += st.segments_mirrored;
		sum.segments_remote += st.segments_remote;
		sum.remote_cache_bytes += st.remote_cache_bytes;
		sum.memtable_bytes += st.memtable_bytes;
		sum.memtable_rows += st.memtable_rows;
		sum.dedup_entries += st.dedup_entries;
		sum.dedup_evicted_early += st.dedup_evicted_early;
		sum.tenants += st.tenants;
		sum.queue_full += st.queue_full;
		sum.count_rows_scanned += st.count_rows_scanned;
		sum.block_cache_hits += st.block_cache_hits;
		sum.footer_reads += st.footer_reads;
		sum.footers_evicted += st.footers_evicted;
		sum.footers_bytes += st.footers_bytes;
		sum.block_cache_misses += st.block_cache_misses;
		sum.block_cache_evictions += st.block_cache_evictions;
		sum.block_cache_bytes += st.block_cache_bytes;
		sum.query_decode_jobs += st.query_decode_jobs;
		sum.query_decode_jobs_helped += st.query_decode_jobs_helped;
		sum.disk_used_bytes += st.disk_used_bytes;
		failed += st.failed;
		disk_full += st.disk_full;
	}
	ENGINE_COUNTER("hodei_engine_events_total", "Events written to the WAL and acknowledged.",
		       events_appended);
	ENGINE_COUNTER("hodei_wal_bytes_written_total", "Bytes written to WAL files.", wal_bytes_written);
	ENGINE_COUNTER("hodei_wal_fsyncs_total", "Group commits (one fsync each).", wal_fsyncs);
	ENGINE_COUNTER("hodei_wal_rotations_total", "WAL files started (the first one included).",
		       wal_rotations);
	ENGINE_COUNTER("hodei_wal_rotations_inline_total",
		       "WAL files the shard thread had to create itself (none created ahead).",
		       wal_rotations_inline);
	ENGINE_COUNTER("hodei_wal_recycled_total",
		       "WAL files started by overwriting a retired file instead of creating one.",
		       wal_recycled);
	mx_family(b, "hodei_wal_fsync_duration_seconds", "histogram",
		  "Group commit: WAL write submission to fsync completion.");
	mx_hist_write(b, "hodei_wal_fsync_duration_seconds", NULL, 0, &fsync);
	ENGINE_COUNTER("hodei_wal_slow_commits_total",
		       "WAL commits that took at least slow-commit (each logged, one line per shard and "
		       "second at most).",
		       wal_slow_commits);
	mx_family(b, "hodei_slow_commit_threshold_seconds", "gauge", "The slow-commit setting (0: off).");
	mx_sample_f64(b, "hodei_slow_commit_threshold_seconds", NULL, 0,
		      (double)d->eng_cfg.slow_commit_ns / 1e9);
	mx_family(b, "hodei_shard_blocked_seconds_total", "counter",
		  "Time the shard threads spent blocked in their own file-system calls (WAL "
		  "rotations, retiring WAL files after a seal): appends wait meanwhile.");
	mx_sample_f64(b, "hodei_shard_blocked_seconds_total", NULL, 0,
		      (double)sum.shard_blocked_ns / 1e9);
	mx_family(b, "hodei_wal_rotation_duration_seconds", "histogram",
		  "WAL rotation: how long it held the shard thread (appends wait meanwhile).");
	mx_hist_write(b, "hodei_wal_rotation_duration_seconds", NULL, 0, &rotation);
	ENGINE_COUNTER("hodei_segments_sealed_total", "Segments sealed.", segments_sealed);
	mx_family(b, "hodei_segments_sealed_by_reason_total", "counter",
		  "Segments sealed, by why their tenant was sealed: size (seal-rows, seal-bytes), "
		  "age (seal-age), wal (wal-retain), memory (memtable budget), retry (a failed round).");
	for (int k = 0; k < ENG_SEAL_REASONS; k++) {
		struct mx_label l = { "reason", eng_seal_reason_names[k] };
		mx_sample_u64(b, "hodei_segments_sealed_by_reason_total", &l, 1, sum.segments_sealed_by[k]);
	}
	ENGINE_COUNTER("hodei_seal_write_steps_total",
		       "Paced segment writing (seal-write-step): steps written back to the device.",
		       seal_write_steps);
	ENGINE_COUNTER("hodei_seal_write_steps_hurried_total",
		       "Paced segment writing: steps that took the rest of their round at once, "
		       "the memtables being past 3/4 of the budget.",
		       seal_write_steps_hurried);
	ENGINE_GAUGE("hodei_wal_files", "WAL files kept (the active one included), all shards.",
		     sum.wal_files);
	ENGINE_GAUGE("hodei_wal_free_files", "Retired WAL files kept to be recycled, all shards "
		     "(at most wal-recycle-files per shard).", sum.wal_free_files);
	ENGINE_GAUGE("hodei_wal_retain_bytes", "WAL kept for unsealed events before they are sealed, "
		     "all shards.", d->eng_cfg.wal_retain_bytes * shards);
	ENGINE_GAUGE("hodei_segments_local", "Sealed segments on local disk.", sum.segments_local);
	ENGINE_GAUGE("hodei_segments_replicated", "Sealed segments the manifest records as in S3.",
		     sum.segments_replicated);
	ENGINE_GAUGE("hodei_segments_mirrored",
		     "Sealed segments the manifest records as mirrored to ClickHouse.",
		     sum.segments_mirrored);
	ENGINE_GAUGE("hodei_segments_remote",
		     "Sealed segments whose local file was removed (local retention): in S3 only.",
		     sum.segments_remote);
	ENGINE_GAUGE("hodei_remote_cache_bytes", "Bytes of segments read back from S3 kept locally.",
		     sum.remote_cache_bytes);
	mx_family(b, "hodei_local_retention_seconds", "gauge",
		  "How long a replicated segment stays on local disk (-1: forever).");
	mx_sample_i64(b, "hodei_local_retention_seconds", NULL, 0,
		      d->eng_cfg.local_retention_ns < 0 ? -1 : d->eng_cfg.local_retention_ns / 1000000000ll);
	ENGINE_GAUGE("hodei_segment_local_bytes", "Bytes of sealed segments on local disk.",
		     sum.segment_bytes_local);
	ENGINE_GAUGE("hodei_memtable_bytes", "Bytes of unsealed events in memory.", sum.memtable_bytes);
	ENGINE_GAUGE("hodei_memtable_budget_bytes", "Memory budget for unsealed events, all shards.",
		     d->eng_cfg.memtable_budget_bytes * shards);
	ENGINE_GAUGE("hodei_memtable_events", "Unsealed events in memory.", sum.memtable_rows);
	ENGINE_GAUGE("hodei_dedup_entries", "event_ids held for duplicate detection.", sum.dedup_entries);
	ENGINE_GAUGE("hodei_dedup_entries_max", "Capacity of the dedup memory, all shards.",
		     (uint64_t)d->eng_cfg.dedup_entries_max * shards);
	ENGINE_COUNTER("hodei_dedup_evicted_early_total",
		       "event_ids forgotten before the dedup window passed (memory bound).",
		       dedup_evicted_early);
	ENGINE_COUNTER("hodei_count_rows_scanned_total",
		       "Events examined by Count (decoded blocks and memory), all shards.",
		       count_rows_scanned);
	ENGINE_COUNTER("hodei_segment_footer_reads_total",
		       "Segment footers a query had to read from their file (not in memory), all shards.",
		       footer_reads);
	ENGINE_COUNTER("hodei_segment_footers_evicted_total",
		       "Segment footers dropped from memory for room, all shards.", footers_evicted);
	ENGINE_GAUGE("hodei_segment_footers_bytes", "Bytes of segment footers kept in memory.",
		     sum.footers_bytes);
	ENGINE_GAUGE("hodei_segment_footers_budget_bytes",
		     "Memory bound of the kept segment footers, all shards.",
		     d->eng_cfg.footer_cache_bytes * shards);
	ENGINE_COUNTER("hodei_block_cache_hits_total",
		       "Segment blocks a query took from the decoded-block cache, all shards.",
		       block_cache_hits);
	ENGINE_COUNTER("hodei_block_cache_misses_total",
		       "Segment blocks a query had to read and decode, all shards.", block_cache_misses);
	ENGINE_COUNTER("hodei_block_cache_evictions_total",
		       "Decoded blocks dropped from the cache to make room, all shards.",
		       block_cache_evictions);
	ENGINE_GAUGE("hodei_block_cache_bytes", "Bytes of decoded segment blocks cached, all shards.",
		     sum.block_cache_bytes);
	ENGINE_GAUGE("hodei_block_cache_budget_bytes", "Bound of the decoded-block cache, all shards.",
		     d->eng_cfg.block_cache_bytes * shards);
	ENGINE_COUNTER("hodei_query_decode_jobs_total",
		       "Block decodes of queries offered to the query helpers, all shards.",
		       query_decode_jobs);
	ENGINE_COUNTER("hodei_query_decode_jobs_helped_total",
		       "Block decodes of queries that a query helper ran, all shards.",
		       query_decode_jobs_helped);
	ENGINE_GAUGE("hodei_query_helpers", "Query helper threads, all shards.",
		     (uint64_t)d->eng_cfg.query_helpers * shards);
	ENGINE_GAUGE("hodei_tenants", "Tenants with data on this node.", sum.tenants);
	ENGINE_GAUGE("hodei_shards", "Shard threads.", shards);
	ENGINE_GAUGE("hodei_shards_failed", "Shards whose write path stopped after an I/O error.", failed);
	ENGINE_GAUGE("hodei_disk_used_bytes", "WAL (upper bound) and local segments, all shards.",
		     sum.disk_used_bytes);
	ENGINE_GAUGE("hodei_disk_budget_bytes", "Disk budget of the data directory (0: none).",
		     d->eng_cfg.disk_budget_bytes);
	ENGINE_GAUGE("hodei_disk_reserve_bytes", "Free space kept on the data file system.",
		     d->eng_cfg.disk_reserve_bytes);
	ENGINE_GAUGE("hodei_shards_disk_full", "Shards refusing appends: disk budget or reserve.",
		     disk_full);
	struct statvfs vfs;
	if (statvfs(d->data_dir, &vfs) == 0)
		ENGINE_GAUGE("hodei_disk_free_bytes", "Free bytes on the data directory's file system.",
			     (uint64_t)vfs.f_bavail * vfs.f_frsize);
	/* The exporters are set before PHASE_SERVING is stored (seq_cst) and
	 * freed only after the admin port stopped. */
	if (atomic_load(&d->phase) == PHASE_RECOVERING)
		return admin_write_metrics(d->admin, b);
	mx_family(b, "hodei_replication_enabled", "gauge", "1 when S3 replication is configured.");
	mx_sample_u64(b, "hodei_replication_enabled", NULL, 0, d->replicator ? 1 : 0);
	if (d->replicator) {
		exporter_render_metrics(d->replicator, b);
		replicator_render_metrics(&d->s3, b);
		fetcher_render_metrics(&d->fetcher, b);
	}
	mx_family(b, "hodei_mirror_enabled", "gauge", "1 when the ClickHouse mirror is configured.");
	mx_sample_u64(b, "hodei_mirror_enabled", NULL, 0, d->mirror ? 1 : 0);
	if (d->mirror) {
		exporter_render_metrics(d->mirror, b);
		mirror_render_metrics(&d->ch, b);
	}
	return admin_write_metrics(d->admin, b);
}

/* ---- exporters ----------------------------------------------------------------- */

/* Starts the S3 replicator and the ClickHouse mirror when configured.
 * A configuration error stops the start (an operator who set a bucket
 * wants replication, not a silent local-only node); an unreachable or
 * unversioned target does not (ingest goes on, the metrics say why). */
/* Before the engine opens: S3 settings decide local retention and the
 * reads back from S3 (the engine's fetcher). */
static int exporters_configure(struct daemon *d)
{
	char why[512];
	if (s3_config_from_env(&d->s3.cfg, why, sizeof(why)) != 0 ||
	    (s3_config_enabled(&d->s3.cfg) && s3_config_validate(&d->s3.cfg, why, sizeof(why)) != 0)) {
		nlog(NLOG_ERROR, NULL, "S3 configuration: %s", why);
		return -1;
	}
	const char *url = getenv("HODEI_CLICKHOUSE_URL");
	bool mirror = url && *url;
	if (!s3_config_enabled(&d->s3.cfg)) {
		d->eng_cfg.local_retention_ns = -1; /* nothing is in S3: keep everything */
		return 0;
	}
	if (d->eng_cfg.local_retention_ns == INT64_MIN)
		d->eng_cfg.local_retention_ns = 168 * 3600 * 1000000000ll;
	if (d->eng_cfg.local_retention_ns < d->eng_cfg.dedup_window_ns)
		nlog(NLOG_WARN, NULL, "local retention (%.0f s) is shorter than the dedup window (%.0f s): "
		     "after a restart, retries of events already removed locally are not recognised "
		     "as duplicates", (double)d->eng_cfg.local_retention_ns / 1e9,
		     (double)d->eng_cfg.dedup_window_ns / 1e9);
	d->eng_cfg.retention_needs_mirror = mirror; /* the mirror reads local files */
	d->fetcher.cfg = d->s3.cfg;
	d->fetcher.cancel = &d->cancel;
	if (fetcher_start(&d->fetcher) != 0) {
		nlog(NLOG_ERROR, NULL, "cannot start the S3 read-back threads");
		return -1;
	}
	d->fetcher_started = true;
	d->eng_cfg.fetcher = fetcher_ops(&d->fetcher);
	return 0;
}

static int exporters_start(struct daemon *d)
{
	char why[512];
	struct exporter_config xc;
	exporter_config_default(&xc);
	struct exporter_ops ops;
	atomic_store(&d->fetcher.eng, d->eng);
	if (s3_config_enabled(&d->s3.cfg)) {
		d->s3.cancel = &d->cancel;
		replicator_ops(&d->s3, &ops);
		xc.workers = d->replication_workers;
		int rc = exporter_start(d->eng, &ops, &xc, &d->replicator);
		if (rc) {
			nlog(NLOG_ERROR, NULL, "cannot start the S3 replicator: %s", strerror(-rc));
			return -1;
		}
		nlog(NLOG_INFO, NULL, "replicating sealed segments to s3://%s/%s (%s)", d->s3.cfg.bucket,
		     d->s3.cfg.prefix, d->s3.cfg.endpoint[0] ? d->s3.cfg.endpoint : "AWS");
	}
	const char *url = getenv("HODEI_CLICKHOUSE_URL");
	if (url && *url) {
		if (ch_config_from_env(&d->ch.cfg, why, sizeof(why)) != 0) {
			nlog(NLOG_ERROR, NULL, "ClickHouse configuration: %s", why);
			return -1;
		}
		int rc = ch_mirror_lock(d->data_dir, &d->mirror_lock_fd);
		if (rc) {
			nlog(NLOG_ERROR, NULL, "cannot lock %s/clickhouse-mirror.lock: %s (is a "
			     "`hodei-audit clickhouse mirror` running on this directory?)", d->data_dir,
			     strerror(-rc));
			return -1;
		}
		mirror_ops(&d->ch, &ops);
		xc.workers = d->mirror_workers;
		rc = exporter_start(d->eng, &ops, &xc, &d->mirror);
		if (rc) {
			nlog(NLOG_ERROR, NULL, "cannot start the ClickHouse mirror: %s", strerror(-rc));
			return -1;
		}
		nlog(NLOG_INFO, NULL, "mirroring sealed segments to ClickHouse %s, database %s",
		     d->ch.cfg.url, d->ch.cfg.database);
	}
	return 0;
}

static void exporters_stop(struct daemon *d)
{
	atomic_store(&d->cancel, true); /* S3 transfers in progress stop within a second */
	exporter_stop(d->replicator);
	exporter_stop(d->mirror);
	if (d->fetcher_started)
		fetcher_stop(&d->fetcher); /* before the engine closes: it reports to it */
	d->fetcher_started = false;
	d->replicator = d->mirror = NULL;
	if (d->mirror_lock_fd >= 0)
		close(d->mirror_lock_fd);
	d->mirror_lock_fd = -1;
}

/* ---- main ------------------------------------------------------------------ */

static int first_start(struct daemon *d)
{
	if (access(d->keys_file, F_OK) == 0)
		return 0;
	char key[AUTH_KEY_CHARS + 1];
	int rc = auth_first_start(d->keys_file, key);
	if (rc) {
		nlog(NLOG_ERROR, NULL, "cannot create keys file %s: %s", d->keys_file, strerror(-rc));
		return -1;
	}
	printf("hodei-auditd: first start: created %s with an admin key for tenant \"default\".\n"
	       "admin key (shown once): %s\n"
	       "Keep it secret. Use it with: export HODEI_API_KEY=%s\n",
	       d->keys_file, key, key);
	fflush(stdout);
	memset(key, 0, sizeof(key));
	return 0;
}

static int mkdir_p(const char *path)
{
	char buf[PATH_MAX];
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0750) != 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return mkdir(buf, 0750) == 0 || errno == EEXIST ? 0 : -1;
}

static void drain_and_wait(struct daemon *d, int sfd)
{
	atomic_store(&d->phase, PHASE_DRAINING);
	srv_drain(d->srv);
	nlog(NLOG_INFO, NULL, "draining: refusing new calls, finishing calls in flight (grace %.1f s)",
	     (double)d->grace_ns / 1e9);
	struct timespec t0, now;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		if (srv_drained(d->srv)) {
			nlog(NLOG_INFO, NULL, "drained: every call answered");
			return;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		int64_t spent = (now.tv_sec - t0.tv_sec) * 1000000000ll + (now.tv_nsec - t0.tv_nsec);
		if (spent >= d->grace_ns) {
			nlog(NLOG_WARN, NULL, "grace period over: closing the connections left");
			return;
		}
		struct pollfd pfd = { .fd = sfd, .events = POLLIN };
		if (poll(&pfd, 1, 20) > 0) {
			struct signalfd_siginfo si;
			if (read(sfd, &si, sizeof(si)) == sizeof(si))
				nlog(NLOG_INFO, NULL, "signal %u while draining: still draining", si.ssi_signo);
		}
	}
}

/* File descriptors: each shard keeps up to open_segments_max segment
 * files open, beside one per connection and a few of its own. Raises the
 * soft RLIMIT_NOFILE to the hard one; when even that is short, keeps
 * fewer segments open per shard, and says so. */
static void fd_budget(struct daemon *d)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		struct rlimit up = { .rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max };
		if (setrlimit(RLIMIT_NOFILE, &up) == 0)
			rl = up;
	}
	const uint64_t per_shard = 16; /* WAL and spare, manifest, epoll, eventfds, listener */
	uint64_t shards = d->eng_cfg.shards;
	uint64_t fixed = (uint64_t)d->srv_cfg.max_connections + 64; /* admin, S3, ClickHouse */
	uint64_t need = fixed + shards * (per_shard + d->eng_cfg.open_segments_max);
	if (rl.rlim_cur == RLIM_INFINITY || need <= rl.rlim_cur)
		return;
	uint64_t room = rl.rlim_cur > fixed + shards * per_shard
				? (rl.rlim_cur - fixed) / shards - per_shard
				: 0;
	uint32_t keep = (uint32_t)FMT_MAX(FMT_MIN(room, (uint64_t)d->eng_cfg.open_segments_max), 16);
	nlog(NLOG_WARN, NULL,
	     "open file limit %llu is too low for --open-segments %u on %llu shards with "
	     "--max-connections %u: keeping %u segment files open per shard (raise the limit: "
	     "ulimit -n, LimitNOFILE=, or the container's nofile)",
	     (unsigned long long)rl.rlim_cur, d->eng_cfg.open_segments_max,
	     (unsigned long long)shards, d->srv_cfg.max_connections, keep);
	d->eng_cfg.open_segments_max = keep;
}

int main(int argc, char **argv)
{
	static struct daemon d;
	int rc = configure(&d, argc, argv);
	if (rc)
		return rc;
	nlog_set_level(d.log_level);
	d.eng_cfg.log = nlog_engine;

	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* every thread started later inherits it */
	signal(SIGPIPE, SIG_IGN);
	int sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
	if (sfd < 0) {
		nlog(NLOG_ERROR, NULL, "signalfd: %s", strerror(errno));
		return EXIT_FAIL;
	}

	if (mkdir_p(d.data_dir) != 0) {
		nlog(NLOG_ERROR, NULL, "cannot create data directory %s: %s", d.data_dir, strerror(errno));
		return EXIT_FAIL;
	}
	if (first_start(&d) != 0)
		return EXIT_FAIL;

	char err[512];
	uint32_t shards = d.eng_cfg.shards ? d.eng_cfg.shards : (uint32_t)sysconf(_SC_NPROCESSORS_ONLN);
	if (shards < 1)
		shards = 1;
	d.eng_cfg.shards = shards;
	fd_budget(&d);
	if (srv_create(&d.srv_cfg, shards, &d.eng_cfg.limits, &d.srv, err, sizeof(err)) != 0) {
		nlog(NLOG_ERROR, NULL, "%s", err);
		return EXIT_FAIL;
	}
	struct admin_ops ops = { .ctx = &d, .render_metrics = render, .ready = ready };
	rc = admin_start(d.admin_listen, &ops, &d.admin);
	if (rc) {
		nlog(NLOG_ERROR, NULL, "cannot start the admin port on %s: %s", d.admin_listen,
		     rc == FMT_E_INVALID ? "expected ip:port" : strerror(-rc));
		srv_destroy(d.srv);
		return EXIT_FAIL;
	}
	if (exporters_configure(&d) != 0) {
		admin_stop(d.admin);
		srv_destroy(d.srv);
		return EXIT_FAIL;
	}
	nlog(NLOG_INFO, NULL, "recovering %s (%u shards)", d.data_dir, shards);
	d.eng_cfg.hooks = srv_hooks(d.srv);
	rc = eng_open(&d.eng_cfg, &d.eng);
	if (rc) {
		atomic_store(&d.phase, PHASE_FAILED);
		nlog(NLOG_ERROR, NULL, "cannot open the data directory %s: %s", d.data_dir,
		     fmt_strerror(rc));
		admin_stop(d.admin);
		if (d.fetcher_started)
			fetcher_stop(&d.fetcher);
		srv_destroy(d.srv);
		return EXIT_FAIL;
	}
	if (exporters_start(&d) != 0) {
		admin_stop(d.admin);
		exporters_stop(&d);
		eng_close(d.eng);
		srv_destroy(d.srv);
		return EXIT_FAIL;
	}
	srv_start(d.srv);
	atomic_store(&d.phase, PHASE_SERVING);
	const char *host = d.srv_cfg.grpc_listen;
	char where[300];
	snprintf(where, sizeof(where), "%.*s:%u", (int)(strrchr(host, ':') - host), host,
		 srv_port(d.srv));
	nlog(NLOG_INFO, NULL, "serving gRPC on %s (%s), admin on 127.0.0.1:%u, data in %s", where,
	     d.srv_cfg.tls_cert ? "TLS" : "h2c", admin_port(d.admin), d.data_dir);
	printf("hodei-auditd %s: gRPC on %s (%s), admin http://%.*s:%u (/metrics /healthz /readyz), "
	       "data in %s\n",
	       HODEI_VERSION, where, d.srv_cfg.tls_cert ? "TLS" : "h2c",
	       (int)(strrchr(d.admin_listen, ':') - d.admin_listen), d.admin_listen,
	       admin_port(d.admin), d.data_dir);
	fflush(stdout);

	for (;;) {
		struct pollfd pfd = { .fd = sfd, .events = POLLIN };
		int n = poll(&pfd, 1, 1000);
		srv_collect(d.srv);
		if (n <= 0)
			continue;
		struct signalfd_siginfo si;
		if (read(sfd, &si, sizeof(si)) != sizeof(si))
			continue;
		if (si.ssi_signo == SIGHUP) {
			if (srv_reload_keys(d.srv, err, sizeof(err)) == 0)
				nlog(NLOG_INFO, NULL, "SIGHUP: keys file %s re-read", d.keys_file);
			else
				nlog(NLOG_ERROR, NULL, "SIGHUP: keys file not reloaded, old keys stay: %s",
				     err);
			continue;
		}
		nlog(NLOG_INFO, NULL, "signal %s: shutting down", si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
		break;
	}
	drain_and_wait(&d, sfd);
	/* The admin port goes first: its scrapes read the exporters and the
	 * engine, which stop next. */
	admin_stop(d.admin);
	exporters_stop(&d);
	eng_close(d.eng); /* the shards' stop hooks close what is left */
	d.eng = NULL;
	srv_destroy(d.srv);
	nlog(NLOG_INFO, NULL, "stopped");
	return EXIT_OK;
}
