/* .dockerignore matching with moby/patternmatcher's semantics.
 *
 * Upstream classifies each cleaned pattern: an exact string, a prefix
 * (the pattern ends in "**"), a suffix (it starts with "**"), or else a
 * regular expression that it builds from the pattern text ('*' becomes
 * [^/]*, '?' [^/], "**" (.*\/)?, brackets are copied as they are) and
 * compiles lazily on first use.
 * We build the very same expression text and run it on a small Thompson
 * NFA that understands the part of Go's RE2 syntax such text can contain
 * (literals, '.', classes with ranges, POSIX and Perl classes, the one
 * optional group, ^ $ \A \z \b \B, * + ?). Doing it this way keeps the odd
 * cases identical to BuildKit's: "[*]" or "a^b" mean what they mean there,
 * and an expression that Go would refuse (a reversed range "[z-a]")
 * is reported as a bad pattern when a match first reaches it.
 *
 * Not supported, reported as bad patterns: \p{..} Unicode classes, \Q..\E
 * and \C escapes, which no sane .dockerignore contains.
 *
 * Invariants: a compiled struct ignore never changes; matching allocates
 * only its per-call NFA state and runs in O(pattern * path). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "err.h"
#include "gostr.h"
#include "ignore.h"

#define IGNORE_MAX_LINE 65535u

enum match_type { M_EXACT, M_PREFIX, M_SUFFIX, M_REGEXP };

enum { A_LIT, A_ANY, A_CLASS };                          /* atoms */
enum { OP_RUNE, OP_SPLIT, OP_ASSERT, OP_MATCH };         /* NFA instructions */
enum { AS_BEGIN, AS_END, AS_WORD, AS_NOT_WORD };         /* assertions */

struct urange {
	uint32_t lo, hi;
};

struct cls {
	struct urange *r;
	size_t n, cap;
	bool neg;
};

struct inst {
	uint8_t op;
	uint8_t atom;           /* OP_RUNE: A_*; OP_ASSERT: AS_* */
	uint32_t rune;          /* A_LIT */
	size_t cls;             /* A_CLASS: index into prog.cls */
	size_t x, y;            /* next; OP_SPLIT: both branches */
};

struct prog {
	struct inst *in;
	size_t n, cap;
	struct cls *cls;
	size_t n_cls;
};

struct pattern {
	char *text;             /* cleaned, without the leading '!' */
	bool exclusion;
	enum match_type type;
	bool bad;               /* Go's regexp.Compile would fail */
	size_t n_dirs;
	struct prog prog;
};

struct ignore {
	struct pattern *p;
	size_t n;
	bool exclusions;
};

/* ---- filepath.Clean ---- */

char *
ignore_clean_path(const char *path)
{
	size_t n = strlen(path), r = 0, w = 0, dotdot = 0;
	bool rooted = n > 0 && path[0] == '/';
	char *out;

	if (n == 0)
		return strdup(".");
	out = malloc(n + 2);
	if (!out)
		return NULL;
	if (rooted) {
		out[w++] = '/';
		r = dotdot = 1;
	}
	while (r < n) {
		if (path[r] == '/') {
			r++;
		} else if (path[r] == '.' && (r + 1 == n || path[r + 1] == '/')) {
			r++;
		} else if (path[r] == '.' && path[r + 1] == '.' &&
			   (r + 2 == n || path[r + 2] == '/')) {
			r += 2;
			if (w > dotdot) {
				/* drop the last element */
				w--;
				while (w > dotdot && out[w] != '/')
					w--;
			} else if (!rooted) {
				if (w > 0)
					out[w++] = '/';
				out[w++] = '.';
				out[w++] = '.';
				dotdot = w;
			}
		} else {
			if ((rooted && w != 1) || (!rooted && w != 0))
				out[w++] = '/';
			while (r < n && path[r] != '/')
				out[w++] = path[r++];
		}
	}
	if (w == 0)
		out[w++] = '.';
	out[w] = '\0';
	return out;
}

/* ---- filepath.Match syntax check ---- */

/* getEsc: one (possibly escaped) rune of a [class]. */
static int
get_esc(const char **chunk, const char *end, uint32_t *ret)
{
	const char *c = *chunk;
	size_t w;

	if (c >= end || *c == '-' || *c == ']')
		return -1;
	if (*c == '\\') {
		c++;
		if (c >= end)
			return -1;
	}
	w = gostr_decode(c, (size_t) (end - c), ret);
	if (*ret == GOSTR_RUNE_ERROR && w == 1)
		return -1;
	c += w;
	if (c >= end)
		return -1;
	*chunk = c;
	return 0;
}

/* Would filepath.Match(pattern, ".") report ErrBadPattern? It checks the
 * whole pattern, chunk by chunk, as matchChunk parses it. */
static bool
match_syntax_ok(const char *p)
{
	const char *end = p + strlen(p);

	while (p < end) {
		const char *chunk, *cend;
		bool inrange = false;

		while (p < end && *p == '*')
			p++;
		chunk = p;
		for (; p < end; p++) {
			if (*p == '\\') {
				if (p + 1 < end)
					p++;
			} else if (*p == '[') {
				inrange = true;
			} else if (*p == ']') {
				inrange = false;
			} else if (*p == '*' && !inrange) {
				break;
			}
		}
		cend = p;
		while (chunk < cend) {
			uint32_t lo, hi;
			size_t nrange = 0;

			if (*chunk == '[') {
				chunk++;
				if (chunk < cend && *chunk == '^')
					chunk++;
				for (;;) {
					if (chunk < cend && *chunk == ']' && nrange > 0) {
						chunk++;
						break;
					}
					if (get_esc(&chunk, cend, &lo) < 0)
						return false;
					if (*chunk == '-') {
						chunk++;
						if (get_esc(&chunk, cend, &hi) < 0)
							return false;
					}
					nrange++;
				}
			} else if (*chunk == '\\') {
				chunk++;
				if (chunk >= cend)
					return false;
				chunk++;
			} else {
				chunk++;
			}
		}
	}
	return true;
}

/* ---- the regexp text, as patternmatcher's compile() writes it ---- */

static bool
should_escape(uint32_t r)
{
	return r < 0x80 && strchr(".+()|{}$", (int) r) && r != 0;
}

static int
build_regexp(struct pattern *pt, struct gbuf *re)
{
	const char *s = pt->text;
	size_t n = strlen(s), pos = 0, i;
	enum match_type type = M_EXACT;
	uint32_t r, nx;

	/* text/scanner skips a BOM at the start */
	if (n >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0)
		pos = 3;
	gbuf_putc(re, '^');
	for (i = 0; pos < n; i++) {
		pos += gostr_decode(s + pos, n - pos, &r);
		nx = 0;
		if (pos < n)
			(void) gostr_decode(s + pos, n - pos, &nx);
		if (r == '*') {
			if (pos < n && nx == '*') {
				pos++;
				/* "**" then "/" is "**" */
				if (pos < n && s[pos] == '/')
					pos++;
				if (pos >= n) {
					if (type == M_EXACT) {
						type = M_PREFIX;
					} else {
						gbuf_put(re, ".*", 2);
						type = M_REGEXP;
					}
				} else {
					gbuf_puts(re, "(.*/)?");
					type = M_REGEXP;
				}
				if (i == 0)
					type = M_SUFFIX;
			} else {
				gbuf_puts(re, "[^/]*");
				type = M_REGEXP;
			}
		} else if (r == '?') {
			gbuf_puts(re, "[^/]");
			type = M_REGEXP;
		} else if (should_escape(r)) {
			gbuf_putc(re, '\\');
			gbuf_put_rune(re, r);
		} else if (r == '\\') {
			if (pos < n) {
				gbuf_putc(re, '\\');
				pos += gostr_decode(s + pos, n - pos, &r);
				gbuf_put_rune(re, r);
				type = M_REGEXP;
			} else {
				gbuf_putc(re, '\\');
			}
		} else if (r == '[' || r == ']') {
			gbuf_put_rune(re, r);
			type = M_REGEXP;
		} else {
			gbuf_put_rune(re, r);
		}
	}
	gbuf_putc(re, '$');
	pt->type = type;
	return re->err;
}

/* ---- a small RE2 subset ---- */

struct re_parser {
	const char *s;
	size_t n, pos;
	struct prog *prog;
	int err;
};

static bool
re_peek(struct re_parser *p, uint32_t *r, size_t *w)
{
	if (p->pos >= p->n)
		return false;
	*w = gostr_decode(p->s + p->pos, p->n - p->pos, r);
	return true;
}

static int
cls_add(struct cls *c, uint32_t lo, uint32_t hi)
{
	if (c->n == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 8;
		struct urange *v = realloc(c->r, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		c->r = v;
		c->cap = cap;
	}
	c->r[c->n].lo = lo;
	c->r[c->n].hi = hi;
	c->n++;
	return 0;
}

/* Add table[0..n) to c, or its complement over all runes when neg. */
static int
cls_add_table(struct cls *c, const struct urange *t, size_t n, bool neg)
{
	uint32_t next = 0;
	size_t i;
	int r = 0;

	if (!neg) {
		for (i = 0; i < n && r == 0; i++)
			r = cls_add(c, t[i].lo, t[i].hi);
		return r;
	}
	for (i = 0; i < n && r == 0; i++) {
		if (t[i].lo > next)
			r = cls_add(c, next, t[i].lo - 1);
		next = t[i].hi + 1;
	}
	if (r == 0 && next <= 0x10ffff)
		r = cls_add(c, next, 0x10ffff);
	return r;
}

static const struct urange perl_d[] = { { '0', '9' } };
static const struct urange perl_s[] = { { '\t', '\n' }, { '\f', '\r' }, { ' ', ' ' } };
static const struct urange perl_w[] = { { '0', '9' }, { 'A', 'Z' }, { '_', '_' }, { 'a', 'z' } };

static const struct {
	const char *name;
	struct urange r[4];
	size_t n;
} posix_classes[] = {
	{ "alnum", { { '0', '9' }, { 'A', 'Z' }, { 'a', 'z' } }, 3 },
	{ "alpha", { { 'A', 'Z' }, { 'a', 'z' } }, 2 },
	{ "ascii", { { 0, 0x7f } }, 1 },
	{ "blank", { { '\t', '\t' }, { ' ', ' ' } }, 2 },
	{ "cntrl", { { 0, 0x1f }, { 0x7f, 0x7f } }, 2 },
	{ "digit", { { '0', '9' } }, 1 },
	{ "graph", { { '!', '~' } }, 1 },
	{ "lower", { { 'a', 'z' } }, 1 },
	{ "print", { { ' ', '~' } }, 1 },
	{ "punct", { { '!', '/' }, { ':', '@' }, { '[', '`' }, { '{', '~' } }, 4 },
	{ "space", { { '\t', '\r' }, { ' ', ' ' } }, 2 },
	{ "upper", { { 'A', 'Z' } }, 1 },
	{ "word", { { '0', '9' }, { 'A', 'Z' }, { '_', '_' }, { 'a', 'z' } }, 4 },
	{ "xdigit", { { '0', '9' }, { 'A', 'F' }, { 'a', 'f' } }, 3 },
};

#define N_POSIX (sizeof(posix_classes) / sizeof(posix_classes[0]))

/* \d \D \s \S \w \W at p->s[p->pos] ('\\'): add to c and return 1. */
static int
perl_class(struct re_parser *p, struct cls *c)
{
	const struct urange *t;
	size_t n;
	char k;

	if (p->pos + 1 >= p->n || p->s[p->pos] != '\\')
		return 0;
	k = p->s[p->pos + 1];
	switch (k | 0x20) {
	case 'd': t = perl_d; n = 1; break;
	case 's': t = perl_s; n = 3; break;
	case 'w': t = perl_w; n = 4; break;
	default: return 0;
	}
	p->pos += 2;
	return cls_add_table(c, t, n, k >= 'A' && k <= 'Z') < 0 ? -ENOMEM : 1;
}

static int
hexval(uint32_t c)
{
	if (c >= '0' && c <= '9')
		return (int) (c - '0');
	if (c >= 'a' && c <= 'f')
		return (int) (c - 'a' + 10);
	if (c >= 'A' && c <= 'F')
		return (int) (c - 'A' + 10);
	return -1;
}

/* parseEscape: the rune an escape at p->s[p->pos] ('\\') stands for. */
static int
parse_escape(struct re_parser *p, uint32_t *ret)
{
	uint32_t c, v = 0;
	size_t w;
	int i, h, h2;

	p->pos++;
	if (!re_peek(p, &c, &w))
		return -1;      /* trailing backslash */
	p->pos += w;
	if (c < 0x80 && !((c | 0x20) >= 'a' && (c | 0x20) <= 'z') && !(c >= '0' && c <= '9')) {
		*ret = c;       /* escaped punctuation is itself */
		return 0;
	}
	switch (c) {
	case '1': case '2': case '3': case '4': case '5': case '6': case '7':
		if (p->pos >= p->n || p->s[p->pos] < '0' || p->s[p->pos] > '7')
			return -1;      /* a backreference */
		/* fall through */
	case '0':
		v = c - '0';
		for (i = 1; i < 3 && p->pos < p->n; i++) {
			if (p->s[p->pos] < '0' || p->s[p->pos] > '7')
				break;
			v = v * 8 + (uint32_t) (p->s[p->pos++] - '0');
		}
		*ret = v;
		return 0;
	case 'x':
		if (!re_peek(p, &c, &w))
			return -1;
		p->pos += w;
		if (c == '{') {
			int nhex = 0;

			for (;;) {
				if (!re_peek(p, &c, &w))
					return -1;
				p->pos += w;
				if (c == '}')
					break;
				h = hexval(c);
				if (h < 0)
					return -1;
				v = v * 16 + (uint32_t) h;
				if (v > 0x10ffff)
					return -1;
				nhex++;
			}
			if (nhex == 0)
				return -1;
			*ret = v;
			return 0;
		}
		h = hexval(c);
		if (!re_peek(p, &c, &w))
			return -1;
		p->pos += w;
		h2 = hexval(c);
		if (h < 0 || h2 < 0)
			return -1;
		*ret = (uint32_t) (h * 16 + h2);
		return 0;
	case 'a': *ret = '\a'; return 0;
	case 'f': *ret = '\f'; return 0;
	case 'n': *ret = '\n'; return 0;
	case 'r': *ret = '\r'; return 0;
	case 't': *ret = '\t'; return 0;
	case 'v': *ret = '\v'; return 0;
	}
	return -1;
}

static int
class_char(struct re_parser *p, uint32_t *ret)
{
	size_t w;

	if (p->pos >= p->n)
		return -1;      /* missing ] */
	if (p->s[p->pos] == '\\')
		return parse_escape(p, ret);
	w = gostr_decode(p->s + p->pos, p->n - p->pos, ret);
	p->pos += w;
	return 0;
}

/* parseClass at p->s[p->pos] == '['. Returns the class index. */
static int
parse_class(struct re_parser *p, size_t *ret)
{
	struct prog *g = p->prog;
	struct cls c = { 0 };
	bool first = true;
	struct cls *nc;
	int r;

	p->pos++;
	if (p->pos < p->n && p->s[p->pos] == '^') {
		c.neg = true;
		p->pos++;
	}
	while (p->pos >= p->n || p->s[p->pos] != ']' || first) {
		uint32_t lo, hi;

		if (p->pos >= p->n)
			goto out_bad;
		first = false;
		if (p->n - p->pos > 2 && p->s[p->pos] == '[' && p->s[p->pos + 1] == ':') {
			const char *end = memmem(p->s + p->pos + 2, p->n - p->pos - 2, ":]", 2);

			if (end) {
				const char *name = p->s + p->pos + 2;
				size_t len = (size_t) (end - name), i;
				bool neg = len > 0 && name[0] == '^';

				if (neg) {
					name++;
					len--;
				}
				for (i = 0; i < N_POSIX; i++)
					if (strlen(posix_classes[i].name) == len &&
					    memcmp(posix_classes[i].name, name, len) == 0)
						break;
				if (i == N_POSIX)
					goto out_bad;
				r = cls_add_table(&c, posix_classes[i].r, posix_classes[i].n, neg);
				if (r < 0)
					goto out_nomem;
				p->pos = (size_t) (end + 2 - p->s);
				continue;
			}
		}
		if (p->n - p->pos >= 2 && p->s[p->pos] == '\\' &&
		    (p->s[p->pos + 1] == 'p' || p->s[p->pos + 1] == 'P'))
			goto out_bad;   /* Unicode classes: not supported */
		r = perl_class(p, &c);
		if (r < 0)
			goto out_nomem;
		if (r > 0)
			continue;
		if (class_char(p, &lo) < 0)
			goto out_bad;
		hi = lo;
		/* [a-] is a or '-' */
		if (p->n - p->pos >= 2 && p->s[p->pos] == '-' && p->s[p->pos + 1] != ']') {
			p->pos++;
			if (class_char(p, &hi) < 0 || hi < lo)
				goto out_bad;
		}
		if (cls_add(&c, lo, hi) < 0)
			goto out_nomem;
	}
	p->pos++;
	nc = realloc(g->cls, (g->n_cls + 1) * sizeof(*nc));
	if (!nc)
		goto out_nomem;
	g->cls = nc;
	g->cls[g->n_cls] = c;
	*ret = g->n_cls++;
	return 0;
out_nomem:
	free(c.r);
	p->err = -ENOMEM;
	return -1;
out_bad:
	free(c.r);
	return -1;
}

static int
emit(struct prog *g, struct inst in)
{
	if (g->n == g->cap) {
		size_t cap = g->cap ? 2 * g->cap : 32;
		struct inst *v = realloc(g->in, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		g->in = v;
		g->cap = cap;
	}
	g->in[g->n++] = in;
	return 0;
}

/* Emit atom with quantifier q ('1', '*', '?', '+'). */
static int
emit_atom(struct prog *g, struct inst atom, char q)
{
	size_t l = g->n;
	int r = 0;

	atom.op = OP_RUNE;
	switch (q) {
	case '1':
		atom.x = l + 1;
		return emit(g, atom);
	case '*':
		r = emit(g, (struct inst){ .op = OP_SPLIT, .x = l + 1, .y = l + 2 });
		atom.x = l;
		return r < 0 ? r : emit(g, atom);
	case '?':
		r = emit(g, (struct inst){ .op = OP_SPLIT, .x = l + 1, .y = l + 2 });
		atom.x = l + 2;
		return r < 0 ? r : emit(g, atom);
	default: /* '+' */
		atom.x = l + 1;
		r = emit(g, atom);
		return r < 0 ? r : emit(g, (struct inst){ .op = OP_SPLIT, .x = l, .y = l + 2 });
	}
}

/* Compile re into p->prog. Returns 0, -1 for what Go would refuse, or
 * -ENOMEM. */
static int
re_compile(struct re_parser *p)
{
	struct prog *g = p->prog;
	int r;

	while (p->pos < p->n) {
		struct inst atom = { 0 };
		uint32_t c;
		size_t w;
		bool is_atom = true;

		(void) re_peek(p, &c, &w);
		switch (c) {
		case '^': case '$':
			r = emit(g, (struct inst){ .op = OP_ASSERT,
						    .atom = c == '^' ? AS_BEGIN : AS_END,
						    .x = g->n + 1 });
			if (r < 0)
				return r;
			p->pos++;
			is_atom = false;
			break;
		case '.':
			atom.atom = A_ANY;
			p->pos++;
			break;
		case '[':
			atom.atom = A_CLASS;
			if (parse_class(p, &atom.cls) < 0)
				return p->err ? p->err : -1;
			break;
		case '(': {
			size_t l = g->n;

			/* the only group upstream writes: (.*\/)? */
			if (p->n - p->pos < 6 || memcmp(p->s + p->pos, "(.*/)?", 6) != 0)
				return -1;
			p->pos += 6;
			r = emit(g, (struct inst){ .op = OP_SPLIT, .x = l + 1, .y = l + 4 });
			if (r == 0)
				r = emit(g, (struct inst){ .op = OP_SPLIT, .x = l + 2,
							    .y = l + 3 });
			if (r == 0)
				r = emit(g, (struct inst){ .op = OP_RUNE, .atom = A_ANY,
							    .x = l + 1 });
			if (r == 0)
				r = emit(g, (struct inst){ .op = OP_RUNE, .atom = A_LIT,
							    .rune = '/', .x = l + 4 });
			if (r < 0)
				return r;
			is_atom = false;
			break;
		}
		case ')': case '|': case '*': case '+': case '?':
			return -1;
		case '\\':
			if (p->pos + 1 < p->n) {
				char k = p->s[p->pos + 1];
				int as = k == 'A' ? AS_BEGIN : k == 'z' ? AS_END :
					 k == 'b' ? AS_WORD : k == 'B' ? AS_NOT_WORD : -1;

				if (as >= 0) {
					r = emit(g, (struct inst){ .op = OP_ASSERT,
								    .atom = (uint8_t) as,
								    .x = g->n + 1 });
					if (r < 0)
						return r;
					p->pos += 2;
					is_atom = false;
					break;
				}
				if (k == 'Q' || k == 'C' || k == 'p' || k == 'P')
					return -1;      /* not supported */
			}
			{
				struct cls pc = { 0 };

				r = perl_class(p, &pc);
				if (r < 0)
					return r;
				if (r > 0) {
					struct cls *nc;

					nc = realloc(g->cls, (g->n_cls + 1) * sizeof(*nc));
					if (!nc) {
						free(pc.r);
						return -ENOMEM;
					}
					g->cls = nc;
					g->cls[g->n_cls] = pc;
					atom.atom = A_CLASS;
					atom.cls = g->n_cls++;
					break;
				}
			}
			atom.atom = A_LIT;
			if (parse_escape(p, &atom.rune) < 0)
				return -1;
			break;
		default:
			atom.atom = A_LIT;
			atom.rune = c;
			p->pos += w;
			break;
		}
		if (p->pos < p->n && strchr("*+?", p->s[p->pos]) && p->s[p->pos]) {
			char q = p->s[p->pos++];

			if (!is_atom)
				return -1;      /* missing argument to repetition */
			if (p->pos < p->n && p->s[p->pos] == '?')
				p->pos++;       /* non-greedy: same set of matches */
			if (p->pos < p->n && strchr("*+?", p->s[p->pos]) && p->s[p->pos])
				return -1;      /* invalid nested repetition */
			r = emit_atom(g, atom, q);
		} else if (is_atom) {
			r = emit_atom(g, atom, '1');
		} else {
			r = 0;
		}
		if (r < 0)
			return r;
	}
	return emit(g, (struct inst){ .op = OP_MATCH });
}

static void
prog_release(struct prog *g)
{
	size_t i;

	for (i = 0; i < g->n_cls; i++)
		free(g->cls[i].r);
	free(g->cls);
	free(g->in);
	memset(g, 0, sizeof(*g));
}

/* ---- running the NFA ---- */

/* \w for \b: ASCII letters, digits and '_' */
static bool
is_word(int32_t r)
{
	return r >= 0 && r < 0x80 &&
	       (((r | 0x20) >= 'a' && (r | 0x20) <= 'z') || (r >= '0' && r <= '9') || r == '_');
}

static bool
atom_matches(const struct prog *g, const struct inst *in, uint32_t r)
{
	const struct cls *c;
	size_t i;

	switch (in->atom) {
	case A_LIT:
		return r == in->rune;
	case A_ANY:
		return r != '\n';
	}
	c = &g->cls[in->cls];
	for (i = 0; i < c->n; i++)
		if (r >= c->r[i].lo && r <= c->r[i].hi)
			return !c->neg;
	return c->neg;
}

/* Add state pc and its epsilon closure at text position (prev, cur). */
static void
nfa_add(const struct prog *g, size_t pc, uint8_t *on, size_t *list, size_t *n, size_t *stack,
	bool at_begin, bool at_end, int32_t prev, int32_t cur)
{
	size_t sp = 0;

	stack[sp++] = pc;
	while (sp) {
		const struct inst *in;

		pc = stack[--sp];
		if (on[pc])
			continue;
		on[pc] = 1;
		in = &g->in[pc];
		switch (in->op) {
		case OP_SPLIT:
			stack[sp++] = in->y;
			stack[sp++] = in->x;
			break;
		case OP_ASSERT:
			if ((in->atom == AS_BEGIN && at_begin) || (in->atom == AS_END && at_end) ||
			    (in->atom == AS_WORD && is_word(prev) != is_word(cur)) ||
			    (in->atom == AS_NOT_WORD && is_word(prev) == is_word(cur)))
				stack[sp++] = in->x;
			break;
		default:
			list[(*n)++] = pc;
			break;
		}
	}
}

/* Go's MatchString of the anchored expression over path. */
static int
prog_run(const struct prog *g, const char *path, bool *ret)
{
	_cleanup_free_ uint8_t *on = calloc(g->n, 1);
	_cleanup_free_ size_t *cur = calloc(g->n, sizeof(size_t));
	_cleanup_free_ size_t *nxt = calloc(g->n, sizeof(size_t));
	_cleanup_free_ size_t *stack = calloc(2 * g->n + 2, sizeof(size_t));
	size_t len = strlen(path), pos = 0, ncur = 0, nnxt, i;
	int32_t prev = -1;

	if (!on || !cur || !nxt || !stack)
		return -ENOMEM;
	for (;;) {
		uint32_t r = 0;
		size_t w = 0;
		int32_t c = -1;

		if (pos < len) {
			w = gostr_decode(path + pos, len - pos, &r);
			c = (int32_t) r;
		}
		if (pos == 0)
			nfa_add(g, 0, on, cur, &ncur, stack, true, pos == len, prev, c);
		for (i = 0; i < ncur; i++) {
			if (g->in[cur[i]].op == OP_MATCH) {
				*ret = true;
				return 0;
			}
		}
		if (pos >= len || ncur == 0)
			break;
		memset(on, 0, g->n);
		nnxt = 0;
		for (i = 0; i < ncur; i++) {
			const struct inst *in = &g->in[cur[i]];

			if (in->op == OP_RUNE && atom_matches(g, in, r)) {
				int32_t after = -1;
				uint32_t ar;

				if (pos + w < len) {
					(void) gostr_decode(path + pos + w, len - pos - w, &ar);
					after = (int32_t) ar;
				}
				nfa_add(g, in->x, on, nxt, &nnxt, stack, false, pos + w == len, c,
					after);
			}
		}
		memcpy(cur, nxt, nnxt * sizeof(size_t));
		ncur = nnxt;
		memset(on, 0, g->n);
		prev = c;
		pos += w;
	}
	*ret = false;
	return 0;
}

/* ---- patterns ---- */

static int
pattern_match(const struct pattern *pt, const char *path, bool *ret)
{
	size_t plen, tlen;

	switch (pt->type) {
	case M_EXACT:
		*ret = strcmp(path, pt->text) == 0;
		return 0;
	case M_PREFIX:
		tlen = strlen(pt->text) - 2;
		*ret = strncmp(path, pt->text, tlen) == 0;
		return 0;
	case M_SUFFIX: {
		const char *suffix = pt->text + 2;

		plen = strlen(path);
		tlen = strlen(suffix);
		*ret = (plen >= tlen && memcmp(path + plen - tlen, suffix, tlen) == 0) ||
		       (suffix[0] == '/' && strcmp(path, suffix + 1) == 0);
		return 0;
	}
	case M_REGEXP:
		break;
	}
	if (pt->bad)
		return -EINVAL;
	return prog_run(&pt->prog, path, ret);
}

static int
pattern_init(struct pattern *pt, const char *raw, struct kiln_err *err)
{
	struct re_parser rp = { 0 };
	struct gbuf re;
	const char *s = raw;
	size_t n = strlen(raw), i;
	char *trimmed, *clean;
	int r;

	/* strings.TrimSpace, then filepath.Clean, then the '!' */
	s += gostr_space_prefix(s, n);
	n -= (size_t) (s - raw);
	n -= gostr_space_suffix(s, n);
	trimmed = strndup(s, n);
	if (!trimmed)
		return kiln_err_set(err, ENOMEM, "out of memory");
	clean = ignore_clean_path(trimmed);
	free(trimmed);
	if (!clean)
		return kiln_err_set(err, ENOMEM, "out of memory");
	if (clean[0] == '!') {
		if (!clean[1]) {
			free(clean);
			return kiln_err_set(err, EINVAL, "illegal exclusion pattern: \"!\"");
		}
		pt->exclusion = true;
		memmove(clean, clean + 1, strlen(clean));
	}
	pt->text = clean;
	if (!match_syntax_ok(clean))
		return kiln_err_set(err, EINVAL, "syntax error in pattern '%s'", clean);
	pt->n_dirs = 1;
	for (i = 0; clean[i]; i++)
		if (clean[i] == '/')
			pt->n_dirs++;
	gbuf_init(&re, 16 * strlen(clean) + 64);
	r = build_regexp(pt, &re);
	if (r == 0 && pt->type == M_REGEXP) {
		rp.s = re.data;
		rp.n = re.len;
		rp.prog = &pt->prog;
		r = re_compile(&rp);
		if (r == -1) {
			/* Go's compile fails: every match will say so */
			pt->bad = true;
			prog_release(&pt->prog);
			r = 0;
		}
	}
	gbuf_release(&re);
	if (r < 0)
		return kiln_err_set(err, -r, "out of memory");
	return 0;
}

static void
pattern_release(struct pattern *pt)
{
	free(pt->text);
	prog_release(&pt->prog);
}

int
ignore_new(const char *const *patterns, size_t n, struct ignore **ret, struct kiln_err *err)
{
	struct ignore *ig;
	size_t i;
	int r;

	ig = calloc(1, sizeof(*ig));
	if (!ig)
		return kiln_err_set(err, ENOMEM, "out of memory");
	ig->p = calloc(n ? n : 1, sizeof(*ig->p));
	if (!ig->p) {
		free(ig);
		return kiln_err_set(err, ENOMEM, "out of memory");
	}
	for (i = 0; i < n; i++) {
		const char *s = patterns[i];
		size_t len = strlen(s);

		/* empty after trimming: skipped */
		if (gostr_space_prefix(s, len) == len)
			continue;
		r = pattern_init(&ig->p[ig->n], s, err);
		ig->n++;
		if (r < 0) {
			ignore_free(ig);
			return r;
		}
		if (ig->p[ig->n - 1].exclusion)
			ig->exclusions = true;
	}
	*ret = ig;
	return 0;
}

void
ignore_free(struct ignore *ig)
{
	size_t i;

	if (!ig)
		return;
	for (i = 0; i < ig->n; i++)
		pattern_release(&ig->p[i]);
	free(ig->p);
	free(ig);
}

size_t
ignore_count(const struct ignore *ig)
{
	return ig->n;
}

const char *
ignore_pattern(const struct ignore *ig, size_t i, bool *ret_exclusion)
{
	if (ret_exclusion)
		*ret_exclusion = ig->p[i].exclusion;
	return ig->p[i].text;
}

bool
ignore_has_exclusions(const struct ignore *ig)
{
	return ig->exclusions;
}

int
ignore_pattern_match(const struct ignore *ig, size_t i, const char *path, bool *ret_match,
		     struct kiln_err *err)
{
	int r = pattern_match(&ig->p[i], path, ret_match);

	if (r == -EINVAL)
		return kiln_err_set(err, EINVAL, "syntax error in pattern '%s'", ig->p[i].text);
	if (r < 0)
		return kiln_err_set(err, -r, "out of memory");
	return 0;
}

int
ignore_match(const struct ignore *ig, const char *path, bool *ret_excluded,
	     struct kiln_err *err)
{
	_cleanup_free_ char *parent = NULL;
	bool matched = false;
	const char *slash;
	size_t i;
	int r;

	/* filepath.Dir: everything before the last '/', cleaned */
	slash = strrchr(path, '/');
	{
		_cleanup_free_ char *head = strndup(path, slash ? (size_t) (slash - path + 1) : 0);

		if (!head)
			return kiln_err_set(err, ENOMEM, "out of memory");
		parent = ignore_clean_path(head);
		if (!parent)
			return kiln_err_set(err, ENOMEM, "out of memory");
	}
	for (i = 0; i < ig->n; i++) {
		const struct pattern *pt = &ig->p[i];
		bool m = false;

		/* an inclusion cannot change a match, an exclusion a non-match */
		if (pt->exclusion != matched)
			continue;
		r = ignore_pattern_match(ig, i, path, &m, err);
		if (r < 0)
			return r;
		if (!m && strcmp(parent, ".") != 0) {
			/* each parent directory in turn: "a", "a/b", ... */
			char *p = parent;

			for (;;) {
				char *sep = strchr(p, '/');
				char saved = sep ? *sep : '\0';
				bool pm = false;

				if (sep)
					*sep = '\0';
				r = pattern_match(pt, parent, &pm);
				if (sep)
					*sep = saved;
				if (r == -ENOMEM)
					return kiln_err_set(err, ENOMEM, "out of memory");
				if (r == 0 && pm) {
					m = true;
					break;
				}
				if (!sep)
					break;
				p = sep + 1;
			}
		}
		if (m)
			matched = !pt->exclusion;
	}
	*ret_excluded = matched;
	return 0;
}

/* ---- the file ---- */

int
ignore_read(const char *buf, size_t len, char ***ret_patterns, size_t *ret_n,
	    struct kiln_err *err)
{
	char **v = NULL;
	size_t n = 0, pos = 0, lineno = 0, i;
	int r;

	while (pos < len) {
		const char *s = buf + pos, *nl = memchr(s, '\n', len - pos);
		size_t l = nl ? (size_t) (nl - s) : len - pos;
		bool invert;
		char *clean, *pat, **nv;

		pos += nl ? l + 1 : l;
		if (l > IGNORE_MAX_LINE) {
			r = kiln_err_set(err, E2BIG, "error reading .dockerignore: line %zu too long",
					 lineno + 1);
			goto out_free;
		}
		/* bufio.ScanLines drops one '\r' before the '\n' */
		if (l > 0 && s[l - 1] == '\r')
			l--;
		if (lineno++ == 0 && l >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0) {
			s += 3;
			l -= 3;
		}
		if (l > 0 && s[0] == '#')
			continue;
		i = gostr_space_prefix(s, l);
		s += i;
		l -= i;
		l -= gostr_space_suffix(s, l);
		if (l == 0)
			continue;
		invert = s[0] == '!';
		if (invert) {
			s++;
			l--;
			i = gostr_space_prefix(s, l);
			s += i;
			l -= i;
			l -= gostr_space_suffix(s, l);
		}
		pat = strndup(s, l);
		if (!pat)
			goto out_nomem;
		if (l > 0) {
			clean = ignore_clean_path(pat);
			free(pat);
			if (!clean)
				goto out_nomem;
			pat = clean;
			if (pat[0] == '/' && pat[1])
				memmove(pat, pat + 1, strlen(pat));
		}
		if (invert) {
			char *inv = malloc(strlen(pat) + 2);

			if (!inv) {
				free(pat);
				goto out_nomem;
			}
			inv[0] = '!';
			strcpy(inv + 1, pat);
			free(pat);
			pat = inv;
		}
		nv = realloc(v, (n + 1) * sizeof(*v));
		if (!nv) {
			free(pat);
			goto out_nomem;
		}
		v = nv;
		v[n++] = pat;
	}
	*ret_patterns = v;
	*ret_n = n;
	return 0;
out_nomem:
	r = kiln_err_set(err, ENOMEM, "out of memory");
out_free:
	for (i = 0; i < n; i++)
		free(v[i]);
	free(v);
	return r;
}

int
ignore_parse(const char *buf, size_t len, struct ignore **ret, struct kiln_err *err)
{
	char **patterns = NULL;
	size_t n = 0, i;
	int r;

	r = ignore_read(buf, len, &patterns, &n, err);
	if (r < 0)
		return r;
	r = ignore_new((const char *const *) patterns, n, ret, err);
	for (i = 0; i < n; i++)
		free(patterns[i]);
	free(patterns);
	return r;
}
