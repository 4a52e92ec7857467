// SPDX-License-Identifier: Apache-2.0
/*
 * gen_main.c — hodei-bench-gen: prints the benchmark's realistic events
 * (bench/gen.h) as NDJSON, one per line, the JSON form of DESIGN.md §5 that
 * `hodei-audit append` reads; --with-tenant-id adds "tenant_id" (for feeds
 * that split by tenant). Same --seed, same output.
 *
 *   hodei-bench-gen [--seed N] [--count N] [--tenants N] [--step-ns N] [--with-tenant-id]
 *
 * --step-ns is the mean gap between events' occurred_at (default 1000).
 */
#include "bench/gen.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
	unsigned long long seed = 1, count = 1000, tenants = GEN_TENANTS_DEFAULT, step = GEN_STEP_DEFAULT_NS;
	bool with_tenant = false;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--with-tenant-id") == 0) {
			with_tenant = true;
			continue;
		}
		unsigned long long *dst = strcmp(argv[i], "--seed") == 0      ? &seed
					  : strcmp(argv[i], "--count") == 0   ? &count
					  : strcmp(argv[i], "--tenants") == 0 ? &tenants
					  : strcmp(argv[i], "--step-ns") == 0 ? &step
									      : NULL;
		char *end = NULL;
		if (!dst || i + 1 >= argc || (*dst = strtoull(argv[++i], &end, 10), *end) ||
		    (dst == &tenants && (tenants < 1 || tenants > 100000)) ||
		    (dst == &step && (step < 2 || step > 4000000000ull))) {
			fprintf(stderr, "usage: hodei-bench-gen [--seed N] [--count N] [--tenants 1..100000] "
					"[--step-ns 2..4000000000] [--with-tenant-id]\n");
			return 2;
		}
	}
	struct gen g;
	if (gen_init(&g, seed, (uint32_t)tenants) != 0)
		return 1;
	g.step_ns = (int64_t)step;
	char line[8192];
	for (unsigned long long i = 0; i < count; i++) {
		struct fmt_event ev;
		struct fmt_str tenant;
		gen_next(&g, &ev, &tenant);
		int n = gen_ndjson(&ev, with_tenant ? tenant : (struct fmt_str){ 0 }, line, sizeof(line));
		if (n < 0 || fwrite(line, 1, (size_t)n, stdout) != (size_t)n || putchar('\n') == EOF)
			return 1;
	}
	gen_free(&g);
	return fflush(stdout) == 0 ? 0 : 1;
}
