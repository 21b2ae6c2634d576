/* Unit tests for `kiln build --secret` sources (cli/secret.c): buildx's
 * syntax and defaults, its error texts, the 500 KiB limit, and reading a
 * value from a file and from a variable. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "err.h"
#include "secret.h"

static char dir[64];
static char file[128];

static int
setup(void **state)
{
	FILE *f;

	(void) state;
	snprintf(dir, sizeof(dir), "/tmp/kiln-secret-test.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(file, sizeof(file), "%s/tok", dir);
	f = fopen(file, "w");
	if (!f)
		return -1;
	fputs("file-value", f);
	fclose(f);
	return 0;
}

static int
teardown(void **state)
{
	char big[160];

	(void) state;
	snprintf(big, sizeof(big), "%s/big", dir);
	(void) unlink(big);
	(void) unlink(file);
	(void) rmdir(dir);
	return 0;
}

static void
parse_ok(const char *spec, const char *id, const char *path, const char *env)
{
	struct secret_src s;
	struct kiln_err err = { 0 };

	assert_int_equal(secret_src_parse(spec, &s, &err), 0);
	assert_string_equal(s.id, id);
	if (path)
		assert_string_equal(s.file, path);
	else
		assert_null(s.file);
	if (env)
		assert_string_equal(s.env, env);
	else
		assert_null(s.env);
	secret_src_release(&s);
}

static void
parse_err(const char *spec, const char *msg)
{
	struct secret_src s;
	struct kiln_err err = { 0 };

	assert_true(secret_src_parse(spec, &s, &err) < 0);
	if (!strstr(err.msg, msg))
		fail_msg("'%s': got '%s', want '%s'", spec, err.msg, msg);
}

static void
syntax_and_defaults(void **state)
{
	char spec[256];

	(void) state;
	snprintf(spec, sizeof(spec), "id=a,src=%s", file);
	parse_ok(spec, "a", file, NULL);
	snprintf(spec, sizeof(spec), "ID=a,Source=%s,type=file", file);
	parse_ok(spec, "a", file, NULL);
	parse_ok("id=a,env=SOME_VAR", "a", NULL, "SOME_VAR");
	/* type=env takes the variable from src= */
	parse_ok("id=a,type=env,src=OTHER", "a", NULL, "OTHER");
	/* id alone: the variable id when set, else the file id */
	setenv("KILN_SECRET_TEST_VAR", "x", 1);
	parse_ok("id=KILN_SECRET_TEST_VAR", "KILN_SECRET_TEST_VAR", NULL, "KILN_SECRET_TEST_VAR");
	unsetenv("KILN_SECRET_TEST_VAR");
	assert_int_equal(chdir(dir), 0);
	parse_ok("id=tok", "tok", "tok", NULL);
	parse_err("id=KILN_SECRET_TEST_VAR", "failed to stat KILN_SECRET_TEST_VAR");
}

static void
errors(void **state)
{
	char spec[256];
	FILE *f;

	(void) state;
	parse_err("src=/x", "secret missing ID");
	parse_err("id=a,bogus", "invalid field 'bogus' must be a key=value pair");
	parse_err("id=a,type=ssh", "unsupported secret type \"ssh\"");
	parse_err("id=a,color=red", "unexpected key 'color' in 'id=a,color=red'");
	parse_err("id=a,src=/nonexistent/kiln", "failed to stat /nonexistent/kiln");
	snprintf(spec, sizeof(spec), "%s/big", dir);
	f = fopen(spec, "w");
	assert_non_null(f);
	for (unsigned i = 0; i <= SECRET_MAX; i++)
		fputc('x', f);
	fclose(f);
	snprintf(spec, sizeof(spec), "id=big,src=%s/big", dir);
	parse_err(spec, "secret big too big. max size 500KB");
}

static void
read_values(void **state)
{
	struct secret_src s;
	struct kiln_err err = { 0 };
	char spec[256], *v;
	size_t len;

	(void) state;
	snprintf(spec, sizeof(spec), "id=a,src=%s", file);
	assert_int_equal(secret_src_parse(spec, &s, &err), 0);
	assert_int_equal(secret_src_read(&s, &v, &len, &err), 0);
	assert_int_equal(len, 10);
	assert_memory_equal(v, "file-value", 10);
	secret_value_free(v, len);
	secret_src_release(&s);

	setenv("KILN_SECRET_TEST_VAL", "env-value", 1);
	assert_int_equal(secret_src_parse("id=b,env=KILN_SECRET_TEST_VAL", &s, &err), 0);
	assert_int_equal(secret_src_read(&s, &v, &len, &err), 0);
	assert_int_equal(len, 9);
	assert_memory_equal(v, "env-value", 9);
	secret_value_free(v, len);
	unsetenv("KILN_SECRET_TEST_VAL");
	/* an unset variable is an empty value, as in buildx */
	assert_int_equal(secret_src_read(&s, &v, &len, &err), 0);
	assert_int_equal(len, 0);
	secret_value_free(v, len);
	secret_src_release(&s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(syntax_and_defaults, setup, teardown),
		cmocka_unit_test_setup_teardown(errors, setup, teardown),
		cmocka_unit_test_setup_teardown(read_values, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
