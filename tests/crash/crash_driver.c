// SPDX-License-Identifier: Apache-2.0
/*
 * crash_driver.c — the victim of the crash test: opens the engine on a
 * data directory and appends batches as fast as it can until it is killed.
 *
 *   crash_driver <data-dir> <seed> <round> <sync|uring>
 *
 * It keeps up to SLOTS batches in flight through one producer (async
 * submit, callbacks polled on this thread) and refills a slot as soon as
 * its ack is back, within a cap of HODEI_CRASH_RATE events per second
 * (default 50,000; 0: none), so that the data, and the time the parent
 * spends checking it, do not grow with the engine's speed. Batches go to
 * random tenants, half of them to one hot tenant so that it seals during
 * every round; each tenant's batch sizes and event counters follow
 * crash_common.h, so the parent can recompute every event. Only in a
 * completion callback with status 0 does the driver tell the parent about
 * a batch: one fixed-size record on fd 3 (a pipe), written before anything
 * else happens, so a record the parent reads is an acknowledgement the
 * engine really gave. A batch is submitted only after every earlier batch
 * of its tenant, so each tenant's batches reach the shard in counter order.
 *
 * It never stops by itself within a round; a hard bound (60 s) and the
 * parent-death signal keep a lost driver from running forever. Any
 * unexpected status is fatal (exit code >= 2): the parent treats every
 * exit other than its own SIGKILL as a failure.
 */
#include "crash_common.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 16u
#define ACK_FD 3
#define RUN_LIMIT_NS (60ll * 1000000000)
#define POLL_WAIT_NS (10 * 1000000ll)
#define IDLE_WAIT_US 500
#define RATE_DEFAULT 50000u            /* events per second; 0: no limit */
#define RATE_BURST_EVENTS (SLOTS * CRASH_BATCH_MAX)

enum slot_state { SLOT_FREE = 0, SLOT_BUILT = 1, SLOT_IN_FLIGHT = 2 };

struct slot {
	enum slot_state state;
	uint32_t tenant;
	uint64_t counter_first;
	struct eng_append req;
	struct fmt_event events[CRASH_BATCH_MAX];
	struct fmt_attr attrs[CRASH_BATCH_MAX][CRASH_ATTRS_MAX];
	char store[CRASH_BATCH_MAX][CRASH_STORE_BYTES];
};

struct driver {
	uint64_t seed;
	uint32_t round;
	struct slot slots[SLOTS];
	char tenant_names[CRASH_TENANTS][32];
	uint64_t counter_next[CRASH_TENANTS];
	uint64_t size_state[CRASH_TENANTS];
	uint64_t pick_state;
	uint64_t rate;                     /* events per second, 0: no limit */
	uint64_t events_built;
	int64_t started_ns;
	/* Built slots not yet accepted by eng_append_submit, in build order. */
	uint32_t queue[SLOTS];
	uint32_t queue_head, queue_len;
};

static struct driver drv; /* large: static, allocated once */

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t real_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(int code, const char *what, int err)
{
	fprintf(stderr, "crash_driver: %s: %s\n", what, fmt_strerror(err));
	_exit(code);
}

static void send_rec(const struct crash_rec *rec)
{
	const uint8_t *p = (const uint8_t *)rec;
	size_t left = sizeof(*rec);
	for (int tries = 0; left > 0 && tries < 1000; tries++) {
		ssize_t n = write(ACK_FD, p, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die(4, "write to the ack pipe", n < 0 ? -errno : -EIO);
		p += n;
		left -= (size_t)n;
	}
	if (left)
		die(4, "write to the ack pipe", -EIO);
}

static void append_done(struct eng_append *req)
{
	struct slot *sl = req->ctx;
	ASSERT(sl->state == SLOT_IN_FLIGHT);
	if (req->status != 0)
		die(3, "append failed", req->status);
	struct crash_rec rec = { .magic = CRASH_REC_MAGIC, .kind = CRASH_REC_ACK,
				 .round = drv.round, .tenant = sl->tenant,
				 .first_seq = req->first_seq, .last_seq = req->last_seq,
				 .counter_first = sl->counter_first, .count = req->count,
				 .accepted = req->accepted, .duplicates = req->duplicates };
	memcpy(rec.chain, req->chain, FMT_HASH_BYTES);
	send_rec(&rec);
	sl->state = SLOT_FREE;
}

static void slot_build(uint32_t index)
{
	struct slot *sl = &drv.slots[index];
	/* One hot tenant takes half the batches, so it seals every round. */
	uint64_t r = crash_rand(&drv.pick_state);
	uint32_t t = (r & 1) ? 0 : (uint32_t)((r >> 1) % CRASH_TENANTS);
	uint32_t n = crash_next_size(&drv.size_state[t]);
	int64_t now = real_ns();

	ASSERT(sl->state == SLOT_FREE && n >= 1 && n <= CRASH_BATCH_MAX);
	ASSERT(drv.counter_next[t] + n < CRASH_COUNTER_MAX);
	sl->tenant = t;
	sl->counter_first = drv.counter_next[t];
	drv.counter_next[t] += n;
	drv.events_built += n;
	for (uint32_t i = 0; i < n; i++)
		crash_event_fill(&sl->events[i], sl->attrs[i], sl->store[i], drv.seed, drv.round, t,
				 sl->counter_first + i, now);
	memset(&sl->req, 0, sizeof(sl->req));
	sl->req.tenant = fmt_str_c(drv.tenant_names[t]);
	sl->req.events = sl->events;
	sl->req.count = n;
	sl->req.done = append_done;
	sl->req.ctx = sl;
	sl->state = SLOT_BUILT;
	ASSERT(drv.queue_len < SLOTS);
	drv.queue[(drv.queue_head + drv.queue_len) % SLOTS] = index;
	drv.queue_len++;
}

/* Submits built slots in build order; stops at the first refusal so that
 * no tenant's batch overtakes an earlier one. */
static void submit_queued(struct eng_producer *p)
{
	while (drv.queue_len > 0) {
		struct slot *sl = &drv.slots[drv.queue[drv.queue_head]];
		int rc = eng_append_submit(p, &sl->req);
		if (rc == FMT_E_FULL)
			return;
		if (rc != 0)
			die(3, "eng_append_submit", rc);
		sl->state = SLOT_IN_FLIGHT;
		drv.queue_head = (drv.queue_head + 1) % SLOTS;
		drv.queue_len--;
	}
}

/* The rate cap: events built so far stay within rate × time + a burst of
 * every slot full, so slots refill as fast as acks come back, but the
 * parent's checks (whose cost grows with the data) do not grow with the
 * engine's speed. */
static bool rate_allows(uint32_t n)
{
	if (drv.rate == 0)
		return true;
	double elapsed_s = (double)(mono_ns() - drv.started_ns) / 1e9;
	return (double)(drv.events_built + n) <= elapsed_s * (double)drv.rate + RATE_BURST_EVENTS;
}

static void run(struct eng_producer *p)
{
	drv.started_ns = mono_ns();
	int64_t deadline = drv.started_ns + RUN_LIMIT_NS;
	while (mono_ns() < deadline) {
		for (uint32_t i = 0; i < SLOTS && rate_allows(CRASH_BATCH_MAX); i++)
			if (drv.slots[i].state == SLOT_FREE)
				slot_build(i);
		submit_queued(p);
		if (eng_producer_pending(p) == 0) {
			usleep(IDLE_WAIT_US); /* held back by the rate cap */
			continue;
		}
		int rc = eng_producer_wait(p, POLL_WAIT_NS);
		if (rc < 0 && rc != -EINTR)
			die(3, "eng_producer_wait", rc);
	}
	fprintf(stderr, "crash_driver: not killed within %lld s; giving up\n",
		RUN_LIMIT_NS / 1000000000);
	_exit(5);
}

static void quiet_log(void *ctx, enum eng_log_level level, const char *msg)
{
	if (level <= ENG_LOG_WARN)
		fprintf(stderr, "crash_driver[%u]: %s\n", drv.round, msg);
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: %s <data-dir> <seed> <round> <sync|uring>\n", argv[0]);
		return 2;
	}
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	signal(SIGPIPE, SIG_DFL);
	drv.seed = strtoull(argv[2], NULL, 0);
	unsigned long round = strtoul(argv[3], NULL, 0);
	if (round > CRASH_ROUNDS_MAX)
		die(2, "round out of range", FMT_E_INVALID);
	drv.round = (uint32_t)round;
	enum eng_io_backend io = strcmp(argv[4], "uring") == 0 ? ENG_IO_URING : ENG_IO_SYNC;
	for (uint32_t t = 0; t < CRASH_TENANTS; t++) {
		crash_tenant_name(t, drv.tenant_names[t]);
		drv.size_state[t] = crash_size_state(drv.seed, drv.round, t);
	}
	drv.pick_state = crash_mix(drv.seed ^ 0x9D1Cu ^ drv.round);
	drv.rate = crash_env("HODEI_CRASH_RATE", RATE_DEFAULT);

	struct eng_config cfg;
	crash_config(&cfg, argv[1], io);
	cfg.log = quiet_log;
	struct eng_engine *eng = NULL;
	int rc = eng_open(&cfg, &eng);
	if (rc)
		die(2, "eng_open", rc);
	struct eng_producer *p = NULL;
	if ((rc = eng_producer_open(eng, &p)) != 0)
		die(2, "eng_producer_open", rc);
	struct crash_rec ready = { .magic = CRASH_REC_MAGIC, .kind = CRASH_REC_READY,
				   .round = drv.round };
	send_rec(&ready);
	run(p);
	return 5;
}
