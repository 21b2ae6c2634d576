/* Progress rendering for the client (see progress.h). Vertex bookkeeping is
 * a small array: builds have tens of steps, not thousands.
 *
 * rawjson writes each event as soon as it arrives, one compact JSON object
 * per line, with the keys in the order Go's encoder gives BuildKit's
 * structs, so that tools reading `buildx --progress rawjson` read ours.
 * Strings are made valid UTF-8 first (invalid bytes become U+FFFD, as Go's
 * encoder does); log bytes travel base64-encoded, untouched. */
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "cleanup.h"
#include "digest.h"
#include "progress.h"
#include "util.h"

enum mode { M_PLAIN, M_TTY, M_QUIET, M_JSON };

struct vertex {
	char *name;
	int64_t start_ms;
	struct timespec started;
	char digest[DIGEST_STR_SIZE];   /* rawjson's id of the vertex */
	char *node;                     /* last node said for it */
	char *partial;             /* unterminated last line */
	size_t partial_len;
	char *log;                 /* tty: kept for a failure */
	size_t log_len;
	bool done;
};

struct progress {
	enum mode mode;
	FILE *out;
	struct vertex *v;
	int n;
	int64_t start_ms;
};

struct progress *
progress_new(const char *mode, FILE *out)
{
	struct progress *p;
	enum mode m;

	if (!mode || strcmp(mode, "auto") == 0)
		m = isatty(fileno(out)) ? M_TTY : M_PLAIN;
	else if (strcmp(mode, "plain") == 0)
		m = M_PLAIN;
	else if (strcmp(mode, "tty") == 0)
		m = M_TTY;
	else if (strcmp(mode, "quiet") == 0)
		m = M_QUIET;
	else if (strcmp(mode, "rawjson") == 0)
		m = M_JSON;
	else
		return NULL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->mode = m;
	p->out = out;
	p->start_ms = kiln_now_ms();
	if (m == M_TTY)
		fprintf(out, "[+] Building\n");
	return p;
}

void
progress_free(struct progress *p)
{
	if (!p)
		return;
	for (int i = 0; i < p->n; i++) {
		free(p->v[i].name);
		free(p->v[i].node);
		free(p->v[i].partial);
		free(p->v[i].log);
	}
	free(p->v);
	free(p);
}

bool
progress_is_json(const struct progress *p)
{
	return p && p->mode == M_JSON;
}

/* ---- rawjson ---- */

/* Go's time.Time in JSON: RFC 3339 with nanoseconds, trailing zeros cut. */
static json_t *
json_time(const struct timespec *ts)
{
	char buf[64];
	struct tm tm;
	size_t n;

	gmtime_r(&ts->tv_sec, &tm);
	n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
	if (ts->tv_nsec > 0) {
		n += (size_t) snprintf(buf + n, sizeof(buf) - n, ".%09ld", ts->tv_nsec);
		while (buf[n - 1] == '0')
			n--;
	}
	snprintf(buf + n, sizeof(buf) - n, "Z");
	return json_string(buf);
}

static json_t *
json_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return json_time(&ts);
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if none. */
static size_t
utf8_seq(const unsigned char *s, size_t n)
{
	size_t len;
	unsigned cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return len;
}

/* A JSON string of s with invalid UTF-8 replaced by U+FFFD. */
static json_t *
json_text(const char *s)
{
	const unsigned char *u = (const unsigned char *) (s ? s : "");
	size_t n = strlen((const char *) u), o = 0;
	_cleanup_free_ char *buf = malloc(3 * n + 1);

	if (!buf)
		return NULL;
	for (size_t i = 0; i < n;) {
		size_t k = utf8_seq(u + i, n - i);

		if (k == 0) {
			memcpy(buf + o, "\xef\xbf\xbd", 3);
			o += 3;
			i++;
			continue;
		}
		memcpy(buf + o, u + i, k);
		o += k;
		i += k;
	}
	return json_stringn(buf, o);
}

/* Write {key: [item]} as one line; takes item. */
static void
emit_json(struct progress *p, const char *key, json_t *item)
{
	_cleanup_(json_decrefp) json_t *root = json_object();
	_cleanup_free_ char *s = NULL;
	json_t *arr = json_array();

	if (!root || !arr || !item || json_object_set_new(root, key, arr) < 0 ||
	    json_array_append_new(arr, item) < 0) {
		json_decref(item);
		return;
	}
	s = json_dumps(root, JSON_COMPACT);
	if (s) {
		fprintf(p->out, "%s\n", s);
		fflush(p->out);
	}
}

/* Vertex fields in Go's order: digest, name, started, completed, cached, error. */
static void
emit_vertex(struct progress *p, const struct vertex *x, bool completed, bool cached,
	    const char *error)
{
	json_t *o = json_object();

	if (!o)
		return;
	json_object_set_new(o, "digest", json_string(x->digest));
	json_object_set_new(o, "name", json_text(x->name));
	json_object_set_new(o, "started", json_time(&x->started));
	if (completed)
		json_object_set_new(o, "completed", json_now());
	if (cached)
		json_object_set_new(o, "cached", json_true());
	if (error)
		json_object_set_new(o, "error", json_text(error));
	emit_json(p, "vertexes", o);
}

/* A status of x: id and name are the text; "current" is always there. */
static void
emit_status(struct progress *p, const struct vertex *x, const char *text, bool completed)
{
	json_t *o = json_object();

	if (!o)
		return;
	json_object_set_new(o, "id", json_text(text));
	json_object_set_new(o, "vertex", json_string(x->digest));
	json_object_set_new(o, "name", json_text(text));
	json_object_set_new(o, "current", json_integer(0));
	json_object_set_new(o, "timestamp", json_now());
	json_object_set_new(o, "started", json_now());
	if (completed)
		json_object_set_new(o, "completed", json_now());
	emit_json(p, "statuses", o);
}

static void
emit_log(struct progress *p, const struct vertex *x, const void *data, size_t len)
{
	_cleanup_free_ char *b64 = malloc(4 * ((len + 2) / 3) + 1);
	json_t *o;

	if (!b64 || len > (size_t) INT32_MAX)
		return;
	EVP_EncodeBlock((unsigned char *) b64, data, (int) len);
	o = json_object();
	if (!o)
		return;
	json_object_set_new(o, "vertex", json_string(x->digest));
	json_object_set_new(o, "stream", json_integer(1));
	json_object_set_new(o, "data", json_string(b64));
	json_object_set_new(o, "timestamp", json_now());
	emit_json(p, "logs", o);
}

/* ---- events ---- */

int
progress_start(struct progress *p, const char *name)
{
	struct vertex *nv = realloc(p->v, (size_t) (p->n + 1) * sizeof(*nv));
	_cleanup_free_ char *id = NULL;
	struct digest d;

	if (!nv)
		return 0;
	p->v = nv;
	nv = &p->v[p->n];
	memset(nv, 0, sizeof(*nv));
	nv->name = strdup(name ? name : "");
	if (!nv->name)
		return 0;
	nv->start_ms = kiln_now_ms();
	clock_gettime(CLOCK_REALTIME, &nv->started);
	p->n++;
	id = kiln_strdupf("kiln progress vertex %d %s", p->n, nv->name);
	digest_buf(id ? id : nv->name, id ? strlen(id) : strlen(nv->name), &d);
	digest_fmt(&d, nv->digest);
	if (p->mode == M_PLAIN) {
		fprintf(p->out, "#%d %s\n", p->n, nv->name);
		fflush(p->out);
	} else if (p->mode == M_JSON) {
		emit_vertex(p, nv, false, false, NULL);
	}
	return p->n;
}

static struct vertex *
get(struct progress *p, int v)
{
	return v >= 1 && v <= p->n ? &p->v[v - 1] : NULL;
}

void
progress_node(struct progress *p, int v, const char *node, bool emulated)
{
	struct vertex *x = get(p, v);
	_cleanup_free_ char *text = NULL;

	if (!x || x->done || !node || !*node || (x->node && strcmp(x->node, node) == 0))
		return;
	free(x->node);
	x->node = strdup(node);
	text = kiln_strdupf("node %s%s", node, emulated ? " (emulated)" : "");
	if (!text)
		return;
	if (p->mode == M_PLAIN) {
		fprintf(p->out, "#%d %s\n", v, text);
		fflush(p->out);
	} else if (p->mode == M_JSON) {
		emit_status(p, x, text, true);
	}
}

static void
emit_line(struct progress *p, int v, struct vertex *x, const char *line, size_t len)
{
	double secs = (double) (kiln_now_ms() - x->start_ms) / 1000.0;

	if (p->mode == M_PLAIN) {
		fprintf(p->out, "#%d %.3f %.*s\n", v, secs, (int) len, line);
		return;
	}
	/* tty and quiet keep the output for an error report. */
	char *nl = realloc(x->log, x->log_len + len + 1);

	if (!nl)
		return;
	memcpy(nl + x->log_len, line, len);
	nl[x->log_len + len] = '\n';
	x->log = nl;
	x->log_len += len + 1;
}

void
progress_log(struct progress *p, int v, const void *data, size_t len)
{
	struct vertex *x = get(p, v);
	const char *s = data, *end = s + len;
	char *buf;
	size_t n;

	if (!x)
		return;
	if (p->mode == M_JSON) {
		if (len)
			emit_log(p, x, data, len);
		return;
	}
	buf = realloc(x->partial, x->partial_len + len + 1);
	if (!buf)
		return;
	x->partial = buf;
	memcpy(buf + x->partial_len, s, len);
	n = x->partial_len + len;
	x->partial_len = 0;
	s = buf;
	end = buf + n;
	while (s < end) {
		const char *nl = memchr(s, '\n', (size_t) (end - s));

		if (!nl) {
			memmove(buf, s, (size_t) (end - s));
			x->partial_len = (size_t) (end - s);
			break;
		}
		emit_line(p, v, x, s, (size_t) (nl - s));
		s = nl + 1;
	}
	fflush(p->out);
}

void
progress_status(struct progress *p, int v, const char *fmt, ...)
{
	struct vertex *x = get(p, v);
	va_list ap;

	if (!x || (p->mode != M_PLAIN && p->mode != M_JSON))
		return;
	if (p->mode == M_JSON) {
		_cleanup_free_ char *text = NULL;
		size_t n;
		bool done;

		va_start(ap, fmt);
		if (vasprintf(&text, fmt, ap) < 0)
			text = NULL;
		va_end(ap);
		if (!text)
			return;
		/* "... done" is how plain says the status completed */
		n = strlen(text);
		done = n >= 5 && strcmp(text + n - 5, " done") == 0;
		if (done)
			text[n - 5] = '\0';
		emit_status(p, x, text, done);
		return;
	}
	fprintf(p->out, "#%d ", v);
	va_start(ap, fmt);
	vfprintf(p->out, fmt, ap);
	va_end(ap);
	fputc('\n', p->out);
	fflush(p->out);
}

static void
finish(struct progress *p, int v, const char *msg, bool cached)
{
	struct vertex *x = get(p, v);
	double secs;

	if (!x || x->done)
		return;
	x->done = true;
	if (p->mode == M_JSON) {
		emit_vertex(p, x, true, cached, msg);
		return;
	}
	if (x->partial_len) {
		emit_line(p, v, x, x->partial, x->partial_len);
		x->partial_len = 0;
	}
	secs = (double) (kiln_now_ms() - x->start_ms) / 1000.0;
	if (p->mode == M_PLAIN) {
		if (msg)
			fprintf(p->out, "#%d ERROR: %s\n\n", v, msg);
		else if (cached)
			fprintf(p->out, "#%d CACHED\n\n", v);
		else
			fprintf(p->out, "#%d DONE %.1fs\n\n", v, secs);
	} else if (p->mode == M_TTY || msg) {
		fprintf(p->out, " => %s%s %.1fs\n", msg ? "ERROR " : cached ? "CACHED " : "", x->name,
			secs);
		if (msg && x->log_len)
			fprintf(p->out, "------\n%.*s------\n", (int) x->log_len, x->log);
	}
	fflush(p->out);
}

void
progress_done(struct progress *p, int v, const char *msg)
{
	finish(p, v, msg, false);
}

void
progress_cached(struct progress *p, int v)
{
	finish(p, v, NULL, true);
}

char *
progress_size(unsigned long long bytes, char out[32])
{
	static const char *const units[] = { "B", "kB", "MB", "GB", "TB" };
	double v = (double) bytes;
	int u = 0;

	while (v >= 1000.0 && u < 4) {
		v /= 1000.0;
		u++;
	}
	if (u == 0)
		snprintf(out, 32, "%lluB", bytes);
	else
		snprintf(out, 32, "%.2f%s", v, units[u]);
	return out;
}
