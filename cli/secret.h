/* `kiln build --secret`: buildx's syntax for where a build secret's value
 * comes from, and reading it. Values are only read when the coordinator
 * asks for their id (build.secrets.need), live in memory only, and are
 * zeroed before they are freed. */
#ifndef KILN_SECRET_H
#define KILN_SECRET_H

#include <stddef.h>

struct kiln_err;

#define SECRET_MAX (500u << 10)         /* BuildKit's MaxSecretSize */

struct secret_src {
	char *id;
	char *file;                     /* the value is this file's content... */
	char *env;                      /* ...or this variable's value (exactly one is set) */
};

/* Parse "id=X[,type=file|env][,src|source=FILE][,env=VAR]" as buildx does:
 * type=env takes the variable from src= when env= is not given, and with
 * neither src nor env the value comes from the variable named X when it is
 * set, else from the file X. A file must exist and hold at most SECRET_MAX
 * bytes (checked now, read later). On success the caller owns *ret
 * (secret_src_release). */
int secret_src_parse(const char *spec, struct secret_src *ret, struct kiln_err *err);
void secret_src_release(struct secret_src *s);
/* Read the value into a malloc'd buffer the caller owns and frees with
 * secret_value_free. Errors never contain the value. */
int secret_src_read(const struct secret_src *s, char **ret_value, size_t *ret_len,
		    struct kiln_err *err);
/* Zero and free a value; NULL is a no-op. */
void secret_value_free(char *value, size_t len);

#endif
