/* The outline module's reading of a Dockerfile: the parts of BuildKit's
 * parser and instruction layer that its AST does not keep for us.
 *
 * BuildKit's parser keeps the comment lines above each instruction
 * (Node.PrevComment), where descriptions come from; ours drops them, so
 * they are read again from the source with the parser's rules, using the
 * line numbers of the nodes. RUN --mount values are parsed as BuildKit's
 * instruction layer does (parseMount), with its messages. Stages are
 * split as instructions.Parse splits them, after the same checks
 * (instr_check()). */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "dockerfile.h"
#include "err.h"
#include "gostr.h"
#include "instructions.h"
#include "outline-internal.h"
#include "shell.h"

/* ---- memory ---- */

int
ol_oom(struct ol *o)
{
	return kiln_err_set(o->err, ENOMEM, "out of memory");
}

/* Hand p to the pool; NULL (and p freed) when that fails. */
void *
ol_keep(struct ol *o, void *p)
{
	if (!p)
		return NULL;
	if (o->n_pool == o->cap_pool) {
		size_t ncap = o->cap_pool ? o->cap_pool * 2 : 64;
		void **nv = realloc(o->pool, ncap * sizeof(*nv));

		if (!nv) {
			free(p);
			return NULL;
		}
		o->pool = nv;
		o->cap_pool = ncap;
	}
	o->pool[o->n_pool++] = p;
	return p;
}

const char *
ol_strndup(struct ol *o, const char *s, size_t n)
{
	return ol_keep(o, strndup(s, n));
}

const char *
ol_strdup(struct ol *o, const char *s)
{
	return ol_keep(o, strdup(s));
}

const char *
ol_printf(struct ol *o, const char *fmt, ...)
{
	va_list ap;
	char *s;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&s, fmt, ap);
	va_end(ap);
	return r < 0 ? NULL : ol_keep(o, s);
}

void *
ol_grow(void *p, size_t n, size_t size)
{
	if (n && (n & (n - 1)))
		return p;
	return realloc(p, (n ? n * 2 : 4) * size);
}

int
ol_strv_add(struct strv *e, const char *kv)
{
	if (OL_GROW(e->v, e->n) < 0)
		return -ENOMEM;
	e->v[e->n++] = kv;
	return 0;
}

int
ol_strv_setkv(struct ol *o, struct strv *e, const char *k, const char *v)
{
	const char *kv = ol_printf(o, "%s=%s", k, v);

	return kv ? ol_strv_add(e, kv) : -ENOMEM;
}

void
ol_capture_release(struct capture *c)
{
	free(c->all);
	free(c->used);
	free(c->secrets);
	free(c->ssh);
	ol_smap_release(&c->all_ix);
	ol_smap_release(&c->used_ix);
	ol_smap_release(&c->secrets_ix);
	ol_smap_release(&c->ssh_ix);
	memset(c, 0, sizeof(*c));
}

static size_t
smap_hash(const char *s)
{
	uint64_t h = 14695981039346656037ull;        /* FNV-1a */

	for (; *s; s++)
		h = (h ^ (unsigned char) *s) * 1099511628211ull;
	return (size_t) h;
}

static size_t
smap_slot(const struct smap *m, const char *key)
{
	size_t i = smap_hash(key) & (m->cap - 1);

	while (m->keys[i] && strcmp(m->keys[i], key) != 0)
		i = (i + 1) & (m->cap - 1);
	return i;
}

int
ol_smap_get(const struct smap *m, const char *key, size_t *ret_val)
{
	size_t i;

	if (!m->n)
		return 0;
	i = smap_slot(m, key);
	if (!m->keys[i])
		return 0;
	*ret_val = m->vals[i];
	return 1;
}

int
ol_smap_put(struct smap *m, const char *key, size_t val)
{
	size_t i;

	if (2 * (m->n + 1) > m->cap) {
		struct smap g = { .cap = m->cap ? m->cap * 2 : 16 };

		g.keys = calloc(g.cap, sizeof(*g.keys));
		g.vals = calloc(g.cap, sizeof(*g.vals));
		if (!g.keys || !g.vals) {
			ol_smap_release(&g);
			return -ENOMEM;
		}
		for (size_t k = 0; k < m->cap; k++)
			if (m->keys[k]) {
				i = smap_slot(&g, m->keys[k]);
				g.keys[i] = m->keys[k];
				g.vals[i] = m->vals[k];
			}
		g.n = m->n;
		ol_smap_release(m);
		*m = g;
	}
	i = smap_slot(m, key);
	if (!m->keys[i]) {
		m->keys[i] = key;
		m->n++;
	}
	m->vals[i] = val;
	return 0;
}

int
ol_smap_clone(struct smap *dst, const struct smap *src)
{
	struct smap c = { .cap = src->cap, .n = src->n };

	if (src->cap) {
		c.keys = malloc(src->cap * sizeof(*c.keys));
		c.vals = malloc(src->cap * sizeof(*c.vals));
		if (!c.keys || !c.vals) {
			ol_smap_release(&c);
			return -ENOMEM;
		}
		memcpy(c.keys, src->keys, src->cap * sizeof(*c.keys));
		memcpy(c.vals, src->vals, src->cap * sizeof(*c.vals));
	}
	*dst = c;
	return 0;
}

void
ol_smap_release(struct smap *m)
{
	free(m->keys);
	free(m->vals);
	memset(m, 0, sizeof(*m));
}

/* ---- messages ---- */

int
ol_loc_err(struct ol *o, const struct loc *l, int code, const char *fmt, ...)
{
	char msg[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (!l || !l->start)
		return kiln_err_set(o->err, code, "%s: %s", o->filename, msg);
	return kiln_err_set(o->err, code, "%s:%d: %s", o->filename, l->start, msg);
}

/* An error some callee left in o->err, given a location. */
int
ol_loc_wrap(struct ol *o, const struct loc *l)
{
	char msg[sizeof(o->err->msg)];

	if (o->err->code == ENOMEM)
		return -ENOMEM;
	snprintf(msg, sizeof(msg), "%s", o->err->msg);
	return ol_loc_err(o, l, o->err->code ? o->err->code : EINVAL, "%s", msg);
}

struct loc
ol_node_loc(const struct df_node *n)
{
	return (struct loc) { n->start_line, n->end_line };
}

/* ---- comments ---- */

static bool
re_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r';
}

static bool
re_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* A parser directive line ("# syntax=...", "# escape=...", "# check=..."),
 * the line's leading blanks and line end already removed. */
static bool
is_directive(const char *s, size_t n)
{
	size_t p = 1, name;
	char lname[8];

	if (n < 1 || s[0] != '#')
		return false;
	while (p < n && re_space(s[p]))
		p++;
	if (p >= n || !re_alpha(s[p]))
		return false;
	name = p;
	while (p < n && (re_alpha(s[p]) || (s[p] >= '0' && s[p] <= '9')))
		p++;
	if (p - name >= sizeof(lname))
		return false;
	for (size_t i = 0; i < p - name; i++)
		lname[i] = (char) (s[name + i] | 0x20);
	lname[p - name] = '\0';
	while (p < n && re_space(s[p]))
		p++;
	if (p >= n || s[p] != '=' || p + 1 >= n)
		return false;
	return strcmp(lname, "syntax") == 0 || strcmp(lname, "escape") == 0 ||
	       strcmp(lname, "check") == 0;
}

/* Node.PrevComment as BuildKit's parser fills it: every comment line read
 * between the previous instruction and this one, "#" and blanks trimmed
 * (an empty comment "#" forgets the ones before it), parser directives
 * left out. Blank lines do not separate. Lines inside an instruction
 * (continuations, heredoc bodies) never count. Quirk kept: the text is
 * the line minus its first byte, trimmed, so "  # x" gives "# x". */
static int
node_comments(struct ol *o)
{
	const struct df_ast *ast = o->in->ast;
	const char *buf = o->in->dockerfile;
	size_t len = o->in->dockerfile_len, pos = 0;
	_cleanup_free_ const char **cur = NULL;      /* pooled when a node takes it */
	size_t n_cur = 0, k = 0;
	bool directives = true;
	int line = 0;

	o->comments = ol_keep(o, calloc(ast->n_nodes + 1, sizeof(*o->comments)));
	o->n_comments = ol_keep(o, calloc(ast->n_nodes + 1, sizeof(*o->n_comments)));
	if (!o->comments || !o->n_comments)
		return ol_oom(o);
	while (pos < len && k < ast->n_nodes) {
		const char *s = buf + pos, *nl = memchr(s, '\n', len - pos);
		size_t n = nl ? (size_t) (nl - s) + 1 : len - pos;

		pos += n;
		line++;
		if (line == 1 && n >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0) {
			s += 3;
			n -= 3;
		}
		if (line >= ast->nodes[k].start_line) {
			/* the instruction and its own lines */
			directives = false;
			if (n_cur) {
				o->comments[k] = ol_keep(o, STEAL_PTR(cur));
				if (!o->comments[k])
					return ol_oom(o);
				o->n_comments[k] = n_cur;
				n_cur = 0;
			}
			while (pos < len && line < ast->nodes[k].end_line) {
				nl = memchr(buf + pos, '\n', len - pos);
				pos += nl ? (size_t) (nl - (buf + pos)) + 1 : len - pos;
				line++;
			}
			k++;
			continue;
		}
		if (df_is_comment(s, n)) {
			size_t t = df_trim_newline(s, n), lead, tail;
			const char *c = s + 1;
			size_t cl = t ? t - 1 : 0;

			lead = gostr_space_prefix(c, cl);
			c += lead;
			cl -= lead;
			tail = gostr_space_suffix(c, cl);
			cl -= tail;
			if (cl == 0) {
				n_cur = 0;
			} else {
				const char *text = ol_strndup(o, c, cl);

				if (!text || OL_GROW(cur, n_cur) < 0)
					return ol_oom(o);
				cur[n_cur++] = text;
			}
		}
		if (directives) {
			size_t t = df_trim_newline(s, n), lead = gostr_space_prefix(s, t);

			if (is_directive(s + lead, t - lead)) {
				if (df_is_comment(s, n) && n_cur)
					n_cur--;
			} else {
				directives = false;
			}
		}
	}
	return 0;
}

/* getComment: the first comment line that starts with "NAME ", without it. */
const char *
ol_get_comment(const char *const *comments, size_t n, const char *name)
{
	size_t nl;

	if (!name || !*name)
		return "";
	nl = strlen(name);
	for (size_t i = 0; i < n; i++)
		if (strncmp(comments[i], name, nl) == 0 && comments[i][nl] == ' ')
			return comments[i] + nl + 1;
	return "";
}

/* ---- RUN --mount ---- */

static const char *const mount_type_names[] = { "bind", "cache", "tmpfs", "secret", "ssh" };

/* One record of encoding/csv with its default settings. Fields are
 * pooled. */
static int
csv_fields(struct ol *o, const char *s, const char ***ret, size_t *ret_n, const char **ret_msg)
{
	const char **v = NULL;
	size_t n = 0;
	struct gbuf f;

	gbuf_init(&f, strlen(s) + 1);
	for (;;) {
		const char *text;

		gbuf_reset(&f);
		if (*s == '"') {
			s++;
			for (;;) {
				if (!*s) {
					*ret_msg = "extraneous or missing \" in quoted-field";
					goto fail;
				}
				if (*s == '"') {
					if (s[1] == '"') {
						gbuf_putc(&f, '"');
						s += 2;
						continue;
					}
					s++;
					break;
				}
				gbuf_putc(&f, *s++);
			}
			if (*s && *s != ',') {
				*ret_msg = "extraneous or missing \" in quoted-field";
				goto fail;
			}
		} else {
			while (*s && *s != ',') {
				if (*s == '"') {
					*ret_msg = "bare \" in non-quoted-field";
					goto fail;
				}
				gbuf_putc(&f, *s++);
			}
		}
		text = ol_strndup(o, f.data ? f.data : "", f.len);
		if (!text || OL_GROW(v, n) < 0 || f.err)
			goto fail_oom;
		v[n++] = text;
		if (!*s)
			break;
		s++;                    /* ',' */
	}
	gbuf_release(&f);
	*ret = ol_keep(o, v);
	if (!*ret)
		return -ENOMEM;
	*ret_n = n;
	return 0;
fail_oom:
	*ret_msg = NULL;
fail:
	gbuf_release(&f);
	free(v);
	return *ret_msg ? -EINVAL : -ENOMEM;
}

static int
parse_bool(const char *s, bool *ret)
{
	static const char *const t[] = { "1", "t", "T", "TRUE", "true", "True" };
	static const char *const f[] = { "0", "f", "F", "FALSE", "false", "False" };

	for (size_t i = 0; i < 6; i++) {
		if (strcmp(s, t[i]) == 0)
			return *ret = true, 0;
		if (strcmp(s, f[i]) == 0)
			return *ret = false, 0;
	}
	return -EINVAL;
}

static bool
parse_uint(const char *s, int base, unsigned long long max)
{
	char *end;
	unsigned long long v;

	if (!*s || *s == '-' || *s == '+' || isspace((unsigned char) *s))
		return false;
	errno = 0;
	v = strtoull(s, &end, base);
	return !*end && errno == 0 && v <= max;
}

/* parseMount. With env NULL (parse time) only "from" is looked at, and a
 * variable in it is an error; with env every value is expanded first.
 * Messages are BuildKit's; the caller adds the location. */
int
ol_parse_mount(struct ol *o, const char *val, const struct strv *env, struct mount *m)
{
	const char **fields;
	const char *msg = NULL;
	size_t n;
	int r;

	memset(m, 0, sizeof(*m));
	r = csv_fields(o, val, &fields, &n, &msg);
	if (r == -ENOMEM)
		return ol_oom(o);
	if (r < 0)
		return kiln_err_set(o->err, EINVAL, "failed to parse csv mounts: %s", msg);
	for (size_t i = 0; i < n; i++) {
		const char *field = fields[i], *eq = strchr(field, '=');
		const char *value = eq ? eq + 1 : "";
		char key[32];
		size_t kl = eq ? (size_t) (eq - field) : strlen(field);
		bool b;

		if (kl >= sizeof(key))
			kl = sizeof(key) - 1;
		for (size_t j = 0; j < kl; j++)
			key[j] = (char) tolower((unsigned char) field[j]);
		key[kl] = '\0';
		if (!eq) {
			if (!env)
				continue;
			if (strcmp(key, "readonly") == 0 || strcmp(key, "ro") == 0 ||
			    strcmp(key, "readwrite") == 0 || strcmp(key, "rw") == 0)
				continue;
			if (strcmp(key, "required") == 0) {
				if (m->type != MT_SECRET && m->type != MT_SSH)
					return kiln_err_set(o->err, EINVAL,
							    "unexpected key '%s' for mount type '%s'", key,
							    mount_type_names[m->type]);
				m->required = true;
				continue;
			}
			return kiln_err_set(o->err, EINVAL, "invalid field '%s' must be a key=value pair",
					    field);
		}
		if (!env) {
			if (strcmp(key, "from") != 0)
				continue;
			for (const char *p = value; *p; p++)
				if (p[0] == '$' && p[1] && p[1] != '\n')
					return kiln_err_set(o->err, EINVAL,
							    "'%s' doesn't support variable expansion, "
							    "define alias stage instead", key);
			m->from = value;
			continue;
		}
		{
			struct shell_env se = { env->v, env->n };
			char *x = NULL;

			r = shell_process_word(value, o->escape, &se, &x, o->err);
			if (r < 0)
				return r;
			value = ol_keep(o, x);
			if (!value)
				return ol_oom(o);
		}
		if (strcmp(key, "type") == 0) {
			size_t t;

			for (t = 0; t < 5; t++)
				if (strcasecmp(value, mount_type_names[t]) == 0)
					break;
			if (t == 5)
				return kiln_err_set(o->err, EINVAL, "unsupported mount type \"%s\"", value);
			m->type = (enum mount_type) t;
		} else if (strcmp(key, "from") == 0) {
			m->from = value;
		} else if (strcmp(key, "source") == 0 || strcmp(key, "src") == 0) {
			m->source = value;
		} else if (strcmp(key, "target") == 0 || strcmp(key, "dst") == 0 ||
			   strcmp(key, "destination") == 0) {
			m->target = value;
		} else if (strcmp(key, "readonly") == 0 || strcmp(key, "ro") == 0 ||
			   strcmp(key, "readwrite") == 0 || strcmp(key, "rw") == 0) {
			if (parse_bool(value, &b) < 0)
				return kiln_err_set(o->err, EINVAL, "invalid value for %s: %s", key, value);
		} else if (strcmp(key, "required") == 0) {
			if (m->type != MT_SECRET && m->type != MT_SSH)
				return kiln_err_set(o->err, EINVAL, "unexpected key '%s' for mount type '%s'",
						    key, mount_type_names[m->type]);
			if (parse_bool(value, &m->required) < 0)
				return kiln_err_set(o->err, EINVAL, "invalid value for %s: %s", key, value);
		} else if (strcmp(key, "size") == 0) {
			if (m->type != MT_TMPFS)
				return kiln_err_set(o->err, EINVAL, "unexpected key '%s' for mount type '%s'",
						    key, mount_type_names[m->type]);
		} else if (strcmp(key, "id") == 0) {
			m->id = value;
		} else if (strcmp(key, "sharing") == 0) {
			if (strcasecmp(value, "shared") != 0 && strcasecmp(value, "private") != 0 &&
			    strcasecmp(value, "locked") != 0)
				return kiln_err_set(o->err, EINVAL, "unsupported sharing value \"%s\"", value);
			m->sharing = value;
		} else if (strcmp(key, "mode") == 0) {
			if (!parse_uint(value, 8, 0xffffffffull))
				return kiln_err_set(o->err, EINVAL, "invalid value %s for mode", value);
			m->has_mode = true;
		} else if (strcmp(key, "uid") == 0 || strcmp(key, "gid") == 0) {
			if (!parse_uint(value, 10, 0xffffffffull))
				return kiln_err_set(o->err, EINVAL, "invalid value %s for %s", value, key);
			if (key[0] == 'u')
				m->has_uid = true;
			else
				m->has_gid = true;
		} else if (strcmp(key, "env") != 0) {
			return kiln_err_set(o->err, EINVAL, "unexpected key '%s' in '%s'", key, field);
		}
	}
	/* validateMount */
	if (m->type != MT_SECRET && m->type != MT_SSH && m->type != MT_CACHE) {
		if (m->has_mode || m->has_uid || m->has_gid)
			return kiln_err_set(o->err, EINVAL, "%s not allowed for \"%s\" type mounts",
					    m->has_mode ? "mode" : m->has_uid ? "uid" : "gid",
					    mount_type_names[m->type]);
	}
	if (m->type == MT_SECRET) {
		if (m->from && *m->from)
			return kiln_err_set(o->err, EINVAL, "secret mount should not have a from");
		if (m->sharing)
			return kiln_err_set(o->err, EINVAL, "secret mount should not define sharing");
		if (!(m->source && *m->source) && !(m->target && *m->target) && !(m->id && *m->id))
			return kiln_err_set(o->err, EINVAL,
					    "invalid secret mount. one of source, target required");
		if (m->source && *m->source && m->id && *m->id)
			return kiln_err_set(o->err, EINVAL, "both source and id can't be set");
	}
	if (m->sharing && m->type != MT_CACHE)
		return kiln_err_set(o->err, EINVAL, "invalid cache sharing set for %s mount",
				    mount_type_names[m->type]);
	return 0;
}

/* The --mount values of a RUN, in order. */
size_t
ol_mount_flags(const struct df_node *n, const char **out, size_t max)
{
	size_t k = 0;

	for (size_t i = 0; i < n->n_flags && k < max; i++) {
		const char *f = n->flags[i];

		if (strcmp(f, "--") == 0)
			break;
		if (strncmp(f, "--mount=", 8) == 0)
			out[k++] = f + 8;
	}
	return k;
}

/* ---- stages (instructions.Parse) ---- */

int
ol_find_stage(const struct ol *o, const char *name, size_t limit)
{
	char lower[256];
	size_t i;

	for (i = 0; name[i] && i < sizeof(lower) - 1; i++)
		lower[i] = (char) tolower((unsigned char) name[i]);
	lower[i] = '\0';
	if (name[i])
		return -1;
	for (i = 0; i < limit && i < o->n_st; i++)
		if (o->st[i].name && strcmp(o->st[i].name, lower) == 0)
			return (int) i;
	return -1;
}

int
ol_add_cmd(struct ol *o, struct stage *s, const struct df_node *n, struct loc l,
	   const char *const *comments, size_t n_comments)
{
	if (OL_GROW(s->cmds, s->n_cmds) < 0)
		return ol_oom(o);
	s->cmds[s->n_cmds++] = (struct cmd) { n, l, comments, n_comments };
	return 0;
}

static int
parse_stages(struct ol *o)
{
	const struct df_ast *ast = o->in->ast;
	int r;

	r = node_comments(o);
	if (r < 0)
		return r;
	for (size_t i = 0; i < ast->n_nodes; i++) {
		const struct df_node *n = &ast->nodes[i];
		struct loc l = ol_node_loc(n);

		r = instr_check(n, o->err);
		if (r < 0)
			return ol_loc_wrap(o, &l);
		if (strcmp(n->keyword, "run") == 0) {
			const char *mv[MAX_MOUNTS];
			size_t nm = ol_mount_flags(n, mv, MAX_MOUNTS);

			for (size_t k = 0; k < nm; k++) {
				struct mount m;

				r = ol_parse_mount(o, mv[k], NULL, &m);
				if (r < 0)
					return ol_loc_wrap(o, &l);
			}
		}
		if (o->n_st == 0 && strcmp(n->keyword, "arg") == 0) {
			if (OL_GROW(o->meta, o->n_meta) < 0)
				return ol_oom(o);
			o->meta[o->n_meta++] = n;
			continue;
		}
		if (strcmp(n->keyword, "from") == 0) {
			struct stage *s;
			const char *plat = NULL;

			if (OL_GROW(o->st, o->n_st) < 0)
				return ol_oom(o);
			s = &o->st[o->n_st];
			memset(s, 0, sizeof(*s));
			o->n_st++;
			s->from = n;
			s->loc = l;
			s->base = -1;
			if (n->n_args == 3) {
				char *lower = strdup(n->args[2]);

				if (!ol_keep(o, lower))
					return ol_oom(o);
				for (char *p = lower; *p; p++)
					*p = (char) tolower((unsigned char) *p);
				s->name = lower;
			}
			s->stage_name = s->name ? s->name : ol_printf(o, "stage-%zu", o->n_st - 1);
			s->comment = ol_get_comment(o->comments[i], o->n_comments[i], s->name);
			if (df_node_flag(n, "platform", &plat) && plat && *plat)
				s->platform_raw = plat;
			if (!s->stage_name)
				return ol_oom(o);
			continue;
		}
		if (o->n_st == 0)
			return ol_loc_err(o, &l, EINVAL, "no build stage in current context");
		r = ol_add_cmd(o, &o->st[o->n_st - 1], n, l, o->comments[i], o->n_comments[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- the module state ---- */

void
ol_release(struct ol *o)
{
	for (size_t i = 0; i < o->n_st; i++) {
		free(o->st[i].cmds);
		free(o->st[i].deps);
		free(o->st[i].dep_locs);
		ol_capture_release(&o->st[i].oc);
	}
	free(o->st);
	free(o->meta);
	free(o->global.v);
	ol_smap_release(&o->global_ix);
	ol_capture_release(&o->goc);
	for (size_t i = 0; i < o->n_pool; i++)
		free(o->pool[i]);
	free(o->pool);
}

int
ol_init(struct ol *o, const struct outline_input *in, struct kiln_err *err)
{
	memset(o, 0, sizeof(*o));
	o->in = in;
	o->err = err;
	o->filename = in->filename ? in->filename : "Dockerfile";
	o->escape = in->ast->escape ? in->ast->escape : '\\';
	return parse_stages(o);
}
