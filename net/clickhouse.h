/* SPDX-License-Identifier: Apache-2.0
 *
 * clickhouse.h — the ClickHouse mirror client (DESIGN.md §2.7, §8): a
 * blocking client of ClickHouse's HTTP interface on libcurl that puts the
 * rows of sealed segments into `<database>.events`, exactly once. It runs
 * on a dedicated mirror thread (or in the `hodei-audit clickhouse` CLI),
 * never on a shard thread: every call may block for up to its timeout.
 *
 * Data flow of one segment (ch_mirror_segment):
 *
 *   segment bytes ─▶ fmt_segment_verify_buf (checksums, chain, Merkle root)
 *     ─▶ decode every block ─▶ group rows by month of occurred_at (UTC)
 *     ─▶ CHECK: per month, count() and uniqExact(seq) of the tenant's rows
 *        with seq in [first_seq, last_seq] already in ClickHouse
 *     ─▶ per month: none there → insert all; all there → skip;
 *        some there → fetch their seqs, insert the others
 *     ─▶ INSERT … FORMAT RowBinary, gzip body, one partition per INSERT,
 *        at most insert_rows_max rows / insert_bytes_max bytes each
 *     ─▶ CHECK again: every month must now hold exactly its rows
 *
 * Why exactly once holds (docs/CLICKHOUSE.md has the proof sketch):
 *   E1 A tenant's (tenant_id, seq) names one event forever (seqs have no
 *      gaps and are never reused), so "is this event in ClickHouse" is a
 *      question ClickHouse itself can answer: the events table is the only
 *      record of what was mirrored; no second bookkeeping table can drift.
 *   E2 Every INSERT is all-or-nothing: its rows are one block (the
 *      block-size settings below are sent with it) of one partition (all
 *      rows in one month), which a MergeTree writes as one part, renamed
 *      into place at once. The body is gzip'd: ClickHouse 18.16 commits a
 *      plain body that ends early at a row boundary (a client killed
 *      mid-upload) as if it were complete, but refuses a gzip stream that
 *      is cut anywhere, trailer and CRC32 included (tested).
 *   E3 Inserting only what the CHECK did not find, with one mirror per
 *      tenant at a time (ch_mirror_lock), never inserts an event twice;
 *      so a crash at any point, a timeout whose INSERT did commit, or a
 *      retry after an outage leaves every event there once or not yet.
 *   E4 The final CHECK proves it for this segment; any other state (more
 *      rows than seqs, rows of a seq in another month) is CH_E_CONFLICT,
 *      never "fixed" by deleting (mutations crash 18.16).
 *
 * Errors: 0 or a negative code — the CH_E_* below, FMT_E_* (a corrupt
 * segment: FMT_E_CORRUPT, FMT_E_CHAIN; FMT_E_NOMEM, FMT_E_INVALID,
 * FMT_E_TOO_BIG) or -errno. After an error, ch_last_error() tells the HTTP
 * status, ClickHouse's "Code: N" and its message, and ch_error_kind()
 * sorts the code into a kind for metrics.
 *
 * Threads: a client is used by one thread at a time; clients on different
 * threads are independent. Memory: the client keeps one curl handle (its
 * connection is reused), a response buffer and the insert buffers, which
 * grow up to insert_bytes_max (raw) and zlib's bound of it (gzip'd) and
 * are kept for the next segment.
 */
#ifndef HODEI_NET_CLICKHOUSE_H
#define HODEI_NET_CLICKHOUSE_H

#include "format/event.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CH_URL_DEFAULT "http://127.0.0.1:8123"
#define CH_USER_DEFAULT "default"
#define CH_DATABASE_DEFAULT "hodei_audit"
#define CH_TABLE "events"
#define CH_TIMEOUT_MS_DEFAULT 60000u
#define CH_CONNECT_TIMEOUT_MS_DEFAULT 5000u
#define CH_INSERT_BYTES_MAX_DEFAULT (64ull << 20)   /* raw RowBinary per INSERT */
#define CH_INSERT_ROWS_MAX_DEFAULT 1000000u         /* > the 500k-row default segment */
#define CH_GZIP_LEVEL_DEFAULT 1
#define CH_INSERT_BYTES_MIN (1ull << 20)            /* > the largest valid event */
#define CH_INSERT_BYTES_LIMIT (1ull << 30)
#define CH_URL_MAX 512
#define CH_USER_MAX 128
#define CH_PASSWORD_MAX 256
#define CH_DATABASE_MAX 64
#define CH_MESSAGE_MAX 512
/* occurred_at (DateTime) holds seconds up to 2105-12-31T23:59:59Z: past
 * that, ClickHouse 18.16's date tables give wrong months. occurred_at_ns
 * keeps the exact value; the few events past 2105 sort at its end. */
#define CH_DATETIME_MAX_S 4291747199u
#define CH_MONTHS ((2105 - 1970 + 1) * 12)

/* The project's codes for ClickHouse, in their own range (format/common.h
 * holds -1001.., net/grpc_client.h -1101..). */
enum ch_err {
	CH_E_NETWORK = -1301,  /* no connection, reset, name not resolved */
	CH_E_TIMEOUT = -1302,  /* no complete answer within timeout_ms */
	CH_E_AUTH = -1303,     /* user or password refused, access denied */
	CH_E_SERVER = -1304,   /* ClickHouse answered with an error */
	CH_E_SCHEMA = -1305,   /* the table is missing or its columns differ */
	CH_E_CONFLICT = -1306, /* rows already there that the protocol cannot explain */
	CH_E_PROTOCOL = -1307, /* an answer that is not what the query returns */
};

/* Error kinds, for a metric label (hodei_mirror_errors_total{kind}). */
enum ch_err_kind {
	CH_KIND_NONE = 0,
	CH_KIND_NETWORK,
	CH_KIND_TIMEOUT,
	CH_KIND_AUTH,
	CH_KIND_SERVER,
	CH_KIND_SCHEMA,
	CH_KIND_CONFLICT,
	CH_KIND_DATA,     /* the segment itself is corrupt or not a segment */
	CH_KIND_OTHER,    /* memory, protocol, configuration */
	CH_KIND_COUNT,
};

struct ch_config {
	char url[CH_URL_MAX + 1];           /* http(s)://host:port[/path] */
	char user[CH_USER_MAX + 1];         /* "" or "default": no credentials sent */
	char password[CH_PASSWORD_MAX + 1]; /* sent with HTTP basic auth, never logged */
	char database[CH_DATABASE_MAX + 1]; /* [A-Za-z_][A-Za-z0-9_]* */
	uint32_t timeout_ms;                /* one HTTP request, connect included */
	uint32_t connect_timeout_ms;
	uint64_t insert_bytes_max;          /* raw RowBinary bytes per INSERT */
	uint32_t insert_rows_max;           /* rows per INSERT */
	int gzip_level;                     /* 1..9 */
};

/* The defaults above. */
void ch_config_default(struct ch_config *cfg);

/* Defaults, then the environment: HODEI_CLICKHOUSE_URL, _USER, _PASSWORD,
 * _DATABASE, _TIMEOUT ("30s", "500ms", "2m" or seconds),
 * _INSERT_BYTES_MAX (bytes, or with a KiB/MiB/GiB suffix),
 * _INSERT_ROWS_MAX. Then ch_config_check(). Returns 0 or FMT_E_INVALID with
 * the variable and why in err (err_cap bytes). */
int ch_config_from_env(struct ch_config *cfg, char *err, size_t err_cap);

/* Checks a configuration: URL scheme, database name, limits in range.
 * Returns 0 or FMT_E_INVALID with the field and why in err. */
int ch_config_check(const struct ch_config *cfg, char *err, size_t err_cap);

/* What went wrong in the client's last failed call. */
struct ch_error {
	int rc;                        /* the code the call returned */
	long http_status;              /* 0 when no answer came */
	int server_code;               /* ClickHouse's "Code: N", 0 if none */
	char message[CH_MESSAGE_MAX];  /* one line, control characters removed */
};

struct ch_client;

/* A client for cfg (copied). No network I/O yet. Returns 0, FMT_E_INVALID
 * (cfg fails ch_config_check), FMT_E_NOMEM. Reads HODEI_FAILPOINT (see
 * clickhouse.c: test-only crash points). */
int ch_client_open(const struct ch_config *cfg, struct ch_client **out);
void ch_client_close(struct ch_client *c);

/* The client's last error (valid until the next call). */
const struct ch_error *ch_last_error(const struct ch_client *c);

/* GET /ping answers "Ok.". Returns 0, CH_E_NETWORK, CH_E_TIMEOUT,
 * CH_E_SERVER, CH_E_PROTOCOL. */
int ch_ping(struct ch_client *c);

/* Creates the database and the events table if missing, checks that every
 * column the mirror writes exists with its type (extra columns are fine),
 * and learns which insert settings the server knows (they differ between
 * 18.16 and current releases). ch_mirror_segment() calls it first if it
 * has not succeeded yet. Returns 0, CH_E_SCHEMA (a column missing or of
 * another type: the message names it), or a transport/server error. */
int ch_ensure_schema(struct ch_client *c);

/* The SQL ch_ensure_schema runs: "CREATE DATABASE ...;\n\nCREATE TABLE
 * ...;\n" for database. Returns the length it needs (excluding the NUL);
 * writes at most cap bytes, NUL-terminated when cap > 0, like snprintf. */
size_t ch_schema_sql(const char *database, char *out, size_t cap);

/* Plain `SELECT count() FROM <db>.events WHERE tenant_id = ...` (no
 * FINAL). Returns 0 with *n, FMT_E_INVALID (not a tenant id), or a
 * transport/server/schema error. */
int ch_count_tenant(struct ch_client *c, const char *tenant, uint64_t *n);

struct ch_mirror_result {
	char tenant[FMT_TENANT_MAX + 1];
	uint64_t segment_id;
	uint64_t first_seq, last_seq;
	uint32_t rows;          /* in the segment */
	uint32_t rows_inserted; /* by this call */
	uint32_t rows_present;  /* found already there (an earlier call, a crash after its INSERT) */
	uint32_t months;        /* partitions the segment's rows fall in */
	uint32_t inserts;       /* INSERT requests sent */
	uint64_t bytes_sent;    /* gzip'd body bytes */
};

/* Mirrors one segment image (borrowed for the call) exactly once; see the
 * top of this file. On return 0 every row of the segment is in ClickHouse
 * exactly once (checked). *res is filled as far as the call got.
 * Returns 0; FMT_E_CORRUPT, FMT_E_CHAIN, FMT_E_TRUNCATED, FMT_E_VERSION
 * (the segment fails its checks: nothing was sent); FMT_E_INVALID (its
 * tenant id is not valid); CH_E_CONFLICT (rows there that the protocol
 * cannot explain: docs/CLICKHOUSE.md says how to repair); CH_E_SCHEMA;
 * CH_E_NETWORK, CH_E_TIMEOUT, CH_E_AUTH, CH_E_SERVER, CH_E_PROTOCOL (retry
 * later: the protocol makes a retry safe); FMT_E_NOMEM; FMT_E_TOO_BIG (one
 * row over insert_bytes_max). */
int ch_mirror_segment(struct ch_client *c, const uint8_t *segment, size_t len,
		      struct ch_mirror_result *res);

/* One mirror per data directory at a time (E3): takes an exclusive,
 * non-blocking flock on <data_dir>/clickhouse-mirror.lock (created if
 * missing). Returns 0 with *fd (close it to release), -EWOULDBLOCK when
 * another process holds it, or -errno. */
int ch_mirror_lock(const char *data_dir, int *fd);

/* The kind of an error code (any code: CH_E_*, FMT_E_*, -errno). */
enum ch_err_kind ch_error_kind(int rc);

/* "network", "timeout", "auth", "server", "schema", "conflict", "data",
 * "other" ("none" for CH_KIND_NONE). */
const char *ch_kind_name(enum ch_err_kind kind);

/* A static name for any code (CH_E_* here, the rest via fmt_strerror). */
const char *ch_strerror(int rc);

/* ---- the pieces, exposed for the unit tests -------------------------------- */

/* Column names of the INSERT, in RowBinary order, and their count. */
#define CH_COLUMN_COUNT 21
extern const char *const ch_column_names[CH_COLUMN_COUNT];
extern const char *const ch_column_types[CH_COLUMN_COUNT];

/* occurred_at seconds of an occurred_at_ns (floor, clamped to
 * [0, CH_DATETIME_MAX_S]) and its month as YYYYMM (UTC). */
uint32_t ch_occurred_at_s(int64_t occurred_at_ns);
uint32_t ch_month_of(uint32_t unix_s);

/* Bytes of ev's RowBinary row (ch_row_encode's output). */
size_t ch_row_size(const struct fmt_event *ev);

/* Writes ev's row in RowBinary, columns in ch_column_names order: the
 * tenant, seq and received_at come from ev, chain is the row's chain value
 * (written as 64 lowercase hex digits), segment_id the segment's.
 * Returns the bytes written, FMT_E_TOO_BIG when cap is short, or
 * FMT_E_INVALID for an outcome the schema's Enum8 does not have. */
int64_t ch_row_encode(const struct fmt_event *ev, const uint8_t chain[FMT_HASH_BYTES],
		      uint64_t segment_id, uint8_t *out, size_t cap);

/* Writes s (len bytes) as a ClickHouse string literal with its quotes:
 * backslash and quote escaped, control bytes as \xHH. Returns the length
 * it needs like snprintf. */
size_t ch_sql_quote(const char *s, size_t len, char *out, size_t cap);

/* Fills *err from an answer that was not HTTP 200: ClickHouse's
 * "Code: N, e.displayText() = ..." (18.16) or "Code: N. DB::Exception: ..."
 * (current releases) is parsed into server_code and message, and the code
 * is sorted into CH_E_AUTH, CH_E_SCHEMA or CH_E_SERVER. Returns err->rc. */
int ch_parse_error(long http_status, const char *body, size_t len, struct ch_error *err);

#endif
