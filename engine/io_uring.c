// SPDX-License-Identifier: Apache-2.0
/*
 * io_uring.c — the io_uring backend, and the only file that includes
 * liburing.h. One ring per instance, sized entries + 1 (every op holds at
 * most one SQE at a time, plus the wake-up poll), so io_uring_get_sqe()
 * cannot fail and the CQ (twice the SQ) cannot overflow.
 *
 * Each op that leaves the queue takes a slot (allocated at start-up; the
 * slot index is the SQE's user_data) and a sequence number. A slot is in
 * one of three states:
 *
 *   free ──issue──▶ in kernel ──final CQE──▶ free (op on the done list)
 *                    ▲    │ short count / -EAGAIN: re-prepared, stays
 *        release     │    │ in kernel
 *   held (FSYNC) ────┘
 *
 * Invariants:
 *   1. A FSYNC is held back (not given to the kernel) while any WRITE on
 *      the same fd with a smaller sequence number has not finished; its
 *      slot counts those writes in writes_before. Holding back, rather
 *      than IOSQE_IO_DRAIN, keeps the rest of the ring moving.
 *   2. in_kernel counts slots with an SQE prepared or in the kernel; the
 *      wake-up poll is tracked by wake_armed, not in in_kernel.
 *   3. Callbacks never run while the CQ is iterated: CQEs are reaped in a
 *      batch into a local done list, then io.c runs the callbacks.
 *
 * Results follow io.h: WRITE continues short counts to len, READ until len
 * or end of file; -EAGAIN/-EINTR are resubmitted a bounded number of
 * times; every CQE is checked.
 *
 * The ring is created with SINGLE_ISSUER | DEFER_TASKRUN when the kernel
 * has them (completion work then runs only when we ask for events, i.e. in
 * the shard's own tick) and R_DISABLED, so the owner is the first thread
 * that calls eng_io_run(), not the thread that created it. Older kernels
 * answer -EINVAL and get a plain ring. IORING_FEAT_EXT_ARG (5.11) is
 * required, so waits with a deadline use no timeout SQE.
 */
#define ENG_IO_BACKEND_IMPL
#include "engine/io.h"

#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

enum {
	UR_RETRIES_MAX = 64,      /* -EAGAIN/-EINTR/no-progress resubmissions of one op */
	UR_RUN_LOOPS_MAX = 64,    /* submit/wait rounds of one eng_io_run() */
	UR_DRAIN_WAIT_MS = 100,   /* destroy: one wait for in-kernel ops */
	UR_DRAIN_LOOPS_MAX = 600, /* destroy: give up after about a minute */
};
#define UR_NONE UINT32_MAX
#define UR_WAKE_TAG (UINT64_MAX - 1)
#define UR_BUSY_WAIT_NS 1000000LL /* retry a refused submission after 1 ms */

struct ur_slot {
	struct eng_io_op *op;     /* NULL when free */
	uint64_t seq;             /* issue order, for invariant 1 */
	uint32_t writes_before;   /* held FSYNC: earlier WRITEs on its fd still running */
	uint32_t held_next;       /* next held FSYNC, or UR_NONE */
	uint32_t retries;
};

struct eng_io_uring {
	struct eng_io base;       /* first: the vtable functions cast back */
	struct io_uring ring;
	struct ur_slot *slots;    /* entries */
	uint32_t *free_slots;     /* stack of free slot indexes */
	uint32_t free_count;
	uint32_t in_kernel;
	uint32_t held_head;       /* held FSYNCs, in issue order */
	uint32_t held_tail;
	uint64_t seq_next;
	bool needs_enable;        /* created R_DISABLED, not yet enabled */
	bool wake_armed;
	bool closing;             /* destroy: finish ops, never resubmit */
};

static struct eng_io_uring *ur_of(struct eng_io *io)
{
	ASSERT(io->backend == ENG_IO_URING);
	return (struct eng_io_uring *)io;
}

static void ur_prep(struct eng_io_uring *u, uint32_t idx)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
	struct eng_io_op *op = u->slots[idx].op;

	ASSERT(sqe); /* sized so that it cannot fail */
	ASSERT(op && op->progress <= op->len);
	switch (op->kind) {
	case ENG_IO_WRITE:
		io_uring_prep_write(sqe, op->fd, (char *)op->buf + op->progress,
				    op->len - op->progress, op->offset + op->progress);
		break;
	case ENG_IO_READ:
		io_uring_prep_read(sqe, op->fd, (char *)op->buf + op->progress,
				   op->len - op->progress, op->offset + op->progress);
		break;
	case ENG_IO_FSYNC:
		io_uring_prep_fsync(sqe, op->fd, IORING_FSYNC_DATASYNC);
		break;
	case ENG_IO_WRITEBACK:
		io_uring_prep_sync_file_range(sqe, op->fd, op->len, op->offset, ENG_WRITEBACK_FLAGS);
		break;
	}
	io_uring_sqe_set_data64(sqe, idx);
}

static void ur_arm_wake(struct eng_io_uring *u)
{
	struct io_uring_sqe *sqe;

	if (u->base.wake_fd < 0 || u->wake_armed)
		return;
	sqe = io_uring_get_sqe(&u->ring);
	ASSERT(sqe);
	io_uring_prep_poll_add(sqe, u->base.wake_fd, POLLIN);
	io_uring_sqe_set_data64(sqe, UR_WAKE_TAG);
	u->wake_armed = true;
}

/* Earlier WRITEs on fd that have not finished: O(entries), once per FSYNC. */
static uint32_t ur_writes_before(const struct eng_io_uring *u, int fd, uint64_t seq)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < u->base.entries; i++) {
		const struct ur_slot *s = &u->slots[i];
		if (s->op && s->op->kind == ENG_IO_WRITE && s->op->fd == fd && s->seq < seq)
			n++;
	}
	return n;
}

static void ur_hold(struct eng_io_uring *u, uint32_t idx)
{
	u->slots[idx].held_next = UR_NONE;
	if (u->held_tail == UR_NONE)
		u->held_head = idx;
	else
		u->slots[u->held_tail].held_next = idx;
	u->held_tail = idx;
}

/* Moves every queued op into a slot, and into the SQ unless it is a FSYNC
 * that invariant 1 holds back. */
static void ur_issue_queued(struct eng_io_uring *u)
{
	struct eng_io_op *op = eng_io_take_queue(&u->base);

	while (op) {
		struct eng_io_op *next = op->next;
		struct ur_slot *s;
		uint32_t idx;

		ASSERT(u->free_count > 0); /* in_flight <= entries */
		idx = u->free_slots[--u->free_count];
		s = &u->slots[idx];
		ASSERT(!s->op);
		op->next = NULL;
		*s = (struct ur_slot){ .op = op, .seq = ++u->seq_next, .held_next = UR_NONE };
		if (op->kind == ENG_IO_FSYNC)
			s->writes_before = ur_writes_before(u, op->fd, s->seq);
		if (s->writes_before > 0) {
			ur_hold(u, idx);
		} else {
			u->in_kernel++;
			ur_prep(u, idx);
		}
		op = next;
	}
}

/* A WRITE finished: held FSYNCs on its fd issued after it need one fewer. */
static void ur_release_fsyncs(struct eng_io_uring *u, int fd, uint64_t seq)
{
	uint32_t prev = UR_NONE;
	uint32_t idx = u->held_head;

	while (idx != UR_NONE) {
		struct ur_slot *s = &u->slots[idx];
		uint32_t next = s->held_next;

		if (s->op->fd == fd && s->seq > seq) {
			ASSERT(s->writes_before > 0);
			s->writes_before--;
		}
		if (s->writes_before == 0) {
			if (prev == UR_NONE)
				u->held_head = next;
			else
				u->slots[prev].held_next = next;
			if (u->held_tail == idx)
				u->held_tail = prev;
			s->held_next = UR_NONE;
			u->in_kernel++;
			ur_prep(u, idx);
		} else {
			prev = idx;
		}
		idx = next;
	}
}

static void ur_finish(struct eng_io_uring *u, uint32_t idx, int32_t result,
		      struct eng_io_list *done)
{
	struct ur_slot *s = &u->slots[idx];
	struct eng_io_op *op = s->op;

	op->result = result;
	if (op->kind == ENG_IO_WRITE && !u->closing)
		ur_release_fsyncs(u, op->fd, s->seq);
	s->op = NULL;
	ASSERT(u->free_count < u->base.entries);
	u->free_slots[u->free_count++] = idx;
	eng_io_list_push(done, op);
}

/* One CQE of an op: finish it, or re-prepare it for what is left. */
static void ur_op_cqe(struct eng_io_uring *u, uint64_t tag, int32_t res, struct eng_io_list *done)
{
	struct ur_slot *s;
	struct eng_io_op *op;
	bool again = res == -EAGAIN || res == -EINTR;

	ASSERT(tag < u->base.entries);
	s = &u->slots[tag];
	op = s->op;
	ASSERT(op && u->in_kernel > 0);
	u->in_kernel--;
	if (res >= 0 && op->kind != ENG_IO_FSYNC && op->kind != ENG_IO_WRITEBACK) {
		ASSERT((uint32_t)res <= op->len - op->progress);
		op->progress += (uint32_t)res;
		if (op->progress == op->len || (res == 0 && op->kind == ENG_IO_READ)) {
			ur_finish(u, (uint32_t)tag, (int32_t)op->progress, done);
			return; /* all of it, or up to the end of the file */
		}
		if (res > 0)
			s->retries = 0; /* a short count: continue with the rest */
		again = true;
		res = -EIO; /* the result if a write keeps making no progress */
	}
	if (again && !u->closing && s->retries < UR_RETRIES_MAX) {
		s->retries++;
		u->in_kernel++;
		ur_prep(u, (uint32_t)tag);
		return;
	}
	ASSERT(res <= 0);
	ur_finish(u, (uint32_t)tag, res, done);
}

static int ur_wake_cqe(struct eng_io_uring *u, int32_t res)
{
	ASSERT(u->wake_armed);
	u->wake_armed = false;
	if (res < 0)
		return res == -ECANCELED ? 0 : res;
	if (res & POLLIN)
		eng_io_wake_drain(u->base.wake_fd);
	return (res & (POLLERR | POLLNVAL)) ? -EBADF : 0;
}

/* Reaps every ready CQE in one batch. Sets *woken when the wake-up poll
 * fired. Returns 0 or the wake-up poll's error. */
static int ur_reap(struct eng_io_uring *u, struct eng_io_list *done, bool *woken)
{
	struct io_uring_cqe *cqe;
	unsigned head;
	unsigned n = 0;
	int rc = 0;

	io_uring_for_each_cqe(&u->ring, head, cqe) {
		uint64_t tag = io_uring_cqe_get_data64(cqe);

		n++;
		if (tag == UR_WAKE_TAG) {
			int err = ur_wake_cqe(u, cqe->res);
			*woken = true;
			if (err < 0)
				rc = err;
			continue;
		}
		ur_op_cqe(u, tag, cqe->res, done);
	}
	io_uring_cq_advance(&u->ring, n);
	return rc;
}

/* Submits what is in the SQ and flushes completions (needed with
 * DEFER_TASKRUN). A busy kernel is not an error: the SQEs stay in the SQ
 * and a later call submits them; returns 1 then, so the caller does not
 * sleep long on SQEs the kernel has not seen. Otherwise 0 or -errno. */
static int ur_submit(struct eng_io_uring *u)
{
	int rc = io_uring_submit_and_get_events(&u->ring);

	if (rc >= 0)
		return 0;
	if (rc == -EAGAIN || rc == -EBUSY || rc == -EINTR)
		return 1;
	return rc;
}

/* Waits for one CQE until deadline_ns (<0: no limit). Returns 1 when
 * something arrived, 0 on timeout or signal, or -errno. */
static int ur_wait(struct eng_io_uring *u, int64_t deadline_ns)
{
	struct __kernel_timespec ts;
	struct io_uring_cqe *cqe;
	int rc;

	if (deadline_ns < 0) {
		rc = io_uring_wait_cqe(&u->ring, &cqe);
	} else {
		int64_t left_ns = deadline_ns - eng_io_now_ns();
		if (left_ns <= 0)
			return 0;
		ts.tv_sec = left_ns / 1000000000;
		ts.tv_nsec = left_ns % 1000000000;
		rc = io_uring_wait_cqe_timeout(&u->ring, &cqe, &ts);
	}
	if (rc >= 0)
		return 1;
	if (rc == -ETIME || rc == -EINTR)
		return 0;
	return rc;
}

/* liburing 2.3 declares io_uring_enable_rings() but does not export it, so
 * this is the same register call, made directly. */
static int ur_enable_rings(struct eng_io_uring *u)
{
	long rc = syscall(__NR_io_uring_register, u->ring.ring_fd,
			  IORING_REGISTER_ENABLE_RINGS, NULL, 0);

	return rc < 0 ? -errno : 0;
}

static int64_t ur_deadline(int64_t timeout_ns)
{
	int64_t now_ns = eng_io_now_ns();

	if (timeout_ns < 0 || timeout_ns > INT64_MAX - now_ns)
		return -1;
	return now_ns + timeout_ns;
}

static int ur_run(struct eng_io *io, int64_t timeout_ns)
{
	struct eng_io_uring *u = ur_of(io);
	struct eng_io_list done = { NULL, NULL };
	int64_t deadline_ns = ur_deadline(timeout_ns);
	bool woken = false;
	int rc = 0;
	int n;

	if (u->needs_enable) {
		rc = ur_enable_rings(u);
		if (rc < 0)
			return rc;
		u->needs_enable = false;
	}
	ur_issue_queued(u);
	ur_arm_wake(u);
	if (timeout_ns < 0 && u->in_kernel == 0 && !u->wake_armed)
		return FMT_E_STATE;
	for (int loop = 0; loop < UR_RUN_LOOPS_MAX; loop++) {
		int busy = ur_submit(u);
		int64_t until_ns = deadline_ns;

		rc = busy < 0 ? busy : ur_reap(u, &done, &woken);
		if (rc < 0 || done.head || woken || timeout_ns == 0)
			break;
		if (busy && (until_ns < 0 || until_ns - eng_io_now_ns() > UR_BUSY_WAIT_NS))
			until_ns = eng_io_now_ns() + UR_BUSY_WAIT_NS;
		rc = ur_wait(u, until_ns);
		if (rc < 0 || (rc == 0 && until_ns == deadline_ns)) {
			/* Timed out, interrupted or failed: keep what arrived. */
			int err = ur_reap(u, &done, &woken);
			rc = rc < 0 ? rc : err;
			break;
		}
		rc = 0;
	}
	/* Resubmissions and released FSYNCs of the last reap go to the
	 * kernel now, so they run while the callbacks do. */
	if (rc == 0 && io_uring_sq_ready(&u->ring) > 0)
		rc = FMT_MIN(ur_submit(u), 0);
	ASSERT(u->in_kernel <= io->entries - u->free_count);
	n = eng_io_complete(io, done.head);
	return rc < 0 ? rc : n;
}

static void ur_drain(struct eng_io_uring *u)
{
	struct eng_io_list done = { NULL, NULL };
	bool woken = false;

	u->closing = true;
	for (int loop = 0; loop < UR_DRAIN_LOOPS_MAX && u->in_kernel > 0; loop++) {
		struct __kernel_timespec ts = { .tv_sec = 0, .tv_nsec = UR_DRAIN_WAIT_MS * 1000000L };
		struct io_uring_cqe *cqe;

		if (ur_submit(u) < 0)
			return; /* e.g. -EEXIST from another thread: the kernel cancels on exit */
		(void)ur_reap(u, &done, &woken);
		if (u->in_kernel == 0)
			return;
		(void)io_uring_wait_cqe_timeout(&u->ring, &cqe, &ts);
	}
}

static void ur_destroy(struct eng_io *io)
{
	struct eng_io_uring *u = ur_of(io);

	if (!u->needs_enable)
		ur_drain(u);
	io_uring_queue_exit(&u->ring);
	free(u->slots);
	free(u->free_slots);
	free(u);
}

static const struct eng_io_vtable ur_vtable = {
	.run = ur_run,
	.destroy = ur_destroy,
};

static const char *ur_why(int err)
{
	switch (err) {
	case -EPERM: return "io_uring_queue_init failed: Operation not permitted (seccomp or kernel.io_uring_disabled?)";
	case -ENOSYS: return "io_uring_queue_init failed: Function not implemented (kernel without io_uring, or disabled?)";
	case -ENOMEM: return "io_uring_queue_init failed: Cannot allocate memory (RLIMIT_MEMLOCK?)";
	case -EINVAL: return "io_uring_queue_init failed: Invalid argument (kernel too old?)";
	case -EMFILE: return "io_uring_queue_init failed: Too many open files";
	default: return "io_uring_queue_init failed";
	}
}

/* Tries the preferred flags, then a plain ring if the kernel rejects them. */
static int ur_ring_init(struct eng_io_uring *u, uint32_t entries, const char **why)
{
	struct io_uring_params p = { 0 };
	int rc;

	p.flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER |
		  IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED;
	rc = io_uring_queue_init_params(entries + 1, &u->ring, &p);
	if (rc == -EINVAL) {
		p = (struct io_uring_params){ 0 };
		rc = io_uring_queue_init_params(entries + 1, &u->ring, &p);
	}
	if (rc < 0) {
		*why = ur_why(rc);
		return rc;
	}
	u->needs_enable = (p.flags & IORING_SETUP_R_DISABLED) != 0;
	if (!(p.features & IORING_FEAT_EXT_ARG) || !(p.features & IORING_FEAT_NODROP)) {
		io_uring_queue_exit(&u->ring);
		*why = "io_uring too old: no IORING_FEAT_EXT_ARG/NODROP (kernel < 5.11)";
		return -EOPNOTSUPP;
	}
	return 0;
}

int eng_io_uring_create(uint32_t entries, int wake_fd, struct eng_io **out, const char **why)
{
	struct eng_io_uring *u = calloc(1, sizeof(*u));
	int rc = -ENOMEM;

	*why = "out of memory";
	if (!u)
		goto fail;
	u->slots = calloc(entries, sizeof(*u->slots));
	u->free_slots = calloc(entries, sizeof(*u->free_slots));
	if (!u->slots || !u->free_slots)
		goto fail;
	rc = ur_ring_init(u, entries, why);
	if (rc < 0)
		goto fail;
	eng_io_base_init(&u->base, &ur_vtable, ENG_IO_URING, entries, wake_fd);
	for (uint32_t i = 0; i < entries; i++)
		u->free_slots[i] = entries - 1 - i;
	u->free_count = entries;
	u->held_head = UR_NONE;
	u->held_tail = UR_NONE;
	*why = NULL;
	*out = &u->base;
	return 0;
fail:
	if (u) {
		free(u->slots);
		free(u->free_slots);
	}
	free(u);
	return rc;
}
