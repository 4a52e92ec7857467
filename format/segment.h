/* SPDX-License-Identifier: Apache-2.0
 *
 * segment.h — the sealed segment file (docs/FORMAT.md §5): immutable, one
 * tenant, columnar, readable and verifiable alone.
 *
 *   [header 32 B][block 0: one chunk per column][block 1 ...]...[footer][trailer 32 B]
 *
 * Rows are in seq order (commit order) and split into blocks of at most
 * `block_rows` rows. Each block stores one chunk per column; a chunk is the
 * column's encoded bytes (plain, dictionary or delta — whichever is
 * smallest for that chunk) compressed as one zstd frame and checksummed
 * with XXH3-64 over the compressed bytes. The footer holds the segment
 * metadata, the per-block zone maps (min/max occurred_at, seq range) and the
 * column directory; it is itself checksummed, and the trailer locates it.
 * Chunks tile the file exactly between header and footer, so every byte of
 * a segment is covered by some check: any single-bit flip is detected by
 * fmt_segment_open() (header, footer, trailer) or by decoding the chunk
 * that holds it.
 *
 * Event-id index (version 2). Exact lookups by event id must not read the
 * tenant's whole history, so the version-2 footer adds, per block, the
 * min/max event id (a zone map: time-ordered UUIDv7 ids prune on it alone)
 * and a split-block Bloom filter of the block's ids (random UUIDv4 ids
 * prune on it): 256-bit buckets, 8 probes in one bucket, keyed by XXH3-64
 * of the 16 id bytes, sized at id_filter_bits (default 16, ADR 0017) bits
 * per row, about 0.13 % false positives (1.3 % at 10 bits, the default
 * before). The filters live in the footer rather than in
 * a chunk per block, because a lookup probes every block of every segment
 * of the tenant: for a 1 M-row tenant (244 blocks of 4096 rows) that is
 * 244 probes of one 32-byte bucket each in memory (microseconds), where
 * per-block filter chunks would cost 244 preads of 5 KiB and 1.25 MB of
 * checksumming per lookup (around a millisecond, the whole budget). The
 * price is memory while a segment is open: about 2.06 bytes per row at 16
 * bits and 512-row blocks, the same bytes as on disk (~2.06 B/event,
 * within the 2.1 B/event budget of ADR 0017). The footer
 * checksum covers the index, so a flipped bit fails open; verify
 * rebuilds every block's filter and min/max from its decoded ids and
 * compares them byte for byte, because a wrong filter would hide an event.
 * Version-1 segments (no index) still open, search by scanning and verify.
 *
 * Block summaries (version 3). A Count grouped by a low-cardinality column
 * over a long range decoded every block of it (a zstd frame and a
 * dictionary per block), and a Search for one actor decoded every block of
 * the range to find a few rows. The version-3 footer adds, after the
 * event-id index, per block: the number of rows per value of outcome,
 * action and resource_type (varint (code, count) pairs, codes into one
 * dictionary per column for the whole segment, in order of first
 * appearance), and a split-block Bloom filter of the block's distinct
 * actor ids (actor_filter_bits bits per distinct actor, default 10). A
 * Count over a block wholly inside its time range adds the stored counts
 * without reading a chunk; a Search with an actor filter skips the blocks
 * whose filter rules the actor out. A column with more than
 * count_keys_max distinct values in the segment (default 4096), or whose
 * dictionary would take more bytes than the segment has rows, is not counted:
 * a small segment with many values is cheap to scan and its dictionary
 * would cost more than the scan saves (the benchmark's small tenants paid
 * ~8 bytes per event for them before this rule). Like the event-id index
 * the summaries are in the footer (probed for every block in memory),
 * covered by its checksum, and rebuilt byte for byte by verify: a wrong
 * count is a wrong answer, a wrong actor filter hides events.
 *
 * Reading is split so that the engine does the I/O and reads only what it
 * needs: it reads the trailer, asks for the footer's position, reads the
 * footer, opens it, then reads and decodes only the chunks of the blocks
 * and columns a query needs.
 */
#ifndef HODEI_FORMAT_SEGMENT_H
#define HODEI_FORMAT_SEGMENT_H

#include "event.h"

#include <stdbool.h>

#define FMT_SEG_HEADER_BYTES 32
#define FMT_SEG_TRAILER_BYTES 32
#define FMT_SEG_VERSION 3          /* written by this build; reads 1, 2 and 3 */
#define FMT_SEG_VERSION_MIN 1
#define FMT_SEG_ROWS_MAX (1u << 24)
/* A search decodes every column of each block that holds a hit, so one
 * hit costs a whole block's decode (~4,300 instructions a row on the
 * benchmark's events): 512 rows cut that 8x from 4096 for ~3% more bytes
 * (docs/PERFORMANCE.md, "Query path"). Each block also costs ~0.6 KiB of
 * footer in memory while its segment is open. */
#define FMT_SEG_BLOCK_ROWS_DEFAULT 512
/* Bloom bits per row: ~0.13 % false positives, so that a lookup in a big
 * tenant (~2,000 blocks of 512 rows per million rows) reads ~3 event_id
 * chunks for nothing instead of ~25 at 10 bits (ADR 0017). */
#define FMT_SEG_ID_FILTER_BITS_DEFAULT 16
#define FMT_SEG_ID_FILTER_BITS_MAX 32
#define FMT_SEG_ID_BUCKET_BYTES 32        /* one split-block Bloom bucket: 8 x u32 */
/* Version 3: stored counts per block of outcome, action and resource_type
 * (FMT_SEG_COUNTED_COLS columns), and the actor-id filter. */
#define FMT_SEG_COUNTED_COLS 3
#define FMT_SEG_COUNT_KEYS_DEFAULT 4096   /* distinct values of a column, else it is not counted */
#define FMT_SEG_COUNT_KEYS_MAX 65536
/* The writer counts a string column only when its dictionary takes at
 * most this many bytes per row of the segment: a small segment with many
 * distinct values (a small tenant's) would pay more for the dictionary
 * than scanning its few blocks costs. At one byte a row, the top tenant's
 * 10,000-row segments (720 actions: a 14 KB dictionary) were left out, and
 * Count scanned 95 % of its rows. At four, segments from about 3,500 rows
 * up were counted, and the benchmark's mid-size tenants (2,000-3,000-row
 * segments) had every block of a 7-day Count decoded: Q4's p99. At eight,
 * from about 1,750 rows: Q4 p99 3.1 -> 2.0 ms for 0.5 % more bytes. It is
 * the writer's choice, not a format rule: verify accepts a column left out
 * and checks every counted one. */
#define FMT_SEG_COUNT_DICT_BYTES_DEFAULT 8
#define FMT_SEG_COUNT_DICT_BYTES_MAX 1024
#define FMT_SEG_ACTOR_FILTER_BITS_DEFAULT 10 /* Bloom bits per distinct actor of a block: ~1 % */

/* Columns, in file order. A column mask is a bit set of (1u << column). */
enum fmt_column {
	FMT_COL_SEQ,            /* u64, delta */
	FMT_COL_RECEIVED_AT,    /* i64, delta */
	FMT_COL_OCCURRED_AT,    /* i64, delta */
	FMT_COL_EVENT_ID,       /* 16 bytes fixed */
	FMT_COL_OUTCOME,        /* u8 */
	FMT_COL_STR_FIRST,      /* the 9 string fields, enum fmt_field order */
	FMT_COL_STR_LAST = FMT_COL_STR_FIRST + FMT_F_STRING_COUNT - 1,
	FMT_COL_ATTRS,          /* per row: count, then key/value strings */
	FMT_COL_DETAILS,        /* details_json bytes */
	FMT_COL_CHAIN,          /* 32 bytes fixed: chain value after the row */
	FMT_COL_COUNT,
};
#define FMT_COLS_ALL ((1u << FMT_COL_COUNT) - 1)

/* Segment-wide metadata, all of it in the footer. */
struct fmt_segment_meta {
	uint32_t version;                /* FMT_SEG_VERSION_MIN .. FMT_SEG_VERSION */
	uint32_t id_filter_bits;         /* Bloom bits per row; 0 in version 1 */
	uint32_t count_keys_max;         /* v3: the writer's bound on a counted column's values; 0 before */
	uint32_t actor_filter_bits;      /* v3: Bloom bits per distinct actor; 0 before */
	char tenant[FMT_TENANT_MAX + 1]; /* NUL-terminated */
	uint64_t segment_id;
	uint32_t shard;
	uint32_t row_count;
	uint32_t block_rows;
	uint32_t block_count;
	uint64_t first_seq, last_seq;    /* 0, 0 when row_count == 0 */
	int64_t min_occurred_ns, max_occurred_ns;
	int64_t min_received_ns, max_received_ns;
	int64_t created_ns;
	uint8_t chain_before[FMT_HASH_BYTES];
	uint8_t chain_after[FMT_HASH_BYTES];
	uint8_t merkle_root[FMT_HASH_BYTES]; /* over the rows' event hashes */
};

struct fmt_chunk_ref {
	uint64_t offset;     /* from the start of the file */
	uint32_t stored_len; /* compressed bytes in the file */
	uint32_t raw_len;    /* encoded bytes after decompression */
	uint8_t encoding;    /* enum fmt_encoding */
	uint64_t checksum;   /* XXH3-64 of the stored bytes */
};

enum fmt_encoding {
	FMT_ENC_PLAIN = 1,
	FMT_ENC_DICT = 2,
	FMT_ENC_DELTA = 3,
};

struct fmt_block_ref {
	uint32_t first_row;
	uint32_t row_count;
	uint64_t first_seq, last_seq;
	int64_t min_occurred_ns, max_occurred_ns; /* zone map */
	struct fmt_chunk_ref chunk[FMT_COL_COUNT];
	/* Version 2: the event-id index. Zero in version 1. */
	uint8_t min_event_id[FMT_EVENT_ID_BYTES]; /* bytewise (memcmp) order */
	uint8_t max_event_id[FMT_EVENT_ID_BYTES];
	uint32_t id_filter_at;    /* into fmt_segment.id_filters */
	uint32_t id_filter_bytes; /* FMT_SEG_ID_BUCKET_BYTES x buckets */
	/* Version 3: the block summary, offsets into fmt_segment.summary. */
	uint32_t counts_at[FMT_SEG_COUNTED_COLS]; /* the block's (code, count) pairs per counted column */
	uint32_t actor_at;          /* the actor filter's bucket count (varint), then its buckets */
	uint32_t actor_filter_at;
	uint32_t actor_filter_bytes;
};

/* An opened footer: metadata plus the block directory. Heap-allocated by
 * fmt_segment_open(), freed by fmt_segment_close(). */
struct fmt_segment {
	struct fmt_segment_meta meta;
	uint64_t file_size;
	uint64_t footer_offset;
	uint32_t footer_len;
	struct fmt_block_ref *blocks; /* meta.block_count entries */
	uint8_t *id_filters;          /* version 2: every block's filter, in block order */
	/* Version 3: the footer's summary section, copied; per counted column
	 * the number of codes (0: not counted; outcome: 4, its values) and,
	 * for action and resource_type, each code's value (into summary),
	 * and each code's rows in the whole segment (summed on open). */
	uint8_t *summary;
	uint32_t summary_len;
	uint32_t count_keys[FMT_SEG_COUNTED_COLS];
	struct fmt_str *count_key[FMT_SEG_COUNTED_COLS];
	uint32_t *count_total[FMT_SEG_COUNTED_COLS];
};

/* ---- writing ---------------------------------------------------------- */

struct fmt_segment_build_args {
	uint64_t segment_id;
	uint32_t shard;
	uint32_t block_rows;          /* 0: FMT_SEG_BLOCK_ROWS_DEFAULT */
	int zstd_level;               /* 0: a sensible default (3) */
	int64_t created_ns;
	const uint8_t *chain_before;  /* FMT_HASH_BYTES */
	struct fmt_str tenant;        /* len 0: rows[0].tenant; required when n == 0 */
	/* Optional: the rows' event hashes as the caller computed them when it
	 * accepted the events. Build then checks each against its chain value
	 * (chains[i] == SHA-256(chains[i-1] || event_hashes[i])) instead of
	 * re-encoding and re-hashing every row; debug builds still re-hash. */
	const uint8_t (*event_hashes)[FMT_HASH_BYTES];
	uint32_t version;             /* 0: FMT_SEG_VERSION; 1 writes the old format (tests, tools) */
	uint32_t id_filter_bits;      /* 0: FMT_SEG_ID_FILTER_BITS_DEFAULT; 1..FMT_SEG_ID_FILTER_BITS_MAX */
	uint32_t count_keys_max;      /* v3; 0: FMT_SEG_COUNT_KEYS_DEFAULT; 1..FMT_SEG_COUNT_KEYS_MAX */
	/* v3; 0: FMT_SEG_COUNT_DICT_BYTES_DEFAULT; 1..FMT_SEG_COUNT_DICT_BYTES_MAX */
	uint32_t count_dict_bytes_per_row;
	uint32_t actor_filter_bits;   /* v3; 0: FMT_SEG_ACTOR_FILTER_BITS_DEFAULT; 1..FMT_SEG_ID_FILTER_BITS_MAX */
};

/* Builds a complete segment image in memory from n rows of one tenant, in
 * seq order with no gaps (rows[i].seq == rows[0].seq + i), each with its
 * chain value after it (chains[i]). Computes the event hashes to fill the
 * Merkle root and checks that chains[] follows from chain_before (a
 * mismatch is a programmer error: ASSERT). On success *out is a malloc'd
 * buffer of *out_len bytes that the caller frees.
 * Returns 0, FMT_E_INVALID (tenants differ, seq gap, n too large, an
 * unknown version or a filter density out of range),
 * FMT_E_TOO_BIG (a chunk would exceed the format's 256 MiB limit),
 * FMT_E_NOMEM. n may be 0 (an empty segment is valid; args->tenant names
 * its tenant). */
int fmt_segment_build(const struct fmt_segment_build_args *args, const struct fmt_event *rows,
		      const uint8_t (*chains)[FMT_HASH_BYTES], uint32_t n, uint8_t **out,
		      size_t *out_len);

/* ---- reading ---------------------------------------------------------- */

/* From the last FMT_SEG_TRAILER_BYTES of a file of file_size bytes, tells
 * where the footer is. Returns 0, FMT_E_TRUNCATED (file too small),
 * FMT_E_CORRUPT (bad magic or impossible offsets), FMT_E_VERSION. */
int fmt_segment_trailer(const uint8_t trailer[FMT_SEG_TRAILER_BYTES], uint64_t file_size,
			uint64_t *footer_offset, uint32_t *footer_len);

/* Opens a segment from its header (first FMT_SEG_HEADER_BYTES), its footer
 * bytes and its trailer, validating every checksum and every structural
 * invariant (chunks tile the file, counts agree, zone maps consistent).
 * On success *out is heap-allocated. Returns 0, FMT_E_CORRUPT,
 * FMT_E_TRUNCATED, FMT_E_VERSION, FMT_E_NOMEM. Never reads out of bounds. */
int fmt_segment_open(const uint8_t *header, const uint8_t *footer, uint32_t footer_len,
		     const uint8_t trailer[FMT_SEG_TRAILER_BYTES], uint64_t file_size,
		     struct fmt_segment **out);

/* Convenience for a whole segment image in memory: trailer + open. */
int fmt_segment_open_buf(const uint8_t *buf, size_t len, struct fmt_segment **out);

void fmt_segment_close(struct fmt_segment *seg);

/* The heap bytes an opened footer holds (itself included), for callers
 * that keep footers in a bounded cache. */
size_t fmt_segment_mem_bytes(const struct fmt_segment *seg);

/* A decoded block: the requested columns of rows [0, row_count). Columns not
 * in the mask stay empty. Heap memory owned by the block; views returned by
 * fmt_block_row() point into it and live until fmt_block_free(). */
struct fmt_block;

/* Decodes the chunks of block b named by col_mask. chunk_bytes[c] points to
 * the stored bytes of column c (chunk[c].stored_len of them, as read from
 * the file at chunk[c].offset); entries for columns outside the mask are
 * ignored. Verifies each chunk's checksum before decompressing and checks
 * the decoded values (seq contiguous and matching the zone map, occurred_at
 * within the zone map, lengths in bounds).
 * Returns 0, FMT_E_CORRUPT, FMT_E_NOMEM. */
int fmt_block_decode(const struct fmt_segment *seg, uint32_t b, uint32_t col_mask,
		     const uint8_t *const chunk_bytes[FMT_COL_COUNT], struct fmt_block **out);

/* A reusable decompression context: decoding many blocks through one
 * saves setting one up per block. Used by one thread at a time. */
struct fmt_decoder;
int fmt_decoder_new(struct fmt_decoder **out);   /* 0 or FMT_E_NOMEM */
void fmt_decoder_free(struct fmt_decoder *d);
/* fmt_block_decode through d. */
int fmt_block_decode_with(struct fmt_decoder *d, const struct fmt_segment *seg, uint32_t b,
			  uint32_t col_mask, const uint8_t *const chunk_bytes[FMT_COL_COUNT],
			  struct fmt_block **out);

/* Same, with the whole segment image in memory. */
int fmt_block_decode_buf(const struct fmt_segment *seg, const uint8_t *buf, size_t len,
			 uint32_t b, uint32_t col_mask, struct fmt_block **out);

uint32_t fmt_block_rows(const struct fmt_block *blk);
/* The columns decoded (the col_mask it was decoded with). */
uint32_t fmt_block_mask(const struct fmt_block *blk);
/* Heap bytes the block holds (structure, decoded columns and their views):
 * what a cache of decoded blocks counts against its bound. */
uint64_t fmt_block_mem_bytes(const struct fmt_block *blk);

/* Fills a view of row i (0-based within the block) with the decoded
 * columns; fields of columns not decoded are zero/empty. ev->tenant points
 * to seg->meta.tenant. attrs are written to attr_buf (attr_cap slots,
 * FMT_ATTRS_HARD_MAX is always enough). chain (may be NULL) receives the
 * row's chain value when FMT_COL_CHAIN was decoded. */
void fmt_block_row(const struct fmt_segment *seg, const struct fmt_block *blk, uint32_t i,
		   struct fmt_event *ev, struct fmt_attr *attr_buf, uint32_t attr_cap,
		   uint8_t chain[FMT_HASH_BYTES]);

/* The cheap form of fmt_block_row() for scanning many rows: sets only the
 * fields of row i that come from the columns in col_mask, which must all
 * have been decoded and hold no attributes, details or chain column; every
 * other field of *ev is left as it was. */
void fmt_block_row_cols(const struct fmt_block *blk, uint32_t i, uint32_t col_mask,
			struct fmt_event *ev);

/* Moves the columns of src into dst and frees src: two decodes of the
 * same block with disjoint masks (made, say, by two threads, each with its
 * own decoder) become one, as if decoded with both masks at once. */
void fmt_block_merge(struct fmt_block *dst, struct fmt_block *src);

void fmt_block_free(struct fmt_block *blk);

/* Whether any row of blk has this event id (FMT_COL_EVENT_ID must have
 * been decoded): a lookup's cheap first look at a block. */
bool fmt_block_has_event_id(const struct fmt_block *blk, const uint8_t id[FMT_EVENT_ID_BYTES]);

/* ---- the event-id index ------------------------------------------------ */

/* The probe key of an event id (XXH3-64 of its 16 bytes): compute it once
 * per lookup and probe every block with it. */
uint64_t fmt_event_id_key(const uint8_t id[FMT_EVENT_ID_BYTES]);

/* Whether the segment has an event-id index (version >= 2). */
bool fmt_segment_has_id_index(const struct fmt_segment *seg);

/* false: block b holds no row with this id, for certain (its min/max or
 * its Bloom filter rules it out). true: it may; always true without an
 * index. key is fmt_event_id_key(id). Reads only the opened footer. */
bool fmt_block_may_hold_id(const struct fmt_segment *seg, uint32_t b,
			   const uint8_t id[FMT_EVENT_ID_BYTES], uint64_t key);

/* Rebuilds block b's min/max and filter from its decoded event_id column
 * (blk must have FMT_COL_EVENT_ID) and compares them with the footer's.
 * Returns 0 (also without an index), FMT_E_CORRUPT (they differ: a lookup
 * could miss an event), FMT_E_NOMEM. */
int fmt_block_check_id_index(const struct fmt_segment *seg, uint32_t b,
			     const struct fmt_block *blk);

/* ---- block summaries (version 3) ---------------------------------------- */

/* The number of codes of column col's stored counts: 0 when the segment
 * has none for it (before version 3, a column other than FMT_COL_OUTCOME,
 * action and resource_type, or one with more than count_keys_max distinct
 * values in the segment or a dictionary of more than row_count
 * bytes); FMT_COL_OUTCOME: 4, the code is the outcome. */
uint32_t fmt_segment_count_keys(const struct fmt_segment *seg, unsigned col);

/* The value of code k (< fmt_segment_count_keys) of action or
 * resource_type; points into the opened footer. Values written by this
 * codec are distinct; verify checks it. */
struct fmt_str fmt_segment_count_key(const struct fmt_segment *seg, unsigned col, uint32_t k);

/* Block b's stored counts of column col (fmt_segment_count_keys() > 0):
 * writes n pairs, codes ascending, each count >= 1, summing to the
 * block's rows, to codes[] and counts[] (room for min(keys, row_count)
 * each) and returns n (>= 1). Reads only the opened footer. */
uint32_t fmt_block_counts(const struct fmt_segment *seg, uint32_t b, unsigned col,
			  uint32_t *codes, uint32_t *counts);

/* Column col's stored counts summed over every block of the segment
 * (fmt_segment_count_keys() > 0): per code, the segment's rows with that
 * value; they sum to the segment's rows. Computed when the footer was
 * opened, so a count over a whole segment reads no block's pairs. */
const uint32_t *fmt_segment_count_totals(const struct fmt_segment *seg, unsigned col);

/* The probe key of an actor id (XXH3-64 of its bytes). */
uint64_t fmt_actor_key(struct fmt_str actor_id);

/* false: block b holds no row with this actor id, for certain; true: it
 * may (always before version 3). key is fmt_actor_key(actor_id). */
bool fmt_block_may_hold_actor(const struct fmt_segment *seg, uint32_t b, uint64_t key);

/* Rebuilds block b's summary (its counts under the segment's codes, its
 * actor filter) from its decoded rows (blk must hold outcome, action,
 * resource_type and actor_id) and compares it with the footer's, byte for
 * byte. Returns 0 (also before version 3), FMT_E_CORRUPT (they differ: a
 * count would be wrong or a search could miss an event), FMT_E_NOMEM.
 * The segment-wide rules (codes in order of first appearance, a column
 * left out only when it has too many values) are checked by
 * fmt_segment_verify_buf(). */
int fmt_block_check_summary(const struct fmt_segment *seg, uint32_t b, const struct fmt_block *blk);

/* Column access for scans that need no event views (aggregates). Each
 * column must have been decoded (in col_mask); pointers live until
 * fmt_block_free(). */

/* Row values of an integer column: FMT_COL_SEQ, _RECEIVED_AT, _OCCURRED_AT. */
const uint64_t *fmt_block_ints(const struct fmt_block *blk, unsigned col);

/* Bytes of a fixed-width column, row i at i * width: FMT_COL_OUTCOME (1,
 * each <= FMT_OUTCOME_DENIED), FMT_COL_EVENT_ID (16), FMT_COL_CHAIN (32). */
const uint8_t *fmt_block_fixed(const struct fmt_block *blk, unsigned col);

/* Row i of a string column (FMT_COL_STR_FIRST..FMT_COL_STR_LAST, FMT_COL_DETAILS). */
struct fmt_str fmt_block_str(const struct fmt_block *blk, unsigned col, uint32_t i);

/* A string column whose chunk is DICT-encoded, as its dictionary: returns
 * the number of entries n (1 <= n <= rows) and points *codes at one code
 * per row (< n); fmt_block_dict_entry() gives entry k. Returns 0 and sets
 * *codes to NULL for a PLAIN chunk. Entries written by this codec are
 * distinct, but a reader must not rely on it (the checksums catch
 * accidents, not a crafted file). */
uint32_t fmt_block_dict(const struct fmt_block *blk, unsigned col, const uint32_t **codes);
struct fmt_str fmt_block_dict_entry(const struct fmt_block *blk, unsigned col, uint32_t k);

/* Decodes every block of a segment image and recomputes its event hashes,
 * chain and Merkle root against the footer, its event-id index against
 * the decoded ids and (version 3) its whole summary section against the
 * decoded rows. Returns 0, FMT_E_CORRUPT (a checksum, a structure or an
 * event-id index that does not match its rows), FMT_E_CHAIN (chain or Merkle root mismatch; *bad_seq
 * is the first seq whose stored chain value disagrees, or 0 for a root
 * mismatch), FMT_E_NOMEM. This is what `verify` runs on every segment. */
int fmt_segment_verify_buf(const uint8_t *buf, size_t len, uint64_t *bad_seq);

#endif
