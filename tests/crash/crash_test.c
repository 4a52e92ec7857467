// SPDX-License-Identifier: Apache-2.0
/*
 * crash_test.c — kill -9 under load, then check that nothing acknowledged
 * was lost (DESIGN.md §2.1–2.3, §11).
 *
 *   crash_test <path-to-crash_driver>
 *   env: HODEI_CRASH_ROUNDS (default 50), HODEI_CRASH_SEED (default fixed),
 *        HODEI_CRASH_FULL_EVERY (default 5), HODEI_CRASH_SAMPLE (default 200),
 *        HODEI_CRASH_KEEP=1 keeps the data directory, HODEI_TEST_TMP;
 *        HODEI_CRASH_SEAL_ROWS, HODEI_CRASH_WAL_FILE_BYTES (crash_common.h),
 *        HODEI_CRASH_RATE (events/s the driver may append, crash_driver.c).
 *
 * One data directory lives across all rounds. A round forks the driver
 * (crash_driver.c) with the pipe's write end as fd 3, reads the acks it
 * sends, SIGKILLs it after a random 5–300 ms of appending (every fifth
 * round, 1–40 ms after the start instead, so kills also land during
 * recovery), reads the pipe to its end (an ack written before the kill is
 * an ack), and reaps it. Rounds alternate the sync and io_uring backends.
 *
 * Then the parent opens the engine itself and checks, per tenant:
 *   - verify passes: over the whole history at full checks (and then its
 *     count N must reach every acked seq), over what came since the last
 *     full check in between;
 *   - the newest acked event and a sample of acked events (HODEI_CRASH_SAMPLE
 *     at full checks, an eighth of it in between, half from this round),
 *     looked up by event id, are each found exactly once, at the seq their
 *     ack reported, with the content the driver sent;
 *   - every HODEI_CRASH_FULL_EVERY rounds and after the last one, a full
 *     walk (oldest first, pages of 1000) returns seqs exactly 1..N; the
 *     chain recomputed from the returned events matches every returned
 *     chain value; every acked event sits at its acked seq and every acked
 *     batch ends on its acked chain value; every event present (acked or
 *     not) is one the driver sent, exactly once, and each round's events of
 *     the tenant are a whole number of its batches (atomic batches, in
 *     submission order).
 * While search answers FMT_E_STATE (not built in), only verify and its
 * counts remain, over the whole history every round, and the closing line
 * says so.
 * Acks are also checked as they arrive: seqs only grow per tenant, across
 * rounds too, so a seq handed out twice is caught at once.
 *
 * Everything random derives from the printed seed; a failure prints the
 * seed, the round and the data directory (kept) so it can be replayed.
 */
#include "crash_common.h"

#include "format/hash.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS_DEFAULT 50u
#define SEED_DEFAULT 0x48304445u
#define FULL_EVERY_DEFAULT 5u
#define SAMPLE_DEFAULT 200u
#define READY_TIMEOUT_MS 30000
#define DRAIN_TIMEOUT_MS 10000
#define MESSAGES_MAX 20u
#define PAGE_LIMIT 1000u
#define WALK_SEQ_MAX (1ull << 26)
#define ROUND_WATCHDOG_S 300u /* a round stuck this long is an engine hang */

enum source { SRC_ACK, SRC_VERIFY, SRC_SAMPLE, SRC_WALK, SRC_COUNT };

struct batch {
	uint32_t round, tenant;
	uint64_t counter_first;
	uint32_t count;
	uint64_t first_seq, last_seq;
	uint8_t chain[FMT_HASH_BYTES];
};

/* One tenant's history as the full walk found it, indexed by seq - 1. */
struct walk {
	uint64_t n;    /* highest seq returned */
	uint64_t cap;  /* slots allocated */
	uint8_t (*id)[FMT_EVENT_ID_BYTES];
	uint8_t (*hash)[FMT_HASH_BYTES];
	uint8_t (*chain)[FMT_HASH_BYTES];
	uint8_t *seen;
};

struct crash {
	uint64_t seed;
	uint32_t rounds, full_every, sample;
	bool keep, uring_ok, search_ok;
	const char *driver;
	char dir[512];
	uint64_t rng;
	struct batch *batches;
	size_t batch_count, batch_cap;
	uint64_t last_acked_seq[CRASH_TENANTS];
	size_t last_batch[CRASH_TENANTS];      /* index in batches + 1; 0: none */
	uint64_t verified_n[CRASH_TENANTS];    /* events at the last whole verify */
	uint32_t round;
	/* Totals for the closing lines. */
	uint64_t acked_events, checked_events, sampled_events, lost, duplicated;
	/* This round's findings, by the check that made them (enum source):
	 * the same lost event is seen by several checks, so they are merged
	 * once per round instead of summed. */
	uint64_t round_lost[SRC_COUNT], round_dup[SRC_COUNT];
	uint32_t rounds_passed, rounds_failed, rounds_with_acks, messages;
	bool round_bad;
	uint8_t *scratch;
	size_t scratch_cap;
};

static struct crash C;

/* ---- watchdog ------------------------------------------------------------ */

/* What the test is doing, for the watchdog's message: an engine that
 * hangs (a shard that never stops, a search that never answers) fails
 * the round with its phase named instead of idling until CTest's timeout. */
enum phase { PH_DRIVER, PH_OPEN, PH_VERIFY, PH_SAMPLE, PH_WALK, PH_CLOSE, PH_COUNT };
static const char *const phase_names[PH_COUNT] = {
	"running the driver", "eng_open", "verify", "lookups by id", "the full walk", "eng_close",
};
static volatile sig_atomic_t current_phase;

static void phase(enum phase ph)
{
	current_phase = ph;
}

static void watchdog_fired(int sig)
{
	char msg[160];
	int ph = current_phase;
	int n = snprintf(msg, sizeof(msg), "crash: FAIL round %u (seed %#" PRIx64 "): stuck in %s "
			 "for %u s; data directory kept: ", C.round, C.seed,
			 phase_names[ph >= 0 && ph < PH_COUNT ? ph : 0], ROUND_WATCHDOG_S);
	(void)!write(2, msg, (size_t)FMT_MIN(n, (int)sizeof(msg) - 1));
	(void)!write(2, C.dir, strlen(C.dir));
	(void)!write(2, "\n", 1);
	_exit(1);
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

__attribute__((format(printf, 1, 2))) static void fail(const char *fmt, ...)
{
	C.round_bad = true;
	if (C.messages++ >= MESSAGES_MAX)
		return;
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "crash: FAIL round %u (seed %#" PRIx64 "): ", C.round, C.seed);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static uint32_t rand_between(uint32_t lo, uint32_t hi)
{
	return lo + (uint32_t)(crash_rand(&C.rng) % (hi - lo + 1));
}

static void quiet_log(void *ctx, enum eng_log_level level, const char *msg)
{
	if (level <= ENG_LOG_WARN)
		fprintf(stderr, "crash: engine (parent): %s\n", msg);
}

/* ---- acks ------------------------------------------------------------------ */

/* Where each tenant's batch sizes stand while acks of one round arrive. */
struct size_cursor {
	uint64_t state;
	uint64_t counter;  /* first counter of the next batch */
	uint32_t size;     /* size of the batch starting at counter */
};

static void cursor_init(struct size_cursor *c, uint32_t round, uint32_t tenant)
{
	c->state = crash_size_state(C.seed, round, tenant);
	c->counter = 0;
	c->size = crash_next_size(&c->state);
}

/* Advances to the batch that starts at counter; false if none does. */
static bool cursor_seek(struct size_cursor *c, uint64_t counter)
{
	for (uint64_t i = 0; i < CRASH_COUNTER_MAX && c->counter < counter; i++) {
		c->counter += c->size;
		c->size = crash_next_size(&c->state);
	}
	return c->counter == counter;
}

static void batch_push(const struct crash_rec *r)
{
	if (C.batch_count == C.batch_cap) {
		size_t cap = C.batch_cap ? C.batch_cap * 2 : 4096;
		struct batch *b = realloc(C.batches, cap * sizeof(*b));
		ASSERT(b);
		C.batches = b;
		C.batch_cap = cap;
	}
	struct batch *b = &C.batches[C.batch_count++];
	*b = (struct batch){ .round = r->round, .tenant = r->tenant,
			     .counter_first = r->counter_first, .count = r->count,
			     .first_seq = r->first_seq, .last_seq = r->last_seq };
	memcpy(b->chain, r->chain, FMT_HASH_BYTES);
	C.acked_events += r->count;
}

/* Checks one ack against what the driver must have sent and the seqs
 * handed out before, then remembers it. */
static void ack_take(const struct crash_rec *r, struct size_cursor cur[CRASH_TENANTS])
{
	if (r->magic != CRASH_REC_MAGIC || r->round != C.round || r->tenant >= CRASH_TENANTS) {
		fail("malformed ack record (magic %#x round %u tenant %u)", r->magic, r->round,
		     r->tenant);
		return;
	}
	struct size_cursor *c = &cur[r->tenant];
	if (!cursor_seek(c, r->counter_first) || c->size != r->count)
		fail("tenant %u: ack for counters %" PRIu64 "+%u is not a batch the driver built",
		     r->tenant, r->counter_first, r->count);
	if (r->duplicates != 0 || r->accepted != r->count) {
		fail("tenant %u: batch of %u fresh ids acked with accepted %u, duplicates %u",
		     r->tenant, r->count, r->accepted, r->duplicates);
		C.round_dup[SRC_ACK] += r->duplicates;
		return;
	}
	if (r->first_seq <= C.last_acked_seq[r->tenant])
		fail("tenant %u: ack gives seqs %" PRIu64 "..%" PRIu64 " but seq %" PRIu64
		     " was already acked: a seq was handed out twice (acked events lost?)",
		     r->tenant, r->first_seq, r->last_seq, C.last_acked_seq[r->tenant]);
	if (r->last_seq - r->first_seq + 1 != r->count)
		fail("tenant %u: %u events acked with seqs %" PRIu64 "..%" PRIu64, r->tenant, r->count,
		     r->first_seq, r->last_seq);
	C.last_acked_seq[r->tenant] = r->last_seq;
	batch_push(r);
	C.last_batch[r->tenant] = C.batch_count;
}

/* ---- one round: run the driver and kill it ---------------------------------- */

static pid_t driver_start(int *read_fd, const char *io_name)
{
	int fds[2];
	ASSERT(pipe2(fds, O_CLOEXEC) == 0);
	fflush(NULL);
	pid_t pid = fork();
	ASSERT(pid >= 0);
	if (pid == 0) {
		char seed[32], round[16];
		snprintf(seed, sizeof(seed), "%#" PRIx64, C.seed);
		snprintf(round, sizeof(round), "%u", C.round);
		if (dup2(fds[1], 3) != 3)
			_exit(126);
		execl(C.driver, C.driver, C.dir, seed, round, io_name, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	*read_fd = fds[0];
	return pid;
}

struct reader {
	int fd;
	uint8_t buf[sizeof(struct crash_rec) * 64];
	size_t len;
	bool eof, ready;
	uint32_t acks;
	struct size_cursor cur[CRASH_TENANTS];
};

/* Reads what the pipe holds (waiting up to timeout_ms) and takes the
 * whole records in it. */
static void reader_pump(struct reader *rd, int timeout_ms)
{
	struct pollfd pfd = { .fd = rd->fd, .events = POLLIN };
	int rc = poll(&pfd, 1, timeout_ms < 0 ? 0 : timeout_ms);
	if (rc <= 0)
		return;
	ssize_t n = read(rd->fd, rd->buf + rd->len, sizeof(rd->buf) - rd->len);
	if (n < 0 && errno == EINTR)
		return;
	if (n <= 0) {
		rd->eof = true;
		return;
	}
	rd->len += (size_t)n;
	size_t off = 0;
	for (; rd->len - off >= sizeof(struct crash_rec); off += sizeof(struct crash_rec)) {
		struct crash_rec r;
		memcpy(&r, rd->buf + off, sizeof(r));
		if (r.kind == CRASH_REC_READY && r.magic == CRASH_REC_MAGIC) {
			rd->ready = true;
			continue;
		}
		if (r.kind != CRASH_REC_ACK) {
			fail("unknown record kind %u from the driver", r.kind);
			continue;
		}
		ack_take(&r, rd->cur);
		rd->acks++;
	}
	memmove(rd->buf, rd->buf + off, rd->len - off);
	rd->len -= off;
}

/* Reads acks until the kill time, which is either fixed from the start
 * (early rounds) or counted from the driver's READY record. */
static void read_until_kill(struct reader *rd, bool early)
{
	int64_t start = mono_ms();
	int64_t kill_at = early ? start + rand_between(1, 40) : start + READY_TIMEOUT_MS;
	uint32_t delay_ms = rand_between(5, 300);
	for (uint64_t i = 0; i < 10000000 && !rd->eof; i++) {
		int64_t now = mono_ms();
		if (now >= kill_at) {
			if (!early && !rd->ready)
				fail("driver not ready after %d ms", READY_TIMEOUT_MS);
			return;
		}
		bool was_ready = rd->ready;
		reader_pump(rd, (int)(kill_at - now));
		if (!early && rd->ready && !was_ready)
			kill_at = mono_ms() + delay_ms;
	}
}

static void run_round(void)
{
	bool uring = C.uring_ok && C.round % 2 == 1;
	bool early = C.round % 5 == 3; /* alternates backends: rounds 3, 8, 13, ... */
	struct reader rd = { 0 };
	for (uint32_t t = 0; t < CRASH_TENANTS; t++)
		cursor_init(&rd.cur[t], C.round, t);
	pid_t pid = driver_start(&rd.fd, uring ? "uring" : "sync");
	read_until_kill(&rd, early);
	kill(pid, SIGKILL);
	int64_t until = mono_ms() + DRAIN_TIMEOUT_MS;
	while (!rd.eof && mono_ms() < until)
		reader_pump(&rd, DRAIN_TIMEOUT_MS);
	if (!rd.eof)
		fail("the ack pipe did not reach its end after the kill");
	if (rd.len)
		fail("%zu bytes of a partial record left in the pipe", rd.len);
	close(rd.fd);
	int status = 0;
	ASSERT(waitpid(pid, &status, 0) == pid);
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
		fail("driver ended by itself (%s %d) instead of being killed",
		     WIFEXITED(status) ? "exit" : "signal",
		     WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	if (rd.acks)
		C.rounds_with_acks++;
	printf("crash: round %u (%s%s): %u batches acked\n", C.round, uring ? "uring" : "sync",
	       early ? ", early kill" : "", rd.acks);
}

/* ---- checks -------------------------------------------------------------- */

/* Compares a returned event with what the driver sent for its id. Its
 * occurred_at was the driver's clock minus a known jitter, taken before
 * the engine stamped received_at. */
static bool content_ok(const struct fmt_event *got, uint32_t round, uint32_t tenant,
		       uint64_t counter)
{
	struct fmt_event want;
	struct fmt_attr attrs[CRASH_ATTRS_MAX];
	char store[CRASH_STORE_BYTES];
	crash_event_fill(&want, attrs, store, C.seed, round, tenant, counter, 0);
	int64_t sent_ns = got->occurred_at_ns - want.occurred_at_ns; /* want's "now" was 0 */
	if (sent_ns > got->received_at_ns || got->received_at_ns - sent_ns > 60ll * 1000000000)
		return false;
	if (memcmp(got->event_id, want.event_id, FMT_EVENT_ID_BYTES) || got->outcome != want.outcome ||
	    got->attr_count != want.attr_count || !fmt_str_eq(got->details_json, want.details_json))
		return false;
	for (int f = 0; f < FMT_F_STRING_COUNT; f++)
		if (!fmt_str_eq(got->str[f], want.str[f]))
			return false;
	for (uint32_t i = 0; i < want.attr_count; i++)
		if (!fmt_str_eq(got->attrs[i].key, attrs[i].key) ||
		    !fmt_str_eq(got->attrs[i].value, attrs[i].value))
			return false;
	return true;
}

static bool search_unavailable(int rc)
{
	if (rc != FMT_E_STATE)
		return false;
	if (C.search_ok)
		fprintf(stderr, "crash: NOTE search answers FMT_E_STATE (not built yet?): checking "
				"by verify and counts only\n");
	C.search_ok = false;
	return true;
}

/* Verifies tenant t from from_seq on (0: all of it, and then its count,
 * in *n, must cover every acked seq). */
static int verify_tenant(struct eng_producer *p, const char *name, uint32_t t, uint64_t from_seq,
			 uint64_t *n)
{
	struct eng_verify v = { .tenant = fmt_str_c(name), .from_seq = from_seq };
	int rc = eng_verify_wait(p, &v);
	*n = v.events_checked;
	if (rc != 0 || !v.ok) {
		fail("tenant %u: verify from seq %" PRIu64 ": status %s, ok %d, first bad seq %" PRIu64
		     ": %s", t, from_seq, fmt_strerror(rc), v.ok, v.first_bad_seq, v.problem);
		return -1;
	}
	if (from_seq == 0 && *n < C.last_acked_seq[t]) {
		fail("tenant %u: verify counts %" PRIu64 " events, but seq %" PRIu64 " was acked",
		     t, *n, C.last_acked_seq[t]);
		C.round_lost[SRC_VERIFY] += C.last_acked_seq[t] - *n;
		return -1;
	}
	return 0;
}

typedef void (*hit_fn)(void *ctx, const struct eng_hit *hit);

/* Runs a search oldest first to its last page, handing every hit to fn.
 * Returns 0, the search's status, or FMT_E_TOO_BIG after pages_max pages. */
static int search_pages(struct eng_producer *p, const char *tenant, const struct eng_filter *f,
			uint64_t pages_max, hit_fn fn, void *ctx)
{
	uint8_t token[ENG_PAGE_TOKEN_BYTES];
	uint32_t token_len = 0;
	for (uint64_t page = 0; page < pages_max; page++) {
		struct eng_search s = { .tenant = fmt_str_c(tenant), .filter = *f,
					.limit = PAGE_LIMIT, .oldest_first = true,
					.page_token = token_len ? token : NULL,
					.page_token_len = token_len };
		int rc = eng_search_wait(p, &s);
		if (rc) {
			eng_search_release(&s);
			return rc;
		}
		for (uint32_t i = 0; i < s.hit_count; i++)
			fn(ctx, &s.hits[i]);
		token_len = s.next_page_token_len;
		ASSERT(token_len <= sizeof(token));
		memcpy(token, s.next_page_token, token_len);
		eng_search_release(&s);
		if (token_len == 0)
			return 0;
	}
	return FMT_E_TOO_BIG;
}

/* ---- sample: acked events looked up by id ------------------------------------ */

struct lookup {
	uint32_t hits;
	uint64_t seq;
	bool content, chain_checked, chain_ok;
	const uint8_t *want_chain;  /* NULL: not the batch's last event */
	uint32_t round, tenant;
	uint64_t counter;
};

static void lookup_hit(void *ctx, const struct eng_hit *h)
{
	struct lookup *l = ctx;
	if (l->hits++ == 0) {
		l->seq = h->ev.seq;
		l->content = content_ok(&h->ev, l->round, l->tenant, l->counter);
		if (l->want_chain)
			l->chain_ok = memcmp(h->chain, l->want_chain, FMT_HASH_BYTES) == 0;
	}
}

static void sample_one(struct eng_producer *p, const struct batch *b, uint32_t i)
{
	char name[32];
	crash_tenant_name(b->tenant, name);
	struct eng_filter f = { .has_event_id = true };
	crash_event_id(f.event_id, C.seed, b->round, b->tenant, b->counter_first + i);
	struct lookup l = { .round = b->round, .tenant = b->tenant, .counter = b->counter_first + i,
			    .chain_ok = true, .want_chain = i + 1 == b->count ? b->chain : NULL };
	int rc = search_pages(p, name, &f, 100, lookup_hit, &l);
	if (rc && search_unavailable(rc))
		return;
	C.sampled_events++;
	if (rc) {
		fail("tenant %u: search by id failed: %s", b->tenant, fmt_strerror(rc));
		return;
	}
	if (l.hits == 0) {
		C.round_lost[SRC_SAMPLE]++;
		fail("tenant %u: acked event round %u counter %" PRIu64 " (seq %" PRIu64
		     ") not found by id", b->tenant, b->round, l.counter, b->first_seq + i);
		return;
	}
	if (l.hits > 1) {
		C.round_dup[SRC_SAMPLE] += l.hits - 1;
		fail("tenant %u: event id of seq %" PRIu64 " found %u times", b->tenant,
		     b->first_seq + i, l.hits);
	}
	if (l.seq != b->first_seq + i)
		fail("tenant %u: acked event found at seq %" PRIu64 ", its ack said %" PRIu64,
		     b->tenant, l.seq, b->first_seq + i);
	if (!l.content)
		fail("tenant %u: event at seq %" PRIu64 " differs from what was sent", b->tenant, l.seq);
	if (!l.chain_ok)
		fail("tenant %u: chain value at seq %" PRIu64 " differs from the ack's", b->tenant, l.seq);
}

/* Looks up the newest acked event of every tenant, then `count` random
 * acked events: half from this round's acks (the ones a crash threatens
 * most), half from the whole history. */
static void sample(struct eng_producer *p, size_t round_first, uint32_t count)
{
	for (uint32_t t = 0; t < CRASH_TENANTS && C.search_ok; t++) {
		if (C.last_batch[t] == 0)
			continue;
		const struct batch *b = &C.batches[C.last_batch[t] - 1];
		sample_one(p, b, b->count - 1);
	}
	for (uint32_t k = 0; k < count && C.batch_count > 0 && C.search_ok; k++) {
		size_t lo = (k % 2 == 0 && round_first < C.batch_count) ? round_first : 0;
		size_t span = C.batch_count - lo;
		const struct batch *b = &C.batches[lo + crash_rand(&C.rng) % span];
		sample_one(p, b, (uint32_t)(crash_rand(&C.rng) % b->count));
	}
}

/* ---- full walk ------------------------------------------------------------ */

struct walk_ctx {
	struct walk *w;
	uint32_t tenant;
	const char *name;
	uint64_t hits, out_of_range, twice, foreign, differ;
};

/* Makes room for seqs up to need; false past WALK_SEQ_MAX. */
static bool walk_grow(struct walk *w, uint64_t need)
{
	if (need <= w->cap)
		return true;
	if (need > WALK_SEQ_MAX)
		return false;
	uint64_t cap = FMT_MIN(FMT_MAX(need, w->cap * 2), WALK_SEQ_MAX);
	void *id = realloc(w->id, cap * sizeof(*w->id));
	void *hash = id ? realloc(w->hash, cap * sizeof(*w->hash)) : NULL;
	void *chain = hash ? realloc(w->chain, cap * sizeof(*w->chain)) : NULL;
	uint8_t *seen = chain ? realloc(w->seen, cap) : NULL;
	ASSERT(seen); /* the test's own memory: nothing sensible to do without it */
	w->id = id;
	w->hash = hash;
	w->chain = chain;
	w->seen = seen;
	memset(w->seen + w->cap, 0, cap - w->cap);
	w->cap = cap;
	return true;
}

static void walk_hit(void *ctx, const struct eng_hit *h)
{
	struct walk_ctx *wc = ctx;
	struct walk *w = wc->w;
	uint64_t seq = h->ev.seq;
	uint32_t round, tenant;
	uint64_t counter;
	wc->hits++;
	if (seq < 1 || !walk_grow(w, seq)) {
		wc->out_of_range++;
		return;
	}
	if (w->seen[seq - 1]++) {
		wc->twice++;
		return;
	}
	w->n = FMT_MAX(w->n, seq);
	memcpy(w->id[seq - 1], h->ev.event_id, FMT_EVENT_ID_BYTES);
	memcpy(w->chain[seq - 1], h->chain, FMT_HASH_BYTES);
	if (fmt_event_hash(&h->ev, C.scratch, C.scratch_cap, w->hash[seq - 1]) != 0)
		memset(w->hash[seq - 1], 0, FMT_HASH_BYTES);
	if (!fmt_str_eq(h->ev.tenant, fmt_str_c(wc->name)) ||
	    !crash_id_decode(h->ev.event_id, C.seed, &round, &tenant, &counter) ||
	    tenant != wc->tenant || round > C.round)
		wc->foreign++;
	else if (!content_ok(&h->ev, round, tenant, counter))
		wc->differ++;
}

static void walk_free(struct walk *w)
{
	free(w->id);
	free(w->hash);
	free(w->chain);
	free(w->seen);
}

/* True when a tenant's first m events of a round are whole batches. */
static bool whole_batches(uint32_t round, uint32_t tenant, uint64_t m)
{
	struct size_cursor c;
	cursor_init(&c, round, tenant);
	return cursor_seek(&c, m);
}

/* Seq order: every event continues its round's counters or starts a later
 * round at counter 0, and each round ends on a batch boundary. */
static void walk_check_order(const struct walk *w, uint32_t t)
{
	uint32_t cur_round = 0;
	uint64_t cur_count = 0;
	for (uint64_t i = 0; i < w->n; i++) {
		uint32_t round, tenant;
		uint64_t counter;
		if (!w->seen[i] || !crash_id_decode(w->id[i], C.seed, &round, &tenant, &counter))
			continue; /* reported already */
		bool next_in_round = cur_count > 0 && round == cur_round && counter == cur_count;
		bool new_round = counter == 0 && (cur_count == 0 || round > cur_round);
		if (!next_in_round && !new_round) {
			fail("tenant %u: seq %" PRIu64 " holds round %u counter %" PRIu64 " after round %u "
			     "counter %" PRIu64 ": duplicated or out of order", t, i + 1, round, counter,
			     cur_round, cur_count ? cur_count - 1 : 0);
			if (round == cur_round && counter < cur_count)
				C.round_dup[SRC_WALK]++;
		}
		if (new_round && cur_count && !whole_batches(cur_round, t, cur_count))
			fail("tenant %u: round %u left %" PRIu64 " events, not a whole number of "
			     "batches (a batch was stored in part)", t, cur_round, cur_count);
		if (new_round)
			cur_round = round;
		cur_count = counter + 1;
	}
	if (cur_count && !whole_batches(cur_round, t, cur_count))
		fail("tenant %u: round %u left %" PRIu64 " events, not a whole number of batches",
		     t, cur_round, cur_count);
}

/* The chain recomputed from the returned events must match every
 * returned chain value, from the genesis value (all zero) on. */
static void walk_check_chain(const struct walk *w, uint32_t t)
{
	uint8_t chain[FMT_HASH_BYTES] = { 0 };
	for (uint64_t i = 0; i < w->n && w->seen[i]; i++) {
		fmt_chain_next(chain, w->hash[i], chain);
		if (memcmp(chain, w->chain[i], FMT_HASH_BYTES) != 0) {
			fail("tenant %u: chain recomputed from the searched events differs at seq %" PRIu64,
			     t, i + 1);
			return;
		}
	}
}

/* Every acked event at its acked seq, with the acked chain value after
 * each batch. Returns how many acked events were confirmed. */
static uint64_t walk_check_acks(const struct walk *w, uint32_t t)
{
	uint64_t confirmed = 0, missed = 0, bad_chains = 0;
	const struct batch *first_miss = NULL;
	uint32_t first_miss_i = 0;
	for (size_t k = 0; k < C.batch_count; k++) {
		const struct batch *b = &C.batches[k];
		if (b->tenant != t)
			continue;
		for (uint32_t i = 0; i < b->count; i++) {
			uint64_t at = b->first_seq + i - 1;
			uint8_t want[FMT_EVENT_ID_BYTES];
			crash_event_id(want, C.seed, b->round, t, b->counter_first + i);
			if (at < w->n && w->seen[at] && memcmp(w->id[at], want, sizeof(want)) == 0) {
				confirmed++;
				continue;
			}
			if (missed++ == 0) {
				first_miss = b;
				first_miss_i = i;
			}
		}
		uint64_t last = b->last_seq - 1;
		if (last < w->n && w->seen[last] && memcmp(w->chain[last], b->chain, FMT_HASH_BYTES))
			bad_chains++;
	}
	C.round_lost[SRC_WALK] += missed;
	if (missed)
		fail("tenant %u: %" PRIu64 " acked events are not at their acked seqs; the first is "
		     "round %u counter %" PRIu64 ", acked at seq %" PRIu64, t, missed,
		     first_miss->round, first_miss->counter_first + first_miss_i,
		     first_miss->first_seq + first_miss_i);
	if (bad_chains)
		fail("tenant %u: %" PRIu64 " acked batches end on a chain value other than their ack's",
		     t, bad_chains);
	return confirmed;
}

/* Walks tenant t oldest first. n is verify's count of its events: the
 * walk must return seqs 1..n, each once. */
static uint64_t walk_tenant(struct eng_producer *p, uint32_t t, const char *name, uint64_t n)
{
	struct walk w = { 0 };
	uint64_t confirmed = 0;
	walk_grow(&w, FMT_MAX(FMT_MAX(n, C.last_acked_seq[t]), 1));
	struct walk_ctx wc = { .w = &w, .tenant = t, .name = name };
	struct eng_filter all = { 0 };
	int rc = search_pages(p, name, &all, w.cap / PAGE_LIMIT + 1000, walk_hit, &wc);
	if (rc && search_unavailable(rc))
		goto out;
	if (rc)
		fail("tenant %u: walk failed: %s", t, fmt_strerror(rc));
	uint64_t missing = 0;
	for (uint64_t i = 0; i < w.n; i++)
		missing += !w.seen[i];
	if (w.n != n || missing || wc.out_of_range || wc.twice)
		fail("tenant %u: walk returned %" PRIu64 " events up to seq %" PRIu64 ", verify counted "
		     "%" PRIu64 ": %" PRIu64 " seqs missing, %" PRIu64 " out of range, %" PRIu64 " twice",
		     t, wc.hits, w.n, n, missing, wc.out_of_range, wc.twice);
	C.round_dup[SRC_WALK] += wc.twice;
	if (wc.foreign || wc.differ)
		fail("tenant %u: %" PRIu64 " events the driver never sent to this tenant, %" PRIu64
		     " with altered content", t, wc.foreign, wc.differ);
	walk_check_chain(&w, t);
	walk_check_order(&w, t);
	confirmed = walk_check_acks(&w, t);
out:
	walk_free(&w);
	return confirmed;
}

/* ---- after each round --------------------------------------------------------- */

/* Opens the engine on the data directory and runs the checks; returns
 * true when a full walk ran. */
static bool check_round(bool full, size_t round_first)
{
	struct eng_config cfg;
	bool uring = C.uring_ok && C.round % 2 == 0;
	crash_config(&cfg, C.dir, uring ? ENG_IO_URING : ENG_IO_SYNC);
	cfg.log = quiet_log;
	struct eng_engine *eng = NULL;
	int64_t t_open = mono_ms();
	phase(PH_OPEN);
	int rc = eng_open(&cfg, &eng);
	if (rc) {
		fail("eng_open after the kill: %s", fmt_strerror(rc));
		return false;
	}
	struct eng_producer *p = NULL;
	ASSERT(eng_producer_open(eng, &p) == 0);
	uint64_t n[CRASH_TENANTS] = { 0 }, confirmed = 0, total = 0;
	bool verified = true;
	int64_t t_verify = mono_ms();
	phase(PH_VERIFY);
	for (uint32_t t = 0; t < CRASH_TENANTS; t++) {
		char name[32];
		crash_tenant_name(t, name);
		/* Between full checks, only what changed since the last one,
		 * unless verify's counts are all there is to check acks with. */
		bool whole = full || !C.search_ok || C.verified_n[t] == 0;
		uint64_t from = whole ? 0 : C.verified_n[t];
		verified &= verify_tenant(p, name, t, from, &n[t]) == 0;
		if (whole)
			C.verified_n[t] = n[t];
		total += n[t];
	}
	int64_t t_sample = mono_ms();
	phase(PH_SAMPLE);
	sample(p, round_first, full ? C.sample : C.sample / 8);
	int64_t t_walk = mono_ms();
	phase(PH_WALK);
	for (uint32_t t = 0; full && C.search_ok && t < CRASH_TENANTS; t++) {
		char name[32];
		crash_tenant_name(t, name);
		confirmed += walk_tenant(p, t, name, n[t]);
	}
	if (full && C.search_ok)
		C.checked_events = confirmed;
	else if (full && verified)
		C.checked_events = C.acked_events; /* by verify's counts only */
	int64_t t_end = mono_ms();
	printf("crash: round %u checked%s: %" PRIu64 " events verified, %" PRIu64 " acked so far "
	       "(ms: open %lld, verify %lld, sample %lld, walk %lld)\n", C.round,
	       full ? (C.search_ok ? " in full" : " by counts") : "", total, C.acked_events,
	       (long long)(t_verify - t_open), (long long)(t_sample - t_verify),
	       (long long)(t_walk - t_sample), (long long)(t_end - t_walk));
	phase(PH_CLOSE);
	eng_producer_close(p);
	eng_close(eng);
	return full && C.search_ok;
}

/* Adds the round's findings to the totals, each lost or duplicated event
 * once: the walk sees everything when it ran, otherwise the sample and
 * verify's counts each see a part. */
static void round_tally(bool walked)
{
	C.lost += walked ? C.round_lost[SRC_WALK]
			 : FMT_MAX(C.round_lost[SRC_SAMPLE], C.round_lost[SRC_VERIFY]);
	C.duplicated += C.round_dup[SRC_ACK] +
			(walked ? C.round_dup[SRC_WALK] : C.round_dup[SRC_SAMPLE]);
	memset(C.round_lost, 0, sizeof(C.round_lost));
	memset(C.round_dup, 0, sizeof(C.round_dup));
}

/* ---- main ----------------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void setup(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s <path-to-crash_driver>\n", argv[0]);
		exit(2);
	}
	C.driver = argv[1];
	C.seed = crash_env("HODEI_CRASH_SEED", SEED_DEFAULT);
	C.rounds = (uint32_t)FMT_MIN(crash_env("HODEI_CRASH_ROUNDS", ROUNDS_DEFAULT),
				     CRASH_ROUNDS_MAX);
	C.full_every = (uint32_t)FMT_MAX(crash_env("HODEI_CRASH_FULL_EVERY", FULL_EVERY_DEFAULT),
					 1);
	C.sample = (uint32_t)crash_env("HODEI_CRASH_SAMPLE", SAMPLE_DEFAULT);
	C.keep = crash_env("HODEI_CRASH_KEEP", 0) != 0;
	C.rng = crash_mix(C.seed ^ 0x7E57u);
	C.search_ok = true;
	C.scratch_cap = 1u << 16;
	C.scratch = malloc(C.scratch_cap);
	ASSERT(C.scratch);
	const char *base = getenv("HODEI_TEST_TMP");
	snprintf(C.dir, sizeof(C.dir), "%s/crash-XXXXXX", base && *base ? base : "/tmp");
	ASSERT(mkdtemp(C.dir) != NULL);
	struct eng_io *io = NULL;
	const char *why = NULL;
	C.uring_ok = eng_io_create(ENG_IO_URING, 8, -1, NULL, &io, &why) == 0;
	if (io)
		eng_io_destroy(io);
	else
		printf("crash: io_uring unavailable (%s): every round uses sync\n", why ? why : "?");
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGALRM, watchdog_fired);
	printf("crash: seed %#" PRIx64 ", %u rounds, full check every %u, data dir %s\n", C.seed,
	       C.rounds, C.full_every, C.dir);
}

int main(int argc, char **argv)
{
	setup(argc, argv);
	int64_t start = mono_ms();
	for (C.round = 1; C.round <= C.rounds; C.round++) {
		size_t round_first = C.batch_count;
		C.round_bad = false;
		alarm(ROUND_WATCHDOG_S);
		phase(PH_DRIVER);
		run_round();
		round_tally(check_round(C.round % C.full_every == 0 || C.round == C.rounds, round_first));
		if (C.round_bad) {
			C.rounds_failed++;
			break;
		}
		C.rounds_passed++;
	}
	alarm(0);
	uint32_t ran = C.rounds_passed + C.rounds_failed;
	printf("crash: %u rounds (%u with acks) in %.1f s, seed %#" PRIx64 ", %" PRIu64
	       " acked events looked up by id\n", ran, C.rounds_with_acks,
	       (double)(mono_ms() - start) / 1000, C.seed, C.sampled_events);
	printf("crash: %u rounds, %" PRIu64 " acked events checked, %" PRIu64 " lost, %" PRIu64
	       " duplicated%s\n", ran, C.checked_events, C.lost, C.duplicated,
	       C.search_ok ? "" : " (search unavailable: checked by verify and counts)");
	if (C.rounds_failed || C.keep)
		printf("crash: data directory kept: %s\n", C.dir);
	else
		nftw(C.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	printf("%u passed, %u failed\n", C.rounds_passed, C.rounds_failed);
	free(C.batches);
	free(C.scratch);
	return C.rounds_failed ? 1 : 0;
}
