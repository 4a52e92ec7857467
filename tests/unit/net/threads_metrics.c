// SPDX-License-Identifier: Apache-2.0
//
// threads_metrics — net/metrics.c and net/admin.c under concurrency, as a
// plain program (its own main) so that the TSan pass can run it: Criterion
// cannot start under TSan (scripts/test.sh). Worker threads take label-set
// slots on first sight, bump per-slot counters and observe histograms
// (per-thread and one shared) while a client thread scrapes /metrics over
// real HTTP; at the end every total must be exact. Exits 0 or 1.
#include "net/admin.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define WORKERS 3
#define OPS_PER_WORKER 20000
#define NAMES 64     /* distinct tenants the workers see */
#define CAP 32       /* label-set capacity: half end up as "other" */
#define SCRAPES 40

#define CHECK(cond)                                                                    \
	do {                                                                           \
		if (!(cond)) {                                                         \
			fprintf(stderr, "threads_metrics: %s:%d: check failed: %s\n", \
				__FILE__, __LINE__, #cond);                            \
			exit(1);                                                       \
		}                                                                      \
	} while (0)

static struct mx_labelset tenants;
static struct mx_counter_vec ops_by_tenant;
static struct mx_hist hist_own[WORKERS], hist_shared;
static _Atomic(struct admin *) admin;

static int render(void *ctx, struct mx_buf *b)
{
	const struct mx_hist *all[WORKERS + 1];
	for (int i = 0; i < WORKERS; i++)
		all[i] = &hist_own[i];
	all[WORKERS] = &hist_shared;
	mx_family(b, "hodei_test_ops_total", "counter", "Operations by tenant.");
	mx_counter_vec_write(b, "hodei_test_ops_total", "tenant", &tenants, &ops_by_tenant);
	mx_family(b, "hodei_test_op_duration_seconds", "histogram", "Operation latency.");
	mx_hist_write_sum(b, "hodei_test_op_duration_seconds", NULL, 0, all, WORKERS + 1);
	return admin_write_metrics(atomic_load(&admin), b);
}

static void *worker(void *arg)
{
	int id = (int)(intptr_t)arg;
	char name[32];
	uint32_t cached[NAMES];
	for (int i = 0; i < NAMES; i++)
		cached[i] = UINT32_MAX - 1; /* not looked up yet */
	for (uint64_t k = 0; k < OPS_PER_WORKER; k++) {
		int t = (int)((k * 7 + (uint64_t)id * 13) % NAMES);
		if (cached[t] == UINT32_MAX - 1) {
			int n = snprintf(name, sizeof(name), "tenant-%d", t);
			cached[t] = mx_labelset_slot(&tenants, name, (size_t)n);
		}
		mx_counter_vec_add(&ops_by_tenant, cached[t], 1);
		mx_hist_observe_ns(&hist_own[id], k * 1000);
		mx_hist_observe_ns(&hist_shared, k * 1000);
	}
	return NULL;
}

/* GET /metrics on a fresh connection; returns the body length. */
static size_t scrape(uint16_t port, char *buf, size_t cap)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(fd >= 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	static const char req[] = "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
	CHECK(send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof(req) - 1));
	size_t len = 0;
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		CHECK(poll(&p, 1, 30000) == 1);
		ssize_t r = recv(fd, buf + len, cap - 1 - len, 0);
		CHECK(r >= 0);
		if (r == 0)
			break;
		len += (size_t)r;
		CHECK(len < cap - 1);
	}
	buf[len] = '\0';
	close(fd);
	CHECK(strncmp(buf, "HTTP/1.1 200", 12) == 0);
	char *body = strstr(buf, "\r\n\r\n");
	CHECK(body != NULL);
	CHECK(strstr(body, "# TYPE hodei_test_ops_total counter\n") != NULL);
	CHECK(strstr(body, "hodei_test_op_duration_seconds_count ") != NULL);
	return len;
}

static _Atomic bool workers_done;
static _Atomic uint64_t scrapes;

/* At least SCRAPES scrapes, and on until the workers are done, so that
 * rendering overlaps with the updates. */
static void *scraper(void *arg)
{
	static char buf[1 << 20];
	uint16_t port = (uint16_t)(uintptr_t)arg;
	for (uint64_t i = 0; i < SCRAPES || !atomic_load(&workers_done); i++) {
		scrape(port, buf, sizeof(buf));
		atomic_fetch_add(&scrapes, 1);
	}
	return NULL;
}

/* Adds up the values of every line of body that starts with prefix. */
static uint64_t sum_lines(const char *body, const char *prefix)
{
	uint64_t total = 0;
	size_t n = strlen(prefix);
	for (const char *l = body; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
		if (strncmp(l, prefix, n) != 0)
			continue;
		const char *v = strchr(l, ' ');
		CHECK(v != NULL);
		total += strtoull(v + 1, NULL, 10);
	}
	return total;
}

int main(void)
{
	CHECK(mx_labelset_init(&tenants, CAP, 0) == 0);
	CHECK(mx_counter_vec_init(&ops_by_tenant, &tenants) == 0);
	for (int i = 0; i < WORKERS; i++)
		CHECK(mx_hist_init(&hist_own[i], NULL, 0) == 0);
	CHECK(mx_hist_init(&hist_shared, NULL, 0) == 0);

	struct admin_ops ops = { .render_metrics = render };
	struct admin *a = NULL;
	CHECK(admin_start("127.0.0.1:0", &ops, &a) == 0);
	atomic_store(&admin, a);

	pthread_t w[WORKERS], s;
	CHECK(pthread_create(&s, NULL, scraper, (void *)(uintptr_t)admin_port(a)) == 0);
	for (int i = 0; i < WORKERS; i++)
		CHECK(pthread_create(&w[i], NULL, worker, (void *)(intptr_t)i) == 0);
	for (int i = 0; i < WORKERS; i++)
		pthread_join(w[i], NULL);
	atomic_store(&workers_done, true);
	pthread_join(s, NULL);

	static char buf[1 << 20];
	scrape(admin_port(a), buf, sizeof(buf));
	const char *body = strstr(buf, "\r\n\r\n") + 4;
	const uint64_t total = (uint64_t)WORKERS * OPS_PER_WORKER;
	CHECK(mx_labelset_used(&tenants) == CAP);
	CHECK(sum_lines(body, "hodei_test_ops_total{") == total);
	CHECK(sum_lines(body, "hodei_test_op_duration_seconds_count ") == 2 * total);
	CHECK(sum_lines(body, "hodei_test_op_duration_seconds_bucket{le=\"+Inf\"} ") == 2 * total);
	CHECK(sum_lines(body, "hodei_admin_requests_total{path=\"/metrics\",code=\"200\"} ") ==
	      atomic_load(&scrapes));

	admin_stop(a);
	mx_counter_vec_destroy(&ops_by_tenant);
	mx_labelset_destroy(&tenants);
	printf("threads_metrics: %d workers x %d operations, %llu scrapes: ok\n", WORKERS,
	       OPS_PER_WORKER, (unsigned long long)atomic_load(&scrapes));
	return 0;
}
