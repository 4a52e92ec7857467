// SPDX-License-Identifier: Apache-2.0
/*
 * gen.c — the benchmarks' deterministic event generator (see gen.h for
 * the shape). Every random choice comes from one splitmix64 stream seeded
 * by the caller, in a fixed order, so a seed names one sequence of events.
 */
#include "bench/gen.h"
#include "bench/rng.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const verbs[] = {
	"create", "read", "update", "delete", "list", "share", "export", "import", "approve",
	"reject", "archive", "restore", "download", "upload", "rename", "move", "copy", "lock",
	"unlock", "publish", "unpublish", "assign", "unassign", "invite", "revoke", "login",
	"logout", "mfa.enroll", "mfa.verify", "password.change", "password.reset", "token.create",
	"token.revoke", "role.grant", "role.revoke", "policy.attach", "policy.detach", "key.rotate",
	"key.create", "key.delete", "webhook.create", "webhook.delete", "sso.configure",
	"billing.update", "invoice.pay", "invoice.void", "plan.change", "seat.add", "seat.remove",
	"comment.add", "comment.delete", "tag.add", "tag.remove", "schedule", "cancel", "retry",
	"suspend", "resume", "merge", "impersonate",
};
#define N_VERBS (sizeof(verbs) / sizeof(verbs[0]))
_Static_assert(N_VERBS == 60, "about 60 action verbs (issue #5)");

static const char *const resource_types[] = {
	"document", "folder", "user", "team", "project", "invoice", "api_key", "webhook",
	"policy", "role", "session", "dataset",
};
#define N_TYPES (sizeof(resource_types) / sizeof(resource_types[0]))

static const char *const services[] = { "billing", "sync", "indexer", "mailer", "scheduler",
					"exporter", "gateway", "auth" };
static const char *const agents[] = {
	"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
	"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari/605.1.15",
	"Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
	"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
	"curl/8.5.0", "python-requests/2.32.3", "Go-http-client/2.0", "okhttp/4.12.0",
	"grpc-python/1.66.1", "grpc-java-netty/1.68.0", "terraform-provider/5.80.0", "aws-sdk-go-v2/1.32.6",
};
static const char *const regions[] = { "eu-west-1", "us-east-1", "us-west-2", "ap-south-1" };
static const char *const reasons[] = { "policy", "quota", "mfa_required", "expired", "not_found",
				       "conflict", "rate_limited" };

static uint64_t next_u64(struct gen *g)
{
	return bench_rng_next(&g->state);
}

static uint32_t below(struct gen *g, uint32_t n)
{
	return bench_rng_below32(&g->state, n);
}

static double unit(struct gen *g)
{
	return (double)(next_u64(g) >> 11) / 9007199254740992.0;
}

int gen_init(struct gen *g, uint64_t seed, uint32_t tenants)
{
	memset(g, 0, sizeof(*g));
	if (tenants == 0)
		return FMT_E_INVALID;
	g->state = seed;
	g->tenants = tenants;
	g->now_ns = GEN_START_NS;
	g->step_ns = GEN_STEP_DEFAULT_NS;
	g->zipf_cdf = malloc(tenants * sizeof(*g->zipf_cdf));
	if (!g->zipf_cdf)
		return FMT_E_NOMEM;
	double sum = 0;
	for (uint32_t k = 0; k < tenants; k++)
		sum += pow(k + 1, -0.9);
	double acc = 0;
	for (uint32_t k = 0; k < tenants; k++) {
		acc += pow(k + 1, -0.9) / sum;
		g->zipf_cdf[k] = acc;
	}
	g->zipf_cdf[tenants - 1] = 1.0;
	return 0;
}

void gen_free(struct gen *g)
{
	free(g->zipf_cdf);
	g->zipf_cdf = NULL;
}

static uint32_t zipf(struct gen *g)
{
	double u = unit(g);
	uint32_t lo = 0, hi = g->tenants - 1;
	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;
		if (g->zipf_cdf[mid] < u)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Appends a printf'd string to g->buf and returns its view. */
__attribute__((format(printf, 3, 4))) static struct fmt_str put(struct gen *g, size_t *off,
								  const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(g->buf + *off, sizeof(g->buf) - *off, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(g->buf) - *off)
		n = 0;
	struct fmt_str s = { g->buf + *off, (uint32_t)n };
	*off += (size_t)n + 1;
	return s;
}

void gen_next(struct gen *g, struct fmt_event *ev, struct fmt_str *tenant)
{
	memset(ev, 0, sizeof(*ev));
	size_t off = 0;
	uint32_t t = zipf(g);
	int tn = snprintf(g->tenant, sizeof(g->tenant), "tenant-%04u", t);
	*tenant = (struct fmt_str){ g->tenant, (uint32_t)tn };
	g->tenant_index = t;
	g->count++;
	g->now_ns += g->step_ns / 2 + (int64_t)below(g, (uint32_t)g->step_ns); /* step_ns apart on average */
	ev->occurred_at_ns = g->now_ns;
	for (int i = 0; i < 16; i += 8) {
		uint64_t r = next_u64(g);
		memcpy(ev->event_id + i, &r, 8);
	}
	ev->event_id[6] = (uint8_t)(0x40 | (ev->event_id[6] & 0x0f)); /* UUIDv4 */
	ev->event_id[8] = (uint8_t)(0x80 | (ev->event_id[8] & 0x3f));

	bool service = below(g, 100) < 15;
	/* Bigger tenants have more people: pools of 20..2000 users. */
	uint32_t pool = 20 + 2000 / (t + 1);
	if (service) {
		ev->str[FMT_F_ACTOR_ID] = put(g, &off, "svc-%s@%s", services[below(g, 8)], g->tenant);
		ev->str[FMT_F_ACTOR_TYPE] = fmt_str_c("service");
	} else {
		ev->str[FMT_F_ACTOR_ID] = put(g, &off, "user-%u@%s.example", below(g, pool), g->tenant);
		ev->str[FMT_F_ACTOR_TYPE] = fmt_str_c("user");
	}
	uint32_t type = below(g, N_TYPES);
	ev->str[FMT_F_ACTION] = put(g, &off, "%s.%s", resource_types[type], verbs[below(g, N_VERBS)]);
	ev->str[FMT_F_RESOURCE_TYPE] = fmt_str_c(resource_types[type]);
	ev->str[FMT_F_RESOURCE_ID] = put(g, &off, "%s-%08x", resource_types[type], below(g, 50000));
	uint32_t o = below(g, 100);
	ev->outcome = o < 90 ? FMT_OUTCOME_SUCCESS : o < 97 ? FMT_OUTCOME_FAILURE : FMT_OUTCOME_DENIED;
	/* C leaves the order in which a call's arguments are evaluated open
	 * (gcc goes right to left, clang left to right), so no call below takes
	 * two draws as arguments: each is drawn into a local first, the last
	 * field first, which is the stream the gcc build always produced. */
	if (below(g, 100) < 80) {
		uint32_t d = 1 + below(g, 254), c = below(g, 256), b = below(g, 256);
		uint32_t a = 10 + below(g, 200);
		ev->str[FMT_F_SOURCE_IP] = put(g, &off, "%u.%u.%u.%u", a, b, c, d);
	} else {
		uint32_t c = 1 + below(g, 65535), b = below(g, 65536), a = below(g, 65536);
		ev->str[FMT_F_SOURCE_IP] = put(g, &off, "2001:db8:%x:%x::%x", a, b, c);
	}
	ev->str[FMT_F_USER_AGENT] = fmt_str_c(agents[below(g, sizeof(agents) / sizeof(agents[0]))]);
	ev->str[FMT_F_REQUEST_ID] = put(g, &off, "req-%016llx", (unsigned long long)next_u64(g));
	unsigned long long trace_lo = next_u64(g), trace_hi = next_u64(g);
	ev->str[FMT_F_TRACE_ID] = put(g, &off, "%016llx%016llx", trace_hi, trace_lo);
	uint32_t na = below(g, GEN_ATTRS_MAX + 1);
	for (uint32_t i = 0; i < na; i++) {
		switch (i) {
		case 0: g->attrs[i] = (struct fmt_attr){ fmt_str_c("region"),
							 fmt_str_c(regions[below(g, 4)]) }; break;
		case 1: g->attrs[i] = (struct fmt_attr){ fmt_str_c("mfa"),
							 fmt_str_c(below(g, 2) ? "true" : "false") }; break;
		case 2: {
			uint32_t patch = below(g, 50), minor = below(g, 20), major = 1 + below(g, 4);
			g->attrs[i] = (struct fmt_attr){ fmt_str_c("client_version"),
							 put(g, &off, "%u.%u.%u", major, minor, patch) };
			break;
		}
		case 3: g->attrs[i] = (struct fmt_attr){ fmt_str_c("org_unit"),
							 put(g, &off, "ou-%u", below(g, 40)) }; break;
		default: g->attrs[i] = (struct fmt_attr){ fmt_str_c("session_id"),
							  put(g, &off, "s-%012llx",
							      (unsigned long long)(next_u64(g) >> 16)) }; break;
		}
	}
	ev->attrs = g->attrs;
	ev->attr_count = na;
	/* details: 50..300 bytes of JSON, padded with a note of random length. */
	uint32_t want = 50 + below(g, 251);
	size_t start = off;
	uint32_t bytes = below(g, 1u << 20), latency_ms = below(g, 2000);
	const char *reason = ev->outcome == FMT_OUTCOME_SUCCESS ? "ok" : reasons[below(g, 7)];
	int n = snprintf(g->buf + off, sizeof(g->buf) - off,
			 "{\"reason\":\"%s\",\"latency_ms\":%u,\"bytes\":%u,\"note\":\"", reason,
			 latency_ms, bytes);
	off += (size_t)n;
	while (off - start + 2 < want && off + 3 < sizeof(g->buf))
		g->buf[off++] = (char)('a' + below(g, 26));
	g->buf[off++] = '"';
	g->buf[off++] = '}';
	ev->details_json = (struct fmt_str){ g->buf + start, (uint32_t)(off - start) };
}

static json_t *str_json(struct fmt_str s)
{
	return json_stringn(s.ptr, s.len);
}

int gen_ndjson(const struct fmt_event *ev, struct fmt_str tenant, char *out, size_t cap)
{
	static const char *const outcomes[] = { NULL, "success", "failure", "denied" };
	static const char *const names[FMT_F_STRING_COUNT] = {
		"actor_id", "actor_type", "action", "resource_type", "resource_id",
		"source_ip", "user_agent", "request_id", "trace_id",
	};
	char id[37];
	fmt_uuid_format(ev->event_id, id);
	json_t *o = json_object();
	if (tenant.len)
		json_object_set_new(o, "tenant_id", str_json(tenant));
	json_object_set_new(o, "event_id", json_string(id));
	json_object_set_new(o, "occurred_at_ns", json_integer(ev->occurred_at_ns));
	for (int f = 0; f < FMT_F_STRING_COUNT; f++)
		if (ev->str[f].len)
			json_object_set_new(o, names[f], str_json(ev->str[f]));
	if (ev->outcome >= 1 && ev->outcome <= 3)
		json_object_set_new(o, "outcome", json_string(outcomes[ev->outcome]));
	if (ev->attr_count) {
		json_t *a = json_object();
		for (uint32_t i = 0; i < ev->attr_count; i++) {
			char key[128];
			snprintf(key, sizeof(key), "%.*s", (int)ev->attrs[i].key.len, ev->attrs[i].key.ptr);
			json_object_set_new(a, key, str_json(ev->attrs[i].value));
		}
		json_object_set_new(o, "attributes", a);
	}
	json_error_t err;
	json_t *d = json_loadb(ev->details_json.ptr, ev->details_json.len, 0, &err);
	if (d)
		json_object_set_new(o, "details", d);
	size_t n = json_dumpb(o, out, cap, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	if (n == 0 || n >= cap)
		return FMT_E_TOO_BIG;
	out[n] = 0;
	return (int)n;
}
