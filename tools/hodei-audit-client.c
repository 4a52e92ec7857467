// SPDX-License-Identifier: Apache-2.0
/*
 * hodei-audit-client.c — the client commands of hodei-audit (DESIGN.md §6):
 *
 *   append   NDJSON events on stdin → AppendStream, several batches in flight
 *   search   Search with filters → a table, or NDJSON with --json
 *   tail     Search polled oldest-first from the last position seen
 *   count    Count with filters and an optional group-by
 *   verify   Verify over gRPC (verify --data-dir stays offline, in hodei-audit.c)
 *   health   grpc.health.v1.Health/Check
 *   keys new a fresh API key and its keys-file line
 *
 * Each command parses its flags, opens one connection (net/grpc_client.h)
 * and maps the final gRPC status onto the exit code: UNAUTHENTICATED and
 * PERMISSION_DENIED → 4, any other non-OK status or no connection → 5,
 * with the status name and message on stderr. The API key comes from --key
 * or HODEI_API_KEY and is never printed.
 *
 * append: lines are parsed one by one (net/event_json.h) into the current
 * batch; a batch is cut at --batch events or --batch-bytes bytes of
 * protobuf and sent on the stream at once, and the command reads a
 * response whenever --in-flight batches are unanswered, so the server
 * always has work queued. A line that does not parse stops the command
 * before anything of its batch is sent: earlier batches are already
 * stored (their responses are awaited and summed), later lines are not
 * read. Exit 2 and "line N: <field>: <why>" on stderr.
 *
 * Anything a server stored is printed through a sanitiser in the table
 * form: control characters become '?', so an event cannot drive the
 * operator's terminal.
 */
#include "tools/hodei-audit-client.h"
#include "net/units.h"

#include "format/common.h"
#include "format/event.h"
#include "format/hash.h"
#include "grpc/health/v1/health.pb-c.h"
#include "hodei/audit/v1/audit.pb-c.h"
#include "net/event_json.h"
#include "net/grpc_client.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_SERVER "127.0.0.1:50051"
#define DEFAULT_TIMEOUT_MS 60000
#define BATCH_EVENTS_DEFAULT 1000
#define BATCH_EVENTS_MAX 10000 /* DESIGN.md §5's default server limit */
#define BATCH_BYTES_DEFAULT (3u << 20) /* under the server's 4 MiB message limit */
#define IN_FLIGHT_DEFAULT 4
#define IN_FLIGHT_MAX 64
#define LINE_BYTES_MAX (8u << 20)
#define BATCH_ARENA_BYTES (256u << 20)
#define SEARCH_PAGE_MAX 1000
#define KEY_RANDOM_BYTES 32

const char cli_usage_text[] =
	"  append [--batch N] [--in-flight N] [--batch-bytes N] [--json] [CONNECTION]\n"
	"                                  read NDJSON events on stdin and append them\n"
	"                                  (AppendStream, N batches in flight); a line that\n"
	"                                  does not parse stops before its batch is sent\n"
	"  search [FILTERS] [--limit N | --all] [--oldest-first] [--json] [CONNECTION]\n"
	"                                  print stored events: a table, or NDJSON with --json\n"
	"  tail [FILTERS] [--interval 1s] [--lines N] [--lookback 10s] [--json] [CONNECTION]\n"
	"                                  print the last N events, then new ones as they\n"
	"                                  come, until interrupted\n"
	"  count [FILTERS] [--group-by action|actor_id|resource_type|outcome] [--json]\n"
	"        [CONNECTION]              count events matching the filters\n"
	"  verify --server H:P [--from-seq N] [--to-seq N] [--json] [--key K] [--tenant T]\n"
	"                                  ask the server to verify the tenant's hash chain\n"
	"  health [--json] [CONNECTION]    grpc.health.v1 check of the server\n"
	"  keys new --tenant T --role writer|reader|admin [--json]\n"
	"                                  make an API key: prints the key (once) and the\n"
	"                                  line to add to the server's keys file\n"
	"\n"
	"CONNECTION: --server HOST:PORT (default $HODEI_SERVER, else " DEFAULT_SERVER "),\n"
	"  --key KEY (default $HODEI_API_KEY; prefer the variable: flags show in ps),\n"
	"  --tenant T (admin keys: the tenant to act on), --timeout 60s (per call),\n"
	"  --tls (TLS, the server verified against the system's CAs), --tls-ca FILE\n"
	"  (TLS, verified against the CA certificates in FILE; default $HODEI_TLS_CA).\n"
	"FILTERS: --from T --to T (RFC 3339 or Unix ns; from inclusive, to exclusive),\n"
	"  --actor ID --action A --resource-type T --resource-id ID\n"
	"  --outcome success|failure|denied --event-id UUID\n";

static int usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int usage(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "hodei-audit: %s: ", cmd);
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n(run 'hodei-audit help' for the usage)\n");
	va_end(ap);
	return CLI_USAGE;
}

/* ---- flags -------------------------------------------------------------------- */

int cli_flag_value(int argc, char **argv, int *i, const char *name, const char **val)
{
	size_t n = strlen(name);
	const char *a = argv[*i];
	if (strncmp(a, name, n) != 0)
		return 0;
	if (a[n] == '=') {
		*val = a + n + 1;
		return 1;
	}
	if (a[n] != 0)
		return 0;
	if (*i + 1 >= argc)
		return -1;
	*val = argv[++*i];
	return 1;
}

/* A number up to max (net/units.h). */
static bool parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	uint64_t v;
	if (units_parse_u64(s, &v) != 0 || v > max)
		return false;
	*out = v;
	return true;
}

/* "250ms", "1.5s", "2m", "1h", or a plain number of seconds; at most a
 * year (net/units.h). */
static bool parse_duration_ms(const char *s, int64_t *ms)
{
	int64_t ns;
	if (units_parse_duration_ns(s, 1000000000ll, &ns) != 0 || ns / 1000000 > 24 * 3600000ll * 365)
		return false;
	*ms = ns / 1000000;
	return true;
}

/* RFC 3339, or an integer number of Unix ns. */
static bool parse_time_arg(const char *s, int64_t *ns, const char **why)
{
	size_t len = strlen(s), digits = strspn(s + (s[0] == '-'), "0123456789");
	if (len > 0 && digits == len - (s[0] == '-')) {
		char *end;
		errno = 0;
		long long v = strtoll(s, &end, 10);
		*why = "out of range";
		*ns = v;
		return errno == 0 && *end == 0;
	}
	return net_time_parse(s, len, ns, why) == 0;
}

static ProtobufCBinaryData bin_c(const char *s)
{
	return (ProtobufCBinaryData){ strlen(s), (uint8_t *)s };
}

static double mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int64_t wall_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- connection ------------------------------------------------------------------ */

struct remote {
	const char *cmd;
	const char *server;
	const char *key;
	const char *tenant;
	int timeout_ms;
	bool json;
	bool tls;            /* --tls, --tls-ca or $HODEI_TLS_CA; h2c otherwise */
	const char *tls_ca;  /* NULL: the system's CA certificates */
	char auth[600];
	struct net_grpc_md md[2];
	size_t md_count;
	struct net_grpc_conn *conn;
};

static void remote_init(struct remote *r, const char *cmd)
{
	memset(r, 0, sizeof(*r));
	r->cmd = cmd;
	const char *env = getenv("HODEI_SERVER");
	r->server = env && *env ? env : DEFAULT_SERVER;
	env = getenv("HODEI_API_KEY");
	r->key = env && *env ? env : NULL;
	r->timeout_ms = DEFAULT_TIMEOUT_MS;
	env = getenv("HODEI_TLS_CA");
	if (env && *env) {
		r->tls = true;
		r->tls_ca = env;
	}
}

/* Consumes a connection flag or --json at argv[*i]. Returns 1 consumed,
 * 0 not one of them, or CLI_USAGE after printing why. */
static int remote_flag(struct remote *r, int argc, char **argv, int *i)
{
	const char *v;
	int m;
	if (!strcmp(argv[*i], "--json")) {
		r->json = true;
		return 1;
	}
	if (!strcmp(argv[*i], "--tls")) {
		r->tls = true;
		return 1;
	}
	static const char *const names[] = { "--server", "--key", "--tenant", "--timeout",
					      "--tls-ca" };
	for (size_t k = 0; k < FMT_ARRAY_LEN(names); k++) {
		m = cli_flag_value(argc, argv, i, names[k], &v);
		if (m < 0)
			return -usage(r->cmd, "%s needs a value", names[k]);
		if (m == 0)
			continue;
		if (k == 0)
			r->server = v;
		else if (k == 1)
			r->key = v;
		else if (k == 2) {
			if (!fmt_tenant_valid(fmt_str_c(v)))
				return -usage(r->cmd, "--tenant: want 1-64 characters of [A-Za-z0-9._-]");
			r->tenant = v;
		} else if (k == 4) {
			if (!*v)
				return -usage(r->cmd, "--tls-ca: want a file of PEM certificates");
			r->tls = true;
			r->tls_ca = v;
		} else {
			int64_t ms;
			if (!parse_duration_ms(v, &ms) || ms <= 0 || ms > INT32_MAX)
				return -usage(r->cmd, "--timeout: not a duration (e.g. 30s, 500ms)");
			r->timeout_ms = (int)ms;
		}
		return 1;
	}
	return 0;
}

/* The exit code for a final status, after printing it. */
static int status_exit(const struct remote *r, const struct net_grpc_status *st)
{
	if (st->code == GRPC_OK)
		return CLI_OK;
	fprintf(stderr, "hodei-audit: %s: %s: %s\n", r->cmd, grpc_status_name(st->code),
		st->message[0] ? st->message : "(no message)");
	if (st->code == GRPC_UNAUTHENTICATED && !r->key)
		fprintf(stderr, "hodei-audit: %s: no API key given: set HODEI_API_KEY or use --key\n",
			r->cmd);
	return st->code == GRPC_UNAUTHENTICATED || st->code == GRPC_PERMISSION_DENIED ? CLI_AUTH
										      : CLI_SERVER;
}

static int remote_connect(struct remote *r)
{
	struct net_grpc_status st;
	r->md_count = 0;
	if (r->key) {
		if (strlen(r->key) > sizeof(r->auth) - 8 || strpbrk(r->key, "\r\n"))
			return usage(r->cmd, "--key: not a plausible API key");
		snprintf(r->auth, sizeof(r->auth), "Bearer %s", r->key);
		r->md[r->md_count++] = (struct net_grpc_md){ "authorization", r->auth };
	}
	if (r->tenant)
		r->md[r->md_count++] = (struct net_grpc_md){ "x-hodei-tenant", r->tenant };
	struct net_grpc_tls tls = { .ca_file = r->tls_ca };
	if (net_grpc_connect_tls(r->server, r->timeout_ms, r->tls ? &tls : NULL, &r->conn, &st))
		return status_exit(r, &st);
	return CLI_OK;
}

static void remote_close(struct remote *r)
{
	net_grpc_close(r->conn);
	r->conn = NULL;
}

/* One unary call with protobuf messages. Returns CLI_OK with *resp (free
 * with protobuf_c_message_free_unpacked), or an exit code after printing. */
static int remote_call(struct remote *r, const char *path, const ProtobufCMessage *req,
		       const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp)
{
	struct net_grpc_status st;
	size_t len = protobuf_c_message_get_packed_size(req);
	uint8_t *buf = malloc(len ? len : 1), *out = NULL;
	size_t out_len = 0;
	*resp = NULL;
	if (!buf) {
		fprintf(stderr, "hodei-audit: %s: out of memory\n", r->cmd);
		return CLI_SERVER;
	}
	protobuf_c_message_pack(req, buf);
	int rc = net_grpc_unary(r->conn, path, r->md, r->md_count, buf, len, r->timeout_ms, &out,
				&out_len, &st);
	free(buf);
	if (rc)
		return status_exit(r, &st);
	*resp = protobuf_c_message_unpack(resp_desc, NULL, out_len, out);
	free(out);
	if (!*resp) {
		st.code = GRPC_INTERNAL;
		snprintf(st.message, sizeof(st.message), "cannot decode the %s response",
			 resp_desc->short_name);
		return status_exit(r, &st);
	}
	return CLI_OK;
}

/* ---- output ---------------------------------------------------------------------- */

static bool print_json_line(json_t *v, const char *cmd)
{
	char *s = v ? net_json_dump(v) : NULL;
	json_decref(v);
	if (!s) {
		fprintf(stderr, "hodei-audit: %s: out of memory building JSON\n", cmd);
		return false;
	}
	puts(s);
	free(s);
	return true;
}

/* Copies at most width display columns of b into out, with control
 * characters as '?' and a '~' where it was cut. Counts UTF-8 sequences,
 * not bytes, as columns (wide characters are not measured). */
static void cell(const ProtobufCBinaryData *b, size_t width, char *out, size_t cap)
{
	size_t n = 0, cols = 0, i = 0;
	for (; i < b->len && n + 5 < cap; cols++) {
		uint8_t c = b->data[i];
		if (cols + 1 == width && i + 1 < b->len) {
			out[n++] = '~';
			i = b->len;
			break;
		}
		size_t k = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
		if (k > b->len - i || !fmt_utf8_valid((const char *)b->data + i, k) || c < 0x20 ||
		    c == 0x7f || (k == 2 && c == 0xC2 && b->data[i + 1] < 0xA0)) {
			out[n++] = '?'; /* control characters, C1 controls, bad bytes */
			i++;
			continue;
		}
		memcpy(out + n, b->data + i, k);
		n += k;
		i += k;
	}
	out[n] = 0;
	for (; cols < width && n + 1 < cap; cols++)
		out[n++] = ' ';
	out[n] = 0;
}

static void table_header(void)
{
	printf("%-8s %-24s %-7s %-24s %-26s %s\n", "SEQ", "OCCURRED_AT", "OUTCOME", "ACTOR", "ACTION",
	       "RESOURCE");
}

static void table_row(const Hodei__Audit__V1__StoredEvent *se)
{
	static const char *const outcomes[] = { "-", "success", "failure", "denied" };
	const Hodei__Audit__V1__AuditEvent *ev = se->event;
	Hodei__Audit__V1__AuditEvent empty = HODEI__AUDIT__V1__AUDIT_EVENT__INIT;
	if (!ev)
		ev = &empty;
	char when[NET_TIME_TEXT_MAX], actor[160], action[160], rtype[160], rid[400];
	net_time_format(ev->occurred_at_ns, when);
	memcpy(when + 23, "Z", 2); /* milliseconds are enough in a table */
	cell(&ev->actor_id, 24, actor, sizeof(actor));
	cell(&ev->action, 26, action, sizeof(action));
	cell(&ev->resource_type, 20, rtype, sizeof(rtype));
	cell(&ev->resource_id, 60, rid, sizeof(rid));
	/* Trim the padding of the last cells. */
	for (char *p = rid + strlen(rid); p > rid && p[-1] == ' ';)
		*--p = 0;
	for (char *p = rtype + strlen(rtype); p > rtype && p[-1] == ' ';)
		*--p = 0;
	unsigned o = (unsigned)ev->outcome;
	printf("%-8llu %-24s %-7s %s %s %s%s%s\n", (unsigned long long)se->seq, when,
	       o < FMT_ARRAY_LEN(outcomes) ? outcomes[o] : "?", actor, action, rtype,
	       rtype[0] && rid[0] ? "/" : "", rid);
}

static bool print_stored(const Hodei__Audit__V1__StoredEvent *se, bool json, const char *cmd)
{
	if (json)
		return print_json_line(net_stored_event_to_json(se), cmd);
	table_row(se);
	return true;
}

/* ---- filters (search, tail, count) ---------------------------------------------- */

struct filters {
	Hodei__Audit__V1__SearchRequest req;
	uint8_t event_id[FMT_EVENT_ID_BYTES];
};

static void filters_init(struct filters *f)
{
	Hodei__Audit__V1__SearchRequest init = HODEI__AUDIT__V1__SEARCH_REQUEST__INIT;
	f->req = init;
}

/* Consumes a filter flag. Returns 1, 0 (not a filter), or -CLI_USAGE. */
static int filter_flag(struct filters *f, const char *cmd, int argc, char **argv, int *i)
{
	static const struct {
		const char *name;
		size_t offset;
	} strs[] = {
		{ "--actor", offsetof(Hodei__Audit__V1__SearchRequest, actor_id) },
		{ "--action", offsetof(Hodei__Audit__V1__SearchRequest, action) },
		{ "--resource-type", offsetof(Hodei__Audit__V1__SearchRequest, resource_type) },
		{ "--resource-id", offsetof(Hodei__Audit__V1__SearchRequest, resource_id) },
	};
	const char *v, *why = NULL;
	int m;
	for (size_t k = 0; k < FMT_ARRAY_LEN(strs); k++) {
		m = cli_flag_value(argc, argv, i, strs[k].name, &v);
		if (m < 0)
			return -usage(cmd, "%s needs a value", strs[k].name);
		if (m > 0) {
			*(ProtobufCBinaryData *)((char *)&f->req + strs[k].offset) = bin_c(v);
			return 1;
		}
	}
	for (int k = 0; k < 2; k++) {
		const char *name = k ? "--to" : "--from";
		if ((m = cli_flag_value(argc, argv, i, name, &v)) == 0)
			continue;
		int64_t ns;
		if (m < 0)
			return -usage(cmd, "%s needs a time", name);
		if (!parse_time_arg(v, &ns, &why))
			return -usage(cmd, "%s: not RFC 3339 or Unix ns: %s", name, why);
		if (k)
			f->req.to_ns = ns;
		else
			f->req.from_ns = ns;
		return 1;
	}
	if ((m = cli_flag_value(argc, argv, i, "--outcome", &v)) != 0) {
		static const char *const names[] = { "success", "failure", "denied" };
		for (unsigned k = 0; m > 0 && k < 3; k++) {
			if (!strcmp(v, names[k])) {
				f->req.outcome = (Hodei__Audit__V1__Outcome)(k + 1);
				return 1;
			}
		}
		return -usage(cmd, "--outcome: want success, failure or denied");
	}
	if ((m = cli_flag_value(argc, argv, i, "--event-id", &v)) != 0) {
		if (m < 0 || fmt_uuid_parse(v, strlen(v), f->event_id))
			return -usage(cmd, "--event-id: want a UUID (8-4-4-4-12 hex digits)");
		f->req.event_id = (ProtobufCBinaryData){ FMT_EVENT_ID_BYTES, f->event_id };
		return 1;
	}
	return 0;
}

/* ---- search ------------------------------------------------------------------------- */

static int search_page(struct remote *r, Hodei__Audit__V1__SearchRequest *req,
		       Hodei__Audit__V1__SearchResponse **resp)
{
	return remote_call(r, "/hodei.audit.v1.AuditService/Search", &req->base,
			   &hodei__audit__v1__search_response__descriptor, (ProtobufCMessage **)resp);
}

int cli_search(int argc, char **argv)
{
	struct remote r;
	struct filters f;
	uint64_t limit = 100;
	bool all = false;
	remote_init(&r, "search");
	filters_init(&f);
	for (int i = 2; i < argc; i++) {
		int m = remote_flag(&r, argc, argv, &i);
		if (!m)
			m = filter_flag(&f, r.cmd, argc, argv, &i);
		if (m < 0)
			return -m;
		if (m > 0)
			continue;
		const char *v;
		if (!strcmp(argv[i], "--all"))
			all = true;
		else if (!strcmp(argv[i], "--oldest-first"))
			f.req.oldest_first = true;
		else if ((m = cli_flag_value(argc, argv, &i, "--limit", &v)) != 0) {
			if (m < 0 || !parse_u64(v, UINT32_MAX, &limit) || limit == 0)
				return usage(r.cmd, "--limit: want a number of events, at least 1");
		} else
			return usage(r.cmd, "unknown argument %s", argv[i]);
	}
	int code = remote_connect(&r);
	if (code)
		return code;
	uint64_t printed = 0;
	bool more = false;
	uint8_t *token = NULL;
	for (;;) {
		uint64_t want = all ? SEARCH_PAGE_MAX : FMT_MIN(limit - printed, (uint64_t)SEARCH_PAGE_MAX);
		f.req.limit = (uint32_t)want;
		Hodei__Audit__V1__SearchResponse *resp;
		code = search_page(&r, &f.req, &resp);
		if (code)
			break;
		if (!r.json && !token)
			table_header(); /* after the first answer: errors print no header */
		for (size_t k = 0; k < resp->n_events && (all || printed < limit); k++, printed++)
			if (!print_stored(resp->events[k], r.json, r.cmd))
				code = CLI_SERVER;
		/* The next request's token must outlive this response. */
		free(token);
		token = NULL;
		more = resp->next_page_token.len > 0;
		if (more && (token = malloc(resp->next_page_token.len)))
			memcpy(token, resp->next_page_token.data, resp->next_page_token.len);
		f.req.page_token = (ProtobufCBinaryData){ token ? resp->next_page_token.len : 0, token };
		protobuf_c_message_free_unpacked(&resp->base, NULL);
		if (code || !more || !token || (!all && printed >= limit))
			break;
		fflush(stdout);
	}
	free(token);
	remote_close(&r);
	if (!code && !r.json)
		printf("(%llu event%s%s)\n", (unsigned long long)printed, printed == 1 ? "" : "s",
		       more ? "; more match: use --all or a larger --limit" : "");
	return code;
}

/* ---- count -------------------------------------------------------------------------- */

int cli_count(int argc, char **argv)
{
	struct remote r;
	struct filters f;
	const char *group_by = "";
	remote_init(&r, "count");
	filters_init(&f);
	for (int i = 2; i < argc; i++) {
		int m = remote_flag(&r, argc, argv, &i);
		if (!m)
			m = filter_flag(&f, r.cmd, argc, argv, &i);
		if (m < 0)
			return -m;
		if (m > 0)
			continue;
		if ((m = cli_flag_value(argc, argv, &i, "--group-by", &group_by)) != 0) {
			if (m < 0 || (strcmp(group_by, "action") && strcmp(group_by, "actor_id") &&
				      strcmp(group_by, "resource_type") && strcmp(group_by, "outcome")))
				return usage(r.cmd,
					     "--group-by: want action, actor_id, resource_type or outcome");
		} else
			return usage(r.cmd, "unknown argument %s", argv[i]);
	}
	int code = remote_connect(&r);
	if (code)
		return code;
	Hodei__Audit__V1__CountRequest req = HODEI__AUDIT__V1__COUNT_REQUEST__INIT;
	req.filter = &f.req;
	req.group_by = bin_c(group_by);
	Hodei__Audit__V1__CountResponse *resp;
	code = remote_call(&r, "/hodei.audit.v1.AuditService/Count", &req.base,
			   &hodei__audit__v1__count_response__descriptor, (ProtobufCMessage **)&resp);
	remote_close(&r);
	if (code)
		return code;
	if (r.json) {
		json_t *groups = json_array();
		for (size_t k = 0; k < resp->n_groups; k++) {
			/* An empty key may come without a buffer: jansson wants one. */
			const ProtobufCBinaryData *key = &resp->groups[k]->key;
			json_array_append_new(groups, json_pack("{s:s%,s:I}", "key",
								 key->len ? (const char *)key->data : "",
								 key->len, "count",
								 (json_int_t)resp->groups[k]->count));
		}
		if (!print_json_line(json_pack("{s:I,s:o}", "total", (json_int_t)resp->total,
					       "groups", groups),
				     r.cmd))
			code = CLI_SERVER;
	} else if (!group_by[0]) {
		printf("%llu\n", (unsigned long long)resp->total);
	} else {
		/* One row per key, largest first as the server sorts them; an
		 * empty key (no value, or no outcome) shows as "(none)". */
		char head[64];
		size_t n = 0;
		for (; group_by[n] && n + 1 < sizeof(head); n++)
			head[n] = (char)toupper((unsigned char)group_by[n]);
		head[n] = 0;
		printf("%-40s %12s\n", head, "EVENTS");
		for (size_t k = 0; k < resp->n_groups; k++) {
			char key[300];
			static const uint8_t none[] = "(none)";
			ProtobufCBinaryData b = resp->groups[k]->key;
			if (!b.len)
				b = (ProtobufCBinaryData){ sizeof(none) - 1, (uint8_t *)none };
			cell(&b, 40, key, sizeof(key));
			printf("%s %12llu\n", key, (unsigned long long)resp->groups[k]->count);
		}
		printf("%-40s %12llu\n", "(total)", (unsigned long long)resp->total);
	}
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	return code;
}

/* ---- tail ----------------------------------------------------------------------- */

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
	(void)sig;
	interrupted = 1;
}

/* Where tail is. Seqs are given in commit order and a search sees events
 * in that order (only durable ones), so "new" is "seq above the highest
 * seen". Search filters on occurred_at only, so each poll reads the window
 * [now - lookback, now): an event that reaches the server more than
 * --lookback after its occurred_at is not shown. */
struct tail_state {
	uint64_t last_seq; /* highest seq seen (printed or in the baseline) */
	int64_t lookback_ns;
};

/* One poll over the window, every page, oldest first; prints (when print)
 * the events with a seq above the last seen. Returns an exit code. */
static int tail_poll(struct remote *r, struct filters *f, struct tail_state *t, bool print)
{
	Hodei__Audit__V1__SearchRequest req = f->req;
	uint64_t seen = t->last_seq;
	uint8_t *token = NULL;
	int code = CLI_OK;
	req.oldest_first = true;
	req.limit = SEARCH_PAGE_MAX;
	req.from_ns = FMT_MAX(wall_ns() - t->lookback_ns, f->req.from_ns);
	while (!interrupted) {
		Hodei__Audit__V1__SearchResponse *resp;
		code = search_page(r, &req, &resp);
		if (code)
			break;
		for (size_t k = 0; k < resp->n_events; k++) {
			const Hodei__Audit__V1__StoredEvent *se = resp->events[k];
			if (se->seq <= seen)
				continue;
			if (print)
				print_stored(se, r->json, r->cmd);
			t->last_seq = FMT_MAX(t->last_seq, se->seq);
		}
		free(token);
		token = NULL;
		size_t tlen = resp->next_page_token.len;
		if (tlen && (token = malloc(tlen)))
			memcpy(token, resp->next_page_token.data, tlen);
		req.page_token = (ProtobufCBinaryData){ token ? tlen : 0, token };
		protobuf_c_message_free_unpacked(&resp->base, NULL);
		if (!token)
			break;
	}
	free(token);
	fflush(stdout);
	return code;
}

/* Prints the last `lines` events (by occurred_at, oldest of them first),
 * then takes the window's events as seen without printing them. */
static int tail_start(struct remote *r, struct filters *f, struct tail_state *t, uint64_t lines)
{
	if (lines > 0) {
		Hodei__Audit__V1__SearchRequest req = f->req;
		req.oldest_first = false;
		req.limit = (uint32_t)lines;
		Hodei__Audit__V1__SearchResponse *resp;
		int code = search_page(r, &req, &resp);
		if (code)
			return code;
		for (size_t k = resp->n_events; k-- > 0;) {
			print_stored(resp->events[k], r->json, r->cmd);
			t->last_seq = FMT_MAX(t->last_seq, resp->events[k]->seq);
		}
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	}
	return tail_poll(r, f, t, false);
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000 };
	nanosleep(&ts, NULL); /* a signal cuts it short: the loop checks the flag */
}

int cli_tail(int argc, char **argv)
{
	struct remote r;
	struct filters f;
	int64_t interval_ms = 1000, lookback_ms = 10000;
	uint64_t lines = 10;
	remote_init(&r, "tail");
	filters_init(&f);
	for (int i = 2; i < argc; i++) {
		int m = remote_flag(&r, argc, argv, &i);
		if (!m)
			m = filter_flag(&f, r.cmd, argc, argv, &i);
		if (m < 0)
			return -m;
		if (m > 0)
			continue;
		const char *v;
		if ((m = cli_flag_value(argc, argv, &i, "--interval", &v)) != 0) {
			if (m < 0 || !parse_duration_ms(v, &interval_ms) || interval_ms < 10)
				return usage(r.cmd, "--interval: want a duration of at least 10ms");
		} else if ((m = cli_flag_value(argc, argv, &i, "--lookback", &v)) != 0) {
			if (m < 0 || !parse_duration_ms(v, &lookback_ms))
				return usage(r.cmd, "--lookback: want a duration (e.g. 10s)");
		} else if ((m = cli_flag_value(argc, argv, &i, "--lines", &v)) != 0) {
			if (m < 0 || !parse_u64(v, SEARCH_PAGE_MAX, &lines))
				return usage(r.cmd, "--lines: want 0..%d", SEARCH_PAGE_MAX);
		} else
			return usage(r.cmd, "unknown argument %s", argv[i]);
	}
	struct sigaction sa = { .sa_handler = on_interrupt };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	/* A window shorter than two intervals could miss events between polls. */
	lookback_ms = FMT_MAX(lookback_ms, 2 * interval_ms);
	struct tail_state t = { .lookback_ns = lookback_ms * 1000000 };
	int code = remote_connect(&r);
	if (code)
		return code;
	if (!r.json)
		table_header();
	code = tail_start(&r, &f, &t, lines);
	while (!code && !interrupted) {
		sleep_ms(interval_ms);
		if (interrupted)
			break;
		if (!net_grpc_usable(r.conn)) {
			remote_close(&r);
			if (remote_connect(&r) != CLI_OK)
				continue; /* the server may be restarting: keep trying */
		}
		code = tail_poll(&r, &f, &t, true);
		if (code == CLI_SERVER) /* printed; retried at the next interval */
			code = CLI_OK;
	}
	remote_close(&r);
	return code;
}

/* ---- verify (remote) ------------------------------------------------------------ */

bool cli_verify_is_remote(int argc, char **argv)
{
	bool server = false, data_dir = false;
	for (int i = 2; i < argc; i++) {
		server |= !strncmp(argv[i], "--server", 8);
		data_dir |= !strncmp(argv[i], "--data-dir", 10);
	}
	const char *env = getenv("HODEI_SERVER");
	return server || (!data_dir && env && *env);
}

int cli_verify_remote(int argc, char **argv)
{
	struct remote r;
	uint64_t from = 0, to = 0;
	remote_init(&r, "verify");
	for (int i = 2; i < argc; i++) {
		int m = remote_flag(&r, argc, argv, &i);
		if (m < 0)
			return -m;
		if (m > 0)
			continue;
		const char *v;
		if ((m = cli_flag_value(argc, argv, &i, "--from-seq", &v)) != 0) {
			if (m < 0 || !parse_u64(v, UINT64_MAX, &from))
				return usage(r.cmd, "--from-seq: want a sequence number");
		} else if ((m = cli_flag_value(argc, argv, &i, "--to-seq", &v)) != 0) {
			if (m < 0 || !parse_u64(v, UINT64_MAX, &to))
				return usage(r.cmd, "--to-seq: want a sequence number");
		} else if (!strncmp(argv[i], "--data-dir", 10)) {
			return usage(r.cmd, "--data-dir (offline) and --server (remote) exclude each other");
		} else
			return usage(r.cmd, "unknown argument %s", argv[i]);
	}
	if (to && from > to)
		return usage(r.cmd, "--from-seq %llu is after --to-seq %llu", (unsigned long long)from,
			     (unsigned long long)to);
	int code = remote_connect(&r);
	if (code)
		return code;
	Hodei__Audit__V1__VerifyRequest req = HODEI__AUDIT__V1__VERIFY_REQUEST__INIT;
	req.from_seq = from;
	req.to_seq = to;
	Hodei__Audit__V1__VerifyResponse *resp;
	code = remote_call(&r, "/hodei.audit.v1.AuditService/Verify", &req.base,
			   &hodei__audit__v1__verify_response__descriptor, (ProtobufCMessage **)&resp);
	remote_close(&r);
	if (code)
		return code;
	char hex[2 * FMT_HASH_BYTES + 1] = "";
	if (resp->chain_hash.len == FMT_HASH_BYTES)
		fmt_hex(resp->chain_hash.data, FMT_HASH_BYTES, hex);
	char problem[600];
	ProtobufCBinaryData pb = resp->problem;
	snprintf(problem, sizeof(problem), "%.*s", (int)FMT_MIN(pb.len, (size_t)500),
		 pb.len ? (const char *)pb.data : "");
	if (r.json) {
		json_t *o = json_pack("{s:s,s:b,s:I,s:I,s:s}", "type", "summary", "ok", resp->ok,
				      "events_checked", (json_int_t)resp->events_checked,
				      "segments_checked", (json_int_t)resp->segments_checked,
				      "chain_hash", hex);
		if (o && !resp->ok) {
			json_object_set_new(o, "first_bad_seq", json_integer((json_int_t)resp->first_bad_seq));
			json_object_set_new(o, "problem", json_stringn(problem, strlen(problem)));
		}
		if (!print_json_line(o, r.cmd))
			code = CLI_SERVER;
	} else if (resp->ok) {
		printf("verify: intact: %llu events in %llu segments checked; chain head %s\n",
		       (unsigned long long)resp->events_checked,
		       (unsigned long long)resp->segments_checked, hex[0] ? hex : "(none)");
	} else {
		ProtobufCBinaryData b = { strlen(problem), (uint8_t *)problem };
		char text[600];
		cell(&b, 500, text, sizeof(text));
		for (char *p = text + strlen(text); p > text && p[-1] == ' ';)
			*--p = 0;
		printf("verify: PROBLEMS FOUND: first bad seq %llu: %s (%llu events in %llu segments "
		       "checked)\n",
		       (unsigned long long)resp->first_bad_seq, text,
		       (unsigned long long)resp->events_checked,
		       (unsigned long long)resp->segments_checked);
	}
	if (!code && !resp->ok)
		code = CLI_PROBLEMS;
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	return code;
}

/* ---- health --------------------------------------------------------------------- */

int cli_health(int argc, char **argv)
{
	struct remote r;
	remote_init(&r, "health");
	for (int i = 2; i < argc; i++) {
		int m = remote_flag(&r, argc, argv, &i);
		if (m < 0)
			return -m;
		if (m == 0)
			return usage(r.cmd, "unknown argument %s", argv[i]);
	}
	int code = remote_connect(&r);
	if (code)
		return code;
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	Grpc__Health__V1__HealthCheckResponse *resp;
	code = remote_call(&r, "/grpc.health.v1.Health/Check", &req.base,
			   &grpc__health__v1__health_check_response__descriptor,
			   (ProtobufCMessage **)&resp);
	remote_close(&r);
	if (code)
		return code;
	static const char *const names[] = { "UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN" };
	unsigned s = (unsigned)resp->status;
	const char *name = s < FMT_ARRAY_LEN(names) ? names[s] : "UNKNOWN";
	if (r.json)
		print_json_line(json_pack("{s:s}", "status", name), r.cmd);
	else
		printf("%s: %s\n", r.server, name);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	/* Not serving is the server's answer, not a failed call: 5 all the same,
	 * so that scripts can wait for 0. */
	return s == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING ? CLI_OK
										       : CLI_SERVER;
}

/* ---- keys new ------------------------------------------------------------------- */

int cli_keys(int argc, char **argv)
{
	const char *cmd = "keys new", *tenant = NULL, *role = NULL, *v;
	bool json = false;
	if (argc < 3 || strcmp(argv[2], "new"))
		return usage("keys", "want 'keys new --tenant T --role writer|reader|admin'");
	for (int i = 3; i < argc; i++) {
		int m;
		if (!strcmp(argv[i], "--json"))
			json = true;
		else if ((m = cli_flag_value(argc, argv, &i, "--tenant", &v)) != 0) {
			if (m < 0 || !fmt_tenant_valid(fmt_str_c(v)))
				return usage(cmd, "--tenant: want 1-64 characters of [A-Za-z0-9._-]");
			tenant = v;
		} else if ((m = cli_flag_value(argc, argv, &i, "--role", &v)) != 0) {
			if (m < 0 || (strcmp(v, "writer") && strcmp(v, "reader") && strcmp(v, "admin")))
				return usage(cmd, "--role: want writer, reader or admin");
			role = v;
		} else
			return usage(cmd, "unknown argument %s", argv[i]);
	}
	if (!tenant || !role)
		return usage(cmd, "--tenant and --role are required");
	uint8_t rnd[KEY_RANDOM_BYTES], digest[EVP_MAX_MD_SIZE];
	for (size_t got = 0; got < sizeof(rnd);) {
		ssize_t n = getrandom(rnd + got, sizeof(rnd) - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "hodei-audit: %s: getrandom: %s\n", cmd, strerror(errno));
			return CLI_SERVER;
		}
		got += (size_t)n;
	}
	char key[4 + 2 * KEY_RANDOM_BYTES] = "hk_", hash[2 * 32 + 1];
	fmt_hex(rnd, sizeof(rnd), key + 3);
	unsigned dlen = 0;
	if (!EVP_Digest(key, strlen(key), digest, &dlen, EVP_sha256(), NULL) || dlen != 32) {
		fprintf(stderr, "hodei-audit: %s: SHA-256 failed\n", cmd);
		return CLI_SERVER;
	}
	fmt_hex(digest, 32, hash);
	explicit_bzero(rnd, sizeof(rnd));
	if (json) {
		char line[200];
		snprintf(line, sizeof(line), "%s %s %s", hash, tenant, role);
		print_json_line(json_pack("{s:s,s:s,s:s,s:s,s:s}", "key", key, "sha256", hash, "tenant",
					  tenant, "role", role, "keys_file_line", line),
				cmd);
	} else {
		printf("%s\n%s %s %s\n", key, hash, tenant, role);
		if (isatty(STDOUT_FILENO))
			fprintf(stderr, "# line 1: the API key; it is shown only now: store it as a secret.\n"
					"# line 2: add it to the server's keys file, then send the server SIGHUP.\n");
	}
	explicit_bzero(key, sizeof(key));
	return CLI_OK;
}

/* ---- append ------------------------------------------------------------------------ */

struct append {
	struct remote r;
	uint64_t batch_events_max, batch_bytes_max, in_flight_max;
	struct net_arena arena; /* the current batch's events */
	Hodei__Audit__V1__AuditEvent *evs;
	Hodei__Audit__V1__AuditEvent **ptrs;
	size_t n;              /* events in the current batch */
	size_t bytes;          /* its packed size */
	uint64_t first_line;   /* line of its first event */
	uint8_t *packed;
	size_t packed_cap;
	struct net_grpc_stream *stream;

	uint64_t lines, batches_sent, events_sent;
	uint64_t flight[IN_FLIGHT_MAX]; /* events per unanswered batch, a ring */
	uint64_t flight_head, in_flight;
	uint64_t answered, accepted, duplicates, first_seq, last_seq;
	uint8_t chain[FMT_HASH_BYTES];
	bool have_chain;

	bool failed;                 /* the stream ended early: *st says why */
	struct net_grpc_status st;
	uint64_t bad_line;           /* a line that did not parse (0: none) */
	char bad_why[600];
	int code;
	double t0, progress_at;
	bool progress;
};

static size_t varint_bytes(size_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static void append_progress(struct append *a, bool last)
{
	if (!a->progress)
		return;
	double now = mono_s();
	if (!last && now - a->progress_at < 0.2)
		return;
	a->progress_at = now;
	double secs = now - a->t0;
	uint64_t done = a->accepted + a->duplicates;
	if (last)
		fputs("\r\033[K", stderr);
	else
		fprintf(stderr, "\r\033[Kappend: %llu lines read, %llu events sent, %llu stored "
				"(%llu duplicates), %.0f events/s",
			(unsigned long long)a->lines, (unsigned long long)a->events_sent,
			(unsigned long long)a->accepted, (unsigned long long)a->duplicates,
			secs > 0 ? done / secs : 0.0);
}

static void append_fail(struct append *a, const struct net_grpc_status *st)
{
	if (a->failed)
		return;
	a->failed = true;
	a->st = *st;
}

/* Waits for the oldest unanswered batch's response. After a failure it
 * still returns the responses that arrived before the stream ended.
 * Returns true when it got one. */
static bool append_recv_one(struct append *a)
{
	uint8_t *msg;
	size_t len;
	struct net_grpc_status st;
	ASSERT(a->in_flight > 0);
	net_grpc_stream_set_timeout(a->stream, a->r.timeout_ms);
	int rc = net_grpc_stream_recv(a->stream, &msg, &len, &st);
	if (rc == 0) {
		st.code = GRPC_INTERNAL;
		snprintf(st.message, sizeof(st.message),
			 "the server ended the stream with %llu batches unanswered",
			 (unsigned long long)a->in_flight);
	}
	if (rc != 1) {
		append_fail(a, &st);
		return false;
	}
	Hodei__Audit__V1__AppendResponse *resp = hodei__audit__v1__append_response__unpack(NULL, len, msg);
	free(msg);
	if (!resp) {
		st.code = GRPC_INTERNAL;
		snprintf(st.message, sizeof(st.message), "cannot decode an AppendResponse");
		append_fail(a, &st);
		return false;
	}
	a->in_flight--;
	a->flight_head = (a->flight_head + 1) % IN_FLIGHT_MAX;
	a->answered++;
	a->accepted += resp->accepted;
	a->duplicates += resp->duplicates;
	if (resp->first_seq && (!a->first_seq || resp->first_seq < a->first_seq))
		a->first_seq = resp->first_seq;
	a->last_seq = FMT_MAX(a->last_seq, resp->last_seq);
	if (resp->chain_hash.len == FMT_HASH_BYTES) {
		memcpy(a->chain, resp->chain_hash.data, FMT_HASH_BYTES);
		a->have_chain = true;
	}
	hodei__audit__v1__append_response__free_unpacked(resp, NULL);
	append_progress(a, false);
	return true;
}

/* Sends the current batch and forgets its events. */
static void append_send_batch(struct append *a)
{
	if (a->n == 0 || a->failed)
		return;
	Hodei__Audit__V1__AppendRequest req = HODEI__AUDIT__V1__APPEND_REQUEST__INIT;
	req.n_events = a->n;
	req.events = a->ptrs;
	size_t len = hodei__audit__v1__append_request__get_packed_size(&req);
	ASSERT(len == a->bytes);
	if (len > a->packed_cap) {
		uint8_t *p = realloc(a->packed, len);
		if (!p) {
			struct net_grpc_status st = { GRPC_RESOURCE_EXHAUSTED, "out of memory packing a batch" };
			append_fail(a, &st);
			return;
		}
		a->packed = p;
		a->packed_cap = len;
	}
	hodei__audit__v1__append_request__pack(&req, a->packed);
	struct net_grpc_status st;
	net_grpc_stream_set_timeout(a->stream, a->r.timeout_ms);
	if (net_grpc_stream_send(a->stream, a->packed, len, &st)) {
		append_fail(a, &st);
		return;
	}
	a->flight[(a->flight_head + a->in_flight) % IN_FLIGHT_MAX] = a->n;
	a->in_flight++;
	a->batches_sent++;
	a->events_sent += a->n;
	a->n = 0;
	a->bytes = 0;
	net_arena_reset(&a->arena);
	while (a->in_flight >= a->in_flight_max && !a->failed)
		append_recv_one(a);
}

/* Parses one line into the current batch, cutting the batch first when
 * the event would take it over --batch-bytes. Returns false on a bad line. */
static bool append_line(struct append *a, const char *line, size_t len)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		Hodei__Audit__V1__AuditEvent *ev = &a->evs[a->n];
		int rc = net_event_parse(line, len, &a->arena, ev, a->bad_why, sizeof(a->bad_why));
		if (rc == FMT_E_NOMEM && a->n > 0 && attempt == 0) {
			append_send_batch(a); /* the arena is full: a smaller batch */
			continue;
		}
		if (rc) {
			a->bad_line = a->lines;
			return false;
		}
		size_t size = hodei__audit__v1__audit_event__get_packed_size(ev);
		size_t add = 1 + varint_bytes(size) + size;
		if (a->n > 0 && a->bytes + add > a->batch_bytes_max && attempt == 0) {
			/* Send what came before; the arena reset forgets this event,
			 * so it is parsed again into the new batch. */
			append_send_batch(a);
			continue;
		}
		if (a->n == 0)
			a->first_line = a->lines;
		a->n++;
		a->bytes += add;
		if (a->n == a->batch_events_max)
			append_send_batch(a);
		return true;
	}
	ASSERT(!"a line parsed once parses again");
	return false;
}

/* One line of at most LINE_BYTES_MAX bytes, without its newline. Returns
 * 1, 0 at the end of the input, -E2BIG (the line is skipped), -EIO. */
static int read_line(FILE *in, char **buf, size_t *cap, size_t *len)
{
	size_t n = 0;
	int c;
	bool too_long = false;
	if (!*buf) {
		*buf = malloc(4096);
		if (!*buf)
			return -ENOMEM;
		*cap = 4096;
	}
	while ((c = getc_unlocked(in)) != EOF && c != '\n') {
		if (n + 1 >= *cap) {
			if (*cap >= LINE_BYTES_MAX) {
				too_long = true;
				continue;
			}
			size_t want = *cap * 2;
			char *p = realloc(*buf, want);
			if (!p)
				return -ENOMEM;
			*buf = p;
			*cap = want;
		}
		(*buf)[n++] = (char)c;
	}
	if (ferror(in))
		return -EIO;
	if (c == EOF && n == 0 && !too_long)
		return 0;
	(*buf)[n] = 0;
	*len = n;
	return too_long ? -E2BIG : 1;
}

static bool blank(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
			return false;
	return true;
}

static void append_read_all(struct append *a)
{
	char *line = NULL;
	size_t cap = 0, len = 0;
	int rc;
	while (!a->failed && (rc = read_line(stdin, &line, &cap, &len)) != 0) {
		a->lines++;
		if (rc == -E2BIG) {
			a->bad_line = a->lines;
			snprintf(a->bad_why, sizeof(a->bad_why), "longer than %u bytes", LINE_BYTES_MAX);
			break;
		}
		if (rc < 0) {
			fprintf(stderr, "hodei-audit: append: reading stdin: %s\n", strerror(-rc));
			a->code = CLI_UNREADABLE;
			break;
		}
		if (blank(line, len))
			continue;
		if (!append_line(a, line, len))
			break;
		append_progress(a, false);
	}
	free(line);
	if (!a->bad_line && !a->code)
		append_send_batch(a);
}

static void append_finish_stream(struct append *a)
{
	struct net_grpc_status st;
	if (!a->failed && net_grpc_stream_close_send(a->stream, &st))
		append_fail(a, &st);
	while (a->in_flight > 0 && append_recv_one(a))
		;
	if (!a->failed) {
		uint8_t *msg;
		size_t len;
		net_grpc_stream_set_timeout(a->stream, a->r.timeout_ms);
		int rc = net_grpc_stream_recv(a->stream, &msg, &len, &st);
		if (rc == 1) {
			free(msg);
			st.code = GRPC_INTERNAL;
			snprintf(st.message, sizeof(st.message), "more responses than batches");
		}
		if (rc != 0)
			append_fail(a, &st);
	}
}

static void append_summary(struct append *a)
{
	double secs = mono_s() - a->t0;
	uint64_t done = a->accepted + a->duplicates, unanswered = 0;
	for (uint64_t k = 0; k < a->in_flight; k++)
		unanswered += a->flight[(a->flight_head + k) % IN_FLIGHT_MAX];
	char chain[2 * FMT_HASH_BYTES + 1] = "";
	if (a->have_chain)
		fmt_hex(a->chain, FMT_HASH_BYTES, chain);
	double rate = secs > 0 ? done / secs : 0;
	if (a->r.json) {
		json_t *o = json_pack("{s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f}", "ok",
				      !a->failed && !a->bad_line && !a->code, "lines",
				      (json_int_t)a->lines, "events_sent", (json_int_t)a->events_sent,
				      "batches", (json_int_t)a->batches_sent, "accepted",
				      (json_int_t)a->accepted, "duplicates", (json_int_t)a->duplicates,
				      "first_seq", (json_int_t)a->first_seq, "last_seq",
				      (json_int_t)a->last_seq, "unacknowledged_events",
				      (json_int_t)unanswered, "seconds", secs, "events_per_second", rate);
		if (o && a->have_chain)
			json_object_set_new(o, "chain_hash", json_string(chain));
		if (o && a->bad_line)
			json_object_set_new(o, "error", json_pack("{s:I,s:s}", "line",
								  (json_int_t)a->bad_line, "message",
								  a->bad_why));
		else if (o && a->failed)
			json_object_set_new(o, "error", json_pack("{s:s,s:s}", "status",
								  grpc_status_name(a->st.code),
								  "message", a->st.message));
		print_json_line(o, a->r.cmd);
		return;
	}
	printf("append: %llu events in %llu batches: %llu accepted, %llu duplicates",
	       (unsigned long long)done, (unsigned long long)a->answered,
	       (unsigned long long)a->accepted, (unsigned long long)a->duplicates);
	if (a->first_seq)
		printf(", seq %llu..%llu", (unsigned long long)a->first_seq,
		       (unsigned long long)a->last_seq);
	printf(", %.2f s, %.0f events/s\n", secs, rate);
	if (unanswered)
		printf("append: %llu events were sent but not acknowledged: they may or may not be "
		       "stored (sending them again is safe for events that carry an event_id)\n",
		       (unsigned long long)unanswered);
}

static int append_flags(struct append *a, int argc, char **argv)
{
	for (int i = 2; i < argc; i++) {
		int m = remote_flag(&a->r, argc, argv, &i);
		if (m < 0)
			return -m;
		if (m > 0)
			continue;
		const char *v;
		if ((m = cli_flag_value(argc, argv, &i, "--batch", &v)) != 0) {
			if (m < 0 || !parse_u64(v, BATCH_EVENTS_MAX, &a->batch_events_max) ||
			    !a->batch_events_max)
				return usage(a->r.cmd, "--batch: want 1..%d events", BATCH_EVENTS_MAX);
		} else if ((m = cli_flag_value(argc, argv, &i, "--in-flight", &v)) != 0) {
			if (m < 0 || !parse_u64(v, IN_FLIGHT_MAX, &a->in_flight_max) || !a->in_flight_max)
				return usage(a->r.cmd, "--in-flight: want 1..%d batches", IN_FLIGHT_MAX);
		} else if ((m = cli_flag_value(argc, argv, &i, "--batch-bytes", &v)) != 0) {
			if (m < 0 || !parse_u64(v, NET_GRPC_MESSAGE_MAX, &a->batch_bytes_max) ||
			    a->batch_bytes_max < 1024)
				return usage(a->r.cmd, "--batch-bytes: want 1024..%u", NET_GRPC_MESSAGE_MAX);
		} else
			return usage(a->r.cmd, "unknown argument %s", argv[i]);
	}
	return CLI_OK;
}

int cli_append(int argc, char **argv)
{
	struct append *a = calloc(1, sizeof(*a));
	if (!a)
		return CLI_SERVER;
	remote_init(&a->r, "append");
	a->batch_events_max = BATCH_EVENTS_DEFAULT;
	a->batch_bytes_max = BATCH_BYTES_DEFAULT;
	a->in_flight_max = IN_FLIGHT_DEFAULT;
	int code = append_flags(a, argc, argv);
	if (code)
		goto out;
	a->evs = calloc(a->batch_events_max, sizeof(*a->evs));
	a->ptrs = calloc(a->batch_events_max, sizeof(*a->ptrs));
	if (!a->evs || !a->ptrs) {
		fprintf(stderr, "hodei-audit: append: out of memory\n");
		code = CLI_SERVER;
		goto out;
	}
	for (size_t k = 0; k < a->batch_events_max; k++)
		a->ptrs[k] = &a->evs[k];
	net_arena_init(&a->arena, BATCH_ARENA_BYTES);
	if ((code = remote_connect(&a->r)) != 0)
		goto out;
	if (net_grpc_stream_open(a->r.conn, "/hodei.audit.v1.AuditService/AppendStream", a->r.md,
				 a->r.md_count, 0, &a->stream, &a->st)) {
		code = status_exit(&a->r, &a->st);
		goto out;
	}
	a->t0 = mono_s();
	a->progress = isatty(STDERR_FILENO);
	append_read_all(a);
	append_finish_stream(a);
	append_progress(a, true);
	append_summary(a);
	if (a->bad_line) {
		fprintf(stderr, "hodei-audit: append: line %llu: %s\n", (unsigned long long)a->bad_line,
			a->bad_why);
		fprintf(stderr, "hodei-audit: append: stopped; nothing from line %llu on was sent\n",
			(unsigned long long)(a->n ? a->first_line : a->bad_line));
		code = CLI_USAGE;
	}
	if (a->failed) {
		int c = status_exit(&a->r, &a->st);
		if (!code)
			code = c;
	}
	if (!code)
		code = a->code;
out:
	net_grpc_stream_free(a->stream);
	remote_close(&a->r);
	net_arena_free(&a->arena);
	free(a->evs);
	free(a->ptrs);
	free(a->packed);
	free(a);
	return code;
}
