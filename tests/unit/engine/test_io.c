// SPDX-License-Identifier: Apache-2.0
/*
 * test_io.c — engine/io*.c: the I/O interface's contract, checked for each
 * backend (uring, sync, fault) by the same test bodies, plus the fault
 * backend's injection and crash model, and the AUTO choice.
 *
 * Where io_uring is not usable (a seccomp sandbox), the uring tests run
 * against sync instead and say so in the log, so the suite stays green.
 * Temp files are made with mkstemp() under $HODEI_TEST_TMP (or /tmp) and
 * unlinked at once: tests fork and run in parallel. No test asserts on
 * time; hangs are caught by each test's timeout.
 */
#include "engine/io.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SEC_NS 1000000000LL
#define CHUNK 4096u
#define ORDER_MAX 4096u

/* ---- helpers ---- */

struct rec {
	struct eng_io *io;
	uint32_t count;
	struct eng_io_op *order[ORDER_MAX];
};

static void rec_done(struct eng_io_op *op)
{
	struct rec *r = op->ctx;

	cr_assert_lt(r->count, ORDER_MAX);
	r->order[r->count++] = op;
}

static void op_set(struct eng_io_op *op, enum eng_io_kind kind, int fd, void *buf,
		   uint32_t len, uint64_t offset, struct rec *r)
{
	memset(op, 0, sizeof(*op));
	op->kind = kind;
	op->fd = fd;
	op->buf = buf;
	op->len = len;
	op->offset = offset;
	op->done = rec_done;
	op->ctx = r;
	op->result = INT32_MIN;
}

static struct eng_io *open_io(enum eng_io_backend b, uint32_t entries, int wake_fd,
			      const struct eng_io_fault_plan *plan)
{
	struct eng_io *io = NULL;
	const char *why = NULL;
	int rc = eng_io_create(b, entries, wake_fd, plan, &io, &why);

	if (rc != 0 && b == ENG_IO_URING) {
		cr_log_warn("io_uring not usable here (%s): testing sync instead", why);
		rc = eng_io_create(ENG_IO_SYNC, entries, wake_fd, NULL, &io, &why);
	}
	cr_assert_eq(rc, 0, "eng_io_create(%s): %d", eng_io_backend_name(b), rc);
	cr_assert_not_null(io);
	return io;
}

/* A fresh temp file; its path is kept (for reopening) only if asked. */
static int tmp_file(char *path, size_t path_len)
{
	const char *dir = getenv("HODEI_TEST_TMP");
	char local[512];
	char *p = path ? path : local;
	size_t n = path ? path_len : sizeof(local);
	int fd;

	snprintf(p, n, "%s/test_io.XXXXXX", dir && *dir ? dir : "/tmp");
	fd = mkstemp(p);
	if (fd < 0) {
		snprintf(p, n, "/tmp/test_io.XXXXXX");
		fd = mkstemp(p);
	}
	cr_assert_geq(fd, 0, "mkstemp: %s", strerror(errno));
	if (!path)
		unlink(p);
	return fd;
}

static int make_wake_fd(void)
{
	int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

	cr_assert_geq(fd, 0);
	return fd;
}

/* Runs until nothing is in flight; returns the callbacks run. */
static int run_all(struct eng_io *io)
{
	int total = 0;

	for (int i = 0; i < 100000 && eng_io_in_flight(io) > 0; i++) {
		int rc = eng_io_run(io, SEC_NS);
		cr_assert_geq(rc, 0, "eng_io_run: %d (%s)", rc, fmt_strerror(rc));
		total += rc;
	}
	cr_assert_eq(eng_io_in_flight(io), 0);
	return total;
}

static void fill(uint8_t *buf, size_t len, uint32_t seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)((i * 31u + seed * 7u + (i >> 12)) ^ seed);
}

static off_t file_size(int fd)
{
	struct stat st;

	cr_assert_eq(fstat(fd, &st), 0);
	return st.st_size;
}

/* Every test body runs once per backend. */
#define IO_TEST(name)                                                    \
	static void name(enum eng_io_backend b);                         \
	Test(uring, name, .timeout = 60) { name(ENG_IO_URING); }         \
	Test(sync, name, .timeout = 60) { name(ENG_IO_SYNC); }           \
	Test(fault, name, .timeout = 60) { name(ENG_IO_FAULT); }         \
	static void name(enum eng_io_backend b)

/* ---- the contract, per backend ---- */

IO_TEST(write_fsync_read)
{
	struct rec r = { 0 };
	struct eng_io *io = open_io(b, 8, -1, NULL);
	struct eng_io_op w, f, rd;
	uint8_t out[CHUNK], in[CHUNK];
	int fd = tmp_file(NULL, 0);

	fill(out, sizeof(out), 1);
	op_set(&w, ENG_IO_WRITE, fd, out, CHUNK, 0, &r);
	op_set(&f, ENG_IO_FSYNC, fd, NULL, 0, 0, &r);
	cr_assert_eq(eng_io_submit(io, &w), 0);
	cr_assert_eq(eng_io_submit(io, &f), 0);
	cr_assert_eq(r.count, 0, "submit never runs a callback");
	cr_assert_eq(eng_io_in_flight(io), 2);
	run_all(io);
	cr_assert_eq(w.result, (int32_t)CHUNK);
	cr_assert_eq(f.result, 0);
	cr_assert_eq(r.count, 2);
	cr_assert_eq(r.order[1], &f);

	memset(in, 0, sizeof(in));
	op_set(&rd, ENG_IO_READ, fd, in, CHUNK, 0, &r);
	cr_assert_eq(eng_io_submit(io, &rd), 0);
	run_all(io);
	cr_assert_eq(rd.result, (int32_t)CHUNK);
	cr_assert_arr_eq(in, out, CHUNK);
	eng_io_destroy(io);
	close(fd);
}

/* WRITEBACK after a write: result 0 and the bytes read back unchanged
 * (whether pages were written back is not visible from here); on a closed
 * descriptor it fails with -EBADF, so the op really reaches the kernel. */
IO_TEST(writeback_after_write)
{
	struct rec r = { 0 };
	struct eng_io *io = open_io(b, 8, -1, NULL);
	struct eng_io_op w, wb, rd, bad;
	uint8_t out[2 * CHUNK], in[2 * CHUNK];
	int fd = tmp_file(NULL, 0);

	fill(out, sizeof(out), 7);
	op_set(&w, ENG_IO_WRITE, fd, out, sizeof(out), 0, &r);
	cr_assert_eq(eng_io_submit(io, &w), 0);
	run_all(io);
	cr_assert_eq(w.result, (int32_t)sizeof(out));
	op_set(&wb, ENG_IO_WRITEBACK, fd, NULL, CHUNK, CHUNK, &r);
	cr_assert_eq(eng_io_submit(io, &wb), 0);
	run_all(io);
	cr_assert_eq(wb.result, 0, "writeback: %d", wb.result);
	op_set(&rd, ENG_IO_READ, fd, in, sizeof(in), 0, &r);
	cr_assert_eq(eng_io_submit(io, &rd), 0);
	run_all(io);
	cr_assert_eq(rd.result, (int32_t)sizeof(in));
	cr_assert_arr_eq(in, out, sizeof(in));
	int dead = dup(fd);
	close(dead);
	op_set(&bad, ENG_IO_WRITEBACK, dead, NULL, CHUNK, 0, &r);
	cr_assert_eq(eng_io_submit(io, &bad), 0);
	run_all(io);
	cr_assert_eq(bad.result, -EBADF, "writeback on a closed fd: %d", bad.result);
	eng_io_destroy(io);
	close(fd);
}

IO_TEST(many_writes_then_fsync)
{
	enum { N = 64 };
	static uint8_t data[N * CHUNK];
	static uint8_t back[N * CHUNK];
	struct rec r = { 0 };
	struct eng_io *io = open_io(b, N + 1, -1, NULL);
	struct eng_io_op w[N], f, rd;
	int fd = tmp_file(NULL, 0);

	fill(data, sizeof(data), 2);
	for (int i = 0; i < N; i++) {
		op_set(&w[i], ENG_IO_WRITE, fd, data + i * CHUNK, CHUNK, (uint64_t)i * CHUNK, &r);
		cr_assert_eq(eng_io_submit(io, &w[i]), 0);
	}
	op_set(&f, ENG_IO_FSYNC, fd, NULL, 0, 0, &r);
	cr_assert_eq(eng_io_submit(io, &f), 0);
	run_all(io);
	cr_assert_eq(r.count, N + 1);
	cr_assert_eq(r.order[N], &f, "the fsync's callback runs after every write's");
	for (int i = 0; i < N; i++)
		cr_assert_eq(w[i].result, (int32_t)CHUNK);
	cr_assert_eq(f.result, 0);

	op_set(&rd, ENG_IO_READ, fd, back, sizeof(back), 0, &r);
	cr_assert_eq(eng_io_submit(io, &rd), 0);
	run_all(io);
	cr_assert_eq(rd.result, (int32_t)sizeof(back));
	cr_assert_arr_eq(back, data, sizeof(data));
	eng_io_destroy(io);
	close(fd);
}

/* Writes stream in while fsyncs are pending: each fsync's callback must
 * come after the callbacks of every write submitted before it. */
struct roll_op {
	struct eng_io_op op;
	uint32_t index;         /* write number, or writes submitted before a fsync */
	bool *written;
	uint32_t *fsyncs_done;
};

static void roll_done(struct eng_io_op *op)
{
	struct roll_op *ro = (struct roll_op *)op;

	cr_assert_geq(op->result, 0, "op failed: %d", op->result);
	if (op->kind == ENG_IO_WRITE) {
		ro->written[ro->index] = true;
		return;
	}
	for (uint32_t i = 0; i < ro->index; i++)
		cr_assert(ro->written[i], "fsync completed before write %u", i);
	(*ro->fsyncs_done)++;
}

IO_TEST(rolling_writes_and_fsyncs)
{
	enum { WRITES = 2000, EVERY = 50, ENTRIES = 64, LEN = 512 };
	static struct roll_op ops[WRITES + WRITES / EVERY];
	static bool written[WRITES];
	static uint8_t data[LEN];
	struct eng_io *io = open_io(b, ENTRIES, -1, NULL);
	uint32_t fsyncs_done = 0, next = 0, writes = 0;
	int fd = tmp_file(NULL, 0);

	fill(data, sizeof(data), 3);
	while (writes < WRITES || eng_io_in_flight(io) > 0) {
		while (writes < WRITES && eng_io_in_flight(io) < ENTRIES) {
			struct roll_op *ro = &ops[next++];
			bool sync_now = writes > 0 && writes % EVERY == 0 &&
					ops[next - 2].op.kind == ENG_IO_WRITE;

			memset(ro, 0, sizeof(*ro));
			ro->written = written;
			ro->fsyncs_done = &fsyncs_done;
			ro->op.kind = sync_now ? ENG_IO_FSYNC : ENG_IO_WRITE;
			ro->op.fd = fd;
			ro->op.done = roll_done;
			ro->index = writes;
			if (!sync_now) {
				ro->op.buf = data;
				ro->op.len = LEN;
				ro->op.offset = (uint64_t)writes * LEN;
				writes++;
			}
			cr_assert_eq(eng_io_submit(io, &ro->op), 0);
		}
		cr_assert_geq(eng_io_run(io, SEC_NS), 0);
	}
	cr_assert_eq(fsyncs_done, WRITES / EVERY - 1);
	cr_assert_eq(file_size(fd), (off_t)WRITES * LEN);
	eng_io_destroy(io);
	close(fd);
}

IO_TEST(large_write)
{
	enum { LEN = 8 << 20 };
	uint8_t *out = malloc(LEN), *in = calloc(1, LEN);
	struct rec r = { 0 };
	struct eng_io *io = open_io(b, 4, -1, NULL);
	struct eng_io_op w, f, rd;
	int fd = tmp_file(NULL, 0);

	cr_assert(out && in);
	fill(out, LEN, 4);
	op_set(&w, ENG_IO_WRITE, fd, out, LEN, 12345, &r);
	op_set(&f, ENG_IO_FSYNC, fd, NULL, 0, 0, &r);
	cr_assert_eq(eng_io_submit(io, &w), 0);
	cr_assert_eq(eng_io_submit(io, &f), 0);
	run_all(io);
	cr_assert_eq(w.result, LEN);
	cr_assert_eq(f.result, 0);
	cr_assert_eq(file_size(fd), 12345 + LEN);
	op_set(&rd, ENG_IO_READ, fd, in, LEN, 12345, &r);
	cr_assert_eq(eng_io_submit(io, &rd), 0);
	run_all(io);
	cr_assert_eq(rd.result, LEN);
	cr_assert_arr_eq(in, out, LEN);
	eng_io_destroy(io);
	close(fd);
	free(out);
	free(in);
}

/* RLIMIT_FSIZE makes the kernel cut a write short at the limit, and fail
 * the next with EFBIG: a backend that did not continue the short count
 * would report the short count as success. */
IO_TEST(short_write_is_continued)
{
	enum { LIMIT = (1 << 20) + 123, LEN = 2 << 20 };
	struct rlimit rl = { LIMIT, LIMIT };
	uint8_t *out = malloc(LEN);
	struct rec r = { 0 };
	struct eng_io *io = open_io(b, 4, -1, NULL);
	struct eng_io_op w;
	int fd = tmp_file(NULL, 0);

	cr_assert_not_null(out);
	fill(out, LEN, 5);
	signal(SIGXFSZ, SIG_IGN);
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
	op_set(&w, ENG_IO_WRITE, fd, out, LEN, 0, &r);
	cr_assert_eq(eng_io_submit(io, &w), 0);
	run_all(io);
	cr_assert_eq(w.result, -EFBIG, "result %d", w.result);
	cr_assert_eq(file_size(fd), LIMIT);
	eng_io_destroy(io);
	close(fd);
	free(out);
}

IO_TEST(read_past_eof)
{
	uint8_t out[100], in[CHUNK];
	struct rec r = { 0 };
	struct eng_io *io = open_io(b, 4, -1, NULL);
	struct eng_io_op a, c, d;
	int fd = tmp_file(NULL, 0);

	fill(out, sizeof(out), 6);
	cr_assert_eq(write(fd, out, sizeof(out)), (ssize_t)sizeof(out));
	op_set(&a, ENG_IO_READ, fd, in, CHUNK, 0, &r);
	op_set(&c, ENG_IO_READ, fd, in + 200, 100, 100, &r);
	op_set(&d, ENG_IO_READ, fd, in + 300, 100, 1 << 20, &r);
	cr_assert_eq(eng_io_submit(io, &a), 0);
	cr_assert_eq(eng_io_submit(io, &c), 0);
	cr_assert_eq(eng_io_submit(io, &d), 0);
	run_all(io);
	cr_assert_eq(a.result, 100, "a read stops at the end of the file");
	cr_assert_arr_eq(in, out, sizeof(out));
	cr_assert_eq(c.result, 0, "at the end: 0");
	cr_assert_eq(d.result, 0, "past the end: 0");
	eng_io_destroy(io);
	close(fd);
}

struct waker {
	int fd;
	useconds_t delay_us;
};

static void *waker_main(void *arg)
{
	struct waker *w = arg;
	uint64_t one = 1;

	usleep(w->delay_us);
	if (write(w->fd, &one, sizeof(one)) != sizeof(one))
		abort();
	return NULL;
}

static void assert_drained(int wake_fd)
{
	uint64_t v;

	cr_assert_eq(read(wake_fd, &v, sizeof(v)), -1, "the eventfd was drained");
	cr_assert_eq(errno, EAGAIN);
}

/* With no limit, only the wake-up can end the run: the test's timeout
 * catches a missed wake-up. */
IO_TEST(wake_from_thread)
{
	int wake_fd = make_wake_fd();
	struct eng_io *io = open_io(b, 4, wake_fd, NULL);
	struct waker w = { wake_fd, 50000 };
	pthread_t t;

	cr_assert_eq(pthread_create(&t, NULL, waker_main, &w), 0);
	cr_assert_eq(eng_io_run(io, -1), 0);
	cr_assert_eq(pthread_join(t, NULL), 0);
	assert_drained(wake_fd);
	/* Signalled before the run: that run ends at once, the next waits. */
	waker_main(&(struct waker){ wake_fd, 0 });
	cr_assert_eq(eng_io_run(io, -1), 0);
	assert_drained(wake_fd);
	cr_assert_eq(eng_io_run(io, SEC_NS / 50), 0);
	eng_io_destroy(io);
	close(wake_fd);
}

IO_TEST(timeouts)
{
	struct rec r = { 0 };
	struct eng_io *io = open_io(b, 4, -1, NULL);
	struct eng_io_op w;
	uint8_t out[CHUNK];
	int fd = tmp_file(NULL, 0);
	int total = 0;

	cr_assert_eq(eng_io_run(io, 0), 0);
	cr_assert_eq(eng_io_run(io, SEC_NS / 100), 0);
	cr_assert_eq(eng_io_run(io, -1), FMT_E_STATE, "nothing could end the wait");
	fill(out, sizeof(out), 7);
	op_set(&w, ENG_IO_WRITE, fd, out, CHUNK, 0, &r);
	cr_assert_eq(eng_io_submit(io, &w), 0);
	/* Timeout 0 never waits; polling it long enough sees the write done. */
	for (int i = 0; i < 1000000 && total == 0; i++) {
		int rc = eng_io_run(io, 0);
		cr_assert_geq(rc, 0);
		total += rc;
	}
	cr_assert_eq(total, 1);
	cr_assert_eq(w.result, (int32_t)CHUNK);
	eng_io_destroy(io);
	close(fd);
}

IO_TEST(full_queue)
{
	enum { ENTRIES = 4 };
	struct rec r = { 0 };
	struct eng_io *io = open_io(b, ENTRIES, -1, NULL);
	struct eng_io_op ops[ENTRIES + 1];
	uint8_t out[CHUNK];
	int fd = tmp_file(NULL, 0);

	fill(out, sizeof(out), 8);
	for (int i = 0; i <= ENTRIES; i++)
		op_set(&ops[i], ENG_IO_WRITE, fd, out, CHUNK, (uint64_t)i * CHUNK, &r);
	for (int i = 0; i < ENTRIES; i++)
		cr_assert_eq(eng_io_submit(io, &ops[i]), 0);
	cr_assert_eq(eng_io_submit(io, &ops[ENTRIES]), FMT_E_FULL);
	cr_assert_eq(eng_io_in_flight(io), ENTRIES);
	cr_assert_eq(run_all(io), ENTRIES);
	cr_assert_eq(eng_io_submit(io, &ops[ENTRIES]), 0);
	cr_assert_eq(run_all(io), 1);
	cr_assert_eq(ops[ENTRIES].result, (int32_t)CHUNK);
	eng_io_destroy(io);
	close(fd);
}

IO_TEST(bad_ops)
{
	char path[512];
	struct rec r = { 0 };
	struct eng_io *io = open_io(b, 4, -1, NULL);
	struct eng_io_op w, big;
	uint8_t out[CHUNK];
	int wfd = tmp_file(path, sizeof(path));
	int rfd = open(path, O_RDONLY | O_CLOEXEC);

	cr_assert_geq(rfd, 0);
	unlink(path);
	fill(out, sizeof(out), 9);
	op_set(&w, ENG_IO_WRITE, rfd, out, CHUNK, 0, &r);
	cr_assert_eq(eng_io_submit(io, &w), 0);
	run_all(io);
	cr_assert_eq(w.result, -EBADF, "write to a read-only fd: %d", w.result);
	cr_assert_eq(file_size(wfd), 0);
	op_set(&big, ENG_IO_WRITE, wfd, out, UINT32_MAX, 0, &r);
	cr_assert_eq(eng_io_submit(io, &big), FMT_E_INVALID);
	cr_assert_eq(eng_io_in_flight(io), 0);
	eng_io_destroy(io);
	close(rfd);
	close(wfd);
}

/* An op submitted from a callback waits for the next run. */
struct chain {
	struct rec rec;
	struct eng_io_op second;
	bool second_submitted;
};

static void chain_first_done(struct eng_io_op *op)
{
	struct chain *c = op->ctx;

	rec_done(op);
	cr_assert_eq(eng_io_submit(c->rec.io, &c->second), 0);
	c->second_submitted = true;
}

IO_TEST(callback_submits)
{
	static struct chain c;
	struct eng_io *io = open_io(b, 2, -1, NULL);
	struct eng_io_op first;
	uint8_t out[CHUNK];
	int fd = tmp_file(NULL, 0);
	int rc;

	memset(&c, 0, sizeof(c));
	c.rec.io = io;
	fill(out, sizeof(out), 10);
	op_set(&first, ENG_IO_WRITE, fd, out, CHUNK, 0, &c.rec);
	first.done = chain_first_done;
	first.ctx = &c;
	op_set(&c.second, ENG_IO_FSYNC, fd, NULL, 0, 0, &c.rec);
	c.second.ctx = &c.rec;
	cr_assert_eq(eng_io_submit(io, &first), 0);
	do {
		rc = eng_io_run(io, SEC_NS);
		cr_assert_geq(rc, 0);
	} while (!c.second_submitted);
	cr_assert_eq(c.rec.count, 1, "the chained op did not complete in the same run");
	cr_assert_eq(eng_io_in_flight(io), 1);
	run_all(io);
	cr_assert_eq(c.rec.count, 2);
	cr_assert_eq(c.second.result, 0);
	eng_io_destroy(io);
	close(fd);
}

/* Completed ops are counted by kind with the lengths asked (a fsync
 * counts no bytes), and only once their callback runs. */
IO_TEST(completions_are_counted_by_kind)
{
	struct rec r = { 0 };
	struct eng_io *io = open_io(b, 8, -1, NULL);
	struct eng_io_op w1, w2, wb, f, rd;
	uint8_t out[2 * CHUNK], in[CHUNK];
	int fd = tmp_file(NULL, 0);
	struct eng_io_counts c;

	eng_io_counts(io, &c);
	for (int k = 0; k < ENG_IO_KINDS; k++)
		cr_assert(c.ops[k] == 0 && c.bytes[k] == 0);
	fill(out, sizeof(out), 11);
	op_set(&w1, ENG_IO_WRITE, fd, out, CHUNK, 0, &r);
	op_set(&w2, ENG_IO_WRITE, fd, out + CHUNK, 100, CHUNK, &r);
	op_set(&f, ENG_IO_FSYNC, fd, NULL, 0, 0, &r);
	cr_assert_eq(eng_io_submit(io, &w1), 0);
	cr_assert_eq(eng_io_submit(io, &w2), 0);
	cr_assert_eq(eng_io_submit(io, &f), 0);
	eng_io_counts(io, &c);
	cr_assert_eq(c.ops[ENG_IO_WRITE], 0, "counted before completion");
	run_all(io);
	op_set(&wb, ENG_IO_WRITEBACK, fd, NULL, CHUNK, 0, &r);
	op_set(&rd, ENG_IO_READ, fd, in, CHUNK, 0, &r);
	cr_assert_eq(eng_io_submit(io, &wb), 0);
	cr_assert_eq(eng_io_submit(io, &rd), 0);
	run_all(io);
	eng_io_counts(io, &c);
	cr_assert_eq(c.ops[ENG_IO_WRITE], 2);
	cr_assert_eq(c.bytes[ENG_IO_WRITE], CHUNK + 100);
	cr_assert_eq(c.ops[ENG_IO_FSYNC], 1);
	cr_assert_eq(c.bytes[ENG_IO_FSYNC], 0);
	cr_assert_eq(c.ops[ENG_IO_WRITEBACK], 1);
	cr_assert_eq(c.bytes[ENG_IO_WRITEBACK], CHUNK);
	cr_assert_eq(c.ops[ENG_IO_READ], 1);
	cr_assert_eq(c.bytes[ENG_IO_READ], CHUNK);
	eng_io_destroy(io);
	close(fd);
}

/* ---- creation, names, AUTO ---- */

Test(io, create_rejects_bad_arguments)
{
	struct eng_io *io = NULL;
	struct eng_io_fault_plan bad = { .error = EIO };

	cr_assert_eq(eng_io_create(ENG_IO_SYNC, 0, -1, NULL, &io, NULL), FMT_E_INVALID);
	cr_assert_eq(eng_io_create(ENG_IO_SYNC, ENG_IO_ENTRIES_MAX + 1, -1, NULL, &io, NULL),
		     FMT_E_INVALID);
	cr_assert_eq(eng_io_create((enum eng_io_backend)42, 4, -1, NULL, &io, NULL), FMT_E_INVALID);
	cr_assert_eq(eng_io_create(ENG_IO_FAULT, 4, -1, &bad, &io, NULL), FMT_E_INVALID);
	cr_assert_null(io);
}

Test(io, backend_names)
{
	cr_assert_str_eq(eng_io_backend_name(ENG_IO_AUTO), "auto");
	cr_assert_str_eq(eng_io_backend_name(ENG_IO_URING), "uring");
	cr_assert_str_eq(eng_io_backend_name(ENG_IO_SYNC), "sync");
	cr_assert_str_eq(eng_io_backend_name(ENG_IO_FAULT), "fault");
}

Test(io, auto_prefers_uring)
{
	struct eng_io *io = NULL;
	const char *why = "unset";

	cr_assert_eq(eng_io_create(ENG_IO_AUTO, 16, -1, NULL, &io, &why), 0);
	if (eng_io_backend_of(io) == ENG_IO_URING) {
		cr_assert_null(why);
	} else {
		cr_assert_eq(eng_io_backend_of(io), ENG_IO_SYNC);
		cr_assert_not_null(why);
		cr_log_warn("AUTO fell back to sync here: %s", why);
	}
	cr_log_info("AUTO picked %s", eng_io_backend_name(eng_io_backend_of(io)));
	eng_io_destroy(io);
}

/* What a container's default seccomp profile does: io_uring_setup fails
 * with EPERM. The test runs in its own forked process, so the filter dies
 * with it. */
static void block_io_uring_setup(void)
{
	struct sock_filter code[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = FMT_ARRAY_LEN(code), .filter = code };

	cr_assert_eq(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
	cr_assert_eq(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog), 0, "%s", strerror(errno));
}

Test(io, auto_falls_back_when_io_uring_is_blocked)
{
	struct eng_io *io = NULL;
	const char *why = NULL;

	block_io_uring_setup();
	cr_assert_eq(eng_io_create(ENG_IO_URING, 16, -1, NULL, &io, &why), -EPERM);
	cr_assert_null(io);
	cr_assert_not_null(why);
	cr_assert_eq(eng_io_create(ENG_IO_AUTO, 16, -1, NULL, &io, &why), 0);
	cr_assert_eq(eng_io_backend_of(io), ENG_IO_SYNC);
	cr_assert_not_null(why);
	cr_assert(strstr(why, "Operation not permitted"), "why: %s", why);
	cr_log_info("fallback reason: %s", why);
	eng_io_destroy(io);
}

/* ---- uring specifics ---- */

struct cross {
	struct eng_io *io;
	int fd;
	struct rec rec;
};

static void *cross_main(void *arg)
{
	struct cross *x = arg;
	struct eng_io_op w, f;
	uint8_t out[CHUNK];

	fill(out, sizeof(out), 11);
	op_set(&w, ENG_IO_WRITE, x->fd, out, CHUNK, 0, &x->rec);
	op_set(&f, ENG_IO_FSYNC, x->fd, NULL, 0, 0, &x->rec);
	cr_assert_eq(eng_io_submit(x->io, &w), 0);
	cr_assert_eq(eng_io_submit(x->io, &f), 0);
	run_all(x->io);
	cr_assert_eq(w.result, (int32_t)CHUNK);
	cr_assert_eq(f.result, 0);
	return NULL;
}

/* The ring binds to the thread that runs it, not the one that made it. */
Test(uring, create_here_run_there, .timeout = 60)
{
	static struct cross x;
	pthread_t t;

	x.io = open_io(ENG_IO_URING, 4, -1, NULL);
	x.fd = tmp_file(NULL, 0);
	cr_assert_eq(pthread_create(&t, NULL, cross_main, &x), 0);
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert_eq(x.rec.count, 2);
	eng_io_destroy(x.io);
	close(x.fd);
}

/* Destroy with ops in the kernel: no callbacks, no use after free (ASan). */
Test(uring, destroy_with_ops_in_flight, .timeout = 60)
{
	enum { N = 16, LEN = 64 << 10 };
	static uint8_t data[N][LEN];
	struct rec r = { 0 };
	struct eng_io *io = open_io(ENG_IO_URING, N + 1, -1, NULL);
	struct eng_io_op w[N], f;
	int fd = tmp_file(NULL, 0);

	for (int i = 0; i < N; i++) {
		op_set(&w[i], ENG_IO_WRITE, fd, data[i], LEN, (uint64_t)i * LEN, &r);
		cr_assert_eq(eng_io_submit(io, &w[i]), 0);
	}
	op_set(&f, ENG_IO_FSYNC, fd, NULL, 0, 0, &r);
	cr_assert_eq(eng_io_submit(io, &f), 0);
	cr_assert_geq(eng_io_run(io, 0), 0);
	r.count = 0;
	eng_io_destroy(io);
	cr_assert_eq(r.count, 0);
	close(fd);
}

/* A write to a full pipe stays in the kernel until the pipe is drained
 * (io_uring ignores the offset of a stream), and fdatasync on a pipe fails
 * at once with -EINVAL: so a FSYNC that was not held back behind the
 * write would complete first. Ops on other fds keep moving meanwhile. */
Test(uring, fsync_waits_for_earlier_writes, .timeout = 60)
{
	struct rec r = { 0 };
	struct eng_io *io = open_io(ENG_IO_URING, 8, -1, NULL);
	struct eng_io_op w, f, other;
	uint8_t out[100] = { 6 }, sink[4096];
	int p[2], fd = tmp_file(NULL, 0);
	int pipe_bytes, total = 0;
	uint8_t *fill_buf;

	if (eng_io_backend_of(io) != ENG_IO_URING) {
		eng_io_destroy(io);
		close(fd);
		cr_skip_test("io_uring not usable here; sync runs ops in order anyway");
	}
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	pipe_bytes = fcntl(p[1], F_GETPIPE_SZ);
	cr_assert_gt(pipe_bytes, 0);
	fill_buf = calloc(1, (size_t)pipe_bytes);
	cr_assert_eq(write(p[1], fill_buf, (size_t)pipe_bytes), pipe_bytes);
	op_set(&w, ENG_IO_WRITE, p[1], out, sizeof(out), 0, &r);
	op_set(&f, ENG_IO_FSYNC, p[1], NULL, 0, 0, &r);
	op_set(&other, ENG_IO_WRITE, fd, out, sizeof(out), 0, &r);
	cr_assert_eq(eng_io_submit(io, &w), 0);
	cr_assert_eq(eng_io_submit(io, &f), 0);
	cr_assert_eq(eng_io_submit(io, &other), 0);
	for (int i = 0; i < 5 && eng_io_in_flight(io) > 2; i++)
		cr_assert_geq(eng_io_run(io, SEC_NS / 20), 0);
	cr_assert_eq(r.count, 1, "only the write to the regular file completed");
	cr_assert_eq(r.order[0], &other);
	cr_assert_eq(other.result, (int32_t)sizeof(out));
	cr_assert_eq(eng_io_run(io, SEC_NS / 20), 0, "the fsync is held, the write blocked");
	while (total < pipe_bytes + (int)sizeof(out)) {
		ssize_t n = read(p[0], sink, sizeof(sink));
		cr_assert_gt(n, 0);
		total += (int)n;
		if (total >= pipe_bytes)
			run_all(io);
	}
	cr_assert_eq(r.count, 3);
	cr_assert_eq(r.order[1], &w);
	cr_assert_eq(r.order[2], &f, "the fsync completed after the write");
	cr_assert_eq(w.result, (int32_t)sizeof(out));
	cr_assert_eq(f.result, -EINVAL);
	eng_io_destroy(io);
	free(fill_buf);
	close(p[0]);
	close(p[1]);
	close(fd);
}

/* ---- fault backend ---- */

static struct eng_io *open_fault(const struct eng_io_fault_plan *plan)
{
	return open_io(ENG_IO_FAULT, 64, -1, plan);
}

Test(fault, nth_write_fails_unperformed)
{
	struct eng_io_fault_plan plan = { .fail_write_nth = 3 };
	struct eng_io *io = open_fault(&plan);
	struct rec r = { 0 };
	struct eng_io_op w[5];
	uint8_t out[5][CHUNK], in[CHUNK], zero[CHUNK] = { 0 };
	int fd = tmp_file(NULL, 0);

	for (int i = 0; i < 5; i++) {
		fill(out[i], CHUNK, 20 + (uint32_t)i);
		op_set(&w[i], ENG_IO_WRITE, fd, out[i], CHUNK, (uint64_t)i * CHUNK, &r);
		cr_assert_eq(eng_io_submit(io, &w[i]), 0);
	}
	run_all(io);
	for (int i = 0; i < 5; i++)
		cr_assert_eq(w[i].result, i == 2 ? -EIO : (int32_t)CHUNK, "write %d: %d", i, w[i].result);
	cr_assert_eq(eng_io_fault_writes(io), 5);
	cr_assert_eq(file_size(fd), 5 * CHUNK);
	cr_assert_eq(pread(fd, in, CHUNK, 2 * CHUNK), CHUNK);
	cr_assert_arr_eq(in, zero, CHUNK, "the failed write left a hole");
	cr_assert_eq(pread(fd, in, CHUNK, 3 * CHUNK), CHUNK);
	cr_assert_arr_eq(in, out[3], CHUNK);
	eng_io_destroy(io);
	close(fd);
}

Test(fault, injected_error_is_configurable)
{
	struct eng_io_fault_plan plan = { .fail_write_nth = 1, .error = -ENOSPC };
	struct eng_io *io = open_fault(&plan);
	struct rec r = { 0 };
	struct eng_io_op w;
	uint8_t out[CHUNK] = { 1 };
	int fd = tmp_file(NULL, 0);

	op_set(&w, ENG_IO_WRITE, fd, out, CHUNK, 0, &r);
	cr_assert_eq(eng_io_submit(io, &w), 0);
	run_all(io);
	cr_assert_eq(w.result, -ENOSPC);
	cr_assert_eq(file_size(fd), 0);
	eng_io_destroy(io);
	close(fd);
}

/* write, fsync; write, fsync (fails); write, fsync */
static void write_fsync_rounds(struct eng_io *io, int fd, int rounds, struct eng_io_op *w,
			       struct eng_io_op *f, uint8_t *out, struct rec *r)
{
	for (int i = 0; i < rounds; i++) {
		op_set(&w[i], ENG_IO_WRITE, fd, out, CHUNK, (uint64_t)i * CHUNK, r);
		op_set(&f[i], ENG_IO_FSYNC, fd, NULL, 0, 0, r);
		cr_assert_eq(eng_io_submit(io, &w[i]), 0);
		cr_assert_eq(eng_io_submit(io, &f[i]), 0);
		run_all(io);
	}
}

Test(fault, nth_fsync_fails)
{
	struct eng_io_fault_plan plan = { .fail_fsync_nth = 2 };
	struct eng_io *io = open_fault(&plan);
	struct rec r = { 0 };
	struct eng_io_op w[3], f[3];
	uint8_t out[CHUNK] = { 2 };
	int fd = tmp_file(NULL, 0);

	write_fsync_rounds(io, fd, 3, w, f, out, &r);
	cr_assert_eq(f[0].result, 0);
	cr_assert_eq(f[1].result, -EIO);
	cr_assert_eq(f[2].result, 0);
	cr_assert_eq(w[1].result, (int32_t)CHUNK, "only the fsync fails");
	cr_assert_eq(eng_io_fault_fsyncs(io), 3);
	cr_assert_eq(eng_io_fault_writes(io), 3);
	eng_io_destroy(io);
	close(fd);
}

Test(fault, crash_keeps_synced_drops_unsynced)
{
	struct eng_io *io = open_fault(NULL);
	struct rec r = { 0 };
	struct eng_io_op w[2], f[1], w2;
	uint8_t a[CHUNK], in[CHUNK], pre[100];
	int fd = tmp_file(NULL, 0);
	int fd2 = tmp_file(NULL, 0);

	fill(a, sizeof(a), 30);
	fill(pre, sizeof(pre), 31);
	write_fsync_rounds(io, fd, 1, w, f, a, &r);
	op_set(&w[1], ENG_IO_WRITE, fd, a, CHUNK, CHUNK, &r);
	cr_assert_eq(eng_io_submit(io, &w[1]), 0);
	/* fd2 had bytes before the backend saw it, and is never fsynced. */
	cr_assert_eq(write(fd2, pre, sizeof(pre)), (ssize_t)sizeof(pre));
	op_set(&w2, ENG_IO_WRITE, fd2, a, CHUNK, sizeof(pre), &r);
	cr_assert_eq(eng_io_submit(io, &w2), 0);
	run_all(io);
	cr_assert_eq(file_size(fd), 2 * CHUNK);
	cr_assert_eq(file_size(fd2), sizeof(pre) + CHUNK);

	cr_assert_eq(eng_io_fault_crash(io), 0);
	cr_assert_eq(file_size(fd), CHUNK);
	cr_assert_eq(pread(fd, in, CHUNK, 0), CHUNK);
	cr_assert_arr_eq(in, a, CHUNK);
	cr_assert_eq(file_size(fd2), sizeof(pre));
	eng_io_destroy(io);
	close(fd);
	close(fd2);
}

Test(fault, crash_after_failed_fsync_drops_the_writes)
{
	struct eng_io_fault_plan plan = { .fail_fsync_nth = 1 };
	struct eng_io *io = open_fault(&plan);
	struct rec r = { 0 };
	struct eng_io_op w[1], f[1];
	uint8_t out[CHUNK] = { 3 };
	int fd = tmp_file(NULL, 0);

	write_fsync_rounds(io, fd, 1, w, f, out, &r);
	cr_assert_eq(f[0].result, -EIO);
	cr_assert_eq(file_size(fd), CHUNK);
	cr_assert_eq(eng_io_fault_crash(io), 0);
	cr_assert_eq(file_size(fd), 0);
	eng_io_destroy(io);
	close(fd);
}

/* Overwrites of synced bytes (a recycled WAL file) are undone by a
 * crash, newest first, down to the last fsync; synced ones stay. */
Test(fault, crash_undoes_overwrites_of_synced_bytes)
{
	struct eng_io *io = open_fault(NULL);
	struct rec r = { 0 };
	struct eng_io_op w[1], f[1], over[3], sync;
	uint8_t base[CHUNK], kept[CHUNK], lost[CHUNK], in[2 * CHUNK];
	fill(base, sizeof(base), 40);
	fill(kept, sizeof(kept), 41);
	fill(lost, sizeof(lost), 42);
	int fd = tmp_file(NULL, 0);

	write_fsync_rounds(io, fd, 1, w, f, base, &r);
	/* Synced: bytes 100..110 become kept's. */
	op_set(&over[0], ENG_IO_WRITE, fd, kept, 10, 100, &r);
	op_set(&sync, ENG_IO_FSYNC, fd, NULL, 0, 0, &r);
	cr_assert_eq(eng_io_submit(io, &over[0]), 0);
	cr_assert_eq(eng_io_submit(io, &sync), 0);
	run_all(io);
	/* Not synced: two overlapping overwrites, the second one past the
	 * end of the file. */
	op_set(&over[1], ENG_IO_WRITE, fd, lost, 50, 90, &r);
	op_set(&over[2], ENG_IO_WRITE, fd, lost, CHUNK, 120, &r);
	cr_assert_eq(eng_io_submit(io, &over[1]), 0);
	cr_assert_eq(eng_io_submit(io, &over[2]), 0);
	run_all(io);
	cr_assert_eq(file_size(fd), 120 + CHUNK);

	cr_assert_eq(eng_io_fault_crash(io), 0);
	cr_assert_eq(file_size(fd), CHUNK);
	cr_assert_eq(pread(fd, in, CHUNK, 0), CHUNK);
	cr_assert_arr_eq(in, base, 100);
	cr_assert_arr_eq(in + 100, kept, 10, "the synced overwrite stays");
	cr_assert_arr_eq(in + 110, base + 110, CHUNK - 110, "the others are undone");
	eng_io_destroy(io);
	close(fd);
}

Test(fault, crash_drops_queued_ops)
{
	struct eng_io *io = open_fault(NULL);
	struct rec r = { 0 };
	struct eng_io_op w;
	uint8_t out[CHUNK] = { 5 };
	int fd = tmp_file(NULL, 0);

	op_set(&w, ENG_IO_WRITE, fd, out, CHUNK, 0, &r);
	cr_assert_eq(eng_io_submit(io, &w), 0);
	cr_assert_eq(eng_io_fault_crash(io), 0);
	cr_assert_eq(eng_io_in_flight(io), 0);
	cr_assert_eq(eng_io_run(io, 0), 0);
	cr_assert_eq(r.count, 0, "a crashed process runs no callback");
	cr_assert_eq(file_size(fd), 0);
	eng_io_destroy(io);
	close(fd);
}

Test(sync, fault_calls_on_other_backends)
{
	struct eng_io *io = open_io(ENG_IO_SYNC, 4, -1, NULL);

	cr_assert_eq(eng_io_fault_crash(io), FMT_E_STATE);
	cr_assert_eq(eng_io_fault_writes(io), 0);
	cr_assert_eq(eng_io_fault_fsyncs(io), 0);
	eng_io_destroy(io);
}
