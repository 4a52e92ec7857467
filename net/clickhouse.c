// SPDX-License-Identifier: Apache-2.0
/*
 * clickhouse.c — the ClickHouse mirror client (see clickhouse.h for the
 * exactly-once protocol and its invariants E1-E4; docs/CLICKHOUSE.md for
 * the schema and the analyst's view).
 *
 * HTTP. One curl easy handle per client, reused so the TCP connection is
 * kept alive between requests. Every request body goes through one read
 * callback (with a seek callback, so curl can resend it on a fresh
 * connection when a kept-alive one turned out dead). Queries whose answer
 * is read are POSTed with wait_end_of_query=1: ClickHouse then buffers the
 * answer, so an error that happens late still comes as a non-200 status
 * instead of text appended to a 200 body. Answers are read as
 * TabSeparatedRaw (numbers and type names only) or RowBinary (seqs), into a
 * buffer with a ceiling. "Expect: 100-continue" is turned off: it only costs
 * a round trip here.
 *
 * INSERT. The SQL goes in the `query` URL parameter, the rows are the body:
 * RowBinary (exact for every byte string: a length and the bytes; no
 * escaping to get wrong), gzip'd with zlib (E2: a cut gzip stream is an
 * error, a cut plain body is not). The URL carries the settings that make
 * the body one block: max_insert_block_size and min_insert_block_size_rows
 * above the row count, min_insert_block_size_bytes (and, where the server
 * has them, max_insert_block_size_bytes) above any body, parallel parsing
 * (current releases) and async inserts off, insert_deduplicate=0 (a plain
 * MergeTree does not deduplicate anyway; with it on, a re-insert after an
 * operator dropped a partition to repair it could be silently skipped).
 * Which of these the server knows is learned in ch_ensure_schema: sending
 * a setting a server does not know is an error there.
 *
 * Test-only crash points, from HODEI_FAILPOINT (a comma-separated list):
 *   clickhouse_after_insert[:N]  abort() right after the N-th (default 1st)
 *                                INSERT of this client succeeded, before
 *                                the call returns (a crash before the
 *                                caller's bookkeeping)
 *   clickhouse_mid_insert[:N]    abort() when half of the N-th INSERT's
 *                                body was handed to curl (a client dying
 *                                mid-upload)
 */
#include "net/clickhouse.h"
#include "net/units.h"

#include "format/hash.h"
#include "format/segment.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>
#include <zlib.h>

#ifndef HODEI_VERSION
#define HODEI_VERSION "0"
#endif

#define RESPONSE_BYTES_MAX (1u << 20)   /* answers other than a seq list */
#define SQL_BYTES_MAX 2048
#define URL_BYTES_MAX 8192
#define RAW_BYTES_INITIAL (1u << 20)
#define UPLOAD_STEP_BYTES (64u << 10)
#define BLOCK_BYTES_NEVER (1ull << 50)  /* a block-size threshold no body reaches */
#define ERROR_BODY_SCAN 4096

_Static_assert(CH_INSERT_BYTES_MIN <= CH_INSERT_BYTES_MAX_DEFAULT, "default below the minimum");
_Static_assert(CH_INSERT_ROWS_MAX_DEFAULT <= FMT_SEG_ROWS_MAX, "rows default over the format's");
_Static_assert(CH_MONTHS == 1632, "1970-01 .. 2105-12");

const char *const ch_column_names[CH_COLUMN_COUNT] = {
	"tenant_id", "event_id", "seq", "occurred_at", "occurred_at_ns", "received_at_ns",
	"actor_id", "actor_type", "action", "resource_type", "resource_id", "outcome",
	"source_ip", "user_agent", "request_id", "trace_id", "attr_keys", "attr_values",
	"details_json", "chain_hash", "segment_id",
};

/* As ClickHouse prints them in system.columns (18.16 and current). */
const char *const ch_column_types[CH_COLUMN_COUNT] = {
	"String", "UUID", "UInt64", "DateTime('UTC')", "Int64", "Int64",
	"String", "String", "String", "String", "String",
	"Enum8('unspecified' = 0, 'success' = 1, 'failure' = 2, 'denied' = 3)",
	"String", "String", "String", "String", "Array(String)", "Array(String)",
	"String", "String", "UInt64",
};

/* Insert settings a server may or may not know (ch_ensure_schema). */
enum {
	SET_MAX_BLOCK = 1u << 0,       /* max_insert_block_size */
	SET_MIN_ROWS = 1u << 1,        /* min_insert_block_size_rows */
	SET_MIN_BYTES = 1u << 2,       /* min_insert_block_size_bytes */
	SET_MAX_BYTES = 1u << 3,       /* max_insert_block_size_bytes (current releases) */
	SET_PARALLEL = 1u << 4,        /* input_format_parallel_parsing (current releases) */
	SET_ASYNC = 1u << 5,           /* async_insert (current releases) */
	SET_DEDUP = 1u << 6,           /* insert_deduplicate */
};

static const struct {
	const char *name;
	unsigned bit;
} insert_settings[] = {
	{ "max_insert_block_size", SET_MAX_BLOCK },
	{ "min_insert_block_size_rows", SET_MIN_ROWS },
	{ "min_insert_block_size_bytes", SET_MIN_BYTES },
	{ "max_insert_block_size_bytes", SET_MAX_BYTES },
	{ "input_format_parallel_parsing", SET_PARALLEL },
	{ "async_insert", SET_ASYNC },
	{ "insert_deduplicate", SET_DEDUP },
};

/* One month (partition) of the segment being mirrored. */
struct ch_month {
	uint32_t rows;        /* the segment's rows in this month */
	uint64_t found;       /* count() in ClickHouse */
	uint64_t found_uniq;  /* uniqExact(seq) in ClickHouse */
	bool seen;            /* ClickHouse reported this month */
};

struct ch_client {
	struct ch_config cfg;
	CURL *curl;
	struct curl_slist *hdr_query, *hdr_insert;
	char curl_err[CURL_ERROR_SIZE];
	struct ch_error err;
	bool schema_ok;
	unsigned settings;            /* SET_* bits the server knows */

	/* The answer of the current request. */
	char *resp;
	size_t resp_len, resp_cap, resp_max;
	bool resp_over;

	/* The body of the current request (borrowed). */
	const uint8_t *up;
	size_t up_len, up_off, up_crash_at;  /* up_crash_at 0: no crash point */

	/* INSERT buffers: raw RowBinary and its gzip. */
	uint8_t *raw, *gz;
	size_t raw_len, raw_cap, gz_cap;
	z_stream z;
	bool z_ready;

	struct ch_month *months;      /* [CH_MONTHS] */
	uint16_t *used;               /* month indexes with rows, ascending */
	uint32_t used_count;
	struct fmt_attr attrs[FMT_ATTRS_HARD_MAX];
	char sql[SQL_BYTES_MAX];
	char url[URL_BYTES_MAX];

	uint32_t fail_after_insert, fail_mid_insert, inserts_done;
};

/* ---- configuration ----------------------------------------------------------- */

void ch_config_default(struct ch_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->url, sizeof(cfg->url), "%s", CH_URL_DEFAULT);
	snprintf(cfg->user, sizeof(cfg->user), "%s", CH_USER_DEFAULT);
	snprintf(cfg->database, sizeof(cfg->database), "%s", CH_DATABASE_DEFAULT);
	cfg->timeout_ms = CH_TIMEOUT_MS_DEFAULT;
	cfg->connect_timeout_ms = CH_CONNECT_TIMEOUT_MS_DEFAULT;
	cfg->insert_bytes_max = CH_INSERT_BYTES_MAX_DEFAULT;
	cfg->insert_rows_max = CH_INSERT_ROWS_MAX_DEFAULT;
	cfg->gzip_level = CH_GZIP_LEVEL_DEFAULT;
}

static int invalid(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int invalid(char *err, size_t cap, const char *fmt, ...)
{
	if (cap) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, cap, fmt, ap);
		va_end(ap);
	}
	return FMT_E_INVALID;
}

static bool copy_str(char *dst, size_t cap, const char *src)
{
	size_t n = strlen(src);
	if (n >= cap)
		return false;
	memcpy(dst, src, n + 1);
	return true;
}

/* "30s", "500ms", "2m", "1h" or plain seconds, into ms (net/units.h). */
static bool parse_duration_ms(const char *s, uint32_t *out)
{
	int64_t ns;
	if (units_parse_duration_ns(s, 1000000000ll, &ns) != 0 || ns / 1000000 > UINT32_MAX)
		return false;
	*out = (uint32_t)(ns / 1000000);
	return true;
}

static int env_str(const char *name, char *dst, size_t cap, char *err, size_t err_cap)
{
	const char *v = getenv(name);
	if (!v || !*v)
		return 0;
	if (!copy_str(dst, cap, v))
		return invalid(err, err_cap, "%s: longer than %zu bytes", name, cap - 1);
	return 0;
}

int ch_config_from_env(struct ch_config *cfg, char *err, size_t err_cap)
{
	ch_config_default(cfg);
	int rc;
	if ((rc = env_str("HODEI_CLICKHOUSE_URL", cfg->url, sizeof(cfg->url), err, err_cap)) ||
	    (rc = env_str("HODEI_CLICKHOUSE_USER", cfg->user, sizeof(cfg->user), err, err_cap)) ||
	    (rc = env_str("HODEI_CLICKHOUSE_PASSWORD", cfg->password, sizeof(cfg->password), err,
			  err_cap)) ||
	    (rc = env_str("HODEI_CLICKHOUSE_DATABASE", cfg->database, sizeof(cfg->database), err,
			  err_cap)))
		return rc;
	const char *v = getenv("HODEI_CLICKHOUSE_TIMEOUT");
	if (v && *v && !parse_duration_ms(v, &cfg->timeout_ms))
		return invalid(err, err_cap, "HODEI_CLICKHOUSE_TIMEOUT: '%s' is not a duration "
			       "(e.g. 30s, 500ms, 2m)", v);
	v = getenv("HODEI_CLICKHOUSE_INSERT_BYTES_MAX");
	if (v && *v && units_parse_size(v, &cfg->insert_bytes_max) != 0)
		return invalid(err, err_cap, "HODEI_CLICKHOUSE_INSERT_BYTES_MAX: '%s' is not a size "
			       "(bytes, or with KiB, MiB, GiB)", v);
	v = getenv("HODEI_CLICKHOUSE_INSERT_ROWS_MAX");
	uint64_t rows;
	if (v && *v) {
		if (units_parse_size(v, &rows) != 0 || rows > UINT32_MAX)
			return invalid(err, err_cap, "HODEI_CLICKHOUSE_INSERT_ROWS_MAX: '%s' is not a "
				       "number of rows", v);
		cfg->insert_rows_max = (uint32_t)rows;
	}
	return ch_config_check(cfg, err, err_cap);
}

static bool database_name_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > CH_DATABASE_MAX || (s[0] >= '0' && s[0] <= '9'))
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		      ch == '_'))
			return false;
	}
	return true;
}

int ch_config_check(const struct ch_config *cfg, char *err, size_t err_cap)
{
	if (strncmp(cfg->url, "http://", 7) != 0 && strncmp(cfg->url, "https://", 8) != 0)
		return invalid(err, err_cap, "url: '%s' does not start with http:// or https://",
			       cfg->url);
	if (strchr(cfg->url, '?') || strchr(cfg->url, '#'))
		return invalid(err, err_cap, "url: '%s' has a query or fragment (settings are "
			       "the client's)", cfg->url);
	if (!database_name_valid(cfg->database))
		return invalid(err, err_cap, "database: '%s' is not 1-%d characters of "
			       "[A-Za-z0-9_] starting with a letter or '_'", cfg->database,
			       CH_DATABASE_MAX);
	if (cfg->timeout_ms < 100 || cfg->connect_timeout_ms < 100)
		return invalid(err, err_cap, "timeout: at least 100 ms");
	if (cfg->insert_bytes_max < CH_INSERT_BYTES_MIN || cfg->insert_bytes_max > CH_INSERT_BYTES_LIMIT)
		return invalid(err, err_cap, "insert_bytes_max: %llu is outside [%llu, %llu]",
			       (unsigned long long)cfg->insert_bytes_max,
			       (unsigned long long)CH_INSERT_BYTES_MIN,
			       (unsigned long long)CH_INSERT_BYTES_LIMIT);
	if (cfg->insert_rows_max < 1 || cfg->insert_rows_max > FMT_SEG_ROWS_MAX)
		return invalid(err, err_cap, "insert_rows_max: %u is outside [1, %u]",
			       cfg->insert_rows_max, (unsigned)FMT_SEG_ROWS_MAX);
	if (cfg->gzip_level < 1 || cfg->gzip_level > 9)
		return invalid(err, err_cap, "gzip_level: %d is outside [1, 9]", cfg->gzip_level);
	return 0;
}

/* ---- errors -------------------------------------------------------------------- */

const char *ch_strerror(int rc)
{
	switch (rc) {
	case CH_E_NETWORK: return "ClickHouse unreachable";
	case CH_E_TIMEOUT: return "ClickHouse did not answer in time";
	case CH_E_AUTH: return "ClickHouse refused the credentials";
	case CH_E_SERVER: return "ClickHouse answered an error";
	case CH_E_SCHEMA: return "ClickHouse table missing or different";
	case CH_E_CONFLICT: return "rows in ClickHouse that the mirror cannot explain";
	case CH_E_PROTOCOL: return "unexpected answer from ClickHouse";
	default: return fmt_strerror(rc);
	}
}

enum ch_err_kind ch_error_kind(int rc)
{
	switch (rc) {
	case 0: return CH_KIND_NONE;
	case CH_E_NETWORK: return CH_KIND_NETWORK;
	case CH_E_TIMEOUT: return CH_KIND_TIMEOUT;
	case CH_E_AUTH: return CH_KIND_AUTH;
	case CH_E_SERVER: return CH_KIND_SERVER;
	case CH_E_SCHEMA: return CH_KIND_SCHEMA;
	case CH_E_CONFLICT: return CH_KIND_CONFLICT;
	case FMT_E_CORRUPT:
	case FMT_E_CHAIN:
	case FMT_E_TRUNCATED:
	case FMT_E_VERSION: return CH_KIND_DATA;
	default: return CH_KIND_OTHER;
	}
}

const char *ch_kind_name(enum ch_err_kind kind)
{
	static const char *const names[CH_KIND_COUNT] = {
		"none", "network", "timeout", "auth", "server", "schema", "conflict", "data", "other",
	};
	return (unsigned)kind < CH_KIND_COUNT ? names[kind] : "other";
}

static int set_error(struct ch_client *c, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Records rc with a message (HTTP fields cleared) and returns rc. */
static int set_error(struct ch_client *c, int rc, const char *fmt, ...)
{
	va_list ap;
	c->err.rc = rc;
	c->err.http_status = 0;
	c->err.server_code = 0;
	va_start(ap, fmt);
	vsnprintf(c->err.message, sizeof(c->err.message), fmt, ap);
	va_end(ap);
	return rc;
}

static bool code_in(int code, const int *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (list[i] == code)
			return true;
	return false;
}

/* Copies [s, e) into out as one line: control bytes become spaces. */
static void copy_line(char *out, size_t cap, const char *s, const char *e)
{
	size_t n = 0;
	while (s < e && *s == ' ')
		s++;
	for (; s < e && n + 1 < cap; s++)
		out[n++] = ((unsigned char)*s < 0x20 || *s == 0x7f) ? ' ' : *s;
	while (n > 0 && out[n - 1] == ' ')
		n--;
	out[n] = 0;
}

int ch_parse_error(long http_status, const char *body, size_t len, struct ch_error *err)
{
	/* ClickHouse error codes (src/Common/ErrorCodes.cpp). */
	static const int auth_codes[] = { 192, 193, 194, 195, 497, 516 };
	static const int schema_codes[] = { 10, 16, 47, 60, 81 };
	char text[ERROR_BODY_SCAN + 1];
	size_t n = FMT_MIN(len, (size_t)ERROR_BODY_SCAN);
	memcpy(text, body ? body : "", body ? n : 0);
	text[body ? n : 0] = 0;
	err->http_status = http_status;
	err->server_code = 0;
	const char *line_end = strchr(text, '\n');
	if (!line_end)
		line_end = text + strlen(text);
	const char *code = strstr(text, "Code: ");
	const char *msg = text, *msg_end = line_end;
	if (code && code < line_end) {
		err->server_code = atoi(code + 6);
		const char *p = code + 6;
		while (*p >= '0' && *p <= '9')
			p++;
		const char *disp = strstr(p, "e.displayText() = ");
		if (disp && disp < line_end) {
			msg = disp + 18;                     /* 18.16 */
			const char *what = strstr(msg, ", e.what() = ");
			if (what && what < line_end)
				msg_end = what;
		} else {
			msg = (*p == '.' || *p == ',') ? p + 1 : p;  /* current releases */
			const char *ver = strstr(msg, " (version ");
			if (ver && ver < line_end)
				msg_end = ver;
		}
		if (!strncmp(msg, " DB::Exception: ", 16))
			msg += 16;
		else if (!strncmp(msg, "DB::Exception: ", 15))
			msg += 15;
	}
	copy_line(err->message, sizeof(err->message), msg, msg_end);
	if (!err->message[0])
		snprintf(err->message, sizeof(err->message), "HTTP status %ld", http_status);
	if (http_status == 401 || http_status == 403 ||
	    code_in(err->server_code, auth_codes, FMT_ARRAY_LEN(auth_codes)))
		err->rc = CH_E_AUTH;
	else if (code_in(err->server_code, schema_codes, FMT_ARRAY_LEN(schema_codes)))
		err->rc = CH_E_SCHEMA;
	else
		err->rc = CH_E_SERVER;
	return err->rc;
}

const struct ch_error *ch_last_error(const struct ch_client *c)
{
	return &c->err;
}

/* ---- SQL text -------------------------------------------------------------------- */

size_t ch_sql_quote(const char *s, size_t len, char *out, size_t cap)
{
	size_t n = 0;
#define PUT(ch) do { if (n + 1 < cap) out[n] = (ch); n++; } while (0)
	PUT('\'');
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '\\' || ch == '\'') {
			PUT('\\');
			PUT((char)ch);
		} else if (ch < 0x20 || ch == 0x7f) {
			static const char hex[] = "0123456789abcdef";
			PUT('\\');
			PUT('x');
			PUT(hex[ch >> 4]);
			PUT(hex[ch & 15]);
		} else {
			PUT((char)ch);
		}
	}
	PUT('\'');
#undef PUT
	if (cap)
		out[n < cap ? n : cap - 1] = 0;
	return n;
}

/* Where output n of a cap-byte buffer goes; out may be NULL (cap 0) when
 * the caller only wants the length, and NULL + 0 is not defined in C. */
static char *at(char *out, size_t n, size_t cap)
{
	return out ? out + FMT_MIN(n, cap) : NULL;
}

/* Statement i (0: database, 1: table) of the schema, without ';'. */
static size_t schema_statement(int i, const char *db, char *out, size_t cap)
{
	if (i == 0)
		return (size_t)snprintf(out, cap, "CREATE DATABASE IF NOT EXISTS `%s`", db);
	size_t n = (size_t)snprintf(out, cap, "CREATE TABLE IF NOT EXISTS `%s`.%s\n(\n", db, CH_TABLE);
	for (int k = 0; k < CH_COLUMN_COUNT; k++)
		n += (size_t)snprintf(at(out, n, cap), cap - FMT_MIN(n, cap), "    %s %s%s\n",
				      ch_column_names[k], ch_column_types[k],
				      k + 1 < CH_COLUMN_COUNT ? "," : "");
	n += (size_t)snprintf(at(out, n, cap), cap - FMT_MIN(n, cap),
			      ")\nENGINE = MergeTree\n"
			      "PARTITION BY toYYYYMM(occurred_at)\n"
			      "ORDER BY (tenant_id, occurred_at, seq)\n"
			      "SETTINGS index_granularity = 8192");
	return n;
}

size_t ch_schema_sql(const char *database, char *out, size_t cap)
{
	size_t n = 0;
	for (int i = 0; i < 2; i++) {
		n += schema_statement(i, database, at(out, n, cap), cap - FMT_MIN(n, cap));
		n += (size_t)snprintf(at(out, n, cap), cap - FMT_MIN(n, cap), i ? ";\n" : ";\n\n");
	}
	return n;
}

/* ---- RowBinary rows ------------------------------------------------------------------ */

uint32_t ch_occurred_at_s(int64_t occurred_at_ns)
{
	int64_t s = occurred_at_ns / 1000000000;
	if (occurred_at_ns < 0 && s * 1000000000 != occurred_at_ns)
		s--;
	if (s < 0)
		return 0;
	return s > (int64_t)CH_DATETIME_MAX_S ? CH_DATETIME_MAX_S : (uint32_t)s;
}

uint32_t ch_month_of(uint32_t unix_s)
{
	/* Days to civil date (H. Hinnant's algorithm), for days >= 0. */
	int64_t z = (int64_t)(unix_s / 86400) + 719468;
	int64_t era = z / 146097;
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	int64_t m = mp < 10 ? mp + 3 : mp - 9;
	int64_t y = yoe + era * 400 + (m <= 2);
	return (uint32_t)(y * 100 + m);
}

/* YYYYMM of a month index; the inverse of month_index. */
static uint32_t month_yyyymm(int i)
{
	return 197001 + (uint32_t)(i / 12) * 100 + (uint32_t)(i % 12);
}

/* Index of a YYYYMM month in [0, CH_MONTHS), or -1. */
static int month_index(uint32_t yyyymm)
{
	uint32_t y = yyyymm / 100, m = yyyymm % 100;
	if (y < 1970 || y > 2105 || m < 1 || m > 12)
		return -1;
	return (int)((y - 1970) * 12 + (m - 1));
}


static uint8_t *put_str(uint8_t *p, const char *s, uint32_t len)
{
	p = fmt_put_varint(p, len);
	if (len)
		memcpy(p, s, len);
	return p + len;
}

static size_t str_size(struct fmt_str s)
{
	return fmt_varint_size(s.len) + s.len;
}

size_t ch_row_size(const struct fmt_event *ev)
{
	size_t n = str_size(ev->tenant) + 16 + 8 + 4 + 8 + 8 + 1 + 8;
	for (int f = 0; f < FMT_F_STRING_COUNT; f++)
		n += str_size(ev->str[f]);
	n += 2 * fmt_varint_size(ev->attr_count);
	for (uint32_t i = 0; i < ev->attr_count; i++)
		n += str_size(ev->attrs[i].key) + str_size(ev->attrs[i].value);
	n += str_size(ev->details_json);
	n += fmt_varint_size(2 * FMT_HASH_BYTES) + 2 * FMT_HASH_BYTES;
	return n;
}

/* UUID: two UInt64 halves (bytes 0-7, then 8-15 of the canonical form),
 * each little-endian — ClickHouse's RowBinary layout of UUID. */
static uint8_t *put_uuid(uint8_t *p, const uint8_t id[FMT_EVENT_ID_BYTES])
{
	for (int i = 0; i < 8; i++)
		p[i] = id[7 - i];
	for (int i = 0; i < 8; i++)
		p[8 + i] = id[15 - i];
	return p + 16;
}

static uint8_t *put_u64(uint8_t *p, uint64_t v)
{
	fmt_put_u64(p, v);
	return p + 8;
}

int64_t ch_row_encode(const struct fmt_event *ev, const uint8_t chain[FMT_HASH_BYTES],
		      uint64_t segment_id, uint8_t *out, size_t cap)
{
	size_t need = ch_row_size(ev);
	if (need > cap)
		return FMT_E_TOO_BIG;
	if (ev->outcome > FMT_OUTCOME_DENIED)
		return FMT_E_INVALID;  /* a newer outcome than the Enum8 knows */
	static const enum fmt_field before_outcome[] = { FMT_F_ACTOR_ID, FMT_F_ACTOR_TYPE, FMT_F_ACTION,
							 FMT_F_RESOURCE_TYPE, FMT_F_RESOURCE_ID };
	static const enum fmt_field after_outcome[] = { FMT_F_SOURCE_IP, FMT_F_USER_AGENT,
							FMT_F_REQUEST_ID, FMT_F_TRACE_ID };
	uint8_t *p = put_str(out, ev->tenant.ptr, ev->tenant.len);
	p = put_uuid(p, ev->event_id);
	p = put_u64(p, ev->seq);
	fmt_put_u32(p, ch_occurred_at_s(ev->occurred_at_ns));
	p = put_u64(p + 4, (uint64_t)ev->occurred_at_ns);
	p = put_u64(p, (uint64_t)ev->received_at_ns);
	for (size_t i = 0; i < FMT_ARRAY_LEN(before_outcome); i++)
		p = put_str(p, ev->str[before_outcome[i]].ptr, ev->str[before_outcome[i]].len);
	*p++ = (uint8_t)ev->outcome;
	for (size_t i = 0; i < FMT_ARRAY_LEN(after_outcome); i++)
		p = put_str(p, ev->str[after_outcome[i]].ptr, ev->str[after_outcome[i]].len);
	p = fmt_put_varint(p, ev->attr_count);
	for (uint32_t i = 0; i < ev->attr_count; i++)
		p = put_str(p, ev->attrs[i].key.ptr, ev->attrs[i].key.len);
	p = fmt_put_varint(p, ev->attr_count);
	for (uint32_t i = 0; i < ev->attr_count; i++)
		p = put_str(p, ev->attrs[i].value.ptr, ev->attrs[i].value.len);
	p = put_str(p, ev->details_json.ptr, ev->details_json.len);
	p = fmt_put_varint(p, 2 * FMT_HASH_BYTES);
	/* fmt_hex ends with a NUL, which lands on segment_id's first byte
	 * (inside the row) and is overwritten just below. */
	fmt_hex(chain, FMT_HASH_BYTES, (char *)p);
	p += 2 * FMT_HASH_BYTES;
	p = put_u64(p, segment_id);
	ASSERT((size_t)(p - out) == need);
	return (int64_t)need;
}

/* ---- HTTP ------------------------------------------------------------------------------ */

static size_t on_body(char *data, size_t size, size_t nmemb, void *ctx)
{
	struct ch_client *c = ctx;
	size_t n = size * nmemb;
	if (c->resp_len + n > c->resp_max) {
		c->resp_over = true;
		return 0;  /* curl stops with CURLE_WRITE_ERROR */
	}
	if (c->resp_len + n + 1 > c->resp_cap) {
		size_t cap = c->resp_cap ? c->resp_cap : 4096;
		while (cap < c->resp_len + n + 1)
			cap *= 2;
		char *p = realloc(c->resp, cap);
		if (!p)
			return 0;
		c->resp = p;
		c->resp_cap = cap;
	}
	memcpy(c->resp + c->resp_len, data, n);
	c->resp_len += n;
	c->resp[c->resp_len] = 0;
	return n;
}

static size_t on_upload(char *buf, size_t size, size_t nmemb, void *ctx)
{
	struct ch_client *c = ctx;
	size_t want = FMT_MIN(size * nmemb, (size_t)UPLOAD_STEP_BYTES);
	if (c->up_crash_at) {
		if (c->up_off >= c->up_crash_at) {
			fprintf(stderr, "hodei: failpoint clickhouse_mid_insert: abort after %zu of %zu "
				"body bytes\n", c->up_off, c->up_len);
			abort();
		}
		want = FMT_MIN(want, c->up_crash_at - c->up_off);
	}
	size_t n = FMT_MIN(want, c->up_len - c->up_off);
	if (n)
		memcpy(buf, c->up + c->up_off, n);
	c->up_off += n;
	return n;
}

static int on_seek(void *ctx, curl_off_t offset, int origin)
{
	struct ch_client *c = ctx;
	if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > c->up_len)
		return CURL_SEEKFUNC_CANTSEEK;
	c->up_off = (size_t)offset;
	return CURL_SEEKFUNC_OK;
}

static int curl_failure(struct ch_client *c, CURLcode cc)
{
	const char *detail = c->curl_err[0] ? c->curl_err : curl_easy_strerror(cc);
	if (cc == CURLE_WRITE_ERROR && c->resp_over)
		return set_error(c, CH_E_PROTOCOL, "%s: answer longer than %zu bytes", c->cfg.url,
				 c->resp_max);
	if (cc == CURLE_OUT_OF_MEMORY || cc == CURLE_WRITE_ERROR)
		return set_error(c, FMT_E_NOMEM, "%s: out of memory", c->cfg.url);
	if (cc == CURLE_OPERATION_TIMEDOUT)
		return set_error(c, CH_E_TIMEOUT, "%s: %s", c->cfg.url, detail);
	if (cc == CURLE_LOGIN_DENIED)
		return set_error(c, CH_E_AUTH, "%s: %s", c->cfg.url, detail);
	return set_error(c, CH_E_NETWORK, "%s: %s", c->cfg.url, detail);
}

/* One request: GET when body is NULL, else POST of body (borrowed).
 * params: the URL's query string (already escaped; may be ""). The answer
 * (at most resp_max bytes) is in c->resp, NUL-terminated. Returns 0 for
 * HTTP 200, else the error (also in c->err). */
static int http_do(struct ch_client *c, const char *params, const void *body, size_t len,
		   bool insert, size_t resp_max)
{
	size_t base = strlen(c->cfg.url);
	while (base > 0 && c->cfg.url[base - 1] == '/')
		base--;
	int n = snprintf(c->url, sizeof(c->url), "%.*s/%s%s", (int)base, c->cfg.url,
			 *params ? "?" : "", params);
	if (n < 0 || (size_t)n >= sizeof(c->url))
		return set_error(c, FMT_E_TOO_BIG, "request URL over %zu bytes", sizeof(c->url));
	c->resp_len = 0;
	if (c->resp)
		c->resp[0] = 0;
	c->resp_max = resp_max;
	c->resp_over = false;
	c->curl_err[0] = 0;
	c->up = body;
	c->up_len = body ? len : 0;
	c->up_off = 0;
	curl_easy_setopt(c->curl, CURLOPT_URL, c->url);
	if (body) {
		curl_easy_setopt(c->curl, CURLOPT_POST, 1L);
		curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
		curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, insert ? c->hdr_insert : c->hdr_query);
	} else {
		curl_easy_setopt(c->curl, CURLOPT_HTTPGET, 1L);
		curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, NULL);
	}
	CURLcode cc = curl_easy_perform(c->curl);
	c->up = NULL;
	c->up_crash_at = 0;
	if (cc != CURLE_OK)
		return curl_failure(c, cc);
	long status = 0;
	curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
	if (!c->resp)
		on_body((char *)"", 0, 0, c);  /* an empty, NUL-terminated answer */
	if (status == 200)
		return 0;
	int rc = ch_parse_error(status, c->resp, c->resp_len, &c->err);
	if (rc == CH_E_SCHEMA)
		c->schema_ok = false;  /* re-check the table before the next insert */
	return rc;
}

/* Runs c->sql (a query or statement) and keeps its answer in c->resp. */
static int query(struct ch_client *c, size_t resp_max)
{
	return http_do(c, "wait_end_of_query=1", c->sql, strlen(c->sql), false, resp_max);
}

static int sql_printf(struct ch_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int sql_printf(struct ch_client *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(c->sql, sizeof(c->sql), fmt, ap);
	va_end(ap);
	ASSERT(n > 0 && (size_t)n < sizeof(c->sql));  /* every query here is short */
	return 0;
}

/* ---- client ------------------------------------------------------------------------------ */

static void failpoints_read(struct ch_client *c)
{
	const char *fp = getenv("HODEI_FAILPOINT");
	static const char after[] = "clickhouse_after_insert", mid[] = "clickhouse_mid_insert";
	while (fp && *fp) {
		size_t len = strcspn(fp, ",");
		uint32_t *slot = NULL;
		size_t name = 0;
		if (len >= sizeof(after) - 1 && !strncmp(fp, after, sizeof(after) - 1))
			slot = &c->fail_after_insert, name = sizeof(after) - 1;
		else if (len >= sizeof(mid) - 1 && !strncmp(fp, mid, sizeof(mid) - 1))
			slot = &c->fail_mid_insert, name = sizeof(mid) - 1;
		if (slot && (len == name || fp[name] == ':')) {
			long v = len == name ? 1 : strtol(fp + name + 1, NULL, 10);
			*slot = v > 0 ? (uint32_t)v : 1;
		}
		fp += len + (fp[len] == ',');
	}
}

static int curl_setup(struct ch_client *c)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return FMT_E_NOMEM;
	c->curl = curl_easy_init();
	c->hdr_query = curl_slist_append(NULL, "Content-Type: text/plain; charset=utf-8");
	c->hdr_query = c->hdr_query ? curl_slist_append(c->hdr_query, "Expect:") : NULL;
	c->hdr_insert = curl_slist_append(NULL, "Content-Type: application/octet-stream");
	c->hdr_insert = c->hdr_insert ? curl_slist_append(c->hdr_insert, "Content-Encoding: gzip") : NULL;
	c->hdr_insert = c->hdr_insert ? curl_slist_append(c->hdr_insert, "Expect:") : NULL;
	if (!c->curl || !c->hdr_query || !c->hdr_insert)
		return FMT_E_NOMEM;
	CURL *h = c->curl;
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)c->cfg.timeout_ms);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)c->cfg.connect_timeout_ms);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->curl_err);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
	curl_easy_setopt(h, CURLOPT_READFUNCTION, on_upload);
	curl_easy_setopt(h, CURLOPT_READDATA, c);
	curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
	curl_easy_setopt(h, CURLOPT_SEEKDATA, c);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "hodei-audit/" HODEI_VERSION);
	if (c->cfg.user[0] && (strcmp(c->cfg.user, CH_USER_DEFAULT) || c->cfg.password[0])) {
		curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(h, CURLOPT_USERNAME, c->cfg.user);
		curl_easy_setopt(h, CURLOPT_PASSWORD, c->cfg.password);
	}
	return 0;
}

int ch_client_open(const struct ch_config *cfg, struct ch_client **out)
{
	char why[256];
	*out = NULL;
	if (ch_config_check(cfg, why, sizeof(why)))
		return FMT_E_INVALID;
	struct ch_client *c = calloc(1, sizeof(*c));
	if (!c)
		return FMT_E_NOMEM;
	c->cfg = *cfg;
	c->months = calloc(CH_MONTHS, sizeof(*c->months));
	c->used = calloc(CH_MONTHS, sizeof(*c->used));
	int rc = c->months && c->used ? curl_setup(c) : FMT_E_NOMEM;
	if (rc == 0 && deflateInit2(&c->z, cfg->gzip_level, Z_DEFLATED, 15 + 16, 8,
				    Z_DEFAULT_STRATEGY) != Z_OK)
		rc = FMT_E_NOMEM;
	if (rc) {
		ch_client_close(c);
		return rc;
	}
	c->z_ready = true;
	failpoints_read(c);
	*out = c;
	return 0;
}

void ch_client_close(struct ch_client *c)
{
	if (!c)
		return;
	if (c->curl) {
		curl_easy_cleanup(c->curl);
		curl_global_cleanup();
	}
	curl_slist_free_all(c->hdr_query);
	curl_slist_free_all(c->hdr_insert);
	if (c->z_ready)
		deflateEnd(&c->z);
	free(c->resp);
	free(c->raw);
	free(c->gz);
	free(c->months);
	free(c->used);
	explicit_bzero(c->cfg.password, sizeof(c->cfg.password));
	free(c);
}

int ch_ping(struct ch_client *c)
{
	int rc = http_do(c, "", NULL, 0, false, 4096);
	if (rc == 0 && strncmp(c->resp, "Ok.", 3) != 0)
		return set_error(c, CH_E_PROTOCOL, "%s/ping answered '%.40s', not 'Ok.'", c->cfg.url,
				 c->resp);
	return rc;
}

/* ---- schema ---------------------------------------------------------------------------- */

/* Checks the events table's columns (TabSeparatedRaw "name\ttype" lines). */
static int schema_check_columns(struct ch_client *c)
{
	sql_printf(c, "SELECT name, type FROM system.columns WHERE database = '%s' AND table = '%s' "
		   "FORMAT TabSeparatedRaw", c->cfg.database, CH_TABLE);
	int rc = query(c, RESPONSE_BYTES_MAX);
	if (rc)
		return rc;
	for (int k = 0; k < CH_COLUMN_COUNT; k++) {
		const char *type = NULL;
		size_t name_len = strlen(ch_column_names[k]);
		for (const char *line = c->resp; *line;) {
			const char *end = strchr(line, '\n');
			end = end ? end : line + strlen(line);
			if ((size_t)(end - line) > name_len && line[name_len] == '\t' &&
			    !strncmp(line, ch_column_names[k], name_len)) {
				type = line + name_len + 1;
				if ((size_t)(end - type) != strlen(ch_column_types[k]) ||
				    strncmp(type, ch_column_types[k], (size_t)(end - type)) != 0)
					return set_error(c, CH_E_SCHEMA, "%s.%s: column %s is %.*s, the "
							 "mirror writes %s", c->cfg.database, CH_TABLE,
							 ch_column_names[k], (int)(end - type), type,
							 ch_column_types[k]);
				break;
			}
			line = *end ? end + 1 : end;
		}
		if (!type)
			return set_error(c, CH_E_SCHEMA, "%s.%s: no column %s (%s)", c->cfg.database,
					 CH_TABLE, ch_column_names[k], ch_column_types[k]);
	}
	return 0;
}

/* Learns which insert settings the server knows. */
static int schema_learn_settings(struct ch_client *c)
{
	size_t n = (size_t)snprintf(c->sql, sizeof(c->sql),
				    "SELECT name FROM system.settings WHERE name IN (");
	for (size_t i = 0; i < FMT_ARRAY_LEN(insert_settings); i++)
		n += (size_t)snprintf(c->sql + n, sizeof(c->sql) - n, "%s'%s'", i ? ", " : "",
				      insert_settings[i].name);
	snprintf(c->sql + n, sizeof(c->sql) - n, ") FORMAT TabSeparatedRaw");
	int rc = query(c, RESPONSE_BYTES_MAX);
	if (rc)
		return rc;
	c->settings = 0;
	for (const char *line = c->resp; *line;) {
		size_t len = strcspn(line, "\n");
		for (size_t i = 0; i < FMT_ARRAY_LEN(insert_settings); i++)
			if (strlen(insert_settings[i].name) == len &&
			    !strncmp(line, insert_settings[i].name, len))
				c->settings |= insert_settings[i].bit;
		line += len + (line[len] == '\n');
	}
	if (!(c->settings & SET_MAX_BLOCK))
		return set_error(c, CH_E_SCHEMA, "%s: the server has no max_insert_block_size setting: "
				 "inserts could be split into several parts", c->cfg.url);
	return 0;
}

int ch_ensure_schema(struct ch_client *c)
{
	for (int i = 0; i < 2; i++) {
		size_t n = schema_statement(i, c->cfg.database, c->sql, sizeof(c->sql));
		ASSERT(n < sizeof(c->sql));
		int rc = http_do(c, "", c->sql, n, false, RESPONSE_BYTES_MAX);
		if (rc)
			return rc;
	}
	int rc = schema_check_columns(c);
	if (rc == 0)
		rc = schema_learn_settings(c);
	c->schema_ok = rc == 0;
	return rc;
}

/* Parses one unsigned decimal number ending at a tab, a newline or the
 * end; advances *p past it and its separator. */
static bool parse_field_u64(const char **p, uint64_t *v)
{
	const char *s = *p;
	char *end;
	if (*s < '0' || *s > '9')
		return false;
	errno = 0;
	unsigned long long x = strtoull(s, &end, 10);
	if (errno || (*end != '\t' && *end != '\n' && *end != 0))
		return false;
	*v = x;
	*p = *end ? end + 1 : end;
	return true;
}

int ch_count_tenant(struct ch_client *c, const char *tenant, uint64_t *n)
{
	if (!fmt_tenant_valid(fmt_str_c(tenant)))
		return set_error(c, FMT_E_INVALID, "'%s' is not a tenant id", tenant);
	char lit[2 * FMT_TENANT_MAX + 8];
	ch_sql_quote(tenant, strlen(tenant), lit, sizeof(lit));
	sql_printf(c, "SELECT count() FROM `%s`.%s WHERE tenant_id = %s FORMAT TabSeparatedRaw",
		   c->cfg.database, CH_TABLE, lit);
	int rc = query(c, RESPONSE_BYTES_MAX);
	if (rc)
		return rc;
	const char *p = c->resp;
	if (!parse_field_u64(&p, n) || *p)
		return set_error(c, CH_E_PROTOCOL, "count(): unexpected answer '%.40s'", c->resp);
	return 0;
}

int ch_mirror_lock(const char *data_dir, int *fd)
{
	char path[PATH_MAX];
	int n = snprintf(path, sizeof(path), "%s/clickhouse-mirror.lock", data_dir);
	if (n < 0 || (size_t)n >= sizeof(path))
		return -ENAMETOOLONG;
	int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (f < 0)
		return -errno;
	if (flock(f, LOCK_EX | LOCK_NB) != 0) {
		int e = errno;
		close(f);
		return -e;
	}
	*fd = f;
	return 0;
}

/* ---- one segment ------------------------------------------------------------------------- */

/* A verified, decoded segment. */
struct seg {
	const uint8_t *buf;
	size_t len;
	struct fmt_segment *f;
	struct fmt_block **blocks;
	uint32_t min_s, max_s;        /* occurred_at range, seconds (clamped) */
	char tenant_lit[2 * FMT_TENANT_MAX + 8];
};

/* A row of the segment, in seq order. */
struct row_iter {
	const struct seg *s;
	uint32_t b, i;
	struct fmt_event ev;
	uint8_t chain[FMT_HASH_BYTES];
};

static bool row_next(struct ch_client *c, struct row_iter *it)
{
	const struct fmt_segment *f = it->s->f;
	while (it->b < f->meta.block_count && it->i >= fmt_block_rows(it->s->blocks[it->b])) {
		it->b++;
		it->i = 0;
	}
	if (it->b >= f->meta.block_count)
		return false;
	fmt_block_row(f, it->s->blocks[it->b], it->i++, &it->ev, c->attrs, FMT_ATTRS_HARD_MAX,
		      it->chain);
	return true;
}

static void seg_free(struct seg *s)
{
	if (s->blocks)
		for (uint32_t b = 0; b < s->f->meta.block_count; b++)
			fmt_block_free(s->blocks[b]);
	free(s->blocks);
	fmt_segment_close(s->f);
}

/* Verifies the whole segment (checksums, chain, Merkle root), then decodes
 * every block. Nothing is sent for a segment that fails here. */
static int seg_load(struct ch_client *c, const uint8_t *buf, size_t len, struct seg *s,
		    struct ch_mirror_result *res)
{
	uint64_t bad_seq = 0;
	memset(s, 0, sizeof(*s));
	s->buf = buf;
	s->len = len;
	int rc = fmt_segment_verify_buf(buf, len, &bad_seq);
	if (rc)
		return set_error(c, rc, "segment fails its checks: %s%s", fmt_strerror(rc),
				 bad_seq ? " (at a seq named by `hodei-audit inspect`)" : "");
	if ((rc = fmt_segment_open_buf(buf, len, &s->f)) != 0)
		return set_error(c, rc, "segment: %s", fmt_strerror(rc));
	const struct fmt_segment_meta *m = &s->f->meta;
	snprintf(res->tenant, sizeof(res->tenant), "%s", m->tenant);
	res->segment_id = m->segment_id;
	res->first_seq = m->first_seq;
	res->last_seq = m->last_seq;
	res->rows = m->row_count;
	if (!fmt_tenant_valid(fmt_str_c(m->tenant)))
		return set_error(c, FMT_E_INVALID, "segment %016llx: tenant '%s' is not valid",
				 (unsigned long long)m->segment_id, m->tenant);
	ch_sql_quote(m->tenant, strlen(m->tenant), s->tenant_lit, sizeof(s->tenant_lit));
	s->min_s = ch_occurred_at_s(m->min_occurred_ns);
	s->max_s = ch_occurred_at_s(m->max_occurred_ns);
	s->blocks = calloc(FMT_MAX(m->block_count, 1u), sizeof(*s->blocks));
	if (!s->blocks)
		return set_error(c, FMT_E_NOMEM, "out of memory decoding a segment");
	for (uint32_t b = 0; b < m->block_count; b++)
		if ((rc = fmt_block_decode_buf(s->f, buf, len, b, FMT_COLS_ALL, &s->blocks[b])) != 0)
			return set_error(c, rc, "segment %016llx block %u: %s",
					 (unsigned long long)m->segment_id, b, fmt_strerror(rc));
	return 0;
}

/* Counts the segment's rows per month; fills c->used in ascending order. */
static void months_count(struct ch_client *c, const struct seg *s)
{
	for (uint32_t k = 0; k < c->used_count; k++)
		memset(&c->months[c->used[k]], 0, sizeof(c->months[0]));
	c->used_count = 0;
	struct row_iter it = { .s = s };
	while (row_next(c, &it)) {
		int m = month_index(ch_month_of(ch_occurred_at_s(it.ev.occurred_at_ns)));
		ASSERT(m >= 0);
		c->months[m].rows++;
	}
	for (int m = 0; m < CH_MONTHS; m++)
		if (c->months[m].rows)
			c->used[c->used_count++] = (uint16_t)m;
}

/* CHECK: per month, count() and uniqExact(seq) of the tenant's rows with
 * seq in the segment's range and occurred_at in its range (which every row
 * of the segment satisfies, and which lets the primary key prune). */
static int months_query(struct ch_client *c, const struct seg *s)
{
	const struct fmt_segment_meta *m = &s->f->meta;
	for (uint32_t k = 0; k < c->used_count; k++) {
		c->months[c->used[k]].found = c->months[c->used[k]].found_uniq = 0;
		c->months[c->used[k]].seen = false;
	}
	sql_printf(c, "SELECT toYYYYMM(occurred_at) AS m, count(), uniqExact(seq) FROM `%s`.%s "
		   "WHERE tenant_id = %s AND seq BETWEEN %llu AND %llu AND occurred_at BETWEEN "
		   "toDateTime(%u) AND toDateTime(%u) GROUP BY m ORDER BY m FORMAT TabSeparatedRaw",
		   c->cfg.database, CH_TABLE, s->tenant_lit, (unsigned long long)m->first_seq,
		   (unsigned long long)m->last_seq, s->min_s, s->max_s);
	int rc = query(c, RESPONSE_BYTES_MAX);
	if (rc)
		return rc;
	for (const char *p = c->resp; *p;) {
		uint64_t month, n, u;
		if (!parse_field_u64(&p, &month) || !parse_field_u64(&p, &n) || !parse_field_u64(&p, &u))
			return set_error(c, CH_E_PROTOCOL, "per-month count: unexpected answer '%.60s'",
					 c->resp);
		int i = month_index((uint32_t)FMT_MIN(month, (uint64_t)UINT32_MAX));
		if (i < 0 || c->months[i].rows == 0)
			return set_error(c, CH_E_CONFLICT, "tenant %s seq %llu..%llu: %llu rows in month "
					 "%llu, where segment %016llx has none", m->tenant,
					 (unsigned long long)m->first_seq, (unsigned long long)m->last_seq,
					 (unsigned long long)n, (unsigned long long)month,
					 (unsigned long long)m->segment_id);
		c->months[i].found = n;
		c->months[i].found_uniq = u;
		c->months[i].seen = true;
	}
	return 0;
}

/* The state of month i is one the protocol can continue from: no
 * duplicates, no more rows than the segment has for that month. */
static int month_sane(struct ch_client *c, const struct seg *s, int i)
{
	const struct ch_month *mo = &c->months[i];
	if (mo->found == mo->found_uniq && mo->found <= mo->rows)
		return 0;
	return set_error(c, CH_E_CONFLICT, "tenant %s seq %llu..%llu month %u: %llu rows for %llu "
			 "distinct seqs in ClickHouse, the segment %016llx has %u rows there "
			 "(duplicates: see docs/CLICKHOUSE.md, repair)", s->f->meta.tenant,
			 (unsigned long long)s->f->meta.first_seq, (unsigned long long)s->f->meta.last_seq,
			 month_yyyymm(i),
			 (unsigned long long)mo->found, (unsigned long long)mo->found_uniq,
			 (unsigned long long)s->f->meta.segment_id, mo->rows);
}

/* Makes room for need more bytes in c->raw (up to insert_bytes_max). */
static int raw_reserve(struct ch_client *c, size_t need)
{
	if (c->raw_len + need <= c->raw_cap)
		return 0;
	size_t cap = c->raw_cap ? c->raw_cap : RAW_BYTES_INITIAL;
	while (cap < c->raw_len + need)
		cap *= 2;
	cap = FMT_MIN(cap, (size_t)c->cfg.insert_bytes_max);
	ASSERT(cap >= c->raw_len + need);
	uint8_t *p = realloc(c->raw, cap);
	if (!p)
		return FMT_E_NOMEM;
	c->raw = p;
	c->raw_cap = cap;
	size_t gz_cap = deflateBound(&c->z, (uLong)cap) + 64;
	if (gz_cap > c->gz_cap) {
		uint8_t *g = realloc(c->gz, gz_cap);
		if (!g)
			return FMT_E_NOMEM;
		c->gz = g;
		c->gz_cap = gz_cap;
	}
	return 0;
}

static size_t gzip_raw(struct ch_client *c)
{
	int zr = deflateReset(&c->z);
	ASSERT(zr == Z_OK);
	c->z.next_in = c->raw;
	c->z.avail_in = (uInt)c->raw_len;
	c->z.next_out = c->gz;
	c->z.avail_out = (uInt)c->gz_cap;
	zr = deflate(&c->z, Z_FINISH);
	ASSERT(zr == Z_STREAM_END);  /* gz_cap >= deflateBound(raw_cap) */
	return c->gz_cap - c->z.avail_out;
}

/* Appends the insert settings for a block of `rows` rows to the URL
 * parameters in out (see the top of this file). */
static size_t insert_settings_params(const struct ch_client *c, uint32_t rows, char *out, size_t cap)
{
	unsigned long long above = (unsigned long long)rows + 1;
	size_t n = 0;
#define ADD(bit, ...) do { if (c->settings & (bit)) \
		n += (size_t)snprintf(at(out, n, cap), cap - FMT_MIN(n, cap), __VA_ARGS__); } while (0)
	ADD(SET_MAX_BLOCK, "&max_insert_block_size=%llu", above);
	ADD(SET_MIN_ROWS, "&min_insert_block_size_rows=%llu", above);
	ADD(SET_MIN_BYTES, "&min_insert_block_size_bytes=%llu", BLOCK_BYTES_NEVER);
	ADD(SET_MAX_BYTES, "&max_insert_block_size_bytes=%llu", BLOCK_BYTES_NEVER);
	ADD(SET_PARALLEL, "&input_format_parallel_parsing=0");
	ADD(SET_ASYNC, "&async_insert=0");
	ADD(SET_DEDUP, "&insert_deduplicate=0");
#undef ADD
	return n;
}

/* Sends the rows in c->raw as one INSERT (one block, one part). */
static int insert_flush(struct ch_client *c, uint32_t rows, struct ch_mirror_result *res)
{
	if (rows == 0)
		return 0;
	size_t n = (size_t)snprintf(c->sql, sizeof(c->sql), "INSERT INTO `%s`.%s (", c->cfg.database,
				    CH_TABLE);
	for (int k = 0; k < CH_COLUMN_COUNT; k++)
		n += (size_t)snprintf(c->sql + n, sizeof(c->sql) - n, "%s%s", k ? ", " : "",
				      ch_column_names[k]);
	snprintf(c->sql + n, sizeof(c->sql) - n, ") FORMAT RowBinary");
	char *q = curl_easy_escape(c->curl, c->sql, 0);
	if (!q)
		return set_error(c, FMT_E_NOMEM, "out of memory");
	char params[URL_BYTES_MAX / 2];
	int pn = snprintf(params, sizeof(params), "query=%s", q);
	curl_free(q);
	ASSERT(pn > 0 && (size_t)pn < sizeof(params) - 512);
	insert_settings_params(c, rows, params + pn, sizeof(params) - (size_t)pn);
	size_t gz_len = gzip_raw(c);
	if (c->fail_mid_insert && c->inserts_done + 1 == c->fail_mid_insert)
		c->up_crash_at = FMT_MAX(gz_len / 2, (size_t)1);
	int rc = http_do(c, params, c->gz, gz_len, true, RESPONSE_BYTES_MAX);
	if (rc)
		return rc;
	c->inserts_done++;
	res->inserts++;
	res->rows_inserted += rows;
	res->bytes_sent += gz_len;
	c->raw_len = 0;
	if (c->fail_after_insert && c->inserts_done == c->fail_after_insert) {
		fprintf(stderr, "hodei: failpoint clickhouse_after_insert: abort after INSERT %u "
			"(%u rows of tenant %s)\n", c->inserts_done, rows, res->tenant);
		abort();
	}
	return 0;
}

/* The seqs of month i already in ClickHouse (found of them), ascending,
 * into a malloc'd array. */
static int present_fetch(struct ch_client *c, const struct seg *s, int i, uint64_t **out)
{
	const struct fmt_segment_meta *m = &s->f->meta;
	uint64_t found = c->months[i].found;
	uint32_t yyyymm = month_yyyymm(i);
	sql_printf(c, "SELECT seq FROM `%s`.%s WHERE tenant_id = %s AND seq BETWEEN %llu AND %llu "
		   "AND occurred_at BETWEEN toDateTime(%u) AND toDateTime(%u) AND "
		   "toYYYYMM(occurred_at) = %u ORDER BY seq FORMAT RowBinary", c->cfg.database,
		   CH_TABLE, s->tenant_lit, (unsigned long long)m->first_seq,
		   (unsigned long long)m->last_seq, s->min_s, s->max_s, yyyymm);
	int rc = query(c, (size_t)found * 8 + 1);
	if (rc)
		return rc;
	if (c->resp_len != found * 8)
		return set_error(c, CH_E_CONFLICT, "tenant %s month %u: %zu seqs listed where count() "
				 "said %llu (concurrent writer?)", m->tenant, yyyymm, c->resp_len / 8,
				 (unsigned long long)found);
	uint64_t *seqs = malloc(FMT_MAX(found, (uint64_t)1) * sizeof(*seqs));
	if (!seqs)
		return set_error(c, FMT_E_NOMEM, "out of memory");
	for (uint64_t k = 0; k < found; k++) {
		seqs[k] = fmt_get_u64((const uint8_t *)c->resp + 8 * k);
		if (k && seqs[k] <= seqs[k - 1]) {
			free(seqs);
			return set_error(c, CH_E_PROTOCOL, "seq list not ascending");
		}
	}
	*out = seqs;
	return 0;
}

/* Inserts the rows of month i whose seq is not in present[0, found). */
static int month_insert(struct ch_client *c, const struct seg *s, int i, const uint64_t *present,
			uint64_t found, struct ch_mirror_result *res)
{
	struct row_iter it = { .s = s };
	uint64_t k = 0, matched = 0;
	uint32_t rows = 0;
	int rc = 0;
	c->raw_len = 0;
	while (rc == 0 && row_next(c, &it)) {
		if (month_index(ch_month_of(ch_occurred_at_s(it.ev.occurred_at_ns))) != i)
			continue;
		while (k < found && present[k] < it.ev.seq)
			k++;
		if (k < found && present[k] == it.ev.seq) {
			matched++;
			continue;
		}
		size_t need = ch_row_size(&it.ev);
		if (need > c->cfg.insert_bytes_max)
			return set_error(c, FMT_E_TOO_BIG, "seq %llu: a row of %zu bytes is over "
					 "insert_bytes_max", (unsigned long long)it.ev.seq, need);
		if (rows == c->cfg.insert_rows_max || c->raw_len + need > c->cfg.insert_bytes_max) {
			rc = insert_flush(c, rows, res);
			rows = 0;
		}
		if (rc == 0 && (rc = raw_reserve(c, need)) == 0) {
			int64_t w = ch_row_encode(&it.ev, it.chain, s->f->meta.segment_id,
						  c->raw + c->raw_len, c->raw_cap - c->raw_len);
			if (w < 0)
				return set_error(c, (int)w, "seq %llu: outcome %u has no Enum8 value "
						 "in the schema", (unsigned long long)it.ev.seq,
						 it.ev.outcome);
			ASSERT(w == (int64_t)need);
			c->raw_len += need;
			rows++;
		}
	}
	if (rc == 0)
		rc = insert_flush(c, rows, res);
	if (rc == 0 && matched != found)
		rc = set_error(c, CH_E_CONFLICT, "tenant %s segment %016llx: %llu rows in ClickHouse "
			       "have a seq of this month range that the segment has in another month",
			       s->f->meta.tenant, (unsigned long long)s->f->meta.segment_id,
			       (unsigned long long)(found - matched));
	return rc;
}

/* Brings month i to "every row there once". */
static int month_mirror(struct ch_client *c, const struct seg *s, int i, struct ch_mirror_result *res)
{
	struct ch_month *mo = &c->months[i];
	int rc = month_sane(c, s, i);
	if (rc)
		return rc;
	if (mo->found == mo->rows) {
		res->rows_present += mo->rows;
		return 0;
	}
	uint64_t *present = NULL;
	if (mo->found && (rc = present_fetch(c, s, i, &present)) != 0)
		return rc;
	res->rows_present += (uint32_t)mo->found;
	rc = month_insert(c, s, i, present, mo->found, res);
	free(present);
	return rc;
}

/* The final CHECK (E4): every month holds exactly its rows. */
static int months_verify(struct ch_client *c, const struct seg *s)
{
	int rc = months_query(c, s);
	for (uint32_t k = 0; rc == 0 && k < c->used_count; k++) {
		const struct ch_month *mo = &c->months[c->used[k]];
		if (mo->found != mo->rows || mo->found_uniq != mo->rows)
			rc = set_error(c, CH_E_CONFLICT, "tenant %s segment %016llx: after the inserts, "
				       "%llu rows (%llu distinct seqs) of %u are in ClickHouse for month "
				       "%u (another writer?)", s->f->meta.tenant,
				       (unsigned long long)s->f->meta.segment_id,
				       (unsigned long long)mo->found, (unsigned long long)mo->found_uniq,
				       mo->rows, month_yyyymm(c->used[k]));
	}
	return rc;
}

int ch_mirror_segment(struct ch_client *c, const uint8_t *segment, size_t len,
		      struct ch_mirror_result *res)
{
	struct seg s;
	memset(res, 0, sizeof(*res));
	int rc = seg_load(c, segment, len, &s, res);
	if (rc == 0 && s.f->meta.row_count > 0) {
		months_count(c, &s);
		res->months = c->used_count;
		if (!c->schema_ok)
			rc = ch_ensure_schema(c);
		if (rc == 0)
			rc = months_query(c, &s);
		for (uint32_t k = 0; rc == 0 && k < c->used_count; k++)
			rc = month_mirror(c, &s, c->used[k], res);
		if (rc == 0)
			rc = months_verify(c, &s);
	}
	seg_free(&s);
	if (rc == 0)
		c->err = (struct ch_error){ 0 };
	return rc;
}
