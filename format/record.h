/* SPDX-License-Identifier: Apache-2.0
 *
 * record.h — the framing shared by the WAL and the shard manifest
 * (docs/FORMAT.md §4): a checksummed record in an append-only file that
 * starts with a file header.
 *
 *   file header (64 bytes):
 *     0  magic[8]     "HODEIWAL" or "HODEIMAN"
 *     8  u32 version  (1, or 2 for a salted WAL file)
 *     12 u32 shard
 *     16 u64 generation (WAL file number; 0 for a manifest)
 *     24 i64 created_ns
 *     32 u64 salt       (version 2: seeds every record's checks, never 0;
 *                        version 1: zero, the checks' seed is 0)
 *     40 u64 prev_salt  (version 2: the salt of the records the file held
 *                        before it was recycled; 0: it held none)
 *     48 8 reserved zero bytes
 *     56 u64 XXH3-64 of bytes 0..56
 *   record (32-byte header + payload):
 *     0  u32 payload_len
 *     4  u16 kind       (enum fmt_rec_kind, never 0)
 *     6  u16 count      (events in a batch; 0 otherwise)
 *     8  u64 seq        (first seq of a batch; 0 otherwise)
 *     16 u64 XXH3-64 of bytes 0..16 followed by the payload, seeded
 *     24 u32 low 32 bits of XXH3-64 of bytes 0..24, seeded (header check)
 *     28 u32 zero
 *     32 payload
 *
 * The header check lets a scan test any offset for a plausible record in
 * constant time, so telling a torn tail from damage in the middle costs
 * O(file size), whatever the records hold.
 *
 * A recycled WAL file (ADR 0016) is overwritten in place, so that an
 * append changes no metadata. Both checks of its records are seeded with
 * the file's random salt, so the records of its previous life (under
 * prev_salt) fail them, and so does a record image a client planted in
 * its event data (the salt is not predictable). Its data ends where its
 * records stop: what follows is old bytes, not zeros. The scan skips the
 * previous life's records by their headers, so its cost stays about one
 * record per old record. The writer keeps this invariant: when a file is
 * recycled, it is cut at the end of the records of the life being
 * replaced, so that nothing older than prev_salt's records is in it.
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
#define FMT_FILE_VERSION 1        /* manifests; WAL files before salts */
#define FMT_FILE_VERSION_SALTED 2 /* WAL files: records seeded with the salt */

enum fmt_rec_kind {
	FMT_REC_BATCH = 1,   /* WAL: a batch of canonical events of one tenant */
	FMT_REC_SEGMENT = 2, /* manifest: a sealed segment was added */
	FMT_REC_REMOVE = 3,  /* manifest: a segment's local file was removed */
	FMT_REC_EXPORT = 4,  /* manifest: a segment was replicated or mirrored */
	FMT_REC_KIND_MAX = FMT_REC_EXPORT,
};

struct fmt_file_header {
	char magic[8];
	uint32_t version;
	uint32_t shard;
	uint64_t generation;
	int64_t created_ns;
	uint64_t salt;      /* version 2 only (else 0) */
	uint64_t prev_salt; /* version 2 only (else 0) */
};

struct fmt_rec {
	uint16_t kind;
	uint16_t count;
	uint64_t seq;
	const uint8_t *payload; /* borrowed from the decoded buffer */
	uint32_t payload_len;
};

void fmt_file_header_encode(const struct fmt_file_header *h, uint8_t out[FMT_FILE_HEADER_BYTES]);

/* Returns 0, FMT_E_TRUNCATED, FMT_E_CORRUPT (checksum, non-zero reserved
 * bytes, a version 2 header without a salt) or FMT_E_VERSION. The caller
 * checks the magic it expects. */
int fmt_file_header_decode(const uint8_t *buf, size_t len, struct fmt_file_header *h);

/* Writes a record header for payload into out, its checks seeded with
 * seed (the file's salt; 0 in a version 1 file). */
void fmt_rec_header_encode(uint8_t out[FMT_REC_HEADER_BYTES], uint16_t kind, uint16_t count,
			   uint64_t seq, const uint8_t *payload, uint32_t payload_len, uint64_t seed);

/* Re-encodes the checks of the records in buf[0, len) with seed: whole
 * records back to back, as a writer's buffer holds them, filled for one
 * file and written to the next one (a WAL rotation). */
void fmt_rec_reseed(uint8_t *buf, size_t len, uint64_t seed);

/* Decodes the record that starts at buf (avail bytes available), whose
 * checks are seeded with seed.
 * Returns the record's total size (> 0) on success;
 * 0 when the header is all zeros (a clean end of data: preallocated tail);
 * FMT_E_TRUNCATED when the record runs past avail;
 * FMT_E_TOO_BIG when payload_len exceeds payload_max;
 * FMT_E_CORRUPT when the header check, the kind or the checksum is wrong. */
int64_t fmt_rec_decode(const uint8_t *buf, size_t avail, uint32_t payload_max, uint64_t seed,
		       struct fmt_rec *out);

/* Reads the record at buf with the constant-time header check only: the
 * payload's checksum is not verified, so what it gives is fit only for
 * work that a checked scan confirms or discards (the WAL replay's helper
 * hashes events ahead of it).
 * Returns the record's total size (> 0) and fills *out (payload borrowed,
 * unchecked) when the header passes and the record fits in avail;
 * otherwise 0, whatever is there (fmt_rec_decode() tells what). */
int64_t fmt_rec_peek(const uint8_t *buf, size_t avail, uint32_t payload_max, uint64_t seed,
		     struct fmt_rec *out);

/* The end of the run of records under seed that starts at `from`, each
 * checked by its header alone (fmt_rec_peek): `from` itself when no such
 * record starts there. What a recycled file's writer cuts the file at. */
uint64_t fmt_log_run_end(const uint8_t *buf, size_t len, uint64_t from, uint32_t payload_max,
			 uint64_t seed);

/* Whether a log file holds a record of its own, from its first
 * min(file_len, FMT_FILE_HEADER_BYTES + FMT_REC_HEADER_BYTES) bytes in
 * head: false for a file of a header alone, or a recycled file whose
 * first record is not of this life (a spare); true when its header is
 * bad (its scan reports that). Only the first record's header check is
 * tested, so a torn first record counts as written. */
bool fmt_log_used(const uint8_t *head, size_t head_len, uint64_t file_len);

/* Iterates over the events of a batch payload: *off starts at 0; each call
 * returns the next canonical event's bytes in *ev and *ev_len. Returns 1 for an
 * event, 0 at the end, FMT_E_CORRUPT when a length runs past the payload. */
int fmt_batch_next(const struct fmt_rec *rec, uint32_t *off, const uint8_t **ev, uint32_t *ev_len);

/* Result of scanning a whole log file (WAL or manifest). */
struct fmt_log_scan {
	struct fmt_file_header header;
	uint64_t records;      /* valid records visited */
	uint64_t valid_end;    /* offset just past the last valid record */
	int stop;              /* 0: clean end (EOF, zero-filled tail, or in a
				*   recycled file bytes that do not start a
				*   record of this life);
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
 * struct fmt_log_scan); in a recycled file, records of the previous life
 * are skipped, never visited. Returns 0 when the scan ran (see out->stop), the
 * header's error (FMT_E_TRUNCATED, FMT_E_CORRUPT, FMT_E_VERSION), or the
 * visitor's non-zero return. Pure: never reads outside buf[0, len). */
int fmt_log_scan(const uint8_t *buf, size_t len, const char magic[8], uint32_t payload_max,
		 fmt_log_visit_fn visit, void *ctx, struct fmt_log_scan *out);

#endif
