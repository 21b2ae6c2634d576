/* The frontend for this slice: Dockerfile AST -> ops + image config.
 *
 * Invariants: plan_build never touches the network or the disk; every error
 * that a line of the Dockerfile caused is reported as "FILE:LINE: ...".
 * Variable expansion follows BuildKit: ENV wins over ARG, expansion applies
 * to FROM, ARG, ENV, LABEL, WORKDIR, USER, COPY/ADD, EXPOSE, VOLUME,
 * STOPSIGNAL, never to the commands of RUN, CMD or ENTRYPOINT. */
#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cleanup.h"
#include "dockerfile.h"
#include "err.h"
#include "oci.h"
#include "plan.h"
#include "shell.h"
#include "util.h"

#define MAX_STAGES 128

struct stage {
	const struct df_node *from;
	size_t first, end;            /* instructions after FROM: [first, end) */
	char *name;                   /* lower-cased, NULL when unnamed */
	int index;
	bool planning;                /* cycle guard */
};

struct strv {
	char **v;
	size_t n;
};

struct ctx {
	const struct plan_input *in;
	struct df_ast *ast;
	struct stage stages[MAX_STAGES];
	size_t n_stages;
	struct strv global_args;      /* "K=V" declared before the first FROM */
	struct plan *p;
	struct kiln_err *err;
};

static const char *const known_instructions[] = {
	"from", "run", "cmd", "label", "maintainer", "expose", "env", "add", "copy",
	"entrypoint", "volume", "user", "workdir", "arg", "onbuild", "stopsignal",
	"healthcheck", "shell",
};

static void
strv_free(struct strv *s)
{
	op_strv_free(s->v, s->n);
	s->v = NULL;
	s->n = 0;
}

static int
strv_add(struct strv *s, const char *str)
{
	return op_add_arg(&s->v, &s->n, str);
}

/* Set KEY=VALUE, replacing an earlier KEY. */
static int
strv_setkv(struct strv *s, const char *key, const char *val)
{
	size_t klen = strlen(key);
	char *kv = kiln_strdupf("%s=%s", key, val);

	if (!kv)
		return -ENOMEM;
	for (size_t i = 0; i < s->n; i++)
		if (strncmp(s->v[i], key, klen) == 0 && s->v[i][klen] == '=') {
			free(s->v[i]);
			s->v[i] = kv;
			return 0;
		}
	if (strv_add(s, kv) < 0) {
		free(kv);
		return -ENOMEM;
	}
	free(kv);
	return 0;
}

static const char *
strv_get(const struct strv *s, const char *key)
{
	size_t klen = strlen(key);

	for (size_t i = s->n; i-- > 0; )
		if (strncmp(s->v[i], key, klen) == 0 && s->v[i][klen] == '=')
			return s->v[i] + klen + 1;
	return NULL;
}

static int
line_err(struct ctx *c, const struct df_node *n, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int
line_err(struct ctx *c, const struct df_node *n, int code, const char *fmt, ...)
{
	char msg[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (!n)
		return kiln_err_set(c->err, code, "%s: %s", c->in->filename, msg);
	return kiln_err_set(c->err, code, "%s:%d: %s", c->in->filename, n->start_line, msg);
}

static int
levenshtein(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	int prev[64], cur[64];

	if (la >= 63 || lb >= 63)
		return 99;
	for (size_t j = 0; j <= lb; j++)
		prev[j] = (int) j;
	for (size_t i = 1; i <= la; i++) {
		cur[0] = (int) i;
		for (size_t j = 1; j <= lb; j++) {
			int cost = tolower((unsigned char) a[i - 1]) != tolower((unsigned char) b[j - 1]);
			int v = prev[j] + 1;

			if (cur[j - 1] + 1 < v)
				v = cur[j - 1] + 1;
			if (prev[j - 1] + cost < v)
				v = prev[j - 1] + cost;
			cur[j] = v;
		}
		memcpy(prev, cur, sizeof(int) * (lb + 1));
	}
	return prev[lb];
}

static int
unknown_instruction(struct ctx *c, const struct df_node *n)
{
	const char *best = NULL;
	int best_d = 3;
	char upper[64];
	size_t i;

	for (i = 0; i < sizeof(known_instructions) / sizeof(*known_instructions); i++) {
		int d = levenshtein(n->keyword, known_instructions[i]);

		if (d < best_d) {
			best_d = d;
			best = known_instructions[i];
		}
	}
	for (i = 0; best && best[i] && i < sizeof(upper) - 1; i++)
		upper[i] = (char) toupper((unsigned char) best[i]);
	upper[best ? i : 0] = '\0';
	{
		char kw[64];

		for (i = 0; n->keyword[i] && i < sizeof(kw) - 1; i++)
			kw[i] = (char) toupper((unsigned char) n->keyword[i]);
		kw[i] = '\0';
		if (best)
			return line_err(c, n, KILN_EPARSE, "unknown instruction: %s (did you mean %s?)", kw,
					upper);
		return line_err(c, n, KILN_EPARSE, "unknown instruction: %s", kw);
	}
}

/* Platform args BuildKit defines automatically. */
static int
platform_args(struct ctx *c, struct strv *out)
{
	struct platform host;
	char ps[PLATFORM_STR_SIZE], hs[PLATFORM_STR_SIZE];
	const struct platform *t = &c->in->platform;
	int r = 0;

	platform_host(&host);
	r |= strv_setkv(out, "BUILDPLATFORM", platform_fmt(&host, hs));
	r |= strv_setkv(out, "BUILDOS", host.os);
	r |= strv_setkv(out, "BUILDARCH", host.arch);
	r |= strv_setkv(out, "BUILDVARIANT", host.variant);
	r |= strv_setkv(out, "TARGETPLATFORM", platform_fmt(t, ps));
	r |= strv_setkv(out, "TARGETOS", t->os);
	r |= strv_setkv(out, "TARGETARCH", t->arch);
	r |= strv_setkv(out, "TARGETVARIANT", t->variant);
	return r ? -ENOMEM : 0;
}

static const char *
build_arg(struct ctx *c, const char *key)
{
	size_t klen = strlen(key);

	for (size_t i = c->in->n_build_args; i-- > 0; ) {
		const char *a = c->in->build_args[i];

		if (strncmp(a, key, klen) == 0 && a[klen] == '=')
			return a + klen + 1;
	}
	return NULL;
}

static int
expand(struct ctx *c, const struct df_node *n, const char *word, const struct strv *env, char **ret)
{
	struct shell_env se = { (const char *const *) env->v, env->n };
	int r = shell_process_word(word, c->ast->escape ? c->ast->escape : '\\', &se, ret, c->err);

	if (r < 0)
		return line_err(c, n, c->err->code, "%s", c->err->msg);
	return 0;
}

/* ARG NAME[=default]: the value is the --build-arg, else the default
 * (expanded), else the global ARG of that name. */
static int
declare_arg(struct ctx *c, const struct df_node *n, const char *word, struct strv *args,
	    const struct strv *expand_env, const struct strv *fallback)
{
	_cleanup_free_ char *w = NULL;
	_cleanup_free_ char *def = NULL;
	const char *eq, *v;
	char *key;
	int r;

	r = expand(c, n, word, expand_env, &w);
	if (r < 0)
		return r;
	eq = strchr(w, '=');
	key = eq ? strndup(w, (size_t) (eq - w)) : strdup(w);
	if (!key)
		return kiln_err_set(c->err, ENOMEM, "out of memory");
	v = build_arg(c, key);
	if (!v && eq)
		v = eq + 1;
	if (!v && fallback)
		v = strv_get(fallback, key);
	r = v ? strv_setkv(args, key, v) : 0;
	free(key);
	return r < 0 ? kiln_err_set(c->err, ENOMEM, "out of memory") : 0;
}

static int
push_op(struct ctx *c, struct op *op)
{
	struct op *n = realloc(c->p->ops, (c->p->n_ops + 1) * sizeof(*n));

	/* Stages are planned as one chain for now: each op builds on the
	 * one planned before it. */
	op->input = op->kind == OP_IMAGE ? -1 : (int) c->p->n_ops - 1;
	if (!n) {
		op_release(op);
		return kiln_err_set(c->err, ENOMEM, "out of memory");
	}
	n[c->p->n_ops++] = *op;
	c->p->ops = n;
	return 0;
}

static int
push_hist(struct ctx *c, int op, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int
push_hist(struct ctx *c, int op, const char *fmt, ...)
{
	struct plan_history *n = realloc(c->p->hist, (c->p->n_hist + 1) * sizeof(*n));
	va_list ap;
	char *s;

	if (!n)
		return kiln_err_set(c->err, ENOMEM, "out of memory");
	c->p->hist = n;
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	if (!s)
		return kiln_err_set(c->err, ENOMEM, "out of memory");
	n[c->p->n_hist].created_by = s;
	n[c->p->n_hist].op = op;
	c->p->n_hist++;
	return 0;
}

static int
need_digest(struct ctx *c, const struct digest *d)
{
	struct digest *n;

	for (size_t i = 0; i < c->p->n_needed; i++)
		if (digest_equal(&c->p->needed[i], d))
			return 0;
	n = realloc(c->p->needed, (c->p->n_needed + 1) * sizeof(*n));
	if (!n)
		return kiln_err_set(c->err, ENOMEM, "out of memory");
	n[c->p->n_needed++] = *d;
	c->p->needed = n;
	return 0;
}

static json_t *
cfg(struct ctx *c)
{
	json_t *o = json_object_get(c->p->config, "config");

	if (!json_is_object(o)) {
		o = json_object();
		json_object_set_new(c->p->config, "config", o);
	}
	return o;
}

static json_t *
strv_json(char **v, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

/* The current Env of the config as a strv (copied). */
static int
config_env(struct ctx *c, struct strv *out)
{
	json_t *env = json_object_get(cfg(c), "Env");
	size_t i;
	json_t *v;

	json_array_foreach(env, i, v)
		if (json_is_string(v) && strv_add(out, json_string_value(v)) < 0)
			return -ENOMEM;
	return 0;
}

/* Arguments of RUN/CMD/ENTRYPOINT: exec form as written, shell form through
 * the SHELL (default /bin/sh -c). */
static int
command_args(struct ctx *c, const struct df_node *n, struct strv *out)
{
	if (n->json) {
		for (size_t i = 0; i < n->n_args; i++)
			if (strv_add(out, n->args[i]) < 0)
				return -ENOMEM;
		return 0;
	}
	{
		json_t *sh = json_object_get(cfg(c), "Shell");
		size_t i;
		json_t *v;

		if (json_array_size(sh) > 0) {
			json_array_foreach(sh, i, v)
				if (strv_add(out, json_string_value(v) ?: "") < 0)
					return -ENOMEM;
		} else if (strv_add(out, "/bin/sh") < 0 || strv_add(out, "-c") < 0) {
			return -ENOMEM;
		}
	}
	return strv_add(out, n->n_args ? n->args[0] : "");
}

static char *
join(char **v, size_t n)
{
	size_t len = 1;
	char *s;

	for (size_t i = 0; i < n; i++)
		len += strlen(v[i]) + 1;
	s = calloc(1, len);
	for (size_t i = 0; s && i < n; i++) {
		if (i)
			strcat(s, " ");
		strcat(s, v[i]);
	}
	return s;
}

/* "/a/b" from a base directory and a path that may be relative. */
static char *
abs_path(const char *base, const char *p)
{
	char *joined = p[0] == '/' ? strdup(p) : kiln_strdupf("%s/%s", base && *base ? base : "/", p);
	char *out, *w;
	const char *r;

	if (!joined)
		return NULL;
	out = calloc(1, strlen(joined) + 2);
	if (!out) {
		free(joined);
		return NULL;
	}
	/* Clean: collapse "//", drop ".", resolve ".." without going above /. */
	w = out;
	for (r = joined; *r; ) {
		size_t len;

		while (*r == '/')
			r++;
		len = strcspn(r, "/");
		if (len == 0)
			break;
		if (len == 1 && r[0] == '.') {
		} else if (len == 2 && r[0] == '.' && r[1] == '.') {
			while (w > out && *--w != '/')
				;
			*w = '\0';
		} else {
			*w++ = '/';
			memcpy(w, r, len);
			w += len;
			*w = '\0';
		}
		r += len;
	}
	if (w == out)
		strcpy(out, "/");
	free(joined);
	return out;
}

static const char *
workdir(struct ctx *c)
{
	const char *w = json_string_value(json_object_get(cfg(c), "WorkingDir"));

	return w && *w ? w : "/";
}

/* ---- COPY ---- */

struct copy_opts {
	bool chown;
	uint32_t uid, gid;
	bool chmod;
	uint32_t mode;
};

static int
add_entry(struct ctx *c, struct op *op, const struct plan_file *f, const char *dest,
	  const struct copy_opts *co)
{
	struct op_entry *n = realloc(op->entries, (op->n_entries + 1) * sizeof(*n));
	struct op_entry *e;

	if (!n)
		return kiln_err_set(c->err, ENOMEM, "out of memory");
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
		return kiln_err_set(c->err, ENOMEM, "out of memory");
	if (f->kind == 'f')
		return need_digest(c, &f->digest);
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
 * into it when into_dir. */
static int
copy_source(struct ctx *c, struct op *op, const struct plan_file *f, const char *dest, bool into_dir,
	    const struct copy_opts *co)
{
	const char *prefix = f ? f->path : "";
	size_t plen = strlen(prefix);
	int r;

	if (f && f->kind != 'd') {
		const char *base = strrchr(f->path, '/');
		_cleanup_free_ char *to = into_dir ? kiln_strdupf("%s/%s", strcmp(dest, "/") ? dest : "",
								  base ? base + 1 : f->path)
						   : strdup(dest);

		if (!to)
			return kiln_err_set(c->err, ENOMEM, "out of memory");
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
			return kiln_err_set(c->err, ENOMEM, "out of memory");
		r = add_entry(c, op, e, to, co);
		if (r < 0)
			return r;
	}
	return 0;
}

static bool
has_glob(const char *s)
{
	return strpbrk(s, "*?[") != NULL;
}

static int
parse_chown(struct ctx *c, const struct df_node *n, const char *v, struct copy_opts *co)
{
	char *end;
	unsigned long uid, gid;

	uid = strtoul(v, &end, 10);
	if (end == v || (*end && *end != ':'))
		return line_err(c, n, ENOTSUP, "--chown=%s: only numeric uid[:gid] is supported yet", v);
	gid = uid;
	if (*end == ':') {
		const char *g = end + 1;

		gid = strtoul(g, &end, 10);
		if (end == g || *end)
			return line_err(c, n, ENOTSUP, "--chown=%s: only numeric uid[:gid] is supported yet", v);
	}
	co->chown = true;
	co->uid = (uint32_t) uid;
	co->gid = (uint32_t) gid;
	return 0;
}

static int
flag_value(const struct df_node *n, const char *name, const char **ret)
{
	size_t len = strlen(name);

	*ret = NULL;
	for (size_t i = 0; i < n->n_flags; i++) {
		const char *f = n->flags[i];

		if (strncmp(f, "--", 2) == 0 && strncmp(f + 2, name, len) == 0 &&
		    (f[2 + len] == '=' || f[2 + len] == '\0')) {
			*ret = f[2 + len] == '=' ? f + 3 + len : "";
			return 1;
		}
	}
	return 0;
}

static int
check_flags(struct ctx *c, const struct df_node *n, const char *const *allowed)
{
	for (size_t i = 0; i < n->n_flags; i++) {
		const char *f = n->flags[i] + 2;
		size_t len = strcspn(f, "=");
		bool ok = false;

		for (const char *const *a = allowed; *a; a++)
			ok = ok || (strlen(*a) == len && strncmp(*a, f, len) == 0);
		if (!ok)
			return line_err(c, n, ENOTSUP, "flag '--%.*s' of %s is not supported yet", (int) len, f,
					n->keyword);
	}
	return 0;
}

static int
plan_copy(struct ctx *c, const struct df_node *n, const struct strv *env, const char *label)
{
	static const char *const allowed[] = { "chown", "chmod", NULL };
	struct op op = { .kind = OP_COPY };
	struct copy_opts co = { 0 };
	_cleanup_free_ char *dest = NULL;
	_cleanup_free_ char *dest_raw = NULL;
	_cleanup_free_ char *shown = NULL;
	const char *v;
	size_t n_src, n_matched = 0;
	bool into_dir;
	int r;

	if (flag_value(n, "from", &v))
		return line_err(c, n, ENOTSUP, "COPY --from is not supported yet");
	r = check_flags(c, n, allowed);
	if (r < 0)
		return r;
	if (n->n_heredocs)
		return line_err(c, n, ENOTSUP, "heredocs in %s are not supported yet", label);
	if (n->n_args < 2)
		return line_err(c, n, KILN_EPARSE, "%s requires at least two arguments", label);
	if (flag_value(n, "chown", &v) && (r = parse_chown(c, n, v, &co)) < 0)
		return r;
	if (flag_value(n, "chmod", &v)) {
		char *end;
		unsigned long m = strtoul(v, &end, 8);

		if (!*v || *end || m > 07777)
			return line_err(c, n, EINVAL, "invalid --chmod=%s (octal only for now)", v);
		co.chmod = true;
		co.mode = (uint32_t) m;
	}
	n_src = n->n_args - 1;
	r = expand(c, n, n->args[n_src], env, &dest_raw);
	if (r < 0)
		return r;
	dest = abs_path(workdir(c), dest_raw);
	if (!dest)
		return kiln_err_set(c->err, ENOMEM, "out of memory");
	into_dir = n_src > 1 || dest_raw[strlen(dest_raw) - 1] == '/' || strcmp(dest, "/") == 0;
	for (size_t i = 0; i < n_src; i++) {
		_cleanup_free_ char *src = NULL;
		_cleanup_free_ char *clean = NULL;
		const char *rel;

		r = expand(c, n, n->args[i], env, &src);
		if (r < 0)
			goto fail;
		if (strstr(src, "://")) {
			r = line_err(c, n, ENOTSUP, "%s of a URL is not supported yet", label);
			goto fail;
		}
		clean = abs_path("/", src);
		if (!clean) {
			r = kiln_err_set(c->err, ENOMEM, "out of memory");
			goto fail;
		}
		rel = clean + 1;
		if (has_glob(rel)) {
			size_t before = n_matched;

			for (size_t k = 0; k < c->in->n_files; k++)
				if (fnmatch(rel, c->in->files[k].path, FNM_PATHNAME) == 0)
					n_matched++;
			if (n_matched - before > 1)
				into_dir = true;
			for (size_t k = 0; k < c->in->n_files; k++) {
				if (fnmatch(rel, c->in->files[k].path, FNM_PATHNAME) != 0)
					continue;
				r = copy_source(c, &op, &c->in->files[k], dest, into_dir, &co);
				if (r < 0)
					goto fail;
			}
			if (n_matched == before) {
				r = line_err(c, n, ENOENT, "%s %s: no source files were specified "
					     "(nothing in the build context matches)", label, src);
				goto fail;
			}
			continue;
		}
		if (!*rel) {
			r = copy_source(c, &op, NULL, dest, true, &co);
		} else {
			const struct plan_file *f = find_file(c, rel);

			if (!f) {
				r = line_err(c, n, ENOENT, "%s failed: \"/%s\": not found in the build context",
					     label, rel);
				goto fail;
			}
			r = copy_source(c, &op, f, dest, into_dir, &co);
		}
		if (r < 0)
			goto fail;
	}
	shown = join(n->args, n->n_args);
	op.name = shown ? kiln_strdupf("%s %s", label, shown) : NULL;
	r = push_op(c, &op);
	if (r < 0)
		return r;
	return push_hist(c, (int) c->p->n_ops - 1, "%s %s # buildkit", label, shown ? shown : "");
fail:
	op_release(&op);
	return r;
}

/* ---- stages ---- */

static int plan_stage(struct ctx *c, struct stage *s);

static struct stage *
find_stage(struct ctx *c, const char *name, size_t before)
{
	for (size_t i = 0; i < before && i < c->n_stages; i++)
		if (c->stages[i].name && strcasecmp(c->stages[i].name, name) == 0)
			return &c->stages[i];
	return NULL;
}

static const struct plan_context *
find_context(struct ctx *c, const char *name)
{
	for (size_t i = 0; i < c->in->n_contexts; i++)
		if (strcmp(c->in->contexts[i].name, name) == 0)
			return &c->in->contexts[i];
	return NULL;
}

static int
plan_base(struct ctx *c, struct stage *s, const char *base)
{
	const struct plan_context *pc;
	struct stage *parent;
	struct op op = { .kind = OP_IMAGE };
	int r;

	if (strcasecmp(base, "scratch") == 0) {
		c->p->config = oci_config_new(&c->in->platform);
		if (!c->p->config)
			return kiln_err_set(c->err, ENOMEM, "out of memory");
	} else if ((parent = find_stage(c, base, (size_t) s->index))) {
		return plan_stage(c, parent);
	} else if ((pc = find_context(c, base))) {
		c->p->config = json_deep_copy(pc->config);
		c->p->base = calloc(pc->n_layers + 1, sizeof(*c->p->base));
		op.layers = calloc(pc->n_layers + 1, sizeof(*op.layers));
		if (!c->p->config || !c->p->base || !op.layers) {
			free(op.layers);
			return kiln_err_set(c->err, ENOMEM, "out of memory");
		}
		memcpy(c->p->base, pc->layers, pc->n_layers * sizeof(*pc->layers));
		c->p->n_base = pc->n_layers;
		for (size_t i = 0; i < pc->n_layers; i++) {
			op.layers[i] = pc->layers[i].l;
			r = need_digest(c, &pc->layers[i].l.digest);
			if (r < 0) {
				free(op.layers);
				return r;
			}
		}
		op.n_layers = pc->n_layers;
		/* The history of the base stays; so does its platform. */
		if (!json_object_get(c->p->config, "history"))
			json_object_set_new(c->p->config, "history", json_array());
	} else {
		return line_err(c, s->from, ENOTSUP,
				"base image '%s' is not available: pulling from registries is not supported "
				"yet; pass --build-context %s=oci-layout://DIR", base, base);
	}
	op.name = NULL;
	return push_op(c, &op);
}

static int
set_kv_object(struct ctx *c, const char *field, const char *k, const char *v)
{
	json_t *o = json_object_get(cfg(c), field);

	if (!json_is_object(o)) {
		o = json_object();
		json_object_set_new(cfg(c), field, o);
	}
	return json_object_set_new(o, k, json_string(v)) < 0 ? -ENOMEM : 0;
}

/* ENV and LABEL: key/value triples as the parser gives them. */
static int
plan_kv(struct ctx *c, const struct df_node *n, struct strv *args, bool is_env)
{
	_cleanup_free_ char *shown = NULL;
	struct strv parts = { 0 };
	int r = 0;

	if (n->n_args % 3 != 0 || n->n_args == 0)
		return line_err(c, n, KILN_EPARSE, "%s needs KEY=VALUE pairs", is_env ? "ENV" : "LABEL");
	for (size_t i = 0; i + 2 < n->n_args && r == 0; i += 3) {
		struct strv env = { 0 };
		_cleanup_free_ char *k = NULL;
		_cleanup_free_ char *v = NULL;

		for (size_t a = 0; a < args->n && r == 0; a++)
			r = strv_add(&env, args->v[a]);
		if (r == 0)
			r = config_env(c, &env);
		if (r < 0) {
			strv_free(&env);
			break;
		}
		r = expand(c, n, n->args[i], &env, &k);
		if (r == 0)
			r = expand(c, n, n->args[i + 1], &env, &v);
		strv_free(&env);
		if (r < 0)
			break;
		if (is_env)
			r = oci_config_set_env(c->p->config, k, v);
		else
			r = set_kv_object(c, "Labels", k, v);
		if (r == 0) {
			_cleanup_free_ char *kv = kiln_strdupf("%s=%s", k, v);

			r = kv ? strv_add(&parts, kv) : -ENOMEM;
		}
	}
	if (r < 0) {
		strv_free(&parts);
		return c->err->code ? -c->err->code : kiln_err_set(c->err, -r, "%s", "out of memory");
	}
	shown = join(parts.v, parts.n);
	strv_free(&parts);
	return push_hist(c, -1, "%s %s", is_env ? "ENV" : "LABEL", shown ? shown : "");
}

static int
plan_run(struct ctx *c, const struct df_node *n, const struct strv *args, int step, int total,
	 const char *sname)
{
	static const char *const allowed[] = { "network", NULL };
	struct op op = { .kind = OP_RUN };
	struct strv cmd = { 0 }, env = { 0 };
	_cleanup_free_ char *shown = NULL;
	_cleanup_free_ char *argstr = NULL;
	const char *user, *net;
	int r;

	r = check_flags(c, n, allowed);
	if (r < 0)
		return r;
	if (n->n_heredocs)
		return line_err(c, n, ENOTSUP, "heredocs in RUN are not supported yet");
	if (flag_value(n, "network", &net) && strcmp(net, "none") != 0 && strcmp(net, "host") != 0 &&
	    strcmp(net, "default") != 0)
		return line_err(c, n, EINVAL, "invalid --network=%s (none, host or default)", net);
	if (command_args(c, n, &cmd) < 0)
		goto nomem;
	/* Build args reach the command's environment; ENV wins over them. */
	for (size_t i = 0; i < args->n; i++)
		if (strv_add(&env, args->v[i]) < 0)
			goto nomem;
	{
		struct strv cenv = { 0 };

		if (config_env(c, &cenv) < 0) {
			strv_free(&cenv);
			goto nomem;
		}
		for (size_t i = 0; i < cenv.n; i++) {
			char *eq = strchr(cenv.v[i], '=');

			if (eq) {
				*eq = '\0';
				if (strv_setkv(&env, cenv.v[i], eq + 1) < 0) {
					strv_free(&cenv);
					goto nomem;
				}
			}
		}
		strv_free(&cenv);
	}
	if (!strv_get(&env, "PATH") &&
	    strv_add(&env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin") < 0)
		goto nomem;
	user = json_string_value(json_object_get(cfg(c), "User"));
	op.args = STEAL_PTR(cmd.v);
	op.n_args = cmd.n;
	op.env = STEAL_PTR(env.v);
	op.n_env = env.n;
	op.cwd = strdup(workdir(c));
	op.user = strdup(user ? user : "");
	op.network = strdup(net && *net ? net : "default");
	shown = n->json ? join(op.args, op.n_args) : strdup(n->n_args ? n->args[0] : "");
	op.name = kiln_strdupf("[%s%s%d/%d] RUN %s", sname ? sname : "", sname ? " " : "", step, total,
			       shown ? shown : "");
	if (!op.cwd || !op.user || !op.network || !op.name) {
		op_release(&op);
		return kiln_err_set(c->err, ENOMEM, "out of memory");
	}
	/* BuildKit records the build args a RUN saw as "|N K=V ...". */
	if (args->n) {
		_cleanup_free_ char *a = join(args->v, args->n);

		argstr = kiln_strdupf("|%zu %s ", args->n, a ? a : "");
	}
	{
		_cleanup_free_ char *all = join(op.args, op.n_args);

		r = push_op(c, &op);
		if (r < 0)
			return r;
		return push_hist(c, (int) c->p->n_ops - 1, "RUN %s%s # buildkit", argstr ? argstr : "",
				 all ? all : "");
	}
nomem:
	strv_free(&cmd);
	strv_free(&env);
	return kiln_err_set(c->err, ENOMEM, "out of memory");
}

static int
set_command(struct ctx *c, const struct df_node *n, const char *field, bool *cmd_set)
{
	struct strv args = { 0 };
	json_t *j;
	char *dump;
	int r;

	if (command_args(c, n, &args) < 0) {
		strv_free(&args);
		return kiln_err_set(c->err, ENOMEM, "out of memory");
	}
	j = strv_json(args.v, args.n);
	strv_free(&args);
	dump = j ? json_dumps(j, JSON_COMPACT) : NULL;
	r = oci_config_set(c->p->config, field, j);
	if (strcmp(field, "Entrypoint") == 0 && !*cmd_set)
		json_object_del(cfg(c), "Cmd");     /* ENTRYPOINT resets an inherited CMD */
	if (strcmp(field, "Cmd") == 0)
		*cmd_set = true;
	if (r < 0 || !dump) {
		free(dump);
		return kiln_err_set(c->err, ENOMEM, "out of memory");
	}
	/* BuildKit writes CMD ["a","b"] with a space after commas. */
	r = push_hist(c, -1, "%s %s", strcmp(field, "Cmd") == 0 ? "CMD" : "ENTRYPOINT", dump);
	free(dump);
	return r;
}

static bool
produces_op(const char *kw)
{
	return strcmp(kw, "run") == 0 || strcmp(kw, "copy") == 0 || strcmp(kw, "add") == 0 ||
	       strcmp(kw, "workdir") == 0;
}

static int
plan_instruction(struct ctx *c, struct stage *s, const struct df_node *n, struct strv *args,
		 int *step, int total, bool *cmd_set)
{
	const char *kw = n->keyword;
	const char *sname = s->name;
	struct strv env = { 0 };
	int r = 0;

	/* The expansion environment: ARGs, then ENV (ENV wins). */
	for (size_t i = 0; i < args->n && r == 0; i++)
		r = strv_add(&env, args->v[i]);
	if (r == 0)
		r = config_env(c, &env);
	if (r < 0) {
		strv_free(&env);
		return kiln_err_set(c->err, ENOMEM, "out of memory");
	}
	if (produces_op(kw))
		(*step)++;
	if (strcmp(kw, "arg") == 0) {
		for (size_t i = 0; i < n->n_args && r == 0; i++)
			r = declare_arg(c, n, n->args[i], args, &env, &c->global_args);
	} else if (strcmp(kw, "env") == 0) {
		r = plan_kv(c, n, args, true);
	} else if (strcmp(kw, "label") == 0) {
		r = plan_kv(c, n, args, false);
	} else if (strcmp(kw, "run") == 0) {
		r = plan_run(c, n, args, *step, total, sname);
	} else if (strcmp(kw, "copy") == 0 || strcmp(kw, "add") == 0) {
		const char *label = strcmp(kw, "copy") == 0 ? "COPY" : "ADD";
		size_t before = c->p->n_ops;

		r = plan_copy(c, n, &env, label);
		if (r == 0 && c->p->n_ops > before) {
			struct op *op = &c->p->ops[c->p->n_ops - 1];
			char *name = kiln_strdupf("[%s%s%d/%d] %s", sname ? sname : "", sname ? " " : "",
						  *step, total, op->name ? op->name : label);

			free(op->name);
			op->name = name;
		}
	} else if (strcmp(kw, "workdir") == 0) {
		_cleanup_free_ char *w = NULL;
		_cleanup_free_ char *path = NULL;
		struct op op = { .kind = OP_MKDIR };

		if (n->n_args != 1) {
			r = line_err(c, n, KILN_EPARSE, "WORKDIR requires exactly one argument");
		} else if ((r = expand(c, n, n->args[0], &env, &w)) == 0) {
			path = abs_path(workdir(c), w);
			op.path = path ? strdup(path) : NULL;
			op.name = kiln_strdupf("[%s%s%d/%d] WORKDIR %s", sname ? sname : "", sname ? " " : "",
					       *step, total, path ? path : "");
			if (!path || !op.path || !op.name) {
				op_release(&op);
				r = kiln_err_set(c->err, ENOMEM, "out of memory");
			} else {
				json_object_set_new(cfg(c), "WorkingDir", json_string(path));
				r = push_op(c, &op);
				if (r == 0)
					r = push_hist(c, (int) c->p->n_ops - 1, "WORKDIR %s", path);
			}
		}
	} else if (strcmp(kw, "cmd") == 0) {
		r = set_command(c, n, "Cmd", cmd_set);
	} else if (strcmp(kw, "entrypoint") == 0) {
		r = set_command(c, n, "Entrypoint", cmd_set);
	} else if (strcmp(kw, "user") == 0) {
		_cleanup_free_ char *u = NULL;

		if (n->n_args != 1)
			r = line_err(c, n, KILN_EPARSE, "USER requires exactly one argument");
		else if ((r = expand(c, n, n->args[0], &env, &u)) == 0) {
			json_object_set_new(cfg(c), "User", json_string(u));
			r = push_hist(c, -1, "USER %s", u);
		}
	} else if (strcmp(kw, "expose") == 0) {
		json_t *ports = json_object_get(cfg(c), "ExposedPorts");

		if (!json_is_object(ports)) {
			ports = json_object();
			json_object_set_new(cfg(c), "ExposedPorts", ports);
		}
		for (size_t i = 0; i < n->n_args && r == 0; i++) {
			_cleanup_free_ char *p = NULL;

			r = expand(c, n, n->args[i], &env, &p);
			if (r == 0) {
				_cleanup_free_ char *key = strchr(p, '/') ? strdup(p) : kiln_strdupf("%s/tcp", p);

				json_object_set_new(ports, key, json_object());
			}
		}
		if (r == 0) {
			_cleanup_free_ char *shown = join(n->args, n->n_args);

			r = push_hist(c, -1, "EXPOSE map[%s]", shown ? shown : "");
		}
	} else if (strcmp(kw, "stopsignal") == 0 && n->n_args == 1) {
		_cleanup_free_ char *sig = NULL;

		r = expand(c, n, n->args[0], &env, &sig);
		if (r == 0) {
			json_object_set_new(cfg(c), "StopSignal", json_string(sig));
			r = push_hist(c, -1, "STOPSIGNAL %s", sig);
		}
	} else if (strcmp(kw, "shell") == 0) {
		if (!n->json || n->n_args == 0)
			r = line_err(c, n, KILN_EPARSE, "SHELL requires the arguments to be in JSON form");
		else {
			json_object_set_new(cfg(c), "Shell", strv_json(n->args, n->n_args));
			r = push_hist(c, -1, "SHELL [%s]", n->args[0]);
		}
	} else if (strcmp(kw, "maintainer") == 0) {
		json_object_set_new(c->p->config, "author", json_string(n->n_args ? n->args[0] : ""));
		r = push_hist(c, -1, "MAINTAINER %s", n->n_args ? n->args[0] : "");
	} else if (strcmp(kw, "volume") == 0 || strcmp(kw, "healthcheck") == 0 ||
		   strcmp(kw, "onbuild") == 0 || strcmp(kw, "stopsignal") == 0) {
		char up[16];
		size_t i;

		for (i = 0; kw[i] && i < sizeof(up) - 1; i++)
			up[i] = (char) toupper((unsigned char) kw[i]);
		up[i] = '\0';
		r = line_err(c, n, ENOTSUP, "%s is not supported yet", up);
	} else if (strcmp(kw, "from") == 0) {
		r = line_err(c, n, KILN_EPARSE, "FROM inside a stage");
	} else {
		r = unknown_instruction(c, n);
	}
	strv_free(&env);
	return r;
}

static int
plan_stage(struct ctx *c, struct stage *s)
{
	struct strv args = { 0 }, fenv = { 0 };
	_cleanup_free_ char *base = NULL;
	const char *from_word;
	bool cmd_set = false;
	int total = 1, step = 1, r;

	if (s->planning)
		return line_err(c, s->from, ELOOP, "stage '%s' depends on itself", s->name ? s->name : "");
	s->planning = true;
	if (s->from->n_args != 1 && s->from->n_args != 3)
		return line_err(c, s->from, KILN_EPARSE, "FROM requires either one or three arguments");
	if (s->from->n_args == 3 && strcasecmp(s->from->args[1], "as") != 0)
		return line_err(c, s->from, KILN_EPARSE, "FROM requires either one or three arguments");
	{
		const char *pv;

		if (flag_value(s->from, "platform", &pv))
			return line_err(c, s->from, ENOTSUP, "FROM --platform is not supported yet");
	}
	/* FROM sees the global ARGs (and the automatic platform args). */
	r = platform_args(c, &fenv);
	for (size_t i = 0; r == 0 && i < c->global_args.n; i++)
		r = strv_add(&fenv, c->global_args.v[i]);
	if (r < 0) {
		strv_free(&fenv);
		return kiln_err_set(c->err, ENOMEM, "out of memory");
	}
	from_word = s->from->args[0];
	r = expand(c, s->from, from_word, &fenv, &base);
	strv_free(&fenv);
	if (r < 0)
		return r;
	if (!*base)
		return line_err(c, s->from, KILN_EPARSE, "base name (%s) should not be blank", from_word);
	r = plan_base(c, s, base);
	if (r < 0)
		return r;
	if (c->p->n_ops && c->p->ops[c->p->n_ops - 1].kind == OP_IMAGE && !c->p->ops[c->p->n_ops - 1].name) {
		for (size_t i = s->first; i < s->end; i++)
			total += produces_op(c->ast->nodes[i].keyword);
		c->p->ops[c->p->n_ops - 1].name = kiln_strdupf("[%s%s1/%d] FROM %s", s->name ? s->name : "",
							       s->name ? " " : "", total, base);
	} else {
		for (size_t i = s->first; i < s->end; i++)
			total += produces_op(c->ast->nodes[i].keyword);
	}
	/* Automatic platform args are declared-on-use inside a stage. */
	r = platform_args(c, &fenv);
	for (size_t i = s->first; r == 0 && i < s->end; i++) {
		const struct df_node *n = &c->ast->nodes[i];

		if (strcmp(n->keyword, "arg") == 0) {
			/* An ARG naming an automatic platform arg gets its value. */
			for (size_t a = 0; a < n->n_args && r == 0; a++) {
				const char *v;
				size_t klen = strcspn(n->args[a], "=");
				_cleanup_free_ char *key = strndup(n->args[a], klen);

				v = key ? strv_get(&fenv, key) : NULL;
				if (v && !build_arg(c, key) && !strchr(n->args[a], '='))
					r = strv_setkv(&args, key, v);
				else
					r = declare_arg(c, n, n->args[a], &args, &args, &c->global_args);
			}
			continue;
		}
		r = plan_instruction(c, s, n, &args, &step, total, &cmd_set);
	}
	strv_free(&fenv);
	strv_free(&args);
	s->planning = false;
	return r;
}

static int
split_stages(struct ctx *c)
{
	struct strv fenv = { 0 };
	int r;

	r = platform_args(c, &fenv);
	if (r < 0)
		return kiln_err_set(c->err, ENOMEM, "out of memory");
	for (size_t i = 0; i < c->ast->n_nodes; i++) {
		const struct df_node *n = &c->ast->nodes[i];

		if (strcmp(n->keyword, "from") == 0) {
			struct stage *s;

			if (c->n_stages == MAX_STAGES) {
				strv_free(&fenv);
				return line_err(c, n, E2BIG, "more than %d stages", MAX_STAGES);
			}
			if (c->n_stages)
				c->stages[c->n_stages - 1].end = i;
			s = &c->stages[c->n_stages];
			s->from = n;
			s->first = i + 1;
			s->end = c->ast->n_nodes;
			s->index = (int) c->n_stages;
			c->n_stages++;          /* owns s->name from here on */
			if (n->n_args == 3) {
				s->name = strdup(n->args[2]);
				for (char *p = s->name; p && *p; p++)
					*p = (char) tolower((unsigned char) *p);
				if (s->name && find_stage(c, s->name, c->n_stages - 1)) {
					strv_free(&fenv);
					return line_err(c, n, EEXIST, "duplicate stage name '%s'", s->name);
				}
			}
		} else if (c->n_stages == 0) {
			if (strcmp(n->keyword, "arg") != 0) {
				strv_free(&fenv);
				for (size_t k = 0; k < sizeof(known_instructions) / sizeof(*known_instructions); k++)
					if (strcmp(n->keyword, known_instructions[k]) == 0)
						return line_err(c, n, KILN_EPARSE,
								"no build stage in current context");
				return unknown_instruction(c, n);
			}
			for (size_t a = 0; a < n->n_args; a++) {
				r = declare_arg(c, n, n->args[a], &c->global_args, &c->global_args, &fenv);
				if (r < 0) {
					strv_free(&fenv);
					return r;
				}
			}
		}
	}
	strv_free(&fenv);
	if (c->n_stages == 0)
		return line_err(c, NULL, KILN_EPARSE, "the Dockerfile has no FROM instruction");
	return 0;
}

int
plan_build(const struct plan_input *in, struct plan **ret, struct kiln_err *err)
{
	struct ctx c = { .in = in, .err = err };
	struct stage *target;
	int r;

	r = df_parse(in->dockerfile, in->dockerfile_len, in->filename, &c.ast, err);
	if (r < 0)
		return r;
	c.p = calloc(1, sizeof(*c.p));
	if (!c.p) {
		df_ast_free(c.ast);
		return kiln_err_set(err, ENOMEM, "out of memory");
	}
	r = split_stages(&c);
	if (r < 0)
		goto out;
	target = &c.stages[c.n_stages - 1];
	if (in->target) {
		target = find_stage(&c, in->target, c.n_stages);
		if (!target) {
			r = kiln_err_set(err, ENOENT, "target stage \"%s\" could not be found", in->target);
			goto out;
		}
	}
	r = plan_stage(&c, target);
	if (r == 0 && c.p->n_ops == 0)
		r = kiln_err_set(err, KILN_EPARSE, "nothing to build");
out:
	for (size_t i = 0; i < c.n_stages; i++)
		free(c.stages[i].name);
	strv_free(&c.global_args);
	df_ast_free(c.ast);
	if (r < 0) {
		plan_free(c.p);
		return r;
	}
	*ret = c.p;
	return 0;
}

void
plan_free(struct plan *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n_ops; i++)
		op_release(&p->ops[i]);
	free(p->ops);
	for (size_t i = 0; i < p->n_hist; i++)
		free(p->hist[i].created_by);
	free(p->hist);
	json_decref(p->config);
	free(p->base);
	free(p->needed);
	free(p);
}

int
plan_finish_config(const struct plan *p, const struct op_layer *const *layers, int64_t created,
		   char **ret_json, size_t *ret_len, struct kiln_err *err)
{
	json_t *cfgj = json_deep_copy(p->config);
	char ts[32];
	char *s;
	int r = 0;

	if (!cfgj)
		return kiln_err_set(err, ENOMEM, "out of memory");
	for (size_t i = 0; i < p->n_hist && r == 0; i++) {
		const struct plan_history *h = &p->hist[i];
		const struct op_layer *l = h->op >= 0 ? layers[h->op] : NULL;

		r = oci_config_add_history(cfgj, h->created_by, created, l == NULL, l ? &l->diff_id : NULL);
	}
	if (r == 0)
		r = json_object_set_new(cfgj, "created", json_string(oci_time_fmt(created, ts)));
	if (r < 0) {
		json_decref(cfgj);
		return kiln_err_set(err, ENOMEM, "out of memory");
	}
	s = oci_json_dump(cfgj, ret_len);
	json_decref(cfgj);
	if (!s)
		return kiln_err_set(err, ENOMEM, "out of memory");
	*ret_json = s;
	return 0;
}
