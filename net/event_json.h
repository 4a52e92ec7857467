/* SPDX-License-Identifier: Apache-2.0
 *
 * event_json.h — the JSON form of an audit event (DESIGN.md §5), in and out.
 *
 * Input: one JSON object (an NDJSON line) becomes a protobuf-c AuditEvent
 * ready to pack into an AppendRequest. Output: a StoredEvent (or a bare
 * AuditEvent) becomes a JSON object with the same names, so that
 * parse(print(e)) == e for every event this module can print.
 *
 *   field          JSON in                               JSON out
 *   event_id       canonical UUID string, any case       lowercase UUID
 *   occurred_at    RFC 3339, ≤ 9 fractional digits,      RFC 3339 UTC, 9 digits
 *                  Z or ±hh:mm; or occurred_at_ns int    (omitted when 0)
 *   outcome        "success" | "failure" | "denied"      same (omitted when unset)
 *   attributes     object of string values               same, in wire order
 *   details        any JSON value                        the stored value
 *   actor_id ...   strings                               omitted when empty
 *   tenant_id, seq, received_at, chain_hash (hex)        stored events only
 *
 * Rules: unknown fields are errors; `null` means "absent" for every field
 * except `details`, where it is the JSON value null; occurred_at and
 * occurred_at_ns together are an error; the server-assigned fields are
 * refused in an event to append (they are accepted only by
 * net_stored_event_parse, which reads back what search prints). Lengths and
 * the other limits of §5 are the server's to enforce: they are configurable
 * there, and the server names the field in its INVALID_ARGUMENT.
 *
 * Memory: every string and array of a parsed event lives in a net_arena the
 * caller owns; the event is valid until the arena is reset or freed. The
 * arena has a byte ceiling, so one hostile line cannot take the process's
 * memory. Error messages name the field and why ("event_id: not a
 * canonical UUID", "attributes.x: value must be a string").
 */
#ifndef HODEI_NET_EVENT_JSON_H
#define HODEI_NET_EVENT_JSON_H

#include "hodei/audit/v1/audit.pb-c.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* ---- arena ---------------------------------------------------------------- */

struct net_arena_block;

struct net_arena {
	struct net_arena_block *head; /* newest block first */
	size_t used_bytes;            /* bytes handed out since the last reset */
	size_t cap_bytes;             /* ceiling for used_bytes */
};

/* An empty arena that hands out at most cap_bytes between resets. */
void net_arena_init(struct net_arena *a, size_t cap_bytes);

/* n zeroed bytes aligned for any type, or NULL when over the ceiling or out
 * of memory. */
void *net_arena_alloc(struct net_arena *a, size_t n);

/* A NUL-terminated copy of len bytes, or NULL as net_arena_alloc. */
char *net_arena_strndup(struct net_arena *a, const char *s, size_t len);

/* Forgets everything handed out; keeps one block for reuse. */
void net_arena_reset(struct net_arena *a);

/* Frees every block. The arena may be initialised again. */
void net_arena_free(struct net_arena *a);

/* ---- time ------------------------------------------------------------------ */

#define NET_TIME_TEXT_MAX 40 /* "-1677-..." never happens; 36 chars + NUL fits */

/* Parses RFC 3339 ("2024-05-01T12:00:00.123456789Z", "...+02:00"; 't', 'z'
 * and a space for 'T' accepted, as RFC 3339 §5.6 allows) into Unix ns.
 * Returns 0, or FMT_E_INVALID with *why set to a static reason. */
int net_time_parse(const char *s, size_t len, int64_t *ns, const char **why);

/* Formats Unix ns as RFC 3339 UTC with 9 fractional digits and 'Z'. */
void net_time_format(int64_t ns, char out[NET_TIME_TEXT_MAX]);

/* ---- input ----------------------------------------------------------------- */

/* Parses one event object. *ev is initialised and filled with pointers into
 * the arena. On error, err (err_cap bytes, may be 0) holds "<field>: <why>".
 * Returns 0, FMT_E_INVALID (bad input) or FMT_E_NOMEM (arena ceiling or out
 * of memory). */
int net_event_from_json(const json_t *obj, struct net_arena *arena,
			Hodei__Audit__V1__AuditEvent *ev, char *err, size_t err_cap);

/* Parses one NDJSON line (len bytes, no NUL needed; a trailing newline is
 * allowed): invalid JSON, invalid UTF-8, duplicate keys or anything but an
 * object are FMT_E_INVALID with jansson's reason and column. Same returns as
 * net_event_from_json. */
int net_event_parse(const char *line, size_t len, struct net_arena *arena,
		    Hodei__Audit__V1__AuditEvent *ev, char *err, size_t err_cap);

/* Reads back a stored event as printed by net_stored_event_to_json: *se and
 * its event (se->event, allocated in the arena) are filled. Same returns. */
int net_stored_event_parse(const char *line, size_t len, struct net_arena *arena,
			   Hodei__Audit__V1__StoredEvent *se, char *err, size_t err_cap);

/* ---- output ---------------------------------------------------------------- */

/* A new JSON object for an event (NULL only when out of memory). */
json_t *net_event_to_json(const Hodei__Audit__V1__AuditEvent *ev);

/* A new JSON object for a stored event: tenant_id, seq, the event's fields,
 * received_at and chain_hash. NULL only when out of memory. */
json_t *net_stored_event_to_json(const Hodei__Audit__V1__StoredEvent *se);

/* Compact JSON text of v with no newline (malloc'd; NULL when out of
 * memory). Reals are printed with the fewest digits that read back to the
 * same double (jansson's default of 17 turns 0.1 into 0.10000000000000001),
 * non-ASCII stays UTF-8. */
char *net_json_dump(const json_t *v);

#endif
