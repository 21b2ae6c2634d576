/* Errors that carry a code and a human message without allocating.
 * The caller owns the struct (usually on its stack); callees fill it. */
#ifndef KILN_ERR_H
#define KILN_ERR_H

#include <errno.h>

enum {
	KILN_EPROTO = 1000,   /* malformed wire message */
	KILN_EBUILD,          /* a build step failed (its own error) */
	KILN_EPARSE,          /* malformed Dockerfile or other user input */
	KILN_EAUTH,           /* peer refused */
	KILN_ENOIMAGE,        /* the frontend needs an image it was not given */
};

struct kiln_err {
	int code;             /* positive errno or KILN_E*; 0 = no error */
	char msg[512];
};

/* Set err (may be NULL) and return -code, so it can be used in `return`. */
int kiln_err_set(struct kiln_err *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Prepend "context: " to err->msg and return -err->code. */
int kiln_err_wrap(struct kiln_err *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Like kiln_err_set, appending ": strerror(code)" for errno codes. */
int kiln_err_errno(struct kiln_err *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void kiln_err_clear(struct kiln_err *err);

#endif
