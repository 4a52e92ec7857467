// SPDX-License-Identifier: Apache-2.0
/*
 * targets.c — the S3 replicator and the ClickHouse mirror as exporter ops
 * (see targets.h for what each guarantees).
 */
#include "net/targets.h"

#include "engine/offline.h"
#include "net/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Test-only crash points (HODEI_FAILPOINT, like net/clickhouse.c's): the
 * process aborts at the named point so a test can check recovery from
 * exactly there. */
static bool failpoint(const char *name)
{
	const char *fp = getenv("HODEI_FAILPOINT");
	return fp && strcmp(fp, name) == 0;
}

/* ---- S3 --------------------------------------------------------------------- */

/* Error kinds of the replicator: S3's (minus "none"), then ours. */
enum { R_VERSIONING = S3_ERR_KIND_COUNT - 1, R_KINDS = S3_ERR_KIND_COUNT };
static const char *replicator_kinds[R_KINDS];

static uint32_t s3_kind_index(enum s3_err_kind k)
{
	return k == S3_ERR_NONE ? (uint32_t)S3_ERR_LOCAL - 1 : (uint32_t)k - 1;
}

struct replicator_worker {
	struct replicator_ctx *ctx;
	struct s3_client *c;
};

static void *r_open(void *arg)
{
	struct replicator_ctx *ctx = arg;
	struct replicator_worker *w = calloc(1, sizeof(*w));
	struct s3_error err = { 0 };
	if (!w)
		return NULL;
	w->ctx = ctx;
	if (s3_client_new(&ctx->cfg, &w->c, &err) != 0) {
		free(w);
		return NULL;
	}
	if (ctx->cancel)
		s3_client_set_cancel(w->c, ctx->cancel);
	return w;
}

static void r_close(void *arg)
{
	struct replicator_worker *w = arg;
	s3_client_free(w->c);
	free(w);
}

static int r_prepare(void *arg, char *why, size_t cap, uint32_t *kind)
{
	struct replicator_worker *w = arg;
	enum s3_versioning v;
	struct s3_error err = { 0 };
	int rc = s3_get_versioning(w->c, &v, &err);
	if (rc) {
		char line[700];
		s3_error_format(&err, line, sizeof(line));
		snprintf(why, cap, "bucket %s: cannot check versioning: %s", w->ctx->cfg.bucket, line);
		*kind = s3_kind_index(err.kind);
		return rc;
	}
	atomic_store(&w->ctx->versioning, (int)v);
	if (v != S3_VERSIONING_ENABLED) {
		snprintf(why, cap,
			 "bucket %s: versioning is %s, not Enabled: refusing to replicate (enable "
			 "versioning on the bucket; segments wait on local disk)",
			 w->ctx->cfg.bucket, s3_versioning_name(v));
		*kind = R_VERSIONING;
		return -1;
	}
	return 0;
}

static int r_export(void *arg, const struct eng_export_item *it, char *ref, size_t ref_cap,
		    char *why, size_t why_cap, uint32_t *kind)
{
	struct replicator_worker *w = arg;
	char key[S3_KEY_BYTES_MAX + 1], sum[32], line[700];
	struct s3_error err = { 0 };
	int rc = s3_segment_key(key, sizeof(key), w->ctx->cfg.prefix, it->tenant,
				it->min_received_ns, it->segment_id);
	if (rc < 0) {
		snprintf(why, why_cap, "no object key: %s", s3_strerror(rc));
		*kind = s3_kind_index(S3_ERR_LOCAL);
		return rc;
	}
	snprintf(sum, sizeof(sum), "%016llx", (unsigned long long)it->file_checksum);
	/* X2: the upload of a run that crashed before its mark is reused. */
	struct s3_object_info info;
	rc = s3_head_object(w->c, key, NULL, &info, &err);
	if (rc == 0 && info.exists && !info.delete_marker && info.size == it->file_size &&
	    strcmp(info.checksum_meta, sum) == 0 && info.version_id[0]) {
		snprintf(ref, ref_cap, "%s", info.version_id);
		atomic_fetch_add(&w->ctx->reused, 1);
		return 0;
	}
	if (rc) {
		s3_error_format(&err, line, sizeof(line));
		snprintf(why, why_cap, "%s: %s", key, line);
		*kind = s3_kind_index(err.kind);
		return rc;
	}
	int fd = open(it->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		snprintf(why, why_cap, "%s: %s", it->path, strerror(errno));
		*kind = s3_kind_index(S3_ERR_LOCAL);
		return rc;
	}
	struct s3_put_result res;
	rc = s3_put_object_file(w->c, key, fd, it->file_size, sum, &res, &err);
	close(fd);
	if (rc) {
		s3_error_format(&err, line, sizeof(line));
		snprintf(why, why_cap, "%s: %s", key, line);
		*kind = s3_kind_index(err.kind);
		return rc;
	}
	if (!res.version_id[0]) {
		/* A versioned bucket always names the version it stored. */
		atomic_store(&w->ctx->versioning, 0);
		snprintf(why, why_cap, "%s: uploaded, but the bucket returned no version id "
			 "(versioning switched off?)", key);
		*kind = R_VERSIONING;
		return -1;
	}
	if (failpoint("replicator_after_upload"))
		abort(); /* uploaded, not yet recorded in the manifest */
	snprintf(ref, ref_cap, "%s", res.version_id);
	return 0;
}

void replicator_ops(struct replicator_ctx *ctx, struct exporter_ops *ops)
{
	for (uint32_t k = 1; k < S3_ERR_KIND_COUNT; k++)
		replicator_kinds[k - 1] = s3_err_kind_names[k];
	replicator_kinds[R_VERSIONING] = "versioning";
	*ops = (struct exporter_ops){
		.name = "replicator",
		.metric_prefix = "hodei_replication",
		.kind = ENG_EXPORT_REPLICATE,
		.ctx = ctx,
		.error_kinds = replicator_kinds,
		.error_kind_count = R_KINDS,
		.worker_open = r_open,
		.worker_close = r_close,
		.prepare = r_prepare,
		.export_one = r_export,
	};
}

int replicator_render_metrics(struct replicator_ctx *ctx, struct mx_buf *b)
{
	int v = atomic_load(&ctx->versioning);
	mx_family(b, "hodei_replication_versioning_enabled", "gauge",
		  "1 when the bucket's versioning was Enabled at the last check (else nothing is "
		  "uploaded).");
	mx_sample_u64(b, "hodei_replication_versioning_enabled", NULL, 0,
		      v == S3_VERSIONING_ENABLED ? 1 : 0);
	mx_family(b, "hodei_replication_bucket_info", "gauge",
		  "The bucket replicated to, and its versioning state at the last check.");
	struct mx_label l[] = { { "bucket", ctx->cfg.bucket },
				{ "versioning", v ? s3_versioning_name((enum s3_versioning)v)
						  : "unknown" } };
	mx_sample_u64(b, "hodei_replication_bucket_info", l, 2, 1);
	mx_family(b, "hodei_replication_reused_total", "counter",
		  "Segments found already uploaded with the same checksum (a crash before the "
		  "manifest recorded them): their version is recorded, nothing is re-uploaded.");
	mx_sample_u64(b, "hodei_replication_reused_total", NULL, 0, atomic_load(&ctx->reused));
	return mx_buf_err(b);
}

/* ---- reads back from S3 -------------------------------------------------------- */

static int fetch_queue(void *ctx, const struct eng_fetch_req *req)
{
	struct fetcher *f = ctx;
	pthread_mutex_lock(&f->mu);
	int rc = 0;
	if (f->stop)
		rc = FMT_E_SHUTDOWN;
	else if (f->count == FETCHER_QUEUE_MAX)
		rc = FMT_E_FULL;
	else {
		f->queue[(f->head + f->count++) % FETCHER_QUEUE_MAX] = *req;
		pthread_cond_signal(&f->cond);
	}
	pthread_mutex_unlock(&f->mu);
	return rc;
}

/* One segment: GET into a temporary file, check it, rename. */
static int fetch_one(struct fetcher *f, struct s3_client *c, const struct eng_fetch_req *r)
{
	char key[S3_KEY_BYTES_MAX + 1], tmp[4300];
	int rc = s3_segment_key(key, sizeof(key), f->cfg.prefix, r->tenant, r->min_received_ns,
				r->segment_id);
	if (rc < 0)
		return rc;
	snprintf(tmp, sizeof(tmp), "%s.tmp", r->dest_path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd < 0)
		return -errno;
	struct s3_error err = { 0 };
	rc = s3_get_object_to_fd(c, key, r->version_id[0] ? r->version_id : NULL, fd, r->file_size,
				 NULL, &err);
	if (rc == 0 && fsync(fd) != 0)
		rc = -errno;
	close(fd);
	if (rc) {
		char line[700];
		s3_error_format(&err, line, sizeof(line));
		nlog(NLOG_WARN, &(struct nlog_fields){ .tenant = r->tenant, .code = -1 },
		     "cannot read segment %016llx back from S3: %s", (unsigned long long)r->segment_id,
		     line);
		unlink(tmp);
		return rc;
	}
	uint8_t *buf = NULL;
	size_t len = 0;
	rc = eng_file_read_all(tmp, &buf, &len);
	if (rc == 0 && (len != r->file_size || fmt_xxh3(buf, len) != r->file_checksum)) {
		nlog(NLOG_ERROR, &(struct nlog_fields){ .tenant = r->tenant, .code = -1 },
		     "segment %016llx read back from S3 does not match the manifest (%zu bytes, "
		     "checksum differs): not used", (unsigned long long)r->segment_id, len);
		rc = FMT_E_CORRUPT;
	}
	free(buf);
	if (rc == 0 && rename(tmp, r->dest_path) != 0)
		rc = -errno;
	if (rc)
		unlink(tmp);
	else
		atomic_fetch_add(&f->bytes, len);
	return rc;
}

static void *fetcher_main(void *arg)
{
	struct fetcher *f = arg;
	struct s3_client *c = NULL;
	for (;;) {
		pthread_mutex_lock(&f->mu);
		while (!f->stop && f->count == 0)
			pthread_cond_wait(&f->cond, &f->mu);
		if (f->stop) {
			pthread_mutex_unlock(&f->mu);
			break;
		}
		struct eng_fetch_req r = f->queue[f->head];
		f->head = (f->head + 1) % FETCHER_QUEUE_MAX;
		f->count--;
		pthread_mutex_unlock(&f->mu);
		struct s3_error err = { 0 };
		int rc = c ? 0 : s3_client_new(&f->cfg, &c, &err);
		if (rc == 0 && f->cancel)
			s3_client_set_cancel(c, f->cancel);
		if (rc == 0)
			rc = fetch_one(f, c, &r);
		atomic_fetch_add(rc ? &f->failed : &f->fetched, 1);
		eng_fetch_done(atomic_load(&f->eng), r.shard, r.segment_id, rc);
	}
	s3_client_free(c);
	return NULL;
}

int fetcher_start(struct fetcher *f)
{
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cond, NULL);
	for (uint32_t i = 0; i < FETCHER_WORKERS; i++) {
		int rc = pthread_create(&f->threads[i], NULL, fetcher_main, f);
		if (rc)
			return -rc;
		f->started++;
	}
	return 0;
}

void fetcher_stop(struct fetcher *f)
{
	pthread_mutex_lock(&f->mu);
	f->stop = true;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->mu);
	for (uint32_t i = 0; i < f->started; i++)
		pthread_join(f->threads[i], NULL);
	f->started = 0;
}

struct eng_fetcher fetcher_ops(struct fetcher *f)
{
	return (struct eng_fetcher){ .ctx = f, .fetch = fetch_queue };
}

int fetcher_render_metrics(struct fetcher *f, struct mx_buf *b)
{
	mx_family(b, "hodei_remote_fetches_total", "counter",
		  "Segments read back from S3 into the local cache (local retention passed).");
	mx_sample_u64(b, "hodei_remote_fetches_total", NULL, 0, atomic_load(&f->fetched));
	mx_family(b, "hodei_remote_fetch_errors_total", "counter",
		  "Reads back from S3 that failed (network, missing version, checksum).");
	mx_sample_u64(b, "hodei_remote_fetch_errors_total", NULL, 0, atomic_load(&f->failed));
	mx_family(b, "hodei_remote_fetched_bytes_total", "counter", "Bytes read back from S3.");
	mx_sample_u64(b, "hodei_remote_fetched_bytes_total", NULL, 0, atomic_load(&f->bytes));
	return mx_buf_err(b);
}

/* ---- ClickHouse --------------------------------------------------------------- */

static const char *mirror_kinds[CH_KIND_COUNT - 1];

static uint32_t ch_kind_index(int rc)
{
	enum ch_err_kind k = ch_error_kind(rc);
	return k == CH_KIND_NONE ? (uint32_t)CH_KIND_OTHER - 1 : (uint32_t)k - 1;
}

struct mirror_worker {
	struct mirror_ctx *ctx;
	struct ch_client *c;
};

static void *m_open(void *arg)
{
	struct mirror_ctx *ctx = arg;
	struct mirror_worker *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->ctx = ctx;
	if (ch_client_open(&ctx->cfg, &w->c) != 0) {
		free(w);
		return NULL;
	}
	return w;
}

static void m_close(void *arg)
{
	struct mirror_worker *w = arg;
	ch_client_close(w->c);
	free(w);
}

static void ch_why(struct mirror_worker *w, int rc, const char *what, char *why, size_t cap)
{
	const struct ch_error *e = ch_last_error(w->c);
	snprintf(why, cap, "%s: %s%s%s", what, ch_strerror(rc), e && e->message[0] ? ": " : "",
		 e ? e->message : "");
}

static int m_prepare(void *arg, char *why, size_t cap, uint32_t *kind)
{
	struct mirror_worker *w = arg;
	int rc = ch_ensure_schema(w->c);
	if (rc) {
		ch_why(w, rc, "ClickHouse schema", why, cap);
		*kind = ch_kind_index(rc);
	}
	return rc;
}

static int m_export(void *arg, const struct eng_export_item *it, char *ref, size_t ref_cap,
		    char *why, size_t why_cap, uint32_t *kind)
{
	struct mirror_worker *w = arg;
	uint8_t *buf = NULL;
	size_t len = 0;
	int rc = eng_file_read_all(it->path, &buf, &len);
	if (rc) {
		snprintf(why, why_cap, "%s: %s", it->path, fmt_strerror(rc));
		*kind = ch_kind_index(rc);
		return rc;
	}
	struct ch_mirror_result res;
	rc = ch_mirror_segment(w->c, buf, len, &res);
	free(buf);
	if (rc) {
		ch_why(w, rc, it->path, why, why_cap);
		*kind = ch_kind_index(rc);
		return rc;
	}
	atomic_fetch_add(&w->ctx->rows_inserted, res.rows_inserted);
	atomic_fetch_add(&w->ctx->rows_present, res.rows_present);
	ref[0] = 0;
	(void)ref_cap;
	return 0;
}

void mirror_ops(struct mirror_ctx *ctx, struct exporter_ops *ops)
{
	for (uint32_t k = 1; k < CH_KIND_COUNT; k++)
		mirror_kinds[k - 1] = ch_kind_name((enum ch_err_kind)k);
	*ops = (struct exporter_ops){
		.name = "mirror",
		.metric_prefix = "hodei_mirror",
		.kind = ENG_EXPORT_MIRROR,
		.ctx = ctx,
		.error_kinds = mirror_kinds,
		.error_kind_count = CH_KIND_COUNT - 1,
		.worker_open = m_open,
		.worker_close = m_close,
		.prepare = m_prepare,
		.export_one = m_export,
	};
}

int mirror_render_metrics(struct mirror_ctx *ctx, struct mx_buf *b)
{
	mx_family(b, "hodei_mirror_rows_inserted_total", "counter",
		  "Rows the mirror inserted into ClickHouse.");
	mx_sample_u64(b, "hodei_mirror_rows_inserted_total", NULL, 0,
		      atomic_load(&ctx->rows_inserted));
	mx_family(b, "hodei_mirror_rows_present_total", "counter",
		  "Rows found already in ClickHouse (an insert whose bookkeeping a crash cut): "
		  "not inserted again.");
	mx_sample_u64(b, "hodei_mirror_rows_present_total", NULL, 0, atomic_load(&ctx->rows_present));
	return mx_buf_err(b);
}
