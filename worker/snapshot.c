/* Layer directories and lookups through a stack of them. See snapshot.h.
 * The invariant that makes sharing safe: a directory under layers/ is only
 * ever created by rename() of a complete tree, and never changed after. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "cas.h"
#include "cleanup.h"
#include "digest.h"
#include "err.h"
#include "layer.h"
#include "op.h"
#include "snapshot.h"
#include "util.h"

static char *
layer_dir(const char *state, const struct digest *diff_id)
{
	char hex[65];

	return kiln_strdupf("%s/layers/%s", state, digest_hex(diff_id, hex));
}

int
snap_ensure_layer(const char *state, struct cas *cas, const struct op_layer *l, char **ret_dir,
		  struct kiln_err *err)
{
	_cleanup_free_ char *dir = layer_dir(state, &l->diff_id);
	char blob[4096], want[DIGEST_STR_SIZE], got[DIGEST_STR_SIZE];
	struct digest diff_id;
	struct stat st;
	int r;

	if (!dir)
		return kiln_err_set(err, ENOMEM, "out of memory");
	if (stat(dir, &st) == 0) {
		*ret_dir = STEAL_PTR(dir);
		return 0;
	}
	r = kiln_mkdir_p(dir, 0700);     /* parents */
	if (r < 0)
		return kiln_err_errno(err, -r, "mkdir '%s'", dir);
	(void) rmdir(dir);
	if (!cas_has(cas, &l->digest))
		return kiln_err_set(err, ENOENT, "layer blob %s is not on this node",
				    digest_fmt(&l->digest, want));
	cas_path(cas, &l->digest, blob, sizeof(blob));
	r = layer_extract(blob, dir, &diff_id, err);
	if (r < 0) {
		/* Someone else extracted it meanwhile: theirs is as good. */
		if (stat(dir, &st) == 0) {
			*ret_dir = STEAL_PTR(dir);
			return 0;
		}
		return kiln_err_wrap(err, "extract layer %s", digest_fmt(&l->digest, want));
	}
	if (!digest_equal(&diff_id, &l->diff_id)) {
		(void) kiln_rm_rf(dir);
		return kiln_err_set(err, EBADMSG, "layer %s: diff_id is %s, config says %s",
				    digest_fmt(&l->digest, blob), digest_fmt(&diff_id, got),
				    digest_fmt(&l->diff_id, want));
	}
	*ret_dir = STEAL_PTR(dir);
	return 0;
}

int
snap_adopt(const char *state, const char *upper, const struct digest *diff_id, char **ret_dir,
	   struct kiln_err *err)
{
	_cleanup_free_ char *dir = layer_dir(state, diff_id);
	int r;

	if (!dir)
		return kiln_err_set(err, ENOMEM, "out of memory");
	r = kiln_mkdir_p(dir, 0700);
	if (r < 0)
		return kiln_err_errno(err, -r, "mkdir '%s'", dir);
	(void) rmdir(dir);
	if (rename(upper, dir) < 0) {
		if (errno != EEXIST && errno != ENOTEMPTY)
			return kiln_err_errno(err, errno, "rename '%s' to '%s'", upper, dir);
		(void) kiln_rm_rf(upper);
	}
	*ret_dir = STEAL_PTR(dir);
	return 0;
}

int
snap_empty_dir(const char *state, char **ret_dir, struct kiln_err *err)
{
	char *dir = kiln_strdupf("%s/empty", state);
	int r;

	if (!dir)
		return kiln_err_set(err, ENOMEM, "out of memory");
	r = kiln_mkdir_p(dir, 0755);
	if (r < 0) {
		free(dir);
		return kiln_err_errno(err, -r, "mkdir '%s'", state);
	}
	*ret_dir = dir;
	return 0;
}

static bool
is_whiteout(const struct stat *st)
{
	return S_ISCHR(st->st_mode) && st->st_rdev == 0;
}

static bool
is_opaque(const char *path)
{
	char v[4];
	ssize_t n = lgetxattr(path, "trusted.overlay.opaque", v, sizeof(v));

	return n == 1 && v[0] == 'y';
}

int
snap_lookup(char *const *stack, size_t n, const char *path, struct stat *ret_st)
{
	return snap_resolve(stack, n, path, ret_st, NULL);
}

int
snap_resolve(char *const *stack, size_t n, const char *path, struct stat *ret_st, char **ret_real)
{
	while (*path == '/')
		path++;
	if (!*path) {
		/* The root always exists; take its metadata from the top. */
		for (size_t i = 0; i < n; i++)
			if (lstat(stack[i], ret_st) == 0) {
				if (ret_real && !(*ret_real = strdup(stack[i])))
					return 0;
				return 1;
			}
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *full = kiln_strdupf("%s/%s", stack[i], path);
		_cleanup_free_ char *parent = NULL;
		char *slash;

		if (!full)
			return 0;
		if (lstat(full, ret_st) == 0) {
			if (is_whiteout(ret_st))
				return 0;
			if (ret_real)
				*ret_real = STEAL_PTR(full);
			return 1;
		}
		/* An opaque parent in this layer hides the lower layers. */
		parent = strdup(full);
		while (parent && (slash = strrchr(parent, '/')) && slash > parent + strlen(stack[i])) {
			*slash = '\0';
			if (is_opaque(parent))
				return 0;
		}
	}
	return 0;
}

int
snap_follow(char *const *stack, size_t n, const char *path, char **ret_path)
{
	_cleanup_free_ char *done = strdup("");         /* resolved so far; "" is the root */
	_cleanup_free_ char *rest = strdup(path);       /* still to walk */
	int links = 0;

	if (!done || !rest)
		return -ENOMEM;
	for (;;) {
		_cleanup_free_ char *cand = NULL;
		_cleanup_free_ char *real = NULL;
		char *p = rest, *tail;
		struct stat st;
		size_t len;

		while (*p == '/')
			p++;
		if (!*p)
			break;
		len = strcspn(p, "/");
		tail = p + len;                         /* "" or "/..." */
		if (len == 1 && p[0] == '.') {
			memmove(rest, tail, strlen(tail) + 1);
			continue;
		}
		if (len == 2 && p[0] == '.' && p[1] == '.') {
			char *sl = strrchr(done, '/');

			if (sl)
				*sl = '\0';
			memmove(rest, tail, strlen(tail) + 1);
			continue;
		}
		cand = kiln_strdupf("%s/%.*s", done, (int) len, p);
		if (!cand)
			return -ENOMEM;
		if (snap_resolve(stack, n, cand, &st, &real) == 1 && S_ISLNK(st.st_mode)) {
			char target[4096];
			ssize_t tn;
			char *next;

			if (++links > SNAP_MAX_LINKS)
				return -ELOOP;
			tn = readlink(real, target, sizeof(target) - 1);
			if (tn < 0)
				return -errno;
			target[tn] = '\0';
			/* relative targets go on from the link's directory (done) */
			next = kiln_strdupf("%s%s", target, tail);
			if (!next)
				return -ENOMEM;
			free(rest);
			rest = next;
			if (target[0] == '/')
				done[0] = '\0';
			continue;
		}
		free(done);
		done = STEAL_PTR(cand);
		memmove(rest, tail, strlen(tail) + 1);
	}
	*ret_path = *done ? STEAL_PTR(done) : strdup("/");
	return *ret_path ? 0 : -ENOMEM;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

int
snap_readdir(char *const *stack, size_t n, const char *path, char ***ret_names, size_t *ret_n,
	     struct kiln_err *err)
{
	char **names = NULL, **hidden = NULL;
	size_t n_names = 0, n_hidden = 0;

	while (*path == '/')
		path++;
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *dir = kiln_strdupf("%s/%s", stack[i], path);
		_cleanup_closedir_ DIR *d = NULL;
		size_t first_new = n_hidden;
		struct dirent *de;
		struct stat st;

		if (!dir)
			goto nomem;
		if (lstat(dir, &st) < 0)
			continue;
		if (!S_ISDIR(st.st_mode))
			break;          /* a file or whiteout here hides what is below */
		d = opendir(dir);
		if (!d) {
			op_strv_free(names, n_names);
			op_strv_free(hidden, n_hidden);
			return kiln_err_errno(err, errno, "read directory '%s'", dir);
		}
		while ((de = readdir(d))) {
			_cleanup_free_ char *child = NULL;
			bool seen = false;

			if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
				continue;
			/* Names of upper layers hide those below; check only
			 * what the layers above this one recorded. */
			for (size_t k = 0; k < first_new && !seen; k++)
				seen = strcmp(hidden[k], de->d_name) == 0;
			if (seen)
				continue;
			if (op_add_arg(&hidden, &n_hidden, de->d_name) < 0)
				goto nomem;
			child = kiln_strdupf("%s/%s", dir, de->d_name);
			if (!child || lstat(child, &st) < 0)
				continue;
			if (is_whiteout(&st))
				continue;
			if (op_add_arg(&names, &n_names, de->d_name) < 0)
				goto nomem;
		}
		if (is_opaque(dir))
			break;
	}
	op_strv_free(hidden, n_hidden);
	if (n_names)
		qsort(names, n_names, sizeof(*names), cmp_str);
	*ret_names = names;
	*ret_n = n_names;
	return 0;
nomem:
	op_strv_free(names, n_names);
	op_strv_free(hidden, n_hidden);
	return kiln_err_set(err, ENOMEM, "out of memory");
}
