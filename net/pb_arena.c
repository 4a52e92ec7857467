// SPDX-License-Identifier: Apache-2.0
#include "net/pb_arena.h"

#include <stdint.h>
#include <stdlib.h>

#define CHUNK_MIN (64u << 10)

struct pb_arena_chunk {
	struct pb_arena_chunk *next;
	size_t size, off;
	max_align_t data[];
};

static void *arena_alloc_cb(void *data, size_t size)
{
	return pb_arena_alloc(data, size);
}

static void arena_free_cb(void *data, void *ptr)
{
	(void)data;
	(void)ptr; /* freed with the arena */
}

void pb_arena_init(struct pb_arena *a, size_t cap)
{
	*a = (struct pb_arena){ .cap = cap };
	a->allocator.alloc = arena_alloc_cb;
	a->allocator.free = arena_free_cb;
	a->allocator.allocator_data = a;
}

void *pb_arena_alloc(struct pb_arena *a, size_t size)
{
	size_t need = (size + _Alignof(max_align_t) - 1) & ~(_Alignof(max_align_t) - 1);
	if (need < size)
		return NULL;
	struct pb_arena_chunk *c = a->chunks;
	if (!c || c->size - c->off < need) {
		size_t sz = need > CHUNK_MIN ? need : CHUNK_MIN;
		/* Grow chunks with the arena, so a big request takes few mallocs. */
		if (a->used / 2 > sz)
			sz = a->used / 2;
		if (a->used + sz + sizeof(*c) > a->cap)
			sz = need;
		if (a->used + sz + sizeof(*c) > a->cap) {
			a->exceeded = true;
			return NULL;
		}
		c = malloc(sizeof(*c) + sz);
		if (!c)
			return NULL;
		c->size = sz;
		c->off = 0;
		c->next = a->chunks;
		a->chunks = c;
		a->used += sz + sizeof(*c);
	}
	void *p = (char *)c->data + c->off;
	c->off += need;
	return p;
}

void pb_arena_release(struct pb_arena *a)
{
	struct pb_arena_chunk *c = a->chunks;
	while (c) {
		struct pb_arena_chunk *next = c->next;
		free(c);
		c = next;
	}
	a->chunks = NULL;
	a->used = 0;
	a->exceeded = false;
}
