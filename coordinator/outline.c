/* `--call targets` and `--call outline`: what BuildKit's Dockerfile
 * frontend answers to the frontend.targets and frontend.outline
 * subrequests, computed from the parsed Dockerfile alone.
 *
 * targets is a listing of the FROM lines. outline follows BuildKit's
 * dispatch (dockerfile2llb's toDispatchState) far enough to know which
 * ARGs the target uses: global ARGs named in a FROM line (and the ARGs
 * their defaults read), ARGs declared in the target stage and in every
 * stage it builds on (FROM another stage, COPY --from, RUN --mount from=,
 * ONBUILD triggers of a base stage), with their values under the given
 * build args; and the secret and ssh mounts of their RUN instructions.
 *
 * What it does not do: image configs are not resolved, so an ARG default
 * that reads an ENV of a base image sees it unset; and only ARG, ENV and
 * RUN --mount are expanded, so a failing expansion in another instruction
 * (WORKDIR ${X:?}) is left for the build to report. */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "dockerfile.h"
#include "err.h"
#include "gostr.h"
#include "outline-internal.h"
#include "platform.h"
#include "shell.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* ---- the tables of a stage (BuildKit's outlineCapture) ---- */

/* Copies have room to grow: OL_GROW() doubles at powers of two, so the
 * arrays are allocated at the next power of two. */
static void *
dup_array(const void *p, size_t n, size_t size)
{
	size_t cap = 4;
	void *d;

	if (!n)
		return NULL;
	while (cap < n)
		cap *= 2;
	if (cap == n)
		cap *= 2;
	d = malloc(cap * size);
	if (d)
		memcpy(d, p, n * size);
	return d;
}

/* A stage's table as BuildKit copies it from its base (or the global
 * one) before anything is dispatched: the names used so far. No ARG is
 * defined in a stage yet, and the global definitions are not copied but
 * looked up in o->goc. */
static int
capture_clone(struct capture *dst, const struct capture *src)
{
	struct capture c = { 0 };

	c.used = dup_array(src->used, src->n_used, sizeof(*c.used));
	c.n_used = src->n_used;
	if ((src->n_used && !c.used) || ol_smap_clone(&c.used_ix, &src->used_ix) < 0) {
		ol_capture_release(&c);
		return -ENOMEM;
	}
	*dst = c;
	return 0;
}

static const struct argi *
capture_arg(const struct ol *o, const struct capture *c, const char *key)
{
	size_t i;

	if (ol_smap_get(&c->all_ix, key, &i))
		return &c->all[i];
	if (c != &o->goc && ol_smap_get(&o->goc.all_ix, key, &i))
		return &o->goc.all[i];
	return NULL;
}

static int
capture_set_arg(struct capture *c, const struct argi *a)
{
	size_t i;

	if (ol_smap_get(&c->all_ix, a->key, &i)) {
		c->all[i] = *a;
		return 0;
	}
	if (OL_GROW(c->all, c->n_all) < 0 ||
	    ol_smap_put(&c->all_ix, a->key, c->n_all) < 0)
		return -ENOMEM;
	c->all[c->n_all++] = *a;
	return 0;
}

static bool
capture_is_used(const struct capture *c, const char *key)
{
	size_t i;

	return ol_smap_get(&c->used_ix, key, &i);
}

static int
capture_use(struct capture *c, const char *key)
{
	if (capture_is_used(c, key))
		return 0;
	if (OL_GROW(c->used, c->n_used) < 0 ||
	    ol_smap_put(&c->used_ix, key, c->n_used) < 0)
		return -ENOMEM;
	c->used[c->n_used++] = key;
	return 0;
}

/* The first mount of an id wins. */
static int
mnt_add(struct mnt **v, size_t *n, struct smap *ix, const struct mnt *m)
{
	size_t i;

	if (ol_smap_get(ix, m->id, &i))
		return 0;
	if (OL_GROW(*v, *n) < 0 || ol_smap_put(ix, m->id, *n) < 0)
		return -ENOMEM;
	(*v)[(*n)++] = *m;
	return 0;
}

/* ---- targets ---- */

int
outline_targets_json(const struct outline_input *in, char **ret_json, struct kiln_err *err)
{
	struct ol o;
	struct gbuf b;
	bool first = true;
	int r;

	r = ol_init(&o, in, err);
	if (r < 0)
		goto out;
	gbuf_init(&b, OUTLINE_JSON_MAX);
	gbuf_putc(&b, '{');
	ol_json_key(&b, &first, 1, "targets");
	if (!o.n_st) {
		gbuf_puts(&b, "null");
	} else {
		gbuf_putc(&b, '[');
		for (size_t i = 0; i < o.n_st; i++) {
			const struct stage *s = &o.st[i];
			bool f2 = true;

			if (i)
				gbuf_putc(&b, ',');
			ol_json_nl(&b, 2);
			gbuf_putc(&b, '{');
			ol_json_str_member(&b, &f2, 3, "name", s->name);
			if (i == o.n_st - 1) {
				ol_json_key(&b, &f2, 3, "default");
				gbuf_puts(&b, "true");
			}
			ol_json_str_member(&b, &f2, 3, "description", s->comment);
			ol_json_str_member(&b, &f2, 3, "base", s->from->args[0]);
			ol_json_str_member(&b, &f2, 3, "platform", s->platform_raw);
			ol_json_key(&b, &f2, 3, "location");
			ol_json_loc(&b, 3, &s->loc);
			ol_json_nl(&b, 2);
			gbuf_putc(&b, '}');
		}
		ol_json_nl(&b, 1);
		gbuf_putc(&b, ']');
	}
	ol_json_sources(&b, &first, in->dockerfile, in->dockerfile_len);
	r = ol_json_finish(&o, &b, ret_json);
out:
	ol_release(&o);
	return r;
}

/* ---- outline: global args ---- */

static const char *
build_arg(const struct ol *o, const char *key)
{
	size_t kl = strlen(key);

	for (size_t i = o->in->n_build_args; i-- > 0; ) {
		const char *a = o->in->build_args[i];

		if (strncmp(a, key, kl) == 0 && a[kl] == '=')
			return a + kl + 1;
	}
	return NULL;
}

/* Set a global ARG; key is borrowed (pooled or static). */
static int
global_set(struct ol *o, const char *key, const char *value)
{
	if (ol_strv_setkv(o, &o->global, key, value) < 0 ||
	    ol_smap_put(&o->global_ix, key, o->global.n - 1) < 0)
		return ol_oom(o);
	return 0;
}

static const char *
global_get(const struct ol *o, const char *key)
{
	size_t i;

	return ol_smap_get(&o->global_ix, key, &i) ? o->global.v[i] + strlen(key) + 1 : NULL;
}

/* defaultArgs: the automatic platform args and TARGETSTAGE, each
 * overridden by a --build-arg of the same name. */
static int
default_args(struct ol *o, const char *target)
{
	struct platform host, t;
	char hs[PLATFORM_STR_SIZE], ts[PLATFORM_STR_SIZE];
	const char *kv[11][2];
	int r = 0;

	platform_host(&host);
	t = o->in->platform ? *o->in->platform : host;
	kv[0][0] = "BUILDPLATFORM", kv[0][1] = platform_fmt(&host, hs);
	kv[1][0] = "BUILDOS", kv[1][1] = host.os;
	kv[2][0] = "BUILDOSVERSION", kv[2][1] = "";
	kv[3][0] = "BUILDARCH", kv[3][1] = host.arch;
	kv[4][0] = "BUILDVARIANT", kv[4][1] = host.variant;
	kv[5][0] = "TARGETPLATFORM", kv[5][1] = platform_fmt(&t, ts);
	kv[6][0] = "TARGETOS", kv[6][1] = t.os;
	kv[7][0] = "TARGETOSVERSION", kv[7][1] = "";
	kv[8][0] = "TARGETARCH", kv[8][1] = t.arch;
	kv[9][0] = "TARGETVARIANT", kv[9][1] = t.variant;
	kv[10][0] = "TARGETSTAGE", kv[10][1] = target ? target : "";
	for (size_t i = 0; i < 11 && r == 0; i++) {
		const char *ov = build_arg(o, kv[i][0]);

		r = global_set(o, kv[i][0], ov ? ov : kv[i][1]);
	}
	return r;
}

/* Expand word in env, as ProcessWordWithMatches. *ret and the matched
 * names are pooled. */
static int
expand(struct ol *o, const char *word, const struct strv *env, const struct loc *l,
       const char **ret, const char ***ret_matched, size_t *ret_n_matched)
{
	struct shell_env se = { env->v, env->n };
	struct shell_result res = { 0 };
	int r;

	r = shell_process(word, o->escape, 0, &se, &res, o->err);
	if (r < 0)
		return ol_loc_wrap(o, l);
	*ret = ol_strdup(o, res.word ? res.word : "");
	if (!*ret)
		goto fail_oom;
	if (ret_matched) {
		const char **m = res.n_matched ? ol_keep(o, calloc(res.n_matched, sizeof(*m))) : NULL;

		if (res.n_matched && !m)
			goto fail_oom;
		for (size_t i = 0; i < res.n_matched; i++)
			if (!(m[i] = ol_strdup(o, res.matched[i])))
				goto fail_oom;
		*ret_matched = m;
		*ret_n_matched = res.n_matched;
	}
	shell_result_release(&res);
	return 0;
fail_oom:
	shell_result_release(&res);
	return ol_oom(o);
}

/* An ARG word: "KEY" or "KEY=default" (quotes kept; the default is
 * expanded later). */
static int
split_arg(struct ol *o, const char *word, const char **ret_key, const char **ret_def)
{
	const char *eq = strchr(word, '=');

	*ret_key = eq ? ol_strndup(o, word, (size_t) (eq - word)) : ol_strdup(o, word);
	*ret_def = eq ? eq + 1 : NULL;
	return *ret_key ? 0 : ol_oom(o);
}

/* buildMetaArgs: the ARGs before the first FROM, in order, each seeing the
 * ones before it. */
static int
meta_args(struct ol *o)
{
	int r;

	for (size_t i = 0; i < o->n_meta; i++) {
		const struct df_node *n = o->meta[i];
		struct loc l = ol_node_loc(n);
		size_t ni = (size_t) (n - o->in->ast->nodes);

		for (size_t k = 0; k < n->n_args; k++) {
			struct argi a = { 0 };
			const char *key, *def, *v, *value = NULL;

			r = split_arg(o, n->args[k], &key, &def);
			if (r < 0)
				return r;
			a.key = key;
			a.comment = ol_get_comment(o->comments[ni], o->n_comments[ni], key);
			a.loc = l;
			v = build_arg(o, key);
			if (v) {
				value = v;
			} else if (def) {
				const char **m = NULL;
				size_t nm = 0, w = 0;
				const struct argi *old = capture_arg(o, &o->goc, key);
				bool self = false;

				r = expand(o, def, &o->global, &l, &value, &m, &nm);
				if (r < 0)
					return r;
				for (size_t j = 0; j < nm; j++) {
					if (strcmp(m[j], key) == 0)
						self = true;
					else
						m[w++] = m[j];
				}
				if (self && old && old->n_deps) {
					const char **d = ol_keep(o, calloc(w + old->n_deps, sizeof(*d)));

					if (!d)
						return ol_oom(o);
					memcpy(d, m, w * sizeof(*d));
					for (size_t j = 0; j < old->n_deps; j++) {
						bool dup = false;

						for (size_t q = 0; q < w; q++)
							dup = dup || strcmp(d[q], old->deps[j]) == 0;
						if (!dup)
							d[w++] = old->deps[j];
					}
					m = d;
				}
				a.deps = m;
				a.n_deps = w;
			}
			if (value) {
				if (global_set(o, key, value) < 0)
					return -ENOMEM;
				a.value = value;
			} else {
				a.value = "";
			}
			if (capture_set_arg(&o->goc, &a) < 0)
				return ol_oom(o);
		}
	}
	return 0;
}

/* ---- outline: stages and their dependencies ---- */

/* buildDispatchStates: each stage's base and the global ARGs its FROM
 * line reads. */
static int
setup_stages(struct ol *o)
{
	int r;

	for (size_t i = 0; i < o->n_st; i++) {
		struct stage *s = &o->st[i];
		const char *base, **m = NULL, **pm = NULL;
		size_t nm = 0, npm = 0;

		r = expand(o, s->from->args[0], &o->global, &s->loc, &base, &m, &nm);
		if (r < 0)
			return r;
		if (!*base)
			return ol_loc_err(o, &s->loc, EINVAL, "base name (%s) should not be blank",
					  s->from->args[0]);
		if (s->platform_raw) {
			const char *p;

			/* the value itself is checked when the build runs */
			r = expand(o, s->platform_raw, &o->global, &s->loc, &p, &pm, &npm);
			if (r < 0)
				return r;
			if (!*p)
				return ol_loc_err(o, &s->loc, EINVAL, "empty platform value from expression %s",
						  s->platform_raw);
		}
		for (size_t j = 0; j < i; j++)
			if (o->st[j].name && strcmp(o->st[j].name, base) == 0)
				s->base = (int) j;
		r = capture_clone(&s->oc, s->base >= 0 ? &o->st[s->base].oc : &o->goc);
		for (size_t j = 0; r == 0 && j < nm; j++)
			r = capture_use(&s->oc, m[j]);
		for (size_t j = 0; r == 0 && j < npm; j++)
			r = capture_use(&s->oc, pm[j]);
		if (r < 0)
			return ol_oom(o);
	}
	return 0;
}

/* ONBUILD triggers of a base stage run first in the stages built on it,
 * located at their FROM line. */
static int
add_onbuild(struct ol *o)
{
	for (size_t i = 0; i < o->n_st; i++) {
		struct stage *s = &o->st[i], *b;
		struct cmd *own = s->cmds;
		size_t n_own = s->n_cmds;
		int r = 0;

		if (s->base < 0)
			continue;
		b = &o->st[s->base];
		s->cmds = NULL;
		s->n_cmds = 0;
		for (size_t k = 0; k < b->n_cmds && r == 0; k++) {
			const struct df_node *n = b->cmds[k].n;

			if (strcmp(n->keyword, "onbuild") == 0 && n->inner)
				r = ol_add_cmd(o, s, n->inner, s->loc, NULL, 0);
		}
		for (size_t k = 0; k < n_own && r == 0; k++)
			r = ol_add_cmd(o, s, own[k].n, own[k].loc, own[k].comments, own[k].n_comments);
		free(own);
		if (r < 0)
			return r;
	}
	return 0;
}

static int
add_dep(struct ol *o, struct stage *s, int dep, struct loc l)
{
	if (OL_GROW(s->deps, s->n_deps) < 0 ||
	    OL_GROW(s->dep_locs, s->n_deps) < 0)
		return ol_oom(o);
	s->deps[s->n_deps] = dep;
	s->dep_locs[s->n_deps++] = l;
	return 0;
}

/* The stage COPY --from=X names, -1 for an image, or an error. */
static int
copy_from_stage(struct ol *o, const struct cmd *c, const char *from, int *ret)
{
	struct strv none = { 0 };
	const char *x;
	char *end;
	long idx;
	int r;

	r = expand(o, from, &none, &c->loc, &x, NULL, NULL);
	if (r < 0)
		return r;
	if (strcmp(x, from) != 0)
		return ol_loc_err(o, &c->loc, EINVAL, "variable expansion is not supported for --from, "
				  "define a new stage with FROM using ARG from global scope as a workaround");
	errno = 0;
	idx = strtol(from, &end, 10);
	if ((isdigit((unsigned char) from[0]) || from[0] == '-' || from[0] == '+') && !*end &&
	    errno == 0) {
		if (idx < 0 || (size_t) idx >= o->n_st)
			return ol_loc_err(o, &c->loc, EINVAL, "invalid stage index %ld", idx);
		*ret = (int) idx;
		return 0;
	}
	*ret = ol_find_stage(o, from, o->n_st);
	return 0;
}

static int
find_deps(struct ol *o)
{
	int r;

	for (size_t i = 0; i < o->n_st; i++) {
		struct stage *s = &o->st[i];

		for (size_t k = 0; k < s->n_cmds; k++) {
			const struct cmd *c = &s->cmds[k];
			const char *from = NULL;
			int dep = -1;

			if (strcmp(c->n->keyword, "copy") == 0 && df_node_flag(c->n, "from", &from) &&
			    from && *from) {
				r = copy_from_stage(o, c, from, &dep);
				if (r < 0)
					return r;
				if (dep >= 0 && (r = add_dep(o, s, dep, c->loc)) < 0)
					return r;
			} else if (strcmp(c->n->keyword, "run") == 0) {
				const char *mv[MAX_MOUNTS];
				size_t nm = ol_mount_flags(c->n, mv, MAX_MOUNTS);

				for (size_t q = 0; q < nm; q++) {
					struct mount m;

					r = ol_parse_mount(o, mv[q], NULL, &m);
					if (r < 0)
						return ol_loc_wrap(o, &c->loc);
					if (!m.from || !*m.from)
						continue;
					dep = ol_find_stage(o, m.from, o->n_st);
					if (dep >= 0 && (r = add_dep(o, s, dep, c->loc)) < 0)
						return r;
				}
			}
		}
	}
	return 0;
}

/* validateCircularDependency: depth first over COPY --from / mount deps. */
static bool
cycle_visit(struct ol *o, int i, char *state, const struct loc **ret_first, const struct loc *first)
{
	struct stage *s = &o->st[i];

	if (state[i])
		return false;
	state[i] = 2;           /* on the path */
	for (size_t k = 0; k < s->n_deps; k++) {
		int d = s->deps[k];
		const struct loc *f = first ? first : &s->dep_locs[k];

		if (state[d] == 2) {
			*ret_first = f;
			return true;
		}
		if (cycle_visit(o, d, state, ret_first, f))
			return true;
	}
	state[i] = 1;           /* done */
	return false;
}

static int
check_cycles(struct ol *o)
{
	_cleanup_free_ char *state = calloc(o->n_st + 1, 1);

	if (!state)
		return ol_oom(o);
	for (size_t i = 0; i < o->n_st; i++) {
		const struct loc *first = NULL;

		if (cycle_visit(o, (int) i, state, &first, NULL))
			return ol_loc_err(o, first, EINVAL, "circular dependency detected on stage: %s",
					  o->st[i].stage_name);
	}
	return 0;
}

static void
mark_reachable(struct ol *o, int i)
{
	struct stage *s = &o->st[i];

	if (s->reachable)
		return;
	s->reachable = true;
	if (s->base >= 0)
		mark_reachable(o, s->base);
	for (size_t k = 0; k < s->n_deps; k++)
		mark_reachable(o, s->deps[k]);
}

/* ---- outline: dispatch ---- */

static int
env_set(struct ol *o, struct stage *s, const char *k, const char *v)
{
	struct envn *e = ol_keep(o, malloc(sizeof(*e)));

	if (!e || !(e->kv = ol_printf(o, "%s=%s", k, v)))
		return ol_oom(o);
	e->up = s->env;
	s->env = e;
	return 0;
}

/* The stage's environment, oldest first, for shell_process(): empty
 * unless some word to expand has a '$' (else nothing is looked up).
 * Release with free(ret->v). */
static int
env_flat(struct ol *o, const struct stage *s, bool needed, struct strv *ret)
{
	size_t n = 0;

	memset(ret, 0, sizeof(*ret));
	if (!needed)
		return 0;
	for (const struct envn *e = s->env; e; e = e->up)
		n++;
	ret->v = malloc((n + 1) * sizeof(*ret->v));
	if (!ret->v)
		return ol_oom(o);
	ret->n = n;
	for (const struct envn *e = s->env; e; e = e->up)
		ret->v[--n] = e->kv;
	return 0;
}

static bool
non_env_arg(const char *key)
{
	return strcmp(key, "BUILDKIT_SBOM_SCAN_CONTEXT") == 0 ||
	       strcmp(key, "BUILDKIT_SBOM_SCAN_STAGE") == 0;
}

static int
dispatch_arg(struct ol *o, struct stage *s, const struct cmd *c)
{
	int r;

	for (size_t k = 0; k < c->n->n_args; k++) {
		struct argi a = { 0 };
		const char *key, *def, *value = NULL, *bv;
		bool skip = false;

		r = split_arg(o, c->n->args[k], &key, &def);
		if (r < 0)
			return r;
		bv = build_arg(o, key);
		if (!def && !bv) {
			const char *g = global_get(o, key);

			if (g) {
				value = g;
				skip = true;
			}
		}
		if (bv) {
			value = bv;
		} else if (def) {
			struct strv env;

			r = env_flat(o, s, strchr(def, '$') != NULL, &env);
			if (r == 0)
				r = expand(o, def, &env, &c->loc, &value, NULL, NULL);
			free(env.v);
			if (r < 0)
				return r;
		}
		a.key = key;
		a.comment = ol_get_comment(c->comments, c->n_comments, key);
		a.value = value ? value : "";
		a.loc = c->loc;
		if (value && !non_env_arg(key) && env_set(o, s, key, value) < 0)
			return -ENOMEM;
		if (!skip && capture_set_arg(&s->oc, &a) < 0)
			return ol_oom(o);
		if (capture_use(&s->oc, key) < 0)
			return ol_oom(o);
	}
	return 0;
}

/* ENV: every key and value is expanded before any is set. */
static int
dispatch_env(struct ol *o, struct stage *s, const struct cmd *c)
{
	size_t n = c->n->n_args / 3;
	_cleanup_free_ const char **kv = calloc(2 * n + 1, sizeof(*kv));
	struct strv env;
	bool dollar = false;
	int r = 0;

	if (!kv)
		return ol_oom(o);
	for (size_t k = 0; k < 2 * n; k++)
		dollar = dollar || strchr(c->n->args[3 * (k / 2) + k % 2], '$');
	r = env_flat(o, s, dollar, &env);
	for (size_t k = 0; k < 2 * n && r == 0; k++)
		r = expand(o, c->n->args[3 * (k / 2) + k % 2], &env, &c->loc, &kv[k], NULL, NULL);
	free(env.v);
	for (size_t k = 0; k < n && r == 0; k++)
		r = env_set(o, s, kv[2 * k], kv[2 * k + 1]);
	return r;
}

static const char *
path_base(struct ol *o, const char *p)
{
	size_t n = strlen(p);
	const char *slash;

	while (n > 1 && p[n - 1] == '/')
		n--;
	if (n == 1 && p[0] == '/')
		return "/";
	slash = memrchr(p, '/', n);
	return slash ? ol_strndup(o, slash + 1, n - (size_t) (slash + 1 - p)) : ol_strndup(o, p, n);
}

static int
dispatch_run(struct ol *o, struct stage *s, const struct cmd *c)
{
	const char *mv[MAX_MOUNTS];
	size_t nm = ol_mount_flags(c->n, mv, MAX_MOUNTS);
	_cleanup_free_ const char **envv = NULL;
	struct strv env;
	bool dollar = false;
	int r;

	for (size_t k = 0; k < nm; k++)
		dollar = dollar || strchr(mv[k], '$');
	r = env_flat(o, s, dollar, &env);
	if (r < 0)
		return r;
	envv = env.v;
	for (size_t k = 0; k < nm; k++) {
		struct mount m;
		struct mnt rec = { 0 };

		r = ol_parse_mount(o, mv[k], &env, &m);
		if (r < 0)
			return ol_loc_wrap(o, &c->loc);
		if (m.from && *m.from && m.type != MT_SECRET) {
			int d = ol_find_stage(o, m.from, o->n_st);

			if (d >= 0 && !o->st[d].dispatched)
				return ol_loc_err(o, &c->loc, EINVAL, "cannot mount from stage \"%s\" to \"%s\", "
						  "stage needs to be defined before current command", m.from,
						  m.target ? m.target : "");
		}
		rec.required = m.required;
		rec.loc = c->loc;
		if (m.type == MT_SECRET) {
			rec.id = m.id ? m.id : "";
			if (m.source && *m.source)
				rec.id = m.source;
			if (!*rec.id) {
				if (!m.target || !*m.target)
					return ol_loc_err(o, &c->loc, EINVAL, "one of source, target required");
				rec.id = path_base(o, m.target);
				if (!rec.id)
					return ol_oom(o);
			}
			if (mnt_add(&s->oc.secrets, &s->oc.n_secrets, &s->oc.secrets_ix, &rec) < 0)
				return ol_oom(o);
		} else if (m.type == MT_SSH) {
			if (m.source && *m.source)
				return ol_loc_err(o, &c->loc, EINVAL, "ssh does not support source");
			rec.id = m.id && *m.id ? m.id : "default";
			if (mnt_add(&s->oc.ssh, &s->oc.n_ssh, &s->oc.ssh_ix, &rec) < 0)
				return ol_oom(o);
		}
	}
	return 0;
}

static int
dispatch_stage(struct ol *o, struct stage *s)
{
	int r = 0;

	if (s->base >= 0)
		s->env = o->st[s->base].env;
	else if ((r = env_set(o, s, "PATH", DEFAULT_PATH)) < 0)
		return r;
	for (size_t k = 0; k < s->n_cmds; k++) {
		const struct cmd *c = &s->cmds[k];
		const char *kw = c->n->keyword, *from = NULL;

		if (strcmp(kw, "arg") == 0) {
			r = dispatch_arg(o, s, c);
		} else if (strcmp(kw, "env") == 0) {
			r = dispatch_env(o, s, c);
		} else if (strcmp(kw, "run") == 0) {
			r = dispatch_run(o, s, c);
		} else if (strcmp(kw, "copy") == 0 && df_node_flag(c->n, "from", &from) && from &&
			   *from) {
			int d = -1;

			r = copy_from_stage(o, c, from, &d);
			if (r == 0 && d >= 0 && !o->st[d].dispatched)
				r = ol_loc_err(o, &c->loc, EINVAL, "cannot copy from stage \"%s\", it needs "
					       "to be defined before current stage \"%s\"", from,
					       s->stage_name);
		}
		if (r < 0)
			return r;
	}
	s->dispatched = true;
	return 0;
}

/* ---- outline: collecting ---- */

struct out_arg {
	const struct argi *a;
	size_t seq;
};

/* What the target's outline lists; a name is listed once. */
struct out {
	struct out_arg *args;
	size_t n_args;
	struct smap args_ix;
	struct mnt *secrets, *ssh;
	size_t n_secrets, n_ssh;
	struct smap secrets_ix, ssh_ix;
};

/* markAllUsed: a used ARG makes the global ARGs its default read used. */
static int
mark_used(const struct ol *o, struct capture *c, const char *const *keys, size_t n, int depth)
{
	if (depth > 1000)
		return 0;
	for (size_t i = 0; i < n; i++) {
		const struct argi *a = capture_arg(o, c, keys[i]);
		bool was = capture_is_used(c, keys[i]);

		if (capture_use(c, keys[i]) < 0)
			return -ENOMEM;
		if (a && !was && mark_used(o, c, a->deps, a->n_deps, depth + 1) < 0)
			return -ENOMEM;
	}
	return 0;
}

/* args(), secrets() and ssh() of BuildKit's dispatchState in one walk:
 * the stage's own first, then its base, then what it reads from. A name
 * already reported is not reported again. */
static int
collect(struct ol *o, struct out *out, int i)
{
	struct stage *s = &o->st[i];
	int r;

	if (s->walked)
		return 0;
	s->walked = true;
	/* markAllUsed; the list grows while it is walked, which is fine */
	for (size_t k = 0; k < s->oc.n_used; k++) {
		const struct argi *a = capture_arg(o, &s->oc, s->oc.used[k]);

		if (a && mark_used(o, &s->oc, a->deps, a->n_deps, 0) < 0)
			return ol_oom(o);
	}
	for (size_t k = 0; k < s->oc.n_used; k++) {
		const struct argi *a = capture_arg(o, &s->oc, s->oc.used[k]);
		size_t seen;

		if (!a || ol_smap_get(&out->args_ix, a->key, &seen))
			continue;
		if (ol_smap_put(&out->args_ix, a->key, out->n_args) < 0 ||
		    OL_GROW(out->args, out->n_args) < 0)
			return ol_oom(o);
		out->args[out->n_args] = (struct out_arg) { a, out->n_args };
		out->n_args++;
	}
	for (size_t k = 0; k < s->oc.n_secrets; k++)
		if (mnt_add(&out->secrets, &out->n_secrets, &out->secrets_ix, &s->oc.secrets[k]) < 0)
			return ol_oom(o);
	for (size_t k = 0; k < s->oc.n_ssh; k++)
		if (mnt_add(&out->ssh, &out->n_ssh, &out->ssh_ix, &s->oc.ssh[k]) < 0)
			return ol_oom(o);
	if (s->base >= 0 && (r = collect(o, out, s->base)) < 0)
		return r;
	for (size_t k = 0; k < s->n_deps; k++)
		if ((r = collect(o, out, s->deps[k])) < 0)
			return r;
	return 0;
}

static int
cmp_arg(const void *a, const void *b)
{
	const struct out_arg *x = a, *y = b;

	if (x->a->loc.start != y->a->loc.start)
		return x->a->loc.start < y->a->loc.start ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Stable sort of mounts by line (insertion sort: the lists are short). */
static void
sort_mnts(struct mnt *v, size_t n)
{
	for (size_t i = 1; i < n; i++) {
		struct mnt m = v[i];
		size_t j = i;

		while (j > 0 && v[j - 1].loc.start > m.loc.start) {
			v[j] = v[j - 1];
			j--;
		}
		v[j] = m;
	}
}

static void
json_mnts(struct gbuf *b, bool *first, const char *key, const struct mnt *v, size_t n)
{
	if (!n)
		return;
	ol_json_key(b, first, 1, key);
	gbuf_putc(b, '[');
	for (size_t i = 0; i < n; i++) {
		bool f2 = true;

		if (i)
			gbuf_putc(b, ',');
		ol_json_nl(b, 2);
		gbuf_putc(b, '{');
		ol_json_key(b, &f2, 3, "name");
		ol_json_str(b, v[i].id, strlen(v[i].id));
		if (v[i].required) {
			ol_json_key(b, &f2, 3, "required");
			gbuf_puts(b, "true");
		}
		if (v[i].loc.start) {
			ol_json_key(b, &f2, 3, "location");
			ol_json_loc(b, 3, &v[i].loc);
		}
		ol_json_nl(b, 2);
		gbuf_putc(b, '}');
	}
	ol_json_nl(b, 1);
	gbuf_putc(b, ']');
}

int
outline_json(const struct outline_input *in, char **ret_json, struct kiln_err *err)
{
	struct ol o;
	struct out out = { 0 };
	struct gbuf b;
	bool first = true;
	const char *target_name;
	int r, t;

	r = ol_init(&o, in, err);
	if (r < 0)
		goto out;
	if (!o.n_st) {
		r = kiln_err_set(err, EINVAL, "%s: dockerfile contains no stages to build", o.filename);
		goto out;
	}
	target_name = in->target && *in->target ? in->target : o.st[o.n_st - 1].name;
	r = default_args(&o, target_name);
	if (r == 0)
		r = meta_args(&o);
	if (r == 0)
		r = setup_stages(&o);
	if (r < 0)
		goto out;
	if (in->target && *in->target) {
		t = ol_find_stage(&o, in->target, o.n_st);
		if (t < 0) {
			r = kiln_err_set(err, ENOENT, "target stage \"%s\" could not be found", in->target);
			goto out;
		}
	} else {
		t = (int) o.n_st - 1;
	}
	r = add_onbuild(&o);
	if (r == 0)
		r = find_deps(&o);
	if (r == 0)
		r = check_cycles(&o);
	if (r < 0)
		goto out;
	mark_reachable(&o, t);
	for (size_t i = 0; i < o.n_st && r == 0; i++)
		if (o.st[i].reachable)
			r = dispatch_stage(&o, &o.st[i]);
	if (r == 0)
		r = collect(&o, &out, t);
	if (r < 0)
		goto out;
	if (out.n_args)
		qsort(out.args, out.n_args, sizeof(*out.args), cmp_arg);
	sort_mnts(out.secrets, out.n_secrets);
	sort_mnts(out.ssh, out.n_ssh);

	gbuf_init(&b, OUTLINE_JSON_MAX);
	gbuf_putc(&b, '{');
	ol_json_str_member(&b, &first, 1, "name", o.st[t].name);
	ol_json_str_member(&b, &first, 1, "description", o.st[t].comment);
	if (out.n_args) {
		ol_json_key(&b, &first, 1, "args");
		gbuf_putc(&b, '[');
		for (size_t i = 0; i < out.n_args; i++) {
			const struct argi *a = out.args[i].a;
			bool f2 = true;

			if (i)
				gbuf_putc(&b, ',');
			ol_json_nl(&b, 2);
			gbuf_putc(&b, '{');
			ol_json_key(&b, &f2, 3, "name");
			ol_json_str(&b, a->key, strlen(a->key));
			ol_json_str_member(&b, &f2, 3, "description", a->comment);
			ol_json_str_member(&b, &f2, 3, "value", a->value);
			if (a->loc.start) {
				ol_json_key(&b, &f2, 3, "location");
				ol_json_loc(&b, 3, &a->loc);
			}
			ol_json_nl(&b, 2);
			gbuf_putc(&b, '}');
		}
		ol_json_nl(&b, 1);
		gbuf_putc(&b, ']');
	}
	json_mnts(&b, &first, "secrets", out.secrets, out.n_secrets);
	json_mnts(&b, &first, "ssh", out.ssh, out.n_ssh);
	ol_json_sources(&b, &first, in->dockerfile, in->dockerfile_len);
	r = ol_json_finish(&o, &b, ret_json);
out:
	free(out.args);
	free(out.secrets);
	free(out.ssh);
	ol_smap_release(&out.args_ix);
	ol_smap_release(&out.secrets_ix);
	ol_smap_release(&out.ssh_ix);
	ol_release(&o);
	return r;
}

