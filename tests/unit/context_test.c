/* Unit tests for the client's context scan (cli/context.c) with a
 * .dockerignore: what is listed, re-inclusion below excluded directories,
 * which .dockerignore is used, and fsutil's way of matching with the
 * parent directory's results. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "context.h"
#include "err.h"
#include "ignore.h"
#include "util.h"

static char root[64];

static void
put(const char *rel, const char *content)
{
	char path[512];
	char *slash;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	slash = strrchr(path, '/');
	*slash = '\0';
	assert_int_equal(kiln_mkdir_p(path, 0755), 0);
	*slash = '/';
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(content, f);
	fclose(f);
}

static int
setup(void **state)
{
	(void) state;
	snprintf(root, sizeof(root), "/tmp/kiln-ctx-test.XXXXXX");
	assert_non_null(mkdtemp(root));
	return 0;
}

static int
teardown(void **state)
{
	(void) state;
	assert_int_equal(kiln_rm_rf(root), 0);
	return 0;
}

/* The listing as "path path ..." (directories with a trailing '/'). */
static char *
listing(const struct ctx_list *l)
{
	size_t cap = 16;
	char *s;

	for (size_t i = 0; i < l->n; i++)
		cap += strlen(l->v[i].path) + 2;
	s = calloc(1, cap);
	assert_non_null(s);
	for (size_t i = 0; i < l->n; i++) {
		if (i)
			strcat(s, " ");
		strcat(s, l->v[i].path);
		if (l->v[i].kind == 'd')
			strcat(s, "/");
	}
	return s;
}

static void
expect_scan(const char *patterns, const char *want)
{
	struct kiln_err err = { 0 };
	struct ignore *ig = NULL;
	struct ctx_list l;
	char *got;

	if (patterns)
		assert_int_equal(ignore_parse(patterns, strlen(patterns), &ig, &err), 0);
	if (context_scan_with(root, ig, &l, &err) < 0)
		fail_msg("scan: %s", err.msg);
	got = listing(&l);
	if (strcmp(got, want) != 0)
		fail_msg("patterns %s\n got: %s\nwant: %s", patterns ? patterns : "(none)", got, want);
	free(got);
	context_release(&l);
	ignore_free(ig);
}

static void
tree(void)
{
	put("Dockerfile", "FROM scratch\n");
	put("app.log", "x");
	put("keep.log", "x");
	put("src/main.c", "int main;\n");
	put("src/tmp/a.o", "x");
	put("build/out.bin", "x");
	put("build/keep/me.txt", "x");
	put("build/keep/not-me.txt", "x");
	put("docs/README.md", "x");
	put("docs/api/index.html", "x");
}

static void
no_ignore_lists_everything(void **state)
{
	struct kiln_err err = { 0 };
	struct ctx_list l;

	(void) state;
	tree();
	expect_scan(NULL, "Dockerfile app.log build/ build/keep/ build/keep/me.txt "
		    "build/keep/not-me.txt build/out.bin docs/ docs/README.md docs/api/ "
		    "docs/api/index.html keep.log src/ src/main.c src/tmp/ src/tmp/a.o");
	assert_int_equal(context_scan_with(root, NULL, &l, &err), 0);
	assert_int_equal(l.bytes, 13 + 1 + 1 + 10 + 1 + 1 + 1 + 1 + 1 + 1);
	context_release(&l);
}

static void
exclusions_and_reinclusions(void **state)
{
	(void) state;
	tree();
	/* excluded directories holding a re-included entry are listed */
	expect_scan("*.log\n!keep.log\n**/tmp\nbuild\n!build/keep/me.txt\ndocs/**\n!docs/README.md\n",
		    "Dockerfile build/ build/keep/ build/keep/me.txt docs/ docs/README.md keep.log "
		    "src/ src/main.c");
	/* a wildcard in a '!' pattern: every excluded directory is entered */
	expect_scan("build\ndocs\n!**/me.txt\n", "Dockerfile app.log build/ build/keep/ "
		    "build/keep/me.txt keep.log src/ src/main.c src/tmp/ src/tmp/a.o");
	/* the last matching pattern wins */
	expect_scan("src\n!src\nsrc/tmp\n", "Dockerfile app.log build/ build/keep/ build/keep/me.txt "
		    "build/keep/not-me.txt build/out.bin docs/ docs/README.md docs/api/ "
		    "docs/api/index.html keep.log src/ src/main.c");
	/* the Dockerfile itself can be excluded from the context */
	expect_scan("*\n!src\n", "src/ src/main.c src/tmp/ src/tmp/a.o");
	/* a leading '/', "./" and a trailing '/' are cleaned away */
	expect_scan("/build/\n./docs/api/\n", "Dockerfile app.log docs/ docs/README.md keep.log src/ "
		    "src/main.c src/tmp/ src/tmp/a.o");
}

/* fsutil matches with the results of the parent directory: a '!' pattern
 * that was not evaluated for the parent (nothing matched yet) does not
 * count as matching it, unlike MatchesOrParentMatches. */
static void
parent_results_quirk(void **state)
{
	(void) state;
	put("a/x", "x");
	put("a/y/z", "x");
	expect_scan("a/*\n!a\n", "a/");
}

/* Excluded files are neither listed nor counted. */
static void
excluded_files_count_nothing(void **state)
{
	struct kiln_err err = { 0 };
	struct ignore *ig = NULL;
	struct ctx_list l;

	(void) state;
	put("ok.txt", "x");
	put("secret/key", "k");
	put("big.iso", "0123456789");
	assert_int_equal(ignore_parse("secret\n*.iso\n", 13, &ig, &err), 0);
	assert_int_equal(context_scan_with(root, ig, &l, &err), 0);
	assert_int_equal(l.n, 1);
	assert_string_equal(l.v[0].path, "ok.txt");
	assert_int_equal(l.bytes, 1);
	context_release(&l);
	ignore_free(ig);
}

static void
which_dockerignore(void **state)
{
	struct kiln_err err = { 0 };
	char df[512], want[512];
	char *path = NULL;
	struct ctx_list l;

	(void) state;
	put("sub/Foo.Dockerfile", "FROM scratch\n");
	put("a.txt", "x");
	put("b.txt", "x");
	assert_int_equal(context_find_ignore(root, NULL, &path, &err), 0);
	put(".dockerignore", "a.txt\n");
	assert_int_equal(context_find_ignore(root, NULL, &path, &err), 1);
	snprintf(want, sizeof(want), "%s/.dockerignore", root);
	assert_string_equal(path, want);
	free(path);
	/* NAME.dockerignore next to the Dockerfile wins */
	put("sub/Foo.Dockerfile.dockerignore", "b.txt\nsub\n");
	snprintf(df, sizeof(df), "%s/sub/Foo.Dockerfile", root);
	assert_int_equal(context_find_ignore(root, df, &path, &err), 1);
	snprintf(want, sizeof(want), "%s/sub/Foo.Dockerfile.dockerignore", root);
	assert_string_equal(path, want);
	free(path);
	assert_int_equal(context_scan(root, df, &l, &err), 0);
	assert_string_equal(l.ignore_path, want);
	assert_int_equal(l.ignore_size, 10);
	{
		char *got = listing(&l);

		assert_string_equal(got, ".dockerignore a.txt");
		free(got);
	}
	context_release(&l);
	/* the default Dockerfile has a Dockerfile.dockerignore too */
	put("Dockerfile.dockerignore", ".*\n*.dockerignore\nsub\n");
	assert_int_equal(context_scan(root, NULL, &l, &err), 0);
	{
		char *got = listing(&l);

		assert_string_equal(got, "a.txt b.txt");
		free(got);
	}
	context_release(&l);
	/* a malformed file is an error that names it */
	put(".dockerignore", "[\n");
	assert_true(context_scan(root, "/nonexistent/Dockerfile", &l, &err) < 0);
	assert_non_null(strstr(err.msg, ".dockerignore"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(no_ignore_lists_everything, setup, teardown),
		cmocka_unit_test_setup_teardown(exclusions_and_reinclusions, setup, teardown),
		cmocka_unit_test_setup_teardown(parent_results_quirk, setup, teardown),
		cmocka_unit_test_setup_teardown(excluded_files_count_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(which_dockerignore, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
