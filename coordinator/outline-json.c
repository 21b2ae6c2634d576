/* JSON text exactly as Go's json.MarshalIndent(v, "", "  ") writes the
 * structs of BuildKit's subrequests: two-space indentation, ": " after
 * keys, strings escaped the encoding/json way (HTML-safe: < > & as
 * \u003c \u003e \u0026, U+2028/U+2029 escaped, invalid UTF-8 as
 * \ufffd), []byte as padded base64. Written piece by piece by the
 * callers, which know the struct layouts and their omitempty rules. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "gostr.h"
#include "outline-internal.h"

void
ol_json_str(struct gbuf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t i = 0;

	gbuf_putc(b, '"');
	while (i < n) {
		unsigned char c = (unsigned char) s[i];
		uint32_t r;
		size_t w;

		if (c < 0x80) {
			i++;
			switch (c) {
			case '"': gbuf_put(b, "\\\"", 2); continue;
			case '\\': gbuf_put(b, "\\\\", 2); continue;
			case '\b': gbuf_put(b, "\\b", 2); continue;
			case '\f': gbuf_put(b, "\\f", 2); continue;
			case '\n': gbuf_put(b, "\\n", 2); continue;
			case '\r': gbuf_put(b, "\\r", 2); continue;
			case '\t': gbuf_put(b, "\\t", 2); continue;
			}
			if (c < 0x20 || c == '<' || c == '>' || c == '&') {
				gbuf_put(b, "\\u00", 4);
				gbuf_putc(b, hex[c >> 4]);
				gbuf_putc(b, hex[c & 15]);
			} else {
				gbuf_putc(b, (char) c);
			}
			continue;
		}
		w = gostr_decode(s + i, n - i, &r);
		if (r == GOSTR_RUNE_ERROR && w == 1) {
			gbuf_puts(b, "\\ufffd");
		} else if (r == 0x2028 || r == 0x2029) {
			gbuf_puts(b, r == 0x2028 ? "\\u2028" : "\\u2029");
		} else {
			gbuf_put(b, s + i, w);
		}
		i += w;
	}
	gbuf_putc(b, '"');
}

void
ol_json_nl(struct gbuf *b, int depth)
{
	gbuf_putc(b, '\n');
	for (int i = 0; i < depth; i++)
		gbuf_put(b, "  ", 2);
}

/* Start member key of an object at depth (the object's own depth + 1). */
void
ol_json_key(struct gbuf *b, bool *first, int depth, const char *key)
{
	if (!*first)
		gbuf_putc(b, ',');
	*first = false;
	ol_json_nl(b, depth);
	ol_json_str(b, key, strlen(key));
	gbuf_put(b, ": ", 2);
}

void
ol_json_loc(struct gbuf *b, int depth, const struct loc *l)
{
	bool first = true;

	/* {"ranges": [{"start": {"line": N}, "end": {"line": M}}]} */
	gbuf_putc(b, '{');
	ol_json_key(b, &first, depth + 1, "ranges");
	gbuf_putc(b, '[');
	ol_json_nl(b, depth + 2);
	gbuf_putc(b, '{');
	for (int k = 0; k < 2; k++) {
		int line = k ? l->end : l->start;
		bool first_key = k == 0;
		char num[16];

		ol_json_key(b, &first_key, depth + 3, k ? "end" : "start");
		if (line) {
			gbuf_putc(b, '{');
			ol_json_nl(b, depth + 4);
			snprintf(num, sizeof(num), "%d", line);
			gbuf_puts(b, "\"line\": ");
			gbuf_puts(b, num);
			ol_json_nl(b, depth + 3);
			gbuf_putc(b, '}');
		} else {
			gbuf_put(b, "{}", 2);
		}
	}
	ol_json_nl(b, depth + 2);
	gbuf_putc(b, '}');
	ol_json_nl(b, depth + 1);
	gbuf_putc(b, ']');
	ol_json_nl(b, depth);
	gbuf_putc(b, '}');
}

void
ol_json_sources(struct gbuf *b, bool *first, const char *src, size_t len)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *s = (const unsigned char *) src;
	size_t i;

	ol_json_key(b, first, 1, "sources");
	gbuf_putc(b, '[');
	ol_json_nl(b, 2);
	gbuf_putc(b, '"');
	for (i = 0; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t) s[i] << 16 | (uint32_t) s[i + 1] << 8 | s[i + 2];

		gbuf_putc(b, tab[v >> 18]);
		gbuf_putc(b, tab[(v >> 12) & 63]);
		gbuf_putc(b, tab[(v >> 6) & 63]);
		gbuf_putc(b, tab[v & 63]);
	}
	if (len - i == 1) {
		uint32_t v = (uint32_t) s[i] << 16;

		gbuf_putc(b, tab[v >> 18]);
		gbuf_putc(b, tab[(v >> 12) & 63]);
		gbuf_put(b, "==", 2);
	} else if (len - i == 2) {
		uint32_t v = (uint32_t) s[i] << 16 | (uint32_t) s[i + 1] << 8;

		gbuf_putc(b, tab[v >> 18]);
		gbuf_putc(b, tab[(v >> 12) & 63]);
		gbuf_putc(b, tab[(v >> 6) & 63]);
		gbuf_putc(b, '=');
	}
	gbuf_putc(b, '"');
	ol_json_nl(b, 1);
	gbuf_putc(b, ']');
}

void
ol_json_str_member(struct gbuf *b, bool *first, int depth, const char *key, const char *v)
{
	if (!v || !*v)
		return;                 /* omitempty */
	ol_json_key(b, first, depth, key);
	ol_json_str(b, v, strlen(v));
}

int
ol_json_finish(struct ol *o, struct gbuf *b, char **ret_json)
{
	int e = 0;
	char *s;

	ol_json_nl(b, 0);
	gbuf_putc(b, '}');
	s = gbuf_detach(b, NULL, &e);
	if (!s)
		return e == -E2BIG ? kiln_err_set(o->err, E2BIG, "outline larger than %u bytes",
						  OUTLINE_JSON_MAX) : ol_oom(o);
	*ret_json = s;
	return 0;
}
