// SPDX-License-Identifier: Apache-2.0
/*
 * record.c — file headers and checksummed records (see record.h). The
 * checksum covers the record header's first 16 bytes and the payload, so a
 * flipped length, kind, count or seq is caught as surely as a flipped
 * payload byte. Both checks are seeded with the file's salt (0 in a
 * version 1 file, where XXH3 with seed 0 is plain XXH3).
 */
#include "record.h"

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

void fmt_file_header_encode(const struct fmt_file_header *h, uint8_t out[FMT_FILE_HEADER_BYTES])
{
	memset(out, 0, FMT_FILE_HEADER_BYTES);
	memcpy(out, h->magic, 8);
	fmt_put_u32(out + 8, h->version);
	fmt_put_u32(out + 12, h->shard);
	fmt_put_u64(out + 16, h->generation);
	fmt_put_u64(out + 24, (uint64_t)h->created_ns);
	if (h->version >= FMT_FILE_VERSION_SALTED) {
		fmt_put_u64(out + 32, h->salt);
		fmt_put_u64(out + 40, h->prev_salt);
	}
	fmt_put_u64(out + 56, fmt_xxh3(out, 56));
}

int fmt_file_header_decode(const uint8_t *buf, size_t len, struct fmt_file_header *h)
{
	if (len < FMT_FILE_HEADER_BYTES)
		return FMT_E_TRUNCATED;
	if (fmt_get_u64(buf + 56) != fmt_xxh3(buf, 56))
		return FMT_E_CORRUPT;
	memcpy(h->magic, buf, 8);
	h->version = fmt_get_u32(buf + 8);
	h->shard = fmt_get_u32(buf + 12);
	h->generation = fmt_get_u64(buf + 16);
	h->created_ns = (int64_t)fmt_get_u64(buf + 24);
	bool salted = h->version == FMT_FILE_VERSION_SALTED;
	h->salt = salted ? fmt_get_u64(buf + 32) : 0;
	h->prev_salt = salted ? fmt_get_u64(buf + 40) : 0;
	if (salted && !h->salt)
		return FMT_E_CORRUPT;
	for (int i = salted ? 48 : 32; i < 56; i++)
		if (buf[i])
			return FMT_E_CORRUPT;
	if (h->version != FMT_FILE_VERSION && h->version != FMT_FILE_VERSION_SALTED)
		return FMT_E_VERSION;
	return 0;
}

/* The state is initialised before its seeded reset (XXH3_INITSTATE):
 * xxhash skips deriving the secret from the seed when the state's seed
 * field already equals it, so an uninitialised state on the stack that
 * held this seed, but other secret bytes, gave checksums of inputs over
 * 240 bytes that no reader reproduces (seen in a -O3 build: the server
 * refused to start on its own WAL). */
static uint64_t rec_checksum(const uint8_t *hdr16, const uint8_t *payload, uint32_t len,
			     uint64_t seed)
{
	XXH3_state_t st;
	XXH3_INITSTATE(&st);
	XXH3_64bits_reset_withSeed(&st, seed);
	XXH3_64bits_update(&st, hdr16, 16);
	if (len)
		XXH3_64bits_update(&st, payload, len);
	return XXH3_64bits_digest(&st);
}

void fmt_rec_header_encode(uint8_t out[FMT_REC_HEADER_BYTES], uint16_t kind, uint16_t count,
			   uint64_t seq, const uint8_t *payload, uint32_t payload_len, uint64_t seed)
{
	ASSERT(kind != 0);
	fmt_put_u32(out, payload_len);
	fmt_put_u16(out + 4, kind);
	fmt_put_u16(out + 6, count);
	fmt_put_u64(out + 8, seq);
	fmt_put_u64(out + 16, rec_checksum(out, payload, payload_len, seed));
	fmt_put_u32(out + 24, (uint32_t)XXH3_64bits_withSeed(out, 24, seed));
	fmt_put_u32(out + 28, 0);
}

void fmt_rec_reseed(uint8_t *buf, size_t len, uint64_t seed)
{
	for (size_t off = 0; off < len;) {
		ASSERT(len - off >= FMT_REC_HEADER_BYTES);
		uint8_t *hdr = buf + off;
		uint32_t plen = fmt_get_u32(hdr);
		ASSERT(len - off - FMT_REC_HEADER_BYTES >= plen);
		fmt_rec_header_encode(hdr, fmt_get_u16(hdr + 4), fmt_get_u16(hdr + 6),
				      fmt_get_u64(hdr + 8), hdr + FMT_REC_HEADER_BYTES, plen, seed);
		off += FMT_REC_HEADER_BYTES + plen;
	}
}

/* The constant-time test of a record header (bytes 24..32). */
static bool header_ok(const uint8_t *hdr, uint64_t seed)
{
	return fmt_get_u32(hdr + 24) == (uint32_t)XXH3_64bits_withSeed(hdr, 24, seed) &&
	       fmt_get_u32(hdr + 28) == 0;
}

/* The header's checks and fields, the payload's checksum aside: the
 * record's total size and *out, or FMT_E_CORRUPT, FMT_E_TOO_BIG or
 * FMT_E_TRUNCATED. avail >= FMT_REC_HEADER_BYTES. */
static int64_t rec_parse(const uint8_t *buf, size_t avail, uint32_t payload_max, uint64_t seed,
			 struct fmt_rec *out)
{
	if (!header_ok(buf, seed))
		return FMT_E_CORRUPT;
	uint32_t len = fmt_get_u32(buf);
	uint16_t kind = fmt_get_u16(buf + 4);
	if (kind == 0)
		return FMT_E_CORRUPT;
	if (len > payload_max)
		return FMT_E_TOO_BIG;
	if (avail - FMT_REC_HEADER_BYTES < len)
		return FMT_E_TRUNCATED;
	out->kind = kind;
	out->count = fmt_get_u16(buf + 6);
	out->seq = fmt_get_u64(buf + 8);
	out->payload = buf + FMT_REC_HEADER_BYTES;
	out->payload_len = len;
	return FMT_REC_HEADER_BYTES + (int64_t)len;
}

int64_t fmt_rec_decode(const uint8_t *buf, size_t avail, uint32_t payload_max, uint64_t seed,
		       struct fmt_rec *out)
{
	if (avail < FMT_REC_HEADER_BYTES) {
		for (size_t i = 0; i < avail; i++)
			if (buf[i])
				return FMT_E_TRUNCATED;
		return 0;
	}
	bool all_zero = true;
	for (int i = 0; i < FMT_REC_HEADER_BYTES; i++)
		all_zero = all_zero && buf[i] == 0;
	if (all_zero)
		return 0;
	struct fmt_rec rec;
	int64_t n = rec_parse(buf, avail, payload_max, seed, &rec);
	if (n < 0)
		return n;
	if (fmt_get_u64(buf + 16) != rec_checksum(buf, rec.payload, rec.payload_len, seed))
		return FMT_E_CORRUPT;
	*out = rec;
	return n;
}

int64_t fmt_rec_peek(const uint8_t *buf, size_t avail, uint32_t payload_max, uint64_t seed,
		     struct fmt_rec *out)
{
	if (avail < FMT_REC_HEADER_BYTES)
		return 0;
	struct fmt_rec rec;
	int64_t n = rec_parse(buf, avail, payload_max, seed, &rec);
	if (n <= 0)
		return 0;
	*out = rec;
	return n;
}

uint64_t fmt_log_run_end(const uint8_t *buf, size_t len, uint64_t from, uint32_t payload_max,
			 uint64_t seed)
{
	struct fmt_rec rec;
	int64_t n;
	while (from < len && (n = fmt_rec_peek(buf + from, len - from, payload_max, seed, &rec)) > 0)
		from += (uint64_t)n;
	return from;
}

bool fmt_log_used(const uint8_t *head, size_t head_len, uint64_t file_len)
{
	if (file_len <= FMT_FILE_HEADER_BYTES)
		return false;
	struct fmt_file_header h;
	if (fmt_file_header_decode(head, head_len, &h) != 0)
		return true;
	if (!h.prev_salt) /* never recycled: every byte past the header is this life's */
		return true;
	return head_len >= FMT_FILE_HEADER_BYTES + FMT_REC_HEADER_BYTES &&
	       header_ok(head + FMT_FILE_HEADER_BYTES, h.salt);
}

int fmt_batch_next(const struct fmt_rec *rec, uint32_t *off, const uint8_t **ev, uint32_t *ev_len)
{
	ASSERT(*off <= rec->payload_len);
	if (*off == rec->payload_len)
		return 0;
	if (rec->payload_len - *off < 4)
		return FMT_E_CORRUPT;
	uint32_t len = fmt_get_u32(rec->payload + *off);
	if (rec->payload_len - *off - 4 < len)
		return FMT_E_CORRUPT;
	*ev = rec->payload + *off + 4;
	*ev_len = len;
	*off += 4 + len;
	return 1;
}

/* Whether a whole valid record under seed starts at off. */
static bool record_at(const uint8_t *buf, size_t len, uint64_t off, uint32_t payload_max,
		      uint64_t seed)
{
	struct fmt_rec rec;
	return header_ok(buf + off, seed) &&
	       fmt_rec_decode(buf + off, len - off, payload_max, seed, &rec) > 0;
}

/* True when some offset after `from` holds a valid record under salt.
 * In a recycled file (prev != 0), a whole valid record under prev starts
 * the previous life's bytes: the run of its records is skipped by their
 * headers (each could not hold a record of this life, which would have
 * overwritten it), and the search goes on where the run breaks, which is
 * the file's end unless something overwrote the old records there. */
static bool valid_record_after(const uint8_t *buf, size_t len, uint64_t from, uint32_t payload_max,
			       uint64_t salt, uint64_t prev)
{
	for (uint64_t off = from + 1; off + FMT_REC_HEADER_BYTES <= len; off++) {
		uint16_t kind = fmt_get_u16(buf + off + 4);
		if (kind < FMT_REC_BATCH || kind > FMT_REC_KIND_MAX)
			continue;
		if (record_at(buf, len, off, payload_max, salt))
			return true;
		if (prev && record_at(buf, len, off, payload_max, prev))
			off = fmt_log_run_end(buf, len, off, payload_max, prev) - 1;
	}
	return false;
}

int fmt_log_scan(const uint8_t *buf, size_t len, const char magic[8], uint32_t payload_max,
		 fmt_log_visit_fn visit, void *ctx, struct fmt_log_scan *out)
{
	memset(out, 0, sizeof(*out));
	int rc = fmt_file_header_decode(buf, len, &out->header);
	if (rc)
		return rc;
	if (memcmp(out->header.magic, magic, 8) != 0)
		return FMT_E_CORRUPT;
	uint64_t off = FMT_FILE_HEADER_BYTES;
	uint64_t salt = out->header.salt, prev = out->header.prev_salt;
	out->valid_end = off;
	while (off < len) {
		struct fmt_rec rec;
		int64_t n = fmt_rec_decode(buf + off, len - off, payload_max, salt, &rec);
		if (n == 0) {
			/* An all-zero header ends the data only if what follows is a
			 * zero-filled tail. A valid record after it means a hole in
			 * the middle (lost pages): stopping quietly would drop
			 * records that may have been acked. */
			if (valid_record_after(buf, len, off, payload_max, salt, prev)) {
				out->bad_offset = off;
				out->stop = FMT_E_CORRUPT;
			}
			return 0;
		}
		if (n < 0) {
			if (n == FMT_E_TOO_BIG)
				out->stop = FMT_E_TOO_BIG;
			else if (valid_record_after(buf, len, off, payload_max, salt, prev))
				out->stop = FMT_E_CORRUPT;
			else if (!prev || (len - off >= FMT_REC_HEADER_BYTES && header_ok(buf + off, salt)))
				out->stop = FMT_E_TRUNCATED;
			/* else, in a recycled file: old bytes, or a record header
			 * torn in the write; neither was acknowledged, nothing to
			 * cut: a clean end. */
			if (out->stop)
				out->bad_offset = off;
			return 0;
		}
		if (visit && (rc = visit(ctx, off, &rec)) != 0)
			return rc;
		out->records++;
		off += (uint64_t)n;
		out->valid_end = off;
	}
	return 0;
}
