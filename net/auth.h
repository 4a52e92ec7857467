/* SPDX-License-Identifier: Apache-2.0
 *
 * auth.h — API keys (DESIGN.md §5 "Authentication").
 *
 * The keys file holds one line per key: `<sha256-hex-of-key> <tenant_id>
 * <role>`, `#` starts a comment, blank lines are ignored. Plain keys are
 * never stored or logged: a request's bearer token is hashed (SHA-256 over
 * its exact bytes) as soon as its header arrives, and only the hash is
 * looked up. The lookup goes through a hash table keyed by the digest and
 * ends in a constant-time comparison of the full 32 bytes.
 *
 * A table is immutable once loaded. The server swaps in a new one on
 * SIGHUP (net/server.c) and frees the old one only after every shard
 * thread has moved past it, so lookups take no lock.
 */
#ifndef HODEI_NET_AUTH_H
#define HODEI_NET_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUTH_HASH_BYTES 32
#define AUTH_KEY_CHARS 67      /* "hk_" + 64 hex digits */
#define AUTH_KEYS_MAX 100000   /* lines with a key, per file */

enum auth_role { AUTH_ROLE_WRITER = 1, AUTH_ROLE_READER = 2, AUTH_ROLE_ADMIN = 3 };

struct auth_key {
	uint8_t hash[AUTH_HASH_BYTES];
	enum auth_role role;
	uint8_t tenant_len;
	char tenant[65];
};

struct auth_table;

/* Reads a keys file. Returns 0, or -1 with err naming the line and the
 * problem (a file with any bad line is refused whole: a typo must not
 * silently drop a key). -2: the file does not exist. */
int auth_table_load(const char *path, struct auth_table **out, char *err, size_t errlen);
void auth_table_free(struct auth_table *t);
uint32_t auth_table_count(const struct auth_table *t);

/* The key whose hash is `hash`, or NULL. */
const struct auth_key *auth_table_find(const struct auth_table *t,
				       const uint8_t hash[AUTH_HASH_BYTES]);

void auth_hash_token(const char *token, size_t len, uint8_t out[AUTH_HASH_BYTES]);

/* A new random key: "hk_" + 64 lowercase hex digits, NUL-terminated.
 * Returns 0 or -errno (no entropy). */
int auth_key_generate(char out[AUTH_KEY_CHARS + 1]);

/* The keys-file line for a key (no newline). */
void auth_key_line(const char *key, const char *tenant, enum auth_role role, char *out,
		   size_t cap);

/* First start: creates `path` (mode 0600, never overwriting) holding one
 * admin key for tenant "default", and returns the key in key_out.
 * Returns 0, -EEXIST, or -errno. */
int auth_first_start(const char *path, char key_out[AUTH_KEY_CHARS + 1]);

const char *auth_role_name(enum auth_role role);
bool auth_role_parse(const char *s, size_t len, enum auth_role *out);

#endif
