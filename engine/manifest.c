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
	if ((rc = check_file(s, &g)) != 0)
		return rc;
	struct eng_segment *seg = malloc(sizeof(*seg));
	if (!seg)
		return FMT_E_NOMEM;
	*seg = g;
	eng_tenant_add_segment(t, seg);
	uint64_t no = g.segment_id & ((1ull << 40) - 1);
	if (no >= s->next_segment_no)
		s->next_segment_no = no + 1;
	s->stats.segments_local++;
	s->stats.segment_bytes_local += g.file_size;
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
	remove_orphans(s);
	for (uint32_t i = 0; i < s->tenant_slot_count; i++) {
		struct eng_tenant *t = s->tenant_slots[i];
		if (!t)
			continue;
		t->next_seq = t->sealed_seq + 1;
		t->durable_seq = t->sealed_seq;
		memcpy(t->chain, t->sealed_chain, FMT_HASH_BYTES);
		eng_memtable_init(&t->active, t->next_seq, t->chain);
	}
	return 0;
}
