// SPDX-License-Identifier: Apache-2.0
/*
 * export.c — what the shard does for the threads that take sealed segments
 * off the node (net/: S3 replicator, ClickHouse mirror): list the segments
 * that still need an export, and record confirmed exports durably.
 *
 *   list request ─▶ walk the shard's tenants and segments ─▶ items (copies:
 *                   the caller never touches shard memory) ─▶ complete
 *   mark request ─▶ queued ─▶ next tick: every queued mark becomes one
 *                   FMT_REC_EXPORT record in one manifest append (write +
 *                   fsync, manifest.c's writer) ─▶ the segments' flags and
 *                   version ids change ─▶ the marks complete
 *
 * Invariant: a mark's callback runs only after its record is durable, so
 * an exporter that saw the callback may forget the segment; one that
 * crashed before it finds the segment listed again after the restart and
 * must make its export idempotent (net/ does: HEAD before PUT on S3, a
 * count by segment before INSERT on ClickHouse).
 */
#include "engine/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MARKS_PER_WRITE 256u
#define EXPORT_RECORD_BYTES (FMT_REC_HEADER_BYTES + ENG_MANIFEST_EXPORT_BYTES)

static bool needs(const struct eng_segment *g, enum eng_export_kind kind)
{
	return kind == ENG_EXPORT_REPLICATE ? !g->replicated : !g->mirrored;
}

static void item_fill(const struct eng_shard *s, const struct eng_tenant *t,
		      const struct eng_segment *g, struct eng_export_item *it)
{
	memset(it, 0, sizeof(*it));
	memcpy(it->tenant, t->name, t->name_len);
	it->segment_id = g->segment_id;
	eng_segment_path(s, g->segment_id, it->path, sizeof(it->path));
	it->file_size = g->file_size;
	it->file_checksum = g->file_checksum;
	it->first_seq = g->first_seq;
	it->last_seq = g->last_seq;
	it->row_count = g->row_count;
	it->min_occurred_ns = g->min_occurred_ns;
	it->max_occurred_ns = g->max_occurred_ns;
	it->min_received_ns = g->min_received_ns;
	it->max_received_ns = g->max_received_ns;
	it->replicated = g->replicated;
	it->mirrored = g->mirrored;
	if (g->version_id)
		snprintf(it->version_id, sizeof(it->version_id), "%s", g->version_id);
}

void eng_export_list_run(struct eng_shard *s, struct eng_export_list *req)
{
	req->status = 0;
	req->count = 0;
	req->pending = req->pending_bytes = 0;
	req->oldest_pending_ns = 0;
	if (req->kind != ENG_EXPORT_REPLICATE && req->kind != ENG_EXPORT_MIRROR) {
		req->status = FMT_E_INVALID;
		return;
	}
	for (uint32_t i = 0; i < s->tenant_slot_count; i++) {
		const struct eng_tenant *t = s->tenant_slots[i];
		if (!t)
			continue;
		for (uint32_t k = 0; k < t->segment_count; k++) {
			const struct eng_segment *g = t->segments[k];
			if (!needs(g, req->kind))
				continue;
			req->pending++;
			req->pending_bytes += g->file_size;
			if (!req->oldest_pending_ns || g->max_received_ns < req->oldest_pending_ns)
				req->oldest_pending_ns = g->max_received_ns;
			if (req->count < req->cap)
				item_fill(s, t, g, &req->items[req->count++]);
		}
	}
}

void eng_export_mark_queue(struct eng_shard *s, struct eng_export_mark *req)
{
	req->next = NULL;
	if (s->marks_tail)
		s->marks_tail->next = req;
	else
		s->marks_head = req;
	s->marks_tail = req;
}

static void marks_written(struct eng_manifest_write *w, int err)
{
	struct eng_shard *s = w->ctx;
	if (err < 0) {
		eng_log(s->eng, ENG_LOG_ERROR, "shard %u: manifest write of export marks failed: %s; "
			"refusing appends until restart", s->id, fmt_strerror(err));
		s->failed = true;
	}
	for (uint32_t i = 0; i < s->marks_inflight_count; i++) {
		struct eng_export_mark *m = s->marks_inflight[i];
		m->status = err;
		if (err == 0) {
			struct eng_tenant *t = eng_tenant_find(s, m->tenant);
			struct eng_segment *g = t ? eng_tenant_segment(t, m->segment_id) : NULL;
			char ref[ENG_EXPORT_REF_MAX + 1];
			memcpy(ref, m->ref.ptr ? m->ref.ptr : "", m->ref.len);
			ref[m->ref.len] = 0;
			bool was = g && (m->kind == ENG_EXPORT_REPLICATE ? g->replicated : g->mirrored);
			m->status = g ? eng_segment_set_export(g, (uint8_t)m->kind, ref) : FMT_E_NOT_FOUND;
			if (m->status == 0 && !was) {
				if (m->kind == ENG_EXPORT_REPLICATE)
					s->stats.segments_replicated++;
				else
					s->stats.segments_mirrored++;
			}
		}
		eng_complete(s, &m->hdr);
	}
	s->marks_inflight_count = 0;
}

/* Checks a mark against the shard's state; 0 or the status to fail with. */
static int mark_check(struct eng_shard *s, const struct eng_export_mark *m)
{
	if (m->kind != ENG_EXPORT_REPLICATE && m->kind != ENG_EXPORT_MIRROR)
		return FMT_E_INVALID;
	if (m->ref.len > ENG_EXPORT_REF_MAX || (m->ref.len && !m->ref.ptr))
		return FMT_E_INVALID;
	struct eng_tenant *t = eng_tenant_find(s, m->tenant);
	if (!t || !eng_tenant_segment(t, m->segment_id))
		return FMT_E_NOT_FOUND;
	return 0;
}

void eng_export_marks_flush(struct eng_shard *s)
{
	if (s->marks_inflight_count || !s->marks_head || s->failed)
		goto failed_check;
	if (!s->marks_buf) {
		s->marks_buf = malloc((size_t)MARKS_PER_WRITE * EXPORT_RECORD_BYTES);
		s->marks_inflight = calloc(MARKS_PER_WRITE, sizeof(*s->marks_inflight));
		if (!s->marks_buf || !s->marks_inflight)
			return; /* try again next tick */
		s->marks_cap = MARKS_PER_WRITE;
	}
	uint32_t n = 0;
	int64_t now = eng_now_ns();
	while (s->marks_head && n < s->marks_cap) {
		struct eng_export_mark *m = s->marks_head;
		s->marks_head = m->next;
		if (!s->marks_head)
			s->marks_tail = NULL;
		int rc = mark_check(s, m);
		if (rc) {
			m->status = rc;
			eng_complete(s, &m->hdr);
			continue;
		}
		struct eng_tenant *t = eng_tenant_find(s, m->tenant);
		uint8_t *rec = s->marks_buf + (size_t)n * EXPORT_RECORD_BYTES;
		uint8_t *payload = rec + FMT_REC_HEADER_BYTES;
		eng_manifest_encode_export(t, m->segment_id, (uint8_t)m->kind, now, m->ref, payload);
		fmt_rec_header_encode(rec, FMT_REC_EXPORT, 0, 0, payload, ENG_MANIFEST_EXPORT_BYTES, 0);
		s->marks_inflight[n++] = m;
	}
	if (!n)
		return;
	s->marks_inflight_count = n;
	s->marks_write = (struct eng_manifest_write){ .buf = s->marks_buf,
						      .len = n * EXPORT_RECORD_BYTES,
						      .done = marks_written, .ctx = s };
	eng_manifest_append(s, &s->marks_write);
	return;
failed_check:
	/* A shard whose write path failed records nothing more. */
	while (s->failed && !s->marks_inflight_count && s->marks_head) {
		struct eng_export_mark *m = s->marks_head;
		s->marks_head = m->next;
		if (!s->marks_head)
			s->marks_tail = NULL;
		m->status = -EIO;
		eng_complete(s, &m->hdr);
	}
}

void eng_export_free(struct eng_shard *s)
{
	free(s->marks_buf);
	free(s->marks_inflight);
	s->marks_buf = NULL;
	s->marks_inflight = NULL;
}
