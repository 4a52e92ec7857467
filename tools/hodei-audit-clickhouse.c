// SPDX-License-Identifier: Apache-2.0
/*
 * hodei-audit-clickhouse.c — `hodei-audit clickhouse mirror|schema|count`
 * (see hodei-audit-clickhouse.h), on top of net/clickhouse.h.
 *
 * mirror --data-dir DIR is the offline backfill: for every shard-NNN/ of
 * DIR, in directory order, it reads manifest.log and mirrors each sealed
 * segment the manifest names, in manifest order (a tenant's segments in seq
 * order). Each file is checked against its manifest record (size, XXH3-64)
 * and then, by ch_mirror_segment, against its own checksums, hash chain and
 * Merkle root before any row is sent. The mirror protocol is exactly once,
 * so the command can be re-run at any time, after any failure: segments
 * already in ClickHouse are found there and skipped. It takes the data
 * directory's mirror lock (ch_mirror_lock) so that it never runs beside
 * another mirror of the same directory.
 *
 * A ClickHouse failure (unreachable, timeout, credentials, server error)
 * stops the command at once: the next segments would fail the same way. A
 * problem with one segment (missing or damaged file, rows in ClickHouse
 * that the protocol cannot explain) is reported and the command goes on
 * with the others. At the end it prints, per tenant, what it found and
 * ClickHouse's plain count() for the tenant.
 *
 * Exit codes (enum cli_exit): 0 every segment is in ClickHouse once;
 * 1 some segment could not be mirrored (reported); 2 usage; 3 the data
 * directory cannot be read or is locked by another mirror; 4 ClickHouse
 * refused the credentials; 5 ClickHouse unreachable or answering errors.
 */
#include "tools/hodei-audit-clickhouse.h"

#include "engine/offline.h"
#include "format/record.h"
#include "net/clickhouse.h"
#include "tools/hodei-audit-client.h"
#include "net/units.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SHARDS_MAX 4096
#define MANIFEST_PAYLOAD_MAX 4096 /* what the engine accepts (engine/manifest.c) */

const char cli_clickhouse_usage_text[] =
	"  clickhouse mirror --data-dir DIR [CH] [--json]\n"
	"                                  mirror every sealed segment of a data directory\n"
	"                                  into ClickHouse, exactly once (safe to re-run)\n"
	"  clickhouse schema [--database D]  print the SQL of the ClickHouse schema\n"
	"  clickhouse count --tenant T [CH] [--json]\n"
	"                                  plain count() of a tenant's rows in ClickHouse\n"
	"CH: --url URL --user U --database D (defaults $HODEI_CLICKHOUSE_URL, _USER,\n"
	"  _DATABASE, else " CH_URL_DEFAULT ", " CH_USER_DEFAULT ", " CH_DATABASE_DEFAULT
	"), --timeout 60s,\n"
	"  --insert-rows-max N, --insert-bytes-max N; the password only from\n"
	"  $HODEI_CLICKHOUSE_PASSWORD.\n";

static int usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("hodei-audit: clickhouse: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputs("\n(run 'hodei-audit help' for the usage)\n", stderr);
	va_end(ap);
	return CLI_USAGE;
}

/* ---- flags ------------------------------------------------------------------------- */

struct opts {
	struct ch_config cfg;
	const char *data_dir;
	const char *tenant;
	bool json;
};

/* "30s", "500ms", "2m", "1h" or plain seconds, into ms (net/units.h). */
static bool parse_duration_ms(const char *s, uint32_t *out)
{
	int64_t ns;
	if (units_parse_duration_ns(s, 1000000000ll, &ns) != 0 || ns / 1000000 > UINT32_MAX)
		return false;
	*out = (uint32_t)(ns / 1000000);
	return true;
}

/* One flag into o. Returns 0 (consumed), 1 (not a flag of ours), or an
 * exit code after printing why. */
static int opt_one(struct opts *o, int argc, char **argv, int *i)
{
	static const char *const names[] = { "--url", "--user", "--database", "--timeout",
					     "--insert-rows-max", "--insert-bytes-max", "--data-dir",
					     "--tenant" };
	if (!strcmp(argv[*i], "--json")) {
		o->json = true;
		return 0;
	}
	for (size_t k = 0; k < FMT_ARRAY_LEN(names); k++) {
		const char *v;
		int m = cli_flag_value(argc, argv, i, names[k], &v);
		if (m < 0)
			return usage("%s needs a value", names[k]);
		if (m == 0)
			continue;
		uint64_t n;
		bool ok = true;
		switch (k) {
		case 0: ok = strlen(v) < sizeof(o->cfg.url); snprintf(o->cfg.url, sizeof(o->cfg.url), "%s", v); break;
		case 1: ok = strlen(v) < sizeof(o->cfg.user); snprintf(o->cfg.user, sizeof(o->cfg.user), "%s", v); break;
		case 2: ok = strlen(v) < sizeof(o->cfg.database);
			snprintf(o->cfg.database, sizeof(o->cfg.database), "%s", v); break;
		case 3: ok = parse_duration_ms(v, &o->cfg.timeout_ms); break;
		case 4: ok = units_parse_u64(v, &n) == 0 && n <= UINT32_MAX; o->cfg.insert_rows_max = (uint32_t)n; break;
		case 5: ok = units_parse_u64(v, &n) == 0; o->cfg.insert_bytes_max = n; break;
		case 6: o->data_dir = v; break;
		default: o->tenant = v; break;
		}
		return ok ? 0 : usage("%s: bad value '%s'", names[k], v);
	}
	return 1;
}

/* Parses argv[3..]: the environment (HODEI_CLICKHOUSE_*) first, flags
 * over it, then the check of the result. */
static int opts_parse(struct opts *o, int argc, char **argv)
{
	char err[256];
	memset(o, 0, sizeof(*o));
	if (ch_config_from_env(&o->cfg, err, sizeof(err)))
		return usage("%s", err);
	for (int i = 3; i < argc; i++) {
		int rc = opt_one(o, argc, argv, &i);
		if (rc == 1)
			return usage("%s: unknown argument %s", argv[2], argv[i]);
		if (rc)
			return rc;
	}
	if (ch_config_check(&o->cfg, err, sizeof(err)))
		return usage("%s", err);
	return 0;
}

/* The exit code for a ClickHouse error, after printing it. */
static int ch_fail(const struct opts *o, struct ch_client *c, const char *what, int rc)
{
	const struct ch_error *e = ch_last_error(c);
	fprintf(stderr, "hodei-audit: clickhouse %s: %s (%s): %s", what, ch_strerror(rc),
		ch_kind_name(ch_error_kind(rc)), e->message[0] ? e->message : o->cfg.url);
	if (e->http_status)
		fprintf(stderr, " [HTTP %ld", e->http_status);
	if (e->server_code)
		fprintf(stderr, ", ClickHouse code %d", e->server_code);
	fputs(e->http_status ? "]\n" : "\n", stderr);
	return rc == CH_E_AUTH ? CLI_AUTH : CLI_SERVER;
}

/* ---- schema, count ------------------------------------------------------------------ */

static int cmd_schema(const struct opts *o)
{
	size_t n = ch_schema_sql(o->cfg.database, NULL, 0);
	char *sql = malloc(n + 1);
	if (!sql)
		return CLI_UNREADABLE;
	ch_schema_sql(o->cfg.database, sql, n + 1);
	fputs(sql, stdout);
	free(sql);
	return CLI_OK;
}

static int cmd_count(const struct opts *o)
{
	if (!o->tenant || !fmt_tenant_valid(fmt_str_c(o->tenant)))
		return usage("count: --tenant T (1-64 characters of [A-Za-z0-9._-]) is required");
	struct ch_client *c;
	if (ch_client_open(&o->cfg, &c))
		return CLI_UNREADABLE;
	uint64_t n = 0;
	int rc = ch_count_tenant(c, o->tenant, &n);
	int code = CLI_OK;
	if (rc)
		code = ch_fail(o, c, "count", rc);
	else if (o->json)
		printf("{\"tenant\":\"%s\",\"count\":%llu}\n", o->tenant, (unsigned long long)n);
	else
		printf("%llu\n", (unsigned long long)n);
	ch_client_close(c);
	return code;
}

/* ---- mirror ----------------------------------------------------------------------- */

struct tenant_sum {
	char name[FMT_TENANT_MAX + 1];
	uint64_t segments, rows, inserted, present, failed;
};

struct mirror {
	const struct opts *o;
	struct ch_client *c;
	struct eng_manifest_entry *entries;  /* of the current shard */
	size_t entry_count, entry_cap;
	struct tenant_sum *tenants;
	size_t tenant_count, tenant_cap;
	uint64_t segments, segments_total, rows, inserted, present, problems;
	int fatal;                           /* a ClickHouse failure stopped the run */
	bool progress;                       /* stderr is a terminal */
};

static struct tenant_sum *tenant_of(struct mirror *m, const char *name)
{
	for (size_t i = 0; i < m->tenant_count; i++)
		if (!strcmp(m->tenants[i].name, name))
			return &m->tenants[i];
	if (m->tenant_count == m->tenant_cap) {
		size_t cap = m->tenant_cap ? 2 * m->tenant_cap : 16;
		struct tenant_sum *t = realloc(m->tenants, cap * sizeof(*t));
		if (!t)
			return NULL;
		m->tenants = t;
		m->tenant_cap = cap;
	}
	struct tenant_sum *t = &m->tenants[m->tenant_count++];
	memset(t, 0, sizeof(*t));
	snprintf(t->name, sizeof(t->name), "%s", name);
	return t;
}

static void problem(struct mirror *m, const char *file, const char *tenant, uint64_t segment_id,
		    int rc, const char *message)
{
	m->problems++;
	if (m->o->json) {
		char id[17];
		snprintf(id, sizeof(id), "%016llx", (unsigned long long)segment_id);
		json_t *j = json_pack("{ss ss ss ss ss ss}", "type", "problem", "file", file, "tenant",
				      tenant, "segment_id", id, "kind",
				      ch_kind_name(ch_error_kind(rc)), "message", message);
		char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
		if (s)
			puts(s);
		free(s);
		json_decref(j);
		return;
	}
	fprintf(stderr, "hodei-audit: clickhouse mirror: %s: %s (%s)\n", file, message,
		ch_kind_name(ch_error_kind(rc)));
}

static int manifest_visit(void *ctx, uint64_t offset, const struct fmt_rec *rec)
{
	struct mirror *m = ctx;
	(void)offset;
	if (rec->kind != FMT_REC_SEGMENT)
		return 0;  /* other records (exports, removals) name no new segment */
	if (m->entry_count == m->entry_cap) {
		size_t cap = m->entry_cap ? 2 * m->entry_cap : 64;
		struct eng_manifest_entry *e = realloc(m->entries, cap * sizeof(*e));
		if (!e)
			return FMT_E_NOMEM;
		m->entries = e;
		m->entry_cap = cap;
	}
	if (eng_manifest_entry_decode(rec->payload, rec->payload_len, &m->entries[m->entry_count]))
		return FMT_E_CORRUPT;
	m->entry_count++;
	return 0;
}

/* Lists the segment records of shard_dir/manifest.log into m->entries. */
static int manifest_list(struct mirror *m, const char *shard_dir)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/manifest.log", shard_dir);
	uint8_t *buf = NULL;
	size_t len = 0;
	m->entry_count = 0;
	int rc = eng_file_read_all(path, &buf, &len);
	if (rc == -ENOENT)
		return 0;  /* a shard that never sealed anything */
	if (rc) {
		problem(m, path, "", 0, rc, fmt_strerror(rc));
		return rc;
	}
	struct fmt_log_scan sc;
	rc = fmt_log_scan(buf, len, "HODEIMAN", MANIFEST_PAYLOAD_MAX, manifest_visit, m, &sc);
	free(buf);
	if (rc == 0 && sc.stop != 0 && sc.stop != FMT_E_TRUNCATED)
		rc = sc.stop;
	if (rc)
		problem(m, path, "", 0, rc, "manifest damaged: run `hodei-audit verify --data-dir`; "
			"this shard is skipped");
	return rc;
}

/* Reads one segment file and checks it against its manifest record. */
static int segment_read(struct mirror *m, const char *path, const struct eng_manifest_entry *e,
			uint8_t **buf, size_t *len)
{
	int rc = eng_file_read_all(path, buf, len);
	if (rc) {
		problem(m, path, e->tenant, e->segment_id, rc, rc == -ENOENT
			? "segment file not on local disk: cannot mirror it from here"
			: strerror(-rc));
		return rc;
	}
	if (*len != e->file_size || fmt_xxh3(*buf, *len) != e->file_checksum) {
		problem(m, path, e->tenant, e->segment_id, FMT_E_CORRUPT,
			"segment file differs from its manifest record (size or XXH3-64)");
		free(*buf);
		*buf = NULL;
		return FMT_E_CORRUPT;
	}
	return 0;
}

static void mirror_one(struct mirror *m, const char *shard_dir, const struct eng_manifest_entry *e)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/segments/%016llx.hseg", shard_dir,
		 (unsigned long long)e->segment_id);
	struct tenant_sum *t = tenant_of(m, e->tenant);
	uint8_t *buf = NULL;
	size_t len = 0;
	if (!t || segment_read(m, path, e, &buf, &len) != 0) {
		if (t)
			t->failed++;
		return;
	}
	struct ch_mirror_result res;
	int rc = ch_mirror_segment(m->c, buf, len, &res);
	free(buf);
	t->segments++;
	m->segments++;
	if (rc) {
		enum ch_err_kind k = ch_error_kind(rc);
		t->failed++;
		if (k == CH_KIND_DATA || k == CH_KIND_CONFLICT || rc == FMT_E_INVALID ||
		    rc == FMT_E_TOO_BIG)
			problem(m, path, e->tenant, e->segment_id, rc, ch_last_error(m->c)->message);
		else
			m->fatal = ch_fail(m->o, m->c, "mirror", rc);
		return;
	}
	t->rows += res.rows;
	t->inserted += res.rows_inserted;
	t->present += res.rows_present;
	m->rows += res.rows;
	m->inserted += res.rows_inserted;
	m->present += res.rows_present;
}

static int shard_name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The shard-NNN names of the data directory, sorted (malloc'd array of
 * malloc'd names). Returns the count, or -errno. */
static int shards_list(const char *dir, char ***out)
{
	DIR *d = opendir(dir);
	if (!d)
		return -errno;
	char **names = calloc(SHARDS_MAX, sizeof(*names));
	int n = 0;
	struct dirent *de;
	while (names && n < SHARDS_MAX && (de = readdir(d)) != NULL)
		if (!strncmp(de->d_name, "shard-", 6) && strspn(de->d_name + 6, "0123456789") ==
		    strlen(de->d_name + 6) && de->d_name[6])
			if ((names[n] = strdup(de->d_name)) != NULL)
				n++;
	closedir(d);
	if (!names)
		return -ENOMEM;
	qsort(names, (size_t)n, sizeof(*names), shard_name_cmp);
	*out = names;
	return n;
}

static void mirror_shard(struct mirror *m, const char *shard_dir)
{
	if (manifest_list(m, shard_dir) != 0)
		return;
	for (size_t i = 0; i < m->entry_count && !m->fatal; i++) {
		mirror_one(m, shard_dir, &m->entries[i]);
		if (m->progress)
			fprintf(stderr, "\rclickhouse mirror: %llu segments, %llu rows",
				(unsigned long long)m->segments, (unsigned long long)m->rows);
	}
}

static void report_tenant(struct mirror *m, const struct tenant_sum *t)
{
	uint64_t n = 0;
	int rc = FMT_E_STATE;  /* after a ClickHouse failure, no count is asked */
	if (!m->fatal && (rc = ch_count_tenant(m->c, t->name, &n)) != 0)
		m->fatal = ch_fail(m->o, m->c, "count", rc);
	if (m->o->json) {
		json_t *j = json_pack("{ss ss sI sI sI sI sI}", "type", "tenant", "tenant", t->name,
				      "segments", (json_int_t)t->segments, "rows", (json_int_t)t->rows,
				      "inserted", (json_int_t)t->inserted, "already_present",
				      (json_int_t)t->present, "failed", (json_int_t)t->failed);
		if (j)
			json_object_set_new(j, "clickhouse_count", rc ? json_null() : json_integer((json_int_t)n));
		char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
		if (s)
			puts(s);
		free(s);
		json_decref(j);
		return;
	}
	printf("tenant %s: %llu segments, %llu rows: %llu inserted, %llu already there", t->name,
	       (unsigned long long)t->segments, (unsigned long long)t->rows,
	       (unsigned long long)t->inserted, (unsigned long long)t->present);
	if (t->failed)
		printf(", %llu segments FAILED", (unsigned long long)t->failed);
	if (rc == 0)
		printf("; ClickHouse count() %llu\n", (unsigned long long)n);
	else
		printf("\n");
}

static void report(struct mirror *m)
{
	if (m->progress)
		fputc('\n', stderr);
	for (size_t i = 0; i < m->tenant_count; i++)
		report_tenant(m, &m->tenants[i]);
	bool ok = !m->fatal && m->problems == 0;
	if (m->o->json) {
		json_t *j = json_pack("{ss sb sI sI sI sI sI ss ss}", "type", "summary", "ok", ok,
				      "segments", (json_int_t)m->segments, "rows", (json_int_t)m->rows,
				      "inserted", (json_int_t)m->inserted, "already_present",
				      (json_int_t)m->present, "problems", (json_int_t)m->problems,
				      "url", m->o->cfg.url, "database", m->o->cfg.database);
		char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
		if (s)
			puts(s);
		free(s);
		json_decref(j);
		return;
	}
	printf("clickhouse mirror: %s: %llu segments, %llu rows of %zu tenants: %llu inserted, "
	       "%llu already there; %llu problems (%s, database %s)\n",
	       ok ? "complete" : m->fatal ? "STOPPED" : "INCOMPLETE", (unsigned long long)m->segments,
	       (unsigned long long)m->rows, m->tenant_count, (unsigned long long)m->inserted,
	       (unsigned long long)m->present, (unsigned long long)m->problems, m->o->cfg.url,
	       m->o->cfg.database);
}

static int mirror_run(struct mirror *m, char **shards, int n)
{
	int rc = ch_ensure_schema(m->c);
	if (rc)
		return ch_fail(m->o, m->c, "schema", rc);
	for (int i = 0; i < n && !m->fatal; i++) {
		char shard_dir[PATH_MAX];
		snprintf(shard_dir, sizeof(shard_dir), "%s/%s", m->o->data_dir, shards[i]);
		mirror_shard(m, shard_dir);
	}
	report(m);
	return m->fatal ? m->fatal : m->problems ? CLI_PROBLEMS : CLI_OK;
}

static int cmd_mirror(const struct opts *o)
{
	if (!o->data_dir || !*o->data_dir)
		return usage("mirror: --data-dir DIR is required");
	char **shards = NULL;
	int n = shards_list(o->data_dir, &shards);
	if (n <= 0) {
		fprintf(stderr, "hodei-audit: clickhouse mirror: %s: %s\n", o->data_dir,
			n == 0 ? "no shard-NNN directories: not a hodei-audit data directory"
			       : strerror(-n));
		free(shards);
		return CLI_UNREADABLE;
	}
	int lock_fd = -1, code;
	int lrc = ch_mirror_lock(o->data_dir, &lock_fd);
	struct mirror m = { .o = o, .progress = !o->json && isatty(STDERR_FILENO) };
	if (lrc == -EWOULDBLOCK) {
		fprintf(stderr, "hodei-audit: clickhouse mirror: %s/clickhouse-mirror.lock is held: "
			"another mirror (hodei-auditd or this command) runs on this directory\n",
			o->data_dir);
		code = CLI_UNREADABLE;
	} else if (ch_client_open(&o->cfg, &m.c) != 0) {
		code = CLI_UNREADABLE;
	} else {
		if (lrc)  /* a read-only copy: no other mirror can write there either */
			fprintf(stderr, "hodei-audit: clickhouse mirror: warning: cannot lock %s: %s\n",
				o->data_dir, strerror(-lrc));
		code = mirror_run(&m, shards, n);
	}
	ch_client_close(m.c);
	if (lock_fd >= 0)
		close(lock_fd);
	for (int i = 0; i < n; i++)
		free(shards[i]);
	free(shards);
	free(m.entries);
	free(m.tenants);
	return code;
}

int cli_clickhouse(int argc, char **argv)
{
	if (argc < 3)
		return usage("missing subcommand: mirror, schema or count");
	const char *sub = argv[2];
	if (strcmp(sub, "mirror") && strcmp(sub, "schema") && strcmp(sub, "count"))
		return usage("unknown subcommand '%s' (mirror, schema, count)", sub);
	struct opts o;
	int rc = opts_parse(&o, argc, argv);
	if (rc == 0) {
		if (!strcmp(sub, "schema"))
			rc = cmd_schema(&o);
		else if (!strcmp(sub, "count"))
			rc = cmd_count(&o);
		else
			rc = cmd_mirror(&o);
	}
	explicit_bzero(o.cfg.password, sizeof(o.cfg.password));
	return rc;
}
