// SPDX-License-Identifier: Apache-2.0
/*
 * calib.c — hodei-bench-calib: how fast is this machine right now, at the
 * work hodei-auditd does? A fixed workload, the same on every run, timed
 * in thread CPU time and in wall time, printed as one JSON object.
 *
 * The development machines are shared: the same build ran 1.5-2x slower
 * from one hour to the next (docs/PERFORMANCE.md). bench/harness.py runs
 * this before and after a full run and keeps the figures with the results,
 * so two runs' absolute figures can be put side by side, and a session can
 * tell a quiet machine from a busy one before it measures anything.
 *
 * The workload (seed 1, 20,000 events of one tenant, all in memory):
 *   append  canonical encoding, event hash and chain step, per event
 *           (what the append path does for each event, without the I/O);
 *   seal    fmt_segment_build at zstd level 1, per row;
 *   decode  fmt_block_decode of every column of every block, per block
 *           of 512 rows (what a query pays for a cold block).
 * Each is run --repeat times; the fastest is kept (the least disturbed).
 * wall / cpu above 1 means the thread waited for a core inside this
 * machine. Contention on the VM's host does not show there: it makes the
 * CPU figures themselves larger (two runs 5 s apart on an idle VM gave
 * 1,145 and 1,451 ns per appended event). No figure is compared with
 * anything.
 */
#include "bench/gen.h"
#include "format/event.h"
#include "format/hash.h"
#include "format/segment.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CALIB_EVENTS 20000u
#define CALIB_CANON_MAX 8192u

static double clock_ns(clockid_t id)
{
	struct timespec t;
	clock_gettime(id, &t);
	return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

struct timing {
	double cpu_ns, wall_ns;
};

struct stamp {
	double cpu, wall;
};

static struct stamp stamp_now(void)
{
	return (struct stamp){ clock_ns(CLOCK_THREAD_CPUTIME_ID), clock_ns(CLOCK_MONOTONIC) };
}

/* Keeps the run with the least CPU time. */
static void keep_fastest(struct timing *best, struct stamp from, double per)
{
	struct stamp to = stamp_now();
	struct timing t = { (to.cpu - from.cpu) / per, (to.wall - from.wall) / per };
	if (best->cpu_ns == 0 || t.cpu_ns < best->cpu_ns)
		*best = t;
}

struct workload {
	uint8_t *canon;       /* CALIB_EVENTS encodings, CALIB_CANON_MAX apart */
	uint32_t *canon_len;
	struct fmt_event *rows;
	struct fmt_attr (*attrs)[FMT_ATTRS_HARD_MAX];
	uint8_t (*chains)[FMT_HASH_BYTES];
	uint8_t (*hashes)[FMT_HASH_BYTES];
};

static void die(const char *what)
{
	fprintf(stderr, "hodei-bench-calib: %s\n", what);
	exit(1);
}

/* Draws the events once, as one tenant's seq 1..n (their strings copied
 * into canonical encodings, which the rows' views then point into). */
static void workload_init(struct workload *w)
{
	w->canon = malloc((size_t)CALIB_EVENTS * CALIB_CANON_MAX);
	w->canon_len = calloc(CALIB_EVENTS, sizeof(*w->canon_len));
	w->rows = calloc(CALIB_EVENTS, sizeof(*w->rows));
	w->attrs = calloc(CALIB_EVENTS, sizeof(*w->attrs));
	w->chains = calloc(CALIB_EVENTS, sizeof(*w->chains));
	w->hashes = calloc(CALIB_EVENTS, sizeof(*w->hashes));
	if (!w->canon || !w->canon_len || !w->rows || !w->attrs || !w->chains || !w->hashes)
		die("out of memory");
	struct gen g;
	if (gen_init(&g, 1, GEN_TENANTS_DEFAULT) != 0)
		die("cannot start the generator");
	for (uint32_t i = 0; i < CALIB_EVENTS; i++) {
		struct fmt_event ev;
		struct fmt_str tenant;
		gen_next(&g, &ev, &tenant);
		ev.tenant = fmt_str_c("calib");
		ev.seq = i + 1;
		ev.received_at_ns = ev.occurred_at_ns;
		uint8_t *at = w->canon + (size_t)i * CALIB_CANON_MAX;
		int64_t n = fmt_event_canon_encode(&ev, at, CALIB_CANON_MAX);
		if (n < 0 || fmt_event_canon_decode(at, (size_t)n, &w->rows[i], w->attrs[i],
						    FMT_ATTRS_HARD_MAX) != 0)
			die("an event does not encode");
		w->canon_len[i] = (uint32_t)n;
	}
	gen_free(&g);
}

static void workload_free(struct workload *w)
{
	free(w->canon);
	free(w->canon_len);
	free(w->rows);
	free(w->attrs);
	free(w->chains);
	free(w->hashes);
}

/* Encode, hash and chain every event: the append path's CPU per event. */
static void run_append(struct workload *w, uint8_t *scratch, struct timing *best)
{
	uint8_t chain[FMT_HASH_BYTES] = { 0 };
	struct stamp from = stamp_now();
	for (uint32_t i = 0; i < CALIB_EVENTS; i++) {
		int64_t n = fmt_event_canon_encode(&w->rows[i], scratch, CALIB_CANON_MAX);
		if (n < 0)
			die("encoding failed");
		fmt_sha256(scratch, (size_t)n, w->hashes[i]);
		fmt_chain_next(chain, w->hashes[i], chain);
		memcpy(w->chains[i], chain, FMT_HASH_BYTES);
	}
	keep_fastest(best, from, CALIB_EVENTS);
}

static uint8_t *run_seal(struct workload *w, struct timing *best, size_t *len)
{
	static const uint8_t genesis[FMT_HASH_BYTES];
	struct fmt_segment_build_args args = {
		.segment_id = 1,
		.zstd_level = 1,
		.chain_before = genesis,
		.event_hashes = (const uint8_t (*)[FMT_HASH_BYTES])w->hashes,
	};
	uint8_t *img = NULL;
	struct stamp from = stamp_now();
	if (fmt_segment_build(&args, w->rows, (const uint8_t (*)[FMT_HASH_BYTES])w->chains,
			      CALIB_EVENTS, &img, len) != 0)
		die("the segment build failed");
	keep_fastest(best, from, CALIB_EVENTS);
	return img;
}

static void run_decode(const uint8_t *img, size_t len, struct timing *best, uint32_t *blocks)
{
	struct fmt_segment *seg;
	if (fmt_segment_open_buf(img, len, &seg) != 0)
		die("the segment does not open");
	*blocks = seg->meta.block_count;
	struct stamp from = stamp_now();
	for (uint32_t b = 0; b < seg->meta.block_count; b++) {
		struct fmt_block *blk;
		if (fmt_block_decode_buf(seg, img, len, b, FMT_COLS_ALL, &blk) != 0)
			die("a block does not decode");
		fmt_block_free(blk);
	}
	keep_fastest(best, from, seg->meta.block_count);
	fmt_segment_close(seg);
}

static void print_timing(const char *name, const char *unit, struct timing t, double scale,
			 const char *sep)
{
	printf("  \"%s\": {\"cpu_%s\": %.1f, \"wall_%s\": %.1f, \"wall_over_cpu\": %.2f}%s\n", name,
	       unit, t.cpu_ns / scale, unit, t.wall_ns / scale, t.wall_ns / t.cpu_ns, sep);
}

int main(int argc, char **argv)
{
	int repeat = 5;
	static const struct option opts[] = {
		{ "repeat", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c;
	while ((c = getopt_long(argc, argv, "r:h", opts, NULL)) != -1) {
		if (c == 'r' && (repeat = atoi(optarg)) >= 1 && repeat <= 1000)
			continue;
		fprintf(stderr, "usage: hodei-bench-calib [--repeat N (1..1000, default 5)]\n");
		return c == 'h' ? 0 : 2;
	}
	if (optind != argc) {
		fprintf(stderr, "hodei-bench-calib: unexpected argument %s\n", argv[optind]);
		return 2;
	}
	struct workload w;
	workload_init(&w);
	uint8_t *scratch = malloc(CALIB_CANON_MAX);
	if (!scratch)
		die("out of memory");
	struct timing append = { 0 }, seal = { 0 }, decode = { 0 };
	uint32_t blocks = 0;
	size_t bytes = 0;
	for (int r = 0; r < repeat; r++) {
		run_append(&w, scratch, &append);
		uint8_t *img = run_seal(&w, &seal, &bytes);
		run_decode(img, bytes, &decode, &blocks);
		free(img);
	}
	printf("{\n  \"events\": %u, \"repeat\": %d, \"segment_bytes_per_event\": %.1f, "
	       "\"blocks\": %u,\n",
	       CALIB_EVENTS, repeat, (double)bytes / CALIB_EVENTS, blocks);
	print_timing("append", "ns_per_event", append, 1, ",");
	print_timing("seal", "ns_per_row", seal, 1, ",");
	print_timing("decode", "us_per_block", decode, 1000, "");
	printf("}\n");
	free(scratch);
	workload_free(&w);
	return 0;
}
