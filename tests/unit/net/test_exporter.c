// SPDX-License-Identifier: Apache-2.0
/*
 * test_exporter.c — the export workers (net/exporter.c) against a real
 * engine and a target that copies segment files into a folder (the S3 and
 * ClickHouse targets are tested against real servers in tests/integration):
 * every sealed segment is exported once and marked; a target that refuses
 * (prepare fails) or fails some exports makes the workers back off and
 * retry, and nothing is marked that was not exported; a restart lists only
 * what was not marked.
 */
#include <criterion/criterion.h>

#include "engine/offline.h"
#include "net/exporter.h"
#include "tests/unit/engine/engine_test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>

static const char *const kinds[] = { "refused", "failed" };

struct target {
	char dir[512];
	_Atomic int prepare_failures;  /* fail prepare this many times */
	_Atomic int export_failures;   /* fail this many exports */
	_Atomic int exports;           /* successful copies */
	_Atomic int problems;          /* counted here, asserted on the test's thread */
};

static void *t_open(void *ctx) { return ctx; }
static void t_close(void *w) { (void)w; }

static int t_prepare(void *w, char *why, size_t cap, uint32_t *kind)
{
	struct target *t = w;
	if (atomic_fetch_sub(&t->prepare_failures, 1) > 0) {
		snprintf(why, cap, "target refuses");
		*kind = 0;
		return -1;
	}
	return 0;
}

static int t_export(void *w, const struct eng_export_item *it, char *ref, size_t ref_cap, char *why,
		    size_t why_cap, uint32_t *kind)
{
	struct target *t = w;
	if (atomic_fetch_sub(&t->export_failures, 1) > 0) {
		snprintf(why, why_cap, "injected failure");
		*kind = 1;
		return -1;
	}
	char dst[1024];
	snprintf(dst, sizeof(dst), "%s/%s-%016llx", t->dir, it->tenant,
		 (unsigned long long)it->segment_id);
	/* Workers are other threads: no cr_assert here, count problems. */
	uint8_t *buf = NULL;
	size_t len = 0;
	int fd = open(dst, O_WRONLY | O_CREAT | O_EXCL, 0600); /* twice: EEXIST */
	if (fd < 0 || eng_file_read_all(it->path, &buf, &len) != 0 || len != it->file_size ||
	    write(fd, buf, len) != (ssize_t)len)
		atomic_fetch_add(&t->problems, 1);
	if (fd >= 0)
		close(fd);
	free(buf);
	snprintf(ref, ref_cap, "copy-%llx", (unsigned long long)it->segment_id);
	atomic_fetch_add(&t->exports, 1);
	return 0;
}

static struct exporter_ops ops_for(struct target *t)
{
	return (struct exporter_ops){ .name = "test", .metric_prefix = "hodei_test_export",
				      .kind = ENG_EXPORT_REPLICATE, .ctx = t, .error_kinds = kinds,
				      .error_kind_count = 2, .worker_open = t_open,
				      .worker_close = t_close, .prepare = t_prepare,
				      .export_one = t_export };
}

static struct exporter_config fast(void)
{
	struct exporter_config c;
	exporter_config_default(&c);
	c.backoff_min_ns = 1000000;   /* 1 ms: the test waits for the work, not the clock */
	c.backoff_max_ns = 20000000;
	c.poll_interval_ns = 20000000;
	c.workers = 3;
	c.list_batch = 4;             /* several passes per shard */
	return c;
}

static bool wait_exported(struct target *t, int n)
{
	for (int i = 0; i < 1000 && atomic_load(&t->exports) < n; i++)
		usleep(10000);
	return atomic_load(&t->exports) >= n;
}

Test(exporter, every_segment_once_through_refusals_and_failures)
{
	char data[256];
	tu_tmpdir(data, sizeof(data));
	struct target t = { .prepare_failures = 3, .export_failures = 5 };
	tu_tmpdir(t.dir, sizeof(t.dir));
	struct eng_config cfg;
	eng_config_default(&cfg);
	cfg.shards = 2;
	cfg.pin_threads = false;
	cfg.seal_rows = 20;
	struct eng_engine *eng = tu_open(data, &cfg);
	cr_assert(eng);
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	struct eng_append req;
	const char *tenants[] = { "a", "b", "c", "d", "e" };
	for (int k = 0; k < 5; k++)
		for (int j = 0; j < 4; j++)
			cr_assert_eq(tu_append(p, tenants[k], (uint32_t)j * 20, 20, &req), 0);
	uint64_t sealed = 0;
	for (int i = 0; i < 500 && sealed < 20; i++, usleep(10000)) {
		sealed = 0;
		for (uint32_t s = 0; s < 2; s++) {
			struct eng_shard_stats st;
			eng_shard_stats(eng, s, &st);
			sealed += st.segments_sealed;
		}
	}
	cr_assert_eq(sealed, 20);

	struct exporter *x;
	struct exporter_ops ops = ops_for(&t);
	struct exporter_config xc = fast();
	cr_assert_eq(exporter_start(eng, &ops, &xc, &x), 0);
	cr_assert(wait_exported(&t, 20), "exported %d of 20", atomic_load(&t.exports));
	for (int i = 0; i < 500 && !exporter_idle(x); i++)
		usleep(10000);
	cr_assert(exporter_idle(x));
	struct mx_buf b;
	mx_buf_init(&b, 0, 0);
	cr_assert_eq(exporter_render_metrics(x, &b), 0);
	cr_assert(strstr(b.data, "hodei_test_export_segments_total 20\n"), "%s", b.data);
	cr_assert(strstr(b.data, "hodei_test_export_backlog_segments 0\n"), "%s", b.data);
	cr_assert(strstr(b.data, "hodei_test_export_errors_total{kind=\"failed\"} 5\n"), "%s", b.data);
	mx_buf_free(&b);
	exporter_stop(x);
	cr_assert_eq(atomic_load(&t.exports), 20);
	cr_assert_eq(atomic_load(&t.problems), 0, "a segment exported twice or unreadable");

	/* Everything is marked: after a restart nothing is listed. */
	eng_producer_close(p);
	eng_close(eng);
	eng = tu_open(data, &cfg);
	cr_assert(eng);
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	static struct eng_export_item items[32];
	for (uint32_t s = 0; s < 2; s++) {
		struct eng_export_list l = { .shard = s, .kind = ENG_EXPORT_REPLICATE, .items = items,
					     .cap = 32 };
		cr_assert_eq(eng_export_list_wait(p, &l), 0);
		cr_assert_eq(l.pending, 0);
	}
	eng_producer_close(p);
	eng_close(eng);
}
