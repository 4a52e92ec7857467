// SPDX-License-Identifier: Apache-2.0
/*
 * test_units.c — the one parser of numbers, sizes and durations behind
 * every flag and HODEI_* variable (net/units.c).
 */
#include <criterion/criterion.h>

#include "net/units.h"

#include <stdint.h>

Test(units, numbers)
{
	uint64_t v;
	cr_assert_eq(units_parse_u64("0", &v), 0);
	cr_assert_eq(v, 0);
	cr_assert_eq(units_parse_u64("18446744073709551615", &v), 0);
	cr_assert_eq(v, UINT64_MAX);
	const char *bad[] = { "", "-1", "+1", " 1", "1 ", "1k", "18446744073709551616", "0x10" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(units_parse_u64(bad[i], &v), -1, "%s", bad[i]);
}

Test(units, sizes)
{
	const struct { const char *s; uint64_t v; } ok[] = {
		{ "4096", 4096 }, { "7B", 7 }, { "64K", 64 << 10 }, { "64KiB", 64 << 10 },
		{ "4MiB", 4u << 20 }, { "4M", 4u << 20 }, { "1GiB", 1u << 30 }, { "2T", 2ull << 40 },
		{ "2TiB", 2ull << 40 },
	};
	uint64_t v;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		cr_assert_eq(units_parse_size(ok[i].s, &v), 0, "%s", ok[i].s);
		cr_assert_eq(v, ok[i].v, "%s", ok[i].s);
	}
	const char *bad[] = { "", "MiB", "4 MiB", "4mib", "4KB", "-4K", "16777216T", "1.5M" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(units_parse_size(bad[i], &v), -1, "%s", bad[i]);
}

Test(units, durations)
{
	const struct { const char *s; int64_t v; } ok[] = {
		{ "0s", 0 }, { "5ns", 5 }, { "3us", 3000 }, { "500ms", 500000000 },
		{ "10s", 10000000000ll }, { "1m", 60000000000ll }, { "2h", 7200000000000ll },
		{ "1.5s", 1500000000 }, { "0.25m", 15000000000ll }, { "1.0000000001s", 1000000000 },
	};
	int64_t v;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		cr_assert_eq(units_parse_duration_ns(ok[i].s, 0, &v), 0, "%s", ok[i].s);
		cr_assert_eq(v, ok[i].v, "%s", ok[i].s);
	}
	/* A bare number counts in the caller's unit, or is refused. */
	cr_assert_eq(units_parse_duration_ns("30", 0, &v), -1);
	cr_assert_eq(units_parse_duration_ns("30", 1000000000ll, &v), 0);
	cr_assert_eq(v, 30000000000ll);
	const char *bad[] = { "", "s", "1.s", ".5s", "10 s", "-1s", "1d", "1S", "3000000h",
			      "9223372036854775807s" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(units_parse_duration_ns(bad[i], 1000000000ll, &v), -1, "%s", bad[i]);
}
