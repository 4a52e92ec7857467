/* SPDX-License-Identifier: Apache-2.0
 *
 * event.h — the audit event as the engine sees it, its validation against
 * the limits of DESIGN.md §5, and its canonical encoding.
 *
 * The canonical encoding (docs/FORMAT.md §2) is the one byte string that
 * identifies a stored event: the WAL stores it, and the event hash is the
 * SHA-256 of it. It is deterministic (fixed field order, little-endian
 * integers, u32 length prefixes) and covers the server-assigned tenant, seq
 * and received_at, so that moving an event to another tenant or position
 * changes its hash.
 *
 * Every struct fmt_str in an event is borrowed: an event view never owns
 * its bytes. Decoders fill views that point into the buffer they decoded.
 */
#ifndef HODEI_FORMAT_EVENT_H
#define HODEI_FORMAT_EVENT_H

#include "common.h"

#include <stdbool.h>

#define FMT_EVENT_ID_BYTES 16
#define FMT_HASH_BYTES 32
#define FMT_TENANT_MAX 64
#define FMT_ATTRS_HARD_MAX 256      /* no configuration may exceed this */
#define FMT_CANON_VERSION 1

enum fmt_outcome {
	FMT_OUTCOME_UNSPECIFIED = 0,
	FMT_OUTCOME_SUCCESS = 1,
	FMT_OUTCOME_FAILURE = 2,
	FMT_OUTCOME_DENIED = 3,
};

struct fmt_attr {
	struct fmt_str key;
	struct fmt_str value;
};

/* The string fields in their canonical order; columns follow it too. */
enum fmt_field {
	FMT_F_ACTOR_ID,
	FMT_F_ACTOR_TYPE,
	FMT_F_ACTION,
	FMT_F_RESOURCE_TYPE,
	FMT_F_RESOURCE_ID,
	FMT_F_SOURCE_IP,
	FMT_F_USER_AGENT,
	FMT_F_REQUEST_ID,
	FMT_F_TRACE_ID,
	FMT_F_STRING_COUNT,
};

/* What a client sends (DESIGN.md §5 AuditEvent), plus the server fields of
 * a StoredEvent. A client event has seq == 0 until the engine assigns it. */
struct fmt_event {
	uint8_t event_id[FMT_EVENT_ID_BYTES];
	int64_t occurred_at_ns;
	uint32_t outcome;                       /* enum fmt_outcome */
	struct fmt_str str[FMT_F_STRING_COUNT]; /* indexed by enum fmt_field */
	uint32_t attr_count;
	const struct fmt_attr *attrs;
	struct fmt_str details_json;

	/* Server-assigned; part of the canonical encoding. */
	struct fmt_str tenant;
	uint64_t seq;
	int64_t received_at_ns;
};

/* Limits of DESIGN.md §5; every one is configurable. */
struct fmt_limits {
	uint32_t actor_id_max;
	uint32_t resource_id_max;
	uint32_t short_field_max;   /* action, actor_type, resource_type */
	uint32_t user_agent_max;
	uint32_t request_id_max;
	uint32_t attrs_max;
	uint32_t attr_key_max;
	uint32_t attr_value_max;
	uint32_t details_json_max;
	uint32_t events_per_batch_max;
	/* Checks that details_json is one JSON value. JSON parsing is not
	 * format/'s to do (no JSON library here): callers that can parse JSON
	 * (the engine's configuration, net/) set it; NULL skips the check. */
	bool (*details_json_valid)(const char *json, size_t len);
};

/* The defaults of DESIGN.md §5. */
void fmt_limits_default(struct fmt_limits *limits);

/* Field names as in the JSON form, for messages and column names. */
const char *fmt_field_name(enum fmt_field f);

/* An outcome as the JSON form spells it: "success", "failure", "denied";
 * "" for FMT_OUTCOME_UNSPECIFIED (the JSON form leaves it out). */
const char *fmt_outcome_name(enum fmt_outcome o);

/* Validation result: which field is wrong and why, for a precise status. */
struct fmt_invalid {
	const char *field;   /* static string, e.g. "actor_id" */
	const char *reason;  /* static string, e.g. "longer than 512 bytes" */
	uint32_t limit;
};

/* Checks a tenant id: 1..64 chars of [A-Za-z0-9._-]. */
bool fmt_tenant_valid(struct fmt_str tenant);

/* Checks one client event against the limits: required fields present,
 * lengths within limits, all strings valid UTF-8, source_ip empty or an
 * IPv4/IPv6 literal, trace_id empty or 32 lowercase/uppercase hex digits,
 * outcome known, details_json empty or one valid JSON value.
 * Returns 0, or FMT_E_INVALID with *why filled. */
int fmt_event_validate(const struct fmt_event *ev, const struct fmt_limits *limits,
		       struct fmt_invalid *why);

/* Checks that bytes are well-formed UTF-8 (no overlongs, no surrogates). */
bool fmt_utf8_valid(const char *s, size_t len);

/* Size of the canonical encoding of ev, in bytes. */
size_t fmt_event_canon_size(const struct fmt_event *ev);

/* Writes the canonical encoding of ev into out (cap bytes).
 * Returns the number of bytes written, or FMT_E_TOO_BIG if cap is short. */
int64_t fmt_event_canon_encode(const struct fmt_event *ev, uint8_t *out, size_t cap);

/* fmt_event_canon_encode(), and what fmt_event_canon_decode() of the bytes
 * written would give, without parsing them: *view's strings point into
 * out, its attributes are written to attr_buf (attr_cap slots; more
 * attributes: FMT_E_TOO_BIG). view may be NULL. */
int64_t fmt_event_canon_encode_view(const struct fmt_event *ev, uint8_t *out, size_t cap,
				    struct fmt_event *view, struct fmt_attr *attr_buf,
				    uint32_t attr_cap);

/* Decodes one canonical encoding that must fill buf exactly. The views in
 * *ev point into buf; attributes are written to attr_buf (attr_cap slots).
 * Returns 0, FMT_E_TRUNCATED, FMT_E_CORRUPT (malformed or trailing bytes),
 * FMT_E_VERSION or FMT_E_TOO_BIG (more attributes than attr_cap). */
int fmt_event_canon_decode(const uint8_t *buf, size_t len, struct fmt_event *ev,
			   struct fmt_attr *attr_buf, uint32_t attr_cap);

/* A UUIDv7 from a Unix time in ns and 10 random bytes (caller's entropy). */
void fmt_uuid_v7(uint8_t out[16], int64_t unix_ns, const uint8_t rand10[10]);

/* Formats a UUID as 36 chars plus NUL; parses one (returns 0 or FMT_E_INVALID). */
void fmt_uuid_format(const uint8_t id[16], char out[37]);
int fmt_uuid_parse(const char *s, size_t len, uint8_t out[16]);

#endif
