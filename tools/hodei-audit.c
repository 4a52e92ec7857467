// SPDX-License-Identifier: Apache-2.0
/*
 * hodei-audit.c — the operator CLI (DESIGN.md §6). Commands:
 *
 *   hodei-audit inspect FILE [--json]         dump a segment, WAL or manifest
 *   hodei-audit verify --data-dir DIR [--json] check a whole data directory
 *
 * the client commands of hodei-audit-client.c (append, search, tail,
 * count, verify --server, health, keys new), which talk to a server, the
 * ClickHouse mirror commands of hodei-audit-clickhouse.c, and the S3
 * commands of hodei-audit-s3.c (s3 check, put, head, get, ls).
 *
 * inspect and verify --data-dir work on files only, read-only, with no
 * server running: `inspect` is what an operator runs on the file a refused
 * start names; `verify` is what an auditor runs on a data directory or a
 * restored copy. The file type is told by its magic, never by its name, so
 * a renamed or copied file still inspects.
 *
 * Output: human text by default; with --json, `inspect` prints one JSON
 * document and `verify` prints NDJSON (one object per finding, then a
 * summary object), all built with jansson so that strings are escaped.
 *
 * Exit codes, for scripts (enum cli_exit in hodei-audit-client.h):
 *   0  success; for verify: everything checked is intact (warnings, such as
 *      a torn WAL tail that was never acknowledged, do not count)
 *   1  problems were found (damage, tampering, a file failing its checks)
 *   2  usage error (unknown command or flag, missing argument, an input
 *      line of `append` that does not parse)
 *   3  the file or directory cannot be read
 *   4  the server refused the credentials (UNAUTHENTICATED, PERMISSION_DENIED)
 *   5  the server answered another error, or could not be reached
 */
#include "engine/offline.h"
#include "format/hash.h"
#include "format/record.h"
#include "format/segment.h"
#include "tools/hodei-audit-client.h"
#include "tools/hodei-audit-s3.h"
#include "tools/hodei-audit-clickhouse.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum exit_code { EXIT_INTACT = 0, EXIT_PROBLEMS = 1, EXIT_USAGE = 2, EXIT_UNREADABLE = 3 };

/* File magics (docs/FORMAT.md §4, §5; format/record.h, format/segment.c). */
static const uint8_t seg_magic[8] = { 'H', 'S', 'E', 'G', 0x0D, 0x0A, 0x1A, 0x0A };
static const char wal_magic[8] = { 'H', 'O', 'D', 'E', 'I', 'W', 'A', 'L' };
static const char man_magic[8] = { 'H', 'O', 'D', 'E', 'I', 'M', 'A', 'N' };

#define MANIFEST_PAYLOAD_MAX 4096 /* what the engine accepts (engine/manifest.c) */

static const char usage_head[] =
	"usage: hodei-audit COMMAND [ARGS]\n"
	"\n"
	"commands:\n"
	"  inspect FILE [--json]           dump a segment (.hseg), WAL (wal-*.log) or\n"
	"                                  manifest (manifest.log) file and check it\n"
	"  verify --data-dir DIR [--json]  check every segment, manifest and WAL file of a\n"
	"                                  data directory: checksums, hash chains, Merkle\n"
	"                                  roots, missing/inserted/reordered segments\n"
	"  help                            print this help\n"
	"\n"
	"client commands (gRPC to hodei-auditd):\n";

static const char usage_s3_head[] =
	"\n"
	"S3 commands (the bucket the server replicates to; docs/S3.md):\n";

static const char usage_tail[] =
	"\n"
	"--json prints JSON (inspect: one document; verify: one object per line;\n"
	"search, tail: NDJSON of stored events; others: one summary object).\n"
	"exit codes: 0 success (verify: intact), 1 problems found, 2 usage error or\n"
	"a bad input line, 3 cannot read, 4 UNAUTHENTICATED or PERMISSION_DENIED,\n"
	"5 any other server error or no connection (status name and message on stderr).\n";

static void print_usage(FILE *out)
{
	fputs(usage_head, out);
	fputs(cli_usage_text, out);
	fputs("\nClickHouse mirror:\n", out);
	fputs(cli_clickhouse_usage_text, out);
	fputs(usage_s3_head, out);
	fputs(cli_s3_usage_text, out);
	fputs(usage_tail, out);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("hodei-audit: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputs("\n\n", stderr);
	va_end(ap);
	print_usage(stderr);
	return EXIT_USAGE;
}

/* ---- small helpers ----------------------------------------------------------- */

/* ISO 8601 UTC with nanoseconds. */
static void time_iso(int64_t ns, char out[48])
{
	time_t sec = (time_t)(ns / 1000000000);
	long frac = (long)(ns % 1000000000);
	if (frac < 0) {
		frac += 1000000000;
		sec--;
	}
	struct tm tm;
	if (!gmtime_r(&sec, &tm)) {
		snprintf(out, 48, "%lld ns", (long long)ns);
		return;
	}
	char day[32];
	strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, 48, "%s.%09ldZ", day, frac);
}

static const char *hex_hash(const uint8_t h[FMT_HASH_BYTES], char out[2 * FMT_HASH_BYTES + 1])
{
	fmt_hex(h, FMT_HASH_BYTES, out);
	return out;
}

static json_t *j_hash(const uint8_t h[FMT_HASH_BYTES])
{
	char hex[2 * FMT_HASH_BYTES + 1];
	return json_string(hex_hash(h, hex));
}

static json_t *j_hex64(uint64_t v)
{
	char hex[17];
	snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)v);
	return json_string(hex);
}

static json_t *j_u64(uint64_t v)
{
	return json_integer((json_int_t)v);
}

/* Prints a JSON value and frees it. Returns false if it could not be built. */
static bool j_print(json_t *doc, size_t flags)
{
	char *s = doc ? json_dumps(doc, flags | JSON_ENSURE_ASCII) : NULL;
	json_decref(doc);
	if (!s) {
		fputs("hodei-audit: out of memory building JSON\n", stderr);
		return false;
	}
	puts(s);
	free(s);
	return true;
}

/* ---- inspect: segments ------------------------------------------------------- */

static const char *column_name(unsigned c)
{
	static const char *const fixed[] = { "seq", "received_at", "occurred_at", "event_id", "outcome" };
	if (c < FMT_COL_STR_FIRST)
		return fixed[c];
	if (c <= FMT_COL_STR_LAST)
		return fmt_field_name((enum fmt_field)(c - FMT_COL_STR_FIRST));
	return c == FMT_COL_ATTRS ? "attributes" : c == FMT_COL_DETAILS ? "details_json" : "chain";
}

static const char *encoding_name(uint8_t e)
{
	return e == FMT_ENC_PLAIN ? "plain" : e == FMT_ENC_DICT ? "dict" : e == FMT_ENC_DELTA ? "delta" : "?";
}

/* Decodes block b alone and rebuilds its event-id index from its rows:
 * "ok" or the problem, for the per-block listing. */
static const char *block_check(const struct fmt_segment *f, const uint8_t *buf, size_t len, uint32_t b)
{
	struct fmt_block *blk = NULL;
	int rc = fmt_block_decode_buf(f, buf, len, b, FMT_COLS_ALL, &blk);
	if (rc == 0 && (rc = fmt_block_check_id_index(f, b, blk)) == FMT_E_CORRUPT) {
		fmt_block_free(blk);
		return "event-id index does not match the block's rows";
	}
	fmt_block_free(blk);
	return rc ? fmt_strerror(rc) : "ok";
}

static json_t *segment_meta_json(const struct fmt_segment_meta *m)
{
	json_t *o = json_object();
	json_object_set_new(o, "tenant", json_string(m->tenant));
	json_object_set_new(o, "segment_id", j_hex64(m->segment_id));
	json_object_set_new(o, "shard", json_integer(m->shard));
	json_object_set_new(o, "rows", json_integer(m->row_count));
	json_object_set_new(o, "block_rows", json_integer(m->block_rows));
	json_object_set_new(o, "block_count", json_integer(m->block_count));
	json_object_set_new(o, "first_seq", j_u64(m->first_seq));
	json_object_set_new(o, "last_seq", j_u64(m->last_seq));
	json_object_set_new(o, "min_occurred_ns", json_integer(m->min_occurred_ns));
	json_object_set_new(o, "max_occurred_ns", json_integer(m->max_occurred_ns));
	json_object_set_new(o, "min_received_ns", json_integer(m->min_received_ns));
	json_object_set_new(o, "max_received_ns", json_integer(m->max_received_ns));
	json_object_set_new(o, "created_ns", json_integer(m->created_ns));
	json_object_set_new(o, "chain_before", j_hash(m->chain_before));
	json_object_set_new(o, "chain_after", j_hash(m->chain_after));
	json_object_set_new(o, "merkle_root", j_hash(m->merkle_root));
	json_object_set_new(o, "id_filter_bits", json_integer(m->id_filter_bits));
	return o;
}

static json_t *segment_blocks_json(const struct fmt_segment *f, const uint8_t *buf, size_t len)
{
	json_t *arr = json_array();
	for (uint32_t b = 0; b < f->meta.block_count; b++) {
		const struct fmt_block_ref *r = &f->blocks[b];
		json_t *o = json_object(), *cols = json_array();
		json_object_set_new(o, "index", json_integer(b));
		json_object_set_new(o, "first_row", json_integer(r->first_row));
		json_object_set_new(o, "rows", json_integer(r->row_count));
		json_object_set_new(o, "first_seq", j_u64(r->first_seq));
		json_object_set_new(o, "last_seq", j_u64(r->last_seq));
		json_object_set_new(o, "min_occurred_ns", json_integer(r->min_occurred_ns));
		json_object_set_new(o, "max_occurred_ns", json_integer(r->max_occurred_ns));
		json_object_set_new(o, "check", json_string(block_check(f, buf, len, b)));
		if (fmt_segment_has_id_index(f)) {
			char lo[37], hi[37];
			fmt_uuid_format(r->min_event_id, lo);
			fmt_uuid_format(r->max_event_id, hi);
			json_object_set_new(o, "min_event_id", json_string(lo));
			json_object_set_new(o, "max_event_id", json_string(hi));
			json_object_set_new(o, "id_filter_bytes", json_integer(r->id_filter_bytes));
		}
		for (unsigned c = 0; c < FMT_COL_COUNT; c++) {
			const struct fmt_chunk_ref *k = &r->chunk[c];
			json_t *col = json_object();
			json_object_set_new(col, "column", json_string(column_name(c)));
			json_object_set_new(col, "encoding", json_string(encoding_name(k->encoding)));
			json_object_set_new(col, "offset", j_u64(k->offset));
			json_object_set_new(col, "stored_bytes", json_integer(k->stored_len));
			json_object_set_new(col, "raw_bytes", json_integer(k->raw_len));
			json_object_set_new(col, "checksum", j_hex64(k->checksum));
			json_array_append_new(cols, col);
		}
		json_object_set_new(o, "columns", cols);
		json_array_append_new(arr, o);
	}
	return arr;
}

static void segment_print_meta(const struct fmt_segment_meta *m)
{
	char a[48], b[48], h[2 * FMT_HASH_BYTES + 1];
	printf("tenant:        %s\n", m->tenant);
	printf("segment id:    %016llx (shard %u)\n", (unsigned long long)m->segment_id, m->shard);
	printf("rows:          %u in %u blocks of up to %u rows\n", m->row_count, m->block_count,
	       m->block_rows);
	printf("seq:           %llu..%llu\n", (unsigned long long)m->first_seq,
	       (unsigned long long)m->last_seq);
	time_iso(m->min_occurred_ns, a);
	time_iso(m->max_occurred_ns, b);
	printf("occurred:      %s .. %s\n", a, b);
	time_iso(m->min_received_ns, a);
	time_iso(m->max_received_ns, b);
	printf("received:      %s .. %s\n", a, b);
	time_iso(m->created_ns, a);
	printf("created:       %s\n", a);
	printf("chain before:  %s\n", hex_hash(m->chain_before, h));
	printf("chain after:   %s\n", hex_hash(m->chain_after, h));
	printf("merkle root:   %s\n", hex_hash(m->merkle_root, h));
	if (m->id_filter_bits)
		printf("event-id index: min/max and a %u-bit-per-row Bloom filter per block\n",
		       m->id_filter_bits);
	else
		printf("event-id index: none (lookups by event id scan this segment)\n");
}

static void segment_print_blocks(const struct fmt_segment *f, const uint8_t *buf, size_t len)
{
	for (uint32_t b = 0; b < f->meta.block_count; b++) {
		const struct fmt_block_ref *r = &f->blocks[b];
		char lo[48], hi[48];
		time_iso(r->min_occurred_ns, lo);
		time_iso(r->max_occurred_ns, hi);
		printf("\nblock %u: %u rows, seq %llu..%llu, occurred %s .. %s, check: %s\n", b,
		       r->row_count, (unsigned long long)r->first_seq, (unsigned long long)r->last_seq,
		       lo, hi, block_check(f, buf, len, b));
		if (fmt_segment_has_id_index(f)) {
			char a[37], z[37];
			fmt_uuid_format(r->min_event_id, a);
			fmt_uuid_format(r->max_event_id, z);
			printf("  event ids %s .. %s, filter %u bytes\n", a, z, r->id_filter_bytes);
		}
		printf("  %-14s %-8s %10s %10s %10s  %s\n", "column", "encoding", "offset", "stored",
		       "raw", "checksum");
		for (unsigned c = 0; c < FMT_COL_COUNT; c++) {
			const struct fmt_chunk_ref *k = &r->chunk[c];
			printf("  %-14s %-8s %10llu %10u %10u  %016llx\n", column_name(c),
			       encoding_name(k->encoding), (unsigned long long)k->offset, k->stored_len,
			       k->raw_len, (unsigned long long)k->checksum);
		}
	}
}

static int inspect_segment(const char *path, const uint8_t *buf, size_t len, bool json)
{
	struct fmt_segment *f = NULL;
	int open_rc = fmt_segment_open_buf(buf, len, &f);
	uint64_t bad_seq = 0;
	int vrc = fmt_segment_verify_buf(buf, len, &bad_seq);
	bool head = len >= FMT_SEG_HEADER_BYTES;
	uint32_t version = head ? fmt_get_u32(buf + 8) : 0;
	if (json) {
		json_t *doc = json_object(), *v = json_object();
		json_object_set_new(doc, "file", json_string(path));
		json_object_set_new(doc, "type", json_string("segment"));
		json_object_set_new(doc, "size", j_u64(len));
		json_object_set_new(doc, "version", json_integer(version));
		if (f) {
			json_object_update_new(doc, segment_meta_json(&f->meta));
			json_object_set_new(doc, "blocks", segment_blocks_json(f, buf, len));
		} else {
			json_object_set_new(doc, "error", json_string(fmt_strerror(open_rc)));
		}
		json_object_set_new(v, "ok", json_boolean(vrc == 0));
		if (vrc)
			json_object_set_new(v, "error", json_string(fmt_strerror(vrc)));
		if (bad_seq)
			json_object_set_new(v, "bad_seq", j_u64(bad_seq));
		json_object_set_new(doc, "verify", v);
		if (!j_print(doc, JSON_INDENT(2)))
			vrc = -ENOMEM;
	} else {
		printf("file:          %s\n", path);
		printf("type:          segment, format version %u\n", version);
		printf("size:          %zu bytes\n", len);
		if (f) {
			segment_print_meta(&f->meta);
			segment_print_blocks(f, buf, len);
			putchar('\n');
		} else {
			printf("footer:        cannot open: %s\n", fmt_strerror(open_rc));
		}
		if (vrc == 0)
			printf("verify: ok\n");
		else if (bad_seq)
			printf("verify: FAILED: %s (first bad seq %llu)\n", fmt_strerror(vrc),
			       (unsigned long long)bad_seq);
		else
			printf("verify: FAILED: %s\n", fmt_strerror(vrc));
	}
	fmt_segment_close(f);
	return vrc ? EXIT_PROBLEMS : EXIT_INTACT;
}

/* ---- inspect: WAL and manifest ---------------------------------------------- */

struct log_inspect {
	bool wal;
	bool json;
	json_t *tenants;     /* WAL: name -> {events, first_seq, last_seq, gaps} */
	json_t *records;     /* manifest: one object per record */
	uint64_t events;
	uint64_t bad_records;
};

static void wal_count_event(struct log_inspect *li, const struct fmt_event *ev)
{
	char name[FMT_TENANT_MAX + 1];
	memcpy(name, ev->tenant.ptr, ev->tenant.len);
	name[ev->tenant.len] = 0;
	json_t *t = json_object_get(li->tenants, name);
	if (!t) {
		t = json_pack("{sIsIsIsI}", "events", (json_int_t)0, "first_seq", (json_int_t)ev->seq,
			      "last_seq", (json_int_t)ev->seq - 1, "gaps", (json_int_t)0);
		json_object_set_new(li->tenants, name, t);
	}
	json_t *last = json_object_get(t, "last_seq");
	if (json_integer_value(last) + 1 != (json_int_t)ev->seq) {
		json_t *gaps = json_object_get(t, "gaps");
		json_integer_set(gaps, json_integer_value(gaps) + 1);
	}
	json_integer_set(last, (json_int_t)ev->seq);
	json_t *n = json_object_get(t, "events");
	json_integer_set(n, json_integer_value(n) + 1);
	li->events++;
}

static void wal_record(struct log_inspect *li, const struct fmt_rec *rec)
{
	struct fmt_attr attrs[FMT_ATTRS_HARD_MAX];
	uint32_t off = 0, n = 0, len;
	const uint8_t *canon;
	int rc;
	while ((rc = fmt_batch_next(rec, &off, &canon, &len)) == 1) {
		struct fmt_event ev;
		if ((rc = fmt_event_canon_decode(canon, len, &ev, attrs, FMT_ATTRS_HARD_MAX)) != 0 ||
		    !fmt_tenant_valid(ev.tenant))
			break;
		wal_count_event(li, &ev);
		n++;
	}
	if (rc != 0 || n != rec->count)
		li->bad_records++;
}

static json_t *manifest_entry_json(uint64_t offset, const struct fmt_rec *rec)
{
	struct eng_manifest_entry m;
	json_t *o = json_object();
	json_object_set_new(o, "offset", j_u64(offset));
	struct eng_manifest_export x;
	if (rec->kind == FMT_REC_EXPORT) {
		if (eng_manifest_export_decode(rec->payload, rec->payload_len, &x) != 0) {
			json_object_set_new(o, "kind", json_integer(rec->kind));
			json_object_set_new(o, "error", json_string("malformed export record"));
			return o;
		}
		json_object_set_new(o, "kind", json_string(x.kind == ENG_EXPORT_REPLICATE ? "replicated"
											   : "mirrored"));
		json_object_set_new(o, "tenant", json_string(x.tenant));
		json_object_set_new(o, "segment_id", j_hex64(x.segment_id));
		json_object_set_new(o, "at_ns", json_integer(x.at_ns));
		if (x.ref[0])
			json_object_set_new(o, "version_id", json_string(x.ref));
		return o;
	}
	if (rec->kind != FMT_REC_SEGMENT || eng_manifest_entry_decode(rec->payload, rec->payload_len, &m)) {
		json_object_set_new(o, "kind", json_integer(rec->kind));
		json_object_set_new(o, "error", json_string(rec->kind != FMT_REC_SEGMENT
							    ? "unsupported record kind"
							    : "malformed segment record"));
		return o;
	}
	json_object_set_new(o, "kind", json_string("segment"));
	json_object_set_new(o, "tenant", json_string(m.tenant));
	json_object_set_new(o, "segment_id", j_hex64(m.segment_id));
	json_object_set_new(o, "first_seq", j_u64(m.first_seq));
	json_object_set_new(o, "last_seq", j_u64(m.last_seq));
	json_object_set_new(o, "rows", json_integer(m.row_count));
	json_object_set_new(o, "file_size", j_u64(m.file_size));
	json_object_set_new(o, "file_checksum", j_hex64(m.file_checksum));
	json_object_set_new(o, "min_occurred_ns", json_integer(m.min_occurred_ns));
	json_object_set_new(o, "max_occurred_ns", json_integer(m.max_occurred_ns));
	json_object_set_new(o, "min_received_ns", json_integer(m.min_received_ns));
	json_object_set_new(o, "max_received_ns", json_integer(m.max_received_ns));
	json_object_set_new(o, "chain_before", j_hash(m.chain_before));
	json_object_set_new(o, "chain_after", j_hash(m.chain_after));
	json_object_set_new(o, "merkle_root", j_hash(m.merkle_root));
	return o;
}

static int log_visit(void *ctx, uint64_t offset, const struct fmt_rec *rec)
{
	struct log_inspect *li = ctx;
	if (li->wal) {
		if (rec->kind == FMT_REC_BATCH)
			wal_record(li, rec);
		else
			li->bad_records++;
		return 0;
	}
	json_t *o = manifest_entry_json(offset, rec);
	if (json_object_get(o, "error"))
		li->bad_records++;
	json_array_append_new(li->records, o);
	return 0;
}

/* How the scan ended, in words; *damage says whether it is a problem. */
static void scan_end_text(const struct fmt_log_scan *sc, char *out, size_t cap, bool *damage)
{
	*damage = sc->stop != 0 && sc->stop != FMT_E_TRUNCATED;
	if (sc->stop == 0)
		snprintf(out, cap, "clean");
	else if (sc->stop == FMT_E_TRUNCATED)
		snprintf(out, cap, "torn tail at offset %llu", (unsigned long long)sc->valid_end);
	else if (sc->stop == FMT_E_TOO_BIG)
		snprintf(out, cap, "record too big at offset %llu", (unsigned long long)sc->bad_offset);
	else
		snprintf(out, cap, "corrupt at offset %llu", (unsigned long long)sc->bad_offset);
}

static json_t *log_json(const char *path, size_t len, const struct fmt_log_scan *sc,
			struct log_inspect *li, const char *end)
{
	json_t *doc = json_object(), *h = json_object();
	json_object_set_new(doc, "file", json_string(path));
	json_object_set_new(doc, "type", json_string(li->wal ? "wal" : "manifest"));
	json_object_set_new(doc, "size", j_u64(len));
	json_object_set_new(h, "version", json_integer(sc->header.version));
	json_object_set_new(h, "shard", json_integer(sc->header.shard));
	if (li->wal) {
		json_object_set_new(h, "generation", j_u64(sc->header.generation));
		json_object_set_new(h, "recycled", json_boolean(sc->header.prev_salt != 0));
	}
	json_object_set_new(h, "created_ns", json_integer(sc->header.created_ns));
	json_object_set_new(doc, "header", h);
	json_object_set_new(doc, "records", j_u64(sc->records));
	json_object_set_new(doc, "bad_records", j_u64(li->bad_records));
	json_object_set_new(doc, "valid_end", j_u64(sc->valid_end));
	if (li->wal) {
		json_object_set_new(doc, "events", j_u64(li->events));
		json_object_set_new(doc, "tenants", json_incref(li->tenants));
	} else {
		json_object_set_new(doc, "segments", json_incref(li->records));
	}
	json_object_set_new(doc, "end", json_string(end));
	if (sc->stop)
		json_object_set_new(doc, "end_offset",
				    j_u64(sc->stop == FMT_E_TRUNCATED ? sc->valid_end : sc->bad_offset));
	return doc;
}

static void manifest_print_records(const json_t *records)
{
	size_t i;
	json_t *o;
	json_array_foreach(records, i, o) {
		long long off = (long long)json_integer_value(json_object_get(o, "offset"));
		if (json_object_get(o, "error")) {
			printf("@%lld: record kind %lld: %s\n", off,
			       (long long)json_integer_value(json_object_get(o, "kind")),
			       json_string_value(json_object_get(o, "error")));
			continue;
		}
		const char *kind = json_string_value(json_object_get(o, "kind"));
		if (strcmp(kind, "segment") != 0) {
			const char *ver = json_string_value(json_object_get(o, "version_id"));
			printf("@%lld: %s segment %s tenant %s%s%s\n", off, kind,
			       json_string_value(json_object_get(o, "segment_id")),
			       json_string_value(json_object_get(o, "tenant")), ver ? " version " : "",
			       ver ? ver : "");
			continue;
		}
		printf("@%lld: segment %s tenant %s seq %lld..%lld rows %lld size %lld checksum %s\n", off,
		       json_string_value(json_object_get(o, "segment_id")),
		       json_string_value(json_object_get(o, "tenant")),
		       (long long)json_integer_value(json_object_get(o, "first_seq")),
		       (long long)json_integer_value(json_object_get(o, "last_seq")),
		       (long long)json_integer_value(json_object_get(o, "rows")),
		       (long long)json_integer_value(json_object_get(o, "file_size")),
		       json_string_value(json_object_get(o, "file_checksum")));
		printf("    chain before %s\n", json_string_value(json_object_get(o, "chain_before")));
		printf("    chain after  %s\n", json_string_value(json_object_get(o, "chain_after")));
		printf("    merkle root  %s\n", json_string_value(json_object_get(o, "merkle_root")));
	}
}

static void log_print(const char *path, size_t len, const struct fmt_log_scan *sc,
		      const struct log_inspect *li, const char *end)
{
	char created[48];
	time_iso(sc->header.created_ns, created);
	printf("file:        %s\n", path);
	printf("type:        %s, format version %u%s\n", li->wal ? "WAL" : "manifest", sc->header.version,
	       sc->header.prev_salt ? ", recycled (the bytes after its records are from its "
				      "previous life)" : "");
	printf("shard:       %u\n", sc->header.shard);
	if (li->wal)
		printf("generation:  %llu\n", (unsigned long long)sc->header.generation);
	printf("created:     %s\n", created);
	printf("size:        %zu bytes (valid records end at offset %llu)\n", len,
	       (unsigned long long)sc->valid_end);
	if (li->wal) {
		printf("records:     %llu batches, %llu events\n", (unsigned long long)sc->records,
		       (unsigned long long)li->events);
		const char *name;
		json_t *t;
		json_object_foreach(li->tenants, name, t) {
			long long gaps = (long long)json_integer_value(json_object_get(t, "gaps"));
			printf("tenant %s: %lld events, seq %lld..%lld%s\n", name,
			       (long long)json_integer_value(json_object_get(t, "events")),
			       (long long)json_integer_value(json_object_get(t, "first_seq")),
			       (long long)json_integer_value(json_object_get(t, "last_seq")),
			       gaps ? " (with gaps)" : "");
		}
	} else {
		printf("records:     %llu\n", (unsigned long long)sc->records);
		manifest_print_records(li->records);
	}
	if (li->bad_records)
		printf("bad records: %llu (do not decode)\n", (unsigned long long)li->bad_records);
	printf("end:         %s\n", end);
}

static int inspect_log(const char *path, const uint8_t *buf, size_t len, bool json, bool wal)
{
	struct log_inspect li = { .wal = wal, .json = json, .tenants = json_object(),
				  .records = json_array() };
	struct fmt_log_scan sc;
	uint32_t max = wal ? (uint32_t)FMT_MIN(len, (size_t)UINT32_MAX) : MANIFEST_PAYLOAD_MAX;
	int rc = fmt_log_scan(buf, len, wal ? wal_magic : man_magic, max, log_visit, &li, &sc);
	int code = EXIT_INTACT;
	if (rc) {
		fprintf(stderr, "hodei-audit: %s: bad %s file header: %s\n", path,
			wal ? "WAL" : "manifest", fmt_strerror(rc));
		code = EXIT_PROBLEMS;
		goto out;
	}
	char end[96];
	bool damage;
	scan_end_text(&sc, end, sizeof(end), &damage);
	if (damage || li.bad_records)
		code = EXIT_PROBLEMS;
	if (json) {
		if (!j_print(log_json(path, len, &sc, &li, end), JSON_INDENT(2)))
			code = EXIT_UNREADABLE;
	} else {
		log_print(path, len, &sc, &li, end);
	}
out:
	json_decref(li.tenants);
	json_decref(li.records);
	return code;
}

static int cmd_inspect(int argc, char **argv)
{
	const char *path = NULL;
	bool json = false;
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = true;
		else if (argv[i][0] == '-' && argv[i][1] != 0)
			return usage_error("inspect: unknown flag %s", argv[i]);
		else if (path)
			return usage_error("inspect: one FILE only (got %s and %s)", path, argv[i]);
		else
			path = argv[i];
	}
	if (!path)
		return usage_error("inspect: missing FILE");
	uint8_t *buf = NULL;
	size_t len = 0;
	int rc = eng_file_read_all(path, &buf, &len);
	if (rc) {
		fprintf(stderr, "hodei-audit: cannot read %s: %s\n", path, strerror(-rc));
		return EXIT_UNREADABLE;
	}
	int code;
	if (len >= 8 && memcmp(buf, seg_magic, 8) == 0)
		code = inspect_segment(path, buf, len, json);
	else if (len >= 8 && memcmp(buf, wal_magic, 8) == 0)
		code = inspect_log(path, buf, len, json, true);
	else if (len >= 8 && memcmp(buf, man_magic, 8) == 0)
		code = inspect_log(path, buf, len, json, false);
	else {
		fprintf(stderr, "hodei-audit: %s: not a segment, WAL or manifest file (unknown magic)\n",
			path);
		code = EXIT_PROBLEMS;
	}
	free(buf);
	return code;
}

/* ---- verify ------------------------------------------------------------------ */

struct verify_out {
	bool json;
};

static void verify_print_json(const struct eng_offline_problem *p)
{
	json_t *o = json_object();
	bool info = p->severity == ENG_OFFLINE_INFO;
	json_object_set_new(o, "type", json_string(info ? "tenant" : "problem"));
	json_object_set_new(o, "severity", json_string(eng_offline_severity_name(p->severity)));
	json_object_set_new(o, "file", json_string(p->path));
	json_object_set_new(o, "tenant", json_string(p->tenant));
	if (info) {
		json_object_set_new(o, "last_seq", j_u64(p->last_seq));
		json_object_set_new(o, "sealed_seq", j_u64(p->sealed_seq));
		json_object_set_new(o, "problems", j_u64(p->tenant_problems));
		json_object_set_new(o, "chain_head", p->chain_known ? j_hash(p->chain) : json_null());
	} else {
		json_object_set_new(o, "seq", j_u64(p->seq));
		json_object_set_new(o, "offset", j_u64(p->offset));
	}
	json_object_set_new(o, "message", json_string(p->message));
	j_print(o, JSON_COMPACT);
}

static void verify_report(void *ctx, const struct eng_offline_problem *p)
{
	const struct verify_out *vo = ctx;
	if (vo->json) {
		verify_print_json(p);
		return;
	}
	if (p->severity == ENG_OFFLINE_INFO) {
		char h[2 * FMT_HASH_BYTES + 1];
		if (p->chain_known)
			printf("tenant %s (%s): %s; chain head %s\n", p->tenant, p->path, p->message,
			       hex_hash(p->chain, h));
		else
			printf("tenant %s (%s): %s\n", p->tenant, p->path, p->message);
		return;
	}
	char where[160] = "";
	size_t n = 0;
	if (p->tenant[0])
		n += (size_t)snprintf(where + n, sizeof(where) - n, ", tenant %s", p->tenant);
	if (p->seq)
		n += (size_t)snprintf(where + n, sizeof(where) - n, ", seq %llu", (unsigned long long)p->seq);
	if (p->offset && n < sizeof(where))
		snprintf(where + n, sizeof(where) - n, ", offset %llu", (unsigned long long)p->offset);
	printf("%s: %s%s: %s\n", eng_offline_severity_name(p->severity), p->path, where, p->message);
}

static void verify_summary(const struct eng_offline_summary *s, bool json)
{
	if (json) {
		j_print(json_pack("{sssbsIsIsIsIsIsIsI}", "type", "summary", "ok", s->ok,
				  "shards", (json_int_t)s->shards, "tenants", (json_int_t)s->tenants,
				  "segments", (json_int_t)s->segments, "events", (json_int_t)s->events,
				  "wal_files", (json_int_t)s->wal_files, "problems", (json_int_t)s->problems,
				  "warnings", (json_int_t)s->warnings),
			JSON_COMPACT);
		return;
	}
	printf("verify: %s: %u shards, %u tenants, %llu segments, %llu events, %llu WAL files "
	       "checked; %llu problems, %llu warnings\n",
	       s->ok ? "intact" : "PROBLEMS FOUND", s->shards, s->tenants,
	       (unsigned long long)s->segments, (unsigned long long)s->events,
	       (unsigned long long)s->wal_files, (unsigned long long)s->problems,
	       (unsigned long long)s->warnings);
}

static int cmd_verify(int argc, char **argv)
{
	const char *dir = NULL;
	struct verify_out vo = { .json = false };
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			vo.json = true;
		else if (strncmp(argv[i], "--data-dir=", 11) == 0)
			dir = argv[i] + 11;
		else if (strcmp(argv[i], "--data-dir") == 0) {
			if (i + 1 >= argc)
				return usage_error("verify: --data-dir needs a directory");
			dir = argv[++i];
		} else
			return usage_error("verify: unknown argument %s", argv[i]);
	}
	if (!dir || !*dir)
		return usage_error("verify: missing --data-dir DIR");
	struct eng_offline_summary sum;
	int rc = eng_verify_dir(dir, verify_report, &vo, &sum);
	fflush(stdout);
	if (rc == FMT_E_NOT_FOUND) {
		fprintf(stderr, "hodei-audit: %s: no shard-NNN directories: not a hodei-audit data directory\n",
			dir);
		return EXIT_UNREADABLE;
	}
	if (rc) {
		fprintf(stderr, "hodei-audit: cannot verify %s: %s\n", dir, fmt_strerror(rc));
		return EXIT_UNREADABLE;
	}
	verify_summary(&sum, vo.json);
	return sum.ok ? EXIT_INTACT : EXIT_PROBLEMS;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return usage_error("missing COMMAND");
	const char *cmd = argv[1];
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h") || (i == 1 && !strcmp(cmd, "help"))) {
			print_usage(stdout);
			return EXIT_INTACT;
		}
	}
	int code;
	if (!strcmp(cmd, "inspect"))
		code = cmd_inspect(argc, argv);
	else if (!strcmp(cmd, "verify"))
		code = cli_verify_is_remote(argc, argv) ? cli_verify_remote(argc, argv)
							: cmd_verify(argc, argv);
	else if (!strcmp(cmd, "append"))
		code = cli_append(argc, argv);
	else if (!strcmp(cmd, "search"))
		code = cli_search(argc, argv);
	else if (!strcmp(cmd, "tail"))
		code = cli_tail(argc, argv);
	else if (!strcmp(cmd, "count"))
		code = cli_count(argc, argv);
	else if (!strcmp(cmd, "health"))
		code = cli_health(argc, argv);
	else if (!strcmp(cmd, "keys"))
		code = cli_keys(argc, argv);
	else if (!strcmp(cmd, "s3"))
		code = cli_s3(argc, argv);
	else if (!strcmp(cmd, "clickhouse"))
		code = cli_clickhouse(argc, argv);
	else
		return usage_error("unknown command '%s'", cmd);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "hodei-audit: writing the output failed: %s\n", strerror(errno));
		return code == EXIT_INTACT ? EXIT_UNREADABLE : code;
	}
	return code;
}
