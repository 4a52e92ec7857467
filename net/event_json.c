// SPDX-License-Identifier: Apache-2.0
/*
 * event_json.c — the JSON form of an event (see event_json.h for the rules).
 *
 * Parsing walks the object's members once against a table of known names;
 * each member is converted into the protobuf-c event with its strings
 * copied into the caller's arena. Nothing is half-done on error: the caller
 * resets the arena and throws the event away. Printing builds a jansson
 * tree in the order of the proto, which net_json_dump turns into one
 * compact line.
 *
 * Invariants:
 *   1. A parsed event's strings are NUL-terminated arena copies, never
 *      pointers into the jansson tree (which is freed before returning).
 *   2. Every message written to err starts with the field name, so the CLI
 *      can print "line N: <message>" and the user knows what to fix.
 *   3. print → parse gives back the same event: every printed form is one
 *      the parser accepts (checked by tests/unit/net/test_event_json.c).
 */
#include "net/event_json.h"

#include "format/common.h"
#include "format/event.h"
#include "format/hash.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena ---------------------------------------------------------------- */

#define ARENA_BLOCK_BYTES (64 * 1024)
#define ARENA_ALIGN 16

struct net_arena_block {
	struct net_arena_block *next;
	size_t cap;
	size_t used;
	_Alignas(ARENA_ALIGN) unsigned char data[];
};

void net_arena_init(struct net_arena *a, size_t cap_bytes)
{
	a->head = NULL;
	a->used_bytes = 0;
	a->cap_bytes = cap_bytes;
}

void *net_arena_alloc(struct net_arena *a, size_t n)
{
	size_t need = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
	if (need < n || need > a->cap_bytes - a->used_bytes)
		return NULL;
	struct net_arena_block *b = a->head;
	if (!b || b->cap - b->used < need) {
		size_t cap = need > ARENA_BLOCK_BYTES ? need : ARENA_BLOCK_BYTES;
		b = malloc(sizeof(*b) + cap);
		if (!b)
			return NULL;
		b->cap = cap;
		b->used = 0;
		b->next = a->head;
		a->head = b;
	}
	void *p = b->data + b->used;
	b->used += need;
	a->used_bytes += need;
	ASSERT(b->used <= b->cap && a->used_bytes <= a->cap_bytes);
	memset(p, 0, n);
	return p;
}

char *net_arena_strndup(struct net_arena *a, const char *s, size_t len)
{
	if (len == SIZE_MAX)
		return NULL;
	char *p = net_arena_alloc(a, len + 1);
	if (p) {
		if (len)
			memcpy(p, s, len);
		p[len] = 0;
	}
	return p;
}

void net_arena_reset(struct net_arena *a)
{
	/* Keep the newest block if it has the standard size: the next batch
	 * most likely needs it again. */
	struct net_arena_block *keep = a->head;
	if (keep && keep->cap != ARENA_BLOCK_BYTES)
		keep = NULL;
	struct net_arena_block *b = a->head;
	while (b) {
		struct net_arena_block *next = b->next;
		if (b != keep)
			free(b);
		b = next;
	}
	if (keep) {
		keep->next = NULL;
		keep->used = 0;
	}
	a->head = keep;
	a->used_bytes = 0;
}

void net_arena_free(struct net_arena *a)
{
	net_arena_reset(a);
	free(a->head);
	a->head = NULL;
}

/* ---- time ------------------------------------------------------------------ */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil), and back. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	unsigned doe = (unsigned)(z - era * 146097);
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static bool leap_year(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(int64_t y, unsigned m)
{
	static const unsigned dim[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	return m == 2 && leap_year(y) ? 29 : dim[m - 1];
}

/* n decimal digits at s[*i], advancing *i; -1 if any is not a digit. */
static int64_t digits(const char *s, size_t len, size_t *i, unsigned n)
{
	if (len - *i < n)
		return -1;
	int64_t v = 0;
	for (unsigned k = 0; k < n; k++) {
		char c = s[*i + k];
		if (c < '0' || c > '9')
			return -1;
		v = v * 10 + (c - '0');
	}
	*i += n;
	return v;
}

static bool expect(const char *s, size_t len, size_t *i, char c)
{
	if (*i >= len || s[*i] != c)
		return false;
	(*i)++;
	return true;
}

#define NS_PER_S 1000000000LL

/* Fraction and zone after the seconds. Returns 0 or FMT_E_INVALID. */
static int time_tail(const char *s, size_t len, size_t i, int64_t *frac_ns, int64_t *offset_s,
		     const char **why)
{
	*frac_ns = 0;
	if (i < len && s[i] == '.') {
		i++;
		unsigned n = 0;
		while (i < len && s[i] >= '0' && s[i] <= '9') {
			if (++n > 9) {
				*why = "more than 9 fractional digits";
				return FMT_E_INVALID;
			}
			*frac_ns = *frac_ns * 10 + (s[i++] - '0');
		}
		if (n == 0) {
			*why = "no digits after '.'";
			return FMT_E_INVALID;
		}
		for (; n < 9; n++)
			*frac_ns *= 10;
	}
	*offset_s = 0;
	if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
		i++;
	} else if (i < len && (s[i] == '+' || s[i] == '-')) {
		int sign = s[i++] == '-' ? -1 : 1;
		int64_t oh = digits(s, len, &i, 2), om = -1;
		if (oh >= 0 && expect(s, len, &i, ':'))
			om = digits(s, len, &i, 2);
		if (oh < 0 || om < 0 || oh > 23 || om > 59) {
			*why = "bad zone offset (want Z or ±hh:mm)";
			return FMT_E_INVALID;
		}
		*offset_s = sign * (oh * 3600 + om * 60);
	} else {
		*why = "missing zone (want Z or ±hh:mm)";
		return FMT_E_INVALID;
	}
	if (i != len) {
		*why = "trailing characters";
		return FMT_E_INVALID;
	}
	return 0;
}

int net_time_parse(const char *s, size_t len, int64_t *ns, const char **why)
{
	static const char *const shape = "want YYYY-MM-DDThh:mm:ss[.fraction](Z|±hh:mm)";
	size_t i = 0;
	int64_t y = digits(s, len, &i, 4), mo = -1, d = -1, h = -1, mi = -1, se = -1;
	if (y >= 0 && expect(s, len, &i, '-'))
		mo = digits(s, len, &i, 2);
	if (mo >= 0 && expect(s, len, &i, '-'))
		d = digits(s, len, &i, 2);
	if (d >= 0 && i < len && (s[i] == 'T' || s[i] == 't' || s[i] == ' ')) {
		i++;
		h = digits(s, len, &i, 2);
	}
	if (h >= 0 && expect(s, len, &i, ':'))
		mi = digits(s, len, &i, 2);
	if (mi >= 0 && expect(s, len, &i, ':'))
		se = digits(s, len, &i, 2);
	if (se < 0) {
		*why = shape;
		return FMT_E_INVALID;
	}
	if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, (unsigned)mo)) {
		*why = "no such date";
		return FMT_E_INVALID;
	}
	if (h > 23 || mi > 59 || se > 59) {
		*why = se == 60 ? "leap second 60 is not supported" : "no such time of day";
		return FMT_E_INVALID;
	}
	int64_t frac, offset;
	int rc = time_tail(s, len, i, &frac, &offset, why);
	if (rc)
		return rc;
	int64_t secs = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 +
		       se - offset;
	if (secs < 0 && frac > 0) { /* so that INT64_MIN itself does not overflow */
		secs++;
		frac -= NS_PER_S;
	}
	int64_t out;
	if (__builtin_mul_overflow(secs, NS_PER_S, &out) || __builtin_add_overflow(out, frac, &out)) {
		*why = "outside the range of Unix nanoseconds in int64 (1677..2262)";
		return FMT_E_INVALID;
	}
	*ns = out;
	return 0;
}

void net_time_format(int64_t ns, char out[NET_TIME_TEXT_MAX])
{
	int64_t secs = ns / NS_PER_S, frac = ns % NS_PER_S;
	if (frac < 0) {
		frac += NS_PER_S;
		secs--;
	}
	int64_t days = secs / 86400, rem = secs % 86400;
	if (rem < 0) {
		rem += 86400;
		days--;
	}
	int64_t y;
	unsigned m, d;
	civil_from_days(days, &y, &m, &d);
	snprintf(out, NET_TIME_TEXT_MAX, "%04lld-%02u-%02uT%02u:%02u:%02u.%09lldZ", (long long)y, m,
		 d, (unsigned)(rem / 3600), (unsigned)(rem / 60 % 60), (unsigned)(rem % 60),
		 (long long)frac);
}

/* ---- input ----------------------------------------------------------------- */

enum field_kind {
	K_STRING,
	K_EVENT_ID,
	K_OCCURRED_AT,
	K_OCCURRED_AT_NS,
	K_OUTCOME,
	K_ATTRIBUTES,
	K_DETAILS,
	/* Server-assigned: stored events only. */
	K_TENANT_ID,
	K_SEQ,
	K_RECEIVED_AT,
	K_CHAIN_HASH,
};

struct field {
	const char *name;
	enum field_kind kind;
	size_t str_offset; /* K_STRING: offset of the char * in AuditEvent */
};

#define STR_FIELD(n) { #n, K_STRING, offsetof(Hodei__Audit__V1__AuditEvent, n) }

/* The JSON form's names, in print order. */
static const struct field fields[] = {
	{ "tenant_id", K_TENANT_ID, 0 },
	{ "seq", K_SEQ, 0 },
	{ "event_id", K_EVENT_ID, 0 },
	{ "occurred_at", K_OCCURRED_AT, 0 },
	{ "occurred_at_ns", K_OCCURRED_AT_NS, 0 },
	{ "received_at", K_RECEIVED_AT, 0 },
	STR_FIELD(actor_id),
	STR_FIELD(actor_type),
	STR_FIELD(action),
	STR_FIELD(resource_type),
	STR_FIELD(resource_id),
	{ "outcome", K_OUTCOME, 0 },
	STR_FIELD(source_ip),
	STR_FIELD(user_agent),
	STR_FIELD(request_id),
	STR_FIELD(trace_id),
	{ "attributes", K_ATTRIBUTES, 0 },
	{ "details", K_DETAILS, 0 },
	{ "chain_hash", K_CHAIN_HASH, 0 },
};

static const char *const outcome_names[] = { NULL, "success", "failure", "denied" };

struct parse {
	struct net_arena *arena;
	Hodei__Audit__V1__AuditEvent *ev;
	Hodei__Audit__V1__StoredEvent *se; /* NULL: an event to append */
	char *err;
	size_t err_cap;
	bool have_occurred_at;
	bool have_occurred_at_ns;
};

static int fail(struct parse *p, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(struct parse *p, int code, const char *fmt, ...)
{
	if (p->err_cap) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(p->err, p->err_cap, fmt, ap);
		va_end(ap);
	}
	return code;
}

/* A member name for a message: at most 64 bytes, control characters and
 * quotes replaced, so that a hostile name cannot break the message line. */
static void printable_name(const char *s, char out[80])
{
	size_t n = 0;
	for (; *s && n < 64; s++)
		out[n++] = ((unsigned char)*s < 0x20 || *s == '"' || *s == 0x7f) ? '?' : *s;
	/* Do not cut a UTF-8 sequence in half. */
	while (*s && n > 0 && ((unsigned char)out[n - 1] & 0xC0) == 0x80)
		n--;
	if (*s && n > 0 && ((unsigned char)out[n - 1] & 0xC0) == 0xC0)
		n--;
	if (*s)
		memcpy(out + n, "...", 4), n += 3;
	out[n] = 0;
}

/* Copies bytes into the arena as a protobuf-c string (the generated C
 * holds strings as pointer + length: proto/CMakeLists.txt). */
static int copy_bytes(struct parse *p, const char *name, const char *s, size_t len,
		      ProtobufCBinaryData *out)
{
	char *copy = net_arena_strndup(p->arena, s, len);
	if (!copy)
		return fail(p, FMT_E_NOMEM, "%s: out of memory", name);
	out->data = (uint8_t *)copy;
	out->len = len;
	return 0;
}

static int copy_string(struct parse *p, const char *name, const json_t *v, ProtobufCBinaryData *out)
{
	if (!json_is_string(v))
		return fail(p, FMT_E_INVALID, "%s: must be a string", name);
	return copy_bytes(p, name, json_string_value(v), json_string_length(v), out);
}

static int parse_event_id(struct parse *p, const json_t *v)
{
	if (!json_is_string(v))
		return fail(p, FMT_E_INVALID, "event_id: must be a string (a canonical UUID)");
	uint8_t *id = net_arena_alloc(p->arena, FMT_EVENT_ID_BYTES);
	if (!id)
		return fail(p, FMT_E_NOMEM, "event_id: out of memory");
	if (fmt_uuid_parse(json_string_value(v), json_string_length(v), id))
		return fail(p, FMT_E_INVALID,
			    "event_id: not a canonical UUID (want 8-4-4-4-12 hex digits)");
	p->ev->event_id.data = id;
	p->ev->event_id.len = FMT_EVENT_ID_BYTES;
	return 0;
}

static int parse_time(struct parse *p, const char *name, const json_t *v, int64_t *ns)
{
	const char *why = NULL;
	if (!json_is_string(v))
		return fail(p, FMT_E_INVALID, "%s: must be an RFC 3339 string", name);
	if (net_time_parse(json_string_value(v), json_string_length(v), ns, &why))
		return fail(p, FMT_E_INVALID, "%s: not RFC 3339: %s", name, why);
	return 0;
}

static int parse_outcome(struct parse *p, const json_t *v)
{
	const char *s = json_string_value(v);
	for (unsigned i = 1; s && i < FMT_ARRAY_LEN(outcome_names); i++) {
		if (!strcmp(s, outcome_names[i]) && strlen(s) == json_string_length(v)) {
			p->ev->outcome = (Hodei__Audit__V1__Outcome)i;
			return 0;
		}
	}
	return fail(p, FMT_E_INVALID, "outcome: must be \"success\", \"failure\" or \"denied\"");
}

static int parse_attributes(struct parse *p, const json_t *v)
{
	if (!json_is_object(v))
		return fail(p, FMT_E_INVALID, "attributes: must be an object of string values");
	size_t n = json_object_size(v);
	if (n == 0)
		return 0;
	Hodei__Audit__V1__Attribute **ptrs = net_arena_alloc(p->arena, n * sizeof(*ptrs));
	Hodei__Audit__V1__Attribute *attrs = net_arena_alloc(p->arena, n * sizeof(*attrs));
	if (!ptrs || !attrs)
		return fail(p, FMT_E_NOMEM, "attributes: out of memory");
	size_t i = 0;
	const char *key;
	json_t *val;
	json_object_foreach((json_t *)v, key, val) {
		ASSERT(i < n);
		char name[80];
		if (!json_is_string(val)) {
			printable_name(key, name);
			return fail(p, FMT_E_INVALID, "attributes.%s: value must be a string", name);
		}
		Hodei__Audit__V1__Attribute init = HODEI__AUDIT__V1__ATTRIBUTE__INIT;
		attrs[i] = init;
		if (copy_bytes(p, "attributes", key, strlen(key), &attrs[i].key) ||
		    copy_string(p, "attributes", val, &attrs[i].value))
			return FMT_E_NOMEM;
		ptrs[i] = &attrs[i];
		i++;
	}
	p->ev->n_attributes = i;
	p->ev->attributes = ptrs;
	return 0;
}

static int parse_details(struct parse *p, const json_t *v)
{
	char *text = net_json_dump(v);
	if (!text)
		return fail(p, FMT_E_NOMEM, "details: out of memory");
	size_t len = strlen(text);
	char *copy = net_arena_strndup(p->arena, text, len);
	free(text);
	if (!copy)
		return fail(p, FMT_E_NOMEM, "details: out of memory");
	p->ev->details_json.data = (uint8_t *)copy;
	p->ev->details_json.len = len;
	return 0;
}

static int parse_chain_hash(struct parse *p, const json_t *v)
{
	const char *s = json_string_value(v);
	size_t len = json_string_length(v);
	if (!s || len != 2 * FMT_HASH_BYTES)
		return fail(p, FMT_E_INVALID, "chain_hash: must be 64 hex digits");
	uint8_t *h = net_arena_alloc(p->arena, FMT_HASH_BYTES);
	if (!h)
		return fail(p, FMT_E_NOMEM, "chain_hash: out of memory");
	for (size_t i = 0; i < FMT_HASH_BYTES; i++) {
		unsigned byte;
		char two[3] = { s[2 * i], s[2 * i + 1], 0 };
		char *end;
		byte = (unsigned)strtoul(two, &end, 16);
		if (end != two + 2 || two[0] == '+' || two[0] == '-' || two[0] == ' ')
			return fail(p, FMT_E_INVALID, "chain_hash: must be 64 hex digits");
		h[i] = (uint8_t)byte;
	}
	p->se->chain_hash.data = h;
	p->se->chain_hash.len = FMT_HASH_BYTES;
	return 0;
}

static int parse_stored_field(struct parse *p, const struct field *f, const json_t *v)
{
	if (!p->se)
		return fail(p, FMT_E_INVALID,
			    "%s: assigned by the server (found in search output); not accepted in "
			    "an event to append",
			    f->name);
	switch (f->kind) {
	case K_TENANT_ID:
		return copy_string(p, f->name, v, &p->se->tenant_id);
	case K_SEQ:
		if (!json_is_integer(v) || json_integer_value(v) < 0)
			return fail(p, FMT_E_INVALID, "seq: must be a non-negative integer");
		p->se->seq = (uint64_t)json_integer_value(v);
		return 0;
	case K_RECEIVED_AT:
		return parse_time(p, f->name, v, &p->se->received_at_ns);
	case K_CHAIN_HASH:
		return parse_chain_hash(p, v);
	default:
		ASSERT(!"not a stored field");
	}
	return FMT_E_INVALID;
}

static int parse_member(struct parse *p, const struct field *f, const json_t *v)
{
	if (json_is_null(v) && f->kind != K_DETAILS)
		return 0; /* null means absent */
	switch (f->kind) {
	case K_STRING:
		return copy_string(p, f->name, v,
				   (ProtobufCBinaryData *)((char *)p->ev + f->str_offset));
	case K_EVENT_ID:
		return parse_event_id(p, v);
	case K_OCCURRED_AT:
		p->have_occurred_at = true;
		return parse_time(p, f->name, v, &p->ev->occurred_at_ns);
	case K_OCCURRED_AT_NS:
		p->have_occurred_at_ns = true;
		if (!json_is_integer(v))
			return fail(p, FMT_E_INVALID,
				    "occurred_at_ns: must be an integer (Unix time in ns)");
		p->ev->occurred_at_ns = json_integer_value(v);
		return 0;
	case K_OUTCOME:
		return parse_outcome(p, v);
	case K_ATTRIBUTES:
		return parse_attributes(p, v);
	case K_DETAILS:
		return parse_details(p, v);
	default:
		return parse_stored_field(p, f, v);
	}
}

static int parse_object(struct parse *p, const json_t *obj)
{
	Hodei__Audit__V1__AuditEvent init = HODEI__AUDIT__V1__AUDIT_EVENT__INIT;
	*p->ev = init;
	if (!json_is_object(obj))
		return fail(p, FMT_E_INVALID, "an event must be a JSON object");
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)obj, key, v) {
		const struct field *f = NULL;
		for (size_t i = 0; i < FMT_ARRAY_LEN(fields) && !f; i++)
			if (!strcmp(key, fields[i].name))
				f = &fields[i];
		if (!f) {
			char name[80];
			printable_name(key, name);
			return fail(p, FMT_E_INVALID, "unknown field \"%s\"", name);
		}
		int rc = parse_member(p, f, v);
		if (rc)
			return rc;
	}
	if (p->have_occurred_at && p->have_occurred_at_ns)
		return fail(p, FMT_E_INVALID,
			    "occurred_at_ns: give occurred_at or occurred_at_ns, not both");
	return 0;
}

int net_event_from_json(const json_t *obj, struct net_arena *arena,
			Hodei__Audit__V1__AuditEvent *ev, char *err, size_t err_cap)
{
	struct parse p = { .arena = arena, .ev = ev, .err = err, .err_cap = err_cap };
	if (err_cap)
		err[0] = 0;
	return parse_object(&p, obj);
}

static json_t *load_line(const char *line, size_t len, char *err, size_t err_cap)
{
	json_error_t je;
	json_t *obj = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
	if (!obj && err_cap) {
		if (strstr(je.text, "\\u0000"))
			snprintf(err, err_cap, "a string holds \\u0000 (NUL), which is not accepted "
				 "(at byte %d)", je.position);
		else
			snprintf(err, err_cap, "not valid JSON: %s (at byte %d)", je.text, je.position);
	}
	return obj;
}

int net_event_parse(const char *line, size_t len, struct net_arena *arena,
		    Hodei__Audit__V1__AuditEvent *ev, char *err, size_t err_cap)
{
	Hodei__Audit__V1__AuditEvent init = HODEI__AUDIT__V1__AUDIT_EVENT__INIT;
	*ev = init;
	json_t *obj = load_line(line, len, err, err_cap);
	if (!obj)
		return FMT_E_INVALID;
	int rc = net_event_from_json(obj, arena, ev, err, err_cap);
	json_decref(obj);
	return rc;
}

int net_stored_event_parse(const char *line, size_t len, struct net_arena *arena,
			   Hodei__Audit__V1__StoredEvent *se, char *err, size_t err_cap)
{
	Hodei__Audit__V1__StoredEvent init = HODEI__AUDIT__V1__STORED_EVENT__INIT;
	*se = init;
	if (err_cap)
		err[0] = 0;
	se->event = net_arena_alloc(arena, sizeof(*se->event));
	if (!se->event)
		return FMT_E_NOMEM;
	json_t *obj = load_line(line, len, err, err_cap);
	if (!obj)
		return FMT_E_INVALID;
	struct parse p = { .arena = arena, .ev = se->event, .se = se, .err = err, .err_cap = err_cap };
	int rc = parse_object(&p, obj);
	json_decref(obj);
	return rc;
}

/* ---- output ---------------------------------------------------------------- */

/* A JSON string of len bytes; bytes that are not UTF-8 (which a conforming
 * server never sends) become U+FFFD rather than dropping the field. */
static json_t *j_str(const char *s, size_t len)
{
	json_t *v = json_stringn(s, len);
	if (v)
		return v;
	char *buf = malloc(len * 3 + 1);
	if (!buf)
		return NULL;
	size_t n = 0;
	for (size_t i = 0; i < len;) {
		unsigned char c = (unsigned char)s[i];
		size_t k = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
		if (k <= len - i && fmt_utf8_valid(s + i, k)) {
			memcpy(buf + n, s + i, k);
			n += k;
			i += k;
		} else {
			memcpy(buf + n, "\xEF\xBF\xBD", 3);
			n += 3;
			i++;
		}
	}
	v = json_stringn(buf, n);
	free(buf);
	return v;
}

static json_t *j_bytes(const ProtobufCBinaryData *b)
{
	return j_str(b->len ? (const char *)b->data : "", b->len);
}

static bool set(json_t *o, const char *name, json_t *v)
{
	return v && json_object_set_new(o, name, v) == 0;
}

static json_t *j_hex(const uint8_t *b, size_t len)
{
	char *hex = malloc(2 * len + 1);
	if (!hex)
		return NULL;
	fmt_hex(b, len, hex);
	json_t *v = json_string(hex);
	free(hex);
	return v;
}

static json_t *j_event_id(const ProtobufCBinaryData *id)
{
	if (id->len != FMT_EVENT_ID_BYTES)
		return j_hex(id->data, id->len); /* not a UUID: shown, not hidden */
	char text[37];
	fmt_uuid_format(id->data, text);
	return json_string(text);
}

static json_t *j_time(int64_t ns)
{
	char text[NET_TIME_TEXT_MAX];
	net_time_format(ns, text);
	return json_string(text);
}

static json_t *j_attributes(const Hodei__Audit__V1__AuditEvent *ev)
{
	json_t *o = json_object();
	for (size_t i = 0; o && i < ev->n_attributes; i++) {
		const Hodei__Audit__V1__Attribute *a = ev->attributes[i];
		json_t *k = j_bytes(&a->key); /* object keys must be UTF-8 too */
		bool ok = k && set(o, json_string_value(k), j_bytes(&a->value));
		json_decref(k);
		if (!ok) {
			json_decref(o);
			return NULL;
		}
	}
	return o;
}

/* details_json as a JSON value; bytes that are not JSON (a conforming
 * server refuses them) are shown as a string rather than dropped. */
static json_t *j_details(const ProtobufCBinaryData *d)
{
	json_t *v = json_loadb((const char *)d->data, d->len, JSON_DECODE_ANY, NULL);
	return v ? v : j_str((const char *)d->data, d->len);
}

static bool event_fields(json_t *o, const Hodei__Audit__V1__AuditEvent *ev, bool stored_head,
			 const Hodei__Audit__V1__StoredEvent *se)
{
	for (size_t i = 0; i < FMT_ARRAY_LEN(fields); i++) {
		const struct field *f = &fields[i];
		json_t *v = NULL;
		bool want = true;
		switch (f->kind) {
		case K_STRING: {
			const ProtobufCBinaryData *b =
				(const ProtobufCBinaryData *)((const char *)ev + f->str_offset);
			want = b->len > 0;
			if (want)
				v = j_bytes(b);
			break;
		}
		case K_EVENT_ID:
			want = ev->event_id.len > 0;
			if (want)
				v = j_event_id(&ev->event_id);
			break;
		case K_OCCURRED_AT:
			want = ev->occurred_at_ns != 0;
			if (want)
				v = j_time(ev->occurred_at_ns);
			break;
		case K_OUTCOME:
			want = ev->outcome != 0;
			if (want)
				v = (unsigned)ev->outcome < FMT_ARRAY_LEN(outcome_names)
					    ? json_string(outcome_names[ev->outcome])
					    : json_integer(ev->outcome); /* newer than this build */
			break;
		case K_ATTRIBUTES:
			want = ev->n_attributes > 0;
			if (want)
				v = j_attributes(ev);
			break;
		case K_DETAILS:
			want = ev->details_json.len > 0;
			if (want)
				v = j_details(&ev->details_json);
			break;
		case K_TENANT_ID:
			want = se != NULL && stored_head;
			if (want)
				v = j_bytes(&se->tenant_id);
			break;
		case K_SEQ:
			want = se != NULL;
			if (want)
				v = json_integer((json_int_t)se->seq);
			break;
		case K_RECEIVED_AT:
			want = se != NULL && se->received_at_ns != 0;
			if (want)
				v = j_time(se->received_at_ns);
			break;
		case K_CHAIN_HASH:
			want = se != NULL && se->chain_hash.len > 0;
			if (want)
				v = j_hex(se->chain_hash.data, se->chain_hash.len);
			break;
		case K_OCCURRED_AT_NS:
			want = false; /* printed as occurred_at */
			break;
		}
		if (want && !set(o, f->name, v))
			return false;
	}
	return true;
}

json_t *net_event_to_json(const Hodei__Audit__V1__AuditEvent *ev)
{
	json_t *o = json_object();
	if (o && !event_fields(o, ev, false, NULL)) {
		json_decref(o);
		o = NULL;
	}
	return o;
}

json_t *net_stored_event_to_json(const Hodei__Audit__V1__StoredEvent *se)
{
	Hodei__Audit__V1__AuditEvent empty = HODEI__AUDIT__V1__AUDIT_EVENT__INIT;
	json_t *o = json_object();
	if (o && !event_fields(o, se->event ? se->event : &empty, true, se)) {
		json_decref(o);
		o = NULL;
	}
	return o;
}

/* Fewest significant digits (1..17) that read back as d, but at least as
 * many as d has integer digits below 1e17, so that 1500.0 does not turn
 * into 1.5e3. */
static int real_digits(double d)
{
	char buf[400];
	int least = 1;
	double mag = d < 0 ? -d : d;
	if (mag >= 1 && mag < 1e17) {
		int n = snprintf(buf, sizeof(buf), "%.0f", mag);
		least = n > 17 ? 17 : n;
	}
	for (int p = least; p < 17; p++) {
		snprintf(buf, sizeof(buf), "%.*g", p, d);
		if (strtod(buf, NULL) == d)
			return p;
	}
	return 17;
}

/* The most digits any real in v needs. jansson bounds nesting when it
 * parses (2048 levels), so the recursion is bounded too. */
static int max_real_digits(const json_t *v)
{
	int best = 1;
	if (json_is_real(v))
		return real_digits(json_real_value(v));
	if (json_is_array(v)) {
		size_t i;
		json_t *e;
		json_array_foreach(v, i, e) best = FMT_MAX(best, max_real_digits(e));
	} else if (json_is_object(v)) {
		const char *k;
		json_t *e;
		json_object_foreach((json_t *)v, k, e) best = FMT_MAX(best, max_real_digits(e));
	}
	return best;
}

char *net_json_dump(const json_t *v)
{
	int digits_needed = max_real_digits(v);
	return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(digits_needed));
}
