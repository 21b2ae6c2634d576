/* COPY and ADD: from the build context (resolved here against the client's
 * listing into OP_COPY entries, so only the files read travel) or from
 * another stage or image (COPY --from: OP_COPY_FROM, resolved on the worker,
 * which has that filesystem). RUN --mount=type=bind without from= reads the
 * context the same way: the path mounted becomes an OP_COPY on scratch
 * (plan_context_mount) that the RUN mounts like a stage.
 *
 * BuildKit's rules followed: sources and destination are expanded with the
 * stage's environment; a relative destination is taken from the working
 * directory and a trailing "/" (or ".") means "into this directory"; sources
 * of --from are absolute in the source's filesystem; a wildcard that matches
 * nothing copies nothing; history reads "COPY [--parents] SRC... DEST
 * # buildkit" with expanded words and without --chown, --chmod, --from or
 * --link, as Docker 20.10's BuildKit writes it.
 *
 * --chown names and ADD's archive extraction and URL downloads are left to
 * the worker (op fields chown_user/chown_group, entry unpack_dir, entries of
 * kind OP_ENTRY_URL); symbolic --chmod, --parents and --exclude are applied
 * here for context sources and passed on for COPY --from (except --parents).
 *
 * Not done here yet (clear errors instead): git sources, heredocs, COPY
 * --from with --parents, ADD --unpack=true of a URL. --link builds a plain
 * COPY (same files; no independent layer). */
#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "dockerfile.h"
#include "err.h"
#include "ignore.h"
#include "instructions.h"
#include "plan-internal.h"
#include "shell.h"
#include "util.h"


struct copy_opts {
	bool chown;
	uint32_t uid, gid;
	char *chown_user;               /* names (or a number next to a name), for the worker */
	char *chown_group;
	bool chmod;
	uint32_t mode;
	char *chmod_spec;               /* symbolic --chmod */
	struct ignore *exclude;         /* --exclude, or NULL */
	bool parents;
	bool unpack;                    /* ADD: extract local archives */
};

enum { F_CHOWN, F_CHMOD, F_FROM, F_LINK, F_PARENTS, F_EXCLUDE, F_KEEP_GIT_DIR, F_CHECKSUM, F_UNPACK };

static const struct instr_flag_def copy_defs[] = {
	[F_CHOWN] = { "chown", INSTR_FLAG_STRING, "" },
	[F_CHMOD] = { "chmod", INSTR_FLAG_STRING, "" },
	[F_FROM] = { "from", INSTR_FLAG_STRING, "" },
	[F_LINK] = { "link", INSTR_FLAG_BOOL, "false" },
	[F_PARENTS] = { "parents", INSTR_FLAG_BOOL, "false" },
	[F_EXCLUDE] = { "exclude", INSTR_FLAG_STRINGS, NULL },
	/* ADD only; COPY's check already refused them */
	[F_KEEP_GIT_DIR] = { "keep-git-dir", INSTR_FLAG_BOOL, "false" },
	[F_CHECKSUM] = { "checksum", INSTR_FLAG_STRING, "" },
	[F_UNPACK] = { "unpack", INSTR_FLAG_BOOL, "false" },
};


/* "/a/b" from a base directory and a path that may be relative. */
static char *
abs_path(const char *base, const char *p)
{
	_cleanup_free_ char *joined = p[0] == '/' ? strdup(p) :
				      kiln_strdupf("%s/%s", base && *base ? base : "/", p);

	return joined ? kiln_path_clean(joined) : NULL;
}

/* Does dest name a directory to copy into? (BuildKit keeps a trailing
 * slash, and "." is "./".) */
static bool
dest_is_dir(const char *raw)
{
	size_t len = strlen(raw);

	return len == 0 || raw[len - 1] == '/' || strcmp(raw, ".") == 0 || strcmp(raw, "..") == 0 ||
	       (len >= 2 && strcmp(raw + len - 2, "/.") == 0) ||
	       (len >= 3 && strcmp(raw + len - 3, "/..") == 0);
}

static uint32_t
entry_mode(const struct copy_opts *co, uint32_t mode, char kind)
{
	if (co->chmod)
		return co->mode;
	if (co->chmod_spec)
		return op_mode_apply(co->chmod_spec, mode, kind == OP_ENTRY_DIR);
	return mode;
}

static struct op_entry *
new_entry(struct ctx *c, struct op *op)
{
	struct op_entry *n = realloc(op->entries, (op->n_entries + 1) * sizeof(*n));

	if (!n) {
		plan_nomem(c);
		return NULL;
	}
	op->entries = n;
	memset(&n[op->n_entries], 0, sizeof(*n));
	return &n[op->n_entries++];
}

static int
add_entry(struct ctx *c, struct op *op, const struct plan_file *f, const char *dest,
	  const struct copy_opts *co)
{
	struct op_entry *e = new_entry(c, op);

	if (!e)
		return -c->err->code;
	e->path = strdup(dest);
	e->kind = f->kind;
	e->mode = entry_mode(co, f->mode, f->kind);
	e->uid = co->chown ? co->uid : 0;
	e->gid = co->chown ? co->gid : 0;
	e->mtime = f->mtime;
	e->digest = f->digest;
	e->link = f->link ? strdup(f->link) : NULL;
	if (!e->path || (f->link && !e->link))
		return plan_nomem(c);
	return 0;
}

/* Is the entry at rel (relative to the source being copied) excluded? */
static int
excluded(struct ctx *c, int line, const struct copy_opts *co, const char *rel, bool *ret)
{
	*ret = false;
	if (!co->exclude || !*rel)
		return 0;
	if (ignore_match(co->exclude, rel, ret, c->err) < 0)
		return plan_line_err(c, line, EINVAL, "--exclude: %s", c->err->msg);
	return 0;
}

static const struct plan_file *
find_file(struct ctx *c, const char *path)
{
	size_t lo = 0, hi = c->in->n_files;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int d = strcmp(c->in->files[mid].path, path);

		if (d == 0)
			return &c->in->files[mid];
		if (d < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* Copy one source (a context entry, or the context root when f is NULL)
 * to dest. A directory's contents go into dest; a file goes to dest, or
 * into it (under the name the Dockerfile used, name) when into_dir. */
static int
copy_source(struct ctx *c, int line, struct op *op, const struct plan_file *f, const char *name,
	    const char *dest, bool into_dir, const struct copy_opts *co)
{
	const char *prefix = f ? f->path : "";
	size_t plen = strlen(prefix);
	int r;

	if (f && f->kind != 'd') {
		const char *base = strrchr(name, '/');
		_cleanup_free_ char *to = into_dir ? kiln_strdupf("%s/%s", strcmp(dest, "/") ? dest : "",
								  base ? base + 1 : name)
						   : strdup(dest);

		if (!to)
			return plan_nomem(c);
		r = add_entry(c, op, f, to, co);
		if (r == 0 && !into_dir && f->kind == OP_ENTRY_FILE) {
			/* only the worker sees whether dest is a directory */
			struct op_entry *e = &op->entries[op->n_entries - 1];

			e->path_if_dir = kiln_strdupf("%s/%s", strcmp(dest, "/") ? dest : "",
						      base ? base + 1 : name);
			if (!e->path_if_dir)
				return plan_nomem(c);
		}
		if (r == 0 && co->unpack && f->kind == OP_ENTRY_FILE) {
			/* BuildKit extracts a named archive into dest (as a directory) */
			struct op_entry *e = &op->entries[op->n_entries - 1];

			e->unpack_dir = strdup(dest);
			if (!e->unpack_dir)
				return plan_nomem(c);
		}
		return r;
	}
	if (f && strcmp(dest, "/") != 0) {
		/* BuildKit makes dest (mkdir -p, 0755, --chown's owners) before it
		 * copies the contents, and leaves an existing one as it is */
		r = add_entry(c, op, f, dest, co);
		if (r < 0)
			return r;
		op->entries[op->n_entries - 1].is_root = true;
		op->entries[op->n_entries - 1].mode = 0755;
	}
	for (size_t i = 0; i < c->in->n_files; i++) {
		const struct plan_file *e = &c->in->files[i];
		_cleanup_free_ char *to = NULL;
		bool skip;

		if (plen && (strncmp(e->path, prefix, plen) != 0 || e->path[plen] != '/'))
			continue;
		r = excluded(c, line, co, e->path + (plen ? plen + 1 : 0), &skip);
		if (r < 0)
			return r;
		if (skip)
			continue;
		to = kiln_strdupf("%s/%s", strcmp(dest, "/") ? dest : "", e->path + (plen ? plen + 1 : 0));
		if (!to)
			return plan_nomem(c);
		r = add_entry(c, op, e, to, co);
		if (r < 0)
			return r;
	}
	return 0;
}

/* BuildKit follows a source that is a symlink (FollowSymlinks), inside the
 * context: "/" is the context's root and ".." stops there. Returns the
 * entry it leads to, or NULL (dangling, a loop, or the root itself). */
static const struct plan_file *
follow_link(struct ctx *c, const struct plan_file *f)
{
	for (int hops = 0; f && f->kind == 'l'; hops++) {
		_cleanup_free_ char *joined = NULL;
		_cleanup_free_ char *clean = NULL;
		const char *slash = strrchr(f->path, '/');

		if (hops == 40 || !f->link)
			return NULL;
		joined = f->link[0] == '/' ? strdup(f->link) :
			 kiln_strdupf("/%.*s/%s", slash ? (int) (slash - f->path) : 0, f->path, f->link);
		clean = joined ? kiln_path_clean(joined) : NULL;
		if (!clean || !clean[1])
			return NULL;
		f = find_file(c, clean + 1);
	}
	return f;
}

/* One matched or named source: follow it if it is a symlink. */
static int
copy_named(struct ctx *c, int line, const char *label, struct op *op, const struct plan_file *f,
	   const char *dest, bool into_dir, const struct copy_opts *co)
{
	const struct plan_file *t = follow_link(c, f);

	if (!t)
		return plan_line_err(c, line, ENOENT,
				     "%s failed: \"/%s\" is a symlink whose target is not in the build context",
				     label, f->path);
	return copy_source(c, line, op, t, f->path, dest, into_dir, co);
}

static bool
has_glob(const char *s)
{
	return strpbrk(s, "*?[") != NULL;
}

/* A number that fits a uid, as BuildKit's strconv.ParseUint(s, 10, 32). */
static bool
parse_id(const char *s, uint32_t *ret)
{
	unsigned long v;
	char *end;

	if (!isdigit((unsigned char) s[0]))
		return false;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (*end || errno || v > UINT32_MAX)
		return false;
	*ret = (uint32_t) v;
	return true;
}

/* --chown=user[:group]: numbers are taken here; names go to the worker,
 * which reads the destination's /etc/passwd and /etc/group. When either
 * part is a name, both travel as strings (a number stays a number there). */
static int
parse_chown(struct ctx *c, int line, const char *v, struct copy_opts *co)
{
	const char *colon = strchr(v, ':');
	_cleanup_free_ char *user = colon ? strndup(v, (size_t) (colon - v)) : strdup(v);
	const char *group = colon ? colon + 1 : NULL;
	bool uid_num, gid_num = true;

	if (!user)
		return plan_nomem(c);
	if (!*user || (group && (!*group || strchr(group, ':'))))
		return plan_line_err(c, line, EINVAL, "--chown=%s: expected user[:group]", v);
	uid_num = parse_id(user, &co->uid);
	co->gid = co->uid;
	if (group)
		gid_num = parse_id(group, &co->gid);
	co->chown = true;
	if (uid_num && gid_num)
		return 0;
	co->chown_user = STEAL_PTR(user);
	co->chown_group = group ? strdup(group) : NULL;
	if (group && !co->chown_group)
		return plan_nomem(c);
	return 0;
}

static int
parse_chmod(struct ctx *c, int line, const char *v, struct copy_opts *co)
{
	unsigned long m;
	char *end;

	m = strtoul(v, &end, 8);
	if (*v && isdigit((unsigned char) v[0]) && !*end && m <= 07777) {
		co->chmod = true;
		co->mode = (uint32_t) m;
		return 0;
	}
	if (*v && !isdigit((unsigned char) v[0]) && op_mode_check(v) == 0) {
		co->chmod_spec = strdup(v);
		return co->chmod_spec ? 0 : plan_nomem(c);
	}
	return plan_line_err(c, line, EINVAL, "invalid chmod parameter: '%s'. it should be octal "
			     "string and between 0 and 07777, or a symbolic mode such as u+x,go-w", v);
}

int
plan_copy_source(struct ctx *c, int line, const char *from, struct stage **ret_stage,
		 const struct plan_context **ret_ctx)
{
	const char *d = from;

	*ret_stage = NULL;
	*ret_ctx = NULL;
	if (strchr(from, '$') || strchr(from, c->escape) || strpbrk(from, "'\"")) {
		_cleanup_free_ char *w = NULL;

		if (plan_expand(c, line, from, NULL, &w) < 0 || strcmp(w, from) != 0)
			return plan_line_err(c, line, EINVAL,
					     "variable expansion is not supported for --from, define a new "
					     "stage with FROM using ARG from global scope as a workaround");
	}
	if (*d == '+' || *d == '-')
		d++;
	if (*d && strspn(d, "0123456789") == strlen(d)) {
		long idx = strtol(from, NULL, 10);

		if (idx < 0 || (size_t) idx >= c->n_stages || strlen(d) > 9)
			return plan_line_err(c, line, EINVAL, "invalid stage index %s", from);
		*ret_stage = &c->stages[idx];
		return 0;
	}
	*ret_stage = plan_find_stage(c, from);
	if (!*ret_stage)
		*ret_ctx = plan_find_context(c, from);
	return 0;
}

int
plan_source_op(struct ctx *c, struct stage *s, int line, const char *from)
{
	const struct plan_context *pc;
	struct stage *src;
	int r;

	r = plan_copy_source(c, line, from, &src, &pc);
	if (r < 0)
		return r;
	if (src) {
		if (src->state != STAGE_DISPATCHED)
			return plan_line_err(c, line, EINVAL,
					     "cannot copy from stage \"%s\", it needs to be defined before "
					     "current stage \"%s\"", from, s->display);
		return src->op;
	}
	if (pc)
		return plan_context_op(c, pc, NULL, NULL, NULL);
	{
		const char *names[PLAN_MAX_STAGES];
		const char *best;
		size_t n = 0;

		for (size_t i = 0; i < c->n_stages; i++)
			if (c->stages[i].name)
				names[n++] = c->stages[i].name;
		best = plan_suggest(from, names, n);
		if (best)
			return plan_line_err(c, line, ENOENT,
					     "COPY --from=%s: stage or image '%s' not found (did you mean "
					     "'%s'?)", from, from, best);
	}
	if (c->in->ret_missing_image && !strchr(from, '$')) {
		*c->in->ret_missing_image = strdup(from);
		return plan_line_err(c, line, KILN_ENOIMAGE, "image '%s' must be resolved", from);
	}
	return plan_line_err(c, line, ENOENT,
			     "COPY --from=%s: stage or image '%s' not found: it is neither a stage of this "
			     "Dockerfile nor a named context (pulling images from registries is not "
			     "supported yet; pass --build-context %s=oci-layout://DIR)", from, from, from);
}

int
plan_context_mount(struct ctx *c, int line, const char *source, char **ret_source)
{
	static const struct copy_opts none = { 0 };
	const struct plan_file *t = NULL;
	struct op op = { .kind = OP_COPY };
	const char *key;
	size_t klen, n;
	int r, idx;

	if (source[1]) {
		const struct plan_file *f = find_file(c, source + 1);

		/* BuildKit's words: the mount's checksum finds nothing */
		if (!f)
			return plan_line_err(c, line, ENOENT,
					     "RUN --mount: failed to compute cache key: \"%s\": not found "
					     "in the build context", source);
		t = follow_link(c, f);
		if (!t)
			return plan_line_err(c, line, ENOENT,
					     "RUN --mount: \"%s\" is a symlink whose target is not in the build "
					     "context", source);
	}
	key = t ? t->path : "";
	*ret_source = kiln_strdupf("/%s", key);
	if (!*ret_source)
		return plan_nomem(c);
	for (size_t i = 0; i < c->ctx_mounts.n; i++)
		if (strcmp(c->ctx_mounts.v[i], key) == 0)
			return c->ctx_mount_ops[i];

	/* only what is below the path travels, as BuildKit's ctxPaths */
	r = plan_scratch_op(c, NULL);
	if (r < 0)
		goto fail;
	op.input = r;
	r = 0;
	klen = strlen(key);
	if (t)
		r = add_entry(c, &op, t, *ret_source, &none);
	for (size_t i = 0; r == 0 && (!t || t->kind == OP_ENTRY_DIR) && i < c->in->n_files; i++) {
		const struct plan_file *e = &c->in->files[i];
		_cleanup_free_ char *to = NULL;

		if (klen && (strncmp(e->path, key, klen) != 0 || e->path[klen] != '/'))
			continue;
		to = kiln_strdupf("/%s", e->path);
		r = to ? add_entry(c, &op, e, to, &none) : plan_nomem(c);
	}
	if (r == 0) {
		/* not BuildKit's "load build context": that is the transfer */
		op.name = kiln_strdupf("[internal] mount build context %s", *ret_source);
		if (!op.name)
			r = plan_nomem(c);
	}
	if (r < 0) {
		op_release(&op);
		goto fail;
	}
	idx = plan_push_op(c, NULL, &op);
	if (idx < 0) {
		r = idx;
		goto fail;
	}
	n = c->ctx_mounts.n;
	if (plan_int_append(&c->ctx_mount_ops, &n, idx) < 0 || strv_add(&c->ctx_mounts, key) < 0) {
		r = plan_nomem(c);
		goto fail;
	}
	return idx;
fail:
	free(*ret_source);
	*ret_source = NULL;
	return r;
}

static bool
is_url(const char *s)
{
	return kiln_startswith(s, "http://") || kiln_startswith(s, "https://") ||
	       kiln_startswith(s, "git@") || kiln_startswith(s, "git://") || strstr(s, ".git#") ||
	       (kiln_startswith(s, "ssh://"));
}

static bool
is_http(const char *s)
{
	return kiln_startswith(s, "http://") || kiln_startswith(s, "https://");
}

/* BuildKit's file name for a download: path.Base of the URL's path, or
 * "__unnamed__" when that is empty, "." or "/". */
static char *
url_file_name(const char *url)
{
	const char *p = strstr(url, "://") + 3;
	size_t len;

	p += strcspn(p, "/?#");
	len = *p == '/' ? strcspn(p, "?#") : 0;
	while (len > 0 && p[len - 1] == '/')
		len--;
	if (len == 0)
		return strdup("__unnamed__");
	for (size_t i = len; i-- > 0; )
		if (p[i] == '/') {
			p += i + 1;
			len -= i + 1;
			break;
		}
	return strndup(p, len);
}

/* ADD https://...: the worker downloads it (mode 0600 as BuildKit's http
 * source, unless --chmod). */
static int
url_source(struct ctx *c, const char *src, const char *dest, bool into_dir, const struct copy_opts *co,
	   const struct digest *checksum, struct op *op)
{
	_cleanup_free_ char *name = url_file_name(src);
	struct op_entry *e;

	if (!name)
		return plan_nomem(c);
	e = new_entry(c, op);
	if (!e)
		return -c->err->code;
	e->kind = OP_ENTRY_URL;
	e->path = into_dir ? kiln_strdupf("%s/%s", strcmp(dest, "/") ? dest : "", name) : strdup(dest);
	if (!into_dir) {
		e->path_if_dir = kiln_strdupf("%s/%s", strcmp(dest, "/") ? dest : "", name);
		if (!e->path_if_dir)
			return plan_nomem(c);
	}
	e->url = strdup(src);
	e->mode = entry_mode(co, 0600, OP_ENTRY_FILE);
	e->uid = co->chown ? co->uid : 0;
	e->gid = co->chown ? co->gid : 0;
	if (checksum) {
		e->has_checksum = true;
		e->checksum = *checksum;
	}
	if (!e->path || !e->url)
		return plan_nomem(c);
	return 0;
}

static bool
has_entry(const struct op *op, const char *path)
{
	for (size_t i = 0; i < op->n_entries; i++)
		if (strcmp(op->entries[i].path, path) == 0)
			return true;
	return false;
}

/* --parents: f (relative to the context root) goes to dest/<f below
 * pivot>; the directories between keep their context metadata. *ret_to
 * gets where f goes. */
static int
parents_target(struct ctx *c, int line, struct op *op, const char *pivot, const struct plan_file *f,
	       const char *dest, const struct copy_opts *co, char **ret_to)
{
	size_t plen = strlen(pivot);
	const char *rel = f->path;
	const char *d = strcmp(dest, "/") ? dest : "";
	int r;

	if (plen) {
		if (strncmp(rel, pivot, plen) != 0 || (rel[plen] != '/' && rel[plen] != '\0'))
			return plan_line_err(c, line, EINVAL, "--parents: '%s' is not below '%s'", rel, pivot);
		rel += plen + (rel[plen] == '/');
	}
	for (const char *sl = strchr(rel, '/'); sl; sl = strchr(sl + 1, '/')) {
		_cleanup_free_ char *ctxp = kiln_strdupf("%.*s", (int) (sl - f->path), f->path);
		_cleanup_free_ char *to = kiln_strdupf("%s/%.*s", d, (int) (sl - rel), rel);
		const struct plan_file *pd;

		if (!ctxp || !to)
			return plan_nomem(c);
		pd = find_file(c, ctxp);
		if (!pd || pd->kind != OP_ENTRY_DIR || has_entry(op, to))
			continue;
		r = add_entry(c, op, pd, to, co);
		if (r < 0)
			return r;
	}
	*ret_to = *rel ? kiln_strdupf("%s/%s", d, rel) : strdup(dest);
	return *ret_to ? 0 : plan_nomem(c);
}

/* One source that matched (or was named): where it goes, then copy it. */
static int
copy_matched(struct ctx *c, int line, const char *label, struct op *op, const char *pivot,
	     const struct plan_file *f, const char *dest, bool into_dir, const struct copy_opts *co)
{
	_cleanup_free_ char *to = NULL;
	int r;

	if (!co->parents)
		return copy_named(c, line, label, op, f, dest, into_dir, co);
	r = parents_target(c, line, op, pivot, f, dest, co, &to);
	if (r < 0)
		return r;
	if (has_entry(op, to) && f->kind == OP_ENTRY_DIR)
		return 0;
	return copy_named(c, line, label, op, f, to, false, co);
}

/* Sources from the build context (or URLs, for ADD) into op. */
static int
context_sources(struct ctx *c, int line, const struct strv *srcs, const char *label, const char *dest,
		bool into_dir, const struct copy_opts *co, bool add, const struct digest *checksum,
		struct op *op)
{
	int r;

	for (size_t i = 0; i < srcs->n; i++) {
		_cleanup_free_ char *clean = NULL;
		_cleanup_free_ char *pivot = NULL;
		const char *src = srcs->v[i], *rel, *pv;

		if (add && is_http(src)) {
			r = url_source(c, src, dest, into_dir, co, checksum, op);
			if (r < 0)
				return r;
			continue;
		}
		if (is_url(src))
			return plan_line_err(c, line, ENOTSUP, "%s %s: %s", label, src,
					     add ? "git sources are not supported yet" :
						   "source can't be a URL for COPY");
		if (checksum)
			return plan_line_err(c, line, EINVAL,
					     "ADD --checksum: '%s' is not an http(s) URL; a checksum can only "
					     "be checked for downloads", src);
		clean = abs_path("/", src);
		/* --parents: "a/./b/c" keeps "b/c" (the pivot is "a") */
		pv = co->parents ? strstr(src, "/./") : NULL;
		if (pv) {
			_cleanup_free_ char *head = strndup(src, (size_t) (pv - src));

			pivot = head ? abs_path("/", head) : NULL;
		} else {
			pivot = strdup("/");
		}
		if (!clean || !pivot)
			return plan_nomem(c);
		rel = clean + 1;
		if (has_glob(rel)) {
			size_t matched = 0;

			for (size_t k = 0; k < c->in->n_files; k++)
				matched += fnmatch(rel, c->in->files[k].path, FNM_PATHNAME) == 0;
			/* BuildKit allows a wildcard to match nothing */
			for (size_t k = 0; k < c->in->n_files; k++) {
				bool skip;

				if (fnmatch(rel, c->in->files[k].path, FNM_PATHNAME) != 0)
					continue;
				/* a match is excluded as a path of the context */
				r = excluded(c, line, co, c->in->files[k].path, &skip);
				if (r < 0)
					return r;
				if (skip)
					continue;
				r = copy_matched(c, line, label, op, pivot + 1, &c->in->files[k], dest,
						 into_dir || matched > 1, co);
				if (r < 0)
					return r;
			}
			continue;
		}
		if (!*rel) {
			r = copy_source(c, line, op, NULL, "", dest, true, co);
		} else {
			const struct plan_file *f = find_file(c, rel);

			if (!f)
				return plan_line_err(c, line, ENOENT,
						     "%s failed: \"/%s\": not found in the build context", label,
						     rel);
			r = copy_matched(c, line, label, op, pivot + 1, f, dest, into_dir, co);
		}
		if (r < 0)
			return r;
	}
	return 0;
}

/* The op's progress name: the instruction as written, expanded, keyword in
 * capitals (BuildKit's processCmdEnv + uppercaseCmd). */
static char *
command_name(struct ctx *c, struct stage *s, const struct df_node *n)
{
	struct shell_env se = { (const char *const *) s->env.v, s->env.n };
	struct kiln_err ignore = { 0 };
	struct shell_result res;
	_cleanup_free_ char *text = NULL;
	char *name;

	if (shell_process(n->original, c->escape, 0, &se, &res, &ignore) == 0) {
		text = STEAL_PTR(res.word);
		shell_result_release(&res);
	} else {
		text = strdup(n->original);
	}
	if (!text)
		return NULL;
	for (char *p = text; *p && *p != ' '; p++)
		*p = (char) toupper((unsigned char) *p);
	name = plan_step_name(c, s, text);
	return name;
}

int
plan_copy(struct ctx *c, struct stage *s, const struct plan_cmd *cmd, bool add)
{
	const struct df_node *n = cmd->n;
	const char *label = add ? "ADD" : "COPY";
	struct instr_flag_value fv[ARRAY_SIZE(copy_defs)];
	size_t n_defs = ARRAY_SIZE(copy_defs);
	struct copy_opts co = { .unpack = add };
	struct digest checksum, *has_checksum = NULL;
	struct strv excludes = { 0 };
	struct strv srcs = { 0 }, hist = { 0 };
	_cleanup_free_ char *chown = NULL;
	_cleanup_free_ char *chmod = NULL;
	_cleanup_free_ char *dest_raw = NULL;
	_cleanup_free_ char *dest = NULL;
	_cleanup_free_ char *shown = NULL;
	struct op op = { 0 };
	int line = cmd->line, from_op = -1, r, idx;
	bool into_dir;

	/* instr_check accepted only the instruction's own flags */
	r = instr_flags_parse((const char *const *) n->flags, n->n_flags, copy_defs, n_defs, fv, c->err);
	if (r < 0) {
		instr_flag_values_release(fv, n_defs);
		return plan_line_err(c, line, c->err->code, "%s", c->err->msg);
	}
	co.parents = fv[F_PARENTS].used && strcmp(fv[F_PARENTS].value, "true") == 0;
	if (fv[F_UNPACK].used)
		co.unpack = strcmp(fv[F_UNPACK].value, "true") == 0;
	for (size_t i = 0; r == 0 && i < fv[F_EXCLUDE].n_values; i++) {
		_cleanup_free_ char *w = NULL;

		r = plan_expand(c, line, fv[F_EXCLUDE].values[i], &s->env, &w);
		if (r == 0 && strv_add(&excludes, w) < 0)
			r = plan_nomem(c);
	}
	if (r == 0 && fv[F_KEEP_GIT_DIR].used)
		r = plan_line_err(c, line, ENOTSUP, "ADD --keep-git-dir is not supported yet (git sources "
				  "are not)");
	else if (r == 0 && fv[F_CHECKSUM].used && *fv[F_CHECKSUM].value) {
		_cleanup_free_ char *w = NULL;

		r = plan_expand(c, line, fv[F_CHECKSUM].value, &s->env, &w);
		if (r == 0 && (!kiln_startswith(w, "sha256:") || digest_parse(w, &checksum) < 0))
			r = plan_line_err(c, line, EINVAL, "ADD --checksum=%s: expected sha256:<64 hex digits>",
					  w);
		has_checksum = &checksum;
	}
	if (r == 0 && n->n_heredocs)
		r = plan_line_err(c, line, ENOTSUP, "heredocs in %s are not supported yet", label);
	if (r == 0 && !add && fv[F_FROM].used && *fv[F_FROM].value) {
		from_op = plan_source_op(c, s, line, fv[F_FROM].value);
		if (from_op < 0)
			r = from_op;
	}
	if (r == 0 && fv[F_CHOWN].used && *fv[F_CHOWN].value) {
		r = plan_expand(c, line, fv[F_CHOWN].value, &s->env, &chown);
		if (r == 0 && *chown)
			r = parse_chown(c, line, chown, &co);
	}
	if (r == 0 && fv[F_CHMOD].used && *fv[F_CHMOD].value) {
		r = plan_expand(c, line, fv[F_CHMOD].value, &s->env, &chmod);
		if (r == 0 && *chmod)
			r = parse_chmod(c, line, chmod, &co);
	}
	instr_flag_values_release(fv, n_defs);
	if (r == 0 && add && co.chown && !co.chown_user) {
		/* the worker must know that an extracted archive's owners are
		 * overridden: numbers travel as names it resolves as numbers */
		co.chown_user = kiln_strdupf("%u", co.uid);
		co.chown_group = kiln_strdupf("%u", co.gid);
		if (!co.chown_user || !co.chown_group)
			r = plan_nomem(c);
	}
	if (r == 0 && excludes.n) {
		r = ignore_new((const char *const *) excludes.v, excludes.n, &co.exclude, c->err);
		if (r < 0)
			r = plan_line_err(c, line, EINVAL, "--exclude: %s", c->err->msg);
	}
	if (r == 0 && co.parents && from_op >= 0)
		r = plan_line_err(c, line, ENOTSUP, "COPY --from with --parents is not supported yet");
	if (r < 0)
		goto out;

	/* sources and destination, expanded with the environment before */
	for (size_t i = 0; i + 1 < n->n_args; i++) {
		_cleanup_free_ char *w = NULL;

		r = plan_expand(c, line, n->args[i], &s->env, &w);
		if (r == 0 && strv_add(&srcs, w) < 0)
			r = plan_nomem(c);
		if (r < 0)
			goto out;
	}
	r = plan_expand(c, line, n->args[n->n_args - 1], &s->env, &dest_raw);
	if (r < 0)
		goto out;
	dest = abs_path(s->cwd, dest_raw);
	if (!dest) {
		r = plan_nomem(c);
		goto out;
	}
	into_dir = dest_is_dir(dest_raw) || srcs.n > 1 || strcmp(dest, "/") == 0;

	if (from_op >= 0) {
		op.kind = OP_COPY_FROM;
		op.from = from_op;
		op.dest = strdup(dest);
		op.into_dir = into_dir;
		op.chown = co.chown;
		op.uid = co.uid;
		op.gid = co.gid;
		op.chmod = co.chmod;
		op.mode = co.mode;
		op.chmod_spec = STEAL_PTR(co.chmod_spec);
		op.excludes = STEAL_PTR(excludes.v);
		op.n_excludes = excludes.n;
		excludes.n = 0;
		if (!op.dest) {
			r = plan_nomem(c);
			goto out;
		}
		for (size_t i = 0; i < srcs.n; i++) {
			_cleanup_free_ char *p = abs_path("/", srcs.v[i]);

			if (!p || op_add_arg(&op.srcs, &op.n_srcs, p) < 0) {
				r = plan_nomem(c);
				goto out;
			}
		}
	} else {
		op.kind = OP_COPY;
		op.chown = co.chown;
		op.uid = co.uid;
		op.gid = co.gid;
		r = context_sources(c, line, &srcs, label, dest, into_dir || co.parents, &co, add,
				    has_checksum, &op);
		if (r < 0)
			goto out;
	}
	op.chown_user = STEAL_PTR(co.chown_user);
	op.chown_group = STEAL_PTR(co.chown_group);

	/* history: "COPY [--parents] SRC... DEST"; BuildKit of Docker 20.10
	 * writes no --chown, --chmod or --from (dispatchCopy's commitMessage
	 * holds only sources and destination). --parents came later and keeps
	 * the wording of the BuildKit that has it. */
	if (co.parents && strv_add(&hist, "--parents") < 0) {
		r = plan_nomem(c);
		goto out;
	}
	for (size_t i = 0; i < srcs.n; i++)
		if (strv_add(&hist, srcs.v[i]) < 0) {
			r = plan_nomem(c);
			goto out;
		}
	if (strv_add(&hist, dest_raw) < 0) {
		r = plan_nomem(c);
		goto out;
	}
	shown = strv_join(&hist, " ");
	op.name = command_name(c, s, n);
	if (!shown || !op.name) {
		r = plan_nomem(c);
		goto out;
	}
	idx = plan_push_op(c, s, &op);
	if (idx < 0) {
		r = idx;
		goto out;
	}
	r = plan_push_hist(c, s, idx, "%s %s # buildkit", label, shown);
out:
	op_release(&op);
	free(co.chown_user);
	free(co.chown_group);
	free(co.chmod_spec);
	ignore_free(co.exclude);
	strv_free(&excludes);
	strv_free(&srcs);
	strv_free(&hist);
	return r < 0 ? r : 0;
}
