// SPDX-License-Identifier: Apache-2.0
/*
 * make_data.c — writes a small data directory through the real engine, for
 * the CLI test (test_cli.sh): two shards, three tenants, a few sealed
 * segments per tenant and some unsealed events left in the WAL.
 *
 *   make_data DIR
 *
 * Exits 0 when DIR holds at least three sealed segments per tenant, 1
 * otherwise (with the reason on stderr).
 */
#include "engine/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TENANTS 3
#define SEALED_PER_TENANT 3
#define SEAL_ROWS 40
#define BATCH 10
#define WAIT_STEPS 500   /* x 20 ms */

static const char *const tenants[TENANTS] = { "acme", "globex", "initech" };

static void make_event(struct fmt_event *ev, char *store, uint32_t i)
{
	memset(ev, 0, sizeof(*ev));
	int n = snprintf(store, 64, "user-%u", i % 5);
	ev->str[FMT_F_ACTOR_ID] = (struct fmt_str){ store, (uint32_t)n };
	ev->str[FMT_F_ACTION] = fmt_str_c(i % 2 ? "invoice.read" : "invoice.update");
	ev->str[FMT_F_RESOURCE_TYPE] = fmt_str_c("invoice");
	n = snprintf(store + 64, 64, "inv-%u", i);
	ev->str[FMT_F_RESOURCE_ID] = (struct fmt_str){ store + 64, (uint32_t)n };
	ev->outcome = FMT_OUTCOME_SUCCESS;
	ev->occurred_at_ns = 1700000000000000000ll + (int64_t)i * 1000000;
	ev->event_id[0] = 0x5A;
	for (int k = 1; k < 16; k++)
		ev->event_id[k] = (uint8_t)(i >> (k % 4 * 8)) ^ (uint8_t)(k * 37);
}

static int append_batch(struct eng_producer *p, const char *tenant, uint32_t first)
{
	struct fmt_event evs[BATCH];
	char store[BATCH][128];
	for (uint32_t i = 0; i < BATCH; i++)
		make_event(&evs[i], store[i], first + i);
	struct eng_append req = { .tenant = fmt_str_c(tenant), .events = evs, .count = BATCH };
	int rc = eng_append_wait(p, &req);
	if (rc || req.accepted != BATCH) {
		fprintf(stderr, "make_data: append to %s: %s\n", tenant, fmt_strerror(rc));
		return 1;
	}
	return 0;
}

static uint64_t sealed_total(const struct eng_engine *eng)
{
	uint64_t n = 0;
	for (uint32_t s = 0; s < eng_shard_count(eng); s++) {
		struct eng_shard_stats st;
		eng_shard_stats(eng, s, &st);
		n += st.segments_sealed;
	}
	return n;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: make_data DIR\n");
		return 2;
	}
	struct eng_config cfg;
	eng_config_default(&cfg);
	cfg.data_dir = argv[1];
	cfg.shards = 2;
	cfg.io = ENG_IO_SYNC;
	cfg.producers_max = 2;
	cfg.seal_rows = SEAL_ROWS;
	cfg.block_rows = 8;
	cfg.wal_buffer_bytes = 1u << 20;
	cfg.memtable_budget_bytes = 64u << 20;
	cfg.dedup_entries_max = 10000;
	struct eng_engine *eng = NULL;
	struct eng_producer *p = NULL;
	int rc = eng_open(&cfg, &eng);
	if (rc || (rc = eng_producer_open(eng, &p)) != 0) {
		fprintf(stderr, "make_data: cannot open the engine in %s: %s\n", argv[1], fmt_strerror(rc));
		return 1;
	}
	int bad = 0;
	uint32_t per_tenant = SEAL_ROWS * SEALED_PER_TENANT;
	for (uint32_t i = 0; i < per_tenant && !bad; i += BATCH)
		for (int t = 0; t < TENANTS && !bad; t++)
			bad = append_batch(p, tenants[t], i);
	for (int step = 0; !bad && step < WAIT_STEPS; step++) {
		if (sealed_total(eng) >= TENANTS * SEALED_PER_TENANT)
			break;
		usleep(20000);
	}
	if (!bad && sealed_total(eng) < TENANTS * SEALED_PER_TENANT) {
		fprintf(stderr, "make_data: only %llu segments sealed\n",
			(unsigned long long)sealed_total(eng));
		bad = 1;
	}
	/* Unsealed events: they stay in the WAL (seal_age is a minute). */
	for (int t = 0; t < TENANTS && !bad; t++)
		bad = append_batch(p, tenants[t], per_tenant) || append_batch(p, tenants[t], per_tenant + BATCH);
	eng_producer_close(p);
	eng_close(eng);
	return bad;
}
