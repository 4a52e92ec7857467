/* SPDX-License-Identifier: Apache-2.0
 *
 * units.h — the one parser of numbers, sizes and durations that every flag
 * and HODEI_* variable uses (hodei-auditd, the S3 and ClickHouse settings,
 * the hodei-audit commands), so that "64MiB" or "500ms" means the same
 * everywhere.
 *
 *   numbers    decimal digits only (no sign, no spaces)
 *   sizes      a number with an optional unit: B, K/KiB, M/MiB, G/GiB,
 *              T/TiB (powers of 1024)
 *   durations  a number, optionally with a decimal fraction ("1.5s"), and
 *              a unit: ns, us, ms, s, m, h; a bare number counts in the
 *              caller's unit, or is refused when the caller gives none
 * Every parser refuses overflow and trailing text. Returns 0 or -1.
 */
#ifndef HODEI_NET_UNITS_H
#define HODEI_NET_UNITS_H

#include <stdint.h>

int units_parse_u64(const char *s, uint64_t *out);
int units_parse_size(const char *s, uint64_t *out);
/* bare_unit_ns: what a number without a unit counts (e.g. 1e9 for
 * seconds); 0 refuses it. */
int units_parse_duration_ns(const char *s, int64_t bare_unit_ns, int64_t *out);

#endif
