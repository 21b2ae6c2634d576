/* COPY and ADD: from the build context (resolved here against the client's
 * listing into OP_COPY entries, so only the files read travel) or from
 * another stage or image (COPY --from: OP_COPY_FROM, resolved on the worker,
 * which has that filesystem).
 *
 * BuildKit's rules followed: sources and destination are expanded with the
 * stage's environment; a relative destination is taken from the working
 * directory and a trailing "/" (or ".") means "into this directory"; sources
 * of --from are absolute in the source's filesystem; a wildcard that matches
 * nothing copies nothing; history reads "COPY [--parents] [--chown=..]
 * [--chmod=..] SRC... DEST # buildkit" with expanded words and without
 * --from or --link.
 *
 * Not done here yet (clear errors instead): URLs and git sources, archive
 * extraction by ADD, heredocs, --parents, --exclude, user and group names in
 * --chown, symbolic --chmod. */
#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "dockerfile.h"
#include "err.h"
#include "instructions.h"
#include "plan-internal.h"
#include "shell.h"
#include "util.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

struct copy_opts {
	bool chown;
	uint32_t uid, gid;
	bool chmod;
	uint32_t mode;
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

static int
add_entry(struct ctx *c, struct op *op, const struct plan_file *f, const char *dest,
	  const struct copy_opts *co)
{
	struct op_entry *n = realloc(op->entries, (op->n_entries + 1) * sizeof(*n));
	struct op_entry *e;

	if (!n)
		return plan_nomem(c);
	op->entries = n;
	e = &n[op->n_entries];
	memset(e, 0, sizeof(*e));
	e->path = strdup(dest);
	e->kind = f->kind;
	e->mode = co->chmod ? co->mode : f->mode;
	e->uid = co->chown ? co->uid : 0;
	e->gid = co->chown ? co->gid : 0;
	e->mtime = f->mtime;
	e->digest = f->digest;
	e->link = f->link ? strdup(f->link) : NULL;
	op->n_entries++;
	if (!e->path || (f->link && !e->link))
		return plan_nomem(c);
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
copy_source(struct ctx *c, struct op *op, const struct plan_file *f, const char *name,
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
		return add_entry(c, op, f, to, co);
	}
	if (f && strcmp(dest, "/") != 0) {
		r = add_entry(c, op, f, dest, co);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < c->in->n_files; i++) {
		const struct plan_file *e = &c->in->files[i];
		_cleanup_free_ char *to = NULL;

		if (plen && (strncmp(e->path, prefix, plen) != 0 || e->path[plen] != '/'))
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
	return copy_source(c, op, t, f->path, dest, into_dir, co);
}

static bool
has_glob(const char *s)
{
	return strpbrk(s, "*?[") != NULL;
}

static int
parse_chown(struct ctx *c, int line, const char *v, struct copy_opts *co)
{
	unsigned long uid, gid;
	char *end;

	uid = strtoul(v, &end, 10);
	if (end == v || !isdigit((unsigned char) v[0]) || (*end && *end != ':') || uid > UINT32_MAX)
		return plan_line_err(c, line, ENOTSUP,
				     "--chown=%s: only a numeric uid[:gid] is supported yet, not user or "
				     "group names", v);
	gid = uid;
	if (*end == ':') {
		const char *g = end + 1;

		gid = strtoul(g, &end, 10);
		if (end == g || !isdigit((unsigned char) g[0]) || *end || gid > UINT32_MAX)
			return plan_line_err(c, line, ENOTSUP,
					     "--chown=%s: only a numeric uid[:gid] is supported yet, not user "
					     "or group names", v);
	}
	co->chown = true;
	co->uid = (uint32_t) uid;
	co->gid = (uint32_t) gid;
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
	if (*v && isdigit((unsigned char) v[0]))
		return plan_line_err(c, line, EINVAL, "invalid chmod parameter: '%s'. it should be octal "
				     "string and between 0 and 07777", v);
	return plan_line_err(c, line, ENOTSUP, "--chmod=%s: only octal modes are supported yet", v);
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

/* The op COPY --from=from reads. */
static int
source_op(struct ctx *c, struct stage *s, int line, const char *from)
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

static bool
is_url(const char *s)
{
	return kiln_startswith(s, "http://") || kiln_startswith(s, "https://") ||
	       kiln_startswith(s, "git@") || kiln_startswith(s, "git://") || strstr(s, ".git#") ||
	       (kiln_startswith(s, "ssh://"));
}

static bool
looks_like_archive(const char *s)
{
	static const char *const ext[] = {
		".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz", ".tar.zst",
		".tzst", ".tar.lz4",
	};
	size_t len = strlen(s);

	for (size_t i = 0; i < ARRAY_SIZE(ext); i++) {
		size_t el = strlen(ext[i]);

		if (len > el && strcmp(s + len - el, ext[i]) == 0)
			return true;
	}
	return false;
}

/* Sources from the build context into op. */
static int
context_sources(struct ctx *c, int line, const struct strv *srcs, const char *label, const char *dest,
		bool into_dir, const struct copy_opts *co, bool add, struct op *op)
{
	int r;

	for (size_t i = 0; i < srcs->n; i++) {
		_cleanup_free_ char *clean = NULL;
		const char *src = srcs->v[i], *rel;

		if (is_url(src))
			return plan_line_err(c, line, ENOTSUP, "%s %s: %s", label, src,
					     add ? "URL and git sources are not supported yet" :
						   "source can't be a URL for COPY");
		if (add && looks_like_archive(src))
			return plan_line_err(c, line, ENOTSUP,
					     "ADD %s: extracting archives is not supported yet; use COPY to "
					     "copy the file as it is", src);
		clean = abs_path("/", src);
		if (!clean)
			return plan_nomem(c);
		rel = clean + 1;
		if (has_glob(rel)) {
			size_t matched = 0;

			for (size_t k = 0; k < c->in->n_files; k++)
				matched += fnmatch(rel, c->in->files[k].path, FNM_PATHNAME) == 0;
			/* BuildKit allows a wildcard to match nothing */
			for (size_t k = 0; k < c->in->n_files; k++) {
				if (fnmatch(rel, c->in->files[k].path, FNM_PATHNAME) != 0)
					continue;
				r = copy_named(c, line, label, op, &c->in->files[k], dest,
					       into_dir || matched > 1, co);
				if (r < 0)
					return r;
			}
			continue;
		}
		if (!*rel) {
			r = copy_source(c, op, NULL, "", dest, true, co);
		} else {
			const struct plan_file *f = find_file(c, rel);

			if (!f)
				return plan_line_err(c, line, ENOENT,
						     "%s failed: \"/%s\": not found in the build context", label,
						     rel);
			r = copy_named(c, line, label, op, f, dest, into_dir, co);
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
	struct copy_opts co = { 0 };
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
	if (fv[F_PARENTS].used && strcmp(fv[F_PARENTS].value, "true") == 0)
		r = plan_line_err(c, line, ENOTSUP, "%s --parents is not supported yet", label);
	else if (fv[F_EXCLUDE].n_values)
		r = plan_line_err(c, line, ENOTSUP, "%s --exclude is not supported yet", label);
	else if (fv[F_KEEP_GIT_DIR].used || fv[F_CHECKSUM].used || fv[F_UNPACK].used)
		r = plan_line_err(c, line, ENOTSUP, "ADD --%s is not supported yet",
				  fv[F_KEEP_GIT_DIR].used ? "keep-git-dir" :
				  fv[F_CHECKSUM].used ? "checksum" : "unpack");
	else if (n->n_heredocs)
		r = plan_line_err(c, line, ENOTSUP, "heredocs in %s are not supported yet", label);
	if (r == 0 && !add && fv[F_FROM].used && *fv[F_FROM].value) {
		from_op = source_op(c, s, line, fv[F_FROM].value);
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
	if (r < 0)
		return r;

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
		r = context_sources(c, line, &srcs, label, dest, into_dir, &co, add, &op);
		if (r < 0)
			goto out;
	}

	/* history: "COPY [--chown=..] [--chmod=..] SRC... DEST" */
	if (chown && *chown) {
		_cleanup_free_ char *f = kiln_strdupf("--chown=%s", chown);

		if (!f || strv_add(&hist, f) < 0) {
			r = plan_nomem(c);
			goto out;
		}
	}
	if (chmod && *chmod) {
		_cleanup_free_ char *f = kiln_strdupf("--chmod=%s", chmod);

		if (!f || strv_add(&hist, f) < 0) {
			r = plan_nomem(c);
			goto out;
		}
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
	strv_free(&srcs);
	strv_free(&hist);
	return r < 0 ? r : 0;
}
