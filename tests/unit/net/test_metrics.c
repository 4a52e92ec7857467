// SPDX-License-Identifier: Apache-2.0
//
// Tests of net/metrics.c: the text format (families once, escaping, exact
// integers, shortest floats), the buffer bound and sticky errors,
// histograms (cumulative buckets, exact _sum, merge, concurrent observers),
// the bounded label set (cap, then "other"; concurrent first sights), and
// a rendered exposition accepted by `promtool check metrics`.
#include "net/metrics.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static struct mx_buf buf_new(size_t initial, size_t max)
{
	struct mx_buf b;
	cr_assert_eq(mx_buf_init(&b, initial, max), 0);
	return b;
}

Test(metrics, family_and_samples_exact_text)
{
	struct mx_buf b = buf_new(0, 0);
	struct mx_label l[] = { { "shard", "0" }, { "reason", "invalid" } };
	cr_assert_eq(mx_family(&b, "hodei_x_total", "counter", "Things done."), 0);
	cr_assert_eq(mx_sample_u64(&b, "hodei_x_total", NULL, 0, 7), 0);
	cr_assert_eq(mx_sample_u64(&b, "hodei_x_total", l, 2, 8), 0);
	cr_assert_eq(mx_family(&b, "hodei_lag_seconds", "gauge", ""), 0);
	cr_assert_eq(mx_sample_f64(&b, "hodei_lag_seconds", NULL, 0, 0.25), 0);
	cr_assert_str_eq(b.data, "# HELP hodei_x_total Things done.\n"
				 "# TYPE hodei_x_total counter\n"
				 "hodei_x_total 7\n"
				 "hodei_x_total{shard=\"0\",reason=\"invalid\"} 8\n"
				 "# HELP hodei_lag_seconds \n"
				 "# TYPE hodei_lag_seconds gauge\n"
				 "hodei_lag_seconds 0.25\n");
	cr_assert_eq(b.len, strlen(b.data));
	cr_assert_eq(mx_buf_err(&b), 0);
	mx_buf_free(&b);
}

Test(metrics, label_values_and_help_are_escaped)
{
	struct mx_buf b = buf_new(0, 0);
	struct mx_label l[] = { { "tenant", "a\\b\"c\nd" } };
	cr_assert_eq(mx_family(&b, "m", "gauge", "back\\slash \"quoted\"\nnext"), 0);
	cr_assert_eq(mx_sample_u64(&b, "m", l, 1, 1), 0);
	cr_assert_str_eq(b.data, "# HELP m back\\\\slash \"quoted\"\\nnext\n"
				 "# TYPE m gauge\n"
				 "m{tenant=\"a\\\\b\\\"c\\nd\"} 1\n");
	mx_buf_free(&b);
}

Test(metrics, integers_are_exact_and_floats_shortest)
{
	struct mx_buf b = buf_new(0, 0);
	mx_family(&b, "u", "counter", "h");
	mx_sample_u64(&b, "u", NULL, 0, UINT64_MAX);
	mx_sample_u64(&b, "u", NULL, 0, (1ull << 53) + 1); /* not a double */
	mx_family(&b, "i", "gauge", "h");
	mx_sample_i64(&b, "i", NULL, 0, INT64_MIN);
	mx_family(&b, "f", "gauge", "h");
	mx_sample_f64(&b, "f", NULL, 0, 0.1);
	mx_sample_f64(&b, "f", NULL, 0, 1.0 / 3.0);
	mx_sample_f64(&b, "f", NULL, 0, 1e300);
	mx_sample_f64(&b, "f", NULL, 0, NAN);
	mx_sample_f64(&b, "f", NULL, 0, INFINITY);
	mx_sample_f64(&b, "f", NULL, 0, -INFINITY);
	mx_sample_f64(&b, "f", NULL, 0, 3.0);
	cr_assert_eq(mx_buf_err(&b), 0);
	cr_assert_str_eq(b.data, "# HELP u h\n# TYPE u counter\n"
				 "u 18446744073709551615\n"
				 "u 9007199254740993\n"
				 "# HELP i h\n# TYPE i gauge\n"
				 "i -9223372036854775808\n"
				 "# HELP f h\n# TYPE f gauge\n"
				 "f 0.1\n"
				 "f 0.3333333333333333\n"
				 "f 1e+300\n"
				 "f NaN\n"
				 "f +Inf\n"
				 "f -Inf\n"
				 "f 3\n");
	mx_buf_free(&b);
}

Test(metrics, help_and_type_once_per_family)
{
	struct mx_buf b = buf_new(0, 0);
	cr_assert_eq(mx_family(&b, "a_total", "counter", "A."), 0);
	cr_assert_eq(mx_sample_u64(&b, "a_total", NULL, 0, 1), 0);
	cr_assert_eq(mx_family(&b, "a_total", "counter", "A."), 0); /* still open: no-op */
	cr_assert_eq(mx_sample_u64(&b, "a_total", NULL, 0, 2), 0);
	cr_assert_str_eq(b.data, "# HELP a_total A.\n# TYPE a_total counter\na_total 1\na_total 2\n");
	cr_assert_eq(mx_family(&b, "b", "gauge", "B."), 0);
	size_t len = b.len;
	/* Reopening a closed family would split it: refused, and sticky. */
	cr_assert_eq(mx_family(&b, "a_total", "counter", "A."), FMT_E_STATE);
	cr_assert_eq(b.len, len);
	cr_assert_eq(mx_sample_u64(&b, "b", NULL, 0, 1), FMT_E_STATE);
	cr_assert_eq(mx_buf_err(&b), FMT_E_STATE);
	size_t n;
	cr_assert_null(mx_buf_take(&b, &n));
	mx_buf_free(&b);

	b = buf_new(0, 0);
	mx_family(&b, "c", "gauge", "C.");
	cr_assert_eq(mx_family(&b, "c", "counter", "C."), FMT_E_STATE); /* type changed */
	mx_buf_free(&b);
}

Test(metrics, samples_must_belong_to_the_open_family)
{
	struct mx_buf b = buf_new(0, 0);
	cr_assert_eq(mx_sample_u64(&b, "x", NULL, 0, 1), FMT_E_STATE); /* no family */
	cr_assert_eq(b.len, 0);
	mx_buf_free(&b);

	b = buf_new(0, 0);
	mx_family(&b, "x", "gauge", "X.");
	cr_assert_eq(mx_sample_u64(&b, "y", NULL, 0, 1), FMT_E_STATE);
	mx_buf_free(&b);

	b = buf_new(0, 0);
	mx_family(&b, "h_seconds", "histogram", "H.");
	cr_assert_eq(mx_sample_u64(&b, "h_seconds", NULL, 0, 1), FMT_E_STATE);
	mx_buf_free(&b);

	b = buf_new(0, 0);
	struct mx_hist h;
	mx_hist_init(&h, NULL, 0);
	mx_family(&b, "g", "gauge", "G.");
	cr_assert_eq(mx_hist_write(&b, "g", NULL, 0, &h), FMT_E_STATE);
	mx_buf_free(&b);
}

Test(metrics, names_and_labels_are_checked)
{
	static const char *const bad_metric[] = { "", "1abc", "a-b", "a b", "é" };
	for (size_t i = 0; i < FMT_ARRAY_LEN(bad_metric); i++) {
		struct mx_buf b = buf_new(0, 0);
		cr_assert_eq(mx_family(&b, bad_metric[i], "gauge", "h"), FMT_E_INVALID, "%s",
			     bad_metric[i]);
		cr_assert_eq(b.len, 0);
		mx_buf_free(&b);
	}
	struct mx_buf b = buf_new(0, 0);
	cr_assert_eq(mx_family(&b, "ok:name_1", "summary", "h"), FMT_E_INVALID);
	mx_buf_free(&b);

	static const char *const bad_label[] = { "", "1a", "__name", "a-b", "a:b" };
	for (size_t i = 0; i < FMT_ARRAY_LEN(bad_label); i++) {
		b = buf_new(0, 0);
		mx_family(&b, "m", "gauge", "h");
		size_t len = b.len;
		struct mx_label l = { bad_label[i], "v" };
		cr_assert_eq(mx_sample_u64(&b, "m", &l, 1, 1), FMT_E_INVALID, "%s", bad_label[i]);
		cr_assert_eq(b.len, len);
		mx_buf_free(&b);
	}

	b = buf_new(0, 0);
	mx_family(&b, "m", "gauge", "h");
	struct mx_label dup[] = { { "a", "1" }, { "a", "2" } };
	cr_assert_eq(mx_sample_u64(&b, "m", dup, 2, 1), FMT_E_INVALID);
	mx_buf_free(&b);

	b = buf_new(0, 0);
	mx_family(&b, "m", "gauge", "h");
	struct mx_label many[MX_LABELS_MAX + 1];
	char keys[MX_LABELS_MAX + 1][4];
	for (int i = 0; i <= MX_LABELS_MAX; i++) {
		snprintf(keys[i], sizeof(keys[i]), "k%d", i);
		many[i] = (struct mx_label){ keys[i], "v" };
	}
	cr_assert_eq(mx_sample_u64(&b, "m", many, MX_LABELS_MAX, 1), 0);
	cr_assert_eq(mx_sample_u64(&b, "m", many, MX_LABELS_MAX + 1, 1), FMT_E_INVALID);
	mx_buf_free(&b);

	b = buf_new(0, 0);
	struct mx_hist h;
	mx_hist_init(&h, NULL, 0);
	mx_family(&b, "h", "histogram", "h");
	struct mx_label le = { "le", "1" };
	cr_assert_eq(mx_hist_write(&b, "h", &le, 1, &h), FMT_E_INVALID);
	mx_buf_free(&b);
}

Test(metrics, buffer_bound_keeps_whole_lines_and_is_sticky)
{
	struct mx_buf b = buf_new(8, 200);
	cr_assert_eq(mx_family(&b, "m", "gauge", "h"), 0);
	int rc = 0, lines = 0;
	for (int i = 0; i < 100 && rc == 0; i++) {
		rc = mx_sample_u64(&b, "m", NULL, 0, 1234567890);
		lines += rc == 0;
	}
	cr_assert_eq(rc, FMT_E_TOO_BIG);
	cr_assert_leq(b.len, 200);
	cr_assert_eq(b.data[b.len - 1], '\n');
	cr_assert_eq(b.len, strlen("# HELP m h\n# TYPE m gauge\n") + (size_t)lines * strlen("m 1234567890\n"));
	size_t len = b.len;
	cr_assert_eq(mx_family(&b, "n", "gauge", "h"), FMT_E_TOO_BIG);
	cr_assert_eq(mx_buf_puts(&b, "x"), FMT_E_TOO_BIG);
	cr_assert_eq(b.len, len);
	mx_buf_reset(&b);
	cr_assert_eq(mx_buf_err(&b), 0);
	cr_assert_eq(b.len, 0);
	cr_assert_eq(mx_family(&b, "m", "gauge", "h"), 0); /* families forgotten too */
	mx_buf_free(&b);
}

Test(metrics, buffer_grows_from_small_and_hands_over)
{
	struct mx_buf b = buf_new(1, 1 << 20);
	mx_family(&b, "m_total", "counter", "h");
	char v[16];
	for (int i = 0; i < 1000; i++) {
		snprintf(v, sizeof(v), "%d", i);
		struct mx_label l = { "i", v };
		cr_assert_eq(mx_sample_u64(&b, "m_total", &l, 1, (uint64_t)i), 0);
	}
	cr_assert_eq(mx_buf_printf(&b, "# %s %d\n", "end", 42), 0);
	cr_assert(strstr(b.data, "m_total{i=\"999\"} 999\n# end 42\n") != NULL);
	size_t len = 0, want = b.len;
	char *data = mx_buf_take(&b, &len);
	cr_assert_not_null(data);
	cr_assert_eq(len, want);
	cr_assert_eq(strlen(data), len);
	cr_assert_null(b.data);
	free(data);
	mx_buf_free(&b);
}

Test(metrics, histogram_cumulative_buckets_sum_count)
{
	static const double bounds[] = { 0.001, 0.01, 0.1 };
	struct mx_hist h;
	cr_assert_eq(mx_hist_init(&h, bounds, 3), 0);
	mx_hist_observe_ns(&h, 500000);      /* 0.5 ms */
	mx_hist_observe_ns(&h, 1000000);     /* exactly 1 ms: le is inclusive */
	mx_hist_observe_ns(&h, 5000000);     /* 5 ms */
	mx_hist_observe_ns(&h, 50000000);    /* 50 ms */
	mx_hist_observe_ns(&h, 2000000000);  /* 2 s: +Inf only */
	struct mx_buf b = buf_new(0, 0);
	struct mx_label l = { "op", "append" };
	cr_assert_eq(mx_family(&b, "d_seconds", "histogram", "D."), 0);
	cr_assert_eq(mx_hist_write(&b, "d_seconds", &l, 1, &h), 0);
	cr_assert_str_eq(b.data, "# HELP d_seconds D.\n# TYPE d_seconds histogram\n"
				 "d_seconds_bucket{op=\"append\",le=\"0.001\"} 2\n"
				 "d_seconds_bucket{op=\"append\",le=\"0.01\"} 3\n"
				 "d_seconds_bucket{op=\"append\",le=\"0.1\"} 4\n"
				 "d_seconds_bucket{op=\"append\",le=\"+Inf\"} 5\n"
				 "d_seconds_sum{op=\"append\"} 2.0565\n"
				 "d_seconds_count{op=\"append\"} 5\n");
	mx_buf_free(&b);
}

Test(metrics, histogram_default_bounds_print_exactly)
{
	struct mx_hist h;
	cr_assert_eq(mx_hist_init(&h, NULL, 0), 0);
	cr_assert_eq(h.n_bounds, mx_duration_bounds_n);
	mx_hist_observe_ns(&h, 1);
	struct mx_buf b = buf_new(0, 0);
	mx_family(&b, "d_seconds", "histogram", "D.");
	cr_assert_eq(mx_hist_write(&b, "d_seconds", NULL, 0, &h), 0);
	static const char *const le[] = { "0.0001", "0.00025", "0.0005", "0.001", "0.0025",
					  "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
					  "0.5", "1", "2.5", "5", "10", "+Inf" };
	char line[96];
	for (size_t i = 0; i < FMT_ARRAY_LEN(le); i++) {
		snprintf(line, sizeof(line), "d_seconds_bucket{le=\"%s\"} 1\n", le[i]);
		cr_assert(strstr(b.data, line) != NULL, "missing %s", line);
	}
	cr_assert(strstr(b.data, "d_seconds_sum 0.000000001\nd_seconds_count 1\n") != NULL);
	mx_buf_free(&b);
}

Test(metrics, histogram_bounds_are_checked)
{
	struct mx_hist h;
	double up_down[] = { 0.1, 0.01 }, zero[] = { 0, 1 }, same_ns[] = { 1e-9, 1.4e-9 };
	double nan_b[] = { NAN }, huge[] = { 2e9 }, many[MX_HIST_BOUNDS_MAX + 1];
	for (int i = 0; i <= MX_HIST_BOUNDS_MAX; i++)
		many[i] = i + 1;
	cr_assert_eq(mx_hist_init(&h, up_down, 2), FMT_E_INVALID);
	cr_assert_eq(mx_hist_init(&h, zero, 2), FMT_E_INVALID);
	cr_assert_eq(mx_hist_init(&h, same_ns, 2), FMT_E_INVALID);
	cr_assert_eq(mx_hist_init(&h, nan_b, 1), FMT_E_INVALID);
	cr_assert_eq(mx_hist_init(&h, huge, 1), FMT_E_INVALID);
	cr_assert_eq(mx_hist_init(&h, many, MX_HIST_BOUNDS_MAX + 1), FMT_E_TOO_BIG);
	cr_assert_eq(mx_hist_init(&h, many, MX_HIST_BOUNDS_MAX), 0);
}

Test(metrics, histograms_merge)
{
	static const double bounds[] = { 1, 2 };
	struct mx_hist a, c;
	mx_hist_init(&a, bounds, 2);
	mx_hist_init(&c, bounds, 2);
	mx_hist_observe_ns(&a, 500000000);
	mx_hist_observe_ns(&a, 1500000000);
	mx_hist_observe_ns(&c, 1500000000);
	mx_hist_observe_ns(&c, 3000000000);
	const struct mx_hist *both[] = { &a, &c };
	struct mx_buf b = buf_new(0, 0);
	mx_family(&b, "t_seconds", "histogram", "T.");
	cr_assert_eq(mx_hist_write_sum(&b, "t_seconds", NULL, 0, both, 2), 0);
	cr_assert_str_eq(b.data, "# HELP t_seconds T.\n# TYPE t_seconds histogram\n"
				 "t_seconds_bucket{le=\"1\"} 1\n"
				 "t_seconds_bucket{le=\"2\"} 3\n"
				 "t_seconds_bucket{le=\"+Inf\"} 4\n"
				 "t_seconds_sum 6.5\n"
				 "t_seconds_count 4\n");
	mx_buf_free(&b);
}

#define OBS_THREADS 4
#define OBS_PER_THREAD 100000

static void *observe_many(void *arg)
{
	struct mx_hist *h = arg;
	for (uint64_t i = 0; i < OBS_PER_THREAD; i++)
		mx_hist_observe_ns(h, (i % 4) * 1000000); /* 0, 1, 2, 3 ms */
	return NULL;
}

Test(metrics, concurrent_observers_lose_nothing)
{
	static struct mx_hist h; /* shared on purpose: the worst case */
	static const double bounds[] = { 0.001, 0.002 };
	mx_hist_init(&h, bounds, 2);
	pthread_t t[OBS_THREADS];
	for (int i = 0; i < OBS_THREADS; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, observe_many, &h), 0);
	for (int i = 0; i < OBS_THREADS; i++)
		pthread_join(t[i], NULL);
	struct mx_buf b = buf_new(0, 0);
	mx_family(&b, "c_seconds", "histogram", "C.");
	mx_hist_write(&b, "c_seconds", NULL, 0, &h);
	/* A quarter each at 0, 1, 2, 3 ms; sum = total/4 * 6 ms = 600 s. */
	cr_assert_str_eq(b.data, "# HELP c_seconds C.\n# TYPE c_seconds histogram\n"
				 "c_seconds_bucket{le=\"0.001\"} 200000\n"
				 "c_seconds_bucket{le=\"0.002\"} 300000\n"
				 "c_seconds_bucket{le=\"+Inf\"} 400000\n"
				 "c_seconds_sum 600\n"
				 "c_seconds_count 400000\n");
	mx_buf_free(&b);
}

Test(metrics, labelset_caps_then_other)
{
	struct mx_labelset ls;
	cr_assert_eq(mx_labelset_init(&ls, 3, 8), 0);
	cr_assert_eq(mx_labelset_slot(&ls, "acme", 4), 0);
	cr_assert_eq(mx_labelset_slot(&ls, "beta", 4), 1);
	cr_assert_eq(mx_labelset_slot(&ls, "acme", 4), 0);
	cr_assert_eq(mx_labelset_slot(&ls, "other", 5), MX_SLOT_OTHER); /* reserved */
	cr_assert_eq(mx_labelset_slot(&ls, "", 0), MX_SLOT_OTHER);
	cr_assert_eq(mx_labelset_slot(&ls, "123456789", 9), MX_SLOT_OTHER); /* > 8 bytes */
	cr_assert_eq(mx_labelset_slot(&ls, "gamma", 5), 2);
	cr_assert_eq(mx_labelset_slot(&ls, "delta", 5), MX_SLOT_OTHER); /* full */
	cr_assert_eq(mx_labelset_slot(&ls, "gamma_x", 5), 2);            /* len counts */
	cr_assert_eq(mx_labelset_used(&ls), 3);
	cr_assert_eq(atomic_load(&ls.other_lookups), 4);
	cr_assert_str_eq(mx_labelset_name(&ls, 1), "beta");
	cr_assert_str_eq(mx_labelset_name(&ls, MX_SLOT_OTHER), "other");

	struct mx_counter_vec c;
	cr_assert_eq(mx_counter_vec_init(&c, &ls), 0);
	mx_counter_vec_add(&c, 0, 5);
	mx_counter_vec_add(&c, 2, 1);
	mx_counter_vec_add(&c, MX_SLOT_OTHER, 7);
	struct mx_buf b = buf_new(0, 0);
	mx_family(&b, "hodei_events_appended_total", "counter", "Events.");
	cr_assert_eq(mx_counter_vec_write(&b, "hodei_events_appended_total", "tenant", &ls, &c), 0);
	cr_assert_str_eq(b.data, "# HELP hodei_events_appended_total Events.\n"
				 "# TYPE hodei_events_appended_total counter\n"
				 "hodei_events_appended_total{tenant=\"acme\"} 5\n"
				 "hodei_events_appended_total{tenant=\"beta\"} 0\n"
				 "hodei_events_appended_total{tenant=\"gamma\"} 1\n"
				 "hodei_events_appended_total{tenant=\"other\"} 7\n");
	mx_buf_free(&b);
	mx_counter_vec_destroy(&c);
	mx_labelset_destroy(&ls);

	cr_assert_eq(mx_labelset_init(&ls, 0, 0), FMT_E_INVALID);
	cr_assert_eq(mx_labelset_init(&ls, MX_LABELSET_CAP_MAX + 1, 0), FMT_E_INVALID);
}

#define LS_THREADS 4
#define LS_NAMES 200
#define LS_CAP 120

struct ls_arg {
	struct mx_labelset *ls;
	uint32_t slots[LS_NAMES];
	int start;
};

static void *first_sights(void *p)
{
	struct ls_arg *a = p;
	char name[16];
	for (int k = 0; k < LS_NAMES; k++) {
		int i = (k + a->start) % LS_NAMES; /* threads meet names in different orders */
		int n = snprintf(name, sizeof(name), "tenant-%d", i);
		a->slots[i] = mx_labelset_slot(a->ls, name, (size_t)n);
	}
	return NULL;
}

Test(metrics, labelset_concurrent_first_sights_agree)
{
	static struct mx_labelset ls;
	cr_assert_eq(mx_labelset_init(&ls, LS_CAP, 0), 0);
	static struct ls_arg args[LS_THREADS];
	pthread_t t[LS_THREADS];
	for (int i = 0; i < LS_THREADS; i++) {
		args[i] = (struct ls_arg){ .ls = &ls, .start = i * 37 };
		cr_assert_eq(pthread_create(&t[i], NULL, first_sights, &args[i]), 0);
	}
	for (int i = 0; i < LS_THREADS; i++)
		pthread_join(t[i], NULL);
	cr_assert_eq(mx_labelset_used(&ls), LS_CAP);
	int named = 0;
	bool seen[LS_CAP] = { false };
	for (int i = 0; i < LS_NAMES; i++) {
		uint32_t s = args[0].slots[i];
		for (int k = 1; k < LS_THREADS; k++)
			cr_assert_eq(args[k].slots[i], s, "name %d: threads disagree", i);
		if (s == MX_SLOT_OTHER)
			continue;
		cr_assert_lt(s, LS_CAP);
		cr_assert(!seen[s], "slot %u given twice", s);
		seen[s] = true;
		char name[16];
		snprintf(name, sizeof(name), "tenant-%d", i);
		cr_assert_str_eq(mx_labelset_name(&ls, s), name);
		named++;
	}
	cr_assert_eq(named, LS_CAP);
	mx_labelset_destroy(&ls);
}

/* ---- promtool ----------------------------------------------------------- */

/* Pipes text to `promtool check metrics`; returns its exit status, or -1
 * when promtool is not installed. Its findings go to this test's stderr. */
static int promtool_check(const char *text)
{
	if (system("command -v promtool >/dev/null 2>&1") != 0)
		return -1;
	FILE *p = popen("promtool check metrics", "w");
	cr_assert_not_null(p);
	fwrite(text, 1, strlen(text), p);
	int st = pclose(p);
	cr_assert(WIFEXITED(st));
	return WEXITSTATUS(st);
}

static void render_sample_exposition(struct mx_buf *b)
{
	struct mx_hist h1, h2;
	mx_hist_init(&h1, NULL, 0);
	mx_hist_init(&h2, NULL, 0);
	for (uint64_t i = 1; i <= 1000; i++) {
		mx_hist_observe_ns(&h1, i * 37000);
		mx_hist_observe_ns(&h2, i * 11000000);
	}
	struct mx_labelset ls;
	struct mx_counter_vec c;
	cr_assert_eq(mx_labelset_init(&ls, 2, 0), 0);
	cr_assert_eq(mx_counter_vec_init(&c, &ls), 0);
	mx_counter_vec_add(&c, mx_labelset_slot(&ls, "acme", 4), 3);
	mx_counter_vec_add(&c, mx_labelset_slot(&ls, "beta.corp", 9), 4);
	mx_counter_vec_add(&c, mx_labelset_slot(&ls, "gamma", 5), 5);

	mx_family(b, "hodei_events_appended_total", "counter",
		  "Events stored, by tenant (capped; the rest is tenant=\"other\").");
	mx_counter_vec_write(b, "hodei_events_appended_total", "tenant", &ls, &c);
	static const char rej[] = "hodei_requests_rejected_total";
	mx_family(b, rej, "counter", "Requests refused.\nBy reason, with a \\ in the help.");
	struct mx_label l1[] = { { "reason", "weird \"quoted\"\\value\nwith newline" } };
	struct mx_label l2[] = { { "reason", "invalid" } };
	mx_sample_u64(b, rej, l1, 1, UINT64_MAX);
	mx_sample_u64(b, rej, l2, 1, 12);
	mx_family(b, "hodei_disk_free_bytes", "gauge", "Free bytes on the data disk.");
	mx_sample_u64(b, "hodei_disk_free_bytes", NULL, 0, 123456789012ull);
	mx_family(b, "hodei_replication_lag_seconds", "gauge", "Age of the oldest unreplicated segment.");
	mx_sample_f64(b, "hodei_replication_lag_seconds", NULL, 0, 0.125);
	mx_family(b, "hodei_append_duration_seconds", "histogram", "Append latency.");
	const struct mx_hist *both[] = { &h1, &h2 };
	struct mx_label sh = { "shard", "all" };
	mx_hist_write_sum(b, "hodei_append_duration_seconds", &sh, 1, both, 2);
	mx_hist_write(b, "hodei_append_duration_seconds", NULL, 0, &h1);
	cr_assert_eq(mx_buf_err(b), 0);
	mx_counter_vec_destroy(&c);
	mx_labelset_destroy(&ls);
}

Test(metrics, promtool_accepts_the_exposition)
{
	struct mx_buf b = buf_new(0, 0);
	render_sample_exposition(&b);
	int rc = promtool_check(b.data);
	if (rc < 0)
		cr_skip_test("promtool not found (Debian package prometheus; scripts/setup.sh installs it)");
	cr_assert_eq(rc, 0, "promtool check metrics failed on:\n%s", b.data);
	mx_buf_free(&b);
}

Test(metrics, promtool_rejects_a_bad_name)
{
	/* The control: the check above would pass vacuously if promtool read
	 * nothing. A counter without _total is a lint error. */
	struct mx_buf b = buf_new(0, 0);
	mx_family(&b, "hodei_requests", "counter", "Requests.");
	mx_sample_u64(&b, "hodei_requests", NULL, 0, 1);
	int rc = promtool_check(b.data);
	if (rc < 0)
		cr_skip_test("promtool not found (Debian package prometheus; scripts/setup.sh installs it)");
	cr_assert_neq(rc, 0);
	mx_buf_free(&b);
}
