/* What each instruction does to a stage: the image config, the build-time
 * environment and the history entry, as BuildKit's dispatch functions do
 * (frontend/dockerfile/dockerfile2llb/convert*.go). RUN and WORKDIR add ops;
 * COPY and ADD are in plan-copy.c; everything else changes only the config.
 *
 * Words are expanded with the stage's environment as it was before the
 * instruction (ENV A=1 B=$A sees the old A), for exactly the instructions
 * BuildKit expands: ENV, LABEL, ARG defaults, WORKDIR, USER, EXPOSE, VOLUME,
 * STOPSIGNAL, COPY/ADD. The commands of RUN, CMD, ENTRYPOINT and HEALTHCHECK
 * are left to the shell.
 *
 * History wording is Docker 20.10's BuildKit (v0.8) and follows Go's fmt:
 * CMD and ENTRYPOINT print their list with %q (["a" "b"]), SHELL and VOLUME
 * with %v ([a b]), EXPOSE its port set with %v (map[80/tcp:{}], keys
 * sorted), HEALTHCHECK its *HealthConfig with %q (&{["CMD" "x"] "30s" "0s"
 * "0s" '\x03'}: durations as time.Duration prints them, Retries as a rune).
 * ARG shows the instruction as declared, never a --build-arg value. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cleanup.h"
#include "dockerfile.h"
#include "err.h"
#include "gostr.h"
#include "instructions.h"
#include "oci.h"
#include "plan-internal.h"
#include "shell.h"
#include "util.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- Go formatting ---- */

static size_t
fmt_frac(char *buf, size_t w, uint64_t *v, int prec)
{
	bool print = false;

	for (int i = 0; i < prec; i++) {
		unsigned digit = (unsigned) (*v % 10);

		print = print || digit != 0;
		if (print)
			buf[--w] = (char) ('0' + digit);
		*v /= 10;
	}
	if (print)
		buf[--w] = '.';
	return w;
}

static size_t
fmt_int(char *buf, size_t w, uint64_t v)
{
	if (v == 0) {
		buf[--w] = '0';
		return w;
	}
	while (v > 0) {
		buf[--w] = (char) ('0' + v % 10);
		v /= 10;
	}
	return w;
}

void
plan_go_duration(int64_t ns, char out[40])
{
	char buf[40];
	size_t w = sizeof(buf);
	uint64_t u = ns < 0 ? (uint64_t) 0 - (uint64_t) ns : (uint64_t) ns;

	if (u < 1000000000u) {
		int prec;

		buf[--w] = 's';
		if (u == 0) {
			strcpy(out, "0s");
			return;
		} else if (u < 1000u) {
			prec = 0;
			buf[--w] = 'n';
		} else if (u < 1000000u) {
			prec = 3;
			buf[--w] = '\xb5';      /* U+00B5, two bytes */
			buf[--w] = '\xc2';
		} else {
			prec = 6;
			buf[--w] = 'm';
		}
		w = fmt_frac(buf, w, &u, prec);
		w = fmt_int(buf, w, u);
	} else {
		buf[--w] = 's';
		w = fmt_frac(buf, w, &u, 9);
		w = fmt_int(buf, w, u % 60);
		u /= 60;
		if (u > 0) {
			buf[--w] = 'm';
			w = fmt_int(buf, w, u % 60);
			u /= 60;
			if (u > 0) {
				buf[--w] = 'h';
				w = fmt_int(buf, w, u);
			}
		}
	}
	if (ns < 0)
		buf[--w] = '-';
	memcpy(out, buf + w, sizeof(buf) - w);
	out[sizeof(buf) - w] = '\0';
}

char *
plan_go_quote_list(const json_t *arr)
{
	struct gbuf b;
	size_t i;
	json_t *v;

	gbuf_init(&b, 1u << 20);
	gbuf_putc(&b, '[');
	json_array_foreach(arr, i, v) {
		const char *s = json_string_value(v);

		if (i)
			gbuf_putc(&b, ' ');
		gostr_quote(&b, s ? s : "", s ? json_string_length(v) : 0);
	}
	gbuf_putc(&b, ']');
	return gbuf_detach(&b, NULL, NULL);
}

char *
plan_go_list(char *const *v, size_t n)
{
	struct strv s = { (char **) v, n };
	_cleanup_free_ char *j = strv_join(&s, " ");

	return j ? kiln_strdupf("[%s]", j) : NULL;
}

/* Go's %q of an integer: strconv.QuoteRune of it, with values past
 * U+10FFFF (and negative ones) as U+FFFD. */
static void
go_quote_rune(struct gbuf *b, long v)
{
	static const char hex[] = "0123456789abcdef";
	static const char esc[] = "abtnvfr";   /* \a (7) to \r (13) */
	uint32_t r = v < 0 || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF) ? GOSTR_RUNE_ERROR :
		     (uint32_t) v;
	char tmp[16];

	gbuf_putc(b, '\'');
	if (r == '\'' || r == '\\') {
		gbuf_putc(b, '\\');
		gbuf_putc(b, (char) r);
	} else if (gostr_is_print(r)) {
		gbuf_put_rune(b, r);
	} else if (r >= 7 && r <= 13) {
		gbuf_putc(b, '\\');
		gbuf_putc(b, esc[r - 7]);
	} else if (r < ' ' || r == 0x7f) {
		gbuf_puts(b, "\\x");
		gbuf_putc(b, hex[r >> 4]);
		gbuf_putc(b, hex[r & 0xf]);
	} else {
		snprintf(tmp, sizeof(tmp), r < 0x10000 ? "\\u%04" PRIx32 : "\\U%08" PRIx32, r);
		gbuf_puts(b, tmp);
	}
	gbuf_putc(b, '\'');
}

/* ---- helpers ---- */

static int
strv_copy_all(struct strv *dst, const struct strv *src)
{
	for (size_t i = 0; i < src->n; i++)
		if (strv_add(dst, src->v[i]) < 0)
			return -ENOMEM;
	return 0;
}

static json_t *
cfg_object(struct stage *s, const char *field)
{
	json_t *cfg = plan_cfg(s);
	json_t *o = json_object_get(cfg, field);

	if (!json_is_object(o)) {
		o = json_object();
		json_object_set_new(cfg, field, o);
	}
	return o;
}

static json_t *
strv_json(char *const *v, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < n; i++)
		if (json_array_append_new(a, json_string(v[i])) < 0) {
			json_decref(a);
			return NULL;
		}
	return a;
}

/* Exec form as written; shell form through SHELL (default /bin/sh -c). */
static int
command_args(struct stage *s, const struct df_node *n, struct strv *out)
{
	json_t *sh;
	size_t i;
	json_t *v;

	if (n->json) {
		for (i = 0; i < n->n_args; i++)
			if (strv_add(out, n->args[i]) < 0)
				return -ENOMEM;
		return 0;
	}
	sh = json_object_get(plan_cfg(s), "Shell");
	if (json_array_size(sh) > 0) {
		json_array_foreach(sh, i, v)
			if (strv_add(out, json_string_value(v) ? json_string_value(v) : "") < 0)
				return -ENOMEM;
	} else if (strv_add(out, "/bin/sh") < 0 || strv_add(out, "-c") < 0) {
		return -ENOMEM;
	}
	{
		struct strv rest = { n->args, n->n_args };
		_cleanup_free_ char *j = strv_join(&rest, " ");

		return j ? strv_add(out, j) : -ENOMEM;
	}
}

/* The instruction as written, with variables expanded (quotes kept,
 * unknown ones left) and the keyword in capitals: RUN's progress name. */
static char *
run_name(struct ctx *c, struct stage *s, const struct df_node *n)
{
	struct shell_env se = { (const char *const *) s->env.v, s->env.n };
	struct kiln_err ignore = { 0 };
	struct shell_result res;
	_cleanup_free_ char *text = NULL;

	if (shell_process(n->original, c->escape, SHELL_RAW_QUOTES | SHELL_SKIP_UNSET, &se, &res,
			  &ignore) == 0) {
		text = STEAL_PTR(res.word);
		shell_result_release(&res);
	} else {
		text = strdup(n->original);
	}
	if (!text)
		return NULL;
	for (char *p = text; *p && *p != ' '; p++)
		*p = (char) toupper((unsigned char) *p);
	return plan_step_name(c, s, text);
}

/* ---- ENV, LABEL, ARG ---- */

static int
dispatch_kv(struct ctx *c, struct stage *s, const struct plan_cmd *cmd, bool is_env)
{
	const struct df_node *n = cmd->n;
	struct strv keys = { 0 }, vals = { 0 }, shown = { 0 };
	_cleanup_free_ char *text = NULL;
	int r = 0;

	/* every word is expanded before any of them takes effect */
	for (size_t i = 0; i + 1 < n->n_args && r == 0; i += 3) {
		_cleanup_free_ char *k = NULL;
		_cleanup_free_ char *v = NULL;

		r = plan_expand(c, cmd->line, n->args[i], &s->env, &k);
		if (r == 0)
			r = plan_expand(c, cmd->line, n->args[i + 1], &s->env, &v);
		if (r == 0 && (strv_add(&keys, k) < 0 || strv_add(&vals, v) < 0))
			r = plan_nomem(c);
	}
	for (size_t i = 0; i < keys.n && r == 0; i++) {
		_cleanup_free_ char *kv = kiln_strdupf("%s=%s", keys.v[i], vals.v[i]);

		if (!kv || strv_add(&shown, kv) < 0) {
			r = plan_nomem(c);
			break;
		}
		if (!is_env) {
			if (json_object_set_new(cfg_object(s, "Labels"), keys.v[i], json_string(vals.v[i])) < 0)
				r = plan_line_err(c, cmd->line, EINVAL, "LABEL %s: not valid UTF-8", keys.v[i]);
			continue;
		}
		if (!*keys.v[i] || strchr(keys.v[i], '='))
			r = plan_line_err(c, cmd->line, EINVAL, "ENV names can not be blank or contain '=': '%s'",
					  keys.v[i]);
		else if (strv_setkv(&s->env, keys.v[i], vals.v[i]) < 0)
			r = plan_nomem(c);
		else if (oci_config_set_env(s->img, keys.v[i], vals.v[i]) < 0)
			r = plan_line_err(c, cmd->line, EINVAL, "ENV %s: not valid UTF-8", keys.v[i]);
	}
	if (r == 0) {
		text = strv_join(&shown, " ");
		r = text ? plan_push_hist(c, s, -1, "%s %s", is_env ? "ENV" : "LABEL", text) : plan_nomem(c);
	}
	strv_free(&keys);
	strv_free(&vals);
	strv_free(&shown);
	return r;
}

/* ARG NAME[=default]: the --build-arg, else the default (expanded), else
 * the global value of that name; it reaches the build-time environment.
 * History shows NAME[=default] as declared (BuildKit expands the default
 * even when a --build-arg replaces it), never the --build-arg value. */
static int
dispatch_arg(struct ctx *c, struct stage *s, const struct plan_cmd *cmd)
{
	const struct df_node *n = cmd->n;
	struct strv shown = { 0 };
	_cleanup_free_ char *text = NULL;
	int r = 0;

	for (size_t i = 0; i < n->n_args && r == 0; i++) {
		const char *eq = strchr(n->args[i], '='), *v;
		char *key = eq ? strndup(n->args[i], (size_t) (eq - n->args[i])) : strdup(n->args[i]);
		char *val = NULL, *def = NULL, *entry;
		struct plan_arg *na;

		if (!key)
			return plan_nomem(c);
		if (eq)
			r = plan_expand(c, cmd->line, eq + 1, &s->env, &def);
		if (r == 0) {
			if ((v = plan_build_arg(c, key)))
				val = strdup(v);
			else if (eq)
				val = strdup(def);
			else if ((v = strv_get(&c->global, key)))
				val = strdup(v);
			if ((v || eq) && !val)
				r = plan_nomem(c);
		}
		if (r == 0 && val && strv_setkv(&s->env, key, val) < 0)
			r = plan_nomem(c);
		entry = r == 0 ? (eq ? kiln_strdupf("%s=%s", key, def) : strdup(key)) : NULL;
		if (r == 0 && (!entry || strv_add(&shown, entry) < 0))
			r = plan_nomem(c);
		free(entry);
		free(def);
		na = r == 0 ? realloc(s->args, (s->n_args + 1) * sizeof(*na)) : NULL;
		if (!na) {
			free(key);
			free(val);
			strv_free(&shown);
			return r < 0 ? r : plan_nomem(c);
		}
		s->args = na;
		na[s->n_args].key = key;
		na[s->n_args].value = val;
		s->n_args++;
	}
	if (r == 0) {
		text = strv_join(&shown, " ");
		r = text ? plan_push_hist(c, s, -1, "ARG %s", text) : plan_nomem(c);
	}
	strv_free(&shown);
	return r;
}

/* ---- RUN --mount ---- */

/* One --mount value as Go's encoding/csv reads a line (BuildKit's
 * parseMount): fields split on ',', a field that starts with '"' is
 * quoted and "" in it is a quote. */
static int
mount_csv(const char *s, struct strv *out, const char **ret_msg)
{
	for (;;) {
		_cleanup_free_ char *f = malloc(strlen(s) + 1);
		size_t n = 0;

		if (!f)
			return -ENOMEM;
		if (*s == '"') {
			for (s++;; s++) {
				if (!*s) {
					*ret_msg = "extraneous or missing \" in quoted-field";
					return -EINVAL;
				}
				if (*s == '"') {
					if (s[1] != '"')
						break;
					s++;
				}
				f[n++] = *s;
			}
			s++;
			if (*s && *s != ',') {
				*ret_msg = "extraneous or missing \" in quoted-field";
				return -EINVAL;
			}
		} else {
			for (; *s && *s != ','; s++) {
				if (*s == '"') {
					*ret_msg = "bare \" in non-quoted-field";
					return -EINVAL;
				}
				f[n++] = *s;
			}
		}
		f[n] = '\0';
		if (strv_add(out, f) < 0)
			return -ENOMEM;
		if (!*s)
			return 0;
		s++;
	}
}

/* docker/go-units RAMInBytes: "64m", "1.5g", "10MiB", "512" (bytes). */
static int
mount_size(const char *s, uint64_t *ret)
{
	static const char units[] = "kmgtp";
	char *end;
	double v;
	const char *u;

	if (!isdigit((unsigned char) *s))
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno)
		return -EINVAL;
	if (*end == ' ')
		end++;
	if (*end && (u = strchr(units, tolower((unsigned char) *end)))) {
		for (long k = u - units + 1; k > 0; k--)
			v *= 1024;
		end++;
	}
	if (*end == 'i' || *end == 'I')
		end++;
	if (*end == 'b' || *end == 'B')
		end++;
	if (*end || v >= 18446744073709551616.0)
		return -EINVAL;
	*ret = (uint64_t) v;
	return 0;
}

static int
mount_bool(const char *v, bool *ret)
{
	static const char *const t[] = { "1", "t", "T", "TRUE", "true", "True" };
	static const char *const f[] = { "0", "f", "F", "FALSE", "false", "False" };

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		if (strcmp(v, t[i]) == 0)
			return *ret = true, 0;
		if (strcmp(v, f[i]) == 0)
			return *ret = false, 0;
	}
	return -EINVAL;
}

static int
mount_u32(const char *v, int base, uint32_t *ret)
{
	char *end;
	unsigned long long x;

	if (!*v || *v == '-' || *v == '+' || isspace((unsigned char) *v))
		return -EINVAL;
	errno = 0;
	x = strtoull(v, &end, base);
	if (*end || errno || x > UINT32_MAX)
		return -EINVAL;
	*ret = (uint32_t) x;
	return 0;
}

/* path.Clean of an absolute path (or of "/" + p). */
static char *
mount_abs(const char *dir, const char *p)
{
	_cleanup_free_ char *joined = p[0] == '/' ? strdup(p) : kiln_strdupf("%s/%s", dir, p);
	char *out, *o;

	if (!joined)
		return NULL;
	out = malloc(strlen(joined) + 2);
	if (!out)
		return NULL;
	o = out;
	for (const char *c = joined; *c;) {
		size_t n;

		while (*c == '/')
			c++;
		n = strcspn(c, "/");
		if (n == 0 || (n == 1 && c[0] == '.')) {
		} else if (n == 2 && c[0] == '.' && c[1] == '.') {
			while (o > out && *--o != '/')
				;
		} else {
			*o++ = '/';
			memcpy(o, c, n);
			o += n;
		}
		c += n;
	}
	if (o == out)
		*o++ = '/';
	*o = '\0';
	return out;
}

static const char *const mount_type_names[] = { "bind", "cache", "tmpfs", "secret", "ssh" };

/* parseMount + dispatchRunMounts for one value: fills m (released by the
 * caller with the op). *ret_from is the from= value (borrowed from
 * fields) or NULL. */
static int
parse_mount(struct ctx *c, struct stage *s, int line, const char *val, struct op_mount *m,
	    struct strv *vals, const char **ret_from)
{
	const char *msg = NULL, *from = NULL, *target = NULL, *source = NULL, *id = NULL;
	bool ro_set = false, ro = false, has_mode = false, has_uid = false, has_gid = false;
	int r;

	*ret_from = NULL;
	m->from = -1;
	m->type = OP_MOUNT_BIND;
	r = mount_csv(val, vals, &msg);
	if (r == -ENOMEM)
		return plan_nomem(c);
	if (r < 0)
		return plan_line_err(c, line, EINVAL, "failed to parse csv mounts: %s", msg);
	/* type first: BuildKit reads it wherever it is, and the other keys
	 * depend on it */
	for (size_t i = 0; i < vals->n; i++) {
		if (strncasecmp(vals->v[i], "type=", 5) != 0)
			continue;
		for (size_t t = 0; t <= ARRAY_SIZE(mount_type_names); t++) {
			if (t == ARRAY_SIZE(mount_type_names))
				return plan_line_err(c, line, EINVAL, "unsupported mount type \"%s\"",
						     vals->v[i] + 5);
			if (strcasecmp(vals->v[i] + 5, mount_type_names[t]) == 0) {
				m->type = (enum op_mount_type) t;
				break;
			}
		}
	}
	/* expanded values are appended to vals: only the fields are read */
	for (size_t i = 0, n_fields = vals->n; i < n_fields; i++) {
		char *field = vals->v[i], *eq = strchr(field, '=');
		_cleanup_free_ char *value = NULL;
		char key[32];
		size_t kl = eq ? (size_t) (eq - field) : strlen(field);
		bool b;

		snprintf(key, sizeof(key), "%.*s", (int) kl, field);
		for (char *k = key; *k; k++)
			*k = (char) tolower((unsigned char) *k);
		if (!eq) {
			if (strcmp(key, "readonly") == 0 || strcmp(key, "ro") == 0) {
				ro_set = ro = true;
				continue;
			}
			if (strcmp(key, "readwrite") == 0 || strcmp(key, "rw") == 0) {
				ro_set = true;
				ro = false;
				continue;
			}
			if (strcmp(key, "required") == 0 &&
			    (m->type == OP_MOUNT_SECRET || m->type == OP_MOUNT_SSH)) {
				m->required = true;
				continue;
			}
			return plan_line_err(c, line, EINVAL,
					     "invalid field '%s' must be a key=value pair", field);
		}
		if (strcmp(key, "from") == 0) {
			from = eq + 1;
			continue;
		}
		r = plan_expand(c, line, eq + 1, &s->env, &value);
		if (r < 0)
			return r;
		/* keep the expanded value alive with the fields */
		if (strv_add(vals, value) < 0)
			return plan_nomem(c);
		field = vals->v[i];
		{
			const char *v = vals->v[vals->n - 1];

			if (strcmp(key, "type") == 0) {
			} else if (strcmp(key, "source") == 0 || strcmp(key, "src") == 0) {
				source = v;
			} else if (strcmp(key, "target") == 0 || strcmp(key, "dst") == 0 ||
				   strcmp(key, "destination") == 0) {
				target = v;
			} else if (strcmp(key, "readonly") == 0 || strcmp(key, "ro") == 0 ||
				   strcmp(key, "readwrite") == 0 || strcmp(key, "rw") == 0) {
				if (mount_bool(v, &b) < 0)
					return plan_line_err(c, line, EINVAL, "invalid value for %s: %s", key, v);
				ro_set = true;
				ro = strcmp(key, "ro") == 0 || strcmp(key, "readonly") == 0 ? b : !b;
			} else if (strcmp(key, "required") == 0 &&
				   (m->type == OP_MOUNT_SECRET || m->type == OP_MOUNT_SSH)) {
				if (mount_bool(v, &m->required) < 0)
					return plan_line_err(c, line, EINVAL, "invalid value for %s: %s", key, v);
			} else if (strcmp(key, "size") == 0 && m->type == OP_MOUNT_TMPFS) {
				if (mount_size(v, &m->size) < 0)
					return plan_line_err(c, line, EINVAL, "invalid value for %s: %s", key, v);
			} else if (strcmp(key, "id") == 0) {
				id = v;
			} else if (strcmp(key, "sharing") == 0 && m->type == OP_MOUNT_CACHE) {
				if (strcasecmp(v, "shared") != 0 && strcasecmp(v, "private") != 0 &&
				    strcasecmp(v, "locked") != 0)
					return plan_line_err(c, line, EINVAL, "unsupported sharing value \"%s\"", v);
				free(m->sharing);
				m->sharing = strdup(v);
				if (!m->sharing)
					return plan_nomem(c);
				for (char *p = m->sharing; *p; p++)
					*p = (char) tolower((unsigned char) *p);
			} else if (strcmp(key, "mode") == 0) {
				if (mount_u32(v, 8, &m->mode) < 0)
					return plan_line_err(c, line, EINVAL, "invalid value %s for mode", v);
				has_mode = true;
			} else if (strcmp(key, "uid") == 0) {
				if (mount_u32(v, 10, &m->uid) < 0)
					return plan_line_err(c, line, EINVAL, "invalid value %s for uid", v);
				has_uid = true;
			} else if (strcmp(key, "gid") == 0) {
				if (mount_u32(v, 10, &m->gid) < 0)
					return plan_line_err(c, line, EINVAL, "invalid value %s for gid", v);
				has_gid = true;
			} else if (strcmp(key, "env") == 0 && m->type == OP_MOUNT_SECRET) {
				if (!*v || strchr(v, '='))
					return plan_line_err(c, line, EINVAL, "invalid value for env: %s", v);
				free(m->env);
				m->env = strdup(v);
				if (!m->env)
					return plan_nomem(c);
			} else {
				return plan_line_err(c, line, EINVAL, "unexpected key '%s' in '%s'", key, field);
			}
		}
	}
	/* validateMount */
	if (m->type != OP_MOUNT_SECRET && m->type != OP_MOUNT_SSH && m->type != OP_MOUNT_CACHE &&
	    (has_mode || has_uid || has_gid))
		return plan_line_err(c, line, EINVAL, "%s not allowed for \"%s\" type mounts",
				     has_mode ? "mode" : has_uid ? "uid" : "gid", mount_type_names[m->type]);
	if (m->type == OP_MOUNT_SECRET && from && *from)
		return plan_line_err(c, line, EINVAL, "secret mount should not have a from");
	if (m->type == OP_MOUNT_SECRET && source && *source && id && *id)
		return plan_line_err(c, line, EINVAL, "both source and id can't be set");
	if ((m->type == OP_MOUNT_BIND || m->type == OP_MOUNT_CACHE || m->type == OP_MOUNT_TMPFS) &&
	    !(target && *target))
		return plan_line_err(c, line, EINVAL, "mount target must be set for %s mounts",
				     mount_type_names[m->type]);
	if (m->type == OP_MOUNT_SECRET && source && *source)
		id = source;
	if (m->type == OP_MOUNT_SECRET && !(id && *id) && !(target && *target) && !m->env)
		return plan_line_err(c, line, EINVAL,
				     "invalid secret mount. one of source, target required");

	if (target && *target) {
		m->target = mount_abs(s->cwd, target);
		if (!m->target)
			return plan_nomem(c);
	}
	switch (m->type) {
	case OP_MOUNT_BIND:
		m->ro = ro_set ? ro : true;
		m->source = mount_abs("/", source && *source ? source : "/");
		if (!m->source)
			return plan_nomem(c);
		*ret_from = from && *from ? from : NULL;
		break;
	case OP_MOUNT_CACHE:
		m->ro = ro_set && ro;
		if (!has_mode)
			m->mode = 0755;
		/* BuildKit's default id is the target as written */
		m->id = strdup(id && *id ? id : target);
		if (!m->sharing)
			m->sharing = strdup("shared");
		if (!m->id || !m->sharing)
			return plan_nomem(c);
		/* BuildKit: the cache starts as from's filesystem (scratch when
		 * none) and source is the path of it that is mounted; mode, uid
		 * and gid only shape the root of a cache mounted whole */
		if (source && *source) {
			m->source = mount_abs("/", source);
			if (!m->source)
				return plan_nomem(c);
			if (strcmp(m->source, "/") == 0) {
				free(m->source);
				m->source = NULL;
			}
		}
		if (m->source) {
			m->mode = 0755;
			m->uid = m->gid = 0;
		}
		if (from && *from && !m->source && (has_mode || has_uid || has_gid))
			/* BuildKit mounts a new empty /cache made on top of from */
			return plan_line_err(c, line, ENOTSUP,
					     "RUN --mount=type=cache with from and mode, uid or gid but no "
					     "source is not supported yet");
		*ret_from = from && *from ? from : NULL;
		break;
	case OP_MOUNT_TMPFS:
		break;
	case OP_MOUNT_SECRET:
		if (!has_mode)
			m->mode = 0400;
		if (id && *id) {
			m->id = strdup(id);
		} else if (!m->target) {
			return plan_line_err(c, line, EINVAL, "secret mount needs an id or a target");
		} else {
			const char *slash = strrchr(m->target, '/');

			m->id = strdup(slash + 1);
		}
		if (!m->id)
			return plan_nomem(c);
		if (!m->target && !m->env)
			m->target = kiln_strdupf("/run/secrets/%s", m->id);
		if (!m->env && !m->target)
			return plan_nomem(c);
		break;
	case OP_MOUNT_SSH:
		if (source && *source)
			return plan_line_err(c, line, EINVAL, "ssh does not support source");
		if (!has_mode)
			m->mode = 0600;
		/* the target's default depends on the RUN's other ssh mounts:
		 * run_ssh_defaults */
		m->id = strdup(id && *id ? id : "default");
		if (!m->id)
			return plan_nomem(c);
		break;
	}
	return 0;
}

/* As BuildKit's ExecState: ssh mount i of a RUN without a target gets
 * /run/buildkit/ssh_agent.i, and the step's SSH_AUTH_SOCK is the first
 * one's target unless its env already has that variable (also when that
 * mount is optional and ends up skipped). */
static int
run_ssh_defaults(struct op *op)
{
	_cleanup_free_ char *kv = NULL;
	const char *first = NULL;
	size_t k = 0;

	for (size_t i = 0; i < op->n_mounts; i++) {
		struct op_mount *m = &op->mounts[i];

		if (m->type != OP_MOUNT_SSH)
			continue;
		if (!m->target && !(m->target = kiln_strdupf("/run/buildkit/ssh_agent.%zu", k)))
			return -ENOMEM;
		if (!first)
			first = m->target;
		k++;
	}
	if (!first)
		return 0;
	for (size_t i = 0; i < op->n_env; i++)
		if (kiln_startswith(op->env[i], "SSH_AUTH_SOCK="))
			return 0;
	kv = kiln_strdupf("SSH_AUTH_SOCK=%s", first);
	if (!kv || op_add_arg(&op->env, &op->n_env, kv) < 0)
		return -ENOMEM;
	return 0;
}

/* The --mount values of RUN node n, in order. */
static size_t
mount_values(const struct df_node *n, const char **out, size_t max)
{
	size_t k = 0;

	for (size_t i = 0; i < n->n_flags && k < max; i++) {
		if (strcmp(n->flags[i], "--") == 0)
			break;
		if (strncmp(n->flags[i], "--mount=", 8) == 0)
			out[k++] = n->flags[i] + 8;
	}
	return k;
}

int
plan_run_mount_deps(struct ctx *c, struct stage *s, const struct df_node *n, int line)
{
	const char *vals[64];
	size_t nv;

	if (strcmp(n->keyword, "run") != 0)
		return 0;
	nv = mount_values(n, vals, ARRAY_SIZE(vals));
	for (size_t i = 0; i < nv; i++) {
		struct strv f = { 0 };
		const char *msg;
		int r = mount_csv(vals[i], &f, &msg);

		for (size_t k = 0; r == 0 && k < f.n; k++) {
			const struct plan_context *pc;
			struct stage *dep = NULL;
			struct kiln_err saved = *c->err;
			bool dup = false;

			if (strncasecmp(f.v[k], "from=", 5) != 0 || !f.v[k][5])
				continue;
			/* a bad from= is reported when the RUN is dispatched */
			if (plan_copy_source(c, line, f.v[k] + 5, &dep, &pc) < 0) {
				*c->err = saved;
				continue;
			}
			if (!dep)
				continue;
			for (size_t d = 0; d < s->n_deps; d++)
				dup = dup || s->deps[d] == dep->index;
			if (!dup && plan_int_append(&s->deps, &s->n_deps, dep->index) < 0)
				r = plan_nomem(c);
		}
		strv_free(&f);
		if (r == -ENOMEM)
			return plan_nomem(c);
		if (r < 0 && c->err->code == ENOMEM)
			return r;
	}
	return 0;
}

/* Every --mount of RUN node n into op->mounts. */
static int
run_mounts(struct ctx *c, struct stage *s, int line, const char *const *values, size_t n,
	   struct op *op)
{
	op->mounts = calloc(n + 1, sizeof(*op->mounts));
	if (!op->mounts)
		return plan_nomem(c);
	for (size_t i = 0; i < n; i++) {
		struct op_mount *m = &op->mounts[op->n_mounts++];
		struct strv vals = { 0 };
		const char *from;
		int r;

		r = parse_mount(c, s, line, values[i], m, &vals, &from);
		if (r == 0 && from) {
			r = plan_source_op(c, s, line, from);
			if (r >= 0)
				m->from = r;
		} else if (r == 0 && m->type == OP_MOUNT_BIND) {
			char *src = NULL;

			r = plan_context_mount(c, line, m->source, &src);
			if (r >= 0) {
				m->from = r;
				free(m->source);
				m->source = src;
			}
		}
		strv_free(&vals);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- RUN, WORKDIR ---- */

/* "|N K=V ... " for the ARGs a RUN sees (BuildKit's runCommandString):
 * one K=V per ARG declared in the stage, in order, a name declared twice
 * listed twice (Docker 20.10's BuildKit does not merge them), valued from
 * the environment, else its declared value. */
static int
run_args_prefix(struct stage *s, struct strv *out)
{
	for (size_t i = 0; i < s->n_args; i++) {
		const char *key = s->args[i].key;
		const char *v = strv_get(&s->env, key);
		_cleanup_free_ char *kv = kiln_strdupf("%s=%s", key, v ? v : s->args[i].value ? s->args[i].value : "");

		if (!kv || strv_add(out, kv) < 0)
			return -ENOMEM;
	}
	return 0;
}

static int
dispatch_run(struct ctx *c, struct stage *s, const struct plan_cmd *cmd)
{
	static const struct instr_flag_def defs[] = {
		{ "mount", INSTR_FLAG_STRINGS, NULL },
		{ "network", INSTR_FLAG_STRING, "default" },
		{ "security", INSTR_FLAG_STRING, "sandbox" },
		{ "device", INSTR_FLAG_STRINGS, NULL },
	};
	const struct df_node *n = cmd->n;
	struct instr_flag_value fv[ARRAY_SIZE(defs)];
	struct op op = { .kind = OP_RUN };
	struct strv args = { 0 }, hist = { 0 };
	_cleanup_free_ char *net = NULL;
	_cleanup_free_ char *all = NULL;
	int r, idx;

	r = instr_flags_parse((const char *const *) n->flags, n->n_flags, defs, ARRAY_SIZE(defs), fv,
			      c->err);
	if (r < 0) {
		instr_flag_values_release(fv, ARRAY_SIZE(defs));
		return plan_line_err(c, cmd->line, c->err->code, "%s", c->err->msg);
	}
	if (fv[0].n_values && (r = run_mounts(c, s, cmd->line, fv[0].values, fv[0].n_values,
						 &op)) < 0)
		;       /* r says why */
	else if (fv[2].used)
		r = plan_line_err(c, cmd->line, ENOTSUP, "RUN --security is not supported yet");
	else if (fv[3].n_values)
		r = plan_line_err(c, cmd->line, ENOTSUP, "RUN --device is not supported yet");
	else if (strcmp(fv[1].value, "none") != 0 && strcmp(fv[1].value, "host") != 0 &&
		 strcmp(fv[1].value, "default") != 0)
		r = plan_line_err(c, cmd->line, EINVAL,
				  "unsupported network mode \"%s\" (RUN --network takes none, host or default)",
				  fv[1].value);
	else if (n->n_heredocs)
		r = plan_line_err(c, cmd->line, ENOTSUP, "heredocs in RUN are not supported yet");
	else if (!(net = strdup(fv[1].value)))
		r = plan_nomem(c);
	instr_flag_values_release(fv, ARRAY_SIZE(defs));
	if (r < 0) {
		op_release(&op);
		return r;
	}

	{
		struct strv pre = { 0 };
		char count[32];

		if (command_args(s, n, &args) < 0 || run_args_prefix(s, &pre) < 0) {
			strv_free(&pre);
			goto nomem;
		}
		snprintf(count, sizeof(count), "|%zu", pre.n);
		if ((pre.n && strv_add(&hist, count) < 0) || strv_copy_all(&hist, &pre) < 0 ||
		    strv_copy_all(&hist, &args) < 0) {
			strv_free(&pre);
			goto nomem;
		}
		strv_free(&pre);
	}
	all = strv_join(&hist, " ");
	if (!all)
		goto nomem;
	for (size_t i = 0; i < s->env.n; i++)
		if (op_add_arg(&op.env, &op.n_env, s->env.v[i]) < 0)
			goto nomem;
	if (run_ssh_defaults(&op) < 0)
		goto nomem;
	op.args = STEAL_PTR(args.v);
	op.n_args = args.n;
	args.n = 0;
	op.cwd = strdup(s->cwd);
	op.user = strdup(s->user);
	op.network = STEAL_PTR(net);
	op.name = run_name(c, s, n);
	if (!op.cwd || !op.user || !op.name)
		goto nomem;
	strv_free(&hist);
	idx = plan_push_op(c, s, &op);
	if (idx < 0)
		return idx;
	return plan_push_hist(c, s, idx, "RUN %s # buildkit", all);
nomem:
	op_release(&op);
	strv_free(&args);
	strv_free(&hist);
	return plan_nomem(c);
}

static char *
join_workdir(const char *cur, const char *p)
{
	_cleanup_free_ char *joined = p[0] == '/' ? strdup(p) : kiln_strdupf("/%s/%s", cur, p);

	return joined ? kiln_path_clean(joined) : NULL;
}

/* WORKDIR: the config and the working directory; the directory is made
 * (mkdir -p, owned by the stage's USER) unless it is "/". */
static int
dispatch_workdir(struct ctx *c, struct stage *s, const struct plan_cmd *cmd)
{
	_cleanup_free_ char *w = NULL;
	char *wd;
	struct op op = { .kind = OP_MKDIR };
	int r, idx = -1;

	r = plan_expand(c, cmd->line, cmd->n->args[0], &s->env, &w);
	if (r < 0)
		return r;
	wd = join_workdir(s->cwd, w);
	if (!wd)
		return plan_nomem(c);
	free(s->cwd);
	s->cwd = wd;
	if (json_object_set_new(plan_cfg(s), "WorkingDir", json_string(wd)) < 0)
		return plan_line_err(c, cmd->line, EINVAL, "WORKDIR %s: not valid UTF-8", wd);
	if (strcmp(wd, "/") != 0) {
		struct shell_env se = { (const char *const *) s->env.v, s->env.n };
		struct kiln_err ignore = { 0 };
		_cleanup_free_ char *text = NULL;

		if (shell_process_word(cmd->n->original, c->escape, &se, &text, &ignore) < 0)
			text = strdup(cmd->n->original);
		for (char *p = text; p && *p && *p != ' '; p++)
			*p = (char) toupper((unsigned char) *p);
		op.path = strdup(wd);
		op.name = text ? plan_step_name(c, s, text) : NULL;
		/* BuildKit makes the directory and its missing parents as the
		 * stage's USER (llb.WithUser) */
		op.user = s->user && *s->user ? strdup(s->user) : NULL;
		if (!op.path || !op.name || (s->user && *s->user && !op.user)) {
			op_release(&op);
			return plan_nomem(c);
		}
		idx = plan_push_op(c, s, &op);
		if (idx < 0)
			return idx;
	}
	return plan_push_hist(c, s, idx, "WORKDIR %s", wd);
}

/* ---- CMD, ENTRYPOINT, SHELL ---- */

static int
dispatch_command(struct ctx *c, struct stage *s, const struct plan_cmd *cmd, bool entrypoint)
{
	const struct df_node *n = cmd->n;
	struct strv args = { 0 };
	_cleanup_free_ char *shown = NULL;
	json_t *j;
	int r;

	if (command_args(s, n, &args) < 0) {
		strv_free(&args);
		return plan_nomem(c);
	}
	j = strv_json(args.v, args.n);
	strv_free(&args);
	if (!j)
		return plan_line_err(c, cmd->line, EINVAL, "%s: not valid UTF-8", entrypoint ? "ENTRYPOINT" : "CMD");
	shown = plan_go_quote_list(j);
	if (entrypoint) {
		/* ENTRYPOINT [] is no entrypoint; it resets a CMD not set here */
		if (json_array_size(j) == 0)
			json_object_del(plan_cfg(s), "Entrypoint");
		r = json_array_size(j) ? json_object_set(plan_cfg(s), "Entrypoint", j) : 0;
		if (!s->cmd_set)
			json_object_del(plan_cfg(s), "Cmd");
	} else {
		r = json_object_set(plan_cfg(s), "Cmd", j);
		if (r == 0)
			r = json_object_set_new(plan_cfg(s), "ArgsEscaped", json_true());
		s->cmd_set = true;
	}
	json_decref(j);
	if (r < 0 || !shown)
		return plan_nomem(c);
	return plan_push_hist(c, s, -1, "%s %s", entrypoint ? "ENTRYPOINT" : "CMD", shown);
}

static int
dispatch_shell(struct ctx *c, struct stage *s, const struct plan_cmd *cmd)
{
	const struct df_node *n = cmd->n;
	_cleanup_free_ char *shown = plan_go_list(n->args, n->n_args);
	json_t *j = strv_json(n->args, n->n_args);

	if (!j || !shown) {
		json_decref(j);
		return plan_nomem(c);
	}
	if (json_object_set_new(plan_cfg(s), "Shell", j) < 0)
		return plan_nomem(c);
	return plan_push_hist(c, s, -1, "SHELL %s", shown);
}

/* ---- USER, STOPSIGNAL, MAINTAINER, VOLUME ---- */

static int
dispatch_user(struct ctx *c, struct stage *s, const struct plan_cmd *cmd)
{
	_cleanup_free_ char *u = NULL;
	int r;

	r = plan_expand(c, cmd->line, cmd->n->args[0], &s->env, &u);
	if (r < 0)
		return r;
	free(s->user);
	s->user = strdup(u);
	if (!s->user)
		return plan_nomem(c);
	if (json_object_set_new(plan_cfg(s), "User", json_string(u)) < 0)
		return plan_line_err(c, cmd->line, EINVAL, "USER %s: not valid UTF-8", u);
	return plan_push_hist(c, s, -1, "USER %s", u);
}

/* moby/sys/signal's ParseSignal on Linux: a number, or a name with or
 * without "SIG". */
static bool
valid_signal(const char *sig)
{
	static const char *const names[] = {
		"ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
		"KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
		"TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
		"RTMIN", "RTMAX",
	};
	char up[32];
	const char *name;
	size_t i;

	if (*sig && strspn(sig + (*sig == '-' || *sig == '+'), "0123456789") ==
		    strlen(sig + (*sig == '-' || *sig == '+')) && sig[*sig == '-' || *sig == '+'])
		return strtol(sig, NULL, 10) != 0;
	for (i = 0; sig[i] && i + 1 < sizeof(up); i++)
		up[i] = (char) toupper((unsigned char) sig[i]);
	up[i] = '\0';
	if (sig[i])
		return false;
	name = kiln_startswith(up, "SIG") ? up + 3 : up;
	for (i = 0; i < ARRAY_SIZE(names); i++)
		if (strcmp(name, names[i]) == 0)
			return true;
	if (kiln_startswith(name, "RTMIN+") || kiln_startswith(name, "RTMAX-")) {
		const char *d = name + 6;
		long v = strtol(d, NULL, 10);

		return strspn(d, "0123456789") == strlen(d) && *d && v >= 1 && v <= (name[5] == '+' ? 15 : 14);
	}
	return false;
}

static int
dispatch_stopsignal(struct ctx *c, struct stage *s, const struct plan_cmd *cmd)
{
	_cleanup_free_ char *sig = NULL;
	int r;

	r = plan_expand(c, cmd->line, cmd->n->args[0], &s->env, &sig);
	if (r < 0)
		return r;
	if (!valid_signal(sig))
		return plan_line_err(c, cmd->line, EINVAL, "invalid signal: %s", sig);
	if (json_object_set_new(plan_cfg(s), "StopSignal", json_string(sig)) < 0)
		return plan_nomem(c);
	return plan_push_hist(c, s, -1, "STOPSIGNAL %s", sig);
}

static int
dispatch_maintainer(struct ctx *c, struct stage *s, const struct plan_cmd *cmd)
{
	const char *m = cmd->n->args[0];

	if (json_object_set_new(s->img, "author", json_string(m)) < 0)
		return plan_line_err(c, cmd->line, EINVAL, "MAINTAINER: not valid UTF-8");
	return plan_push_hist(c, s, -1, "MAINTAINER %s", m);
}

static int
dispatch_volume(struct ctx *c, struct stage *s, const struct plan_cmd *cmd)
{
	const struct df_node *n = cmd->n;
	struct strv vols = { 0 };
	_cleanup_free_ char *shown = NULL;
	int r = 0;

	for (size_t i = 0; i < n->n_args && r == 0; i++) {
		const char *a = n->args[i];
		size_t len;
		_cleanup_free_ char *t = NULL;
		_cleanup_free_ char *v = NULL;

		a += gostr_space_prefix(a, strlen(a));
		len = strlen(a);
		len -= gostr_space_suffix(a, len);
		t = strndup(a, len);
		if (!t)
			r = plan_nomem(c);
		else if (!*t)
			r = plan_line_err(c, cmd->line, EINVAL, "VOLUME specified can not be an empty string");
		else
			r = plan_expand(c, cmd->line, t, &s->env, &v);
		if (r == 0 && !*v)
			r = plan_line_err(c, cmd->line, EINVAL, "VOLUME specified can not be an empty string");
		if (r == 0 && strv_add(&vols, v) < 0)
			r = plan_nomem(c);
	}
	for (size_t i = 0; i < vols.n && r == 0; i++)
		if (json_object_set_new(cfg_object(s, "Volumes"), vols.v[i], json_object()) < 0)
			r = plan_line_err(c, cmd->line, EINVAL, "VOLUME %s: not valid UTF-8", vols.v[i]);
	if (r == 0) {
		shown = plan_go_list(vols.v, vols.n);
		r = shown ? plan_push_hist(c, s, -1, "VOLUME %s", shown) : plan_nomem(c);
	}
	strv_free(&vols);
	return r;
}

/* ---- EXPOSE ---- */

static int
port_range(const char *s, unsigned *lo, unsigned *hi)
{
	const char *dash = strchr(s, '-');
	char *end;
	unsigned long a, b;

	if (!*s)
		return -1;
	if (!dash) {
		if (strspn(s, "0123456789") != strlen(s) || strlen(s) > 5)
			return -1;
		a = strtoul(s, &end, 10);
		if (a > 65535)
			return -1;
		*lo = *hi = (unsigned) a;
		return 0;
	}
	if (strchr(dash + 1, '-') || dash == s || !dash[1] ||
	    strspn(s, "0123456789") != (size_t) (dash - s) || strspn(dash + 1, "0123456789") != strlen(dash + 1) ||
	    dash - s > 5 || strlen(dash + 1) > 5)
		return -1;
	a = strtoul(s, NULL, 10);
	b = strtoul(dash + 1, NULL, 10);
	if (a > 65535 || b > 65535 || b < a)
		return -1;
	*lo = (unsigned) a;
	*hi = (unsigned) b;
	return 0;
}

/* BuildKit's parsePortSpec: [ip:][hostPort:]containerPort[/proto]. */
static int
port_spec(struct ctx *c, int line, const char *raw, struct strv *out)
{
	_cleanup_free_ char *copy = strdup(raw);
	char *cport, *proto, *ip = NULL, *hport = NULL, *colon;
	unsigned lo, hi, hlo, hhi;

	if (!copy)
		return plan_nomem(c);
	colon = strrchr(copy, ':');
	cport = colon ? colon + 1 : copy;
	if (colon) {
		*colon = '\0';
		colon = strrchr(copy, ':');
		hport = colon ? colon + 1 : copy;
		if (colon) {
			*colon = '\0';
			ip = copy;
		}
	}
	proto = strchr(cport, '/');
	if (proto)
		*proto++ = '\0';
	if (!*cport)
		return plan_line_err(c, line, EINVAL, "no port specified: %s<empty>", raw);
	for (char *p = proto; p && *p; p++)
		*p = (char) tolower((unsigned char) *p);
	if (!proto || !*proto)
		proto = "tcp";
	if (strcmp(proto, "tcp") != 0 && strcmp(proto, "udp") != 0 && strcmp(proto, "sctp") != 0)
		return plan_line_err(c, line, EINVAL, "invalid proto: %s", proto);
	if (ip && *ip) {
		unsigned char buf[16];
		size_t len = strlen(ip);

		if (ip[0] == '[' && ip[len - 1] == ']') {
			ip[len - 1] = '\0';
			ip++;
		}
		if (inet_pton(AF_INET, ip, buf) != 1 && inet_pton(AF_INET6, ip, buf) != 1)
			return plan_line_err(c, line, EINVAL, "invalid IP address: %s", ip);
	}
	if (port_range(cport, &lo, &hi) < 0)
		return plan_line_err(c, line, EINVAL, "invalid containerPort: %s", cport);
	if (hport && *hport) {
		if (port_range(hport, &hlo, &hhi) < 0)
			return plan_line_err(c, line, EINVAL, "invalid hostPort: %s", hport);
		if (hi - lo != hhi - hlo && hi != lo)
			return plan_line_err(c, line, EINVAL,
					     "invalid ranges specified for container and host Ports: %s and %s",
					     cport, hport);
	}
	for (unsigned p = lo; p <= hi; p++) {
		char buf[32];

		snprintf(buf, sizeof(buf), "%u/%s", p, proto);
		if (strv_add(out, buf) < 0)
			return plan_nomem(c);
	}
	return 0;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Go's %v of the nat.PortSet BuildKit records: "map[53/udp:{} 80/tcp:{}]",
 * each port once, keys in byte order as fmt sorts string map keys. */
static char *
expose_history(const struct strv *ports)
{
	struct strv sorted = { 0 };
	struct gbuf b;

	for (size_t i = 0; i < ports->n; i++)
		if (strv_add(&sorted, ports->v[i]) < 0) {
			strv_free(&sorted);
			return NULL;
		}
	qsort(sorted.v, sorted.n, sizeof(*sorted.v), cmp_str);
	gbuf_init(&b, 1u << 20);
	gbuf_puts(&b, "map[");
	for (size_t i = 0, w = 0; i < sorted.n; i++) {
		if (i && strcmp(sorted.v[i], sorted.v[i - 1]) == 0)
			continue;
		if (w++)
			gbuf_putc(&b, ' ');
		gbuf_puts(&b, sorted.v[i]);
		gbuf_puts(&b, ":{}");
	}
	gbuf_putc(&b, ']');
	strv_free(&sorted);
	return gbuf_detach(&b, NULL, NULL);
}

static int
dispatch_expose(struct ctx *c, struct stage *s, const struct plan_cmd *cmd)
{
	const struct df_node *n = cmd->n;
	struct strv raw = { 0 }, words = { 0 }, ports = { 0 };
	_cleanup_free_ char *shown = NULL;
	int r = 0;

	/* BuildKit sorts the words as written, then expands and splits them */
	for (size_t i = 0; i < n->n_args && r == 0; i++)
		if (strv_add(&raw, n->args[i]) < 0)
			r = plan_nomem(c);
	if (r == 0)
		qsort(raw.v, raw.n, sizeof(*raw.v), cmp_str);
	for (size_t i = 0; i < raw.n && r == 0; i++)
		r = plan_expand_words(c, cmd->line, raw.v[i], &s->env, &words);
	for (size_t i = 0; i < words.n && r == 0; i++)
		r = port_spec(c, cmd->line, words.v[i], &ports);
	for (size_t i = 0; i < ports.n && r == 0; i++)
		if (json_object_set_new(cfg_object(s, "ExposedPorts"), ports.v[i], json_object()) < 0)
			r = plan_nomem(c);
	if (r == 0) {
		shown = expose_history(&ports);
		r = shown ? plan_push_hist(c, s, -1, "EXPOSE %s", shown) : plan_nomem(c);
	}
	strv_free(&raw);
	strv_free(&words);
	strv_free(&ports);
	return r;
}

/* ---- HEALTHCHECK, ONBUILD ---- */

static int
dispatch_healthcheck(struct ctx *c, struct stage *s, const struct plan_cmd *cmd)
{
	static const struct instr_flag_def defs[] = {
		{ "interval", INSTR_FLAG_STRING, "" },
		{ "timeout", INSTR_FLAG_STRING, "" },
		{ "start-period", INSTR_FLAG_STRING, "" },
		{ "start-interval", INSTR_FLAG_STRING, "" },
		{ "retries", INSTR_FLAG_STRING, "" },
	};
	static const char *const fields[] = { "Interval", "Timeout", "StartPeriod", "StartInterval" };
	const struct df_node *n = cmd->n;
	struct instr_flag_value fv[ARRAY_SIZE(defs)];
	int64_t d[4] = { 0 };
	long retries = 0;
	struct strv test = { 0 };
	_cleanup_free_ char *shown = NULL;
	struct gbuf hb;
	char ds[40];
	json_t *hc;
	int r = 0;

	if (strcasecmp(n->args[0], "NONE") == 0) {
		if (strv_add(&test, "NONE") < 0)
			return plan_nomem(c);
	} else {
		r = instr_flags_parse((const char *const *) n->flags, n->n_flags, defs, ARRAY_SIZE(defs),
				      fv, c->err);
		for (size_t i = 0; i < 4 && r == 0; i++)
			r = instr_parse_interval(defs[i].name, fv[i].value, &d[i], c->err);
		if (r == 0 && *fv[4].value)
			retries = strtol(fv[4].value, NULL, 10);
		instr_flag_values_release(fv, ARRAY_SIZE(defs));
		if (r < 0)
			return plan_line_err(c, cmd->line, c->err->code, "%s", c->err->msg);
		if (strv_add(&test, n->json ? "CMD" : "CMD-SHELL") < 0)
			return plan_nomem(c);
		if (n->json) {
			for (size_t i = 1; i < n->n_args; i++)
				if (strv_add(&test, n->args[i]) < 0)
					r = plan_nomem(c);
		} else {
			struct strv rest = { n->args + 1, n->n_args - 1 };
			_cleanup_free_ char *j = strv_join(&rest, " ");

			if (!j || strv_add(&test, j) < 0)
				r = plan_nomem(c);
		}
	}
	hc = json_object();
	if (r == 0 && hc && json_object_set_new(hc, "Test", strv_json(test.v, test.n)) < 0)
		r = plan_line_err(c, cmd->line, EINVAL, "HEALTHCHECK: not valid UTF-8");
	for (size_t i = 0; i < 4 && r == 0 && hc; i++)
		if (d[i] && json_object_set_new(hc, fields[i], json_integer(d[i])) < 0)
			r = plan_nomem(c);
	if (r == 0 && hc && retries && json_object_set_new(hc, "Retries", json_integer(retries)) < 0)
		r = plan_nomem(c);
	if (r == 0 && (!hc || json_object_set_new(plan_cfg(s), "Healthcheck", json_incref(hc)) < 0))
		r = plan_nomem(c);
	json_decref(hc);
	if (r < 0) {
		strv_free(&test);
		return r;
	}
	/* fmt's %q of BuildKit 20.10's *HealthConfig: Test, Interval, Timeout,
	 * StartPeriod (it has no StartInterval) and Retries, the int as a rune */
	gbuf_init(&hb, 1u << 20);
	gbuf_puts(&hb, "&{[");
	for (size_t i = 0; i < test.n; i++) {
		if (i)
			gbuf_putc(&hb, ' ');
		gostr_quote(&hb, test.v[i], strlen(test.v[i]));
	}
	gbuf_putc(&hb, ']');
	strv_free(&test);
	for (size_t i = 0; i < 3; i++) {
		plan_go_duration(d[i], ds);
		gbuf_putc(&hb, ' ');
		gostr_quote(&hb, ds, strlen(ds));
	}
	gbuf_putc(&hb, ' ');
	go_quote_rune(&hb, retries);
	gbuf_putc(&hb, '}');
	shown = gbuf_detach(&hb, NULL, NULL);
	if (!shown)
		return plan_nomem(c);
	return plan_push_hist(c, s, -1, "HEALTHCHECK %s", shown);
}

char *
plan_onbuild_expression(const struct df_node *n)
{
	const char *o = n->original;
	struct gbuf b;

	/* the line without "ONBUILD", with its heredoc bodies (BuildKit's
	 * OnbuildCommand.Expression) */
	while (isspace((unsigned char) *o))
		o++;
	if (strncasecmp(o, "onbuild", 7) == 0)
		o += 7;
	while (isspace((unsigned char) *o))
		o++;
	gbuf_init(&b, 16u << 20);
	gbuf_puts(&b, o);
	for (size_t i = 0; i < n->n_heredocs; i++) {
		gbuf_putc(&b, '\n');
		gbuf_put(&b, n->heredocs[i].content, n->heredocs[i].content_len);
		gbuf_puts(&b, n->heredocs[i].name);
	}
	return gbuf_detach(&b, NULL, NULL);
}

static int
dispatch_onbuild(struct ctx *c, struct stage *s, const struct plan_cmd *cmd)
{
	json_t *cfg = plan_cfg(s), *ob = json_object_get(cfg, "OnBuild");
	char *expr = plan_onbuild_expression(cmd->n);

	if (!expr)
		return plan_nomem(c);
	if (!json_is_array(ob)) {
		ob = json_array();
		json_object_set_new(cfg, "OnBuild", ob);
	}
	if (json_array_append_new(ob, json_string(expr)) < 0) {
		free(expr);
		return plan_line_err(c, cmd->line, EINVAL, "ONBUILD: not valid UTF-8");
	}
	free(expr);
	/* BuildKit records no history entry for ONBUILD */
	return 0;
}

int
plan_dispatch(struct ctx *c, struct stage *s, const struct plan_cmd *cmd)
{
	const char *kw = cmd->n->keyword;

	if (strcmp(kw, "env") == 0)
		return dispatch_kv(c, s, cmd, true);
	if (strcmp(kw, "label") == 0)
		return dispatch_kv(c, s, cmd, false);
	if (strcmp(kw, "arg") == 0)
		return dispatch_arg(c, s, cmd);
	if (strcmp(kw, "run") == 0)
		return dispatch_run(c, s, cmd);
	if (strcmp(kw, "copy") == 0 || strcmp(kw, "add") == 0)
		return plan_copy(c, s, cmd, strcmp(kw, "add") == 0);
	if (strcmp(kw, "workdir") == 0)
		return dispatch_workdir(c, s, cmd);
	if (strcmp(kw, "cmd") == 0)
		return dispatch_command(c, s, cmd, false);
	if (strcmp(kw, "entrypoint") == 0)
		return dispatch_command(c, s, cmd, true);
	if (strcmp(kw, "shell") == 0)
		return dispatch_shell(c, s, cmd);
	if (strcmp(kw, "user") == 0)
		return dispatch_user(c, s, cmd);
	if (strcmp(kw, "stopsignal") == 0)
		return dispatch_stopsignal(c, s, cmd);
	if (strcmp(kw, "maintainer") == 0)
		return dispatch_maintainer(c, s, cmd);
	if (strcmp(kw, "volume") == 0)
		return dispatch_volume(c, s, cmd);
	if (strcmp(kw, "expose") == 0)
		return dispatch_expose(c, s, cmd);
	if (strcmp(kw, "healthcheck") == 0)
		return dispatch_healthcheck(c, s, cmd);
	if (strcmp(kw, "onbuild") == 0)
		return dispatch_onbuild(c, s, cmd);
	return plan_line_err(c, cmd->line, KILN_EPARSE, "unexpected %s inside a stage", cmd->n->keyword_raw);
}
