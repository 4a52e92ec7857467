// SPDX-License-Identifier: Apache-2.0
/*
 * io.c — the backend-independent half of the I/O interface (see io.h):
 * backend choice, argument checks, the queue of submitted ops, the
 * in-flight count and the callback pass. Every backend embeds struct
 * eng_io first and fills in a vtable with run and destroy; submit is the
 * same for all of them (append to a FIFO), so "submit never runs a
 * callback and never blocks" holds by construction.
 *
 * Invariants:
 *   1. in_flight = ops queued + ops held by the backend, and never exceeds
 *      entries; it drops just before an op's callback starts, so a
 *      callback can submit again.
 *   2. Callbacks run only from eng_io_complete(), inside eng_io_run(), on
 *      a list the backend already detached from its own structures.
 *   3. eng_io_run() is not reentrant (asserted through io->running).
 */
#define ENG_IO_BACKEND_IMPL
#include "engine/io.h"

#include <errno.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

int eng_io_create(enum eng_io_backend backend, uint32_t entries, int wake_fd,
		  const struct eng_io_fault_plan *plan, struct eng_io **out, const char **why)
{
	const char *reason = NULL;
	int rc;

	if (why)
		*why = NULL;
	if (!out || entries == 0 || entries > ENG_IO_ENTRIES_MAX || wake_fd < -1)
		return FMT_E_INVALID;
	*out = NULL;
	switch (backend) {
	case ENG_IO_AUTO:
		rc = eng_io_uring_create(entries, wake_fd, out, &reason);
		if (rc == 0)
			break;
		if (why)
			*why = reason;
		rc = eng_io_sync_create(entries, wake_fd, out);
		break;
	case ENG_IO_URING:
		rc = eng_io_uring_create(entries, wake_fd, out, &reason);
		if (rc != 0 && why)
			*why = reason;
		break;
	case ENG_IO_SYNC:
		rc = eng_io_sync_create(entries, wake_fd, out);
		break;
	case ENG_IO_FAULT:
		rc = eng_io_fault_create(entries, wake_fd, plan, out);
		break;
	default:
		return FMT_E_INVALID;
	}
	ASSERT(rc != 0 || (*out && (*out)->backend != ENG_IO_AUTO));
	return rc;
}

void eng_io_destroy(struct eng_io *io)
{
	if (!io)
		return;
	ASSERT(!io->running);
	io->vt->destroy(io);
}

enum eng_io_backend eng_io_backend_of(const struct eng_io *io)
{
	ASSERT(io->backend != ENG_IO_AUTO);
	return io->backend;
}

const char *eng_io_backend_name(enum eng_io_backend b)
{
	switch (b) {
	case ENG_IO_AUTO: return "auto";
	case ENG_IO_URING: return "uring";
	case ENG_IO_SYNC: return "sync";
	case ENG_IO_FAULT: return "fault";
	}
	return "unknown";
}

int eng_io_submit(struct eng_io *io, struct eng_io_op *op)
{
	ASSERT(io && op && op->done);
	ASSERT(op->kind == ENG_IO_WRITE || op->kind == ENG_IO_READ || op->kind == ENG_IO_FSYNC ||
	       op->kind == ENG_IO_WRITEBACK);
	ASSERT(op->fd >= 0);
	ASSERT(op->kind == ENG_IO_FSYNC || op->kind == ENG_IO_WRITEBACK || op->buf || op->len == 0);
	ASSERT(io->in_flight <= io->entries);
	if (op->len > ENG_IO_LEN_MAX || op->offset > (uint64_t)INT64_MAX)
		return FMT_E_INVALID;
	if (io->in_flight == io->entries)
		return FMT_E_FULL;
	op->next = NULL;
	op->progress = 0;
	op->result = 0;
	if (io->queue_tail)
		io->queue_tail->next = op;
	else
		io->queue_head = op;
	io->queue_tail = op;
	io->in_flight++;
	return 0;
}

int eng_io_run(struct eng_io *io, int64_t timeout_ns)
{
	int rc;

	ASSERT(io);
	ASSERT(!io->running);
	io->running = true;
	rc = io->vt->run(io, timeout_ns);
	io->running = false;
	ASSERT(io->in_flight <= io->entries);
	return rc;
}

void eng_io_counts(const struct eng_io *io, struct eng_io_counts *out)
{
	*out = io->done;
}

uint32_t eng_io_in_flight(const struct eng_io *io)
{
	return io->in_flight;
}

void eng_io_base_init(struct eng_io *io, const struct eng_io_vtable *vt,
		      enum eng_io_backend backend, uint32_t entries, int wake_fd)
{
	ASSERT(vt && vt->run && vt->destroy);
	ASSERT(backend != ENG_IO_AUTO && entries > 0);
	io->vt = vt;
	io->backend = backend;
	io->entries = entries;
	io->in_flight = 0;
	io->wake_fd = wake_fd;
	io->running = false;
	io->queue_head = NULL;
	io->queue_tail = NULL;
	io->done = (struct eng_io_counts){ 0 };
}

struct eng_io_op *eng_io_take_queue(struct eng_io *io)
{
	struct eng_io_op *head = io->queue_head;

	io->queue_head = NULL;
	io->queue_tail = NULL;
	return head;
}

void eng_io_list_push(struct eng_io_list *l, struct eng_io_op *op)
{
	op->next = NULL;
	if (l->tail)
		l->tail->next = op;
	else
		l->head = op;
	l->tail = op;
}

/* Runs the callbacks of a detached list of completed ops. The in-flight
 * count drops for the whole list first, so every callback may submit. */
int eng_io_complete(struct eng_io *io, struct eng_io_op *head)
{
	struct eng_io_op *op;
	uint32_t n = 0;

	for (op = head; op; op = op->next) {
		ASSERT(n < io->entries);
		n++;
	}
	ASSERT(n <= io->in_flight);
	io->in_flight -= n;
	while (head) {
		op = head;
		head = op->next;
		op->next = NULL;
		io->done.ops[op->kind]++;
		io->done.bytes[op->kind] += op->kind == ENG_IO_FSYNC ? 0 : op->len;
		op->done(op);
	}
	return (int)n;
}

int64_t eng_io_now_ns(void)
{
	struct timespec ts;
	int rc = clock_gettime(CLOCK_MONOTONIC, &ts);

	ASSERT(rc == 0);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Reads the eventfd's counter back to zero. The instance is its only
 * reader, so after a readiness report the read cannot block; a
 * non-blocking eventfd with nothing to read just says EAGAIN. */
void eng_io_wake_drain(int wake_fd)
{
	uint64_t count;

	for (int i = 0; i < 4; i++) {
		ssize_t n = read(wake_fd, &count, sizeof(count));
		if (n >= 0 || errno != EINTR)
			return;
	}
}

/* Sleeps on the wake-up fd alone: for the backends that finish every op
 * inside eng_io_run(), there is nothing else that could end the wait. */
int eng_io_wake_wait(struct eng_io *io, int64_t timeout_ns)
{
	struct pollfd pfd = { .fd = io->wake_fd, .events = POLLIN };
	struct timespec ts;
	int n;

	if (timeout_ns == 0)
		return 0;
	if (timeout_ns < 0 && io->wake_fd < 0)
		return FMT_E_STATE;
	if (timeout_ns > 0) {
		ts.tv_sec = (time_t)(timeout_ns / 1000000000);
		ts.tv_nsec = (long)(timeout_ns % 1000000000);
	}
	n = ppoll(&pfd, io->wake_fd >= 0 ? 1 : 0, timeout_ns > 0 ? &ts : NULL, NULL);
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	if (n > 0 && (pfd.revents & POLLNVAL))
		return -EBADF;
	if (n > 0)
		eng_io_wake_drain(io->wake_fd);
	return 0;
}
