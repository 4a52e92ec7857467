// SPDX-License-Identifier: Apache-2.0
/*
 * s3_request.c — the pure half of the S3 client (net/s3.h): configuration
 * (defaults, environment, credentials file, validation), SigV4 key
 * encoding, segment keys, body digests, the multipart plan, bounded XML
 * tag extraction and the classification of errors. No network and no
 * global state, so every rule here is unit-tested alone
 * (tests/unit/net/test_s3.c); s3.c does the talking.
 *
 * Why by hand what is small: percent-encoding must follow SigV4's rules
 * exactly (curl's own escaping keeps a different set), the segment key
 * layout is our contract (DESIGN.md §8), and S3's XML answers are flat
 * documents from which we need five leaf values — a general XML parser
 * would be more attack surface than the job needs. The extraction is
 * bounded by the buffer it is given and refuses anything but plain text
 * with entities between the tags.
 */
#include "net/s3.h"
#include "net/units.h"

#include "format/event.h"
#include "format/hash.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define CREDENTIALS_FILE_BYTES_MAX (64u << 10)

/* ---- configuration -------------------------------------------------------------- */

void s3_config_default(struct s3_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->region, sizeof(cfg->region), "%s", S3_REGION_DEFAULT);
	cfg->addressing = S3_ADDR_AUTO;
	cfg->multipart_threshold_bytes = S3_MULTIPART_THRESHOLD_DEFAULT;
	cfg->part_bytes = S3_PART_BYTES_DEFAULT;
	cfg->object_bytes_max = S3_OBJECT_BYTES_MAX;
	cfg->response_bytes_max = S3_RESPONSE_BYTES_MAX_DEFAULT;
	cfg->list_page_keys = S3_LIST_PAGE_KEYS_DEFAULT;
	cfg->connect_timeout_s = S3_CONNECT_TIMEOUT_S_DEFAULT;
	cfg->stall_timeout_s = S3_STALL_TIMEOUT_S_DEFAULT;
	cfg->timeout_s = S3_TIMEOUT_S_DEFAULT;
	cfg->verify_etag = true;
}

static int why_set(char *why, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int why_set(char *why, size_t cap, const char *fmt, ...)
{
	if (why && cap) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(why, cap, fmt, ap);
		va_end(ap);
	}
	return FMT_E_INVALID;
}

/* Durations in whole seconds (net/units.h; a bare number is seconds), ms
 * rounding up to the next second, so "500ms" is 1 s, never 0. */
static int parse_seconds(const char *s, uint32_t *out)
{
	int64_t ns;
	if (units_parse_duration_ns(s, 1000000000ll, &ns) != 0)
		return -1;
	uint64_t sec = ((uint64_t)ns + 999999999u) / 1000000000u;
	if (sec > UINT32_MAX)
		return -1;
	*out = (uint32_t)sec;
	return 0;
}

static int parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "1", "true", "yes", "on" };
	static const char *const no[] = { "0", "false", "no", "off" };
	for (size_t i = 0; i < FMT_ARRAY_LEN(yes); i++) {
		if (!strcasecmp(s, yes[i])) {
			*out = true;
			return 0;
		}
		if (!strcasecmp(s, no[i])) {
			*out = false;
			return 0;
		}
	}
	return -1;
}

static int copy_value(char *dst, size_t cap, const char *v, const char *name, char *why,
		      size_t why_cap)
{
	size_t n = strlen(v);
	if (n >= cap)
		return why_set(why, why_cap, "%s is longer than %zu bytes", name, cap - 1);
	memcpy(dst, v, n + 1);
	return 0;
}

/* The string variables of s3_config_from_env, and where they go. */
#define STR_VAR(name, field) { name, offsetof(struct s3_config, field), sizeof(((struct s3_config *)0)->field) }
static const struct {
	const char *name;
	size_t off, cap;
} str_vars[] = {
	STR_VAR("HODEI_S3_ENDPOINT", endpoint),
	STR_VAR("HODEI_S3_BUCKET", bucket),
	STR_VAR("HODEI_S3_PREFIX", prefix),
	STR_VAR("HODEI_S3_REGION", region),
	STR_VAR("HODEI_S3_CA_FILE", ca_file),
	STR_VAR("HODEI_S3_CREDENTIALS_FILE", credentials_file),
};

static int env_numbers(struct s3_config *cfg, char *why, size_t why_cap)
{
	static const struct {
		const char *name;
		size_t off;
	} sizes[] = {
		{ "HODEI_S3_MULTIPART_THRESHOLD", offsetof(struct s3_config, multipart_threshold_bytes) },
		{ "HODEI_S3_PART_SIZE", offsetof(struct s3_config, part_bytes) },
		{ "HODEI_S3_MAX_OBJECT_SIZE", offsetof(struct s3_config, object_bytes_max) },
	};
	static const struct {
		const char *name;
		size_t off;
		bool is_count;
	} u32s[] = {
		{ "HODEI_S3_CONNECT_TIMEOUT", offsetof(struct s3_config, connect_timeout_s), false },
		{ "HODEI_S3_STALL_TIMEOUT", offsetof(struct s3_config, stall_timeout_s), false },
		{ "HODEI_S3_TIMEOUT", offsetof(struct s3_config, timeout_s), false },
		{ "HODEI_S3_RESPONSE_MAX", offsetof(struct s3_config, response_bytes_max), true },
		{ "HODEI_S3_LIST_PAGE_KEYS", offsetof(struct s3_config, list_page_keys), true },
	};
	for (size_t i = 0; i < FMT_ARRAY_LEN(sizes); i++) {
		const char *v = getenv(sizes[i].name);
		if (!v || !*v)
			continue;
		uint64_t u;
		if (units_parse_size(v, &u))
			return why_set(why, why_cap, "%s: '%s' is not a size (e.g. 16MiB)", sizes[i].name, v);
		memcpy((char *)cfg + sizes[i].off, &u, sizeof(u));
	}
	for (size_t i = 0; i < FMT_ARRAY_LEN(u32s); i++) {
		const char *v = getenv(u32s[i].name);
		if (!v || !*v)
			continue;
		uint32_t u;
		uint64_t big;
		if (u32s[i].is_count) {
			if (units_parse_size(v, &big) || big > UINT32_MAX)
				return why_set(why, why_cap, "%s: '%s' is not a number", u32s[i].name, v);
			u = (uint32_t)big;
		} else if (parse_seconds(v, &u)) {
			return why_set(why, why_cap, "%s: '%s' is not a duration (e.g. 30s)", u32s[i].name, v);
		}
		memcpy((char *)cfg + u32s[i].off, &u, sizeof(u));
	}
	return 0;
}

int s3_config_from_env(struct s3_config *cfg, char *why, size_t why_cap)
{
	s3_config_default(cfg);
	for (size_t i = 0; i < FMT_ARRAY_LEN(str_vars); i++) {
		const char *v = getenv(str_vars[i].name);
		if (!v)
			continue;
		int rc = copy_value((char *)cfg + str_vars[i].off, str_vars[i].cap, v, str_vars[i].name,
				    why, why_cap);
		if (rc)
			return rc;
	}
	int rc = env_numbers(cfg, why, why_cap);
	if (rc)
		return rc;
	const char *ps = getenv("HODEI_S3_PATH_STYLE");
	if (ps && *ps && strcasecmp(ps, "auto") != 0) {
		bool b;
		if (parse_bool(ps, &b))
			return why_set(why, why_cap, "HODEI_S3_PATH_STYLE: '%s' is not 1, 0 or auto", ps);
		cfg->addressing = b ? S3_ADDR_PATH : S3_ADDR_VIRTUAL;
	}
	const char *ve = getenv("HODEI_S3_VERIFY_ETAG");
	if (ve && *ve && parse_bool(ve, &cfg->verify_etag))
		return why_set(why, why_cap, "HODEI_S3_VERIFY_ETAG: '%s' is not 1 or 0", ve);
	if (cfg->credentials_file[0])
		return s3_config_load_credentials(cfg, cfg->credentials_file, why, why_cap);
	static const struct {
		const char *name;
		size_t off, cap;
	} creds[] = {
		STR_VAR("AWS_ACCESS_KEY_ID", access_key),
		STR_VAR("AWS_SECRET_ACCESS_KEY", secret_key),
		STR_VAR("AWS_SESSION_TOKEN", session_token),
	};
	for (size_t i = 0; i < FMT_ARRAY_LEN(creds); i++) {
		const char *v = getenv(creds[i].name);
		if (v && (rc = copy_value((char *)cfg + creds[i].off, creds[i].cap, v, creds[i].name,
					  why, why_cap)))
			return rc;
	}
	return 0;
}

/* ---- credentials file -------------------------------------------------------------- */

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
		s[--n] = 0;
	return s;
}

/* Whether a credential is printable ASCII without spaces: it goes into a
 * header (the token) or the signature, and a CR or LF would split one. */
static bool credential_ok(const char *v)
{
	for (; *v; v++)
		if ((unsigned char)*v <= 0x20 || (unsigned char)*v >= 0x7f)
			return false;
	return true;
}

/* One "name = value" line of the file, inside a section that applies.
 * Returns 0 (used or ignored) or FMT_E_INVALID. */
static int credentials_line(struct s3_config *cfg, char *name, char *value, uint32_t line_no,
			    char *why, size_t why_cap)
{
	static const struct {
		const char *name;
		size_t off, cap;
	} names[] = {
		STR_VAR("aws_access_key_id", access_key),
		STR_VAR("aws_secret_access_key", secret_key),
		STR_VAR("aws_session_token", session_token),
		STR_VAR("aws_security_token", session_token),
	};
	size_t vn = strlen(value);
	if (vn >= 2 && (value[0] == '"' || value[0] == '\'') && value[vn - 1] == value[0]) {
		value[vn - 1] = 0;
		value++;
	}
	for (size_t i = 0; i < FMT_ARRAY_LEN(names); i++) {
		if (strcasecmp(name, names[i].name) != 0)
			continue;
		if (!credential_ok(value))
			return why_set(why, why_cap, "line %u: %s has spaces or control characters",
				       line_no, names[i].name);
		if (strlen(value) >= names[i].cap)
			return why_set(why, why_cap, "line %u: %s is longer than %zu bytes", line_no,
				       names[i].name, names[i].cap - 1);
		strcpy((char *)cfg + names[i].off, value);
		return 0;
	}
	return 0; /* region, output, ... of a shared-credentials file: not ours */
}

/* Parses the file's text (NUL-terminated, modified in place). */
static int credentials_parse(struct s3_config *cfg, char *text, char *why, size_t why_cap)
{
	const char *profile = getenv("AWS_PROFILE");
	if (!profile || !*profile)
		profile = "default";
	bool in_section = true; /* lines before any [section] apply */
	uint32_t line_no = 0;
	for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		line_no++;
		char *s = trim(line);
		if (!*s || *s == '#' || *s == ';')
			continue;
		if (*s == '[') {
			char *close = strchr(s, ']');
			if (!close)
				return why_set(why, why_cap, "line %u: '[' without ']'", line_no);
			*close = 0;
			char *sec = trim(s + 1);
			if (!strncmp(sec, "profile ", 8))
				sec = trim(sec + 8);
			in_section = !strcmp(sec, profile);
			continue;
		}
		if (!strncmp(s, "export ", 7))
			s = trim(s + 7);
		char *eq = strchr(s, '=');
		if (!eq)
			return why_set(why, why_cap, "line %u: not NAME=VALUE", line_no);
		*eq = 0;
		if (!in_section)
			continue;
		int rc = credentials_line(cfg, trim(s), trim(eq + 1), line_no, why, why_cap);
		if (rc)
			return rc;
	}
	return 0;
}

int s3_config_load_credentials(struct s3_config *cfg, const char *path, char *why, size_t why_cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		why_set(why, why_cap, "%s: %s", path, strerror(e));
		return -e;
	}
	char *text = malloc(CREDENTIALS_FILE_BYTES_MAX + 1);
	if (!text) {
		close(fd);
		return FMT_E_NOMEM;
	}
	size_t len = 0;
	int rc = 0;
	for (;;) {
		ssize_t n = read(fd, text + len, CREDENTIALS_FILE_BYTES_MAX + 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			why_set(why, why_cap, "%s: %s", path, strerror(errno));
			break;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > CREDENTIALS_FILE_BYTES_MAX) {
			rc = why_set(why, why_cap, "%s: larger than %u bytes", path,
				     CREDENTIALS_FILE_BYTES_MAX);
			break;
		}
	}
	close(fd);
	if (!rc) {
		text[len] = 0;
		if (memchr(text, 0, len))
			rc = why_set(why, why_cap, "%s: a NUL byte: not a text file", path);
	}
	struct s3_config tmp = *cfg;
	tmp.access_key[0] = tmp.secret_key[0] = tmp.session_token[0] = 0;
	if (!rc) {
		char inner[256] = "";
		rc = credentials_parse(&tmp, text, inner, sizeof(inner));
		if (rc)
			why_set(why, why_cap, "%s: %s", path, inner);
	}
	if (!rc && (!tmp.access_key[0] || !tmp.secret_key[0]))
		rc = why_set(why, why_cap, "%s: needs aws_access_key_id and aws_secret_access_key "
			     "(or AWS_ACCESS_KEY_ID= and AWS_SECRET_ACCESS_KEY= lines)", path);
	if (!rc) {
		memcpy(cfg->access_key, tmp.access_key, sizeof(cfg->access_key));
		memcpy(cfg->secret_key, tmp.secret_key, sizeof(cfg->secret_key));
		memcpy(cfg->session_token, tmp.session_token, sizeof(cfg->session_token));
	}
	explicit_bzero(text, CREDENTIALS_FILE_BYTES_MAX + 1);
	explicit_bzero(&tmp, sizeof(tmp));
	free(text);
	return rc;
}

/* ---- validation ------------------------------------------------------------------ */

static bool endpoint_ok(const char *ep)
{
	const char *p;
	if (!strncmp(ep, "http://", 7))
		p = ep + 7;
	else if (!strncmp(ep, "https://", 8))
		p = ep + 8;
	else
		return false;
	if (*p == '[') { /* [v6]:port */
		const char *close = strchr(p, ']');
		if (!close || close == p + 1)
			return false;
		for (const char *q = p + 1; q < close; q++)
			if (!isxdigit((unsigned char)*q) && *q != ':' && *q != '.')
				return false;
		p = close + 1;
	} else {
		const char *h = p;
		while (isalnum((unsigned char)*p) || *p == '.' || *p == '-')
			p++;
		if (p == h)
			return false;
	}
	if (*p == ':') {
		p++;
		unsigned long port = 0;
		const char *d = p;
		while (isdigit((unsigned char)*p) && p - d < 6)
			port = port * 10 + (unsigned long)(*p++ - '0');
		if (p == d || port == 0 || port > 65535)
			return false;
	}
	return *p == 0 || (p[0] == '/' && p[1] == 0);
}

static bool bucket_ok(const char *b, bool dns)
{
	size_t n = strlen(b);
	if (n < (dns ? 3u : 1u) || n > (dns ? 63u : (size_t)S3_BUCKET_MAX))
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)b[i];
		bool ok = (ch >= 'a' && ch <= 'z') || isdigit(ch) || ch == '.' || ch == '-';
		if (!dns)
			ok = ok || (ch >= 'A' && ch <= 'Z') || ch == '_';
		if (!ok)
			return false;
	}
	if (dns && (!isalnum((unsigned char)b[0]) || !isalnum((unsigned char)b[n - 1]) ||
		    strstr(b, "..")))
		return false;
	return true;
}

static bool region_ok(const char *r)
{
	if (!*r)
		return false;
	for (; *r; r++)
		if (!isalnum((unsigned char)*r) && *r != '-' && *r != '_')
			return false;
	return true;
}

/* Strips '/' at both ends of the prefix, in place. */
static void prefix_normalise(char *p)
{
	size_t start = 0, n = strlen(p);
	while (start < n && p[start] == '/')
		start++;
	while (n > start && p[n - 1] == '/')
		n--;
	memmove(p, p + start, n - start);
	p[n - start] = 0;
}

static int validate_sizes(const struct s3_config *cfg, char *why, size_t why_cap)
{
	if (cfg->part_bytes < S3_PART_BYTES_MIN || cfg->part_bytes > S3_PART_BYTES_MAX)
		return why_set(why, why_cap, "part size %llu is outside S3's 5 MiB..5 GiB",
			       (unsigned long long)cfg->part_bytes);
	if (cfg->multipart_threshold_bytes > S3_PUT_BYTES_MAX)
		return why_set(why, why_cap, "multipart threshold %llu is over 5 GiB, S3's largest PUT",
			       (unsigned long long)cfg->multipart_threshold_bytes);
	if (cfg->object_bytes_max == 0 || cfg->object_bytes_max > S3_OBJECT_BYTES_MAX)
		return why_set(why, why_cap, "max object size must be 1 byte..5 TiB");
	if (cfg->response_bytes_max < S3_RESPONSE_BYTES_MIN || cfg->response_bytes_max > (64u << 20))
		return why_set(why, why_cap, "response limit must be 16 KiB..64 MiB");
	if (cfg->list_page_keys < 1 || cfg->list_page_keys > 1000)
		return why_set(why, why_cap, "list page keys must be 1..1000");
	if (cfg->connect_timeout_s < 1)
		return why_set(why, why_cap, "connect timeout must be at least 1s");
	return 0;
}

int s3_config_validate(struct s3_config *cfg, char *why, size_t why_cap)
{
	if (!cfg->bucket[0])
		return why_set(why, why_cap, "no bucket (HODEI_S3_BUCKET)");
	if (cfg->endpoint[0] && !endpoint_ok(cfg->endpoint))
		return why_set(why, why_cap, "endpoint '%s' is not http(s)://host[:port]", cfg->endpoint);
	if (!region_ok(cfg->region))
		return why_set(why, why_cap, "region '%s' is not [A-Za-z0-9_-]+", cfg->region);
	if (cfg->addressing == S3_ADDR_AUTO)
		cfg->addressing = cfg->endpoint[0] ? S3_ADDR_PATH : S3_ADDR_VIRTUAL;
	if (!bucket_ok(cfg->bucket, cfg->addressing == S3_ADDR_VIRTUAL))
		return why_set(why, why_cap,
			       cfg->addressing == S3_ADDR_VIRTUAL
				       ? "bucket '%s' is not a DNS name (3-63 of a-z 0-9 . -) as "
					 "virtual-hosted addressing needs: use path style"
				       : "bucket '%s' has characters other than A-Z a-z 0-9 . _ -",
			       cfg->bucket);
	prefix_normalise(cfg->prefix);
	if (cfg->prefix[0] && s3_key_check(cfg->prefix))
		return why_set(why, why_cap, "prefix is not valid UTF-8 without control characters");
	if (!cfg->access_key[0] || !cfg->secret_key[0])
		return why_set(why, why_cap, "no credentials: set AWS_ACCESS_KEY_ID and "
			       "AWS_SECRET_ACCESS_KEY, or HODEI_S3_CREDENTIALS_FILE");
	if (!credential_ok(cfg->access_key) || !credential_ok(cfg->secret_key) ||
	    !credential_ok(cfg->session_token))
		return why_set(why, why_cap, "credentials with spaces or control characters");
	return validate_sizes(cfg, why, why_cap);
}

/* ---- keys -------------------------------------------------------------------------- */

int s3_uri_encode(char *out, size_t cap, const char *in, size_t len, bool keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)in[i];
		bool keep = isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~' ||
			    (keep_slash && ch == '/');
		/* isalnum() is locale-dependent: only ASCII letters and digits pass. */
		keep = keep && ch < 0x80;
		size_t need = keep ? 1 : 3;
		if (o + need >= cap)
			return FMT_E_TOO_BIG;
		if (keep) {
			out[o++] = (char)ch;
		} else {
			out[o++] = '%';
			out[o++] = hex[ch >> 4];
			out[o++] = hex[ch & 15];
		}
	}
	if (o >= cap)
		return FMT_E_TOO_BIG;
	out[o] = 0;
	return (int)o;
}

int s3_key_check(const char *key)
{
	size_t n = strlen(key);
	if (n == 0 || n > S3_KEY_BYTES_MAX || !fmt_utf8_valid(key, n))
		return FMT_E_INVALID;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)key[i] < 0x20 || key[i] == 0x7f)
			return FMT_E_INVALID;
	return 0;
}

int s3_segment_key(char *out, size_t cap, const char *prefix, const char *tenant, int64_t unix_ns,
		   uint64_t segment_id)
{
	size_t pn = strlen(prefix);
	if (pn && (prefix[0] == '/' || prefix[pn - 1] == '/' || s3_key_check(prefix)))
		return FMT_E_INVALID;
	if (!fmt_tenant_valid(fmt_str_c(tenant)))
		return FMT_E_INVALID;
	/* Floor division: a negative time before a whole second belongs to the
	 * previous second (and day). */
	int64_t sec = unix_ns / 1000000000;
	if (unix_ns % 1000000000 < 0)
		sec--;
	time_t t = (time_t)sec;
	struct tm tm;
	if (!gmtime_r(&t, &tm))
		return FMT_E_INVALID;
	int n = snprintf(out, cap, "%s%ssegments/%s/%04d/%02d/%02d/%016llx.hseg", prefix,
			 pn ? "/" : "", tenant, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
			 (unsigned long long)segment_id);
	if (n < 0 || (size_t)n >= cap)
		return FMT_E_TOO_BIG;
	ASSERT(n <= S3_KEY_BYTES_MAX);
	return n;
}

int s3_object_url(const struct s3_config *cfg, const char *key, const char *query, char *out,
		  size_t cap)
{
	ASSERT(cfg->addressing == S3_ADDR_PATH || cfg->addressing == S3_ADDR_VIRTUAL);
	char scheme[8] = "https", host[S3_ENDPOINT_MAX + 1];
	if (cfg->endpoint[0]) {
		const char *sep = strstr(cfg->endpoint, "://");
		if (!sep || (size_t)(sep - cfg->endpoint) >= sizeof(scheme))
			return FMT_E_INVALID;
		memcpy(scheme, cfg->endpoint, (size_t)(sep - cfg->endpoint));
		scheme[sep - cfg->endpoint] = 0;
		snprintf(host, sizeof(host), "%s", sep + 3);
		size_t hn = strlen(host);
		if (hn && host[hn - 1] == '/')
			host[hn - 1] = 0;
	} else {
		snprintf(host, sizeof(host), "s3.%s.amazonaws.com", cfg->region);
	}
	char key_enc[3 * S3_KEY_BYTES_MAX + 1] = ""; /* every byte may become %XX */
	if (key && (s3_key_check(key) ||
		    s3_uri_encode(key_enc, sizeof(key_enc), key, strlen(key), true) < 0))
		return FMT_E_INVALID;
	const char *q = query && query[0] ? "?" : "";
	int n;
	if (cfg->addressing == S3_ADDR_PATH)
		n = snprintf(out, cap, "%s://%s/%s%s%s%s%s", scheme, host, cfg->bucket, key ? "/" : "",
			     key_enc, q, query ? query : "");
	else
		n = snprintf(out, cap, "%s://%s.%s/%s%s%s", scheme, cfg->bucket, host, key_enc, q,
			     query ? query : "");
	return n > 0 && (size_t)n < cap ? n : FMT_E_TOO_BIG;
}

/* ---- digests ------------------------------------------------------------------------ */

struct digest_ctx {
	EVP_MD_CTX *md5, *sha;
};

static int digest_begin(struct digest_ctx *d)
{
	d->md5 = EVP_MD_CTX_new();
	d->sha = EVP_MD_CTX_new();
	if (!d->md5 || !d->sha || EVP_DigestInit_ex(d->md5, EVP_md5(), NULL) != 1 ||
	    EVP_DigestInit_ex(d->sha, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(d->md5);
		EVP_MD_CTX_free(d->sha);
		return FMT_E_NOMEM;
	}
	return 0;
}

static void digest_update(struct digest_ctx *d, const void *p, size_t n)
{
	ASSERT(EVP_DigestUpdate(d->md5, p, n) == 1);
	ASSERT(EVP_DigestUpdate(d->sha, p, n) == 1);
}

static void digest_end(struct digest_ctx *d, struct s3_digests *out)
{
	uint8_t sha[32];
	unsigned int n5 = 0, n2 = 0;
	ASSERT(EVP_DigestFinal_ex(d->md5, out->md5, &n5) == 1 && n5 == 16);
	ASSERT(EVP_DigestFinal_ex(d->sha, sha, &n2) == 1 && n2 == 32);
	EVP_MD_CTX_free(d->md5);
	EVP_MD_CTX_free(d->sha);
	ASSERT(EVP_EncodeBlock((unsigned char *)out->md5_b64, out->md5, 16) == 24);
	fmt_hex(out->md5, 16, out->md5_hex);
	fmt_hex(sha, 32, out->sha256_hex);
}

int s3_digest_buf(const void *data, size_t len, struct s3_digests *out)
{
	struct digest_ctx d;
	int rc = digest_begin(&d);
	if (rc)
		return rc;
	digest_update(&d, data, len);
	digest_end(&d, out);
	return 0;
}

int s3_digest_fd(int fd, uint64_t off, uint64_t len, void *buf, size_t buf_cap,
		 struct s3_digests *out)
{
	ASSERT(buf_cap > 0);
	struct digest_ctx d;
	int rc = digest_begin(&d);
	if (rc)
		return rc;
	uint64_t done = 0;
	while (done < len) {
		size_t want = (size_t)FMT_MIN((uint64_t)buf_cap, len - done);
		ssize_t n = pread(fd, buf, want, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : FMT_E_TRUNCATED;
			break;
		}
		digest_update(&d, buf, (size_t)n);
		done += (uint64_t)n;
	}
	digest_end(&d, out);
	if (rc)
		memset(out, 0, sizeof(*out));
	return rc;
}

void s3_multipart_etag(const uint8_t (*part_md5)[16], uint32_t parts, char *out, size_t cap)
{
	uint8_t md5[16];
	unsigned int n = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	ASSERT(ctx && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1);
	for (uint32_t i = 0; i < parts; i++)
		ASSERT(EVP_DigestUpdate(ctx, part_md5[i], 16) == 1);
	ASSERT(EVP_DigestFinal_ex(ctx, md5, &n) == 1 && n == 16);
	EVP_MD_CTX_free(ctx);
	char hex[33];
	fmt_hex(md5, 16, hex);
	snprintf(out, cap, "%s-%u", hex, parts);
}

/* ---- multipart plan ---------------------------------------------------------------- */

int s3_plan_parts(uint64_t size, uint64_t threshold, uint64_t part_bytes,
		  uint64_t object_bytes_max, struct s3_part_plan *out)
{
	memset(out, 0, sizeof(*out));
	if (threshold > S3_PUT_BYTES_MAX || part_bytes < S3_PART_BYTES_MIN ||
	    part_bytes > S3_PART_BYTES_MAX)
		return FMT_E_INVALID;
	if (size > object_bytes_max || size > S3_OBJECT_BYTES_MAX)
		return FMT_E_TOO_BIG;
	if (size == 0 || size <= threshold) {
		out->parts = 1;
		out->part_bytes = out->last_part_bytes = size;
		return 0;
	}
	uint64_t pb = part_bytes;
	if ((size + pb - 1) / pb > S3_PARTS_MAX) {
		/* The smallest whole MiB that fits the object in S3_PARTS_MAX parts. */
		const uint64_t mib = 1ull << 20;
		pb = (size + S3_PARTS_MAX - 1) / S3_PARTS_MAX;
		pb = (pb + mib - 1) / mib * mib;
		if (pb > S3_PART_BYTES_MAX)
			return FMT_E_TOO_BIG;
	}
	uint64_t parts = (size + pb - 1) / pb;
	ASSERT(parts >= 1 && parts <= S3_PARTS_MAX);
	out->multipart = true;
	out->parts = (uint32_t)parts;
	out->part_bytes = pb;
	out->last_part_bytes = size - (parts - 1) * pb;
	ASSERT(out->last_part_bytes > 0 && out->last_part_bytes <= pb);
	return 0;
}

/* ---- bounded XML extraction -------------------------------------------------------- */

/* Position of "<tag>" (or "<tag/>" when empty_ok) in xml[from..len), with
 * *open_len the length of the opening tag and *empty whether it was
 * self-closing; or -1. */
static long xml_find_open(const char *xml, size_t len, size_t from, const char *tag,
			  size_t *open_len, bool *empty)
{
	size_t tn = strlen(tag);
	for (size_t i = from; i + tn + 2 <= len; i++) {
		const char *p = memchr(xml + i, '<', len - i);
		if (!p)
			return -1;
		i = (size_t)(p - xml);
		if (i + 1 + tn >= len || memcmp(p + 1, tag, tn) != 0)
			continue;
		if (p[1 + tn] == '>') {
			*open_len = tn + 2;
			*empty = false;
			return (long)i;
		}
		if (p[1 + tn] == '/' && i + tn + 2 < len && p[2 + tn] == '>') {
			*open_len = tn + 3;
			*empty = true;
			return (long)i;
		}
	}
	return -1;
}

/* Appends code point cp as UTF-8. Returns bytes written, or 0 if it is not
 * a scalar value or does not fit. */
static size_t utf8_put(char *out, size_t room, uint32_t cp)
{
	if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	uint8_t b[4];
	size_t n;
	if (cp < 0x80) {
		b[0] = (uint8_t)cp;
		n = 1;
	} else if (cp < 0x800) {
		b[0] = (uint8_t)(0xC0 | (cp >> 6));
		b[1] = (uint8_t)(0x80 | (cp & 0x3F));
		n = 2;
	} else if (cp < 0x10000) {
		b[0] = (uint8_t)(0xE0 | (cp >> 12));
		b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
		b[2] = (uint8_t)(0x80 | (cp & 0x3F));
		n = 3;
	} else {
		b[0] = (uint8_t)(0xF0 | (cp >> 18));
		b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
		b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
		b[3] = (uint8_t)(0x80 | (cp & 0x3F));
		n = 4;
	}
	if (n > room)
		return 0;
	memcpy(out, b, n);
	return n;
}

/* Decodes one entity at s[0..n) (s[0] == '&'). Returns its length in s and
 * writes its value, or FMT_E_CORRUPT / FMT_E_TOO_BIG. */
static int xml_entity(const char *s, size_t n, char *out, size_t room, size_t *wrote)
{
	static const struct {
		const char *name;
		char ch;
	} named[] = { { "&amp;", '&' }, { "&lt;", '<' }, { "&gt;", '>' }, { "&quot;", '"' },
		      { "&apos;", '\'' } };
	for (size_t i = 0; i < FMT_ARRAY_LEN(named); i++) {
		size_t l = strlen(named[i].name);
		if (n >= l && !memcmp(s, named[i].name, l)) {
			if (!room)
				return FMT_E_TOO_BIG;
			out[0] = named[i].ch;
			*wrote = 1;
			return (int)l;
		}
	}
	if (n < 4 || s[1] != '#')
		return FMT_E_CORRUPT;
	bool hex = s[2] == 'x' || s[2] == 'X';
	size_t i = hex ? 3 : 2, start = i;
	uint32_t cp = 0;
	for (; i < n && i < start + 8 && s[i] != ';'; i++) {
		int d = hex ? fmt_hex_digit(s[i]) : (isdigit((unsigned char)s[i]) ? s[i] - '0' : -1);
		if (d < 0)
			return FMT_E_CORRUPT;
		cp = cp * (hex ? 16u : 10u) + (uint32_t)d;
	}
	if (i == start || i >= n || s[i] != ';')
		return FMT_E_CORRUPT;
	size_t w = utf8_put(out, room, cp);
	if (!w)
		return cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) ? FMT_E_CORRUPT
										 : FMT_E_TOO_BIG;
	*wrote = w;
	return (int)(i + 1);
}

static int xml_tag(const char *xml, size_t len, const char *tag, char *out, size_t cap);

int s3_xml_tag(const char *xml, size_t len, const char *tag, char *out, size_t cap)
{
	ASSERT(cap > 0);
	int rc = xml_tag(xml, len, tag, out, cap);
	if (rc < 0)
		out[0] = 0; /* never a half value */
	return rc;
}

static int xml_tag(const char *xml, size_t len, const char *tag, char *out, size_t cap)
{
	out[0] = 0;
	size_t open_len;
	bool empty;
	long at = xml_find_open(xml, len, 0, tag, &open_len, &empty);
	if (at < 0)
		return FMT_E_NOT_FOUND;
	if (empty)
		return 0;
	size_t i = (size_t)at + open_len, o = 0;
	while (i < len && xml[i] != '<') {
		if (xml[i] == '&') {
			size_t wrote = 0;
			int used = xml_entity(xml + i, len - i, out + o, cap - 1 - o, &wrote);
			if (used < 0)
				return used == FMT_E_CORRUPT && !memchr(xml + i, ';', len - i)
					       ? FMT_E_TRUNCATED
					       : used;
			i += (size_t)used;
			o += wrote;
			continue;
		}
		if (o + 1 >= cap)
			return FMT_E_TOO_BIG;
		out[o++] = xml[i++];
	}
	out[o] = 0;
	if (i >= len)
		return FMT_E_TRUNCATED;
	/* The text must end with exactly "</tag>"; a cut-off prefix of it is a
	 * truncated answer, anything else is markup we do not read. */
	char close[80];
	int cn = snprintf(close, sizeof(close), "</%s>", tag);
	ASSERT(cn > 0 && (size_t)cn < sizeof(close));
	size_t have = FMT_MIN(len - i, (size_t)cn);
	if (memcmp(xml + i, close, have) != 0)
		return FMT_E_CORRUPT;
	return have < (size_t)cn ? FMT_E_TRUNCATED : (int)o;
}

int s3_xml_next(const char *xml, size_t len, size_t *pos, const char *tag, const char **elem,
		size_t *elem_len)
{
	size_t open_len;
	bool empty;
	if (*pos >= len)
		return 0;
	long at = xml_find_open(xml, len, *pos, tag, &open_len, &empty);
	if (at < 0) {
		*pos = len;
		return 0;
	}
	size_t start = (size_t)at + open_len;
	if (empty) {
		*elem = xml + start;
		*elem_len = 0;
		*pos = start;
		return 1;
	}
	char close[80];
	int cn = snprintf(close, sizeof(close), "</%s>", tag);
	ASSERT(cn > 0 && (size_t)cn < sizeof(close));
	const char *end = memmem(xml + start, len - start, close, (size_t)cn);
	if (!end)
		return FMT_E_TRUNCATED;
	*elem = xml + start;
	*elem_len = (size_t)(end - (xml + start));
	*pos = (size_t)(end - xml) + (size_t)cn;
	return 1;
}

/* ---- errors -------------------------------------------------------------------------- */

const char *const s3_err_kind_names[S3_ERR_KIND_COUNT] = {
	[S3_ERR_NONE] = "none",         [S3_ERR_NETWORK] = "network", [S3_ERR_TIMEOUT] = "timeout",
	[S3_ERR_AUTH] = "auth",         [S3_ERR_CHECKSUM] = "checksum",
	[S3_ERR_NOT_FOUND] = "not_found", [S3_ERR_CLIENT] = "client", [S3_ERR_SERVER] = "server",
	[S3_ERR_LOCAL] = "local",       [S3_ERR_CANCELLED] = "cancelled",
};

const char *s3_err_kind_name(enum s3_err_kind kind)
{
	return (unsigned)kind < S3_ERR_KIND_COUNT ? s3_err_kind_names[kind] : "unknown";
}

static bool code_in(const char *code, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(code, list[i]))
			return true;
	return false;
}

enum s3_err_kind s3_classify(int http_status, const char *code)
{
	static const char *const checksum[] = { "BadDigest", "InvalidDigest",
						"XAmzContentSHA256Mismatch", "InvalidChecksum" };
	static const char *const auth[] = {
		"AccessDenied",		 "SignatureDoesNotMatch", "InvalidAccessKeyId",
		"ExpiredToken",		 "InvalidToken",	  "TokenRefreshRequired",
		"RequestTimeTooSkewed",	 "AuthorizationHeaderMalformed", "InvalidSecurity",
		"AccountProblem",	 "AllAccessDisabled",	  "MissingSecurityHeader",
	};
	static const char *const not_found[] = { "NoSuchBucket", "NoSuchKey", "NoSuchVersion",
						 "NoSuchUpload" };
	static const char *const server[] = { "SlowDown", "InternalError", "ServiceUnavailable" };
	if (http_status >= 200 && http_status < 300 && (!code || !*code))
		return S3_ERR_NONE;
	if (code && *code) {
		if (code_in(code, checksum, FMT_ARRAY_LEN(checksum)))
			return S3_ERR_CHECKSUM;
		if (!strcmp(code, "RequestTimeout"))
			return S3_ERR_TIMEOUT;
		if (code_in(code, auth, FMT_ARRAY_LEN(auth)))
			return S3_ERR_AUTH;
		if (code_in(code, not_found, FMT_ARRAY_LEN(not_found)))
			return S3_ERR_NOT_FOUND;
		if (code_in(code, server, FMT_ARRAY_LEN(server)))
			return S3_ERR_SERVER;
	}
	if (http_status == 401 || http_status == 403)
		return S3_ERR_AUTH;
	if (http_status == 404)
		return S3_ERR_NOT_FOUND;
	if (http_status == 408)
		return S3_ERR_TIMEOUT;
	if (http_status >= 500 || (http_status >= 200 && http_status < 300))
		return S3_ERR_SERVER; /* 5xx, or an <Error> inside a 200 answer */
	if (http_status >= 300)
		return S3_ERR_CLIENT;
	return S3_ERR_NETWORK; /* no HTTP answer at all */
}

bool s3_error_retryable(const struct s3_error *err)
{
	static const char *const again[] = { "RequestTimeout", "OperationAborted", "TooManyRequests",
					     "Throttling", "ThrottlingException" };
	switch (err->kind) {
	case S3_ERR_NETWORK:
	case S3_ERR_TIMEOUT:
	case S3_ERR_SERVER:
	case S3_ERR_CHECKSUM:
		return true;
	case S3_ERR_CLIENT:
		return err->http_status == 429 || code_in(err->code, again, FMT_ARRAY_LEN(again));
	default:
		return false;
	}
}

void s3_error_format(const struct s3_error *err, char *out, size_t cap)
{
	int n = snprintf(out, cap, "%s%s%s", err->operation, err->operation[0] ? ": " : "",
			 s3_err_kind_name(err->kind));
	if (n < 0 || (size_t)n >= cap)
		return;
	size_t o = (size_t)n;
	if (err->http_status)
		o += (size_t)snprintf(out + o, cap - o, ": HTTP %d", err->http_status);
	if (o < cap && err->code[0])
		o += (size_t)snprintf(out + o, cap - o, " %s", err->code);
	if (o < cap && err->message[0])
		o += (size_t)snprintf(out + o, cap - o, ": %s", err->message);
	if (o < cap && err->request_id[0])
		snprintf(out + o, cap - o, " (request id %s)", err->request_id);
}

const char *s3_strerror(int rc)
{
	switch (rc) {
	case S3_E_NETWORK: return "S3: network error";
	case S3_E_TIMEOUT: return "S3: timeout";
	case S3_E_AUTH: return "S3: credentials refused";
	case S3_E_CHECKSUM: return "S3: checksum mismatch";
	case S3_E_NOT_FOUND: return "S3: not found";
	case S3_E_CLIENT: return "S3: request refused";
	case S3_E_SERVER: return "S3: server error";
	case S3_E_CANCELLED: return "S3: cancelled";
	default: return fmt_strerror(rc);
	}
}

const char *s3_versioning_name(enum s3_versioning v)
{
	switch (v) {
	case S3_VERSIONING_ENABLED: return "Enabled";
	case S3_VERSIONING_SUSPENDED: return "Suspended";
	case S3_VERSIONING_NEVER: return "never enabled";
	case S3_VERSIONING_NO_BUCKET: return "no such bucket";
	}
	return "unknown";
}
