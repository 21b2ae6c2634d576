/* Context scanning. Files are hashed here, on the client, because the
 * digests are what lets the worker answer "I already have that": a second
 * build of an unchanged context moves no file content.
 *
 * The .dockerignore is applied during the walk, the way BuildKit's file
 * sync (tonistiigi/fsutil) applies it on the client: each path is matched
 * with the results of its parent directory (patternmatcher's
 * MatchesUsingParentResults), an excluded directory is skipped whole
 * unless a '!' pattern might re-include something inside it, and an
 * excluded directory that does contain a re-included entry is listed
 * after all, so that the entry has a parent. Excluded files are never
 * opened. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "context.h"
#include "err.h"
#include "ignore.h"
#include "util.h"

struct walk {
	const char *root;
	const struct ignore *ig;
	size_t n_pat;
	bool may_prune;         /* fsutil's onlyPrefixExcludeExceptions */
	struct ctx_list *l;
	size_t cap;
	struct kiln_err *err;
};

/* An excluded directory on the way down: listed when an entry below it
 * is. */
struct pending {
	struct ctx_entry e;
	bool listed;
	struct pending *up;
};

static void
entry_release(struct ctx_entry *e)
{
	free(e->path);
	free(e->abs);
	free(e->link);
	memset(e, 0, sizeof(*e));
}

static int
push(struct walk *w, struct ctx_entry *e)
{
	struct ctx_list *l = w->l;

	if (l->n >= CONTEXT_MAX_ENTRIES)
		return kiln_err_set(w->err, E2BIG, "build context has over %d entries",
				    CONTEXT_MAX_ENTRIES);
	if (l->n == w->cap) {
		size_t ncap = w->cap ? w->cap * 2 : 256;
		struct ctx_entry *nv = realloc(l->v, ncap * sizeof(*nv));

		if (!nv)
			return kiln_err_set(w->err, ENOMEM, "out of memory");
		l->v = nv;
		w->cap = ncap;
	}
	l->v[l->n++] = *e;
	memset(e, 0, sizeof(*e));       /* the list owns it now */
	return 0;
}

/* List the excluded directories above an entry that is listed, outermost
 * first. */
static int
push_pending(struct walk *w, struct pending *p)
{
	int r;

	if (!p || p->listed)
		return 0;
	r = push_pending(w, p->up);
	if (r < 0)
		return r;
	r = push(w, &p->e);
	if (r == 0)
		p->listed = true;
	return r;
}

/* The length of pattern p without a trailing slash-star or
 * slash-star-star, which only widen it to everything below the
 * directory named before them (fsutil's patternWithoutTrailingGlob). */
static size_t
without_trailing_glob(const char *p)
{
	size_t n = strlen(p);

	if (n >= 3 && strcmp(p + n - 3, "/**") == 0)
		n -= 3;
	if (n >= 2 && strncmp(p + n - 2, "/*", 2) == 0)
		n -= 2;
	return n;
}

/* MatchesUsingParentResults: parent[i] says whether pattern i matched the
 * parent directory (NULL at the top, where there is no parent); out[i] is
 * filled for path's own children. A pattern is only evaluated when it
 * could change the outcome, and a pattern skipped that way counts as not
 * matching for the children too, as upstream. */
static int
match(struct walk *w, const char *path, const bool *parent, bool *out, bool *ret_excluded)
{
	bool matched = false;
	int r;

	for (size_t i = 0; i < w->n_pat; i++) {
		bool excl, m = parent ? parent[i] : false;

		(void) ignore_pattern(w->ig, i, &excl);
		out[i] = false;
		if (!m) {
			if (excl != matched)
				continue;
			r = ignore_pattern_match(w->ig, i, path, &m, w->err);
			if (r < 0)
				return kiln_err_wrap(w->err, "failed to match excludepatterns");
		}
		out[i] = m;
		if (m)
			matched = !excl;
	}
	*ret_excluded = matched;
	return 0;
}

/* Can nothing below the excluded directory dir be re-included? Only
 * decided for '!' patterns without wildcards, as fsutil does: then a '!'
 * pattern reaches inside dir only when it names a path under it. */
static bool
can_skip_dir(const struct walk *w, const char *dir)
{
	size_t dl = strlen(dir);

	if (!w->may_prune)
		return false;
	if (!ignore_has_exclusions(w->ig))
		return true;
	for (size_t i = 0; i < w->n_pat; i++) {
		bool excl;
		const char *p = ignore_pattern(w->ig, i, &excl);
		size_t pl;

		if (!excl)
			continue;
		pl = without_trailing_glob(p);
		/* pattern + "/" starts with dir + "/" */
		if (pl >= dl && strncmp(p, dir, dl) == 0 && (pl == dl || p[dl] == '/'))
			return false;
	}
	return true;
}

static int
stat_entry(struct walk *w, const char *rel, const char *name, struct ctx_entry *e, bool *ret_skip)
{
	struct stat st;

	memset(e, 0, sizeof(*e));
	*ret_skip = false;
	e->path = *rel ? kiln_strdupf("%s/%s", rel, name) : strdup(name);
	e->abs = e->path ? kiln_strdupf("%s/%s", w->root, e->path) : NULL;
	if (!e->path || !e->abs)
		return kiln_err_set(w->err, ENOMEM, "out of memory");
	if (lstat(e->abs, &st) < 0)
		return kiln_err_errno(w->err, errno, "stat '%s'", e->abs);
	e->mode = st.st_mode & 07777;
	e->mtime = st.st_mtim.tv_sec;
	if (S_ISREG(st.st_mode)) {
		e->kind = 'f';
		e->size = (uint64_t) st.st_size;
	} else if (S_ISDIR(st.st_mode)) {
		e->kind = 'd';
	} else if (S_ISLNK(st.st_mode)) {
		char buf[4096];
		ssize_t n = readlink(e->abs, buf, sizeof(buf) - 1);

		if (n < 0)
			return kiln_err_errno(w->err, errno, "readlink '%s'", e->abs);
		buf[n] = '\0';
		e->kind = 'l';
		e->link = strdup(buf);
		if (!e->link)
			return kiln_err_set(w->err, ENOMEM, "out of memory");
	} else {
		*ret_skip = true;       /* sockets, fifos, devices do not travel */
	}
	return 0;
}

static int
walk(struct walk *w, const char *rel, const bool *parent, struct pending *pend)
{
	_cleanup_free_ char *dir = *rel ? kiln_strdupf("%s/%s", w->root, rel) : strdup(w->root);
	_cleanup_free_ bool *m = w->n_pat ? calloc(w->n_pat, sizeof(bool)) : NULL;
	_cleanup_closedir_ DIR *d = NULL;
	struct dirent *de;
	int r;

	if (!dir || (w->n_pat && !m))
		return kiln_err_set(w->err, ENOMEM, "out of memory");
	d = opendir(dir);
	if (!d)
		return kiln_err_errno(w->err, errno, "read context directory '%s'", dir);
	while ((de = readdir(d))) {
		struct ctx_entry e;
		bool skip, is_dir, excluded = false;
		const char *path;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		r = stat_entry(w, rel, de->d_name, &e, &skip);
		if (r == 0 && !skip && w->ig)
			r = match(w, e.path, parent, m, &excluded);
		if (r < 0 || skip) {
			entry_release(&e);
			if (r < 0)
				return r;
			continue;
		}
		if (excluded) {
			struct pending p = { .up = pend };

			if (e.kind != 'd' || can_skip_dir(w, e.path)) {
				entry_release(&e);
				continue;
			}
			p.e = e;
			r = walk(w, p.e.path, m, &p);
			if (!p.listed)
				entry_release(&p.e);
			if (r < 0)
				return r;
			continue;
		}
		is_dir = e.kind == 'd';
		path = e.path;          /* stays valid: the list takes the string */
		r = push_pending(w, pend);
		if (r == 0 && e.kind == 'f') {
			r = digest_file(e.abs, &e.digest, NULL);
			if (r < 0)
				r = kiln_err_errno(w->err, -r, "read '%s'", e.abs);
		}
		if (r == 0) {
			if (e.kind == 'f')
				w->l->bytes += e.size;
			r = push(w, &e);
		}
		if (r < 0) {
			entry_release(&e);
			return r;
		}
		if (is_dir) {
			/* listed: nothing above it is pending any more */
			r = walk(w, path, m, NULL);
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
context_scan_with(const char *root, const struct ignore *ig, struct ctx_list *ret,
		  struct kiln_err *err)
{
	struct ctx_list l = { 0 };
	struct walk w = { .root = root, .ig = ig, .l = &l, .err = err, .may_prune = true };
	int r;

	if (ig) {
		w.n_pat = ignore_count(ig);
		for (size_t i = 0; i < w.n_pat; i++) {
			bool excl;
			const char *p = ignore_pattern(ig, i, &excl);
			size_t pl = without_trailing_glob(p);

			for (size_t k = 0; excl && k < pl; k++)
				if (strchr("*[]?^\\", p[k]))
					w.may_prune = false;
		}
	}
	r = walk(&w, "", NULL, NULL);
	if (r < 0) {
		context_release(&l);
		return r;
	}
	if (l.n)
		qsort(l.v, l.n, sizeof(*l.v), cmp_entry);
	*ret = l;
	return 0;
}

static bool
is_file(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int
context_find_ignore(const char *root, const char *dockerfile, char **ret_path,
		    struct kiln_err *err)
{
	_cleanup_free_ char *named = dockerfile ? kiln_strdupf("%s.dockerignore", dockerfile) :
				     kiln_strdupf("%s/Dockerfile.dockerignore", root);
	_cleanup_free_ char *plain = kiln_strdupf("%s/.dockerignore", root);

	if (!named || !plain)
		return kiln_err_set(err, ENOMEM, "out of memory");
	if (is_file(named)) {
		*ret_path = STEAL_PTR(named);
		return 1;
	}
	if (is_file(plain)) {
		*ret_path = STEAL_PTR(plain);
		return 1;
	}
	return 0;
}

int
context_scan(const char *root, const char *dockerfile, struct ctx_list *ret,
	     struct kiln_err *err)
{
	_cleanup_free_ char *path = NULL;
	_cleanup_free_ char *text = NULL;
	struct ignore *ig = NULL;
	size_t len = 0;
	int r;

	r = context_find_ignore(root, dockerfile, &path, err);
	if (r < 0)
		return r;
	if (r > 0) {
		r = kiln_read_file_at(AT_FDCWD, path, CONTEXT_IGNORE_MAX, &text, &len);
		if (r < 0)
			return kiln_err_errno(err, -r, "read '%s'", path);
		r = ignore_parse(text, len, &ig, err);
		if (r < 0)
			return kiln_err_wrap(err, "failed to parse '%s'", path);
	}
	r = context_scan_with(root, ig, ret, err);
	ignore_free(ig);
	if (r < 0)
		return r;
	ret->ignore_path = STEAL_PTR(path);
	ret->ignore_size = len;
	return 0;
}

void
context_release(struct ctx_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		entry_release(&l->v[i]);
	free(l->v);
	free(l->ignore_path);
	memset(l, 0, sizeof(*l));
}
