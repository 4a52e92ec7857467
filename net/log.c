// SPDX-License-Identifier: Apache-2.0
#include "net/log.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Atomic int log_level = NLOG_INFO;
static const char *const level_names[] = { "error", "warn", "info", "debug" };

void nlog_set_level(enum nlog_level level)
{
	atomic_store(&log_level, (int)level);
}

enum nlog_level nlog_get_level(void)
{
	return (enum nlog_level)atomic_load(&log_level);
}

int nlog_level_parse(const char *s, enum nlog_level *out)
{
	for (int i = 0; i < 4; i++)
		if (strcmp(s, level_names[i]) == 0) {
			*out = (enum nlog_level)i;
			return 0;
		}
	return -1;
}

static void set_str(json_t *o, const char *key, const char *v, size_t len)
{
	if (!v || !*v)
		return;
	/* Not UTF-8 (a hostile tenant header, say): jansson refuses it, and
	 * the key is left out rather than the line lost. */
	json_t *s = len ? json_stringn(v, len) : json_string(v);
	if (s)
		json_object_set_new(o, key, s);
}

__attribute__((format(printf, 3, 0))) static void vlog(enum nlog_level level, const struct nlog_fields *f, const char *fmt, va_list ap)
{
	char msg[1024], when[40];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(when + n, sizeof(when) - n, ".%03ldZ", ts.tv_nsec / 1000000);

	json_t *o = json_object();
	if (!o)
		return;
	json_object_set_new(o, "time", json_string(when));
	json_object_set_new(o, "level", json_string(level_names[level]));
	json_t *m = json_string(msg);
	json_object_set_new(o, "msg", m ? m : json_string("(message not UTF-8)"));
	if (f) {
		set_str(o, "tenant", f->tenant, f->tenant_len);
		set_str(o, "request_id", f->request_id, 0);
		set_str(o, "peer", f->peer, 0);
		set_str(o, "method", f->method, 0);
		if (f->code >= 0)
			json_object_set_new(o, "code", json_integer(f->code));
	}
	char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	if (!line)
		return;
	size_t len = strlen(line);
	line[len] = '\n'; /* json_dumps' NUL becomes the newline: one write */
	(void)!write(STDERR_FILENO, line, len + 1);
	free(line);
}

void nlog(enum nlog_level level, const struct nlog_fields *f, const char *fmt, ...)
{
	if ((int)level > atomic_load_explicit(&log_level, memory_order_relaxed))
		return;
	va_list ap;
	va_start(ap, fmt);
	vlog(level, f, fmt, ap);
	va_end(ap);
}

void nlog_engine(void *ctx, enum eng_log_level level, const char *msg)
{
	(void)ctx;
	nlog((enum nlog_level)level, NULL, "%s", msg);
}
