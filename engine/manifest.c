// SPDX-License-Identifier: Apache-2.0
/*
 * manifest.c — the shard's durable list of sealed segments.
 *
 * <shard>/manifest.log is a log file (format/record.h framing, magic
 * "HODEIMAN") of FMT_REC_SEGMENT records, one per sealed segment, appended
 * by seal.c after the segment file is durable under its final name. A
 * segment exists for the engine once its record is durable (I5).
 *
 * Segment record payload (docs/FORMAT.md §6), little-endian:
 *   u8 tenant_len, tenant[64] (zero padded)
 *   u64 segment_id, first_seq, last_seq, file_size, file_checksum,
 *   i64 min_occurred, max_occurred, min_received, max_received,
 *   u64 reserved (0), u64 reserved (0)
 *   u32 row_count
 *   chain_before[32], chain_after[32], merkle_root[32]
 *
 * Export record payload (FMT_REC_EXPORT, docs/FORMAT.md §6):
 *   u8 tenant_len, tenant[64], u64 segment_id, u8 kind (1 replicated,
 *   2 mirrored), i64 at_ns, u16 ref_len, ref[255] (zero padded; the S3
 *   version id for kind 1)
 * It follows the segment's own record; a later one of the same kind for
 * the same segment replaces the earlier (a re-upload's new version id).
 *
 * Writing. Every append goes through one writer per shard
 * (eng_manifest_append): records are written one request at a time at the
 * end of the file, each write followed by an fsync, so the file never has
 * a hole and a record is durable before its caller hears of it.
 *
 * Loading checks that each tenant's segments continue each other (first
 * seq right after the previous last, chain_before equal to the previous
 * chain_after) and that every named file is there with its recorded size;
 * then it deletes what a crash may have left: temporary files and segment
 * files no record names (their events are still in the WAL).
 */
#include "engine/internal.h"
#include "engine/offline.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static const char man_magic[8] = { 'H', 'O', 'D', 'E', 'I', 'M', 'A', 'N' };

int eng_manifest_encode_segment(const struct eng_tenant *t, const struct eng_segment *g,
				uint8_t out[ENG_MANIFEST_SEGMENT_BYTES])
{
	memset(out, 0, ENG_MANIFEST_SEGMENT_BYTES);
	out[0] = t->name_len;
	memcpy(out + 1, t->name, t->name_len);
	uint8_t *p = out + 1 + FMT_TENANT_MAX;
	const uint64_t v[11] = { g->segment_id, g->first_seq, g->last_seq, g->file_size,
				 g->file_checksum, (uint64_t)g->min_occurred_ns,
				 (uint64_t)g->max_occurred_ns, (uint64_t)g->min_received_ns,
				 (uint64_t)g->max_received_ns, 0, 0 };
	for (int i = 0; i < 11; i++, p += 8)
		fmt_put_u64(p, v[i]);
	fmt_put_u32(p, g->row_count);
	p += 4;
	memcpy(p, g->chain_before, FMT_HASH_BYTES);
	memcpy(p + FMT_HASH_BYTES, g->chain_after, FMT_HASH_BYTES);
	memcpy(p + 2 * FMT_HASH_BYTES, g->merkle_root, FMT_HASH_BYTES);
	ASSERT(p + 3 * FMT_HASH_BYTES == out + ENG_MANIFEST_SEGMENT_BYTES);
	return ENG_MANIFEST_SEGMENT_BYTES;
}

int eng_manifest_decode_segment(const uint8_t *in, uint32_t len, char tenant[FMT_TENANT_MAX + 1],
				struct eng_segment *g)
{
	if (len != ENG_MANIFEST_SEGMENT_BYTES || in[0] < 1 || in[0] > FMT_TENANT_MAX)
		return FMT_E_CORRUPT;
	memset(g, 0, sizeof(*g));
	memcpy(tenant, in + 1, in[0]);
	tenant[in[0]] = 0;
	if (!fmt_tenant_valid((struct fmt_str){ tenant, in[0] }))
		return FMT_E_CORRUPT;
	const uint8_t *p = in + 1 + FMT_TENANT_MAX;
	uint64_t v[11];
	for (int i = 0; i < 11; i++, p += 8)
		v[i] = fmt_get_u64(p);
	g->segment_id = v[0];
	g->first_seq = v[1];
	g->last_seq = v[2];
	g->file_size = v[3];
	g->file_checksum = v[4];
	g->min_occurred_ns = (int64_t)v[5];
	g->max_occurred_ns = (int64_t)v[6];
	g->min_received_ns = (int64_t)v[7];
	g->max_received_ns = (int64_t)v[8];
	g->row_count = fmt_get_u32(p);
	p += 4;
	memcpy(g->chain_before, p, FMT_HASH_BYTES);
	memcpy(g->chain_after, p + FMT_HASH_BYTES, FMT_HASH_BYTES);
	memcpy(g->merkle_root, p + 2 * FMT_HASH_BYTES, FMT_HASH_BYTES);
	if (g->first_seq < 1 || g->last_seq < g->first_seq ||
	    g->last_seq - g->first_seq + 1 != g->row_count)
		return FMT_E_CORRUPT;
	g->fd = -1;
	return 0;
}

void eng_tenant_add_segment(struct eng_tenant *t, struct eng_segment *seg)
{
	if (t->segment_count == t->segment_cap) {
		uint32_t cap = t->segment_cap ? t->segment_cap * 2 : 8;
		struct eng_segment **segs = realloc(t->segments, cap * sizeof(*segs));
		ASSERT(segs); /* TODO(budget): count segment slots against the shard budget */
		t->segments = segs;
		t->segment_cap = cap;
	}
	t->segments[t->segment_count++] = seg;
	t->sealed_seq = seg->last_seq;
	memcpy(t->sealed_chain, seg->chain_after, FMT_HASH_BYTES);
}

/* ---- the writer -------------------------------------------------------- */

static void man_start(struct eng_shard *s);

static void man_write_done(struct eng_io_op *op)
{
	struct eng_shard *s = op->ctx;
	s->man_write_result = op->result < 0 ? op->result
			      : (uint32_t)op->result == s->man_cur->len ? 0 : -EIO;
}

static void man_fsync_done(struct eng_io_op *op)
{
	struct eng_shard *s = op->ctx;
	struct eng_manifest_write *w = s->man_cur;
	int err = s->man_write_result < 0 ? s->man_write_result : op->result;
	if (err == 0)
		s->manifest_size += w->len;
	s->man_cur = NULL;
	w->done(w, err);
	man_start(s);
}

static void man_start(struct eng_shard *s)
{
	if (s->man_cur || !s->man_head)
		return;
	struct eng_manifest_write *w = s->man_head;
	s->man_head = w->next;
	if (!s->man_head)
		s->man_tail = NULL;
	w->next = NULL;
	s->man_cur = w;
	s->man_write_result = 0;
	s->man_op_write = (struct eng_io_op){ .kind = ENG_IO_WRITE, .fd = s->manifest_fd,
					      .buf = (void *)w->buf, .len = w->len,
					      .offset = s->manifest_size, .done = man_write_done,
					      .ctx = s };
	s->man_op_fsync = (struct eng_io_op){ .kind = ENG_IO_FSYNC, .fd = s->manifest_fd,
					      .done = man_fsync_done, .ctx = s };
	int rc = eng_io_submit(s->io, &s->man_op_write);
	ASSERT(rc == 0);
	rc = eng_io_submit(s->io, &s->man_op_fsync);
	ASSERT(rc == 0);
}

void eng_manifest_append(struct eng_shard *s, struct eng_manifest_write *w)
{
	w->next = NULL;
	if (s->man_tail)
		s->man_tail->next = w;
	else
		s->man_head = w;
	s->man_tail = w;
	man_start(s);
}

/* ---- export records ------------------------------------------------------- */

void eng_manifest_encode_export(const struct eng_tenant *t, uint64_t segment_id, uint8_t kind,
				int64_t at_ns, struct fmt_str ref, uint8_t out[ENG_MANIFEST_EXPORT_BYTES])
{
	ASSERT(ref.len <= ENG_EXPORT_REF_MAX);
	memset(out, 0, ENG_MANIFEST_EXPORT_BYTES);
	out[0] = t->name_len;
	memcpy(out + 1, t->name, t->name_len);
	uint8_t *p = out + 1 + FMT_TENANT_MAX;
	fmt_put_u64(p, segment_id);
	p[8] = kind;
	fmt_put_u64(p + 9, (uint64_t)at_ns);
	fmt_put_u16(p + 17, (uint16_t)ref.len);
	if (ref.len)
		memcpy(p + 19, ref.ptr, ref.len);
	ASSERT(p + 19 + ENG_EXPORT_REF_MAX == out + ENG_MANIFEST_EXPORT_BYTES);
}

int eng_manifest_decode_export(const uint8_t *in, uint32_t len, char tenant[FMT_TENANT_MAX + 1],
			       uint64_t *segment_id, uint8_t *kind, int64_t *at_ns,
			       char ref[ENG_EXPORT_REF_MAX + 1])
{
	if (len != ENG_MANIFEST_EXPORT_BYTES || in[0] < 1 || in[0] > FMT_TENANT_MAX)
		return FMT_E_CORRUPT;
	memcpy(tenant, in + 1, in[0]);
	tenant[in[0]] = 0;
	if (!fmt_tenant_valid((struct fmt_str){ tenant, in[0] }))
		return FMT_E_CORRUPT;
	const uint8_t *p = in + 1 + FMT_TENANT_MAX;
	*segment_id = fmt_get_u64(p);
	*kind = p[8];
	*at_ns = (int64_t)fmt_get_u64(p + 9);
	uint16_t rl = fmt_get_u16(p + 17);
	if ((*kind != ENG_EXPORT_REPLICATE && *kind != ENG_EXPORT_MIRROR) || rl > ENG_EXPORT_REF_MAX)
		return FMT_E_CORRUPT;
	memcpy(ref, p + 19, rl);
	ref[rl] = 0;
	return 0;
}

/* Segments of a tenant have increasing ids in manifest order (a shard
 * numbers them as it seals), so a binary search finds one. */
struct eng_segment *eng_tenant_segment(struct eng_tenant *t, uint64_t segment_id)
{
	uint32_t lo = 0, hi = t->segment_count;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		uint64_t id = t->segments[mid]->segment_id;
		if (id == segment_id)
			return t->segments[mid];
		if (id < segment_id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* Applies an export mark to a segment in memory. */
int eng_segment_set_export(struct eng_segment *g, uint8_t kind, const char *ref)
{
	if (kind == ENG_EXPORT_REPLICATE) {
		char *v = strdup(ref);
		if (!v)
			return FMT_E_NOMEM;
		free(g->version_id);
		g->version_id = v;
		g->replicated = true;
	} else {
		g->mirrored = true;
	}
	return 0;
}

static int load_export(struct eng_shard *s, const char *path, uint64_t offset, const struct fmt_rec *rec)
{
	char name[FMT_TENANT_MAX + 1], ref[ENG_EXPORT_REF_MAX + 1];
	uint64_t id;
	uint8_t kind;
	int64_t at;
	if (eng_manifest_decode_export(rec->payload, rec->payload_len, name, &id, &kind, &at, ref)) {
		eng_log(s->eng, ENG_LOG_ERROR, "%s: bad export record at offset %llu", path,
			(unsigned long long)offset);
		return FMT_E_CORRUPT;
	}
	struct eng_tenant *t = eng_tenant_find(s, (struct fmt_str){ name, (uint32_t)strlen(name) });
	struct eng_segment *g = t ? eng_tenant_segment(t, id) : NULL;
	if (!g) {
		eng_log(s->eng, ENG_LOG_ERROR, "%s: export record at offset %llu names segment %016llx "
			"of tenant %s, which no earlier record adds", path, (unsigned long long)offset,
			(unsigned long long)id, name);
		return FMT_E_CORRUPT;
	}
	bool was = kind == ENG_EXPORT_REPLICATE ? g->replicated : g->mirrored;
	int rc = eng_segment_set_export(g, kind, ref);
	if (rc == 0 && !was) {
		if (kind == ENG_EXPORT_REPLICATE)
			s->stats.segments_replicated++;
		else
			s->stats.segments_mirrored++;
	}
	return rc;
}

struct man_load {
	struct eng_shard *s;
	const char *path;
};

static int check_file(struct eng_shard *s, const struct eng_segment *g)
{
	char path[4200];
	eng_segment_path(s, g->segment_id, path, sizeof(path));
	struct stat st;
	if (stat(path, &st) != 0) {
		eng_log(s->eng, ENG_LOG_ERROR, "segment %s named by the manifest is missing: %s", path,
			strerror(errno));
		return FMT_E_NOT_FOUND;
	}
	if ((uint64_t)st.st_size != g->file_size) {
		eng_log(s->eng, ENG_LOG_ERROR, "segment %s has %lld bytes, the manifest says %llu", path,
			(long long)st.st_size, (unsigned long long)g->file_size);
		return FMT_E_CORRUPT;
	}
	return 0;
}

static int load_visit(void *ctx, uint64_t offset, const struct fmt_rec *rec)
{
	struct man_load *ml = ctx;
	struct eng_shard *s = ml->s;
	char name[FMT_TENANT_MAX + 1];
	struct eng_segment g;
	int rc = FMT_E_CORRUPT;
	if (rec->kind == FMT_REC_EXPORT)
		return load_export(s, ml->path, offset, rec);
	if (rec->kind == FMT_REC_REMOVE) {
		uint64_t id;
		struct eng_tenant *rt = NULL;
		struct eng_segment *rg = NULL;
		if (eng_manifest_decode_remove(rec->payload, rec->payload_len, name, &id) == 0 &&
		    (rt = eng_tenant_find(s, (struct fmt_str){ name, (uint32_t)strlen(name) })) &&
		    (rg = eng_tenant_segment(rt, id))) {
			rg->remote = true; /* its file is checked (or removed) after the scan */
			return 0;
		}
		goto bad;
	}
	if (rec->kind != FMT_REC_SEGMENT ||
	    eng_manifest_decode_segment(rec->payload, rec->payload_len, name, &g) != 0)
		goto bad;
	struct eng_tenant *t = eng_tenant_get(s, (struct fmt_str){ name, (uint32_t)strlen(name) }, &rc);
	if (!t)
		goto bad;
	if (g.first_seq != t->sealed_seq + 1 || memcmp(g.chain_before, t->sealed_chain, FMT_HASH_BYTES)) {
		eng_log(s->eng, ENG_LOG_ERROR, "%s: segment %016llx of tenant %s does not continue its chain "
			"(first seq %llu after %llu)", ml->path, (unsigned long long)g.segment_id, name,
			(unsigned long long)g.first_seq, (unsigned long long)t->sealed_seq);
		return FMT_E_CHAIN;
	}
	struct eng_segment *seg = malloc(sizeof(*seg));
	if (!seg)
		return FMT_E_NOMEM;
	*seg = g;
	seg->replicated = seg->mirrored = false;
	seg->version_id = NULL;
	eng_tenant_add_segment(t, seg);
	uint64_t no = g.segment_id & ((1ull << 40) - 1);
	if (no >= s->next_segment_no)
		s->next_segment_no = no + 1;
	return 0;
bad:
	eng_log(s->eng, ENG_LOG_ERROR, "%s: bad record at offset %llu", ml->path,
		(unsigned long long)offset);
	return rc;
}

/* Removes temporary and unnamed segment files (I5). */
static void remove_orphans(struct eng_shard *s)
{
	char dir[4200];
	snprintf(dir, sizeof(dir), "%s/segments", s->dir);
	DIR *d = opendir(dir);
	struct dirent *e;
	while (d && (e = readdir(d)) != NULL) {
		unsigned long long id;
		char tail[16] = "";
		if (e->d_name[0] == '.')
			continue;
		int n = sscanf(e->d_name, "%16llx.%15s", &id, tail);
		bool named = false;
		if (n == 2 && strcmp(tail, "hseg") == 0) {
			uint64_t no = id & ((1ull << 40) - 1);
			named = (id >> 40) == s->id && no < s->next_segment_no;
			/* A number below next_segment_no is named unless a crash
			 * left it between rename and its manifest record; only the
			 * highest number can be in that state, and it would be >=
			 * next_segment_no, so `named` is exact. */
		}
		if (named)
			continue;
		char path[4600];
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		eng_log(s->eng, ENG_LOG_INFO, "removing %s: not in the manifest (its events are in the WAL)",
			path);
		unlink(path);
	}
	if (d)
		closedir(d);
}

static int manifest_create(struct eng_shard *s, const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (fd < 0)
		return -errno;
	struct fmt_file_header h = { .version = FMT_FILE_VERSION, .shard = s->id,
				     .created_ns = eng_now_ns() };
	memcpy(h.magic, man_magic, 8);
	uint8_t hdr[FMT_FILE_HEADER_BYTES];
	fmt_file_header_encode(&h, hdr);
	int rc = 0;
	if (pwrite(fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) || fdatasync(fd) != 0)
		rc = errno ? -errno : -EIO;
	close(fd);
	return rc ? rc : eng_fsync_dir(s->dir);
}

int eng_manifest_load(struct eng_shard *s)
{
	char path[4200], segdir[4200];
	snprintf(path, sizeof(path), "%s/manifest.log", s->dir);
	snprintf(segdir, sizeof(segdir), "%s/segments", s->dir);
	if (mkdir(segdir, 0750) != 0 && errno != EEXIST)
		return -errno;
	struct stat st;
	int rc = 0;
	if (stat(path, &st) != 0 || st.st_size < FMT_FILE_HEADER_BYTES) {
		unlink(path);
		if ((rc = manifest_create(s, path)) != 0)
			return rc;
	}
	uint8_t *buf = NULL;
	size_t len = 0;
	if ((rc = eng_file_read_all(path, &buf, &len)) != 0)
		return rc;
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		free(buf);
		return -errno;
	}
	struct man_load ml = { s, path };
	struct fmt_log_scan sc;
	rc = fmt_log_scan(buf, len, man_magic, 4096, load_visit, &ml, &sc);
	free(buf);
	if (rc == 0 && sc.stop == FMT_E_TRUNCATED) {
		eng_log(s->eng, ENG_LOG_INFO, "%s: cutting torn tail at offset %llu", path,
			(unsigned long long)sc.valid_end);
		rc = ftruncate(fd, (off_t)sc.valid_end) ? -errno : 0;
	} else if (rc == 0 && sc.stop) {
		eng_log(s->eng, ENG_LOG_ERROR, "%s: corrupt record at offset %llu; refusing to start",
			path, (unsigned long long)sc.bad_offset);
		rc = FMT_E_CORRUPT;
	}
	if (rc) {
		close(fd);
		return rc;
	}
	s->manifest_fd = fd;
	s->manifest_size = sc.valid_end;
	/* Files, once the whole manifest is known: a local segment's file must
	 * be there with its size; a removed one's is deleted if a crash left it
	 * (between the REMOVE record and the unlink). */
	for (uint32_t i = 0; i < s->tenant_slot_count && rc == 0; i++) {
		struct eng_tenant *t = s->tenant_slots[i];
		for (uint32_t k = 0; t && k < t->segment_count && rc == 0; k++) {
			struct eng_segment *g = t->segments[k];
			if (g->remote) {
				char seg_path[4200];
				eng_segment_path(s, g->segment_id, seg_path, sizeof(seg_path));
				unlink(seg_path);
				s->stats.segments_remote++;
			} else if ((rc = check_file(s, g)) == 0) {
				s->stats.segments_local++;
				s->stats.segment_bytes_local += g->file_size;
			}
		}
	}
	if (rc)
		return rc;
	remove_orphans(s);
	for (uint32_t i = 0; i < s->tenant_slot_count; i++) {
		struct eng_tenant *t = s->tenant_slots[i];
		if (!t)
			continue;
		t->next_seq = t->sealed_seq + 1;
		t->durable_seq = t->sealed_seq;
		memcpy(t->chain, t->sealed_chain, FMT_HASH_BYTES);
		eng_memtable_init(&t->sealing, t->next_seq, t->chain);
		eng_memtable_init(&t->active, t->next_seq, t->chain);
	}
	return 0;
}
