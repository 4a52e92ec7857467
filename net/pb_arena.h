/* SPDX-License-Identifier: Apache-2.0
 *
 * pb_arena.h — the allocator protobuf-c decodes a request with: a bump
 * arena with a hard cap, so a small message that declares huge repeated
 * fields cannot make the server allocate without bound. Everything is
 * freed at once when the call ends; free() of one object is a no-op.
 */
#ifndef HODEI_NET_PB_ARENA_H
#define HODEI_NET_PB_ARENA_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>

struct pb_arena_chunk;

struct pb_arena {
	ProtobufCAllocator allocator;   /* pass &arena->allocator to protobuf-c */
	struct pb_arena_chunk *chunks;
	size_t used;                    /* bytes handed out, chunk headers included */
	size_t cap;
	bool exceeded;                  /* an allocation was refused by the cap */
};

void pb_arena_init(struct pb_arena *a, size_t cap);
void *pb_arena_alloc(struct pb_arena *a, size_t size);
void pb_arena_release(struct pb_arena *a);

#endif
