// SPDX-License-Identifier: Apache-2.0
/*
 * hash.c — SHA-256 via libcrypto, the hash chain and the RFC 6962 Merkle
 * tree hash. The Merkle root is computed iteratively with a stack of at
 * most 64 subtree roots, so it never allocates: leaves are pushed left to
 * right and equal-sized neighbours merged, then the stack is folded right
 * to left, which yields exactly RFC 6962's split at the largest power of
 * two.
 */
#include "hash.h"

/* libcrypto's SHA256_Init/Update/Final, deprecated in OpenSSL 3 in favour
 * of EVP, on purpose: every hash here is small (33 to ~400 bytes) and hot
 * (three to five per event), and EVP's per-digest provider dispatch costs
 * more than the compression itself at these sizes. Measured on the
 * development machine (SHA-NI), thread CPU per call:
 *
 *   input          EVP_Digest   reused EVP_MD_CTX   SHA256_Init/Update/Final
 *   33 B (leaf)       ~190 ns        ~120 ns             ~78 ns
 *   65 B (node)       ~240 ns        ~175 ns            ~135 ns
 *   380 B (event)     ~480 ns        ~405 ns            ~380 ns
 *
 * Both run the same libcrypto block function; only the bookkeeping
 * differs. (SHA256(), the one-shot, goes through EVP in OpenSSL 3 and is
 * the slowest of all.) */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

void fmt_sha256(const void *data, size_t len, uint8_t out[FMT_HASH_BYTES])
{
	SHA256_CTX c;
	int ok = SHA256_Init(&c) == 1 && SHA256_Update(&c, data, len) == 1 &&
		 SHA256_Final(out, &c) == 1;
	ASSERT(ok);
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
