/* SPDX-License-Identifier: Apache-2.0
 *
 * common.h — what every folder of hodei-audit shares: the project's error
 * codes, assertions that stay on in release builds, little-endian helpers
 * and the borrowed string view used by every event field.
 *
 * Errors: functions return 0 (or a count) on success and a negative code on
 * failure. Kernel errors pass through as -errno; the project's own codes are
 * the named negative enum below, in a range (-1000 and down) that no errno
 * reaches. fmt_strerror() names both.
 */
#ifndef HODEI_FORMAT_COMMON_H
#define HODEI_FORMAT_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum fmt_err {
	FMT_E_CORRUPT = -1001,   /* checksum mismatch or malformed bytes */
	FMT_E_TRUNCATED = -1002, /* the input ends before the structure does */
	FMT_E_VERSION = -1003,   /* a format version this build cannot read */
	FMT_E_INVALID = -1004,   /* an argument or field breaks a rule */
	FMT_E_TOO_BIG = -1005,   /* over a configured or format limit */
	FMT_E_NOMEM = -1006,     /* an allocation or a budget was refused */
	FMT_E_FULL = -1007,      /* a bounded queue or buffer is full */
	FMT_E_CHAIN = -1008,     /* a hash chain or Merkle root does not match */
	FMT_E_STATE = -1009,     /* the object is in a state that forbids this */
	FMT_E_NOT_FOUND = -1010, /* no such tenant, file or record */
	FMT_E_SHUTDOWN = -1011,  /* the engine is stopping */
};

/* Returns a static, human-readable name for a project code or -errno. */
const char *fmt_strerror(int err);

/* Assertions stay on in release builds: a broken invariant in an audit log
 * must stop the process, not write wrong data. */
__attribute__((noreturn)) void fmt_assert_fail(const char *expr, const char *file, int line);
#define ASSERT(expr) \
	((expr) ? (void)0 : fmt_assert_fail(#expr, __FILE__, __LINE__))
#ifdef NDEBUG
#define DEBUG_ASSERT(expr) ((void)0)
#else
#define DEBUG_ASSERT(expr) ASSERT(expr)
#endif

#define FMT_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define FMT_MIN(a, b) ((a) < (b) ? (a) : (b))
#define FMT_MAX(a, b) ((a) > (b) ? (a) : (b))

/* A borrowed byte string: never NUL-terminated by contract. */
struct fmt_str {
	const char *ptr;
	uint32_t len;
};

static inline struct fmt_str fmt_str_c(const char *s)
{
	struct fmt_str r = { s, (uint32_t)strlen(s) };
	return r;
}

/* Unsigned LEB128 varints (the segment codec's, and ClickHouse RowBinary's
 * string lengths): bytes needed, and the encoder (returns the end). */
static inline unsigned fmt_varint_size(uint64_t v)
{
	unsigned n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static inline uint8_t *fmt_put_varint(uint8_t *p, uint64_t v)
{
	while (v >= 0x80) {
		*p++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	return p;
}

/* The value of one hex digit (either case), or -1. */
static inline int fmt_hex_digit(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static inline int fmt_str_eq(struct fmt_str a, struct fmt_str b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static inline void fmt_put_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void fmt_put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void fmt_put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint16_t fmt_get_u16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

/* Spelled out rather than looped: compilers merge this form into one
 * (unaligned) load, and the reads of footers and canonical encodings are
 * made of little else (a loop stayed a loop at -O2: half of the cost of
 * opening a segment). */
static inline uint32_t fmt_get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t fmt_get_u64(const uint8_t *p)
{
	return (uint64_t)fmt_get_u32(p) | (uint64_t)fmt_get_u32(p + 4) << 32;
}

/* XXH3-64 of a buffer, seed 0: the checksum of every on-disk structure. */
uint64_t fmt_xxh3(const void *data, size_t len);

#endif
