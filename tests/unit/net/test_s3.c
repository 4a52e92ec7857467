// SPDX-License-Identifier: Apache-2.0
/*
 * test_s3.c — the request builder of the S3 client (net/s3_request.c):
 * SigV4 key encoding, URLs in both addressing styles, segment key layout
 * and its dates (leap years, epoch 0, both ends of int64 ns), Content-MD5
 * and x-amz-content-sha256 of known inputs, multipart ETags, the part plan
 * at and around every limit, configuration from the environment and from
 * a credentials file, bounded XML tag extraction on truncated and hostile
 * input, error classification. The transport (net/s3.c) is tested against
 * a real S3 endpoint by tests/integration/test_s3_client.py.
 *
 * Criterion forks a process per test, so setenv() here stays in its test.
 */
#include <criterion/criterion.h>

#include "format/common.h"
#include "net/s3.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MIB (1ull << 20)
#define GIB (1ull << 30)
#define TIB (1ull << 40)

/* ---- key encoding ------------------------------------------------------------ */

static const char *enc(const char *in, bool keep_slash)
{
	static char out[4096];
	int n = s3_uri_encode(out, sizeof(out), in, strlen(in), keep_slash);
	cr_assert(n >= 0, "encode %s", in);
	cr_assert_eq((size_t)n, strlen(out));
	return out;
}

Test(s3_encode, unreserved_kept_everything_else_percent_upper_hex)
{
	cr_assert_str_eq(enc("AZaz09-._~", true), "AZaz09-._~");
	cr_assert_str_eq(enc("a b", true), "a%20b");
	cr_assert_str_eq(enc("a+b", true), "a%2Bb");
	cr_assert_str_eq(enc("100%", true), "100%25");
	cr_assert_str_eq(enc("ü", true), "%C3%BC");
	cr_assert_str_eq(enc("€/x", true), "%E2%82%AC/x");
	cr_assert_str_eq(enc("😀", true), "%F0%9F%98%80");
	cr_assert_str_eq(enc("a=b&c?d#e", true), "a%3Db%26c%3Fd%23e");
	cr_assert_str_eq(enc("*'()!$,;:@", true), "%2A%27%28%29%21%24%2C%3B%3A%40");
	cr_assert_str_eq(enc("\x7f\x01", true), "%7F%01");
}

Test(s3_encode, slash_kept_in_paths_encoded_in_query_values)
{
	cr_assert_str_eq(enc("p/segments/t/x.hseg", true), "p/segments/t/x.hseg");
	cr_assert_str_eq(enc("a/b", false), "a%2Fb");
	cr_assert_str_eq(enc("//", true), "//");
	cr_assert_str_eq(enc("", true), "");
}

Test(s3_encode, output_bound)
{
	char out[8];
	cr_assert_eq(s3_uri_encode(out, sizeof(out), "abcdefg", 7, true), 7); /* exact fit */
	cr_assert_eq(s3_uri_encode(out, sizeof(out), "abcdefgh", 8, true), FMT_E_TOO_BIG);
	cr_assert_eq(s3_uri_encode(out, 7, "ab cd", 5, true), FMT_E_TOO_BIG); /* 7 + NUL */
	cr_assert_eq(s3_uri_encode(out, 8, "ab cd", 5, true), 7);
	cr_assert_str_eq(out, "ab%20cd");
	cr_assert_eq(s3_uri_encode(out, 1, "", 0, true), 0);
	cr_assert_eq(s3_uri_encode(out, 0, "", 0, true), FMT_E_TOO_BIG);
}

Test(s3_encode, key_check)
{
	char key[S3_KEY_BYTES_MAX + 2];
	memset(key, 'k', sizeof(key));
	key[S3_KEY_BYTES_MAX] = 0;
	cr_assert_eq(s3_key_check(key), 0);
	key[S3_KEY_BYTES_MAX] = 'k';
	key[S3_KEY_BYTES_MAX + 1] = 0;
	cr_assert_eq(s3_key_check(key), FMT_E_INVALID);
	cr_assert_eq(s3_key_check(""), FMT_E_INVALID);
	cr_assert_eq(s3_key_check("a\nb"), FMT_E_INVALID);
	cr_assert_eq(s3_key_check("a\x7f"), FMT_E_INVALID);
	cr_assert_eq(s3_key_check("\xc3"), FMT_E_INVALID);        /* cut UTF-8 */
	cr_assert_eq(s3_key_check("\xed\xa0\x80"), FMT_E_INVALID); /* surrogate */
	cr_assert_eq(s3_key_check("ünïcödé €/😀 +%~"), 0);
}

/* ---- URLs --------------------------------------------------------------------- */

static struct s3_config url_cfg(const char *endpoint, enum s3_addressing a)
{
	struct s3_config cfg;
	s3_config_default(&cfg);
	snprintf(cfg.endpoint, sizeof(cfg.endpoint), "%s", endpoint);
	snprintf(cfg.bucket, sizeof(cfg.bucket), "audit-bucket");
	snprintf(cfg.access_key, sizeof(cfg.access_key), "AKID");
	snprintf(cfg.secret_key, sizeof(cfg.secret_key), "secret");
	cfg.addressing = a;
	char why[256];
	cr_assert_eq(s3_config_validate(&cfg, why, sizeof(why)), 0, "%s", why);
	return cfg;
}

Test(s3_url, path_style)
{
	struct s3_config cfg = url_cfg("http://127.0.0.1:9000/", S3_ADDR_AUTO);
	cr_assert_eq(cfg.addressing, S3_ADDR_PATH);
	char url[8192];
	cr_assert(s3_object_url(&cfg, "a b/ü+.hseg", NULL, url, sizeof(url)) > 0);
	cr_assert_str_eq(url, "http://127.0.0.1:9000/audit-bucket/a%20b/%C3%BC%2B.hseg");
	cr_assert(s3_object_url(&cfg, NULL, "versioning=", url, sizeof(url)) > 0);
	cr_assert_str_eq(url, "http://127.0.0.1:9000/audit-bucket?versioning=");
	cr_assert(s3_object_url(&cfg, "k", "partNumber=1&uploadId=x%2By", url, sizeof(url)) > 0);
	cr_assert_str_eq(url, "http://127.0.0.1:9000/audit-bucket/k?partNumber=1&uploadId=x%2By");
}

Test(s3_url, virtual_hosted_and_aws_default)
{
	struct s3_config cfg = url_cfg("", S3_ADDR_AUTO);
	cr_assert_eq(cfg.addressing, S3_ADDR_VIRTUAL);
	char url[8192];
	cr_assert(s3_object_url(&cfg, "x/y", "", url, sizeof(url)) > 0);
	cr_assert_str_eq(url, "https://audit-bucket.s3.us-east-1.amazonaws.com/x/y");
	cr_assert(s3_object_url(&cfg, NULL, "versioning=", url, sizeof(url)) > 0);
	cr_assert_str_eq(url, "https://audit-bucket.s3.us-east-1.amazonaws.com/?versioning=");
	struct s3_config minio = url_cfg("https://minio.example:9443", S3_ADDR_VIRTUAL);
	cr_assert(s3_object_url(&minio, "k", NULL, url, sizeof(url)) > 0);
	cr_assert_str_eq(url, "https://audit-bucket.minio.example:9443/k");
	cr_assert_eq(s3_object_url(&minio, "", NULL, url, sizeof(url)), FMT_E_INVALID);
	cr_assert_eq(s3_object_url(&minio, "k", NULL, url, 20), FMT_E_TOO_BIG);
}

/* ---- segment keys --------------------------------------------------------------- */

static const char *seg_key(const char *prefix, const char *tenant, int64_t ns, uint64_t id)
{
	static char out[S3_KEY_BYTES_MAX + 1];
	int n = s3_segment_key(out, sizeof(out), prefix, tenant, ns, id);
	cr_assert(n > 0, "segment key: %d", n);
	cr_assert_eq((size_t)n, strlen(out));
	return out;
}

#define NS_PER_DAY (86400ll * 1000000000ll)

Test(s3_segment_key, layout_and_dates)
{
	cr_assert_str_eq(seg_key("prod/eu", "acme", 0, 1),
			 "prod/eu/segments/acme/1970/01/01/0000000000000001.hseg");
	cr_assert_str_eq(seg_key("", "acme", 0, 0xfedcba9876543210ull),
			 "segments/acme/1970/01/01/fedcba9876543210.hseg");
	cr_assert_str_eq(seg_key("p", "t", -1, UINT64_MAX),
			 "p/segments/t/1969/12/31/ffffffffffffffff.hseg");
	/* 2024-02-29T23:59:59.999999999Z and the next nanosecond. */
	int64_t leap = 1709251199ll * 1000000000ll + 999999999ll;
	cr_assert_str_eq(seg_key("p", "t", leap, 2), "p/segments/t/2024/02/29/0000000000000002.hseg");
	cr_assert_str_eq(seg_key("p", "t", leap + 1, 2), "p/segments/t/2024/03/01/0000000000000002.hseg");
	/* 2000 is a leap year (divisible by 400), 2100 is not. */
	int64_t y2000_feb28 = 951696000ll * 1000000000ll;
	cr_assert_str_eq(seg_key("p", "t", y2000_feb28 + NS_PER_DAY, 3),
			 "p/segments/t/2000/02/29/0000000000000003.hseg");
	int64_t y2100_feb28 = 4107456000ll * 1000000000ll;
	cr_assert_str_eq(seg_key("p", "t", y2100_feb28 + NS_PER_DAY, 3),
			 "p/segments/t/2100/03/01/0000000000000003.hseg");
	/* Both ends of int64 nanoseconds. */
	cr_assert_str_eq(seg_key("p", "t", INT64_MAX, 4), "p/segments/t/2262/04/11/0000000000000004.hseg");
	cr_assert_str_eq(seg_key("p", "t", INT64_MIN, 4), "p/segments/t/1677/09/21/0000000000000004.hseg");
	cr_assert_str_eq(seg_key("p", "a.b_c-D9", 0, 5), "p/segments/a.b_c-D9/1970/01/01/0000000000000005.hseg");
}

Test(s3_segment_key, refusals)
{
	char out[256];
	cr_assert_eq(s3_segment_key(out, sizeof(out), "p", "", 0, 1), FMT_E_INVALID);
	cr_assert_eq(s3_segment_key(out, sizeof(out), "p", "a/b", 0, 1), FMT_E_INVALID);
	cr_assert_eq(s3_segment_key(out, sizeof(out), "p", "ü", 0, 1), FMT_E_INVALID);
	char long_tenant[66];
	memset(long_tenant, 't', 65);
	long_tenant[65] = 0;
	cr_assert_eq(s3_segment_key(out, sizeof(out), "p", long_tenant, 0, 1), FMT_E_INVALID);
	long_tenant[64] = 0;
	cr_assert(s3_segment_key(out, sizeof(out), "p", long_tenant, 0, 1) > 0);
	cr_assert_eq(s3_segment_key(out, sizeof(out), "/p", "t", 0, 1), FMT_E_INVALID);
	cr_assert_eq(s3_segment_key(out, sizeof(out), "p/", "t", 0, 1), FMT_E_INVALID);
	cr_assert_eq(s3_segment_key(out, sizeof(out), "p\n", "t", 0, 1), FMT_E_INVALID);
	/* "p/segments/t/1970/01/01/0000000000000001.hseg" is 45 bytes. */
	cr_assert_eq(s3_segment_key(out, 45, "p", "t", 0, 1), FMT_E_TOO_BIG);
	cr_assert_eq(s3_segment_key(out, 46, "p", "t", 0, 1), 45);
}

/* ---- digests ------------------------------------------------------------------------ */

static void digest_is(const char *data, const char *md5_b64, const char *md5_hex, const char *sha)
{
	struct s3_digests d;
	cr_assert_eq(s3_digest_buf(data, strlen(data), &d), 0);
	cr_assert_str_eq(d.md5_b64, md5_b64);
	cr_assert_str_eq(d.md5_hex, md5_hex);
	cr_assert_str_eq(d.sha256_hex, sha);
}

Test(s3_digest, known_values)
{
	digest_is("", "1B2M2Y8AsgTpgAmY7PhCfg==", "d41d8cd98f00b204e9800998ecf8427e",
		  "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	digest_is("abc", "kAFQmDzST7DWlj99KOF/cg==", "900150983cd24fb0d6963f7d28e17f72",
		  "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	digest_is("The quick brown fox jumps over the lazy dog", "nhB9nTcrtoJr2B01QqQZ1g==",
		  "9e107d9d372bb6826bd81d3542a419d6",
		  "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592");
}

static int temp_file(const void *data, size_t len)
{
	const char *dir = getenv("HODEI_TEST_TMP");
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/s3-digest-XXXXXX", dir && *dir ? dir : "/tmp");
	int fd = mkstemp(path);
	cr_assert(fd >= 0);
	unlink(path);
	cr_assert_eq(write(fd, data, len), (ssize_t)len);
	return fd;
}

Test(s3_digest, fd_ranges_equal_buffers)
{
	char data[1000];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (char)(i * 7 + 3);
	int fd = temp_file(data, sizeof(data));
	char buf[7]; /* an odd, tiny buffer: many short reads */
	const uint64_t ranges[][2] = { { 0, 1000 }, { 0, 0 }, { 13, 500 }, { 999, 1 }, { 1000, 0 } };
	for (size_t i = 0; i < FMT_ARRAY_LEN(ranges); i++) {
		struct s3_digests a, b;
		cr_assert_eq(s3_digest_fd(fd, ranges[i][0], ranges[i][1], buf, sizeof(buf), &a), 0);
		cr_assert_eq(s3_digest_buf(data + ranges[i][0], ranges[i][1], &b), 0);
		cr_assert_str_eq(a.sha256_hex, b.sha256_hex);
		cr_assert_str_eq(a.md5_b64, b.md5_b64);
	}
	struct s3_digests d;
	cr_assert_eq(s3_digest_fd(fd, 900, 101, buf, sizeof(buf), &d), FMT_E_TRUNCATED);
	close(fd);
	cr_assert_eq(s3_digest_fd(fd, 0, 1, buf, sizeof(buf), &d), -EBADF);
}

Test(s3_digest, multipart_etag)
{
	struct s3_digests a, b;
	cr_assert_eq(s3_digest_buf("abc", 3, &a), 0);
	cr_assert_eq(s3_digest_buf("def", 3, &b), 0);
	uint8_t md5s[2][16];
	memcpy(md5s[0], a.md5, 16);
	memcpy(md5s[1], b.md5, 16);
	char etag[48];
	s3_multipart_etag((const uint8_t(*)[16])md5s, 2, etag, sizeof(etag));
	cr_assert_str_eq(etag, "4c8e93283780e078db9e0c6b9b3f8043-2");
}

/* ---- multipart plan -------------------------------------------------------------------- */

static struct s3_part_plan plan(uint64_t size, uint64_t thr, uint64_t part)
{
	struct s3_part_plan p;
	cr_assert_eq(s3_plan_parts(size, thr, part, S3_OBJECT_BYTES_MAX, &p), 0, "size %llu",
		     (unsigned long long)size);
	cr_assert(p.parts >= 1 && p.parts <= S3_PARTS_MAX);
	cr_assert_eq((p.parts - 1) * p.part_bytes + p.last_part_bytes, size);
	if (p.multipart) {
		cr_assert(p.part_bytes >= S3_PART_BYTES_MIN && p.part_bytes <= S3_PART_BYTES_MAX);
		cr_assert(p.last_part_bytes >= 1 && p.last_part_bytes <= p.part_bytes);
	}
	return p;
}

Test(s3_plan, threshold_edges)
{
	struct s3_part_plan p = plan(0, 64 * MIB, 16 * MIB);
	cr_assert(!(p.multipart));
	cr_assert_eq(p.parts, 1);
	p = plan(64 * MIB, 64 * MIB, 16 * MIB); /* exactly at the threshold: one PUT */
	cr_assert(!(p.multipart));
	cr_assert_eq(p.last_part_bytes, 64 * MIB);
	p = plan(64 * MIB + 1, 64 * MIB, 16 * MIB); /* one byte over: multipart */
	cr_assert(p.multipart);
	cr_assert_eq(p.parts, 5);
	cr_assert_eq(p.part_bytes, 16 * MIB);
	cr_assert_eq(p.last_part_bytes, 1);
	p = plan(6 * MIB, 5 * MIB, 5 * MIB);
	cr_assert_eq(p.parts, 2);
	cr_assert_eq(p.last_part_bytes, 1 * MIB);
	p = plan(7 * MIB, 6 * MIB, 16 * MIB); /* one part, shorter than part_bytes */
	cr_assert(p.multipart);
	cr_assert_eq(p.parts, 1);
	cr_assert_eq(p.last_part_bytes, 7 * MIB);
	p = plan(1, 0, 5 * MIB); /* threshold 0: every non-empty object multipart */
	cr_assert(p.multipart);
	p = plan(5 * GIB, 5 * GIB, 16 * MIB); /* the largest single PUT */
	cr_assert(!(p.multipart));
}

Test(s3_plan, ten_thousand_parts)
{
	struct s3_part_plan p = plan(10000 * 5 * MIB, 64 * MIB, 5 * MIB);
	cr_assert_eq(p.parts, 10000);
	cr_assert_eq(p.part_bytes, 5 * MIB);
	p = plan(10000 * 5 * MIB + 1, 64 * MIB, 5 * MIB); /* would need 10,001: parts grow */
	cr_assert_eq(p.part_bytes, 6 * MIB);
	cr_assert_eq(p.parts, 8334);
	p = plan(100 * GIB, 64 * MIB, 5 * MIB);
	cr_assert_eq(p.part_bytes, 11 * MIB);
	cr_assert_eq(p.parts, 9310);
	p = plan(5 * TIB, 64 * MIB, 5 * MIB); /* the largest object */
	cr_assert_eq(p.part_bytes, 525 * MIB);
	cr_assert_eq(p.parts, 9987);
}

Test(s3_plan, refusals)
{
	struct s3_part_plan p;
	cr_assert_eq(s3_plan_parts(5 * TIB + 1, 64 * MIB, 16 * MIB, S3_OBJECT_BYTES_MAX, &p),
		     FMT_E_TOO_BIG);
	cr_assert_eq(s3_plan_parts(101, 64 * MIB, 16 * MIB, 100, &p), FMT_E_TOO_BIG);
	cr_assert_eq(s3_plan_parts(100, 64 * MIB, 16 * MIB, 100, &p), 0);
	cr_assert_eq(s3_plan_parts(1, 64 * MIB, 5 * MIB - 1, S3_OBJECT_BYTES_MAX, &p), FMT_E_INVALID);
	cr_assert_eq(s3_plan_parts(1, 64 * MIB, 5 * GIB + 1, S3_OBJECT_BYTES_MAX, &p), FMT_E_INVALID);
	cr_assert_eq(s3_plan_parts(1, 5 * GIB + 1, 16 * MIB, S3_OBJECT_BYTES_MAX, &p), FMT_E_INVALID);
}

/* ---- configuration ---------------------------------------------------------------------- */

static char why[512];

Test(s3_config, defaults_and_environment)
{
	struct s3_config cfg;
	cr_assert_eq(s3_config_from_env(&cfg, why, sizeof(why)), 0, "%s", why);
	cr_assert(!(s3_config_enabled(&cfg)));
	cr_assert_str_eq(cfg.region, "us-east-1");
	cr_assert_eq(cfg.multipart_threshold_bytes, 64 * MIB);
	cr_assert_eq(cfg.part_bytes, 16 * MIB);
	setenv("HODEI_S3_ENDPOINT", "http://127.0.0.1:9000", 1);
	setenv("HODEI_S3_BUCKET", "b1", 1);
	setenv("HODEI_S3_PREFIX", "/prod/eu/", 1);
	setenv("HODEI_S3_REGION", "eu-west-3", 1);
	setenv("HODEI_S3_MULTIPART_THRESHOLD", "8MiB", 1);
	setenv("HODEI_S3_PART_SIZE", "6M", 1);
	setenv("HODEI_S3_STALL_TIMEOUT", "2m", 1);
	setenv("HODEI_S3_TIMEOUT", "1500ms", 1);
	setenv("HODEI_S3_VERIFY_ETAG", "false", 1);
	setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", 1);
	setenv("AWS_SESSION_TOKEN", "token123", 1);
	cr_assert_eq(s3_config_from_env(&cfg, why, sizeof(why)), 0, "%s", why);
	cr_assert(s3_config_enabled(&cfg));
	cr_assert_eq(s3_config_validate(&cfg, why, sizeof(why)), 0, "%s", why);
	cr_assert_str_eq(cfg.endpoint, "http://127.0.0.1:9000");
	cr_assert_str_eq(cfg.prefix, "prod/eu");
	cr_assert_str_eq(cfg.region, "eu-west-3");
	cr_assert_eq(cfg.addressing, S3_ADDR_PATH);
	cr_assert_eq(cfg.multipart_threshold_bytes, 8 * MIB);
	cr_assert_eq(cfg.part_bytes, 6 * MIB);
	cr_assert_eq(cfg.stall_timeout_s, 120);
	cr_assert_eq(cfg.timeout_s, 2);
	cr_assert(!(cfg.verify_etag));
	cr_assert_str_eq(cfg.secret_key, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
	cr_assert_str_eq(cfg.session_token, "token123");
	setenv("HODEI_S3_PATH_STYLE", "0", 1);
	cr_assert_eq(s3_config_from_env(&cfg, why, sizeof(why)), 0);
	cr_assert_eq(cfg.addressing, S3_ADDR_VIRTUAL);
	setenv("HODEI_S3_PATH_STYLE", "auto", 1);
	cr_assert_eq(s3_config_from_env(&cfg, why, sizeof(why)), 0);
	cr_assert_eq(cfg.addressing, S3_ADDR_AUTO);
}

Test(s3_config, bad_values_name_their_variable)
{
	struct s3_config cfg;
	static const char *const cases[][2] = {
		{ "HODEI_S3_PART_SIZE", "16XB" },      { "HODEI_S3_PART_SIZE", "-1" },
		{ "HODEI_S3_MULTIPART_THRESHOLD", "99999999999999999999" },
		{ "HODEI_S3_TIMEOUT", "10 s" },        { "HODEI_S3_PATH_STYLE", "maybe" },
		{ "HODEI_S3_VERIFY_ETAG", "2" },       { "HODEI_S3_LIST_PAGE_KEYS", "x" },
	};
	for (size_t i = 0; i < FMT_ARRAY_LEN(cases); i++) {
		setenv(cases[i][0], cases[i][1], 1);
		why[0] = 0;
		cr_assert_eq(s3_config_from_env(&cfg, why, sizeof(why)), FMT_E_INVALID, "%s=%s",
			     cases[i][0], cases[i][1]);
		cr_assert(strstr(why, cases[i][0]), "why: %s", why);
		unsetenv(cases[i][0]);
	}
	char big[S3_BUCKET_MAX + 10];
	memset(big, 'b', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	setenv("HODEI_S3_BUCKET", big, 1);
	cr_assert_eq(s3_config_from_env(&cfg, why, sizeof(why)), FMT_E_INVALID);
	cr_assert(strstr(why, "HODEI_S3_BUCKET"));
}

static struct s3_config valid_cfg(void)
{
	struct s3_config cfg;
	s3_config_default(&cfg);
	snprintf(cfg.endpoint, sizeof(cfg.endpoint), "http://127.0.0.1:9000");
	snprintf(cfg.bucket, sizeof(cfg.bucket), "bucket");
	snprintf(cfg.access_key, sizeof(cfg.access_key), "AKID");
	snprintf(cfg.secret_key, sizeof(cfg.secret_key), "secret");
	return cfg;
}

Test(s3_config, validation)
{
	static const char *const good_endpoints[] = {
		"http://127.0.0.1:9000", "https://s3.example.com", "http://[::1]:9000/",
		"https://minio-0.minio.svc.cluster.local:9000",
	};
	static const char *const bad_endpoints[] = {
		"ftp://h", "http://", "http://h:0", "http://h:65536", "http://h/path",
		"http://user@h", "h:9000", "http://h:9000?x", "http://[]:1",
	};
	for (size_t i = 0; i < FMT_ARRAY_LEN(good_endpoints); i++) {
		struct s3_config cfg = valid_cfg();
		snprintf(cfg.endpoint, sizeof(cfg.endpoint), "%s", good_endpoints[i]);
		cr_assert_eq(s3_config_validate(&cfg, why, sizeof(why)), 0, "%s: %s", good_endpoints[i], why);
	}
	for (size_t i = 0; i < FMT_ARRAY_LEN(bad_endpoints); i++) {
		struct s3_config cfg = valid_cfg();
		snprintf(cfg.endpoint, sizeof(cfg.endpoint), "%s", bad_endpoints[i]);
		cr_assert_eq(s3_config_validate(&cfg, why, sizeof(why)), FMT_E_INVALID, "%s",
			     bad_endpoints[i]);
	}
	struct s3_config cfg = valid_cfg();
	snprintf(cfg.bucket, sizeof(cfg.bucket), "Legacy_Bucket");
	cr_assert_eq(s3_config_validate(&cfg, why, sizeof(why)), 0); /* path style allows it */
	cfg = valid_cfg();
	snprintf(cfg.bucket, sizeof(cfg.bucket), "Legacy_Bucket");
	cfg.addressing = S3_ADDR_VIRTUAL;
	cr_assert_eq(s3_config_validate(&cfg, why, sizeof(why)), FMT_E_INVALID);
	cr_assert(strstr(why, "path style"));
	cfg = valid_cfg();
	cfg.bucket[0] = 0;
	cr_assert_eq(s3_config_validate(&cfg, why, sizeof(why)), FMT_E_INVALID);
	cfg = valid_cfg();
	cfg.secret_key[0] = 0;
	cr_assert_eq(s3_config_validate(&cfg, why, sizeof(why)), FMT_E_INVALID);
	cr_assert(strstr(why, "credentials"));
	cfg = valid_cfg();
	snprintf(cfg.session_token, sizeof(cfg.session_token), "tok\r\nX-Injected: 1");
	cr_assert_eq(s3_config_validate(&cfg, why, sizeof(why)), FMT_E_INVALID);
	cfg = valid_cfg();
	snprintf(cfg.region, sizeof(cfg.region), "us:east");
	cr_assert_eq(s3_config_validate(&cfg, why, sizeof(why)), FMT_E_INVALID);
	cfg = valid_cfg();
	cfg.part_bytes = 4 * MIB;
	cr_assert_eq(s3_config_validate(&cfg, why, sizeof(why)), FMT_E_INVALID);
	cfg = valid_cfg();
	cfg.multipart_threshold_bytes = 6 * GIB;
	cr_assert_eq(s3_config_validate(&cfg, why, sizeof(why)), FMT_E_INVALID);
	cfg = valid_cfg();
	snprintf(cfg.prefix, sizeof(cfg.prefix), "///");
	cr_assert_eq(s3_config_validate(&cfg, why, sizeof(why)), 0);
	cr_assert_str_eq(cfg.prefix, "");
}

/* ---- credentials file --------------------------------------------------------------------- */

static const char *write_creds(const char *text)
{
	static char path[PATH_MAX];
	const char *dir = getenv("HODEI_TEST_TMP");
	snprintf(path, sizeof(path), "%s/s3-creds-XXXXXX", dir && *dir ? dir : "/tmp");
	int fd = mkstemp(path);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

static int load(const char *text, struct s3_config *cfg)
{
	s3_config_default(cfg);
	const char *p = write_creds(text);
	why[0] = 0;
	int rc = s3_config_load_credentials(cfg, p, why, sizeof(why));
	unlink(p);
	return rc;
}

Test(s3_credentials, key_value_lines)
{
	struct s3_config cfg;
	cr_assert_eq(load("# a Kubernetes Secret\r\nAWS_ACCESS_KEY_ID=AKID1\r\n"
			  "export AWS_SECRET_ACCESS_KEY = \"se/cr+et\"\r\n\r\n"
			  "AWS_SESSION_TOKEN='tok'\r\nAWS_REGION=ignored\r\n", &cfg), 0, "%s", why);
	cr_assert_str_eq(cfg.access_key, "AKID1");
	cr_assert_str_eq(cfg.secret_key, "se/cr+et");
	cr_assert_str_eq(cfg.session_token, "tok");
}

Test(s3_credentials, shared_credentials_ini_and_profiles)
{
	static const char ini[] = "[other]\naws_access_key_id = OTHER\naws_secret_access_key = O\n"
				  "; comment\n[default]\naws_access_key_id = DEF\n"
				  "aws_secret_access_key = D\nregion = eu-west-1\n"
				  "[profile ops]\naws_access_key_id = OPS\naws_secret_access_key = P\n";
	struct s3_config cfg;
	cr_assert_eq(load(ini, &cfg), 0, "%s", why);
	cr_assert_str_eq(cfg.access_key, "DEF");
	cr_assert_str_eq(cfg.secret_key, "D");
	setenv("AWS_PROFILE", "ops", 1);
	cr_assert_eq(load(ini, &cfg), 0, "%s", why);
	cr_assert_str_eq(cfg.access_key, "OPS");
	setenv("AWS_PROFILE", "other", 1);
	cr_assert_eq(load(ini, &cfg), 0, "%s", why);
	cr_assert_str_eq(cfg.access_key, "OTHER");
}

Test(s3_credentials, refusals)
{
	struct s3_config cfg;
	cr_assert_eq(load("AWS_ACCESS_KEY_ID=only\n", &cfg), FMT_E_INVALID);
	cr_assert(strstr(why, "aws_secret_access_key"), "%s", why);
	cr_assert_str_eq(cfg.access_key, ""); /* nothing half-loaded */
	cr_assert_eq(load("AWS_ACCESS_KEY_ID=a b\nAWS_SECRET_ACCESS_KEY=s\n", &cfg), FMT_E_INVALID);
	cr_assert(strstr(why, "line 1"), "%s", why);
	cr_assert_eq(load("garbage line\n", &cfg), FMT_E_INVALID);
	cr_assert_eq(load("[default\nAWS_ACCESS_KEY_ID=a\n", &cfg), FMT_E_INVALID);
	cr_assert_eq(load("", &cfg), FMT_E_INVALID);
	char *huge = malloc(70000);
	memset(huge, '#', 69999);
	huge[69999] = 0;
	cr_assert_eq(load(huge, &cfg), FMT_E_INVALID);
	cr_assert(strstr(why, "larger than"), "%s", why);
	free(huge);
	s3_config_default(&cfg);
	cr_assert_eq(s3_config_load_credentials(&cfg, "/nonexistent/creds", why, sizeof(why)), -ENOENT);
}

Test(s3_credentials, the_file_wins_over_the_variables)
{
	const char *p = write_creds("AWS_ACCESS_KEY_ID=FROMFILE\nAWS_SECRET_ACCESS_KEY=F\n");
	setenv("HODEI_S3_CREDENTIALS_FILE", p, 1);
	setenv("AWS_ACCESS_KEY_ID", "FROMENV", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "E", 1);
	struct s3_config cfg;
	cr_assert_eq(s3_config_from_env(&cfg, why, sizeof(why)), 0, "%s", why);
	cr_assert_str_eq(cfg.access_key, "FROMFILE");
	cr_assert_str_eq(cfg.credentials_file, p);
	unlink(p);
	cr_assert_eq(s3_config_from_env(&cfg, why, sizeof(why)), -ENOENT);
}

/* ---- XML tags -------------------------------------------------------------------------------- */

static int tag(const char *xml, const char *name, char *out, size_t cap)
{
	return s3_xml_tag(xml, strlen(xml), name, out, cap);
}

Test(s3_xml, values_and_entities)
{
	char out[128];
	static const char err[] = "<?xml version=\"1.0\"?>\n<Error><Code>NoSuchBucket</Code>"
				  "<Message>The bucket &lt;b&gt; &amp; &apos;x&apos; does not exist"
				  "</Message><RequestId>4442587FB7D0A2F9</RequestId></Error>";
	cr_assert_eq(tag(err, "Code", out, sizeof(out)), 12);
	cr_assert_str_eq(out, "NoSuchBucket");
	cr_assert(tag(err, "Message", out, sizeof(out)) > 0);
	cr_assert_str_eq(out, "The bucket <b> & 'x' does not exist");
	cr_assert_eq(tag("<ETag>&quot;abc-2&quot;</ETag>", "ETag", out, sizeof(out)), 7);
	cr_assert_str_eq(out, "\"abc-2\"");
	cr_assert_eq(tag("<K>&#233;&#xE9;&#X1F600;</K>", "K", out, sizeof(out)), 8);
	cr_assert_str_eq(out, "éé😀");
	/* A tag whose name starts like another: <CodeX> is not <Code>. */
	cr_assert_eq(tag("<CodeX>no</CodeX><Code>yes</Code>", "Code", out, sizeof(out)), 3);
	cr_assert_str_eq(out, "yes");
	cr_assert_eq(tag("<Status/>", "Status", out, sizeof(out)), 0);
	cr_assert_eq(tag("<Status></Status>", "Status", out, sizeof(out)), 0);
	cr_assert_eq(tag("<A>x</A>", "Status", out, sizeof(out)), FMT_E_NOT_FOUND);
	cr_assert_eq(tag("", "Status", out, sizeof(out)), FMT_E_NOT_FOUND);
}

Test(s3_xml, truncated_and_hostile)
{
	char out[16];
	cr_assert_eq(tag("<Code>NoSuch", "Code", out, sizeof(out)), FMT_E_TRUNCATED);
	cr_assert_eq(tag("<Code>NoSuch</Co", "Code", out, sizeof(out)), FMT_E_TRUNCATED);
	cr_assert_eq(tag("<Code>x&am", "Code", out, sizeof(out)), FMT_E_TRUNCATED);
	cr_assert_eq(tag("<Co", "Code", out, sizeof(out)), FMT_E_NOT_FOUND);
	cr_assert_eq(tag("<Code>a<b>x</b></Code>", "Code", out, sizeof(out)), FMT_E_CORRUPT);
	cr_assert_eq(tag("<Code><![CDATA[x]]></Code>", "Code", out, sizeof(out)), FMT_E_CORRUPT);
	cr_assert_eq(tag("<Code>x</Cod>", "Code", out, sizeof(out)), FMT_E_CORRUPT);
	cr_assert_eq(tag("<Code>x</CodeX>", "Code", out, sizeof(out)), FMT_E_CORRUPT);
	cr_assert_eq(tag("<Code>&bogus;</Code>", "Code", out, sizeof(out)), FMT_E_CORRUPT);
	cr_assert_eq(tag("<Code>&#0;</Code>", "Code", out, sizeof(out)), FMT_E_CORRUPT);
	cr_assert_eq(tag("<Code>&#xD800;</Code>", "Code", out, sizeof(out)), FMT_E_CORRUPT);
	cr_assert_eq(tag("<Code>&#x110000;</Code>", "Code", out, sizeof(out)), FMT_E_CORRUPT);
	cr_assert_eq(tag("<Code>&#99999999999;</Code>", "Code", out, sizeof(out)), FMT_E_CORRUPT);
	cr_assert_eq(tag("<Code>&#;</Code>", "Code", out, sizeof(out)), FMT_E_CORRUPT);
	cr_assert_eq(tag("<Code>0123456789abcdef</Code>", "Code", out, sizeof(out)), FMT_E_TOO_BIG);
	cr_assert_str_eq(out, ""); /* never a half value */
	cr_assert_eq(tag("<Code>0123456789abcde</Code>", "Code", out, sizeof(out)), 15);
	cr_assert_eq(tag("<Code>0123456789abcd&#233;</Code>", "Code", out, sizeof(out)),
		     FMT_E_TOO_BIG);
	/* The length bounds the search: a value past len is not seen. */
	static const char doc[] = "<Code>abc</Code>";
	cr_assert_eq(s3_xml_tag(doc, 10, "Code", out, sizeof(out)), FMT_E_TRUNCATED);
}

Test(s3_xml, every_truncation_and_random_bytes_are_safe)
{
	static const char doc[] = "<ListVersionsResult><IsTruncated>false</IsTruncated>"
				  "<Version><Key>a&amp;b</Key><VersionId>v1</VersionId></Version>"
				  "</ListVersionsResult>";
	char out[64];
	for (size_t len = 0; len <= strlen(doc); len++) {
		/* A heap copy of exactly len bytes: ASan sees any read past it. */
		char *cut = malloc(len ? len : 1);
		memcpy(cut, doc, len);
		int rc = s3_xml_tag(cut, len, "Key", out, sizeof(out));
		cr_assert(rc == 3 || rc == FMT_E_NOT_FOUND || rc == FMT_E_TRUNCATED, "len %zu: %d",
			  len, rc);
		size_t pos = 0;
		const char *el;
		size_t el_len;
		while (s3_xml_next(cut, len, &pos, "Version", &el, &el_len) == 1)
			cr_assert(el >= cut && el + el_len <= cut + len);
		free(cut);
	}
	srand(12345);
	static const char alphabet[] = "<>/&#;x0Key";
	for (int round = 0; round < 20000; round++) {
		size_t len = (size_t)(rand() % 40);
		char *buf = malloc(len ? len : 1);
		for (size_t i = 0; i < len; i++)
			buf[i] = alphabet[rand() % (int)(sizeof(alphabet) - 1)];
		int rc = s3_xml_tag(buf, len, "Key", out, sizeof(out));
		cr_assert(rc >= FMT_E_NOT_FOUND && rc < (int)sizeof(out));
		if (rc >= 0)
			cr_assert_eq(strlen(out), (size_t)rc);
		free(buf);
	}
}

Test(s3_xml, next_iterates_elements)
{
	static const char doc[] = "<R><Version><Key>a</Key></Version><DeleteMarker/>"
				  "<Version><Key>b</Key></Version><Version></Version></R>";
	size_t pos = 0, n;
	const char *el;
	char out[8];
	cr_assert_eq(s3_xml_next(doc, strlen(doc), &pos, "Version", &el, &n), 1);
	cr_assert_eq(s3_xml_tag(el, n, "Key", out, sizeof(out)), 1);
	cr_assert_str_eq(out, "a");
	cr_assert_eq(s3_xml_next(doc, strlen(doc), &pos, "Version", &el, &n), 1);
	cr_assert_eq(s3_xml_tag(el, n, "Key", out, sizeof(out)), 1);
	cr_assert_str_eq(out, "b");
	cr_assert_eq(s3_xml_next(doc, strlen(doc), &pos, "Version", &el, &n), 1);
	cr_assert_eq(n, 0);
	cr_assert_eq(s3_xml_next(doc, strlen(doc), &pos, "Version", &el, &n), 0);
	pos = 0;
	cr_assert_eq(s3_xml_next("<Version><Key>a</Key>", 21, &pos, "Version", &el, &n),
		     FMT_E_TRUNCATED);
}

/* ---- errors ------------------------------------------------------------------------------------ */

Test(s3_errors, classification)
{
	cr_assert_eq(s3_classify(200, ""), S3_ERR_NONE);
	cr_assert_eq(s3_classify(400, "BadDigest"), S3_ERR_CHECKSUM);
	cr_assert_eq(s3_classify(400, "XAmzContentSHA256Mismatch"), S3_ERR_CHECKSUM);
	cr_assert_eq(s3_classify(400, "InvalidDigest"), S3_ERR_CHECKSUM);
	cr_assert_eq(s3_classify(403, "SignatureDoesNotMatch"), S3_ERR_AUTH);
	cr_assert_eq(s3_classify(403, "AccessDenied"), S3_ERR_AUTH);
	cr_assert_eq(s3_classify(403, "RequestTimeTooSkewed"), S3_ERR_AUTH);
	cr_assert_eq(s3_classify(400, "ExpiredToken"), S3_ERR_AUTH);
	cr_assert_eq(s3_classify(403, ""), S3_ERR_AUTH); /* HEAD: no body */
	cr_assert_eq(s3_classify(404, "NoSuchBucket"), S3_ERR_NOT_FOUND);
	cr_assert_eq(s3_classify(404, ""), S3_ERR_NOT_FOUND);
	cr_assert_eq(s3_classify(400, "RequestTimeout"), S3_ERR_TIMEOUT);
	cr_assert_eq(s3_classify(408, ""), S3_ERR_TIMEOUT);
	cr_assert_eq(s3_classify(503, "SlowDown"), S3_ERR_SERVER);
	cr_assert_eq(s3_classify(500, "InternalError"), S3_ERR_SERVER);
	cr_assert_eq(s3_classify(200, "InternalError"), S3_ERR_SERVER); /* error inside a 200 */
	cr_assert_eq(s3_classify(400, "InvalidArgument"), S3_ERR_CLIENT);
	cr_assert_eq(s3_classify(301, "PermanentRedirect"), S3_ERR_CLIENT);
	cr_assert_eq(s3_classify(0, ""), S3_ERR_NETWORK);
}

Test(s3_errors, retryable_and_names)
{
	struct s3_error e = { .kind = S3_ERR_NETWORK };
	cr_assert(s3_error_retryable(&e));
	e.kind = S3_ERR_SERVER;
	cr_assert(s3_error_retryable(&e));
	e.kind = S3_ERR_CHECKSUM;
	cr_assert(s3_error_retryable(&e));
	e.kind = S3_ERR_AUTH;
	cr_assert(!(s3_error_retryable(&e)));
	e.kind = S3_ERR_NOT_FOUND;
	cr_assert(!(s3_error_retryable(&e)));
	e.kind = S3_ERR_CLIENT;
	e.http_status = 400;
	cr_assert(!(s3_error_retryable(&e)));
	e.http_status = 429;
	cr_assert(s3_error_retryable(&e));
	e.http_status = 409;
	snprintf(e.code, sizeof(e.code), "OperationAborted");
	cr_assert(s3_error_retryable(&e));
	for (int k = 0; k < S3_ERR_KIND_COUNT; k++)
		cr_assert_str_eq(s3_err_kind_name((enum s3_err_kind)k), s3_err_kind_names[k]);
	cr_assert_str_eq(s3_err_kind_name(S3_ERR_NOT_FOUND), "not_found");
	cr_assert_str_eq(s3_strerror(S3_E_AUTH), "S3: credentials refused");
	cr_assert_str_eq(s3_strerror(FMT_E_TOO_BIG), fmt_strerror(FMT_E_TOO_BIG));
	struct s3_error f = { .kind = S3_ERR_AUTH, .http_status = 403 };
	snprintf(f.operation, sizeof(f.operation), "PutObject");
	snprintf(f.code, sizeof(f.code), "AccessDenied");
	snprintf(f.message, sizeof(f.message), "Access Denied");
	snprintf(f.request_id, sizeof(f.request_id), "R1");
	char line[256];
	s3_error_format(&f, line, sizeof(line));
	cr_assert_str_eq(line, "PutObject: auth: HTTP 403 AccessDenied: Access Denied (request id R1)");
	s3_error_format(&f, line, 12); /* cut, still terminated */
	cr_assert_eq(strlen(line), 11);
}

/* ---- the transport against a scripted HTTP peer ---------------------------------------------- */
/* A tiny HTTP/1.1 server in a thread: it reads each request (answering
 * Expect: 100-continue), checks that x-amz-content-sha256 and Content-MD5
 * are the digests of the body it received, logs "METHOD path", and
 * answers from a script (first rule whose method matches and whose
 * substring is in the path). Enough to drive net/s3.c through the paths
 * moto cannot: an ETag that does not match, an error inside a 200, a peer
 * that never answers. */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>

struct rule {
	const char *method, *path_has;
	int status;
	const char *headers; /* extra header lines, each ending \r\n */
	const char *body;
	bool etag_md5;       /* answer ETag: "<md5 of the body received>" */
};

struct peer {
	int lfd, port;
	pthread_t th;
	const struct rule *rules;
	size_t nrules;
	bool silent;             /* read requests, never answer */
	atomic_bool stop;
	char log[64][600];
	atomic_int nlog;
	atomic_int digest_bad;   /* requests whose digest headers were wrong */
};

static bool read_exact(int fd, char *p, size_t n)
{
	while (n) {
		ssize_t r = read(fd, p, n);
		if (r <= 0)
			return false;
		p += r;
		n -= (size_t)r;
	}
	return true;
}

static const char *header_of(const char *head, const char *name, char *out, size_t cap)
{
	const char *p = strcasestr(head, name);
	out[0] = 0;
	if (!p)
		return NULL;
	p += strlen(name);
	while (*p == ' ')
		p++;
	size_t n = strcspn(p, "\r\n");
	snprintf(out, cap, "%.*s", (int)FMT_MIN(n, cap - 1), p);
	return out;
}

/* One request on fd. Returns false when the connection is done. */
static bool peer_request(struct peer *pe, int fd)
{
	char head[16384];
	size_t n = 0;
	while (n < sizeof(head) - 1) {
		ssize_t r = read(fd, head + n, 1);
		if (r <= 0)
			return false;
		n++;
		head[n] = 0;
		if (n >= 4 && !memcmp(head + n - 4, "\r\n\r\n", 4))
			break;
	}
	char method[16], path[4096], v[128];
	if (sscanf(head, "%15s %4095s", method, path) != 2)
		return false;
	size_t clen = header_of(head, "\ncontent-length:", v, sizeof(v)) ? strtoull(v, NULL, 10) : 0;
	if (header_of(head, "\nexpect:", v, sizeof(v)) && !strcasecmp(v, "100-continue"))
		cr_assert(write(fd, "HTTP/1.1 100 Continue\r\n\r\n", 25) == 25);
	char *body = malloc(clen + 1);
	if (!read_exact(fd, body, clen)) {
		free(body);
		return false;
	}
	struct s3_digests d;
	cr_assert_eq(s3_digest_buf(body, clen, &d), 0);
	free(body);
	char sha[80], md5[40];
	header_of(head, "\nx-amz-content-sha256:", sha, sizeof(sha));
	bool md5_ok = !header_of(head, "\ncontent-md5:", md5, sizeof(md5)) || !strcmp(md5, d.md5_b64);
	if (strcmp(sha, d.sha256_hex) || !md5_ok || (clen && !md5[0]))
		atomic_fetch_add(&pe->digest_bad, 1);
	int i = atomic_load(&pe->nlog);
	if (i < 64) {
		snprintf(pe->log[i], sizeof(pe->log[i]), "%s %s", method, path);
		atomic_store(&pe->nlog, i + 1);
	}
	if (pe->silent) {
		while (!atomic_load(&pe->stop))
			usleep(10000);
		return false;
	}
	const struct rule *ru = NULL;
	for (size_t k = 0; k < pe->nrules && !ru; k++)
		if (!strcmp(pe->rules[k].method, method) && strstr(path, pe->rules[k].path_has))
			ru = &pe->rules[k];
	static const struct rule missing = { "", "", 404, "", "<Error><Code>NoSuchKey</Code></Error>", false };
	if (!ru)
		ru = &missing;
	char resp[8192];
	const char *b = ru->body ? ru->body : "";
	int len = snprintf(resp, sizeof(resp), "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n%s", ru->status,
			   !strcmp(method, "HEAD") ? 0 : strlen(b), ru->headers ? ru->headers : "");
	if (ru->etag_md5)
		len += snprintf(resp + len, sizeof(resp) - (size_t)len, "ETag: \"%s\"\r\n", d.md5_hex);
	len += snprintf(resp + len, sizeof(resp) - (size_t)len, "\r\n%s", !strcmp(method, "HEAD") ? "" : b);
	cr_assert(write(fd, resp, (size_t)len) == len);
	return true;
}

static void *peer_main(void *arg)
{
	struct peer *pe = arg;
	while (!atomic_load(&pe->stop)) {
		struct pollfd p = { .fd = pe->lfd, .events = POLLIN };
		if (poll(&p, 1, 50) <= 0)
			continue;
		int fd = accept(pe->lfd, NULL, NULL);
		if (fd < 0)
			continue;
		while (!atomic_load(&pe->stop) && peer_request(pe, fd))
			;
		close(fd);
	}
	return NULL;
}

static void peer_start(struct peer *pe, const struct rule *rules, size_t n)
{
	memset(pe, 0, sizeof(*pe));
	pe->rules = rules;
	pe->nrules = n;
	pe->lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	cr_assert_eq(bind(pe->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(pe->lfd, 8), 0);
	socklen_t al = sizeof(a);
	getsockname(pe->lfd, (struct sockaddr *)&a, &al);
	pe->port = ntohs(a.sin_port);
	cr_assert_eq(pthread_create(&pe->th, NULL, peer_main, pe), 0);
}

static void peer_stop(struct peer *pe)
{
	atomic_store(&pe->stop, true);
	pthread_join(pe->th, NULL);
	close(pe->lfd);
}

static struct s3_config peer_config(int port, uint64_t threshold)
{
	struct s3_config cfg;
	s3_config_default(&cfg);
	snprintf(cfg.endpoint, sizeof(cfg.endpoint), "http://127.0.0.1:%d", port);
	snprintf(cfg.bucket, sizeof(cfg.bucket), "b");
	snprintf(cfg.access_key, sizeof(cfg.access_key), "AKID");
	snprintf(cfg.secret_key, sizeof(cfg.secret_key), "secret");
	cfg.multipart_threshold_bytes = threshold;
	cfg.part_bytes = S3_PART_BYTES_MIN;
	cfg.stall_timeout_s = 30;
	return cfg;
}

static struct s3_client *peer_client(int port, uint64_t threshold)
{
	struct s3_config cfg = peer_config(port, threshold);
	struct s3_client *c;
	struct s3_error e;
	cr_assert_eq(s3_client_new(&cfg, &c, &e), 0, "%s", e.message);
	return c;
}

static int file_of(size_t size)
{
	char *data = malloc(size ? size : 1);
	for (size_t i = 0; i < size; i++)
		data[i] = (char)(i * 31 + 7);
	int fd = temp_file(data, size);
	free(data);
	return fd;
}

Test(s3_transport, put_checks_the_etag)
{
	static const struct rule rules[] = {
		{ "PUT", "/b/k", 200, "ETag: \"00000000000000000000000000000000\"\r\n", "", false },
	};
	struct peer pe;
	peer_start(&pe, rules, 1);
	struct s3_client *c = peer_client(pe.port, 64 * MIB);
	int fd = file_of(1000);
	struct s3_put_result res;
	struct s3_error e;
	cr_assert_eq(s3_put_object_file(c, "k", fd, 1000, "abc", &res, &e), S3_E_CHECKSUM);
	cr_assert_eq(e.kind, S3_ERR_CHECKSUM);
	cr_assert(s3_error_retryable(&e));
	struct s3_stats st;
	s3_client_stats(c, &st);
	cr_assert_eq(st.errors[S3_ERR_CHECKSUM], 1);
	cr_assert_eq(st.bytes_sent, 0);
	cr_assert_eq(atomic_load(&pe.digest_bad), 0);
	s3_client_free(c);
	close(fd);
	peer_stop(&pe);
}

Test(s3_transport, multipart_error_inside_200_aborts_the_upload)
{
	static const struct rule rules[] = {
		{ "POST", "?uploads=", 200, "", "<InitiateMultipartUploadResult><UploadId>up/1+x"
						"</UploadId></InitiateMultipartUploadResult>", false },
		{ "PUT", "partNumber=", 200, "", "", true },
		{ "POST", "?uploadId=", 200, "", "<Error><Code>InternalError</Code><Message>"
						 "try again</Message></Error>", false },
		{ "DELETE", "?uploadId=", 204, "", "", false },
	};
	struct peer pe;
	peer_start(&pe, rules, FMT_ARRAY_LEN(rules));
	struct s3_client *c = peer_client(pe.port, 0);
	int fd = file_of(6 * MIB);
	struct s3_put_result res;
	struct s3_error e;
	cr_assert_eq(s3_put_object_file(c, "dir/k 1", fd, 6 * MIB, NULL, &res, &e), S3_E_SERVER);
	cr_assert_eq(e.kind, S3_ERR_SERVER);
	cr_assert_str_eq(e.code, "InternalError");
	cr_assert_str_eq(e.message, "try again");
	cr_assert_eq(atomic_load(&pe.nlog), 5);
	cr_assert_str_eq(pe.log[0], "POST /b/dir/k%201?uploads=");
	cr_assert_str_eq(pe.log[1], "PUT /b/dir/k%201?partNumber=1&uploadId=up%2F1%2Bx");
	cr_assert_str_eq(pe.log[2], "PUT /b/dir/k%201?partNumber=2&uploadId=up%2F1%2Bx");
	cr_assert_str_eq(pe.log[3], "POST /b/dir/k%201?uploadId=up%2F1%2Bx");
	cr_assert_str_eq(pe.log[4], "DELETE /b/dir/k%201?uploadId=up%2F1%2Bx");
	cr_assert_eq(atomic_load(&pe.digest_bad), 0);
	s3_client_free(c);
	close(fd);
	peer_stop(&pe);
}

Test(s3_transport, error_body_code_message_request_id)
{
	static const struct rule rules[] = {
		{ "GET", "versioning", 503, "x-amz-request-id: RID42\r\n",
		  "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
		  "</Error>", false },
	};
	struct peer pe;
	peer_start(&pe, rules, 1);
	struct s3_client *c = peer_client(pe.port, 64 * MIB);
	enum s3_versioning v;
	struct s3_error e;
	cr_assert_eq(s3_get_versioning(c, &v, &e), S3_E_SERVER);
	cr_assert_eq(e.http_status, 503);
	cr_assert_str_eq(e.code, "SlowDown");
	cr_assert_str_eq(e.request_id, "RID42");
	cr_assert(s3_error_retryable(&e));
	char line[512];
	s3_error_format(&e, line, sizeof(line));
	cr_assert_str_eq(line, "GetBucketVersioning: server: HTTP 503 SlowDown: Please reduce your "
			       "request rate. (request id RID42)");
	s3_client_free(c);
	peer_stop(&pe);
}

Test(s3_transport, head_missing_is_not_an_error_and_bad_headers_are)
{
	char long_version[400];
	snprintf(long_version, sizeof(long_version), "x-amz-version-id: %0300d\r\n", 0);
	const struct rule rules[] = {
		{ "HEAD", "/b/there", 200, "ETag: \"abc\"\r\nx-amz-version-id: v1\r\n"
					  "x-amz-meta-hodei-xxh3: 00ff\r\n", "", false },
		{ "HEAD", "/b/long", 200, long_version, "", false },
	};
	struct peer pe;
	peer_start(&pe, rules, FMT_ARRAY_LEN(rules));
	struct s3_client *c = peer_client(pe.port, 64 * MIB);
	struct s3_object_info info;
	struct s3_error e;
	cr_assert_eq(s3_head_object(c, "missing", NULL, &info, &e), 0);
	cr_assert(!info.exists);
	cr_assert_eq(s3_head_object(c, "there", NULL, &info, &e), 0);
	cr_assert(info.exists);
	cr_assert_str_eq(info.etag, "abc");
	cr_assert_str_eq(info.version_id, "v1");
	cr_assert_str_eq(info.checksum_meta, "00ff");
	cr_assert_eq(s3_head_object(c, "long", NULL, &info, &e), S3_E_CLIENT);
	struct s3_stats st;
	s3_client_stats(c, &st);
	cr_assert_eq(st.errors[S3_ERR_NOT_FOUND], 0); /* the 404 was an answer, not a failure */
	cr_assert_eq(st.errors[S3_ERR_CLIENT], 1);
	cr_assert_eq(st.requests, 3);
	s3_client_free(c);
	peer_stop(&pe);
}

static atomic_bool cancel_flag;

static void *cancel_soon(void *arg)
{
	(void)arg;
	usleep(200000);
	atomic_store(&cancel_flag, true);
	return NULL;
}

Test(s3_transport, cancel_and_stall)
{
	struct peer pe;
	peer_start(&pe, NULL, 0);
	pe.silent = true;
	struct s3_client *c = peer_client(pe.port, 64 * MIB);
	s3_client_set_cancel(c, &cancel_flag);
	pthread_t th;
	pthread_create(&th, NULL, cancel_soon, NULL);
	enum s3_versioning v;
	struct s3_error e;
	cr_assert_eq(s3_get_versioning(c, &v, &e), S3_E_CANCELLED);
	cr_assert_eq(e.kind, S3_ERR_CANCELLED);
	pthread_join(th, NULL);
	s3_client_free(c);
	/* The peer still holds the first connection: the next one is never
	 * answered, and no byte moves for stall_timeout_s. */
	struct s3_config cfg = peer_config(pe.port, 64 * MIB);
	cfg.stall_timeout_s = 1;
	cr_assert_eq(s3_client_new(&cfg, &c, &e), 0);
	cr_assert_eq(s3_get_versioning(c, &v, &e), S3_E_TIMEOUT);
	cr_assert_eq(e.kind, S3_ERR_TIMEOUT);
	s3_client_free(c);
	peer_stop(&pe);
}

Test(s3_transport, refused_is_a_network_error)
{
	struct peer pe;
	peer_start(&pe, NULL, 0);
	int port = pe.port;
	peer_stop(&pe); /* the port is closed now */
	struct s3_client *c = peer_client(port, 64 * MIB);
	enum s3_versioning v;
	struct s3_error e;
	cr_assert_eq(s3_get_versioning(c, &v, &e), S3_E_NETWORK);
	cr_assert_eq(e.kind, S3_ERR_NETWORK);
	cr_assert_eq(e.http_status, 0);
	cr_assert(s3_error_retryable(&e));
	s3_client_free(c);
}
