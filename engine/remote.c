// SPDX-License-Identifier: Apache-2.0
/*
 * remote.c — local retention and reads of segments that live only in S3
 * (DESIGN.md §2.6: "a local segment is deleted only after S3 confirmed it
 * and its retention has passed"; issue #4: a node with an empty disk still
 * answers for old data).
 *
 * Retention, once a second on the shard thread:
 *   segments replicated (and mirrored, when retention_needs_mirror) whose
 *   newest event is older than local_retention_ns ─▶ FMT_REC_REMOVE
 *   records, one manifest append ─▶ durable ─▶ close, unlink, `remote`.
 *   A crash between the record and the unlink leaves a file the next
 *   start deletes (manifest.c); one before the record leaves a local
 *   segment, removed again later.
 *
 * Reads: before a search, count or verify runs, the shard checks the
 * segments it needs. A remote one that is not in <shard>/cache/ is fetched by the
 * fetcher (net/, on its own thread: S3 GET, XXH3 check, rename) and the
 * request is parked; eng_fetch_done() queues the completion under a mutex
 * (never taken on the append path) and wakes the shard, which runs its
 * parked requests again. The cache is bounded (remote_cache_bytes per
 * shard, least recently used copies go first); a request that needs more
 * remote bytes than the cache holds is refused (FMT_E_TOO_BIG).
 */
#include "engine/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RETENTION_EVERY_NS (1000 * 1000000ll)
#define REMOVE_BATCH 64u
#define REMOVE_RECORD_BYTES (FMT_REC_HEADER_BYTES + ENG_MANIFEST_REMOVE_BYTES)

void eng_segment_read_path(const struct eng_shard *s, const struct eng_segment *g, char *out,
			   size_t cap)
{
	if (g->remote)
		snprintf(out, cap, "%s/cache/%016llx.hseg", s->dir, (unsigned long long)g->segment_id);
	else
		eng_segment_path(s, g->segment_id, out, cap);
}

int eng_manifest_decode_remove(const uint8_t *in, uint32_t len, char tenant[FMT_TENANT_MAX + 1],
			       uint64_t *segment_id)
{
	if (len != ENG_MANIFEST_REMOVE_BYTES || in[0] < 1 || in[0] > FMT_TENANT_MAX)
		return FMT_E_CORRUPT;
	memcpy(tenant, in + 1, in[0]);
	tenant[in[0]] = 0;
	if (!fmt_tenant_valid((struct fmt_str){ tenant, in[0] }))
		return FMT_E_CORRUPT;
	*segment_id = fmt_get_u64(in + 1 + FMT_TENANT_MAX);
	return 0;
}

static void encode_remove(const struct eng_tenant *t, uint64_t id, int64_t at_ns, uint8_t *out)
{
	memset(out, 0, ENG_MANIFEST_REMOVE_BYTES);
	out[0] = t->name_len;
	memcpy(out + 1, t->name, t->name_len);
	fmt_put_u64(out + 1 + FMT_TENANT_MAX, id);
	fmt_put_u64(out + 1 + FMT_TENANT_MAX + 8, (uint64_t)at_ns);
}

/* ---- retention --------------------------------------------------------------- */

static void removes_written(struct eng_manifest_write *w, int err)
{
	struct eng_shard *s = w->ctx;
	if (err < 0) {
		eng_log(s->eng, ENG_LOG_ERROR, "shard %u: manifest write of removals failed: %s; "
			"refusing appends until restart", s->id, fmt_strerror(err));
		s->failed = true;
		s->removing_count = 0;
		return;
	}
	for (uint32_t i = 0; i < s->removing_count; i++) {
		struct eng_segment *g = s->removing[i];
		char path[4200];
		eng_segment_close(s, g);
		eng_block_cache_drop_segment(s, g->segment_id);
		eng_segment_path(s, g->segment_id, path, sizeof(path));
		if (unlink(path) != 0 && errno != ENOENT)
			eng_log(s->eng, ENG_LOG_WARN, "cannot remove %s: %s (removed at next start)", path,
				strerror(errno));
		g->remote = true;
		s->stats.segments_local--;
		s->stats.segment_bytes_local -= g->file_size;
		s->stats.segments_remote++;
	}
	s->removing_count = 0;
}

void eng_retention_tick(struct eng_shard *s)
{
	const struct eng_config *cfg = &s->eng->cfg;
	if (cfg->local_retention_ns < 0 || s->removing_count || s->failed)
		return;
	int64_t now = eng_mono_ns();
	if (now < s->retention_next_ns)
		return;
	s->retention_next_ns = now + RETENTION_EVERY_NS;
	if (!s->removing) {
		s->removing = calloc(REMOVE_BATCH, sizeof(*s->removing));
		s->remove_buf = malloc((size_t)REMOVE_BATCH * REMOVE_RECORD_BYTES);
		if (!s->removing || !s->remove_buf)
			return;
	}
	int64_t wall = eng_now_ns();
	uint32_t n = 0;
	for (uint32_t i = 0; i < s->tenant_slot_count && n < REMOVE_BATCH; i++) {
		struct eng_tenant *t = s->tenant_slots[i];
		for (uint32_t k = 0; t && k < t->segment_count && n < REMOVE_BATCH; k++) {
			struct eng_segment *g = t->segments[k];
			if (g->remote || !g->replicated || (cfg->retention_needs_mirror && !g->mirrored) ||
			    wall - g->max_received_ns < cfg->local_retention_ns)
				continue;
			uint8_t *rec = s->remove_buf + (size_t)n * REMOVE_RECORD_BYTES;
			encode_remove(t, g->segment_id, wall, rec + FMT_REC_HEADER_BYTES);
			fmt_rec_header_encode(rec, FMT_REC_REMOVE, 0, 0, rec + FMT_REC_HEADER_BYTES,
					      ENG_MANIFEST_REMOVE_BYTES, 0);
			s->removing[n++] = g;
		}
	}
	if (!n)
		return;
	s->removing_count = n;
	s->remove_write = (struct eng_manifest_write){ .buf = s->remove_buf,
						       .len = n * REMOVE_RECORD_BYTES,
						       .done = removes_written, .ctx = s };
	eng_manifest_append(s, &s->remove_write);
}

/* ---- reads ---------------------------------------------------------------------- */

/* The filter of a search or count; NULL for a verify. */
static const struct eng_filter *req_filter(const struct eng_req_hdr *hdr)
{
	if (hdr->kind == ENG_REQ_SEARCH)
		return &((const struct eng_search *)hdr)->filter;
	if (hdr->kind == ENG_REQ_COUNT)
		return &((const struct eng_count *)hdr)->filter;
	ASSERT(hdr->kind == ENG_REQ_VERIFY);
	return NULL;
}

static bool needed_by(const struct eng_req_hdr *hdr, const struct eng_segment *g)
{
	if (hdr->kind == ENG_REQ_COUNT && eng_count_from_manifest((const struct eng_count *)hdr, g))
		return false;
	const struct eng_filter *f = req_filter(hdr);
	if (f) {
		if (f->has_event_id)
			return true;
		if (f->from_ns && g->max_occurred_ns < f->from_ns)
			return false;
		return !(f->to_ns && g->min_occurred_ns >= f->to_ns);
	}
	const struct eng_verify *v = (const struct eng_verify *)hdr;
	if (v->from_seq && g->last_seq < v->from_seq)
		return false;
	return !(v->to_seq && g->first_seq > v->to_seq);
}

static struct fmt_str req_tenant(const struct eng_req_hdr *hdr)
{
	switch (hdr->kind) {
	case ENG_REQ_SEARCH:
		return ((const struct eng_search *)hdr)->tenant;
	case ENG_REQ_COUNT:
		return ((const struct eng_count *)hdr)->tenant;
	default:
		ASSERT(hdr->kind == ENG_REQ_VERIFY);
		return ((const struct eng_verify *)hdr)->tenant;
	}
}

void eng_read_req_set_status(struct eng_req_hdr *hdr, int status)
{
	switch (hdr->kind) {
	case ENG_REQ_SEARCH:
		((struct eng_search *)hdr)->status = status;
		break;
	case ENG_REQ_COUNT:
		((struct eng_count *)hdr)->status = status;
		break;
	default:
		ASSERT(hdr->kind == ENG_REQ_VERIFY);
		((struct eng_verify *)hdr)->status = status;
		break;
	}
}

/* Drops least recently used copies (not used by the request being checked,
 * whose segments carry the current generation) until `need` more bytes fit. */
static bool cache_make_room(struct eng_shard *s, uint64_t need, uint64_t gen)
{
	uint64_t cap = s->eng->cfg.remote_cache_bytes;
	while (s->cache_bytes + need > cap) {
		struct eng_segment *lru = NULL;
		for (uint32_t i = 0; i < s->tenant_slot_count; i++) {
			struct eng_tenant *t = s->tenant_slots[i];
			for (uint32_t k = 0; t && k < t->segment_count; k++) {
				struct eng_segment *g = t->segments[k];
				if (g->cached && g->cache_used_gen != gen &&
				    (!lru || g->cache_used_gen < lru->cache_used_gen))
					lru = g;
			}
		}
		if (!lru)
			return false;
		char path[4200];
		eng_segment_close(s, lru);
		eng_block_cache_drop_segment(s, lru->segment_id);
		eng_segment_read_path(s, lru, path, sizeof(path));
		unlink(path);
		lru->cached = false;
		s->cache_bytes -= lru->file_size;
	}
	return true;
}

bool eng_remote_ready(struct eng_shard *s, struct eng_req_hdr *hdr, int *err)
{
	*err = 0;
	struct eng_tenant *t = eng_tenant_find(s, req_tenant(hdr));
	if (!t || !s->stats.segments_remote)
		return true;
	uint64_t gen = ++s->req_gen, need = 0;
	bool missing = false;
	for (uint32_t k = 0; k < t->segment_count; k++) {
		struct eng_segment *g = t->segments[k];
		if (!g->remote || !needed_by(hdr, g))
			continue;
		g->cache_used_gen = gen;
		if (g->cached)
			continue;
		missing = true;
		if (!g->fetching)
			need += g->file_size;
	}
	if (!missing)
		return true;
	if (!s->eng->cfg.fetcher.fetch) {
		*err = FMT_E_NOT_FOUND; /* no S3 configured to read it from */
		return false;
	}
	if (!cache_make_room(s, need, gen)) {
		*err = FMT_E_TOO_BIG;
		return false;
	}
	char dir[4200];
	snprintf(dir, sizeof(dir), "%s/cache", s->dir);
	if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
		*err = -errno;
		return false;
	}
	for (uint32_t k = 0; k < t->segment_count; k++) {
		struct eng_segment *g = t->segments[k];
		if (!g->remote || g->cached || g->fetching || g->cache_used_gen != gen)
			continue;
		struct eng_fetch_req fr = { .shard = s->id, .segment_id = g->segment_id,
					    .file_size = g->file_size, .file_checksum = g->file_checksum,
					    .min_received_ns = g->min_received_ns };
		memcpy(fr.tenant, t->name, t->name_len);
		snprintf(fr.version_id, sizeof(fr.version_id), "%s", g->version_id ? g->version_id : "");
		eng_segment_read_path(s, g, fr.dest_path, sizeof(fr.dest_path));
		int rc = s->eng->cfg.fetcher.fetch(s->eng->cfg.fetcher.ctx, &fr);
		if (rc) {
			*err = rc;
			return false;
		}
		g->fetching = true;
		s->fetches_outstanding++;
		s->cache_bytes += g->file_size; /* reserved */
		s->stats.remote_fetches++;
	}
	return false;
}

void eng_park(struct eng_shard *s, struct eng_req_hdr *hdr)
{
	hdr->next = NULL;
	if (s->parked_tail)
		((struct eng_req_hdr *)s->parked_tail)->next = hdr;
	else
		s->parked_head = hdr;
	s->parked_tail = hdr;
}

void eng_fetch_done(struct eng_engine *eng, uint32_t shard, uint64_t segment_id, int status)
{
	struct eng_shard *s = &eng->shards[shard];
	pthread_mutex_lock(&s->fetch_mu);
	if (s->fetch_done_count == s->fetch_done_cap) {
		uint32_t cap = s->fetch_done_cap ? 2 * s->fetch_done_cap : 16;
		void *p = realloc(s->fetch_done, cap * sizeof(*s->fetch_done));
		if (!p) {
			pthread_mutex_unlock(&s->fetch_mu);
			return; /* the request waits; the next fetch retries */
		}
		s->fetch_done = p;
		s->fetch_done_cap = cap;
	}
	s->fetch_done[s->fetch_done_count++] = (struct eng_fetch_done_item){ segment_id, status };
	pthread_mutex_unlock(&s->fetch_mu);
	eng_shard_wake(s);
}

static struct eng_segment *segment_by_id(struct eng_shard *s, uint64_t id)
{
	for (uint32_t i = 0; i < s->tenant_slot_count; i++) {
		struct eng_tenant *t = s->tenant_slots[i];
		struct eng_segment *g = t ? eng_tenant_segment(t, id) : NULL;
		if (g)
			return g;
	}
	return NULL;
}

struct eng_req_hdr *eng_fetch_progress(struct eng_shard *s)
{
	if (!s->fetches_outstanding)
		return NULL; /* no fetch in flight: nothing can have completed */
	pthread_mutex_lock(&s->fetch_mu);
	uint32_t n = s->fetch_done_count;
	struct eng_fetch_done_item items[64];
	if (n > 64)
		n = 64;
	if (n) { /* fetch_done is NULL until the first completion */
		memcpy(items, s->fetch_done, n * sizeof(*items));
		memmove(s->fetch_done, s->fetch_done + n,
			(s->fetch_done_count - n) * sizeof(*items));
		s->fetch_done_count -= n;
	}
	pthread_mutex_unlock(&s->fetch_mu);
	if (!n)
		return NULL;
	struct eng_segment *failed[64];
	uint32_t nfailed = 0;
	for (uint32_t i = 0; i < n; i++) {
		struct eng_segment *g = segment_by_id(s, items[i].segment_id);
		s->fetches_outstanding--;
		if (!g || !g->fetching)
			continue;
		g->fetching = false;
		if (items[i].status == 0) {
			g->cached = true;
		} else {
			g->fetch_error = items[i].status;
			failed[nfailed++] = g;
			s->cache_bytes -= g->file_size;
			s->stats.remote_fetch_errors++;
		}
	}
	s->stats.remote_cache_bytes = s->cache_bytes;
	/* A parked request that needed a segment whose fetch failed fails with
	 * that error now; the others run again (and may park again). Nothing
	 * remembers the failure: the next request fetches again. */
	struct eng_req_hdr *redo = NULL, **tail = &redo;
	for (struct eng_req_hdr *r = s->parked_head, *next; r; r = next) {
		next = r->next;
		r->next = NULL;
		int err = 0;
		struct eng_tenant *t = nfailed ? eng_tenant_find(s, req_tenant(r)) : NULL;
		for (uint32_t k = 0; t && k < t->segment_count && !err; k++)
			if (t->segments[k]->fetch_error && needed_by(r, t->segments[k]))
				err = t->segments[k]->fetch_error;
		if (!err) {
			*tail = r;
			tail = (struct eng_req_hdr **)&r->next;
			continue;
		}
		eng_read_req_set_status(r, err);
		eng_complete(s, r);
	}
	for (uint32_t i = 0; i < nfailed; i++)
		failed[i]->fetch_error = 0;
	s->parked_head = s->parked_tail = NULL;
	return redo;
}

void eng_remote_free(struct eng_shard *s)
{
	free(s->removing);
	free(s->remove_buf);
	free(s->fetch_done);
	s->removing = NULL;
	s->remove_buf = NULL;
	s->fetch_done = NULL;
}
