/* SPDX-License-Identifier: Apache-2.0
 *
 * crash_common.h — what the crash driver (a child that appends until it is
 * killed) and the crash test (the parent that kills it and checks the data
 * directory) must agree on: the engine configuration, the record the driver
 * writes to its pipe for every acknowledged batch, and how event ids,
 * event content and batch sizes follow from (seed, round, tenant, counter).
 *
 * Everything the driver sends is a pure function of those four numbers
 * (except occurred_at, which is "now" minus a jitter), so the parent can
 * recompute any event it was told about, decode any event id it finds in
 * the store, and recompute where each round's batches begin and end for
 * every tenant. The driver never sends an id twice: ids embed the round,
 * and counters only grow within a round.
 */
#ifndef HODEI_TESTS_CRASH_COMMON_H
#define HODEI_TESTS_CRASH_COMMON_H

#include "engine/engine.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CRASH_TENANTS 8u
#define CRASH_SHARDS 2u
#define CRASH_BATCH_MAX 50u
#define CRASH_ATTRS_MAX 3u
#define CRASH_STORE_BYTES 640u      /* string bytes of one event */
#define CRASH_ROUNDS_MAX 65535u     /* the round is 16 bits of the event id */
#define CRASH_COUNTER_MAX (1ull << 40)
#define CRASH_REC_MAGIC 0x48435231u /* "HCR1" */
#define CRASH_ID_TAG 0xC7u

_Static_assert(CRASH_TENANTS <= 255, "the tenant is one byte of the event id");

enum crash_rec_kind {
	CRASH_REC_READY = 1,  /* the engine is open; appends start now */
	CRASH_REC_ACK = 2,    /* one batch completed with status 0 */
};

/* One pipe record, written with a single write() (< PIPE_BUF: atomic). */
struct crash_rec {
	uint32_t magic;
	uint32_t kind;
	uint32_t round;
	uint32_t tenant;
	uint64_t first_seq, last_seq;
	uint64_t counter_first;       /* the batch holds counters [first, first + count) */
	uint32_t count;
	uint32_t accepted;
	uint32_t duplicates;
	uint32_t reserved;
	uint8_t chain[FMT_HASH_BYTES]; /* tenant's chain value after the batch */
};

_Static_assert(sizeof(struct crash_rec) == 88, "fixed-size pipe record");

/* A number from the environment (inherited by the driver, so both sides
 * agree), or dflt. */
static inline uint64_t crash_env(const char *name, uint64_t dflt)
{
	const char *v = getenv(name);
	return v && *v ? strtoull(v, NULL, 0) : dflt;
}

/* The configuration both sides open the data directory with: small seals
 * and blocks so that seals happen during every round, small WAL files so
 * rotation and reclaim happen too, and modest fixed memory.
 * HODEI_CRASH_SEAL_ROWS and HODEI_CRASH_WAL_FILE_BYTES make them smaller
 * still, for hunting. */
static inline void crash_config(struct eng_config *cfg, const char *dir, enum eng_io_backend io)
{
	eng_config_default(cfg);
	cfg->data_dir = dir;
	cfg->shards = CRASH_SHARDS;
	cfg->io = io;
	cfg->producers_max = 2;
	cfg->queue_depth = 256;
	cfg->tenants_max = 64;
	cfg->seal_rows = (uint32_t)crash_env("HODEI_CRASH_SEAL_ROWS", 2000);
	cfg->block_rows = 256;
	cfg->memtable_budget_bytes = 64ull << 20;
	cfg->wal_buffer_bytes = 1ull << 20;
	cfg->wal_file_bytes = crash_env("HODEI_CRASH_WAL_FILE_BYTES", 2ull << 20);
	cfg->dedup_entries_max = 1u << 18;
}

static inline void crash_tenant_name(uint32_t tenant, char out[32])
{
	snprintf(out, 32, "crash-t%u", tenant);
}

/* splitmix64: the only randomness either side uses. */
static inline uint64_t crash_mix(uint64_t x)
{
	x += 0x9E3779B97F4A7C15ull;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
	return x ^ (x >> 31);
}

static inline uint64_t crash_rand(uint64_t *state)
{
	*state += 0x9E3779B97F4A7C15ull;
	return crash_mix(*state);
}

static inline uint64_t crash_event_hash(uint64_t seed, uint32_t round, uint32_t tenant,
					uint64_t counter)
{
	return crash_mix(crash_mix(seed ^ ((uint64_t)round << 32) ^ tenant) ^ counter);
}

/* The sizes of one tenant's batches in one round come from this stream. */
static inline uint64_t crash_size_state(uint64_t seed, uint32_t round, uint32_t tenant)
{
	return crash_mix(seed ^ 0x5133u ^ ((uint64_t)round << 20) ^ ((uint64_t)tenant << 8));
}

static inline uint32_t crash_next_size(uint64_t *state)
{
	return 1 + (uint32_t)(crash_rand(state) % CRASH_BATCH_MAX);
}

/* id = tag, tenant, round (u16), counter (u40), 8 check bytes. */
static inline void crash_event_id(uint8_t id[FMT_EVENT_ID_BYTES], uint64_t seed, uint32_t round,
				  uint32_t tenant, uint64_t counter)
{
	uint64_t h = crash_event_hash(seed, round, tenant, counter);
	id[0] = CRASH_ID_TAG;
	id[1] = (uint8_t)tenant;
	id[2] = (uint8_t)round;
	id[3] = (uint8_t)(round >> 8);
	for (int i = 0; i < 5; i++)
		id[4 + i] = (uint8_t)(counter >> (8 * i));
	for (int i = 0; i < 7; i++)
		id[9 + i] = (uint8_t)(h >> (8 * i));
}

/* Decodes an id made by crash_event_id(); false when it is not one. */
static inline bool crash_id_decode(const uint8_t id[FMT_EVENT_ID_BYTES], uint64_t seed,
				   uint32_t *round, uint32_t *tenant, uint64_t *counter)
{
	if (id[0] != CRASH_ID_TAG)
		return false;
	*tenant = id[1];
	*round = (uint32_t)id[2] | ((uint32_t)id[3] << 8);
	*counter = 0;
	for (int i = 4; i >= 0; i--)
		*counter = (*counter << 8) | id[4 + i];
	uint8_t again[FMT_EVENT_ID_BYTES];
	crash_event_id(again, seed, *round, *tenant, *counter);
	return *tenant < CRASH_TENANTS && memcmp(again, id, FMT_EVENT_ID_BYTES) == 0;
}

static const char *const crash_actions[] = {
	"document.read", "document.update", "document.delete", "user.login",
	"user.logout", "role.grant", "api_key.create", "export.run",
};
static const char *const crash_resource_types[] = { "document", "user", "role", "api_key" };
static const char *const crash_agents[] = {
	"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0",
	"hodei-sdk-go/1.4.2", "curl/7.88.1", "",
};

/* The part of an event's store not used yet. */
struct crash_store {
	char *p;
	char *end;
};

/* Formats one string field into the event's store and points dst at it. */
__attribute__((format(printf, 3, 4)))
static inline void crash_put(struct fmt_str *dst, struct crash_store *st, const char *fmt, ...)
{
	size_t cap = (size_t)(st->end - st->p);
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(st->p, cap, fmt, ap);
	va_end(ap);
	ASSERT(n >= 0 && (size_t)n < cap); /* CRASH_STORE_BYTES is too small otherwise */
	*dst = (struct fmt_str){ st->p, (uint32_t)n };
	st->p += n;
}

/* Fills ev (and attrs, and store for its strings) with the event
 * (seed, round, tenant, counter). The tenant, seq and received_at are the
 * engine's to set; occurred_at is now_ns minus up to two seconds. */
static inline void crash_event_fill(struct fmt_event *ev, struct fmt_attr attrs[CRASH_ATTRS_MAX],
				    char store[CRASH_STORE_BYTES], uint64_t seed, uint32_t round,
				    uint32_t tenant, uint64_t counter, int64_t now_ns)
{
	uint64_t h = crash_event_hash(seed, round, tenant, counter);
	uint64_t h2 = crash_mix(h);
	struct fmt_str *s = ev->str;
	struct crash_store st = { store, store + CRASH_STORE_BYTES };
	struct crash_store *p = &st;

	memset(ev, 0, sizeof(*ev));
	crash_event_id(ev->event_id, seed, round, tenant, counter);
	ev->occurred_at_ns = now_ns - (int64_t)(h % 2000000000ull);
	ev->outcome = 1 + (uint32_t)(h2 % 3);
	crash_put(&s[FMT_F_ACTOR_ID], p, "user-%u@t%u.example.com", (unsigned)(h % 97), tenant);
	crash_put(&s[FMT_F_ACTOR_TYPE], p, "%s", (h >> 8) % 5 ? "user" : "service");
	crash_put(&s[FMT_F_ACTION], p, "%s", crash_actions[(h >> 12) % FMT_ARRAY_LEN(crash_actions)]);
	crash_put(&s[FMT_F_RESOURCE_TYPE], p, "%s",
		  crash_resource_types[(h >> 16) % FMT_ARRAY_LEN(crash_resource_types)]);
	crash_put(&s[FMT_F_RESOURCE_ID], p, "res-%u-%u-%llu", tenant, round,
		  (unsigned long long)counter);
	if ((h >> 20) % 4)
		crash_put(&s[FMT_F_SOURCE_IP], p, "10.%u.%u.%u", (unsigned)(h2 >> 8) & 255,
			  (unsigned)(h2 >> 16) & 255, (unsigned)(h2 >> 24) & 255);
	else
		crash_put(&s[FMT_F_SOURCE_IP], p, "2001:db8::%x", (unsigned)(h2 >> 32) & 0xffff);
	crash_put(&s[FMT_F_USER_AGENT], p, "%s", crash_agents[(h >> 24) % FMT_ARRAY_LEN(crash_agents)]);
	crash_put(&s[FMT_F_REQUEST_ID], p, "req-%016llx", (unsigned long long)h2);
	crash_put(&s[FMT_F_TRACE_ID], p, "%016llx%016llx", (unsigned long long)h,
		  (unsigned long long)h2);
	ev->attr_count = (uint32_t)((h >> 28) % (CRASH_ATTRS_MAX + 1));
	for (uint32_t i = 0; i < ev->attr_count; i++) {
		crash_put(&attrs[i].key, p, "k%u", i);
		crash_put(&attrs[i].value, p, "v-%llx", (unsigned long long)(h2 >> (i * 8)));
	}
	ev->attrs = ev->attr_count ? attrs : NULL;
	if ((h >> 32) % 3 == 0)
		crash_put(&ev->details_json, p, "{\"bytes\":%u,\"reason\":\"routine\"}",
			  (unsigned)(h2 % 100000));
}

#endif
