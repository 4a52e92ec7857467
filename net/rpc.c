// SPDX-License-Identifier: Apache-2.0
/*
 * rpc.c — the methods: authorisation, protobuf decode, conversion to the
 * engine's requests, completion, and the status of every failure
 * (DESIGN.md §5 "Status codes"; docs/API.md lists them).
 *
 *   message ─▶ call (owns the raw bytes and an arena for the decoded
 *   message) ─▶ decode + checks that need no engine state ─▶ submit to the
 *   tenant's shard ─▶ callback on this shard ─▶ response bytes ─▶ written
 *   in request order (N3) ─▶ call freed, its flow-control credit returned.
 *
 * Validation of events is the engine's (fmt_event_validate, before
 * anything is stored, DESIGN.md §2.2); it reports the index, field and
 * reason, which become the INVALID_ARGUMENT message "events[i].field:
 * reason". The checks here are those of the wire shape (event_id length,
 * counts) and of Search/Count/Verify arguments.
 */
#include "net/internal.h"
#include "net/decode.h"
#include "net/log.h"

#include "grpc/health/v1/health.pb-c.h"
#include "hodei/audit/v1/audit.pb-c.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
	const char *path;
	const char *name;
} methods[M_METHODS] = {
	[M_APPEND] = { "/hodei.audit.v1.AuditService/Append", "Append" },
	[M_APPEND_STREAM] = { "/hodei.audit.v1.AuditService/AppendStream", "AppendStream" },
	[M_SEARCH] = { "/hodei.audit.v1.AuditService/Search", "Search" },
	[M_VERIFY] = { "/hodei.audit.v1.AuditService/Verify", "Verify" },
	[M_COUNT] = { "/hodei.audit.v1.AuditService/Count", "Count" },
	[M_HEALTH] = { "/grpc.health.v1.Health/Check", "Health.Check" },
	[M_UNKNOWN] = { NULL, "unknown" },
};

enum srv_method rpc_method_of(const char *path)
{
	for (int m = 0; m < M_UNKNOWN; m++)
		if (strcmp(path, methods[m].path) == 0)
			return (enum srv_method)m;
	return M_UNKNOWN;
}

const char *rpc_method_name(enum srv_method m)
{
	return m < M_METHODS ? methods[m].name : "unknown";
}

static bool method_writes(enum srv_method m)
{
	return m == M_APPEND || m == M_APPEND_STREAM;
}

int rpc_authorize(struct stream *st, char *msg, size_t cap)
{
	struct srv_shard *sh = st->c->sh;
	if (st->method == M_HEALTH)
		return GRPC_OK; /* probes carry no key */
	if (!st->has_token || st->token_malformed) {
		srv_count_reject(sh, R_UNAUTHENTICATED);
		snprintf(msg, cap, st->has_token ? "authorization header must be \"Bearer <api-key>\""
						 : "missing authorization header (Bearer <api-key>)");
		return GRPC_UNAUTHENTICATED;
	}
	const struct auth_key *key = auth_table_find(srv_keys(sh), st->token_hash);
	if (!key) {
		srv_count_reject(sh, R_UNAUTHENTICATED);
		snprintf(msg, cap, "unknown API key");
		return GRPC_UNAUTHENTICATED;
	}
	st->role = key->role;
	bool allowed = key->role == AUTH_ROLE_ADMIN ||
		       (method_writes(st->method) ? key->role == AUTH_ROLE_WRITER
						  : key->role == AUTH_ROLE_READER);
	if (!allowed) {
		srv_count_reject(sh, R_PERMISSION_DENIED);
		snprintf(msg, cap, "a %s key cannot call %s", auth_role_name(key->role),
			 rpc_method_name(st->method));
		return GRPC_PERMISSION_DENIED;
	}
	if (key->role == AUTH_ROLE_ADMIN) {
		if (!st->has_tenant_header || st->tenant_header_bad) {
			srv_count_reject(sh, R_INVALID_ARGUMENT);
			snprintf(msg, cap, st->has_tenant_header
						   ? "x-hodei-tenant: not 1-64 chars of [A-Za-z0-9._-]"
						   : "x-hodei-tenant: required with an admin key (the tenant to act on)");
			return GRPC_INVALID_ARGUMENT;
		}
		snprintf(st->tenant, sizeof(st->tenant), "%s", st->tenant_header);
		return GRPC_OK;
	}
	if (st->has_tenant_header &&
	    (st->tenant_header_bad || strcmp(st->tenant_header, key->tenant) != 0)) {
		srv_count_reject(sh, R_PERMISSION_DENIED);
		snprintf(msg, cap, "x-hodei-tenant: this key may only act on its own tenant");
		return GRPC_PERMISSION_DENIED;
	}
	snprintf(st->tenant, sizeof(st->tenant), "%s", key->tenant);
	return GRPC_OK;
}

/* ---- calls --------------------------------------------------------------- */

static struct call *call_new(struct stream *st, uint8_t *msg, uint32_t len)
{
	struct call *call = calloc(1, sizeof(*call));
	if (!call) {
		free(msg);
		return NULL;
	}
	call->method = st->method;
	call->st = st;
	call->sh = st->c->sh;
	call->msg = msg;
	call->credit = GF_PREFIX_BYTES + len;
	call->start_ns = srv_now_ns();
	if (st->method == M_APPEND)
		mx_hist_observe_ns(&st->c->sh->stats.append_stage[STAGE_RECEIVE],
				   (uint64_t)(call->start_ns - st->opened_ns));
	call->status = -1;
	memcpy(call->tenant, st->tenant, sizeof(call->tenant));
	/* A decoded message holds its strings (at most its wire size) and one
	 * struct per element: about 1 KiB per event at most, with our event
	 * views. The cap lets through every request within the limits and
	 * stops a small message that declares millions of empty elements
	 * before it takes gigabytes. */
	pb_arena_init(&call->arena, 2 * (size_t)len +
				    ((size_t)call->sh->srv->limits.events_per_batch_max + 1) * 1024 +
				    (1u << 20));
	if (st->calls_tail)
		st->calls_tail->next = call;
	else
		st->calls_head = call;
	st->calls_tail = call;
	return call;
}

void call_free(struct call *call)
{
	if (call->st)
		stream_give_back(call->st->c, call->st->id, call->credit);
	if (call->method == M_SEARCH)
		eng_search_release(&call->u.search);
	else if (call->method == M_COUNT)
		eng_count_release(&call->u.count);
	pb_arena_release(&call->arena);
	free(call->msg);
	free(call->resp);
	free(call);
}

static void call_fail(struct call *call, enum srv_reason reason, int status, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Finishes a call with an error status (it will be answered in order). */
static void call_fail(struct call *call, enum srv_reason reason, int status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(call->message, sizeof(call->message), fmt, ap);
	va_end(ap);
	call->status = status;
	call->done = true;
	srv_count_reject(call->sh, reason);
}

/* Packs a response message into call->resp. */
static void call_respond(struct call *call, const ProtobufCMessage *m)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	call->resp = malloc(n ? n : 1);
	if (!call->resp) {
		call_fail(call, R_MEMORY_BUDGET, GRPC_RESOURCE_EXHAUSTED, "out of memory for the response");
		return;
	}
	call->resp_len = (uint32_t)protobuf_c_message_pack(m, call->resp);
	call->status = GRPC_OK;
	call->done = true;
}

static void decode_failed(struct call *call, const char *what)
{
	struct dec_error e;
	dec_failed(&call->arena, what, &e);
	call_fail(call, (enum srv_reason)e.reason, e.status, "%s", e.msg);
}

static ProtobufCBinaryData c_bin(struct fmt_str s)
{
	return (ProtobufCBinaryData){ s.len, (uint8_t *)s.ptr };
}

static void engine_gone(struct call *call)
{
	call_fail(call, R_DRAINING, GRPC_UNAVAILABLE, "the server is shutting down; retry on another node");
}

/* Hands the call to the engine; a full queue parks it on the shard's
 * retry list (tried again every tick). */
static void call_submit(struct call *call)
{
	struct srv_shard *sh = call->sh;
	int rc;
	switch (call->method) {
	case M_APPEND:
	case M_APPEND_STREAM:
		rc = eng_append_submit(sh->prod, &call->u.append);
		break;
	case M_SEARCH:
		rc = eng_search_submit(sh->prod, &call->u.search);
		break;
	case M_COUNT:
		rc = eng_count_submit(sh->prod, &call->u.count);
		break;
	default:
		rc = eng_verify_submit(sh->prod, &call->u.verify);
		break;
	}
	if (rc == 0) {
		call->in_engine = true;
		sh->calls_in_engine++;
		return;
	}
	if (rc == FMT_E_FULL) {
		atomic_fetch_add_explicit(&sh->stats.submit_retries, 1, memory_order_relaxed);
		call->next = NULL;
		if (sh->retry_tail)
			sh->retry_tail->next = call;
		else
			sh->retry_head = call;
		sh->retry_tail = call;
		call->in_engine = true; /* owned by the retry list until submitted */
		return;
	}
	engine_gone(call);
}

void rpc_retry_submits(struct srv_shard *sh)
{
	struct call *list = sh->retry_head;
	sh->retry_head = sh->retry_tail = NULL;
	while (list) {
		struct call *call = list;
		list = call->next;
		call->in_engine = false;
		if (!call->st) {
			call_free(call); /* its stream died while it waited */
			continue;
		}
		call_submit(call);
		if (call->done)
			rpc_flush_calls(call->st);
	}
}

/* Completion bookkeeping shared by every engine callback. Returns false
 * when the call's stream is gone (the call is then freed). */
static bool call_completed(struct call *call)
{
	call->in_engine = false;
	call->sh->calls_in_engine--;
	if (call->st)
		return true;
	call_free(call);
	return false;
}

/* ---- Append / AppendStream ----------------------------------------------- */

static void append_done(struct eng_append *req)
{
	struct call *call = req->ctx;
	struct srv_shard *sh = call->sh;
	if (req->status == 0) {
		uint32_t slot = mx_labelset_slot(&sh->srv->tenants, call->tenant, strlen(call->tenant));
		mx_counter_vec_add(&sh->srv->appended, slot, req->accepted);
		mx_counter_vec_add(&sh->srv->duplicates, slot, req->duplicates);
		int64_t now = srv_now_ns();
		mx_hist_observe_ns(&sh->stats.append_duration, (uint64_t)(now - call->start_ns));
		const int64_t at[] = { req->queued_ns, req->run_ns, req->commit_ns, req->done_ns, now };
		for (size_t k = 0; k + 1 < FMT_ARRAY_LEN(at); k++)
			mx_hist_observe_ns(&sh->stats.append_stage[STAGE_QUEUE + k],
					   (uint64_t)(at[k + 1] - at[k]));
	}
	if (!call_completed(call))
		return;
	switch (req->status) {
	case 0: {
		Hodei__Audit__V1__AppendResponse r = HODEI__AUDIT__V1__APPEND_RESPONSE__INIT;
		r.accepted = req->accepted;
		r.duplicates = req->duplicates;
		r.first_seq = req->first_seq;
		r.last_seq = req->last_seq;
		r.chain_hash = (ProtobufCBinaryData){ FMT_HASH_BYTES, req->chain };
		call_respond(call, &r.base);
		break;
	}
	case FMT_E_INVALID:
		if (strcmp(req->invalid.field, "events") == 0 || strcmp(req->invalid.field, "tenant_id") == 0)
			call_fail(call, R_INVALID_ARGUMENT, GRPC_INVALID_ARGUMENT, "%s: %s",
				  req->invalid.field, req->invalid.reason);
		else
			call_fail(call, R_INVALID_ARGUMENT, GRPC_INVALID_ARGUMENT, "events[%u].%s: %s",
				  req->invalid_index, req->invalid.field, req->invalid.reason);
		break;
	case FMT_E_TOO_BIG:
		call_fail(call, R_TOO_MANY_EVENTS, GRPC_RESOURCE_EXHAUSTED,
			  "request too large for one atomic batch (%u events)", req->count);
		break;
	case FMT_E_NOMEM:
		call_fail(call, R_MEMORY_BUDGET, GRPC_RESOURCE_EXHAUSTED,
			  "the node's memory budget for unsealed events is exhausted; retry shortly");
		break;
	case FMT_E_FULL:
		call_fail(call, R_TENANTS_FULL, GRPC_RESOURCE_EXHAUSTED,
			  "this node holds its maximum number of tenants");
		break;
	case ENG_E_DISK:
		call_fail(call, R_DISK_BUDGET, GRPC_RESOURCE_EXHAUSTED,
			  "the node's disk budget is reached: nothing was stored; retry later or on "
			  "another node");
		break;
	case ENG_E_RATE:
		call_fail(call, R_RATE_LIMITED, GRPC_RESOURCE_EXHAUSTED,
			  "tenant %s is over its rate of %u events/s; retry later", call->tenant,
			  call->sh->srv->cfg.tenant_rate_eps);
		break;
	case FMT_E_SHUTDOWN:
		engine_gone(call);
		break;
	default:
		call_fail(call, R_STORAGE_FAILED, GRPC_UNAVAILABLE,
			  "storage failure: the events were not stored (%s); retry on another node",
			  fmt_strerror(req->status));
		break;
	}
	rpc_flush_calls(call->st);
}

static void append_start(struct call *call)
{
	struct dec_error e;
	struct eng_append *req = &call->u.append;
	if (dec_append(&call->arena, call->msg, call->credit - GF_PREFIX_BYTES, &call->sh->srv->limits,
		       req, &e) != GRPC_OK) {
		call_fail(call, (enum srv_reason)e.reason, e.status, "%s", e.msg);
		return;
	}
	req->tenant = fmt_str_c(call->tenant);
	req->done = append_done;
	req->ctx = call;
	call_submit(call);
}

/* ---- Search --------------------------------------------------------------- */

/* A search, count or verify that could not read its data: segments that live only
 * in S3 may be unreachable (UNAVAILABLE: retry), too many to read back at
 * once (RESOURCE_EXHAUSTED), or damaged (INTERNAL). Returns false for 0. */
static bool read_failed(struct call *call, int status, const char *what)
{
	if (status == 0)
		return false;
	if (status == FMT_E_TOO_BIG || status == FMT_E_FULL)
		call_fail(call, R_MEMORY_BUDGET, GRPC_RESOURCE_EXHAUSTED,
			  "%s needs more data read back from S3 than the node's cache holds; narrow the "
			  "time range", what);
	else if (status == FMT_E_SHUTDOWN)
		call_fail(call, R_DRAINING, GRPC_UNAVAILABLE, "the server is shutting down");
	else if (status == FMT_E_CORRUPT || status == FMT_E_CHAIN || status == FMT_E_TRUNCATED)
		call_fail(call, R_STORAGE_FAILED, GRPC_INTERNAL, "%s failed: %s", what,
			  fmt_strerror(status));
	else
		call_fail(call, R_STORAGE_FAILED, GRPC_UNAVAILABLE,
			  "%s could not read part of the data back from S3 (%s); retry", what,
			  fmt_strerror(status));
	return true;
}

/* ---- the slow-query log ---------------------------------------------------- */

/* The names of the filter's fields that are set, "+"-joined ("none"):
 * never their values, which may be personal data. */
static void filter_names(const struct eng_filter *f, char *out, size_t cap)
{
	const char *names[8];
	int n = 0;
	if (f->from_ns || f->to_ns)
		names[n++] = "time";
	if (f->actor_id.len)
		names[n++] = "actor_id";
	if (f->action.len)
		names[n++] = "action";
	if (f->resource_type.len)
		names[n++] = "resource_type";
	if (f->resource_id.len)
		names[n++] = "resource_id";
	if (f->outcome)
		names[n++] = "outcome";
	if (f->has_event_id)
		names[n++] = "event_id";
	size_t at = 0;
	out[0] = '\0';
	for (int i = 0; i < n && at < cap; i++)
		at += (size_t)snprintf(out + at, cap - at, "%s%s", i ? "+" : "", names[i]);
	if (n == 0)
		snprintf(out, cap, "none");
}

static double ms(int64_t ns)
{
	return (double)ns / 1e6;
}

/* A Search or Count that took at least slow_query_ns from its message's
 * arrival to its response: counted, and logged (within the shard's log
 * line limit) at info with where its time went, as logfmt pairs. total
 * minus queued and run is the hand-offs between the connection's thread
 * and the engine shard, and building the response. */
static void slow_query_log(struct call *call, const struct eng_filter *f,
			   const struct eng_query_profile *p, uint32_t results, uint64_t rows_scanned,
			   uint32_t segments_read, uint32_t segments_pruned)
{
	struct srv_shard *sh = call->sh;
	int64_t limit = sh->srv->cfg.slow_query_ns;
	int64_t total = srv_now_ns() - call->start_ns;
	if (limit == 0 || total < limit)
		return;
	atomic_fetch_add_explicit(&sh->stats.slow_queries[call->method], 1, memory_order_relaxed);
	if (NLOG_INFO > nlog_get_level() || !srv_log_line_allowed(sh))
		return;
	char filter[96];
	filter_names(f, filter, sizeof(filter));
	struct stream *st = call->st;
	nlog(NLOG_INFO,
	     &(struct nlog_fields){ .tenant = call->tenant,
				     .request_id = st ? st->request_id : NULL,
				     .peer = st ? st->c->peer : NULL,
				     .method = rpc_method_name(call->method), .code = call->status },
	     "slow query: total_ms=%.2f queued_ms=%.2f run_ms=%.2f scan_ms=%.2f read_ms=%.2f "
	     "decode_ms=%.2f blocks_decoded=%u blocks_cached=%u bytes_read=%llu footer_reads=%u "
	     "rows_scanned=%llu segments_read=%u segments_pruned=%u results=%u filter=%s",
	     ms(total), ms(p->queued_ns), ms(p->run_ns), ms(p->scan_ns), ms(p->read_ns),
	     ms(p->decode_ns), p->blocks_decoded, p->blocks_cached,
	     (unsigned long long)p->bytes_read, p->footer_reads, (unsigned long long)rows_scanned,
	     segments_read, segments_pruned, results, filter);
}

static void search_done(struct eng_search *req)
{
	struct call *call = req->ctx;
	if (!call_completed(call))
		return;
	if (req->status == FMT_E_INVALID) {
		call_fail(call, R_INVALID_ARGUMENT, GRPC_INVALID_ARGUMENT,
			  "page_token: not a token of this tenant and query (or a filter is invalid)");
	} else if (read_failed(call, req->status, "search")) {
	} else {
		Hodei__Audit__V1__SearchResponse r = HODEI__AUDIT__V1__SEARCH_RESPONSE__INIT;
		struct pb_arena *a = &call->arena;
		uint32_t n = req->hit_count;
		Hodei__Audit__V1__StoredEvent **out = pb_arena_alloc(a, (n ? n : 1) * sizeof(*out));
		bool ok = out != NULL;
		for (uint32_t i = 0; ok && i < n; i++) {
			const struct fmt_event *ev = &req->hits[i].ev;
			Hodei__Audit__V1__StoredEvent *se = pb_arena_alloc(a, sizeof(*se));
			Hodei__Audit__V1__AuditEvent *e = pb_arena_alloc(a, sizeof(*e));
			Hodei__Audit__V1__Attribute *at =
				pb_arena_alloc(a, (ev->attr_count ? ev->attr_count : 1) * sizeof(*at));
			Hodei__Audit__V1__Attribute **atp =
				pb_arena_alloc(a, (ev->attr_count ? ev->attr_count : 1) * sizeof(*atp));
			if (!se || !e || !at || !atp) {
				ok = false;
				break;
			}
			hodei__audit__v1__audit_event__init(e);
			e->event_id = (ProtobufCBinaryData){ FMT_EVENT_ID_BYTES, (uint8_t *)ev->event_id };
			e->occurred_at_ns = ev->occurred_at_ns;
			e->outcome = (Hodei__Audit__V1__Outcome)ev->outcome;
			e->actor_id = c_bin(ev->str[FMT_F_ACTOR_ID]);
			e->actor_type = c_bin(ev->str[FMT_F_ACTOR_TYPE]);
			e->action = c_bin(ev->str[FMT_F_ACTION]);
			e->resource_type = c_bin(ev->str[FMT_F_RESOURCE_TYPE]);
			e->resource_id = c_bin(ev->str[FMT_F_RESOURCE_ID]);
			e->source_ip = c_bin(ev->str[FMT_F_SOURCE_IP]);
			e->user_agent = c_bin(ev->str[FMT_F_USER_AGENT]);
			e->request_id = c_bin(ev->str[FMT_F_REQUEST_ID]);
			e->trace_id = c_bin(ev->str[FMT_F_TRACE_ID]);
			e->details_json = c_bin(ev->details_json);
			e->n_attributes = ev->attr_count;
			e->attributes = atp;
			for (uint32_t k = 0; k < ev->attr_count; k++) {
				hodei__audit__v1__attribute__init(&at[k]);
				at[k].key = c_bin(ev->attrs[k].key);
				at[k].value = c_bin(ev->attrs[k].value);
				atp[k] = &at[k];
			}
			hodei__audit__v1__stored_event__init(se);
			se->event = e;
			se->tenant_id = c_bin(ev->tenant);
			se->seq = ev->seq;
			se->received_at_ns = ev->received_at_ns;
			se->chain_hash = (ProtobufCBinaryData){ FMT_HASH_BYTES, req->hits[i].chain };
			out[i] = se;
		}
		if (!ok) {
			call_fail(call, R_MEMORY_BUDGET, GRPC_RESOURCE_EXHAUSTED,
				  "out of memory for the response");
		} else {
			r.n_events = n;
			r.events = out;
			r.next_page_token = (ProtobufCBinaryData){ req->next_page_token_len,
								   req->next_page_token };
			call_respond(call, &r.base);
		}
	}
	slow_query_log(call, &req->filter, &req->profile, req->hit_count, req->rows_scanned,
		       req->segments_read, req->segments_pruned);
	eng_search_release(req);
	rpc_flush_calls(call->st);
}

static void search_start(struct call *call)
{
	struct dec_error e;
	struct eng_search *req = &call->u.search;
	if (dec_search(&call->arena, call->msg, call->credit - GF_PREFIX_BYTES, &call->sh->srv->limits,
		       req, &e) != GRPC_OK) {
		call_fail(call, (enum srv_reason)e.reason, e.status, "%s", e.msg);
		return;
	}
	req->tenant = fmt_str_c(call->tenant);
	req->done = search_done;
	req->ctx = call;
	call_submit(call);
}

/* ---- Count ---------------------------------------------------------------- */

static void count_done(struct eng_count *req)
{
	struct call *call = req->ctx;
	if (!call_completed(call))
		return;
	if (req->status == FMT_E_INVALID) {
		call_fail(call, R_INVALID_ARGUMENT, GRPC_INVALID_ARGUMENT,
			  "filter: invalid (tenant, time range or outcome)");
	} else if (req->status == FMT_E_TOO_BIG && req->over == ENG_COUNT_OVER_GROUPS) {
		call_fail(call, R_QUERY_TOO_BIG, GRPC_RESOURCE_EXHAUSTED,
			  "more than %llu groups; narrow the filter", (unsigned long long)req->limit);
	} else if (req->status == FMT_E_TOO_BIG && req->over == ENG_COUNT_OVER_ROWS) {
		call_fail(call, R_QUERY_TOO_BIG, GRPC_RESOURCE_EXHAUSTED,
			  "more than %llu events to examine; narrow the time range",
			  (unsigned long long)req->limit);
	} else if (req->status == FMT_E_NOMEM) {
		call_fail(call, R_MEMORY_BUDGET, GRPC_RESOURCE_EXHAUSTED, "out of memory for the count");
	} else if (read_failed(call, req->status, "count")) {
	} else {
		Hodei__Audit__V1__CountResponse r = HODEI__AUDIT__V1__COUNT_RESPONSE__INIT;
		struct pb_arena *a = &call->arena;
		uint32_t n = req->group_count;
		Hodei__Audit__V1__CountResponse__Group *gs = pb_arena_alloc(a, (n ? n : 1) * sizeof(*gs));
		Hodei__Audit__V1__CountResponse__Group **gp = pb_arena_alloc(a, (n ? n : 1) * sizeof(*gp));
		if (!gs || !gp) {
			call_fail(call, R_MEMORY_BUDGET, GRPC_RESOURCE_EXHAUSTED,
				  "out of memory for the response");
		} else {
			for (uint32_t i = 0; i < n; i++) {
				hodei__audit__v1__count_response__group__init(&gs[i]);
				gs[i].key = c_bin(req->groups[i].key);
				gs[i].count = req->groups[i].count;
				gp[i] = &gs[i];
			}
			r.n_groups = n;
			r.groups = gp;
			r.total = req->total;
			call_respond(call, &r.base);
		}
	}
	slow_query_log(call, &req->filter, &req->profile, req->group_count, req->rows_scanned,
		       req->segments_read, req->segments_pruned);
	eng_count_release(req);
	rpc_flush_calls(call->st);
}

static void count_start(struct call *call)
{
	struct dec_error e;
	struct eng_count *req = &call->u.count;
	if (dec_count(&call->arena, call->msg, call->credit - GF_PREFIX_BYTES, &call->sh->srv->limits,
		      req, &e) != GRPC_OK) {
		call_fail(call, (enum srv_reason)e.reason, e.status, "%s", e.msg);
		return;
	}
	req->tenant = fmt_str_c(call->tenant);
	req->done = count_done;
	req->ctx = call;
	call_submit(call);
}

/* ---- Verify --------------------------------------------------------------- */

static void verify_done(struct eng_verify *req)
{
	struct call *call = req->ctx;
	if (!call_completed(call))
		return;
	if (req->status == FMT_E_INVALID) {
		call_fail(call, R_INVALID_ARGUMENT, GRPC_INVALID_ARGUMENT, "from_seq: after to_seq");
	} else if (read_failed(call, req->status, "verify")) {
	} else {
		Hodei__Audit__V1__VerifyResponse r = HODEI__AUDIT__V1__VERIFY_RESPONSE__INIT;
		r.ok = req->ok;
		r.events_checked = req->events_checked;
		r.segments_checked = req->segments_checked;
		r.chain_hash = (ProtobufCBinaryData){ FMT_HASH_BYTES, req->chain };
		r.first_bad_seq = req->first_bad_seq;
		r.problem = (ProtobufCBinaryData){ strlen(req->problem), (uint8_t *)req->problem };
		call_respond(call, &r.base);
	}
	rpc_flush_calls(call->st);
}

static void verify_start(struct call *call)
{
	Hodei__Audit__V1__VerifyRequest *m = hodei__audit__v1__verify_request__unpack(
		&call->arena.allocator, call->credit - GF_PREFIX_BYTES, call->msg);
	if (!m) {
		decode_failed(call, "VerifyRequest");
		return;
	}
	if (m->to_seq && m->from_seq > m->to_seq) {
		call_fail(call, R_INVALID_ARGUMENT, GRPC_INVALID_ARGUMENT, "from_seq: after to_seq");
		return;
	}
	struct eng_verify *req = &call->u.verify;
	req->tenant = fmt_str_c(call->tenant);
	req->from_seq = m->from_seq;
	req->to_seq = m->to_seq;
	req->done = verify_done;
	req->ctx = call;
	call_submit(call);
}

/* ---- Health --------------------------------------------------------------- */

static void health_check(struct call *call)
{
	Grpc__Health__V1__HealthCheckRequest *m = grpc__health__v1__health_check_request__unpack(
		&call->arena.allocator, call->credit - GF_PREFIX_BYTES, call->msg);
	if (!m) {
		decode_failed(call, "HealthCheckRequest");
		return;
	}
	static const char service[] = "hodei.audit.v1.AuditService";
	if (m->service.len && !(m->service.len == sizeof(service) - 1 &&
				memcmp(m->service.data, service, m->service.len) == 0)) {
		call_fail(call, R_INVALID_ARGUMENT, GRPC_NOT_FOUND, "unknown service");
		return;
	}
	Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	r.status = srv_ready(call->sh->srv) ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
					    : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
	call_respond(call, &r.base);
}

/* ---- dispatch ------------------------------------------------------------ */

static void call_start(struct call *call)
{
	switch (call->method) {
	case M_APPEND:
	case M_APPEND_STREAM:
		append_start(call);
		break;
	case M_SEARCH:
		search_start(call);
		break;
	case M_VERIFY:
		verify_start(call);
		break;
	case M_HEALTH:
		health_check(call);
		break;
	case M_COUNT:
		count_start(call);
		break;
	default:
		call_fail(call, R_UNIMPLEMENTED, GRPC_UNIMPLEMENTED, "unknown method");
		break;
	}
}

/* Starts the waiting calls of an AppendStream up to its in-flight cap;
 * nothing after a failed call is started (its stream ends there). */
static void stream_start_waiting(struct stream *st)
{
	uint32_t cap = st->c->sh->srv->cfg.stream_inflight_max;
	for (struct call *call = st->calls_head; call; call = call->next) {
		if (call->status == -1) {
			if (st->calls_inflight >= cap)
				break;
			call->status = -2; /* started */
			st->calls_inflight++;
			call_start(call);
		}
		if (call->done && call->status != GRPC_OK)
			break;
	}
}

void rpc_stream_fail(struct stream *st, int reason, int status, const char *message)
{
	srv_count_reject(st->c->sh, (enum srv_reason)reason);
	struct call *call = st->method == M_APPEND_STREAM && st->calls_head
				    ? calloc(1, sizeof(*call))
				    : NULL;
	if (!call) {
		stream_finish(st, status, message);
		return;
	}
	/* Requests before this point are answered first (N3): the error
	 * waits at the tail as a finished call. */
	call->method = st->method;
	call->st = st;
	call->sh = st->c->sh;
	call->start_ns = srv_now_ns();
	call->status = status;
	call->done = true;
	snprintf(call->message, sizeof(call->message), "%s", message);
	st->calls_tail->next = call;
	st->calls_tail = call;
	st->calls_inflight++;
	st->discard = true;
	rpc_flush_calls(st);
}

void rpc_on_message(struct stream *st, uint8_t *msg, uint32_t len)
{
	if (st->method != M_APPEND_STREAM) {
		if (st->unary_msg || st->messages) {
			free(msg);
			srv_count_reject(st->c->sh, R_INVALID_ARGUMENT);
			stream_finish(st, GRPC_INVALID_ARGUMENT, "a unary call carries exactly one message");
			return;
		}
		st->messages++;
		st->unary_msg = msg ? msg : malloc(1);
		st->unary_len = len;
		return;
	}
	st->messages++;
	if (st->discard) { /* the stream already failed: drop what follows */
		free(msg);
		stream_give_back(st->c, st->id, GF_PREFIX_BYTES + len);
		return;
	}
	if (atomic_load_explicit(&st->c->sh->srv->draining, memory_order_relaxed)) {
		/* Draining: this request is refused; those before it complete. */
		free(msg);
		stream_give_back(st->c, st->id, GF_PREFIX_BYTES + len);
		rpc_stream_fail(st, R_DRAINING, GRPC_UNAVAILABLE,
				"the server is shutting down; retry on another node");
		return;
	}
	if (!call_new(st, msg, len)) {
		srv_count_reject(st->c->sh, R_MEMORY_BUDGET);
		stream_finish(st, GRPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	stream_start_waiting(st);
	rpc_flush_calls(st);
}

void rpc_on_end(struct stream *st)
{
	if (st->method == M_APPEND_STREAM) {
		rpc_flush_calls(st);
		return;
	}
	if (!st->unary_msg) {
		srv_count_reject(st->c->sh, R_INVALID_ARGUMENT);
		stream_finish(st, GRPC_INVALID_ARGUMENT, "request without a message");
		return;
	}
	uint8_t *msg = st->unary_msg;
	st->unary_msg = NULL;
	struct call *call = call_new(st, msg, st->unary_len);
	if (!call) {
		srv_count_reject(st->c->sh, R_MEMORY_BUDGET);
		stream_finish(st, GRPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	call->status = -2;
	st->calls_inflight++;
	call_start(call);
	rpc_flush_calls(st);
}

void rpc_flush_calls(struct stream *st)
{
	if (!st)
		return;
	while (st->calls_head && st->calls_head->done && !st->answered) {
		struct call *call = st->calls_head;
		st->calls_head = call->next;
		if (!st->calls_head)
			st->calls_tail = NULL;
		st->calls_inflight--;
		int64_t now = srv_now_ns();
		mx_hist_observe_ns(&st->c->sh->stats.request_duration[call->method],
				   (uint64_t)(now - call->start_ns));
		if (call->method == M_APPEND && call->status == GRPC_OK)
			st->answered_ns = now;
		if (call->status == GRPC_OK) {
			if (stream_send_message(st, call->resp, call->resp_len) != 0)
				stream_finish(st, GRPC_RESOURCE_EXHAUSTED, "out of memory for the response");
			else if (st->method != M_APPEND_STREAM)
				stream_finish(st, GRPC_OK, NULL);
		} else {
			stream_finish(st, call->status, call->message);
		}
		call_free(call);
		if (st->method == M_APPEND_STREAM && !st->answered)
			stream_start_waiting(st);
	}
	if (st->answered) {
		rpc_detach_calls(st);
		return;
	}
	if (st->method != M_APPEND_STREAM || st->calls_head)
		return;
	if (st->end_stream_recv && !st->discard)
		stream_finish(st, GRPC_OK, NULL);
}

void rpc_detach_calls(struct stream *st)
{
	while (st->calls_head) {
		struct call *call = st->calls_head;
		st->calls_head = call->next;
		/* Credit goes back now: the stream will not hear of it again. */
		stream_give_back(st->c, st->id, call->credit);
		call->credit = 0;
		call->st = NULL;
		if (!call->in_engine)
			call_free(call);
	}
	st->calls_tail = NULL;
	st->calls_inflight = 0;
}
