/* Leveled logging with a replaceable sink. Library code (shared/) logs at
 * debug at most; daemons decide what to log. */
#ifndef KILN_LOG_H
#define KILN_LOG_H

struct kiln_err;

enum kiln_log_level {
	KILN_LOG_ERROR = 0,
	KILN_LOG_WARN,
	KILN_LOG_INFO,
	KILN_LOG_DEBUG,
};

typedef void (*kiln_log_sink_fn)(int level, const char *line);

extern int kiln_log_level;

/* Sets the program name printed before each line ("kiln-worker"). Borrowed. */
void kiln_log_init(const char *progname);
/* Replace the sink; NULL restores stderr. */
void kiln_log_set_sink(kiln_log_sink_fn fn);
void kiln_log_emit(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define kiln_log(level, ...) do { \
	if ((level) <= kiln_log_level) \
		kiln_log_emit((level), __VA_ARGS__); \
} while (0)

#define log_error(...) kiln_log(KILN_LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  kiln_log(KILN_LOG_WARN, __VA_ARGS__)
#define log_info(...)  kiln_log(KILN_LOG_INFO, __VA_ARGS__)
#define log_debug(...) kiln_log(KILN_LOG_DEBUG, __VA_ARGS__)

/* Logs "<fmt>: <err->msg>" at error level and returns -err->code. */
int log_error_err(const struct kiln_err *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
