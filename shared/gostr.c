/* Go-compatible string primitives: UTF-8 decoding with Go's error rules,
 * the unicode classes Go's standard library answers, strconv.Quote, the
 * part of encoding/json that BuildKit's parser leans on, and a bounded
 * growable buffer.
 *
 * Invariants: decoding never reads past the given length and always makes
 * progress (width >= 1); the class tables are sorted, disjoint ranges that
 * are searched by bisection; JSON nesting is walked with an explicit stack,
 * never by recursion. This is not a Unicode or JSON library: it knows only
 * what BuildKit's parser, lexer and pattern matcher ask of Go. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "gostr.h"

struct uni_range {
	uint32_t lo, hi;
};

/* A run of code points lo, lo+stride, ... hi that all lower-case to
 * themselves plus delta. */
struct uni_case {
	uint32_t lo, hi;
	uint8_t stride;
	int32_t delta;
};

#include "gostr-tables.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define GOSTR_JSON_MAX_DEPTH 10000      /* encoding/json's nesting limit */

size_t
gostr_decode(const char *s, size_t n, uint32_t *ret_rune)
{
	const unsigned char *p = (const unsigned char *) s;
	unsigned char c = p[0], lo = 0x80, hi = 0xbf;
	size_t need, i;
	uint32_t r;

	if (c < 0x80) {
		*ret_rune = c;
		return 1;
	}
	if (c >= 0xc2 && c <= 0xdf) {
		need = 1;
		r = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		need = 2;
		r = c & 0x0f;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;      /* no surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		need = 3;
		r = c & 0x07;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;      /* nothing above U+10FFFF */
	} else {
		*ret_rune = GOSTR_RUNE_ERROR;
		return 1;
	}
	if (n < need + 1) {
		*ret_rune = GOSTR_RUNE_ERROR;
		return 1;
	}
	for (i = 1; i <= need; i++) {
		unsigned char b = p[i];

		/* Only the first continuation byte has the narrowed range. */
		if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xbf)) {
			*ret_rune = GOSTR_RUNE_ERROR;
			return 1;
		}
		r = (r << 6) | (b & 0x3f);
	}
	*ret_rune = r;
	return need + 1;
}

size_t
gostr_encode(uint32_t r, char out[4])
{
	if ((r >= 0xd800 && r <= 0xdfff) || r > 0x10ffff)
		r = GOSTR_RUNE_ERROR;
	if (r < 0x80) {
		out[0] = (char) r;
		return 1;
	}
	if (r < 0x800) {
		out[0] = (char) (0xc0 | (r >> 6));
		out[1] = (char) (0x80 | (r & 0x3f));
		return 2;
	}
	if (r < 0x10000) {
		out[0] = (char) (0xe0 | (r >> 12));
		out[1] = (char) (0x80 | ((r >> 6) & 0x3f));
		out[2] = (char) (0x80 | (r & 0x3f));
		return 3;
	}
	out[0] = (char) (0xf0 | (r >> 18));
	out[1] = (char) (0x80 | ((r >> 12) & 0x3f));
	out[2] = (char) (0x80 | ((r >> 6) & 0x3f));
	out[3] = (char) (0x80 | (r & 0x3f));
	return 4;
}

static bool
in_ranges(const struct uni_range *t, size_t n, uint32_t r)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (r < t[mid].lo)
			hi = mid;
		else if (r > t[mid].hi)
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

bool
gostr_is_space(uint32_t r)
{
	switch (r) {
	case '\t': case '\n': case '\v': case '\f': case '\r': case ' ':
	case 0x85: case 0xa0: case 0x1680: case 0x2028: case 0x2029:
	case 0x202f: case 0x205f: case 0x3000:
		return true;
	}
	return r >= 0x2000 && r <= 0x200a;
}

bool
gostr_is_letter(uint32_t r)
{
	if (r < 0x80)
		return (r | 0x20) >= 'a' && (r | 0x20) <= 'z';
	return in_ranges(uni_letter, ARRAY_SIZE(uni_letter), r);
}

bool
gostr_is_digit(uint32_t r)
{
	if (r < 0x80)
		return r >= '0' && r <= '9';
	return in_ranges(uni_digit, ARRAY_SIZE(uni_digit), r);
}

bool
gostr_is_print(uint32_t r)
{
	if (r < 0x80)
		return r >= 0x20 && r < 0x7f;
	return in_ranges(uni_print, ARRAY_SIZE(uni_print), r);
}

uint32_t
gostr_to_lower(uint32_t r)
{
	size_t lo = 0, hi = ARRAY_SIZE(uni_lower);

	if (r < 0x80)
		return r >= 'A' && r <= 'Z' ? r + 32 : r;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct uni_case *c = &uni_lower[mid];

		if (r < c->lo) {
			hi = mid;
		} else if (r > c->hi) {
			lo = mid + 1;
		} else {
			if ((r - c->lo) % c->stride)
				return r;
			return (uint32_t) ((int32_t) r + c->delta);
		}
	}
	return r;
}

size_t
gostr_space_prefix(const char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint32_t r;
		size_t w = gostr_decode(s + i, n - i, &r);

		if (!gostr_is_space(r))
			break;
		i += w;
	}
	return i;
}

size_t
gostr_space_suffix(const char *s, size_t n)
{
	size_t end = n;

	/* Walk back to the start of each rune: at most 4 bytes, and a lone
	 * continuation byte decodes as U+FFFD, which is not a space. */
	while (end > 0) {
		size_t start = end - 1, w;
		uint32_t r;

		while (start > 0 && end - start < 4 &&
		       ((unsigned char) s[start] & 0xc0) == 0x80)
			start--;
		w = gostr_decode(s + start, end - start, &r);
		if (start + w != end) {
			/* The lead byte does not cover the tail: the last byte
			 * stands alone and is U+FFFD. */
			break;
		}
		if (!gostr_is_space(r))
			break;
		end = start;
	}
	return n - end;
}

void
gbuf_init(struct gbuf *b, size_t max)
{
	memset(b, 0, sizeof(*b));
	b->max = max;
}

void
gbuf_release(struct gbuf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

static bool
gbuf_grow(struct gbuf *b, size_t n)
{
	size_t want, cap;
	char *p;

	if (b->err)
		return false;
	if (n > b->max || b->len > b->max - n) {
		b->err = -E2BIG;
		return false;
	}
	want = b->len + n + 1;
	if (want <= b->cap)
		return true;
	cap = b->cap ? b->cap : 64;
	while (cap < want)
		cap *= 2;
	p = realloc(b->data, cap);
	if (!p) {
		b->err = -ENOMEM;
		return false;
	}
	b->data = p;
	b->cap = cap;
	return true;
}

void
gbuf_put(struct gbuf *b, const void *p, size_t n)
{
	if (!gbuf_grow(b, n))
		return;
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void
gbuf_putc(struct gbuf *b, char c)
{
	gbuf_put(b, &c, 1);
}

void
gbuf_puts(struct gbuf *b, const char *s)
{
	gbuf_put(b, s, strlen(s));
}

void
gbuf_put_rune(struct gbuf *b, uint32_t r)
{
	char tmp[4];

	gbuf_put(b, tmp, gostr_encode(r, tmp));
}

void
gbuf_reset(struct gbuf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

char *
gbuf_detach(struct gbuf *b, size_t *ret_len, int *ret_err)
{
	char *p;

	if (!b->err && !b->data)
		gbuf_put(b, "", 0);
	if (b->err) {
		if (ret_err)
			*ret_err = b->err;
		gbuf_release(b);
		return NULL;
	}
	p = b->data;
	if (ret_len)
		*ret_len = b->len;
	b->data = NULL;
	b->len = b->cap = 0;
	return p;
}

void
gostr_quote(struct gbuf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t i = 0;

	gbuf_putc(b, '"');
	while (i < n) {
		uint32_t r;
		size_t w = gostr_decode(s + i, n - i, &r);
		char esc[10];
		int shift;

		if (w == 1 && r == GOSTR_RUNE_ERROR) {
			esc[0] = '\\';
			esc[1] = 'x';
			esc[2] = hex[(unsigned char) s[i] >> 4];
			esc[3] = hex[(unsigned char) s[i] & 0xf];
			gbuf_put(b, esc, 4);
			i++;
			continue;
		}
		i += w;
		if (r == '"' || r == '\\') {
			gbuf_putc(b, '\\');
			gbuf_putc(b, (char) r);
			continue;
		}
		if (gostr_is_print(r)) {
			gbuf_put(b, s + i - w, w);
			continue;
		}
		switch (r) {
		case '\a': gbuf_put(b, "\\a", 2); continue;
		case '\b': gbuf_put(b, "\\b", 2); continue;
		case '\f': gbuf_put(b, "\\f", 2); continue;
		case '\n': gbuf_put(b, "\\n", 2); continue;
		case '\r': gbuf_put(b, "\\r", 2); continue;
		case '\t': gbuf_put(b, "\\t", 2); continue;
		case '\v': gbuf_put(b, "\\v", 2); continue;
		}
		if (r < ' ' || r == 0x7f) {
			esc[0] = '\\';
			esc[1] = 'x';
			esc[2] = hex[r >> 4];
			esc[3] = hex[r & 0xf];
			gbuf_put(b, esc, 4);
		} else if (r < 0x10000) {
			esc[0] = '\\';
			esc[1] = 'u';
			for (shift = 12; shift >= 0; shift -= 4)
				esc[2 + (12 - shift) / 4] = hex[(r >> shift) & 0xf];
			gbuf_put(b, esc, 6);
		} else {
			esc[0] = '\\';
			esc[1] = 'U';
			for (shift = 28; shift >= 0; shift -= 4)
				esc[2 + (28 - shift) / 4] = hex[(r >> shift) & 0xf];
			gbuf_put(b, esc, 10);
		}
	}
	gbuf_putc(b, '"');
}

/* ---- encoding/json ---- */

void
gostr_json_ws(const char *s, size_t n, size_t *pos)
{
	while (*pos < n && (s[*pos] == ' ' || s[*pos] == '\t' || s[*pos] == '\n' ||
			    s[*pos] == '\r'))
		(*pos)++;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int
json_u4(const char *s, size_t n, size_t pos, uint32_t *ret)
{
	uint32_t v = 0;
	size_t i;

	if (pos + 6 > n || s[pos] != '\\' || s[pos + 1] != 'u')
		return -1;
	for (i = 0; i < 4; i++) {
		int h = hexval(s[pos + 2 + i]);

		if (h < 0)
			return -1;
		v = v << 4 | (uint32_t) h;
	}
	*ret = v;
	return 0;
}

/* A string at s[*pos] == '"'. Decoded into out when out != NULL. Returns
 * 0, or -1 on a syntax error. */
int
gostr_json_string(const char *s, size_t n, size_t *pos, struct gbuf *out)
{
	size_t p = *pos + 1;

	while (p < n) {
		unsigned char c = (unsigned char) s[p];
		uint32_t r, r2;

		if (c == '"') {
			*pos = p + 1;
			return 0;
		}
		if (c < 0x20)
			return -1;
		if (c != '\\') {
			size_t w = gostr_decode(s + p, n - p, &r);

			if (out && w == 1 && r == GOSTR_RUNE_ERROR)
				gbuf_put_rune(out, GOSTR_RUNE_ERROR);
			else if (out)
				gbuf_put(out, s + p, w);
			p += w;
			continue;
		}
		if (p + 1 >= n)
			return -1;
		switch (s[p + 1]) {
		case '"': case '\\': case '/':
			if (out)
				gbuf_putc(out, s[p + 1]);
			p += 2;
			continue;
		case 'b': if (out) gbuf_putc(out, '\b'); p += 2; continue;
		case 'f': if (out) gbuf_putc(out, '\f'); p += 2; continue;
		case 'n': if (out) gbuf_putc(out, '\n'); p += 2; continue;
		case 'r': if (out) gbuf_putc(out, '\r'); p += 2; continue;
		case 't': if (out) gbuf_putc(out, '\t'); p += 2; continue;
		case 'u':
			if (json_u4(s, n, p, &r) < 0)
				return -1;
			p += 6;
			if (r >= 0xd800 && r < 0xe000) {
				/* a pair decodes to one rune, anything else to U+FFFD */
				if (r < 0xdc00 && json_u4(s, n, p, &r2) == 0 && r2 >= 0xdc00 &&
				    r2 < 0xe000) {
					r = 0x10000 + ((r - 0xd800) << 10) + (r2 - 0xdc00);
					p += 6;
				} else {
					r = GOSTR_RUNE_ERROR;
				}
			}
			if (out)
				gbuf_put_rune(out, r);
			continue;
		}
		return -1;
	}
	return -1;
}

/* A number; *overflow is set when it does not fit a float64, which
 * encoding/json reports as an unmarshal error rather than a syntax one. */
static int
json_number(const char *s, size_t n, size_t *pos, bool *overflow)
{
	size_t p = *pos, start = *pos;
	char tmp[64];
	char *num;
	double d;

	if (p < n && s[p] == '-')
		p++;
	if (p < n && s[p] == '0') {
		p++;
	} else if (p < n && s[p] >= '1' && s[p] <= '9') {
		while (p < n && s[p] >= '0' && s[p] <= '9')
			p++;
	} else {
		return -1;
	}
	if (p < n && s[p] == '.') {
		p++;
		if (p >= n || s[p] < '0' || s[p] > '9')
			return -1;
		while (p < n && s[p] >= '0' && s[p] <= '9')
			p++;
	}
	if (p < n && (s[p] == 'e' || s[p] == 'E')) {
		p++;
		if (p < n && (s[p] == '+' || s[p] == '-'))
			p++;
		if (p >= n || s[p] < '0' || s[p] > '9')
			return -1;
		while (p < n && s[p] >= '0' && s[p] <= '9')
			p++;
	}
	*pos = p;
	if (p - start < sizeof(tmp)) {
		memcpy(tmp, s + start, p - start);
		tmp[p - start] = '\0';
		d = strtod(tmp, NULL);
	} else {
		num = strndup(s + start, p - start);
		if (!num) {
			*overflow = true;       /* cannot tell; treat as undecodable */
			return 0;
		}
		d = strtod(num, NULL);
		free(num);
	}
	if (isinf(d))
		*overflow = true;
	return 0;
}

/* Any JSON value at s[*pos], syntax-checked and skipped without recursion. */
int
gostr_json_value(const char *s, size_t n, size_t *pos, bool *ret_overflow)
{
	_cleanup_free_ char *stack = NULL;
	size_t depth = 0, cap = 0, p = *pos;

	for (;;) {
		/* a value */
		gostr_json_ws(s, n, &p);
		if (p >= n)
			return -1;
		switch (s[p]) {
		case '{': case '[':
			if (depth == GOSTR_JSON_MAX_DEPTH)
				return -1;
			if (depth == cap) {
				char *ns = realloc(stack, cap ? 2 * cap : 16);

				if (!ns)
					return -1;
				stack = ns;
				cap = cap ? 2 * cap : 16;
			}
			stack[depth++] = s[p++];
			gostr_json_ws(s, n, &p);
			if (p < n && s[p] == (stack[depth - 1] == '{' ? '}' : ']')) {
				p++;
				depth--;
				break;
			}
			if (stack[depth - 1] == '{') {
				if (p >= n || s[p] != '"' || gostr_json_string(s, n, &p, NULL) < 0)
					return -1;
				gostr_json_ws(s, n, &p);
				if (p >= n || s[p++] != ':')
					return -1;
			}
			continue;
		case '"':
			if (gostr_json_string(s, n, &p, NULL) < 0)
				return -1;
			break;
		case 't':
			if (n - p < 4 || memcmp(s + p, "true", 4))
				return -1;
			p += 4;
			break;
		case 'f':
			if (n - p < 5 || memcmp(s + p, "false", 5))
				return -1;
			p += 5;
			break;
		case 'n':
			if (n - p < 4 || memcmp(s + p, "null", 4))
				return -1;
			p += 4;
			break;
		default:
			if (json_number(s, n, &p, ret_overflow) < 0)
				return -1;
			break;
		}
		/* after a value: close containers or move to the next member */
		for (;;) {
			if (depth == 0) {
				*pos = p;
				return 0;
			}
			gostr_json_ws(s, n, &p);
			if (p >= n)
				return -1;
			if (s[p] == (stack[depth - 1] == '{' ? '}' : ']')) {
				p++;
				depth--;
				continue;
			}
			if (s[p] != ',')
				return -1;
			p++;
			if (stack[depth - 1] == '{') {
				gostr_json_ws(s, n, &p);
				if (p >= n || s[p] != '"' || gostr_json_string(s, n, &p, NULL) < 0)
					return -1;
				gostr_json_ws(s, n, &p);
				if (p >= n || s[p++] != ':')
					return -1;
			}
			break;
		}
	}
}
