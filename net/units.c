// SPDX-License-Identifier: Apache-2.0
#include "net/units.h"

#include "format/common.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int digits(const char *s, uint64_t *out, const char **end)
{
	if (*s < '0' || *s > '9')
		return -1;
	char *e;
	errno = 0;
	unsigned long long v = strtoull(s, &e, 10);
	if (errno)
		return -1;
	*out = v;
	*end = e;
	return 0;
}

int units_parse_u64(const char *s, uint64_t *out)
{
	const char *end;
	uint64_t v;
	if (digits(s, &v, &end) != 0 || *end)
		return -1;
	*out = v;
	return 0;
}

int units_parse_size(const char *s, uint64_t *out)
{
	static const struct {
		const char *sfx;
		uint64_t mul;
	} units[] = {
		{ "", 1 }, { "B", 1 }, { "K", 1ull << 10 }, { "KiB", 1ull << 10 },
		{ "M", 1ull << 20 }, { "MiB", 1ull << 20 }, { "G", 1ull << 30 },
		{ "GiB", 1ull << 30 }, { "T", 1ull << 40 }, { "TiB", 1ull << 40 },
	};
	const char *end;
	uint64_t v;
	if (digits(s, &v, &end) != 0)
		return -1;
	for (size_t i = 0; i < FMT_ARRAY_LEN(units); i++)
		if (strcmp(end, units[i].sfx) == 0) {
			if (v > UINT64_MAX / units[i].mul)
				return -1;
			*out = v * units[i].mul;
			return 0;
		}
	return -1;
}

int units_parse_duration_ns(const char *s, int64_t bare_unit_ns, int64_t *out)
{
	static const struct {
		const char *sfx;
		int64_t ns;
	} units[] = {
		{ "ns", 1 }, { "us", 1000 }, { "ms", 1000000 }, { "s", 1000000000ll },
		{ "m", 60 * 1000000000ll }, { "h", 3600 * 1000000000ll },
	};
	const char *end;
	uint64_t whole;
	if (digits(s, &whole, &end) != 0)
		return -1;
	/* An optional fraction: up to 9 digits are kept (ns of a second). */
	uint64_t frac = 0, scale = 1;
	if (*end == '.') {
		const char *f = ++end;
		while (*end >= '0' && *end <= '9') {
			if (scale < 1000000000ull) {
				frac = frac * 10 + (uint64_t)(*end - '0');
				scale *= 10;
			}
			end++;
		}
		if (end == f)
			return -1;
	}
	int64_t unit = 0;
	if (!*end)
		unit = bare_unit_ns;
	for (size_t i = 0; i < FMT_ARRAY_LEN(units) && !unit; i++)
		if (strcmp(end, units[i].sfx) == 0)
			unit = units[i].ns;
	if (unit <= 0 || whole > (uint64_t)(INT64_MAX / unit))
		return -1;
	int64_t part = (int64_t)((unsigned __int128)frac * (uint64_t)unit / scale); /* < unit */
	if ((int64_t)whole * unit > INT64_MAX - part)
		return -1;
	*out = (int64_t)whole * unit + part;
	return 0;
}
