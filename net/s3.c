// SPDX-License-Identifier: Apache-2.0
/*
 * s3.c — the transport of the S3 client (net/s3.h): one libcurl easy handle
 * per client, reused for every request so the connection stays alive, and
 * the operations built on one function, s3_perform().
 *
 * A request, in order:
 *   1. URL: endpoint + (path style: /bucket) + /encoded-key + ?query, or
 *      scheme://bucket.host/encoded-key for virtual-hosted addressing. The
 *      key is encoded once, here (s3_uri_encode), and curl sends the path as
 *      it is (CURLOPT_PATH_AS_IS): the path curl signs is the one S3 sees.
 *   2. Headers we set and curl signs (curl 7.88 signs host, x-amz-date and
 *      every header we pass): x-amz-content-sha256 always, Content-MD5 with
 *      a body, Content-Type for POST, x-amz-security-token with a session
 *      token, the metadata. We never pass "Expect:" (curl would sign a
 *      header it then does not send: FIELD-NOTES.md).
 *   3. curl_easy_perform(): the body comes from the fd by pread (read
 *      callback) or from a buffer (POSTFIELDS); the answer goes to an fd
 *      (GET of an object, 2xx only) or to the bounded response buffer.
 *      Headers we need (ETag, x-amz-version-id, metadata, request id) are
 *      copied by the header callback into fixed buffers; the last status
 *      line resets them (100 Continue comes first).
 *   4. The outcome becomes 0 or a struct s3_error: curl's failure
 *      (network, timeout, cancelled, a local read/write error) or the HTTP
 *      status with S3's <Code> and <Message>, classified by s3_classify().
 *
 * curl_easy_reset() before every request clears every option but keeps
 * the connection cache, DNS cache and TLS sessions, so no option of one
 * request (NOBODY, UPLOAD, POSTFIELDS) leaks into the next.
 */
#include "net/s3.h"

#include "format/hash.h"

#include <curl/curl.h>
#include <stdarg.h>
#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef HODEI_VERSION
#define HODEI_VERSION "dev"
#endif

#define URL_MAX (S3_ENDPOINT_MAX + S3_BUCKET_MAX + 3 * S3_KEY_BYTES_MAX + 4096)
#define QUERY_MAX 4096
#define UPLOAD_ID_MAX 1024
#define HEADERS_MAX 8
/* One <Part> of CompleteMultipartUpload, the largest it can be. */
#define COMPLETE_PART_BYTES_MAX \
	(sizeof("<Part><PartNumber>10000</PartNumber><ETag>\"\"</ETag></Part>") + 32)
#define COMPLETE_BODY_BYTES_MAX (256 + S3_PARTS_MAX * COMPLETE_PART_BYTES_MAX)

static const char empty_sha256_hex[] =
	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/* What the header callback keeps of an answer. */
struct answer {
	long status;
	bool overflow;         /* a header we need was longer than its buffer */
	bool delete_marker;
	bool has_length;
	uint64_t content_length;
	char etag[S3_ETAG_MAX + 1];
	char version_id[S3_VERSION_ID_MAX + 1];
	char checksum_meta[S3_CHECKSUM_META_MAX + 1];
	char request_id[S3_REQUEST_ID_MAX + 1];
	char last_modified[64];
};

/* One request, as the operations describe it to s3_perform(). */
struct req {
	const char *op;           /* operation name for errors */
	const char *method;       /* GET, HEAD, PUT, POST, DELETE */
	const char *key;          /* NULL: a bucket request */
	const char *query;        /* canonical query string without '?', or "" */
	/* Body: from fd [body_off, body_off + body_len), or from body_buf. */
	int body_fd;
	uint64_t body_off, body_len;
	const char *body_buf;
	const struct s3_digests *digests; /* of the body; NULL: no body */
	const char *headers[HEADERS_MAX]; /* extra "Name: value" lines, NULL-ended */
	/* Answer: a 2xx body goes to out_fd when >= 0, else to c->resp. */
	int out_fd;
	uint64_t out_max;
	bool out_md5;             /* hash what goes to out_fd */
};

struct s3_client {
	struct s3_config cfg;
	CURL *curl;
	char sigv4[S3_REGION_MAX + 16]; /* "aws:amz:<region>:s3" */
	char url[URL_MAX];
	char errbuf[CURL_ERROR_SIZE];
	char *resp;                     /* response_bytes_max + 1 */
	size_t resp_len;
	bool resp_over;
	uint8_t *io_buf;                /* S3_IO_BUFFER_BYTES, digest pass */
	uint8_t (*part_md5)[16];        /* S3_PARTS_MAX: what we sent */
	uint8_t (*part_etag)[16];       /* S3_PARTS_MAX: what S3 answered */
	char *complete_body;            /* COMPLETE_BODY_BYTES_MAX */
	struct answer ans;
	/* Per request. */
	const struct req *cur;
	uint64_t up_done;               /* body bytes handed to curl */
	uint64_t down_done;             /* body bytes written to out_fd */
	int local_err;                  /* a read/write error here, or FMT_E_TOO_BIG */
	bool cancelled;
	EVP_MD_CTX *down_md5;
	/* Progress over a whole operation (several requests for multipart). */
	uint64_t progress_base, progress_total;
	s3_progress_fn progress;
	void *progress_ctx;
	const atomic_bool *cancel;
	_Atomic uint64_t n_requests, n_sent, n_received;
	_Atomic uint64_t n_errors[S3_ERR_KIND_COUNT];
	enum s3_err_kind op_kind;       /* the last failure of the current operation */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- errors -------------------------------------------------------------------- */

static void err_clear(struct s3_error *err)
{
	if (err)
		memset(err, 0, sizeof(*err));
}

/* Fills err (if any) for a failure and counts it; returns rc. */
static int fail(struct s3_client *c, struct s3_error *err, const char *op, enum s3_err_kind kind,
		int rc, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static int fail(struct s3_client *c, struct s3_error *err, const char *op, enum s3_err_kind kind,
		int rc, const char *fmt, ...)
{
	ASSERT(kind > S3_ERR_NONE && kind < S3_ERR_KIND_COUNT && rc < 0);
	if (c)
		c->op_kind = kind; /* counted once per operation, by op_end() */
	if (!err)
		return rc;
	memset(err, 0, sizeof(*err));
	err->kind = kind;
	err->rc = rc;
	snprintf(err->operation, sizeof(err->operation), "%s", op ? op : "");
	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err->message, sizeof(err->message), fmt, ap);
		va_end(ap);
	}
	return rc;
}

static int fail_local(struct s3_client *c, struct s3_error *err, const char *op, int rc,
		      const char *what)
{
	return fail(c, err, op, S3_ERR_LOCAL, rc, "%s: %s", what, s3_strerror(rc));
}

/* ---- client ------------------------------------------------------------------------ */

int s3_client_new(const struct s3_config *cfg, struct s3_client **out, struct s3_error *err)
{
	err_clear(err);
	*out = NULL;
	struct s3_client *c = calloc(1, sizeof(*c));
	if (!c)
		return fail(NULL, err, "new", S3_ERR_LOCAL, FMT_E_NOMEM, "out of memory");
	c->cfg = *cfg;
	char why[256];
	if (s3_config_validate(&c->cfg, why, sizeof(why))) {
		free(c);
		return fail(NULL, err, "config", S3_ERR_LOCAL, FMT_E_INVALID, "%s", why);
	}
	pthread_once(&curl_once, curl_init);
	c->resp = malloc((size_t)c->cfg.response_bytes_max + 1);
	c->io_buf = malloc(S3_IO_BUFFER_BYTES);
	c->part_md5 = calloc(S3_PARTS_MAX, sizeof(*c->part_md5));
	c->part_etag = calloc(S3_PARTS_MAX, sizeof(*c->part_etag));
	c->complete_body = malloc(COMPLETE_BODY_BYTES_MAX);
	c->curl = curl_init_rc == CURLE_OK ? curl_easy_init() : NULL;
	if (!c->resp || !c->io_buf || !c->part_md5 || !c->part_etag || !c->complete_body || !c->curl) {
		s3_client_free(c);
		return fail(NULL, err, "new", S3_ERR_LOCAL, FMT_E_NOMEM, "out of memory or curl init");
	}
	snprintf(c->sigv4, sizeof(c->sigv4), "aws:amz:%s:s3", c->cfg.region);
	*out = c;
	return 0;
}

void s3_client_free(struct s3_client *c)
{
	if (!c)
		return;
	if (c->curl)
		curl_easy_cleanup(c->curl);
	free(c->resp);
	free(c->io_buf);
	free(c->part_md5);
	free(c->part_etag);
	free(c->complete_body);
	explicit_bzero(&c->cfg, sizeof(c->cfg));
	free(c);
}

const struct s3_config *s3_client_config(const struct s3_client *c)
{
	return &c->cfg;
}

int s3_client_reload_credentials(struct s3_client *c, struct s3_error *err)
{
	err_clear(err);
	if (!c->cfg.credentials_file[0])
		return 0;
	char why[512];
	int rc = s3_config_load_credentials(&c->cfg, c->cfg.credentials_file, why, sizeof(why));
	if (rc)
		return fail(c, err, "credentials", S3_ERR_LOCAL, rc, "%s", why);
	return 0;
}

void s3_client_set_cancel(struct s3_client *c, const atomic_bool *cancel)
{
	c->cancel = cancel;
}

void s3_client_set_progress(struct s3_client *c, s3_progress_fn fn, void *ctx)
{
	c->progress = fn;
	c->progress_ctx = ctx;
}

void s3_client_stats(const struct s3_client *c, struct s3_stats *out)
{
	struct s3_client *m = (struct s3_client *)c; /* atomics: loads only */
	out->requests = atomic_load_explicit(&m->n_requests, memory_order_relaxed);
	out->bytes_sent = atomic_load_explicit(&m->n_sent, memory_order_relaxed);
	out->bytes_received = atomic_load_explicit(&m->n_received, memory_order_relaxed);
	for (int k = 0; k < S3_ERR_KIND_COUNT; k++)
		out->errors[k] = atomic_load_explicit(&m->n_errors[k], memory_order_relaxed);
}

/* ---- curl callbacks ------------------------------------------------------------------ */

/* Copies a header value (trimmed) into dst; sets overflow if it is longer. */
static void header_copy(struct answer *a, char *dst, size_t cap, const char *v, size_t n)
{
	while (n && (v[0] == ' ' || v[0] == '\t')) {
		v++;
		n--;
	}
	while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	if (n >= cap) {
		a->overflow = true;
		n = cap - 1;
	}
	memcpy(dst, v, n);
	dst[n] = 0;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *ud)
{
	struct s3_client *c = ud;
	struct answer *a = &c->ans;
	size_t n = size * nitems;
	if (n >= 5 && !memcmp(buf, "HTTP/", 5)) {
		/* A new status line (after 100 Continue, or a redirect we do
		 * not follow): what came before belongs to another answer. */
		memset(a, 0, sizeof(*a));
		return n;
	}
	const char *colon = memchr(buf, ':', n);
	if (!colon)
		return n;
	size_t name_len = (size_t)(colon - buf);
	const char *v = colon + 1;
	size_t vn = n - name_len - 1;
#define IS(name) (name_len == sizeof(name) - 1 && !strncasecmp(buf, name, name_len))
	if (IS("etag"))
		header_copy(a, a->etag, sizeof(a->etag), v, vn);
	else if (IS("x-amz-version-id"))
		header_copy(a, a->version_id, sizeof(a->version_id), v, vn);
	else if (IS(S3_CHECKSUM_META_HEADER))
		header_copy(a, a->checksum_meta, sizeof(a->checksum_meta), v, vn);
	else if (IS("x-amz-request-id"))
		header_copy(a, a->request_id, sizeof(a->request_id), v, vn);
	else if (IS("last-modified"))
		header_copy(a, a->last_modified, sizeof(a->last_modified), v, vn);
	else if (IS("x-amz-delete-marker")) {
		char t[8];
		header_copy(a, t, sizeof(t), v, vn);
		a->delete_marker = !strcasecmp(t, "true");
	} else if (IS("content-length")) {
		char t[24];
		header_copy(a, t, sizeof(t), v, vn);
		char *end;
		errno = 0;
		unsigned long long u = strtoull(t, &end, 10);
		a->has_length = !errno && end != t && !*end;
		a->content_length = a->has_length ? u : 0;
	}
#undef IS
	return n;
}

/* Writes all of p[0..n) to fd. Returns 0 or -errno. */
static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static size_t on_body(char *buf, size_t size, size_t nitems, void *ud)
{
	struct s3_client *c = ud;
	size_t n = size * nitems;
	long status = 0;
	curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
	if (c->cur->out_fd >= 0 && status >= 200 && status < 300) {
		if (c->down_done + n > c->cur->out_max) {
			c->local_err = FMT_E_TOO_BIG;
			return 0;
		}
		int rc = write_all(c->cur->out_fd, buf, n);
		if (rc) {
			c->local_err = rc;
			return 0;
		}
		if (c->down_md5)
			ASSERT(EVP_DigestUpdate(c->down_md5, buf, n) == 1);
		c->down_done += n;
		return n;
	}
	if (c->resp_len + n > c->cfg.response_bytes_max) {
		c->resp_over = true;
		c->local_err = FMT_E_TOO_BIG;
		return 0;
	}
	memcpy(c->resp + c->resp_len, buf, n);
	c->resp_len += n;
	c->resp[c->resp_len] = 0;
	return n;
}

static size_t on_read(char *buf, size_t size, size_t nitems, void *ud)
{
	struct s3_client *c = ud;
	const struct req *r = c->cur;
	uint64_t left = r->body_len - c->up_done;
	size_t want = (size_t)FMT_MIN((uint64_t)(size * nitems), left);
	if (want == 0)
		return 0;
	for (;;) {
		ssize_t n = pread(r->body_fd, buf, want, (off_t)(r->body_off + c->up_done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			/* The file shrank or cannot be read: stop, never send short. */
			c->local_err = n < 0 ? -errno : FMT_E_TRUNCATED;
			return CURL_READFUNC_ABORT;
		}
		c->up_done += (uint64_t)n;
		return (size_t)n;
	}
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
		       curl_off_t ulnow)
{
	struct s3_client *c = ud;
	if (c->cancel && atomic_load_explicit(c->cancel, memory_order_relaxed)) {
		c->cancelled = true;
		return 1;
	}
	if (c->progress && c->progress_total) {
		uint64_t now = (uint64_t)(ulnow > 0 ? ulnow : 0) + (uint64_t)(dlnow > 0 ? dlnow : 0);
		uint64_t done = FMT_MIN(c->progress_base + now, c->progress_total);
		c->progress(c->progress_ctx, done, c->progress_total);
	}
	(void)dltotal;
	(void)ultotal;
	return 0;
}

/* ---- one request ------------------------------------------------------------------------ */

static int build_url(struct s3_client *c, const struct req *r)
{
	int n = s3_object_url(&c->cfg, r->key, r->query, c->url, sizeof(c->url));
	return n < 0 ? n : 0;
}

/* The signed headers of a request. Returns the list or NULL (no memory). */
static struct curl_slist *build_headers(struct s3_client *c, const struct req *r)
{
	char line[S3_SESSION_TOKEN_MAX + 64];
	struct curl_slist *h = NULL, *t;
#define ADD(...)                                               \
	do {                                                   \
		snprintf(line, sizeof(line), __VA_ARGS__);     \
		if (!(t = curl_slist_append(h, line)))         \
			goto oom;                              \
		h = t;                                         \
	} while (0)
	ADD("x-amz-content-sha256: %s", r->digests ? r->digests->sha256_hex : empty_sha256_hex);
	if (r->digests)
		ADD("Content-MD5: %s", r->digests->md5_b64);
	if (c->cfg.session_token[0])
		ADD("x-amz-security-token: %s", c->cfg.session_token);
	for (int i = 0; i < HEADERS_MAX && r->headers[i]; i++)
		ADD("%s", r->headers[i]);
#undef ADD
	explicit_bzero(line, sizeof(line));
	return h;
oom:
	explicit_bzero(line, sizeof(line));
	curl_slist_free_all(h);
	return NULL;
}

static void set_options(struct s3_client *c, const struct req *r, struct curl_slist *headers)
{
	CURL *h = c->curl;
	curl_easy_reset(h);
	curl_easy_setopt(h, CURLOPT_URL, c->url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "hodei-audit/" HODEI_VERSION);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->errbuf);
	curl_easy_setopt(h, CURLOPT_AWS_SIGV4, c->sigv4);
	curl_easy_setopt(h, CURLOPT_USERNAME, c->cfg.access_key);
	curl_easy_setopt(h, CURLOPT_PASSWORD, c->cfg.secret_key);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, (long)c->cfg.connect_timeout_s);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)c->cfg.timeout_s);
	if (c->cfg.stall_timeout_s) {
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)c->cfg.stall_timeout_s);
	}
	if (c->cfg.ca_file[0])
		curl_easy_setopt(h, CURLOPT_CAINFO, c->cfg.ca_file);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, c);
	if (!strcmp(r->method, "HEAD")) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else if (!strcmp(r->method, "PUT")) {
		curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, c);
		curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, (long)S3_IO_BUFFER_BYTES);
	} else if (!strcmp(r->method, "POST")) {
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, r->body_buf ? r->body_buf : "");
	} else if (!strcmp(r->method, "DELETE")) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "DELETE");
	} else {
		ASSERT(!strcmp(r->method, "GET"));
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
	}
}

/* An HTTP answer that is not a success: S3's code and message from the
 * body (HEAD answers have none: the status tells). */
static int fail_http(struct s3_client *c, const struct req *r, long status, struct s3_error *err)
{
	char code[S3_CODE_MAX + 1] = "", msg[S3_MESSAGE_MAX + 1] = "";
	char rid[S3_REQUEST_ID_MAX + 1] = "";
	if (c->resp_len) {
		/* Each is "" when absent or unreadable (s3_xml_tag's contract). */
		s3_xml_tag(c->resp, c->resp_len, "Code", code, sizeof(code));
		s3_xml_tag(c->resp, c->resp_len, "Message", msg, sizeof(msg));
		s3_xml_tag(c->resp, c->resp_len, "RequestId", rid, sizeof(rid));
	}
	enum s3_err_kind kind = s3_classify((int)status, code);
	if (kind == S3_ERR_NONE)
		kind = S3_ERR_SERVER;
	if (!msg[0])
		snprintf(msg, sizeof(msg), "%s",
			 status == 404 ? "not found" : c->resp_len ? "no readable <Message>" : "no error body");
	fail(c, err, r->op, kind, S3_E_BASE - (int)kind, "%s", msg);
	if (err) {
		err->http_status = (int)status;
		snprintf(err->code, sizeof(err->code), "%s", code);
		snprintf(err->request_id, sizeof(err->request_id), "%s",
			 c->ans.request_id[0] ? c->ans.request_id : rid);
	}
	return S3_E_BASE - (int)kind;
}

/* curl failed before a usable answer. */
static int fail_curl(struct s3_client *c, const struct req *r, CURLcode cc, struct s3_error *err)
{
	if (c->cancelled)
		return fail(c, err, r->op, S3_ERR_CANCELLED, S3_E_CANCELLED, "cancelled");
	if (c->local_err) {
		if (c->resp_over)
			return fail(c, err, r->op, S3_ERR_LOCAL, c->local_err,
				    "the answer is larger than %u bytes (response_bytes_max)",
				    c->cfg.response_bytes_max);
		if (c->local_err == FMT_E_TOO_BIG)
			return fail(c, err, r->op, S3_ERR_LOCAL, c->local_err,
				    "the object is larger than %llu bytes",
				    (unsigned long long)r->out_max);
		return fail_local(c, err, r->op, c->local_err,
				  r->out_fd >= 0 ? "writing the object" : "reading the file");
	}
	const char *text = c->errbuf[0] ? c->errbuf : curl_easy_strerror(cc);
	switch (cc) {
	case CURLE_OPERATION_TIMEDOUT:
		return fail(c, err, r->op, S3_ERR_TIMEOUT, S3_E_TIMEOUT, "%s", text);
	case CURLE_OUT_OF_MEMORY:
		return fail(c, err, r->op, S3_ERR_LOCAL, FMT_E_NOMEM, "%s", text);
	case CURLE_URL_MALFORMAT:
	case CURLE_BAD_FUNCTION_ARGUMENT:
	case CURLE_UNSUPPORTED_PROTOCOL:
		return fail(c, err, r->op, S3_ERR_LOCAL, FMT_E_INVALID, "%s", text);
	default:
		return fail(c, err, r->op, S3_ERR_NETWORK, S3_E_NETWORK, "%s", text);
	}
}

/* Runs one request. On 0 the answer is a 2xx: headers in c->ans, a body
 * in c->resp (or written to r->out_fd). */
static int s3_perform(struct s3_client *c, const struct req *r, struct s3_error *err)
{
	int rc = build_url(c, r);
	if (rc)
		return fail(c, err, r->op, S3_ERR_LOCAL, rc, "the URL is longer than %d bytes", URL_MAX);
	struct curl_slist *headers = build_headers(c, r);
	if (!headers)
		return fail(c, err, r->op, S3_ERR_LOCAL, FMT_E_NOMEM, "out of memory");
	memset(&c->ans, 0, sizeof(c->ans));
	c->cur = r;
	c->resp_len = 0;
	c->resp[0] = 0;
	c->resp_over = c->cancelled = false;
	c->local_err = 0;
	c->up_done = c->down_done = 0;
	c->errbuf[0] = 0;
	set_options(c, r, headers);
	atomic_fetch_add_explicit(&c->n_requests, 1, memory_order_relaxed);
	CURLcode cc = curl_easy_perform(c->curl);
	long status = 0;
	curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(headers);
	c->cur = NULL;
	if (cc != CURLE_OK) {
		/* A server that refuses early (403 before the body was read) may
		 * close the connection under the upload: its answer still wins. */
		if (status >= 300 && !c->local_err && !c->cancelled &&
		    (cc == CURLE_SEND_ERROR || cc == CURLE_RECV_ERROR))
			return fail_http(c, r, status, err);
		return fail_curl(c, r, cc, err);
	}
	if (status < 200 || status >= 300)
		return fail_http(c, r, status, err);
	if (c->ans.overflow)
		return fail(c, err, r->op, S3_ERR_CLIENT, S3_E_CLIENT,
			    "a header of the answer (ETag, version id, metadata) is over its limit");
	return 0;
}

/* The body-less request most operations start from. */
static struct req req_init(const char *op, const char *method, const char *key, const char *query)
{
	struct req r = { .op = op, .method = method, .key = key, .query = query, .body_fd = -1,
			 .out_fd = -1 };
	return r;
}

/* Strips the quotes S3 puts around ETags ("abc" -> abc), in place. */
static void etag_unquote(char *e)
{
	size_t n = strlen(e);
	if (n >= 2 && e[0] == '"' && e[n - 1] == '"') {
		memmove(e, e + 1, n - 2);
		e[n - 2] = 0;
	}
}

/* 32 hex digits -> 16 bytes; false if it is not a plain MD5. */
static bool etag_md5(const char *e, uint8_t out[16])
{
	if (strlen(e) != 32)
		return false;
	for (int i = 0; i < 16; i++) {
		int hi = fmt_hex_digit(e[2 * i]), lo = fmt_hex_digit(e[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return false;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return true;
}

/* Whether the answer's body is an <Error> document (S3 may send one with
 * status 200 for CompleteMultipartUpload). */
static bool xml_has_error(const struct s3_client *c)
{
	return c->resp_len && memmem(c->resp, c->resp_len, "<Error>", 7) != NULL;
}

/* ---- versioning ------------------------------------------------------------------------ */

static int get_versioning(struct s3_client *c, enum s3_versioning *state, struct s3_error *err)
{
	err_clear(err);
	struct req r = req_init("GetBucketVersioning", "GET", NULL, "versioning=");
	struct s3_error e;
	int rc = s3_perform(c, &r, &e);
	if (rc == S3_E_NOT_FOUND && (!e.code[0] || !strcmp(e.code, "NoSuchBucket"))) {
		*state = S3_VERSIONING_NO_BUCKET;
		return 0;
	}
	if (rc) {
		if (err)
			*err = e;
		return rc;
	}
	char status[32];
	int n = s3_xml_tag(c->resp, c->resp_len, "Status", status, sizeof(status));
	if (n == FMT_E_NOT_FOUND) {
		/* No <Status>: versioning was never set (S3 answers an empty
		 * <VersioningConfiguration/>, moto another empty element). An
		 * answer that is not XML at all is not trusted; either way the
		 * caller refuses to replicate, the safe side. */
		if (!memchr(c->resp, '<', c->resp_len) || xml_has_error(c))
			return fail(c, err, r.op, S3_ERR_SERVER, S3_E_SERVER,
				    "the answer is not a versioning configuration");
		*state = S3_VERSIONING_NEVER;
		return 0;
	}
	if (n < 0)
		return fail(c, err, r.op, S3_ERR_SERVER, S3_E_SERVER, "bad <Status>: %s",
			    s3_strerror(n));
	if (!strcmp(status, "Enabled"))
		*state = S3_VERSIONING_ENABLED;
	else if (!strcmp(status, "Suspended"))
		*state = S3_VERSIONING_SUSPENDED;
	else
		return fail(c, err, r.op, S3_ERR_SERVER, S3_E_SERVER, "unknown versioning status '%s'",
			    status);
	return 0;
}

/* ---- uploads ------------------------------------------------------------------------------ */

/* Checks that the metadata value can go into a header as it is. */
static bool meta_ok(const char *v)
{
	if (strlen(v) > S3_CHECKSUM_META_MAX)
		return false;
	for (; *v; v++)
		if ((unsigned char)*v < 0x21 || (unsigned char)*v > 0x7e)
			return false;
	return true;
}

/* Compares an answer's ETag with what we sent, when the config asks. */
static int check_etag(struct s3_client *c, const char *op, const char *etag, const char *want,
		      struct s3_error *err)
{
	if (!c->cfg.verify_etag || !strcasecmp(etag, want))
		return 0;
	return fail(c, err, op, S3_ERR_CHECKSUM, S3_E_CHECKSUM,
		    "ETag '%s' is not '%s', the MD5 of what was sent (SSE-KMS or SSE-C buckets: "
		    "set HODEI_S3_VERIFY_ETAG=0)", etag, want);
}

static int put_single(struct s3_client *c, const char *key, int fd, uint64_t size,
		      const char *meta_hdr, struct s3_put_result *res, struct s3_error *err)
{
	struct s3_digests d;
	int rc = s3_digest_fd(fd, 0, size, c->io_buf, S3_IO_BUFFER_BYTES, &d);
	if (rc)
		return fail_local(c, err, "PutObject", rc, "reading the file");
	struct req r = req_init("PutObject", "PUT", key, "");
	r.body_fd = fd;
	r.body_len = size;
	r.digests = &d;
	r.headers[0] = "Content-Type: application/octet-stream";
	r.headers[1] = meta_hdr;
	if ((rc = s3_perform(c, &r, err)))
		return rc;
	etag_unquote(c->ans.etag);
	if ((rc = check_etag(c, r.op, c->ans.etag, d.md5_hex, err)))
		return rc;
	snprintf(res->etag, sizeof(res->etag), "%s", c->ans.etag);
	snprintf(res->version_id, sizeof(res->version_id), "%s", c->ans.version_id);
	res->parts = 1;
	return 0;
}

static int mp_create(struct s3_client *c, const char *key, const char *meta_hdr, char *upload_id,
		     size_t cap, struct s3_error *err)
{
	struct s3_digests d;
	int rc = s3_digest_buf("", 0, &d);
	if (rc)
		return fail_local(c, err, "CreateMultipartUpload", rc, "digest");
	struct req r = req_init("CreateMultipartUpload", "POST", key, "uploads=");
	r.body_buf = "";
	r.digests = &d;
	r.headers[0] = "Content-Type: application/octet-stream";
	r.headers[1] = meta_hdr;
	if ((rc = s3_perform(c, &r, err)))
		return rc;
	int n = s3_xml_tag(c->resp, c->resp_len, "UploadId", upload_id, cap);
	if (n <= 0)
		return fail(c, err, r.op, S3_ERR_SERVER, S3_E_SERVER, "no usable <UploadId>: %s",
			    n == 0 ? "empty" : s3_strerror(n));
	return 0;
}

static int mp_part(struct s3_client *c, const char *key, const char *id_enc, int fd,
		   const struct s3_part_plan *plan, uint32_t part, struct s3_error *err)
{
	uint64_t off = (uint64_t)(part - 1) * plan->part_bytes;
	uint64_t len = part == plan->parts ? plan->last_part_bytes : plan->part_bytes;
	struct s3_digests d;
	int rc = s3_digest_fd(fd, off, len, c->io_buf, S3_IO_BUFFER_BYTES, &d);
	if (rc)
		return fail_local(c, err, "UploadPart", rc, "reading the file");
	char query[QUERY_MAX], op[32];
	snprintf(query, sizeof(query), "partNumber=%u&uploadId=%s", part, id_enc);
	snprintf(op, sizeof(op), "UploadPart %u/%u", part, plan->parts);
	struct req r = req_init(op, "PUT", key, query);
	r.body_fd = fd;
	r.body_off = off;
	r.body_len = len;
	r.digests = &d;
	c->progress_base = off;
	if ((rc = s3_perform(c, &r, err)))
		return rc;
	etag_unquote(c->ans.etag);
	if ((rc = check_etag(c, op, c->ans.etag, d.md5_hex, err)))
		return rc;
	if (!etag_md5(c->ans.etag, c->part_etag[part - 1]))
		return fail(c, err, op, S3_ERR_CLIENT, S3_E_CLIENT,
			    "part ETag '%s' is not 32 hex digits", c->ans.etag);
	memcpy(c->part_md5[part - 1], d.md5, 16);
	return 0;
}

/* Builds the CompleteMultipartUpload body in c->complete_body. */
static size_t mp_complete_body(struct s3_client *c, uint32_t parts)
{
	size_t o = 0, cap = COMPLETE_BODY_BYTES_MAX;
	o += (size_t)snprintf(c->complete_body, cap,
			      "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
	for (uint32_t i = 0; i < parts; i++) {
		char hex[33];
		fmt_hex(c->part_etag[i], 16, hex);
		o += (size_t)snprintf(c->complete_body + o, cap - o,
				      "<Part><PartNumber>%u</PartNumber><ETag>\"%s\"</ETag></Part>",
				      i + 1, hex);
		ASSERT(o < cap);
	}
	o += (size_t)snprintf(c->complete_body + o, cap - o, "</CompleteMultipartUpload>");
	ASSERT(o < cap);
	return o;
}

static int mp_complete(struct s3_client *c, const char *key, const char *id_enc, uint32_t parts,
		       struct s3_put_result *res, struct s3_error *err)
{
	size_t len = mp_complete_body(c, parts);
	struct s3_digests d;
	int rc = s3_digest_buf(c->complete_body, len, &d);
	if (rc)
		return fail_local(c, err, "CompleteMultipartUpload", rc, "digest");
	char query[QUERY_MAX];
	snprintf(query, sizeof(query), "uploadId=%s", id_enc);
	struct req r = req_init("CompleteMultipartUpload", "POST", key, query);
	r.body_buf = c->complete_body;
	r.body_len = len;
	r.digests = &d;
	r.headers[0] = "Content-Type: application/xml";
	if ((rc = s3_perform(c, &r, err)))
		return rc;
	/* S3 may answer 200 and put the error in the body. */
	if (xml_has_error(c))
		return fail_http(c, &r, 200, err);
	char etag[S3_ETAG_MAX + 1];
	if (s3_xml_tag(c->resp, c->resp_len, "ETag", etag, sizeof(etag)) < 0)
		snprintf(etag, sizeof(etag), "%s", c->ans.etag);
	etag_unquote(etag);
	char want[48];
	s3_multipart_etag((const uint8_t(*)[16])c->part_md5, parts, want, sizeof(want));
	if ((rc = check_etag(c, r.op, etag, want, err)))
		return rc;
	snprintf(res->etag, sizeof(res->etag), "%s", etag);
	snprintf(res->version_id, sizeof(res->version_id), "%s", c->ans.version_id);
	return 0;
}

static void mp_abort(struct s3_client *c, const char *key, const char *id_enc)
{
	char query[QUERY_MAX];
	snprintf(query, sizeof(query), "uploadId=%s", id_enc);
	struct req r = req_init("AbortMultipartUpload", "DELETE", key, query);
	struct s3_error ignored;
	/* Best effort (S4): a cancelled client would refuse at once, so the
	 * abort runs without the cancel flag. */
	const atomic_bool *cancel = c->cancel;
	c->cancel = NULL;
	(void)s3_perform(c, &r, &ignored);
	c->cancel = cancel;
}

static int put_multipart(struct s3_client *c, const char *key, int fd,
			 const struct s3_part_plan *plan, const char *meta_hdr,
			 struct s3_put_result *res, struct s3_error *err)
{
	char upload_id[UPLOAD_ID_MAX + 1], id_enc[3 * UPLOAD_ID_MAX + 1];
	int rc = mp_create(c, key, meta_hdr, upload_id, sizeof(upload_id), err);
	if (rc)
		return rc;
	if (s3_uri_encode(id_enc, sizeof(id_enc), upload_id, strlen(upload_id), false) < 0) {
		rc = fail(c, err, "CreateMultipartUpload", S3_ERR_SERVER, S3_E_SERVER,
			  "upload id too long");
		return rc;
	}
	for (uint32_t part = 1; part <= plan->parts && !rc; part++) {
		if (c->cancel && atomic_load_explicit(c->cancel, memory_order_relaxed))
			rc = fail(c, err, "UploadPart", S3_ERR_CANCELLED, S3_E_CANCELLED, "cancelled");
		else
			rc = mp_part(c, key, id_enc, fd, plan, part, err);
	}
	if (!rc)
		rc = mp_complete(c, key, id_enc, plan->parts, res, err);
	if (rc) {
		mp_abort(c, key, id_enc);
		return rc;
	}
	res->multipart = true;
	res->parts = plan->parts;
	return 0;
}

static int put_object_file(struct s3_client *c, const char *key, int fd, uint64_t size,
			   const char *checksum_meta, struct s3_put_result *res, struct s3_error *err)
{
	err_clear(err);
	memset(res, 0, sizeof(*res));
	const char *op = "PutObject";
	if (s3_key_check(key))
		return fail(c, err, op, S3_ERR_LOCAL, FMT_E_INVALID,
			    "the key is not 1..1024 bytes of UTF-8 without control characters");
	if (checksum_meta && !meta_ok(checksum_meta))
		return fail(c, err, op, S3_ERR_LOCAL, FMT_E_INVALID,
			    "the checksum metadata is not 1..%d printable ASCII characters",
			    S3_CHECKSUM_META_MAX);
	struct stat st;
	if (fstat(fd, &st))
		return fail_local(c, err, op, -errno, "fstat");
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < size)
		return fail(c, err, op, S3_ERR_LOCAL, FMT_E_INVALID,
			    "not a regular file of at least %llu bytes", (unsigned long long)size);
	struct s3_part_plan plan;
	int rc = s3_plan_parts(size, c->cfg.multipart_threshold_bytes, c->cfg.part_bytes,
			       c->cfg.object_bytes_max, &plan);
	if (rc)
		return fail(c, err, op, S3_ERR_LOCAL, rc, "%llu bytes: over the object size limit",
			    (unsigned long long)size);
	char meta_hdr[sizeof(S3_CHECKSUM_META_HEADER) + S3_CHECKSUM_META_MAX + 4];
	snprintf(meta_hdr, sizeof(meta_hdr), "%s: %s", S3_CHECKSUM_META_HEADER,
		 checksum_meta ? checksum_meta : "");
	const char *mh = checksum_meta && *checksum_meta ? meta_hdr : NULL;
	c->progress_base = 0;
	c->progress_total = size;
	rc = plan.multipart ? put_multipart(c, key, fd, &plan, mh, res, err)
			    : put_single(c, key, fd, size, mh, res, err);
	c->progress_total = 0;
	if (rc)
		return rc;
	res->bytes = size;
	atomic_fetch_add_explicit(&c->n_sent, size, memory_order_relaxed);
	return 0;
}

/* ---- reads ------------------------------------------------------------------------------- */

/* "versionId=<encoded>" or "" into q. Returns 0 or FMT_E_INVALID. */
static int version_query(char *q, size_t cap, const char *version_id)
{
	q[0] = 0;
	if (!version_id || !*version_id)
		return 0;
	size_t n = strlen(version_id);
	if (n > S3_VERSION_ID_MAX || cap < 11)
		return FMT_E_INVALID;
	memcpy(q, "versionId=", 10);
	return s3_uri_encode(q + 10, cap - 10, version_id, n, false) < 0 ? FMT_E_INVALID : 0;
}

static void info_fill(const struct s3_client *c, struct s3_object_info *info)
{
	info->exists = true;
	info->delete_marker = c->ans.delete_marker;
	info->size = c->ans.content_length;
	snprintf(info->version_id, sizeof(info->version_id), "%s", c->ans.version_id);
	snprintf(info->etag, sizeof(info->etag), "%s", c->ans.etag);
	etag_unquote(info->etag);
	snprintf(info->checksum_meta, sizeof(info->checksum_meta), "%s", c->ans.checksum_meta);
	snprintf(info->last_modified, sizeof(info->last_modified), "%s", c->ans.last_modified);
}

static int head_object(struct s3_client *c, const char *key, const char *version_id,
		       struct s3_object_info *info, struct s3_error *err)
{
	err_clear(err);
	memset(info, 0, sizeof(*info));
	char query[3 * S3_VERSION_ID_MAX + 16];
	if (s3_key_check(key) || version_query(query, sizeof(query), version_id))
		return fail(c, err, "HeadObject", S3_ERR_LOCAL, FMT_E_INVALID,
			    "bad key or version id");
	struct req r = req_init("HeadObject", "HEAD", key, query);
	struct s3_error e;
	int rc = s3_perform(c, &r, &e);
	/* 404: no such key or version; 405: the version is a delete marker. */
	if (rc && (e.http_status == 404 || e.http_status == 405)) {
		info->delete_marker = c->ans.delete_marker;
		snprintf(info->version_id, sizeof(info->version_id), "%s", c->ans.version_id);
		return 0;
	}
	if (rc) {
		if (err)
			*err = e;
		return rc;
	}
	if (!c->ans.has_length)
		return fail(c, err, r.op, S3_ERR_SERVER, S3_E_SERVER, "no Content-Length");
	info_fill(c, info);
	return 0;
}

static int get_object_to_fd(struct s3_client *c, const char *key, const char *version_id, int fd,
			    uint64_t max_bytes, struct s3_object_info *info, struct s3_error *err)
{
	err_clear(err);
	struct s3_object_info scratch;
	if (!info)
		info = &scratch;
	memset(info, 0, sizeof(*info));
	char query[3 * S3_VERSION_ID_MAX + 16];
	if (s3_key_check(key) || version_query(query, sizeof(query), version_id))
		return fail(c, err, "GetObject", S3_ERR_LOCAL, FMT_E_INVALID,
			    "bad key or version id");
	struct req r = req_init("GetObject", "GET", key, query);
	r.out_fd = fd;
	r.out_max = max_bytes ? FMT_MIN(max_bytes, c->cfg.object_bytes_max) : c->cfg.object_bytes_max;
	c->down_md5 = EVP_MD_CTX_new();
	if (!c->down_md5 || EVP_DigestInit_ex(c->down_md5, EVP_md5(), NULL) != 1) {
		EVP_MD_CTX_free(c->down_md5);
		c->down_md5 = NULL;
		return fail(c, err, r.op, S3_ERR_LOCAL, FMT_E_NOMEM, "out of memory");
	}
	c->progress_base = 0;
	c->progress_total = 0;
	int rc = s3_perform(c, &r, err);
	uint8_t got[16];
	unsigned int n = 0;
	ASSERT(EVP_DigestFinal_ex(c->down_md5, got, &n) == 1 && n == 16);
	EVP_MD_CTX_free(c->down_md5);
	c->down_md5 = NULL;
	if (rc)
		return rc;
	info_fill(c, info);
	info->size = c->down_done;
	if (c->ans.has_length && c->ans.content_length != c->down_done)
		return fail(c, err, r.op, S3_ERR_NETWORK, S3_E_NETWORK,
			    "got %llu bytes of %llu", (unsigned long long)c->down_done,
			    (unsigned long long)c->ans.content_length);
	uint8_t want[16];
	if (c->cfg.verify_etag && etag_md5(info->etag, want) && memcmp(want, got, 16) != 0)
		return fail(c, err, r.op, S3_ERR_CHECKSUM, S3_E_CHECKSUM,
			    "the bytes received do not have the MD5 of the ETag %s", info->etag);
	atomic_fetch_add_explicit(&c->n_received, c->down_done, memory_order_relaxed);
	return 0;
}

/* ---- listing ----------------------------------------------------------------------------- */

struct list_state {
	char key_marker[S3_KEY_BYTES_MAX + 1];
	char version_marker[S3_VERSION_ID_MAX + 1];
	char key[S3_KEY_BYTES_MAX + 1];
	char version_id[S3_VERSION_ID_MAX + 1];
	char etag[S3_ETAG_MAX + 1];
	char last_modified[64];
	char enc_prefix[3 * S3_KEY_BYTES_MAX + 1];
	char enc_key[3 * S3_KEY_BYTES_MAX + 1];
	char enc_version[3 * S3_VERSION_ID_MAX + 1];
	char query[2 * 3 * S3_KEY_BYTES_MAX + 3 * S3_VERSION_ID_MAX + 128];
};

/* Decodes one <Version> or <DeleteMarker> element and calls fn, whose
 * answer goes to *cb_rc. Returns 0 or FMT_E_CORRUPT. */
static int list_entry(struct list_state *s, const char *el, size_t n, bool marker,
		      s3_version_fn fn, void *ctx, int *cb_rc)
{
	char num[32], latest[8];
	if (s3_xml_tag(el, n, "Key", s->key, sizeof(s->key)) <= 0 ||
	    s3_xml_tag(el, n, "VersionId", s->version_id, sizeof(s->version_id)) < 0 ||
	    s3_xml_tag(el, n, "IsLatest", latest, sizeof(latest)) < 0)
		return FMT_E_CORRUPT;
	if (s3_xml_tag(el, n, "LastModified", s->last_modified, sizeof(s->last_modified)) < 0)
		s->last_modified[0] = 0;
	struct s3_version v = { .key = s->key, .version_id = s->version_id, .etag = "",
				.last_modified = s->last_modified, .delete_marker = marker,
				.is_latest = !strcmp(latest, "true") };
	if (!marker) {
		if (s3_xml_tag(el, n, "ETag", s->etag, sizeof(s->etag)) < 0 ||
		    s3_xml_tag(el, n, "Size", num, sizeof(num)) <= 0)
			return FMT_E_CORRUPT;
		etag_unquote(s->etag);
		char *end;
		errno = 0;
		v.size = strtoull(num, &end, 10);
		if (errno || *end)
			return FMT_E_CORRUPT;
		v.etag = s->etag;
	}
	*cb_rc = fn(ctx, &v);
	return 0;
}

/* Walks one page's <Version> and <DeleteMarker> elements in document
 * order until the callback answers non-zero (*cb_rc). Returns 0 or a
 * parse error. */
static int list_page(struct s3_client *c, struct list_state *s, s3_version_fn fn, void *ctx,
		     int *cb_rc)
{
	size_t pv = 0, pd = 0;
	const char *ev = NULL, *ed = NULL;
	size_t nv = 0, nd = 0;
	int hv = s3_xml_next(c->resp, c->resp_len, &pv, "Version", &ev, &nv);
	int hd = s3_xml_next(c->resp, c->resp_len, &pd, "DeleteMarker", &ed, &nd);
	while ((hv > 0 || hd > 0) && !*cb_rc) {
		bool take_v = hv > 0 && (hd <= 0 || ev < ed);
		int rc = take_v ? list_entry(s, ev, nv, false, fn, ctx, cb_rc)
				: list_entry(s, ed, nd, true, fn, ctx, cb_rc);
		if (rc)
			return rc;
		if (take_v)
			hv = s3_xml_next(c->resp, c->resp_len, &pv, "Version", &ev, &nv);
		else
			hd = s3_xml_next(c->resp, c->resp_len, &pd, "DeleteMarker", &ed, &nd);
	}
	return *cb_rc ? 0 : hv < 0 ? hv : hd < 0 ? hd : 0;
}

static int list_query(struct s3_client *c, struct list_state *s)
{
	if (s3_uri_encode(s->enc_key, sizeof(s->enc_key), s->key_marker, strlen(s->key_marker),
			  false) < 0 ||
	    s3_uri_encode(s->enc_version, sizeof(s->enc_version), s->version_marker,
			  strlen(s->version_marker), false) < 0)
		return FMT_E_TOO_BIG;
	/* Sorted by name, every name with '=' (S2). */
	int n = snprintf(s->query, sizeof(s->query), "%s%s%smax-keys=%u&prefix=%s%s%s%sversions=",
			 s->key_marker[0] ? "key-marker=" : "", s->enc_key,
			 s->key_marker[0] ? "&" : "", c->cfg.list_page_keys, s->enc_prefix,
			 s->version_marker[0] ? "&version-id-marker=" : "", s->enc_version, "&");
	return n > 0 && (size_t)n < sizeof(s->query) ? 0 : FMT_E_TOO_BIG;
}

static int list_object_versions(struct s3_client *c, const char *prefix, s3_version_fn fn,
				void *ctx, struct s3_error *err)
{
	err_clear(err);
	const char *op = "ListObjectVersions";
	struct list_state *s = calloc(1, sizeof(*s));
	if (!s)
		return fail(c, err, op, S3_ERR_LOCAL, FMT_E_NOMEM, "out of memory");
	int rc = 0;
	if (strlen(prefix) > S3_KEY_BYTES_MAX ||
	    s3_uri_encode(s->enc_prefix, sizeof(s->enc_prefix), prefix, strlen(prefix), false) < 0)
		rc = fail(c, err, op, S3_ERR_LOCAL, FMT_E_INVALID, "prefix too long");
	for (bool more = true; !rc && more;) {
		if ((rc = list_query(c, s))) {
			rc = fail(c, err, op, S3_ERR_LOCAL, rc, "markers too long");
			break;
		}
		struct req r = req_init(op, "GET", NULL, s->query);
		if ((rc = s3_perform(c, &r, err)))
			break;
		int cb_rc = 0;
		if (list_page(c, s, fn, ctx, &cb_rc)) {
			rc = fail(c, err, op, S3_ERR_SERVER, FMT_E_CORRUPT,
				  "a listing entry does not parse");
			break;
		}
		if (cb_rc) {
			rc = cb_rc; /* the callback stopped the listing */
			break;
		}
		char trunc[8] = "", nk[S3_KEY_BYTES_MAX + 1] = "", nv[S3_VERSION_ID_MAX + 1] = "";
		s3_xml_tag(c->resp, c->resp_len, "IsTruncated", trunc, sizeof(trunc));
		more = !strcmp(trunc, "true");
		if (!more)
			break;
		if (s3_xml_tag(c->resp, c->resp_len, "NextKeyMarker", nk, sizeof(nk)) < 0)
			nk[0] = 0;
		if (s3_xml_tag(c->resp, c->resp_len, "NextVersionIdMarker", nv, sizeof(nv)) < 0)
			nv[0] = 0;
		/* A listing must move forward, or it would never end. */
		if (!nk[0] || (!strcmp(nk, s->key_marker) && !strcmp(nv, s->version_marker))) {
			rc = fail(c, err, op, S3_ERR_SERVER, FMT_E_CORRUPT,
				  "the listing is truncated but does not move forward");
			break;
		}
		memcpy(s->key_marker, nk, sizeof(nk));
		memcpy(s->version_marker, nv, sizeof(nv));
	}
	free(s);
	return rc;
}

/* ---- the operations: each failure is counted once, by kind ------------------------- */

static void op_begin(struct s3_client *c)
{
	c->op_kind = S3_ERR_NONE;
}

/* Counts the operation's failure (not a 404 that HEAD turns into "does not
 * exist", not a list callback's own stop) and returns rc. */
static int op_end(struct s3_client *c, int rc)
{
	if (rc && c->op_kind != S3_ERR_NONE)
		atomic_fetch_add_explicit(&c->n_errors[c->op_kind], 1, memory_order_relaxed);
	return rc;
}

int s3_get_versioning(struct s3_client *c, enum s3_versioning *state, struct s3_error *err)
{
	op_begin(c);
	return op_end(c, get_versioning(c, state, err));
}

int s3_put_object_file(struct s3_client *c, const char *key, int fd, uint64_t size,
		       const char *checksum_meta, struct s3_put_result *res, struct s3_error *err)
{
	op_begin(c);
	return op_end(c, put_object_file(c, key, fd, size, checksum_meta, res, err));
}

int s3_head_object(struct s3_client *c, const char *key, const char *version_id,
		   struct s3_object_info *info, struct s3_error *err)
{
	op_begin(c);
	return op_end(c, head_object(c, key, version_id, info, err));
}

int s3_get_object_to_fd(struct s3_client *c, const char *key, const char *version_id, int fd,
			uint64_t max_bytes, struct s3_object_info *info, struct s3_error *err)
{
	op_begin(c);
	return op_end(c, get_object_to_fd(c, key, version_id, fd, max_bytes, info, err));
}

int s3_list_object_versions(struct s3_client *c, const char *prefix, s3_version_fn fn, void *ctx,
			    struct s3_error *err)
{
	op_begin(c);
	return op_end(c, list_object_versions(c, prefix, fn, ctx, err));
}
