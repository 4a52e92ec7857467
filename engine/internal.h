/* SPDX-License-Identifier: Apache-2.0
 *
 * internal.h — the engine's private structures, shared by its files.
 *
 * A shard owns: its thread, its eng_io instance, its WAL files, its
 * manifest, its tenants (a hash map of struct eng_tenant), each tenant's
 * memtables and list of sealed segments, and its dedup memory. Nothing in a
 * shard is touched by another thread except the SPSC queues, the wake-up
 * eventfd and the relaxed-atomic stats.
 *
 * On disk, per shard (DESIGN.md §7):
 *   <data>/shard-NNN/wal/wal-<gen:016x>.log    WAL files (record.h framing)
 *   <data>/shard-NNN/segments/<id:016x>.hseg  sealed segments
 *   <data>/shard-NNN/manifest.log             manifest (record.h framing)
 *
 * Invariants (checked by ASSERT where cheap):
 *  I1 A tenant's events have seq 1, 2, ... with no gap, across its
 *     segments (in manifest order), its sealing memtable and its active
 *     memtable, in that order.
 *  I2 tenant->next_seq - 1 == the last seq encoded into the WAL buffer;
 *     tenant->chain is the chain value after it.
 *  I3 Rows of a memtable with seq <= tenant->durable_seq are durable in the
 *     WAL; searches and seals see only those rows.
 *  I4 A WAL file is deleted only when every event in it is in a segment
 *     whose manifest record is durable (its generation is below every
 *     memtable's wal_gen_min and below the active file's).
 *  I5 A segment file exists under its final name only after its bytes were
 *     fsync'd; it counts as stored only once its manifest record is
 *     durable. Recovery deletes segment files the manifest does not name.
 */
#ifndef HODEI_ENGINE_INTERNAL_H
#define HODEI_ENGINE_INTERNAL_H

#include "engine/dedup.h"
#include "engine/engine.h"
#include "engine/spsc.h"
#include "format/hash.h"
#include "format/record.h"
#include "format/segment.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

enum eng_req_kind {
	ENG_REQ_APPEND = 1,
	ENG_REQ_SEARCH = 2,
	ENG_REQ_VERIFY = 3,
	ENG_REQ_EXPORT_LIST = 4,
	ENG_REQ_EXPORT_MARK = 5,
	ENG_REQ_COUNT = 6,
};

int64_t eng_now_ns(void);      /* CLOCK_REALTIME in ns */
int64_t eng_mono_ns(void);     /* CLOCK_MONOTONIC in ns */
/* Counts a duration in a stats histogram (bounds eng_latency_bounds_ns),
 * its running total and its maximum. */
void eng_latency_note(uint64_t hist[ENG_LATENCY_BOUNDS + 1], uint64_t *total, uint64_t *max,
		      uint64_t ns);
void eng_log(const struct eng_engine *eng, enum eng_log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* ---- memtable ----------------------------------------------------------- */

/* A tenant's unsealed rows: an arena of canonical event encodings that
 * never moves (a list of chunks) and growable arrays of row views into it.
 * Row i's view, chain value and event hash stay valid until the memtable
 * is freed. Used by the owning shard thread only. */
struct eng_memtable {
	struct eng_arena_chunk *chunks;   /* newest first */
	uint64_t arena_bytes;
	uint64_t borrowed_bytes;          /* canonical bytes left in a WAL mapping */
	struct fmt_event *rows;
	uint8_t (*chains)[FMT_HASH_BYTES];
	uint8_t (*hashes)[FMT_HASH_BYTES];  /* event hash: SHA-256 of canon */
	const uint8_t **canon;            /* row's canonical bytes in the arena */
	uint32_t *canon_len;
	uint64_t *gen;                    /* WAL generation holding the row */
	uint32_t row_count;
	uint32_t row_cap;
	uint64_t first_seq;               /* seq of row 0 (0 when empty) */
	uint8_t chain_before[FMT_HASH_BYTES];
	int64_t oldest_received_ns;       /* for the age threshold */
	int64_t min_occurred_ns, max_occurred_ns;
	uint64_t wal_gen_min;             /* oldest WAL generation holding its rows */
};

void eng_memtable_init(struct eng_memtable *m, uint64_t first_seq,
		       const uint8_t chain_before[FMT_HASH_BYTES]);
void eng_memtable_free(struct eng_memtable *m);
/* Bytes the memtable holds (arena + arrays), for the shard budget. */
uint64_t eng_memtable_bytes(const struct eng_memtable *m);
/* Most bytes that adding `rows` rows of `bytes` canonical bytes may add to
 * eng_memtable_bytes(m): the budget check uses it before anything changes. */
uint64_t eng_memtable_growth(const struct eng_memtable *m, uint32_t rows, uint64_t bytes);
/* Rows with seq <= durable_seq (I3). */
uint32_t eng_memtable_visible(const struct eng_memtable *m, uint64_t durable_seq);
/* Moves rows [n, row_count) into `rest`, a new memtable whose chain_before
 * is chains[n - 1], and keeps rows [0, n) in m without moving them. Only
 * the moved rows are copied (their views are rebased, not decoded again).
 * Returns 0 or FMT_E_NOMEM (then m is unchanged and rest empty). */
int eng_memtable_split(struct eng_memtable *m, uint32_t n, struct eng_memtable *rest);
/* Copies a canonical encoding into the arena and appends its view with its
 * chain value. ev is canon decoded (views into canon, attributes included:
 * fmt_event_canon_encode_view() gives it); the row's view is rebased onto
 * the copy. Returns 0 or FMT_E_NOMEM. */
int eng_memtable_add(struct eng_memtable *m, const uint8_t *canon, uint32_t canon_len,
		     const struct fmt_event *ev, const uint8_t hash[FMT_HASH_BYTES],
		     const uint8_t chain[FMT_HASH_BYTES], uint64_t wal_gen);
/* WAL replay: canon lies in a replayed WAL file's mapping, which the
 * shard keeps until that file is reclaimed (no row is in it any more), and
 * ev is canon already decoded (views into canon, attributes included).
 * The row keeps canon and ev's views where they are: no copy, no second
 * decode, and no anonymous memory to fault in for the bytes. They still
 * count in eng_memtable_bytes(). */
int eng_memtable_add_borrowed(struct eng_memtable *m, const uint8_t *canon, uint32_t canon_len,
			      const struct fmt_event *ev, const uint8_t hash[FMT_HASH_BYTES],
			      const uint8_t chain[FMT_HASH_BYTES], uint64_t wal_gen);

/* ---- segments ----------------------------------------------------------- */

/* A sealed segment as the manifest names it. The footer (fmt_segment) is
 * opened lazily on first read and kept while the segment is local. */
struct eng_segment {
	uint64_t segment_id;
	uint64_t first_seq, last_seq;
	uint32_t row_count;
	uint64_t file_size;
	uint64_t file_checksum;            /* XXH3-64 of the whole file */
	int64_t min_occurred_ns, max_occurred_ns;
	int64_t min_received_ns, max_received_ns;
	uint8_t chain_before[FMT_HASH_BYTES];
	uint8_t chain_after[FMT_HASH_BYTES];
	uint8_t merkle_root[FMT_HASH_BYTES];
	bool replicated, mirrored;         /* export marks in the manifest */
	bool remote;                       /* local file removed (FMT_REC_REMOVE) */
	bool cached, fetching;             /* remote: a copy in <shard>/cache/ */
	int fetch_error;                   /* last failed fetch, 0 once fetched */
	uint64_t cache_used_gen;           /* for the cache's LRU */
	char *version_id;                  /* S3 version id once replicated (malloc) */
	struct fmt_segment *footer;        /* NULL unless in the footer cache */
	uint32_t footer_bytes;             /* fmt_segment_mem_bytes(footer) */
	int fd;                            /* -1 unless in the open-file cache */
	uint64_t used_gen;                 /* shard's req_gen when last used */
};

/* A clock-ordered set of segments holding one resource: the shard's open
 * files (bounded by open_segments_max) or its parsed footers (bounded by
 * footer_cache_bytes, `bytes` counting them). */
struct eng_segment_cache {
	struct eng_segment **slots;
	uint32_t count, cap, hand;
	uint64_t bytes;
};

/* The shard's cache of decoded segment blocks (block_cache.c), bounded
 * by cfg.block_cache_bytes; no table when that is 0 (off). */
struct eng_block_entry {
	uint64_t segment_id;
	uint32_t block;
	uint32_t pins;                       /* queries holding blk */
	bool dropped;                        /* out of the table, freed at the last release */
	struct fmt_block *blk;
	uint64_t bytes;                      /* fmt_block_mem_bytes() + the entry */
	struct eng_block_entry *hnext;       /* hash chain */
	struct eng_block_entry *prev, *next; /* LRU list (pins == 0) or the pinned list */
};

struct eng_block_cache {
	uint64_t cap_bytes, bytes;           /* bytes <= cap_bytes */
	struct eng_block_entry **buckets;    /* NULL: off */
	uint32_t bucket_mask;
	struct eng_block_entry lru;          /* sentinel: next is the most recently used */
	struct eng_block_entry pinned;       /* sentinel: entries lent to a query */
};

/* Manifest record payload for FMT_REC_REMOVE (docs/FORMAT.md §6). */
#define ENG_MANIFEST_REMOVE_BYTES (1 + FMT_TENANT_MAX + 8 + 8)

/* Manifest record payload for FMT_REC_EXPORT (docs/FORMAT.md §6). */
#define ENG_MANIFEST_EXPORT_BYTES (1 + FMT_TENANT_MAX + 8 + 1 + 8 + 2 + ENG_EXPORT_REF_MAX)

/* One manifest append (record bytes) queued on the shard's manifest
 * writer: writes go one at a time, each at the end of the file, each
 * followed by an fsync; `done` runs after the fsync (err 0 or -errno). */
struct eng_manifest_write {
	struct eng_manifest_write *next;
	const uint8_t *buf;
	uint32_t len;
	void (*done)(struct eng_manifest_write *w, int err);
	void *ctx;
};

/* Manifest record payload for FMT_REC_SEGMENT (docs/FORMAT.md §6). */
#define ENG_MANIFEST_SEGMENT_BYTES (1 + FMT_TENANT_MAX + 8 * 11 + 4 + 3 * FMT_HASH_BYTES)

/* ---- tenants ------------------------------------------------------------ */

struct eng_tenant {
	char name[FMT_TENANT_MAX + 1];
	uint8_t name_len;
	uint64_t key;                      /* hash of the name: dedup key, map key */
	uint64_t next_seq;                 /* I2 */
	uint64_t durable_seq;              /* I3 */
	uint8_t chain[FMT_HASH_BYTES];     /* I2 */
	uint64_t sealed_seq;               /* last seq in a segment (0: none) */
	uint8_t sealed_chain[FMT_HASH_BYTES];
	/* Rows a seal round froze: all durable, read in place by the seal
	 * worker and by queries until their segment replaces them in one
	 * step; still here after a failed round, for the retry. Empty (no
	 * rows) otherwise. Appends go to `active`, which follows it in seq. */
	struct eng_memtable sealing;
	struct eng_memtable active;
	struct eng_segment **segments;     /* manifest order == seq order */
	uint32_t segment_count, segment_cap;
	double rate_tokens;                /* token bucket of tenant_rate_eps */
	int64_t rate_at_ns;                /* when rate_tokens was last refilled */
};

/* ---- WAL ---------------------------------------------------------------- */

/* One write buffer of the double-buffered WAL: requests encoded into it are
 * committed together (one write + one fsync). */
struct eng_wal_buf {
	uint8_t *data;
	uint64_t len, cap;
	struct eng_append **reqs;          /* requests whose records it holds */
	uint32_t req_count, req_cap;
};

struct eng_wal {
	char dir[4096];
	int fd;
	uint64_t gen;                      /* active file's generation */
	uint64_t salt;                     /* active file's salt: seeds its records' checks */
	uint64_t size;                     /* bytes written to the active file */
	uint64_t *old_gens;                /* generations still on disk, oldest first */
	uint32_t old_count, old_cap;
	struct eng_wal_buf buf[2];
	int filling;                       /* index of the buffer being filled */
	bool in_flight;                    /* the other buffer is being written */
	struct eng_io_op write_op, fsync_op;
	int64_t commit_started_ns;
	int64_t write_done_ns;             /* the commit's write completed */
	int write_result;
	/* What the shard's disk and thread did besides the commit in flight,
	 * as at its start: a slow commit (cfg.slow_commit_ns) logs the
	 * difference. At most one line per second; the others are counted. */
	struct eng_io_counts commit_io;
	uint64_t commit_rotations, commit_blocked_ns;
	int64_t slow_logged_ns;
	uint64_t slow_unlogged;
	/* The next generation's file, created ahead by the seal worker so
	 * that a rotation does not wait for open, header fsync and directory
	 * fsync on the shard thread (wal.c). Guarded by the shard's seal_lock. */
	uint64_t spare_want;               /* generation asked for; 0: none */
	bool spare_busy;                   /* the worker is creating it */
	int spare_fd;                      /* -1: none ready */
	uint64_t spare_gen, spare_salt;
	bool spare_recycled;               /* the spare is a recycled file */
	/* Retired files kept to be recycled (wal-<gen>.free), oldest first;
	 * at most cfg.wal_recycle_files. Guarded by the shard's seal_lock:
	 * the shard thread retires, the seal worker recycles. */
	uint64_t free_gens[ENG_WAL_RECYCLE_FILES_MAX];
	uint32_t free_count;
	/* Replayed files still mapped because memtable rows borrow their
	 * bytes; unmapped when the file is reclaimed, oldest first. */
	struct eng_wal_map {
		uint64_t gen;
		const uint8_t *buf;
		size_t len;
	} *maps;
	uint32_t map_count;
};

/* ---- shard -------------------------------------------------------------- */

struct eng_shard {
	struct eng_engine *eng;
	uint32_t id;
	char dir[4096];
	pthread_t thread;
	bool thread_started;
	struct eng_io *io;
	int wake_fd;                       /* eventfd: producers wake the shard */
	int loop_fd;                       /* epoll: wake_fd + hook watches; the I/O backend waits on it */
	struct eng_watch wake_watch;
	bool hook_started;
	_Atomic bool sleeping;             /* set before a blocking wait */
	_Atomic uint64_t queue_full;       /* producers' refused submits (relaxed) */
	uint32_t *woken;                   /* producers to wake at the end of the tick */
	uint32_t woken_count;
	uint8_t *woken_mark;               /* [producers_max] */
	struct eng_spsc *inbox;            /* [producers_max], producer -> shard */

	struct eng_tenant **tenant_slots;  /* open addressing by key */
	uint32_t tenant_slot_count;        /* power of two */
	uint32_t tenant_count;

	struct eng_wal wal;
	int manifest_fd;
	uint64_t manifest_size;
	/* The manifest writer (manifest.c): one write + fsync in flight. */
	struct eng_manifest_write *man_head, *man_tail, *man_cur;
	struct eng_io_op man_op_write, man_op_fsync;
	int man_write_result;
	/* Local retention and remote reads (remote.c). */
	int64_t retention_next_ns;
	struct eng_segment **removing;     /* segments whose REMOVE record is in flight */
	uint32_t removing_count;
	uint8_t *remove_buf;
	struct eng_manifest_write remove_write;
	struct eng_req_hdr *parked_head, *parked_tail; /* waiting for fetches */
	pthread_mutex_t fetch_mu;          /* fetch completions from the fetcher's thread */
	struct eng_fetch_done_item { uint64_t segment_id; int status; } *fetch_done;
	uint32_t fetch_done_count, fetch_done_cap;
	uint64_t cache_bytes;
	uint32_t fetches_outstanding;      /* fetches started, completion not applied */
	/* Export marks waiting for their manifest record (export.c). */
	struct eng_export_mark *marks_head, *marks_tail;
	uint8_t *marks_buf;
	struct eng_export_mark **marks_inflight;
	uint32_t marks_inflight_count, marks_cap;
	struct eng_manifest_write marks_write;
	uint64_t next_segment_no;
	struct eng_dedup *dedup;
	struct eng_segment_cache open_segments;  /* files */
	struct eng_segment_cache footers;        /* parsed footers */
	struct eng_block_cache block_cache;
	uint64_t req_gen;                  /* bumped per search / verify */
	uint64_t memtable_bytes;
	bool failed;                       /* write path stopped after an I/O error */
	bool disk_full;                    /* over its disk budget or under the reserve */
	int64_t disk_next_check_ns;
	/* Footer warm-up after a start (eng_footers_warm): the next tenant
	 * slot and how many of its segments, newest first, were visited. */
	uint32_t warm_slot, warm_seg;
	bool warm_done;

	/* The seal in progress (one round at a time per shard), and the
	 * shard's seal worker, which builds segment images off the shard
	 * thread and creates the WAL's spare file. seal_lock guards
	 * seal_job, seal_worker_stop and the WAL's spare_* fields only;
	 * spare_cond signals the end of a spare's creation. */
	struct eng_seal *seal;
	pthread_t seal_worker;
	bool seal_worker_started;
	pthread_mutex_t seal_lock;
	pthread_cond_t seal_cond;
	pthread_cond_t spare_cond;
	struct eng_seal *seal_job;
	bool seal_worker_stop;
	bool seal_wanted;                  /* a tenant crossed seal_rows/seal_bytes */
	int64_t seal_scan_ns;              /* last scan for aged memtables */
	int64_t seal_retry_ns;             /* after a failed seal, not before */

	/* The query helpers (helper.c): mu guards everything but `next`
	 * and the threads' own decoders. */
	struct eng_helpers {
		struct eng_helper *all;    /* count started */
		uint32_t count;
		bool inited;               /* mu and the conds exist */
		pthread_mutex_t mu;
		pthread_cond_t work, idle;
		struct eng_decode_job *jobs; /* the batch on offer; NULL: none */
		uint32_t job_count;
		atomic_uint next;          /* the next job to take */
		uint64_t gen;              /* batches offered */
		uint32_t busy;             /* helpers inside a batch */
		uint32_t ran;              /* jobs of this batch run by helpers */
		bool stop;
	} helpers;

	struct fmt_decoder *decoder;       /* segment block decoding (zstd context) */
	uint8_t rand_buf[4096];            /* randomness for server-assigned ids */
	uint32_t rand_used;                /* starts full: sizeof(rand_buf) */

	struct eng_shard_stats stats;      /* written by the shard thread only */
	struct eng_shard_stats published;  /* copied from stats once per tick */
	pthread_mutex_t stats_lock;        /* guards published */
};

struct eng_producer {
	struct eng_engine *eng;
	uint32_t index;
	int event_fd;
	struct eng_spsc *outbox;           /* [shards], shard -> producer */
	uint32_t *pending_shard;           /* [shards]: bounded by queue_depth */
	uint32_t pending;
	bool in_use;
};

struct eng_engine {
	struct eng_config cfg;
	char data_dir[4096];
	uint32_t shard_count;
	struct eng_shard *shards;
	struct eng_producer *producers;    /* [producers_max] */
	pthread_mutex_t producers_lock;    /* open/close only, never the data path */
	_Atomic bool stopping;
	int seal_event_fd;                 /* eventfd written after each seal round */
	_Atomic bool power_cut;            /* eng_power_cut(): stop where you are */
};

/* shard.c */
int eng_shard_start(struct eng_shard *s);
void eng_shard_wake(struct eng_shard *s);
void eng_complete(struct eng_shard *s, struct eng_req_hdr *req);
struct eng_tenant *eng_tenant_find(struct eng_shard *s, struct fmt_str name);
struct eng_tenant *eng_tenant_get(struct eng_shard *s, struct fmt_str name, int *err);
uint64_t eng_tenant_key(struct fmt_str name);

/* wal.c */
int eng_wal_open(struct eng_shard *s);
int eng_wal_rotate(struct eng_shard *s);
int eng_fsync_dir(const char *dir);
void eng_wal_close(struct eng_wal *w);
int eng_wal_replay(struct eng_shard *s);
void eng_wal_reclaim(struct eng_shard *s);

/* manifest.c */
int eng_manifest_load(struct eng_shard *s);
void eng_manifest_append(struct eng_shard *s, struct eng_manifest_write *w);
void eng_manifest_encode_export(const struct eng_tenant *t, uint64_t segment_id, uint8_t kind,
				int64_t at_ns, struct fmt_str ref,
				uint8_t out[ENG_MANIFEST_EXPORT_BYTES]);
int eng_manifest_decode_export(const uint8_t *in, uint32_t len, char tenant[FMT_TENANT_MAX + 1],
			       uint64_t *segment_id, uint8_t *kind, int64_t *at_ns,
			       char ref[ENG_EXPORT_REF_MAX + 1]);
struct eng_segment *eng_tenant_segment(struct eng_tenant *t, uint64_t segment_id);
int eng_segment_set_export(struct eng_segment *g, uint8_t kind, const char *ref);
/* remote.c */
void eng_retention_tick(struct eng_shard *s);
/* Before a search, count or verify: true when every segment it needs is
 * readable; otherwise fetches are started and the request must be parked.
 * *err is set when a needed segment cannot be fetched (fail the request). */
bool eng_remote_ready(struct eng_shard *s, struct eng_req_hdr *hdr, int *err);
void eng_park(struct eng_shard *s, struct eng_req_hdr *hdr);
/* Sets the status of a read request (search, count, verify). */
void eng_read_req_set_status(struct eng_req_hdr *hdr, int status);
/* Applies fetch completions; returns the parked requests to run again. */
struct eng_req_hdr *eng_fetch_progress(struct eng_shard *s);
void eng_remote_free(struct eng_shard *s);
void eng_segment_read_path(const struct eng_shard *s, const struct eng_segment *g, char *out,
			   size_t cap);
int eng_manifest_decode_remove(const uint8_t *in, uint32_t len, char tenant[FMT_TENANT_MAX + 1],
			       uint64_t *segment_id);
/* export.c */
void eng_export_list_run(struct eng_shard *s, struct eng_export_list *req);
void eng_export_mark_queue(struct eng_shard *s, struct eng_export_mark *req);
void eng_export_marks_flush(struct eng_shard *s);
void eng_export_free(struct eng_shard *s);
int eng_manifest_encode_segment(const struct eng_tenant *t, const struct eng_segment *seg,
				uint8_t out[ENG_MANIFEST_SEGMENT_BYTES]);
int eng_manifest_decode_segment(const uint8_t *p, uint32_t len, char tenant[FMT_TENANT_MAX + 1],
				struct eng_segment *seg);
/* Appends a segment to the tenant's list and advances sealed_seq and
 * sealed_chain; next_seq, chain and durable_seq are not touched. */
void eng_tenant_add_segment(struct eng_tenant *t, struct eng_segment *seg);

/* seal.c */
/* Starts a seal round when one is due (never while stopping). */
void eng_seal_maybe(struct eng_shard *s);
/* Moves a round on once its worker built the images (always, even while
 * stopping, so that the shard can become quiescent). */
void eng_seal_progress(struct eng_shard *s);
/* True when the worker finished building the round in progress. */
bool eng_seal_ready(const struct eng_shard *s);
bool eng_seal_busy(const struct eng_shard *s);
int eng_seal_worker_start(struct eng_shard *s);
void eng_seal_worker_stop(struct eng_shard *s);
/* wal.c: the spare file. Worker thread, seal_lock held (released while
 * the file is created): creates the generation asked for. */
void eng_wal_spare_make(struct eng_shard *s);
/* Shard thread: asks the worker for generation gen (no-op without one). */
void eng_wal_spare_request(struct eng_shard *s, uint64_t gen);
/* After the worker stopped: closes and removes an unused spare. */
void eng_wal_spare_drop(struct eng_shard *s);
/* Index of the last of the `count` WAL files (sorted generations in dir)
 * that holds more than its header, or 0 when none does: a torn tail is
 * expected there (an unacknowledged write), not in older files. Files
 * after it are spares, created ahead and never written. */
uint32_t eng_wal_last_used(const char *dir, const uint64_t *gens, uint32_t count);
/* Frees a seal left in flight by a power cut (its I/O never completes). */
void eng_seal_abandon(struct eng_shard *s);
void eng_segment_path(const struct eng_shard *s, uint64_t segment_id, char *out, size_t cap);
/* Closes seg's file, frees its footer, and drops it from both caches. */
void eng_segment_close(struct eng_shard *s, struct eng_segment *seg);
/* Reads exactly len bytes at off, continuing short reads and EINTR.
 * Returns 0, -errno, or FMT_E_TRUNCATED when the file ends first. */
int eng_pread_full(int fd, uint8_t *buf, size_t len, uint64_t off);
/* Makes seg's parsed footer resident (reading it, and opening the file,
 * when it is not) and marks the segment used by the current request, so
 * that neither its footer nor its file is dropped before the request
 * ends. */
int eng_segment_open_footer(struct eng_shard *s, struct eng_segment *seg);
/* The same for seg's file: seg->fd is open afterwards. */
int eng_segment_open_fd(struct eng_shard *s, struct eng_segment *seg);
/* Seal commit: keeps the footer the seal worker parsed from the image. */
void eng_segment_keep_footer(struct eng_shard *s, struct eng_segment *seg,
			     struct fmt_segment *footer);
void eng_segment_cache_free(struct eng_shard *s);
/* After a request: drops what the caches hold beyond their bounds. */
void eng_segment_cache_release(struct eng_shard *s);
/* Loads segment footers while the shard is idle, for at most budget_ns;
 * returns true while some remain to load (see seal.c). */
bool eng_footers_warm(struct eng_shard *s, int64_t budget_ns);
void eng_segment_free(struct eng_segment *seg);
/* Reads and decodes the columns in col_mask of block b (pread). */
int eng_segment_read_block(struct eng_shard *s, struct eng_segment *seg, uint32_t b,
			   uint32_t col_mask, struct fmt_block **out);
int eng_dedup_from_segments(struct eng_shard *s);

/* block_cache.c (shard thread only) */
/* Sizes the table for cap_bytes (0: off, no table). 0 or FMT_E_NOMEM. */
int eng_block_cache_init(struct eng_block_cache *c, uint64_t cap_bytes);
void eng_block_cache_free(struct eng_block_cache *c);
/* The cached block (segment_id, block), which holds every column, pinned
 * until eng_block_cache_release(); NULL on a miss (or when off). Counts
 * hits and misses. */
struct fmt_block *eng_block_cache_get(struct eng_shard *s, uint64_t segment_id, uint32_t block);
/* Offers a block just decoded after a miss. true: the cache took it (a
 * full decode, FMT_COLS_ALL, that fits once least recently used entries
 * are evicted) and it is pinned; false: the caller keeps it (it is freed
 * by eng_block_cache_release() all the same). */
bool eng_block_cache_put(struct eng_shard *s, uint64_t segment_id, uint32_t block,
			 struct fmt_block *blk);
/* Gives back a block from get() or put(): unpins a cached one, frees one
 * the cache did not take. NULL is ignored. */
void eng_block_cache_release(struct eng_shard *s, struct fmt_block *blk);
/* Forgets every block of a segment whose file goes away. */
void eng_block_cache_drop_segment(struct eng_shard *s, uint64_t segment_id);

/* read.c: what search and count share (filters, memtable rows, segment reads) */

/* Checks the tenant id and the filter (FMT_E_INVALID) and gives the time
 * range [*lo_ns, *hi_ns): from_ns or INT64_MIN, to_ns or now. */
int eng_filter_prepare(struct fmt_str tenant, const struct eng_filter *f, int64_t *lo_ns,
		       int64_t *hi_ns);
/* The columns the filter's conditions other than time read. */
uint32_t eng_filter_columns(const struct eng_filter *f);
/* Whether ev passes the filter, time range [lo_ns, hi_ns) included. */
bool eng_filter_row(const struct eng_filter *f, int64_t lo_ns, int64_t hi_ns,
		    const struct fmt_event *ev);
/* The rows of memtable m (t->sealing or t->active) a query sees,
 * [*first, *end): durable (I3) and in no segment yet. Returns whether
 * there are any. */
bool eng_memtable_unsealed(const struct eng_tenant *t, const struct eng_memtable *m,
			   uint32_t *first, uint32_t *end);

/* One query's reads of one tenant's segments, on the shard thread. */
/* One decode of a query's batch (read.c, helper.c): the columns in mask
 * of block `block`, from the stored chunk bytes chunks[c]. */
struct eng_decode_job {
	const struct fmt_segment *footer;
	const uint8_t *const *chunks;   /* FMT_COL_COUNT pointers */
	uint32_t block, mask;
	struct fmt_block *out;          /* set by the run, with rc */
	int rc;
};

/* Starts cfg.query_helpers helper threads for s (0: none); stops them
 * (a no-op when none were started). */
int eng_helpers_start(struct eng_shard *s);
void eng_helpers_stop(struct eng_shard *s);
/* Sets the CPUs the shard's helpers may run on; 0 or the first errno. */
int eng_helpers_pin(struct eng_shard *s, const cpu_set_t *cpus);
/* The calling thread (one of shard s's) asks for a scheduler slice of ns
 * (0: leaves it as it is); a refusal is logged (`who` names the thread)
 * and harmless. */
void eng_thread_slice_ask(struct eng_shard *s, const char *who, int64_t ns);
/* Shard thread: runs jobs[0..n), with the shard's helpers when it has
 * some and n > 1; returns when every job is done (helper.c: H1-H3). */
void eng_decode_jobs_run(struct eng_shard *s, struct eng_decode_job *jobs, uint32_t n);

/* Most blocks one eng_query_blocks() call takes. */
#define ENG_QUERY_BLOCKS_MAX 8u

/* A block a query wants: the segment (opened by eng_query_segment_open),
 * the block index, and the block got. */
struct eng_block_want {
	struct eng_segment *seg;
	uint32_t block;
	struct fmt_block *blk;
};

struct eng_query {
	struct eng_shard *s;
	struct eng_tenant *t;
	const char *what;       /* "search", "count": for log lines */
	uint8_t *io_buf;        /* one block's stored chunks */
	size_t io_cap;
	struct eng_query_profile *prof;  /* the request's */
	int64_t start_ns;
	uint64_t footer_reads_before;
};
/* Starts a query run on shard s: q is set up (t still NULL) and the
 * request's profile prof is reset, its queued time taken from h. */
void eng_query_begin(struct eng_query *q, struct eng_shard *s, const char *what,
		     const struct eng_req_hdr *h, struct eng_query_profile *prof);
/* Ends it: completes the profile and frees q's buffers. */
void eng_query_end(struct eng_query *q);
/* Opens seg (through the open-segment cache, marking it used by the
 * request) and checks its footer against the manifest and the tenant.
 * Returns 0, FMT_E_CORRUPT, -errno, FMT_E_NOMEM (logged). */
int eng_query_segment_open(struct eng_query *q, struct eng_segment *seg);
/* The columns in mask (not 0) of block b of an opened segment, from the
 * shard's block cache (then it holds every column) or read and decoded
 * (a full decode is offered to the cache). Returns 0 or an error
 * (logged); *out is read-only and stays valid until it is given back with
 * eng_query_block_release() (never fmt_block_free()), before the query
 * completes. */
/* The same for n blocks (1 <= n <= ENG_QUERY_BLOCKS_MAX) at once: those
 * not cached are read, then decoded together, beside the shard's query
 * helpers; a full decode is split in two jobs, the wide columns (attributes
 * and details) apart. On success every w[i].blk is set, each given back
 * with eng_query_block_release(); on failure none is (all released). */
int eng_query_blocks(struct eng_query *q, struct eng_block_want *w, uint32_t n, uint32_t mask);
int eng_query_block(struct eng_query *q, struct eng_segment *seg, uint32_t b, uint32_t mask,
		    struct fmt_block **out);
void eng_query_block_release(struct eng_query *q, struct fmt_block *blk);

/* search.c, count.c, verify.c */
void eng_search_run(struct eng_shard *s, struct eng_search *req);
void eng_count_run(struct eng_shard *s, struct eng_count *req);
/* Whether a count can take segment g's rows from the manifest alone (no
 * filter, no group, g wholly inside the time range): it need not be read,
 * nor fetched from S3. */
bool eng_count_from_manifest(const struct eng_count *req, const struct eng_segment *g);
void eng_verify_run(struct eng_shard *s, struct eng_verify *req);

#endif
