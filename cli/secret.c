/* `kiln build --secret` sources (see secret.h). This module only parses
 * specs and reads values; it never logs, prints or stores a value, and
 * every buffer that held one is zeroed before it is freed. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "err.h"
#include "secret.h"

static int
set_str(char **dst, const char *v, size_t n)
{
	free(*dst);
	*dst = strndup(v, n);
	return *dst ? 0 : -ENOMEM;
}

int
secret_src_parse(const char *spec, struct secret_src *ret, struct kiln_err *err)
{
	struct secret_src s = { 0 };
	_cleanup_free_ char *file = NULL;
	bool type_env = false;
	const char *p = spec;
	int r = 0;

	while (*p && r == 0) {
		size_t n = strcspn(p, ","), kl;
		const char *eq = memchr(p, '=', n), *v;

		if (!eq) {
			r = kiln_err_set(err, EINVAL, "invalid field '%.*s' must be a key=value pair",
					 (int) n, p);
			break;
		}
		kl = (size_t) (eq - p);
		v = eq + 1;
#define KEY(k) (kl == strlen(k) && strncasecmp(p, k, kl) == 0)
		if (KEY("type")) {
			if (strncmp(v, "file", 4) == 0 && v + 4 == p + n)
				type_env = false;
			else if (strncmp(v, "env", 3) == 0 && v + 3 == p + n)
				type_env = true;
			else
				r = kiln_err_set(err, EINVAL, "unsupported secret type \"%.*s\"",
						 (int) (p + n - v), v);
		} else if (KEY("id")) {
			r = set_str(&s.id, v, (size_t) (p + n - v));
		} else if (KEY("src") || KEY("source")) {
			r = set_str(&file, v, (size_t) (p + n - v));
		} else if (KEY("env")) {
			r = set_str(&s.env, v, (size_t) (p + n - v));
		} else {
			r = kiln_err_set(err, EINVAL, "unexpected key '%.*s' in '%s'", (int) kl, p, spec);
		}
#undef KEY
		if (r == -ENOMEM)
			kiln_err_set(err, ENOMEM, "out of memory");
		p += n;
		if (*p == ',')
			p++;
	}
	if (r == 0 && type_env && (!s.env || !*s.env)) {
		free(s.env);
		s.env = STEAL_PTR(file);
	}
	if (r == 0 && (!s.id || !*s.id))
		r = kiln_err_set(err, EINVAL, "secret missing ID");
	if (r == 0 && s.env && !*s.env) {
		free(s.env);
		s.env = NULL;
	}
	if (r == 0 && file && !*file) {
		free(file);
		file = NULL;
	}
	if (r == 0 && !s.env && !file) {
		/* buildx: the variable named id when it is set, else the file id */
		if (getenv(s.id))
			s.env = strdup(s.id);
		else
			file = strdup(s.id);
		if (!s.env && !file)
			r = kiln_err_set(err, ENOMEM, "out of memory");
	}
	if (r == 0 && s.env) {
		free(file);
		file = NULL;
	}
	if (r == 0 && file) {
		struct stat st;

		if (stat(file, &st) < 0)
			r = kiln_err_errno(err, errno, "failed to stat %s", file);
		else if (st.st_size > (off_t) SECRET_MAX)
			r = kiln_err_set(err, EFBIG, "secret %s too big. max size 500KB", s.id);
		s.file = STEAL_PTR(file);
	}
	if (r < 0) {
		secret_src_release(&s);
		return r;
	}
	*ret = s;
	return 0;
}

void
secret_src_release(struct secret_src *s)
{
	free(s->id);
	free(s->file);
	free(s->env);
	*s = (struct secret_src) { 0 };
}

void
secret_value_free(char *value, size_t len)
{
	if (!value)
		return;
	explicit_bzero(value, len);
	free(value);
}

int
secret_src_read(const struct secret_src *s, char **ret_value, size_t *ret_len,
		struct kiln_err *err)
{
	_cleanup_close_ int fd = -1;
	char *buf;
	size_t len = 0;

	if (s->env) {
		const char *v = getenv(s->env);

		/* as buildx: an unset variable is an empty secret */
		len = v ? strlen(v) : 0;
		if (len > SECRET_MAX)
			return kiln_err_set(err, EFBIG, "secret %s too big. max size 500KB", s->id);
		buf = malloc(len + 1);
		if (!buf)
			return kiln_err_set(err, ENOMEM, "out of memory");
		memcpy(buf, v ? v : "", len + 1);
		*ret_value = buf;
		*ret_len = len;
		return 0;
	}
	fd = open(s->file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return kiln_err_errno(err, errno, "secret %s: open '%s'", s->id, s->file);
	/* one buffer of the final size: no realloc leaves copies behind */
	buf = malloc(SECRET_MAX + 1);
	if (!buf)
		return kiln_err_set(err, ENOMEM, "out of memory");
	for (;;) {
		ssize_t n = read(fd, buf + len, SECRET_MAX + 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;

			secret_value_free(buf, len);
			return kiln_err_errno(err, e, "secret %s: read '%s'", s->id, s->file);
		}
		if (n == 0)
			break;
		len += (size_t) n;
		if (len > SECRET_MAX) {
			secret_value_free(buf, len);
			return kiln_err_set(err, EFBIG, "secret %s too big. max size 500KB", s->id);
		}
	}
	*ret_value = buf;
	*ret_len = len;
	return 0;
}
