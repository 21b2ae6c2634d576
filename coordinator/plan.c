/* The frontend planner: Dockerfile AST -> graph of ops + image config, with
 * BuildKit's semantics (frontend/dockerfile/dockerfile2llb). This file holds
 * the stage machinery and the public API; plan-instr.c and plan-copy.c say
 * what each instruction does, plan-dump.c prints the graph.
 *
 * The order of work is BuildKit's, because it decides which error a broken
 * Dockerfile gets: the syntax directive, every instruction's checks (in file
 * order), the global ARGs, every FROM's expansion, the target, COPY --from
 * dependencies and cycles (over all stages), then only for the stages the
 * target needs: base images, ONBUILD triggers, and the instructions, stage by
 * stage in file order.
 *
 * Invariants: plan_build never touches the network or the disk; every error
 * a line caused reads "FILE:LINE: ..."; ops are appended in topological
 * order and, after pruning, the result image is the last op.
 *
 * What it is not: a builder. Base images come resolved in plan_input (named
 * contexts); nothing is pulled. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cleanup.h"
#include "dockerfile.h"
#include "err.h"
#include "instructions.h"
#include "oci.h"
#include "plan-internal.h"
#include "plan.h"
#include "shell.h"
#include "util.h"


static const char *const known_instructions[] = {
	"from", "run", "cmd", "label", "maintainer", "expose", "env", "add", "copy",
	"entrypoint", "volume", "user", "workdir", "arg", "onbuild", "stopsignal",
	"healthcheck", "shell",
};

/* Flags per instruction, for "did you mean" on a misspelt one. */
static const struct {
	const char *instr;
	const char *const flags[8];
} known_flags[] = {
	{ "add", { "chown", "chmod", "link", "keep-git-dir", "checksum", "exclude", "unpack" } },
	{ "copy", { "chown", "chmod", "from", "link", "parents", "exclude" } },
	{ "run", { "mount", "network", "security", "device" } },
	{ "from", { "platform" } },
	{ "healthcheck", { "interval", "timeout", "start-period", "start-interval", "retries" } },
};

/* ---- small helpers ---- */

void
strv_free(struct strv *s)
{
	op_strv_free(s->v, s->n);
	s->v = NULL;
	s->n = 0;
}

int
strv_add(struct strv *s, const char *str)
{
	return op_add_arg(&s->v, &s->n, str);
}

static bool
kv_is(const char *entry, const char *key, size_t klen)
{
	return strncmp(entry, key, klen) == 0 && entry[klen] == '=';
}

int
strv_setkv(struct strv *s, const char *key, const char *val)
{
	size_t klen = strlen(key);
	char *kv = kiln_strdupf("%s=%s", key, val);
	char **n;

	if (!kv)
		return -ENOMEM;
	for (size_t i = 0; i < s->n; i++)
		if (kv_is(s->v[i], key, klen)) {
			free(s->v[i]);
			memmove(&s->v[i], &s->v[i + 1], (s->n - i - 1) * sizeof(*s->v));
			s->n--;
			break;
		}
	n = realloc(s->v, (s->n + 1) * sizeof(*n));
	if (!n) {
		free(kv);
		return -ENOMEM;
	}
	n[s->n++] = kv;
	s->v = n;
	return 0;
}

const char *
strv_get(const struct strv *s, const char *key)
{
	size_t klen = strlen(key);

	for (size_t i = s->n; i-- > 0;)
		if (kv_is(s->v[i], key, klen))
			return s->v[i] + klen + 1;
	return NULL;
}

char *
strv_join(const struct strv *s, const char *sep)
{
	size_t len = 1, slen = strlen(sep);
	char *out, *w;

	for (size_t i = 0; i < s->n; i++)
		len += strlen(s->v[i]) + slen;
	out = malloc(len);
	if (!out)
		return NULL;
	w = out;
	for (size_t i = 0; i < s->n; i++) {
		size_t l = strlen(s->v[i]);

		if (i) {
			memcpy(w, sep, slen);
			w += slen;
		}
		memcpy(w, s->v[i], l);
		w += l;
	}
	*w = '\0';
	return out;
}

static int
strv_copy(struct strv *dst, const struct strv *src)
{
	for (size_t i = 0; i < src->n; i++)
		if (strv_add(dst, src->v[i]) < 0)
			return -ENOMEM;
	return 0;
}

int
plan_nomem(struct ctx *c)
{
	return kiln_err_set(c->err, ENOMEM, "out of memory");
}

int
plan_line_err(struct ctx *c, int line, int code, const char *fmt, ...)
{
	char msg[450];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (line <= 0)
		return kiln_err_set(c->err, code, "%s: %s", c->in->filename, msg);
	return kiln_err_set(c->err, code, "%s:%d: %s", c->in->filename, line, msg);
}

int
plan_distance(const char *a, const char *b)
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

const char *
plan_suggest(const char *word, const char *const *options, size_t n)
{
	const char *best = NULL;
	int best_d = 3;

	for (size_t i = 0; i < n; i++) {
		int d;

		if (!options[i] || !*options[i])
			continue;
		d = plan_distance(word, options[i]);
		if (d == 0)
			return NULL;    /* exact: the value was not the problem */
		if (d < best_d) {
			best_d = d;
			best = options[i];
		}
	}
	return best;
}

int
plan_expand(struct ctx *c, int line, const char *word, const struct strv *env, char **ret)
{
	struct shell_env se = { (const char *const *) (env ? env->v : NULL), env ? env->n : 0 };
	int r = shell_process_word(word, c->escape, &se, ret, c->err);

	if (r < 0)
		return plan_line_err(c, line, c->err->code, "%s", c->err->msg);
	return 0;
}

int
plan_expand_words(struct ctx *c, int line, const char *word, const struct strv *env,
		  struct strv *ret)
{
	struct shell_env se = { (const char *const *) (env ? env->v : NULL), env ? env->n : 0 };
	char **words = NULL;
	size_t n = 0;
	int r = shell_process_words(word, c->escape, &se, &words, &n, c->err);

	if (r < 0)
		return plan_line_err(c, line, c->err->code, "%s", c->err->msg);
	for (size_t i = 0; i < n && r == 0; i++)
		r = strv_add(ret, words[i]);
	shell_words_free(words, n);
	return r < 0 ? plan_nomem(c) : 0;
}

int
plan_int_append(int **v, size_t *n, int x)
{
	int *nv = realloc(*v, (*n + 1) * sizeof(*nv));

	if (!nv)
		return -ENOMEM;
	nv[(*n)++] = x;
	*v = nv;
	return 0;
}

int
plan_push_op(struct ctx *c, struct stage *s, struct op *op)
{
	struct plan *p = c->p;
	struct op *n;
	int *os;
	char **src;
	int idx = (int) p->n_ops;

	if (p->n_ops >= PLAN_MAX_OPS) {
		op_release(op);
		return kiln_err_set(c->err, E2BIG, "the build has more than %d steps", PLAN_MAX_OPS);
	}
	if (op->kind == OP_IMAGE)
		op->input = -1;
	else if (s)
		op->input = s->op;
	n = realloc(p->ops, (p->n_ops + 1) * sizeof(*n));
	if (n)
		p->ops = n;
	os = realloc(c->op_stage, (p->n_ops + 1) * sizeof(*os));
	if (os)
		c->op_stage = os;
	src = realloc(c->op_source, (p->n_ops + 1) * sizeof(*src));
	if (src)
		c->op_source = src;
	if (!n || !os || !src || (s && plan_int_append(&s->own_ops, &s->n_own_ops, idx) < 0)) {
		op_release(op);
		return plan_nomem(c);
	}
	p->ops[idx] = *op;
	c->op_stage[idx] = s ? s->index : -1;
	c->op_source[idx] = NULL;
	p->n_ops++;
	if (s && op->kind != OP_IMAGE)
		s->op = idx;
	memset(op, 0, sizeof(*op));
	return idx;
}

static int
hist_append(struct plan_history **h, size_t *n, char *created_by, int op)
{
	struct plan_history *nh = realloc(*h, (*n + 1) * sizeof(*nh));

	if (!nh)
		return -ENOMEM;
	nh[*n].created_by = created_by;
	nh[*n].op = op;
	(*n)++;
	*h = nh;
	return 0;
}

int
plan_push_hist(struct ctx *c, struct stage *s, int op, const char *fmt, ...)
{
	va_list ap;
	char *str;

	va_start(ap, fmt);
	if (vasprintf(&str, fmt, ap) < 0)
		str = NULL;
	va_end(ap);
	if (!str || hist_append(&s->hist, &s->n_hist, str, op) < 0) {
		free(str);
		return plan_nomem(c);
	}
	return 0;
}

json_t *
plan_cfg(struct stage *s)
{
	json_t *o = json_object_get(s->img, "config");

	if (!json_is_object(o)) {
		o = json_object();
		json_object_set_new(s->img, "config", o);
	}
	return o;
}

char *
plan_step_name(struct ctx *c, struct stage *s, const char *text)
{
	int width = 1;

	(void) c;
	if (s->total == 0)
		return strdup(text);
	for (int t = s->total; t >= 10; t /= 10)
		width++;
	s->step++;
	return kiln_strdupf("[%s%s%*d/%d] %s%s", s->display, *s->display ? " " : "", width, s->step,
			    s->total, s->onbuild_now ? "ONBUILD " : "", text);
}

char *
plan_familiar_name(const char *name, char *buf, size_t size)
{
	const char *n = name;
	size_t len;

	/* BuildKit looks named contexts up by the familiar name of the
	 * reference: docker.io/library/alpine:latest is "alpine". */
	if (kiln_startswith(n, "docker.io/library/"))
		n += strlen("docker.io/library/");
	else if (kiln_startswith(n, "docker.io/"))
		n += strlen("docker.io/");
	len = strlen(n);
	if (len >= size)
		return NULL;
	memcpy(buf, n, len + 1);
	if (len > 7 && strcmp(buf + len - 7, ":latest") == 0 && !strchr(buf + len - 7 + 1, '/'))
		buf[len - 7] = '\0';
	return buf;
}

const struct plan_context *
plan_find_context(struct ctx *c, const char *name)
{
	char buf[512];

	if (!plan_familiar_name(name, buf, sizeof(buf)))
		return NULL;
	for (size_t i = 0; i < c->in->n_contexts; i++)
		if (strcmp(c->in->contexts[i].name, buf) == 0)
			return &c->in->contexts[i];
	return NULL;
}

static struct stage *
find_stage_before(struct ctx *c, const char *name, size_t before)
{
	struct stage *found = NULL;

	for (size_t i = 0; i < before && i < c->n_stages; i++)
		if (c->stages[i].name && strcasecmp(c->stages[i].name, name) == 0)
			found = &c->stages[i];
	return found;
}

struct stage *
plan_find_stage(struct ctx *c, const char *name)
{
	return find_stage_before(c, name, c->n_stages);
}

/* Keep only the config fields BuildKit's image type has, drop what Go's
 * omitempty would not write, and forget "created" (BuildKit sets it anew). */
void
plan_normalize_config(json_t *img)
{
	static const char *const top[] = {
		"author", "architecture", "os", "os.version", "os.features", "variant", "config",
		"rootfs", "history",
	};
	static const char *const cfg[] = {
		"User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels",
		"StopSignal", "ArgsEscaped", "Healthcheck", "OnBuild", "Shell",
	};
	const char *key;
	json_t *v, *c;
	void *tmp;

	json_object_foreach_safe(img, tmp, key, v) {
		bool keep = false;

		for (size_t i = 0; i < ARRAY_SIZE(top); i++)
			keep = keep || strcmp(key, top[i]) == 0;
		if (!keep)
			json_object_del(img, key);
	}
	c = json_object_get(img, "config");
	if (!json_is_object(c)) {
		json_object_set_new(img, "config", json_object());
		return;
	}
	json_object_foreach_safe(c, tmp, key, v) {
		bool keep = false;

		for (size_t i = 0; i < ARRAY_SIZE(cfg); i++)
			keep = keep || strcmp(key, cfg[i]) == 0;
		if (keep && (json_is_null(v) || json_is_false(v) ||
			     (json_is_array(v) && json_array_size(v) == 0) ||
			     (json_is_object(v) && json_object_size(v) == 0 && strcmp(key, "Healthcheck")) ||
			     (json_is_string(v) && !*json_string_value(v))))
			keep = false;
		if (!keep)
			json_object_del(c, key);
	}
	if (json_is_array(json_object_get(img, "history")) &&
	    json_array_size(json_object_get(img, "history")) == 0)
		json_object_del(img, "history");
}

int
plan_context_op(struct ctx *c, const struct plan_context *pc, const struct platform *pl,
		struct stage *s, bool *ret_new)
{
	/* one image op per context and platform (the target's or the build's) */
	size_t slot = (size_t) (pc - c->in->contexts) * 2 +
		      (pl && !platform_equal(pl, &c->target) ? 1 : 0);
	struct op op = { .kind = OP_IMAGE };
	int idx;

	if (ret_new)
		*ret_new = false;
	if (c->context_ops[slot] >= 0)
		return c->context_ops[slot];
	op.layers = calloc(pc->n_layers + 1, sizeof(*op.layers));
	if (!op.layers)
		return plan_nomem(c);
	for (size_t i = 0; i < pc->n_layers; i++)
		op.layers[i] = pc->layers[i].l;
	op.n_layers = pc->n_layers;
	if (pc->ref && !(op.ref = strdup(pc->ref))) {
		free(op.layers);
		return plan_nomem(c);
	}
	idx = plan_push_op(c, s, &op);
	if (idx < 0)
		return idx;
	c->op_source[idx] = kiln_strdupf("context:%s", pc->name);
	if (!c->op_source[idx])
		return plan_nomem(c);
	if (!s && !(c->p->ops[idx].name = kiln_strdupf("FROM %s", pc->name)))
		return plan_nomem(c);
	c->context_ops[slot] = idx;
	if (ret_new)
		*ret_new = true;
	return idx;
}

int
plan_scratch_op(struct ctx *c, struct stage *s)
{
	struct op op = { .kind = OP_IMAGE };
	int idx;

	if (c->scratch_op >= 0)
		return c->scratch_op;
	idx = plan_push_op(c, s, &op);
	if (idx < 0)
		return idx;
	c->op_source[idx] = strdup("scratch");
	c->p->ops[idx].name = strdup("FROM scratch");
	if (!c->op_source[idx] || !c->p->ops[idx].name)
		return plan_nomem(c);
	c->scratch_op = idx;
	return idx;
}

/* ---- the syntax directive ---- */

static bool
all_digits(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isdigit((unsigned char) s[i]))
			return false;
	return true;
}

/* docker/dockerfile tags we answer ourselves: "", latest, labs, 1, 1.x,
 * 1.x.y, each optionally with -labs. */
static bool
builtin_tag(const char *t, size_t n)
{
	const char *dot;

	if (n >= 5 && memcmp(t + n - 5, "-labs", 5) == 0)
		n -= 5;
	if (n == 0 || (n == 6 && memcmp(t, "latest", 6) == 0) || (n == 4 && memcmp(t, "labs", 4) == 0))
		return true;
	if (t[0] != '1')
		return false;
	if (n == 1)
		return true;
	if (t[1] != '.')
		return false;
	t += 2;
	n -= 2;
	dot = memchr(t, '.', n);
	if (!dot)
		return all_digits(t, n);
	return all_digits(t, (size_t) (dot - t)) && all_digits(dot + 1, n - (size_t) (dot - t) - 1);
}

static int
check_syntax(struct ctx *c)
{
	_cleanup_free_ char *cmdline = NULL;
	const char *name, *tag;
	size_t len, nlen;
	int line = 0;
	int r;

	r = df_find_directive(c->in->dockerfile, c->in->dockerfile_len, "syntax", true, &cmdline, &line);
	if (r < 0)
		return plan_nomem(c);
	if (r == 0)
		return 0;
	name = cmdline;
	len = strcspn(name, " \t");
	/* a digest pins the image; the tag still says which one */
	if (memchr(name, '@', len))
		len = (size_t) ((const char *) memchr(name, '@', len) - name);
	if (len >= 10 && memcmp(name, "docker.io/", 10) == 0) {
		name += 10;
		len -= 10;
	}
	tag = memchr(name, ':', len);
	nlen = tag ? (size_t) (tag - name) : len;
	if (nlen == strlen("docker/dockerfile") && memcmp(name, "docker/dockerfile", nlen) == 0 &&
	    (!tag || builtin_tag(tag + 1, len - nlen - 1)))
		return 0;
	len = strcspn(cmdline, " \t");
	return plan_line_err(c, line, ENOTSUP,
			     "syntax=%.*s: custom frontend images are not supported yet; "
			     "use docker/dockerfile:1 (the built-in frontend) or remove the directive",
			     (int) len, cmdline);
}

/* ---- instruction checks ---- */

static void
upper(char *dst, size_t size, const char *src)
{
	size_t i;

	for (i = 0; src[i] && i + 1 < size; i++)
		dst[i] = (char) toupper((unsigned char) src[i]);
	dst[i] = '\0';
}

static int
unknown_instruction(struct ctx *c, const struct df_node *n, int line)
{
	const char *best = plan_suggest(n->keyword, known_instructions, ARRAY_SIZE(known_instructions));
	char kw[64], sug[64];

	upper(kw, sizeof(kw), n->keyword);
	if (!best)
		return plan_line_err(c, line, KILN_EPARSE, "unknown instruction: %s", kw);
	upper(sug, sizeof(sug), best);
	return plan_line_err(c, line, KILN_EPARSE, "unknown instruction: %s (did you mean %s?)", kw, sug);
}

static bool
is_known_instruction(const char *kw)
{
	for (size_t i = 0; i < ARRAY_SIZE(known_instructions); i++)
		if (strcmp(kw, known_instructions[i]) == 0)
			return true;
	return false;
}

/* instr_check with a location, and with suggestions for misspellings. */
static int
check_node(struct ctx *c, const struct df_node *n, int line)
{
	const char *prefix = "unknown flag: --";
	int r;

	if (!is_known_instruction(n->keyword))
		return unknown_instruction(c, n, line);
	r = instr_check(n, c->err);
	if (r == 0)
		return 0;
	if (kiln_startswith(c->err->msg, prefix)) {
		char bad[64];

		snprintf(bad, sizeof(bad), "%s", c->err->msg + strlen(prefix));
		for (size_t i = 0; i < ARRAY_SIZE(known_flags); i++) {
			const char *best;

			if (strcmp(known_flags[i].instr, n->keyword) != 0)
				continue;
			best = plan_suggest(bad, known_flags[i].flags, ARRAY_SIZE(known_flags[i].flags));
			if (best)
				return plan_line_err(c, line, c->err->code, "%s (did you mean --%s?)",
						     c->err->msg, best);
		}
	}
	return plan_line_err(c, line, c->err->code, "%s", c->err->msg);
}

/* ---- global arguments and stages ---- */

const char *
plan_build_arg(struct ctx *c, const char *key)
{
	size_t klen = strlen(key);

	for (size_t i = c->in->n_build_args; i-- > 0;)
		if (kv_is(c->in->build_args[i], key, klen))
			return c->in->build_args[i] + klen + 1;
	return NULL;
}

static int
platform_args(struct ctx *c)
{
	char ts[PLATFORM_STR_SIZE], bs[PLATFORM_STR_SIZE];
	const char *kv[][2] = {
		{ "BUILDPLATFORM", platform_fmt(&c->build, bs) },
		{ "BUILDOS", c->build.os },
		{ "BUILDARCH", c->build.arch },
		{ "BUILDVARIANT", c->build.variant },
		{ "TARGETPLATFORM", platform_fmt(&c->target, ts) },
		{ "TARGETOS", c->target.os },
		{ "TARGETARCH", c->target.arch },
		{ "TARGETVARIANT", c->target.variant },
	};

	for (size_t i = 0; i < ARRAY_SIZE(kv); i++) {
		const char *v = plan_build_arg(c, kv[i][0]);

		if (strv_setkv(&c->global, kv[i][0], v ? v : kv[i][1]) < 0)
			return plan_nomem(c);
	}
	return 0;
}

/* ARG before the first FROM: the --build-arg, else the default expanded
 * against the global args so far; without either it stays undefined. */
static int
meta_arg(struct ctx *c, const struct df_node *n)
{
	for (size_t i = 0; i < n->n_args; i++) {
		_cleanup_free_ char *key = NULL;
		_cleanup_free_ char *val = NULL;
		const char *eq = strchr(n->args[i], '='), *v;
		int r;

		key = eq ? strndup(n->args[i], (size_t) (eq - n->args[i])) : strdup(n->args[i]);
		if (!key)
			return plan_nomem(c);
		v = plan_build_arg(c, key);
		if (v) {
			val = strdup(v);
			if (!val)
				return plan_nomem(c);
		} else if (eq) {
			r = plan_expand(c, n->start_line, eq + 1, &c->global, &val);
			if (r < 0)
				return r;
		}
		if (val && strv_setkv(&c->global, key, val) < 0)
			return plan_nomem(c);
	}
	return 0;
}

static int
add_stage(struct ctx *c, const struct df_node *n, size_t i)
{
	struct stage *s;

	if (c->n_stages == PLAN_MAX_STAGES)
		return plan_line_err(c, n->start_line, E2BIG, "more than %d stages", PLAN_MAX_STAGES);
	if (c->n_stages)
		c->stages[c->n_stages - 1].end = i;
	s = &c->stages[c->n_stages];
	memset(s, 0, sizeof(*s));
	s->from = n;
	s->first = i + 1;
	s->end = c->ast->n_nodes;
	s->index = (int) c->n_stages;
	s->op = -1;
	c->n_stages++;
	if (n->n_args == 3) {
		s->name = strdup(n->args[2]);
		if (!s->name)
			return plan_nomem(c);
		for (char *p = s->name; *p; p++)
			*p = (char) tolower((unsigned char) *p);
	}
	return 0;
}

/* Check every instruction, collect the global ARGs, split into stages. */
static int
split_stages(struct ctx *c)
{
	int r;

	r = platform_args(c);
	if (r < 0)
		return r;
	for (size_t i = 0; i < c->ast->n_nodes; i++) {
		const struct df_node *n = &c->ast->nodes[i];

		r = check_node(c, n, n->start_line);
		if (r < 0)
			return r;
		if (strcmp(n->keyword, "from") == 0) {
			r = add_stage(c, n, i);
		} else if (c->n_stages == 0) {
			if (strcmp(n->keyword, "arg") != 0)
				return plan_line_err(c, n->start_line, KILN_EPARSE,
						     "no build stage in current context");
			r = meta_arg(c, n);
		}
		if (r < 0)
			return r;
	}
	if (c->n_stages == 0)
		return kiln_err_set(c->err, KILN_EPARSE, "%s: dockerfile contains no stages to build",
				    c->in->filename);
	return 0;
}

/* Expand every FROM (all stages, as BuildKit does before it knows which
 * ones the target needs) and link stages to the stages they start from. */
static int
resolve_from(struct ctx *c)
{
	for (size_t i = 0; i < c->n_stages; i++) {
		struct stage *s = &c->stages[i];
		int line = s->from->start_line;
		const char *pv;
		int r;

		if (s->name) {
			s->display = strdup(s->name);
		} else {
			s->display = c->n_stages == 1 ? strdup("") : kiln_strdupf("stage-%zu", i);
		}
		if (!s->display)
			return plan_nomem(c);
		r = plan_expand(c, line, s->from->args[0], &c->global, &s->base_name);
		if (r < 0)
			return r;
		if (!*s->base_name)
			return plan_line_err(c, line, KILN_EPARSE, "base name (%s) should not be blank",
					     s->from->args[0]);
		if (df_node_flag(s->from, "platform", &pv) && pv && *pv) {
			_cleanup_free_ char *ps = NULL;

			r = plan_expand(c, line, pv, &c->global, &ps);
			if (r < 0)
				return r;
			if (!*ps)
				return plan_line_err(c, line, EINVAL, "empty platform value from expression %s",
						     pv);
			if (platform_parse(ps, &s->platform) < 0)
				return plan_line_err(c, line, EINVAL,
						     "failed to parse platform %s: \"%s\" is not a valid "
						     "platform (os/arch[/variant])", pv, ps);
			s->has_platform = true;
		}
		if (s->name && (s->replaced = plan_find_context(c, s->name)))
			continue;
		s->base = find_stage_before(c, s->base_name, i);
	}
	return 0;
}

static int
resolve_target(struct ctx *c, struct stage **ret)
{
	const char *names[PLAN_MAX_STAGES];
	const char *best;

	if (!c->in->target || !*c->in->target) {
		*ret = &c->stages[c->n_stages - 1];
		return 0;
	}
	*ret = plan_find_stage(c, c->in->target);
	if (*ret)
		return 0;
	for (size_t i = 0; i < c->n_stages; i++)
		names[i] = c->stages[i].display;
	best = plan_suggest(c->in->target, names, c->n_stages);
	if (best)
		return kiln_err_set(c->err, ENOENT, "target stage \"%s\" could not be found (did you mean %s?)",
				    c->in->target, best);
	return kiln_err_set(c->err, ENOENT, "target stage \"%s\" could not be found", c->in->target);
}

/* ---- dependencies ---- */

static int
add_dep(struct ctx *c, struct stage *s, int dep)
{
	for (size_t i = 0; i < s->n_deps; i++)
		if (s->deps[i] == dep)
			return 0;
	return plan_int_append(&s->deps, &s->n_deps, dep) < 0 ? plan_nomem(c) : 0;
}

static int
cmds_append(struct ctx *c, struct stage *s, const struct df_node *n, bool onbuild, int line)
{
	struct plan_cmd *nc = realloc(s->cmds, (s->n_cmds + 1) * sizeof(*nc));

	if (!nc)
		return plan_nomem(c);
	nc[s->n_cmds].n = n;
	nc[s->n_cmds].onbuild = onbuild;
	nc[s->n_cmds].line = line;
	s->cmds = nc;
	s->n_cmds++;
	return 0;
}

/* The stage that COPY --from in n reads, if it names one. */
static int
copy_dep(struct ctx *c, const struct df_node *n, int line, struct stage **ret)
{
	const struct plan_context *pc;
	const char *from;

	*ret = NULL;
	if (strcmp(n->keyword, "copy") != 0 || !df_node_flag(n, "from", &from) || !from || !*from)
		return 0;
	return plan_copy_source(c, line, from, ret, &pc);
}

static int
collect_deps(struct ctx *c)
{
	for (size_t i = 0; i < c->n_stages; i++) {
		struct stage *s = &c->stages[i];

		for (size_t k = s->first; k < s->end; k++) {
			const struct df_node *n = &c->ast->nodes[k];
			struct stage *dep;
			int r;

			r = cmds_append(c, s, n, false, n->start_line);
			if (r == 0)
				r = copy_dep(c, n, n->start_line, &dep);
			if (r == 0 && dep)
				r = add_dep(c, s, dep->index);
			if (r == 0)
				r = plan_run_mount_deps(c, s, n, n->start_line);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

/* The COPY --from in stage s that reads stage dep (for the cycle message). */
static int
dep_line(struct ctx *c, struct stage *s, int dep)
{
	for (size_t i = 0; i < s->n_cmds; i++) {
		struct stage *d;
		struct kiln_err saved = *c->err;

		if (copy_dep(c, s->cmds[i].n, s->cmds[i].line, &d) == 0 && d && d->index == dep)
			return s->cmds[i].line;
		*c->err = saved;
	}
	return s->from->start_line;
}

/* Depth-first search for a cycle; returns the line of the first COPY
 * --from on it, or 0. */
static int
visit(struct ctx *c, struct stage *s, bool *visited, int first_line)
{
	if (visited[s->index])
		return 0;
	visited[s->index] = true;
	s->visiting = true;
	for (size_t i = 0; i < s->n_deps; i++) {
		struct stage *d = &c->stages[s->deps[i]];
		int line = first_line ? first_line : dep_line(c, s, d->index);
		int found;

		if (d->visiting)
			return line;
		found = visit(c, d, visited, line);
		if (found)
			return found;
	}
	s->visiting = false;
	return 0;
}

static int
check_cycles(struct ctx *c)
{
	bool visited[PLAN_MAX_STAGES] = { false };

	for (size_t i = 0; i < c->n_stages; i++) {
		int line = visit(c, &c->stages[i], visited, 0);

		if (line) {
			const char *name = c->stages[i].name ? c->stages[i].name : c->stages[i].display;

			return plan_line_err(c, line, ELOOP, "circular dependency detected on stage: %s",
					     *name ? name : "stage-0");
		}
	}
	return 0;
}

static void
mark_reachable(struct ctx *c, struct stage *s)
{
	if (s->reachable)
		return;
	s->reachable = true;
	if (s->base)
		mark_reachable(c, s->base);
	for (size_t i = 0; i < s->n_deps; i++)
		mark_reachable(c, &c->stages[s->deps[i]]);
}

/* ---- base images and ONBUILD triggers ---- */

static int
resolve_base(struct ctx *c, struct stage *s)
{
	if (s->replaced || s->base || strcasecmp(s->base_name, "scratch") == 0)
		return 0;
	s->image = plan_find_context(c, s->base_name);
	if (s->image)
		return 0;
	{
		const char *names[PLAN_MAX_STAGES];
		size_t n = 0;
		const char *best;

		for (size_t i = 0; i < (size_t) s->index; i++)
			if (c->stages[i].name)
				names[n++] = c->stages[i].name;
		best = plan_suggest(s->base_name, names, n);
		if (best)
			return plan_line_err(c, s->from->start_line, ENOENT,
					     "base image '%s' is not available (did you mean stage '%s'?)",
					     s->base_name, best);
	}
	if (c->in->ret_missing_image) {
		*c->in->ret_missing_image = strdup(s->base_name);
		return plan_line_err(c, s->from->start_line, KILN_ENOIMAGE,
				     "base image '%s' must be resolved", s->base_name);
	}
	return plan_line_err(c, s->from->start_line, ENOTSUP,
			     "base image '%s' is not available: no registry to pull it from here; "
			     "pass --build-context %s=oci-layout://DIR", s->base_name, s->base_name);
}

/* Parse one trigger of s's base and put it before s's own instructions. */
static int
add_trigger(struct ctx *c, struct stage *s, const char *text, size_t at)
{
	int line = s->from->start_line;
	struct df_ast *ast = NULL, **na;
	struct kiln_err perr = { 0 };
	const struct df_node *n;
	struct plan_cmd *nc;
	struct stage *dep;
	int r;

	r = df_parse(text, strlen(text), c->in->filename, &ast, &perr);
	if (r < 0)
		return plan_line_err(c, line, perr.code, "ONBUILD trigger '%s' of the base image: %s", text,
				     perr.msg);
	na = realloc(c->trigger_asts, (c->n_trigger_asts + 1) * sizeof(*na));
	if (!na) {
		df_ast_free(ast);
		return plan_nomem(c);
	}
	c->trigger_asts = na;
	c->trigger_asts[c->n_trigger_asts++] = ast;
	if (ast->n_nodes != 1)
		return plan_line_err(c, line, EINVAL, "onbuild trigger should be a single expression");
	n = &ast->nodes[0];
	if (strcmp(n->keyword, "from") == 0 || strcmp(n->keyword, "onbuild") == 0)
		return plan_line_err(c, line, EINVAL, "%s isn't allowed as an ONBUILD trigger",
				     strcmp(n->keyword, "from") == 0 ? "FROM" : "ONBUILD");
	r = check_node(c, n, line);
	if (r < 0)
		return r;
	r = cmds_append(c, s, n, true, line);
	if (r < 0)
		return r;
	/* move it to position at */
	nc = &s->cmds[s->n_cmds - 1];
	{
		struct plan_cmd t = *nc;

		memmove(&s->cmds[at + 1], &s->cmds[at], (s->n_cmds - 1 - at) * sizeof(*s->cmds));
		s->cmds[at] = t;
	}
	r = copy_dep(c, n, line, &dep);
	if (r == 0 && dep)
		r = add_dep(c, s, dep->index);
	return r;
}

static int
init_triggers(struct ctx *c, struct stage *s)
{
	size_t at = 0;
	int r = 0;

	if (s->triggers_done || s->replaced)
		return 0;
	s->triggers_done = true;
	if (s->base) {
		/* triggers of a base stage are its own ONBUILD lines */
		for (size_t i = s->base->first; i < s->base->end && r == 0; i++) {
			const struct df_node *n = &c->ast->nodes[i];
			_cleanup_free_ char *expr = NULL;

			if (strcmp(n->keyword, "onbuild") != 0)
				continue;
			expr = plan_onbuild_expression(n);
			if (!expr)
				return plan_nomem(c);
			r = add_trigger(c, s, expr, at++);
		}
		return r;
	}
	if (s->image) {
		json_t *ob = json_object_get(json_object_get(s->image->config, "config"), "OnBuild");
		size_t i;
		json_t *t;

		json_array_foreach(ob, i, t) {
			if (!json_is_string(t))
				continue;
			r = add_trigger(c, s, json_string_value(t), at++);
			if (r < 0)
				return r;
		}
	}
	return r;
}

/* Resolve the bases of the stages the target needs; their ONBUILD triggers
 * may need more stages (COPY --from), so repeat until nothing changes. */
static int
resolve_stages(struct ctx *c, struct stage *target)
{
	for (;;) {
		size_t before = 0, after = 0;
		int r;

		for (size_t i = 0; i < c->n_stages; i++)
			before += c->stages[i].reachable;
		mark_reachable(c, target);
		for (size_t i = 0; i < c->n_stages; i++) {
			struct stage *s = &c->stages[i];

			if (!s->reachable)
				continue;
			r = resolve_base(c, s);
			if (r < 0)
				return r;
		}
		for (size_t i = 0; i < c->n_stages; i++) {
			struct stage *s = &c->stages[i];

			if (!s->reachable)
				continue;
			r = init_triggers(c, s);
			if (r < 0)
				return r;
		}
		/* deps added by triggers */
		for (size_t i = 0; i < c->n_stages; i++)
			if (c->stages[i].reachable)
				for (size_t k = 0; k < c->stages[i].n_deps; k++)
					mark_reachable(c, &c->stages[c->stages[i].deps[k]]);
		for (size_t i = 0; i < c->n_stages; i++)
			after += c->stages[i].reachable;
		if (after == before)
			return 0;
	}
}

/* ---- dispatching a stage ---- */

static bool
produces_op(const char *kw)
{
	return strcmp(kw, "run") == 0 || strcmp(kw, "copy") == 0 || strcmp(kw, "add") == 0 ||
	       strcmp(kw, "workdir") == 0;
}

static json_t *
empty_image(const struct platform *p)
{
	json_t *img = oci_config_new(p);
	json_t *cfg;

	if (!img)
		return NULL;
	json_object_del(img, "history");
	cfg = json_pack("{s:s, s:[s]}", "WorkingDir", "/", "Env", "PATH=" PLAN_DEFAULT_PATH);
	if (!cfg || json_object_set_new(img, "config", cfg) < 0) {
		json_decref(img);
		return NULL;
	}
	return img;
}

static char *
normalize_workdir(const char *cur, const char *p)
{
	_cleanup_free_ char *joined = NULL;

	joined = p[0] == '/' ? strdup(p) : kiln_strdupf("/%s/%s", cur ? cur : "", p);
	return joined ? kiln_path_clean(joined) : NULL;
}

static int
copy_args(struct ctx *c, struct stage *dst, const struct stage *src)
{
	for (size_t i = 0; i < src->n_args; i++) {
		struct plan_arg *na = realloc(dst->args, (dst->n_args + 1) * sizeof(*na));

		if (!na)
			return plan_nomem(c);
		dst->args = na;
		na[dst->n_args].key = strdup(src->args[i].key);
		na[dst->n_args].value = src->args[i].value ? strdup(src->args[i].value) : NULL;
		dst->n_args++;
		if (!na[dst->n_args - 1].key || (src->args[i].value && !na[dst->n_args - 1].value))
			return plan_nomem(c);
	}
	return 0;
}

/* A stage starts as its base: another stage, scratch or a named context. */
static int
init_stage(struct ctx *c, struct stage *s)
{
	struct stage *b = s->base;
	json_t *cfg, *env, *e;
	const char *wd, *user;
	bool has_path = false;
	size_t i;
	int r;

	if (b) {
		s->img = json_deep_copy(b->img);
		s->platform = b->platform;
		s->op = b->op;
		if (!s->img || strv_copy(&s->env, &b->env) < 0 || copy_args(c, s, b) < 0)
			return plan_nomem(c);
		for (i = 0; i < b->n_hist; i++) {
			char *h = strdup(b->hist[i].created_by);

			if (!h || hist_append(&s->hist, &s->n_hist, h, b->hist[i].op) < 0) {
				free(h);
				return plan_nomem(c);
			}
		}
	} else if (s->image) {
		s->img = json_deep_copy(s->image->config);
		if (!s->img)
			return plan_nomem(c);
		plan_normalize_config(s->img);
		if (!s->has_platform)
			s->platform = c->target;
	} else {
		/* scratch: BuildKit takes the target platform whatever FROM says */
		s->img = empty_image(&c->target);
		s->platform = c->target;
		if (!s->img)
			return plan_nomem(c);
	}
	cfg = plan_cfg(s);
	/* ONBUILD triggers do not carry over */
	json_object_del(cfg, "OnBuild");

	s->total = !b && s->image ? 1 : 0;
	for (i = 0; i < s->n_cmds; i++)
		s->total += s->cmds[i].onbuild || produces_op(s->cmds[i].n->keyword);
	if (s->image) {
		_cleanup_free_ char *text = kiln_strdupf("FROM %s", s->base_name);
		bool fresh;

		r = plan_context_op(c, s->image, &s->platform, s, &fresh);
		if (r < 0)
			return r;
		s->op = r;
		if (!text)
			return plan_nomem(c);
		{
			char *name = plan_step_name(c, s, text);

			if (!name)
				return plan_nomem(c);
			if (fresh && !c->p->ops[r].name)
				c->p->ops[r].name = name;
			else
				free(name);
		}
	} else if (!b) {
		r = plan_scratch_op(c, s);
		if (r < 0)
			return r;
		s->op = r;
	}

	/* PATH is always set (BuildKit adds it to the image too) */
	env = json_object_get(cfg, "Env");
	if (!json_is_array(env)) {
		env = json_array();
		json_object_set_new(cfg, "Env", env);
	}
	json_array_foreach(env, i, e)
		has_path = has_path || (json_is_string(e) && kv_is(json_string_value(e), "PATH", 4));
	if (!has_path && json_array_append_new(env, json_string("PATH=" PLAN_DEFAULT_PATH)) < 0)
		return plan_nomem(c);
	json_array_foreach(env, i, e) {
		const char *kv = json_string_value(e);
		const char *eq = kv ? strchr(kv, '=') : NULL;
		_cleanup_free_ char *k = NULL;

		if (!kv)
			continue;
		k = eq ? strndup(kv, (size_t) (eq - kv)) : strdup(kv);
		if (!k || strv_setkv(&s->env, k, eq ? eq + 1 : "") < 0)
			return plan_nomem(c);
	}
	wd = json_string_value(json_object_get(cfg, "WorkingDir"));
	free(s->cwd);
	s->cwd = wd && *wd ? normalize_workdir("/", wd) : strdup("/");
	if (!s->cwd)
		return plan_nomem(c);
	if (wd && *wd)
		json_object_set_new(cfg, "WorkingDir", json_string(s->cwd));
	user = json_string_value(json_object_get(cfg, "User"));
	free(s->user);
	s->user = strdup(user ? user : "");
	if (!s->user)
		return plan_nomem(c);
	return 0;
}

static int
check_platform(struct ctx *c, struct stage *s)
{
	char ps[PLATFORM_STR_SIZE], ts[PLATFORM_STR_SIZE], bs[PLATFORM_STR_SIZE];

	if (!s->has_platform || !s->image || platform_equal(&s->platform, &c->target) ||
	    platform_equal(&s->platform, &c->build))
		return 0;
	return plan_line_err(c, s->from->start_line, ENOTSUP,
			     "FROM --platform=%s: a build runs its stages for the target platform (%s) or the "
			     "build platform (%s) only, not yet for others", platform_fmt(&s->platform, ps),
			     platform_fmt(&c->target, ts), platform_fmt(&c->build, bs));
}

static int
dispatch_stage(struct ctx *c, struct stage *s)
{
	int r;

	if (s->replaced) {
		r = plan_context_op(c, s->replaced, NULL, s, NULL);
		if (r < 0)
			return r;
		s->op = r;
		s->img = json_deep_copy(s->replaced->config);
		if (!s->img)
			return plan_nomem(c);
		plan_normalize_config(s->img);
		json_object_del(plan_cfg(s), "OnBuild");
		/* the stage is the image: its platform is the image's */
		{
			const char *os = json_string_value(json_object_get(s->img, "os"));
			const char *arch = json_string_value(json_object_get(s->img, "architecture"));
			const char *var = json_string_value(json_object_get(s->img, "variant"));
			_cleanup_free_ char *ps = kiln_strdupf("%s/%s%s%s", os ? os : "", arch ? arch : "",
							      var && *var ? "/" : "", var && *var ? var : "");

			if (!ps || platform_parse(ps, &s->platform) < 0)
				s->platform = c->target;
		}
		if (!c->p->ops[r].name)
			c->p->ops[r].name = kiln_strdupf("FROM %s (--build-context)", s->replaced->name);
		s->state = STAGE_DISPATCHED;
		return 0;
	}
	r = check_platform(c, s);
	if (r < 0)
		return r;
	r = init_stage(c, s);
	if (r < 0)
		return r;
	for (size_t i = 0; i < s->n_cmds; i++) {
		s->onbuild_now = s->cmds[i].onbuild;
		r = plan_dispatch(c, s, &s->cmds[i]);
		if (r < 0)
			return r;
	}
	s->onbuild_now = false;
	s->state = STAGE_DISPATCHED;
	return 0;
}

static void
stage_release(struct stage *s)
{
	free(s->name);
	free(s->display);
	free(s->base_name);
	free(s->cmds);
	free(s->deps);
	json_decref(s->img);
	strv_free(&s->env);
	for (size_t i = 0; i < s->n_args; i++) {
		free(s->args[i].key);
		free(s->args[i].value);
	}
	free(s->args);
	free(s->user);
	free(s->cwd);
	for (size_t i = 0; i < s->n_hist; i++)
		free(s->hist[i].created_by);
	free(s->hist);
	free(s->own_ops);
}

static int
plan_all(struct ctx *c)
{
	struct stage *target;
	int r;

	r = check_syntax(c);
	if (r < 0)
		return r;
	r = df_parse(c->in->dockerfile, c->in->dockerfile_len, c->in->filename, &c->ast, c->err);
	if (r < 0)
		return r;
	c->escape = c->ast->escape ? c->ast->escape : '\\';
	c->stages = calloc(PLAN_MAX_STAGES, sizeof(*c->stages));
	c->context_ops = malloc((2 * c->in->n_contexts + 1) * sizeof(*c->context_ops));
	if (!c->stages || !c->context_ops)
		return plan_nomem(c);
	for (size_t i = 0; i < 2 * c->in->n_contexts; i++)
		c->context_ops[i] = -1;
	r = split_stages(c);
	if (r == 0)
		r = resolve_from(c);
	if (r == 0)
		r = resolve_target(c, &target);
	if (r == 0)
		r = collect_deps(c);
	if (r == 0)
		r = check_cycles(c);
	if (r == 0)
		r = resolve_stages(c, target);
	for (size_t i = 0; r == 0 && i < c->n_stages; i++)
		if (c->stages[i].reachable && c->stages[i].state != STAGE_DISPATCHED)
			r = dispatch_stage(c, &c->stages[i]);
	if (r == 0)
		r = plan_finish(c, target);
	return r;
}

int
plan_build(const struct plan_input *input, struct plan **ret, struct kiln_err *err)
{
	struct plan_input in_copy = *input;
	const struct plan_input *in = &in_copy;
	struct ctx c = { .in = in, .err = err, .scratch_op = -1 };
	int r;

	if (!in_copy.filename)
		in_copy.filename = "Dockerfile";

	c.p = calloc(1, sizeof(*c.p));
	if (!c.p)
		return kiln_err_set(err, ENOMEM, "out of memory");
	c.target = in->platform;
	if (in->build_platform)
		c.build = *in->build_platform;
	else
		platform_host(&c.build);
	c.p->platform = c.target;
	c.p->build_platform = c.build;
	r = plan_all(&c);

	for (size_t i = 0; c.stages && i < c.n_stages; i++)
		stage_release(&c.stages[i]);
	free(c.stages);
	strv_free(&c.global);
	for (size_t i = 0; i < c.n_trigger_asts; i++)
		df_ast_free(c.trigger_asts[i]);
	free(c.trigger_asts);
	df_ast_free(c.ast);
	free(c.context_ops);
	strv_free(&c.ctx_mounts);
	free(c.ctx_mount_ops);
	if (c.op_source)
		for (size_t i = 0; i < c.p->n_ops; i++)
			free(c.op_source[i]);
	free(c.op_source);
	free(c.op_stage);
	if (r < 0) {
		plan_free(c.p);
		return r;
	}
	*ret = c.p;
	return 0;
}
