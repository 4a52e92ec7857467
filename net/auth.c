// SPDX-License-Identifier: Apache-2.0
#include "net/auth.h"

#include "format/event.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

struct auth_table {
	struct auth_key *keys;
	uint32_t count;
	uint32_t *slots;      /* open addressing: index + 1, 0 = empty */
	uint32_t slot_mask;
};

static const char *const role_names[] = { NULL, "writer", "reader", "admin" };

const char *auth_role_name(enum auth_role role)
{
	return role >= AUTH_ROLE_WRITER && role <= AUTH_ROLE_ADMIN ? role_names[role] : "?";
}

bool auth_role_parse(const char *s, size_t len, enum auth_role *out)
{
	for (int r = AUTH_ROLE_WRITER; r <= AUTH_ROLE_ADMIN; r++)
		if (strlen(role_names[r]) == len && memcmp(s, role_names[r], len) == 0) {
			*out = (enum auth_role)r;
			return true;
		}
	return false;
}

void auth_hash_token(const char *token, size_t len, uint8_t out[AUTH_HASH_BYTES])
{
	unsigned int n = 0;
	EVP_Digest(token, len, out, &n, EVP_sha256(), NULL);
}

static uint32_t slot_of(const uint8_t hash[AUTH_HASH_BYTES], uint32_t mask)
{
	uint32_t h;
	memcpy(&h, hash, sizeof(h)); /* a SHA-256 digest is already uniform */
	return h & mask;
}

const struct auth_key *auth_table_find(const struct auth_table *t,
				       const uint8_t hash[AUTH_HASH_BYTES])
{
	if (!t || !t->count)
		return NULL;
	for (uint32_t i = slot_of(hash, t->slot_mask);; i = (i + 1) & t->slot_mask) {
		uint32_t k = t->slots[i];
		if (!k)
			return NULL;
		const struct auth_key *key = &t->keys[k - 1];
		if (CRYPTO_memcmp(key->hash, hash, AUTH_HASH_BYTES) == 0)
			return key;
	}
}

uint32_t auth_table_count(const struct auth_table *t)
{
	return t ? t->count : 0;
}

void auth_table_free(struct auth_table *t)
{
	if (!t)
		return;
	OPENSSL_cleanse(t->keys, sizeof(*t->keys) * t->count);
	free(t->keys);
	free(t->slots);
	free(t);
}

/* Splits the next whitespace-separated word off *p. */
static bool next_word(const char **p, const char **w, size_t *len)
{
	const char *s = *p;
	while (*s == ' ' || *s == '\t')
		s++;
	if (!*s || *s == '#')
		return false;
	*w = s;
	while (*s && *s != ' ' && *s != '\t' && *s != '#')
		s++;
	*len = (size_t)(s - *w);
	*p = s;
	return true;
}

static int parse_line(const char *line, struct auth_key *key, const char **why)
{
	const char *p = line, *w;
	size_t len;
	if (!next_word(&p, &w, &len))
		return 0; /* blank or comment */
	if (len != 2 * AUTH_HASH_BYTES) {
		*why = "the first word must be the 64 hex digits of the key's SHA-256";
		return -1;
	}
	for (size_t i = 0; i < AUTH_HASH_BYTES; i++) {
		int hi = fmt_hex_digit(w[2 * i]), lo = fmt_hex_digit(w[2 * i + 1]);
		if (hi < 0 || lo < 0) {
			*why = "the key hash is not hex";
			return -1;
		}
		key->hash[i] = (uint8_t)(hi << 4 | lo);
	}
	if (!next_word(&p, &w, &len) || !fmt_tenant_valid((struct fmt_str){ w, (uint32_t)len })) {
		*why = "the second word must be a tenant id (1-64 of A-Z a-z 0-9 . _ -)";
		return -1;
	}
	memcpy(key->tenant, w, len);
	key->tenant[len] = 0;
	key->tenant_len = (uint8_t)len;
	if (!next_word(&p, &w, &len) || !auth_role_parse(w, len, &key->role)) {
		*why = "the third word must be a role: writer, reader or admin";
		return -1;
	}
	if (next_word(&p, &w, &len)) {
		*why = "unexpected text after the role";
		return -1;
	}
	return 1;
}

static int build_index(struct auth_table *t, char *err, size_t errlen)
{
	uint32_t slots = 16;
	while (slots < 2 * t->count)
		slots *= 2;
	t->slots = calloc(slots, sizeof(*t->slots));
	if (!t->slots) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	t->slot_mask = slots - 1;
	for (uint32_t k = 0; k < t->count; k++) {
		if (auth_table_find(t, t->keys[k].hash)) {
			snprintf(err, errlen, "the same key hash appears twice (key %u)", k + 1);
			return -1;
		}
		uint32_t i = slot_of(t->keys[k].hash, t->slot_mask);
		while (t->slots[i])
			i = (i + 1) & t->slot_mask;
		t->slots[i] = k + 1;
	}
	return 0;
}

int auth_table_load(const char *path, struct auth_table **out, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	if (!f) {
		snprintf(err, errlen, "cannot open keys file %s: %s", path, strerror(errno));
		return errno == ENOENT ? -2 : -1;
	}
	struct auth_table *t = calloc(1, sizeof(*t));
	uint32_t cap = 0;
	char line[1024];
	int rc = t ? 0 : -1;
	for (unsigned lineno = 1; rc == 0 && fgets(line, sizeof(line), f); lineno++) {
		size_t n = strlen(line);
		if (n == sizeof(line) - 1 && line[n - 1] != '\n') {
			snprintf(err, errlen, "%s:%u: line longer than %zu bytes", path, lineno,
				 sizeof(line) - 2);
			rc = -1;
			break;
		}
		line[strcspn(line, "\r\n")] = 0;
		struct auth_key key = { 0 };
		const char *why = NULL;
		int r = parse_line(line, &key, &why);
		if (r < 0) {
			snprintf(err, errlen, "%s:%u: %s", path, lineno, why);
			rc = -1;
		} else if (r > 0) {
			if (t->count == AUTH_KEYS_MAX) {
				snprintf(err, errlen, "%s: more than %u keys", path, AUTH_KEYS_MAX);
				rc = -1;
				break;
			}
			if (t->count == cap) {
				cap = cap ? 2 * cap : 16;
				struct auth_key *k = realloc(t->keys, cap * sizeof(*k));
				if (!k) {
					snprintf(err, errlen, "out of memory");
					rc = -1;
					break;
				}
				t->keys = k;
			}
			t->keys[t->count++] = key;
		}
		OPENSSL_cleanse(line, sizeof(line));
	}
	if (rc == 0 && ferror(f)) {
		snprintf(err, errlen, "cannot read keys file %s", path);
		rc = -1;
	}
	fclose(f);
	if (rc == 0)
		rc = build_index(t, err, errlen);
	if (rc) {
		auth_table_free(t);
		return -1;
	}
	*out = t;
	return 0;
}

int auth_key_generate(char out[AUTH_KEY_CHARS + 1])
{
	uint8_t raw[32];
	size_t got = 0;
	while (got < sizeof(raw)) {
		ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		got += (size_t)n;
	}
	static const char hex[] = "0123456789abcdef";
	memcpy(out, "hk_", 3);
	for (size_t i = 0; i < sizeof(raw); i++) {
		out[3 + 2 * i] = hex[raw[i] >> 4];
		out[4 + 2 * i] = hex[raw[i] & 15];
	}
	out[AUTH_KEY_CHARS] = 0;
	OPENSSL_cleanse(raw, sizeof(raw));
	return 0;
}

void auth_key_line(const char *key, const char *tenant, enum auth_role role, char *out, size_t cap)
{
	uint8_t h[AUTH_HASH_BYTES];
	char hex[2 * AUTH_HASH_BYTES + 1];
	auth_hash_token(key, strlen(key), h);
	for (size_t i = 0; i < AUTH_HASH_BYTES; i++)
		snprintf(hex + 2 * i, 3, "%02x", h[i]);
	snprintf(out, cap, "%s %s %s", hex, tenant, auth_role_name(role));
}

int auth_first_start(const char *path, char key_out[AUTH_KEY_CHARS + 1])
{
	int rc = auth_key_generate(key_out);
	if (rc)
		return rc;
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	char line[256], text[512];
	auth_key_line(key_out, "default", AUTH_ROLE_ADMIN, line, sizeof(line));
	int n = snprintf(text, sizeof(text),
			 "# hodei-audit API keys: <sha256-hex-of-key> <tenant_id> <role>\n"
			 "# roles: writer (Append*), reader (Search, Count, Verify), admin (all,\n"
			 "# any tenant via x-hodei-tenant). Re-read on SIGHUP.\n"
			 "# Add keys with: hodei-audit keys new --tenant T --role R\n%s\n",
			 line);
	rc = write(fd, text, (size_t)n) == n && fsync(fd) == 0 ? 0 : -errno;
	close(fd);
	if (rc)
		unlink(path);
	return rc;
}
