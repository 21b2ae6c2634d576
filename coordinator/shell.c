/* BuildKit's shell-word lexer (frontend/dockerfile/shell/lex.go) in C.
 *
 * A word is read rune by rune, the way Go's text/scanner reads it: a BOM
 * at the very start is skipped and each invalid UTF-8 byte reads as U+FFFD
 * (and is written back as U+FFFD). Quotes, escapes and $-expansions are
 * processed by small recursive functions that mirror upstream's, because
 * the exact order of their checks decides which inputs are errors.
 *
 * The pattern forms (${V#p} ${V%p} ${V/p/r}) follow upstream's translation
 * of the shell pattern to a regular expression: '*' is any run of runes
 * and '?' any one rune, neither matching a newline (as Go's '.' does not),
 * '\' escapes '*', '?' and '\', everything else is literal. We match with a
 * small NFA instead of a regexp engine; leftmost-first matching of such a
 * pattern is the leftmost-longest match (greedy) or shortest (lazy). */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "err.h"
#include "gostr.h"
#include "shell.h"

#define EOF_RUNE (-1)
/* ${...} nests by recursion; bound it so that hostile input cannot
 * exhaust the stack. Upstream has no limit; nothing real comes close. */
#define MAX_DEPTH 256

struct namelist {
	char **v;
	size_t n, cap;
};

struct words {
	struct gbuf buf;
	bool in_word;
	char **v;
	size_t n, cap;
	int err;
};

struct lexer {
	const char *s;
	size_t n;
	size_t pos;             /* byte offset of the next rune */
	int32_t escape;
	unsigned flags;
	bool raw_escapes;       /* current setting; a ${V#p} pattern turns it on */
	unsigned depth;
	const struct shell_env *env;
	struct namelist matched, unmatched;
	int err;                /* errno-style code of the first failure */
	char msg[400];          /* its reason */
};

static int
lex_fail(struct lexer *lx, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int
lex_fail(struct lexer *lx, int code, const char *fmt, ...)
{
	va_list ap;

	lx->err = code;
	va_start(ap, fmt);
	vsnprintf(lx->msg, sizeof(lx->msg), fmt, ap);
	va_end(ap);
	return -code;
}

static int
lex_oom(struct lexer *lx, int r)
{
	if (r == -E2BIG)
		return lex_fail(lx, E2BIG, "expansion longer than %u bytes", SHELL_MAX_OUTPUT);
	return lex_fail(lx, ENOMEM, "out of memory");
}

static int32_t
peek(const struct lexer *lx)
{
	uint32_t r;

	if (lx->pos >= lx->n)
		return EOF_RUNE;
	(void) gostr_decode(lx->s + lx->pos, lx->n - lx->pos, &r);
	return (int32_t) r;
}

static int32_t
next(struct lexer *lx)
{
	uint32_t r;

	if (lx->pos >= lx->n)
		return EOF_RUNE;
	lx->pos += gostr_decode(lx->s + lx->pos, lx->n - lx->pos, &r);
	return (int32_t) r;
}

/* Go prints string(rune(-1)) as U+FFFD. */
static void
put_rune(struct gbuf *b, int32_t r)
{
	gbuf_put_rune(b, r < 0 ? GOSTR_RUNE_ERROR : (uint32_t) r);
}

static void
namelist_add(struct namelist *l, const char *name, int *err)
{
	size_t i;
	char *dup;

	for (i = 0; i < l->n; i++)
		if (strcmp(l->v[i], name) == 0)
			return;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 8;
		char **v = realloc(l->v, cap * sizeof(*v));

		if (!v) {
			*err = -ENOMEM;
			return;
		}
		l->v = v;
		l->cap = cap;
	}
	dup = strdup(name);
	if (!dup) {
		*err = -ENOMEM;
		return;
	}
	l->v[l->n++] = dup;
}

static void
namelist_release(struct namelist *l)
{
	shell_words_free(l->v, l->n);
	memset(l, 0, sizeof(*l));
}

const char *
shell_env_get(const struct shell_env *env, const char *name, size_t len)
{
	size_t i;

	if (!env)
		return NULL;
	for (i = env->n; i-- > 0;) {
		const char *e = env->vars[i];
		const char *eq = strchr(e, '=');
		size_t klen = eq ? (size_t) (eq - e) : strlen(e);

		if (klen == len && memcmp(e, name, len) == 0)
			return eq ? eq + 1 : "";
	}
	return NULL;
}

static const char *
getenv_capture(struct lexer *lx, const char *name)
{
	const char *v = shell_env_get(lx->env, name, strlen(name));
	int err = 0;

	namelist_add(v ? &lx->matched : &lx->unmatched, name, &err);
	if (err)
		(void) lex_oom(lx, err);
	return v;
}

/* wordsStruct: the splitting half of ProcessWords. */
static void
words_push(struct words *w)
{
	char *word;

	if (w->n == w->cap) {
		size_t cap = w->cap ? 2 * w->cap : 8;
		char **v = realloc(w->v, cap * sizeof(*v));

		if (!v) {
			w->err = -ENOMEM;
			return;
		}
		w->v = v;
		w->cap = cap;
	}
	word = gbuf_detach(&w->buf, NULL, &w->err);
	if (word)
		w->v[w->n++] = word;
	gbuf_init(&w->buf, SHELL_MAX_OUTPUT);
	w->in_word = false;
}

static void
words_add_raw_char(struct words *w, int32_t r)
{
	put_rune(&w->buf, r);
	w->in_word = true;
}

static void
words_add_char(struct words *w, int32_t r)
{
	bool space = r >= 0 && gostr_is_space((uint32_t) r);

	if (space && w->in_word) {
		if (w->buf.len)
			words_push(w);
	} else if (!space) {
		words_add_raw_char(w, r);
	}
}

static void
words_add_string(struct words *w, const char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint32_t r;

		i += gostr_decode(s + i, n - i, &r);
		words_add_char(w, (int32_t) r);
	}
}

static void
words_add_raw_string(struct words *w, const char *s, size_t n)
{
	gbuf_put(&w->buf, s, n);
	w->in_word = true;
}

static int process_stop_on(struct lexer *lx, int32_t stop, bool raw_escapes, struct gbuf *out,
			   struct words *w);
static int process_dollar(struct lexer *lx, struct gbuf *out);

static int
process_single_quote(struct lexer *lx, struct gbuf *out)
{
	int32_t ch = next(lx);

	if (lx->flags & SHELL_RAW_QUOTES)
		put_rune(out, ch);
	for (;;) {
		ch = next(lx);
		if (ch == EOF_RUNE)
			return lex_fail(lx, EINVAL,
					"unexpected end of statement while looking for matching single-quote");
		if (ch == '\'') {
			if (lx->flags & SHELL_RAW_QUOTES)
				put_rune(out, ch);
			return 0;
		}
		put_rune(out, ch);
	}
}

static int
process_double_quote(struct lexer *lx, struct gbuf *out)
{
	int32_t ch = next(lx);
	int r;

	if (lx->flags & SHELL_RAW_QUOTES)
		put_rune(out, ch);
	for (;;) {
		switch (peek(lx)) {
		case EOF_RUNE:
			return lex_fail(lx, EINVAL,
					"unexpected end of statement while looking for matching double-quote");
		case '"':
			ch = next(lx);
			if (lx->flags & SHELL_RAW_QUOTES)
				put_rune(out, ch);
			return 0;
		case '$':
			r = process_dollar(lx, out);
			if (r < 0)
				return r;
			continue;
		}
		ch = next(lx);
		if (ch == lx->escape) {
			if (lx->raw_escapes)
				put_rune(out, ch);
			if (peek(lx) == EOF_RUNE)
				continue;       /* the loop then reports the open quote */
			/* Only these can be escaped; other escapes stay as-is. */
			if (peek(lx) == '"' || peek(lx) == '$' || peek(lx) == lx->escape)
				ch = next(lx);
		}
		put_rune(out, ch);
	}
}

static bool
is_special_param(int32_t ch)
{
	return ch == '@' || ch == '*' || ch == '#' || ch == '?' || ch == '-' || ch == '$' ||
	       ch == '!' || ch == '0';
}

static bool
is_digit(int32_t ch)
{
	return ch >= 0 && gostr_is_digit((uint32_t) ch);
}

static void
process_name(struct lexer *lx, struct gbuf *name)
{
	while (peek(lx) != EOF_RUNE) {
		int32_t ch = peek(lx);

		if (name->len == 0 && is_digit(ch)) {
			/* $1 $001: digits only, so "$1x" is "$1" then "x" */
			while (is_digit(peek(lx)))
				put_rune(name, next(lx));
			return;
		}
		if (name->len == 0 && is_special_param(ch)) {
			put_rune(name, next(lx));
			return;
		}
		if (!gostr_is_letter((uint32_t) ch) && !is_digit(ch) && ch != '_')
			break;
		put_rune(name, next(lx));
	}
}

/* '<' is special so that "<<  EOF" stays one word: the blanks after "<<"
 * belong to the heredoc operator (upstream processPossibleHeredoc). */
static int
process_possible_heredoc(struct lexer *lx, struct gbuf *out)
{
	int32_t ch;

	(void) next(lx);
	if (peek(lx) != '<') {
		gbuf_putc(out, '<');
		return 0;
	}
	(void) next(lx);
	gbuf_put(out, "<<", 2);
	ch = peek(lx);
	while (ch == ' ' || ch == '\t' || ch == '\r') {
		put_rune(out, next(lx));
		ch = peek(lx);
	}
	return 0;
}

/* A shell pattern compiled to runes: literal, '?' or '*'. */
enum { PT_LIT, PT_ANY, PT_STAR };

struct ptok {
	uint8_t kind;
	uint32_t r;
};

struct pattern {
	struct ptok *t;
	size_t n;
};

/* Text as runes with their byte offsets (off[n] is the length). */
struct runes {
	uint32_t *r;
	size_t *off;
	size_t n;
};

static int
pattern_compile(struct lexer *lx, const char *s, struct pattern *p)
{
	size_t len = strlen(s), pos = 0;
	uint32_t r;

	p->n = 0;
	p->t = calloc(len + 1, sizeof(*p->t));
	if (!p->t)
		return lex_oom(lx, -ENOMEM);
	/* text/scanner skips a BOM at the start of the pattern, too */
	if (len >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0)
		pos = 3;
	while (pos < len) {
		pos += gostr_decode(s + pos, len - pos, &r);
		if (r == '*') {
			p->t[p->n++].kind = PT_STAR;
			continue;
		}
		if (r == '?') {
			p->t[p->n++].kind = PT_ANY;
			continue;
		}
		if (r == '\\') {
			/* "\}" and "\/" were needed inside ${}; the escape is not
			 * part of the pattern */
			if (pos < len && (s[pos] == '}' || s[pos] == '/'))
				continue;
			if (pos >= len)
				return lex_fail(lx, EINVAL,
						"invalid pattern (%s) in substitution: invalid escape '\\\xef\xbf\xbd'",
						s);
			pos += gostr_decode(s + pos, len - pos, &r);
			if (r != '*' && r != '?' && r != '\\') {
				char tmp[4];
				size_t w = gostr_encode(r, tmp);

				return lex_fail(lx, EINVAL,
						"invalid pattern (%s) in substitution: invalid escape '\\%.*s'",
						s, (int) w, tmp);
			}
		}
		p->t[p->n].kind = PT_LIT;
		p->t[p->n++].r = r;
	}
	return 0;
}

static int
runes_init(struct lexer *lx, const char *s, struct runes *rs)
{
	size_t len = strlen(s), pos = 0;

	rs->n = 0;
	rs->r = calloc(len + 1, sizeof(*rs->r));
	rs->off = calloc(len + 1, sizeof(*rs->off));
	if (!rs->r || !rs->off) {
		free(rs->r);
		free(rs->off);
		return lex_oom(lx, -ENOMEM);
	}
	while (pos < len) {
		rs->off[rs->n] = pos;
		pos += gostr_decode(s + pos, len - pos, &rs->r[rs->n]);
		rs->n++;
	}
	rs->off[rs->n] = len;
	return 0;
}

static void
runes_release(struct runes *rs)
{
	free(rs->r);
	free(rs->off);
}

#define NONE SIZE_MAX

static void
nfa_set(size_t *st, size_t i, size_t start)
{
	if (st[i] == NONE || start < st[i])
		st[i] = start;
}

/* Search for p in r[from..n): anchored at from, or leftmost; with the
 * longest or the shortest end for the chosen start. Each NFA state keeps
 * the smallest start that reaches it, which is the thread a leftmost
 * search prefers. */
static int
pattern_search(struct lexer *lx, const struct pattern *p, const uint32_t *r, size_t n,
	       size_t from, bool anchored, bool longest, size_t *ret_start, size_t *ret_end)
{
	_cleanup_free_ size_t *cur = calloc(p->n + 1, sizeof(size_t));
	_cleanup_free_ size_t *nxt = calloc(p->n + 1, sizeof(size_t));
	size_t best_start = NONE, best_end = 0, pos, i;

	if (!cur || !nxt)
		return lex_oom(lx, -ENOMEM);
	for (i = 0; i <= p->n; i++)
		cur[i] = NONE;
	for (pos = from;; pos++) {
		bool alive = false;

		if ((!anchored || pos == from) && best_start == NONE)
			nfa_set(cur, 0, pos);
		for (i = 0; i < p->n; i++)
			if (cur[i] != NONE && p->t[i].kind == PT_STAR)
				nfa_set(cur, i + 1, cur[i]);
		if (cur[p->n] != NONE) {
			if (best_start == NONE || cur[p->n] < best_start) {
				best_start = cur[p->n];
				best_end = pos;
				if (!longest)
					break;
			} else if (cur[p->n] == best_start) {
				best_end = pos;
			}
		}
		if (pos >= n)
			break;
		for (i = 0; i <= p->n; i++)
			nxt[i] = NONE;
		for (i = 0; i < p->n; i++) {
			if (cur[i] == NONE || (best_start != NONE && cur[i] > best_start))
				continue;
			switch (p->t[i].kind) {
			case PT_LIT:
				if (r[pos] == p->t[i].r)
					nfa_set(nxt, i + 1, cur[i]);
				break;
			case PT_ANY:
				if (r[pos] != '\n')
					nfa_set(nxt, i + 1, cur[i]);
				break;
			case PT_STAR:
				if (r[pos] != '\n')
					nfa_set(nxt, i, cur[i]);
				break;
			}
		}
		for (i = 0; i <= p->n; i++) {
			cur[i] = nxt[i];
			if (cur[i] != NONE)
				alive = true;
		}
		if (!alive && (anchored || best_start != NONE))
			break;
	}
	if (best_start == NONE)
		return 0;
	*ret_start = best_start;
	*ret_end = best_end;
	return 1;
}

static void
reverse_u32(uint32_t *v, size_t n)
{
	size_t i;

	for (i = 0; i < n / 2; i++) {
		uint32_t t = v[i];

		v[i] = v[n - 1 - i];
		v[n - 1 - i] = t;
	}
}

/* ${V#p} ${V##p} ${V%p} ${V%%p}. Like upstream, the suffix forms work on
 * the reversed value, which turns invalid bytes into U+FFFD. */
static int
trim_pattern(struct lexer *lx, const char *value, const char *pat, bool suffix, bool greedy,
	     struct gbuf *out)
{
	struct pattern p = { 0 };
	struct runes rs = { 0 };
	size_t start, end, i;
	int r;

	r = pattern_compile(lx, pat, &p);
	if (r < 0)
		goto out;
	r = runes_init(lx, value, &rs);
	if (r < 0)
		goto out;
	if (!suffix) {
		r = pattern_search(lx, &p, rs.r, rs.n, 0, true, greedy, &start, &end);
		if (r < 0)
			goto out;
		gbuf_puts(out, value + (r ? rs.off[end] : 0));
		r = 0;
		goto out;
	}
	for (i = 0; i < p.n / 2; i++) {
		struct ptok t = p.t[i];

		p.t[i] = p.t[p.n - 1 - i];
		p.t[p.n - 1 - i] = t;
	}
	reverse_u32(rs.r, rs.n);
	r = pattern_search(lx, &p, rs.r, rs.n, 0, true, greedy, &start, &end);
	if (r < 0)
		goto out;
	if (r == 0)
		end = 0;
	for (i = rs.n; i-- > end;)
		gbuf_put_rune(out, rs.r[i]);
	r = 0;
out:
	free(p.t);
	runes_release(&rs);
	return r;
}

/* Go's Regexp.Expand on the replacement of ${V//p/r}: "$$" is "$", "$0"
 * or "${0}" the match, any other $name nothing, a lone '$' itself. */
static void
expand_template(const char *tpl, const char *match, size_t match_len, struct gbuf *out)
{
	while (*tpl) {
		const char *dollar = strchr(tpl, '$');
		const char *name, *p;
		bool brace = false;
		size_t nlen;

		if (!dollar)
			break;
		gbuf_put(out, tpl, (size_t) (dollar - tpl));
		tpl = dollar + 1;
		if (*tpl == '$') {
			gbuf_putc(out, '$');
			tpl++;
			continue;
		}
		p = tpl;
		if (*p == '{') {
			brace = true;
			p++;
		}
		name = p;
		while (*p) {
			uint32_t r;
			size_t w = gostr_decode(p, strlen(p), &r);

			if (!gostr_is_letter(r) && !gostr_is_digit(r) && r != '_')
				break;
			p += w;
		}
		nlen = (size_t) (p - name);
		if (nlen == 0 || (brace && *p != '}')) {
			gbuf_putc(out, '$');
			continue;
		}
		if (brace)
			p++;
		tpl = p;
		if (nlen == 1 && name[0] == '0')
			gbuf_put(out, match, match_len);
	}
	gbuf_puts(out, tpl);
}

static int
replace_pattern(struct lexer *lx, const char *value, const char *pat, const char *repl, bool all,
		struct gbuf *out)
{
	struct pattern p = { 0 };
	struct runes rs = { 0 };
	size_t a0, a1, spos = 0, last_end = 0;
	int r;

	r = pattern_compile(lx, pat, &p);
	if (r < 0)
		goto out;
	r = runes_init(lx, value, &rs);
	if (r < 0)
		goto out;
	if (!all) {
		r = pattern_search(lx, &p, rs.r, rs.n, 0, false, true, &a0, &a1);
		if (r < 0)
			goto out;
		if (r == 0) {
			gbuf_puts(out, value);
		} else {
			gbuf_put(out, value, rs.off[a0]);
			gbuf_puts(out, repl);
			gbuf_puts(out, value + rs.off[a1]);
		}
		r = 0;
		goto out;
	}
	/* Regexp.ReplaceAllString: an empty match right after a match is not
	 * replaced, and the search always advances by at least one rune. */
	while (spos <= rs.n) {
		r = pattern_search(lx, &p, rs.r, rs.n, spos, false, true, &a0, &a1);
		if (r < 0)
			goto out;
		if (r == 0)
			break;
		gbuf_put(out, value + rs.off[last_end], rs.off[a0] - rs.off[last_end]);
		if (a1 > last_end || a0 == 0)
			expand_template(repl, value + rs.off[a0], rs.off[a1] - rs.off[a0], out);
		last_end = a1;
		if (spos + 1 > a1)
			spos++;
		else
			spos = a1;
	}
	gbuf_puts(out, value + rs.off[last_end]);
	r = 0;
out:
	free(p.t);
	runes_release(&rs);
	return r;
}

static int
sub_stop_on(struct lexer *lx, int32_t stop, bool raw_escapes, struct gbuf *out,
	    const char *missing)
{
	int r = process_stop_on(lx, stop, raw_escapes, out, NULL);

	if (r < 0 && r != -ENOMEM && r != -E2BIG && peek(lx) == EOF_RUNE)
		return lex_fail(lx, EINVAL, "%s", missing);
	return r;
}

static int
process_dollar_brace(struct lexer *lx, struct gbuf *out, const char *name)
{
	_cleanup_(gbuf_release) struct gbuf word = { 0 };
	_cleanup_(gbuf_release) struct gbuf repl = { 0 };
	bool skip = lx->flags & SHELL_SKIP_UNSET;
	bool null_is_unset = false, rawesc, greedy, all;
	const char *value, *w;
	char chs[16];
	size_t chs_len;
	int32_t ch;
	int r;

	gbuf_init(&word, SHELL_MAX_OUTPUT);
	gbuf_init(&repl, SHELL_MAX_OUTPUT);
	ch = next(lx);
	chs_len = gostr_encode(ch < 0 ? GOSTR_RUNE_ERROR : (uint32_t) ch, chs);
	switch (ch) {
	case '}':
		value = getenv_capture(lx, name);
		if (!value && skip) {
			gbuf_put(out, "${", 2);
			gbuf_puts(out, name);
			gbuf_putc(out, '}');
			return 0;
		}
		gbuf_puts(out, value ? value : "");
		return 0;
	case ':':
		null_is_unset = true;
		ch = next(lx);
		chs_len += gostr_encode(ch < 0 ? GOSTR_RUNE_ERROR : (uint32_t) ch, chs + chs_len);
		/* fall through */
	case '+': case '-': case '?': case '#': case '%':
		chs[chs_len] = '\0';
		rawesc = ch == '#' || ch == '%';
		if (null_is_unset && rawesc)
			return lex_fail(lx, EINVAL, "unsupported modifier (%s) in substitution",
					chs);
		r = sub_stop_on(lx, '}', rawesc, &word, "syntax error: missing '}'");
		if (r < 0)
			return r;
		if (word.err)
			return lex_oom(lx, word.err);
		w = word.data ? word.data : "";
		value = getenv_capture(lx, name);
		if (skip && !value) {
			gbuf_put(out, "${", 2);
			gbuf_puts(out, name);
			gbuf_puts(out, chs);
			gbuf_puts(out, w);
			gbuf_putc(out, '}');
			return 0;
		}
		switch (ch) {
		case '-':
			gbuf_puts(out, !value || (null_is_unset && !*value) ? w : value);
			return 0;
		case '+':
			gbuf_puts(out, !value || (null_is_unset && !*value) ? "" : w);
			return 0;
		case '?':
			if (!value)
				return lex_fail(lx, EINVAL, "%s: %s", name,
						*w ? w : "is not allowed to be unset");
			if (null_is_unset && !*value)
				return lex_fail(lx, EINVAL, "%s: %s", name,
						*w ? w : "is not allowed to be empty");
			gbuf_puts(out, value);
			return 0;
		case '%': case '#':
			/* %/# trim the shortest match, %%/## the longest */
			greedy = *w == (char) ch;
			if (greedy)
				w++;
			return trim_pattern(lx, value ? value : "", w, ch == '%', greedy, out);
		}
		return lex_fail(lx, EINVAL, "unsupported modifier (%s) in substitution", chs);
	case '/':
		all = peek(lx) == '/';
		if (all)
			(void) next(lx);
		r = sub_stop_on(lx, '/', true, &word, "syntax error: missing '/' in ${}");
		if (r < 0)
			return r;
		r = sub_stop_on(lx, '}', true, &repl, "syntax error: missing '}'");
		if (r < 0)
			return r;
		if (word.err || repl.err)
			return lex_oom(lx, word.err ? word.err : repl.err);
		value = getenv_capture(lx, name);
		if (skip && !value) {
			/* sic: upstream writes one '/' for both forms */
			gbuf_put(out, "${", 2);
			gbuf_puts(out, name);
			gbuf_putc(out, '/');
			gbuf_puts(out, word.data ? word.data : "");
			gbuf_putc(out, '/');
			gbuf_puts(out, repl.data ? repl.data : "");
			gbuf_putc(out, '}');
			return 0;
		}
		return replace_pattern(lx, value ? value : "", word.data ? word.data : "",
				       repl.data ? repl.data : "", all, out);
	}
	chs[chs_len] = '\0';
	return lex_fail(lx, EINVAL, "unsupported modifier (%s) in substitution", chs);
}

static int
process_dollar(struct lexer *lx, struct gbuf *out)
{
	_cleanup_(gbuf_release) struct gbuf name = { 0 };
	const char *value;
	int r;

	gbuf_init(&name, SHELL_MAX_OUTPUT);
	(void) next(lx);
	if (peek(lx) != '{') {
		process_name(lx, &name);
		if (name.err)
			return lex_oom(lx, name.err);
		if (name.len == 0) {
			gbuf_putc(out, '$');
			return 0;
		}
		value = getenv_capture(lx, name.data);
		if (!value && (lx->flags & SHELL_SKIP_UNSET)) {
			gbuf_putc(out, '$');
			gbuf_puts(out, name.data);
			return 0;
		}
		gbuf_puts(out, value ? value : "");
		return 0;
	}
	(void) next(lx);
	switch (peek(lx)) {
	case EOF_RUNE:
		return lex_fail(lx, EINVAL, "syntax error: missing '}'");
	case '{': case '}': case ':':
		return lex_fail(lx, EINVAL, "syntax error: bad substitution");
	}
	process_name(lx, &name);
	if (name.err)
		return lex_oom(lx, name.err);
	if (++lx->depth > MAX_DEPTH)
		return lex_fail(lx, EINVAL, "substitutions nested more than %d deep", MAX_DEPTH);
	r = process_dollar_brace(lx, out, name.data ? name.data : "");
	lx->depth--;
	return r;
}

static int
process_stop_on(struct lexer *lx, int32_t stop, bool raw_escapes, struct gbuf *out,
		struct words *w)
{
	bool saved = lx->raw_escapes;
	int32_t ch;
	int r = 0;

	lx->raw_escapes = raw_escapes;
	while ((ch = peek(lx)) != EOF_RUNE) {
		bool quote = !(lx->flags & SHELL_SKIP_QUOTES) && (ch == '\'' || ch == '"');

		if (stop != EOF_RUNE && ch == stop) {
			(void) next(lx);
			goto out;
		}
		if (ch == '$' || ch == '<' || quote) {
			struct gbuf tmp;

			gbuf_init(&tmp, SHELL_MAX_OUTPUT);
			if (ch == '$')
				r = process_dollar(lx, &tmp);
			else if (ch == '<')
				r = process_possible_heredoc(lx, &tmp);
			else if (ch == '\'')
				r = process_single_quote(lx, &tmp);
			else
				r = process_double_quote(lx, &tmp);
			if (r == 0 && tmp.err)
				r = lex_oom(lx, tmp.err);
			if (r == 0) {
				gbuf_put(out, tmp.data, tmp.len);
				if (w && ch == '$')
					words_add_string(w, tmp.data, tmp.len);
				else if (w)
					words_add_raw_string(w, tmp.data, tmp.len);
			}
			gbuf_release(&tmp);
			if (r < 0)
				goto out;
			continue;
		}
		ch = next(lx);
		if (ch == lx->escape) {
			if (lx->raw_escapes) {
				if (w)
					words_add_raw_char(w, ch);
				put_rune(out, ch);
			}
			/* the escape token escapes the next rune, or ends the word */
			ch = next(lx);
			if (ch == EOF_RUNE)
				break;
			if (w)
				words_add_raw_char(w, ch);
		} else if (w) {
			words_add_char(w, ch);
		}
		put_rune(out, ch);
	}
	if (stop != EOF_RUNE) {
		char tmp[4];
		size_t n = gostr_encode((uint32_t) stop, tmp);

		r = lex_fail(lx, EINVAL,
			     "unexpected end of statement while looking for matching %.*s", (int) n,
			     tmp);
	}
out:
	lx->raw_escapes = saved;
	if (r == 0 && out->err)
		r = lex_oom(lx, out->err);
	if (r == 0 && lx->err)
		r = -lx->err;   /* a capture ran out of memory */
	return r;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

int
shell_process(const char *word, char escape, unsigned flags, const struct shell_env *env,
	      struct shell_result *ret, struct kiln_err *err)
{
	struct lexer lx = { 0 };
	struct words w = { 0 };
	struct gbuf out;
	struct gbuf src;
	char *result;
	int r, e = 0;

	lx.s = word;
	lx.n = strlen(word);
	lx.escape = escape;
	lx.flags = flags;
	lx.env = env;
	/* text/scanner drops a byte-order mark at the start of its input */
	if (lx.n >= 3 && memcmp(word, "\xef\xbb\xbf", 3) == 0)
		lx.pos = 3;
	gbuf_init(&out, SHELL_MAX_OUTPUT);
	gbuf_init(&w.buf, SHELL_MAX_OUTPUT);
	r = process_stop_on(&lx, EOF_RUNE, flags & SHELL_RAW_ESCAPES, &out, &w);
	if (r == 0 && w.buf.len)
		words_push(&w);
	if (r == 0 && w.err)
		r = lex_oom(&lx, w.err);
	if (r == 0) {
		result = gbuf_detach(&out, NULL, &e);
		if (!result)
			r = lex_oom(&lx, e);
	}
	gbuf_release(&out);
	gbuf_release(&w.buf);
	if (r < 0) {
		shell_words_free(w.v, w.n);
		namelist_release(&lx.matched);
		namelist_release(&lx.unmatched);
		gbuf_init(&src, 4096);
		gostr_quote(&src, word, lx.n);
		r = kiln_err_set(err, lx.err ? lx.err : -r, "failed to process %s: %s",
				 src.err ? "word" : src.data, lx.msg);
		gbuf_release(&src);
		return r;
	}
	if (lx.matched.n)
		qsort(lx.matched.v, lx.matched.n, sizeof(char *), cmp_str);
	if (lx.unmatched.n)
		qsort(lx.unmatched.v, lx.unmatched.n, sizeof(char *), cmp_str);
	memset(ret, 0, sizeof(*ret));
	ret->word = result;
	ret->words = w.v;
	ret->n_words = w.n;
	ret->matched = lx.matched.v;
	ret->n_matched = lx.matched.n;
	ret->unmatched = lx.unmatched.v;
	ret->n_unmatched = lx.unmatched.n;
	return 0;
}

void
shell_result_release(struct shell_result *r)
{
	if (!r)
		return;
	free(r->word);
	shell_words_free(r->words, r->n_words);
	shell_words_free(r->matched, r->n_matched);
	shell_words_free(r->unmatched, r->n_unmatched);
	memset(r, 0, sizeof(*r));
}

void
shell_words_free(char **words, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(words[i]);
	free(words);
}

int
shell_process_word(const char *word, char escape, const struct shell_env *env, char **ret,
		   struct kiln_err *err)
{
	struct shell_result res;
	int r;

	r = shell_process(word, escape, 0, env, &res, err);
	if (r < 0)
		return r;
	*ret = STEAL_PTR(res.word);
	shell_result_release(&res);
	return 0;
}

int
shell_process_words(const char *word, char escape, const struct shell_env *env,
		    char ***ret_words, size_t *ret_n, struct kiln_err *err)
{
	struct shell_result res;
	int r;

	r = shell_process(word, escape, 0, env, &res, err);
	if (r < 0)
		return r;
	*ret_words = STEAL_PTR(res.words);
	*ret_n = res.n_words;
	res.n_words = 0;
	shell_result_release(&res);
	return 0;
}
