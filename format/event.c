// SPDX-License-Identifier: Apache-2.0
/*
 * event.c — validation and canonical encoding of audit events.
 *
 * Canonical encoding, version 1 (all integers little-endian):
 *   u8  version (1)
 *   u8  tenant length, tenant bytes
 *   u64 seq, i64 received_at_ns
 *   16  event_id
 *   i64 occurred_at_ns
 *   u8  outcome
 *   9 × (u32 length, bytes): actor_id, actor_type, action, resource_type,
 *        resource_id, source_ip, user_agent, request_id, trace_id
 *   u32 attribute count, then per attribute u32+key, u32+value
 *   u32 length, details_json bytes
 * The decoder accepts exactly this and nothing else: no trailing bytes, no
 * lengths that run past the buffer, no unknown version.
 */
#include "event.h"

#include <arpa/inet.h>

static const char *const field_names[FMT_F_STRING_COUNT] = {
	[FMT_F_ACTOR_ID] = "actor_id",
	[FMT_F_ACTOR_TYPE] = "actor_type",
	[FMT_F_ACTION] = "action",
	[FMT_F_RESOURCE_TYPE] = "resource_type",
	[FMT_F_RESOURCE_ID] = "resource_id",
	[FMT_F_SOURCE_IP] = "source_ip",
	[FMT_F_USER_AGENT] = "user_agent",
	[FMT_F_REQUEST_ID] = "request_id",
	[FMT_F_TRACE_ID] = "trace_id",
};

const char *fmt_field_name(enum fmt_field f)
{
	ASSERT(f < FMT_F_STRING_COUNT);
	return field_names[f];
}

const char *fmt_outcome_name(enum fmt_outcome o)
{
	static const char *const names[] = { "", "success", "failure", "denied" };
	ASSERT((unsigned)o < FMT_ARRAY_LEN(names));
	return names[o];
}

void fmt_limits_default(struct fmt_limits *l)
{
	memset(l, 0, sizeof(*l));
	l->actor_id_max = 512;
	l->resource_id_max = 512;
	l->short_field_max = 128;
	l->user_agent_max = 512;
	l->request_id_max = 128;
	l->attrs_max = 32;
	l->attr_key_max = 64;
	l->attr_value_max = 1024;
	l->details_json_max = 16 * 1024;
	l->events_per_batch_max = 10000;
}

bool fmt_tenant_valid(struct fmt_str t)
{
	if (t.len < 1 || t.len > FMT_TENANT_MAX)
		return false;
	for (uint32_t i = 0; i < t.len; i++) {
		char c = t.ptr[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
		if (!ok)
			return false;
	}
	return true;
}

bool fmt_utf8_valid(const char *str, size_t len)
{
	const uint8_t *s = (const uint8_t *)str;
	size_t i = 0;
	while (i < len) {
		/* Audit fields are mostly ASCII: skip 8 bytes at a time while no
		 * byte has its high bit set. */
		while (len - i >= 8) {
			uint64_t w;
			memcpy(&w, s + i, 8);
			if (w & 0x8080808080808080ull)
				break;
			i += 8;
		}
		if (i >= len)
			break;
		uint8_t c = s[i];
		if (c < 0x80) {
			i++;
			continue;
		}
		size_t n;
		uint32_t cp;
		if (c >= 0xC2 && c <= 0xDF) {
			n = 1;
			cp = c & 0x1F;
		} else if (c >= 0xE0 && c <= 0xEF) {
			n = 2;
			cp = c & 0x0F;
		} else if (c >= 0xF0 && c <= 0xF4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (len - i <= n)
			return false;
		for (size_t k = 1; k <= n; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3F);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
		    (cp >= 0xD800 && cp <= 0xDFFF))
			return false;
		i += n + 1;
	}
	return true;
}

static bool ip_literal_valid(struct fmt_str s)
{
	char buf[INET6_ADDRSTRLEN + 1];
	unsigned char addr[sizeof(struct in6_addr)];
	if (s.len == 0 || s.len >= sizeof(buf))
		return false;
	/* inet_pton() reads a C string: an embedded NUL would hide the bytes
	 * after it ("1.2.3.4\0junk" would pass), so refuse it here. */
	if (memchr(s.ptr, 0, s.len) != NULL)
		return false;
	memcpy(buf, s.ptr, s.len);
	buf[s.len] = 0;
	return inet_pton(AF_INET, buf, addr) == 1 || inet_pton(AF_INET6, buf, addr) == 1;
}

/* Branch-free: a trace id's digits and letters come in random order, and
 * a compare per class mispredicted often enough to cost 4 % of the shard
 * thread's CPU at full ingest. */
static bool hex_valid(struct fmt_str s)
{
	static const uint8_t is_hex[256] = {
		['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,
		['7'] = 1, ['8'] = 1, ['9'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1,
		['e'] = 1, ['f'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,
		['F'] = 1,
	};
	unsigned ok = 1;
	for (uint32_t i = 0; i < s.len; i++)
		ok &= is_hex[(uint8_t)s.ptr[i]];
	return ok;
}

static int invalid(struct fmt_invalid *why, const char *field, const char *reason, uint32_t limit)
{
	if (why) {
		why->field = field;
		why->reason = reason;
		why->limit = limit;
	}
	return FMT_E_INVALID;
}

static uint32_t field_limit(const struct fmt_limits *l, enum fmt_field f)
{
	switch (f) {
	case FMT_F_ACTOR_ID: return l->actor_id_max;
	case FMT_F_RESOURCE_ID: return l->resource_id_max;
	case FMT_F_ACTOR_TYPE:
	case FMT_F_ACTION:
	case FMT_F_RESOURCE_TYPE: return l->short_field_max;
	case FMT_F_USER_AGENT: return l->user_agent_max;
	case FMT_F_REQUEST_ID: return l->request_id_max;
	case FMT_F_SOURCE_IP: return 45; /* longest IPv6 literal with IPv4 tail */
	case FMT_F_TRACE_ID: return 32;
	default: ASSERT(0);
	}
	return 0;
}

int fmt_event_validate(const struct fmt_event *ev, const struct fmt_limits *l,
		       struct fmt_invalid *why)
{
	for (int f = 0; f < FMT_F_STRING_COUNT; f++) {
		struct fmt_str s = ev->str[f];
		uint32_t max = field_limit(l, (enum fmt_field)f);
		if (s.len > max)
			return invalid(why, field_names[f], "too long", max);
		if (!fmt_utf8_valid(s.ptr, s.len))
			return invalid(why, field_names[f], "not valid UTF-8", 0);
	}
	if (ev->str[FMT_F_ACTOR_ID].len == 0)
		return invalid(why, "actor_id", "required", 0);
	if (ev->str[FMT_F_ACTION].len == 0)
		return invalid(why, "action", "required", 0);
	if (ev->str[FMT_F_SOURCE_IP].len && !ip_literal_valid(ev->str[FMT_F_SOURCE_IP]))
		return invalid(why, "source_ip", "not an IPv4 or IPv6 literal", 0);
	if (ev->str[FMT_F_TRACE_ID].len &&
	    (ev->str[FMT_F_TRACE_ID].len != 32 || !hex_valid(ev->str[FMT_F_TRACE_ID])))
		return invalid(why, "trace_id", "not 32 hex digits", 32);
	if (ev->outcome > FMT_OUTCOME_DENIED)
		return invalid(why, "outcome", "unknown value", FMT_OUTCOME_DENIED);
	if (ev->occurred_at_ns < 0)
		return invalid(why, "occurred_at_ns", "negative", 0);
	if (ev->attr_count > l->attrs_max || ev->attr_count > FMT_ATTRS_HARD_MAX)
		return invalid(why, "attributes", "too many", l->attrs_max);
	for (uint32_t i = 0; i < ev->attr_count; i++) {
		const struct fmt_attr *a = &ev->attrs[i];
		if (a->key.len == 0)
			return invalid(why, "attributes.key", "empty", 0);
		if (a->key.len > l->attr_key_max)
			return invalid(why, "attributes.key", "too long", l->attr_key_max);
		if (a->value.len > l->attr_value_max)
			return invalid(why, "attributes.value", "too long", l->attr_value_max);
		if (!fmt_utf8_valid(a->key.ptr, a->key.len))
			return invalid(why, "attributes.key", "not valid UTF-8", 0);
		if (!fmt_utf8_valid(a->value.ptr, a->value.len))
			return invalid(why, "attributes.value", "not valid UTF-8", 0);
	}
	if (ev->details_json.len > l->details_json_max)
		return invalid(why, "details_json", "too long", l->details_json_max);
	if (!fmt_utf8_valid(ev->details_json.ptr, ev->details_json.len))
		return invalid(why, "details_json", "not valid UTF-8", 0);
	if (ev->details_json.len && l->details_json_valid &&
	    !l->details_json_valid(ev->details_json.ptr, ev->details_json.len))
		return invalid(why, "details_json", "not one valid JSON value", 0);
	return 0;
}

size_t fmt_event_canon_size(const struct fmt_event *ev)
{
	size_t n = 1 + 1 + ev->tenant.len + 8 + 8 + 16 + 8 + 1;
	for (int f = 0; f < FMT_F_STRING_COUNT; f++)
		n += 4 + ev->str[f].len;
	n += 4;
	for (uint32_t i = 0; i < ev->attr_count; i++)
		n += 8 + ev->attrs[i].key.len + ev->attrs[i].value.len;
	n += 4 + ev->details_json.len;
	return n;
}

static uint8_t *put_str(uint8_t *p, struct fmt_str s)
{
	fmt_put_u32(p, s.len);
	if (s.len)
		memcpy(p + 4, s.ptr, s.len);
	return p + 4 + s.len;
}

/* put_str(), and *at = the bytes just written, when at is not NULL. */
static uint8_t *put_str_view(uint8_t *p, struct fmt_str s, struct fmt_str *at)
{
	p = put_str(p, s);
	if (at)
		*at = (struct fmt_str){ (const char *)p - s.len, s.len };
	return p;
}

int64_t fmt_event_canon_encode_view(const struct fmt_event *ev, uint8_t *out, size_t cap,
				    struct fmt_event *view, struct fmt_attr *attr_buf,
				    uint32_t attr_cap)
{
	size_t need = fmt_event_canon_size(ev);
	if (need > cap)
		return FMT_E_TOO_BIG;
	if (view && ev->attr_count > attr_cap)
		return FMT_E_TOO_BIG;
	ASSERT(ev->tenant.len <= FMT_TENANT_MAX);
	ASSERT(ev->outcome <= 0xFF);
	if (view) {
		memset(view, 0, sizeof(*view));
		view->seq = ev->seq;
		view->received_at_ns = ev->received_at_ns;
		memcpy(view->event_id, ev->event_id, 16);
		view->occurred_at_ns = ev->occurred_at_ns;
		view->outcome = (uint8_t)ev->outcome;
		view->attr_count = ev->attr_count;
		view->attrs = ev->attr_count ? attr_buf : NULL;
	}
	uint8_t *p = out;
	*p++ = FMT_CANON_VERSION;
	*p++ = (uint8_t)ev->tenant.len;
	if (ev->tenant.len) /* an empty view may have a NULL ptr */
		memcpy(p, ev->tenant.ptr, ev->tenant.len);
	if (view)
		view->tenant = (struct fmt_str){ (const char *)p, ev->tenant.len };
	p += ev->tenant.len;
	fmt_put_u64(p, ev->seq);
	fmt_put_u64(p + 8, (uint64_t)ev->received_at_ns);
	memcpy(p + 16, ev->event_id, 16);
	fmt_put_u64(p + 32, (uint64_t)ev->occurred_at_ns);
	p[40] = (uint8_t)ev->outcome;
	p += 41;
	for (int f = 0; f < FMT_F_STRING_COUNT; f++)
		p = put_str_view(p, ev->str[f], view ? &view->str[f] : NULL);
	fmt_put_u32(p, ev->attr_count);
	p += 4;
	for (uint32_t i = 0; i < ev->attr_count; i++) {
		p = put_str_view(p, ev->attrs[i].key, view ? &attr_buf[i].key : NULL);
		p = put_str_view(p, ev->attrs[i].value, view ? &attr_buf[i].value : NULL);
	}
	p = put_str_view(p, ev->details_json, view ? &view->details_json : NULL);
	ASSERT((size_t)(p - out) == need);
	return (int64_t)need;
}

int64_t fmt_event_canon_encode(const struct fmt_event *ev, uint8_t *out, size_t cap)
{
	return fmt_event_canon_encode_view(ev, out, cap, NULL, NULL, 0);
}

struct reader {
	const uint8_t *p;
	size_t left;
};

static int take(struct reader *r, size_t n, const uint8_t **out)
{
	if (r->left < n)
		return FMT_E_TRUNCATED;
	*out = r->p;
	r->p += n;
	r->left -= n;
	return 0;
}

static int take_str(struct reader *r, struct fmt_str *s)
{
	const uint8_t *p;
	int rc = take(r, 4, &p);
	if (rc)
		return rc;
	uint32_t len = fmt_get_u32(p);
	rc = take(r, len, &p);
	if (rc)
		return rc;
	s->ptr = (const char *)p;
	s->len = len;
	return 0;
}

int fmt_event_canon_decode(const uint8_t *buf, size_t len, struct fmt_event *ev,
			   struct fmt_attr *attr_buf, uint32_t attr_cap)
{
	struct reader r = { buf, len };
	const uint8_t *p;
	int rc;
	memset(ev, 0, sizeof(*ev));
	if ((rc = take(&r, 2, &p)))
		return rc;
	if (p[0] != FMT_CANON_VERSION)
		return FMT_E_VERSION;
	uint8_t tlen = p[1];
	if (tlen > FMT_TENANT_MAX)
		return FMT_E_CORRUPT;
	if ((rc = take(&r, tlen, &p)))
		return rc;
	ev->tenant.ptr = (const char *)p;
	ev->tenant.len = tlen;
	if ((rc = take(&r, 41, &p)))
		return rc;
	ev->seq = fmt_get_u64(p);
	ev->received_at_ns = (int64_t)fmt_get_u64(p + 8);
	memcpy(ev->event_id, p + 16, 16);
	ev->occurred_at_ns = (int64_t)fmt_get_u64(p + 32);
	ev->outcome = p[40];
	for (int f = 0; f < FMT_F_STRING_COUNT; f++)
		if ((rc = take_str(&r, &ev->str[f])))
			return rc;
	if ((rc = take(&r, 4, &p)))
		return rc;
	uint32_t n = fmt_get_u32(p);
	if (n > FMT_ATTRS_HARD_MAX)
		return FMT_E_CORRUPT;
	if (n > attr_cap)
		return FMT_E_TOO_BIG;
	for (uint32_t i = 0; i < n; i++) {
		if ((rc = take_str(&r, &attr_buf[i].key)) || (rc = take_str(&r, &attr_buf[i].value)))
			return rc;
	}
	ev->attr_count = n;
	ev->attrs = n ? attr_buf : NULL;
	if ((rc = take_str(&r, &ev->details_json)))
		return rc;
	if (r.left != 0)
		return FMT_E_CORRUPT;
	return 0;
}

void fmt_uuid_v7(uint8_t out[16], int64_t unix_ns, const uint8_t rand10[10])
{
	uint64_t ms = (uint64_t)(unix_ns / 1000000);
	for (int i = 0; i < 6; i++)
		out[i] = (uint8_t)(ms >> (8 * (5 - i)));
	memcpy(out + 6, rand10, 10);
	out[6] = (uint8_t)(0x70 | (out[6] & 0x0F));
	out[8] = (uint8_t)(0x80 | (out[8] & 0x3F));
}

void fmt_uuid_format(const uint8_t id[16], char out[37])
{
	static const char hex[] = "0123456789abcdef";
	char *p = out;
	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*p++ = '-';
		*p++ = hex[id[i] >> 4];
		*p++ = hex[id[i] & 15];
	}
	*p = 0;
}

int fmt_uuid_parse(const char *s, size_t len, uint8_t out[16])
{
	if (len != 36)
		return FMT_E_INVALID;
	int j = 0;
	for (size_t i = 0; i < 36;) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return FMT_E_INVALID;
			i++;
			continue;
		}
		int hi = fmt_hex_digit(s[i]), lo = fmt_hex_digit(s[i + 1]);
		if (hi < 0 || lo < 0)
			return FMT_E_INVALID;
		out[j++] = (uint8_t)(hi << 4 | lo);
		i += 2;
	}
	return 0;
}
