/* SPDX-License-Identifier: Apache-2.0
 *
 * grpc_status.h — gRPC status codes (grpc/doc/statuscodes.md) and their
 * canonical names, shared by the server, the client and the metrics.
 */
#ifndef HODEI_NET_GRPC_STATUS_H
#define HODEI_NET_GRPC_STATUS_H

enum grpc_status {
	GRPC_OK = 0,
	GRPC_CANCELLED = 1,
	GRPC_UNKNOWN = 2,
	GRPC_INVALID_ARGUMENT = 3,
	GRPC_DEADLINE_EXCEEDED = 4,
	GRPC_NOT_FOUND = 5,
	GRPC_ALREADY_EXISTS = 6,
	GRPC_PERMISSION_DENIED = 7,
	GRPC_RESOURCE_EXHAUSTED = 8,
	GRPC_FAILED_PRECONDITION = 9,
	GRPC_ABORTED = 10,
	GRPC_OUT_OF_RANGE = 11,
	GRPC_UNIMPLEMENTED = 12,
	GRPC_INTERNAL = 13,
	GRPC_UNAVAILABLE = 14,
	GRPC_DATA_LOSS = 15,
	GRPC_UNAUTHENTICATED = 16,
};
#define GRPC_STATUS_COUNT 17

/* "OK", "INVALID_ARGUMENT", ...; "UNKNOWN" for codes out of range. */
const char *grpc_status_name(int code);

#endif
