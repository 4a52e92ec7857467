// SPDX-License-Identifier: Apache-2.0
/*
 * fuzz_segment.c — libFuzzer target for the segment reader
 * (format/segment.c): the input is a whole segment image. It is opened,
 * every block is decoded with all columns and with two partial masks, every
 * row is read (fmt_block_row, and fmt_block_row_cols as a search's scan
 * reads them), and the image is verified. Nothing may crash, leak or read
 * out of bounds, whatever the bytes.
 *
 * Checksums stop random mutations at the first gate, so each input is run
 * twice: as it is, and as a copy whose header, chunk and footer checksums
 * have been recomputed ("fixed up"). The second run lets the fuzzer reach
 * the structural checks of the footer and the column decoders behind them.
 * The event-id index (version 2) is probed with every decoded row's id and
 * rebuilt from the rows, as search and verify do; the block summaries
 * (version 3) are read as Count reads them, the actor filters probed with
 * the rows' actors, and each block's summary rebuilt from its rows.
 */
#include <stdlib.h>
#include <string.h>

#include "format/segment.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define META_BYTES 248
#define BLOCK_BYTES 516
#define BLOCK_FIXED_BYTES 40
#define CHUNK_REF_BYTES 28

static void read_rows(const struct fmt_segment *seg, const struct fmt_block *blk)
{
	struct fmt_attr attrs[FMT_ATTRS_HARD_MAX];
	uint8_t chain[FMT_HASH_BYTES];
	volatile uint64_t sink = 0;
	for (uint32_t i = 0; i < fmt_block_rows(blk); i++) {
		struct fmt_event ev;
		fmt_block_row(seg, blk, i, &ev, attrs, FMT_ATTRS_HARD_MAX, chain);
		for (int f = 0; f < FMT_F_STRING_COUNT; f++)
			if (ev.str[f].len)
				sink += (uint8_t)ev.str[f].ptr[ev.str[f].len - 1];
		for (uint32_t a = 0; a < ev.attr_count; a++)
			sink += ev.attrs[a].key.len + ev.attrs[a].value.len;
		if (ev.details_json.len)
			sink += (uint8_t)ev.details_json.ptr[0];
		sink += ev.seq + chain[0];
	}
	(void)sink;
}

/* Probes every block's event-id index with this block's ids, and checks
 * the index against them. Only the absence of crashes matters here. */
static void probe_ids(const struct fmt_segment *seg, uint32_t b, const struct fmt_block *blk)
{
	struct fmt_attr attrs[1];
	volatile uint32_t sink = 0;
	for (uint32_t i = 0; i < fmt_block_rows(blk) && i < 64; i++) {
		struct fmt_event ev;
		fmt_block_row(seg, blk, i, &ev, attrs, 1, NULL);
		uint64_t key = fmt_event_id_key(ev.event_id);
		for (uint32_t k = 0; k < seg->meta.block_count; k++)
			sink += fmt_block_may_hold_id(seg, k, ev.event_id, key);
	}
	sink += (uint32_t)fmt_block_check_id_index(seg, b, blk);
	(void)sink;
}

/* Reads the block's stored counts (as Count does) and probes every actor
 * filter with this block's actors, then rebuilds its summary. */
static void probe_summary(const struct fmt_segment *seg, uint32_t b, const struct fmt_block *blk)
{
	static const unsigned cols[] = { FMT_COL_OUTCOME, FMT_COL_STR_FIRST + FMT_F_ACTION,
					 FMT_COL_STR_FIRST + FMT_F_RESOURCE_TYPE };
	volatile uint64_t sink = 0;
	for (unsigned c = 0; c < sizeof(cols) / sizeof(cols[0]); c++) {
		uint32_t keys = fmt_segment_count_keys(seg, cols[c]);
		if (!keys)
			continue;
		uint32_t *codes = malloc(keys * sizeof(uint32_t)), *counts = malloc(keys * sizeof(uint32_t));
		if (codes && counts) {
			uint32_t n = fmt_block_counts(seg, b, cols[c], codes, counts);
			for (uint32_t j = 0; j < n; j++) {
				sink += counts[j];
				if (cols[c] != FMT_COL_OUTCOME)
					sink += fmt_segment_count_key(seg, cols[c], codes[j]).len;
			}
		}
		free(codes);
		free(counts);
	}
	struct fmt_attr attrs[1];
	for (uint32_t i = 0; i < fmt_block_rows(blk) && i < 64; i++) {
		struct fmt_event ev;
		fmt_block_row(seg, blk, i, &ev, attrs, 1, NULL);
		uint64_t key = fmt_actor_key(ev.str[FMT_F_ACTOR_ID]);
		for (uint32_t k = 0; k < seg->meta.block_count; k++)
			sink += fmt_block_may_hold_actor(seg, k, key);
	}
	sink += (uint32_t)fmt_block_check_summary(seg, b, blk);
	(void)sink;
}

static void read_scan_cols(const struct fmt_block *blk, uint32_t cols)
{
	volatile uint64_t sink = 0;
	for (uint32_t i = 0; i < fmt_block_rows(blk); i++) {
		struct fmt_event ev = { 0 };
		fmt_block_row_cols(blk, i, cols, &ev);
		if (ev.str[FMT_F_ACTOR_ID].len)
			sink += (uint8_t)ev.str[FMT_F_ACTOR_ID].ptr[ev.str[FMT_F_ACTOR_ID].len - 1];
		sink += ev.seq + (uint64_t)ev.occurred_at_ns + ev.outcome + ev.event_id[15];
	}
	(void)sink;
}

static void run(const uint8_t *data, size_t size)
{
	struct fmt_segment *seg = NULL;
	if (fmt_segment_open_buf(data, size, &seg) == 0) {
		const uint32_t partial = (1u << FMT_COL_SEQ) | (1u << FMT_COL_OCCURRED_AT) |
					 (1u << FMT_COL_ATTRS) | (1u << FMT_COL_DETAILS);
		/* What a search's scan decodes: keys and filtered columns. */
		const uint32_t scan = (1u << FMT_COL_SEQ) | (1u << FMT_COL_OCCURRED_AT) |
				      (1u << FMT_COL_EVENT_ID) | (1u << FMT_COL_OUTCOME) |
				      (1u << (FMT_COL_STR_FIRST + FMT_F_ACTOR_ID));
		for (uint32_t b = 0; b < seg->meta.block_count; b++) {
			struct fmt_block *blk = NULL;
			if (fmt_block_decode_buf(seg, data, size, b, FMT_COLS_ALL, &blk) == 0) {
				read_rows(seg, blk);
				probe_ids(seg, b, blk);
				probe_summary(seg, b, blk);
				fmt_block_free(blk);
			}
			if (fmt_block_decode_buf(seg, data, size, b, partial, &blk) == 0) {
				read_rows(seg, blk);
				fmt_block_free(blk);
			}
			if (fmt_block_decode_buf(seg, data, size, b, scan, &blk) == 0) {
				read_scan_cols(blk, scan);
				fmt_block_free(blk);
			}
		}
		fmt_segment_close(seg);
	}
	uint64_t bad_seq;
	(void)fmt_segment_verify_buf(data, size, &bad_seq);
}

/* Recomputes every checksum the reader checks, trusting the (mutated)
 * offsets only as far as they stay inside the buffer. Returns 0 when the
 * copy would not differ from the input's shape (too small to fix up). */
static int fix_up(uint8_t *p, size_t size)
{
	if (size < 32 + META_BYTES + 32)
		return 0;
	fmt_put_u64(p + 24, fmt_xxh3(p, 24));
	uint8_t *trailer = p + size - 32;
	uint32_t footer_len = fmt_get_u32(trailer + 8);
	if (footer_len > size - 64)
		return 1;
	uint8_t *footer = p + size - 32 - footer_len;
	/* The footer's block count, bounded by its length (version 2 footers
	 * carry the event-id index after the block entries). */
	uint64_t blocks = footer_len >= META_BYTES ? (footer_len - META_BYTES) / BLOCK_BYTES : 0;
	if (footer_len >= META_BYTES && fmt_get_u32(footer + 88) < blocks)
		blocks = fmt_get_u32(footer + 88);
	for (uint64_t b = 0; b < blocks; b++) {
		for (unsigned c = 0; c < FMT_COL_COUNT; c++) {
			uint8_t *ref = footer + META_BYTES + b * BLOCK_BYTES + BLOCK_FIXED_BYTES +
				       c * CHUNK_REF_BYTES;
			uint64_t off = fmt_get_u64(ref);
			uint32_t len = fmt_get_u32(ref + 8);
			if (off <= size && len <= size - off)
				fmt_put_u64(ref + 20, fmt_xxh3(p + off, len));
		}
	}
	fmt_put_u64(trailer + 16, fmt_xxh3(footer, footer_len));
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* A private copy of exactly size bytes, so ASan sees any overread. */
	uint8_t *copy = calloc(1, size ? size : 1);
	if (!copy)
		return 0;
	if (size)
		memcpy(copy, data, size);
	run(copy, size);
	if (fix_up(copy, size))
		run(copy, size);
	free(copy);
	return 0;
}
