/* Unit tests for how the client prints `--call` answers (cli/debug.c):
 * buildx's tables, laid out as Go's text/tabwriter does, and the JSON
 * passed through untouched with format=json. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "debug.h"
#include "err.h"

/* Render and return what was printed (caller frees), or NULL with err. */
static char *
render(const char *call, const char *format, const char *data, struct kiln_err *err)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	int r;

	assert_non_null(f);
	r = debug_render_call(f, call, format, data, strlen(data), err);
	fclose(f);
	if (r < 0) {
		assert_int_equal(len, 0);
		free(text);
		return NULL;
	}
	return text;
}

static void
expect(const char *call, const char *format, const char *data, const char *want)
{
	struct kiln_err err = { 0 };
	char *got = render(call, format, data, &err);

	if (!got)
		fail_msg("render failed: %s", err.msg);
	if (strcmp(got, want) != 0)
		fail_msg("got:\n%s\nwant:\n%s", got, want);
	free(got);
}

static void
targets_table(void **state)
{
	(void) state;
	expect("targets", NULL,
	       "{\"targets\": [{\"name\": \"base\", \"description\": \"builds the base\"},"
	       " {\"name\": \"build\", \"description\": \"Compiles the binary\"},"
	       " {\"default\": true, \"base\": \"scratch\"}], \"sources\": [\"\"]}",
	       "TARGET    DESCRIPTION\n"
	       "base      builds the base\n"
	       "build     Compiles the binary\n"
	       "(default) \n");
	/* a named default; widths in runes */
	expect("targets", NULL,
	       "{\"targets\": [{\"name\": \"caf\\u00e9\", \"description\": \"\\u003cx\\u003e\"},"
	       " {\"name\": \"release\", \"default\": true}]}",
	       "TARGET            DESCRIPTION\n"
	       "caf\xc3\xa9              <x>\n"
	       "release (default) \n");
	expect("targets", NULL, "{\"targets\": null}", "TARGET DESCRIPTION\n");
}

static void
outline_tables(void **state)
{
	(void) state;
	expect("outline", NULL,
	       "{\"name\": \"build\", \"description\": \"Compiles the binary\", \"args\": ["
	       "{\"name\": \"GO_VERSION\", \"description\": \"sets the Go version\", \"value\": \"1.22\"},"
	       "{\"name\": \"FOO\", \"description\": \"is foo\", \"value\": \"zz\"},"
	       "{\"name\": \"BAR\"}],"
	       "\"secrets\": [{\"name\": \"token\", \"required\": true}, {\"name\": \".npmrc\"}],"
	       "\"ssh\": [{\"name\": \"default\"}], \"sources\": [\"eA==\"]}",
	       "TARGET:      build\n"
	       "DESCRIPTION: Compiles the binary\n"
	       "\n"
	       "BUILD ARG    VALUE   DESCRIPTION\n"
	       "GO_VERSION   1.22    sets the Go version\n"
	       "FOO          zz      is foo\n"
	       "BAR                  \n"
	       "\n"
	       "SECRET   REQUIRED\n"
	       "token    true\n"
	       ".npmrc   \n"
	       "\n"
	       "SSH       REQUIRED\n"
	       "default   \n"
	       "\n");
	/* the default target with a description; no name, no description:
	 * no TARGET table at all */
	expect("outline", NULL,
	       "{\"description\": \"d\", \"ssh\": [{\"name\": \"default\", \"required\": true}]}",
	       "TARGET:      (default)\n"
	       "DESCRIPTION: d\n"
	       "\n"
	       "SSH       REQUIRED\n"
	       "default   true\n"
	       "\n");
	expect("outline", NULL, "{\"sources\": [\"eA==\"]}", "");
	expect("outline", NULL, "{\"args\": [{\"name\": \"A\", \"value\": \"1\"}]}",
	       "BUILD ARG   VALUE   DESCRIPTION\n"
	       "A           1       \n"
	       "\n");
}

/* A tab inside a value starts a new cell, as in Go. */
static void
tabs_in_values_are_cells(void **state)
{
	(void) state;
	expect("outline", NULL,
	       "{\"args\": [{\"name\": \"A\", \"value\": \"x\\ty\", \"description\": \"d\"},"
	       "{\"name\": \"LONGER\", \"value\": \"v\"}]}",
	       "BUILD ARG   VALUE   DESCRIPTION\n"
	       "A           x       y   d\n"
	       "LONGER      v       \n"
	       "\n");
}

static void
json_passes_through(void **state)
{
	static const char data[] = "{\n  \"targets\": null,\n  \"sources\": [\n    \"\"\n  ]\n}";

	(void) state;
	expect("targets", "json", data, "{\n  \"targets\": null,\n  \"sources\": [\n    \"\"\n  ]\n}\n");
	expect("outline", "json", "{}", "{}\n");
	expect("graph", NULL, "{\"ops\": []}\n", "{\"ops\": []}\n");
	expect("graph", NULL, "{\"ops\": []}", "{\"ops\": []}\n");
}

static void
errors(void **state)
{
	struct kiln_err err = { 0 };

	(void) state;
	assert_null(render("targets", NULL, "not json", &err));
	assert_non_null(strstr(err.msg, "malformed targets result"));
	assert_null(render("outline", NULL, "[]", &err));
	assert_null(render("targets", NULL, "{\"targets\": 3}", &err));
	assert_null(render("check", NULL, "{}", &err));
	assert_non_null(strstr(err.msg, "unknown call 'check'"));
	assert_null(render("targets", "yaml", "{}", &err));
	assert_non_null(strstr(err.msg, "unsupported format 'yaml'"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(targets_table),
		cmocka_unit_test(outline_tables),
		cmocka_unit_test(tabs_in_values_are_cells),
		cmocka_unit_test(json_passes_through),
		cmocka_unit_test(errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
