/* Fixed-size error values: no allocation, so an error path can never fail
 * or leak. Messages are truncated rather than grown. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "err.h"

int
kiln_err_set(struct kiln_err *err, int code, const char *fmt, ...)
{
	va_list ap;

	if (code <= 0)
		code = EINVAL;
	if (!err)
		return -code;
	err->code = code;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return -code;
}

int
kiln_err_errno(struct kiln_err *err, int code, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	if (code <= 0)
		code = EINVAL;
	if (!err)
		return -code;
	err->code = code;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	n = strlen(err->msg);
	if (code < 1000 && n < sizeof(err->msg))
		snprintf(err->msg + n, sizeof(err->msg) - n, ": %s", strerror(code));
	return -code;
}

int
kiln_err_wrap(struct kiln_err *err, const char *fmt, ...)
{
	char buf[sizeof(err->msg)];
	size_t n, old;
	va_list ap;

	if (!err)
		return -EINVAL;
	if (err->code <= 0)
		err->code = EINVAL;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf) - 3, fmt, ap);
	va_end(ap);
	n = strlen(buf);
	memcpy(buf + n, ": ", 3);
	n += 2;
	old = strnlen(err->msg, sizeof(err->msg) - 1);
	if (old > sizeof(buf) - 1 - n)
		old = sizeof(buf) - 1 - n;
	memcpy(buf + n, err->msg, old);
	buf[n + old] = '\0';
	memcpy(err->msg, buf, sizeof(buf));
	return -err->code;
}

void
kiln_err_clear(struct kiln_err *err)
{
	if (!err)
		return;
	err->code = 0;
	err->msg[0] = '\0';
}
