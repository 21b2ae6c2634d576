/* Progress rendering for the client (see progress.h). Vertex bookkeeping is
 * a small array: builds have tens of steps, not thousands. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "progress.h"
#include "util.h"

enum mode { M_PLAIN, M_TTY, M_QUIET };

struct vertex {
	char *name;
	int64_t start_ms;
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
		free(p->v[i].partial);
		free(p->v[i].log);
	}
	free(p->v);
	free(p);
}

int
progress_start(struct progress *p, const char *name)
{
	struct vertex *nv = realloc(p->v, (size_t) (p->n + 1) * sizeof(*nv));

	if (!nv)
		return 0;
	p->v = nv;
	memset(&nv[p->n], 0, sizeof(nv[p->n]));
	nv[p->n].name = strdup(name ? name : "");
	nv[p->n].start_ms = kiln_now_ms();
	p->n++;
	if (p->mode == M_PLAIN) {
		fprintf(p->out, "#%d %s\n", p->n, name);
		fflush(p->out);
	}
	return p->n;
}

static struct vertex *
get(struct progress *p, int v)
{
	return v >= 1 && v <= p->n ? &p->v[v - 1] : NULL;
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
	va_list ap;

	if (p->mode != M_PLAIN || !get(p, v))
		return;
	fprintf(p->out, "#%d ", v);
	va_start(ap, fmt);
	vfprintf(p->out, fmt, ap);
	va_end(ap);
	fputc('\n', p->out);
	fflush(p->out);
}

void
progress_done(struct progress *p, int v, const char *msg)
{
	struct vertex *x = get(p, v);
	double secs;

	if (!x || x->done)
		return;
	x->done = true;
	if (x->partial_len) {
		emit_line(p, v, x, x->partial, x->partial_len);
		x->partial_len = 0;
	}
	secs = (double) (kiln_now_ms() - x->start_ms) / 1000.0;
	if (p->mode == M_PLAIN) {
		if (msg)
			fprintf(p->out, "#%d ERROR: %s\n\n", v, msg);
		else
			fprintf(p->out, "#%d DONE %.1fs\n\n", v, secs);
	} else if (p->mode == M_TTY || msg) {
		fprintf(p->out, " => %s%s %.1fs\n", msg ? "ERROR " : "", x->name, secs);
		if (msg && x->log_len)
			fprintf(p->out, "------\n%.*s------\n", (int) x->log_len, x->log);
	}
	fflush(p->out);
}

void
progress_cached(struct progress *p, int v)
{
	struct vertex *x = get(p, v);

	if (!x || x->done)
		return;
	x->done = true;
	if (p->mode == M_PLAIN)
		fprintf(p->out, "#%d CACHED\n\n", v);
	else if (p->mode == M_TTY)
		fprintf(p->out, " => CACHED %s\n", x->name);
	fflush(p->out);
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
