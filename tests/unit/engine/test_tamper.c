// SPDX-License-Identifier: Apache-2.0
/*
 * test_tamper.c — DESIGN.md §2.5 from the auditor's side: eng_verify_dir()
 * (engine/offline.c) must find every way of altering a data directory
 * written by the real engine, say where (file, tenant, seq or offset), and
 * never change the directory it checks.
 *
 * Each test builds its own data directory through the public API (one
 * shard, sync I/O, 50-row seals of 8-row blocks, two tenants, 200 events
 * each, then a few unsealed batches left in the WAL), checks that it
 * verifies clean, alters it the way an attacker with write access would,
 * and checks the finding. The "re-sealed" cases rebuild a segment with the
 * format library exactly as the engine would (chains recomputed, a valid
 * Merkle root), so only the cross-checks between files can catch them.
 */
#include <criterion/criterion.h>

#include "engine_test_util.h"
#include "engine/offline.h"
#include "format/hash.h"
#include "format/record.h"
#include "format/segment.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>

#define TENANT "alpha"
#define OTHER "beta"
#define PER_TENANT 200
#define BATCH 10
#define SEGS_MAX 64
#define WAL_RECS_MAX 256
#define FINDINGS_MAX 64
#define MAN_PAYLOAD 253           /* ENG_MANIFEST_SEGMENT_BYTES, engine/manifest.c */

/* ---- the data directory ---------------------------------------------------- */

struct seg_info {
	char tenant[FMT_TENANT_MAX + 1];
	uint64_t id, first_seq, last_seq;
	uint64_t offset;                   /* of its manifest record */
};

struct data {
	char root[256], dir[320];
	uint64_t last_seq[2];              /* TENANT, OTHER */
	struct seg_info segs[SEGS_MAX];    /* manifest order */
	uint32_t seg_count;
};

static int man_collect(void *ctx, uint64_t offset, const struct fmt_rec *rec)
{
	struct data *d = ctx;
	struct eng_manifest_entry m;
	cr_assert_eq(eng_manifest_entry_decode(rec->payload, rec->payload_len, &m), 0);
	cr_assert_lt(d->seg_count, SEGS_MAX);
	struct seg_info *s = &d->segs[d->seg_count++];
	strcpy(s->tenant, m.tenant);
	s->id = m.segment_id;
	s->first_seq = m.first_seq;
	s->last_seq = m.last_seq;
	s->offset = offset;
	return 0;
}

static void read_manifest(struct data *d)
{
	char path[400];
	snprintf(path, sizeof(path), "%s/shard-000/manifest.log", d->dir);
	size_t len;
	uint8_t *buf = tu_read_file(path, &len);
	struct fmt_log_scan sc;
	d->seg_count = 0;
	cr_assert_eq(fmt_log_scan(buf, len, "HODEIMAN", 4096, man_collect, d, &sc), 0);
	cr_assert_eq(sc.stop, 0);
	free(buf);
}

static uint64_t sealed_seq(const struct data *d, const char *tenant)
{
	uint64_t s = 0;
	for (uint32_t i = 0; i < d->seg_count; i++)
		if (!strcmp(d->segs[i].tenant, tenant))
			s = d->segs[i].last_seq;
	return s;
}

/* Waits until no seal has completed for a second (seals are asynchronous;
 * eng_close() finishes one in flight but starts none). */
static void settle(struct eng_engine *eng, uint64_t at_least)
{
	struct eng_shard_stats st;
	uint64_t last = UINT64_MAX;
	int stable = 0;
	for (int i = 0; i < 1500 && stable < 50; i++) {
		eng_shard_stats(eng, 0, &st);
		stable = st.segments_sealed == last && st.segments_sealed >= at_least ? stable + 1 : 0;
		last = st.segments_sealed;
		usleep(20000);
	}
	cr_assert(stable >= 50, "seals did not settle (%llu sealed)", (unsigned long long)last);
}

static void append(struct eng_producer *p, struct data *d, int t, uint32_t first, uint32_t n)
{
	struct eng_append req;
	cr_assert_eq(tu_append(p, t ? OTHER : TENANT, first, n, &req), 0);
	cr_assert_eq(req.accepted, n);
	d->last_seq[t] = req.last_seq;
}

/* Builds the pristine directory described at the top of the file. */
static void build(struct data *d)
{
	memset(d, 0, sizeof(*d));
	tu_tmpdir(d->root, sizeof(d->root));
	snprintf(d->dir, sizeof(d->dir), "%s/data", d->root);
	struct eng_config cfg;
	eng_config_default(&cfg);
	cfg.shards = 1;
	cfg.io = ENG_IO_SYNC;
	cfg.seal_rows = 50;
	cfg.block_rows = 8;
	cfg.producers_max = 2;
	cfg.wal_buffer_bytes = 1u << 20;
	cfg.memtable_budget_bytes = 64u << 20;
	cfg.dedup_entries_max = 10000;
	struct eng_engine *eng = tu_open(d->dir, &cfg);
	cr_assert(eng != NULL);
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	for (uint32_t i = 0; i < PER_TENANT; i += BATCH)
		for (int t = 0; t < 2; t++)
			append(p, d, t, 1000u * (uint32_t)t + i, BATCH);
	settle(eng, 6);
	/* Unsealed events after the last seal, in several interleaved records
	 * so that a record in the middle of the WAL holds some of them. A seal
	 * may take them all (exactly seal_rows): then add more. */
	uint32_t next = PER_TENANT;
	for (int round = 0; round < 5; round++) {
		for (int k = 0; k < 3; k++, next += 5)
			for (int t = 0; t < 2; t++)
				append(p, d, t, 1000u * (uint32_t)t + next, 5);
		settle(eng, 0);
		read_manifest(d);
		if (sealed_seq(d, TENANT) < d->last_seq[0] && sealed_seq(d, OTHER) < d->last_seq[1])
			break;
	}
	eng_producer_close(p);
	eng_close(eng);
	read_manifest(d);
	cr_assert_lt(sealed_seq(d, TENANT), d->last_seq[0], "no unsealed events in the WAL");
}

/* The index in d->segs of the tenant's k-th segment. */
static uint32_t seg_of(const struct data *d, const char *tenant, uint32_t k)
{
	uint32_t seen = 0;
	for (uint32_t i = 0; i < d->seg_count; i++)
		if (!strcmp(d->segs[i].tenant, tenant) && seen++ == k)
			return i;
	cr_assert_fail("tenant %s has %u segments, not %u", tenant, seen, k + 1);
	return 0;
}

static void seg_path(const struct data *d, uint64_t id, char *out, size_t cap)
{
	snprintf(out, cap, "%s/shard-000/segments/%016llx.hseg", d->dir, (unsigned long long)id);
}

/* ---- running the verifier ---------------------------------------------------- */

struct finding {
	enum eng_offline_severity sev;
	char path[512];
	char tenant[FMT_TENANT_MAX + 1];
	uint64_t seq, offset;
	char message[512];
};

struct findings {
	struct finding f[FINDINGS_MAX];
	uint32_t n;
	struct eng_offline_summary sum;
};

static void collect(void *ctx, const struct eng_offline_problem *p)
{
	struct findings *fs = ctx;
	if (p->severity == ENG_OFFLINE_INFO || fs->n == FINDINGS_MAX)
		return;
	struct finding *f = &fs->f[fs->n++];
	f->sev = p->severity;
	snprintf(f->path, sizeof(f->path), "%s", p->path);
	snprintf(f->tenant, sizeof(f->tenant), "%s", p->tenant);
	f->seq = p->seq;
	f->offset = p->offset;
	snprintf(f->message, sizeof(f->message), "%s", p->message);
	cr_log_info("%s: %s tenant=%s seq=%llu offset=%llu: %s", eng_offline_severity_name(p->severity),
		    p->path, p->tenant, (unsigned long long)p->seq, (unsigned long long)p->offset,
		    p->message);
}

/* A listing of every file under dir with its size, mtime and XXH3, sorted:
 * equal listings mean nothing was written, truncated, renamed or deleted. */
static char *snap_lines[4096];
static size_t snap_count;

static int snap_visit(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	cr_assert_lt(snap_count, FMT_ARRAY_LEN(snap_lines));
	uint64_t sum = 0;
	if (type == FTW_F) {
		size_t len;
		uint8_t *buf = tu_read_file(path, &len);
		sum = fmt_xxh3(buf, len);
		free(buf);
	}
	char line[1024];
	snprintf(line, sizeof(line), "%s %d %lld %lld.%09ld %016llx", path, type, (long long)st->st_size,
		 (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec, (unsigned long long)sum);
	snap_lines[snap_count++] = strdup(line);
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *snapshot(const char *dir)
{
	snap_count = 0;
	cr_assert_eq(nftw(dir, snap_visit, 16, FTW_PHYS), 0);
	qsort(snap_lines, snap_count, sizeof(char *), cmp_str);
	size_t total = 1;
	for (size_t i = 0; i < snap_count; i++)
		total += strlen(snap_lines[i]) + 1;
	char *out = calloc(1, total);
	for (size_t i = 0; i < snap_count; i++) {
		strcat(strcat(out, snap_lines[i]), "\n");
		free(snap_lines[i]);
	}
	return out;
}

/* Runs the verifier and checks that it left the directory as it was. */
static void run_verify(const struct data *d, struct findings *fs)
{
	memset(fs, 0, sizeof(*fs));
	char *before = snapshot(d->dir);
	cr_assert_eq(eng_verify_dir(d->dir, collect, fs, &fs->sum), 0);
	char *after = snapshot(d->dir);
	cr_assert_str_eq(before, after, "eng_verify_dir changed the directory");
	free(before);
	free(after);
	cr_assert_eq(fs->sum.problems + fs->sum.warnings, fs->n);
	cr_assert_eq(fs->sum.ok, fs->sum.problems == 0);
}

static void expect_clean(const struct data *d)
{
	struct findings fs;
	run_verify(d, &fs);
	cr_assert(fs.sum.ok, "pristine directory: %u findings, first: %s", fs.n,
		  fs.n ? fs.f[0].message : "");
	cr_assert_eq(fs.sum.warnings, 0);
	cr_assert_eq(fs.sum.shards, 1);
	cr_assert_eq(fs.sum.tenants, 2);
	cr_assert_eq(fs.sum.segments, d->seg_count);
	cr_assert_eq(fs.sum.events, d->last_seq[0] + d->last_seq[1]);
}

/* A problem whose path ends with path_end (NULL: any), about tenant (NULL:
 * any), with a seq in [lo, hi] (hi 0: any seq). */
static const struct finding *find(const struct findings *fs, const char *path_end,
				  const char *tenant, uint64_t lo, uint64_t hi)
{
	for (uint32_t i = 0; i < fs->n; i++) {
		const struct finding *f = &fs->f[i];
		size_t pl = strlen(f->path), el = path_end ? strlen(path_end) : 0;
		if (f->sev != ENG_OFFLINE_PROBLEM)
			continue;
		if (path_end && (pl < el || strcmp(f->path + pl - el, path_end) != 0))
			continue;
		if (tenant && strcmp(f->tenant, tenant) != 0)
			continue;
		if (hi && (f->seq < lo || f->seq > hi))
			continue;
		return f;
	}
	return NULL;
}

static void expect_segment_problem(const struct data *d, uint32_t si)
{
	struct findings fs;
	run_verify(d, &fs);
	const struct seg_info *s = &d->segs[si];
	char name[64];
	snprintf(name, sizeof(name), "/%016llx.hseg", (unsigned long long)s->id);
	cr_assert_not(fs.sum.ok, "tampering with %s went unnoticed", name);
	cr_assert(find(&fs, name, s->tenant, s->first_seq, s->last_seq),
		  "no problem names %s, tenant %s, seq %llu..%llu (%u findings, first: %s)", name,
		  s->tenant, (unsigned long long)s->first_seq, (unsigned long long)s->last_seq, fs.n,
		  fs.n ? fs.f[0].message : "");
}

/* ---- re-sealing a segment as the engine would --------------------------- */

struct seg_rows {
	uint8_t *image;
	size_t len;
	struct fmt_segment *seg;
	struct fmt_block **blocks;
	struct fmt_event *rows;
	struct fmt_attr *attrs;            /* FMT_ATTRS_HARD_MAX per row */
	uint32_t n;
};

static void rows_load(const char *path, struct seg_rows *r)
{
	memset(r, 0, sizeof(*r));
	r->image = tu_read_file(path, &r->len);
	cr_assert_eq(fmt_segment_open_buf(r->image, r->len, &r->seg), 0);
	const struct fmt_segment_meta *m = &r->seg->meta;
	r->blocks = calloc(m->block_count, sizeof(*r->blocks));
	r->rows = calloc(m->row_count + 1, sizeof(*r->rows));
	r->attrs = calloc((size_t)(m->row_count + 1) * FMT_ATTRS_HARD_MAX, sizeof(*r->attrs));
	cr_assert(r->blocks && r->rows && r->attrs);
	for (uint32_t b = 0; b < m->block_count; b++) {
		cr_assert_eq(fmt_block_decode_buf(r->seg, r->image, r->len, b, FMT_COLS_ALL, &r->blocks[b]), 0);
		for (uint32_t i = 0; i < fmt_block_rows(r->blocks[b]); i++, r->n++)
			fmt_block_row(r->seg, r->blocks[b], i, &r->rows[r->n],
				      r->attrs + (size_t)r->n * FMT_ATTRS_HARD_MAX, FMT_ATTRS_HARD_MAX, NULL);
	}
	cr_assert_eq(r->n, m->row_count);
}

static void rows_free(struct seg_rows *r)
{
	for (uint32_t b = 0; b < r->seg->meta.block_count; b++)
		fmt_block_free(r->blocks[b]);
	fmt_segment_close(r->seg);
	free(r->blocks);
	free(r->rows);
	free(r->attrs);
	free(r->image);
}

/* Writes rows[0, n) over path as a valid segment: seqs renumbered from the
 * original first seq, chains recomputed from the original chain_before,
 * same id, shard, block size and creation time. */
static void rows_reseal(const char *path, const struct seg_rows *r, struct fmt_event *rows, uint32_t n)
{
	const struct fmt_segment_meta *m = &r->seg->meta;
	uint8_t (*chains)[FMT_HASH_BYTES] = calloc(n, FMT_HASH_BYTES);
	uint8_t scratch[4096], hash[FMT_HASH_BYTES];
	const uint8_t *prev = m->chain_before;
	for (uint32_t i = 0; i < n; i++) {
		rows[i].seq = m->first_seq + i;
		cr_assert_leq(fmt_event_canon_size(&rows[i]), sizeof(scratch));
		cr_assert_eq(fmt_event_hash(&rows[i], scratch, sizeof(scratch), hash), 0);
		fmt_chain_next(prev, hash, chains[i]);
		prev = chains[i];
	}
	struct fmt_segment_build_args args = { .segment_id = m->segment_id, .shard = m->shard,
					       .block_rows = m->block_rows, .created_ns = m->created_ns,
					       .chain_before = m->chain_before,
					       .tenant = fmt_str_c(m->tenant) };
	uint8_t *out;
	size_t len;
	cr_assert_eq(fmt_segment_build(&args, rows, (const uint8_t (*)[FMT_HASH_BYTES])chains, n, &out, &len), 0);
	cr_assert_eq(fmt_segment_verify_buf(out, len, NULL), 0, "the forged segment is self-consistent");
	tu_write_file(path, out, len);
	free(out);
	free(chains);
}

enum edit { EDIT_MODIFY, EDIT_REMOVE, EDIT_INSERT, EDIT_SWAP };

/* Applies one edit to the tenant's k-th segment and re-seals it. Returns
 * the segment's index in d->segs. */
static uint32_t reseal_with(struct data *d, uint32_t k_seg, enum edit edit)
{
	uint32_t si = seg_of(d, TENANT, k_seg);
	char path[512];
	seg_path(d, d->segs[si].id, path, sizeof(path));
	struct seg_rows r;
	rows_load(path, &r);
	uint32_t k = r.n / 2, n = r.n;
	cr_assert_geq(n, 4);
	struct fmt_event *rows = r.rows;
	switch (edit) {
	case EDIT_MODIFY:
		rows[k].str[FMT_F_RESOURCE_ID] = fmt_str_c("doc-tampered");
		break;
	case EDIT_REMOVE:
		memmove(&rows[k], &rows[k + 1], (n - k - 1) * sizeof(*rows));
		n--;
		break;
	case EDIT_INSERT:
		memmove(&rows[k + 1], &rows[k], (n - k) * sizeof(*rows)); /* rows has n + 1 slots */
		rows[k + 1].event_id[0] ^= 0x55;
		rows[k + 1].str[FMT_F_ACTION] = fmt_str_c("document.export");
		n++;
		break;
	case EDIT_SWAP: {
		struct fmt_event tmp = rows[k];
		rows[k] = rows[k + 1];
		rows[k + 1] = tmp;
		break;
	}
	}
	rows_reseal(path, &r, rows, n);
	rows_free(&r);
	return si;
}

/* ---- tests ------------------------------------------------------------------ */

Test(tamper, pristine_directory_verifies_clean, .timeout = 120)
{
	struct data d;
	build(&d);
	cr_assert_geq(d.seg_count, 6);
	(void)seg_of(&d, TENANT, 2); /* at least 3 segments of the tenant */
	expect_clean(&d);
}

/* a) one event altered in place: a byte of a chunk. */
Test(tamper, flipped_byte_in_a_chunk, .timeout = 120)
{
	struct data d;
	build(&d);
	expect_clean(&d);
	uint32_t si = seg_of(&d, TENANT, 1);
	char path[512];
	seg_path(&d, d.segs[si].id, path, sizeof(path));
	size_t len;
	uint8_t *buf = tu_read_file(path, &len);
	struct fmt_segment *seg;
	cr_assert_eq(fmt_segment_open_buf(buf, len, &seg), 0);
	const struct fmt_block_ref *blk = &seg->blocks[1];
	const struct fmt_chunk_ref *c = &blk->chunk[FMT_COL_STR_FIRST + FMT_F_RESOURCE_ID];
	buf[c->offset + c->stored_len / 2] ^= 0x01;
	uint64_t first = blk->first_seq, last = blk->last_seq;
	fmt_segment_close(seg);
	tu_write_file(path, buf, len);
	free(buf);
	expect_segment_problem(&d, si);
	struct findings fs;
	run_verify(&d, &fs);
	cr_assert(find(&fs, NULL, TENANT, first, last), "the damaged block's seqs are not named");
}

/* b) one event altered and the segment re-sealed consistently. */
Test(tamper, modified_event_resealed, .timeout = 120)
{
	struct data d;
	build(&d);
	expect_clean(&d);
	expect_segment_problem(&d, reseal_with(&d, 1, EDIT_MODIFY));
}

/* Forges the tenant's k-th segment (one event altered, re-sealed) and
 * rewrites its manifest record to match, as an attacker with write access
 * to everything would. Returns the segment's index in d->segs. */
static uint32_t forge_with_manifest(struct data *d, uint32_t k_seg)
{
	uint32_t si = reseal_with(d, k_seg, EDIT_MODIFY);
	char seg[512], man[400];
	seg_path(d, d->segs[si].id, seg, sizeof(seg));
	snprintf(man, sizeof(man), "%s/shard-000/manifest.log", d->dir);
	size_t slen, mlen;
	uint8_t *sbuf = tu_read_file(seg, &slen), *mbuf = tu_read_file(man, &mlen);
	struct fmt_segment *f;
	cr_assert_eq(fmt_segment_open_buf(sbuf, slen, &f), 0);
	/* Payload layout: engine/manifest.c (u64 fields from byte 65, then
	 * u32 rows, chain_before, chain_after, merkle_root). */
	uint8_t *rec = mbuf + d->segs[si].offset, *pl = rec + FMT_REC_HEADER_BYTES;
	cr_assert_eq(fmt_get_u32(rec), MAN_PAYLOAD);
	fmt_put_u64(pl + 65 + 3 * 8, slen);
	fmt_put_u64(pl + 65 + 4 * 8, fmt_xxh3(sbuf, slen));
	memcpy(pl + 65 + 88 + 4 + FMT_HASH_BYTES, f->meta.chain_after, FMT_HASH_BYTES);
	memcpy(pl + 65 + 88 + 4 + 2 * FMT_HASH_BYTES, f->meta.merkle_root, FMT_HASH_BYTES);
	fmt_rec_header_encode(rec, FMT_REC_SEGMENT, 0, 0, pl, MAN_PAYLOAD, 0);
	tu_write_file(man, mbuf, mlen);
	fmt_segment_close(f);
	free(sbuf);
	free(mbuf);
	return si;
}

/* b') the same, and the manifest record rewritten to match the forged file:
 * the chain into the next segment tells. */
Test(tamper, modified_event_resealed_with_manifest, .timeout = 120)
{
	struct data d;
	build(&d);
	expect_clean(&d);
	forge_with_manifest(&d, 1);
	struct findings fs;
	run_verify(&d, &fs);
	uint32_t next = seg_of(&d, TENANT, 2);
	cr_assert_not(fs.sum.ok, "a consistently forged segment and manifest went unnoticed");
	cr_assert(find(&fs, "manifest.log", TENANT, d.segs[next].first_seq, d.segs[next].first_seq),
		  "the chain break before seq %llu is not reported", (unsigned long long)d.segs[next].first_seq);
}

/* b'') the tenant's last segment forged with its manifest record: no next
 * segment to break, but the WAL still holds the acknowledged events. */
Test(tamper, last_segment_forged_with_manifest, .timeout = 120)
{
	struct data d;
	build(&d);
	expect_clean(&d);
	uint32_t n = 0;
	for (uint32_t i = 0; i < d.seg_count; i++)
		n += !strcmp(d.segs[i].tenant, TENANT);
	uint32_t si = forge_with_manifest(&d, n - 1);
	struct findings fs;
	run_verify(&d, &fs);
	cr_assert_not(fs.sum.ok, "a forged last segment went unnoticed");
	const struct finding *f = find(&fs, NULL, TENANT, d.segs[si].first_seq, d.segs[si].last_seq);
	cr_assert(f, "the forged seqs %llu..%llu are not named", (unsigned long long)d.segs[si].first_seq,
		  (unsigned long long)d.segs[si].last_seq);
	cr_assert(strstr(f->path, "/wal/wal-"), "found in %s", f->path);
}

/* c) one event removed, seqs renumbered to hide the gap. */
Test(tamper, removed_event, .timeout = 120)
{
	struct data d;
	build(&d);
	expect_clean(&d);
	expect_segment_problem(&d, reseal_with(&d, 1, EDIT_REMOVE));
}

/* d) one event inserted. */
Test(tamper, inserted_event, .timeout = 120)
{
	struct data d;
	build(&d);
	expect_clean(&d);
	expect_segment_problem(&d, reseal_with(&d, 1, EDIT_INSERT));
}

/* e) two events swapped, seqs renumbered. */
Test(tamper, reordered_events, .timeout = 120)
{
	struct data d;
	build(&d);
	expect_clean(&d);
	expect_segment_problem(&d, reseal_with(&d, 1, EDIT_SWAP));
}

/* f) a whole segment removed. */
Test(tamper, removed_segment, .timeout = 120)
{
	struct data d;
	build(&d);
	expect_clean(&d);
	uint32_t si = seg_of(&d, TENANT, 1);
	char path[512];
	seg_path(&d, d.segs[si].id, path, sizeof(path));
	cr_assert_eq(unlink(path), 0);
	expect_segment_problem(&d, si);
}

/* g) two segments of the tenant swapped. */
Test(tamper, swapped_segments, .timeout = 120)
{
	struct data d;
	build(&d);
	expect_clean(&d);
	uint32_t a = seg_of(&d, TENANT, 0), b = seg_of(&d, TENANT, 1);
	char pa[512], pb[512], tmp[600];
	seg_path(&d, d.segs[a].id, pa, sizeof(pa));
	seg_path(&d, d.segs[b].id, pb, sizeof(pb));
	snprintf(tmp, sizeof(tmp), "%s.swap", pa);
	cr_assert_eq(rename(pa, tmp), 0);
	cr_assert_eq(rename(pb, pa), 0);
	cr_assert_eq(rename(tmp, pb), 0);
	expect_segment_problem(&d, a);
	expect_segment_problem(&d, b);
}

/* h) a copy of a segment inserted under an unused id. */
Test(tamper, inserted_segment, .timeout = 120)
{
	struct data d;
	build(&d);
	expect_clean(&d);
	uint32_t si = seg_of(&d, TENANT, 0);
	char src[512], dst[512];
	seg_path(&d, d.segs[si].id, src, sizeof(src));
	uint64_t id = d.segs[si].id + 0x1000;
	seg_path(&d, id, dst, sizeof(dst));
	size_t len;
	uint8_t *buf = tu_read_file(src, &len);
	tu_write_file(dst, buf, len);
	free(buf);
	struct findings fs;
	run_verify(&d, &fs);
	char name[64];
	snprintf(name, sizeof(name), "/%016llx.hseg", (unsigned long long)id);
	const struct finding *f = find(&fs, name, TENANT, 0, 0);
	cr_assert(f, "the inserted segment %s is not reported", name);
	cr_assert(strstr(f->message, "unreferenced"), "message: %s", f->message);
	cr_assert_eq(fs.sum.problems, 1);
}

struct wal_rec {
	uint64_t offset, seq;
	uint32_t payload_len;
	char tenant[FMT_TENANT_MAX + 1];
};

struct wal_recs {
	struct wal_rec r[WAL_RECS_MAX];
	uint32_t n;
};

static int wal_collect(void *ctx, uint64_t offset, const struct fmt_rec *rec)
{
	struct wal_recs *w = ctx;
	uint32_t off = 0, len;
	const uint8_t *canon;
	struct fmt_event ev;
	struct fmt_attr attrs[FMT_ATTRS_HARD_MAX];
	cr_assert_eq(fmt_batch_next(rec, &off, &canon, &len), 1);
	cr_assert_eq(fmt_event_canon_decode(canon, len, &ev, attrs, FMT_ATTRS_HARD_MAX), 0);
	cr_assert_lt(w->n, WAL_RECS_MAX);
	struct wal_rec *r = &w->r[w->n++];
	r->offset = offset;
	r->seq = rec->seq;
	r->payload_len = rec->payload_len;
	snprintf(r->tenant, sizeof(r->tenant), "%.*s", (int)ev.tenant.len, ev.tenant.ptr);
	return 0;
}

/* The single WAL file of the directory (free files to recycle aside),
 * and its records. */
static uint8_t *wal_load(const struct data *d, char *path, size_t cap, size_t *len, struct wal_recs *w)
{
	char dir[400];
	snprintf(dir, sizeof(dir), "%s/shard-000/wal", d->dir);
	DIR *dd = opendir(dir);
	cr_assert(dd);
	struct dirent *e;
	int files = 0;
	while ((e = readdir(dd)) != NULL)
		if (!strncmp(e->d_name, "wal-", 4) && strstr(e->d_name, ".log") && ++files)
			snprintf(path, cap, "%s/%s", dir, e->d_name);
	closedir(dd);
	cr_assert_eq(files, 1);
	uint8_t *buf = tu_read_file(path, len);
	struct fmt_log_scan sc;
	w->n = 0;
	cr_assert_eq(fmt_log_scan(buf, *len, "HODEIWAL", 1u << 30, wal_collect, w, &sc), 0);
	cr_assert_eq(sc.stop, 0);
	return buf;
}

/* i) a payload byte of a WAL record holding unsealed events, in the middle
 * of the file. */
Test(tamper, wal_record_payload, .timeout = 120)
{
	struct data d;
	build(&d);
	expect_clean(&d);
	char path[512];
	size_t len;
	struct wal_recs w;
	uint8_t *buf = wal_load(&d, path, sizeof(path), &len, &w);
	uint32_t pick = w.n;
	for (uint32_t i = 0; i + 1 < w.n && pick == w.n; i++)
		if (w.r[i].seq > sealed_seq(&d, w.r[i].tenant))
			pick = i;
	cr_assert_lt(pick, w.n, "no unsealed record before the last one");
	const struct wal_rec *r = &w.r[pick];
	buf[r->offset + FMT_REC_HEADER_BYTES + r->payload_len / 2] ^= 0x20;
	tu_write_file(path, buf, len);
	free(buf);
	struct findings fs;
	run_verify(&d, &fs);
	cr_assert_not(fs.sum.ok, "a altered WAL record went unnoticed");
	bool named = false;
	for (uint32_t i = 0; i < fs.n; i++)
		named |= fs.f[i].sev == ENG_OFFLINE_PROBLEM && strstr(fs.f[i].path, "/wal/wal-") &&
			 fs.f[i].offset == r->offset;
	cr_assert(named, "no problem names the WAL file at offset %llu", (unsigned long long)r->offset);
}

/* A torn tail of the newest WAL file was never acknowledged: a warning. */
Test(tamper, torn_wal_tail_is_a_warning, .timeout = 120)
{
	struct data d;
	build(&d);
	char path[512];
	size_t len;
	struct wal_recs w;
	free(wal_load(&d, path, sizeof(path), &len, &w));
	cr_assert_eq(truncate(path, (off_t)(len - 7)), 0);
	struct findings fs;
	run_verify(&d, &fs);
	cr_assert(fs.sum.ok, "a torn tail counted as a problem: %s", fs.n ? fs.f[0].message : "");
	cr_assert_eq(fs.sum.warnings, 1);
	cr_assert_eq(fs.f[0].sev, ENG_OFFLINE_WARNING);
	cr_assert_eq(fs.f[0].offset, w.r[w.n - 1].offset);
}

Test(tamper, unusable_directory)
{
	struct eng_offline_summary sum;
	cr_assert_lt(eng_verify_dir("/nonexistent/hodei-data", NULL, NULL, &sum), 0);
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	cr_assert_eq(eng_verify_dir(dir, NULL, NULL, &sum), FMT_E_NOT_FOUND);
	cr_assert_not(sum.ok);
}
