// SPDX-License-Identifier: Apache-2.0
/*
 * common.c — error names, the assertion failure path and the checksum
 * wrapper, so that xxhash.h is included in one place of format/.
 */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <xxhash.h>

const char *fmt_strerror(int err)
{
	switch (err) {
	case 0: return "ok";
	case FMT_E_CORRUPT: return "corrupt data (checksum mismatch or malformed bytes)";
	case FMT_E_TRUNCATED: return "truncated data";
	case FMT_E_VERSION: return "unsupported format version";
	case FMT_E_INVALID: return "invalid argument";
	case FMT_E_TOO_BIG: return "over a size limit";
	case FMT_E_NOMEM: return "out of memory or over a memory budget";
	case FMT_E_FULL: return "queue or buffer full";
	case FMT_E_CHAIN: return "hash chain or Merkle root mismatch";
	case FMT_E_STATE: return "operation not allowed in this state";
	case FMT_E_NOT_FOUND: return "not found";
	case FMT_E_SHUTDOWN: return "shutting down";
	default:
		break;
	}
	if (err < 0 && err > -4096)
		return strerror(-err);
	return "unknown error";
}

void fmt_assert_fail(const char *expr, const char *file, int line)
{
	fprintf(stderr, "assertion failed: %s at %s:%d\n", expr, file, line);
	fflush(stderr);
	abort();
}

uint64_t fmt_xxh3(const void *data, size_t len)
{
	return XXH3_64bits(data, len);
}
