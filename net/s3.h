/* SPDX-License-Identifier: Apache-2.0
 *
 * s3.h — a blocking client for any S3-compatible object store (AWS S3,
 * MinIO, Ceph RGW, moto, ...), used by the replicator's own threads and by
 * `hodei-audit s3` (DESIGN.md §2.6, §8, §9; docs/S3.md). Never call it on a
 * shard thread: every call blocks on the network.
 *
 * Two files:
 *   s3_request.c  the pure request builder: configuration and credentials,
 *                 RFC 3986 key encoding, URLs, segment keys, digests, the
 *                 multipart plan, bounded XML tag extraction, the error
 *                 classification. No network; unit-tested alone.
 *   s3.c          the transport: one libcurl easy handle per client (the
 *                 only file of this client that includes curl.h), SigV4
 *                 through CURLOPT_AWS_SIGV4, the operations below.
 *
 * Data flow of an upload (s3_put_object_file):
 *
 *   fd ──pread──▶ MD5 + SHA-256 of the body (pass 1, constant memory)
 *      ──pread──▶ curl read callback ──▶ PUT with Content-MD5,
 *                 x-amz-content-sha256 (both checked by S3: a body that
 *                 changed on the way is refused with BadDigest or
 *                 XAmzContentSHA256Mismatch) and x-amz-meta-hodei-xxh3
 *      ◀── ETag (checked against our MD5), x-amz-version-id
 *
 * Above the multipart threshold the same happens per part (Create,
 * UploadPart × n, Complete; Abort on any failure), and the final ETag is
 * checked against MD5(part MD5s)-n.
 *
 * Invariants:
 *  S1 Every request carries x-amz-content-sha256 with the hex SHA-256 of
 *     exactly the bytes sent (curl 7.88 signs that header but never adds
 *     it: ../shared/FIELD-NOTES.md), and every request with a body carries
 *     Content-MD5 of exactly those bytes.
 *  S2 The object key is percent-encoded here, once, with the SigV4 rules
 *     (unreserved A-Z a-z 0-9 - . _ ~ kept, '/' kept in paths, %XX upper
 *     case otherwise); curl is told to send the path as it is
 *     (CURLOPT_PATH_AS_IS), so what is signed is what is sent. Query
 *     strings are built already sorted, every name with '=', as SigV4's
 *     canonical query string.
 *  S3 Memory is bounded and allocated in s3_client_new(): the response
 *     buffer (response_bytes_max), the I/O buffer, the per-part MD5 table
 *     (S3_PARTS_MAX) and the CompleteMultipartUpload body. Bodies of
 *     objects are streamed from and to file descriptors, never held whole.
 *  S4 An upload that returns 0 was acknowledged by the server with the
 *     digests we computed from the file (and, with verify_etag, an ETag
 *     that matches them). A failed multipart upload is aborted (best
 *     effort: a crash leaves it to the bucket's lifecycle rule).
 *  S5 The client never retries: every failure is returned with its kind
 *     (struct s3_error) and s3_error_retryable() tells the caller whether a
 *     retry may succeed without an operator (the replicator backs off
 *     exponentially with jitter).
 *
 * Errors: operations return 0, or a negative code and fill *err (err may
 * be NULL). Remote failures return S3_E_<kind>; local ones (a bad
 * argument, a file that cannot be read, a size over a limit, no memory)
 * return -errno or a FMT_E_* code with err->kind = S3_ERR_LOCAL.
 *
 * Threads: a client is used by one thread at a time. s3_client_stats()
 * and the cancel flag may be used from any thread.
 */
#ifndef HODEI_NET_S3_H
#define HODEI_NET_S3_H

#include "format/common.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- limits of the S3 protocol, and the defaults of ours -------------------- */

#define S3_KEY_BYTES_MAX 1024               /* S3's object key limit (UTF-8 bytes) */
#define S3_PARTS_MAX 10000u                 /* parts of one multipart upload */
#define S3_PART_BYTES_MIN (5ull << 20)      /* every part but the last */
#define S3_PART_BYTES_MAX (5ull << 30)
#define S3_PUT_BYTES_MAX (5ull << 30)       /* one single PUT */
#define S3_OBJECT_BYTES_MAX (5ull << 40)    /* one object */

#define S3_ENDPOINT_MAX 255
#define S3_BUCKET_MAX 255
#define S3_PREFIX_MAX 512
#define S3_REGION_MAX 63
#define S3_ACCESS_KEY_MAX 255
#define S3_SECRET_KEY_MAX 255
#define S3_SESSION_TOKEN_MAX 4095
#define S3_PATH_MAX 4095
#define S3_VERSION_ID_MAX 255               /* = ENG_EXPORT_REF_MAX */
#define S3_ETAG_MAX 127
#define S3_CHECKSUM_META_MAX 128            /* the x-amz-meta-hodei-xxh3 value */
#define S3_CODE_MAX 63
#define S3_MESSAGE_MAX 511
#define S3_REQUEST_ID_MAX 127

#define S3_CHECKSUM_META_HEADER "x-amz-meta-hodei-xxh3"

#define S3_REGION_DEFAULT "us-east-1"
#define S3_MULTIPART_THRESHOLD_DEFAULT (64ull << 20)
#define S3_PART_BYTES_DEFAULT (16ull << 20)
#define S3_CONNECT_TIMEOUT_S_DEFAULT 10
#define S3_STALL_TIMEOUT_S_DEFAULT 60
#define S3_TIMEOUT_S_DEFAULT 0               /* no limit on a whole request */
#define S3_RESPONSE_BYTES_MAX_DEFAULT (1u << 20)
#define S3_RESPONSE_BYTES_MIN (16u << 10)
#define S3_LIST_PAGE_KEYS_DEFAULT 1000
#define S3_IO_BUFFER_BYTES (256u << 10)

_Static_assert(S3_PART_BYTES_MIN <= S3_PART_BYTES_DEFAULT, "default part too small");
_Static_assert(S3_PART_BYTES_DEFAULT <= S3_MULTIPART_THRESHOLD_DEFAULT,
	       "the default threshold is at least one part");
_Static_assert(S3_MULTIPART_THRESHOLD_DEFAULT <= S3_PUT_BYTES_MAX, "threshold over one PUT");
_Static_assert((uint64_t)S3_PARTS_MAX * S3_PART_BYTES_MAX >= S3_OBJECT_BYTES_MAX,
	       "the largest object fits in the parts");

/* ---- configuration ------------------------------------------------------------ */

enum s3_addressing {
	S3_ADDR_AUTO = 0,    /* path style for a custom endpoint, virtual-hosted for AWS */
	S3_ADDR_PATH = 1,    /* http://host/bucket/key */
	S3_ADDR_VIRTUAL = 2, /* http://bucket.host/key */
};

/* Every field has a default (s3_config_default) and an environment
 * variable (s3_config_from_env; docs/S3.md lists them). Strings are
 * NUL-terminated in place: the struct can be copied. */
struct s3_config {
	char endpoint[S3_ENDPOINT_MAX + 1]; /* "scheme://host[:port]"; "" = AWS for region */
	char bucket[S3_BUCKET_MAX + 1];     /* "" = S3 is off */
	char prefix[S3_PREFIX_MAX + 1];     /* no leading/trailing '/' once validated */
	char region[S3_REGION_MAX + 1];
	enum s3_addressing addressing;      /* AUTO is resolved by s3_config_validate */
	char access_key[S3_ACCESS_KEY_MAX + 1];
	char secret_key[S3_SECRET_KEY_MAX + 1];
	char session_token[S3_SESSION_TOKEN_MAX + 1];
	char credentials_file[S3_PATH_MAX + 1]; /* "" = credentials from the variables */
	char ca_file[S3_PATH_MAX + 1];          /* "" = the system's CA bundle */
	uint64_t multipart_threshold_bytes; /* objects larger than this go multipart */
	uint64_t part_bytes;                /* S3_PART_BYTES_MIN..S3_PART_BYTES_MAX */
	uint64_t object_bytes_max;          /* refuse larger objects (up and down) */
	uint32_t response_bytes_max;        /* bound of a response body kept in memory */
	uint32_t list_page_keys;            /* max-keys of one list page, 1..1000 */
	uint32_t connect_timeout_s;         /* TCP + TLS connect */
	uint32_t stall_timeout_s;           /* no byte moved for this long: timeout */
	uint32_t timeout_s;                 /* a whole request; 0 = no limit */
	bool verify_etag;                   /* ETag must be the MD5 (off for SSE-KMS/SSE-C) */
};

void s3_config_default(struct s3_config *cfg);

/* Defaults, then the environment: HODEI_S3_ENDPOINT, _BUCKET, _PREFIX,
 * _REGION, _PATH_STYLE (1/0/true/false/auto), _MULTIPART_THRESHOLD,
 * _PART_SIZE, _MAX_OBJECT_SIZE (sizes: 64MiB, 5GiB, bytes), _CONNECT_TIMEOUT,
 * _STALL_TIMEOUT, _TIMEOUT (durations: 10s, 2m, 500ms), _VERIFY_ETAG,
 * _CA_FILE, _RESPONSE_MAX, _LIST_PAGE_KEYS; credentials from
 * HODEI_S3_CREDENTIALS_FILE when set (s3_config_load_credentials), else
 * AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN. Does not
 * validate (s3_config_validate does). Returns 0, FMT_E_INVALID (why names
 * the variable) or the credentials file's error. */
int s3_config_from_env(struct s3_config *cfg, char *why, size_t why_cap);

/* Reads credentials from a file (a Kubernetes Secret mounted as a file):
 * either KEY=VALUE lines (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
 * AWS_SESSION_TOKEN) or the AWS shared-credentials INI form (the section
 * named by $AWS_PROFILE, default [default]; aws_access_key_id, ...). Names
 * are case-insensitive, '#' and ';' start comments, values may be quoted.
 * Both the key id and the secret must be present; the token is optional.
 * The file is at most 64 KiB. Returns 0, -errno (cannot read) or
 * FMT_E_INVALID (why says which line). */
int s3_config_load_credentials(struct s3_config *cfg, const char *path, char *why,
			       size_t why_cap);

/* Checks every field and resolves defaults: prefix stripped of '/' at both
 * ends, addressing AUTO resolved, limits within S3's. Returns 0 or
 * FMT_E_INVALID with why. */
int s3_config_validate(struct s3_config *cfg, char *why, size_t why_cap);

static inline bool s3_config_enabled(const struct s3_config *cfg)
{
	return cfg->bucket[0] != 0;
}

/* ---- errors --------------------------------------------------------------------- */

enum s3_err_kind {
	S3_ERR_NONE = 0,
	S3_ERR_NETWORK,   /* no answer: DNS, refused, reset, TLS */
	S3_ERR_TIMEOUT,   /* connect, stall or request timeout; S3 RequestTimeout */
	S3_ERR_AUTH,      /* 401/403, bad or expired credentials, clock skew */
	S3_ERR_CHECKSUM,  /* BadDigest, XAmzContentSHA256Mismatch, ETag mismatch */
	S3_ERR_NOT_FOUND, /* 404: NoSuchBucket, NoSuchKey, NoSuchVersion, NoSuchUpload */
	S3_ERR_CLIENT,    /* any other 4xx, and 3xx (wrong region or endpoint) */
	S3_ERR_SERVER,    /* 5xx, SlowDown, an error inside a 200 answer */
	S3_ERR_LOCAL,     /* here: bad argument, file I/O, over a limit, no memory */
	S3_ERR_CANCELLED, /* the cancel flag was set */
	S3_ERR_KIND_COUNT
};

/* Return codes of remote failures: S3_E_BASE - kind. */
#define S3_E_BASE (-1200)
enum s3_rc {
	S3_E_NETWORK = S3_E_BASE - S3_ERR_NETWORK,
	S3_E_TIMEOUT = S3_E_BASE - S3_ERR_TIMEOUT,
	S3_E_AUTH = S3_E_BASE - S3_ERR_AUTH,
	S3_E_CHECKSUM = S3_E_BASE - S3_ERR_CHECKSUM,
	S3_E_NOT_FOUND = S3_E_BASE - S3_ERR_NOT_FOUND,
	S3_E_CLIENT = S3_E_BASE - S3_ERR_CLIENT,
	S3_E_SERVER = S3_E_BASE - S3_ERR_SERVER,
	S3_E_CANCELLED = S3_E_BASE - S3_ERR_CANCELLED,
};

struct s3_error {
	enum s3_err_kind kind;
	int rc;                                /* what the call returned */
	int http_status;                       /* 0: no HTTP answer */
	char code[S3_CODE_MAX + 1];            /* S3's <Code>, e.g. NoSuchBucket */
	char message[S3_MESSAGE_MAX + 1];      /* S3's <Message>, curl's or ours */
	char request_id[S3_REQUEST_ID_MAX + 1]; /* x-amz-request-id, for support */
	char operation[32];                    /* e.g. "UploadPart 3/12" */
};

/* Metric label of a kind: "none", "network", "timeout", "auth", "checksum",
 * "not_found", "client", "server", "local", "cancelled". */
const char *s3_err_kind_name(enum s3_err_kind kind);
/* All names, indexed by kind (S3_ERR_KIND_COUNT of them). */
extern const char *const s3_err_kind_names[S3_ERR_KIND_COUNT];

/* True when the same request may succeed later without an operator:
 * network, timeout, server, checksum (a body damaged on the way), and the
 * 4xx codes that mean "try again" (RequestTimeout, 429, OperationAborted,
 * RequestTimeTooSkewed is NOT one: fix the clock). */
bool s3_error_retryable(const struct s3_error *err);

/* The kind of an HTTP answer: status and S3 error code (may be ""). */
enum s3_err_kind s3_classify(int http_status, const char *code);

/* One line: "<operation>: <kind>: HTTP <status> <code>: <message>
 * (request id <id>)", the parts that are known. */
void s3_error_format(const struct s3_error *err, char *out, size_t cap);

/* A name for any code these functions return (S3_E_*, FMT_E_*, -errno). */
const char *s3_strerror(int rc);

/* ---- the pure request builder (s3_request.c) ------------------------------------ */

/* Percent-encodes in[0..len) with the SigV4 rules: A-Z a-z 0-9 - . _ ~ kept,
 * '/' kept when keep_slash (paths) and encoded otherwise (query values),
 * every other byte as %XX (upper-case hex). Writes a NUL-terminated string.
 * Returns its length, or FMT_E_TOO_BIG if out (cap bytes) is too small. */
int s3_uri_encode(char *out, size_t cap, const char *in, size_t len, bool keep_slash);

/* Checks an object key: 1..S3_KEY_BYTES_MAX bytes of valid UTF-8 without
 * NUL or control characters. Returns 0 or FMT_E_INVALID. */
int s3_key_check(const char *key);

/* The URL of key (NULL: the bucket itself) with a canonical query string
 * (without '?'; NULL or "" = none) for a validated cfg: path style
 * scheme://host/bucket/key, virtual-hosted scheme://bucket.host/key, the
 * key encoded by s3_uri_encode(keep_slash). Returns the length,
 * FMT_E_INVALID (a bad key) or FMT_E_TOO_BIG. */
int s3_object_url(const struct s3_config *cfg, const char *key, const char *query, char *out,
		  size_t cap);

/* The key of a segment (DESIGN.md §8):
 *   <prefix>/segments/<tenant>/<yyyy>/<mm>/<dd>/<segment-id>.hseg
 * prefix without leading/trailing '/' ("" = no prefix, no leading '/'),
 * tenant as fmt_tenant_valid() accepts, the date the UTC date of unix_ns
 * (any int64: 1677-09-21 .. 2262-04-11), segment_id as 16 lower-case hex
 * digits. Returns the length, FMT_E_INVALID (tenant, prefix) or
 * FMT_E_TOO_BIG (out too small). */
int s3_segment_key(char *out, size_t cap, const char *prefix, const char *tenant,
		   int64_t unix_ns, uint64_t segment_id);

/* Digests of a request body. */
struct s3_digests {
	uint8_t md5[16];
	char md5_b64[25];     /* Content-MD5 */
	char md5_hex[33];     /* what a single-PUT ETag holds */
	char sha256_hex[65];  /* x-amz-content-sha256 */
};

/* Of a buffer. Returns 0 or FMT_E_NOMEM. */
int s3_digest_buf(const void *data, size_t len, struct s3_digests *out);
/* Of fd's bytes [off, off+len), read with pread into buf (buf_cap bytes).
 * Returns 0, -errno, FMT_E_TRUNCATED (the file is shorter) or FMT_E_NOMEM. */
int s3_digest_fd(int fd, uint64_t off, uint64_t len, void *buf, size_t buf_cap,
		 struct s3_digests *out);

/* The ETag S3 gives a multipart object: hex MD5 of the concatenated binary
 * part MD5s, '-', the part count. out holds at least 44 bytes. */
void s3_multipart_etag(const uint8_t (*part_md5)[16], uint32_t parts, char *out, size_t cap);

/* How an object of `size` bytes is sent. */
struct s3_part_plan {
	bool multipart;
	uint32_t parts;          /* 1 for a single PUT */
	uint64_t part_bytes;     /* every part but the last */
	uint64_t last_part_bytes;
};

/* size <= threshold (or 0): one PUT. Above: parts of part_bytes; if that
 * needs more than S3_PARTS_MAX parts, the part grows to the smallest whole
 * MiB that fits in S3_PARTS_MAX parts. Returns 0, FMT_E_TOO_BIG (size over
 * object_bytes_max, or parts would exceed S3_PART_BYTES_MAX) or
 * FMT_E_INVALID (threshold over S3_PUT_BYTES_MAX, part_bytes out of
 * S3_PART_BYTES_MIN..S3_PART_BYTES_MAX). */
int s3_plan_parts(uint64_t size, uint64_t threshold, uint64_t part_bytes,
		  uint64_t object_bytes_max, struct s3_part_plan *out);

/* Bounded XML tag extraction — not an XML parser. S3 answers are small,
 * flat documents; we read a few leaf values out of them. Looks in
 * xml[0..len) (no NUL needed) for the first "<tag>" (exact name, no
 * attributes) or "<tag/>", and copies its text up to "</tag>" into out,
 * NUL-terminated, decoding the five named entities and &#N; / &#xN;
 * (as UTF-8). Text containing '<' (markup, CDATA, comments) is refused.
 * Returns the value's length, FMT_E_NOT_FOUND (no such tag),
 * FMT_E_TRUNCATED (no closing tag), FMT_E_CORRUPT (markup or a bad entity
 * inside) or FMT_E_TOO_BIG (longer than cap - 1); on an error out is "". */
int s3_xml_tag(const char *xml, size_t len, const char *tag, char *out, size_t cap);

/* Iterates the elements "<tag>...</tag>" of xml[0..len) from *pos: on 1,
 * [*elem, *elem + *elem_len) is the element's inside and *pos is past it.
 * Returns 1, 0 (no more) or FMT_E_TRUNCATED. */
int s3_xml_next(const char *xml, size_t len, size_t *pos, const char *tag, const char **elem,
		size_t *elem_len);

/* ---- the client (s3.c) ------------------------------------------------------------ */

struct s3_client;

/* Validates a copy of cfg (s3_config_validate), allocates every buffer
 * (S3) and one curl easy handle. Returns 0 with *out, FMT_E_INVALID
 * (err->message says why) or FMT_E_NOMEM. */
int s3_client_new(const struct s3_config *cfg, struct s3_client **out, struct s3_error *err);
/* Frees the client and closes its connections. NULL is a no-op. */
void s3_client_free(struct s3_client *c);

/* The validated configuration the client uses. */
const struct s3_config *s3_client_config(const struct s3_client *c);

/* Re-reads the credentials file (after a Secret rotation) into the
 * client; a no-op without one. Returns 0 or the loader's error. */
int s3_client_reload_credentials(struct s3_client *c, struct s3_error *err);

/* While *cancel is true, transfers in progress stop within a second with
 * S3_E_CANCELLED (shutdown). The flag is borrowed until the client is
 * freed or another flag is set; NULL removes it. */
void s3_client_set_cancel(struct s3_client *c, const atomic_bool *cancel);

/* Progress of the current upload or download: bytes done of total,
 * called from inside the calls below, on their thread. NULL removes it. */
typedef void (*s3_progress_fn)(void *ctx, uint64_t done_bytes, uint64_t total_bytes);
void s3_client_set_progress(struct s3_client *c, s3_progress_fn fn, void *ctx);

/* Counters of one client; readable from any thread (relaxed atomics). */
struct s3_stats {
	uint64_t requests;        /* HTTP requests sent */
	uint64_t bytes_sent;      /* object bytes uploaded and acknowledged */
	uint64_t bytes_received;  /* object bytes downloaded and checked */
	uint64_t errors[S3_ERR_KIND_COUNT]; /* failed operations, by kind (a HEAD
					     * of a missing key is not one) */
};
void s3_client_stats(const struct s3_client *c, struct s3_stats *out);

enum s3_versioning {
	S3_VERSIONING_ENABLED = 1,
	S3_VERSIONING_SUSPENDED = 2,
	S3_VERSIONING_NEVER = 3,     /* the bucket exists, versioning was never on */
	S3_VERSIONING_NO_BUCKET = 4,
};
/* "Enabled", "Suspended", "never enabled", "no such bucket". */
const char *s3_versioning_name(enum s3_versioning v);

/* GetBucketVersioning. Returns 0 with *state (a missing bucket is
 * NO_BUCKET, not an error), or an error (auth, network, ...). */
int s3_get_versioning(struct s3_client *c, enum s3_versioning *state, struct s3_error *err);

struct s3_put_result {
	char version_id[S3_VERSION_ID_MAX + 1]; /* "" when the bucket is not versioned */
	char etag[S3_ETAG_MAX + 1];             /* without quotes */
	uint64_t bytes;
	uint32_t parts;                         /* 1 for a single PUT */
	bool multipart;
};

/* Uploads fd's bytes [0, size) to key (the full key, prefix included:
 * s3_segment_key builds it) with metadata x-amz-meta-hodei-xxh3 =
 * checksum_meta (printable ASCII, <= S3_CHECKSUM_META_MAX; NULL = none).
 * fd must be a regular file of at least size bytes; it is read with pread
 * (the file offset is not used) and must not change during the call.
 * Single PUT up to the threshold, multipart above it (S4). Returns 0 with
 * *res, or an error; the fd stays the caller's. */
int s3_put_object_file(struct s3_client *c, const char *key, int fd, uint64_t size,
		       const char *checksum_meta, struct s3_put_result *res, struct s3_error *err);

struct s3_object_info {
	bool exists;                            /* HEAD: false on 404 */
	bool delete_marker;                     /* the latest version is a delete marker */
	uint64_t size;
	char version_id[S3_VERSION_ID_MAX + 1];
	char etag[S3_ETAG_MAX + 1];             /* without quotes */
	char checksum_meta[S3_CHECKSUM_META_MAX + 1]; /* "" when absent */
	char last_modified[64];                 /* as the server sent it */
};

/* HeadObject of key, of version_id (NULL = the latest). A missing key (or
 * version, or bucket: HEAD answers carry no body to tell) returns 0 with
 * info->exists false. */
int s3_head_object(struct s3_client *c, const char *key, const char *version_id,
		   struct s3_object_info *info, struct s3_error *err);

/* GetObject of key (version_id NULL = the latest) written to fd from its
 * current offset with write(2) (any fd: a file, a pipe). At most max_bytes
 * (0 = object_bytes_max): a larger object stops with FMT_E_TOO_BIG. When
 * the ETag is a plain MD5 (single-PUT objects) and verify_etag is on, the
 * bytes are checked against it: S3_E_CHECKSUM on mismatch. On error, some
 * bytes may have been written. info may be NULL. */
int s3_get_object_to_fd(struct s3_client *c, const char *key, const char *version_id, int fd,
			uint64_t max_bytes, struct s3_object_info *info, struct s3_error *err);

/* One entry of a version listing; pointers valid during the callback. */
struct s3_version {
	const char *key;
	const char *version_id;
	const char *etag;           /* without quotes; "" for delete markers */
	const char *last_modified;
	uint64_t size;
	bool is_latest;
	bool delete_marker;
};
/* Returns 0 to go on, anything else to stop the listing (returned as is). */
typedef int (*s3_version_fn)(void *ctx, const struct s3_version *v);

/* ListObjectVersions under prefix (the full prefix: "" = the whole
 * bucket), page by page (list_page_keys), in the server's order (key,
 * then newest version first). Returns 0, the callback's non-zero value,
 * or an error (FMT_E_CORRUPT if a page does not parse or the listing does
 * not move forward). */
int s3_list_object_versions(struct s3_client *c, const char *prefix, s3_version_fn fn, void *ctx,
			    struct s3_error *err);

#endif
