/* SPDX-License-Identifier: Apache-2.0
 *
 * metrics.c — Prometheus text format 0.0.4 writer, histograms and the
 * bounded label set. The rules it keeps (M1..M6) are in metrics.h.
 *
 * Every public writer follows one shape: return the sticky error if there
 * is one, remember where the content ends, validate, append through
 * append() (which enforces bytes_max and grows the allocation), and on the
 * first failure cut the content back to where it was and make the error
 * sticky (fail()). So a scrape either gets whole, valid lines or a clear
 * error — never a silently truncated exposition.
 */
#include "net/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

enum mx_type { MX_T_COUNTER = 1, MX_T_GAUGE, MX_T_HISTOGRAM, MX_T_UNTYPED };

static const char *const type_names[] = {
	[MX_T_COUNTER] = "counter",
	[MX_T_GAUGE] = "gauge",
	[MX_T_HISTOGRAM] = "histogram",
	[MX_T_UNTYPED] = "untyped",
};

#define NS_PER_S 1000000000ull
#define F64_TEXT_BYTES 40  /* "-1.2345678901234567e-308" and the NUL */
#define U64_TEXT_BYTES 24  /* 20 digits, a sign, the NUL */
#define DEC_S_TEXT_BYTES 32 /* 11 digits of seconds, '.', 9 digits, NUL */

const double mx_duration_bounds_s[] = {
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
	0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,     10,
};
const uint32_t mx_duration_bounds_n = FMT_ARRAY_LEN(mx_duration_bounds_s);
_Static_assert(FMT_ARRAY_LEN(mx_duration_bounds_s) <= MX_HIST_BOUNDS_MAX,
	       "default duration buckets fit a histogram");

/* ---- output buffer ---------------------------------------------------- */

int mx_buf_init(struct mx_buf *b, size_t bytes_initial, size_t bytes_max)
{
	memset(b, 0, sizeof(*b));
	b->bytes_max = bytes_max ? bytes_max : MX_BUF_BYTES_MAX_DEFAULT;
	size_t initial = bytes_initial ? bytes_initial : MX_BUF_BYTES_INITIAL_DEFAULT;
	initial = FMT_MIN(initial, b->bytes_max);
	b->data = malloc(initial + 1);
	if (!b->data) {
		b->err = -ENOMEM;
		return -ENOMEM;
	}
	b->cap = initial + 1;
	b->data[0] = '\0';
	return 0;
}

void mx_buf_free(struct mx_buf *b)
{
	free(b->data);
	free(b->families);
	memset(b, 0, sizeof(*b));
}

void mx_buf_reset(struct mx_buf *b)
{
	b->len = 0;
	b->err = b->data ? 0 : -ENOMEM;
	b->families_len = 0;
	if (b->data)
		b->data[0] = '\0';
}

char *mx_buf_take(struct mx_buf *b, size_t *len)
{
	if (b->err || !b->data)
		return NULL;
	char *data = b->data;
	*len = b->len;
	b->data = NULL;
	mx_buf_free(b);
	return data;
}

/* Makes room for n more content bytes (plus the NUL), within bytes_max. */
static int reserve(struct mx_buf *b, size_t n)
{
	if (n > b->bytes_max - b->len)
		return FMT_E_TOO_BIG;
	size_t need = b->len + n + 1;
	if (need <= b->cap)
		return 0;
	size_t cap = b->cap;
	while (cap < need)
		cap = cap > (SIZE_MAX / 2) ? need : cap * 2;
	cap = FMT_MIN(cap, b->bytes_max + 1);
	char *p = realloc(b->data, cap);
	if (!p)
		return -ENOMEM;
	b->data = p;
	b->cap = cap;
	return 0;
}

static int append(struct mx_buf *b, const void *p, size_t n)
{
	int rc = reserve(b, n);
	if (rc)
		return rc;
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	ASSERT(b->len < b->cap);
	return 0;
}

static int append_s(struct mx_buf *b, const char *s)
{
	return append(b, s, strlen(s));
}

/* Cuts the content back to `start` (M1: whole lines only) and makes err
 * sticky. */
static int fail(struct mx_buf *b, size_t start, int err)
{
	ASSERT(err < 0 && start <= b->len);
	b->len = start;
	if (b->data)
		b->data[start] = '\0';
	b->err = err;
	return err;
}

int mx_buf_put(struct mx_buf *b, const void *data, size_t len)
{
	if (b->err)
		return b->err;
	int rc = append(b, data, len);
	return rc ? fail(b, b->len, rc) : 0;
}

int mx_buf_puts(struct mx_buf *b, const char *s)
{
	return mx_buf_put(b, s, strlen(s));
}

int mx_buf_printf(struct mx_buf *b, const char *fmt, ...)
{
	if (b->err)
		return b->err;
	va_list ap, aq;
	va_start(ap, fmt);
	va_copy(aq, ap);
	int n = vsnprintf(NULL, 0, fmt, aq);
	va_end(aq);
	int rc = n < 0 ? FMT_E_INVALID : reserve(b, (size_t)n);
	if (rc == 0) {
		vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
		b->len += (size_t)n;
	}
	va_end(ap);
	return rc ? fail(b, b->len, rc) : 0;
}

/* ---- names, escaping, numbers ----------------------------------------- */

static bool is_alpha_(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* [a-zA-Z_:][a-zA-Z0-9_:]* */
static bool metric_name_valid(const char *s)
{
	if (!s || !(is_alpha_(s[0]) || s[0] == ':'))
		return false;
	for (size_t i = 1; s[i]; i++)
		if (!(is_alpha_(s[i]) || is_digit(s[i]) || s[i] == ':'))
			return false;
	return true;
}

/* [a-zA-Z_][a-zA-Z0-9_]*, and not "__..." (reserved for Prometheus). */
static bool label_name_valid(const char *s)
{
	if (!s || !is_alpha_(s[0]) || (s[0] == '_' && s[1] == '_'))
		return false;
	for (size_t i = 1; s[i]; i++)
		if (!(is_alpha_(s[i]) || is_digit(s[i])))
			return false;
	return true;
}

/* Appends s with backslash and newline escaped, and double quotes too when
 * quote is set (label values) — not in HELP text, where the format keeps
 * them literal. */
static int append_escaped(struct mx_buf *b, const char *s, bool quote)
{
	const char *run = s;
	for (; *s; s++) {
		const char *esc = NULL;
		if (*s == '\\')
			esc = "\\\\";
		else if (*s == '\n')
			esc = "\\n";
		else if (*s == '"' && quote)
			esc = "\\\"";
		if (!esc)
			continue;
		int rc = append(b, run, (size_t)(s - run));
		if (rc == 0)
			rc = append(b, esc, 2);
		if (rc)
			return rc;
		run = s + 1;
	}
	return append(b, run, (size_t)(s - run));
}

/* Shortest of %.15g, %.16g, %.17g that reads back to v (17 always does).
 * The project never calls setlocale(), so the decimal point is '.'. */
static void format_f64(char out[F64_TEXT_BYTES], double v)
{
	if (isnan(v)) {
		strcpy(out, "NaN");
		return;
	}
	if (isinf(v)) {
		strcpy(out, v > 0 ? "+Inf" : "-Inf");
		return;
	}
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(out, F64_TEXT_BYTES, "%.*g", prec, v);
		if (strtod(out, NULL) == v)
			return;
	}
}

/* ns as exact decimal seconds: "10", "0.0001", "2.5", "0.000000001". */
static void format_ns_as_s(char out[DEC_S_TEXT_BYTES], uint64_t ns)
{
	uint64_t s = ns / NS_PER_S, frac = ns % NS_PER_S;
	if (frac == 0) {
		snprintf(out, DEC_S_TEXT_BYTES, "%" PRIu64, s);
		return;
	}
	int n = snprintf(out, DEC_S_TEXT_BYTES, "%" PRIu64 ".%09" PRIu64, s, frac);
	ASSERT(n > 0 && n < DEC_S_TEXT_BYTES);
	while (out[n - 1] == '0')
		out[--n] = '\0';
}

/* ---- families and samples --------------------------------------------- */

static int type_parse(const char *type)
{
	for (int t = MX_T_COUNTER; t <= MX_T_UNTYPED; t++)
		if (type && strcmp(type, type_names[t]) == 0)
			return t;
	return 0;
}

static bool family_is(const struct mx_buf *b, const struct mx_family_ref *f, const char *name)
{
	size_t n = strlen(name);
	return f->len == n && memcmp(b->data + f->off, name, n) == 0;
}

static const struct mx_family_ref *open_family(const struct mx_buf *b)
{
	return b->families_len ? &b->families[b->families_len - 1] : NULL;
}

static int families_push(struct mx_buf *b, size_t off, uint32_t len, int type)
{
	if (b->families_len == b->families_cap) {
		uint32_t cap = b->families_cap ? b->families_cap * 2 : 32;
		void *p = realloc(b->families, cap * sizeof(*b->families));
		if (!p)
			return -ENOMEM;
		b->families = p;
		b->families_cap = cap;
	}
	b->families[b->families_len++] = (struct mx_family_ref){ off, len, (uint8_t)type };
	return 0;
}

int mx_family(struct mx_buf *b, const char *name, const char *type, const char *help)
{
	if (b->err)
		return b->err;
	size_t start = b->len;
	int t = type_parse(type);
	if (!metric_name_valid(name) || t == 0)
		return fail(b, start, FMT_E_INVALID);
	const struct mx_family_ref *open = open_family(b);
	if (open && family_is(b, open, name))
		return open->type == t ? 0 : fail(b, start, FMT_E_STATE);
	for (uint32_t i = 0; i < b->families_len; i++)
		if (family_is(b, &b->families[i], name))
			return fail(b, start, FMT_E_STATE);

	size_t name_off = start + strlen("# HELP ");
	int rc = append_s(b, "# HELP ");
	if (rc == 0)
		rc = append_s(b, name);
	if (rc == 0)
		rc = append(b, " ", 1);
	if (rc == 0)
		rc = append_escaped(b, help ? help : "", false);
	if (rc == 0)
		rc = append_s(b, "\n# TYPE ");
	if (rc == 0)
		rc = append_s(b, name);
	if (rc == 0)
		rc = append(b, " ", 1);
	if (rc == 0)
		rc = append_s(b, type_names[t]);
	if (rc == 0)
		rc = append(b, "\n", 1);
	if (rc == 0)
		rc = families_push(b, name_off, (uint32_t)strlen(name), t);
	if (rc)
		return fail(b, start, rc);
	ASSERT(family_is(b, open_family(b), name));
	return 0;
}

/* Label keys valid, distinct, at most MX_LABELS_MAX, and not "le" when the
 * caller adds its own le. */
static bool labels_valid(const struct mx_label *labels, size_t n, bool le_reserved)
{
	if (n > MX_LABELS_MAX || (n && !labels))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!label_name_valid(labels[i].key) || !labels[i].value)
			return false;
		if (le_reserved && strcmp(labels[i].key, "le") == 0)
			return false;
		for (size_t j = 0; j < i; j++)
			if (strcmp(labels[i].key, labels[j].key) == 0)
				return false;
	}
	return true;
}

/* Appends `name[suffix]{labels[,le="le"]} value\n`; validation is done. */
static int append_sample(struct mx_buf *b, const char *name, const char *suffix,
			 const struct mx_label *labels, size_t n, const char *le,
			 const char *value)
{
	int rc = append_s(b, name);
	if (rc == 0 && suffix)
		rc = append_s(b, suffix);
	for (size_t i = 0; rc == 0 && i < n + (le != NULL); i++) {
		rc = append(b, i == 0 ? "{" : ",", 1);
		if (rc == 0)
			rc = append_s(b, i < n ? labels[i].key : "le");
		if (rc == 0)
			rc = append(b, "=\"", 2);
		if (rc == 0)
			rc = append_escaped(b, i < n ? labels[i].value : le, true);
		if (rc == 0)
			rc = append(b, "\"", 1);
	}
	if (rc == 0 && n + (le != NULL) > 0)
		rc = append(b, "}", 1);
	if (rc == 0)
		rc = append(b, " ", 1);
	if (rc == 0)
		rc = append_s(b, value);
	if (rc == 0)
		rc = append(b, "\n", 1);
	return rc;
}

static int sample_text(struct mx_buf *b, const char *name, const struct mx_label *labels,
		       size_t n, const char *value)
{
	if (b->err)
		return b->err;
	size_t start = b->len;
	const struct mx_family_ref *open = open_family(b);
	if (!open || open->type == MX_T_HISTOGRAM || !name || !family_is(b, open, name))
		return fail(b, start, FMT_E_STATE);
	if (!labels_valid(labels, n, false))
		return fail(b, start, FMT_E_INVALID);
	int rc = append_sample(b, name, NULL, labels, n, NULL, value);
	return rc ? fail(b, start, rc) : 0;
}

int mx_sample_u64(struct mx_buf *b, const char *name, const struct mx_label *labels,
		  size_t n_labels, uint64_t value)
{
	char text[U64_TEXT_BYTES];
	snprintf(text, sizeof(text), "%" PRIu64, value);
	return sample_text(b, name, labels, n_labels, text);
}

int mx_sample_i64(struct mx_buf *b, const char *name, const struct mx_label *labels,
		  size_t n_labels, int64_t value)
{
	char text[U64_TEXT_BYTES];
	snprintf(text, sizeof(text), "%" PRId64, value);
	return sample_text(b, name, labels, n_labels, text);
}

int mx_sample_f64(struct mx_buf *b, const char *name, const struct mx_label *labels,
		  size_t n_labels, double value)
{
	char text[F64_TEXT_BYTES];
	format_f64(text, value);
	return sample_text(b, name, labels, n_labels, text);
}

/* ---- histograms ------------------------------------------------------- */

int mx_hist_init(struct mx_hist *h, const double *bounds_s, uint32_t n)
{
	if (!bounds_s) {
		bounds_s = mx_duration_bounds_s;
		n = mx_duration_bounds_n;
	}
	if (n > MX_HIST_BOUNDS_MAX)
		return FMT_E_TOO_BIG;
	memset(h, 0, sizeof(*h));
	for (uint32_t i = 0; i < n; i++) {
		double s = bounds_s[i];
		if (!(s > 0 && s <= 1e9)) /* also false for NaN */
			return FMT_E_INVALID;
		uint64_t ns = (uint64_t)llround(s * (double)NS_PER_S);
		if (ns == 0 || (i > 0 && ns <= h->bounds_ns[i - 1]))
			return FMT_E_INVALID;
		h->bounds_ns[i] = ns;
	}
	h->n_bounds = n;
	for (uint32_t i = 0; i <= MX_HIST_BOUNDS_MAX; i++)
		atomic_init(&h->buckets[i], 0);
	atomic_init(&h->sum_ns, 0);
	return 0;
}

void mx_hist_observe_ns(struct mx_hist *h, uint64_t ns)
{
	/* First bound >= ns (le is inclusive); n_bounds when above all. */
	uint32_t lo = 0, hi = h->n_bounds;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (h->bounds_ns[mid] < ns)
			lo = mid + 1;
		else
			hi = mid;
	}
	DEBUG_ASSERT(lo <= h->n_bounds);
	atomic_fetch_add_explicit(&h->buckets[lo], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
}

static bool hist_same_bounds(const struct mx_hist *a, const struct mx_hist *b)
{
	return a->n_bounds == b->n_bounds &&
	       memcmp(a->bounds_ns, b->bounds_ns, a->n_bounds * sizeof(a->bounds_ns[0])) == 0;
}

static int hist_lines(struct mx_buf *b, const char *name, const struct mx_label *labels,
		      size_t n_labels, const struct mx_hist *const *hists, size_t n)
{
	const struct mx_hist *h0 = hists[0];
	uint64_t cumulative = 0, sum_ns = 0;
	char le[DEC_S_TEXT_BYTES], value[U64_TEXT_BYTES];
	int rc = 0;
	for (uint32_t i = 0; rc == 0 && i <= h0->n_bounds; i++) {
		for (size_t k = 0; k < n; k++)
			cumulative += atomic_load_explicit(
				&((struct mx_hist *)hists[k])->buckets[i], memory_order_relaxed);
		if (i < h0->n_bounds)
			format_ns_as_s(le, h0->bounds_ns[i]);
		else
			strcpy(le, "+Inf");
		snprintf(value, sizeof(value), "%" PRIu64, cumulative);
		rc = append_sample(b, name, "_bucket", labels, n_labels, le, value);
	}
	for (size_t k = 0; k < n; k++)
		sum_ns += atomic_load_explicit(&((struct mx_hist *)hists[k])->sum_ns,
					       memory_order_relaxed);
	format_ns_as_s(le, sum_ns);
	if (rc == 0)
		rc = append_sample(b, name, "_sum", labels, n_labels, NULL, le);
	snprintf(value, sizeof(value), "%" PRIu64, cumulative); /* M5: = +Inf */
	if (rc == 0)
		rc = append_sample(b, name, "_count", labels, n_labels, NULL, value);
	return rc;
}

int mx_hist_write_sum(struct mx_buf *b, const char *name, const struct mx_label *labels,
		      size_t n_labels, const struct mx_hist *const *hists, size_t n)
{
	ASSERT(hists && n >= 1);
	for (size_t k = 1; k < n; k++)
		ASSERT(hist_same_bounds(hists[0], hists[k]));
	if (b->err)
		return b->err;
	size_t start = b->len;
	const struct mx_family_ref *open = open_family(b);
	if (!open || open->type != MX_T_HISTOGRAM || !name || !family_is(b, open, name))
		return fail(b, start, FMT_E_STATE);
	if (!labels_valid(labels, n_labels, true))
		return fail(b, start, FMT_E_INVALID);
	int rc = hist_lines(b, name, labels, n_labels, hists, n);
	return rc ? fail(b, start, rc) : 0;
}

int mx_hist_write(struct mx_buf *b, const char *name, const struct mx_label *labels,
		  size_t n_labels, const struct mx_hist *h)
{
	return mx_hist_write_sum(b, name, labels, n_labels, &h, 1);
}

/* ---- bounded tenant label set ----------------------------------------- */

#define LABELSET_NAME_BYTES_HARD_MAX 1024

int mx_labelset_init(struct mx_labelset *ls, uint32_t cap, uint32_t name_bytes_max)
{
	memset(ls, 0, sizeof(*ls));
	if (name_bytes_max == 0)
		name_bytes_max = MX_LABELSET_NAME_BYTES_DEFAULT;
	if (cap == 0 || cap > MX_LABELSET_CAP_MAX || name_bytes_max > LABELSET_NAME_BYTES_HARD_MAX)
		return FMT_E_INVALID;
	uint32_t size = 2;
	while (size < 2 * cap)
		size *= 2;
	ls->cap = cap;
	ls->name_bytes_max = name_bytes_max;
	ls->table_mask = size - 1;
	ls->table = calloc(size, sizeof(*ls->table));
	ls->names = calloc(cap, (size_t)name_bytes_max + 1);
	if (!ls->table || !ls->names) {
		free(ls->table);
		free(ls->names);
		memset(ls, 0, sizeof(*ls));
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < size; i++)
		atomic_init(&ls->table[i], 0);
	atomic_init(&ls->used, 0);
	atomic_init(&ls->other_lookups, 0);
	int rc = pthread_mutex_init(&ls->mu, NULL);
	if (rc) {
		free(ls->table);
		free(ls->names);
		memset(ls, 0, sizeof(*ls));
		return -rc;
	}
	return 0;
}

void mx_labelset_destroy(struct mx_labelset *ls)
{
	if (!ls->table)
		return;
	pthread_mutex_destroy(&ls->mu);
	free(ls->table);
	free(ls->names);
	memset(ls, 0, sizeof(*ls));
}

static char *name_record(const struct mx_labelset *ls, uint32_t slot)
{
	return ls->names + (size_t)slot * (ls->name_bytes_max + 1);
}

/* Probes for name; returns its slot, or MX_SLOT_OTHER with *empty set to
 * the table index where it would go. Lock-free: entries are published
 * with release after their name record is written, and never change. */
static uint32_t labelset_find(struct mx_labelset *ls, const char *name, size_t len,
			      uint32_t *empty)
{
	uint32_t i = (uint32_t)fmt_xxh3(name, len) & ls->table_mask;
	for (uint32_t probes = 0; probes <= ls->table_mask; probes++) {
		uint32_t e = atomic_load_explicit(&ls->table[i], memory_order_acquire);
		if (e == 0) {
			*empty = i;
			return MX_SLOT_OTHER;
		}
		const char *rec = name_record(ls, e - 1);
		if (memcmp(rec, name, len) == 0 && rec[len] == '\0')
			return e - 1;
		i = (i + 1) & ls->table_mask;
	}
	/* The table has at least twice as many entries as slots. */
	ASSERT(!"label set table without an empty entry");
	return MX_SLOT_OTHER;
}

uint32_t mx_labelset_slot(struct mx_labelset *ls, const char *name, size_t len)
{
	if (len == 0 || len > ls->name_bytes_max || memchr(name, '\0', len) ||
	    (len == strlen(MX_OTHER_LABEL) && memcmp(name, MX_OTHER_LABEL, len) == 0))
		goto other;
	uint32_t empty;
	uint32_t slot = labelset_find(ls, name, len, &empty);
	if (slot != MX_SLOT_OTHER)
		return slot;

	pthread_mutex_lock(&ls->mu);
	slot = labelset_find(ls, name, len, &empty); /* another thread may have added it */
	if (slot == MX_SLOT_OTHER) {
		uint32_t used = atomic_load_explicit(&ls->used, memory_order_relaxed);
		if (used < ls->cap) {
			slot = used;
			char *rec = name_record(ls, slot);
			memcpy(rec, name, len);
			rec[len] = '\0';
			atomic_store_explicit(&ls->table[empty], slot + 1, memory_order_release);
			atomic_store_explicit(&ls->used, used + 1, memory_order_release);
		}
	}
	pthread_mutex_unlock(&ls->mu);
	if (slot != MX_SLOT_OTHER)
		return slot;
other:
	atomic_fetch_add_explicit(&ls->other_lookups, 1, memory_order_relaxed);
	return MX_SLOT_OTHER;
}

const char *mx_labelset_name(const struct mx_labelset *ls, uint32_t slot)
{
	if (slot == MX_SLOT_OTHER)
		return MX_OTHER_LABEL;
	ASSERT(slot < mx_labelset_used(ls));
	return name_record(ls, slot);
}

int mx_counter_vec_init(struct mx_counter_vec *c, const struct mx_labelset *ls)
{
	ASSERT(ls->cap >= 1);
	c->n = ls->cap + 1;
	c->v = calloc(c->n, sizeof(*c->v));
	if (!c->v) {
		c->n = 0;
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < c->n; i++)
		atomic_init(&c->v[i], 0);
	return 0;
}

void mx_counter_vec_destroy(struct mx_counter_vec *c)
{
	free(c->v);
	c->v = NULL;
	c->n = 0;
}

int mx_counter_vec_write(struct mx_buf *b, const char *name, const char *key,
			 const struct mx_labelset *ls, const struct mx_counter_vec *c)
{
	ASSERT(c->n == ls->cap + 1);
	uint32_t used = mx_labelset_used(ls);
	for (uint32_t s = 0; s <= used; s++) {
		uint32_t slot = s < used ? s : MX_SLOT_OTHER;
		uint32_t i = s < used ? s : c->n - 1;
		struct mx_label l = { key, mx_labelset_name(ls, slot) };
		uint64_t v = atomic_load_explicit(&c->v[i], memory_order_relaxed);
		int rc = mx_sample_u64(b, name, &l, 1, v);
		if (rc)
			return rc;
	}
	return 0;
}
