// SPDX-License-Identifier: Apache-2.0
#include "net/grpc_status.h"

static const char *const names[GRPC_STATUS_COUNT] = {
	"OK",		"CANCELLED",	     "UNKNOWN",		 "INVALID_ARGUMENT",
	"DEADLINE_EXCEEDED", "NOT_FOUND",    "ALREADY_EXISTS",	 "PERMISSION_DENIED",
	"RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
	"UNIMPLEMENTED",	"INTERNAL",	     "UNAVAILABLE",	 "DATA_LOSS",
	"UNAUTHENTICATED",
};

const char *grpc_status_name(int code)
{
	if (code < 0 || code >= GRPC_STATUS_COUNT)
		return "UNKNOWN";
	return names[code];
}
