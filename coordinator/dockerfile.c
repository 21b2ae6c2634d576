/* Dockerfile parser: turns the bytes of a Dockerfile into a list of
 * instruction nodes the way BuildKit's frontend/dockerfile/parser does, so
 * that kiln reads every Dockerfile exactly as `docker buildx build` would.
 *
 * Reading is line based. Parser directives are looked for until the first
 * line that is not one; comment lines are dropped; an escape token at the
 * end of a line joins the next line; the joined (logical) line is split
 * into keyword, flags and arguments by a per-instruction rule; ADD, COPY
 * and RUN then take their heredoc bodies from the following lines. Each
 * step keeps upstream's quirks (see the README of the conformance corpus):
 * the golden files compare our dump byte for byte with BuildKit's.
 *
 * Invariants: all input is bounded (DF_MAX_INPUT, DF_MAX_LINE); nothing is
 * expanded; a node owns all of its strings. What the instructions mean is
 * not decided here, only their shape. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "dockerfile.h"
#include "err.h"
#include "gostr.h"
#include "shell.h"

#define DF_MAX_ONBUILD_DEPTH 16

/* A growable vector of owned strings with their lengths. */
struct strvec {
	char **v;
	size_t *lens;
	size_t n, cap;
};

struct dirstate {
	bool done;
	bool seen_syntax, seen_escape, seen_check;
	int line;
};

struct parser {
	const char *buf;
	size_t len;
	size_t pos;
	const char *filename;
	int line;               /* physical lines consumed so far */
	char escape;
	struct dirstate dir;
	struct df_ast *ast;
	struct kiln_err *err;
};

static const char empty_cont_detail[] =
	"Empty continuation lines will become errors in a future release";
static const char empty_cont_url[] =
	"https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/";

static int
strvec_push(struct strvec *sv, const char *s, size_t n)
{
	char *dup;

	if (sv->n == sv->cap) {
		size_t cap = sv->cap ? 2 * sv->cap : 8;
		char **v = realloc(sv->v, cap * sizeof(*v));
		size_t *l;

		if (!v)
			return -ENOMEM;
		sv->v = v;
		l = realloc(sv->lens, cap * sizeof(*l));
		if (!l)
			return -ENOMEM;
		sv->lens = l;
		sv->cap = cap;
	}
	dup = malloc(n + 1);
	if (!dup)
		return -ENOMEM;
	if (n)
		memcpy(dup, s, n);
	dup[n] = '\0';
	sv->v[sv->n] = dup;
	sv->lens[sv->n] = n;
	sv->n++;
	return 0;
}

/* Push a gbuf's contents (or its error). */
static int
strvec_push_buf(struct strvec *sv, struct gbuf *b)
{
	if (b->err)
		return b->err;
	return strvec_push(sv, b->data ? b->data : "", b->len);
}

static void
strvec_release(struct strvec *sv)
{
	size_t i;

	for (i = 0; i < sv->n; i++)
		free(sv->v[i]);
	free(sv->v);
	free(sv->lens);
	memset(sv, 0, sizeof(*sv));
}

static char *
memdup0(const char *s, size_t n)
{
	char *p = malloc(n + 1);

	if (!p)
		return NULL;
	if (n)
		memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

/* strings.ToLower: per-rune simple lower case; invalid bytes turn into
 * U+FFFD once the string is not pure ASCII. */
static char *
go_lower(const char *s, size_t n)
{
	struct gbuf b;
	bool ascii = true;
	size_t i;

	for (i = 0; i < n; i++)
		if ((unsigned char) s[i] >= 0x80)
			ascii = false;
	gbuf_init(&b, 4 * n + 16);
	if (ascii) {
		for (i = 0; i < n; i++)
			gbuf_putc(&b, s[i] >= 'A' && s[i] <= 'Z' ? (char) (s[i] + 32) : s[i]);
	} else {
		for (i = 0; i < n;) {
			uint32_t r;

			i += gostr_decode(s + i, n - i, &r);
			gbuf_put_rune(&b, gostr_to_lower(r));
		}
	}
	return gbuf_detach(&b, NULL, NULL);
}

/* strings.TrimSpace */
static void
go_trim(const char **s, size_t *n)
{
	size_t lead = gostr_space_prefix(*s, *n);

	*s += lead;
	*n -= lead;
	*n -= gostr_space_suffix(*s, *n);
}

/* The blanks of BuildKit's reWhitespace, [\t\v\f\r ]. */
static bool
is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r';
}

/* unicode.IsSpace(rune(b)) on a single byte, as the byte-wise scanners of
 * upstream ask it: 0x85 and 0xa0 count as blanks there. */
static bool
is_space_byte(unsigned char b)
{
	return (b >= '\t' && b <= '\r') || b == ' ' || b == 0x85 || b == 0xa0;
}

/* \s in Go's regexp syntax */
static bool
is_re_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r';
}

static bool
is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* ---- JSON ---- */

enum { JSON_ARRAY_OK, JSON_ARRAY_NOT, JSON_ARRAY_NOT_STRINGS };

/* parseJSON: the array at the start of s (after blanks), its elements into
 * sv. Text after the array is ignored, as json.Decoder does. Returns one
 * of the JSON_ARRAY_* values or -ENOMEM. */
static int
json_string_array(const char *s, size_t n, struct strvec *sv)
{
	bool overflow = false, not_strings = false;
	size_t p = gostr_space_prefix(s, n);
	struct gbuf b;
	int r;

	if (p >= n || s[p] != '[')
		return JSON_ARRAY_NOT;
	p++;
	gostr_json_ws(s, n, &p);
	if (p < n && s[p] == ']')
		return JSON_ARRAY_OK;
	for (;;) {
		gostr_json_ws(s, n, &p);
		if (p >= n)
			return JSON_ARRAY_NOT;
		if (s[p] == '"') {
			gbuf_init(&b, DF_MAX_INPUT);
			r = gostr_json_string(s, n, &p, &b);
			if (r == 0)
				r = strvec_push_buf(sv, &b);
			gbuf_release(&b);
			if (r == -1)
				return JSON_ARRAY_NOT;
			if (r < 0)
				return r;
		} else {
			not_strings = true;
			if (gostr_json_value(s, n, &p, &overflow) < 0)
				return JSON_ARRAY_NOT;
		}
		gostr_json_ws(s, n, &p);
		if (p >= n)
			return JSON_ARRAY_NOT;
		if (s[p] == ']')
			break;
		if (s[p] != ',')
			return JSON_ARRAY_NOT;
		p++;
	}
	if (overflow)
		return JSON_ARRAY_NOT;
	return not_strings ? JSON_ARRAY_NOT_STRINGS : JSON_ARRAY_OK;
}

/* ---- errors ---- */

static int
perr(struct parser *p, int line, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int
perr(struct parser *p, int line, int code, const char *fmt, ...)
{
	char msg[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return kiln_err_set(p->err, code, "%s:%d: %s", p->filename, line < 1 ? 1 : line, msg);
}

static int
perr_oom(struct parser *p)
{
	return kiln_err_set(p->err, ENOMEM, "%s: out of memory", p->filename);
}

/* ---- directives ---- */

/* Match "PREFIX\s*NAME\s*=\s*(VALUE)\s*" as BuildKit's directive regexp
 * does. Returns true and the name and value spans on a match. */
static bool
match_directive(const char *s, size_t n, const char *prefix, const char **ret_name,
		size_t *ret_name_len, const char **ret_val, size_t *ret_val_len)
{
	size_t plen = strlen(prefix), p, name, lead, tail;

	if (n < plen || memcmp(s, prefix, plen) != 0)
		return false;
	p = plen;
	while (p < n && is_re_space(s[p]))
		p++;
	if (p >= n || !is_alpha(s[p]))
		return false;
	name = p;
	while (p < n && (is_alpha(s[p]) || (s[p] >= '0' && s[p] <= '9')))
		p++;
	*ret_name = s + name;
	*ret_name_len = p - name;
	while (p < n && is_re_space(s[p]))
		p++;
	if (p >= n || s[p] != '=')
		return false;
	p++;
	/* `\s*(.+?)\s*$`, where '.' is anything but a newline */
	if (memchr(s + p, '\n', n - p))
		return false;
	if (p >= n)
		return false;
	for (lead = 0; p + lead < n && is_re_space(s[p + lead]); lead++)
		;
	if (p + lead == n) {
		/* all blanks: the lazy group takes the last one */
		*ret_val = s + n - 1;
		*ret_val_len = 1;
		return true;
	}
	for (tail = 0; is_re_space(s[n - 1 - tail]); tail++)
		;
	*ret_val = s + p + lead;
	*ret_val_len = n - tail - (p + lead);
	return true;
}

enum { DIR_NONE, DIR_SYNTAX, DIR_ESCAPE, DIR_CHECK };

/* DirectiveParser.ParseLine. Returns the kind of directive found (DIR_NONE
 * when the line is not one), or a negative errno with *ret_msg set. */
static int
directive_line(struct dirstate *d, const char *s, size_t n, const char *prefix,
	       const char **ret_val, size_t *ret_val_len, const char **ret_msg)
{
	const char *name;
	size_t name_len;
	char lname[8];
	size_t i;
	int kind;

	d->line++;
	if (d->done)
		return DIR_NONE;
	if (!match_directive(s, n, prefix, &name, &name_len, ret_val, ret_val_len) ||
	    name_len >= sizeof(lname)) {
		d->done = true;
		return DIR_NONE;
	}
	for (i = 0; i < name_len; i++)
		lname[i] = (char) (name[i] | 0x20);
	lname[name_len] = '\0';
	if (strcmp(lname, "syntax") == 0) {
		kind = DIR_SYNTAX;
		if (d->seen_syntax)
			goto out_repeated;
		d->seen_syntax = true;
	} else if (strcmp(lname, "escape") == 0) {
		kind = DIR_ESCAPE;
		if (d->seen_escape)
			goto out_repeated;
		d->seen_escape = true;
	} else if (strcmp(lname, "check") == 0) {
		kind = DIR_CHECK;
		if (d->seen_check)
			goto out_repeated;
		d->seen_check = true;
	} else {
		d->done = true;
		return DIR_NONE;
	}
	return kind;
out_repeated:
	*ret_msg = kind == DIR_SYNTAX ? "only one syntax parser directive can be used" :
		   kind == DIR_ESCAPE ? "only one escape parser directive can be used" :
					"only one check parser directive can be used";
	return -EINVAL;
}

/* ---- line reading ---- */

/* The next physical line, with its '\n' if any (bufio.Scanner with
 * upstream's scanLines). Returns 1, 0 at the end, or a negative errno. */
static int
next_line(struct parser *p, const char **ret, size_t *ret_len)
{
	const char *nl;
	size_t n;

	if (p->pos >= p->len)
		return 0;
	nl = memchr(p->buf + p->pos, '\n', p->len - p->pos);
	n = nl ? (size_t) (nl - (p->buf + p->pos)) : p->len - p->pos;
	if (n > DF_MAX_LINE)
		return perr(p, p->line + 1, E2BIG,
			    "dockerfile line greater than max allowed size of %u", DF_MAX_LINE);
	*ret = p->buf + p->pos;
	*ret_len = nl ? n + 1 : n;
	p->pos += *ret_len;
	return 1;
}

size_t
df_trim_newline(const char *s, size_t n)
{
	while (n > 0 && (s[n - 1] == '\r' || s[n - 1] == '\n'))
		n--;
	return n;
}

bool
df_is_comment(const char *s, size_t n)
{
	size_t lead;

	n = df_trim_newline(s, n);
	lead = gostr_space_prefix(s, n);
	return lead < n && s[lead] == '#';
}

/* processLine: strip the line end (and leading blanks of a first line),
 * look for a directive, drop a comment. */
static int
process_line(struct parser *p, const char **s, size_t *n, bool strip_left)
{
	const char *val, *msg = NULL;
	size_t val_len, lead;
	int kind;

	*n = df_trim_newline(*s, *n);
	if (strip_left) {
		lead = gostr_space_prefix(*s, *n);
		*s += lead;
		*n -= lead;
	}
	if (memchr(*s, '\0', *n))
		return perr(p, p->line + 1, EINVAL, "NUL byte in Dockerfile");
	kind = directive_line(&p->dir, *s, *n, "#", &val, &val_len, &msg);
	if (kind < 0)
		return perr(p, p->line + 1, EINVAL, "%s", msg);
	if (kind == DIR_ESCAPE) {
		if (val_len != 1 || (val[0] != '`' && val[0] != '\\'))
			return perr(p, p->line + 1, EINVAL,
				    "invalid escape token '%.*s' does not match ` or \\",
				    (int) val_len, val);
		p->escape = val[0];
	} else if (kind == DIR_SYNTAX || kind == DIR_CHECK) {
		char **slot = kind == DIR_SYNTAX ? &p->ast->syntax : &p->ast->check;

		*slot = memdup0(val, val_len);
		if (!*slot)
			return perr_oom(p);
	}
	if (df_is_comment(*s, *n))
		*n = 0;
	return 0;
}

/* trimContinuationCharacter: an escape token that is the last non-blank
 * ([ \t]) of the line, and is not itself escaped, joins the next line. */
static bool
trim_continuation(const struct parser *p, const char *s, size_t *n)
{
	size_t end = *n;

	while (end > 0 && (s[end - 1] == ' ' || s[end - 1] == '\t'))
		end--;
	if (end == 0 || s[end - 1] != p->escape)
		return false;
	if (end >= 2 && s[end - 2] == p->escape)
		return false;
	*n = end - 1;
	return true;
}

/* ---- splitting a logical line ---- */

/* extractBuilderFlags: leading "--" words of line[0..n). Works on bytes,
 * as upstream does, so a byte >= 0x80 inside a flag is re-encoded as the
 * code point of the same value. Sets *ret_rest to what follows. */
static int
extract_flags(const char *line, size_t n, struct strvec *flags, const char **ret_rest,
	      size_t *ret_rest_len)
{
	enum { IN_SPACES, IN_WORD, IN_QUOTE } phase = IN_SPACES;
	struct gbuf word;
	bool blank_ok = false;
	unsigned char quote = 0, ch = 0;
	size_t pos;
	int r = 0;

	gbuf_init(&word, 2 * n + 16);
	*ret_rest = line + n;
	*ret_rest_len = 0;
	for (pos = 0; pos <= n; pos++) {
		if (pos != n)
			ch = (unsigned char) line[pos];
		if (phase == IN_SPACES) {
			if (pos == n)
				break;
			if (is_space_byte(ch))
				continue;
			if (ch != '-' || pos + 1 == n || line[pos + 1] != '-') {
				*ret_rest = line + pos;
				*ret_rest_len = n - pos;
				goto out;
			}
			phase = IN_WORD;
		}
		if (pos == n) {
			if (!(word.len == 2 && memcmp(word.data, "--", 2) == 0) &&
			    (blank_ok || word.len > 0))
				r = strvec_push_buf(flags, &word);
			break;
		}
		if (phase == IN_WORD) {
			if (is_space_byte(ch)) {
				phase = IN_SPACES;
				if (word.len == 2 && memcmp(word.data, "--", 2) == 0) {
					*ret_rest = line + pos;
					*ret_rest_len = n - pos;
					goto out;
				}
				if (blank_ok || word.len > 0) {
					r = strvec_push_buf(flags, &word);
					if (r < 0)
						goto out;
				}
				gbuf_reset(&word);
				blank_ok = false;
				continue;
			}
			if (ch == '\'' || ch == '"') {
				quote = ch;
				blank_ok = true;
				phase = IN_QUOTE;
				continue;
			}
			if (ch == '\\') {
				if (pos + 1 == n)
					continue;
				ch = (unsigned char) line[++pos];
			}
			gbuf_put_rune(&word, ch);
			continue;
		}
		/* IN_QUOTE */
		if (ch == quote) {
			phase = IN_WORD;
			continue;
		}
		if (ch == '\\') {
			if (pos + 1 == n) {
				phase = IN_WORD;
				continue;
			}
			ch = (unsigned char) line[++pos];
		}
		gbuf_put_rune(&word, ch);
	}
out:
	if (r == 0 && word.err)
		r = word.err;
	gbuf_release(&word);
	return r;
}

/* parseWords: split on unicode.IsSpace outside quotes; quotes and escapes
 * stay in the words. Each rune is re-encoded (invalid bytes -> U+FFFD). */
static int
parse_words(const char *s, size_t n, char escape, struct strvec *out)
{
	enum { IN_SPACES, IN_WORD, IN_QUOTE } phase = IN_SPACES;
	struct gbuf word;
	bool blank_ok = false;
	uint32_t ch = 0, quote = 0;
	size_t pos, w = 0;
	int r = 0;

	gbuf_init(&word, 3 * n + 16);
	for (pos = 0; pos <= n; pos += w) {
		if (pos != n)
			w = gostr_decode(s + pos, n - pos, &ch);
		if (phase == IN_SPACES) {
			if (pos == n)
				break;
			if (gostr_is_space(ch))
				continue;
			phase = IN_WORD;
		}
		if (pos == n) {
			if (blank_ok || word.len > 0)
				r = strvec_push_buf(out, &word);
			break;
		}
		if (phase == IN_WORD) {
			if (gostr_is_space(ch)) {
				phase = IN_SPACES;
				if (blank_ok || word.len > 0) {
					r = strvec_push_buf(out, &word);
					if (r < 0)
						break;
				}
				gbuf_reset(&word);
				blank_ok = false;
				continue;
			}
			if (ch == '\'' || ch == '"') {
				quote = ch;
				blank_ok = true;
				phase = IN_QUOTE;
			}
			if (ch == (unsigned char) escape) {
				if (pos + w == n)
					continue;       /* an escape at the very end is dropped */
				/* the escape and the next rune, even a quote */
				gbuf_put_rune(&word, ch);
				pos += w;
				w = gostr_decode(s + pos, n - pos, &ch);
			}
			gbuf_put_rune(&word, ch);
			continue;
		}
		/* IN_QUOTE */
		if (ch == quote)
			phase = IN_WORD;
		if (ch == (unsigned char) escape && quote != '\'') {
			if (pos + w == n) {
				phase = IN_WORD;
				continue;
			}
			pos += w;
			gbuf_put_rune(&word, ch);
			w = gostr_decode(s + pos, n - pos, &ch);
		}
		gbuf_put_rune(&word, ch);
	}
	if (r == 0 && word.err)
		r = word.err;
	gbuf_release(&word);
	return r;
}

/* reWhitespace.Split(s, limit); limit < 0 means no limit. */
static int
split_blanks(const char *s, size_t n, int limit, struct strvec *out)
{
	size_t start = 0, i = 0;
	int parts = 1, r;

	while (i < n) {
		if (!is_blank(s[i]) || (limit > 0 && parts >= limit)) {
			i++;
			continue;
		}
		r = strvec_push(out, s + start, i - start);
		if (r < 0)
			return r;
		parts++;
		while (i < n && is_blank(s[i]))
			i++;
		start = i;
	}
	return strvec_push(out, s + start, n - start);
}

/* ---- instructions ---- */

static void node_release(struct df_node *n);

struct line_parse {
	struct parser *p;
	int line;               /* start line, for errors */
	unsigned depth;
};

static int new_node_from_line(struct line_parse *lp, const char *line, size_t n,
			      struct df_node *node);

static int
parse_env_like(struct line_parse *lp, const char *rest, size_t n, const char *what,
	       struct strvec *args)
{
	_cleanup_(strvec_release) struct strvec words = { 0 };
	size_t i;
	int r;

	r = parse_words(rest, n, lp->p->escape, &words);
	if (r < 0)
		return r;
	if (words.n == 0)
		return 0;
	if (!memchr(words.v[0], '=', words.lens[0])) {
		/* old form "KEY value...": split the raw text once */
		size_t k = 0, v;

		while (k < n && !is_blank(rest[k]))
			k++;
		if (k == n)
			return perr(lp->p, lp->line, EINVAL, "%s must have two arguments", what);
		v = k;
		while (v < n && is_blank(rest[v]))
			v++;
		r = strvec_push(args, rest, k);
		if (r == 0)
			r = strvec_push(args, rest + v, n - v);
		if (r == 0)
			r = strvec_push(args, "", 0);
		return r;
	}
	for (i = 0; i < words.n; i++) {
		const char *eq = memchr(words.v[i], '=', words.lens[i]);
		size_t k;

		if (!eq) {
			struct gbuf q;

			gbuf_init(&q, 4096);
			gostr_quote(&q, words.v[i], words.lens[i]);
			r = perr(lp->p, lp->line, EINVAL,
				 "Syntax error - can't find = in %s. Must be of the form: name=value",
				 q.data ? q.data : "word");
			gbuf_release(&q);
			return r;
		}
		k = (size_t) (eq - words.v[i]);
		r = strvec_push(args, words.v[i], k);
		if (r == 0)
			r = strvec_push(args, eq + 1, words.lens[i] - k - 1);
		if (r == 0)
			r = strvec_push(args, "=", 1);
		if (r < 0)
			return r;
	}
	return 0;
}

static int
not_strings_error(struct line_parse *lp)
{
	return perr(lp->p, lp->line, EINVAL,
		    "when using JSON array syntax, arrays must be comprised of strings only");
}

/* parseMaybeJSON: exec form, or the whole rest as one argument. */
static int
parse_maybe_json(struct line_parse *lp, const char *rest, size_t n, struct strvec *args,
		 bool *json)
{
	int r;

	if (n == 0)
		return 0;
	r = json_string_array(rest, n, args);
	if (r < 0)
		return r;
	if (r == JSON_ARRAY_OK) {
		*json = true;
		return 0;
	}
	strvec_release(args);
	if (r == JSON_ARRAY_NOT_STRINGS)
		return not_strings_error(lp);
	return strvec_push(args, rest, n);
}

/* parseMaybeJSONToList: exec form, or the rest split on blanks. */
static int
parse_maybe_json_list(struct line_parse *lp, const char *rest, size_t n, struct strvec *args,
		      bool *json)
{
	int r;

	r = json_string_array(rest, n, args);
	if (r < 0)
		return r;
	if (r == JSON_ARRAY_OK) {
		*json = true;
		return 0;
	}
	strvec_release(args);
	if (r == JSON_ARRAY_NOT_STRINGS)
		return not_strings_error(lp);
	if (n == 0)
		return 0;
	return split_blanks(rest, n, -1, args);
}

static int
parse_healthcheck(struct line_parse *lp, const char *rest, size_t n, struct strvec *args,
		  bool *json)
{
	_cleanup_(strvec_release) struct strvec cmd = { 0 };
	size_t sep = 0, next, i;
	int r;

	while (sep < n && !is_space_byte((unsigned char) rest[sep]))
		sep++;
	next = sep;
	while (next < n && is_space_byte((unsigned char) rest[next]))
		next++;
	if (sep == 0)
		return 0;
	r = parse_maybe_json(lp, rest + next, n - next, &cmd, json);
	if (r < 0)
		return r;
	r = strvec_push(args, rest, sep);
	for (i = 0; r == 0 && i < cmd.n; i++)
		r = strvec_push(args, cmd.v[i], cmd.lens[i]);
	return r;
}

static int
dispatch(struct line_parse *lp, const char *cmd, const char *rest, size_t n, struct df_node *node,
	 struct strvec *args)
{
	if (strcmp(cmd, "from") == 0 || strcmp(cmd, "expose") == 0)
		return n ? split_blanks(rest, n, -1, args) : 0;
	if (strcmp(cmd, "add") == 0 || strcmp(cmd, "copy") == 0 || strcmp(cmd, "volume") == 0)
		return parse_maybe_json_list(lp, rest, n, args, &node->json);
	if (strcmp(cmd, "run") == 0 || strcmp(cmd, "cmd") == 0 ||
	    strcmp(cmd, "entrypoint") == 0 || strcmp(cmd, "shell") == 0)
		return parse_maybe_json(lp, rest, n, args, &node->json);
	if (strcmp(cmd, "maintainer") == 0 || strcmp(cmd, "user") == 0 ||
	    strcmp(cmd, "workdir") == 0 || strcmp(cmd, "stopsignal") == 0)
		return n ? strvec_push(args, rest, n) : 0;
	if (strcmp(cmd, "healthcheck") == 0)
		return parse_healthcheck(lp, rest, n, args, &node->json);
	if (strcmp(cmd, "env") == 0)
		return parse_env_like(lp, rest, n, "ENV", args);
	if (strcmp(cmd, "label") == 0)
		return parse_env_like(lp, rest, n, "LABEL", args);
	if (strcmp(cmd, "arg") == 0)
		return parse_words(rest, n, lp->p->escape, args);
	if (strcmp(cmd, "onbuild") == 0) {
		int r;

		if (n == 0)
			return 0;
		if (lp->depth >= DF_MAX_ONBUILD_DEPTH)
			return perr(lp->p, lp->line, EINVAL, "ONBUILD nested too deeply");
		node->inner = calloc(1, sizeof(*node->inner));
		if (!node->inner)
			return -ENOMEM;
		lp->depth++;
		r = new_node_from_line(lp, rest, n, node->inner);
		lp->depth--;
		return r;
	}
	/* unknown instructions keep one empty argument, as upstream */
	return strvec_push(args, "", 0);
}

static void
steal_strvec(struct strvec *sv, char ***ret_v, size_t **ret_lens, size_t *ret_n)
{
	*ret_v = STEAL_PTR(sv->v);
	if (ret_lens)
		*ret_lens = STEAL_PTR(sv->lens);
	*ret_n = sv->n;
	sv->n = 0;
	strvec_release(sv);
}

/* newNodeFromLine: keyword, flags, then the instruction's own rule. */
static int
new_node_from_line(struct line_parse *lp, const char *line, size_t n, struct df_node *node)
{
	_cleanup_(strvec_release) struct strvec flags = { 0 };
	_cleanup_(strvec_release) struct strvec args = { 0 };
	const char *s = line, *rest = "";
	size_t len = n, kw, rest_len = 0;
	int r;

	node->start_line = node->end_line = lp->line;
	node->original = memdup0(line, n);
	if (!node->original)
		return -ENOMEM;
	go_trim(&s, &len);
	for (kw = 0; kw < len && !is_blank(s[kw]); kw++)
		;
	node->keyword_raw = memdup0(s, kw);
	node->keyword = go_lower(s, kw);
	if (!node->keyword_raw || !node->keyword)
		return -ENOMEM;
	if (kw < len) {
		size_t a = kw;

		while (a < len && is_blank(s[a]))
			a++;
		r = extract_flags(s + a, len - a, &flags, &rest, &rest_len);
		if (r < 0)
			return r;
		go_trim(&rest, &rest_len);
	}
	r = dispatch(lp, node->keyword, rest, rest_len, node, &args);
	if (r < 0)
		return r;
	steal_strvec(&flags, &node->flags, NULL, &node->n_flags);
	steal_strvec(&args, &node->args, &node->arg_lens, &node->n_args);
	return 0;
}

/* ---- heredocs ---- */

static bool
heredoc_capable(const struct df_node *n)
{
	if (strcmp(n->keyword, "onbuild") == 0 && n->inner)
		n = n->inner;
	if (strcmp(n->keyword, "add") && strcmp(n->keyword, "copy") && strcmp(n->keyword, "run"))
		return false;
	return !n->json;
}

void
df_heredoc_release(struct df_heredoc *h)
{
	if (!h)
		return;
	free(h->name);
	free(h->content);
	memset(h, 0, sizeof(*h));
}

static size_t
count_quotes(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		if (*s == '\'' || *s == '"')
			n++;
	return n;
}

int
df_parse_heredoc(const char *word, struct df_heredoc *ret, struct kiln_err *err)
{
	struct shell_result plain, raw;
	const char *p = word, *rest;
	uint64_t fd = 0;
	bool chomp = false, overflow = false;
	int r;

	/* ^(\d*)<<(-?)\s*([^<]*)$ */
	while (*p >= '0' && *p <= '9') {
		if (fd > (UINT64_MAX - 9) / 10)
			overflow = true;
		fd = fd * 10 + (uint64_t) (*p - '0');
		p++;
	}
	if (p[0] != '<' || p[1] != '<')
		return 0;
	p += 2;
	if (*p == '-') {
		chomp = true;
		p++;
	}
	while (is_re_space(*p))
		p++;
	rest = p;
	if (strchr(rest, '<') || !*rest)
		return 0;
	r = shell_process(rest, '\\', SHELL_SKIP_UNSET, NULL, &plain, err);
	if (r < 0)
		return r;
	if (plain.n_words != 1) {
		shell_result_release(&plain);
		return 0;
	}
	r = shell_process(rest, '\\', SHELL_SKIP_UNSET | SHELL_RAW_QUOTES, NULL, &raw, err);
	if (r < 0) {
		shell_result_release(&plain);
		return r;
	}
	if (raw.n_words != 1) {
		shell_result_release(&plain);
		shell_result_release(&raw);
		return kiln_err_set(err, EINVAL,
				    "internal lexing of heredoc produced inconsistent results: %s",
				    rest);
	}
	memset(ret, 0, sizeof(*ret));
	/* quotes that did their job are missing from the plain reading */
	ret->expand = count_quotes(plain.words[0]) == count_quotes(raw.words[0]);
	ret->name = STEAL_PTR(plain.words[0]);
	ret->chomp = chomp;
	ret->fd = overflow ? UINT64_MAX : fd;
	shell_result_release(&plain);
	shell_result_release(&raw);
	return 1;
}

int
df_heredocs_from_line(const char *line, struct df_heredoc **ret, size_t *ret_n,
		      struct kiln_err *err)
{
	struct shell_result words;
	struct df_heredoc *docs = NULL, h;
	size_t n = 0, i;
	int r;

	/* lexing errors (an open quote) just mean "no heredoc" */
	r = shell_process(line, '\\', SHELL_RAW_QUOTES | SHELL_RAW_ESCAPES | SHELL_SKIP_UNSET,
			  NULL, &words, NULL);
	if (r < 0) {
		*ret = NULL;
		*ret_n = 0;
		return 0;
	}
	for (i = 0; i < words.n_words; i++) {
		struct df_heredoc *nd;

		r = df_parse_heredoc(words.words[i], &h, err);
		if (r < 0)
			goto out_free;
		if (r == 0)
			continue;
		nd = realloc(docs, (n + 1) * sizeof(*docs));
		if (!nd) {
			df_heredoc_release(&h);
			r = kiln_err_set(err, ENOMEM, "out of memory");
			goto out_free;
		}
		docs = nd;
		docs[n++] = h;
	}
	shell_result_release(&words);
	*ret = docs;
	*ret_n = n;
	return 0;
out_free:
	shell_result_release(&words);
	for (i = 0; i < n; i++)
		df_heredoc_release(&docs[i]);
	free(docs);
	return r;
}

char *
df_heredoc_chomp(const char *content, size_t len, size_t *ret_len)
{
	char *out = malloc(len + 1);
	size_t i = 0, o = 0;
	bool bol = true;

	if (!out)
		return NULL;
	for (i = 0; i < len; i++) {
		if (bol && content[i] == '\t')
			continue;
		bol = content[i] == '\n';
		out[o++] = content[i];
	}
	out[o] = '\0';
	if (ret_len)
		*ret_len = o;
	return out;
}

/* Read the bodies of node's heredocs from the lines that follow. */
static int
read_heredocs(struct parser *p, struct df_node *node, int start_line)
{
	struct kiln_err herr = { 0 };
	size_t i;
	int r;

	r = df_heredocs_from_line(node->original, &node->heredocs, &node->n_heredocs, &herr);
	if (r < 0)
		return perr(p, start_line, herr.code, "%s", herr.msg);
	for (i = 0; i < node->n_heredocs; i++) {
		struct df_heredoc *h = &node->heredocs[i];
		size_t name_len = strlen(h->name);
		struct gbuf body;
		bool done = false;
		const char *s = NULL;
		size_t n = 0;

		gbuf_init(&body, DF_MAX_INPUT);
		while ((r = next_line(p, &s, &n)) > 0) {
			size_t end = df_trim_newline(s, n), lead = 0;

			p->line++;
			if (h->chomp)
				while (lead < end && s[lead] == '\t')
					lead++;
			if (end - lead == name_len && memcmp(s + lead, h->name, name_len) == 0) {
				done = true;
				break;
			}
			gbuf_put(&body, s, n);
		}
		if (r < 0) {
			gbuf_release(&body);
			return r;
		}
		if (!done) {
			gbuf_release(&body);
			return perr(p, start_line, EINVAL, "unterminated heredoc");
		}
		h->content = gbuf_detach(&body, &h->content_len, &r);
		if (!h->content)
			return perr_oom(p);
	}
	return 0;
}

/* ---- the parse loop ---- */

static int
add_warning(struct parser *p, const char *line, size_t n)
{
	struct df_ast *ast = p->ast;
	struct df_warning *w;
	struct gbuf b;

	w = realloc(ast->warnings, (ast->n_warnings + 1) * sizeof(*w));
	if (!w)
		return perr_oom(p);
	ast->warnings = w;
	w = &ast->warnings[ast->n_warnings];
	gbuf_init(&b, DF_MAX_INPUT + 64);
	gbuf_puts(&b, "Empty continuation line found in: ");
	gbuf_put(&b, line, n);
	w->text = gbuf_detach(&b, NULL, NULL);
	if (!w->text)
		return perr_oom(p);
	w->detail = empty_cont_detail;
	w->url = empty_cont_url;
	w->line = p->line;
	ast->n_warnings++;
	return 0;
}

static int
push_node(struct parser *p, struct df_node *node)
{
	struct df_ast *ast = p->ast;
	struct df_node *v;

	v = realloc(ast->nodes, (ast->n_nodes + 1) * sizeof(*v));
	if (!v)
		return perr_oom(p);
	ast->nodes = v;
	ast->nodes[ast->n_nodes++] = *node;
	if (ast->n_nodes == 1)
		ast->start_line = node->start_line;
	ast->end_line = node->end_line;
	return 0;
}

static void
set_inner_lines(struct df_node *n, int start, int end)
{
	for (; n; n = n->inner) {
		n->start_line = start;
		n->end_line = end;
	}
}

static int
parse_instruction(struct parser *p, const char *first, size_t first_len)
{
	struct df_node node = { 0 };
	struct line_parse lp = { .p = p };
	bool eol, empty_cont = false;
	struct gbuf line;
	const char *s = NULL;
	size_t n = 0;
	int start_line, r = 0;

	start_line = p->line;
	n = first_len;
	eol = !trim_continuation(p, first, &n);
	if (eol && n == 0)
		return 0;
	gbuf_init(&line, DF_MAX_INPUT);
	gbuf_put(&line, first, n);
	while (!eol && (r = next_line(p, &s, &n)) != 0) {
		const char *raw = s;
		size_t raw_len = n;

		if (r < 0)
			goto out;
		r = process_line(p, &s, &n, false);
		if (r < 0)
			goto out;
		p->line++;
		if (df_is_comment(raw, raw_len))
			continue;
		if (gostr_space_prefix(s, n) == n) {
			empty_cont = true;
			continue;
		}
		eol = !trim_continuation(p, s, &n);
		gbuf_put(&line, s, n);
	}
	if (line.err) {
		r = line.err == -E2BIG ? perr(p, start_line, E2BIG, "instruction too long") :
					 perr_oom(p);
		goto out;
	}
	if (empty_cont) {
		r = add_warning(p, line.data, line.len);
		if (r < 0)
			goto out;
	}
	lp.line = start_line;
	r = new_node_from_line(&lp, line.data, line.len, &node);
	if (r == -ENOMEM)
		r = perr_oom(p);
	if (r < 0)
		goto out;
	if (heredoc_capable(&node) && strstr(node.original, "<<")) {
		r = read_heredocs(p, &node, start_line);
		if (r < 0)
			goto out;
	}
	set_inner_lines(&node, start_line, p->line);
	r = push_node(p, &node);
	if (r == 0)
		memset(&node, 0, sizeof(node));
out:
	node_release(&node);
	gbuf_release(&line);
	return r;
}

int
df_parse(const char *buf, size_t len, const char *filename, struct df_ast **ret,
	 struct kiln_err *err)
{
	struct parser p = { 0 };
	const char *s = NULL;
	size_t n = 0;
	int r;

	p.filename = filename ? filename : "Dockerfile";
	p.err = err;
	if (len > DF_MAX_INPUT)
		return kiln_err_set(err, EFBIG, "%s: larger than %u bytes", p.filename,
				    DF_MAX_INPUT);
	p.buf = buf;
	p.len = len;
	p.escape = '\\';
	p.ast = calloc(1, sizeof(*p.ast));
	if (!p.ast)
		return perr_oom(&p);
	while ((r = next_line(&p, &s, &n)) > 0) {
		if (p.line == 0 && n >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0) {
			s += 3;
			n -= 3;
		}
		r = process_line(&p, &s, &n, true);
		if (r < 0)
			goto out_free;
		p.line++;
		r = parse_instruction(&p, s, n);
		if (r < 0)
			goto out_free;
	}
	if (r < 0)
		goto out_free;
	if (p.ast->n_nodes == 0) {
		r = perr(&p, p.line, EINVAL, "file with no instructions");
		goto out_free;
	}
	p.ast->escape = p.escape;
	*ret = p.ast;
	return 0;
out_free:
	df_ast_free(p.ast);
	return r;
}

static void
node_release(struct df_node *n)
{
	size_t i;

	free(n->keyword);
	free(n->keyword_raw);
	free(n->original);
	for (i = 0; i < n->n_flags; i++)
		free(n->flags[i]);
	free(n->flags);
	for (i = 0; i < n->n_args; i++)
		free(n->args[i]);
	free(n->args);
	free(n->arg_lens);
	if (n->inner) {
		node_release(n->inner);
		free(n->inner);
	}
	for (i = 0; i < n->n_heredocs; i++)
		df_heredoc_release(&n->heredocs[i]);
	free(n->heredocs);
	memset(n, 0, sizeof(*n));
}

void
df_ast_free(struct df_ast *ast)
{
	size_t i;

	if (!ast)
		return;
	for (i = 0; i < ast->n_nodes; i++)
		node_release(&ast->nodes[i]);
	free(ast->nodes);
	for (i = 0; i < ast->n_warnings; i++)
		free(ast->warnings[i].text);
	free(ast->warnings);
	free(ast->syntax);
	free(ast->check);
	free(ast);
}

/* ---- dump ---- */

static void
dump_node(struct gbuf *b, const struct df_node *n)
{
	struct gbuf tmp;
	const char *s;
	size_t i, len;

	gbuf_init(&tmp, b->max);
	gbuf_puts(&tmp, n->keyword);
	if (n->n_flags) {
		gbuf_put(&tmp, " [", 2);
		for (i = 0; i < n->n_flags; i++) {
			if (i)
				gbuf_putc(&tmp, ' ');
			gostr_quote(&tmp, n->flags[i], strlen(n->flags[i]));
		}
		gbuf_putc(&tmp, ']');
	}
	if (n->inner) {
		gbuf_put(&tmp, " (", 2);
		dump_node(&tmp, n->inner);
		gbuf_putc(&tmp, ')');
	}
	for (i = 0; i < n->n_args; i++) {
		gbuf_putc(&tmp, ' ');
		gostr_quote(&tmp, n->args[i], n->arg_lens[i]);
	}
	if (tmp.err) {
		b->err = tmp.err;
		gbuf_release(&tmp);
		return;
	}
	/* Node.Dump() ends in strings.TrimSpace */
	s = tmp.data ? tmp.data : "";
	len = tmp.len;
	go_trim(&s, &len);
	gbuf_put(b, s, len);
	gbuf_release(&tmp);
}

char *
df_node_dump(const struct df_node *n)
{
	struct gbuf b;

	gbuf_init(&b, (size_t) 8 * DF_MAX_INPUT);
	dump_node(&b, n);
	return gbuf_detach(&b, NULL, NULL);
}

char *
df_ast_dump(const struct df_ast *ast)
{
	struct gbuf b;
	size_t i;

	gbuf_init(&b, (size_t) 8 * DF_MAX_INPUT);
	for (i = 0; i < ast->n_nodes; i++) {
		gbuf_putc(&b, '(');
		dump_node(&b, &ast->nodes[i]);
		gbuf_put(&b, ")\n", 2);
	}
	return gbuf_detach(&b, NULL, NULL);
}

int
df_node_flag(const struct df_node *n, const char *name, const char **ret_value)
{
	size_t len = strlen(name), i;
	int found = 0;

	for (i = 0; i < n->n_flags; i++) {
		const char *f = n->flags[i];

		if (strncmp(f, "--", 2) || strncmp(f + 2, name, len))
			continue;
		if (f[2 + len] == '=') {
			found = 1;
			if (ret_value)
				*ret_value = f + 3 + len;
		} else if (f[2 + len] == '\0') {
			found = 1;
			if (ret_value)
				*ret_value = NULL;
		}
	}
	return found;
}

/* ---- directives outside the parser (DetectSyntax, ParseDirective) ---- */

int
df_find_directive(const char *buf, size_t len, const char *key, bool any_format,
		  char **ret_cmdline, int *ret_line)
{
	static const char *const prefixes[] = { "#", "//" };
	int base = 0;
	size_t i;

	if (len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0) {
		buf += 3;
		len -= 3;
	}
	if (len >= 2 && buf[0] == '#' && buf[1] == '!') {
		const char *nl = memchr(buf, '\n', len);

		/* the shebang line counts as line 1 */
		base = 1;
		len = nl ? len - (size_t) (nl + 1 - buf) : 0;
		buf = nl ? nl + 1 : buf;
	}
	for (i = 0; i < (any_format ? 2u : 1u); i++) {
		struct dirstate d = { .line = base };
		size_t pos = 0;

		while (pos < len && !d.done) {
			const char *s = buf + pos, *nl = memchr(s, '\n', len - pos);
			size_t n = nl ? (size_t) (nl - s) : len - pos;
			const char *val, *msg;
			size_t val_len;
			int kind;

			pos += nl ? n + 1 : n;
			/* bufio.ScanLines drops one '\r' before the '\n' */
			if (n > 0 && s[n - 1] == '\r')
				n--;
			if (n > DF_MAX_LINE)
				break;
			kind = directive_line(&d, s, n, prefixes[i], &val, &val_len, &msg);
			if (kind < 0)
				break;
			if (kind == DIR_NONE)
				continue;
			if ((kind == DIR_SYNTAX && strcmp(key, "syntax") == 0) ||
			    (kind == DIR_ESCAPE && strcmp(key, "escape") == 0) ||
			    (kind == DIR_CHECK && strcmp(key, "check") == 0)) {
				*ret_cmdline = memdup0(val, val_len);
				if (!*ret_cmdline)
					return -ENOMEM;
				*ret_line = d.line;
				return 1;
			}
		}
	}
	if (any_format) {
		/* a whole-file JSON object with a string member named key */
		size_t p = 0, end;
		bool overflow = false;
		char *found = NULL;

		gostr_json_ws(buf, len, &p);
		if (p >= len || buf[p] != '{')
			return 0;
		end = p;
		if (gostr_json_value(buf, len, &end, &overflow) < 0 || overflow)
			return 0;
		gostr_json_ws(buf, len, &end);
		if (end != len)
			return 0;
		p++;
		for (;;) {
			struct gbuf k, v;
			size_t vstart;
			bool match, is_str;

			gostr_json_ws(buf, len, &p);
			if (buf[p] == '}')
				break;
			gbuf_init(&k, DF_MAX_INPUT);
			(void) gostr_json_string(buf, len, &p, &k);
			match = !k.err && k.data && strcmp(k.data, key) == 0;
			gbuf_release(&k);
			gostr_json_ws(buf, len, &p);
			p++;    /* ':' */
			gostr_json_ws(buf, len, &p);
			vstart = p;
			is_str = buf[p] == '"';
			(void) gostr_json_value(buf, len, &p, &overflow);
			if (match) {
				/* a later duplicate key wins, as in a Go map */
				free(found);
				found = NULL;
				if (is_str) {
					size_t q = vstart;

					gbuf_init(&v, DF_MAX_INPUT);
					(void) gostr_json_string(buf, len, &q, &v);
					found = gbuf_detach(&v, NULL, NULL);
					if (!found)
						return -ENOMEM;
				}
			}
			gostr_json_ws(buf, len, &p);
			if (buf[p] == ',')
				p++;
		}
		if (found) {
			*ret_cmdline = found;
			*ret_line = base;
			return 1;
		}
	}
	return 0;
}
