/* Go-compatible string primitives for the Dockerfile frontend.
 *
 * BuildKit is written in Go, and what a Dockerfile means depends in small
 * ways on Go's string handling: how invalid UTF-8 decodes, which runes
 * unicode.IsSpace accepts, how strconv.Quote prints a value. The parser,
 * the shell lexer and the .dockerignore matcher share these helpers so that
 * they agree with BuildKit and with each other.
 *
 * Also here: a growable byte buffer with a hard size limit and a sticky
 * error, so that code building strings byte by byte checks once at the end
 * instead of after every append. */
#ifndef KILN_GOSTR_H
#define KILN_GOSTR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GOSTR_RUNE_ERROR 0xFFFDu

/* Decode the rune at s[0..n), n > 0, as Go's utf8.DecodeRune does: an
 * invalid, truncated, overlong or surrogate sequence yields U+FFFD with
 * width 1. Returns the width in bytes (1..4). */
size_t gostr_decode(const char *s, size_t n, uint32_t *ret_rune);
/* Encode r as UTF-8 into out; a rune that cannot be encoded (surrogate,
 * > U+10FFFF) becomes U+FFFD. Returns the width in bytes (1..4). */
size_t gostr_encode(uint32_t r, char out[4]);

/* unicode.IsSpace, IsLetter, IsDigit, strconv.IsPrint and unicode.ToLower
 * (simple case mapping) from Go's standard library. */
bool gostr_is_space(uint32_t r);
bool gostr_is_letter(uint32_t r);
bool gostr_is_digit(uint32_t r);
bool gostr_is_print(uint32_t r);
uint32_t gostr_to_lower(uint32_t r);

/* Length of the run of unicode.IsSpace runes at the start of s[0..n)
 * (bytes.TrimLeftFunc(s, unicode.IsSpace)), and of the run at its end. */
size_t gostr_space_prefix(const char *s, size_t n);
size_t gostr_space_suffix(const char *s, size_t n);

/* A growable buffer. Every append either succeeds or sets err (first
 * failure wins) and turns later appends into no-ops; data is always
 * NUL-terminated when non-NULL. The buffer never grows past max bytes. */
struct gbuf {
	char *data;
	size_t len;
	size_t cap;
	size_t max;
	int err;                /* 0, -ENOMEM or -E2BIG */
};

void gbuf_init(struct gbuf *b, size_t max);
void gbuf_release(struct gbuf *b);
void gbuf_put(struct gbuf *b, const void *p, size_t n);
void gbuf_putc(struct gbuf *b, char c);
void gbuf_puts(struct gbuf *b, const char *s);
/* Append r as UTF-8 (gostr_encode). */
void gbuf_put_rune(struct gbuf *b, uint32_t r);
/* Forget the contents, keep the allocation and the error. */
void gbuf_reset(struct gbuf *b);
/* Hand the NUL-terminated contents to the caller (never NULL on success:
 * an empty buffer gives ""), or return NULL and leave *ret_err set if an
 * append failed or memory ran out. The buffer is left empty either way.
 * ret_len may be NULL. */
char *gbuf_detach(struct gbuf *b, size_t *ret_len, int *ret_err);

/* Append Go's strconv.Quote(s[0..n)) to b: double quotes around the value,
 * printable runes raw, \a \b \f \n \r \t \v, other controls and invalid
 * bytes as \xNN, other non-printable runes as \uNNNN or \UNNNNNNNN. */
void gostr_quote(struct gbuf *b, const char *s, size_t n);

/* encoding/json, as json.Decoder reads it. All take the text s[0..n) and a
 * position *pos that they advance; whitespace is " \t\n\r" only. */
void gostr_json_ws(const char *s, size_t n, size_t *pos);
/* The string at s[*pos] == '"', decoded into out (may be NULL to only
 * skip it): escapes resolved, a lone surrogate or an invalid byte turned
 * into U+FFFD. Returns 0, or -1 on a syntax error. */
int gostr_json_string(const char *s, size_t n, size_t *pos, struct gbuf *out);
/* Skip one value of any type, checking its syntax (nesting at most 10000,
 * as encoding/json). *ret_overflow is set when a number does not fit a
 * float64, which encoding/json reports while decoding, not as a syntax
 * error. Returns 0, or -1 on a syntax error. */
int gostr_json_value(const char *s, size_t n, size_t *pos, bool *ret_overflow);

#endif
