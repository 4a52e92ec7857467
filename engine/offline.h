/* SPDX-License-Identifier: Apache-2.0
 *
 * offline.h — verifying a whole data directory from its files alone, with
 * no engine running: what `hodei-audit verify --data-dir` runs, and what an
 * auditor runs on a copy or a restored backup (DESIGN.md §2.5).
 *
 * The check is read-only: it opens files O_RDONLY and lists directories; it
 * never writes, truncates, renames or deletes, so it is safe on a live
 * directory (a seal or commit racing the check can show up as a torn tail
 * or an unreferenced segment warning, never as damage done by the check).
 *
 * What it checks, per shard-NNN/ directory:
 *   - manifest.log: header, every record, and that each tenant's segments
 *     continue each other (seq 1.. with no gap, chain_before == the previous
 *     chain_after, the first one from the 32-zero-byte genesis);
 *   - every segment the manifest names: present, same size and XXH3-64 as
 *     recorded, every chunk checksum, event hash, chain value and Merkle
 *     root (fmt_segment_verify_buf), and a footer that agrees with the
 *     record (tenant, id, shard, seq range, chain values, root);
 *   - segment files the manifest does not name ("unreferenced segment": what
 *     an inserted segment looks like); *.tmp files are a seal in progress
 *     and are ignored;
 *   - the WAL files, in generation order: every record, and that each
 *     tenant's unsealed events continue its seq after the last sealed one
 *     (the chain is recomputed from the canonical bytes and reported as the
 *     tenant's head). A torn tail in the newest WAL file is a warning (it
 *     was never acknowledged); any other bad record is a problem.
 */
#ifndef HODEI_ENGINE_OFFLINE_H
#define HODEI_ENGINE_OFFLINE_H

#include "engine/engine.h"
#include "format/event.h"

#include <stdbool.h>
#include <stdint.h>

enum eng_offline_severity {
	ENG_OFFLINE_INFO = 0,    /* not a finding: a tenant's head after the check */
	ENG_OFFLINE_WARNING = 1, /* explained by a crash, needs no action (torn tail) */
	ENG_OFFLINE_PROBLEM = 2, /* damage or tampering: the history is not intact */
};

/* One finding. Every pointer is borrowed for the duration of the callback. */
struct eng_offline_problem {
	enum eng_offline_severity severity;
	const char *path;    /* the file concerned (or the directory) */
	const char *tenant;  /* "" when the finding is not about one tenant */
	uint64_t seq;        /* first seq concerned, 0 when unknown */
	uint64_t offset;     /* byte offset in path of a bad record, 0 when none */
	const char *message; /* one sentence, no trailing newline */
	/* INFO only: the tenant's last seq, sealed seq and chain head (the
	 * chain value after last_seq; unknown after a gap in the WAL). */
	uint64_t last_seq, sealed_seq;
	uint64_t tenant_problems;   /* problems reported about this tenant */
	bool chain_known;
	uint8_t chain[FMT_HASH_BYTES];
};

typedef void (*eng_offline_report_fn)(void *ctx, const struct eng_offline_problem *p);

struct eng_offline_summary {
	uint32_t shards;
	uint32_t tenants;
	uint64_t segments;     /* segment records checked */
	uint64_t events;       /* rows of checked segments + unsealed WAL events */
	uint64_t wal_files;
	uint64_t problems;
	uint64_t warnings;
	bool ok;               /* problems == 0 */
};

/* Checks every shard of data_dir (see the top of this file). report (may be
 * NULL) is called on this thread for each finding, in file order; ctx is
 * passed through. *out is filled in every case.
 * Returns 0 when the check ran — out->ok says whether everything is intact;
 * -errno when data_dir cannot be listed; FMT_E_NOT_FOUND when it holds no
 * shard-NNN directory; FMT_E_NOMEM. */
int eng_verify_dir(const char *data_dir, eng_offline_report_fn report, void *ctx,
		   struct eng_offline_summary *out);

/* Reads a whole regular file into a malloc'd buffer (*out, *len; the
 * caller frees it), without following a final symlink. Returns 0, -errno
 * (-EISDIR, -EINVAL for other non-regular files), FMT_E_NOMEM or
 * FMT_E_TRUNCATED if the file shrank while being read. */
int eng_file_read_all(const char *path, uint8_t **out, size_t *len);

/* Maps a whole regular file read-only, its pages faulted in at once
 * (MAP_POPULATE): for reading a big file once (WAL replay), this costs no
 * copy and no anonymous memory, where eng_file_read_all() copies it all.
 * Release with eng_file_unmap(). The file must not shrink while mapped.
 * Returns as eng_file_read_all(), or -errno of mmap. */
int eng_file_map(const char *path, const uint8_t **out, size_t *len);
/* Opens path (flags: O_RDONLY or O_RDWR; close-on-exec, no symlink
 * followed), which must be a regular file: its fd and size, or -errno
 * (-EISDIR, -EINVAL for another kind of file). */
int eng_file_open_regular(const char *path, int flags, int *fd, size_t *size);
/* eng_file_map() through an fd from eng_file_open_regular() and its size
 * (the fd stays open and owned by the caller). */
int eng_file_map_fd(int fd, size_t size, const uint8_t **out, size_t *len);
void eng_file_unmap(const uint8_t *p, size_t len);

/* A manifest segment record (docs/FORMAT.md §6), for tools that dump it. */
struct eng_manifest_entry {
	char tenant[FMT_TENANT_MAX + 1];
	uint64_t segment_id;
	uint64_t first_seq, last_seq;
	uint32_t row_count;
	uint64_t file_size;
	uint64_t file_checksum;            /* XXH3-64 of the whole file */
	int64_t min_occurred_ns, max_occurred_ns;
	int64_t min_received_ns, max_received_ns;
	uint8_t chain_before[FMT_HASH_BYTES];
	uint8_t chain_after[FMT_HASH_BYTES];
	uint8_t merkle_root[FMT_HASH_BYTES];
};

/* Decodes the payload of a FMT_REC_SEGMENT manifest record.
 * Returns 0 or FMT_E_CORRUPT. */
int eng_manifest_entry_decode(const uint8_t *payload, uint32_t len, struct eng_manifest_entry *out);

/* A manifest export record (FMT_REC_EXPORT, docs/FORMAT.md §6). */
struct eng_manifest_export {
	char tenant[FMT_TENANT_MAX + 1];
	uint64_t segment_id;
	uint8_t kind;                      /* enum eng_export_kind */
	int64_t at_ns;
	char ref[ENG_EXPORT_REF_MAX + 1];  /* the S3 version id for kind 1 */
};

/* Decodes the payload of a FMT_REC_EXPORT record. Returns 0 or FMT_E_CORRUPT. */
int eng_manifest_export_decode(const uint8_t *payload, uint32_t len, struct eng_manifest_export *out);

/* "info", "warning" or "problem". */
const char *eng_offline_severity_name(enum eng_offline_severity s);

#endif
