/* SPDX-License-Identifier: Apache-2.0
 *
 * record.h — the framing shared by the WAL and the shard manifest
 * (docs/FORMAT.md §4): a checksummed record in an append-only file that
 * starts with a file header.
 *
 *   file header (64 bytes):
 *     0  magic[8]     "HODEIWAL" or "HODEIMAN"
 *     8  u32 version  (1)
 *     12 u32 shard
 *     16 u64 generation (WAL file number; 0 for a manifest)
 *     24 i64 created_ns
 *     32 24 reserved zero bytes
 *     56 u64 XXH3-64 of bytes 0..56
 *   record (32-byte header + payload):
 *     0  u32 payload_len
 *     4  u16 kind       (enum fmt_rec_kind, never 0)
 *     6  u16 count      (events in a batch; 0 otherwise)
 *     8  u64 seq        (first seq of a batch; 0 otherwise)
 *     16 u64 XXH3-64 of bytes 0..16 followed by the payload
 *     24 u32 low 32 bits of XXH3-64 of bytes 0..24 (header check)
 *     28 u32 zero
 *     32 payload
 *
 * The header check lets a scan test any offset for a plausible record in
 * constant time, so telling a torn tail from damage in the middle costs
 * O(file size), whatever the records hold.
 *
 * A WAL batch record holds one append request's events for one tenant,
 * so a request is atomic: its record is either whole and valid, or it is
 * a torn tail and none of its events are replayed. Its payload is `count`
 * canonical events, each preceded by its u32 length.
 */
#ifndef HODEI_FORMAT_RECORD_H
#define HODEI_FORMAT_RECORD_H

#include "common.h"

#include <stdbool.h>

#define FMT_FILE_HEADER_BYTES 64
#define FMT_REC_HEADER_BYTES 32
#define FMT_FILE_VERSION 1

enum fmt_rec_kind {
	FMT_REC_BATCH = 1,   /* WAL: a batch of canonical events of one tenant */
	FMT_REC_SEGMENT = 2, /* manifest: a sealed segment was added */
	FMT_REC_REMOVE = 3,  /* manifest: a segment's local file was removed */
	FMT_REC_EXPORT = 4,  /* manifest: a segment was replicated or mirrored */
};

struct fmt_file_header {
	char magic[8];
	uint32_t version;
	uint32_t shard;
	uint64_t generation;
	int64_t created_ns;
};

struct fmt_rec {
	uint16_t kind;
	uint16_t count;
	uint64_t seq;
	const uint8_t *payload; /* borrowed from the decoded buffer */
	uint32_t payload_len;
};

void fmt_file_header_encode(const struct fmt_file_header *h, uint8_t out[FMT_FILE_HEADER_BYTES]);

/* Returns 0, FMT_E_TRUNCATED, FMT_E_CORRUPT (checksum) or FMT_E_VERSION.
 * The caller checks the magic it expects. */
int fmt_file_header_decode(const uint8_t *buf, size_t len, struct fmt_file_header *h);

/* Writes a record header for payload into out. */
void fmt_rec_header_encode(uint8_t out[FMT_REC_HEADER_BYTES], uint16_t kind, uint16_t count,
			   uint64_t seq, const uint8_t *payload, uint32_t payload_len);

/* Decodes the record that starts at buf (avail bytes available).
 * Returns the record's total size (> 0) on success;
 * 0 when the header is all zeros (a clean end of data: preallocated tail);
 * FMT_E_TRUNCATED when the record runs past avail;
 * FMT_E_TOO_BIG when payload_len exceeds payload_max;
 * FMT_E_CORRUPT when the header check, the kind or the checksum is wrong. */
int64_t fmt_rec_decode(const uint8_t *buf, size_t avail, uint32_t payload_max, struct fmt_rec *out);

/* Reads the record at buf with the constant-time header check only: the
 * payload's checksum is not verified, so what it gives is fit only for
 * work that a checked scan confirms or discards (the WAL replay's helper
 * hashes events ahead of it).
 * Returns the record's total size (> 0) and fills *out (payload borrowed,
 * unchecked) when the header passes and the record fits in avail;
 * otherwise 0, whatever is there (fmt_rec_decode() tells what). */
int64_t fmt_rec_peek(const uint8_t *buf, size_t avail, uint32_t payload_max, struct fmt_rec *out);

/* Iterates over the events of a batch payload: *off starts at 0; each call
 * returns the next canonical event's bytes in *ev and *ev_len. Returns 1 for an
 * event, 0 at the end, FMT_E_CORRUPT when a length runs past the payload. */
int fmt_batch_next(const struct fmt_rec *rec, uint32_t *off, const uint8_t **ev, uint32_t *ev_len);

/* Result of scanning a whole log file (WAL or manifest). */
struct fmt_log_scan {
	struct fmt_file_header header;
	uint64_t records;      /* valid records visited */
	uint64_t valid_end;    /* offset just past the last valid record */
	int stop;              /* 0: clean end (EOF or zero-filled tail);
				* FMT_E_TRUNCATED: torn tail at valid_end, nothing
				*   valid after it — safe to cut there;
				* FMT_E_CORRUPT: a bad record at bad_offset with a
				*   valid record after it — damage in the middle;
				* FMT_E_TOO_BIG: a record longer than payload_max. */
	uint64_t bad_offset;
};

/* Called for each valid record in file order; a non-zero return stops the
 * scan and is returned by fmt_log_scan(). */
typedef int (*fmt_log_visit_fn)(void *ctx, uint64_t offset, const struct fmt_rec *rec);

/* Scans a log file image: checks the header (magic must equal `magic`),
 * then visits each valid record. When a record is bad, looks for any valid
 * record further on to tell a torn tail from damage in the middle (see
 * struct fmt_log_scan). Returns 0 when the scan ran (see out->stop), the
 * header's error (FMT_E_TRUNCATED, FMT_E_CORRUPT, FMT_E_VERSION), or the
 * visitor's non-zero return. Pure: never reads outside buf[0, len). */
int fmt_log_scan(const uint8_t *buf, size_t len, const char magic[8], uint32_t payload_max,
		 fmt_log_visit_fn visit, void *ctx, struct fmt_log_scan *out);

#endif
