// SPDX-License-Identifier: Apache-2.0
/*
 * io_fault.c — the test double: the sync backend plus fault injection and
 * a model of what survives a power cut (SQLite's crash VFS, in small).
 *
 * Injection: write and fsync ops are counted as they are executed (in
 * submission order); the plan's Nth write and Nth fsync (1-based) fail
 * with plan->error (-EIO by default) WITHOUT being performed, so the file
 * never holds the failed write's bytes; so does every write to a file
 * whose path ends with plan->fail_path_suffix (the fd's /proc link).
 *
 * Durability model, per fd the backend wrote to: `synced_bytes` is the
 * file length at the last successful fsync, or the length the file had
 * when the backend first wrote to it (bytes already there count as
 * durable). A write that overwrites bytes below synced_bytes (a recycled
 * WAL file, ADR 0016) first saves the bytes it replaces in an undo list.
 * eng_io_fault_crash() puts the saved bytes back, newest first, and
 * truncates every such file back to synced_bytes: the file is as it was
 * at its last fsync. A successful fsync empties the list.
 *
 * A failed fsync (injected) leaves synced_bytes where it was, so a crash
 * right after it drops everything since the previous fsync. A later fsync
 * that succeeds does advance it over those bytes; real Linux may already
 * have dropped the dirty pages after the failed fsync ("fsyncgate"), so
 * the engine must treat a failed fsync as fatal for the file rather than
 * retry it, and this model does not catch an engine that retries.
 *
 * Files are tracked by fd number and checked against their inode: an fd
 * closed (or reused for another file) before the crash is skipped.
 */
#define ENG_IO_BACKEND_IMPL
#include "engine/io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Distinct fd numbers written to; a test that needs more is doing
 * something this model was not built for. */
enum { FAULT_FDS_MAX = 256 };

struct fault_file {
	int fd;
	dev_t dev;
	ino_t ino;
	uint64_t synced_bytes;
	bool append_only;         /* opened with O_APPEND: no overwrites */
	struct fault_undo {       /* synced bytes overwritten since the last fsync */
		struct fault_undo *next; /* the one before */
		uint64_t offset;
		size_t len;
		uint8_t old[];
	} *undo;
};

struct eng_io_fault {
	struct eng_io base;       /* first: the vtable functions cast back */
	struct eng_io_fault_plan plan;
	uint64_t writes;
	uint64_t fsyncs;
	uint32_t file_count;
	struct fault_file files[FAULT_FDS_MAX];
};

static struct eng_io_fault *fault_of(struct eng_io *io)
{
	ASSERT(io->backend == ENG_IO_FAULT);
	return (struct eng_io_fault *)io;
}

static void undo_free(struct fault_file *ff)
{
	while (ff->undo) {
		struct fault_undo *u = ff->undo;
		ff->undo = u->next;
		free(u);
	}
}

/* Saves the synced bytes a write of len bytes at offset replaces. */
static int undo_save(struct fault_file *ff, int fd, uint64_t offset, size_t len)
{
	size_t n = (size_t)FMT_MIN((uint64_t)len, ff->synced_bytes - offset);
	struct fault_undo *u = malloc(sizeof(*u) + n);
	if (!u)
		return -ENOMEM;
	ssize_t got = pread(fd, u->old, n, (off_t)offset);
	if (got < 0) {
		free(u);
		return -errno;
	}
	u->offset = offset;
	u->len = (size_t)got;
	u->next = ff->undo;
	ff->undo = u;
	return 0;
}

static struct fault_file *fault_find(struct eng_io_fault *f, int fd)
{
	for (uint32_t i = 0; i < f->file_count; i++)
		if (f->files[i].fd == fd)
			return &f->files[i];
	return NULL;
}

/* Finds or starts the record of the file behind fd, before a write to it.
 * Returns NULL with *err set when fstat fails or the table is full. */
static struct fault_file *fault_track(struct eng_io_fault *f, int fd, int *err)
{
	struct fault_file *ff = fault_find(f, fd);
	struct stat st;
	int flags;

	if (fstat(fd, &st) != 0) {
		*err = -errno;
		return NULL;
	}
	if (ff && ff->dev == st.st_dev && ff->ino == st.st_ino)
		return ff;
	if (!ff) {
		if (f->file_count == FAULT_FDS_MAX) {
			*err = FMT_E_FULL;
			return NULL;
		}
		ff = &f->files[f->file_count++];
	}
	flags = fcntl(fd, F_GETFL);
	ff->fd = fd;
	ff->dev = st.st_dev;
	ff->ino = st.st_ino;
	ff->synced_bytes = (uint64_t)st.st_size;
	ff->append_only = flags >= 0 && (flags & O_APPEND);
	undo_free(ff);
	return ff;
}

static bool path_has_suffix(int fd, const char *suffix)
{
	char link[64], path[4200];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, path, sizeof(path) - 1);
	size_t k = strlen(suffix);
	return n >= 0 && (size_t)n >= k && memcmp(path + n - k, suffix, k) == 0;
}

/* Whether an op on fd counts towards the plan's nth write or fsync. */
static bool counts_for_nth(const struct eng_io_fault *f, int fd)
{
	return !f->plan.nth_path_suffix || path_has_suffix(fd, f->plan.nth_path_suffix);
}

static void fault_write(struct eng_io_fault *f, struct eng_io_op *op)
{
	struct fault_file *ff;
	int err = 0;

	bool counted = counts_for_nth(f, op->fd);
	f->writes += counted;
	if ((counted && f->writes == f->plan.fail_write_nth) ||
	    (f->plan.fail_path_suffix && path_has_suffix(op->fd, f->plan.fail_path_suffix))) {
		op->result = f->plan.error;
		return;
	}
	ff = fault_track(f, op->fd, &err);
	if (!ff) {
		op->result = err;
		return;
	}
	if (!ff->append_only && op->len > 0 && op->offset < ff->synced_bytes &&
	    (err = undo_save(ff, op->fd, op->offset, op->len)) != 0) {
		op->result = err;
		return;
	}
	eng_io_sync_exec(op);
}

static void fault_fsync(struct eng_io_fault *f, struct eng_io_op *op)
{
	struct fault_file *ff;
	struct stat st;

	bool counted = counts_for_nth(f, op->fd);
	f->fsyncs += counted;
	if (counted && f->fsyncs == f->plan.fail_fsync_nth) {
		op->result = f->plan.error;
		return;
	}
	eng_io_sync_exec(op);
	ff = fault_find(f, op->fd);
	if (op->result != 0 || !ff)
		return;
	/* Ops run in submission order, so the length now covers every
	 * write submitted before this fsync. */
	if (fstat(op->fd, &st) != 0) {
		op->result = -errno;
		return;
	}
	if (st.st_dev == ff->dev && st.st_ino == ff->ino) {
		ff->synced_bytes = (uint64_t)st.st_size;
		undo_free(ff);
	}
}

static void fault_exec(struct eng_io *io, struct eng_io_op *op)
{
	struct eng_io_fault *f = fault_of(io);

	switch (op->kind) {
	case ENG_IO_WRITE:
		fault_write(f, op);
		break;
	case ENG_IO_FSYNC:
		fault_fsync(f, op);
		break;
	case ENG_IO_READ:
	case ENG_IO_WRITEBACK: /* durability is FSYNC's: the crash model ignores it */
		eng_io_sync_exec(op);
		break;
	}
}

static int fault_run(struct eng_io *io, int64_t timeout_ns)
{
	return eng_io_sync_run_with(io, timeout_ns, fault_exec);
}

static void fault_destroy(struct eng_io *io)
{
	struct eng_io_fault *f = fault_of(io);
	for (uint32_t i = 0; i < f->file_count; i++)
		undo_free(&f->files[i]);
	free(f);
}

static const struct eng_io_vtable fault_vtable = {
	.run = fault_run,
	.destroy = fault_destroy,
};

int eng_io_fault_create(uint32_t entries, int wake_fd, const struct eng_io_fault_plan *plan,
			struct eng_io **out)
{
	struct eng_io_fault *f;

	if (plan && plan->error > 0)
		return FMT_E_INVALID;
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	eng_io_base_init(&f->base, &fault_vtable, ENG_IO_FAULT, entries, wake_fd);
	if (plan)
		f->plan = *plan;
	if (f->plan.error == 0)
		f->plan.error = -EIO;
	*out = &f->base;
	return 0;
}

int eng_io_fault_crash(struct eng_io *io)
{
	struct eng_io_fault *f;
	int rc = 0;

	if (!io || io->backend != ENG_IO_FAULT)
		return FMT_E_STATE;
	f = fault_of(io);
	for (uint32_t i = 0; i < f->file_count; i++) {
		struct fault_file *ff = &f->files[i];
		struct stat st;

		if (fstat(ff->fd, &st) != 0 || st.st_dev != ff->dev || st.st_ino != ff->ino) {
			undo_free(ff);
			continue; /* closed or reused: nothing to restore through it */
		}
		for (struct fault_undo *u = ff->undo; u && rc == 0; u = u->next)
			if (pwrite(ff->fd, u->old, u->len, (off_t)u->offset) != (ssize_t)u->len)
				rc = errno ? -errno : -EIO;
		undo_free(ff);
		if (rc == 0 && (uint64_t)st.st_size > ff->synced_bytes &&
		    ftruncate(ff->fd, (off_t)ff->synced_bytes) != 0)
			rc = -errno;
		if (rc)
			return rc;
	}
	/* The process would have died with these ops queued. */
	for (struct eng_io_op *op = eng_io_take_queue(io); op; op = op->next) {
		ASSERT(io->in_flight > 0);
		io->in_flight--;
	}
	return rc;
}

uint64_t eng_io_fault_writes(const struct eng_io *io)
{
	if (io->backend != ENG_IO_FAULT)
		return 0;
	return ((const struct eng_io_fault *)io)->writes;
}

uint64_t eng_io_fault_fsyncs(const struct eng_io *io)
{
	if (io->backend != ENG_IO_FAULT)
		return 0;
	return ((const struct eng_io_fault *)io)->fsyncs;
}
