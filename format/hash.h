/* SPDX-License-Identifier: Apache-2.0
 *
 * hash.h — event hashes, the per-tenant hash chain and RFC 6962 Merkle
 * roots (docs/FORMAT.md §3). SHA-256 comes from libcrypto; nothing here is
 * hand-written cryptography.
 *
 *   event_hash_n = SHA-256(canonical_encoding(event_n))
 *   chain_0      = 32 zero bytes (a tenant's genesis)
 *   chain_n      = SHA-256(chain_{n-1} || event_hash_n)
 *   leaf(h)      = SHA-256(0x00 || h)
 *   node(l, r)   = SHA-256(0x01 || l || r)
 *   MTH({})      = SHA-256("")
 *   MTH(D[n])    = leaf(D[0]) for n == 1, else node(MTH(D[0:k]), MTH(D[k:n]))
 *                  with k the largest power of two smaller than n.
 */
#ifndef HODEI_FORMAT_HASH_H
#define HODEI_FORMAT_HASH_H

#include "event.h"

void fmt_sha256(const void *data, size_t len, uint8_t out[FMT_HASH_BYTES]);

/* Hashes the canonical encoding of ev. scratch must hold
 * fmt_event_canon_size(ev) bytes. Returns 0 or FMT_E_TOO_BIG. */
int fmt_event_hash(const struct fmt_event *ev, uint8_t *scratch, size_t scratch_cap,
		   uint8_t out[FMT_HASH_BYTES]);

/* next = SHA-256(prev || event_hash); next may alias prev. */
void fmt_chain_next(const uint8_t prev[FMT_HASH_BYTES], const uint8_t event_hash[FMT_HASH_BYTES],
		    uint8_t next[FMT_HASH_BYTES]);

/* RFC 6962 Merkle tree hash over n event hashes (n may be 0).
 * Uses no allocation: O(log n) stack. */
void fmt_merkle_root(const uint8_t (*hashes)[FMT_HASH_BYTES], size_t n,
		     uint8_t out[FMT_HASH_BYTES]);

/* Lower-case hex of len bytes into out (2*len + 1 chars). */
void fmt_hex(const uint8_t *bytes, size_t len, char *out);

#endif
