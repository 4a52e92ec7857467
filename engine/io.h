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
 * link or order them), so its success covers them.
 *
 * Results: op->result is the byte count for READ/WRITE (a short count is
 * continued by the backend, so success means the full length), 0 for FSYNC,
 * or -errno.
 */
#ifndef HODEI_ENGINE_IO_H
#define HODEI_ENGINE_IO_H

#include "format/common.h"

#include <stdbool.h>

enum eng_io_kind {
	ENG_IO_WRITE = 1,
	ENG_IO_READ = 2,
	ENG_IO_FSYNC = 3, /* fdatasync semantics */
};

struct eng_io_op;
typedef void (*eng_io_done_fn)(struct eng_io_op *op);

struct eng_io_op {
	enum eng_io_kind kind;
	int fd;
	void *buf;
	uint32_t len;
	uint64_t offset;
	int32_t result;
	eng_io_done_fn done;
	void *ctx;
	/* Backend-private. */
	struct eng_io_op *next;
	uint32_t progress;
};

enum eng_io_backend {
	ENG_IO_AUTO = 0,  /* io_uring if it works here, else sync (and log why) */
	ENG_IO_URING = 1,
	ENG_IO_SYNC = 2,
	ENG_IO_FAULT = 3,
};

struct eng_io_fault_plan {
	uint64_t fail_write_nth;  /* 1-based; 0 = never */
	uint64_t fail_fsync_nth;  /* 1-based; 0 = never */
	int error;                /* the -errno to inject; 0 means -EIO */
};

struct eng_io;

/* Creates a backend instance. entries bounds the ops in flight. wake_fd is
 * an eventfd the instance watches: a write to it from any thread ends the
 * current eng_io_run() early. For ENG_IO_AUTO, *why (may be NULL) receives
 * a static explanation when io_uring was not usable.
 * Returns 0 or -errno / FMT_E_INVALID. */
int eng_io_create(enum eng_io_backend backend, uint32_t entries, int wake_fd,
		  const struct eng_io_fault_plan *plan, struct eng_io **out, const char **why);
void eng_io_destroy(struct eng_io *io);

/* Which backend this instance really is (never AUTO). */
enum eng_io_backend eng_io_backend_of(const struct eng_io *io);
const char *eng_io_backend_name(enum eng_io_backend b);

/* Queues op; never blocks, never runs a callback. Returns 0, or FMT_E_FULL
 * when `entries` ops are already in flight. */
int eng_io_submit(struct eng_io *io, struct eng_io_op *op);

/* Submits queued ops, waits up to timeout_ns (0: do not wait, <0: no
 * limit) for a completion or a wake-up, runs the callbacks of all
 * completed ops. Returns the number of callbacks run, or -errno. */
int eng_io_run(struct eng_io *io, int64_t timeout_ns);

/* Ops submitted and not yet completed. */
uint32_t eng_io_in_flight(const struct eng_io *io);

/* Fault backend only: forget every write not covered by a completed fsync
 * on its fd, as a power cut would (the file is truncated back to the
 * length it had at its last successful fsync, and bytes overwritten since
 * then are restored). Works for append-only files, which is what the
 * engine writes. Returns 0 or -errno. */
int eng_io_fault_crash(struct eng_io *io);

/* Fault backend only: counters of what it did. */
uint64_t eng_io_fault_writes(const struct eng_io *io);
uint64_t eng_io_fault_fsyncs(const struct eng_io *io);

#endif
