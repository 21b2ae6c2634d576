/* `kiln debug ast` parses a Dockerfile on the client with the frontend's
 * parser and prints BuildKit's AST dump, the format of the conformance
 * corpus's `result` files. The rest of this file prints the answers the
 * coordinator gives to `--call outline|targets` and `kiln debug graph`
 * the way buildx prints BuildKit's: the same tables, laid out by a copy
 * of Go's text/tabwriter (elastic tabstops, cells padded with spaces to
 * the widest cell of their column plus the padding, widths counted in
 * runes, trailing padding kept). */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cleanup.h"
#include "debug.h"
#include "dockerfile.h"
#include "err.h"
#include "gostr.h"
#include "util.h"

#define RENDER_MAX (64u << 20)

static const char usage[] =
	"Usage:  kiln debug COMMAND\n"
	"\n"
	"Look at how kiln reads a build, without running it\n"
	"\n"
	"Commands:\n"
	"  ast FILE                Print the parse tree of a Dockerfile (\"-\": standard input),\n"
	"                          one \"(instruction ...)\" line per instruction, as BuildKit dumps it\n"
	"  graph [OPTIONS] PATH    Print the build graph of the build `kiln build [OPTIONS] PATH`\n"
	"                          would run, as JSON (see 'kiln debug graph --help')\n";

/* ---- text/tabwriter ---- */

struct cell {
	const char *text;
	size_t len;
	size_t width;           /* runes */
};

struct tline {
	struct cell *cells;
	size_t n;
};

struct tabw {
	struct tline *lines;
	size_t n;
	size_t padding;
	size_t *widths;         /* current column widths */
	size_t n_widths;
	struct gbuf *out;
};

static size_t
rune_count(const char *s, size_t n)
{
	size_t count = 0;

	for (size_t i = 0; i < n; count++) {
		uint32_t r;

		i += gostr_decode(s + i, n - i, &r);
	}
	return count;
}

static void
pad(struct gbuf *b, size_t n)
{
	while (n--)
		gbuf_putc(b, ' ');
}

static void
write_lines(struct tabw *t, size_t line0, size_t line1)
{
	for (size_t i = line0; i < line1; i++) {
		const struct tline *l = &t->lines[i];

		for (size_t j = 0; j < l->n; j++) {
			const struct cell *c = &l->cells[j];

			gbuf_put(t->out, c->text, c->len);
			if (j < t->n_widths)
				pad(t->out, t->widths[j] - c->width);
		}
		if (i + 1 < t->n)
			gbuf_putc(t->out, '\n');
	}
}

/* Go's tabwriter.Writer.format: the lines [line0, line1) with the column
 * widths found so far; each block of consecutive lines that have a cell
 * in the next column gets that column's width. The last cell of a line
 * is not in a column. */
static void
tab_format(struct tabw *t, size_t line0, size_t line1)
{
	size_t column = t->n_widths;

	for (size_t this = line0; this < line1; this++) {
		size_t width = 0;

		if (column + 1 >= t->lines[this].n)
			continue;
		write_lines(t, line0, this);
		line0 = this;
		for (; this < line1; this++) {
			const struct tline *l = &t->lines[this];

			if (column + 1 >= l->n)
				break;
			if (l->cells[column].width + t->padding > width)
				width = l->cells[column].width + t->padding;
		}
		t->widths[t->n_widths++] = width;
		tab_format(t, line0, this);
		t->n_widths--;
		/* line `this` has no cell in the column: the ++ may skip it */
		line0 = this;
	}
	write_lines(t, line0, line1);
}

/* Lay out text (cells ended by '\t', lines by '\n') into out. */
static int
tabwrite(struct gbuf *out, const char *text, size_t len, size_t padding)
{
	struct tabw t = { .padding = padding, .out = out };
	size_t max_cells = 1, i = 0;
	int r = 0;

	/* lines: a text that ends in '\n' has an empty last line */
	for (size_t k = 0; k < len; k++)
		t.n += text[k] == '\n';
	t.n++;
	t.lines = calloc(t.n, sizeof(*t.lines));
	if (!t.lines)
		return -ENOMEM;
	for (size_t ln = 0; ln < t.n; ln++) {
		const char *end = memchr(text + i, '\n', len - i);
		size_t ll = end ? (size_t) (end - (text + i)) : len - i;
		size_t nc = 1;
		struct tline *l = &t.lines[ln];

		for (size_t k = 0; k < ll; k++)
			nc += text[i + k] == '\t';
		l->cells = calloc(nc, sizeof(*l->cells));
		if (!l->cells) {
			r = -ENOMEM;
			goto out;
		}
		for (size_t k = 0, start = 0; k <= ll; k++) {
			if (k < ll && text[i + k] != '\t')
				continue;
			l->cells[l->n].text = text + i + start;
			l->cells[l->n].len = k - start;
			l->cells[l->n].width = rune_count(text + i + start, k - start);
			l->n++;
			start = k + 1;
		}
		if (nc > max_cells)
			max_cells = nc;
		i += ll + 1;
	}
	t.widths = calloc(max_cells, sizeof(*t.widths));
	if (!t.widths) {
		r = -ENOMEM;
		goto out;
	}
	tab_format(&t, 0, t.n);
out:
	for (size_t ln = 0; ln < t.n; ln++)
		free(t.lines[ln].cells);
	free(t.lines);
	free(t.widths);
	return r;
}

/* A table: the text of one tabwriter (built in b) flushed to out. */
static int
flush_table(struct gbuf *out, struct gbuf *b, size_t padding)
{
	int r;

	if (b->err)
		return b->err;
	r = tabwrite(out, b->data ? b->data : "", b->len, padding);
	gbuf_reset(b);
	return r;
}

static const char *
jstr(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "";
}

static void
put_cell(struct gbuf *b, const char *s, char end)
{
	gbuf_puts(b, s);
	gbuf_putc(b, end);
}

/* targets.PrintTargets */
static int
render_targets(struct gbuf *out, json_t *j)
{
	json_t *targets = json_object_get(j, "targets");
	struct gbuf b;
	size_t i;
	json_t *t;
	int r;

	if (!json_is_array(targets) && !json_is_null(targets))
		return -EINVAL;
	gbuf_init(&b, RENDER_MAX);
	gbuf_puts(&b, "TARGET\tDESCRIPTION\n");
	json_array_foreach(targets, i, t) {
		const char *name = jstr(t, "name");
		bool def = json_is_true(json_object_get(t, "default"));

		if (!*name && def) {
			gbuf_puts(&b, "(default)");
		} else {
			gbuf_puts(&b, name);
			if (def)
				gbuf_puts(&b, " (default)");
		}
		gbuf_putc(&b, '\t');
		put_cell(&b, jstr(t, "description"), '\n');
	}
	r = flush_table(out, &b, 1);
	gbuf_release(&b);
	return r;
}

/* The SECRET and SSH tables. */
static void
mount_table(struct gbuf *b, const char *title, json_t *list)
{
	size_t i;
	json_t *m;

	put_cell(b, title, '\t');
	gbuf_puts(b, "REQUIRED\n");
	json_array_foreach(list, i, m) {
		put_cell(b, jstr(m, "name"), '\t');
		put_cell(b, json_is_true(json_object_get(m, "required")) ? "true" : "", '\n');
	}
}

/* outline.PrintOutline */
static int
render_outline(struct gbuf *out, json_t *j)
{
	const char *name = jstr(j, "name"), *desc = jstr(j, "description");
	json_t *args = json_object_get(j, "args");
	json_t *secrets = json_object_get(j, "secrets");
	json_t *ssh = json_object_get(j, "ssh");
	struct gbuf b;
	int r = 0;

	gbuf_init(&b, RENDER_MAX);
	if (*name || *desc) {
		gbuf_puts(&b, "TARGET:\t");
		put_cell(&b, *name ? name : "(default)", '\n');
		if (*desc) {
			gbuf_puts(&b, "DESCRIPTION:\t");
			put_cell(&b, desc, '\n');
		}
		r = flush_table(out, &b, 1);
		gbuf_putc(out, '\n');
	}
	if (r == 0 && json_array_size(args)) {
		size_t i;
		json_t *a;

		gbuf_puts(&b, "BUILD ARG\tVALUE\tDESCRIPTION\n");
		json_array_foreach(args, i, a) {
			put_cell(&b, jstr(a, "name"), '\t');
			put_cell(&b, jstr(a, "value"), '\t');
			put_cell(&b, jstr(a, "description"), '\n');
		}
		r = flush_table(out, &b, 3);
		gbuf_putc(out, '\n');
	}
	if (r == 0 && json_array_size(secrets)) {
		mount_table(&b, "SECRET", secrets);
		r = flush_table(out, &b, 3);
		gbuf_putc(out, '\n');
	}
	if (r == 0 && json_array_size(ssh)) {
		mount_table(&b, "SSH", ssh);
		r = flush_table(out, &b, 3);
		gbuf_putc(out, '\n');
	}
	gbuf_release(&b);
	return r;
}

int
debug_render_call(FILE *out, const char *call, const char *format, const char *data,
		  size_t len, struct kiln_err *err)
{
	json_error_t jerr;
	json_t *j;
	struct gbuf b;
	char *text;
	size_t tlen = 0;
	int r, e = 0;

	if (format && *format && strcmp(format, "json") != 0)
		return kiln_err_set(err, EINVAL, "unsupported format '%s' (json)", format);
	if (strcmp(call, "graph") == 0 || (format && strcmp(format, "json") == 0)) {
		if (strcmp(call, "graph") != 0 && strcmp(call, "outline") != 0 &&
		    strcmp(call, "targets") != 0)
			return kiln_err_set(err, EINVAL, "unknown call '%s'", call);
		fwrite(data, 1, len, out);
		if (!len || data[len - 1] != '\n')
			fputc('\n', out);
		return 0;
	}
	if (strcmp(call, "outline") != 0 && strcmp(call, "targets") != 0)
		return kiln_err_set(err, EINVAL, "unknown call '%s'", call);
	j = json_loadb(data, len, 0, &jerr);
	if (!json_is_object(j)) {
		json_decref(j);
		return kiln_err_set(err, EINVAL, "malformed %s result: %s", call,
				    j ? "not an object" : jerr.text);
	}
	gbuf_init(&b, RENDER_MAX);
	r = strcmp(call, "targets") == 0 ? render_targets(&b, j) : render_outline(&b, j);
	json_decref(j);
	text = gbuf_detach(&b, &tlen, &e);
	if (r == 0 && !text)
		r = e ? e : -ENOMEM;
	if (r < 0) {
		free(text);
		return r == -EINVAL ? kiln_err_set(err, EINVAL, "malformed %s result", call) :
				      kiln_err_set(err, -r, "out of memory");
	}
	fwrite(text, 1, tlen, out);
	free(text);
	return 0;
}

/* ---- kiln debug ast ---- */

static int
debug_ast(const char *file)
{
	_cleanup_free_ char *buf = NULL;
	_cleanup_free_ char *dump = NULL;
	struct kiln_err err = { 0 };
	struct df_ast *ast = NULL;
	size_t len = 0;
	int r;

	if (strcmp(file, "-") == 0)
		r = kiln_read_file_at(AT_FDCWD, "/dev/stdin", DF_MAX_INPUT + 1, &buf, &len);
	else
		r = kiln_read_file_at(AT_FDCWD, file, DF_MAX_INPUT + 1, &buf, &len);
	if (r < 0) {
		if (r == -EFBIG)
			fprintf(stderr, "ERROR: %s: larger than %u bytes\n", file, DF_MAX_INPUT);
		else
			fprintf(stderr, "ERROR: read '%s': %s\n", file, strerror(-r));
		return 1;
	}
	r = df_parse(buf, len, file, &ast, &err);
	if (r < 0) {
		fprintf(stderr, "ERROR: %s\n", err.msg);
		return 1;
	}
	for (size_t i = 0; i < ast->n_warnings; i++)
		fprintf(stderr, "WARNING: %s:%d: %s\n", file, ast->warnings[i].line,
			ast->warnings[i].text);
	dump = df_ast_dump(ast);
	df_ast_free(ast);
	if (!dump) {
		fprintf(stderr, "ERROR: out of memory\n");
		return 1;
	}
	fputs(dump, stdout);
	if (fflush(stdout) != 0) {
		fprintf(stderr, "ERROR: write: %s\n", strerror(errno));
		return 1;
	}
	return 0;
}

static bool
is_help(const char *s)
{
	return strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0;
}

int
debug_main(int argc, char **argv)
{
	if (argc < 2) {
		fputs(usage, stderr);
		return 1;
	}
	if (is_help(argv[1]) || strcmp(argv[1], "help") == 0) {
		fputs(usage, stdout);
		return 0;
	}
	if (strcmp(argv[1], "ast") == 0) {
		for (int i = 2; i < argc; i++)
			if (is_help(argv[i])) {
				fputs("Usage:  kiln debug ast FILE\n\n"
				      "Print the parse tree of the Dockerfile FILE (\"-\": standard input)\n", stdout);
				return 0;
			}
		if (argc != 3 || (argv[2][0] == '-' && argv[2][1])) {
			fprintf(stderr, "ERROR: \"kiln debug ast\" requires exactly 1 argument (the "
				"Dockerfile)\nSee 'kiln debug --help'.\n");
			return 1;
		}
		return debug_ast(argv[2]);
	}
	fprintf(stderr, "ERROR: unknown command \"%s\" for \"kiln debug\"\nSee 'kiln debug --help'.\n",
		argv[1]);
	return 1;
}
