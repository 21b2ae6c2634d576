/* Unit tests for the Dockerfile parser (coordinator/dockerfile.c) and the
 * instruction checks (coordinator/instructions.c): the cases kiln relies
 * on beyond the upstream corpus, such as error locations, limits and the
 * shape of the AST that the planner reads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "err.h"
#include "../../coordinator/dockerfile.h"
#include "../../coordinator/instructions.h"

static struct df_ast *
parse_ok(const char *src)
{
	struct kiln_err err = { 0 };
	struct df_ast *ast = NULL;

	if (df_parse(src, strlen(src), "Dockerfile", &ast, &err) < 0)
		fail_msg("parse failed: %s", err.msg);
	return ast;
}

static void
parse_fails(const char *src, const char *msg)
{
	struct kiln_err err = { 0 };
	struct df_ast *ast = NULL;

	assert_true(df_parse(src, strlen(src), "Dockerfile", &ast, &err) < 0);
	assert_null(ast);
	if (!strstr(err.msg, msg))
		fail_msg("error \"%s\" lacks \"%s\"", err.msg, msg);
}

static void
dump_is(const char *src, const char *want)
{
	struct df_ast *ast = parse_ok(src);
	char *dump = df_ast_dump(ast);

	assert_string_equal(dump, want);
	free(dump);
	df_ast_free(ast);
}

static void
errors_name_file_and_line(void **state)
{
	(void) state;
	parse_fails("FROM a\n\nENV PATH\n", "Dockerfile:3: ENV must have two arguments");
	parse_fails("FROM a\nRUN <<EOF\necho hi\n", "Dockerfile:2: unterminated heredoc");
	parse_fails("FROM a\nCMD [\"a\", 1]\n",
		    "Dockerfile:2: when using JSON array syntax, arrays must be comprised of strings only");
	parse_fails("# escape=x\nFROM a\n", "Dockerfile:1: invalid escape token 'x'");
	parse_fails("# escape=`\n# escape=`\nFROM a\n",
		    "Dockerfile:2: only one escape parser directive can be used");
	parse_fails("LABEL a=b c\n",
		    "Dockerfile:1: Syntax error - can't find = in \"c\". Must be of the form: name=value");
	parse_fails("", "Dockerfile:1: file with no instructions");
	parse_fails("# just a comment\n\n", "file with no instructions");
}

static void
errors_use_given_filename(void **state)
{
	struct kiln_err err = { 0 };
	struct df_ast *ast = NULL;

	(void) state;
	assert_true(df_parse("FROM a\nENV X\n", 13, "ctx/Dockerfile.dev", &ast, &err) < 0);
	assert_string_equal(err.msg, "ctx/Dockerfile.dev:2: ENV must have two arguments");
	assert_int_equal(err.code, EINVAL);
}

static void
limits_are_enforced(void **state)
{
	static char src[DF_MAX_LINE + 64];
	size_t n = DF_MAX_LINE + 1;
	struct kiln_err err = { 0 };
	struct df_ast *ast = NULL;

	(void) state;
	memcpy(src, "FROM a\nRUN ", 11);
	memset(src + 11, 'x', n - 4);
	src[n + 7] = '\n';
	assert_true(df_parse(src, n + 8, "Dockerfile", &ast, &err) < 0);
	assert_non_null(strstr(err.msg, "Dockerfile:2: dockerfile line greater than max allowed size"));
	/* exactly the limit is fine */
	memset(src, 'x', DF_MAX_LINE);
	memcpy(src, "RUN ", 4);
	assert_int_equal(df_parse(src, DF_MAX_LINE, "Dockerfile", &ast, &err), 0);
	df_ast_free(ast);
	assert_int_equal(df_parse(src, DF_MAX_INPUT + 1, "Dockerfile", &ast, &err), -EFBIG);

	assert_true(df_parse("FROM a\nRUN a\0b\n", 15, "Dockerfile", &ast, &err) < 0);
	assert_string_equal(err.msg, "Dockerfile:2: NUL byte in Dockerfile");
}

static void
flags_are_split_from_arguments(void **state)
{
	struct df_ast *ast;
	const struct df_node *n;
	const char *v = "unset";

	(void) state;
	ast = parse_ok("COPY --from=build --chown=\"a b\" --link -- --src /dst\n");
	n = &ast->nodes[0];
	assert_string_equal(n->keyword, "copy");
	assert_int_equal(n->n_flags, 3);
	assert_string_equal(n->flags[0], "--from=build");
	assert_string_equal(n->flags[1], "--chown=a b");    /* quotes removed */
	assert_string_equal(n->flags[2], "--link");
	assert_int_equal(n->n_args, 2);                     /* "--" ended the flags */
	assert_string_equal(n->args[0], "--src");
	assert_string_equal(n->args[1], "/dst");
	assert_int_equal(df_node_flag(n, "from", &v), 1);
	assert_string_equal(v, "build");
	assert_int_equal(df_node_flag(n, "link", &v), 1);
	assert_null(v);
	assert_int_equal(df_node_flag(n, "fro", &v), 0);
	assert_int_equal(df_node_flag(n, "platform", NULL), 0);
	df_ast_free(ast);

	dump_is("RUN --mount=type=cache,target=/x --network=none make\n",
		"(run [\"--mount=type=cache,target=/x\" \"--network=none\"] \"make\")\n");
}

static void
unknown_flags_are_reported(void **state)
{
	struct kiln_err err = { 0 };
	struct df_ast *ast;

	(void) state;
	ast = parse_ok("COPY --form=build a b\nRUN --mount=type=bind ls\nCOPY --from a b\n"
		       "ADD --link=maybe a b\nRUN --network=none --network=host ls\n");
	assert_true(instr_check(&ast->nodes[0], &err) < 0);
	assert_string_equal(err.msg, "unknown flag: --form");
	assert_int_equal(instr_check(&ast->nodes[1], &err), 0);
	assert_true(instr_check(&ast->nodes[2], &err) < 0);
	assert_string_equal(err.msg, "missing a value on flag: --from");
	assert_true(instr_check(&ast->nodes[3], &err) < 0);
	assert_string_equal(err.msg, "expecting boolean value for flag --link, not: maybe");
	assert_true(instr_check(&ast->nodes[4], &err) < 0);
	assert_string_equal(err.msg, "duplicate flag specified: --network");
	df_ast_free(ast);
}

static void
heredocs_are_attached(void **state)
{
	struct df_ast *ast;
	const struct df_node *n;
	char *chomped;
	size_t len;

	(void) state;
	ast = parse_ok("FROM a\n"
		       "COPY <<-one 3<<'two' /dst/\n"
		       "\tfirst $X\n"
		       "\tone\n"
		       "second\r\n"
		       "two\n"
		       "RUN echo after\n");
	assert_int_equal(ast->n_nodes, 3);
	n = &ast->nodes[1];
	assert_int_equal(n->start_line, 2);
	assert_int_equal(n->end_line, 6);
	assert_int_equal(n->n_heredocs, 2);
	assert_string_equal(n->heredocs[0].name, "one");
	assert_true(n->heredocs[0].chomp);
	assert_true(n->heredocs[0].expand);
	assert_int_equal(n->heredocs[0].fd, 0);
	/* bodies are verbatim: the tabs stay for the consumer to strip */
	assert_string_equal(n->heredocs[0].content, "\tfirst $X\n");
	chomped = df_heredoc_chomp(n->heredocs[0].content, n->heredocs[0].content_len, &len);
	assert_string_equal(chomped, "first $X\n");
	assert_int_equal(len, 9);
	free(chomped);
	assert_string_equal(n->heredocs[1].name, "two");
	assert_false(n->heredocs[1].expand);
	assert_int_equal(n->heredocs[1].fd, 3);
	assert_string_equal(n->heredocs[1].content, "second\r\n");
	assert_string_equal(ast->nodes[2].args[0], "echo after");
	assert_int_equal(ast->nodes[2].start_line, 7);
	df_ast_free(ast);

	/* only ADD, COPY and RUN in shell form take heredocs */
	ast = parse_ok("RUN [\"<<EOF\"]\nCMD <<EOF\nEOF\nONBUILD RUN <<X\nbody\nX\n");
	assert_int_equal(ast->n_nodes, 4);
	assert_int_equal(ast->nodes[0].n_heredocs, 0);
	assert_int_equal(ast->nodes[1].n_heredocs, 0);
	assert_string_equal(ast->nodes[2].keyword, "eof");
	assert_int_equal(ast->nodes[3].n_heredocs, 1);
	assert_string_equal(ast->nodes[3].heredocs[0].content, "body\n");
	df_ast_free(ast);
}

static void
continuation_joins_lines(void **state)
{
	struct df_ast *ast;

	(void) state;
	ast = parse_ok("RUN apt-get update && \\\n"
		       "    # a comment inside\n"
		       "\n"
		       "    apt-get install -y x\n"
		       "RUN a\\\\\n"
		       "RUN b\n");
	assert_int_equal(ast->n_nodes, 3);
	assert_string_equal(ast->nodes[0].args[0], "apt-get update &&     apt-get install -y x");
	assert_int_equal(ast->nodes[0].start_line, 1);
	assert_int_equal(ast->nodes[0].end_line, 4);
	/* an escaped escape does not continue */
	assert_string_equal(ast->nodes[1].args[0], "a\\\\");
	assert_int_equal(ast->n_warnings, 1);
	assert_string_equal(ast->warnings[0].text,
			    "Empty continuation line found in: RUN apt-get update &&     apt-get install -y x");
	assert_int_equal(ast->warnings[0].line, 4);
	df_ast_free(ast);

	/* with the escape directive the backtick continues, CRLF and a BOM are fine */
	ast = parse_ok("\xef\xbb\xbf# escape=`\r\nFROM a\r\nRUN dir c:\\ `\r\n  /w\r\n");
	assert_int_equal(ast->escape, '`');
	assert_string_equal(ast->nodes[1].args[0], "dir c:\\   /w");
	df_ast_free(ast);
}

static void
json_and_shell_forms(void **state)
{
	struct df_ast *ast;

	(void) state;
	ast = parse_ok("CMD [\"echo\", \"a b\"]\nCMD echo \"a b\"\nCMD [\"unterminated\"\n"
		       "ENTRYPOINT [\"x\\u0000y\"] trailing\nSHELL []\n");
	assert_true(ast->nodes[0].json);
	assert_int_equal(ast->nodes[0].n_args, 2);
	assert_string_equal(ast->nodes[0].args[1], "a b");
	assert_false(ast->nodes[1].json);
	assert_int_equal(ast->nodes[1].n_args, 1);
	assert_string_equal(ast->nodes[1].args[0], "echo \"a b\"");
	/* not JSON at all: shell form, silently */
	assert_false(ast->nodes[2].json);
	assert_string_equal(ast->nodes[2].args[0], "[\"unterminated\"");
	/* a NUL inside an element is kept, with its length */
	assert_true(ast->nodes[3].json);
	assert_int_equal(ast->nodes[3].arg_lens[0], 3);
	assert_memory_equal(ast->nodes[3].args[0], "x\0y", 3);
	assert_true(ast->nodes[4].json);
	assert_int_equal(ast->nodes[4].n_args, 0);
	df_ast_free(ast);

	dump_is("ENTRYPOINT [\"x\\u0000y\\u00e9\\u200b\"]\n", "(entrypoint \"x\\x00yé\\u200b\")\n");
}

static void
misspelt_instruction_is_parsed(void **state)
{
	struct kiln_err err = { 0 };
	struct df_ast *ast;

	(void) state;
	ast = parse_ok("FROM alpine\nRUNN echo hi\nCOPy a b\n");
	assert_int_equal(ast->n_nodes, 3);
	assert_string_equal(ast->nodes[1].keyword, "runn");
	assert_string_equal(ast->nodes[1].keyword_raw, "RUNN");
	assert_string_equal(ast->nodes[1].original, "RUNN echo hi");
	assert_int_equal(ast->nodes[1].n_args, 1);
	assert_string_equal(ast->nodes[1].args[0], "");
	assert_true(instr_check(&ast->nodes[1], &err) < 0);
	assert_string_equal(err.msg, "unknown instruction: RUNN");
	/* keywords are case-insensitive */
	assert_string_equal(ast->nodes[2].keyword, "copy");
	assert_int_equal(instr_check(&ast->nodes[2], &err), 0);
	df_ast_free(ast);

	dump_is("FROM a\nRUNN echo hi\n", "(from \"a\")\n(runn \"\")\n");
}

static void
instruction_arguments(void **state)
{
	struct df_ast *ast;
	const struct df_node *n;

	(void) state;
	ast = parse_ok("ENV A=1 B=\"two words\"\nENV OLD value with spaces\nARG X Y=z\n"
		       "HEALTHCHECK --interval=5s CMD curl -f x\nONBUILD --x=1 COPY --from=a b c\n"
		       "FROM --platform=linux/arm64 img AS build\n");
	n = &ast->nodes[0];
	assert_int_equal(n->n_args, 6);
	assert_string_equal(n->args[3], "B");
	assert_string_equal(n->args[4], "\"two words\"");    /* quotes stay */
	assert_string_equal(n->args[5], "=");
	n = &ast->nodes[1];
	assert_int_equal(n->n_args, 3);
	assert_string_equal(n->args[1], "value with spaces");
	assert_string_equal(n->args[2], "");
	assert_int_equal(ast->nodes[2].n_args, 2);
	n = &ast->nodes[3];
	assert_string_equal(n->args[0], "CMD");
	assert_string_equal(n->args[1], "curl -f x");
	n = &ast->nodes[4];
	assert_non_null(n->inner);
	assert_int_equal(n->n_args, 0);
	assert_string_equal(n->inner->keyword, "copy");
	assert_string_equal(n->inner->flags[0], "--from=a");
	n = &ast->nodes[5];
	assert_int_equal(n->n_args, 3);
	df_ast_free(ast);

	dump_is("ONBUILD --x=1 COPY --from=a b c\n",
		"(onbuild [\"--x=1\"] (copy [\"--from=a\"] \"b\" \"c\"))\n");
}

static void
instruction_checks(void **state)
{
	static const struct {
		const char *src;
		const char *msg;        /* NULL: valid */
	} cases[] = {
		{ "FROM a b\n", "FROM requires either one or three arguments" },
		{ "FROM a AS 1st\n", "invalid name for build stage: \"1st\"" },
		{ "FROM a as Build\n", NULL },
		{ "ONBUILD ONBUILD RUN x\n", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed" },
		{ "ONBUILD MAINTAINER x\n", "MAINTAINER isn't allowed as an ONBUILD trigger" },
		{ "HEALTHCHECK --interval=10us CMD x\n", "Interval \"interval\" cannot be less than 1ms" },
		{ "HEALTHCHECK --retries=-1 CMD x\n", "--retries cannot be negative (-1)" },
		{ "HEALTHCHECK --retries=x CMD x\n", "invalid syntax" },
		{ "HEALTHCHECK PING x\n", "Unknown type \"PING\" in HEALTHCHECK (try CMD)" },
		{ "HEALTHCHECK NONE\n", NULL },
		{ "HEALTHCHECK --start-interval=1s --timeout=1m30s CMD [\"x\"]\n", NULL },
		{ "SHELL /bin/sh -c\n", "SHELL requires the arguments to be in JSON form" },
		{ "VOLUME [\" \"]\n", "VOLUME specified can not be an empty string" },
		{ "ARG =x\n", "ARG names can not be blank" },
		{ "COPY <<EOF <<EOF2\nEOF\nEOF2\n", "COPY cannot accept a heredoc as a destination" },
		{ "ADD --checksum=sha256:0 --unpack https://x/y.tar /z\n", NULL },
		{ "RUN --device=x --mount=type=cache,target=/a --mount=type=tmpfs,target=/b ls\n", NULL },
	};
	size_t i;

	(void) state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct kiln_err err = { 0 };
		struct df_ast *ast = parse_ok(cases[i].src);
		int r = instr_check(&ast->nodes[0], &err);

		if (!cases[i].msg && r < 0)
			fail_msg("%s: unexpected error %s", cases[i].src, err.msg);
		if (cases[i].msg && (r == 0 || !strstr(err.msg, cases[i].msg)))
			fail_msg("%s: want \"%s\", got \"%s\"", cases[i].src, cases[i].msg,
				 r == 0 ? "success" : err.msg);
		df_ast_free(ast);
	}
}

static void
durations_follow_go(void **state)
{
	int64_t d = 0;

	(void) state;
	assert_int_equal(instr_parse_duration("1h2m3.5s", &d), 0);
	assert_true(d == INT64_C(3723500000000));
	assert_int_equal(instr_parse_duration("-1.5ms", &d), 0);
	assert_true(d == -1500000);
	assert_int_equal(instr_parse_duration("0", &d), 0);
	assert_true(d == 0);
	assert_int_equal(instr_parse_duration("10\xc2\xb5s", &d), 0);
	assert_true(d == 10000);
	assert_int_equal(instr_parse_duration("5", &d), -EINVAL);
	assert_int_equal(instr_parse_duration("1x", &d), -EINVAL);
	assert_int_equal(instr_parse_duration(".s", &d), -EINVAL);
	assert_int_equal(instr_parse_duration("", &d), -EINVAL);
	assert_int_equal(instr_parse_duration("9999999999h", &d), -ERANGE);
}

static void
directives_are_found(void **state)
{
	static const char src[] = "#!/usr/bin/env kiln\n# syntax=docker/dockerfile:1.7 extra\nFROM a\n";
	char *cmdline = NULL;
	struct df_ast *ast;
	int line = 0;

	(void) state;
	assert_int_equal(df_find_directive(src, strlen(src), "syntax", true, &cmdline, &line), 1);
	assert_string_equal(cmdline, "docker/dockerfile:1.7 extra");
	assert_int_equal(line, 2);
	free(cmdline);
	assert_int_equal(df_find_directive(src, strlen(src), "check", false, &cmdline, &line), 0);

	ast = parse_ok("# syntax = docker/dockerfile:1\n#check=skip=all\n# escape=\\\nFROM a\n");
	assert_string_equal(ast->syntax, "docker/dockerfile:1");
	assert_string_equal(ast->check, "skip=all");
	df_ast_free(ast);
	/* a directive after a comment is only a comment */
	ast = parse_ok("# hello\n# escape=`\nRUN a `\n");
	assert_int_equal(ast->escape, '\\');
	assert_null(ast->syntax);
	df_ast_free(ast);
}

static void
dump_quotes_like_go(void **state)
{
	(void) state;
	/* the old "KEY value" form keeps raw bytes; the quote-aware word
	 * splitter of the key=value form re-encodes them (U+FFFD) */
	dump_is("LABEL k \x01\x7f\xff\xc3\xa9 \n", "(label \"k\" \"\\x01\\x7f\\xffé\" \"\")\n");
	dump_is("LABEL k=\xff\n", "(label \"k\" \"\xef\xbf\xbd\" \"=\")\n");
	dump_is("FOO\n", "(foo \"\")\n");
	dump_is("HEALTHCHECK\n", "(healthcheck)\n");
	dump_is("ADD\n", "(add)\n");
	dump_is("VOLUME /a /b\n", "(volume \"/a\" \"/b\")\n");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(errors_name_file_and_line),
		cmocka_unit_test(errors_use_given_filename),
		cmocka_unit_test(limits_are_enforced),
		cmocka_unit_test(flags_are_split_from_arguments),
		cmocka_unit_test(unknown_flags_are_reported),
		cmocka_unit_test(heredocs_are_attached),
		cmocka_unit_test(continuation_joins_lines),
		cmocka_unit_test(json_and_shell_forms),
		cmocka_unit_test(misspelt_instruction_is_parsed),
		cmocka_unit_test(instruction_arguments),
		cmocka_unit_test(instruction_checks),
		cmocka_unit_test(durations_follow_go),
		cmocka_unit_test(directives_are_found),
		cmocka_unit_test(dump_quotes_like_go),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
