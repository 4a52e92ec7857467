/* SPDX-License-Identifier: Apache-2.0
 *
 * io.h — the engine's I/O interface: one instance per shard, used only by
 * that shard's thread. Three backends implement it:
 *
 *   uring  (io_uring.c)  the hot path: one ring per shard; liburing.h is
 *                        included there and nowhere else.
 *   sync   (io_sync.c)   plain pwrite/pread/fdatasync, for kernels or
 *                        sandboxes without io_uring, or when forced.
 *   fault  (io_fault.c)  wraps sync for tests: fails the Nth write or fsync
 *                        with -EIO, and can simulate a crash by dropping
 *                        every write not covered by a completed fsync.
 *
 * Model (TigerBeetle's): the caller owns each struct eng_io_op and keeps it
 * alive until its callback ran. eng_io_submit() queues an op; eng_io_run()
 * submits what is queued, waits until at least one op completes, the
 * wake-up fd is signalled, or the deadline passes, then runs the callbacks
 * of every completed op from a local list — never from inside submit.
 * Ops on one fd complete in any order, except that a FSYNC op submitted
 * after writes is only started once those writes completed (the backends
 * link or order them), so its success covers them. "Same fd" means the
 * same descriptor number: a dup()ed descriptor is not ordered against it.
 * The sync and fault backends run ops one by one in submission order.
 *
 * Results: op->result is 0 for FSYNC and WRITEBACK, or -errno, or a byte
 * count:
 *   WRITE  a short count is continued by the backend, so success means
 *          result == len;
 *   READ   a short count is continued too, until len bytes or end of file,
 *          so result == len, or fewer bytes only when the file ended
 *          (0 when offset is at or past the end).
 */
#ifndef HODEI_ENGINE_IO_H
#define HODEI_ENGINE_IO_H

#include "format/common.h"

#include <fcntl.h>
#include <stdbool.h>

/* What ENG_IO_WRITEBACK asks of sync_file_range(2). */
#define ENG_WRITEBACK_FLAGS \
	(SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER)

enum eng_io_kind {
	ENG_IO_WRITE = 1,
	ENG_IO_READ = 2,
	ENG_IO_FSYNC = 3, /* fdatasync semantics */
	/* Writes [offset, offset + len) of the file back to the device and
	 * waits for it (sync_file_range WAIT_BEFORE | WRITE | WAIT_AFTER):
	 * paces a big write so that it never puts much in the device's queue
	 * at once. It makes nothing durable (no metadata, no cache flush):
	 * only FSYNC does. */
	ENG_IO_WRITEBACK = 4,
};
#define ENG_IO_KINDS 5 /* array size for per-kind counts, indexed by kind */

/* Ops an instance completed so far, by kind, and their lengths (what was
 * asked: a FSYNC counts 0 bytes). What else the shard's disk did while one
 * op waited: the WAL's slow commits report it (shard.c). */
struct eng_io_counts {
	uint64_t ops[ENG_IO_KINDS], bytes[ENG_IO_KINDS];
};

struct eng_io_op;
typedef void (*eng_io_done_fn)(struct eng_io_op *op);

struct eng_io_op {
	enum eng_io_kind kind;
	int fd;
	void *buf;
	uint32_t len;             /* at most ENG_IO_LEN_MAX */
	uint64_t offset;
	int32_t result;
	eng_io_done_fn done;
	void *ctx;
	/* Backend-private. */
	struct eng_io_op *next;
	uint32_t progress;
};

/* result is an int32_t, so one op moves at most this many bytes. */
#define ENG_IO_LEN_MAX ((uint32_t)INT32_MAX)
/* Upper bound of `entries` (io_uring's own limit is 32768 SQEs). */
#define ENG_IO_ENTRIES_MAX 16384u

enum eng_io_backend {
	ENG_IO_AUTO = 0,  /* io_uring if it works here, else sync (and log why) */
	ENG_IO_URING = 1,
	ENG_IO_SYNC = 2,
	ENG_IO_FAULT = 3,
};

struct eng_io_fault_plan {
	uint64_t fail_write_nth;  /* 1-based; 0 = never */
	uint64_t fail_fsync_nth;  /* 1-based; 0 = never */
	/* Every write to a file whose path ends with this (e.g. ".hseg.tmp")
	 * fails; NULL = none. */
	const char *fail_path_suffix;
	/* The nth write and fsync count only ops on files whose path ends
	 * with this (e.g. ".hseg.tmp": the nth segment write); NULL = all. */
	const char *nth_path_suffix;
	int error;                /* the -errno to inject; 0 means -EIO */
};

struct eng_io;

/* Creates a backend instance. entries (1..ENG_IO_ENTRIES_MAX) bounds the
 * ops in flight. wake_fd is an eventfd the instance watches (and is the
 * only reader of; create it with EFD_NONBLOCK), or -1 for none: a write to
 * it from any thread ends the current eng_io_run() early, or the next one
 * if none is running. plan is read for ENG_IO_FAULT only (NULL: never
 * fail). For ENG_IO_AUTO and ENG_IO_URING, *why (may be NULL) receives a
 * static explanation when io_uring was not usable, and NULL otherwise.
 * The uring backend binds to the first thread that calls eng_io_run() on it.
 * Returns 0 or -errno / FMT_E_INVALID. */
int eng_io_create(enum eng_io_backend backend, uint32_t entries, int wake_fd,
		  const struct eng_io_fault_plan *plan, struct eng_io **out, const char **why);
/* Ops still in flight never get their callback; destroy first waits for the
 * kernel to let go of their buffers. Call it from the thread that ran the
 * instance (or after that thread ended), never from a callback. */
void eng_io_destroy(struct eng_io *io);

/* Which backend this instance really is (never AUTO). */
/* Copies the counts of ops completed so far (the instance's thread). */
void eng_io_counts(const struct eng_io *io, struct eng_io_counts *out);

enum eng_io_backend eng_io_backend_of(const struct eng_io *io);
const char *eng_io_backend_name(enum eng_io_backend b);

/* Queues op; never blocks, never runs a callback. The op must not be in
 * flight already. Returns 0, FMT_E_FULL when `entries` ops are already in
 * flight, or FMT_E_INVALID when len > ENG_IO_LEN_MAX or offset > INT64_MAX. */
int eng_io_submit(struct eng_io *io, struct eng_io_op *op);

/* Submits queued ops, waits up to timeout_ns (0: do not wait, <0: no
 * limit) for a completion or a wake-up, runs the callbacks of all
 * completed ops. An op submitted from a callback is queued for the next
 * call. Returns the number of callbacks run, or -errno; the callbacks of
 * completed ops run even when it returns an error. Returns FMT_E_STATE
 * when timeout_ns < 0 and nothing could ever end the wait (no op in flight
 * and no wake_fd). Not reentrant: never call it from a callback. */
int eng_io_run(struct eng_io *io, int64_t timeout_ns);

/* Ops submitted and not yet completed. */
uint32_t eng_io_in_flight(const struct eng_io *io);

/* Fault backend only: forget every write not covered by a completed fsync
 * on its fd, as a power cut would: each fd the backend wrote to is
 * truncated back to the length it had at its last successful fsync (or,
 * if none, when the backend first wrote to it; bytes that were in the file
 * then count as durable). Ops still queued are dropped without their
 * callbacks, as the process would have died; the instance stays usable.
 * Truncation models append-only files, which is what the engine writes:
 * bytes overwritten below the synced length are NOT restored, and crash
 * returns FMT_E_STATE (after truncating) when such a write happened since
 * the last fsync of its file. A failed fsync leaves the synced length
 * where it was; a later successful fsync counts as covering everything,
 * which is kinder than Linux (see io_fault.c). Fds closed before the crash
 * are skipped. Returns 0, FMT_E_STATE (also for other backends) or -errno. */
int eng_io_fault_crash(struct eng_io *io);

/* Fault backend only (0 for other backends): write and fsync ops it
 * attempted, including the ones it failed on purpose. */
uint64_t eng_io_fault_writes(const struct eng_io *io);
uint64_t eng_io_fault_fsyncs(const struct eng_io *io);

/* Resets an eventfd's counter (reads it). On any other fd, such as the
 * shard's epoll loop fd the backends watch as their wake-up fd, the read
 * fails harmlessly: the shard drains its eventfd itself. */
void eng_io_wake_drain(int wake_fd);

#ifdef ENG_IO_BACKEND_IMPL
/* Backend plumbing, for engine/io*.c only (they define ENG_IO_BACKEND_IMPL
 * before including this header): struct eng_io is the part every backend
 * embeds first; io.c owns the queue of submitted ops and the in-flight
 * count, the backends own everything between queue and callback. */
struct eng_io_vtable {
	int (*run)(struct eng_io *io, int64_t timeout_ns);
	void (*destroy)(struct eng_io *io);
};

struct eng_io {
	const struct eng_io_vtable *vt;
	enum eng_io_backend backend;
	uint32_t entries;            /* ceiling of in_flight */
	uint32_t in_flight;          /* submitted, callback not yet started */
	int wake_fd;                 /* -1: none */
	bool running;                /* inside eng_io_run(), callbacks included */
	struct eng_io_op *queue_head; /* submitted, not yet taken by the backend */
	struct eng_io_op *queue_tail;
	struct eng_io_counts done;   /* counted as callbacks are run */
};

/* A FIFO of ops linked through op->next. */
struct eng_io_list {
	struct eng_io_op *head;
	struct eng_io_op *tail;
};

typedef void (*eng_io_exec_fn)(struct eng_io *io, struct eng_io_op *op);

/* io.c */
void eng_io_base_init(struct eng_io *io, const struct eng_io_vtable *vt,
		      enum eng_io_backend backend, uint32_t entries, int wake_fd);
struct eng_io_op *eng_io_take_queue(struct eng_io *io);
void eng_io_list_push(struct eng_io_list *l, struct eng_io_op *op);
int eng_io_complete(struct eng_io *io, struct eng_io_op *head);
int64_t eng_io_now_ns(void);
int eng_io_wake_wait(struct eng_io *io, int64_t timeout_ns);

/* Backend constructors. */
int eng_io_uring_create(uint32_t entries, int wake_fd, struct eng_io **out, const char **why);
int eng_io_sync_create(uint32_t entries, int wake_fd, struct eng_io **out);
int eng_io_fault_create(uint32_t entries, int wake_fd, const struct eng_io_fault_plan *plan,
			struct eng_io **out);

/* io_sync.c, shared with io_fault.c */
void eng_io_sync_exec(struct eng_io_op *op);
int eng_io_sync_run_with(struct eng_io *io, int64_t timeout_ns, eng_io_exec_fn exec);
#endif

#endif
