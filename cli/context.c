/* Context scanning. Files are hashed here, on the client, because the
 * digests are what lets the worker answer "I already have that": a second
 * build of an unchanged context moves no file content. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "context.h"
#include "err.h"
#include "util.h"

static int
push(struct ctx_list *l, size_t *cap, struct ctx_entry *e)
{
	if (l->n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 256;
		struct ctx_entry *nv = realloc(l->v, ncap * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		l->v = nv;
		*cap = ncap;
	}
	l->v[l->n++] = *e;
	return 0;
}

static int
walk(const char *root, const char *rel, struct ctx_list *l, size_t *cap, struct kiln_err *err)
{
	_cleanup_free_ char *dir = *rel ? kiln_strdupf("%s/%s", root, rel) : strdup(root);
	_cleanup_closedir_ DIR *d = NULL;
	struct dirent *de;
	int r;

	if (!dir)
		return kiln_err_set(err, ENOMEM, "out of memory");
	d = opendir(dir);
	if (!d)
		return kiln_err_errno(err, errno, "read context directory '%s'", dir);
	while ((de = readdir(d))) {
		struct ctx_entry e = { 0 };
		struct stat st;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (l->n >= CONTEXT_MAX_ENTRIES)
			return kiln_err_set(err, E2BIG, "build context has over %d entries",
					    CONTEXT_MAX_ENTRIES);
		e.path = *rel ? kiln_strdupf("%s/%s", rel, de->d_name) : strdup(de->d_name);
		e.abs = e.path ? kiln_strdupf("%s/%s", root, e.path) : NULL;
		if (!e.path || !e.abs) {
			free(e.path);
			free(e.abs);
			return kiln_err_set(err, ENOMEM, "out of memory");
		}
		if (lstat(e.abs, &st) < 0) {
			r = kiln_err_errno(err, errno, "stat '%s'", e.abs);
			free(e.path);
			free(e.abs);
			return r;
		}
		e.mode = st.st_mode & 07777;
		e.mtime = st.st_mtim.tv_sec;
		if (S_ISREG(st.st_mode)) {
			e.kind = 'f';
			e.size = (uint64_t) st.st_size;
			r = digest_file(e.abs, &e.digest, NULL);
			if (r < 0) {
				free(e.path);
				free(e.abs);
				return kiln_err_errno(err, -r, "read '%s'", e.abs);
			}
			l->bytes += e.size;
		} else if (S_ISDIR(st.st_mode)) {
			e.kind = 'd';
		} else if (S_ISLNK(st.st_mode)) {
			char buf[4096];
			ssize_t n = readlink(e.abs, buf, sizeof(buf) - 1);

			if (n < 0) {
				free(e.path);
				free(e.abs);
				return kiln_err_errno(err, errno, "readlink '%s'", e.abs);
			}
			buf[n] = '\0';
			e.kind = 'l';
			e.link = strdup(buf);
		} else {
			free(e.path);
			free(e.abs);
			continue;       /* sockets, fifos, devices do not travel */
		}
		if (push(l, cap, &e) < 0) {
			free(e.path);
			free(e.abs);
			free(e.link);
			return kiln_err_set(err, ENOMEM, "out of memory");
		}
		if (e.kind == 'd') {
			r = walk(root, e.path, l, cap, err);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

static int
cmp_entry(const void *a, const void *b)
{
	return strcmp(((const struct ctx_entry *) a)->path, ((const struct ctx_entry *) b)->path);
}

int
context_scan(const char *root, struct ctx_list *ret, struct kiln_err *err)
{
	struct ctx_list l = { 0 };
	size_t cap = 0;
	int r;

	r = walk(root, "", &l, &cap, err);
	if (r < 0) {
		context_release(&l);
		return r;
	}
	if (l.n)
		qsort(l.v, l.n, sizeof(*l.v), cmp_entry);
	*ret = l;
	return 0;
}

void
context_release(struct ctx_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].path);
		free(l->v[i].abs);
		free(l->v[i].link);
	}
	free(l->v);
	l->v = NULL;
	l->n = 0;
}
