// SPDX-License-Identifier: Apache-2.0
/*
 * memtable.c — a tenant's unsealed rows, searchable as soon as committed.
 *
 * Each row is kept as its canonical encoding (the very bytes the WAL holds
 * and the event hash covers) in an arena of chunks that never move, plus a
 * decoded view (struct fmt_event) whose strings and attribute array point
 * into the arena. Rows rebuilt by the WAL replay instead borrow their
 * bytes from the replayed file's read-only mapping, which the shard keeps
 * until that file is reclaimed (wal.c): copying them cost a third of a
 * restart, most of it faulting in fresh anonymous pages. Sealing hands
 * the views and chain values straight to fmt_segment_build(); searching
 * reads the views. Growth is geometric for the row arrays and by chunks of
 * ENG_ARENA_CHUNK_BYTES for the arena; the shard charges
 * eng_memtable_bytes() against its budget.
 */
#include "engine/internal.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* Arena chunks start small and double up to the maximum, so that a shard
 * with thousands of small tenants does not spend a megabyte on each. */
#define ENG_ARENA_CHUNK_MIN_BYTES (16u << 10)
#define ENG_ARENA_CHUNK_BYTES (1u << 20)
#define ENG_ROWS_MIN 64
#define ENG_ROW_OVERHEAD_BYTES \
	(sizeof(struct fmt_event) + 2 * FMT_HASH_BYTES + sizeof(void *) + sizeof(uint32_t) + \
	 sizeof(uint64_t))

struct eng_arena_chunk {
	struct eng_arena_chunk *next;
	uint64_t used, cap;
	alignas(16) uint8_t data[];
};

/* The row arrays. Doubling one by realloc copies it whole, on the shard
 * thread: 80 MB of arrays at 256 Ki rows, tens of ms in which no append
 * is acknowledged, and fresh pages to fault in. Past ARRAY_MAP_BYTES an
 * array is its own mapping and grows with mremap(), which moves page
 * table entries instead of bytes. Each array carries a header saying
 * which it is and how long, so a growth that failed half way (some arrays
 * larger than row_cap says) is still freed right. */
#define ARRAY_MAP_BYTES (256u << 10)
#define ARRAY_HDR_BYTES 64 /* keeps the data as aligned as malloc's */

struct array_hdr {
	size_t len; /* bytes, header included */
	bool mapped;
};

static size_t page_round(size_t n)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	return (n + page - 1) & ~(page - 1);
}

static struct array_hdr *array_hdr(void *data)
{
	return data ? (struct array_hdr *)((uint8_t *)data - ARRAY_HDR_BYTES) : NULL;
}

static void array_free(void *data)
{
	struct array_hdr *h = array_hdr(data);
	if (h && h->mapped)
		munmap(h, h->len);
	else
		free(h);
}

/* Grows an array to hold `bytes` (never shrinks one); NULL leaves it as
 * it was. */
static void *array_grow(void *data, size_t bytes)
{
	struct array_hdr *h = array_hdr(data), *n;
	size_t len = bytes + ARRAY_HDR_BYTES;
	if (len < ARRAY_MAP_BYTES) {
		ASSERT(!h || !h->mapped);
		if (!(n = realloc(h, len)))
			return NULL;
		n->mapped = false;
	} else if (h && h->mapped) {
		len = page_round(len);
		if ((n = mremap(h, h->len, len, MREMAP_MAYMOVE)) == MAP_FAILED)
			return NULL;
	} else {
		len = page_round(len);
		n = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (n == MAP_FAILED)
			return NULL;
		if (h) {
			memcpy((uint8_t *)n + ARRAY_HDR_BYTES, data, h->len - ARRAY_HDR_BYTES);
			free(h);
		}
		n->mapped = true;
	}
	n->len = len;
	return (uint8_t *)n + ARRAY_HDR_BYTES;
}

void eng_memtable_init(struct eng_memtable *m, uint64_t first_seq,
		       const uint8_t chain_before[FMT_HASH_BYTES])
{
	memset(m, 0, sizeof(*m));
	m->first_seq = first_seq;
	memcpy(m->chain_before, chain_before, FMT_HASH_BYTES);
	m->min_occurred_ns = INT64_MAX;
	m->max_occurred_ns = INT64_MIN;
}

void eng_memtable_free(struct eng_memtable *m)
{
	struct eng_arena_chunk *c = m->chunks;
	while (c) {
		struct eng_arena_chunk *next = c->next;
		free(c);
		c = next;
	}
	array_free(m->rows);
	array_free(m->chains);
	array_free(m->hashes);
	array_free(m->canon);
	array_free(m->canon_len);
	array_free(m->gen);
	m->chunks = NULL;
	m->rows = NULL;
	m->chains = NULL;
	m->hashes = NULL;
	m->canon = NULL;
	m->canon_len = NULL;
	m->gen = NULL;
	m->row_count = m->row_cap = 0;
	m->arena_bytes = 0;
	m->borrowed_bytes = 0;
}

uint64_t eng_memtable_bytes(const struct eng_memtable *m)
{
	return m->arena_bytes + m->borrowed_bytes + (uint64_t)m->row_cap * ENG_ROW_OVERHEAD_BYTES;
}

uint64_t eng_memtable_growth(const struct eng_memtable *m, uint32_t rows, uint64_t bytes)
{
	uint64_t grow = 0;
	if (m->row_count + (uint64_t)rows > m->row_cap) {
		uint64_t cap = m->row_cap ? m->row_cap : ENG_ROWS_MIN;
		while (cap < m->row_count + (uint64_t)rows)
			cap *= 2;
		grow += (cap - m->row_cap) * ENG_ROW_OVERHEAD_BYTES;
	}
	/* Canonical bytes and attribute arrays, plus the chunk that may have
	 * to be started for them. */
	uint64_t arena = bytes + (uint64_t)rows * (16 + FMT_ATTRS_HARD_MAX / 8);
	uint64_t chunk = m->chunks ? FMT_MIN(m->chunks->cap * 2, (uint64_t)ENG_ARENA_CHUNK_BYTES)
				   : ENG_ARENA_CHUNK_MIN_BYTES;
	return grow + arena + chunk + sizeof(struct eng_arena_chunk);
}

uint32_t eng_memtable_visible(const struct eng_memtable *m, uint64_t durable_seq)
{
	if (m->row_count == 0 || durable_seq < m->first_seq)
		return 0;
	return (uint32_t)FMT_MIN((uint64_t)m->row_count, durable_seq - m->first_seq + 1);
}

static void *arena_alloc(struct eng_memtable *m, uint64_t n)
{
	n = (n + 15) & ~(uint64_t)15;
	struct eng_arena_chunk *c = m->chunks;
	if (!c || c->cap - c->used < n) {
		uint64_t cap = c ? FMT_MIN(c->cap * 2, (uint64_t)ENG_ARENA_CHUNK_BYTES)
				 : ENG_ARENA_CHUNK_MIN_BYTES;
		cap = FMT_MAX(cap, n);
		c = malloc(sizeof(*c) + cap);
		if (!c)
			return NULL;
		c->used = 0;
		c->cap = cap;
		c->next = m->chunks;
		m->chunks = c;
		m->arena_bytes += sizeof(*c) + cap;
	}
	void *p = c->data + c->used;
	c->used += n;
	return p;
}

static int grow_rows(struct eng_memtable *m)
{
	uint32_t cap = m->row_cap ? m->row_cap * 2 : ENG_ROWS_MIN;
	if (cap > FMT_SEG_ROWS_MAX)
		return FMT_E_TOO_BIG;
	/* Each array is replaced only once its growth succeeded, so a failure
	 * leaves the memtable consistent at its old capacity. */
	struct fmt_event *rows = array_grow(m->rows, (size_t)cap * sizeof(*rows));
	if (!rows)
		return FMT_E_NOMEM;
	m->rows = rows;
	uint8_t(*chains)[FMT_HASH_BYTES] = array_grow(m->chains, (size_t)cap * FMT_HASH_BYTES);
	if (!chains)
		return FMT_E_NOMEM;
	m->chains = chains;
	uint8_t(*hashes)[FMT_HASH_BYTES] = array_grow(m->hashes, (size_t)cap * FMT_HASH_BYTES);
	if (!hashes)
		return FMT_E_NOMEM;
	m->hashes = hashes;
	const uint8_t **canon = array_grow(m->canon, (size_t)cap * sizeof(*canon));
	if (!canon)
		return FMT_E_NOMEM;
	m->canon = canon;
	uint32_t *canon_len = array_grow(m->canon_len, (size_t)cap * sizeof(*canon_len));
	if (!canon_len)
		return FMT_E_NOMEM;
	m->canon_len = canon_len;
	uint64_t *gen = array_grow(m->gen, (size_t)cap * sizeof(*gen));
	if (!gen)
		return FMT_E_NOMEM;
	m->gen = gen;
	m->row_cap = cap;
	return 0;
}

/* A view into [from, from + len] moved to the same place in `to`, empty
 * ones included (so that no row keeps a pointer into a reused buffer);
 * views elsewhere (an empty one may be NULL) are kept. */
static struct fmt_str rebase(struct fmt_str v, const uint8_t *from, uint32_t len, const uint8_t *to)
{
	uintptr_t p = (uintptr_t)v.ptr, f = (uintptr_t)from;
	if (p >= f && p - f <= len && v.len <= len - (p - f))
		v.ptr = (const void *)(to + (p - f));
	return v;
}

/* borrow: keep canon where it is (a replayed WAL file's mapping, which
 * outlives the row) instead of copying it into the arena. */
static int add(struct eng_memtable *m, const uint8_t *canon, uint32_t canon_len,
	       const struct fmt_event *decoded, const uint8_t hash[FMT_HASH_BYTES],
	       const uint8_t chain[FMT_HASH_BYTES], uint64_t wal_gen, bool borrow)
{
	int rc;
	if (m->row_count == m->row_cap && (rc = grow_rows(m)) != 0)
		return rc;
	const uint8_t *copy = canon;
	if (borrow) {
		m->borrowed_bytes += canon_len;
	} else {
		uint8_t *mem = arena_alloc(m, canon_len);
		if (!mem)
			return FMT_E_NOMEM;
		memcpy(mem, canon, canon_len);
		copy = mem;
	}
	struct fmt_attr attrs[FMT_ATTRS_HARD_MAX];
	struct fmt_event *ev = &m->rows[m->row_count];
	if (decoded) {
		*ev = *decoded;
		for (int f = 0; f < FMT_F_STRING_COUNT; f++)
			ev->str[f] = rebase(ev->str[f], canon, canon_len, copy);
		ev->details_json = rebase(ev->details_json, canon, canon_len, copy);
		ev->tenant = rebase(ev->tenant, canon, canon_len, copy);
		for (uint32_t i = 0; i < ev->attr_count; i++) {
			attrs[i].key = rebase(decoded->attrs[i].key, canon, canon_len, copy);
			attrs[i].value = rebase(decoded->attrs[i].value, canon, canon_len, copy);
		}
	} else if ((rc = fmt_event_canon_decode(copy, canon_len, ev, attrs, FMT_ATTRS_HARD_MAX)) != 0) {
		return rc;
	}
	if (ev->attr_count) {
		struct fmt_attr *kept = arena_alloc(m, sizeof(*kept) * ev->attr_count);
		if (!kept)
			return FMT_E_NOMEM;
		memcpy(kept, attrs, sizeof(*kept) * ev->attr_count);
		ev->attrs = kept;
	} else {
		ev->attrs = NULL;
	}
	if (m->row_count == 0) {
		if (m->first_seq == 0)
			m->first_seq = ev->seq;
		m->oldest_received_ns = ev->received_at_ns;
		m->wal_gen_min = wal_gen;
	}
	ASSERT(ev->seq == m->first_seq + m->row_count); /* I1 */
	memcpy(m->chains[m->row_count], chain, FMT_HASH_BYTES);
	memcpy(m->hashes[m->row_count], hash, FMT_HASH_BYTES);
	m->canon[m->row_count] = copy;
	m->canon_len[m->row_count] = canon_len;
	m->gen[m->row_count] = wal_gen;
	m->min_occurred_ns = FMT_MIN(m->min_occurred_ns, ev->occurred_at_ns);
	m->max_occurred_ns = FMT_MAX(m->max_occurred_ns, ev->occurred_at_ns);
	m->row_count++;
	return 0;
}

int eng_memtable_add(struct eng_memtable *m, const uint8_t *canon, uint32_t canon_len,
		     const struct fmt_event *ev, const uint8_t hash[FMT_HASH_BYTES],
		     const uint8_t chain[FMT_HASH_BYTES], uint64_t wal_gen)
{
	ASSERT(ev->attr_count <= FMT_ATTRS_HARD_MAX);
	return add(m, canon, canon_len, ev, hash, chain, wal_gen, false);
}

int eng_memtable_add_borrowed(struct eng_memtable *m, const uint8_t *canon, uint32_t canon_len,
			      const struct fmt_event *ev, const uint8_t hash[FMT_HASH_BYTES],
			      const uint8_t chain[FMT_HASH_BYTES], uint64_t wal_gen)
{
	ASSERT(ev->attr_count <= FMT_ATTRS_HARD_MAX);
	return add(m, canon, canon_len, ev, hash, chain, wal_gen, true);
}

int eng_memtable_split(struct eng_memtable *m, uint32_t n, struct eng_memtable *rest)
{
	ASSERT(n >= 1 && n <= m->row_count);
	eng_memtable_init(rest, m->first_seq + n, m->chains[n - 1]);
	for (uint32_t i = n; i < m->row_count; i++) {
		/* The view points into canon[i]: add() rebases it onto the copy. */
		int rc = add(rest, m->canon[i], m->canon_len[i], &m->rows[i], m->hashes[i],
			     m->chains[i], m->gen[i], false);
		if (rc) {
			eng_memtable_free(rest);
			eng_memtable_init(rest, m->first_seq + n, m->chains[n - 1]);
			return rc;
		}
	}
	/* The arena and arrays stay as they are; min/max_occurred_ns keep
	 * covering the moved rows too, which only loosens them as bounds. */
	m->row_count = n;
	return 0;
}
