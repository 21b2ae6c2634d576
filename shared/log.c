/* Log sink and formatting. One line per call, written with a single write
 * so that lines of several processes sharing stderr do not interleave. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "log.h"

int kiln_log_level = KILN_LOG_INFO;
static const char *log_prog = "kiln";
static kiln_log_sink_fn log_sink;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void
kiln_log_init(const char *progname)
{
	const char *env = getenv("KILN_LOG");

	log_prog = progname;
	if (env) {
		for (int i = 0; i < 4; i++)
			if (strcmp(env, level_names[i]) == 0)
				kiln_log_level = i;
	}
}

void
kiln_log_set_sink(kiln_log_sink_fn fn)
{
	log_sink = fn;
}

static void
log_vemit(int level, const char *fmt, va_list ap)
{
	char line[1024];
	int n;

	if (level < 0 || level > KILN_LOG_DEBUG)
		level = KILN_LOG_ERROR;
	n = snprintf(line, sizeof(line), "%s: %s: ", log_prog, level_names[level]);
	if (n < 0)
		return;
	vsnprintf(line + n, sizeof(line) - (size_t) n, fmt, ap);
	if (log_sink) {
		log_sink(level, line);
		return;
	}
	n = (int) strlen(line);
	if (n < (int) sizeof(line) - 1)
		line[n++] = '\n';
	(void) !write(STDERR_FILENO, line, (size_t) n);
}

void
kiln_log_emit(int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vemit(level, fmt, ap);
	va_end(ap);
}

int
log_error_err(const struct kiln_err *err, const char *fmt, ...)
{
	char prefix[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	kiln_log_emit(KILN_LOG_ERROR, "%s: %s", prefix, err ? err->msg : "unknown error");
	return err && err->code > 0 ? -err->code : -EINVAL;
}
