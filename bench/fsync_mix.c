// SPDX-License-Identifier: Apache-2.0
/*
 * fsync_mix.c — hodei-bench-fsync: what the disk under a data directory
 * gives a WAL-like writer, with and without segment-like writes beside it.
 * The floor under the server's ack latency (docs/PERFORMANCE.md, eighth
 * round): if the device's fdatasync p99 is far below the server's WAL
 * fsync p99, the rest of the tail is in the server.
 *
 * The WAL writer: --commits times, one --commit-bytes write followed by
 * fdatasync, one commit every --period-us (open loop: a late commit is not
 * made up by skipping the wait), either appending to a new file or, with
 * --overwrite, overwriting a file written and fsynced first (a recycled
 * WAL file, ADR 0016). The segment writer (a thread, when --segments-mbps
 * > 0): files of --segment-bytes, each created, written, fsynced and
 * closed, at that rate, over a ring of 64 names in the same directory.
 * With --segment-step S, a file is written in pieces of S bytes, each
 * written back (sync_file_range, waited for) before the next, and then
 * fsynced: the server's paced seal writes (--seal-write-step, ADR 0019).
 *
 * Prints one line on stderr and one JSON object on stdout: the fdatasync
 * latency quantiles of the WAL writer (ms), and the share of the run's
 * time that a request arriving at a random moment would spend waiting
 * more than --target-ms for the fdatasync in progress (the sum of every
 * fdatasync's time past the target, over the run's time). When that
 * share is above 1 %, no server that acknowledges after fdatasync can
 * have an ack p99 under the target on this disk. Files are removed at
 * the end.
 * Nothing is compared with anything; exit 2 on bad arguments, 1 on an I/O
 * error.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SEGMENT_NAMES 64

struct opts {
	const char *dir;
	long commits, commit_bytes, period_us, segment_bytes, segment_step, target_ms;
	double segments_mbps;
	bool overwrite;
};

struct segments {
	const struct opts *o;
	_Atomic bool stop;
	int err;            /* errno of the first failure */
	long files;
};

static double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* Sleeps until the absolute monotonic time `at` (ms); no-op when past. */
static void sleep_until(double at)
{
	double wait = at - now_ms();
	if (wait > 0)
		usleep((useconds_t)(wait * 1000));
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static bool write_all(int fd, const char *buf, size_t len, off_t off)
{
	while (len) {
		ssize_t n = pwrite(fd, buf, len, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		buf += n;
		len -= (size_t)n;
		off += n;
	}
	return true;
}

/* The pieces a segment file is written in: --segment-step, or the whole
 * file at once. */
static long segment_piece(const struct opts *o)
{
	return o->segment_step ? o->segment_step : o->segment_bytes;
}

static void *segments_main(void *arg)
{
	struct segments *sg = arg;
	const struct opts *o = sg->o;
	char *buf = malloc((size_t)o->segment_bytes);
	if (!buf) {
		sg->err = ENOMEM;
		return NULL;
	}
	memset(buf, 's', (size_t)o->segment_bytes);
	double period = (double)o->segment_bytes / (o->segments_mbps * 1e6) * 1e3, next = now_ms();
	while (!atomic_load(&sg->stop)) {
		char path[4200];
		snprintf(path, sizeof(path), "%s/segment-%ld.tmp", o->dir, sg->files % SEGMENT_NAMES);
		unlink(path);
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		bool ok = fd >= 0;
		long step = segment_piece(o);
		for (long at = 0; ok && at < o->segment_bytes; at += step) {
			long n = at + step <= o->segment_bytes ? step : o->segment_bytes - at;
			ok = write_all(fd, buf + at, (size_t)n, at) &&
			     (!o->segment_step ||
			      sync_file_range(fd, at, n, SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
							     SYNC_FILE_RANGE_WAIT_AFTER) == 0);
		}
		ok = ok && fsync(fd) == 0;
		if (!ok && !sg->err)
			sg->err = errno ? errno : EIO;
		if (fd >= 0)
			close(fd);
		if (!ok)
			break;
		sg->files++;
		next += period;
		sleep_until(next);
	}
	free(buf);
	for (long i = 0; i < SEGMENT_NAMES && i < sg->files; i++) {
		char path[4200];
		snprintf(path, sizeof(path), "%s/segment-%ld.tmp", o->dir, i);
		unlink(path);
	}
	return NULL;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: hodei-bench-fsync --dir DIR [--commits N (1..10000000, 5000)]\n"
		"         [--commit-bytes B (1..67108864, 57344)] [--period-us U (0..1000000, 1000)]\n"
		"         [--overwrite] [--segments-mbps M (0..10000, 0: none)]\n"
		"         [--segment-bytes S (4096..1073741824, 4194304)]\n"
		"         [--segment-step P (0..1073741824, 0: each file in one write)]\n"
		"         [--target-ms T (1..10000, 5)]\n");
}

/* Parses a whole decimal number in [lo, hi]. */
static bool parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

static int parse(int argc, char **argv, struct opts *o)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "commits", required_argument, NULL, 'n' },
		{ "commit-bytes", required_argument, NULL, 'b' },
		{ "period-us", required_argument, NULL, 'p' },
		{ "overwrite", no_argument, NULL, 'o' },
		{ "segments-mbps", required_argument, NULL, 'm' },
		{ "segment-bytes", required_argument, NULL, 's' },
		{ "segment-step", required_argument, NULL, 'S' },
		{ "target-ms", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	*o = (struct opts){ .commits = 5000, .commit_bytes = 57344, .period_us = 1000,
			    .segment_bytes = 4194304, .target_ms = 5 };
	int c;
	long mbps = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		bool ok = true;
		switch (c) {
		case 'd': o->dir = optarg; break;
		case 'n': ok = parse_long(optarg, 1, 10000000, &o->commits); break;
		case 'b': ok = parse_long(optarg, 1, 64l << 20, &o->commit_bytes); break;
		case 'p': ok = parse_long(optarg, 0, 1000000, &o->period_us); break;
		case 'o': o->overwrite = true; break;
		case 'm': ok = parse_long(optarg, 0, 10000, &mbps); break;
		case 's': ok = parse_long(optarg, 4096, 1l << 30, &o->segment_bytes); break;
		case 'S': ok = parse_long(optarg, 0, 1l << 30, &o->segment_step); break;
		case 't': ok = parse_long(optarg, 1, 10000, &o->target_ms); break;
		default: ok = false;
		}
		if (!ok) {
			if (c != '?' && c != 'h')
				fprintf(stderr, "hodei-bench-fsync: bad value: %s\n", optarg);
			usage();
			return 2;
		}
	}
	o->segments_mbps = (double)mbps;
	if (optind != argc || !o->dir) {
		fprintf(stderr, "hodei-bench-fsync: %s\n", o->dir ? "unexpected argument" : "--dir is required");
		usage();
		return 2;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o;
	int rc = parse(argc, argv, &o);
	if (rc)
		return rc;
	char path[4200];
	snprintf(path, sizeof(path), "%s/wal-test.log", o.dir);
	char *buf = malloc((size_t)o.commit_bytes);
	double *lat = malloc((size_t)o.commits * sizeof(double));
	if (!buf || !lat) {
		fprintf(stderr, "hodei-bench-fsync: out of memory\n");
		return 1;
	}
	memset(buf, 'w', (size_t)o.commit_bytes);
	unlink(path);
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	bool ok = fd >= 0;
	if (ok && o.overwrite) {
		for (long i = 0; ok && i < o.commits; i++)
			ok = write_all(fd, buf, (size_t)o.commit_bytes, (off_t)i * o.commit_bytes);
		ok = ok && fsync(fd) == 0;
	}
	struct segments sg = { .o = &o };
	pthread_t th;
	bool seg_started = ok && o.segments_mbps > 0 && pthread_create(&th, NULL, segments_main, &sg) == 0;
	double started = now_ms(), next = started;
	for (long i = 0; ok && i < o.commits; i++) {
		double t0 = now_ms();
		ok = write_all(fd, buf, (size_t)o.commit_bytes, (off_t)i * o.commit_bytes) &&
		     fdatasync(fd) == 0;
		lat[i] = now_ms() - t0;
		next += (double)o.period_us / 1000;
		sleep_until(next);
	}
	double run_ms = now_ms() - started;
	int err = ok ? 0 : errno;
	if (seg_started) {
		atomic_store(&sg.stop, true);
		pthread_join(th, NULL);
	}
	if (fd >= 0)
		close(fd);
	unlink(path);
	if (!err && sg.err)
		err = sg.err;
	if (err) {
		fprintf(stderr, "hodei-bench-fsync: %s: %s\n", o.dir, strerror(err));
		return 1;
	}
	double over = 0;
	for (long i = 0; i < o.commits; i++)
		if (lat[i] > (double)o.target_ms)
			over += lat[i] - (double)o.target_ms;
	double share = run_ms > 0 ? over / run_ms : 0;
	qsort(lat, (size_t)o.commits, sizeof(double), cmp_double);
#define Q(p) lat[(size_t)((double)(o.commits - 1) * (p))]
	fprintf(stderr,
		"hodei-bench-fsync: %s WAL file, %ld commits of %ld bytes every %ld us, segments "
		"%.0f MB/s (%ld files, steps of %ld bytes): fdatasync p50 %.2f p99 %.2f p99.9 %.2f "
		"max %.2f ms; %.2f %% of the time waiting past %ld ms\n",
		o.overwrite ? "overwritten" : "new", o.commits, o.commit_bytes, o.period_us,
		o.segments_mbps, sg.files, segment_piece(&o), Q(0.5), Q(0.99), Q(0.999),
		lat[o.commits - 1], share * 100, o.target_ms);
	printf("{\"overwrite\": %s, \"commits\": %ld, \"commit_bytes\": %ld, \"period_us\": %ld, "
	       "\"segments_mbps\": %.0f, \"segment_bytes\": %ld, \"segment_step\": %ld, "
	       "\"segment_files\": %ld, "
	       "\"fdatasync_ms\": {\"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, \"p999\": %.3f, "
	       "\"max\": %.3f}, \"run_ms\": %.1f, \"target_ms\": %ld, "
	       "\"share_waiting_past_target\": %.6f}\n",
	       o.overwrite ? "true" : "false", o.commits, o.commit_bytes, o.period_us, o.segments_mbps,
	       o.segment_bytes, o.segment_step, sg.files, Q(0.5), Q(0.9), Q(0.99), Q(0.999),
	       lat[o.commits - 1], run_ms, o.target_ms, share);
#undef Q
	free(buf);
	free(lat);
	return 0;
}
