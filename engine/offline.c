// SPDX-License-Identifier: Apache-2.0
/*
 * offline.c — the read-only verifier of a whole data directory
 * (engine/offline.h), for `hodei-audit verify --data-dir`.
 *
 * It works from the files alone, the way an auditor holding a copy would:
 * no engine, no recovery, and no writes of any kind (every file is opened
 * O_RDONLY, directories are only listed). Recovery's rules (wal.c,
 * manifest.c) decide what is damage and what a crash explains: a torn tail
 * of the newest WAL file or of the manifest was never acknowledged and is
 * only a warning; anything else that fails a check is a problem.
 *
 * Per shard, in this order (each step needs the previous one's state):
 *
 *   manifest.log ──▶ per record: continuity per tenant (seq, chain_before),
 *                    then the segment file (size, XXH3, full verify, footer
 *                    against the record)
 *   segments/    ──▶ files the manifest does not name
 *   wal/         ──▶ per file in generation order, per event: skip what is
 *                    sealed, the rest must continue the tenant's seq; the
 *                    chain is recomputed to report each tenant's head
 *
 * The check does not stop at the first finding: it reports each one with
 * file, tenant, seq and offset, and re-synchronises on the damaged record's
 * own values so one break is reported once, not once per later segment.
 * Memory is one file image at a time plus a table of the shard's tenants
 * and the segment ids its manifest names.
 */
#include "engine/offline.h"

#include "engine/internal.h"
#include "format/hash.h"
#include "format/record.h"
#include "format/segment.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define OFF_PATH_MAX 4352
#define OFF_DATA_DIR_MAX 4000
#define OFF_MANIFEST_PAYLOAD_MAX 4096   /* what manifest.c accepts */
#define OFF_SEG_NO_MASK ((1ull << 40) - 1)
#define OFF_SHARDS_MAX 65536

_Static_assert(ENG_MANIFEST_SEGMENT_BYTES <= OFF_MANIFEST_PAYLOAD_MAX,
	       "a segment record fits the manifest's payload limit");

static const char man_magic[8] = { 'H', 'O', 'D', 'E', 'I', 'M', 'A', 'N' };
static const char wal_magic[8] = { 'H', 'O', 'D', 'E', 'I', 'W', 'A', 'L' };
static const uint8_t genesis[FMT_HASH_BYTES];

/* A segment's bounds as its manifest record gives them. */
struct off_seg {
	uint64_t id, first_seq, last_seq;
	uint8_t chain_before[FMT_HASH_BYTES];
	uint8_t chain_after[FMT_HASH_BYTES];
};

struct off_tenant {
	char name[FMT_TENANT_MAX + 1];
	uint64_t key;
	uint64_t sealed_seq;               /* last seq of its manifest segments */
	uint8_t sealed_chain[FMT_HASH_BYTES];
	uint64_t seq;                      /* last seq seen: segments, then WAL */
	uint8_t chain[FMT_HASH_BYTES];     /* chain value after seq */
	bool chain_known;                  /* false after a gap in the WAL */
	bool resync;                       /* a WAL record was lost: restart here */
	uint32_t segments;
	uint64_t wal_events;
	uint64_t problems;                 /* reported about this tenant */
	struct off_seg *segs;              /* manifest order */
	uint32_t seg_count, seg_cap;
	/* WAL cross-check of sealed events against their segment's chain:
	 * the last seq chained (0: not in step) and the segment it is in. */
	uint64_t x_seq;
	uint32_t x_seg;
	uint8_t x_chain[FMT_HASH_BYTES];
};

struct off_run {
	eng_offline_report_fn report;
	void *ctx;
	struct eng_offline_summary *sum;
	int err;                           /* FMT_E_NOMEM from inside a visitor */
	/* Segments whose local file was removed (FMT_REC_REMOVE): in S3 only. */
	uint64_t *removed;
	uint32_t removed_count, removed_cap;
	/* The shard being checked. */
	uint32_t shard;
	char dir[OFF_PATH_MAX];
	struct off_tenant **slots;         /* open addressing by key */
	uint32_t slot_count, tenant_count;
	uint64_t *ids;                     /* segment ids the manifest names */
	uint32_t id_count, id_cap;
	uint64_t untenanted;               /* problems of the shard tied to no tenant */
	uint64_t max_no;                   /* highest segment number named */
	bool have_no;
	const char *path;                  /* the log file being scanned */
};

const char *eng_offline_severity_name(enum eng_offline_severity s)
{
	switch (s) {
	case ENG_OFFLINE_INFO: return "info";
	case ENG_OFFLINE_WARNING: return "warning";
	case ENG_OFFLINE_PROBLEM: return "problem";
	}
	return "unknown";
}

static struct off_tenant *tenant_find(const struct off_run *r, struct fmt_str name);

static void note(struct off_run *r, enum eng_offline_severity sev, const char *path,
		 const char *tenant, uint64_t seq, uint64_t offset, const char *fmt, ...)
	__attribute__((format(printf, 7, 8)));

static void note(struct off_run *r, enum eng_offline_severity sev, const char *path,
		 const char *tenant, uint64_t seq, uint64_t offset, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (sev == ENG_OFFLINE_PROBLEM) {
		r->sum->problems++;
		struct off_tenant *t = tenant && *tenant ? tenant_find(r, fmt_str_c(tenant)) : NULL;
		if (t)
			t->problems++;
		else
			r->untenanted++;
	} else if (sev == ENG_OFFLINE_WARNING) {
		r->sum->warnings++;
	}
	if (!r->report)
		return;
	struct eng_offline_problem p = { .severity = sev, .path = path, .tenant = tenant ? tenant : "",
					 .seq = seq, .offset = offset, .message = msg };
	r->report(r->ctx, &p);
}

/* Opens path read-only without following a final symlink and checks that
 * it is a regular file; *fd is open and *size set only on 0. */
int eng_file_open_regular(const char *path, int flags, int *fd, size_t *size)
{
	int f = open(path, flags | O_CLOEXEC | O_NOFOLLOW);
	if (f < 0)
		return -errno;
	struct stat st;
	int rc = 0;
	if (fstat(f, &st) != 0)
		rc = -errno;
	else if (!S_ISREG(st.st_mode))
		rc = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
	if (rc) {
		close(f);
		return rc;
	}
	*fd = f;
	*size = (size_t)st.st_size;
	return 0;
}

int eng_file_read_all(const char *path, uint8_t **out, size_t *len)
{
	int fd;
	size_t size;
	int rc = eng_file_open_regular(path, O_RDONLY, &fd, &size);
	if (rc)
		return rc;
	uint8_t *buf = malloc(size ? size : 1);
	if (!buf) {
		rc = FMT_E_NOMEM;
		goto fail;
	}
	size_t got = 0;
	while (got < size) {
		ssize_t n = pread(fd, buf + got, size - got, (off_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : FMT_E_TRUNCATED;
			goto fail;
		}
		got += (size_t)n;
	}
	close(fd);
	*out = buf;
	*len = got;
	return 0;
fail:
	free(buf);
	close(fd);
	return rc;
}

static const uint8_t empty_file[1];

int eng_file_map(const char *path, const uint8_t **out, size_t *len)
{
	int fd;
	size_t size;
	int rc = eng_file_open_regular(path, O_RDONLY, &fd, &size);
	if (rc)
		return rc;
	rc = eng_file_map_fd(fd, size, out, len);
	close(fd);
	return rc;
}

int eng_file_map_fd(int fd, size_t size, const uint8_t **out, size_t *len)
{
	int rc = 0;
	if (size == 0) {
		*out = empty_file;
		*len = 0;
	} else {
		void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
		if (p == MAP_FAILED) {
			rc = -errno;
		} else {
			*out = p;
			*len = size;
		}
	}
	return rc;
}

void eng_file_unmap(const uint8_t *p, size_t len)
{
	if (p && p != empty_file)
		munmap((void *)p, len);
}

int eng_manifest_export_decode(const uint8_t *payload, uint32_t len, struct eng_manifest_export *out)
{
	memset(out, 0, sizeof(*out));
	return eng_manifest_decode_export(payload, len, out->tenant, &out->segment_id, &out->kind,
					  &out->at_ns, out->ref);
}

int eng_manifest_entry_decode(const uint8_t *payload, uint32_t len, struct eng_manifest_entry *out)
{
	struct eng_segment g;
	memset(out, 0, sizeof(*out));
	int rc = eng_manifest_decode_segment(payload, len, out->tenant, &g);
	if (rc)
		return rc;
	out->segment_id = g.segment_id;
	out->first_seq = g.first_seq;
	out->last_seq = g.last_seq;
	out->row_count = g.row_count;
	out->file_size = g.file_size;
	out->file_checksum = g.file_checksum;
	out->min_occurred_ns = g.min_occurred_ns;
	out->max_occurred_ns = g.max_occurred_ns;
	out->min_received_ns = g.min_received_ns;
	out->max_received_ns = g.max_received_ns;
	memcpy(out->chain_before, g.chain_before, FMT_HASH_BYTES);
	memcpy(out->chain_after, g.chain_after, FMT_HASH_BYTES);
	memcpy(out->merkle_root, g.merkle_root, FMT_HASH_BYTES);
	return 0;
}

/* ---- tenants --------------------------------------------------------------- */

static struct off_tenant *tenant_find(const struct off_run *r, struct fmt_str name)
{
	if (!r->slot_count)
		return NULL;
	uint64_t key = fmt_xxh3(name.ptr, name.len);
	for (uint32_t i = (uint32_t)key & (r->slot_count - 1);; i = (i + 1) & (r->slot_count - 1)) {
		struct off_tenant *t = r->slots[i];
		if (!t)
			return NULL;
		if (t->key == key && strlen(t->name) == name.len && !memcmp(t->name, name.ptr, name.len))
			return t;
	}
}

static void slot_put(struct off_tenant **slots, uint32_t count, struct off_tenant *t)
{
	uint32_t i = (uint32_t)t->key & (count - 1);
	while (slots[i])
		i = (i + 1) & (count - 1);
	slots[i] = t;
}

static int tenants_grow(struct off_run *r)
{
	uint32_t count = r->slot_count ? r->slot_count * 2 : 64;
	struct off_tenant **slots = calloc(count, sizeof(*slots));
	if (!slots)
		return FMT_E_NOMEM;
	for (uint32_t i = 0; i < r->slot_count; i++)
		if (r->slots[i])
			slot_put(slots, count, r->slots[i]);
	free(r->slots);
	r->slots = slots;
	r->slot_count = count;
	return 0;
}

/* Finds or adds a tenant (name already validated). NULL: out of memory,
 * with r->err set. */
static struct off_tenant *tenant_get(struct off_run *r, struct fmt_str name)
{
	ASSERT(name.len >= 1 && name.len <= FMT_TENANT_MAX);
	struct off_tenant *t = tenant_find(r, name);
	if (t)
		return t;
	if ((r->tenant_count + 1) * 2 > r->slot_count && tenants_grow(r) != 0)
		goto nomem;
	if (!(t = calloc(1, sizeof(*t))))
		goto nomem;
	memcpy(t->name, name.ptr, name.len);
	t->key = fmt_xxh3(name.ptr, name.len);
	t->chain_known = true;
	slot_put(r->slots, r->slot_count, t);
	r->tenant_count++;
	return t;
nomem:
	r->err = FMT_E_NOMEM;
	return NULL;
}

static int cmp_tenant(const void *a, const void *b)
{
	const struct off_tenant *x = *(const struct off_tenant *const *)a;
	const struct off_tenant *y = *(const struct off_tenant *const *)b;
	return strcmp(x->name, y->name);
}

/* Reports each tenant's head, by name, then forgets the shard's state. */
static void shard_finish(struct off_run *r)
{
	struct off_tenant **list = malloc((r->tenant_count ? r->tenant_count : 1) * sizeof(*list));
	uint32_t n = 0;
	for (uint32_t i = 0; list && i < r->slot_count; i++)
		if (r->slots[i])
			list[n++] = r->slots[i];
	if (list) {
		ASSERT(n == r->tenant_count);
		qsort(list, n, sizeof(*list), cmp_tenant);
	} else {
		r->err = FMT_E_NOMEM;
	}
	for (uint32_t i = 0; list && i < n; i++) {
		const struct off_tenant *t = list[i];
		struct eng_offline_problem p = { .severity = ENG_OFFLINE_INFO, .path = r->dir,
						 .tenant = t->name, .seq = 0,
						 .last_seq = t->seq, .sealed_seq = t->sealed_seq,
						 .tenant_problems = t->problems,
						 .chain_known = t->chain_known };
		char msg[256];
		snprintf(msg, sizeof(msg),
			 "%s: %llu events (%u segments through seq %llu, %llu unsealed in the WAL)%s",
			 t->problems     ? "NOT INTACT"
			 : r->untenanted ? "not proven intact (the shard has damage tied to no tenant)"
					 : "intact",
			 (unsigned long long)t->seq, t->segments,
			 (unsigned long long)t->sealed_seq, (unsigned long long)t->wal_events,
			 t->chain_known ? "" : "; chain head unknown");
		p.message = msg;
		if (t->chain_known)
			memcpy(p.chain, t->chain, FMT_HASH_BYTES);
		if (r->report)
			r->report(r->ctx, &p);
	}
	free(list);
	r->sum->tenants += r->tenant_count;
	for (uint32_t i = 0; i < r->slot_count; i++) {
		if (r->slots[i])
			free(r->slots[i]->segs);
		free(r->slots[i]);
	}
	free(r->slots);
	free(r->ids);
	free(r->removed);
	r->removed = NULL;
	r->removed_count = r->removed_cap = 0;
	r->slots = NULL;
	r->ids = NULL;
	r->slot_count = r->tenant_count = r->id_count = r->id_cap = 0;
	r->max_no = 0;
	r->have_no = false;
	r->untenanted = 0;
}

/* ---- segments -------------------------------------------------------------- */

/* Which footer field disagrees with the manifest record, or NULL. */
static const char *meta_mismatch(const struct fmt_segment_meta *m, const char *tenant,
				 uint32_t shard, const struct eng_segment *g)
{
	if (strcmp(m->tenant, tenant) != 0)
		return "tenant";
	if (m->segment_id != g->segment_id)
		return "segment id";
	if (m->shard != shard)
		return "shard";
	if (m->first_seq != g->first_seq || m->last_seq != g->last_seq || m->row_count != g->row_count)
		return "seq range";
	if (memcmp(m->chain_before, g->chain_before, FMT_HASH_BYTES))
		return "chain_before";
	if (memcmp(m->chain_after, g->chain_after, FMT_HASH_BYTES))
		return "chain_after";
	if (memcmp(m->merkle_root, g->merkle_root, FMT_HASH_BYTES))
		return "merkle root";
	if (m->min_occurred_ns != g->min_occurred_ns || m->max_occurred_ns != g->max_occurred_ns ||
	    m->min_received_ns != g->min_received_ns || m->max_received_ns != g->max_received_ns)
		return "time range";
	return NULL;
}

/* After a corrupt-data failure without a seq: finds the first block that
 * does not decode, or whose event-id index does not match its rows (a
 * lookup by id could miss one of its events), for a precise location.
 * Returns its index or -1; *why says which. */
static int64_t first_bad_block(const uint8_t *buf, size_t len, uint64_t *first, uint64_t *last,
			       const char **why)
{
	struct fmt_segment *f = NULL;
	int64_t bad = -1;
	if (fmt_segment_open_buf(buf, len, &f) != 0)
		return -1;
	for (uint32_t b = 0; b < f->meta.block_count && bad < 0; b++) {
		struct fmt_block *blk = NULL;
		int rc = fmt_block_decode_buf(f, buf, len, b, FMT_COLS_ALL, &blk);
		*why = "fails its checks";
		if (rc == 0 && (rc = fmt_block_check_id_index(f, b, blk)) == FMT_E_CORRUPT)
			*why = "has an event-id index that does not match its rows";
		if (rc == FMT_E_CORRUPT) {
			bad = b;
			*first = f->blocks[b].first_seq;
			*last = f->blocks[b].last_seq;
		}
		fmt_block_free(blk);
	}
	fmt_segment_close(f);
	return bad;
}

/* Full check of a segment image against itself and its manifest record. */
static void segment_contents(struct off_run *r, const char *tenant, const struct eng_segment *g,
			     const char *path, const uint8_t *buf, size_t len)
{
	unsigned long long id = (unsigned long long)g->segment_id;
	uint64_t bad = 0, first = 0, last = 0;
	const char *why = "";
	int rc = fmt_segment_verify_buf(buf, len, &bad);
	if (rc == FMT_E_NOMEM) {
		r->err = rc;
		return;
	}
	int64_t b = rc == FMT_E_CORRUPT && !bad ? first_bad_block(buf, len, &first, &last, &why) : -1;
	if (b >= 0)
		note(r, ENG_OFFLINE_PROBLEM, path, tenant, first, 0,
		     "segment %016llx: block %lld (seq %llu..%llu) %s: %s", id, (long long)b,
		     (unsigned long long)first, (unsigned long long)last, why, fmt_strerror(rc));
	else if (rc)
		note(r, ENG_OFFLINE_PROBLEM, path, tenant, bad ? bad : g->first_seq, 0,
		     "segment %016llx fails its checks%s: %s", id,
		     rc == FMT_E_CHAIN && bad ? " at this seq" : "", fmt_strerror(rc));
	struct fmt_segment *f = NULL;
	if (fmt_segment_open_buf(buf, len, &f) != 0) {
		if (rc == 0) /* verify opened it: only memory can fail now */
			r->err = FMT_E_NOMEM;
		return;
	}
	const char *what = meta_mismatch(&f->meta, tenant, r->shard, g);
	if (what)
		note(r, ENG_OFFLINE_PROBLEM, path, tenant, g->first_seq, 0,
		     "segment %016llx: the footer's %s differs from the manifest record", id, what);
	fmt_segment_close(f);
}

static void segment_file(struct off_run *r, const char *tenant, const struct eng_segment *g)
{
	char path[OFF_PATH_MAX];
	unsigned long long id = (unsigned long long)g->segment_id;
	snprintf(path, sizeof(path), "%s/segments/%016llx.hseg", r->dir, id);
	uint8_t *buf = NULL;
	size_t len = 0;
	int rc = eng_file_read_all(path, &buf, &len);
	if (rc == FMT_E_NOMEM) {
		r->err = rc;
		return;
	}
	if (rc == -ENOENT) {
		note(r, ENG_OFFLINE_PROBLEM, path, tenant, g->first_seq, 0,
		     "segment %016llx named by the manifest is missing (seq %llu..%llu)", id,
		     (unsigned long long)g->first_seq, (unsigned long long)g->last_seq);
		return;
	}
	if (rc) {
		note(r, ENG_OFFLINE_PROBLEM, path, tenant, g->first_seq, 0,
		     "segment %016llx cannot be read (seq %llu..%llu): %s", id,
		     (unsigned long long)g->first_seq, (unsigned long long)g->last_seq,
		     fmt_strerror(rc));
		return;
	}
	if (len != g->file_size)
		note(r, ENG_OFFLINE_PROBLEM, path, tenant, g->first_seq, 0,
		     "segment %016llx has %zu bytes, the manifest says %llu", id, len,
		     (unsigned long long)g->file_size);
	else if (fmt_xxh3(buf, len) != g->file_checksum)
		note(r, ENG_OFFLINE_PROBLEM, path, tenant, g->first_seq, 0,
		     "segment %016llx: file checksum differs from the manifest (modified or replaced)", id);
	segment_contents(r, tenant, g, path, buf, len);
	free(buf);
}

/* A segment record must continue its tenant's previous one. */
static void segment_continuity(struct off_run *r, struct off_tenant *t, const struct eng_segment *g,
			       uint64_t offset)
{
	unsigned long long id = (unsigned long long)g->segment_id;
	if (g->first_seq != t->sealed_seq + 1)
		note(r, ENG_OFFLINE_PROBLEM, r->path, t->name, g->first_seq, offset,
		     "segment %016llx starts at seq %llu, expected %llu (events missing or repeated)", id,
		     (unsigned long long)g->first_seq, (unsigned long long)t->sealed_seq + 1);
	else if (memcmp(g->chain_before, t->sealed_chain, FMT_HASH_BYTES))
		note(r, ENG_OFFLINE_PROBLEM, r->path, t->name, g->first_seq, offset,
		     "segment %016llx does not continue the hash chain (chain_before differs from %s)", id,
		     t->sealed_seq ? "the previous segment's chain_after" : "the genesis value");
	if ((g->segment_id >> 40) != r->shard)
		note(r, ENG_OFFLINE_PROBLEM, r->path, t->name, g->first_seq, offset,
		     "segment id %016llx belongs to another shard", id);
	/* Re-synchronise on the record, so one break is reported once. */
	t->sealed_seq = t->seq = g->last_seq;
	memcpy(t->sealed_chain, g->chain_after, FMT_HASH_BYTES);
	memcpy(t->chain, g->chain_after, FMT_HASH_BYTES);
}

static int segs_push(struct off_tenant *t, const struct eng_segment *g)
{
	if (t->seg_count == t->seg_cap) {
		uint32_t cap = t->seg_cap ? t->seg_cap * 2 : 16;
		struct off_seg *segs = realloc(t->segs, cap * sizeof(*segs));
		if (!segs)
			return FMT_E_NOMEM;
		t->segs = segs;
		t->seg_cap = cap;
	}
	struct off_seg *o = &t->segs[t->seg_count++];
	o->id = g->segment_id;
	o->first_seq = g->first_seq;
	o->last_seq = g->last_seq;
	memcpy(o->chain_before, g->chain_before, FMT_HASH_BYTES);
	memcpy(o->chain_after, g->chain_after, FMT_HASH_BYTES);
	return 0;
}

static int ids_push(struct off_run *r, uint64_t id)
{
	if (r->id_count == r->id_cap) {
		uint32_t cap = r->id_cap ? r->id_cap * 2 : 64;
		uint64_t *ids = realloc(r->ids, cap * sizeof(*ids));
		if (!ids)
			return FMT_E_NOMEM;
		r->ids = ids;
		r->id_cap = cap;
	}
	r->ids[r->id_count++] = id;
	if ((id >> 40) == r->shard && (!r->have_no || (id & OFF_SEG_NO_MASK) > r->max_no)) {
		r->max_no = id & OFF_SEG_NO_MASK;
		r->have_no = true;
	}
	return 0;
}

/* First pass over a manifest: the segments whose local file was removed. */
static int removed_visit(void *ctx, uint64_t offset, const struct fmt_rec *rec)
{
	struct off_run *r = ctx;
	char name[FMT_TENANT_MAX + 1];
	uint64_t id;
	(void)offset;
	if (rec->kind != FMT_REC_REMOVE ||
	    eng_manifest_decode_remove(rec->payload, rec->payload_len, name, &id) != 0)
		return 0;
	if (r->removed_count == r->removed_cap) {
		uint32_t cap = r->removed_cap ? 2 * r->removed_cap : 64;
		uint64_t *p = realloc(r->removed, cap * sizeof(*p));
		if (!p)
			return r->err = FMT_E_NOMEM;
		r->removed = p;
		r->removed_cap = cap;
	}
	r->removed[r->removed_count++] = id;
	return 0;
}

static bool is_removed(const struct off_run *r, uint64_t id)
{
	for (uint32_t i = 0; i < r->removed_count; i++)
		if (r->removed[i] == id)
			return true;
	return false;
}

static int manifest_visit(void *ctx, uint64_t offset, const struct fmt_rec *rec)
{
	struct off_run *r = ctx;
	char name[FMT_TENANT_MAX + 1];
	struct eng_segment g;
	if (rec->kind == FMT_REC_REMOVE) {
		uint64_t id;
		if (eng_manifest_decode_remove(rec->payload, rec->payload_len, name, &id) != 0)
			note(r, ENG_OFFLINE_PROBLEM, r->path, "", 0, offset, "malformed remove record");
		return 0;
	}
	if (rec->kind == FMT_REC_EXPORT) {
		/* An export mark (replicated / mirrored): it must name a segment
		 * an earlier record of the same manifest added. */
		char ref[ENG_EXPORT_REF_MAX + 1];
		uint64_t id;
		uint8_t kind;
		int64_t at;
		if (eng_manifest_decode_export(rec->payload, rec->payload_len, name, &id, &kind, &at,
					       ref) != 0) {
			note(r, ENG_OFFLINE_PROBLEM, r->path, "", 0, offset, "malformed export record");
			return 0;
		}
		struct off_tenant *t = tenant_get(r, (struct fmt_str){ name, (uint32_t)strlen(name) });
		if (!t)
			return r->err = FMT_E_NOMEM;
		bool known = false;
		for (uint32_t i = 0; i < t->seg_count && !known; i++)
			known = t->segs[i].id == id;
		if (!known)
			note(r, ENG_OFFLINE_PROBLEM, r->path, t->name, 0, offset,
			     "export record for segment %016llx, which no earlier record adds",
			     (unsigned long long)id);
		return r->err;
	}
	if (rec->kind != FMT_REC_SEGMENT) {
		note(r, ENG_OFFLINE_PROBLEM, r->path, "", 0, offset,
		     "manifest record of unsupported kind %u", rec->kind);
		return 0;
	}
	if (eng_manifest_decode_segment(rec->payload, rec->payload_len, name, &g) != 0) {
		note(r, ENG_OFFLINE_PROBLEM, r->path, "", 0, offset, "malformed segment record");
		return 0;
	}
	struct off_tenant *t = tenant_get(r, (struct fmt_str){ name, (uint32_t)strlen(name) });
	if (!t || ids_push(r, g.segment_id) != 0 || segs_push(t, &g) != 0)
		return r->err = FMT_E_NOMEM;
	segment_continuity(r, t, &g, offset);
	if (!is_removed(r, g.segment_id))
		segment_file(r, t->name, &g); /* a removed one lives in S3 only */
	t->segments++;
	r->sum->segments++;
	r->sum->events += g.row_count;
	return r->err;
}

/* ---- log files ------------------------------------------------------------- */

/* Reports how a log scan ended. Returns true when records were lost in the
 * middle (a problem), false for a clean end or a torn tail. */
static bool scan_end(struct off_run *r, const char *path, const struct fmt_log_scan *sc,
		     bool torn_tail_ok, const char *hint)
{
	unsigned long long at = (unsigned long long)sc->bad_offset;
	switch (sc->stop) {
	case 0:
		return false;
	case FMT_E_TRUNCATED:
		if (torn_tail_ok) {
			note(r, ENG_OFFLINE_WARNING, path, "", 0, sc->valid_end,
			     "torn tail at offset %llu: a write cut by a crash, never acknowledged "
			     "(recovery cuts it)", (unsigned long long)sc->valid_end);
			return false;
		}
		note(r, ENG_OFFLINE_PROBLEM, path, "", 0, sc->bad_offset,
		     "torn record at offset %llu in a WAL file that is not the newest%s "
		     "(acknowledged events may be lost)", at, hint);
		return true;
	case FMT_E_TOO_BIG:
		note(r, ENG_OFFLINE_PROBLEM, path, "", 0, sc->bad_offset,
		     "record at offset %llu claims a length over the limit%s", at, hint);
		return true;
	default:
		note(r, ENG_OFFLINE_PROBLEM, path, "", 0, sc->bad_offset,
		     "corrupt record at offset %llu%s, with valid records after it: %s", at, hint,
		     fmt_strerror(sc->stop));
		return true;
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void check_manifest(struct off_run *r)
{
	char path[OFF_PATH_MAX];
	snprintf(path, sizeof(path), "%s/manifest.log", r->dir);
	uint8_t *buf = NULL;
	size_t len = 0;
	int rc = eng_file_read_all(path, &buf, &len);
	if (rc) {
		if (rc == FMT_E_NOMEM)
			r->err = rc;
		else
			note(r, ENG_OFFLINE_PROBLEM, path, "", 0, 0, "cannot read the manifest: %s",
			     fmt_strerror(rc));
		return;
	}
	struct fmt_log_scan sc;
	r->path = path;
	rc = fmt_log_scan(buf, len, man_magic, OFF_MANIFEST_PAYLOAD_MAX, removed_visit, r, &sc);
	if (rc == 0 && !r->err)
		rc = fmt_log_scan(buf, len, man_magic, OFF_MANIFEST_PAYLOAD_MAX, manifest_visit, r, &sc);
	free(buf);
	r->path = NULL;
	if (rc == FMT_E_NOMEM || r->err)
		return;
	if (rc) {
		note(r, ENG_OFFLINE_PROBLEM, path, "", 0, 0, "bad manifest header: %s", fmt_strerror(rc));
		return;
	}
	if (sc.header.shard != r->shard)
		note(r, ENG_OFFLINE_PROBLEM, path, "", 0, 0, "manifest header names shard %u",
		     sc.header.shard);
	scan_end(r, path, &sc, true, "");
	if (r->id_count)
		qsort(r->ids, r->id_count, sizeof(uint64_t), cmp_u64);
	for (uint32_t i = 1; i < r->id_count; i++)
		if (r->ids[i] == r->ids[i - 1])
			note(r, ENG_OFFLINE_PROBLEM, path, "", 0, 0,
			     "segment %016llx is named by more than one record",
			     (unsigned long long)r->ids[i]);
}

/* A segment file no record names: a problem, unless it is exactly what a
 * crash between a seal's rename and its manifest record leaves (a higher
 * number than any named, continuing its tenant): recovery deletes that one
 * and its events are still in the WAL. */
static void unreferenced(struct off_run *r, const char *path, uint64_t id)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	struct fmt_segment *f = NULL;
	const char *tenant = "";
	uint64_t seq = 0;
	bool crash_left = false;
	if (eng_file_read_all(path, &buf, &len) == 0 && fmt_segment_open_buf(buf, len, &f) == 0) {
		tenant = f->meta.tenant;
		seq = f->meta.first_seq;
		const struct off_tenant *t = tenant_find(r, fmt_str_c(tenant));
		uint64_t sealed = t ? t->sealed_seq : 0;
		const uint8_t *chain = t ? t->sealed_chain : genesis;
		crash_left = (id >> 40) == r->shard && f->meta.segment_id == id &&
			     (!r->have_no || (id & OFF_SEG_NO_MASK) > r->max_no) &&
			     f->meta.first_seq == sealed + 1 &&
			     !memcmp(f->meta.chain_before, chain, FMT_HASH_BYTES) &&
			     fmt_segment_verify_buf(buf, len, NULL) == 0;
	}
	if (crash_left)
		note(r, ENG_OFFLINE_WARNING, path, tenant, seq, 0,
		     "segment %016llx is not in the manifest yet: a seal cut by a crash "
		     "(recovery removes it; its events are in the WAL)", (unsigned long long)id);
	else
		note(r, ENG_OFFLINE_PROBLEM, path, tenant, seq, 0,
		     "unreferenced segment %016llx: not named by the manifest (inserted or left over)",
		     (unsigned long long)id);
	fmt_segment_close(f);
	free(buf);
}

static bool hex_name(const char *name, const char *suffix, size_t prefix_len, uint64_t *out)
{
	size_t n = strlen(name), sl = strlen(suffix);
	if (n != prefix_len + 16 + sl || strcmp(name + prefix_len + 16, suffix) != 0)
		return false;
	uint64_t v = 0;
	for (size_t i = prefix_len; i < prefix_len + 16; i++) {
		char c = name[i];
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
		if (d < 0)
			return false;
		v = (v << 4) | (uint64_t)d;
	}
	*out = v;
	return true;
}

static void check_unreferenced(struct off_run *r)
{
	char dir[OFF_PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/segments", r->dir);
	DIR *d = opendir(dir);
	if (!d) {
		if (errno != ENOENT || r->id_count)
			note(r, ENG_OFFLINE_PROBLEM, dir, "", 0, 0, "cannot list segments: %s",
			     strerror(errno));
		return;
	}
	struct dirent *e;
	while ((e = readdir(d)) != NULL && !r->err) {
		size_t n = strlen(e->d_name);
		uint64_t id;
		if (e->d_name[0] == '.' || (n > 4 && strcmp(e->d_name + n - 4, ".tmp") == 0))
			continue;
		char path[OFF_PATH_MAX];
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (!hex_name(e->d_name, ".hseg", 0, &id))
			note(r, ENG_OFFLINE_PROBLEM, path, "", 0, 0,
			     "unexpected file in the segments directory");
		else if (!r->id_count || !bsearch(&id, r->ids, r->id_count, sizeof(uint64_t), cmp_u64))
			unreferenced(r, path, id);
	}
	closedir(d);
}

/* ---- WAL ------------------------------------------------------------------- */

/* The tenant's segment that starts at seq, or -1 (binary search: manifest
 * order is seq order when the manifest is sound). */
static int64_t seg_starting_at(const struct off_tenant *t, uint64_t seq)
{
	uint32_t lo = 0, hi = t->seg_count;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (t->segs[mid].first_seq == seq)
			return mid;
		if (t->segs[mid].first_seq < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

/* A sealed event still in the WAL: chains the WAL's copies of a segment's
 * events from its chain_before and compares the result with its
 * chain_after, so a segment forged together with its manifest record is
 * caught while the WAL still holds what was acknowledged. */
static void wal_cross_check(struct off_run *r, struct off_tenant *t, uint64_t offset, uint64_t seq,
			    const uint8_t *canon, uint32_t len)
{
	if (!t->x_seq || seq != t->x_seq + 1) {
		int64_t i = seg_starting_at(t, seq);
		t->x_seq = 0;
		if (i < 0)
			return; /* mid-segment: its start was reclaimed; wait for the next */
		t->x_seg = (uint32_t)i;
		memcpy(t->x_chain, t->segs[i].chain_before, FMT_HASH_BYTES);
	}
	const struct off_seg *g = &t->segs[t->x_seg];
	ASSERT(seq >= g->first_seq && seq <= g->last_seq);
	uint8_t hash[FMT_HASH_BYTES];
	fmt_sha256(canon, len, hash);
	fmt_chain_next(t->x_chain, hash, t->x_chain);
	t->x_seq = seq;
	if (seq < g->last_seq)
		return;
	if (memcmp(t->x_chain, g->chain_after, FMT_HASH_BYTES) != 0)
		note(r, ENG_OFFLINE_PROBLEM, r->path, t->name, g->first_seq, offset,
		     "the WAL's copy of seq %llu..%llu does not hash to segment %016llx's chain_after: "
		     "the sealed events differ from the acknowledged ones",
		     (unsigned long long)g->first_seq, (unsigned long long)g->last_seq,
		     (unsigned long long)g->id);
	/* Go on into the next segment from its recorded chain_before. */
	bool next = t->x_seg + 1 < t->seg_count && t->segs[t->x_seg + 1].first_seq == seq + 1;
	t->x_seq = next ? seq : 0;
	if (next)
		memcpy(t->x_chain, t->segs[++t->x_seg].chain_before, FMT_HASH_BYTES);
}

/* One event of a batch. Returns 0, 1 (a problem reported: skip the rest of
 * the batch) or FMT_E_NOMEM. */
static int wal_event(struct off_run *r, uint64_t offset, const struct fmt_rec *rec, uint32_t index,
		     const uint8_t *canon, uint32_t len, struct off_tenant **tp)
{
	struct fmt_attr attrs[FMT_ATTRS_HARD_MAX];
	struct fmt_event ev;
	if (fmt_event_canon_decode(canon, len, &ev, attrs, FMT_ATTRS_HARD_MAX) != 0 ||
	    !fmt_tenant_valid(ev.tenant)) {
		note(r, ENG_OFFLINE_PROBLEM, r->path, "", 0, offset,
		     "event %u of the batch at offset %llu does not decode", index,
		     (unsigned long long)offset);
		return 1;
	}
	struct off_tenant *t = *tp;
	if (!t) {
		if (!(t = *tp = tenant_get(r, ev.tenant)))
			return r->err;
		if (ev.seq != rec->seq)
			note(r, ENG_OFFLINE_PROBLEM, r->path, t->name, ev.seq, offset,
			     "batch header says seq %llu, its first event has %llu",
			     (unsigned long long)rec->seq, (unsigned long long)ev.seq);
	} else if (!fmt_str_eq(ev.tenant, fmt_str_c(t->name))) {
		note(r, ENG_OFFLINE_PROBLEM, r->path, t->name, ev.seq, offset,
		     "batch at offset %llu mixes tenants", (unsigned long long)offset);
		return 1;
	}
	if (ev.seq <= t->sealed_seq) {
		wal_cross_check(r, t, offset, ev.seq, canon, len);
		return 0;
	}
	if (t->resync) {
		t->resync = false;
		t->chain_known = false;
		t->seq = ev.seq - 1;
	}
	if (ev.seq != t->seq + 1) {
		note(r, ENG_OFFLINE_PROBLEM, r->path, t->name, ev.seq, offset,
		     "tenant %s jumps from seq %llu to %llu", t->name, (unsigned long long)t->seq,
		     (unsigned long long)ev.seq);
		t->chain_known = false;
	}
	uint8_t hash[FMT_HASH_BYTES];
	fmt_sha256(canon, len, hash);
	fmt_chain_next(t->chain, hash, t->chain);
	t->seq = ev.seq;
	t->wal_events++;
	r->sum->events++;
	return 0;
}

static int wal_visit(void *ctx, uint64_t offset, const struct fmt_rec *rec)
{
	struct off_run *r = ctx;
	if (rec->kind != FMT_REC_BATCH) {
		note(r, ENG_OFFLINE_PROBLEM, r->path, "", 0, offset, "WAL record of unexpected kind %u",
		     rec->kind);
		return 0;
	}
	struct off_tenant *t = NULL;
	uint32_t off = 0, n = 0, len;
	const uint8_t *ev;
	int rc;
	while ((rc = fmt_batch_next(rec, &off, &ev, &len)) == 1) {
		if ((rc = wal_event(r, offset, rec, n, ev, len, &t)) != 0)
			break;
		n++;
	}
	if (rc == FMT_E_NOMEM)
		return rc;
	if (rc < 0)
		note(r, ENG_OFFLINE_PROBLEM, r->path, t ? t->name : "", 0, offset,
		     "malformed batch at offset %llu", (unsigned long long)offset);
	else if (rc == 0 && n != rec->count)
		note(r, ENG_OFFLINE_PROBLEM, r->path, t ? t->name : "", rec->seq, offset,
		     "batch at offset %llu says %u events and holds %u", (unsigned long long)offset,
		     rec->count, n);
	return 0;
}

/* newest: a torn tail is expected (the last file with records); last:
 * a torn header is (the very last file). */
static void wal_file(struct off_run *r, const char *path, uint64_t gen, bool newest, bool last)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	int rc = eng_file_read_all(path, &buf, &len);
	if (rc) {
		if (rc == FMT_E_NOMEM)
			r->err = rc;
		else
			note(r, ENG_OFFLINE_PROBLEM, path, "", 0, 0, "cannot read: %s", fmt_strerror(rc));
		return;
	}
	r->sum->wal_files++;
	struct fmt_log_scan sc;
	r->path = path;
	uint32_t payload_max = (uint32_t)FMT_MIN(len, (size_t)UINT32_MAX);
	rc = fmt_log_scan(buf, len, wal_magic, payload_max, wal_visit, r, &sc);
	/* What the bad record's header claims (its checksum covers header and
	 * payload together, so this is a hint, not a fact). */
	char hint[96] = "";
	if (rc == 0 && sc.stop && sc.bad_offset + FMT_REC_HEADER_BYTES <= len &&
	    fmt_get_u16(buf + sc.bad_offset + 4) == FMT_REC_BATCH)
		snprintf(hint, sizeof(hint), " (its header claims %u events from seq %llu)",
			 fmt_get_u16(buf + sc.bad_offset + 6),
			 (unsigned long long)fmt_get_u64(buf + sc.bad_offset + 8));
	free(buf);
	r->path = NULL;
	if (rc == FMT_E_NOMEM || r->err) {
		r->err = FMT_E_NOMEM;
		return;
	}
	bool lost;
	if (rc == FMT_E_TRUNCATED && last) {
		note(r, ENG_OFFLINE_WARNING, path, "", 0, 0,
		     "WAL file with a torn header: created just before a crash, holds nothing");
		return;
	} else if (rc) {
		note(r, ENG_OFFLINE_PROBLEM, path, "", 0, 0, "bad WAL file header: %s", fmt_strerror(rc));
		lost = true;
	} else {
		if (sc.header.shard != r->shard || sc.header.generation != gen)
			note(r, ENG_OFFLINE_PROBLEM, path, "", 0, 0,
			     "WAL header says shard %u generation %llu", sc.header.shard,
			     (unsigned long long)sc.header.generation);
		lost = scan_end(r, path, &sc, newest, hint);
	}
	/* Records were lost: each tenant's next event restarts its check
	 * rather than reporting the same loss again as a seq jump. */
	for (uint32_t i = 0; lost && i < r->slot_count; i++)
		if (r->slots[i])
			r->slots[i]->resync = true;
}

static void check_wal(struct off_run *r)
{
	char dir[OFF_PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/wal", r->dir);
	DIR *d = opendir(dir);
	if (!d) {
		if (errno != ENOENT)
			note(r, ENG_OFFLINE_PROBLEM, dir, "", 0, 0, "cannot list the WAL: %s",
			     strerror(errno));
		return;
	}
	uint64_t *gens = NULL;
	uint32_t count = 0, cap = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		uint64_t gen;
		if (strncmp(e->d_name, "wal-", 4) != 0 || !hex_name(e->d_name, ".log", 4, &gen))
			continue;
		if (count == cap) {
			cap = cap ? cap * 2 : 16;
			uint64_t *g = realloc(gens, cap * sizeof(*g));
			if (!g) {
				r->err = FMT_E_NOMEM;
				goto out;
			}
			gens = g;
		}
		gens[count++] = gen;
	}
	if (count)
		qsort(gens, count, sizeof(*gens), cmp_u64);
	/* The newest file a torn tail is expected in is the last one holding
	 * records: a spare created ahead may follow it (wal.c). */
	uint32_t last_used = eng_wal_last_used(dir, gens, count);
	for (uint32_t i = 0; i < count && !r->err; i++) {
		char path[OFF_PATH_MAX];
		snprintf(path, sizeof(path), "%s/wal-%016llx.log", dir, (unsigned long long)gens[i]);
		wal_file(r, path, gens[i], i >= last_used, i + 1 == count);
	}
out:
	free(gens);
	closedir(d);
}

/* ---- the directory ------------------------------------------------------- */

/* Lists the shard-NNN directories of data_dir, sorted. */
static int list_shards(const char *data_dir, uint32_t **out, uint32_t *count)
{
	DIR *d = opendir(data_dir);
	if (!d)
		return -errno;
	uint32_t *ids = NULL, n = 0, cap = 0;
	int rc = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL && n < OFF_SHARDS_MAX) {
		const char *p = e->d_name;
		char canon[32];
		if (strncmp(p, "shard-", 6) != 0 || strlen(p) < 9 || strlen(p) > 15 ||
		    strspn(p + 6, "0123456789") != strlen(p + 6))
			continue;
		unsigned long no = strtoul(p + 6, NULL, 10);
		snprintf(canon, sizeof(canon), "shard-%03lu", no);
		if (no > UINT32_MAX || strcmp(canon, p) != 0)
			continue; /* not a name the engine makes (eg. shard-0001) */
		struct stat st;
		if (fstatat(dirfd(d), p, &st, 0) != 0 || !S_ISDIR(st.st_mode))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			uint32_t *g = realloc(ids, cap * sizeof(*g));
			if (!g) {
				rc = FMT_E_NOMEM;
				goto fail;
			}
			ids = g;
		}
		ids[n++] = (uint32_t)no;
	}
	closedir(d);
	for (uint32_t i = 1; i < n; i++)   /* insertion sort: few shards */
		for (uint32_t j = i; j > 0 && ids[j - 1] > ids[j]; j--) {
			uint32_t x = ids[j];
			ids[j] = ids[j - 1];
			ids[j - 1] = x;
		}
	*out = ids;
	*count = n;
	return n ? 0 : FMT_E_NOT_FOUND;
fail:
	closedir(d);
	free(ids);
	return rc;
}

int eng_verify_dir(const char *data_dir, eng_offline_report_fn report, void *ctx,
		   struct eng_offline_summary *out)
{
	memset(out, 0, sizeof(*out));
	if (strlen(data_dir) > OFF_DATA_DIR_MAX)
		return -ENAMETOOLONG;
	uint32_t *shards = NULL, count = 0;
	int rc = list_shards(data_dir, &shards, &count);
	if (rc) {
		free(shards);
		return rc;
	}
	struct off_run r = { .report = report, .ctx = ctx, .sum = out };
	for (uint32_t i = 0; i < count && !r.err; i++) {
		r.shard = shards[i];
		snprintf(r.dir, sizeof(r.dir), "%s/shard-%03u", data_dir, shards[i]);
		out->shards++;
		check_manifest(&r);
		if (!r.err)
			check_unreferenced(&r);
		if (!r.err)
			check_wal(&r);
		shard_finish(&r);
	}
	free(shards);
	out->ok = out->problems == 0 && !r.err;
	return r.err;
}
