// SPDX-License-Identifier: Apache-2.0
/*
 * io_sync.c — the plain-syscall backend: pwrite/pread loops and
 * fdatasync, for kernels or sandboxes without io_uring (or when forced).
 *
 * Submit only queues (io.c); eng_io_run() takes the whole queue, performs
 * its ops one by one in submission order, then runs their callbacks. So
 * the interface's rules hold trivially: a FSYNC runs after every write
 * submitted before it, and a callback never runs inside submit. With
 * nothing queued, eng_io_run() sleeps in ppoll() on the wake-up fd until
 * the deadline. Every op finishes inside the run that took it, so the
 * blocking time of one run is the sum of its ops' syscalls: this backend
 * trades latency for simplicity, which is why it is the fallback.
 *
 * The op loop is parameterised by an exec function so io_fault.c can
 * reuse it with its own bookkeeping around eng_io_sync_exec().
 */
#define ENG_IO_BACKEND_IMPL
#include "engine/io.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

/* Bound on EINTR/EAGAIN/zero-progress retries of one op: regular files
 * practically never return them, so hitting this means something odd and
 * the op fails rather than spinning. */
enum { SYNC_RETRIES_MAX = 64 };

/* WRITE continues short counts until len; READ until len or end of file. */
static int32_t sync_rw(struct eng_io_op *op)
{
	uint32_t retries = 0;

	while (op->progress < op->len) {
		char *p = (char *)op->buf + op->progress;
		size_t left = op->len - op->progress;
		off_t off = (off_t)(op->offset + op->progress);
		ssize_t n = op->kind == ENG_IO_WRITE ? pwrite(op->fd, p, left, off)
						     : pread(op->fd, p, left, off);
		if (n > 0) {
			ASSERT((size_t)n <= left);
			op->progress += (uint32_t)n;
			continue;
		}
		if (n == 0 && op->kind == ENG_IO_READ)
			break; /* end of file */
		if (n < 0 && errno != EINTR && errno != EAGAIN)
			return -errno;
		if (++retries > SYNC_RETRIES_MAX)
			return n < 0 ? -errno : -EIO;
	}
	ASSERT(op->progress <= op->len);
	return (int32_t)op->progress;
}

static int32_t sync_fsync(struct eng_io_op *op)
{
	for (uint32_t retries = 0; retries <= SYNC_RETRIES_MAX; retries++) {
		if (fdatasync(op->fd) == 0)
			return 0;
		if (errno != EINTR)
			return -errno;
	}
	return -EINTR;
}

void eng_io_sync_exec(struct eng_io_op *op)
{
	ASSERT(op->progress == 0);
	switch (op->kind) {
	case ENG_IO_WRITE:
	case ENG_IO_READ:
		op->result = sync_rw(op);
		break;
	case ENG_IO_FSYNC:
		op->result = sync_fsync(op);
		break;
	case ENG_IO_WRITEBACK:
		op->result = sync_file_range(op->fd, (off_t)op->offset, (off_t)op->len,
					     ENG_WRITEBACK_FLAGS) == 0 ? 0 : -errno;
		break;
	default:
		ASSERT(!"unknown op kind");
	}
	ASSERT(op->result <= (int32_t)op->len);
}

int eng_io_sync_run_with(struct eng_io *io, int64_t timeout_ns, eng_io_exec_fn exec)
{
	struct eng_io_op *head = eng_io_take_queue(io);
	uint32_t n = 0;

	if (!head)
		return eng_io_wake_wait(io, timeout_ns);
	for (struct eng_io_op *op = head; op; op = op->next) {
		n++;
		ASSERT(n <= io->entries);
		exec(io, op);
	}
	return eng_io_complete(io, head);
}

static void sync_exec(struct eng_io *io, struct eng_io_op *op)
{
	eng_io_sync_exec(op);
}

static int sync_run(struct eng_io *io, int64_t timeout_ns)
{
	return eng_io_sync_run_with(io, timeout_ns, sync_exec);
}

static void sync_destroy(struct eng_io *io)
{
	free(io);
}

static const struct eng_io_vtable sync_vtable = {
	.run = sync_run,
	.destroy = sync_destroy,
};

int eng_io_sync_create(uint32_t entries, int wake_fd, struct eng_io **out)
{
	struct eng_io *io = malloc(sizeof(*io));

	if (!io)
		return -ENOMEM;
	eng_io_base_init(io, &sync_vtable, ENG_IO_SYNC, entries, wake_fd);
	*out = io;
	return 0;
}
