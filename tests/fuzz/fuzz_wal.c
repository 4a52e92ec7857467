// SPDX-License-Identifier: Apache-2.0
/*
 * fuzz_wal.c — libFuzzer target for WAL recovery: everything format/ does
 * with the bytes of a WAL file found on disk after a crash.
 *
 * Each input is scanned twice:
 *   1. as it is, with fmt_log_scan() and magic "HODEIWAL": headers, record
 *      checksums, torn-tail and mid-file damage detection;
 *   2. "fixed up": the file header's and each record's checksum recomputed
 *      first. A mutation almost always breaks a checksum, so without this
 *      step the batch and event decoders behind it would rarely see a
 *      mutated byte.
 * For every valid FMT_REC_BATCH record the visitor walks the payload with
 * fmt_batch_next(), decodes each event with fmt_event_canon_decode() and
 * validates it with the default limits. A decoded event must re-encode to
 * exactly the bytes it came from (the encoding is canonical), and the scan
 * result must be self-consistent. Any crash, sanitizer report or failed
 * ASSERT is a finding.
 *
 * With -DHODEI_FUZZ=OFF, replay_main.c drives this file over the
 * checked-in corpus in tests/fuzz/corpus/wal/ under CTest.
 */
#include "format/event.h"
#include "format/record.h"

#include <stdlib.h>

#define PAYLOAD_MAX (1u << 20)

struct ctx {
	const uint8_t *buf;
	size_t len;
	uint64_t visits;
	uint64_t next_off; /* where the next record must start */
};

static struct fmt_attr attr_buf[FMT_ATTRS_HARD_MAX];
static uint8_t reencode[PAYLOAD_MAX];

static void check_event(const uint8_t *bytes, uint32_t len)
{
	struct fmt_event ev;
	int rc = fmt_event_canon_decode(bytes, len, &ev, attr_buf, FMT_ATTRS_HARD_MAX);
	ASSERT(rc == 0 || rc == FMT_E_TRUNCATED || rc == FMT_E_CORRUPT || rc == FMT_E_VERSION ||
	       rc == FMT_E_TOO_BIG);
	if (rc != 0)
		return;
	ASSERT(ev.attr_count <= FMT_ATTRS_HARD_MAX);
	ASSERT(ev.tenant.len <= FMT_TENANT_MAX);
	ASSERT(fmt_event_canon_size(&ev) == len);
	int64_t n = fmt_event_canon_encode(&ev, reencode, sizeof(reencode));
	ASSERT(n == (int64_t)len);
	ASSERT(memcmp(reencode, bytes, len) == 0);

	struct fmt_limits limits;
	struct fmt_invalid why = { 0 };
	fmt_limits_default(&limits);
	rc = fmt_event_validate(&ev, &limits, &why);
	ASSERT(rc == 0 || rc == FMT_E_INVALID);
	if (rc == FMT_E_INVALID)
		ASSERT(why.field != NULL && why.reason != NULL);
	(void)fmt_tenant_valid(ev.tenant);
}

static int visit(void *vctx, uint64_t offset, const struct fmt_rec *rec)
{
	struct ctx *c = vctx;
	ASSERT(offset == c->next_off);
	ASSERT(rec->kind != 0);
	ASSERT(rec->payload_len <= PAYLOAD_MAX);
	ASSERT(rec->payload == c->buf + offset + FMT_REC_HEADER_BYTES);
	ASSERT(offset + FMT_REC_HEADER_BYTES + rec->payload_len <= c->len);
	c->visits++;
	c->next_off = offset + FMT_REC_HEADER_BYTES + rec->payload_len;
	if (rec->kind != FMT_REC_BATCH)
		return 0;

	uint32_t off = 0;
	const uint8_t *ev;
	uint32_t ev_len;
	int rc;
	uint32_t events = 0;
	/* Each event takes at least its 4-byte length: a bound on the loop. */
	while ((rc = fmt_batch_next(rec, &off, &ev, &ev_len)) == 1) {
		ASSERT(ev >= rec->payload && ev_len <= rec->payload_len &&
		       (size_t)(ev - rec->payload) + ev_len <= rec->payload_len);
		ASSERT(++events <= rec->payload_len / 4);
		check_event(ev, ev_len);
	}
	ASSERT(rc == 0 || rc == FMT_E_CORRUPT);
	ASSERT(off <= rec->payload_len);
	return 0;
}

static void scan(const uint8_t *buf, size_t len)
{
	struct ctx c = { buf, len, 0, FMT_FILE_HEADER_BYTES };
	struct fmt_log_scan out;
	int rc = fmt_log_scan(buf, len, "HODEIWAL", PAYLOAD_MAX, visit, &c, &out);
	ASSERT(rc == 0 || rc == FMT_E_TRUNCATED || rc == FMT_E_CORRUPT || rc == FMT_E_VERSION);
	if (rc != 0)
		return;
	ASSERT(out.records == c.visits);
	ASSERT(out.valid_end == c.next_off);
	ASSERT(out.valid_end <= len);
	switch (out.stop) {
	case 0:
		break;
	case FMT_E_TRUNCATED:
	case FMT_E_CORRUPT:
	case FMT_E_TOO_BIG:
		ASSERT(out.bad_offset == out.valid_end);
		ASSERT(out.bad_offset < len);
		break;
	default:
		ASSERT(0);
	}
}

/* Recomputes the file header checksum and, walking the records as the
 * scanner would, each record's checksum. Returns true if anything changed. */
static bool fix_up(uint8_t *buf, size_t len)
{
	if (len < FMT_FILE_HEADER_BYTES)
		return false;
	bool changed = false;
	uint64_t sum = fmt_xxh3(buf, 56);
	if (fmt_get_u64(buf + 56) != sum) {
		fmt_put_u64(buf + 56, sum);
		changed = true;
	}
	/* A salted (version 2) file's records are checked with its salt. */
	uint64_t seed = fmt_get_u32(buf + 8) == FMT_FILE_VERSION_SALTED ? fmt_get_u64(buf + 32) : 0;
	size_t off = FMT_FILE_HEADER_BYTES;
	while (len - off >= FMT_REC_HEADER_BYTES) {
		uint32_t plen = fmt_get_u32(buf + off);
		uint16_t kind = fmt_get_u16(buf + off + 4);
		if (kind == 0 || plen > PAYLOAD_MAX || plen > len - off - FMT_REC_HEADER_BYTES)
			break;
		uint8_t old[8];
		memcpy(old, buf + off + 16, 8);
		fmt_rec_header_encode(buf + off, kind, fmt_get_u16(buf + off + 6),
				      fmt_get_u64(buf + off + 8), buf + off + FMT_REC_HEADER_BYTES, plen,
				      seed);
		changed = changed || memcmp(old, buf + off + 16, 8) != 0;
		off += FMT_REC_HEADER_BYTES + plen;
	}
	return changed;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	scan(data, size);

	/* The whole input as one canonical event, too: the decoder is cheap
	 * and this reaches it without any checksum in the way. */
	if (size <= sizeof(reencode))
		check_event(data, (uint32_t)size);

	/* An exact-size copy, so ASan sees any read past the end. */
	uint8_t *copy = malloc(size ? size : 1);
	if (!copy)
		return 0;
	if (size)
		memcpy(copy, data, size);
	if (fix_up(copy, size))
		scan(copy, size);
	free(copy);
	return 0;
}
