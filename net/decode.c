// SPDX-License-Identifier: Apache-2.0
#include "net/decode.h"
#include "net/grpc_status.h"
#include "net/internal.h"

#include "hodei/audit/v1/audit.pb-c.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void fail(struct dec_error *e, enum srv_reason reason, int status, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void fail(struct dec_error *e, enum srv_reason reason, int status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	e->status = status;
	e->reason = (int)reason;
}

void dec_failed(const struct pb_arena *a, const char *what, struct dec_error *e)
{
	if (a->exceeded)
		fail(e, R_MEMORY_BUDGET, GRPC_RESOURCE_EXHAUSTED,
		     "%s: decoding needs more than the per-request memory cap", what);
	else
		fail(e, R_INVALID_ARGUMENT, GRPC_INVALID_ARGUMENT, "%s: not a valid protobuf message",
		     what);
}

static struct fmt_str pb_str(ProtobufCBinaryData b)
{
	return (struct fmt_str){ (const char *)b.data, (uint32_t)b.len };
}

int dec_append(struct pb_arena *a, const uint8_t *msg, size_t len, const struct fmt_limits *lim,
	       struct eng_append *req, struct dec_error *e)
{
	Hodei__Audit__V1__AppendRequest *m = hodei__audit__v1__append_request__unpack(
		&a->allocator, len, msg);
	if (!m) {
		dec_failed(a, "AppendRequest", e);
		return e->status;
	}
	if (m->n_events == 0) {
		fail(e, R_INVALID_ARGUMENT, GRPC_INVALID_ARGUMENT, "events: empty");
		return e->status;
	}
	if (m->n_events > lim->events_per_batch_max) {
		fail(e, R_TOO_MANY_EVENTS, GRPC_RESOURCE_EXHAUSTED,
			  "events: %zu in one request, the limit is %u", m->n_events,
			  lim->events_per_batch_max);
		return e->status;
	}
	size_t n_attrs = 0;
	for (size_t i = 0; i < m->n_events; i++) {
		const Hodei__Audit__V1__AuditEvent *pe = m->events[i];
		if (pe->event_id.len != 0 && pe->event_id.len != FMT_EVENT_ID_BYTES) {
			fail(e, R_INVALID_ARGUMENT, GRPC_INVALID_ARGUMENT,
				  "events[%zu].event_id: must be 16 bytes (a UUID) or empty, got %zu", i,
				  pe->event_id.len);
			return e->status;
		}
		if (pe->n_attributes > lim->attrs_max) {
			fail(e, R_INVALID_ARGUMENT, GRPC_INVALID_ARGUMENT,
				  "events[%zu].attributes: more than %u", i, lim->attrs_max);
			return e->status;
		}
		n_attrs += pe->n_attributes;
	}
	struct fmt_event *evs = pb_arena_alloc(a, m->n_events * sizeof(*evs));
	struct fmt_attr *attrs = pb_arena_alloc(a, (n_attrs ? n_attrs : 1) * sizeof(*attrs));
	if (!evs || !attrs) {
		dec_failed(a, "AppendRequest", e);
		return e->status;
	}
	for (size_t i = 0; i < m->n_events; i++) {
		const Hodei__Audit__V1__AuditEvent *pe = m->events[i];
		struct fmt_event *ev = &evs[i];
		memset(ev, 0, sizeof(*ev));
		if (pe->event_id.len)
			memcpy(ev->event_id, pe->event_id.data, FMT_EVENT_ID_BYTES);
		ev->occurred_at_ns = pe->occurred_at_ns;
		ev->outcome = (uint32_t)pe->outcome;
		ev->str[FMT_F_ACTOR_ID] = pb_str(pe->actor_id);
		ev->str[FMT_F_ACTOR_TYPE] = pb_str(pe->actor_type);
		ev->str[FMT_F_ACTION] = pb_str(pe->action);
		ev->str[FMT_F_RESOURCE_TYPE] = pb_str(pe->resource_type);
		ev->str[FMT_F_RESOURCE_ID] = pb_str(pe->resource_id);
		ev->str[FMT_F_SOURCE_IP] = pb_str(pe->source_ip);
		ev->str[FMT_F_USER_AGENT] = pb_str(pe->user_agent);
		ev->str[FMT_F_REQUEST_ID] = pb_str(pe->request_id);
		ev->str[FMT_F_TRACE_ID] = pb_str(pe->trace_id);
		ev->attrs = attrs;
		ev->attr_count = (uint32_t)pe->n_attributes;
		for (size_t k = 0; k < pe->n_attributes; k++) {
			attrs[k].key = pb_str(pe->attributes[k]->key);
			attrs[k].value = pb_str(pe->attributes[k]->value);
		}
		attrs += pe->n_attributes;
		ev->details_json = pb_str(pe->details_json);
	}
	/* The engine's own validation, here on the connection's shard: a bad
	 * request is refused before it reaches the tenant's shard, so on an
	 * AppendStream nothing after it is ever submitted. */
	for (size_t i = 0; i < m->n_events; i++) {
		struct fmt_invalid why;
		if (fmt_event_validate(&evs[i], lim, &why) != 0) {
			fail(e, R_INVALID_ARGUMENT, GRPC_INVALID_ARGUMENT, "events[%zu].%s: %s", i,
			     why.field, why.reason);
			return e->status;
		}
	}
	req->events = evs;
	req->count = (uint32_t)m->n_events;
	req->validated = true;
	return GRPC_OK;
}

/* A filter string: valid UTF-8 and within its field's limit. */
static bool filter_str(struct dec_error *e, const char *field, ProtobufCBinaryData b, uint32_t max,
		       struct fmt_str *out)
{
	if (b.len > max) {
		fail(e, R_INVALID_ARGUMENT, GRPC_INVALID_ARGUMENT, "%s: longer than %u bytes",
			  field, max);
		return false;
	}
	if (!fmt_utf8_valid((const char *)b.data, b.len)) {
		fail(e, R_INVALID_ARGUMENT, GRPC_INVALID_ARGUMENT, "%s: not valid UTF-8", field);
		return false;
	}
	*out = pb_str(b);
	return true;
}

/* The filter fields of a SearchRequest (also CountRequest.filter). */
static int dec_filter(const Hodei__Audit__V1__SearchRequest *m, const struct fmt_limits *lim,
		      struct eng_filter *f, struct dec_error *e)
{
	if (m->from_ns < 0 || m->to_ns < 0) {
		fail(e, R_INVALID_ARGUMENT, GRPC_INVALID_ARGUMENT, "%s: negative",
			  m->from_ns < 0 ? "from_ns" : "to_ns");
		return e->status;
	}
	if (m->to_ns && m->from_ns > m->to_ns) {
		fail(e, R_INVALID_ARGUMENT, GRPC_INVALID_ARGUMENT, "from_ns: after to_ns");
		return e->status;
	}
	if ((uint32_t)m->outcome > FMT_OUTCOME_DENIED) {
		fail(e, R_INVALID_ARGUMENT, GRPC_INVALID_ARGUMENT, "outcome: unknown value %d",
			  (int)m->outcome);
		return e->status;
	}
	if (m->event_id.len != 0 && m->event_id.len != FMT_EVENT_ID_BYTES) {
		fail(e, R_INVALID_ARGUMENT, GRPC_INVALID_ARGUMENT,
			  "event_id: must be 16 bytes (a UUID) or empty");
		return e->status;
	}
	if (!filter_str(e, "actor_id", m->actor_id, lim->actor_id_max, &f->actor_id) ||
	    !filter_str(e, "action", m->action, lim->short_field_max, &f->action) ||
	    !filter_str(e, "resource_type", m->resource_type, lim->short_field_max,
			&f->resource_type) ||
	    !filter_str(e, "resource_id", m->resource_id, lim->resource_id_max, &f->resource_id))
		return e->status;
	f->from_ns = m->from_ns;
	f->to_ns = m->to_ns;
	f->outcome = (uint32_t)m->outcome;
	if (m->event_id.len) {
		f->has_event_id = true;
		memcpy(f->event_id, m->event_id.data, FMT_EVENT_ID_BYTES);
	}
	return GRPC_OK;
}

int dec_search(struct pb_arena *a, const uint8_t *msg, size_t len, const struct fmt_limits *lim,
	       struct eng_search *req, struct dec_error *e)
{
	Hodei__Audit__V1__SearchRequest *m = hodei__audit__v1__search_request__unpack(
		&a->allocator, len, msg);
	if (!m) {
		dec_failed(a, "SearchRequest", e);
		return e->status;
	}
	if (m->limit > ENG_SEARCH_LIMIT_MAX) {
		fail(e, R_INVALID_ARGUMENT, GRPC_INVALID_ARGUMENT, "limit: over %u",
			  ENG_SEARCH_LIMIT_MAX);
		return e->status;
	}
	if (m->page_token.len > ENG_PAGE_TOKEN_BYTES) {
		fail(e, R_INVALID_ARGUMENT, GRPC_INVALID_ARGUMENT,
			  "page_token: not a token of this tenant and query");
		return e->status;
	}
	if (dec_filter(m, lim, &req->filter, e) != GRPC_OK)
		return e->status;
	req->limit = m->limit;
	req->oldest_first = m->oldest_first;
	req->page_token = m->page_token.len ? m->page_token.data : NULL;
	req->page_token_len = (uint32_t)m->page_token.len;
	return GRPC_OK;
}


int dec_count(struct pb_arena *a, const uint8_t *msg, size_t len, const struct fmt_limits *lim,
	      struct eng_count *req, struct dec_error *e)
{
	static const struct {
		const char *name;
		enum eng_count_by by;
	} bys[] = {
		{ "", ENG_COUNT_BY_NONE },
		{ "action", ENG_COUNT_BY_ACTION },
		{ "actor_id", ENG_COUNT_BY_ACTOR_ID },
		{ "resource_type", ENG_COUNT_BY_RESOURCE_TYPE },
		{ "outcome", ENG_COUNT_BY_OUTCOME },
	};
	Hodei__Audit__V1__CountRequest *m = hodei__audit__v1__count_request__unpack(
		&a->allocator, len, msg);
	if (!m) {
		dec_failed(a, "CountRequest", e);
		return e->status;
	}
	size_t k = 0;
	while (k < FMT_ARRAY_LEN(bys) &&
	       !(m->group_by.len == strlen(bys[k].name) &&
		 (m->group_by.len == 0 || memcmp(m->group_by.data, bys[k].name, m->group_by.len) == 0)))
		k++;
	if (k == FMT_ARRAY_LEN(bys)) {
		fail(e, R_INVALID_ARGUMENT, GRPC_INVALID_ARGUMENT,
		     "group_by: must be empty (total only), \"action\", \"actor_id\", "
		     "\"resource_type\" or \"outcome\"");
		return e->status;
	}
	req->group_by = bys[k].by;
	/* The filter's limit, page_token and order mean nothing to a count:
	 * they are ignored (DESIGN.md §5). A missing filter is an empty one. */
	if (m->filter) {
		e->msg[0] = 0;
		if (dec_filter(m->filter, lim, &req->filter, e) != GRPC_OK) {
			char field[sizeof(e->msg)];
			snprintf(field, sizeof(field), "%s", e->msg);
			snprintf(e->msg, sizeof(e->msg), "filter.%s", field);
			return e->status;
		}
	}
	return GRPC_OK;
}
