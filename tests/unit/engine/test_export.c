// SPDX-License-Identifier: Apache-2.0
/*
 * test_export.c — export lists and marks (engine/export.c): the segments
 * that still need replication or mirroring are listed with everything an
 * exporter needs, a mark is durable (manifest record) before its callback,
 * survives a restart and a power cut, and a bad mark changes nothing.
 */
#include <criterion/criterion.h>

#include "engine/engine.h"
#include "engine/offline.h"
#include "engine_test_util.h"

#include <sys/stat.h>

#define ITEMS 64

static struct eng_config cfg_small(void)
{
	struct eng_config cfg;
	eng_config_default(&cfg);
	cfg.shards = 1;
	cfg.pin_threads = false;
	cfg.seal_rows = 50; /* a segment per 50 events */
	cfg.io = ENG_IO_SYNC;
	return cfg;
}

static uint32_t list(struct eng_producer *p, enum eng_export_kind kind, struct eng_export_item *items,
		     struct eng_export_list *req)
{
	memset(req, 0, sizeof(*req));
	req->shard = 0;
	req->kind = kind;
	req->items = items;
	req->cap = ITEMS;
	cr_assert_eq(eng_export_list_wait(p, req), 0);
	return req->count;
}

static int mark(struct eng_producer *p, const char *tenant, uint64_t id, enum eng_export_kind kind,
		const char *ref)
{
	struct eng_export_mark m = { 0 };
	m.tenant = fmt_str_c(tenant);
	m.segment_id = id;
	m.kind = kind;
	m.ref = fmt_str_c(ref);
	return eng_export_mark_wait(p, &m);
}

/* Appends 100 events to each of two tenants and waits for 4 segments. */
static void fill(struct eng_engine *eng, struct eng_producer *p)
{
	struct eng_append req;
	for (uint32_t k = 0; k < 2; k++) {
		cr_assert_eq(tu_append(p, "alpha", k * 50, 50, &req), 0);
		cr_assert_eq(tu_append(p, "beta", k * 50, 50, &req), 0);
	}
	cr_assert_geq(tu_wait_sealed(eng, 0, 4), 4);
}

Test(export, list_mark_and_restart)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	struct eng_config cfg = cfg_small();
	struct eng_engine *eng = tu_open(dir, &cfg);
	cr_assert(eng);
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	fill(eng, p);

	static struct eng_export_item items[ITEMS];
	struct eng_export_list req;
	cr_assert_eq(list(p, ENG_EXPORT_REPLICATE, items, &req), 4);
	cr_assert_eq(req.pending, 4);
	uint64_t bytes = 0;
	for (uint32_t i = 0; i < 4; i++) {
		struct stat st;
		cr_assert_eq(stat(items[i].path, &st), 0, "%s", items[i].path);
		cr_assert_eq((uint64_t)st.st_size, items[i].file_size);
		cr_assert_eq(items[i].row_count, 50);
		cr_assert_eq(items[i].last_seq - items[i].first_seq + 1, 50);
		cr_assert_eq(items[i].replicated, false);
		bytes += items[i].file_size;
	}
	cr_assert_eq(req.pending_bytes, bytes);
	cr_assert_gt(req.oldest_pending_ns, 0);

	/* Mark the first two replicated, one of them mirrored too. */
	struct eng_export_item a = items[0], b = items[1];
	cr_assert_eq(mark(p, a.tenant, a.segment_id, ENG_EXPORT_REPLICATE, "ver-a"), 0);
	cr_assert_eq(mark(p, b.tenant, b.segment_id, ENG_EXPORT_REPLICATE, "ver-b"), 0);
	cr_assert_eq(mark(p, b.tenant, b.segment_id, ENG_EXPORT_MIRROR, ""), 0);
	cr_assert_eq(list(p, ENG_EXPORT_REPLICATE, items, &req), 2);
	for (uint32_t i = 0; i < 2; i++)
		cr_assert(items[i].segment_id != a.segment_id && items[i].segment_id != b.segment_id);
	cr_assert_eq(list(p, ENG_EXPORT_MIRROR, items, &req), 3);

	/* Bad marks change nothing. */
	cr_assert_eq(mark(p, a.tenant, 0x7777, ENG_EXPORT_REPLICATE, "x"), FMT_E_NOT_FOUND);
	cr_assert_eq(mark(p, "nobody", a.segment_id, ENG_EXPORT_MIRROR, ""), FMT_E_NOT_FOUND);
	char longref[ENG_EXPORT_REF_MAX + 2];
	memset(longref, 'v', sizeof(longref) - 1);
	longref[sizeof(longref) - 1] = 0;
	cr_assert_eq(mark(p, a.tenant, a.segment_id, ENG_EXPORT_REPLICATE, longref), FMT_E_INVALID);
	struct eng_shard_stats st;
	eng_shard_stats(eng, 0, &st);
	cr_assert_eq(st.segments_replicated, 2);
	cr_assert_eq(st.segments_mirrored, 1);

	/* A restart reads the marks back from the manifest. */
	eng_producer_close(p);
	eng_close(eng);
	eng = tu_open(dir, &cfg);
	cr_assert(eng);
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	cr_assert_eq(list(p, ENG_EXPORT_REPLICATE, items, &req), 2);
	cr_assert_eq(list(p, ENG_EXPORT_MIRROR, items, &req), 3);
	eng_shard_stats(eng, 0, &st);
	cr_assert_eq(st.segments_replicated, 2);
	cr_assert_eq(st.segments_mirrored, 1);
	/* A second upload of a segment replaces its version id. */
	cr_assert_eq(mark(p, a.tenant, a.segment_id, ENG_EXPORT_REPLICATE, "ver-a2"), 0);
	eng_producer_close(p);
	eng_close(eng);

	/* The offline verifier accepts export records. */
	struct eng_offline_summary sum;
	cr_assert_eq(eng_verify_dir(dir, NULL, NULL, &sum), 0);
	cr_assert_eq(sum.problems, 0);
}

Test(export, a_completed_mark_survives_a_power_cut)
{
	char dir[256];
	tu_tmpdir(dir, sizeof(dir));
	struct eng_config cfg = cfg_small();
	cfg.io = ENG_IO_FAULT;
	struct eng_engine *eng = tu_open(dir, &cfg);
	cr_assert(eng);
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	fill(eng, p);
	static struct eng_export_item items[ITEMS];
	struct eng_export_list req;
	cr_assert_eq(list(p, ENG_EXPORT_MIRROR, items, &req), 4);
	for (uint32_t i = 0; i < 3; i++)
		cr_assert_eq(mark(p, items[i].tenant, items[i].segment_id, ENG_EXPORT_MIRROR, ""), 0);
	cr_assert_eq(eng_power_cut(eng), 0);
	eng_close(eng);
	cfg.io = ENG_IO_SYNC;
	eng = tu_open(dir, &cfg);
	cr_assert(eng);
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	cr_assert_eq(list(p, ENG_EXPORT_MIRROR, items, &req), 1);
	eng_producer_close(p);
	eng_close(eng);
}
