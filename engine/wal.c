// SPDX-License-Identifier: Apache-2.0
/*
 * wal.c — WAL files: creation, rotation, reclaim and replay at start.
 *
 * Files are <shard>/wal/wal-<gen:016x>.log, each a file header followed by
 * batch records (format/record.h). A file is only ever appended to by the
 * run that created it: after a restart, replay reads every file and the
 * engine starts a new generation, so a torn tail is never written over.
 *
 * Replay, per file in generation order:
 *   - a batch whose events are already in a segment (seq <= sealed_seq) is
 *     skipped; the rest rebuild the tenants' memtables, chains, next seq
 *     and dedup memory exactly as they were;
 *   - a torn tail (a bad record with nothing valid after it) in the newest
 *     file is cut off: it was never acknowledged, since its fsync did not
 *     complete. "Newest" skips the spare: the next generation's file,
 *     which the seal worker creates ahead (header only) so that rotations
 *     do not wait for it; a spare with a torn header is removed;
 *   - a bad record with valid records after it, or a torn tail in an older
 *     file, is damage: the start stops naming file and offset, unless the
 *     operator passed repair, which cuts the log there and drops the rest
 *     (loudly: what is dropped was acknowledged).
 *   - an event whose seq does not continue its tenant (a gap) is damage too.
 *
 * Recycling (ADR 0016). A file whose every event is sealed is retired:
 * renamed to wal-<gen>.free and kept, up to cfg.wal_recycle_files per
 * shard, instead of deleted. The seal worker makes the next spare from a
 * free file when there is one: it cuts the file at the end of its last
 * life's records, writes a new header (a new random salt, and that
 * life's salt as prev_salt) with fdatasync, renames the file to the new
 * generation's name and fsyncs the directory. The shard then overwrites
 * the file in place: a commit whose bytes land inside the file's size
 * changes no metadata, so its fdatasync does not wait for an ext4
 * journal commit (which first writes out the seal workers' dirty segment
 * data). The records' checks are seeded with the salt, so the old bytes
 * are never taken for records of the new life (format/record.h says how
 * the scan skips them). Crash points:
 *   - before the header is durable: the .free file is as it was;
 *   - header durable, rename not: a .free file whose own life is empty
 *     (no record at the start passes its salt), so the next recycling
 *     takes its prev_salt as the salt of the bytes it holds;
 *   - rename durable: an empty generation (a spare), as for a new file.
 * Files of version 1 (written before salts) are not recycled but deleted.
 * A generation number names one file in its life: a start begins past
 * every .log and .free file (the spare kept at a stop is wal-<last+1>.free),
 * and no rename replaces a file, so the free list never names a file
 * twice nor a live one. The recycling reads, cuts and rewrites the inode
 * it opened, not a name, and checks after the rename that the new name
 * is that inode (else the rotation fails, ADR 0002).
 *
 * Replay is CPU-bound (checksum, decode, SHA-256 of every event and a chain
 * step, memtable copy, dedup insert), one thread per shard. Two things keep
 * it short without changing what it checks or rebuilds:
 *   - a helper thread per file hashes the events ahead of the replay (the
 *     largest single cost, and independent per event), so that a core
 *     left idle by a smaller shard, or by a single shard, takes it; the
 *     replay uses a helper's hash only for the very bytes it holds, and
 *     still computes every chain step itself, in order;
 *   - dedup inserts go in batches (up to a record's events) whose table
 *     slots are prefetched together, in the same order as one by one;
 *   - memtable rows borrow their bytes from the file's mapping instead of
 *     copying them (eng_memtable_add_borrowed). A file any row borrows
 *     from stays mapped (wal.maps) until eng_wal_reclaim() removes it,
 *     which happens only once no memtable row of any tenant is in it; a
 *     seal's split copies the rows it moves. The replay never writes a
 *     file it maps (a new generation starts), and a repair only cuts
 *     bytes no row was taken from.
 */
#include "engine/internal.h"
#include "engine/offline.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char wal_magic[8] = { 'H', 'O', 'D', 'E', 'I', 'W', 'A', 'L' };

int eng_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = fsync(fd) ? -errno : 0;
	close(fd);
	return rc;
}

static void wal_path_in(const char *dir, uint64_t gen, char *out, size_t cap)
{
	snprintf(out, cap, "%s/wal-%016llx.log", dir, (unsigned long long)gen);
}

static void wal_path(const struct eng_shard *s, uint64_t gen, char *out, size_t cap)
{
	wal_path_in(s->wal.dir, gen, out, cap);
}

/* A retired file kept to be recycled. */
static void free_path_in(const char *dir, uint64_t gen, char *out, size_t cap)
{
	snprintf(out, cap, "%s/wal-%016llx.free", dir, (unsigned long long)gen);
}

/* Renames generation gen's file to its free name, to be recycled; false
 * when it could not. Never over another file: a free file already under
 * that name is in the free list, and one name listed twice would be
 * recycled twice. */
static bool wal_keep_free(const char *dir, uint64_t gen)
{
	char path[4200], free_path[4200];
	wal_path_in(dir, gen, path, sizeof(path));
	free_path_in(dir, gen, free_path, sizeof(free_path));
	return renameat2(AT_FDCWD, path, AT_FDCWD, free_path, RENAME_NOREPLACE) == 0;
}

/* A new file's salt: random, never 0 (0 means "unsalted"). */
static uint64_t new_salt(void)
{
	uint64_t salt = 0;
	while (salt == 0)
		if (getrandom(&salt, sizeof(salt), 0) != (ssize_t)sizeof(salt))
			salt = (uint64_t)eng_now_ns() * 0x9e3779b97f4a7c15ull;
	return salt;
}

/* Writes generation gen's header (a new salt, and prev as prev_salt) at
 * the start of fd and makes it durable; returns the salt, or 0 with errno
 * set. */
static uint64_t wal_header_write(int fd, uint32_t shard, uint64_t gen, uint64_t prev)
{
	struct fmt_file_header h = { .version = FMT_FILE_VERSION_SALTED, .shard = shard,
				     .generation = gen, .created_ns = eng_now_ns(),
				     .salt = new_salt(), .prev_salt = prev };
	memcpy(h.magic, wal_magic, 8);
	uint8_t hdr[FMT_FILE_HEADER_BYTES];
	fmt_file_header_encode(&h, hdr);
	errno = 0;
	if (pwrite(fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) || fdatasync(fd) != 0) {
		if (!errno)
			errno = EIO;
		return 0;
	}
	return h.salt;
}

/* Creates generation `gen`'s file in dir with its header and directory
 * entry durable; returns its fd (and its salt in *salt) or -errno (then no
 * file is left). Any thread: it touches nothing of the shard's. */
static int wal_file_create(const char *dir, uint32_t shard, uint64_t gen, uint64_t *salt)
{
	char path[4200];
	wal_path_in(dir, gen, path, sizeof(path));
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (fd < 0)
		return -errno;
	int rc = 0;
	if (!(*salt = wal_header_write(fd, shard, gen, 0)))
		rc = -errno;
	if (rc == 0)
		rc = eng_fsync_dir(dir);
	if (rc) {
		close(fd);
		unlink(path);
		return rc;
	}
	return fd;
}

/* The salt of the records a free file holds, and where they end: its own
 * life's when its first record is of it, else the life before (a life
 * that wrote nothing, such as a spare never used). 0 and the header's end
 * when it holds none. */
static uint64_t free_file_records(const uint8_t *buf, size_t len, const struct fmt_file_header *h,
				  uint32_t payload_max, uint64_t *end)
{
	uint64_t life = fmt_log_used(buf, len, len) ? h->salt : h->prev_salt;
	*end = life ? fmt_log_run_end(buf, len, FMT_FILE_HEADER_BYTES, payload_max, life)
		    : FMT_FILE_HEADER_BYTES;
	return *end > FMT_FILE_HEADER_BYTES ? life : 0;
}

/* Whether path names the inode open as fd. */
static bool same_inode(int fd, const char *path)
{
	struct stat a, b;
	return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev &&
	       a.st_ino == b.st_ino;
}

/* Turns the free file `from` into generation `gen`'s file (see the top of
 * this file): returns its fd and salt, or an error (FMT_E_VERSION for a
 * file that cannot be recycled), and then the free file is left as it
 * was or with a new header, for the caller to delete. Seal worker. */
static int wal_file_recycle(const char *dir, uint32_t shard, uint64_t from, uint64_t gen,
			    uint32_t payload_max, uint64_t *salt)
{
	char src[4200], dst[4200];
	free_path_in(dir, from, src, sizeof(src));
	wal_path_in(dir, gen, dst, sizeof(dst));
	/* Everything below reads and writes the inode opened here; only the
	 * rename goes by name, and it is checked to have moved that inode. */
	int fd;
	size_t size;
	int rc = eng_file_open_regular(src, O_RDWR, &fd, &size);
	if (rc)
		return rc;
	const uint8_t *buf;
	size_t len;
	if ((rc = eng_file_map_fd(fd, size, &buf, &len)) != 0) {
		close(fd);
		return rc;
	}
	struct fmt_file_header h;
	uint64_t prev = 0, end = 0;
	rc = fmt_file_header_decode(buf, len, &h);
	if (rc == 0 && (memcmp(h.magic, wal_magic, 8) || h.version != FMT_FILE_VERSION_SALTED))
		rc = FMT_E_VERSION;
	if (rc == 0)
		prev = free_file_records(buf, len, &h, payload_max, &end);
	eng_file_unmap(buf, len);
	if (rc) {
		close(fd);
		return rc;
	}
	/* Nothing older than prev's records stays in the file. */
	if (end < len && ftruncate(fd, (off_t)end) != 0)
		rc = -errno;
	if (rc == 0 && !(*salt = wal_header_write(fd, shard, gen, prev)))
		rc = -errno;
	/* Never over a live file (a generation is named once). */
	if (rc == 0 && renameat2(AT_FDCWD, src, AT_FDCWD, dst, RENAME_NOREPLACE) != 0)
		rc = -errno;
	else if (rc == 0 && !same_inode(fd, dst))
		rc = -ESTALE; /* another file had the free name: never expected, fail loudly */
	else if (rc == 0 && (rc = eng_fsync_dir(dir)) != 0)
		unlink(dst); /* renamed: the caller deletes the free name only */
	if (rc) {
		close(fd);
		return rc;
	}
	return fd;
}

/* Makes fd (generation gen, header only) the active file. */
static void wal_use(struct eng_shard *s, int fd, uint64_t gen, uint64_t salt)
{
	s->wal.fd = fd;
	s->wal.gen = gen;
	s->wal.salt = salt;
	s->wal.size = FMT_FILE_HEADER_BYTES;
	s->stats.wal_files = s->wal.old_count + 1;
}

/* Creates generation `gen` with its header durable, and makes it active:
 * the spare, when the worker has it ready, else now. */
static int wal_create(struct eng_shard *s, uint64_t gen)
{
	int fd = -1;
	uint64_t salt = 0;
	if (s->seal_worker_started) {
		pthread_mutex_lock(&s->seal_lock);
		if (s->wal.spare_want == gen)
			s->wal.spare_want = 0; /* not started: cheaper to do it here */
		while (s->wal.spare_busy)
			pthread_cond_wait(&s->spare_cond, &s->seal_lock);
		if (s->wal.spare_fd >= 0 && s->wal.spare_gen == gen) {
			fd = s->wal.spare_fd;
			salt = s->wal.spare_salt;
			s->wal.spare_fd = -1;
			s->stats.wal_recycled += s->wal.spare_recycled;
		}
		s->stats.wal_free_files = s->wal.free_count;
		pthread_mutex_unlock(&s->seal_lock);
	}
	if (fd < 0) {
		if ((fd = wal_file_create(s->wal.dir, s->id, gen, &salt)) < 0)
			return fd;
		s->stats.wal_rotations_inline++;
	}
	s->stats.wal_rotations++;
	wal_use(s, fd, gen, salt);
	eng_wal_spare_request(s, gen + 1);
	return 0;
}

void eng_wal_spare_request(struct eng_shard *s, uint64_t gen)
{
	if (!s->seal_worker_started)
		return;
	pthread_mutex_lock(&s->seal_lock);
	if (s->wal.spare_fd < 0 && !s->wal.spare_busy) {
		s->wal.spare_want = gen;
		pthread_cond_signal(&s->seal_cond);
	}
	pthread_mutex_unlock(&s->seal_lock);
}

void eng_wal_spare_make(struct eng_shard *s)
{
	struct eng_wal *w = &s->wal;
	uint64_t gen = w->spare_want, salt = 0;
	w->spare_want = 0;
	w->spare_busy = true;
	bool from_free = w->free_count > 0;
	uint64_t from = from_free ? w->free_gens[--w->free_count] : 0;
	pthread_mutex_unlock(&s->seal_lock);
	int fd = -1;
	if (from_free) {
		fd = wal_file_recycle(w->dir, s->id, from, gen, (uint32_t)s->eng->cfg.wal_buffer_bytes,
				      &salt);
		if (fd < 0) {
			char path[4200];
			free_path_in(w->dir, from, path, sizeof(path));
			if (fd != FMT_E_VERSION)
				eng_log(s->eng, ENG_LOG_WARN, "shard %u: cannot recycle %s: %s "
					"(deleting it; a new file is created instead)", s->id, path,
					fmt_strerror(fd));
			unlink(path);
			from_free = false;
		}
	}
	if (fd < 0 && (fd = wal_file_create(w->dir, s->id, gen, &salt)) < 0)
		eng_log(s->eng, ENG_LOG_WARN, "shard %u: cannot create WAL generation %llu ahead: %s "
			"(the rotation will try again)", s->id, (unsigned long long)gen,
			fmt_strerror(fd));
	pthread_mutex_lock(&s->seal_lock);
	w->spare_busy = false;
	w->spare_fd = fd;
	w->spare_gen = gen;
	w->spare_salt = salt;
	w->spare_recycled = from_free;
	pthread_cond_broadcast(&s->spare_cond);
}

void eng_wal_spare_drop(struct eng_shard *s)
{
	if (s->wal.spare_fd < 0)
		return;
	close(s->wal.spare_fd);
	s->wal.spare_fd = -1;
	/* Kept to be recycled after the restart (which keeps at most
	 * wal_recycle_files); if the rename or removal is lost, replay finds
	 * an empty file. */
	if (!s->eng->cfg.wal_recycle_files || !wal_keep_free(s->wal.dir, s->wal.spare_gen)) {
		char path[4200];
		wal_path(s, s->wal.spare_gen, path, sizeof(path));
		unlink(path);
	}
}

uint32_t eng_wal_last_used(const char *dir, const uint64_t *gens, uint32_t count)
{
	for (uint32_t i = count; i-- > 0;) {
		char path[4200];
		wal_path_in(dir, gens[i], path, sizeof(path));
		uint8_t head[FMT_FILE_HEADER_BYTES + FMT_REC_HEADER_BYTES];
		struct stat st;
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return i; /* unreadable: its scan reports it */
		ssize_t n = fstat(fd, &st) == 0 ? pread(fd, head, sizeof(head), 0) : -1;
		close(fd);
		if (n < 0 || fmt_log_used(head, (size_t)n, (uint64_t)st.st_size))
			return i;
	}
	return 0;
}

static int old_gens_push(struct eng_wal *w, uint64_t gen)
{
	if (w->old_count == w->old_cap) {
		uint32_t cap = w->old_cap ? w->old_cap * 2 : 16;
		uint64_t *g = realloc(w->old_gens, cap * sizeof(*g));
		if (!g)
			return FMT_E_NOMEM;
		w->old_gens = g;
		w->old_cap = cap;
	}
	w->old_gens[w->old_count++] = gen;
	return 0;
}

int eng_wal_rotate(struct eng_shard *s)
{
	struct eng_wal *w = &s->wal;
	ASSERT(!w->in_flight);
	int64_t t0 = eng_mono_ns();
	int rc = old_gens_push(w, w->gen);
	if (rc)
		return rc;
	close(w->fd);
	w->fd = -1;
	rc = wal_create(s, w->gen + 1);
	uint64_t took = (uint64_t)(eng_mono_ns() - t0);
	eng_latency_note(s->stats.wal_rotation_hist, &s->stats.wal_rotation_ns_total,
			 &s->stats.wal_rotation_ns_max, took);
	s->stats.shard_blocked_ns += took;
	return rc;
}

int eng_wal_open(struct eng_shard *s)
{
	struct eng_wal *w = &s->wal;
	uint64_t cap = s->eng->cfg.wal_buffer_bytes;
	for (int i = 0; i < 2; i++) {
		w->buf[i].data = malloc(cap);
		w->buf[i].cap = cap;
		if (!w->buf[i].data)
			return FMT_E_NOMEM;
	}
	/* Past the free files too: the spare kept at the last stop is
	 * wal-<last+1>.free, and a new file under its number would leave that
	 * free file listed beside a live one of the same generation. */
	uint64_t next = w->old_count ? w->old_gens[w->old_count - 1] + 1 : 1;
	for (uint32_t i = 0; i < w->free_count; i++)
		next = FMT_MAX(next, w->free_gens[i] + 1);
	return wal_create(s, next);
}

/* Unmaps the replayed files older than generation `below`: no memtable
 * row borrows from them any more. */
static void wal_unmap(struct eng_wal *w, uint64_t below)
{
	uint32_t kept = 0;
	for (uint32_t i = 0; i < w->map_count; i++) {
		if (w->maps[i].gen < below)
			eng_file_unmap(w->maps[i].buf, w->maps[i].len);
		else
			w->maps[kept++] = w->maps[i];
	}
	w->map_count = kept;
}

void eng_wal_close(struct eng_wal *w)
{
	if (w->fd >= 0)
		close(w->fd);
	w->fd = -1;
	for (int i = 0; i < 2; i++) {
		free(w->buf[i].data);
		free(w->buf[i].reqs);
		w->buf[i].data = NULL;
		w->buf[i].reqs = NULL;
	}
	free(w->old_gens);
	w->old_gens = NULL;
	wal_unmap(w, UINT64_MAX);
	free(w->maps);
	w->maps = NULL;
}

/* Retires generation gen, whose every event is sealed: kept to be
 * recycled while there is room, else deleted. False when it is still
 * there under its name. */
static bool wal_retire(struct eng_shard *s, uint64_t gen)
{
	struct eng_wal *w = &s->wal;
	if (s->seal_worker_started && s->eng->cfg.wal_recycle_files) {
		pthread_mutex_lock(&s->seal_lock);
		bool kept = w->free_count < s->eng->cfg.wal_recycle_files && wal_keep_free(w->dir, gen);
		if (kept) {
			w->free_gens[w->free_count++] = gen;
			s->stats.wal_free_files = w->free_count;
		}
		pthread_mutex_unlock(&s->seal_lock);
		if (kept)
			return true;
	}
	char path[4200];
	wal_path(s, gen, path, sizeof(path));
	if (unlink(path) != 0 && errno != ENOENT) {
		eng_log(s->eng, ENG_LOG_WARN, "cannot remove %s: %s", path, strerror(errno));
		return false;
	}
	return true;
}

/* Retires WAL files whose every event is sealed (I4). */
void eng_wal_reclaim(struct eng_shard *s)
{
	struct eng_wal *w = &s->wal;
	uint64_t keep_from = w->gen;
	for (uint32_t i = 0; i < s->tenant_slot_count; i++) {
		struct eng_tenant *t = s->tenant_slots[i];
		if (t && t->sealing.row_count && t->sealing.gen[0] < keep_from)
			keep_from = t->sealing.gen[0];
		if (t && t->active.row_count && t->active.gen[0] < keep_from)
			keep_from = t->active.gen[0];
	}
	/* Unmapped first: a recycled file is overwritten. */
	wal_unmap(w, keep_from);
	uint32_t kept = 0;
	for (uint32_t i = 0; i < w->old_count; i++)
		if (w->old_gens[i] >= keep_from || !wal_retire(s, w->old_gens[i]))
			w->old_gens[kept++] = w->old_gens[i];
	w->old_count = kept;
	s->stats.wal_files = kept + 1;
}

/* ---- replay ---------------------------------------------------------------- */

/* Dedup inserts wait for the end of their record, or for this many, and
 * go in together (eng_dedup_insert_many() overlaps their cache misses). */
#define REPLAY_DEDUP_BATCH 64

/* Event hashes computed ahead of the replay, by a helper thread per file:
 * the SHA-256 of each event's bytes is the largest single part of the
 * replay's work and depends on nothing but those bytes, so a core that
 * would otherwise wait (the shard that finishes first, or a single shard)
 * takes it. The helper walks the same mapped file with fmt_rec_peek() and
 * numbers the events as the replay does. Event k's hash goes to slot
 * k % REPLAY_HASH_SLOTS, written only once the replay is past event
 * k - REPLAY_HASH_SLOTS (replay_at), so a slot is never rewritten while the
 * replay may read it. The replay takes slot k's hash only when k < done
 * (written in this file's pass) and canon[slot] is the very event it holds
 * (same address in the same read-only mapping), and hashes the event
 * itself otherwise. So the chain is computed over the same bytes with the
 * same function either way, and a damaged or torn file only costs the
 * helper's lead. */
#ifndef REPLAY_HASH_SLOTS /* a test build may shrink it to exercise the wrap */
#define REPLAY_HASH_SLOTS (1u << 16) /* ~2.5 MiB; tens of MiB of WAL ahead */
#endif

struct replay_hasher {
	const uint8_t *buf;
	size_t len;
	uint32_t payload_max;
	uint64_t seed;                     /* the file's salt */
	uint8_t (*hash)[FMT_HASH_BYTES];   /* [REPLAY_HASH_SLOTS] */
	const uint8_t **canon;             /* the bytes each hash covers; NULL: none */
	_Atomic uint64_t done;             /* events [0, done) have their slot written */
	_Atomic uint64_t replay_at;        /* the replay is done with events [0, replay_at) */
	_Atomic bool stop;
	pthread_t thread;
	bool running;
};

/* How far ahead of the replay the helper starts when it finds itself
 * behind: a few records' worth, so that the two do not hash the same
 * events. */
#define REPLAY_HASH_LEAD 256
#define REPLAY_HASH_WAIT_NS 50000 /* the helper's nap when it is a ring ahead */

struct replay {
	struct eng_shard *s;
	const char *path;
	uint64_t gen;
	uint64_t events, skipped;
	uint64_t hashed_ahead;             /* events whose hash the helper gave */
	uint64_t file_event;               /* number of the event in its file */
	struct replay_hasher hasher;
	struct eng_tenant *tenant;         /* the last event's tenant */
	bool borrowed;                     /* a memtable row borrows this file's bytes */
	struct eng_dedup_item dedup[REPLAY_DEDUP_BATCH];
	uint32_t dedup_count;
};

/* Waits until the replay is done with the event REPLAY_HASH_SLOTS before
 * k, whose slot k reuses. Returns false when told to stop. */
static bool hasher_wait_slot(struct replay_hasher *h, uint64_t k, uint64_t *at)
{
	while (k >= *at + REPLAY_HASH_SLOTS) {
		if (atomic_load_explicit(&h->stop, memory_order_relaxed))
			return false;
		nanosleep(&(struct timespec){ .tv_nsec = REPLAY_HASH_WAIT_NS }, NULL);
		*at = atomic_load_explicit(&h->replay_at, memory_order_acquire);
	}
	return true;
}

static void *hasher_run(void *arg)
{
	struct replay_hasher *h = arg;
	uint64_t k = 0, resume = 0;
	struct fmt_rec rec;
	int64_t n = 0;
	for (size_t off = FMT_FILE_HEADER_BYTES; off < h->len; off += (size_t)n) {
		if (atomic_load_explicit(&h->stop, memory_order_relaxed) ||
		    (n = fmt_rec_peek(h->buf + off, h->len - off, h->payload_max, h->seed, &rec)) <= 0 ||
		    rec.kind != FMT_REC_BATCH)
			break;
		/* Behind the replay: start again a little ahead of it. */
		uint64_t at = atomic_load_explicit(&h->replay_at, memory_order_acquire);
		if (k < at)
			resume = at + REPLAY_HASH_LEAD;
		uint32_t eoff = 0, len;
		const uint8_t *ev;
		int more;
		while ((more = fmt_batch_next(&rec, &eoff, &ev, &len)) == 1) {
			if (k >= at + REPLAY_HASH_SLOTS) {
				atomic_store_explicit(&h->done, k, memory_order_release);
				if (!hasher_wait_slot(h, k, &at))
					return NULL;
			}
			uint32_t slot = (uint32_t)(k % REPLAY_HASH_SLOTS);
			if (k < resume) {
				h->canon[slot] = NULL;
			} else {
				fmt_sha256(ev, len, h->hash[slot]);
				h->canon[slot] = ev;
			}
			k++;
		}
		/* Publishes the slots written (release: before done moves). */
		atomic_store_explicit(&h->done, k, memory_order_release);
		if (more < 0)
			break; /* numbering lost: the replay hashes the rest itself */
	}
	return NULL;
}

/* Starts the helper on a mapped file; without it (no memory, no thread)
 * the replay hashes every event itself. */
static void hasher_start(struct replay *r, const uint8_t *buf, size_t len)
{
	struct replay_hasher *h = &r->hasher;
	atomic_store(&h->done, 0);
	atomic_store(&h->replay_at, 0);
	atomic_store(&h->stop, false);
	r->file_event = 0;
	if (!h->hash)
		h->hash = malloc(REPLAY_HASH_SLOTS * sizeof(*h->hash));
	if (!h->canon)
		h->canon = malloc(REPLAY_HASH_SLOTS * sizeof(*h->canon));
	struct fmt_file_header fh;
	if (!h->hash || !h->canon || len <= FMT_FILE_HEADER_BYTES ||
	    fmt_file_header_decode(buf, len, &fh) != 0)
		return;
	h->seed = fh.salt;
	h->buf = buf;
	h->len = len;
	h->payload_max = (uint32_t)r->s->eng->cfg.wal_buffer_bytes;
	h->running = pthread_create(&h->thread, NULL, hasher_run, h) == 0;
}

/* Stops and joins the helper: before the file is unmapped. */
static void hasher_stop(struct replay_hasher *h)
{
	if (!h->running)
		return;
	atomic_store(&h->stop, true);
	pthread_join(h->thread, NULL);
	h->running = false;
}

static void hasher_free(struct replay_hasher *h)
{
	ASSERT(!h->running);
	free(h->hash);
	free(h->canon);
}

/* The event hash of the file's event number r->file_event: the helper's
 * when it hashed these very bytes, else computed here. */
static void replay_hash(struct replay *r, const uint8_t *canon, uint32_t len,
			uint8_t out[FMT_HASH_BYTES])
{
	struct replay_hasher *h = &r->hasher;
	uint64_t k = r->file_event;
	uint32_t slot = (uint32_t)(k % REPLAY_HASH_SLOTS);
	if (h->running && k < atomic_load_explicit(&h->done, memory_order_acquire) &&
	    h->canon[slot] == canon) {
		memcpy(out, h->hash[slot], FMT_HASH_BYTES);
		r->hashed_ahead++;
		return;
	}
	fmt_sha256(canon, len, out);
}

static void replay_dedup_flush(struct replay *r)
{
	eng_dedup_insert_many(r->s->dedup, r->dedup, r->dedup_count);
	r->dedup_count = 0;
}

static int replay_event(struct replay *r, const uint8_t *canon, uint32_t len)
{
	struct eng_shard *s = r->s;
	struct fmt_attr attrs[FMT_ATTRS_HARD_MAX];
	struct fmt_event ev;
	int rc = fmt_event_canon_decode(canon, len, &ev, attrs, FMT_ATTRS_HARD_MAX);
	if (rc)
		return FMT_E_CORRUPT;
	/* A record holds one tenant's events: the name is looked up (and
	 * checked) once per tenant change, not per event. */
	struct eng_tenant *t = r->tenant;
	if (!t || t->name_len != ev.tenant.len || memcmp(t->name, ev.tenant.ptr, ev.tenant.len)) {
		if (!fmt_tenant_valid(ev.tenant))
			return FMT_E_CORRUPT;
		if (!(t = eng_tenant_get(s, ev.tenant, &rc)))
			return rc;
		r->tenant = t;
	}
	if (ev.seq <= t->sealed_seq) {
		r->skipped++;
		return 0;
	}
	if (ev.seq != t->next_seq) {
		eng_log(s->eng, ENG_LOG_ERROR, "%s: tenant %s jumps from seq %llu to %llu", r->path,
			t->name, (unsigned long long)(t->next_seq - 1), (unsigned long long)ev.seq);
		return FMT_E_CORRUPT;
	}
	uint8_t hash[FMT_HASH_BYTES];
	replay_hash(r, canon, len, hash);
	fmt_chain_next(t->chain, hash, t->chain);
	uint64_t before = eng_memtable_bytes(&t->active);
	if ((rc = eng_memtable_add_borrowed(&t->active, canon, len, &ev, hash, t->chain, r->gen)) != 0)
		return rc;
	r->borrowed = true;
	s->memtable_bytes += eng_memtable_bytes(&t->active) - before;
	struct eng_dedup_item *d = &r->dedup[r->dedup_count++];
	d->tenant_key = t->key;
	d->received_ns = ev.received_at_ns;
	memcpy(d->id, ev.event_id, FMT_EVENT_ID_BYTES);
	if (r->dedup_count == REPLAY_DEDUP_BATCH)
		replay_dedup_flush(r);
	t->next_seq++;
	t->durable_seq = ev.seq;
	s->stats.memtable_rows++;
	r->events++;
	return 0;
}

static int replay_visit(void *ctx, uint64_t offset, const struct fmt_rec *rec)
{
	struct replay *r = ctx;
	if (rec->kind != FMT_REC_BATCH) {
		eng_log(r->s->eng, ENG_LOG_ERROR, "%s: unexpected record kind %u at offset %llu",
			r->path, rec->kind, (unsigned long long)offset);
		return FMT_E_CORRUPT;
	}
	uint32_t off = 0, n = 0, len;
	const uint8_t *ev;
	int rc;
	while ((rc = fmt_batch_next(rec, &off, &ev, &len)) == 1) {
		rc = replay_event(r, ev, len);
		r->file_event++;
		if (rc)
			break;
		n++;
	}
	/* Release: the helper may reuse the slots read above only after this. */
	atomic_store_explicit(&r->hasher.replay_at, r->file_event, memory_order_release);
	/* Every replayed row is remembered, also when the record fails. */
	replay_dedup_flush(r);
	if (rc == 0 && n != rec->count)
		rc = FMT_E_CORRUPT;
	if (rc)
		eng_log(r->s->eng, ENG_LOG_ERROR, "%s: bad batch at offset %llu: %s", r->path,
			(unsigned long long)offset, fmt_strerror(rc));
	return rc;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Collects the generations present in the WAL directory, sorted, and
 * the free files to recycle (those past wal_recycle_files are deleted). */
static int list_gens(struct eng_shard *s)
{
	struct eng_wal *w = &s->wal;
	DIR *d = opendir(w->dir);
	if (!d)
		return -errno;
	struct dirent *e;
	int rc = 0;
	w->free_count = 0;
	while ((e = readdir(d)) != NULL) {
		unsigned long long gen;
		char tail[8];
		if (sscanf(e->d_name, "wal-%16llx.%4s", &gen, tail) != 2)
			continue;
		if (strcmp(tail, "free") == 0) {
			char path[4200];
			free_path_in(w->dir, gen, path, sizeof(path));
			if (w->free_count < s->eng->cfg.wal_recycle_files)
				w->free_gens[w->free_count++] = gen;
			else
				unlink(path);
			continue;
		}
		if (strcmp(tail, "log"))
			continue;
		if ((rc = old_gens_push(w, gen)) != 0)
			break;
	}
	s->stats.wal_free_files = w->free_count;
	closedir(d);
	if (s->wal.old_count > 1)
		qsort(s->wal.old_gens, s->wal.old_count, sizeof(uint64_t), cmp_u64);
	return rc;
}

/* Handles the end of one file's scan: cut a torn tail, refuse damage. */
static int replay_stop(struct eng_shard *s, const char *path, const struct fmt_log_scan *sc,
		       bool newest, bool *drop_rest)
{
	if (sc->stop == 0)
		return 0;
	bool torn = sc->stop == FMT_E_TRUNCATED && newest;
	if (!torn && !s->eng->cfg.repair) {
		eng_log(s->eng, ENG_LOG_ERROR,
			"%s: corrupt record at offset %llu (%s); refusing to start. "
			"Inspect it with `hodei-audit inspect %s`; start with --repair to cut the log there",
			path, (unsigned long long)sc->bad_offset, fmt_strerror(sc->stop), path);
		return FMT_E_CORRUPT;
	}
	if (!torn) {
		eng_log(s->eng, ENG_LOG_WARN, "%s: repair: cutting the log at offset %llu, dropping "
			"everything after it", path, (unsigned long long)sc->bad_offset);
		*drop_rest = true;
	} else {
		eng_log(s->eng, ENG_LOG_INFO, "%s: cutting torn tail at offset %llu (never acknowledged)",
			path, (unsigned long long)sc->valid_end);
	}
	if (truncate(path, (off_t)sc->valid_end) != 0)
		return -errno;
	return 0;
}

int eng_wal_replay(struct eng_shard *s)
{
	snprintf(s->wal.dir, sizeof(s->wal.dir), "%s/wal", s->dir);
	if (mkdir(s->wal.dir, 0750) != 0 && errno != EEXIST)
		return -errno;
	int rc = list_gens(s);
	uint32_t last_used = eng_wal_last_used(s->wal.dir, s->wal.old_gens, s->wal.old_count);
	bool drop_rest = false;
	struct replay r = { .s = s };
	free(s->wal.maps);
	s->wal.map_count = 0;
	if (!(s->wal.maps = calloc(FMT_MAX(s->wal.old_count, 1), sizeof(*s->wal.maps))))
		return FMT_E_NOMEM;
	for (uint32_t i = 0; rc == 0 && i < s->wal.old_count; i++) {
		char path[4200];
		wal_path(s, s->wal.old_gens[i], path, sizeof(path));
		if (drop_rest) {
			eng_log(s->eng, ENG_LOG_WARN, "repair: removing %s", path);
			unlink(path);
			continue;
		}
		const uint8_t *buf = NULL;
		size_t len = 0;
		if ((rc = eng_file_map(path, &buf, &len)) != 0)
			break;
		struct fmt_log_scan sc;
		r.path = path;
		r.gen = s->wal.old_gens[i];
		hasher_start(&r, buf, len);
		rc = fmt_log_scan(buf, len, wal_magic, (uint32_t)s->eng->cfg.wal_buffer_bytes,
				  replay_visit, &r, &sc);
		hasher_stop(&r.hasher);
		if (r.borrowed) {
			s->wal.maps[s->wal.map_count++] = (struct eng_wal_map){ r.gen, buf, len };
			r.borrowed = false;
		} else {
			eng_file_unmap(buf, len);
		}
		if (rc == FMT_E_TRUNCATED && i + 1 == s->wal.old_count) {
			/* Created but its header never became durable: empty. */
			eng_log(s->eng, ENG_LOG_INFO, "%s: removing WAL file with a torn header", path);
			rc = unlink(path) ? -errno : 0;
		} else if (rc == 0)
			rc = replay_stop(s, path, &sc, i >= last_used, &drop_rest);
		else
			eng_log(s->eng, ENG_LOG_ERROR, "%s: cannot replay: %s", path, fmt_strerror(rc));
	}
	hasher_free(&r.hasher);
	if (rc)
		return rc;
	if (r.events || r.skipped)
		eng_log(s->eng, ENG_LOG_INFO, "shard %u: replayed %llu events from %u WAL files "
			"(%llu already sealed, %llu hashed ahead by a helper thread)",
			s->id, (unsigned long long)r.events, s->wal.old_count,
			(unsigned long long)r.skipped, (unsigned long long)r.hashed_ahead);
	return eng_wal_open(s);
}
