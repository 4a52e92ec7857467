// SPDX-License-Identifier: Apache-2.0
/*
 * test_remote.c — local retention and reads of segments that live only in
 * S3 (engine/remote.c), with a fetcher that copies from a folder standing
 * for the bucket (the S3 fetcher is tested against a real S3 server in
 * tests/integration): replicated segments leave the local disk once their
 * retention passed, searches, counts and verifies still answer (fetching
 * them into the bounded cache), a restart keeps them remote, the offline
 * verifier accepts the manifest, and a failed fetch fails the request that
 * needed it (a total without filters needs no segment: the manifest has it).
 */
#include <criterion/criterion.h>

#include "engine/engine.h"
#include "engine/offline.h"
#include "engine_test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <sys/stat.h>

struct bucket {
	char dir[256];
	struct eng_engine *_Atomic eng;
	_Atomic int fetches;
	_Atomic bool fail;
};

/* Copies <bucket>/<id>.hseg to dest_path (synchronously: fine for a test)
 * and reports completion like the real fetcher's thread would. */
static int copy_fetch(void *ctx, const struct eng_fetch_req *req)
{
	struct bucket *b = ctx;
	char src[512], tmp[4300];
	snprintf(src, sizeof(src), "%s/%016llx.hseg", b->dir, (unsigned long long)req->segment_id);
	snprintf(tmp, sizeof(tmp), "%s.tmp", req->dest_path);
	atomic_fetch_add(&b->fetches, 1);
	int status = 0;
	uint8_t *buf = NULL;
	size_t len = 0;
	if (atomic_load(&b->fail) || eng_file_read_all(src, &buf, &len) != 0 || len != req->file_size) {
		status = -EIO;
	} else {
		int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || write(fd, buf, len) != (ssize_t)len || rename(tmp, req->dest_path) != 0)
			status = -EIO;
		if (fd >= 0)
			close(fd);
	}
	free(buf);
	eng_fetch_done(atomic_load(&b->eng), req->shard, req->segment_id, status);
	return 0;
}

static uint32_t search_count(struct eng_producer *p, const char *tenant, int *status)
{
	uint32_t total = 0;
	uint8_t token[ENG_PAGE_TOKEN_BYTES];
	uint32_t token_len = 0;
	for (;;) {
		struct eng_search s = { .tenant = fmt_str_c(tenant), .limit = 1000,
					.page_token = token_len ? token : NULL,
					.page_token_len = token_len };
		*status = eng_search_wait(p, &s);
		if (*status)
			return total;
		total += s.hit_count;
		token_len = s.next_page_token_len;
		memcpy(token, s.next_page_token, token_len);
		eng_search_release(&s);
		if (!token_len)
			return total;
	}
}

static void replicate_all(struct eng_producer *p, struct bucket *b)
{
	static struct eng_export_item items[64];
	struct eng_export_list l = { .shard = 0, .kind = ENG_EXPORT_REPLICATE, .items = items,
				     .cap = 64 };
	cr_assert_eq(eng_export_list_wait(p, &l), 0);
	for (uint32_t i = 0; i < l.count; i++) {
		char dst[512];
		snprintf(dst, sizeof(dst), "%s/%016llx.hseg", b->dir,
			 (unsigned long long)items[i].segment_id);
		uint8_t *buf;
		size_t len;
		cr_assert_eq(eng_file_read_all(items[i].path, &buf, &len), 0);
		int fd = open(dst, O_WRONLY | O_CREAT | O_EXCL, 0600);
		cr_assert(fd >= 0 && write(fd, buf, len) == (ssize_t)len);
		close(fd);
		free(buf);
		struct eng_export_mark m = { .tenant = fmt_str_c(items[i].tenant),
					     .segment_id = items[i].segment_id,
					     .kind = ENG_EXPORT_REPLICATE, .ref = fmt_str_c("v1") };
		cr_assert_eq(eng_export_mark_wait(p, &m), 0);
	}
}

static uint64_t wait_remote(struct eng_engine *eng, uint64_t n)
{
	struct eng_shard_stats st;
	for (int i = 0; i < 500; i++) {
		eng_shard_stats(eng, 0, &st);
		if (st.segments_remote >= n)
			break;
		usleep(10000);
	}
	return st.segments_remote;
}

Test(remote, retention_then_reads_through_the_cache)
{
	char data[256];
	struct bucket b = { 0 };
	tu_tmpdir(data, sizeof(data));
	tu_tmpdir(b.dir, sizeof(b.dir));
	struct eng_config cfg;
	eng_config_default(&cfg);
	cfg.shards = 1;
	cfg.pin_threads = false;
	cfg.seal_rows = 50;
	cfg.local_retention_ns = 0;
	cfg.remote_cache_bytes = 1u << 20;
	cfg.fetcher = (struct eng_fetcher){ .ctx = &b, .fetch = copy_fetch };
	struct eng_engine *eng = tu_open(data, &cfg);
	cr_assert(eng);
	atomic_store(&b.eng, eng);
	struct eng_producer *p;
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	struct eng_append req;
	for (uint32_t k = 0; k < 4; k++)
		cr_assert_eq(tu_append(p, "acme", k * 50, 50, &req), 0);
	cr_assert_geq(tu_wait_sealed(eng, 0, 4), 4);
	/* Blocks decoded while the files are local go with the files. */
	int status;
	cr_assert_eq(search_count(p, "acme", &status), 200);
	struct eng_shard_stats bs;
	eng_shard_stats(eng, 0, &bs);
	for (int i = 0; i < 400 && bs.block_cache_bytes == 0; i++) {
		usleep(5000); /* stats are published once per tick */
		eng_shard_stats(eng, 0, &bs);
	}
	cr_assert_gt(bs.block_cache_bytes, 0, "the search's blocks were not cached");
	replicate_all(p, &b);
	cr_assert_eq(wait_remote(eng, 4), 4);
	for (int i = 0; i < 400 && bs.block_cache_bytes != 0; i++) {
		usleep(5000);
		eng_shard_stats(eng, 0, &bs);
	}
	cr_assert_eq(bs.block_cache_bytes, 0, "blocks of removed segments are still cached");

	/* The local files are gone; the data still answers. */
	char path[512];
	snprintf(path, sizeof(path), "%s/shard-000/segments/0000000000000000.hseg", data);
	struct stat st;
	cr_assert_neq(stat(path, &st), 0, "a removed segment's file is still there");
	cr_assert_eq(search_count(p, "acme", &status), 200);
	cr_assert_eq(status, 0);
	cr_assert_eq(atomic_load(&b.fetches), 4);
	struct eng_verify v = { .tenant = fmt_str_c("acme") };
	cr_assert_eq(eng_verify_wait(p, &v), 0);
	cr_assert(v.ok, "%s", v.problem);
	cr_assert_eq(v.events_checked, 200);
	cr_assert_eq(atomic_load(&b.fetches), 4, "cached copies are read again, not fetched");

	/* A restart keeps them remote; the offline verifier accepts that. */
	eng_producer_close(p);
	eng_close(eng);
	struct eng_offline_summary sum;
	cr_assert_eq(eng_verify_dir(data, NULL, NULL, &sum), 0);
	cr_assert_eq(sum.problems, 0);
	eng = tu_open(data, &cfg);
	cr_assert(eng);
	atomic_store(&b.eng, eng);
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	cr_assert_eq(search_count(p, "acme", &status), 200);
	struct eng_count c = { .tenant = fmt_str_c("acme"), .group_by = ENG_COUNT_BY_ACTION };
	cr_assert_eq(eng_count_wait(p, &c), 0);
	cr_assert_eq(c.total, 200);
	cr_assert_eq(c.group_count, 2);
	cr_assert(fmt_str_eq(c.groups[0].key, fmt_str_c("document.read")));
	cr_assert_eq(c.groups[0].count, 133);
	cr_assert_eq(c.groups[1].count, 67);
	eng_count_release(&c);
	struct eng_shard_stats ss;
	eng_shard_stats(eng, 0, &ss);
	cr_assert_eq(ss.segments_remote, 4);
	cr_assert_eq(ss.segments_local, 0);

	/* A fetch that fails fails the request that needed it. */
	eng_producer_close(p);
	eng_close(eng);
	eng = tu_open(data, &cfg);
	atomic_store(&b.eng, eng);
	cr_assert_eq(eng_producer_open(eng, &p), 0);
	atomic_store(&b.fail, true);
	int fetches = atomic_load(&b.fetches);
	c = (struct eng_count){ .tenant = fmt_str_c("acme") };
	cr_assert_eq(eng_count_wait(p, &c), 0, "a total needs no segment read");
	cr_assert_eq(c.total, 200);
	cr_assert_eq(atomic_load(&b.fetches), fetches);
	c = (struct eng_count){ .tenant = fmt_str_c("acme"), .group_by = ENG_COUNT_BY_OUTCOME };
	cr_assert_eq(eng_count_wait(p, &c), -EIO);
	cr_assert_null(c.groups);
	search_count(p, "acme", &status);
	cr_assert_eq(status, -EIO);
	atomic_store(&b.fail, false);
	cr_assert_eq(search_count(p, "acme", &status), 200, "a later request fetches again");
	eng_producer_close(p);
	eng_close(eng);
}
