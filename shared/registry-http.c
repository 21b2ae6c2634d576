/* The registry client's HTTP layer: struct xfer, one exchange as the
 * caller sees it, driven with others on a curl multi handle by
 * reg_run_xfers(); and the auth it needs.
 *
 * We never let curl follow redirects or do auth. An xfer that ends in a
 * 3xx is re-issued to the Location, with credentials only when the new URL
 * has the registry's own scheme, host and port. One that ends in 401 learns
 * the WWW-Authenticate challenge (per host), gets a Bearer token (cached
 * per host and scope until shortly before it expires) or uses Basic
 * credentials, and is re-issued; a second refusal is an error that says
 * why. A GET or HEAD broken in transit (or answered 5xx/429) is retried
 * with doubling back-off; a blob download continues where it stopped with
 * a Range request, or starts over when the server ignores the range.
 *
 * Invariants: every response body is bounded (x->mem_max, a blob's
 * descriptor size, REG_ERRBODY_MAX for error bodies, REG_HDR_MAX for the
 * headers we keep); bytes reach the blob store only through a cas_writer
 * that checks the descriptor's digest; credentials and tokens never go to
 * another origin, never over plain http to a token realm we were not told
 * to trust, and never into an error message.
 *
 * Multi handles come from a small pool on struct registry, so that
 * connections live on between calls without a connection cache shared by
 * threads. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <openssl/evp.h>

#include "cas.h"
#include "cleanup.h"
#include "digest.h"
#include "err.h"
#include "log.h"
#include "oci.h"
#include "registry-internal.h"
#include "util.h"

#define REG_ERRBODY_MAX (64u << 10)     /* kept for the error message; the rest is dropped */
#define REG_TOKEN_MAX (1u << 20)
#define REG_HDR_MAX 4096                /* WWW-Authenticate, Location */
#define REG_REDIRECTS_MAX 10
#define REG_AUTH_ROUNDS_MAX 2
#define REG_TOKEN_MIN_S 60              /* the spec's minimum lifetime */
#define REG_TOKEN_MAX_S (24 * 3600)
#define REG_TOKEN_MARGIN_MS 10000       /* renew this long before expiry */
#define REG_BACKOFF_MAX_MS 5000

/* ---- URLs, origins, handles ---- */

/* Percent-encode everything but RFC 3986's unreserved characters. */
static char *
url_escape(const char *s)
{
	size_t n = strlen(s);
	char *out = malloc(3 * n + 1), *o = out;

	if (!out)
		return NULL;
	for (; *s; s++) {
		unsigned char c = (unsigned char) *s;

		if (isascii(c) && (isalnum(c) || strchr("-._~", c)))
			*o++ = (char) c;
		else
			o += sprintf(o, "%%%02X", c);
	}
	*o = '\0';
	return out;
}

static char *
base64_encode(const void *data, size_t len)
{
	char *out = malloc(4 * ((len + 2) / 3) + 1);

	if (out)
		EVP_EncodeBlock((unsigned char *) out, data, (int) len);
	return out;
}

/* The URL without its query, for messages: upload URLs carry state
 * tokens that are noise to a reader. */
const char *
reg_url_for_msg(const char *url, char *buf, size_t size)
{
	size_t n = strcspn(url, "?#");

	snprintf(buf, size, "%.*s", (int) (n < size ? n : size - 1), url);
	return buf;
}

/* Resolve loc (absolute or relative) against base; NULL on failure. */
char *
reg_url_join(const char *base, const char *loc)
{
	CURLU *u = curl_url();
	char *s = NULL, *out = NULL;

	if (!u)
		return NULL;
	if (curl_url_set(u, CURLUPART_URL, base, 0) == CURLUE_OK &&
	    curl_url_set(u, CURLUPART_URL, loc, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_URL, &s, 0) == CURLUE_OK) {
		out = strdup(s);
		curl_free(s);
	}
	curl_url_cleanup(u);
	return out;
}

/* url with "name=value" appended to its query (value percent-encoded). */
char *
reg_url_add_query(const char *url, const char *name, const char *value)
{
	_cleanup_free_ char *esc = url_escape(value);

	if (!esc)
		return NULL;
	return kiln_strdupf("%s%s%s=%s", url, strchr(url, '?') ? "&" : "?", name, esc);
}

int
reg_url_origin(const char *url, struct origin *ret)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *port = NULL;
	int r = -EINVAL;

	if (!u)
		return -ENOMEM;
	if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK &&
	    (strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0) &&
	    strlen(host) < sizeof(ret->host)) {
		snprintf(ret->scheme, sizeof(ret->scheme), "%s", scheme);
		copy_lower(ret->host, sizeof(ret->host), host, strlen(host));
		ret->port = strtol(port, NULL, 10);
		r = 0;
	}
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return r;
}

static bool
origin_equal(const struct origin *a, const struct origin *b)
{
	return strcmp(a->scheme, b->scheme) == 0 && strcmp(a->host, b->host) == 0 &&
	       a->port == b->port;
}

static CURLM *
pool_take(struct registry *reg)
{
	CURLM *m = NULL;

	pthread_mutex_lock(&reg->lock);
	if (reg->n_pool > 0)
		m = reg->pool[--reg->n_pool];
	pthread_mutex_unlock(&reg->lock);
	return m ? m : curl_multi_init();
}

static void
pool_give(struct registry *reg, CURLM *m)
{
	pthread_mutex_lock(&reg->lock);
	if (reg->n_pool < REG_POOL_MAX) {
		reg->pool[reg->n_pool++] = m;
		m = NULL;
	}
	pthread_mutex_unlock(&reg->lock);
	if (m)
		curl_multi_cleanup(m);
}

/* localhost, [::1] or an IPv4 address in 127.0.0.0/8, with or without a
 * port. A name that merely starts with "127." is not loopback. */
static bool
is_loopback(const char *host_port)
{
	size_t n = host_port[0] == '[' ? strcspn(host_port, "]") + 1 : strcspn(host_port, ":");
	struct in_addr a;
	char h[64];

	if ((n == 9 && strncmp(host_port, "localhost", 9) == 0) ||
	    (n == 5 && strncmp(host_port, "[::1]", 5) == 0))
		return true;
	if (n >= sizeof(h))
		return false;
	memcpy(h, host_port, n);
	h[n] = '\0';
	return inet_pton(AF_INET, h, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

/* Plain http for loopback and for hosts listed as insecure ("host" for
 * any port, "host:port" for one). */
bool
reg_plain_http(const struct registry *reg, const char *host)
{
	size_t hn = host[0] == '[' ? strcspn(host, "]") + 1 : strcspn(host, ":");

	if (is_loopback(host))
		return true;
	for (size_t i = 0; i < reg->n_insecure; i++) {
		const char *e = reg->insecure[i];

		if (strcmp(e, host) == 0 || (strlen(e) == hn && strncmp(e, host, hn) == 0))
			return true;
	}
	return false;
}

static bool
on_origin(const struct endpoint *ep, const char *url)
{
	struct origin o;

	return reg_url_origin(url, &o) == 0 && origin_equal(&o, &ep->origin);
}

/* ---- exchanges ---- */

void
reg_xfer_init(struct xfer *x, struct registry *reg, const struct endpoint *ep, const char *method,
	      char *url)
{
	memset(x, 0, sizeof(*x));
	x->reg = reg;
	x->ep = ep;
	x->method = method;
	x->url = url;
	x->origin = url && on_origin(ep, url);
	x->idempotent = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
	x->body_fd = -1;
	x->clen = -1;
}

void
reg_xfer_release(struct xfer *x)
{
	if (x->easy)
		curl_easy_cleanup(x->easy);
	curl_slist_free_all(x->hdrs);
	if (x->w)
		cas_writer_abort(x->w);
	if (x->claimed)
		reg_inflight_remove(x->reg, x->cas, &x->desc->digest);
	free(x->url);
	free(x->mem);
	free(x->ebody);
	free(x->location);
	free(x->www_auth);
	memset(x, 0, sizeof(*x));
	x->body_fd = -1;
}

static int
xfer_fail(struct xfer *x, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Record an error found inside a curl callback; the transfer is aborted
 * and not retried. */
static int
xfer_fail(struct xfer *x, int code, const char *fmt, ...)
{
	va_list ap;

	x->fatal = true;
	x->err.code = code;
	va_start(ap, fmt);
	vsnprintf(x->err.msg, sizeof(x->err.msg), fmt, ap);
	va_end(ap);
	return -code;
}

static const char *
status_reason(long status)
{
	switch (status) {
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 416: return "Range Not Satisfiable";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return "";
	}
}

static int
status_errno(long status)
{
	switch (status) {
	case 401: return KILN_EAUTH;
	case 403: return EACCES;
	case 404: return ENOENT;
	case 413: return EFBIG;
	case 429: return EAGAIN;
	default: return status >= 500 ? EIO : EPROTO;
	}
}

/* "CODE: message; CODE: message" from a registry's error JSON, a token
 * server's {"details"/"error"/"message"}, or the first line of a short
 * text body. */
static void
describe_error_body(const char *body, size_t len, char *out, size_t size)
{
	_cleanup_json_ json_t *j = NULL;
	json_t *errors, *e;
	size_t i, n = 0;

	out[0] = '\0';
	if (!body || len == 0)
		return;
	j = json_loadb(body, len, 0, NULL);
	if (j && json_is_object(j)) {
		errors = json_object_get(j, "errors");
		json_array_foreach(errors, i, e) {
			const char *code = json_string_value(json_object_get(e, "code"));
			const char *msg = json_string_value(json_object_get(e, "message"));

			if (i == 3 || n >= size - 1)
				break;
			n += (size_t) snprintf(out + n, size - n, "%s%s%s%s", i ? "; " : "",
					       code ? code : "", code && msg ? ": " : "",
					       msg ? msg : "");
		}
		if (n == 0) {
			static const char *const keys[] = { "details", "error_description", "error",
							    "message" };

			for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
				const char *s = json_string_value(json_object_get(j, keys[i]));

				if (s && *s) {
					snprintf(out, size, "%.200s", s);
					break;
				}
			}
		}
		return;
	}
	for (i = 0; i < len && i < 200 && body[i] != '\n' && body[i] != '\r'; i++)
		if (!isprint((unsigned char) body[i]) && body[i] != '\t')
			return;
	snprintf(out, size, "%.*s", (int) i, body);
}

static int
http_error(struct xfer *x, const char *note_fmt, ...) __attribute__((format(printf, 2, 3)));

/* The error for a final non-2xx answer: method, URL, status, the body's
 * error text, and an optional note in parentheses. */
static int
http_error(struct xfer *x, const char *note_fmt, ...)
{
	char u[384], detail[320], note[256] = "";
	const char *reason = x->reason[0] ? x->reason : status_reason(x->status);

	describe_error_body(x->ebody, x->ebody_len, detail, sizeof(detail));
	if (note_fmt) {
		va_list ap;

		va_start(ap, note_fmt);
		vsnprintf(note, sizeof(note), note_fmt, ap);
		va_end(ap);
	}
	return kiln_err_set(&x->err, status_errno(x->status), "%s %s: %ld%s%s%s%s%s%s%s", x->method,
			    reg_url_for_msg(x->url, u, sizeof(u)), x->status, reason[0] ? " " : "",
			    reason, detail[0] ? ": " : "", detail, note[0] ? " (" : "", note,
			    note[0] ? ")" : "");
}

static void
response_reset(struct xfer *x)
{
	x->status = 0;
	x->reason[0] = x->ctype[0] = x->dcd[0] = x->content_range[0] = x->range[0] = '\0';
	free(x->location);
	x->location = NULL;
	free(x->www_auth);
	x->www_auth = NULL;
	x->clen = -1;
	x->ebody_len = 0;
}

static void
set_header_str(char *dst, size_t size, const char *v, size_t n)
{
	snprintf(dst, size, "%.*s", (int) (n < size ? n : size - 1), v);
}

/* Headers are complete and the answer is final: prepare the sink. */
static int
headers_complete(struct xfer *x)
{
	struct registry *reg = x->reg;

	if (x->status < 200 || x->status >= 300)
		return 0;
	if (x->sink == SINK_MEM) {
		if (x->clen >= 0 && (uint64_t) x->clen > x->mem_max)
			return xfer_fail(x, EFBIG, "response of %lld bytes is over the limit of %zu",
					 (long long) x->clen, x->mem_max);
		x->mem_len = 0;
	} else if (x->sink == SINK_CAS) {
		uint64_t have = x->w ? cas_writer_size(x->w) : 0;

		if (x->status == 206) {
			unsigned long long a, b;

			if (sscanf(x->content_range, "bytes %llu-%llu/", &a, &b) != 2 || a != have)
				return xfer_fail(x, EPROTO,
						 "partial content '%s' does not continue at byte %llu",
						 x->content_range, (unsigned long long) have);
		} else {
			/* The server ignored our Range (or we sent none): start over. */
			if (x->w && have > 0) {
				cas_writer_abort(x->w);
				x->w = NULL;
			}
			if (x->clen >= 0 && x->clen != x->desc->size)
				return xfer_fail(x, EBADMSG,
						 "registry sends %lld bytes for a blob of %lld",
						 (long long) x->clen, (long long) x->desc->size);
		}
		if (!x->w && cas_writer_new(x->cas, &x->desc->digest, &x->w, &x->err) < 0) {
			x->fatal = true;
			return -x->err.code;
		}
		(void) reg;
	}
	return 0;
}

static size_t
on_header(char *buf, size_t size, size_t nitems, void *ud)
{
	struct xfer *x = ud;
	size_t len = size * nitems, n = len, nlen;
	const char *colon, *v;

	while (n > 0 && (buf[n - 1] == '\r' || buf[n - 1] == '\n'))
		n--;
	if (n >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
		const char *sp = memchr(buf, ' ', n), *rs;
		char *end;

		/* A new response, e.g. after "100 Continue": forget the last. */
		response_reset(x);
		if (!sp)
			return len;
		x->status = strtol(sp + 1, &end, 10);
		rs = end;
		while (rs < buf + n && *rs == ' ')
			rs++;
		set_header_str(x->reason, sizeof(x->reason), rs, (size_t) (buf + n - rs));
		return len;
	}
	if (n == 0) {
		if (x->status >= 200 && headers_complete(x) < 0)
			return 0;
		return len;
	}
	colon = memchr(buf, ':', n);
	if (!colon)
		return len;
	nlen = (size_t) (colon - buf);
	v = colon + 1;
	while (v < buf + n && (*v == ' ' || *v == '\t'))
		v++;
	n = (size_t) (buf + n - v);
	while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;

#define IS(name) (nlen == sizeof(name) - 1 && strncasecmp(buf, name, nlen) == 0)
	if (IS("Content-Type")) {
		set_header_str(x->ctype, sizeof(x->ctype), v, strcspn(v, ";") < n ? strcspn(v, ";") : n);
		for (size_t i = strlen(x->ctype); i > 0 && x->ctype[i - 1] == ' '; i--)
			x->ctype[i - 1] = '\0';
	} else if (IS("Docker-Content-Digest")) {
		set_header_str(x->dcd, sizeof(x->dcd), v, n);
	} else if (IS("Content-Range")) {
		set_header_str(x->content_range, sizeof(x->content_range), v, n);
	} else if (IS("Range")) {
		set_header_str(x->range, sizeof(x->range), v, n);
	} else if (IS("Content-Length")) {
		char tmp[24];

		set_header_str(tmp, sizeof(tmp), v, n);
		x->clen = isdigit((unsigned char) tmp[0]) ? strtoll(tmp, NULL, 10) : -1;
	} else if (IS("Location")) {
		free(x->location);
		x->location = n < REG_HDR_MAX ? strndup(v, n) : NULL;
	} else if (IS("WWW-Authenticate")) {
		/* Several headers are one comma-separated list. */
		size_t old = x->www_auth ? strlen(x->www_auth) : 0;
		char *s;

		if (old + n + 3 < REG_HDR_MAX && (s = realloc(x->www_auth, old + n + 3))) {
			if (old)
				memcpy(s + old, ", ", 2), old += 2;
			memcpy(s + old, v, n);
			s[old + n] = '\0';
			x->www_auth = s;
		}
	}
#undef IS
	return len;
}

static size_t
on_body(char *buf, size_t size, size_t nitems, void *ud)
{
	struct xfer *x = ud;
	size_t len = size * nitems;

	if (x->status < 200 || x->status >= 300 || x->sink == SINK_DISCARD) {
		size_t keep = REG_ERRBODY_MAX - x->ebody_len;
		char *s;

		if (keep > len)
			keep = len;
		if (keep && (s = realloc(x->ebody, x->ebody_len + keep + 1))) {
			memcpy(s + x->ebody_len, buf, keep);
			x->ebody_len += keep;
			s[x->ebody_len] = '\0';
			x->ebody = s;
		}
		return len;
	}
	if (x->sink == SINK_MEM) {
		if (len > x->mem_max - x->mem_len) {
			xfer_fail(x, EFBIG, "response is over the limit of %zu bytes", x->mem_max);
			return 0;
		}
		if (x->mem_len + len + 1 > x->mem_cap) {
			size_t cap = x->mem_cap ? x->mem_cap : 16384;
			char *s;

			while (cap < x->mem_len + len + 1)
				cap *= 2;
			s = realloc(x->mem, cap);
			if (!s) {
				xfer_fail(x, ENOMEM, "response buffer");
				return 0;
			}
			x->mem = s;
			x->mem_cap = cap;
		}
		memcpy(x->mem + x->mem_len, buf, len);
		x->mem_len += len;
		x->mem[x->mem_len] = '\0';
		return len;
	}
	/* SINK_CAS */
	if (!x->w)
		return 0;
	if (len > (uint64_t) x->desc->size - cas_writer_size(x->w)) {
		xfer_fail(x, EBADMSG, "more bytes than the blob's size of %lld",
			  (long long) x->desc->size);
		return 0;
	}
	if (cas_writer_write(x->w, buf, len, &x->err) < 0) {
		x->fatal = true;
		return 0;
	}
	stat_add(&x->reg->stats.bytes_fetched, len);
	return len;
}

static size_t
on_read(char *buf, size_t size, size_t nitems, void *ud)
{
	struct xfer *x = ud;
	uint64_t want = size * nitems, left = x->body_len - x->body_pos;

	if (want > left)
		want = left;
	if (want == 0)
		return 0;
	if (x->body) {
		memcpy(buf, x->body + x->body_off + x->body_pos, want);
	} else {
		ssize_t r = pread(x->body_fd, buf, want, (off_t) (x->body_off + x->body_pos));

		if (r <= 0) {
			xfer_fail(x, r < 0 ? errno : EIO, "read upload body");
			return CURL_READFUNC_ABORT;
		}
		want = (uint64_t) r;
	}
	x->body_pos += want;
	return want;
}

/* ---- auth ---- */

static struct cred *
cred_find(struct registry *reg, const char *host)
{
	for (struct cred *c = reg->creds; c; c = c->next)
		if (strcmp(c->host, host) == 0)
			return c;
	return NULL;
}

static struct host_auth *
host_auth_find(struct registry *reg, const char *host)
{
	for (struct host_auth *a = reg->auths; a; a = a->next)
		if (strcmp(a->host, host) == 0)
			return a;
	return NULL;
}

/* Called with reg->lock held. Expired tokens are dropped on the way. */
static struct token *
token_find(struct registry *reg, const char *host, const char *scope)
{
	int64_t now = kiln_now_ms();

	for (struct token **pp = &reg->tokens; *pp;) {
		struct token *t = *pp;

		if (t->expires_ms <= now) {
			*pp = t->next;
			explicit_bzero(t->value, strlen(t->value));
			free(t->value);
			free(t->scope);
			free(t);
			continue;
		}
		if (strcmp(t->host, host) == 0 && strcmp(t->scope, scope) == 0)
			return t;
		pp = &t->next;
	}
	return NULL;
}

static void
token_drop(struct registry *reg, const char *host, const char *scope)
{
	struct token *t;

	pthread_mutex_lock(&reg->lock);
	t = token_find(reg, host, scope);
	if (t)
		t->expires_ms = 0;      /* swept by the next token_find */
	pthread_mutex_unlock(&reg->lock);
}

static void
token_store(struct registry *reg, const char *host, const char *scope, const char *value,
	    int64_t expires_ms)
{
	struct token *t = calloc(1, sizeof(*t));

	if (!t)
		return;                 /* only a cache */
	snprintf(t->host, sizeof(t->host), "%s", host);
	t->scope = strdup(scope);
	t->value = strdup(value);
	if (!t->scope || !t->value) {
		free(t->scope);
		free(t->value);
		free(t);
		return;
	}
	t->expires_ms = expires_ms;
	pthread_mutex_lock(&reg->lock);
	t->next = reg->tokens;
	reg->tokens = t;
	pthread_mutex_unlock(&reg->lock);
}

static char *
basic_header(const char *user, const char *pass)
{
	_cleanup_free_ char *plain = kiln_strdupf("%s:%s", user, pass);
	_cleanup_free_ char *b64 = NULL;
	char *h;

	if (!plain)
		return NULL;
	b64 = base64_encode(plain, strlen(plain));
	explicit_bzero(plain, strlen(plain));
	if (!b64)
		return NULL;
	h = kiln_strdupf("Authorization: Basic %s", b64);
	explicit_bzero(b64, strlen(b64));
	return h;
}

static void
free_secret(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

static void
free_secretp(char **s)
{
	free_secret(*s);
}

#define _cleanup_secret_ _cleanup_(free_secretp)

/* GET a token for scope from the challenge's realm, with Basic
 * credentials when we have some (an anonymous token otherwise). */
static int
token_fetch(struct registry *reg, const struct endpoint *ep, const struct registry_challenge *ch,
	    const char *scope, const char *user, const char *pass, char **ret_token,
	    int64_t *ret_expires_ms, struct kiln_err *err)
{
	_cleanup_free_ char *url = NULL;
	_cleanup_secret_ char *auth = NULL;
	_cleanup_json_ json_t *j = NULL;
	struct origin ro;
	struct xfer x;
	const char *tok;
	json_int_t expires = 0;
	int r;

	if (reg_url_origin(ch->realm, &ro) < 0)
		return kiln_err_set(err, EPROTO, "token realm '%.200s' of '%s' is not an http(s) URL",
				    ch->realm, ep->host);
	if (user && strcmp(ro.scheme, "http") == 0 && !reg_plain_http(reg, ro.host) &&
	    !reg_plain_http(reg, ep->host))
		return kiln_err_set(err, EACCES, "refusing to send credentials for '%s' to "
				    "plain-http token realm '%.200s'", ep->host, ch->realm);
	url = strdup(ch->realm);
	if (!url)
		return kiln_err_set(err, ENOMEM, "token request");
	if (ch->service[0]) {
		char *u = reg_url_add_query(url, "service", ch->service);

		free(url);
		url = u;
	}
	for (const char *s = scope; url && *s;) {
		size_t n = strcspn(s, " ");
		_cleanup_free_ char *one = strndup(s, n);
		char *u = one ? reg_url_add_query(url, "scope", one) : NULL;

		free(url);
		url = u;
		s += n;
		while (*s == ' ')
			s++;
	}
	if (url && user) {
		char *u = reg_url_add_query(url, "account", user);

		free(url);
		url = u;
	}
	if (!url)
		return kiln_err_set(err, ENOMEM, "token request");
	if (user) {
		auth = basic_header(user, pass);
		if (!auth)
			return kiln_err_set(err, ENOMEM, "token request");
	}

	reg_xfer_init(&x, reg, ep, "GET", STEAL_PTR(url));
	x.origin = false;
	x.auth_override = auth;
	x.no_redirect = true;
	x.accept = "application/json";
	x.sink = SINK_MEM;
	x.mem_max = REG_TOKEN_MAX;
	stat_add(&reg->stats.token_requests, 1);
	log_debug("registry: token for '%s' from '%.200s'%s", scope, ch->realm,
		  user ? "" : " (anonymous)");
	r = reg_run_one(reg, &x, err);
	if (r < 0) {
		reg_xfer_release(&x);
		return kiln_err_wrap(err, "token for '%s'%s", scope, user ? "" : " (anonymous)");
	}
	j = json_loadb(x.mem ? x.mem : "", x.mem_len, 0, NULL);
	reg_xfer_release(&x);
	tok = json_string_value(json_object_get(j, "token"));
	if (!tok || !*tok)
		tok = json_string_value(json_object_get(j, "access_token"));
	if (!tok || !*tok)
		return kiln_err_set(err, EPROTO, "token for '%s' from '%.200s': no token in the answer",
				    scope, ch->realm);
	if (json_is_integer(json_object_get(j, "expires_in")))
		expires = json_integer_value(json_object_get(j, "expires_in"));
	if (expires < REG_TOKEN_MIN_S)
		expires = REG_TOKEN_MIN_S;
	if (expires > REG_TOKEN_MAX_S)
		expires = REG_TOKEN_MAX_S;
	*ret_token = strdup(tok);
	if (!*ret_token)
		return kiln_err_set(err, ENOMEM, "token");
	*ret_expires_ms = kiln_now_ms() + (int64_t) expires * 1000 - REG_TOKEN_MARGIN_MS;
	return 0;
}

/* The Authorization header for x, from what we learned about its host:
 * NULL when we know no challenge yet (the registry will tell us). */
static int
auth_header(struct xfer *x, char **ret)
{
	struct registry *reg = x->reg;
	const struct endpoint *ep = x->ep;
	_cleanup_secret_ char *user = NULL, *pass = NULL, *tok = NULL;
	struct registry_challenge ch;
	struct host_auth *ha;
	struct token *t;
	struct cred *c;
	int64_t expires = 0;
	int r;

	*ret = NULL;
	pthread_mutex_lock(&reg->lock);
	ha = host_auth_find(reg, ep->host);
	if (!ha) {
		pthread_mutex_unlock(&reg->lock);
		return 0;
	}
	ch = ha->ch;
	c = cred_find(reg, ep->host);
	if (ch.scheme == REGISTRY_AUTH_BASIC) {
		if (c)
			*ret = basic_header(c->username, c->password);
		pthread_mutex_unlock(&reg->lock);
		return c && !*ret ? xfer_fail(x, ENOMEM, "auth header") : 0;
	}
	t = token_find(reg, ep->host, x->scope);
	if (t) {
		*ret = kiln_strdupf("Authorization: Bearer %s", t->value);
		pthread_mutex_unlock(&reg->lock);
		return *ret ? 0 : xfer_fail(x, ENOMEM, "auth header");
	}
	if (c) {
		user = strdup(c->username);
		pass = strdup(c->password);
	}
	pthread_mutex_unlock(&reg->lock);
	if (c && (!user || !pass))
		return xfer_fail(x, ENOMEM, "auth header");

	r = token_fetch(reg, ep, &ch, x->scope, user, pass, &tok, &expires, &x->err);
	if (r < 0) {
		x->fatal = true;
		return r;
	}
	token_store(reg, ep->host, x->scope, tok, expires);
	*ret = kiln_strdupf("Authorization: Bearer %s", tok);
	return *ret ? 0 : xfer_fail(x, ENOMEM, "auth header");
}

/* A 401 from the registry: learn its challenge so that the next attempt
 * carries what it asks for, or fail saying why we cannot. */
static int
auth_learn(struct xfer *x)
{
	struct registry *reg = x->reg;
	const char *host = x->ep->host;
	struct registry_challenge ch;
	struct host_auth *ha;
	bool have_cred;

	if (!x->www_auth || registry_challenge_parse(x->www_auth, &ch) < 0)
		return http_error(x, "no Basic or Bearer challenge in WWW-Authenticate");
	pthread_mutex_lock(&reg->lock);
	have_cred = cred_find(reg, host) != NULL;
	ha = host_auth_find(reg, host);
	if (!ha && (ha = calloc(1, sizeof(*ha)))) {
		snprintf(ha->host, sizeof(ha->host), "%s", host);
		ha->next = reg->auths;
		reg->auths = ha;
	}
	if (ha)
		ha->ch = ch;
	pthread_mutex_unlock(&reg->lock);
	if (!ha)
		return kiln_err_set(&x->err, ENOMEM, "auth state");

	if (ch.scheme == REGISTRY_AUTH_BASIC) {
		if (!have_cred)
			return http_error(x, "no credentials for '%s'%s%s", host,
					  reg->config_path ? " in " : "",
					  reg->config_path ? reg->config_path : "");
		if (x->sent_auth)
			return http_error(x, "the registry rejected the credentials for '%s'", host);
	} else {
		if (x->sent_auth)
			token_drop(reg, host, x->scope);
		if (x->sent_auth && (strcmp(ch.error, "insufficient_scope") == 0 ||
				     x->auth_rounds + 1 >= REG_AUTH_ROUNDS_MAX))
			return http_error(x, "%s '%s'", have_cred ? "the token does not grant" :
					  "anonymous access denied; no credentials for", have_cred ?
					  x->scope : host);
	}
	if (x->auth_rounds >= REG_AUTH_ROUNDS_MAX)
		return http_error(x, "authentication failed for '%s'", host);
	x->auth_rounds++;
	return 0;
}

/* ---- running exchanges ---- */

static bool
is_redirect(long status)
{
	return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

static bool
transient(CURLcode cc)
{
	switch (cc) {
	case CURLE_PARTIAL_FILE:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return true;
	default:
		return false;
	}
}

static int
curl_errno(CURLcode cc)
{
	switch (cc) {
	case CURLE_COULDNT_CONNECT:
		return ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
		return EHOSTUNREACH;
	case CURLE_OPERATION_TIMEDOUT:
		return ETIMEDOUT;
	case CURLE_OUT_OF_MEMORY:
		return ENOMEM;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CONNECT_ERROR:
		return EPROTO;
	default:
		return EIO;
	}
}

static bool
add_header(struct xfer *x, const char *line)
{
	struct curl_slist *l = curl_slist_append(x->hdrs, line);

	if (!l)
		return false;
	x->hdrs = l;
	return true;
}

/* Start one attempt of x on m. */
static int
xfer_begin(struct xfer *x, CURLM *m)
{
	struct registry *reg = x->reg;
	_cleanup_secret_ char *auth = NULL;
	char line[160];
	CURLcode rc = CURLE_OK;
	bool ok = true;
	int r;

	response_reset(x);
	x->fatal = false;
	x->body_pos = 0;
	x->mem_len = 0;
	x->sent_auth = false;
	kiln_err_clear(&x->err);
	curl_slist_free_all(x->hdrs);
	x->hdrs = NULL;

	if (x->auth_override) {
		auth = strdup(x->auth_override);
		if (!auth)
			return xfer_fail(x, ENOMEM, "request");
	} else if (x->origin) {
		r = auth_header(x, &auth);
		if (r < 0)
			return r;
	}
	x->sent_auth = auth != NULL;

	x->easy = curl_easy_init();
	if (!x->easy)
		return xfer_fail(x, ENOMEM, "curl handle");
#define SET(opt, val) (rc = rc != CURLE_OK ? rc : curl_easy_setopt(x->easy, opt, val))
	SET(CURLOPT_URL, x->url);
	SET(CURLOPT_PRIVATE, x);
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_USERAGENT, reg->user_agent);
	SET(CURLOPT_CONNECTTIMEOUT_MS, reg->connect_timeout_ms);
	SET(CURLOPT_LOW_SPEED_LIMIT, 1L);
	SET(CURLOPT_LOW_SPEED_TIME, reg->stall_timeout_s);
#if LIBCURL_VERSION_NUM >= 0x075500
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
#else
	SET(CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	SET(CURLOPT_FOLLOWLOCATION, 0L);
	SET(CURLOPT_ERRORBUFFER, x->errbuf);
	SET(CURLOPT_HEADERFUNCTION, on_header);
	SET(CURLOPT_HEADERDATA, x);
	SET(CURLOPT_WRITEFUNCTION, on_body);
	SET(CURLOPT_WRITEDATA, x);
	if (strcmp(x->method, "HEAD") == 0) {
		SET(CURLOPT_NOBODY, 1L);
	} else if (strcmp(x->method, "POST") == 0) {
		SET(CURLOPT_POST, 1L);
		SET(CURLOPT_POSTFIELDS, "");
		SET(CURLOPT_POSTFIELDSIZE, 0L);
	} else if (strcmp(x->method, "PUT") == 0 || strcmp(x->method, "PATCH") == 0) {
		SET(CURLOPT_UPLOAD, 1L);
		SET(CURLOPT_READFUNCTION, on_read);
		SET(CURLOPT_READDATA, x);
		SET(CURLOPT_INFILESIZE_LARGE, (curl_off_t) (x->has_body ? x->body_len : 0));
		if (strcmp(x->method, "PATCH") == 0)
			SET(CURLOPT_CUSTOMREQUEST, "PATCH");
	}
	x->errbuf[0] = '\0';

	if (x->accept) {
		_cleanup_free_ char *h = kiln_strdupf("Accept: %s", x->accept);

		ok = h && add_header(x, h);
	}
	if (x->content_type) {
		_cleanup_free_ char *h = kiln_strdupf("Content-Type: %s", x->content_type);

		ok = ok && h && add_header(x, h);
	} else if (strcmp(x->method, "POST") == 0) {
		ok = ok && add_header(x, "Content-Type:");      /* not a form */
	}
	ok = ok && add_header(x, "Expect:");    /* bodies are small or resendable */
	if (x->sink == SINK_CAS && x->w && cas_writer_size(x->w) > 0) {
		snprintf(line, sizeof(line), "Range: bytes=%llu-",
			 (unsigned long long) cas_writer_size(x->w));
		ok = ok && add_header(x, line);
		stat_add(&reg->stats.resumed, 1);
	}
	if (x->extra_header[0])
		ok = ok && add_header(x, x->extra_header);
	if (auth)
		ok = ok && add_header(x, auth);
	SET(CURLOPT_HTTPHEADER, x->hdrs);
#undef SET
	if (!ok)
		return xfer_fail(x, ENOMEM, "request headers");
	if (rc != CURLE_OK)
		return xfer_fail(x, EINVAL, "curl option: %s", curl_easy_strerror(rc));
	if (curl_multi_add_handle(m, x->easy) != CURLM_OK)
		return xfer_fail(x, ENOMEM, "curl multi");
	stat_add(&reg->stats.requests, 1);
	x->state = X_RUNNING;
	return 0;
}

static void
xfer_backoff(struct xfer *x)
{
	uint64_t d = (uint64_t) x->reg->retry_delay_ms << (x->attempts < 8 ? x->attempts : 8);

	x->attempts++;
	x->not_before_ms = kiln_now_ms() + (int64_t) (d < REG_BACKOFF_MAX_MS ? d : REG_BACKOFF_MAX_MS);
}

/* A blob download ended with 2xx: it must be whole and hash right. */
static int
blob_finish(struct xfer *x)
{
	struct cas_writer *w = STEAL_PTR(x->w);
	char ds[DIGEST_STR_SIZE];
	uint64_t have;

	if (!w)
		return kiln_err_set(&x->err, EPROTO, "no blob body");
	have = cas_writer_size(w);
	if (have != (uint64_t) x->desc->size) {
		cas_writer_abort(w);
		return kiln_err_set(&x->err, EBADMSG, "blob %s: got %llu of %lld bytes",
				    digest_fmt(&x->desc->digest, ds), (unsigned long long) have,
				    (long long) x->desc->size);
	}
	if (cas_writer_commit(w, x->desc->media_type, NULL, &x->err) < 0)
		return kiln_err_wrap(&x->err, "blob %s", digest_fmt(&x->desc->digest, ds));
	stat_add(&x->reg->stats.blobs_fetched, 1);
	return 0;
}

/* The attempt is over (x->easy already out of the multi handle): decide
 * whether x is done, goes again, or failed. */
static enum xfer_next
xfer_end(struct xfer *x, CURLcode cc)
{
	struct registry *reg = x->reg;
	char u[384];
	char *next_url = NULL;

	if (cc == CURLE_OK && is_redirect(x->status) && !x->no_redirect) {
		char *s = NULL;

		if (curl_easy_getinfo(x->easy, CURLINFO_REDIRECT_URL, &s) == CURLE_OK && s)
			next_url = strdup(s);
	}
	curl_easy_cleanup(x->easy);
	x->easy = NULL;
	reg_url_for_msg(x->url, u, sizeof(u));

	if (x->fatal) {
		free(next_url);
		kiln_err_wrap(&x->err, "%s %s", x->method, u);
		return XFER_FAIL;
	}
	if (cc != CURLE_OK) {
		if (transient(cc) && x->idempotent && x->attempts < reg->retries) {
			xfer_backoff(x);
			log_debug("registry: %s %s broke (%s), retry %u", x->method, u,
				  curl_easy_strerror(cc), x->attempts);
			return XFER_AGAIN;
		}
		kiln_err_set(&x->err, curl_errno(cc), "%s %s: %s", x->method, u,
			     x->errbuf[0] ? x->errbuf : curl_easy_strerror(cc));
		return XFER_FAIL;
	}
	if (is_redirect(x->status) && !x->no_redirect) {
		struct origin o;

		if (!next_url || reg_url_origin(next_url, &o) < 0) {
			free(next_url);
			http_error(x, "redirect without a usable http(s) Location");
			return XFER_FAIL;
		}
		if (++x->redirects > REG_REDIRECTS_MAX) {
			free(next_url);
			http_error(x, "more than %d redirects", REG_REDIRECTS_MAX);
			return XFER_FAIL;
		}
		free(x->url);
		x->url = next_url;
		/* Credentials go only to the registry's own origin. */
		x->origin = origin_equal(&o, &x->ep->origin);
		if (kiln_log_level >= KILN_LOG_DEBUG) {
			char nu[384];

			log_debug("registry: %s %s redirected to %s%s", x->method, u,
				  reg_url_for_msg(next_url, nu, sizeof(nu)),
				  x->origin ? "" : " (no credentials)");
		}
		if (x->status == 303 && strcmp(x->method, "HEAD") != 0) {
			x->method = "GET";
			x->has_body = false;
		}
		x->not_before_ms = 0;
		return XFER_AGAIN;
	}
	free(next_url);
	if (x->status == 401 && x->origin && !x->auth_override) {
		if (auth_learn(x) < 0)
			return XFER_FAIL;
		x->not_before_ms = 0;
		return XFER_AGAIN;
	}
	if ((x->status >= 500 || x->status == 429) && x->idempotent && x->attempts < reg->retries) {
		xfer_backoff(x);
		log_debug("registry: %s %s answered %ld, retry %u", x->method, u, x->status,
			  x->attempts);
		return XFER_AGAIN;
	}
	if (x->status >= 200 && x->status < 300) {
		if (x->sink == SINK_CAS && blob_finish(x) < 0) {
			kiln_err_wrap(&x->err, "%s %s", x->method, u);
			return XFER_FAIL;
		}
		return XFER_DONE;
	}
	if (x->status == 404 && x->allow_404)
		return XFER_DONE;
	http_error(x, NULL);
	return XFER_FAIL;
}

/* Run xs[0..n) with at most parallel transfers at once. Stops at the
 * first failure, abandoning the others; err gets that failure. Each xfer
 * ends in X_DONE, X_FAILED or (abandoned) any other state; the caller
 * releases them. */
int
reg_run_xfers(struct registry *reg, struct xfer **xs, size_t n, unsigned parallel, struct kiln_err *err)
{
	CURLM *m = pool_take(reg);
	size_t next = 0, running = 0, waiting = 0;
	struct xfer *failed = NULL;

	if (!m)
		return kiln_err_set(err, ENOMEM, "curl multi handle");
	if (parallel == 0)
		parallel = 1;
	for (;;) {
		int64_t now = kiln_now_ms();
		long wait_ms = 1000;
		CURLMsg *msg;
		int still;

		for (size_t i = 0; i < next && !failed && running < parallel; i++) {
			struct xfer *x = xs[i];

			if (x->state != X_WAIT)
				continue;
			if (x->not_before_ms > now) {
				if (x->not_before_ms - now < wait_ms)
					wait_ms = (long) (x->not_before_ms - now);
				continue;
			}
			waiting--;
			if (xfer_begin(x, m) < 0) {
				x->state = X_FAILED;
				failed = x;
				break;
			}
			running++;
		}
		while (!failed && next < n && running < parallel) {
			struct xfer *x = xs[next++];

			if (xfer_begin(x, m) < 0) {
				x->state = X_FAILED;
				failed = x;
				break;
			}
			running++;
		}
		if (failed || (running == 0 && waiting == 0 && next == n))
			break;
		if (running > 0)
			(void) curl_multi_perform(m, &still);
		while ((msg = curl_multi_info_read(m, &still))) {
			struct xfer *x = NULL;
			CURLcode cc;

			if (msg->msg != CURLMSG_DONE)
				continue;
			cc = msg->data.result;
			(void) curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &x);
			(void) curl_multi_remove_handle(m, x->easy);
			running--;
			switch (xfer_end(x, cc)) {
			case XFER_DONE:
				x->state = X_DONE;
				break;
			case XFER_AGAIN:
				x->state = X_WAIT;
				waiting++;
				break;
			case XFER_FAIL:
				x->state = X_FAILED;
				if (!failed)
					failed = x;
				break;
			}
			/* Let waiters on this blob go as soon as it is settled. */
			if ((x->state == X_DONE || x->state == X_FAILED) && x->claimed) {
				reg_inflight_remove(reg, x->cas, &x->desc->digest);
				x->claimed = false;
			}
		}
		if (failed)
			break;
		if (running > 0 || waiting > 0)
			(void) curl_multi_poll(m, NULL, 0, (int) wait_ms, NULL);
	}
	for (size_t i = 0; i < next; i++) {
		struct xfer *x = xs[i];

		if (x->state == X_RUNNING && x->easy) {
			(void) curl_multi_remove_handle(m, x->easy);
			curl_easy_cleanup(x->easy);
			x->easy = NULL;
			x->state = X_FAILED;
		}
	}
	pool_give(reg, m);
	if (failed) {
		*err = failed->err;
		if (err->code <= 0)
			err->code = EIO;
		return -err->code;
	}
	return 0;
}

int
reg_run_one(struct registry *reg, struct xfer *x, struct kiln_err *err)
{
	struct xfer *xs[1] = { x };

	return reg_run_xfers(reg, xs, 1, 1, err);
}
