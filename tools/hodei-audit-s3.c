// SPDX-License-Identifier: Apache-2.0
/*
 * hodei-audit-s3.c — `hodei-audit s3`: the S3 client of net/s3.h from the
 * command line, for operators (is the bucket ready for the replicator? is
 * this segment there, with which version and checksum?) and for the
 * integration tests, which drive the client through it against moto.
 *
 *   s3 check                 endpoint, bucket, versioning; exit 0 only if
 *                            versioning is Enabled (what the server needs)
 *   s3 put FILE KEY          upload (single PUT or multipart), metadata
 *                            x-amz-meta-hodei-xxh3 = XXH3-64 of the file
 *   s3 head KEY              size, version id, ETag, checksum metadata
 *   s3 get KEY               the object's bytes to stdout or -o FILE
 *   s3 ls [PREFIX]           every version under PREFIX (default: the
 *                            configured prefix)
 *
 * Configuration comes from the same environment as the server
 * (s3_config_from_env: HODEI_S3_*, AWS_*), then the flags. KEY is the
 * object's full key, as `ls` prints it: the configured prefix is not
 * added. Output is "name: value" lines, or one JSON object per line with
 * --json. Ctrl-C stops a transfer cleanly (a multipart upload is
 * aborted). Exit codes: 0 ok; 1 versioning not Enabled, no such bucket,
 * or no such key; 2 usage; 3 a local file cannot be read or written;
 * 4 credentials refused; 5 any other S3 error (network, timeout, server,
 * checksum, ...), the kind on stderr.
 */
#include "tools/hodei-audit-s3.h"

#include "format/common.h"
#include "net/s3.h"
#include "tools/hodei-audit-client.h"
#include "net/units.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char cli_s3_usage_text[] =
	"  s3 check [S3] [--json]          show the bucket's versioning; exit 0 only if\n"
	"                                  Enabled (what replication needs)\n"
	"  s3 put FILE KEY [--checksum V] [S3] [--json]\n"
	"                                  upload FILE (multipart above the threshold) with\n"
	"                                  x-amz-meta-hodei-xxh3 (default: XXH3-64 of FILE)\n"
	"  s3 head KEY [--version-id V] [S3] [--json]\n"
	"                                  size, version id, ETag and checksum of an object\n"
	"  s3 get KEY [--version-id V] [-o FILE] [--max-bytes N] [S3]\n"
	"                                  write an object to stdout (or FILE)\n"
	"  s3 ls [PREFIX] [S3] [--json]    list every object version under PREFIX\n"
	"S3: --endpoint URL --bucket B --prefix P --region R --path-style|--virtual-hosted\n"
	"  --part-size N --multipart-threshold N --timeout 30s; defaults from HODEI_S3_*\n"
	"  and AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN or\n"
	"  HODEI_S3_CREDENTIALS_FILE (docs/S3.md). KEY is the full key, prefix included.\n";

static atomic_bool interrupted;

static void on_sigint(int sig)
{
	(void)sig;
	atomic_store(&interrupted, true);
}

static int usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("hodei-audit: s3: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputs("\n(run 'hodei-audit help' for the usage)\n", stderr);
	va_end(ap);
	return CLI_USAGE;
}

/* ---- options --------------------------------------------------------------------- */

struct s3_opts {
	struct s3_config cfg;
	bool json;
	const char *pos[2];        /* positional arguments */
	int npos;
	const char *version_id;
	const char *checksum;
	const char *out_path;
	uint64_t max_bytes;
};

static int copy_flag(char *dst, size_t cap, const char *v, const char *flag)
{
	if (strlen(v) >= cap)
		return usage("%s: longer than %zu bytes", flag, cap - 1);
	strcpy(dst, v);
	return 0;
}

/* One flag of the S3 configuration. Returns 1 (taken), 0 (not one), or
 * an exit code (CLI_USAGE) in *code. */
static int config_flag(int argc, char **argv, int *i, struct s3_config *cfg, int *code)
{
	static const struct {
		const char *flag;
		size_t off, cap;
	} strs[] = {
		{ "--endpoint", offsetof(struct s3_config, endpoint), S3_ENDPOINT_MAX + 1 },
		{ "--bucket", offsetof(struct s3_config, bucket), S3_BUCKET_MAX + 1 },
		{ "--prefix", offsetof(struct s3_config, prefix), S3_PREFIX_MAX + 1 },
		{ "--region", offsetof(struct s3_config, region), S3_REGION_MAX + 1 },
	};
	const char *v;
	int r;
	*code = 0;
	for (size_t k = 0; k < FMT_ARRAY_LEN(strs); k++) {
		if ((r = cli_flag_value(argc, argv, i, strs[k].flag, &v)) != 0) {
			*code = r < 0 ? usage("%s needs a value", strs[k].flag)
				      : copy_flag((char *)cfg + strs[k].off, strs[k].cap, v, strs[k].flag);
			return 1;
		}
	}
	if (!strcmp(argv[*i], "--path-style") || !strcmp(argv[*i], "--virtual-hosted")) {
		cfg->addressing = argv[*i][2] == 'p' ? S3_ADDR_PATH : S3_ADDR_VIRTUAL;
		return 1;
	}
	uint64_t *sizes[] = { &cfg->part_bytes, &cfg->multipart_threshold_bytes };
	const char *size_flags[] = { "--part-size", "--multipart-threshold" };
	for (size_t k = 0; k < 2; k++) {
		if ((r = cli_flag_value(argc, argv, i, size_flags[k], &v)) != 0) {
			if (r < 0 || units_parse_size(v, sizes[k]))
				*code = usage("%s needs a size (e.g. 16MiB)", size_flags[k]);
			return 1;
		}
	}
	if ((r = cli_flag_value(argc, argv, i, "--timeout", &v)) != 0) {
		int64_t ns;
		if (r < 0 || units_parse_duration_ns(v, 1000000000ll, &ns) != 0 ||
		    ns / 1000000000 > UINT32_MAX)
			*code = usage("--timeout needs a duration (e.g. 30s, 2m)");
		else
			cfg->timeout_s = (uint32_t)((ns + 999999999) / 1000000000); /* whole s, up */
		return 1;
	}
	return 0;
}

/* Parses argv[3..] of `s3 <sub>`. Returns 0 or an exit code. */
static int parse_opts(int argc, char **argv, const char *sub, int max_pos, struct s3_opts *o)
{
	char why[512];
	int rc = s3_config_from_env(&o->cfg, why, sizeof(why));
	if (rc) {
		fprintf(stderr, "hodei-audit: s3 %s: %s\n", sub, why);
		return rc == FMT_E_INVALID ? CLI_USAGE : CLI_UNREADABLE;
	}
	for (int i = 3; i < argc; i++) {
		const char *v;
		int code, r;
		if (config_flag(argc, argv, &i, &o->cfg, &code)) {
			if (code)
				return code;
		} else if (!strcmp(argv[i], "--json")) {
			o->json = true;
		} else if ((r = cli_flag_value(argc, argv, &i, "--version-id", &v)) != 0) {
			if (r < 0)
				return usage("--version-id needs a value");
			o->version_id = v;
		} else if ((r = cli_flag_value(argc, argv, &i, "--checksum", &v)) != 0) {
			if (r < 0)
				return usage("--checksum needs a value");
			o->checksum = v;
		} else if ((r = cli_flag_value(argc, argv, &i, "-o", &v)) != 0) {
			if (r < 0)
				return usage("-o needs a file");
			o->out_path = v;
		} else if ((r = cli_flag_value(argc, argv, &i, "--max-bytes", &v)) != 0) {
			if (r < 0 || units_parse_size(v, &o->max_bytes))
				return usage("--max-bytes needs a size");
		} else if (argv[i][0] == '-' && argv[i][1] != 0) {
			return usage("%s: unknown flag %s", sub, argv[i]);
		} else if (o->npos < max_pos) {
			o->pos[o->npos++] = argv[i];
		} else {
			return usage("%s: unexpected argument %s", sub, argv[i]);
		}
	}
	return 0;
}

/* ---- output -------------------------------------------------------------------------- */

/* Exit code of an S3 failure (see the file comment). */
static int exit_of(const struct s3_error *e)
{
	switch (e->kind) {
	case S3_ERR_AUTH:
		return CLI_AUTH;
	case S3_ERR_LOCAL:
		return e->rc == FMT_E_INVALID ? CLI_USAGE : CLI_UNREADABLE;
	case S3_ERR_NOT_FOUND:
		return CLI_PROBLEMS;
	default:
		return CLI_SERVER;
	}
}

static int report(const char *sub, const struct s3_error *e)
{
	char line[1024];
	s3_error_format(e, line, sizeof(line));
	fprintf(stderr, "hodei-audit: s3 %s: %s%s\n", sub, line,
		s3_error_retryable(e) ? " (retryable)" : "");
	return exit_of(e);
}

/* Prints pairs (name, value) as text lines or one JSON object. Values
 * NULL are skipped; names starting with '#' are integers in decimal text. */
static void print_pairs(bool json, const char *const *kv, size_t n)
{
	if (!json) {
		for (size_t i = 0; i + 1 < n; i += 2)
			if (kv[i + 1])
				printf("%-14s %s\n", kv[i][0] == '#' ? kv[i] + 1 : kv[i], kv[i + 1]);
		return;
	}
	json_t *o = json_object();
	for (size_t i = 0; i + 1 < n && o; i += 2) {
		if (!kv[i + 1])
			continue;
		json_t *v = kv[i][0] == '#' ? json_integer((json_int_t)strtoll(kv[i + 1], NULL, 10))
					    : json_string(kv[i + 1]);
		json_object_set_new(o, kv[i][0] == '#' ? kv[i] + 1 : kv[i], v);
	}
	char *s = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
	if (s)
		printf("%s\n", s);
	free(s);
	json_decref(o);
}

struct progress {
	bool on;
	double last_s;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct progress *p = ctx;
	double t = now_s();
	if (!p->on || (t - p->last_s < 0.2 && done < total))
		return;
	p->last_s = t;
	fprintf(stderr, "\r  %.1f / %.1f MiB", (double)done / 1048576.0, (double)total / 1048576.0);
}

/* A client from the options, with Ctrl-C and progress wired in. */
static int open_client(struct s3_opts *o, const char *sub, struct progress *pr,
		       struct s3_client **c)
{
	struct s3_error e;
	if (s3_client_new(&o->cfg, c, &e)) {
		fprintf(stderr, "hodei-audit: s3 %s: %s\n", sub, e.message);
		return e.rc == FMT_E_INVALID ? CLI_USAGE : CLI_SERVER;
	}
	struct sigaction sa = { .sa_handler = on_sigint };
	sigaction(SIGINT, &sa, NULL);
	s3_client_set_cancel(*c, &interrupted);
	pr->on = isatty(STDERR_FILENO);
	pr->last_s = 0;
	s3_client_set_progress(*c, on_progress, pr);
	return 0;
}

static void progress_end(const struct progress *pr)
{
	if (pr->on && pr->last_s > 0)
		fputs("\n", stderr);
}

/* ---- commands -------------------------------------------------------------------------- */

static int cmd_check(int argc, char **argv)
{
	struct s3_opts o = { 0 };
	int code = parse_opts(argc, argv, "check", 0, &o);
	struct s3_client *c;
	struct progress pr;
	if (code || (code = open_client(&o, "check", &pr, &c)))
		return code;
	const struct s3_config *cfg = s3_client_config(c);
	enum s3_versioning v;
	struct s3_error e;
	int rc = s3_get_versioning(c, &v, &e);
	char ep[S3_ENDPOINT_MAX + 64];
	snprintf(ep, sizeof(ep), "%s", cfg->endpoint[0] ? cfg->endpoint : "(AWS)");
	if (rc) {
		s3_client_free(c);
		return report("check", &e);
	}
	const char *kv[] = {
		"endpoint", ep, "bucket", cfg->bucket, "prefix", cfg->prefix, "region", cfg->region,
		"addressing", cfg->addressing == S3_ADDR_PATH ? "path" : "virtual-hosted",
		"versioning", s3_versioning_name(v),
	};
	print_pairs(o.json, kv, FMT_ARRAY_LEN(kv));
	int code_out = CLI_PROBLEMS;
	if (v == S3_VERSIONING_ENABLED)
		code_out = CLI_OK;
	else if (v == S3_VERSIONING_NO_BUCKET)
		fprintf(stderr, "hodei-audit: s3 check: bucket '%s' does not exist\n", cfg->bucket);
	else
		fprintf(stderr, "hodei-audit: s3 check: versioning of bucket '%s' is %s, not Enabled: "
			"the server will not replicate to it (aws s3api put-bucket-versioning "
			"--bucket %s --versioning-configuration Status=Enabled)\n",
			cfg->bucket, s3_versioning_name(v), cfg->bucket);
	s3_client_free(c); /* cfg points into it: last */
	return code_out;
}

/* XXH3-64 of a whole file as 16 hex digits (mmap: nothing read into our
 * memory, the kernel pages it in). Returns 0 or -errno. */
static int file_xxh3(int fd, uint64_t size, char out[17])
{
	const void *p = "";
	void *map = NULL;
	if (size) {
		map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (map == MAP_FAILED)
			return -errno;
		p = map;
	}
	snprintf(out, 17, "%016llx", (unsigned long long)fmt_xxh3(p, (size_t)size));
	if (map)
		munmap(map, (size_t)size);
	return 0;
}

static int cmd_put(int argc, char **argv)
{
	struct s3_opts o = { 0 };
	int code = parse_opts(argc, argv, "put", 2, &o);
	if (code)
		return code;
	if (o.npos != 2)
		return usage("put: needs FILE and KEY");
	int fd = open(o.pos[0], O_RDONLY | O_CLOEXEC);
	struct stat st;
	const char *why = NULL;
	if (fd < 0 || fstat(fd, &st))
		why = strerror(errno);
	else if (!S_ISREG(st.st_mode))
		why = "not a regular file";
	char sum[17];
	int xrc = why || o.checksum ? 0 : file_xxh3(fd, (uint64_t)st.st_size, sum);
	if (xrc)
		why = strerror(-xrc);
	if (why) {
		fprintf(stderr, "hodei-audit: s3 put: %s: %s\n", o.pos[0], why);
		if (fd >= 0)
			close(fd);
		return CLI_UNREADABLE;
	}
	const char *checksum = o.checksum ? o.checksum : sum;
	struct s3_client *c;
	struct progress pr;
	if ((code = open_client(&o, "put", &pr, &c))) {
		close(fd);
		return code;
	}
	struct s3_put_result res;
	struct s3_error e;
	int rc = s3_put_object_file(c, o.pos[1], fd, (uint64_t)st.st_size, checksum, &res, &e);
	progress_end(&pr);
	close(fd);
	s3_client_free(c);
	if (rc)
		return report("put", &e);
	char bytes[24], parts[16];
	snprintf(bytes, sizeof(bytes), "%llu", (unsigned long long)res.bytes);
	snprintf(parts, sizeof(parts), "%u", res.parts);
	const char *kv[] = { "key", o.pos[1], "version_id", res.version_id, "etag", res.etag,
			     "#bytes", bytes, "#parts", parts,
			     "upload", res.multipart ? "multipart" : "single", "checksum", checksum };
	print_pairs(o.json, kv, FMT_ARRAY_LEN(kv));
	return CLI_OK;
}

static int cmd_head(int argc, char **argv)
{
	struct s3_opts o = { 0 };
	int code = parse_opts(argc, argv, "head", 1, &o);
	if (code)
		return code;
	if (o.npos != 1)
		return usage("head: needs KEY");
	struct s3_client *c;
	struct progress pr;
	if ((code = open_client(&o, "head", &pr, &c)))
		return code;
	struct s3_object_info info;
	struct s3_error e;
	int rc = s3_head_object(c, o.pos[0], o.version_id, &info, &e);
	s3_client_free(c);
	if (rc)
		return report("head", &e);
	if (!info.exists) {
		fprintf(stderr, "hodei-audit: s3 head: %s%s%s: not found%s\n", o.pos[0],
			o.version_id ? " version " : "", o.version_id ? o.version_id : "",
			info.delete_marker ? " (deleted: a delete marker)" : "");
		return CLI_PROBLEMS;
	}
	char size[24];
	snprintf(size, sizeof(size), "%llu", (unsigned long long)info.size);
	const char *kv[] = { "key", o.pos[0], "version_id", info.version_id, "#size", size,
			     "etag", info.etag, "checksum", info.checksum_meta,
			     "last_modified", info.last_modified };
	print_pairs(o.json, kv, FMT_ARRAY_LEN(kv));
	return CLI_OK;
}

static int cmd_get(int argc, char **argv)
{
	struct s3_opts o = { 0 };
	int code = parse_opts(argc, argv, "get", 1, &o);
	if (code)
		return code;
	if (o.npos != 1)
		return usage("get: needs KEY");
	int fd = STDOUT_FILENO;
	if (o.out_path) {
		fd = open(o.out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0) {
			fprintf(stderr, "hodei-audit: s3 get: %s: %s\n", o.out_path, strerror(errno));
			return CLI_UNREADABLE;
		}
	} else if (isatty(STDOUT_FILENO)) {
		fprintf(stderr, "hodei-audit: s3 get: refusing to write an object to a terminal: "
			"redirect stdout or use -o FILE\n");
		return CLI_USAGE;
	}
	struct s3_client *c;
	struct progress pr;
	if ((code = open_client(&o, "get", &pr, &c))) {
		if (o.out_path)
			close(fd);
		return code;
	}
	struct s3_object_info info;
	struct s3_error e;
	int rc = s3_get_object_to_fd(c, o.pos[0], o.version_id, fd, o.max_bytes, &info, &e);
	progress_end(&pr);
	s3_client_free(c);
	if (o.out_path && close(fd) && !rc) {
		fprintf(stderr, "hodei-audit: s3 get: %s: %s\n", o.out_path, strerror(errno));
		return CLI_UNREADABLE;
	}
	if (rc)
		return report("get", &e);
	fprintf(stderr, "hodei-audit: s3 get: %s version %s: %llu bytes\n", o.pos[0],
		info.version_id[0] ? info.version_id : "(none)", (unsigned long long)info.size);
	return CLI_OK;
}

static int print_version(void *ctx, const struct s3_version *v)
{
	const struct s3_opts *o = ctx;
	char size[24];
	snprintf(size, sizeof(size), "%llu", (unsigned long long)v->size);
	if (o->json) {
		const char *kv[] = { "key", v->key, "version_id", v->version_id, "#size", size,
				     "etag", v->etag, "last_modified", v->last_modified,
				     "latest", v->is_latest ? "true" : "false",
				     "delete_marker", v->delete_marker ? "true" : "false" };
		print_pairs(true, kv, FMT_ARRAY_LEN(kv));
	} else {
		printf("%s\t%s\t%s\t%s\t%s%s\n", v->last_modified, v->delete_marker ? "-" : size,
		       v->version_id, v->key, v->is_latest ? "latest" : "old",
		       v->delete_marker ? " delete-marker" : "");
	}
	return ferror(stdout) ? -EIO : 0;
}

static int cmd_ls(int argc, char **argv)
{
	struct s3_opts o = { 0 };
	int code = parse_opts(argc, argv, "ls", 1, &o);
	if (code)
		return code;
	struct s3_client *c;
	struct progress pr;
	if ((code = open_client(&o, "ls", &pr, &c)))
		return code;
	const char *prefix = o.npos ? o.pos[0] : s3_client_config(c)->prefix;
	struct s3_error e;
	int rc = s3_list_object_versions(c, prefix, print_version, &o, &e);
	s3_client_free(c);
	if (rc == -EIO) {
		fprintf(stderr, "hodei-audit: s3 ls: writing the output failed\n");
		return CLI_UNREADABLE;
	}
	return rc ? report("ls", &e) : CLI_OK;
}

int cli_s3(int argc, char **argv)
{
	if (argc < 3)
		return usage("missing a subcommand: check, put, head, get or ls");
	const char *sub = argv[2];
	if (!strcmp(sub, "check"))
		return cmd_check(argc, argv);
	if (!strcmp(sub, "put"))
		return cmd_put(argc, argv);
	if (!strcmp(sub, "head"))
		return cmd_head(argc, argv);
	if (!strcmp(sub, "get"))
		return cmd_get(argc, argv);
	if (!strcmp(sub, "ls"))
		return cmd_ls(argc, argv);
	return usage("unknown subcommand '%s'", sub);
}
