// SPDX-License-Identifier: Apache-2.0
#include "net/json_check.h"

#include <jansson.h>

bool net_json_valid(const char *json, size_t len)
{
	json_error_t err;
	/* JSON_ALLOW_NUL: a \u0000 escape is valid JSON; jansson refuses it
	 * unless asked. Nesting depth is bounded by jansson itself. */
	json_t *v = json_loadb(json, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
	if (!v)
		return false;
	json_decref(v);
	return true;
}
