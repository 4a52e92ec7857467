// SPDX-License-Identifier: Apache-2.0
/*
 * hash.c — SHA-256 via libcrypto's one-shot EVP_Digest, the hash chain and
 * the RFC 6962 Merkle tree hash. The Merkle root is computed iteratively
 * with a stack of at most 64 subtree roots, so it never allocates: leaves
 * are pushed left to right and equal-sized neighbours merged, then the
 * stack is folded right to left, which yields exactly RFC 6962's split at
 * the largest power of two.
 */
#include "hash.h"

#include <openssl/evp.h>
#include <stdatomic.h>

/* OpenSSL 3 looks the algorithm up on every EVP_sha256() digest; fetching
 * it once and reusing it halves the cost of hashing a small event. The
 * fetched object lives for the process. */
static EVP_MD *sha256_md(void)
{
	static _Atomic(EVP_MD *) cached;
	EVP_MD *md = atomic_load_explicit(&cached, memory_order_acquire);
	if (md)
		return md;
	md = EVP_MD_fetch(NULL, "SHA256", NULL);
	ASSERT(md != NULL);
	EVP_MD *expected = NULL;
	if (!atomic_compare_exchange_strong(&cached, &expected, md)) {
		EVP_MD_free(md);
		md = expected;
	}
	return md;
}

void fmt_sha256(const void *data, size_t len, uint8_t out[FMT_HASH_BYTES])
{
	unsigned int n = 0;
	int ok = EVP_Digest(data, len, out, &n, sha256_md(), NULL);
	ASSERT(ok == 1 && n == FMT_HASH_BYTES);
}

struct fmt_sha256_ctx *fmt_sha256_ctx_new(void)
{
	return (struct fmt_sha256_ctx *)EVP_MD_CTX_new();
}

void fmt_sha256_ctx_free(struct fmt_sha256_ctx *c)
{
	EVP_MD_CTX_free((EVP_MD_CTX *)c);
}

void fmt_sha256_with(struct fmt_sha256_ctx *c, const void *data, size_t len,
		     uint8_t out[FMT_HASH_BYTES])
{
	EVP_MD_CTX *ctx = (EVP_MD_CTX *)c;
	unsigned int n = 0;
	int ok = EVP_DigestInit_ex2(ctx, sha256_md(), NULL) == 1 &&
		 EVP_DigestUpdate(ctx, data, len) == 1 && EVP_DigestFinal_ex(ctx, out, &n) == 1;
	ASSERT(ok && n == FMT_HASH_BYTES);
}

void fmt_chain_next_with(struct fmt_sha256_ctx *c, const uint8_t prev[FMT_HASH_BYTES],
			 const uint8_t event_hash[FMT_HASH_BYTES], uint8_t next[FMT_HASH_BYTES])
{
	uint8_t buf[2 * FMT_HASH_BYTES];
	memcpy(buf, prev, FMT_HASH_BYTES);
	memcpy(buf + FMT_HASH_BYTES, event_hash, FMT_HASH_BYTES);
	fmt_sha256_with(c, buf, sizeof(buf), next);
}

int fmt_event_hash(const struct fmt_event *ev, uint8_t *scratch, size_t cap,
		   uint8_t out[FMT_HASH_BYTES])
{
	int64_t n = fmt_event_canon_encode(ev, scratch, cap);
	if (n < 0)
		return (int)n;
	fmt_sha256(scratch, (size_t)n, out);
	return 0;
}

void fmt_chain_next(const uint8_t prev[FMT_HASH_BYTES], const uint8_t event_hash[FMT_HASH_BYTES],
		    uint8_t next[FMT_HASH_BYTES])
{
	uint8_t buf[2 * FMT_HASH_BYTES];
	memcpy(buf, prev, FMT_HASH_BYTES);
	memcpy(buf + FMT_HASH_BYTES, event_hash, FMT_HASH_BYTES);
	fmt_sha256(buf, sizeof(buf), next);
}

static void merkle_leaf(const uint8_t h[FMT_HASH_BYTES], uint8_t out[FMT_HASH_BYTES])
{
	uint8_t buf[1 + FMT_HASH_BYTES];
	buf[0] = 0x00;
	memcpy(buf + 1, h, FMT_HASH_BYTES);
	fmt_sha256(buf, sizeof(buf), out);
}

static void merkle_node(const uint8_t l[FMT_HASH_BYTES], const uint8_t r[FMT_HASH_BYTES],
			uint8_t out[FMT_HASH_BYTES])
{
	uint8_t buf[1 + 2 * FMT_HASH_BYTES];
	buf[0] = 0x01;
	memcpy(buf + 1, l, FMT_HASH_BYTES);
	memcpy(buf + 1 + FMT_HASH_BYTES, r, FMT_HASH_BYTES);
	fmt_sha256(buf, sizeof(buf), out);
}

void fmt_merkle_root(const uint8_t (*hashes)[FMT_HASH_BYTES], size_t n, uint8_t out[FMT_HASH_BYTES])
{
	if (n == 0) {
		fmt_sha256("", 0, out);
		return;
	}
	uint8_t stack[64][FMT_HASH_BYTES];
	size_t size[64];
	int top = 0;
	for (size_t i = 0; i < n; i++) {
		ASSERT(top < 64);
		merkle_leaf(hashes[i], stack[top]);
		size[top++] = 1;
		while (top >= 2 && size[top - 1] == size[top - 2]) {
			merkle_node(stack[top - 2], stack[top - 1], stack[top - 2]);
			size[top - 2] *= 2;
			top--;
		}
	}
	while (top >= 2) {
		merkle_node(stack[top - 2], stack[top - 1], stack[top - 2]);
		size[top - 2] += size[top - 1];
		top--;
	}
	memcpy(out, stack[0], FMT_HASH_BYTES);
}

void fmt_hex(const uint8_t *bytes, size_t len, char *out)
{
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < len; i++) {
		out[2 * i] = hex[bytes[i] >> 4];
		out[2 * i + 1] = hex[bytes[i] & 15];
	}
	out[2 * len] = 0;
}
