// SPDX-License-Identifier: Apache-2.0
/*
 * test_hash.c — format/hash.c: SHA-256 known answers, the hash chain, the
 * RFC 6962 Merkle tree hash and hex output.
 *
 * The expected Merkle roots were computed once by an independent Python
 * implementation of RFC 6962 §2.1 (recursive MTH, split at the largest power
 * of two smaller than n, leaf = SHA-256(0x00 || d), node = SHA-256(0x01 ||
 * l || r)) over leaves d_i = SHA-256(i as an 8-byte little-endian integer),
 * and are hard-coded here: the iterative C implementation must agree with
 * the recursive definition for every shape of tree.
 */
#include <criterion/criterion.h>

#include "format/hash.h"

#include <stdlib.h>

static void hex_of(const uint8_t h[FMT_HASH_BYTES], char out[2 * FMT_HASH_BYTES + 1])
{
	fmt_hex(h, FMT_HASH_BYTES, out);
}

Test(hash_sha256, known_vectors)
{
	uint8_t h[FMT_HASH_BYTES];
	char hex[2 * FMT_HASH_BYTES + 1];
	fmt_sha256("", 0, h);
	hex_of(h, hex);
	cr_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	fmt_sha256("abc", 3, h);
	hex_of(h, hex);
	cr_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	/* FIPS 180-2 two-block message. */
	const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	fmt_sha256(m, strlen(m), h);
	hex_of(h, hex);
	cr_assert_str_eq(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

Test(hash_chain, next)
{
	uint8_t genesis[FMT_HASH_BYTES] = { 0 };
	uint8_t ev[FMT_HASH_BYTES], next[FMT_HASH_BYTES];
	char hex[2 * FMT_HASH_BYTES + 1];
	fmt_sha256("abc", 3, ev);
	fmt_chain_next(genesis, ev, next);
	hex_of(next, hex);
	/* Python: sha256(bytes(32) + sha256(b"abc").digest()). */
	cr_assert_str_eq(hex, "589f9ffed4c477966bfb8d41f37895b08c69047df8f911d6f3b57fbe08faee8d");

	/* It is SHA-256(prev || event_hash), with prev first. */
	uint8_t cat[2 * FMT_HASH_BYTES], direct[FMT_HASH_BYTES];
	memcpy(cat, next, FMT_HASH_BYTES);
	memcpy(cat + FMT_HASH_BYTES, ev, FMT_HASH_BYTES);
	fmt_sha256(cat, sizeof(cat), direct);

	/* next may alias prev. */
	uint8_t chain[FMT_HASH_BYTES];
	memcpy(chain, next, FMT_HASH_BYTES);
	fmt_chain_next(chain, ev, chain);
	cr_assert(memcmp(chain, direct, FMT_HASH_BYTES) == 0);

	/* Order matters. */
	uint8_t swapped[FMT_HASH_BYTES];
	fmt_chain_next(ev, next, swapped);
	cr_assert(memcmp(swapped, direct, FMT_HASH_BYTES) != 0);
}

static void leaves(size_t n, uint8_t (*out)[FMT_HASH_BYTES])
{
	for (size_t i = 0; i < n; i++) {
		uint8_t le[8];
		fmt_put_u64(le, (uint64_t)i);
		fmt_sha256(le, sizeof(le), out[i]);
	}
}

Test(hash_merkle, rfc6962_roots)
{
	static const struct {
		size_t n;
		const char *root;
	} cases[] = {
		{ 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
		{ 1, "aea833068048b82f42271c18e0076a5230cbc7d711c99de16a5917db14a3b044" },
		{ 2, "eef1b9248be39f5f163068a40bec9d0c11835ec8dd5f59398b95147c22e8f74b" },
		{ 3, "27058f4ae7a0ab5ea062e301665d2fd2e749c6a4ec31cf8deacb139f40cd3c07" },
		{ 4, "95349a4ddf5a0e815ce7c2583cadb032d6d62cacec07f83e41857ca23a108b3b" },
		{ 5, "af7d0a28aa91f5a51c1f9c80927c7f12a859f1228b78032d0e0833e7322bbaff" },
		{ 7, "9d07734d5f6d2e0148d180eda3c69b89e4f1ce59252771e8a018b8ef863c4485" },
		{ 8, "2edfad23d1e159125b880e5182bf5e7cd9da5105a1b94376a6d6f3ab534ea4bd" },
		{ 9, "571fecdfc1c2607aa5f4b6b81c0ab3b31312ee71c20ab8d32b7d6e4374caa2dd" },
		{ 16, "47c039e3444c28cf6e076bd2d5fb8b401657e0922df5b2a992689aaae5f748a6" },
		{ 17, "601d96081640a294a621785d0106dcd58a48d52d0567942c6dc5470b04e30f6b" },
		{ 100, "e45f987d272633b0dbf9fbd568ce11242bead9f98e1b51d20dcd5cdb21b37883" },
	};
	static uint8_t d[100][FMT_HASH_BYTES];
	leaves(100, d);
	for (size_t i = 0; i < FMT_ARRAY_LEN(cases); i++) {
		uint8_t root[FMT_HASH_BYTES];
		char hex[2 * FMT_HASH_BYTES + 1];
		/* An exact-size heap copy, so ASan sees a read past leaf n-1. */
		uint8_t (*exact)[FMT_HASH_BYTES] = malloc(cases[i].n ? cases[i].n * FMT_HASH_BYTES : 1);
		memcpy(exact, d, cases[i].n * FMT_HASH_BYTES);
		fmt_merkle_root((const uint8_t (*)[FMT_HASH_BYTES])exact, cases[i].n, root);
		free(exact);
		hex_of(root, hex);
		cr_assert_str_eq(hex, cases[i].root, "n = %zu", cases[i].n);
	}
}

/* Recursive MTH written from RFC 6962 §2.1, for sizes the table misses. */
static void mth(const uint8_t (*d)[FMT_HASH_BYTES], size_t n, uint8_t out[FMT_HASH_BYTES])
{
	if (n == 0) {
		fmt_sha256("", 0, out);
		return;
	}
	if (n == 1) {
		uint8_t b[1 + FMT_HASH_BYTES];
		b[0] = 0;
		memcpy(b + 1, d[0], FMT_HASH_BYTES);
		fmt_sha256(b, sizeof(b), out);
		return;
	}
	size_t k = 1;
	while (k * 2 < n)
		k *= 2;
	uint8_t b[1 + 2 * FMT_HASH_BYTES];
	b[0] = 1;
	mth(d, k, b + 1);
	mth(d + k, n - k, b + 1 + FMT_HASH_BYTES);
	fmt_sha256(b, sizeof(b), out);
}

Test(hash_merkle, matches_recursive_definition)
{
	static uint8_t d[300][FMT_HASH_BYTES];
	leaves(300, d);
	for (size_t n = 0; n <= 300; n++) {
		uint8_t a[FMT_HASH_BYTES], b[FMT_HASH_BYTES];
		fmt_merkle_root((const uint8_t (*)[FMT_HASH_BYTES])d, n, a);
		mth((const uint8_t (*)[FMT_HASH_BYTES])d, n, b);
		cr_assert(memcmp(a, b, FMT_HASH_BYTES) == 0, "n = %zu", n);
	}
}

Test(hash_merkle, order_and_content_matter)
{
	static uint8_t d[5][FMT_HASH_BYTES];
	leaves(5, d);
	uint8_t r1[FMT_HASH_BYTES], r2[FMT_HASH_BYTES];
	fmt_merkle_root((const uint8_t (*)[FMT_HASH_BYTES])d, 5, r1);
	uint8_t t[FMT_HASH_BYTES];
	memcpy(t, d[3], FMT_HASH_BYTES);
	memcpy(d[3], d[4], FMT_HASH_BYTES);
	memcpy(d[4], t, FMT_HASH_BYTES);
	fmt_merkle_root((const uint8_t (*)[FMT_HASH_BYTES])d, 5, r2);
	cr_assert(memcmp(r1, r2, FMT_HASH_BYTES) != 0);
	/* A one-leaf tree is not the leaf itself (domain separation). */
	fmt_merkle_root((const uint8_t (*)[FMT_HASH_BYTES])d, 1, r1);
	cr_assert(memcmp(r1, d[0], FMT_HASH_BYTES) != 0);
}

Test(hash_event, scratch_too_small)
{
	struct fmt_event ev;
	memset(&ev, 0, sizeof(ev));
	ev.str[FMT_F_ACTOR_ID] = fmt_str_c("alice");
	size_t n = fmt_event_canon_size(&ev);
	uint8_t scratch[256];
	uint8_t h[FMT_HASH_BYTES], direct[FMT_HASH_BYTES];
	cr_assert_eq(fmt_event_hash(&ev, scratch, n - 1, h), FMT_E_TOO_BIG);
	cr_assert_eq(fmt_event_hash(&ev, scratch, n, h), 0);
	fmt_sha256(scratch, n, direct);
	cr_assert(memcmp(h, direct, FMT_HASH_BYTES) == 0);
}

Test(hash_hex, output)
{
	static const uint8_t b[] = { 0x00, 0x01, 0x7f, 0x80, 0xab, 0xff };
	char out[2 * sizeof(b) + 1];
	memset(out, 'x', sizeof(out));
	fmt_hex(b, sizeof(b), out);
	cr_assert_str_eq(out, "00017f80abff");
	char empty[1] = { 'x' };
	fmt_hex(b, 0, empty);
	cr_assert_str_eq(empty, "");
}
