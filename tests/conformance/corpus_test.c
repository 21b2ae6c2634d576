/* Conformance runner: reads the external corpus (shared/corpus, see its
 * README.md) in place and checks kiln's Dockerfile frontend against it:
 * the parser golden dumps and error cases, heredocs, directives and line
 * numbers, the shell lexer tables, the instruction checks and the
 * .dockerignore matcher tables.
 *
 * Usage: corpus_test [CORPUS_DIR]   (default ../shared/corpus, relative to
 * the repository root). Prints one summary line per corpus file or set,
 * the details of every failing case, and "N passed, N failed"; exits 1 on
 * any failure. Plain C on purpose: the corpus is data, not unit tests.
 *
 * Not run here: image-spec/ (OCI JSON, another module's runner), buildx
 * bake/compose files (bake loader), patternmatcher compile.tsv (upstream's
 * internal regexp text; the README marks it informative). */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "err.h"
#include "../../coordinator/dockerfile.h"
#include "gostr.h"
#include "ignore.h"
#include "../../coordinator/instructions.h"
#include "../../coordinator/shell.h"

#define MAX_FILE (64u << 20)

struct tally {
	const char *name;
	int pass, fail;
};

static const char *corpus = "../shared/corpus";

/* Member access for the expectation files. */
static const char *
jstr(json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

static json_int_t
jint(json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}
static int total_pass, total_fail;

static void
tally_begin(struct tally *t, const char *name)
{
	t->name = name;
	t->pass = t->fail = 0;
}

static void
tally_end(struct tally *t)
{
	printf("%s: %d/%d passed\n", t->name, t->pass, t->pass + t->fail);
	total_pass += t->pass;
	total_fail += t->fail;
}

static void
failf(struct tally *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
failf(struct tally *t, const char *fmt, ...)
{
	va_list ap;

	printf("FAIL [%s] ", t->name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	t->fail++;
}

static void
check(struct tally *t, bool ok, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
check(struct tally *t, bool ok, const char *fmt, ...)
{
	va_list ap;

	if (ok) {
		t->pass++;
		return;
	}
	printf("FAIL [%s] ", t->name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	t->fail++;
}

/* Go-quoted copy of s[0..n) for messages; static ring of buffers. */
static const char *
q(const char *s, size_t n)
{
	static char ring[8][2048];
	static int idx;
	char *out = ring[idx++ % 8];
	struct gbuf b;

	gbuf_init(&b, sizeof(ring[0]) - 1);
	gostr_quote(&b, s ? s : "(null)", s ? n : 6);
	snprintf(out, sizeof(ring[0]), "%s", b.err ? "(too long)" : b.data);
	gbuf_release(&b);
	return out;
}

static const char *
qs(const char *s)
{
	return q(s, s ? strlen(s) : 0);
}

static char *
path_join(const char *a, const char *b)
{
	size_t n = strlen(a) + strlen(b) + 2;
	char *p = malloc(n);

	if (!p) {
		perror("malloc");
		exit(2);
	}
	snprintf(p, n, "%s/%s", a, b);
	return p;
}

/* Whole file, NUL-terminated; NULL when missing. */
static char *
read_file(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	size_t n = 0, cap = 4096;

	if (!f)
		return NULL;
	buf = malloc(cap);
	for (;;) {
		size_t r;

		if (!buf) {
			perror("malloc");
			exit(2);
		}
		r = fread(buf + n, 1, cap - n - 1, f);
		n += r;
		if (r == 0)
			break;
		if (n + 1 == cap) {
			if (cap >= MAX_FILE) {
				fprintf(stderr, "%s: too large\n", path);
				exit(2);
			}
			cap *= 2;
			buf = realloc(buf, cap);
		}
	}
	fclose(f);
	buf[n] = '\0';
	*ret_len = n;
	return buf;
}

static char *
must_read(struct tally *t, const char *rel, size_t *ret_len)
{
	char *path = path_join(corpus, rel);
	char *buf = read_file(path, ret_len);

	if (!buf)
		failf(t, "cannot read %s: %s", path, strerror(errno));
	free(path);
	return buf;
}

static json_t *
must_json(struct tally *t, const char *rel)
{
	char *path = path_join(corpus, rel);
	json_error_t jerr;
	json_t *j = json_load_file(path, JSON_ALLOW_NUL, &jerr);

	if (!j)
		failf(t, "cannot load %s: %s (line %d)", path, jerr.text, jerr.line);
	free(path);
	return j;
}

static int
cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Sorted subdirectory names of corpus/rel. */
static char **
list_dirs(const char *rel, size_t *ret_n)
{
	char *path = path_join(corpus, rel);
	DIR *d = opendir(path);
	char **v = NULL;
	size_t n = 0;
	struct dirent *e;

	if (!d) {
		free(path);
		*ret_n = 0;
		return NULL;
	}
	while ((e = readdir(d))) {
		char *sub;
		struct stat st;

		if (e->d_name[0] == '.')
			continue;
		sub = path_join(path, e->d_name);
		if (stat(sub, &st) == 0 && S_ISDIR(st.st_mode)) {
			v = realloc(v, (n + 1) * sizeof(*v));
			v[n++] = strdup(e->d_name);
		}
		free(sub);
	}
	closedir(d);
	free(path);
	qsort(v, n, sizeof(*v), cmp_name);
	*ret_n = n;
	return v;
}

static void
free_list(char **v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* Split buf into lines (without '\n'); *ret_n lines. The returned array
 * points into buf, which is modified. */
static char **
split_lines(char *buf, size_t len, size_t *ret_n)
{
	char **v = NULL;
	size_t n = 0, pos = 0;

	while (pos < len) {
		char *nl = memchr(buf + pos, '\n', len - pos);

		v = realloc(v, (n + 1) * sizeof(*v));
		v[n++] = buf + pos;
		if (!nl)
			break;
		*nl = '\0';
		pos = (size_t) (nl - buf) + 1;
	}
	*ret_n = n;
	return v;
}

/* Split s on sep in place; at most max fields. */
static size_t
split_fields(char *s, char sep, char **out, size_t max)
{
	size_t n = 0;

	while (n < max) {
		char *p = strchr(s, sep);

		out[n++] = s;
		if (!p)
			break;
		*p = '\0';
		s = p + 1;
	}
	return n;
}

static char *
trim(char *s)
{
	size_t n = strlen(s), lead = gostr_space_prefix(s, n);

	s += lead;
	n -= lead;
	s[n - gostr_space_suffix(s, n)] = '\0';
	return s;
}

static struct df_ast *
parse_str(const char *s, size_t n, struct kiln_err *err)
{
	struct df_ast *ast = NULL;

	if (df_parse(s, n, "Dockerfile", &ast, err) < 0)
		return NULL;
	return ast;
}

/* ---- parser ---- */

static void
run_testfiles(void)
{
	struct tally t;
	size_t n, i;
	char **dirs;

	tally_begin(&t, "parser testfiles");
	dirs = list_dirs("buildkit/frontend/dockerfile/parser/testfiles", &n);
	if (n == 0)
		failf(&t, "no cases found");
	for (i = 0; i < n; i++) {
		char rel[512];
		size_t dlen, rlen;
		char *df, *res, *dump = NULL;
		struct kiln_err err = { 0 };
		struct df_ast *ast;

		snprintf(rel, sizeof(rel), "buildkit/frontend/dockerfile/parser/testfiles/%s/Dockerfile",
			 dirs[i]);
		df = must_read(&t, rel, &dlen);
		snprintf(rel, sizeof(rel), "buildkit/frontend/dockerfile/parser/testfiles/%s/result",
			 dirs[i]);
		res = must_read(&t, rel, &rlen);
		if (!df || !res) {
			free(df);
			free(res);
			continue;
		}
		ast = parse_str(df, dlen, &err);
		if (!ast) {
			failf(&t, "%s: parse failed: %s", dirs[i], err.msg);
		} else {
			dump = df_ast_dump(ast);
			if (dump && strcmp(dump, res) == 0)
				t.pass++;
			else
				failf(&t, "%s: dump differs\n--- got\n%s--- want\n%s", dirs[i],
				      dump ? dump : "(null)\n", res);
		}
		free(dump);
		df_ast_free(ast);
		free(df);
		free(res);
	}
	free_list(dirs, n);
	tally_end(&t);

	tally_begin(&t, "parser testfiles-negative");
	dirs = list_dirs("buildkit/frontend/dockerfile/parser/testfiles-negative", &n);
	if (n == 0)
		failf(&t, "no cases found");
	for (i = 0; i < n; i++) {
		char rel[512];
		size_t dlen;
		char *df;
		struct kiln_err err = { 0 };
		struct df_ast *ast;

		snprintf(rel, sizeof(rel),
			 "buildkit/frontend/dockerfile/parser/testfiles-negative/%s/Dockerfile", dirs[i]);
		df = must_read(&t, rel, &dlen);
		if (!df)
			continue;
		ast = parse_str(df, dlen, &err);
		check(&t, ast == NULL, "%s: parsed, but must fail", dirs[i]);
		df_ast_free(ast);
		free(df);
	}
	free_list(dirs, n);
	tally_end(&t);
}

static void
run_line_numbers(void)
{
	struct tally t;
	json_t *j, *kids;
	char *df;
	size_t len, i;
	struct kiln_err err = { 0 };
	struct df_ast *ast;

	tally_begin(&t, "parser testfile-line (line-numbers.json)");
	j = must_json(&t, "buildkit/derived/parser/line-numbers.json");
	df = must_read(&t, "buildkit/frontend/dockerfile/parser/testfile-line/Dockerfile", &len);
	if (j && df) {
		json_t *root = json_object_get(j, "root");
		bool ok = true;

		ast = parse_str(df, len, &err);
		if (!ast) {
			failf(&t, "parse failed: %s", err.msg);
		} else {
			kids = json_object_get(j, "children");
			ok = ast->start_line == jint(root, "start_line") &&
			     ast->end_line == jint(root, "end_line") &&
			     ast->n_nodes == (size_t) jint(root, "children");
			for (i = 0; ok && i < json_array_size(kids); i++) {
				json_t *c = json_array_get(kids, i);

				ok = ast->nodes[i].start_line ==
					     jint(c, "start_line") &&
				     ast->nodes[i].end_line ==
					     jint(c, "end_line");
			}
			check(&t, ok, "line numbers differ (root %d-%d, %zu children)", ast->start_line,
			      ast->end_line, ast->n_nodes);
			df_ast_free(ast);
		}
	}
	json_decref(j);
	free(df);
	tally_end(&t);
}

static bool
json_str_eq(json_t *v, const char *s, size_t n)
{
	return json_is_string(v) && json_string_length(v) == n &&
	       memcmp(json_string_value(v), s, n) == 0;
}

/* Compare a node's heredocs with a JSON list of {name, fd, expand, chomp,
 * content} (null = none). */
static bool
heredocs_equal(const struct df_node *n, json_t *want, char *why, size_t why_len)
{
	size_t i, nw = json_is_array(want) ? json_array_size(want) : 0;

	if (n->n_heredocs != nw) {
		snprintf(why, why_len, "%zu heredocs, want %zu", n->n_heredocs, nw);
		return false;
	}
	for (i = 0; i < nw; i++) {
		json_t *w = json_array_get(want, i);
		const struct df_heredoc *h = &n->heredocs[i];

		if (!json_str_eq(json_object_get(w, "name"), h->name, strlen(h->name)) ||
		    (json_int_t) h->fd != jint(w, "fd") ||
		    h->expand != json_is_true(json_object_get(w, "expand")) ||
		    h->chomp != json_is_true(json_object_get(w, "chomp")) ||
		    !json_str_eq(json_object_get(w, "content"), h->content, h->content_len)) {
			snprintf(why, why_len, "heredoc %zu: got name=%s fd=%llu expand=%d chomp=%d "
				 "content=%s", i, qs(h->name), (unsigned long long) h->fd, h->expand,
				 h->chomp, q(h->content, h->content_len));
			return false;
		}
	}
	return true;
}

static void
run_heredoc_children(const char *name, const char *dir)
{
	struct tally t;
	char rel[256], *df;
	json_t *j, *kids;
	size_t len, i;
	struct kiln_err err = { 0 };
	struct df_ast *ast;

	tally_begin(&t, name);
	snprintf(rel, sizeof(rel), "%s/expected.json", dir);
	j = must_json(&t, rel);
	snprintf(rel, sizeof(rel), "%s/Dockerfile", dir);
	df = must_read(&t, rel, &len);
	if (j && df) {
		ast = parse_str(df, len, &err);
		if (!ast)
			failf(&t, "parse failed: %s", err.msg);
		kids = json_object_get(j, "children");
		for (i = 0; ast && i < json_array_size(kids); i++) {
			json_t *c = json_array_get(kids, i);
			size_t idx = (size_t) jint(c, "child");
			char why[4096];

			if (idx >= ast->n_nodes) {
				failf(&t, "child %zu missing (%zu nodes)", idx, ast->n_nodes);
				continue;
			}
			check(&t, heredocs_equal(&ast->nodes[idx], json_object_get(c, "heredocs"), why,
						 sizeof(why)),
			      "child %zu (%s): %s", idx, qs(ast->nodes[idx].original), why);
		}
		df_ast_free(ast);
	}
	json_decref(j);
	free(df);
	tally_end(&t);
}

static void
run_heredoc_tsv(void)
{
	struct tally t;
	size_t len, nl, i;
	char *buf, **lines;

	tally_begin(&t, "parser heredoc-words.tsv");
	buf = must_read(&t, "buildkit/derived/parser/heredoc-words.tsv", &len);
	lines = buf ? split_lines(buf, len, &nl) : NULL;
	for (i = 0; buf && i < nl; i++) {
		char *f[2];
		struct df_heredoc h;
		struct kiln_err err = { 0 };
		int r;

		if (lines[i][0] == '#' || !lines[i][0])
			continue;
		if (split_fields(lines[i], '\t', f, 2) != 2) {
			failf(&t, "bad line %s", qs(lines[i]));
			continue;
		}
		r = df_parse_heredoc(f[1], &h, &err);
		if (strcmp(f[0], "error") == 0)
			check(&t, r < 0, "%s: want error, got %d", qs(f[1]), r);
		else if (strcmp(f[0], "none") == 0)
			check(&t, r == 0, "%s: want no heredoc, got %d", qs(f[1]), r);
		else
			check(&t, r == 1 && strcmp(h.name, f[0]) == 0, "%s: want %s, got %d %s",
			      qs(f[1]), f[0], r, r == 1 ? qs(h.name) : err.msg);
		if (r == 1)
			df_heredoc_release(&h);
	}
	free(lines);
	free(buf);
	tally_end(&t);

	tally_begin(&t, "parser heredocs-from-line.tsv");
	buf = must_read(&t, "buildkit/derived/parser/heredocs-from-line.tsv", &len);
	lines = buf ? split_lines(buf, len, &nl) : NULL;
	for (i = 0; buf && i < nl; i++) {
		char *f[16];
		size_t nf, k, nh = 0;
		struct df_heredoc *hs = NULL;
		struct kiln_err err = { 0 };
		bool ok;
		int r;

		if (lines[i][0] == '#' || !lines[i][0])
			continue;
		nf = split_fields(lines[i], '\t', f, 16);
		r = df_heredocs_from_line(f[0], &hs, &nh, &err);
		ok = r == 0 && nh == nf - 1;
		for (k = 0; ok && k < nh; k++)
			ok = strcmp(hs[k].name, f[k + 1]) == 0;
		check(&t, ok, "%s: got %zu heredocs (%s), want %zu", qs(f[0]), nh,
		      nh ? qs(hs[0].name) : "-", nf - 1);
		for (k = 0; k < nh; k++)
			df_heredoc_release(&hs[k]);
		free(hs);
	}
	free(lines);
	free(buf);
	tally_end(&t);
}

static void
run_empty_continuation(void)
{
	struct tally t;
	json_t *j, *wc;
	char *df;
	size_t len, i, k;
	struct kiln_err err = { 0 };
	struct df_ast *ast;

	tally_begin(&t, "parser empty-continuation-warnings");
	j = must_json(&t, "buildkit/derived/parser/empty-continuation-warnings/expected.json");
	df = must_read(&t, "buildkit/derived/parser/empty-continuation-warnings/Dockerfile", &len);
	if (j && df) {
		ast = parse_str(df, len, &err);
		if (!ast) {
			failf(&t, "parse failed: %s", err.msg);
		} else {
			bool ok = ast->n_warnings ==
				  (size_t) jint(j, "warning_count");

			wc = json_object_get(j, "warnings_contain");
			for (i = 0; ok && i < json_array_size(wc); i++) {
				json_t *subs = json_array_get(wc, i);

				for (k = 0; ok && k < json_array_size(subs); k++)
					ok = strstr(ast->warnings[i].text,
						    json_string_value(json_array_get(subs, k))) != NULL;
			}
			for (i = 0; ok && i < ast->n_warnings; i++)
				ok = strstr(ast->warnings[i].detail,
					    jstr(j, "detail_contains"));
			check(&t, ok, "%zu warnings, first %s", ast->n_warnings,
			      ast->n_warnings ? qs(ast->warnings[0].text) : "-");
			df_ast_free(ast);
		}
	}
	json_decref(j);
	free(df);
	tally_end(&t);
}

/* "PREFIX input" parses into one node whose args are returned. */
static struct df_ast *
parse_prefixed(const char *prefix, json_t *input, struct kiln_err *err)
{
	size_t n = strlen(prefix) + json_string_length(input);
	char *s = malloc(n + 1);
	struct df_ast *ast;

	memcpy(s, prefix, strlen(prefix));
	memcpy(s + strlen(prefix), json_string_value(input), json_string_length(input));
	s[n] = '\0';
	ast = parse_str(s, n, err);
	free(s);
	return ast;
}

static bool
args_equal(const struct df_node *n, json_t *want)
{
	size_t i;

	if (n->n_args != json_array_size(want))
		return false;
	for (i = 0; i < n->n_args; i++)
		if (!json_str_eq(json_array_get(want, i), n->args[i], n->arg_lens[i]))
			return false;
	return true;
}

static void
run_words_and_json(void)
{
	struct tally t;
	json_t *j, *cases;
	size_t i;

	tally_begin(&t, "parser parse-words.json");
	j = must_json(&t, "buildkit/derived/parser/parse-words.json");
	cases = json_object_get(j, "cases");
	for (i = 0; i < json_array_size(cases); i++) {
		json_t *c = json_array_get(cases, i);
		struct kiln_err err = { 0 };
		struct df_ast *ast = parse_prefixed("ARG ", json_object_get(c, "input"), &err);
		char *dump = ast ? df_node_dump(&ast->nodes[0]) : NULL;

		check(&t, ast && args_equal(&ast->nodes[0], json_object_get(c, "expect")),
		      "%s: %s", jstr(c, "input"), dump ? dump : err.msg);
		free(dump);
		df_ast_free(ast);
	}
	json_decref(j);
	tally_end(&t);

	tally_begin(&t, "parser json-arrays.json");
	j = must_json(&t, "buildkit/derived/parser/json-arrays.json");
	cases = json_object_get(j, "valid");
	for (i = 0; i < json_array_size(cases); i++) {
		json_t *c = json_array_get(cases, i);
		struct kiln_err err = { 0 };
		struct df_ast *ast = parse_prefixed("CMD ", json_object_get(c, "input"), &err);

		check(&t, ast && ast->nodes[0].json &&
			  args_equal(&ast->nodes[0], json_object_get(c, "expect")),
		      "valid %s: %s", jstr(c, "input"),
		      ast ? "wrong elements" : err.msg);
		df_ast_free(ast);
	}
	cases = json_object_get(j, "invalid_not_all_strings");
	for (i = 0; i < json_array_size(cases); i++) {
		json_t *c = json_array_get(cases, i);
		struct kiln_err err = { 0 };
		struct df_ast *ast = parse_prefixed("CMD ", c, &err);

		check(&t, !ast && strstr(err.msg, "arrays must be comprised of strings only"),
		      "invalid %s: %s", json_string_value(c), ast ? "parsed" : err.msg);
		df_ast_free(ast);
	}
	json_decref(j);
	tally_end(&t);
}

static void
run_directives(void)
{
	static const char *const keys[] = { "syntax", "escape", "check" };
	struct tally t;
	json_t *j, *cases;
	size_t i, k;

	tally_begin(&t, "parser directives.json");
	j = must_json(&t, "buildkit/derived/parser/directives.json");
	cases = json_object_get(j, "cases");
	for (i = 0; i < json_array_size(cases); i++) {
		json_t *c = json_array_get(cases, i), *e = json_object_get(c, "expect");
		const char *fn = jstr(c, "func");
		json_t *in = json_object_get(c, "input");
		const char *input = json_string_value(in);
		size_t len = json_string_length(in);
		char *cmdline = NULL;
		int line = 0, r;
		bool ok = true;

		if (strcmp(fn, "ParseAll") == 0) {
			/* every known directive: found iff listed, with its value */
			json_t *list = json_object_get(e, "directives");

			for (k = 0; k < 3; k++) {
				json_t *want = NULL;
				size_t m;

				for (m = 0; m < json_array_size(list); m++) {
					json_t *d = json_array_get(list, m);

					if (strcmp(jstr(d, "name"),
						   keys[k]) == 0)
						want = json_object_get(d, "value");
				}
				r = df_find_directive(input, len, keys[k], false, &cmdline, &line);
				if (want)
					ok = ok && r == 1 && strcmp(cmdline, json_string_value(want)) == 0;
				else
					ok = ok && r == 0;
				free(cmdline);
				cmdline = NULL;
			}
			check(&t, ok, "case %zu ParseAll %s", i, qs(input));
			continue;
		}
		r = df_find_directive(input, len, strcmp(fn, "DetectSyntax") == 0 ? "syntax" : "check",
				      strcmp(fn, "DetectSyntax") == 0, &cmdline, &line);
		ok = (r == 1) == json_is_true(json_object_get(e, "ok"));
		if (ok && json_object_get(e, "value")) {
			const char *want = jstr(e, "value");
			size_t vlen = r == 1 ? strcspn(cmdline, " ") : 0;

			ok = strlen(want) == vlen && (vlen == 0 || memcmp(cmdline, want, vlen) == 0);
		}
		if (ok && json_object_get(e, "cmdline"))
			ok = strcmp(r == 1 ? cmdline : "",
				    jstr(e, "cmdline")) == 0;
		if (ok && json_object_get(e, "line"))
			ok = line == jint(e, "line");
		check(&t, ok, "case %zu %s %s: got r=%d cmdline=%s line=%d", i, fn, qs(input), r,
		      qs(cmdline), line);
		free(cmdline);
	}
	json_decref(j);
	tally_end(&t);
}

static void
run_errors_json(void)
{
	struct tally t;
	struct kiln_err err = { 0 };
	struct df_ast *ast;
	json_t *j;
	char *buf;
	size_t n = 0;

	tally_begin(&t, "parser errors.json");
	j = must_json(&t, "buildkit/derived/parser/errors.json");
	if (j) {
		const char *want = json_string_value(
			json_object_get(json_array_get(json_object_get(j, "cases"), 0), "error"));
		const char *head = "\n\t\tFROM image\n\t\tLABEL test=";

		/* as the input_generator sentence says */
		buf = malloc(strlen(head) + 65536 + 2);
		memcpy(buf, head, strlen(head));
		n = strlen(head);
		memset(buf + n, 'a', 65536);
		n += 65536;
		buf[n++] = '\n';
		ast = parse_str(buf, n, &err);
		check(&t, !ast && want && strstr(err.msg, want), "got %s", ast ? "success" : err.msg);
		df_ast_free(ast);
		free(buf);
	}
	json_decref(j);
	tally_end(&t);
}

/* A *.parse.generated.json against our parse of the Dockerfile next to it. */
static void
check_generated(struct tally *t, const char *df_rel, const char *gen_rel)
{
	struct kiln_err err = { 0 };
	struct df_ast *ast;
	json_t *g, *kids, *warns;
	char *df, why[4096] = "";
	size_t len, i;
	bool ok = true;

	g = must_json(t, gen_rel);
	df = must_read(t, df_rel, &len);
	if (!g || !df)
		goto out;
	ast = parse_str(df, len, &err);
	if (json_object_get(g, "error")) {
		check(t, !ast, "%s: parsed, but upstream fails", df_rel);
		df_ast_free(ast);
		goto out;
	}
	if (!ast) {
		failf(t, "%s: parse failed: %s", df_rel, err.msg);
		goto out;
	}
	kids = json_object_get(g, "children");
	warns = json_object_get(g, "warnings");
	if (!json_str_eq(json_object_get(g, "escape_token"), &ast->escape, 1) ||
	    ast->start_line != jint(g, "start_line") ||
	    ast->end_line != jint(g, "end_line") ||
	    ast->n_nodes != json_array_size(kids) || ast->n_warnings != json_array_size(warns)) {
		snprintf(why, sizeof(why), "root: escape %c lines %d-%d, %zu children, %zu warnings",
			 ast->escape, ast->start_line, ast->end_line, ast->n_nodes, ast->n_warnings);
		ok = false;
	}
	for (i = 0; ok && i < ast->n_warnings; i++) {
		if (strcmp(ast->warnings[i].text, json_string_value(json_array_get(warns, i)))) {
			snprintf(why, sizeof(why), "warning %zu: %s", i, qs(ast->warnings[i].text));
			ok = false;
		}
	}
	for (i = 0; ok && i < ast->n_nodes; i++) {
		json_t *c = json_array_get(kids, i);
		char *dump = df_node_dump(&ast->nodes[i]);
		char full[8192];

		snprintf(full, sizeof(full), "(%s)", dump ? dump : "");
		if (strcmp(full, jstr(c, "dump")) ||
		    ast->nodes[i].start_line != jint(c, "start_line") ||
		    ast->nodes[i].end_line != jint(c, "end_line")) {
			snprintf(why, sizeof(why), "child %zu: %.3000s lines %d-%d", i, full,
				 ast->nodes[i].start_line, ast->nodes[i].end_line);
			ok = false;
		} else if (!heredocs_equal(&ast->nodes[i], json_object_get(c, "heredocs"), why,
					   sizeof(why))) {
			ok = false;
		}
		free(dump);
	}
	check(t, ok, "%s: %s", df_rel, why);
	df_ast_free(ast);
out:
	json_decref(g);
	free(df);
}

static void
run_generated(void)
{
	static const char *const buildkit[] = {
		"buildkit/derived/parser/empty-continuation-warnings",
		"buildkit/derived/parser/heredoc-extract",
		"buildkit/derived/parser/heredoc-json",
	};
	static const char *const buildx[] = {
		"Dockerfile",
		"hack/demo-env/examples/compose/Dockerfile",
		"hack/demo-env/examples/compose/Dockerfile.webapp",
		"hack/demo-env/examples/simple1/Dockerfile",
		"hack/dockerfiles/authors.Dockerfile",
		"hack/dockerfiles/docs.Dockerfile",
		"hack/dockerfiles/govulncheck.Dockerfile",
		"hack/dockerfiles/lint.Dockerfile",
		"hack/dockerfiles/vendor.Dockerfile",
	};
	struct tally t;
	size_t i;

	tally_begin(&t, "parser *.parse.generated.json");
	for (i = 0; i < sizeof(buildkit) / sizeof(buildkit[0]); i++) {
		char df[256], gen[256];

		snprintf(df, sizeof(df), "%s/Dockerfile", buildkit[i]);
		snprintf(gen, sizeof(gen), "%s/parse.generated.json", buildkit[i]);
		check_generated(&t, df, gen);
	}
	for (i = 0; i < sizeof(buildx) / sizeof(buildx[0]); i++) {
		char df[256], gen[256];

		snprintf(df, sizeof(df), "buildx/%s", buildx[i]);
		snprintf(gen, sizeof(gen), "buildx/generated/%s.parse.generated.json", buildx[i]);
		check_generated(&t, df, gen);
	}
	tally_end(&t);
}

/* ---- shell ---- */

static void
run_env_var_test(void)
{
	static const char *const env[] = { "PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL=" };
	const struct shell_env e = { env, 4 };
	struct tally t;
	size_t len, nl, i;
	char *buf, **lines;

	tally_begin(&t, "shell envVarTest");
	buf = must_read(&t, "buildkit/frontend/dockerfile/shell/envVarTest", &len);
	lines = buf ? split_lines(buf, len, &nl) : NULL;
	for (i = 0; buf && i < nl; i++) {
		char *f[4], *line = lines[i], *plat, *in, *want, *got = NULL;
		struct kiln_err err = { 0 };
		int r;

		if (line[0] == '#')
			continue;
		line = trim(line);
		if (!*line)
			continue;
		if (split_fields(line, '|', f, 4) != 3) {
			failf(&t, "line %zu: not 3 fields", i + 1);
			continue;
		}
		plat = trim(f[0]);
		in = trim(f[1]);
		want = trim(f[2]);
		if (strcmp(plat, "W") == 0)
			continue;       /* Windows only */
		r = shell_process_word(in, '\\', &e, &got, &err);
		if (strcmp(want, "error") == 0)
			check(&t, r < 0, "line %zu %s: want error, got %s", i + 1, qs(in), qs(got));
		else
			check(&t, r == 0 && strcmp(got, want) == 0, "line %zu %s: want %s, got %s",
			      i + 1, qs(in), qs(want), r == 0 ? qs(got) : err.msg);
		free(got);
	}
	free(lines);
	free(buf);
	tally_end(&t);
}

static void
run_words_test(void)
{
	struct tally t;
	size_t len, nl, i, n_env = 0;
	char *buf, **lines;
	const char *env[64];

	tally_begin(&t, "shell wordsTest");
	buf = must_read(&t, "buildkit/frontend/dockerfile/shell/wordsTest", &len);
	lines = buf ? split_lines(buf, len, &nl) : NULL;
	for (i = 0; buf && i < nl; i++) {
		char *line = lines[i], *f[3], *in, *want, *exp[32];
		struct shell_env e = { env, n_env };
		struct kiln_err err = { 0 };
		char **words = NULL;
		size_t n_words = 0, n_exp, k;
		bool ok;
		int r;

		if (line[0] == '#')
			continue;
		if (strncmp(line, "ENV ", 4) == 0) {
			char *v = line + 4;

			while (*v == ' ')
				v++;
			if (n_env < 64)
				env[n_env++] = v;
			continue;
		}
		if (split_fields(line, '|', f, 3) != 2) {
			failf(&t, "line %zu: not 2 fields", i + 1);
			continue;
		}
		in = trim(f[0]);
		want = f[1];
		while (*want == ' ')
			want++;
		r = shell_process_words(in, '\\', &e, &words, &n_words, &err);
		if (strcmp(want, "error") == 0) {
			check(&t, r < 0, "line %zu %s: want error", i + 1, qs(in));
			if (r == 0)
				shell_words_free(words, n_words);
			continue;
		}
		n_exp = split_fields(want, ',', exp, 32);
		ok = r == 0 && n_words == n_exp;
		for (k = 0; ok && k < n_exp; k++)
			ok = strcmp(words[k], exp[k]) == 0;
		check(&t, ok, "line %zu %s: got %zu words, first %s", i + 1, qs(in), n_words,
		      n_words ? qs(words[0]) : r < 0 ? err.msg : "-");
		if (r == 0)
			shell_words_free(words, n_words);
	}
	free(lines);
	free(buf);
	tally_end(&t);
}

static bool
names_equal(char **got, size_t n, json_t *want)
{
	size_t i;

	if (n != json_array_size(want))
		return false;
	for (i = 0; i < n; i++)
		if (strcmp(got[i], json_string_value(json_array_get(want, i))))
			return false;
	return true;
}

/* "K=V" strings from a JSON object or array; freed with free_env. */
static const char **
env_from_json(json_t *j, size_t *ret_n)
{
	const char **v = calloc(json_is_object(j) ? json_object_size(j) + 1 :
				json_array_size(j) + 1, sizeof(*v));
	size_t n = 0, i;

	if (json_is_object(j)) {
		const char *k;
		json_t *val;

		json_object_foreach(j, k, val) {
			char *s = malloc(strlen(k) + json_string_length(val) + 2);

			sprintf(s, "%s=%s", k, json_string_value(val));
			v[n++] = s;
		}
	} else {
		for (i = 0; i < json_array_size(j); i++)
			v[n++] = strdup(json_string_value(json_array_get(j, i)));
	}
	*ret_n = n;
	return v;
}

static void
free_env(const char **v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free((char *) v[i]);
	free(v);
}

static void
run_shell_derived(void)
{
	struct tally t;
	json_t *j, *cases;
	size_t i;

	tally_begin(&t, "shell process-word-with-matches.json");
	j = must_json(&t, "buildkit/derived/shell/process-word-with-matches.json");
	cases = json_object_get(j, "cases");
	for (i = 0; i < json_array_size(cases); i++) {
		json_t *c = json_array_get(cases, i);
		const char *in = jstr(c, "input");
		struct kiln_err err = { 0 };
		struct shell_result res;
		struct shell_env e;
		size_t n;
		const char **env = env_from_json(json_object_get(c, "env"), &n);
		int r;

		e.vars = env;
		e.n = n;
		r = shell_process(in, '\\', 0, &e, &res, &err);
		if (json_is_true(json_object_get(c, "error"))) {
			check(&t, r < 0, "%s: want error, got %s", qs(in), r == 0 ? qs(res.word) : "");
		} else {
			check(&t, r == 0 &&
				  strcmp(res.word, jstr(c, "expected")) == 0 &&
				  names_equal(res.matched, res.n_matched, json_object_get(c, "matched")) &&
				  names_equal(res.unmatched, res.n_unmatched,
					      json_object_get(c, "unmatched")),
			      "%s: got %s (%zu matched, %zu unmatched)", qs(in),
			      r == 0 ? qs(res.word) : err.msg, r == 0 ? res.n_matched : 0,
			      r == 0 ? res.n_unmatched : 0);
		}
		if (r == 0)
			shell_result_release(&res);
		free_env(env, n);
	}
	json_decref(j);
	tally_end(&t);

	tally_begin(&t, "shell misc.json");
	j = must_json(&t, "buildkit/derived/shell/misc.json");
	cases = json_object_get(j, "process_word");
	for (i = 0; i < json_array_size(cases); i++) {
		json_t *c = json_array_get(cases, i), *want = json_object_get(c, "expected");
		const char *in = jstr(c, "input");
		struct kiln_err err = { 0 };
		char *got = NULL;
		size_t n;
		const char **env = env_from_json(json_object_get(c, "env"), &n);
		struct shell_env e = { env, n };
		int r;

		r = shell_process_word(in, '\\', &e, &got, &err);
		if (want)
			check(&t, r == 0 && strcmp(got, json_string_value(want)) == 0, "%s: got %s",
			      qs(in), r == 0 ? qs(got) : err.msg);
		else
			check(&t, r < 0 && strstr(err.msg, jstr(
								   c, "error_contains")),
			      "%s: got %s", qs(in), r == 0 ? qs(got) : err.msg);
		free(got);
		free_env(env, n);
	}
	cases = json_object_get(json_object_get(j, "env_lookup"), "cases");
	for (i = 0; i < json_array_size(cases); i++) {
		json_t *c = json_array_get(cases, i);
		const char *key = jstr(c, "key"), *v;
		size_t n;
		const char **env = env_from_json(json_object_get(c, "env"), &n);
		struct shell_env e = { env, n };

		v = shell_env_get(&e, key, strlen(key));
		check(&t, strcmp(v ? v : "", jstr(c, "value")) == 0,
		      "env_lookup %zu: %s -> %s", i, key, qs(v));
		free_env(env, n);
	}
	json_decref(j);
	tally_end(&t);
}

/* ---- instructions ---- */

static const char *
json_err_want(json_t *c, bool *exact)
{
	json_t *e = json_object_get(c, "error");

	*exact = json_is_string(e);
	return json_string_value(*exact ? e : json_object_get(c, "error_contains"));
}

static void
run_instructions(void)
{
	struct tally t;
	json_t *j, *cases;
	size_t i, k;

	tally_begin(&t, "instructions errors.json");
	j = must_json(&t, "buildkit/derived/instructions/errors.json");
	cases = json_object_get(j, "cases");
	for (i = 0; i < json_array_size(cases); i++) {
		json_t *c = json_array_get(cases, i);
		json_t *dfj = json_object_get(c, "dockerfile");
		struct kiln_err err = { 0 };
		struct df_ast *ast = parse_str(json_string_value(dfj), json_string_length(dfj), &err);
		bool exact;
		const char *want = json_err_want(c, &exact);
		int r;

		if (!ast) {
			failf(&t, "%s: parse failed: %s", qs(json_string_value(dfj)), err.msg);
			continue;
		}
		r = instr_check(&ast->nodes[0], &err);
		check(&t, r < 0 && (exact ? strcmp(err.msg, want) == 0 : strstr(err.msg, want) != NULL),
		      "%s: want %s, got %s", qs(json_string_value(dfj)), qs(want),
		      r < 0 ? qs(err.msg) : "success");
		df_ast_free(ast);
	}
	json_decref(j);
	tally_end(&t);

	tally_begin(&t, "instructions copy-heredoc.json");
	j = must_json(&t, "buildkit/derived/instructions/copy-heredoc.json");
	cases = json_object_get(j, "cases");
	for (i = 0; i < json_array_size(cases); i++) {
		json_t *c = json_array_get(cases, i), *dfj = json_object_get(c, "dockerfile");
		json_t *paths = json_object_get(c, "source_paths");
		json_t *contents = json_object_get(c, "source_contents");
		struct kiln_err err = { 0 };
		struct df_ast *ast = parse_str(json_string_value(dfj), json_string_length(dfj), &err);
		const struct df_node *n;
		size_t np = 0, nc = 0;
		bool ok;

		if (!ast || instr_check(&ast->nodes[0], &err) < 0) {
			failf(&t, "%s: %s", qs(json_string_value(dfj)), err.msg);
			df_ast_free(ast);
			continue;
		}
		n = &ast->nodes[0];
		ok = n->n_args >= 2 &&
		     strcmp(n->args[n->n_args - 1],
			    jstr(c, "dest_path")) == 0;
		/* each source is a heredoc (by its opener) or a path */
		for (k = 0; ok && k + 1 < n->n_args; k++) {
			struct df_heredoc h;
			size_t m;

			if (df_parse_heredoc(n->args[k], &h, NULL) == 1) {
				json_t *w = json_array_get(contents, nc++);
				const struct df_heredoc *body = NULL;
				char *data;
				size_t dlen;

				for (m = 0; m < n->n_heredocs; m++)
					if (strcmp(n->heredocs[m].name, h.name) == 0)
						body = &n->heredocs[m];
				ok = w && body && strcmp(h.name, jstr(w, "path")) == 0 &&
				     h.expand == json_is_true(json_object_get(w, "expand"));
				if (ok) {
					data = body->chomp ?
						       df_heredoc_chomp(body->content, body->content_len, &dlen) :
						       strdup(body->content);
					if (!body->chomp)
						dlen = body->content_len;
					ok = json_str_eq(json_object_get(w, "data"), data, dlen);
					free(data);
				}
				df_heredoc_release(&h);
			} else {
				json_t *w = json_array_get(paths, np++);

				ok = w && strcmp(n->args[k], json_string_value(w)) == 0;
			}
		}
		ok = ok && np == json_array_size(paths) && nc == json_array_size(contents);
		check(&t, ok, "%s: %zu paths, %zu contents", qs(json_string_value(dfj)), np, nc);
		df_ast_free(ast);
	}
	json_decref(j);
	tally_end(&t);

	tally_begin(&t, "instructions run-heredoc.json");
	j = must_json(&t, "buildkit/derived/instructions/run-heredoc.json");
	cases = json_object_get(j, "cases");
	for (i = 0; i < json_array_size(cases); i++) {
		json_t *c = json_array_get(cases, i), *dfj = json_object_get(c, "dockerfile");
		json_t *files = json_object_get(c, "files");
		struct kiln_err err = { 0 };
		struct df_ast *ast = parse_str(json_string_value(dfj), json_string_length(dfj), &err);
		const struct df_node *n;
		bool ok;

		if (!ast || instr_check(&ast->nodes[0], &err) < 0) {
			failf(&t, "%s: %s", qs(json_string_value(dfj)), err.msg);
			df_ast_free(ast);
			continue;
		}
		n = &ast->nodes[0];
		ok = n->json != json_is_true(json_object_get(c, "prepend_shell")) &&
		     args_equal(n, json_object_get(c, "cmdline")) &&
		     n->n_heredocs == json_array_size(files);
		for (k = 0; ok && k < n->n_heredocs; k++) {
			json_t *w = json_array_get(files, k);

			ok = strcmp(n->heredocs[k].name, jstr(w, "name")) == 0 &&
			     json_str_eq(json_object_get(w, "data"), n->heredocs[k].content,
					 n->heredocs[k].content_len) &&
			     n->heredocs[k].chomp == json_is_true(json_object_get(w, "chomp"));
		}
		check(&t, ok, "%s", qs(json_string_value(dfj)));
		df_ast_free(ast);
	}
	json_decref(j);
	tally_end(&t);

	tally_begin(&t, "instructions flags.json");
	j = must_json(&t, "buildkit/derived/instructions/flags.json");
	cases = json_object_get(j, "cases");
	for (i = 0; i < json_array_size(cases); i++) {
		json_t *c = json_array_get(cases, i), *defs = json_object_get(c, "defs");
		json_t *args = json_object_get(c, "args"), *e = json_object_get(c, "expect");
		json_t *values = json_object_get(e, "values"), *used = json_object_get(e, "used");
		struct instr_flag_def d[16];
		struct instr_flag_value v[16];
		const char *a[16];
		struct kiln_err err = { 0 };
		size_t nd = json_array_size(defs), na = json_array_size(args), nu = 0;
		bool ok;
		int r;

		for (k = 0; k < nd; k++) {
			json_t *dj = json_array_get(defs, k), *def = json_object_get(dj, "default");

			d[k].name = jstr(dj, "name");
			d[k].type = strcmp(jstr(dj, "type"), "bool") == 0 ?
					    INSTR_FLAG_BOOL : INSTR_FLAG_STRING;
			d[k].def = json_is_string(def) ? json_string_value(def) :
				   json_is_true(def) ? "true" : "false";
		}
		for (k = 0; k < na; k++)
			a[k] = json_string_value(json_array_get(args, k));
		r = instr_flags_parse(a, na, d, nd, v, &err);
		ok = (r < 0) == json_is_true(json_object_get(e, "error"));
		for (k = 0; ok && r == 0 && k < nd; k++) {
			json_t *want = json_object_get(values, d[k].name);

			if (v[k].used)
				nu++;
			if (want && json_is_string(want))
				ok = strcmp(v[k].value, json_string_value(want)) == 0;
			else if (want)
				ok = strcmp(v[k].value, json_is_true(want) ? "true" : "false") == 0;
			if (ok && used) {
				size_t m;
				bool listed = false;

				for (m = 0; m < json_array_size(used); m++)
					listed |= strcmp(json_string_value(json_array_get(used, m)),
							 d[k].name) == 0;
				ok = listed == v[k].used;
			}
		}
		if (ok && r == 0 && used)
			ok = nu == json_array_size(used);
		check(&t, ok, "case %zu: r=%d %s", i, r, err.msg);
		instr_flag_values_release(v, nd);
	}
	cases = json_object_get(json_object_get(j, "interval"), "cases");
	for (i = 0; i < json_array_size(cases); i++) {
		json_t *c = json_array_get(cases, i), *ec = json_object_get(c, "error_contains");
		const char *value = jstr(c, "value");
		struct kiln_err err = { 0 };
		int64_t ns;
		int r = instr_parse_interval("interval", value, &ns, &err);

		if (ec)
			check(&t, r < 0 && strstr(err.msg, json_string_value(ec)), "interval %s: %s",
			      value, r < 0 ? err.msg : "accepted");
		else
			check(&t, r == 0, "interval %s: %s", value, err.msg);
	}
	json_decref(j);
	tally_end(&t);
}

/* ---- .dockerignore ---- */

static void
run_ignorefile(void)
{
	struct tally t;
	char *in, *want, **lines, **pats = NULL;
	size_t ilen, wlen, nl, np = 0, i;
	struct kiln_err err = { 0 };
	int r;

	tally_begin(&t, "patternmatcher ignorefile");
	in = must_read(&t, "patternmatcher/derived/ignorefile/dockerignore", &ilen);
	want = must_read(&t, "patternmatcher/derived/ignorefile/expected", &wlen);
	if (in && want) {
		bool ok;

		lines = split_lines(want, wlen, &nl);
		r = ignore_read(in, ilen, &pats, &np, &err);
		ok = r == 0 && np == nl;
		for (i = 0; ok && i < np; i++)
			ok = strcmp(pats[i], lines[i]) == 0;
		check(&t, ok, "got %zu patterns, want %zu (%s)", np, nl, r < 0 ? err.msg : "");
		for (i = 0; i < np; i++)
			free(pats[i]);
		free(pats);
		free(lines);
	}
	free(in);
	free(want);
	in = must_read(&t, "buildx/.dockerignore", &ilen);
	if (in) {
		struct ignore *ig = NULL;
		bool ex = false;

		r = ignore_parse(in, ilen, &ig, &err);
		if (r == 0)
			r = ignore_match(ig, "bin/kiln", &ex, &err);
		check(&t, r == 0 && ex, "buildx/.dockerignore: %s", r < 0 ? err.msg : "bin/kiln kept");
		ignore_free(ig);
		free(in);
	}
	tally_end(&t);
}

/* The deprecated package-level Matches(file, patterns): parents are only
 * tried at the depth of the pattern. */
static int
legacy_matches(const char *file, const char *const *pats, size_t n, bool *ret,
	       struct kiln_err *err)
{
	struct ignore *ig;
	char *clean, *parent, *slash;
	size_t depth = 1, i;
	bool matched = false;
	int r;

	r = ignore_new(pats, n, &ig, err);
	if (r < 0)
		return r;
	clean = ignore_clean_path(file);
	if (strcmp(clean, ".") == 0) {
		*ret = false;
		goto out;
	}
	slash = strrchr(clean, '/');
	parent = slash ? strndup(clean, (size_t) (slash - clean)) : strdup(".");
	if (parent[0] == '\0') {
		free(parent);
		parent = strdup("/");
	}
	for (i = 0; parent[i]; i++)
		depth += parent[i] == '/';
	for (i = 0; i < ignore_count(ig); i++) {
		bool excl, m = false;
		const char *text = ignore_pattern(ig, i, &excl);
		size_t pdirs = 1, k;

		if (excl != matched)
			continue;
		r = ignore_pattern_match(ig, i, clean, &m, err);
		if (r < 0)
			break;
		for (k = 0; text[k]; k++)
			pdirs += text[k] == '/';
		if (!m && strcmp(parent, ".") != 0 && pdirs <= depth) {
			/* the first pdirs elements of parent */
			char *cut = strdup(parent), *p = cut;

			for (k = 0; k < pdirs; k++) {
				p = strchr(p, '/');
				if (!p)
					break;
				if (k + 1 == pdirs)
					*p = '\0';
				else
					p++;
			}
			(void) ignore_pattern_match(ig, i, cut, &m, NULL);
			free(cut);
		}
		if (m)
			matched = !excl;
	}
	free(parent);
	*ret = matched;
out:
	free(clean);
	ignore_free(ig);
	return r;
}

static void
run_pattern_tsv(const char *name, const char *rel, bool legacy)
{
	struct tally t;
	char *buf, **lines;
	size_t len, nl, i;

	tally_begin(&t, name);
	buf = must_read(&t, rel, &len);
	lines = buf ? split_lines(buf, len, &nl) : NULL;
	for (i = 0; buf && i < nl; i++) {
		char *f[32];
		size_t nf;
		struct kiln_err err = { 0 };
		struct ignore *ig = NULL;
		bool m = false;
		int r;

		if (lines[i][0] == '#' || !lines[i][0])
			continue;
		nf = split_fields(lines[i], '\t', f, 32);
		if (nf < 3) {
			failf(&t, "line %zu: too few fields", i + 1);
			continue;
		}
		if (legacy) {
			r = legacy_matches(f[2], (const char *const *) f + 3, nf - 3, &m, &err);
		} else {
			r = ignore_new((const char *const *) f + 3, nf - 3, &ig, &err);
			if (r < 0)
				err.msg[0] = '!';       /* New must accept every row */
			else
				r = ignore_match(ig, f[2], &m, &err);
			ignore_free(ig);
		}
		if (strcmp(f[0], "error") == 0)
			check(&t, r < 0 && (legacy || err.msg[0] != '!'),
			      "line %zu: %s vs %s: want error, got %s", i + 1, qs(f[2]), qs(f[3]),
			      r < 0 ? err.msg : m ? "match" : "nomatch");
		else
			check(&t, r == 0 && m == (strcmp(f[0], "match") == 0),
			      "line %zu: %s vs %s: want %s, got %s", i + 1, qs(f[2]),
			      nf > 3 ? qs(f[3]) : "-", f[0], r < 0 ? err.msg : m ? "match" : "nomatch");
	}
	free(lines);
	free(buf);
	tally_end(&t);
}

int
main(int argc, char **argv)
{
	struct stat st;

	if (argc > 1)
		corpus = argv[1];
	if (stat(corpus, &st) < 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "corpus_test: no corpus at %s\n", corpus);
		return 2;
	}
	run_testfiles();
	run_line_numbers();
	run_heredoc_children("parser heredoc-extract", "buildkit/derived/parser/heredoc-extract");
	run_heredoc_children("parser heredoc-json", "buildkit/derived/parser/heredoc-json");
	run_heredoc_tsv();
	run_empty_continuation();
	run_words_and_json();
	run_directives();
	run_errors_json();
	run_generated();
	run_env_var_test();
	run_words_test();
	run_shell_derived();
	run_instructions();
	run_ignorefile();
	run_pattern_tsv("patternmatcher matches.tsv", "patternmatcher/derived/matches.tsv", false);
	run_pattern_tsv("patternmatcher legacy-matches.tsv",
			"patternmatcher/derived/legacy-matches.tsv", true);
	printf("%d passed, %d failed\n", total_pass, total_fail);
	return total_fail ? 1 : 0;
}
