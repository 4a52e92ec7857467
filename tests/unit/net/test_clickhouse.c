// SPDX-License-Identifier: Apache-2.0
/*
 * test_clickhouse.c — net/clickhouse.c without a server: the RowBinary row
 * of an event (every column, strings with tabs, newlines, backslashes,
 * quotes and 4-byte UTF-8, empty values, attributes, details, varint
 * lengths, the UUID layout), occurred_at clamping and months, SQL literal
 * quoting, the schema's SQL (nothing ClickHouse 18.16 lacks), the parsing
 * of ClickHouse's error answers (18.16 and current), the configuration,
 * the mirror lock, and that a damaged segment is refused before anything
 * is sent. The exchange with a real ClickHouse 18.16 is tested by
 * tests/integration/test_clickhouse_mirror.py.
 */
#include <criterion/criterion.h>

#include "format/hash.h"
#include "format/segment.h"
#include "net/clickhouse.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- a RowBinary reader for the checks ---------------------------------------- */

struct rd {
	const uint8_t *p, *end;
};

static uint64_t rd_varint(struct rd *r)
{
	uint64_t v = 0;
	for (int shift = 0; shift < 64; shift += 7) {
		cr_assert(r->p < r->end, "varint runs past the row");
		uint8_t b = *r->p++;
		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			return v;
	}
	cr_assert_fail("varint too long");
	return 0;
}

static void rd_str_eq(struct rd *r, const char *want, size_t want_len, const char *what)
{
	uint64_t n = rd_varint(r);
	cr_assert_eq(n, want_len, "%s: length %llu, want %zu", what, (unsigned long long)n, want_len);
	cr_assert(r->p + n <= r->end, "%s runs past the row", what);
	cr_assert(n == 0 || memcmp(r->p, want, n) == 0, "%s: bytes differ", what);
	r->p += n;
}

static uint64_t rd_u64(struct rd *r)
{
	cr_assert(r->p + 8 <= r->end);
	uint64_t v = fmt_get_u64(r->p);
	r->p += 8;
	return v;
}

static uint32_t rd_u32(struct rd *r)
{
	cr_assert(r->p + 4 <= r->end);
	uint32_t v = fmt_get_u32(r->p);
	r->p += 4;
	return v;
}

/* ---- an event with every kind of value ------------------------------------------ */

static const char weird[] = "tab\there\nnew line\\back 'quote' \"dq\" \xf0\x9f\x94\x90 \xc3\xa9";
static char long_value[20000];

static struct fmt_attr attrs[3];

static void full_event(struct fmt_event *ev)
{
	memset(ev, 0, sizeof(*ev));
	static const uint8_t id[16] = { 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
					0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff };
	memcpy(ev->event_id, id, 16);
	ev->tenant = fmt_str_c("acme.eu-1");
	ev->seq = 123456789012ull;
	ev->occurred_at_ns = 1714564800123456789ll;  /* 2024-05-01T12:00:00.123456789Z */
	ev->received_at_ns = 1714564801000000001ll;
	ev->outcome = FMT_OUTCOME_DENIED;
	ev->str[FMT_F_ACTOR_ID] = fmt_str_c(weird);
	ev->str[FMT_F_ACTOR_TYPE] = fmt_str_c("user");
	ev->str[FMT_F_ACTION] = fmt_str_c("document.delete");
	ev->str[FMT_F_RESOURCE_TYPE] = fmt_str_c("");
	ev->str[FMT_F_RESOURCE_ID] = fmt_str_c("doc-\x01\x1f");
	ev->str[FMT_F_SOURCE_IP] = fmt_str_c("2001:db8::1");
	memset(long_value, 'x', sizeof(long_value) - 1);
	ev->str[FMT_F_USER_AGENT] = (struct fmt_str){ long_value, 200 };   /* 2-byte varint */
	ev->str[FMT_F_REQUEST_ID] = fmt_str_c("");
	ev->str[FMT_F_TRACE_ID] = fmt_str_c("4bf92f3577b34da6a3ce929d0e0e4736");
	attrs[0] = (struct fmt_attr){ fmt_str_c("k"), fmt_str_c(weird) };
	attrs[1] = (struct fmt_attr){ fmt_str_c(""), fmt_str_c("") };
	attrs[2] = (struct fmt_attr){ fmt_str_c("big"),
				      (struct fmt_str){ long_value, sizeof(long_value) - 1 } };
	ev->attrs = attrs;
	ev->attr_count = 3;
	ev->details_json = fmt_str_c("{\"a\":[1,\"x\\ty\"],\"b\":null}");
}

static void check_str(struct rd *r, struct fmt_str s, const char *what)
{
	rd_str_eq(r, s.ptr, s.len, what);
}

Test(clickhouse, row_every_column_in_order)
{
	struct fmt_event ev;
	full_event(&ev);
	uint8_t chain[FMT_HASH_BYTES];
	for (int i = 0; i < FMT_HASH_BYTES; i++)
		chain[i] = (uint8_t)(0xf0 + i);
	size_t size = ch_row_size(&ev);
	uint8_t *buf = malloc(size);
	int64_t n = ch_row_encode(&ev, chain, 0x0000010000000007ull, buf, size);
	cr_assert_eq(n, (int64_t)size);
	struct rd r = { buf, buf + n };
	check_str(&r, ev.tenant, "tenant_id");
	static const uint8_t uuid_wire[16] = { 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x00,
					       0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, 0x88 };
	cr_assert(memcmp(r.p, uuid_wire, 16) == 0, "event_id: two little-endian UInt64 halves");
	r.p += 16;
	cr_assert_eq(rd_u64(&r), ev.seq);
	cr_assert_eq(rd_u32(&r), 1714564800u, "occurred_at: whole seconds");
	cr_assert_eq((int64_t)rd_u64(&r), ev.occurred_at_ns);
	cr_assert_eq((int64_t)rd_u64(&r), ev.received_at_ns);
	check_str(&r, ev.str[FMT_F_ACTOR_ID], "actor_id");
	check_str(&r, ev.str[FMT_F_ACTOR_TYPE], "actor_type");
	check_str(&r, ev.str[FMT_F_ACTION], "action");
	check_str(&r, ev.str[FMT_F_RESOURCE_TYPE], "resource_type");
	check_str(&r, ev.str[FMT_F_RESOURCE_ID], "resource_id");
	cr_assert_eq(*r.p++, 3, "outcome: Enum8 denied = 3");
	check_str(&r, ev.str[FMT_F_SOURCE_IP], "source_ip");
	check_str(&r, ev.str[FMT_F_USER_AGENT], "user_agent");
	check_str(&r, ev.str[FMT_F_REQUEST_ID], "request_id");
	check_str(&r, ev.str[FMT_F_TRACE_ID], "trace_id");
	cr_assert_eq(rd_varint(&r), 3, "attr_keys count");
	for (int i = 0; i < 3; i++)
		check_str(&r, attrs[i].key, "attr key");
	cr_assert_eq(rd_varint(&r), 3, "attr_values count");
	for (int i = 0; i < 3; i++)
		check_str(&r, attrs[i].value, "attr value");
	check_str(&r, ev.details_json, "details_json");
	char hex[2 * FMT_HASH_BYTES + 1];
	fmt_hex(chain, FMT_HASH_BYTES, hex);
	rd_str_eq(&r, hex, 64, "chain_hash");
	cr_assert_eq(rd_u64(&r), 0x0000010000000007ull, "segment_id");
	cr_assert(r.p == r.end, "no bytes after segment_id");
	free(buf);
}

Test(clickhouse, row_empty_event_and_short_buffer)
{
	struct fmt_event ev;
	memset(&ev, 0, sizeof(ev));
	ev.tenant = fmt_str_c("t");
	ev.seq = 1;
	uint8_t chain[FMT_HASH_BYTES] = { 0 };
	/* tenant 2, uuid 16, seq 8, DateTime 4, two Int64 16, 9 empty strings 9,
	 * outcome 1, two empty arrays 2, details 1, chain 65, segment_id 8. */
	size_t want = 2 + 16 + 8 + 4 + 16 + 9 + 1 + 2 + 1 + 65 + 8;
	cr_assert_eq(ch_row_size(&ev), want);
	uint8_t buf[256];
	cr_assert_eq(ch_row_encode(&ev, chain, 9, buf, want - 1), FMT_E_TOO_BIG);
	cr_assert_eq(ch_row_encode(&ev, chain, 9, buf, sizeof(buf)), (int64_t)want);
	cr_assert_eq(buf[2 + 16 + 8 + 4 + 16 + 5], 0, "outcome unspecified = 0");
	ev.outcome = 4;
	cr_assert_eq(ch_row_encode(&ev, chain, 9, buf, sizeof(buf)), FMT_E_INVALID,
		     "an outcome the Enum8 lacks is refused, not written as garbage");
}

Test(clickhouse, varint_lengths)
{
	struct fmt_event ev;
	memset(&ev, 0, sizeof(ev));
	ev.tenant = fmt_str_c("t");
	uint8_t chain[FMT_HASH_BYTES] = { 0 };
	static const uint32_t lens[] = { 0, 127, 128, 16383, 16384 };
	static const size_t varint[] = { 1, 1, 2, 2, 3 };
	size_t base = ch_row_size(&ev);
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		ev.details_json = (struct fmt_str){ long_value, lens[i] };
		cr_assert_eq(ch_row_size(&ev), base - 1 + varint[i] + lens[i], "length %u", lens[i]);
		uint8_t *buf = malloc(ch_row_size(&ev));
		ch_row_encode(&ev, chain, 0, buf, ch_row_size(&ev));
		struct rd r = { buf + 2 + 16 + 8 + 4 + 16 + 5 + 1 + 4 + 2, buf + ch_row_size(&ev) };
		rd_str_eq(&r, long_value, lens[i], "details_json");
		free(buf);
	}
}

/* ---- time ------------------------------------------------------------------------------ */

Test(clickhouse, occurred_at_seconds_clamped)
{
	cr_assert_eq(ch_occurred_at_s(0), 0);
	cr_assert_eq(ch_occurred_at_s(999999999), 0);
	cr_assert_eq(ch_occurred_at_s(1000000000), 1);
	cr_assert_eq(ch_occurred_at_s(-1), 0, "before 1970: clamped to 0");
	cr_assert_eq(ch_occurred_at_s((int64_t)CH_DATETIME_MAX_S * 1000000000 + 999999999),
		     CH_DATETIME_MAX_S);
	cr_assert_eq(ch_occurred_at_s(INT64_MAX), CH_DATETIME_MAX_S, "past 2105: clamped");
	cr_assert_eq(ch_month_of(CH_DATETIME_MAX_S), 210512);
}

Test(clickhouse, month_matches_gmtime)
{
	cr_assert_eq(ch_month_of(0), 197001);
	cr_assert_eq(ch_month_of(951782400), 200002, "2000-02-29");
	cr_assert_eq(ch_month_of(951868800), 200003, "2000-03-01");
	cr_assert_eq(ch_month_of(1714564800), 202405);
	for (uint64_t s = 0; s <= CH_DATETIME_MAX_S; s += 86400 * 7 + 3607) {
		time_t t = (time_t)s;
		struct tm tm;
		gmtime_r(&t, &tm);
		uint32_t want = (uint32_t)((tm.tm_year + 1900) * 100 + tm.tm_mon + 1);
		cr_assert_eq(ch_month_of((uint32_t)s), want, "at %llu", (unsigned long long)s);
	}
}

/* ---- SQL ------------------------------------------------------------------------------- */

Test(clickhouse, sql_quote)
{
	char out[64];
	cr_assert_eq(ch_sql_quote("abc", 3, out, sizeof(out)), 5);
	cr_assert_str_eq(out, "'abc'");
	ch_sql_quote("a'b\\c", 5, out, sizeof(out));
	cr_assert_str_eq(out, "'a\\'b\\\\c'");
	ch_sql_quote("a\nb\0c", 5, out, sizeof(out));
	cr_assert_str_eq(out, "'a\\x0ab\\x00c'");
	size_t need = ch_sql_quote("0123456789", 10, out, 5);
	cr_assert_eq(need, 12, "returns the length it needs");
	cr_assert_str_eq(out, "'012", "truncated and NUL-terminated");
}

static char *schema(const char *db)
{
	size_t n = ch_schema_sql(db, NULL, 0);
	char *s = malloc(n + 1);
	cr_assert_eq(ch_schema_sql(db, s, n + 1), n);
	cr_assert_eq(strlen(s), n);
	return s;
}

Test(clickhouse, schema_sql_has_the_table)
{
	char *s = schema("hodei_audit");
	cr_assert(strstr(s, "CREATE DATABASE IF NOT EXISTS `hodei_audit`;\n"));
	cr_assert(strstr(s, "CREATE TABLE IF NOT EXISTS `hodei_audit`.events\n"));
	cr_assert(strstr(s, "ENGINE = MergeTree\n"));
	cr_assert(strstr(s, "PARTITION BY toYYYYMM(occurred_at)\n"));
	cr_assert(strstr(s, "ORDER BY (tenant_id, occurred_at, seq)\n"));
	for (int k = 0; k < CH_COLUMN_COUNT; k++) {
		char line[200];
		snprintf(line, sizeof(line), "    %s %s", ch_column_names[k], ch_column_types[k]);
		cr_assert(strstr(s, line), "column %s", line);
	}
	static const char *const json_names[] = { "tenant_id", "event_id", "seq", "occurred_at",
						  "occurred_at_ns", "received_at_ns", "actor_id",
						  "actor_type", "action", "resource_type", "resource_id",
						  "outcome", "source_ip", "user_agent", "request_id",
						  "trace_id", "attr_keys", "attr_values", "details_json",
						  "chain_hash", "segment_id" };
	for (int k = 0; k < CH_COLUMN_COUNT; k++)
		cr_assert_str_eq(ch_column_names[k], json_names[k]);
	free(s);
}

Test(clickhouse, schema_sql_avoids_what_18_16_lacks)
{
	char *s = schema("hodei_audit");
	static const char *const forbidden[] = {
		"DateTime64", "Map(", "LowCardinality", "TTL", "CODEC", "IPv4", "IPv6", "Bool",
		"INDEX", "Nullable", "{", "JSON", "Object(", "Variant", "Dynamic", "PROJECTION",
		"ReplicatedMergeTree", "ReplacingMergeTree", "FINAL", "DEDUPLICATE", "ALTER",
	};
	for (size_t i = 0; i < sizeof(forbidden) / sizeof(forbidden[0]); i++)
		cr_assert_null(strstr(s, forbidden[i]), "schema uses %s", forbidden[i]);
	free(s);
	s = schema("other_db");
	cr_assert(strstr(s, "`other_db`.events"));
	free(s);
}

Test(clickhouse, schema_sql_truncates_like_snprintf)
{
	char small[10];
	size_t n = ch_schema_sql("hodei_audit", small, sizeof(small));
	cr_assert_gt(n, 500);
	cr_assert_str_eq(small, "CREATE DA");
}

/* ---- errors ---------------------------------------------------------------------------- */

Test(clickhouse, parse_error_18_16)
{
	struct ch_error e;
	static const char body[] =
		"Code: 60, e.displayText() = DB::Exception: Table hodei_audit.events doesn't exist., "
		"e.what() = DB::Exception\n";
	cr_assert_eq(ch_parse_error(404, body, strlen(body), &e), CH_E_SCHEMA);
	cr_assert_eq(e.server_code, 60);
	cr_assert_eq(e.http_status, 404);
	cr_assert_str_eq(e.message, "Table hodei_audit.events doesn't exist.");
	static const char pw[] = "Code: 193, e.displayText() = DB::Exception: Wrong password for "
				 "user hodei, e.what() = DB::Exception\n";
	cr_assert_eq(ch_parse_error(500, pw, strlen(pw), &e), CH_E_AUTH);
	cr_assert_str_eq(e.message, "Wrong password for user hodei");
	static const char gz[] = "Code: 354, e.displayText() = DB::Exception: inflate failed: buffer "
				 "error, e.what() = DB::Exception\n";
	cr_assert_eq(ch_parse_error(500, gz, strlen(gz), &e), CH_E_SERVER);
	cr_assert_eq(e.server_code, 354);
	cr_assert_str_eq(e.message, "inflate failed: buffer error");
}

Test(clickhouse, parse_error_current_releases)
{
	struct ch_error e;
	static const char body[] = "Code: 516. DB::Exception: hodei: Authentication failed: password "
				   "is incorrect, or there is no user with such name. "
				   "(AUTHENTICATION_FAILED) (version 24.8.4.13 (official build))\n";
	cr_assert_eq(ch_parse_error(403, body, strlen(body), &e), CH_E_AUTH);
	cr_assert_eq(e.server_code, 516);
	cr_assert_str_eq(e.message, "hodei: Authentication failed: password is incorrect, or there "
				    "is no user with such name. (AUTHENTICATION_FAILED)");
	static const char db[] = "Code: 81. DB::Exception: Database x does not exist. "
				 "(UNKNOWN_DATABASE) (version 23.8.1.1)";
	cr_assert_eq(ch_parse_error(404, db, strlen(db), &e), CH_E_SCHEMA);
	cr_assert_eq(e.server_code, 81);
}

Test(clickhouse, parse_error_without_code)
{
	struct ch_error e;
	cr_assert_eq(ch_parse_error(502, "Bad Gateway\r\n<html>", 20, &e), CH_E_SERVER);
	cr_assert_eq(e.server_code, 0);
	cr_assert_str_eq(e.message, "Bad Gateway");
	cr_assert_eq(ch_parse_error(401, "", 0, &e), CH_E_AUTH);
	cr_assert_str_eq(e.message, "HTTP status 401");
	cr_assert_eq(ch_parse_error(500, NULL, 0, &e), CH_E_SERVER);
	char big[8000];
	memset(big, 'z', sizeof(big));
	memcpy(big, "Code: 1, e.displayText() = \x01\x02", 30);
	ch_parse_error(500, big, sizeof(big), &e);
	cr_assert_lt(strlen(e.message), CH_MESSAGE_MAX);
	for (const char *p = e.message; *p; p++)
		cr_assert_geq((unsigned char)*p, 0x20, "control characters removed");
}

Test(clickhouse, error_kinds_and_names)
{
	cr_assert_eq(ch_error_kind(0), CH_KIND_NONE);
	cr_assert_eq(ch_error_kind(CH_E_NETWORK), CH_KIND_NETWORK);
	cr_assert_eq(ch_error_kind(CH_E_TIMEOUT), CH_KIND_TIMEOUT);
	cr_assert_eq(ch_error_kind(CH_E_AUTH), CH_KIND_AUTH);
	cr_assert_eq(ch_error_kind(CH_E_SERVER), CH_KIND_SERVER);
	cr_assert_eq(ch_error_kind(CH_E_SCHEMA), CH_KIND_SCHEMA);
	cr_assert_eq(ch_error_kind(CH_E_CONFLICT), CH_KIND_CONFLICT);
	cr_assert_eq(ch_error_kind(FMT_E_CORRUPT), CH_KIND_DATA);
	cr_assert_eq(ch_error_kind(FMT_E_CHAIN), CH_KIND_DATA);
	cr_assert_eq(ch_error_kind(FMT_E_NOMEM), CH_KIND_OTHER);
	cr_assert_eq(ch_error_kind(-EIO), CH_KIND_OTHER);
	cr_assert_str_eq(ch_kind_name(CH_KIND_TIMEOUT), "timeout");
	cr_assert_str_eq(ch_kind_name(CH_KIND_COUNT), "other");
	cr_assert_str_eq(ch_strerror(FMT_E_CORRUPT), fmt_strerror(FMT_E_CORRUPT));
	cr_assert_str_neq(ch_strerror(CH_E_CONFLICT), fmt_strerror(CH_E_CONFLICT));
}

/* ---- configuration --------------------------------------------------------------------- */

Test(clickhouse, config_defaults_and_env)
{
	char err[256];
	struct ch_config cfg;
	unsetenv("HODEI_CLICKHOUSE_URL");
	cr_assert_eq(ch_config_from_env(&cfg, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(cfg.url, CH_URL_DEFAULT);
	cr_assert_str_eq(cfg.database, "hodei_audit");
	setenv("HODEI_CLICKHOUSE_URL", "http://10.0.0.1:18123/", 1);
	setenv("HODEI_CLICKHOUSE_USER", "mirror", 1);
	setenv("HODEI_CLICKHOUSE_PASSWORD", "pw", 1);
	setenv("HODEI_CLICKHOUSE_DATABASE", "audit_2", 1);
	setenv("HODEI_CLICKHOUSE_TIMEOUT", "1500ms", 1);
	setenv("HODEI_CLICKHOUSE_INSERT_BYTES_MAX", "8MiB", 1);
	setenv("HODEI_CLICKHOUSE_INSERT_ROWS_MAX", "5000", 1);
	cr_assert_eq(ch_config_from_env(&cfg, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(cfg.url, "http://10.0.0.1:18123/");
	cr_assert_str_eq(cfg.user, "mirror");
	cr_assert_str_eq(cfg.password, "pw");
	cr_assert_str_eq(cfg.database, "audit_2");
	cr_assert_eq(cfg.timeout_ms, 1500);
	cr_assert_eq(cfg.insert_bytes_max, 8u << 20);
	cr_assert_eq(cfg.insert_rows_max, 5000);
	setenv("HODEI_CLICKHOUSE_TIMEOUT", "soon", 1);
	cr_assert_eq(ch_config_from_env(&cfg, err, sizeof(err)), FMT_E_INVALID);
	cr_assert(strstr(err, "HODEI_CLICKHOUSE_TIMEOUT"), "%s", err);
}

Test(clickhouse, config_check_refuses)
{
	char err[256];
	struct ch_config cfg;
	static const char *const bad_db[] = { "", "1abc", "a-b", "a.b", "a`b", "x y" };
	for (size_t i = 0; i < sizeof(bad_db) / sizeof(bad_db[0]); i++) {
		ch_config_default(&cfg);
		snprintf(cfg.database, sizeof(cfg.database), "%s", bad_db[i]);
		cr_assert_eq(ch_config_check(&cfg, err, sizeof(err)), FMT_E_INVALID, "'%s'", bad_db[i]);
		cr_assert(strstr(err, "database"), "%s", err);
	}
	ch_config_default(&cfg);
	snprintf(cfg.url, sizeof(cfg.url), "ftp://x");
	cr_assert_eq(ch_config_check(&cfg, err, sizeof(err)), FMT_E_INVALID);
	snprintf(cfg.url, sizeof(cfg.url), "http://x/?user=a");
	cr_assert_eq(ch_config_check(&cfg, err, sizeof(err)), FMT_E_INVALID);
	ch_config_default(&cfg);
	cfg.insert_bytes_max = 1000;
	cr_assert_eq(ch_config_check(&cfg, err, sizeof(err)), FMT_E_INVALID);
	ch_config_default(&cfg);
	cfg.insert_rows_max = 0;
	cr_assert_eq(ch_config_check(&cfg, err, sizeof(err)), FMT_E_INVALID);
	ch_config_default(&cfg);
	cfg.gzip_level = 0;
	cr_assert_eq(ch_config_check(&cfg, err, sizeof(err)), FMT_E_INVALID);
	struct ch_client *c = (struct ch_client *)1;
	cr_assert_eq(ch_client_open(&cfg, &c), FMT_E_INVALID);
	cr_assert_null(c);
}

/* ---- the lock -------------------------------------------------------------------------- */

Test(clickhouse, mirror_lock_is_exclusive)
{
	char dir[] = "/tmp/hodei-ch-lock-XXXXXX";
	cr_assert_not_null(mkdtemp(dir));
	int a = -1, b = -1;
	cr_assert_eq(ch_mirror_lock(dir, &a), 0);
	cr_assert_eq(ch_mirror_lock(dir, &b), -EWOULDBLOCK);
	close(a);
	cr_assert_eq(ch_mirror_lock(dir, &b), 0, "free again once closed");
	close(b);
	cr_assert_eq(ch_mirror_lock("/nonexistent/hodei", &a), -ENOENT);
	char path[128];
	snprintf(path, sizeof(path), "%s/clickhouse-mirror.lock", dir);
	unlink(path);
	rmdir(dir);
}

/* ---- a damaged segment is refused before anything is sent ------------------------------ */

static uint8_t *build_segment(uint32_t n, size_t *len)
{
	static char ids[64][16];
	struct fmt_event rows[64];
	uint8_t chains[64][FMT_HASH_BYTES], chain[FMT_HASH_BYTES] = { 0 }, scratch[4096], h[32];
	cr_assert_leq(n, 64);
	for (uint32_t i = 0; i < n; i++) {
		full_event(&rows[i]);
		rows[i].attr_count = 2;  /* the 20 KB one is over the default limits */
		rows[i].seq = i + 1;
		rows[i].event_id[15] = (uint8_t)i;
		snprintf(ids[i], sizeof(ids[i]), "req-%u", i);
		rows[i].str[FMT_F_REQUEST_ID] = fmt_str_c(ids[i]);
		cr_assert_eq(fmt_event_hash(&rows[i], scratch, sizeof(scratch), h), 0);
		fmt_chain_next(chain, h, chain);
		memcpy(chains[i], chain, FMT_HASH_BYTES);
	}
	static const uint8_t zero[FMT_HASH_BYTES];
	struct fmt_segment_build_args a = { .segment_id = 7, .block_rows = 4, .created_ns = 1,
					    .chain_before = zero };
	uint8_t *img = NULL;
	cr_assert_eq(fmt_segment_build(&a, rows, (const uint8_t (*)[FMT_HASH_BYTES])chains, n, &img,
				       len), 0);
	return img;
}

Test(clickhouse, damaged_segment_refused_before_any_request)
{
	size_t len;
	uint8_t *img = build_segment(10, &len);
	struct ch_config cfg;
	ch_config_default(&cfg);
	snprintf(cfg.url, sizeof(cfg.url), "http://127.0.0.1:1");  /* nothing listens there */
	cfg.connect_timeout_ms = 500;
	struct ch_client *c;
	cr_assert_eq(ch_client_open(&cfg, &c), 0);
	struct ch_mirror_result res;
	/* Intact: it gets as far as the network (and finds nobody). */
	cr_assert_eq(ch_mirror_segment(c, img, len, &res), CH_E_NETWORK);
	cr_assert_eq(res.rows, 10);
	cr_assert_str_eq(res.tenant, "acme.eu-1");
	cr_assert_eq(res.segment_id, 7);
	/* One flipped bit anywhere: refused as data, no request made. */
	for (size_t off = 0; off < len; off += len / 13 + 1) {
		img[off] ^= 0x10;
		int rc = ch_mirror_segment(c, img, len, &res);
		cr_assert_eq(ch_error_kind(rc), CH_KIND_DATA, "flip at %zu: %s", off, ch_strerror(rc));
		cr_assert_eq(ch_last_error(c)->http_status, 0);
		img[off] ^= 0x10;
	}
	cr_assert_eq(ch_error_kind(ch_mirror_segment(c, img, len - 1, &res)), CH_KIND_DATA);
	ch_client_close(c);
	free(img);
}
