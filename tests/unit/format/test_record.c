// SPDX-License-Identifier: Apache-2.0
/*
 * test_record.c — format/record.c: file headers, checksummed records, batch
 * payloads and the scan that recovery runs over a whole WAL or manifest.
 *
 * Every image under test lives in a heap buffer of exactly its length, so
 * AddressSanitizer reports any read past the end of the "file".
 *
 * With HODEI_WRITE_CORPUS=<dir> set, the test corpus.write also writes the
 * seed corpus of tests/fuzz/fuzz_wal.c into <dir> (valid images, a torn
 * one, a damaged one); without it, that test does nothing.
 */
#include <criterion/criterion.h>

#include "format/event.h"
#include "format/record.h"

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#define PAYLOAD_MAX (1u << 20)

/* ---- a tiny in-memory log writer ------------------------------------------ */

struct img {
	uint8_t buf[1 << 16];
	size_t len;
	uint64_t rec_off[64]; /* where each record starts */
	uint32_t recs;
	uint64_t seed;        /* the records' seed: the header's salt */
	size_t file_len;      /* a recycled image: its bytes, old ones included */
};

static void img_header(struct img *im, const char magic[8])
{
	struct fmt_file_header h;
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, magic, 8);
	h.version = FMT_FILE_VERSION;
	h.shard = 3;
	h.generation = 7;
	h.created_ns = 1700000000000000000LL;
	memset(im, 0, sizeof(*im));
	fmt_file_header_encode(&h, im->buf);
	im->len = FMT_FILE_HEADER_BYTES;
}

static void img_rec(struct img *im, uint16_t kind, uint16_t count, uint64_t seq,
		    const uint8_t *payload, uint32_t payload_len)
{
	ASSERT(im->len + FMT_REC_HEADER_BYTES + payload_len <= sizeof(im->buf));
	ASSERT(im->recs < FMT_ARRAY_LEN(im->rec_off));
	im->rec_off[im->recs++] = im->len;
	fmt_rec_header_encode(im->buf + im->len, kind, count, seq, payload, payload_len, im->seed);
	if (payload_len)
		memcpy(im->buf + im->len + FMT_REC_HEADER_BYTES, payload, payload_len);
	im->len += FMT_REC_HEADER_BYTES + payload_len;
}

static void salted_header(uint8_t *out, uint64_t salt, uint64_t prev)
{
	struct fmt_file_header h = { .magic = { 'H', 'O', 'D', 'E', 'I', 'W', 'A', 'L' },
				     .version = FMT_FILE_VERSION_SALTED, .shard = 3, .generation = 9,
				     .created_ns = 1700000000000000000LL, .salt = salt,
				     .prev_salt = prev };
	fmt_file_header_encode(&h, out);
}

/* An empty salted WAL image. */
static void img_salted(struct img *im, uint64_t salt)
{
	memset(im, 0, sizeof(*im));
	salted_header(im->buf, salt, 0);
	im->len = FMT_FILE_HEADER_BYTES;
	im->seed = salt;
}

/* Recycles the image as the engine does a WAL file: a new header with a
 * new salt and the old one as prev_salt, the old bytes left in place
 * behind it, and new records written from the start again. */
static void img_recycle(struct img *im, uint64_t salt)
{
	im->file_len = FMT_MAX(im->file_len, im->len);
	salted_header(im->buf, salt, im->seed);
	im->seed = salt;
	im->len = FMT_FILE_HEADER_BYTES;
	im->recs = 0;
}

/* A batch payload of `count` canonical events of tenant "acme" from seq. */
static uint32_t make_batch(uint8_t *out, size_t cap, uint64_t seq, uint16_t count)
{
	static const struct fmt_attr attrs[2] = {
		{ { "ip.country", 10 }, { "ES", 2 } },
		{ { "r\xc3\xa9gion", 7 }, { "\xe2\x82\xacuro", 6 } },
	};
	size_t len = 0;
	for (uint16_t i = 0; i < count; i++) {
		struct fmt_event ev;
		memset(&ev, 0, sizeof(ev));
		for (int b = 0; b < 16; b++)
			ev.event_id[b] = (uint8_t)(seq + i + b);
		ev.tenant = fmt_str_c("acme");
		ev.seq = seq + i;
		ev.received_at_ns = 1700000000000000000LL + (int64_t)(seq + i);
		ev.occurred_at_ns = 1699999999000000000LL;
		ev.outcome = (uint32_t)((seq + i) % 4);
		ev.str[FMT_F_ACTOR_ID] = fmt_str_c("alice");
		ev.str[FMT_F_ACTOR_TYPE] = fmt_str_c("user");
		ev.str[FMT_F_ACTION] = (i % 2) ? fmt_str_c("document.read") : fmt_str_c("login");
		ev.str[FMT_F_SOURCE_IP] = (i % 2) ? fmt_str_c("2001:db8::1") : fmt_str_c("192.0.2.7");
		ev.str[FMT_F_TRACE_ID] = fmt_str_c("4bf92f3577b34da6a3ce929d0e0e4736");
		ev.attrs = attrs;
		ev.attr_count = i % 3;
		ev.details_json = (i % 2) ? fmt_str_c("{\"n\":1}") : fmt_str_c("");
		size_t n = fmt_event_canon_size(&ev);
		ASSERT(len + 4 + n <= cap);
		fmt_put_u32(out + len, (uint32_t)n);
		ASSERT(fmt_event_canon_encode(&ev, out + len + 4, cap - len - 4) == (int64_t)n);
		len += 4 + n;
	}
	return (uint32_t)len;
}

/* A WAL image of `batches` batch records, 3 events each. */
static void make_wal(struct img *im, uint32_t batches)
{
	uint8_t payload[4096];
	img_header(im, "HODEIWAL");
	for (uint32_t b = 0; b < batches; b++) {
		uint32_t n = make_batch(payload, sizeof(payload), 1 + 3 * b, 3);
		img_rec(im, FMT_REC_BATCH, 3, 1 + 3 * b, payload, n);
	}
}

/* An exact-size heap copy of the first len bytes of an image. */
static uint8_t *exact(const uint8_t *buf, size_t len)
{
	uint8_t *p = malloc(len ? len : 1);
	cr_assert_not_null(p);
	memcpy(p, buf, len);
	return p;
}

/* ---- file header -------------------------------------------------------- */

Test(record_file_header, round_trip)
{
	struct fmt_file_header h = { .magic = { 'H', 'O', 'D', 'E', 'I', 'M', 'A', 'N' },
				     .version = FMT_FILE_VERSION, .shard = 0xdeadbeef,
				     .generation = UINT64_MAX - 1, .created_ns = -5 };
	uint8_t buf[FMT_FILE_HEADER_BYTES];
	fmt_file_header_encode(&h, buf);
	cr_assert(memcmp(buf, "HODEIMAN", 8) == 0);
	for (int i = 32; i < 56; i++)
		cr_assert_eq(buf[i], 0, "reserved byte %d", i);
	cr_assert_eq(fmt_get_u64(buf + 56), fmt_xxh3(buf, 56));
	struct fmt_file_header back;
	cr_assert_eq(fmt_file_header_decode(buf, sizeof(buf), &back), 0);
	cr_assert(memcmp(back.magic, h.magic, 8) == 0);
	cr_assert_eq(back.version, h.version);
	cr_assert_eq(back.shard, h.shard);
	cr_assert_eq(back.generation, h.generation);
	cr_assert_eq(back.created_ns, h.created_ns);
}

Test(record_file_header, every_bit_flip_detected)
{
	struct img im;
	img_header(&im, "HODEIWAL");
	for (int bit = 0; bit < FMT_FILE_HEADER_BYTES * 8; bit++) {
		uint8_t *p = exact(im.buf, FMT_FILE_HEADER_BYTES);
		p[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		struct fmt_file_header h;
		cr_assert_eq(fmt_file_header_decode(p, FMT_FILE_HEADER_BYTES, &h), FMT_E_CORRUPT,
			     "bit %d", bit);
		free(p);
	}
}

Test(record_file_header, truncated)
{
	struct img im;
	img_header(&im, "HODEIWAL");
	for (size_t k = 0; k < FMT_FILE_HEADER_BYTES; k++) {
		uint8_t *p = exact(im.buf, k);
		struct fmt_file_header h;
		cr_assert_eq(fmt_file_header_decode(p, k, &h), FMT_E_TRUNCATED, "%zu bytes", k);
		free(p);
	}
}

Test(record_file_header, salted_round_trip)
{
	uint8_t buf[FMT_FILE_HEADER_BYTES];
	salted_header(buf, 0x0123456789abcdefull, UINT64_MAX);
	struct fmt_file_header back;
	cr_assert_eq(fmt_file_header_decode(buf, sizeof(buf), &back), 0);
	cr_assert_eq(back.version, FMT_FILE_VERSION_SALTED);
	cr_assert_eq(back.salt, 0x0123456789abcdefull);
	cr_assert_eq(back.prev_salt, UINT64_MAX);
	cr_assert_eq(back.generation, 9);
	for (int i = 48; i < 56; i++)
		cr_assert_eq(buf[i], 0, "reserved byte %d", i);
	/* A version 2 header without a salt, or with a reserved byte set. */
	salted_header(buf, 0, 5);
	cr_assert_eq(fmt_file_header_decode(buf, sizeof(buf), &back), FMT_E_CORRUPT);
	salted_header(buf, 7, 0);
	buf[50] = 1;
	fmt_put_u64(buf + 56, fmt_xxh3(buf, 56));
	cr_assert_eq(fmt_file_header_decode(buf, sizeof(buf), &back), FMT_E_CORRUPT);
	/* A version 1 header reads salts of 0, whatever the struct held. */
	struct fmt_file_header h = { .magic = { 'H', 'O', 'D', 'E', 'I', 'W', 'A', 'L' },
				     .version = FMT_FILE_VERSION, .salt = 3, .prev_salt = 4 };
	fmt_file_header_encode(&h, buf);
	cr_assert_eq(fmt_file_header_decode(buf, sizeof(buf), &back), 0);
	cr_assert_eq(back.salt, 0);
	cr_assert_eq(back.prev_salt, 0);
}

Test(record_file_header, wrong_version)
{
	static const uint32_t versions[] = { 0, 3, UINT32_MAX };
	for (size_t i = 0; i < FMT_ARRAY_LEN(versions); i++) {
		struct fmt_file_header h = { .magic = { 'H', 'O', 'D', 'E', 'I', 'W', 'A', 'L' },
					     .version = versions[i] };
		uint8_t buf[FMT_FILE_HEADER_BYTES];
		fmt_file_header_encode(&h, buf);
		struct fmt_file_header back;
		cr_assert_eq(fmt_file_header_decode(buf, sizeof(buf), &back), FMT_E_VERSION);
	}
}

Test(record_file_header, reserved_must_be_zero)
{
	struct img im;
	img_header(&im, "HODEIWAL");
	im.buf[40] = 1;
	fmt_put_u64(im.buf + 56, fmt_xxh3(im.buf, 56)); /* a valid checksum over it */
	struct fmt_file_header h;
	cr_assert_eq(fmt_file_header_decode(im.buf, FMT_FILE_HEADER_BYTES, &h), FMT_E_CORRUPT);
}

/* ---- records ------------------------------------------------------------ */

static const uint8_t small_payload[40] = "0123456789abcdefghijklmnopqrstuvwxyzABCD";

/* One record (kind BATCH, count 2, seq 1000) with small_payload, at buf. */
static size_t one_record(uint8_t *buf)
{
	fmt_rec_header_encode(buf, FMT_REC_BATCH, 2, 1000, small_payload, sizeof(small_payload), 0);
	memcpy(buf + FMT_REC_HEADER_BYTES, small_payload, sizeof(small_payload));
	return FMT_REC_HEADER_BYTES + sizeof(small_payload);
}

Test(record_rec, round_trip)
{
	uint8_t tmp[128];
	size_t n = one_record(tmp);
	uint8_t *buf = exact(tmp, n);
	struct fmt_rec rec;
	cr_assert_eq(fmt_rec_decode(buf, n, PAYLOAD_MAX, 0, &rec), (int64_t)n);
	cr_assert_eq(rec.kind, FMT_REC_BATCH);
	cr_assert_eq(rec.count, 2);
	cr_assert_eq(rec.seq, 1000);
	cr_assert_eq(rec.payload_len, sizeof(small_payload));
	cr_assert_eq(rec.payload, buf + FMT_REC_HEADER_BYTES);
	cr_assert(memcmp(rec.payload, small_payload, sizeof(small_payload)) == 0);
	cr_assert_eq(fmt_get_u32(buf), sizeof(small_payload));
	cr_assert_eq(fmt_get_u16(buf + 4), FMT_REC_BATCH);
	/* More bytes after the record do not change it. */
	free(buf);
	memset(tmp + n, 0x5a, 24);
	cr_assert_eq(fmt_rec_decode(tmp, n + 24, PAYLOAD_MAX, 0, &rec), (int64_t)n);

	/* Empty payload, other kinds, extreme header values. */
	uint8_t hdr[FMT_REC_HEADER_BYTES];
	fmt_rec_header_encode(hdr, FMT_REC_REMOVE, UINT16_MAX, UINT64_MAX, NULL, 0, 0);
	buf = exact(hdr, sizeof(hdr));
	cr_assert_eq(fmt_rec_decode(buf, sizeof(hdr), 0, 0, &rec), FMT_REC_HEADER_BYTES);
	cr_assert_eq(rec.kind, FMT_REC_REMOVE);
	cr_assert_eq(rec.count, UINT16_MAX);
	cr_assert_eq(rec.seq, UINT64_MAX);
	cr_assert_eq(rec.payload_len, 0);
	free(buf);
}

Test(record_rec, every_bit_flip_detected)
{
	uint8_t tmp[128];
	size_t n = one_record(tmp);
	for (size_t bit = 0; bit < n * 8; bit++) {
		uint8_t *p = exact(tmp, n);
		p[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		struct fmt_rec rec;
		int64_t rc = fmt_rec_decode(p, n, PAYLOAD_MAX, 0, &rec);
		cr_assert_lt(rc, 0, "bit %zu flipped: %lld", bit, (long long)rc);
		free(p);
	}
}

Test(record_rec, truncated)
{
	uint8_t tmp[128];
	size_t n = one_record(tmp);
	/* The first byte (payload_len 40) is non-zero, so every cut is torn. */
	for (size_t k = 1; k < n; k++) {
		uint8_t *p = exact(tmp, k);
		struct fmt_rec rec;
		cr_assert_eq(fmt_rec_decode(p, k, PAYLOAD_MAX, 0, &rec), FMT_E_TRUNCATED, "%zu", k);
		free(p);
	}
	struct fmt_rec rec;
	cr_assert_eq(fmt_rec_decode(tmp, 0, PAYLOAD_MAX, 0, &rec), 0, "no bytes: end of data");
}

/* fmt_rec_peek: the header check alone. A good record reads as decode
 * reads it; a flipped header bit or a cut record reads as 0; a flipped
 * payload bit passes (the payload is not checked: decode's job). */
Test(record_rec, peek_checks_the_header_only)
{
	uint8_t tmp[128];
	size_t n = one_record(tmp);
	uint8_t *buf = exact(tmp, n);
	struct fmt_rec rec;
	cr_assert_eq(fmt_rec_peek(buf, n, PAYLOAD_MAX, 0, &rec), (int64_t)n);
	cr_assert_eq(rec.kind, FMT_REC_BATCH);
	cr_assert_eq(rec.count, 2);
	cr_assert_eq(rec.seq, 1000);
	cr_assert_eq(rec.payload, buf + FMT_REC_HEADER_BYTES);
	cr_assert_eq(rec.payload_len, sizeof(small_payload));
	cr_assert_eq(fmt_rec_peek(buf, n, sizeof(small_payload) - 1, 0, &rec), 0, "over payload_max");
	free(buf);
	for (size_t k = 0; k < n; k++) {
		uint8_t *p = exact(tmp, k);
		cr_assert_eq(fmt_rec_peek(p, k, PAYLOAD_MAX, 0, &rec), 0, "cut at %zu", k);
		free(p);
	}
	for (size_t bit = 0; bit < n * 8; bit++) {
		uint8_t *p = exact(tmp, n);
		p[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		int64_t got = fmt_rec_peek(p, n, PAYLOAD_MAX, 0, &rec);
		if (bit < FMT_REC_HEADER_BYTES * 8)
			cr_assert_eq(got, 0, "header bit %zu flipped", bit);
		else
			cr_assert_eq(got, (int64_t)n, "payload bit %zu flipped", bit);
		free(p);
	}
	uint8_t zeros[FMT_REC_HEADER_BYTES] = { 0 };
	cr_assert_eq(fmt_rec_peek(zeros, sizeof(zeros), PAYLOAD_MAX, 0, &rec), 0);
}

Test(record_rec, zero_header_is_end)
{
	uint8_t zeros[64] = { 0 };
	struct fmt_rec rec;
	for (size_t k = 0; k <= sizeof(zeros); k++) {
		uint8_t *p = exact(zeros, k);
		cr_assert_eq(fmt_rec_decode(p, k, PAYLOAD_MAX, 0, &rec), 0, "%zu zero bytes", k);
		free(p);
	}
	/* One non-zero byte in the header makes it a bad record, not an end. */
	for (int i = 0; i < FMT_REC_HEADER_BYTES; i++) {
		zeros[i] = 1;
		cr_assert_lt(fmt_rec_decode(zeros, sizeof(zeros), PAYLOAD_MAX, 0, &rec), 0, "%d", i);
		zeros[i] = 0;
	}
}

Test(record_rec, kind_zero_corrupt)
{
	uint8_t tmp[128];
	size_t n = one_record(tmp);
	fmt_put_u16(tmp + 4, 0);
	struct fmt_rec rec;
	cr_assert_eq(fmt_rec_decode(tmp, n, PAYLOAD_MAX, 0, &rec), FMT_E_CORRUPT);
}

Test(record_rec, payload_max)
{
	uint8_t tmp[128];
	size_t n = one_record(tmp);
	struct fmt_rec rec;
	cr_assert_eq(fmt_rec_decode(tmp, n, sizeof(small_payload), 0, &rec), (int64_t)n);
	cr_assert_eq(fmt_rec_decode(tmp, n, sizeof(small_payload) - 1, 0, &rec), FMT_E_TOO_BIG);
	cr_assert_eq(fmt_rec_decode(tmp, n, 0, 0, &rec), FMT_E_TOO_BIG);
}

/* ---- batch payloads ------------------------------------------------------ */

Test(record_batch, iterate_and_decode)
{
	uint8_t payload[4096];
	uint32_t len = make_batch(payload, sizeof(payload), 10, 5);
	uint8_t *p = exact(payload, len);
	struct fmt_rec rec = { .kind = FMT_REC_BATCH, .count = 5, .seq = 10, .payload = p,
			       .payload_len = len };
	uint32_t off = 0;
	const uint8_t *ev;
	uint32_t ev_len;
	struct fmt_attr attrs[FMT_ATTRS_HARD_MAX];
	struct fmt_limits lim;
	fmt_limits_default(&lim);
	uint32_t seen = 0;
	int rc;
	while ((rc = fmt_batch_next(&rec, &off, &ev, &ev_len)) == 1) {
		struct fmt_event e;
		cr_assert_eq(fmt_event_canon_decode(ev, ev_len, &e, attrs, FMT_ATTRS_HARD_MAX), 0);
		cr_assert_eq(e.seq, 10 + seen);
		cr_assert(fmt_str_eq(e.tenant, fmt_str_c("acme")));
		cr_assert_eq(fmt_event_validate(&e, &lim, NULL), 0);
		seen++;
		cr_assert_leq(seen, 5);
	}
	cr_assert_eq(rc, 0);
	cr_assert_eq(seen, 5);
	cr_assert_eq(off, len);
	cr_assert_eq(fmt_batch_next(&rec, &off, &ev, &ev_len), 0, "stays at the end");
	free(p);

	struct fmt_rec empty = { .kind = FMT_REC_BATCH };
	off = 0;
	cr_assert_eq(fmt_batch_next(&empty, &off, &ev, &ev_len), 0);
}

Test(record_batch, corrupt_lengths)
{
	uint8_t payload[4096];
	uint32_t len = make_batch(payload, sizeof(payload), 1, 2);
	const uint8_t *ev;
	uint32_t ev_len, off;

	/* The first length runs one byte past the payload. */
	uint32_t first = fmt_get_u32(payload);
	fmt_put_u32(payload, len - 4 + 1);
	uint8_t *p = exact(payload, len);
	struct fmt_rec rec = { .kind = FMT_REC_BATCH, .payload = p, .payload_len = len };
	off = 0;
	cr_assert_eq(fmt_batch_next(&rec, &off, &ev, &ev_len), FMT_E_CORRUPT);
	fmt_put_u32(p, UINT32_MAX);
	off = 0;
	cr_assert_eq(fmt_batch_next(&rec, &off, &ev, &ev_len), FMT_E_CORRUPT);
	/* Exactly the rest of the payload is fine. */
	fmt_put_u32(p, len - 4);
	off = 0;
	cr_assert_eq(fmt_batch_next(&rec, &off, &ev, &ev_len), 1);
	cr_assert_eq(ev_len, len - 4);
	cr_assert_eq(fmt_batch_next(&rec, &off, &ev, &ev_len), 0);
	free(p);

	/* 1 to 3 stray bytes after the last event: no room for a length. */
	fmt_put_u32(payload, first);
	for (uint32_t extra = 1; extra <= 3; extra++) {
		payload[len + extra - 1] = 0;
		p = exact(payload, len + extra);
		rec.payload = p;
		rec.payload_len = len + extra;
		off = 0;
		int rc;
		int events = 0;
		while ((rc = fmt_batch_next(&rec, &off, &ev, &ev_len)) == 1)
			events++;
		cr_assert_eq(events, 2);
		cr_assert_eq(rc, FMT_E_CORRUPT, "%u stray bytes", extra);
		free(p);
	}
}

/* ---- log scan -------------------------------------------------------------- */

struct visits {
	uint32_t n;
	uint64_t off[64];
	uint64_t seq[64];
	uint32_t stop_at; /* 1-based visit that returns stop_rc; 0 = never */
	int stop_rc;
};

static int visit(void *ctx, uint64_t offset, const struct fmt_rec *rec)
{
	struct visits *v = ctx;
	ASSERT(v->n < FMT_ARRAY_LEN(v->off));
	v->off[v->n] = offset;
	v->seq[v->n] = rec->seq;
	v->n++;
	if (v->stop_at && v->n == v->stop_at)
		return v->stop_rc;
	return 0;
}

static int scan(const uint8_t *buf, size_t len, struct visits *v, struct fmt_log_scan *out)
{
	uint8_t *p = exact(buf, len);
	int rc = fmt_log_scan(p, len, "HODEIWAL", PAYLOAD_MAX, visit, v, out);
	free(p);
	return rc;
}

Test(record_scan, clean_file)
{
	static struct img im;
	make_wal(&im, 4);
	struct visits v = { 0 };
	struct fmt_log_scan out;
	cr_assert_eq(scan(im.buf, im.len, &v, &out), 0);
	cr_assert_eq(out.stop, 0);
	cr_assert_eq(out.records, 4);
	cr_assert_eq(out.valid_end, im.len);
	cr_assert_eq(out.header.shard, 3);
	cr_assert_eq(out.header.generation, 7);
	cr_assert_eq(v.n, 4);
	for (uint32_t i = 0; i < 4; i++) {
		cr_assert_eq(v.off[i], im.rec_off[i]);
		cr_assert_eq(v.seq[i], 1 + 3 * i);
	}

	/* A header and nothing else; and no visitor at all. */
	memset(&v, 0, sizeof(v));
	cr_assert_eq(scan(im.buf, FMT_FILE_HEADER_BYTES, &v, &out), 0);
	cr_assert_eq(out.stop, 0);
	cr_assert_eq(out.records, 0);
	cr_assert_eq(out.valid_end, FMT_FILE_HEADER_BYTES);
	cr_assert_eq(fmt_log_scan(im.buf, im.len, "HODEIWAL", PAYLOAD_MAX, NULL, NULL, &out), 0);
	cr_assert_eq(out.records, 4);
}

Test(record_scan, zero_filled_tail)
{
	static struct img im;
	make_wal(&im, 3);
	size_t end = im.len;
	static const size_t tails[] = { 1, 5, 23, 24, 25, 4096 };
	for (size_t i = 0; i < FMT_ARRAY_LEN(tails); i++) {
		memset(im.buf + end, 0, tails[i]);
		struct visits v = { 0 };
		struct fmt_log_scan out;
		cr_assert_eq(scan(im.buf, end + tails[i], &v, &out), 0);
		cr_assert_eq(out.stop, 0, "tail %zu", tails[i]);
		cr_assert_eq(out.records, 3);
		cr_assert_eq(out.valid_end, end);
		cr_assert_eq(v.n, 3);
	}
}

Test(record_scan, torn_tail_every_length)
{
	static struct img im;
	make_wal(&im, 3);
	uint64_t last = im.rec_off[2];
	cr_assert_neq(im.buf[last], 0, "a torn header must show a non-zero byte");
	for (size_t cut = last + 1; cut < im.len; cut++) {
		/* The torn tail as the file ends, and with a preallocated zero
		 * tail behind it. */
		for (int zero_tail = 0; zero_tail < 2; zero_tail++) {
			static uint8_t tmp[1 << 16];
			size_t len = cut + (zero_tail ? 4096 : 0);
			memcpy(tmp, im.buf, cut);
			memset(tmp + cut, 0, len - cut);
			struct visits v = { 0 };
			struct fmt_log_scan out;
			cr_assert_eq(scan(tmp, len, &v, &out), 0);
			if (zero_tail && memcmp(tmp, im.buf, im.len) == 0) {
				/* Only zero bytes were cut (the last event ends
				 * with an empty details_json): the zero tail
				 * restores them and the record is whole. */
				cr_assert_eq(out.stop, 0);
				cr_assert_eq(out.records, 3);
				continue;
			}
			cr_assert_eq(out.stop, FMT_E_TRUNCATED, "cut at %zu (+%d): %d", cut, zero_tail,
				     out.stop);
			cr_assert_eq(out.valid_end, last);
			cr_assert_eq(out.bad_offset, last);
			cr_assert_eq(out.records, 2);
			cr_assert_eq(v.n, 2);
		}
	}
}

Test(record_scan, corrupt_middle)
{
	static struct img im;
	make_wal(&im, 4);
	/* Damage the second record's payload, its header, or its checksum. */
	const size_t where[] = { im.rec_off[1] + FMT_REC_HEADER_BYTES + 7, im.rec_off[1] + 0,
				 im.rec_off[1] + 4, im.rec_off[1] + 8, im.rec_off[1] + 17 };
	for (size_t i = 0; i < FMT_ARRAY_LEN(where); i++) {
		static uint8_t tmp[1 << 16];
		memcpy(tmp, im.buf, im.len);
		tmp[where[i]] ^= 0x10;
		struct visits v = { 0 };
		struct fmt_log_scan out;
		cr_assert_eq(scan(tmp, im.len, &v, &out), 0);
		cr_assert_eq(out.stop, FMT_E_CORRUPT, "byte %zu: %d", where[i], out.stop);
		cr_assert_eq(out.bad_offset, im.rec_off[1]);
		cr_assert_eq(out.valid_end, im.rec_off[1]);
		cr_assert_eq(out.records, 1);
		cr_assert_eq(v.n, 1);
	}
	/* Damage only in the last record, with nothing after it, is a torn tail. */
	static uint8_t tmp[1 << 16];
	memcpy(tmp, im.buf, im.len);
	tmp[im.rec_off[3] + FMT_REC_HEADER_BYTES + 3] ^= 1;
	struct visits v = { 0 };
	struct fmt_log_scan out;
	cr_assert_eq(scan(tmp, im.len, &v, &out), 0);
	cr_assert_eq(out.stop, FMT_E_TRUNCATED);
	cr_assert_eq(out.valid_end, im.rec_off[3]);
}

/* A zeroed record (lost pages) with valid records after it is damage in the
 * middle, not a clean end: stopping quietly there would drop the records
 * after it. */
Test(record_scan, zero_hole_in_middle)
{
	static struct img im;
	make_wal(&im, 4);
	static uint8_t tmp[1 << 16];
	memcpy(tmp, im.buf, im.len);
	memset(tmp + im.rec_off[1], 0, im.rec_off[2] - im.rec_off[1]);
	struct visits v = { 0 };
	struct fmt_log_scan out;
	cr_assert_eq(scan(tmp, im.len, &v, &out), 0);
	cr_assert_eq(out.stop, FMT_E_CORRUPT);
	cr_assert_eq(out.bad_offset, im.rec_off[1]);
	cr_assert_eq(out.valid_end, im.rec_off[1]);
	cr_assert_eq(out.records, 1);
}

Test(record_scan, visitor_stop)
{
	static struct img im;
	make_wal(&im, 4);
	struct visits v = { .stop_at = 2, .stop_rc = -ENOSPC };
	struct fmt_log_scan out;
	cr_assert_eq(scan(im.buf, im.len, &v, &out), -ENOSPC);
	cr_assert_eq(v.n, 2);
	cr_assert_eq(out.records, 1, "the refused record is not counted");
	cr_assert_eq(out.valid_end, im.rec_off[1]);
	v = (struct visits){ .stop_at = 1, .stop_rc = 5 };
	cr_assert_eq(scan(im.buf, im.len, &v, &out), 5);
}

Test(record_scan, header_problems)
{
	static struct img im;
	make_wal(&im, 2);
	struct visits v = { 0 };
	struct fmt_log_scan out;
	/* Wrong magic, with a valid checksum. */
	static struct img man;
	img_header(&man, "HODEIMAN");
	memcpy(man.buf + FMT_FILE_HEADER_BYTES, im.buf + FMT_FILE_HEADER_BYTES,
	       im.len - FMT_FILE_HEADER_BYTES);
	cr_assert_eq(scan(man.buf, im.len, &v, &out), FMT_E_CORRUPT);
	cr_assert_eq(v.n, 0);
	/* Too short for a header. */
	cr_assert_eq(scan(im.buf, FMT_FILE_HEADER_BYTES - 1, &v, &out), FMT_E_TRUNCATED);
	cr_assert_eq(scan(im.buf, 0, &v, &out), FMT_E_TRUNCATED);
	/* A damaged header. */
	im.buf[9] ^= 1;
	cr_assert_eq(scan(im.buf, im.len, &v, &out), FMT_E_CORRUPT);
	cr_assert_eq(v.n, 0);
}

Test(record_scan, too_big)
{
	static struct img im;
	uint8_t payload[4096];
	img_header(&im, "HODEIWAL");
	img_rec(&im, FMT_REC_SEGMENT, 0, 0, (const uint8_t *)"small", 5);
	uint32_t n = make_batch(payload, sizeof(payload), 1, 3);
	img_rec(&im, FMT_REC_BATCH, 3, 1, payload, n);
	img_rec(&im, FMT_REC_BATCH, 3, 4, payload, n);
	uint8_t *p = exact(im.buf, im.len);
	struct visits v = { 0 };
	struct fmt_log_scan out;
	cr_assert_eq(fmt_log_scan(p, im.len, "HODEIWAL", n - 1, visit, &v, &out), 0);
	cr_assert_eq(out.stop, FMT_E_TOO_BIG);
	cr_assert_eq(out.bad_offset, im.rec_off[1]);
	cr_assert_eq(out.valid_end, im.rec_off[1]);
	cr_assert_eq(out.records, 1);
	cr_assert_eq(fmt_log_scan(p, im.len, "HODEIWAL", n, visit, &v, &out), 0);
	cr_assert_eq(out.stop, 0);
	cr_assert_eq(out.records, 3);
	free(p);
}

/* ---- salted and recycled files (ADR 0016) ---------------------------------- */

#define SALT_OLD 0x5a17000000000001ull
#define SALT_NEW 0x5a17000000000002ull

/* A record encoded under one seed fails both checks under any other. */
Test(record_seed, checks_bind_the_seed)
{
	static const uint64_t seeds[] = { 0, 1, SALT_OLD, SALT_NEW, UINT64_MAX };
	uint8_t buf[FMT_REC_HEADER_BYTES + sizeof(small_payload)];
	memcpy(buf + FMT_REC_HEADER_BYTES, small_payload, sizeof(small_payload));
	for (size_t i = 0; i < FMT_ARRAY_LEN(seeds); i++) {
		fmt_rec_header_encode(buf, FMT_REC_BATCH, 2, 1000, buf + FMT_REC_HEADER_BYTES,
				      sizeof(small_payload), seeds[i]);
		for (size_t j = 0; j < FMT_ARRAY_LEN(seeds); j++) {
			struct fmt_rec rec;
			int64_t want = i == j ? (int64_t)sizeof(buf) : FMT_E_CORRUPT;
			cr_assert_eq(fmt_rec_decode(buf, sizeof(buf), PAYLOAD_MAX, seeds[j], &rec), want,
				     "encoded with seed %zu, read with %zu", i, j);
			cr_assert_eq(fmt_rec_peek(buf, sizeof(buf), PAYLOAD_MAX, seeds[j], &rec),
				     i == j ? want : 0);
		}
	}
}

/* Fills a large part of the stack below the caller with what a stale
 * XXH3 state holds after a use with `seed`: that seed, no external
 * secret, and any other bytes (the derived secret among them). The state
 * is 64-byte aligned, so one 64-byte pattern places the seed and the NULL
 * secret pointer wherever a later frame puts its state. */
static __attribute__((noinline)) void stack_poison(uint64_t seed)
{
	volatile uint64_t words[4096];
	const size_t seed_at = offsetof(XXH3_state_t, seed) % 64 / 8;
	const size_t ext_at = offsetof(XXH3_state_t, extSecret) % 64 / 8;
	for (size_t i = 0; i < FMT_ARRAY_LEN(words); i++) {
		size_t w = (uintptr_t)&words[i] % 64 / 8;
		words[i] = w == seed_at ? seed : w == ext_at ? 0 : 0xa5a5a5a5a5a5a5a5ull * (i | 1);
	}
}

/* A record's checksum is the XXH3 of its first 16 header bytes and its
 * payload, whatever the stack held: the seeded streaming state is
 * initialised, not trusted (xxhash skips deriving the secret when a
 * state's seed already equals the one asked for). An uninitialised state
 * on the stack once gave WAL records checks that their payloads did not
 * match, in a -O3 build: the server then refused to start on its own
 * WAL. */
Test(record_seed, checksum_does_not_depend_on_the_stack)
{
	static const uint64_t seeds[] = { 1, SALT_OLD, SALT_NEW, UINT64_MAX };
	/* Past 240 bytes, where XXH3 reads the derived secret. */
	enum { PAYLOAD = 1000 };
	uint8_t buf[FMT_REC_HEADER_BYTES + PAYLOAD], flat[16 + PAYLOAD];
	for (size_t k = 0; k < PAYLOAD; k++)
		buf[FMT_REC_HEADER_BYTES + k] = (uint8_t)(k * 7 + 1);
	for (size_t i = 0; i < FMT_ARRAY_LEN(seeds); i++) {
		stack_poison(seeds[i]);
		fmt_rec_header_encode(buf, FMT_REC_BATCH, 2, 1000, buf + FMT_REC_HEADER_BYTES, PAYLOAD,
				      seeds[i]);
		memcpy(flat, buf, 16);
		memcpy(flat + 16, buf + FMT_REC_HEADER_BYTES, PAYLOAD);
		cr_assert_eq(fmt_get_u64(buf + 16), XXH3_64bits_withSeed(flat, sizeof(flat), seeds[i]),
			     "seed %zu: the checksum depends on the stack", i);
		stack_poison(seeds[i]);
		struct fmt_rec rec;
		cr_assert_eq(fmt_rec_decode(buf, sizeof(buf), PAYLOAD_MAX, seeds[i], &rec),
			     (int64_t)sizeof(buf), "seed %zu", i);
	}
}

/* An old life of `batches` records of `per` events each, from seq 1. */
static void old_life(struct img *im, uint32_t batches, uint16_t per)
{
	uint8_t payload[4096];
	img_salted(im, SALT_OLD);
	for (uint32_t b = 0; b < batches; b++) {
		uint32_t n = make_batch(payload, sizeof(payload), 1 + per * b, per);
		img_rec(im, FMT_REC_BATCH, per, 1 + per * b, payload, n);
	}
}

/* New records after img_recycle(): `batches` of `per` events from seq
 * 1001, so that a visit of an old record shows in its seq. */
static void new_life(struct img *im, uint32_t batches, uint16_t per)
{
	uint8_t payload[4096];
	for (uint32_t b = 0; b < batches; b++) {
		uint32_t n = make_batch(payload, sizeof(payload), 1001 + per * b, per);
		img_rec(im, FMT_REC_BATCH, per, 1001 + per * b, payload, n);
	}
}

static void assert_only_new(const struct visits *v, const struct img *im, uint32_t want)
{
	cr_assert_eq(v->n, want, "%u records visited, want %u", v->n, want);
	for (uint32_t i = 0; i < v->n; i++) {
		cr_assert_eq(v->off[i], im->rec_off[i]);
		cr_assert_geq(v->seq[i], 1001, "visit %u is an old record (seq %llu)", i,
			      (unsigned long long)v->seq[i]);
	}
}

Test(record_recycled, old_records_outnumbering_the_new_are_not_visited)
{
	/* Record boundaries that fall inside old records (per 2), and ones
	 * that meet an old record's start (per 3, as the old life). */
	static const uint16_t pers[] = { 2, 3, 5 };
	for (size_t i = 0; i < FMT_ARRAY_LEN(pers); i++) {
		static struct img im;
		old_life(&im, 20, 3);
		img_recycle(&im, SALT_NEW);
		new_life(&im, 4, pers[i]);
		struct visits v = { 0 };
		struct fmt_log_scan out;
		cr_assert_eq(scan(im.buf, im.file_len, &v, &out), 0);
		cr_assert_eq(out.stop, 0, "per %u: stop %d", pers[i], out.stop);
		cr_assert_eq(out.valid_end, im.len);
		cr_assert_eq(out.records, 4);
		cr_assert_eq(out.header.prev_salt, SALT_OLD);
		assert_only_new(&v, &im, 4);
	}
	/* Recycled with no new record yet: a spare. */
	static struct img im;
	old_life(&im, 20, 3);
	img_recycle(&im, SALT_NEW);
	struct visits v = { 0 };
	struct fmt_log_scan out;
	cr_assert_eq(scan(im.buf, im.file_len, &v, &out), 0);
	cr_assert_eq(out.stop, 0);
	cr_assert_eq(out.records, 0);
	cr_assert_eq(out.valid_end, FMT_FILE_HEADER_BYTES);
}

Test(record_recycled, torn_tail_between_new_and_old_records)
{
	static struct img im, old;
	old_life(&im, 20, 3);
	old = im;
	img_recycle(&im, SALT_NEW);
	new_life(&im, 3, 2);
	uint64_t last = im.rec_off[2];
	for (size_t cut = last + 1; cut < im.len; cut++) {
		/* The write of the last record stopped at `cut`: the old bytes
		 * are still there after it. */
		static uint8_t tmp[1 << 16];
		memcpy(tmp, im.buf, cut);
		memcpy(tmp + cut, old.buf + cut, im.file_len - cut);
		struct visits v = { 0 };
		struct fmt_log_scan out;
		cr_assert_eq(scan(tmp, im.file_len, &v, &out), 0);
		/* A whole header shows a torn record; a torn header looks like
		 * old bytes. Either way, nothing is cut that was acknowledged
		 * and nothing old is visited. */
		int want = cut - last >= FMT_REC_HEADER_BYTES ? FMT_E_TRUNCATED : 0;
		cr_assert_eq(out.stop, want, "cut at +%zu: %d", cut - last, out.stop);
		cr_assert_eq(out.valid_end, last);
		assert_only_new(&v, &im, 2);
	}
}

Test(record_recycled, damage_among_the_new_records_is_damage)
{
	static struct img im, old;
	old_life(&im, 20, 3);
	old = im;
	img_recycle(&im, SALT_NEW);
	new_life(&im, 6, 2);
	/* A flipped byte in the second record. */
	static uint8_t tmp[1 << 16];
	memcpy(tmp, im.buf, im.file_len);
	tmp[im.rec_off[1] + FMT_REC_HEADER_BYTES + 5] ^= 0x20;
	struct visits v = { 0 };
	struct fmt_log_scan out;
	cr_assert_eq(scan(tmp, im.file_len, &v, &out), 0);
	cr_assert_eq(out.stop, FMT_E_CORRUPT);
	cr_assert_eq(out.bad_offset, im.rec_off[1]);
	/* A lost write: records 2 and 3 read as the old bytes again, some of
	 * them whole old records, and new records follow. */
	memcpy(tmp, im.buf, im.file_len);
	memcpy(tmp + im.rec_off[2], old.buf + im.rec_off[2], im.rec_off[4] - im.rec_off[2]);
	memset(&v, 0, sizeof(v));
	cr_assert_eq(scan(tmp, im.file_len, &v, &out), 0);
	cr_assert_eq(out.stop, FMT_E_CORRUPT);
	cr_assert_eq(out.bad_offset, im.rec_off[2]);
	assert_only_new(&v, &im, 2);
}

/* A client's event data holds bytes shaped as a record, checked under
 * seeds a client could guess (0, the generation). Once the file is
 * recycled, they are not taken for a record of the new life. The same
 * image under the new salt would be (the control: the test can fail). */
Test(record_recycled, planted_record_image_is_not_taken)
{
	static const uint64_t guesses[] = { 0, 9, 10, SALT_NEW };
	for (size_t g = 0; g < FMT_ARRAY_LEN(guesses); g++) {
		static struct img im;
		uint8_t payload[2048];
		memset(payload, 'x', sizeof(payload));
		uint8_t *plant = payload + 600;
		fmt_rec_header_encode(plant, FMT_REC_BATCH, 1, 1, plant + FMT_REC_HEADER_BYTES, 64,
				      guesses[g]);
		img_salted(&im, SALT_OLD);
		img_rec(&im, FMT_REC_BATCH, 0, 1, payload, sizeof(payload));
		img_rec(&im, FMT_REC_BATCH, 0, 2, payload, sizeof(payload));
		img_recycle(&im, SALT_NEW);
		new_life(&im, 1, 2); /* ends inside the first old record, before the plant */
		cr_assert_lt(im.len, FMT_FILE_HEADER_BYTES + FMT_REC_HEADER_BYTES + 600);
		struct visits v = { 0 };
		struct fmt_log_scan out;
		cr_assert_eq(scan(im.buf, im.file_len, &v, &out), 0);
		if (guesses[g] == SALT_NEW) {
			cr_assert_eq(out.stop, FMT_E_CORRUPT, "the control image must be seen");
			continue;
		}
		cr_assert_eq(out.stop, 0, "guess %llu: %d", (unsigned long long)guesses[g], out.stop);
		assert_only_new(&v, &im, 1);
	}
}

Test(record_recycled, log_used_and_run_end)
{
	static struct img im;
	old_life(&im, 5, 3);
	size_t old_end = im.len;
	cr_assert_eq(fmt_log_run_end(im.buf, old_end, FMT_FILE_HEADER_BYTES, PAYLOAD_MAX, SALT_OLD),
		     old_end);
	cr_assert_eq(fmt_log_run_end(im.buf, old_end, FMT_FILE_HEADER_BYTES, PAYLOAD_MAX, SALT_NEW),
		     FMT_FILE_HEADER_BYTES);
	cr_assert_eq(fmt_log_run_end(im.buf, old_end - 1, FMT_FILE_HEADER_BYTES, PAYLOAD_MAX,
				     SALT_OLD), im.rec_off[4], "a record cut short ends the run");
	size_t head = FMT_FILE_HEADER_BYTES + FMT_REC_HEADER_BYTES;
	cr_assert(fmt_log_used(im.buf, head, old_end), "a first life with records");
	cr_assert(!fmt_log_used(im.buf, FMT_FILE_HEADER_BYTES, FMT_FILE_HEADER_BYTES), "header only");
	img_recycle(&im, SALT_NEW);
	cr_assert(!fmt_log_used(im.buf, head, im.file_len), "a recycled spare");
	new_life(&im, 1, 2);
	cr_assert(fmt_log_used(im.buf, head, im.file_len), "a recycled file with a new record");
	im.buf[3] ^= 1;
	cr_assert(fmt_log_used(im.buf, head, im.file_len), "a bad header: its scan reports it");
}

/* ---- seed corpus for tests/fuzz/fuzz_wal.c ----------------------------------- */

static void write_file(const char *dir, const char *name, const uint8_t *buf, size_t len)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	cr_assert_not_null(f, "%s", path);
	cr_assert_eq(fwrite(buf, 1, len, f), len);
	cr_assert_eq(fclose(f), 0);
}

Test(corpus, write)
{
	const char *dir = getenv("HODEI_WRITE_CORPUS");
	if (!dir || !*dir)
		return;
	static struct img im;
	static uint8_t tmp[1 << 16];

	make_wal(&im, 1);
	write_file(dir, "one-batch.wal", im.buf, im.len);

	make_wal(&im, 4);
	write_file(dir, "four-batches.wal", im.buf, im.len);

	memcpy(tmp, im.buf, im.len);
	memset(tmp + im.len, 0, 512);
	write_file(dir, "zero-tail.wal", tmp, im.len + 512);

	write_file(dir, "torn-tail.wal", im.buf, im.rec_off[3] + 37);

	memcpy(tmp, im.buf, im.len);
	tmp[im.rec_off[1] + FMT_REC_HEADER_BYTES + 11] ^= 0x40;
	write_file(dir, "corrupt-middle.wal", tmp, im.len);

	memcpy(tmp, im.buf, im.len);
	memset(tmp + im.rec_off[1], 0, im.rec_off[2] - im.rec_off[1]);
	write_file(dir, "zero-hole.wal", tmp, im.len);

	/* A batch whose events decode but do not validate (outcome 9, no
	 * actor), plus stray bytes after the last event. */
	img_header(&im, "HODEIWAL");
	uint8_t payload[4096];
	uint32_t n = make_batch(payload, sizeof(payload), 100, 2);
	payload[4 + 2 + 4 + 40] = 9; /* outcome of the first event (tenant "acme") */
	img_rec(&im, FMT_REC_BATCH, 2, 100, payload, n);
	fmt_put_u32(payload + 4 + 2 + 4 + 41, 0); /* no actor_id: shifts the rest */
	img_rec(&im, FMT_REC_BATCH, 2, 102, payload, n);
	payload[n] = 0xee;
	img_rec(&im, FMT_REC_BATCH, 2, 104, payload, n + 1);
	img_rec(&im, FMT_REC_SEGMENT, 0, 0, (const uint8_t *)"not a batch", 11);
	write_file(dir, "invalid-events.wal", im.buf, im.len);

	/* A recycled file: three new records over twenty old ones. */
	old_life(&im, 20, 3);
	img_recycle(&im, SALT_NEW);
	new_life(&im, 3, 2);
	write_file(dir, "recycled.wal", im.buf, im.file_len);

	/* A manifest header: the WAL scan refuses it. */
	img_header(&im, "HODEIMAN");
	img_rec(&im, FMT_REC_SEGMENT, 0, 0, (const uint8_t *)"seg", 3);
	write_file(dir, "manifest.man", im.buf, im.len);
}
