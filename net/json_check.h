/* SPDX-License-Identifier: Apache-2.0
 *
 * json_check.h — the JSON validity check format/ leaves to its callers
 * (struct fmt_limits.details_json_valid): details_json must be exactly one
 * JSON value (RFC 8259, any type at the top level), in UTF-8, with nothing
 * after it but whitespace, numbers in range and at most NET_JSON_DEPTH_MAX
 * nested arrays and objects. Checked with yajl's event parser; nothing is
 * built or kept (json_check.c says why).
 */
#ifndef HODEI_NET_JSON_CHECK_H
#define HODEI_NET_JSON_CHECK_H

#include <stdbool.h>
#include <stddef.h>

#define NET_JSON_DEPTH_MAX 2048u

bool net_json_valid(const char *json, size_t len);

#endif
