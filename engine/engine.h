/* SPDX-License-Identifier: Apache-2.0
 *
 * engine.h — the storage engine's public interface, the one the network
 * layer, the tools and the benchmarks call.
 *
 * Threads. eng_open() starts one shard thread per configured shard; a
 * tenant belongs to exactly one shard (hash of its id). Callers talk to the
 * shards only through a *producer*: a handle owned by one caller thread,
 * holding one bounded SPSC queue to every shard and one back. A request
 * (append, search, count, verify) is queued to the owning shard; the
 * shard runs it and queues it back; the caller's eng_producer_poll() then
 * runs the request's callback on the caller's thread. So callbacks never run on a
 * shard thread and no lock is taken on the data path.
 *
 * Durability. An append's callback runs only after every event of the
 * request is in the WAL and covered by a completed fsync (group commit:
 * one fsync covers every request of the shard's tick). A request is
 * atomic: its events are one WAL record.
 *
 * Ownership. A request struct and everything it points to (tenant,
 * events, filter strings) are borrowed by the engine from submit until its
 * callback; the caller must not touch them in between. Results are owned
 * by the request and freed with eng_search_release() or
 * eng_count_release().
 */
#ifndef HODEI_ENGINE_ENGINE_H
#define HODEI_ENGINE_ENGINE_H

#include "engine/io.h"
#include "format/event.h"

#include <stdbool.h>

struct eng_engine;
struct eng_producer;

/* ---- shard hooks: other event sources in the shard threads -------------- */
/* The network layer runs its connections in the shard threads (thread per
 * core, DESIGN.md §3). A shard sleeps in its I/O backend on one epoll
 * instance (the "loop fd") that holds its wake-up eventfd and every fd a
 * hook watches; each tick, after its own work and I/O completions, the
 * shard runs the callback of every watch that is ready, then hooks.tick.
 * Watches are edge- or level-triggered as registered; a level-triggered fd
 * left readable makes the loop spin, so hooks use EPOLLET for sockets. */
struct eng_watch;
typedef void (*eng_watch_fn)(struct eng_watch *w, uint32_t epoll_events);
struct eng_watch {
	eng_watch_fn fn;
};

struct eng_shard_hooks {
	void *ctx;
	/* On shard's thread, once, before its first tick. A non-zero return is
	 * logged and leaves the shard without hooks. */
	int (*start)(void *ctx, struct eng_engine *eng, uint32_t shard);
	/* On shard's thread, every tick. Returns how long the shard may sleep
	 * before the next call, in ns (0: run again at once; <0: no limit). */
	int64_t (*tick)(void *ctx, uint32_t shard);
	/* On shard's thread, once, when the engine stops, after its last tick.
	 * The hook must stop submitting requests before eng_close() is called;
	 * its producers are freed by eng_close(). */
	void (*stop)(void *ctx, uint32_t shard);
};

/* Adds, changes or removes a watch on shard's loop (epoll_ctl). Call from
 * that shard's thread (a hook). Returns 0 or -errno. */
int eng_watch_add(struct eng_engine *eng, uint32_t shard, int fd, uint32_t epoll_events,
		  struct eng_watch *w);
int eng_watch_mod(struct eng_engine *eng, uint32_t shard, int fd, uint32_t epoll_events,
		  struct eng_watch *w);
int eng_watch_del(struct eng_engine *eng, uint32_t shard, int fd);

enum eng_log_level { ENG_LOG_ERROR = 0, ENG_LOG_WARN = 1, ENG_LOG_INFO = 2, ENG_LOG_DEBUG = 3 };
typedef void (*eng_log_fn)(void *ctx, enum eng_log_level level, const char *msg);

/* Segments that live only in S3 (local retention passed) are read through
 * a local cache. The fetcher, given by net/ at start, copies one segment
 * into `dest_path` (write elsewhere, check, rename) on its own thread and
 * then calls eng_fetch_done(). fetch() runs on a shard thread: it must only
 * queue the work. Returns 0 or an error (the requests needing the segment
 * fail with it). */
struct eng_fetch_req {
	uint32_t shard;
	char tenant[FMT_TENANT_MAX + 1];
	uint64_t segment_id;
	uint64_t file_size, file_checksum;   /* XXH3-64 the copy must have */
	int64_t min_received_ns;             /* for the object key */
	char version_id[256];
	char dest_path[4200];
};

struct eng_fetcher {
	void *ctx;
	int (*fetch)(void *ctx, const struct eng_fetch_req *req);
};

/* Most query helper threads per shard. */
#define ENG_QUERY_HELPERS_MAX 8u

/* Largest eng_config.block_cache_bytes (per shard). */
#define ENG_BLOCK_CACHE_BYTES_MAX (1ull << 40)

struct eng_config {
	const char *data_dir;
	uint32_t shards;                 /* 0: one per online CPU */
	bool pin_threads;                /* pin shard i to the i-th allowed CPU (default on) */
	/* The scheduler slice the shard threads and their query helpers ask
	 * for (SCHED_OTHER's sched_runtime; Linux 6.12+, EEVDF): at wakeup a
	 * thread whose slice is shorter than the running one's preempts it,
	 * so a request's hand-offs between threads do not wait behind a seal
	 * build or another process. Their share of the CPU is unchanged.
	 * 0: the kernel's default; else 100 us..100 ms. */
	int64_t thread_slice_ns;
	int64_t seal_slice_ns;           /* the same for the seal workers */
	enum eng_io_backend io;          /* ENG_IO_AUTO by default */
	struct eng_io_fault_plan fault;  /* used when io == ENG_IO_FAULT */
	uint32_t io_entries;             /* ring size per shard */
	uint32_t producers_max;          /* producer handles at once */
	uint32_t queue_depth;            /* requests per SPSC queue */
	uint32_t tenants_max;            /* tenants per shard */
	uint32_t tenant_rate_eps;        /* events/s one tenant may append; 0: no limit */
	uint32_t tenant_burst;           /* token bucket size; 0: max(rate, events_per_batch_max) */
	uint64_t disk_budget_bytes;      /* WAL + local segments, all shards; 0: no limit */
	uint64_t disk_reserve_bytes;     /* refuse appends when the file system has less free */
	/* Local retention: a segment's file is removed once it is replicated
	 * (and mirrored, when retention_needs_mirror) and its newest event was
	 * received this long ago. <0: never. Reads then go through the
	 * fetcher and a cache of remote_cache_bytes per shard. */
	int64_t local_retention_ns;
	bool retention_needs_mirror;
	uint64_t remote_cache_bytes;
	struct eng_fetcher fetcher;
	uint32_t seal_rows;              /* seal a tenant's memtable at this many rows */
	uint64_t seal_bytes;             /* ... or this many bytes */
	/* A seal round's images are written as one stream in steps of this
	 * many bytes, each written back to the device before the next, unless
	 * the memtables are past 3/4 of the budget (seal.c, ADR 0019); 0:
	 * each image in one write. 256 KiB by default (measured best); 0 or
	 * 4 KiB..1 GiB. */
	uint64_t seal_write_step_bytes;
	int64_t seal_age_ns;             /* ... or when its oldest row is this old */
	uint64_t memtable_budget_bytes;  /* per shard: over 1/2 seals early, over 1 refuses */
	/* Per shard: WAL kept for unsealed rows. A tenant whose oldest row
	 * sits in a file this far behind the newest is sealed, so that the
	 * file can go (and a restart replays no more than this). */
	uint64_t wal_retain_bytes;
	uint64_t wal_buffer_bytes;       /* per shard, per buffer (two) */
	uint64_t wal_file_bytes;         /* rotate the WAL file past this size */
	/* A WAL commit (write and fdatasync) that takes at least this long is
	 * counted and logged with what the shard's other I/O did meanwhile;
	 * 0: never. 100 ms by default. */
	int64_t slow_commit_ns;
	/* Per shard: retired WAL files kept to be overwritten by a later
	 * generation instead of deleted (ADR 0016), so that an append needs
	 * no metadata change; 0 deletes them. */
	uint32_t wal_recycle_files;
	int64_t dedup_window_ns;         /* DESIGN.md §2.3, default 15 min */
	uint32_t dedup_entries_max;      /* per shard */
	uint32_t block_rows;             /* rows per segment block */
	int zstd_level;
	uint32_t id_filter_bits;         /* event-id Bloom bits per row (0: format default, 16) */
	uint32_t segment_version;        /* format version to write (0: newest; 1 for compat tests) */
	uint32_t search_scan_rows_max;   /* rows a search may examine before it stops */
	uint32_t count_groups_max;       /* distinct keys of one count (>= 1) */
	uint32_t count_scan_rows_max;    /* rows one count may examine; 0: no limit */
	uint32_t open_segments_max;      /* per shard: segment files kept open */
	/* Per shard: parsed segment footers (block directory, zone maps,
	 * filters, stored counts) kept in memory, LRU; 0: none kept between
	 * requests. */
	uint64_t footer_cache_bytes;
	/* Per shard: decoded segment blocks kept in memory (LRU), so that a
	 * repeated or follow-up query does not decompress them again; 0: off. */
	uint64_t block_cache_bytes;
	/* Per shard: threads that decode a query's blocks beside the shard
	 * thread (engine/helper.c); 0: none. At most ENG_QUERY_HELPERS_MAX. */
	uint32_t query_helpers;
	bool repair;                     /* cut a WAL at mid-file corruption instead of refusing */
	struct fmt_limits limits;
	eng_log_fn log;                  /* NULL: JSON lines on stderr */
	void *log_ctx;
	struct eng_shard_hooks hooks;    /* all NULL: none */
};

/* Fills every field with the documented defaults (docs/ARCHITECTURE.md). */
void eng_config_default(struct eng_config *cfg);

/* Opens the data directory (creating it), recovers every shard (WAL replay,
 * manifest, dedup state) and starts the shard threads. Returns 0, or a
 * negative code with a message logged (a corrupt WAL record in the middle
 * of a file stops the start unless cfg->repair). */
int eng_open(const struct eng_config *cfg, struct eng_engine **out);

/* Stops accepting requests, finishes in-flight commits, seals nothing,
 * joins the threads and frees everything. Producers must be closed first. */
void eng_close(struct eng_engine *eng);

/* Tests only, with io == ENG_IO_FAULT: simulates a power cut. Stops every
 * shard thread where it is (requests in flight are never completed), then
 * drops every write not covered by a completed fsync (eng_io_fault_crash).
 * Completions pushed before the cut stay pollable: they were durable.
 * Afterwards, stop using the producers and call eng_close(), which frees
 * everything without waiting for them. Returns 0, or the first error of
 * eng_io_fault_crash (FMT_E_STATE: not the fault backend). */
int eng_power_cut(struct eng_engine *eng);

uint32_t eng_shard_count(const struct eng_engine *eng);
uint32_t eng_shard_of(const struct eng_engine *eng, struct fmt_str tenant);

/* ---- producers ---------------------------------------------------------- */

/* A producer is used by one thread at a time. Returns 0 or FMT_E_FULL
 * (producers_max reached). */
int eng_producer_open(struct eng_engine *eng, struct eng_producer **out);
void eng_producer_close(struct eng_producer *p);

/* An eventfd that becomes readable when completions wait; for event loops. */
int eng_producer_fd(const struct eng_producer *p);

/* Runs the callbacks of up to max completed requests on this thread.
 * Returns how many ran. */
int eng_producer_poll(struct eng_producer *p, uint32_t max);

/* Blocks up to timeout_ns (<0: forever) until a completion waits, then polls. */
int eng_producer_wait(struct eng_producer *p, int64_t timeout_ns);

/* Requests submitted through p whose callbacks have not run yet. */
uint32_t eng_producer_pending(const struct eng_producer *p);

/* ---- append ------------------------------------------------------------- */

/* An append refused because its tenant is over its rate (token bucket of
 * eng_config.tenant_rate_eps events/s): nothing of it was stored. */
#define ENG_E_RATE (-2001)
/* An append refused because the data directory is over its disk budget or
 * its file system under the free-space reserve (DESIGN.md §2.6). */
#define ENG_E_DISK (-2002)

struct eng_append;
typedef void (*eng_append_done_fn)(struct eng_append *req);

struct eng_req_hdr {              /* engine-private bookkeeping */
	int kind;
	struct eng_producer *producer;
	void *next;
	int64_t submitted_ns;
	void *tenant;
};

struct eng_append {
	struct eng_req_hdr hdr;
	/* In: borrowed until the callback. An all-zero event_id asks the engine
	 * for a UUIDv7; occurred_at_ns 0 means "received now". */
	struct fmt_str tenant;
	const struct fmt_event *events;
	uint32_t count;
	eng_append_done_fn done;
	void *ctx;
	/* The caller already ran fmt_event_validate() on every event with the
	 * engine's limits (net/ does, to answer in request order): the shard
	 * skips it. */
	bool validated;
	/* Out, valid in the callback. status: 0, FMT_E_INVALID (see invalid,
	 * invalid_index), FMT_E_TOO_BIG (too many events or too many bytes),
	 * FMT_E_NOMEM (memory budget), FMT_E_FULL (tenants_max), ENG_E_RATE
	 * (the tenant is over tenant_rate_eps), ENG_E_DISK (disk budget), -EIO (the
	 * WAL could not be made durable: nothing of the request is acked) or
	 * FMT_E_SHUTDOWN. */
	int status;
	struct fmt_invalid invalid;
	uint32_t invalid_index;
	uint32_t accepted;
	uint32_t duplicates;
	uint64_t first_seq, last_seq;   /* of the accepted events; 0 if none */
	uint8_t chain[FMT_HASH_BYTES];  /* tenant's chain value after the request */
	int64_t received_at_ns;
	/* Out, for metrics (CLOCK_MONOTONIC ns): queued_ns when it entered
	 * the shard's queue, run_ns when the shard ran it, commit_ns when the
	 * WAL commit that carries it was submitted, done_ns when the shard
	 * completed it. Set on success; a stage it never reached equals the
	 * next one. */
	int64_t queued_ns, run_ns, commit_ns, done_ns;
};

/* Queues req to the tenant's shard. Returns 0 (the callback will run from
 * eng_producer_poll) or FMT_E_FULL (queue full: retry after polling) or
 * FMT_E_SHUTDOWN; on a non-zero return the callback will not run. */
int eng_append_submit(struct eng_producer *p, struct eng_append *req);

/* ---- search ------------------------------------------------------------- */

#define ENG_SEARCH_LIMIT_DEFAULT 100
#define ENG_SEARCH_LIMIT_MAX 1000
#define ENG_PAGE_TOKEN_BYTES 48

struct eng_filter {
	int64_t from_ns;            /* inclusive; 0: beginning */
	int64_t to_ns;              /* exclusive; 0: now */
	struct fmt_str actor_id, action, resource_type, resource_id;
	uint32_t outcome;           /* 0: any */
	bool has_event_id;
	uint8_t event_id[FMT_EVENT_ID_BYTES];
};

/* One result: the event view points into the request's result memory. */
struct eng_hit {
	struct fmt_event ev;
	uint8_t chain[FMT_HASH_BYTES];
};

/* Where one search's or count's time went (out, for the caller's
 * slow-query log). Wall-clock times on the shard thread; the decodes
 * include the query helpers' share of a batch. */
struct eng_query_profile {
	int64_t queued_ns;        /* from submit until the shard started the run
	                           * (the last run, when the request was parked
	                           * waiting for segments fetched from S3) */
	int64_t run_ns;           /* the run, start to completion */
	int64_t scan_ns;          /* search: phase 1 (which rows match); count: the run */
	int64_t read_ns;          /* reading blocks' chunks (page cache or disk) */
	int64_t decode_ns;        /* decoding them */
	uint32_t blocks_cached;   /* blocks served by the block cache */
	uint32_t blocks_decoded;  /* blocks read and decoded */
	uint64_t bytes_read;      /* chunk bytes read for them */
	uint32_t footer_reads;    /* segment footers read from files (not resident) */
};

struct eng_search;
typedef void (*eng_search_done_fn)(struct eng_search *req);

struct eng_search {
	struct eng_req_hdr hdr;
	struct fmt_str tenant;
	struct eng_filter filter;
	uint32_t limit;             /* 0: default; capped at ENG_SEARCH_LIMIT_MAX */
	bool oldest_first;
	const uint8_t *page_token;  /* NULL or page_token_len bytes from a previous answer */
	uint32_t page_token_len;
	eng_search_done_fn done;
	void *ctx;
	/* Out. status 0, FMT_E_INVALID (bad page token or filter), -errno or
	 * FMT_E_CORRUPT (a segment failed its checks: nothing is returned). */
	int status;
	struct eng_hit *hits;
	uint32_t hit_count;
	uint8_t next_page_token[ENG_PAGE_TOKEN_BYTES];
	uint32_t next_page_token_len;  /* 0: no more results */
	uint64_t rows_scanned;
	uint32_t segments_read, segments_pruned;
	struct eng_query_profile profile;
	void *result_mem;           /* engine-private */
};

int eng_search_submit(struct eng_producer *p, struct eng_search *req);
/* Frees the results of a completed search (safe to call twice). */
void eng_search_release(struct eng_search *req);

/* ---- count (aggregates for dashboards) ---------------------------------- */
/* CountRequest (DESIGN.md §5, ADR 0009): how many of a tenant's events
 * match a filter (the same filter and semantics as search), in all and,
 * optionally, per value of one column. Count cannot page, so both its
 * bounds are refusals, never partial answers: more distinct keys than
 * count_groups_max, or more rows to examine than count_scan_rows_max,
 * fail the request with FMT_E_TOO_BIG (see `over`). */

/* Default of eng_config.count_scan_rows_max (ADR 0009). */
#define ENG_COUNT_SCAN_ROWS_DEFAULT 10000000u

enum eng_count_by {
	ENG_COUNT_BY_NONE = 0,      /* total only */
	ENG_COUNT_BY_ACTION,
	ENG_COUNT_BY_ACTOR_ID,
	ENG_COUNT_BY_RESOURCE_TYPE,
	ENG_COUNT_BY_OUTCOME,       /* keys "success", "failure", "denied"; "" for unspecified */
};

enum eng_count_over {
	ENG_COUNT_OVER_NONE = 0,
	ENG_COUNT_OVER_GROUPS,      /* more distinct keys than count_groups_max */
	ENG_COUNT_OVER_ROWS,        /* more rows to examine than count_scan_rows_max */
};

struct eng_count_group {
	struct fmt_str key;         /* points into the request's result memory */
	uint64_t count;
};

struct eng_count;
typedef void (*eng_count_done_fn)(struct eng_count *req);

struct eng_count {
	struct eng_req_hdr hdr;
	struct fmt_str tenant;
	struct eng_filter filter;
	enum eng_count_by group_by;
	eng_count_done_fn done;
	void *ctx;
	/* Out. status 0, FMT_E_INVALID (a filter or group_by is invalid),
	 * FMT_E_TOO_BIG (a bound: over says which and limit is its value;
	 * with over == ENG_COUNT_OVER_NONE, the segments to read back from S3
	 * do not fit the remote cache), FMT_E_NOMEM, -errno or FMT_E_CORRUPT
	 * (a segment failed its checks). Groups are sorted by count
	 * descending, then key ascending (bytewise); none without group_by. */
	int status;
	enum eng_count_over over;
	uint64_t limit;
	uint64_t total;
	struct eng_count_group *groups;
	uint32_t group_count;
	uint64_t rows_scanned;      /* rows of decoded blocks and memtable rows examined */
	uint32_t segments_read, segments_pruned;
	struct eng_query_profile profile;
	void *result_mem;           /* engine-private */
};

/* Returns 0 (the callback will run), FMT_E_FULL or FMT_E_SHUTDOWN. */
int eng_count_submit(struct eng_producer *p, struct eng_count *req);
/* Frees the groups of a completed count (safe to call twice). */
void eng_count_release(struct eng_count *req);

/* ---- verify ------------------------------------------------------------- */

struct eng_verify;
typedef void (*eng_verify_done_fn)(struct eng_verify *req);

struct eng_verify {
	struct eng_req_hdr hdr;
	struct fmt_str tenant;
	uint64_t from_seq, to_seq;  /* 0, 0: everything */
	eng_verify_done_fn done;
	void *ctx;
	/* Out. status 0 when the check ran (see ok); ok says whether the
	 * tenant's history is intact. */
	int status;
	bool ok;
	uint64_t events_checked;
	uint64_t segments_checked;
	uint8_t chain[FMT_HASH_BYTES];  /* chain value after the last checked event */
	uint64_t first_bad_seq;
	char problem[256];
};

int eng_verify_submit(struct eng_producer *p, struct eng_verify *req);

/* ---- exports: sealed segments leaving the node ---------------------------- */
/* Background threads outside the engine (net/: the S3 replicator and the
 * ClickHouse mirror) take sealed segments off the node. They learn what to
 * do with an export list request to one shard, and record what they did
 * with an export mark request, which the shard makes durable (a manifest
 * record, fsync'd) before the callback runs: after a crash the manifest
 * says exactly what was confirmed. Both go through a producer like every
 * other request; the shard never waits for the network. */

enum eng_export_kind {
	ENG_EXPORT_REPLICATE = 1,  /* uploaded to S3, checksum confirmed; ref: version id */
	ENG_EXPORT_MIRROR = 2,     /* every row is in ClickHouse */
};

#define ENG_EXPORT_REF_MAX 255

struct eng_export_item {
	char tenant[FMT_TENANT_MAX + 1];
	uint64_t segment_id;
	char path[4200];           /* the local file */
	uint64_t file_size, file_checksum;
	uint64_t first_seq, last_seq;
	uint32_t row_count;
	int64_t min_occurred_ns, max_occurred_ns;
	int64_t min_received_ns, max_received_ns;
	bool replicated, mirrored;
	char version_id[ENG_EXPORT_REF_MAX + 1];  /* S3 version id once replicated */
};

struct eng_export_list;
typedef void (*eng_export_list_done_fn)(struct eng_export_list *req);

/* Lists up to `cap` segments of shard `shard` that still need `kind`,
 * oldest first (manifest order per tenant, tenants in any order). */
struct eng_export_list {
	struct eng_req_hdr hdr;
	uint32_t shard;
	enum eng_export_kind kind;
	struct eng_export_item *items;  /* cap slots, caller's memory */
	uint32_t cap;
	eng_export_list_done_fn done;
	void *ctx;
	/* Out. */
	int status;
	uint32_t count;
	uint64_t pending;               /* segments needing kind on the shard, in all */
	uint64_t pending_bytes;
	int64_t oldest_pending_ns;      /* max_received_ns of the oldest (0: none) */
};

struct eng_export_mark;
typedef void (*eng_export_mark_done_fn)(struct eng_export_mark *req);

/* Records that `kind` was done for a segment. status FMT_E_NOT_FOUND: no
 * such segment of that tenant; FMT_E_INVALID: ref too long; -errno: the
 * manifest write failed (nothing is recorded; the shard stops appends). */
struct eng_export_mark {
	struct eng_req_hdr hdr;
	struct fmt_str tenant;
	uint64_t segment_id;
	enum eng_export_kind kind;
	struct fmt_str ref;             /* the S3 version id for REPLICATE */
	eng_export_mark_done_fn done;
	void *ctx;
	int status;
	void *next;                     /* engine-private */
};

int eng_export_list_submit(struct eng_producer *p, struct eng_export_list *req);
int eng_export_mark_submit(struct eng_producer *p, struct eng_export_mark *req);

/* The fetcher's completion of eng_fetch_req (any thread): status 0 when
 * dest_path holds the segment, else an error for the waiting requests. */
void eng_fetch_done(struct eng_engine *eng, uint32_t shard, uint64_t segment_id, int status);

/* An eventfd that becomes readable when a shard sealed a segment (for
 * exporters to wake up at once rather than on their next poll). */
int eng_seal_event_fd(const struct eng_engine *eng);

/* ---- synchronous helpers (tools, tests) --------------------------------- */

/* Submit and wait for the callback on this thread (req->done may be NULL).
 * Returns the request's status, or the submit error. */
int eng_append_wait(struct eng_producer *p, struct eng_append *req);
int eng_search_wait(struct eng_producer *p, struct eng_search *req);
int eng_count_wait(struct eng_producer *p, struct eng_count *req);
int eng_verify_wait(struct eng_producer *p, struct eng_verify *req);
int eng_export_list_wait(struct eng_producer *p, struct eng_export_list *req);
int eng_export_mark_wait(struct eng_producer *p, struct eng_export_mark *req);

/* ---- stats (for metrics) ------------------------------------------------ */

/* Why a tenant's rows were sealed, in the order a round prefers them. */
enum eng_seal_reason {
	ENG_SEAL_RETRY,   /* rows frozen by a round that failed */
	ENG_SEAL_SIZE,    /* seal_rows or seal_bytes reached */
	ENG_SEAL_AGE,     /* oldest row seal_age old */
	ENG_SEAL_WAL,     /* oldest row past wal_retain_bytes of WAL */
	ENG_SEAL_MEMORY,  /* the shard's memtables past half their budget */
	ENG_SEAL_REASONS
};
extern const char *const eng_seal_reason_names[ENG_SEAL_REASONS];

#define ENG_WAL_RECYCLE_FILES_MAX 64

/* Latency histogram bounds (ns) of the engine's stats: 100 µs to 10 s. */
#define ENG_LATENCY_BOUNDS 16
extern const uint64_t eng_latency_bounds_ns[ENG_LATENCY_BOUNDS];

struct eng_shard_stats {
	uint64_t events_appended, events_duplicate;
	uint64_t batches_committed;     /* append requests acknowledged */
	uint64_t requests_rejected_invalid, requests_rejected_budget, requests_rejected_rate;
	uint64_t requests_rejected_disk;
	uint64_t wal_bytes_written, wal_fsyncs, wal_files;
	uint64_t wal_slow_commits;      /* commits that took at least slow_commit_ns */
	/* Time the shard thread spent blocked in file-system calls it makes
	 * itself (WAL rotations, retiring WAL files after a seal round): its
	 * appends and completions wait meanwhile. */
	uint64_t shard_blocked_ns;
	/* WAL rotations, and those that created the next file on the shard
	 * thread because the seal worker had not created it ahead. */
	uint64_t wal_rotations, wal_rotations_inline;
	/* How long each rotation held the shard thread (closing the full
	 * file, waiting for the worker's spare or creating the file itself):
	 * appends queue meanwhile. Histogram as fsync_hist below. */
	uint64_t wal_rotation_ns_total, wal_rotation_ns_max;
	uint64_t wal_rotation_hist[ENG_LATENCY_BOUNDS + 1];
	/* WAL generations started in a recycled file, and the free files
	 * kept for it now (at most wal_recycle_files). */
	uint64_t wal_recycled, wal_free_files;
	/* Group commits: wal_fsyncs counts them; fsync_ns_* measure each from
	 * the write's submission to the shard seeing the fsync complete, so
	 * they include the write and any wait for the shard thread. */
	uint64_t fsync_ns_total, fsync_ns_max;
	/* The same durations as a histogram: fsync_hist[i] counts those in
	 * (eng_latency_bounds_ns[i-1], eng_latency_bounds_ns[i]]; the last
	 * entry those above every bound. */
	uint64_t fsync_hist[ENG_LATENCY_BOUNDS + 1];
	uint64_t segments_sealed, segments_local, segment_bytes_local;
	/* Paced segment writing (seal_write_step_bytes): steps written back,
	 * and those that took the rest of their round at once because the
	 * memtables were past 3/4 of the budget (seal.c). */
	uint64_t seal_write_steps, seal_write_steps_hurried;
	/* Segments sealed, by why their tenant was picked (enum eng_seal_reason). */
	uint64_t segments_sealed_by[ENG_SEAL_REASONS];
	uint64_t segments_replicated, segments_mirrored;  /* marked in the manifest */
	uint64_t segments_remote;       /* local file removed: in S3 only */
	uint64_t remote_fetches, remote_fetch_errors, remote_cache_bytes;
	uint64_t segments_open, segments_evicted;  /* the open-file cache */
	/* The footer cache: footers read from files (not resident), dropped
	 * for room, and the bytes it holds. */
	uint64_t footer_reads, footers_evicted, footers_bytes;
	/* The decoded-block cache (engine/block_cache.c): lookups served from
	 * it and not, blocks evicted for room, and the bytes it holds. */
	uint64_t block_cache_hits, block_cache_misses, block_cache_evictions;
	uint64_t block_cache_bytes;
	/* Block decodes of queries run in batches with the query helpers, and
	 * those a helper ran (engine/helper.c). */
	uint64_t query_decode_jobs, query_decode_jobs_helped;
	uint64_t memtable_bytes, memtable_rows;
	uint64_t dedup_entries, dedup_evicted_early;
	uint64_t tenants;
	uint64_t searches, verifies;
	uint64_t counts, count_rows_scanned;
	uint64_t counts_refused;        /* over count_groups_max or count_scan_rows_max */
	uint64_t queue_full;            /* submits refused because a queue was full */
	int io_backend;                 /* enum eng_io_backend */
	bool failed;                    /* write path stopped after an I/O error */
	bool disk_full;                 /* appends refused: disk budget or reserve */
	uint64_t disk_used_bytes;       /* WAL (upper bound) + local segments */
	/* How many times the shard published these stats (once per turn of
	 * its loop): a reader that sees it advance by two knows that every
	 * request completed before the first read is counted. */
	uint64_t publishes;
};

/* Copies shard i's counters; they are updated by the shard thread with
 * relaxed atomics, so a snapshot is consistent per field, not across. */
void eng_shard_stats(const struct eng_engine *eng, uint32_t shard, struct eng_shard_stats *out);

#endif
