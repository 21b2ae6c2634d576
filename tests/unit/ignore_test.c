/* Unit tests for the .dockerignore matcher (coordinator/ignore.c): a
 * realistic file, pattern errors, parent-directory matching and the
 * regexp-translation quirks kept for BuildKit compatibility. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "err.h"
#include "ignore.h"

static bool
excluded(const struct ignore *ig, const char *path)
{
	struct kiln_err err = { 0 };
	bool ex = false;

	if (ignore_match(ig, path, &ex, &err) < 0)
		fail_msg("%s: %s", path, err.msg);
	return ex;
}

static void
typical_file(void **state)
{
	static const char file[] =
		"\xef\xbb\xbf# build output\n"
		"node_modules\n"
		"  *.log  \r\n"
		"!important.log\n"
		"/build/\n"
		"**/*.tmp\n"
		"docs/**\n"
		"!docs/README.md\n";
	struct kiln_err err = { 0 };
	struct ignore *ig = NULL;

	(void) state;
	assert_int_equal(ignore_parse(file, sizeof(file) - 1, &ig, &err), 0);
	assert_int_equal(ignore_count(ig), 7);
	assert_true(ignore_has_exclusions(ig));
	assert_true(excluded(ig, "node_modules"));
	assert_true(excluded(ig, "node_modules/left-pad/index.js"));
	assert_false(excluded(ig, "src/node_modules"));
	assert_true(excluded(ig, "debug.log"));
	assert_false(excluded(ig, "important.log"));
	assert_false(excluded(ig, "logs/debug.log"));     /* '*' stops at '/' */
	assert_true(excluded(ig, "build"));
	assert_true(excluded(ig, "build/a/b"));
	assert_true(excluded(ig, "x.tmp"));
	assert_true(excluded(ig, "a/b/c/x.tmp"));
	assert_true(excluded(ig, "docs/api/index.html"));
	assert_false(excluded(ig, "docs/README.md"));
	assert_false(excluded(ig, "Dockerfile"));
	ignore_free(ig);
}

static void
read_cleans_patterns(void **state)
{
	static const char file[] = "/abs\n! ./x/../y/\n#c\n\n a//b/./c \n!\n";
	static const char *const want[] = { "abs", "!y", "a/b/c", "!" };
	struct kiln_err err = { 0 };
	char **p = NULL;
	size_t n = 0, i;

	(void) state;
	assert_int_equal(ignore_read(file, sizeof(file) - 1, &p, &n, &err), 0);
	assert_int_equal(n, 4);
	for (i = 0; i < n; i++) {
		assert_string_equal(p[i], want[i]);
		free(p[i]);
	}
	free(p);
}

static void
bad_patterns(void **state)
{
	static const char *const rejected[] = { "!", "[", "a[", "\\", "[x-]", "[]a]", "[a-b-c]" };
	struct kiln_err err = { 0 };
	struct ignore *ig = NULL;
	bool ex = false;
	size_t i;

	(void) state;
	for (i = 0; i < sizeof(rejected) / sizeof(rejected[0]); i++) {
		if (ignore_new(&rejected[i], 1, &ig, &err) == 0)
			fail_msg("%s: accepted", rejected[i]);
	}
	/* accepted, but every match that reaches it fails (as upstream) */
	{
		const char *pats[] = { "[z-a]" };

		assert_int_equal(ignore_new(pats, 1, &ig, &err), 0);
		assert_true(ignore_match(ig, "z", &ex, &err) < 0);
		assert_non_null(strstr(err.msg, "syntax error in pattern"));
		ignore_free(ig);
	}
	/* an exclusion that is never evaluated never fails */
	{
		const char *pats[] = { "![z-a]" };

		assert_int_equal(ignore_new(pats, 1, &ig, &err), 0);
		assert_int_equal(ignore_match(ig, "z", &ex, &err), 0);
		assert_false(ex);
		ignore_free(ig);
	}
}

static void
classes_and_escapes(void **state)
{
	const char *pats[] = { "file[0-9].txt", "x[^a-c]y", "lit\\*", "a?c", "**/.git" };
	struct kiln_err err = { 0 };
	struct ignore *ig = NULL;

	(void) state;
	assert_int_equal(ignore_new(pats, 5, &ig, &err), 0);
	assert_true(excluded(ig, "file7.txt"));
	assert_false(excluded(ig, "fileX.txt"));
	assert_true(excluded(ig, "xdy"));
	assert_false(excluded(ig, "xby"));
	assert_true(excluded(ig, "lit*"));
	assert_false(excluded(ig, "litx"));
	assert_true(excluded(ig, "abc"));
	assert_false(excluded(ig, "a/c"));
	assert_true(excluded(ig, ".git"));
	assert_true(excluded(ig, "sub/.git/config"));
	ignore_free(ig);
}

static void
regexp_quirks_match_buildkit(void **state)
{
	/* BuildKit copies '^' into the regexp of a wildcard pattern, where it
	 * anchors, so "a*^b" can never match (a plain "a^b" is compared as a
	 * string and does); and "[?]" becomes "[[^/]]": a class, then ']' */
	const char *pats[] = { "a*^b", "c^d", "[?]" };
	struct kiln_err err = { 0 };
	struct ignore *ig = NULL;

	(void) state;
	assert_int_equal(ignore_new(pats, 3, &ig, &err), 0);
	assert_false(excluded(ig, "ax^b"));
	assert_true(excluded(ig, "c^d"));
	assert_false(excluded(ig, "?"));
	assert_true(excluded(ig, "^]"));
	ignore_free(ig);
}

static void
clean_path_is_go_clean(void **state)
{
	static const char *const cases[][2] = {
		{ "", "." }, { ".", "." }, { "a/b/", "a/b" }, { "//a//b", "/a/b" },
		{ "a/./b/../c", "a/c" }, { "../../x", "../../x" }, { "/../x", "/x" },
		{ "a/..", "." }, { "./", "." }, { "a/../../b", "../b" }, { "/", "/" },
	};
	size_t i;

	(void) state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *got = ignore_clean_path(cases[i][0]);

		if (strcmp(got, cases[i][1]) != 0)
			fail_msg("Clean(%s) = %s, want %s", cases[i][0], got, cases[i][1]);
		free(got);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(typical_file),
		cmocka_unit_test(read_cleans_patterns),
		cmocka_unit_test(bad_patterns),
		cmocka_unit_test(classes_and_escapes),
		cmocka_unit_test(regexp_quirks_match_buildkit),
		cmocka_unit_test(clean_path_is_go_clean),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
