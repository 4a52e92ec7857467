// SPDX-License-Identifier: Apache-2.0
/*
 * load.c — hodei-bench-load: the ingest load generator. A real gRPC client
 * of hodei-auditd (h2c, nghttp2, event-driven) that sends unary
 * /hodei.audit.v1.AuditService/Append calls of realistic events
 * (bench/gen.h) and measures how many events per second the server
 * acknowledges as durable and how long each acknowledgement takes.
 *
 * Data flow.
 *
 *   gen_next ──▶ per-tenant buffer ──(batch full)──▶ request: 5-byte gRPC
 *   (Zipf tenants)  (protobuf-c)                     prefix + AppendRequest
 *        │                                            + event_id offsets
 *        ▼                                                   │
 *   pool of requests (built before the run)  ◀───────────────┘
 *        │ cyclic; patch the event ids in place, then
 *        ▼
 *   worker thread: epoll ─▶ C connections × S streams ─▶ nghttp2 ─▶ socket
 *        ▲                                                          │
 *        └── on_stream_close: grpc-status + AppendResponse ◀────────┘
 *            (accepted, duplicates) → histogram, counters
 *
 * Requests are built by grouping the generator's stream per tenant: each
 * tenant has a buffer that collects its events, and a request is cut when
 * a buffer holds --batch events (all partial buffers are cut at the end of
 * a fill). A buffer holds the concatenation of one-event AppendRequests,
 * each packed by protobuf-c: in protobuf, concatenated messages are their
 * merge and a repeated field appends, so the concatenation IS the
 * AppendRequest of all the events, byte for byte what packing them at once
 * would give. While packing, the offset of each event_id's 16 bytes is
 * recorded (and checked against the id).
 *
 * Modes.
 *   --max (or --rate 0): closed loop. Every free stream slot sends at once;
 *     latency is answer time − send time.
 *   --rate R: open loop. Request k is due at t0 + (events before it) / R,
 *     so requests leave at fixed intervals of batch/R whatever the server
 *     does. Latency is answer time − *due* time: when no stream slot is
 *     free the request waits and its latency keeps growing, so back-pressure
 *     shows in the figures instead of being hidden (coordinated omission
 *     corrected). A request that starts more than LATE_NS after its due time
 *     is a late start. Every request due inside the window is started, even
 *     after the window closed; one that still has no slot DRAIN_NS after the
 *     end is "not started" (and missing from the latency figures).
 *   --fill N: closed loop over exactly the first N events of the generator
 *     (ids as generated, each event once, generation on the fly just ahead
 *     of the sender), then exit: the store it leaves holds the events of
 *     `hodei-bench-gen --seed S --count N --tenants T --step-ns X`.
 *
 * Invariants.
 *   1. Every event id sent in pool mode is unique: before each send (the
 *      first one included) bytes 0-5 and 9-10 of each id are overwritten
 *      with v = mix64(run_id + uid), uid = sequence × threads + worker,
 *      distinct for every send; mix64 is a bijection of 64-bit integers, so
 *      distinct uids give distinct v. Bytes 6 and 8 keep the UUID version
 *      and variant. run_id is random per run, so a second run against the
 *      same data directory is not deduplicated either.
 *   2. A pool request is never patched while it is on the wire (busy flag),
 *      and each thread owns its own slice of the pool; a slice must hold
 *      more requests than the thread's stream slots, so a free one exists.
 *   3. Nothing is generated or encoded on the hot path of the timed modes:
 *      a send patches ids and hands the bytes to nghttp2 (NO_COPY: DATA
 *      frames are written from the pool straight into the output buffer).
 *   4. A request counts as acknowledged only when the server answered
 *      grpc-status 0 with an AppendResponse; accepted + duplicates must equal
 *      the events sent (a mismatch is counted).
 *   5. Throughput counts requests acknowledged inside the measured window
 *      [t0 + warmup, t0 + warmup + seconds); latency counts requests *due*
 *      inside it, including those answered while draining after it.
 *
 * Limits: every flag has a range (see usage); at most SLOTS_MAX streams per
 * connection, and no more than the server's SETTINGS_MAX_CONCURRENT_STREAMS;
 * a response message is at most RESPONSE_MAX bytes; draining after the
 * window waits at most DRAIN_NS. A connection that fails is not reopened:
 * its calls count as UNAVAILABLE (transport) and the run goes on with the
 * others, and stops when none is left. --fill retries a request that failed
 * with UNAVAILABLE or RESOURCE_EXHAUSTED (the ids are the same, so the
 * server deduplicates a retry of a request that was in fact stored) after
 * RETRY_DELAY_NS, at most RETRIES_MAX times. Within one tenant, concurrent
 * requests may commit in any order, so per-tenant sequence numbers follow
 * the order of commits, not of the generator.
 *
 * Output: a human summary on stderr, one JSON object on stdout. It never
 * asserts on time. Exit 0 when something was acknowledged (every event, for
 * --fill), 1 when the server could not be reached or nothing was, 2 on bad
 * flags.
 */
#include "bench/gen.h"
#include "bench/hist.h"
#include "hodei/audit/v1/audit.pb-c.h"
#include "net/grpc_frame.h"
#include "net/grpc_status.h"
#include "net/units.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_S 1000000000ll
#define CONNECTIONS_MAX 1024u
#define SLOTS_MAX 1024u              /* streams per connection */
#define THREADS_MAX 64u
#define BATCH_MAX 10000u
#define TENANTS_MAX 100000u
#define POOL_EVENTS_DEFAULT 1000000ull
#define POOL_EVENTS_MAX (64ull << 20)
#define FILL_MAX 10000000000ull
#define RATE_MAX 1000000000ull
#define RESPONSE_MAX (64u << 10)     /* an AppendResponse is ~50 bytes */
#define OUT_BYTES (256u << 10)       /* per connection: frames waiting for send() */
#define IN_BYTES (64u << 10)         /* one recv() */
#define READS_PER_TICK 16            /* recv()s per connection per loop turn */
#define FLUSH_ROUNDS 64              /* send()s per connection per loop turn */
#define CONNECT_TIMEOUT_MS 5000
#define LATE_NS (1000000ll)          /* a start this much after its due time is late */
#define DRAIN_NS (30 * NS_PER_S)
#define TICK_MAX_NS (50000000ll)     /* the loop looks at the clock at least this often */
#define RETRY_DELAY_NS (100000000ll)
#define RETRIES_MAX 50u
#define TENANT_NAME_MAX (FMT_TENANT_MAX + 1)
#define ERROR_TEXT_MAX 200
#define APPEND_PATH "/hodei.audit.v1.AuditService/Append"

_Static_assert(OUT_BYTES >= 2 * (16384 + 9), "room for a full DATA frame and its header");
_Static_assert(BATCH_MAX <= 10000, "the server's default --max-events");

enum mode { MODE_MAX, MODE_RATE, MODE_FILL };

struct load_config {
	const char *target;
	char host[256];
	char port[16];
	const char *key;
	uint32_t connections, streams, threads, batch, tenants;
	uint64_t rate_eps;       /* 0: closed loop */
	bool rate_set, max;
	int64_t seconds_ns, warmup_ns;
	uint64_t pool_events, fill, seed;
	int64_t step_ns;
	enum mode mode;
};

/* One request, ready to send: the gRPC prefix and the AppendRequest. */
struct req {
	uint8_t *buf;
	uint32_t len;            /* prefix included */
	uint32_t events;
	uint32_t tenant;         /* index into load.names */
	uint32_t *id_off;        /* [events]: offset of each event_id in buf */
	bool busy;               /* on the wire: never patched meanwhile */
	uint32_t retries;        /* --fill */
	int64_t not_before_ns;   /* --fill: retry after */
	struct req *next;        /* --fill: retry queue */
};

/* A tenant's events waiting for a full batch (see the header comment). */
struct tenant_buf {
	uint8_t *buf;            /* GF_PREFIX_BYTES reserved, then one-event AppendRequests */
	size_t len, cap;
	uint32_t events;
	uint32_t *id_off;        /* [batch] */
};

struct batcher {
	struct gen g;
	uint32_t batch, tenants;
	uint64_t limit, generated;
	struct tenant_buf *tb;   /* [tenants] */
	char (*names)[TENANT_NAME_MAX];
	uint32_t flush_cursor;
};

struct stats {
	/* Inside the window (invariant 5). */
	uint64_t req_acked, ev_acked, ev_accepted, ev_dup, msg_bytes;
	struct hist lat;         /* ns, by due time in the window */
	struct hist delay;       /* ns, start − due, by due time in the window */
	uint64_t late_starts;
	/* Whole run. */
	uint64_t req_started, req_acked_all, ev_acked_all, ev_accepted_all, ev_dup_all;
	uint64_t req_failed, ev_failed;
	uint64_t errors[GRPC_STATUS_COUNT];
	uint64_t transport_failures, count_mismatch;
	uint64_t not_started, unfinished, busy_skips, retries, gave_up;
	int64_t last_ack_ns;
	int err_code;
	char err_text[ERROR_TEXT_MAX];
};

struct load;
struct worker;
struct conn;

/* One stream slot of a connection. */
struct call {
	struct conn *c;
	struct req *r;
	bool active;
	int32_t stream_id;
	int64_t due_ns, start_ns;
	uint32_t read_off, sent;     /* request bytes handed to nghttp2 / written */
	int grpc_status;             /* -1: none received */
	bool have_resp, bad_resp;
	uint32_t accepted, duplicates;
	struct gf_reader rd;
	char msg[ERROR_TEXT_MAX];
};

struct conn {
	struct worker *w;
	uint32_t index;
	int fd;
	nghttp2_session *s;
	bool ready;                  /* the server's SETTINGS arrived */
	bool goaway, dead;
	bool want_out;
	uint32_t epoll_events;
	uint32_t slots, active;
	struct call *calls;          /* [slots_alloc] */
	uint32_t *free_calls, free_n, slots_alloc;
	uint8_t *out;                /* OUT_BYTES */
	size_t out_len, out_off;
};

struct worker {
	struct load *L;
	uint32_t index;
	pthread_t thread;
	int ep;
	struct conn *conns;
	uint32_t nconns, conn_cursor;
	struct req **reqs;           /* pool slice */
	uint32_t nreqs, cursor;
	uint64_t id_seq;
	uint64_t events_due;         /* open loop: events scheduled so far */
	double ns_per_event;
	struct req *retry_head, *retry_tail;
	struct batcher *fill;
	bool fill_done;
	bool all_dead;
	struct stats st;
	uint8_t inbuf[IN_BYTES];
};

struct load {
	struct load_config cfg;
	char authority[300];
	char auth_value[600];
	char (*names)[TENANT_NAME_MAX];  /* [tenants] */
	struct addrinfo *addrs;
	struct worker *workers;
	uint64_t run_id;
	int64_t t0_ns, win_start_ns, win_end_ns;
	struct req **pool;
	uint32_t pool_reqs;
	uint64_t pool_events, pool_bytes;
	double pool_build_s;
	uint32_t streams_effective;
};

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static double cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* ---- encoding ------------------------------------------------------------ */

static size_t varint_len(uint64_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static ProtobufCBinaryData pb_bytes(struct fmt_str s)
{
	return (ProtobufCBinaryData){ s.len, (uint8_t *)s.ptr };
}

/* Appends ev to t as a one-event AppendRequest and records where its id
 * is. Returns 0 or FMT_E_NOMEM. */
static int tenant_buf_add(struct tenant_buf *t, const struct fmt_event *ev, uint32_t batch)
{
	Hodei__Audit__V1__Attribute at[GEN_ATTRS_MAX], *atp[GEN_ATTRS_MAX];
	Hodei__Audit__V1__AuditEvent pe = HODEI__AUDIT__V1__AUDIT_EVENT__INIT;
	ASSERT(ev->attr_count <= GEN_ATTRS_MAX && t->events < batch);
	pe.event_id = (ProtobufCBinaryData){ FMT_EVENT_ID_BYTES, (uint8_t *)ev->event_id };
	pe.occurred_at_ns = ev->occurred_at_ns;
	pe.actor_id = pb_bytes(ev->str[FMT_F_ACTOR_ID]);
	pe.actor_type = pb_bytes(ev->str[FMT_F_ACTOR_TYPE]);
	pe.action = pb_bytes(ev->str[FMT_F_ACTION]);
	pe.resource_type = pb_bytes(ev->str[FMT_F_RESOURCE_TYPE]);
	pe.resource_id = pb_bytes(ev->str[FMT_F_RESOURCE_ID]);
	pe.outcome = (Hodei__Audit__V1__Outcome)ev->outcome;
	pe.source_ip = pb_bytes(ev->str[FMT_F_SOURCE_IP]);
	pe.user_agent = pb_bytes(ev->str[FMT_F_USER_AGENT]);
	pe.request_id = pb_bytes(ev->str[FMT_F_REQUEST_ID]);
	pe.trace_id = pb_bytes(ev->str[FMT_F_TRACE_ID]);
	pe.details_json = pb_bytes(ev->details_json);
	for (uint32_t i = 0; i < ev->attr_count; i++) {
		hodei__audit__v1__attribute__init(&at[i]);
		at[i].key = pb_bytes(ev->attrs[i].key);
		at[i].value = pb_bytes(ev->attrs[i].value);
		atp[i] = &at[i];
	}
	pe.n_attributes = ev->attr_count;
	pe.attributes = atp;
	Hodei__Audit__V1__AuditEvent *one = &pe;
	Hodei__Audit__V1__AppendRequest r = HODEI__AUDIT__V1__APPEND_REQUEST__INIT;
	r.n_events = 1;
	r.events = &one;

	size_t inner = hodei__audit__v1__audit_event__get_packed_size(&pe);
	size_t need = hodei__audit__v1__append_request__get_packed_size(&r);
	ASSERT(need == 1 + varint_len(inner) + inner);
	if (!t->id_off && !(t->id_off = malloc(batch * sizeof(*t->id_off))))
		return FMT_E_NOMEM;
	if (t->len + need > t->cap) {
		size_t cap = t->cap ? t->cap : GF_PREFIX_BYTES + 4096;
		while (cap < t->len + need + (t->len ? 0 : GF_PREFIX_BYTES))
			cap *= 2;
		uint8_t *nb = realloc(t->buf, cap);
		if (!nb)
			return FMT_E_NOMEM;
		t->buf = nb;
		t->cap = cap;
		if (t->len == 0)
			t->len = GF_PREFIX_BYTES;
	}
	size_t at_off = t->len;
	size_t w = hodei__audit__v1__append_request__pack(&r, t->buf + at_off);
	ASSERT(w == need);
	/* tag(events) len(inner) tag(event_id) 0x10 <16 bytes>: field 1 first. */
	size_t off = at_off + 1 + varint_len(inner) + 2;
	ASSERT(t->buf[at_off] == 0x0a && t->buf[off - 2] == 0x0a &&
	       t->buf[off - 1] == FMT_EVENT_ID_BYTES &&
	       memcmp(t->buf + off, ev->event_id, FMT_EVENT_ID_BYTES) == 0);
	ASSERT(off + FMT_EVENT_ID_BYTES <= UINT32_MAX);
	t->id_off[t->events++] = (uint32_t)off;
	t->len += need;
	return 0;
}

/* Cuts tenant t's buffer into a request. Returns 0 or FMT_E_NOMEM. */
static int tenant_buf_take(struct batcher *b, uint32_t t, struct req **out)
{
	struct tenant_buf *tb = &b->tb[t];
	ASSERT(tb->events > 0 && tb->len > GF_PREFIX_BYTES && tb->len <= UINT32_MAX);
	struct req *r = calloc(1, sizeof(*r));
	if (!r)
		return FMT_E_NOMEM;
	gf_prefix(tb->buf, (uint32_t)(tb->len - GF_PREFIX_BYTES));
	uint8_t *shrunk = realloc(tb->buf, tb->len);
	r->buf = shrunk ? shrunk : tb->buf;
	r->len = (uint32_t)tb->len;
	r->events = tb->events;
	r->tenant = t;
	r->id_off = tb->id_off;
	memset(tb, 0, sizeof(*tb));
	*out = r;
	return 0;
}

/* The next request of the generator's stream: 0 with *out, 1 when the
 * stream's first `limit` events are all in requests, or FMT_E_NOMEM. */
static int batcher_next(struct batcher *b, struct req **out)
{
	while (b->generated < b->limit) {
		struct fmt_event ev;
		struct fmt_str tenant;
		gen_next(&b->g, &ev, &tenant);
		b->generated++;
		uint32_t t = b->g.tenant_index;
		ASSERT(t < b->tenants && tenant.len > 0 && tenant.len < TENANT_NAME_MAX);
		if (!b->names[t][0])
			memcpy(b->names[t], tenant.ptr, tenant.len);
		int rc = tenant_buf_add(&b->tb[t], &ev, b->batch);
		if (rc != 0)
			return rc;
		if (b->tb[t].events == b->batch)
			return tenant_buf_take(b, t, out);
	}
	while (b->flush_cursor < b->tenants) {
		uint32_t t = b->flush_cursor++;
		if (b->tb[t].events)
			return tenant_buf_take(b, t, out);
	}
	return 1;
}

static int batcher_init(struct batcher *b, const struct load_config *cfg, uint64_t limit,
			char (*names)[TENANT_NAME_MAX])
{
	memset(b, 0, sizeof(*b));
	int rc = gen_init(&b->g, cfg->seed, cfg->tenants);
	if (rc != 0)
		return rc;
	b->g.step_ns = cfg->step_ns;
	b->batch = cfg->batch;
	b->tenants = cfg->tenants;
	b->limit = limit;
	b->names = names;
	b->tb = calloc(cfg->tenants, sizeof(*b->tb));
	return b->tb ? 0 : FMT_E_NOMEM;
}

static void batcher_free(struct batcher *b)
{
	for (uint32_t t = 0; b->tb && t < b->tenants; t++) {
		free(b->tb[t].buf);
		free(b->tb[t].id_off);
	}
	free(b->tb);
	gen_free(&b->g);
}

static void req_free(struct req *r)
{
	if (r) {
		free(r->buf);
		free(r->id_off);
		free(r);
	}
}

/* Invariant 1: a fresh 64-bit value into each id, version/variant kept. */
static void req_patch_ids(struct worker *w, struct req *r)
{
	uint64_t stride = w->L->cfg.threads;
	for (uint32_t k = 0; k < r->events; k++) {
		uint64_t uid = w->id_seq++ * stride + w->index;
		uint64_t v = mix64(w->L->run_id + uid);
		uint8_t *p = r->buf + r->id_off[k];
		memcpy(p, &v, 6);
		p[9] = (uint8_t)(v >> 48);
		p[10] = (uint8_t)(v >> 56);
	}
}

/* ---- one connection: nghttp2 callbacks ----------------------------------- */

static void call_finish(struct call *k, uint32_t h2_error);

static ssize_t on_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud)
{
	struct conn *c = ud;
	size_t room = OUT_BYTES - c->out_len;
	if (room == 0)
		return NGHTTP2_ERR_WOULDBLOCK;
	size_t n = FMT_MIN(len, room);
	memcpy(c->out + c->out_len, data, n);
	c->out_len += n;
	return (ssize_t)n;
}

/* DATA frames: nghttp2 gives the 9-byte header, the bytes come from the
 * request itself (NGHTTP2_DATA_FLAG_NO_COPY). */
static int on_send_data(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd,
			size_t length, nghttp2_data_source *src, void *ud)
{
	struct conn *c = ud;
	struct call *k = src->ptr;
	ASSERT(frame->data.padlen == 0 && k->sent + length <= k->r->len);
	if (OUT_BYTES - c->out_len < 9 + length)
		return NGHTTP2_ERR_WOULDBLOCK;
	memcpy(c->out + c->out_len, framehd, 9);
	memcpy(c->out + c->out_len + 9, k->r->buf + k->sent, length);
	c->out_len += 9 + length;
	k->sent += (uint32_t)length;
	return 0;
}

static ssize_t read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
			 uint32_t *flags, nghttp2_data_source *src, void *ud)
{
	struct call *k = src->ptr;
	size_t n = FMT_MIN(length, (size_t)(k->r->len - k->read_off));
	k->read_off += (uint32_t)n;
	*flags |= NGHTTP2_DATA_FLAG_NO_COPY;
	if (k->read_off == k->r->len)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
	struct call *k = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
	if (!k || !k->active || frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
		int v = valuelen == 0 || valuelen > 2 ? GRPC_STATUS_COUNT : 0;
		for (size_t i = 0; i < valuelen && v < GRPC_STATUS_COUNT; i++)
			v = value[i] >= '0' && value[i] <= '9' ? v * 10 + (value[i] - '0') : GRPC_STATUS_COUNT;
		k->grpc_status = v < GRPC_STATUS_COUNT ? v : GRPC_UNKNOWN;
	} else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
		snprintf(k->msg, sizeof(k->msg), "%.*s", (int)FMT_MIN(valuelen, sizeof(k->msg) - 1),
			 (const char *)value);
	}
	return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t stream_id, const uint8_t *data,
			 size_t len, void *ud)
{
	struct call *k = nghttp2_session_get_stream_user_data(s, stream_id);
	if (!k || !k->active || k->bad_resp)
		return 0;
	while (len > 0) {
		struct gf_message m;
		enum gf_result rc = gf_reader_feed(&k->rd, &data, &len, &m);
		if (rc == GF_NEED_MORE)
			break;
		if (rc != GF_MESSAGE || m.compressed || k->have_resp) {
			if (rc == GF_MESSAGE)
				free(m.data);
			k->bad_resp = true;
			snprintf(k->msg, sizeof(k->msg), "malformed response (framing %d)", (int)rc);
			nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_INTERNAL_ERROR);
			return 0;
		}
		Hodei__Audit__V1__AppendResponse *resp =
			hodei__audit__v1__append_response__unpack(NULL, m.len, m.data);
		free(m.data);
		if (!resp) {
			k->bad_resp = true;
			snprintf(k->msg, sizeof(k->msg), "undecodable AppendResponse");
			return 0;
		}
		k->have_resp = true;
		k->accepted = resp->accepted;
		k->duplicates = resp->duplicates;
		hodei__audit__v1__append_response__free_unpacked(resp, NULL);
	}
	return 0;
}

static void conn_update_slots(struct conn *c)
{
	uint32_t peer = nghttp2_session_get_remote_settings(c->s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
	c->slots = FMT_MIN(c->slots_alloc, peer);
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
	struct conn *c = ud;
	if (frame->hd.type == NGHTTP2_SETTINGS && !(frame->hd.flags & NGHTTP2_FLAG_ACK)) {
		c->ready = true;
		conn_update_slots(c);
	} else if (frame->hd.type == NGHTTP2_GOAWAY) {
		c->goaway = true;
	}
	return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code, void *ud)
{
	struct call *k = nghttp2_session_get_stream_user_data(s, stream_id);
	if (k && k->active && !k->c->dead)
		call_finish(k, error_code);
	return 0;
}

/* ---- one connection: I/O ----------------------------------------------------- */

/* Writes what nghttp2 has to send until the socket would block or there
 * is nothing left; at most FLUSH_ROUNDS send()s per call. Returns 0 or
 * -errno / a negative nghttp2 code. */
static int conn_flush(struct conn *c)
{
	for (int round = 0; round < FLUSH_ROUNDS; round++) {
		if (c->out_off < c->out_len) {
			ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN || errno == EWOULDBLOCK) {
					c->want_out = true;
					return 0;
				}
				return -errno;
			}
			c->out_off += (size_t)n;
			if (c->out_off < c->out_len)
				continue;
			c->out_off = c->out_len = 0;
		}
		if (!nghttp2_session_want_write(c->s)) {
			c->want_out = false;
			return 0;
		}
		int rv = nghttp2_session_send(c->s);
		if (rv != 0)
			return rv;
		if (c->out_len == 0) {
			c->want_out = false; /* only flow-controlled DATA left */
			return 0;
		}
	}
	c->want_out = true;
	return 0;
}

/* Reads and feeds nghttp2, at most READS_PER_TICK recv()s. Returns 0,
 * -ECONNRESET when the server closed the connection, -errno, or a
 * negative nghttp2 code. */
static int conn_read(struct conn *c, uint8_t *buf)
{
	for (int i = 0; i < READS_PER_TICK; i++) {
		ssize_t n = recv(c->fd, buf, IN_BYTES, 0);
		if (n == 0)
			return -ECONNRESET;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
		}
		ssize_t rv = nghttp2_session_mem_recv(c->s, buf, (size_t)n);
		if (rv < 0)
			return (int)rv;
		if ((size_t)n < IN_BYTES)
			return 0;
	}
	return 0;
}

static const char *conn_strerror(int rc)
{
	if (rc == -ECONNRESET)
		return "the server closed the connection";
	return rc <= -500 ? nghttp2_strerror(rc) : strerror(-rc);
}

static void stats_error(struct stats *st, int code, const char *text)
{
	st->errors[code]++;
	if (!st->err_text[0]) {
		st->err_code = code;
		snprintf(st->err_text, sizeof(st->err_text), "%s", text[0] ? text : "(no message)");
	}
}

/* The connection is gone: every call on it fails as UNAVAILABLE. */
static void conn_fail(struct conn *c, int rc)
{
	if (c->dead)
		return;
	c->dead = true;
	fprintf(stderr, "hodei-bench-load: connection %u: %s\n", c->index, conn_strerror(rc));
	for (uint32_t i = 0; i < c->slots_alloc; i++) {
		struct call *k = &c->calls[i];
		if (!k->active)
			continue;
		k->grpc_status = -1;
		snprintf(k->msg, sizeof(k->msg), "connection lost: %s", conn_strerror(rc));
		call_finish(k, NGHTTP2_REFUSED_STREAM);
	}
	if (c->w && c->w->ep >= 0)
		epoll_ctl(c->w->ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
}

static void conn_free(struct conn *c)
{
	c->dead = true; /* no callback may finish a call from here on */
	if (c->s)
		nghttp2_session_del(c->s);
	if (c->fd >= 0)
		close(c->fd);
	for (uint32_t i = 0; c->calls && i < c->slots_alloc; i++)
		gf_reader_free(&c->calls[i].rd);
	free(c->calls);
	free(c->free_calls);
	free(c->out);
}

/* ---- calls ----------------------------------------------------------------- */

static bool retryable(int code)
{
	return code == GRPC_UNAVAILABLE || code == GRPC_RESOURCE_EXHAUSTED;
}

/* Runs from on_stream_close (inside nghttp2) or conn_fail. */
static void call_finish(struct call *k, uint32_t h2_error)
{
	struct conn *c = k->c;
	struct worker *w = c->w;
	struct load *L = w->L;
	struct stats *st = &w->st;
	struct req *r = k->r;
	int64_t now = mono_ns();
	int code = k->grpc_status;
	bool transport = false;
	if (code < 0) {
		/* No grpc-status: made up the way gRPC clients do it. */
		transport = true;
		code = h2_error == NGHTTP2_REFUSED_STREAM ? GRPC_UNAVAILABLE
		       : h2_error == NGHTTP2_CANCEL ? GRPC_CANCELLED
		       : h2_error == NGHTTP2_ENHANCE_YOUR_CALM ? GRPC_RESOURCE_EXHAUSTED
							  : GRPC_INTERNAL;
		if (!k->msg[0])
			snprintf(k->msg, sizeof(k->msg), "stream closed without grpc-status (HTTP/2 error %u)",
				 h2_error);
	} else if (code == GRPC_OK && (!k->have_resp || k->bad_resp)) {
		code = GRPC_INTERNAL;
		if (!k->msg[0])
			snprintf(k->msg, sizeof(k->msg), "grpc-status 0 without an AppendResponse");
	}
	bool in_window = k->due_ns >= L->win_start_ns && k->due_ns < L->win_end_ns;
	bool retry = false;
	if (code == GRPC_OK) {
		uint64_t n = (uint64_t)k->accepted + k->duplicates;
		if (n != r->events)
			st->count_mismatch++;
		st->req_acked_all++;
		st->ev_acked_all += n;
		st->ev_accepted_all += k->accepted;
		st->ev_dup_all += k->duplicates;
		st->last_ack_ns = now;
		if (now >= L->win_start_ns && now < L->win_end_ns) {
			st->req_acked++;
			st->ev_acked += n;
			st->ev_accepted += k->accepted;
			st->ev_dup += k->duplicates;
			st->msg_bytes += r->len - GF_PREFIX_BYTES;
		}
		if (in_window)
			hist_add(&st->lat, (uint64_t)(now - k->due_ns));
	} else {
		st->req_failed++;
		st->ev_failed += r->events;
		st->transport_failures += transport;
		stats_error(st, code, k->msg);
		retry = L->cfg.mode == MODE_FILL && retryable(code) && r->retries < RETRIES_MAX;
	}
	gf_reader_free(&k->rd);
	k->active = false;
	k->r = NULL;
	r->busy = false;
	ASSERT(c->active > 0 && c->free_n < c->slots_alloc);
	c->active--;
	c->free_calls[c->free_n++] = (uint32_t)(k - c->calls);
	if (L->cfg.mode != MODE_FILL)
		return;
	if (retry) {
		r->retries++;
		st->retries++;
		r->not_before_ns = now + RETRY_DELAY_NS;
		r->next = NULL;
		if (w->retry_tail)
			w->retry_tail->next = r;
		else
			w->retry_head = r;
		w->retry_tail = r;
		return;
	}
	if (code != GRPC_OK)
		st->gave_up += r->events;
	req_free(r);
}

/* Starts request r on connection c, due at due_ns. Returns false when
 * nghttp2 refused it (the connection is then failed). */
static bool call_start(struct worker *w, struct conn *c, struct req *r, int64_t due_ns, int64_t now)
{
	struct load *L = w->L;
	ASSERT(c->free_n > 0 && !r->busy);
	struct call *k = &c->calls[c->free_calls[c->free_n - 1]];
	ASSERT(!k->active);
	memset(k, 0, sizeof(*k));
	k->c = c;
	k->r = r;
	k->due_ns = due_ns;
	k->start_ns = now;
	k->grpc_status = -1;
	gf_reader_init(&k->rd, RESPONSE_MAX);
#define NV(n, v, f) { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), \
		      NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE | (f) }
	const nghttp2_nv nv[] = {
		NV(":method", "POST", 0),
		NV(":scheme", "http", 0),
		NV(":path", APPEND_PATH, 0),
		NV(":authority", L->authority, 0),
		NV("content-type", "application/grpc", 0),
		NV("te", "trailers", 0),
		NV("user-agent", "hodei-bench-load", 0),
		NV("authorization", L->auth_value, NGHTTP2_NV_FLAG_NO_INDEX),
		NV("x-hodei-tenant", L->names[r->tenant], 0),
	};
#undef NV
	nghttp2_data_provider dp = { .source.ptr = k, .read_callback = read_body };
	int32_t id = nghttp2_submit_request(c->s, NULL, nv, FMT_ARRAY_LEN(nv), &dp, k);
	if (id < 0) {
		gf_reader_free(&k->rd);
		conn_fail(c, id);
		return false;
	}
	k->stream_id = id;
	k->active = true;
	c->free_n--;
	c->active++;
	c->want_out = true;
	r->busy = true;
	struct stats *st = &w->st;
	st->req_started++;
	if (due_ns >= L->win_start_ns && due_ns < L->win_end_ns) {
		hist_add(&st->delay, (uint64_t)(now - due_ns));
		st->late_starts += now - due_ns > LATE_NS;
	}
	return true;
}

/* ---- the worker loop --------------------------------------------------------- */

static struct conn *pick_conn(struct worker *w)
{
	for (uint32_t i = 0; i < w->nconns; i++) {
		uint32_t j = (w->conn_cursor + i) % w->nconns;
		struct conn *c = &w->conns[j];
		if (!c->dead && !c->goaway && c->ready && c->active < c->slots && c->free_n > 0) {
			w->conn_cursor = (j + 1) % w->nconns;
			return c;
		}
	}
	return NULL;
}

static struct req *next_pool_req(struct worker *w)
{
	for (uint32_t i = 0; i < w->nreqs; i++) {
		struct req *r = w->reqs[w->cursor];
		w->cursor = w->cursor + 1 == w->nreqs ? 0 : w->cursor + 1;
		if (!r->busy)
			return r;
		w->st.busy_skips++;
	}
	/* Unreachable: a slice holds more requests than stream slots (invariant 2). */
	ASSERT(false);
	return NULL;
}

static int64_t due_of(const struct worker *w, uint64_t events_due)
{
	return w->L->t0_ns + (int64_t)((double)events_due * w->ns_per_event);
}

/* Starts what may start now; returns when the loop should look again
 * (INT64_MAX: only when a call finishes). */
static int64_t pump(struct worker *w, int64_t now)
{
	struct load *L = w->L;
	switch (L->cfg.mode) {
	case MODE_MAX:
		for (struct conn *c; now < L->win_end_ns && (c = pick_conn(w));) {
			struct req *r = next_pool_req(w);
			req_patch_ids(w, r);
			if (call_start(w, c, r, now, now))
				w->events_due += r->events;
		}
		return L->win_end_ns;
	case MODE_RATE:
		for (;;) {
			int64_t due = due_of(w, w->events_due);
			if (due >= L->win_end_ns)
				return L->win_end_ns;
			if (due > now)
				return due;
			struct conn *c = pick_conn(w);
			if (!c)
				return INT64_MAX; /* a late start: waits for a free slot */
			struct req *r = next_pool_req(w);
			req_patch_ids(w, r);
			if (call_start(w, c, r, due, now))
				w->events_due += r->events;
		}
	case MODE_FILL:
		for (struct conn *c; (c = pick_conn(w));) {
			struct req *r = w->retry_head;
			if (r && r->not_before_ns <= now) {
				w->retry_head = r->next;
				if (!w->retry_head)
					w->retry_tail = NULL;
			} else if (w->fill_done) {
				return r ? r->not_before_ns : INT64_MAX;
			} else {
				int rc = batcher_next(w->fill, &r);
				if (rc == 1) {
					w->fill_done = true;
					continue;
				}
				ASSERT(rc == 0); /* out of memory while filling: nothing sensible to do */
			}
			if (!call_start(w, c, r, now, now)) {
				/* Not sent: first in line again. */
				r->next = w->retry_head;
				r->not_before_ns = now;
				w->retry_head = r;
				if (!w->retry_tail)
					w->retry_tail = r;
			}
		}
		return w->retry_head ? w->retry_head->not_before_ns : INT64_MAX;
	}
	return INT64_MAX;
}

/* Open loop, at the end: requests due before the window closed that never
 * got a slot. */
static void count_not_started(struct worker *w)
{
	uint64_t ev = w->events_due;
	uint32_t cur = w->cursor;
	while (due_of(w, ev) < w->L->win_end_ns) {
		ev += w->reqs[cur]->events;
		cur = cur + 1 == w->nreqs ? 0 : cur + 1;
		w->st.not_started++;
	}
}

/* Whether the loop still starts calls. Open loop: every request due
 * before the window closes gets started, however late (its latency runs
 * from its due time), unless it still has no slot DRAIN_NS after the end. */
static bool sending(const struct worker *w, int64_t now)
{
	const struct load *L = w->L;
	switch (L->cfg.mode) {
	case MODE_FILL: return !w->fill_done || w->retry_head;
	case MODE_RATE: return due_of(w, w->events_due) < L->win_end_ns && now < L->win_end_ns + DRAIN_NS;
	case MODE_MAX: break;
	}
	return now < L->win_end_ns;
}

static uint32_t calls_active(const struct worker *w)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < w->nconns; i++)
		n += w->conns[i].dead ? 0 : w->conns[i].active;
	return n;
}

static void conn_set_events(struct worker *w, struct conn *c)
{
	uint32_t want = EPOLLIN | (c->want_out ? EPOLLOUT : 0);
	if (c->dead || want == c->epoll_events)
		return;
	struct epoll_event ev = { .events = want, .data.ptr = c };
	if (epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev) == 0)
		c->epoll_events = want;
	else
		conn_fail(c, -errno);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct load *L = w->L;
	struct epoll_event evs[64];
	bool stopped = false;
	int64_t drain_end = INT64_MAX;
	for (;;) {
		int64_t now = mono_ns();
		int64_t wake = INT64_MAX;
		if (sending(w, now)) {
			wake = pump(w, now); /* --fill: again when a failed call queued a retry */
		} else if (!stopped) {
			stopped = true;
			drain_end = now + DRAIN_NS;
			if (L->cfg.mode == MODE_RATE)
				count_not_started(w);
		}
		uint32_t live = 0;
		for (uint32_t i = 0; i < w->nconns; i++) {
			struct conn *c = &w->conns[i];
			if (c->dead)
				continue;
			int rc = conn_flush(c);
			if (rc != 0)
				conn_fail(c, rc);
			else
				conn_set_events(w, c);
			live += !c->dead;
		}
		if (live == 0) {
			w->all_dead = true;
			break;
		}
		if (!sending(w, now)) {
			if (calls_active(w) == 0)
				break;
			if (now >= drain_end) {
				w->st.unfinished += calls_active(w);
				break;
			}
			wake = FMT_MIN(wake, drain_end);
		}
		int64_t wait_ns = FMT_MIN(TICK_MAX_NS, FMT_MAX(0, wake - now));
		struct timespec ts = { wait_ns / NS_PER_S, wait_ns % NS_PER_S };
		int n = epoll_pwait2(w->ep, evs, FMT_ARRAY_LEN(evs), &ts, NULL);
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			if (c->dead || !(evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
				continue;
			int rc = conn_read(c, w->inbuf);
			if (rc != 0)
				conn_fail(c, rc);
		}
	}
	/* Calls still open at the end (drain timed out, connections lost). */
	for (uint32_t i = 0; i < w->nconns; i++) {
		struct conn *c = &w->conns[i];
		for (uint32_t j = 0; j < c->slots_alloc && !c->dead; j++)
			if (c->calls[j].active)
				c->calls[j].r->busy = false;
	}
	return NULL;
}

/* ---- set-up: connections ----------------------------------------------------- */

static int conn_init(struct load *L, struct conn *c, struct worker *w, uint32_t index)
{
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->w = w;
	c->index = index;
	c->slots_alloc = L->cfg.streams;
	c->calls = calloc(c->slots_alloc, sizeof(*c->calls));
	c->free_calls = calloc(c->slots_alloc, sizeof(*c->free_calls));
	c->out = malloc(OUT_BYTES);
	if (!c->calls || !c->free_calls || !c->out)
		return FMT_E_NOMEM;
	for (uint32_t i = 0; i < c->slots_alloc; i++)
		c->free_calls[c->free_n++] = c->slots_alloc - 1 - i;
	return 0;
}

/* A non-blocking TCP connection to one of L->addrs within the timeout.
 * Returns the fd or -errno. */
static int tcp_connect(const struct load *L)
{
	int err = -EHOSTUNREACH;
	for (const struct addrinfo *a = L->addrs; a; a = a->ai_next) {
		int fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			err = -errno;
			continue;
		}
		if (connect(fd, a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
			err = -errno;
			close(fd);
			continue;
		}
		struct pollfd p = { .fd = fd, .events = POLLOUT };
		int so = 0;
		socklen_t sl = sizeof(so);
		int pr = poll(&p, 1, CONNECT_TIMEOUT_MS);
		if (pr == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl) == 0 && so == 0) {
			int one = 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			return fd;
		}
		err = pr == 0 ? -ETIMEDOUT : so ? -so : -errno;
		close(fd);
	}
	return err;
}

/* Connects, sends the preface and waits for the server's SETTINGS.
 * Returns 0, or -1 with err set. */
static int conn_open(struct load *L, struct conn *c, char *err, size_t cap)
{
	int fd = tcp_connect(L);
	if (fd < 0) {
		snprintf(err, cap, "cannot connect to %s: %s", L->cfg.target, strerror(-fd));
		return -1;
	}
	c->fd = fd;
	nghttp2_session_callbacks *cb;
	if (nghttp2_session_callbacks_new(&cb) != 0) {
		snprintf(err, cap, "out of memory");
		return -1;
	}
	nghttp2_session_callbacks_set_send_callback(cb, on_send);
	nghttp2_session_callbacks_set_send_data_callback(cb, on_send_data);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
	int rv = nghttp2_session_client_new(&c->s, cb, c);
	nghttp2_session_callbacks_del(cb);
	if (rv != 0) {
		snprintf(err, cap, "nghttp2: %s", nghttp2_strerror(rv));
		return -1;
	}
	const nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1u << 20 },
	};
	nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, iv, FMT_ARRAY_LEN(iv));
	int64_t deadline = mono_ns() + (int64_t)CONNECT_TIMEOUT_MS * 1000000;
	uint8_t *buf = malloc(IN_BYTES);
	if (!buf) {
		snprintf(err, cap, "out of memory");
		return -1;
	}
	int rc = 0;
	while (rc == 0 && !c->ready) {
		if ((rc = conn_flush(c)) != 0)
			break;
		int64_t left_ms = (deadline - mono_ns()) / 1000000;
		struct pollfd p = { .fd = fd, .events = POLLIN | (c->want_out ? POLLOUT : 0) };
		if (left_ms <= 0 || poll(&p, 1, (int)left_ms) == 0) {
			rc = -ETIMEDOUT;
			break;
		}
		if (p.revents & (POLLIN | POLLERR | POLLHUP))
			rc = conn_read(c, buf);
	}
	free(buf);
	if (rc != 0) {
		snprintf(err, cap, "%s did not answer the HTTP/2 handshake: %s", L->cfg.target,
			 rc == -ETIMEDOUT ? "timed out" : conn_strerror(rc));
		return -1;
	}
	return 0;
}

static int resolve(struct load *L, char *err, size_t cap)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	int rc = getaddrinfo(L->cfg.host, L->cfg.port, &hints, &L->addrs);
	if (rc != 0) {
		snprintf(err, cap, "cannot resolve %s: %s", L->cfg.host, gai_strerror(rc));
		return -1;
	}
	return 0;
}

/* ---- set-up: the pool -------------------------------------------------------- */

static int pool_build(struct load *L)
{
	struct batcher b;
	int64_t t = mono_ns();
	int rc = batcher_init(&b, &L->cfg, L->cfg.pool_events, L->names);
	uint32_t cap = 1024;
	L->pool = rc == 0 ? malloc(cap * sizeof(*L->pool)) : NULL;
	if (!L->pool)
		rc = FMT_E_NOMEM;
	while (rc == 0) {
		struct req *r;
		rc = batcher_next(&b, &r);
		if (rc != 0)
			break;
		if (L->pool_reqs == cap) {
			struct req **np = realloc(L->pool, 2 * cap * sizeof(*np));
			if (!np) {
				req_free(r);
				rc = FMT_E_NOMEM;
				break;
			}
			L->pool = np;
			cap *= 2;
		}
		L->pool[L->pool_reqs++] = r;
		L->pool_events += r->events;
		L->pool_bytes += r->len - GF_PREFIX_BYTES;
	}
	batcher_free(&b);
	L->pool_build_s = (double)(mono_ns() - t) / 1e9;
	ASSERT(rc < 0 || L->pool_events == L->cfg.pool_events);
	return rc == 1 ? 0 : rc;
}

/* ---- flags ----------------------------------------------------------------- */

static void usage(FILE *f)
{
	fputs("usage: hodei-bench-load --key KEY [options]\n"
	      "  --target HOST:PORT   hodei-auditd's gRPC address (127.0.0.1:50051)\n"
	      "  --key KEY            an admin API key (or HODEI_API_KEY): events go to many tenants\n"
	      "  --connections N      HTTP/2 connections, 1..1024 (4)\n"
	      "  --streams N          concurrent streams per connection, 1..1024 (32; at most the\n"
	      "                       server's SETTINGS_MAX_CONCURRENT_STREAMS)\n"
	      "  --threads N          event loops, each with its own connections, 1..64 (1)\n"
	      "  --batch N            events per Append request, all of one tenant, 1..10000 (100)\n"
	      "  --rate R             open loop: R events/s, latency from each request's due time\n"
	      "  --max                closed loop: every free stream sends at once (also --rate 0;\n"
	      "                       the default)\n"
	      "  --seconds D          measured duration: 10, 2.5s, 500ms (10s)\n"
	      "  --warmup W           unmeasured time before it (1s)\n"
	      "  --pool-events N      events pre-encoded before the run and sent cyclically with\n"
	      "                       fresh ids (1000000)\n"
	      "  --fill N             send exactly the generator's first N events once, then exit\n"
	      "  --seed S             generator seed (1)\n"
	      "  --tenants T          generator tenants, Zipf-skewed, 1..100000 (1000)\n"
	      "  --step-ns X          generator mean gap between events' times, 2..4000000000 (1000)\n"
	      "Prints a summary on stderr and one JSON object on stdout.\n",
	      f);
}

static bool parse_u(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	uint64_t v;
	if (units_parse_u64(s, &v) != 0 || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

static bool parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
	uint64_t v;
	if (!parse_u(s, lo, hi, &v))
		return false;
	*out = (uint32_t)v;
	return true;
}

static bool parse_target(struct load_config *c, const char *t)
{
	const char *colon = strrchr(t, ':');
	if (!colon || colon == t || !colon[1] || strlen(colon + 1) >= sizeof(c->port))
		return false;
	const char *h = t;
	size_t hl = (size_t)(colon - t);
	if (h[0] == '[') {
		if (hl < 3 || h[hl - 1] != ']')
			return false;
		h++;
		hl -= 2;
	}
	uint64_t port;
	if (hl >= sizeof(c->host) || !parse_u(colon + 1, 1, 65535, &port))
		return false;
	memcpy(c->host, h, hl);
	c->host[hl] = 0;
	snprintf(c->port, sizeof(c->port), "%" PRIu64, port);
	c->target = t;
	return true;
}

static bool parse_option(struct load_config *c, int opt, const char *arg)
{
	uint64_t v;
	switch (opt) {
	case 'T': return parse_target(c, arg);
	case 'k': c->key = arg; return true;
	case 'c': return parse_u32(arg, 1, CONNECTIONS_MAX, &c->connections);
	case 's': return parse_u32(arg, 1, SLOTS_MAX, &c->streams);
	case 'n': return parse_u32(arg, 1, THREADS_MAX, &c->threads);
	case 'b': return parse_u32(arg, 1, BATCH_MAX, &c->batch);
	case 'r': c->rate_set = true; return parse_u(arg, 0, RATE_MAX, &c->rate_eps);
	case 'm': c->max = true; return true;
	case 'd': return units_parse_duration_ns(arg, NS_PER_S, &c->seconds_ns) == 0 &&
			 c->seconds_ns > 0 && c->seconds_ns <= 86400 * NS_PER_S;
	case 'w': return units_parse_duration_ns(arg, NS_PER_S, &c->warmup_ns) == 0 &&
			 c->warmup_ns <= 3600 * NS_PER_S;
	case 'p': return parse_u(arg, 1, POOL_EVENTS_MAX, &c->pool_events);
	case 'f': return parse_u(arg, 1, FILL_MAX, &c->fill);
	case 'S': return parse_u(arg, 0, UINT64_MAX, &c->seed);
	case 't': return parse_u32(arg, 1, TENANTS_MAX, &c->tenants);
	case 'x':
		if (!parse_u(arg, 2, 4000000000ull, &v))
			return false;
		c->step_ns = (int64_t)v;
		return true;
	default: return false;
	}
}

/* Returns 0, 1 for --help, or -1 (message printed). */
static int parse_args(int argc, char **argv, struct load_config *c)
{
	static const struct option opts[] = {
		{ "target", required_argument, NULL, 'T' },    { "key", required_argument, NULL, 'k' },
		{ "connections", required_argument, NULL, 'c' }, { "streams", required_argument, NULL, 's' },
		{ "threads", required_argument, NULL, 'n' },   { "batch", required_argument, NULL, 'b' },
		{ "rate", required_argument, NULL, 'r' },      { "max", no_argument, NULL, 'm' },
		{ "seconds", required_argument, NULL, 'd' },   { "warmup", required_argument, NULL, 'w' },
		{ "pool-events", required_argument, NULL, 'p' }, { "fill", required_argument, NULL, 'f' },
		{ "seed", required_argument, NULL, 'S' },      { "tenants", required_argument, NULL, 't' },
		{ "step-ns", required_argument, NULL, 'x' },   { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	*c = (struct load_config){ .connections = 4, .streams = 32, .threads = 1, .batch = 100,
				   .tenants = GEN_TENANTS_DEFAULT, .seconds_ns = 10 * NS_PER_S,
				   .warmup_ns = NS_PER_S, .pool_events = POOL_EVENTS_DEFAULT, .seed = 1,
				   .step_ns = GEN_STEP_DEFAULT_NS };
	parse_target(c, "127.0.0.1:50051");
	int opt, li = -1;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "", opts, &li)) != -1) {
		if (opt == 'h') {
			usage(stdout);
			return 1;
		}
		if (opt == '?') {
			fprintf(stderr, "hodei-bench-load: unknown option or missing value: %s\n",
				argv[optind - 1]);
			usage(stderr);
			return -1;
		}
		if (!parse_option(c, opt, optarg)) {
			fprintf(stderr, "hodei-bench-load: bad value for --%s: %s\n", opts[li].name,
				optarg ? optarg : "");
			usage(stderr);
			return -1;
		}
	}
	const char *why = NULL;
	if (optind < argc)
		why = "unexpected argument";
	else if (c->max && c->rate_eps > 0)
		why = "--max and --rate R > 0 contradict each other";
	else if (c->fill && (c->max || c->rate_eps > 0))
		why = "--fill runs a closed loop: no --rate or --max";
	else if (c->fill && c->threads > 1)
		why = "--fill runs on one thread";
	else if (c->threads > c->connections)
		why = "--threads must not exceed --connections";
	if (why) {
		fprintf(stderr, "hodei-bench-load: %s%s%s\n", why, optind < argc ? ": " : "",
			optind < argc ? argv[optind] : "");
		usage(stderr);
		return -1;
	}
	if (!c->key)
		c->key = getenv("HODEI_API_KEY");
	if (!c->key || !c->key[0] || strlen(c->key) > 512 || strpbrk(c->key, "\r\n")) {
		fprintf(stderr, "hodei-bench-load: an API key is needed (--key or HODEI_API_KEY)\n");
		usage(stderr);
		return -1;
	}
	c->mode = c->fill ? MODE_FILL : c->rate_eps > 0 ? MODE_RATE : MODE_MAX;
	return 0;
}

/* ---- results --------------------------------------------------------------- */

static const char *mode_name(enum mode m)
{
	return m == MODE_MAX ? "max" : m == MODE_RATE ? "rate" : "fill";
}

static void stats_merge(struct stats *a, const struct stats *b)
{
	a->req_acked += b->req_acked;
	a->ev_acked += b->ev_acked;
	a->ev_accepted += b->ev_accepted;
	a->ev_dup += b->ev_dup;
	a->msg_bytes += b->msg_bytes;
	hist_merge(&a->lat, &b->lat);
	hist_merge(&a->delay, &b->delay);
	a->late_starts += b->late_starts;
	a->req_started += b->req_started;
	a->req_acked_all += b->req_acked_all;
	a->ev_acked_all += b->ev_acked_all;
	a->ev_accepted_all += b->ev_accepted_all;
	a->ev_dup_all += b->ev_dup_all;
	a->req_failed += b->req_failed;
	a->ev_failed += b->ev_failed;
	for (int i = 0; i < GRPC_STATUS_COUNT; i++)
		a->errors[i] += b->errors[i];
	a->transport_failures += b->transport_failures;
	a->count_mismatch += b->count_mismatch;
	a->not_started += b->not_started;
	a->unfinished += b->unfinished;
	a->busy_skips += b->busy_skips;
	a->retries += b->retries;
	a->gave_up += b->gave_up;
	a->last_ack_ns = FMT_MAX(a->last_ack_ns, b->last_ack_ns);
	if (!a->err_text[0] && b->err_text[0]) {
		a->err_code = b->err_code;
		memcpy(a->err_text, b->err_text, sizeof(a->err_text));
	}
}

static double us(uint64_t ns)
{
	return (double)ns / 1e3;
}

static void json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

static void json_hist(FILE *f, const char *name, const struct hist *h)
{
	fprintf(f, "\"%s\":{\"samples\":%" PRIu64 ",\"min\":%.1f,\"mean\":%.1f,\"p50\":%.1f,"
		   "\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f}",
		name, h->n, us(h->min), h->n ? us(h->sum) / (double)h->n : 0, us(hist_quantile(h, 0.5)),
		us(hist_quantile(h, 0.9)), us(hist_quantile(h, 0.99)), us(hist_quantile(h, 0.999)),
		us(h->max));
}

struct outcome {
	double window_s, cpu_s, cpu_all_s;
	double loadavg_start, loadavg_end;  /* the machine's, 1 minute */
	struct stats st;
};

static double loadavg_1m(void)
{
	double v = 0;
	FILE *f = fopen("/proc/loadavg", "r");
	if (f) {
		if (fscanf(f, "%lf", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v;
}

static void json_print(FILE *f, const struct load *L, const struct outcome *o)
{
	const struct load_config *c = &L->cfg;
	const struct stats *st = &o->st;
	double ws = o->window_s > 0 ? o->window_s : 1e-9;
	fprintf(f, "{\"tool\":\"hodei-bench-load\",\"mode\":\"%s\",\"target\":", mode_name(c->mode));
	json_string(f, c->target);
	fprintf(f, ",\"offered_rate_eps\":%" PRIu64 ",\"seconds\":%.3f,\"warmup_s\":%.3f,", c->rate_eps,
		o->window_s, c->mode == MODE_FILL ? 0.0 : (double)c->warmup_ns / 1e9);
	fprintf(f, "\"connections\":%u,\"streams\":%u,\"streams_effective\":%u,\"threads\":%u,"
		   "\"batch\":%u,\"tenants\":%u,\"seed\":%" PRIu64 ",\"step_ns\":%" PRId64 ",",
		c->connections, c->streams, L->streams_effective, c->threads, c->batch, c->tenants,
		c->seed, c->step_ns);
	fprintf(f, "\"pool_events\":%" PRIu64 ",\"pool_requests\":%u,\"pool_bytes\":%" PRIu64
		   ",\"pool_build_s\":%.3f,\"fill\":%" PRIu64 ",",
		L->pool_events, L->pool_reqs, L->pool_bytes, L->pool_build_s, c->fill);
	fprintf(f, "\"events_acked\":%" PRIu64 ",\"events_accepted\":%" PRIu64
		   ",\"events_duplicate\":%" PRIu64 ",\"requests_acked\":%" PRIu64 ",",
		st->ev_acked, st->ev_accepted, st->ev_dup, st->req_acked);
	fprintf(f, "\"events_per_s\":%.1f,\"requests_per_s\":%.1f,\"mb_per_s\":%.3f,"
		   "\"protobuf_bytes\":%" PRIu64 ",",
		(double)st->ev_acked / ws, (double)st->req_acked / ws, (double)st->msg_bytes / 1e6 / ws,
		st->msg_bytes);
	json_hist(f, "latency_us", &st->lat);
	fputc(',', f);
	json_hist(f, "start_delay_us", &st->delay);
	fprintf(f, ",\"late_starts\":%" PRIu64 ",\"not_started\":%" PRIu64 ",\"unfinished\":%" PRIu64
		   ",\"requests_started\":%" PRIu64 ",\"requests_failed\":%" PRIu64
		   ",\"events_failed\":%" PRIu64 ",\"transport_failures\":%" PRIu64
		   ",\"count_mismatches\":%" PRIu64 ",\"retries\":%" PRIu64
		   ",\"pool_busy_skips\":%" PRIu64 ",\"errors\":{",
		st->late_starts, st->not_started, st->unfinished, st->req_started, st->req_failed,
		st->ev_failed, st->transport_failures, st->count_mismatch, st->retries, st->busy_skips);
	bool first = true;
	for (int i = 0; i < GRPC_STATUS_COUNT; i++) {
		if (!st->errors[i])
			continue;
		fprintf(f, "%s\"%s\":%" PRIu64, first ? "" : ",", grpc_status_name(i), st->errors[i]);
		first = false;
	}
	fputs("},\"first_error\":", f);
	json_string(f, st->err_text);
	fprintf(f, ",\"events_acked_total\":%" PRIu64 ",\"events_accepted_total\":%" PRIu64
		   ",\"events_duplicate_total\":%" PRIu64 ",\"requests_acked_total\":%" PRIu64 ",",
		st->ev_acked_all, st->ev_accepted_all, st->ev_dup_all, st->req_acked_all);
	fprintf(f, "\"client_cpu_s\":%.3f,\"client_cpu_cores\":%.3f,"
		   "\"client_cpu_us_per_event\":%.3f,\"client_cpu_total_s\":%.3f,"
		   "\"loadavg_1m_start\":%.2f,\"loadavg_1m_end\":%.2f,\"nproc\":%ld}\n",
		o->cpu_s, o->cpu_s / ws,
		st->ev_acked ? o->cpu_s * 1e6 / (double)st->ev_acked : 0, o->cpu_all_s,
		o->loadavg_start, o->loadavg_end, sysconf(_SC_NPROCESSORS_ONLN));
}

static void summary_print(FILE *f, const struct load *L, const struct outcome *o)
{
	const struct load_config *c = &L->cfg;
	const struct stats *st = &o->st;
	double ws = o->window_s > 0 ? o->window_s : 1e-9;
	fprintf(f, "hodei-bench-load: %s", mode_name(c->mode));
	if (c->mode == MODE_RATE)
		fprintf(f, " %" PRIu64 " events/s", c->rate_eps);
	fprintf(f, ", %u conn x %u streams (%u effective), %u thread(s), batch %u, %.2f s",
		c->connections, c->streams, L->streams_effective, c->threads, c->batch, o->window_s);
	if (c->mode != MODE_FILL)
		fprintf(f, " after %.2f s warm-up; pool %" PRIu64 " events in %u requests (built in %.1f s)",
			(double)c->warmup_ns / 1e9, L->pool_events, L->pool_reqs, L->pool_build_s);
	fprintf(f, "\n  acked     %.0f events/s, %.0f requests/s, %.2f MB/s protobuf (%" PRIu64
		   " events, %" PRIu64 " duplicates)\n",
		(double)st->ev_acked / ws, (double)st->req_acked / ws, (double)st->msg_bytes / 1e6 / ws,
		st->ev_acked, st->ev_dup);
	const struct hist *h = &st->lat;
	fprintf(f, "  latency   p50 %.2f ms  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f  (%" PRIu64
		   " requests, from %s time)\n",
		us(hist_quantile(h, 0.5)) / 1e3, us(hist_quantile(h, 0.9)) / 1e3,
		us(hist_quantile(h, 0.99)) / 1e3, us(hist_quantile(h, 0.999)) / 1e3, us(h->max) / 1e3,
		h->n, c->mode == MODE_RATE ? "due" : "send");
	if (c->mode == MODE_RATE)
		fprintf(f, "  schedule  %" PRIu64 " late starts (> 1 ms), %" PRIu64
			   " never started, start delay p99 %.2f ms max %.2f ms\n",
			st->late_starts, st->not_started, us(hist_quantile(&st->delay, 0.99)) / 1e3,
			us(st->delay.max) / 1e3);
	if (st->req_failed) {
		fprintf(f, "  errors   ");
		for (int i = 0; i < GRPC_STATUS_COUNT; i++)
			if (st->errors[i])
				fprintf(f, " %s %" PRIu64, grpc_status_name(i), st->errors[i]);
		fprintf(f, " (first: %s: %s)\n", grpc_status_name(st->err_code), st->err_text);
	}
	if (st->unfinished || st->count_mismatch)
		fprintf(f, "  WARNING   %" PRIu64 " calls unanswered at the end, %" PRIu64
			   " responses whose counts differ from the events sent\n",
			st->unfinished, st->count_mismatch);
	fprintf(f, "  client    %.2f cores, %.2f us CPU per event (machine load %.1f -> %.1f on %ld CPUs)\n",
		o->cpu_s / ws, st->ev_acked ? o->cpu_s * 1e6 / (double)st->ev_acked : 0,
		o->loadavg_start, o->loadavg_end, sysconf(_SC_NPROCESSORS_ONLN));
}

/* ---- main -------------------------------------------------------------------- */

static void sleep_until(int64_t t_ns)
{
	struct timespec ts = { t_ns / NS_PER_S, t_ns % NS_PER_S };
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
	}
}

static int workers_init(struct load *L, char *err, size_t cap)
{
	const struct load_config *c = &L->cfg;
	L->workers = calloc(c->threads, sizeof(*L->workers));
	if (!L->workers) {
		snprintf(err, cap, "out of memory");
		return -1;
	}
	for (uint32_t t = 0; t < c->threads; t++)
		L->workers[t].ep = -1; /* load_free() may run before workers_run() */
	uint32_t next = 0;
	for (uint32_t t = 0; t < c->threads; t++) {
		struct worker *w = &L->workers[t];
		w->L = L;
		w->index = t;
		uint32_t want = c->connections / c->threads + (t < c->connections % c->threads);
		w->conns = calloc(want, sizeof(*w->conns));
		if (!w->conns) {
			snprintf(err, cap, "out of memory");
			return -1;
		}
		/* nconns counts the connections conn_init() has seen, so that
		 * load_free() frees exactly those after a failure here. */
		for (uint32_t i = 0; i < want; i++) {
			struct conn *cn = &w->conns[i];
			w->nconns = i + 1;
			if (conn_init(L, cn, w, next++) != 0) {
				snprintf(err, cap, "out of memory");
				return -1;
			}
			if (conn_open(L, cn, err, cap) != 0)
				return -1;
			L->streams_effective += cn->slots;
		}
	}
	return 0;
}

/* Hands each thread its slice of the pool: request i to thread i % threads. */
static int pool_split(struct load *L, char *err, size_t cap)
{
	const struct load_config *c = &L->cfg;
	for (uint32_t t = 0; t < c->threads; t++) {
		struct worker *w = &L->workers[t];
		uint32_t slots = 0;
		for (uint32_t i = 0; i < w->nconns; i++)
			slots += w->conns[i].slots_alloc;
		w->reqs = malloc((L->pool_reqs / c->threads + 1) * sizeof(*w->reqs));
		if (!w->reqs) {
			snprintf(err, cap, "out of memory");
			return -1;
		}
		for (uint32_t i = t; i < L->pool_reqs; i += c->threads)
			w->reqs[w->nreqs++] = L->pool[i];
		if (w->nreqs <= slots) {
			snprintf(err, cap, "the pool's %u requests give thread %u only %u, not more than its "
				 "%u stream slots: raise --pool-events", L->pool_reqs, t, w->nreqs, slots);
			return -1;
		}
		w->ns_per_event = c->rate_eps ? 1e9 * c->threads / (double)c->rate_eps : 0;
	}
	return 0;
}

static int workers_run(struct load *L, struct outcome *o, char *err, size_t cap)
{
	const struct load_config *c = &L->cfg;
	for (uint32_t t = 0; t < c->threads; t++) {
		struct worker *w = &L->workers[t];
		w->ep = epoll_create1(EPOLL_CLOEXEC);
		if (w->ep < 0) {
			snprintf(err, cap, "epoll_create1: %s", strerror(errno));
			return -1;
		}
		for (uint32_t i = 0; i < w->nconns; i++) {
			struct conn *cn = &w->conns[i];
			struct epoll_event ev = { .events = EPOLLIN, .data.ptr = cn };
			cn->epoll_events = EPOLLIN;
			if (epoll_ctl(w->ep, EPOLL_CTL_ADD, cn->fd, &ev) != 0) {
				snprintf(err, cap, "epoll_ctl: %s", strerror(errno));
				return -1;
			}
		}
	}
	double cpu0 = cpu_seconds();
	double load0 = loadavg_1m();
	L->t0_ns = mono_ns() + 1000000;
	if (c->mode == MODE_FILL) {
		L->win_start_ns = L->t0_ns;
		L->win_end_ns = INT64_MAX;
	} else {
		L->win_start_ns = L->t0_ns + c->warmup_ns;
		L->win_end_ns = L->win_start_ns + c->seconds_ns;
	}
	for (uint32_t t = 0; t < c->threads; t++) {
		int rc = pthread_create(&L->workers[t].thread, NULL, worker_main, &L->workers[t]);
		if (rc != 0) {
			snprintf(err, cap, "pthread_create: %s", strerror(rc));
			return -1; /* the threads already started hold live pointers: exit */
		}
	}
	double cpu_a = cpu0, cpu_b = cpu0;
	if (c->mode != MODE_FILL) {
		sleep_until(L->win_start_ns);
		cpu_a = cpu_seconds();
		sleep_until(L->win_end_ns);
		cpu_b = cpu_seconds();
	}
	for (uint32_t t = 0; t < c->threads; t++)
		pthread_join(L->workers[t].thread, NULL);
	if (c->mode == MODE_FILL)
		cpu_b = cpu_seconds();
	memset(o, 0, sizeof(*o));
	o->loadavg_start = load0;
	o->loadavg_end = loadavg_1m();
	for (uint32_t t = 0; t < c->threads; t++)
		stats_merge(&o->st, &L->workers[t].st);
	o->cpu_s = cpu_b - cpu_a;
	o->cpu_all_s = cpu_seconds();
	o->window_s = c->mode == MODE_FILL
			      ? (double)(FMT_MAX(o->st.last_ack_ns, L->t0_ns) - L->t0_ns) / 1e9
			      : (double)c->seconds_ns / 1e9;
	return 0;
}

/* Frees what resolve(), workers_init(), pool_build() and the run left,
 * whatever step failed (LeakSanitizer checks the error paths too). */
static void load_free(struct load *L)
{
	for (uint32_t t = 0; L->workers && t < L->cfg.threads; t++) {
		struct worker *w = &L->workers[t];
		for (uint32_t i = 0; i < w->nconns; i++)
			conn_free(&w->conns[i]);
		free(w->conns);
		free(w->reqs);
		if (w->ep >= 0)
			close(w->ep);
		for (struct req *r = w->retry_head, *nx; r; r = nx) {
			nx = r->next;
			req_free(r);
		}
	}
	for (uint32_t i = 0; i < L->pool_reqs; i++)
		req_free(L->pool[i]);
	free(L->pool);
	free(L->workers);
	free(L->names);
	if (L->addrs)
		freeaddrinfo(L->addrs);
}

int main(int argc, char **argv)
{
	struct load L = { 0 };
	char err[512] = "";
	int prc = parse_args(argc, argv, &L.cfg);
	if (prc != 0)
		return prc > 0 ? 0 : 2;
	const struct load_config *c = &L.cfg;
	snprintf(L.authority, sizeof(L.authority), "%s:%s", c->host, c->port);
	snprintf(L.auth_value, sizeof(L.auth_value), "Bearer %s", c->key);
	if (getrandom(&L.run_id, sizeof(L.run_id), 0) != sizeof(L.run_id))
		L.run_id = (uint64_t)mono_ns() ^ ((uint64_t)getpid() << 32);
	L.names = calloc(c->tenants, sizeof(*L.names));
	if (!L.names) {
		fprintf(stderr, "hodei-bench-load: out of memory\n");
		return 1;
	}
	/* Connections first: an unreachable server fails before the pool is built. */
	if (resolve(&L, err, sizeof(err)) != 0 || workers_init(&L, err, sizeof(err)) != 0) {
		fprintf(stderr, "hodei-bench-load: %s\n", err);
		load_free(&L);
		return 1;
	}
	struct batcher fill;
	if (c->mode == MODE_FILL) {
		if (batcher_init(&fill, c, c->fill, L.names) != 0) {
			fprintf(stderr, "hodei-bench-load: out of memory\n");
			load_free(&L);
			return 1;
		}
		L.workers[0].fill = &fill;
	} else {
		fprintf(stderr, "hodei-bench-load: encoding a pool of %" PRIu64 " events...\n",
			c->pool_events);
		int rc = pool_build(&L);
		if (rc != 0) {
			fprintf(stderr, "hodei-bench-load: building the pool: %s\n", fmt_strerror(rc));
			load_free(&L);
			return 1;
		}
		if (pool_split(&L, err, sizeof(err)) != 0) {
			fprintf(stderr, "hodei-bench-load: %s\n", err);
			load_free(&L);
			return 2;
		}
	}
	struct outcome o;
	if (workers_run(&L, &o, err, sizeof(err)) != 0) {
		fprintf(stderr, "hodei-bench-load: %s\n", err);
		if (c->mode == MODE_FILL)
			batcher_free(&fill);
		load_free(&L);
		return 1;
	}
	bool all_dead = false;
	for (uint32_t t = 0; t < c->threads; t++)
		all_dead |= L.workers[t].all_dead;
	summary_print(stderr, &L, &o);
	json_print(stdout, &L, &o);
	fflush(stdout);
	int exit_code = 0;
	if (all_dead) {
		fprintf(stderr, "hodei-bench-load: every connection to %s was lost\n", c->target);
		exit_code = 1;
	}
	if (c->mode == MODE_FILL) {
		uint64_t missing = c->fill - o.st.ev_acked_all;
		if (o.st.ev_acked_all != c->fill) {
			fprintf(stderr, "hodei-bench-load: --fill: %" PRIu64 " of %" PRIu64
				" events not acknowledged\n", missing, c->fill);
			exit_code = 1;
		}
		batcher_free(&fill);
	} else if (o.st.ev_acked_all == 0) {
		fprintf(stderr, "hodei-bench-load: no event was acknowledged\n");
		exit_code = 1;
	}
	load_free(&L);
	return exit_code;
}
